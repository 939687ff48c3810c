/*
 * A small malloc replacement, built as a shared object and preloaded
 * (tests/allocators.rs). By default it is deliberately incomplete: it
 * defines only malloc, free, malloc_usable_size and one aligned allocator:
 * posix_memalign, or aligned_alloc when built with -DTINY_ALIGNED_ALLOC.
 * Everything else — calloc, realloc, reallocarray, memalign, valloc, pvalloc
 * and the other aligned one — is left to libksmauto, which must build it
 * from these functions rather than take glibc's (glibc's realloc or free on
 * one of these blocks would corrupt both heaps). Built with -DTINY_COMPLETE
 * it defines the whole family itself.
 *
 * It recognises its own blocks: free, malloc_usable_size or anything else
 * handed a pointer it did not make prints "tiny_allocator: foreign pointer"
 * and exits with status 99, so mixing allocators is caught at once.
 *
 * Blocks: small ones (< 256 KiB) are carved from one reserved region and
 * never reused; big ones get a mapping of their own, unmapped by free, that
 * starts with inaccessible pages, so whoever reads "a glibc chunk header"
 * before such a block crashes. Like tcmalloc and mimalloc, it exports
 * __libc_malloc as an alias of its malloc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))
#define SMALL_LIMIT ((size_t)256 << 10)
#define REGION_SIZE ((size_t)4 << 30) /* reserved, not committed */
#define MAX_BIG 1024
#define HEADER 32 /* size, alignment slack; keeps 16-byte alignment */

static char *region;
static size_t region_used;
static uintptr_t big_blocks[MAX_BIG]; /* user pointers of live big blocks */
static uintptr_t big_mappings[MAX_BIG];
static size_t big_lengths[MAX_BIG];
static size_t big_sizes[MAX_BIG];
static char big_lock;

static void lock(void) { while (__atomic_test_and_set(&big_lock, __ATOMIC_ACQUIRE)) sched_yield(); }
static void unlock(void) { __atomic_clear(&big_lock, __ATOMIC_RELEASE); }

static void foreign(const char *who) {
    static const char msg[] = "tiny_allocator: foreign pointer passed to ";
    write(2, msg, sizeof msg - 1);
    write(2, who, strlen(who));
    write(2, "\n", 1);
    _exit(99);
}

/* The block's size lives in the word before it. */
static size_t *size_slot(void *p) { return (size_t *)p - 1; }

static void *small_block(size_t size, size_t align) {
    lock();
    if (!region) {
        void *r = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (r == MAP_FAILED) { unlock(); return NULL; }
        region = r;
    }
    uintptr_t user = ((uintptr_t)region + region_used + HEADER + align - 1) & ~(uintptr_t)(align - 1);
    size_t end = user + size - (uintptr_t)region;
    if (end > REGION_SIZE) { unlock(); return NULL; }
    region_used = (end + 15) & ~(size_t)15;
    unlock();
    *size_slot((void *)user) = size;
    return (void *)user;
}

static void *big_block(size_t size, size_t align) {
    size_t page = 4096;
    if (align < page) align = page;
    if (size > SIZE_MAX / 2) return NULL;
    size_t len = (size + align + page + page - 1) & ~(page - 1);
    char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    uintptr_t user = ((uintptr_t)m + page + align - 1) & ~(uintptr_t)(align - 1);
    if (mprotect(m, user - (uintptr_t)m, PROT_NONE) != 0) {
        munmap(m, len);
        return NULL;
    }
    lock();
    for (int i = 0; i < MAX_BIG; i++) {
        if (!big_blocks[i]) {
            big_blocks[i] = user;
            big_mappings[i] = (uintptr_t)m;
            big_lengths[i] = len;
            big_sizes[i] = size;
            unlock();
            return (void *)user;
        }
    }
    unlock();
    munmap(m, len);
    return NULL;
}

static void *allocate(size_t size, size_t align) {
    void *p = size < SMALL_LIMIT && align <= 4096 ? small_block(size, align < 16 ? 16 : align)
                                                  : big_block(size, align);
    if (!p) errno = ENOMEM;
    return p;
}

/* Index of big block p, -1 when p is small, -2 when it is not ours. */
static int classify(void *p) {
    uintptr_t u = (uintptr_t)p;
    if (region && u >= (uintptr_t)region + HEADER && u < (uintptr_t)region + region_used) return -1;
    lock();
    for (int i = 0; i < MAX_BIG; i++) {
        if (big_blocks[i] == u) { unlock(); return i; }
    }
    unlock();
    return -2;
}

EXPORT void *malloc(size_t size) { return allocate(size, 16); }

EXPORT void free(void *p) {
    if (!p) return;
    int i = classify(p);
    if (i == -2) foreign("free");
    if (i >= 0) {
        lock();
        void *m = (void *)big_mappings[i];
        size_t len = big_lengths[i];
        big_blocks[i] = 0;
        unlock();
        munmap(m, len);
    }
}

EXPORT void *__libc_malloc(size_t size) __attribute__((alias("malloc")));

EXPORT size_t malloc_usable_size(void *p) {
    if (!p) return 0;
    int i = classify(p);
    if (i == -2) foreign("malloc_usable_size");
    return i >= 0 ? big_sizes[i] : *size_slot(p);
}

#if defined TINY_ALIGNED_ALLOC || defined TINY_COMPLETE
EXPORT void *aligned_alloc(size_t align, size_t size) {
    if (!align || (align & (align - 1))) { errno = EINVAL; return NULL; }
    return allocate(size, align);
}
#endif
#if !defined TINY_ALIGNED_ALLOC || defined TINY_COMPLETE
EXPORT int posix_memalign(void **out, size_t align, size_t size) {
    if (!align || (align & (align - 1)) || align % sizeof(void *)) return EINVAL;
    int saved = errno;
    void *p = allocate(size, align);
    errno = saved;
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
#endif

#ifdef TINY_COMPLETE
EXPORT void *calloc(size_t n, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) { errno = ENOMEM; return NULL; }
    void *p = malloc(total);
    if (p) memset(p, 0, total);
    return p;
}

EXPORT void *realloc(void *p, size_t size) {
    if (!p) return malloc(size);
    size_t old = malloc_usable_size(p);
    void *q = malloc(size);
    if (!q) return NULL;
    memcpy(q, p, old < size ? old : size);
    free(p);
    return q;
}

EXPORT void *reallocarray(void *p, size_t n, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) { errno = ENOMEM; return NULL; }
    return realloc(p, total);
}

static size_t power_of_two_at_least(size_t a) {
    size_t p = 16;
    while (p < a) p <<= 1;
    return p;
}

EXPORT void *memalign(size_t align, size_t size) { return allocate(size, power_of_two_at_least(align)); }
EXPORT void *valloc(size_t size) { return allocate(size, 4096); }
EXPORT void *pvalloc(size_t size) { return allocate((size + 4095) & ~(size_t)4095, 4096); }
#endif
