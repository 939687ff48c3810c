//! `ksmauto ksmd`: the one owner of ksmd's tunables (`/sys/kernel/mm/ksm`).
//!
//! It alone knows which tunables there are, the order they are put back in,
//! what the "fast" and "default" paces are, and how to hold ksmd while a
//! command runs (holds that overlap share one record, `holds`, so the
//! settings found before the first come back when the last ends). CI, the
//! demo, the benchmarks and the test harness call
//! `ksmauto ksmd save|restore|hold` instead of writing sysfs themselves.
//! This module never reads processes' memory and never decides anything
//! about merging; `status` shows the state.

mod holds;
mod saved;

pub use saved::{parse_saved, render_saved, restore, save, Restored, Saved};

use crate::ksm::{read, require_ksm, sysfs};
use crate::util::*;
use anyhow::Result;
use clap::Subcommand;
use std::ffi::OsString;

use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

/// Every tunable, in the order `restore` writes them:
/// - the advisor's limits, then `advisor_mode`, before `pages_to_scan`: the
///   kernel refuses `pages_to_scan` while the advisor is on, and switching
///   the advisor resets `pages_to_scan`;
/// - `max_page_sharing` and `merge_across_nodes` only change while no page is
///   merged (EBUSY otherwise): equal values are skipped, others reported;
/// - `run` last, so ksmd starts only once its pace is back (and when it must
///   stop, [`restore`] stops it first, before its pace changes).
pub const TUNABLES: &[&str] = &[
    "advisor_max_cpu",
    "advisor_min_pages_to_scan",
    "advisor_max_pages_to_scan",
    "advisor_target_scan_time",
    "advisor_mode",
    "pages_to_scan",
    "sleep_millisecs",
    "smart_scan",
    "use_zero_pages",
    "stable_node_chains_prune_millisecs",
    "max_page_sharing",
    "merge_across_nodes",
    "run",
];

/// A scan pace: what `--scan fast|default` writes, in this order.
pub struct Pace {
    pub pages_to_scan: &'static str,
    pub sleep_millisecs: &'static str,
    pub smart_scan: &'static str,
}

/// The fast pace, for demos and tests (the test suite's KSM tests wait for
/// full scans and depend on it): 2000 pages every 10 ms, every page on every
/// pass (`smart_scan` 0), the advisor off where the kernel has one. Not for
/// production: ksmd then uses a good part of a core.
pub const FAST: Pace = Pace {
    pages_to_scan: "2000",
    sleep_millisecs: "10",
    smart_scan: "0",
};

/// The kernel's own defaults (advisor off).
pub const DEFAULT: Pace = Pace {
    pages_to_scan: "100",
    sleep_millisecs: "20",
    smart_scan: "1",
};

/// `ksmauto ksmd` subcommands (without one: `--on/--off/--scan`).
#[derive(Subcommand)]
pub enum Action {
    /// Write every ksmd tunable to FILE (name=value lines)
    Save { file: PathBuf },
    /// Put back the tunables saved in FILE; says what it put back (root)
    Restore { file: PathBuf },
    /// Save the tunables, apply the options, run CMD, put everything back
    /// whatever happens; exits with CMD's status (root to change anything)
    Hold {
        #[arg(long, conflicts_with = "off")]
        on: bool,
        #[arg(long)]
        off: bool,
        /// fast: 2000 pages every 10 ms, smart_scan 0 (for demos and tests);
        /// default: the kernel's 100 pages every 20 ms, smart_scan 1
        #[arg(long, value_enum)]
        scan: Option<Scan>,
        /// The command and its arguments
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, num_args = 1..)]
        command: Vec<OsString>,
    },
}

/// The value of a tunable as it can be written back: for a choice file
/// (`advisor_mode`: "[none] scan-time") the chosen word.
pub fn value(name: &str) -> Option<String> {
    let v = read(name)?;
    match (v.find('['), v.find(']')) {
        (Some(a), Some(b)) if a < b => Some(v[a + 1..b].to_string()),
        _ => Some(v),
    }
}

fn write_raw(name: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(sysfs().join(name), value)
}

fn refused(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
    )
}

fn permission_denied() -> anyhow::Error {
    fail(EXIT_PERM, "permission denied: run as root")
}

/// The error for a refused write: a read-only sysfs (a container's) is no
/// matter of being root, and says so.
fn refusal(e: &std::io::Error) -> anyhow::Error {
    if e.raw_os_error() == Some(libc::EROFS) {
        fail(
            EXIT_PERM,
            format!(
                "{} is read-only here (mounted read-only, as in a container): ksmd can only be changed from the host",
                sysfs().display()
            ),
        )
    } else {
        permission_denied()
    }
}

fn write(name: &str, value: &str) -> Result<()> {
    write_raw(name, value).map_err(|e| {
        if refused(&e) {
            refusal(&e)
        } else {
            fail(
                EXIT_RUNTIME,
                format!(
                    "cannot write {value} to {}: {e}",
                    sysfs().join(name).display()
                ),
            )
        }
    })
}

/// Writes `value` unless the tunable has it already.
fn set(name: &str, value: &str) -> Result<()> {
    match self::value(name) {
        Some(v) if v == value => Ok(()),
        _ => write(name, value),
    }
}

/// The same for a tunable older kernels lack (`advisor_mode` since 6.9,
/// `smart_scan` since 6.7): nothing to do where it is missing.
fn set_if_present(name: &str, value: &str) -> Result<()> {
    match self::value(name) {
        None => Ok(()),
        Some(_) => set(name, value),
    }
}

/// `ksmauto ksmd --on/--off/--scan`: sets the pace, then starts or stops
/// ksmd (stopping comes first, so a stopped ksmd never runs at a new pace).
pub fn ksmd(on: bool, off: bool, scan: Option<Scan>) -> Result<()> {
    let dir = require_ksm()?;
    if (on || off || scan.is_some()) && !is_root() {
        return Err(permission_denied());
    }
    if off {
        set("run", "0")?;
    }
    match scan {
        Some(Scan::Fast | Scan::Default) => {
            let pace = if scan == Some(Scan::Fast) {
                &FAST
            } else {
                &DEFAULT
            };
            set_if_present("advisor_mode", "none")?;
            set("pages_to_scan", pace.pages_to_scan)?;
            set("sleep_millisecs", pace.sleep_millisecs)?;
            set_if_present("smart_scan", pace.smart_scan)?;
        }
        Some(Scan::Advisor) => {
            if !dir.join("advisor_mode").exists() {
                return Err(fail(EXIT_RUNTIME, "this kernel has no scan-time advisor"));
            }
            write("advisor_mode", "scan-time")?;
        }
        None => {}
    }
    if on {
        set("run", "1")?;
    }
    Ok(())
}

/// The hold of a running `hold` (or `compare --hold-ksmd`), to be ended;
/// the panic hook ends it too, as it ends the process without unwinding.
static HELD: Mutex<Option<holds::Joined>> = Mutex::new(None);

/// ksmd's tunables as they were, put back by [`Held::release`] or, on any
/// other way out (an error, a panic), by `Drop` / the panic hook — unless
/// a later hold still runs, which then puts them back (see `holds`).
pub struct Held {
    released: bool,
}

impl Held {
    pub fn save() -> Result<Held> {
        Held::save_then(|| Ok(()))
    }

    /// Saves, then applies the hold's own settings with `apply` before any
    /// other hold may save ksmd.
    pub fn save_then(apply: impl FnOnce() -> Result<()>) -> Result<Held> {
        let joined = holds::join(apply)?;
        *HELD.lock().unwrap_or_else(|e| e.into_inner()) = Some(joined);
        Ok(Held { released: false })
    }

    /// Puts everything back and says so on stderr; an error if a value
    /// could not be put back.
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        put_back_held(false)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.released {
            let _ = put_back_held(true);
        }
    }
}

fn put_back_held(quiet_errors: bool) -> Result<()> {
    let Some(joined) = HELD.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return Ok(());
    };
    let r = match holds::leave(&joined) {
        Ok(holds::Left::PutBack(r)) => r,
        Ok(holds::Left::StillHeld(pids)) => {
            let pids: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
            eprintln!(
                "ksmauto: ksmd left as it is: a later hold still runs (pid {}); \
                 the last to end puts back what the first found",
                pids.join(" ")
            );
            return Ok(());
        }
        Err(e) => {
            eprintln!("ksmauto: warning: cannot put ksmd back: {e}");
            return Err(e);
        }
    };
    if r.put_back.is_empty() {
        eprintln!("ksmauto: {}", r.summary());
    } else {
        eprintln!("ksmauto: ksmd {}", r.summary());
    }
    if r.failed.is_empty() {
        return Ok(());
    }
    if quiet_errors {
        eprintln!("ksmauto: warning: {}", r.failures());
    }
    Err(fail(EXIT_RUNTIME, r.failures()))
}

/// For the panic hook: put ksmd back if something holds it.
pub fn put_back_if_held() {
    if HELD.try_lock().is_ok_and(|h| h.is_some()) {
        let _ = put_back_held(true);
    }
}

/// The first signal caught by [`catch_interrupts`] (0: none).
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn note_interrupt(sig: libc::c_int) {
    let _ = INTERRUPTED.compare_exchange(0, sig, Ordering::Relaxed, Ordering::Relaxed);
}

/// The signals that would end the process (those `launch` forwards to a
/// command) no longer do; [`interrupted`] says one came, so a loop can end
/// cleanly, stop what it started and put ksmd back.
pub fn catch_interrupts() {
    for sig in crate::launch::FORWARDED {
        unsafe { libc::signal(sig, note_interrupt as *const () as libc::sighandler_t) };
    }
}

pub fn interrupted() -> Option<i32> {
    match INTERRUPTED.load(Ordering::Relaxed) {
        0 => None,
        sig => Some(sig),
    }
}

/// The ksmd kernel thread as its `/proc/PID/stat` shows it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thread {
    /// CPU time (user + system) it has used since it started.
    pub cpu_seconds: f64,
    /// How long ago it started (`None` without `/proc/uptime`).
    pub running_seconds: Option<f64>,
}

impl Thread {
    /// The thread a stat line describes, if it is ksmd's: the kernel's
    /// thread, not a process that named itself so. `tick`: clock ticks a
    /// second; `uptime`: seconds since boot.
    pub fn of(
        stat: &ksmauto_contract::proc::Stat,
        tick: f64,
        uptime: Option<f64>,
    ) -> Option<Thread> {
        if stat.comm != b"ksmd" || !stat.is_kernel_thread() || tick <= 0.0 {
            return None;
        }
        let started = stat.start_time().map(|t| t as f64 / tick);
        Some(Thread {
            cpu_seconds: stat.cpu_ticks()? as f64 / tick,
            running_seconds: match (uptime, started) {
                (Some(up), Some(at)) if up >= at => Some(up - at),
                _ => None,
            },
        })
    }
}

/// The ksmd kernel thread, found among `/proc`'s processes; `None` where
/// there is none (a kernel without KSM, a `/proc` that hides it).
pub fn thread() -> Option<Thread> {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let uptime = uptime_seconds();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(text) = read_proc(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(stat) = ksmauto_contract::proc::Stat::parse(&text) else {
            continue;
        };
        if let Some(t) = Thread::of(&stat, tick, uptime) {
            return Some(t);
        }
    }
    None
}

/// CPU time (user + system) the ksmd kernel thread has used so far.
pub fn cpu_seconds() -> Option<f64> {
    thread().map(|t| t.cpu_seconds)
}

/// Seconds since boot: the first number of `/proc/uptime`.
fn uptime_seconds() -> Option<f64> {
    let text = read_proc("/proc/uptime").ok()?;
    std::str::from_utf8(&text)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `ksmauto ksmd hold`: saves every tunable, applies the options, runs the
/// command (signals sent to us are forwarded to it, like `ksmauto run`),
/// puts every tunable back whatever happened, and returns the command's
/// status (128 + signal if killed); 1 if the command succeeded but a value
/// could not be put back.
pub fn hold(on: bool, off: bool, scan: Option<Scan>, cmd: &[OsString]) -> Result<i32> {
    require_ksm()?;
    if (on || off || scan.is_some()) && !is_root() {
        return Err(permission_denied());
    }
    // A signal before the command runs is kept, and then goes to it.
    crate::launch::catch_signals_until_started();
    let held = Held::save_then(|| ksmd(on, off, scan))?;
    let child = crate::launch::Launch::new(cmd).spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            crate::launch::command_ended();
            return Err(e);
        }
    };
    crate::launch::forward_signals_to(child.id() as i32);
    let status = child.wait();
    // Its pid may be used again: no signal goes there any more.
    crate::launch::command_ended();
    let code = match status {
        Ok(st) => {
            use std::os::unix::process::ExitStatusExt;
            st.code()
                .or_else(|| st.signal().map(|s| 128 + s))
                .unwrap_or(EXIT_RUNTIME)
        }
        Err(_) => EXIT_RUNTIME,
    };
    match held.release() {
        Ok(()) => Ok(code),
        Err(e) => {
            eprintln!("ksmauto: {e}");
            Ok(if code == 0 { EXIT_RUNTIME } else { code })
        }
    }
}

/// `save` and `restore` are snapshots of the moment and take no part in the
/// holds' record: with holds running, they say so on stderr.
fn note_running_holds(what: &str) {
    let pids = holds::others_running();
    if !pids.is_empty() {
        let pids: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
        eprintln!(
            "ksmauto: note: ksmd is held (`ksmauto ksmd hold`, pid {}): {what}",
            pids.join(" ")
        );
    }
}

/// A scanning pace, as the command line names it: [`FAST`], [`DEFAULT`],
/// or the kernel's scan-time advisor. (No doc comments on the variants:
/// clap would show them in `--help`.)
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scan {
    Fast,
    Default,
    Advisor,
}

/// `ksmauto ksmd save|restore|hold`.
pub fn action(a: Action) -> Result<i32> {
    match a {
        Action::Save { file } => {
            let text = render_saved(&save()?);
            note_running_holds("these are the values they set");
            std::fs::write(&file, text).map_err(|e| {
                let code = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    EXIT_PERM
                } else {
                    EXIT_RUNTIME
                };
                fail(code, format!("cannot write {}: {e}", file.display()))
            })?;
            Ok(0)
        }
        Action::Restore { file } => {
            require_ksm()?;
            let r = restore(&parse_saved(&file)?)?;
            if !r.missing.is_empty() {
                eprintln!(
                    "ksmauto: skipped {}: this kernel has no such tunable (saved on another kernel)",
                    r.missing.join(" ")
                );
            }
            println!("{}", r.summary());
            if r.left_to_advisor {
                println!("pages_to_scan left to the advisor (advisor_mode is not none)");
            }
            if !r.failed.is_empty() {
                return Err(fail(EXIT_RUNTIME, r.failures()));
            }
            note_running_holds(
                "the last to end puts back what the first found, whatever this restored",
            );
            Ok(0)
        }
        Action::Hold {
            on,
            off,
            scan,
            command,
        } => hold(on, off, scan, &command),
    }
}

#[cfg(test)]
mod thread_tests {
    use super::Thread;
    use ksmauto_contract::proc::Stat;

    /// A stat line: `comm`, flags (field 9), utime/stime (14, 15) and the
    /// start time (22) in ticks.
    fn line(comm: &str, flags: u64, utime: u64, stime: u64, start: u64) -> String {
        let mut f: Vec<String> = (3..=30).map(|_| "0".to_string()).collect();
        f[0] = "S".into();
        f[9 - 3] = flags.to_string();
        f[14 - 3] = utime.to_string();
        f[15 - 3] = stime.to_string();
        f[22 - 3] = start.to_string();
        format!("42 ({comm}) {}", f.join(" "))
    }

    const PF_KTHREAD: u64 = 0x0020_0000;

    #[test]
    fn the_kernel_thread_named_ksmd_is_ksmd_with_its_cpu_and_age() {
        let text = line("ksmd", PF_KTHREAD, 150, 250, 1000);
        let t = Thread::of(&Stat::parse(text.as_bytes()).unwrap(), 100.0, Some(110.0)).unwrap();
        assert_eq!(t.cpu_seconds, 4.0);
        assert_eq!(t.running_seconds, Some(100.0));
        let no_uptime = Thread::of(&Stat::parse(text.as_bytes()).unwrap(), 100.0, None).unwrap();
        assert_eq!(no_uptime.running_seconds, None);
    }

    #[test]
    fn a_process_that_calls_itself_ksmd_or_another_kernel_thread_is_not_ksmd() {
        for text in [
            line("ksmd", 0, 1, 1, 1),
            line("kswapd0", PF_KTHREAD, 1, 1, 1),
        ] {
            assert_eq!(
                Thread::of(&Stat::parse(text.as_bytes()).unwrap(), 100.0, Some(5.0)),
                None
            );
        }
    }
}
