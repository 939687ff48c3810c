/*
 * The C side of tests/api.rs: uses the C API through include/ksmauto.h
 * (weak symbols, not linked against the library). Output is one
 * "key value" per line.
 *
 *   basic          "available 0|1"; with the library also its version, the
 *                  stats JSON (full buffer) and how a too-small buffer is
 *                  handled. Exits 0.
 *   Every region is mapped with a PROT_NONE guard page on each side, so
 *   "<name>_exact 1" says its VMA is exactly the region.
 *
 *   exclude        two regions of 32 identical non-zero pages (the same
 *                  content in both); waits for 3 full scans; excludes the
 *                  second ("secret") region, tries to advise it again, waits
 *                  for 3 more full scans; reports KSM kB and the `mg` flag of
 *                  each region's VMA at each step. Exits 2 if ksmd stalls.
 *   advise [wait]  one region of 32 pages: `mg` before and after
 *                  ksmauto_advise, its return value and errno; with "wait",
 *                  fills it with identical non-zero pages and reports its
 *                  KSM kB after 3 full scans.
 *   advise-errors  ksmauto_advise on an unmapped range ("unmapped_enomem 1")
 *                  and on a range that wraps the address space
 *                  ("wrapping_einval 1").
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

#define PAGES 32

/* `len` bytes of private anonymous memory with a PROT_NONE guard page on
 * each side, so the region's VMA never merges with a neighbour and its smaps
 * entry describes exactly this region. */
static char *map_pages(size_t len) {
    size_t page = sysconf(_SC_PAGESIZE);
    char *p = mmap(NULL, len + 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    if (mprotect(p, page, PROT_NONE) != 0 || mprotect(p + page + len, page, PROT_NONE) != 0) {
        perror("mprotect");
        exit(1);
    }
    return p + page;
}

static int basic(void) {
    static char full[16384], again[16384], small[32];
    printf("available %d\n", ksmauto_available());
    if (!ksmauto_available()) return 0;
    printf("version %s\n", ksmauto_version());

    size_t n = ksmauto_stats_json(full, sizeof full);
    printf("json_len %zu\nstrlen %zu\n", n, strlen(full));
    printf("json %s", full); /* the object ends with its own newline */
    if (n == 0 || full[n - 1] != '\n') printf("\n");

    /* Too small a buffer: NUL-terminated, cut, return value = full length.
     * ksmd may change the kernel numbers between calls; retry until two
     * full renderings around the small one agree. */
    size_t n1 = 0, ns = 0, n2 = 1;
    for (int i = 0; i < 50 && !(n1 == ns && ns == n2); i++) {
        memset(small, 'X', sizeof small);
        n1 = ksmauto_stats_json(full, sizeof full);
        ns = ksmauto_stats_json(small, 16);
        n2 = ksmauto_stats_json(again, sizeof again);
    }
    int canary = 1;
    for (size_t i = 16; i < sizeof small; i++) if (small[i] != 'X') canary = 0;
    printf("small_ret %zu\nsmall_full %zu\n", ns, n2);
    printf("small_strlen %zu\n", strnlen(small, sizeof small));
    printf("small_prefix_ok %d\n", memcmp(small, again, 15) == 0);
    printf("small_canary_ok %d\n", canary);
    /* Exactly at the boundary: len == full length cuts the last byte,
     * len == full length + 1 fits the whole object and its NUL. */
    size_t m1 = 0, m2 = 1, mb = 0, mc = 0;
    for (int i = 0; i < 50 && m1 != m2; i++) {
        m1 = ksmauto_stats_json(full, sizeof full);
        mb = ksmauto_stats_json(again, m1);
        mc = strlen(again);
        m2 = ksmauto_stats_json(full, sizeof full);
    }
    printf("exact_len_ret %zu\nexact_len_strlen %zu\n", mb, mc);
    for (int i = 0; i < 50; i++) {
        m1 = ksmauto_stats_json(full, sizeof full);
        mb = ksmauto_stats_json(again, m1 + 1);
        mc = strlen(again);
        m2 = ksmauto_stats_json(full, sizeof full);
        if (m1 == m2) break;
    }
    printf("fits_len_ret %zu\nfits_len_strlen %zu\nfits_len_same %d\n", mb, mc, strcmp(again, full) == 0);
    printf("null_ret_positive %d\n", ksmauto_stats_json(NULL, 0) > 0);
    printf("one_byte_ret_positive %d\n", (memset(small, 'X', sizeof small), ksmauto_stats_json(small, 1)) > 0);
    printf("one_byte_nul %d\none_byte_canary_ok %d\n", small[0] == 0, small[1] == 'X');
    return 0;
}

static void show(const char *name, const char *addr, size_t len) {
    struct probe_vma v = probe_vma_of(addr);
    int exact = v.start == (unsigned long)addr && v.end == (unsigned long)addr + len;
    printf("%s_exact %d\n%s_found %d\n%s_ksm_kb %ld\n%s_mg %d\n%s_rss_kb %ld\n", name, exact, name, v.found, name, v.ksm_kb, name, v.mergeable, name, v.rss_kb);
}

static int exclude(void) {
    size_t len = PAGES * sysconf(_SC_PAGESIZE);
    char *a = map_pages(len), *secret = map_pages(len);
    memset(a, 0x77, len);
    memset(secret, 0x77, len);
    if (!ksmauto_available()) { printf("available 0\n"); return 1; }

    if (probe_wait_full_scans(3, 60) != 0) { printf("ksmd stalled\n"); return 2; }
    show("a_before", a, len);
    show("secret_before", secret, len);

    int rc = ksmauto_exclude(secret, len);
    printf("exclude_rc %d\n", rc);
    show("secret_excluded", secret, len);
    rc = ksmauto_advise(secret, len);
    printf("readvise_rc %d\n", rc);
    show("secret_readvised", secret, len);

    if (probe_wait_full_scans(3, 60) != 0) { printf("ksmd stalled\n"); return 2; }
    show("a_after", a, len);
    show("secret_after", secret, len);
    int intact = 1;
    for (size_t i = 0; i < len; i++) if (secret[i] != 0x77 || a[i] != 0x77) intact = 0;
    printf("intact %d\n", intact);
    return 0;
}

/* ksmauto_advise on memory that is not mapped, and on a range that wraps
 * around the address space. */
static int advise_errors(void) {
    size_t len = PAGES * sysconf(_SC_PAGESIZE);
    char *p = map_pages(len);
    if (!ksmauto_available()) { printf("available 0\n"); return 1; }
    if (munmap(p, len) != 0) return 1;
    errno = 0;
    int rc = ksmauto_advise(p, len);
    printf("unmapped_rc %d\nunmapped_enomem %d\n", rc, rc != 0 && errno == ENOMEM);
    errno = 0;
    rc = ksmauto_advise((void *)(~(size_t)0 - 4095), 8192);
    printf("wrapping_rc %d\nwrapping_einval %d\n", rc, rc != 0 && errno == EINVAL);
    return 0;
}

static int advise(int wait) {
    size_t len = PAGES * sysconf(_SC_PAGESIZE);
    char *p = map_pages(len);
    if (!ksmauto_available()) { printf("available 0\n"); return 1; }
    show("before", p, len);
    errno = 0;
    int rc = ksmauto_advise(p, len);
    printf("advise_rc %d\nadvise_errno %d\n", rc, rc == 0 ? 0 : errno);
    show("advised", p, len);
    if (wait) {
        memset(p, 0x33, len);
        if (probe_wait_full_scans(3, 60) != 0) { printf("ksmd stalled\n"); return 2; }
        show("after", p, len);
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    if (strcmp(what, "basic") == 0) return basic();
    if (strcmp(what, "exclude") == 0) return exclude();
    if (strcmp(what, "advise-errors") == 0) return advise_errors();
    if (strcmp(what, "advise") == 0) return advise(argc > 2 && strcmp(argv[2], "wait") == 0);
    fprintf(stderr, "usage: %s basic|exclude|advise [wait]|advise-errors\n", argv[0]);
    return 1;
}
