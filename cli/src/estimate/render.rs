//! The estimate in words: totals, the top duplicate sources, per process.
//! Reads an [`Estimate`]; computes nothing.

use super::Estimate;
use crate::util::*;

pub fn render_text(e: &Estimate, verbose: bool) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "scanned {} pages ({}) in {} process{}: {} distinct frames, {} shared mappings",
        e.pages_scanned,
        human_bytes(e.bytes_scanned),
        e.pids.len(),
        if e.pids.len() == 1 { "" } else { "es" },
        e.distinct_frames,
        e.shared_frame_mappings
    );
    let _ = writeln!(
        o,
        "ideal savings: {} pages = {} ({:.1}% of scanned); with use_zero_pages=1: {} pages = {}",
        e.ideal_savings_pages,
        human_bytes(e.ideal_savings_bytes),
        e.ideal_savings_percent,
        e.ideal_savings_pages_use_zero_pages,
        human_bytes(e.ideal_savings_bytes_use_zero_pages)
    );
    if e.already_saved_pages > 0 {
        let _ = writeln!(
            o,
            "already saved by KSM within these processes: {} pages = {} ({:.1}% of their whole ideal)",
            e.already_saved_pages,
            human_bytes(e.already_saved_bytes),
            e.merged_percent_of_ideal.unwrap_or(0.0)
        );
    }
    let _ = writeln!(
        o,
        "zero pages: {} (plus {} mappings of the kernel zero page); already merged: {}",
        e.zero_pages,
        e.zero_page_mappings,
        e.already_merged_pages
            .map(|n| n.to_string())
            .unwrap_or_else(|| "unknown".into())
    );
    if !e.top_regions.is_empty() {
        let _ = writeln!(o, "top duplicate sources:");
        for r in &e.top_regions {
            let _ = writeln!(
                o,
                "  {:<24} {:>10} pages {:>12}",
                shown(&r.region),
                r.duplicate_pages,
                human_bytes(r.bytes)
            );
        }
    }
    if verbose || e.processes.len() > 1 {
        let _ = writeln!(
            o,
            "{:>8} {:<16} {:>10} {:>10} {:>8} {:>8} {:>12}",
            "PID", "COMMAND", "PAGES", "FRAMES", "ZERO", "MERGED", "OWN IDEAL"
        );
        for p in &e.processes {
            let _ = writeln!(
                o,
                "{:>8} {:<16} {:>10} {:>10} {:>8} {:>8} {:>12}",
                p.pid,
                shown(&p.comm),
                p.pages_scanned,
                p.distinct_frames,
                p.zero_pages,
                p.already_merged_pages,
                human_bytes(p.ideal_savings_bytes)
            );
        }
    }
    for n in &e.notes {
        let _ = writeln!(o, "note: {}", shown(n));
    }
    if verbose {
        let _ = writeln!(
            o,
            "speed: {:.0} MB/s ({:.3} s)",
            e.mb_per_second, e.elapsed_seconds
        );
    }
    o
}
