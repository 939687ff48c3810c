//! News: what the hooks tell the thread — memory no hook advised (a
//! glibc-mapped block, a new thread's arena, a raw map), the brk heap's
//! growth past [`BRK_NEWS_BYTES`] (held right after a `fork`), a decision
//! of `core::paying` pending. Cheap on the hot path (a load and a compare
//! while nothing changes); wakes a running thread, or asks `spawn` for
//! one. Never waits, never takes a step, never creates a thread itself.

use core::sync::atomic::Ordering::{Relaxed, SeqCst};

use super::run::wake_thread;
use super::spawn::start_if_wanted;
use super::{
    Spawn, ALIVE_AT_NS, BRK_NEWS_AT, BRK_NEWS_BYTES, FORK_QUIET_UNTIL_NS, GLIBC_THREADS,
    NEW_MEMORY, RUNNING, SETTLE_NS, SPAWN, STATE,
};
use crate::core::catchup;
use crate::os::{self, sys};

/// Turns the thread on for this process (`advise` over any allocator; the
/// engine calls it at start-up): `spawn` creates it, `glibc_threads` is
/// the address of glibc's thread count (0: unknown, `/proc` is read
/// instead), and with `watch_brk` the brk heap's growth is news.
pub fn enable(spawn: Spawn, glibc_threads: usize, watch_brk: bool) {
    GLIBC_THREADS.store(glibc_threads, Relaxed);
    SPAWN.store(spawn as usize, Relaxed);
    if watch_brk {
        BRK_NEWS_AT.store(
            os::program_break().saturating_add(BRK_NEWS_BYTES),
            Relaxed,
        );
    }
}

/// For the malloc family's hot path in `advise` over glibc: whether the brk
/// heap has grown past the point where it is news (two loads and a
/// compare; then [`note_brk_growth`]).
#[inline(always)]
pub fn brk_grew() -> bool {
    os::program_break_now() > BRK_NEWS_AT.load(Relaxed)
}

/// The brk heap grew by [`BRK_NEWS_BYTES`]: news, and the next such news is
/// as far again from here.
#[cold]
#[inline(never)]
pub fn note_brk_growth() {
    if brk_growth_held() {
        if !NEW_MEMORY.load(Relaxed) {
            NEW_MEMORY.store(true, SeqCst);
            catchup::hurry();
        }
        return;
    }
    next_brk_news();
    note_new_memory();
}

/// Whether the brk heap's growth is held right after a fork (see
/// `AFTER_FORK_QUIET_NS`: no thread may appear then): every malloc looks
/// again until then, and the first one after brings it.
pub fn brk_growth_held() -> bool {
    let held = STATE.load(Relaxed) != RUNNING
        && sys::monotonic_coarse_ns() < FORK_QUIET_UNTIL_NS.load(Relaxed);
    if held {
        BRK_NEWS_AT.store(0, Relaxed);
    }
    held
}

/// The brk heap's growth is never news again (the library fell silent):
/// the malloc family's sentinel stops firing.
pub fn forget_brk_news() {
    BRK_NEWS_AT.store(usize::MAX, SeqCst);
}

/// The brk heap's next news is [`BRK_NEWS_BYTES`] past where it is now
/// (for news that is only the decisions', `process` mode's: the engine
/// passes it on itself).
pub fn next_brk_news() {
    BRK_NEWS_AT.store(
        os::program_break_now().saturating_add(BRK_NEWS_BYTES),
        Relaxed,
    );
}

/// Something may have mapped memory no hook advises. Cheap while the
/// thread runs: a load, and a store, a clock read and a wake only when
/// the flag changes (at most once per pass). Without a thread, one is
/// created if it may be.
pub fn note_new_memory() {
    if !NEW_MEMORY.load(Relaxed) {
        // Sequentially consistent with the thread's leaving (see
        // `thread_main`): either it sees this news, or this sees it gone.
        NEW_MEMORY.store(true, SeqCst);
        let state = STATE.load(SeqCst);
        catchup::hurry();
        if state == RUNNING {
            wake_thread();
            if stale() {
                start_if_wanted();
            }
            return;
        }
    }
    // News already pending: a running thread takes it, unless it has not
    // looked around for long (a raw clone child's copy of "running", whose
    // own copy of the news flag may say pending for good).
    if STATE.load(Relaxed) != RUNNING || stale() {
        start_if_wanted();
    }
}

/// Whether a running thread has not looked around for a long time: it may
/// not exist in this process at all (a raw `clone` child's copy).
fn stale() -> bool {
    sys::monotonic_coarse_ns().saturating_sub(ALIVE_AT_NS.load(Relaxed)) > 4 * SETTLE_NS
}

/// A decision is pending (news for it, or a hook's poll found one waiting
/// with no thread): the thread is created if it may be. Where it runs, it
/// polls by itself; nothing is woken.
pub fn note_second_duty() {
    // A running thread that has not looked around for long may be a raw
    // `clone` child's copy of its parent's: then this process has none.
    if STATE.load(SeqCst) != RUNNING || stale() {
        start_if_wanted();
    }
}
