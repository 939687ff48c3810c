/*
 * The C side of tests/catchup.rs `many_vmas`: a process with tens of
 * thousands of VMAs that no hook saw (one raw syscall(SYS_mmap) region, split
 * by mprotect into pages of alternating protection, each its own VMA), and an
 * allocation loop that naps 1 ms every 1000 allocations, while the library's
 * catch-up thread passes over them.
 *
 *   many_vmas VMAS PASSES [SECONDS]
 *
 * Allocates until the library's report (ksmauto_stats_json, looked at once
 * a second) counts PASSES completed catch-up passes, or SECONDS (default
 * 120) have passed, then
 * prints "vmas N" (lines of /proc/self/maps at the end), "allocations N" and
 * the report's catch-up numbers: "passes", "steps", "vmas_examined",
 * "catchup_regions" (regions advised by the scan), "revoked".
 * Without the library it allocates for 2 seconds and prints the rest as 0.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ksmauto.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned long long json_number(const char *json, const char *key) {
    const char *p = strstr(json, key);
    if (!p) return 0;
    return strtoull(p + strlen(key), NULL, 10);
}

static char report[16384];

static void read_report(void) {
    report[0] = 0;
    if (ksmauto_available()) ksmauto_stats_json(report, sizeof report);
}

static long maps_lines(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    long n = 0;
    int c;
    while ((c = getc(f)) != EOF) n += c == '\n';
    fclose(f);
    return n;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: many_vmas VMAS PASSES [SECONDS]\n");
        return 2;
    }
    long vmas = atol(argv[1]);
    unsigned long long passes = strtoull(argv[2], NULL, 10);
    double seconds = argc > 3 ? atof(argv[3]) : 120;
    long page = sysconf(_SC_PAGESIZE);
    char *base = (char *)syscall(SYS_mmap, NULL, vmas * page, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) { perror("mmap"); return 1; }
    for (long i = 1; i < vmas; i += 2)
        if (mprotect(base + i * page, page, PROT_READ) != 0) { perror("mprotect"); return 1; }

    double start = now(), last_check = 0;
    unsigned long long allocations = 0;
    void *keep[64] = {0};
    for (;;) {
        for (int i = 0; i < 1000; i++) {
            int slot = i & 63;
            free(keep[slot]);
            keep[slot] = malloc(16 + (i & 255));
            allocations++;
        }
        usleep(1000);
        double t = now() - start;
        if (t > seconds || (!ksmauto_available() && t > 2)) break;
        /* Once a second: the report reads /proc/self/smaps, which with
           tens of thousands of VMAs holds the address-space lock long
           enough to stall the catch-up thread's madvise (it runs beside
           this loop, not inside it). */
        if (ksmauto_available() && t - last_check > 1.0) {
            last_check = t;
            read_report();
            if (json_number(report, "\"catchup_scans\":") >= passes) break;
        }
    }
    read_report();
    printf("vmas %ld\n", maps_lines());
    printf("allocations %llu\n", allocations);
    printf("passes %llu\n", json_number(report, "\"catchup_scans\":"));
    printf("steps %llu\n", json_number(report, "\"steps\":"));
    printf("vmas_examined %llu\n", json_number(report, "\"vmas\":"));
    printf("revoked %llu\n", json_number(report, "\"revoked\":"));
    const char *catchup = strstr(report, "\"catchup\":{\"regions\":");
    printf("catchup_regions %llu\n", catchup ? json_number(catchup, "\"regions\":") : 0);
    return 0;
}
