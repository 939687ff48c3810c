/*
 * The C side of tests/catchup.rs `remap_race`: one thread keeps replacing an
 * anonymous mapping with a private file mapping at the same address
 * (MAP_FIXED, raw syscalls, so only the catch-up scan ever sees either) while
 * the main thread allocates to give the scan its chances. After each
 * replacement the thread reads the file mapping's VmFlags in
 * /proc/self/smaps: `mg` there means the scan advised a file mapping (it
 * judged the anonymous one, then advised what had replaced it). A sighting
 * counts only if it persists 20 ms later (by then the scan's own check has
 * run and revoked it).
 *
 *   remap_race ITERATIONS FILE [SPIN]
 *
 * SPIN (default 300000) is how long each anonymous mapping stays, in empty
 * loop turns: long enough for scans to find it.
 * Prints "iterations N", "mergeable_file_sightings N" and "transient N"
 * (sightings that the library took back by itself).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGES 16

static long page;
static char *target;
static int fd;
static long iterations, spin = 300000;
static atomic_int done;
static long sightings, transient;
static char smaps[1 << 20];

static void *raw_mmap(void *addr, size_t len, int prot, int flags, int f) {
    return (void *)syscall(SYS_mmap, addr, len, prot, flags, f, 0);
}

/* Whether the VMA starting at `target` is mergeable, per /proc/self/smaps. */
static int target_is_mergeable(void) {
    int f = open("/proc/self/smaps", O_RDONLY);
    if (f < 0) { perror("smaps"); exit(1); }
    size_t n = 0;
    ssize_t r;
    while (n < sizeof smaps - 1 && (r = read(f, smaps + n, sizeof smaps - 1 - n)) > 0) n += r;
    close(f);
    smaps[n] = 0;
    char head[64];
    snprintf(head, sizeof head, "%lx-", (unsigned long)target);
    for (char *line = smaps; line && *line; ) {
        if (strncmp(line, head, strlen(head)) == 0) {
            char *flags = strstr(line, "VmFlags:");
            if (!flags) return 0;
            char *eol = strchr(flags, '\n');
            if (eol) *eol = 0;
            return strstr(flags, " mg") != NULL;
        }
        char *nl = strchr(line, '\n');
        line = nl ? nl + 1 : NULL;
    }
    fprintf(stderr, "no VMA at %p in smaps\n", (void *)target);
    exit(1);
}

static void *replace(void *arg) {
    (void)arg;
    for (long i = 0; i < iterations; i++) {
        /* Other bounds each time, so every scan finds it new and advises it. */
        size_t anon_pages = PAGES - (i & 1);
        if (raw_mmap(target, anon_pages * page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1) != target) { perror("anon"); exit(1); }
        target[0] = 1;
        for (volatile long k = 0; k < spin; k++) {}
        if (raw_mmap(target, PAGES * page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_FIXED, fd) != target) { perror("file"); exit(1); }
        if (target_is_mergeable()) {
            struct timespec settle = {0, 20000000};
            nanosleep(&settle, NULL);
            if (target_is_mergeable()) sightings++;
            else transient++;
        }
    }
    atomic_store(&done, 1);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) { fprintf(stderr, "usage: remap_race ITERATIONS FILE [SPIN]\n"); return 2; }
    iterations = atol(argv[1]);
    if (argc == 4) spin = atol(argv[3]);
    page = sysconf(_SC_PAGESIZE);
    fd = open(argv[2], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, PAGES * page) != 0) { perror(argv[2]); return 1; }
    /* Read-only anonymous neighbours: the target never merges with them. */
    char *area = raw_mmap(NULL, (PAGES + 2) * page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1);
    if (area == MAP_FAILED) { perror("mmap"); return 1; }
    target = area + page;
    pthread_t t;
    pthread_create(&t, NULL, replace, NULL);
    void *keep[64] = {0};
    unsigned i = 0;
    while (!atomic_load(&done)) {
        free(keep[i & 63]);
        keep[i & 63] = malloc(16 + (i & 127));
        i++;
    }
    pthread_join(t, NULL);
    unlink(argv[2]);
    printf("iterations %ld\n", iterations);
    printf("mergeable_file_sightings %ld\n", sightings);
    printf("transient %ld\n", transient);
    return 0;
}
