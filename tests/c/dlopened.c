/*
 * A program that loads the library with dlopen instead of having it
 * preloaded, as a plugin host or a language runtime may (tests/two_copies.rs):
 *
 *   dlopened LIB HOW MERGE_ANY [PROG]
 *
 * HOW: "local" (RTLD_NOW | RTLD_LOCAL, what ctypes.CDLL does), "global"
 * (RTLD_NOW | RTLD_GLOBAL) or "lazy" (RTLD_LAZY | RTLD_LOCAL). MERGE_ANY:
 * what the program sets merge-any to itself before the dlopen (0 or 1).
 * Then it maps, fills and mlocks a key, as a program keeping a secret does,
 * and prints "key_mg N" (1 if the key's VMA is mergeable) and "merge_any N"
 * (PR_GET_MEMORY_MERGE). With PROG, it then execs PROG (a static probe that
 * prints "execd merge_any N").
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "range_probe.h"

#define PR_SET_MEMORY_MERGE 67
#define PR_GET_MEMORY_MERGE 68

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: dlopened LIB local|global|lazy 0|1 [PROG]\n");
        return 64;
    }
    int flags = !strcmp(argv[2], "global") ? RTLD_NOW | RTLD_GLOBAL
                : !strcmp(argv[2], "lazy") ? RTLD_LAZY | RTLD_LOCAL
                                           : RTLD_NOW | RTLD_LOCAL;
    if (prctl(PR_SET_MEMORY_MERGE, atoi(argv[3]), 0, 0, 0) != 0) {
        printf("set_merge_any_failed 1\n");
        return 2;
    }
    if (!dlopen(argv[1], flags)) {
        printf("dlopen_failed %s\n", dlerror());
        return 3;
    }
    /* Calls a preloaded library would see: allocations, a mapping. */
    free(malloc(1 << 20));
    size_t page = page_size();
    char *key = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (key == MAP_FAILED)
        return 4;
    memset(key, 7, page);
    if (mlock(key, page) != 0) {
        printf("mlock_failed 1\n");
        return 5;
    }
    printf("key_mg %d\n", range_mg(key, page));
    printf("merge_any %d\n", prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0));
    fflush(stdout);
    if (argc > 4) {
        char *args[] = {argv[4], "execd", NULL};
        execv(argv[4], args);
        printf("exec_failed 1\n");
        return 6;
    }
    return 0;
}
