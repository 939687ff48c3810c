/*
 * The C side of tests/config.rs: a program whose output and exit status the
 * library must never change, with one mapping of each class the settings
 * decide about. It maps (all private anonymous, touched):
 *   a 32 KiB read-write region        (small when KSMAUTO_MIN_SIZE > 32K)
 *   a 64 KiB read-write region
 *   a 64 KiB read-write-exec region   (the `exec` class)
 *   a 64 KiB MAP_STACK region         (the `stack` class)
 * then prints "hello from config_prog" on stdout and exits 3.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static void map_touched(size_t len, int prot, int extra_flags) {
    void *p = mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    memset(p, 0x11, len);
}

int main(void) {
    map_touched(32 * 1024, PROT_READ | PROT_WRITE, 0);
    map_touched(64 * 1024, PROT_READ | PROT_WRITE, 0);
    map_touched(64 * 1024, PROT_READ | PROT_WRITE | PROT_EXEC, 0);
    map_touched(64 * 1024, PROT_READ | PROT_WRITE, MAP_STACK);
    printf("hello from config_prog\n");
    return 3;
}
