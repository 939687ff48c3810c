/* The calls that may block, shared by blocking_idle.c and blocking_cancel.c:
 * `setup(name)` prepares what the call waits on (descriptors nobody writes,
 * a child that never exits, a semaphore at zero, …), `block(name)` makes it.
 * Helper threads and children wait in raw system calls, so that they make no
 * hooked call themselves. With `ready_mode`, each call is made so that it
 * returns at once, and `block` then prints "returned" and waits raw. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern ssize_t __read_chk(int, void *, size_t, size_t);
extern ssize_t __recv_chk(int, void *, size_t, size_t, int);
extern ssize_t __recvfrom_chk(int, void *, size_t, size_t, int, struct sockaddr *, socklen_t *);
extern int __poll_chk(struct pollfd *, nfds_t, int, size_t);
extern int __ppoll_chk(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *, size_t);

static int threads = 1;
static int ready_mode;
static int pipe_fds[2], sock_fds[2], listener, epfd, msqid = -1;
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static pthread_barrier_t barrier;
static sem_t sem;
static pthread_t sleeper;
static int futex_word;

/* Blocks for ever without calling into the library: a raw read of a pipe
 * nobody writes. */
static void *raw_block(void *arg) {
    char c;
    (void)arg;
    for (;;)
        syscall(SYS_read, pipe_fds[0], &c, 1);
    return NULL;
}

static void start_raw_thread(pthread_t *t) {
    if (pthread_create(t, NULL, raw_block, NULL) != 0)
        abort();
    threads++;
}

static void setup(const char *name) {
    if (pipe(pipe_fds) || socketpair(AF_UNIX, SOCK_STREAM, 0, sock_fds))
        abort();
    if (!strcmp(name, "accept") || !strcmp(name, "accept4")) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "ksmauto-idle-%d", getpid());
        listener = socket(AF_UNIX, SOCK_STREAM, 0);
        if (bind(listener, (struct sockaddr *)&a, sizeof a) || listen(listener, 1))
            abort();
    }
    if (!strncmp(name, "epoll", 5)) {
        struct epoll_event ev = {.events = EPOLLIN};
        epfd = epoll_create1(0);
        epoll_ctl(epfd, EPOLL_CTL_ADD, pipe_fds[0], &ev);
    }
    if (!strcmp(name, "msgrcv")) {
        msqid = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
        if (msqid < 0)
            abort();
        printf("msqid %d\n", msqid);
    }
    if (!strcmp(name, "pthread_barrier_wait"))
        pthread_barrier_init(&barrier, NULL, 2);
    if (!strcmp(name, "pthread_join"))
        start_raw_thread(&sleeper);
    if (!strncmp(name, "pthread_cond", 12)) {
        /* A second thread, as a program that waits on a condition has. */
        pthread_t t;
        start_raw_thread(&t);
    }
    if (!strncmp(name, "sem_", 4))
        sem_init(&sem, 0, ready_mode);
    if (!strncmp(name, "wait", 4)) {
        pid_t parent = getpid();
        pid_t child = fork();
        if (child == 0) {
            if (ready_mode)
                _exit(0);
            /* Killed with us, even if we were killed before this line. */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent)
                _exit(0);
            for (;;)
                syscall(SYS_pause);
        }
        if (ready_mode) {
            /* Until it is a zombie, through a raw waitid that reaps nothing. */
            siginfo_t si;
            syscall(SYS_waitid, P_PID, child, &si, WEXITED | WNOWAIT, NULL);
        }
    }
    if (ready_mode) {
        char c = 'x';
        write(pipe_fds[1], &c, 1);
        write(sock_fds[1], &c, 1);
        if (listener) {
            struct sockaddr_un a;
            socklen_t len = sizeof a;
            getsockname(listener, (struct sockaddr *)&a, &len);
            int s = socket(AF_UNIX, SOCK_STREAM, 0);
            if (connect(s, (struct sockaddr *)&a, len))
                abort();
        }
    }
    if (!strncmp(name, "sig", 3) || !strcmp(name, "pause")) {
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGUSR1);
        sigprocmask(SIG_BLOCK, &s, NULL);
    }
}

static void far_future(struct timespec *ts, clockid_t clock) {
    clock_gettime(clock, ts);
    ts->tv_sec += 3600;
}

static void block(const char *n) {
    char buf[16];
    struct pollfd p = {.fd = pipe_fds[0], .events = POLLIN};
    struct epoll_event ev;
    struct timespec hour = {3600, 0}, until;
    sigset_t usr1;
    siginfo_t si;
    int sig, status;
    fd_set r;

    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    if (ready_mode) {
        /* Where data cannot make the call return at once, a zero timeout does. */
        hour.tv_sec = 0;
    }
    FD_ZERO(&r);
    FD_SET(pipe_fds[0], &r);

    if (!strcmp(n, "read")) read(pipe_fds[0], buf, 1);
    else if (!strcmp(n, "__read_chk")) __read_chk(pipe_fds[0], buf, 1, sizeof buf);
    else if (!strcmp(n, "recv")) recv(sock_fds[0], buf, 1, 0);
    else if (!strcmp(n, "__recv_chk")) __recv_chk(sock_fds[0], buf, 1, sizeof buf, 0);
    else if (!strcmp(n, "recvfrom")) recvfrom(sock_fds[0], buf, 1, 0, NULL, NULL);
    else if (!strcmp(n, "__recvfrom_chk")) __recvfrom_chk(sock_fds[0], buf, 1, sizeof buf, 0, NULL, NULL);
    else if (!strcmp(n, "recvmsg")) {
        struct iovec v = {buf, 1};
        struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
        recvmsg(sock_fds[0], &m, 0);
    }
    else if (!strcmp(n, "accept")) accept(listener, NULL, NULL);
    else if (!strcmp(n, "accept4")) accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    else if (!strcmp(n, "msgrcv")) msgrcv(msqid, buf, 8, 0, ready_mode ? IPC_NOWAIT : 0);
    else if (!strcmp(n, "poll")) poll(&p, 1, -1);
    else if (!strcmp(n, "__poll_chk")) __poll_chk(&p, 1, -1, sizeof p);
    else if (!strcmp(n, "ppoll")) ppoll(&p, 1, NULL, NULL);
    else if (!strcmp(n, "__ppoll_chk")) __ppoll_chk(&p, 1, &hour, NULL, sizeof p);
    else if (!strcmp(n, "select")) select(pipe_fds[0] + 1, &r, NULL, NULL, NULL);
    else if (!strcmp(n, "pselect")) pselect(pipe_fds[0] + 1, &r, NULL, NULL, &hour, NULL);
    else if (!strcmp(n, "epoll_wait")) epoll_wait(epfd, &ev, 1, -1);
    else if (!strcmp(n, "epoll_pwait")) epoll_pwait(epfd, &ev, 1, 3600000, NULL);
    else if (!strcmp(n, "epoll_pwait2")) epoll_pwait2(epfd, &ev, 1, NULL, NULL);
    else if (!strcmp(n, "nanosleep")) nanosleep(&hour, NULL);
    else if (!strcmp(n, "clock_nanosleep")) clock_nanosleep(CLOCK_MONOTONIC, 0, &hour, NULL);
    else if (!strcmp(n, "clock_nanosleep_abs")) {
        far_future(&until, CLOCK_REALTIME);
        if (ready_mode)
            until.tv_sec -= 7200;
        clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &until, NULL);
    }
    else if (!strcmp(n, "sleep")) sleep(ready_mode ? 0 : 3600);
    else if (!strcmp(n, "usleep")) {
        do
            usleep(ready_mode ? 0 : 999999);
        while (!ready_mode);
    }
    else if (!strcmp(n, "pause")) pause();
    else if (!strcmp(n, "sigsuspend")) {
        sigset_t none;
        sigemptyset(&none);
        sigaddset(&none, SIGUSR1);
        sigsuspend(&none);
    }
    else if (!strcmp(n, "sigwait")) sigwait(&usr1, &sig);
    else if (!strcmp(n, "sigwaitinfo")) sigwaitinfo(&usr1, &si);
    else if (!strcmp(n, "sigtimedwait")) sigtimedwait(&usr1, &si, &hour);
    else if (!strcmp(n, "wait")) wait(&status);
    else if (!strcmp(n, "waitpid")) waitpid(-1, &status, 0);
    else if (!strcmp(n, "waitid")) waitid(P_ALL, 0, &si, WEXITED);
    else if (!strcmp(n, "waitid_nohang")) waitid(P_ALL, 0, &si, WEXITED | WNOHANG);
    else if (!strcmp(n, "wait3")) wait3(&status, 0, NULL);
    else if (!strcmp(n, "wait4")) wait4(-1, &status, 0, NULL);
    else if (!strcmp(n, "pthread_cond_wait")) {
        pthread_mutex_lock(&mutex);
        pthread_cond_wait(&cond, &mutex);
    }
    else if (!strcmp(n, "pthread_cond_timedwait")) {
        far_future(&until, CLOCK_REALTIME);
        pthread_mutex_lock(&mutex);
        pthread_cond_timedwait(&cond, &mutex, &until);
    }
    else if (!strcmp(n, "pthread_cond_clockwait")) {
        far_future(&until, CLOCK_MONOTONIC);
        pthread_mutex_lock(&mutex);
        pthread_cond_clockwait(&cond, &mutex, CLOCK_MONOTONIC, &until);
    }
    else if (!strcmp(n, "pthread_barrier_wait")) pthread_barrier_wait(&barrier);
    else if (!strcmp(n, "pthread_join")) pthread_join(sleeper, NULL);
    else if (!strcmp(n, "sem_wait")) sem_wait(&sem);
    else if (!strcmp(n, "sem_timedwait")) {
        far_future(&until, CLOCK_REALTIME);
        sem_timedwait(&sem, &until);
    }
    else if (!strcmp(n, "sem_clockwait")) {
        far_future(&until, CLOCK_MONOTONIC);
        sem_clockwait(&sem, CLOCK_MONOTONIC, &until);
    }
    else if (!strcmp(n, "futex")) syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, NULL);
    else {
        fprintf(stderr, "unknown call %s\n", n);
        exit(2);
    }
    if (!ready_mode) {
        fprintf(stderr, "%s returned\n", n);
        exit(3);
    }
    printf("returned\n");
    fflush(stdout);
    for (;;)
        syscall(SYS_pause);
}

