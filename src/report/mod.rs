//! The exit report: the core's settings, the counters ([`crate::counters`])
//! and the kernel's per-process view, rendered ([`render`]) and written where
//! `KSMAUTO_STATS` says.
//!
//! Sits above the core: it reads the core's settings and state, and the core
//! never calls it (the exported `exit` path in `crate::api` does). Owns how
//! things are shown; decides nothing about merging. Never allocates: reports
//! are rendered into fixed buffers and written with raw `write(2)`, so they
//! work during `exit`, with stdio closed, and from whichever thread calls
//! `exit`.

pub mod render;

/// Big enough for the JSON report with every counter at its maximum.
pub const REPORT_BUFFER: usize = 4096;

use crate::core::config::{expand_stats_path, StatsDestination, StatsFormat, STATS_PATH_MAX};
use crate::core::engine;
use crate::core::identity::Starter;
use crate::fmt::BufWriter;
use crate::os::proc::SmapsTotals;
use crate::os::sys;
use render::Report;

/// The report for this process as of now, including the kernel's view.
pub fn current_report() -> Report {
    let mut report = report_without_smaps();
    report.smaps = SmapsTotals::read_self();
    report.start_time = crate::os::proc::process_start_time();
    report
}

/// The report without the `smaps` totals, whose read walks every mapping's
/// page tables: enough to decide whether there is anything to say.
fn report_without_smaps() -> Report {
    let cfg = engine::config();
    Report {
        version: env!("CARGO_PKG_VERSION"),
        pid: sys::getpid(),
        // Read with the smaps totals, once the report is to be written.
        start_time: None,
        requested_mode: cfg.mode,
        active_mode: engine::active_mode(),
        fallback_errno: engine::fallback_errno(),
        min_size: cfg.min_size,
        exclude_stack: cfg.exclude.stack,
        exclude_exec: cfg.exclude.exec,
        exclude_secret: cfg.exclude.secret,
        allocator_calls_counted: engine::counts_allocator_calls(),
        counters: crate::counters::counters().snapshot(),
        catchup_scans: crate::core::catchup::scans(),
        catchup: crate::core::catchup::stats(),
        catchup_thread: crate::core::catchup_thread::stats(),
        register: cfg.register.name(),
        paying: paying_stats(),
        ksm: crate::os::proc::read_self_ksm_stat(),
        smaps: None,
        page_size: engine::page_size(),
    }
}

/// What the decisions about what pays did, if they ran here at all (on
/// now, or switched off later by a sandbox or `mlockall`).
fn paying_stats() -> Option<crate::core::paying::Stats> {
    let s = crate::core::paying::stats();
    (s.enabled || s.rounds > 0).then_some(s)
}

/// Renders [`current_report`] into `out`; returns the length it needed.
pub fn render_current(json: bool, out: &mut [u8]) -> usize {
    engine::settle_identity();
    let mut w = BufWriter::new(out);
    current_report().render(json, &mut w);
    w.len()
}

/// At exit: write the report where `KSMAUTO_STATS` says, if this process has
/// something to report or the user asked for it.
pub fn write_exit_report() {
    // A sandboxed program may allow none of the system calls a report makes.
    if engine::silenced() {
        return;
    }
    // A `vfork` child that calls `exit` runs in its parent's memory: the
    // counters are the parent's, and so is the report.
    if !engine::settle_identity() {
        return;
    }
    let cfg = engine::config();
    if cfg.stats == StatsDestination::Off {
        return;
    }
    // Program stderr replaced (closed, then the number reused for a data
    // file): say nothing rather than write into the program's file.
    if cfg.stats == StatsDestination::Stderr && !engine::stderr_is_unchanged() {
        return;
    }
    let mut report = report_without_smaps();
    if !cfg.stats_requested && !report.has_activity() {
        return;
    }
    // Unasked, only the process the user started speaks: one whose parent,
    // still the one it started with, does not run the library. A service's
    // workers (forked, or exec'd with the preload inherited) and orphans
    // stay silent, so a server's log, or a parent that takes any output of
    // its child on stderr for a failure, sees nothing of us; `KSMAUTO_STATS` set makes every process report, and
    // `ksmauto run` accounts for a whole tree.
    if !cfg.stats_requested && not_the_process_the_user_started() {
        return;
    }
    report.smaps = SmapsTotals::read_self();
    report.start_time = crate::os::proc::process_start_time();
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
                    .str(" (")
                    .str(ksmauto_contract::env::STATS)
                    .str("): ");
                m.str(sys::errno_name(e));
                match e {
                    libc::ELOOP => m.str(" (a symbolic link: never followed)"),
                    libc::EPERM => m.str(" (not a regular file owned by this user)"),
                    _ => &mut m,
                };
                m.str("\n");
                let _ = sys::write_all_no_sigpipe(2, m.as_bytes());
            }
        }
    }
}

/// Whether this process is not the one the user started: forked from a
/// process that runs the library (known even after the worker dropped the
/// privileges to read its parent's maps), exec'd by a parent that runs it
/// (a child of it, or the parent's own `exec`), or started by a process that
/// can no longer be asked ([`engine::starter`]: it exited and this process
/// is init's or a subreaper's now, or has been since before the library
/// started in it; or it `exec`ed another program since, `job & exec
/// server`, and its maps now are that program's) or may not be (another
/// user's: a worker that dropped privileges before its `exec`), or whose
/// parent was started to run the library and now does not: its program
/// was given an `LD_PRELOAD` naming it (a shell that ran the library and
/// then `exec`ed a static server, before or after this process started;
/// or a parent the library could not run in, the quiet side). A program
/// the user started through a launcher that runs the library and `exec`s
/// in place (`env`, `nice`, `bash -c`) keeps its parent, the user's shell,
/// readable and without the library: it speaks. One started through a
/// launcher that forks instead (dash's `sh -c CMD`) has the launcher, which
/// runs the library, for its parent, and is silent. One started through a
/// launcher that also drops privileges (`setpriv`, `gosu`, `su -c`), one
/// whose parent is init (a system service, a container's first process)
/// and one whose parent exited first cannot be told from such workers and
/// stay silent: the quiet side, as for a service.
fn not_the_process_the_user_started() -> bool {
    use crate::os::proc::{process_maps_file, process_preloads, SHARED_LINES};
    match engine::starter() {
        Starter::Parent(parent) => {
            let own = crate::os::own_file_name();
            process_maps_file(parent, own, &SHARED_LINES) != Some(false)
                || process_preloads(parent, own, &SHARED_LINES) != Some(false)
        }
        Starter::LibraryProcess | Starter::Unknown => true,
    }
}

/// `path` is NUL-terminated. Appends, so a tree of processes sharing one path
/// leaves one report per line.
///
/// The path comes from the environment, and the process may be more
/// privileged than whoever set it: the last component is never followed as a
/// symbolic link (`ELOOP`), a FIFO or device is never opened in a blocking
/// way (`ENXIO` for a FIFO without reader), a new file is created `0600`,
/// and only a regular file owned by the effective user is written
/// (`EPERM` otherwise), so a planted link or someone else's file gets nothing.
fn append_to_file(path: &[u8], bytes: &[u8]) -> Result<(), i32> {
    // Something that exists and is not a regular file (a device, a FIFO) is
    // refused before it is opened: opening one can block or act.
    let path = sys::c_path(path)?;
    match sys::stat_at(libc::AT_FDCWD, path, libc::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if st.is_symlink() => return Err(libc::ELOOP),
        Ok(st) if !st.is_regular() => return Err(libc::EPERM),
        _ => {}
    }
    let fd = sys::open_at(
        libc::AT_FDCWD,
        path,
        libc::O_WRONLY
            | libc::O_CREAT
            | libc::O_APPEND
            | libc::O_NOFOLLOW
            | libc::O_NONBLOCK
            | libc::O_NOCTTY,
        0o600,
    )?;
    // Checked again on what was opened: the name may have changed between.
    let result = match sys::fstat(fd) {
        Ok(st) if !st.is_regular() => Err(libc::EPERM),
        Ok(st) if st.uid != sys::geteuid() => Err(libc::EPERM),
        // Another name of a file that may be anyone's: planted in a shared
        // directory (`ksmauto run`'s is world-writable), it would make us
        // append to a file we were never pointed at.
        Ok(st) if st.nlink != 1 => Err(libc::EMLINK),
        Ok(_) => sys::write_all(fd, bytes),
        Err(e) => Err(e),
    };
    sys::close(fd);
    result
}
