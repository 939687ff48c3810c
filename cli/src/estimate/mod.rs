//! `ksmauto estimate`: what KSM could save in running processes, from their
//! page contents (read-only: only present pages are read, nothing faults in).
//! `walk` reads the pages, `tally` counts them, `render` puts the result
//! in words; this file holds the result's types and runs the three.

mod render;
mod tally;
mod walk;

pub use render::render_text;

use crate::util::*;
use anyhow::Result;
use serde::Serialize;
use std::time::Instant;
use tally::{Page, Tally, BATCH};

#[derive(Serialize, Debug, Default, Clone)]
pub struct ProcEstimate {
    pub pid: i32,
    pub comm: String,
    pub regions: usize,
    pub pages_scanned: u64,
    pub distinct_frames: u64,
    pub zero_pages: u64,
    pub already_merged_pages: u64,
    /// Savings if KSM merged this process alone (use_zero_pages=0).
    pub ideal_savings_pages: u64,
    pub ideal_savings_bytes: u64,
    pub unreadable_pages: u64,
}

#[derive(Serialize, Debug, Clone)]
pub struct RegionSavings {
    pub region: String,
    pub duplicate_pages: u64,
    pub bytes: u64,
}

#[derive(Serialize, Debug, Default)]
pub struct Estimate {
    pub pids: Vec<i32>,
    pub page_size: u64,
    pub pages_scanned: u64,
    pub bytes_scanned: u64,
    /// Physical frames behind the scanned pages (a frame shared by fork or
    /// already merged counts once).
    pub distinct_frames: u64,
    /// Mappings of a frame already counted (fork sharing, KSM, zero page).
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
    pub top_regions: Vec<RegionSavings>,
    pub processes: Vec<ProcEstimate>,
    pub pfn_available: bool,
    pub kpageflags_available: bool,
    pub notes: Vec<String>,
    pub elapsed_seconds: f64,
    pub mb_per_second: f64,
}

pub fn estimate(pids: &[i32], progress: bool) -> Result<Estimate> {
    let ps = page_size();
    let t0 = Instant::now();
    // Open everything first, so a bad pid fails before any work. A kernel
    // thread has no memory to open (its pagemap and mem refuse with ESRCH,
    // which is no "no such process"): it is counted with nothing to scan.
    let targets = pids
        .iter()
        .map(|&pid| match is_kernel_thread(pid) {
            true => Ok(None),
            false => walk::Target::open(pid).map(Some),
        })
        .collect::<Result<Vec<_>>>()?;
    let bar = progress_bar(progress, targets.iter().flatten().map(|t| t.bytes()).sum());
    let mut tally = Tally::new(ps);
    let mut buf: Vec<u8> = Vec::with_capacity(BATCH * ps as usize);
    let mut pages: Vec<Page> = Vec::with_capacity(BATCH);
    let mut kernel_threads = vec![];
    for (t, &pid) in targets.iter().zip(pids) {
        let Some(t) = t else {
            let name = comm(pid);
            kernel_threads.push(format!(
                "pid {pid} ({name}) is a kernel thread: it has no user memory for KSM to merge"
            ));
            tally.end_process(tally.process(pid, name, 0), 0);
            continue;
        };
        let labels: Vec<String> = t.regions.iter().map(|r| r.label.clone()).collect();
        let mut one = tally.process(t.pid, comm(t.pid), t.regions.len());
        let unreadable = t.read_present(
            ps,
            &mut buf,
            |buf, region, frames| {
                pages.extend(frames.iter().map(|&pfn| Page { pfn, region }));
                if pages.len() >= BATCH {
                    tally.flush(buf, &mut pages, &labels, &mut one);
                }
            },
            |bytes| {
                if let Some(b) = &bar {
                    b.inc(bytes);
                }
            },
        )?;
        tally.flush(&mut buf, &mut pages, &labels, &mut one);
        tally.end_process(one, unreadable);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut e = tally.finish(pids, t0);
    e.notes.extend(kernel_threads);
    Ok(e)
}

/// A progress bar on a terminal (the walk can take seconds per GiB).
fn progress_bar(wanted: bool, total_bytes: u64) -> Option<indicatif::ProgressBar> {
    if !wanted || !isatty(2) {
        return None;
    }
    let b = indicatif::ProgressBar::new(total_bytes);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} estimating [{bar:40}] {bytes}/{total_bytes} of address space ({bytes_per_sec})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    Some(b)
}
