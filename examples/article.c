/*
 * The experiment from "Merging memory pages with same content" (shared/
 * reference/ksm-article.txt), with its madvise() call removed: three private
 * anonymous single pages, zero-filled, then one byte of each rewritten.
 *
 * Instead of the article's global pages_sharing (other processes merge too),
 * it prints this process's own counters from /proc/self/ksm_stat, and instead
 * of a fixed sleep it waits for ksmd to complete full scans.
 *
 * Output (one "key value" per line, for people and for the tests):
 *   merged_before_write N      pages merged (ksm_merging_pages + ksm_zero_pages)
 *   merged_after_write N
 *   rewritten_still_merged_kb N   KSM kB (smaps "KSM:") of the VMAs that hold
 *                              the three pages, after their rewrite: other
 *                              pages of the process may merge meanwhile, these
 *                              must not
 *   readback ok|BAD
 * Exit status 0 unless the program itself failed (bad readback, no memory).
 * Usage: article [full-scans-to-wait (default 3)] [timeout-seconds (default 60)]
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define N_PAGES 3

static long read_long(const char *path, const char *key) {
    char line[256];
    long value = -1;
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        if (key == NULL) { value = atol(line); break; }
        size_t k = strlen(key);
        if (strncmp(line, key, k) == 0 && line[k] == ' ') { value = atol(line + k + 1); break; }
    }
    fclose(f);
    return value;
}

static long merged_pages(void) {
    long merging = read_long("/proc/self/ksm_stat", "ksm_merging_pages");
    long zero = read_long("/proc/self/ksm_stat", "ksm_zero_pages");
    return (merging < 0 ? 0 : merging) + (zero < 0 ? 0 : zero);
}

/* Waits until ksmd has completed `scans` more full scans (or the timeout). */
static void wait_full_scans(int scans, int timeout_s) {
    long start = read_long("/sys/kernel/mm/ksm/full_scans", NULL);
    time_t deadline = time(NULL) + timeout_s;
    if (start < 0) return;
    while (read_long("/sys/kernel/mm/ksm/full_scans", NULL) < start + scans && time(NULL) < deadline)
        usleep(20000);
}

/* KSM kB of the VMAs holding `pages` (each VMA counted once), from
   /proc/self/smaps' "KSM:" lines. */
static long ksm_kb_of(void **pages, int n) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[512];
    unsigned long s = 0, e = 0;
    int holds = 0;
    long kb = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx ", &a, &b) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            s = a;
            e = b;
            holds = 0;
            for (int i = 0; i < n; i++)
                if ((unsigned long)pages[i] >= s && (unsigned long)pages[i] < e) holds = 1;
            continue;
        }
        long v;
        if (holds && sscanf(line, "KSM: %ld kB", &v) == 1) kb += v;
    }
    fclose(f);
    return kb;
}

int main(int argc, char **argv) {
    int scans = argc > 1 ? atoi(argv[1]) : 3;
    int timeout_s = argc > 2 ? atoi(argv[2]) : 60;
    size_t p_size = sysconf(_SC_PAGE_SIZE);
    void **pages = calloc(N_PAGES, sizeof(void *));
    if (!pages) return 1;

    /* Three pages filled with zeroes; no madvise() here. */
    for (int i = 0; i < N_PAGES; i++) {
        pages[i] = mmap(NULL, p_size, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (pages[i] == MAP_FAILED) return 1;
        memset(pages[i], 0, p_size);
    }
    wait_full_scans(scans, timeout_s);
    printf("merged_before_write %ld\n", merged_pages());
    fflush(stdout);

    /* Rewrite one byte of each page: copy-on-write breaks the merge. */
    for (int i = 0; i < N_PAGES; i++) memset(pages[i], i + 1337, 1);
    int ok = 1;
    for (int i = 0; i < N_PAGES; i++) {
        unsigned char *p = pages[i];
        if (p[0] != (unsigned char)(i + 1337)) ok = 0;
        for (size_t j = 1; j < p_size; j++) if (p[j] != 0) ok = 0;
    }
    wait_full_scans(2, timeout_s);
    printf("merged_after_write %ld\n", merged_pages());
    printf("rewritten_still_merged_kb %ld\n", ksm_kb_of(pages, N_PAGES));
    printf("readback %s\n", ok ? "ok" : "BAD");
    return ok ? 0 : 2;
}
