//! The hooks of calls that may block: a thread about to wait is the edge of
//! idleness, where a program that will never call us again still gets its
//! new memory advised (`engine::at_idle_edge`; without a thread of ours).
//!
//! Each hook only wires its symbol to a probe and forwards: if
//! `engine::idle_edge_due()` (a few loads), the engine asks
//! `core::would_block` whether this call will really wait and, if so, runs
//! the pass; then the next definition is called **as a tail call**, so that
//! no frame of ours is on the stack while the call waits. These are
//! cancellation points: glibc's forced unwinding of a cancelled thread must
//! never walk through a Rust frame.
//!
//! Forwarding: to the next definition start-up resolved (`next::blocking_if_ready`).
//! Before that, a call with a system call of its own makes it directly
//! (any such call may come from a signal handler or a `vfork` child, where
//! start-up, which runs `dlsym`, must not); the thread and semaphore calls,
//! which have none and are never legitimately made there (they are not
//! async-signal-safe), run start-up first (`late`).
//!
//! Not counted in the stats: they are not allocation activity.

use core::ffi::{c_int, c_long, c_uint, c_void, CStr};

use libc::{
    clockid_t, epoll_event, fd_set, idtype_t, msghdr, nfds_t, pid_t, pollfd, pthread_barrier_t,
    pthread_cond_t, pthread_mutex_t, pthread_t, rusage, sem_t, sigset_t, siginfo_t, sockaddr,
    socklen_t, timespec, timeval,
};

use super::{errno_set, raw_syscall, ready};
use crate::core::engine;
use crate::core::would_block;
use crate::next::{self, BlockingFunctions};

/// The edge: when due, a look at whether the call waits, and a pass if so.
#[inline(always)]
fn edge(would_block: impl FnOnce() -> bool) {
    if engine::idle_edge_due() {
        engine::at_idle_edge(would_block);
    }
}

/// The next definition picked from the table, once start-up has resolved it.
#[inline(always)]
fn resolved<F>(pick: impl FnOnce(&'static BlockingFunctions) -> Option<F>) -> Option<F> {
    next::blocking_if_ready().and_then(pick)
}

/// For the calls without a system call of their own, before start-up: run
/// it (see the module doc), or — nested inside it, which only a signal
/// handler could be, where these calls are not allowed anyway — look the
/// name up by hand (no `dlsym`).
#[cold]
#[inline(never)]
fn late<F: Copy>(pick: fn(&'static BlockingFunctions) -> Option<F>, name: &CStr) -> Option<F> {
    if ready() {
        if let Some(f) = resolved(pick) {
            return Some(f);
        }
    }
    let p = next::blocking_function_now(name);
    if p.is_null() {
        return None;
    }
    const { assert!(core::mem::size_of::<F>() == core::mem::size_of::<*mut c_void>()) };
    Some(unsafe { core::mem::transmute_copy::<*mut c_void, F>(&p) })
}

/// A system call as the libc wrapper makes it (`-1` and `errno`), for the
/// calls made before start-up. Out of line, as is every stand-in below that
/// keeps something on the stack: a hook whose frame has a local whose
/// address escapes gets no tail call (the compiler cannot prove the
/// forwarded call does not use it).
#[cold]
#[inline(never)]
unsafe fn sys(number: c_long, a: usize, b: usize, c: usize, d: usize, e: usize, f: usize) -> c_long {
    raw_syscall(number, [a, b, c, d, e, f].map(|v| v as c_long))
}

/// The size of the kernel's signal sets.
const SIGSET_BYTES: usize = 8;

// ---------------------------------------------------------------------------
// Through `syscall`

/// From the `syscall` hook, before it forwards: a futex wait is a thread
/// about to block (the futex word is the program's: never read).
#[inline(always)]
pub(super) fn before_syscall(number: c_long, futex_op: c_long) {
    if would_block::futex_call_waits(number, futex_op) {
        edge(|| true);
    }
}

/// Whether system call `number` maps memory (`mmap`, `mremap`, `brk`).
#[inline(always)]
pub(super) fn syscall_maps_memory(number: c_long) -> bool {
    number == libc::SYS_mmap || number == libc::SYS_mremap || number == libc::SYS_brk
}

// ---------------------------------------------------------------------------
// Descriptors

#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: usize) -> isize {
    edge(move || would_block::descriptor_read(fd, false));
    match resolved(|t| t.read) {
        Some(f) => f(fd, buf, n),
        None => sys(libc::SYS_read, fd as usize, buf as usize, n, 0, 0, 0) as isize,
    }
}

extern "C" {
    fn __chk_fail() -> !;
}

/// `read` of at most `buflen` bytes into `buf` (`_FORTIFY_SOURCE`).
#[no_mangle]
pub unsafe extern "C" fn __read_chk(fd: c_int, buf: *mut c_void, n: usize, buflen: usize) -> isize {
    edge(move || would_block::descriptor_read(fd, false));
    match resolved(|t| t.read_chk) {
        Some(f) => f(fd, buf, n, buflen),
        None if n > buflen => __chk_fail(),
        None => sys(libc::SYS_read, fd as usize, buf as usize, n, 0, 0, 0) as isize,
    }
}

#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: usize, flags: c_int) -> isize {
    edge(move || would_block::descriptor_read(fd, flags & libc::MSG_DONTWAIT != 0));
    match resolved(|t| t.recv) {
        Some(f) => f(fd, buf, n, flags),
        None => sys(
            libc::SYS_recvfrom,
            fd as usize, buf as usize, n, flags as usize, 0, 0,
        ) as isize,
    }
}

#[no_mangle]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    n: usize,
    buflen: usize,
    flags: c_int,
) -> isize {
    edge(move || would_block::descriptor_read(fd, flags & libc::MSG_DONTWAIT != 0));
    match resolved(|t| t.recv_chk) {
        Some(f) => f(fd, buf, n, buflen, flags),
        None if n > buflen => __chk_fail(),
        None => sys(
            libc::SYS_recvfrom,
            fd as usize, buf as usize, n, flags as usize, 0, 0,
        ) as isize,
    }
}

#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: usize,
    flags: c_int,
    from: *mut sockaddr,
    from_len: *mut socklen_t,
) -> isize {
    edge(move || would_block::descriptor_read(fd, flags & libc::MSG_DONTWAIT != 0));
    match resolved(|t| t.recvfrom) {
        Some(f) => f(fd, buf, n, flags, from, from_len),
        None => sys(
            libc::SYS_recvfrom,
            fd as usize, buf as usize, n, flags as usize, from as usize, from_len as usize,
        ) as isize,
    }
}

#[no_mangle]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    n: usize,
    buflen: usize,
    flags: c_int,
    from: *mut sockaddr,
    from_len: *mut socklen_t,
) -> isize {
    edge(move || would_block::descriptor_read(fd, flags & libc::MSG_DONTWAIT != 0));
    match resolved(|t| t.recvfrom_chk) {
        Some(f) => f(fd, buf, n, buflen, flags, from, from_len),
        None if n > buflen => __chk_fail(),
        None => sys(
            libc::SYS_recvfrom,
            fd as usize, buf as usize, n, flags as usize, from as usize, from_len as usize,
        ) as isize,
    }
}

#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> isize {
    edge(move || would_block::descriptor_read(fd, flags & libc::MSG_DONTWAIT != 0));
    match resolved(|t| t.recvmsg) {
        Some(f) => f(fd, msg, flags),
        None => sys(libc::SYS_recvmsg, fd as usize, msg as usize, flags as usize, 0, 0, 0)
            as isize,
    }
}

#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    edge(move || would_block::descriptor_read(fd, false));
    match resolved(|t| t.accept) {
        Some(f) => f(fd, addr, len),
        None => sys(libc::SYS_accept4, fd as usize, addr as usize, len as usize, 0, 0, 0) as c_int,
    }
}

#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    // `flags` are the new descriptor's: they do not make this call wait less.
    edge(move || would_block::descriptor_read(fd, false));
    match resolved(|t| t.accept4) {
        Some(f) => f(fd, addr, len, flags),
        None => sys(
            libc::SYS_accept4,
            fd as usize, addr as usize, len as usize, flags as usize, 0, 0,
        ) as c_int,
    }
}

#[no_mangle]
pub unsafe extern "C" fn msgrcv(
    id: c_int,
    msg: *mut c_void,
    size: usize,
    kind: c_long,
    flags: c_int,
) -> isize {
    edge(move || would_block::message_queue(flags));
    match resolved(|t| t.msgrcv) {
        Some(f) => f(id, msg, size, kind, flags),
        None => sys(
            libc::SYS_msgrcv,
            id as usize, msg as usize, size, kind as usize, flags as usize, 0,
        ) as isize,
    }
}

// ---------------------------------------------------------------------------
// Multiplexing

/// `ppoll`/`pselect6` as libc's wrappers make them: with a copy of the
/// timeout (the kernel writes the time left into it).
#[cold]
#[inline(never)]
unsafe fn ppoll_syscall(fds: *mut pollfd, n: nfds_t, ts: Option<timespec>, mask: usize) -> c_int {
    let mut copy = ts;
    let at = copy.as_mut().map_or(0, |t| t as *mut timespec as usize);
    let size = if mask == 0 { 0 } else { SIGSET_BYTES };
    sys(libc::SYS_ppoll, fds as usize, n as usize, at, mask, size, 0) as c_int
}

fn ms_timespec(ms: c_int) -> Option<timespec> {
    (ms >= 0).then(|| timespec {
        tv_sec: (ms / 1000) as _,
        tv_nsec: ((ms % 1000) * 1_000_000) as _,
    })
}

#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut pollfd, n: nfds_t, timeout_ms: c_int) -> c_int {
    edge(move || would_block::poll_set(fds as usize, n as usize, timeout_ms != 0));
    match resolved(|t| t.poll) {
        Some(f) => f(fds, n, timeout_ms),
        None => ppoll_syscall(fds, n, ms_timespec(timeout_ms), 0),
    }
}

#[no_mangle]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut pollfd,
    n: nfds_t,
    timeout_ms: c_int,
    fds_len: usize,
) -> c_int {
    edge(move || would_block::poll_set(fds as usize, n as usize, timeout_ms != 0));
    match resolved(|t| t.poll_chk) {
        Some(f) => f(fds, n, timeout_ms, fds_len),
        None if fds_len / core::mem::size_of::<pollfd>() < n as usize => __chk_fail(),
        None => ppoll_syscall(fds, n, ms_timespec(timeout_ms), 0),
    }
}

#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    n: nfds_t,
    timeout: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    edge(move || {
        would_block::poll_set(fds as usize, n as usize, would_block::timespec_may_wait(timeout as usize))
    });
    match resolved(|t| t.ppoll) {
        Some(f) => f(fds, n, timeout, mask),
        None => ppoll_syscall(fds, n, timeout.as_ref().copied(), mask as usize),
    }
}

#[no_mangle]
pub unsafe extern "C" fn __ppoll_chk(
    fds: *mut pollfd,
    n: nfds_t,
    timeout: *const timespec,
    mask: *const sigset_t,
    fds_len: usize,
) -> c_int {
    edge(move || {
        would_block::poll_set(fds as usize, n as usize, would_block::timespec_may_wait(timeout as usize))
    });
    match resolved(|t| t.ppoll_chk) {
        Some(f) => f(fds, n, timeout, mask, fds_len),
        None if fds_len / core::mem::size_of::<pollfd>() < n as usize => __chk_fail(),
        None => ppoll_syscall(fds, n, timeout.as_ref().copied(), mask as usize),
    }
}

/// `pselect6` with a copy of the timeout and the kernel's signal-mask
/// argument (a pointer and the set's size).
#[cold]
#[inline(never)]
unsafe fn pselect_syscall(
    n: c_int,
    sets: [*mut fd_set; 3],
    ts: Option<&mut timespec>,
    mask: *const sigset_t,
) -> c_int {
    let mask_arg: [usize; 2] = [mask as usize, SIGSET_BYTES];
    let at = ts.map_or(0, |t| t as *mut timespec as usize);
    let mask_at = if mask.is_null() { 0 } else { mask_arg.as_ptr() as usize };
    sys(
        libc::SYS_pselect6,
        n as usize, sets[0] as usize, sets[1] as usize, sets[2] as usize, at, mask_at,
    ) as c_int
}

#[no_mangle]
pub unsafe extern "C" fn select(
    n: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    timeout: *mut timeval,
) -> c_int {
    edge(move || {
        let may_wait = would_block::timeval_may_wait(timeout as usize);
        would_block::select_sets(n, r as usize, w as usize, e as usize, may_wait)
    });
    match resolved(|t| t.select) {
        Some(f) => f(n, r, w, e, timeout),
        None => select_syscall(n, [r, w, e], timeout),
    }
}

/// `select` through `pselect6` (aarch64 has no `select`), writing the time
/// left back as Linux's `select` does.
#[cold]
#[inline(never)]
unsafe fn select_syscall(n: c_int, sets: [*mut fd_set; 3], timeout: *mut timeval) -> c_int {
    let Some(tv) = timeout.as_mut() else {
        return pselect_syscall(n, sets, None, core::ptr::null());
    };
    if tv.tv_sec < 0 || tv.tv_usec < 0 {
        errno_set(libc::EINVAL);
        return -1;
    }
    let mut ts = timespec {
        tv_sec: tv.tv_sec + (tv.tv_usec / 1_000_000) as libc::time_t,
        tv_nsec: (tv.tv_usec % 1_000_000) as c_long * 1000,
    };
    let rc = pselect_syscall(n, sets, Some(&mut ts), core::ptr::null());
    tv.tv_sec = ts.tv_sec;
    tv.tv_usec = (ts.tv_nsec / 1000) as _;
    rc
}

#[no_mangle]
pub unsafe extern "C" fn pselect(
    n: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    timeout: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    edge(move || {
        let may_wait = would_block::timespec_may_wait(timeout as usize);
        would_block::select_sets(n, r as usize, w as usize, e as usize, may_wait)
    });
    match resolved(|t| t.pselect) {
        Some(f) => f(n, r, w, e, timeout, mask),
        None => pselect_copying(n, [r, w, e], timeout, mask),
    }
}

#[cold]
#[inline(never)]
unsafe fn pselect_copying(
    n: c_int,
    sets: [*mut fd_set; 3],
    timeout: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    let mut copy = timeout.as_ref().copied();
    pselect_syscall(n, sets, copy.as_mut(), mask)
}

#[no_mangle]
pub unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout_ms: c_int,
) -> c_int {
    edge(move || would_block::epoll(epfd, timeout_ms != 0));
    match resolved(|t| t.epoll_wait) {
        Some(f) => f(epfd, events, max, timeout_ms),
        None => sys(
            libc::SYS_epoll_pwait,
            epfd as usize, events as usize, max as usize, timeout_ms as usize, 0, SIGSET_BYTES,
        ) as c_int,
    }
}

#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout_ms: c_int,
    mask: *const sigset_t,
) -> c_int {
    edge(move || would_block::epoll(epfd, timeout_ms != 0));
    match resolved(|t| t.epoll_pwait) {
        Some(f) => f(epfd, events, max, timeout_ms, mask),
        None => sys(
            libc::SYS_epoll_pwait,
            epfd as usize, events as usize, max as usize, timeout_ms as usize, mask as usize, SIGSET_BYTES,
        ) as c_int,
    }
}

#[no_mangle]
pub unsafe extern "C" fn epoll_pwait2(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    edge(move || would_block::epoll(epfd, would_block::timespec_may_wait(timeout as usize)));
    match resolved(|t| t.epoll_pwait2) {
        Some(f) => f(epfd, events, max, timeout, mask),
        None => sys(
            libc::SYS_epoll_pwait2,
            epfd as usize, events as usize, max as usize, timeout as usize, mask as usize, SIGSET_BYTES,
        ) as c_int,
    }
}

// ---------------------------------------------------------------------------
// Sleeping and signals

#[no_mangle]
pub unsafe extern "C" fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int {
    edge(move || would_block::sleep_for(req as usize));
    match resolved(|t| t.nanosleep) {
        Some(f) => f(req, rem),
        None => sys(libc::SYS_nanosleep, req as usize, rem as usize, 0, 0, 0, 0) as c_int,
    }
}

#[no_mangle]
pub unsafe extern "C" fn clock_nanosleep(
    clock: clockid_t,
    flags: c_int,
    req: *const timespec,
    rem: *mut timespec,
) -> c_int {
    edge(move || would_block::sleep_on_clock(clock, flags, req as usize));
    match resolved(|t| t.clock_nanosleep) {
        Some(f) => f(clock, flags, req, rem),
        // Reports its error as the result, not in `errno`.
        None => clock_nanosleep_syscall(clock, flags, req, rem),
    }
}

/// `clock_nanosleep` reports its error as the result, not in `errno`.
#[cold]
#[inline(never)]
unsafe fn clock_nanosleep_syscall(
    clock: clockid_t,
    flags: c_int,
    req: *const timespec,
    rem: *mut timespec,
) -> c_int {
    let args = [clock as usize, flags as usize, req as usize, rem as usize, 0, 0];
    match crate::os::sys::raw(libc::SYS_clock_nanosleep as usize, args) {
        Ok(_) => 0,
        Err(e) => e,
    }
}

#[no_mangle]
pub unsafe extern "C" fn sleep(seconds: c_uint) -> c_uint {
    edge(move || seconds > 0);
    match resolved(|t| t.sleep) {
        Some(f) => f(seconds),
        None => sleep_syscall(seconds),
    }
}

#[cold]
#[inline(never)]
unsafe fn sleep_syscall(seconds: c_uint) -> c_uint {
    let mut ts = timespec {
        tv_sec: seconds as _,
        tv_nsec: 0,
    };
    let at = &mut ts as *mut timespec as usize;
    if sys(libc::SYS_nanosleep, at, at, 0, 0, 0, 0) == 0 {
        0
    } else {
        ts.tv_sec as c_uint + (ts.tv_nsec != 0) as c_uint
    }
}

#[no_mangle]
pub unsafe extern "C" fn usleep(microseconds: libc::useconds_t) -> c_int {
    edge(move || microseconds > 0);
    match resolved(|t| t.usleep) {
        Some(f) => f(microseconds),
        None => usleep_syscall(microseconds),
    }
}

#[cold]
#[inline(never)]
unsafe fn usleep_syscall(microseconds: libc::useconds_t) -> c_int {
    let ts = timespec {
        tv_sec: (microseconds / 1_000_000) as _,
        tv_nsec: (microseconds % 1_000_000) as c_long * 1000,
    };
    sys(libc::SYS_nanosleep, &ts as *const timespec as usize, 0, 0, 0, 0, 0) as c_int
}

#[no_mangle]
pub unsafe extern "C" fn pause() -> c_int {
    edge(|| true);
    match resolved(|t| t.pause) {
        Some(f) => f(),
        // A poll of nothing for ever: returns when a handler has run.
        None => ppoll_syscall(core::ptr::null_mut(), 0, None, 0),
    }
}

#[no_mangle]
pub unsafe extern "C" fn sigsuspend(mask: *const sigset_t) -> c_int {
    edge(|| true);
    match resolved(|t| t.sigsuspend) {
        Some(f) => f(mask),
        None => sys(libc::SYS_rt_sigsuspend, mask as usize, SIGSET_BYTES, 0, 0, 0, 0) as c_int,
    }
}

#[no_mangle]
pub unsafe extern "C" fn sigwait(set: *const sigset_t, sig: *mut c_int) -> c_int {
    edge(|| true);
    match resolved(|t| t.sigwait) {
        Some(f) => f(set, sig),
        None => sigwait_syscall(set, sig),
    }
}

/// `sigwait` as glibc makes it: the signal's number, or an error number
/// (never `EINTR`: it waits again).
#[cold]
#[inline(never)]
unsafe fn sigwait_syscall(set: *const sigset_t, sig: *mut c_int) -> c_int {
    loop {
        let rc = crate::os::sys::raw(
            libc::SYS_rt_sigtimedwait as usize,
            [set as usize, 0, 0, SIGSET_BYTES, 0, 0],
        );
        match rc {
            Err(libc::EINTR) => continue,
            Err(e) => return e,
            Ok(n) => {
                *sig = n as c_int;
                return 0;
            }
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn sigwaitinfo(set: *const sigset_t, info: *mut siginfo_t) -> c_int {
    edge(|| true);
    match resolved(|t| t.sigwaitinfo) {
        Some(f) => f(set, info),
        None => sys(
            libc::SYS_rt_sigtimedwait,
            set as usize, info as usize, 0, SIGSET_BYTES, 0, 0,
        ) as c_int,
    }
}

#[no_mangle]
pub unsafe extern "C" fn sigtimedwait(
    set: *const sigset_t,
    info: *mut siginfo_t,
    timeout: *const timespec,
) -> c_int {
    edge(move || would_block::signal_wait(timeout as usize));
    match resolved(|t| t.sigtimedwait) {
        Some(f) => f(set, info, timeout),
        None => sys(
            libc::SYS_rt_sigtimedwait,
            set as usize, info as usize, timeout as usize, SIGSET_BYTES, 0, 0,
        ) as c_int,
    }
}

// ---------------------------------------------------------------------------
// Children

#[cold]
#[inline(never)]
unsafe fn wait4_syscall(pid: pid_t, status: *mut c_int, options: c_int, usage: *mut rusage) -> pid_t {
    sys(
        libc::SYS_wait4,
        pid as usize, status as usize, options as usize, usage as usize, 0, 0,
    ) as pid_t
}

#[no_mangle]
pub unsafe extern "C" fn wait(status: *mut c_int) -> pid_t {
    edge(|| would_block::child_by_pid(-1, 0));
    match resolved(|t| t.wait) {
        Some(f) => f(status),
        None => wait4_syscall(-1, status, 0, core::ptr::null_mut()),
    }
}

#[no_mangle]
pub unsafe extern "C" fn waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t {
    edge(move || would_block::child_by_pid(pid, options));
    match resolved(|t| t.waitpid) {
        Some(f) => f(pid, status, options),
        None => wait4_syscall(pid, status, options, core::ptr::null_mut()),
    }
}

#[no_mangle]
pub unsafe extern "C" fn wait3(status: *mut c_int, options: c_int, usage: *mut rusage) -> pid_t {
    edge(move || would_block::child_by_pid(-1, options));
    match resolved(|t| t.wait3) {
        Some(f) => f(status, options, usage),
        None => wait4_syscall(-1, status, options, usage),
    }
}

#[no_mangle]
pub unsafe extern "C" fn wait4(
    pid: pid_t,
    status: *mut c_int,
    options: c_int,
    usage: *mut rusage,
) -> pid_t {
    edge(move || would_block::child_by_pid(pid, options));
    match resolved(|t| t.wait4) {
        Some(f) => f(pid, status, options, usage),
        None => wait4_syscall(pid, status, options, usage),
    }
}

#[no_mangle]
pub unsafe extern "C" fn waitid(
    idtype: idtype_t,
    id: libc::id_t,
    info: *mut siginfo_t,
    options: c_int,
) -> c_int {
    edge(move || would_block::child(idtype, id, options));
    match resolved(|t| t.waitid) {
        Some(f) => f(idtype, id, info, options),
        None => sys(
            libc::SYS_waitid,
            idtype as usize, id as usize, info as usize, options as usize, 0, 0,
        ) as c_int,
    }
}

// ---------------------------------------------------------------------------
// Threads and semaphores: no system call of their own (see `late`). A wait
// on a condition variable, a barrier or a join cannot be seen coming
// without reading the program's objects: each counts as one.

#[no_mangle]
pub unsafe extern "C" fn pthread_cond_wait(
    cond: *mut pthread_cond_t,
    mutex: *mut pthread_mutex_t,
) -> c_int {
    edge(|| true);
    let f = resolved(|t| t.pthread_cond_wait)
        .or_else(|| late(|t| t.pthread_cond_wait, c"pthread_cond_wait"));
    match f {
        Some(f) => f(cond, mutex),
        None => libc::ENOSYS,
    }
}

#[no_mangle]
pub unsafe extern "C" fn pthread_cond_timedwait(
    cond: *mut pthread_cond_t,
    mutex: *mut pthread_mutex_t,
    until: *const timespec,
) -> c_int {
    edge(|| true);
    let f = resolved(|t| t.pthread_cond_timedwait)
        .or_else(|| late(|t| t.pthread_cond_timedwait, c"pthread_cond_timedwait"));
    match f {
        Some(f) => f(cond, mutex, until),
        None => libc::ENOSYS,
    }
}

#[no_mangle]
pub unsafe extern "C" fn pthread_cond_clockwait(
    cond: *mut pthread_cond_t,
    mutex: *mut pthread_mutex_t,
    clock: clockid_t,
    until: *const timespec,
) -> c_int {
    edge(|| true);
    let f = resolved(|t| t.pthread_cond_clockwait)
        .or_else(|| late(|t| t.pthread_cond_clockwait, c"pthread_cond_clockwait"));
    match f {
        Some(f) => f(cond, mutex, clock, until),
        None => libc::ENOSYS,
    }
}

#[no_mangle]
pub unsafe extern "C" fn pthread_barrier_wait(barrier: *mut pthread_barrier_t) -> c_int {
    edge(|| true);
    let f = resolved(|t| t.pthread_barrier_wait)
        .or_else(|| late(|t| t.pthread_barrier_wait, c"pthread_barrier_wait"));
    match f {
        Some(f) => f(barrier),
        None => libc::ENOSYS,
    }
}

#[no_mangle]
pub unsafe extern "C" fn pthread_join(thread: pthread_t, result: *mut *mut c_void) -> c_int {
    edge(|| true);
    let f = resolved(|t| t.pthread_join).or_else(|| late(|t| t.pthread_join, c"pthread_join"));
    match f {
        Some(f) => f(thread, result),
        None => libc::ENOSYS,
    }
}

#[cold]
#[inline(never)]
unsafe fn semaphore_missing() -> c_int {
    errno_set(libc::ENOSYS);
    -1
}

#[no_mangle]
pub unsafe extern "C" fn sem_wait(sem: *mut sem_t) -> c_int {
    edge(move || would_block::semaphore(sem));
    let f = resolved(|t| t.sem_wait).or_else(|| late(|t| t.sem_wait, c"sem_wait"));
    match f {
        Some(f) => f(sem),
        None => semaphore_missing(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn sem_timedwait(sem: *mut sem_t, until: *const timespec) -> c_int {
    edge(move || would_block::semaphore(sem));
    let f = resolved(|t| t.sem_timedwait).or_else(|| late(|t| t.sem_timedwait, c"sem_timedwait"));
    match f {
        Some(f) => f(sem, until),
        None => semaphore_missing(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn sem_clockwait(
    sem: *mut sem_t,
    clock: clockid_t,
    until: *const timespec,
) -> c_int {
    edge(move || would_block::semaphore(sem));
    let f = resolved(|t| t.sem_clockwait).or_else(|| late(|t| t.sem_clockwait, c"sem_clockwait"));
    match f {
        Some(f) => f(sem, clock, until),
        None => semaphore_missing(),
    }
}
