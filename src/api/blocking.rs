//! The hooks of calls that may block: a thread about to wait is the edge of
//! idleness, where a program that will never call us again still gets its
//! new memory advised (`engine::at_idle_edge`; without a thread of ours).
//!
//! Each hook only wires its symbol to a look and forwards (`blocking_hook!`):
//! if an edge may be due at all (`engine::idle_edge_due`, two loads: never
//! in `process` or `off` mode), an out-of-line twin lets the engine look for
//! news and run `core::would_block`'s look at whether this call will really
//! wait and, if so, the pass; then the
//! next definition is reached **by a tail jump**, so that no frame of ours
//! is on the stack while the call waits. These are cancellation points:
//! glibc's forced unwinding of a cancelled thread must not walk through a
//! Rust frame (`tests/blocking.rs` reads the library's code for the jumps).
//!
//! Forwarding: to the next definition start-up resolved (`next::blocking`).
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
    pthread_cond_t, pthread_mutex_t, pthread_t, rusage, sem_t, siginfo_t, sigset_t, sockaddr,
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

/// For the calls without a system call of their own, before start-up: run
/// it (see the module doc), or — nested inside it, which only a signal
/// handler could be, where these calls are not allowed anyway — look the
/// name up by hand (no `dlsym`).
#[cold]
#[inline(never)]
fn late<F: Copy>(pick: fn(&'static BlockingFunctions) -> Option<F>, name: &CStr) -> Option<F> {
    if ready() {
        if let Some(f) = pick(next::blocking()) {
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
unsafe fn sys(
    number: c_long,
    a: usize,
    b: usize,
    c: usize,
    d: usize,
    e: usize,
    f: usize,
) -> c_long {
    raw_syscall(number, [a, b, c, d, e, f].map(|v| v as c_long))
}

/// One hook of a call that may block. `$name` forwards to the next
/// definition of `next` (or, before start-up has resolved it, to
/// `otherwise`, out of line) — or, where that does not fit, by `forward`, an
/// expression whose last act is the forwarded call — so that it compiles to
/// a tail jump. When an edge of idleness may be due, it first lets the
/// engine look at whether the call waits (`waits`, evaluated only when the
/// edge is due) and run a pass if so.
///
/// The look and the pass live in an out-of-line twin (`at_edge`), itself
/// reached by a tail jump: a call that returns, in the hook, would oblige it
/// to keep its arguments in saved registers on every call. In `process` and
/// `off` modes a hook is two loads, its target's, and a jump.
macro_rules! blocking_hook {
    (
        $(#[$attr:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty {
            waits: $waits:expr,
            next: $next:ident,
            otherwise: $otherwise:expr $(,)?
        }
    ) => {
        blocking_hook! {
            $(#[$attr])*
            fn $name($($arg: $ty),*) -> $ret {
                waits: $waits,
                forward: {
                    #[cold]
                    #[inline(never)]
                    unsafe fn unresolved($($arg: $ty),*) -> $ret {
                        $otherwise
                    }
                    match next::blocking().$next() {
                        Some(f) => f($($arg),*),
                        None => unresolved($($arg),*),
                    }
                },
            }
        }
    };
    (
        $(#[$attr:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty {
            waits: $waits:expr,
            forward: $forward:expr $(,)?
        }
    ) => {
        $(#[$attr])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            unsafe fn forward($($arg: $ty),*) -> $ret {
                $forward
            }
            #[inline(never)]
            unsafe fn at_edge($($arg: $ty),*) -> $ret {
                engine::at_idle_edge(move || $waits);
                forward($($arg),*)
            }
            if engine::idle_edge_due() {
                return at_edge($($arg),*);
            }
            forward($($arg),*)
        }
    };
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

blocking_hook! {
    fn read(fd: c_int, buf: *mut c_void, n: usize) -> isize {
        waits: would_block::descriptor_read(fd, false),
        next: read,
        otherwise: sys(libc::SYS_read, fd as usize, buf as usize, n, 0, 0, 0) as isize,
    }
}

extern "C" {
    fn __chk_fail() -> !;
}

blocking_hook! {
    /// `read` of at most `buflen` bytes into `buf` (`_FORTIFY_SOURCE`).
    fn __read_chk(fd: c_int, buf: *mut c_void, n: usize, buflen: usize) -> isize {
        waits: would_block::descriptor_read(fd, false),
        next: read_chk,
        otherwise: {
            if n > buflen {
                __chk_fail();
            }
            sys(libc::SYS_read, fd as usize, buf as usize, n, 0, 0, 0) as isize
        },
    }
}

blocking_hook! {
    fn recv(fd: c_int, buf: *mut c_void, n: usize, flags: c_int) -> isize {
        waits: would_block::descriptor_read(fd, flags & libc::MSG_DONTWAIT != 0),
        next: recv,
        otherwise: sys(
                libc::SYS_recvfrom,
                fd as usize, buf as usize, n, flags as usize, 0, 0,
            ) as isize,
    }
}

blocking_hook! {
    fn __recv_chk(fd: c_int, buf: *mut c_void, n: usize, buflen: usize, flags: c_int) -> isize {
        waits: would_block::descriptor_read(fd, flags & libc::MSG_DONTWAIT != 0),
        next: recv_chk,
        otherwise: {
            if n > buflen {
                __chk_fail();
            }
            sys(
                    libc::SYS_recvfrom,
                    fd as usize, buf as usize, n, flags as usize, 0, 0,
                ) as isize
        },
    }
}

blocking_hook! {
    fn recvfrom(
        fd: c_int,
        buf: *mut c_void,
        n: usize,
        flags: c_int,
        from: *mut sockaddr,
        from_len: *mut socklen_t,
    ) -> isize {
        waits: would_block::descriptor_read(fd, flags & libc::MSG_DONTWAIT != 0),
        forward: recvfrom_forward(fd, buf, n, flags, from, from_len),
    }
}

blocking_hook! {
    /// What glibc's own does: the check, then `recvfrom`. Forwarded to the
    /// next `recvfrom` rather than the next `__recvfrom_chk`: a seventh
    /// argument travels on the stack, and the compiler then gives up the
    /// tail call.
    fn __recvfrom_chk(
        fd: c_int,
        buf: *mut c_void,
        n: usize,
        buflen: usize,
        flags: c_int,
        from: *mut sockaddr,
        from_len: *mut socklen_t,
    ) -> isize {
        waits: would_block::descriptor_read(fd, flags & libc::MSG_DONTWAIT != 0),
        forward: {
            if n > buflen {
                __chk_fail();
            }
            recvfrom_forward(fd, buf, n, flags, from, from_len)
        },
    }
}

/// The next `recvfrom` (or its system call before start-up).
#[inline(always)]
unsafe fn recvfrom_forward(
    fd: c_int,
    buf: *mut c_void,
    n: usize,
    flags: c_int,
    from: *mut sockaddr,
    from_len: *mut socklen_t,
) -> isize {
    match next::blocking().recvfrom() {
        Some(f) => f(fd, buf, n, flags, from, from_len),
        None => sys(
            libc::SYS_recvfrom,
            fd as usize,
            buf as usize,
            n,
            flags as usize,
            from as usize,
            from_len as usize,
        ) as isize,
    }
}

blocking_hook! {
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> isize {
        waits: would_block::descriptor_read(fd, flags & libc::MSG_DONTWAIT != 0),
        next: recvmsg,
        otherwise: sys(libc::SYS_recvmsg, fd as usize, msg as usize, flags as usize, 0, 0, 0)
                as isize,
    }
}

blocking_hook! {
    fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
        waits: would_block::descriptor_read(fd, false),
        next: accept,
        otherwise: sys(libc::SYS_accept4, fd as usize, addr as usize, len as usize, 0, 0, 0) as c_int,
    }
}

blocking_hook! {
    fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
        // `flags` are the new descriptor's: they do not make this call wait less.
        waits: would_block::descriptor_read(fd, false),
        next: accept4,
        otherwise: sys(
                libc::SYS_accept4,
                fd as usize, addr as usize, len as usize, flags as usize, 0, 0,
            ) as c_int,
    }
}

blocking_hook! {
    fn msgrcv(id: c_int, msg: *mut c_void, size: usize, kind: c_long, flags: c_int) -> isize {
        waits: would_block::message_queue(flags),
        next: msgrcv,
        otherwise: sys(
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

blocking_hook! {
    fn poll(fds: *mut pollfd, n: nfds_t, timeout_ms: c_int) -> c_int {
        waits: would_block::poll_set(fds as usize, n as usize, timeout_ms != 0),
        next: poll,
        otherwise: ppoll_syscall(fds, n, ms_timespec(timeout_ms), 0),
    }
}

blocking_hook! {
    fn __poll_chk(fds: *mut pollfd, n: nfds_t, timeout_ms: c_int, fds_len: usize) -> c_int {
        waits: would_block::poll_set(fds as usize, n as usize, timeout_ms != 0),
        next: poll_chk,
        otherwise: {
            if fds_len / core::mem::size_of::<pollfd>() < n as usize {
                __chk_fail();
            }
            ppoll_syscall(fds, n, ms_timespec(timeout_ms), 0)
        },
    }
}

blocking_hook! {
    fn ppoll(
        fds: *mut pollfd,
        n: nfds_t,
        timeout: *const timespec,
        mask: *const sigset_t,
    ) -> c_int {
        waits: {
            let may_wait = would_block::timeout_may_wait(timeout as usize);
            would_block::poll_set(fds as usize, n as usize, may_wait)
        },
        next: ppoll,
        otherwise: ppoll_syscall(fds, n, timeout.as_ref().copied(), mask as usize),
    }
}

blocking_hook! {
    fn __ppoll_chk(
        fds: *mut pollfd,
        n: nfds_t,
        timeout: *const timespec,
        mask: *const sigset_t,
        fds_len: usize,
    ) -> c_int {
        waits: {
            let may_wait = would_block::timeout_may_wait(timeout as usize);
            would_block::poll_set(fds as usize, n as usize, may_wait)
        },
        next: ppoll_chk,
        otherwise: {
            if fds_len / core::mem::size_of::<pollfd>() < n as usize {
                __chk_fail();
            }
            ppoll_syscall(fds, n, timeout.as_ref().copied(), mask as usize)
        },
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
    let mask_at = if mask.is_null() {
        0
    } else {
        mask_arg.as_ptr() as usize
    };
    sys(
        libc::SYS_pselect6,
        n as usize,
        sets[0] as usize,
        sets[1] as usize,
        sets[2] as usize,
        at,
        mask_at,
    ) as c_int
}

blocking_hook! {
    fn select(
        n: c_int,
        r: *mut fd_set,
        w: *mut fd_set,
        e: *mut fd_set,
        timeout: *mut timeval,
    ) -> c_int {
        waits: {
            let _ = (n, r, w, e, timeout);
            would_block::select_sets()
        },
        next: select,
        otherwise: select_syscall(n, [r, w, e], timeout),
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

blocking_hook! {
    fn pselect(
        n: c_int,
        r: *mut fd_set,
        w: *mut fd_set,
        e: *mut fd_set,
        timeout: *const timespec,
        mask: *const sigset_t,
    ) -> c_int {
        waits: {
            let _ = (n, r, w, e, timeout);
            would_block::select_sets()
        },
        next: pselect,
        otherwise: pselect_copying(n, [r, w, e], timeout, mask),
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

blocking_hook! {
    fn epoll_wait(epfd: c_int, events: *mut epoll_event, max: c_int, timeout_ms: c_int) -> c_int {
        waits: would_block::epoll(epfd, timeout_ms != 0),
        next: epoll_wait,
        otherwise: sys(
                libc::SYS_epoll_pwait,
                epfd as usize, events as usize, max as usize, timeout_ms as usize, 0, SIGSET_BYTES,
            ) as c_int,
    }
}

blocking_hook! {
    fn epoll_pwait(
        epfd: c_int,
        events: *mut epoll_event,
        max: c_int,
        timeout_ms: c_int,
        mask: *const sigset_t,
    ) -> c_int {
        waits: would_block::epoll(epfd, timeout_ms != 0),
        next: epoll_pwait,
        otherwise: sys(
                libc::SYS_epoll_pwait,
                epfd as usize, events as usize, max as usize, timeout_ms as usize, mask as usize, SIGSET_BYTES,
            ) as c_int,
    }
}

blocking_hook! {
    fn epoll_pwait2(
        epfd: c_int,
        events: *mut epoll_event,
        max: c_int,
        timeout: *const timespec,
        mask: *const sigset_t,
    ) -> c_int {
        waits: would_block::epoll(epfd, would_block::timeout_may_wait(timeout as usize)),
        next: epoll_pwait2,
        otherwise: sys(
                libc::SYS_epoll_pwait2,
                epfd as usize, events as usize, max as usize, timeout as usize, mask as usize, SIGSET_BYTES,
            ) as c_int,
    }
}

// ---------------------------------------------------------------------------
// Sleeping and signals

blocking_hook! {
    fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int {
        waits: { let _ = req; would_block::sleep() },
        next: nanosleep,
        otherwise: sys(libc::SYS_nanosleep, req as usize, rem as usize, 0, 0, 0, 0) as c_int,
    }
}

blocking_hook! {
    fn clock_nanosleep(
        clock: clockid_t,
        flags: c_int,
        req: *const timespec,
        rem: *mut timespec,
    ) -> c_int {
        waits: { let _ = (clock, flags, req); would_block::sleep() },
        next: clock_nanosleep,
        otherwise: clock_nanosleep_syscall(clock, flags, req, rem),
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
    let args = [
        clock as usize,
        flags as usize,
        req as usize,
        rem as usize,
        0,
        0,
    ];
    match crate::os::sys::raw(libc::SYS_clock_nanosleep as usize, args) {
        Ok(_) => 0,
        Err(e) => e,
    }
}

blocking_hook! {
    fn sleep(seconds: c_uint) -> c_uint {
        waits: seconds > 0,
        next: sleep,
        otherwise: sleep_syscall(seconds),
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

blocking_hook! {
    fn usleep(microseconds: libc::useconds_t) -> c_int {
        waits: microseconds > 0,
        next: usleep,
        otherwise: usleep_syscall(microseconds),
    }
}

#[cold]
#[inline(never)]
unsafe fn usleep_syscall(microseconds: libc::useconds_t) -> c_int {
    let ts = timespec {
        tv_sec: (microseconds / 1_000_000) as _,
        tv_nsec: (microseconds % 1_000_000) as c_long * 1000,
    };
    sys(
        libc::SYS_nanosleep,
        &ts as *const timespec as usize,
        0,
        0,
        0,
        0,
        0,
    ) as c_int
}

blocking_hook! {
    fn pause() -> c_int {
        waits: true,
        next: pause,
        // A poll of nothing for ever: returns when a handler has run.
        otherwise: ppoll_syscall(core::ptr::null_mut(), 0, None, 0),
    }
}

blocking_hook! {
    fn sigsuspend(mask: *const sigset_t) -> c_int {
        waits: true,
        next: sigsuspend,
        otherwise: sys(libc::SYS_rt_sigsuspend, mask as usize, SIGSET_BYTES, 0, 0, 0, 0) as c_int,
    }
}

blocking_hook! {
    fn sigwait(set: *const sigset_t, sig: *mut c_int) -> c_int {
        waits: true,
        next: sigwait,
        otherwise: sigwait_syscall(set, sig),
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

blocking_hook! {
    fn sigwaitinfo(set: *const sigset_t, info: *mut siginfo_t) -> c_int {
        waits: true,
        next: sigwaitinfo,
        otherwise: sys(
                libc::SYS_rt_sigtimedwait,
                set as usize, info as usize, 0, SIGSET_BYTES, 0, 0,
            ) as c_int,
    }
}

blocking_hook! {
    fn sigtimedwait(set: *const sigset_t, info: *mut siginfo_t, timeout: *const timespec) -> c_int {
        waits: { let _ = timeout; would_block::signal_wait() },
        next: sigtimedwait,
        otherwise: sys(
                libc::SYS_rt_sigtimedwait,
                set as usize, info as usize, timeout as usize, SIGSET_BYTES, 0, 0,
            ) as c_int,
    }
}

// ---------------------------------------------------------------------------
// Children

#[cold]
#[inline(never)]
unsafe fn wait4_syscall(
    pid: pid_t,
    status: *mut c_int,
    options: c_int,
    usage: *mut rusage,
) -> pid_t {
    sys(
        libc::SYS_wait4,
        pid as usize,
        status as usize,
        options as usize,
        usage as usize,
        0,
        0,
    ) as pid_t
}

blocking_hook! {
    fn wait(status: *mut c_int) -> pid_t {
        waits: would_block::child_by_pid(-1, 0),
        next: wait,
        otherwise: wait4_syscall(-1, status, 0, core::ptr::null_mut()),
    }
}

blocking_hook! {
    fn waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t {
        waits: would_block::child_by_pid(pid, options),
        next: waitpid,
        otherwise: wait4_syscall(pid, status, options, core::ptr::null_mut()),
    }
}

blocking_hook! {
    fn wait3(status: *mut c_int, options: c_int, usage: *mut rusage) -> pid_t {
        waits: would_block::child_by_pid(-1, options),
        next: wait3,
        otherwise: wait4_syscall(-1, status, options, usage),
    }
}

blocking_hook! {
    fn wait4(pid: pid_t, status: *mut c_int, options: c_int, usage: *mut rusage) -> pid_t {
        waits: would_block::child_by_pid(pid, options),
        next: wait4,
        otherwise: wait4_syscall(pid, status, options, usage),
    }
}

blocking_hook! {
    fn waitid(idtype: idtype_t, id: libc::id_t, info: *mut siginfo_t, options: c_int) -> c_int {
        waits: would_block::child(idtype, id, options),
        next: waitid,
        otherwise: sys(
                libc::SYS_waitid,
                idtype as usize, id as usize, info as usize, options as usize, 0, 0,
            ) as c_int,
    }
}

// ---------------------------------------------------------------------------
// Threads and semaphores: no system call of their own (see `late`). A wait
// on a condition variable, a barrier or a join cannot be seen coming
// without reading the program's objects: each counts as one.

blocking_hook! {
    fn pthread_cond_wait(cond: *mut pthread_cond_t, mutex: *mut pthread_mutex_t) -> c_int {
        waits: true,
        next: pthread_cond_wait,
        otherwise: match late(|t| t.pthread_cond_wait(), c"pthread_cond_wait") {
            Some(f) => f(cond, mutex),
            None => libc::ENOSYS,
        },
    }
}

blocking_hook! {
    fn pthread_cond_timedwait(
        cond: *mut pthread_cond_t,
        mutex: *mut pthread_mutex_t,
        until: *const timespec,
    ) -> c_int {
        waits: true,
        next: pthread_cond_timedwait,
        otherwise: match late(|t| t.pthread_cond_timedwait(), c"pthread_cond_timedwait") {
            Some(f) => f(cond, mutex, until),
            None => libc::ENOSYS,
        },
    }
}

blocking_hook! {
    fn pthread_cond_clockwait(
        cond: *mut pthread_cond_t,
        mutex: *mut pthread_mutex_t,
        clock: clockid_t,
        until: *const timespec,
    ) -> c_int {
        waits: true,
        next: pthread_cond_clockwait,
        otherwise: match late(|t| t.pthread_cond_clockwait(), c"pthread_cond_clockwait") {
            Some(f) => f(cond, mutex, clock, until),
            None => libc::ENOSYS,
        },
    }
}

blocking_hook! {
    fn pthread_barrier_wait(barrier: *mut pthread_barrier_t) -> c_int {
        waits: true,
        next: pthread_barrier_wait,
        otherwise: match late(|t| t.pthread_barrier_wait(), c"pthread_barrier_wait") {
            Some(f) => f(barrier),
            None => libc::ENOSYS,
        },
    }
}

blocking_hook! {
    fn pthread_join(thread: pthread_t, result: *mut *mut c_void) -> c_int {
        waits: true,
        next: pthread_join,
        otherwise: match late(|t| t.pthread_join(), c"pthread_join") {
            Some(f) => f(thread, result),
            None => libc::ENOSYS,
        },
    }
}

#[cold]
#[inline(never)]
unsafe fn semaphore_missing() -> c_int {
    errno_set(libc::ENOSYS);
    -1
}

blocking_hook! {
    fn sem_wait(sem: *mut sem_t) -> c_int {
        waits: would_block::semaphore(sem),
        next: sem_wait,
        otherwise: match late(|t| t.sem_wait(), c"sem_wait") {
            Some(f) => f(sem),
            None => semaphore_missing(),
        },
    }
}

blocking_hook! {
    fn sem_timedwait(sem: *mut sem_t, until: *const timespec) -> c_int {
        waits: would_block::semaphore(sem),
        next: sem_timedwait,
        otherwise: match late(|t| t.sem_timedwait(), c"sem_timedwait") {
            Some(f) => f(sem, until),
            None => semaphore_missing(),
        },
    }
}

blocking_hook! {
    fn sem_clockwait(sem: *mut sem_t, clock: clockid_t, until: *const timespec) -> c_int {
        waits: would_block::semaphore(sem),
        next: sem_clockwait,
        otherwise: match late(|t| t.sem_clockwait(), c"sem_clockwait") {
            Some(f) => f(sem, clock, until),
            None => semaphore_missing(),
        },
    }
}
