/* Runs under the library in `process` mode (merge-any on), then starts
 * argv[2] in the way argv[1] names:
 *   execv, execl, execlp (argv[2] is then a bare name found in PATH),
 *   execve-noenv (an empty environment), posix_spawn, vfork (vfork+execv),
 *   execve-env (environment: argv[3] only),
 *   execle-env (execle with ten arguments, so that its environment, argv[3]
 *     only, travels on the stack),
 *   spawn-chdir (posix_spawn of the relative path argv[2] after a file
 *     action that changes into directory argv[3]),
 *   fifo (execve of the FIFO argv[2]: must fail with EACCES at once),
 *   mlockall-race (a thread loops on a failing execve of argv[3] while the
 *     main thread calls mlockall: merge-any must stay off afterwards),
 *   race (400 children: a thread loops on a failing execve of argv[3] while
 *     the main thread execs argv[2]).
 * For those that come back, it then prints its own merge-any flag, which
 * must be on again. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void churn(void) {
    /* volatile: a malloc freed at once is otherwise optimised away */
    for (int i = 0; i < 2000; i++) { void *volatile p = malloc(32 + i % 64); free(p); }
}

static const char *failing;

static void *exec_failing_forever(void *arg) {
    char *args[] = {(char *)failing, NULL};
    for (;;) execve(failing, args, environ);
    return arg;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *how = argv[1], *target = argv[2];
    char *args[] = {(char *)target, (char *)how, NULL};
    churn();
    printf("parent merge_any %d\n", prctl(68, 0, 0, 0, 0));
    fflush(stdout);
    if (!strcmp(how, "execv")) execv(target, args);
    else if (!strcmp(how, "execl")) execl(target, target, how, (char *)NULL);
    else if (!strcmp(how, "execlp")) execlp(target, target, how, (char *)NULL);
    else if (!strcmp(how, "execve-noenv")) { char *none[] = {NULL}; execve(target, args, none); }
    else if (!strcmp(how, "execve-env") && argc == 4) { char *env[] = {argv[3], NULL}; execve(target, args, env); }
    else if (!strcmp(how, "execle-env") && argc == 4) {
        char *env[] = {argv[3], NULL};
        execle(target, target, "1", "2", "3", "4", "5", "6", "7", "8", how, (char *)NULL, env);
    }
    else if (!strcmp(how, "fifo")) {
        int r = execve(target, args, environ);
        printf("fifo execve %d %s\n", r, r == -1 && errno == EACCES ? "EACCES" : "other");
        return 0;
    } else if (!strcmp(how, "spawn-chdir") && argc == 4) {
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addchdir_np(&actions, argv[3]);
        pid_t pid;
        if (posix_spawn(&pid, target, &actions, NULL, args, environ)) return 3;
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) return 4;
        return 0;
    } else if (!strcmp(how, "mlockall-race") && argc == 4) {
        failing = argv[3];
        pthread_t t;
        pthread_create(&t, NULL, exec_failing_forever, NULL);
        usleep(2000);
        if (mlockall(MCL_CURRENT)) { perror("mlockall"); return 7; }
        for (int i = 0; i < 50; i++) {
            usleep(2000);
            churn();
        }
        printf("mlockall-race merge_any %d\n", prctl(68, 0, 0, 0, 0));
        fflush(stdout);
        _exit(0);
    } else if (!strcmp(how, "race") && argc == 4) {
        failing = argv[3];
        for (int i = 0; i < 400; i++) {
            pid_t pid = fork();
            if (pid == 0) {
                pthread_t t;
                pthread_create(&t, NULL, exec_failing_forever, NULL);
                usleep(100 + (i * 37) % 600);
                execv(target, args);
                _exit(1);
            }
            waitpid(pid, NULL, 0);
        }
        return 0;
    }
    else if (!strcmp(how, "posix_spawn") || !strcmp(how, "vfork")) {
        pid_t pid;
        if (!strcmp(how, "posix_spawn")) {
            if (posix_spawn(&pid, target, NULL, NULL, args, environ)) return 3;
        } else {
            pid = vfork();
            if (pid == 0) { execv(target, args); _exit(127); }
        }
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) return 4;
        churn();
        printf("parent after merge_any %d\n", prctl(68, 0, 0, 0, 0));
        return 0;
    } else return 5;
    perror("exec");
    return 6;
}
