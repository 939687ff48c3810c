/* Closes stderr and opens a data file, which gets descriptor 2, as some
 * daemons do; maps memory the library advises, so it has a report to give.
 * The data file must end up holding only the program's own data. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    close(2);
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd != 2) return 3;
    char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 4;
    memset(p, 1, 1 << 20);
    const char data[] = "program data\n";
    if (write(fd, data, strlen(data)) != (ssize_t)strlen(data)) return 5;
    return 0;
}
