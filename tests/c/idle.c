/*
 * Idle program: builds memory with duplicate content in one of several ways,
 * says so on stdout, then blocks and never calls into libc again. The test
 * (tests/idle.rs) measures it from outside while it is blocked (ksm_stat,
 * maps, smaps, status) and kills it.
 *
 *   idle PATTERN [BLOCKER] [ARGS...]
 *
 * PATTERN (the memory built before going idle):
 *   small           many small objects (56..2040 bytes) on the brk heap, 16 MiB
 *   arenas [N]      N threads (default 4) each build 4 MiB of small objects in
 *                   their own glibc arena, then wait on a condition variable;
 *                   main blocks in pthread_join (no BLOCKER)
 *   syscall [PAGES] a region mapped with syscall(SYS_mmap) (default 4096 pages)
 *   cov-mmap | cov-reserve | cov-malloc_large | cov-brk | cov-arena
 *   | cov-syscall | cov-fork | cov-exec
 *                   the allocation paths of coverage.c, 1024 pages each, idle
 *                   right after allocating (cov-fork: the forked child goes
 *                   idle, the parent waits for it; cov-exec: the program execs
 *                   itself and the new image builds and goes idle)
 *   grow STEPS STEP_KIB SLEEP_US
 *                   the brk heap grows by STEP_KIB 1 KiB objects per step,
 *                   usleep(SLEEP_US) between steps (none if 0); prints
 *                   "growing pid=N" when it starts
 *   blocks N BATCH SLEEP_US
 *                   N live 200 KiB malloc blocks (each its own glibc mapping),
 *                   one page of each written with the same content;
 *                   usleep(SLEEP_US) after every BATCH blocks (none if 0)
 *
 * BLOCKER (default read): read fgets recv accept poll ppoll select pselect
 *   epoll_wait epoll_pwait nanosleep clock_nanosleep sleep usleep pause
 *   sigsuspend sigwait sigwaitinfo sigtimedwait waitpid wait waitid
 *   pthread_cond_wait pthread_cond_timedwait pthread_barrier_wait
 *   pthread_join sem_wait futex
 * Anything a blocker needs (sockets, a helper thread, a child process) is set
 * up BEFORE the memory is built, and helper threads are already blocked by
 * then, so only the main thread's blocking call can see the new memory.
 *
 * Output, "key value" lines, written with write(2) (no stdio buffer, so no
 * malloc after the memory is built): "pages N" (duplicate pages built),
 * "threads N" (threads of the idle process), "region 0x..." (start of the
 * region, where there is one), "failures N" (blocks pattern: malloc NULLs),
 * and last "idle pid=N": from then on the process is blocked.
 * If stdin reaches end of file the program exits 0 (the test is gone).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static size_t page;
static long dup_pages;
static int own_threads = 1;
static void *region;

static void say(const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0 && write(1, buf, (size_t)n) < 0) _exit(5);
}

static void die(const char *what) {
    say("error %s errno=%d\n", what, errno);
    _exit(1);
}

/* The byte at address a: depends only on a's offset in its page, never 0, so
   pages with the same layout are identical and not KSM's zero page. */
static inline unsigned char pattern_at(uintptr_t a) {
    return (unsigned char)((a & (page - 1)) * 7 + 1);
}

static void fill_pattern(unsigned char *p, size_t len) {
    for (size_t i = 0; i < len; i++) p[i] = pattern_at((uintptr_t)(p + i));
}

/* Pages fully inside [start, start+len) get the pattern; counted. */
static void dup_pages_in(unsigned char *start, size_t len) {
    uintptr_t a = ((uintptr_t)start + page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t end = ((uintptr_t)start + len) & ~(uintptr_t)(page - 1);
    for (; a < end; a += page) {
        fill_pattern((unsigned char *)a, page);
        dup_pages++;
    }
}

/* Small objects with a layout that repeats every page: glibc chunk sizes
   (request + 8, rounded to 16) of one cycle add up to exactly one page, and
   objects are never freed, so chunks are carved from the top one after the
   other and every page holds the same chunks at the same offsets, with the
   same size fields. Each object is written whole with the address pattern,
   so those pages are identical without touching malloc's own headers. */
static const size_t mixed_cycle[] = { 56, 56, 120, 248, 504, 1016, 2040 }; /* chunks 64..2048, sum 4096 */
static const size_t chunk512_cycle[] = { 496 };                              /* 8 chunks of 512 */
static const size_t chunk1k_cycle[] = { 1016 };                              /* 4 chunks of 1 KiB */

static size_t cycle_bytes(const size_t *cycle, size_t n) {
    size_t sum = 0;
    for (size_t i = 0; i < n; i++) sum += (cycle[i] + 8 + 15) & ~(size_t)15;
    return sum;
}

/* Allocates whole cycles until at least `bytes` of chunks; counts one
   duplicate page per page of chunks. */
static void small_objects(const size_t *cycle, size_t n, size_t bytes) {
    size_t per_cycle = cycle_bytes(cycle, n);
    if (page % per_cycle != 0) die("cycle does not divide a page");
    for (size_t done = 0; done < bytes; done += per_cycle)
        for (size_t i = 0; i < n; i++) {
            unsigned char *b = malloc(cycle[i]);
            if (!b) die("malloc");
            fill_pattern(b, cycle[i]);
        }
    __atomic_add_fetch(&dup_pages, (long)(bytes / page), __ATOMIC_RELAXED);
}

/* ---- patterns ---------------------------------------------------------- */

static void *region_end;

/* The range the small objects fill: from the first one to the last. */
static void build_small(void) {
    region = malloc(mixed_cycle[0]);
    small_objects(mixed_cycle, 7, 16 << 20);
    region_end = malloc(mixed_cycle[0]);
}

static pthread_mutex_t arena_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t arena_built = PTHREAD_COND_INITIALIZER;
static pthread_cond_t never = PTHREAD_COND_INITIALIZER;
static int arenas_done;

static void *arena_worker(void *arg) {
    (void)arg;
    small_objects(mixed_cycle, 7, 4 << 20);
    pthread_mutex_lock(&arena_lock);
    arenas_done++;
    pthread_cond_broadcast(&arena_built);
    for (;;) pthread_cond_wait(&never, &arena_lock);
    return NULL;
}

static void run_arenas(int threads) {
    pthread_t t[64];
    if (threads < 1 || threads > 64) die("arenas: 1 to 64 threads");
    for (int i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, arena_worker, NULL) != 0) die("pthread_create");
    pthread_mutex_lock(&arena_lock);
    while (arenas_done < threads) pthread_cond_wait(&arena_built, &arena_lock);
    pthread_mutex_unlock(&arena_lock);
    own_threads = threads + 1;
    say("pages %ld\nthreads %d\nidle pid=%d\n", dup_pages, own_threads, (int)getpid());
    pthread_join(t[0], NULL);
    die("joined a thread that never ends");
}

/* The region is kept its own VMA by a read-only page on either side: a
 * fresh mapping the kernel places right below another anonymous one
 * coalesces with it, and the catch-up then takes it for that VMA growing
 * down (its growing edge page is advised only once the growth is over).
 * Where it lands depends on the size of what is loaded. */
static void build_syscall(long pages) {
    unsigned char *p = (unsigned char *)syscall(SYS_mmap, NULL, (pages + 2) * page,
                                                PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("mmap");
    if (syscall(SYS_mprotect, p, page, PROT_READ) ||
        syscall(SYS_mprotect, p + (pages + 1) * page, page, PROT_READ))
        die("mprotect");
    region = p + page;
    dup_pages_in(p + page, pages * page);
}

enum { COV_PAGES = 1024 };

static void cov_mmap(void) {
    unsigned char *p = mmap(NULL, COV_PAGES * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("mmap");
    region = p;
    dup_pages_in(p, COV_PAGES * page);
}

static void cov_reserve(void) {
    /* JVM/V8 heap pattern: reserve without access, commit in pieces. */
    size_t len = COV_PAGES * page * 4;
    unsigned char *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) die("mmap");
    region = p;
    for (long i = 0; i < COV_PAGES; i += 64) {
        if (mprotect(p + i * page, 64 * page, PROT_READ | PROT_WRITE) != 0) die("mprotect");
        dup_pages_in(p + i * page, 64 * page);
    }
}

static void cov_malloc_large(void) {
    /* glibc serves these with its internal mmap */
    while (dup_pages < COV_PAGES) {
        unsigned char *b = malloc(65 * page);
        if (!b) die("malloc");
        dup_pages_in(b, 65 * page);
    }
}

static void cov_brk(void) { small_objects(chunk512_cycle, 1, COV_PAGES * page); }

static void *cov_arena_thread(void *arg) {
    (void)arg;
    cov_brk();
    return NULL;
}

static void cov_arena(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, cov_arena_thread, NULL) != 0) die("pthread_create");
    pthread_join(t, NULL);
}

/* ---- grow and blocks --------------------------------------------------- */

static void run_grow(long steps, long step_kib, long sleep_us) {
    say("growing pid=%d\n", (int)getpid());
    for (long s = 0; s < steps; s++) {
        small_objects(chunk1k_cycle, 1, (size_t)step_kib * 1024);
        if (sleep_us > 0) usleep((useconds_t)sleep_us);
    }
}

enum { BLOCK_BYTES = 200 * 1024 };

static void run_blocks(long n, long batch, long sleep_us) {
    static unsigned char *live[200000];
    long failures = 0;
    if (n > (long)(sizeof live / sizeof live[0])) die("too many blocks");
    for (long i = 0; i < n; i++) {
        unsigned char *b = malloc(BLOCK_BYTES);
        live[i] = b;
        if (!b) {
            failures++;
        } else {
            /* glibc's header (prev_size 0, the same size) sits just before b,
               in the mapping's first page: the rest of that page gets the
               pattern, so it is the same page in every block, and no other
               page of the block is touched. */
            uintptr_t end = ((uintptr_t)b + page) & ~(uintptr_t)(page - 1);
            fill_pattern(b, end - (uintptr_t)b);
            dup_pages++;
        }
        if (sleep_us > 0 && batch > 0 && (i + 1) % batch == 0) usleep((useconds_t)sleep_us);
    }
    say("failures %ld\n", failures);
}

/* ---- blockers ---------------------------------------------------------- */

static const char *blocker = "read";
static int sock_fd = -1;
static pid_t waited_child;
static sigset_t usr1;
static pthread_barrier_t barrier;
static pthread_mutex_t cond_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond_never = PTHREAD_COND_INITIALIZER;
static sem_t sem;
static int futex_word;
static volatile int helper_ready;

static int is(const char *name) { return strcmp(blocker, name) == 0; }

static void *barrier_helper(void *arg) {
    (void)arg;
    helper_ready = 1;
    pthread_barrier_wait(&barrier); /* count 3: never released */
    return NULL;
}

static void *join_helper(void *arg) {
    (void)arg;
    helper_ready = 1;
    for (;;) pause();
    return NULL;
}

/* Starts a helper thread and lets it get into its blocking call before any
   memory is built (its own blocking call must not be what reaches it). */
static pthread_t start_helper(void *(*fn)(void *)) {
    pthread_t t;
    if (pthread_create(&t, NULL, fn, NULL) != 0) die("pthread_create");
    while (!helper_ready) sched_yield();
    struct timespec ts = { 0, 200 * 1000 * 1000 };
    nanosleep(&ts, NULL);
    own_threads = 2;
    return t;
}

static pthread_t join_target;

static void prepare_blocker(void) {
    if (is("recv")) {
        static int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) die("socketpair");
        sock_fd = sv[0];
    } else if (is("accept")) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sock_fd = socket(AF_INET, SOCK_STREAM, 0);
        if (sock_fd < 0 || bind(sock_fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(sock_fd, 1) != 0)
            die("listen");
    } else if (is("epoll_wait") || is("epoll_pwait")) {
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = 0 };
        sock_fd = epoll_create1(0);
        if (sock_fd < 0 || epoll_ctl(sock_fd, EPOLL_CTL_ADD, 0, &ev) != 0) die("epoll");
    } else if (is("sigwait") || is("sigwaitinfo") || is("sigtimedwait")) {
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        if (sigprocmask(SIG_BLOCK, &usr1, NULL) != 0) die("sigprocmask");
    } else if (is("waitpid") || is("wait") || is("waitid")) {
        pid_t parent = getpid();
        fflush(NULL);
        waited_child = fork();
        if (waited_child < 0) die("fork");
        if (waited_child == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent) _exit(0);
            for (;;) pause();
        }
    } else if (is("pthread_barrier_wait")) {
        if (pthread_barrier_init(&barrier, NULL, 3) != 0) die("barrier");
        start_helper(barrier_helper);
    } else if (is("pthread_join")) {
        join_target = start_helper(join_helper);
    } else if (is("sem_wait")) {
        if (sem_init(&sem, 0, 0) != 0) die("sem_init");
    }
}

static void block_forever(void) {
    char c;
    struct timespec long_time = { 1000, 0 };
    for (;;) {
        long r = 0;
        if (is("read")) {
            r = read(0, &c, 1);
            if (r == 0) _exit(0);
        } else if (is("fgets")) {
            /* stdio's own read: glibc calls its internal one, no symbol */
            static char line[64];
            if (!fgets(line, sizeof line, stdin)) _exit(0);
        } else if (is("recv")) r = recv(sock_fd, &c, 1, 0);
        else if (is("accept")) r = accept(sock_fd, NULL, NULL);
        else if (is("poll")) {
            struct pollfd p = { .fd = 0, .events = POLLIN };
            r = poll(&p, 1, -1);
            if (r > 0) _exit(0);
        } else if (is("ppoll")) {
            struct pollfd p = { .fd = 0, .events = POLLIN };
            r = ppoll(&p, 1, NULL, NULL);
            if (r > 0) _exit(0);
        } else if (is("select") || is("pselect")) {
            fd_set in;
            FD_ZERO(&in);
            FD_SET(0, &in);
            r = is("select") ? select(1, &in, NULL, NULL, NULL) : pselect(1, &in, NULL, NULL, NULL, NULL);
            if (r > 0) _exit(0);
        } else if (is("epoll_wait") || is("epoll_pwait")) {
            struct epoll_event ev;
            r = is("epoll_wait") ? epoll_wait(sock_fd, &ev, 1, -1) : epoll_pwait(sock_fd, &ev, 1, -1, NULL);
            if (r > 0) _exit(0);
        } else if (is("nanosleep")) r = nanosleep(&long_time, NULL);
        else if (is("clock_nanosleep")) r = clock_nanosleep(CLOCK_MONOTONIC, 0, &long_time, NULL);
        else if (is("sleep")) r = sleep(1000);
        else if (is("usleep")) r = usleep(100 * 1000 * 1000);
        else if (is("pause")) r = pause();
        else if (is("sigsuspend")) {
            sigset_t none;
            sigemptyset(&none);
            r = sigsuspend(&none);
        } else if (is("sigwait")) {
            int sig;
            r = sigwait(&usr1, &sig);
        } else if (is("sigwaitinfo")) r = sigwaitinfo(&usr1, NULL);
        else if (is("sigtimedwait")) r = sigtimedwait(&usr1, NULL, &long_time);
        else if (is("waitpid")) r = waitpid(waited_child, NULL, 0);
        else if (is("wait")) r = wait(NULL);
        else if (is("waitid")) {
            siginfo_t si;
            r = waitid(P_PID, (id_t)waited_child, &si, WEXITED);
        } else if (is("pthread_cond_wait") || is("pthread_cond_timedwait")) {
            pthread_mutex_lock(&cond_lock);
            if (is("pthread_cond_wait")) r = pthread_cond_wait(&cond_never, &cond_lock);
            else {
                struct timespec until;
                clock_gettime(CLOCK_REALTIME, &until);
                until.tv_sec += 1000;
                r = pthread_cond_timedwait(&cond_never, &cond_lock, &until);
            }
            pthread_mutex_unlock(&cond_lock);
        } else if (is("pthread_barrier_wait")) r = pthread_barrier_wait(&barrier);
        else if (is("pthread_join")) r = pthread_join(join_target, NULL);
        else if (is("sem_wait")) r = sem_wait(&sem);
        else if (is("futex")) r = syscall(SYS_futex, &futex_word, FUTEX_WAIT, 0, NULL, NULL, 0);
        else die("unknown blocker");
        (void)r;
    }
}

static void go_idle(void) {
    say("pages %ld\nthreads %d\n", dup_pages, own_threads);
    if (region) say("region %p\n", region);
    if (region_end) say("region_end %p\n", region_end);
    say("idle pid=%d\n", (int)getpid());
    block_forever();
}

int main(int argc, char **argv) {
    page = (size_t)sysconf(_SC_PAGESIZE);
    if (argc < 2) return 64;
    const char *pattern = argv[1];
    if (argc > 2 && strcmp(pattern, "grow") != 0 && strcmp(pattern, "blocks") != 0 && strcmp(pattern, "arenas") != 0)
        blocker = argv[2];
    long a1 = argc > 2 ? atol(argv[2]) : 0, a2 = argc > 3 ? atol(argv[3]) : 0, a3 = argc > 4 ? atol(argv[4]) : 0;

    if (!strcmp(pattern, "arenas")) run_arenas(argc > 2 ? atoi(argv[2]) : 4);
    if (!strcmp(pattern, "cov-fork")) {
        pid_t c = fork();
        if (c < 0) die("fork");
        if (c == 0) {
            cov_mmap();
            region = NULL;
            cov_brk();
            go_idle();
        }
        int st;
        waitpid(c, &st, 0);
        return 0;
    }
    if (!strcmp(pattern, "cov-exec")) {
        execl("/proc/self/exe", argv[0], "cov-exec-child", blocker, (char *)NULL);
        die("exec");
    }

    prepare_blocker();
    if (!strcmp(pattern, "small")) build_small();
    else if (!strcmp(pattern, "syscall")) build_syscall(argc > 3 ? atol(argv[3]) : 4096);
    else if (!strcmp(pattern, "cov-mmap")) cov_mmap();
    else if (!strcmp(pattern, "cov-reserve")) cov_reserve();
    else if (!strcmp(pattern, "cov-malloc_large")) cov_malloc_large();
    else if (!strcmp(pattern, "cov-brk")) cov_brk();
    else if (!strcmp(pattern, "cov-arena")) cov_arena();
    else if (!strcmp(pattern, "cov-syscall")) build_syscall(COV_PAGES);
    else if (!strcmp(pattern, "cov-exec-child")) {
        cov_mmap();
        region = NULL;
        cov_brk();
    } else if (!strcmp(pattern, "grow")) run_grow(a1, a2, a3);
    else if (!strcmp(pattern, "blocks")) run_blocks(a1, a2, a3);
    else return 64;
    go_idle();
    return 0;
}
