/*
 * The control for scripts/bench-overhead: an LD_PRELOAD library that
 * interposes the same allocation and mapping functions as libksmauto and
 * does nothing but forward them to the next definition (dlsym RTLD_NEXT).
 * Its cost is what any forwarding preload costs; libksmauto's cost above it
 * is its own.
 *
 *   cc -O2 -shared -fPIC -o forward.so benches/forward.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/types.h>

/* dlsym may call calloc before calloc is resolved: serve that from here. */
static char bootstrap[4096] __attribute__((aligned(16)));
static size_t bootstrap_used;

static void *(*next_malloc)(size_t);
static void *(*next_calloc)(size_t, size_t);
static void *(*next_realloc)(void *, size_t);
static void (*next_free)(void *);
static int (*next_posix_memalign)(void **, size_t, size_t);
static void *(*next_aligned_alloc)(size_t, size_t);
static void *(*next_memalign)(size_t, size_t);
static void *(*next_mmap)(void *, size_t, int, int, int, off_t);
static int (*next_munmap)(void *, size_t);
static int resolving;

static void resolve(void) {
    resolving = 1;
    next_malloc = dlsym(RTLD_NEXT, "malloc");
    next_calloc = dlsym(RTLD_NEXT, "calloc");
    next_realloc = dlsym(RTLD_NEXT, "realloc");
    next_free = dlsym(RTLD_NEXT, "free");
    next_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    next_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
    next_memalign = dlsym(RTLD_NEXT, "memalign");
    next_mmap = dlsym(RTLD_NEXT, "mmap");
    next_munmap = dlsym(RTLD_NEXT, "munmap");
    resolving = 0;
}

static int is_bootstrap(void *p) { return (char *)p >= bootstrap && (char *)p < bootstrap + sizeof bootstrap; }

void *malloc(size_t n) {
    if (!next_malloc) resolve();
    return next_malloc(n);
}

void *calloc(size_t n, size_t s) {
    if (!next_calloc) {
        if (resolving) {
            void *p = bootstrap + bootstrap_used;
            bootstrap_used += (n * s + 15) & ~(size_t)15;
            return p;
        }
        resolve();
    }
    return next_calloc(n, s);
}

void *realloc(void *p, size_t n) {
    if (!next_realloc) resolve();
    return next_realloc(p, n);
}

void free(void *p) {
    if (is_bootstrap(p)) return;
    if (!next_free) resolve();
    next_free(p);
}

int posix_memalign(void **out, size_t a, size_t n) {
    if (!next_posix_memalign) resolve();
    return next_posix_memalign(out, a, n);
}

void *aligned_alloc(size_t a, size_t n) {
    if (!next_aligned_alloc) resolve();
    return next_aligned_alloc(a, n);
}

void *memalign(size_t a, size_t n) {
    if (!next_memalign) resolve();
    return next_memalign(a, n);
}

void *mmap(void *a, size_t n, int prot, int flags, int fd, off_t off) {
    if (!next_mmap) resolve();
    return next_mmap(a, n, prot, flags, fd, off);
}

int munmap(void *a, size_t n) {
    if (!next_munmap) resolve();
    return next_munmap(a, n);
}
