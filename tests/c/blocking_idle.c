/* A program that builds its data and then goes idle: it maps a region with
 * the raw mmap system call (no hook sees it), fills it with duplicate pages,
 * prints "idle" and blocks for ever in the call named by argv[1]. The test
 * looks from outside (/proc/PID/smaps) whether the region became mergeable
 * (the `mg` VmFlag): only the edge of idleness in that call can have done it,
 * since nothing after the mapping calls into the library otherwise (helper
 * threads and children block in raw system calls). It then kills us.
 *
 * Prints: "region <start hex> <len>", "threads <n>", "idle".
 *
 * With argv[2] "ready", the call is made so that it returns at once (data
 * ready, a zero timeout, a child already gone, a semaphore above zero, …);
 * then "returned" is printed and the program waits in a raw system call.
 * The edge is due then too (the raw mmap is news), but a call that does not
 * wait must not pay for a pass: the region must still not be mergeable
 * when "returned" is printed (a pass runs inside the call, before it). */
#define _GNU_SOURCE
#include "blocking_calls.h"

#define REGION (4u << 20)

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    ready_mode = argc > 2 && !strcmp(argv[2], "ready");
    /* stdout's buffer is allocated now, not after the mapping. */
    printf("call %s\n", argv[1]);
    fflush(stdout);
    setup(argv[1]);
    char *region = (char *)syscall(SYS_mmap, NULL, REGION, PROT_READ | PROT_WRITE,
                                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        return 1;
    memset(region, 0x5a, REGION);
    printf("region %lx %u\nthreads %d\n%s\n", (unsigned long)region, REGION, threads,
           ready_mode ? "calling" : "idle");
    fflush(stdout);
    block(argv[1]);
    return 0;
}
