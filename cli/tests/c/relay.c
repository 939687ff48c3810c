/* A process that hands itself on: it forks and the parent exits at once,
 * again and again for argv[1] seconds (what a daemon's double fork does, in
 * a loop). At any moment one process of it lives, but a listing of /proc
 * taken while one hands on can see neither: the old one is gone when its
 * stat is read, the new one was born after the listing. Then the last one
 * holds 8 MiB of data and waits to be stopped. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    double end = now() + (argc > 1 ? atof(argv[1]) : 3.0);
    while (now() < end) {
        pid_t pid = fork();
        if (pid < 0)
            return 1;
        if (pid > 0)
            _exit(0);
        usleep(200);
    }
    size_t size = 8 << 20;
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return 1;
    for (size_t i = 0; i < size; i += 4096)
        memset(p + i, (int)(i / 4096 % 251) + 1, 4096);
    for (;;)
        pause();
}
