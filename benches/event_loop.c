/*
 * The workload of scripts/bench-latency (issue 19, "nothing delayed"): an
 * event loop in epoll_wait(1 ms) woken every 0.5-2 ms through a pipe, in a
 * process with VMAS VMAs whose memory keeps changing, timing every wake-up;
 * and a page-fault probe: a thread that maps fresh regions and times each
 * first touch of a page (a fault waits while an madvise holds the region).
 *
 *   cc -O2 -pthread -o event_loop benches/event_loop.c
 *   event_loop VMAS SECONDS
 *
 * - VMAS VMAs no hook saw: one raw mmap split by mprotect into pages of
 *   alternating protection (as benches/many_vmas.c).
 * - The writer: a child process (forked before anything else, so its own
 *   waits are not the loop's) that, once the loop starts, writes its
 *   CLOCK_MONOTONIC time into the pipe every 0.5-2 ms (uniform, fixed
 *   seed).
 * - The loop (main thread): epoll_wait(1 ms) on the pipe; each wake-up
 *   with data reads the stamps and records now - stamp.
 * - The churn (a thread): every 1 ms, four 256 KiB malloc blocks (glibc
 *   maps each: news for the catch-up) replace four of 64 live ones, and 16
 *   small objects join a heap that grows to 32 MiB and then is freed and
 *   grown again.
 * - The fault probe (a thread): maps 16 MiB with the raw system call every
 *   100 ms and touches one page of it every 50 us, timing each touch, then
 *   unmaps it.
 *
 * Prints "wakeups N", "wake_p50_us X", "wake_p99_us X", "wake_max_us X",
 * "touches N", "fault_p50_us X", "fault_p99_us X", "fault_max_us X".
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns) {
    struct timespec ts = { (time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull) };
    nanosleep(&ts, NULL);
}

static volatile int stop;

/* ---- samples ------------------------------------------------------------- */

struct samples {
    uint64_t *v;
    size_t n, cap;
};

static void add(struct samples *s, uint64_t x) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 65536;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v) abort();
    }
    s->v[s->n++] = x;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *name, struct samples *s) {
    qsort(s->v, s->n, sizeof *s->v, cmp_u64);
    double p50 = s->n ? s->v[s->n / 2] / 1e3 : 0, p99 = s->n ? s->v[s->n * 99 / 100] / 1e3 : 0;
    double max = s->n ? s->v[s->n - 1] / 1e3 : 0;
    printf("%s_p50_us %.1f\n%s_p99_us %.1f\n%s_max_us %.1f\n", name, p50, name, p99, name, max);
}

/* ---- the writer ---------------------------------------------------------- */

static void writer(int fd, int go, double seconds) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    char c;
    if (read(go, &c, 1) != 1) _exit(1);
    uint64_t end = now_ns() + (uint64_t)(seconds * 1e9);
    unsigned seed = 1;
    while (now_ns() < end) {
        sleep_ns(500000 + (uint64_t)(rand_r(&seed) % 1500001));
        uint64_t t = now_ns();
        if (write(fd, &t, sizeof t) != sizeof t) _exit(1);
    }
    _exit(0);
}

/* ---- the churn and the fault probe ------------------------------------- */

static void *churn(void *arg) {
    (void)arg;
    enum { LIVE = 64, SMALL_MAX = (32 << 20) / 512 };
    void *live[LIVE] = { 0 };
    static void *small[SMALL_MAX];
    size_t next = 0, smalls = 0;
    while (!stop) {
        for (int i = 0; i < 4; i++, next = (next + 1) % LIVE) {
            free(live[next]);
            live[next] = malloc(256 << 10);
            if (live[next]) memset(live[next], (int)next, 256 << 10);
        }
        for (int i = 0; i < 16; i++) {
            if (smalls == SMALL_MAX) {
                while (smalls) free(small[--smalls]);
            }
            small[smalls] = malloc(500);
            if (small[smalls]) memset(small[smalls], 7, 500);
            smalls++;
        }
        sleep_ns(1000000);
    }
    return NULL;
}

static struct samples faults;

static void *fault_probe(void *arg) {
    (void)arg;
    const size_t len = 16 << 20, page = (size_t)sysconf(_SC_PAGESIZE);
    while (!stop) {
        char *p = (char *)syscall(SYS_mmap, NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) abort();
        uint64_t until = now_ns() + 100000000ull;
        for (size_t off = 0; off < len && now_ns() < until && !stop; off += page) {
            uint64_t t0 = now_ns();
            p[off] = 1;
            add(&faults, now_ns() - t0);
            sleep_ns(50000);
        }
        munmap(p, len);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: event_loop VMAS SECONDS\n"); return 2; }
    long vmas = atol(argv[1]);
    double seconds = atof(argv[2]);
    int fds[2], go[2];
    if (pipe(fds) != 0 || pipe(go) != 0) return 3;
    pid_t child = fork();
    if (child == 0) {
        close(fds[0]);
        close(go[1]);
        writer(fds[1], go[0], seconds + 0.5);
    }
    close(fds[1]);
    close(go[0]);

    size_t page = (size_t)sysconf(_SC_PAGESIZE), len = (size_t)vmas * page;
    char *region = (char *)syscall(SYS_mmap, NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) return 4;
    for (long i = 0; i < vmas; i++) {
        region[i * page] = 1;
        if (i % 2) syscall(SYS_mprotect, region + i * page, page, PROT_READ);
    }

    pthread_t churner, prober;
    pthread_create(&churner, NULL, churn, NULL);
    pthread_create(&prober, NULL, fault_probe, NULL);

    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = fds[0] };
    epoll_ctl(ep, EPOLL_CTL_ADD, fds[0], &ev);
    struct samples wakes = { 0 };
    if (write(go[1], "g", 1) != 1) return 5; /* the writer starts now */
    uint64_t end = now_ns() + (uint64_t)(seconds * 1e9);
    while (now_ns() < end) {
        struct epoll_event got;
        int n = epoll_wait(ep, &got, 1, 1);
        if (n <= 0) continue;
        uint64_t stamps[64];
        ssize_t r = read(fds[0], stamps, sizeof stamps);
        uint64_t t = now_ns();
        for (ssize_t i = 0; i < r / (ssize_t)sizeof(uint64_t); i++) add(&wakes, t - stamps[i]);
    }
    stop = 1;
    pthread_join(churner, NULL);
    pthread_join(prober, NULL);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    printf("wakeups %zu\n", wakes.n);
    report("wake", &wakes);
    printf("touches %zu\n", faults.n);
    report("fault", &faults);
    return 0;
}
