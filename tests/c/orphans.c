/*
 * Process trees whose processes outlive their parents, for the exit
 * report's "only the process the user started reports" rule
 * (tests/orphans.rs). Every process of a tree that runs the library maps
 * and fills 1 MiB and marks a page secret (so it has something to report in
 * either engine, with or without ksmd), and prints "role NAME PID" on
 * stdout; the test matches the report lines on stderr to the roles.
 *
 *   orphans late       the starter forks and execs a child ("late-child"),
 *                      waits until that child's main runs, and exits: the
 *                      child is orphaned after its start (re-parented to
 *                      init or a subreaper), then works and exits.
 *   orphans early      the starter forks a worker and exits; the worker
 *                      waits until it is re-parented, then execs a child:
 *                      orphaned before its start.
 *   orphans daemon     the daemon's double fork: the starter forks; that
 *                      child calls setsid, forks the daemon and exits; the
 *                      daemon waits until it is re-parented, works, exits.
 *                      The starter waits for its child, works, exits.
 *   orphans daemon-exec  the same, but the daemon execs a child once
 *                      re-parented (start-stop-daemon, daemonize).
 *   orphans child      works, exits (role "orphan", or argv[2]).
 *   orphans reaper LIB SCENARIO  not preloaded itself: becomes a child
 *                      subreaper (prctl), runs "orphans SCENARIO" with
 *                      LD_PRELOAD=LIB, reaps every process of the tree and
 *                      exits 0 if all of them exited 0.
 *
 * The starter is the process the user started (its parent, the test or the
 * reaper, does not run the library): it reports. No other process may.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static void say_role(const char *role) {
    char line[64];
    int n = snprintf(line, sizeof line, "role %s %d\n", role, (int)getpid());
    if (write(1, line, n) != n)
        exit(6);
}

/* Something to report in either engine (see quiet_service.c). */
static void work(const char *role) {
    char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        exit(3);
    memset(p, 5, 1 << 20);
    madvise(p, 4096, MADV_DONTDUMP);
    say_role(role);
}

static void wait_until_reparented(pid_t parent) {
    while (getppid() == parent)
        usleep(1000);
}

static void exec_self(const char *self, const char *what, const char *arg) {
    execl("/proc/self/exe", self, what, arg, (char *)NULL);
    exit(5);
}

static int late(const char *self) {
    int p[2];
    if (pipe(p))
        return 2;
    pid_t c = fork();
    if (c < 0)
        return 2;
    if (c == 0) {
        close(p[0]);
        char fd[16];
        snprintf(fd, sizeof fd, "%d", p[1]);
        exec_self(self, "late-child", fd);
    }
    close(p[1]);
    char started;
    if (read(p[0], &started, 1) != 1)
        return 4;
    work("starter");
    return 0;
}

static int late_child(int fd) {
    pid_t parent = getppid();
    if (write(fd, "x", 1) != 1)
        return 4;
    close(fd);
    wait_until_reparented(parent);
    work("orphan");
    return 0;
}

static int early(const char *self) {
    pid_t parent = getpid();
    pid_t c = fork();
    if (c < 0)
        return 2;
    if (c == 0) {
        wait_until_reparented(parent);
        exec_self(self, "child", "orphan");
    }
    work("starter");
    return 0;
}

static int daemon_tree(const char *self, int exec_it) {
    pid_t c = fork();
    if (c < 0)
        return 2;
    if (c == 0) {
        if (setsid() < 0)
            _exit(4);
        pid_t middle = getpid();
        pid_t d = fork();
        if (d < 0)
            _exit(2);
        if (d == 0) {
            wait_until_reparented(middle);
            if (exec_it)
                exec_self(self, "child", "daemon");
            work("daemon");
            exit(0);
        }
        _exit(0);
    }
    int st = 0;
    waitpid(c, &st, 0);
    work("starter");
    return !WIFEXITED(st) || WEXITSTATUS(st) != 0;
}

static int reaper(const char *self, const char *lib, const char *scenario) {
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
        return 2;
    pid_t c = fork();
    if (c < 0)
        return 2;
    if (c == 0) {
        setenv("LD_PRELOAD", lib, 1);
        execl("/proc/self/exe", self, scenario, (char *)NULL);
        _exit(5);
    }
    int failed = 0, st;
    while (wait(&st) > 0)
        failed |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    return failed;
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "late"))
        return late(argv[0]);
    if (!strcmp(what, "late-child") && argc > 2)
        return late_child(atoi(argv[2]));
    if (!strcmp(what, "early"))
        return early(argv[0]);
    if (!strcmp(what, "daemon"))
        return daemon_tree(argv[0], 0);
    if (!strcmp(what, "daemon-exec"))
        return daemon_tree(argv[0], 1);
    if (!strcmp(what, "child")) {
        work(argc > 2 ? argv[2] : "orphan");
        return 0;
    }
    if (!strcmp(what, "reaper") && argc > 3)
        return reaper(argv[0], argv[2], argv[3]);
    fprintf(stderr, "usage: orphans late|early|daemon|daemon-exec|child|reaper LIB SCENARIO\n");
    return 64;
}
