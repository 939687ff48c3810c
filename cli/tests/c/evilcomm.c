/*
 * A process whose comm (prctl PR_SET_NAME: any bytes but NUL, 15 at most)
 * holds terminal control sequences or a newline, with 256 mergeable pages so
 * that `ksmauto status` and `doctor --all` list it.
 * Usage: evilcomm MODE SECS   (prints "ready" once named)
 *   esc -> "\033[3A\033[2K"  (cursor up 3 lines, erase the line)
 *   nl  -> "x\n  666 fake"   (a line of its own in a table)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "esc";
    int secs = argc > 2 ? atoi(argv[2]) : 30;
    const char *name = !strcmp(mode, "nl") ? "x\n  666 fake" : "\033[3A\033[2K";
    size_t len = 256 * 4096;
    char *p = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1;
    memset(p, 0x5a, len);
    madvise(p, len, MADV_MERGEABLE);
    prctl(PR_SET_NAME, name, 0, 0, 0);
    printf("ready\n");
    fflush(stdout);
    sleep(secs);
    return 0;
}
