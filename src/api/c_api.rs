//! The C API (include/ksmauto.h)

use core::ffi::{c_char, c_int, c_void};

use super::{errno_get, errno_set, ready};
use crate::core::engine;
use crate::report;

/// Makes `[addr, addr + len)` (widened to whole pages) mergeable now.
/// Returns 0, or -1 with `errno` set.
#[no_mangle]
pub unsafe extern "C" fn ksmauto_advise(addr: *mut c_void, len: usize) -> c_int {
    if !ready() {
        errno_set(libc::EAGAIN);
        return -1;
    }
    match engine::api_advise(addr as usize, len) {
        Ok(()) => 0,
        Err(e) => {
            errno_set(e);
            -1
        }
    }
}

/// Unmerges `[addr, addr + len)` (widened to whole pages) now and never makes
/// it mergeable again. Returns 0, or -1 with `errno` set.
#[no_mangle]
pub unsafe extern "C" fn ksmauto_exclude(addr: *mut c_void, len: usize) -> c_int {
    if !ready() {
        errno_set(libc::EAGAIN);
        return -1;
    }
    match engine::api_exclude(addr as usize, len) {
        Ok(()) => 0,
        Err(e) => {
            errno_set(e);
            -1
        }
    }
}

/// Writes the current stats as one JSON object into `buf` (NUL-terminated,
/// cut to fit like `snprintf`); returns the full length it needed.
#[no_mangle]
pub unsafe extern "C" fn ksmauto_stats_json(buf: *mut c_char, len: usize) -> usize {
    if !ready() {
        return 0;
    }
    let saved = errno_get();
    let mut full = [0u8; report::REPORT_BUFFER];
    let n = report::render_current(true, &mut full);
    if !buf.is_null() && len > 0 {
        let copy = n.min(len - 1);
        core::ptr::copy_nonoverlapping(full.as_ptr(), buf as *mut u8, copy);
        *buf.add(copy) = 0;
    }
    errno_set(saved);
    n
}

#[no_mangle]
pub extern "C" fn ksmauto_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}
