//! `ksmauto run` joins each exit report to the one process that wrote it
//! (by its start time and any of its pids, a pid namespace's included),
//! never to another process that holds or held the same pid; it tells a
//! plain fork from an exec; it reads a process whose main thread has ended
//! through a living thread; and it removes report files it has read.

use ksmauto_testsupport as common;

use std::process::{Command, Output};

fn run_json(
    args: &[&str],
    script: Option<(&str, &str)>,
    env: &[(&str, &str)],
) -> (Output, serde_json::Value) {
    let dir = std::env::temp_dir().join(format!(
        "ksmauto-run-reports-{}-{}",
        std::process::id(),
        script.map(|s| s.0).unwrap_or("none")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_ksmauto"));
    c.args(["run", "--json", "--lib", common::lib().to_str().unwrap()]);
    for a in args {
        if *a == "SCRIPT" {
            let (name, text) = script.unwrap();
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            c.arg(path);
        } else {
            c.arg(a);
        }
    }
    c.env_remove("LD_PRELOAD").envs(env.iter().copied());
    let o = c.output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {}", common::text(&o.stderr)));
    (o, v)
}

/// The system's python, not a wrapper (a pyenv shim is a shell script that
/// runs a dozen processes of its own).
const PYTHON: &str = "/usr/bin/python3";

fn per_process(v: &serde_json::Value) -> &Vec<serde_json::Value> {
    v["per_process"].as_array().unwrap()
}

/// A pool of 2 workers (16 MiB each, held 1.5 s, ended by a normal exit so
/// the library reports) whose processes each write an exit report.
const POOL: &str = r#"
import os, sys, time
kids = []
for i in range(2):
    pid = os.fork()
    if pid == 0:
        buf = bytearray(b"\x5a" * 4096) * (16 * 256)
        time.sleep(1.5)
        sys.exit(0)
    kids.append(pid)
for k in kids:
    os.waitpid(k, 0)
"#;

/// In a pid namespace (`unshare --pid --fork`) the library reports the
/// namespace's pids (1, 2, 3). Each report goes to the sampled process it
/// belongs to (NSpid, start time): four processes (unshare, python and its
/// two workers), each sampled and each with its report. Before, the
/// reports became processes of their own (pids 1, 2, 3: never sampled) and
/// their figures were counted a second time.
#[test]
fn reports_from_a_pid_namespace_go_to_the_processes_that_wrote_them() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (unshare --pid)");
        return;
    }
    let (o, v) = run_json(
        &[
            "--mode", "process", "--", "unshare", "--pid", "--fork", PYTHON, "SCRIPT",
        ],
        Some(("pool.py", POOL)),
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o.stderr));
    let procs = per_process(&v);
    assert_eq!(procs.len(), 4, "unshare, python, 2 workers: {v}");
    for p in procs {
        assert!(p["samples"].as_u64().unwrap() > 0, "never sampled: {p}");
        assert!(p["report"].is_object(), "no report: {p}");
        assert_eq!(p["figures_from"], "report", "{p}");
        assert!(p["pid"].as_i64().unwrap() > 3, "a namespace pid: {p}");
    }
    let pages: u64 = procs
        .iter()
        .map(|p| p["merged_pages"].as_u64().unwrap())
        .sum();
    assert_eq!(v["merged_pages"].as_u64().unwrap(), pages, "{v}");
}

/// `first` ends with a report and, within one look, `second` gets its pid
/// (ns_last_pid) and runs `sleep` without the library. The report is
/// `first`'s (its start time says so): `second` never gets it. (`first`
/// lives 30 ms: start times are in clock ticks, 10 ms, and two holders of
/// one pid started within one tick cannot be told apart by them.)
const PID_REUSE_FAST: &str = r#"
import os, sys, time
time.sleep(0.35)
first = os.fork()
if first == 0:
    time.sleep(0.03)
    sys.exit(0)
os.waitpid(first, 0)
with open("/proc/sys/kernel/ns_last_pid", "w") as f:
    f.write(str(first - 1))
second = os.fork()
if second == 0:
    os.execvp("env", ["env", "-u", "LD_PRELOAD", "sleep", "1"])
os.waitpid(second, 0)
sys.stderr.write("pids %d %d\n" % (first, second))
"#;

#[test]
fn a_report_never_goes_to_the_process_that_took_its_pid_within_one_look() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (writes /proc/sys/kernel/ns_last_pid)");
        return;
    }
    let (o, v) = run_json(
        &["--mode", "process", "--", PYTHON, "SCRIPT"],
        Some(("reuse.py", PID_REUSE_FAST)),
        &[],
    );
    let stderr = common::text(&o.stderr);
    let pids = common::numbers_after(&stderr, "pids");
    assert_eq!(pids[0], pids[1], "the pid was not used again: {stderr}");
    let holders: Vec<&serde_json::Value> = per_process(&v)
        .iter()
        .filter(|p| p["pid"] == pids[0])
        .collect();
    let sleeper = holders
        .iter()
        .find(|p| {
            p["exe"].as_str().unwrap_or("").ends_with("/sleep")
                || p["execs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e.as_str().unwrap().ends_with("/sleep"))
        })
        .unwrap_or_else(|| panic!("no sleep among {holders:?}: {v}"));
    assert!(
        sleeper["report"].is_null(),
        "sleep got first's report: {sleeper}"
    );
    assert!(
        holders.iter().any(|p| p["report"].is_object()),
        "first's report is kept as its own: {v}"
    );
}

/// The parent forks a child that never execs, then execs itself, both
/// within one look.
const FORK_THEN_EXEC: &str = r#"
import os, sys, time
time.sleep(0.35)
child = os.fork()
if child == 0:
    time.sleep(1.0)
    os._exit(0)
sys.stderr.write("child %d\n" % child)
sys.stderr.flush()
os.execv("/usr/bin/sleep", ["sleep", "1.5"])
"#;

/// A plain fork child of a parent that exec'd in the same look has the
/// parent's image from before that exec: it exec'd nothing. Before, it was
/// compared with the parent's new image only and said to have exec'd
/// ("exec'd before the first look", then "exec'd into python3").
#[test]
fn a_fork_child_of_a_parent_that_just_exec_d_has_not_exec_d() {
    let (o, v) = run_json(
        &["--", PYTHON, "SCRIPT"],
        Some(("fork_exec.py", FORK_THEN_EXEC)),
        &[],
    );
    let stderr = common::text(&o.stderr);
    let child: i64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("child "))
        .unwrap_or_else(|| panic!("no child: {stderr}"))
        .trim()
        .parse()
        .unwrap();
    let c = per_process(&v)
        .iter()
        .find(|p| p["pid"] == child)
        .unwrap_or_else(|| panic!("child {child} missing: {v}"));
    assert!(c["execs"].as_array().unwrap().is_empty(), "{c}");
    assert!(
        c["exe"].as_str().unwrap().ends_with("python3")
            || c["exe"].as_str().unwrap().contains("python"),
        "{c}"
    );
    assert!(!c["ended"].as_str().unwrap().contains("exec'd"), "{c}");
}

/// The command lists the report directory once a child that reported has
/// ended and several looks went by: its file is gone (read and removed).
/// Before, every file stayed and was read again at every look.
const LIST_REPORTS: &str = r#"
import os, sys, time
d = os.path.dirname(os.environ["KSMAUTO_STATS"])
child = os.fork()
if child == 0:
    sys.exit(0)
os.waitpid(child, 0)
time.sleep(0.8)
sys.stderr.write("child %d files %s\n" % (child, " ".join(sorted(os.listdir(d)))))
"#;

#[test]
fn a_report_file_read_whole_is_removed_once_its_process_ended() {
    let (o, v) = run_json(
        &["--mode", "process", "--", PYTHON, "SCRIPT"],
        Some(("list.py", LIST_REPORTS)),
        &[],
    );
    let stderr = common::text(&o.stderr);
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("child "))
        .unwrap_or_else(|| panic!("{stderr}"));
    let (child, files) = line.split_once(" files").unwrap();
    assert!(
        !files
            .split_whitespace()
            .any(|f| f == format!("{child}.json")),
        "{child}.json still there: {line}"
    );
    let child: i64 = child.parse().unwrap();
    let c = per_process(&v)
        .iter()
        .find(|p| p["pid"] == child)
        .unwrap_or_else(|| panic!("child {child} missing: {v}"));
    assert!(c["report"].is_object(), "its report was read: {c}");
}

/// The main thread ends with pthread_exit; another thread keeps 16 MiB of
/// identical pages (marked mergeable by the program itself, no library).
/// `run` reads the process through that thread: sampled, merged pages.
/// Before, its leader's state (Z) made `run` skip it: 0 pages.
#[test]
fn a_process_whose_main_thread_ended_is_read_through_a_living_thread() {
    let Some(_k) = common::ksmd() else { return };
    let prog = common::compile_c("cli/tests/c/leader_exits.c", &[]);
    let (o, v) = run_json(
        &["--", "env", "-u", "LD_PRELOAD", prog.to_str().unwrap()],
        None,
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o.stderr));
    let p = per_process(&v)
        .iter()
        .find(|p| p["exe"].as_str().unwrap_or("") == prog.to_str().unwrap())
        .unwrap_or_else(|| panic!("the program is missing: {v}"));
    assert!(p["samples"].as_u64().unwrap() > 0, "{p}");
    assert!(p["merged_pages"].as_u64().unwrap() >= 2048, "{p}");
    assert_eq!(p["covered"], "madvise", "{p}");
}

/// A command that drops its privileges (`setpriv` to nobody) under a `run`
/// started by root: the library could not create its report in `run`'s
/// directory (root's, 0755) and said so on the program's stderr, and the
/// table showed no mode. The directory now lets any user add a report file
/// (sticky, not listable); `run` reads only files owned by root or by a
/// user its tree ran as.
#[test]
fn a_command_that_drops_its_privileges_writes_its_report_where_run_reads_it() {
    if unsafe { libc::geteuid() } != 0 {
        panic!("needs root (setpriv)");
    }
    let (o, v) = run_json(
        &[
            "--mode",
            "process",
            "--",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "/bin/true",
        ],
        None,
        &[],
    );
    let err = common::text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("cannot write stats"), "{err}");
    // One process: setpriv, which becomes /bin/true (often too quick for a
    // look); the report is /bin/true's, written as nobody.
    let procs = per_process(&v);
    assert_eq!(procs.len(), 1, "{v}");
    let p = &procs[0];
    assert_eq!(p["mode"], "process", "{p}");
    assert!(p["report"].is_object(), "{p}");
}
