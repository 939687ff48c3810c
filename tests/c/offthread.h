/*
 * Shared by the C programs of tests/offthread.rs (issue 19): output written
 * with write(2) (no stdio buffer, no allocation once memory is built),
 * pages of duplicate content whose ranges the program prints so the test
 * can check exactly those ranges from outside (/proc/PID/smaps, pagemap),
 * and "allocate lots" in every way glibc and runtimes come by memory.
 * Header-only, static functions.
 *
 * Duplicate content: the byte at address a depends only on a's offset in
 * its page and is never 0, so every filled page is identical to every other
 * (and to those of every other program using this header), and none is
 * KSM's zero page.
 *
 * Output lines: "range 0xSTART 0xEND" (page-aligned, every page filled),
 * "pages N" (total pages in the ranges), "threads N" (the program's own
 * threads), "settled pid=N" (memory built; from now on the program waits).
 */
#ifndef OFFTHREAD_H
#define OFFTHREAD_H

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static size_t ot_page;

static inline void ot_init(void) { ot_page = (size_t)sysconf(_SC_PAGESIZE); }

static inline void say(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0 && write(1, buf, (size_t)n) < 0) _exit(5);
}

static inline void die(const char *what) {
    say("error %s errno=%d\n", what, errno);
    _exit(1);
}

static inline unsigned char pattern_at(uintptr_t a) {
    return (unsigned char)((a & (ot_page - 1)) * 7 + 1);
}

static inline void fill_pattern(unsigned char *p, size_t len) {
    for (size_t i = 0; i < len; i++) p[i] = pattern_at((uintptr_t)(p + i));
}

/* ---- ranges ------------------------------------------------------------- */

enum { MAX_RANGES = 256 };
static struct { uintptr_t start, end; } ranges[MAX_RANGES];
static int range_count;
static pthread_mutex_t range_lock = PTHREAD_MUTEX_INITIALIZER;
/* Set by a program that prints its ranges (the others allocate without
   keeping a list). */
static int ot_record_ranges;

/* Records the whole pages inside [start, end) (which the caller filled). */
static inline void note_range(uintptr_t start, uintptr_t end) {
    start = (start + ot_page - 1) & ~(uintptr_t)(ot_page - 1);
    end &= ~(uintptr_t)(ot_page - 1);
    if (end <= start || !ot_record_ranges) return;
    pthread_mutex_lock(&range_lock);
    if (range_count == MAX_RANGES) die("too many ranges");
    ranges[range_count].start = start;
    ranges[range_count].end = end;
    range_count++;
    pthread_mutex_unlock(&range_lock);
}

/* Fills the whole pages inside [p, p + len) and records them. */
static inline void fill_range(unsigned char *p, size_t len) {
    uintptr_t start = ((uintptr_t)p + ot_page - 1) & ~(uintptr_t)(ot_page - 1);
    uintptr_t end = ((uintptr_t)p + len) & ~(uintptr_t)(ot_page - 1);
    if (end <= start) return;
    fill_pattern((unsigned char *)start, end - start);
    note_range(start, end);
}

static inline void say_ranges(void) {
    long pages = 0;
    for (int i = 0; i < range_count; i++) {
        say("range %#lx %#lx\n", (unsigned long)ranges[i].start, (unsigned long)ranges[i].end);
        pages += (long)((ranges[i].end - ranges[i].start) / ot_page);
    }
    say("pages %ld\n", pages);
}

/* ---- allocation paths ---------------------------------------------------- */

/* Small objects whose glibc chunks (request + 8, rounded up to 16) add up
   to exactly one page per cycle, never freed: carved from the top one after
   the other, every page holds the same chunks at the same offsets, so with
   each object written whole every page in their span is identical, chunk
   headers included. Returns the span of whole pages they cover. */
static const size_t mixed_cycle[] = { 56, 56, 120, 248, 504, 1016, 2040 };

static inline void small_objects(size_t bytes) {
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (size_t done = 0; done < bytes; done += ot_page)
        for (size_t i = 0; i < sizeof mixed_cycle / sizeof mixed_cycle[0]; i++) {
            unsigned char *b = malloc(mixed_cycle[i]);
            if (!b) die("malloc");
            fill_pattern(b, mixed_cycle[i]);
            if ((uintptr_t)b < lo) lo = (uintptr_t)b;
            if ((uintptr_t)b + mixed_cycle[i] > hi) hi = (uintptr_t)b + mixed_cycle[i];
        }
    /* The span's first and last pages may hold other chunks: left out. */
    note_range(lo + ot_page, hi > ot_page ? hi - ot_page : 0);
}

/* Large blocks: glibc maps each with its internal mmap (no hook sees it). */
static inline void large_blocks(int count, size_t bytes) {
    for (int i = 0; i < count; i++) {
        unsigned char *b = malloc(bytes);
        if (!b) die("malloc");
        fill_range(b, bytes);
    }
}

/* calloc'ed blocks (mapped by glibc, so calloc skips the clearing) grown
   with realloc (mremap: the block may move), filled before and after. */
static inline void calloc_realloc_blocks(int count, size_t bytes) {
    for (int i = 0; i < count; i++) {
        unsigned char *b = calloc(1, bytes / 2);
        if (!b) die("calloc");
        fill_pattern(b + 64, bytes / 2 - 64);
        b = realloc(b, bytes);
        if (!b) die("realloc");
        fill_range(b, bytes);
    }
}

/* A region mapped with the raw system call, as Go's runtime does. */
static inline void raw_mmap(size_t bytes) {
    unsigned char *p = (unsigned char *)syscall(SYS_mmap, NULL, bytes, PROT_READ | PROT_WRITE,
                                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("raw mmap");
    fill_range(p, bytes);
}

/* JVM/V8 heaps: reserve without access, commit in 256 KiB pieces. */
static inline void reserve_then_commit(size_t bytes) {
    size_t piece = 64 * ot_page, len = bytes * 4;
    unsigned char *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) die("reserve");
    for (size_t off = 0; off < bytes; off += piece) {
        if (mprotect(p + off, piece, PROT_READ | PROT_WRITE) != 0) die("mprotect");
        fill_pattern(p + off, piece);
    }
    note_range((uintptr_t)p, (uintptr_t)p + bytes);
}

/* ---- looking at ourselves ---------------------------------------------- */

/* Entries of /proc/self/task (threads of this process, the library's
   included). */
static inline int task_count(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    if (!d) return -1;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* num_threads of /proc/self/stat (field 20): what CPython 3.12+ counts
   before it warns that fork() in a multi-threaded process may deadlock. */
static inline long stat_threads(void) {
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p) return -1;
    /* After ") ": field 3 (state) ... field 20 is the 18th token. */
    long value = -1;
    char *save = NULL, *tok = strtok_r(p + 2, " ", &save);
    for (int field = 3; tok; field++, tok = strtok_r(NULL, " ", &save))
        if (field == 20) { value = atol(tok); break; }
    return value;
}

static void *ot_thread_allocates(void *arg) {
    (void)arg;
    small_objects(1 << 20);
    large_blocks(2, 1 << 20);
    return NULL;
}

/* Allocates lots in every way at once, as a program starting up does:
   large blocks, brk growth, a raw mapping, a reservation committed, and
   `threads` threads that allocate in their own arenas and are joined.
   Everything stays allocated (the memory is the news). */
static inline void allocate_lots(int threads) {
    large_blocks(16, 1 << 20);
    small_objects(4 << 20);
    raw_mmap(2 << 20);
    reserve_then_commit(1 << 20);
    calloc_realloc_blocks(2, 1 << 20);
    for (int i = 0; i < threads; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, ot_thread_allocates, NULL) != 0) die("pthread_create");
        if (pthread_join(t, NULL) != 0) die("pthread_join");
    }
}

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

#endif
