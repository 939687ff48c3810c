//! `ksmauto status` as text for a terminal, every outside name through
//! `shown`. Renders a [`Status`]: reads nothing, decides nothing.

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
    if let Some(w) = &s.trust_domains.warning {
        let _ = writeln!(o, "warning: {}", shown(w));
    }
    if s.unreadable_processes > 0 {
        let _ = writeln!(o, "note: {}", unreadable_note(s.unreadable_processes));
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
