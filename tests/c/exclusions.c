/*
 * The C side of tests/exclusions.rs: ranges excluded with ksmauto_exclude
 * must stay excluded wherever their memory goes, and the table must not
 * fill up with ranges that no longer exist. Output is "key value" lines.
 *
 *   mremap   an excluded region grown with mremap(MREMAP_MAYMOVE) (it must
 *            move: read-only pages fence it) and one moved with
 *            MREMAP_FIXED; after a catch-up scan: "grown_moved 1",
 *            "grown_mg", "fixed_mg", and the control "plain_mg".
 *   realloc  an excluded 300 KB block (glibc maps it) realloc'd to 3 MB and
 *            an excluded 32-byte key realloc'd to 20000 bytes; after a
 *            catch-up scan: "big_mg", "small_mg", "control_mg".
 *   keys     300 sessions that each malloc a 32-byte key, exclude it and
 *            free it ("session_failures N"), then 300 keys alive at once
 *            ("live_failures N", and after a scan "live_mg N" keys whose
 *            page is mergeable).
 *   cycles   1000 x (mmap 2 pages, exclude, munmap them one page at a time),
 *            1000 x (malloc 256 KB, exclude, free), 300 x the same with raw
 *            mmap/munmap system calls: "<kind>_failures N"; a read-only
 *            region excluded before them stays excluded ("kept_mg").
 *   race     a thread calls ksmauto_advise over a 1024-page region in a loop
 *            while the main thread excludes every other page of its first
 *            400, 5 rounds: "excluded_ok N" exclusions that succeeded,
 *            "excluded_mg N" excluded pages left mergeable, "control_mg N"
 *            rounds where a page after them was mergeable, "overlapped N"
 *            rounds in which advice ran all along the exclusions.
 *   race-coalescing  the same, then also every odd page in between (the
 *            exclusions coalesce into one range while advice goes on).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ksmauto.h"
#include "range_probe.h"

static int move_by_mremap(void) {
    size_t page = page_size(), len = 8 * page;
    char *grown = isolated_region(8, 0), *fixed = isolated_region(8, 0);
    char *plain = isolated_region(8, 0);
    memset(grown, 0x21, len);
    memset(fixed, 0x22, len);
    memset(plain, 0x23, len);
    if (ksmauto_exclude(grown, len) != 0 || ksmauto_exclude(fixed, len) != 0) {
        perror("ksmauto_exclude");
        return 1;
    }
    char *grown_to = mremap(grown, len, 2 * len, MREMAP_MAYMOVE);
    if (grown_to == MAP_FAILED) { perror("mremap"); return 1; }
    printf("grown_moved %d\n", grown_to != grown);
    memset(grown_to + len, 0x21, len);
    /* A target no hook has seen: reserved with a raw system call. */
    char *target = (char *)syscall(SYS_mmap, NULL, 3 * len, PROT_READ,
                                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *fixed_to = mremap(fixed, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, target + len);
    if (fixed_to == MAP_FAILED) { perror("mremap fixed"); return 1; }
    if (!wait_catch_up()) { printf("catch_up_stalled 1\n"); return 2; }
    printf("grown_mg %d\n", range_mg(grown_to, 2 * len));
    printf("fixed_mg %d\n", range_mg(fixed_to, len));
    printf("plain_mg %d\n", range_mg(plain, len));
    return 0;
}

static int follow_realloc(void) {
    size_t big_len = 300 * 1024, big_new = 3 * 1024 * 1024, small_new = 20000;
    char *big = malloc(big_len), *key = malloc(32), *control = malloc(small_new);
    memset(big, 0x31, big_len);
    memset(key, 0x32, 32);
    memset(control, 0x33, small_new);
    if (ksmauto_exclude(big, big_len) != 0 || ksmauto_exclude(key, 32) != 0) {
        perror("ksmauto_exclude");
        return 1;
    }
    char *big_to = realloc(big, big_new);
    char *key_to = realloc(key, small_new);
    if (!big_to || !key_to) return 1;
    memset(big_to + big_len, 0x31, big_new - big_len);
    memset(key_to + 32, 0x32, small_new - 32);
    printf("big_moved %d\n", big_to != big);
    if (!wait_catch_up()) { printf("catch_up_stalled 1\n"); return 2; }
    printf("big_mg %d\n", range_mg(big_to, big_new));
    printf("small_mg %d\n", range_mg(key_to, small_new));
    /* The whole control block's pages, minus any it shares with the key. */
    size_t page = page_size();
    char *from = (char *)(((unsigned long)control + page) & ~(page - 1));
    printf("control_mg %d\n", range_mg(from, page));
    return 0;
}

#define KEYS 300

static int keys(void) {
    int failures = 0;
    for (int session = 0; session < KEYS; session++) {
        char *key = malloc(32);
        memset(key, session, 32);
        if (ksmauto_exclude(key, 32) != 0) failures++;
        free(key);
    }
    printf("session_failures %d\n", failures);
    static char *live[KEYS];
    failures = 0;
    for (int i = 0; i < KEYS; i++) {
        live[i] = malloc(32);
        memset(live[i], i, 32);
        if (ksmauto_exclude(live[i], 32) != 0) failures++;
    }
    printf("live_failures %d\n", failures);
    if (!wait_catch_up()) { printf("catch_up_stalled 1\n"); return 2; }
    int mg = 0;
    for (int i = 0; i < KEYS; i++) mg += range_mg(live[i], 32) == 1;
    printf("live_mg %d\n", mg);
    return 0;
}

static int cycles(void) {
    size_t page = page_size();
    int failures = 0;
    /* A mapped, read-only excluded region: making room must not drop it. */
    char *kept = isolated_region(4, 0);
    memset(kept, 0x41, 4 * page);
    if (ksmauto_exclude(kept, 4 * page) != 0) return 1;
    mprotect(kept, 4 * page, PROT_READ);
    for (int i = 0; i < 1000; i++) {
        char *p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 1;
        if (ksmauto_exclude(p, 2 * page) != 0) failures++;
        munmap(p, page);
        munmap(p + page, page);
    }
    printf("piecewise_munmap_failures %d\n", failures);
    failures = 0;
    for (int i = 0; i < 1000; i++) {
        char *p = malloc(256 * 1024);
        if (!p) return 1;
        if (ksmauto_exclude(p, 256 * 1024) != 0) failures++;
        free(p);
    }
    printf("malloc_free_failures %d\n", failures);
    failures = 0;
    for (int i = 0; i < 300; i++) {
        /* Distinct addresses: a hint far from everything else. */
        void *hint = (void *)(0x500000000000UL + (unsigned long)i * 16 * page);
        char *p = (char *)syscall(SYS_mmap, hint, 2 * page, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 1;
        if (ksmauto_exclude(p, 2 * page) != 0) failures++;
        syscall(SYS_munmap, p, 2 * page);
    }
    printf("raw_munmap_failures %d\n", failures);
    if (!wait_catch_up()) { printf("catch_up_stalled 1\n"); return 2; }
    printf("kept_mg %d\n", range_mg(kept, 4 * page));
    return 0;
}

#define RACE_PAGES 1024
#define EXCLUDED_PAGES 200

static atomic_int stop;
static atomic_long advices;
static char *race_region;

static void *advise_loop(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) {
        ksmauto_advise(race_region, RACE_PAGES * page_size());
        atomic_fetch_add(&advices, 1);
    }
    return NULL;
}

/* With `bridge`, a second pass excludes the odd pages between the even
 * ones, so the exclusions coalesce (ranges move between table slots) while
 * the other thread keeps advising. */
static int race(int bridge) {
    size_t page = page_size();
    int left_mergeable = 0, excluded_ok = 0, control_mg = 0, overlapped = 0;
    int span = bridge ? 2 * EXCLUDED_PAGES - 1 : 2 * EXCLUDED_PAGES;
    for (int round = 0; round < 5; round++) {
        race_region = isolated_region(RACE_PAGES, 0);
        for (size_t i = 0; i < RACE_PAGES; i++) race_region[i * page] = (char)i;
        atomic_store(&stop, 0);
        pthread_t t;
        pthread_create(&t, NULL, advise_loop, NULL);
        while (atomic_load(&advices) == 0) usleep(100);
        long advices_before = atomic_load(&advices);
        for (int pass = 0; pass <= bridge; pass++) {
            for (int i = pass; i < 2 * EXCLUDED_PAGES - pass; i += 2) {
                excluded_ok += ksmauto_exclude(race_region + i * page, page) == 0;
                usleep(20); /* let the advising thread run in between */
            }
        }
        if (atomic_load(&advices) - advices_before >= 2) overlapped++;
        atomic_store(&stop, 1);
        pthread_join(t, NULL);
        atomic_store(&advices, 0);
        /* Once more, alone: the control page between advice and check. */
        ksmauto_advise(race_region, RACE_PAGES * page);
        for (int i = 0; i < span; i += bridge ? 1 : 2)
            left_mergeable += range_mg(race_region + i * page, page) == 1;
        control_mg += range_mg(race_region + (2 * EXCLUDED_PAGES + 1) * page, page) == 1;
        /* Unmapping drops this round's exclusions from the table. */
        munmap(race_region - page, (RACE_PAGES + 2) * page);
    }
    printf("excluded_ok %d\n", excluded_ok);
    printf("excluded_mg %d\n", left_mergeable);
    printf("control_mg %d\n", control_mg);
    printf("overlapped %d\n", overlapped);
    return 0;
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!ksmauto_available()) { printf("available 0\n"); return 1; }
    if (strcmp(what, "mremap") == 0) return move_by_mremap();
    if (strcmp(what, "realloc") == 0) return follow_realloc();
    if (strcmp(what, "keys") == 0) return keys();
    if (strcmp(what, "cycles") == 0) return cycles();
    if (strcmp(what, "race") == 0) return race(0);
    if (strcmp(what, "race-coalescing") == 0) return race(1);
    fprintf(stderr, "usage: exclusions mremap|realloc|keys|cycles|race|race-coalescing\n");
    return 64;
}
