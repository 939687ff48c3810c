//! Marking ranges mergeable, always minus the exclusion table and what
//! rests (`core::paying::resting`), and unmerging.

use core::sync::atomic::Ordering::SeqCst;

use super::{page_range, settings, silenced, EXCLUDED, MERGING_STOPPED};
use crate::core::catchup;
use crate::core::config::Mode;
use crate::core::paying::resting;
use crate::core::policy::{Range, SkipReason};
use crate::counters::counters;
use crate::os::{ksm, sys};
use ksmauto_contract::Source;

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

/// Marks `range` mergeable, minus any excluded parts. Failures are counted;
/// the first one is also returned.
///
/// Reads the exclusion table in place (no copy: hooks have little stack).
/// An exclusion added while this runs may have been missed by the read and
/// then overwritten by the `madvise`: the table's sequence number tells, and
/// the exclusions in `range` are then taken back out here (the excluder
/// unmerges after bumping the sequence, so whichever runs last unmerges).
pub(super) fn advise(range: Range, source: Source) -> Result<(), i32> {
    advise_marking(range, source).0
}

/// [`advise`], also returning how many bytes it marked (what ksmd was
/// given: not the excluded or resting parts, not what failed).
pub(super) fn advise_marking(range: Range, source: Source) -> (Result<(), i32>, usize) {
    if MERGING_STOPPED.load(SeqCst) {
        return (Ok(()), 0);
    }
    let c = counters();
    // Leaving excluded parts out splits VMAs: not near `vm.max_map_count`.
    if source != Source::Api && EXCLUDED.overlaps(range) && catchup::map_count_headroom_low() {
        c.count_skipped(SkipReason::MapCount);
        return (Ok(()), 0);
    }
    // The program asking for a range is its own choice: nothing of it
    // rests any more. Any other advice leaves resting ranges out.
    if source == Source::Api {
        resting::forget(range);
    }
    let before = EXCLUDED.sequence();
    let mut result = Ok(());
    let mut marked = 0;
    let left_out = EXCLUDED.for_each_gap(range, |piece| {
        resting::for_each_gap(piece, |piece| {
            match ksm::mark_mergeable(piece.start, piece.len()) {
                Ok(()) => {
                    c.count_advised(source, piece.len());
                    marked += piece.len();
                }
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
    (result, marked)
}

/// The whole VMAs that `range` lies in, when they are all private anonymous
/// memory; otherwise `range` itself. A new mapping (or a glibc-mapped block)
/// often shares its VMA with an anonymous neighbour the kernel merged it
/// with; advising only the new part would split that VMA in two.
pub(super) fn whole_vmas(range: Range) -> Range {
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

/// A re-probe (`core::paying`) gives `range`, which it took out earlier,
/// back to ksmd: minus exclusions (they always win, with the same
/// sequence check as [`advise`]), and only while every part of it is
/// still private anonymous memory (checked before and after, as the
/// catch-up checks its advice; without `PROCMAP_QUERY` the check passes).
/// Not counted as advice. Returns whether it was given back.
pub(in crate::core) fn register_again(range: Range) -> bool {
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

pub(super) fn unmerge(range: Range) -> Result<(), i32> {
    let result = ksm::unmark(range.start, range.len());
    match result {
        Ok(()) => counters().count_unmerged(range.len()),
        Err(e) => counters().count_madvise_failure(e),
    }
    result
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
