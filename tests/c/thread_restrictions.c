/*
 * A single-threaded program that restricts itself right after allocating
 * (when the library's catch-up thread runs: tests/safety.rs), through libc:
 *
 *   thread_restrictions nnp       prctl(PR_SET_NO_NEW_PRIVS)
 *   thread_restrictions caps      capset: drops CAP_NET_RAW from its sets
 *   thread_restrictions rawuid    syscall(SYS_setresuid, nobody...): changes
 *                                 the calling thread only (as intended in a
 *                                 single-threaded program)
 *   thread_restrictions tsync     a seccomp allow-list of what it needs
 *                                 itself, applied to every thread (TSYNC),
 *                                 killing the process for anything else
 *
 * It first makes news for the catch-up (a region mapped with syscall(
 * SYS_mmap)) and waits up to 2 s for a second task (the library's thread):
 * "tasks_before N". Then it restricts itself and counts the tasks whose
 * restriction (the NoNewPrivs, CapEff or Uid line of
 * /proc/self/task/T/status) differs from its own: "unrestricted N"; then
 * makes news again, lets a thread come back (up to 1 s), and counts again:
 * "tasks_after N", "unrestricted_after N". (tsync prints only "survived":
 * a thread of the library left unfiltered would not matter there, a
 * filtered one making a call outside the list kills the process.)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int capset(cap_user_header_t header, const cap_user_data_t data);
int capget(cap_user_header_t header, cap_user_data_t data);

static int tasks(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}

static void news(void) {
    size_t len = 4 << 20;
    char *p = (char *)syscall(SYS_mmap, NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) exit(3);
    memset(p, 7, len);
}

static int wait_tasks(int want, int ms) {
    struct timespec nap = { 0, 1000 * 1000 };
    for (int i = 0; i < ms && tasks() < want; i++) nanosleep(&nap, NULL);
    return tasks();
}

/* The line of /proc/self/task/TID/status that starts with `key`. */
static void status_line(const char *tid, const char *key, char *out, size_t len) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/self/task/%s/status", tid);
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, strlen(key))) {
            snprintf(out, len, "%s", line);
            break;
        }
    fclose(f);
}

/* Tasks whose `key` line differs from this thread's. */
static int unrestricted(const char *key) {
    char self[32], mine[256], theirs[256];
    snprintf(self, sizeof self, "%ld", (long)syscall(SYS_gettid));
    status_line(self, key, mine, sizeof mine);
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        status_line(e->d_name, key, theirs, sizeof theirs);
        n += theirs[0] && strcmp(mine, theirs) != 0;
    }
    if (d) closedir(d);
    return n;
}

static void drop_net_raw(void) {
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];
    if (capget(&h, data) != 0) exit(4);
    data[0].effective &= ~(1u << CAP_NET_RAW);
    data[0].permitted &= ~(1u << CAP_NET_RAW);
    if (capset(&h, data) != 0) exit(5);
}

#define ALLOW(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

static void allow_list_for_every_thread(void) {
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        ALLOW(__NR_read), ALLOW(__NR_write), ALLOW(__NR_exit_group), ALLOW(__NR_exit),
        ALLOW(__NR_brk), ALLOW(__NR_mmap), ALLOW(__NR_munmap), ALLOW(__NR_mprotect),
        ALLOW(__NR_futex), ALLOW(__NR_newfstatat), ALLOW(__NR_fstat), ALLOW(__NR_nanosleep),
        ALLOW(__NR_clock_nanosleep),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    };
    struct sock_fprog prog = { sizeof filter / sizeof filter[0], filter };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) exit(6);
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog)) exit(7);
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    const char *how = argv[1];
    news();
    printf("tasks_before %d\n", wait_tasks(2, 2000));
    fflush(stdout);
    const char *key = "NoNewPrivs:";
    if (!strcmp(how, "nnp")) {
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) return 8;
    } else if (!strcmp(how, "caps")) {
        drop_net_raw();
        key = "CapEff:";
    } else if (!strcmp(how, "rawuid")) {
        if (syscall(SYS_setresuid, 65534, 65534, 65534)) return 9;
        key = "Uid:";
    } else if (!strcmp(how, "tsync")) {
        allow_list_for_every_thread();
        news();
        struct timespec nap = { 0, 300 * 1000 * 1000 };
        nanosleep(&nap, NULL);
        static const char msg[] = "survived\n";
        if (write(1, msg, sizeof msg - 1) < 0) return 10;
        return 0;
    } else {
        return 2;
    }
    printf("unrestricted %d\n", unrestricted(key));
    news();
    printf("tasks_after %d\n", wait_tasks(2, 1000));
    printf("unrestricted_after %d\n", unrestricted(key));
    return 0;
}
