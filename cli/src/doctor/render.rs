//! `doctor`'s diagnosis in words: the verdict and the reasons as the JSON
//! and the text show them, and the text rendering. Decides nothing.

use super::{Diagnosis, Ksmd, NotLoaded, SlowScan, Verdict};
use crate::util::*;
use std::fmt::{self, Write as _};

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = human_bytes;
        match self {
            Verdict::KernelThread => {
                f.write_str("not merging: a kernel thread has no user memory for KSM to merge")
            }
            Verdict::Exited => f.write_str(
                "not merging: the process has exited (a zombie its parent has not collected yet): its memory is gone",
            ),
            Verdict::NoKsm => f.write_str("not merging: this kernel has no KSM"),
            Verdict::KsmdStopped => f.write_str("not merging: ksmd is off (run=0)"),
            Verdict::KsmdUnmerging => {
                f.write_str("not merging: ksmd is unmerging everything (run=2)")
            }
            Verdict::NothingToMerge {
                kinds,
                scannable,
                merged,
            } => {
                let kinds: Vec<String> = kinds
                    .iter()
                    .map(|(bytes, name)| format!("{} {name}", b(*bytes)))
                    .collect();
                write!(
                    f,
                    "nothing to merge: memory is {}; only {} is private anonymous memory the kernel can merge",
                    kinds.join(", "),
                    b(*scannable)
                )?;
                if *merged > 0 {
                    write!(f, " ({} of it merged)", b(*merged))?;
                }
                Ok(())
            }
            Verdict::Merging { saved, slow } => {
                write!(f, "merging: {} saved", b(*saved))?;
                if let Some(slow) = slow {
                    write!(f, "; {slow}")?;
                }
                Ok(())
            }
            Verdict::NotLoaded(why) => write!(
                f,
                "not merging: the library is not loaded ({})",
                why.short()
            ),
            Verdict::ModeOff => f.write_str("not merging: KSMAUTO_MODE=off"),
            Verdict::NothingMarked => {
                f.write_str("not merging: no memory is marked mergeable yet")
            }
            Verdict::ScanTooSlow(slow) => write!(f, "not merging yet: {slow}"),
            Verdict::NoIdenticalPages { mergeable } => write!(
                f,
                "not merging: {} mergeable, but ksmd found no identical pages in it",
                b(*mergeable)
            ),
        }
    }
}

impl fmt::Display for SlowScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ksmd needs {:.0} s for one full scan of {} registered",
            self.seconds,
            human_bytes(self.registered_bytes)
        )
    }
}

impl NotLoaded {
    /// A few words, for the verdict.
    pub fn short(&self) -> &'static str {
        match self {
            NotLoaded::Static => "static binary",
            NotLoaded::SecureExecution(_) => "secure execution",
            // Its LD_PRELOAD is unknown: not seen in it.
            NotLoaded::EnvironUnreadable | NotLoaded::NotInPreload => "not in LD_PRELOAD",
            NotLoaded::Refused => "refused by the loader",
        }
    }
}

/// In full, for the library's line.
impl fmt::Display for NotLoaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotLoaded::Static => f.write_str(
                "static binary: no dynamic loader (no PT_INTERP), so LD_PRELOAD is never read",
            ),
            NotLoaded::SecureExecution(reasons) => {
                let why = if reasons.is_empty() {
                    "AT_SECURE".to_string()
                } else {
                    reasons.join(", ")
                };
                write!(
                    f,
                    "secure execution ({why}): the loader ignores a preload given by path"
                )
            }
            NotLoaded::EnvironUnreadable => {
                f.write_str("its environment cannot be read; the library is not in its memory map")
            }
            NotLoaded::NotInPreload => f.write_str("not in its LD_PRELOAD"),
            NotLoaded::Refused => f.write_str(
                "in its LD_PRELOAD but not mapped (the loader refused it, or it was removed)",
            ),
        }
    }
}

/// A value as its words, in the JSON.
pub fn words<T: fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The same for a value that may be absent (`null`).
pub fn words_or_null<T: fmt::Display, S: serde::Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

pub fn render_text(d: &Diagnosis) -> String {
    let mut s = String::new();
    let b = human_bytes;
    let _ = writeln!(
        s,
        "pid {} ({}): {}",
        d.pid,
        shown(&d.comm),
        shown(&d.verdict.to_string())
    );
    let _ = writeln!(s, "  ksmd:    {}", ksmd_line(&d.ksmd));
    let l = &d.library;
    match (&l.path, &l.why_not) {
        (Some(p), _) => {
            let _ = writeln!(s, "  library: loaded ({})", shown(p));
        }
        (None, Some(w)) => {
            let _ = writeln!(s, "  library: not loaded: {}", shown(&w.to_string()));
        }
        _ => {}
    }
    if let Some(p) = &l.ld_preload {
        let _ = writeln!(s, "           LD_PRELOAD={}", shown(p));
    }
    let _ = writeln!(
        s,
        "  mode:    {}: {}",
        d.mode.mode.name(),
        shown(&d.mode.why)
    );
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

/// ksmd's state, pace and the time one full scan takes.
fn ksmd_line(k: &Ksmd) -> String {
    let pace = match (k.pages_to_scan, k.sleep_millisecs) {
        (Some(p), Some(ms)) => format!("{p} pages every {ms} ms"),
        _ => "pace unknown".into(),
    };
    let scan = match k.full_scan_seconds {
        Some(t) => format!(
            "; one full scan of {} pages registered ({}) takes {t:.1} s{}",
            k.registered_pages,
            human_bytes(k.registered_pages * page_size()),
            if k.too_slow {
                " (too slow to see merges soon)"
            } else {
                ""
            }
        ),
        None => String::new(),
    };
    format!("{}, {pace}{scan}", k.state)
}
