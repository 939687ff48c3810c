/*
 * No signal is ever delivered to a library thread (issue 19). A program
 * with three threads of its own allocates for 1.5 s while it is sent
 * thousands of real-time signals (queued, never merged: each one is
 * delivered exactly once) by a child process and by itself
 * (kill(getpid())). The kernel gives a process-directed signal to any
 * thread that does not block it, preferring one that has none pending: a
 * library thread that left one unblocked would take some.
 *
 *   signals handled   the program blocks nothing; its handler counts the
 *                     signals that ran on one of its own threads and those
 *                     that ran on any other ("foreign")
 *   signals blocked   the program blocks the signal in every thread of its
 *                     own and takes the signals with sigtimedwait at the
 *                     end (as a daemon with a signal thread or signalfd
 *                     does): every one must still be pending for it
 *
 * Meanwhile, after each round of allocation, it looks at every task of
 * /proc/self/task that is not one of its own: such a thread must block
 * every signal a program can use (SigBlk: all but SIGKILL, SIGSTOP and
 * glibc's two internal ones, 32 and 33, which glibc uses to make every
 * thread it knows take part in setuid and cancellation).
 *
 * Prints "sent N received M foreign F extra E unblocking U" (received: by
 * the handler on an own thread, or by sigtimedwait).
 *
 * Built with -DFOREIGN_THREAD, the program itself starts one more thread
 * that it does not count as its own and that blocks nothing: the control
 * that shows the checks catch such a thread.
 */
#include "offthread.h"

#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

enum { OWN_THREADS = 3, FROM_CHILD = 6000, FROM_SELF = 1000 };

static int sig;
static pid_t own_tids[OWN_THREADS];
static volatile long received, foreign;
static volatile int stop;
static long extra_seen, extra_unblocking;

static pid_t gettid_raw(void) { return (pid_t)syscall(SYS_gettid); }

static int is_own(pid_t tid) {
    for (int i = 0; i < OWN_THREADS; i++)
        if (own_tids[i] == tid) return 1;
    return 0;
}

static void on_signal(int s) {
    (void)s;
    if (is_own(gettid_raw())) __atomic_add_fetch(&received, 1, __ATOMIC_RELAXED);
    else __atomic_add_fetch(&foreign, 1, __ATOMIC_RELAXED);
}

/* Every signal a program can use: 1..64 but SIGKILL, SIGSTOP, 32, 33. */
static unsigned long long usable_signals(void) {
    unsigned long long all = ~0ULL;
    all &= ~(1ULL << (SIGKILL - 1)) & ~(1ULL << (SIGSTOP - 1));
    all &= ~(1ULL << 31) & ~(1ULL << 32);
    return all;
}

/* Looks at the tasks that are not the program's own. */
static void check_extra_threads(void) {
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.' || is_own((pid_t)atoi(e->d_name))) continue;
        char path[300], line[256];
        snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue; /* gone meanwhile */
        unsigned long long blocked = 0;
        int found = 0;
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "SigBlk:", 7)) found = sscanf(line + 7, "%llx", &blocked) == 1;
        fclose(f);
        if (!found) continue;
        extra_seen++;
        if ((blocked & usable_signals()) != usable_signals()) {
            extra_unblocking++;
            say("task %s blocks only %016llx\n", e->d_name, blocked);
        }
    }
    if (d) closedir(d);
}

static void allocate_round(void) {
    void *keep[64];
    for (int i = 0; i < 64; i++) {
        keep[i] = malloc(i % 8 == 0 ? 256 << 10 : 4096);
        if (!keep[i]) die("malloc");
        memset(keep[i], i + 1, i % 8 == 0 ? 256 << 10 : 4096);
    }
    unsigned char *raw = (unsigned char *)syscall(SYS_mmap, NULL, 256 << 10, PROT_READ | PROT_WRITE,
                                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) die("mmap");
    memset(raw, 1, 256 << 10);
    munmap(raw, 256 << 10);
    for (int i = 0; i < 64; i++) free(keep[i]);
}

#ifdef FOREIGN_THREAD
static void *foreign_thread(void *arg) {
    (void)arg;
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
    for (;;) pause();
    return NULL;
}
#endif

static void *own_thread(void *arg) {
    own_tids[(intptr_t)arg] = gettid_raw();
    while (!stop) allocate_round();
    return NULL;
}

int main(int argc, char **argv) {
    ot_init();
    if (argc != 2) return 64;
    int blocked_mode = !strcmp(argv[1], "blocked");
    sig = SIGRTMIN + 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigaction(sig, &sa, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    if (blocked_mode) pthread_sigmask(SIG_BLOCK, &set, NULL);
    own_tids[0] = gettid_raw();

    int go[2];
    if (pipe(go) != 0) die("pipe");
    pid_t parent = getpid(), sender = fork();
    if (sender < 0) die("fork");
    if (sender == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        char c;
        if (read(go[0], &c, 1) != 1) _exit(1);
        for (int i = 0; i < FROM_CHILD; i++) {
            if (kill(parent, sig) != 0) _exit(2);
            if (i % 64 == 0) sched_yield();
        }
        _exit(0);
    }
    pthread_t t[OWN_THREADS];
    for (intptr_t i = 1; i < OWN_THREADS; i++)
        if (pthread_create(&t[i], NULL, own_thread, (void *)i) != 0) die("pthread_create");
    while (!own_tids[OWN_THREADS - 1] || !own_tids[1]) sched_yield();
#ifdef FOREIGN_THREAD
    pthread_t f;
    if (pthread_create(&f, NULL, foreign_thread, NULL) != 0) die("pthread_create");
#endif
    if (write(go[1], "g", 1) != 1) die("go");

    double until = now_s() + 1.5;
    long from_self = 0;
    while (now_s() < until || from_self < FROM_SELF) {
        allocate_round();
        for (int i = 0; i < 20 && from_self < FROM_SELF; i++, from_self++) kill(getpid(), sig);
        check_extra_threads();
    }
    stop = 1;
    for (int i = 1; i < OWN_THREADS; i++) pthread_join(t[i], NULL);
    int st;
    if (waitpid(sender, &st, 0) != sender || !WIFEXITED(st) || WEXITSTATUS(st) != 0) die("sender");
    long sent = FROM_CHILD + from_self;
    if (blocked_mode) {
        struct timespec wait = { 5, 0 };
        while (received < sent && sigtimedwait(&set, NULL, &wait) == sig) received++;
    } else {
        double deadline = now_s() + 10;
        while (received + foreign < sent && now_s() < deadline) {
            struct timespec tick = { 0, 1000 * 1000 };
            nanosleep(&tick, NULL);
        }
    }
    check_extra_threads();
    say("sent %ld received %ld foreign %ld extra %ld unblocking %ld\n", sent, received, foreign, extra_seen,
        extra_unblocking);
    return 0;
}
