//! Secrets: memory the program locks or keeps out of core dumps is never
//! mergeable (the `secret` class of KSMAUTO_EXCLUDE; `core::engine` decides).
//! Not counted in the stats (they are not allocation activity); `madvise` is
//! also what allocators such as jemalloc call to return memory, so anything
//! but the two secret advices is forwarded untouched.

use core::ffi::{c_int, c_void};

use super::{syscall_int, take_back_merge_any_if_lent};
use crate::core::engine;

forward_or_raw! {
    fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
    raw: syscall_int(libc::SYS_madvise, addr as usize, len, advice as usize);
    before: take_back_merge_any_if_lent();
    if |rc| rc == 0 && crate::os::ksm::advice_marks_secret(advice)
        => engine::after_madvise(addr as usize, len, advice);
}

forward_or_raw! {
    fn mlock(addr: *const c_void, len: usize) -> c_int;
    raw: syscall_int(libc::SYS_mlock, addr as usize, len, 0);
    if |rc| rc == 0 => engine::after_mlock(addr as usize, len);
}

forward_or_raw! {
    fn mlock2(addr: *const c_void, len: usize, flags: libc::c_uint) -> c_int;
    raw: syscall_int(libc::SYS_mlock2, addr as usize, len, flags as usize);
    if |rc| rc == 0 => engine::after_mlock(addr as usize, len);
}

forward_or_raw! {
    fn mlockall(flags: c_int) -> c_int;
    raw: syscall_int(libc::SYS_mlockall, flags as usize, 0, 0);
    if |rc| rc == 0 => engine::after_mlockall();
}
