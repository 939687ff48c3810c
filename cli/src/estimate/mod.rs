//! `ksmauto estimate`: what KSM could save in running processes, from their
//! page contents (read-only: only present pages are read, nothing faults in),
//! within each trust domain (process, user, cgroup) and across the host.
//! `select` picks the processes; `walk` reads their pages in parallel
//! (asking `present` where pages are, and `frames` which frames were read
//! already); `tally` keeps one 16-byte record per page; `groups` counts
//! them for every domain; `report` opens the processes and puts the counts
//! together; `render` puts the result in words. This file holds the
//! result's types and runs them.

mod frames;
mod groups;
mod present;
mod render;
mod report;
mod select;
mod tally;
mod walk;

pub use render::render_text;
pub use select::Selection;

use crate::util::*;
use anyhow::Result;
use rayon::prelude::*;
use serde::Serialize;
use std::time::Instant;

#[derive(Serialize, Debug, Default, Clone)]
pub struct ProcEstimate {
    pub pid: i32,
    pub comm: String,
    pub uid: u32,
    pub user: String,
    pub cgroup: String,
    pub regions: usize,
    pub pages_scanned: u64,
    pub distinct_frames: u64,
    pub zero_pages: u64,
    pub already_merged_pages: u64,
    /// Savings if KSM merged this process alone (use_zero_pages=0).
    pub ideal_savings_pages: u64,
    pub ideal_savings_bytes: u64,
    pub unreadable_pages: u64,
    /// It ended while it was read: what was read of it counts.
    pub exited_during_scan: bool,
}

#[derive(Serialize, Debug, Clone)]
pub struct RegionSavings {
    pub region: String,
    pub duplicate_pages: u64,
    pub bytes: u64,
}

/// One user's or one cgroup's processes, merged only with each other.
#[derive(Serialize, Debug, Clone, Default)]
pub struct DomainEstimate {
    /// The user name or the cgroup path.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    pub processes: u64,
    pub pages_scanned: u64,
    pub distinct_frames: u64,
    pub ideal_savings_pages: u64,
    pub ideal_savings_bytes: u64,
}

/// The ideal savings if KSM merged only within each domain, side by side
/// with merging across the whole host (what KSM does).
#[derive(Serialize, Debug, Clone, Default)]
pub struct TrustDomainSavings {
    pub within_process_pages: u64,
    pub within_user_pages: u64,
    pub within_cgroup_pages: u64,
    pub across_host_pages: u64,
    pub within_process_bytes: u64,
    pub within_user_bytes: u64,
    pub within_cgroup_bytes: u64,
    pub across_host_bytes: u64,
    pub by_user: Vec<DomainEstimate>,
    pub by_cgroup: Vec<DomainEstimate>,
}

pub use select::Unreadable;

#[derive(Serialize, Debug, Default)]
pub struct Estimate {
    pub pids: Vec<i32>,
    pub page_size: u64,
    pub pages_scanned: u64,
    pub bytes_scanned: u64,
    /// Physical frames behind the scanned pages (a frame shared by fork or
    /// already merged counts once).
    pub distinct_frames: u64,
    /// Mappings of a frame already counted (fork sharing, KSM).
    pub shared_frame_mappings: u64,
    /// Frames whose content is all zeroes (not counting the kernel zero page).
    pub zero_pages: u64,
    /// Mappings of the kernel zero page (already free).
    pub zero_page_mappings: u64,
    /// Mappings of frames KSM already merged (`/proc/kpageflags` KSM bit).
    pub already_merged_pages: Option<u64>,
    /// What KSM has already freed within the scanned set: Σ over the KSM
    /// frames it maps of (mappings − 1). With `ideal_savings_pages` (what is
    /// still duplicate) it gives the whole ideal of the set as it is now, so
    /// `merged_percent_of_ideal` says how far KSM got on these very processes.
    pub already_saved_pages: u64,
    pub already_saved_bytes: u64,
    pub merged_percent_of_ideal: Option<f64>,
    /// Σ over distinct contents of (frames − 1): what KSM could free with
    /// use_zero_pages=0 (all empty pages merge into one KSM page).
    pub ideal_savings_pages: u64,
    pub ideal_savings_bytes: u64,
    pub ideal_savings_percent: f64,
    /// The same with use_zero_pages=1 (every empty page maps the zero page).
    pub ideal_savings_pages_use_zero_pages: u64,
    pub ideal_savings_bytes_use_zero_pages: u64,
    /// Σ of each process's own ideal, as if each were merged alone (a frame
    /// shared by fork counts in each process that maps it).
    pub within_process_savings_pages: u64,
    pub trust_domains: TrustDomainSavings,
    pub top_regions: Vec<RegionSavings>,
    pub processes: Vec<ProcEstimate>,
    /// Processes found but not read, with the reason.
    pub unreadable_processes: Vec<Unreadable>,
    /// Kernel threads and zombies a search passed over (no user memory).
    pub processes_without_memory: u64,
    pub pfn_available: bool,
    pub kpageflags_available: bool,
    /// Pairs of distinct contents expected to share a 63-bit hash:
    /// frames² / 2^64 (each such pair would count as one duplicate).
    pub expected_hash_collisions: f64,
    pub notes: Vec<String>,
    pub elapsed_seconds: f64,
    pub mb_per_second: f64,
    /// The estimator's own CPU time (user + system, every thread).
    pub cpu_seconds: f64,
    /// Resident memory scanned per CPU-second.
    pub gib_per_cpu_second: f64,
    /// The estimator's own peak resident memory (`VmHWM`).
    pub peak_rss_bytes: u64,
}

/// `ksmauto estimate`: the estimate of `sel` as JSON, or as text (with a
/// progress bar on a terminal while it reads).
pub fn command(sel: &Selection, json: bool, verbose: bool) -> Result<i32> {
    let e = estimate_selection(sel, !json)?;
    if json {
        println!("{}", serde_json::to_string(&e)?);
    } else {
        print!("{}", render_text(&e, verbose));
    }
    Ok(0)
}

/// Estimates the named processes (an error for any that cannot be read).
pub fn estimate(pids: &[i32], progress: bool) -> Result<Estimate> {
    estimate_selection(&Selection::of_pids(pids), progress)
}

/// Estimates the processes of `sel`: the named ones must be readable, those
/// a search finds are named in `unreadable_processes` when they are not.
pub fn estimate_selection(sel: &Selection, progress: bool) -> Result<Estimate> {
    let ps = page_size();
    let t0 = Instant::now();
    let cpu0 = cpu_seconds();
    let chosen = select::choose(sel)?;
    let opened = report::open(chosen.processes)?;
    let mut targets = opened.targets;
    let layout = report::Layout::new(&mut targets, &opened.identities)?;
    let frames = is_root().then(frames::FrameSet::new);
    let flags = frames::PageFlags::open();
    let expected: u64 = opened
        .identities
        .iter()
        .map(|i| i.rss_anon_bytes / ps)
        .sum();
    let sink = tally::Sink::new(targets.len(), expected as usize + 1024);
    let bar = progress_bar(progress, expected * ps);
    let walk = walk::Walk {
        ps,
        targets: &targets,
        frames: frames.as_ref(),
        flags: flags.as_ref(),
        sink: &sink,
        progress: bar.as_ref(),
    };
    walk::chunks(&targets, ps)
        .par_iter()
        .for_each_init(walk::Scratch::default, |s, c| walk.chunk(*c, s));
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let counted: Vec<tally::Counted> = sink.counts.iter().map(|c| c.get()).collect();
    let exited: Vec<bool> = sink.counts.iter().map(|c| c.has_exited()).collect();
    if let Some(i) = (0..targets.len()).find(|&i| exited[i] && opened.identities[i].named) {
        let pid = targets[i].pid;
        return Err(fail(
            EXIT_NO_PID,
            format!("no such process: {pid} (exited)"),
        ));
    }
    let mut records = sink.take_records();
    if let (Some(f), true) = (&frames, counted.iter().any(|c| c.repeats > 0)) {
        tally::resolve(&mut records, |pfn| f.seen_again(pfn));
    }
    let sums = groups::count(&mut records, &layout.keys);
    drop(records);
    let mut e = report::assemble(report::Parts {
        ps,
        identities: &opened.identities,
        targets: &targets,
        layout: &layout,
        counted: &counted,
        exited: &exited,
        sums: &sums,
        pfn_available: sink.frame_numbers_seen(),
        kpageflags_available: flags.is_some(),
    });
    e.unreadable_processes = opened.unreadable;
    e.processes_without_memory = chosen.without_memory;
    if sel.searches_host() && e.processes.is_empty() && e.unreadable_processes.is_empty() {
        e.notes.push("no process matched".into());
    }
    e.elapsed_seconds = t0.elapsed().as_secs_f64();
    e.mb_per_second = per(e.bytes_scanned as f64 / 1e6, e.elapsed_seconds);
    e.cpu_seconds = cpu_seconds() - cpu0;
    e.gib_per_cpu_second = per(e.bytes_scanned as f64 / (1u64 << 30) as f64, e.cpu_seconds);
    e.peak_rss_bytes = peak_rss();
    Ok(e)
}

fn per(amount: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        amount / seconds
    } else {
        0.0
    }
}

/// This process's CPU time so far, every thread, user and system.
fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid rusage to fill.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// `VmHWM` of this process, in bytes.
fn peak_rss() -> u64 {
    let status = read_proc("/proc/self/status").unwrap_or_default();
    ksmauto_contract::proc::status_value(&status, b"VmHWM")
        .map(kb_bytes)
        .unwrap_or(0)
}

/// A progress bar on a terminal (the walk can take seconds per GiB).
fn progress_bar(wanted: bool, total_bytes: u64) -> Option<indicatif::ProgressBar> {
    if !wanted || !isatty(2) {
        return None;
    }
    let b = indicatif::ProgressBar::new(total_bytes);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} estimating [{bar:40}] {bytes}/{total_bytes} resident ({bytes_per_sec})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    Some(b)
}
