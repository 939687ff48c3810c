/*
 * The C side of tests/catchup.rs `signal_handlers_on_small_alternate_stacks`:
 * a signal handler that allocates and naps, running on an alternate stack of a given
 * size with an inaccessible guard page right below it (an overflow faults at
 * once instead of corrupting memory). The main thread first allocates small
 * blocks for a while (start-up happens outside the handler; no news for the
 * catch-up), then raises the signal again and again. The handler allocates
 * small blocks and one large one: news, so the library creates its catch-up
 * thread from inside the handler, on the alternate stack, where there is
 * room for that.
 *
 *   sigaltstack_alloc STACK_BYTES RAISES
 *
 * Prints "handled N", "altstack_used N" (the most bytes of the alternate
 * stack ever used: it is painted first) and, under the library,
 * "thread_starts N" (times the catch-up thread was created); exits 0. An
 * overflow kills it with SIGSEGV.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "ksmauto.h"

static volatile long handled;

static void handler(int sig) {
    (void)sig;
    void *blocks[16];
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 16; i++) blocks[i] = malloc(16 + 8 * i);
        for (int i = 0; i < 16; i++) free(blocks[i]);
    }
    /* A block glibc maps on its own: news for the catch-up. */
    free(malloc(256 << 10));
    struct timespec nap = {0, 1000};
    nanosleep(&nap, NULL);
    handled++;
}

static unsigned long long thread_starts(void) {
    static char report[16384];
    if (!ksmauto_available() || ksmauto_stats_json(report, sizeof report) >= sizeof report) return 0;
    const char *p = strstr(report, "\"starts\":");
    return p ? strtoull(p + 9, NULL, 10) : 0;
}

static void idle_ms(long ms) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < ms);
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: sigaltstack_alloc STACK_BYTES RAISES\n"); return 2; }
    size_t size = strtoul(argv[1], NULL, 0);
    long raises = atol(argv[2]);
    long page = sysconf(_SC_PAGESIZE);
    size_t mapped = ((size + page - 1) / page) * page + page;
    char *area = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED) { perror("mmap"); return 1; }
    if (mprotect(area, page, PROT_NONE) != 0) { perror("mprotect"); return 1; }
    memset(area + page, 0xa5, mapped - page);
    stack_t ss = {.ss_sp = area + mapped - size, .ss_size = size, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0) { perror("sigaltstack"); return 1; }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0) { perror("sigaction"); return 1; }

    /* Start-up, outside the handler. */
    void *keep[64] = {0};
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned i = 0;
    do {
        free(keep[i & 63]);
        keep[i & 63] = malloc(16 + (i & 127));
        i++;
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < 100);
    for (int k = 0; k < 64; k++) free(keep[k]);

    for (long r = 0; r < raises; r++) {
        idle_ms(2);
        raise(SIGUSR1);
    }
    size_t untouched = 0;
    while (untouched < mapped - page && (unsigned char)area[page + untouched] == 0xa5) untouched++;
    printf("handled %ld\n", handled);
    printf("altstack_used %zu\n", mapped - page - untouched);
    if (ksmauto_available()) printf("thread_starts %llu\n", thread_starts());
    return 0;
}
