//! Which memory qualifies: pure decisions over numbers, no side effects.
//!
//! Knows nothing about symbol names or system calls, so every rule here is
//! unit-tested directly. Never allocates. One job per module:
//! * [`regions`] — the rules a region goes through: a fresh mapping
//!   ([`judge_mapping`]), a line of `/proc/self/maps` ([`judge_vma`]);
//! * [`growth`] — which part of a qualifying VMA the catch-up advises when
//!   the memory is growing at one edge ([`advisable_part`]);
//! * [`range`] — page-range arithmetic ([`Range`]), shared with the
//!   exclusion table;
//! * [`paying`] — which regions pay for ksmd's attention, and when a region
//!   taken back out is probed again.

pub mod growth;
pub mod paying;
pub mod range;
pub mod regions;

pub use growth::advisable_part;
/// Why a region was left alone: the report's vocabulary, so it lives in the
/// contract crate with the other words the report and the CLI share.
pub use ksmauto_contract::SkipReason;
pub use range::Range;
pub use regions::{judge_class, judge_mapping, judge_vma, Verdict, VmaVerdict};
