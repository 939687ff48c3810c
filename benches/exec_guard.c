/* What keeping merge-any out of a privileged program costs (issue 9,
 * item 4): a process under the library in `process` mode holds MIB MiB of
 * identical pages, waits until ksmd has merged them, then posix_spawns
 * TARGET (and waits for it) ROUNDS times, timing each spawn. For a
 * set-user-ID TARGET the library switches merge-any off first, which makes
 * the kernel unmerge (copy) every merged page, and on again after; for a
 * plain TARGET that loads the library nothing happens. Prints the median
 * spawn time and how many pages were merged before and after.
 *
 *   LD_PRELOAD=target/release/libksmauto.so KSMAUTO_MODE=process \
 *     benches/exec_guard MIB TARGET [ROUNDS]        (ksmd running)
 */
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static long merging_pages(void) {
    FILE *f = fopen("/proc/self/ksm_stat", "r");
    char line[256];
    long n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "ksm_merging_pages %ld", &n) == 1) break;
    if (f) fclose(f);
    return n;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    size_t len = (size_t)atol(argv[1]) << 20;
    int rounds = argc > 3 ? atoi(argv[3]) : 5;
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 3;
    for (size_t i = 0; i < len; i += 4096) memset(p + i, 0x5a, 4096);
    long pages = (long)(len / 4096);
    double t0 = now();
    while (merging_pages() < pages * 9 / 10) {
        if (now() - t0 > 120) { fprintf(stderr, "ksmd did not merge in 120 s (is it running?)\n"); return 4; }
        usleep(100000);
    }
    double *took = calloc(rounds, sizeof *took);
    long before = merging_pages(), after = 0;
    for (int r = 0; r < rounds; r++) {
        /* let ksmd merge again what the previous spawn unmerged */
        t0 = now();
        while (merging_pages() < pages * 9 / 10 && now() - t0 < 120) usleep(100000);
        before = merging_pages();
        char *args[] = {argv[2], NULL};
        pid_t pid;
        double s = now();
        if (posix_spawn(&pid, argv[2], NULL, NULL, args, environ)) return 5;
        waitpid(pid, NULL, 0);
        took[r] = (now() - s) * 1000;
        after = merging_pages();
    }
    qsort(took, rounds, sizeof *took, cmp);
    printf("%s: %zu MiB, spawn+wait median %.2f ms (min %.2f, max %.2f); merged pages before %ld, right after %ld\n",
           argv[2], len >> 20, took[rounds / 2], took[0], took[rounds - 1], before, after);
    return 0;
}
