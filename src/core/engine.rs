//! The engines: what happens when the program maps or allocates memory.
//!
//! * `advise`: every qualifying region the hooks see gets `MADV_MERGEABLE`,
//!   always as a whole mapping (a glibc-mapped malloc block is advised as the
//!   mapping glibc made, never per allocation, so no VMA is ever split).
//!   What no hook sees is found by the catch-up scan (`core::catchup`).
//! * `process`: `PR_SET_MEMORY_MERGE` makes the kernel treat every compatible
//!   anonymous VMA as mergeable; exclusions are carved out with
//!   `MADV_UNMERGEABLE`.
//! * `off`: nothing, and an inherited merge-any setting is cleared.
//!
//! **Never mergeable, in every engine**: ranges in the exclusion table
//! (`core::exclusions`): what the program excluded with `ksmauto_exclude`,
//! and, with the `secret` class of `KSMAUTO_EXCLUDE` (default), memory the
//! program marks as secret — `mlock`/`mlock2` ranges and `MADV_DONTDUMP` /
//! `MADV_WIPEONFORK` ranges (what OpenSSL's secure heap and libsodium's
//! `sodium_malloc` do). KSM is a side channel: mergeable memory can be probed
//! by any other process using KSM. Such a range is recorded and unmerged at
//! once, whether it was advised before or not; every later advice (hooks,
//! catch-up, `ksmauto_advise`) subtracts the table. `mlockall` locks the
//! whole process, so it stops merging altogether (see [`after_mlockall`]).
//! `/proc/self/maps` shows neither locks nor dump flags: only marks made
//! through the hooked functions are seen (a raw `syscall(SYS_mlock)` is not).
//!
//! Exclusions follow their memory: `munmap` and `MAP_FIXED` drop the
//! unmapped part, `mremap` moves it ([`after_mremap`]), `realloc` of an
//! excluded block excludes the new block ([`exclusion_follows_block`]).
//!
//! Knows nothing about symbol names: the interposition layer calls the
//! `after_*` functions with plain numbers. Never allocates, never locks,
//! never touches `errno` (all kernel calls go through `os::sys`).

use core::cell::UnsafeCell;
use core::sync::atomic::{
    AtomicBool, AtomicUsize,
    Ordering::{Relaxed, SeqCst},
};

use super::catchup;
use super::catchup_thread;
use super::config::{BadValue, Config, Mode, Register, StatsDestination};
use super::exclusions::{ExclusionTable, Inserted};
use super::exec_guard;
pub use super::exec_guard::{Lent as ExecLent, LoaderEnv};
use super::identity;
use super::paying::{self, resting};
use super::policy::{self, Range, SkipReason, Verdict, VmaVerdict};
use crate::counters::counters;
use crate::fmt::BufWriter;
use crate::os::exec_target::ExecTarget;
use crate::os::proc::{read_lines, MapsLine, RegionClass, SHARED_LINES};
use crate::os::{self, ksm, sys};
use ksmauto_contract::Source;

/// Written once by [`start`] before any hook does work, read-only afterwards.
/// Hooks see it only after start-up: through the interposition layer's gate,
/// or, on the hot paths, through the acquire load of the forwarding table
/// that start-up publishes last (`next::publish_hot_path`).
struct Settings {
    config: Config,
    /// What file descriptor 2 was when the library started; the exit report
    /// goes to stderr only if it still is that file.
    stderr_at_start: Option<sys::FileStatus>,
    active: Mode,
    fallback_errno: Option<i32>,
    page_size: usize,
}

struct SettingsCell(UnsafeCell<Settings>);
// SAFETY: the cell is written once, inside the start-up gate before any hook
// reads it, and only read afterwards (see `settings`).
unsafe impl Sync for SettingsCell {}

// once_cell: written once inside the re-entrant start-up gate
// (`core::once`), read by every hook afterwards without an "initialised?"
// check; see `next::NEXT`.
static SETTINGS: SettingsCell = SettingsCell(UnsafeCell::new(Settings {
    config: Config::DEFAULT,
    stderr_at_start: None,
    active: Mode::Off,
    fallback_errno: None,
    page_size: sys::PAGE_SIZE_FALLBACK,
}));

/// The smallest malloc block that may be a glibc mapping of its own;
/// `usize::MAX` (nothing qualifies) unless the `advise` engine runs over
/// glibc's malloc. The watching hooks' only test is one compare with it.
static MALLOC_BLOCK_FLOOR: AtomicUsize = AtomicUsize::new(usize::MAX);

/// glibc maps a block on its own from `M_MMAP_THRESHOLD` up: 128 KiB unless
/// the program lowers it (then smaller mapped blocks are found by the
/// catch-up's schedule instead of its hint); less the chunk header, with
/// room for rounding.
const GLIBC_SMALLEST_OWN_MAPPING: usize = (128 << 10) - 64;

/// The smallest `realloc` size that takes the careful path: the advice
/// floor while nothing is excluded, 0 while anything is (an excluded block
/// that moves must take its exclusion along, whatever its size). Like
/// [`MALLOC_BLOCK_FLOOR`], the hot path's only test.
static REALLOC_FLOOR: AtomicUsize = AtomicUsize::new(usize::MAX);

static EXCLUDED: ExclusionTable = ExclusionTable::new();

/// Set just before the program installs a seccomp filter (see
/// [`before_sandbox`]): from then on the library makes no system call of
/// its own.
static SILENCED: AtomicBool = AtomicBool::new(false);

/// Set by `mlockall`: the whole process holds secrets, nothing is advised
/// any more (see [`after_mlockall`]).
static MERGING_STOPPED: AtomicBool = AtomicBool::new(false);

fn settings() -> &'static Settings {
 // SAFETY: written only once by `start` inside the re-entrant start-up gate,
 // before `ready` lets any hook read it; shared reads only after that.
    unsafe { &*SETTINGS.0.get() }
}

pub fn config() -> &'static Config {
    &settings().config
}

pub fn active_mode() -> Mode {
    settings().active
}

pub fn fallback_errno() -> Option<i32> {
    settings().fallback_errno
}

pub fn page_size() -> usize {
    settings().page_size
}

/// Whether file descriptor 2 is still the file it was at start-up (a
/// program that closed stderr and opened a data file gets no report in it).
pub fn stderr_is_unchanged() -> bool {
    match (settings().stderr_at_start, sys::fstat(2)) {
        (Some(then), Ok(now)) => then.same_file(&now),
        _ => false,
    }
}

/// Reads the configuration, picks the engine and applies it to the process.
/// Must run exactly once, before any other function here does work.
/// `allocator_is_glibc`: the allocator serving the program is proven to be
/// glibc's own (`next::resolve_all`); only then are its large blocks news
/// for the catch-up (no block is ever looked into). `stand_aside`: the
/// program's calls do not reach this copy's hooks (`next::stands_aside`):
/// another copy of this library comes first in load order, which does the
/// work (or the process would be advised and reported on twice), or this
/// copy was `dlopen`ed after libc, where it could neither see a secret nor
/// guard an `exec`. It stays `off` and says nothing. `threads`: whether
/// and how the library may have its catch-up thread here.
pub fn start(allocator_is_glibc: bool, stand_aside: bool, threads: ThreadSupport) {
    identity::adopt_at_start();
    // Under secure execution the environment belongs to whoever started a
    // privileged program: no variable of it may steer us, no file is
    // written, and the process's memory is left alone (`off`).
    let secure_execution = os::secure_execution();
    // Standing aside, this copy touches nothing of the process: `off`
    // elsewhere switches merge-any off, which here would undo (and unmerge)
    // what the working copy, or the program itself, set — the working copy
    // may have started first, from a constructor's malloc, or this copy may
    // be a later dlopen.
    let standing_aside = stand_aside && !secure_execution;
    let config = if secure_execution {
        Config::SECURE_EXECUTION
    } else if standing_aside {
        Config::STANDING_ASIDE
    } else {
        Config::from_lookup(os::getenv, print_bad_value)
    };
    // Only the process the user started reports unasked: whether its parent
    // still runs the program it ran now is asked at exit (see
    // `identity::starter`).
    if !config.stats_requested && config.stats != StatsDestination::Off {
        identity::note_parent_image();
    }
    let page_size = os::page_size();
    let (active, fallback_errno) = if standing_aside {
        (Mode::Off, None)
    } else {
        exec_guard::start();
        choose_engine(config.mode)
    };
 // SAFETY: the start-up gate runs this once, before any reader exists (hooks
 // read the settings only once `ready`).
    unsafe {
        *SETTINGS.0.get() = Settings {
            config,
            stderr_at_start: sys::fstat(2).ok(),
            active,
            fallback_errno,
            page_size,
        };
    }
    if active == Mode::Advise && allocator_is_glibc && config.scan_interval_ms > 0 {
        MALLOC_BLOCK_FLOOR.store(GLIBC_SMALLEST_OWN_MAPPING, Relaxed);
    }
    sync_realloc_floor();
    if active == Mode::Process && config.exclude.stack {
        unmerge_main_stack();
    }
    if active == Mode::Advise && config.scan_interval_ms > 0 {
        catchup::enable(config.scan_interval_ms);
        catchup_thread::enable(threads.spawn, threads.glibc_threads, allocator_is_glibc);
    }
    // Deciding what pays needs the thread: in `advise` mode the catch-up's
    // (which a zero interval turns off), in `process` mode its own.
    let thread_allowed = active == Mode::Process || catchup::enabled();
    if config.register == Register::Paying
        && thread_allowed
        && paying::enable(active == Mode::Process)
        && active == Mode::Process
    {
        catchup_thread::enable(threads.spawn, threads.glibc_threads, false);
    }
}

fn judge_vma(vma: &MapsLine, below: Option<&MapsLine>) -> VmaVerdict {
    // The library's own zero-fill mapping (counters, tables) is never ours
    // to merge: it is written constantly.
    let own = crate::counters::own_bss_address();
    if vma.start <= own && own < vma.end {
        return VmaVerdict::NotOurs;
    }
    policy::judge_vma(vma, below, config())
}

/// In a forked child (`pthread_atfork`): counters and catch-up start over.
pub fn after_fork_in_child() {
    identity::adopt_as_forked_child();
    start_over();
}

pub(super) fn start_over() {
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

fn advise_vma(range: Range) -> bool {
    advise(range, Source::CatchUp).is_ok()
}

/// Called by hooks every so many calls: where the process does without its
/// catch-up thread (`catchup_thread::hooks_step_instead`), runs a catch-up
/// step when due (never after `mlockall`: there is nothing left to
/// advise); and takes back merge-any lent to an `exec` that failed.
#[inline]
pub fn poll_catch_up() {
    if silenced() {
        return;
    }
    if exec_guard::any_lent() {
        take_back_merge_any();
    }
    if paying::pending() {
        // Decisions wait (the thread left for a fork, or never came).
        catchup_thread::note_second_duty();
    }
    if !MERGING_STOPPED.load(Relaxed) && catchup_thread::hooks_step_instead() && catchup::due() {
        // A raw clone child owns a copy of the parent's scan state and
        // counters: start over before its first step (a getpid per step);
        // a vfork child runs in its parent's memory and leaves it alone.
        if identity::adopt_if_new_process() {
            start_over();
        }
        if identity::shares_owners_memory() {
            return;
        }
        catchup_thread::hook_step(|| catchup::poll(&judge_vma, &advise_vma));
    }
}

// ---------------------------------------------------------------------------
// The catch-up thread (`core::catchup_thread`): what the hooks tell it

/// What the interposition layer gives the engine to run a catch-up thread
/// with (see `catchup_thread::enable`).
pub struct ThreadSupport {
    pub spawn: catchup_thread::Spawn,
    /// The address of glibc's count of its threads (0: not found).
    pub glibc_threads: usize,
}

/// Memory no hook advised may have appeared: a glibc-mapped block (from the
/// malloc family), a new thread (and with it, a malloc arena), a raw
/// `syscall(SYS_mmap)`. The catch-up thread takes it from here.
#[inline]
pub fn note_new_memory() {
    if silenced() {
        return;
    }
    paying::note_news();
    if catchup::enabled() {
        catchup_thread::note_new_memory();
    } else if paying::enabled() {
        catchup_thread::note_second_duty();
    }
}

/// The malloc family's brk sentinel (only its `advise`-over-glibc
/// wrappers ask): whether the brk heap grew enough to be news.
#[inline(always)]
pub fn brk_grew() -> bool {
    catchup_thread::brk_grew()
}

/// [`brk_grew`] said so.
#[cold]
#[inline(never)]
pub fn note_brk_growth() {
    if !silenced() {
        catchup_thread::note_brk_growth();
    }
}

/// The catch-up thread's body (its start routine calls it): the catch-up's
/// steps, and the decisions about what pays (`core::paying`).
pub fn catch_up_thread_main() {
    catchup_thread::thread_main(
        || catchup::thread_step(&judge_vma, &advise_vma),
        || paying::step(&judge_vma, decisions_permitted),
    );
}

/// Whether the decisions may change what ksmd is given now: not once
/// merging stopped or the library fell silent, and under `process` not
/// while merge-any is lent to an `exec` or after the program switched it
/// off (then for good).
fn decisions_permitted() -> bool {
    if MERGING_STOPPED.load(Relaxed) || silenced() {
        paying::disable();
        return false;
    }
    if settings().active != Mode::Process {
        return true;
    }
    if exec_guard::program_switched_off() {
        paying::disable();
        return false;
    }
    !exec_guard::any_lent()
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

/// The program's main thread calls `pthread_exit`. The process now ends
/// when its last thread does, and with our thread alive it would end only
/// once ours noticed: no decisions about what pays from here on (what
/// rests stays out; nothing that paid was taken out), so that in `process`
/// mode no thread of ours is there to wait for.
pub fn main_thread_ending() {
    paying::disable();
    catchup_thread::main_thread_ending();
}

/// Whether the process stopped merging for good (`mlockall`).
pub(super) fn merging_stopped() -> bool {
    MERGING_STOPPED.load(Relaxed)
}

// ---------------------------------------------------------------------------
// exec: merge-any must not pass into a program the library does not run in
// (the mechanism is `exec_guard`'s)

/// Whether `exec`s need looking at: merge-any is this process's engine
/// (and `mlockall` or a sandbox has not switched it off for good, nor the
/// program itself).
pub fn merge_any_in_use() -> bool {
    settings().active == Mode::Process
        && !MERGING_STOPPED.load(Relaxed)
        && !silenced()
        && !exec_guard::program_switched_off()
}

/// The program's own switch of merge-any (`prctl(PR_SET_MEMORY_MERGE,
/// on)`, which `call` makes, saying whether it succeeded): the program's
/// choice stands — after it switched merge-any off, nothing of ours
/// switches it back on, until it switches it on again itself.
pub fn program_switches_merge_any<R>(on: bool, call: impl FnOnce() -> (R, bool)) -> R {
    exec_guard::program_switches(on, call)
}

/// The program is about to install a seccomp filter (`prctl(PR_SET_SECCOMP)`
/// or the `seccomp` system call, seen through libc): a sandbox that allows
/// exactly the system calls the program makes kills it for any other. So
/// the library falls silent for good first: nothing more is advised or
/// scanned, `exec`s are not inspected, thread stacks are not looked up and
/// no exit report is written; the hooks only forward. What the program
/// advised stays mergeable; merge-any does not: under `process` it is
/// switched off for good now, while the `prctl` is still allowed, since the
/// `exec` guard cannot run under the filter and merge-any would pass into
/// whatever the sandbox `exec`s (the kernel unmerges the process's merged
/// pages: the price of a sandbox).
pub fn before_sandbox() {
    if settings().active == Mode::Process && !silenced() {
        exec_guard::stop_for_good();
    }
    SILENCED.store(true, SeqCst);
    MALLOC_BLOCK_FLOOR.store(usize::MAX, SeqCst);
    REALLOC_FLOOR.store(usize::MAX, SeqCst);
    catchup::disable();
    paying::disable();
    // The filter may be applied to every thread (`TSYNC`) or only to the
    // caller (ours would stay unrestricted): either way, ours goes first.
    let retired = catchup_thread::retire();
    after_single_threaded_call(retired);
}

/// Whether the library has fallen silent ([`before_sandbox`]).
#[inline]
pub fn silenced() -> bool {
    SILENCED.load(Relaxed)
}

/// About to `exec` `target` with environment `env` (`as_we_resolve`: the
/// `exec` resolves paths as we do now, see `os::exec_target::inspect_at`). Under `process`, the kernel
/// (Linux 6.7+) passes merge-any to the new program, which is only right if
/// the library will run there to decide for itself; otherwise merge-any is
/// switched off first (the kernel then walks and unmarks every mergeable
/// VMA: the cost of keeping the flag out of a program that never asked for
/// it, measured in BENCHMARKS.md). The caller hands the result to
/// [`after_exec_returned`] if the call comes back.
pub fn before_exec(target: ExecTarget, env: &LoaderEnv, as_we_resolve: bool) -> Option<ExecLent> {
    if !merge_any_in_use() {
        return None;
    }
    let lent = exec_guard::before_exec(target, env, as_we_resolve)?;
    counters().count_exec_without_merge_any();
    Some(lent)
}

/// The `exec` (or the spawn, in the parent) is over and this process goes
/// on: merge-any back on if [`before_exec`] switched it off and no other
/// `exec` is in flight.
pub fn after_exec_returned(lent: Option<ExecLent>) {
    if let Some(lent) = lent {
        exec_guard::returned(lent, merge_any_in_use());
    }
}

/// Whether merge-any is lent to an `exec` (one load: for every hook's
/// poll, see [`poll_catch_up`]).
#[inline(always)]
pub fn merge_any_lent() -> bool {
    exec_guard::any_lent()
}

#[cold]
#[inline(never)]
fn take_back_merge_any() {
    // A vfork child still running in our memory must leave it to us.
    if !identity::shares_owners_memory() {
        exec_guard::take_back(merge_any_in_use());
    }
}

fn choose_engine(requested: Mode) -> (Mode, Option<i32>) {
    match requested {
        Mode::Auto | Mode::Process => match ksm::merge_any(true) {
            Ok(_) => (Mode::Process, None),
            Err(e) => {
                if requested == Mode::Process {
                    warn(b"KSMAUTO_MODE=process: the kernel refused PR_SET_MEMORY_MERGE (needs Linux 6.4+ with KSM): ", e, b"; using advise");
                }
                (Mode::Advise, Some(e))
            }
        },
        Mode::Advise | Mode::Off => {
            // A parent in `process` mode passes merge-any down through fork
            // and exec; this process asked for something else.
            if ksm::merge_any_is_on() {
                let _ = ksm::merge_any(false);
            }
            (requested, None)
        }
    }
}

fn warn(before: &[u8], errno: i32, after: &[u8]) {
    let mut buf = [0u8; 256];
    let mut w = BufWriter::new(&mut buf);
    w.str("ksmauto: ")
        .bytes(before)
        .str(sys::errno_name(errno))
        .bytes(after)
        .str("\n");
    let _ = sys::write_all_no_sigpipe(2, w.as_bytes());
}

fn print_bad_value(bad: BadValue) {
    let mut buf = [0u8; 512];
    let mut w = BufWriter::new(&mut buf);
    w.str("ksmauto: ignoring ")
        .str(bad.variable)
        .str("=")
        .printable(&bad.value[..bad.value.len().min(200)]);
    w.str(": expected ")
        .str(bad.expected)
        .str("; using the default (")
        .str(bad.default)
        .str(")\n");
    let _ = sys::write_all_no_sigpipe(2, w.as_bytes());
}

/// The whole VMAs that `range` lies in, when they are all private anonymous
/// memory; otherwise `range` itself. A new mapping (or a glibc-mapped block)
/// often shares its VMA with an anonymous neighbour the kernel merged it
/// with; advising only the new part would split that VMA in two.
fn whole_vmas(range: Range) -> Range {
    let Ok(first) = sys::vma_at(range.start) else {
        return range;
    };
    let mut whole = Range {
        start: first.start,
        end: first.end,
    };
    let mut private_anon = !first.shared && !first.file_backed;
    while private_anon && whole.end < range.end {
        match sys::vma_at(whole.end) {
            Ok(next) if next.start == whole.end => {
                private_anon = !next.shared && !next.file_backed;
                whole.end = next.end;
            }
            _ => private_anon = false,
        }
    }
    if private_anon && whole.start <= range.start && whole.end >= range.end {
        whole
    } else {
        range
    }
}

fn page_range(addr: usize, len: usize) -> Option<Range> {
    Range::covering(addr, len, page_size())
}

/// Marks `range` mergeable, minus any excluded parts. Failures are counted;
/// the first one is also returned.
///
/// Reads the exclusion table in place (no copy: hooks have little stack).
/// An exclusion added while this runs may have been missed by the read and
/// then overwritten by the `madvise`: the table's sequence number tells, and
/// the exclusions in `range` are then taken back out here (the excluder
/// unmerges after bumping the sequence, so whichever runs last unmerges).
fn advise(range: Range, source: Source) -> Result<(), i32> {
    if MERGING_STOPPED.load(SeqCst) {
        return Ok(());
    }
    let c = counters();
    // Leaving excluded parts out splits VMAs: not near `vm.max_map_count`.
    if source != Source::Api && EXCLUDED.overlaps(range) && catchup::map_count_headroom_low() {
        c.count_skipped(SkipReason::MapCount);
        return Ok(());
    }
    // The program asking for a range is its own choice: nothing of it
    // rests any more. Any other advice leaves resting ranges out.
    if source == Source::Api {
        resting::forget(range);
    }
    let before = EXCLUDED.sequence();
    let mut result = Ok(());
    let left_out = EXCLUDED.for_each_gap(range, |piece| {
        resting::for_each_gap(piece, |piece| {
            match ksm::mark_mergeable(piece.start, piece.len()) {
                Ok(()) => c.count_advised(source, piece.len()),
                // The catch-up runs beside the program's threads: a VMA it
                // judged may be unmapped before its advice (`ENOMEM`, the
                // part still mapped is advised). That is no failure.
                Err(libc::ENOMEM) if source == Source::CatchUp && !wholly_mapped(piece) => {
                    result = result.and(Err(libc::ENOMEM));
                }
                Err(e) => {
                    c.count_madvise_failure(e);
                    result = result.and(Err(e));
                }
            }
        })
    });
    if left_out {
        c.count_skipped(SkipReason::Excluded);
    }
    take_back_exclusions_added_since(before, range);
    result
}

/// A re-probe (`core::paying`) gives `range`, which it took out earlier,
/// back to ksmd: minus exclusions (they always win, with the same
/// sequence check as [`advise`]), and only while every part of it is
/// still private anonymous memory (checked before and after, as the
/// catch-up checks its advice; without `PROCMAP_QUERY` the check passes).
/// Not counted as advice. Returns whether it was given back.
pub(super) fn register_again(range: Range) -> bool {
    if MERGING_STOPPED.load(SeqCst) || silenced() || !private_anonymous(range) {
        return false;
    }
    let before = EXCLUDED.sequence();
    let mut given = true;
    EXCLUDED.for_each_gap(range, |piece| {
        given &= ksm::mark_mergeable(piece.start, piece.len()).is_ok();
    });
    take_back_exclusions_added_since(before, range);
    if !private_anonymous(range) {
        let _ = ksm::unmark(range.start, range.len());
        return false;
    }
    given
}

/// Whether all of `range` is mapped private anonymous memory (`true`
/// where the kernel cannot be asked).
fn private_anonymous(range: Range) -> bool {
    let mut at = range.start;
    while at < range.end {
        match sys::vma_at(at) {
            Ok(vma) if vma.start <= at && !vma.shared && !vma.file_backed => at = vma.end,
            Ok(_) | Err(libc::ENOENT) => return false,
            Err(_) => return true,
        }
    }
    true
}

/// After advising `range`: if the exclusion table changed since `sequence`
/// was read, unmerges the exclusions in `range`, again until a walk of the
/// table saw it hold still (a walk is not a snapshot: a range moving between
/// slots can be missed, never without the sequence changing). Past a few
/// rounds of constant churn, all of `range` is unmerged: never mergeable
/// wins over merged (the next advice or catch-up makes the rest mergeable
/// again). Bounded, so a hook never waits on another thread.
fn take_back_exclusions_added_since(mut sequence: u64, range: Range) {
    for _ in 0..32 {
        let now = EXCLUDED.sequence();
        if now == sequence {
            return;
        }
        sequence = now;
        if MERGING_STOPPED.load(SeqCst) {
            let _ = ksm::unmark(range.start, range.len());
            return;
        }
        EXCLUDED.for_each_overlapping(range, |excluded| {
            let part = Range {
                start: excluded.start.max(range.start),
                end: excluded.end.min(range.end),
            };
            let _ = ksm::unmark(part.start, part.len());
        });
    }
    let _ = ksm::unmark(range.start, range.len());
}

fn unmerge(range: Range) -> Result<(), i32> {
    let result = ksm::unmark(range.start, range.len());
    match result {
        Ok(()) => counters().count_unmerged(range.len()),
        Err(e) => counters().count_madvise_failure(e),
    }
    result
}

/// `realloc`'s careful path is needed only while something is excluded (or
/// for blocks big enough to need advice). Called after every change to the
/// table; an insert racing a forget converges because both re-check.
fn sync_realloc_floor() {
    if EXCLUDED.is_empty() {
        REALLOC_FLOOR.store(MALLOC_BLOCK_FLOOR.load(Relaxed), SeqCst);
        if EXCLUDED.is_empty() {
            return;
        }
    }
    REALLOC_FLOOR.store(0, SeqCst);
}

/// Whether every page of `range` is mapped (one VMA or several in a row).
/// Without `PROCMAP_QUERY` (Linux < 6.11) it answers "yes".
fn wholly_mapped(range: Range) -> bool {
    let mut at = range.start;
    while at < range.end {
        match sys::vma_at(at) {
            Ok(vma) if vma.start <= at => at = vma.end,
            Ok(_) | Err(libc::ENOENT) => return false,
            Err(_) => return true,
        }
    }
    true
}

/// Whether a range is mapped at all (any page of it). Without
/// `PROCMAP_QUERY` (Linux < 6.11) it answers "yes": nothing is dropped.
fn is_mapped(range: Range) -> bool {
    match sys::first_vma_from(range.start) {
        Ok(vma) => vma.start < range.end,
        Err(libc::ENOENT) => false,
        Err(_) => true,
    }
}

/// Records `range` as never mergeable; when the table is full, first drops
/// the ranges that are no longer mapped. Returns whether it is recorded.
fn record_exclusion(range: Range) -> Inserted {
    let mut inserted = EXCLUDED.insert(range);
    if inserted == Inserted::Full && EXCLUDED.drop_unmapped(is_mapped) > 0 {
        inserted = EXCLUDED.insert(range);
    }
    sync_realloc_floor();
    inserted
}

/// Records `range` and unmerges it (under every engine: a region advised
/// earlier, or merge-any, made it mergeable). `Err(ENOSPC)` when the table
/// had no room (it is still unmerged now).
fn exclude(range: Range) -> Result<(), i32> {
    let recorded = record_exclusion(range);
    resting::forget(range);
    counters().count_excluded(range.len());
    let unmerged = unmerge(range);
    if recorded == Inserted::Full {
        // Whatever the unmerge did, the future is not promised.
        return Err(libc::ENOSPC);
    }
    match unmerged {
        // EINVAL: this kernel has no KSM, so nothing can be merged anyway.
        Ok(()) | Err(libc::EINVAL) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Excludes memory that already was excluded, at its new place: if the
/// table cannot remember it, the process stops merging (an exclusion must
/// stick, and may guard a secret).
fn exclude_moved(range: Range) {
    if exclude(range) == Err(libc::ENOSPC) {
        stop_merging_for_good();
    }
}

fn forget_exclusions(range: Range) {
    if !EXCLUDED.is_empty() {
        EXCLUDED.forget(range);
        sync_realloc_floor();
    }
}

/// A successful `mmap`/`mmap64` returned `addr`.
pub fn after_mmap(addr: usize, len: usize, prot: i32, flags: i32) {
    if silenced() {
        return;
    }
    let Some(range) = page_range(addr, len) else {
        return;
    };
    if flags & libc::MAP_FIXED != 0 {
        forget_exclusions(range);
        resting::forget(range);
    }
    let s = settings();
    match (s.active, policy::judge_mapping(len, prot, flags, &s.config)) {
        (Mode::Advise, Verdict::Merge) => {
            let _ = advise(whole_vmas(range), Source::Mmap);
            note_registered(range.len());
        }
        (Mode::Advise, Verdict::Skip(reason)) => counters().count_skipped(reason),
        // merge-any made it mergeable already; take excluded classes back out.
        (Mode::Process, Verdict::Skip(reason @ (SkipReason::Exec | SkipReason::Stack))) => {
            counters().count_skipped(reason);
            let _ = unmerge(range);
        }
        (Mode::Process, Verdict::Skip(reason)) => counters().count_skipped(reason),
        (Mode::Process, Verdict::Merge) => note_registered(range.len()),
        _ => {}
    }
}

/// `len` bytes were given to ksmd (by the hook's advice, or by merge-any):
/// news for the decisions about what pays, once enough of it.
fn note_registered(len: usize) {
    if paying::note_mapped(len) {
        catchup_thread::note_second_duty();
    }
}

/// Whether a block of `size` bytes might be one glibc's malloc maps on its
/// own (with its hidden `mmap`, which no hook sees): only ever true in
/// `advise` mode over glibc's malloc. Such blocks are not advised one by one
/// (glibc has written the block's header before we could: the block's VMA
/// then has a reverse-map root of its own and could never coalesce with its
/// neighbours again, one VMA per live block); the catch-up scan advises them
/// in batches, once neighbouring blocks have coalesced into one VMA. The
/// hooks only tell it there is news ([`note_new_memory`]).
#[inline(always)]
pub fn block_may_be_own_mapping(size: usize) -> bool {
    size >= MALLOC_BLOCK_FLOOR.load(Relaxed)
}

/// [`block_may_be_own_mapping`] for the wrappers that exist only while the
/// allocator is watched: a compare with a constant.
#[inline(always)]
pub fn large_for_glibc(size: usize) -> bool {
    size >= GLIBC_SMALLEST_OWN_MAPPING
}

/// Whether the malloc family must look at block sizes at all
/// ([`block_may_be_own_mapping`] can be true).
pub fn watches_allocator() -> bool {
    MALLOC_BLOCK_FLOOR.load(Relaxed) != usize::MAX
}

/// Whether the malloc family's calls are counted: only when the user asked
/// for the report (`KSMAUTO_STATS` set and not `off`). Counting costs the
/// hot path a few instructions per call; the other hooks are always
/// counted (each is a system call anyway).
pub fn counts_allocator_calls() -> bool {
    let c = config();
    c.stats_requested && c.stats != StatsDestination::Off
}

/// Memory in `[addr, addr + len)` was unmapped.
pub fn after_munmap(addr: usize, len: usize) {
    if let Some(range) = page_range(addr, len) {
        forget_exclusions(range);
        resting::forget(range);
    }
}

/// Whether new threads must take their stacks out of merging themselves.
pub fn threads_unmerge_their_stacks() -> bool {
    let s = settings();
    s.active == Mode::Process && s.config.exclude.stack && !silenced()
}

/// Called on a new thread, first thing, when
/// [`threads_unmerge_their_stacks`]: `stack` is that thread's stack (what
/// glibc mapped for it, without the guard). Exactly its pages are taken out
/// of merging: the VMA holding them may be larger (glibc's stacks without a
/// guard page coalesce with their neighbours, stacks included).
pub fn thread_stack_started(stack_addr: usize, stack_len: usize) {
    if silenced() {
        return;
    }
    let Some(stack) = page_range(stack_addr, stack_len) else {
        return;
    };
    counters().count_skipped(SkipReason::Stack);
    resting::forget(stack);
    let _ = unmerge(stack);
}

fn stacks_excluded() -> bool {
    let s = settings();
    s.config.exclude.stack && s.active != Mode::Off && !silenced()
}

/// Before `pthread_create` starts a thread on a stack the program supplied
/// (`pthread_attr_setstack`): a mapping of its own, or a buffer inside a
/// larger one (the malloc heap). Its pages are taken out of merging before
/// the thread runs, in both engines (whoever advised them: the `mmap` hook,
/// the catch-up's heap, merge-any), and under `advise` recorded, so that no
/// later advice covers them ([`exclude_stack`]). A buffer inside the heap
/// splits the heap's VMA around it; the rest of the heap stays mergeable.
pub fn thread_stack_supplied(stack_addr: usize, stack_len: usize) {
    if !stacks_excluded() || stack_len == 0 {
        return;
    }
    if let Some(stack) = page_range(stack_addr, stack_len) {
        exclude_stack(stack);
    }
}

/// After `pthread_create` started a thread on a stack glibc mapped for it,
/// under `advise`: `inside` is an address in that mapping (glibc's thread
/// descriptor, the `pthread_t`, lies at the top of its stack). The
/// catch-up tells a thread stack by the guard page glibc puts below it;
/// one it would not take for a stack (guard size 0, or larger than a guard,
/// also as the process's default) is excluded as the whole VMA holding it
/// (any neighbours it coalesced with are stacks too, or lose only their
/// merging). Under `process` the thread does this itself
/// ([`thread_stack_started`]).
pub fn thread_created(inside: usize) {
    if !stacks_excluded() || settings().active != Mode::Advise {
        return;
    }
    match catchup::judged_at(inside, &judge_vma) {
        Some((_, VmaVerdict::Skip(SkipReason::Stack) | VmaVerdict::NotOurs)) | None => {}
        Some((vma, _)) => exclude_stack(vma),
    }
}

/// Thread stacks are recorded only while fewer slots of the exclusion
/// table than this are in use: the rest stays for secrets, whose lack of
/// room stops all merging.
const STACK_SLOTS: usize = super::exclusions::CAPACITY / 2;

/// Takes a thread stack out of merging now; under `advise` also records it
/// in the exclusion table, which every advice (the catch-up's included)
/// leaves out, while the table is less than half full ([`STACK_SLOTS`];
/// past that, a later pass may advise the stack again). Recorded first, then unmerged:
/// an advice racing it sees the table change and takes it back out.
fn exclude_stack(stack: Range) {
    counters().count_skipped(SkipReason::Stack);
    if settings().active == Mode::Advise && EXCLUDED.slots_in_use() < STACK_SLOTS {
        let _ = record_exclusion(stack);
    }
    resting::forget(stack);
    let _ = unmerge(stack);
}

fn unmerge_main_stack() {
    let mut stack = None;
    let _ = read_lines(b"/proc/thread-self/maps\0", &SHARED_LINES, |line| {
        if let Some(vma) = MapsLine::parse(line) {
            if vma.class() == RegionClass::Stack && vma.name == b"[stack]" {
                stack = Some(Range {
                    start: vma.start,
                    end: vma.end,
                });
            }
        }
    });
    if let Some(range) = stack {
        counters().count_skipped(SkipReason::Stack);
        let _ = unmerge(range);
    }
}

/// `ksmauto_advise`: the program asks for a range to be merged.
pub fn api_advise(addr: usize, len: usize) -> Result<(), i32> {
    if silenced() {
        // No system call may be made any more: say so rather than pretend.
        return Err(libc::EPERM);
    }
    let range = page_range(addr, len).ok_or(libc::EINVAL)?;
    if settings().active == Mode::Off {
        return Ok(());
    }
    // After `mlockall`, `advise` does nothing: the process holds secrets.
    advise(range, Source::Api)
}

/// `ksmauto_exclude`: unmerge now, and never advise this range again.
pub fn api_exclude(addr: usize, len: usize) -> Result<(), i32> {
    if silenced() {
        // No system call may be made any more: say so rather than pretend.
        return Err(libc::EPERM);
    }
    let range = page_range(addr, len).ok_or(libc::EINVAL)?;
    exclude(range)
}

/// A successful `mremap(old, old_len, new_len, flags, new)`: exclusions in
/// the old range move with the memory (the kernel moved the VMA's flags, but
/// the catch-up scan would otherwise advise the new address as unknown
/// memory). An exclusion that reached the old end also covers the growth.
pub fn after_mremap(old: usize, old_len: usize, new_len: usize, flags: i32, new: usize) {
    if silenced() {
        return;
    }
    let (Some(from), Some(to)) = (page_range(old, old_len), page_range(new, new_len)) else {
        return;
    };
    // What rested there is new memory now, wherever it went.
    resting::forget(from);
    resting::forget(to);
    if EXCLUDED.is_empty() && flags & libc::MREMAP_FIXED == 0 {
        return;
    }
    let moved = from.start != to.start;
    if flags & libc::MREMAP_FIXED != 0 {
        // Whatever was mapped at the target is gone.
        EXCLUDED.forget(to);
    }
    if old_len == 0 {
        // A second mapping of shared memory: not ours to follow.
        sync_realloc_floor();
        return;
    }
    // Walk old exclusions one at a time: moving may change the table.
    let mut cursor = from.start;
    while cursor < from.end {
        let mut next: Option<Range> = None;
        EXCLUDED.for_each_overlapping(
            Range {
                start: cursor,
                end: from.end,
            },
            |r| {
                let part = Range {
                    start: r.start.max(cursor),
                    end: r.end.min(from.end),
                };
                if next.is_none_or(|n| part.start < n.start) {
                    next = Some(part);
                }
            },
        );
        let Some(part) = next else { break };
        cursor = part.end;
        let mut target = Range {
            start: part.start - from.start + to.start,
            end: part.end - from.start + to.start,
        };
        if part.end == from.end {
            target.end = to.end;
        }
        target.end = target.end.min(to.end);
        if target.start < target.end && (moved || target.end > part.end) {
            exclude_moved(target);
        }
    }
    if moved && flags & libc::MREMAP_DONTUNMAP == 0 {
        EXCLUDED.forget(from);
    } else if to.end < from.end && !moved {
        EXCLUDED.forget(Range {
            start: to.end,
            end: from.end,
        });
    }
    sync_realloc_floor();
}

/// Whether a `realloc` to `size` bytes must take the careful path.
#[inline(always)]
pub fn realloc_needs_care(size: usize) -> bool {
    size >= REALLOC_FLOOR.load(Relaxed)
}

/// Whether anything is excluded (so `realloc` must look at its block).
#[inline]
pub fn exclusions_exist() -> bool {
    !EXCLUDED.is_empty()
}

/// Whether the block `[addr, addr + len)` overlaps an exclusion.
pub fn block_is_excluded(addr: usize, len: usize) -> bool {
    match page_range(addr, len.max(1)) {
        Some(range) => EXCLUDED.overlaps(range),
        None => false,
    }
}

/// An excluded block was reallocated to `[addr, addr + len)`: the new block
/// is excluded too (it holds the same secret). The old block's pages stay
/// excluded while mapped: the allocator does not clear freed memory.
pub fn exclusion_follows_block(addr: usize, len: usize) {
    if silenced() {
        return;
    }
    if let Some(range) = page_range(addr, len.max(1)) {
        exclude_moved(range);
    }
}

fn secrets_excluded() -> bool {
    let s = settings();
    s.config.exclude.secret && s.active != Mode::Off
}

/// A successful `mlock`/`mlock2` of `[addr, addr + len)`: locked memory
/// holds secrets (keys kept out of swap), so it is never merged.
pub fn after_mlock(addr: usize, len: usize) {
    if silenced() {
        return;
    }
    if secrets_excluded() {
        if let Some(range) = page_range(addr, len) {
            exclude_secret(range);
        }
    }
}

/// A successful `madvise(addr, len, advice)` by the program: keeping memory
/// out of core dumps or wiping it in forked children marks it secret.
pub fn after_madvise(addr: usize, len: usize, advice: i32) {
    if silenced() {
        return;
    }
    // The program's own choice about merging stands: no re-probe of ours
    // gives back what it took out, nor counts what it gave as resting.
    if ksm::advice_is_about_merging(advice) {
        if let Some(range) = page_range(addr, len) {
            resting::forget(range);
        }
    }
    if ksm::advice_marks_secret(advice) && secrets_excluded() {
        if let Some(range) = page_range(addr, len) {
            exclude_secret(range);
        }
    }
}

/// Excludes a secret; one the table has no room to remember (hundreds of
/// separate secret mappings, as one `sodium_malloc` per key makes) could be
/// advised again by a later scan, so the process then stops merging, as
/// after `mlockall`: a secret must never become mergeable.
fn exclude_secret(range: Range) {
    if exclude(range) == Err(libc::ENOSPC) {
        stop_merging_for_good();
    }
}

/// A successful `mlockall`: every page of the process is locked, so every
/// page may hold a secret. The process stops merging, for good (a later
/// `munlockall` does not take back that the memory held secrets):
/// * `process`: merge-any is cleared, which makes the kernel unmerge and
///   unmark every mergeable VMA;
/// * `advise` (and after the above, for regions the program advised itself):
///   one `MADV_UNMERGEABLE` over the whole address space unmarks every
///   mergeable VMA (the kernel skips the holes and reports `ENOMEM` for
///   them); nothing is advised afterwards, `ksmauto_advise` included.
pub fn after_mlockall() {
    if silenced() {
        return;
    }
    if secrets_excluded() {
        stop_merging_for_good();
    }
}

fn stop_merging_for_good() {
    if MERGING_STOPPED.swap(true, SeqCst) {
        return;
    }
    paying::disable();
    // An advice running now re-checks and undoes itself (see `advise`).
    EXCLUDED.bump_sequence();
    if settings().active == Mode::Process {
        exec_guard::stop_for_good();
    }
    let whole_address_space = usize::MAX & !(page_size() - 1);
    let _ = ksm::unmark(0, whole_address_space);
}
