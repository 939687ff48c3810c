//! Doing without the thread: the rules by which the process has none —
//! a seccomp filter (which may kill for `clone`), the main thread's end
//! (glibc would run `exit` on ours), restrictions the main thread set
//! behind our back (ours must not stay a lever out of them) — and the
//! program's task refused for want of one (`RLIMIT_NPROC`: made again
//! with ours retired). Where the process does without, the `mmap` hooks
//! take the steps ([`hooks_step_instead`]). [`Without`] is the reason the
//! report gives. Never creates a thread.

use core::sync::atomic::{
    AtomicU64,
    Ordering::{Relaxed, SeqCst},
};

use super::retiring::{release, retire};
use super::run::wake_thread;
use super::spawn::previous_thread_gone;
use super::{
    MAIN_ENDED, NONE, RETRY_AT_NS, RUNNING, SETTLE_NS, SPAWN, STATE, WITHOUT,
    WITHOUT_MAIN_ENDED, WITHOUT_SECCOMP,
};
use crate::core::identity;
use crate::os::proc;

/// Whether this process does without its thread from now on: a seccomp
/// filter, or the program's main thread ended (see [`main_thread_ending`]).
pub(super) fn for_good_without() -> bool {
    matches!(
        WITHOUT.load(SeqCst) & 0xffff,
        WITHOUT_SECCOMP | WITHOUT_MAIN_ENDED
    )
}

/// Whether the calling thread — whose filters the new thread would inherit,
/// and which makes the `clone` — runs under a seccomp filter (`Seccomp: 2`
/// in `/proc/thread-self/status`): one inherited from a parent, or
/// installed with a raw system call, may kill the process for `clone`, and
/// there is no asking it beforehand. `None` when it cannot
/// be told now; a status that cannot be read or lacks the line (a kernel
/// without seccomp says `0`) counts as filtered.
pub(super) fn seccomp_filtered() -> Option<bool> {
    let mut held = proc::SHARED_LINES.try_take()?;
    let mode = proc::status_number(b"/proc/thread-self/status\0", held.bytes(), b"Seccomp:");
    Some(mode != Ok(Some(0)))
}

/// When the thread last compared its restrictions with the main thread's.
static RESTRICTIONS_CHECKED_AT_NS: AtomicU64 = AtomicU64::new(0);
/// How often the thread compares them.
const RESTRICTIONS_CHECK_NS: u64 = 100_000_000;

/// Whether the main thread has restrictions this thread lacks (a seccomp
/// filter, `no_new_privs`, fewer capabilities, other user or group ids)
/// that it set with raw system calls, which no hook saw (a Go runtime, an
/// inline `syscall`; glibc's `setuid` and friends change every thread): this
/// thread, unrestricted in a process that restricted itself, would be a
/// lever out of the sandbox, and a seccomp filter may also forbid the
/// `clone` of the next one. So it leaves (at most every
/// [`RESTRICTIONS_CHECK_NS`] it looks, two reads of `/proc`); after a
/// filter, the library does without its thread for good, else a later
/// thread inherits the restrictions of the program's thread that creates
/// it. Only the main thread is compared (another thread's restrictions are
/// seen when it creates the next one).
pub(super) fn restricted_behind_our_back(now: u64) -> bool {
    if now.saturating_sub(RESTRICTIONS_CHECKED_AT_NS.load(Relaxed)) < RESTRICTIONS_CHECK_NS {
        return false;
    }
    RESTRICTIONS_CHECKED_AT_NS.store(now, Relaxed);
    let (Some(main), Some(ours)) = (
        proc::restrictions_digest(b"/proc/self/status\0"),
        proc::restrictions_digest(b"/proc/thread-self/status\0"),
    ) else {
        return false;
    };
    if main == ours {
        return false;
    }
    if main_has_filter() {
        // The main thread's filter came after ours was created.
        WITHOUT.store(WITHOUT_SECCOMP, Relaxed);
    } else {
        RETRY_AT_NS.store(now.saturating_add(SETTLE_NS), Relaxed);
    }
    true
}

/// Whether the main thread runs under a seccomp filter (read on the
/// thread's own stack).
fn main_has_filter() -> bool {
    let mode = proc::status_number(b"/proc/self/status\0", &mut [0u8; 2048], b"Seccomp:");
    matches!(mode, Ok(Some(m)) if m != 0)
}

/// Steps from the hooks (the `mmap` family's poll) where no thread can take
/// them: the process does without its thread.
pub fn hooks_step_instead() -> bool {
    WITHOUT.load(Relaxed) != 0 && STATE.load(Relaxed) == NONE
}

/// The program's call that creates a task (a thread, a process) failed
/// for want of one (`EAGAIN`: `RLIMIT_NPROC`, a cgroup's `pids.max`,
/// `kernel.threads-max`), and our thread may hold the task it needed:
/// `call` is made again with our thread retired (none is created until it
/// returns), and its result counts. `None`: no thread of ours was there to
/// make room, and the failure stands.
pub fn again_without_thread<R>(call: impl FnOnce() -> R) -> Option<R> {
    // In a `vfork` child (the parent's memory, not its threads), the
    // parent's thread id would look gone and be forgotten.
    if SPAWN.load(Relaxed) == 0 || identity::shares_owners_memory() || !may_exist() {
        return None;
    }
    let held = retire();
    let result = call();
    if held {
        release();
    }
    Some(result)
}

/// Whether a thread of ours may be counted by the kernel now: starting,
/// running, stopping, or out of our code but not yet gone.
fn may_exist() -> bool {
    STATE.load(SeqCst) != NONE || !previous_thread_gone(0)
}

/// The program's main thread is ending (`pthread_exit`, or the `exit`
/// system call): the process now ends when its last thread does, and glibc
/// then runs `exit` on that thread — the program's `atexit` handlers and
/// destructors, on its stack, with its signal mask. That must never be our
/// thread (a 256 KiB stack, every signal blocked): it is retired now and
/// none is created again in this process ([`Without::MainThreadEnded`];
/// the hooks take the steps). (Should it outlive a retire that timed out,
/// it looks every [`ALONE_CHECK_NS`](super::ALONE_CHECK_NS) whether it is the last.)
pub fn main_thread_ending() {
    MAIN_ENDED.store(true, Relaxed);
    if SPAWN.load(Relaxed) == 0 {
        return;
    }
    do_without_for_main_ended();
    if retire() {
        release();
    }
    if STATE.load(Relaxed) == RUNNING {
        wake_thread();
    }
}

/// No thread from now on, because the main thread ended (a seccomp filter,
/// the stronger reason, stays the one given).
pub(super) fn do_without_for_main_ended() {
    let _ = WITHOUT.fetch_update(SeqCst, SeqCst, |w| {
        (w & 0xffff != WITHOUT_SECCOMP).then_some(WITHOUT_MAIN_ENDED)
    });
}

/// Why the process has no catch-up thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Without {
    /// A seccomp filter: creating a thread might kill the process.
    Seccomp,
    /// `pthread_create` refused, with this errno.
    CreateFailed(i32),
    /// The program's main thread ended (or, in a child forked by another
    /// thread, will end unseen): the thread might be the process's last,
    /// and glibc would run `exit` on it.
    MainThreadEnded,
}
