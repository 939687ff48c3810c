/*
 * Resident memory for scripts/bench-estimate: MIB mebibytes of private
 * anonymous memory, of which DUP percent are copies of 64 distinct pages
 * and the rest unique pages (each page filled with one byte value, its
 * first 8 bytes its own number: cheap to write, unique to read).
 * SEED makes the unique pages of one process differ from another's.
 * Usage: estimate_hog MIB DUP SEED. Prints "ready" once written, then
 * sleeps until killed.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = ((size_t)atol(argv[1]) << 20) / ps;
    unsigned dup = (unsigned)atoi(argv[2]);
    uint64_t seed = (uint64_t)atoll(argv[3]);
    unsigned char *m = mmap(NULL, pages * ps, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return 1;
    for (size_t i = 0; i < pages; i++) {
        unsigned char *p = m + i * ps;
        if (i % 100 < dup) {
            memset(p, 0x40 + (int)(i % 64), ps);
        } else {
            uint64_t id = (seed << 40) ^ i ^ 0x9e3779b97f4a7c15ull;
            memset(p, (int)(i & 0xff), ps);
            memcpy(p, &id, sizeof id);
        }
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
