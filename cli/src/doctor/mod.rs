//! `ksmauto doctor [PID|--all] [--json]`: why a running process does or does
//! not merge, in plain words and with figures.
//!
//! Three stages, one file each: `facts` reads everything (ksmd's sysfs
//! files and the process's /proc files: smaps, ksm_stat, stat, environ,
//! auxv, exe); `judge` decides from those facts alone (pure: a [`Verdict`]
//! and the figures, unit-tested with made-up facts); `render` puts it into
//! words. The judgement never reads a file and never reads back words it
//! made; rendering decides nothing. Read-only: doctor never writes
//! anything.

mod facts;
mod judge;
mod render;

pub use judge::{Marked, NotLoaded, SlowScan, Verdict};
pub use render::render_text;

use crate::ksm;
use crate::util::*;
use anyhow::Result;
use serde::Serialize;

/// Which processes `doctor` looks at.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    Pid(i32),
    /// Every process with the library loaded or KSM activity.
    All,
}

/// `ksmauto doctor`: the diagnosis of one process (JSON: an object) or of
/// every process using KSM or the library (JSON: an array).
pub fn command(target: Target, json: bool) -> Result<i32> {
    let (found, unreadable) = match target {
        Target::Pid(pid) => (vec![diagnose(pid)?], 0),
        Target::All => all(),
    };
    if unreadable > 0 {
        eprintln!("ksmauto: note: {}", unreadable_note(unreadable));
    }
    if json && matches!(target, Target::All) {
        println!("{}", serde_json::to_string(&found)?);
    } else if json {
        println!("{}", serde_json::to_string(&found[0])?);
    } else if found.is_empty() {
        println!("no process has the library loaded or KSM activity");
    } else {
        let texts: Vec<String> = found.iter().map(render_text).collect();
        print!("{}", texts.join("\n"));
    }
    Ok(0)
}

#[derive(Serialize, Debug)]
pub struct Ksmd {
    /// `running`, `stopped`, `unmerging`, or `absent` (no KSM in the kernel).
    pub state: ksm::State,
    pub pages_to_scan: Option<u64>,
    pub sleep_millisecs: Option<u64>,
    pub full_scans: Option<u64>,
    /// Pages ksmd walks in one full scan: `ksm_rmap_items` summed over every
    /// process (at least this process's mergeable pages).
    pub registered_pages: u64,
    /// registered_pages / (pages_to_scan per sleep_millisecs).
    pub full_scan_seconds: Option<f64>,
    pub too_slow: bool,
}

#[derive(Serialize, Debug)]
pub struct Library {
    pub loaded: bool,
    /// The mapped file, when loaded.
    pub path: Option<String>,
    /// `LD_PRELOAD` from its environment; `None` when unreadable or unset.
    pub ld_preload: Option<String>,
    /// Whether its environment could be read at all.
    pub environ_readable: bool,
    pub in_ld_preload: bool,
    /// AT_SECURE from its auxiliary vector (`None` when unreadable).
    pub secure_execution: Option<bool>,
    /// Why the dynamic loader runs it in secure mode: `setuid`, `setgid`, `file capabilities`.
    pub secure_reasons: Vec<String>,
    /// No PT_INTERP in the executable: no dynamic loader, so no preload.
    pub static_binary: bool,
    /// Why it is not loaded, in plain words (`None` when loaded).
    #[serde(serialize_with = "render::words_or_null")]
    pub why_not: Option<NotLoaded>,
}

#[derive(Serialize, Debug)]
pub struct ModeInfo {
    /// `process` (merge-any), `advise` (VMAs with `mg`), or `none`.
    pub mode: Marked,
    pub merge_any: bool,
    pub mergeable_vmas: u64,
    /// KSMAUTO_MODE from its environment, if set and readable.
    pub ksmauto_mode: Option<String>,
    pub why: String,
}

/// Memory of the process by what KSM can do with it (bytes).
#[derive(Serialize, Debug, Default, Clone)]
pub struct Memory {
    /// Private anonymous memory (smaps `Anonymous`).
    pub anonymous: u64,
    /// The part KSM scans: `Anonymous` of VMAs with `mg`, all compatible anon under merge-any.
    pub mergeable: u64,
    /// ksm_merging_pages × page size.
    pub merged: u64,
    /// Sum of the smaps `KSM:` lines.
    pub ksm_smaps: u64,
    pub zero_pages: u64,
    pub profit: i64,
    pub rmap_items: u64,
    /// Never mergeable by the kernel.
    pub never: Never,
    /// Private anonymous memory the library leaves unmarked on purpose (stacks).
    pub excluded_stack: u64,
    /// Anonymous memory in transparent huge pages: KSM must split them before it merges.
    pub thp: u64,
    /// Locked memory (`Locked:`): KSM merges it, but it is memory the program pinned.
    pub locked: u64,
}

#[derive(Serialize, Debug, Default, Clone)]
pub struct Never {
    /// MAP_SHARED mappings, shmem, SysV shm (resident).
    pub shared: u64,
    /// Page cache of private file mappings (resident, not copied-on-write).
    pub file_backed: u64,
    pub hugetlb: u64,
    /// VM_PFNMAP / VM_IO / VM_DONTEXPAND / VM_MIXEDMAP mappings (device memory).
    pub special: u64,
    pub total: u64,
}

#[derive(Serialize, Debug)]
pub struct Diagnosis {
    pub pid: i32,
    pub comm: String,
    pub exe: Option<String>,
    /// One line: `merging: …`, `not merging: …`, `nothing to merge: …`.
    #[serde(serialize_with = "render::words")]
    pub verdict: Verdict,
    /// The verdict is [`Verdict::Merging`].
    pub merging: bool,
    pub ksmd: Ksmd,
    pub library: Library,
    pub mode: ModeInfo,
    pub memory: Memory,
    pub notes: Vec<String>,
}

pub fn diagnose(pid: i32) -> Result<Diagnosis> {
    Ok(judge::judge(facts::gather(pid)?))
}

/// Every process with the library mapped or KSM activity, and how many
/// processes this user may not read (other users', unless root).
pub fn all() -> (Vec<Diagnosis>, usize) {
    let mut out = vec![];
    let mut unreadable = 0;
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (out, unreadable);
    };
    let mut pids: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    pids.sort();
    for pid in pids {
        if pid == me {
            continue;
        }
        if ksm_stat_refused(pid) {
            unreadable += 1;
            continue;
        }
        let active = ksm_stat(pid).is_some_and(|k| {
            k.merge_any
                || k.mergeable
                || k.merging_pages > 0
                || k.rmap_items > 0
                || k.zero_pages > 0
        });
        let has_lib = read_proc(format!("/proc/{pid}/maps")).is_ok_and(|m| maps_the_library(&m));
        if active || has_lib {
            if let Ok(d) = diagnose(pid) {
                out.push(d);
            }
        }
    }
    (out, unreadable)
}
