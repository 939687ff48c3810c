/*
 * A child forked by a thread other than the main one (tests/safety.rs): in
 * the child the forking thread is the main thread, and it ends by
 * returning from its start routine, with no pthread_exit. The child makes
 * news for the catch-up first (a region mapped with syscall(SYS_mmap)) and
 * waits until the library's thread runs (up to 2 s), so that thread is
 * then its last. The child must end when its own thread does, as without
 * the library. argv[1]: how the thread ends in the child: "return" or
 * "pthread_exit". Prints "child_threads N" (the child's tasks once the
 * news is made) and "child status S" (its exit status), or, if it has not
 * ended 10 s after, kills it and prints "child still running after 10 s".
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *how;

static int tasks(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}

static void *forker(void *arg) {
    (void)arg;
    pid_t pid = fork();
    if (pid < 0) exit(3);
    if (pid > 0) {
        /* Up to 10 s for the child to end; then it is killed and said so. */
        int status;
        struct timespec nap = { 0, 10 * 1000 * 1000 };
        for (int i = 0; i < 1000; i++) {
            pid_t r = waitpid(pid, &status, WNOHANG);
            if (r == pid) {
                printf("child status %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
                return NULL;
            }
            if (r < 0) exit(4);
            nanosleep(&nap, NULL);
        }
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        printf("child still running after 10 s: killed\n");
        return NULL;
    }
    size_t len = 4 << 20;
    char *p = (char *)syscall(SYS_mmap, NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) _exit(5);
    memset(p, 7, len);
    struct timespec nap = { 0, 1000 * 1000 };
    for (int i = 0; i < 2000 && tasks() < 2; i++) nanosleep(&nap, NULL);
    printf("child_threads %d\n", tasks());
    fflush(stdout);
    if (!strcmp(how, "pthread_exit")) pthread_exit(NULL);
    return NULL; /* the child's last own thread ends: so does the child */
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    how = argv[1];
    pthread_t t;
    if (pthread_create(&t, NULL, forker, NULL) != 0) return 6;
    pthread_join(t, NULL);
    return 0;
}
