/* A thread on a caller-supplied stack carved out of the malloc heap
 * (pthread_attr_setstack on a malloc'd buffer). Under the process-wide
 * engine the heap is mergeable; it must stay so after the thread ran. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *body(void *arg) { return arg; }

static int heap_is_mergeable(void) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in_heap = 0, mg = -1;
    while (f && fgets(line, sizeof line, f)) {
        if (strchr(line, '-') && strstr(line, " rw-p ") ) in_heap = strstr(line, "[heap]") != NULL;
        else if (in_heap && !strncmp(line, "VmFlags:", 8)) mg = strstr(line, " mg") != NULL;
    }
    if (f) fclose(f);
    return mg;
}

int main(void) {
    static void *blocks[4000];
    for (int i = 0; i < 4000; i++) { blocks[i] = malloc(900); memset(blocks[i], i, 900); }
    size_t size = 64 * 1024;
    void *stack = malloc(size);
    printf("heap mergeable before %d\n", heap_is_mergeable());
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    if (pthread_attr_setstack(&attr, stack, size)) return 2;
    pthread_t t;
    if (pthread_create(&t, &attr, body, NULL)) return 3;
    pthread_join(t, NULL);
    printf("heap mergeable after %d\n", heap_is_mergeable());
    return 0;
}
