//! The acceptance tests of issue 19: the `advise` engine catches up from off
//! the program's threads — whatever the program then does, with nothing of
//! the program delayed, consumed or reshaped.
//!
//! Written before the implementation, so that it is judged by them. Three
//! groups, each a module (their C programs are in tests/c/, sharing
//! tests/c/offthread.h):
//! * [`coverage`] — the matrix: every allocation path × every way of
//!   waiting, in `advise` mode, marked mergeable within 2 s of the program
//!   settling and merged as merge-any merges (tests/c/settle.c);
//! * [`consumed`] — one-shot notifications (a mount change, a hostname
//!   change, a PSI trigger) reach a program that polls, epolls or reads them
//!   as they do without the library (tests/c/one_shot.c);
//! * [`promises`] — what a single-threaded program relies on holds with the
//!   library's thread: user namespaces, credentials of every thread,
//!   CPython's fork check, signals, fork/vfork/exec/exit, a seccomp filter
//!   forbidding `clone`, and no thread at all in `off` and `process` modes
//!   (tests/c/alone.c).
//!
//! "Nothing delayed" is a benchmark, not a test: `scripts/bench-latency`.
//!
//! Everything is measured from outside the program where it can be (smaps,
//! pagemap, /proc/PID/task) or by the program about itself, never by asking
//! the library.

use ksmauto_testsupport as common;

#[path = "offthread/consumed.rs"]
mod consumed;
#[path = "offthread/coverage.rs"]
mod coverage;
#[path = "offthread/edges.rs"]
mod edges;
#[path = "offthread/promises.rs"]
mod promises;

/// Whether the kernel has KSM at all (without it no VMA can carry `mg`):
/// tests that need only the flag, not ksmd, skip loudly without it.
fn ksm_present() -> bool {
    std::path::Path::new("/sys/kernel/mm/ksm/run").exists()
}

fn skip(why: &str) {
    if std::env::var(ksmauto_contract::env::REQUIRE_KSM).as_deref() == Ok("1") {
        panic!("required but not possible here: {why}");
    }
    eprintln!("\n!!!!! SKIPPED: {why} !!!!!\n");
}
