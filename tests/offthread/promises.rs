//! Single-thread promises (issue 19): whatever thread the library runs its
//! catch-up on, a program keeps every promise a single-threaded program
//! relies on, right after it allocated (when the catch-up has work). Each
//! case runs without the library (which must hold: the case itself works
//! here) and under `off`, `process` and `advise`. Programs:
//! tests/c/alone.c, tests/c/signals.c, and CPython.

use super::*;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

const MODES: [&str; 3] = ["off", "process", "advise"];

/// Every run: without the library, then each mode.
pub(super) fn runs() -> Vec<(String, Run)> {
    let mut runs = vec![("without the library".to_string(), Run::without())];
    for mode in MODES {
        runs.push((
            mode.to_string(),
            Run::with(mode).env("KSMAUTO_STATS", "off"),
        ));
    }
    runs
}

fn alone() -> std::path::PathBuf {
    compile_c("tests/c/alone.c", &[])
}

/// Runs `alone ARGS` under every run; asserts the exit status is `status`
/// and stdout is `expected`, as without the library.
fn same_everywhere(args: &[&str], status: i32, expected: &str) {
    let prog = alone();
    let mut wrong = vec![];
    for (name, run) in runs() {
        let run = Run {
            timeout: Duration::from_secs(60),
            ..run
        };
        let out = run.output(&prog, args);
        let stdout = text(&out.stdout);
        if out.status.code() != Some(status) || stdout != expected {
            let stderr = text(&out.stderr);
            wrong.push(format!("{name}: {:?}\n{stdout}{stderr}", out.status));
            assert!(
                name != "without the library",
                "alone {args:?} does not work here: {}",
                wrong[0]
            );
        }
    }
    assert!(
        wrong.is_empty(),
        "alone {args:?}: expected status {status} and {expected:?}; got\n{}",
        wrong.join("\n")
    );
}

/// `unshare(CLONE_NEWUSER)` and `setns` into a user namespace: the kernel
/// refuses both to a process with more than one thread.
#[test]
fn a_user_namespace_can_be_entered_right_after_allocating() {
    if unsafe { libc::geteuid() } != 0 {
        return skip("setns into another user namespace needs root");
    }
    same_everywhere(&["unshare"], 0, "unshare ok\n");
    same_everywhere(&["setns"], 0, "setns ok\n");
}

#[test]
fn a_forked_child_can_enter_a_user_namespace_right_after_allocating() {
    if unsafe { libc::geteuid() } != 0 {
        return skip("setns into another user namespace needs root");
    }
    same_everywhere(&["unshare", "fork"], 0, "unshare ok\n");
    same_everywhere(&["setns", "fork"], 0, "setns ok\n");
}

/// glibc's `setuid`/`setgid`/`setgroups` change every thread glibc knows
/// of; a thread it does not know would keep root's credentials. Every task
/// of the process is looked at: the program's four (main and three waiting
/// threads) and any of the library's.
#[test]
fn after_setuid_every_thread_has_the_new_credentials() {
    if unsafe { libc::geteuid() } != 0 {
        return skip("setuid to another user needs root");
    }
    let prog = alone();
    for (name, run) in runs() {
        let stdout = run_ok(&prog, &run, &["creds"]);
        // The last line: `tasks N wrong M`.
        let words: Vec<&str> = stdout
            .lines()
            .last()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let (tasks, wrong) = match words[..] {
            ["tasks", n, "wrong", m] => (n.parse::<u32>().unwrap(), m.parse::<u32>().unwrap()),
            _ => panic!("creds {name}: {stdout}"),
        };
        assert!(
            tasks >= 4 && wrong == 0,
            "creds {name}: a task kept its old credentials:\n{stdout}"
        );
    }
}

/// The control: a thread glibc does not know of keeps root's credentials,
/// and the check sees it.
#[test]
fn the_credentials_check_catches_a_thread_glibc_does_not_know() {
    if unsafe { libc::geteuid() } != 0 {
        return skip("setuid to another user needs root");
    }
    let prog = compile_c("tests/c/alone.c", &["-DUNKNOWN_THREAD"]);
    let stdout = run_ok(&prog, &Run::without(), &["creds"]);
    assert!(
        stdout.ends_with("tasks 5 wrong 1\n"),
        "the thread made with clone() was not caught:\n{stdout}"
    );
}

/// What CPython 3.12 and 3.13 read, in the parent right after `fork()`
/// returns, before they warn that `fork()` in a multi-threaded process may
/// deadlock: `num_threads` of /proc/self/stat. (Counted right after
/// allocating without a fork, it sees the library's thread, which exists
/// exactly then: see docs/how-it-works.md, *Limits*.)
#[test]
fn proc_stat_counts_one_thread_right_after_allocating() {
    same_everywhere(&["stat-threads"], 0, "stat threads 1\n");
}

/// CPython itself: allocates (pymalloc arenas, large objects), forks, and
/// reads in the parent what its fork check reads, when 3.12 and 3.13 read
/// it (3.11 here has no check: this is the check).
#[test]
fn cpython_sees_one_thread_right_after_allocating() {
    let python = "/usr/bin/python3";
    if !std::path::Path::new(python).exists() {
        return skip("no /usr/bin/python3");
    }
    let script = "import os\n\
                  x = [bytes(1 << 20) for _ in range(64)] + [str(i) * 50 for i in range(200000)]\n\
                  pid = os.fork()\n\
                  if pid == 0: os._exit(0)\n\
                  f = open('/proc/self/stat'); s = f.read(); f.close()\n\
                  os.waitpid(pid, 0)\n\
                  print('threads', s.rsplit(')', 1)[1].split()[17])";
    for (name, run) in runs() {
        let out = run.output(python, &["-c", script]);
        assert_eq!(
            text(&out.stdout),
            "threads 1\n",
            "python3 {name}: {:?} {}",
            out.status,
            text(&out.stderr)
        );
    }
}

/// The first CPython >= 3.12 this machine has: on PATH, else under pyenv.
/// Returns its real executable (a pyenv shim resolves to it).
pub(super) fn python_3_12_or_later() -> Option<String> {
    let mut candidates: Vec<String> = ["python3.14", "python3.13", "python3.12", "python3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let root = std::env::var("PYENV_ROOT").unwrap_or_else(|_| "/root/.pyenv".into());
    if let Ok(dir) = std::fs::read_dir(format!("{root}/versions")) {
        let mut found: Vec<String> = dir
            .filter_map(|e| Some(e.ok()?.path().join("bin/python3").to_str()?.to_string()))
            .collect();
        found.sort();
        candidates.extend(found.into_iter().rev());
    }
    let probe = "import sys; print(sys.executable if sys.version_info >= (3, 12) else '')";
    candidates.into_iter().find_map(|c| {
        let out = Run::without()
            .command(&c)
            .args(["-c", probe])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let exe = text(&out.stdout).trim().to_string();
        (out.status.success() && !exe.is_empty()).then_some(exe)
    })
}

/// CPython >= 3.12 forks right after allocating without its warning. (With
/// `-W error::DeprecationWarning`, as the issue puts it, 3.12 and 3.13
/// swallow the warning: `fork` neither fails nor prints. So the warning is
/// shown always, and looked for.)
#[test]
fn cpython_3_12_forks_right_after_allocating_without_its_thread_warning() {
    let Some(python) = python_3_12_or_later() else {
        return skip("no CPython >= 3.12 here (the emulation above still runs)");
    };
    let script = "import os\n\
                  x = [bytes(1 << 20) for _ in range(64)] + [str(i) * 50 for i in range(200000)]\n\
                  pid = os.fork()\n\
                  if pid == 0: os._exit(0)\n\
                  os.waitpid(pid, 0)\n\
                  print('forked')";
    for (name, run) in runs() {
        let out = run.output(&python, &["-W", "always::DeprecationWarning", "-c", script]);
        let stderr = text(&out.stderr);
        assert!(
            out.status.success()
                && text(&out.stdout) == "forked\n"
                && !stderr.contains("multi-threaded"),
            "{python} {name}: {:?}\n{}{stderr}",
            out.status,
            text(&out.stdout)
        );
    }
}

// ---------------------------------------------------------------------------
// Signals

/// The numbers of a `sent N received M foreign F extra E unblocking U` line.
fn signal_counts(stdout: &str) -> [u64; 5] {
    let line = stdout.lines().last().unwrap_or("");
    let n: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .step_by(2)
        .map(|v| v.parse().unwrap())
        .collect();
    n.try_into()
        .unwrap_or_else(|_| panic!("no counts line in {stdout}"))
}

#[test]
fn no_signal_is_delivered_to_a_thread_of_the_library() {
    let prog = compile_c("tests/c/signals.c", &[]);
    for how in ["handled", "blocked"] {
        for (name, run) in runs() {
            let out = run.output(&prog, &[how]);
            let stdout = text(&out.stdout);
            assert!(
                out.status.success(),
                "signals {how} {name}: {:?}\n{stdout}",
                out.status
            );
            let [sent, received, foreign, extra, unblocking] = signal_counts(&stdout);
            eprintln!("signals {how}, {name}: {stdout}");
            assert!(
                received == sent && foreign == 0 && unblocking == 0,
                "signals {how}, {name}: {sent} sent, {received} taken by the program's threads, \
                 {foreign} by another thread; {unblocking} of {extra} looks at other threads found \
                 signals unblocked:\n{stdout}"
            );
        }
    }
}

/// The control: the checks see a thread that blocks nothing.
#[test]
fn the_signal_checks_catch_a_thread_that_blocks_nothing() {
    let prog = compile_c("tests/c/signals.c", &["-DFOREIGN_THREAD"]);
    for how in ["handled", "blocked"] {
        let stdout = run_ok(&prog, &Run::without(), &[how]);
        let [sent, received, foreign, extra, unblocking] = signal_counts(&stdout);
        assert!(
            received < sent && foreign > 0 && extra > 0 && unblocking > 0,
            "signals {how} with a foreign thread: {stdout}"
        );
    }
}

// ---------------------------------------------------------------------------
// fork, vfork, posix_spawn, exec, exit, pthread_exit

#[test]
fn fork_vfork_spawn_exec_and_exit_behave_as_without_the_library() {
    same_everywhere(&["fork"], 0, "child status 7\n");
    same_everywhere(&["vfork"], 0, "vfork status 0\nspawned\nspawn status 0\n");
    same_everywhere(&["exec"], 0, "exec'd\n");
    same_everywhere(&["exit"], 3, "atexit ran\n");
}

/// Nanoseconds from the program's last word (`KEY NS`, CLOCK_MONOTONIC)
/// to its reaping, for one run of `alone CASE`.
fn exit_latency(run: &Run, case: &str, key: &str) -> i64 {
    let mut cmd = run.command(alone());
    cmd.arg(case).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn alone");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let status = child.wait().unwrap();
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let reaped = now.tv_sec * 1_000_000_000 + now.tv_nsec;
    assert!(
        status.success(),
        "alone {case} under {:?}: {status:?} {line}",
        run.env
    );
    let said: i64 = line
        .trim()
        .strip_prefix(key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("alone {case}: no `{key}` in {line:?}"));
    reaped - said
}

/// Exit (and the end of the process when its last thread leaves with
/// `pthread_exit`) is never delayed by more than 10 ms: from the program's
/// last word right after allocating lots to the moment the test has
/// reaped it, over 21 runs per mode (interleaved, so the machine's load
/// falls on all alike), the lower quartile is within 10 ms of the lower
/// quartile without the library. Not the worst run, nor even the median:
/// on a shared 2-core machine (load 14 while this was written) the median
/// itself moves by 5-10 ms between identical runs, while load only ever
/// adds time, so the fast runs show what the exit itself costs. A library
/// that waits for its catch-up at exit delays every run, the fast ones
/// too.
#[test]
fn exit_is_not_delayed_by_more_than_10_ms() {
    for (case, key) in [
        ("exit-timed", "exiting at"),
        ("pthread-exit", "worker done at"),
    ] {
        // `off` leaves out: no engine, nothing that could wait at exit.
        let runs: Vec<(String, Run)> = runs().into_iter().filter(|(n, _)| n != "off").collect();
        let mut samples: Vec<Vec<i64>> = runs.iter().map(|_| vec![]).collect();
        for _ in 0..21 {
            for ((_, run), s) in runs.iter().zip(samples.iter_mut()) {
                s.push(exit_latency(run, case, key));
            }
        }
        let quartiles: Vec<i64> = samples
            .iter_mut()
            .map(|s| {
                s.sort();
                s[s.len() / 4]
            })
            .collect();
        let table: Vec<String> = runs
            .iter()
            .zip(&quartiles)
            .zip(&samples)
            .map(|(((name, _), q), s)| {
                let median = s[s.len() / 2] as f64 / 1e6;
                format!("{name} {:.2} ms (median {median:.2})", *q as f64 / 1e6)
            })
            .collect();
        eprintln!(
            "{case}: lower quartile from last word to reaped: {}",
            table.join(", ")
        );
        for ((name, _), m) in runs.iter().zip(&quartiles).skip(1) {
            assert!(
                m - quartiles[0] < 10_000_000,
                "{case}: {name} ends {:.2} ms later than without the library (lower quartile of 21): {}",
                (m - quartiles[0]) as f64 / 1e6,
                table.join(", ")
            );
        }
    }
}

// ---------------------------------------------------------------------------
// seccomp

/// A filter that refuses `clone`/`clone3` (with EPERM, or by killing the
/// process), installed after allocating with the raw system call (no libc
/// call the library could see, as with a filter inherited from a parent):
/// the program keeps working, allocating all the while.
#[test]
fn a_seccomp_filter_forbidding_clone_leaves_the_program_working() {
    same_everywhere(&["seccomp", "errno"], 0, "still working sum 15\n");
    same_everywhere(&["seccomp", "kill"], 0, "still working sum 15\n");
}

/// ... and its report says the library did without its thread.
/// THE WORDING IS THE IMPLEMENTATION'S TO FIX: this looks for "without its
/// thread" in the text report; change the phrase here to the one the
/// report uses.
#[test]
fn a_seccomp_filter_forbidding_clone_is_named_in_the_report() {
    let run = Run::with("advise").env("KSMAUTO_STATS", "stderr");
    let out = run.output(alone(), &["seccomp", "errno"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{:?}\n{stderr}", out.status);
    assert!(
        stderr.contains("without its thread"),
        "the report does not say the library did without its thread:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------
// Threads of the library

/// The `tasks WHERE N own M` lines of alone's `tasks` case where N != M.
fn extra_tasks(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.starts_with("tasks "))
        .filter(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() == 5 && w[2] != w[4]
        })
        .map(str::to_string)
        .collect()
}

/// `off` and `process`: no thread of the library at any point, counted by
/// the program after each way of allocating and from outside for a second
/// after it settled. (`process` registering only what pays has a thread
/// for its decisions, issue 21: `KSMAUTO_REGISTER=all` has none, as `off`
/// never has, whatever the variable says.)
#[test]
fn no_thread_of_the_library_in_off_or_process_mode() {
    for mode in ["off", "process"] {
        let mut cmd = Run::with(mode)
            .env("KSMAUTO_STATS", "off")
            .env("KSMAUTO_REGISTER", if mode == "off" { "paying" } else { "all" })
            .command(alone());
        cmd.arg("tasks");
        let mut live = Live::spawn(cmd, format!("alone tasks under {mode}"));
        let (pid, _) = live.wait_line("settled pid=", Duration::from_secs(60));
        let pid: u32 = pid.trim().parse().unwrap();
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            let tasks = task_ids(pid);
            assert_eq!(tasks.len(), 1, "{mode}: tasks {tasks:?} after settling");
            std::thread::sleep(Duration::from_millis(20));
        }
        let stdout = live.stdout();
        assert!(
            extra_tasks(&stdout).is_empty(),
            "{mode}: a thread not the program's:\n{stdout}"
        );
    }
}

/// `advise`: whatever thread the catch-up needs is gone once memory has
/// settled: a program idle for seconds has exactly its own threads again
/// (here: 5 s after it said it settled, at the latest). Registering only
/// what pays (issue 21) keeps the thread while regions rest (their probes
/// need ksmd's clock): `KSMAUTO_REGISTER=all` is the catch-up alone.
#[test]
fn in_advise_mode_the_program_has_only_its_own_threads_once_settled() {
    let mut cmd = Run::with("advise")
        .env("KSMAUTO_STATS", "off")
        .env("KSMAUTO_REGISTER", "all")
        .command(alone());
    cmd.arg("tasks");
    let mut live = Live::spawn(cmd, "alone tasks under advise");
    let (pid, at) = live.wait_line("settled pid=", Duration::from_secs(60));
    let pid: u32 = pid.trim().parse().unwrap();
    loop {
        let tasks = task_ids(pid);
        if tasks.len() == 1 {
            break;
        }
        assert!(
            at.elapsed() < Duration::from_secs(5),
            "advise: tasks {tasks:?} still 5 s after settling"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
