/* Loads and unloads the library a program did not preload, as a plugin
 * host or a language runtime may: `unload LIB ROUNDS`. Each round:
 * dlopen(LIB), a call into it, dlclose, then a fork whose child allocates
 * and leaves with exit() (atexit handlers and destructors run) and one
 * whose child leaves with _exit(); then a thread. Prints one line per child
 * ("round R exit|_exit: exit N" or "...: signal N"), then sleeps a little
 * so that a scanning thread the library started gets its turns after the
 * unload, and ends with "done" and a normal exit (the library's exit hook,
 * if it still has one, runs then). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void *thread_body(void *arg) {
    free(malloc(1000));
    return arg;
}

/* Forks a child that leaves through `how` ("exit" or "_exit"); prints how
 * it ended. Returns 0 if it ended normally with status 0. */
static int fork_and_wait(int round, const char *how) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        printf("round %d %s: fork failed\n", round, how);
        return 1;
    }
    if (pid == 0) {
        char *p = malloc(300 << 10);
        if (p)
            memset(p, 1, 300 << 10);
        free(p);
        if (!strcmp(how, "exit"))
            exit(0);
        _exit(0);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        ;
    if (WIFSIGNALED(status)) {
        printf("round %d %s: signal %d\n", round, how, WTERMSIG(status));
        return 1;
    }
    printf("round %d %s: exit %d\n", round, how, WEXITSTATUS(status));
    return WEXITSTATUS(status) != 0;
}

int main(int argc, char **argv) {
    if (argc < 3)
        return 64;
    int rounds = atoi(argv[2]), failed = 0;
    for (int round = 0; round < rounds; round++) {
        void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            printf("dlopen failed: %s\n", dlerror());
            return 2;
        }
        const char *(*version)(void) = (const char *(*)(void))dlsym(h, "ksmauto_version");
        if (!version || !version()[0]) {
            printf("no ksmauto_version in the library\n");
            return 3;
        }
        if (dlclose(h)) {
            printf("dlclose failed: %s\n", dlerror());
            return 4;
        }
        failed |= fork_and_wait(round, "exit");
        failed |= fork_and_wait(round, "_exit");
        pthread_t t;
        if (pthread_create(&t, NULL, thread_body, NULL) == 0)
            pthread_join(t, NULL);
    }
    /* A scanning thread of the unloaded copy wakes up every few ms. */
    struct timespec pause = {0, 200 * 1000 * 1000};
    nanosleep(&pause, NULL);
    printf("done\n");
    return failed;
}
