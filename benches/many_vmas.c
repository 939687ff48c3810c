/*
 * The workload of scripts/bench-many-vmas: a process with VMAS VMAs that no
 * hook saw (one raw mmap split by mprotect into pages of alternating
 * protection) running a small-object malloc/free loop for SECONDS, timing
 * every call on its own (the time stamp counter on x86-64). After every
 * 8,192 calls it naps (`usleep(1)`; before the catch-up moved to a thread of
 * its own, each nap was where it ran its steps); the naps are timed as calls
 * too.
 *
 *   cc -O2 -o many_vmas benches/many_vmas.c
 *   many_vmas VMAS SECONDS
 *
 * Prints "calls N", "calls_per_s X", "calls_per_cpu_s X" (per second of
 * this process's CPU time: what a busy shared machine disturbs least),
 * "max_call_us X" (the slowest single malloc, free or nap), "max_nap_us X"
 * and "calls_over_1ms N".
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t ticks(void) {
#if defined(__x86_64__)
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000ull + ts.tv_nsec;
#endif
}

static double clock_s(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double now(void) { return clock_s(CLOCK_MONOTONIC); }

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: many_vmas VMAS SECONDS\n"); return 2; }
    long vmas = atol(argv[1]);
    double seconds = atof(argv[2]);
    long page = sysconf(_SC_PAGESIZE);
    char *base = (char *)syscall(SYS_mmap, NULL, vmas * page, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) { perror("mmap"); return 1; }
    for (long i = 1; i < vmas; i += 2)
        if (mprotect(base + i * page, page, PROT_READ) != 0) { perror("mprotect"); return 1; }

    void *keep[64] = {0};
    uint64_t calls = 0, max_ticks = 0, max_nap_ticks = 0, over = 0, over_ticks = 0;
    double t0 = now(), cpu0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    uint64_t k0 = ticks();
    /* 1 ms in ticks, calibrated on the fly after the first 10 ms. */
    for (;;) {
        for (int i = 0; i < 4096; i++) {
            int slot = i & 63;
            uint64_t a = ticks();
            free(keep[slot]);
            uint64_t b = ticks();
            keep[slot] = malloc(16 + (i & 255));
            uint64_t c = ticks();
            uint64_t d1 = b - a, d2 = c - b;
            if (d1 > max_ticks) max_ticks = d1;
            if (d2 > max_ticks) max_ticks = d2;
            if (over_ticks) over += (d1 > over_ticks) + (d2 > over_ticks);
            calls += 2;
        }
        uint64_t a = ticks();
        usleep(1);
        uint64_t d = ticks() - a;
        if (d > max_ticks) max_ticks = d;
        if (d > max_nap_ticks) max_nap_ticks = d;
        if (over_ticks) over += d > over_ticks;
        calls += 1;
        double t = now() - t0;
        if (!over_ticks && t > 0.01) over_ticks = (uint64_t)((ticks() - k0) / (t * 1000));
        if (t >= seconds) break;
    }
    double elapsed = now() - t0, cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
    double ticks_per_us = (ticks() - k0) / (elapsed * 1e6);
    printf("calls %llu\n", (unsigned long long)calls);
    printf("calls_per_s %.0f\n", calls / elapsed);
    printf("calls_per_cpu_s %.0f\n", calls / cpu);
    printf("max_call_us %.1f\n", max_ticks / ticks_per_us);
    printf("max_nap_us %.1f\n", max_nap_ticks / ticks_per_us);
    printf("calls_over_1ms %llu\n", (unsigned long long)over);
    return 0;
}
