//! Shared test harness: builds the preload library and C test programs, runs
//! programs with and without the preload, and manages ksmd for KSM tests.
//!
//! KSM tests call [`ksmd`]: it turns ksmd on (as the kernel's own KSM
//! selftests do) with fast scanning and `smart_scan` off, and restores every
//! setting when the last test of this binary is done with it (through
//! `ksmauto ksmd hold`, which coordinates with holds that overlap). KSM tests of one
//! binary run one at a time (the guard holds a lock): programs of parallel
//! tests fill pages with the same patterns, and ksmd would merge them across
//! processes, blurring every per-process count. While a guard is held a
//! "keeper" process with mergeable memory runs, because ksmd does not scan
//! (and `full_scans` stands still) while no process has any. Where KSM cannot
//! be used (no CONFIG_KSM, not root) the test prints a loud SKIPPED line and
//! returns — unless `KSMAUTO_REQUIRE_KSM=1`, which turns that into a failure.

mod build;
mod hooks;
mod ksmd;
mod live;
mod procfs;
mod run;

pub use build::{cli, compile_c, lib, repo};
pub use hooks::{EXPORTED_NAMES, HOOK_NAMES};
pub use ksmd::*;
pub use live::Live;
pub use procfs::*;
pub use run::*;
