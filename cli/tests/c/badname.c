/*
 * A process whose name and memory map are not UTF-8: its comm is
 * "\xff\xfeworker" (prctl PR_SET_NAME takes any bytes but NUL, so any
 * process can name itself so) and it maps a file whose path holds the bytes
 * \xff\xfe (the kernel prints a mapped path as it is, only a newline
 * escaped). Besides, 512 pages of private anonymous memory, all alike,
 * asked for merging (madvise MADV_MERGEABLE), so that KSM tools list it.
 *
 * Usage: badname MODE DIR [PIDFILE]
 *   stay    named first, then mapped; says "ready PID" on stderr and waits
 *           until killed
 *   nobody  the same, after dropping to uid and gid 65534 (the file is made
 *           and mapped first, as root): a process of another user
 *   setsid  forks a worker that calls setsid, then does what `stay` does and
 *           appends its pid to PIDFILE; the parent (named as it was) waits
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#define PAGES 512

static void fail(const char *what) {
    perror(what);
    exit(1);
}

/* DIR/\xff\xfedata-PID, four pages long, mapped privately and read. */
static void map_badly_named_file(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/\xff\xfe" "data-%d", dir, (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) fail("open");
    char page[4096];
    memset(page, 'd', sizeof page);
    for (int i = 0; i < 4; i++)
        if (write(fd, page, sizeof page) != sizeof page) fail("write");
    volatile char *m = mmap(NULL, 4 * 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) fail("mmap file");
    for (int i = 0; i < 4; i++) (void)m[i * 4096];
    close(fd);
}

static void mergeable_memory(void) {
    size_t len = PAGES * 4096;
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail("mmap");
    memset(p, 0x5a, len);
    if (madvise(p, len, MADV_MERGEABLE) != 0) fail("madvise");
}

static void drop_to_nobody(void) {
    if (setgroups(0, NULL) != 0 || setresgid(65534, 65534, 65534) != 0 ||
        setresuid(65534, 65534, 65534) != 0)
        fail("drop to nobody");
    /* As after an exec: /proc/PID belongs to the user it now runs as. */
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
}

static void become_bad(const char *dir, int nobody) {
    if (prctl(PR_SET_NAME, "\xff\xfeworker", 0, 0, 0) != 0) fail("PR_SET_NAME");
    map_badly_named_file(dir);
    if (nobody) drop_to_nobody();
    mergeable_memory();
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: badname stay|nobody|setsid DIR [PIDFILE]\n");
        return 2;
    }
    const char *mode = argv[1], *dir = argv[2];
    if (!strcmp(mode, "setsid")) {
        if (argc < 4) return 2;
        pid_t pid = fork();
        if (pid < 0) fail("fork");
        if (pid == 0) {
            if (setsid() < 0) fail("setsid");
            become_bad(dir, 0);
            FILE *f = fopen(argv[3], "a");
            if (!f) fail("fopen");
            fprintf(f, "%d\n", (int)getpid());
            fclose(f);
            for (;;) pause();
        }
        for (;;) pause();
    }
    become_bad(dir, !strcmp(mode, "nobody"));
    fprintf(stderr, "ready %d\n", (int)getpid());
    for (;;) pause();
}
