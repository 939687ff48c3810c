//! Renders what a process did and what the kernel merged, as text or JSON.
//!
//! Pure rendering into a caller's fixed buffer; the field list of the JSON
//! object is documented in docs/report-format.md. Never allocates.

use crate::core::catchup_thread::Without;
use crate::counters::{Hook, Snapshot, FAILURE_ERRNOS};
use crate::fmt::BufWriter;
use crate::os::proc::{KsmStat, RegionClass, SmapsTotals};
use crate::os::sys;
use ksmauto_contract::report as field;
use ksmauto_contract::{Mode, SkipReason, Source};

/// Everything one report shows.
#[derive(Clone, Copy, Debug)]
pub struct Report {
    pub version: &'static str,
    pub pid: i32,
    /// When the process started (ticks after boot), as `/proc/PID/stat` says.
    pub start_time: Option<u64>,
    pub requested_mode: Mode,
    pub active_mode: Mode,
    /// Why `auto`/`process` fell back to `advise` (the errno of the refused
    /// `prctl`), if it did.
    pub fallback_errno: Option<i32>,
    pub min_size: usize,
    pub exclude_stack: bool,
    pub exclude_exec: bool,
    pub exclude_secret: bool,
    /// The malloc family's calls were counted (only when the report was
    /// asked for); otherwise their counts are `null` in the JSON.
    pub allocator_calls_counted: bool,
    pub counters: Snapshot,
    /// Catch-up passes this process completed (`advise` engine).
    pub catchup_scans: u64,
    /// Steps the catch-up passes took, VMAs they examined, advice revoked.
    pub catchup: crate::core::catchup::Stats,
    /// The catch-up thread's starts and retirements, or why there was none.
    pub catchup_thread: crate::core::catchup_thread::Stats,
    /// `KSMAUTO_REGISTER`'s name (`paying`, `all`).
    pub register: &'static str,
    /// What the decisions about what pays did; `None` where none were
    /// made in this process.
    pub paying: Option<crate::core::paying::Stats>,
    /// `/proc/self/ksm_stat`; `None` where the kernel has no KSM.
    pub ksm: Option<KsmStat>,
    /// `/proc/self/smaps` totals; `None` if it could not be read.
    pub smaps: Option<SmapsTotals>,
    pub page_size: usize,
}

impl Report {
    /// Whether this process has anything to say without being asked: it
    /// advised something or the kernel merged some of its pages.
    pub fn has_activity(&self) -> bool {
        let merged = self.ksm.map(|k| k.merged_pages()).unwrap_or(0);
        self.counters.total_advised_regions() > 0
            || self.counters.excluded_regions > 0
            || merged > 0
    }

    pub fn render(&self, json: bool, w: &mut BufWriter) {
        if json {
            self.render_json(w)
        } else {
            self.render_text(w)
        }
    }

    /// Two lines, three with the decisions about what pays: what the
    /// library did, what the kernel merged, what the decisions did.
    pub fn render_text(&self, w: &mut BufWriter) {
        self.text_engine(w);
        self.text_advised(w);
        self.text_skipped(w);
        self.text_exclusions_and_failures(w);
        self.text_catchup_thread(w);
        w.str("\n");
        self.text_kernel(w);
        self.text_paying(w);
    }

    /// `ksmauto[PID]: mode …`: the engine, and why not the one requested.
    fn text_engine(&self, w: &mut BufWriter) {
        w.str("ksmauto[")
            .u64(self.pid as u64)
            .str("]: mode ")
            .str(self.active_mode.name());
        if self.requested_mode != self.active_mode {
            w.str(" (requested ").str(self.requested_mode.name());
            if let Some(e) = self.fallback_errno {
                w.str("; PR_SET_MEMORY_MERGE refused: ")
                    .str(sys::errno_name(e));
            }
            w.str(")");
        }
        if self.active_mode == Mode::Process {
            // The kernel marks memory itself; only exclusions pass through us.
            w.str("; all anonymous memory mergeable (PR_SET_MEMORY_MERGE)");
        }
    }

    /// `; advised N regions, SIZE (by SOURCE SIZE, …)`.
    fn text_advised(&self, w: &mut BufWriter) {
        let c = &self.counters;
        w.str("; advised ")
            .u64(c.total_advised_regions())
            .str(" regions, ")
            .human_bytes(c.total_advised_bytes());
        if c.total_advised_regions() > 0 {
            w.str(" (");
            let mut first = true;
            for s in Source::ALL {
                let n = c.advised_bytes[s as usize];
                if n > 0 {
                    w.str(if first { "" } else { ", " })
                        .str("by ")
                        .str(s.name())
                        .str(" ")
                        .human_bytes(n);
                    first = false;
                }
            }
            w.str(")");
        }
    }

    /// `; skipped N (REASON N, …)`.
    fn text_skipped(&self, w: &mut BufWriter) {
        let c = &self.counters;
        w.str("; skipped ").u64(c.total_skipped());
        if c.total_skipped() > 0 {
            w.str(" (");
            let mut first = true;
            for r in SkipReason::ALL {
                let n = c.skipped[r as usize];
                if n > 0 {
                    w.str(if first { "" } else { ", " })
                        .str(r.name())
                        .str(" ")
                        .u64(n);
                    first = false;
                }
            }
            w.str(")");
        }
    }

    /// `; excluded N (SIZE)` when anything was, `; madvise failures N`.
    fn text_exclusions_and_failures(&self, w: &mut BufWriter) {
        let c = &self.counters;
        if c.excluded_regions > 0 {
            w.str("; excluded ")
                .u64(c.excluded_regions)
                .str(" (")
                .human_bytes(c.excluded_bytes)
                .str(")");
        }
        w.str("; madvise failures ")
            .u64(c.total_madvise_failures());
    }

    /// `; catch-up: without its thread (WHY)` when it had none.
    fn text_catchup_thread(&self, w: &mut BufWriter) {
        let Some(why) = self.catchup_thread.without else {
            return;
        };
        w.str("; catch-up: without its thread (")
            .str(match why {
                Without::Seccomp => "seccomp filter",
                Without::CreateFailed(_) => "pthread_create: ",
                Without::MainThreadEnded => "the main thread ended",
            });
        if let Without::CreateFailed(e) = why {
            w.str(sys::errno_name(e));
        }
        w.str(")");
    }

    /// `ksmauto[PID]: kernel: …`: what `ksm_stat` and smaps say.
    fn text_kernel(&self, w: &mut BufWriter) {
        w.str("ksmauto[").u64(self.pid as u64).str("]: kernel: ");
        let Some(k) = self.ksm else {
            w.str("no KSM (no /proc/self/ksm_stat)\n");
            return;
        };
        w.str("merging ")
            .u64(k.merging_pages.unwrap_or(0))
            .str(" pages, zero pages ")
            .u64(k.zero_pages.unwrap_or(0));
        w.str(", profit ");
        let profit = k.process_profit.unwrap_or(0);
        if profit < 0 {
            w.str("-").human_bytes(profit.unsigned_abs());
        } else {
            w.human_bytes(profit as u64);
        }
        if k.merging_pages.unwrap_or(0) > 0 {
            w.str(", rmap items per merged page ");
            per_merged_page(w, k.rmap_items, k.merging_pages.unwrap_or(0));
        }
        if let Some(s) = self.smaps {
            w.str("; KSM by class:");
            for class in RegionClass::ALL {
                w.str(" ")
                    .str(class.name())
                    .str(" ")
                    .human_bytes(s.ksm_kb_of(class) * 1024);
            }
            w.str("; mergeable ")
                .u64(percent(s.mergeable_anon_kb, s.anon_kb))
                .str("% of ")
                .human_bytes(s.anon_kb * 1024);
            w.str(" anonymous");
        }
        w.str("\n");
    }

    /// `ksmauto[PID]: register paying: …`, where decisions were made.
    fn text_paying(&self, w: &mut BufWriter) {
        let Some(p) = self.paying else {
            return;
        };
        w.str("ksmauto[")
            .u64(self.pid as u64)
            .str("]: register paying: given to ksmd ")
            .human_bytes(p.probation_bytes + p.paying_bytes)
            .str(", resting ")
            .human_bytes(p.resting_bytes)
            .str("; taken out ")
            .u64(p.taken_out.0)
            .str(" (")
            .human_bytes(p.taken_out.1)
            .str(", on sight ")
            .human_bytes(p.taken_out_on_sight.1)
            .str("), probed again ")
            .u64(p.given_back.0)
            .str(" (")
            .human_bytes(p.given_back.1)
            .str("), found paying ")
            .u64(p.found_paying)
            .str("\n");
    }

    /// One JSON object on one line, its members in the order of
    /// docs/report-format.md.
    pub fn render_json(&self, w: &mut BufWriter) {
        w.str("{");
        self.json_settings(w);
        self.json_calls(w);
        self.json_advised(w);
        self.json_catchup(w);
        self.json_counts(w);
        next(w, field::REGISTER).str("\"").str(self.register).str("\"");
        next(w, field::PAYING);
        match self.paying {
            None => {
                w.str("null");
            }
            Some(p) => render_paying(w, &p),
        }
        self.json_kernel(w);
        self.json_smaps(w);
        w.str("}\n");
    }

    /// The first members: who reports, and the settings it ran with.
    fn json_settings(&self, w: &mut BufWriter) {
        key(w, field::VERSION).str("\"").str(self.version).str("\"");
        next(w, field::PID).u64(self.pid as u64);
        next(w, field::START_TIME);
        match self.start_time {
            Some(t) => w.u64(t),
            None => w.str("null"),
        };
        next(w, field::MODE)
            .str("\"")
            .str(self.active_mode.name())
            .str("\"");
        next(w, field::REQUESTED_MODE)
            .str("\"")
            .str(self.requested_mode.name())
            .str("\"");
        next(w, field::FALLBACK_REASON);
        match self.fallback_errno {
            Some(e) => w.str("\"").str(sys::errno_name(e)).str("\""),
            None => w.str("null"),
        };
        next(w, field::MIN_SIZE).u64(self.min_size as u64);
        next(w, field::EXCLUDE).str("[");
        let mut first = true;
        for (on, name) in [
            (self.exclude_stack, "stack"),
            (self.exclude_exec, "exec"),
            (self.exclude_secret, "secret"),
        ] {
            if on {
                w.str(if first { "\"" } else { ",\"" }).str(name).str("\"");
                first = false;
            }
        }
        w.str("]");
    }

    /// `calls`: each hook's count (`null` for the malloc family's when
    /// they were not counted).
    fn json_calls(&self, w: &mut BufWriter) {
        next(w, field::CALLS).str("{");
        for (i, h) in Hook::ALL.iter().enumerate() {
            member(w, i, h.name());
            if h.is_allocator() && !self.allocator_calls_counted {
                w.str("null");
            } else {
                w.u64(self.counters.calls[*h as usize]);
            }
        }
        w.str("}");
    }

    /// `advised`: the totals, and by source.
    fn json_advised(&self, w: &mut BufWriter) {
        let c = &self.counters;
        next(w, field::ADVISED).str("{");
        key(w, field::REGIONS).u64(c.total_advised_regions());
        next(w, field::BYTES).u64(c.total_advised_bytes());
        next(w, field::BY_SOURCE).str("{");
        for (i, s) in Source::ALL.iter().enumerate() {
            member(w, i, s.name());
            regions_and_bytes(
                w,
                c.advised_regions[*s as usize],
                c.advised_bytes[*s as usize],
            );
        }
        w.str("}}");
    }

    /// `catchup_scans` and `catchup`, its thread included.
    fn json_catchup(&self, w: &mut BufWriter) {
        next(w, field::CATCHUP_SCANS).u64(self.catchup_scans);
        next(w, field::CATCHUP).str("{");
        key(w, field::STEPS).u64(self.catchup.steps);
        next(w, field::VMAS).u64(self.catchup.vmas);
        next(w, field::REVOKED).u64(self.catchup.revoked);
        let t = &self.catchup_thread;
        next(w, field::THREAD).str("{");
        key(w, field::STARTS).u64(t.starts);
        next(w, field::RETIRED).u64(t.retired);
        next(w, field::WITHOUT);
        match t.without {
            Some(why) => w.str("\"").str(without_name(why)).str("\""),
            None => w.str("null"),
        };
        w.str("}}");
    }

    /// `skipped`, `madvise_failures`, `excluded`, `unmerged`,
    /// `execs_without_merge_any`: the rest of the counters.
    fn json_counts(&self, w: &mut BufWriter) {
        let c = &self.counters;
        next(w, field::SKIPPED).str("{");
        for (i, r) in SkipReason::ALL.iter().enumerate() {
            member(w, i, r.name()).u64(c.skipped[*r as usize]);
        }
        w.str("}");
        next(w, field::MADVISE_FAILURES).str("{");
        key(w, field::TOTAL).u64(c.total_madvise_failures());
        for (i, e) in FAILURE_ERRNOS.iter().enumerate() {
            next(w, sys::errno_name(*e)).u64(c.madvise_failures[i]);
        }
        next(w, field::OTHER)
            .u64(c.madvise_failures[FAILURE_ERRNOS.len()])
            .str("}");
        next(w, field::EXCLUDED);
        regions_and_bytes(w, c.excluded_regions, c.excluded_bytes);
        next(w, field::UNMERGED);
        regions_and_bytes(w, c.unmerged_regions, c.unmerged_bytes);
        next(w, field::EXECS_WITHOUT_MERGE_ANY).u64(c.execs_without_merge_any);
    }

    /// `kernel`: `/proc/self/ksm_stat`, or `null` without KSM.
    fn json_kernel(&self, w: &mut BufWriter) {
        next(w, field::KERNEL);
        let Some(k) = self.ksm else {
            w.str("null");
            return;
        };
        w.str("{");
        key(w, field::RMAP_ITEMS).u64(k.rmap_items);
        next(w, field::MERGING_PAGES).u64(k.merging_pages.unwrap_or(0));
        next(w, field::ZERO_PAGES).u64(k.zero_pages.unwrap_or(0));
        next(w, field::PROFIT).i64(k.process_profit.unwrap_or(0));
        next(w, field::MERGE_ANY).str(if k.merge_any == Some(true) {
            "true"
        } else {
            "false"
        });
        next(w, field::PAGE_SIZE).u64(self.page_size as u64);
        next(w, field::RMAP_ITEMS_PER_MERGED_PAGE);
        match k.merging_pages.unwrap_or(0) {
            0 => w.str("null"),
            merged => per_merged_page(w, k.rmap_items, merged),
        };
        w.str("}");
    }

    /// `smaps`: KSM by class and how much is mergeable, or `null`.
    fn json_smaps(&self, w: &mut BufWriter) {
        next(w, field::SMAPS);
        let Some(s) = self.smaps else {
            w.str("null");
            return;
        };
        w.str("{");
        key(w, field::KSM_KB).str("{");
        for (i, class) in RegionClass::ALL.iter().enumerate() {
            member(w, i, class.name()).u64(s.ksm_kb_of(*class));
        }
        w.str("}");
        next(w, field::ANON_KB).u64(s.anon_kb);
        next(w, field::MERGEABLE_ANON_KB).u64(s.mergeable_anon_kb);
        next(w, field::MERGEABLE_PERCENT)
            .u64(percent(s.mergeable_anon_kb, s.anon_kb))
            .str("}");
    }
}

/// The `paying` object (see `ksmauto_contract::report::PAYING`).
fn render_paying(w: &mut BufWriter, p: &crate::core::paying::Stats) {
    w.str("{");
    key(w, field::REGISTERED_BYTES).u64(p.probation_bytes + p.paying_bytes);
    next(w, field::PROBATION).u64(p.probation as u64);
    next(w, field::RESTING);
    regions_and_bytes(w, p.resting as u64, p.resting_bytes);
    next(w, field::TAKEN_OUT);
    regions_and_bytes(w, p.taken_out.0, p.taken_out.1);
    next(w, field::TAKEN_OUT_ON_SIGHT);
    regions_and_bytes(w, p.taken_out_on_sight.0, p.taken_out_on_sight.1);
    next(w, field::PROBED_AGAIN);
    regions_and_bytes(w, p.given_back.0, p.given_back.1);
    next(w, field::PROBED_ON_CHANGE);
    regions_and_bytes(w, p.given_back_on_change.0, p.given_back_on_change.1);
    next(w, field::PROBED_ON_SIGHTING);
    regions_and_bytes(w, p.given_back_on_sighting.0, p.given_back_on_sighting.1);
    next(w, field::FOUND_PAYING).u64(p.found_paying);
    next(w, field::REFUSED).u64(p.refused);
    next(w, field::DEFERRED).u64(p.deferred);
    next(w, field::ROUNDS).u64(p.rounds);
    w.str("}");
}

/// `rmap / merged` with two decimals.
fn per_merged_page<'w, 'b>(w: &'w mut BufWriter<'b>, rmap: u64, merged: u64) -> &'w mut BufWriter<'b> {
    let hundredths = rmap.saturating_mul(100) / merged.max(1);
    w.u64(hundredths / 100).str(".");
    if hundredths % 100 < 10 {
        w.str("0");
    }
    w.u64(hundredths % 100)
}

/// The JSON name of why the catch-up thread was missing.
fn without_name(why: Without) -> &'static str {
    match why {
        Without::Seccomp => "seccomp",
        Without::CreateFailed(e) => sys::errno_name(e),
        Without::MainThreadEnded => "main-thread-ended",
    }
}

/// `"name":`, the first member of an object.
fn key<'w, 'b>(w: &'w mut BufWriter<'b>, name: &str) -> &'w mut BufWriter<'b> {
    w.str("\"").str(name).str("\":")
}

/// `,"name":`, a member after the first.
fn next<'w, 'b>(w: &'w mut BufWriter<'b>, name: &str) -> &'w mut BufWriter<'b> {
    w.str(",").str("\"").str(name).str("\":")
}

/// Member `index` of an object whose members are a list's names.
fn member<'w, 'b>(w: &'w mut BufWriter<'b>, index: usize, name: &str) -> &'w mut BufWriter<'b> {
    if index == 0 {
        key(w, name)
    } else {
        next(w, name)
    }
}

/// `{"regions":…,"bytes":…}`.
fn regions_and_bytes(w: &mut BufWriter, regions: u64, bytes: u64) {
    w.str("{");
    key(w, field::REGIONS).u64(regions);
    next(w, field::BYTES).u64(bytes).str("}");
}

fn percent(part: u64, whole: u64) -> u64 {
    part.saturating_mul(100).checked_div(whole).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut counters = Snapshot::default();
        counters.calls[Hook::Mmap as usize] = 3;
        counters.advised_regions[Source::Mmap as usize] = 3;
        counters.advised_bytes[Source::Mmap as usize] = 12288;
        counters.skipped[SkipReason::File as usize] = 2;
        let mut smaps = SmapsTotals::default();
        smaps.anon_kb = 100;
        smaps.mergeable_anon_kb = 50;
        smaps.ksm_kb[RegionClass::Anon as usize] = 12;
        Report {
            version: "0.1.0",
            pid: 42,
            start_time: Some(12345),
            requested_mode: Mode::Auto,
            active_mode: Mode::Advise,
            fallback_errno: Some(libc::EINVAL),
            min_size: 4096,
            exclude_stack: true,
            exclude_exec: false,
            exclude_secret: true,
            allocator_calls_counted: true,
            counters,
            catchup_scans: 2,
            catchup: crate::core::catchup::Stats {
                passes: 2,
                steps: 3,
                vmas: 70,
                revoked: 1,
            },
            catchup_thread: crate::core::catchup_thread::Stats {
                starts: 2,
                retired: 1,
                without: None,
            },
            register: "paying",
            paying: None,
            ksm: Some(KsmStat {
                rmap_items: 3,
                zero_pages: Some(0),
                merging_pages: Some(3),
                process_profit: Some(8000),
                merge_any: Some(false),
                mergeable: Some(true),
            }),
            smaps: Some(smaps),
            page_size: 4096,
        }
    }

    fn render(r: &Report, json: bool) -> String {
        let mut buf = [0u8; 8192];
        let mut w = BufWriter::new(&mut buf);
        r.render(json, &mut w);
        assert!(!w.truncated());
        String::from_utf8(w.as_bytes().to_vec()).unwrap()
    }

    /// Every counter at its largest, the decisions' included: the JSON
    /// still fits the exit report's buffer.
    #[test]
    fn the_largest_json_report_fits_the_exit_buffer() {
        let mut r = sample();
        let m = u64::MAX;
        // Summed into totals: 19 digits each, not 20.
        let a = 10u64.pow(18);
        r.counters = Snapshot {
            calls: [m; Hook::COUNT],
            advised_regions: [a; Source::COUNT],
            advised_bytes: [a; Source::COUNT],
            skipped: [a; SkipReason::COUNT],
            madvise_failures: [a; FAILURE_ERRNOS.len() + 1],
            excluded_regions: m,
            excluded_bytes: m,
            unmerged_regions: m,
            unmerged_bytes: m,
            execs_without_merge_any: m,
        };
        r.allocator_calls_counted = true;
        r.paying = Some(crate::core::paying::Stats {
            enabled: true,
            probation: u32::MAX,
            probation_bytes: m / 2,
            paying: u32::MAX,
            paying_bytes: m / 2,
            resting: u32::MAX,
            resting_bytes: m,
            taken_out: (m, m),
            given_back: (m, m),
            given_back_on_change: (m, m),
            taken_out_on_sight: (m, m),
            given_back_on_sighting: (m, m),
            found_paying: m,
            refused: m,
            deferred: m,
            rounds: m,
            judged: m,
            splits: m,
        });
        let text = render(&r, true);
        assert!(text.len() <= crate::report::REPORT_BUFFER, "{} bytes", text.len());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["paying"]["taken_out"]["regions"], m);
        assert_eq!(v["register"], "paying");
        assert_eq!(v["kernel"]["rmap_items_per_merged_page"], 1.0);
    }

    #[test]
    fn json_report_is_one_object_with_the_documented_fields() {
        let text = render(&sample(), true);
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["pid"], 42);
        assert_eq!(v["mode"], "advise");
        assert_eq!(v["requested_mode"], "auto");
        assert_eq!(v["fallback_reason"], "EINVAL");
        assert_eq!(v["exclude"], serde_json::json!(["stack", "secret"]));
        assert_eq!(v["calls"]["mmap"], 3);
        assert_eq!(v["calls"].as_object().unwrap().len(), Hook::COUNT);
        assert_eq!(v["advised"]["regions"], 3);
        assert_eq!(v["advised"]["bytes"], 12288);
        assert_eq!(v["advised"]["by_source"]["mmap"]["bytes"], 12288);
        assert_eq!(v["advised"]["by_source"]["catchup"]["regions"], 0);
        assert_eq!(v["catchup_scans"], 2);
        assert_eq!(v["catchup"]["steps"], 3);
        assert_eq!(v["catchup"]["vmas"], 70);
        assert_eq!(v["catchup"]["revoked"], 1);
        assert_eq!(v["catchup"]["thread"]["starts"], 2);
        assert_eq!(v["catchup"]["thread"]["retired"], 1);
        assert!(v["catchup"]["thread"]["without"].is_null());
        assert_eq!(v["skipped"]["file"], 2);
        assert_eq!(v["madvise_failures"]["total"], 0);
        assert_eq!(v["kernel"]["merging_pages"], 3);
        assert_eq!(v["kernel"]["profit"], 8000);
        assert_eq!(v["smaps"]["ksm_kb"]["anon"], 12);
        assert_eq!(v["smaps"]["mergeable_percent"], 50);
    }

    #[test]
    fn json_report_without_ksm_has_null_kernel_view() {
        let mut r = sample();
        r.ksm = None;
        r.smaps = None;
        r.fallback_errno = None;
        let v: serde_json::Value = serde_json::from_str(&render(&r, true)).unwrap();
        assert!(v["kernel"].is_null() && v["smaps"].is_null() && v["fallback_reason"].is_null());
    }

    #[test]
    fn text_report_is_two_short_lines() {
        let text = render(&sample(), false);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            text.contains("mode advise (requested auto; PR_SET_MEMORY_MERGE refused: EINVAL)"),
            "{text}"
        );
        assert!(
            text.contains("advised 3 regions, 12.0 KiB (by mmap 12.0 KiB)"),
            "{text}"
        );
        assert!(text.contains("merging 3 pages"), "{text}");
        for line in text.lines() {
            assert!(line.len() < 240, "{line}");
        }
    }

    #[test]
    fn a_report_says_why_the_catch_up_had_no_thread() {
        let mut r = sample();
        r.catchup_thread.without = Some(Without::Seccomp);
        let text = render(&r, false);
        assert!(text.contains("; catch-up: without its thread (seccomp filter)"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&render(&r, true)).unwrap();
        assert_eq!(v["catchup"]["thread"]["without"], "seccomp");
        r.catchup_thread.without = Some(Without::CreateFailed(libc::EAGAIN));
        assert!(render(&r, false).contains("without its thread (pthread_create: EAGAIN)"));
        let v: serde_json::Value = serde_json::from_str(&render(&r, true)).unwrap();
        assert_eq!(v["catchup"]["thread"]["without"], "EAGAIN");
        r.catchup_thread.without = Some(Without::MainThreadEnded);
        assert!(render(&r, false).contains("without its thread (the main thread ended)"));
        let v: serde_json::Value = serde_json::from_str(&render(&r, true)).unwrap();
        assert_eq!(v["catchup"]["thread"]["without"], "main-thread-ended");
    }

    #[test]
    fn text_report_of_process_mode_says_the_kernel_marks_everything() {
        let mut r = sample();
        r.active_mode = Mode::Process;
        r.fallback_errno = None;
        let text = render(&r, false);
        assert!(text.contains("mode process (requested auto); all anonymous memory mergeable (PR_SET_MEMORY_MERGE)"), "{text}");
    }

    /// [`sample`] with every optional part of a report filled in, each
    /// list with more than one member: what the golden renders below show.
    fn everything() -> Report {
        let mut r = sample();
        let c = &mut r.counters;
        c.calls[Hook::Malloc as usize] = 1000;
        c.calls[Hook::Munmap as usize] = 2;
        c.advised_regions[Source::CatchUp as usize] = 5;
        c.advised_bytes[Source::CatchUp as usize] = 3 << 20;
        c.advised_regions[Source::Api as usize] = 1;
        c.advised_bytes[Source::Api as usize] = 4096;
        c.skipped[SkipReason::Stack as usize] = 4;
        c.skipped[SkipReason::Exec as usize] = 1;
        c.madvise_failures[1] = 2;
        c.madvise_failures[FAILURE_ERRNOS.len()] = 1;
        c.excluded_regions = 2;
        c.excluded_bytes = 8192;
        c.unmerged_regions = 3;
        c.unmerged_bytes = 12288;
        c.execs_without_merge_any = 1;
        r.exclude_exec = true;
        r.catchup_thread.without = Some(Without::CreateFailed(libc::EAGAIN));
        r.paying = Some(crate::core::paying::Stats {
            enabled: true,
            probation: 2,
            probation_bytes: 1 << 20,
            paying: 1,
            paying_bytes: 2 << 20,
            resting: 3,
            resting_bytes: 5 << 20,
            taken_out: (4, 6 << 20),
            given_back: (1, 1 << 20),
            given_back_on_change: (1, 1 << 20),
            taken_out_on_sight: (2, 4 << 20),
            given_back_on_sighting: (1, 2 << 20),
            found_paying: 1,
            refused: 0,
            deferred: 3,
            rounds: 9,
            judged: 12,
            splits: 2,
        });
        if let Some(k) = &mut r.ksm {
            k.process_profit = Some(-123456);
            k.rmap_items = 7;
            k.merge_any = Some(true);
        }
        r
    }

    /// Byte for byte what the renders write (fixed before they were split
    /// into one function per section, issue 22): a change of layout shows
    /// here. `{CALLS}` stands for the `calls` object, one member per hook of
    /// the hook list, so that a new hook does not change the golden text.
    #[test]
    fn the_renders_are_byte_for_byte_as_before() {
        let mut bare = sample();
        bare.allocator_calls_counted = false;
        bare.ksm = None;
        bare.smaps = None;
        bare.fallback_errno = None;
        bare.requested_mode = Mode::Advise;
        let golden: [(&str, Report, bool, &str); 6] = [
            (
                "sample",
                sample(),
                false,
                concat!(
                    r#"ksmauto[42]: mode advise (requested auto; PR_SET_MEMORY_MERGE refused: EINVAL); advised 3 regions, 12.0 KiB (by mmap 12.0 KiB); skipped 2 (file 2); madvise failures 0"#,
                    "\n",
                    r#"ksmauto[42]: kernel: merging 3 pages, zero pages 0, profit 7.8 KiB, rmap items per merged page 1.00; KSM by class: heap 0 B anon 12.0 KiB stack 0 B other 0 B; mergeable 50% of 100.0 KiB anonymous"#,
                ),
            ),
            (
                "sample",
                sample(),
                true,
                r#"{"ksmauto":"0.1.0","pid":42,"start_time":12345,"mode":"advise","requested_mode":"auto","fallback_reason":"EINVAL","min_size":4096,"exclude":["stack","secret"],"calls":{CALLS},"advised":{"regions":3,"bytes":12288,"by_source":{"mmap":{"regions":3,"bytes":12288},"api":{"regions":0,"bytes":0},"catchup":{"regions":0,"bytes":0}}},"catchup_scans":2,"catchup":{"steps":3,"vmas":70,"revoked":1,"thread":{"starts":2,"retired":1,"without":null}},"skipped":{"shared":0,"file":2,"hugetlb":0,"small":0,"exec":0,"stack":0,"excluded":0,"map_count":0},"madvise_failures":{"total":0,"EINVAL":0,"ENOMEM":0,"EAGAIN":0,"EPERM":0,"other":0},"excluded":{"regions":0,"bytes":0},"unmerged":{"regions":0,"bytes":0},"execs_without_merge_any":0,"register":"paying","paying":null,"kernel":{"rmap_items":3,"merging_pages":3,"zero_pages":0,"profit":8000,"merge_any":false,"page_size":4096,"rmap_items_per_merged_page":1.00},"smaps":{"ksm_kb":{"heap":0,"anon":12,"stack":0,"other":0},"anon_kb":100,"mergeable_anon_kb":50,"mergeable_percent":50}}"#,
            ),
            (
                "everything",
                everything(),
                false,
                concat!(
                    r#"ksmauto[42]: mode advise (requested auto; PR_SET_MEMORY_MERGE refused: EINVAL); advised 9 regions, 3.0 MiB (by mmap 12.0 KiB, by api 4.0 KiB, by catchup 3.0 MiB); skipped 7 (file 2, exec 1, stack 4); excluded 2 (8.0 KiB); madvise failures 3; catch-up: without its thread (pthread_create: EAGAIN)"#,
                    "\n",
                    r#"ksmauto[42]: kernel: merging 3 pages, zero pages 0, profit -120.5 KiB, rmap items per merged page 2.33; KSM by class: heap 0 B anon 12.0 KiB stack 0 B other 0 B; mergeable 50% of 100.0 KiB anonymous"#,
                    "\n",
                    r#"ksmauto[42]: register paying: given to ksmd 3.0 MiB, resting 5.0 MiB; taken out 4 (6.0 MiB, on sight 4.0 MiB), probed again 1 (1.0 MiB), found paying 1"#,
                ),
            ),
            (
                "everything",
                everything(),
                true,
                r#"{"ksmauto":"0.1.0","pid":42,"start_time":12345,"mode":"advise","requested_mode":"auto","fallback_reason":"EINVAL","min_size":4096,"exclude":["stack","exec","secret"],"calls":{CALLS},"advised":{"regions":9,"bytes":3162112,"by_source":{"mmap":{"regions":3,"bytes":12288},"api":{"regions":1,"bytes":4096},"catchup":{"regions":5,"bytes":3145728}}},"catchup_scans":2,"catchup":{"steps":3,"vmas":70,"revoked":1,"thread":{"starts":2,"retired":1,"without":"EAGAIN"}},"skipped":{"shared":0,"file":2,"hugetlb":0,"small":0,"exec":1,"stack":4,"excluded":0,"map_count":0},"madvise_failures":{"total":3,"EINVAL":0,"ENOMEM":2,"EAGAIN":0,"EPERM":0,"other":1},"excluded":{"regions":2,"bytes":8192},"unmerged":{"regions":3,"bytes":12288},"execs_without_merge_any":1,"register":"paying","paying":{"registered_bytes":3145728,"probation":2,"resting":{"regions":3,"bytes":5242880},"taken_out":{"regions":4,"bytes":6291456},"taken_out_on_sight":{"regions":2,"bytes":4194304},"probed_again":{"regions":1,"bytes":1048576},"probed_on_change":{"regions":1,"bytes":1048576},"probed_on_sighting":{"regions":1,"bytes":2097152},"found_paying":1,"refused":0,"deferred":3,"rounds":9},"kernel":{"rmap_items":7,"merging_pages":3,"zero_pages":0,"profit":-123456,"merge_any":true,"page_size":4096,"rmap_items_per_merged_page":2.33},"smaps":{"ksm_kb":{"heap":0,"anon":12,"stack":0,"other":0},"anon_kb":100,"mergeable_anon_kb":50,"mergeable_percent":50}}"#,
            ),
            (
                "bare",
                bare,
                false,
                concat!(
                    r#"ksmauto[42]: mode advise; advised 3 regions, 12.0 KiB (by mmap 12.0 KiB); skipped 2 (file 2); madvise failures 0"#,
                    "\n",
                    r#"ksmauto[42]: kernel: no KSM (no /proc/self/ksm_stat)"#,
                ),
            ),
            (
                "bare",
                bare,
                true,
                r#"{"ksmauto":"0.1.0","pid":42,"start_time":12345,"mode":"advise","requested_mode":"advise","fallback_reason":null,"min_size":4096,"exclude":["stack","secret"],"calls":{CALLS},"advised":{"regions":3,"bytes":12288,"by_source":{"mmap":{"regions":3,"bytes":12288},"api":{"regions":0,"bytes":0},"catchup":{"regions":0,"bytes":0}}},"catchup_scans":2,"catchup":{"steps":3,"vmas":70,"revoked":1,"thread":{"starts":2,"retired":1,"without":null}},"skipped":{"shared":0,"file":2,"hugetlb":0,"small":0,"exec":0,"stack":0,"excluded":0,"map_count":0},"madvise_failures":{"total":0,"EINVAL":0,"ENOMEM":0,"EAGAIN":0,"EPERM":0,"other":0},"excluded":{"regions":0,"bytes":0},"unmerged":{"regions":0,"bytes":0},"execs_without_merge_any":0,"register":"paying","paying":null,"kernel":null,"smaps":null}"#,
            ),
        ];
        for (name, r, json, want) in golden {
            let want = format!("{}\n", want.replace("{CALLS}", &calls_json(&r)));
            assert_eq!(render(&r, json), want, "{name}, json {json}");
        }
    }

    /// The `calls` object of `r`'s JSON: each hook's count, or `null` for
    /// the malloc family when its calls were not counted.
    fn calls_json(r: &Report) -> String {
        let members: Vec<String> = Hook::ALL
            .iter()
            .map(|h| match h.is_allocator() && !r.allocator_calls_counted {
                true => format!("\"{}\":null", h.name()),
                false => format!("\"{}\":{}", h.name(), r.counters.calls[*h as usize]),
            })
            .collect();
        format!("{{{}}}", members.join(","))
    }

    #[test]
    fn activity_decides_whether_an_unrequested_report_is_printed() {
        let mut r = sample();
        assert!(r.has_activity());
        r.counters = Snapshot::default();
        r.ksm = Some(KsmStat::default());
        assert!(!r.has_activity());
    }
}
