/*
 * Helpers of the exclusion and secret test programs (secrets.c,
 * exclusions.c): whether any VMA overlapping a range carries the `mg`
 * (mergeable) flag, isolated anonymous regions, and a way to wait until the
 * advise engine's catch-up scan has run. Header-only, static functions.
 */
#ifndef RANGE_PROBE_H
#define RANGE_PROBE_H

#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static inline size_t page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }

/* 1 if any VMA overlapping [addr, addr + len) has VmFlags `mg`, 0 if none,
 * -1 if no VMA overlaps it at all. */
static inline int range_mg(const void *addr, size_t len) {
    unsigned long a = (unsigned long)addr, b = a + len;
    char line[1024];
    int inside = 0, found = 0, mg = 0;
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &s, &e, perms) == 3 && strchr(line, '-') < strchr(line, ' ')) {
            inside = s < b && a < e;
            found |= inside;
            continue;
        }
        if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            char *tok = strtok(line + 8, " \n");
            while (tok) {
                if (strcmp(tok, "mg") == 0) mg = 1;
                tok = strtok(NULL, " \n");
            }
        }
    }
    fclose(f);
    return found ? mg : -1;
}

/* `pages` pages of private anonymous memory between two read-only pages
 * (so its VMA never merges with a neighbour; not PROT_NONE, which the
 * catch-up scan takes for a thread stack's guard), through the libc mmap
 * (the preload's hook sees it) or a raw system call (no hook does). */
static inline char *isolated_region(size_t pages, int raw) {
    size_t page = page_size(), len = (pages + 2) * page;
    char *p = raw ? (char *)syscall(SYS_mmap, NULL, len, PROT_READ | PROT_WRITE,
                                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                  : mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    if (raw) {
        syscall(SYS_mprotect, p, page, PROT_READ);
        syscall(SYS_mprotect, p + len - page, page, PROT_READ);
    } else {
        mprotect(p, page, PROT_READ);
        mprotect(p + len - page, page, PROT_READ);
    }
    memset(p + page, 0, pages * page);
    return p + page;
}

/* Gives the catch-up scan (advise engine) the hook calls it polls from,
 * until a fresh region no hook saw becomes mergeable: a scan ran after this
 * call started. Returns 1, or 0 after 20 s. Under `process`, merge-any makes
 * the region mergeable at once. */
static inline int wait_catch_up(void) {
    char *probe = isolated_region(1, 1);
    probe[0] = 1;
    time_t deadline = time(NULL) + 20;
    while (range_mg(probe, 1) != 1) {
        if (time(NULL) > deadline) return 0;
        for (int i = 0; i < 256; i++) {
            void *volatile q = malloc(16);
            free(q);
        }
        usleep(2000);
    }
    return 1;
}

#endif
