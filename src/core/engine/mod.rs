//! The engines: what happens when the program maps or allocates memory.
//!
//! * `advise`: every qualifying region the hooks see gets `MADV_MERGEABLE`,
//!   always as a whole mapping (a glibc-mapped malloc block is advised as the
//!   mapping glibc made, never per allocation, so no VMA is ever split).
//!   What no hook sees is found by the catch-up scan (`core::catchup`).
//! * `process`: `PR_SET_MEMORY_MERGE` makes the kernel treat every compatible
//!   anonymous VMA as mergeable; exclusions are carved out with
//!   `MADV_UNMERGEABLE`.
//! * `off`: nothing, and an inherited merge-any setting is cleared.
//!
//! **Never mergeable, in every engine**: ranges in the exclusion table
//! (`core::exclusions`): what the program excluded with `ksmauto_exclude`,
//! and, with the `secret` class of `KSMAUTO_EXCLUDE` (default), memory the
//! program marks as secret — `mlock`/`mlock2` ranges and `MADV_DONTDUMP` /
//! `MADV_WIPEONFORK` ranges (what OpenSSL's secure heap and libsodium's
//! `sodium_malloc` do). KSM is a side channel: mergeable memory can be probed
//! by any other process using KSM. Such a range is recorded and unmerged at
//! once, whether it was advised before or not; every later advice (hooks,
//! catch-up, `ksmauto_advise`) subtracts the table. `mlockall` locks the
//! whole process, so it stops merging altogether (see [`after_mlockall`]).
//! `/proc/self/maps` shows neither locks nor dump flags: only marks made
//! through the hooked functions are seen (a raw `syscall(SYS_mlock)` is not).
//!
//! Exclusions follow their memory: `munmap` and `MAP_FIXED` drop the
//! unmapped part, `mremap` moves it ([`after_mremap`]), `realloc` of an
//! excluded block excludes the new block ([`exclusion_follows_block`]).
//!
//! Knows nothing about symbol names: the interposition layer calls the
//! `after_*` functions with plain numbers. Never allocates, never locks,
//! never touches `errno` (all kernel calls go through `os::sys`).
//!
//! One room per concern, none holding another's state:
//! * `start` — reads the configuration and picks the engine, once;
//! * `silence` — the rule that a sandboxed process hears nothing more of
//!   the library ([`silenced`], [`before_sandbox`]);
//! * `mappings` — `mmap`, `munmap`, `mremap`: advice and exclusions that
//!   follow their memory;
//! * `allocator` — what the malloc family asks (one compare each on the hot
//!   path) and `realloc`'s excluded blocks;
//! * `secrets` — `mlock`, `mlock2`, the secret `madvise` advices, `mlockall`;
//! * `stacks` — thread stacks taken out of merging;
//! * `advice` — marking ranges mergeable minus the exclusion table, and
//!   unmerging;
//! * `exclusion` — recording what is never to merge, and stopping for good;
//! * `catch_up` — the news the hooks give the catch-up and its thread;
//! * `exec` — merge-any kept out of programs the library does not run in;
//! * `lifecycle` — fork, raw clones, single-threaded calls, the main
//!   thread's end.
//!
//! The state they share is here: the settings (written once by `start`),
//! the exclusion table and whether merging stopped for good.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

use super::config::{Config, Mode};
use super::exclusions::ExclusionTable;
use super::policy::Range;
use crate::os::sys;

mod advice;
mod allocator;
mod catch_up;
mod exclusion;
mod exec;
mod lifecycle;
mod mappings;
mod secrets;
mod silence;
mod stacks;
mod start;

pub use super::exec_guard::{Lent as ExecLent, LoaderEnv};
pub use advice::api_advise;
pub(in crate::core) use advice::register_again;
pub use allocator::{
    block_is_excluded, block_may_be_own_mapping, counts_allocator_calls, exclusion_follows_block,
    exclusions_exist, large_for_glibc, realloc_needs_care, watches_allocator,
};
pub use catch_up::{
    brk_grew, catch_up_thread_main, note_brk_growth, note_glibc_block, note_new_memory,
    poll_catch_up, ThreadSupport,
};
pub use exclusion::api_exclude;
pub use exec::{
    after_exec_returned, before_exec, merge_any_in_use, merge_any_lent, program_switches_merge_any,
};
pub(in crate::core) use lifecycle::start_over;
pub use lifecycle::{
    after_fork_in_child, at_exit, after_fork_in_parent, after_single_threaded_call,
    again_without_our_thread, before_fork, before_single_threaded_call, main_thread_ending,
    settle_identity, starter,
};
pub use mappings::{after_mmap, after_mremap, after_munmap};
pub use secrets::{after_madvise, after_mlock, after_mlockall};
pub use silence::{before_sandbox, silenced};
pub use stacks::{
    thread_created, thread_stack_started, thread_stack_supplied, threads_unmerge_their_stacks,
};
pub use start::start;

/// Written once by [`start`] before any hook does work, read-only afterwards.
/// Hooks see it only after start-up: through the interposition layer's gate,
/// or, on the hot paths, through the acquire load of the forwarding table
/// that start-up publishes last (`next::publish_hot_path`).
struct Settings {
    config: Config,
    /// What file descriptor 2 was when the library started; the exit report
    /// goes to stderr only if it still is that file.
    stderr_at_start: Option<sys::FileStatus>,
    active: Mode,
    fallback_errno: Option<i32>,
    page_size: usize,
}

struct SettingsCell(UnsafeCell<Settings>);

// SAFETY: the cell is written once, inside the start-up gate before any hook
// reads it, and only read afterwards (see `settings`).
unsafe impl Sync for SettingsCell {}

// once_cell: written once inside the re-entrant start-up gate
// (`core::once`), read by every hook afterwards without an "initialised?"
// check; see `next::NEXT`.
static SETTINGS: SettingsCell = SettingsCell(UnsafeCell::new(Settings {
    config: Config::DEFAULT,
    stderr_at_start: None,
    active: Mode::Off,
    fallback_errno: None,
    page_size: sys::PAGE_SIZE_FALLBACK,
}));

static EXCLUDED: ExclusionTable = ExclusionTable::new();

/// Set by `mlockall`: the whole process holds secrets, nothing is advised
/// any more (see [`after_mlockall`]).
static MERGING_STOPPED: AtomicBool = AtomicBool::new(false);

fn settings() -> &'static Settings {
    // SAFETY: written only once by `start` inside the re-entrant start-up gate,
    // before `ready` lets any hook read it; shared reads only after that.
    unsafe { &*SETTINGS.0.get() }
}

pub fn config() -> &'static Config {
    &settings().config
}

pub fn active_mode() -> Mode {
    settings().active
}

pub fn fallback_errno() -> Option<i32> {
    settings().fallback_errno
}

pub fn page_size() -> usize {
    settings().page_size
}

/// Whether file descriptor 2 is still the file it was at start-up (a
/// program that closed stderr and opened a data file gets no report in it).
pub fn stderr_is_unchanged() -> bool {
    match (settings().stderr_at_start, sys::fstat(2)) {
        (Some(then), Ok(now)) => then.same_file(&now),
        _ => false,
    }
}

/// Whether the process stopped merging for good (`mlockall`).
pub(super) fn merging_stopped() -> bool {
    MERGING_STOPPED.load(Relaxed)
}

fn page_range(addr: usize, len: usize) -> Option<Range> {
    Range::covering(addr, len, page_size())
}
