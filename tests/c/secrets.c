/*
 * The C side of tests/secrets.rs: memory a program marks as secret the way
 * OpenSSL's secure heap and libsodium's sodium_malloc do (mmap, guard pages,
 * mlock, madvise MADV_DONTDUMP, MADV_WIPEONFORK), and mlock of a malloc'd
 * buffer. Output is one "key value" per line.
 *
 *   marks    marks regions before and after the library first advised them,
 *            and before and after a catch-up scan ran; then waits for
 *            another scan and prints "<name>_mg 0|1" for each (mergeable
 *            flag of any VMA in its range), plus "<name>_mg_before 1" for
 *            those that were mergeable before they were marked, and the
 *            controls "plain_mmap_mg", "plain_raw_mg".
 *   ksm      two regions of 32 identical pages (same content in both); the
 *            "secret" one is mlocked and MADV_DONTDUMP; waits for ksmd to
 *            merge the plain one (exits 2 if ksmd stalls) and 3 more full
 *            scans, then prints "<name>_ksm_kb N" and "<name>_mg".
 *   mlockall a plain region ("before_mg"), mlockall(MCL_CURRENT|MCL_FUTURE)
 *            ("mlockall_rc"), then "after_mg" of that region, of a new
 *            region ("new_mg"), of a new region given to ksmauto_advise
 *            ("advised_rc", "advised_mg"), and of a raw region after time
 *            for catch-up ("raw_mg").
 *   errors   "<call> <return value> <errno>" for failing and succeeding
 *            calls of madvise, mlock, mlock2, mlockall (errno set to 4242
 *            before each: a success must leave it alone).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ksmauto.h"
#include "ksm_probe.h"
#include "range_probe.h"

#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 0x01
#endif

#define PAGES 4

/* libsodium's sodium_malloc: guarded region, mlock, MADV_DONTDUMP. */
static void sodium_like(char *p, size_t len) {
    if (mlock(p, len) != 0) perror("mlock");
    if (madvise(p, len, MADV_DONTDUMP) != 0) perror("madvise");
}

/* OpenSSL's secure heap (CRYPTO_secure_malloc_init): mlock2(MLOCK_ONFAULT)
 * where available, else mlock; then MADV_DONTDUMP. */
static void openssl_like(char *p, size_t len) {
    if (mlock2(p, len, MLOCK_ONFAULT) != 0 && mlock(p, len) != 0) perror("mlock2");
    if (madvise(p, len, MADV_DONTDUMP) != 0) perror("madvise");
}

static void show(const char *name, const void *p, size_t len) {
    printf("%s_mg %d\n", name, range_mg(p, len));
}

/* A page-aligned page of a malloc'd buffer, on the brk heap. */
static char *heap_page(void) {
    char *buf = malloc(3 * page_size());
    if (!buf) exit(1);
    char *key = (char *)(((unsigned long)buf + page_size()) & ~(page_size() - 1));
    memset(key, 0x11, 64);
    return key;
}

static int marks(void) {
    size_t page = page_size(), len = PAGES * page;
    /* Before any catch-up scan: */
    char *heap_early = heap_page();
    char *heap_late = heap_page();
    if (mlock(heap_early, 64) != 0) perror("mlock heap");
    char *raw_early = isolated_region(PAGES, 1);
    sodium_like(raw_early, len);
    char *raw_late = isolated_region(PAGES, 1);
    char *plain_raw = isolated_region(PAGES, 1);
    /* Through the mmap hook, which advises them first under `advise`: */
    char *sodium = isolated_region(PAGES, 0);
    char *openssl = isolated_region(PAGES, 0);
    char *dontdump = isolated_region(PAGES, 0);
    char *wipeonfork = isolated_region(PAGES, 0);
    char *plain_mmap = isolated_region(PAGES, 0);
    printf("sodium_mg_before %d\n", range_mg(sodium, len));
    sodium_like(sodium, len);
    openssl_like(openssl, len);
    if (madvise(dontdump, len, MADV_DONTDUMP) != 0) perror("madvise");
    if (madvise(wipeonfork, len, MADV_WIPEONFORK) != 0) perror("madvise");

    if (!wait_catch_up()) { printf("catch_up_stalled 1\n"); return 2; }
    /* After a catch-up scan advised them: */
    printf("raw_late_mg_before %d\n", range_mg(raw_late, len));
    printf("heap_late_mg_before %d\n", range_mg(heap_late, 64));
    if (madvise(raw_late, len, MADV_WIPEONFORK) != 0) perror("madvise");
    if (mlock(heap_late, 64) != 0) perror("mlock heap");

    if (!wait_catch_up()) { printf("catch_up_stalled 1\n"); return 2; }
    show("heap_early", heap_early, 64);
    show("heap_late", heap_late, 64);
    show("raw_early", raw_early, len);
    show("raw_late", raw_late, len);
    show("sodium", sodium, len);
    show("openssl", openssl, len);
    show("dontdump", dontdump, len);
    show("wipeonfork", wipeonfork, len);
    show("plain_mmap", plain_mmap, len);
    show("plain_raw", plain_raw, len);
    return 0;
}

static int ksm(void) {
    size_t len = 32 * page_size();
    char *plain = isolated_region(32, 0), *secret = isolated_region(32, 0);
    memset(plain, 0x5a, len);
    memset(secret, 0x5a, len);
    sodium_like(secret, len);
    if (!ksmauto_available()) { printf("available 0\n"); return 1; }
    time_t deadline = time(NULL) + 60;
    while (probe_vma_of(plain).ksm_kb <= 0) {
        if (time(NULL) > deadline || probe_wait_full_scans(1, 60) != 0) {
            printf("ksmd stalled\n");
            return 2;
        }
    }
    if (probe_wait_full_scans(3, 60) != 0) { printf("ksmd stalled\n"); return 2; }
    struct probe_vma p = probe_vma_of(plain), s = probe_vma_of(secret);
    printf("plain_ksm_kb %ld\nplain_mg %d\n", p.ksm_kb, p.mergeable);
    printf("secret_ksm_kb %ld\nsecret_rss_kb %ld\nsecret_mg %d\n", s.ksm_kb, s.rss_kb, range_mg(secret, len));
    int intact = 1;
    for (size_t i = 0; i < len; i++) if (secret[i] != 0x5a) intact = 0;
    printf("intact %d\n", intact);
    return 0;
}

static int lock_all(void) {
    size_t len = PAGES * page_size();
    char *before = isolated_region(PAGES, 0);
    memset(before, 1, len);
    printf("before_mg %d\n", range_mg(before, len));
    printf("mlockall_rc %d\n", mlockall(MCL_CURRENT | MCL_FUTURE));
    show("after", before, len);
    char *fresh = isolated_region(PAGES, 0);
    show("new", fresh, len);
    char *advised = isolated_region(PAGES, 0);
    printf("advised_rc %d\n", ksmauto_advise(advised, len));
    show("advised", advised, len);
    char *raw = isolated_region(PAGES, 1);
    for (int round = 0; round < 100; round++) {
        for (int i = 0; i < 256; i++) {
            void *volatile q = malloc(16);
            free(q);
        }
        usleep(3000);
    }
    show("raw", raw, len);
    return 0;
}

/* What the hooked functions return and leave in errno, to compare with a
 * run without the library. */
static int errors(void) {
    size_t page = page_size();
    char *p = isolated_region(2, 0);
    char *gone = isolated_region(2, 0);
    munmap(gone, 2 * page);
    int rc;
#define CALL(name, expr) \
    do { errno = 4242; rc = (expr); printf("%s %d %d\n", name, rc, errno); } while (0)
    CALL("madvise_bad_advice", madvise(p, page, 12345));
    CALL("madvise_unmapped", madvise(gone, page, MADV_DONTDUMP));
    CALL("madvise_ok", madvise(p, page, MADV_DONTDUMP));
    CALL("madvise_wipe_ok", madvise(p, page, MADV_WIPEONFORK));
    CALL("madvise_normal_ok", madvise(p, page, MADV_NORMAL));
    CALL("mlock_unmapped", mlock(gone, page));
    CALL("mlock_ok", mlock(p, page));
    CALL("mlock2_bad_flags", mlock2(p, page, 0x100));
    CALL("mlock2_ok", mlock2(p + page, page, MLOCK_ONFAULT));
    CALL("mlockall_bad_flags", mlockall(0));
    CALL("munlock_ok", munlock(p, 2 * page));
#undef CALL
    return 0;
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(what, "marks") == 0) return marks();
    if (strcmp(what, "ksm") == 0) return ksm();
    if (strcmp(what, "mlockall") == 0) return lock_all();
    if (strcmp(what, "errors") == 0) return errors();
    fprintf(stderr, "usage: secrets marks|ksm|mlockall|errors\n");
    return 64;
}
