/*
 * Forks four children that each check memory inherited from the parent,
 * allocate and verify memory of their own, and exit with a code that says
 * how that went; a fifth child exec's /bin/echo. The parent waits for each in
 * turn and prints the exit codes, then checks its own memory was not touched
 * by the children's writes. Deterministic output (tests/programs.rs).
 *
 * Child i exits with 10 + i when all its checks passed, 1 when one failed.
 * Exit status 0 when every child did what was expected, 1 otherwise.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHILDREN 4
#define INHERITED (4u << 20)

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 7 + seed);
}

static int check(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 7 + seed)) return 0;
    return 1;
}

static int child(int i, unsigned char *inherited, unsigned char *mapped, size_t mapped_len) {
    int ok = check(inherited, INHERITED, 1) && check(mapped, mapped_len, 2);
    /* Copy-on-write: these writes stay in this child. */
    fill(inherited, INHERITED, 100 + i);
    fill(mapped, mapped_len, 200 + i);
    ok = ok && check(inherited, INHERITED, 100 + i);

    for (int round = 0; round < 200; round++) {
        size_t n = (size_t)(round % 10 == 0 ? (1 << 20) + round * 4096 : 16 + round * 37 * (i + 1));
        unsigned char *p = malloc(n);
        if (!p) return 1;
        fill(p, n, (unsigned)(round + i));
        unsigned char *q = realloc(p, n * 2);
        if (!q) return 1;
        ok = ok && check(q, n, (unsigned)(round + i));
        free(q);
    }
    size_t len = (size_t)(i + 1) << 20;
    unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return 1;
    fill(m, len, 3);
    ok = ok && check(m, len, 3);
    munmap(m, len);
    return ok ? 10 + i : 1;
}

int main(void) {
    size_t mapped_len = 2u << 20;
    unsigned char *inherited = malloc(INHERITED);
    unsigned char *mapped = mmap(NULL, mapped_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!inherited || mapped == MAP_FAILED) { perror("setup"); return 2; }
    fill(inherited, INHERITED, 1);
    fill(mapped, mapped_len, 2);

    int failures = 0;
    pid_t pids[CHILDREN];
    fflush(stdout); /* nothing buffered is duplicated into the children */
    for (int i = 0; i < CHILDREN; i++) {
        pids[i] = fork();
        if (pids[i] < 0) { perror("fork"); return 2; }
        if (pids[i] == 0) exit(child(i, inherited, mapped, mapped_len));
    }
    for (int i = 0; i < CHILDREN; i++) {
        int status;
        if (waitpid(pids[i], &status, 0) != pids[i]) { perror("waitpid"); return 2; }
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        printf("child %d exit %d\n", i, code);
        if (code != 10 + i) failures++;
    }

    fflush(stdout);
    pid_t e = fork();
    if (e < 0) { perror("fork"); return 2; }
    if (e == 0) {
        execl("/bin/echo", "echo", "hello", "from", "exec", (char *)NULL);
        _exit(127);
    }
    int status;
    if (waitpid(e, &status, 0) != e) { perror("waitpid"); return 2; }
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    printf("exec child exit %d\n", code);
    if (code != 0) failures++;

    int parent_ok = check(inherited, INHERITED, 1) && check(mapped, mapped_len, 2);
    printf("parent memory intact %s\n", parent_ok ? "yes" : "no");
    if (!parent_ok) failures++;
    free(inherited);
    munmap(mapped, mapped_len);
    printf("failures %d\n", failures);
    return failures ? 1 : 0;
}
