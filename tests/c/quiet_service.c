/*
 * The C side of tests/stats.rs `quiet_inside_services`: what a service
 * looks like to the library's exit report.
 *
 *   quiet_service pool N   a pre-forking server: maps 1 MiB (so it has
 *                          something to report), forks N workers that each
 *                          map and fill 1 MiB and exit normally, waits for
 *                          them, exits 0. The test counts report lines on
 *                          stderr.
 *   quiet_service droppool N  the same, but each worker drops its
 *                          privileges (setuid(65534)) before it works, as
 *                          nginx's and apache's workers do (it can then no
 *                          longer read its parent's /proc/PID/maps).
 *   quiet_service dropexec N  workers that drop their privileges and then
 *                          exec this program ("child"), as cron,
 *                          supervisord or a CGI server does.
 *   quiet_service orphanexec  forks a worker and exits at once; the worker,
 *                          once its parent is gone, execs this program
 *                          ("child"): an exec'd worker whose parent is no
 *                          longer there to be asked.
 *   quiet_service spawn    runs itself ("child") with stderr on a pipe, as
 *                          a program that takes any output of its child on
 *                          stderr for a failure does; prints
 *                          "child_stderr_bytes N" and the child's status.
 *   quiet_service child    maps and fills 1 MiB, exits 0.
 *   quiet_service job READY exec|now  a background job (`sh -c 'job &
 *                          exec server'`): works as `child`, creates the
 *                          file READY (the library has started in it by
 *                          then), and with "exec" waits (at most 60 s) until
 *                          its parent runs another program file than at its
 *                          start, then exits 0.
 *   quiet_service reap     waits for every child it has (those its process
 *                          had before an exec too), exits 0: the server.
 *   quiet_service after-parent-execs READY PROG ARGS...  (built static: no
 *                          library) creates READY, waits (at most 60 s)
 *                          until its parent runs another program file,
 *                          then execs PROG: a job whose library starts
 *                          only after its parent's exec.
 */
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Maps and fills 1 MiB, and marks its first page secret (MADV_DONTDUMP):
 * the library excludes it, so every process has something to report in
 * either mode, whether ksmd runs or not. */
static void work(void) {
    char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) exit(3);
    memset(p, 5, 1 << 20);
    madvise(p, 4096, MADV_DONTDUMP);
}

/* The device and inode of the program file the parent runs (0 if unknown). */
static unsigned long long parent_image(void) {
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/proc/%d/exe", (int)getppid());
    if (stat(path, &st) != 0) return 0;
    return (unsigned long long)st.st_dev << 40 ^ (unsigned long long)st.st_ino;
}

/* Creates `ready`, then with `until_exec` waits until the parent runs
 * another program file than before; 0, or 6/7 on failure or time-out. */
static int signal_then_wait(const char *ready, int until_exec) {
    unsigned long long image = parent_image();
    int fd = open(ready, O_WRONLY | O_CREAT, 0600);
    if (fd < 0) return 6;
    close(fd);
    time_t deadline = time(NULL) + 60;
    while (until_exec && parent_image() == image) {
        if (time(NULL) > deadline) return 7;
        usleep(2000);
    }
    return 0;
}

static int job(const char *ready, int until_exec) {
    work();
    return signal_then_wait(ready, until_exec);
}

int main(int argc, char **argv) {
    if (argc > 3 && !strcmp(argv[1], "job"))
        return job(argv[2], !strcmp(argv[3], "exec"));
    if (argc > 3 && !strcmp(argv[1], "after-parent-execs")) {
        int rc = signal_then_wait(argv[2], 1);
        if (rc) return rc;
        execv(argv[3], argv + 3);
        return 8;
    }
    if (argc > 1 && !strcmp(argv[1], "reap")) {
        int failed = 0, st;
        while (wait(&st) > 0)
            failed |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
        return failed;
    }
    int drop = argc > 2 && !strcmp(argv[1], "droppool");
    if (argc > 2 && (!strcmp(argv[1], "pool") || drop)) {
        work();
        int n = atoi(argv[2]);
        for (int i = 0; i < n; i++) {
            pid_t c = fork();
            if (c == 0) {
                if (drop && setuid(65534) != 0) exit(4);
                work();
                exit(0);
            }
        }
        for (int i = 0; i < n; i++) wait(NULL);
        return 0;
    }
    if (argc > 2 && !strcmp(argv[1], "dropexec")) {
        work();
        int n = atoi(argv[2]);
        for (int i = 0; i < n; i++) {
            pid_t c = fork();
            if (c == 0) {
                if (setgid(65534) != 0 || setuid(65534) != 0) exit(4);
                execl("/proc/self/exe", argv[0], "child", (char *)NULL);
                exit(5);
            }
        }
        int failed = 0;
        for (int i = 0; i < n; i++) {
            int st;
            wait(&st);
            failed |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
        }
        return failed;
    }
    if (argc > 1 && !strcmp(argv[1], "orphanexec")) {
        work();
        pid_t parent = getpid();
        if (fork() == 0) {
            while (getppid() == parent) usleep(1000);
            execl("/proc/self/exe", argv[0], "child", (char *)NULL);
            exit(5);
        }
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "child")) {
        work();
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "spawn")) {
        work();
        int p[2];
        if (pipe(p)) return 2;
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, p[1], 2);
        posix_spawn_file_actions_addclose(&fa, p[0]);
        char *args[] = {argv[0], "child", NULL};
        pid_t c;
        if (posix_spawn(&c, "/proc/self/exe", &fa, NULL, args, environ)) return 2;
        close(p[1]);
        char buf[4096];
        long total = 0;
        ssize_t r;
        while ((r = read(p[0], buf, sizeof buf)) > 0) total += r;
        int st;
        waitpid(c, &st, 0);
        printf("child_stderr_bytes %ld\nchild_status %d\n", total, WEXITSTATUS(st));
        return 0;
    }
    fprintf(stderr, "usage: quiet_service pool N | spawn | child\n");
    return 2;
}
