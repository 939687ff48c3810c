//! The estimate in words: totals, the trust domains side by side, the top
//! duplicate sources, per user, per cgroup, per process, and what could not
//! be read. Reads an [`Estimate`]; computes nothing.

use super::{DomainEstimate, Estimate};
use crate::util::*;
use std::fmt::Write as _;

/// Processes listed without `-v` (the largest own ideals first).
const PROCESSES_SHOWN: usize = 20;
/// Processes named per reason in the unreadable line.
const UNREADABLE_NAMED: usize = 8;

pub fn render_text(e: &Estimate, verbose: bool) -> String {
    let mut o = String::new();
    totals(&mut o, e);
    trust_domains(&mut o, e);
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
    let t = &e.trust_domains;
    if verbose || t.by_user.len() > 1 {
        domain_table(&mut o, "USER", &t.by_user);
    }
    if verbose || t.by_cgroup.len() > 1 {
        domain_table(&mut o, "CGROUP", &t.by_cgroup);
    }
    if verbose || e.processes.len() > 1 {
        processes(&mut o, e, verbose);
    }
    unreadable(&mut o, e);
    for n in &e.notes {
        let _ = writeln!(o, "note: {}", shown(n));
    }
    if verbose {
        let _ = writeln!(
            o,
            "speed: {:.0} MB/s ({:.3} s; {:.2} CPU-s, {:.1} GiB per CPU-second; peak memory {})",
            e.mb_per_second,
            e.elapsed_seconds,
            e.cpu_seconds,
            e.gib_per_cpu_second,
            human_bytes(e.peak_rss_bytes)
        );
    }
    o
}

fn totals(o: &mut String, e: &Estimate) {
    let n = e.processes.len();
    let _ = writeln!(
        o,
        "scanned {} pages ({}) in {} process{}: {} distinct frames, {} shared mappings",
        e.pages_scanned,
        human_bytes(e.bytes_scanned),
        n,
        if n == 1 { "" } else { "es" },
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
}

fn trust_domains(o: &mut String, e: &Estimate) {
    let t = &e.trust_domains;
    let _ = writeln!(
        o,
        "ideal savings if KSM merged only within each trust domain:"
    );
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    for (what, pages, bytes, count) in [
        (
            "process",
            t.within_process_pages,
            t.within_process_bytes,
            plural(e.processes.len(), "process", "processes"),
        ),
        (
            "user",
            t.within_user_pages,
            t.within_user_bytes,
            plural(t.by_user.len(), "user", "users"),
        ),
        (
            "cgroup",
            t.within_cgroup_pages,
            t.within_cgroup_bytes,
            plural(t.by_cgroup.len(), "cgroup", "cgroups"),
        ),
    ] {
        let _ = writeln!(
            o,
            "  within each {what:<8} {pages:>10} pages {:>12}  ({count})",
            human_bytes(bytes)
        );
    }
    let _ = writeln!(
        o,
        "  across the host      {:>10} pages {:>12}  (what KSM merges: any page with any other)",
        t.across_host_pages,
        human_bytes(t.across_host_bytes)
    );
}

fn domain_table(o: &mut String, title: &str, list: &[DomainEstimate]) {
    let _ = writeln!(
        o,
        "{:>10} {:>10} {:>12} {:>6}  BY {title}",
        "PAGES", "FRAMES", "IDEAL WITHIN", "PROCS"
    );
    for d in list {
        let name = match d.uid {
            Some(uid) => format!("{} ({uid})", shown(&d.name)),
            None => shown(&d.name),
        };
        let _ = writeln!(
            o,
            "{:>10} {:>10} {:>12} {:>6}  {name}",
            d.pages_scanned,
            d.distinct_frames,
            human_bytes(d.ideal_savings_bytes),
            d.processes
        );
    }
}

fn processes(o: &mut String, e: &Estimate, verbose: bool) {
    let mut list: Vec<&super::ProcEstimate> = e.processes.iter().collect();
    if !verbose && list.len() > PROCESSES_SHOWN {
        list.sort_by(|a, b| {
            b.ideal_savings_pages
                .cmp(&a.ideal_savings_pages)
                .then(a.pid.cmp(&b.pid))
        });
        list.truncate(PROCESSES_SHOWN);
    }
    let _ = writeln!(
        o,
        "{:>8} {:<16} {:>10} {:>10} {:>8} {:>8} {:>12}",
        "PID", "COMMAND", "PAGES", "FRAMES", "ZERO", "MERGED", "OWN IDEAL"
    );
    for p in &list {
        let _ = writeln!(
            o,
            "{:>8} {:<16} {:>10} {:>10} {:>8} {:>8} {:>12}{}",
            p.pid,
            shown(&p.comm),
            p.pages_scanned,
            p.distinct_frames,
            p.zero_pages,
            p.already_merged_pages,
            human_bytes(p.ideal_savings_bytes),
            if p.exited_during_scan {
                "  (exited during the scan)"
            } else {
                ""
            }
        );
    }
    if list.len() < e.processes.len() {
        let _ = writeln!(
            o,
            "  … {} more (-v lists every process)",
            e.processes.len() - list.len()
        );
    }
}

/// `could not read 3 processes: permission denied: 2 (12 sshd, 40 cron); exited: 1 (77 sh)`.
fn unreadable(o: &mut String, e: &Estimate) {
    let u = &e.unreadable_processes;
    if !u.is_empty() {
        let mut reasons: Vec<&str> = u.iter().map(|p| p.reason.as_str()).collect();
        reasons.sort_unstable();
        reasons.dedup();
        let parts: Vec<String> = reasons
            .iter()
            .map(|r| {
                let of: Vec<_> = u.iter().filter(|p| p.reason == *r).collect();
                let mut names: Vec<String> = of
                    .iter()
                    .take(UNREADABLE_NAMED)
                    .map(|p| format!("{} {}", p.pid, shown(&p.comm)))
                    .collect();
                if of.len() > UNREADABLE_NAMED {
                    names.push(format!("… {} more", of.len() - UNREADABLE_NAMED));
                }
                format!("{}: {} ({})", shown(r), of.len(), names.join(", "))
            })
            .collect();
        let _ = writeln!(
            o,
            "could not read {} process{}: {}",
            u.len(),
            if u.len() == 1 { "" } else { "es" },
            parts.join("; ")
        );
        if !is_root() {
            let _ = writeln!(o, "note: {}", unreadable_note(u.len()));
        }
    }
    if e.processes_without_memory > 0 {
        let _ = writeln!(
            o,
            "passed over {} kernel threads and zombies (no user memory)",
            e.processes_without_memory
        );
    }
}
