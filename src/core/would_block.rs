//! Whether a call a thread is about to make will wait: the look the hooks of
//! calls that may block (`crate::api::blocking`) take before
//! `engine::at_idle_edge` runs a catch-up pass, so that a call that returns
//! at once never pays for one.
//!
//! Each answer comes from the kernel "now" (a poll or `select` that never
//! waits, `fcntl(F_GETFL)`, `waitid` with `WNOHANG | WNOWAIT`, the clock):
//! nothing is read, consumed, reaped or changed that the program could see.
//! The program's own arguments are read through the kernel
//! (`sys::copy_from_own_memory`), never dereferenced here: a bad pointer is
//! the call's `EFAULT`, not our fault (and where a sandbox refuses that
//! read, the call is taken to wait). A probe that cannot tell, or sees an
//! error the call will report at once, says "does not wait" (no pass; the
//! next edge tries again); a wait no probe can see coming (a condition
//! variable, a barrier, a join) counts as one.
//!
//! Only runs when an edge is due (`engine::idle_edge_due`), so its system
//! calls are off every hot path. Never allocates, never locks, never changes
//! `errno`; small stack (the largest frame holds three 128-byte `fd_set`s).

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

/// How many `pollfd`s one probe copies (256 bytes of stack).
const POLL_CHUNK: usize = 32;
/// A larger set is judged as waiting without looking (the look would cost
/// more system calls than it saves).
const POLL_MOST: usize = 1024;

/// `poll`/`ppoll` of the program's `nfds` entries at `fds`, given whether
/// its timeout lets it wait at all: it waits if no entry has an event now.
/// Probed on copies, chunk by chunk: a poll writes `revents`, and those in
/// the program's array are only for its own call to set.
pub fn poll_set(fds: usize, nfds: usize, may_wait: bool) -> bool {
    if !may_wait {
        return false;
    }
    if nfds > POLL_MOST {
        return true;
    }
    let empty = libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    };
    let mut chunk = [empty; POLL_CHUNK];
    let entry = core::mem::size_of::<libc::pollfd>();
    let mut done = 0;
    while done < nfds {
        let n = (nfds - done).min(POLL_CHUNK);
        let bytes =
            unsafe { core::slice::from_raw_parts_mut(chunk.as_mut_ptr() as *mut u8, n * entry) };
        if let Err(e) = sys::copy_from_own_memory(fds + done * entry, bytes) {
            return !call_fails_on(e);
        }
        if sys::poll_ready_now(&mut chunk[..n]) != Ok(0) {
            return false;
        }
        done += n;
    }
    true
}

/// Whether a timeout given as a `timespec` at `ts` (null: none, wait for
/// ever) lets a call wait at all; `false` for zero and for one that cannot
/// be read or is invalid (the call returns at once).
pub fn timespec_may_wait(ts: usize) -> bool {
    if ts == 0 {
        return true;
    }
    match sys::read_own_value::<libc::timespec>(ts) {
        Ok(t) => valid(&t) && (t.tv_sec > 0 || t.tv_nsec > 0),
        Err(e) => !call_fails_on(e),
    }
}

/// Whether the program's memory being unreadable to the kernel (`e`, from
/// `sys::copy_from_own_memory`) means its call fails at once: `EFAULT`. Any
/// other error (a sandbox refusing `process_vm_readv`) says nothing about
/// the call, which is then taken to wait.
fn call_fails_on(e: sys::Errno) -> bool {
    e == libc::EFAULT
}

/// The same for a `timeval` (`select`).
pub fn timeval_may_wait(tv: usize) -> bool {
    if tv == 0 {
        return true;
    }
    match sys::read_own_value::<libc::timeval>(tv) {
        Ok(t) => t.tv_sec >= 0 && t.tv_usec >= 0 && (t.tv_sec > 0 || t.tv_usec > 0),
        Err(e) => !call_fails_on(e),
    }
}

fn valid(t: &libc::timespec) -> bool {
    t.tv_sec >= 0 && (0..1_000_000_000).contains(&t.tv_nsec)
}

/// `select`/`pselect` over `nfds` descriptors of the program's sets at
/// `read`, `write`, `except` (each may be null), given whether its timeout
/// lets it wait: it waits if none is ready now. Probed on copies: `select`
/// rewrites its sets.
pub fn select_sets(nfds: i32, read: usize, write: usize, except: usize, may_wait: bool) -> bool {
    if !may_wait {
        return false;
    }
    if nfds < 0 {
        return false;
    }
    if nfds as usize > libc::FD_SETSIZE {
        return true;
    }
    // What the kernel reads of each set: whole longs covering `nfds` bits.
    let long_bits = 8 * core::mem::size_of::<libc::c_ulong>();
    let bytes = (nfds as usize).div_ceil(long_bits) * core::mem::size_of::<libc::c_ulong>();
    let mut sets: [libc::fd_set; 3] = unsafe { core::mem::zeroed() };
    let [r, w, e] = &mut sets;
    let copy = |from: usize, to: &mut libc::fd_set| -> Result<(), sys::Errno> {
        let to =
            unsafe { core::slice::from_raw_parts_mut(to as *mut libc::fd_set as *mut u8, bytes) };
        sys::copy_from_own_memory(from, to)
    };
    for (from, to) in [(read, &mut *r), (write, &mut *w), (except, &mut *e)] {
        if from != 0 {
            if let Err(e) = copy(from, to) {
                return !call_fails_on(e);
            }
        }
    }
    sys::select_ready_now(nfds, pick(read, r), pick(write, w), pick(except, e)) == Ok(0)
}

/// `set` for a set the program passed (`from` not null).
fn pick(from: usize, set: &mut libc::fd_set) -> Option<&mut libc::fd_set> {
    (from != 0).then_some(set)
}

/// `epoll_wait` and its kin on `epfd`, given whether the timeout lets it
/// wait: an epoll descriptor is readable exactly when it has events ready,
/// so it is polled (a zero-timeout `epoll_wait` would consume them).
pub fn epoll(epfd: i32, may_wait: bool) -> bool {
    may_wait && sys::readable_now(epfd) == Ok(false)
}

/// `nanosleep` (relative): it waits unless the duration is zero (or the
/// call fails at once).
pub fn sleep_for(ts: usize) -> bool {
    ts != 0 && timespec_may_wait(ts)
}

/// `clock_nanosleep` on `clock`: relative, like [`sleep_for`]; with
/// `TIMER_ABSTIME`, it waits if the time given is still to come.
pub fn sleep_on_clock(clock: libc::clockid_t, flags: i32, ts: usize) -> bool {
    if flags & libc::TIMER_ABSTIME == 0 {
        return sleep_for(ts);
    }
    let until = match sys::read_own_value::<libc::timespec>(ts) {
        Ok(until) => until,
        Err(e) => return !call_fails_on(e),
    };
    let Ok(now) = sys::clock_now(clock) else {
        return false;
    };
    valid(&until) && (until.tv_sec, until.tv_nsec) > (now.tv_sec, now.tv_nsec)
}

/// A signal wait (`sigwaitinfo`, `sigtimedwait`) with a timeout at `ts`
/// (null: none): counts as a wait unless the timeout is zero. (Whether a
/// signal of the set is pending is not looked at: the set would have to be
/// read and compared with the pending ones, for a wait that is rare on a
/// hot path.)
pub fn signal_wait(ts: usize) -> bool {
    timespec_may_wait(ts)
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
