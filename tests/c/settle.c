/*
 * The coverage matrix of issue 19 (tests/offthread.rs): a program builds
 * about 8 MiB of duplicate pages along one allocation path, says which
 * ranges it filled and that it has settled, then waits in one way for good.
 * The test checks from outside (smaps `mg`, pagemap + kpageflags) that the
 * advise engine reached those ranges, whatever the wait.
 *
 *   settle PATH WAIT
 *
 * PATH (how the memory is built):
 *   brk      small objects (56..2040 bytes) on the main thread's brk heap
 *   arenas   main allocates, then waits twice (an earlier catch-up pass
 *            found it, a later one found nothing new) and until it is the
 *            only thread of the process again (any thread of the library
 *            has gone: up to 5 s), and only then 4 threads start and build
 *            small objects in their own malloc arenas (mapped and grown by
 *            glibc with calls no hook sees); every thread then waits as
 *            main does
 *   large    1 MiB malloc blocks (glibc maps each with its internal mmap)
 *   calloc   calloc'ed 512 KiB blocks grown to 1 MiB with realloc (mremap)
 *   rawmmap  a region mapped with syscall(SYS_mmap), as Go does
 *   reserve  a PROT_NONE reservation committed with mprotect in pieces
 *
 * WAIT (how every thread of the program then waits, for good):
 *   read     a blocking read(2) on a pipe
 *   fgets    fgets on a pipe (stdio: glibc's internal read)
 *   getline  getline on a pipe
 *   system   system("sleep 5") over and over (glibc's internal spawn and
 *            waitpid)
 *   cond     pthread_cond_wait on a condition nobody signals
 *   futex    a futex wait made with the syscall instruction itself (as Go's
 *            runtime does: no libc function at all)
 *   spin     computing with no calls at all (a loop reading a volatile)
 *
 * Everything a wait needs (pipes, stdio streams and their buffers, locks)
 * is set up before the memory is built. Output: see offthread.h ("range",
 * "pages", "threads", then "settled pid=N" right before the wait). The
 * program dies with its parent (PR_SET_PDEATHSIG) and after 10 minutes.
 */
#include "offthread.h"

#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>

enum { BYTES = 8 << 20, ARENA_THREADS = 4, MAX_THREADS = ARENA_THREADS + 1 };

static const char *wait_kind;
static int pipe_in[MAX_THREADS];
static FILE *streams[MAX_THREADS];
static char stream_bufs[MAX_THREADS][4096];
static char *lines[MAX_THREADS];
static size_t line_caps[MAX_THREADS];
static pthread_mutex_t locks[MAX_THREADS];
static pthread_cond_t conds[MAX_THREADS];
static int futex_words[MAX_THREADS];
static volatile int spin_stop;
static volatile int spin_sink;

static int is(const char *kind) { return strcmp(wait_kind, kind) == 0; }

/* A system call made with the instruction itself: no libc function (and so
   no hook of the preload) is involved. */
static long raw_syscall4(long n, long a, long b, long c, long d) {
#if defined(__x86_64__)
    long ret;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
    return ret;
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
    return x0;
#else
#error "x86_64 or aarch64"
#endif
}

static void prepare_wait(int i) {
    int fds[2];
    if (pipe(fds) != 0) die("pipe");
    pipe_in[i] = fds[0]; /* fds[1] stays open: the read never ends */
    if (is("fgets") || is("getline")) {
        streams[i] = fdopen(fds[0], "r");
        if (!streams[i] || setvbuf(streams[i], stream_bufs[i], _IOFBF, sizeof stream_bufs[i]) != 0)
            die("stream");
        line_caps[i] = 256;
        lines[i] = malloc(line_caps[i]);
    }
    pthread_mutex_init(&locks[i], NULL);
    pthread_cond_init(&conds[i], NULL);
}

static void wait_for_good(int i) {
    char c;
    for (;;) {
        if (is("read")) {
            if (read(pipe_in[i], &c, 1) == 0) _exit(0);
        } else if (is("fgets")) {
            if (!fgets(lines[i], (int)line_caps[i], streams[i])) _exit(0);
        } else if (is("getline")) {
            if (getline(&lines[i], &line_caps[i], streams[i]) < 0) _exit(0);
        } else if (is("system")) {
            if (system("sleep 5") != 0) _exit(0);
        } else if (is("cond")) {
            pthread_mutex_lock(&locks[i]);
            pthread_cond_wait(&conds[i], &locks[i]);
            pthread_mutex_unlock(&locks[i]);
        } else if (is("futex")) {
            raw_syscall4(SYS_futex, (long)&futex_words[i], FUTEX_WAIT_PRIVATE, 0, 0);
        } else if (is("spin")) {
            while (!spin_stop) spin_sink++;
        } else {
            die("unknown wait");
        }
    }
}

/* ---- arenas ------------------------------------------------------------- */

static int arenas_built;

static void *arena_thread(void *arg) {
    int i = (int)(intptr_t)arg;
    small_objects(BYTES / ARENA_THREADS);
    __atomic_add_fetch(&arenas_built, 1, __ATOMIC_SEQ_CST);
    wait_for_good(i);
    return NULL;
}

static int build_arenas(void) {
    /* Memory for a first pass to find, then two pauses: by the end of the
       second, a catch-up pass has found nothing new (the threads that come
       next make their arenas with calls no hook sees). */
    unsigned char *first = malloc(1 << 20);
    if (!first) die("malloc");
    memset(first, 1, 1 << 20);
    struct timespec pause = { 0, 300 * 1000 * 1000 }, tick = { 0, 50 * 1000 * 1000 };
    nanosleep(&pause, NULL);
    nanosleep(&pause, NULL);
    /* And whatever thread the library ran its catch-up on is gone (up to
       5 s): the arenas come after the library thought memory settled. */
    for (int i = 0; i < 100 && task_count() > 1; i++) nanosleep(&tick, NULL);
    for (int i = 1; i <= ARENA_THREADS; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, arena_thread, (void *)(intptr_t)i) != 0) die("pthread_create");
    }
    /* Waits for them without a call any hook sees (a sleep here would be
       one more chance for today's catch-up, which a program waiting for its
       workers in a futex does not give). */
    while (__atomic_load_n(&arenas_built, __ATOMIC_SEQ_CST) < ARENA_THREADS) sched_yield();
    return ARENA_THREADS + 1;
}

int main(int argc, char **argv) {
    ot_init();
    ot_record_ranges = 1;
    if (argc != 3) { fprintf(stderr, "usage: settle PATH WAIT\n"); return 64; }
    const char *path = argv[1];
    wait_kind = argv[2];
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(600);
    int threads = strcmp(path, "arenas") == 0 ? MAX_THREADS : 1;
    for (int i = 0; i < threads; i++) prepare_wait(i);

    if (!strcmp(path, "brk")) small_objects(BYTES);
    else if (!strcmp(path, "arenas")) threads = build_arenas();
    else if (!strcmp(path, "large")) large_blocks(BYTES >> 20, 1 << 20);
    else if (!strcmp(path, "calloc")) calloc_realloc_blocks(BYTES >> 20, 1 << 20);
    else if (!strcmp(path, "rawmmap")) raw_mmap(BYTES);
    else if (!strcmp(path, "reserve")) reserve_then_commit(BYTES);
    else { fprintf(stderr, "unknown path %s\n", path); return 64; }

    say_ranges();
    say("threads %d\nsettled pid=%d\n", threads, (int)getpid());
    wait_for_good(0);
    return 0;
}
