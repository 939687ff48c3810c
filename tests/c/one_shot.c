/*
 * A program that waits for a one-shot notification (issue 19, "nothing
 * consumed"): files whose ->poll reports an event once, to the first poll
 * after it happened (systemd's mount watcher, hostnamed, systemd-oomd and
 * lmkd wait on these). Any poll of the descriptor that is not the
 * program's own — a "look" of the library before it lets a call block —
 * takes the event, and the program's own wait then sleeps to its timeout.
 *
 *   one_shot NOTIFIER WAIT DIR
 *   one_shot cleanup DIR
 *
 * NOTIFIER:
 *   mountinfo  /proc/self/mountinfo, POLLPRI|POLLERR on a mount change (the
 *              program mounts a tmpfs on DIR)
 *   hostname   /proc/sys/kernel/hostname, POLLPRI|POLLERR on sethostname
 *   psi        a PSI trigger ("some 300000 2000000": 300 ms of stall in a
 *              2 s window) in the cpu.pressure of a cgroup of its own
 *              (cgroup2 mounted on DIR); the program puts CPU pressure on it
 *              with spinning children for 0.7 s
 * WAIT, the program's own call once the change happened and it allocated
 * (so the catch-up has news):
 *   poll       poll() of the descriptor
 *   epoll      epoll_wait() on an epoll set holding it
 *   read       re-reads the file (lseek + read, as a watcher refreshing its
 *              table does), then poll()s it: an event still pending
 *              without the library must still be there
 * Each wait has a 3 s timeout. Prints "notified revents=0x.. after N ms",
 * or "missed" (the timeout passed), and exits 0 either way.
 *
 * The PSI trigger is opened without CAP_SYS_RESOURCE (the program drops it
 * first), so the kernel checks it every 2 s, with the group's averages
 * (with the capability it would poll every 0.2 s, and a stall going on past
 * the first event would fire a deferred one a window later, at a time no
 * test can predict). The first check comes 2 s after the group's first
 * wake-up, when the 0.7 s of pressure (S to S + 0.7 s) is over and inside
 * the window: one event; the next checks see no new stall: none after it.
 * The program's wait starts at S + 5.5 s, so exactly one event is pending
 * then (the program never polled before) and none comes during the wait:
 * a wait whose event was taken by someone else ends "missed", never
 * "notified" by a later event. A run whose pressure ended late, so that the
 * first check may have seen it still going on, says "inconclusive"
 * instead (the test runs it again).
 *
 * Run by the test in private mount and UTS namespaces (nothing it mounts
 * or names reaches the host). `cleanup` removes the cgroup a killed run left.
 */
#include "offthread.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

static const char *dir;
static char cgroup[4096];
static double joined_cgroup;

static void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY);
    if (fd < 0 || write(fd, text, strlen(text)) < 0) die(path);
    close(fd);
}

/* Without CAP_SYS_RESOURCE in the effective set, a PSI trigger opened now is
   an unprivileged one (checked every 2 s; see the top). */
static void drop_sys_resource(void) {
    struct __user_cap_header_struct head = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &head, data) != 0) die("capget");
    data[CAP_SYS_RESOURCE / 32].effective &= ~(1u << (CAP_SYS_RESOURCE % 32));
    if (syscall(SYS_capset, &head, data) != 0) die("capset");
}

/* The cgroup of this run: named after DIR, which is the run's own. */
static void name_cgroup(void) {
    const char *base = strrchr(dir, '/');
    snprintf(cgroup, sizeof cgroup, "%s/offthread-one-shot-%s", dir, base ? base + 1 : dir);
}

static int open_psi_trigger(void) {
    char path[4200];
    if (mount("none", dir, "cgroup2", 0, NULL) != 0) die("mount cgroup2");
    name_cgroup();
    if (mkdir(cgroup, 0755) != 0) die("mkdir cgroup");
    snprintf(path, sizeof path, "%s/cgroup.procs", cgroup);
    write_file(path, "0");
    joined_cgroup = now_s();
    snprintf(path, sizeof path, "%s/cpu.pressure", cgroup);
    drop_sys_resource();
    int fd = open(path, O_RDWR | O_NONBLOCK);
    const char trigger[] = "some 300000 2000000";
    if (fd < 0 || write(fd, trigger, sizeof trigger) < 0) die("psi trigger");
    return fd;
}

/* Runnable tasks beyond the CPUs for 0.7 s (every moment some task of the
   cgroup waits for a CPU: 0.7 s of stall, over the trigger's 300 ms), then
   quiet until 5.5 s after the start (see the top). The children stop by
   the clock, not when the parent gets to kill them: on a loaded machine the
   parent may wait long for a CPU, and stall going on past the trigger's
   first check would make a later event. Returns 0, or -1 if the pressure
   still ended too late (1.5 s after the program joined the cgroup: the
   first check may have come before its end). */
static int cpu_pressure(double joined) {
    double start = now_s(), until = start + 0.7;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int n = (int)(2 * cpus + 2);
    pid_t kids[256];
    if (n > 256) n = 256;
    for (int i = 0; i < n; i++) {
        kids[i] = fork();
        if (kids[i] < 0) die("fork");
        if (kids[i] == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            while (now_s() < until) {}
            _exit(0);
        }
    }
    for (int i = 0; i < n; i++) waitpid(kids[i], NULL, 0);
    double over = now_s();
    double left = start + 5.5 - over;
    if (left > 0) {
        struct timespec quiet = { (time_t)left, (long)((left - (time_t)left) * 1e9) };
        nanosleep(&quiet, NULL);
    }
    return over - joined < 1.5 ? 0 : -1;
}

static void leave_cgroup(void) {
    char path[4200];
    snprintf(path, sizeof path, "%s/cgroup.procs", dir);
    write_file(path, "0");
    if (rmdir(cgroup) != 0) die("rmdir cgroup");
}

static int cleanup(void) {
    if (mount("none", dir, "cgroup2", 0, NULL) != 0) die("mount cgroup2");
    name_cgroup();
    rmdir(cgroup);
    return 0;
}

int main(int argc, char **argv) {
    ot_init();
    if (argc == 3 && !strcmp(argv[1], "cleanup")) {
        dir = argv[2];
        return cleanup();
    }
    if (argc != 4) { fprintf(stderr, "usage: one_shot NOTIFIER WAIT DIR\n"); return 64; }
    const char *notifier = argv[1], *wait = argv[2];
    dir = argv[3];
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    char buf[65536];
    int fd;
    short events = POLLPRI | POLLERR;
    if (!strcmp(notifier, "mountinfo")) fd = open("/proc/self/mountinfo", O_RDONLY);
    else if (!strcmp(notifier, "hostname")) fd = open("/proc/sys/kernel/hostname", O_RDONLY);
    else if (!strcmp(notifier, "psi")) { fd = open_psi_trigger(); events = POLLPRI; }
    else return 64;
    if (fd < 0) die("open");
    if (strcmp(notifier, "psi") != 0 && read(fd, buf, sizeof buf) < 0) die("first read");
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = (uint32_t)events, .data.fd = fd };
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll");

    /* The change, before the program waits for it. */
    if (!strcmp(notifier, "mountinfo")) {
        if (mount("offthread", dir, "tmpfs", 0, "size=1m") != 0) die("mount tmpfs");
    } else if (!strcmp(notifier, "hostname")) {
        const char name[] = "offthread-one-shot";
        if (sethostname(name, sizeof name - 1) != 0) die("sethostname");
    } else if (cpu_pressure(joined_cgroup) != 0) {
        say("inconclusive: the pressure ended late (a loaded machine)\n");
        leave_cgroup();
        return 0;
    }
    /* News for the catch-up: 32 MiB in blocks glibc maps itself. */
    large_blocks(32, 1 << 20);

    int ready;
    unsigned revents = 0;
    double wait_start = now_s();
    if (!strcmp(wait, "epoll")) {
        struct epoll_event got;
        ready = epoll_wait(ep, &got, 1, 3000);
        revents = got.events;
    } else {
        if (!strcmp(wait, "read")) {
            if (lseek(fd, 0, SEEK_SET) < 0 || read(fd, buf, sizeof buf) < 0) die("re-read");
        } else if (strcmp(wait, "poll") != 0) {
            return 64;
        }
        struct pollfd p = { .fd = fd, .events = events };
        ready = poll(&p, 1, 3000);
        revents = (unsigned)p.revents;
    }
    if (ready > 0) say("notified revents=%#x after %.0f ms\n", revents, (now_s() - wait_start) * 1000);
    else if (ready == 0) say("missed\n");
    else die("wait");
    if (!strcmp(notifier, "psi")) leave_cgroup();
    return 0;
}
