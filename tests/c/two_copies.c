/* Exercises the hooks while two copies of the library are preloaded (an
 * operator's /etc/ld.so.preload plus an LD_PRELOAD, or `ksmauto run` under a
 * shell that already preloads another copy): the malloc family, mmap, a
 * thread, a blocking call that returns at once, fork and exec. Prints
 * `done` and whether merge-any is on, from /proc/self/ksm_stat. */
#include <dlfcn.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static void *worker(void *arg) {
    void *p = malloc(1 << 20);
    memset(p, 7, 1 << 20);
    free(p);
    return arg;
}

/* Whether merge-any is on, from /proc/self/ksm_stat. */
static const char *merge_any_state(void) {
    char line[256];
    const char *state = "?";
    FILE *f = fopen("/proc/self/ksm_stat", "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "ksm_merge_any: ", 15) == 0)
            state = strstr(line, "yes") ? "yes" : "no";
    if (f)
        fclose(f);
    return state;
}

/* These two, exported (-rdynamic), make the program look like the C API:
 * only a shared object that defines them is a copy of the library. */
#ifdef DEFINES_THE_API
const char *ksmauto_version(void) { return "a stub of the program's own"; }
size_t ksmauto_stats_json(char *buf, size_t len) { (void)buf; (void)len; return 0; }
#endif

int main(int argc, char **argv) {
    if (argc > 2 && !strcmp(argv[1], "dlopen")) {
        /* Another copy loaded while the program runs stands aside. */
        printf("before %s\n", merge_any_state());
        if (!dlopen(argv[2], RTLD_NOW)) {
            printf("dlopen failed: %s\n", dlerror());
            return 5;
        }
        free(malloc(100));
        printf("after %s\n", merge_any_state());
        return 0;
    }
    for (int i = 0; i < 1000; i++) {
        char *p = malloc(64 + i);
        p = realloc(p, 4096 + i);
        free(p);
        free(calloc(10, 100));
    }
    void *aligned = NULL;
    if (posix_memalign(&aligned, 4096, 1 << 20) != 0)
        return 2;
    free(aligned);
    char *m = mmap(NULL, 8 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return 3;
    memset(m, 1, 8 << 20);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_join(t, NULL);
    struct pollfd none = {.fd = -1};
    poll(&none, 1, 0);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/true", "true", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return 4;
    printf("done merge_any=%s\n", merge_any_state());
    return 0;
}
