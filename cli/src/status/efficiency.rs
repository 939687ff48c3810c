//! `status`'s host-level efficiency: what ksmd's CPU and metadata buy.
//!
//! Owns these figures and their arithmetic: a [`Reading`] of ksmd's
//! counters (its thread's CPU through `ksmd::thread`, the one owner of
//! finding ksmd; sysfs `pages_scanned` and `full_scans`), the [`Window`]
//! between two readings or over ksmd's life, and the rmap overhead of one
//! snapshot. Never sleeps (the caller decides when readings are taken:
//! `status` stays one quick snapshot unless asked for a rate) and never
//! changes ksmd.
//!
//! A single snapshot gives no rate: the figures over ksmd's life
//! (`since_start`) are averages since boot, which a change of pace or of
//! what is registered makes misleading; `interval` is measured between two
//! readings (`--rate`, or successive frames of `--watch`).

use crate::util::ratio;
use crate::{ksm, ksmd};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Instant;

/// Bytes of one rmap item (`struct ksm_rmap_item`), the metadata ksmd
/// keeps for every page it scans: 64 on 64-bit, 32 on 32-bit (the kernel's
/// admin guide, "Monitoring KSM profit"; `general_profit` subtracts
/// `ksm_rmap_items` × this from what is saved).
pub const RMAP_ITEM_BYTES: u64 = 8 * std::mem::size_of::<usize>() as u64;

/// ksmd's counters at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    pub at: Instant,
    /// `None`: no ksmd thread found.
    pub ksmd: Option<ksmd::Thread>,
    pub pages_scanned: Option<u64>,
    pub full_scans: Option<u64>,
}

impl Reading {
    /// ksmd's counters now (a few small reads, no wait).
    pub fn take() -> Reading {
        Reading {
            ksmd: ksmd::thread(),
            pages_scanned: ksm::read_u64("pages_scanned"),
            full_scans: ksm::read_u64("full_scans"),
            at: Instant::now(),
        }
    }
}

/// What ksmd did over a stretch of time.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Window {
    pub seconds: f64,
    /// CPU time of the ksmd thread in the window (`null`: no ksmd thread).
    pub ksmd_cpu_seconds: Option<f64>,
    /// `ksmd_cpu_seconds / seconds`: the share of one CPU ksmd used.
    pub ksmd_cpu_share: Option<f64>,
    pub pages_scanned: Option<u64>,
    pub pages_scanned_per_second: Option<f64>,
    pub full_scans: Option<u64>,
    /// The host's saved bytes at the window's end ÷ `ksmd_cpu_share`:
    /// what a whole CPU of ksmd keeps merged at this efficiency — the
    /// same for a window of any length where nothing changes (`null`
    /// when ksmd used no CPU).
    pub saved_bytes_per_ksmd_cpu: Option<f64>,
}

impl Window {
    /// `None` for a window of no time.
    fn of(
        seconds: f64,
        cpu: Option<f64>,
        scanned: Option<u64>,
        full_scans: Option<u64>,
        saved_bytes: u64,
    ) -> Option<Window> {
        if !(seconds.is_finite() && seconds > 0.0) {
            return None;
        }
        let share = cpu.and_then(|c| ratio(c, Some(seconds)));
        Some(Window {
            seconds,
            ksmd_cpu_seconds: cpu,
            ksmd_cpu_share: share,
            pages_scanned: scanned,
            pages_scanned_per_second: scanned.and_then(|n| ratio(n as f64, Some(seconds))),
            full_scans,
            saved_bytes_per_ksmd_cpu: ratio(saved_bytes as f64, share),
        })
    }

    /// Between two readings; a counter that went back (it cannot, but a
    /// thread found once and not the other time can) gives `null`.
    pub fn between(before: &Reading, after: &Reading, saved_bytes: u64) -> Option<Window> {
        let seconds = after.at.saturating_duration_since(before.at).as_secs_f64();
        // Rounded to a millisecond: the clock ticks are 10 ms, the rest
        // of the difference is floating-point noise.
        let cpu = match (before.ksmd, after.ksmd) {
            (Some(a), Some(b)) if b.cpu_seconds >= a.cpu_seconds => {
                Some(((b.cpu_seconds - a.cpu_seconds) * 1000.0).round() / 1000.0)
            }
            _ => None,
        };
        let grown = |a: Option<u64>, b: Option<u64>| b?.checked_sub(a?);
        Window::of(
            seconds,
            cpu,
            grown(before.pages_scanned, after.pages_scanned),
            grown(before.full_scans, after.full_scans),
            saved_bytes,
        )
    }

    /// Since ksmd started (at boot): its whole CPU time and the counters
    /// since boot. `None` without a ksmd thread or its age.
    pub fn since_start(now: &Reading, saved_bytes: u64) -> Option<Window> {
        let k = now.ksmd?;
        Window::of(
            k.running_seconds?,
            Some(k.cpu_seconds),
            now.pages_scanned,
            now.full_scans,
            saved_bytes,
        )
    }
}

/// The host's efficiency in `status` (JSON `efficiency`).
#[derive(Serialize, Clone, Debug)]
pub struct Efficiency {
    /// CPU time of the ksmd thread since it started (`null`: none found).
    pub ksmd_cpu_seconds: Option<f64>,
    /// How long ago ksmd started (at boot).
    pub ksmd_running_seconds: Option<f64>,
    /// `pages_shared + pages_sharing + pages_unshared + pages_volatile`:
    /// every rmap item ksmd keeps (the admin guide's `all_rmap_items`).
    pub rmap_items: u64,
    pub rmap_item_bytes: u64,
    /// `rmap_items × rmap_item_bytes`: ksmd's metadata, against what it saves.
    pub rmap_bytes: u64,
    /// `rmap_items / (pages_shared + pages_sharing)`, two decimals: rmap
    /// items per page mapped to a KSM page, the host's sum of what each
    /// process's `ksm_rmap_items / ksm_merging_pages` is (`null` with
    /// nothing merged). Above 64 KSM costs more than it saves.
    pub rmap_items_per_merged_page: Option<f64>,
    /// Averages over ksmd's life (since boot).
    pub since_start: Option<Window>,
    /// Measured between two readings (`--rate`, `--watch`); else `null`.
    pub interval: Option<Window>,
    /// The reading these figures end at: the start of the next interval.
    #[serde(skip)]
    pub reading: Reading,
}

/// Every rmap item, and those per merged page, from sysfs's counters.
fn rmap(shared: u64, sharing: u64, unshared: u64, volatile: u64) -> (u64, Option<f64>) {
    let items = shared + sharing + unshared + volatile;
    let merged = shared + sharing;
    let per_merged = ratio(items as f64, Some(merged as f64)).map(|r| (r * 100.0).round() / 100.0);
    (items, per_merged)
}

impl Efficiency {
    /// From sysfs's files (`values`, as `status` read them), the host's
    /// saved bytes, the reading taken with them and, for an interval, the
    /// reading before.
    pub fn of(
        values: &BTreeMap<String, Value>,
        saved_bytes: u64,
        reading: Reading,
        before: Option<&Reading>,
    ) -> Efficiency {
        let num = |k: &str| values.get(k).and_then(Value::as_u64).unwrap_or(0);
        let (items, per_merged) = rmap(
            num("pages_shared"),
            num("pages_sharing"),
            num("pages_unshared"),
            num("pages_volatile"),
        );
        Efficiency {
            ksmd_cpu_seconds: reading.ksmd.map(|k| k.cpu_seconds),
            ksmd_running_seconds: reading.ksmd.and_then(|k| k.running_seconds),
            rmap_items: items,
            rmap_item_bytes: RMAP_ITEM_BYTES,
            rmap_bytes: items * RMAP_ITEM_BYTES,
            rmap_items_per_merged_page: per_merged,
            since_start: Window::since_start(&reading, saved_bytes),
            interval: before.and_then(|b| Window::between(b, &reading, saved_bytes)),
            reading,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn reading(at: Instant, cpu: Option<f64>, scanned: u64, full_scans: u64) -> Reading {
        Reading {
            at,
            ksmd: cpu.map(|cpu_seconds| ksmd::Thread {
                cpu_seconds,
                running_seconds: Some(1000.0),
            }),
            pages_scanned: Some(scanned),
            full_scans: Some(full_scans),
        }
    }

    #[test]
    fn an_interval_gives_cpu_share_scan_rate_and_savings_per_cpu() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(4);
        let w = Window::between(
            &reading(t0, Some(10.0), 1000, 3),
            &reading(t1, Some(11.0), 9000, 5),
            1 << 30,
        )
        .unwrap();
        assert_eq!(w.seconds, 4.0);
        assert_eq!(w.ksmd_cpu_seconds, Some(1.0));
        assert_eq!(w.ksmd_cpu_share, Some(0.25));
        assert_eq!(w.pages_scanned, Some(8000));
        assert_eq!(w.pages_scanned_per_second, Some(2000.0));
        assert_eq!(w.full_scans, Some(2));
        assert_eq!(w.saved_bytes_per_ksmd_cpu, Some(4.0 * (1u64 << 30) as f64));
    }

    #[test]
    fn a_window_of_no_time_is_none() {
        let t = Instant::now();
        let r = reading(t, Some(1.0), 1, 1);
        assert_eq!(Window::between(&r, &r, 4096), None);
        // The later reading first: no negative time either.
        let later = reading(t + Duration::from_secs(1), Some(2.0), 2, 2);
        assert_eq!(Window::between(&later, &r, 4096), None);
    }

    #[test]
    fn ksmd_that_used_no_cpu_gives_a_share_of_zero_and_no_savings_per_cpu() {
        // ksmd stopped (`run` 0): its thread sleeps, its counters stand.
        let t0 = Instant::now();
        let w = Window::between(
            &reading(t0, Some(5.0), 100, 1),
            &reading(t0 + Duration::from_secs(2), Some(5.0), 100, 1),
            4096,
        )
        .unwrap();
        assert_eq!(w.ksmd_cpu_share, Some(0.0));
        assert_eq!(w.pages_scanned_per_second, Some(0.0));
        assert_eq!(w.saved_bytes_per_ksmd_cpu, None);
    }

    #[test]
    fn without_a_ksmd_thread_the_cpu_figures_are_none_and_the_rest_stays() {
        let t0 = Instant::now();
        let after = reading(t0 + Duration::from_secs(2), None, 300, 1);
        let w = Window::between(&reading(t0, None, 100, 1), &after, 4096).unwrap();
        assert_eq!(
            (
                w.ksmd_cpu_seconds,
                w.ksmd_cpu_share,
                w.saved_bytes_per_ksmd_cpu
            ),
            (None, None, None)
        );
        assert_eq!(w.pages_scanned_per_second, Some(100.0));
        // Found only in one reading: no CPU figure either.
        let w = Window::between(&reading(t0, Some(1.0), 100, 1), &after, 4096).unwrap();
        assert_eq!(w.ksmd_cpu_seconds, None);
        assert_eq!(Window::since_start(&after, 4096), None);
    }

    #[test]
    fn since_start_is_over_ksmd_s_life() {
        let now = reading(Instant::now(), Some(50.0), 2_000_000, 40);
        let w = Window::since_start(&now, 100 << 20).unwrap();
        assert_eq!(w.seconds, 1000.0);
        assert_eq!(w.ksmd_cpu_share, Some(0.05));
        assert_eq!(w.pages_scanned_per_second, Some(2000.0));
        assert_eq!(
            w.saved_bytes_per_ksmd_cpu,
            Some(20.0 * (100u64 << 20) as f64)
        );
    }

    #[test]
    fn rmap_items_are_the_four_counters_and_per_merged_page_needs_a_merge() {
        assert_eq!(rmap(10, 30, 50, 10), (100, Some(2.5)));
        assert_eq!(rmap(0, 0, 50, 10), (60, None), "nothing merged");
        assert_eq!(rmap(0, 0, 0, 0), (0, None));
        assert_eq!(rmap(3, 0, 0, 7), (10, Some(3.33)));
        assert_eq!(RMAP_ITEM_BYTES, 64, "a 64-bit build");
    }
}
