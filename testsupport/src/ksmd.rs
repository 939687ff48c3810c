//! The ksmd guard: fast scanning for KSM tests, one KSM test at a time,
//! every setting put back afterwards (through `ksmauto ksmd`).

use crate::build::{cli, target_dir};
use crate::run::{text, Run};
use ksmauto_contract::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
