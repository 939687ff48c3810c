//! Raw Linux system calls that return `Err(errno)` instead of setting `errno`.
//!
//! Never allocates, never touches the thread's `errno`, never calls into libc.

use core::arch::asm;

/// A failed system call's error number (positive, as in `errno.h`).
pub type Errno = i32;

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn raw6(
    n: usize,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
    a6: usize,
) -> isize {
    let ret: isize;
    asm!("syscall",
        inlateout("rax") n as isize => ret,
        in("rdi") a1, in("rsi") a2, in("rdx") a3, in("r10") a4, in("r8") a5, in("r9") a6,
        lateout("rcx") _, lateout("r11") _,
        options(nostack));
    ret
}

#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn raw6(
    n: usize,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
    a6: usize,
) -> isize {
    let ret: isize;
    asm!("svc 0",
        in("x8") n,
        inlateout("x0") a1 as isize => ret,
        in("x1") a2, in("x2") a3, in("x3") a4, in("x4") a5, in("x5") a6,
        options(nostack));
    ret
}

#[inline(always)]
fn check(ret: isize) -> Result<usize, Errno> {
    if (-4095..0).contains(&ret) {
        Err(-ret as Errno)
    } else {
        Ok(ret as usize)
    }
}

macro_rules! syscall {
    ($n:expr) => { check(raw6($n as usize, 0, 0, 0, 0, 0, 0)) };
    ($n:expr, $a:expr) => { check(raw6($n as usize, $a as usize, 0, 0, 0, 0, 0)) };
    ($n:expr, $a:expr, $b:expr) => { check(raw6($n as usize, $a as usize, $b as usize, 0, 0, 0, 0)) };
    ($n:expr, $a:expr, $b:expr, $c:expr) => {
        check(raw6($n as usize, $a as usize, $b as usize, $c as usize, 0, 0, 0))
    };
    ($n:expr, $a:expr, $b:expr, $c:expr, $d:expr) => {
        check(raw6($n as usize, $a as usize, $b as usize, $c as usize, $d as usize, 0, 0))
    };
    ($n:expr, $a:expr, $b:expr, $c:expr, $d:expr, $e:expr) => {
        check(raw6($n as usize, $a as usize, $b as usize, $c as usize, $d as usize, $e as usize, 0))
    };
    ($n:expr, $a:expr, $b:expr, $c:expr, $d:expr, $e:expr, $f:expr) => {
        check(raw6($n as usize, $a as usize, $b as usize, $c as usize, $d as usize, $e as usize, $f as usize))
    };
}

pub const PAGE_SIZE_FALLBACK: usize = 4096;

pub fn madvise(addr: usize, len: usize, advice: i32) -> Result<(), Errno> {
    unsafe { syscall!(libc::SYS_madvise, addr, len, advice).map(|_| ()) }
}

pub fn prctl(option: i32, a2: usize, a3: usize, a4: usize, a5: usize) -> Result<usize, Errno> {
    unsafe { syscall!(libc::SYS_prctl, option, a2, a3, a4, a5) }
}

/// Anonymous private read-write memory straight from the kernel, for our own
/// bookkeeping (never through the host's allocator or our own hooks).
pub fn map_anonymous(len: usize) -> Result<*mut u8, Errno> {
    unsafe {
        syscall!(
            libc::SYS_mmap,
            0usize,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1isize as usize,
            0usize
        )
        .map(|p| p as *mut u8)
    }
}

const PR_SET_VMA: i32 = 0x53564d41;
const PR_SET_VMA_ANON_NAME: usize = 0;

/// The name our own mappings carry in `/proc/self/maps` (where the kernel
/// supports naming anonymous memory), so the catch-up scan passes them by.
pub const OWN_MAPPING_NAME: &[u8] = b"[anon:ksmauto]";

/// Memory for the library's own per-process state: zeroed in a forked child
/// (`MADV_WIPEONFORK`), never merged (it is written constantly), and named
/// `[anon:ksmauto]`.
pub fn map_private_state(len: usize) -> Result<*mut u8, Errno> {
    let p = map_anonymous(len)?;
    let _ = madvise(p as usize, len, libc::MADV_WIPEONFORK);
    let _ = madvise(p as usize, len, libc::MADV_UNMERGEABLE);
    let _ = prctl(
        PR_SET_VMA,
        PR_SET_VMA_ANON_NAME,
        p as usize,
        len,
        b"ksmauto\0".as_ptr() as usize,
    );
    Ok(p)
}

/// Nanoseconds on the coarse monotonic clock (vDSO: no system call, and it
/// leaves `errno` alone on success, which is the only outcome for this clock).
pub fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn sleep_ns(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    let _ = unsafe { syscall!(libc::SYS_nanosleep, &ts as *const libc::timespec, 0usize) };
}

/// `path` must end with a NUL byte.
pub fn open(path: &[u8], flags: i32, mode: u32) -> Result<i32, Errno> {
    debug_assert_eq!(path.last(), Some(&0));
    unsafe {
        syscall!(
            libc::SYS_openat,
            libc::AT_FDCWD as isize as usize,
            path.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode
        )
        .map(|fd| fd as i32)
    }
}

pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    loop {
        match unsafe { syscall!(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) } {
            Err(libc::EINTR) => continue,
            other => return other,
        }
    }
}

/// Writes all of `buf`, retrying short writes and EINTR.
pub fn write_all(fd: i32, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        match unsafe { syscall!(libc::SYS_write, fd, buf.as_ptr(), buf.len()) } {
            Ok(0) => return Err(libc::EIO),
            Ok(n) => buf = &buf[n..],
            Err(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn close(fd: i32) {
    let _ = unsafe { syscall!(libc::SYS_close, fd) };
}

pub fn getpid() -> i32 {
    unsafe { syscall!(libc::SYS_getpid).unwrap_or(0) as i32 }
}

pub fn gettid() -> i32 {
    unsafe { syscall!(libc::SYS_gettid).unwrap_or(0) as i32 }
}

pub fn sched_yield() {
    let _ = unsafe { syscall!(libc::SYS_sched_yield) };
}

/// Writes to `fd` with SIGPIPE held off, so that a closed pipe on the other end
/// of stderr can never kill the host process (and change its exit status) while
/// we print our report. A SIGPIPE raised by our own write is consumed; one
/// that was already pending for the program stays pending.
pub fn write_all_no_sigpipe(fd: i32, buf: &[u8]) -> Result<(), Errno> {
    const SIGSET_BYTES: usize = 8;
    let pipe_bit: u64 = 1 << (libc::SIGPIPE - 1);
    let mut old: u64 = 0;
    let mut pending: u64 = 0;
    unsafe {
        let _ = syscall!(
            libc::SYS_rt_sigpending,
            &mut pending as *mut u64,
            SIGSET_BYTES
        );
        let _ = syscall!(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK,
            &pipe_bit as *const u64,
            &mut old as *mut u64,
            SIGSET_BYTES
        );
    }
    let result = write_all(fd, buf);
    unsafe {
        if result == Err(libc::EPIPE) && pending & pipe_bit == 0 {
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let _ = syscall!(
                libc::SYS_rt_sigtimedwait,
                &pipe_bit as *const u64,
                0usize,
                &zero as *const libc::timespec,
                SIGSET_BYTES
            );
        }
        let _ = syscall!(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &old as *const u64,
            0usize,
            SIGSET_BYTES
        );
    }
    result
}

/// Reads a whole (small) file into `buf`; returns the bytes read.
pub fn read_file(path: &[u8], buf: &mut [u8]) -> Result<usize, Errno> {
    let fd = open(path, libc::O_RDONLY, 0)?;
    let mut filled = 0;
    while filled < buf.len() {
        match read(fd, &mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => {
                close(fd);
                return Err(e);
            }
        }
    }
    close(fd);
    Ok(filled)
}

/// The symbolic name of the errno values our reports break out.
pub fn errno_name(errno: Errno) -> &'static str {
    match errno {
        libc::EINVAL => "EINVAL",
        libc::ENOMEM => "ENOMEM",
        libc::EAGAIN => "EAGAIN",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENOENT => "ENOENT",
        libc::EROFS => "EROFS",
        libc::ENOSPC => "ENOSPC",
        libc::EISDIR => "EISDIR",
        libc::ENOTDIR => "ENOTDIR",
        libc::EBADF => "EBADF",
        libc::EPIPE => "EPIPE",
        _ => "error",
    }
}
