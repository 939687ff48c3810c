/* The program's own choices about merge-any stand (run in `process` mode,
 * merge-any on):
 *
 *   merge_any_choices optout prctl|syscall STATIC UNKNOWN
 *     switches merge-any off itself (prctl(PR_SET_MEMORY_MERGE, 0), or the
 *     same through syscall(SYS_prctl, ...)), then starts the static program
 *     STATIC with posix_spawn, with vfork + execve, execs UNKNOWN (a file of
 *     no format the kernel knows: the exec fails after the guard's look),
 *     and prints its own flag after each ("after-spawn", "after-vfork",
 *     "after-failed-exec"): it must stay off. Then it switches merge-any on
 *     again itself ("own-on") and spawns STATIC once more: the guard works
 *     again ("after-spawn-on" back on; the static program without it).
 *   merge_any_choices sandbox prctl|syscall STATIC
 *     installs a seccomp filter that allows everything (prctl(PR_SET_SECCOMP)
 *     or syscall(SYS_seccomp)), prints its own flag ("after-filter"), then
 *     execs STATIC: merge-any must not pass into it.
 *
 * Every started program prints its own "probe merge_any N" line. */
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int flag(void) { return prctl(68, 0, 0, 0, 0); }

static void show(const char *when) {
    printf("%s merge_any %d\n", when, flag());
    fflush(stdout);
}

static int switch_merge_any(const char *how, int on) {
    if (!strcmp(how, "syscall")) return syscall(SYS_prctl, 67, on, 0, 0, 0);
    return prctl(67, on, 0, 0, 0);
}

static void churn(void) {
    /* volatile: a malloc freed at once is otherwise optimised away; the
     * hooks' polls run in there */
    for (int i = 0; i < 2000; i++) { void *volatile p = malloc(32 + i % 64); free(p); }
}

static void spawn_and_wait(const char *target) {
    char *args[] = {(char *)target, NULL};
    pid_t pid;
    if (posix_spawn(&pid, target, NULL, NULL, args, environ) == 0) waitpid(pid, NULL, 0);
}

static int optout(const char *how, const char *target, const char *unknown) {
    if (switch_merge_any(how, 0)) { perror("switch off"); return 3; }
    show("own-off");
    spawn_and_wait(target);
    churn();
    show("after-spawn");
    char *args[] = {(char *)target, NULL};
    pid_t pid = vfork();
    if (pid == 0) { execve(target, args, environ); _exit(127); }
    waitpid(pid, NULL, 0);
    churn();
    show("after-vfork");
    char *bad[] = {(char *)unknown, NULL};
    execve(unknown, bad, environ);
    show("after-failed-exec");
    if (switch_merge_any(how, 1)) { perror("switch on"); return 3; }
    show("own-on");
    spawn_and_wait(target);
    show("after-spawn-on");
    return 0;
}

static int sandbox(const char *how, const char *target) {
    struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_fprog prog = {1, allow};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) return 3;
    int err = strcmp(how, "syscall") ? prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)
                                     : syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
    if (err) { perror("seccomp"); return 4; }
    show("after-filter");
    char *args[] = {(char *)target, NULL};
    execve(target, args, environ);
    perror("execve");
    return 5;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    show("start");
    if (!strcmp(argv[1], "optout") && argc == 5) return optout(argv[2], argv[3], argv[4]);
    if (!strcmp(argv[1], "sandbox")) return sandbox(argv[2], argv[3]);
    return 2;
}
