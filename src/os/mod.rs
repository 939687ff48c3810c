//! The thin OS layer: raw system calls and readers of `/proc` and `/sys`.
//!
//! Owns every interaction with the kernel. Everything here is callable from a
//! hook at any time: it **never allocates, never takes a lock and never touches
//! `errno`** (system calls are issued with inline assembly, not through libc,
//! so the host program's `errno` survives whatever we do on its behalf).
//! It makes no decisions: policy lives in `crate::core`.
//!
//! * [`ksm`] — what we ask of the kernel's same-page merging, by intent;
//! * [`sys`] — raw system calls; [`proc`] — `/proc` and `/sys` readers;
//! * [`exec_target`] — what an `exec` would run.

pub mod exec_target;
pub mod ksm;
pub mod proc;
pub mod sys;

/// The value of environment variable `name`, borrowed from the process
/// environment. Uses libc's `getenv`, which neither allocates nor locks.
pub fn getenv(name: &str) -> Option<&'static [u8]> {
    let mut cname = [0u8; 64];
    if name.len() >= cname.len() {
        return None;
    }
    cname[..name.len()].copy_from_slice(name.as_bytes());
    unsafe {
        let p = libc::getenv(cname.as_ptr() as *const libc::c_char);
        if p.is_null() {
            None
        } else {
            Some(core::ffi::CStr::from_ptr(p).to_bytes())
        }
    }
}

/// The page size from the auxiliary vector (no system call, no allocation).
pub fn page_size() -> usize {
    match unsafe { libc::getauxval(libc::AT_PAGESZ) } as usize {
        0 => sys::PAGE_SIZE_FALLBACK,
        n => n,
    }
}

/// Hands the pages `[start, start + len)` back to the kernel
/// (`MADV_DONTNEED`): private anonymous pages read as zero afterwards, and
/// pages never touched cost nothing.
pub fn release_pages(start: usize, len: usize) -> Result<(), sys::Errno> {
    sys::madvise(start, len, libc::MADV_DONTNEED)
}

/// The program break (the top of the brk heap), from libc's own record of
/// it: a call that makes no system call once the break is known.
#[inline]
pub fn program_break() -> usize {
    unsafe { libc::sbrk(0) as usize }
}

extern "C" {
    /// glibc's record of the program break (exported since glibc 2.2.5;
    /// null until glibc first asked the kernel for it).
    static __curbrk: *mut core::ffi::c_void;
}

/// [`program_break`] for the hot path: two loads, no call (0 while glibc
/// has not yet looked the break up: no brk heap then). glibc's malloc
/// updates it under its own lock; an aligned word is read whole.
#[inline(always)]
pub fn program_break_now() -> usize {
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(__curbrk)) as usize }
}

/// Whether the kernel started this program in secure-execution mode
/// (`AT_SECURE`: set-user-ID, set-group-ID or file capabilities, or an LSM
/// asked for it).
pub fn secure_execution() -> bool {
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// The file name (last path component) this library was loaded from, e.g.
/// `libksmauto.so`; empty if the loader cannot say.
pub fn own_file_name() -> &'static [u8] {
    let path = own_file_path();
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

/// The path this library was loaded from, as the loader recorded it.
///
/// once_cell: `race::OnceRef` is this very pattern, but cannot be a
/// dependency (see Cargo.toml).
fn own_file_path() -> &'static [u8] {
    use core::sync::atomic::{AtomicPtr, Ordering::Relaxed};
    static NAME: AtomicPtr<libc::c_char> = AtomicPtr::new(core::ptr::null_mut());
    let mut p = NAME.load(Relaxed);
    if p.is_null() {
        let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
        let here = own_file_path as *const libc::c_void;
        if unsafe { libc::dladdr(here, &mut info) } == 0 || info.dli_fname.is_null() {
            return b"";
        }
        p = info.dli_fname as *mut libc::c_char;
        NAME.store(p, Relaxed);
    }
    unsafe { core::ffi::CStr::from_ptr(p) }.to_bytes()
}

/// Whether `path` (not NUL-terminated) names this very library file (same
/// device and inode as the file it was loaded from).
pub fn is_own_library_file(path: &[u8]) -> bool {
    let mut buf = [0u8; 512];
    if path.len() >= buf.len() {
        return false;
    }
    buf[..path.len()].copy_from_slice(path);
    let Ok(there) = sys::stat_at(libc::AT_FDCWD, buf.as_ptr(), 0) else {
        return false;
    };
    let own = own_file_path();
    if own.is_empty() || own.len() >= buf.len() {
        return false;
    }
    buf[..own.len()].copy_from_slice(own);
    buf[own.len()] = 0;
    sys::stat_at(libc::AT_FDCWD, buf.as_ptr(), 0).is_ok_and(|ours| ours.same_file(&there))
}
