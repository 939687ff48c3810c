/* pvalloc of a size that cannot be rounded up to a page: whatever the
 * serving allocator answers (a block, or NULL and its errno) must reach the
 * program unchanged. */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>

int main(void) {
    errno = 0;
    void *p = pvalloc(SIZE_MAX);
    printf("%s errno %d\n", p ? "block" : "NULL", errno);
    return 0;
}
