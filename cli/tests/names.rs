//! A process whose name, or the path of a file it maps, is not UTF-8 is
//! seen by every command (`cli/tests/c/badname.c`: comm `\xff\xfeworker`, a
//! mapped file named `\xff\xfedata-PID`, 512 mergeable pages). Any process
//! can name itself so with one `prctl`; before, the CLI read `/proc/PID/stat`,
//! `status`, `maps` and `smaps` as UTF-8 text, the read failed and the
//! process was taken for gone: `status` left it (and with it the warning
//! that KSM merges across users) out, `compare` left such a setsid worker
//! running, `run` lost it, `estimate` and `doctor` exited 1.
//!
//! Such a name is shown with each byte that is not UTF-8 as `\xNN`, in text
//! and in JSON and Prometheus alike.

use ksmauto_testsupport as common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The name as every output shows it.
const SHOWN: &str = r"\xff\xfeworker";

/// The tests look at machine-wide state (every KSM process): one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn have_ksm() -> bool {
    Path::new("/sys/kernel/mm/ksm/run").exists()
}

/// A directory for the badly named files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("ksmauto-names-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A started process, killed when dropped.
struct Proc {
    child: Child,
    pid: i32,
}

impl Drop for Proc {
    fn drop(&mut self) {
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn badname() -> PathBuf {
    common::compile_c("cli/tests/c/badname.c", &[])
}

/// Waits for the `ready PID` line on the child's stderr.
fn ready(mut child: Child) -> Proc {
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = line
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("badname said {line:?}"));
    Proc { child, pid }
}

/// `badname MODE DIR` without the preload, once named and mapped.
fn start(mode: &str, dir: &Path) -> Proc {
    let child = Command::new(badname())
        .arg(mode)
        .arg(dir)
        .env_remove("LD_PRELOAD")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let p = ready(child);
    let comm = std::fs::read(format!("/proc/{}/comm", p.pid)).unwrap();
    assert_eq!(comm, b"\xff\xfeworker\n");
    p
}

/// `ksmauto ARGS`: exit code, stdout, stderr.
fn ksmauto(args: &[&str]) -> (i32, String, String) {
    common::run_tool(env!("CARGO_BIN_EXE_ksmauto"), args)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.lines().last().unwrap_or(""))
        .unwrap_or_else(|_| panic!("no JSON: {text}"))
}

/// `madvise_only` as root: a process of a second user (root) with
/// resident mergeable memory and a plain name.
fn start_root_mergeable() -> Proc {
    let prog = common::compile_c("cli/tests/c/madvise_only.c", &[]);
    let mut child = Command::new(prog)
        .env_remove("LD_PRELOAD")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("ready"), "madvise_only said {line:?}");
    let pid = child.id() as i32;
    Proc { child, pid }
}

/// The Prometheus sample lines of `metric` for `pid`.
fn prom_lines<'a>(text: &'a str, metric: &str, pid: i32) -> Vec<&'a str> {
    let pid = format!("pid=\"{pid}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&pid))
        .collect()
}

/// Every output of `status` lists the process of nobody named in bytes
/// that are not UTF-8, with its user, and the trust-domain warning that
/// KSM merges across root and nobody. Before, it was left out of each, and
/// the warning with it: another user's process could hide from the view.
#[test]
fn status_lists_a_process_named_in_bytes_that_are_not_utf8_and_its_trust_domain() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !have_ksm() || unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs KSM and root (to start a process as nobody)");
        return;
    }
    let dir = TempDir::new("status");
    let _root = start_root_mergeable();
    let nobody = start("nobody", &dir.0);
    let (code, out, err) = ksmauto(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    let p = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == nobody.pid)
        .unwrap_or_else(|| panic!("pid {} not listed: {v}", nobody.pid));
    assert_eq!(p["comm"], SHOWN, "{p}");
    assert_eq!(p["user"], "nobody", "{p}");
    assert!(p["mergeable_bytes"].as_u64().unwrap() >= 512 * 4096, "{p}");
    let warning = v["trust_domains"]["warning"]
        .as_str()
        .unwrap_or_else(|| panic!("no warning: {v}"));
    assert!(
        warning.contains("root (") && warning.contains("nobody ("),
        "{warning}"
    );

    let (code, text, err) = ksmauto(&["status"]);
    assert_eq!(code, 0, "{err}");
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{} ", nobody.pid)))
        .unwrap_or_else(|| panic!("no row of {}: {text}", nobody.pid));
    assert!(row.contains(SHOWN) && row.contains("nobody"), "{row}");
    assert!(
        text.lines().any(|l| l
            .starts_with("warning: KSM merges across these trust domains: users ")
            && l.contains("nobody (")),
        "{text}"
    );

    let (code, prom, err) = ksmauto(&["status", "--prometheus"]);
    assert_eq!(code, 0, "{err}");
    let rows = prom_lines(&prom, "ksm_process_mergeable_bytes", nobody.pid);
    assert!(
        rows.len() == 1 && rows[0].contains(r#"comm="\\xff\\xfeworker""#),
        "{rows:?}\n{prom}"
    );
    assert!(prom.contains("\nksm_trust_domains_crossed 1\n"), "{prom}");
    // The exposition text stays readable by a real parser.
    let scrape = prometheus_parse::Scrape::parse(prom.lines().map(|l| Ok(l.to_string())))
        .expect("exposition text parses");
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "ksm_process_mergeable_bytes"
                && s.labels.get("pid") == Some(nobody.pid.to_string().as_str())),
        "{prom}"
    );

    let file = dir.0.join("ksm.prom");
    let (code, _, err) = ksmauto(&["status", "--textfile", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        prom_lines(&written, "ksm_process_mergeable_bytes", nobody.pid).len(),
        1,
        "{written}"
    );
    assert!(
        written.contains("\nksm_trust_domains_crossed 1\n"),
        "{written}"
    );
}

/// `doctor PID`, `doctor --all` and `estimate PID` read a process that maps
/// a file whose path is not UTF-8. Before, `doctor` and `estimate` exited 1
/// ("stream did not contain valid UTF-8") and `doctor --all` left it out.
#[test]
fn doctor_and_estimate_read_a_process_that_maps_a_path_that_is_not_utf8() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !have_ksm() {
        eprintln!("SKIPPED: no KSM");
        return;
    }
    let dir = TempDir::new("doctor");
    let p = start("stay", &dir.0);
    let pid = p.pid.to_string();

    let (code, out, err) = ksmauto(&["doctor", &pid, "--json"]);
    assert_eq!(code, 0, "{err}");
    let d = json(&out);
    assert_eq!(d["comm"], SHOWN, "{d}");
    assert!(
        d["memory"]["mergeable"].as_u64().unwrap() >= 512 * 4096,
        "{d}"
    );
    let (code, text, err) = ksmauto(&["doctor", &pid]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.starts_with(&format!("pid {pid} ({SHOWN}): ")),
        "{text}"
    );
    let (code, out, err) = ksmauto(&["doctor", "--all", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("\"pid\":{pid},")) || out.contains(&format!("\"pid\": {pid},")),
        "pid {pid} not in doctor --all: {out}"
    );

    let (code, out, err) = ksmauto(&["estimate", &pid, "--json"]);
    assert_eq!(code, 0, "{err}");
    let e = json(&out);
    // 512 pages alike: 511 of them are duplicates (or merged already).
    let pages = |k: &str| e[k].as_u64().unwrap_or(0);
    assert!(
        pages("ideal_savings_pages") + pages("already_saved_pages") >= 511,
        "{e}"
    );
    assert_eq!(e["processes"][0]["comm"], SHOWN, "{e}");
}

/// `compare` sees a worker that called `setsid` and then named itself in
/// bytes that are not UTF-8, counts it, and stops it at the end. Before,
/// it saw one process per copy, and the worker was left running, orphaned
/// to init.
#[test]
fn compare_counts_and_stops_a_setsid_worker_named_in_bytes_that_are_not_utf8() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_ksm) = common::ksmd() else { return };
    let dir = TempDir::new("compare");
    let pids = dir.0.join("pids");
    // Output into files: a worker left running must not keep a pipe open.
    let (out, err) = (dir.0.join("out"), dir.0.join("err"));
    let status = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .args(["compare", "--workers", "1", "--mode", "process"])
        .args(["--settle-timeout", "30", "--json", "--lib"])
        .arg(common::lib())
        .arg("--")
        .arg(badname())
        .arg("setsid")
        .arg(&dir.0)
        .arg(&pids)
        .env_remove("LD_PRELOAD")
        .env_remove("KSMAUTO_SYSFS_KSM")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .status()
        .unwrap();
    let stdout = std::fs::read_to_string(&out).unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap();
    let workers: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    // Whatever compare left running goes now, before any assertion.
    let left: Vec<i32> = workers
        .iter()
        .copied()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/comm")).is_ok_and(|c| c == b"\xff\xfeworker\n")
        })
        .collect();
    for &pid in &left {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(workers.len(), 2, "one setsid worker per phase: {stderr}");
    let v = json(&stdout);
    for phase in ["without", "with"] {
        assert_eq!(v[phase]["last"]["processes"], 2, "{phase}: {v}");
        let named = v[phase]["per_process"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["comm"] == SHOWN)
            .count();
        assert_eq!(named, 1, "{phase}: {v}");
    }
    assert!(left.is_empty(), "setsid workers left running: {left:?}");
}

/// `run` samples the command that named itself in bytes that are not
/// UTF-8 while it runs: its name (escaped), its samples, the library found
/// in its memory map. Before, it vanished from the tree at its `prctl`:
/// no samples, the name it had before, or "ended before the first look".
#[test]
fn run_samples_a_process_named_in_bytes_that_are_not_utf8() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_ksm) = common::ksmd() else { return };
    let dir = TempDir::new("run");
    let child = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .args(["run", "--mode", "process", "--json", "--lib"])
        .arg(common::lib())
        .arg("--")
        .arg(badname())
        .arg("stay")
        .arg(&dir.0)
        .env_remove("LD_PRELOAD")
        .env_remove("KSMAUTO_SYSFS_KSM")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut p = ready(child);
    // Alive until ksmd has merged its pages, and for twenty of `run`'s looks
    // (one each SAMPLE_INTERVAL, 100 ms) after it said "ready" (named,
    // mapped): with ksmd at the tests' pace its 512 pages can merge in
    // less than one interval, and a kill before `run`'s next look left
    // only a look from inside its exec (its file's name, no library yet).
    let t0 = Instant::now();
    let looks = Duration::from_secs(2);
    while common::merged_pages_of(p.pid as u32) < 256 || t0.elapsed() < looks {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "ksmd did not merge pid {}",
            p.pid
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    common::wait_full_scans(2, Duration::from_secs(60));
    // Killed: no exit report, so whatever `run` knows it sampled.
    unsafe { libc::kill(p.pid, libc::SIGKILL) };
    let o = common::run_with_timeout(
        {
            let mut c = Command::new("cat");
            c.stdin(p.child.stdout.take().unwrap())
                .stdout(Stdio::piped());
            c
        },
        Duration::from_secs(60),
    );
    let status = p.child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGKILL),
        "run exits as the command"
    );
    let v = json(&common::text(&o.stdout));
    let entry = v["per_process"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pid"] == p.pid)
        .unwrap_or_else(|| panic!("pid {} missing: {v}", p.pid));
    assert_eq!(entry["comm"], SHOWN, "{entry}");
    assert!(entry["samples"].as_u64().unwrap() >= 1, "{entry}");
    assert_eq!(entry["figures_from"], "sample", "{entry}");
    assert_eq!(entry["covered"], "library", "{entry}");
    assert_eq!(entry["end"], "killed", "{entry}");
}
