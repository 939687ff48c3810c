//! Register only what pays: the library decides, region by region, what
//! ksmd is given, from ksmd's own verdict, and keeps revising it
//! (`KSMAUTO_REGISTER=paying`; `all`, the default until it meets issue
//! 21's targets, gives ksmd everything that qualifies, as merge-any does).
//!
//! **Sightings first** ([`sightings`], `KSMAUTO_SIGHTINGS=on`, off by
//! default): a piece first met is read and hashed; one with no sign of a
//! copy in this process or in another process of the same user is taken
//! out at once, without a probation, and rests; it is given back when a
//! copy's sighting turns up. The others, and every piece where sightings
//! cannot be used, have their probation:
//!
//! **Evidence.** After ksmd has given a region [`PROBATION_SCANS`] full
//! scans, the region's pages are counted in `/proc/self/pagemap`: a page
//! ksmd merged is mapped more than once (a KSM page, or the zero page),
//! which the kernel tells a process about its own pages without
//! privilege. `/proc/self/smaps` says which VMAs are given to ksmd (`mg`):
//! only those are judged, and a region's probation starts when it is seen
//! given. A region pays when at least one present page in 64 is shared
//! (`policy::paying::pays`: the kernel's break-even). Pages shared since a
//! `fork` count as shared (they cannot be told from merged ones): such a
//! region stays. A `fork` starts a new epoch: probations begun before it
//! begin again.
//!
//! **Decisions.** Regions are pieces of qualifying VMAs between 2 MiB
//! boundaries (a VMA often holds data of several kinds). One that does not
//! pay is taken back out (`os::ksm::unmark`, in both engines); adjacent
//! ones as one range. Taking a region out unmerges what little it had
//! merged (below break-even), and splits its VMA when it is not the whole
//! VMA: the VMAs this adds stay within 5 % (+2) of the process's count,
//! the largest ranges first (`policy::paying::split_budget`). A region
//! that pays stays, and is looked at again on later ticks; once it stops
//! paying it is taken out too.
//!
//! **Resting.** A region taken out is recorded in the resting table
//! ([`resting`]), which every advice subtracts as it subtracts exclusions
//! (so the catch-up does not give it back), and is probed again — given
//! back to ksmd for a probation — on ticks of ksmd's full scans, one slice
//! of its VMA at a time, less often after each probe that finds nothing
//! (`policy::paying::rest_due`). Ticks are numbered from boot, so every
//! process probes on the same ones: a duplicate is found only while both
//! copies are given to ksmd. A probe that pays makes the resting regions
//! near it due at once. Between ticks, rounds look at resting regions'
//! content (a few sampled pages, after every full scan, at most every
//! `LOOK_SECONDS`): one whose content changed and then held still is
//! probed at once (data that became duplicate after it was taken out). Exclusions always win: a probe never gives back an
//! excluded page (`engine::register_again`).
//!
//! **Where it runs.** On the library's thread (`core::catchup_thread`, its
//! second duty), in both engines, while any region is on probation or
//! resting, or memory arrived that was not looked at yet; never on a
//! program's thread, never while a hook runs, never holding a lock the
//! program could wait for. A round reads smaps and pagemap and is paced
//! by its own CPU time. Where the library may have no thread, nothing is
//! decided (everything stays registered) and the report says why.
//!
//! Never allocates (the region table is a zeroed static touched only as
//! far as used), never waits.

mod plan;
pub mod resting;
mod round;
pub mod sightings;
mod table;

use core::cell::UnsafeCell;
use core::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};

pub use crate::core::policy::paying::PROBATION_SCANS;
use crate::core::policy::paying::{tick_of, LOOK_SECONDS, TICK_SCANS};
use crate::core::policy::VmaVerdict;
use crate::os::proc::MapsLine;
use crate::os::{ksm, sys};
use table::State;

/// How often the thread looks at ksmd's clock while decisions are pending.
pub const POLL_NS: u64 = 250_000_000;
/// How often it looks whether ksmd was switched back on.
const KSMD_OFF_POLL_NS: u64 = 1_000_000_000;
/// A piece being filled when first met is sighted again this much later
/// (before ksmd's first visit, at most paces allow).
const SIGHT_AGAIN_NS: u64 = 1_000_000_000;
/// Memory that arrived empty is looked for this long after the news.
const SIGHT_PATIENCE_NS: u64 = 30_000_000_000;
/// When the last news was taken up by a round.
static LAST_NEWS_NS: AtomicU64 = AtomicU64::new(0);
/// Memory that arrived empty waits to be sighted (the thread stays).
static EMPTY_WAITS: AtomicBool = AtomicBool::new(false);
/// After a round that took `t` of CPU time, the next waits `PACE * t`.
const PACE: u64 = 40;
/// Qualifying memory given to ksmd since the last look that
/// is news (a short command's few mappings are not).
pub const NEWS_BYTES: usize = 4 << 20;

static ENABLED: AtomicBool = AtomicBool::new(false);
static PROCESS_MODE: AtomicBool = AtomicBool::new(false);
/// Pieces are first judged on sight (`KSMAUTO_SIGHTINGS`).
static SIGHTINGS: AtomicBool = AtomicBool::new(false);
/// Memory arrived that no round has looked at.
static NEWS: AtomicBool = AtomicBool::new(false);
static MAPPED_SINCE_NEWS: AtomicUsize = AtomicUsize::new(0);
/// Bumped before every `fork` (see the module doc).
static EPOCH: AtomicU32 = AtomicU32::new(0);
/// A round (or a poll) runs; only its holder touches [`WORK`].
static BUSY: AtomicBool = AtomicBool::new(false);
static NEXT_POLL_NS: AtomicU64 = AtomicU64::new(0);
/// No round before this time (pacing).
static NOT_BEFORE_NS: AtomicU64 = AtomicU64::new(0);
/// The full scan from which a round has something to do (`u64::MAX`:
/// nothing until news).
static NEXT_ROUND_SCAN: AtomicU64 = AtomicU64::new(0);
/// The tick of the last complete round (`u64::MAX`: none yet).
static LAST_TICK: AtomicU64 = AtomicU64::new(u64::MAX);
static KSMD_SCANS: AtomicBool = AtomicBool::new(true);
static LAST_SCANS: AtomicU64 = AtomicU64::new(0);

struct WorkCell(UnsafeCell<round::Work>);
// SAFETY: only the thread holding `BUSY` (a try-lock) touches the cell.
unsafe impl Sync for WorkCell {}
// SAFETY: all-zero bytes are the empty `Work` (integers, arrays of them and
// `false`), the state a fresh process starts from.
static WORK: WorkCell = unsafe { core::mem::zeroed() };

/// Turns the decisions on for this process (`process` or `advise` engine,
/// `KSMAUTO_REGISTER=paying`): only where ksmd's clock can be read.
pub fn enable(process_mode: bool, sightings: bool) -> bool {
    if ksm::full_scans().is_none() {
        return false;
    }
    PROCESS_MODE.store(process_mode, Relaxed);
    SIGHTINGS.store(sightings, Relaxed);
    ENABLED.store(true, Release);
    true
}

/// Off for good (the process sandboxed itself, stopped merging, or
/// switched merge-any off itself).
pub fn disable() {
    ENABLED.store(false, Release);
}

pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// Memory may have appeared: the next poll walks.
pub fn note_news() {
    if enabled() && !NEWS.load(Relaxed) {
        // Sequentially consistent with the thread's leaving (see
        // `catchup_thread::stays_for_news`).
        NEWS.store(true, SeqCst);
    }
}

/// A qualifying mapping of `len` bytes was given to ksmd. Returns
/// whether it is news (see [`NEWS_BYTES`]).
pub fn note_mapped(len: usize) -> bool {
    if !enabled() {
        return false;
    }
    let total = MAPPED_SINCE_NEWS.fetch_add(len, Relaxed).saturating_add(len);
    if total < NEWS_BYTES {
        return false;
    }
    MAPPED_SINCE_NEWS.store(0, Relaxed);
    note_news();
    true
}

/// Whether news waits for a round (the thread stays for it).
pub fn news_waiting() -> bool {
    enabled() && NEWS.load(SeqCst)
}

/// Whether decisions are pending: news not looked at, regions on
/// probation or resting (a re-probe will come), ksmd scanning.
pub fn pending() -> bool {
    enabled()
        && KSMD_SCANS.load(Relaxed)
        && (NEWS.load(Relaxed)
            || EMPTY_WAITS.load(Relaxed)
            || PROBATION.load(Relaxed) > 0
            || RESTING.load(Relaxed) > 0)
}

/// Whether the thread should poll now.
pub fn due() -> bool {
    enabled() && sys::monotonic_coarse_ns() >= NEXT_POLL_NS.load(Relaxed)
}

/// How long until the next poll.
pub fn ns_until_due() -> u64 {
    NEXT_POLL_NS
        .load(Relaxed)
        .saturating_sub(sys::monotonic_coarse_ns())
}

/// `fork` is about to copy this process: a new evidence epoch.
pub fn before_fork() {
    EPOCH.fetch_add(1, Relaxed);
}

/// In a forked child: the table (the child's VMAs are the parent's, with
/// their flags) carries on; the counts of what was done start over.
pub fn reset_in_child() {
    sightings::in_forked_child();
    BUSY.store(false, Release);
    NEXT_POLL_NS.store(0, Relaxed);
    counts::reset();
}

/// A poll on the thread (it saw [`due`]): reads ksmd's clock and runs a
/// round if one has something to do. `judge` is the engine's verdict on a
/// VMA; `permitted` whether decisions may change anything now.
pub fn step(
    judge: &impl Fn(&MapsLine, Option<&MapsLine>) -> VmaVerdict,
    permitted: impl Fn() -> bool,
) {
    if BUSY.swap(true, Acquire) {
        return;
    }
    let now = sys::monotonic_coarse_ns();
    NEXT_POLL_NS.store(now.saturating_add(POLL_NS), Relaxed);
    if let Some(scans) = clock(now) {
        if round_wanted(scans, now) && permitted() {
            run_round(scans, now, judge);
        }
    }
    BUSY.store(false, Release);
}

/// ksmd's full-scan count, if it scans.
fn clock(now: u64) -> Option<u64> {
    let scans = ksm::full_scans()?;
    // A count that moves needs no second look at `run`.
    let moved = scans != LAST_SCANS.swap(scans, Relaxed);
    if moved {
        note_full_scan_end();
    }
    let runs = moved || ksm::ksmd_scans();
    KSMD_SCANS.store(runs, Relaxed);
    if !runs {
        NEXT_POLL_NS.store(now.saturating_add(KSMD_OFF_POLL_NS), Relaxed);
        return None;
    }
    Some(scans)
}

/// ksmd's `pages_sharing` when the thread last saw a full scan end.
static SHARING_AT_SCAN_END: AtomicU64 = AtomicU64::new(u64::MAX);
/// It rose between the last two ends seen: ksmd still merges on the host.
static HOST_MERGING: AtomicBool = AtomicBool::new(false);

/// A full scan ended (the poll after it): did ksmd merge more during it?
fn note_full_scan_end() {
    let Some(sharing) = ksm::pages_sharing() else {
        HOST_MERGING.store(false, Relaxed);
        return;
    };
    let before = SHARING_AT_SCAN_END.swap(sharing, Relaxed);
    HOST_MERGING.store(before != u64::MAX && sharing > before, Relaxed);
}

fn round_wanted(scans: u64, now: u64) -> bool {
    (NEWS.load(Relaxed) || scans >= NEXT_ROUND_SCAN.load(Relaxed))
        && now >= NOT_BEFORE_NS.load(Relaxed)
}

fn run_round(scans: u64, now: u64, judge: &impl Fn(&MapsLine, Option<&MapsLine>) -> VmaVerdict) {
    let news = NEWS.swap(false, SeqCst);
    if news {
        LAST_NEWS_NS.store(now, Relaxed);
    }
    let tick = tick_of(scans);
    let last_tick = match LAST_TICK.load(Relaxed) {
        u64::MAX => tick,
        t => t.min(tick),
    };
    let clock = round::Clock {
        scans,
        tick,
        last_tick,
        epoch: EPOCH.load(Relaxed) as u8,
        seconds: seconds_of(now),
        host_merging: HOST_MERGING.load(Relaxed),
    };
    let cpu = sys::thread_cpu_ns();
    // SAFETY: `BUSY` is held.
    let work = unsafe { &mut *WORK.0.get() };
    let outcome = round::round(
        work,
        clock,
        PROCESS_MODE.load(Relaxed),
        SIGHTINGS.load(Relaxed),
        judge,
    );
    let spent = sys::thread_cpu_ns().saturating_sub(cpu);
    NOT_BEFORE_NS.store(now.saturating_add(spent.saturating_mul(PACE)), Relaxed);
    counts::round(outcome.vmas, outcome.splits);
    if outcome.incomplete {
        if news {
            NEWS.store(true, SeqCst);
        }
        return;
    }
    LAST_TICK.store(tick, Relaxed);
    let (next, looks_only, sight_pending) = summarize(&work.table, scans, tick, work.looks_available());
    NEXT_ROUND_SCAN.store(next, Relaxed);
    // Memory that arrived empty is sighted once it holds something: looked
    // for again soon, for a while after the news that brought it (a range
    // reserved and never written does not keep rounds coming).
    let empty_waits = outcome.empty_unsighted
        && now.saturating_sub(LAST_NEWS_NS.load(Relaxed)) < SIGHT_PATIENCE_NS;
    if empty_waits {
        NEXT_ROUND_SCAN.store(scans, Relaxed);
    }
    EMPTY_WAITS.store(empty_waits, Relaxed);
    if sight_pending || empty_waits {
        NOT_BEFORE_NS.fetch_max(now.saturating_add(SIGHT_AGAIN_NS), Relaxed);
    }
    if looks_only {
        // Nothing but content looks before the next tick: not before the
        // next look is due.
        let look = now.saturating_add(LOOK_SECONDS as u64 * 1_000_000_000);
        NOT_BEFORE_NS.fetch_max(look, Relaxed);
    }
}

/// Monotonic seconds, low 16 bits (probations last less than 18 hours).
fn seconds_of(ns: u64) -> u16 {
    (ns / 1_000_000_000) as u16
}

static PROBATION: AtomicU32 = AtomicU32::new(0);
static PAYING: AtomicU32 = AtomicU32::new(0);
static RESTING: AtomicU32 = AtomicU32::new(0);
static PAYING_BYTES: AtomicU64 = AtomicU64::new(0);
static PROBATION_BYTES: AtomicU64 = AtomicU64::new(0);
static RESTING_BYTES: AtomicU64 = AtomicU64::new(0);

/// Counts the table by state (for [`pending`] and the report) and returns
/// the full scan from which the next round has something to do, whether
/// only content looks want it before the next tick, and whether a piece
/// being filled waits to be judged on sight.
fn summarize(table: &table::Table, scans: u64, tick: u64, looks: bool) -> (u64, bool, bool) {
    let (mut probation, mut paying, mut resting) = (0u32, 0u32, 0u32);
    let (mut paying_bytes, mut resting_bytes, mut probation_bytes) = (0u64, 0u64, 0u64);
    let mut next = u64::MAX;
    // The round content looks want (`u64::MAX`: none).
    let mut looks_next = u64::MAX;
    // Pieces being filled when first met want a look again soon.
    let mut sight_pending = false;
    let next_tick = (tick + 1).saturating_mul(TICK_SCANS);
    table.for_each(|r| {
        let bytes = r.range.len() as u64;
        match r.state {
            State::Probation => {
                probation += 1;
                sight_pending |= r.sight_pending;
                probation_bytes += bytes;
                let ran = (scans as u32).wrapping_sub(r.mark) as u64;
                // Waiting for time, or for the host to stop merging (see
                // `policy::paying::take_out_now`): looked at again after
                // each scan.
                let more = PROBATION_SCANS.saturating_sub(ran).max(1);
                next = next.min(scans + more);
            }
            State::Paying => {
                paying += 1;
                paying_bytes += bytes;
                next = next.min(if r.again { scans } else { next_tick });
            }
            State::Resting => {
                resting += 1;
                resting_bytes += bytes;
                next = next.min(if r.again { scans } else { next_tick });
                // Content looks: a round after every full scan (and
                // `LOOK_SECONDS`).
                if looks {
                    looks_next = scans + 1;
                }
            }
        }
    });
    PROBATION.store(probation, Relaxed);
    PAYING.store(paying, Relaxed);
    RESTING.store(resting, Relaxed);
    PAYING_BYTES.store(paying_bytes, Relaxed);
    PROBATION_BYTES.store(probation_bytes, Relaxed);
    RESTING_BYTES.store(resting_bytes, Relaxed);
    if sight_pending {
        // Now, paced by `SIGHT_AGAIN_NS` (see `run_round`).
        return (scans, false, true);
    }
    // Looks alone want the next round sooner than anything else does.
    (next.min(looks_next), looks_next < next, false)
}

/// What was done, counted (for the report).
pub(crate) mod counts {
    use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

    static TAKEN_OUT: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    static GIVEN_BACK: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    static FOUND_PAYING: AtomicU64 = AtomicU64::new(0);
    static ON_CHANGE: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    static ON_SIGHT: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    static ON_SIGHTING: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    static REFUSED: AtomicU64 = AtomicU64::new(0);
    static DEFERRED: AtomicU64 = AtomicU64::new(0);
    static ROUNDS: AtomicU64 = AtomicU64::new(0);
    static JUDGED: AtomicU64 = AtomicU64::new(0);
    static SPLITS: AtomicU64 = AtomicU64::new(0);

    pub fn changed(given_back: bool, bytes: u64) {
        let pair = if given_back { &GIVEN_BACK } else { &TAKEN_OUT };
        pair[0].fetch_add(1, Relaxed);
        pair[1].fetch_add(bytes, Relaxed);
    }

    /// A change made, by why it was decided on: given back on change or
    /// on a sighting elsewhere, taken out on sight.
    pub fn by_cause(given_back: bool, cause: super::plan::Cause, bytes: u64) {
        use super::plan::Cause;
        let pair = match (given_back, cause) {
            (_, Cause::Schedule) => return,
            (true, Cause::Content) => &ON_CHANGE,
            (false, Cause::Content) => &ON_SIGHT,
            (_, Cause::Sighting) => &ON_SIGHTING,
        };
        pair[0].fetch_add(1, Relaxed);
        pair[1].fetch_add(bytes, Relaxed);
    }

    pub fn found_paying() {
        FOUND_PAYING.fetch_add(1, Relaxed);
    }

    pub fn refused_by_budget() {
        REFUSED.fetch_add(1, Relaxed);
    }

    /// A change the round's plan had no room for (made at the next round).
    pub fn deferred() {
        DEFERRED.fetch_add(1, Relaxed);
    }

    pub fn judged(_present: u32) {
        JUDGED.fetch_add(1, Relaxed);
    }

    pub fn round(_vmas: u64, splits: u64) {
        ROUNDS.fetch_add(1, Relaxed);
        SPLITS.store(splits, Relaxed);
    }

    pub fn reset() {
        for a in TAKEN_OUT.iter().chain(&GIVEN_BACK).chain(&ON_CHANGE).chain(&ON_SIGHT).chain(&ON_SIGHTING) {
            a.store(0, Relaxed);
        }
        for a in [&FOUND_PAYING, &REFUSED, &DEFERRED, &ROUNDS, &JUDGED] {
            a.store(0, Relaxed);
        }
    }

    pub(super) fn snapshot() -> super::Stats {
        super::Stats {
            taken_out: (TAKEN_OUT[0].load(Relaxed), TAKEN_OUT[1].load(Relaxed)),
            given_back: (GIVEN_BACK[0].load(Relaxed), GIVEN_BACK[1].load(Relaxed)),
            given_back_on_change: (ON_CHANGE[0].load(Relaxed), ON_CHANGE[1].load(Relaxed)),
            taken_out_on_sight: (ON_SIGHT[0].load(Relaxed), ON_SIGHT[1].load(Relaxed)),
            given_back_on_sighting: (ON_SIGHTING[0].load(Relaxed), ON_SIGHTING[1].load(Relaxed)),
            found_paying: FOUND_PAYING.load(Relaxed),
            refused: REFUSED.load(Relaxed),
            deferred: DEFERRED.load(Relaxed),
            rounds: ROUNDS.load(Relaxed),
            judged: JUDGED.load(Relaxed),
            splits: SPLITS.load(Relaxed),
            ..super::Stats::default()
        }
    }
}

/// What the decisions did and where they stand, for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Decisions were on in this process.
    pub enabled: bool,
    /// Regions on probation, paying (and their bytes), resting (and theirs)
    /// after the last round.
    pub probation: u32,
    pub probation_bytes: u64,
    pub paying: u32,
    pub paying_bytes: u64,
    pub resting: u32,
    pub resting_bytes: u64,
    /// Ranges taken out, and given back (re-probes): (ranges, bytes).
    pub taken_out: (u64, u64),
    pub given_back: (u64, u64),
    /// Of those given back, the ones a content look found changed and
    /// then still: (ranges, bytes).
    pub given_back_on_change: (u64, u64),
    /// Of those taken out, the ranges taken out when first met, their
    /// content sighted nowhere else (`sightings`): (ranges, bytes).
    pub taken_out_on_sight: (u64, u64),
    /// Of those given back, the ranges given back because a copy of their
    /// content was sighted in another process: (ranges, bytes).
    pub given_back_on_sighting: (u64, u64),
    /// Re-probes that found a region paying.
    pub found_paying: u64,
    /// Ranges left registered for lack of VMA budget.
    pub refused: u64,
    /// Changes left to the next round, the plan full.
    pub deferred: u64,
    pub rounds: u64,
    /// Regions judged.
    pub judged: u64,
    /// VMA splits the decisions held at the last round.
    pub splits: u64,
}

pub fn stats() -> Stats {
    Stats {
        enabled: enabled(),
        probation: PROBATION.load(Relaxed),
        probation_bytes: PROBATION_BYTES.load(Relaxed),
        paying: PAYING.load(Relaxed),
        paying_bytes: PAYING_BYTES.load(Relaxed),
        resting: RESTING.load(Relaxed),
        resting_bytes: RESTING_BYTES.load(Relaxed),
        ..counts::snapshot()
    }
}
