//! Every `KSMAUTO_*` environment variable, by who reads it.

/// What every variable of ours starts with (a launcher that starts from a
/// clean slate removes the inherited ones by this prefix).
pub const PREFIX: &str = "KSMAUTO_";

// Read by the preload library (documented in the README, "Configuration").

/// `auto`, `advise`, `process` or `off` (see [`crate::Mode`]).
pub const MODE: &str = "KSMAUTO_MODE";
/// Smallest region made mergeable (`4096`, `64K`, `2M`).
pub const MIN_SIZE: &str = "KSMAUTO_MIN_SIZE";
/// Classes never made mergeable: `stack`, `exec`, `secret`, `none`.
pub const EXCLUDE: &str = "KSMAUTO_EXCLUDE";
/// Where the exit report goes: `stderr`, `off` or a path (`%p` = pid).
pub const STATS: &str = "KSMAUTO_STATS";
/// `text` or `json`.
pub const STATS_FORMAT: &str = "KSMAUTO_STATS_FORMAT";
/// Pause between the catch-up thread's passes (`100ms`, `2s`; `0` turns
/// catch-up, and the thread, off). (`KSMAUTO_SCAN_THREAD`, which asked for
/// a thread of its own, is no longer read: the thread comes and goes by
/// itself.)
pub const SCAN_INTERVAL: &str = "KSMAUTO_SCAN_INTERVAL";
/// What ksmd is given: `paying` (registered memory that does not pay for
/// ksmd's attention is taken back out, region by region, and probed again
/// later) or `all` (the default: every qualifying region, as the kernel's
/// merge-any does).
pub const REGISTER: &str = "KSMAUTO_REGISTER";
/// With `KSMAUTO_REGISTER=paying`: `on` judges a piece first
/// on what its content shows (sightings shared with the same user's other
/// processes through `/dev/shm/ksmauto-UID-CAPS`), `off` (the default) gives every piece a
/// probation by ksmd and publishes nothing.
pub const SIGHTINGS: &str = "KSMAUTO_SIGHTINGS";

/// The variables the library reads, in the order it reads them.
pub const LIBRARY: [&str; 8] = [
    MODE,
    MIN_SIZE,
    EXCLUDE,
    STATS,
    STATS_FORMAT,
    SCAN_INTERVAL,
    REGISTER,
    SIGHTINGS,
];

// Read by the CLI.

/// The KSM sysfs directory to use instead of `/sys/kernel/mm/ksm` (tests).
pub const SYSFS_KSM: &str = "KSMAUTO_SYSFS_KSM";
/// The file to read instead of `/proc/meminfo` for the unmerge debt (tests).
pub const PROC_MEMINFO: &str = "KSMAUTO_PROC_MEMINFO";

// Read by the test harness.

/// `1`: a KSM test that cannot use KSM fails instead of being skipped.
pub const REQUIRE_KSM: &str = "KSMAUTO_REQUIRE_KSM";
/// The library to test instead of building `target/release/libksmauto.so`.
pub const TEST_LIB: &str = "KSMAUTO_TEST_LIB";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_carries_the_prefix() {
        for name in LIBRARY.iter().chain(&[SYSFS_KSM, PROC_MEMINFO, REQUIRE_KSM, TEST_LIB]) {
            assert!(name.starts_with(PREFIX), "{name}");
        }
    }
}
