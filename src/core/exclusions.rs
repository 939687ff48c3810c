//! Ranges the program excluded with `ksmauto_exclude`: never advised again.
//!
//! A fixed table of atomics (no allocation, no lock). A slot is claimed by
//! swinging its `end` from 0 to `CLAIMED`, then filled; readers ignore slots
//! that are free or still being filled. Ranges are dropped when the memory is
//! unmapped or replaced, so a later mapping at the same address is not
//! excluded by accident.

use core::sync::atomic::{
    AtomicUsize,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};

use super::policy::Range;

pub const CAPACITY: usize = 256;
const FREE: usize = 0;
const CLAIMED: usize = usize::MAX;

struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
}

pub struct ExclusionTable {
    slots: [Slot; CAPACITY],
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_SLOT: Slot = Slot {
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(FREE),
};

impl ExclusionTable {
    pub const fn new() -> ExclusionTable {
        ExclusionTable {
            slots: [EMPTY_SLOT; CAPACITY],
        }
    }

    /// Records `range`; `false` if the table is full (the caller still
    /// unmerges the range now, it just cannot promise the future).
    pub fn insert(&self, range: Range) -> bool {
        for slot in &self.slots {
            if slot
                .end
                .compare_exchange(FREE, CLAIMED, AcqRel, Relaxed)
                .is_ok()
            {
                slot.start.store(range.start, Relaxed);
                slot.end.store(range.end, Release);
                return true;
            }
        }
        false
    }

    /// Drops every recorded range that lies inside `gone` (unmapped or
    /// replaced memory).
    pub fn forget_within(&self, gone: Range) {
        for slot in &self.slots {
            let end = slot.end.load(Acquire);
            if end == FREE || end == CLAIMED {
                continue;
            }
            let start = slot.start.load(Relaxed);
            if gone.start <= start && end <= gone.end {
                let _ = slot.end.compare_exchange(end, FREE, AcqRel, Relaxed);
            }
        }
    }

    /// Copies the ranges overlapping `window` into `out`; returns how many.
    pub fn overlapping(&self, window: Range, out: &mut [Range; CAPACITY]) -> usize {
        let mut n = 0;
        for slot in &self.slots {
            let end = slot.end.load(Acquire);
            if end == FREE || end == CLAIMED {
                continue;
            }
            let r = Range {
                start: slot.start.load(Relaxed),
                end,
            };
            if r.overlaps(&window) {
                out[n] = r;
                n += 1;
            }
        }
        n
    }

    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(|s| s.end.load(Relaxed) == FREE)
    }
}

impl Default for ExclusionTable {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_query_forget() {
        let t = ExclusionTable::new();
        assert!(t.is_empty());
        assert!(t.insert(Range {
            start: 0x1000,
            end: 0x3000
        }));
        assert!(t.insert(Range {
            start: 0x8000,
            end: 0x9000
        }));
        let mut out = [Range { start: 0, end: 0 }; CAPACITY];
        assert_eq!(
            t.overlapping(
                Range {
                    start: 0x2000,
                    end: 0x8800
                },
                &mut out
            ),
            2
        );
        assert_eq!(
            t.overlapping(
                Range {
                    start: 0x3000,
                    end: 0x8000
                },
                &mut out
            ),
            0
        );
        t.forget_within(Range {
            start: 0,
            end: 0x4000,
        });
        assert_eq!(
            t.overlapping(
                Range {
                    start: 0,
                    end: 0x10000
                },
                &mut out
            ),
            1
        );
        assert_eq!(
            out[0],
            Range {
                start: 0x8000,
                end: 0x9000
            }
        );
    }

    #[test]
    fn a_full_table_says_so() {
        let t = ExclusionTable::new();
        for i in 0..CAPACITY {
            assert!(t.insert(Range {
                start: i * 0x1000,
                end: i * 0x1000 + 0x1000
            }));
        }
        assert!(!t.insert(Range {
            start: 0,
            end: 0x1000
        }));
    }
}
