//! Secrets: memory the program locks (`mlock`, `mlock2`), keeps out of
//! core dumps or wipes in forked children is excluded; `mlockall` stops
//! merging for good.

use super::exclusion::{exclude, stop_merging_for_good};
use super::{page_range, settings, silenced};
use crate::core::config::Mode;
use crate::core::paying::resting;
use crate::core::policy::Range;
use crate::os::ksm;

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
