/*
 * The C side of tests/blocking.rs `a_busy_program_pays_no_look_per_call`: a
 * program whose blocking calls never wait. It sleeps 300 ms in a raw system
 * call (no hook sees it), so the catch-up's timer is due, then reads
 * /dev/zero 20,000 times (each read returns at once) and prints "reads N".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    struct timespec nap = {0, 300 * 1000 * 1000};
    syscall(SYS_nanosleep, &nap, NULL);
    int fd = open("/dev/zero", O_RDONLY);
    if (fd < 0) return 1;
    char c;
    long n = 0;
    for (int i = 0; i < 20000; i++) n += read(fd, &c, 1) == 1;
    printf("reads %ld\n", n);
    return 0;
}
