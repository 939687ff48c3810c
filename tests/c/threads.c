/*
 * Eight threads, each allocating and freeing mixed sizes through the malloc
 * family and mapping/unmapping anonymous memory, checking every byte it
 * wrote. Prints one checksum per thread and a total, all independent of
 * scheduling and addresses, so the output is the same on every run, with or
 * without the preload (tests/programs.rs).
 *
 * Exit status 0 when every check passed, 1 otherwise, 2 on a setup failure.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define THREADS 8
#define SLOTS 128
#define ROUNDS 20000

struct worker {
    int id;
    unsigned long errors;
    uint64_t checksum;
};

static uint64_t next_random(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 17;
}

static void fill(unsigned char *p, size_t n, unsigned char tag) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(tag ^ (i * 13));
}

/* Verifies the pattern and folds the block into the checksum. */
static int verify(const unsigned char *p, size_t n, unsigned char tag, uint64_t *sum) {
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != (unsigned char)(tag ^ (i * 13))) ok = 0;
        *sum = *sum * 31 + p[i];
    }
    return ok;
}

static size_t pick_size(uint64_t r) {
    switch (r % 16) {
    case 0: return 128 * 1024 + r % (2 << 20);   /* past glibc's mmap threshold */
    case 1: case 2: return 4096 + r % 60000;
    default: return 1 + r % 2048;
    }
}

static void *work(void *arg) {
    struct worker *w = arg;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char *blocks[SLOTS] = {0};
    size_t sizes[SLOTS] = {0};
    unsigned char tags[SLOTS] = {0};
    uint64_t rng = 0xC0FFEEull + (uint64_t)w->id * 7919;

    for (int round = 0; round < ROUNDS; round++) {
        uint64_t r = next_random(&rng);
        int i = (int)(r % SLOTS);
        if (blocks[i]) {
            if (!verify(blocks[i], sizes[i] < 4096 ? sizes[i] : 4096, tags[i], &w->checksum)) w->errors++;
            if (!verify(blocks[i] + sizes[i] - 1, 1, (unsigned char)(tags[i] ^ ((sizes[i] - 1) * 13)), &w->checksum)) w->errors++;
            free(blocks[i]);
            blocks[i] = NULL;
            continue;
        }
        size_t n = pick_size(next_random(&rng));
        unsigned char *p;
        switch (r % 3) {
        case 0: p = calloc(1, n); if (p && (p[0] || p[n - 1])) w->errors++; break;
        case 1: p = realloc(NULL, n); break;
        default: p = malloc(n);
        }
        if (!p) { w->errors++; continue; }
        blocks[i] = p;
        sizes[i] = n;
        tags[i] = (unsigned char)r;
        fill(p, n, tags[i]);

        if (round % 500 == 0) {
            /* A private anonymous mapping, grown, checked and dropped. */
            size_t len = page * (1 + r % 64);
            unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (m == MAP_FAILED) { w->errors++; continue; }
            fill(m, len, (unsigned char)w->id);
            unsigned char *g = mremap(m, len, 2 * len, MREMAP_MAYMOVE);
            if (g == MAP_FAILED) { w->errors++; munmap(m, len); continue; }
            if (!verify(g, len, (unsigned char)w->id, &w->checksum)) w->errors++;
            if (g[2 * len - 1] != 0) w->errors++;
            if (munmap(g, 2 * len) != 0) w->errors++;
        }
    }
    for (int i = 0; i < SLOTS; i++) {
        if (blocks[i]) {
            if (!verify(blocks[i], sizes[i], tags[i], &w->checksum)) w->errors++;
            free(blocks[i]);
        }
    }
    return NULL;
}

int main(void) {
    struct worker w[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){.id = i};
        if (pthread_create(&t[i], NULL, work, &w[i])) { perror("pthread_create"); return 2; }
    }
    uint64_t total = 0;
    unsigned long errors = 0;
    for (int i = 0; i < THREADS; i++) {
        if (pthread_join(t[i], NULL)) { perror("pthread_join"); return 2; }
        printf("thread %d errors %lu checksum %016llx\n", i, w[i].errors, (unsigned long long)w[i].checksum);
        total ^= w[i].checksum * (uint64_t)(2 * i + 1);
        errors += w[i].errors;
    }
    printf("total %016llx\n", (unsigned long long)total);
    printf("errors %lu\n", errors);
    return errors ? 1 : 0;
}
