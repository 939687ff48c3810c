//! `ksmauto status` and `ksmauto ksmd`: the kernel's KSM state in plain words.

use crate::util::*;
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// The KSM sysfs directory; `KSMAUTO_SYSFS_KSM` overrides it (for tests).
pub fn sysfs() -> PathBuf {
    std::env::var_os("KSMAUTO_SYSFS_KSM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/sys/kernel/mm/ksm"))
}

pub fn require_ksm() -> Result<PathBuf> {
    let dir = sysfs();
    if !dir.join("run").exists() {
        return Err(fail(
            EXIT_NO_KSM,
            format!(
                "this kernel has no KSM (CONFIG_KSM): {} missing",
                dir.join("run").display()
            ),
        ));
    }
    Ok(dir)
}

pub fn read(name: &str) -> Option<String> {
    std::fs::read_to_string(sysfs().join(name))
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn read_u64(name: &str) -> Option<u64> {
    read(name).and_then(|s| s.parse().ok())
}

/// The files shown, in order, with a plain-words explanation.
const FILES: &[(&str, &str)] = &[
    (
        "run",
        "ksmd state: 0 stopped, 1 running, 2 unmerging everything",
    ),
    ("pages_to_scan", "pages ksmd scans per batch"),
    ("sleep_millisecs", "pause between batches (ms)"),
    ("smart_scan", "skip pages that never merged (1 = on)"),
    ("advisor_mode", "automatic scan-rate tuning"),
    (
        "full_scans",
        "complete passes over all mergeable memory so far",
    ),
    (
        "pages_shared",
        "KSM pages kept (one per distinct merged content)",
    ),
    (
        "pages_sharing",
        "extra mappings of those pages: memory saved",
    ),
    (
        "pages_unshared",
        "mergeable pages scanned but unique so far",
    ),
    ("pages_volatile", "pages changing too fast to merge"),
    (
        "ksm_zero_pages",
        "empty pages mapped to the kernel zero page (use_zero_pages)",
    ),
    (
        "use_zero_pages",
        "merge empty pages into the zero page (1 = on)",
    ),
    ("general_profit", "saved minus KSM's own metadata (bytes)"),
    ("max_page_sharing", "most mappings of one KSM page"),
    ("merge_across_nodes", "merge across NUMA nodes (1 = yes)"),
    ("stable_node_chains", "KSM pages that hit max_page_sharing"),
    ("stable_node_dups", "duplicate KSM pages in those chains"),
    ("pages_scanned", "pages scanned since boot"),
    ("pages_skipped", "pages smart_scan skipped"),
];

#[derive(Serialize, Clone, Debug)]
pub struct Proc {
    pub pid: i32,
    pub comm: String,
    pub merging_pages: u64,
    pub zero_pages: u64,
    pub profit: i64,
    pub mode: String,
}

#[derive(Serialize, Debug)]
pub struct Status {
    pub sysfs: String,
    pub page_size: u64,
    /// `running`, `stopped`, `unmerging`.
    pub state: String,
    /// Every file of the sysfs directory that exists, raw (numbers as numbers).
    pub values: BTreeMap<String, serde_json::Value>,
    pub pages_shared: u64,
    pub pages_sharing: u64,
    pub ksm_zero_pages: u64,
    pub use_zero_pages: bool,
    /// (pages_sharing + ksm_zero_pages if use_zero_pages) × page size.
    pub saved_bytes: u64,
    pub general_profit: Option<i64>,
    pub processes: Vec<Proc>,
}

pub fn processes() -> Vec<Proc> {
    let mut out = vec![];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Some(k) = ksm_stat(pid) else { continue };
            if k.merging_pages == 0 && k.zero_pages == 0 && k.profit == 0 && !k.merge_any {
                continue;
            }
            out.push(Proc {
                pid,
                comm: comm(pid),
                merging_pages: k.merging_pages,
                zero_pages: k.zero_pages,
                profit: k.profit,
                mode: if k.merge_any {
                    "process".into()
                } else if k.mergeable {
                    "advise".into()
                } else {
                    "-".into()
                },
            });
        }
    }
    out.sort_by(|a, b| b.profit.cmp(&a.profit).then(a.pid.cmp(&b.pid)));
    out
}

pub fn status() -> Result<Status> {
    let dir = require_ksm()?;
    let mut values = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Ok(s) = std::fs::read_to_string(e.path()) {
                let mut s = s.trim().to_string();
                // `[none] scan-time`: the bracketed choice is the setting.
                if let Some(sel) = s.split_once('[').and_then(|(_, r)| r.split_once(']')) {
                    s = sel.0.to_string();
                }
                let v = match s.parse::<i64>() {
                    Ok(n) => serde_json::Value::from(n),
                    Err(_) => serde_json::Value::from(s),
                };
                values.insert(name, v);
            }
        }
    }
    let num = |k: &str| values.get(k).and_then(|v| v.as_i64());
    let ps = page_size();
    let pages_sharing = num("pages_sharing").unwrap_or(0).max(0) as u64;
    let zero = num("ksm_zero_pages").unwrap_or(0).max(0) as u64;
    let use_zero = num("use_zero_pages") == Some(1);
    let saved = (pages_sharing + if use_zero { zero } else { 0 }) * ps;
    Ok(Status {
        sysfs: dir.display().to_string(),
        page_size: ps,
        state: match num("run") {
            Some(1) => "running",
            Some(2) => "unmerging",
            _ => "stopped",
        }
        .into(),
        pages_shared: num("pages_shared").unwrap_or(0).max(0) as u64,
        pages_sharing,
        ksm_zero_pages: zero,
        use_zero_pages: use_zero,
        saved_bytes: saved,
        general_profit: num("general_profit"),
        values,
        processes: processes(),
    })
}

pub fn render_text(s: &Status) -> String {
    let mut o = String::new();
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
    let _ = writeln!(o);
    for (name, what) in FILES {
        if let Some(v) = s.values.get(*name) {
            let v = match v {
                serde_json::Value::String(x) => x.clone(),
                other => other.to_string(),
            };
            let _ = writeln!(o, "  {name:<20} {v:>14}  {what}");
        }
    }
    let _ = writeln!(o);
    if s.processes.is_empty() {
        let _ = writeln!(o, "no process has KSM activity");
    } else {
        let _ = writeln!(
            o,
            "{:>8} {:<16} {:>10} {:>8} {:>12} {:<8}",
            "PID", "COMMAND", "MERGING", "ZERO", "PROFIT", "MODE"
        );
        for p in &s.processes {
            let _ = writeln!(
                o,
                "{:>8} {:<16} {:>10} {:>8} {:>12} {:<8}",
                p.pid,
                p.comm,
                p.merging_pages,
                p.zero_pages,
                human_bytes_i(p.profit),
                p.mode
            );
        }
    }
    o
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render_prometheus(s: &Status) -> String {
    let mut o = String::new();
    let gauge = |o: &mut String, name: &str, help: &str, v: String| {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} gauge");
        let _ = writeln!(o, "{name} {v}");
    };
    for (name, what) in FILES {
        if let Some(n) = s.values.get(*name).and_then(|v| v.as_i64()) {
            let metric = if name.starts_with("ksm_") {
                name.to_string()
            } else {
                format!("ksm_{name}")
            };
            gauge(&mut o, &metric, what, n.to_string());
        }
    }
    gauge(
        &mut o,
        "ksm_saved_bytes",
        "Memory saved by KSM: (pages_sharing + ksm_zero_pages if use_zero_pages) x page size",
        s.saved_bytes.to_string(),
    );
    gauge(
        &mut o,
        "ksm_page_size_bytes",
        "Page size",
        s.page_size.to_string(),
    );
    for (metric, help) in [
        (
            "ksm_process_merging_pages",
            "Pages of the process merged by KSM",
        ),
        (
            "ksm_process_zero_pages",
            "Pages of the process mapped to the zero page by KSM",
        ),
        (
            "ksm_process_profit_bytes",
            "KSM profit of the process (bytes, may be negative)",
        ),
    ] {
        let _ = writeln!(o, "# HELP {metric} {help}");
        let _ = writeln!(o, "# TYPE {metric} gauge");
        for p in &s.processes {
            let v = match metric {
                "ksm_process_merging_pages" => p.merging_pages as i64,
                "ksm_process_zero_pages" => p.zero_pages as i64,
                _ => p.profit,
            };
            let _ = writeln!(
                o,
                "{metric}{{pid=\"{}\",comm=\"{}\"}} {v}",
                p.pid,
                label(&p.comm)
            );
        }
    }
    o
}

fn write(name: &str, value: &str) -> Result<()> {
    let path = sysfs().join(name);
    std::fs::write(&path, value).map_err(|e| match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => fail(EXIT_PERM, "permission denied: run as root"),
        _ => fail(
            EXIT_RUNTIME,
            format!("cannot write {value} to {}: {e}", path.display()),
        ),
    })
}

pub fn ksmd(on: bool, off: bool, scan: Option<&str>) -> Result<()> {
    let dir = require_ksm()?;
    if (on || off || scan.is_some()) && !is_root() {
        return Err(fail(EXIT_PERM, "permission denied: run as root"));
    }
    match scan {
        Some("fast") | Some("default") => {
            let pages = if scan == Some("fast") { "1000" } else { "100" };
            if dir.join("advisor_mode").exists() {
                write("advisor_mode", "none")?;
            }
            write("pages_to_scan", pages)?;
            write("sleep_millisecs", "20")?;
        }
        Some("advisor") => {
            if !dir.join("advisor_mode").exists() {
                return Err(fail(EXIT_RUNTIME, "this kernel has no scan-time advisor"));
            }
            write("advisor_mode", "scan-time")?;
        }
        _ => {}
    }
    if on {
        write("run", "1")?;
    }
    if off {
        write("run", "0")?;
    }
    Ok(())
}
