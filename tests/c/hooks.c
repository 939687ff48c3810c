/*
 * Exercises every function libksmauto interposes (the malloc family, the
 * mmap family, pthread_create, thrd_create) and prints what each call did as deterministic
 * "key value" lines: results, errno values, alignment and content checks —
 * never an address. Run with and without the preload, the output must match
 * (tests/hooks.rs).
 *
 * Usage:
 *   hooks            the glibc-equivalence facts
 *   hooks bigblocks  for large malloc blocks, what /proc/self/smaps says once
 *                    the program went idle (slept) for a while: the VMA
 *                    holding the block past its first page covers it,
 *                    whether its VmFlags have `mg`, and how much the VMA
 *                    count grew (this part differs with the preload on
 *                    purpose)
 * Exit status 0 unless the program itself could not run (a setup step failed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <threads.h>
#include <unistd.h>

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)

/* Opaque to the optimizer, so errno is really read and written around calls
 * (GCC may otherwise assume some allocation functions leave errno alone) and
 * allocations whose results are only freed are not elided. */
__attribute__((noipa)) static void set_errno(int v) { errno = v; }
__attribute__((noipa)) static int get_errno(void) { return errno; }
__attribute__((noipa)) static size_t opaque(size_t v) { return v; }
__attribute__((noipa)) static void *keep(void *p) { return p; }

static const char *yesno(int b) { return b ? "yes" : "no"; }

static void die(const char *what) {
    fprintf(stderr, "hooks: setup failed: %s: %s\n", what, strerror(errno));
    exit(2);
}

static int aligned_to(const void *p, size_t align) { return ((uintptr_t)p % align) == 0; }

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 31 + seed);
}

static int check(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 31 + seed)) return 0;
    return 1;
}

static int all_zero(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

/* ------------------------------------------------------------------------ */

static void malloc_family(void) {
    /* malloc(0): glibc returns a unique, freeable pointer. */
    void *z = malloc(opaque(0));
    printf("malloc0 nonnull %s\n", yesno(z != NULL));
    free(z);

    set_errno(0);
    void *huge = malloc(opaque(SIZE_MAX));
    printf("malloc_sizemax null %s errno %d\n", yesno(huge == NULL), get_errno());

    /* free(NULL) does nothing and keeps errno. */
    set_errno(4242);
    free(keep(NULL));
    printf("free_null errno %d\n", get_errno());

    /* calloc overflow and zeroing. */
    set_errno(0);
    void *c = calloc(opaque(SIZE_MAX / 2), opaque(4));
    printf("calloc_overflow null %s errno %d enomem %s\n", yesno(c == NULL), get_errno(), yesno(get_errno() == ENOMEM));
    for (size_t size = 24; size <= 64 * KiB; size *= 4) {
        /* Dirty a block of the same size first, so calloc is likely to get it back. */
        unsigned char *d = malloc(size);
        if (!d) die("malloc");
        memset(d, 0xAA, size);
        free(keep(d));
        unsigned char *z2 = calloc(1, size);
        printf("calloc_zero %zu %s\n", size, yesno(z2 && all_zero(z2, size)));
        free(z2);
    }
    unsigned char *big = calloc(4, MiB);
    printf("calloc_zero 4MiB %s\n", yesno(big && all_zero(big, 4 * MiB)));
    free(big);

    /* reallocarray overflow leaves the block alone. */
    unsigned char *ra = reallocarray(NULL, 10, 10);
    if (!ra) die("reallocarray");
    fill(ra, 100, 7);
    set_errno(0);
    void *ra2 = reallocarray(keep(ra), opaque(SIZE_MAX / 2), opaque(4));
    printf("reallocarray_overflow null %s errno %d enomem %s block_intact %s\n", yesno(ra2 == NULL), get_errno(),
           yesno(get_errno() == ENOMEM), yesno(check(ra, 100, 7)));
    ra2 = reallocarray(ra, 1000, 100);
    printf("reallocarray_grow ok %s\n", yesno(ra2 && check(ra2, 100, 7)));
    free(ra2);

    /* realloc(NULL, n) is malloc(n). */
    unsigned char *r = realloc(NULL, 100);
    printf("realloc_null nonnull %s\n", yesno(r != NULL));
    if (!r) die("realloc");
    fill(r, 100, 3);
    /* 100 B -> 10 MiB -> 200 KiB -> 1 KiB, contents kept at every step. */
    r = realloc(r, 10 * MiB);
    int ok = r && check(r, 100, 3);
    printf("realloc_grow_10MiB kept %s\n", yesno(ok));
    if (!r) die("realloc");
    fill(r, 10 * MiB, 5);
    r = realloc(r, 200 * KiB);
    printf("realloc_shrink_200KiB kept %s\n", yesno(r && check(r, 200 * KiB, 5)));
    if (!r) die("realloc");
    r = realloc(r, 1 * KiB);
    printf("realloc_shrink_1KiB kept %s\n", yesno(r && check(r, 1 * KiB, 5)));
    if (!r) die("realloc");
    set_errno(0);
    void *r2 = realloc(keep(r), opaque(SIZE_MAX - 4096));
    printf("realloc_too_big null %s errno %d block_intact %s\n", yesno(r2 == NULL), get_errno(), yesno(check(r, 1 * KiB, 5)));
    /* realloc(p, 0) frees p and returns NULL in glibc. */
    r2 = realloc(r, opaque(0));
    printf("realloc_zero null %s\n", yesno(r2 == NULL));
    free(r2);

    /* malloc_usable_size: at least what was asked for. */
    static const size_t sizes[] = {1, 24, 100, 1000, 4096, 100000, 1 << 20, 10 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        void *p = malloc(sizes[i]);
        size_t u = malloc_usable_size(p);
        printf("usable %zu ge_request %s usable %zu\n", sizes[i], yesno(p && u >= sizes[i]), u);
        free(p);
    }
    printf("usable_null %zu\n", malloc_usable_size(NULL));
}

static void aligned_family(void) {
    static const size_t aligns[] = {16, 64, 4096, 65536};
    static const size_t sizes[] = {1, 100, 5000, 300 * 1024};
    for (size_t a = 0; a < sizeof aligns / sizeof *aligns; a++) {
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            size_t align = aligns[a], size = sizes[s];
            void *p = (void *)1;
            int rc = posix_memalign(&p, align, size);
            printf("posix_memalign %zu %zu rc %d aligned %s usable_ok %s\n", align, size, rc, yesno(rc == 0 && aligned_to(p, align)),
                   yesno(rc == 0 && malloc_usable_size(p) >= size));
            if (rc == 0) {
                fill(p, size, 1);
                printf("posix_memalign %zu %zu content %s\n", align, size, yesno(check(p, size, 1)));
                free(p);
            }
            /* aligned_alloc: C11 wants size a multiple of the alignment. */
            size_t asize = (size + align - 1) / align * align;
            p = aligned_alloc(align, asize);
            printf("aligned_alloc %zu %zu aligned %s usable_ok %s\n", align, asize, yesno(p && aligned_to(p, align)),
                   yesno(p && malloc_usable_size(p) >= asize));
            free(p);
            p = memalign(align, size);
            printf("memalign %zu %zu aligned %s usable_ok %s\n", align, size, yesno(p && aligned_to(p, align)),
                   yesno(p && malloc_usable_size(p) >= size));
            free(p);
        }
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    static const size_t vsizes[] = {0, 1, 4096, 4097, 200000, 3 << 20};
    for (size_t s = 0; s < sizeof vsizes / sizeof *vsizes; s++) {
        size_t size = vsizes[s];
        void *v = valloc(size);
        printf("valloc %zu nonnull %s page_aligned %s usable_ok %s\n", size, yesno(v != NULL), yesno(v && aligned_to(v, page)),
               yesno(v && malloc_usable_size(v) >= size));
        free(v);
        void *pv = pvalloc(size);
        size_t rounded = (size + page - 1) / page * page; /* 0 for 0: glibc gives a minimal block */
        printf("pvalloc %zu nonnull %s page_aligned %s usable_ge_rounded %s\n", size, yesno(pv != NULL), yesno(pv && aligned_to(pv, page)),
               yesno(pv && malloc_usable_size(pv) >= rounded));
        if (pv) {
            memset(pv, 0x5A, rounded); /* the whole rounded size is the caller's */
            free(pv);
        }
    }

    /* posix_memalign errors: returned, not through errno; *out untouched. */
    static const size_t bad_aligns[] = {0, 3, 4, 24, 4095};
    for (size_t i = 0; i < sizeof bad_aligns / sizeof *bad_aligns; i++) {
        void *p = (void *)&bad_aligns;
        set_errno(4242);
        int rc = posix_memalign(&p, opaque(bad_aligns[i]), 64);
        printf("posix_memalign_bad_align %zu rc %d einval %s out_untouched %s errno %d\n", bad_aligns[i], rc, yesno(rc == EINVAL),
               yesno(p == (void *)&bad_aligns), get_errno());
    }
    void *p = (void *)&bad_aligns;
    int rc = posix_memalign(&p, 64, opaque(SIZE_MAX));
    printf("posix_memalign_sizemax rc %d enomem %s out_untouched %s\n", rc, yesno(rc == ENOMEM), yesno(p == (void *)&bad_aligns));

    /* memalign / aligned_alloc / valloc / pvalloc failures. */
    set_errno(0);
    void *m = memalign(4096, opaque(SIZE_MAX - 8192));
    printf("memalign_too_big null %s errno %d\n", yesno(m == NULL), get_errno());
    set_errno(0);
    m = memalign(opaque(SIZE_MAX / 2 + 2), 64);
    printf("memalign_bad_align null %s errno %d\n", yesno(m == NULL), get_errno());
    free(m);
    set_errno(0);
    m = aligned_alloc(64, opaque(SIZE_MAX - 64));
    printf("aligned_alloc_too_big null %s errno %d\n", yesno(m == NULL), get_errno());
    set_errno(0);
    m = valloc(opaque(SIZE_MAX - 100));
    printf("valloc_too_big null %s errno %d\n", yesno(m == NULL), get_errno());
    set_errno(0);
    m = pvalloc(opaque(SIZE_MAX - 100));
    printf("pvalloc_too_big null %s errno %d\n", yesno(m == NULL), get_errno());
    /* A non-power-of-two alignment: glibc 2.36 rounds it up for memalign. */
    m = memalign(opaque(48), 100);
    printf("memalign_48 nonnull %s aligned64 %s\n", yesno(m != NULL), yesno(m && aligned_to(m, 64)));
    free(m);
}

/* errno after a successful call: glibc leaves it as it was. */
static void errno_preservation(void) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void *p, *q;
    int e;

#define AFTER(name, call)                                                                                              \
    do {                                                                                                               \
        set_errno(4242);                                                                                               \
        call;                                                                                                          \
        e = get_errno();                                                                                               \
        printf("errno_after %s %d\n", name, e);                                                                        \
    } while (0)

    AFTER("malloc_small", p = keep(malloc(64)));
    AFTER("free_small", free(p));
    AFTER("malloc_large", p = keep(malloc(2 * MiB)));
    AFTER("free_large", free(p));
    AFTER("calloc_small", p = keep(calloc(8, 8)));
    AFTER("realloc_grow", p = keep(realloc(p, 1 * MiB)));
    AFTER("realloc_shrink", p = keep(realloc(p, 16)));
    AFTER("reallocarray", p = keep(reallocarray(p, 4, 100)));
    AFTER("free", free(p));
    AFTER("calloc_large", p = keep(calloc(1, 3 * MiB)));
    AFTER("malloc_usable_size", e = (int)malloc_usable_size(p));
    AFTER("free_calloc_large", free(p));
    AFTER("posix_memalign", e = posix_memalign(&p, 65536, 1 * MiB));
    AFTER("free_posix_memalign", free(p));
    AFTER("aligned_alloc", p = keep(aligned_alloc(4096, 8192)));
    AFTER("free_aligned_alloc", free(p));
    AFTER("memalign", p = keep(memalign(64, 1000)));
    AFTER("free_memalign", free(p));
    AFTER("valloc", p = keep(valloc(5000)));
    AFTER("free_valloc", free(p));
    AFTER("pvalloc", p = keep(pvalloc(5000)));
    AFTER("free_pvalloc", free(p));
    AFTER("mmap", p = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (p == MAP_FAILED) die("mmap");
    AFTER("mremap", q = mremap(p, 4 * page, 64 * page, MREMAP_MAYMOVE));
    if (q == MAP_FAILED) die("mremap");
    AFTER("munmap", e = munmap(q, 64 * page));
    AFTER("mmap64", p = mmap64(NULL, 1 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (p == MAP_FAILED) die("mmap64");
    AFTER("munmap64", e = munmap(p, 1 * MiB));
    /* Classes the engines take back out of merging (stacks; exec when
     * excluded): the extra work must not show in errno either. */
    AFTER("mmap_stack", p = mmap(NULL, 64 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0));
    if (p == MAP_FAILED) die("mmap stack");
    AFTER("munmap_stack", e = munmap(p, 64 * page));
    AFTER("mmap_growsdown", p = mmap(NULL, 16 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN, -1, 0));
    if (p == MAP_FAILED) die("mmap growsdown");
    AFTER("munmap_growsdown", e = munmap(p, 16 * page));
    AFTER("mmap_exec", p = mmap(NULL, 16 * page, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (p == MAP_FAILED) die("mmap exec");
    AFTER("munmap_exec", e = munmap(p, 16 * page));
    AFTER("mmap_small", p = mmap(NULL, 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (p == MAP_FAILED) die("mmap small");
    AFTER("munmap_small", e = munmap(p, 1));
#undef AFTER
}

static void mappings(void) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const int rw = PROT_READ | PROT_WRITE;

    /* Private anonymous: zero-filled, writable. */
    unsigned char *a = mmap(NULL, 64 * page, rw, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("mmap_anon_private ok %s\n", yesno(a != MAP_FAILED));
    if (a == MAP_FAILED) die("mmap");
    printf("mmap_anon_private zero %s page_aligned %s\n", yesno(all_zero(a, 64 * page)), yesno(aligned_to(a, page)));
    fill(a, 64 * page, 9);

    /* mremap grow, may move: contents kept, the new tail is zero. */
    unsigned char *b = mremap(a, 64 * page, 512 * page, MREMAP_MAYMOVE);
    printf("mremap_maymove ok %s kept %s tail_zero %s\n", yesno(b != MAP_FAILED), yesno(b != MAP_FAILED && check(b, 64 * page, 9)),
           yesno(b != MAP_FAILED && all_zero(b + 64 * page, 448 * page)));
    if (b == MAP_FAILED) die("mremap");

    /* mremap shrink in place. */
    unsigned char *c = mremap(b, 512 * page, 32 * page, 0);
    printf("mremap_shrink in_place %s kept %s\n", yesno(c == b), yesno(c != MAP_FAILED && check(c, 32 * page, 9)));
    if (c == MAP_FAILED) die("mremap");

    /* MREMAP_FIXED: the 5th, variadic argument is the destination. */
    unsigned char *target = mmap(NULL, 128 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (target == MAP_FAILED) die("mmap target");
    unsigned char *d = mremap(c, 32 * page, 128 * page, MREMAP_MAYMOVE | MREMAP_FIXED, target);
    printf("mremap_fixed at_target %s kept %s tail_zero %s\n", yesno(d == target), yesno(d != MAP_FAILED && check(d, 32 * page, 9)),
           yesno(d != MAP_FAILED && all_zero(d + 32 * page, 96 * page)));
    if (d == MAP_FAILED) die("mremap fixed");
    d[128 * page - 1] = 1; /* writable: the PROT_NONE reservation was replaced */

    /* MREMAP_DONTUNMAP: the pages move, the old range stays mapped and empty.
     * glibc reads the variadic new_address for this flag too (NULL: no hint). */
    unsigned char *src = mmap(NULL, 8 * page, rw, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (src == MAP_FAILED) die("mmap");
    fill(src, 8 * page, 12);
    unsigned char *moved = mremap(src, 8 * page, 8 * page, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, NULL);
    printf("mremap_dontunmap ok %s moved %s kept %s old_empty %s\n", yesno(moved != MAP_FAILED), yesno(moved != src),
           yesno(moved != MAP_FAILED && check(moved, 8 * page, 12)), yesno(moved != MAP_FAILED && all_zero(src, 8 * page)));
    if (moved != MAP_FAILED) munmap(moved, 8 * page);
    munmap(src, 8 * page);

    /* mremap errors. */
    set_errno(0);
    void *e1 = mremap(d, 128 * page, 256 * page, MREMAP_FIXED, target + 1024 * page);
    printf("mremap_fixed_without_maymove failed %s errno %d\n", yesno(e1 == MAP_FAILED), get_errno());
    set_errno(0);
    void *e2 = mremap(d + 1, page, 2 * page, MREMAP_MAYMOVE);
    printf("mremap_unaligned failed %s errno %d\n", yesno(e2 == MAP_FAILED), get_errno());
    set_errno(0);
    int rc = munmap(d, 128 * page);
    printf("munmap rc %d errno %d\n", rc, get_errno());

    /* MAP_FIXED over part of an existing mapping. */
    unsigned char *r = mmap(NULL, 16 * page, rw, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED) die("mmap");
    memset(r, 0x11, 16 * page);
    unsigned char *f = mmap(r + 4 * page, 4 * page, rw, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    printf("mmap_fixed at_addr %s new_zero %s rest_kept %s\n", yesno(f == r + 4 * page), yesno(f != MAP_FAILED && all_zero(f, 4 * page)),
           yesno(r[0] == 0x11 && r[8 * page] == 0x11 && r[16 * page - 1] == 0x11));
    munmap(r, 16 * page);

    /* Shared anonymous: a child's write is visible to the parent... tested
     * here without fork: two views through mremap(old_len 0) duplicate. */
    unsigned char *s = mmap(NULL, 8 * page, rw, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    printf("mmap_anon_shared ok %s zero %s\n", yesno(s != MAP_FAILED), yesno(s != MAP_FAILED && all_zero(s, 8 * page)));
    if (s == MAP_FAILED) die("mmap shared");
    unsigned char *s2 = mremap(s, 0, 8 * page, MREMAP_MAYMOVE);
    if (s2 == MAP_FAILED) die("mremap dup");
    fill(s, 8 * page, 4);
    printf("mmap_anon_shared second_view_sees_writes %s distinct %s\n", yesno(check(s2, 8 * page, 4)), yesno(s2 != s));
    munmap(s2, 8 * page);
    munmap(s, 8 * page);

    /* Files: private and shared, mmap and mmap64 with an offset. */
    char path[] = "/tmp/ksmauto-hooks-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) die("mkstemp");
    unlink(path);
    unsigned char *buf = malloc(16 * page);
    if (!buf) die("malloc");
    fill(buf, 16 * page, 21);
    if (write(fd, buf, 16 * page) != (ssize_t)(16 * page)) die("write");

    unsigned char *fp = mmap(NULL, 16 * page, rw, MAP_PRIVATE, fd, 0);
    printf("mmap_file_private ok %s content %s\n", yesno(fp != MAP_FAILED), yesno(fp != MAP_FAILED && check(fp, 16 * page, 21)));
    if (fp == MAP_FAILED) die("mmap file");
    memset(fp, 0, page); /* copy-on-write: the file keeps its bytes */
    unsigned char first[16];
    if (pread(fd, first, sizeof first, 0) != (ssize_t)sizeof first) die("pread");
    printf("mmap_file_private cow_file_unchanged %s\n", yesno(check(first, sizeof first, 21)));
    munmap(fp, 16 * page);

    unsigned char *fs = mmap64(NULL, 8 * page, rw, MAP_SHARED, fd, (off64_t)(8 * page));
    printf("mmap64_file_shared_offset ok %s content %s\n", yesno(fs != MAP_FAILED),
           yesno(fs != MAP_FAILED && memcmp(fs, buf + 8 * page, 8 * page) == 0));
    if (fs == MAP_FAILED) die("mmap64 file");
    fs[0] = 0xEE;
    msync(fs, page, MS_SYNC);
    unsigned char byte = 0;
    if (pread(fd, &byte, 1, (off_t)(8 * page)) != 1) die("pread");
    printf("mmap64_file_shared write_reaches_file %s\n", yesno(byte == 0xEE));
    munmap(fs, 8 * page);

    /* A file mapping grown with mremap past the file's end. */
    unsigned char *fg = mmap(NULL, 4 * page, PROT_READ, MAP_PRIVATE, fd, 0);
    if (fg == MAP_FAILED) die("mmap file");
    unsigned char *fg2 = mremap(fg, 4 * page, 16 * page, MREMAP_MAYMOVE);
    printf("mremap_file ok %s content %s\n", yesno(fg2 != MAP_FAILED), yesno(fg2 != MAP_FAILED && check(fg2 + page, 16, (unsigned)(page * 31 + 21))));
    if (fg2 != MAP_FAILED) munmap(fg2, 16 * page);
    free(buf);
    close(fd);

    /* Failures. */
    set_errno(0);
    void *m0 = mmap(NULL, 0, rw, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("mmap_len0 failed %s errno %d einval %s\n", yesno(m0 == MAP_FAILED), get_errno(), yesno(get_errno() == EINVAL));
    set_errno(0);
    m0 = mmap64(NULL, 0, rw, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("mmap64_len0 failed %s errno %d\n", yesno(m0 == MAP_FAILED), get_errno());
    set_errno(0);
    m0 = mmap(NULL, page, rw, MAP_PRIVATE, -1, 0);
    printf("mmap_bad_fd failed %s errno %d\n", yesno(m0 == MAP_FAILED), get_errno());
    set_errno(0);
    m0 = mmap(NULL, page, rw, MAP_ANONYMOUS, -1, 0);
    printf("mmap_no_type failed %s errno %d\n", yesno(m0 == MAP_FAILED), get_errno());
    set_errno(0);
    rc = munmap((void *)(uintptr_t)(page + 1), page);
    printf("munmap_unaligned rc %d errno %d\n", rc, get_errno());
}

struct job {
    unsigned seed;
    size_t size;
    unsigned long sum;
    int errno_at_start;
};

static void *worker(void *arg) {
    struct job *j = arg;
    j->errno_at_start = get_errno();
    unsigned char *p = malloc(j->size);
    if (!p) return NULL;
    fill(p, j->size, j->seed);
    unsigned long sum = 0;
    for (size_t i = 0; i < j->size; i++) sum += p[i];
    free(p);
    j->sum = sum;
    set_errno(77); /* each thread has its own errno */
    return (void *)(uintptr_t)(j->seed * 1000 + (get_errno() == 77));
}

static void threads(void) {
    struct job jobs[3] = {{1, 1000, 0, -1}, {2, 300 * 1024, 0, -1}, {3, 5 * MiB, 0, -1}};
    pthread_t t[3];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * KiB);
    for (int i = 0; i < 3; i++) {
        set_errno(4242);
        int rc = pthread_create(&t[i], i == 1 ? &attr : NULL, worker, &jobs[i]);
        printf("pthread_create %d rc %d errno %d\n", i, rc, get_errno());
        if (rc) exit(2);
    }
    /* A stack that cannot be mapped: the error comes back, nothing runs. */
    pthread_t never;
    pthread_attr_setstacksize(&attr, (size_t)1 << 46);
    struct job j = {4, 10, 0, -1};
    int rc = pthread_create(&never, &attr, worker, &j);
    printf("pthread_create_huge_stack rc %d eagain %s never_started %s\n", rc, yesno(rc == EAGAIN), yesno(j.errno_at_start == -1));
    if (rc == 0) pthread_join(never, NULL);
    pthread_attr_destroy(&attr);
    for (int i = 0; i < 3; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        printf("pthread_join %d ret %lu sum %lu errno_at_start %d\n", i, (unsigned long)(uintptr_t)ret, jobs[i].sum,
               jobs[i].errno_at_start);
    }
}

/* C11 threads: results through return and through thrd_exit, errno apart. */
static int c11_worker(void *arg) {
    struct job *j = arg;
    int r = (int)(uintptr_t)worker(arg);
    if (j->seed == 6) thrd_exit(r + 1);
    return r;
}

static void c11_threads(void) {
    struct job jobs[2] = {{5, 2000, 0, -1}, {6, 200 * 1024, 0, -1}};
    thrd_t t[2];
    for (int i = 0; i < 2; i++) {
        set_errno(4343);
        int rc = thrd_create(&t[i], c11_worker, &jobs[i]);
        printf("thrd_create %d success %s errno %d\n", i, yesno(rc == thrd_success), get_errno());
        if (rc != thrd_success) exit(2);
    }
    for (int i = 0; i < 2; i++) {
        int res = -1;
        int rc = thrd_join(t[i], &res);
        printf("thrd_join %d success %s res %d sum %lu errno_at_start %d\n", i, yesno(rc == thrd_success), res,
               jobs[i].sum, jobs[i].errno_at_start);
    }
}

/* ------------------------------------------------------------------------ */
/* bigblocks: large glibc blocks seen through /proc/self/smaps. Parsed with
 * read() into a static buffer, so measuring allocates nothing. */

static char smaps[8 << 20];

static size_t read_smaps(void) {
    int fd = open("/proc/self/smaps", O_RDONLY);
    if (fd < 0) die("open smaps");
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, smaps + n, sizeof smaps - 1 - n);
        if (r < 0) die("read smaps");
        if (r == 0) break;
        n += (size_t)r;
        if (n == sizeof smaps - 1) die("smaps too big");
    }
    smaps[n] = 0;
    close(fd);
    return n;
}

static int is_vma_header(const char *line, uintptr_t *start, uintptr_t *end) {
    char *dash;
    unsigned long long s = strtoull(line, &dash, 16);
    if (dash == line || *dash != '-') return 0;
    char *sp;
    unsigned long long e = strtoull(dash + 1, &sp, 16);
    if (sp == dash + 1 || *sp != ' ') return 0;
    *start = (uintptr_t)s;
    *end = (uintptr_t)e;
    return 1;
}

struct vma_facts {
    int vmas;       /* VMAs in the process */
    int found;      /* a VMA contains the block's first byte */
    int covers;     /* ...and its last byte */
    int mergeable;  /* ...and its VmFlags have `mg` */
    uintptr_t start, end; /* the bounds of that VMA */
};

static struct vma_facts inspect(const void *block, size_t size) {
    struct vma_facts f = {0, 0, 0, 0, 0, 0};
    read_smaps();
    uintptr_t lo = (uintptr_t)block, hi = lo + size;
    int in_block_vma = 0;
    for (char *line = smaps; *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        uintptr_t s, e;
        if (is_vma_header(line, &s, &e)) {
            f.vmas++;
            in_block_vma = s <= lo && lo < e;
            if (in_block_vma) {
                f.found = 1;
                f.covers = hi <= e;
                f.start = s;
                f.end = e;
            }
        } else if (in_block_vma && strncmp(line, "VmFlags:", 8) == 0) {
            char flags[256];
            snprintf(flags, sizeof flags, "%s ", line + 8);
            f.mergeable = strstr(flags, " mg ") != NULL;
        }
        if (!nl) break;
        line = nl + 1;
    }
    return f;
}

static int vma_count(void) { return inspect(NULL, 0).vmas; }

/* What smaps says of the block past its first page: glibc writes its header
   there, and in advise mode a block that extends a run of mappings downwards
   keeps that page unadvised as the run's growing edge (see
   docs/how-it-works.md, "Growth edges"). */
static struct vma_facts inspect_past_header(const void *block, size_t size) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t past_header = ((uintptr_t)block + page) & ~(page - 1);
    return inspect((const void *)past_header, (uintptr_t)block + size - past_header);
}

/* The blocks reported so far that are still allocated. */
static const void *live_blocks[8];
static size_t live_sizes[8];
static int live;

/* Whether the page holding the block's header is a one-page VMA of its own
   below the VMA of the rest of the block: the growing edge of a run of
   mappings growing downwards, which the catch-up leaves unadvised by design
   (one extra VMA per run, not per block). */
static int header_page_is_an_edge(const void *block, size_t size) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t header_page = (uintptr_t)block & ~(page - 1);
    struct vma_facts rest = inspect_past_header(block, size);
    struct vma_facts head = inspect((const void *)header_page, 1);
    return head.found && rest.found && head.start != rest.start && head.start == header_page &&
           head.end == header_page + page;
}

/* `block` is allocated: the reports count its growth edge. */
static void track(const void *block, size_t size) {
    if (live == 8) die("track: too many blocks");
    live_blocks[live] = block;
    live_sizes[live++] = size;
}

static void report(const char *name, const void *block, size_t size, int base) {
    struct vma_facts f = inspect_past_header(block, size);
    int edges = 0;
    for (int i = 0; i < live; i++) edges += header_page_is_an_edge(live_blocks[i], live_sizes[i]);
    printf("%s found %s\n", name, yesno(f.found));
    printf("%s covers %s\n", name, yesno(f.covers));
    printf("%s mergeable %s\n", name, yesno(f.mergeable));
    printf("%s vma_growth %d live_blocks %d growth_edges %d\n", name, f.vmas - base, live, edges);
}

/* `block` was reallocated to `moved`: the report follows it. */
static void moved(const void *block, const void *moved_to, size_t size) {
    for (int i = 0; i < live; i++)
        if (live_blocks[i] == block) {
            live_blocks[i] = moved_to;
            live_sizes[i] = size;
        }
}

/* Goes idle (sleeps) until the block's VMA is mergeable, at most 1 s: in
   advise mode the catch-up advises glibc's own mappings when a thread is
   about to block. */
static void settle(const void *block, size_t size) {
    for (int i = 0; i < 100 && !inspect_past_header(block, size).mergeable; i++) usleep(10000);
}

static void bigblocks(void) {
    printf("bigblocks start\n");
    fflush(stdout); /* stdio's buffer exists before the baseline */
    int base = vma_count();

    unsigned char *m = malloc(1 * MiB);
    if (!m) die("malloc");
    memset(m, 1, 1 * MiB);
    settle(m, 1 * MiB);
    track(m, 1 * MiB);
    report("malloc_1MiB", m, 1 * MiB, base);

    unsigned char *c = calloc(3, 1 * MiB);
    if (!c) die("calloc");
    settle(c, 3 * MiB);
    track(c, 3 * MiB);
    report("calloc_3MiB", c, 3 * MiB, base);

    void *pm = NULL;
    if (posix_memalign(&pm, 64 * KiB, 1 * MiB)) die("posix_memalign");
    memset(pm, 2, 1 * MiB);
    settle(pm, 1 * MiB);
    track(pm, 1 * MiB);
    report("posix_memalign_64KiB_1MiB", pm, 1 * MiB, base);

    unsigned char *r = malloc(1 * MiB);
    if (!r) die("malloc");
    fill(r, 1 * MiB, 8);
    settle(r, 1 * MiB);
    track(r, 1 * MiB);
    report("realloc_before_1MiB", r, 1 * MiB, base);
    unsigned char *grown = realloc(r, 8 * MiB);
    if (!grown) die("realloc");
    moved(r, grown, 8 * MiB);
    r = grown;
    printf("realloc_8MiB kept %s\n", yesno(check(r, 1 * MiB, 8)));
    settle(r, 8 * MiB);
    report("realloc_8MiB", r, 8 * MiB, base);

    free(r);
    free(pm);
    free(c);
    free(m);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "bigblocks") == 0) {
        bigblocks();
        return 0;
    }
    malloc_family();
    aligned_family();
    errno_preservation();
    mappings();
    threads();
    c11_threads();
    return 0;
}
