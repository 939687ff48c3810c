//! The ksmd guard: fast scanning for KSM tests, one KSM test at a time,
//! every setting put back afterwards — through `ksmauto ksmd hold`, so a
//! guard takes part in the record of holds that overlap (test binaries of
//! two checkouts, a `scripts/demo`, CI's hold): the settings found before
//! the first hold come back when the last one ends.

use crate::build::{cli, lib};
use crate::run::text;
use ksmauto_contract::env;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// ksmd: held through `ksmauto ksmd hold`, its one owner.

const KSM: &str = "/sys/kernel/mm/ksm";

/// The running `ksmauto ksmd hold --on --scan fast`: it ends (and puts
/// ksmd back) when its command, a preloaded `cat` reading this pipe, sees
/// the pipe close — also when this test binary dies however it dies.
struct Hold {
    child: Child,
    stdin: Option<ChildStdin>,
}

struct KsmdState {
    users: usize,
    hold: Option<Hold>,
}

static KSMD: Mutex<KsmdState> = Mutex::new(KsmdState {
    users: 0,
    hold: None,
});
static ONE_KSM_TEST_AT_A_TIME: Mutex<()> = Mutex::new(());

/// While held, ksmd runs with fast scanning and without smart_scan, and no
/// other KSM test of this binary runs.
pub struct KsmdGuard {
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// Starts the hold; once its command says "held", ksmd runs at the fast
/// pace. Its command is the keeper: a process whose memory is mergeable
/// (the preload in process mode), as ksmd does not scan (and `full_scans`
/// stands still) while no process has any.
fn start_hold() -> Result<Hold, String> {
    let mut cmd = Command::new(cli());
    for (k, _) in std::env::vars() {
        if k.starts_with(env::PREFIX) || k == "LD_PRELOAD" {
            cmd.env_remove(k);
        }
    }
    cmd.args(["ksmd", "hold", "--on", "--scan", "fast", "--", "env"])
        .arg(format!("LD_PRELOAD={}", lib().display()))
        .arg(format!("{}=process", env::MODE))
        .arg(format!("{}=off", env::STATS))
        .args(["sh", "-c", "echo held; exec cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", cli().display()))?;
    let stdin = child.stdin.take();
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    if line.trim() == "held" {
        return Ok(Hold { child, stdin });
    }
    // It ended before its command ran (not root, no KSM): its error.
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    let _ = child.wait();
    Err(err.trim().to_string())
}

impl Hold {
    /// Closes the keeper's stdin and waits for the hold to put ksmd back.
    fn end(mut self) {
        drop(self.stdin.take());
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(120) {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = Vec::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_end(&mut err);
                }
                if !status.success() {
                    eprintln!(
                        "\n!!!!! ksmd not put back: ksmauto ksmd hold ended with {status}: {} !!!!!\n",
                        text(&err).trim()
                    );
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "\n!!!!! ksmauto ksmd hold did not end in 120 s: ksmd may not be put back !!!!!\n"
        );
    }
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
/// `ksmauto ksmd hold --on --scan fast` (2000 pages every 10 ms,
/// smart_scan 0, advisor off) while the caller keeps the guard.
pub fn ksmd() -> Option<KsmdGuard> {
    if !Path::new(KSM).join("run").exists() {
        return skip_or_fail("this kernel has no KSM (/sys/kernel/mm/ksm/run missing)");
    }
    let serial = ONE_KSM_TEST_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut st = KSMD.lock().unwrap_or_else(|e| e.into_inner());
    if st.users == 0 {
        match start_hold() {
            Ok(hold) => st.hold = Some(hold),
            Err(e) => {
                drop(st);
                return skip_or_fail(&format!(
                    "ksmauto ksmd hold --on --scan fast: {e} (needs root)"
                ));
            }
        }
    }
    st.users += 1;
    Some(KsmdGuard { _serial: serial })
}

impl Drop for KsmdGuard {
    fn drop(&mut self) {
        let mut st = KSMD.lock().unwrap_or_else(|e| e.into_inner());
        st.users -= 1;
        if st.users == 0 {
            if let Some(hold) = st.hold.take() {
                hold.end();
            }
        }
    }
}

/// A counter of ksmd's sysfs directory (`pages_scanned`, `pages_shared`…).
pub fn ksm_counter(name: &str) -> Option<u64> {
    read_ksm(name)?.parse().ok()
}

/// CPU time (user + system) of the ksmd kernel thread so far, read by the
/// test itself from `/proc/PID/stat` (the contract's parser): the figure
/// to hold what `ksmauto` reports against. `None` without a ksmd thread.
pub fn ksmd_cpu_seconds() -> Option<f64> {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let text = std::fs::read(e.path().join("stat")).ok()?;
        let stat = ksmauto_contract::proc::Stat::parse(&text)?;
        if stat.comm != b"ksmd" || !stat.is_kernel_thread() {
            return None;
        }
        Some(stat.cpu_ticks()? as f64 / tick)
    })
}
