/* The main thread ends with pthread_exit while another thread keeps the
 * process alive for 4 s and fills 16 MiB with identical pages first (and
 * marks them mergeable itself). /proc/PID/stat of the process then says Z
 * (its leader is a zombie) while the process runs and holds its memory;
 * /proc/PID/ksm_stat is empty, /proc/PID/task/TID/ksm_stat has its figures.
 * The thread fills its memory only once the main thread has ended (0.3 s),
 * so every merged page is seen after the leader became a zombie. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
static void *worker(void *arg) {
    (void)arg;
    usleep(700000);
    size_t len = 16 << 20;
    char *p = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (size_t i = 0; i < len; i += 4096) memset(p + i, 0x5a, 4096);
    madvise(p, len, MADV_MERGEABLE);
    sleep(4);
    return p;
}
int main(void) {
    pthread_t t;
    pthread_create(&t, 0, worker, 0);
    usleep(300000);
    pthread_exit(0);
}
