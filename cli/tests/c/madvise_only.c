/*
 * A process that asked for merging with madvise(MADV_MERGEABLE) and that
 * ksmd has nothing of yet: ksm_mergeable is yes, ksm_rmap_items stays 0.
 * Its mergeable area is a private, read-only mapping of its own executable,
 * read in full (resident page cache, Rss > 0) and never written: with no
 * anonymous page in it ksmd skips it, however often it scans, so the state
 * "asked, not yet scanned" holds for as long as the test needs.
 * Prints "ready" once set up, then sleeps until killed.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(void) {
    int fd = open("/proc/self/exe", O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) return 1;
    volatile unsigned char *m = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) return 1;
    unsigned sum = 0;
    for (off_t i = 0; i < st.st_size; i += 4096) sum += m[i];
    if (madvise((void *)m, st.st_size, MADV_MERGEABLE) != 0) return 2;
    printf("ready %u\n", sum & 1);
    fflush(stdout);
    for (;;) pause();
}
