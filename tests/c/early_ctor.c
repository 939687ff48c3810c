/*
 * An allocation made by a shared library's constructor before the preload's
 * own constructor has run: ld.so initializes the program's libraries before
 * an LD_PRELOAD library that none of them depends on, so such a call is the
 * first one any hook sees and has to start the library itself.
 *
 * Built twice from this file (tests/hooks.rs):
 *   -shared -fPIC -DEARLY_LIB  the library; its constructor makes one call,
 *                              named by $EARLY_CALL, and records the outcome
 *   (plain)                    the program, linked with that library, which
 *                              prints the outcome:
 *                              "early <call> result ok|NULL|FAILED errno N"
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef EARLY_LIB
#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

const char *early_call = "none";
const char *early_result = "none";
int early_errno = -1;

static int pattern_ok(unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)i;
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)i) return 0;
    return 1;
}

static void block(void *p, size_t n, size_t align) {
    early_errno = errno;
    if (!p) {
        early_result = "NULL";
        return;
    }
    early_result = (uintptr_t)p % align == 0 && pattern_ok(p, n) ? "ok" : "BAD";
}

__attribute__((constructor)) static void first_call(void) {
    const char *what = getenv("EARLY_CALL");
    if (!what) return;
    early_call = what;
    errno = 0;
    void *p = NULL;
    if (!strcmp(what, "malloc")) block(malloc(200), 200, 16);
    else if (!strcmp(what, "calloc")) block(calloc(10, 20), 200, 16);
    else if (!strcmp(what, "realloc")) block(realloc(NULL, 200), 200, 16);
    else if (!strcmp(what, "reallocarray")) block(reallocarray(NULL, 10, 20), 200, 16);
    else if (!strcmp(what, "posix_memalign")) {
        int rc = posix_memalign(&p, 64, 200);
        block(rc == 0 ? p : NULL, 200, 64);
        if (rc) early_errno = rc;
    }
    else if (!strcmp(what, "aligned_alloc")) block(aligned_alloc(64, 256), 256, 64);
    else if (!strcmp(what, "memalign")) block(memalign(64, 200), 200, 64);
    else if (!strcmp(what, "valloc")) block(valloc(200), 200, 4096);
    else if (!strcmp(what, "pvalloc")) block(pvalloc(200), 200, 4096);
    else if (!strcmp(what, "mmap") || !strcmp(what, "mmap64")) {
        p = (what[4] ? mmap64 : mmap)(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        block(p == MAP_FAILED ? NULL : p, 8192, 4096);
        if (p == MAP_FAILED) early_result = "FAILED";
    } else early_result = "unknown";
}
#else
extern const char *early_call, *early_result;
extern int early_errno;

int main(void) {
    printf("early %s result %s errno %d\n", early_call, early_result, early_errno);
    return 0;
}
#endif
