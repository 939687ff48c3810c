//! The core: decides what becomes mergeable and applies it.
//!
//! * [`config`] — `KSMAUTO_*` parsing (pure);
//! * [`policy`] — which regions qualify, the catch-up's growing edges, page
//!   ranges (pure);
//! * [`engine`] — the `advise` / `process` / `off` engines acting on what the
//!   hooks report;
//! * [`exec_guard`] — keeps merge-any out of programs the library does not
//!   run in;
//! * [`catchup`] — the `advise` engine's scan for memory no hook saw;
//! * [`catchup_thread`] — the library's one thread, which runs that scan
//!   while there is news, and when it must not exist;
//! * [`exclusions`] — the lock-free table of ranges never to merge
//!   (`ksmauto_exclude`, secret memory);
//! * [`paying`] — what ksmd is given, region by region, from its own
//!   verdict (`KSMAUTO_REGISTER=paying`), on the catch-up thread;
//! * [`identity`] — which process this is (owner, forked child, `vfork` child);
//! * [`once`] — start-up that survives re-entry from `dlsym`.
//!
//! Knows no symbol names (that is `crate::api`'s business) and no kernel
//! constants (`crate::os::ksm` names what it asks the kernel by intent);
//! never allocates, locks, or changes `errno`.

pub mod catchup;
pub mod catchup_thread;
pub mod config;
pub mod engine;
pub mod exclusions;
pub mod exec_guard;
pub mod identity;
pub mod once;
pub mod paying;
pub mod policy;
