/* A daemon that blocks SIGTERM and reads it through signalfd to shut down
 * cleanly; then a forked child that must have its own scanning thread.
 * argv[1]: "signal" or "fork". */
#define _GNU_SOURCE
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
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

int main(int argc, char **argv) {
    if (argc != 2) return 2;
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
    printf("parent threads %d\n", threads());
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        usleep(100000);
        printf("child threads %d\n", threads());
        return 0;
    }
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 6;
}
