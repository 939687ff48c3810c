//! `ksmauto status --prometheus`: the Prometheus text exposition format
//! (metric names with units last, `_total` for counters, labels escaped).
//! Renders a [`Status`]: reads nothing, decides nothing.

use super::{Domain, Proc, Status, FILES};
use crate::debt;
use std::fmt::Write as _;

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn help_text(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// How a sysfs file is exported: metric name (prefix `ksm_`, unit last,
/// `_total` for counters), type, and a divisor to base units.
const METRICS: &[(&str, &str, &str, u64)] = &[
    ("run", "ksm_run", "gauge", 1),
    ("pages_to_scan", "ksm_scan_batch_pages", "gauge", 1),
    ("sleep_millisecs", "ksm_sleep_seconds", "gauge", 1000),
    ("smart_scan", "ksm_smart_scan", "gauge", 1),
    ("full_scans", "ksm_full_scans_total", "counter", 1),
    ("pages_shared", "ksm_shared_pages", "gauge", 1),
    ("pages_sharing", "ksm_sharing_pages", "gauge", 1),
    ("pages_unshared", "ksm_unshared_pages", "gauge", 1),
    ("pages_volatile", "ksm_volatile_pages", "gauge", 1),
    ("ksm_zero_pages", "ksm_zero_pages", "gauge", 1),
    ("use_zero_pages", "ksm_use_zero_pages", "gauge", 1),
    ("general_profit", "ksm_general_profit_bytes", "gauge", 1),
    ("max_page_sharing", "ksm_max_page_sharing", "gauge", 1),
    ("merge_across_nodes", "ksm_merge_across_nodes", "gauge", 1),
    ("stable_node_chains", "ksm_stable_node_chains", "gauge", 1),
    ("stable_node_dups", "ksm_stable_node_dups", "gauge", 1),
    ("pages_scanned", "ksm_scanned_pages_total", "counter", 1),
    ("pages_skipped", "ksm_skipped_pages_total", "counter", 1),
];

/// One metric family: HELP, TYPE, then its samples (labels already rendered).
fn family(o: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    let _ = writeln!(o, "# HELP {name} {}", help_text(help));
    let _ = writeln!(o, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(o, "{name} {v}");
        } else {
            let _ = writeln!(o, "{name}{{{labels}}} {v}");
        }
    }
}

/// The Prometheus text exposition of the status: ksmd's files and the
/// host's figures, then per process, per user and cgroup.
pub fn render_prometheus(s: &Status) -> String {
    let mut o = String::new();
    host(&mut o, s);
    per_process(&mut o, s);
    per_domain(&mut o, s);
    family(
        &mut o,
        "ksm_trust_domains_crossed",
        "gauge",
        "1 if more than one user or container has mergeable memory (KSM merges across trust domains)",
        &[(
            String::new(),
            u8::from(s.trust_domains.warning.is_some()).to_string(),
        )],
    );
    o
}

/// ksmd's sysfs files, what KSM saves and owes on the host, and the
/// processes left unread.
fn host(o: &mut String, s: &Status) {
    for (file, metric, kind, div) in METRICS {
        let what = FILES
            .iter()
            .find(|(f, _)| f == file)
            .map(|(_, w)| *w)
            .unwrap_or(file);
        if let Some(n) = s.values.get(*file).and_then(|v| v.as_i64()) {
            let v = if *div == 1 {
                n.to_string()
            } else {
                (n as f64 / *div as f64).to_string()
            };
            // Exported in seconds: the file's "(ms)" no longer applies.
            let help = format!("{} (sysfs {file})", what.replace(" (ms)", ""));
            family(o, metric, kind, &help, &[(String::new(), v)]);
        }
    }
    if let Some(mode) = s.values.get("advisor_mode").and_then(|v| v.as_str()) {
        family(
            o,
            "ksm_advisor_mode_info",
            "gauge",
            "automatic scan-rate tuning (sysfs advisor_mode), as a label",
            &[(format!("mode=\"{}\"", label(mode)), "1".into())],
        );
    }
    family(
        o,
        "ksm_saved_bytes",
        "gauge",
        "Memory saved by KSM: (pages_sharing + ksm_zero_pages if use_zero_pages) x page size",
        &[(String::new(), s.saved_bytes.to_string())],
    );
    o.push_str(&debt::render_prometheus(&s.unmerge_debt));
    efficiency(o, s);
    family(
        o,
        "ksm_unreadable_processes",
        "gauge",
        "Processes this user may not read (not root): missing from the per-process series",
        &[(String::new(), s.unreadable_processes.to_string())],
    );
    family(
        o,
        "ksm_page_size_bytes",
        "gauge",
        "Page size",
        &[(String::new(), s.page_size.to_string())],
    );
}

/// What ksmd's CPU and metadata buy. Counters only for what accrues:
/// the rates (CPU share, pages scanned a second) are Prometheus's own
/// `rate()` of `ksm_ksmd_cpu_seconds_total` and `ksm_scanned_pages_total`.
fn efficiency(o: &mut String, s: &Status) {
    let e = &s.efficiency;
    if let Some(cpu) = e.ksmd_cpu_seconds {
        family(
            o,
            "ksm_ksmd_cpu_seconds_total",
            "counter",
            "CPU time (user + system) of the ksmd kernel thread since it started (/proc/PID/stat)",
            &[(String::new(), cpu.to_string())],
        );
    }
    family(
        o,
        "ksm_rmap_items",
        "gauge",
        "rmap items ksmd keeps, one per page it tracks: pages_shared + pages_sharing + pages_unshared + pages_volatile",
        &[(String::new(), e.rmap_items.to_string())],
    );
    family(
        o,
        "ksm_rmap_bytes",
        "gauge",
        &format!(
            "ksmd's metadata: rmap items x {} B, against ksm_saved_bytes",
            e.rmap_item_bytes
        ),
        &[(String::new(), e.rmap_bytes.to_string())],
    );
    if let Some(r) = e.rmap_items_per_merged_page {
        family(
            o,
            "ksm_rmap_items_per_merged_page",
            "gauge",
            "rmap items / (pages_shared + pages_sharing); above 64 KSM costs more than it saves",
            &[(String::new(), r.to_string())],
        );
    }
}

/// One series per figure, a sample per process.
fn per_process(o: &mut String, s: &Status) {
    let proc_labels = |p: &Proc| {
        format!(
            "pid=\"{}\",comm=\"{}\",cgroup=\"{}\"",
            p.pid,
            label(&p.comm),
            label(&p.cgroup)
        )
    };
    type Pick = fn(&Proc) -> String;
    let per_process: [(&str, &str, Pick); 6] = [
        (
            "ksm_process_merging_pages",
            "Pages of the process mapped to KSM pages (ksm_merging_pages)",
            |p| p.merging_pages.to_string(),
        ),
        (
            "ksm_process_zero_pages",
            "Pages of the process mapped to the zero page by KSM (ksm_zero_pages)",
            |p| p.zero_pages.to_string(),
        ),
        (
            "ksm_process_profit_bytes",
            "What KSM saves on the process after its metadata (ksm_process_profit, may be negative)",
            |p| p.profit.to_string(),
        ),
        (
            "ksm_process_mergeable",
            "1 if the process asked for merging (ksm_merge_any or ksm_mergeable)",
            |p| u8::from(p.mergeable).to_string(),
        ),
        (
            "ksm_process_mergeable_bytes",
            "Resident memory of the process in VMAs KSM may merge (smaps VmFlags mg)",
            |p| p.mergeable_bytes.to_string(),
        ),
        (
            "ksm_process_unmerge_debt_bytes",
            "Memory writing every page the process has merged would take back ((ksm_merging_pages + ksm_zero_pages) x page size)",
            |p| p.unmerge_debt_bytes.to_string(),
        ),
    ];
    for (metric, help, pick) in per_process {
        let samples: Vec<(String, String)> = s
            .processes
            .iter()
            .map(|p| (proc_labels(p), pick(p)))
            .collect();
        family(o, metric, "gauge", help, &samples);
    }
}

/// One series per figure and trust domain (user, cgroup).
fn per_domain(o: &mut String, s: &Status) {
    let t = &s.trust_domains;
    let user_labels =
        |d: &Domain| format!("uid=\"{}\",user=\"{}\"", d.uid.unwrap_or(0), label(&d.name));
    let cgroup_labels = |d: &Domain| format!("cgroup=\"{}\"", label(&d.name));
    type DomPick = fn(&Domain) -> String;
    let per_domain: [(&str, &str, DomPick); 3] = [
        (
            "mergeable_bytes",
            "Resident memory in VMAs KSM may merge",
            |d| d.mergeable_bytes.to_string(),
        ),
        (
            "merged_bytes",
            "Memory mapped to KSM pages (ksm_merging_pages x page size)",
            |d| d.merged_bytes.to_string(),
        ),
        (
            "profit_bytes",
            "What KSM saves after its metadata (sum of ksm_process_profit)",
            |d| d.profit_bytes.to_string(),
        ),
    ];
    for (who, list, labels) in [
        (
            "user",
            &t.by_user,
            &user_labels as &dyn Fn(&Domain) -> String,
        ),
        ("cgroup", &t.by_cgroup, &cgroup_labels),
    ] {
        for (suffix, help, pick) in per_domain {
            let samples: Vec<(String, String)> =
                list.iter().map(|d| (labels(d), pick(d))).collect();
            family(
                o,
                &format!("ksm_{who}_{suffix}"),
                "gauge",
                &format!("{help}, by {who}"),
                &samples,
            );
        }
    }
}
