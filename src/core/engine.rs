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
//! Knows nothing about symbol names: the interposition layer calls the
//! `after_*` functions with plain numbers. Never allocates, never locks,
//! never touches `errno` (all kernel calls go through `os::sys`).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::catchup;
use super::config::{BadValue, Config, Mode};
use super::exclusions::{ExclusionTable, CAPACITY};
use super::policy::{self, GlibcChunkHeader, Range, SkipReason, Verdict, VmaVerdict};
use crate::fmt::BufWriter;
use crate::os::proc::{for_each_line, MapsLine, RegionClass};
use crate::os::{self, sys};
use crate::stats::{counters, Source};

// prctl options (Linux 6.4); spelled out so older libc headers do not matter.
const PR_SET_MEMORY_MERGE: i32 = 67;
const PR_GET_MEMORY_MERGE: i32 = 68;

/// Written once by [`start`] before any hook does work, read-only afterwards.
/// Hooks see it only after start-up: through the interposition layer's gate,
/// or, on the hot paths, through the acquire load of the forwarding table
/// that start-up publishes last (`next::publish_hot_path`).
struct Settings {
    config: Config,
    active: Mode,
    fallback_errno: Option<i32>,
    page_size: usize,
    allocator_is_glibc: bool,
}

struct SettingsCell(UnsafeCell<Settings>);
unsafe impl Sync for SettingsCell {}

static SETTINGS: SettingsCell = SettingsCell(UnsafeCell::new(Settings {
    config: Config::DEFAULT,
    active: Mode::Off,
    fallback_errno: None,
    page_size: sys::PAGE_SIZE_FALLBACK,
    allocator_is_glibc: false,
}));

/// The smallest malloc block that may be a glibc mapping of its own and need
/// advising; `usize::MAX` (nothing qualifies) unless the `advise` engine runs
/// over glibc's malloc. The malloc hot path's only test is one compare with it.
static MALLOC_BLOCK_FLOOR: AtomicUsize = AtomicUsize::new(usize::MAX);

static EXCLUDED: ExclusionTable = ExclusionTable::new();

fn settings() -> &'static Settings {
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

/// Reads the configuration, picks the engine and applies it to the process.
/// Must run exactly once, before any other function here does work.
/// `allocator_is_glibc`: the allocator serving the program is proven to be
/// glibc's own (`next::resolve_all`); only then are chunk headers read.
pub fn start(allocator_is_glibc: bool) {
    let config = Config::from_lookup(os::getenv, print_bad_value);
    let page_size = os::page_size();
    let (active, fallback_errno) = choose_engine(config.mode);
    unsafe {
        *SETTINGS.0.get() = Settings {
            config,
            active,
            fallback_errno,
            page_size,
            allocator_is_glibc,
        };
    }
    if active == Mode::Advise && allocator_is_glibc {
        // glibc never serves a block smaller than a page from its own mmap.
        let floor = config
            .min_size
            .max(page_size)
            .saturating_sub(2 * core::mem::size_of::<usize>());
        MALLOC_BLOCK_FLOOR.store(floor, Relaxed);
    }
    if active == Mode::Process && config.exclude.stack {
        unmerge_main_stack();
    }
    if active == Mode::Advise {
        catchup::enable(config.scan_interval_ms);
    }
}

fn judge_vma(vma: &MapsLine, below: Option<&MapsLine>) -> VmaVerdict {
    // The library's own zero-fill mapping (counters, tables) is never ours
    // to merge: it is written constantly.
    let own = crate::stats::counters::own_bss_address();
    if vma.start <= own && own < vma.end {
        return VmaVerdict::NotOurs;
    }
    policy::judge_vma(vma, below, config())
}

/// In a forked child (`pthread_atfork`): counters and catch-up start over.
pub fn after_fork_in_child() {
    crate::stats::counters::reset();
    catchup::reset();
}

fn advise_vma(range: Range) -> bool {
    advise(range, Source::CatchUp).is_ok()
}

/// Called by hooks every so many calls: runs a catch-up scan when due.
#[inline]
pub fn poll_catch_up() {
    catchup::poll(&judge_vma, &advise_vma);
}

/// Runs a catch-up scan now (unless one is running or catch-up is off).
pub fn catch_up_now() {
    catchup::scan(&judge_vma, &advise_vma);
}

/// Whether the user asked for a background scanning thread.
pub fn wants_scan_thread() -> bool {
    catchup::enabled() && config().scan_thread
}

/// Body of the opt-in scanning thread: scan, sleep, forever.
pub fn scan_thread_main() -> ! {
    loop {
        sys::sleep_ns(catchup::interval_ns());
        catch_up_now();
    }
}

fn choose_engine(requested: Mode) -> (Mode, Option<i32>) {
    match requested {
        Mode::Auto | Mode::Process => match sys::prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) {
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
            if sys::prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0) == Ok(1) {
                let _ = sys::prctl(PR_SET_MEMORY_MERGE, 0, 0, 0, 0);
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
fn advise(range: Range, source: Source) -> Result<(), i32> {
    let c = counters();
    let mut holes = [Range { start: 0, end: 0 }; CAPACITY];
    let n = EXCLUDED.overlapping(range, &mut holes);
    if n > 0 {
        c.count_skipped(SkipReason::Excluded);
    }
    let mut result = Ok(());
    policy::subtract(range, &holes[..n], |piece| {
        match sys::madvise(piece.start, piece.len(), libc::MADV_MERGEABLE) {
            Ok(()) => c.count_advised(source, piece.len()),
            Err(e) => {
                c.count_madvise_failure(e);
                result = result.and(Err(e));
            }
        }
    });
    result
}

fn unmerge(range: Range) {
    match sys::madvise(range.start, range.len(), libc::MADV_UNMERGEABLE) {
        Ok(()) => counters().count_unmerged(range.len()),
        Err(e) => counters().count_madvise_failure(e),
    }
}

/// A successful `mmap`/`mmap64` returned `addr`.
pub fn after_mmap(addr: usize, len: usize, prot: i32, flags: i32) {
    let Some(range) = page_range(addr, len) else {
        return;
    };
    if flags & libc::MAP_FIXED != 0 {
        EXCLUDED.forget_within(range);
    }
    let s = settings();
    match (s.active, policy::judge_mapping(len, prot, flags, &s.config)) {
        (Mode::Advise, Verdict::Merge) => {
            let _ = advise(whole_vmas(range), Source::Mmap);
        }
        (Mode::Advise, Verdict::Skip(reason)) => counters().count_skipped(reason),
        // merge-any made it mergeable already; take excluded classes back out.
        (Mode::Process, Verdict::Skip(reason @ (SkipReason::Exec | SkipReason::Stack))) => {
            counters().count_skipped(reason);
            unmerge(range);
        }
        (Mode::Process, Verdict::Skip(reason)) => counters().count_skipped(reason),
        _ => {}
    }
}

/// Whether a block of `size` bytes returned by the allocator might be a
/// mapping of its own that needs advising. The malloc hot path's only test.
#[inline(always)]
pub fn malloc_block_may_need_advice(size: usize) -> bool {
    size >= MALLOC_BLOCK_FLOOR.load(Relaxed)
}

/// glibc's malloc handed out `ptr`; if glibc mapped it with its own (hidden)
/// `mmap`, advise that whole mapping. `previous` is the block a `realloc`
/// started from, when it was one such mapping already: glibc then grew it
/// with `mremap`, which keeps the mergeable flag, so there is nothing to do.
///
/// # Safety
/// `ptr` must be a live block from glibc's malloc (the caller checked
/// [`malloc_block_may_need_advice`], which is only true with glibc).
pub unsafe fn after_malloc_block(ptr: *mut u8, previous_was_mapping: bool) {
    if ptr.is_null() || previous_was_mapping {
        return;
    }
    let Some(mapping) = glibc_mapping_of(ptr) else {
        return;
    };
    match policy::judge_class(mapping.len(), false, false, config()) {
        Verdict::Merge => {
            let _ = advise(whole_vmas(mapping), Source::Malloc);
        }
        Verdict::Skip(reason) => counters().count_skipped(reason),
    }
}

/// The mapping glibc made for block `ptr`, if it made one. Reads nothing
/// unless glibc is the serving allocator: any other allocator's block need
/// not have 16 readable bytes before it.
///
/// # Safety
/// `ptr` must be a live block from the serving allocator.
pub unsafe fn glibc_mapping_of(ptr: *mut u8) -> Option<Range> {
    if ptr.is_null() || !settings().allocator_is_glibc {
        return None;
    }
    let words = ptr as *const usize;
    let header = GlibcChunkHeader {
        prev_size: *words.sub(2),
        size: *words.sub(1),
    };
    policy::glibc_mmapped_block(ptr as usize, header, page_size())
}

/// Memory in `[addr, addr + len)` was unmapped.
pub fn after_munmap(addr: usize, len: usize) {
    if let Some(range) = page_range(addr, len) {
        EXCLUDED.forget_within(range);
    }
}

/// Whether new threads must take their stacks out of merging themselves.
pub fn threads_unmerge_their_stacks() -> bool {
    let s = settings();
    s.active == Mode::Process && s.config.exclude.stack
}

/// Called on a new thread, first thing, when
/// [`threads_unmerge_their_stacks`]: `stack` is that thread's stack.
pub fn thread_stack_started(stack_addr: usize, stack_len: usize) {
    if let Some(range) = page_range(stack_addr, stack_len) {
        counters().count_skipped(SkipReason::Stack);
        // The VMA also holds the thread's TLS above the stack proper: take
        // it all, so the VMA is not split.
        unmerge(whole_vmas(range));
    }
}

fn unmerge_main_stack() {
    let mut stack = None;
    let _ = for_each_line(b"/proc/self/maps\0", |line| {
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
        unmerge(range);
    }
}

/// `ksmauto_advise`: the program asks for a range to be merged.
pub fn api_advise(addr: usize, len: usize) -> Result<(), i32> {
    let range = page_range(addr, len).ok_or(libc::EINVAL)?;
    if settings().active == Mode::Off {
        return Ok(());
    }
    advise(range, Source::Api)
}

/// `ksmauto_exclude`: unmerge now, and never advise this range again.
pub fn api_exclude(addr: usize, len: usize) -> Result<(), i32> {
    let range = page_range(addr, len).ok_or(libc::EINVAL)?;
    let recorded = EXCLUDED.insert(range);
    counters().count_excluded(range.len());
    let result = sys::madvise(range.start, range.len(), libc::MADV_UNMERGEABLE);
    match result {
        // EINVAL: this kernel has no KSM, so nothing can be merged anyway.
        Ok(()) | Err(libc::EINVAL) if recorded => Ok(()),
        Ok(()) | Err(libc::EINVAL) => Err(libc::ENOSPC),
        Err(e) => Err(e),
    }
}
