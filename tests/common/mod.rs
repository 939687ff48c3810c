//! Shared test harness: builds the preload library and C test programs, runs
//! programs with and without the preload, and manages ksmd for KSM tests.
//!
//! KSM tests call [`ksmd`]: it turns ksmd on (as the kernel's own KSM
//! selftests do) with fast scanning and `smart_scan` off, and restores every
//! setting when the last test of this binary is done with it. KSM tests of one
//! binary run one at a time (the guard holds a lock): programs of parallel
//! tests fill pages with the same patterns, and ksmd would merge them across
//! processes, blurring every per-process count. While a guard is held a
//! "keeper" process with mergeable memory runs, because ksmd does not scan
//! (and `full_scans` stands still) while no process has any. Where KSM cannot
//! be used (no CONFIG_KSM, not root) the test prints a loud SKIPPED line and
//! returns — unless `KSMAUTO_REQUIRE_KSM=1`, which turns that into a failure.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ksmauto_contract::env;
use ksmauto_contract::proc::KsmStat;

/// The repository (workspace root), also from a member's tests (`cli/`).
pub fn repo() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if here.join("include/ksmauto.h").exists() {
        here
    } else {
        here.parent().unwrap().to_path_buf()
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

/// `target/release/libksmauto.so`, built once per test binary; or the
/// library `KSMAUTO_TEST_LIB` names (to run the suite against another build,
/// e.g. an older commit's, to see a regression test fail there).
pub fn lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        if let Some(other) = std::env::var_os(env::TEST_LIB) {
            return PathBuf::from(other);
        }
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--lib", "--quiet"])
            .current_dir(repo())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --release failed");
        let lib = target_dir().join("release/libksmauto.so");
        assert!(lib.exists(), "{} missing", lib.display());
        lib
    })
}

/// Compiles `source` (relative to the repository) into an executable in
/// `target/ctests/`, with `include/` on the include path and `extra` flags
/// after the source (libraries). Compiled once per binary and name.
pub fn compile_c(source: &str, extra: &[&str]) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src = repo().join(source);
    let stem = Path::new(source)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let suffix = if extra.is_empty() {
        String::new()
    } else {
        format!("-{}", extra.join("").replace(['-', '/', '.'], ""))
    };
    let dir = target_dir().join("ctests");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{stem}{suffix}-{}", std::process::id()));
    if !out.exists() {
        let status = Command::new("cc")
            .args(["-O1", "-g", "-Wall", "-pthread", "-I"])
            .arg(repo().join("include"))
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .args(extra)
            .status()
            .expect("run cc");
        assert!(status.success(), "compiling {source} failed");
    }
    out
}

/// How to run a program: without the library, or preloaded with settings.
#[derive(Clone, Debug)]
pub struct Run {
    pub preload: bool,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
}

impl Run {
    pub fn without() -> Run {
        Run {
            preload: false,
            env: vec![],
            timeout: Duration::from_secs(120),
        }
    }

    pub fn with(mode: &str) -> Run {
        let mut r = Run {
            preload: true,
            env: vec![],
            timeout: Duration::from_secs(120),
        };
        if mode != "default" {
            r.env.push((env::MODE.into(), mode.into()));
        }
        r
    }

    pub fn env(mut self, k: &str, v: &str) -> Run {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        // Start from a clean slate: the test runner's own KSMAUTO_* must not leak in.
        for (k, _) in std::env::vars() {
            if k.starts_with(env::PREFIX) || k == "LD_PRELOAD" {
                cmd.env_remove(k);
            }
        }
        if self.preload {
            cmd.env("LD_PRELOAD", lib());
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs to completion (killed after the timeout) and returns the output.
    pub fn output(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
        let mut cmd = self.command(program);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        run_with_timeout(cmd, self.timeout)
    }
}

pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !flag.load(std::sync::atomic::Ordering::Relaxed) {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    let out = child.wait_with_output().expect("wait");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    out
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The value after `key ` on a `key value` line of `output`.
pub fn field(output: &str, key: &str) -> Option<String> {
    output.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(' '))
            .map(|v| v.trim().to_string())
    })
}

/// A `key 0|1` line of `output` as a bool (panics if missing or other).
pub fn flag(output: &str, key: &str) -> bool {
    match field(output, key).as_deref() {
        Some("1") => true,
        Some("0") => false,
        other => panic!("`{key}` is {other:?} in:\n{output}"),
    }
}

/// Runs `program args` under `run`, asserts exit status 0, returns stdout.
pub fn run_ok(program: &Path, run: &Run, args: &[&str]) -> String {
    let out = run.output(program, args);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{} {args:?}: {:?}\n{stdout}\n{}",
        program.display(),
        out.status,
        text(&out.stderr)
    );
    stdout
}

// The hook list the library itself expands (`with_hook_list!`).
include!("../../src/hook_list.rs");

/// Takes the names of the counted hooks from the library's hook list.
macro_rules! hook_names {
    (
        counted {
            $($name:ident: $variant:ident = $kind:ident fn($($arg:ty),*) -> $ret:ty;)*
        }
        forwarded { $($forwarded:tt)* }
        exec { $($exec:tt)* }
        exec_variadic { $($exec_variadic:tt)* }
    ) => {
        /// Every function src/api.rs interposes and counts, by its name in
        /// the stats JSON, in the report's order (the malloc family first).
        pub const HOOK_NAMES: [&str; [$(stringify!($name)),*].len()] = [$(stringify!($name)),*];
    };
}

with_hook_list!(hook_names);

pub fn field_u64(output: &str, key: &str) -> u64 {
    field(output, key)
        .unwrap_or_else(|| panic!("no `{key}` in output:\n{output}"))
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------
// ksmd: saved, set and put back through `ksmauto ksmd`, its one owner.

const KSM: &str = "/sys/kernel/mm/ksm";

struct KsmdState {
    users: usize,
    /// Where `ksmauto ksmd save` put the settings found.
    saved: Option<PathBuf>,
    keeper: Option<std::process::Child>,
}

static KSMD: Mutex<KsmdState> = Mutex::new(KsmdState {
    users: 0,
    saved: None,
    keeper: None,
});
static ONE_KSM_TEST_AT_A_TIME: Mutex<()> = Mutex::new(());

/// While held, ksmd runs with fast scanning and without smart_scan, and no
/// other KSM test of this binary runs.
pub struct KsmdGuard {
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// `target/debug/ksmauto`, built once per test binary (like [`lib`]): the
/// CLI owns ksmd's settings, so the harness saves, sets and restores them
/// through it.
pub fn cli() -> &'static Path {
    static CLI: OnceLock<PathBuf> = OnceLock::new();
    CLI.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "ksmauto-cli", "--bin", "ksmauto", "--quiet"])
            .current_dir(repo())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p ksmauto-cli failed");
        let cli = target_dir().join("debug/ksmauto");
        assert!(cli.exists(), "{} missing", cli.display());
        cli
    })
}

/// `ksmauto ksmd ARGS…`: Ok, or its error line.
fn ksmauto_ksmd(args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let out = Command::new(cli())
        .arg("ksmd")
        .args(args)
        .env_remove(env::SYSFS_KSM)
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cli().display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(text(&out.stderr).trim().to_string())
    }
}

/// A sleeping process whose memory is mergeable (the preload in process mode).
fn spawn_keeper() -> Option<std::process::Child> {
    let mut cmd = Run::with("process").env(env::STATS, "off").command("sleep");
    cmd.arg("3600").stdout(Stdio::null()).stderr(Stdio::null());
    cmd.spawn().ok()
}

fn read_ksm(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("{KSM}/{name}"))
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn full_scans() -> u64 {
    read_ksm("full_scans")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Waits until ksmd completes `n` more full scans (panics after `timeout`).
pub fn wait_full_scans(n: u64, timeout: Duration) {
    let start = full_scans();
    let t0 = Instant::now();
    while full_scans() < start + n {
        assert!(
            t0.elapsed() < timeout,
            "ksmd did not complete {n} full scans in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn skip_or_fail(why: &str) -> Option<KsmdGuard> {
    if std::env::var(env::REQUIRE_KSM).as_deref() == Ok("1") {
        panic!("KSM is required (KSMAUTO_REQUIRE_KSM=1) but unusable: {why}");
    }
    eprintln!("\n!!!!! SKIPPED: KSM test not run: {why} (set KSMAUTO_REQUIRE_KSM=1 to make this a failure) !!!!!\n");
    None
}

/// Turns ksmd on for the caller, or explains why it cannot (see module doc):
/// `ksmauto ksmd save`, then `ksmauto ksmd --on --scan fast` (2000 pages
/// every 10 ms, smart_scan 0, advisor off).
pub fn ksmd() -> Option<KsmdGuard> {
    if !Path::new(KSM).join("run").exists() {
        return skip_or_fail("this kernel has no KSM (/sys/kernel/mm/ksm/run missing)");
    }
    let serial = ONE_KSM_TEST_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut st = KSMD.lock().unwrap_or_else(|e| e.into_inner());
    if st.users == 0 {
        let file = target_dir().join(format!("ksmd-saved-{}", std::process::id()));
        if let Err(e) = ksmauto_ksmd(&["save".as_ref(), file.as_os_str()]) {
            drop(st);
            return skip_or_fail(&format!("ksmauto ksmd save: {e}"));
        }
        if let Err(e) = ksmauto_ksmd(&["--on", "--scan", "fast"].map(std::ffi::OsStr::new)) {
            let _ = ksmauto_ksmd(&["restore".as_ref(), file.as_os_str()]);
            let _ = std::fs::remove_file(&file);
            drop(st);
            return skip_or_fail(&format!("ksmauto ksmd --on --scan fast: {e} (needs root)"));
        }
        st.saved = Some(file);
        st.keeper = spawn_keeper();
    }
    st.users += 1;
    Some(KsmdGuard { _serial: serial })
}

impl Drop for KsmdGuard {
    fn drop(&mut self) {
        let mut st = KSMD.lock().unwrap_or_else(|e| e.into_inner());
        st.users -= 1;
        if st.users == 0 {
            if let Some(mut keeper) = st.keeper.take() {
                let _ = keeper.kill();
                let _ = keeper.wait();
            }
            // `ksmauto ksmd restore` puts every setting back in its one
            // order: ksmd stopped first when it must stop, started last.
            if let Some(file) = st.saved.take() {
                if let Err(e) = ksmauto_ksmd(&["restore".as_ref(), file.as_os_str()]) {
                    eprintln!(
                        "\n!!!!! ksmd not restored: {e} (saved in {}) !!!!!\n",
                        file.display()
                    );
                } else {
                    let _ = std::fs::remove_file(&file);
                }
            }
        }
    }
}

/// `ksm_merging_pages + ksm_zero_pages` of a live process.
pub fn merged_pages_of(pid: u32) -> u64 {
    let s = std::fs::read(format!("/proc/{pid}/ksm_stat")).unwrap_or_default();
    KsmStat::parse(&s).merged_pages()
}

/// VMAs in a maps dump, leaving out libksmauto.so's own.
pub fn program_vmas(maps: &str) -> usize {
    let mut own_end = None;
    let mut count = 0;
    for line in maps.lines() {
        let range = line.split_whitespace().next().unwrap_or("");
        let (start, end) = range.split_once('-').unwrap_or(("", ""));
        if line.contains("libksmauto.so") {
            own_end = Some(end.to_string());
            continue;
        }
        let anon = line.split_whitespace().nth(4) == Some("0");
        if anon && own_end.as_deref() == Some(start) {
            own_end = None;
            continue; // the library's zero-fill (bss) mapping
        }
        own_end = None;
        count += 1;
    }
    count
}
