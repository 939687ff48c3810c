/* Maps (and so has advised) five regions, then makes a child with a raw
 * clone system call, which runs no pthread_atfork handler. The child maps
 * nothing of its own and exits through exit(), so its report must show none
 * of the parent's five regions. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
    for (int i = 0; i < 5; i++) {
        char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 2;
        memset(p, i, 1 << 20);
    }
    long pid = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (pid < 0) return 3;
    if (pid == 0) {
        for (int i = 0; i < 1000; i++) { void *volatile p = malloc(64 + i); free(p); }
        exit(0);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) return 4;
    return 0;
}
