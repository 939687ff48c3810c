//! Signal masks, the alternate signal stack, and writing with SIGPIPE
//! held off.

use super::{write_all, Errno};

/// When running on the thread's alternate signal stack, the bytes left on it
/// below this function's frame; `None` on an ordinary stack (or when it
/// cannot be told: an `SS_AUTODISARM` stack reads as disabled while in use).
#[inline(never)]
pub fn alt_stack_room() -> Option<usize> {
    let mut ss = libc::stack_t {
        ss_sp: core::ptr::null_mut(),
        ss_flags: 0,
        ss_size: 0,
    };
    // SAFETY: with a null new stack, sigaltstack only writes the current one
    // into the local `ss`; it changes nothing.
    unsafe { syscall!(libc::SYS_sigaltstack, 0usize, &mut ss as *mut libc::stack_t) }.ok()?;
    if ss.ss_flags & libc::SS_ONSTACK == 0 {
        return None;
    }
    let here = &ss as *const libc::stack_t as usize;
    Some(here.saturating_sub(ss.ss_sp as usize))
}

/// Blocks every signal for this thread; returns the mask to restore.
pub fn block_all_signals() -> u64 {
    let all: u64 = !0;
    let mut old: u64 = 0;
    // SAFETY: rt_sigprocmask reads the 8-byte set `all` and writes the old
    // one into `old`, both locals of the size passed.
    unsafe {
        let _ = syscall!(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &all as *const u64,
            &mut old as *mut u64,
            8usize
        );
    }
    old
}

pub fn restore_signals(mask: u64) {
    // SAFETY: rt_sigprocmask reads the 8-byte set `mask`; no old set asked.
    unsafe {
        let _ = syscall!(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &mask as *const u64,
            0usize,
            8usize
        );
    }
}

/// Writes to `fd` with SIGPIPE held off, so that a closed pipe on the other end
/// of stderr can never kill the host process (and change its exit status) while
/// we print our report. A SIGPIPE raised by our own write is consumed; one
/// that was already pending for the program stays pending.
pub fn write_all_no_sigpipe(fd: i32, buf: &[u8]) -> Result<(), Errno> {
    const SIGSET_BYTES: usize = 8;
    let pipe_bit: u64 = 1 << (libc::SIGPIPE - 1);
    let mut old: u64 = 0;
    let mut pending: u64 = 0;
    // SAFETY: rt_sigpending writes 8 bytes into the local `pending`;
    // rt_sigprocmask reads the local `pipe_bit` and writes the local `old`,
    // each of the 8 bytes passed.
    unsafe {
        let _ = syscall!(
            libc::SYS_rt_sigpending,
            &mut pending as *mut u64,
            SIGSET_BYTES
        );
        let _ = syscall!(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK,
            &pipe_bit as *const u64,
            &mut old as *mut u64,
            SIGSET_BYTES
        );
    }
    let result = write_all(fd, buf);
    // SAFETY: rt_sigtimedwait reads the locals `pipe_bit` and `zero` (no
    // siginfo asked); rt_sigprocmask reads the local `old`. Consuming
    // SIGPIPE is ours to do: we raised it and it was not pending before.
    unsafe {
        if result == Err(libc::EPIPE) && pending & pipe_bit == 0 {
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let _ = syscall!(
                libc::SYS_rt_sigtimedwait,
                &pipe_bit as *const u64,
                0usize,
                &zero as *const libc::timespec,
                SIGSET_BYTES
            );
        }
        let _ = syscall!(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &old as *const u64,
            0usize,
            SIGSET_BYTES
        );
    }
    result
}
