//! `exec`: merge-any must not pass into a program the library does not run
//! in (the mechanism is `core::exec_guard`'s).

use core::sync::atomic::Ordering::Relaxed;

use super::{settings, silenced, ExecLent, LoaderEnv, MERGING_STOPPED};
use crate::core::config::Mode;
use crate::core::exec_guard;
use crate::core::identity;
use crate::counters::counters;
use crate::os::exec_target::ExecTarget;

/// Whether `exec`s need looking at: merge-any is this process's engine
/// (and `mlockall` or a sandbox has not switched it off for good, nor the
/// program itself).
pub fn merge_any_in_use() -> bool {
    settings().active == Mode::Process
        && !MERGING_STOPPED.load(Relaxed)
        && !silenced()
        && !exec_guard::program_switched_off()
}

/// The program's own switch of merge-any (`prctl(PR_SET_MEMORY_MERGE,
/// on)`, which `call` makes, saying whether it succeeded): the program's
/// choice stands — after it switched merge-any off, nothing of ours
/// switches it back on, until it switches it on again itself.
pub fn program_switches_merge_any<R>(on: bool, call: impl FnOnce() -> (R, bool)) -> R {
    exec_guard::program_switches(on, call)
}

/// About to `exec` `target` with environment `env` (`as_we_resolve`: the
/// `exec` resolves paths as we do now, see `os::exec_target::inspect_at`). Under `process`, the kernel
/// (Linux 6.7+) passes merge-any to the new program, which is only right if
/// the library will run there to decide for itself; otherwise merge-any is
/// switched off first (the kernel then walks and unmarks every mergeable
/// VMA: the cost of keeping the flag out of a program that never asked for
/// it, measured in BENCHMARKS.md). The caller hands the result to
/// [`after_exec_returned`] if the call comes back.
pub fn before_exec(target: ExecTarget, env: &LoaderEnv, as_we_resolve: bool) -> Option<ExecLent> {
    if !merge_any_in_use() {
        return None;
    }
    let lent = exec_guard::before_exec(target, env, as_we_resolve)?;
    counters().count_exec_without_merge_any();
    Some(lent)
}

/// The `exec` (or the spawn, in the parent) is over and this process goes
/// on: merge-any back on if [`before_exec`] switched it off and no other
/// `exec` is in flight.
pub fn after_exec_returned(lent: Option<ExecLent>) {
    if let Some(lent) = lent {
        exec_guard::returned(lent, merge_any_in_use());
    }
}

/// Whether merge-any is lent to an `exec` (one load: for every hook's
/// poll, see [`poll_catch_up`]).
#[inline(always)]
pub fn merge_any_lent() -> bool {
    exec_guard::any_lent()
}

#[cold]
#[inline(never)]
pub(super) fn take_back_merge_any() {
    // A vfork child still running in our memory must leave it to us.
    if !identity::shares_owners_memory() {
        exec_guard::take_back(merge_any_in_use());
    }
}
