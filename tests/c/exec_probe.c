/* Started by exec_ways in one of many ways: prints whether merge-any came
 * with it (PR_GET_MEMORY_MERGE, prctl 68) and the path of every mapped file
 * whose name starts with libksmauto, so that the test can tell whether the
 * library runs here (a decoy of the same name does not count). Built
 * dynamic, static, and with a program interpreter that is not there. */
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>

int main(void) {
    int flag = prctl(68, 0, 0, 0, 0);
    char line[4096], seen[8192] = "";
    FILE *maps = fopen("/proc/self/maps", "r");
    while (maps && fgets(line, sizeof line, maps)) {
        char *path = strchr(line, '/');
        if (!path) continue;
        path[strcspn(path, "\n")] = 0;
        const char *name = strrchr(path, '/') + 1;
        if (strncmp(name, "libksmauto", 10) || strstr(seen, path)) continue;
        if (strlen(seen) + strlen(path) + 2 < sizeof seen) {
            strcat(seen, " ");
            strcat(seen, path);
        }
    }
    if (maps) fclose(maps);
    printf("probe merge_any %d libraries%s\n", flag, seen);
    return 0;
}
