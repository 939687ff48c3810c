//! `ksmauto run` as root in front of a tree that plants things in its
//! report directory (world-writable, sticky: a command that drops its
//! privileges must be able to add its report). A process that dropped to
//! nobody (`cli/tests/c/plant.c`) plants links, FIFOs, directories, huge
//! files and endless reports: `run` never follows a link, never opens a
//! FIFO, never reads a file that has other names, reads each file up to a
//! cap, finishes promptly with its summary, and ends on SIGTERM whatever
//! it is doing, its directory removed.

use ksmauto_testsupport as common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Reports per file `run` reads (`report_dir::MAX_REPORTS_PER_FILE`).
const MAX_REPORTS_PER_FILE: usize = 4096;

/// Pids of the report lines `plant lines` writes start here (see plant.c).
const FAKE_PIDS: i64 = 10_000_000;

fn needs_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests are about run started by root"
    );
}

/// A directory of the test's own (on the file system of `run`'s report
/// directory, so a hard link can reach it), traversable by nobody.
fn scratch(name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let d = std::env::temp_dir().join(format!("ksmauto-run-planted-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A root-owned file with `mode` holding one report line whose `mode` is
/// `marker`: if `run` ever reads it, the marker shows in its JSON.
fn root_file(dir: &Path, name: &str, mode: u32, marker: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!("{{\"pid\":4999999,\"start_time\":3,\"mode\":\"{marker}\"}}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// `ksmauto run --json` of the planting program, running.
struct Running {
    pid: i32,
    stderr: mpsc::Receiver<String>,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
    /// Held unread by a test that wants `run` to block writing its summary.
    unread_stdout: Option<ChildStdout>,
}

/// How `run` ended.
struct Ended {
    /// Raw wait status; `None` when the test had to kill it.
    status: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
    max_rss_kib: i64,
}

impl Ended {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|_| panic!("not JSON; stderr: {}", self.stderr))
    }

    fn exit_code(&self) -> Option<i32> {
        let s = self.status?;
        libc::WIFEXITED(s).then(|| libc::WEXITSTATUS(s))
    }
}

fn start(actions: &[&str], read_stdout: bool) -> Running {
    let plant = common::compile_c("cli/tests/c/plant.c", &[]);
    let mut c = Command::new(env!("CARGO_BIN_EXE_ksmauto"));
    c.args(["run", "--json", "--mode", "process", "--lib"])
        .arg(common::lib())
        .arg("--")
        .arg(plant)
        .args(actions)
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut out = child.stdout.take().unwrap();
    let (stdout, unread_stdout) = if read_stdout {
        let reader = std::thread::spawn(move || {
            let mut v = vec![];
            let _ = out.read_to_end(&mut v);
            v
        });
        (Some(reader), None)
    } else {
        (None, Some(out))
    };
    // Reaped below with wait4, for its resource use.
    std::mem::forget(child);
    Running {
        pid,
        stderr: rx,
        stdout,
        unread_stdout,
    }
}

impl Running {
    /// Lines of its stderr until one starts with `prefix` (that one
    /// returned), or `None` after `timeout`.
    fn wait_for_line(&self, prefix: &str, seen: &mut String, timeout: Duration) -> Option<String> {
        let until = Instant::now() + timeout;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            let Ok(line) = self.stderr.recv_timeout(left) else {
                return None;
            };
            seen.push_str(&line);
            seen.push('\n');
            if line.starts_with(prefix) {
                return Some(line);
            }
        }
        None
    }

    /// Waits for its end, killing it after `timeout` (then `status` is None).
    fn wait(mut self, mut stderr: String, timeout: Duration) -> Ended {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let pid = self.pid;
        let killed = Arc::new(AtomicBool::new(false));
        let killed_flag = killed.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < timeout {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !flag.load(Ordering::Relaxed) {
                killed_flag.store(true, Ordering::Relaxed);
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
        let mut status = 0;
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        done.store(true, Ordering::Relaxed);
        assert_eq!(rc, pid, "wait4");
        drop(self.unread_stdout.take());
        let stdout = self
            .stdout
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            stderr.push_str(&line);
            stderr.push('\n');
        }
        Ended {
            status: (!killed.load(Ordering::Relaxed)).then_some(status),
            stdout,
            stderr,
            max_rss_kib: usage.ru_maxrss,
        }
    }
}

/// Runs the planting program to its end (a minute at most).
fn run_planted(actions: &[&str]) -> Ended {
    needs_root();
    start(actions, true).wait(String::new(), Duration::from_secs(60))
}

/// The run ended by itself, with status 0, and the planting program (known
/// by its own report, written as nobody) is in the summary as usual.
fn assert_reported_normally(e: &Ended) -> serde_json::Value {
    assert!(e.status.is_some(), "run never ended: {}", e.stderr);
    assert_eq!(e.exit_code(), Some(0), "{}", e.stderr);
    let v = e.json();
    let plant = v["per_process"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["exe"].as_str().unwrap_or("").contains("plant"))
        .unwrap_or_else(|| panic!("the planting program is missing: {v}"));
    assert_eq!(plant["mode"], "process", "its own report was read: {plant}");
    v
}

fn notes(v: &serde_json::Value) -> String {
    v["notes"]
        .as_array()
        .unwrap_or_else(|| panic!("no notes: {v}"))
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A link to a FIFO, and a FIFO: `run` opened the link's target (after
/// checking the link's owner: nobody, a user of the tree) and blocked in
/// `open()` for good; the FIFO itself blocked it the same way. Now neither
/// is opened.
#[test]
fn a_planted_fifo_or_a_link_to_one_never_blocks_run() {
    let d = scratch("fifo");
    let fifo = d.join("fifo");
    mkfifo(&fifo);
    let e = run_planted(&[
        "symlink",
        "4000001.json",
        fifo.to_str().unwrap(),
        "fifo",
        "4000002.json",
        "sleep",
        "1000",
    ]);
    let _ = std::fs::remove_dir_all(&d);
    let v = assert_reported_normally(&e);
    let n = notes(&v);
    assert!(
        n.contains("symbolic link") && n.contains("4000001.json"),
        "{n}"
    );
    assert!(
        n.contains("not a regular file") && n.contains("4000002.json"),
        "{n}"
    );
}

/// A link to a file only root may read, holding a report line: `run`
/// followed it as root and put the line in its summary. Now the link is
/// never followed.
#[test]
fn a_link_to_a_root_only_file_is_never_followed() {
    let d = scratch("symlink");
    let secret = root_file(&d, "secret", 0o600, "ROOT-ONLY-SECRET");
    let e = run_planted(&[
        "symlink",
        "4000003.json",
        secret.to_str().unwrap(),
        "sleep",
        "1000",
    ]);
    let _ = std::fs::remove_dir_all(&d);
    assert!(!e.stderr.contains("ROOT-ONLY-SECRET"), "{}", e.stderr);
    assert!(
        !String::from_utf8_lossy(&e.stdout).contains("ROOT-ONLY-SECRET"),
        "root's file was read through the link"
    );
    let v = assert_reported_normally(&e);
    assert!(notes(&v).contains("4000003.json"), "{v}");
}

/// A hard link to root's file passes the owner check (root's files are
/// read: a root process of the tree writes its report as root). One with
/// other names is never a report the library wrote (it creates its file
/// new), so it is not read. `fs.protected_hardlinks` (1 on most systems)
/// lets nobody link only a file it may read and write: a root-owned 0666
/// file is always linkable, and a root-only 0600 file too where the sysctl
/// is 0 (then tried as well).
#[test]
fn a_hard_link_to_another_users_file_is_never_read() {
    let d = scratch("hardlink");
    let shared = root_file(&d, "shared", 0o666, "ROOT-FILE-BY-HARD-LINK");
    let secret = root_file(&d, "secret", 0o600, "ROOT-ONLY-BY-HARD-LINK");
    let protected = std::fs::read_to_string("/proc/sys/fs/protected_hardlinks")
        .map(|s| s.trim() != "0")
        .unwrap_or(true);
    let e = run_planted(&[
        "link",
        "4000004.json",
        shared.to_str().unwrap(),
        "link",
        "4000005.json",
        secret.to_str().unwrap(),
        "sleep",
        "1000",
    ]);
    let _ = std::fs::remove_dir_all(&d);
    assert!(e.stderr.contains("linked 4000004.json"), "{}", e.stderr);
    if protected {
        assert!(e.stderr.contains("not linked 4000005.json"), "{}", e.stderr);
    } else {
        assert!(e.stderr.contains("\nlinked 4000005.json"), "{}", e.stderr);
    }
    let out = String::from_utf8_lossy(&e.stdout);
    assert!(
        !out.contains("ROOT-FILE-BY-HARD-LINK"),
        "read through a hard link"
    );
    assert!(
        !out.contains("ROOT-ONLY-BY-HARD-LINK"),
        "read through a hard link"
    );
    let v = assert_reported_normally(&e);
    let n = notes(&v);
    assert!(n.contains("hard link") && n.contains("4000004.json"), "{n}");
}

/// A sparse file of 1 GiB (no data, no newline) and a directory: `run`
/// read the whole file into memory at once. Now a file over the cap is
/// not read at all (its peak memory stays far below the file's size), and
/// both are named in a note.
#[test]
fn a_huge_sparse_file_or_a_directory_is_not_read() {
    let e = run_planted(&[
        "sparse",
        "4000006.json",
        "1073741824",
        "dir",
        "4000007.json",
        "sleep",
        "1000",
    ]);
    let v = assert_reported_normally(&e);
    assert!(
        e.max_rss_kib < 256 * 1024,
        "run's peak memory {} KiB: it read the sparse file",
        e.max_rss_kib
    );
    let n = notes(&v);
    assert!(
        n.contains("larger than") && n.contains("4000006.json"),
        "{n}"
    );
    assert!(
        n.contains("not a regular file") && n.contains("4000007.json"),
        "{n}"
    );
}

/// 200,000 report lines in one file: `run` looked through every process
/// it knew for each line (and made each a process of its own), quadratic
/// work (100k lines took 9.5 s). Now each line is found through an index,
/// and a file gives at most MAX_REPORTS_PER_FILE reports (far more than the
/// processes that can hold one pid during a run), the rest named in a
/// note. Asserted by the count read, not by time.
#[test]
fn a_file_of_endless_reports_is_read_up_to_a_cap() {
    let e = run_planted(&["lines", "4000008.json", "200000", "sleep", "1000"]);
    let v = assert_reported_normally(&e);
    let fake = v["per_process"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["pid"].as_i64().unwrap() >= FAKE_PIDS)
        .count();
    assert_eq!(fake, MAX_REPORTS_PER_FILE, "reports read from the file");
    let n = notes(&v);
    assert!(
        n.contains(&format!("more than {MAX_REPORTS_PER_FILE} reports"))
            && n.contains("4000008.json"),
        "{n}"
    );
}

/// SIGTERM to `run` while the command sleeps and a link to a FIFO waits in
/// the report directory: forwarded, it ends the command, and `run` ends
/// with it (128+15), its summary printed and its directory removed. Before,
/// `run` was blocked in `open()` of the FIFO, and SIGTERM (caught, to be
/// forwarded) could not end it.
#[test]
fn sigterm_ends_run_while_a_planted_fifo_waits() {
    needs_root();
    let d = scratch("sigterm");
    let fifo = d.join("fifo");
    mkfifo(&fifo);
    let r = start(
        &[
            "symlink",
            "4000009.json",
            fifo.to_str().unwrap(),
            "sleep",
            "1000",
            "ready",
            "sleep",
            "600000",
        ],
        true,
    );
    let mut seen = String::new();
    let planted = r.wait_for_line("planted ", &mut seen, Duration::from_secs(60));
    unsafe { libc::kill(r.pid, libc::SIGTERM) };
    let e = r.wait(seen, Duration::from_secs(60));
    let _ = std::fs::remove_dir_all(&d);
    let reports = PathBuf::from(planted.expect("planted").strip_prefix("planted ").unwrap());
    assert!(e.status.is_some(), "SIGTERM did not end run: {}", e.stderr);
    assert_eq!(e.exit_code(), Some(128 + libc::SIGTERM), "{}", e.stderr);
    assert!(!reports.exists(), "{} left behind", reports.display());
    let v = e.json();
    assert_eq!(v["exit_code"], 128 + libc::SIGTERM, "{v}");
}

/// Whether `pid` is blocked writing into a full pipe.
fn writing_to_a_full_pipe(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/wchan")).is_ok_and(|w| w.contains("pipe_write"))
}

/// `run` blocked writing its summary into a pipe nobody reads (a stuck
/// step: its tree has ended, nothing is left to forward to): SIGTERM ends
/// it, its directory removed, as the signal would end any program. Before,
/// the signal was caught and only asked to stop waiting for the tree, and
/// `run` stayed blocked for good.
#[test]
fn sigterm_ends_run_stuck_in_a_step() {
    needs_root();
    // Some thousand processes (the fake reports): a summary well over a
    // pipe's 64 KiB.
    let r = start(
        &["lines", "4000010.json", "20000", "ready", "sleep", "1000"],
        false,
    );
    let mut seen = String::new();
    let planted = r.wait_for_line("planted ", &mut seen, Duration::from_secs(60));
    let until = Instant::now() + Duration::from_secs(120);
    while !writing_to_a_full_pipe(r.pid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(writing_to_a_full_pipe(r.pid), "run never blocked: {seen}");
    unsafe { libc::kill(r.pid, libc::SIGTERM) };
    let e = r.wait(seen, Duration::from_secs(60));
    let reports = PathBuf::from(planted.expect("planted").strip_prefix("planted ").unwrap());
    let status = e
        .status
        .unwrap_or_else(|| panic!("SIGTERM did not end run: {}", e.stderr));
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGTERM,
        "status {status:#x}: {}",
        e.stderr
    );
    assert!(!reports.exists(), "{} left behind", reports.display());
}
