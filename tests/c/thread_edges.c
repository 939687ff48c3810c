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
 *   pexit-atexit  main registers an atexit handler, starts a thread that
 *                allocates and returns, and calls pthread_exit: glibc then
 *                ends the process from that thread, the program's last,
 *                running the handler there. The handler uses 1 MiB of
 *                stack (a program thread has 8) and says on which thread
 *                it ran and whether SIGTERM is blocked there:
 *                "atexit on the last thread 1 sigterm blocked 0"
 *   fork-atexit  the same in a child forked by a thread other than main:
 *                the child's one thread allocates and returns from its
 *                start routine, glibc ends the child from it; the parent
 *                passes on the child's line and status:
 *                "atexit on the last thread 1 sigterm blocked 0",
 *                "child status 0"
 *   lowest-fd    for 3 s, allocates 1 MiB at a time (news for the catch-up
 *                all along) and, between allocations, closes descriptor 0
 *                and opens /dev/null, which POSIX gives the lowest free
 *                number, 0 (as daemons rely on when they reopen 0, 1, 2):
 *                "lowest-fd wrong 0"
 */
#include "offthread.h"

#include <fcntl.h>
#include <signal.h>
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

static pthread_t last_thread;

/* Runs on whichever thread ends the process; 1 MiB of stack. */
static void big_atexit_handler(void) {
    volatile char buf[1 << 20];
    memset((char *)buf, 1, sizeof buf);
    sigset_t mask;
    pthread_sigmask(SIG_BLOCK, 0, &mask);
    say("atexit on the last thread %d sigterm blocked %d\n",
        pthread_equal(pthread_self(), last_thread) != 0 && buf[4321] == 1,
        sigismember(&mask, SIGTERM));
}

static void *allocates_and_returns(void *arg) {
    last_thread = pthread_self();
    for (int i = 0; i < 64; i++) {
        char *p = malloc(1 << 20);
        if (!p) die("malloc");
        memset(p, i + 1, 1 << 20);
    }
    return arg;
}

static int pexit_atexit(void) {
    atexit(big_atexit_handler);
    pthread_t t;
    if (pthread_create(&t, 0, allocates_and_returns, 0)) die("pthread_create");
    pthread_exit(0);
}

/* The thread that forks: in the child it is the one thread, and returns. */
static void *forks(void *arg) {
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) return allocates_and_returns(arg);
    int st;
    if (waitpid(pid, &st, 0) != pid) die("waitpid");
    say("child status %d\n", st);
    return arg;
}

static int fork_atexit(void) {
    atexit(big_atexit_handler);
    pthread_t t;
    if (pthread_create(&t, 0, forks, 0)) die("pthread_create");
    pthread_join(t, 0);
    /* The parent's own exit: no handler line from it. */
    _exit(0);
}

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int lowest_fd(void) {
    int wrong = 0;
    long long until = now_ns() + 3000000000LL;
    while (now_ns() < until) {
        char *p = malloc(1 << 20);
        if (!p) die("malloc");
        memset(p, 7, 1 << 20);
        for (int k = 0; k < 200; k++) {
            close(0);
            /* A while without descriptor 0, as a daemon has between its
               closes and its opens. */
            for (volatile int spin = 0; spin < 20000; spin++) {
            }
            int fd = open("/dev/null", O_RDONLY);
            if (fd < 0) die("open /dev/null");
            if (fd != 0) {
                wrong++;
                dup2(fd, 0);
                close(fd);
            }
        }
    }
    say("lowest-fd wrong %d\n", wrong);
    return 0;
}

int main(int argc, char **argv) {
    ot_init();
    const char *c = argc > 1 ? argv[1] : "";
    if (!strcmp(c, "fork-stat")) return fork_stat();
    if (!strcmp(c, "nproc")) return nproc();
    if (!strcmp(c, "pexit-atexit")) return pexit_atexit();
    if (!strcmp(c, "fork-atexit")) return fork_atexit();
    if (!strcmp(c, "lowest-fd")) return lowest_fd();
    say("unknown case %s\n", c);
    return 2;
}
