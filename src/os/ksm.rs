//! The kernel's same-page merging, named by what we want from it.
//!
//! Owns every `madvise` advice and `prctl` option the library issues on its
//! own behalf: `crate::core` says *mark mergeable*, *unmark*, *merge any*,
//! never a `MADV_*` constant or a `prctl` number. Like the rest of
//! `crate::os`: no allocation, no lock, `errno` untouched, no decisions.

use super::sys::{self, Errno};

// prctl options (Linux 6.4); spelled out so older libc headers do not matter.
const PR_SET_MEMORY_MERGE: i32 = 67;
const PR_GET_MEMORY_MERGE: i32 = 68;

/// Makes all of this process's compatible anonymous memory mergeable
/// (`on`), or takes that back, which unmerges and unmarks every mergeable
/// VMA (`PR_SET_MEMORY_MERGE`, Linux 6.4+; the kernel keeps it across
/// `fork` and, since 6.7, `exec`).
pub fn merge_any(on: bool) -> Result<(), Errno> {
    // SAFETY: PR_SET_MEMORY_MERGE takes a flag, no pointer, and changes no
    // memory's contents.
    unsafe { sys::prctl(PR_SET_MEMORY_MERGE, on as usize, 0, 0, 0) }.map(|_| ())
}

/// Whether merge-any is on for this process.
pub fn merge_any_is_on() -> bool {
    // SAFETY: PR_GET_MEMORY_MERGE takes no pointer and changes nothing.
    (unsafe { sys::prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0) }) == Ok(1)
}

/// Marks the pages `[start, start + len)` mergeable (`MADV_MERGEABLE`).
pub fn mark_mergeable(start: usize, len: usize) -> Result<(), Errno> {
    // SAFETY: marking changes no page's contents, whatever is mapped there.
    unsafe { sys::madvise(start, len, sys::Advice::MarkMergeable) }
}

/// Takes the mark back from `[start, start + len)`, unmerging whatever was
/// merged there (`MADV_UNMERGEABLE`). Over holes in the address space the
/// kernel still unmarks the mapped parts and reports `ENOMEM`.
pub fn unmark(start: usize, len: usize) -> Result<(), Errno> {
    // SAFETY: unmarking changes no page's contents, whatever is mapped there.
    unsafe { sys::madvise(start, len, sys::Advice::UnmarkMergeable) }
}

/// Whether `advice`, given by the program to its own `madvise`, marks or
/// unmarks memory for merging itself.
pub fn advice_is_about_merging(advice: i32) -> bool {
    advice == libc::MADV_MERGEABLE || advice == libc::MADV_UNMERGEABLE
}

/// Whether `advice`, given by the program to its own `madvise`, says the
/// memory holds a secret: kept out of core dumps (`MADV_DONTDUMP`) or wiped
/// in forked children (`MADV_WIPEONFORK`).
pub fn advice_marks_secret(advice: i32) -> bool {
    advice == libc::MADV_DONTDUMP || advice == libc::MADV_WIPEONFORK
}

/// ksmd's count of full scans since boot (`/sys/kernel/mm/ksm/full_scans`),
/// the clock of decisions about what it is given (it means the same at
/// every pace); `None` where the kernel has no KSM or `/sys` is not there.
pub fn full_scans() -> Option<u64> {
    read_number(b"/sys/kernel/mm/ksm/full_scans\0")
}

/// Mappings of KSM pages beyond the first of each, on the whole host
/// (`/sys/kernel/mm/ksm/pages_sharing`): it rises while ksmd merges.
pub fn pages_sharing() -> Option<u64> {
    read_number(b"/sys/kernel/mm/ksm/pages_sharing\0")
}

/// Whether ksmd scans at all (`/sys/kernel/mm/ksm/run` is 1): while it does
/// not, nothing it is given costs anything and no evidence comes in.
pub fn ksmd_scans() -> bool {
    read_number(b"/sys/kernel/mm/ksm/run\0") == Some(1)
}

fn read_number(path: &[u8]) -> Option<u64> {
    let mut buf = [0u8; 32];
    let n = sys::read_file(path, &mut buf).ok()?;
    ksmauto_contract::proc::parse_dec(ksmauto_contract::proc::trim(&buf[..n]))
}
