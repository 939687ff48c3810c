/* A program that sandboxes itself, as sshd's privilege-separated child or
 * a browser's renderer does: it installs a seccomp allow-list of exactly the
 * system calls it makes, killing the process on any other, then allocates
 * (blocks glibc maps with mmap) and prints. argv[1] is "prctl" (install
 * with prctl(PR_SET_SECCOMP)) or "syscall" (with syscall(SYS_seccomp), as
 * libseccomp does). The library must make no system call of its own after
 * that, or the process dies of SIGSYS. */
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ALLOW(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        ALLOW(__NR_read), ALLOW(__NR_write), ALLOW(__NR_exit_group), ALLOW(__NR_exit),
        ALLOW(__NR_brk), ALLOW(__NR_mmap), ALLOW(__NR_munmap), ALLOW(__NR_mremap),
        ALLOW(__NR_mprotect), ALLOW(__NR_futex), ALLOW(__NR_newfstatat), ALLOW(__NR_fstat),
        ALLOW(__NR_getrandom),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    };
    struct sock_fprog prog = {sizeof filter / sizeof filter[0], filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) return 3;
    if (!strcmp(argv[1], "prctl")) {
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) return 4;
    } else if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) {
        return 5;
    }
    unsigned long sum = 0;
    for (int i = 0; i < 100; i++) {
        char *p = malloc(1 << 20);
        memset(p, i, 1 << 20);
        sum += (unsigned char)p[i];
        free(p);
        for (int j = 0; j < 200; j++) { void *volatile q = malloc(32 + j); free(q); }
    }
    printf("sum=%lu\n", sum);
    return 0;
}
