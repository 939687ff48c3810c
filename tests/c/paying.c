/*
 * A process holding memory of three kinds, for the tests of issue 21
 * (tests/paying.rs): duplicated pages (a few patterns repeated: they merge
 * within the process), unique pages (each different: they never merge)
 * and, with `volatile`, pages rewritten every 100 ms (they change too fast
 * to merge). The three are mapped one after another and coalesce into one
 * VMA, as a program's mappings do: decisions must be finer than a VMA.
 *
 *   paying [volatile] [secret] [wide] | paying mixed N | paying middles N
 *   | paying uffd
 *
 * Prints `part NAME START END` for the duplicated (`dup`), unique
 * (`unique`) and volatile (`volatile`) parts, then `ready`, and waits for lines on stdin:
 *   `fork`   forks a child that sleeps holding every page (the evidence
 *            a fork gives is not merging), printing `forked PID`;
 *   `unfork` ends that child;
 *   `same`   makes the unique pages duplicates (one pattern), printing
 *            `same`;
 *   `check`  prints `intact` if every duplicated page still holds its
 *            pattern;
 *   EOF      ends the program.
 * `wide`: the unique part is 64 MiB in 16 VMAs of 4 MiB, each between
 * read-only pages (one mapping, `part unique` spans it, guards included),
 * so that a rest tick gives back the same piece of each of the 16 at once:
 * 16 splits at the least, more than the VMA budget allows.
 * `secret`: 2 MiB in the middle of the unique part are kept out of core
 * dumps (MADV_DONTDUMP: a secret, excluded), printed as `part secret`.
 * `small N`: instead, N VMAs of 64 KiB of unique pages, each between
 * read-only pages (one mapping); prints `part small` (all of it, guards
 * included), `vmas N` and `ready`, then on
 * `same` makes every page of them alike (printing `same`), until EOF.
 * `mixed N`: instead, N VMAs of 6 MiB each (2 MiB-aligned, between
 * read-only pages), whose middle 2 MiB hold unique pages and whose outer
 * thirds a few duplicated ones: taking each middle out would split each
 * VMA in three. Prints `vmas N` and `ready`.
 * `middles N`: instead, N VMAs of 6 MiB each (2 MiB-aligned, between
 * read-only pages) of unique pages but for their middle 2 MiB, which every
 * process running `middles N` or `copies N` holds alike (no two pages alike
 * within one), printed as `part mI` (I from 0); giving a middle back to
 * ksmd once taken out with its VMA splits that VMA in three. On `more` it
 * maps 800 VMAs more (read-only and inaccessible pages in turn: a larger
 * VMA budget), printing `more`. `copies N`: the N middles alone, each
 * twice over in its own VMA between read-only pages (they merge with each
 * other: paying whatever the other process does); `part mI` is the first.
 * `uffd`: instead, two pieces of 2 MiB of unique pages (`part twin`,
 * `part uffd`), each 2 MiB-aligned between read-only pages, a quarter
 * written; on `fill` `uffd` is registered with a userfaultfd (missing
 * faults) and the rest of it written through the userfaultfd, the rest of
 * `twin` by plain writes, printing `filled`.
 * `pool`: instead, 8 MiB of pages every process running `pool` holds
 * alike (`shared`: no two alike within the process) and 16 MiB of its own
 * (`unique`), one VMA; prints both parts and `ready`, then waits for EOF.
 * `undumpable` first makes the process not dumpable (PR_SET_DUMPABLE 0:
 * its memory kept from its own user's other processes).
 * `heap`: instead, the duplicated and the unique parts are small objects
 * from malloc (the brk heap, which glibc grows with its own `sbrk`: no hook
 * sees it); `blocks`: blocks of 1 MiB from malloc (each mapped by glibc's
 * own hidden `mmap`: no hook sees them either). Prints both parts (the
 * whole pages the objects span) and `ready`, then waits for EOF.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#define MIB (1024 * 1024)
static size_t page;
static volatile char *volatile_part;
static size_t volatile_len;

static char *map(size_t len) {
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    return p;
}

static void fill_unique(char *p, size_t len, unsigned seed) {
    uint64_t x = 0x9e3779b97f4a7c15ull ^ ((uint64_t)getpid() << 20) ^ seed;
    for (size_t i = 0; i < len; i += 8) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        memcpy(p + i, &x, 8);
    }
}

/* Pages alike in every process (not within one); `seed` picks the stream. */
static void fill_shared(char *p, size_t len, unsigned seed) {
    uint64_t x = 0x243f6a8885a308d3ull ^ ((uint64_t)seed << 32);
    for (size_t i = 0; i < len; i += 8) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        memcpy(p + i, &x, 8);
    }
}

static void fill_dup(char *p, size_t len) {
    for (size_t i = 0; i < len; i += page) memset(p + i, 'a' + (int)(i / page % 8), page);
}

static void *rewrite(void *arg) {
    (void)arg;
    for (uint64_t n = 1;; n++) {
        for (size_t i = 0; i < volatile_len; i += page) *(volatile uint64_t *)(volatile_part + i) = n;
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* Allocating is what programs do: news for the library, whose thread a
 * fork retired (it comes back with the next mapping). */
static void news(void) {
    char *volatile m = malloc(8 * MIB);
    m[0] = 1;
    free(m);
}

static void range(const char *what, void *p, size_t len) {
    printf("part %s %p %p\n", what, p, (char *)p + len);
}

/* `len` bytes of malloc'd objects of `size` bytes each, duplicated (every
 * object alike, so whole pages are alike) or unique; prints the whole pages
 * between the first and the last object — for the duplicated ones only the
 * whole 2 MiB pieces (the library's regions): the piece they share with
 * the unique objects may hold too few of them to pay. */
static int by_address(const void *a, const void *b) {
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

static void objects(const char *what, size_t len, size_t size, int unique) {
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    static uintptr_t blocks[64];
    size_t n = 0;
    for (size_t done = 0; done < len; done += size) {
        char *o = malloc(size);
        if (!o) { perror("malloc"); exit(1); }
        if (unique) fill_unique(o, size, (unsigned)done);
        else memset(o, 'd', size);
        if ((uintptr_t)o < lo) lo = (uintptr_t)o;
        if ((uintptr_t)o + size > hi) hi = (uintptr_t)o + size;
        if (size >= MIB && n < 64) blocks[n++] = (uintptr_t)o;
    }
    /* Blocks glibc maps on its own lie one after another, except the odd
     * one that fits a hole elsewhere (beside the loaded libraries): the
     * longest run of adjacent blocks is the part. */
    if (n > 1) {
        qsort(blocks, n, sizeof blocks[0], by_address);
        uintptr_t stride = UINTPTR_MAX;
        for (size_t i = 1; i < n; i++)
            if (blocks[i] - blocks[i - 1] < stride) stride = blocks[i] - blocks[i - 1];
        size_t best = 0, best_len = 1, start = 0;
        for (size_t i = 1; i <= n; i++) {
            if (i < n && blocks[i] - blocks[i - 1] == stride) continue;
            if (i - start > best_len) { best = start; best_len = i - start; }
            start = i;
        }
        lo = blocks[best];
        hi = blocks[best + best_len - 1] + size;
    }
    uintptr_t align = unique ? page : 2 * MIB;
    lo = (lo + align - 1) & ~(uintptr_t)(align - 1);
    hi &= ~(uintptr_t)(align - 1);
    range(what, (void *)lo, hi - lo);
}

int main(int argc, char **argv) {
    page = (size_t)sysconf(_SC_PAGESIZE);
    int want_volatile = 0, want_secret = 0, mixed = 0, small = 0, wide = 0, middles = 0, copies = 0;
    size_t unique_mib = 16;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "volatile")) want_volatile = 1;
        if (!strcmp(argv[i], "secret")) want_secret = 1;
        if (!strcmp(argv[i], "wide")) { unique_mib = 64; wide = 1; }
        if (!strcmp(argv[i], "mixed") && i + 1 < argc) mixed = atoi(argv[++i]);
        if (!strcmp(argv[i], "small") && i + 1 < argc) small = atoi(argv[++i]);
        if (!strcmp(argv[i], "middles") && i + 1 < argc) middles = atoi(argv[++i]);
        if (!strcmp(argv[i], "copies") && i + 1 < argc) copies = atoi(argv[++i]);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "undumpable") && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)) { perror("prctl"); return 1; }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "pool")) continue;
        char *shared = map(8 * MIB), *own = map(16 * MIB);
        fill_shared(shared, 8 * MIB, 0);
        fill_unique(own, 16 * MIB, 7);
        range("shared", shared, 8 * MIB);
        range("unique", own, 16 * MIB);
        printf("ready\n");
        char line[64];
        while (fgets(line, sizeof line, stdin)) {}
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        int heap = !strcmp(argv[i], "heap"), blocks = !strcmp(argv[i], "blocks");
        if (!heap && !blocks) continue;
        size_t size = heap ? 248 : MIB;
        objects("dup", 16 * MIB, size, 0);
        objects("unique", 24 * MIB, size, 1);
        printf("ready\n");
        char line[64];
        while (fgets(line, sizeof line, stdin)) {}
        return 0;
    }
    if (small) {
        /* guard, 64 KiB, guard, 64 KiB, ..., guard */
        size_t each = 64 * 1024, stride = each + page, len = (size_t)small * stride + page;
        char *p = map(len);
        for (int i = 0; i <= small; i++)
            if (mprotect(p + (size_t)i * stride, page, PROT_READ)) { perror("mprotect"); return 1; }
        for (int i = 0; i < small; i++) fill_unique(p + (size_t)i * stride + page, each, (unsigned)i);
        range("small", p, len);
        printf("vmas %d\nready\n", small);
        char line[64];
        while (fgets(line, sizeof line, stdin)) {
            if (strncmp(line, "same", 4)) continue;
            for (int i = 0; i < small; i++) memset(p + (size_t)i * stride + page, 'z', each);
            printf("same\n");
        }
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "uffd")) continue;
        /* Two pieces of unique pages, each 2 MiB (aligned) between read-only
         * pages, a quarter written (being filled); on `fill` the one named
         * `uffd` is registered with a userfaultfd (missing faults) and the
         * rest of it filled through the userfaultfd, the `twin` by writes. */
        char *piece[2];
        for (int k = 0; k < 2; k++) {
            char *raw = map(6 * MIB);
            piece[k] = (char *)(((uintptr_t)raw + 2 * MIB) & ~(uintptr_t)(2 * MIB - 1));
            if (mprotect(piece[k] - page, page, PROT_READ) || mprotect(piece[k] + 2 * MIB, page, PROT_READ)) {
                perror("mprotect");
                return 1;
            }
            /* A huge page would make the first write fill the piece. */
            madvise(piece[k], 2 * MIB, MADV_NOHUGEPAGE);
            fill_unique(piece[k], MIB / 2, 100 + (unsigned)k);
        }
        range("twin", piece[0], 2 * MIB);
        range("uffd", piece[1], 2 * MIB);
        printf("ready\n");
        char line[64];
        int uffd = -1;
        while (fgets(line, sizeof line, stdin)) {
            if (strncmp(line, "fill", 4) || uffd >= 0) continue;
            uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
            struct uffdio_api api = {.api = UFFD_API};
            struct uffdio_register reg = {
                .range = {.start = (uintptr_t)piece[1], .len = 2 * MIB},
                .mode = UFFDIO_REGISTER_MODE_MISSING,
            };
            if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) || ioctl(uffd, UFFDIO_REGISTER, &reg)) {
                perror("userfaultfd");
                return 1;
            }
            char *rest = map(2 * MIB - MIB / 2);
            fill_unique(rest, 2 * MIB - MIB / 2, 200);
            struct uffdio_copy copy = {
                .dst = (uintptr_t)piece[1] + MIB / 2,
                .src = (uintptr_t)rest,
                .len = 2 * MIB - MIB / 2,
            };
            if (ioctl(uffd, UFFDIO_COPY, &copy) || copy.copy != (long long)copy.len) {
                perror("UFFDIO_COPY");
                return 1;
            }
            munmap(rest, 2 * MIB - MIB / 2);
            fill_unique(piece[0] + MIB / 2, 2 * MIB - MIB / 2, 300);
            printf("filled\n");
        }
        return 0;
    }
    if (middles || copies) {
        /* guard, 6 MiB (2 MiB-aligned), guard: unique thirds around a middle
         * every process running `middles` or `copies` holds alike (stream
         * i + 1 for the i-th), or the middle alone. */
        int n = middles ? middles : copies;
        size_t len = middles ? 6 * MIB : 4 * MIB, at = middles ? 2 * MIB : 0;
        for (int i = 0; i < n; i++) {
            char *raw = map(len + 4 * MIB);
            char *p = (char *)(((uintptr_t)raw + 2 * MIB) & ~(uintptr_t)(2 * MIB - 1));
            if (mprotect(p - page, page, PROT_READ) || mprotect(p + len, page, PROT_READ)) {
                perror("mprotect");
                return 1;
            }
            if (middles) {
                fill_unique(p, 2 * MIB, 2 * (unsigned)i);
                fill_unique(p + 4 * MIB, 2 * MIB, 2 * (unsigned)i + 1);
            }
            fill_shared(p + at, 2 * MIB, (unsigned)i + 1);
            /* Copies twice over: they merge with each other, so they pay
             * whenever the other process's middles come back. */
            if (copies) fill_shared(p + 2 * MIB, 2 * MIB, (unsigned)i + 1);
            char name[32];
            snprintf(name, sizeof name, "m%d", i);
            range(name, p + at, 2 * MIB);
        }
        printf("ready\n");
        char line[64];
        while (fgets(line, sizeof line, stdin)) {
            if (strncmp(line, "more", 4)) continue;
            /* 800 VMAs: read-only and inaccessible pages in turn. */
            char *q = mmap(NULL, 800 * page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (q == MAP_FAILED) { perror("mmap"); return 1; }
            for (int i = 0; i < 800; i += 2)
                if (mprotect(q + (size_t)i * page, page, PROT_NONE)) { perror("mprotect"); return 1; }
            news();
            printf("more\n");
        }
        return 0;
    }
    if (mixed) {
        for (int i = 0; i < mixed; i++) {
            char *raw = map(10 * MIB);
            char *p = (char *)(((uintptr_t)raw + 2 * MIB) & ~(uintptr_t)(2 * MIB - 1));
            mprotect(p - page, page, PROT_READ);
            mprotect(p + 6 * MIB, page, PROT_READ);
            fill_dup(p, 64 * page);
            fill_unique(p + 2 * MIB, 2 * MIB, i);
            fill_dup(p + 4 * MIB, 64 * page);
        }
        printf("vmas %d\nready\n", mixed);
        char line[64];
        while (fgets(line, sizeof line, stdin)) {}
        return 0;
    }
    size_t dup_len = 16 * MIB, unique_len = unique_mib * MIB;
    char *dup = map(dup_len);
    char *unique;
    if (wide) {
        /* guard, 4 MiB, guard, 4 MiB, ..., guard */
        size_t each = 4 * MIB, count = unique_len / each;
        unique_len = count * (each + page) + page;
        unique = map(unique_len);
        for (size_t i = 0; i < count; i++) {
            char *guard = unique + i * (each + page);
            if (mprotect(guard, page, PROT_READ)) { perror("mprotect"); return 1; }
            fill_unique(guard + page, each, (unsigned)i);
        }
        if (mprotect(unique + unique_len - page, page, PROT_READ)) { perror("mprotect"); return 1; }
    } else {
        unique = map(unique_len);
        fill_unique(unique, unique_len, 0);
    }
    fill_dup(dup, dup_len);
    range("dup", dup, dup_len);
    range("unique", unique, unique_len);
    if (want_secret) {
        char *secret = unique + 6 * MIB;
        if (madvise(secret, 2 * MIB, MADV_DONTDUMP)) { perror("madvise"); return 1; }
        range("secret", secret, 2 * MIB);
    }
    if (want_volatile) {
        volatile_len = 8 * MIB;
        volatile_part = map(volatile_len);
        fill_unique((char *)volatile_part, volatile_len, 1);
        range("volatile", (void *)volatile_part, volatile_len);
        pthread_t t;
        pthread_create(&t, NULL, rewrite, NULL);
    }
    printf("ready\n");
    char line[64];
    pid_t child = 0;
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "fork", 4)) {
            child = fork();
            if (child == 0) { for (;;) pause(); }
            news();
            printf("forked %d\n", child);
        } else if (!strncmp(line, "unfork", 6) && child > 0) {
            kill(child, SIGKILL);
            waitpid(child, NULL, 0);
            child = 0;
            news();
            printf("unforked\n");
        } else if (!strncmp(line, "same", 4)) {
            for (size_t i = 0; i < unique_len; i += page)
                if (!wide || i % (4 * MIB + page)) memset(unique + i, 'z', page); /* not a guard */
            printf("same\n");
        } else if (!strncmp(line, "check", 5)) {
            int ok = 1;
            for (size_t i = 0; i < dup_len; i += page)
                for (size_t j = 0; j < page; j++)
                    if (dup[i + j] != 'a' + (int)(i / page % 8)) ok = 0;
            printf(ok ? "intact\n" : "corrupt\n");
        }
    }
    if (child > 0) { kill(child, SIGKILL); waitpid(child, NULL, 0); }
    return 0;
}
