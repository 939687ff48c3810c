//! Unmerge debt: the memory merged pages need back when they are written.
//! A write to a page KSM merged (into a KSM page, or into the zero page
//! with `use_zero_pages`) makes the kernel copy it for the writer, so the
//! memory KSM saved is a debt that a burst of writes calls in at once; a
//! host that spent it (less memory available than the debt) meets the OOM
//! killer. This module owns the definition, reads `/proc/meminfo` for
//! what is available, and puts the figures in words; it knows nothing of
//! how processes are found or of ksmd's settings.

use crate::util::*;
use ksmauto_contract::proc;
use serde::Serialize;
use std::fmt::Write as _;

/// The `/proc/meminfo` to read instead of the kernel's (tests).
const MEMINFO_ENV: &str = ksmauto_contract::env::PROC_MEMINFO;

/// What a process's merged pages would need if it wrote every one of
/// them: one new page each (`ksm_merging_pages` + `ksm_zero_pages`).
pub fn of_process(merging_pages: u64, zero_pages: u64) -> u64 {
    (merging_pages + zero_pages) * page_size()
}

/// The host's debt against what it has available.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Debt {
    /// `pages_sharing` + `ksm_zero_pages`: the pages the host needs back
    /// if every merged page were written (the last writer of a KSM page
    /// keeps it, so a KSM page with n mappings needs n − 1 back).
    pub pages: u64,
    pub bytes: u64,
    /// `MemAvailable` and `SwapFree` of `/proc/meminfo` (absent if unread).
    pub mem_available_bytes: Option<u64>,
    pub swap_free_bytes: Option<u64>,
    /// The debt exceeds MemAvailable + SwapFree: writing the merged pages
    /// would end in the OOM killer.
    pub exceeds_available: bool,
    /// The debt exceeds MemAvailable alone: writing them would swap.
    pub exceeds_memory: bool,
    /// The text of the warning (or of the note, when only swap covers it).
    pub warning: Option<String>,
}

/// `MemAvailable` and `SwapFree`, in bytes.
fn meminfo() -> (Option<u64>, Option<u64>) {
    let path = std::env::var_os(MEMINFO_ENV).unwrap_or_else(|| "/proc/meminfo".into());
    let text = read_proc(path).unwrap_or_default();
    let field = |key: &[u8]| proc::status_value(&text, key).map(kb_bytes);
    (field(b"MemAvailable"), field(b"SwapFree"))
}

/// The host's debt: `pages_sharing` and `ksm_zero_pages` of sysfs.
pub fn of_host(pages_sharing: u64, ksm_zero_pages: u64) -> Debt {
    let pages = pages_sharing + ksm_zero_pages;
    let bytes = pages * page_size();
    let (available, swap) = meminfo();
    let mut d = Debt {
        pages,
        bytes,
        mem_available_bytes: available,
        swap_free_bytes: swap,
        ..Default::default()
    };
    if let Some(available) = available {
        let swap = swap.unwrap_or(0);
        d.exceeds_memory = bytes > available;
        d.exceeds_available = bytes > available + swap;
        d.warning = if d.exceeds_available {
            Some(format!(
                "unmerge debt {} exceeds the memory available ({} + {} free swap): \
                 if the merged pages were written, the OOM killer would be called",
                human_bytes(bytes),
                human_bytes(available),
                human_bytes(swap)
            ))
        } else if d.exceeds_memory {
            Some(format!(
                "unmerge debt {} exceeds MemAvailable {}: writing the merged pages would \
                 push {} into swap",
                human_bytes(bytes),
                human_bytes(available),
                human_bytes(bytes - available)
            ))
        } else {
            None
        };
    }
    d
}

/// The text lines of `status`.
pub fn render_text(d: &Debt) -> String {
    let mut o = String::new();
    let available = match (d.mem_available_bytes, d.swap_free_bytes) {
        (Some(a), Some(s)) => format!(
            "{} available + {} free swap",
            human_bytes(a),
            human_bytes(s)
        ),
        (Some(a), None) => format!("{} available", human_bytes(a)),
        _ => "memory available unknown (/proc/meminfo unread)".into(),
    };
    let _ = writeln!(
        o,
        "unmerge debt: {} = (pages_sharing + ksm_zero_pages) {} pages, what writing every \
         merged page would take back; against {available}",
        human_bytes(d.bytes),
        d.pages
    );
    if let Some(w) = &d.warning {
        let kind = if d.exceeds_available {
            "warning"
        } else {
            "note"
        };
        let _ = writeln!(o, "{kind}: {w}");
    }
    o
}

/// The host's families of `status --prometheus` (HELP, TYPE, sample).
pub fn render_prometheus(d: &Debt) -> String {
    let mut o = String::new();
    let mut family = |name: &str, help: &str, v: Option<u64>| {
        if let Some(v) = v {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
    };
    family(
        "ksm_unmerge_debt_bytes",
        "Memory merged pages would need back if every one were written: (pages_sharing + ksm_zero_pages) x page size",
        Some(d.bytes),
    );
    family(
        "ksm_mem_available_bytes",
        "MemAvailable of /proc/meminfo",
        d.mem_available_bytes,
    );
    family(
        "ksm_swap_free_bytes",
        "SwapFree of /proc/meminfo",
        d.swap_free_bytes,
    );
    family(
        "ksm_unmerge_debt_exceeds_available",
        "1 if the unmerge debt exceeds MemAvailable + SwapFree (a write storm would end in the OOM killer)",
        Some(d.exceeds_available as u64),
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_owes_a_page_for_each_page_it_has_merged() {
        assert_eq!(of_process(3, 2), 5 * page_size());
        assert_eq!(of_process(0, 0), 0);
    }
}
