/* The library's catch-up thread as a program sees it (tests/safety.rs).
 * Each mode first makes news for the catch-up (a region mapped with
 * syscall(SYS_mmap), which no hook advises) and waits until the process
 * has a second thread (the library's; at most 2 s), then:
 *   signal  a daemon that blocks SIGTERM and reads it through signalfd to
 *           shut down cleanly: the signal must never go to the library's
 *           thread (it would kill the process);
 *   fork    grows the brk heap, forks and counts its threads right after
 *           fork returns, in the parent (as CPython does to warn about
 *           forking a threaded process: through a malloc, which sees the
 *           growth) and in the child (before any malloc).
 * Prints "threads_before N" (threads once the news is made) and, for fork,
 * "parent_after_fork N" and "child N". */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int threads(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}

/* The same count without a malloc (nothing the library could take as
 * news): /proc/self/status read into a buffer on the stack. */
static int threads_unallocated(void) {
    char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *t = strstr(buf, "\nThreads:");
    return t ? atoi(t + 9) : -1;
}

/* News, then up to 2 s for the library's thread to appear. */
static int make_news(void) {
    size_t len = 4 << 20;
    char *p = (char *)syscall(SYS_mmap, NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return -1;
    memset(p, 7, len);
    /* A block glibc maps on its own: news in `process` mode too. */
    char *volatile block = malloc(len);
    if (!block) return -1;
    memset(block, 8, len);
    struct timespec nap = { 0, 1000 * 1000 };
    for (int i = 0; i < 2000 && threads() < 2; i++) nanosleep(&nap, NULL);
    return threads();
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int before = make_news();
    printf("threads_before %d\n", before);
    fflush(stdout);
    if (!strcmp(argv[1], "signal")) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        if (sigprocmask(SIG_BLOCK, &set, NULL)) return 3;
        int fd = signalfd(-1, &set, 0);
        if (fd < 0) return 4;
        kill(getpid(), SIGTERM);
        struct signalfd_siginfo si;
        if (read(fd, &si, sizeof si) != sizeof si) return 5;
        printf("clean shutdown on signal %u\n", si.ssi_signo);
        return 0;
    }
    /* The brk heap grows right before the fork: the first malloc after it
     * (in `threads`, as CPython's in its count) sees the growth. */
    if (sbrk(2 << 20) == (void *)-1) return 5;
    pid_t pid = fork();
    if (pid == 0) {
        /* Counted before the child's first malloc: the child starts with
         * no thread of the library's (none copied, none started by its
         * fork handlers). Its first malloc may then take its copy of the
         * growth as news and start one, as any later news would: only the
         * parent counts right after fork (CPython's check). */
        int n = threads_unallocated();
        printf("child %d\n", n);
        return 0;
    }
    int after = threads();
    int status;
    waitpid(pid, &status, 0);
    printf("parent_after_fork %d\n", after);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 6;
}
