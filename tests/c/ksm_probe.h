/*
 * Small helpers shared by the C test programs of stats.rs, config.rs,
 * api.rs and modes.rs: read KSM counters, wait for ksmd's full scans, and
 * look up the /proc/self/smaps entry of the VMA that contains an address.
 * Header-only (static inline, so unused ones do not warn under -Wall).
 */
#ifndef KSM_PROBE_H
#define KSM_PROBE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The number after "key " (or "key: ") in the file at path; with key NULL,
 * the number on the first line. -1 if absent. */
static inline long probe_read_long(const char *path, const char *key) {
    char line[512];
    long value = -1;
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        if (key == NULL) { value = atol(line); break; }
        size_t k = strlen(key);
        if (strncmp(line, key, k) == 0 && (line[k] == ' ' || line[k] == ':')) {
            value = atol(line + k + 1 + (line[k] == ':'));
            break;
        }
    }
    fclose(f);
    return value;
}

static inline long probe_full_scans(void) {
    return probe_read_long("/sys/kernel/mm/ksm/full_scans", NULL);
}

/* ksm_merging_pages + ksm_zero_pages of this process. */
static inline long probe_merged_pages(void) {
    long merging = probe_read_long("/proc/self/ksm_stat", "ksm_merging_pages");
    long zero = probe_read_long("/proc/self/ksm_stat", "ksm_zero_pages");
    return (merging < 0 ? 0 : merging) + (zero < 0 ? 0 : zero);
}

/* Waits until ksmd has completed `scans` more full scans. Returns 0, or -1
 * on timeout or when there is no KSM. */
static inline int probe_wait_full_scans(int scans, int timeout_s) {
    long start = probe_full_scans();
    time_t deadline = time(NULL) + timeout_s;
    if (start < 0) return -1;
    while (probe_full_scans() < start + scans) {
        if (time(NULL) >= deadline) return -1;
        usleep(20000);
    }
    return 0;
}

struct probe_vma {
    unsigned long start, end;
    long rss_kb, anon_kb, ksm_kb;
    int mergeable;   /* VmFlags carries "mg" */
    int found;
};

/* The smaps entry of the VMA containing addr. */
static inline struct probe_vma probe_vma_of(const void *addr) {
    struct probe_vma v = {0, 0, -1, -1, -1, 0, 0};
    unsigned long a = (unsigned long)addr;
    char line[1024];
    int inside = 0;
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return v;
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &s, &e, perms) == 3 && strchr(line, '-') < strchr(line, ' ')) {
            if (inside) break; /* past our VMA */
            inside = s <= a && a < e;
            if (inside) { v.start = s; v.end = e; v.found = 1; }
            continue;
        }
        if (!inside) continue;
        if (strncmp(line, "Rss:", 4) == 0) v.rss_kb = atol(line + 4);
        else if (strncmp(line, "Anonymous:", 10) == 0) v.anon_kb = atol(line + 10);
        else if (strncmp(line, "KSM:", 4) == 0) v.ksm_kb = atol(line + 4);
        else if (strncmp(line, "VmFlags:", 8) == 0) {
            char *tok = strtok(line + 8, " \n");
            while (tok) {
                if (strcmp(tok, "mg") == 0) v.mergeable = 1;
                tok = strtok(NULL, " \n");
            }
        }
    }
    fclose(f);
    return v;
}

#endif
