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
 *   fork-then-idle  (advise mode, KSM) forks, then allocates 16 blocks
 *                of 1 MiB (each a mapping of glibc's: news) and waits,
 *                with no call the library sees, looking at its own smaps
 *                (raw open/read, no malloc) for up to 10 s until every
 *                block lies in a VMA marked mergeable:
 *                "fork-then-idle marked 16 of 16"
 *   raw-setgid   (root) allocates all along for 3 s; after the first
 *                second, sets its groups (gid 4242, no supplementary ones)
 *                with raw system calls on the main thread, which change
 *                that thread only (as a Go runtime or a static helper
 *                does); at the end every task of the process must have
 *                them: "raw-setgid wrong 0"
 *   realtime     (root) the main thread takes SCHED_FIFO (as `chrt -f`
 *                or an audio server's thread does), allocates, and for 2 s
 *                counts the tasks of the process other than itself that
 *                run with a real-time policy (a thread of the library's
 *                would compete with it at its priority):
 *                "realtime others 0"
 *   raw-clone    (advise mode) allocates until the library's thread runs,
 *                then makes a child with a raw clone system call (no fork
 *                handler runs: the child has a copy of the parent's
 *                statics, the thread's state "running" included, but no
 *                such thread); the child allocates for 8 s and says
 *                whether a library thread ever ran in it:
 *                "raw-clone child thread 1"
 *   tid-reuse    (root, advise mode) in a new pid namespace, where no one
 *                else takes pids: allocates until a task not its own (the
 *                library's thread) appears, waits until it has gone, makes
 *                a thread of its own take that thread's id (ns_last_pid),
 *                then allocates again: the library's thread must come back
 *                ("came back 1"), as ids come round again in any process
 *                that lives long enough. Prints "tid-reuse came back N",
 *                or "tid-reuse no library thread" / "tid-reuse not reused"
 *                where the case cannot be set up
 */
#include "offthread.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
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

/* The id of a task of this process other than `except` and `except2`, or
   0 if there is none. */
static int other_task(int except, int except2) {
    DIR *d = opendir("/proc/self/task");
    if (!d) die("opendir /proc/self/task");
    struct dirent *e;
    int found = 0;
    while ((e = readdir(d))) {
        int tid = atoi(e->d_name);
        if (tid > 0 && tid != except && tid != except2) found = tid;
    }
    closedir(d);
    return found;
}

static void allocate_mib(int mib) {
    for (int i = 0; i < mib; i++) {
        char *p = malloc(1 << 20);
        if (!p) die("malloc");
        memset(p, i + 1, 1 << 20);
    }
}

/* Waits up to `ms` for `ready()`; whether it came. */
static int wait_for(int (*ready)(void), int ms) {
    for (int i = 0; i < ms; i++) {
        if (ready()) return 1;
        usleep(1000);
    }
    return ready();
}

static int main_tid, own_tid, library_tid;
static int library_thread_there(void) { return (library_tid = other_task(main_tid, own_tid)) != 0; }
static int library_thread_gone(void) { return other_task(main_tid, own_tid) == 0; }

static long raw_syscall3(long n, long a, long b, long c) {
#if defined(__x86_64__)
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return ret;
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    return x0;
#else
#error "x86_64 or aarch64"
#endif
}

/* A thread of the program made with clone() (the library's hook on
   pthread_create would start the library's thread first, which would take
   the id): raw system calls only, it shares the main thread's TLS. It
   waits for a byte on the pipe, then ends. */
static int reuse_pipe[2];
static char holder_stack[1 << 16] __attribute__((aligned(16)));
static int holds_the_id(void *arg) {
    char c;
    raw_syscall3(SYS_read, reuse_pipe[0], (long)&c, 1);
    raw_syscall3(SYS_exit, 0, 0, 0);
    return (int)(long)arg;
}

static int tid_reuse_in_namespace(void) {
    main_tid = (int)syscall(SYS_gettid);
    allocate_mib(64);
    if (!wait_for(library_thread_there, 3000)) {
        say("tid-reuse no library thread\n");
        return 0;
    }
    int reused = library_tid;
    if (pipe(reuse_pipe)) die("pipe");
    /* The id is free once the thread is gone from the kernel, which may
       come a moment after /proc stops listing it: a few tries. */
    for (int attempt = 0; own_tid != reused; attempt++) {
        if (attempt == 20) {
            say("tid-reuse not reused\n");
            return 0;
        }
        if (own_tid > 0) {
            /* The last try's holder took another id: let it end. */
            if (write(reuse_pipe[1], "x", 1) != 1) die("write");
            while (other_task(main_tid, 0)) usleep(1000);
        }
        if (!wait_for(library_thread_gone, 10000)) die("library thread stays");
        usleep(10000);
        int fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY);
        if (fd < 0) die("open ns_last_pid");
        char num[16];
        int n = snprintf(num, sizeof num, "%d", reused - 1);
        if (write(fd, num, n) != n) die("write ns_last_pid");
        close(fd);
        own_tid = clone(holds_the_id, holder_stack + sizeof holder_stack,
                        CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM, 0);
        if (own_tid < 0) die("clone");
    }
    allocate_mib(64);
    say("tid-reuse came back %d\n", wait_for(library_thread_there, 3000));
    if (write(reuse_pipe[1], "x", 1) != 1) die("write");
    while (other_task(main_tid, 0)) usleep(1000);
    return 0;
}

static int tid_reuse(void) {
    if (unshare(CLONE_NEWPID | CLONE_NEWNS)) die("unshare");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        /* /proc of the new namespace (its ids), in a mount namespace of
           its own. */
        if (mount("none", "/", 0, MS_REC | MS_PRIVATE, 0)) die("mount private");
        if (mount("proc", "/proc", "proc", 0, 0)) die("mount proc");
        _exit(tid_reuse_in_namespace());
    }
    int st;
    if (waitpid(pid, &st, 0) != pid) die("waitpid");
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Whether the VMA holding `addr` has the `mg` flag in `smaps` (text). */
static int marked_in(const char *smaps, uintptr_t addr) {
    int inside = 0;
    for (const char *line = smaps; *line;) {
        const char *end = strchr(line, '\n');
        if (!end) break;
        unsigned long start, stop;
        if (sscanf(line, "%lx-%lx ", &start, &stop) == 2 && strchr(line, '-') < strchr(line, ' '))
            inside = start <= addr && addr < stop;
        else if (inside && !strncmp(line, "VmFlags:", 8)) {
            for (const char *f = line + 8; f + 2 <= end; f++)
                if (f[0] == 'm' && f[1] == 'g' && f[-1] == ' ' && (f[2] == ' ' || f[2] == '\n'))
                    return 1;
            return 0;
        }
        line = end + 1;
    }
    return 0;
}

static char smaps_text[8 << 20];

static int fork_then_idle(void) {
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) _exit(0);
    if (waitpid(pid, 0, 0) != pid) die("waitpid");
    enum { BLOCKS = 16 };
    char *blocks[BLOCKS];
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = malloc(1 << 20);
        if (!blocks[i]) die("malloc");
        memset(blocks[i], i + 1, 1 << 20);
    }
    int marked = 0;
    for (int look = 0; look < 100 && marked < BLOCKS; look++) {
        struct timespec nap = {0, 100 * 1000 * 1000};
        nanosleep(&nap, 0);
        int fd = (int)raw_syscall3(SYS_openat, AT_FDCWD, (long)"/proc/self/smaps", O_RDONLY);
        if (fd < 0) die("open smaps");
        size_t n = 0;
        long got;
        while ((got = raw_syscall3(SYS_read, fd, (long)(smaps_text + n), sizeof smaps_text - 1 - n)) > 0)
            n += (size_t)got;
        raw_syscall3(SYS_close, fd, 0, 0);
        smaps_text[n] = 0;
        marked = 0;
        for (int i = 0; i < BLOCKS; i++) marked += marked_in(smaps_text, (uintptr_t)blocks[i]);
    }
    say("fork-then-idle marked %d of %d\n", marked, BLOCKS);
    return 0;
}

/* Tasks of this process whose status does not show gid 4242 everywhere
   and no supplementary groups. */
static int tasks_with_other_groups(void) {
    DIR *d = opendir("/proc/self/task");
    if (!d) die("opendir /proc/self/task");
    struct dirent *e;
    int wrong = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[300], buf[4096];
        snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0) continue; /* gone meanwhile */
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0) continue;
        buf[n] = 0;
        const char *groups = strstr(buf, "\nGroups:");
        int supplementary = !groups;
        for (const char *g = groups ? groups + 8 : ""; *g && *g != '\n'; g++)
            if (*g >= '0' && *g <= '9') supplementary = 1;
        if (!strstr(buf, "\nGid:\t4242\t4242\t4242\t4242\n") || supplementary) wrong++;
    }
    closedir(d);
    return wrong;
}

static int raw_setgid(void) {
    long long start = now_ns();
    int changed = 0;
    while (now_ns() - start < 3000000000LL) {
        allocate_mib(4);
        if (!changed && now_ns() - start > 1000000000LL) {
            if (raw_syscall3(SYS_setgroups, 0, 0, 0) || raw_syscall3(SYS_setresgid, 4242, 4242, 4242))
                die("raw setresgid");
            changed = 1;
        }
        usleep(20000);
    }
    say("raw-setgid wrong %d\n", tasks_with_other_groups());
    return 0;
}

static int realtime(void) {
    struct sched_param param = {.sched_priority = 1};
    if (sched_setscheduler(0, SCHED_FIFO, &param)) die("sched_setscheduler");
    int main_id = (int)syscall(SYS_gettid);
    int others = 0;
    long long start = now_ns();
    while (now_ns() - start < 2000000000LL) {
        allocate_mib(4);
        DIR *d = opendir("/proc/self/task");
        if (!d) die("opendir /proc/self/task");
        struct dirent *e;
        while ((e = readdir(d))) {
            int tid = atoi(e->d_name);
            if (tid <= 0 || tid == main_id) continue;
            int policy = sched_getscheduler(tid);
            if (policy == SCHED_FIFO || policy == SCHED_RR) others++;
        }
        closedir(d);
        usleep(20000);
    }
    say("realtime others %d\n", others);
    return 0;
}

static int raw_clone(void) {
    main_tid = (int)syscall(SYS_gettid);
    allocate_mib(64);
    if (!wait_for(library_thread_there, 3000)) {
        say("raw-clone no library thread\n");
        return 0;
    }
    long pid = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (pid < 0) die("clone");
    if (pid == 0) {
        main_tid = (int)syscall(SYS_gettid);
        int seen = 0;
        for (int round = 0; round < 80 && !seen; round++) {
            allocate_mib(1);
            seen = library_thread_there();
            usleep(100000);
        }
        say("raw-clone child thread %d\n", seen);
        _exit(0);
    }
    int st;
    if (waitpid((pid_t)pid, &st, 0) != pid) die("waitpid");
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
    if (!strcmp(c, "tid-reuse")) return tid_reuse();
    if (!strcmp(c, "raw-setgid")) return raw_setgid();
    if (!strcmp(c, "realtime")) return realtime();
    if (!strcmp(c, "raw-clone")) return raw_clone();
    if (!strcmp(c, "fork-then-idle")) return fork_then_idle();
    say("unknown case %s\n", c);
    return 2;
}
