/*
 * A hostile process of a tree under `ksmauto run` (started by root): it
 * drops to nobody (as a service worker does), makes itself dumpable again
 * (so its /proc directory, and with it `run`'s list of the tree's users,
 * shows nobody), and plants entries in `run`'s report directory, the
 * directory of KSMAUTO_STATS.
 *
 * Usage: plant ACTION...   where ACTION is one of
 *   symlink NAME TARGET   a symbolic link NAME -> TARGET
 *   link NAME TARGET      a hard link NAME to TARGET; prints
 *                         "linked NAME" or "not linked NAME: <error>"
 *   fifo NAME             a FIFO
 *   dir NAME              a directory
 *   sparse NAME BYTES     a sparse file of BYTES bytes (no data)
 *   lines NAME COUNT      COUNT report lines {"pid":P,"start_time":S},
 *                         P from 10000000 up (no process has such a pid)
 *   ready                 prints "planted DIR" on stderr
 *   sleep MS              sleeps MS milliseconds
 * Exits 2 if it cannot drop its privileges or plant an entry.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char dir[4096];

static const char *in_dir(const char *name) {
    static char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static void die(const char *what, const char *name) {
    fprintf(stderr, "plant: %s %s: %s\n", what, name, strerror(errno));
    exit(2);
}

static void write_lines(const char *name, long count) {
    FILE *f = fopen(in_dir(name), "wx");
    if (!f) die("lines", name);
    for (long i = 0; i < count; i++)
        fprintf(f, "{\"pid\":%ld,\"start_time\":%ld}\n", 10000000 + i, i + 1);
    if (fclose(f)) die("lines", name);
}

static void sparse(const char *name, long long bytes) {
    int fd = open(in_dir(name), O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || ftruncate(fd, bytes)) die("sparse", name);
    close(fd);
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) && errno == EINTR) {}
}

int main(int argc, char **argv) {
    const char *stats = getenv("KSMAUTO_STATS");
    if (!stats) {
        fprintf(stderr, "plant: KSMAUTO_STATS is not set\n");
        return 2;
    }
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", stats);
    snprintf(dir, sizeof dir, "%s", dirname(copy));
    if (setgroups(0, NULL) || setgid(65534) || setuid(65534)) die("drop", "privileges");
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *name = i + 1 < argc ? argv[i + 1] : "";
        const char *arg = i + 2 < argc ? argv[i + 2] : "";
        if (!strcmp(a, "symlink")) {
            if (symlink(arg, in_dir(name))) die("symlink", name);
            i += 2;
        } else if (!strcmp(a, "link")) {
            if (link(arg, in_dir(name)))
                fprintf(stderr, "not linked %s: %s\n", name, strerror(errno));
            else
                fprintf(stderr, "linked %s\n", name);
            i += 2;
        } else if (!strcmp(a, "fifo")) {
            if (mkfifo(in_dir(name), 0600)) die("fifo", name);
            i += 1;
        } else if (!strcmp(a, "dir")) {
            if (mkdir(in_dir(name), 0700)) die("dir", name);
            i += 1;
        } else if (!strcmp(a, "sparse")) {
            sparse(name, atoll(arg));
            i += 2;
        } else if (!strcmp(a, "lines")) {
            write_lines(name, atol(arg));
            i += 2;
        } else if (!strcmp(a, "ready")) {
            fprintf(stderr, "planted %s\n", dir);
        } else if (!strcmp(a, "sleep")) {
            sleep_ms(atol(name));
            i += 1;
        } else {
            fprintf(stderr, "plant: unknown action %s\n", a);
            return 2;
        }
    }
    return 0;
}
