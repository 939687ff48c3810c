//! What `doctor` reads about a process and about ksmd: every file it
//! opens is opened here, once, and the judgement works from these facts
//! alone. Decides nothing.

use super::Memory;
use crate::ksm;
use crate::util::*;
use anyhow::Result;
use ksmauto_contract::smaps::VmFlags;

/// Everything `doctor` knows of one process and of ksmd.
#[derive(Debug, Clone)]
pub struct Facts {
    pub pid: i32,
    pub comm: String,
    /// Its program (`/proc/PID/exe`), when readable.
    pub exe: Option<String>,
    pub page_size: u64,
    /// PF_KTHREAD: no user memory at all.
    pub kernel_thread: bool,
    /// Its state letter in `/proc/PID/stat` (`Z` zombie, `X` dead).
    pub state: Option<char>,
    pub smaps: Smaps,
    /// `/proc/PID/ksm_stat` (all zero when unreadable).
    pub ksm_stat: KsmStat,
    pub ksmd: KsmdFacts,
    /// Its environment; `None` when it cannot be read.
    pub environ: Option<Vec<(String, String)>>,
    /// No PT_INTERP in its executable: no dynamic loader.
    pub static_binary: bool,
    /// AT_SECURE from its auxiliary vector (`None` when unreadable).
    pub at_secure: Option<bool>,
    /// `setuid`, `setgid`, `file capabilities` of its executable.
    pub privileges: Vec<String>,
}

/// ksmd's settings, and how much it has to scan.
#[derive(Debug, Clone)]
pub struct KsmdFacts {
    pub state: ksm::State,
    pub pages_to_scan: Option<u64>,
    pub sleep_millisecs: Option<u64>,
    pub full_scans: Option<u64>,
    /// `ksm_rmap_items` summed over every process this user may read.
    pub rmap_items: u64,
}

/// Reads the facts of `pid` (exit code 3 when it does not exist, 4 when
/// its memory map may not be read).
pub fn gather(pid: i32) -> Result<Facts> {
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(fail(EXIT_NO_PID, format!("no such process: {pid}")));
    }
    let smaps = read_smaps(pid)?;
    let exe_path = std::path::PathBuf::from(format!("/proc/{pid}/exe"));
    Ok(Facts {
        pid,
        comm: comm(pid),
        exe: std::fs::read_link(&exe_path).ok().map(|p| path_text(&p)),
        page_size: page_size(),
        kernel_thread: is_kernel_thread(pid),
        state: crate::tree::stat_line(pid).map(|l| l.state),
        smaps,
        ksm_stat: ksm_stat(pid).unwrap_or_default(),
        ksmd: ksmd_facts(),
        environ: environ(pid),
        static_binary: crate::exe::is_static(&exe_path).unwrap_or(false),
        at_secure: crate::exe::at_secure(pid),
        privileges: crate::exe::privileges(&exe_path),
    })
}

fn ksmd_facts() -> KsmdFacts {
    let mut rmap_items: u64 = 0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                if let Some(k) = ksm_stat(pid) {
                    rmap_items += k.rmap_items;
                }
            }
        }
    }
    KsmdFacts {
        state: ksm::State::read(),
        pages_to_scan: ksm::read_u64("pages_to_scan"),
        sleep_millisecs: ksm::read_u64("sleep_millisecs"),
        full_scans: ksm::read_u64("full_scans"),
        rmap_items,
    }
}

/// What `/proc/PID/smaps` says about the process's memory.
#[derive(Debug, Clone, Default)]
pub struct Smaps {
    pub mem: Memory,
    pub mg_vmas: u64,
    /// Anonymous of compatible private VMAs (what merge-any would cover).
    pub compatible_anon: u64,
    pub library_path: Option<String>,
    /// Page cache of non-executable private file mappings (data files, not code).
    pub file_data: u64,
}

fn read_smaps(pid: i32) -> Result<Smaps> {
    let text = read_proc(format!("/proc/{pid}/smaps")).map_err(|e| proc_err(pid, "smaps", e))?;
    Ok(smaps_of(&text))
}

/// The memory of `smaps` text by what KSM can do with it.
fn smaps_of(text: &[u8]) -> Smaps {
    let mut s = Smaps::default();
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
                let flags = VmFlags::of_value(val);
                let has = |f: &[u8; 2]| flags.has(f);
                let m = &mut s.mem;
                m.ksm_smaps += ksm;
                if has(b"ht") {
                    m.never.hugetlb += hug;
                } else if has(b"sh") || has(b"ms") {
                    m.never.shared += rss;
                } else if has(b"pf") || has(b"io") || has(b"de") || has(b"mm") {
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
                    if has(b"mg") {
                        s.mg_vmas += 1;
                        m.mergeable += anon;
                    } else if path == b"[stack]" || has(b"gd") {
                        m.excluded_stack += anon;
                    }
                }
            }
            _ => {}
        }
    }
    let n = &mut s.mem.never;
    n.total = n.shared + n.file_backed + n.hugetlb + n.special;
    s
}

fn environ(pid: i32) -> Option<Vec<(String, String)>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_sorts_memory_by_what_ksm_can_do_with_it() {
        let text = b"\
7f00-7f10 rw-p 00000000 00:00 0 
Rss:                  64 kB
Anonymous:            64 kB
VmFlags: rd wr mr mw me ac mg
7f10-7f20 rw-s 00000000 00:01 7 /dev/shm/x
Rss:                  32 kB
Anonymous:             0 kB
VmFlags: rd wr sh mr mw me ms
7f20-7f30 r--p 00000000 08:01 9 /data/file
Rss:                  16 kB
Anonymous:             4 kB
VmFlags: rd mr mw me
7f30-7f40 r-xp 00000000 08:01 10 /usr/local/lib/libksmauto.so
Rss:                   8 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
7ffd-7ffe rw-p 00000000 00:00 0 [stack]
Rss:                  12 kB
Anonymous:            12 kB
VmFlags: rd wr mr mw me gd ac
";
        let s = smaps_of(text);
        let kib = |n: u64| n * 1024;
        assert_eq!(s.mem.mergeable, kib(64));
        assert_eq!(s.mg_vmas, 1);
        assert_eq!(s.mem.never.shared, kib(32));
        assert_eq!(s.mem.never.file_backed, kib(12 + 8));
        assert_eq!(s.file_data, kib(12), "code is not data");
        assert_eq!(s.mem.excluded_stack, kib(12));
        assert_eq!(s.compatible_anon, kib(64 + 4 + 12));
        assert_eq!(
            s.library_path.as_deref(),
            Some("/usr/local/lib/libksmauto.so")
        );
        assert_eq!(s.mem.never.total, kib(32 + 20));
    }
}
