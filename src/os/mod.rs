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
//!   [`smaps`] — `/proc/self/smaps` one VMA at a time; [`pagemap`] — which
//!   pages of a range are present and which are mapped more than once;
//! * [`exec_target`] — what an `exec` would run; [`exec_search`] — what
//!   `execvp` finds in `PATH`; [`loader`] — what the dynamic loader finds
//!   (`/etc/ld.so.preload`, `/etc/ld.so.cache`, its own file);
//!   [`library_search`] — where it looks for a bare name before its cache;
//!   [`elf_lookup`] — the objects it loaded and the symbols they define
//!   (start-up only: it takes the loader's lock);
//!   [`binfmt_misc`] — whether a `binfmt_misc` rule claims a file;
//! * [`own_memory`] — the process's own pages read without faulting;
//!   [`trust_domain`] — the directory one user's processes share their
//!   content sightings in.

pub mod binfmt_misc;
pub mod exec_search;
pub mod exec_target;
pub mod elf_lookup;
pub mod ksm;
pub mod library_search;
pub mod loader;
pub mod own_memory;
pub mod pagemap;
pub mod proc;
pub mod smaps;
pub mod sys;
pub mod trust_domain;

use core::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

/// The value of environment variable `name`, borrowed from the process
/// environment. Uses libc's `getenv`, which neither allocates nor locks.
pub fn getenv(name: &str) -> Option<&'static [u8]> {
    let mut cname = [0u8; 64];
    if name.len() >= cname.len() {
        return None;
    }
    cname[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `cname` is NUL-terminated (zeroed, the name shorter than it).
    // getenv returns null or a pointer into the environment block, a
    // NUL-terminated string that lives as long as nobody unsets or replaces
    // that variable; `'static` over-claims that, so callers use the value at
    // once and keep none of it (start-up configuration, one exec's PATH).
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
    // SAFETY: getauxval only reads the auxiliary vector; it may set errno
    // for an absent entry, but AT_PAGESZ is always given by Linux.
    match unsafe { libc::getauxval(libc::AT_PAGESZ) } as usize {
        0 => sys::PAGE_SIZE_FALLBACK,
        n => n,
    }
}

/// Hands the pages `[start, start + len)` back to the kernel
/// (`MADV_DONTNEED`): private anonymous pages read as zero afterwards, and
/// pages never touched cost nothing.
///
/// # Safety
/// `[start, start + len)` must be memory the caller owns and whose contents
/// it may lose: no live reference into it, nothing of the program's.
pub unsafe fn release_pages(start: usize, len: usize) -> Result<(), sys::Errno> {
    sys::madvise(start, len, sys::Advice::ReleasePages)
}

/// The program break (the top of the brk heap), from libc's own record of
/// it: a call that makes no system call once the break is known.
#[inline]
pub fn program_break() -> usize {
    // SAFETY: sbrk(0) moves nothing: it returns glibc's record of the break
    // (asking the kernel once, without touching errno on success).
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
    // SAFETY: `__curbrk` is a pointer-sized, aligned static that glibc
    // exports. glibc stores to it under its own lock, which we do not take:
    // the volatile read may race with that store, and on our two targets an
    // aligned word load then sees the old or the new break whole (either is
    // a break that was true a moment ago). The value is only compared,
    // never dereferenced.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(__curbrk)) as usize }
}

/// Whether the kernel started this program in secure-execution mode
/// (`AT_SECURE`: set-user-ID, set-group-ID or file capabilities, or an LSM
/// asked for it).
pub fn secure_execution() -> bool {
    // SAFETY: getauxval only reads the auxiliary vector; Linux always gives
    // AT_SECURE, so errno stays untouched.
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
        // SAFETY: `Dl_info` is pointers and integers: all zeros is valid.
        let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
        let here = own_file_path as *const libc::c_void;
        // SAFETY: dladdr writes one `Dl_info` into the local `info`; `here`
        // is an address in this library, which it only looks up.
        if unsafe { libc::dladdr(here, &mut info) } == 0 || info.dli_fname.is_null() {
            return b"";
        }
        p = info.dli_fname as *mut libc::c_char;
        NAME.store(p, Relaxed);
    }
    // SAFETY: `p` is the loader's NUL-terminated name of this library's
    // file, which it keeps while the library is loaded (we are running).
    unsafe { core::ffi::CStr::from_ptr(p) }.to_bytes()
}

static OWN_DEV: AtomicU64 = AtomicU64::new(0);
static OWN_INO: AtomicU64 = AtomicU64::new(0);
static OWN_KNOWN: AtomicBool = AtomicBool::new(false);

/// Start-up: notes which file this library is (device and inode), by the
/// path the loader loaded it from, while that path still means what it
/// meant to the loader (a relative one resolves in the working directory,
/// which the program may change later).
pub fn remember_own_file() {
    let own = own_file_path();
    let mut buf = [0u8; 512];
    if own.is_empty() || own.len() >= buf.len() {
        return;
    }
    buf[..own.len()].copy_from_slice(own);
    let Ok(path) = sys::c_path(&buf) else {
        return;
    };
    if let Ok(st) = sys::stat_at(libc::AT_FDCWD, path, 0) {
        OWN_DEV.store(st.dev, Relaxed);
        OWN_INO.store(st.ino, Relaxed);
        OWN_KNOWN.store(true, Release);
    }
}

/// Whether `path` (not NUL-terminated) names this very library file (the
/// device and inode noted at start-up), resolved as the loader of a new
/// program will resolve it: in our working directory, through no magic
/// link (`/proc/self/fd/N` names another file, or none, once descriptors
/// close on `exec`).
pub fn is_own_library_file(path: &[u8]) -> bool {
    let mut buf = [0u8; 512];
    if path.len() >= buf.len() || !OWN_KNOWN.load(Acquire) {
        return false;
    }
    buf[..path.len()].copy_from_slice(path);
    let Ok(path) = sys::c_path(&buf) else {
        return false;
    };
    let Ok(fd) = sys::open_at_without_magic_links(libc::AT_FDCWD, path, libc::O_PATH) else {
        return false;
    };
    let there = sys::fstat(fd);
    sys::close(fd);
    there.is_ok_and(|st| st.dev == OWN_DEV.load(Relaxed) && st.ino == OWN_INO.load(Relaxed))
}
