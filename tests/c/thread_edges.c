/*
 * Edges of the library's catch-up thread (issue 19, review): what a
 * program does right after allocating, while the thread may exist, must
 * come out as without the library. tests/offthread/edges.rs runs each case
 * without the library and under every mode.
 *
 *   thread_edges CASE
 *
 * CASE:
 *   fork-stat    what CPython >= 3.12's os.fork() does: fork, then in the
 *                parent fopen() /proc/self/stat and read num_threads (a
 *                warning if > 1). Each of 5 rounds first grows the brk
 *                heap by 2 MiB (glibc's mmap threshold raised by a freed
 *                4 MiB block), so that the growth is still news when fork
 *                returns: "stat threads N" (the most seen)
 *   nproc        as user 54321 with RLIMIT_NPROC 2 (this process and one
 *                more task), allocates, then pthread_create, then
 *                posix_spawn of /bin/true: "pthread_create 0",
 *                "posix_spawn 0", "status 0"
 */
#include "offthread.h"

#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>

extern char **environ;

static int fork_stat(void) {
    /* Kept from the compiler, which may drop a malloc freed at once. */
    void *volatile raised = malloc(4 << 20);
    free(raised);
    int most = 0;
    for (int round = 0; round < 5; round++) {
        char *block = malloc(2 << 20);
        if (!block) die("malloc");
        memset(block, round + 1, 2 << 20);
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) _exit(0);
        int threads = (int)stat_threads();
        if (threads > most) most = threads;
        int st;
        waitpid(pid, &st, 0);
    }
    say("stat threads %d\n", most);
    return 0;
}

static void *returns(void *arg) { return arg; }

static int nproc(void) {
    if (setresgid(54321, 54321, 54321) || setresuid(54321, 54321, 54321)) die("setresuid");
    struct rlimit limit = {2, 2};
    if (setrlimit(RLIMIT_NPROC, &limit)) die("setrlimit");
    for (int i = 0; i < 64; i++) {
        char *p = malloc(1 << 20);
        if (!p) die("malloc");
        memset(p, i + 1, 1 << 20);
    }
    pthread_t t;
    int rc = pthread_create(&t, 0, returns, 0);
    say("pthread_create %d\n", rc);
    if (rc == 0) pthread_join(t, 0);
    for (int i = 0; i < 64; i++) {
        char *p = malloc(1 << 20);
        if (!p) die("malloc");
        memset(p, i + 1, 1 << 20);
    }
    pid_t pid;
    char *argv[] = {"true", 0};
    rc = posix_spawn(&pid, "/bin/true", 0, 0, argv, environ);
    say("posix_spawn %d\n", rc);
    if (rc == 0) {
        int st;
        waitpid(pid, &st, 0);
        say("status %d\n", st);
    }
    return 0;
}

int main(int argc, char **argv) {
    ot_init();
    const char *c = argc > 1 ? argv[1] : "";
    if (!strcmp(c, "fork-stat")) return fork_stat();
    if (!strcmp(c, "nproc")) return nproc();
    say("unknown case %s\n", c);
    return 2;
}
