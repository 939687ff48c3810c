//! `ksmauto run`: a command under the preload, and one summary of every
//! process of its tree (each writes its own JSON report into a temp dir).

use crate::util::*;
use anyhow::{Context, Result};
use serde::Serialize;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

pub const LIB_NAME: &str = "libksmauto.so";

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

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // A terminal's Ctrl-C already reaches the child (same process group);
    // forward only signals sent to us alone (kill(2): si_code <= 0).
    let code = unsafe { (*info).si_code };
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 && code <= 0 {
        unsafe { libc::kill(pid, sig) };
    }
}

/// Forwards SIGINT/SIGTERM/SIGHUP to `pid` (and otherwise ignores them, so
/// we live to collect the reports).
pub fn forward_signals_to(pid: i32) {
    CHILD.store(pid, Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Exit code of a finished child: its status, or 128 + signal.
pub fn exit_code_of(st: std::process::ExitStatus) -> i32 {
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
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

#[derive(Serialize, Debug, Clone)]
pub struct ProcReport {
    pub pid: i64,
    pub mode: String,
    pub advised_bytes: u64,
    pub merging_pages: u64,
    pub zero_pages: u64,
    pub profit: i64,
    /// The library's own JSON report, unchanged.
    pub report: serde_json::Value,
}

#[derive(Serialize, Debug)]
pub struct Summary {
    pub command: Vec<String>,
    pub library: String,
    pub exit_code: i32,
    pub processes: usize,
    pub advised_bytes: u64,
    pub merged_pages: u64,
    pub merging_pages: u64,
    pub zero_pages: u64,
    pub profit: i64,
    pub page_size: u64,
    pub per_process: Vec<ProcReport>,
}

/// Every JSON line of every file in `dir`.
pub fn read_reports(dir: &Path) -> Vec<ProcReport> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let k = &v["kernel"];
            out.push(ProcReport {
                pid: v["pid"].as_i64().unwrap_or(0),
                mode: v["mode"].as_str().unwrap_or("?").to_string(),
                advised_bytes: v["advised"]["bytes"].as_u64().unwrap_or(0),
                merging_pages: k["merging_pages"].as_u64().unwrap_or(0),
                zero_pages: k["zero_pages"].as_u64().unwrap_or(0),
                profit: k["profit"].as_i64().unwrap_or(0),
                report: v,
            });
        }
    }
    out.sort_by_key(|r| r.pid);
    out
}

pub fn run(mode: Option<&str>, lib: Option<&Path>, json: bool, cmd: &[OsString]) -> Result<i32> {
    let lib = find_lib(lib)?;
    let dir = TempDir::new("ksmauto-run")?;
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..])
        .env("LD_PRELOAD", preload_value(&lib))
        .env("KSMAUTO_STATS", dir.0.join("%p.json"))
        .env("KSMAUTO_STATS_FORMAT", "json");
    if let Some(m) = mode {
        c.env("KSMAUTO_MODE", m);
    }
    let mut child = c.spawn().map_err(|e| spawn_error(&cmd[0], e))?;
    forward_signals_to(child.id() as i32);
    let st = child.wait().context("waiting for the command")?;
    let code = exit_code_of(st);
    let per = read_reports(&dir.0);
    let s = Summary {
        command: cmd
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        library: lib.display().to_string(),
        exit_code: code,
        processes: per.len(),
        advised_bytes: per.iter().map(|r| r.advised_bytes).sum(),
        merging_pages: per.iter().map(|r| r.merging_pages).sum(),
        zero_pages: per.iter().map(|r| r.zero_pages).sum(),
        merged_pages: per.iter().map(|r| r.merging_pages + r.zero_pages).sum(),
        profit: per.iter().map(|r| r.profit).sum(),
        page_size: page_size(),
        per_process: per,
    };
    if json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        eprint!("{}", render_summary(&s));
    }
    Ok(code)
}

pub fn render_summary(s: &Summary) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "ksmauto: {} process{}, advised {}, merged pages {} (merging {}, zero {}) = {}, profit {}, exit {}",
        s.processes,
        if s.processes == 1 { "" } else { "es" },
        human_bytes(s.advised_bytes),
        s.merged_pages,
        s.merging_pages,
        s.zero_pages,
        human_bytes(s.merged_pages * s.page_size),
        human_bytes_i(s.profit),
        s.exit_code
    );
    if s.processes == 0 {
        let _ = writeln!(
            o,
            "ksmauto: no reports (did the command exec a static binary, or exit by a signal?)"
        );
        return o;
    }
    let _ = writeln!(
        o,
        "{:>8} {:<8} {:>12} {:>10} {:>8} {:>12}",
        "PID", "MODE", "ADVISED", "MERGING", "ZERO", "PROFIT"
    );
    for r in &s.per_process {
        let _ = writeln!(
            o,
            "{:>8} {:<8} {:>12} {:>10} {:>8} {:>12}",
            r.pid,
            r.mode,
            human_bytes(r.advised_bytes),
            r.merging_pages,
            r.zero_pages,
            human_bytes_i(r.profit)
        );
    }
    o
}
