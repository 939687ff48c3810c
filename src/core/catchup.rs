//! Catch-up: makes mergeable the private anonymous memory no hook saw.
//!
//! glibc grows the brk heap with an internal `sbrk` (each step a VMA without
//! the mergeable flag), maps thread arenas and large blocks with an internal
//! `mmap`, and runtimes map memory with raw `syscall(SYS_mmap)`. None of that
//! passes through an interposed symbol, so the `advise` engine periodically
//! reads `/proc/self/maps` and advises every qualifying VMA it has not
//! advised before — always the **whole VMA**, so the address space is never
//! fragmented (a VMA has one set of flags; advising all of it never splits
//! it, and the kernel merges it with mergeable neighbours).
//!
//! **When it runs.** No background thread by default: the hooks call
//! [`poll`] every `counters::CALLS_PER_ROUND`th call of a hook per thread
//! shard (the call counter signals it), and a scan
//! runs only if the interval has passed (`KSMAUTO_SCAN_INTERVAL`, doubling up
//! to 32× while scans find nothing new, back to the base as soon as one
//! does). `KSMAUTO_SCAN_THREAD=1` adds a timer thread for runtimes that never
//! call libc after mapping.
//!
//! **What it remembers.** The exact `(start, end)` of every VMA it advised or
//! found advised in the previous scan (a fixed-size hash set, two
//! generations); a VMA that reappears with the same bounds is skipped, one
//! whose bounds changed is advised again (a no-op for the kernel if it already
//! is mergeable). A VMA the kernel refused is not retried until its bounds
//! change (the refusal is counted once, not every scan).
//!
//! Never allocates (the tables are a zero-initialised static, touched only in
//! `advise` mode; a forked child starts over through [`reset`]), never blocks
//! (a thread that finds a scan running returns).

use core::cell::UnsafeCell;
use core::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

use super::policy::{Range, VmaVerdict};
use crate::os::proc::{for_each_line, MapsLine};
use crate::os::sys;
use crate::stats::counters;

const MAX_BACKOFF_SHIFT: u32 = 5;
/// VMAs remembered per generation; a process with more simply re-advises the
/// surplus each scan (correct, just slower).
const SET_CAPACITY: usize = 1 << 15;

/// Open-addressing set of VMA bounds. Zeroed memory is the empty set.
pub struct VmaSet {
    slots: [(usize, usize); SET_CAPACITY],
}

impl VmaSet {
    fn slot_of(start: usize, end: usize) -> usize {
        let h = (start as u64 ^ (end as u64).rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> 40) as usize % SET_CAPACITY
    }

    /// Adds `(start, end)`; `false` if the set is full.
    pub fn insert(&mut self, start: usize, end: usize) -> bool {
        let mut i = Self::slot_of(start, end);
        for _ in 0..SET_CAPACITY / 4 {
            match self.slots[i] {
                (0, 0) => {
                    self.slots[i] = (start, end);
                    return true;
                }
                (s, e) if s == start && e == end => return true,
                _ => i = (i + 1) % SET_CAPACITY,
            }
        }
        false
    }

    pub fn contains(&self, start: usize, end: usize) -> bool {
        let mut i = Self::slot_of(start, end);
        for _ in 0..SET_CAPACITY / 4 {
            match self.slots[i] {
                (0, 0) => return false,
                (s, e) if s == start && e == end => return true,
                _ => i = (i + 1) % SET_CAPACITY,
            }
        }
        false
    }
}

/// Per-process scan state. Page-aligned, sets first, so each set starts on a
/// page boundary and can be emptied with `madvise`.
#[repr(C, align(4096))]
struct State {
    sets: UnsafeCell<[VmaSet; 2]>,
    enabled: AtomicBool,
    scanning: AtomicBool,
    next_scan_ns: AtomicU64,
    backoff_shift: AtomicU64,
    scans: AtomicU64,
    /// Which of `sets` holds the previous scan's VMAs.
    current: AtomicU64,
}

// The sets are only touched by the thread that set `scanning`.
unsafe impl Sync for State {}

static STATE: State = unsafe { core::mem::zeroed() };
static INTERVAL_NS: AtomicU64 = AtomicU64::new(0);

/// Turns catch-up on with a base interval; `0` leaves it off. The first scan
/// is due one interval from now: a command that is over sooner (`ls`, `true`
/// in a shell pipeline) costs no scan, stays silent at exit, and would not
/// have lived long enough for ksmd to merge anything anyway.
pub fn enable(interval_ms: u64) {
    if interval_ms > 0 {
        let interval = interval_ms * 1_000_000;
        INTERVAL_NS.store(interval, Relaxed);
        STATE
            .next_scan_ns
            .store(sys::monotonic_coarse_ns() + interval, Relaxed);
        STATE.enabled.store(true, Release);
    }
}

pub fn enabled() -> bool {
    STATE.enabled.load(Relaxed)
}

/// In a forked child: forget the parent's scan (a scan running in another
/// thread at fork time never finishes in the child) and start over.
pub fn reset() {
    if !enabled() {
        return;
    }
    let state = &STATE;
    let sets = unsafe { &mut *state.sets.get() };
    clear(&mut sets[0]);
    clear(&mut sets[1]);
    for a in [
        &state.next_scan_ns,
        &state.backoff_shift,
        &state.scans,
        &state.current,
    ] {
        a.store(0, Relaxed);
    }
    state.scanning.store(false, Release);
}

/// Check from a hook (every so many calls): scan if the interval has passed
/// and no other thread is scanning. Out of line, so the hooks' fast path
/// carries no clock call.
#[inline(never)]
#[cold]
pub fn poll(
    judge: &impl Fn(&MapsLine, Option<&MapsLine>) -> VmaVerdict,
    advise: &impl Fn(Range) -> bool,
) {
    let state = &STATE;
    if !state.enabled.load(Relaxed) {
        return;
    }
    let now = sys::monotonic_coarse_ns();
    if now < state.next_scan_ns.load(Relaxed) {
        return;
    }
    scan_now(state, now, judge, advise);
}

/// Scans unconditionally (start-up, the timer thread), unless one is running.
pub fn scan(
    judge: &impl Fn(&MapsLine, Option<&MapsLine>) -> VmaVerdict,
    advise: &impl Fn(Range) -> bool,
) {
    if enabled() {
        scan_now(&STATE, sys::monotonic_coarse_ns(), judge, advise);
    }
}

/// The interval the timer thread sleeps between scans.
pub fn interval_ns() -> u64 {
    INTERVAL_NS.load(Relaxed)
}

#[cold]
fn scan_now(
    state: &State,
    now: u64,
    judge: &impl Fn(&MapsLine, Option<&MapsLine>) -> VmaVerdict,
    advise: &impl Fn(Range) -> bool,
) {
    if state.scanning.swap(true, Acquire) {
        return;
    }
    let previous = state.current.load(Relaxed) as usize & 1;
    let next = previous ^ 1;
    // Only the scanning thread touches the sets (guarded by `scanning`).
    let sets = unsafe { &mut *state.sets.get() };
    clear(&mut sets[next]);
    let mut advised_any = false;
    let mut below: Option<(usize, usize, [u8; 4], u64)> = None;
    let _ = for_each_line(b"/proc/self/maps\0", |line| {
        let Some(vma) = MapsLine::parse(line) else {
            return;
        };
        let below_vma = below.map(|(start, end, perms, inode)| MapsLine {
            start,
            end,
            perms,
            offset: 0,
            inode,
            name: b"",
        });
        below = Some((vma.start, vma.end, vma.perms, vma.inode));
        match judge(&vma, below_vma.as_ref()) {
            VmaVerdict::NotOurs => {}
            VmaVerdict::Skip(reason) => {
                if !sets[previous].contains(vma.start, vma.end) {
                    counters().count_skipped(reason);
                }
                sets[next].insert(vma.start, vma.end);
            }
            VmaVerdict::Merge => {
                if !sets[previous].contains(vma.start, vma.end) {
                    advised_any |= advise(Range {
                        start: vma.start,
                        end: vma.end,
                    });
                }
                sets[next].insert(vma.start, vma.end);
            }
        }
    });
    state.current.store(next as u64, Relaxed);
    state.scans.fetch_add(1, Relaxed);
    let shift = if advised_any {
        0
    } else {
        (state.backoff_shift.load(Relaxed) + 1).min(MAX_BACKOFF_SHIFT as u64)
    };
    state.backoff_shift.store(shift, Relaxed);
    state
        .next_scan_ns
        .store(now + (INTERVAL_NS.load(Relaxed) << shift), Relaxed);
    state.scanning.store(false, Release);
}

/// Empties a set by handing its pages back to the kernel (they read as
/// zero afterwards), which costs nothing for pages never touched.
fn clear(set: &mut VmaSet) {
    let start = set as *mut VmaSet as usize;
    let page = crate::os::page_size();
    let len = core::mem::size_of::<VmaSet>();
    if start % page == 0 && sys::madvise(start, len, libc::MADV_DONTNEED).is_ok() {
        return;
    }
    set.slots.iter_mut().for_each(|s| *s = (0, 0));
}

/// Scans completed in this process (for the report).
pub fn scans() -> u64 {
    STATE.scans.load(Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vma_set_remembers_exact_bounds_only() {
        let mut set: Box<VmaSet> = unsafe { Box::new_zeroed().assume_init() };
        assert!(set.insert(0x1000, 0x2000));
        assert!(set.insert(0x1000, 0x3000));
        assert!(set.contains(0x1000, 0x2000));
        assert!(set.contains(0x1000, 0x3000));
        assert!(!set.contains(0x1000, 0x4000));
        assert!(!set.contains(0x2000, 0x3000));
        for i in 1..10_000usize {
            assert!(set.insert(i << 12, (i << 12) + 0x1000));
        }
        assert!((1..10_000usize).all(|i| set.contains(i << 12, (i << 12) + 0x1000)));
    }
}
