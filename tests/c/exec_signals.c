/* A signal handler that runs between the exec guard's switch-off and the
 * exec must not switch merge-any back on.
 *
 *   exec_signals WAY RUNS MIB TARGET
 *
 * Maps MIB MiB of identical pages (so that switching merge-any off takes a
 * while), installs a SIGCHLD handler that calls hooked functions, as a
 * reaping handler does (waitid, without reaping, and mmap/munmap, enough of
 * them for the library's call-counting poll to run each time), and RUNS
 * times starts TARGET (a static probe: the library never runs there, so
 * the guard switches merge-any off first) with its stdout into a pipe,
 * while a thread sends SIGCHLD to the starting thread as fast as it can:
 *   posix_spawn                     in this process (the thread pesters
 *                                   the main one);
 *   execve execl execle execlp      in a forked child, which starts its own
 *                                   pester thread first.
 * SIGCHLD is ignored by default, so one still pending at the exec does the
 * new program no harm. Prints "ran N leaked L": of the N probes that ran,
 * L printed "probe merge_any 1". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static pthread_t target_thread;
static volatile int stop;

static void on_sigchld(int sig) {
    (void)sig;
    int saved = errno;
    siginfo_t info;
    waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT);
    for (int i = 0; i < 80; i++) {
        void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED) munmap(p, 4096);
    }
    errno = saved;
}

static void *pester(void *arg) {
    (void)arg;
    while (!stop) pthread_kill(target_thread, SIGCHLD);
    return NULL;
}

static void start_pester(pthread_t *t) {
    target_thread = pthread_self();
    stop = 0;
    if (pthread_create(t, NULL, pester, NULL)) _exit(8);
}

static void exec_in_child(const char *way, const char *target) {
    pthread_t t;
    start_pester(&t);
    char *args[] = {(char *)target, NULL};
    if (!strcmp(way, "execve")) execve(target, args, environ);
    else if (!strcmp(way, "execl")) execl(target, target, (char *)NULL);
    else if (!strcmp(way, "execle")) execle(target, target, (char *)NULL, environ);
    else if (!strcmp(way, "execlp")) execlp(target, target, (char *)NULL);
    _exit(127);
}

/* Starts one probe with stdout into a pipe; its pid, or -1. */
static pid_t start(const char *way, const char *target, int out) {
    pid_t pid;
    if (!strcmp(way, "posix_spawn")) {
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, out, 1);
        char *args[] = {(char *)target, NULL};
        int err = posix_spawn(&pid, target, &actions, NULL, args, environ);
        posix_spawn_file_actions_destroy(&actions);
        return err ? -1 : pid;
    }
    pid = fork();
    if (pid == 0) {
        if (dup2(out, 1) != 1) _exit(9);
        exec_in_child(way, target);
    }
    return pid;
}

int main(int argc, char **argv) {
    if (argc != 5) return 2;
    const char *way = argv[1], *target = argv[4];
    int runs = atoi(argv[2]);
    size_t bytes = (size_t)atoi(argv[3]) << 20;
    char *memory = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) return 3;
    memset(memory, 1, bytes);
    struct sigaction sa = {0};
    sa.sa_handler = on_sigchld;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    int spawning = !strcmp(way, "posix_spawn");
    pthread_t t;
    if (spawning) start_pester(&t);
    int ran = 0, leaked = 0;
    for (int i = 0; i < runs; i++) {
        int p[2];
        if (pipe2(p, O_CLOEXEC)) return 4;
        pid_t pid = start(way, target, p[1]);
        close(p[1]);
        char buf[512] = {0};
        size_t n = 0;
        ssize_t r;
        while (n < sizeof buf - 1 && (r = read(p[0], buf + n, sizeof buf - 1 - n)) > 0) n += r;
        close(p[0]);
        if (pid > 0) waitpid(pid, NULL, 0);
        if (strstr(buf, "probe merge_any ")) ran++;
        if (strstr(buf, "probe merge_any 1")) leaked++;
    }
    if (spawning) {
        stop = 1;
        pthread_join(t, NULL);
    }
    printf("ran %d leaked %d\n", ran, leaked);
    return 0;
}
