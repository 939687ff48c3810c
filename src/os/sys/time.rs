//! Clocks (vDSO where it has them) and sleeping.

/// Nanoseconds on the coarse monotonic clock (vDSO: no system call, and it
/// leaves `errno` alone on success, which is the only outcome for this clock).
pub fn monotonic_coarse_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

/// Nanoseconds on the fine monotonic clock (vDSO), to time our own work.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Seconds since the epoch (vDSO), to compare with files' times.
pub fn realtime_s() -> i64 {
    (clock_ns(libc::CLOCK_REALTIME) / 1_000_000_000) as i64
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

pub fn sleep_ns(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: nanosleep reads the local `ts`; no remainder is asked for.
    let _ = unsafe { syscall!(libc::SYS_nanosleep, &ts as *const libc::timespec, 0usize) };
}
