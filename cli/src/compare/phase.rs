//! One phase of `compare`: the copies started (with or without the
//! preload), looked at every half second until their memory settles (or
//! they exit, or the time is up), then stopped (also when the phase ends
//! with an error: `Copies` stops them when dropped). Owns when a phase is
//! over and, with `--hold-ksmd`, when ksmd is let go; what a look measures
//! is `copies`'.

use super::copies::{coverage_of, Copies, ProcCoverage, Sample};
use super::Options;
use crate::launch::Launch;
use crate::merge_any::Plan;
use crate::tree::has_children;
use crate::util::*;
use crate::{estimate, ksm, ksmd};
use anyhow::Result;
use ksmauto_contract::env;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// Between two looks at the copies.
const LOOK_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Serialize, Debug)]
pub struct Phase {
    pub preload: bool,
    pub pids: Vec<i32>,
    /// `settled`, `exited` or `timeout` (see [`Ended`]).
    pub ended: Ended,
    pub last: Sample,
    pub samples: Vec<Sample>,
    /// Each process of the last look, and which engine covers it.
    pub per_process: Vec<ProcCoverage>,
    /// `--ready-file`: seconds into the phase when every copy had made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_s: Option<f64>,
    /// `--hold-ksmd`, the phase with the preload: the pool once loaded and
    /// flat, before ksmd ran; and when ksmd was let go (seconds into the phase).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_merge: Option<Sample>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge_started_s: Option<f64>,
    /// CPU time of the ksmd thread during the phase (`--hold-ksmd`, the
    /// phase with the preload: since ksmd was let go); `null` where no
    /// ksmd thread was found. ksmd is the host's: whatever else it scans
    /// meanwhile counts too.
    pub ksmd_cpu_seconds: Option<f64>,
    /// The copies' merged pages (`ksm_merging_pages + ksm_zero_pages`) at
    /// the last look, in bytes, per CPU-second ksmd spent in the phase:
    /// what its work bought (`null` when ksmd used no CPU).
    pub merged_bytes_per_ksmd_cpu_second: Option<f64>,
}

/// How a phase ended; as JSON, its words.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Memory stayed flat (and ksmd scanned it, where it merges).
    #[serde(rename = "settled")]
    Settled,
    /// Every copy, and all they started, ended.
    #[serde(rename = "exited")]
    Exited,
    #[serde(rename = "timeout")]
    Timeout,
    /// `--hold-ksmd`: out of time before the pool had loaded.
    #[serde(rename = "timeout, ksmd still held (the pool never finished loading)")]
    TimeoutHeld,
}

impl Ended {
    pub fn words(self) -> &'static str {
        match self {
            Ended::Settled => "settled",
            Ended::Exited => "exited",
            Ended::Timeout => "timeout",
            Ended::TimeoutHeld => "timeout, ksmd still held (the pool never finished loading)",
        }
    }
}

/// What every phase of one comparison shares.
pub struct Settings<'a> {
    pub options: &'a Options,
    /// The library.
    pub lib: &'a Path,
    /// For the copies with the preload: a static program's merge-any.
    pub plan: Plan,
}

/// What one phase found.
pub struct PhaseEnd {
    pub phase: Phase,
    pub estimate: Option<estimate::Estimate>,
    pub estimate_before_merge: Option<estimate::Estimate>,
}

/// Runs one phase: with the preload or without; `want_estimate`: the
/// estimator's ideal for the pool at the end.
pub fn phase(s: &Settings, preload: bool, want_estimate: bool) -> Result<PhaseEnd> {
    // --hold-ksmd: ksmd stays stopped while the pool with the preload loads.
    let holding = preload && s.options.hold_ksmd;
    if holding {
        ksmd::ksmd(false, true, None)?;
    }
    let mut copies = Copies::start(&launch(s, preload), s.options.workers)?;
    let mut w = Watch::new(s, preload, holding);
    let ended = loop {
        std::thread::sleep(LOOK_INTERVAL);
        if let Some(sig) = ksmd::interrupted() {
            copies.stop();
            return Err(fail(128 + sig, format!("interrupted by signal {sig}")));
        }
        if let Some(ended) = w.look(&mut copies)? {
            break ended;
        }
    };
    if w.progress {
        eprintln!();
    }
    Ok(w.finish(&mut copies, ended, want_estimate))
}

/// How each copy starts: as the user's command would, but for our own
/// settings, with or without the preload.
fn launch<'a>(s: &Settings<'a>, preload: bool) -> Launch<'a> {
    let o = s.options;
    let launch = Launch::new(&o.command).detached().without_our_settings();
    if !preload {
        return launch.no_preload();
    }
    launch
        .preload(s.lib)
        .mode(Some(o.mode))
        .env(env::STATS, "off")
        .covering(&s.plan)
}

/// A phase from its start until it ends: the looks so far and what they
/// decided.
struct Watch<'a> {
    s: &'a Settings<'a>,
    preload: bool,
    /// `--hold-ksmd` in the phase with the preload: ksmd held until the
    /// pool has loaded.
    holding: bool,
    /// ksmd ran when the phase began.
    ksmd_on: bool,
    /// A progress line on stderr (a terminal, no `--json`).
    progress: bool,
    t0: Instant,
    samples: Vec<Sample>,
    last_pids: Vec<i32>,
    /// Indexes into `samples`: from where every copy was ready (all of
    /// them without --ready-file), and from where ksmd ran (all without a
    /// hold).
    ready_at: Option<usize>,
    merge_from: Option<usize>,
    ready_s: Option<f64>,
    before_merge: Option<Sample>,
    merge_started_s: Option<f64>,
    estimate_before_merge: Option<estimate::Estimate>,
    /// ksmd's CPU time when its work in the phase began.
    cpu_at_start: Option<f64>,
}

impl<'a> Watch<'a> {
    fn new(s: &'a Settings<'a>, preload: bool, holding: bool) -> Watch<'a> {
        Watch {
            s,
            preload,
            holding,
            ksmd_on: ksm::State::read() == ksm::State::Running,
            progress: !s.options.json && isatty(2),
            t0: Instant::now(),
            samples: vec![],
            last_pids: vec![],
            ready_at: s.options.ready_file.is_none().then_some(0),
            merge_from: (!holding).then_some(0),
            ready_s: None,
            before_merge: None,
            merge_started_s: None,
            estimate_before_merge: None,
            cpu_at_start: ksmd::cpu_seconds(),
        }
    }

    fn out_of_time(&self) -> bool {
        self.t0.elapsed() >= self.s.options.settle_timeout
    }

    /// One look at the copies; how the phase ended, once it has.
    fn look(&mut self, copies: &mut Copies) -> Result<Option<Ended>> {
        let (smp, pids) = copies.sample(self.t0);
        if smp.processes == 0 {
            // A look can miss a process forked just after it listed /proc
            // while its parent ended: the copies are over only when the
            // kernel says we have no child left (as subreaper we inherit
            // every orphan of theirs).
            if copies.all_ended() && !has_children() {
                return Ok(Some(Ended::Exited));
            }
            return Ok(self.out_of_time().then_some(Ended::Timeout));
        }
        self.last_pids = pids;
        self.samples.push(smp);
        self.show(&smp);
        if self.ready_at.is_none() && all_ready(&self.s.options.ready_file, &copies.ids) {
            self.ready_at = Some(self.samples.len() - 1);
            self.ready_s = Some(smp.t);
        }
        if self.settled(smp)? {
            return Ok(Some(Ended::Settled));
        }
        Ok(self.out_of_time().then_some(Ended::Timeout))
    }

    /// The progress line.
    fn show(&self, smp: &Sample) {
        if !self.progress {
            return;
        }
        eprint!(
            "\r{} t={:5.1}s procs {} PSS {} merged pages {}   ",
            if self.preload { "with   " } else { "without" },
            smp.t,
            smp.processes,
            human_bytes(smp.pss_bytes),
            smp.merging_pages + smp.zero_pages
        );
    }

    /// Whether the phase has settled, once every copy is ready. Held, the
    /// pool loaded and flat is first recorded, with the ideal for exactly
    /// its contents, and ksmd let go; it settles after that.
    fn settled(&mut self, smp: Sample) -> Result<bool> {
        let Some(ready) = self.ready_at else {
            return Ok(false);
        };
        match self.merge_from {
            None if settled(&self.samples[ready..], false) => {
                self.before_merge = Some(smp);
                self.estimate_before_merge = estimate::estimate(&self.last_pids, false).ok();
                self.cpu_at_start = ksmd::cpu_seconds();
                ksmd::ksmd(true, false, None)?;
                self.merge_started_s = Some(self.t0.elapsed().as_secs_f64());
                self.merge_from = Some(self.samples.len());
                Ok(false)
            }
            None => Ok(false),
            Some(from) => {
                let expect_merging = self.preload && (self.ksmd_on || self.holding);
                Ok(settled(&self.samples[from.max(ready)..], expect_merging))
            }
        }
    }

    /// The phase's result, from its last look; the copies stopped.
    fn finish(self, copies: &mut Copies, ended: Ended, want_estimate: bool) -> PhaseEnd {
        // Rounded to a millisecond: the clock ticks are 10 ms, the rest
        // of the difference is floating-point noise.
        let ksmd_cpu_seconds = match (self.cpu_at_start, ksmd::cpu_seconds()) {
            (Some(a), Some(b)) if b >= a => Some(((b - a) * 1000.0).round() / 1000.0),
            _ => None,
        };
        let last = self.samples.last().copied().unwrap_or_default();
        let merged_bytes = (last.merging_pages + last.zero_pages) * page_size();
        let estimate = if want_estimate && ended != Ended::Exited {
            estimate::estimate(&self.last_pids, false).ok()
        } else {
            None
        };
        let per_process = self.per_process();
        copies.stop();
        let ended = if self.holding && ended == Ended::Timeout && self.before_merge.is_none() {
            Ended::TimeoutHeld
        } else {
            ended
        };
        PhaseEnd {
            phase: Phase {
                preload: self.preload,
                pids: self.last_pids,
                ended,
                last,
                samples: self.samples,
                per_process,
                ready_s: self.ready_s,
                before_merge: self.before_merge,
                merge_started_s: self.merge_started_s,
                ksmd_cpu_seconds,
                merged_bytes_per_ksmd_cpu_second: ratio(merged_bytes as f64, ksmd_cpu_seconds),
            },
            estimate,
            estimate_before_merge: self.estimate_before_merge,
        }
    }

    /// Which engine covers each process of the last look.
    fn per_process(&self) -> Vec<ProcCoverage> {
        let decided = match (&self.s.plan, self.preload) {
            (Plan::Uncovered(u), true) => Some(u),
            _ => None,
        };
        let cmd = &self.s.options.command[0];
        let copies = std::fs::canonicalize(
            crate::exe::resolve(cmd, std::env::var_os("PATH").as_deref()).unwrap_or_default(),
        )
        .ok();
        self.last_pids
            .iter()
            .map(|&pid| {
                // The decision was about the copies' own program.
                let runs_it = copies.is_some()
                    && std::fs::read_link(format!("/proc/{pid}/exe")).ok() == copies;
                coverage_of(pid, decided.filter(|_| runs_it))
            })
            .collect()
    }
}

/// Every copy has made its ready file (`%p` in `pattern`: its pid).
fn all_ready(pattern: &Option<String>, ids: &[i32]) -> bool {
    let pattern = pattern.as_deref().unwrap_or("");
    ids.iter()
        .all(|id| Path::new(&pattern.replace("%p", &id.to_string())).exists())
}

/// Samples (0.5 s apart) that must agree before a run counts as settled.
const SETTLE_WINDOW: usize = 6;

/// Settled: PSS stayed within 1% over the last [`SETTLE_WINDOW`] samples
/// (3 s), and — where merging is expected — ksmd completed 3 full scans
/// *within* that window, so a merge still to come would have shown. Counting
/// scans from the start of the run instead ends runs during start-up: with
/// few pages registered a full scan takes milliseconds, and a program that is
/// still loading its data can pause for a second. Without the preload no
/// scans are required (ksmd may not scan at all when nothing is mergeable).
fn settled(samples: &[Sample], expect_merging: bool) -> bool {
    let n = samples.len();
    if n < SETTLE_WINDOW {
        return false;
    }
    let w = &samples[n - SETTLE_WINDOW..];
    let max = w.iter().map(|x| x.pss_bytes).max().unwrap_or(0) as f64;
    let min = w.iter().map(|x| x.pss_bytes).min().unwrap_or(0) as f64;
    let flat = max > 0.0 && (max - min) / max < 0.01;
    let scanned = !expect_merging || w[SETTLE_WINDOW - 1].full_scans >= w[0].full_scans + 3;
    flat && scanned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(pss_mib: u64, full_scans: u64) -> Sample {
        Sample {
            t: 0.0,
            processes: 2,
            rss_bytes: 0,
            pss_bytes: pss_mib << 20,
            merging_pages: 0,
            zero_pages: 0,
            profit: 0,
            full_scans,
        }
    }

    #[test]
    fn a_pause_during_start_up_is_not_settled_while_ksmd_has_not_scanned_it() {
        // Flat for 3 s, but ksmd completed its scans before the window.
        let early: Vec<Sample> = (0..8).map(|_| at(100, 50)).collect();
        assert!(!settled(&early, true));
        assert!(
            settled(&early, false),
            "without the preload no scans are needed"
        );
    }

    #[test]
    fn flat_pss_with_three_scans_inside_the_window_is_settled() {
        let s: Vec<Sample> = (0..6).map(|i| at(100, 10 + i)).collect();
        assert!(settled(&s, true));
    }

    #[test]
    fn moving_pss_is_not_settled() {
        let s: Vec<Sample> = (0..6).map(|i| at(100 - 2 * i, 10 + 2 * i)).collect();
        assert!(!settled(&s, true));
        assert!(!settled(&s[..3], true), "too few samples");
    }
}
