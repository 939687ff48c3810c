//! What `doctor` reads about a process and about ksmd.

use super::{Ksmd, Memory, SLOW_SCAN_SECS};
use crate::ksm;
use crate::util::*;
use anyhow::Result;
use ksmauto_contract::proc;

pub struct Smaps {
    pub mem: Memory,
    pub mg_vmas: u64,
    /// Anonymous of compatible private VMAs (what merge-any would cover).
    pub compatible_anon: u64,
    pub library_path: Option<String>,
    /// Page cache of non-executable private file mappings (data files, not code).
    pub file_data: u64,
}

pub fn read_smaps(pid: i32) -> Result<Smaps> {
    let text = read_proc(format!("/proc/{pid}/smaps")).map_err(|e| proc_err(pid, "smaps", e))?;
    let mut s = Smaps {
        mem: Memory::default(),
        mg_vmas: 0,
        compatible_anon: 0,
        library_path: None,
        file_data: 0,
    };
    // One VMA's fields, flushed at its VmFlags line (the last one).
    // (Bytes: a mapped file's path is whatever its name is.)
    let mut path: &[u8] = b"";
    let mut executable = false;
    let (mut rss, mut anon, mut thp, mut hug, mut locked, mut ksm) = (0, 0, 0, 0, 0, 0);
    for line in text.split(|&b| b == b'\n') {
        if let Some(header) = MapsLine::parse(line) {
            path = header.path;
            executable = header.perms.contains(&b'x');
            (rss, anon, thp, hug, locked, ksm) = (0, 0, 0, 0, 0, 0);
            if is_library_path(path) && s.library_path.is_none() {
                s.library_path = Some(as_text(path));
            }
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (key, val) = (&line[..colon], &line[colon + 1..]);
        match key {
            b"Rss" => rss = kb_bytes(val),
            b"Anonymous" => anon = kb_bytes(val),
            b"AnonHugePages" => thp = kb_bytes(val),
            b"Shared_Hugetlb" | b"Private_Hugetlb" => hug += kb_bytes(val),
            b"Locked" => locked = kb_bytes(val),
            b"KSM" => ksm = kb_bytes(val),
            b"VmFlags" => {
                let flags: Vec<&[u8]> = proc::words(val).collect();
                let has = |f: &str| flags.contains(&f.as_bytes());
                let m = &mut s.mem;
                m.ksm_smaps += ksm;
                if has("ht") {
                    m.never.hugetlb += hug;
                } else if has("sh") || has("ms") {
                    m.never.shared += rss;
                } else if has("pf") || has("io") || has("de") || has("mm") {
                    m.never.special += rss;
                } else {
                    m.anonymous += anon;
                    m.never.file_backed += rss.saturating_sub(anon);
                    if !executable {
                        s.file_data += rss.saturating_sub(anon);
                    }
                    s.compatible_anon += anon;
                    m.thp += thp;
                    m.locked += locked;
                    if has("mg") {
                        s.mg_vmas += 1;
                        m.mergeable += anon;
                    } else if path == b"[stack]" || has("gd") {
                        m.excluded_stack += anon;
                    }
                }
            }
            _ => {}
        }
    }
    let n = &mut s.mem.never;
    n.total = n.shared + n.file_backed + n.hugetlb + n.special;
    Ok(s)
}

pub fn environ(pid: i32) -> Option<Vec<(String, String)>> {
    let raw = read_proc(format!("/proc/{pid}/environ")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter_map(|kv| {
                let eq = kv.iter().position(|&b| b == b'=')?;
                Some((as_text(&kv[..eq]), as_text(&kv[eq + 1..])))
            })
            .collect(),
    )
}

pub fn ksmd_info(mergeable_pages: u64) -> Ksmd {
    let state = match ksm::read("run").as_deref() {
        None => "absent",
        Some("1") => "running",
        Some("2") => "unmerging",
        Some(_) => "stopped",
    }
    .to_string();
    let pages_to_scan = ksm::read_u64("pages_to_scan");
    let sleep_millisecs = ksm::read_u64("sleep_millisecs");
    let mut registered: u64 = 0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                if let Some(k) = ksm_stat(pid) {
                    registered += k.rmap_items;
                }
            }
        }
    }
    let registered = registered.max(mergeable_pages);
    let full_scan_seconds = match (pages_to_scan, sleep_millisecs) {
        (Some(p), Some(ms)) if p > 0 => {
            // At least one batch; a batch takes at least the sleep.
            let batches = (registered as f64 / p as f64).ceil().max(1.0);
            Some(batches * ms as f64 / 1000.0)
        }
        _ => None,
    };
    Ksmd {
        too_slow: full_scan_seconds.is_some_and(|s| s > SLOW_SCAN_SECS),
        state,
        pages_to_scan,
        sleep_millisecs,
        full_scans: ksm::read_u64("full_scans"),
        registered_pages: registered,
        full_scan_seconds,
    }
}
