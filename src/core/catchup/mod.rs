//! Catch-up: makes mergeable the private anonymous memory no hook saw.
//!
//! glibc grows the brk heap with an internal `sbrk` (each step a VMA without
//! the mergeable flag), maps thread arenas and large blocks with an internal
//! `mmap`, and runtimes map memory with raw `syscall(SYS_mmap)`. None of that
//! passes through an interposed symbol, so the `advise` engine periodically
//! walks the process's VMAs and advises every qualifying VMA it has not
//! advised before — always the **whole VMA**, so the address space is never
//! fragmented (a VMA has one set of flags; advising all of it never splits
//! it, and the kernel merges it with mergeable neighbours).
//!
//! **When it runs.** On the library's catch-up thread
//! (`core::catchup_thread`), which exists only while there is something to
//! catch up: it takes [`thread_step`]s while news keeps coming and leaves
//! once passes find nothing new. A VMA that is new or still changing is left
//! for a pass that finds it unchanged (see `consider`). Where the process
//! can have no thread of ours (a seccomp filter, a refused
//! `pthread_create`), the `mmap` hooks (every `counters::CALLS_PER_ROUND`th
//! call) take [`poll`]'s paced step instead.
//! A **pass** over all VMAs is cut into **steps**: one step examines at most
//! [`STEP_VMAS`] VMAs (and stops early after [`STEP_BUDGET_NS`], or as soon
//! as the thread is asked to stop), then the next step waits [`PACE`] times
//! the CPU time this one took, so the scan uses a bounded share of a CPU,
//! however many VMAs the process has. A pass that is over waits the interval
//! (`KSMAUTO_SCAN_INTERVAL`), doubled up to 32× while passes find nothing
//! new, back to the base as soon as one does or news arrives.
//!
//! **Where each part lives.** This file: the public surface, the static
//! scan state and the step's timing. `pass`: the `Pass` value a step
//! carries (its state, budget, open maps, `judge` and `advise`). `walk`:
//! how a step walks the VMAs (`PROCMAP_QUERY` or the text of
//! `/proc/self/maps`). `consider`: the decision on one VMA and the check
//! after each advice (races with remapping). `memory`: what the previous
//! pass saw.
//!
//! Never allocates (the remembered VMAs are a zero-initialised static
//! whose pages are touched only as far as they are used, and only in
//! `advise` mode; a forked child starts over through [`reset`]), never
//! blocks (a thread that finds a step running returns), and stays within a
//! small stack: a step needs under [`STEP_STACK_BYTES`], and is put off
//! when a signal handler on an alternate stack has less than that left.


mod consider;
mod memory;
mod pass;
mod walk;

use core::cell::UnsafeCell;
use core::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};

use self::memory::Memory;
use self::pass::{Budget, Cursor, Pass, FRESH_CURSOR};
use self::walk::{StepEnd, SCAN_LINES};
use super::policy::{Range, VmaVerdict};
use crate::os::proc::MapsLine;
use crate::os::sys;

pub use self::memory::REMEMBERED_VMAS;
pub use self::walk::judged_at;

const MAX_BACKOFF_SHIFT: u32 = 5;
/// The most VMAs one step examines.
pub const STEP_VMAS: usize = 512;
/// A step stops once it has run this long, even with VMAs left to examine:
/// time on a program's thread (a hook's step delays its call), CPU time on
/// the catch-up thread (waiting for the address-space lock, held by the
/// program reading its smaps or by ksmd scanning it, costs no one).
pub const STEP_BUDGET_NS: u64 = 2_000_000;
/// After a step that took `t` of CPU time, the next one waits `PACE * t`:
/// stepping through a pass uses at most 1/`PACE` of a CPU. (CPU time, not
/// time: a step that waits for the address-space lock — the program reading
/// `/proc/self/smaps`, mapping, faulting — costs the program nothing more
/// for it, and must not hold the catch-up back forty times as long.)
pub const PACE: u64 = 40;
/// Stack a step may need below [`poll`] (measured: under 1 KiB, with room for
/// the `madvise` path). On an alternate signal stack with less room left —
/// a handler that allocates on a 4 KiB stack, most of which the kernel's
/// signal frame takes — the step is left for a later call.
pub const STEP_STACK_BYTES: usize = 2048;
/// Longest VMA name we need: `[anon:` + 80 bytes + `]` (the kernel's limit
/// for names set with `PR_SET_VMA`); file paths are not needed (a longer
/// one is looked up again without its name).
const NAME_BYTES: usize = 128;

/// Everything only the thread holding `scanning` touches.
struct Work {
    memory: Memory,
    cursor: Cursor,
    name: [u8; NAME_BYTES],
    check_name: [u8; NAME_BYTES],
}

/// Per-process scan state. Page-aligned, the remembered VMAs first, so they
/// can be handed back with `madvise`.
#[repr(C)]
struct State {
    work: UnsafeCell<Work>,
    enabled: AtomicBool,
    scanning: AtomicBool,
    next_scan_ns: AtomicU64,
    /// Where the next step resumes the pass in progress (0: a new pass).
    next_resume: AtomicUsize,
    backoff_shift: AtomicU64,
    passes: AtomicU64,
    steps: AtomicU64,
    vmas: AtomicU64,
    revoked: AtomicU64,
    /// VMAs the last finished pass examined: the process's VMA count then.
    last_pass_vmas: AtomicU64,
}

// SAFETY: every field but `work` is atomic, and `work` is only touched by
// the thread that set `scanning` (until it clears it), or by `reset` in a
// forked child, where no other thread exists.
unsafe impl Sync for State {}

// SAFETY: all-zero bytes are a valid `State`: atomics, integers, `false`
// bools, integer arrays, and a `Cursor` whose `Option<Below>` reads as
// `Some` of an all-zero `Below` (every field of which may be zero).
static STATE: State = unsafe { core::mem::zeroed() };
static INTERVAL_NS: AtomicU64 = AtomicU64::new(0);
/// `vm.max_map_count`, read at the first step (0: not yet). once_cell:
/// `race::OnceNonZeroUsize`, but it cannot be a dependency (Cargo.toml).
static MAX_MAP_COUNT: AtomicU64 = AtomicU64::new(0);

/// Whether the process is close enough to `vm.max_map_count` (by its VMA
/// count at the last finished pass) that no advice may split a VMA: within
/// 1/32 of the limit, at least 64 VMAs. Every split is one VMA the program
/// may need for its own mappings.
pub fn map_count_headroom_low() -> bool {
    let max = MAX_MAP_COUNT.load(Relaxed);
    if max == 0 {
        return false;
    }
    let reserve = (max / 32).max(64);
    STATE.last_pass_vmas.load(Relaxed).saturating_add(reserve) >= max
}

/// Turns catch-up on with a base interval; `0` leaves it off. The first scan
/// is due one interval from now: a command that is over sooner (`ls`, `true`
/// in a shell pipeline) costs no scan, stays silent at exit, and would not
/// have lived long enough for ksmd to merge anything anyway.
pub fn enable(interval_ms: u64) {
    if interval_ms > 0 {
        let interval = interval_ms_to_ns(interval_ms);
        INTERVAL_NS.store(interval, Relaxed);
        STATE
            .next_scan_ns
            .store(sys::monotonic_coarse_ns().saturating_add(interval), Relaxed);
        STATE.enabled.store(true, Release);
    }
}

/// The configuration allows 12 digits of seconds: saturate rather than wrap.
fn interval_ms_to_ns(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

/// The wait after a pass: the interval doubled `shift` times, saturating.
fn backed_off(interval_ns: u64, shift: u64) -> u64 {
    interval_ns.saturating_mul(1 << shift.min(MAX_BACKOFF_SHIFT as u64))
}

/// Turns catch-up off for good (the program sandboxed itself).
pub fn disable() {
    STATE.enabled.store(false, Release);
}

pub fn enabled() -> bool {
    STATE.enabled.load(Relaxed)
}

/// In a forked child: forget the parent's scan (a step running in another
/// thread at fork time never finishes in the child) and start over.
pub fn reset() {
    if !enabled() {
        return;
    }
    let state = &STATE;
    // SAFETY: in a forked child only the forking thread runs: no step holds
    // `work` (one the parent was running never finishes here), and no other
    // reference to it lives in this thread while `reset` runs.
    let work = unsafe { &mut *state.work.get() };
    work.memory.clear();
    work.cursor = FRESH_CURSOR;
    for a in [
        &state.next_scan_ns,
        &state.last_pass_vmas,
        &state.backoff_shift,
        &state.passes,
        &state.steps,
        &state.vmas,
        &state.revoked,
    ] {
        a.store(0, Relaxed);
    }
    state.next_resume.store(0, Relaxed);
    SCAN_LINES.release_after_fork();
    state.scanning.store(false, Release);
}

/// Check from a hook (every so many calls) where the process has no
/// catch-up thread: run a step if one is due and no other thread is running
/// one. Out of line, so the hooks' fast path carries no clock call.
#[inline(never)]
#[cold]
pub fn poll(
    judge: &impl Fn(&MapsLine, Option<&MapsLine>) -> VmaVerdict,
    advise: &impl Fn(Range) -> bool,
) -> Option<Stepped> {
    let state = &STATE;
    if !state.enabled.load(Relaxed) {
        return None;
    }
    if sys::monotonic_coarse_ns() < state.next_scan_ns.load(Relaxed) {
        return None;
    }
    if sys::alt_stack_room().is_some_and(|room| room < STEP_STACK_BYTES) {
        return None;
    }
    step(state, false, judge, advise)
}

/// A step on the catch-up thread, whose caller has seen it [`due`] (the
/// thread's own stack: no room check). `None` if a hook is running one.
#[cold]
pub fn thread_step(
    judge: &impl Fn(&MapsLine, Option<&MapsLine>) -> VmaVerdict,
    advise: &impl Fn(Range) -> bool,
) -> Option<Stepped> {
    let state = &STATE;
    if !state.enabled.load(Relaxed) {
        return None;
    }
    step(state, true, judge, advise)
}

/// What a step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stepped {
    /// The step finished a pass.
    pub pass_finished: bool,
    /// The pass it finished advised memory the pass before had not seen,
    /// or left some for a later pass: memory is still changing.
    pub changing: bool,
}

/// Whether a pass has begun and not yet finished (news noted now may lie
/// where it already walked).
pub fn pass_in_progress() -> bool {
    STATE.next_resume.load(Relaxed) != 0
}

/// News arrived: the next pass is due one base interval from now at the
/// latest (not after a backed-off wait).
pub fn hurry() {
    if !enabled() {
        return;
    }
    let soon = sys::monotonic_coarse_ns().saturating_add(INTERVAL_NS.load(Relaxed));
    STATE.next_scan_ns.fetch_min(soon, Relaxed);
}

/// Whether a step is due (catch-up on and its time come): one clock read.
pub fn due() -> bool {
    STATE.enabled.load(Relaxed) && sys::monotonic_coarse_ns() >= STATE.next_scan_ns.load(Relaxed)
}

/// How long until the next step is due (0: now).
pub fn ns_until_due() -> u64 {
    STATE
        .next_scan_ns
        .load(Relaxed)
        .saturating_sub(sys::monotonic_coarse_ns())
}

/// Catch-up counters for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Completed passes over all VMAs.
    pub passes: u64,
    /// Steps run (a pass takes one or more).
    pub steps: u64,
    /// VMAs examined, over all steps.
    pub vmas: u64,
    /// Advised ranges found replaced by memory the policy rejects right
    /// after the `madvise`, and taken back out.
    pub revoked: u64,
}

pub fn stats() -> Stats {
    Stats {
        passes: STATE.passes.load(Relaxed),
        steps: STATE.steps.load(Relaxed),
        vmas: STATE.vmas.load(Relaxed),
        revoked: STATE.revoked.load(Relaxed),
    }
}

/// Completed passes in this process (for the report).
pub fn scans() -> u64 {
    STATE.passes.load(Relaxed)
}

/// One step; `None` if another thread is running one. `own_thread`: on the
/// catch-up thread (see [`Budget`]).
#[cold]
fn step(
    state: &State,
    own_thread: bool,
    judge: &impl Fn(&MapsLine, Option<&MapsLine>) -> VmaVerdict,
    advise: &impl Fn(Range) -> bool,
) -> Option<Stepped> {
    if state.scanning.swap(true, Acquire) {
        return None;
    }
    // SAFETY: this thread has just set `scanning` (the swap found it clear),
    // and only the thread that set it touches `work` until it clears it, after
    // the last use of this reference.
    let work = unsafe { &mut *state.work.get() };
    let budget = Budget::start(own_thread);
    let cpu_started = sys::thread_cpu_ns();
    let page = crate::os::page_size();
    work.cursor.heap_end = crate::os::program_break().saturating_add(page - 1) & !(page - 1);
    if MAX_MAP_COUNT.load(Relaxed) == 0 {
        MAX_MAP_COUNT.store(crate::os::proc::max_map_count(), Relaxed);
    }
    let end = {
        let (mut pass, name) = Pass::new(state, work, budget, judge, advise);
        pass.walk(name)
    };
    state.steps.fetch_add(1, Relaxed);
    let paced = sys::thread_cpu_ns()
        .saturating_sub(cpu_started)
        .saturating_mul(PACE);
    let mut stepped = Stepped::default();
    let wait = match end {
        StepEnd::More => paced,
        StepEnd::Failed => INTERVAL_NS.load(Relaxed).max(paced),
        StepEnd::PassDone => {
            let advised_new = work.cursor.advised_new;
            let deferred_any = work.cursor.deferred_any;
            work.memory.finish_pass();
            state.last_pass_vmas.store(work.cursor.examined, Relaxed);
            work.cursor = FRESH_CURSOR;
            state.passes.fetch_add(1, Relaxed);
            stepped = Stepped {
                pass_finished: true,
                changing: advised_new || deferred_any,
            };
            // Something left for the next pass: come back at the base pace.
            let shift = if stepped.changing {
                0
            } else {
                (state.backoff_shift.load(Relaxed) + 1).min(MAX_BACKOFF_SHIFT as u64)
            };
            state.backoff_shift.store(shift, Relaxed);
            backed_off(INTERVAL_NS.load(Relaxed), shift).max(paced)
        }
    };
    state.next_resume.store(work.cursor.resume, Relaxed);
    let now = sys::monotonic_coarse_ns();
    state.next_scan_ns.store(now.saturating_add(wait), Relaxed);
    state.scanning.store(false, Release);
    Some(stepped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_intervals_saturate_instead_of_wrapping() {
        // KSMAUTO_SCAN_INTERVAL=999999999999s is accepted by the parser.
        let ms = super::super::config::parse_duration_ms(b"999999999999s").unwrap();
        let ns = interval_ms_to_ns(ms);
        assert_eq!(ns, u64::MAX);
        assert_eq!(backed_off(ns, 5), u64::MAX);
        assert_eq!(backed_off(100_000_000, 5), 3_200_000_000);
        assert_eq!(backed_off(100_000_000, 60), 3_200_000_000, "shift capped");
        assert_eq!(interval_ms_to_ns(100), 100_000_000);
    }
}
