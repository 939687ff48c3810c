/*
 * Pages of known contents for the estimator's trust-domain test, and no
 * other memory that could repeat another process's: built freestanding
 * (-nostdlib -static: no libc, no heap, no data), run with an empty
 * environment, so besides the pages below it has only its stack: the
 * 16 random bytes the kernel gives every program, and above them (a random
 * gap apart, often on a page of their own) the argument strings — so each
 * copy is given a NONCE of its own.
 *
 * Usage: domains TAG NONCE (TAG a digit). Maps and writes
 *   10 pages of one content every copy shares (whatever its TAG),
 *   20 pages of a content of its TAG (shared by the copies of that TAG),
 *    5 pages of zeroes (written: each its own frame),
 *    3 pages of its own (its pid in them);
 * prints "ready\n" on stdout, then sleeps until killed.
 * Build: cc -nostdlib -static -fno-pie -no-pie -ffreestanding
 *        -fno-stack-protector -fno-builtin (x86_64 or aarch64).
 */

typedef unsigned long u64;

#if defined(__x86_64__)
#define SYS_write 1
#define SYS_mmap 9
#define SYS_getpid 39
#define SYS_exit 60
#define SYS_pause 34
static long sys6(long n, long a, long b, long c, long d, long e, long f) {
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
__asm__(".text\n.global _start\n_start:\n xor %rbp,%rbp\n mov %rsp,%rdi\n"
        " and $-16,%rsp\n call start_c\n hlt\n");
#elif defined(__aarch64__)
#define SYS_write 64
#define SYS_mmap 222
#define SYS_getpid 172
#define SYS_exit 93
#define SYS_ppoll 73
static long sys6(long n, long a, long b, long c, long d, long e, long f) {
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    __asm__ volatile("svc 0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory");
    return x0;
}
__asm__(".text\n.global _start\n_start:\n mov x0, sp\n bl start_c\n brk #0\n");
#else
#error "domains.c knows the system calls of x86_64 and aarch64 only"
#endif

#define PAGE 4096

/* Fills a page through a volatile pointer (no call to a memset we lack). */
static void fill(unsigned char *p, unsigned char v) {
    volatile unsigned char *q = p;
    for (int i = 0; i < PAGE; i++) q[i] = v;
}

static void sleep_forever(void) {
    for (;;) {
#if defined(__x86_64__)
        sys6(SYS_pause, 0, 0, 0, 0, 0, 0);
#else
        sys6(SYS_ppoll, 0, 0, 0, 0, 0, 0);
#endif
    }
}

void start_c(long *sp) {
    char **argv = (char **)(sp + 1);
    if (sp[0] < 3) sys6(SYS_exit, 2, 0, 0, 0, 0, 0);
    unsigned char tag = (unsigned char)(argv[1][0] - '0');
    long pid = sys6(SYS_getpid, 0, 0, 0, 0, 0, 0);
    int shared = 10, own_tag = 20, zeroes = 5, unique = 3;
    int pages = shared + own_tag + zeroes + unique;
    /* PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS */
    unsigned char *m = (unsigned char *)sys6(SYS_mmap, 0, (long)pages * PAGE, 3, 0x22, -1, 0);
    if ((long)m < 0 && (long)m > -4096) sys6(SYS_exit, 1, 0, 0, 0, 0, 0);
    unsigned char *p = m;
    for (int i = 0; i < shared; i++, p += PAGE) fill(p, 0xa1);
    for (int i = 0; i < own_tag; i++, p += PAGE) fill(p, (unsigned char)(0xb0 + tag));
    for (int i = 0; i < zeroes; i++, p += PAGE) fill(p, 0);
    for (int i = 0; i < unique; i++, p += PAGE) {
        fill(p, 0xc3);
        volatile long *w = (volatile long *)p;
        w[0] = pid;
        w[1] = i;
    }
    sys6(SYS_write, 1, (long)"ready\n", 6, 0, 0, 0);
    sleep_forever();
}
