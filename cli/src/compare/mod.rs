//! `ksmauto compare`: N copies of a command without, then with the preload;
//! memory sampled until it settles, set against the estimator's ideal.

mod phase;
mod render;

pub use phase::Phase;
pub use render::render_text;

use phase::{phase, Settings};
use render::chart;

use crate::merge_any::{self, Plan};
use crate::util::*;
use crate::{estimate, ksm, ksmd, launch};
use anyhow::Result;
use serde::Serialize;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

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
    pub mode: String,
    pub without: Phase,
    pub with: Phase,
    pub saved_pss_bytes: i64,
    pub ideal_savings_bytes: Option<u64>,
    pub percent_of_ideal: Option<f64>,
    pub estimate: Option<estimate::Estimate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_ksmd: Option<HeldKsmd>,
}

#[allow(clippy::too_many_arguments)]
pub fn compare(
    cmd: &[OsString],
    workers: usize,
    mode: &str,
    timeout: Duration,
    lib: Option<&Path>,
    svg: Option<&Path>,
    json: bool,
    hold_ksmd: bool,
    ready_file: Option<&str>,
) -> Result<Comparison> {
    ksm::require_ksm()?;
    if hold_ksmd && !is_root() {
        return Err(fail(EXIT_PERM, "permission denied: --hold-ksmd needs root"));
    }
    let lib = launch::find_lib(lib)?;
    // Started with merge-any (a MemoryKSM=yes unit, a prctl launcher), the
    // copies would inherit it through fork and exec: the run without the
    // preload would merge too and compare nothing. Cleared here, for both
    // runs; each copy with the preload gets what its mode gives it.
    if unsafe { libc::prctl(libc::PR_GET_MEMORY_MERGE, 0, 0, 0, 0) } == 1 {
        let cleared = unsafe { libc::prctl(libc::PR_SET_MEMORY_MERGE, 0, 0, 0, 0) } == 0;
        if cleared {
            eprintln!(
                "ksmauto: compare was started with merge-any (PR_SET_MEMORY_MERGE) set, which its copies would inherit: cleared it, so the run without the preload merges nothing of its own"
            );
        } else {
            return Err(fail(
                EXIT_RUNTIME,
                format!(
                    "compare was started with merge-any (PR_SET_MEMORY_MERGE) set and cannot clear it ({}): the copies would inherit it and the run without the preload would merge too",
                    std::io::Error::last_os_error()
                ),
            ));
        }
    }
    // Orphans of the copies re-parent to us and stay in the tree we sample.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if ksm::read_u64("run") != Some(1) && !json && !hold_ksmd {
        eprintln!(
            "ksmauto: warning: ksmd is not running: nothing will merge (`ksmauto ksmd --on`)"
        );
    }
    // A static program never reads LD_PRELOAD: merge-any set before the
    // copies' exec covers it instead, where that is safe and the kernel
    // keeps it.
    let path_var = std::env::var_os("PATH");
    let plan = merge_any::plan(&cmd[0], path_var.as_deref(), mode, &mut merge_any::probe);
    match &plan {
        Plan::SetMergeAny => eprintln!(
            "ksmauto: {}",
            merge_any::COVERING_NOTE.replace("{}", &cmd[0].to_string_lossy())
        ),
        Plan::Uncovered(why) | Plan::NotInspected(why) => eprintln!("ksmauto: warning: {why}"),
        Plan::Preload => {}
    }
    let st = Settings {
        cmd,
        workers,
        timeout,
        lib: Some(&lib),
        mode,
        quiet: json,
        plan,
        hold_ksmd,
        ready_file,
    };
    // A signal stops the copies before compare ends (they run in process
    // groups of their own, which a terminal's Ctrl-C does not reach).
    ksmd::catch_interrupts();
    // ksmd is put back however this ends (an error or a signal here, a
    // panic through the panic hook).
    let held = if hold_ksmd {
        Some(ksmd::Held::save()?)
    } else {
        None
    };
    let without = phase(&st, false, true)?;
    let with = phase(&st, true, hold_ksmd)?;
    if let Some(held) = held {
        held.release()?;
    }
    let (est, without) = (without.estimate, without.phase);
    let held_ksmd = hold_ksmd.then(|| {
        let before = with.phase.before_merge.map(|b| b.pss_bytes);
        let saved = before.map(|b| b as i64 - with.phase.last.pss_bytes as i64);
        let ideal = with
            .estimate_before_merge
            .as_ref()
            .map(|e| e.ideal_savings_bytes);
        HeldKsmd {
            pss_before_merge_bytes: before,
            saved_pss_bytes: saved,
            ideal_savings_bytes: ideal,
            percent_of_ideal: match (saved, ideal) {
                (Some(s), Some(i)) if i > 0 => Some(s as f64 * 100.0 / i as f64),
                _ => None,
            },
            estimate_before_merge: with.estimate_before_merge,
            estimate_at_end: with.estimate,
        }
    });
    let with = with.phase;
    let saved = without.last.pss_bytes as i64 - with.last.pss_bytes as i64;
    let ideal = est.as_ref().map(|e| e.ideal_savings_bytes);
    let c = Comparison {
        command: cmd
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        workers,
        mode: mode.into(),
        saved_pss_bytes: saved,
        ideal_savings_bytes: ideal,
        percent_of_ideal: ideal
            .filter(|&i| i > 0)
            .map(|i| saved as f64 * 100.0 / i as f64),
        estimate: est,
        held_ksmd,
        without,
        with,
    };
    if let Some(path) = svg {
        chart(&c, path)?;
    }
    Ok(c)
}
