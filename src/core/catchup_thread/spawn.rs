//! Creating the thread: when news calls for one, and only where the
//! process may have it (not held by a retire, not for good without one,
//! not in a `vfork` child, not on a short alternate signal stack, not
//! under a seccomp filter), once the last one is gone from the kernel.
//! The interposition layer's [`Spawn`] makes it; a refusal backs off.
//! Never loops on a refusal, never waits longer than [`LEAVING_WAIT_NS`]
//! for the last thread; the thread's own setup once created (its empty
//! descriptor table) is the first thing `run::thread_main` does.

use core::sync::atomic::{
    AtomicU32,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};

use super::run::duties_enabled;
use super::without::{for_good_without, seccomp_filtered};
use super::{
    Spawn, ACTIVITY_AT_NS, ALIVE_AT_NS, HOLD, NONE, RETRY_AT_NS, RUNNING, SETTLE_NS, SPAWN,
    STARTING, STARTS, STATE, TID, TID_STARTED, WITHOUT, WITHOUT_CREATE_FAILED,
    WITHOUT_MAIN_ENDED, WITHOUT_SECCOMP,
};
use crate::core::{engine, identity};
use crate::os::{proc, sys};

/// Stack a hook needs left to create the thread (`pthread_create` runs on
/// it): on an alternate signal stack with less room, the news waits.
pub const SPAWN_STACK_BYTES: usize = 4096;
/// The longest news waits for a thread that is leaving to be gone before a
/// new one takes its stack.
const LEAVING_WAIT_NS: u64 = 10_000_000;
static FAILURES: AtomicU32 = AtomicU32::new(0);

/// Creates the thread if news calls for one and this process may have it.
#[cold]
#[inline(never)]
pub(super) fn start_if_wanted() {
    if !wanted() || !may_create_here() {
        return;
    }
    // The last thread may be leaving just now (it saw no news): it is
    // gone in microseconds.
    if !previous_thread_gone(LEAVING_WAIT_NS) {
        return;
    }
    if !claim_start() {
        return;
    }
    let now = sys::monotonic_coarse_ns();
    ACTIVITY_AT_NS.store(now, Relaxed);
    ALIVE_AT_NS.store(now, Relaxed);
    // SAFETY: `SPAWN` is only ever stored from a `Spawn` (a fn pointer of that
    // exact type) and read after the non-zero check of `wanted`, which
    // `start_if_wanted` makes first.
    let spawn: Spawn = unsafe { core::mem::transmute::<usize, Spawn>(SPAWN.load(Relaxed)) };
    match spawn() {
        Ok(()) => started(),
        Err(errno) => refused(errno, now),
    }
}

/// Whether a thread is wanted and allowed in this process now: there is a
/// [`Spawn`] and a duty, merging goes on, no retire holds, no reason for
/// good to do without, and no refusal's back-off is running.
fn wanted() -> bool {
    if SPAWN.load(Relaxed) == 0 || !duties_enabled() || engine::merging_stopped() {
        return false;
    }
    if HOLD.load(SeqCst) != 0 || for_good_without() {
        return false;
    }
    if sys::monotonic_coarse_ns() < RETRY_AT_NS.load(Relaxed) {
        return false;
    }
    true
}

/// Whether the calling thread may create one here: in a process of its
/// own (not a `vfork` child), with none of ours there already, with
/// stack to spare, and not under a seccomp filter (which makes the
/// process do without for good).
fn may_create_here() -> bool {
    // A raw clone child owns a copy of its parent's statics (a thread that
    // is not its own included); a vfork child runs in its parent's memory
    // and must create nothing there.
    if identity::adopt_if_new_process() {
        engine::start_over();
    }
    if identity::shares_owners_memory() {
        return false;
    }
    match STATE.load(Acquire) {
        NONE => {}
        // In the owner, a running thread that is slow to look around is
        // still running.
        _ => return false,
    }
    if sys::alt_stack_room().is_some_and(|room| room < SPAWN_STACK_BYTES) {
        return false;
    }
    match seccomp_filtered() {
        Some(false) => true,
        Some(true) => {
            WITHOUT.store(WITHOUT_SECCOMP, Relaxed);
            false
        }
        // Not known now (the buffer is busy): the next news asks again.
        None => false,
    }
}

/// Takes the state from none to starting, unless another hook did, or a
/// retire began meanwhile (see `retire`: either it sees this start, or
/// this sees its hold; the main thread's end retires too).
fn claim_start() -> bool {
    if STATE
        .compare_exchange(NONE, STARTING, SeqCst, Relaxed)
        .is_err()
    {
        return false;
    }
    if HOLD.load(SeqCst) != 0 || for_good_without() {
        STATE.store(NONE, Release);
        return false;
    }
    true
}

/// The interposition layer created the thread.
fn started() {
    STARTS.fetch_add(1, Relaxed);
    FAILURES.store(0, Relaxed);
    // A refusal is over; a reason for good (the main thread may
    // have ended meanwhile) stays.
    let _ = WITHOUT.fetch_update(SeqCst, SeqCst, |w| {
        (w & 0xffff == WITHOUT_CREATE_FAILED).then_some(0)
    });
    let _ = STATE.compare_exchange(STARTING, RUNNING, Release, Relaxed);
}

/// `pthread_create` refused with `errno` (at `now`): the process does
/// without until the back-off is over.
fn refused(errno: i32, now: u64) {
    // No retry loop: the next news after a back-off (1 s, doubling
    // up to 64 s) tries again.
    let failures = FAILURES.fetch_add(1, Relaxed).min(6);
    let _ = WITHOUT.fetch_update(SeqCst, SeqCst, |w| {
        (!matches!(w & 0xffff, WITHOUT_SECCOMP | WITHOUT_MAIN_ENDED))
            .then_some(WITHOUT_CREATE_FAILED | (errno as u32) << 16)
    });
    RETRY_AT_NS.store(now.saturating_add(SETTLE_NS << failures), Relaxed);
    STATE.store(NONE, Release);
}

/// Whether the last thread (which may have left our code but not yet the
/// kernel) is gone; waits up to `wait_ns` for it. Forgets it once gone.
pub(super) fn previous_thread_gone(wait_ns: u64) -> bool {
    let tid = TID.load(Acquire);
    if tid == 0 {
        return true;
    }
    if sys::thread_is_ours(tid) && !id_still_ours(tid) {
        // Gone long ago: a thread of the program has its id now.
        let _ = TID.compare_exchange(tid, 0, Relaxed, Relaxed);
        return true;
    }
    if !sys::wait_until_thread_gone(tid, wait_ns) {
        return false;
    }
    let _ = TID.compare_exchange(tid, 0, Relaxed, Relaxed);
    true
}

/// Whether live thread `tid` is the one of ours that had that id (it
/// started when ours did), as far as can be told: when either start time
/// is unknown, it may be.
fn id_still_ours(tid: i32) -> bool {
    let started = TID_STARTED.load(Acquire);
    started == 0 || proc::thread_start_time(Some(tid)).is_none_or(|now| now == started)
}
