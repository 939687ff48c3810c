//! The catch-up thread (`core::catchup_thread` decides when it exists)

use core::ffi::{c_int, c_void};

use super::{errno_get, errno_set};
use crate::core::engine;
use crate::next::{self, next};

/// The catch-up thread's stack: in the library's own zero-fill mapping, so
/// the thread maps nothing (no VMA of its own, none left in glibc's stack
/// cache when it leaves) and untouched pages cost nothing. glibc puts the
/// thread's descriptor and static TLS at its top. A step needs under
/// 2 KiB; the room is for the one unbounded use: when the program's main
/// thread called `pthread_exit` and the thread outlives the program's
/// last thread, glibc ends the process from it (`exit`: the program's
/// `atexit` handlers run here).
const CATCH_UP_STACK_BYTES: usize = 256 << 10;

#[repr(C, align(4096))]
struct CatchUpStack(core::cell::UnsafeCell<[u8; CATCH_UP_STACK_BYTES]>);
// SAFETY: no Rust reference to the bytes is ever made: only its address is
// handed to `pthread_create`, as the stack of one thread at a time
// (`core::catchup_thread` creates a new one only once the last is gone).
unsafe impl Sync for CatchUpStack {}

static CATCH_UP_STACK: CatchUpStack =
    CatchUpStack(core::cell::UnsafeCell::new([0; CATCH_UP_STACK_BYTES]));

extern "C" fn catch_up_thread(_: *mut c_void) -> *mut c_void {
    engine::catch_up_thread_main();
    core::ptr::null_mut()
}

/// Creates the catch-up thread with the next `pthread_create`, so glibc
/// knows it (`setuid` and friends change its credentials too; the program
/// never sees it in its own `pthread_create` calls), detached, on
/// [`CATCH_UP_STACK`]. It is created with every signal blocked (a new
/// thread inherits its creator's mask), so no signal meant for the program
/// is ever delivered to it; libc's `pthread_sigmask` keeps the two signals
/// glibc needs for itself (`setuid` across threads, cancellation)
/// deliverable. A program whose static TLS does not fit the stack gets a
/// thread on a stack of glibc's instead.
pub(super) fn spawn_catch_up_thread() -> Result<(), i32> {
    let Some(create) = next().pthread_create else {
        return Err(libc::ENOSYS);
    };
    // SAFETY: `sigset_t` is integers (all zeros is valid) and the sigset and
    // pthread calls write only the locals passed; `create` is the next
    // `pthread_create`, given `catch_up_thread`'s C signature; errno is saved
    // and restored around all of it.
    unsafe {
        let saved_errno = errno_get();
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        let masked = libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) == 0;
        let mut rc = create_detached(create, true);
        if rc == libc::EINVAL {
            rc = create_detached(create, false);
        }
        if masked {
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        }
        errno_set(saved_errno);
        match rc {
            0 => Ok(()),
            e => Err(e),
        }
    }
}

/// `create` a detached catch-up thread, on the library's stack or on one
/// of glibc's; the call's result.
///
/// # Safety
/// `create` must be a `pthread_create`; with `own_stack`, no other thread
/// may be running on [`CATCH_UP_STACK`].
unsafe fn create_detached(create: next::signature::pthread_create, own_stack: bool) -> c_int {
    let mut attr: libc::pthread_attr_t = core::mem::zeroed();
    if libc::pthread_attr_init(&mut attr) != 0 {
        return libc::EAGAIN;
    }
    libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
    // Never the creator's real-time policy (a SCHED_FIFO thread of the
    // program that brought news): the catch-up would compete with the
    // program's threads at their priority. (Other policies, `SCHED_BATCH`
    // and `SCHED_IDLE` included, it inherits.)
    let mut policy: c_int = 0;
    let mut param = libc::sched_param { sched_priority: 0 };
    let creator = libc::pthread_getschedparam(libc::pthread_self(), &mut policy, &mut param);
    if creator != 0 || policy == libc::SCHED_FIFO || policy == libc::SCHED_RR {
        let normal = libc::sched_param { sched_priority: 0 };
        libc::pthread_attr_setinheritsched(&mut attr, libc::PTHREAD_EXPLICIT_SCHED);
        libc::pthread_attr_setschedpolicy(&mut attr, libc::SCHED_OTHER);
        libc::pthread_attr_setschedparam(&mut attr, &normal);
    }
    if own_stack {
        libc::pthread_attr_setstack(
            &mut attr,
            CATCH_UP_STACK.0.get() as *mut c_void,
            CATCH_UP_STACK_BYTES,
        );
    }
    let mut thread: libc::pthread_t = 0;
    let rc = create(&mut thread, &attr, catch_up_thread, core::ptr::null_mut());
    libc::pthread_attr_destroy(&mut attr);
    rc
}
