//! What the tests read of a process in /proc.

use ksmauto_contract::proc::KsmStat;

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
