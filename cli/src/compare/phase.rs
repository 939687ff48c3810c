//! One phase of `compare`: the copies started (with or without the
//! preload), their tree sampled until memory settles, then stopped.

use crate::merge_any::{self, Plan};
use crate::tree::has_children;
use crate::util::*;
use crate::{coverage, estimate, ksm, ksmd, launch, tree};
use anyhow::Result;
use ksmauto_contract::env;
use serde::Serialize;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Serialize, Debug, Clone, Copy, Default)]
pub struct Sample {
    pub t: f64,
    pub processes: usize,
    pub rss_bytes: u64,
    pub pss_bytes: u64,
    pub merging_pages: u64,
    pub zero_pages: u64,
    pub profit: i64,
    pub full_scans: u64,
}

#[derive(Serialize, Debug)]
pub struct Phase {
    pub preload: bool,
    pub pids: Vec<i32>,
    /// `settled`, `exited` or `timeout`.
    pub ended: String,
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
    /// `--hold-ksmd`: CPU time of the ksmd thread during the phase (the
    /// phase with the preload: since ksmd was let go).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ksmd_cpu_seconds: Option<f64>,
}

/// One process of a phase's last look.
#[derive(Serialize, Debug)]
pub struct ProcCoverage {
    pub pid: i32,
    pub comm: String,
    pub exe: String,
    /// Words as in `run`'s `coverage`: `preload (process)`, `inherited
    /// merge-any`, `none (static)`, …
    pub coverage: String,
    pub coverage_why: Option<String>,
    pub merged_pages: u64,
}

/// Which engine covers a live process; `decided`: why the launcher left
/// the copies' program uncovered, for a process still running it.
fn coverage_of(pid: i32, decided: Option<&str>) -> ProcCoverage {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| path_text(&p))
        .unwrap_or_default();
    let library = read_proc(format!("/proc/{pid}/maps")).is_ok_and(|m| maps_the_library(&m));
    let stat = ksm_stat(pid);
    let c = coverage::judge(
        library,
        "?",
        stat.as_ref(),
        Some(&coverage::facts(pid)),
        decided,
    );
    ProcCoverage {
        pid,
        comm: comm(pid),
        exe,
        coverage: c.words,
        coverage_why: c.why,
        merged_pages: stat.map(|k| k.merging_pages + k.zero_pages).unwrap_or(0),
    }
}

/// The live processes below us: the copies and everything they started,
/// found by parent links (a worker that calls `setsid` leaves the process
/// group, not the tree; one whose parent ended re-parents to us, the
/// subreaper). Orphans that ended are reaped here.
fn tree(children: &[i32]) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut live = vec![];
    for l in tree::descendants_of(&[me]) {
        if l.state == 'Z' || l.state == 'X' {
            if l.ppid == me && !children.contains(&l.pid) {
                let mut st = 0;
                unsafe { libc::waitpid(l.pid, &mut st, libc::WNOHANG) };
            }
            continue;
        }
        live.push(l.pid);
    }
    live
}

fn sample(children: &[i32], t0: Instant) -> (Sample, Vec<i32>) {
    let pids = tree(children);
    let mut s = Sample {
        t: t0.elapsed().as_secs_f64(),
        full_scans: ksm::read_u64("full_scans").unwrap_or(0),
        ..Default::default()
    };
    for &pid in &pids {
        if let Some((rss, pss)) = rss_pss(pid) {
            s.processes += 1;
            s.rss_bytes += rss;
            s.pss_bytes += pss;
        }
        if let Some(k) = ksm_stat(pid) {
            s.merging_pages += k.merging_pages;
            s.zero_pages += k.zero_pages;
            s.profit += k.profit;
        }
    }
    (s, pids)
}

fn stop(children: &mut [Child]) {
    let ids: Vec<i32> = children.iter().map(|c| c.id() as i32).collect();
    let signal_all = |sig| {
        for &id in &ids {
            unsafe { libc::kill(-id, sig) };
        }
        // Those that left the process group (setsid) are still in the tree.
        for pid in tree(&ids) {
            unsafe { libc::kill(pid, sig) };
        }
    };
    signal_all(libc::SIGTERM);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        if children
            .iter_mut()
            .all(|c| matches!(c.try_wait(), Ok(Some(_))))
            && tree(&ids).is_empty()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal_all(libc::SIGKILL);
    for c in children.iter_mut() {
        let _ = c.wait();
    }
    tree(&ids);
}

pub struct Settings<'a> {
    pub cmd: &'a [OsString],
    pub workers: usize,
    pub timeout: Duration,
    pub lib: Option<&'a Path>,
    pub mode: &'a str,
    pub quiet: bool,
    /// For the copies with the preload: a static program's merge-any.
    pub plan: Plan,
    pub hold_ksmd: bool,
    /// A file each copy makes once loaded (`%p`: its pid).
    pub ready_file: Option<&'a str>,
}

/// Every copy has made its ready file.
fn all_ready(pattern: &str, ids: &[i32]) -> bool {
    ids.iter()
        .all(|id| Path::new(&pattern.replace("%p", &id.to_string())).exists())
}

/// What one phase found.
pub struct PhaseEnd {
    pub phase: Phase,
    pub estimate: Option<estimate::Estimate>,
    pub estimate_before_merge: Option<estimate::Estimate>,
}

pub fn phase(s: &Settings, preload: bool, want_estimate: bool) -> Result<PhaseEnd> {
    // --hold-ksmd: ksmd stays stopped while the pool with the preload loads.
    let holding = preload && s.hold_ksmd;
    if holding {
        ksmd::ksmd(false, true, None)?;
    }
    let mut children = vec![];
    for _ in 0..s.workers {
        let mut c = Command::new(&s.cmd[0]);
        c.args(&s.cmd[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with(env::PREFIX) && k != env::SYSFS_KSM {
                c.env_remove(k);
            }
        }
        if preload {
            c.env("LD_PRELOAD", launch::preload_value(s.lib.unwrap()))
                .env(env::MODE, s.mode)
                .env(env::STATS, "off");
            if s.plan == Plan::SetMergeAny {
                merge_any::set_before_exec(&mut c);
            }
        } else {
            c.env_remove("LD_PRELOAD");
        }
        match c.spawn() {
            Ok(ch) => children.push(ch),
            Err(e) => {
                stop(&mut children);
                return Err(launch::spawn_error(&s.cmd[0], e));
            }
        }
    }
    let ids: Vec<i32> = children.iter().map(|c| c.id() as i32).collect();
    let ksmd_on = ksm::read_u64("run") == Some(1);
    let t0 = Instant::now();
    let mut samples: Vec<Sample> = vec![];
    let mut last_pids = vec![];
    let ended;
    // Indexes into `samples`: from where every copy was ready (all of them
    // without --ready-file), and from where ksmd ran (all without a hold).
    let mut ready_at = if s.ready_file.is_none() {
        Some(0)
    } else {
        None
    };
    let mut ready_s = None;
    let mut merge_from = if holding { None } else { Some(0) };
    let (mut before_merge, mut merge_started_s, mut estimate_before_merge) = (None, None, None);
    let mut cpu_at_start = if s.hold_ksmd {
        ksmd::cpu_seconds()
    } else {
        None
    };
    loop {
        std::thread::sleep(Duration::from_millis(500));
        if let Some(sig) = ksmd::interrupted() {
            stop(&mut children);
            return Err(fail(128 + sig, format!("interrupted by signal {sig}")));
        }
        let (smp, pids) = sample(&ids, t0);
        if smp.processes == 0 {
            // A look can miss a process forked just after it listed /proc
            // while its parent ended: the copies are over only when the
            // kernel says we have no child left (as subreaper we inherit
            // every orphan of theirs).
            let copies_ended = children
                .iter_mut()
                .all(|c| matches!(c.try_wait(), Ok(Some(_))));
            if copies_ended && !has_children() {
                ended = "exited";
                break;
            }
            if t0.elapsed() >= s.timeout {
                ended = "timeout";
                break;
            }
            continue;
        }
        last_pids = pids;
        samples.push(smp);
        if !s.quiet && isatty(2) {
            eprint!(
                "\r{} t={:5.1}s procs {} PSS {} merged pages {}   ",
                if preload { "with   " } else { "without" },
                smp.t,
                smp.processes,
                human_bytes(smp.pss_bytes),
                smp.merging_pages + smp.zero_pages
            );
        }
        if ready_at.is_none() && all_ready(s.ready_file.unwrap_or(""), &ids) {
            ready_at = Some(samples.len() - 1);
            ready_s = Some(smp.t);
        }
        if let Some(ready) = ready_at {
            match merge_from {
                // Loaded and flat: the pool before merging, and the ideal
                // for exactly its contents; then ksmd is let go.
                None if settled(&samples[ready..], false) => {
                    before_merge = Some(smp);
                    estimate_before_merge = estimate::estimate(&last_pids, false).ok();
                    cpu_at_start = ksmd::cpu_seconds();
                    ksmd::ksmd(true, false, None)?;
                    merge_started_s = Some(t0.elapsed().as_secs_f64());
                    merge_from = Some(samples.len());
                }
                None => {}
                Some(from)
                    if settled(&samples[from.max(ready)..], preload && (ksmd_on || holding)) =>
                {
                    ended = "settled";
                    break;
                }
                Some(_) => {}
            }
        }
        if t0.elapsed() >= s.timeout {
            ended = "timeout";
            break;
        }
    }
    if !s.quiet && isatty(2) {
        eprintln!();
    }
    let ksmd_cpu_seconds = match (cpu_at_start, ksmd::cpu_seconds()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let est = if want_estimate && ended != "exited" {
        estimate::estimate(&last_pids, false).ok()
    } else {
        None
    };
    let decided = match (&s.plan, preload) {
        (Plan::Uncovered(why), true) => Some(why.as_str()),
        _ => None,
    };
    let copies = std::fs::canonicalize(
        crate::exe::resolve(&s.cmd[0], std::env::var_os("PATH").as_deref()).unwrap_or_default(),
    )
    .ok();
    let per_process = last_pids
        .iter()
        .map(|&pid| {
            // The decision was about the copies' own program.
            let runs_it =
                copies.is_some() && std::fs::read_link(format!("/proc/{pid}/exe")).ok() == copies;
            coverage_of(pid, decided.filter(|_| runs_it))
        })
        .collect();
    stop(&mut children);
    let ended = if holding && ended == "timeout" && before_merge.is_none() {
        "timeout, ksmd still held (the pool never finished loading)"
    } else {
        ended
    };
    Ok(PhaseEnd {
        phase: Phase {
            preload,
            pids: last_pids,
            ended: ended.into(),
            last: samples.last().copied().unwrap_or_default(),
            samples,
            per_process,
            ready_s,
            before_merge,
            merge_started_s,
            ksmd_cpu_seconds,
        },
        estimate: est,
        estimate_before_merge,
    })
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
