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
//! * [`exclusions`] — the lock-free table of ranges never to merge
//!   (`ksmauto_exclude`, secret memory);
//! * [`identity`] — which process this is (owner, forked child, `vfork` child);
//! * [`once`] — start-up that survives re-entry from `dlsym`;
//! * [`would_block`] — whether a call a thread is about to make will wait
//!   (the look before a pass at the edge of idleness).
//!
//! Knows no symbol names (that is `crate::api`'s business) and no kernel
//! constants (`crate::os::ksm` names what it asks the kernel by intent);
//! never allocates, locks, or changes `errno`.

pub mod catchup;
pub mod config;
pub mod engine;
pub mod exclusions;
pub mod exec_guard;
pub mod identity;
pub mod once;
pub mod policy;
pub mod would_block;
