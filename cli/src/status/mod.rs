//! `ksmauto status [--json|--prometheus] [--textfile PATH] [--watch SECS]`:
//! the kernel's KSM state in plain words, and the processes using it.
//!
//! Owns what the status gathers (this file), how it groups them into trust
//! domains (`trust`) and its three outputs (`text`, `prometheus`,
//! `textfile`). Read-only: it never changes ksmd (that is `ksmd`) and never
//! writes anything but its output (`--textfile`).

pub mod efficiency;
mod prometheus;
mod text;
mod textfile;
mod trust;

pub use prometheus::render_prometheus;
pub use text::render_text;
pub use textfile::write_textfile;
pub use trust::{trust_domains, Domain, TrustDomains};

use efficiency::{Efficiency, Reading};

use crate::debt;
use crate::ksm::{self, require_ksm};
use crate::owner::{cgroup_of, uid_of, user_names};
use crate::util::*;
use anyhow::Result;
use ksmauto_contract::smaps::VmFlags;
use ksmauto_contract::Mode;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// What `status` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    /// The Prometheus text exposition format.
    Prometheus,
}

/// The command line of `status`, checked.
#[derive(Debug)]
pub struct Options {
    pub format: Format,
    /// `--textfile`: the Prometheus text goes to this file, not stdout.
    pub textfile: Option<PathBuf>,
    /// `--watch`: a new snapshot this often, until interrupted.
    pub watch: Option<Duration>,
    /// `--rate`: ksmd's counters read this long before the (first)
    /// snapshot, for rates over that interval.
    pub rate: Option<Duration>,
}

/// `ksmauto status`.
pub fn command(o: &Options) -> Result<i32> {
    if let Some(path) = &o.textfile {
        return keep_textfile(path, o.watch);
    }
    let before = o.rate.map(reading_before);
    match o.watch {
        None => print!("{}", render(&status_since(before.as_ref())?, o.format)?),
        Some(every) => watch(o.format, every, before)?,
    }
    Ok(0)
}

/// `--rate`: ksmd's counters now, then the wait before the snapshot.
fn reading_before(wait: Duration) -> Reading {
    let before = Reading::take();
    std::thread::sleep(wait);
    before
}

/// One snapshot on stdout (also what `ksmauto ksmd` shows after a change).
pub fn print(format: Format) -> Result<()> {
    print!("{}", render(&status()?, format)?);
    Ok(())
}

fn render(s: &Status, format: Format) -> Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string(s)? + "\n",
        Format::Prometheus => render_prometheus(s),
        Format::Text => render_text(s),
    })
}

/// `--textfile`: written once, or with `--watch` again and again.
fn keep_textfile(path: &std::path::Path, every: Option<Duration>) -> Result<i32> {
    loop {
        write_textfile(path, &render_prometheus(&status()?))?;
        let Some(every) = every else { return Ok(0) };
        std::thread::sleep(every);
    }
}

/// `--watch`: one snapshot after another until interrupted; each one
/// after the first (with `--rate`, each one) has the rates since the one
/// before.
fn watch(format: Format, every: Duration, mut last: Option<Reading>) -> Result<()> {
    loop {
        let (before, after) = frame(isatty(1), format);
        let s = status_since(last.as_ref())?;
        last = Some(s.efficiency.reading);
        print!("{before}{}{after}", render(&s, format)?);
        let _ = std::io::stdout().flush();
        std::thread::sleep(every);
    }
}

/// What goes around each snapshot of `--watch`: a terminal is redrawn; a
/// pipe or a file gets one snapshot after another (JSON: one object a
/// line; text and Prometheus: a blank line between).
fn frame(terminal: bool, format: Format) -> (&'static str, &'static str) {
    if terminal {
        ("\x1b[H\x1b[2J", "")
    } else if format == Format::Json {
        ("", "")
    } else {
        ("", "\n")
    }
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
    /// What asked for merging: `process`, `advise` or `-`.
    pub mode: Asked,
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

/// What asked a process's memory to merge, as its `ksm_stat` shows it
/// (the names of the modes that do so); as JSON its name.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asked {
    /// `ksm_merge_any`: PR_SET_MEMORY_MERGE.
    #[serde(rename = "process")]
    Process,
    /// `ksm_mergeable` alone: areas marked by madvise.
    #[serde(rename = "advise")]
    Advise,
    /// Neither (ksmd tracks or merged pages of it all the same).
    #[serde(rename = "-")]
    Nothing,
}

impl Asked {
    pub fn name(self) -> &'static str {
        match self {
            Asked::Process => Mode::Process.name(),
            Asked::Advise => Mode::Advise.name(),
            Asked::Nothing => "-",
        }
    }
}

#[derive(Serialize, Debug)]
pub struct Status {
    pub sysfs: String,
    pub page_size: u64,
    /// `running`, `stopped`, `unmerging`.
    pub state: ksm::State,
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
    /// What ksmd's CPU and metadata buy (`efficiency`).
    pub efficiency: Efficiency,
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
        } else if let Some(flags) = VmFlags::of_line(l) {
            if flags.mergeable() {
                total += rss;
            }
            rss = 0;
        }
    }
    total
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
                    Asked::Process
                } else if k.mergeable {
                    Asked::Advise
                } else {
                    Asked::Nothing
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

/// One snapshot, without rates.
pub fn status() -> Result<Status> {
    status_since(None)
}

/// One snapshot; with `before`, the rates from that reading to this one.
pub fn status_since(before: Option<&Reading>) -> Result<Status> {
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
    // ksmd's counters with the files, before the slower walk of /proc.
    let reading = Reading::take();
    let num = |k: &str| values.get(k).and_then(|v| v.as_i64());
    let ps = page_size();
    let pages_sharing = num("pages_sharing").unwrap_or(0).max(0) as u64;
    let zero = num("ksm_zero_pages").unwrap_or(0).max(0) as u64;
    let use_zero = num("use_zero_pages") == Some(1);
    let saved = (pages_sharing + if use_zero { zero } else { 0 }) * ps;
    let (processes, unreadable_processes) = processes();
    let trust_domains = trust_domains(&processes, ps);
    let efficiency = Efficiency::of(&values, saved, reading, before);
    Ok(Status {
        sysfs: dir.display().to_string(),
        page_size: ps,
        state: ksm::State::of_run(num("run")),
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
        efficiency,
    })
}

#[cfg(test)]
mod tests {
    use super::Asked;

    #[test]
    fn what_asked_for_merging_keeps_its_json_words() {
        for (a, word) in [
            (Asked::Process, "process"),
            (Asked::Advise, "advise"),
            (Asked::Nothing, "-"),
        ] {
            assert_eq!(serde_json::to_value(a).unwrap(), word);
            assert_eq!(a.name(), word);
        }
    }
}
