//! Ranges that must never be mergeable: what the program excluded with
//! `ksmauto_exclude`, and memory it marked as secret (`mlock`,
//! `MADV_DONTDUMP`, `MADV_WIPEONFORK`).
//!
//! A fixed table of `AtomicU64` slots (no allocation, no lock). One slot is
//! one range, packed into a single word (start and length in 4 KiB units),
//! so every change of a slot is one compare-and-swap:
//!
//! * **insert** first looks for a slot it can grow to cover the new range
//!   (overlapping or adjacent): a CAS that only *adds* coverage, so there is
//!   never a moment when an excluded page is missing. Only when none fits
//!   does it claim a free slot. Excluding the same 32-byte key's page 300
//!   times, or 300 keys on a few heap pages, takes one slot per run of pages.
//! * **forget** trims what was unmapped out of every slot it touches; a slot
//!   split in two by a hole first publishes its upper part in a free slot,
//!   then shrinks (again: no window without coverage of mapped memory).
//! * readers walk the slots in place, without copying the table (hooks have
//!   ~1 KiB of stack), up to a high-water mark. A walk is not a snapshot: a
//!   range that moves from one slot to another while it runs (coalescing,
//!   splitting) can be missed.
//! * so every change that adds coverage bumps [`ExclusionTable::sequence`]
//!   *after* it is visible and *before* any coverage it duplicates is
//!   removed elsewhere. A walk during which the sequence did not change saw
//!   everything. Whoever advises memory reads the sequence before reading
//!   the table and again after its `madvise`; if it moved, the adviser takes
//!   the exclusions in its range back out itself, until the sequence holds
//!   still (`engine::advise`). An excluder unmerges after bumping, so one of
//!   the two always unmerges last.
//!
//! Knows nothing about system calls: the engine decides when a range is
//! still mapped ([`ExclusionTable::drop_unmapped`]).
//!
//! The table is a [`RangeTable`] of [`CAPACITY`] slots; `core::paying`
//! keeps the ranges it took back from ksmd ("resting") in one of its own
//! size, which every advice subtracts the same way.

use core::sync::atomic::{
    AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, SeqCst},
};

use super::policy::Range;

pub const CAPACITY: usize = 256;

/// Ranges are stored in units of the smallest page size (any real page size
/// is a multiple of it, so page-aligned ranges are exact).
const UNIT_SHIFT: u32 = 12;
const LEN_BITS: u32 = 20;
/// The most units one slot holds (4 GiB); longer ranges take several slots.
const MAX_UNITS: u64 = (1 << LEN_BITS) - 1;
/// Start units must fit the remaining 44 bits (addresses below 2^56: every
/// user address on x86-64, 5-level paging included, and on arm64).
const MAX_START_UNIT: u64 = (1 << (64 - LEN_BITS)) - 1;
const FREE: u64 = 0;

/// What [`ExclusionTable::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The range was excluded already; nothing changed.
    AlreadyCovered,
    /// Recorded (by growing a slot or claiming one).
    Added,
    /// No slot could take (all of) it.
    Full,
}

fn pack(r: Range) -> Option<u64> {
    let start = (r.start >> UNIT_SHIFT) as u64;
    let units = ((r.end - r.start) >> UNIT_SHIFT) as u64;
    if units == 0 || units > MAX_UNITS || start > MAX_START_UNIT {
        return None;
    }
    Some(start << LEN_BITS | units)
}

fn unpack(v: u64) -> Range {
    let start = ((v >> LEN_BITS) as usize) << UNIT_SHIFT;
    let len = ((v & MAX_UNITS) as usize) << UNIT_SHIFT;
    Range {
        start,
        end: start + len,
    }
}

fn touches(a: &Range, b: &Range) -> bool {
    a.start <= b.end && b.start <= a.end
}

fn union(a: Range, b: Range) -> Range {
    Range {
        start: a.start.min(b.start),
        end: a.end.max(b.end),
    }
}

/// The exclusions: ranges never to merge.
pub type ExclusionTable = RangeTable<CAPACITY>;

/// A lock-free set of page ranges in `N` slots (see the module doc).
pub struct RangeTable<const N: usize> {
    slots: [AtomicU64; N],
    /// One past the highest slot ever claimed: readers stop there.
    high_water: AtomicUsize,
    /// Slots in use.
    live: AtomicUsize,
    /// Bumped after every change that adds coverage.
    sequence: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_SLOT: AtomicU64 = AtomicU64::new(FREE);

impl<const N: usize> RangeTable<N> {
    pub const fn new() -> RangeTable<N> {
        RangeTable {
            slots: [EMPTY_SLOT; N],
            high_water: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            sequence: AtomicU64::new(0),
        }
    }

    fn in_use(&self) -> &[AtomicU64] {
        &self.slots[..self.high_water.load(Acquire).min(N)]
    }

    /// Changes whenever coverage was added (see the module doc).
    pub fn sequence(&self) -> u64 {
        self.sequence.load(SeqCst)
    }

    /// Makes every current reader of [`sequence`](Self::sequence) look again
    /// (for changes outside the table that advisers must honour).
    pub fn bump_sequence(&self) {
        self.sequence.fetch_add(1, SeqCst);
    }

    /// Records `range` (page-aligned).
    pub fn insert(&self, range: Range) -> Inserted {
        let mut outcome = Inserted::AlreadyCovered;
        let mut start = range.start;
        // Ranges longer than one slot holds go in slot-sized pieces.
        while start < range.end {
            let end = range
                .end
                .min(start.saturating_add((MAX_UNITS as usize) << UNIT_SHIFT));
            match self.insert_piece(Range { start, end }) {
                Inserted::AlreadyCovered => {}
                Inserted::Added => outcome = Inserted::Added,
                Inserted::Full => return Inserted::Full,
            }
            start = end;
        }
        outcome
    }

    fn insert_piece(&self, piece: Range) -> Inserted {
        if pack(piece).is_none() {
            return Inserted::Full;
        }
        for (i, slot) in self.in_use().iter().enumerate() {
            let mut current = slot.load(Acquire);
            while current != FREE {
                let have = unpack(current);
                if have.start <= piece.start && piece.end <= have.end {
                    return Inserted::AlreadyCovered;
                }
                if !touches(&have, &piece) {
                    break;
                }
                let Some(grown) = pack(union(have, piece)) else {
                    break;
                };
                match slot.compare_exchange(current, grown, SeqCst, Acquire) {
                    Ok(_) => {
                        self.bump_sequence();
                        self.absorb_into(i, unpack(grown));
                        return Inserted::Added;
                    }
                    Err(now) => current = now,
                }
            }
        }
        if self.claim(piece) {
            Inserted::Added
        } else {
            Inserted::Full
        }
    }

    /// Puts `piece` in a free slot (never merging it into another).
    fn claim(&self, piece: Range) -> bool {
        let Some(packed) = pack(piece) else {
            return false;
        };
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.load(Relaxed) == FREE
                && slot.compare_exchange(FREE, packed, SeqCst, Relaxed).is_ok()
            {
                self.live.fetch_add(1, SeqCst);
                self.high_water.fetch_max(i + 1, SeqCst);
                self.bump_sequence();
                return true;
            }
        }
        false
    }

    /// After slot `grown_at` grew to `grown`: takes in the slots it now
    /// overlaps or touches (first growing it over them, then freeing them,
    /// so coverage never shrinks), keeping the table as small as the coverage.
    fn absorb_into(&self, grown_at: usize, mut grown: Range) {
        let owner = &self.slots[grown_at];
        for (i, slot) in self.in_use().iter().enumerate() {
            let v = slot.load(Acquire);
            if i == grown_at || v == FREE {
                continue;
            }
            let other = unpack(v);
            if !touches(&grown, &other) {
                continue;
            }
            let wider = union(grown, other);
            if wider != grown {
                let (Some(from), Some(to)) = (pack(grown), pack(wider)) else {
                    continue;
                };
                if owner.compare_exchange(from, to, SeqCst, Relaxed).is_err() {
                    // Someone else changed it meanwhile: leave the rest.
                    return;
                }
                // Before `other` goes: a reader that saw `owner` before it
                // grew and `other` after it was freed must notice.
                self.bump_sequence();
                grown = wider;
            }
            if slot.compare_exchange(v, FREE, SeqCst, Relaxed).is_ok() {
                self.live.fetch_sub(1, SeqCst);
            }
        }
    }

    /// Removes `gone` (unmapped or replaced memory) from every range.
    pub fn forget(&self, gone: Range) {
        if gone.is_empty() {
            return;
        }
        for slot in self.in_use() {
            let mut current = slot.load(Acquire);
            // The upper part already put in a slot of its own, if a retry
            // comes back to the same split.
            let mut published: Option<Range> = None;
            while current != FREE {
                let have = unpack(current);
                if !have.overlaps(&gone) {
                    break;
                }
                let below = Range {
                    start: have.start,
                    end: gone.start.max(have.start),
                };
                let above = Range {
                    start: gone.end.min(have.end),
                    end: have.end,
                };
                let replacement = match (below.is_empty(), above.is_empty()) {
                    (true, true) => FREE,
                    (false, true) => pack(below).unwrap_or(current),
                    (true, false) => pack(above).unwrap_or(current),
                    (false, false) => {
                        // A hole in the middle: publish the upper part first;
                        // if there is no room, keep the whole (covering an
                        // unmapped hole is harmless).
                        if published != Some(above) {
                            if !self.claim(above) {
                                break;
                            }
                            published = Some(above);
                        }
                        pack(below).unwrap_or(current)
                    }
                };
                match slot.compare_exchange(current, replacement, SeqCst, Acquire) {
                    Ok(_) => {
                        if replacement == FREE {
                            self.live.fetch_sub(1, SeqCst);
                        }
                        break;
                    }
                    Err(now) => current = now,
                }
            }
        }
    }

    /// Frees every slot whose range `is_mapped` says is no longer mapped at
    /// all (memory unmapped behind the hooks' back: glibc's own `munmap` of
    /// a freed block, a raw system call). Returns how many were freed.
    pub fn drop_unmapped(&self, mut is_mapped: impl FnMut(Range) -> bool) -> usize {
        let mut dropped = 0;
        for slot in self.in_use() {
            let v = slot.load(Acquire);
            if v != FREE
                && !is_mapped(unpack(v))
                && slot.compare_exchange(v, FREE, SeqCst, Relaxed).is_ok()
            {
                self.live.fetch_sub(1, SeqCst);
                dropped += 1;
            }
        }
        dropped
    }

    /// Calls `f` with every recorded range that overlaps `window`.
    pub fn for_each_overlapping(&self, window: Range, mut f: impl FnMut(Range)) {
        for slot in self.in_use() {
            let v = slot.load(Acquire);
            if v != FREE {
                let r = unpack(v);
                if r.overlaps(&window) {
                    f(r);
                }
            }
        }
    }

    /// Whether any recorded range overlaps `window`.
    pub fn overlaps(&self, window: Range) -> bool {
        let mut any = false;
        self.for_each_overlapping(window, |_| any = true);
        any
    }

    /// Calls `emit` with the parts of `range` no recorded range covers, in
    /// address order, reading the table in place. Returns whether any part
    /// of `range` was left out.
    pub fn for_each_gap(&self, range: Range, mut emit: impl FnMut(Range)) -> bool {
        let mut cursor = range.start;
        let mut left_out = false;
        while cursor < range.end {
            // The furthest end among ranges covering `cursor`, and the
            // nearest start of a range beyond it.
            let mut covered_to = cursor;
            let mut next_start = range.end;
            for slot in self.in_use() {
                let v = slot.load(Acquire);
                if v == FREE {
                    continue;
                }
                let r = unpack(v);
                if r.start <= cursor && cursor < r.end {
                    covered_to = covered_to.max(r.end);
                } else if r.start > cursor && r.start < next_start {
                    next_start = r.start;
                }
            }
            if covered_to > cursor {
                left_out = true;
                cursor = covered_to.min(range.end);
            } else {
                emit(Range {
                    start: cursor,
                    end: next_start,
                });
                cursor = next_start;
            }
        }
        left_out
    }

    pub fn is_empty(&self) -> bool {
        self.live.load(SeqCst) == 0
    }

    /// Slots in use now (a moment's figure: others may be changing it).
    pub fn slots_in_use(&self) -> usize {
        self.live.load(Relaxed)
    }
}

impl<const N: usize> Default for RangeTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: usize, end: usize) -> Range {
        Range { start, end }
    }

    fn ranges(t: &ExclusionTable) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        t.for_each_overlapping(r(0, usize::MAX), |x| v.push((x.start, x.end)));
        v.sort();
        v
    }

    fn gaps(t: &ExclusionTable, range: Range) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        t.for_each_gap(range, |x| v.push((x.start, x.end)));
        v
    }

    #[test]
    fn insert_query_forget() {
        let t = ExclusionTable::new();
        assert!(t.is_empty());
        assert_eq!(t.insert(r(0x1000, 0x3000)), Inserted::Added);
        assert_eq!(t.insert(r(0x8000, 0x9000)), Inserted::Added);
        assert!(t.overlaps(r(0x2000, 0x8800)));
        assert!(!t.overlaps(r(0x3000, 0x8000)));
        t.forget(r(0, 0x4000));
        assert_eq!(ranges(&t), vec![(0x8000, 0x9000)]);
    }

    #[test]
    fn the_same_page_excluded_again_and_again_takes_one_slot() {
        let t = ExclusionTable::new();
        assert_eq!(t.insert(r(0x5000, 0x6000)), Inserted::Added);
        let seq = t.sequence();
        for _ in 0..1000 {
            assert_eq!(t.insert(r(0x5000, 0x6000)), Inserted::AlreadyCovered);
        }
        assert_eq!(t.sequence(), seq, "nothing new was covered");
        assert_eq!(ranges(&t), vec![(0x5000, 0x6000)]);
    }

    #[test]
    fn neighbours_and_overlaps_coalesce() {
        let t = ExclusionTable::new();
        for i in 0..(4 * CAPACITY) {
            assert_eq!(
                t.insert(r(i * 0x1000, i * 0x1000 + 0x1000)),
                Inserted::Added
            );
        }
        assert_eq!(ranges(&t), vec![(0, 4 * CAPACITY * 0x1000)]);
        // A bridge between two slots leaves one slot covering both.
        let t = ExclusionTable::new();
        t.insert(r(0x1000, 0x2000));
        t.insert(r(0x5000, 0x6000));
        t.insert(r(0x2000, 0x5000));
        assert_eq!(ranges(&t), vec![(0x1000, 0x6000)]);
    }

    #[test]
    fn forget_trims_and_splits() {
        let t = ExclusionTable::new();
        t.insert(r(0x10000, 0x20000));
        t.forget(r(0x18000, 0x19000));
        assert_eq!(ranges(&t), vec![(0x10000, 0x18000), (0x19000, 0x20000)]);
        t.forget(r(0x0, 0x11000));
        t.forget(r(0x1f000, 0x30000));
        assert_eq!(ranges(&t), vec![(0x11000, 0x18000), (0x19000, 0x1f000)]);
        // Unmapping page by page empties the table.
        for p in (0x10000..0x20000).step_by(0x1000) {
            t.forget(r(p, p + 0x1000));
        }
        assert!(t.is_empty());
        assert_eq!(ranges(&t), vec![]);
    }

    #[test]
    fn a_full_table_says_so_and_drop_unmapped_makes_room() {
        let t = ExclusionTable::new();
        for i in 0..CAPACITY {
            // Gaps between them, so nothing coalesces.
            assert_eq!(
                t.insert(r(i * 0x2000, i * 0x2000 + 0x1000)),
                Inserted::Added
            );
        }
        assert_eq!(t.insert(r(0x10_0000_0000, 0x10_0000_1000)), Inserted::Full);
        assert_eq!(t.drop_unmapped(|x| x.start < 0x2000 * 10), CAPACITY - 10);
        assert_eq!(t.insert(r(0x10_0000_0000, 0x10_0000_1000)), Inserted::Added);
    }

    #[test]
    fn long_ranges_take_several_slots() {
        let t = ExclusionTable::new();
        let big = r(0x1000, 0x1000 + (10usize << 30));
        assert_eq!(t.insert(big), Inserted::Added);
        assert_eq!(
            gaps(&t, r(0, 0x2000 + (10usize << 30))),
            vec![
                (0, 0x1000),
                (0x1000 + (10usize << 30), 0x2000 + (10usize << 30))
            ]
        );
    }

    #[test]
    fn gaps_skip_every_excluded_part() {
        let t = ExclusionTable::new();
        t.insert(r(0x3000, 0x5000));
        t.insert(r(0x8000, 0x9000));
        t.insert(r(0x4000, 0x6000));
        assert_eq!(
            gaps(&t, r(0x1000, 0xa000)),
            vec![(0x1000, 0x3000), (0x6000, 0x8000), (0x9000, 0xa000)]
        );
        assert_eq!(gaps(&t, r(0x3000, 0x6000)), vec![]);
        assert_eq!(gaps(&t, r(0x3000, 0x7000)), vec![(0x6000, 0x7000)]);
        assert!(!t.for_each_gap(r(0xa000, 0xb000), |_| {}));
    }

    #[test]
    fn gaps_of_unsorted_overlapping_ranges() {
        let p = |n: usize| n * 0x1000;
        let t = ExclusionTable::new();
        assert_eq!(gaps(&t, r(0, p(100))), vec![(0, p(100))]);
        for (s, e) in [(60, 70), (0, 10), (65, 80)] {
            t.insert(r(p(s), p(e)));
        }
        assert_eq!(
            gaps(&t, r(0, p(100))),
            vec![(p(10), p(60)), (p(80), p(100))]
        );
        assert_eq!(gaps(&t, r(p(62), p(68))), vec![]);
        assert_eq!(gaps(&t, r(p(200), p(300))), vec![(p(200), p(300))]);
    }

    #[test]
    fn a_walk_that_misses_a_moving_range_sees_the_sequence_change() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let t = Arc::new(ExclusionTable::new());
        let page = |n: usize| 0x1000_0000 + n * 0x1000;
        // Slot 0 holds page 0, slot 1 the protected page 2. A writer bridges
        // them with page 1 (slot 0 grows over page 2, slot 1 is absorbed)
        // and unmaps page 1 again (slot 0 splits, page 2 gets a slot of its
        // own): page 2 keeps changing slots. A walk may miss it, but never
        // without the sequence telling.
        t.insert(r(page(0), page(1)));
        t.insert(r(page(2), page(3)));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicBool::new(false));
        let writer = {
            let (t, stop, started) = (t.clone(), stop.clone(), started.clone());
            std::thread::spawn(move || {
                let mut rounds = 0u64;
                while !stop.load(Relaxed) {
                    t.insert(r(page(1), page(2)));
                    t.forget(r(page(1), page(2)));
                    rounds += 1;
                    started.store(true, Relaxed);
                }
                rounds
            })
        };
        // On a loaded machine the walks could all end before the writer
        // ran once: they start once it has.
        while !started.load(Relaxed) {
            std::thread::yield_now();
        }
        let mut missed = 0;
        for _ in 0..300_000 {
            let before = t.sequence();
            let mut gap = false;
            t.for_each_gap(r(page(2), page(3)), |_| gap = true);
            if gap {
                missed += 1;
                assert_ne!(t.sequence(), before, "page 2 missed silently");
            }
        }
        stop.store(true, Relaxed);
        assert!(writer.join().unwrap() > 0);
        assert_eq!(gaps(&t, r(page(0), page(3))), vec![(page(1), page(2))]);
        eprintln!("walks that missed the moving range (and knew): {missed}");
    }

    #[test]
    fn unrepresentable_addresses_are_refused() {
        let t = ExclusionTable::new();
        assert_eq!(t.insert(r(1 << 60, (1 << 60) + 0x1000)), Inserted::Full);
    }
}
