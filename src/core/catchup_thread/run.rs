//! The thread's body: sets itself up (a descriptor table of its own),
//! then loops — a catch-up step when one is due (news taken as a pass
//! begins), a poll of `core::paying`'s decisions when one is due, a sleep
//! on the [`WAKE`] futex word until the sooner of the two — and leaves once
//! memory has settled and no decision is pending, or when asked to, or
//! when it must not stay (see `without`). Also the step a hook takes where
//! there is no thread. Every sleep is bounded ([`LONGEST_SLEEP_NS`], or
//! [`ALONE_CHECK_NS`] once the main thread ended); never creates a thread.

use core::sync::atomic::{
    AtomicU32,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};

use super::without::{for_good_without, restricted_behind_our_back};
use super::{
    ACTIVITY_AT_NS, ALIVE_AT_NS, BRK_NEWS_AT, BRK_NEWS_BYTES, GLIBC_THREADS, HOLD,
    LAST_PASS_CHANGING, LONGEST_SLEEP_NS, MAIN_ENDED, NEW_MEMORY, NONE, RETRY_AT_NS, RUNNING,
    SETTLE_NS, STARTING, STATE, STOPPING, TID, TID_STARTED,
};
use crate::core::catchup::{self, Stepped};
use crate::core::{engine, paying};
use crate::os::{self, proc, sys};

/// How often the thread looks whether it is the process's last thread, once
/// the program's main thread has ended (`pthread_exit`).
pub const ALONE_CHECK_NS: u64 = 5_000_000;
/// Bumped to wake the sleeping thread (news, a retire, the main thread's end).
static WAKE: AtomicU32 = AtomicU32::new(0);

pub(super) fn wake_thread() {
    WAKE.fetch_add(1, Release);
    sys::futex_wake(&WAKE);
}

/// The thread's body: steps while there is something to catch up or a
/// decision pending, then returns (its start routine then returns to
/// glibc). `step` runs one catch-up step, `second_duty` one poll of the
/// decisions (see [`second_duty_due`]).
pub fn thread_main(step: impl Fn() -> Option<Stepped>, second_duty: impl Fn()) {
    // What it opens (its reads of /proc) must never take the lowest free
    // descriptor of the program's table, which the program's next `open`
    // would have got: first of all. Should that fail, the thread may hold
    // copies of the program's descriptors (a pipe would not see its end
    // while it lives): it leaves at once, and news tries again later.
    let own_table = sys::own_empty_descriptor_table().is_ok();
    TID_STARTED.store(proc::thread_start_time(None).unwrap_or(0), Release);
    TID.store(sys::gettid(), Release);
    let _ = STATE.compare_exchange(STARTING, RUNNING, Release, Relaxed);
    if !own_table {
        RETRY_AT_NS.store(
            sys::monotonic_coarse_ns().saturating_add(SETTLE_NS),
            Relaxed,
        );
        let _ = STATE.compare_exchange(RUNNING, NONE, Release, Relaxed);
        let _ = STATE.compare_exchange(STOPPING, NONE, Release, Relaxed);
        sys::futex_wake(&STATE);
        return;
    }
    loop {
        let seen = WAKE.load(Acquire);
        let now = sys::monotonic_coarse_ns();
        ALIVE_AT_NS.store(now, Relaxed);
        if should_leave(now) {
            STATE.store(NONE, Release);
            break;
        }
        if catchup::due() {
            step_with_news(&step, now);
        }
        if second_duty_due() {
            second_duty();
        }
        if settled(sys::monotonic_coarse_ns()) {
            if stays_for_news() {
                continue;
            }
            break;
        }
        sys::futex_wait(&WAKE, seen, sleep_ns());
    }
    sys::futex_wake(&STATE);
}

/// Leaving because memory settled: the state says so first, and news that
/// came meanwhile keeps the thread after all (a hook that saw it running
/// created no other; sequentially consistent with `note_new_memory`:
/// either that hook sees it gone and creates a thread, or it sees the
/// news here).
fn stays_for_news() -> bool {
    STATE.store(NONE, SeqCst);
    (NEW_MEMORY.load(SeqCst) || paying::news_waiting())
        && HOLD.load(SeqCst) == 0
        && !for_good_without()
        && STATE
            .compare_exchange(NONE, RUNNING, SeqCst, Relaxed)
            .is_ok()
}

/// Whether the thread must leave now: asked to, catch-up or merging over
/// for good, the program's threads have all ended, or the program
/// restricted its main thread in a way this thread is not.
fn should_leave(now: u64) -> bool {
    STATE.load(Acquire) == STOPPING
        || !duties_enabled()
        || engine::merging_stopped()
        || alone()
        || restricted_behind_our_back(now)
}

/// Whether the program asked a thread to stop (checked between two VMAs).
#[inline]
pub fn asked_to_stop() -> bool {
    STATE.load(Relaxed) == STOPPING
}

/// Whether a round of decisions (`core::paying`) must stop between two
/// VMAs: asked to, or the program's last thread has ended (the process
/// ends when this thread leaves: an exit is never delayed by a round).
pub fn round_must_stop() -> bool {
    asked_to_stop() || (MAIN_ENDED.load(Relaxed) && alone())
}

/// Whether this is the process's last thread glibc knows of.
fn alone() -> bool {
    match GLIBC_THREADS.load(Relaxed) {
        // Without glibc's count, only once the main thread is known to
        // have ended (a read of `/proc`).
        0 if !MAIN_ENDED.load(Relaxed) => false,
        0 => match proc::main_state_and_threads() {
            // The main thread that ended is a zombie, still counted.
            Some((state, threads)) => threads <= 1 || (threads == 2 && state == b'Z'),
            None => false,
        },
        // SAFETY: `count` is the address of glibc's `__nptl_nthreads` (an aligned int
        // in libc's data, mapped for the process's life), found at start-up.
        count => unsafe { core::ptr::read_volatile(count as *const i32) <= 1 },
    }
}

/// How long to sleep: until the next step is due, at most until memory may
/// count as settled, and at most [`ALONE_CHECK_NS`] once the main thread
/// ended, [`LONGEST_SLEEP_NS`] otherwise (the main thread may end in ways no
/// hook sees: the thread then outlives the program's last one by at most
/// that); at least a millisecond.
fn sleep_ns() -> u64 {
    let mut wait = catchup_sleep_ns().min(LONGEST_SLEEP_NS);
    if MAIN_ENDED.load(Relaxed) {
        wait = wait.min(ALONE_CHECK_NS);
    }
    // Waking at the end of the quiet time only matters if the thread may
    // then leave (no decision pending).
    if quiet() && !paying::pending() {
        let quiet_for = sys::monotonic_coarse_ns().saturating_sub(ACTIVITY_AT_NS.load(Relaxed));
        wait = wait.min(SETTLE_NS.saturating_sub(quiet_for));
    }
    wait.max(1_000_000)
}

/// No news, no pass half done, and the last pass found nothing changing.
fn quiet() -> bool {
    !NEW_MEMORY.load(Relaxed) && !catchup::pass_in_progress() && !LAST_PASS_CHANGING.load(Relaxed)
}

/// One step, with the news settled: news is taken when a pass begins (so
/// that the pass surely walks where it lies), and a pass that finds memory
/// changing counts as activity.
fn step_with_news(step: &impl Fn() -> Option<Stepped>, now: u64) {
    let took_news = !catchup::pass_in_progress() && NEW_MEMORY.swap(false, Relaxed);
    if took_news {
        ACTIVITY_AT_NS.store(now, Relaxed);
    }
    match step() {
        Some(stepped) if stepped.pass_finished => {
            // News that came during the pass hurried the schedule, which
            // the step then set anew (backed off, after a pass that found
            // nothing): it must not wait for the back-off. (Within a pass
            // the pace holds; the news waits for the next pass.)
            if NEW_MEMORY.load(Relaxed) {
                catchup::hurry();
            }
            LAST_PASS_CHANGING.store(stepped.changing, Relaxed);
            if stepped.changing {
                ACTIVITY_AT_NS.store(sys::monotonic_coarse_ns(), Relaxed);
            }
            // The brk heap as this pass left it is what later growth is
            // measured from (it may have shrunk).
            if BRK_NEWS_AT.load(Relaxed) != usize::MAX {
                BRK_NEWS_AT.store(
                    os::program_break_now().saturating_add(BRK_NEWS_BYTES),
                    Relaxed,
                );
            }
        }
        Some(_) => {}
        // Another thread holds the scan: the news waits for the next step.
        None => {
            if took_news {
                NEW_MEMORY.store(true, Relaxed);
            }
        }
    }
}

/// Whether memory has settled: no news, no pass half done, the last pass
/// found nothing changing, and nothing changed for [`SETTLE_NS`]; and no
/// decision is pending.
fn settled(now: u64) -> bool {
    quiet()
        && now.saturating_sub(ACTIVITY_AT_NS.load(Relaxed)) >= SETTLE_NS
        && !paying::pending()
}


/// [`step_with_news`] for a hook's step (see [`hooks_step_instead`](super::hooks_step_instead)).
pub fn hook_step(step: impl Fn() -> Option<Stepped>) {
    step_with_news(&step, sys::monotonic_coarse_ns());
}

// ---------------------------------------------------------------------------
// The second duty: the decisions about what ksmd is given (`core::paying`)

/// Whether the thread has any duty in this process.
pub(super) fn duties_enabled() -> bool {
    catchup::enabled() || paying::enabled()
}

/// Whether the decisions want a poll now.
fn second_duty_due() -> bool {
    paying::due()
}

/// How long the catch-up lets the thread sleep, and the decisions: the
/// sooner of the two (a duty that is off asks for nothing).
fn catchup_sleep_ns() -> u64 {
    let catch_up = if catchup::enabled() {
        catchup::ns_until_due()
    } else {
        LONGEST_SLEEP_NS
    };
    if paying::pending() {
        catch_up.min(paying::ns_until_due())
    } else {
        catch_up
    }
}
