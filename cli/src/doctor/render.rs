//! `doctor`'s diagnosis as text.

use super::Diagnosis;
use crate::util::*;
use std::fmt::Write as _;

pub fn render_text(d: &Diagnosis) -> String {
    let mut s = String::new();
    let b = human_bytes;
    let _ = writeln!(
        s,
        "pid {} ({}): {}",
        d.pid,
        shown(&d.comm),
        shown(&d.verdict)
    );
    let k = &d.ksmd;
    let pace = match (k.pages_to_scan, k.sleep_millisecs) {
        (Some(p), Some(ms)) => format!("{p} pages every {ms} ms"),
        _ => "pace unknown".into(),
    };
    let scan = match k.full_scan_seconds {
        Some(t) => format!(
            "; one full scan of {} pages registered ({}) takes {t:.1} s{}",
            k.registered_pages,
            b(k.registered_pages * page_size()),
            if k.too_slow {
                " (too slow to see merges soon)"
            } else {
                ""
            }
        ),
        None => String::new(),
    };
    let _ = writeln!(s, "  ksmd:    {}, {pace}{scan}", k.state);
    let l = &d.library;
    match (&l.path, &l.why_not) {
        (Some(p), _) => {
            let _ = writeln!(s, "  library: loaded ({})", shown(p));
        }
        (None, Some(w)) => {
            let _ = writeln!(s, "  library: not loaded: {}", shown(w));
        }
        _ => {}
    }
    if let Some(p) = &l.ld_preload {
        let _ = writeln!(s, "           LD_PRELOAD={}", shown(p));
    }
    let _ = writeln!(s, "  mode:    {}: {}", d.mode.mode, shown(&d.mode.why));
    let m = &d.memory;
    let _ = writeln!(
        s,
        "  memory:  {} private anonymous, {} of it mergeable; {} merged (smaps KSM: {}), {} zero pages, profit {}",
        b(m.anonymous),
        b(m.mergeable),
        b(m.merged),
        b(m.ksm_smaps),
        b(m.zero_pages),
        human_bytes_i(m.profit)
    );
    let n = &m.never;
    let _ = writeln!(
        s,
        "  never mergeable: {} — shared {}, file-backed {}, hugetlb {}, device {}",
        b(n.total),
        b(n.shared),
        b(n.file_backed),
        b(n.hugetlb),
        b(n.special)
    );
    let _ = writeln!(
        s,
        "  stack, not marked mergeable (the library excludes stacks): {}; THP {}, locked {}",
        b(m.excluded_stack),
        b(m.thp),
        b(m.locked)
    );
    for note in &d.notes {
        let _ = writeln!(s, "  note:    {}", shown(note));
    }
    s
}
