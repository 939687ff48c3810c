//! Retiring the thread: before a call that needs the process without it
//! (`fork`, `unshare`, `setns`, per-thread restrictions), it is asked to
//! stop, waited for until the kernel no longer counts it (bounded by
//! [`RETIRE_WAIT_NS`]), and no new one is created until [`release`];
//! after `fork`, the parent holds the brk heap's growth for
//! [`AFTER_FORK_QUIET_NS`] and the child starts with no thread of ours.
//! Never leaves a hold taken, never acts in a `vfork` child (its parent's
//! state is not its own).

use core::sync::atomic::{
    AtomicBool,
    Ordering::{Relaxed, SeqCst},
};

use super::run::wake_thread;
use super::spawn::previous_thread_gone;
use super::without::do_without_for_main_ended;
use super::{
    FORK_QUIET_UNTIL_NS, HOLD, LAST_PASS_CHANGING, MAIN_ENDED, NONE, RETIRES, RUNNING, SPAWN,
    STARTING, STARTS, STATE, STOPPING, TID, TID_STARTED, WITHOUT, WITHOUT_MAIN_ENDED,
};
use crate::core::{engine, identity};
use crate::os::sys;

/// The longest a retire waits for the thread, in all (it stops between two
/// VMAs, so it leaves in microseconds unless the machine is very busy).
const RETIRE_WAIT_NS: u64 = 200_000_000;
/// How long after `fork` returned in the parent the brk heap's growth
/// creates no thread. CPython >= 3.12 counts the process's threads right
/// then (it reads /proc/self/stat and warns that forking a multi-threaded
/// process may deadlock), through `fopen`, a small malloc: it sees the
/// heap's growth from before the fork (the sentinel is looked at by the
/// malloc after the growth). The growth stays news, held: the first malloc
/// after this time brings it. Other news (a large block, a raw map, a new
/// thread) is not held: a program that maps memory right after `fork`,
/// then waits, has it caught up.
pub const AFTER_FORK_QUIET_NS: u64 = 100_000_000;
/// The thread now forking is the process's main thread (set in `fork`'s
/// prepare handler, read in the child).
static FORKING_FROM_MAIN: AtomicBool = AtomicBool::new(true);

/// A call that needs the process without our thread is about to be made
/// (`unshare`, `setns`, `fork`, per-thread restrictions: see the module
/// doc): stops the thread, waits until the kernel no longer counts it
/// (bounded), and keeps any new one from being created until [`release`].
/// Returns whether [`release`] must be called (not in a `vfork` child,
/// which must leave its parent's state alone: its parent's thread is not
/// in the child's process).
pub fn retire() -> bool {
    // No thread in this process ever (`off`, `process`, catch-up off, or
    // before start-up): nothing to do, not even a system call.
    if SPAWN.load(Relaxed) == 0 {
        return false;
    }
    if identity::adopt_if_new_process() {
        engine::start_over();
    }
    if identity::shares_owners_memory() {
        return false;
    }
    // Sequentially consistent with `start_if_wanted` and `stays_for_news`:
    // a thread starting or staying either sees this hold or is seen here.
    HOLD.fetch_add(1, SeqCst);
    let deadline = sys::monotonic_ns().saturating_add(RETIRE_WAIT_NS);
    loop {
        let state = STATE.load(SeqCst);
        match state {
            RUNNING => {
                if STATE
                    .compare_exchange(RUNNING, STOPPING, SeqCst, Relaxed)
                    .is_ok()
                {
                    RETIRES.fetch_add(1, Relaxed);
                    wake_thread();
                }
                continue;
            }
            // Created by another of the program's threads: it first comes
            // into being.
            STARTING => sys::sched_yield(),
            STOPPING => {
                let left = deadline.saturating_sub(sys::monotonic_ns());
                sys::futex_wait(&STATE, STOPPING, left.min(1_000_000));
            }
            // Gone from our code; once gone from the kernel too, done (one
            // that stayed after all for news comes back as running).
            _ => {
                if previous_thread_gone(1_000_000) {
                    break;
                }
            }
        }
        if sys::monotonic_ns() >= deadline {
            break;
        }
    }
    true
}

/// `fork` is about to copy this process: [`retire`], and remember whether
/// the forking thread is the main one (in the child it is the main thread;
/// if it was another, its start routine will end it without `pthread_exit`,
/// which no hook sees).
pub fn before_fork() -> bool {
    if SPAWN.load(Relaxed) != 0 {
        FORKING_FROM_MAIN.store(sys::gettid() == sys::getpid(), Relaxed);
    }
    retire()
}

/// The call that needed the process without our thread is over.
pub fn release() {
    HOLD.fetch_sub(1, SeqCst);
}

/// `fork` returned in the parent (`retired`: what [`before_fork`] said):
/// the brk heap's growth is held for [`AFTER_FORK_QUIET_NS`].
pub fn after_fork_in_parent(retired: bool) {
    if SPAWN.load(Relaxed) != 0 {
        FORK_QUIET_UNTIL_NS.store(
            sys::monotonic_coarse_ns().saturating_add(AFTER_FORK_QUIET_NS),
            Relaxed,
        );
    }
    if retired {
        release();
    }
}

/// In a forked child (and a raw `clone` child at its first look): no thread
/// of ours was copied, and the calling thread is the new main thread.
pub fn reset_in_child() {
    FORK_QUIET_UNTIL_NS.store(0, Relaxed);
    STATE.store(NONE, Relaxed);
    TID.store(0, Relaxed);
    TID_STARTED.store(0, Relaxed);
    HOLD.store(0, Relaxed);
    let forked_by_main = FORKING_FROM_MAIN.swap(true, Relaxed);
    MAIN_ENDED.store(!forked_by_main, Relaxed);
    // The one thread of a child forked by another thread ends by returning
    // from its start routine, unseen: as after the main thread's end.
    if WITHOUT.load(Relaxed) & 0xffff == WITHOUT_MAIN_ENDED {
        WITHOUT.store(0, Relaxed);
    }
    if !forked_by_main {
        do_without_for_main_ended();
    }
    LAST_PASS_CHANGING.store(false, Relaxed);
    STARTS.store(0, Relaxed);
    RETIRES.store(0, Relaxed);
}
