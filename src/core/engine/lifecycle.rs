//! The process's life around the program's threads: a forked child starts
//! over, a raw clone notices it is one, the library's thread steps aside
//! for calls that need the process without it, for `fork`, and when the
//! main thread ends.

use crate::core::catchup;
use crate::core::catchup_thread;
use crate::core::exec_guard;
use crate::core::identity;
use crate::core::paying;
use crate::os::proc::SHARED_LINES;

use super::exec::merge_any_in_use;

/// In a forked child (`pthread_atfork`): counters and catch-up start over.
pub fn after_fork_in_child() {
    identity::adopt_as_forked_child();
    start_over();
}

pub(in crate::core) fn start_over() {
    exec_guard::forget_after_fork(merge_any_in_use());
    crate::os::exec_search::release_after_fork();
    crate::os::library_search::release_after_fork();
    crate::os::binfmt_misc::release_after_fork();
    crate::os::loader::release_after_fork();
    crate::counters::reset();
    catchup::reset();
    catchup_thread::reset_in_child();
    paying::reset_in_child();
    SHARED_LINES.release_after_fork();
}

/// Who started this process (see [`identity::starter`]): the exit report
/// speaks unasked only for the process the user started.
pub fn starter() -> identity::Starter {
    identity::starter()
}

/// A child made by a raw `clone` (no `pthread_atfork` handler ran) owns a
/// copy of the parent's counters: notice it and start over. Returns `false`
/// in a `vfork`/`CLONE_VM` child, whose statics are its parent's.
pub fn settle_identity() -> bool {
    if identity::adopt_if_new_process() {
        start_over();
    }
    !identity::shares_owners_memory()
}

/// A call that needs this process without the library's thread is about to
/// be made (`unshare`, `setns`, a per-thread restriction: capabilities,
/// `no_new_privs`, Landlock): the thread is stopped and waited for. Hand
/// the result to [`after_single_threaded_call`].
pub fn before_single_threaded_call() -> bool {
    catchup_thread::retire()
}

pub fn after_single_threaded_call(retired: bool) {
    if retired {
        catchup_thread::release();
    }
}

/// The program's call that creates a task failed for want of one: made
/// again with the library's thread gone, if it was there
/// (`catchup_thread::again_without_thread`).
pub fn again_without_our_thread<R>(call: impl FnOnce() -> R) -> Option<R> {
    catchup_thread::again_without_thread(call)
}

/// `fork` is about to copy this process (`pthread_atfork`'s prepare): the
/// thread goes first, so that the parent has exactly the program's threads
/// when `fork` returns (CPython counts them then); it comes back only with
/// the next news.
pub fn before_fork() -> bool {
    paying::before_fork();
    catchup_thread::before_fork()
}

/// `fork` returned in the parent: the brk heap's growth brings no thread
/// right after (`catchup_thread::AFTER_FORK_QUIET_NS`).
pub fn after_fork_in_parent(retired: bool) {
    catchup_thread::after_fork_in_parent(retired);
}

/// The process exits (`.fini_array`): what it published for its trust
/// domain goes with it — not from a `vfork` child (the flag is its
/// parent's), nor once sandboxed (the file went before the filter).
pub fn at_exit() {
    if super::silence::silenced() || !settle_identity() {
        return;
    }
    paying::sightings::withdraw();
}

/// The program's main thread calls `pthread_exit`. The process now ends
/// when its last thread does, and with our thread alive it would end only
/// once ours noticed: no decisions about what pays from here on (what
/// rests stays out; nothing that paid was taken out), so that in `process`
/// mode no thread of ours is there to wait for.
pub fn main_thread_ending() {
    paying::disable();
    catchup_thread::main_thread_ending();
}
