//! Whether a call a thread is about to make will wait: the look the hooks of
//! calls that may block (`crate::api::blocking`) take before
//! `engine::at_idle_edge` runs a catch-up pass, so that a call that returns
//! at once never pays for one.
//!
//! Each answer comes from the kernel "now" (a poll that never waits,
//! `fcntl(F_GETFL)`, `waitid` with `WNOHANG | WNOWAIT`): nothing is
//! consumed, reaped or changed that the program could see. The program's
//! memory is never read, not even through the kernel (`process_vm_readv`
//! is a system call an inherited sandbox may kill the program for): what
//! only its memory could tell (a timeout passed by pointer, `select`'s
//! sets, a sleep's length) is taken as "waits". A probe that sees an error
//! the call will report at once says "does not wait" (no pass; the next
//! edge tries again); a wait no probe can see coming (a condition variable,
//! a barrier, a join) counts as one.
//!
//! Only runs when an edge is due (`engine::idle_edge_due`), so its system
//! calls are off every hot path. Never allocates, never locks, never changes
//! `errno`; small stack.

use crate::os::{self, sys};

/// A read-like call (`read`, `recv*`, `accept*`, `msgrcv` aside) on `fd`:
/// it waits unless the call asks not to (`MSG_DONTWAIT`: `dont_wait`), the
/// descriptor is non-blocking, or something (data, a connection, end of
/// file, an error) is there now. A bad descriptor fails at once.
pub fn descriptor_read(fd: i32, dont_wait: bool) -> bool {
    if dont_wait {
        return false;
    }
    // The poll first: a busy reader (data there, a regular file) is answered
    // with one system call. A bad descriptor polls as ready (`POLLNVAL`).
    sys::readable_now(fd) == Ok(false) && sys::fd_is_nonblocking(fd) == Ok(false)
}

/// `poll`/`ppoll` of the program's `nfds` entries at `fds`: it waits if no
/// entry has an event now. Probed with a zero-timeout poll of the program's
/// own array (the kernel reads it; a bad pointer is the call's `EFAULT`):
/// the `revents` that poll writes are rewritten by the program's own call,
/// whatever it returns. `may_wait`: the timeout is not zero (`false` when
/// that cannot be told without reading the program's memory: see
/// [`timeout_may_wait`]).
pub fn poll_set(fds: usize, nfds: usize, may_wait: bool) -> bool {
    may_wait && sys::poll_ready_now_in(fds, nfds) == Ok(0)
}

/// Whether a timeout the program passed by pointer (`timespec` or
/// `timeval`) lets its call wait. Null is "no timeout": it waits. Otherwise
/// the value is in the program's memory, which the library never reads
/// (the only safe way, `process_vm_readv`, is a system call a sandbox may
/// kill the program for): the call is taken to wait. So a zero timeout
/// passed by pointer may get a pass it did not need, only while the
/// catch-up has news.
pub fn timeout_may_wait(_timeout: usize) -> bool {
    true
}

/// `select`/`pselect`: taken to wait. Its sets are the program's memory and
/// are rewritten by a probe, so a look would need copies of them (see
/// [`timeout_may_wait`] for why the library makes none).
pub fn select_sets() -> bool {
    true
}

/// `epoll_wait` and its kin on `epfd`, given whether the timeout lets it
/// wait: an epoll descriptor is readable exactly when it has events ready,
/// so it is polled (a zero-timeout `epoll_wait` would consume them).
pub fn epoll(epfd: i32, may_wait: bool) -> bool {
    may_wait && sys::readable_now(epfd) == Ok(false)
}

/// `nanosleep`, `clock_nanosleep`: a sleep waits (a zero or past one is
/// taken to wait too: its time is in the program's memory).
pub fn sleep() -> bool {
    true
}

/// A signal wait (`sigwaitinfo`, `sigtimedwait`): counts as a wait (whether
/// a signal of the set is pending, or the timeout is zero, is not looked
/// at: both are in the program's memory).
pub fn signal_wait() -> bool {
    true
}

/// `waitpid`/`wait4` for `pid` (`-1` any child, `0` our process group,
/// `< -1` group `-pid`) with `options`.
pub fn child_by_pid(pid: i32, options: i32) -> bool {
    let (idtype, id) = match pid {
        -1 => (libc::P_ALL, 0),
        0 => match sys::process_group() {
            Ok(group) => (libc::P_PGID, group as u32),
            Err(_) => return false,
        },
        p if p < -1 => match p.checked_neg() {
            Some(group) => (libc::P_PGID, group as u32),
            None => return false,
        },
        p => (libc::P_PID, p as u32),
    };
    // `WUNTRACED` is `WSTOPPED`; the `__W*` flags mean the same to waitid.
    child(idtype, id, libc::WEXITED | options)
}

/// `waitid(idtype, id, …, options)`: it waits unless `WNOHANG` is asked
/// for, or a matching child has something to report now (or the call fails
/// at once: `ECHILD`, `EINVAL`).
pub fn child(idtype: libc::idtype_t, id: u32, options: i32) -> bool {
    if options & libc::WNOHANG != 0 {
        return false;
    }
    sys::child_waitable_now(idtype, id, options) == Ok(false)
}

/// `sem_wait` and its timed kin on `sem`: it waits if the value is 0 now
/// (read with libc's `sem_getvalue`; `sem_trywait` would take a unit).
///
/// # Safety
/// `sem` is what the program passed to its semaphore call.
pub unsafe fn semaphore(sem: *mut libc::sem_t) -> bool {
    os::semaphore_value(sem) == 0
}

/// `msgrcv` with `flags`: counts as a wait unless `IPC_NOWAIT` is asked for
/// (whether a matching message is queued is not looked at).
pub fn message_queue(flags: i32) -> bool {
    flags & libc::IPC_NOWAIT == 0
}

/// Whether system call `number` with futex operation `op` (its second
/// argument) is a futex wait: `FUTEX_WAIT`, `FUTEX_WAIT_BITSET`,
/// `FUTEX_WAIT_REQUEUE_PI`, or `futex_waitv`. Whether the word still holds
/// the expected value is not looked at (the word is the program's).
pub fn futex_call_waits(number: libc::c_long, op: libc::c_long) -> bool {
    const FUTEX_WAIT_REQUEUE_PI: i32 = 11;
    if number == libc::SYS_futex_waitv {
        return true;
    }
    if number != libc::SYS_futex {
        return false;
    }
    let command = op as i32 & !(libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME);
    matches!(
        command,
        libc::FUTEX_WAIT | libc::FUTEX_WAIT_BITSET | FUTEX_WAIT_REQUEUE_PI
    )
}
