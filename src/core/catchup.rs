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
//! for a pass that finds it unchanged (advised while it grows, a region would
//! be cut into VMAs that never coalesce again), and one found growing a
//! second time is advised while it grows, with one page left unadvised at its
//! growing side. Where the process can have no thread of ours (a seccomp
//! filter, a refused `pthread_create`), the `mmap` hooks (every
//! `counters::CALLS_PER_ROUND`th call) take [`poll`]'s paced step instead.
//! A **pass** over all VMAs is cut into **steps**: one step examines at most
//! [`STEP_VMAS`] VMAs (and stops early after [`STEP_BUDGET_NS`], or as soon
//! as the thread is asked to stop), then the next step waits [`PACE`] times
//! the CPU time this one took, so the scan uses a bounded share of a CPU,
//! however many VMAs the process has. A pass that is over waits the interval
//! (`KSMAUTO_SCAN_INTERVAL`), doubled up to 32× while passes find nothing
//! new, back to the base as soon as one does or news arrives.
//!
//! **How it walks.** With the kernel's `PROCMAP_QUERY` (Linux 6.11+) a step
//! asks for the VMA at or above the address where the previous step stopped,
//! on a freshly opened `/proc/self/maps` (never a kept descriptor: the
//! program may close and reuse it). Older kernels get the whole text of
//! `/proc/self/maps` in one step, read through a static buffer (never the
//! stack: hooks may run on a small signal stack).
//!
//! **Races with remapping.** A VMA is judged, then advised; another thread can
//! replace it in between (`MAP_FIXED` with a private file mapping, which the
//! kernel would happily mark mergeable). So after each catch-up `madvise` the
//! advised range is looked up again and any part that is now something the
//! policy rejects is taken back out (`MADV_UNMERGEABLE`). A mapping that
//! replaces the range after that check is a fresh VMA without the flag.
//! (Needs `PROCMAP_QUERY`; on older kernels the window stays open.)
//!
//! **What it remembers.** The exact bounds of every VMA judged in the
//! previous pass, in address order (VMAs come in address order, so the list
//! is built by appending and looked up with a cursor that only moves up), up
//! to [`REMEMBERED_VMAS`]; a VMA that reappears with the same bounds is skipped,
//! one whose bounds changed is advised again (a no-op for the kernel if it
//! already is mergeable). A VMA the kernel refused is not retried until its
//! bounds change (the refusal is counted once, not every pass). Past the
//! capacity, VMAs are advised every pass (correct, slower) without counting
//! as news for the back-off.
//!
//! Never allocates (the list is a zero-initialised static whose pages are
//! touched only as far as they are used, and only in `advise` mode; a forked
//! child starts over through [`reset`]), never blocks (a thread that finds a
//! step running returns), and stays within a small stack: a step needs under
//! [`STEP_STACK_BYTES`], and is put off when a signal handler on an alternate
//! stack has less than that left.

use core::cell::UnsafeCell;
use core::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};

use super::policy::{self, Range, SkipReason, VmaVerdict};
use crate::counters::counters;
use crate::os::ksm;
use crate::os::proc::{read_lines, LineBuffer, MapsLine, RegionClass};
use crate::os::sys::{self, Errno, MapsQuery, VmaDetails};

const MAX_BACKOFF_SHIFT: u32 = 5;
/// The most VMAs one step examines.
pub const STEP_VMAS: usize = 512;
/// A step stops once it has run this long, even with VMAs left to examine:
/// time on a program's thread (a hook's step delays its call), CPU time on
/// the catch-up thread (waiting for the address-space lock, held by the
/// program reading its smaps or by ksmd scanning it, costs no one).
pub const STEP_BUDGET_NS: u64 = 2_000_000;

/// How a step measures what it spent against [`STEP_BUDGET_NS`].
#[derive(Clone, Copy)]
enum Budget {
    /// Time since it started (a hook's step, on a program's thread).
    Time(u64),
    /// This thread's CPU time since it started (the catch-up thread).
    Cpu(u64),
}

impl Budget {
    fn start(own_thread: bool) -> Budget {
        if own_thread {
            Budget::Cpu(sys::thread_cpu_ns())
        } else {
            Budget::Time(sys::monotonic_ns())
        }
    }

    fn exceeded(self) -> bool {
        match self {
            Budget::Time(t) => sys::monotonic_ns().saturating_sub(t) > STEP_BUDGET_NS,
            Budget::Cpu(t) => sys::thread_cpu_ns().saturating_sub(t) > STEP_BUDGET_NS,
        }
    }
}
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
/// VMAs remembered (above `vm.max_map_count`'s default of 65530), in one
/// 1 MiB array touched only as far as used. It must stay small: a library
/// whose mappings span 2 MiB or more is placed at a 2 MiB boundary, which
/// changes the program's own VMA layout.
pub const REMEMBERED_VMAS: usize = 1 << 17;
/// Longest VMA name we need: `[anon:` + 80 bytes + `]` (the kernel's limit
/// for names set with `PR_SET_VMA`); file paths are not needed (a longer
/// one is looked up again without its name).
const NAME_BYTES: usize = 128;

/// A VMA's bounds in one word: its first page number (4 KiB units) in the
/// high 36 bits, its length in pages in the low 27 (saturated: VMAs of
/// 512 GiB or more at the same start compare equal), and between them the
/// [`DEFERRED`] mark. Ordered by start.
type Packed = u64;
const LENGTH_BITS: u32 = 28;
/// Set on a remembered VMA that qualified but was left for a later pass
/// (it was new or still changing).
const DEFERRED: u64 = 1 << (LENGTH_BITS - 1);

/// `None` for a VMA above 2^48 (5-level paging), which is not remembered.
fn pack(start: usize, end: usize) -> Option<Packed> {
    let page = (start >> 12) as u64;
    if page >> (64 - LENGTH_BITS) != 0 {
        return None;
    }
    let pages = (((end - start) >> 12) as u64).min(DEFERRED - 1);
    Some(page << LENGTH_BITS | pages)
}

fn start_page(packed: Packed) -> u64 {
    packed >> LENGTH_BITS
}

/// What the previous pass saw, and what this one has seen so far, in one
/// array: this pass's VMAs fill it from the front, the previous pass's sit
/// at the back, and the walk (in address order) uses up the previous ones
/// as it goes, freeing room for its own. Zeroed memory is the empty state.
#[repr(C, align(4096))]
struct Memory {
    entries: [Packed; REMEMBERED_VMAS],
    /// This pass's VMAs: `entries[..written]`.
    written: usize,
    /// The previous pass's VMAs the walk has not passed yet: the last
    /// `previous_left` entries.
    previous_left: usize,
    /// This pass ran out of room and stopped remembering.
    overflowed: bool,
    /// The previous pass did: VMAs above `previous_last` are unknown.
    previous_overflowed: bool,
    previous_last: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// With these exact bounds, in the previous pass.
    Yes,
    No,
    /// Not known: the previous pass ran out of room before this address, or
    /// the VMA cannot be remembered.
    Unknown,
    /// With these exact bounds, in the previous pass, which deferred it.
    Deferred,
    /// Deferred by the previous pass with the same start and another end:
    /// still growing (or shrinking) at its top.
    GrewUp,
    /// Deferred by the previous pass with the same end and a start that
    /// moved down: a run of mappings growing downwards.
    GrewDown,
}

impl Memory {
    /// Drops the previous pass's VMAs that start at or below `page`: the walk
    /// only goes up from here.
    fn pass_below(&mut self, page: u64, inclusive: bool) {
        while self.previous_left > 0 {
            let next = start_page(self.entries[REMEMBERED_VMAS - self.previous_left]);
            if next > page || (next == page && !inclusive) {
                break;
            }
            self.previous_left -= 1;
        }
    }

    /// Whether the previous pass saw this VMA. Calls must come in address
    /// order within a pass (a VMA out of order reads as not seen).
    fn seen(&mut self, start: usize, end: usize) -> Seen {
        let Some(key) = pack(start, end) else {
            return Seen::Unknown;
        };
        self.pass_below(start_page(key), false);
        let previous = match self.previous_left {
            0 => 0,
            left => self.entries[REMEMBERED_VMAS - left],
        };
        let pages = |p: Packed| p & (DEFERRED - 1);
        let saturated = |p: Packed| pages(p) == DEFERRED - 1;
        if self.previous_left > 0 && previous & !DEFERRED == key {
            if previous & DEFERRED != 0 {
                Seen::Deferred
            } else {
                Seen::Yes
            }
        } else if self.previous_left > 0
            && previous & DEFERRED != 0
            && !saturated(previous)
            && !saturated(key)
        {
            let (start, end) = (start_page(key), start_page(key) + pages(key));
            let (was_start, was_end) =
                (start_page(previous), start_page(previous) + pages(previous));
            if was_start == start {
                Seen::GrewUp
            } else if was_end == end && was_start > start {
                Seen::GrewDown
            } else {
                Seen::No
            }
        } else if self.previous_overflowed && start_page(key) > self.previous_last {
            Seen::Unknown
        } else {
            Seen::No
        }
    }

    /// Remembers a VMA for the next pass. One that comes out of order (the
    /// layout changed between two steps) is not remembered: it is simply
    /// looked at again next pass.
    fn record(&mut self, start: usize, end: usize) {
        self.record_as(start, end, false);
    }

    /// [`Memory::record`], marked [`DEFERRED`] if `deferred`.
    fn record_as(&mut self, start: usize, end: usize, deferred: bool) {
        let Some(key) = pack(start, end) else {
            return;
        };
        if self.overflowed
            || (self.written > 0 && start_page(self.entries[self.written - 1]) >= start_page(key))
        {
            return;
        }
        self.pass_below(start_page(key), true);
        if self.written + self.previous_left >= REMEMBERED_VMAS {
            self.overflowed = true;
            return;
        }
        self.entries[self.written] = if deferred { key | DEFERRED } else { key };
        self.written += 1;
    }

    /// This pass's VMAs become the previous pass's, moved to the back.
    fn finish_pass(&mut self) {
        let n = self.written;
        self.entries.copy_within(..n, REMEMBERED_VMAS - n);
        self.previous_left = n;
        self.previous_overflowed = self.overflowed;
        self.previous_last = if n > 0 {
            start_page(self.entries[REMEMBERED_VMAS - 1])
        } else {
            0
        };
        self.written = 0;
        self.overflowed = false;
    }

    /// Forgets everything, handing the array's pages back to the kernel (they
    /// read as zero afterwards), which costs nothing for pages never touched.
    fn clear(&mut self) {
        let start = self.entries.as_mut_ptr() as usize;
        let len = core::mem::size_of_val(&self.entries);
        if !start.is_multiple_of(crate::os::page_size())
            // SAFETY: `&mut self` owns `entries` (page-aligned, checked just
            // above; 1 MiB, whole pages); all zeros is its empty state.
            || unsafe { crate::os::release_pages(start, len) }.is_err()
        {
            self.entries.iter_mut().for_each(|e| *e = 0);
        }
        self.written = 0;
        self.previous_left = 0;
        self.overflowed = false;
        self.previous_overflowed = false;
        self.previous_last = 0;
    }
}

/// Where the pass in progress stands.
struct Cursor {
    /// The next step looks at the VMA at or above this address.
    resume: usize,
    /// The last VMA examined: the `below` of the next one, to recognise
    /// thread stacks by their guard and the brk heap's growth.
    below: Option<Below>,
    /// The page-aligned program break when the step started.
    heap_end: usize,
    /// VMAs this pass has examined.
    examined: u64,
    /// This pass deferred a VMA that was new or still changing.
    deferred_any: bool,
    /// This pass advised a VMA the previous one had not seen.
    advised_new: bool,
}

/// What a VMA's upper neighbour needs to know of it.
#[derive(Clone, Copy)]
struct Below {
    start: usize,
    end: usize,
    perms: [u8; 4],
    inode: u64,
    heap: bool,
}

impl Below {
    fn of(vma: &MapsLine) -> Below {
        Below {
            start: vma.start,
            end: vma.end,
            perms: vma.perms,
            inode: vma.inode,
            heap: vma.class() == RegionClass::Heap,
        }
    }

    fn line(self) -> MapsLine<'static> {
        MapsLine {
            start: self.start,
            end: self.end,
            perms: self.perms,
            offset: 0,
            inode: self.inode,
            name: if self.heap { b"[heap]" } else { b"" },
        }
    }
}

const FRESH_CURSOR: Cursor = Cursor {
    resume: 0,
    below: None,
    heap_end: 0,
    examined: 0,
    deferred_any: false,
    advised_new: false,
};

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

// `work` is only touched by the thread that set `scanning`.
unsafe impl Sync for State {}

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
/// The text fallback's line buffer (only the step holding `scanning` uses it).
static SCAN_LINES: LineBuffer = LineBuffer::new();

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

enum StepEnd {
    /// The pass is over.
    PassDone,
    /// VMAs are left for the next step.
    More,
    /// The kernel refused (no descriptor left, …): the pass resumes from
    /// where it stood after one base interval.
    Failed,
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
    // Only the scanning thread touches `work` (guarded by `scanning`).
    let work = unsafe { &mut *state.work.get() };
    let budget = Budget::start(own_thread);
    let cpu_started = sys::thread_cpu_ns();
    let page = crate::os::page_size();
    work.cursor.heap_end = crate::os::program_break().saturating_add(page - 1) & !(page - 1);
    if MAX_MAP_COUNT.load(Relaxed) == 0 {
        MAX_MAP_COUNT.store(crate::os::proc::max_map_count(), Relaxed);
    }
    let end = match MapsQuery::open() {
        Ok(maps) => match step_by_query(state, work, &maps, budget, judge, advise) {
            Ok(end) => end,
            Err(_) if sys::procmap_query_unsupported() => {
                drop(maps);
                pass_by_text(state, work, judge, advise)
            }
            Err(_) => StepEnd::Failed,
        },
        Err(_) if sys::procmap_query_unsupported() => pass_by_text(state, work, judge, advise),
        Err(_) => StepEnd::Failed,
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

/// Up to [`STEP_VMAS`] VMAs from the cursor on, through `PROCMAP_QUERY`.
fn step_by_query(
    state: &State,
    work: &mut Work,
    maps: &MapsQuery,
    budget: Budget,
    judge: &impl Fn(&MapsLine, Option<&MapsLine>) -> VmaVerdict,
    advise: &impl Fn(Range) -> bool,
) -> Result<StepEnd, Errno> {
    for examined in 0..STEP_VMAS {
        if examined % 16 == 15 && budget.exceeded() {
            return Ok(StepEnd::More);
        }
        // A thread asked to stop leaves between two VMAs (the pass resumes
        // here in its successor).
        if super::catchup_thread::asked_to_stop() {
            return Ok(StepEnd::More);
        }
        let vma = match query_named(maps, work.cursor.resume, true, &mut work.name) {
            Ok(vma) => vma,
            Err(libc::ENOENT) => return Ok(StepEnd::PassDone),
            Err(e) => return Err(e),
        };
        state.vmas.fetch_add(1, Relaxed);
        if vma.end <= work.cursor.resume {
            // Cannot happen (the kernel answers at or above the address);
            // never loop on it.
            return Ok(StepEnd::PassDone);
        }
        work.cursor.resume = vma.end;
        let line = line_of(&vma, &work.name);
        consider(
            state,
            &mut work.memory,
            &mut work.cursor,
            &line,
            None,
            Some((maps, &mut work.check_name)),
            judge,
            advise,
        );
    }
    Ok(StepEnd::More)
}

/// The whole pass from the text of `/proc/self/maps`, for kernels without
/// `PROCMAP_QUERY`. A read that fails midway ends the pass where it stopped
/// (what was not seen is looked at again next pass).
fn pass_by_text(
    state: &State,
    work: &mut Work,
    judge: &impl Fn(&MapsLine, Option<&MapsLine>) -> VmaVerdict,
    advise: &impl Fn(Range) -> bool,
) -> StepEnd {
    work.cursor.below = None;
    let Work {
        memory,
        cursor,
        name: pending_name,
        ..
    } = work;
    // Each line is considered once the next one is read: the VMA right
    // above is what `PROCMAP_QUERY` would have looked up (a run of mappings
    // growing downwards is recognised by it). The held line's name is kept
    // in the scan's own static buffer, not on the stack.
    let mut pending: Option<Held> = None;
    let mut examined = 0u64;
    let result = read_lines(b"/proc/thread-self/maps\0", &SCAN_LINES, |text| {
        // A thread asked to stop considers nothing more: what this pass
        // did not reach counts as unknown in the next one, as past an
        // overflow of the remembered VMAs (advised again, a no-op).
        if super::catchup_thread::asked_to_stop() {
            memory.overflowed = true;
            pending = None;
            return;
        }
        if let Some(line) = MapsLine::parse(text) {
            examined += 1;
            if let Some(held) = pending.take() {
                let held = held.line(pending_name);
                consider(
                    state,
                    memory,
                    cursor,
                    &held,
                    Some(Some(&line)),
                    None,
                    judge,
                    advise,
                );
            }
            pending = Some(Held::keep(&line, pending_name));
        }
    });
    if let Some(held) = pending {
        let held = held.line(pending_name);
        consider(
            state,
            memory,
            cursor,
            &held,
            Some(None),
            None,
            judge,
            advise,
        );
    }
    state.vmas.fetch_add(examined, Relaxed);
    match result {
        Err(_) if examined == 0 => StepEnd::Failed,
        _ => StepEnd::PassDone,
    }
}

/// The VMA holding `addr` and the verdict a pass would give it, with the
/// VMA right below it as the pass sees it (a new thread's stack: whether the
/// scan takes it for a stack by its guard page). `None` when nothing is
/// mapped there, or the maps cannot be read now (the shared line buffer is
/// busy, on kernels without `PROCMAP_QUERY`).
pub fn judged_at(
    addr: usize,
    judge: &impl Fn(&MapsLine, Option<&MapsLine>) -> VmaVerdict,
) -> Option<(Range, VmaVerdict)> {
    // Enough for the names a rule reads (`[heap]`, `[stack]`); a longer one
    // is dropped, as the scan's own walk would not need it either.
    let mut name = [0u8; 16];
    match MapsQuery::open() {
        Ok(maps) => match query_named(&maps, addr, false, &mut name) {
            Ok(vma) => {
                let below = vma
                    .start
                    .checked_sub(1)
                    .and_then(|b| maps.vma(b, false, &mut []).ok())
                    .filter(|b| b.end == vma.start);
                let below = below.as_ref().map(|b| line_of(b, &[]));
                let range = Range {
                    start: vma.start,
                    end: vma.end,
                };
                Some((range, judge(&line_of(&vma, &name), below.as_ref())))
            }
            Err(_) if sys::procmap_query_unsupported() => judged_in_text(addr, judge),
            Err(_) => None,
        },
        Err(_) if sys::procmap_query_unsupported() => judged_in_text(addr, judge),
        Err(_) => None,
    }
}

/// [`judged_at`] from the text of `/proc/self/maps`.
fn judged_in_text(
    addr: usize,
    judge: &impl Fn(&MapsLine, Option<&MapsLine>) -> VmaVerdict,
) -> Option<(Range, VmaVerdict)> {
    let mut below: Option<Below> = None;
    let mut found = None;
    let buffer = &crate::os::proc::SHARED_LINES;
    let _ = read_lines(b"/proc/thread-self/maps\0", buffer, |text| {
        let Some(line) = MapsLine::parse(text) else {
            return;
        };
        if found.is_none() && line.start <= addr && addr < line.end {
            let under = below.filter(|b| b.end == line.start).map(Below::line);
            let range = Range {
                start: line.start,
                end: line.end,
            };
            found = Some((range, judge(&line, under.as_ref())));
        }
        below = Some(Below::of(&line));
    });
    found
}

/// A line of the text walk held until the next one is read, its name in the
/// scan's name buffer (cut to [`NAME_BYTES`]: a longer one is a file path,
/// which no rule needs).
struct Held {
    start: usize,
    end: usize,
    perms: [u8; 4],
    offset: u64,
    inode: u64,
    name_len: usize,
}

impl Held {
    fn keep(line: &MapsLine, name: &mut [u8; NAME_BYTES]) -> Held {
        let name_len = line.name.len().min(NAME_BYTES);
        name[..name_len].copy_from_slice(&line.name[..name_len]);
        Held {
            start: line.start,
            end: line.end,
            perms: line.perms,
            offset: line.offset,
            inode: line.inode,
            name_len,
        }
    }

    fn line<'a>(&self, name: &'a [u8]) -> MapsLine<'a> {
        MapsLine {
            start: self.start,
            end: self.end,
            perms: self.perms,
            offset: self.offset,
            inode: self.inode,
            name: &name[..self.name_len],
        }
    }
}

/// Looks up a VMA with its name; a name too long for `name` (a deep file
/// path: we never need those) is dropped.
fn query_named(
    maps: &MapsQuery,
    addr: usize,
    or_next: bool,
    name: &mut [u8],
) -> Result<VmaDetails, Errno> {
    match maps.vma(addr, or_next, name) {
        Err(libc::ENAMETOOLONG) => maps.vma(addr, or_next, &mut []),
        other => other,
    }
}

fn line_of<'a>(vma: &VmaDetails, name: &'a [u8]) -> MapsLine<'a> {
    MapsLine {
        start: vma.start,
        end: vma.end,
        perms: vma.perms(),
        offset: vma.offset,
        inode: vma.inode,
        name: &name[..vma.name_len],
    }
}

/// Judges one VMA and advises it if it qualifies and is news. `check` (the
/// open maps and a name buffer) is how the advice is checked afterwards.
/// `above`: the VMA right above, when the caller knows it (`Some(None)`:
/// none); otherwise it is looked up through `check` where needed.
#[allow(clippy::too_many_arguments)]
fn consider(
    state: &State,
    memory: &mut Memory,
    cursor: &mut Cursor,
    vma: &MapsLine,
    above: Option<Option<&MapsLine>>,
    check: Option<(&MapsQuery, &mut [u8; NAME_BYTES])>,
    judge: &impl Fn(&MapsLine, Option<&MapsLine>) -> VmaVerdict,
    advise: &impl Fn(Range) -> bool,
) {
    let below = cursor.below.filter(|b| b.end == vma.start).map(Below::line);
    cursor.below = Some(Below::of(vma));
    cursor.examined += 1;
    match judge(vma, below.as_ref()) {
        VmaVerdict::NotOurs => {}
        VmaVerdict::Skip(reason) => {
            if memory.seen(vma.start, vma.end) == Seen::No {
                counters().count_skipped(reason);
            }
            memory.record(vma.start, vma.end);
        }
        VmaVerdict::Merge => {
            let seen = memory.seen(vma.start, vma.end);
            // Memory that is new or still changing is left for a pass that
            // finds it as it was: advised while it grows, a region would be
            // cut into VMAs that never coalesce again (each piece written
            // before it was advised).
            if seen == Seen::No {
                cursor.deferred_any = true;
                memory.record_as(vma.start, vma.end, true);
                return;
            }
            let mut check = check;
            // The VMA right above matters only for news with room below.
            let mut above_name = [0u8; 16];
            let above_vma = match (&check, &below, above) {
                (Some((maps, _)), None, None)
                    if matches!(seen, Seen::No | Seen::Deferred | Seen::Unknown) =>
                {
                    maps.vma(vma.end, false, &mut above_name)
                        .or_else(|_| maps.vma(vma.end, false, &mut []))
                        .ok()
                        .filter(|a| a.start == vma.end)
                }
                _ => None,
            };
            let looked_up = above_vma.as_ref().map(|a| line_of(a, &above_name));
            let above_line = match above {
                Some(known) => known.filter(|a| a.start == vma.end),
                None => looked_up.as_ref(),
            };
            let page = crate::os::page_size();
            let part = match seen {
                // Memory found growing a second time is advised while it
                // grows, with one page left unadvised at the growing side
                // (see `policy::advisable_part` for why).
                Seen::GrewUp => Range {
                    start: vma.start,
                    end: vma.end.saturating_sub(page).max(vma.start),
                },
                Seen::GrewDown => Range {
                    start: vma.start.saturating_add(page).min(vma.end),
                    end: vma.end,
                },
                _ => policy::advisable_part(vma, below.as_ref(), above_line, cursor.heap_end, page),
            };
            let splits = part.start != vma.start || part.end != vma.end;
            if seen == Seen::Yes {
                // Nothing new.
            } else if part.is_empty() {
                // All growth edge: next time.
            } else if splits && map_count_headroom_low() {
                if seen == Seen::No {
                    counters().count_skipped(SkipReason::MapCount);
                }
            } else {
                let advised = advise(part);
                if let Some((maps, name)) = check.as_mut() {
                    revoke_rejected(state, maps, name, part, judge);
                }
                cursor.advised_new |= advised
                    && matches!(
                        seen,
                        Seen::No | Seen::Deferred | Seen::GrewUp | Seen::GrewDown
                    );
            }
            // An advice that split the VMA: the next pass finds its pieces.
            // The edge left for a growth seen on the way is remembered as
            // deferred: found unchanged, the growth is over, and it is judged
            // again (a thread arena's edge is then advised and coalesces
            // with the part below; a brk heap's top page stays its edge).
            if splits && !part.is_empty() {
                let edge = matches!(seen, Seen::GrewUp | Seen::GrewDown);
                if part.start > vma.start {
                    memory.record_as(vma.start, part.start, edge);
                }
                memory.record(part.start, part.end);
                if part.end < vma.end {
                    memory.record_as(part.end, vma.end, edge);
                }
            } else {
                memory.record(vma.start, vma.end);
            }
        }
    }
}

/// Whether a verdict means the memory must not be left mergeable. `Small`
/// and `Excluded` are not: they can be pieces of a VMA that qualifies as a
/// whole, split by an exclusion.
fn rejects(verdict: VmaVerdict) -> bool {
    match verdict {
        VmaVerdict::NotOurs => true,
        VmaVerdict::Merge => false,
        VmaVerdict::Skip(reason) => match reason {
            SkipReason::Shared
            | SkipReason::File
            | SkipReason::Hugetlb
            | SkipReason::Exec
            | SkipReason::Stack => true,
            SkipReason::Small | SkipReason::Excluded | SkipReason::MapCount => false,
        },
    }
}

/// Right after advising `range`: looks at what is mapped there now and takes
/// every part the policy rejects back out of merging. Whatever replaces the
/// range after this look is a fresh VMA, which is not mergeable.
fn revoke_rejected(
    state: &State,
    maps: &MapsQuery,
    name: &mut [u8; NAME_BYTES],
    range: Range,
    judge: &impl Fn(&MapsLine, Option<&MapsLine>) -> VmaVerdict,
) {
    let mut below = range
        .start
        .checked_sub(1)
        .and_then(|addr| maps.vma(addr, false, &mut []).ok())
        .filter(|b| b.end == range.start)
        .map(|b| {
            let line = line_of(&b, &[]);
            Below::of(&line)
        });
    let mut addr = range.start;
    while addr < range.end {
        let Ok(vma) = query_named(maps, addr, true, name) else {
            return;
        };
        if vma.start >= range.end || vma.end <= addr {
            return;
        }
        let line = line_of(&vma, name);
        let below_vma = below.filter(|b| b.end == vma.start).map(Below::line);
        if rejects(judge(&line, below_vma.as_ref())) {
            let piece = Range {
                start: vma.start.max(range.start),
                end: vma.end.min(range.end),
            };
            if ksm::unmark(piece.start, piece.len()).is_ok() {
                state.revoked.fetch_add(1, Relaxed);
            }
        }
        below = Some(Below::of(&line));
        addr = vma.end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> Box<Memory> {
        unsafe { Box::new_zeroed().assume_init() }
    }

    #[test]
    fn a_pass_remembers_exact_bounds_for_the_next_one() {
        let mut m = memory();
        assert_eq!(m.seen(0x1000, 0x2000), Seen::No);
        m.record(0x1000, 0x2000);
        assert_eq!(m.seen(0x3000, 0x5000), Seen::No);
        m.record(0x3000, 0x5000);
        m.record(0x8000, 0x9000);
        m.finish_pass();
        assert_eq!(m.seen(0x1000, 0x2000), Seen::Yes);
        m.record(0x1000, 0x2000);
        assert_eq!(m.seen(0x2000, 0x3000), Seen::No);
        assert_eq!(m.seen(0x3000, 0x6000), Seen::No, "bounds changed");
        m.record(0x3000, 0x6000);
        // 0x8000 is gone; a new VMA above it.
        assert_eq!(m.seen(0x9000, 0xa000), Seen::No);
        m.record(0x9000, 0xa000);
        m.finish_pass();
        assert_eq!(m.seen(0x1000, 0x2000), Seen::Yes);
        assert_eq!(m.seen(0x3000, 0x5000), Seen::No);
        assert_eq!(m.seen(0x8000, 0x9000), Seen::No);
        assert_eq!(m.seen(0x9000, 0xa000), Seen::Yes);
    }

    #[test]
    fn out_of_order_vmas_are_not_remembered() {
        let mut m = memory();
        m.record(0x5000, 0x6000);
        m.record(0x1000, 0x2000);
        m.finish_pass();
        assert_eq!(m.seen(0x1000, 0x2000), Seen::No);
        assert_eq!(m.seen(0x5000, 0x6000), Seen::Yes);
    }

    #[test]
    fn huge_and_very_high_vmas() {
        let mut m = memory();
        let tib = 1usize << 40;
        m.record(0x1000, 0x1000 + 3 * tib);
        m.record(1 << 50, (1 << 50) + 0x1000);
        m.finish_pass();
        assert_eq!(
            m.seen(0x1000, 0x1000 + 2 * tib),
            Seen::Yes,
            "lengths saturate at 512 GiB"
        );
        assert_eq!(m.seen(1 << 50, (1 << 50) + 0x1000), Seen::Unknown);
    }

    #[test]
    fn sixty_thousand_vmas_and_more_than_the_capacity() {
        let mut m = memory();
        let vma = |i: usize| ((i + 1) << 13, ((i + 1) << 13) + 0x1000);
        let pass = |m: &mut Memory, n: usize| {
            let mut seen = [0usize; 3];
            for i in 0..n {
                let (s, e) = vma(i);
                seen[m.seen(s, e) as usize] += 1;
                m.record(s, e);
            }
            m.finish_pass();
            seen
        };
        assert_eq!(pass(&mut m, 60_000), [0, 60_000, 0]);
        assert_eq!(pass(&mut m, 60_000), [60_000, 0, 0]);
        // Twice as many: the first 60,000 were seen, the rest are new.
        assert_eq!(pass(&mut m, 120_000), [60_000, 60_000, 0]);
        assert_eq!(pass(&mut m, 120_000), [120_000, 0, 0]);
        // More than fits: the surplus is not remembered, then unknown.
        let over = REMEMBERED_VMAS + 10;
        assert_eq!(pass(&mut m, over), [120_000, over - 120_000, 0]);
        assert_eq!(
            pass(&mut m, over),
            [REMEMBERED_VMAS, 0, 10],
            "all that fitted is remembered"
        );
        assert_eq!(pass(&mut m, 10), [10, 0, 0]);
        m.clear();
        assert_eq!(pass(&mut m, 10), [0, 10, 0]);
    }

    #[test]
    fn query_lines_read_like_the_text_of_proc_self_maps() {
        let text = std::fs::read_to_string("/proc/self/maps").unwrap();
        let maps = match MapsQuery::open() {
            Ok(maps) => maps,
            Err(_) => return, // a kernel without PROCMAP_QUERY
        };
        let mut name = [0u8; NAME_BYTES];
        let (mut addr, mut compared, mut named) = (0, 0, 0);
        while let Ok(vma) = query_named(&maps, addr, true, &mut name) {
            addr = vma.end;
            let from_query = line_of(&vma, &name);
            let Some(from_text) = text
                .lines()
                .filter_map(|l| MapsLine::parse(l.as_bytes()))
                .find(|l| l.start == vma.start && l.end == vma.end)
            else {
                continue; // changed in between (the test harness's threads)
            };
            assert_eq!(from_query.perms, from_text.perms, "{from_text:?}");
            assert_eq!(from_query.inode, from_text.inode, "{from_text:?}");
            if from_text.inode == 0 {
                assert_eq!(from_query.name, from_text.name, "{from_text:?}");
                named += usize::from(!from_text.name.is_empty());
            }
            compared += 1;
        }
        assert!(compared > 10 && named >= 2, "{compared} {named}\n{text}");
    }

    /// Runs whole passes with both walks over this test process, with a judge
    /// that takes every private anonymous VMA and an `advise` that only
    /// records (nothing is really advised).
    #[test]
    fn both_walks_advise_each_vma_once_and_then_nothing() {
        use std::cell::RefCell;
        let state: Box<State> = unsafe { Box::new_zeroed().assume_init() };
        let work = unsafe { &mut *state.work.get() };
        let judge = |vma: &MapsLine, _: Option<&MapsLine>| {
            if vma.is_private() && vma.inode == 0 && vma.name.is_empty() {
                VmaVerdict::Merge
            } else {
                VmaVerdict::NotOurs
            }
        };
        let advised = RefCell::new(Vec::new());
        let advise = |range: Range| {
            advised.borrow_mut().push((range.start, range.end));
            true
        };
        let by_query = |work: &mut Work| -> usize {
            let maps = MapsQuery::open().unwrap();
            let mut steps = 1;
            while let StepEnd::More =
                step_by_query(&state, work, &maps, Budget::start(false), &judge, &advise).unwrap()
            {
                steps += 1;
            }
            work.memory.finish_pass();
            work.cursor.resume = 0;
            work.cursor.below = None;
            steps
        };
        let by_text = |work: &mut Work| {
            assert!(matches!(
                pass_by_text(&state, work, &judge, &advise),
                StepEnd::PassDone
            ));
            work.memory.finish_pass();
        };
        // A private anonymous region of 600 VMAs (alternating protections),
        // more than one step takes, between inaccessible pages that keep it
        // apart from its neighbours.
        let page = 4096;
        let outer = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                602 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        } as usize;
        let region = outer + page;
        unsafe {
            libc::mprotect(outer as *mut _, page, libc::PROT_NONE);
            libc::mprotect((region + 600 * page) as *mut _, page, libc::PROT_NONE);
        }
        for i in (1..600).step_by(2) {
            unsafe { libc::mprotect((region + i * page) as *mut _, page, libc::PROT_READ) };
        }
        let in_region = |v: &Vec<(usize, usize)>| {
            v.iter()
                .filter(|&&(s, e)| s >= region && e <= region + 600 * page)
                .count()
        };
        if MapsQuery::open().is_ok() {
            // New: left for a pass that finds them unchanged.
            assert!(by_query(work) >= 2, "600 VMAs take more than one step");
            assert_eq!(in_region(&advised.borrow()), 0, "new VMAs wait a pass");
            by_query(work);
            assert_eq!(in_region(&advised.borrow()), 600);
            advised.borrow_mut().clear();
            by_query(work);
            assert_eq!(in_region(&advised.borrow()), 0, "nothing new");
        }
        // The text walk remembers the same bounds.
        by_text(work);
        assert_eq!(in_region(&advised.borrow()), 0, "{:x?}", advised.borrow());
        // A VMA whose bounds changed is advised again, once a pass found it
        // unchanged.
        unsafe { libc::mprotect(region as *mut _, page, libc::PROT_READ) };
        advised.borrow_mut().clear();
        by_text(work);
        assert_eq!(in_region(&advised.borrow()), 0, "{:x?}", advised.borrow());
        by_text(work);
        assert_eq!(in_region(&advised.borrow()), 1, "{:x?}", advised.borrow());
        unsafe { libc::munmap(outer as *mut _, 602 * page) };
    }

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

    #[test]
    fn only_kinds_of_memory_the_policy_rejects_are_revoked() {
        assert!(rejects(VmaVerdict::NotOurs));
        assert!(rejects(VmaVerdict::Skip(SkipReason::File)));
        assert!(rejects(VmaVerdict::Skip(SkipReason::Shared)));
        assert!(rejects(VmaVerdict::Skip(SkipReason::Stack)));
        assert!(!rejects(VmaVerdict::Merge));
        assert!(!rejects(VmaVerdict::Skip(SkipReason::Small)));
        assert!(!rejects(VmaVerdict::Skip(SkipReason::Excluded)));
    }

    #[test]
    fn new_vmas_wait_a_pass_and_growing_ones_keep_an_edge() {
        let mut m = memory();
        let state: Box<State> = unsafe { Box::new_zeroed().assume_init() };
        let advised = std::cell::RefCell::new(Vec::new());
        let judge = |_: &MapsLine, _: Option<&MapsLine>| VmaVerdict::Merge;
        let advise = |r: Range| {
            advised.borrow_mut().push((r.start, r.end));
            true
        };
        let walk = |m: &mut Memory, vmas: &[(usize, usize)]| {
            let mut cursor = FRESH_CURSOR;
            for &(start, end) in vmas {
                let line = MapsLine {
                    start,
                    end,
                    perms: *b"rw-p",
                    offset: 0,
                    inode: 0,
                    name: b"",
                };
                consider(&state, m, &mut cursor, &line, None, None, &judge, &advise);
            }
            m.finish_pass();
            cursor.deferred_any
        };
        let last = || *advised.borrow().last().unwrap();
        // New: remembered, not advised.
        assert!(walk(&mut m, &[(0x10000, 0x20000)]));
        assert!(advised.borrow().is_empty());
        // Found growing a second time (same start): advised while it grows,
        // all but its top page.
        assert!(!walk(&mut m, &[(0x10000, 0x30000)]));
        assert_eq!(last(), (0x10000, 0x2f000));
        // The advice split it. The top page's VMA takes the growth: found
        // grown, advised the same way (in the kernel the piece coalesces
        // with the one below), its top page again left.
        assert!(!walk(
            &mut m,
            &[(0x10000, 0x2f000), (0x2f000, 0x40000)]
        ));
        assert_eq!(last(), (0x2f000, 0x3f000));
        assert_eq!(advised.borrow().len(), 2);
        // The growth is over (the edge found unchanged): the edge is advised
        // too, and nothing more after that.
        let pieces = [(0x10000, 0x2f000), (0x2f000, 0x3f000), (0x3f000, 0x40000)];
        assert!(!walk(&mut m, &pieces));
        assert_eq!(last(), (0x3f000, 0x40000));
        assert!(!walk(&mut m, &pieces));
        assert_eq!(advised.borrow().len(), 3);
        // A run growing downwards (same end): all but its bottom page.
        assert!(walk(&mut m, &[(0x90000, 0xa0000)]));
        assert!(!walk(&mut m, &[(0x80000, 0xa0000)]));
        assert_eq!(last(), (0x81000, 0xa0000));
        // New and then unchanged: advised whole, once.
        let before = advised.borrow().len();
        assert!(walk(&mut m, &[(0xc0000, 0xd0000)]));
        assert!(!walk(&mut m, &[(0xc0000, 0xd0000)]));
        assert_eq!(last(), (0xc0000, 0xd0000));
        assert!(!walk(&mut m, &[(0xc0000, 0xd0000)]));
        assert_eq!(advised.borrow().len(), before + 1);
    }
}
