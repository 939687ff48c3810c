//! The silencing rule, in one place: once the program is about to install
//! a seccomp filter ([`before_sandbox`]), the library makes no system call
//! of its own, for good. Every entry point that could make one asks
//! [`silenced`] first: the hooks' `after_*` calls and the catch-up's news
//! return at once, `ksmauto_advise`/`ksmauto_exclude` say `EPERM` rather
//! than pretend, the decisions about what pays stop, `exec`s are not
//! inspected and no exit report is written.

use core::sync::atomic::{
    AtomicBool,
    Ordering::{Relaxed, SeqCst},
};

use super::allocator;
use super::lifecycle::after_single_threaded_call;
use super::settings;
use crate::core::catchup;
use crate::core::catchup_thread;
use crate::core::config::Mode;
use crate::core::exec_guard;
use crate::core::paying;

/// Set just before the program installs a seccomp filter (see
/// [`before_sandbox`]): from then on the library makes no system call of
/// its own.
static SILENCED: AtomicBool = AtomicBool::new(false);

/// Whether the library has fallen silent ([`before_sandbox`]).
#[inline]
pub fn silenced() -> bool {
    SILENCED.load(Relaxed)
}

/// The program is about to install a seccomp filter (`prctl(PR_SET_SECCOMP)`
/// or the `seccomp` system call, seen through libc): a sandbox that allows
/// exactly the system calls the program makes kills it for any other. So
/// the library falls silent for good first: nothing more is advised or
/// scanned, `exec`s are not inspected, thread stacks are not looked up and
/// no exit report is written; the hooks only forward. What the program
/// advised stays mergeable; merge-any does not: under `process` it is
/// switched off for good now, while the `prctl` is still allowed, since the
/// `exec` guard cannot run under the filter and merge-any would pass into
/// whatever the sandbox `exec`s (the kernel unmerges the process's merged
/// pages: the price of a sandbox).
pub fn before_sandbox() {
    if settings().active == Mode::Process && !silenced() {
        exec_guard::stop_for_good();
    }
    SILENCED.store(true, SeqCst);
    allocator::stop_watching();
    catchup::disable();
    paying::disable();
    // The filter may be applied to every thread (`TSYNC`) or only to the
    // caller (ours would stay unrestricted): either way, ours goes first.
    let retired = catchup_thread::retire();
    // With no round left to publish again, while the system calls it
    // takes are still allowed.
    paying::sightings::withdraw();
    after_single_threaded_call(retired);
}
