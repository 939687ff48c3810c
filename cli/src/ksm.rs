//! `ksmauto status`: the kernel's KSM state in plain words (`ksmd.rs`
//! changes it).

use crate::debt;
use crate::util::*;
use anyhow::Result;
use ksmauto_contract::{env, proc, Mode};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// The KSM sysfs directory; `KSMAUTO_SYSFS_KSM` overrides it (for tests).
pub fn sysfs() -> PathBuf {
    std::env::var_os(env::SYSFS_KSM)
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
    /// `ksm_rmap_items`: pages ksmd tracks for the process.
    pub rmap_items: u64,
    /// The process asked for merging (`ksm_merge_any` or `ksm_mergeable`).
    pub mergeable: bool,
    /// Resident bytes in the process's VMAs flagged `mg` (`/proc/PID/smaps`).
    pub mergeable_bytes: u64,
    /// Real uid (`/proc/PID/status`) and its name (`/etc/passwd`, else the number).
    pub uid: u32,
    pub user: String,
    /// The cgroup path: the v2 one (`0::` line of `/proc/PID/cgroup`), or
    /// on a v1/hybrid host where that is `/`, the first v1 path that is not
    /// `/` of name=systemd, pids, memory, cpu.
    pub cgroup: String,
    /// What writing every page it has merged would take back (`debt`).
    pub unmerge_debt_bytes: u64,
}

/// Mergeable and merged memory of one trust domain (a user or a cgroup).
#[derive(Serialize, Clone, Debug, Default)]
pub struct Domain {
    /// The user name or the cgroup path.
    pub name: String,
    /// The uid (users only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    pub processes: u64,
    pub mergeable_bytes: u64,
    /// `ksm_merging_pages` × page size.
    pub merged_bytes: u64,
    /// Sum of `ksm_process_profit`.
    pub profit_bytes: i64,
}

/// Who shares ksmd's merging: KSM merges identical pages whoever owns them,
/// so one domain can learn another's memory contents through timing
/// (copy-on-write after a merge is slow). More than one domain with mergeable
/// memory is worth a warning.
#[derive(Serialize, Clone, Debug, Default)]
pub struct TrustDomains {
    pub by_user: Vec<Domain>,
    pub by_cgroup: Vec<Domain>,
    /// Distinct container cgroups (see `container_of`) with mergeable memory;
    /// `host` for the processes in none, when there is at least one container.
    pub containers: Vec<String>,
    /// `KSM merges across these trust domains: …` when more than one user or
    /// more than one container (host counted) has mergeable memory.
    pub warning: Option<String>,
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
    /// Processes whose `ksm_stat` this user may not read (not root): they
    /// are missing from `processes` and from the trust domains.
    pub unreadable_processes: usize,
    pub trust_domains: TrustDomains,
    pub unmerge_debt: debt::Debt,
}

/// Real uid from `/proc/PID/status` (whose `Name:` line is the process's
/// own bytes).
fn uid_of(pid: i32) -> Option<u32> {
    let s = read_proc(format!("/proc/{pid}/status")).ok()?;
    let real = proc::words(proc::status_value(&s, b"Uid")?).next()?;
    u32::try_from(proc::parse_dec(real)?).ok()
}

/// uid → name from `/etc/passwd` (no NSS: a uid without a line shows as its
/// number). Read as bytes: one name that is not UTF-8 must not lose the others.
pub fn user_names() -> BTreeMap<u32, String> {
    let mut names = BTreeMap::new();
    for l in std::fs::read("/etc/passwd")
        .unwrap_or_default()
        .split(|&b| b == b'\n')
    {
        let mut f = l.split(|&b| b == b':');
        let (Some(name), Some(uid)) = (f.next(), f.nth(1).and_then(proc::parse_dec)) else {
            continue;
        };
        if let Ok(uid) = u32::try_from(uid) {
            names.entry(uid).or_insert_with(|| as_text(name));
        }
    }
    names
}

/// The cgroup path of a process; `?` when unreadable.
pub fn cgroup_of(pid: i32) -> String {
    read_proc(format!("/proc/{pid}/cgroup"))
        .map(|s| cgroup_in(&s))
        .unwrap_or_else(|_| "?".into())
}

/// The v1 hierarchies that place a process by what it is (a service, a
/// container), most telling first: systemd's own, then the controllers a
/// container runtime always sets.
const V1_PREFERRED: [&str; 4] = ["name=systemd", "pids", "memory", "cpu"];

/// The path of `/proc/PID/cgroup` text: the unified (v2) path, unless it
/// is `/` or missing — a cgroup v1 or hybrid host, where every process is
/// in the unified root and the real placement (`/docker/ID`,
/// `/system.slice/…`) is in the v1 hierarchies: then the first of
/// [`V1_PREFERRED`] that is not `/`.
/// The path's bytes (a cgroup is a directory, named as its maker likes)
/// become text by [`as_text`].
fn cgroup_in(text: &[u8]) -> String {
    let lines = || text.split(|&b| b == b'\n');
    let unified = lines().find_map(|l| l.strip_prefix(b"0::"));
    if let Some(p) = unified.filter(|p| *p != b"/") {
        return as_text(p);
    }
    // `ID:controller[,controller…]:path` (the path may hold `:` too)
    let v1: Vec<(&[u8], &[u8])> = lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, |&b| b == b':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            Some((controllers, path))
        })
        .filter(|(controllers, _)| !controllers.is_empty())
        .collect();
    for want in V1_PREFERRED {
        if let Some((_, path)) = v1.iter().find(|(controllers, path)| {
            *path != b"/"
                && controllers
                    .split(|&b| b == b',')
                    .any(|c| c == want.as_bytes())
        }) {
            return as_text(path);
        }
    }
    as_text(unified.unwrap_or(b"/"))
}

/// Resident bytes of the VMAs whose `VmFlags` has `mg` (merging allowed).
fn mergeable_bytes_of(pid: i32) -> u64 {
    let Ok(s) = read_proc(format!("/proc/{pid}/smaps")) else {
        return 0;
    };
    let (mut total, mut rss) = (0u64, 0u64);
    for l in s.split(|&b| b == b'\n') {
        if let Some(v) = l.strip_prefix(b"Rss:") {
            rss = kb_bytes(v);
        } else if let Some(flags) = l.strip_prefix(b"VmFlags:") {
            if proc::words(flags).any(|f| f == b"mg") {
                total += rss;
            }
            rss = 0;
        }
    }
    total
}

/// The container a cgroup path belongs to: the path up to its container
/// scope (`docker-*.scope`, `cri-containerd-*.scope`, `crio-*.scope`,
/// `libpod-*.scope`, `/docker/ID`, `lxc.payload.*`, `machine-*.scope`), or up
/// to the pod under `/kubepods` (the containers of one pod are one domain).
pub fn container_of(cgroup: &str) -> Option<String> {
    let segs: Vec<&str> = cgroup.split('/').filter(|s| !s.is_empty()).collect();
    let upto = |i: usize| format!("/{}", segs[..=i].join("/"));
    if segs.first().is_some_and(|s| s.starts_with("kubepods")) {
        for (i, s) in segs.iter().enumerate() {
            if s.starts_with("pod") || s.contains("-pod") {
                return Some(upto(i));
            }
        }
        return Some(upto(0));
    }
    for (i, s) in segs.iter().enumerate() {
        let scope = s.ends_with(".scope")
            && ["docker-", "cri-containerd-", "crio-", "libpod-", "machine-"]
                .iter()
                .any(|p| s.starts_with(p));
        let docker_v1 = i > 0 && segs[i - 1] == "docker";
        if scope || docker_v1 || s.starts_with("lxc.payload.") {
            return Some(upto(i));
        }
    }
    None
}

/// The processes using KSM, and how many processes this user may not read
/// (other users' processes, unless root).
pub fn processes() -> (Vec<Proc>, usize) {
    let names = user_names();
    let mut out = vec![];
    let mut unreadable = 0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Some(k) = ksm_stat(pid) else {
                if ksm_stat_refused(pid) {
                    unreadable += 1;
                }
                continue;
            };
            // Using KSM: ksmd tracks pages of it, some are merged, or it asked
            // for merging — its whole memory (merge-any) or areas by madvise —
            // also before ksmd got to it (as `doctor --all` counts it).
            if k.rmap_items == 0
                && k.merging_pages == 0
                && k.zero_pages == 0
                && k.profit == 0
                && !k.merge_any
                && !k.mergeable
            {
                continue;
            }
            // Ended between the two reads: no uid to count it under (a
            // made-up one would be a trust domain of its own).
            let Some(uid) = uid_of(pid) else {
                continue;
            };
            out.push(Proc {
                pid,
                comm: comm(pid),
                merging_pages: k.merging_pages,
                zero_pages: k.zero_pages,
                profit: k.profit,
                mode: if k.merge_any {
                    Mode::Process.name().into()
                } else if k.mergeable {
                    Mode::Advise.name().into()
                } else {
                    "-".into()
                },
                rmap_items: k.rmap_items,
                mergeable: k.merge_any || k.mergeable,
                mergeable_bytes: mergeable_bytes_of(pid),
                uid,
                user: names.get(&uid).cloned().unwrap_or_else(|| uid.to_string()),
                cgroup: cgroup_of(pid),
                unmerge_debt_bytes: debt::of_process(k.merging_pages, k.zero_pages),
            });
        }
    }
    out.sort_by(|a, b| b.profit.cmp(&a.profit).then(a.pid.cmp(&b.pid)));
    (out, unreadable)
}

/// Groups the processes by user and by cgroup, and says whether KSM merges
/// across more than one of them.
pub fn trust_domains(procs: &[Proc], page_size: u64) -> TrustDomains {
    let mut users: BTreeMap<u32, Domain> = BTreeMap::new();
    let mut cgroups: BTreeMap<String, Domain> = BTreeMap::new();
    let add = |d: &mut Domain, p: &Proc| {
        d.processes += 1;
        d.mergeable_bytes += p.mergeable_bytes;
        d.merged_bytes += p.merging_pages * page_size;
        d.profit_bytes += p.profit;
    };
    let mut containers = std::collections::BTreeSet::new();
    let mut host = false;
    for p in procs {
        let u = users.entry(p.uid).or_insert_with(|| Domain {
            name: p.user.clone(),
            uid: Some(p.uid),
            ..Default::default()
        });
        add(u, p);
        let c = cgroups.entry(p.cgroup.clone()).or_insert_with(|| Domain {
            name: p.cgroup.clone(),
            ..Default::default()
        });
        add(c, p);
        if p.mergeable_bytes > 0 || p.merging_pages > 0 {
            match container_of(&p.cgroup) {
                Some(c) => {
                    containers.insert(c);
                }
                None => host = true,
            }
        }
    }
    let has_memory = |d: &Domain| d.mergeable_bytes > 0 || d.merged_bytes > 0;
    let active_users: Vec<&Domain> = users.values().filter(|d| has_memory(d)).collect();
    let mut containers: Vec<String> = containers.into_iter().collect();
    if host && !containers.is_empty() {
        containers.push("host".into());
    }
    let mut parts = vec![];
    if active_users.len() > 1 {
        let list: Vec<String> = active_users
            .iter()
            .map(|d| format!("{} ({} mergeable)", d.name, human_bytes(d.mergeable_bytes)))
            .collect();
        parts.push(format!("users {}", list.join(", ")));
    }
    if containers.len() > 1 {
        parts.push(format!("containers {}", containers.join(", ")));
    }
    let warning = (!parts.is_empty()).then(|| {
        format!(
            "KSM merges across these trust domains: {}",
            parts.join("; ")
        )
    });
    let by_mergeable = |a: &Domain, b: &Domain| {
        b.mergeable_bytes
            .cmp(&a.mergeable_bytes)
            .then(a.name.cmp(&b.name))
    };
    let mut by_user: Vec<Domain> = users.into_values().collect();
    by_user.sort_by(by_mergeable);
    let mut by_cgroup: Vec<Domain> = cgroups.into_values().collect();
    by_cgroup.sort_by(by_mergeable);
    TrustDomains {
        by_user,
        by_cgroup,
        containers,
        warning,
    }
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
    let (processes, unreadable_processes) = processes();
    let trust_domains = trust_domains(&processes, ps);
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
        processes,
        unreadable_processes,
        trust_domains,
        unmerge_debt: debt::of_host(pages_sharing, zero),
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
    o.push_str(&debt::render_text(&s.unmerge_debt));
    if let Some(w) = &s.trust_domains.warning {
        let _ = writeln!(o, "warning: {}", shown(w));
    }
    if s.unreadable_processes > 0 {
        let _ = writeln!(o, "note: {}", unreadable_note(s.unreadable_processes));
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
        return o;
    }
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
            p.mode,
            shown(&p.user),
            shown(&p.cgroup)
        );
    }
    for (title, list) in [
        ("USER", &s.trust_domains.by_user),
        ("CGROUP", &s.trust_domains.by_cgroup),
    ] {
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
    o
}

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

pub fn render_prometheus(s: &Status) -> String {
    let mut o = String::new();
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
            family(&mut o, metric, kind, &help, &[(String::new(), v)]);
        }
    }
    if let Some(mode) = s.values.get("advisor_mode").and_then(|v| v.as_str()) {
        family(
            &mut o,
            "ksm_advisor_mode_info",
            "gauge",
            "automatic scan-rate tuning (sysfs advisor_mode), as a label",
            &[(format!("mode=\"{}\"", label(mode)), "1".into())],
        );
    }
    family(
        &mut o,
        "ksm_saved_bytes",
        "gauge",
        "Memory saved by KSM: (pages_sharing + ksm_zero_pages if use_zero_pages) x page size",
        &[(String::new(), s.saved_bytes.to_string())],
    );
    o.push_str(&debt::render_prometheus(&s.unmerge_debt));
    family(
        &mut o,
        "ksm_unreadable_processes",
        "gauge",
        "Processes this user may not read (not root): missing from the per-process series",
        &[(String::new(), s.unreadable_processes.to_string())],
    );
    family(
        &mut o,
        "ksm_page_size_bytes",
        "gauge",
        "Page size",
        &[(String::new(), s.page_size.to_string())],
    );
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
        family(&mut o, metric, "gauge", help, &samples);
    }
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
                &mut o,
                &format!("ksm_{who}_{suffix}"),
                "gauge",
                &format!("{help}, by {who}"),
                &samples,
            );
        }
    }
    family(
        &mut o,
        "ksm_trust_domains_crossed",
        "gauge",
        "1 if more than one user or container has mergeable memory (KSM merges across trust domains)",
        &[(String::new(), u8::from(t.warning.is_some()).to_string())],
    );
    o
}

/// Writes `text` to `path` atomically for node_exporter's textfile
/// collector: a temporary file in the same directory (not ending in `.prom`,
/// so the collector never reads it half-written), synced, then renamed over.
pub fn write_textfile(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| fail(2, format!("--textfile {}: not a file name", path.display())))?;
    let tmp = dir.join(temporary_name(name, std::process::id()));
    // Refused (a directory this user may not write) exits 4, as every
    // permission error does.
    let code = |e: &std::io::Error| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            EXIT_PERM
        } else {
            EXIT_RUNTIME
        }
    };
    let err = |what: &str, e: std::io::Error| {
        fail(code(&e), format!("cannot {what} {}: {e}", tmp.display()))
    };
    // The name is predictable and the directory may be writable by others:
    // the file is created new (O_EXCL: never through a planted link, never
    // into someone else's file); whatever stands there is unlinked first
    // (a link itself, not what it points to).
    let create = || {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
    };
    let result = (|| {
        let mut f = match create() {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(&tmp).map_err(|e| err("remove the stale", e))?;
                create()
            }
            other => other,
        }
        .map_err(|e| err("create", e))?;
        f.write_all(text.as_bytes()).map_err(|e| err("write", e))?;
        f.sync_all().map_err(|e| err("sync", e))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = f.set_permissions(std::fs::Permissions::from_mode(0o644));
        std::fs::rename(&tmp, path).map_err(|e| {
            fail(
                code(&e),
                format!("cannot rename {} to {}: {e}", tmp.display(), path.display()),
            )
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `.NAME.PID.tmp`, with NAME cut short where the whole would pass the
/// longest name a directory entry may have (NAME_MAX, 255 bytes): a file
/// name of 255 bytes is valid, its temporary name must be too. One process
/// writes one file, so the pid keeps it apart from another writer's.
fn temporary_name(name: &std::ffi::OsStr, pid: u32) -> std::ffi::OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    const NAME_MAX: usize = 255;
    let tail = format!(".{pid}.tmp");
    let keep = name.len().min(NAME_MAX - 1 - tail.len());
    let mut out = Vec::with_capacity(NAME_MAX);
    out.push(b'.');
    out.extend_from_slice(&name.as_bytes()[..keep]);
    out.extend_from_slice(tail.as_bytes());
    std::ffi::OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::{cgroup_in, container_of};

    #[test]
    fn the_cgroup_is_the_unified_path_else_the_telling_v1_one() {
        let v2 = b"0::/system.slice/docker-ab.scope\n";
        assert_eq!(cgroup_in(v2), "/system.slice/docker-ab.scope");
        let hybrid = b"9:name=systemd:/docker/ab\n8:pids:/docker/ab\n4:memory:/docker/ab\n0::/\n";
        assert_eq!(cgroup_in(hybrid), "/docker/ab");
        // name=systemd at the root: the next preferred controller.
        let v1 = b"12:name=systemd:/\n3:cpu,cpuacct:/kubepods/pod1/c\n2:memory:/mem\n";
        assert_eq!(cgroup_in(v1), "/mem");
        let v1 = b"12:name=systemd:/\n3:cpu,cpuacct:/kubepods/pod1/c\n1:blkio:/b\n";
        assert_eq!(cgroup_in(v1), "/kubepods/pod1/c");
        assert_eq!(cgroup_in(b"9:name=systemd:/\n8:pids:/\n0::/\n"), "/");
        assert_eq!(cgroup_in(b""), "/");
        // A cgroup named in bytes that are not UTF-8 is still a path (and
        // still a container's).
        let named = b"0::/system.slice/docker-\xff.scope/x:y\n";
        assert_eq!(cgroup_in(named), r"/system.slice/docker-\xff.scope/x:y");
        assert_eq!(
            container_of(&cgroup_in(named)).as_deref(),
            Some(r"/system.slice/docker-\xff.scope")
        );
        let v1 = b"9:name=systemd:/docker/\xfe\n0::/\n";
        assert_eq!(cgroup_in(v1), r"/docker/\xfe");
    }

    #[test]
    fn containers_are_found_in_cgroup_paths() {
        for (path, want) in [
            ("/", None),
            ("/user.slice/user-1000.slice/session-2.scope", None),
            ("/system.slice/ssh.service", None),
            (
                "/system.slice/docker-0123abcd.scope",
                Some("/system.slice/docker-0123abcd.scope"),
            ),
            ("/docker/0123abcd", Some("/docker/0123abcd")),
            (
                "/machine.slice/libpod-99.scope/container",
                Some("/machine.slice/libpod-99.scope"),
            ),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b.slice/cri-containerd-77.scope",
                Some("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b.slice"),
            ),
            ("/kubepods/besteffort/pod1a2b/77", Some("/kubepods/besteffort/pod1a2b")),
            ("/lxc.payload.web/init.scope", Some("/lxc.payload.web")),
        ] {
            assert_eq!(container_of(path).as_deref(), want, "{path}");
        }
    }
}

#[cfg(test)]
mod textfile_tests {
    use super::write_textfile;

    /// A link planted at the temporary file's (predictable) name never
    /// makes the write land in the link's target. Before the fix the
    /// temporary file was opened with `File::create`, which follows links:
    /// root's `status --textfile` in a world-writable directory overwrote
    /// the victim.
    #[test]
    fn a_link_planted_at_the_temporary_name_is_never_followed() {
        let dir = std::env::temp_dir().join(format!("ksmauto-textfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let out = dir.join("ksm.prom");
        let tmp = dir.join(format!(".ksm.prom.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_textfile(&out, "ksm_run 1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "ksm_run 1\n");
        assert!(!tmp.exists() && std::fs::symlink_metadata(&tmp).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
