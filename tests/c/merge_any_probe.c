/* Prints whether this process's memory is mergeable by merge-any, as the
 * kernel reports it; built dynamic (made set-user-ID by the test) and
 * static. its last argument names the probe in its output. */
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>

int main(int argc, char **argv) {
    /* PR_GET_MEMORY_MERGE (68): the flag itself, readable without KSM stats. */
    int flag = prctl(68, 0, 0, 0, 0);
    /* The last argument: a script's interpreter gets the script path first. */
    printf("%s merge_any %d\n", argc > 1 ? argv[argc - 1] : "probe", flag);
    return 0;
}
