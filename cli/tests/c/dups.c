/*
 * A process with known page contents for `ksmauto estimate` and `compare`:
 * one private anonymous mapping of 2000 pages, written so that
 *   1500 pages are identical and non-zero (1499 could be freed),
 *    300 pages are zero-filled (written, so each has its own frame),
 *    200 pages are unique.
 * Usage: dups [fork]   — with "fork", a child shares every frame (no
 * copy-on-write happened) and both sleep. Prints "ready" (the parent, after
 * the child is forked) and sleeps until killed.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    size_t ps = sysconf(_SC_PAGE_SIZE);
    size_t n = 2000;
    unsigned char *m = mmap(NULL, n * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char *p = m + i * ps;
        if (i < 1500) {
            memset(p, 0x5a, ps);
        } else if (i < 1800) {
            memset(p, 0, ps);
        } else {
            memset(p, 0x11, ps);
            memcpy(p, &i, sizeof i); /* unique */
            p[ps - 1] = 0x77;
        }
    }
    if (argc > 1 && strcmp(argv[1], "fork") == 0) {
        pid_t c = fork();
        if (c < 0) return 1;
        if (c == 0) {
            for (;;) pause();
        }
        printf("ready %d\n", (int)c);
    } else {
        printf("ready\n");
    }
    fflush(stdout);
    for (;;) pause();
}
