//! The remembered VMAs: the exact bounds of every VMA judged in the
//! previous pass, so a pass advises only what is news.
//!
//! In address order (VMAs come in address order, so the list is built by
//! appending and looked up with a cursor that only moves up), up to
//! [`REMEMBERED_VMAS`]; a VMA that reappears with the same bounds is skipped,
//! one whose bounds changed is advised again (a no-op for the kernel if it
//! already is mergeable). A VMA the kernel refused is not retried until its
//! bounds change (the refusal is counted once, not every pass). Past the
//! capacity, VMAs are advised every pass (correct, slower) without counting
//! as news for the back-off.
//!
//! Owns only the list; never allocates (it lives in the zero-initialised
//! static scan state, its pages touched only as far as they are used) and
//! never decides what to advise.

/// VMAs remembered (above `vm.max_map_count`'s default of 65530), in one
/// 1 MiB array touched only as far as used. It must stay small: a library
/// whose mappings span 2 MiB or more is placed at a 2 MiB boundary, which
/// changes the program's own VMA layout.
pub const REMEMBERED_VMAS: usize = 1 << 17;

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
pub(super) struct Memory {
    entries: [Packed; REMEMBERED_VMAS],
    /// This pass's VMAs: `entries[..written]`.
    written: usize,
    /// The previous pass's VMAs the walk has not passed yet: the last
    /// `previous_left` entries.
    previous_left: usize,
    /// This pass ran out of room and stopped remembering.
    pub(super) overflowed: bool,
    /// The previous pass did: VMAs above `previous_last` are unknown.
    previous_overflowed: bool,
    previous_last: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Seen {
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
    pub(super) fn seen(&mut self, start: usize, end: usize) -> Seen {
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
    pub(super) fn record(&mut self, start: usize, end: usize) {
        self.record_as(start, end, false);
    }

    /// [`Memory::record`], marked [`DEFERRED`] if `deferred`.
    pub(super) fn record_as(&mut self, start: usize, end: usize, deferred: bool) {
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
    pub(super) fn finish_pass(&mut self) {
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
    pub(super) fn clear(&mut self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> Box<Memory> {
        // SAFETY: all-zero bytes are a valid `Memory` (integers, `false`
        // bools) and its empty state.
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
}
