/*
 * Coverage program: builds PAGES identical pages through one allocation path,
 * lets ksmd work, and prints how many of this process's pages KSM merged.
 *
 *   coverage PATH [PAGES]
 *   PATH: mmap | reserve | malloc_large | brk | arena | syscall | fork | exec
 *         | quiet (raw syscall mmap, then it waits and reads in raw system
 *           calls only: it makes no call the library sees after the map)
 *
 * Like a real service it keeps running and calling into libc while it waits
 * (it reads ksmd's counters with stdio and sleeps 10 ms at a time). It waits
 * at least 2 s and 3 full ksmd scans, then until the merged count is stable
 * over 2 more scans, then rewrites every page with distinct content and reads
 * it back. Output: "merged N", "pages N" and "integrity ok|BAD".
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ksm_probe.h"

static size_t page;
static long pages = 1024;
static unsigned char **page_ptrs; /* every duplicate page, whatever the path */
static long n_ptrs;

static long merged(void) { return probe_merged_pages(); }

static long full_scans(void) { return probe_full_scans(); }

static void wait_scans(int n) { probe_wait_full_scans(n, 120); }

/* Same content on every page (not zero, so the zero-page path is not used). */
static void fill_dup(unsigned char *p) {
    for (size_t i = 0; i < page; i++) p[i] = (unsigned char)(i * 7 + 1);
}

static void add_page(unsigned char *p) { page_ptrs[n_ptrs++] = p; }

/* Pages fully inside [start, start+len) become duplicate pages. */
static void dup_pages_in(unsigned char *start, size_t len) {
    uintptr_t a = ((uintptr_t)start + page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t end = ((uintptr_t)start + len) & ~(uintptr_t)(page - 1);
    for (; a < end && n_ptrs < pages; a += page) { fill_dup((unsigned char *)a); add_page((unsigned char *)a); }
}

static void build_mmap(void) {
    unsigned char *p = mmap(NULL, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) exit(1);
    dup_pages_in(p, pages * page);
}

static void build_reserve(void) {
    /* JVM/V8 heap pattern: reserve without access, commit in pieces later. */
    size_t len = pages * page * 4;
    unsigned char *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) exit(1);
    for (long i = 0; i < pages; i += 64) {
        if (mprotect(p + i * page, 64 * page, PROT_READ | PROT_WRITE) != 0) exit(1);
        dup_pages_in(p + i * page, 64 * page);
    }
}

static void build_malloc_large(void) {
    /* glibc serves these with its internal mmap */
    while (n_ptrs < pages) {
        unsigned char *b = malloc(65 * page);
        if (!b) exit(1);
        dup_pages_in(b, 65 * page);
    }
}

/* Small objects: every page fully covered by objects gets the same bytes. */
static void build_small_objects(void) {
    size_t obj = 496; /* + 16 bytes header: 512-byte chunks */
    long want = pages;
    /* Where the current run of our chunks, one right after the other,
       begins: a page is ours to rewrite whole only inside such a run (the
       process may allocate too: stdio, or the preload's catch-up thread,
       whose thread-local storage glibc allocates from this heap). */
    uintptr_t run_start = 0, next_chunk = 0;
    while (n_ptrs < want) {
        unsigned char *b = malloc(obj);
        if (!b) exit(1);
        uintptr_t chunk = (uintptr_t)b - 16;
        if (chunk != next_chunk) run_start = chunk;
        next_chunk = chunk + obj + 16;
        for (size_t i = 0; i < obj; i++) b[i] = (unsigned char)((((uintptr_t)(b + i)) & (page - 1)) * 7 + 1);
        /* count pages once they are completely filled */
        uintptr_t pg = ((uintptr_t)b) & ~(uintptr_t)(page - 1);
        if (pg - page >= run_start && (n_ptrs == 0 || (uintptr_t)page_ptrs[n_ptrs - 1] < pg - page))
            add_page((unsigned char *)(pg - page));
    }
    /* the chunk headers inside each page differ from the pattern: rewrite
       every counted page whole (headers of free-list-less, never-freed chunks
       are not read again by malloc except on free, which we never do) */
    for (long i = 0; i < n_ptrs; i++) fill_dup(page_ptrs[i]);
}

static void *arena_thread(void *arg) {
    (void)arg;
    build_small_objects();
    return NULL;
}

static void build_arena(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, arena_thread, NULL) != 0) exit(1);
    pthread_join(t, NULL);
}

static void build_syscall(void) {
    unsigned char *p = (unsigned char *)syscall(SYS_mmap, NULL, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) exit(1);
    dup_pages_in(p, pages * page);
}

/* A number from a /proc or /sys file, read with a raw system call: no call
   the library sees (any hooked call may take the catch-up's scheduled pass),
   no stdio. */
static long quiet_read(const char *path, const char *key) {
    static char buf[4096];
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = syscall(SYS_read, fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *at = key ? strstr(buf, key) : buf;
    return at ? atol(at + (key ? strlen(key) : 0)) : -1;
}

static long quiet_merged(void) {
    long m = quiet_read("/proc/self/ksm_stat", "ksm_merging_pages ");
    long z = quiet_read("/proc/self/ksm_stat", "ksm_zero_pages ");
    return (m > 0 ? m : 0) + (z > 0 ? z : 0);
}

static void quiet_wait_scans(long n) {
    long target = quiet_read("/sys/kernel/mm/ksm/full_scans", NULL) + n;
    for (int i = 0; i < 12000 && quiet_read("/sys/kernel/mm/ksm/full_scans", NULL) < target; i++) {
        /* A raw system call: a sleep no hook sees. */
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        syscall(SYS_nanosleep, &ts, NULL);
    }
}

static int quiet = 0;

static int measure_and_check(void) {
    time_t settle = time(NULL) + 2;
    if (quiet) {
        quiet_wait_scans(3);
        while (time(NULL) < settle) quiet_wait_scans(1);
        long now = quiet_merged();
        for (int i = 0; i < 3; i++) { quiet_wait_scans(2); now = quiet_merged(); }
        printf("merged %ld\n", now);
        goto integrity;
    }
    wait_scans(3);
    while (time(NULL) < settle) { full_scans(); usleep(10000); }
    long last = -1, now = merged();
    for (int i = 0; i < 10 && now != last; i++) {
        last = now;
        wait_scans(2);
        now = merged();
    }
    printf("merged %ld\n", now);
integrity:
    /* integrity: distinct content per page, read back */
    for (long i = 0; i < n_ptrs; i++) memset(page_ptrs[i], (int)(i % 251) + 1, page);
    int ok = 1;
    for (long i = 0; i < n_ptrs; i++)
        for (size_t j = 0; j < page; j += 512)
            if (page_ptrs[i][j] != (unsigned char)((i % 251) + 1)) ok = 0;
    printf("pages %ld\nintegrity %s\n", n_ptrs, ok ? "ok" : "BAD");
    fflush(stdout);
    return ok ? 0 : 2;
}

int main(int argc, char **argv) {
    page = sysconf(_SC_PAGESIZE);
    if (argc < 2) return 64;
    if (argc > 2) pages = atol(argv[2]);
    page_ptrs = calloc(pages + 1, sizeof *page_ptrs);
    const char *path = argv[1];
    if (!strcmp(path, "mmap")) build_mmap();
    else if (!strcmp(path, "reserve")) build_reserve();
    else if (!strcmp(path, "malloc_large")) build_malloc_large();
    else if (!strcmp(path, "brk")) build_small_objects();
    else if (!strcmp(path, "arena")) build_arena();
    else if (!strcmp(path, "syscall")) build_syscall();
    else if (!strcmp(path, "quiet")) { quiet = 1; build_syscall(); }
    else if (!strcmp(path, "fork")) {
        fflush(stdout);
        pid_t c = fork();
        if (c == 0) { build_mmap(); build_small_objects(); exit(measure_and_check()); }
        int st;
        waitpid(c, &st, 0);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 3;
    } else if (!strcmp(path, "exec")) {
        char n[32];
        snprintf(n, sizeof n, "%ld", pages);
        execl("/proc/self/exe", argv[0], "exec-child", n, (char *)NULL);
        return 4;
    } else if (!strcmp(path, "exec-child")) { build_mmap(); build_small_objects(); }
    else return 64;
    return measure_and_check();
}
