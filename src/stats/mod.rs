//! Statistics: live counters ([`counters`]), the kernel's per-process view and
//! the report rendered from both ([`report`]).
//!
//! Owns what is counted and how it is shown; decides nothing about merging.
//! Never allocates: reports are rendered into fixed buffers and written with
//! raw `write(2)`, so they work during `exit`, with stdio closed, and from
//! whichever thread calls `exit`.

pub mod counters;
pub mod report;

pub use counters::{counters, Hook, Source};

/// Big enough for the JSON report with every counter at its maximum.
pub const REPORT_BUFFER: usize = 4096;

use crate::core::config::{expand_stats_path, StatsDestination, StatsFormat, STATS_PATH_MAX};
use crate::core::engine;
use crate::fmt::BufWriter;
use crate::os::proc::{KsmStat, SmapsTotals};
use crate::os::sys;
use report::Report;

/// The report for this process as of now, including the kernel's view.
pub fn current_report() -> Report {
    let cfg = engine::config();
    Report {
        version: env!("CARGO_PKG_VERSION"),
        pid: sys::getpid(),
        requested_mode: cfg.mode,
        active_mode: engine::active_mode(),
        fallback_errno: engine::fallback_errno(),
        min_size: cfg.min_size,
        exclude_stack: cfg.exclude.stack,
        exclude_exec: cfg.exclude.exec,
        counters: counters().snapshot(),
        catchup_scans: crate::core::catchup::scans(),
        catchup: crate::core::catchup::stats(),
        ksm: KsmStat::read_self(),
        smaps: SmapsTotals::read_self(),
        page_size: engine::page_size(),
    }
}

/// Renders [`current_report`] into `out`; returns the length it needed.
pub fn render_current(json: bool, out: &mut [u8]) -> usize {
    let mut w = BufWriter::new(out);
    current_report().render(json, &mut w);
    w.len()
}

/// At exit: write the report where `KSMAUTO_STATS` says, if this process has
/// something to report or the user asked for it.
pub fn write_exit_report() {
    let cfg = engine::config();
    if cfg.stats == StatsDestination::Off {
        return;
    }
    let report = current_report();
    if !cfg.stats_requested && !report.has_activity() {
        return;
    }
    let mut buf = [0u8; REPORT_BUFFER];
    let mut w = BufWriter::new(&mut buf);
    report.render(cfg.stats_format == StatsFormat::Json, &mut w);
    match cfg.stats {
        StatsDestination::Off => {}
        StatsDestination::Stderr => {
            let _ = sys::write_all_no_sigpipe(2, w.as_bytes());
        }
        StatsDestination::File { path, len } => {
            let mut expanded = [0u8; STATS_PATH_MAX + 32];
            let result = match expand_stats_path(&path[..len], report.pid, &mut expanded) {
                Some(n) => append_to_file(&expanded[..n + 1], w.as_bytes()),
                None => Err(libc::ENAMETOOLONG),
            };
            if let Err(e) = result {
                let mut msg = [0u8; STATS_PATH_MAX + 160];
                let mut m = BufWriter::new(&mut msg);
                m.str("ksmauto: cannot write stats to ")
                    .bytes(&path[..len])
                    .str(" (KSMAUTO_STATS): ");
                m.str(sys::errno_name(e)).str("\n");
                let _ = sys::write_all_no_sigpipe(2, m.as_bytes());
            }
        }
    }
}

/// `path` is NUL-terminated. Appends, so a tree of processes sharing one path
/// leaves one report per line.
fn append_to_file(path: &[u8], bytes: &[u8]) -> Result<(), i32> {
    let fd = sys::open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND, 0o644)?;
    let result = sys::write_all(fd, bytes);
    sys::close(fd);
    result
}
