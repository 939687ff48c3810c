/*
 * The C side of tests/edge_safety.rs: programs that meet the library's
 * catch-up (news, waits, a thread of the library's own) in ways a
 * stranger's program would.
 *
 *   edge_programs waits      builds data (large blocks), then waits in
 *                            nanosleep, poll, ppoll, select, pselect and
 *                            sigtimedwait with short timeouts; prints
 *                            "waited 6". Run inside seccomp_kill_wrap.
 *   edge_programs longjmp    20,000 times: news (a large block), then a poll
 *                            that a 300 us timer interrupts, whose handler
 *                            leaves it with siglongjmp (legal: poll is
 *                            async-signal-safe); then builds 50 MiB and waits
 *                            1.5 s in poll. Prints "maps_fds N" (descriptors
 *                            left open on /proc/self/maps) and "mergeable
 *                            0|1" (the 50 MiB after the wait).
 *   edge_programs busygrow G grows the brk heap for G seconds without ever
 *                            blocking, then computes until 3 s have passed;
 *                            prints "heap_kb N" and "mergeable_kb N" (its
 *                            [heap] VMAs with `mg`), read with stdio (whose
 *                            reads no hook sees).
 *   edge_programs liveblocks N  a server-like loop: N times, a 200 KiB block
 *                            that stays alive, then a 2 ms poll; prints
 *                            "vmas N" (lines of /proc/self/maps).
 *   edge_programs vfork      news, then a vfork child reads a pipe that has
 *                            data (a call that does not wait) and exits;
 *                            prints
 *                            "child_pid N".
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void *volatile sink;

static void news(size_t bytes) {
    char *p = malloc(bytes);
    memset(p, 7, bytes);
    sink = p;
}

static int waits(void) {
    for (int i = 0; i < 20; i++) news(256 << 10);
    int fd[2];
    if (pipe(fd)) return 1;
    int n = 0;
    struct timespec t = {0, 20 * 1000 * 1000};
    n += nanosleep(&t, NULL) == 0;
    news(256 << 10);
    struct pollfd f = {fd[0], POLLIN, 0};
    n += poll(&f, 1, 20) == 0;
    news(256 << 10);
    n += ppoll(&f, 1, &t, NULL) == 0;
    news(256 << 10);
    fd_set r;
    FD_ZERO(&r);
    FD_SET(fd[0], &r);
    struct timeval tv = {0, 20000};
    n += select(fd[0] + 1, &r, NULL, NULL, &tv) == 0;
    news(256 << 10);
    FD_ZERO(&r);
    FD_SET(fd[0], &r);
    n += pselect(fd[0] + 1, &r, NULL, NULL, &t, NULL) == 0;
    news(256 << 10);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    sigprocmask(SIG_BLOCK, &set, NULL);
    n += sigtimedwait(&set, NULL, &t) == -1;
    printf("waited %d\n", n);
    return 0;
}

static sigjmp_buf env;
static volatile sig_atomic_t in_poll;

static void on_alarm(int s) {
    (void)s;
    if (in_poll) {
        in_poll = 0;
        siglongjmp(env, 1);
    }
}

static int maps_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;
    char path[300], to[256];
    while ((e = readdir(d))) {
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t k = readlink(path, to, sizeof to - 1);
        if (k > 0) {
            to[k] = 0;
            n += strstr(to, "/maps") != NULL;
        }
    }
    closedir(d);
    return n;
}

static int mergeable(void *addr) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    unsigned long a = (unsigned long)addr, s, e;
    int in = 0, mg = 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = a >= s && a < e;
            continue;
        }
        if (in && !strncmp(line, "VmFlags:", 8)) {
            mg = strstr(line, " mg") != NULL;
            break;
        }
    }
    fclose(f);
    return mg;
}

static int longjmps(void) {
    int p[2];
    if (pipe(p)) return 1;
    signal(SIGALRM, on_alarm);
    struct itimerval it = {{0, 300}, {0, 300}};
    setitimer(ITIMER_REAL, &it, 0);
    for (int i = 0; i < 20000; i++) {
        char *b = malloc(200 << 10);
        memset(b, 1, 4096);
        sink = b;
        struct pollfd f = {p[0], POLLIN, 0};
        if (sigsetjmp(env, 1) == 0) {
            in_poll = 1;
            poll(&f, 1, 5);
            in_poll = 0;
        }
        free(b);
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, 0);
    printf("maps_fds %d\n", maps_fds());
    char *late[50];
    for (int i = 0; i < 50; i++) {
        late[i] = malloc(1 << 20);
        memset(late[i], 9, 1 << 20);
    }
    for (int i = 0; i < 5; i++) {
        struct pollfd f = {p[0], POLLIN, 0};
        poll(&f, 1, 300);
    }
    printf("mergeable %d\n", mergeable(late[10]));
    return 0;
}

static int vforks(void) {
    int p[2];
    if (pipe(p) || write(p[1], "abc", 3) != 3) return 1;
    for (int i = 0; i < 10; i++) news(300 << 10);
    usleep(200000);
    for (int i = 0; i < 10; i++) news(300 << 10);
    pid_t c = vfork();
    if (c == 0) {
        char b;
        ssize_t r = read(p[0], &b, 1);
        _exit(r == 1 && b == 'a' ? 0 : 1);
    }
    int st;
    waitpid(c, &st, 0);
    printf("child_pid %d\nchild_status %d\n", (int)c, WEXITSTATUS(st));
    return 0;
}

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int busygrow(double growing) {
    double t0 = seconds_now();
    while (seconds_now() - t0 < 3.0) {
        volatile double x = 0;
        if (seconds_now() - t0 > growing) {
            for (int k = 0; k < 100000; k++) x += k;
            continue;
        }
        for (int i = 0; i < 20; i++) {
            char *p = malloc(1000);
            memset(p, 'x', 1000);
            sink = p;
        }
        for (int k = 0; k < 20000; k++) x += k;
    }
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int heap = 0;
    unsigned long s = 0, e = 0, total = 0, mg = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx ", &a, &b) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            s = a;
            e = b;
            heap = strstr(line, "[heap]") != NULL;
            if (heap) total += e - s;
            continue;
        }
        if (heap && !strncmp(line, "VmFlags:", 8) && strstr(line, " mg")) mg += e - s;
    }
    fclose(f);
    printf("heap_kb %lu\nmergeable_kb %lu\n", total >> 10, mg >> 10);
    return 0;
}

static int liveblocks(int n) {
    int fd[2];
    if (pipe(fd)) return 1;
    for (int i = 0; i < n; i++) {
        char *p = malloc(200 << 10);
        memset(p, i & 0xff, 200 << 10);
        sink = p;
        struct pollfd f = {fd[0], POLLIN, 0};
        poll(&f, 1, 2);
    }
    FILE *f = fopen("/proc/self/maps", "r");
    int lines = 0, c;
    while ((c = fgetc(f)) != EOF) lines += c == '\n';
    fclose(f);
    printf("vmas %d\n", lines);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 2 && !strcmp(argv[1], "busygrow")) return busygrow(atof(argv[2]));
    if (argc > 2 && !strcmp(argv[1], "liveblocks")) return liveblocks(atoi(argv[2]));
    if (argc > 1 && !strcmp(argv[1], "waits")) return waits();
    if (argc > 1 && !strcmp(argv[1], "longjmp")) return longjmps();
    if (argc > 1 && !strcmp(argv[1], "vfork")) return vforks();
    fprintf(stderr, "usage: edge_programs waits|longjmp|vfork\n");
    return 2;
}
