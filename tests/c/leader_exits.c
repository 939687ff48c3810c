/* The main thread ends with pthread_exit while another thread runs on in
 * the same memory: /proc/self (the main thread's entry) then shows no
 * memory. The other thread fills 64 identical pages, waits until ksmd has
 * merged them (its own /proc/thread-self/ksm_stat), prints `merged N` and
 * ends the process with exit(0), which writes the library's report. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static long merging_pages(void) {
    FILE *f = fopen("/proc/thread-self/ksm_stat", "r");
    char line[128];
    long n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "ksm_merging_pages %ld", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

static void *worker(void *arg) {
    (void)arg;
    size_t size = 64 * 4096;
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        exit(2);
    madvise(p, size, MADV_NOHUGEPAGE);
    memset(p, 0x5a, size);
    long merged = 0;
    for (int i = 0; i < 400 && merged < 60; i++) {
        /* Waits while ksmd merges. */
        struct timespec t = {0, 50 * 1000 * 1000};
        nanosleep(&t, NULL);
        merged = merging_pages();
    }
    printf("merged %ld\n", merged);
    fflush(stdout);
    exit(0);
}

int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0)
        return 1;
    pthread_exit(NULL);
}
