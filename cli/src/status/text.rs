//! `ksmauto status` as text for a terminal, every outside name through
//! `shown`. Renders a [`Status`]: reads nothing, decides nothing.

use super::efficiency::Window;
use super::{Status, TrustDomains, FILES};
use crate::debt;
use crate::util::*;
use std::fmt::Write as _;

/// The status for a terminal: the summary, ksmd's files, the processes and
/// the trust domains.
pub fn render_text(s: &Status) -> String {
    let mut o = String::new();
    summary(&mut o, s);
    let _ = writeln!(o);
    files(&mut o, s);
    let _ = writeln!(o);
    if s.processes.is_empty() {
        let _ = writeln!(o, "no process has KSM activity");
        return o;
    }
    processes(&mut o, s);
    domains(&mut o, &s.trust_domains);
    o
}

/// What ksmd does and what it saves, and the warnings.
fn summary(o: &mut String, s: &Status) {
    let _ = writeln!(o, "ksmd: {} ({})", s.state, s.sysfs);
    let _ = writeln!(
        o,
        "saved: {} = (pages_sharing {}{}) x {} B pages, in {} KSM pages kept",
        human_bytes(s.saved_bytes),
        s.pages_sharing,
        if s.use_zero_pages {
            format!(" + ksm_zero_pages {}", s.ksm_zero_pages)
        } else {
            String::new()
        },
        s.page_size,
        s.pages_shared
    );
    if let Some(p) = s.general_profit {
        let _ = writeln!(o, "profit after KSM metadata: {}", human_bytes_i(p));
    }
    o.push_str(&debt::render_text(&s.unmerge_debt));
    efficiency(o, s);
    if let Some(w) = &s.trust_domains.warning {
        let _ = writeln!(o, "warning: {}", shown(w));
    }
    if s.unreadable_processes > 0 {
        let _ = writeln!(o, "note: {}", unreadable_note(s.unreadable_processes));
    }
}

/// ksmd's CPU over its life and, where measured, over the last interval;
/// its metadata against what it saves.
fn efficiency(o: &mut String, s: &Status) {
    let e = &s.efficiency;
    match (&e.since_start, e.ksmd_cpu_seconds) {
        (Some(w), _) => {
            let _ = writeln!(
                o,
                "ksmd since it started {} ago (averages since boot, which any change of pace or of \
                 what is registered skews; --rate SECS measures now):\n  {}",
                duration(w.seconds),
                window(w)
            );
        }
        (None, Some(cpu)) => {
            let _ = writeln!(o, "ksmd CPU since it started: {cpu:.1} s");
        }
        (None, None) => {
            let _ = writeln!(o, "ksmd CPU: n/a (no ksmd thread found in /proc)");
        }
    }
    if let Some(w) = &e.interval {
        let _ = writeln!(o, "ksmd over the last {:.1} s:\n  {}", w.seconds, window(w));
    }
    let overhead = if s.saved_bytes > 0 {
        format!(
            " ({:.1}% of it)",
            e.rmap_bytes as f64 * 100.0 / s.saved_bytes as f64
        )
    } else {
        String::new()
    };
    let per_merged = e
        .rmap_items_per_merged_page
        .map(|r| format!("{r:.2} per merged page (a loss above 64)"))
        .unwrap_or_else(|| "nothing merged".into());
    let _ = writeln!(
        o,
        "rmap items: {} x {} B = {} against {} saved{overhead}; {per_merged}",
        e.rmap_items,
        e.rmap_item_bytes,
        human_bytes(e.rmap_bytes),
        human_bytes(s.saved_bytes)
    );
}

/// A window's figures in words.
fn window(w: &Window) -> String {
    let cpu = match (w.ksmd_cpu_seconds, w.ksmd_cpu_share) {
        (Some(c), Some(share)) => format!("{c:.2} s of CPU ({:.1}% of a CPU)", share * 100.0),
        _ => "CPU n/a (no ksmd thread found)".into(),
    };
    let scanned = match (w.pages_scanned, w.pages_scanned_per_second) {
        (Some(n), Some(r)) => format!(", {n} pages scanned ({r:.0}/s)"),
        _ => String::new(),
    };
    let full_scans = w
        .full_scans
        .map(|n| format!(", {n} full scans"))
        .unwrap_or_default();
    let per_cpu = w
        .saved_bytes_per_ksmd_cpu
        .map(|b| format!(", {} saved per CPU of ksmd", human_bytes(b as u64)))
        .unwrap_or_default();
    format!("{cpu}{scanned}{full_scans}{per_cpu}")
}

/// Seconds as days, hours, minutes.
fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match (s / 86400, s / 3600 % 24, s / 60 % 60) {
        (0, 0, m) => format!("{m}m {}s", s % 60),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// Each sysfs file shown, with what it means.
fn files(o: &mut String, s: &Status) {
    for (name, what) in FILES {
        if let Some(v) = s.values.get(*name) {
            let v = match v {
                serde_json::Value::String(x) => x.clone(),
                other => other.to_string(),
            };
            let _ = writeln!(o, "  {name:<20} {v:>14}  {what}");
        }
    }
}

/// One line per process.
fn processes(o: &mut String, s: &Status) {
    let _ = writeln!(
        o,
        "{:>8} {:<16} {:>10} {:>8} {:>12} {:>12} {:<8} {:<10} CGROUP",
        "PID", "COMMAND", "MERGING", "ZERO", "PROFIT", "DEBT", "MODE", "USER"
    );
    for p in &s.processes {
        let _ = writeln!(
            o,
            "{:>8} {:<16} {:>10} {:>8} {:>12} {:>12} {:<8} {:<10} {}",
            p.pid,
            shown(&p.comm),
            p.merging_pages,
            p.zero_pages,
            human_bytes_i(p.profit),
            human_bytes(p.unmerge_debt_bytes),
            p.mode.name(),
            shown(&p.user),
            shown(&p.cgroup)
        );
    }
}

/// One table per kind of trust domain (user, cgroup).
fn domains(o: &mut String, t: &TrustDomains) {
    for (title, list) in [("USER", &t.by_user), ("CGROUP", &t.by_cgroup)] {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{:>12} {:>12} {:>12} {:>6}  BY {title}",
            "MERGEABLE", "MERGED", "PROFIT", "PROCS"
        );
        for d in list {
            let name = match d.uid {
                Some(uid) => format!("{} ({uid})", shown(&d.name)),
                None => shown(&d.name),
            };
            let _ = writeln!(
                o,
                "{:>12} {:>12} {:>12} {:>6}  {name}",
                human_bytes(d.mergeable_bytes),
                human_bytes(d.merged_bytes),
                human_bytes_i(d.profit_bytes),
                d.processes
            );
        }
    }
}
