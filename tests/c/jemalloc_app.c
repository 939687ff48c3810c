/*
 * A program linked with jemalloc (-ljemalloc): proves at run time that the
 * malloc it calls is jemalloc's, then runs heavy mixed-size allocation on 4
 * threads with content checks. Prints deterministic "key value" lines; run
 * with and without the preload, the output must match (tests/jemalloc.rs).
 *
 * Exit status 0 when every check passed, 1 when one failed (the output says
 * which), 2 when the program could not run.
 */
#define _GNU_SOURCE
#include <jemalloc/jemalloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define THREADS 4
#define SLOTS 512
#define ITERATIONS 60000

__attribute__((noipa)) static void *keep(void *p) { return p; }

static const char *yesno(int b) { return b ? "yes" : "no"; }

static uint64_t thread_allocated(void) {
    uint64_t v = 0;
    size_t sz = sizeof v;
    if (mallctl("thread.allocated", &v, &sz, NULL, 0) != 0) return 0;
    return v;
}

/* Is the `malloc` this program calls jemalloc's? Three independent signs. */
static int check_allocator(void) {
    const char *version = NULL;
    size_t sz = sizeof version;
    int version_ok = mallctl("version", &version, &sz, NULL, 0) == 0 && version && version[0];
    printf("mallctl_version ok %s\n", yesno(version_ok));

    /* jemalloc's size classes: 100 bytes live in the 112-byte class (glibc
     * would report 104). */
    void *p = keep(malloc(100));
    size_t usable = malloc_usable_size(p);
    printf("usable_size_of_100 %zu\n", usable);
    /* sallocx is jemalloc-only: it only answers for jemalloc's blocks. */
    printf("sallocx_of_100 %zu\n", p ? sallocx(p, 0) : 0);
    free(p);

    /* jemalloc counts what this thread allocated: a 1 MiB malloc must show. */
    uint64_t before = thread_allocated();
    void *big = keep(malloc(1 << 20));
    uint64_t after = thread_allocated();
    int counted = big && after - before >= (1 << 20);
    printf("thread_allocated_counts_malloc %s\n", yesno(counted));
    free(big);
    return version_ok && usable == 112 && counted;
}

static uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

struct slot {
    unsigned char *p;
    size_t size;
    unsigned char tag;
};

static void fill(struct slot *s) {
    for (size_t i = 0; i < s->size; i++) s->p[i] = (unsigned char)(s->tag + i * 7);
}

static int intact(const struct slot *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s->p[i] != (unsigned char)(s->tag + i * 7)) return 0;
    return 1;
}

static uint64_t digest(const struct slot *s) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < s->size; i += 61) h = (h ^ s->p[i]) * 1099511628211ull;
    return h ^ s->size;
}

struct worker {
    int id;
    unsigned long errors;
    uint64_t checksum;
    unsigned long ops;
};

static size_t pick_size(uint64_t *rng) {
    uint64_t r = xorshift(rng);
    unsigned bucket = (unsigned)(r % 1000);
    if (bucket < 2) return (size_t)(1 << 20) + (r >> 10) % (3 << 20);    /* 1-4 MiB */
    if (bucket < 20) return 64 * 1024 + (r >> 10) % (448 * 1024);        /* 64-512 KiB */
    if (bucket < 250) return 1024 + (r >> 10) % (63 * 1024);             /* 1-64 KiB */
    return 1 + (r >> 10) % 1024;                                         /* small */
}

static void *work(void *arg) {
    struct worker *w = arg;
    struct slot slots[SLOTS];
    memset(slots, 0, sizeof slots);
    uint64_t rng = 0x9E3779B97F4A7C15ull * (uint64_t)(w->id + 1);
    for (unsigned long it = 0; it < ITERATIONS; it++) {
        uint64_t r = xorshift(&rng);
        struct slot *s = &slots[r % SLOTS];
        if (s->p) {
            if (!intact(s, s->size)) w->errors++;
            w->checksum += digest(s);
            if ((r >> 20) % 4 == 0) {
                /* Resize: the common prefix must survive. */
                size_t n = pick_size(&rng);
                unsigned char *q = realloc(s->p, n);
                if (!q) { w->errors++; continue; }
                s->p = q;
                size_t keep_n = n < s->size ? n : s->size;
                if (!intact(s, keep_n)) w->errors++;
                s->size = n;
                fill(s);
            } else {
                free(s->p);
                s->p = NULL;
            }
        } else {
            size_t n = pick_size(&rng);
            s->tag = (unsigned char)(r >> 32);
            s->size = n;
            switch ((r >> 40) % 5) {
            case 0:
                s->p = calloc(1, n);
                if (s->p)
                    for (size_t i = 0; i < n; i += 97)
                        if (s->p[i]) { w->errors++; break; }
                break;
            case 1: {
                void *p = NULL;
                if (posix_memalign(&p, 64, n) == 0) s->p = p;
                if (s->p && (uintptr_t)s->p % 64) w->errors++;
                break;
            }
            case 2:
                s->p = aligned_alloc(4096, (n + 4095) / 4096 * 4096);
                s->size = (n + 4095) / 4096 * 4096;
                if (s->p && (uintptr_t)s->p % 4096) w->errors++;
                break;
            default:
                s->p = malloc(n);
            }
            if (!s->p) { w->errors++; continue; }
            if (malloc_usable_size(s->p) < s->size) w->errors++;
            fill(s);
        }
        w->ops++;
    }
    for (int i = 0; i < SLOTS; i++) {
        if (slots[i].p) {
            if (!intact(&slots[i], slots[i].size)) w->errors++;
            w->checksum += digest(&slots[i]);
            free(slots[i].p);
            slots[i].p = NULL;
        }
    }
    return NULL;
}

int main(void) {
    int ok = check_allocator();
    printf("allocator_is_jemalloc %s\n", yesno(ok));

    /* A direct anonymous mapping next to jemalloc's own. */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char *m = mmap(NULL, 256 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) { perror("mmap"); return 2; }
    memset(m, 0x3C, 256 * page);
    printf("mmap_ok %s\n", yesno(m[0] == 0x3C && m[256 * page - 1] == 0x3C));
    munmap(m, 256 * page);

    struct worker w[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){.id = i};
        if (pthread_create(&t[i], NULL, work, &w[i])) { perror("pthread_create"); return 2; }
    }
    unsigned long errors = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        printf("thread %d ops %lu errors %lu checksum %016llx\n", i, w[i].ops, w[i].errors, (unsigned long long)w[i].checksum);
        errors += w[i].errors;
    }
    printf("errors %lu\n", errors);
    return ok && errors == 0 ? 0 : 1;
}
