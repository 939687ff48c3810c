/* Runs under the library in `process` mode (merge-any on) and starts a
 * program in the way its first argument names:
 *
 *   exec_ways WAY TARGET [ARG...] -- [NAME=value...]
 *
 * The new program's argv is TARGET ARG...; its environment is exactly the
 * entries after `--`, in that order (duplicates included). Ways that take
 * no environment (execv, execvp, execl, execlp, and posix_spawnp's PATH
 * search) get it by replacing `environ` with that array first, as a
 * program that builds its own environment does; execvpe and posix_spawnp
 * search the PATH of that array too.
 *
 *   execve execv execvp execvpe execl execle execlp
 *   execveat          execveat(AT_FDCWD, TARGET, ..., 0)
 *   execveat-nofollow execveat(AT_FDCWD, TARGET, ..., AT_SYMLINK_NOFOLLOW)
 *   execveat-fd       execveat(open(TARGET, O_RDONLY), "", ..., AT_EMPTY_PATH)
 *   execveat-opath    the same with an O_PATH descriptor
 *   fexecve fexecve-opath   fexecve of such descriptors
 *   posix_spawn posix_spawnp vfork   (the parent waits, then prints its
 *                                     own flag: it must be on again)
 *   execve-seteuid    execve after seteuid(65534): real and effective IDs
 *                     apart, so the kernel starts the program in secure
 *                     mode (run as root)
 *   syscall-execve syscall-execveat   syscall(SYS_execve, ...) and
 *                     syscall(SYS_execveat, AT_FDCWD, ...)
 *   execve-after-chdir   TARGET DIR: chdir(DIR), then execve(TARGET)
 *   execve-fd-preload    TARGET LIB: execve with LD_PRELOAD=/proc/self/fd/N
 *                     appended, N an O_CLOEXEC descriptor of LIB (closed in
 *                     the new program before its loader looks)
 *   spawn-dup2 spawn-devfd spawn-stdin   TARGET OTHER: posix_spawn of
 *                     /proc/self/fd/N, /dev/fd/N or /dev/stdin, N (or 0)
 *                     naming TARGET here, and OTHER in the child after its
 *                     file action adddup2(OTHER, N)
 *   spawn-cwd spawnp-cwd   DIR OTHERDIR: chdir(DIR), then posix_spawn of
 *                     /proc/self/cwd/prog (posix_spawnp of prog, with the
 *                     environment's PATH=/proc/self/cwd) after a file
 *                     action that changes into OTHERDIR
 *   spawn-plain-actions   posix_spawn of TARGET with a file action that
 *                     changes nothing the path means (adddup2(1, 1))
 *   system popen wordexp   glibc starts /bin/sh (with `environ`, replaced
 *                     as above) on the command "TARGET ARG..."; wordexp
 *                     expands "$(TARGET ARG...)", and the launcher prints
 *                     the words it gives (the started program's output)
 *
 * Prints "launcher merge_any N" first; if an exec returns, "failed ERRNO"
 * and then "after-failure merge_any N" (merge-any must be back at once). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <wordexp.h>

extern char **environ;

#define MOST_ARGS 8

static void parent_after(void);

static int spawned(pid_t pid) {
    int status;
    if (waitpid(pid, &status, 0) != pid) return 4;
    if (!WIFEXITED(status) || WEXITSTATUS(status)) {
        printf("child status %d\n", status);
        return 5;
    }
    /* volatile: a malloc freed at once is otherwise optimised away; the
     * allocation hooks' poll takes merge-any back after a vfork child */
    for (int i = 0; i < 2000; i++) { void *volatile p = malloc(32 + i % 64); free(p); }
    parent_after();
    return 0;
}

static void parent_after(void) {
    printf("parent-after merge_any %d\n", prctl(68, 0, 0, 0, 0));
}

/* "TARGET ARG..." for the shell (the lab's paths have no blanks). */
static void command_line(char *out, size_t size, char **args, const char *before, const char *after) {
    snprintf(out, size, "%s", before);
    for (int i = 0; args[i]; i++) {
        strncat(out, args[i], size - strlen(out) - 2);
        if (args[i + 1]) strcat(out, " ");
    }
    strncat(out, after, size - strlen(out) - 1);
}

/* system, popen and wordexp: glibc starts /bin/sh itself. */
static int through_the_shell(const char *way, char **args, char **env) {
    char command[4096];
    environ = env;
    if (!strcmp(way, "system")) {
        command_line(command, sizeof command, args, "", "");
        fflush(stdout);
        int status = system(command);
        if (status != 0) printf("child status %d\n", status);
    } else if (!strcmp(way, "popen")) {
        command_line(command, sizeof command, args, "", "");
        FILE *p = popen(command, "r");
        if (!p) { printf("failed %d\n", errno); return 3; }
        char line[8192];
        while (fgets(line, sizeof line, p)) fputs(line, stdout);
        int status = pclose(p);
        if (status != 0) printf("child status %d\n", status);
    } else {
        command_line(command, sizeof command, args, "$(", ")");
        wordexp_t words;
        int err = wordexp(command, &words, 0);
        if (err) { printf("failed wordexp %d\n", err); return 3; }
        for (size_t i = 0; i < words.we_wordc; i++)
            printf("%s%s", words.we_wordv[i], i + 1 < words.we_wordc ? " " : "\n");
        wordfree(&words);
    }
    parent_after();
    return 0;
}

/* posix_spawn(p) with file actions (see the ways spawn-* above). */
static int spawn_with_actions(const char *way, int argc, char **args, char **env) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    char path[64];
    char *new_args[] = {path, NULL};
    pid_t pid;
    int err;
    if (!strcmp(way, "spawn-plain-actions")) {
        posix_spawn_file_actions_adddup2(&actions, 1, 1);
        err = posix_spawn(&pid, args[0], &actions, NULL, args, env);
    } else if (argc != 2) {
        return 2;
    } else if (!strcmp(way, "spawn-cwd") || !strcmp(way, "spawnp-cwd")) {
        if (chdir(args[0])) return 6;
        posix_spawn_file_actions_addchdir_np(&actions, args[1]);
        if (!strcmp(way, "spawn-cwd")) {
            snprintf(path, sizeof path, "/proc/self/cwd/prog");
            err = posix_spawn(&pid, path, &actions, NULL, new_args, env);
        } else {
            snprintf(path, sizeof path, "prog");
            environ = env;
            err = posix_spawnp(&pid, path, &actions, NULL, new_args, env);
        }
    } else {
        int here = open(args[0], O_RDONLY), there = open(args[1], O_RDONLY);
        if (here < 0 || there < 0) return 6;
        if (!strcmp(way, "spawn-stdin")) {
            if (dup2(here, 0) != 0) return 6;
            here = 0;
            snprintf(path, sizeof path, "/dev/stdin");
        } else {
            snprintf(path, sizeof path, "%s/%d", strcmp(way, "spawn-dup2") ? "/dev/fd" : "/proc/self/fd", here);
        }
        posix_spawn_file_actions_adddup2(&actions, there, here);
        err = posix_spawn(&pid, path, &actions, NULL, new_args, env);
    }
    posix_spawn_file_actions_destroy(&actions);
    if (err) { printf("failed %d\n", err); return 3; }
    return spawned(pid);
}

/* execl and execlp: the list ends at the first null pointer. */
static void exec_list(const char *way, const char *target, char **a) {
    if (!strcmp(way, "execl")) execl(target, a[0], a[1], a[2], a[3], a[4], a[5], (char *)NULL);
    else execlp(target, a[0], a[1], a[2], a[3], a[4], a[5], (char *)NULL);
}

/* execle: the environment follows the list's null pointer directly. */
static void exec_list_env(const char *target, int argc, char **a, char **env) {
    switch (argc) {
    case 1: execle(target, a[0], (char *)NULL, env); break;
    case 2: execle(target, a[0], a[1], (char *)NULL, env); break;
    case 3: execle(target, a[0], a[1], a[2], (char *)NULL, env); break;
    case 4: execle(target, a[0], a[1], a[2], a[3], (char *)NULL, env); break;
    default: execle(target, a[0], a[1], a[2], a[3], a[4], (char *)NULL, env); break;
    }
}

static int run_way(const char *way, const char *target, int argc, char **args, char **env) {
    if (!strcmp(way, "execve")) execve(target, args, env);
    else if (!strcmp(way, "execve-seteuid")) {
        if (seteuid(65534)) return 7;
        execve(target, args, env);
    }
    else if (!strcmp(way, "execv")) { environ = env; execv(target, args); }
    else if (!strcmp(way, "execvp")) { environ = env; execvp(target, args); }
    else if (!strcmp(way, "execvpe")) { environ = env; execvpe(target, args, env); }
    else if (!strcmp(way, "execl") || !strcmp(way, "execlp")) { environ = env; exec_list(way, target, args); }
    else if (!strcmp(way, "execle")) exec_list_env(target, argc, args, env);
    else if (!strcmp(way, "execve-after-chdir") && argc == 2) {
        if (chdir(args[1])) return 6;
        args[1] = NULL;
        execve(target, args, env);
    } else if (!strcmp(way, "execve-fd-preload") && argc == 2) {
        int fd = open(args[1], O_RDONLY | O_CLOEXEC);
        if (fd < 0) return 6;
        static char preload[64];
        snprintf(preload, sizeof preload, "LD_PRELOAD=/proc/self/fd/%d", fd);
        int n = 0;
        while (env[n]) n++;
        env[n] = preload;
        env[n + 1] = NULL;
        args[1] = NULL;
        execve(target, args, env);
    } else if (!strncmp(way, "spawn-", 6) || !strcmp(way, "spawnp-cwd"))
        return spawn_with_actions(way, argc, args, env);
    else if (!strcmp(way, "syscall-execve")) syscall(SYS_execve, target, args, env);
    else if (!strcmp(way, "syscall-execveat")) syscall(SYS_execveat, AT_FDCWD, target, args, env, 0);
    else if (!strcmp(way, "system") || !strcmp(way, "popen") || !strcmp(way, "wordexp"))
        return through_the_shell(way, args, env);
    else if (!strcmp(way, "execveat")) execveat(AT_FDCWD, target, args, env, 0);
    else if (!strcmp(way, "execveat-nofollow")) execveat(AT_FDCWD, target, args, env, AT_SYMLINK_NOFOLLOW);
    else if (!strcmp(way, "execveat-fd") || !strcmp(way, "execveat-opath")) {
        int fd = open(target, strcmp(way, "execveat-fd") ? O_PATH : O_RDONLY);
        if (fd < 0) return 6;
        execveat(fd, "", args, env, AT_EMPTY_PATH);
    } else if (!strcmp(way, "fexecve") || !strcmp(way, "fexecve-opath")) {
        int fd = open(target, strcmp(way, "fexecve") ? O_PATH : O_RDONLY);
        if (fd < 0) return 6;
        fexecve(fd, args, env);
    } else if (!strcmp(way, "posix_spawn") || !strcmp(way, "posix_spawnp")) {
        pid_t pid;
        int err;
        if (!strcmp(way, "posix_spawn")) err = posix_spawn(&pid, target, NULL, NULL, args, env);
        else { environ = env; err = posix_spawnp(&pid, target, NULL, NULL, args, env); }
        if (err) { printf("failed %d\n", err); return 3; }
        return spawned(pid);
    } else if (!strcmp(way, "vfork")) {
        pid_t pid = vfork();
        if (pid == 0) { execve(target, args, env); _exit(127); }
        return spawned(pid);
    } else return 2;
    printf("failed %d\n", errno);
    printf("after-failure merge_any %d\n", prctl(68, 0, 0, 0, 0));
    return 3;
}

int main(int argc, char **argv) {
    int sep = 1;
    while (sep < argc && strcmp(argv[sep], "--")) sep++;
    if (argc < 3 || sep == argc || sep < 3 || sep - 2 > MOST_ARGS - 1) return 2;
    const char *way = argv[1], *target = argv[2];
    static char *args[MOST_ARGS + 1];
    int nargs = 0;
    for (int i = 2; i < sep; i++) args[nargs++] = argv[i];
    static char *env[256];
    int nenv = 0;
    for (int i = sep + 1; i < argc && nenv < 255; i++) env[nenv++] = argv[i];
    printf("launcher merge_any %d\n", prctl(68, 0, 0, 0, 0));
    fflush(stdout);
    return run_way(way, target, nargs, args, env);
}
