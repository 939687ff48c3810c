/* Prints whether merge-any (PR_SET_MEMORY_MERGE) is set in this process as
   it starts: "merge_any=1" when it came through the exec, "merge_any=0"
   when not, "merge_any=-1" when the kernel cannot say. Built static too. */
#include <stdio.h>
#include <sys/prctl.h>
#ifndef PR_GET_MEMORY_MERGE
#define PR_GET_MEMORY_MERGE 68
#endif
int main(void) {
    printf("merge_any=%d\n", prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0));
    return 0;
}
