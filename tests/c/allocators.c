/*
 * Uses the whole malloc family the way a program does, whatever allocator
 * serves it (glibc, or jemalloc/tcmalloc/mimalloc preloaded before or after
 * libksmauto), and checks every block's contents. tests/allocators.rs runs it
 * under each allocator in both LD_PRELOAD orders: a library that reads
 * glibc chunk headers in a foreign allocator's blocks, or hands one
 * allocator's block to another's realloc or free, crashes or corrupts here.
 *
 * Covered: malloc, calloc (zeroed, overflow), realloc growing and shrinking
 * across glibc's mmap threshold, reallocarray (growing, shrinking, overflow),
 * malloc_usable_size, aligned_alloc, posix_memalign (and its EINVAL),
 * memalign, valloc, pvalloc, and 64-72 MiB blocks grown and shrunk.
 *
 * Prints "key value" lines (never an address) and `errors N`; exit status 0
 * only when every check passed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)

/* Opaque to the optimizer: calls are really made, errno really read. */
__attribute__((noipa)) static size_t opaque(size_t v) { return v; }
__attribute__((noipa)) static int get_errno(void) { return errno; }
__attribute__((noipa)) static void set_errno(int v) { errno = v; }

static unsigned errors;

static void fail(const char *what, size_t size) {
    errors++;
    printf("FAILED %s (size %zu)\n", what, size);
    fflush(stdout);
}

/* A big block is filled and checked in its first 64 KiB and at every 4093rd
 * byte after (every page), so a 72 MiB block costs microseconds, not a full
 * pass; its last byte is written too. A prefix of a block checks the same way. */
static unsigned char pattern(size_t i, unsigned seed) { return (unsigned char)((i >> 12) * 7 + i + seed); }

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i = i < 64 * KiB ? i + 1 : i + 4093 - i % 4093) p[i] = pattern(i, seed);
    if (n) p[n - 1] = pattern(n - 1, seed);
}

static int intact(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i = i < 64 * KiB ? i + 1 : i + 4093 - i % 4093)
        if (p[i] != pattern(i, seed)) return 0;
    return 1;
}

static int zeroed(const unsigned char *p, size_t n) {
    size_t step = n <= 64 * KiB ? 1 : 4093;
    for (size_t i = 0; i < n; i += step)
        if (p[i]) return 0;
    return n == 0 || p[n - 1] == 0;
}

static int aligned_to(const void *p, size_t a) { return ((uintptr_t)p % a) == 0; }

/* A block of `size` from `p` is usable and holds what we write. */
static void usable(const char *what, void *p, size_t size, unsigned seed) {
    if (!p) return fail(what, size);
    if (malloc_usable_size(p) < size) fail("malloc_usable_size below the request", size);
    fill(p, size, seed);
    if (!intact(p, size, seed)) fail(what, size);
}

/* realloc through sizes on both sides of glibc's mmap threshold (128 KiB by
 * default), checking that the common prefix survives every move. */
static void realloc_ladder(int use_reallocarray) {
    static const size_t sizes[] = {24, 200, 100 * KiB, 200 * KiB, 5 * MiB, 300 * KiB,
                                   64 * KiB, 1 * MiB, 130 * KiB, 40, 3 * MiB, 8};
    const char *what = use_reallocarray ? "reallocarray ladder" : "realloc ladder";
    unsigned char *p = NULL;
    size_t have = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t want = opaque(sizes[i]);
        unsigned char *q = use_reallocarray ? reallocarray(p, want / 8, 8) : realloc(p, want);
        if (!q) return fail(what, want);
        size_t kept = have < want ? have : want;
        if (kept && !intact(q, kept, 11)) fail(what, want);
        if (malloc_usable_size(q) < want) fail("malloc_usable_size after resize", want);
        fill(q, want, 11);
        p = q;
        have = want;
    }
    free(p);
}

static void big_blocks(void) {
    /* 64-72 MiB: far above every allocator's mmap threshold. */
    enum { N = 5 };
    unsigned char *blocks[N];
    size_t sizes[N];
    for (int i = 0; i < N; i++) {
        sizes[i] = opaque(64 * MiB + (size_t)i * 2 * MiB + (size_t)i * 4096 + 24);
        blocks[i] = malloc(sizes[i]);
        usable("malloc 64-72 MiB", blocks[i], sizes[i], 40 + i);
    }
    for (int i = 0; i < N; i++) {
        if (!blocks[i]) continue;
        if (!intact(blocks[i], sizes[i], 40 + i)) fail("64-72 MiB block overwritten", sizes[i]);
        /* Grow by reallocarray, shrink by realloc: both keep the prefix. */
        size_t grown = sizes[i] + 3 * MiB;
        unsigned char *g = reallocarray(blocks[i], grown / 16, 16);
        if (!g) { fail("reallocarray 64-72 MiB", grown); free(blocks[i]); blocks[i] = NULL; continue; }
        if (!intact(g, sizes[i], 40 + i)) fail("reallocarray lost contents", grown);
        size_t shrunk = 65 * MiB + 8;
        unsigned char *s = realloc(g, shrunk);
        if (!s) { fail("realloc shrink 64-72 MiB", shrunk); free(g); blocks[i] = NULL; continue; }
        if (!intact(s, shrunk < sizes[i] ? shrunk : sizes[i], 40 + i)) fail("realloc shrink lost contents", shrunk);
        blocks[i] = s;
    }
    for (int i = 0; i < N; i++) free(blocks[i]);

    unsigned char *z = calloc(opaque(70 * MiB) / 4096, 4096);
    if (!z || !zeroed(z, 70 * MiB)) fail("calloc 70 MiB zeroed", 70 * MiB);
    free(z);
}

static void aligned_family(size_t page) {
    static const size_t sizes[] = {1, 100, 5000, 200 * KiB, 3 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t size = opaque(sizes[i]);

        void *a = aligned_alloc(64, (size + 63) & ~(size_t)63);
        usable("aligned_alloc", a, size, 1);
        if (a && !aligned_to(a, 64)) fail("aligned_alloc alignment", size);

        void *pm = NULL;
        int rc = posix_memalign(&pm, 4096, size);
        if (rc) fail("posix_memalign", size);
        usable("posix_memalign", pm, size, 2);
        if (pm && !aligned_to(pm, 4096)) fail("posix_memalign alignment", size);

        void *m = memalign(256, size);
        usable("memalign", m, size, 3);
        if (m && !aligned_to(m, 256)) fail("memalign alignment", size);

        void *v = valloc(size);
        usable("valloc", v, size, 4);
        if (v && !aligned_to(v, page)) fail("valloc alignment", size);

        void *pv = pvalloc(size);
        size_t rounded = (size + page - 1) & ~(page - 1);
        usable("pvalloc", pv, rounded, 5);
        if (pv && !aligned_to(pv, page)) fail("pvalloc alignment", size);

        /* Each block still intact after the others were made, then freed and
         * one of them grown by realloc (an aligned block is a normal block). */
        if (a && !intact(a, size, 1)) fail("aligned_alloc overwritten", size);
        if (pm && !intact(pm, size, 2)) fail("posix_memalign overwritten", size);
        if (m && !intact(m, size, 3)) fail("memalign overwritten", size);
        if (v && !intact(v, size, 4)) fail("valloc overwritten", size);
        if (pv && !intact(pv, rounded, 5)) fail("pvalloc overwritten", size);
        unsigned char *r = realloc(m, size + 300 * KiB);
        if (!r || !intact(r, size, 3)) fail("realloc of a memalign block", size);
        free(a);
        free(pm);
        free(r ? (void *)r : m);
        free(v);
        free(pv);
    }
    void *pm = (void *)1;
    if (posix_memalign(&pm, 24, 100) != EINVAL) fail("posix_memalign(24) is EINVAL", 100);
}

static void small_and_edge_cases(void) {
    /* Many small blocks, freed in a different order. */
    enum { N = 4000 };
    static unsigned char *small[N];
    for (int i = 0; i < N; i++) {
        size_t size = opaque(1 + (size_t)(i * 37) % 700);
        small[i] = malloc(size);
        usable("malloc small", small[i], size, (unsigned)i);
    }
    for (int i = 0; i < N; i += 2) free(small[i]);
    for (int i = 1; i < N; i += 2) {
        size_t size = 1 + (size_t)(i * 37) % 700;
        if (!intact(small[i], size, (unsigned)i)) fail("small block overwritten", size);
        small[i] = reallocarray(small[i], size, 3);
        if (!small[i] || !intact(small[i], size, (unsigned)i)) fail("reallocarray small", size * 3);
    }
    for (int i = 1; i < N; i += 2) free(small[i]);

    unsigned char *c = calloc(opaque(300), 7);
    if (!c || !zeroed(c, 2100)) fail("calloc zeroed", 2100);
    free(c);
    unsigned char *cb = calloc(opaque(3), MiB);
    if (!cb || !zeroed(cb, 3 * MiB)) fail("calloc 3 MiB zeroed", 3 * MiB);
    free(cb);

    set_errno(0);
    void *huge = calloc(opaque(SIZE_MAX / 2), 4);
    if (huge != NULL) fail("calloc overflow is NULL", 0);
    void *volatile keep = malloc(16);
    set_errno(0);
    if (reallocarray(keep, opaque(SIZE_MAX / 2), 4) != NULL || get_errno() != ENOMEM)
        fail("reallocarray overflow is ENOMEM", 0);
    free(keep); /* reallocarray failed: the old block is still ours */
    unsigned char *fresh = reallocarray(NULL, opaque(10), 10);
    usable("reallocarray(NULL)", fresh, 100, 9);
    free(fresh);
    free(NULL);
    if (malloc_usable_size(NULL) != 0) fail("malloc_usable_size(NULL) is 0", 0);
}

/* The family's addresses, taken in code: built with -no-pie, the program
 * then has a canonical PLT entry for each, which dlsym(RTLD_DEFAULT) returns
 * instead of the allocator's definition (tests/allocators.rs builds both). */
static void *(*volatile malloc_at)(size_t);
static void *(*volatile calloc_at)(size_t, size_t);
static void *(*volatile realloc_at)(void *, size_t);
static void *(*volatile reallocarray_at)(void *, size_t, size_t);
static void (*volatile free_at)(void *);

static void through_addresses(void) {
    malloc_at = malloc;
    calloc_at = calloc;
    realloc_at = realloc;
    reallocarray_at = reallocarray;
    free_at = free;
    unsigned char *p = malloc_at(300);
    usable("malloc through its address", p, 300, 21);
    p = realloc_at(p, 600 * KiB);
    if (!p || !intact(p, 300, 21)) fail("realloc through its address", 600 * KiB);
    p = reallocarray_at(p, 100, 10);
    if (!p || !intact(p, 300, 21)) fail("reallocarray through its address", 1000);
    free_at(p);
    unsigned char *z = calloc_at(1000, 100);
    if (!z || !zeroed(z, 100000)) fail("calloc through its address", 100000);
    free_at(z);
}

int main(void) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    through_addresses();
    for (int round = 0; round < 3; round++) {
        realloc_ladder(0);
        realloc_ladder(1);
        aligned_family(page);
        small_and_edge_cases();
        big_blocks();
    }
    printf("errors %u\n", errors);
    return errors ? 1 : 0;
}
