//! The field names of the exit report's JSON object (one object per line,
//! documented in docs/report-format.md). The library writes them, the
//! CLI's `run` reads them: both spell them from here.
//!
//! The keys inside `calls`, `skipped`, `advised.by_source` and
//! `smaps.ksm_kb` are the names of the hooks, of [`crate::SkipReason`], of
//! [`crate::Source`] and of the region classes; those inside
//! `madvise_failures` are errno names.

// Top level, in the order the object lists them.

/// The library's version.
pub const VERSION: &str = "ksmauto";
pub const PID: &str = "pid";
/// When the process started, in clock ticks after boot (field 22 of
/// `/proc/PID/stat`): with `pid` it names one process, in any pid namespace
/// (a pid is reused, and inside a namespace it is not the host's).
pub const START_TIME: &str = "start_time";
/// The engine that ran ([`crate::Mode`] name).
pub const MODE: &str = "mode";
/// The engine `KSMAUTO_MODE` asked for.
pub const REQUESTED_MODE: &str = "requested_mode";
/// Why `mode` differs from `requested_mode` (an errno name), or `null`.
pub const FALLBACK_REASON: &str = "fallback_reason";
pub const MIN_SIZE: &str = "min_size";
/// The excluded classes, as an array of names.
pub const EXCLUDE: &str = "exclude";
/// Calls per hook (`null` for the malloc family when not counted).
pub const CALLS: &str = "calls";
/// `{regions, bytes, by_source: {<source>: {regions, bytes}}}`.
pub const ADVISED: &str = "advised";
pub const BY_SOURCE: &str = "by_source";
pub const CATCHUP_SCANS: &str = "catchup_scans";
/// `{steps, vmas, revoked, thread}` of the catch-up passes.
pub const CATCHUP: &str = "catchup";
pub const STEPS: &str = "steps";
pub const VMAS: &str = "vmas";
pub const REVOKED: &str = "revoked";
/// Inside `catchup`: `{starts, retired, without}` of the library's
/// catch-up thread (`advise` mode).
pub const THREAD: &str = "thread";
/// Times the thread was created.
pub const STARTS: &str = "starts";
/// Times it was stopped for a call that needs the process without it
/// (`unshare`, `setns`, `fork`, a per-thread restriction).
pub const RETIRED: &str = "retired";
/// Why the library did without its thread (`"seccomp"`,
/// `"main-thread-ended"`, or the errno name `pthread_create` returned), or
/// `null`.
pub const WITHOUT: &str = "without";
/// Regions left alone, per [`crate::SkipReason`].
pub const SKIPPED: &str = "skipped";
/// `{total, <errno name>…, other}`.
pub const MADVISE_FAILURES: &str = "madvise_failures";
pub const TOTAL: &str = "total";
pub const OTHER: &str = "other";
/// `{regions, bytes}` kept out of merging by `ksmauto_exclude` or secrets.
pub const EXCLUDED: &str = "excluded";
/// `{regions, bytes}` taken back out of merging.
pub const UNMERGED: &str = "unmerged";
pub const EXECS_WITHOUT_MERGE_ANY: &str = "execs_without_merge_any";
/// What ksmd is given: `"paying"` or `"all"` (`KSMAUTO_REGISTER`).
pub const REGISTER: &str = "register";
/// The decisions about what pays (`register` `paying`), or `null` where
/// none were made (`all`, `off`, no thread allowed, no KSM):
/// `{registered_bytes, probation, resting: {regions, bytes}, taken_out:
/// {regions, bytes}, taken_out_on_sight: {regions, bytes}, probed_again:
/// {regions, bytes}, probed_on_change: {regions, bytes},
/// probed_on_sighting: {regions, bytes}, found_paying, refused, deferred,
/// rounds}`.
pub const PAYING: &str = "paying";
/// Bytes of the regions the decisions keep given to ksmd (on probation or
/// paying) at the last round.
pub const REGISTERED_BYTES: &str = "registered_bytes";
/// Regions on probation at the last round.
pub const PROBATION: &str = "probation";
/// Regions taken back out and not given back yet, at the last round.
pub const RESTING: &str = "resting";
/// Ranges taken back out of ksmd's hands (`MADV_UNMERGEABLE`), in all.
pub const TAKEN_OUT: &str = "taken_out";
/// Of `taken_out`, the ranges taken out when first met, before any
/// probation: their content's sightings were held nowhere else.
pub const TAKEN_OUT_ON_SIGHT: &str = "taken_out_on_sight";
/// Ranges given back to ksmd for another probe, in all.
pub const PROBED_AGAIN: &str = "probed_again";
/// Of `probed_again`, the ranges given back because a look at their
/// content found it changed and then still.
pub const PROBED_ON_CHANGE: &str = "probed_on_change";
/// Of `probed_again`, the ranges taken out on sight and given back because
/// a copy of their content was sighted in another process later.
pub const PROBED_ON_SIGHTING: &str = "probed_on_sighting";
/// Probes that found a resting region paying.
pub const FOUND_PAYING: &str = "found_paying";
/// Ranges left given to ksmd for lack of VMA budget.
pub const REFUSED: &str = "refused";
/// Changes a round had no room for in its plan, made at the next round.
pub const DEFERRED: &str = "deferred";
/// Rounds of decisions taken.
pub const ROUNDS: &str = "rounds";
/// The process's `ksm_stat` and the page size, or `null` without KSM.
pub const KERNEL: &str = "kernel";
/// `/proc/self/smaps` totals, or `null`.
pub const SMAPS: &str = "smaps";

// Shared by `advised`, its sources, `excluded` and `unmerged`.

pub const REGIONS: &str = "regions";
pub const BYTES: &str = "bytes";

// Inside `kernel`.

pub const RMAP_ITEMS: &str = "rmap_items";
pub const MERGING_PAGES: &str = "merging_pages";
pub const ZERO_PAGES: &str = "zero_pages";
pub const PROFIT: &str = "profit";
pub const MERGE_ANY: &str = "merge_any";
pub const PAGE_SIZE: &str = "page_size";
/// `rmap_items / merging_pages`, two decimals (`null` with nothing
/// merged): the kernel's break-even is 64.
pub const RMAP_ITEMS_PER_MERGED_PAGE: &str = "rmap_items_per_merged_page";

// Inside `smaps`.

/// `KSM:` kB per region class.
pub const KSM_KB: &str = "ksm_kb";
pub const ANON_KB: &str = "anon_kb";
pub const MERGEABLE_ANON_KB: &str = "mergeable_anon_kb";
pub const MERGEABLE_PERCENT: &str = "mergeable_percent";
