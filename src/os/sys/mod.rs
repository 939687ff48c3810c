//! Raw Linux system calls that return `Err(errno)` instead of setting `errno`.
//!
//! Never allocates, never touches the thread's `errno`; calls into libc only
//! for the vDSO clock (which leaves `errno` alone).
//!
//! Safe here means what it means in Rust: a safe function can be called with
//! any arguments and touches no memory but what its arguments lend it (paths
//! as `&CStr` or checked NUL-terminated bytes, buffers as slices). A call
//! that reads through a raw pointer or can change memory the caller does not
//! hand over (`madvise`, `prctl`, any system call by number) is an `unsafe
//! fn` whose `# Safety` section says what the caller promises, as in rustix.
//! The safe surface over those is by intent: `super::ksm`, `super::release_pages`.
//!
//! One file per concern; every function is re-exported here, so callers
//! name them `sys::x` whichever file holds them.

use core::arch::asm;

/// A failed system call's error number (positive, as in `errno.h`).
pub type Errno = i32;

/// System call `n` with six arguments; the kernel's return value (`-errno`
/// on failure).
///
/// # Safety
/// The arguments must be what system call `n` expects: every pointer among
/// them valid for what the kernel reads or writes through it, and the call
/// must not change memory that Rust code or the program relies on.
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
    // SAFETY: the x86_64 system call ABI: number in rax, arguments in rdi,
    // rsi, rdx, r10, r8, r9; the kernel clobbers only rcx and r11 (declared)
    // and uses no user stack; the call itself is the caller's promise.
    asm!("syscall",
        inlateout("rax") n as isize => ret,
        in("rdi") a1, in("rsi") a2, in("rdx") a3, in("r10") a4, in("r8") a5, in("r9") a6,
        lateout("rcx") _, lateout("r11") _,
        options(nostack));
    ret
}

/// As the x86_64 `raw6` above.
///
/// # Safety
/// As the x86_64 `raw6` above.
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
    // SAFETY: the aarch64 system call ABI: number in x8, arguments in x0-x5,
    // result in x0, nothing else clobbered, no user stack; the call itself is
    // the caller's promise.
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

// Paths through `$crate`: the files of this module use it without
// importing `check` and `raw6`.
macro_rules! syscall {
    ($n:expr) => { $crate::os::sys::check($crate::os::sys::raw6($n as usize, 0, 0, 0, 0, 0, 0)) };
    ($n:expr, $a:expr) => { $crate::os::sys::check($crate::os::sys::raw6($n as usize, $a as usize, 0, 0, 0, 0, 0)) };
    ($n:expr, $a:expr, $b:expr) => { $crate::os::sys::check($crate::os::sys::raw6($n as usize, $a as usize, $b as usize, 0, 0, 0, 0)) };
    ($n:expr, $a:expr, $b:expr, $c:expr) => {
        $crate::os::sys::check($crate::os::sys::raw6($n as usize, $a as usize, $b as usize, $c as usize, 0, 0, 0))
    };
    ($n:expr, $a:expr, $b:expr, $c:expr, $d:expr) => {
        $crate::os::sys::check($crate::os::sys::raw6($n as usize, $a as usize, $b as usize, $c as usize, $d as usize, 0, 0))
    };
    ($n:expr, $a:expr, $b:expr, $c:expr, $d:expr, $e:expr) => {
        $crate::os::sys::check($crate::os::sys::raw6($n as usize, $a as usize, $b as usize, $c as usize, $d as usize, $e as usize, 0))
    };
    ($n:expr, $a:expr, $b:expr, $c:expr, $d:expr, $e:expr, $f:expr) => {
        $crate::os::sys::check($crate::os::sys::raw6($n as usize, $a as usize, $b as usize, $c as usize, $d as usize, $e as usize, $f as usize))
    };
}

/// Any system call, by number (for forwarding a program's `syscall`).
///
/// # Safety
/// The arguments must be what system call `number` expects.
pub unsafe fn raw(number: usize, a: [usize; 6]) -> Result<usize, Errno> {
    check(raw6(number, a[0], a[1], a[2], a[3], a[4], a[5]))
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
        libc::ELOOP => "ELOOP",
        libc::ENXIO => "ENXIO",
        libc::EMLINK => "EMLINK",
        _ => "error",
    }
}

mod descriptors;
mod files;
mod maps_query;
mod memory;
mod process;
mod signals;
mod threads;
mod time;

pub use descriptors::*;
pub use files::*;
pub use maps_query::*;
pub use memory::*;
pub use process::*;
pub use signals::*;
pub use threads::*;
pub use time::*;
