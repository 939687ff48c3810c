//! Edges of the catch-up thread found in review (issue 19): what a program
//! does right after allocating — while the library's thread may exist —
//! comes out as without the library. Program: tests/c/thread_edges.c.

use super::promises::{python_3_12_or_later, runs};
use super::*;
use common::*;
use std::time::Duration;

fn edges() -> std::path::PathBuf {
    compile_c("tests/c/thread_edges.c", &[])
}

/// Runs `thread_edges CASE` without the library and under every mode;
/// stdout must be `expected` everywhere.
fn same_everywhere(case: &str, expected: &str) {
    let prog = edges();
    let mut wrong = vec![];
    for (name, run) in runs() {
        let run = Run {
            timeout: Duration::from_secs(60),
            ..run
        };
        let out = run.output(&prog, &[case]);
        let stdout = text(&out.stdout);
        if !out.status.success() || stdout != expected {
            assert!(
                name != "without the library",
                "thread_edges {case} does not work here: {:?}\n{stdout}{}",
                out.status,
                text(&out.stderr)
            );
            wrong.push(format!("{name}: {:?}\n{stdout}", out.status));
        }
    }
    assert!(
        wrong.is_empty(),
        "thread_edges {case}: expected {expected:?}; got\n{}",
        wrong.join("\n")
    );
}

/// The brk heap's growth is seen at the malloc after it: when that is the
/// `fopen` with which CPython reads /proc/self/stat right after `fork`
/// returned, a thread created then is counted, and CPython warns that the
/// process is multi-threaded. No thread may start right after a fork.
#[test]
fn proc_stat_counts_one_thread_when_brk_news_waits_across_fork() {
    same_everywhere("fork-stat", "stat threads 1\n");
}

/// The same in CPython >= 3.12 itself: its small blocks come from the brk
/// heap, whose growth before `fork` is news at its `fopen` after.
#[test]
fn cpython_3_12_forks_after_growing_its_heap_without_its_thread_warning() {
    let Some(python) = python_3_12_or_later() else {
        return skip("no CPython >= 3.12 here (thread_edges fork-stat still runs)");
    };
    let script = "import os\n\
                  x = [bytearray(10**6) for _ in range(3)]\n\
                  del x\n\
                  x = [bytearray(10**6) for _ in range(3)]\n\
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

/// Where the process may have only one more task (`RLIMIT_NPROC`; a
/// cgroup's `pids.max` alike), the library's thread must not take it from
/// the program: its own `pthread_create` and `posix_spawn` succeed as
/// without the library, right after it allocated.
#[test]
fn the_programs_last_allowed_task_is_its_own() {
    if unsafe { libc::geteuid() } != 0 {
        return skip("RLIMIT_NPROC binds only a user without CAP_SYS_RESOURCE: needs root to become one");
    }
    same_everywhere("nproc", "pthread_create 0\nposix_spawn 0\nstatus 0\n");
}

/// When the main thread called `pthread_exit`, glibc ends the process from
/// the program's last thread: its `atexit` handlers run there, on a
/// program thread's stack and signal mask. The library's thread must never
/// be that last thread (its stack is 256 KiB, every signal blocked).
#[test]
fn atexit_handlers_run_on_the_programs_last_thread_after_main_pthread_exit() {
    same_everywhere("pexit-atexit", "atexit on the last thread 1 sigterm blocked 0\n");
}

/// The same in a child forked by a thread other than main, whose one
/// thread ends by returning from its start routine (no hook sees that).
#[test]
fn atexit_handlers_run_on_the_last_thread_of_a_child_forked_by_a_thread() {
    same_everywhere(
        "fork-atexit",
        "atexit on the last thread 1 sigterm blocked 0\nchild status 0\n",
    );
}

/// `open` gives the lowest free descriptor (daemons reopen 0, 1 and 2 so):
/// what the library's thread opens (its reads of /proc) must never take a
/// number the program's next `open` expects.
#[test]
fn the_programs_open_gets_the_lowest_free_descriptor() {
    same_everywhere("lowest-fd", "lowest-fd wrong 0\n");
}

/// Thread ids come round again (`pid_max` is 32768 on many machines): a
/// thread of the program may get the id the library's last thread had.
/// That thread is not the library's, gone long ago: news must bring the
/// library's thread back (it waited for ever for "its" thread to end, and
/// every `fork` and `unshare` waited 200 ms for it).
#[test]
fn the_library_thread_comes_back_after_a_program_thread_took_its_old_id() {
    if unsafe { libc::geteuid() } != 0 {
        return skip("a pid namespace and ns_last_pid need root");
    }
    let run = Run {
        timeout: Duration::from_secs(120),
        ..Run::with("advise").env("KSMAUTO_STATS", "off")
    };
    let out = run.output(edges(), &["tid-reuse"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{:?}\n{stdout}{}", out.status, text(&out.stderr));
    if stdout.contains("no library thread") || stdout.contains("not reused") {
        return skip(&format!("tid-reuse could not be set up: {stdout}"));
    }
    assert_eq!(stdout, "tid-reuse came back 1\n");
}

/// Right after `fork` only the first news is held back (for CPython's
/// thread count): a parent that goes on allocating and then waits, making
/// no call the library sees, has its memory marked all the same.
#[test]
fn a_parent_that_allocates_after_fork_then_waits_is_caught_up() {
    if !ksm_present() {
        return skip("no KSM in this kernel: no VMA can be marked");
    }
    let run = Run {
        timeout: Duration::from_secs(60),
        ..Run::with("advise").env("KSMAUTO_STATS", "off")
    };
    let out = run.output(edges(), &["fork-then-idle"]);
    assert_eq!(
        text(&out.stdout),
        "fork-then-idle marked 16 of 16\n",
        "{:?} {}",
        out.status,
        text(&out.stderr)
    );
}

/// Ids set with raw system calls change the calling thread only: the
/// library's thread must not stay behind with the old ones (a thread with
/// root's group in a process that dropped it). Within a second or two it
/// compares its ids with the main thread's and leaves; the next one
/// inherits the new ids.
#[test]
fn after_a_raw_setgid_every_thread_has_the_new_groups() {
    if unsafe { libc::geteuid() } != 0 {
        return skip("setresgid to another group needs root");
    }
    same_everywhere("raw-setgid", "raw-setgid wrong 0\n");
}

/// A thread of the library created from a real-time thread of the program
/// (`chrt -f`, an audio server's loop) must not inherit its policy: it
/// would compete with the program's threads at their priority.
#[test]
fn the_library_thread_never_runs_with_a_real_time_policy() {
    if unsafe { libc::geteuid() } != 0 {
        return skip("SCHED_FIFO needs root");
    }
    same_everywhere("realtime", "realtime others 0\n");
}

/// A child made by a raw `clone` system call runs no fork handler: it has
/// a copy of the parent's state, which says a thread runs, but no such
/// thread. Its news must still bring it one (after a look at how long
/// that "thread" has not looked around), not leave its memory unadvised.
#[test]
fn a_raw_clone_child_of_a_process_with_a_running_thread_gets_its_own() {
    let run = Run {
        timeout: Duration::from_secs(60),
        ..Run::with("advise").env("KSMAUTO_STATS", "off")
    };
    let out = run.output(edges(), &["raw-clone"]);
    let stdout = text(&out.stdout);
    if stdout.contains("no library thread") {
        return skip("raw-clone: the library's thread never ran in the parent");
    }
    assert_eq!(stdout, "raw-clone child thread 1\n", "{:?}", out.status);
}
