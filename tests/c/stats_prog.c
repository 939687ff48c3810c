/*
 * The C side of tests/stats.rs: one scenario per first argument, each doing
 * a known set of mappings so the exit report's numbers can be checked.
 *
 *   maps          5 private anonymous 64 KiB regions (touched), 1 MAP_SHARED
 *                 anonymous region, 1 private file mapping; prints "pid N";
 *                 exits 0.
 *   nothing       maps nothing, prints nothing, exits 0.
 *   exit7         the 5 regions, prints "sigpipe_default 0|1" and
 *                 "done" on stdout, exits 7.
 *   thread-exit   the 5 regions, then a second thread calls exit(0) while
 *                 main is blocked in pthread_join.
 *   close-stdio   the 5 regions, closes stdout and stderr, returns 0.
 *   fork          maps 3 regions, forks; the child maps 2 more and exits 0;
 *                 the parent waits, maps 1 more, prints
 *                 "parent N" / "child N" pids and exits 0.
 *   ksm           64 identical non-zero pages in one mmap region, waits for
 *                 3 full ksmd scans after filling them; prints
 *                 "merged N" (this process's merged pages) and exits 0,
 *                 or exits 2 if ksmd made no progress.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ksm_probe.h"

#define REGION (64 * 1024)

static void *map_anon(size_t len) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    memset(p, 0x5a, len);
    return p;
}

static void map_regions(int n) {
    for (int i = 0; i < n; i++) map_anon(REGION);
}

static void map_the_mix(void) {
    map_regions(5);
    void *shared = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) { perror("mmap shared"); exit(1); }
    int fd = open("/proc/self/exe", O_RDONLY);
    if (fd < 0) { perror("open"); exit(1); }
    void *file = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    if (file == MAP_FAILED) { perror("mmap file"); exit(1); }
    close(fd);
}

static void *exit_from_thread(void *arg) {
    (void)arg;
    exit(0);
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";

    if (strcmp(what, "maps") == 0) {
        map_the_mix();
        printf("pid %d\n", (int)getpid());
        return 0;
    }
    if (strcmp(what, "nothing") == 0) {
        return 0;
    }
    if (strcmp(what, "exit7") == 0) {
        map_regions(5);
        struct sigaction sa;
        sigaction(SIGPIPE, NULL, &sa);
        printf("sigpipe_default %d\n", sa.sa_handler == SIG_DFL);
        printf("done\n");
        return 7;
    }
    if (strcmp(what, "thread-exit") == 0) {
        map_regions(5);
        printf("pid %d\n", (int)getpid());
        fflush(stdout);
        pthread_t t;
        if (pthread_create(&t, NULL, exit_from_thread, NULL) != 0) return 1;
        pthread_join(t, NULL); /* never returns: the thread exits the process */
        return 9;
    }
    if (strcmp(what, "close-stdio") == 0) {
        map_regions(5);
        close(1);
        close(2);
        return 0;
    }
    if (strcmp(what, "fork") == 0) {
        map_regions(3);
        fflush(stdout);
        pid_t child = fork();
        if (child < 0) { perror("fork"); return 1; }
        if (child == 0) {
            map_regions(2);
            exit(0);
        }
        int status;
        if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
        map_regions(1);
        printf("parent %d\nchild %d\n", (int)getpid(), (int)child);
        return 0;
    }
    if (strcmp(what, "ksm") == 0) {
        long page = sysconf(_SC_PAGESIZE);
        map_anon(64 * page);
        if (probe_wait_full_scans(3, 60) != 0) { printf("ksmd made no progress\n"); return 2; }
        printf("merged %ld\n", probe_merged_pages());
        return 0;
    }
    fprintf(stderr, "usage: %s maps|nothing|exit7|thread-exit|close-stdio|fork|ksm\n", argv[0]);
    return 1;
}
