//! Secrets: memory the program locks or keeps out of core dumps is never
//! mergeable (the `secret` class of KSMAUTO_EXCLUDE; `core::engine` decides).
//! Not counted in the stats (they are not allocation activity); `madvise` is
//! also what allocators such as jemalloc call to return memory, so anything
//! but the two secret advices is forwarded untouched.

use core::ffi::{c_int, c_void};

use super::{ready, syscall_int, take_back_merge_any_if_lent};
use crate::core::engine;
use crate::next::next;

#[no_mangle]
pub unsafe extern "C" fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int {
    if !ready() {
        return syscall_int(libc::SYS_madvise, addr as usize, len, advice as usize);
    }
    take_back_merge_any_if_lent();
    let rc = match next().madvise {
        Some(f) => f(addr, len, advice),
        None => syscall_int(libc::SYS_madvise, addr as usize, len, advice as usize),
    };
    if rc == 0 && crate::os::ksm::advice_marks_secret(advice) {
        engine::after_madvise(addr as usize, len, advice);
    }
    rc
}

#[no_mangle]
pub unsafe extern "C" fn mlock(addr: *const c_void, len: usize) -> c_int {
    if !ready() {
        return syscall_int(libc::SYS_mlock, addr as usize, len, 0);
    }
    let rc = match next().mlock {
        Some(f) => f(addr, len),
        None => syscall_int(libc::SYS_mlock, addr as usize, len, 0),
    };
    if rc == 0 {
        engine::after_mlock(addr as usize, len);
    }
    rc
}

#[no_mangle]
pub unsafe extern "C" fn mlock2(addr: *const c_void, len: usize, flags: libc::c_uint) -> c_int {
    if !ready() {
        return syscall_int(libc::SYS_mlock2, addr as usize, len, flags as usize);
    }
    let rc = match next().mlock2 {
        Some(f) => f(addr, len, flags),
        None => syscall_int(libc::SYS_mlock2, addr as usize, len, flags as usize),
    };
    if rc == 0 {
        engine::after_mlock(addr as usize, len);
    }
    rc
}

#[no_mangle]
pub unsafe extern "C" fn mlockall(flags: c_int) -> c_int {
    if !ready() {
        return syscall_int(libc::SYS_mlockall, flags as usize, 0, 0);
    }
    let rc = match next().mlockall {
        Some(f) => f(flags),
        None => syscall_int(libc::SYS_mlockall, flags as usize, 0, 0),
    };
    if rc == 0 {
        engine::after_mlockall();
    }
    rc
}
