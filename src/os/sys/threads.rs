//! Threads and tasks: our thread's ID, futexes, whether a task lives or
//! shares our memory, yielding.

use super::{getpid, monotonic_ns, sleep_ns};

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

pub fn gettid() -> i32 {
    // SAFETY: gettid takes no argument and cannot fail.
    unsafe { syscall!(libc::SYS_gettid).unwrap_or(0) as i32 }
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
