//! Starting a command under the preload: where the library is, how a
//! command is started ([`Launch`]: the `LD_PRELOAD` value, the library's
//! settings, merge-any before exec for a static program), what a failed
//! start means, signals forwarded to the command, a private temporary
//! directory. Shared by `run`, `compare` and `ksmd hold`; knows nothing of
//! what they measure, and decides nothing about coverage (`merge_any`
//! does; this only carries its plan out).

use crate::merge_any::{self, Plan};
use crate::util::*;
use anyhow::Result;
use ksmauto_contract::{env, Mode};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

pub use crate::util::LIB_NAME;

/// Where the library is: `--lib`, next to this binary, `../release/` (a debug
/// build of the tool in `target/debug`), `../lib/` (installed under a prefix).
pub fn find_lib(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            return Err(fail(
                EXIT_RUNTIME,
                format!("library not found: {} (--lib)", p.display()),
            ));
        }
        return Ok(std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()));
    }
    let mut tried = vec![];
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            for cand in [
                dir.join(LIB_NAME),
                dir.join("../release").join(LIB_NAME),
                dir.join("../lib").join(LIB_NAME),
            ] {
                if cand.is_file() {
                    return Ok(std::fs::canonicalize(&cand).unwrap_or(cand));
                }
                tried.push(cand);
            }
        }
    }
    let sys = PathBuf::from("/usr/local/lib").join(LIB_NAME);
    if sys.is_file() {
        return Ok(sys);
    }
    tried.push(sys);
    Err(fail(
        EXIT_RUNTIME,
        format!(
            "{LIB_NAME} not found (tried {}); build it with `cargo build --release` or pass --lib",
            tried
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// How to start a command: its program and arguments, with or without the
/// library, and the library's settings. `run` starts its command with one,
/// `compare` each of its copies; each adds the settings it measures with.
#[derive(Clone, Debug)]
pub struct Launch<'a> {
    command: &'a [OsString],
    preload: Preload<'a>,
    /// `KSMAUTO_MODE` for the library; `None`: whatever the command inherits.
    mode: Option<Mode>,
    /// Further variables, set in this order.
    env: Vec<(&'static str, OsString)>,
    /// Our own `KSMAUTO_*` settings are not passed on (but for the sysfs
    /// directory, which the tests move).
    without_our_settings: bool,
    /// No stdin or stdout, and a process group of its own.
    detached: bool,
    /// `PR_SET_MEMORY_MERGE` set between fork and exec (see `merge_any`).
    merge_any: bool,
}

#[derive(Clone, Copy, Debug)]
enum Preload<'a> {
    /// `LD_PRELOAD` as the command inherits it.
    Inherited,
    /// This library added to it.
    With(&'a Path),
    /// No `LD_PRELOAD` at all.
    Without,
}

impl<'a> Launch<'a> {
    /// `command[0]` with the rest as its arguments, started as it is.
    pub fn new(command: &'a [OsString]) -> Launch<'a> {
        Launch {
            command,
            preload: Preload::Inherited,
            mode: None,
            env: vec![],
            without_our_settings: false,
            detached: false,
            merge_any: false,
        }
    }

    /// With the library at `lib` added to `LD_PRELOAD` ([`preload_value`]).
    pub fn preload(mut self, lib: &'a Path) -> Self {
        self.preload = Preload::With(lib);
        self
    }

    /// Without any `LD_PRELOAD`.
    pub fn no_preload(mut self) -> Self {
        self.preload = Preload::Without;
        self
    }

    pub fn mode(mut self, mode: Option<Mode>) -> Self {
        self.mode = mode;
        self
    }

    pub fn env(mut self, name: &'static str, value: impl Into<OsString>) -> Self {
        self.env.push((name, value.into()));
        self
    }

    pub fn without_our_settings(mut self) -> Self {
        self.without_our_settings = true;
        self
    }

    pub fn detached(mut self) -> Self {
        self.detached = true;
        self
    }

    /// Carries out `merge_any`'s plan for the command: merge-any set before
    /// its exec where the plan says so.
    pub fn covering(mut self, plan: &Plan) -> Self {
        self.merge_any = *plan == Plan::SetMergeAny;
        self
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.command[0]);
        c.args(&self.command[1..]);
        if self.detached {
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .process_group(0);
        }
        if self.without_our_settings {
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with(env::PREFIX) && k != env::SYSFS_KSM {
                    c.env_remove(k);
                }
            }
        }
        match self.preload {
            Preload::Inherited => {}
            Preload::With(lib) => {
                c.env("LD_PRELOAD", preload_value(lib));
            }
            Preload::Without => {
                c.env_remove("LD_PRELOAD");
            }
        }
        if let Some(m) = self.mode {
            c.env(env::MODE, m.name());
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if self.merge_any {
            merge_any::set_before_exec(&mut c);
        }
        c
    }

    /// Starts it; a failure as a shell names it ([`spawn_error`]).
    pub fn spawn(&self) -> Result<Child> {
        self.command()
            .spawn()
            .map_err(|e| spawn_error(&self.command[0], e))
    }
}

/// `LD_PRELOAD` with ours appended to what is already there.
pub fn preload_value(lib: &Path) -> OsString {
    let ours = lib.as_os_str().to_owned();
    match std::env::var_os("LD_PRELOAD") {
        Some(old) if !old.is_empty() => {
            if old
                .to_string_lossy()
                .split([':', ' '])
                .any(|p| Path::new(p) == lib)
            {
                return old;
            }
            let mut v = old;
            v.push(":");
            v.push(&ours);
            v
        }
        _ => ours,
    }
}

/// The signals passed on to the command: sent to ksmauto alone they are
/// meant for it, and ksmauto must live on to collect the reports or put
/// ksmd back (left to their default, any of them would end ksmauto first).
pub const FORWARDED: [libc::c_int; 7] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
];

/// The command's pid; [`NOT_STARTED`] before it runs, 0 once it has ended.
static CHILD: AtomicI32 = AtomicI32::new(0);
const NOT_STARTED: i32 = -1;
/// A signal that came before the command ran: it goes to the command as
/// soon as it runs.
static PENDING: AtomicI32 = AtomicI32::new(0);
/// Set by a signal that arrives once the command itself has ended: stop
/// waiting for the rest of its tree.
static STOP_WAITING: AtomicBool = AtomicBool::new(false);
/// The last SIGHUP, SIGINT or SIGTERM that came (0: none): asked to end,
/// which the watchdog of `run` enforces if `run` is stuck.
static ENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // A terminal's Ctrl-C already reaches the child (same process group);
    // forward only signals sent to us alone (kill(2): si_code <= 0).
    let code = unsafe { (*info).si_code };
    if matches!(sig, libc::SIGHUP | libc::SIGINT | libc::SIGTERM) {
        ENDING.store(sig, Ordering::Relaxed);
    }
    match CHILD.load(Ordering::Relaxed) {
        NOT_STARTED => PENDING.store(sig, Ordering::Relaxed),
        0 => STOP_WAITING.store(true, Ordering::Relaxed),
        pid if code <= 0 => unsafe {
            libc::kill(pid, sig);
        },
        _ => {}
    }
}

fn install_forwarding() {
    for sig in FORWARDED {
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// From now until [`forward_signals_to`], a forwarded signal is kept for
/// the command rather than ending ksmauto. Not by blocking the signals: a
/// child inherits its parent's signal mask, and the command (and all it
/// starts) would run with them blocked.
pub fn catch_signals_until_started() {
    CHILD.store(NOT_STARTED, Ordering::Relaxed);
    install_forwarding();
}

/// The command has ended (it was reaped): signals are no longer forwarded,
/// they end the wait for the rest of its tree.
pub fn command_ended() {
    CHILD.store(0, Ordering::Relaxed);
}

/// Whether a signal after the command's end asked to stop waiting.
pub fn stop_waiting_asked() -> bool {
    STOP_WAITING.load(Ordering::Relaxed)
}

/// The last SIGHUP, SIGINT or SIGTERM that came, from a terminal too
/// (which is not forwarded): a request to end, whatever is forwarded.
pub fn ending_signal() -> Option<libc::c_int> {
    Some(ENDING.load(Ordering::Relaxed)).filter(|&s| s != 0)
}

/// Forwards the [`FORWARDED`] signals to `pid` (and otherwise ignores
/// them, so we live to collect the reports), the one that came before it
/// ran first. Once the command has ended, such a signal ends the wait for
/// the rest of its tree instead.
pub fn forward_signals_to(pid: i32) {
    CHILD.store(pid, Ordering::Relaxed);
    install_forwarding();
    let early = PENDING.swap(0, Ordering::Relaxed);
    if early != 0 {
        unsafe { libc::kill(pid, early) };
    }
}

pub fn spawn_error(cmd: &OsString, e: std::io::Error) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            fail(127, format!("command not found: {}", cmd.to_string_lossy()))
        }
        std::io::ErrorKind::PermissionDenied => fail(
            126,
            format!(
                "cannot execute {}: permission denied",
                cmd.to_string_lossy()
            ),
        ),
        // Found but no program the kernel can run (no `#!`, not ELF, or
        // not for this machine): "cannot be executed", as a shell says.
        _ if matches!(e.raw_os_error(), Some(libc::ENOEXEC) | Some(libc::EACCES)) => fail(
            126,
            format!("cannot execute {}: {e}", cmd.to_string_lossy()),
        ),
        _ => fail(
            EXIT_RUNTIME,
            format!("cannot run {}: {e}", cmd.to_string_lossy()),
        ),
    }
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Result<TempDir> {
        let base = std::env::temp_dir();
        for i in 0..100u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let p = base.join(format!("{prefix}-{}-{nanos:x}{i}", std::process::id()));
            if std::fs::create_dir(&p).is_ok() {
                return Ok(TempDir(p));
            }
        }
        Err(fail(
            EXIT_RUNTIME,
            format!("cannot create a temp dir in {}", base.display()),
        ))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
