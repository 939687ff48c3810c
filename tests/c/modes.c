/*
 * The C side of tests/modes.rs. Output is one "key value" per line.
 *
 *   merge-any-exec   turns on merge-any itself (prctl PR_SET_MEMORY_MERGE),
 *                    prints "set_rc N", then execs itself as "report".
 *   merge-any-fork   the same, but forks; the child reports, the parent
 *                    waits for it.
 *   report           prints "ksm_merge_any yes|no|missing" from
 *                    /proc/self/ksm_stat and "get_memory_merge N" from
 *                    prctl(PR_GET_MEMORY_MERGE).
 *   stacks           prints "main_stack_mg 0|1" for the VMA holding a local
 *                    variable of main, then starts 2 threads (alive at the
 *                    same time) that each look up the VMA of one of their
 *                    locals: "thread<i>_stack_mg 0|1", "distinct_stacks 1".
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ksm_probe.h"

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#endif
#ifndef PR_GET_MEMORY_MERGE
#define PR_GET_MEMORY_MERGE 68
#endif

static int report(void) {
    char line[256];
    const char *state = "missing";
    FILE *f = fopen("/proc/self/ksm_stat", "r");
    if (f) {
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "ksm_merge_any:", 14) == 0) {
                state = strstr(line, "yes") ? "yes" : "no";
            }
        }
        fclose(f);
    }
    printf("ksm_merge_any %s\n", state);
    printf("get_memory_merge %d\n", prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0));
    return 0;
}

static int set_merge_any(void) {
    int rc = prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0);
    printf("set_rc %d\n", rc);
    fflush(stdout);
    return rc;
}

static pthread_barrier_t both_started;
static struct probe_vma thread_vma[3];

/* Both threads are alive at once (the barrier), so they have two different
 * stacks, not one reused from glibc's stack cache. */
static void *thread_main(void *arg) {
    long i = (long)arg;
    pthread_barrier_wait(&both_started);
    thread_vma[i] = probe_vma_of(&i);
    pthread_barrier_wait(&both_started);
    return NULL;
}

static int stacks(void) {
    int local = 0;
    struct probe_vma v = probe_vma_of(&local);
    printf("main_stack_found %d\nmain_stack_mg %d\n", v.found, v.mergeable);
    pthread_t t[3];
    pthread_barrier_init(&both_started, NULL, 2);
    for (long i = 1; i <= 2; i++)
        if (pthread_create(&t[i], NULL, thread_main, (void *)i) != 0) return 1;
    for (int i = 1; i <= 2; i++)
        if (pthread_join(t[i], NULL) != 0) return 1;
    for (int i = 1; i <= 2; i++)
        printf("thread%d_stack_found %d\nthread%d_stack_mg %d\n", i, thread_vma[i].found, i, thread_vma[i].mergeable);
    printf("distinct_stacks %d\n", thread_vma[1].start != thread_vma[2].start && thread_vma[1].start != v.start);
    return 0;
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    if (strcmp(what, "report") == 0) return report();
    if (strcmp(what, "stacks") == 0) return stacks();
    if (strcmp(what, "merge-any-exec") == 0) {
        if (set_merge_any() != 0) return 1;
        execl("/proc/self/exe", argv[0], "report", (char *)NULL);
        perror("exec");
        return 1;
    }
    if (strcmp(what, "merge-any-fork") == 0) {
        if (set_merge_any() != 0) return 1;
        pid_t child = fork();
        if (child < 0) return 1;
        if (child == 0) exit(report());
        int status;
        if (waitpid(child, &status, 0) != child || !WIFEXITED(status)) return 1;
        return WEXITSTATUS(status);
    }
    fprintf(stderr, "usage: %s report|stacks|merge-any-exec|merge-any-fork\n", argv[0]);
    return 1;
}
