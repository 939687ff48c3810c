/*
 * Mixed allocation loop, the workload of the hot-path instruction count
 * (tests/overhead.rs, scripts/bench-overhead --instructions): THREADS threads
 * (default 2) each run ITERATIONS iterations, and every iteration is exactly
 * one allocator call — malloc, calloc, realloc or free — on a block of one of
 * three classes:
 *   small   16 - 511 B        97.0% of the calls, up to 1024 live per thread
 *   medium  4 - 64 KiB         2.5%, up to 16 live
 *   large   256 KiB - 1 MiB    0.5%, up to 4 live
 * An empty slot gets a block (a small one by calloc one time in three); a
 * full one is freed or, if small, one time in four resized by realloc.
 * Bigger blocks are neither zeroed nor resized: glibc zeroes and copies them
 * with `rep stosb`/`rep movsb`, which valgrind counts one instruction per
 * byte, so the count would follow the heap's layout (does this realloc grow
 * in place or move?), and a preload that shifts the layout by a few bytes —
 * one allocation of its own in a thread's arena — would change it by more
 * than its hooks cost. Blocks are tagged at both ends and checked before
 * they are freed or resized.
 *
 * Large blocks come from the heap, as they do in any long-running program
 * under glibc's defaults: the first free of a block glibc mapped itself
 * raises its mmap threshold above that block's size. main() does that free
 * before the threads start; left to the threads, which of them raises the
 * threshold when, and so which blocks are mapped, copied or resized in place,
 * would depend on the scheduler, and the instruction count with it (by
 * millions under valgrind). With "mapped" as fourth argument the threshold is
 * instead fixed at glibc's default 128 KiB: every large block is then one
 * glibc maps and unmaps itself (the costliest path for a library that
 * advises blocks).
 *
 *   alloc_mix ITERATIONS [THREADS] [SEED] [heap|mapped]
 * Output: "calls N" (every allocator call the program made itself, set-up and
 *         teardown included: exact, so the difference between two runs is
 *         exactly the difference in calls), "failures N" (NULL from an
 *         allocation), "corrupt N" (a tag overwritten), "checksum X"
 *         (deterministic for the arguments). Exit status 0 when failures
 *         and corrupt are 0.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SMALL_SLOTS 1024
#define MEDIUM_SLOTS 16
#define LARGE_SLOTS 4
#define SLOTS (SMALL_SLOTS + MEDIUM_SLOTS + LARGE_SLOTS)
#define MAX_THREADS 64

struct worker {
    unsigned long iterations;
    uint64_t seed;
    unsigned long calls, failures, corrupt;
    uint64_t checksum;
};

static uint64_t next_rand(uint64_t *s) { *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17; return *s; }

/* A size of the class slot k belongs to. */
static size_t size_for(unsigned k, uint64_t r) {
    if (k < SMALL_SLOTS) return 16 + r % 496;
    if (k < SMALL_SLOTS + MEDIUM_SLOTS) return (4u << 10) + r % (60u << 10);
    return (256u << 10) + r % (768u << 10);
}

/* The slot one iteration works on: 97% small, 2.5% medium, 0.5% large. */
static unsigned pick_slot(uint64_t r) {
    unsigned class = r % 1000;
    r >>= 10;
    if (class < 970) return r % SMALL_SLOTS;
    if (class < 995) return SMALL_SLOTS + r % MEDIUM_SLOTS;
    return SMALL_SLOTS + MEDIUM_SLOTS + r % LARGE_SLOTS;
}

static unsigned char tag_of(unsigned k, size_t n) { return (unsigned char)(k * 31 + n); }

static void *work(void *arg) {
    struct worker *w = arg;
    unsigned char **slot = calloc(SLOTS, sizeof *slot);
    size_t *len = calloc(SLOTS, sizeof *len);
    w->calls += 2;
    if (!slot || !len) {
        w->failures++;
        return NULL;
    }
    uint64_t s = w->seed;
    for (unsigned long i = 0; i < w->iterations; i++) {
        uint64_t r = next_rand(&s);
        unsigned k = pick_slot(r);
        unsigned choice = (r >> 40) % 12; /* independent of the slot's bits */
        w->calls++;
        if (slot[k]) {
            unsigned char *p = slot[k];
            if (p[0] != tag_of(k, len[k]) || p[len[k] - 1] != tag_of(k, len[k])) w->corrupt++;
            w->checksum += len[k];
            if (k < SMALL_SLOTS && choice < 3) {
                size_t n = size_for(k, next_rand(&s));
                p = realloc(p, n);
                if (!p) { w->failures++; continue; }
                slot[k] = p;
                len[k] = n;
                p[0] = p[n - 1] = tag_of(k, n);
            } else {
                free(p);
                slot[k] = NULL;
            }
        } else {
            size_t n = size_for(k, next_rand(&s));
            unsigned char *p = choice < 4 && k < SMALL_SLOTS ? calloc(1, n) : malloc(n);
            if (!p) { w->failures++; continue; }
            p[0] = p[n - 1] = tag_of(k, n);
            slot[k] = p;
            len[k] = n;
        }
    }
    for (unsigned k = 0; k < SLOTS; k++)
        if (slot[k]) {
            free(slot[k]);
            w->calls++;
        }
    free(slot);
    free(len);
    w->calls += 2;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: alloc_mix ITERATIONS [THREADS] [SEED] [heap|mapped]\n");
        return 2;
    }
    unsigned long iterations = strtoul(argv[1], NULL, 10);
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    uint64_t seed = argc > 3 ? strtoull(argv[3], NULL, 10) : 42;
    if (threads < 1 || threads > MAX_THREADS) {
        fprintf(stderr, "alloc_mix: 1 to %d threads\n", MAX_THREADS);
        return 2;
    }
    unsigned long calls = 0, failures = 0, corrupt = 0;
    if (argc > 4 && strcmp(argv[4], "mapped") == 0) {
        mallopt(M_MMAP_THRESHOLD, 128 << 10);
    } else {
        /* mapped by glibc; its free raises the threshold (volatile: a
           malloc/free pair the compiler could see through would be elided) */
        void *volatile first = malloc(1 << 20);
        free(first);
        calls += 2;
    }
    pthread_t t[MAX_THREADS];
    struct worker w[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        w[i] = (struct worker){ .iterations = iterations, .seed = seed * 1000003 + i + 1 };
        if (pthread_create(&t[i], NULL, work, &w[i]) != 0) {
            fprintf(stderr, "alloc_mix: pthread_create failed\n");
            return 2;
        }
    }
    uint64_t checksum = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        calls += w[i].calls;
        failures += w[i].failures;
        corrupt += w[i].corrupt;
        checksum += w[i].checksum;
    }
    printf("calls %lu\nfailures %lu\ncorrupt %lu\nchecksum %llu\n", calls, failures, corrupt,
           (unsigned long long)checksum);
    return failures || corrupt ? 1 : 0;
}
