/* Run set-user-ID root by an unprivileged user with the library preloaded
 * through /etc/ld.so.preload: prints what the library did to this process
 * (merge-any, mergeable VMAs) after mapping a region it would otherwise
 * advise, so the test can tell whether any KSMAUTO_* variable steered it. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <unistd.h>

int main(void) {
    char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 2;
    memset(p, 7, 1 << 20);
    for (int i = 0; i < 1000; i++) free(malloc(100 + i));
    char line[512];
    int merge_any = 0, mergeable_vmas = 0;
    FILE *f = fopen("/proc/self/ksm_stat", "r");
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "ksm_merge_any") && strstr(line, "yes")) merge_any = 1;
    if (f) fclose(f);
    f = fopen("/proc/self/smaps", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmFlags:", 8) && strstr(line, " mg")) mergeable_vmas++;
    if (f) fclose(f);
    printf("at_secure %lu\neuid %d\nuid %d\nmerge_any %d\nmergeable_vmas %d\n",
           getauxval(AT_SECURE), (int)geteuid(), (int)getuid(), merge_any, mergeable_vmas);
    return 0;
}
