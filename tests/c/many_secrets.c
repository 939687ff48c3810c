/* One secret mapping per key, as libsodium's sodium_malloc makes them
 * (argv[1] of them, each kept apart from the next by a PROT_NONE guard, so
 * no two can coalesce into one exclusion), marked MADV_DONTDUMP; then
 * enough allocation for catch-up scans to run. Prints how many of the
 * marked VMAs ended up mergeable: must be 0. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void *volatile sink;

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int n = atoi(argv[1]);
    for (int i = 0; i < n; i++) {
        char *p = mmap(NULL, 3 * 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 3;
        if (mprotect(p + 65536, 65536, PROT_NONE)) return 4;
        memset(p, 1, 65536);
        if (madvise(p, 65536, MADV_DONTDUMP)) return 5;
    }
    for (int round = 0; round < 30; round++) {
        for (int i = 0; i < 5000; i++) { sink = malloc(64); free(sink); }
        usleep(20000);
    }
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int marked = 0, mergeable = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmFlags:", 8) && strstr(line, " dd")) {
            marked++;
            if (strstr(line, " mg")) mergeable++;
        }
    printf("marked %d\nmergeable %d\n", marked, mergeable);
    return 0;
}
