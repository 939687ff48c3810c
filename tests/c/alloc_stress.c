/*
 * Allocation stress: THREADS threads each do OPS random malloc/calloc/realloc/
 * free operations on mixed sizes (16 B to 1 MiB, some 4 MiB), keeping up to
 * 4096 live blocks each and checking their contents. At the peak it counts
 * the process's VMAs (/proc/self/maps lines).
 *
 *   alloc_stress [THREADS] [OPS_PER_THREAD] [SEED] [mixed|small|large]
 * "small" keeps every block under 512 bytes (the malloc/free hot loop);
 * "large" uses 256 KiB - 4 MiB blocks only (each one a mapping glibc makes
 * and unmaps) and writes every page of each.
 * Output: "failures N" (allocations that returned NULL), "corrupt N",
 *         "vmas_peak N", "checksum X" (deterministic for the arguments).
 * With DUMP_MAPS=path the maps at the peak are copied there; with
 * DUMP_SETTLED_MAPS=path too, every thread then stays blocked at the peak
 * until the VMA count has not changed for a second (at most 10 s) and those
 * maps are copied there: what the count is once the program pauses.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLOTS 4096

struct worker { unsigned long ops; uint64_t seed; unsigned long failures, corrupt; uint64_t checksum; pthread_barrier_t *peak; };
static int n_threads = 4;
static long vmas_peak;

static uint64_t next_rand(uint64_t *s) { *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17; return *s; }

static int small_only, large_only;

static size_t pick_size(uint64_t r) {
    unsigned k = r % 1000;
    if (small_only) return 16 + (r >> 10) % 496;
    if (large_only) return (256u << 10) + (r >> 10) % (4u << 20);
    if (k < 700) return 16 + (r >> 10) % 512;          /* small objects */
    if (k < 950) return 512 + (r >> 10) % 32768;       /* medium */
    if (k < 998) return 65536 + (r >> 10) % (1 << 20); /* large: glibc mmaps many */
    return 4u << 20;                                   /* very large */
}

/* Counts /proc/self/maps lines; with a path in the environment variable
   `dump_to` (if not NULL), also copies them there. */
static long count_vmas(const char *dump_to) {
    FILE *f = fopen("/proc/self/maps", "r");
    const char *dump = dump_to ? getenv(dump_to) : NULL;
    FILE *out = dump ? fopen(dump, "w") : NULL;
    long n = 0;
    int c;
    if (!f) return -1;
    while ((c = fgetc(f)) != EOF) {
        n += c == '\n';
        if (out) fputc(c, out);
    }
    fclose(f);
    if (out) fclose(out);
    return n;
}

/* Waits, the other threads blocked, until the VMA count has been the same
   for a second (at most 10 s), then dumps the maps to DUMP_SETTLED_MAPS. */
static void settle(void) {
    long last = -1;
    for (int sample = 0, same = 0; sample < 100 && same < 10; sample++) {
        struct timespec tenth = {0, 100 * 1000 * 1000};
        nanosleep(&tenth, NULL);
        long now = count_vmas(NULL);
        same = now == last ? same + 1 : 0;
        last = now;
    }
    count_vmas("DUMP_SETTLED_MAPS");
}

static void *work(void *arg) {
    struct worker *w = arg;
    unsigned char **slot = calloc(SLOTS, sizeof *slot);
    size_t *len = calloc(SLOTS, sizeof *len);
    uint64_t s = w->seed;
    for (unsigned long i = 0; i < w->ops; i++) {
        if (i == w->ops / 2) {
            /* all threads at their halfway point, blocks live: count VMAs */
            if (pthread_barrier_wait(w->peak) == PTHREAD_BARRIER_SERIAL_THREAD) {
                vmas_peak = count_vmas("DUMP_MAPS");
                if (getenv("DUMP_SETTLED_MAPS")) settle();
            }
            pthread_barrier_wait(w->peak);
        }
        uint64_t r = next_rand(&s);
        /* large blocks: few live at a time, so the loop maps and unmaps */
        unsigned k = r % (large_only ? 16 : SLOTS);
        if (slot[k]) {
            unsigned char tag = (unsigned char)(k * 31 + len[k]);
            if (slot[k][0] != tag || slot[k][len[k] - 1] != tag) w->corrupt++;
            w->checksum += len[k];
            if ((r >> 40) % 4 == 0) {
                size_t n = pick_size(next_rand(&s));
                unsigned char *p = realloc(slot[k], n);
                if (!p) { w->failures++; continue; }
                slot[k] = p;
                len[k] = n;
                tag = (unsigned char)(k * 31 + n);
                p[0] = p[n - 1] = tag;
                continue;
            }
            free(slot[k]);
            slot[k] = NULL;
        } else {
            size_t n = pick_size(next_rand(&s));
            unsigned char *p = (r >> 40) % 3 == 0 ? calloc(1, n) : malloc(n);
            if (!p) { w->failures++; continue; }
            if (large_only)
                for (size_t o = 0; o < n; o += 4096) p[o] = (unsigned char)o;
            unsigned char tag = (unsigned char)(k * 31 + n);
            p[0] = p[n - 1] = tag;
            slot[k] = p;
            len[k] = n;
        }
    }
    for (unsigned k = 0; k < SLOTS; k++) free(slot[k]);
    free(slot);
    free(len);
    return NULL;
}

int main(int argc, char **argv) {
    n_threads = argc > 1 ? atoi(argv[1]) : 4;
    unsigned long ops = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000000;
    uint64_t seed = argc > 3 ? strtoull(argv[3], NULL, 10) : 42;
    small_only = argc > 4 && strcmp(argv[4], "small") == 0;
    large_only = argc > 4 && strcmp(argv[4], "large") == 0;
    pthread_barrier_t peak;
    pthread_barrier_init(&peak, NULL, n_threads);
    pthread_t t[64];
    struct worker w[64];
    for (int i = 0; i < n_threads; i++) {
        w[i] = (struct worker){ .ops = ops, .seed = seed * 1000003 + i + 1, .peak = &peak };
        pthread_create(&t[i], NULL, work, &w[i]);
    }
    unsigned long failures = 0, corrupt = 0;
    uint64_t checksum = 0;
    for (int i = 0; i < n_threads; i++) {
        pthread_join(t[i], NULL);
        failures += w[i].failures;
        corrupt += w[i].corrupt;
        checksum += w[i].checksum;
    }
    printf("failures %lu\ncorrupt %lu\nvmas_peak %ld\nchecksum %llu\n", failures, corrupt, vmas_peak, (unsigned long long)checksum);
    return failures || corrupt ? 1 : 0;
}
