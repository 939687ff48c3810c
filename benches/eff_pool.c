/*
 * One worker of a synthetic pool of scripts/bench-efficiency: private
 * anonymous memory in three kinds, each worker of a pool holding the same
 * "dup" data, data of its own ("unique") and data it keeps changing
 * ("volatile": one word of every page rewritten every second).
 *
 *   cc -O2 -o eff_pool benches/eff_pool.c
 *   eff_pool worker=K layout=L dup=MiB unique=MiB volatile=MiB
 *            mark=M [late=SECS] [ready=FILE]
 *
 * layout (how the kernel and the hooks see the three areas):
 *   coalesced  three anonymous mmaps one after another (dup, unique,
 *              volatile): the kernel places them side by side and they
 *              coalesce into one VMA, as in issue 21's pool
 *   separate   the same three areas, each its own VMA (a one-page hole
 *              between them, so they cannot coalesce)
 *   small:KIB  the same amounts cut into mappings of KIB KiB, the kinds
 *              alternating in proportion to their shares, each mapping its
 *              own VMA (a one-page hole after each)
 *   heap       small objects (32 to 480 bytes) from malloc, i.e. the brk
 *              heap, which no mmap hook sees: the dup objects first, then
 *              the unique ones, then the volatile ones (one word per page
 *              rewritten every second)
 * mark: none (nothing: the baseline, and the library's variant, where the
 *   preload does the work), merge-any (prctl(PR_SET_MEMORY_MERGE, 1) before
 *   anything is mapped), oracle (madvise(MADV_MERGEABLE) on exactly the dup
 *   data: each dup area or mapping; for the heap, the whole pages between the
 *   first and the last dup object).
 * late=SECS: the dup data starts as data of this worker's own and is
 *   rewritten to the shared content SECS seconds after start (mark=oracle
 *   marks it at that moment, when it becomes duplicate).
 *
 * Contents come from a counter-based generator: page (or object) i of a
 * stream is the same in every worker for the dup stream and differs per
 * worker for the others; no two pages of one worker are alike, so all the
 * merging there is to find is across workers. Once loaded, the worker writes
 * "vmas N" (the VMAs its data lies in, from /proc/self/maps) to
 * FILE.tmp and renames it to FILE, then rewrites its volatile data every
 * second until killed (it dies with its parent: PR_SET_PDEATHSIG).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#endif

#define PAGE 4096UL
#define MiB (1024UL * 1024UL)
#define MAX_AREAS 65536

enum kind { DUP, UNIQUE, VOLATILE };
enum mark { MARK_NONE, MARK_MERGE_ANY, MARK_ORACLE };

struct area { char *addr; size_t len; enum kind kind; };

/* Parsed arguments; no allocation before the heap layout has made its objects,
 * so that every worker's heap is laid out alike. */
static struct {
    long worker;
    const char *layout;
    size_t dup, unique, volatile_;
    enum mark mark;
    long late;
    const char *ready;
} opt = { .layout = "coalesced", .late = 0 };

static struct area areas[MAX_AREAS];
static size_t nareas;
/* heap layout: the dup objects' span and (late only) each dup object; one
 * pointer per page of volatile objects. These arrays are mmap'd, not on the
 * heap. */
static char *heap_dup_lo, *heap_dup_hi;
static uint64_t **heap_dup_objects;
static size_t heap_ndup;
static uint64_t **heap_volatile_words;
static size_t heap_nvolatile;

static uint64_t stream_of(enum kind kind, int shared_late) {
    if (kind == DUP && !shared_late && opt.late > 0)
        return 0x3000 + (uint64_t)opt.worker;   /* unique until it turns dup */
    switch (kind) {
    case DUP: return 0xD0D0D0D0ULL;
    case UNIQUE: return 0x1000 + (uint64_t)opt.worker;
    default: return 0x2000 + (uint64_t)opt.worker;
    }
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* words n of item `index` of `stream`: the same in every worker for equal arguments */
static void fill(uint64_t *w, size_t n, uint64_t stream, uint64_t index) {
    uint64_t s = stream * 0x100000001B3ULL ^ (index + 1) * 0xC2B2AE3D27D4EB4FULL;
    for (size_t i = 0; i < n; i++)
        w[i] = splitmix(&s);
}

static void die(const char *what) {
    fprintf(stderr, "eff_pool: %s: %s\n", what, strerror(errno));
    exit(1);
}

static size_t parse_mib(const char *v) { return (size_t)strtoul(v, NULL, 10) * MiB; }

static void parse_args(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        char *a = argv[i], *v = strchr(a, '=');
        if (!v) { fprintf(stderr, "eff_pool: argument '%s' is not key=value\n", a); exit(2); }
        v++;
        if (!strncmp(a, "worker=", 7)) opt.worker = atol(v);
        else if (!strncmp(a, "layout=", 7)) opt.layout = v;
        else if (!strncmp(a, "dup=", 4)) opt.dup = parse_mib(v);
        else if (!strncmp(a, "unique=", 7)) opt.unique = parse_mib(v);
        else if (!strncmp(a, "volatile=", 9)) opt.volatile_ = parse_mib(v);
        else if (!strncmp(a, "late=", 5)) opt.late = atol(v);
        else if (!strncmp(a, "ready=", 6)) opt.ready = v;
        else if (!strcmp(a, "mark=none")) opt.mark = MARK_NONE;
        else if (!strcmp(a, "mark=merge-any")) opt.mark = MARK_MERGE_ANY;
        else if (!strcmp(a, "mark=oracle")) opt.mark = MARK_ORACLE;
        else { fprintf(stderr, "eff_pool: unknown argument '%s'\n", a); exit(2); }
    }
}

static char *map_anon(void *at, size_t len) {
    int fixed = at ? MAP_FIXED : 0;
    char *p = mmap(at, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | fixed, -1, 0);
    if (p == MAP_FAILED) die("mmap");
    return p;
}

static void add_area(char *addr, size_t len, enum kind kind) {
    if (nareas == MAX_AREAS) { fprintf(stderr, "eff_pool: too many areas\n"); exit(2); }
    areas[nareas++] = (struct area){ addr, len, kind };
}

/* coalesced: plain mmaps in a row; separate: one reservation, the areas
 * mapped into it with a page left unmapped after each */
static void layout_areas(int holes) {
    size_t lens[3] = { opt.dup, opt.unique, opt.volatile_ };
    if (!holes) {
        for (int k = 0; k < 3; k++)
            if (lens[k]) add_area(map_anon(NULL, lens[k]), lens[k], (enum kind)k);
        return;
    }
    char *base = mmap(NULL, lens[0] + lens[1] + lens[2] + 3 * PAGE, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) die("mmap reservation");
    for (int k = 0; k < 3; k++) {
        if (lens[k]) add_area(map_anon(base, lens[k]), lens[k], (enum kind)k);
        if (munmap(base + lens[k], PAGE)) die("munmap");
        base += lens[k] + PAGE;
    }
}

/* small:KIB: mappings of one size, the kinds interleaved by weighted round robin */
static void layout_small(size_t chunk) {
    size_t want[3] = { opt.dup / chunk, opt.unique / chunk, opt.volatile_ / chunk };
    size_t total = want[0] + want[1] + want[2], done[3] = { 0, 0, 0 };
    char *base = mmap(NULL, total * (chunk + PAGE), PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) die("mmap reservation");
    for (size_t i = 0; i < total; i++) {
        int k = 0;   /* the kind furthest behind its share */
        double best = 2.0;
        for (int j = 0; j < 3; j++) {
            if (done[j] >= want[j]) continue;
            double share = (double)(done[j] + 1) / (double)want[j];
            if (share < best) { best = share; k = j; }
        }
        done[k]++;
        char *p = base + i * (chunk + PAGE);
        add_area(map_anon(p, chunk), chunk, (enum kind)k);
        if (munmap(p + chunk, PAGE)) die("munmap");
    }
}

static void fill_areas(int shared_late) {
    /* pages numbered within their kind, so dup page i is alike in every worker */
    uint64_t next_index[3] = { 0, 0, 0 };
    for (size_t a = 0; a < nareas; a++) {
        struct area *ar = &areas[a];
        if (shared_late && ar->kind != DUP) continue;
        uint64_t stream = stream_of(ar->kind, shared_late);
        for (size_t off = 0; off < ar->len; off += PAGE)
            fill((uint64_t *)(ar->addr + off), PAGE / 8, stream, next_index[ar->kind]++);
    }
}

static size_t object_size(uint64_t j) { return 32 + (size_t)((j * 37) % 15) * 32; }

static void *map_array(size_t n) {
    void *p = mmap(NULL, n * sizeof(void *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("mmap");
    return p;
}

/* heap: objects from malloc, one kind after another; returns when done */
static void layout_heap(void) {
    size_t lens[3] = { opt.dup, opt.unique, opt.volatile_ };
    size_t max_pages = opt.volatile_ / PAGE * 2 + 16;
    heap_volatile_words = map_array(max_pages);
    if (opt.late > 0) heap_dup_objects = map_array(opt.dup / 32 + 1);
    for (int k = 0; k < 3; k++) {
        uint64_t stream = stream_of((enum kind)k, 0);
        uintptr_t last_page = 0;
        for (size_t made = 0, j = 0; made < lens[k]; j++) {
            size_t n = object_size(j);
            uint64_t *o = malloc(n);
            if (!o) die("malloc");
            fill(o, n / 8, stream, j);
            made += n;
            if (k == DUP) {
                if (!heap_dup_lo) heap_dup_lo = (char *)o;
                heap_dup_hi = (char *)o + n;
                if (heap_dup_objects) heap_dup_objects[heap_ndup++] = o;
            } else if (k == VOLATILE && (uintptr_t)o / PAGE != last_page && heap_nvolatile < max_pages) {
                heap_volatile_words[heap_nvolatile++] = o;
                last_page = (uintptr_t)o / PAGE;
            }
        }
    }
}

/* late dup data on the heap: the dup objects rewritten with the shared stream */
static void refill_heap_dup(void) {
    for (size_t j = 0; j < heap_ndup; j++)
        fill(heap_dup_objects[j], object_size(j) / 8, stream_of(DUP, 1), j);
}

static void mark_oracle(int heap) {
    if (heap) {
        uintptr_t lo = ((uintptr_t)heap_dup_lo + PAGE - 1) & ~(PAGE - 1);
        uintptr_t hi = (uintptr_t)heap_dup_hi & ~(PAGE - 1);
        if (hi > lo && madvise((void *)lo, hi - lo, MADV_MERGEABLE)) die("madvise");
        return;
    }
    for (size_t a = 0; a < nareas; a++)
        if (areas[a].kind == DUP && madvise(areas[a].addr, areas[a].len, MADV_MERGEABLE)) die("madvise");
}

static void rewrite_volatile(uint64_t tick, int heap) {
    if (heap) {
        for (size_t i = 0; i < heap_nvolatile; i++)
            heap_volatile_words[i][0] = tick * 0x9E3779B97F4A7C15ULL + i;
        return;
    }
    for (size_t a = 0; a < nareas; a++)
        if (areas[a].kind == VOLATILE)
            for (size_t off = 0; off < areas[a].len; off += PAGE)
                ((volatile uint64_t *)(areas[a].addr + off))[(tick + off / PAGE) % (PAGE / 8)] = tick;
}

/* the VMAs of /proc/self/maps that hold any of the data */
static long count_vmas(int heap) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) die("/proc/self/maps");
    char line[512];
    long n = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) != 2) continue;
        if (heap) {
            n += strstr(line, "[heap]") != NULL;
            continue;
        }
        for (size_t a = 0; a < nareas; a++)
            if (lo < (uintptr_t)areas[a].addr + areas[a].len && hi > (uintptr_t)areas[a].addr) { n++; break; }
    }
    fclose(f);
    return n;
}

static void write_ready(long vmas) {
    if (!opt.ready) return;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", opt.ready);
    FILE *f = fopen(tmp, "w");
    if (!f) die(tmp);
    fprintf(f, "vmas %ld\nlayout %s\n", vmas, opt.layout);
    if (fclose(f) || rename(tmp, opt.ready)) die("ready file");
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1) return 1;   /* the bench is gone already */
    if (opt.mark == MARK_MERGE_ANY && prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0)) die("prctl(PR_SET_MEMORY_MERGE)");
    int heap = !strcmp(opt.layout, "heap");
    if (heap) layout_heap();
    else if (!strcmp(opt.layout, "coalesced")) layout_areas(0);
    else if (!strcmp(opt.layout, "separate")) layout_areas(1);
    else if (!strncmp(opt.layout, "small:", 6)) layout_small((size_t)atol(opt.layout + 6) * 1024);
    else { fprintf(stderr, "eff_pool: unknown layout '%s'\n", opt.layout); return 2; }
    if (!heap) fill_areas(0);
    if (opt.mark == MARK_ORACLE && opt.late == 0) mark_oracle(heap);
    write_ready(count_vmas(heap));

    double start = now(), next = start + 1.0;
    int late_done = opt.late == 0;
    for (uint64_t tick = 1;; tick++) {
        struct timespec ts = { (time_t)next, (long)((next - (time_t)next) * 1e9) };
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
        next += 1.0;
        rewrite_volatile(tick, heap);
        if (!late_done && now() - start >= opt.late) {
            if (heap) refill_heap_dup(); else fill_areas(1);
            if (opt.mark == MARK_ORACLE) mark_oracle(heap);
            late_done = 1;
        }
    }
}
