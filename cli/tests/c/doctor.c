/*
 * Processes for `ksmauto doctor`'s verdicts. Usage: doctor KIND, KIND one of
 *   dups    2000 private anonymous pages, 1500 of them identical (merge);
 *   shared  16 MiB MAP_SHARED anonymous memory, all pages identical (shmem:
 *           the kernel never merges it);
 *   unique  16 MiB private anonymous pages, each different (nothing to find);
 *   plain   nothing of its own.
 * Prints "ready" once its memory is written, then sleeps until killed.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    size_t ps = sysconf(_SC_PAGE_SIZE);
    const char *kind = argc > 1 ? argv[1] : "plain";
    size_t n = 0;
    int flags = MAP_PRIVATE | MAP_ANONYMOUS;
    if (strcmp(kind, "dups") == 0) n = 2000;
    if (strcmp(kind, "shared") == 0) { n = 4096; flags = MAP_SHARED | MAP_ANONYMOUS; }
    if (strcmp(kind, "unique") == 0) n = 4096;
    if (n) {
        unsigned char *m = mmap(NULL, n * ps, PROT_READ | PROT_WRITE, flags, -1, 0);
        if (m == MAP_FAILED) return 1;
        long salt = (long)getpid() * 7919 + random();
        for (size_t i = 0; i < n; i++) {
            unsigned char *p = m + i * ps;
            memset(p, 0x5a, ps);
            if (strcmp(kind, "unique") == 0 || (strcmp(kind, "dups") == 0 && i >= 1500)) {
                memcpy(p, &i, sizeof i);
                memcpy(p + 64, &salt, sizeof salt);
            }
        }
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
