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

use core::arch::asm;
use core::ffi::CStr;

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

/// Any system call, by number (for forwarding a program's `syscall`).
///
/// # Safety
/// The arguments must be what system call `number` expects.
pub unsafe fn raw(number: usize, a: [usize; 6]) -> Result<usize, Errno> {
    check(raw6(number, a[0], a[1], a[2], a[3], a[4], a[5]))
}

/// What the library asks `madvise` for, named by intent; the value is the
/// kernel's `MADV_*` number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Advice {
    /// `MADV_MERGEABLE`: KSM may merge the pages (their contents stay).
    MarkMergeable = libc::MADV_MERGEABLE,
    /// `MADV_UNMERGEABLE`: KSM unmerges them and leaves them alone (their
    /// contents stay; merged pages are copied back out).
    UnmarkMergeable = libc::MADV_UNMERGEABLE,
    /// `MADV_DONTNEED`: the pages go back to the kernel; private anonymous
    /// ones read as zero afterwards, file-backed ones as the file.
    ReleasePages = libc::MADV_DONTNEED,
}

/// `madvise(addr, len, advice)`.
///
/// # Safety
/// With [`Advice::ReleasePages`], `[addr, addr + len)` must be memory the
/// caller owns and whose contents it may lose: no live reference into it,
/// nothing of the program's. The merging advice changes no page's contents,
/// but still acts on whatever is mapped there: the range must be one the
/// caller may mark (the engine's policy decides which).
pub unsafe fn madvise(addr: usize, len: usize, advice: Advice) -> Result<(), Errno> {
    syscall!(libc::SYS_madvise, addr, len, advice as i32).map(|_| ())
}

/// `prctl(option, a2, a3, a4, a5)`.
///
/// # Safety
/// The arguments must be what `option` expects: some options read or write
/// through an argument (`PR_SET_NAME`, `PR_GET_NAME`, ...) or change the
/// address space (`PR_SET_MM`); the caller vouches for the option it passes.
pub unsafe fn prctl(
    option: i32,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
) -> Result<usize, Errno> {
    syscall!(libc::SYS_prctl, option, a2, a3, a4, a5)
}

/// Nanoseconds on the coarse monotonic clock (vDSO: no system call, and it
/// leaves `errno` alone on success, which is the only outcome for this clock).
pub fn monotonic_coarse_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

/// Nanoseconds on the fine monotonic clock (vDSO), to time our own work.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

// Out of line: its `timespec` would otherwise be a local of every caller
// whose address escapes, and such a caller (a hook of a blocking call) can
// no longer forward with a tail call.
#[inline(never)]
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one `timespec` into the local `ts`; for a
    // clock that exists it cannot fail, so it leaves `errno` alone.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time this thread has used, in nanoseconds (a system call: the vDSO
/// has no thread clock).
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one `timespec` into the local `ts`.
    let _ = unsafe {
        syscall!(
            libc::SYS_clock_gettime,
            libc::CLOCK_THREAD_CPUTIME_ID,
            &mut ts as *mut libc::timespec
        )
    };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// When running on the thread's alternate signal stack, the bytes left on it
/// below this function's frame; `None` on an ordinary stack (or when it
/// cannot be told: an `SS_AUTODISARM` stack reads as disabled while in use).
#[inline(never)]
pub fn alt_stack_room() -> Option<usize> {
    let mut ss = libc::stack_t {
        ss_sp: core::ptr::null_mut(),
        ss_flags: 0,
        ss_size: 0,
    };
    // SAFETY: with a null new stack, sigaltstack only writes the current one
    // into the local `ss`; it changes nothing.
    unsafe { syscall!(libc::SYS_sigaltstack, 0usize, &mut ss as *mut libc::stack_t) }.ok()?;
    if ss.ss_flags & libc::SS_ONSTACK == 0 {
        return None;
    }
    let here = &ss as *const libc::stack_t as usize;
    Some(here.saturating_sub(ss.ss_sp as usize))
}

pub fn sleep_ns(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: nanosleep reads the local `ts`; no remainder is asked for.
    let _ = unsafe { syscall!(libc::SYS_nanosleep, &ts as *const libc::timespec, 0usize) };
}

/// Sleeps while the futex word `word` (this process's: a private futex)
/// holds `expected`, at most `timeout_ns`: returns on a wake, at the
/// timeout, on a signal, or at once if the word already changed.
pub fn futex_wait(word: &core::sync::atomic::AtomicU32, expected: u32, timeout_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000).min(i32::MAX as u64) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT reads the aligned u32 `word` borrows and the local
    // `ts`; it writes neither.
    let _ = unsafe {
        syscall!(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &ts as *const libc::timespec
        )
    };
}

/// Wakes every thread sleeping on the futex word `word` ([`futex_wait`]).
pub fn futex_wake(word: &core::sync::atomic::AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses `word`'s address as a key; it reads and
    // writes no memory.
    let _ = unsafe {
        syscall!(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX
        )
    };
}

/// One VMA as the kernel's `PROCMAP_QUERY` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmaInfo {
    pub start: usize,
    pub end: usize,
    pub shared: bool,
    pub file_backed: bool,
}

/// One VMA with everything a line of `/proc/self/maps` shows, from
/// `PROCMAP_QUERY`. The name, if asked for, is in the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmaDetails {
    pub start: usize,
    pub end: usize,
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    pub shared: bool,
    pub offset: u64,
    pub inode: u64,
    pub file_backed: bool,
    /// Bytes of the name in the caller's buffer (0: no name, or none asked).
    pub name_len: usize,
}

impl VmaDetails {
    /// `rwxp` as `/proc/self/maps` prints it.
    pub fn perms(&self) -> [u8; 4] {
        [
            if self.readable { b'r' } else { b'-' },
            if self.writable { b'w' } else { b'-' },
            if self.executable { b'x' } else { b'-' },
            if self.shared { b's' } else { b'p' },
        ]
    }
}

#[repr(C)]
#[derive(Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

/// `_IOWR('f', 17, struct procmap_query)`.
const PROCMAP_QUERY: usize =
    (3 << 30) | (core::mem::size_of::<ProcmapQuery>() << 16) | ((b'f' as usize) << 8) | 17;
const PROCMAP_QUERY_VMA_READABLE: u64 = 0x01;
const PROCMAP_QUERY_VMA_WRITABLE: u64 = 0x02;
const PROCMAP_QUERY_VMA_EXECUTABLE: u64 = 0x04;
const PROCMAP_QUERY_VMA_SHARED: u64 = 0x08;
/// Query flag: the VMA containing the address, or else the next one above.
const PROCMAP_QUERY_COVERING_OR_NEXT_VMA: u64 = 0x10;

static PROCMAP_QUERY_UNSUPPORTED: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// Whether this kernel is known to lack `PROCMAP_QUERY` (learnt from a
/// refused query; `false` until one was tried).
pub fn procmap_query_unsupported() -> bool {
    PROCMAP_QUERY_UNSUPPORTED.load(core::sync::atomic::Ordering::Relaxed)
}

/// A freshly opened `/proc/self/maps` for `PROCMAP_QUERY` (Linux 6.11+).
/// Opened per use and closed on drop — never cached, because the program
/// could close and reuse a descriptor we kept.
pub struct MapsQuery {
    fd: i32,
}

impl MapsQuery {
    /// `Err(ENOTTY)` without opening anything once the kernel is known to
    /// lack the query.
    pub fn open() -> Result<MapsQuery, Errno> {
        if procmap_query_unsupported() {
            return Err(libc::ENOTTY);
        }
        Ok(MapsQuery {
            fd: open(b"/proc/thread-self/maps\0", libc::O_RDONLY, 0)?,
        })
    }

    /// The VMA containing `addr`, or with `or_next` the first one above it.
    /// Its name goes into `name` (pass an empty slice to skip the name, which
    /// spares the kernel a path walk for file mappings); `Err(ENAMETOOLONG)`
    /// if it does not fit. `Err(ENOENT)`: nothing there (or above).
    /// `Err(ENOTTY)` on kernels without the query (remembered).
    pub fn vma(&self, addr: usize, or_next: bool, name: &mut [u8]) -> Result<VmaDetails, Errno> {
        let mut q = ProcmapQuery {
            size: core::mem::size_of::<ProcmapQuery>() as u64,
            query_flags: if or_next {
                PROCMAP_QUERY_COVERING_OR_NEXT_VMA
            } else {
                0
            },
            query_addr: addr as u64,
            vma_name_size: name.len().min(u32::MAX as usize) as u32,
            vma_name_addr: if name.is_empty() {
                0
            } else {
                name.as_mut_ptr() as u64
            },
            ..Default::default()
        };
        // SAFETY: PROCMAP_QUERY reads and writes the local `q`, whose size it
        // is told, and writes at most `vma_name_size` (= `name.len()`) bytes
        // at `vma_name_addr`, which is `name` (borrowed mutably) or null.
        let result = unsafe {
            syscall!(
                libc::SYS_ioctl,
                self.fd,
                PROCMAP_QUERY,
                &mut q as *mut ProcmapQuery
            )
        };
        match result {
            Ok(_) => Ok(VmaDetails {
                start: q.vma_start as usize,
                end: q.vma_end as usize,
                readable: q.vma_flags & PROCMAP_QUERY_VMA_READABLE != 0,
                writable: q.vma_flags & PROCMAP_QUERY_VMA_WRITABLE != 0,
                executable: q.vma_flags & PROCMAP_QUERY_VMA_EXECUTABLE != 0,
                shared: q.vma_flags & PROCMAP_QUERY_VMA_SHARED != 0,
                offset: q.vma_offset,
                inode: q.inode,
                file_backed: q.inode != 0 || q.dev_major != 0 || q.dev_minor != 0,
                // The size the kernel reports counts the terminating NUL.
                name_len: if name.is_empty() {
                    0
                } else {
                    (q.vma_name_size as usize).saturating_sub(1).min(name.len())
                },
            }),
            Err(e @ (libc::ENOTTY | libc::EINVAL | libc::EOPNOTSUPP)) => {
                PROCMAP_QUERY_UNSUPPORTED.store(true, core::sync::atomic::Ordering::Relaxed);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for MapsQuery {
    fn drop(&mut self) {
        close(self.fd);
    }
}

/// The VMA containing `addr` (one `PROCMAP_QUERY` on a freshly opened
/// `/proc/self/maps`). `Err(ENOTTY)` on older kernels, `Err(ENOENT)` when
/// nothing is mapped there.
pub fn vma_at(addr: usize) -> Result<VmaInfo, Errno> {
    one_vma(addr, false)
}

/// The VMA containing `addr`, or else the first one above it
/// (`PROCMAP_QUERY_COVERING_OR_NEXT_VMA`). `Err(ENOENT)` when nothing is
/// mapped at or above `addr`, `Err(ENOTTY)` on kernels before 6.11.
pub fn first_vma_from(addr: usize) -> Result<VmaInfo, Errno> {
    one_vma(addr, true)
}

fn one_vma(addr: usize, or_next: bool) -> Result<VmaInfo, Errno> {
    let vma = MapsQuery::open()?.vma(addr, or_next, &mut [])?;
    Ok(VmaInfo {
        start: vma.start,
        end: vma.end,
        shared: vma.shared,
        file_backed: vma.file_backed,
    })
}

/// `path` up to its first NUL byte, as the kernel reads a path; `Err(EINVAL)`
/// when it has none (the kernel would read on past the buffer). For paths
/// built in a buffer; a constant is a `c"..."` literal.
pub fn c_path(path: &[u8]) -> Result<&CStr, Errno> {
    CStr::from_bytes_until_nul(path).map_err(|_| libc::EINVAL)
}

/// `open(path, flags | O_CLOEXEC, mode)`; `path` ends at its first NUL
/// byte, `Err(EINVAL)` without one (checked in every build: the kernel
/// must never read past the slice).
pub fn open(path: &[u8], flags: i32, mode: u32) -> Result<i32, Errno> {
    open_at(libc::AT_FDCWD, c_path(path)?, flags, mode)
}

/// `openat(dirfd, path, flags | O_CLOEXEC, mode)`.
pub fn open_at(dirfd: i32, path: &CStr, flags: i32, mode: u32) -> Result<i32, Errno> {
    // SAFETY: openat reads `path` up to its NUL, which `&CStr` guarantees is
    // inside the borrowed string, and writes no memory of ours; a bad
    // `dirfd` is an error, not undefined behaviour.
    unsafe {
        syscall!(
            libc::SYS_openat,
            dirfd as isize as usize,
            path.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode
        )
        .map(|fd| fd as i32)
    }
}

/// `openat(dirfd, path, flags)` resolving no magic link (`openat2` with
/// `RESOLVE_NO_MAGICLINKS`: `/proc/PID/fd/N`, `/proc/PID/cwd`, `/proc/PID/exe`
/// and the like fail with `ELOOP`). `ENOSYS` before Linux 5.6.
pub fn open_at_without_magic_links(dirfd: i32, path: &CStr, flags: i32) -> Result<i32, Errno> {
    // struct open_how: flags, mode, resolve (the kernel's own layout).
    let how: [u64; 3] = [
        (flags | libc::O_CLOEXEC) as u32 as u64,
        0,
        libc::RESOLVE_NO_MAGICLINKS,
    ];
    // SAFETY: openat2 reads `path` up to the NUL `&CStr` guarantees and
    // `size_of_val(&how)` bytes of the local `how`, and writes nothing of
    // ours.
    unsafe {
        syscall!(
            libc::SYS_openat2,
            dirfd as isize as usize,
            path.as_ptr(),
            how.as_ptr(),
            core::mem::size_of_val(&how)
        )
        .map(|fd| fd as i32)
    }
}

/// `readlink(path)` into `out`; the bytes written.
pub fn readlink(path: &CStr, out: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: readlinkat reads `path` up to its NUL (inside the `&CStr`) and
    // writes at most `out.len()` bytes into `out`, which we borrow mutably.
    unsafe {
        syscall!(
            libc::SYS_readlinkat,
            libc::AT_FDCWD as isize as usize,
            path.as_ptr(),
            out.as_mut_ptr(),
            out.len()
        )
    }
}

pub fn pread(fd: i32, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
    loop {
        // SAFETY: pread64 writes at most `buf.len()` bytes into `buf`, which
        // we borrow mutably.
        match unsafe { syscall!(libc::SYS_pread64, fd, buf.as_mut_ptr(), buf.len(), offset) } {
            Err(libc::EINTR) => continue,
            other => return other,
        }
    }
}

/// Whether the file open as `fd` (any descriptor, `O_PATH` too) may be
/// executed with our effective IDs, as `exec` judges it (execute permission,
/// not on a `noexec` mount): `faccessat2(fd, "", X_OK, AT_EACCESS |
/// AT_EMPTY_PATH)`, Linux 5.8+ (`ENOSYS` before).
pub fn exec_permitted(fd: i32) -> Result<(), Errno> {
    // SAFETY: faccessat2 reads the static empty C string and writes nothing.
    unsafe {
        syscall!(
            libc::SYS_faccessat2,
            fd as isize as usize,
            c"".as_ptr(),
            libc::X_OK,
            libc::AT_EACCESS | libc::AT_EMPTY_PATH
        )
        .map(|_| ())
    }
}

/// Our user and group IDs, real and effective.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub real_uid: u32,
    pub effective_uid: u32,
    pub real_gid: u32,
    pub effective_gid: u32,
}

/// Our real and effective user and group IDs (`getresuid`, `getresgid`).
pub fn ids() -> Result<Ids, Errno> {
    let mut u = [0u32; 3];
    let mut g = [0u32; 3];
    // SAFETY: getresuid and getresgid each write three u32s, one through each
    // pointer, into the local arrays `u` and `g`.
    unsafe {
        syscall!(
            libc::SYS_getresuid,
            &mut u[0] as *mut u32,
            &mut u[1] as *mut u32,
            &mut u[2] as *mut u32
        )?;
        syscall!(
            libc::SYS_getresgid,
            &mut g[0] as *mut u32,
            &mut g[1] as *mut u32,
            &mut g[2] as *mut u32
        )?;
    }
    Ok(Ids {
        real_uid: u[0],
        effective_uid: u[1],
        real_gid: g[0],
        effective_gid: g[1],
    })
}

/// Whether the kernel ignores set-user-ID and set-group-ID bits on an
/// `exec` of the file open as `fd`: its mount is `nosuid` (`fstatfs`), or
/// this thread has `no_new_privs`. `false` where that cannot be asked.
pub fn exec_ignores_set_ids(fd: i32) -> bool {
    const PR_GET_NO_NEW_PRIVS: i32 = 39;
    const ST_NOSUID: u64 = 2;
    // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointer and changes nothing; the
    // other arguments must be 0, and are.
    if unsafe { prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) } == Ok(1) {
        return true;
    }
    filesystem_of(fd).is_ok_and(|fs| fs[10] & ST_NOSUID != 0)
}

/// `fstatfs(fd)` as words: struct statfs of both our ABIs is eleven 64-bit
/// words (`f_type` first, `f_flags` the eleventh), then spares.
fn filesystem_of(fd: i32) -> Result<[u64; 16], Errno> {
    let mut fs = [0u64; 16];
    // SAFETY: fstatfs writes one `struct statfs` (120 bytes on both our
    // ABIs) into `fs`, which has 128.
    unsafe { syscall!(libc::SYS_fstatfs, fd, fs.as_mut_ptr()) }.map(|_| fs)
}

/// The type (magic number) of the file system `fd` is on.
pub fn filesystem_type(fd: i32) -> Result<u64, Errno> {
    filesystem_of(fd).map(|fs| fs[0])
}

/// `getdents64(fd)` into `buf`: the bytes of directory entries written (0
/// at the end of the directory).
pub fn directory_entries(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: getdents64 writes at most `buf.len()` bytes into `buf`, which
    // we borrow mutably.
    unsafe { syscall!(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) }
}

/// Reads all of the file `name` in directory `dir` into `buf`,
/// non-blocking; the bytes read.
pub fn read_file_at(dir: i32, name: &CStr, buf: &mut [u8]) -> Result<usize, Errno> {
    let fd = open_at(
        dir,
        name,
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
        0,
    )?;
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

/// Whether our real and effective user or group IDs differ: the kernel
/// then starts any program we `exec` in secure-execution mode (`AT_SECURE`),
/// set-user-ID bits or not.
pub fn ids_differ() -> bool {
    let (mut real, mut effective, mut saved) = (0u32, 0u32, 0u32);
    // SAFETY: `number` is getresuid or getresgid, which write one u32
    // through each pointer: the locals `real`, `effective`, `saved`.
    let mut differ = |number| unsafe {
        syscall!(
            number,
            &mut real as *mut u32,
            &mut effective as *mut u32,
            &mut saved as *mut u32
        )
        .map_or(true, |_| real != effective)
    };
    differ(libc::SYS_getresuid) || differ(libc::SYS_getresgid)
}

pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    loop {
        // SAFETY: read writes at most `buf.len()` bytes into `buf`, which we
        // borrow mutably.
        match unsafe { syscall!(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) } {
            Err(libc::EINTR) => continue,
            other => return other,
        }
    }
}

/// Writes all of `buf`, retrying short writes and EINTR.
pub fn write_all(fd: i32, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        // SAFETY: write reads at most `buf.len()` bytes of `buf`.
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
    // SAFETY: close takes no pointer; a descriptor that is not open is an
    // error (callers close only descriptors they opened).
    let _ = unsafe { syscall!(libc::SYS_close, fd) };
}

/// Gives the calling thread a descriptor table of its own, empty (on
/// `Err`, it may hold copies of the program's descriptors: the thread
/// must end soon), for a
/// thread that runs beside the program's: `open` gives the lowest free
/// number, and one the thread took in the shared table, even for the
/// moment of a read, would be one the program's own `open` then did not
/// get (a daemon reopening 0, 1, 2). `close_range(CLOSE_RANGE_UNSHARE)`
/// (Linux 5.9) copies none of the program's descriptors; before it,
/// `unshare(CLONE_FILES)` copies them all and each is closed in the copy
/// (closing there releases no lock of the program's: POSIX locks belong
/// to the table that took them).
pub fn own_empty_descriptor_table() -> Result<(), Errno> {
    const CLOSE_RANGE_UNSHARE: usize = 1 << 1;
    // SAFETY: close_range with CLOSE_RANGE_UNSHARE takes plain integers and
    // changes only the calling thread's own (new) descriptor table.
    match unsafe { syscall!(libc::SYS_close_range, 0, u32::MAX, CLOSE_RANGE_UNSHARE) } {
        Ok(_) => return Ok(()),
        Err(libc::ENOSYS) | Err(libc::EINVAL) => {}
        Err(e) => return Err(e),
    }
    // SAFETY: unshare(CLONE_FILES) takes a flag word and gives only the
    // calling thread a copy of the table; the program's stays as it is.
    unsafe { syscall!(libc::SYS_unshare, libc::CLONE_FILES) }?;
    close_all_descriptors()
}

/// Closes every descriptor of the calling thread's table, as listed in
/// `/proc/thread-self/fd` (for kernels without `close_range`).
fn close_all_descriptors() -> Result<(), Errno> {
    let open_list = || {
        open(
            b"/proc/thread-self/fd\0",
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
    };
    loop {
        let dir = match open_list() {
            // A full table (the program's, copied): any number frees one.
            Err(libc::EMFILE) => {
                close(0);
                open_list()?
            }
            other => other?,
        };
        let mut closed = 0;
        let mut buf = [0u8; 1024];
        while let Ok(n @ 1..) = directory_entries(dir, &mut buf) {
            // struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name.
            let mut at = 0;
            while at + 19 < n {
                let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
                let name = &buf[at + 19..(at + reclen).min(n)];
                let digits = name.iter().take_while(|b| b.is_ascii_digit());
                let fd = digits.fold(0i64, |v, &b| v * 10 + (b - b'0') as i64);
                if name.first().is_some_and(u8::is_ascii_digit) && fd != dir as i64 {
                    close(fd as i32);
                    closed += 1;
                }
                at += reclen.max(1);
            }
        }
        close(dir);
        if closed == 0 {
            return Ok(());
        }
    }
}

pub fn getpid() -> i32 {
    // SAFETY: getpid takes no argument and cannot fail.
    unsafe { syscall!(libc::SYS_getpid).unwrap_or(0) as i32 }
}

pub fn getppid() -> i32 {
    // SAFETY: getppid takes no argument and cannot fail.
    unsafe { syscall!(libc::SYS_getppid).unwrap_or(0) as i32 }
}

/// The session of process `pid` (0: this process), as seen from this pid
/// namespace (0 when the session leader is outside it).
pub fn getsid(pid: i32) -> Result<i32, Errno> {
    // SAFETY: getsid takes no pointer and changes nothing.
    unsafe { syscall!(libc::SYS_getsid, pid).map(|s| s as i32) }
}

pub fn gettid() -> i32 {
    // SAFETY: gettid takes no argument and cannot fail.
    unsafe { syscall!(libc::SYS_gettid).unwrap_or(0) as i32 }
}

/// Blocks every signal for this thread; returns the mask to restore.
pub fn block_all_signals() -> u64 {
    let all: u64 = !0;
    let mut old: u64 = 0;
    // SAFETY: rt_sigprocmask reads the 8-byte set `all` and writes the old
    // one into `old`, both locals of the size passed.
    unsafe {
        let _ = syscall!(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &all as *const u64,
            &mut old as *mut u64,
            8usize
        );
    }
    old
}

pub fn restore_signals(mask: u64) {
    // SAFETY: rt_sigprocmask reads the 8-byte set `mask`; no old set asked.
    unsafe {
        let _ = syscall!(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &mask as *const u64,
            0usize,
            8usize
        );
    }
}

/// Whether a task (thread or process) with this id exists.
pub fn task_exists(tid: i32) -> bool {
    !matches!(
        // SAFETY: signal 0 sends nothing: kill only checks that `tid` exists.
        unsafe { syscall!(libc::SYS_kill, tid, 0) },
        Err(libc::ESRCH)
    )
}

/// Whether process `other` uses the same memory (mm) as `pid`: a `vfork`
/// child that has not `exec`ed yet. `kcmp` (CONFIG_CHECKPOINT_RESTORE),
/// where this process may use it at all (a seccomp profile may refuse it:
/// probed once on ourselves); without it, every task that still exists
/// counts as sharing (the cautious answer for both callers).
pub fn shares_memory_with(pid: i32, other: i32) -> bool {
    memory_shared(pid, other).unwrap_or_else(|| task_exists(other))
}

/// Whether tasks `pid` and `other` use the same memory (mm), by `kcmp`;
/// `None` where this process may not use `kcmp` (probed once on ourselves)
/// or it failed otherwise.
pub fn memory_shared(pid: i32, other: i32) -> Option<bool> {
    use core::sync::atomic::{AtomicU8, Ordering::Relaxed};
    const KCMP_VM: usize = 1;
    const UNKNOWN: u8 = 0;
    const USABLE: u8 = 1;
    const REFUSED: u8 = 2;
    // once_cell: `race::OnceBool`, but it cannot be a dependency (Cargo.toml).
    static KCMP: AtomicU8 = AtomicU8::new(UNKNOWN);
    // SAFETY: KCMP_VM compares two tasks' mm; no pointer, nothing changed.
    let kcmp = |a: i32, b: i32| unsafe { syscall!(libc::SYS_kcmp, a, b, KCMP_VM, 0usize, 0usize) };
    if KCMP.load(Relaxed) == UNKNOWN {
        let usable = kcmp(pid, pid) == Ok(0);
        KCMP.store(if usable { USABLE } else { REFUSED }, Relaxed);
    }
    if KCMP.load(Relaxed) == REFUSED {
        return None;
    }
    match kcmp(pid, other) {
        Ok(0) => Some(true),
        // ESRCH: gone; EPERM: another user's now (a set-user-ID program it
        // exec'd); a task that exited and is not reaped yet has no memory.
        Ok(_) | Err(libc::ESRCH) | Err(libc::EPERM) => Some(false),
        Err(_) => None,
    }
}

/// Whether `tid` is a live thread of this process (`tgkill` with signal 0).
pub fn thread_is_ours(tid: i32) -> bool {
    thread_of(getpid(), tid)
}

/// Whether `tid` is a live thread of process `pid` (`tgkill`, signal 0).
pub fn thread_of(pid: i32, tid: i32) -> bool {
    // SAFETY: signal 0 sends nothing: tgkill only checks the thread exists.
    unsafe { syscall!(libc::SYS_tgkill, pid, tid, 0).is_ok() }
}

/// Waits up to `wait_ns` until thread `tid` of this process is gone from
/// the kernel (no longer counted among the process's threads: `tgkill`
/// finds it no more); whether it is. Yields first, then naps 50 µs at a
/// time.
pub fn wait_until_thread_gone(tid: i32, wait_ns: u64) -> bool {
    let deadline = monotonic_ns().saturating_add(wait_ns);
    let mut spins = 0u32;
    while thread_is_ours(tid) {
        if monotonic_ns() >= deadline {
            return false;
        }
        spins += 1;
        if spins < 64 {
            sched_yield();
        } else {
            sleep_ns(50_000);
        }
    }
    true
}

pub fn sched_yield() {
    // SAFETY: sched_yield takes no argument.
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
    // SAFETY: rt_sigpending writes 8 bytes into the local `pending`;
    // rt_sigprocmask reads the local `pipe_bit` and writes the local `old`,
    // each of the 8 bytes passed.
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
    // SAFETY: rt_sigtimedwait reads the locals `pipe_bit` and `zero` (no
    // siginfo asked); rt_sigprocmask reads the local `old`. Consuming
    // SIGPIPE is ours to do: we raised it and it was not pending before.
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
        libc::ELOOP => "ELOOP",
        libc::ENXIO => "ENXIO",
        libc::EMLINK => "EMLINK",
        _ => "error",
    }
}

/// What identifies an open file: the device and inode `fstat` reports, and
/// the few properties the stats file's checks need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStatus {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Names the file has (hard links).
    pub nlink: u64,
}

impl FileStatus {
    pub fn is_regular(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    pub fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }

    /// The same file as `other` (device and inode), whatever its name.
    pub fn same_file(&self, other: &FileStatus) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }

    /// The set-user-ID bit.
    pub fn is_set_user_id(&self) -> bool {
        self.mode & libc::S_ISUID != 0
    }

    /// The set-group-ID bit with group execute (without it, the kernel
    /// ignores the bit on `exec`: it marks mandatory locking).
    pub fn is_set_group_id(&self) -> bool {
        let both = libc::S_ISGID | libc::S_IXGRP;
        self.mode & both == both
    }
}

fn status_of(st: &libc::stat) -> FileStatus {
    FileStatus {
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
        // u64 on x86_64, u32 on aarch64.
        #[allow(clippy::unnecessary_cast)]
        nlink: st.st_nlink as u64,
    }
}

/// `fstatat(dirfd, path, flags)` (`path` empty with `AT_EMPTY_PATH` for the
/// descriptor itself).
pub fn stat_at(dirfd: i32, path: &CStr, flags: i32) -> Result<FileStatus, Errno> {
    // SAFETY: `libc::stat` is plain integers, for which all zeros is valid.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: newfstatat reads `path` up to the NUL `&CStr` guarantees and
    // writes one `struct stat` into the local `st`.
    unsafe {
        syscall!(
            libc::SYS_newfstatat,
            dirfd as isize as usize,
            path.as_ptr(),
            &mut st as *mut libc::stat,
            flags
        )?
    };
    Ok(status_of(&st))
}

/// `fstat(fd)`.
pub fn fstat(fd: i32) -> Result<FileStatus, Errno> {
    stat_at(fd, c"", libc::AT_EMPTY_PATH)
}

pub fn geteuid() -> u32 {
    // SAFETY: geteuid takes no argument and cannot fail.
    unsafe { syscall!(libc::SYS_geteuid).unwrap_or(u32::MAX as usize) as u32 }
}

/// Whether the file at `path` (symlinks followed) has file capabilities
/// (`security.capability`), which make an `exec` of it a privilege change
/// like set-user-ID does. Fails closed: only "no such attribute" or "not
/// supported here" count as none.
pub fn has_file_capabilities(path: &CStr) -> bool {
    let name = c"security.capability";
    // SAFETY: getxattr reads `path` and `name` up to the NULs their `&CStr`
    // guarantee; with size 0 it only reports the value's size, writing
    // nothing through the null buffer.
    let r = unsafe {
        syscall!(
            libc::SYS_getxattr,
            path.as_ptr(),
            name.as_ptr(),
            0usize,
            0usize
        )
    };
    !matches!(r, Err(libc::ENODATA) | Err(libc::EOPNOTSUPP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_without_nul_is_refused_not_read_past() {
        // A slice cut just before its NUL: the kernel would read on.
        let path = b"/proc/self/maps\0";
        assert_eq!(open(&path[..path.len() - 1], libc::O_RDONLY, 0), Err(libc::EINVAL));
        assert_eq!(read_file(&path[..path.len() - 1], &mut [0u8; 8]), Err(libc::EINVAL));
        let fd = open(path, libc::O_RDONLY, 0).expect("open /proc/self/maps");
        close(fd);
    }

    #[test]
    fn a_path_ends_at_its_first_nul_as_the_kernel_reads_it() {
        assert_eq!(c_path(b"/etc\0/passwd\0"), Ok(c"/etc"));
        assert_eq!(c_path(b""), Err(libc::EINVAL));
    }

    /// Descriptors listed in the calling thread's table.
    fn listed() -> usize {
        std::fs::read_dir("/proc/thread-self/fd").unwrap().count()
    }

    /// Both ways to an empty table of the thread's own (the one kernels
    /// before 5.9 take, and `close_range`'s) leave the process's table as
    /// it was.
    #[test]
    fn a_thread_gets_an_empty_table_of_its_own() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let before = listed();
        for old_way in [true, false] {
            let emptied = std::thread::spawn(move || {
                if old_way {
                    // SAFETY: unshare(CLONE_FILES) in this test thread touches only its own table.
                    unsafe { syscall!(libc::SYS_unshare, libc::CLONE_FILES) }.unwrap();
                    close_all_descriptors().unwrap();
                } else {
                    own_empty_descriptor_table().unwrap();
                }
                // read_dir's own descriptor is the one listed.
                (listed(), fstat(fd).is_err())
            })
            .join()
            .unwrap();
            assert_eq!(emptied, (1, true), "old way {old_way}");
            assert!(fstat(fd).is_ok() && listed() == before);
        }
    }

    /// The way before `close_range` with a full table (no number free for
    /// the listing itself): it still empties the copy. In a child process,
    /// whose descriptor limit it lowers to what it has open.
    #[test]
    fn a_full_table_is_emptied_the_old_way_too() {
        // SAFETY: the child only makes system calls and _exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let highest = std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
                .max()
                .unwrap();
            let limit = libc::rlimit {
                rlim_cur: highest + 1,
                rlim_max: highest + 1,
            };
            // SAFETY: `limit` is a valid rlimit on the stack.
            let limited = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0;
            // Every number below the limit taken (the gaps with /dev/null).
            while open(b"/dev/null\0", libc::O_RDONLY, 0).is_ok() {}
            let full = limited && open(b"/dev/null\0", libc::O_RDONLY, 0) == Err(libc::EMFILE);
            // SAFETY: unshare(CLONE_FILES) in this child touches only its own table.
            let emptied = unsafe { syscall!(libc::SYS_unshare, libc::CLONE_FILES) }.is_ok()
                && close_all_descriptors().is_ok()
                && fstat(0).is_err()
                && fstat(1).is_err();
            // SAFETY: _exit ends the forked child without running the parent's handlers.
            unsafe { libc::_exit(if !full { 2 } else if emptied { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: `status` is a valid int on the stack; `child` is ours.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert_eq!(libc::WEXITSTATUS(status), 0, "2: table not full; 1: not emptied");
    }
}
