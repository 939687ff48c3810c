//! Mappings

use core::ffi::{c_int, c_void};

use super::{counted, ready};
use crate::core::engine;
use crate::counters::Hook;
use crate::next::{self, next};

/// The kernel's mmap, for the rare call made while start-up is resolving
/// symbols (libc's `syscall` sets `errno` the way `mmap` would).
unsafe fn mmap_syscall(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: libc::off_t,
) -> *mut c_void {
    libc::syscall(libc::SYS_mmap, addr, len, prot, flags, fd, off) as *mut c_void
}

// The mmap arguments pass through whole, plus what picks the next function:
// grouping them in a struct would cost the hot path a copy.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn mapped(
    hook: Hook,
    pick: fn(&next::NextFunctions) -> Option<next::signature::mmap>,
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: libc::off_t,
) -> *mut c_void {
    if !ready() {
        return mmap_syscall(addr, len, prot, flags, fd, off);
    }
    counted(hook);
    let p = match pick(next()) {
        Some(f) => f(addr, len, prot, flags, fd, off),
        None => mmap_syscall(addr, len, prot, flags, fd, off),
    };
    if p != libc::MAP_FAILED {
        engine::after_mmap(p as usize, len, prot, flags);
    }
    p
}

#[no_mangle]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: libc::off_t,
) -> *mut c_void {
    mapped(Hook::Mmap, |n| n.mmap, addr, len, prot, flags, fd, off)
}

#[no_mangle]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: libc::off_t,
) -> *mut c_void {
    mapped(Hook::Mmap64, |n| n.mmap64, addr, len, prot, flags, fd, off)
}

/// `mremap` is variadic in C (`new_address`, read with `MREMAP_FIXED` or
/// `MREMAP_DONTUNMAP`); on the
/// Linux ABIs we build for, a variadic integer argument travels exactly like
/// a fixed one, so it is declared fixed and forwarded as it came.
#[no_mangle]
pub unsafe extern "C" fn mremap(
    old: *mut c_void,
    old_len: usize,
    new_len: usize,
    flags: c_int,
    new_addr: *mut c_void,
) -> *mut c_void {
    if !ready() {
        return libc::syscall(libc::SYS_mremap, old, old_len, new_len, flags, new_addr)
            as *mut c_void;
    }
    counted(Hook::Mremap);
    // The kernel moves the VMA with its flags: a mergeable region stays so.
    let p = match next().mremap {
        Some(f) => f(old, old_len, new_len, flags, new_addr),
        None => {
            libc::syscall(libc::SYS_mremap, old, old_len, new_len, flags, new_addr) as *mut c_void
        }
    };
    if p != libc::MAP_FAILED {
        // …but our exclusions are by address: they must move too.
        engine::after_mremap(old as usize, old_len, new_len, flags, p as usize);
    }
    p
}

#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: usize) -> c_int {
    if !ready() {
        return libc::syscall(libc::SYS_munmap, addr, len) as c_int;
    }
    counted(Hook::Munmap);
    let rc = match next().munmap {
        Some(f) => f(addr, len),
        None => libc::syscall(libc::SYS_munmap, addr, len) as c_int,
    };
    if rc == 0 {
        engine::after_munmap(addr as usize, len);
    }
    rc
}
