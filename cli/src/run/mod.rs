//! `ksmauto run`: a command under the preload, and one summary of every
//! process of its tree (each writes its own JSON report into a temp dir).
//!
//! This file owns the command: starting it, the loop that watches its
//! tree until the tree has ended, the summary and its text. `tree_watch`
//! looks at the tree (new processes, execs, exits, exit reports),
//! `proc_report` is what is known of one process and how it is said.
//! `run` never changes what the command does or waits for, beyond the
//! preload and its settings; signals sent to it go to the command.

mod proc_report;
mod tree_watch;

pub use proc_report::ProcReport;

use tree_watch::{TreeWatch, SAMPLE_INTERVAL};

use crate::launch::*;
use crate::merge_any::{self, Plan, Uncovered};
use crate::report_dir::ReportDir;
use crate::tree::*;
use crate::util::*;
use crate::watchdog::{self, Step};
use anyhow::Result;
use ksmauto_contract::{env, Mode};
use serde::Serialize;
use std::ffi::OsString;
use std::path::Path;

#[derive(Serialize, Debug)]
pub struct Summary {
    pub command: Vec<String>,
    pub library: String,
    pub exit_code: i32,
    pub processes: usize,
    pub advised_bytes: u64,
    pub merged_pages: u64,
    pub merging_pages: u64,
    pub zero_pages: u64,
    pub profit: i64,
    /// Sums of each process's last RSS/PSS (taken at different times).
    pub rss_bytes: u64,
    pub pss_bytes: u64,
    pub page_size: u64,
    pub sample_interval_ms: u64,
    /// Looks at the tree taken while it ran.
    pub samples: u64,
    pub per_process: Vec<ProcReport>,
    /// What `run` left unread in its report directory, and why.
    pub notes: Vec<String>,
}

/// `ksmauto run`: starts the command under the preload, watches its tree
/// until it has ended, prints the summary; the command's exit status.
pub fn run(mode: Option<Mode>, lib: Option<&Path>, json: bool, cmd: &[OsString]) -> Result<i32> {
    let lib = find_lib(lib)?;
    // A command that drops its privileges must still be able to add its
    // report: as root, anyone may add a file (see `report_dir`).
    let mut reports = ReportDir::create()?;
    // Orphans of the tree re-parent to us, so they stay below us in the
    // walk and we learn how they ended.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let plan = plan(cmd, mode);
    let launch = Launch::new(cmd)
        .preload(&lib)
        .env(env::STATS, reports.stats_pattern())
        .env(env::STATS_FORMAT, "json")
        .mode(mode)
        .covering(&plan);
    // A signal while it starts is kept for it, not our end.
    catch_signals_until_started();
    let child = launch.spawn()?;
    let child_pid = child.id() as i32;
    // Reaped below with waitpid(-1), together with the orphans.
    drop(child);
    forward_signals_to(child_pid);
    // From here on, SIGHUP, SIGINT or SIGTERM end a `run` stuck in a step.
    watchdog::start(reports.path().to_path_buf());
    let mut w = TreeWatch::new(child_pid);
    let code = watch(&mut w, &mut reports);
    // The summary, to its last byte written, is one more step.
    let _summary = Step::begin();
    let decided = match plan {
        Plan::Uncovered(u) => Some(u),
        _ => None,
    };
    let s = summary(cmd, &lib, code, w, decided, &reports);
    if json {
        for n in &s.notes {
            eprintln!("ksmauto: note: {n}");
        }
        println!("{}", serde_json::to_string(&s)?);
    } else {
        eprint!("{}", render_summary(&s));
    }
    Ok(code)
}

/// What covers the command: a static program never reads LD_PRELOAD, and
/// merge-any set before its exec covers it instead, where that is safe and
/// the kernel keeps it. Said on stderr.
fn plan(cmd: &[OsString], mode: Option<Mode>) -> Plan {
    let path_var = std::env::var_os("PATH");
    // The mode the library will take (--mode, else our KSMAUTO_MODE, which
    // the command inherits), not auto whenever --mode is absent.
    let plan = merge_any::plan(
        &cmd[0],
        path_var.as_deref(),
        merge_any::effective_mode(mode),
        &mut merge_any::probe,
    );
    merge_any::announce(&plan, &cmd[0]);
    plan
}

/// Looks at the tree every [`SAMPLE_INTERVAL`] until it has ended; the
/// command's exit status.
fn watch(w: &mut TreeWatch, reports: &mut ReportDir) -> i32 {
    let mut code = None;
    loop {
        let step = Step::begin();
        w.sample();
        if let Some(c) = w.reap() {
            code = Some(c);
        }
        // After the reaping: a pid can be used again only once it is reaped.
        w.collect_reports(reports);
        // The tree is over when we have no child left: as a subreaper we
        // inherit every orphan, so a living descendant is a child of ours or
        // below one. (A sample can miss a process forked just after it
        // listed /proc, so "no process seen" is not enough.)
        if code.is_some() && (!has_children() || stop_waiting_asked()) {
            // One more look: what is left is still running.
            w.sample();
            if let Some(c) = w.reap() {
                code = Some(c);
            }
            w.collect_reports(reports);
            break;
        }
        drop(step);
        std::thread::sleep(SAMPLE_INTERVAL);
    }
    code.unwrap_or(EXIT_RUNTIME)
}

/// Every process of the tree, described, and their sums. `decided`: why
/// `run` left the command's own program uncovered.
fn summary(
    cmd: &[OsString],
    lib: &Path,
    code: i32,
    w: TreeWatch,
    decided: Option<Uncovered>,
    reports: &ReportDir,
) -> Summary {
    let mut per = w.procs;
    if let Some(p) = per
        .iter_mut()
        .find(|p| p.pid == w.child as i64 && p.execs.is_empty())
    {
        p.decided = decided;
    }
    for p in per.iter_mut() {
        p.describe_end();
    }
    per.sort_by_key(|r| r.pid);
    Summary {
        command: cmd
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        library: lib.display().to_string(),
        exit_code: code,
        processes: per.len(),
        advised_bytes: per.iter().map(|r| r.advised_bytes).sum(),
        merging_pages: per.iter().map(|r| r.merging_pages).sum(),
        zero_pages: per.iter().map(|r| r.zero_pages).sum(),
        merged_pages: per.iter().map(|r| r.merged_pages).sum(),
        profit: per.iter().map(|r| r.profit).sum(),
        rss_bytes: per.iter().map(|r| r.rss_bytes).sum(),
        pss_bytes: per.iter().map(|r| r.pss_bytes).sum(),
        page_size: page_size(),
        sample_interval_ms: SAMPLE_INTERVAL.as_millis() as u64,
        samples: w.rounds,
        per_process: per,
        notes: reports.notes(),
    }
}

pub fn render_summary(s: &Summary) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "ksmauto: {} process{}, advised {}, merged pages {} (merging {}, zero {}) = {}, profit {}, exit {}",
        s.processes,
        if s.processes == 1 { "" } else { "es" },
        human_bytes(s.advised_bytes),
        s.merged_pages,
        s.merging_pages,
        s.zero_pages,
        human_bytes(s.merged_pages * s.page_size),
        human_bytes_i(s.profit),
        s.exit_code
    );
    for n in &s.notes {
        let _ = writeln!(o, "ksmauto: note: {n}");
    }
    if s.processes == 0 {
        let _ = writeln!(o, "ksmauto: no process of the tree was seen");
        return o;
    }
    let _ = writeln!(
        o,
        "{:>8} {:<15} {:<26} {:<8} {:>10} {:>10} {:>8} {:>11} {:>11}  ENDED",
        "PID", "COMM", "COVERED", "MODE", "ADVISED", "MERGING", "ZERO", "PROFIT", "PSS"
    );
    for r in &s.per_process {
        let _ = writeln!(
            o,
            "{:>8} {:<15} {:<26} {:<8} {:>10} {:>10} {:>8} {:>11} {:>11}  {}",
            r.pid,
            shown(&r.comm),
            shown(&r.coverage),
            shown(&r.mode),
            human_bytes(r.advised_bytes),
            r.merging_pages,
            r.zero_pages,
            human_bytes_i(r.profit),
            human_bytes(r.pss_bytes),
            shown(&r.ended)
        );
    }
    for r in &s.per_process {
        if let Some(why) = &r.coverage_why {
            let _ = writeln!(o, "ksmauto: pid {} not covered: {}", r.pid, shown(why));
        }
    }
    o
}
