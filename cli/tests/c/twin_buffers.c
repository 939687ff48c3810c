/*
 * Holds duplicate data for `ksmauto run` on static programs: two private
 * anonymous 16 MiB buffers with the same contents, page by page (each page
 * of a buffer differs from the others, so all the sharing is between the
 * two). Built both `-static` and dynamic by cli/tests/static_run.rs.
 * Prints "ready PID" on stderr once both are written, then waits for
 * SIGUSR1 and exits 0 (SIGTERM ends it as usual).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#define SIZE (16u << 20)

static unsigned char *filled(void) {
    unsigned char *m = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    for (size_t page = 0; page < SIZE / ps; page++) {
        /* A pattern of its own (other tests fill pages with i+1). */
        uint32_t word = (uint32_t)(page * 2654435761u) ^ 0x7a11b0f5u;
        uint32_t *w = (uint32_t *)(m + page * ps);
        for (size_t i = 0; i < ps / sizeof *w; i++) w[i] = word;
    }
    return m;
}

int main(void) {
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    if (!filled() || !filled()) return 1;
    fprintf(stderr, "ready %d\n", (int)getpid());
    int sig;
    sigwait(&usr1, &sig);
    return 0;
}
