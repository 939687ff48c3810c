//! Recording what is never to merge (`ksmauto_exclude`, secrets, stacks,
//! exclusions that move with their memory), and stopping merging for good
//! when the table cannot remember a secret.

use core::sync::atomic::Ordering::SeqCst;

use super::advice::unmerge;
use super::allocator::sync_realloc_floor;
use super::{page_range, page_size, settings, silenced, EXCLUDED, MERGING_STOPPED};
use crate::core::config::Mode;
use crate::core::exclusions::Inserted;
use crate::core::exec_guard;
use crate::core::paying::{self, resting};
use crate::core::policy::Range;
use crate::counters::counters;
use crate::os::{ksm, sys};

/// `ksmauto_exclude`: unmerge now, and never advise this range again.
pub fn api_exclude(addr: usize, len: usize) -> Result<(), i32> {
    if silenced() {
        // No system call may be made any more: say so rather than pretend.
        return Err(libc::EPERM);
    }
    let range = page_range(addr, len).ok_or(libc::EINVAL)?;
    exclude(range)
}

/// Records `range` and unmerges it (under every engine: a region advised
/// earlier, or merge-any, made it mergeable). `Err(ENOSPC)` when the table
/// had no room (it is still unmerged now).
pub(super) fn exclude(range: Range) -> Result<(), i32> {
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

/// Records `range` as never mergeable; when the table is full, first drops
/// the ranges that are no longer mapped. Returns whether it is recorded.
pub(super) fn record_exclusion(range: Range) -> Inserted {
    let mut inserted = EXCLUDED.insert(range);
    if inserted == Inserted::Full && EXCLUDED.drop_unmapped(is_mapped) > 0 {
        inserted = EXCLUDED.insert(range);
    }
    sync_realloc_floor();
    inserted
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

/// Excludes memory that already was excluded, at its new place: if the
/// table cannot remember it, the process stops merging (an exclusion must
/// stick, and may guard a secret).
pub(super) fn exclude_moved(range: Range) {
    if exclude(range) == Err(libc::ENOSPC) {
        stop_merging_for_good();
    }
}

pub(super) fn forget_exclusions(range: Range) {
    if !EXCLUDED.is_empty() {
        EXCLUDED.forget(range);
        sync_realloc_floor();
    }
}

pub(super) fn stop_merging_for_good() {
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
