/*
 * What a program that never started a thread (or whose threads are all
 * its own) relies on, right after it allocated lots (issue 19: the
 * library's catch-up thread exists exactly then). tests/offthread.rs runs
 * each case without the library and under every mode.
 *
 *   alone CASE [ARG]
 *
 * CASE:
 *   unshare [fork]   unshare(CLONE_NEWUSER) right after allocating (in a
 *                    forked child that allocated, with `fork`): "unshare ok"
 *   setns [fork]     setns() into a user namespace a helper child made:
 *                    "setns ok"
 *   stat-threads     fork right after allocating, then num_threads of
 *                    /proc/self/stat in the parent (what CPython 3.12 and
 *                    3.13 check right after fork returns, before warning
 *                    about forking a multi-threaded process):
 *                    "stat threads N"
 *   creds            3 threads of its own waiting, then setgroups, setgid,
 *                    setuid (glibc's: applied to every thread it knows);
 *                    every task of /proc/self/task must show them:
 *                    "tasks N wrong M" (built with -DUNKNOWN_THREAD, one
 *                    more thread made with clone() itself: the control)
 *   tasks            /proc/self/task counted after each way of allocating:
 *                    "tasks WHERE N own M" lines, then "settled pid=N" and
 *                    a wait (read on stdin) for the test to count from
 *                    outside
 *   fork             fork; the child allocates and exits 7: "child status 7"
 *   vfork            vfork + exec of /bin/true, posix_spawn of /bin/echo:
 *                    "vfork status 0", "spawned", "spawn status 0"
 *   exec             exec's itself; the new image allocates and prints
 *                    "exec'd"
 *   exit             exit(3) right after allocating; an atexit handler
 *                    prints "atexit ran"
 *   pthread-exit     main calls pthread_exit; a thread allocates, prints
 *                    "worker done at NS" (CLOCK_MONOTONIC) and returns: the
 *                    process ends then, status 0 (the test times the reap)
 *   exit-timed       prints "exiting at NS" (CLOCK_MONOTONIC) right after
 *                    allocating, then exit(0): the test times the reap
 *   seccomp ACTION   allocates, installs a seccomp filter that answers
 *                    clone and clone3 with ACTION (errno: EPERM; kill: kill
 *                    the process) through the raw system call (as a Go
 *                    program or an inherited filter would: no libc call the
 *                    library could see), allocates lots again, and prints
 *                    "still working sum N"
 */
#include "offthread.h"

#include <grp.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/wait.h>

extern char **environ;

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

static int child_status(pid_t pid) {
    int st;
    if (waitpid(pid, &st, 0) != pid) die("waitpid");
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Runs `body` right after allocating lots, in this process or (fork) in a
   child that allocated after the fork too; prints what body printed. */
static int after_allocating(int in_child, int (*body)(void)) {
    allocate_lots(4);
    if (!in_child) return body();
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        allocate_lots(4);
        _exit(body());
    }
    return child_status(pid);
}

static int do_unshare(void) {
    if (unshare(CLONE_NEWUSER) != 0) {
        say("unshare errno=%d (tasks %d)\n", errno, task_count());
        return 1;
    }
    say("unshare ok\n");
    return 0;
}

static int userns_fd = -1;

static int do_setns(void) {
    if (setns(userns_fd, CLONE_NEWUSER) != 0) {
        say("setns errno=%d (tasks %d)\n", errno, task_count());
        return 1;
    }
    say("setns ok\n");
    return 0;
}

/* A child in a user namespace of its own, kept until we exit. */
static void open_helper_userns(void) {
    int go[2];
    if (pipe(go) != 0) die("pipe");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (unshare(CLONE_NEWUSER) != 0) _exit(1);
        if (write(go[1], "u", 1) != 1) _exit(1);
        for (;;) pause();
    }
    char c;
    if (read(go[0], &c, 1) != 1) die("helper userns");
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
    userns_fd = open(path, O_RDONLY);
    if (userns_fd < 0) die("open ns");
}

/* ---- credentials ------------------------------------------------------- */

static pthread_mutex_t idle_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t idle_cond = PTHREAD_COND_INITIALIZER;

static void *idle_thread(void *arg) {
    (void)arg;
    pthread_mutex_lock(&idle_lock);
    for (;;) pthread_cond_wait(&idle_cond, &idle_lock);
    return NULL;
}

/* The value of `key:` in a task's status, first field only for Uid/Gid
   (real), the whole line for Groups. */
static int task_field(const char *task, const char *key, char *out, size_t len) {
    char path[128], line[512];
    snprintf(path, sizeof path, "/proc/self/task/%s/status", task);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int found = -1;
    size_t k = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, k) && line[k] == ':') {
            char *v = line + k + 1;
            while (*v == ' ' || *v == '\t') v++;
            v[strcspn(v, "\n")] = 0;
            snprintf(out, len, "%s", v);
            found = 0;
            break;
        }
    fclose(f);
    return found;
}

#ifdef UNKNOWN_THREAD
/* A thread made with clone() itself, as a library could: glibc does not
   know it, so its setuid leaves it out (the control of the creds check). */
static int unknown_thread(void *arg) {
    (void)arg;
    for (;;) pause();
    return 0;
}

static void start_unknown_thread(void) {
    static char stack[64 << 10] __attribute__((aligned(16)));
    int flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
    if (clone(unknown_thread, stack + sizeof stack, flags, NULL) < 0) die("clone");
}
#endif

static int creds(void) {
    for (int i = 0; i < 3; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, idle_thread, NULL) != 0) die("pthread_create");
    }
#ifdef UNKNOWN_THREAD
    start_unknown_thread();
#endif
    allocate_lots(2);
    gid_t groups[] = { 4242, 4343 };
    if (setgroups(2, groups) != 0) die("setgroups");
    if (setgid(4242) != 0) die("setgid");
    if (setuid(4242) != 0) die("setuid");
    allocate_lots(0);
    int tasks = 0, wrong = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char uid[128], gid[128], grp[128];
        tasks++;
        if (task_field(e->d_name, "Uid", uid, sizeof uid) || task_field(e->d_name, "Gid", gid, sizeof gid) ||
            task_field(e->d_name, "Groups", grp, sizeof grp)) {
            say("task %s: status unreadable\n", e->d_name);
            wrong++;
        } else if (strcmp(uid, "4242\t4242\t4242\t4242") || strcmp(gid, "4242\t4242\t4242\t4242") ||
                   strncmp(grp, "4242 4343", 9)) {
            say("task %s: Uid %s Gid %s Groups %s\n", e->d_name, uid, gid, grp);
            wrong++;
        }
    }
    if (d) closedir(d);
    say("tasks %d wrong %d\n", tasks, wrong);
    return 0;
}

/* ---- thread counts ----------------------------------------------------- */

static int own_threads = 1;

static void say_tasks(const char *where) { say("tasks %s %d own %d\n", where, task_count(), own_threads); }

/* The workers are alive when counted: they allocate, meet the main thread,
 * and leave only once it counted (a worker done before the count made the
 * count one short of the program's own threads). */
static pthread_barrier_t allocated, counted;

static void *worker_allocates(void *arg) {
    (void)arg;
    small_objects(2 << 20);
    large_blocks(4, 1 << 20);
    pthread_barrier_wait(&allocated);
    pthread_barrier_wait(&counted);
    return NULL;
}

static int tasks(void) {
    say_tasks("start");
    large_blocks(16, 1 << 20);
    say_tasks("large");
    raw_mmap(8 << 20);
    say_tasks("rawmmap");
    small_objects(8 << 20);
    say_tasks("brk");
    reserve_then_commit(4 << 20);
    say_tasks("reserve");
    pthread_t t[3];
    pthread_barrier_init(&allocated, NULL, 4);
    pthread_barrier_init(&counted, NULL, 4);
    for (int i = 0; i < 3; i++)
        if (pthread_create(&t[i], NULL, worker_allocates, NULL) != 0) die("pthread_create");
    own_threads = 4;
    pthread_barrier_wait(&allocated);
    say_tasks("threads");
    pthread_barrier_wait(&counted);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    own_threads = 1;
    say_tasks("joined");
    say("settled pid=%d\n", (int)getpid());
    char c;
    while (read(0, &c, 1) > 0) {}
    say_tasks("end");
    return 0;
}

/* ---- fork, vfork, spawn, exec, exit ------------------------------------ */

static int do_vfork(void) {
    allocate_lots(2);
    pid_t pid = vfork();
    if (pid < 0) die("vfork");
    if (pid == 0) {
        execl("/bin/true", "true", (char *)NULL);
        _exit(127);
    }
    say("vfork status %d\n", child_status(pid));
    allocate_lots(0);
    char *argv[] = { "echo", "spawned", NULL };
    if (posix_spawn(&pid, "/bin/echo", NULL, NULL, argv, environ) != 0) die("posix_spawn");
    say("spawn status %d\n", child_status(pid));
    return 0;
}

static void say_atexit(void) { say("atexit ran\n"); }

static long long monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *last_worker(void *arg) {
    (void)arg;
    allocate_lots(4);
    large_blocks(32, 1 << 20);
    say("worker done at %lld\n", monotonic_ns());
    return NULL;
}

static int pthread_exit_main(void) {
    allocate_lots(0);
    pthread_t t;
    if (pthread_create(&t, NULL, last_worker, NULL) != 0) die("pthread_create");
    pthread_exit(NULL);
}

static int exit_timed(void) {
    allocate_lots(4);
    large_blocks(32, 1 << 20);
    say("exiting at %lld\n", monotonic_ns());
    exit(0);
}

/* ---- seccomp ------------------------------------------------------------- */

static int seccomp_clone(const char *action) {
    allocate_lots(2);
    unsigned deny = !strcmp(action, "kill") ? SECCOMP_RET_KILL_PROCESS : SECCOMP_RET_ERRNO | EPERM;
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, deny),
    };
    struct sock_fprog prog = { sizeof filter / sizeof filter[0], filter };
    if (raw_syscall3(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0) != 0) die("no_new_privs");
    if (raw_syscall3(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, (long)&prog) != 0) die("seccomp");
    unsigned long sum = 0;
    for (int round = 0; round < 5; round++) {
        allocate_lots(0);
        unsigned char *p = (unsigned char *)syscall(SYS_mmap, NULL, 1 << 20, PROT_READ | PROT_WRITE,
                                                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) die("mmap");
        memset(p, round + 1, 1 << 20);
        sum += p[round];
        /* 5 x 60 ms: longer than the library's thread, if it outlived the
           filter, takes to notice it (it compares its restrictions with
           the main thread's every 100 ms), so that the report can say so
           whichever thread met the filter first. */
        struct timespec tick = { 0, 60 * 1000 * 1000 };
        nanosleep(&tick, NULL);
    }
    say("still working sum %lu\n", sum);
    return 0;
}

int main(int argc, char **argv) {
    ot_init();
    if (argc < 2) return 64;
    const char *c = argv[1], *arg = argc > 2 ? argv[2] : "";
    int in_child = !strcmp(arg, "fork");
    if (!strcmp(c, "unshare")) return after_allocating(in_child, do_unshare);
    if (!strcmp(c, "setns")) {
        open_helper_userns();
        return after_allocating(in_child, do_setns);
    }
    if (!strcmp(c, "stat-threads")) {
        /* As CPython 3.12 and 3.13 do: fork, then count in the parent. */
        allocate_lots(4);
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) _exit(0);
        long threads = stat_threads();
        child_status(pid);
        say("stat threads %ld\n", threads);
        return 0;
    }
    if (!strcmp(c, "creds")) return creds();
    if (!strcmp(c, "tasks")) return tasks();
    if (!strcmp(c, "fork")) {
        allocate_lots(2);
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) {
            allocate_lots(2);
            _exit(7);
        }
        say("child status %d\n", child_status(pid));
        return 0;
    }
    if (!strcmp(c, "vfork")) return do_vfork();
    if (!strcmp(c, "exec")) {
        allocate_lots(2);
        execl("/proc/self/exe", argv[0], "exec-child", (char *)NULL);
        die("exec");
    }
    if (!strcmp(c, "exec-child")) {
        allocate_lots(2);
        say("exec'd\n");
        return 0;
    }
    if (!strcmp(c, "exit")) {
        atexit(say_atexit);
        allocate_lots(2);
        exit(3);
    }
    if (!strcmp(c, "pthread-exit")) return pthread_exit_main();
    if (!strcmp(c, "exit-timed")) return exit_timed();
    if (!strcmp(c, "seccomp")) return seccomp_clone(arg);
    return 64;
}
