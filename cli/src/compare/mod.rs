//! `ksmauto compare`: N copies of a command without, then with the preload;
//! memory sampled until it settles, set against the estimator's ideal.
//!
//! This file owns the comparison: what is set up before the phases (the
//! library, the plan for a static program, a held ksmd) and the figures
//! set against each other after them. `phase` runs one phase and decides
//! when it is over, `copies` starts, looks at and stops the copies,
//! `render` puts the result in words and in a chart. Never changes ksmd's
//! settings but through `ksmd` (and puts them back).

mod copies;
mod phase;
mod render;

pub use copies::kill_after_panic;
pub use phase::Phase;
pub use render::render_text;

use phase::{phase, PhaseEnd, Settings};
use render::chart;

use crate::merge_any;
use crate::util::*;
use crate::{estimate, ksm, ksmd, launch};
use anyhow::Result;
use ksmauto_contract::Mode;
use serde::Serialize;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// `compare`'s command line, checked.
#[derive(Debug)]
pub struct Options {
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// Copies started in each phase (at least 1).
    pub workers: usize,
    /// The mode of the copies with the preload (`--mode`, else
    /// `KSMAUTO_MODE`, else auto).
    pub mode: Mode,
    /// Longest time to wait for memory to settle, per phase.
    pub settle_timeout: Duration,
    /// `--lib`: the library (else found as `run` finds it).
    pub lib: Option<PathBuf>,
    /// A chart of PSS over time written here (SVG).
    pub svg: Option<PathBuf>,
    /// JSON on stdout, no progress line.
    pub json: bool,
    pub hold_ksmd: bool,
    /// A file each copy makes once loaded (`%p`: its pid).
    pub ready_file: Option<String>,
}

/// `ksmauto compare`: the comparison, as JSON or as text.
pub fn command(o: &Options) -> Result<i32> {
    let c = compare(o)?;
    if o.json {
        println!("{}", serde_json::to_string(&c)?);
    } else {
        print!("{}", render_text(&c));
    }
    Ok(0)
}

/// `--hold-ksmd`: the pool with the preload measured against itself.
#[derive(Serialize, Debug)]
pub struct HeldKsmd {
    /// The pool's PSS once loaded, before ksmd ran.
    pub pss_before_merge_bytes: Option<u64>,
    /// PSS before ksmd ran − PSS at the end.
    pub saved_pss_bytes: Option<i64>,
    /// The estimator's ideal for exactly that pool, taken before ksmd ran.
    pub ideal_savings_bytes: Option<u64>,
    pub percent_of_ideal: Option<f64>,
    pub estimate_before_merge: Option<estimate::Estimate>,
    /// What the estimator still finds duplicate in the pool at the end.
    pub estimate_at_end: Option<estimate::Estimate>,
}

#[derive(Serialize, Debug)]
pub struct Comparison {
    pub command: Vec<String>,
    pub workers: usize,
    #[serde(serialize_with = "mode_name")]
    pub mode: Mode,
    pub without: Phase,
    pub with: Phase,
    pub saved_pss_bytes: i64,
    pub ideal_savings_bytes: Option<u64>,
    pub percent_of_ideal: Option<f64>,
    pub estimate: Option<estimate::Estimate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_ksmd: Option<HeldKsmd>,
}

/// Runs both phases and sets them against each other.
pub fn compare(o: &Options) -> Result<Comparison> {
    ksm::require_ksm()?;
    if o.hold_ksmd && !is_root() {
        return Err(fail(EXIT_PERM, "permission denied: --hold-ksmd needs root"));
    }
    let lib = launch::find_lib(o.lib.as_deref())?;
    clear_inherited_merge_any()?;
    // Orphans of the copies re-parent to us and stay in the tree we sample.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if ksm::State::read() != ksm::State::Running && !o.json && !o.hold_ksmd {
        eprintln!(
            "ksmauto: warning: ksmd is not running: nothing will merge (`ksmauto ksmd --on`)"
        );
    }
    // A static program never reads LD_PRELOAD: merge-any set before the
    // copies' exec covers it instead, where that is safe and the kernel
    // keeps it.
    let cmd = &o.command[0];
    let path_var = std::env::var_os("PATH");
    let plan = merge_any::plan(cmd, path_var.as_deref(), o.mode, &mut merge_any::probe);
    merge_any::announce(&plan, cmd);
    let st = Settings {
        options: o,
        lib: &lib,
        plan,
    };
    // A signal stops the copies before compare ends (they run in process
    // groups of their own, which a terminal's Ctrl-C does not reach).
    ksmd::catch_interrupts();
    // ksmd is put back however this ends (an error or a signal here, a
    // panic through the panic hook).
    let held = if o.hold_ksmd {
        Some(ksmd::Held::save()?)
    } else {
        None
    };
    let without = phase(&st, false, true)?;
    let with = phase(&st, true, o.hold_ksmd)?;
    if let Some(held) = held {
        held.release()?;
    }
    let c = comparison(o, without, with);
    if let Some(path) = &o.svg {
        chart(&c, path)?;
    }
    Ok(c)
}

/// Started with merge-any (a MemoryKSM=yes unit, a prctl launcher), the
/// copies would inherit it through fork and exec: the run without the
/// preload would merge too and compare nothing. Cleared here, for both
/// runs; each copy with the preload gets what its mode gives it.
fn clear_inherited_merge_any() -> Result<()> {
    if unsafe { libc::prctl(libc::PR_GET_MEMORY_MERGE, 0, 0, 0, 0) } != 1 {
        return Ok(());
    }
    if unsafe { libc::prctl(libc::PR_SET_MEMORY_MERGE, 0, 0, 0, 0) } == 0 {
        eprintln!(
            "ksmauto: compare was started with merge-any (PR_SET_MEMORY_MERGE) set, which its copies would inherit: cleared it, so the run without the preload merges nothing of its own"
        );
        return Ok(());
    }
    Err(fail(
        EXIT_RUNTIME,
        format!(
            "compare was started with merge-any (PR_SET_MEMORY_MERGE) set and cannot clear it ({}): the copies would inherit it and the run without the preload would merge too",
            std::io::Error::last_os_error()
        ),
    ))
}

/// The two phases set against each other.
fn comparison(o: &Options, without: PhaseEnd, with: PhaseEnd) -> Comparison {
    let (est, without) = (without.estimate, without.phase);
    let held_ksmd = o
        .hold_ksmd
        .then(|| held_ksmd(&with.phase, with.estimate_before_merge, with.estimate));
    let with = with.phase;
    let saved = without.last.pss_bytes as i64 - with.last.pss_bytes as i64;
    let ideal = est.as_ref().map(|e| e.ideal_savings_bytes);
    Comparison {
        command: o
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        workers: o.workers,
        mode: o.mode,
        saved_pss_bytes: saved,
        ideal_savings_bytes: ideal,
        percent_of_ideal: ideal
            .filter(|&i| i > 0)
            .map(|i| saved as f64 * 100.0 / i as f64),
        estimate: est,
        held_ksmd,
        without,
        with,
    }
}

/// `--hold-ksmd`: the pool with the preload before ksmd ran, against
/// itself at the end.
fn held_ksmd(
    with: &Phase,
    before_merge: Option<estimate::Estimate>,
    at_end: Option<estimate::Estimate>,
) -> HeldKsmd {
    let before = with.before_merge.map(|b| b.pss_bytes);
    let saved = before.map(|b| b as i64 - with.last.pss_bytes as i64);
    let ideal = before_merge.as_ref().map(|e| e.ideal_savings_bytes);
    HeldKsmd {
        pss_before_merge_bytes: before,
        saved_pss_bytes: saved,
        ideal_savings_bytes: ideal,
        percent_of_ideal: match (saved, ideal) {
            (Some(s), Some(i)) if i > 0 => Some(s as f64 * 100.0 / i as f64),
            _ => None,
        },
        estimate_before_merge: before_merge,
        estimate_at_end: at_end,
    }
}
