//! `mmap`, `munmap`, `mremap`: new mappings are advised (or, under
//! `process`, excluded classes taken back out), and exclusions and
//! resting ranges follow their memory.

use super::advice::{advise, unmerge, whole_vmas};
use super::allocator::sync_realloc_floor;
use super::catch_up::note_registered;
use super::exclusion::{exclude_moved, forget_exclusions};
use super::{page_range, settings, silenced, EXCLUDED};
use crate::core::config::Mode;
use crate::core::paying::resting;
use crate::core::policy::{self, Range, SkipReason, Verdict};
use crate::counters::counters;
use ksmauto_contract::Source;

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

/// Memory in `[addr, addr + len)` was unmapped.
pub fn after_munmap(addr: usize, len: usize) {
    if let Some(range) = page_range(addr, len) {
        forget_exclusions(range);
        resting::forget(range);
    }
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
