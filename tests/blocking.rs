//! The hooks of calls that may block (`src/api/blocking.rs`): a thread
//! about to wait is the edge of idleness, where `advise` mode advises what no
//! hook saw, and the hooks must otherwise be invisible — every call keeps
//! libc's results, and a thread cancelled while it waits in one unwinds
//! through no frame of ours.

use common::*;
use ksmauto_testsupport as common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Every call `tests/c/blocking_idle.c` can block in (with both flavours
/// of `clock_nanosleep`, and a futex wait through `syscall`).
const IDLE_CALLS: &[&str] = &[
    "read",
    "__read_chk",
    "recv",
    "__recv_chk",
    "recvfrom",
    "__recvfrom_chk",
    "recvmsg",
    "accept",
    "accept4",
    "msgrcv",
    "poll",
    "__poll_chk",
    "ppoll",
    "__ppoll_chk",
    "select",
    "pselect",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "nanosleep",
    "clock_nanosleep",
    "clock_nanosleep_abs",
    "sleep",
    "usleep",
    "pause",
    "sigsuspend",
    "sigwait",
    "sigwaitinfo",
    "sigtimedwait",
    "wait",
    "waitpid",
    "waitid",
    "wait3",
    "wait4",
    "pthread_cond_wait",
    "pthread_cond_timedwait",
    "pthread_cond_clockwait",
    "pthread_barrier_wait",
    "pthread_join",
    "sem_wait",
    "sem_timedwait",
    "sem_clockwait",
    "futex",
];

/// The calls whose hooks can tell that they will return at once (the rest
/// — `pause`, `sigsuspend`, `sigwait`, `sigwaitinfo`, the thread waits, a
/// futex wait, and the calls whose only clue is in the program's memory:
/// `select`/`pselect`'s sets, a sleep's length, `sigtimedwait`'s timeout,
/// which the library never reads — count as waiting whenever they are made).
const READY_CALLS: &[&str] = &[
    "read",
    "__read_chk",
    "recv",
    "__recv_chk",
    "recvfrom",
    "__recvfrom_chk",
    "recvmsg",
    "accept",
    "accept4",
    "msgrcv",
    "poll",
    "__poll_chk",
    "ppoll",
    "__ppoll_chk",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "sleep",
    "usleep",
    "wait",
    "waitpid",
    "waitid",
    "waitid_nohang",
    "wait3",
    "wait4",
    "sem_wait",
    "sem_timedwait",
    "sem_clockwait",
];

/// The VmFlags of the VMA of process `pid` that contains `addr`.
fn vm_flags_at(pid: u32, addr: u64) -> Option<String> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((start, end)) = range.split_once('-') {
                if let (Ok(s), Ok(e)) =
                    (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
                {
                    inside = s <= addr && addr < e;
                    continue;
                }
            }
        }
        if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return Some(flags.trim().to_string());
            }
        }
    }
    None
}

fn status_field(pid: u32, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    field(&status.replace(":\t", " "), key)
}

/// What became of one idle program: whether its region got `mg` within 2 s
/// of "idle", and its thread count then against the one it made itself.
struct IdleOutcome {
    advised: bool,
    threads_seen: String,
    threads_made: String,
    flags: String,
}

fn run_idle(prog: &std::path::Path, call: &str, ready: bool) -> IdleOutcome {
    let run = Run::with("advise").env("KSMAUTO_STATS", "off");
    let mut cmd = run.command(prog);
    cmd.arg(call)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if ready {
        cmd.arg("ready");
    }
    let mut child = cmd.spawn().expect("spawn blocking_idle");
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut region, mut threads_made, mut msqid) = (0u64, String::new(), None);
    for line in lines.by_ref() {
        let line = line.expect("read program output");
        if let Some(v) = line.strip_prefix("region ") {
            region = u64::from_str_radix(v.split(' ').next().unwrap(), 16).unwrap();
        } else if let Some(v) = line.strip_prefix("threads ") {
            threads_made = v.to_string();
        } else if let Some(v) = line.strip_prefix("msqid ") {
            msqid = v.parse::<i32>().ok();
        } else if line == "idle" || line == "returned" {
            break;
        }
    }
    assert_ne!(region, 0, "{call}: the program printed no region");
    let idle_at = Instant::now();
    let mut flags;
    let mut advised = false;
    // A call that returned at once is looked at once: a pass would have run
    // inside it.
    let wait_for = Duration::from_secs(if ready { 0 } else { 2 });
    loop {
        flags = vm_flags_at(pid, region).unwrap_or_default();
        if flags.split(' ').any(|f| f == "mg") {
            advised = true;
            break;
        }
        if idle_at.elapsed() >= wait_for {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let threads_seen = status_field(pid, "Threads").unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    if let Some(id) = msqid {
        unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    }
    IdleOutcome {
        advised,
        threads_seen,
        threads_made,
        flags,
    }
}

/// `tests/c/blocking_idle.c`: memory mapped with the raw `mmap` system call
/// and filled with duplicates, then the program blocks for ever in one call.
/// Before the hooks, nothing ever advised that region in `advise` mode (the
/// catch-up scan only ran from a hook's poll, and an idle program makes
/// none); now the edge of idleness in each of these calls advises it within
/// 2 s, and without a thread of ours.
#[test]
fn memory_of_a_program_that_blocks_is_advised_at_the_edge_of_idleness() {
    let prog = compile_c("tests/c/blocking_idle.c", &[]);
    let mut failures = vec![];
    for call in IDLE_CALLS {
        let out = run_idle(&prog, call, false);
        eprintln!(
            "{call}: advised {} threads {} (made {}) flags [{}]",
            out.advised, out.threads_seen, out.threads_made, out.flags
        );
        if !out.advised {
            failures.push(format!(
                "{call}: region not mergeable 2 s after idle (VmFlags: {})",
                out.flags
            ));
        }
        if out.threads_seen != out.threads_made {
            failures.push(format!(
                "{call}: {} threads, the program made {}",
                out.threads_seen, out.threads_made
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The other half of the edge: a call that returns at once (data ready, a
/// zero timeout, a child already gone, …) is not made to wait for a pass.
/// The edge is due (the raw mapping is news), so each hook's look at its
/// call must say "does not wait": the region is still not mergeable when
/// the call has returned.
#[test]
fn a_call_that_returns_at_once_runs_no_pass() {
    let prog = compile_c("tests/c/blocking_idle.c", &[]);
    let mut failures = vec![];
    for call in READY_CALLS {
        let out = run_idle(&prog, call, true);
        eprintln!(
            "{call} (ready): advised {} flags [{}]",
            out.advised, out.flags
        );
        if out.advised {
            failures.push(format!(
                "{call}: a pass ran although the call returned at once"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `tests/c/blocking_results.c`: every hooked call in its waiting, immediate
/// and error cases (and EINTR for a few) prints the same results, `errno`
/// and out-parameters without the library, under `advise` with every edge
/// due (a 1 ms interval, and the program makes news of new memory before
/// each call, so each hook's look at its call is made), and under `process`.
/// The looks must change nothing the program sees: `poll`'s `revents` are
/// rewritten by its own call, `select`'s sets are not probed, an
/// edge-triggered epoll event is not consumed, a waitable child is not
/// reaped, a semaphore not taken.
#[test]
fn every_hooked_call_keeps_libcs_results() {
    let prog = compile_c("tests/c/blocking_results.c", &[]);
    let plain = run_ok(&prog, &Run::without(), &[]);
    assert!(plain.lines().count() > 150, "too little output:\n{plain}");
    let runs = [
        (
            "advise, every edge due",
            Run::with("advise")
                .env("KSMAUTO_SCAN_INTERVAL", "1")
                .env("KSMAUTO_STATS", "off"),
        ),
        ("process", Run::with("process").env("KSMAUTO_STATS", "off")),
    ];
    for (what, run) in runs {
        let out = run_ok(&prog, &run, &[]);
        let differences: Vec<String> = plain
            .lines()
            .zip(out.lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("  libc alone: {a}\n  preloaded:  {b}"))
            .collect();
        assert!(
            differences.is_empty() && plain.lines().count() == out.lines().count(),
            "{what}: results differ from libc's:\n{}\n(whole output:\n{out})",
            differences.join("\n")
        );
    }
}

/// The cancellation points among the hooked calls (`pthread_barrier_wait`
/// and a futex wait through `syscall` are none).
const CANCELLATION_POINTS: &[&str] = &[
    "read",
    "__read_chk",
    "recv",
    "__recv_chk",
    "recvfrom",
    "__recvfrom_chk",
    "recvmsg",
    "accept",
    "accept4",
    "msgrcv",
    "poll",
    "__poll_chk",
    "ppoll",
    "__ppoll_chk",
    "select",
    "pselect",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "nanosleep",
    "clock_nanosleep",
    "clock_nanosleep_abs",
    "sleep",
    "usleep",
    "pause",
    "sigsuspend",
    "sigwait",
    "sigwaitinfo",
    "sigtimedwait",
    "wait",
    "waitpid",
    "waitid",
    "wait3",
    "wait4",
    "pthread_cond_wait",
    "pthread_cond_timedwait",
    "pthread_cond_clockwait",
    "pthread_join",
    "sem_wait",
    "sem_timedwait",
    "sem_clockwait",
];

/// `tests/c/blocking_cancel.c`: a thread waiting in each cancellation point
/// is cancelled under the library (`advise`, every edge due): its cleanup
/// handler runs, the join sees `PTHREAD_CANCELED`, the process exits 0. A
/// hook that forwarded through a raw system call (no cancellation point)
/// would leave the thread waiting for ever.
#[test]
fn a_thread_waiting_in_a_hooked_call_can_be_cancelled() {
    let prog = compile_c("tests/c/blocking_cancel.c", &[]);
    let mut run = Run::with("advise")
        .env("KSMAUTO_SCAN_INTERVAL", "1ms")
        .env("KSMAUTO_STATS", "off");
    run.timeout = Duration::from_secs(20);
    let mut failures = vec![];
    for call in CANCELLATION_POINTS {
        let out = run.output(&prog, &[call]);
        let stdout = text(&out.stdout);
        if out.status.code() != Some(0) || stdout.lines().last() != Some("cancelled 1 cleanup 1") {
            failures.push(format!(
                "{call}: {:?} {stdout:?} {}",
                out.status,
                text(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Each hook of a cancellation point forwards with a tail call, so that no
/// frame of ours is on the stack while the call waits and glibc's forced
/// unwinding of a cancelled thread never walks one (the compiler drops the
/// tail call silently, e.g. once a local of the hook has its address taken).
/// Read from the built library's code: the hook and its out-of-line twin
/// for the edge each reach the target by an indirect jump, never by an
/// indirect call.
#[test]
fn the_hooks_of_calls_that_may_block_forward_with_a_tail_call() {
    let dump = match std::process::Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(lib())
        .output()
    {
        Ok(out) if out.status.success() => text(&out.stdout),
        _ => {
            eprintln!(
                "\n!!!!! SKIPPED: objdump is not available to read the library's code !!!!!\n"
            );
            return;
        }
    };
    let (jump, call): (&str, &str) = if cfg!(target_arch = "x86_64") {
        ("jmp    *%r", "call   *%r")
    } else {
        ("br\tx", "blr\tx")
    };
    let mut hooks: Vec<&str> = CANCELLATION_POINTS
        .iter()
        .copied()
        .filter(|c| *c != "clock_nanosleep_abs")
        .collect();
    hooks.push("pthread_barrier_wait");
    // Each hook and its out-of-line twin for the edge of idleness
    // (`api::blocking::<hook>::at_edge`, reached by a jump from the hook).
    let functions = hooks.iter().flat_map(|hook| {
        [
            (hook.to_string(), format!("<{hook}>:")),
            (
                format!("{hook}'s at_edge"),
                format!("8blocking{}{hook}7at_edge", hook.len()),
            ),
        ]
    });
    let mut failures = vec![];
    for (hook, header) in functions {
        let Some(start) = dump
            .lines()
            .position(|l| l.ends_with(">:") && l.contains(&header))
        else {
            failures.push(format!("{hook}: not in the library"));
            continue;
        };
        let body: Vec<&str> = dump
            .lines()
            .skip(start + 1)
            .take_while(|l| !l.trim().is_empty())
            .collect();
        let jumps = body.iter().filter(|l| l.contains(jump)).count();
        let calls = body.iter().filter(|l| l.contains(call)).count();
        if jumps == 0 || calls != 0 {
            failures.push(format!(
                "{hook}: {jumps} indirect jumps, {calls} indirect calls:\n{}",
                body.join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `tests/c/busy_reads.c`: once the catch-up's timer is due, a program whose
/// calls never wait takes the scheduled pass in one of them, and the rest
/// pay no look at whether they wait. Before the fix, a due timer stayed due
/// (only a waiting call ran the pass), and each of the 20,000 reads made a
/// zero-timeout `poll` first: counted here with strace.
#[test]
fn a_busy_program_pays_no_look_per_call() {
    let prog = compile_c("tests/c/busy_reads.c", &[]);
    let trace = std::env::temp_dir().join(format!("ksmauto-busy-{}.trace", std::process::id()));
    let mut cmd = Run::with("advise")
        .env("KSMAUTO_STATS", "off")
        .command("strace");
    cmd.arg("-f")
        .arg("-e")
        .arg("trace=poll,ppoll")
        .arg("-o")
        .arg(&trace)
        .arg(&prog);
    let out = cmd.output().expect("strace (scripts/test installs it)");
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}\n{stdout}{}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(field_u64(&stdout, "reads"), 20_000, "{stdout}");
    let polls = std::fs::read_to_string(&trace)
        .unwrap_or_default()
        .lines()
        .count();
    let _ = std::fs::remove_file(&trace);
    assert!(
        polls < 100,
        "{polls} poll calls for 20,000 reads that never wait: each paid a look"
    );
}
