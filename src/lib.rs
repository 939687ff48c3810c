//! libksmauto: make the private anonymous memory of unmodified programs
//! mergeable by the kernel's same-page merging (KSM), via `LD_PRELOAD`.
//!
//! Layers, from the outside in; a module uses only the layers below it
//! (`docs/architecture.md` has the diagram; `tests/architecture.rs` checks
//! the code against it):
//! * [`api`] — every exported symbol, as thin wrappers (only in the shared
//!   object; unit tests build without it so the test harness keeps its own
//!   malloc);
//! * [`next`] — what the hooks forward to (the malloc family of the
//!   allocator that serves the program, the next definition of the rest)
//!   and the bootstrap arena for `dlsym`'s allocations;
//! * [`report`] — the exit report: gathers the core's settings, the
//!   counters and the kernel's view, renders and writes them;
//! * [`core`] — configuration, policy and the engines: what qualifies and
//!   what to do about it;
//! * [`counters`] — what the library did, counted (written by the core and
//!   the hooks, read by the report);
//! * [`os`] — raw system calls, `/proc` readers, and KSM by intent
//!   (`os::ksm`: mark mergeable, unmark, merge any);
//! * [`fmt`] — allocation-free text building;
//! * [`scratch`] — static buffers behind a try-lock, for what must stay off
//!   a small signal stack;
//! * `hook_list` — the one list of the functions we export
//!   (`with_hook_list!`), which `next`, `api` (its signature checks),
//!   `counters` and the tests expand;
//!
//! Under all of them, the `ksmauto_contract` crate: the vocabulary shared
//! with the CLI and the tests (modes, skip reasons, sources, `KSMAUTO_*`
//! names, the report's field names, pure `/proc` parsers).
//!
//! Code reachable from a hook never allocates through Rust, never waits for
//! a lock (shared buffers are try-locked: busy means skip), never panics
//! across `extern "C"` (`panic = "abort"`) and never changes `errno`. The
//! waits, each bounded: an `exec` hook (or the program's own `prctl` of
//! merge-any) waits for another thread's single `prctl` that switches
//! merge-any (`core::exec_guard`), with signals blocked; a hook of a call
//! that needs the process without the library's catch-up thread
//! (`unshare`, `setns`, `fork`'s prepare handler, per-thread restrictions)
//! waits for that thread to be gone (`core::catchup_thread`). The library's
//! only thread of its own is that one, in `advise` mode, while there is
//! something to catch up.

#![warn(clippy::undocumented_unsafe_blocks)]
// No std in the shared object: nothing here may allocate, and std would also
// drag libgcc_s (unwinding) into every process we are preloaded into.
#![cfg_attr(not(test), no_std)]

/// `panic = "abort"` makes this unreachable in practice; it exists because a
/// `no_std` library must name one. It never unwinds into C.
#[cfg(not(test))]
#[panic_handler]
fn panic(_: &::core::panic::PanicInfo) -> ! {
    // SAFETY: abort takes nothing and never returns.
    unsafe { libc::abort() }
}

// The raw system calls (`os::sys`) and the call counter's carry test are
// written for these two; anything else must fail loudly at build time rather
// than build a library that issues wrong system calls.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!(
    "libksmauto supports Linux on x86_64 and aarch64 only (raw system calls are written per architecture)"
);

// A debug build (no LTO) links `core`'s precompiled objects, whose unwind
// tables name `rust_eh_personality`; with `panic = "abort"` nothing of ours
// ever unwinds, but the dynamic loader would still refuse the library for the
// missing symbol. A local, hidden definition satisfies the link and is never
// exported (so it cannot interpose on another Rust library's own); reaching
// it would mean an unwind through our code, which must never happen: trap.
#[cfg(all(not(test), target_arch = "x86_64"))]
::core::arch::global_asm!(
    ".pushsection .text.rust_eh_personality,\"ax\",@progbits",
    ".globl rust_eh_personality",
    ".hidden rust_eh_personality",
    ".type rust_eh_personality,@function",
    "rust_eh_personality:",
    "ud2",
    ".popsection",
);
#[cfg(all(not(test), target_arch = "aarch64"))]
::core::arch::global_asm!(
    ".pushsection .text.rust_eh_personality,\"ax\",@progbits",
    ".globl rust_eh_personality",
    ".hidden rust_eh_personality",
    ".type rust_eh_personality,%function",
    "rust_eh_personality:",
    "brk #1",
    ".popsection",
);

// First: the list of hooks (`with_hook_list!`) that `next` and `counters`
// expand.
#[macro_use]
mod hook_list;

#[cfg(not(test))]
mod api;
pub mod core;
pub mod counters;
pub mod fmt;
// Unit tests build it too (its lookups and stand-ins have tests); only `api`
// is left out of them.
#[cfg_attr(test, allow(dead_code))]
mod next;
pub mod os;
pub mod report;
pub mod scratch;
