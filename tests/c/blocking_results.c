/* Every hooked call that may block, in its waiting case (woken by a helper
 * thread: data, a connection, a signal, a child's exit, a post), its
 * immediate case (data ready, zero timeout, WNOHANG, a child already gone)
 * and an error case, with EINTR from a handler installed without SA_RESTART
 * for a few. Prints return values, errno (set to a sentinel before each
 * call, so a call that leaves it alone shows the sentinel) and
 * out-parameters — nothing that depends on timing or on descriptor numbers —
 * so the output must be the same with and without the library.
 *
 * Before each call `poke` makes a raw brk system call through libc's
 * `syscall`: under the library that is news of new memory, so the edge of
 * idleness is due at every hooked call and its look at the call is made. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/resource.h>
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

static void poke(void) { syscall(SYS_brk, 0); }

#define CALL(name, kase, expr)                                                 \
    do {                                                                       \
        poke();                                                                \
        errno = 777;                                                           \
        long rc_ = (long)(expr);                                               \
        int e_ = errno;                                                        \
        printf("%s %s rc=%ld errno=%d", name, kase, rc_, e_);                  \
    } while (0)
/* For calls that return a descriptor: its number is not compared. */
#define CALL_FD(name, kase, expr)                                              \
    do {                                                                       \
        poke();                                                                \
        errno = 777;                                                           \
        long rc_ = (long)(expr);                                               \
        int e_ = errno;                                                        \
        printf("%s %s rc=%s errno=%d", name, kase, rc_ >= 0 ? "fd" : "-1", e_); \
        if (rc_ >= 0)                                                          \
            close((int)rc_);                                                   \
    } while (0)
#define END() printf("\n")

/* ---- wakers: a helper thread acts after a short while, or, for a signal,
 * again and again until the main thread has returned from its call (a
 * signal that came before the call would be lost) */

static pthread_t main_thread, waker;
static atomic_int returned;
static int handled;
static void on_usr1(int s) { (void)s; handled++; }

enum action { WRITE_PIPE, SEND_SOCK, CONNECT, SIGNAL, MSGSND, POST, COND, EXIT_CHILD, SIGNAL_USR2 };
static int act_fd;
static struct sockaddr_un act_addr;
static int act_msq;
static sem_t *act_sem;
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int cond_flag;
static int connected_fd = -1;

static void *wake(void *arg) {
    enum action a = (enum action)(long)arg;
    struct timespec t = {0, 30 * 1000 * 1000};
    nanosleep(&t, NULL);
    switch (a) {
    case WRITE_PIPE:
    case SEND_SOCK:
        write(act_fd, "abc", 3);
        break;
    case CONNECT: {
        connected_fd = socket(AF_UNIX, SOCK_STREAM, 0);
        connect(connected_fd, (struct sockaddr *)&act_addr, sizeof act_addr);
        break;
    }
    case SIGNAL:
    case SIGNAL_USR2:
        while (!atomic_load(&returned)) {
            pthread_kill(main_thread, a == SIGNAL ? SIGUSR1 : SIGUSR2);
            t.tv_nsec = 20 * 1000 * 1000;
            nanosleep(&t, NULL);
        }
        break;
    case MSGSND: {
        struct { long type; char text[4]; } m = {1, "abc"};
        msgsnd(act_msq, &m, 4, 0);
        break;
    }
    case POST:
        sem_post(act_sem);
        break;
    case COND:
        pthread_mutex_lock(&mutex);
        cond_flag = 1;
        pthread_cond_signal(&cond);
        pthread_mutex_unlock(&mutex);
        break;
    case EXIT_CHILD:
        break;
    }
    return NULL;
}

static void later(enum action a) {
    atomic_store(&returned, 0);
    pthread_create(&waker, NULL, wake, (void *)(long)a);
}
static void joined(void) {
    atomic_store(&returned, 1);
    pthread_join(waker, NULL);
}

static void fresh_pipe(int p[2]) {
    if (pipe(p))
        abort();
}
static void fresh_socks(int s[2]) {
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, s))
        abort();
}
static void close2(int p[2]) { close(p[0]); close(p[1]); }

static int listener(struct sockaddr_un *a, int flags) {
    static int n;
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    snprintf(a->sun_path + 1, sizeof a->sun_path - 1, "ksmauto-results-%d-%d", getpid(), n++);
    int l = socket(AF_UNIX, SOCK_STREAM | flags, 0);
    if (bind(l, (struct sockaddr *)a, sizeof *a) || listen(l, 4))
        abort();
    return l;
}

static pid_t child_exiting(int code, int after_ms) {
    pid_t c = fork();
    if (c == 0) {
        struct timespec t = {after_ms / 1000, after_ms % 1000 * 1000000L};
        syscall(SYS_nanosleep, &t, NULL);
        _exit(code);
    }
    return c;
}
/* Until child `c` is a zombie (reaps nothing). */
static void until_gone(pid_t c) {
    siginfo_t si;
    syscall(SYS_waitid, P_PID, c, &si, WEXITED | WNOWAIT, NULL);
}

static struct timespec in_ms(clockid_t clock, long ms) {
    struct timespec t;
    clock_gettime(clock, &t);
    t.tv_nsec += ms * 1000000L;
    t.tv_sec += t.tv_nsec / 1000000000L;
    t.tv_nsec %= 1000000000L;
    return t;
}

/* ------------------------------------------------------------------------ */

static void descriptors(void) {
    char buf[16];
    int p[2], s[2];

    /* read */
    fresh_pipe(p);
    act_fd = p[1];
    later(WRITE_PIPE);
    memset(buf, 0, sizeof buf);
    CALL("read", "waits", read(p[0], buf, sizeof buf)); printf(" buf=%s", buf); END();
    joined();
    write(p[1], "xy", 2);
    memset(buf, 0, sizeof buf);
    CALL("read", "ready", read(p[0], buf, sizeof buf)); printf(" buf=%s", buf); END();
    CALL("read", "ebadf", read(-1, buf, 1)); END();
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    CALL("read", "eagain", read(p[0], buf, 1)); END();
    fcntl(p[0], F_SETFL, 0);
    later(SIGNAL);
    CALL("read", "eintr", read(p[0], buf, 1)); END();
    joined();
    close(p[1]);
    CALL("read", "eof", read(p[0], buf, 1)); END();
    close(p[0]);

    /* __read_chk */
    fresh_pipe(p);
    act_fd = p[1];
    later(WRITE_PIPE);
    memset(buf, 0, sizeof buf);
    CALL("__read_chk", "waits", __read_chk(p[0], buf, 3, sizeof buf)); printf(" buf=%s", buf); END();
    joined();
    write(p[1], "xy", 2);
    CALL("__read_chk", "ready", __read_chk(p[0], buf, 2, sizeof buf)); END();
    CALL("__read_chk", "ebadf", __read_chk(-1, buf, 1, sizeof buf)); END();
    close2(p);

    /* recv, __recv_chk, recvfrom, __recvfrom_chk, recvmsg */
    fresh_socks(s);
    act_fd = s[1];
    later(SEND_SOCK);
    memset(buf, 0, sizeof buf);
    CALL("recv", "waits", recv(s[0], buf, sizeof buf, 0)); printf(" buf=%s", buf); END();
    joined();
    CALL("recv", "dontwait", recv(s[0], buf, sizeof buf, MSG_DONTWAIT)); END();
    write(s[1], "xy", 2);
    CALL("recv", "peek", recv(s[0], buf, sizeof buf, MSG_PEEK)); END();
    CALL("recv", "ready", recv(s[0], buf, sizeof buf, 0)); END();
    CALL("recv", "ebadf", recv(-1, buf, 1, 0)); END();
    fresh_pipe(p);
    CALL("recv", "enotsock", recv(p[0], buf, 1, 0)); END();
    close2(p);
    later(SIGNAL);
    CALL("recv", "eintr", recv(s[0], buf, 1, 0)); END();
    joined();

    later(SEND_SOCK);
    memset(buf, 0, sizeof buf);
    CALL("__recv_chk", "waits", __recv_chk(s[0], buf, 3, sizeof buf, 0)); printf(" buf=%s", buf); END();
    joined();
    CALL("__recv_chk", "dontwait", __recv_chk(s[0], buf, 3, sizeof buf, MSG_DONTWAIT)); END();
    CALL("__recv_chk", "ebadf", __recv_chk(-1, buf, 3, sizeof buf, 0)); END();

    struct sockaddr_un from;
    socklen_t from_len = sizeof from;
    later(SEND_SOCK);
    memset(buf, 0, sizeof buf);
    CALL("recvfrom", "waits", recvfrom(s[0], buf, sizeof buf, 0, (struct sockaddr *)&from, &from_len));
    printf(" buf=%s from_len=%u", buf, from_len); END();
    joined();
    write(s[1], "xy", 2);
    from_len = sizeof from;
    CALL("recvfrom", "ready", recvfrom(s[0], buf, sizeof buf, 0, (struct sockaddr *)&from, &from_len));
    printf(" from_len=%u", from_len); END();
    CALL("recvfrom", "dontwait", recvfrom(s[0], buf, sizeof buf, MSG_DONTWAIT, NULL, NULL)); END();
    CALL("recvfrom", "ebadf", recvfrom(-1, buf, 1, 0, NULL, NULL)); END();

    later(SEND_SOCK);
    memset(buf, 0, sizeof buf);
    from_len = sizeof from;
    CALL("__recvfrom_chk", "waits",
         __recvfrom_chk(s[0], buf, 3, sizeof buf, 0, (struct sockaddr *)&from, &from_len));
    printf(" buf=%s from_len=%u", buf, from_len); END();
    joined();
    CALL("__recvfrom_chk", "dontwait", __recvfrom_chk(s[0], buf, 3, sizeof buf, MSG_DONTWAIT, NULL, NULL)); END();
    CALL("__recvfrom_chk", "ebadf", __recvfrom_chk(-1, buf, 3, sizeof buf, 0, NULL, NULL)); END();

    struct iovec v = {buf, sizeof buf};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
    later(SEND_SOCK);
    memset(buf, 0, sizeof buf);
    CALL("recvmsg", "waits", recvmsg(s[0], &m, 0)); printf(" buf=%s flags=%d", buf, m.msg_flags); END();
    joined();
    write(s[1], "xy", 2);
    CALL("recvmsg", "ready", recvmsg(s[0], &m, 0)); END();
    CALL("recvmsg", "dontwait", recvmsg(s[0], &m, MSG_DONTWAIT)); END();
    CALL("recvmsg", "ebadf", recvmsg(-1, &m, 0)); END();
    close2(s);

    /* accept, accept4 */
    struct sockaddr_un a;
    int l = listener(&a, 0);
    act_addr = a;
    later(CONNECT);
    CALL_FD("accept", "waits", accept(l, NULL, NULL)); END();
    joined();
    close(connected_fd);
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    connect(c, (struct sockaddr *)&a, sizeof a);
    struct sockaddr_un peer;
    socklen_t peer_len = sizeof peer;
    CALL_FD("accept", "ready", accept(l, (struct sockaddr *)&peer, &peer_len));
    printf(" peer_len=%u", peer_len); END();
    close(c);
    CALL_FD("accept", "ebadf", accept(-1, NULL, NULL)); END();
    int unlistening = socket(AF_UNIX, SOCK_STREAM, 0);
    CALL_FD("accept", "einval", accept(unlistening, NULL, NULL)); END();
    fresh_pipe(p);
    CALL_FD("accept", "enotsock", accept(p[0], NULL, NULL)); END();
    close2(p);
    later(SIGNAL);
    CALL_FD("accept", "eintr", accept(l, NULL, NULL)); END();
    joined();
    later(CONNECT);
    poke();
    errno = 777;
    int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    printf("accept4 waits rc=%s errno=%d cloexec=%d nonblock=%d\n", fd >= 0 ? "fd" : "-1", errno,
           fd >= 0 && (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0,
           fd >= 0 && (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0);
    close(fd);
    joined();
    close(connected_fd);
    CALL_FD("accept4", "einval_flags", accept4(l, NULL, NULL, 0x7fff0000)); END();
    close(l);
    l = listener(&a, SOCK_NONBLOCK);
    CALL_FD("accept4", "eagain", accept4(l, NULL, NULL, 0)); END();
    close(l);
    close(unlistening);

    /* msgrcv */
    int q = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
    struct { long type; char text[8]; } msg;
    act_msq = q;
    later(MSGSND);
    memset(&msg, 0, sizeof msg);
    CALL("msgrcv", "waits", msgrcv(q, &msg, sizeof msg.text, 0, 0));
    printf(" type=%ld text=%s", msg.type, msg.text); END();
    joined();
    CALL("msgrcv", "nowait", msgrcv(q, &msg, sizeof msg.text, 0, IPC_NOWAIT)); END();
    struct { long type; char text[4]; } out = {2, "xy"};
    msgsnd(q, &out, 3, 0);
    CALL("msgrcv", "ready", msgrcv(q, &msg, sizeof msg.text, 2, 0)); printf(" type=%ld", msg.type); END();
    CALL("msgrcv", "einval", msgrcv(-1, &msg, sizeof msg.text, 0, 0)); END();
    later(SIGNAL);
    CALL("msgrcv", "eintr", msgrcv(q, &msg, sizeof msg.text, 0, 0)); END();
    joined();
    msgctl(q, IPC_RMID, NULL);
}

static void multiplexing(void) {
    int p[2];
    char buf[8];
    fresh_pipe(p);
    act_fd = p[1];
    struct pollfd fds[2] = {{.fd = p[0], .events = POLLIN}, {.fd = -1, .events = POLLIN}};

    /* poll, __poll_chk, ppoll, __ppoll_chk */
    later(WRITE_PIPE);
    CALL("poll", "waits", poll(fds, 2, -1)); printf(" revents=%x,%x", fds[0].revents, fds[1].revents); END();
    joined();
    CALL("poll", "ready", poll(fds, 2, 0)); printf(" revents=%x", fds[0].revents); END();
    read(p[0], buf, sizeof buf);
    fds[0].revents = 0x7777;
    CALL("poll", "zero", poll(fds, 2, 0)); printf(" revents=%x", fds[0].revents); END();
    CALL("poll", "timeout", poll(fds, 1, 20)); printf(" revents=%x", fds[0].revents); END();
    CALL("poll", "efault", poll((struct pollfd *)8, 1, 0)); END();
    struct rlimit lim;
    getrlimit(RLIMIT_NOFILE, &lim);
    CALL("poll", "einval", poll(fds, lim.rlim_cur + 1, 0)); END();
    struct pollfd bad = {.fd = 1000, .events = POLLIN};
    CALL("poll", "nval", poll(&bad, 1, -1)); printf(" revents=%x", bad.revents); END();
    later(SIGNAL);
    CALL("poll", "eintr", poll(fds, 1, -1)); END();
    joined();

    later(WRITE_PIPE);
    CALL("__poll_chk", "waits", __poll_chk(fds, 1, -1, sizeof fds)); printf(" revents=%x", fds[0].revents); END();
    joined();
    read(p[0], buf, sizeof buf);
    CALL("__poll_chk", "zero", __poll_chk(fds, 1, 0, sizeof fds)); END();

    struct timespec zero = {0, 0}, second = {1, 0}, bad_ts = {0, -1};
    later(WRITE_PIPE);
    CALL("ppoll", "waits", ppoll(fds, 1, NULL, NULL)); printf(" revents=%x", fds[0].revents); END();
    joined();
    CALL("ppoll", "ready", ppoll(fds, 1, &second, NULL)); printf(" second=%ld.%ld", second.tv_sec, second.tv_nsec); END();
    read(p[0], buf, sizeof buf);
    CALL("ppoll", "zero", ppoll(fds, 1, &zero, NULL)); END();
    CALL("ppoll", "einval", ppoll(fds, 1, &bad_ts, NULL)); END();
    later(WRITE_PIPE);
    CALL("__ppoll_chk", "waits", __ppoll_chk(fds, 1, NULL, NULL, sizeof fds)); END();
    joined();
    read(p[0], buf, sizeof buf);
    CALL("__ppoll_chk", "zero", __ppoll_chk(fds, 1, &zero, NULL, sizeof fds)); END();

    /* select, pselect */
    fd_set r, w;
    struct timeval tv;
    FD_ZERO(&r); FD_SET(p[0], &r);
    later(WRITE_PIPE);
    CALL("select", "waits", select(p[0] + 1, &r, NULL, NULL, NULL)); printf(" isset=%d", FD_ISSET(p[0], &r)); END();
    joined();
    FD_ZERO(&r); FD_SET(p[0], &r);
    FD_ZERO(&w); FD_SET(p[1], &w);
    tv.tv_sec = 5; tv.tv_usec = 0;
    CALL("select", "ready", select(p[1] + 1, &r, &w, NULL, &tv));
    printf(" r=%d w=%d w_r=%d", FD_ISSET(p[0], &r), FD_ISSET(p[1], &w), FD_ISSET(p[0], &w)); END();
    read(p[0], buf, sizeof buf);
    FD_ZERO(&r); FD_SET(p[0], &r);
    tv.tv_sec = 0; tv.tv_usec = 0;
    CALL("select", "zero", select(p[0] + 1, &r, NULL, NULL, &tv)); printf(" isset=%d tv=%ld.%ld", FD_ISSET(p[0], &r), tv.tv_sec, tv.tv_usec); END();
    FD_ZERO(&r); FD_SET(p[0], &r);
    tv.tv_sec = 0; tv.tv_usec = 20000;
    CALL("select", "timeout", select(p[0] + 1, &r, NULL, NULL, &tv)); printf(" isset=%d tv=%ld.%ld", FD_ISSET(p[0], &r), tv.tv_sec, tv.tv_usec); END();
    CALL("select", "einval", select(-1, NULL, NULL, NULL, NULL)); END();
    FD_ZERO(&r); FD_SET(60, &r);
    CALL("select", "ebadf", select(61, &r, NULL, NULL, NULL)); END();
    tv.tv_sec = -1; tv.tv_usec = 0;
    FD_ZERO(&r); FD_SET(p[0], &r);
    CALL("select", "einval_tv", select(p[0] + 1, &r, NULL, NULL, &tv)); END();
    CALL("select", "efault", select(p[0] + 1, (fd_set *)8, NULL, NULL, NULL)); END();
    FD_ZERO(&r); FD_SET(p[0], &r);
    later(SIGNAL);
    CALL("select", "eintr", select(p[0] + 1, &r, NULL, NULL, NULL)); END();
    joined();

    FD_ZERO(&r); FD_SET(p[0], &r);
    later(WRITE_PIPE);
    CALL("pselect", "waits", pselect(p[0] + 1, &r, NULL, NULL, NULL, NULL)); printf(" isset=%d", FD_ISSET(p[0], &r)); END();
    joined();
    read(p[0], buf, sizeof buf);
    FD_ZERO(&r); FD_SET(p[0], &r);
    CALL("pselect", "zero", pselect(p[0] + 1, &r, NULL, NULL, &zero, NULL)); printf(" isset=%d", FD_ISSET(p[0], &r)); END();
    CALL("pselect", "einval", pselect(p[0] + 1, &r, NULL, NULL, &bad_ts, NULL)); END();

    /* epoll_wait, epoll_pwait, epoll_pwait2 (edge-triggered too: a look
     * that consumed the edge would make the program's call miss it) */
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u32 = 42}, got[4];
    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);
    later(WRITE_PIPE);
    memset(got, 0, sizeof got);
    CALL("epoll_wait", "waits", epoll_wait(ep, got, 4, -1)); printf(" events=%x data=%u", got[0].events, got[0].data.u32); END();
    joined();
    CALL("epoll_wait", "edge_gone", epoll_wait(ep, got, 4, 0)); END();
    write(p[1], "x", 1);
    memset(got, 0, sizeof got);
    CALL("epoll_wait", "ready", epoll_wait(ep, got, 4, -1)); printf(" data=%u", got[0].data.u32); END();
    read(p[0], buf, sizeof buf);
    CALL("epoll_wait", "zero", epoll_wait(ep, got, 4, 0)); END();
    CALL("epoll_wait", "timeout", epoll_wait(ep, got, 4, 20)); END();
    CALL("epoll_wait", "ebadf", epoll_wait(-1, got, 4, -1)); END();
    CALL("epoll_wait", "einval", epoll_wait(ep, got, 0, -1)); END();
    CALL("epoll_wait", "einval_fd", epoll_wait(p[0], got, 4, -1)); END();
    later(SIGNAL);
    CALL("epoll_wait", "eintr", epoll_wait(ep, got, 4, -1)); END();
    joined();
    later(WRITE_PIPE);
    memset(got, 0, sizeof got);
    CALL("epoll_pwait", "waits", epoll_pwait(ep, got, 4, -1, NULL)); printf(" data=%u", got[0].data.u32); END();
    joined();
    write(p[1], "x", 1);
    CALL("epoll_pwait", "ready", epoll_pwait(ep, got, 4, 0, NULL)); END();
    read(p[0], buf, sizeof buf);
    CALL("epoll_pwait", "zero", epoll_pwait(ep, got, 4, 0, NULL)); END();
    CALL("epoll_pwait", "ebadf", epoll_pwait(-1, got, 4, 0, NULL)); END();
    later(WRITE_PIPE);
    memset(got, 0, sizeof got);
    CALL("epoll_pwait2", "waits", epoll_pwait2(ep, got, 4, NULL, NULL)); printf(" data=%u", got[0].data.u32); END();
    joined();
    read(p[0], buf, sizeof buf);
    CALL("epoll_pwait2", "zero", epoll_pwait2(ep, got, 4, &zero, NULL)); END();
    CALL("epoll_pwait2", "einval", epoll_pwait2(ep, got, 4, &bad_ts, NULL)); END();
    CALL("epoll_pwait2", "ebadf", epoll_pwait2(-1, got, 4, &zero, NULL)); END();
    close(ep);
    close2(p);
}

static void sleeping(void) {
    struct timespec t = {0, 20 * 1000 * 1000}, rem = {9, 9}, zero = {0, 0}, bad = {0, -1};
    CALL("nanosleep", "waits", nanosleep(&t, &rem)); printf(" rem=%ld.%ld", rem.tv_sec, rem.tv_nsec); END();
    CALL("nanosleep", "zero", nanosleep(&zero, NULL)); END();
    CALL("nanosleep", "einval", nanosleep(&bad, NULL)); END();
    CALL("nanosleep", "efault", nanosleep((struct timespec *)8, NULL)); END();
    struct timespec five = {5, 0};
    later(SIGNAL);
    CALL("nanosleep", "eintr", nanosleep(&five, &rem));
    printf(" rem_left=%d", rem.tv_sec < 5 && (rem.tv_sec > 0 || rem.tv_nsec > 0)); END();
    joined();

    CALL("clock_nanosleep", "waits", clock_nanosleep(CLOCK_MONOTONIC, 0, &t, NULL)); END();
    CALL("clock_nanosleep", "zero", clock_nanosleep(CLOCK_MONOTONIC, 0, &zero, NULL)); END();
    struct timespec until = in_ms(CLOCK_REALTIME, 20);
    CALL("clock_nanosleep", "abs_waits", clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &until, NULL)); END();
    CALL("clock_nanosleep", "abs_past", clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &until, NULL)); END();
    CALL("clock_nanosleep", "einval_clock", clock_nanosleep(12345, 0, &t, NULL)); END();
    CALL("clock_nanosleep", "einval_thread_clock", clock_nanosleep(CLOCK_THREAD_CPUTIME_ID, 0, &t, NULL)); END();
    CALL("clock_nanosleep", "einval_ts", clock_nanosleep(CLOCK_MONOTONIC, 0, &bad, NULL)); END();
    later(SIGNAL);
    CALL("clock_nanosleep", "eintr", clock_nanosleep(CLOCK_MONOTONIC, 0, &five, &rem));
    printf(" rem_left=%d", rem.tv_sec < 5 && (rem.tv_sec > 0 || rem.tv_nsec > 0)); END();
    joined();

    CALL("sleep", "zero", sleep(0)); END();
    later(SIGNAL);
    CALL("sleep", "eintr", sleep(5)); END();
    joined();
    CALL("usleep", "waits", usleep(20000)); END();
    CALL("usleep", "zero", usleep(0)); END();
    later(SIGNAL);
    CALL("usleep", "eintr", usleep(5000000)); END();
    joined();
}

static void on_usr2(int s) { (void)s; }

static void signals(void) {
    later(SIGNAL);
    CALL("pause", "eintr", pause()); END();
    joined();

    sigset_t usr1, none, usr2, old;
    sigemptyset(&usr1); sigaddset(&usr1, SIGUSR1);
    sigemptyset(&none);
    sigemptyset(&usr2); sigaddset(&usr2, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &usr1, &old);
    later(SIGNAL);
    CALL("sigsuspend", "eintr", sigsuspend(&none)); END();
    joined();
    CALL("sigsuspend", "efault", sigsuspend((sigset_t *)8)); END();
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    /* sigwait* on SIGUSR2, blocked */
    signal(SIGUSR2, on_usr2);
    pthread_sigmask(SIG_BLOCK, &usr2, &old);
    int sig = 0;
    later(SIGNAL_USR2);
    CALL("sigwait", "waits", sigwait(&usr2, &sig)); printf(" sig=%d", sig); END();
    joined();
    raise(SIGUSR2);
    sig = 0;
    CALL("sigwait", "pending", sigwait(&usr2, &sig)); printf(" sig=%d", sig); END();
    siginfo_t si;
    later(SIGNAL_USR2);
    memset(&si, 0, sizeof si);
    CALL("sigwaitinfo", "waits", sigwaitinfo(&usr2, &si)); printf(" signo=%d code=%d", si.si_signo, si.si_code); END();
    joined();
    raise(SIGUSR2);
    CALL("sigwaitinfo", "pending", sigwaitinfo(&usr2, NULL)); END();
    CALL("sigwaitinfo", "efault", sigwaitinfo((sigset_t *)8, NULL)); END();
    struct timespec zero = {0, 0}, second = {1, 0}, ms20 = {0, 20000000}, bad = {0, -1};
    later(SIGNAL_USR2);
    CALL("sigtimedwait", "waits", sigtimedwait(&usr2, &si, &second)); printf(" signo=%d", si.si_signo); END();
    joined();
    CALL("sigtimedwait", "zero", sigtimedwait(&usr2, &si, &zero)); END();
    CALL("sigtimedwait", "timeout", sigtimedwait(&usr2, &si, &ms20)); END();
    raise(SIGUSR2);
    CALL("sigtimedwait", "pending", sigtimedwait(&usr2, NULL, &zero)); END();
    CALL("sigtimedwait", "einval", sigtimedwait(&usr2, NULL, &bad)); END();
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    /* sigwait* with no handler for a signal of the set: EINTR from USR1's */
    later(SIGNAL);
    CALL("sigtimedwait", "eintr", sigtimedwait(&usr2, NULL, &second)); END();
    joined();
}

static void children(void) {
    int status;
    siginfo_t si;
    struct rusage ru;
    pid_t c;

    c = child_exiting(3, 30);
    status = 0;
    CALL("wait", "waits", wait(&status) == c); printf(" status=%x", status); END();
    c = child_exiting(4, 0);
    until_gone(c);
    CALL("wait", "ready", wait(&status) == c); printf(" status=%x", status); END();
    CALL("wait", "echild", wait(&status)); END();

    c = child_exiting(5, 30);
    CALL("waitpid", "waits", waitpid(c, &status, 0) == c); printf(" status=%x", status); END();
    c = child_exiting(6, 30);
    CALL("waitpid", "nohang", waitpid(c, &status, WNOHANG)); END();
    CALL("waitpid", "any_waits", waitpid(-1, &status, 0) == c); printf(" status=%x", status); END();
    c = child_exiting(7, 0);
    until_gone(c);
    CALL("waitpid", "group_ready", waitpid(0, &status, 0) == c); printf(" status=%x", status); END();
    c = child_exiting(8, 0);
    until_gone(c);
    CALL("waitpid", "pgid_ready", waitpid(-getpgrp(), &status, 0) == c); printf(" status=%x", status); END();
    CALL("waitpid", "echild", waitpid(-1, &status, 0)); END();
    CALL("waitpid", "echild_pid", waitpid(1, &status, 0)); END();
    CALL("waitpid", "einval", waitpid(-1, &status, 0x40000000)); END();
    c = child_exiting(9, 5000);
    later(SIGNAL);
    CALL("waitpid", "eintr", waitpid(c, &status, 0)); END();
    joined();
    kill(c, SIGKILL);
    CALL("waitpid", "killed", waitpid(c, &status, 0) == c); printf(" status=%x", status); END();

    c = child_exiting(10, 30);
    memset(&si, 0, sizeof si);
    CALL("waitid", "waits", waitid(P_PID, c, &si, WEXITED));
    printf(" pid_ok=%d code=%d status=%d", si.si_pid == c, si.si_code, si.si_status); END();
    c = child_exiting(11, 30);
    memset(&si, 0, sizeof si);
    CALL("waitid", "nohang", waitid(P_ALL, 0, &si, WEXITED | WNOHANG)); printf(" pid=%d", si.si_pid); END();
    CALL("waitid", "nowait_waits", waitid(P_ALL, 0, &si, WEXITED | WNOWAIT)); printf(" status=%d", si.si_status); END();
    CALL("waitid", "ready", waitid(P_PID, c, &si, WEXITED)); printf(" status=%d", si.si_status); END();
    CALL("waitid", "einval", waitid(P_ALL, 0, &si, 0)); END();
    CALL("waitid", "echild", waitid(P_ALL, 0, &si, WEXITED)); END();

    c = child_exiting(12, 30);
    CALL("wait3", "waits", wait3(&status, 0, &ru) == c); printf(" status=%x", status); END();
    CALL("wait3", "echild", wait3(&status, 0, NULL)); END();
    c = child_exiting(13, 30);
    CALL("wait3", "nohang", wait3(&status, WNOHANG, NULL)); END();
    CALL("wait4", "waits", wait4(c, &status, 0, &ru) == c); printf(" status=%x", status); END();
    c = child_exiting(14, 0);
    until_gone(c);
    CALL("wait4", "ready", wait4(-1, &status, 0, NULL) == c); printf(" status=%x", status); END();
    CALL("wait4", "echild", wait4(-1, &status, 0, NULL)); END();
    CALL("wait4", "einval", wait4(-1, &status, 0x40000000, NULL)); END();
}

static void *returns_seven(void *arg) {
    struct timespec t = {0, 30 * 1000 * 1000};
    if (arg)
        nanosleep(&t, NULL);
    return (void *)7;
}
static void *barrier_party(void *b) {
    struct timespec t = {0, 30 * 1000 * 1000};
    nanosleep(&t, NULL);
    return (void *)(long)pthread_barrier_wait(b);
}

static void threads(void) {
    /* pthread_cond_* */
    cond_flag = 0;
    pthread_mutex_lock(&mutex);
    later(COND);
    int rc = 0;
    poke();
    errno = 777;
    while (!cond_flag && rc == 0)
        rc = pthread_cond_wait(&cond, &mutex);
    printf("pthread_cond_wait waits rc=%d errno=%d flag=%d\n", rc, errno, cond_flag);
    pthread_mutex_unlock(&mutex);
    joined();
    pthread_mutex_t check;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(&check, &attr);
    CALL("pthread_cond_wait", "eperm", pthread_cond_wait(&cond, &check)); END();

    struct timespec until, bad = {0, -1};
    cond_flag = 0;
    pthread_mutex_lock(&mutex);
    later(COND);
    until = in_ms(CLOCK_REALTIME, 5000);
    rc = 0;
    poke();
    errno = 777;
    while (!cond_flag && rc == 0)
        rc = pthread_cond_timedwait(&cond, &mutex, &until);
    printf("pthread_cond_timedwait waits rc=%d errno=%d flag=%d\n", rc, errno, cond_flag);
    until = in_ms(CLOCK_REALTIME, 20);
    CALL("pthread_cond_timedwait", "timeout", pthread_cond_timedwait(&cond, &mutex, &until)); END();
    CALL("pthread_cond_timedwait", "past", pthread_cond_timedwait(&cond, &mutex, &until)); END();
    CALL("pthread_cond_timedwait", "einval", pthread_cond_timedwait(&cond, &mutex, &bad)); END();
    pthread_mutex_unlock(&mutex);
    joined();

    cond_flag = 0;
    pthread_mutex_lock(&mutex);
    later(COND);
    until = in_ms(CLOCK_MONOTONIC, 5000);
    rc = 0;
    poke();
    errno = 777;
    while (!cond_flag && rc == 0)
        rc = pthread_cond_clockwait(&cond, &mutex, CLOCK_MONOTONIC, &until);
    printf("pthread_cond_clockwait waits rc=%d errno=%d flag=%d\n", rc, errno, cond_flag);
    until = in_ms(CLOCK_MONOTONIC, 20);
    CALL("pthread_cond_clockwait", "timeout", pthread_cond_clockwait(&cond, &mutex, CLOCK_MONOTONIC, &until)); END();
    CALL("pthread_cond_clockwait", "einval_clock", pthread_cond_clockwait(&cond, &mutex, CLOCK_PROCESS_CPUTIME_ID, &until)); END();
    pthread_mutex_unlock(&mutex);
    joined();

    /* pthread_barrier_wait: exactly one party is told it is the serial one */
    pthread_barrier_t b;
    pthread_barrier_init(&b, NULL, 2);
    pthread_t t;
    pthread_create(&t, NULL, barrier_party, &b);
    poke();
    errno = 777;
    int mine = pthread_barrier_wait(&b);
    void *theirs;
    pthread_join(t, &theirs);
    printf("pthread_barrier_wait waits serial=%d zero=%d errno=%d\n",
           (mine == PTHREAD_BARRIER_SERIAL_THREAD) + ((long)theirs == PTHREAD_BARRIER_SERIAL_THREAD),
           (mine == 0) + ((long)theirs == 0), errno);
    pthread_barrier_destroy(&b);
    pthread_barrier_init(&b, NULL, 1);
    CALL("pthread_barrier_wait", "alone", pthread_barrier_wait(&b)); END();

    /* pthread_join */
    void *result = NULL;
    pthread_create(&t, NULL, returns_seven, (void *)1);
    CALL("pthread_join", "waits", pthread_join(t, &result)); printf(" result=%ld", (long)result); END();
    pthread_create(&t, NULL, returns_seven, NULL);
    struct timespec ms50 = {0, 50000000};
    nanosleep(&ms50, NULL);
    CALL("pthread_join", "finished", pthread_join(t, &result)); printf(" result=%ld", (long)result); END();
    CALL("pthread_join", "edeadlk", pthread_join(pthread_self(), NULL)); END();

    /* sem_* */
    sem_t s;
    sem_init(&s, 0, 0);
    act_sem = &s;
    int value;
    later(POST);
    CALL("sem_wait", "waits", sem_wait(&s)); sem_getvalue(&s, &value); printf(" value=%d", value); END();
    joined();
    sem_post(&s);
    sem_post(&s);
    CALL("sem_wait", "ready", sem_wait(&s)); sem_getvalue(&s, &value); printf(" value=%d", value); END();
    CALL("sem_wait", "ready2", sem_wait(&s)); END();
    later(SIGNAL);
    CALL("sem_wait", "eintr", sem_wait(&s)); END();
    joined();
    later(POST);
    until = in_ms(CLOCK_REALTIME, 5000);
    CALL("sem_timedwait", "waits", sem_timedwait(&s, &until)); END();
    joined();
    until = in_ms(CLOCK_REALTIME, 20);
    CALL("sem_timedwait", "timeout", sem_timedwait(&s, &until)); END();
    CALL("sem_timedwait", "einval", sem_timedwait(&s, &bad)); END();
    sem_post(&s);
    CALL("sem_timedwait", "ready_bad_time", sem_timedwait(&s, &bad)); END();
    while (sem_trywait(&s) == 0)
        ;
    later(POST);
    until = in_ms(CLOCK_MONOTONIC, 5000);
    CALL("sem_clockwait", "waits", sem_clockwait(&s, CLOCK_MONOTONIC, &until)); END();
    joined();
    until = in_ms(CLOCK_MONOTONIC, 20);
    CALL("sem_clockwait", "timeout", sem_clockwait(&s, CLOCK_MONOTONIC, &until)); END();
    CALL("sem_clockwait", "einval_clock", sem_clockwait(&s, CLOCK_PROCESS_CPUTIME_ID, &until)); END();
    sem_destroy(&s);
}

static _Atomic int futex_word;
static void *futex_waker(void *arg) {
    struct timespec t = {0, 30 * 1000 * 1000};
    (void)arg;
    nanosleep(&t, NULL);
    atomic_store(&futex_word, 1);
    syscall(SYS_futex, &futex_word, FUTEX_WAKE_PRIVATE, 1, NULL);
    return NULL;
}

static void through_syscall(void) {
    pthread_t t;
    pthread_create(&t, NULL, futex_waker, NULL);
    long rc;
    poke();
    errno = 777;
    do
        rc = syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, NULL);
    while (atomic_load(&futex_word) == 0);
    printf("futex waits word=%d errno_if_failed=%d\n", atomic_load(&futex_word), rc ? errno : 0);
    pthread_join(t, NULL);
    CALL("futex", "eagain", syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, NULL)); END();
    CALL("futex", "enosys", syscall(SYS_futex, &futex_word, 99, 0, NULL)); END();
    CALL("futex", "efault", syscall(SYS_futex, (int *)8, FUTEX_WAIT_PRIVATE, 0, NULL)); END();
    errno = 777;
    void *m = (void *)syscall(SYS_mmap, NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("syscall_mmap ok=%d errno=%d\n", m != MAP_FAILED, errno);
    CALL("syscall_mmap", "einval", syscall(SYS_mmap, NULL, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)); END();
    CALL("syscall_munmap", "ok", syscall(SYS_munmap, m, 4096)); END();
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1; /* no SA_RESTART */
    sigaction(SIGUSR1, &sa, NULL);
    main_thread = pthread_self();
    setvbuf(stdout, NULL, _IOLBF, 0);
    descriptors();
    multiplexing();
    sleeping();
    signals();
    children();
    threads();
    through_syscall();
    printf("handled_signals_positive=%d\n", handled > 0);
    return 0;
}
