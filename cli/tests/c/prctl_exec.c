/* A bare launcher: sets PR_SET_MEMORY_MERGE, then execv(argv[1], argv + 1),
   as a MemoryKSM=yes unit or any user's own launcher does. */
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>
#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#endif
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0)) perror("prctl");
    execv(argv[1], argv + 1);
    perror("execv");
    return 127;
}
