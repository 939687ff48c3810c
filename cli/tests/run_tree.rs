//! `ksmauto run` accounts for every process of a worker pool, however each
//! ends: `_exit`, a signal, `setsid` then an exit reaped by its parent, an
//! exec into a program without the library. None of them writes an exit
//! report; the figures come from `run`'s own samples of the tree.

use ksmauto_contract::proc::Stat;
use ksmauto_testsupport as common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The pool: a parent forks four workers, each filling its own 16 MiB with
/// the same pages; each says `ready KIND PID` on stderr and waits for
/// SIGUSR1. The parent waits for the setsid worker only, then exits 3, so
/// the others are orphans when they end.
const POOL: &str = r#"
import mmap, os, signal, sys
SIZE = 16 << 20
def hold_and_wait(kind, status):
    # Private: Python maps anonymous memory shared by default, which KSM never merges.
    buf = mmap.mmap(-1, SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(SIZE // 4096):
        buf[i * 4096:(i + 1) * 4096] = (i + 1).to_bytes(4, "little") * 1024
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    sys.stderr.write("ready %s %d\n" % (kind, os.getpid()))
    sys.stderr.flush()
    signal.sigwait({signal.SIGUSR1})
    os._exit(status)
if len(sys.argv) > 1:
    hold_and_wait(sys.argv[1], 7)
kids = {}
for kind in ["exit", "killed", "setsid", "exec"]:
    pid = os.fork()
    if pid == 0:
        if kind == "setsid":
            os.setsid()
        if kind == "exec":
            os.execvp("env", ["env", "-u", "LD_PRELOAD", sys.executable, sys.argv[0], "exec"])
        hold_and_wait(kind, {"exit": 4, "killed": 0, "setsid": 5}[kind])
    kids[kind] = pid
sys.stderr.write("parent %d\n" % os.getpid())
sys.stderr.flush()
os.waitpid(kids["setsid"], 0)
sys.exit(3)
"#;

fn wait_gone(pid: i32) {
    for _ in 0..500 {
        if std::fs::metadata(format!("/proc/{pid}/ksm_stat")).is_err() {
            return;
        }
        // A zombie keeps its /proc entry but has no memory any more.
        let s = std::fs::read_to_string(format!("/proc/{pid}/ksm_stat")).unwrap_or_default();
        if !s.contains("ksm_rmap_items") {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("pid {pid} did not end");
}

#[test]
fn run_counts_every_worker_of_a_pool_however_it_ends() {
    let Some(_ksm) = common::ksmd() else { return };
    let dir = std::env::temp_dir().join(format!("ksmauto-run-tree-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("pool.py");
    std::fs::write(&script, POOL).unwrap();
    let lib = common::lib().to_str().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .args([
            "run", "--mode", "process", "--lib", lib, "--json", "--", "python3",
        ])
        .arg(&script)
        .env_remove("LD_PRELOAD")
        .env_remove("KSMAUTO_SYSFS_KSM")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut workers: Vec<(String, i32)> = vec![];
    let mut parent = 0;
    while workers.len() < 4 || parent == 0 {
        let line = lines
            .next()
            .expect("the pool ended before all workers were ready")
            .unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["ready", kind, pid] => workers.push((kind.to_string(), pid.parse().unwrap())),
            ["parent", pid] => parent = pid.parse().unwrap(),
            _ => {}
        }
    }
    let pid_of = |k: &str| workers.iter().find(|w| w.0 == k).unwrap().1;
    // Wait until ksmd has merged the library-covered workers' pages.
    for _ in 0..200 {
        if ["exit", "killed", "setsid"]
            .iter()
            .all(|k| common::merged_pages_of(pid_of(k) as u32) >= 3500)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    common::wait_full_scans(2, Duration::from_secs(60));
    let signal_and_sample = |kind: &str, sig: i32| -> u64 {
        let pid = pid_of(kind);
        let merged = common::merged_pages_of(pid as u32);
        unsafe { libc::kill(pid, sig) };
        wait_gone(pid);
        merged
    };
    let mut sampled = std::collections::HashMap::new();
    // The setsid worker first, while the parent (which reaps it) lives.
    sampled.insert("setsid", signal_and_sample("setsid", libc::SIGUSR1));
    // The parent exits 3 after reaping it; the rest are orphans now.
    wait_gone(parent);
    sampled.insert("exit", signal_and_sample("exit", libc::SIGUSR1));
    sampled.insert("killed", signal_and_sample("killed", libc::SIGKILL));
    sampled.insert("exec", signal_and_sample("exec", libc::SIGUSR1));
    let o = common::run_with_timeout(
        {
            let mut c = Command::new("cat");
            c.stdin(child.stdout.take().unwrap()).stdout(Stdio::piped());
            c
        },
        Duration::from_secs(60),
    );
    let status = child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        status.code(),
        Some(3),
        "run exits with the command's status"
    );
    let stdout = common::text(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|_| panic!("no JSON: {stdout}"));
    let per = v["per_process"].as_array().unwrap();
    let entry = |pid: i32| {
        per.iter()
            .find(|p| p["pid"] == pid)
            .unwrap_or_else(|| panic!("pid {pid} missing: {v}"))
    };
    // How each ended.
    let p = entry(parent);
    assert_eq!(p["end"], "exited", "{p}");
    assert_eq!(p["exit_status"], 3, "{p}");
    assert_eq!(p["reaped_as_subreaper"], false, "{p}");
    let w = entry(pid_of("exit"));
    assert_eq!(w["end"], "exited", "{w}");
    assert_eq!(w["exit_status"], 4, "{w}");
    assert_eq!(w["reaped_as_subreaper"], true, "{w}");
    assert_eq!(
        w["report"],
        serde_json::Value::Null,
        "_exit writes no report: {w}"
    );
    assert_eq!(w["figures_from"], "sample", "{w}");
    assert_eq!(w["covered"], "library", "{w}");
    let w = entry(pid_of("killed"));
    assert_eq!(w["end"], "killed", "{w}");
    assert_eq!(w["signal"], libc::SIGKILL, "{w}");
    assert_eq!(
        w["ended"], "killed by signal 9, reaped by us as subreaper",
        "{w}"
    );
    let w = entry(pid_of("setsid"));
    assert_eq!(w["end"], "gone", "its parent reaped it: {w}");
    assert_eq!(w["ended"], "ended (not our child)", "{w}");
    let w = entry(pid_of("exec"));
    assert_eq!(w["end"], "exited", "{w}");
    assert_eq!(w["exit_status"], 7, "{w}");
    let execs = w["execs"].as_array().unwrap();
    assert!(
        execs.iter().any(|e| e.as_str().unwrap().contains("python")),
        "exec'd into python, without the library: {w}"
    );
    assert!(
        w["ended"].as_str().unwrap().starts_with("exec'd into "),
        "{w}"
    );
    assert_ne!(w["covered"], "library", "{w}");
    // Figures: each worker's last sample agrees with what we read just
    // before it ended, and so does the total, within 2%.
    let ours: u64 = sampled.values().sum();
    assert!(
        sampled["exit"] >= 3500 && sampled["killed"] >= 3500 && sampled["setsid"] >= 3500,
        "the pool merged: {sampled:?}"
    );
    let theirs: u64 = sampled
        .keys()
        .map(|k| entry(pid_of(k))["merged_pages"].as_u64().unwrap())
        .sum();
    assert!(
        (theirs as f64 - ours as f64).abs() <= ours as f64 * 0.02,
        "run's merged pages of the workers {theirs} vs sampled {ours}: {v}"
    );
    let total = v["merged_pages"].as_u64().unwrap();
    assert!(
        total >= theirs
            && total as f64
                <= ours as f64 * 1.02
                    + entry(parent)["merged_pages"].as_u64().unwrap() as f64
                    + 64.0,
        "total {total} = workers {theirs} + parent and env: {v}"
    );
}

/// A copy whose worker leaves its process group: `compare` samples it
/// (it follows parent links) and stops it at the end.
const SETSID_WORKER: &str = r#"
import mmap, os, signal, sys
pid = os.fork()
if pid == 0:
    os.setsid()
    buf = mmap.mmap(-1, 8 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(2048):
        buf[i * 4096:(i + 1) * 4096] = (i + 1).to_bytes(4, "little") * 1024
    with open(sys.argv[1], "a") as f:
        f.write("%d\n" % os.getpid())
    while True:
        signal.pause()
while True:
    signal.pause()
"#;

#[test]
fn compare_counts_a_worker_that_calls_setsid_and_stops_it() {
    let Some(_ksm) = common::ksmd() else { return };
    let dir = std::env::temp_dir().join(format!("ksmauto-cmp-setsid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("w.py");
    let pids = dir.join("pids");
    std::fs::write(&script, SETSID_WORKER).unwrap();
    let lib = common::lib().to_str().unwrap();
    // Output into files: a worker left running must not keep a pipe open.
    let out = dir.join("out");
    let err = dir.join("err");
    let status = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .args([
            "compare",
            "--workers",
            "1",
            "--mode",
            "process",
            "--settle-timeout",
            "30",
        ])
        .args(["--lib", lib, "--json", "--", "python3"])
        .arg(&script)
        .arg(&pids)
        .env_remove("LD_PRELOAD")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .status()
        .unwrap();
    let o = std::process::Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    };
    let stdout = common::text(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|_| panic!("no JSON: {stdout}{}", common::text(&o.stderr)));
    let workers: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    // Whatever compare left running goes now, before any assertion.
    let left: Vec<i32> = workers
        .iter()
        .copied()
        .filter(|pid| std::fs::metadata(format!("/proc/{pid}")).is_ok())
        .collect();
    for &pid in &left {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o.stderr));
    assert_eq!(workers.len(), 2, "one setsid worker per phase");
    for phase in ["without", "with"] {
        assert_eq!(v[phase]["last"]["processes"], 2, "{phase}: {v}");
        assert!(
            v[phase]["last"]["rss_bytes"].as_u64().unwrap() > 8 << 20,
            "{phase}: {v}"
        );
    }
    assert!(left.is_empty(), "setsid workers left running: {left:?}");
}

/// A command that leaves a background process behind and exits at once
/// (what a daemonizing service does): `run` waits for the whole tree and
/// sees the orphan end. Before the fix `run` stopped as soon as one sample
/// of /proc found nothing alive — a process forked just after the listing
/// was missed — and in about a third of the runs returned at once with the
/// orphan "running" (or not listed at all). Ten runs.
#[test]
fn run_waits_for_what_a_command_leaves_behind() {
    for round in 0..10 {
        let out = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
            .args(["run", "--json", "--", "sh", "-c", "sleep 0.3 & exit 7"])
            .output()
            .expect("ksmauto run");
        assert_eq!(
            out.status.code(),
            Some(7),
            "round {round}: {:?}",
            out.status
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("round {round}: not JSON ({e})"));
        let procs = v["per_process"].as_array().expect("per_process");
        let ends: Vec<String> = procs
            .iter()
            .map(|p| p["ended"].as_str().unwrap_or("").to_string())
            .collect();
        assert!(
            procs.len() == 2 && procs.iter().all(|p| p["end"] == "exited"),
            "round {round}: the orphan was not waited for: {ends:?}"
        );
    }
}

/// A pid used twice within the tree: the first holder exits normally and
/// writes its exit report; the second (made to get the same pid through
/// `ns_last_pid`) ends by `_exit` without one. The report belongs to the
/// first. Before the fix reports were joined by pid at the end, to the last
/// holder: the first had no report and the second had the first's.
/// Also: a worker first seen as a zombie (it ended before any look and
/// wrote no report) is not said to be covered by nothing ("none" before the
/// fix): nobody knows.
const PID_REUSE: &str = r#"
import os, sys, time
quick = os.fork()
if quick == 0:
    os._exit(0)
time.sleep(0.3)
os.waitpid(quick, 0)
first = os.fork()
if first == 0:
    sys.exit(0)
os.waitpid(first, 0)
time.sleep(0.5)
second = 0
for _ in range(500):
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(first - 1))
    pid = os.fork()
    if pid == 0:
        if os.getpid() == first:
            time.sleep(0.3)
        os._exit(0)
    os.waitpid(pid, 0)
    if pid == first:
        second = pid
        break
sys.stderr.write("pids %d %d %d\n" % (quick, first, second))
"#;

#[test]
fn an_exit_report_goes_to_the_process_that_wrote_it_when_its_pid_is_used_again() {
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test needs root (it writes /proc/sys/kernel/ns_last_pid)");
    }
    let dir = std::env::temp_dir().join(format!("ksmauto-pid-reuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("reuse.py");
    std::fs::write(&script, PID_REUSE).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .args([
            "run",
            "--mode",
            "process",
            "--lib",
            common::lib().to_str().unwrap(),
        ])
        .args(["--json", "--", "python3"])
        .arg(&script)
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = common::text(&o.stderr);
    let pids = common::numbers_after(&stderr, "pids");
    let (quick, first, second) = (pids[0], pids[1], pids[2]);
    assert_eq!(second, first, "the pid could not be used again: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let holders: Vec<&serde_json::Value> = v["per_process"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["pid"] == first)
        .collect();
    assert_eq!(holders.len(), 2, "two processes held pid {first}: {v}");
    assert!(
        holders[0]["report"].is_object() && holders[0]["figures_from"] == "report",
        "the first holder wrote the report: {}",
        holders[0]
    );
    assert!(
        holders[1]["report"].is_null(),
        "the second ended by _exit, without a report: {}",
        holders[1]
    );
    let q = v["per_process"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == quick)
        .unwrap_or_else(|| panic!("the quick worker is missing: {v}"));
    assert!(
        q["covered"] == "unknown",
        "a worker never read alive is not known to be uncovered: {q}"
    );
}

/// A copy that hands itself on from process to process (a loop of double
/// forks) for 3 s: a look at /proc can find no process of it while one
/// hands on. Before the fix `compare` took one such empty look for the end
/// of the phase ("exited"); now a phase ends only when nothing of the tree
/// is left (the kernel says we have no child), so both phases run until the
/// last process of the relay settles.
#[test]
fn compare_does_not_end_a_phase_on_one_empty_look() {
    let prog = common::compile_c("cli/tests/c/relay.c", &[]);
    let lib = common::lib().to_str().unwrap();
    let dir = std::env::temp_dir().join(format!("ksmauto-cmp-relay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out");
    let status = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .args(["compare", "--workers", "1", "--mode", "advise"])
        .args(["--settle-timeout", "20", "--lib", lib, "--json", "--"])
        .arg(&prog)
        .arg("3")
        .env_remove("LD_PRELOAD")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let stdout = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(0), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|_| panic!("no JSON: {stdout}"));
    for phase in ["without", "with"] {
        assert_ne!(
            v[phase]["ended"], "exited",
            "{phase}: one empty look ended the phase: {}",
            v[phase]["samples"]
        );
        assert_eq!(v[phase]["last"]["processes"], 1, "{phase}: {v}");
    }
}

/// Ctrl-C (SIGINT) or SIGTERM to `compare` without `--hold-ksmd` ended it
/// and left the copies running: they are in process groups of their own.
/// Now it stops them and exits 128 + the signal.
#[test]
fn compare_stops_its_copies_when_it_is_interrupted() {
    let dir = std::env::temp_dir().join(format!("ksmauto-cmp-int-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pids = dir.join("pids");
    let script = format!("echo $$ >> {}; exec sleep 60", pids.display());
    let mut c = Command::new(env!("CARGO_BIN_EXE_ksmauto"));
    c.args([
        "compare",
        "--workers",
        "2",
        "--settle-timeout",
        "60",
        "--json",
    ])
    .args(["--lib", common::lib().to_str().unwrap(), "--", "sh", "-c"])
    .arg(&script)
    .env_remove("LD_PRELOAD")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    for _ in 0..100 {
        let n = std::fs::read_to_string(&pids)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if n >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    let copies: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let left: Vec<i32> = copies
        .iter()
        .copied()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| Stat::parse(s.as_bytes()).and_then(|s| s.state()) != Some(b'Z'))
        })
        .collect();
    for &pid in &left {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(copies.len(), 2, "two copies started");
    assert!(left.is_empty(), "copies left running: {left:?}");
    assert_eq!(
        o.status.code(),
        Some(128 + libc::SIGINT),
        "{}",
        common::text(&o.stderr)
    );
}
