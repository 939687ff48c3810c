//! What the tests read of a process in /proc.

use ksmauto_contract::proc::KsmStat;
use ksmauto_contract::smaps::VmFlags;

/// `ksm_merging_pages + ksm_zero_pages` of a live process.
pub fn merged_pages_of(pid: u32) -> u64 {
    let s = std::fs::read(format!("/proc/{pid}/ksm_stat")).unwrap_or_default();
    KsmStat::parse(&s).merged_pages()
}

/// VMAs in a maps dump, leaving out libksmauto.so's own.
pub fn program_vmas(maps: &str) -> usize {
    let mut own_end = None;
    let mut count = 0;
    for line in maps.lines() {
        let range = line.split_whitespace().next().unwrap_or("");
        let (start, end) = range.split_once('-').unwrap_or(("", ""));
        if line.contains("libksmauto.so") {
            own_end = Some(end.to_string());
            continue;
        }
        let anon = line.split_whitespace().nth(4) == Some("0");
        if anon && own_end.as_deref() == Some(start) {
            own_end = None;
            continue; // the library's zero-fill (bss) mapping
        }
        own_end = None;
        count += 1;
    }
    count
}

// ---------------------------------------------------------------------------
// Ranges a program filled (tests/c/offthread.h prints them), seen from
// outside: whether their VMAs are marked mergeable, which pages KSM merged.

/// The `range 0xSTART 0xEND` lines of a program's output.
pub fn printed_ranges(output: &str) -> Vec<(u64, u64)> {
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    output
        .lines()
        .filter_map(|l| l.strip_prefix("range "))
        .map(|r| {
            let (s, e) = r.trim().split_once(' ').expect("range START END");
            (hex(s), hex(e))
        })
        .collect()
}

/// The page size of this machine, in bytes.
pub fn page_size() -> u64 {
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

/// Pages of `ranges` (page-aligned) that lie in a VMA of `pid` with the
/// `mg` (VM_MERGEABLE) flag in its smaps: what the advice, or merge-any,
/// reached. Every such page is one ksmd will consider.
pub fn mergeable_pages_in(pid: u32, ranges: &[(u64, u64)]) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut marked = vec![];
    let mut vma = None;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((s, e)) = first.split_once('-') {
            if let (Ok(s), Ok(e)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16)) {
                vma = Some((s, e));
                continue;
            }
        }
        if let (Some(flags), Some(v)) = (VmFlags::of_line(line.as_bytes()), vma) {
            if flags.mergeable() {
                marked.push(v);
            }
        }
    }
    let overlap = |(a, b): (u64, u64), (c, d): (u64, u64)| b.min(d).saturating_sub(a.max(c));
    let bytes: u64 = ranges
        .iter()
        .map(|r| marked.iter().map(|m| overlap(*r, *m)).sum::<u64>())
        .sum();
    bytes / page_size()
}

/// Pages of `ranges` (page-aligned) that are KSM pages now: each present
/// page's frame (`/proc/PID/pagemap`) carries `KPF_KSM` in
/// `/proc/kpageflags`. Needs root (frame numbers are hidden otherwise:
/// panics then, never a silent 0).
pub fn ksm_pages_in(pid: u32, ranges: &[(u64, u64)]) -> u64 {
    use std::os::unix::fs::FileExt;
    const PRESENT: u64 = 1 << 63;
    const PFN_MASK: u64 = (1 << 55) - 1;
    const KPF_KSM: u64 = 1 << 21;
    let page = page_size();
    let Ok(pagemap) = std::fs::File::open(format!("/proc/{pid}/pagemap")) else {
        return 0; // the process is gone
    };
    let flags = std::fs::File::open("/proc/kpageflags").expect("/proc/kpageflags (needs root)");
    let mut merged = 0;
    for &(start, end) in ranges {
        let pages = ((end - start) / page) as usize;
        let mut entries = vec![0u8; pages * 8];
        if pagemap
            .read_exact_at(&mut entries, start / page * 8)
            .is_err()
        {
            return merged; // gone, or unmapped meanwhile
        }
        for entry in entries.chunks_exact(8) {
            let entry = u64::from_ne_bytes(entry.try_into().unwrap());
            if entry & PRESENT == 0 {
                continue;
            }
            let pfn = entry & PFN_MASK;
            assert!(pfn != 0, "pagemap hides frame numbers: run as root");
            let mut f = [0u8; 8];
            flags.read_exact_at(&mut f, pfn * 8).expect("kpageflags");
            if u64::from_ne_bytes(f) & KPF_KSM != 0 {
                merged += 1;
            }
        }
    }
    merged
}

/// Thread ids of a live process (`/proc/PID/task`), the library's included.
pub fn task_ids(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    let mut ids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    ids.sort();
    ids
}
