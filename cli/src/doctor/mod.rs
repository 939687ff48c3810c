//! `ksmauto doctor [PID|--all] [--json]`: why a running process does or does
//! not merge, in plain words and with figures. Read-only: it reads ksmd's
//! sysfs files and the process's /proc files (maps, smaps, ksm_stat, environ,
//! auxv, exe) and never writes anything.

mod facts;
mod render;

pub use render::render_text;

use facts::{environ, ksmd_info, read_smaps};

use crate::exe;
use crate::util::*;
use anyhow::Result;
use ksmauto_contract::env;
use serde::Serialize;

/// Above this, one full scan is too slow to call "merging soon".
const SLOW_SCAN_SECS: f64 = 60.0;

#[derive(Serialize, Debug)]
pub struct Ksmd {
    /// `running`, `stopped`, `unmerging`, or `absent` (no KSM in the kernel).
    pub state: String,
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
    pub why_not: Option<String>,
}

#[derive(Serialize, Debug)]
pub struct ModeInfo {
    /// `process` (merge-any), `advise` (VMAs with `mg`), or `none`.
    pub mode: String,
    pub merge_any: bool,
    pub mergeable_vmas: u64,
    /// KSMAUTO_MODE from its environment, if set and readable.
    pub ksmauto_mode: Option<String>,
    pub why: String,
}

/// Memory of the process by what KSM can do with it (bytes).
#[derive(Serialize, Debug, Default)]
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

#[derive(Serialize, Debug, Default)]
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
    pub verdict: String,
    pub merging: bool,
    pub ksmd: Ksmd,
    pub library: Library,
    pub mode: ModeInfo,
    pub memory: Memory,
    pub notes: Vec<String>,
}

pub fn diagnose(pid: i32) -> Result<Diagnosis> {
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(fail(EXIT_NO_PID, format!("no such process: {pid}")));
    }
    let ps = page_size();
    let sm = read_smaps(pid)?;
    let k = ksm_stat(pid).unwrap_or_default();
    let mut mem = sm.mem;
    if k.merge_any && sm.mg_vmas == 0 {
        // Kernels that do not show merge-any VMAs as `mg`.
        mem.mergeable = sm.compatible_anon;
    }
    mem.merged = k.merging_pages * ps;
    mem.zero_pages = k.zero_pages * ps;
    mem.profit = k.profit;
    mem.rmap_items = k.rmap_items;

    let ksmd = ksmd_info(mem.mergeable / ps);

    // The library.
    let env = environ(pid);
    let get = |name: &str| {
        env.as_ref()
            .and_then(|e| e.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    };
    let ld_preload = get("LD_PRELOAD");
    let in_ld_preload = ld_preload
        .as_deref()
        .is_some_and(|v| preload_names_the_library(v.as_bytes()));
    let exe_path = std::path::PathBuf::from(format!("/proc/{pid}/exe"));
    let static_binary = exe::is_static(&exe_path).unwrap_or(false);
    let secure = exe::at_secure(pid);
    let reasons = exe::privileges(&exe_path);
    let loaded = sm.library_path.is_some();
    let why_not = if loaded {
        None
    } else if static_binary {
        Some("static binary: no dynamic loader (no PT_INTERP), so LD_PRELOAD is never read".into())
    } else if in_ld_preload && (secure == Some(true) || !reasons.is_empty()) {
        let why = if reasons.is_empty() {
            "AT_SECURE".to_string()
        } else {
            reasons.join(", ")
        };
        Some(format!(
            "secure execution ({why}): the loader ignores a preload given by path"
        ))
    } else if env.is_none() {
        Some("its environment cannot be read; the library is not in its memory map".into())
    } else if !in_ld_preload {
        Some("not in its LD_PRELOAD".into())
    } else {
        Some("in its LD_PRELOAD but not mapped (the loader refused it, or it was removed)".into())
    };
    let short_why = if loaded {
        None
    } else if static_binary {
        Some("static binary")
    } else if why_not.as_deref().is_some_and(|w| w.starts_with("secure")) {
        Some("secure execution")
    } else if !in_ld_preload {
        Some("not in LD_PRELOAD")
    } else {
        Some("refused by the loader")
    };
    let library = Library {
        loaded,
        path: sm.library_path.clone(),
        environ_readable: env.is_some(),
        ld_preload: ld_preload.clone(),
        in_ld_preload,
        secure_execution: secure,
        secure_reasons: reasons,
        static_binary,
        why_not,
    };

    // The mode.
    let ksmauto_mode = get(env::MODE);
    let mode_name = if k.merge_any {
        "process"
    } else if sm.mg_vmas > 0 {
        "advise"
    } else {
        "none"
    };
    let env_part = match (&ksmauto_mode, env.is_some(), loaded) {
        (Some(m), _, _) => format!("KSMAUTO_MODE={m} in its environment"),
        (None, true, true) => "KSMAUTO_MODE not set: the library's default, auto (process where the kernel accepts the prctl, else advise)".into(),
        (None, true, false) => "the library is not loaded".into(),
        (None, false, _) => "its environment is unreadable".into(),
    };
    let why = match mode_name {
        "process" => format!(
            "merge-any (ksm_merge_any: yes, prctl PR_SET_MEMORY_MERGE): every compatible anonymous VMA is scanned; {env_part}"
        ),
        "advise" => format!(
            "{} VMAs marked with madvise(MADV_MERGEABLE) (`mg` in smaps); {env_part}",
            sm.mg_vmas
        ),
        _ => format!("nothing is marked mergeable; {env_part}"),
    };
    let mode = ModeInfo {
        mode: mode_name.into(),
        merge_any: k.merge_any,
        mergeable_vmas: sm.mg_vmas,
        ksmauto_mode: ksmauto_mode.clone(),
        why,
    };

    // The verdict, most decisive reason first.
    let merged_total = mem.merged + mem.zero_pages;
    let never_kinds = || {
        let n = &mem.never;
        let mut v: Vec<(u64, &str)> = vec![
            (n.shared, "shared"),
            (n.hugetlb, "hugetlb"),
            (sm.file_data, "file-backed data"),
            (n.special, "device (PFN/IO)"),
        ];
        v.sort_by_key(|x| std::cmp::Reverse(x.0));
        let total: u64 = v.iter().map(|x| x.0).sum();
        // Only the kinds that matter: at least a tenth of it.
        v.into_iter()
            .filter(|(b, _)| *b > 0 && *b * 10 >= total)
            .map(|(b, name)| format!("{} {name}", human_bytes(b)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Memory the kernel could scan if marked: its compatible anonymous memory.
    let scannable = if mem.mergeable > 0 {
        mem.mergeable
    } else {
        sm.compatible_anon
    };
    // Code (executable file mappings) is in every program: what counts is
    // data the program keeps where the kernel cannot merge it.
    let never_data = mem.never.shared + mem.never.hugetlb + mem.never.special + sm.file_data;
    let nothing_mergeable = never_data >= 1 << 20 && never_data >= 4 * scannable;
    let mut notes = vec![];
    let slow_scan = || {
        format!(
            "ksmd needs {:.0} s for one full scan of {} registered",
            ksmd.full_scan_seconds.unwrap_or(0.0),
            human_bytes(ksmd.registered_pages * ps)
        )
    };
    let state = crate::tree::stat_line(pid).map(|l| l.state);
    let verdict = if is_kernel_thread(pid) {
        "not merging: a kernel thread has no user memory for KSM to merge".to_string()
    } else if matches!(state, Some('Z') | Some('X')) {
        "not merging: the process has exited (a zombie its parent has not collected yet): its memory is gone".to_string()
    } else if ksmd.state == "absent" {
        "not merging: this kernel has no KSM".to_string()
    } else if ksmd.state != "running" {
        let what = if ksmd.state == "unmerging" {
            "ksmd is unmerging everything (run=2)"
        } else {
            "ksmd is off (run=0)"
        };
        if merged_total > 0 {
            notes.push(format!(
                "{} merged earlier stays merged until written",
                human_bytes(merged_total)
            ));
        }
        format!("not merging: {what}")
    } else if nothing_mergeable {
        // Before "merging": a few merged pages of libc's data say nothing
        // about the memory the user is asking about.
        let merged = if merged_total > 0 {
            format!(" ({} of it merged)", human_bytes(merged_total))
        } else {
            String::new()
        };
        format!(
            "nothing to merge: memory is {}; only {} is private anonymous memory the kernel can merge{merged}",
            never_kinds(),
            human_bytes(scannable)
        )
    } else if merged_total > 0 && ksmd.too_slow {
        // A few pages merged say little when most is not scanned yet.
        format!(
            "merging: {} saved; {}",
            human_bytes(merged_total),
            slow_scan()
        )
    } else if merged_total > 0 {
        format!("merging: {} saved", human_bytes(merged_total))
    } else if mem.mergeable == 0 && !loaded {
        format!(
            "not merging: the library is not loaded ({})",
            short_why.unwrap()
        )
    } else if mem.mergeable == 0 {
        match ksmauto_mode.as_deref() {
            Some("off") => "not merging: KSMAUTO_MODE=off".to_string(),
            _ => "not merging: no memory is marked mergeable yet".to_string(),
        }
    } else if ksmd.too_slow {
        format!("not merging yet: {}", slow_scan())
    } else {
        format!(
            "not merging: {} mergeable, but ksmd found no identical pages in it",
            human_bytes(mem.mergeable)
        )
    };
    if !loaded && mem.mergeable > 0 {
        notes.push(
            "the library is not loaded: the program or a parent marked this memory itself".into(),
        );
    }
    if mem.thp > 0 {
        notes.push(format!(
            "{} is in transparent huge pages: ksmd splits a huge page before merging its pages",
            human_bytes(mem.thp)
        ));
    }
    if mem.locked > 0 {
        notes.push(format!(
            "{} is locked (mlock): KSM merges it, the library leaves secrets unmarked",
            human_bytes(mem.locked)
        ));
    }
    Ok(Diagnosis {
        pid,
        comm: comm(pid),
        exe: std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| path_text(&p)),
        merging: verdict.starts_with("merging"),
        verdict,
        ksmd,
        library,
        mode,
        memory: mem,
        notes,
    })
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
