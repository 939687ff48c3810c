//! The resting table: ranges the decisions took back from ksmd, which
//! every advice leaves out (`engine::advise` subtracts them as it
//! subtracts exclusions), until a re-probe gives them back.
//!
//! Soft, unlike the exclusions: a range missing from it (the table full,
//! an advice racing a change) is at worst given to ksmd for a while; so no
//! sequence check, and a full table means a region stays registered. The
//! hooks forget what is unmapped, remapped, or marked by the program
//! itself; ranges unmapped behind their back are dropped when the table
//! fills. The table is the exclusions' lock-free [`RangeTable`].

use crate::core::exclusions::{Inserted, RangeTable};
use crate::core::policy::Range;

/// Slots: adjacent ranges share one. Sized for a program of many small
/// mappings (a pool worker of 4,096 64 KiB VMAs, two thirds of them not
/// paying, filled 1,024 slots and kept the rest given to ksmd); a lookup
/// reads only the slots ever used.
pub const CAPACITY: usize = 4096;

static TABLE: RangeTable<CAPACITY> = RangeTable::new();

/// Records `range` as resting; `false` if there is no room.
pub fn insert(range: Range) -> bool {
    let mut inserted = TABLE.insert(range);
    if inserted == Inserted::Full && TABLE.drop_unmapped(is_mapped) > 0 {
        inserted = TABLE.insert(range);
    }
    inserted != Inserted::Full
}

/// `range` is no longer resting (given back, unmapped, or the program's
/// own choice now).
pub fn forget(range: Range) {
    if !TABLE.is_empty() {
        TABLE.forget(range);
    }
}

pub fn overlaps(range: Range) -> bool {
    !TABLE.is_empty() && TABLE.overlaps(range)
}

/// Calls `emit` with the parts of `range` that are not resting.
pub fn for_each_gap(range: Range, mut emit: impl FnMut(Range)) {
    if TABLE.is_empty() {
        emit(range);
    } else {
        TABLE.for_each_gap(range, emit);
    }
}

fn is_mapped(range: Range) -> bool {
    match crate::os::sys::first_vma_from(range.start) {
        Ok(vma) => vma.start < range.end,
        Err(libc::ENOENT) => false,
        Err(_) => true,
    }
}
