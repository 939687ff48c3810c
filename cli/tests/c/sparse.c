/*
 * Pages present here and there in a large address space, for the
 * estimator's reading of only where pages are (PAGEMAP_SCAN):
 *   a 1 GiB reservation with one page written every 4 MiB (256 pages,
 *   all alike), and
 *   a 4 MiB mapping with every other page written (512 pages, all alike,
 *   another content): more runs of present pages than one question to the
 *   kernel returns, and
 *   100 pages written alike (a third content), then made PROT_NONE: still
 *   present, and readable through /proc/PID/mem as a debugger reads them.
 * Ideal: 255 + 511 + 99 = 865. Prints "ready" and sleeps until killed.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(void) {
    size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    size_t big = 1ul << 30, small = 4ul << 20;
    unsigned char *a = mmap(NULL, big, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    unsigned char *b = mmap(NULL, small, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *c = mmap(NULL, 100 * ps, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED || b == MAP_FAILED || c == MAP_FAILED) return 1;
    for (size_t off = 0; off < big; off += 4ul << 20) memset(a + off, 0x61, ps);
    for (size_t off = 0; off < small; off += 2 * ps) memset(b + off, 0x62, ps);
    memset(c, 0x63, 100 * ps);
    if (mprotect(c, 100 * ps, PROT_NONE) != 0) return 1;
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
