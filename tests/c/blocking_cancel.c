/* pthread_cancel of a thread waiting in the call named by argv[1] (a
 * cancellation point): glibc unwinds the thread from inside the call, so no
 * frame of the library may be on its stack then (the hooks forward with a
 * tail call). The thread's cleanup handler must run and the join report
 * PTHREAD_CANCELED. Prints "cancelled <0|1> cleanup <0|1>"; exits 0 only if
 * both are 1. The waiting thread first makes a raw brk system call through
 * libc's `syscall` (news of new memory), so under the library the edge of
 * idleness runs its look and its pass before the call. */
#define _GNU_SOURCE
#include "blocking_calls.h"

static const char *call;
static volatile int cleaned_up;
static volatile pid_t waiter_tid;

static void cleanup(void *arg) {
    (void)arg;
    cleaned_up = 1;
}

static void *waiter(void *arg) {
    (void)arg;
    pthread_cleanup_push(cleanup, NULL);
    waiter_tid = (pid_t)syscall(SYS_gettid);
    syscall(SYS_brk, 0);
    block(call);
    pthread_cleanup_pop(0);
    return NULL;
}

/* The state letter of thread `tid` ('S' while it waits), by raw calls. */
static char state_of(pid_t tid) {
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY);
    if (fd < 0)
        return '?';
    long n = syscall(SYS_read, fd, buf, sizeof buf - 1);
    syscall(SYS_close, fd);
    if (n <= 0)
        return '?';
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] && p[2] ? p[2] : '?';
}

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    call = argv[1];
    setup(call);
    pthread_t t;
    if (pthread_create(&t, NULL, waiter, NULL))
        return 1;
    /* Until the thread sleeps in its call (twice in a row, 10 ms apart), so
     * that the cancellation finds it waiting inside the call. */
    struct timespec ten_ms = {0, 10 * 1000 * 1000};
    for (int asleep = 0; asleep < 2;) {
        syscall(SYS_nanosleep, &ten_ms, NULL);
        asleep = waiter_tid && state_of(waiter_tid) == 'S' ? asleep + 1 : 0;
    }
    pthread_cancel(t);
    void *result = NULL;
    pthread_join(t, &result);
    if (msqid >= 0)
        msgctl(msqid, IPC_RMID, NULL);
    printf("cancelled %d cleanup %d\n", result == PTHREAD_CANCELED, cleaned_up);
    return result == PTHREAD_CANCELED && cleaned_up ? 0 : 1;
}
