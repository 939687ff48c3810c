//! Threads: a thread's stack is never mergeable (the `stack` class). A stack
//! the program supplies is taken out before the thread starts; one glibc maps
//! is taken out by the new thread itself before it runs the program's code
//! (under `process`, where merge-any made it mergeable at once), or, under
//! `advise`, right after creation if the catch-up could not tell it by its
//! guard page (nothing advised it yet: glibc maps it with no hook seeing).
//! `pthread_create` and C11's `thrd_create` (which glibc serves with an
//! internal call no hook sees) share this handling ([`start_thread`]).

use core::ffi::{c_int, c_void};

use super::{counted, creating_a_task, errno_get, errno_set, ready};
use crate::core::engine;
use crate::counters::Hook;
use crate::next::{self, next};

/// What a thread started through a trampoline runs: the program's start
/// routine (a `pthread_create` one or a C11 one) and its argument.
struct ThreadStart<R> {
    routine: R,
    arg: *mut c_void,
}

/// First thing on a new thread started through a trampoline: takes back
/// the routine and argument, frees their block and takes the thread's
/// stack out of merging.
unsafe fn begin_thread<R>(p: *mut c_void) -> (R, *mut c_void) {
    let ThreadStart { routine, arg } = (p as *mut ThreadStart<R>).read();
    if let Some(free) = next().free {
        free(p);
    }
    let saved = errno_get();
    let mut attr: libc::pthread_attr_t = core::mem::zeroed();
    if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) == 0 {
        let mut addr: *mut c_void = core::ptr::null_mut();
        let mut size: usize = 0;
        if libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0 {
            engine::thread_stack_started(addr as usize, size);
        }
        libc::pthread_attr_destroy(&mut attr);
    }
    errno_set(saved);
    (routine, arg)
}

extern "C" fn thread_trampoline(p: *mut c_void) -> *mut c_void {
    // SAFETY: `start_thread` made `p`, a `ThreadStart` of `StartRoutine`
    // from the serving malloc, and passed it to this thread alone.
    let (routine, arg) = unsafe { begin_thread::<next::StartRoutine>(p) };
    routine(arg)
}

/// A C11 thread's: glibc calls it as a `thrd_start_t` (its `int` is the
/// thread's result).
extern "C" fn c11_thread_trampoline(p: *mut c_void) -> c_int {
    // SAFETY: `start_thread` made `p`, a `ThreadStart` of `C11StartRoutine`
    // from the serving malloc, and passed it to this thread alone.
    let (routine, arg) = unsafe { begin_thread::<next::C11StartRoutine>(p) };
    routine(arg)
}

/// The stack `attr` gives the thread (`pthread_attr_setstack`), if any.
/// glibc keeps its top and size, and answers `top - size`: without a stack
/// set, the top is null.
unsafe fn supplied_stack(attr: *const libc::pthread_attr_t) -> Option<(usize, usize)> {
    if attr.is_null() {
        return None;
    }
    let mut addr: *mut c_void = core::ptr::null_mut();
    let mut len: usize = 0;
    if libc::pthread_attr_getstack(attr, &mut addr, &mut len) != 0 {
        return None;
    }
    let top = (addr as usize).wrapping_add(len);
    (top != 0 && len != 0).then_some((addr as usize, len))
}

/// Starts a thread through `create` (the next `pthread_create` or
/// `thrd_create`, called with a routine and its argument; 0 is success for
/// both) with its stack kept out of merging: a supplied stack (`attr`) at
/// once; one glibc maps, by the thread itself (`trampoline` runs `routine`
/// after [`begin_thread`]) or, under `advise`, right after creation.
unsafe fn start_thread<R: Copy>(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    routine: R,
    arg: *mut c_void,
    trampoline: R,
    create: impl Fn(R, *mut c_void) -> c_int,
) -> c_int {
    // The new thread's first allocations may make glibc map an arena for it.
    engine::note_new_memory();
    if let Some((addr, len)) = supplied_stack(attr) {
        engine::thread_stack_supplied(addr, len);
        return create(routine, arg);
    }
    if !engine::threads_unmerge_their_stacks() {
        let rc = create(routine, arg);
        if rc == 0 {
            // The thread's descriptor: an address, never read.
            engine::thread_created(*thread as usize);
        }
        return rc;
    }
    let Some(alloc) = next().malloc else {
        return create(routine, arg);
    };
    let start = alloc(core::mem::size_of::<ThreadStart<R>>()) as *mut ThreadStart<R>;
    if start.is_null() {
        return create(routine, arg);
    }
    start.write(ThreadStart { routine, arg });
    let rc = create(trampoline, start as *mut c_void);
    if rc != 0 {
        if let Some(free) = next().free {
            free(start as *mut c_void);
        }
    }
    rc
}

#[no_mangle]
pub unsafe extern "C" fn pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    routine: next::StartRoutine,
    arg: *mut c_void,
) -> c_int {
    if !ready() {
        return libc::EAGAIN;
    }
    counted(Hook::PthreadCreate);
    let Some(create) = next().pthread_create else {
        return libc::EAGAIN;
    };
    start_thread(thread, attr, routine, arg, thread_trampoline, |r, a| {
        creating_a_task(libc::EAGAIN, || create(thread, attr, r, a))
    })
}

/// C11's `thrd_error`.
const THRD_ERROR: c_int = 2;

#[no_mangle]
pub unsafe extern "C" fn thrd_create(
    thread: *mut libc::pthread_t,
    routine: next::C11StartRoutine,
    arg: *mut c_void,
) -> c_int {
    if !ready() {
        return THRD_ERROR;
    }
    let Some(create) = next().thrd_create else {
        return THRD_ERROR;
    };
    // A C11 thread has the process's default attributes: no supplied stack.
    start_thread(
        thread,
        core::ptr::null(),
        routine,
        arg,
        c11_thread_trampoline,
        // glibc's C11 threads say `thrd_error` for `EAGAIN`.
        |r, a| creating_a_task(THRD_ERROR, || create(thread, r, a)),
    )
}

/// `pthread_exit`: when the main thread ends, the catch-up thread is told
/// (the process now ends with its last thread, which may soon be ours).
/// glibc unwinds the calling thread's stack from here, so no frame of ours
/// may be on it: a small assembly entry asks [`prepare_pthread_exit`] for
/// the next definition and jumps there with the argument untouched.
extern "C" fn prepare_pthread_exit() -> usize {
    let saved = errno_get();
    let main_thread = crate::os::sys::getpid() == crate::os::sys::gettid();
    if main_thread {
        engine::main_thread_ending();
    }
    errno_set(saved);
    let target = match next::next_if_ready().and_then(|n| n.pthread_exit) {
        Some(f) => f as usize,
        None => next::pthread_exit_now(),
    };
    if target == 0 {
        // No definition after us: the program linked one itself, before
        // us in every lookup, or none exists. Unreachable in practice.
        // SAFETY: abort takes nothing and never returns.
        unsafe { libc::abort() }
    }
    target
}

#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn pthread_exit() {
    #[cfg(target_arch = "x86_64")]
    ::core::arch::naked_asm!(
        // One push leaves the stack 16-byte aligned for the call.
        "push rdi",
        "call {prepare}",
        "pop rdi",
        "jmp rax",
        prepare = sym prepare_pthread_exit,
    );
    #[cfg(target_arch = "aarch64")]
    ::core::arch::naked_asm!(
        "stp x29, x30, [sp, #-32]!",
        "str x0, [sp, #16]",
        "bl {prepare}",
        "mov x16, x0",
        "ldr x0, [sp, #16]",
        "ldp x29, x30, [sp], #32",
        "br x16",
        prepare = sym prepare_pthread_exit,
    );
}
