//! Mappings

use core::ffi::{c_int, c_void};

use super::counted;
use crate::core::engine;
use crate::counters::Hook;

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

forward_or_raw! {
    fn mmap(
        addr: *mut c_void,
        len: usize,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        off: libc::off_t,
    ) -> *mut c_void;
    raw: mmap_syscall(addr, len, prot, flags, fd, off);
    before: counted(Hook::Mmap);
    if |p| p != libc::MAP_FAILED => engine::after_mmap(p as usize, len, prot, flags);
}

forward_or_raw! {
    fn mmap64(
        addr: *mut c_void,
        len: usize,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        off: libc::off_t,
    ) -> *mut c_void;
    raw: mmap_syscall(addr, len, prot, flags, fd, off);
    before: counted(Hook::Mmap64);
    if |p| p != libc::MAP_FAILED => engine::after_mmap(p as usize, len, prot, flags);
}

forward_or_raw! {
    /// `mremap` is variadic in C (`new_address`, read with `MREMAP_FIXED` or
    /// `MREMAP_DONTUNMAP`); on the
    /// Linux ABIs we build for, a variadic integer argument travels exactly like
    /// a fixed one, so it is declared fixed and forwarded as it came.
    fn mremap(
        old: *mut c_void,
        old_len: usize,
        new_len: usize,
        flags: c_int,
        new_addr: *mut c_void,
    ) -> *mut c_void;
    raw: libc::syscall(libc::SYS_mremap, old, old_len, new_len, flags, new_addr) as *mut c_void;
    before: counted(Hook::Mremap);
    // The kernel moves the VMA with its flags: a mergeable region stays so…
    // but our exclusions are by address: they must move too.
    if |p| p != libc::MAP_FAILED
        => engine::after_mremap(old as usize, old_len, new_len, flags, p as usize);
}

forward_or_raw! {
    fn munmap(addr: *mut c_void, len: usize) -> c_int;
    raw: libc::syscall(libc::SYS_munmap, addr, len) as c_int;
    before: counted(Hook::Munmap);
    if |rc| rc == 0 => engine::after_munmap(addr as usize, len);
}
