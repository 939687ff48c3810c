//! Which process this is: the one that started the library, a child made by
//! `fork` or a raw `clone` (its own copy of our statics, which must start
//! over), or a `vfork`/`CLONE_VM` child that shares the starter's memory
//! (whose statics are the parent's, so it must change nothing in them).
//!
//! `pthread_atfork` handlers see only `fork`; a raw `clone` or `syscall(SYS_clone)`
//! child runs no handler. So start-up maps one page with `MADV_WIPEONFORK`
//! and writes its pid there: the kernel hands a new process (without
//! `CLONE_VM`) that page zeroed, while a `CLONE_VM` child reads the
//! parent's pid. Telling "new process" apart is one load; telling "shares
//! the parent's memory" apart needs `getpid`, so it is asked only where it
//! matters (exit, `exec`). Never allocates, never locks, leaves `errno` alone.

use core::sync::atomic::{
    AtomicI32, AtomicPtr,
    Ordering::{Acquire, Relaxed, Release},
};

use crate::os::sys;

/// The wipe-on-fork page, or null where it could not be had (kernels
/// before 4.14): then only pids tell processes apart.
static MARKER: AtomicPtr<i32> = AtomicPtr::new(core::ptr::null_mut());
/// The pid this copy of the library's statics belongs to.
static OWNER: AtomicI32 = AtomicI32::new(0);

/// Records this process as the owner. Runs once, in start-up.
pub fn init() {
    let pid = sys::getpid();
    OWNER.store(pid, Relaxed);
    let page = crate::os::page_size();
    if let Ok(p) = sys::map_anonymous(page) {
        if sys::madvise(p as usize, page, libc::MADV_WIPEONFORK).is_ok() {
            unsafe { core::ptr::write_volatile(p as *mut i32, pid) };
            MARKER.store(p as *mut i32, Release);
        } else {
            let _ = sys::unmap(p as usize, page);
        }
    }
}

/// The address of the marker page (so scans of the address space know it is
/// the library's own), or 0.
pub fn marker_address() -> usize {
    MARKER.load(Relaxed) as usize
}

/// `true` once in a process made by `fork`/`clone` without `CLONE_VM` since
/// the last call that returned `true` (or since start-up): the caller then
/// starts this copy of the statics over. One load when nothing happened.
#[inline]
pub fn adopt_if_new_process() -> bool {
    let marker = MARKER.load(Acquire);
    if marker.is_null() {
        return false;
    }
    if unsafe { core::ptr::read_volatile(marker) } != 0 {
        return false;
    }
    let pid = sys::getpid();
    OWNER.store(pid, Relaxed);
    unsafe { core::ptr::write_volatile(marker, pid) };
    true
}

/// In a child made by `fork` (its `pthread_atfork` handler): this process
/// now owns its copy of the statics.
pub fn adopt() {
    let pid = sys::getpid();
    OWNER.store(pid, Relaxed);
    let marker = MARKER.load(Acquire);
    if !marker.is_null() {
        unsafe { core::ptr::write_volatile(marker, pid) };
    }
}

/// Whether this is a `vfork`/`CLONE_VM` child running in the memory of the
/// process that owns the statics (a system call: ask only where it matters).
pub fn shares_owners_memory() -> bool {
    adopt_if_new_process();
    sys::getpid() != OWNER.load(Relaxed)
}
