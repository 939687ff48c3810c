/*
 * Threads on every kind of stack glibc's pthread_create gives them (and
 * C11's thrd_create, and glibc's own threads), alive at the same time, and
 * whether any memory of each stack is mergeable (smaps VmFlags `mg` on a
 * VMA overlapping the stack) once the advise engine's catch-up scan has run
 * (tests/exclusions.rs). One thread per kind:
 *
 *   default       no attributes (glibc maps the stack, a guard page below)
 *   guard0        pthread_attr_setguardsize(attr, 0): no guard at all
 *   guard1        a guard of one page, set explicitly
 *   big_guard     a 256 KiB guard
 *   c11           thrd_create (the process's default attributes)
 *   default_guard0  no attributes, after pthread_setattr_default_np made
 *                 guard size 0 the default
 *   c11_default_guard0  thrd_create with that default
 *   timer         the thread glibc itself starts to run a SIGEV_THREAD
 *                 timer's function (no pthread_create the program calls;
 *                 glibc gives it fresh attributes: a guard page)
 *   mmap          pthread_attr_setstack on a 256 KiB private mapping of the
 *                 program's own (the mmap hook sees it first)
 *   malloc        pthread_attr_setstack on a 64 KiB malloc'd buffer, inside
 *                 the heap among other blocks
 *   malloc_big    the same with a 1 MiB buffer (glibc maps it on its own)
 *
 * Prints "<kind>_stack_mg 0|1" for each, "heap_mg 0|1" for the heap outside
 * the malloc'd stack, and "catch_up 1" once a scan ran after every thread
 * started.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <threads.h>
#include <time.h>
#include <unistd.h>

#include "range_probe.h"

enum {
    DEFAULT, GUARD0, GUARD1, BIG_GUARD, C11, DEFAULT_GUARD0, C11_DEFAULT_GUARD0, TIMER,
    MMAP, MALLOC, MALLOC_BIG, KINDS
};
static const char *names[KINDS] = {"default", "guard0", "guard1", "big_guard", "c11",
                                   "default_guard0", "c11_default_guard0", "timer",
                                   "mmap", "malloc", "malloc_big"};

static pthread_barrier_t started, checked;
static struct {
    uintptr_t addr;
    size_t len;
} stack_of[KINDS];

static void *body(void *arg) {
    long kind = (long)arg;
    volatile char used[4096];
    memset((char *)used, 1, sizeof used);
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        void *addr;
        size_t len;
        pthread_attr_getstack(&attr, &addr, &len);
        stack_of[kind].addr = (uintptr_t)addr;
        stack_of[kind].len = len;
        pthread_attr_destroy(&attr);
    }
    pthread_barrier_wait(&started);
    pthread_barrier_wait(&checked);
    return NULL;
}

static int c11_body(void *arg) {
    body(arg);
    return 0;
}

static void timer_fired(union sigval v) {
    body(v.sival_ptr);
}

/* A one-shot SIGEV_THREAD timer: glibc starts a thread to run its function. */
static int start_timer(long kind) {
    struct sigevent ev = {.sigev_notify = SIGEV_THREAD};
    ev.sigev_notify_function = timer_fired;
    ev.sigev_value.sival_ptr = (void *)kind;
    timer_t timer;
    struct itimerspec when = {.it_value = {0, 1000 * 1000}};
    return timer_create(CLOCK_MONOTONIC, &ev, &timer) || timer_settime(timer, 0, &when, NULL);
}

/* Starts the thread of `kind`; 0 on success. */
static int start(pthread_t *t, long kind) {
    size_t page = page_size();
    if (kind == C11 || kind == C11_DEFAULT_GUARD0)
        return thrd_create((thrd_t *)t, c11_body, (void *)kind) != thrd_success;
    if (kind == TIMER)
        return start_timer(kind);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    switch (kind) {
    case GUARD0:
        pthread_attr_setguardsize(&attr, 0);
        break;
    case GUARD1:
        pthread_attr_setguardsize(&attr, page);
        break;
    case BIG_GUARD:
        pthread_attr_setguardsize(&attr, 256 << 10);
        break;
    case MMAP: {
        size_t len = 256 << 10;
        void *s = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (s == MAP_FAILED || pthread_attr_setstack(&attr, s, len))
            return 1;
        break;
    }
    case MALLOC:
    case MALLOC_BIG: {
        size_t len = kind == MALLOC ? 64 << 10 : 1 << 20;
        void *s = NULL;
        /* A stack's bottom must be aligned (16 bytes is enough for glibc). */
        if (posix_memalign(&s, 64, len) || pthread_attr_setstack(&attr, s, len))
            return 1;
        break;
    }
    }
    int rc = pthread_create(t, kind == DEFAULT || kind == DEFAULT_GUARD0 ? NULL : &attr, body,
                            (void *)kind);
    pthread_attr_destroy(&attr);
    return rc;
}

int main(void) {
    /* A heap with blocks around the malloc'd stack. */
    static void *blocks[2000];
    for (int i = 0; i < 2000; i++) {
        blocks[i] = malloc(900);
        memset(blocks[i], i, 900);
    }
    pthread_barrier_init(&started, NULL, KINDS + 1);
    pthread_barrier_init(&checked, NULL, KINDS + 1);
    pthread_t threads[KINDS];
    for (long kind = 0; kind < KINDS; kind++) {
        if (kind == DEFAULT_GUARD0) {
            pthread_attr_t d;
            pthread_getattr_default_np(&d);
            pthread_attr_setguardsize(&d, 0);
            pthread_setattr_default_np(&d);
            pthread_attr_destroy(&d);
        }
        if (start(&threads[kind], kind)) {
            printf("%s_start_failed 1\n", names[kind]);
            return 2;
        }
    }
    pthread_barrier_wait(&started);
    printf("catch_up %d\n", wait_catch_up());
    for (int kind = 0; kind < KINDS; kind++)
        printf("%s_stack_mg %d\n", names[kind], range_mg((void *)stack_of[kind].addr, stack_of[kind].len));
    printf("heap_mg %d\n", range_mg(blocks[0], 900));
    fflush(stdout);
    pthread_barrier_wait(&checked);
    for (int kind = 0; kind < KINDS; kind++)
        if (kind != TIMER)
            pthread_join(threads[kind], NULL);
    return 0;
}
