//! The edge of idleness meets a stranger's program: the catch-up pass that
//! runs inside a call that may block (`src/api/blocking.rs`) must not make
//! a system call an inherited sandbox kills for, must survive the program
//! leaving a signal handler with `siglongjmp`, and must leave a `vfork`
//! child's shared memory alone. Found by an adversarial review; each test
//! fails on the build before its fix. The programs are
//! tests/c/edge_programs.c and tests/c/seccomp_kill_wrap.c.

use common::*;
use ksmauto_testsupport as common;

/// A program that inherits a seccomp filter killing `process_vm_readv`
/// (systemd's `SystemCallFilter=~@debug` does, without an errno) waits in
/// `nanosleep`, `poll`, `ppoll`, `select`, `pselect` and `sigtimedwait`
/// after making news. Before the fix, the look at whether `nanosleep` would
/// wait read its timespec with `process_vm_readv`: killed by SIGSYS.
#[test]
fn a_sandbox_that_kills_for_process_vm_readv_never_kills_the_program() {
    let wrap = compile_c("tests/c/seccomp_kill_wrap.c", &[]);
    let prog = compile_c("tests/c/edge_programs.c", &[]);
    for mode in ["advise", "process"] {
        let run = Run::with(mode)
            .env("KSMAUTO_SCAN_INTERVAL", "1")
            .env("KSMAUTO_STATS", "off");
        let out = run.output(&wrap, &[prog.to_str().unwrap(), "waits"]);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {:?} (SIGSYS is 31)\n{stdout}{}",
            out.status,
            text(&out.stderr)
        );
        assert_eq!(field_u64(&stdout, "waited"), 6, "{mode}: {stdout}");
    }
}

/// 20,000 polls, each interrupted by a timer whose handler leaves with
/// `siglongjmp`, each after news. Before the fix a pass interrupted that
/// way left its `/proc/self/maps` descriptor open and the scan marked as
/// running for good: nothing built afterwards was ever advised.
#[test]
fn leaving_a_hooked_call_by_siglongjmp_leaks_nothing_and_stops_nothing() {
    let prog = compile_c("tests/c/edge_programs.c", &[]);
    let Some(_ksmd) = ksmd() else { return };
    let run = Run::with("advise").env("KSMAUTO_STATS", "off");
    let out = run_ok(&prog, &run, &["longjmp"]);
    assert_eq!(
        field_u64(&out, "maps_fds"),
        0,
        "a maps descriptor leaked:\n{out}"
    );
    assert_eq!(
        field_u64(&out, "mergeable"),
        1,
        "memory built after the jumps was never advised:\n{out}"
    );
}

/// A `vfork` child whose `read` returns at once while the catch-up's timer
/// is due. Before the fix the child ran the timer's step in its parent's
/// memory (it opened `/proc/self/maps` and walked the parent's VMAs):
/// counted here with strace.
#[test]
fn a_vfork_child_never_runs_a_catch_up_step() {
    let prog = compile_c("tests/c/edge_programs.c", &[]);
    let trace = std::env::temp_dir().join(format!("ksmauto-vfork-{}.trace", std::process::id()));
    let mut cmd = Run::with("advise")
        .env("KSMAUTO_STATS", "off")
        .command("strace");
    cmd.arg("-f")
        .arg("-e")
        .arg("trace=openat")
        .arg("-o")
        .arg(&trace)
        .arg(&prog)
        .arg("vfork");
    let out = cmd.output().expect("strace (scripts/test installs it)");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{:?}\n{stdout}", out.status);
    assert_eq!(field_u64(&stdout, "child_status"), 0, "{stdout}");
    let child = field_u64(&stdout, "child_pid");
    let log = std::fs::read_to_string(&trace).unwrap_or_default();
    let _ = std::fs::remove_file(&trace);
    let by_child: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with(&format!("{child} ")) && l.contains("/maps"))
        .collect();
    assert!(
        by_child.is_empty(),
        "the vfork child walked its parent's VMAs:\n{}",
        by_child.join("\n")
    );
}

/// A program that grows its brk heap without ever blocking, under the
/// opt-in scan thread (the remedy the README gives for programs that never
/// block): the heap is mergeable at the end, whether it grew until the end
/// or stopped early. Before the fix, away from an edge a VMA whose bounds
/// changed since the last pass was deferred again and again: a heap that
/// kept growing was never advised.
#[test]
fn the_scan_thread_advises_a_heap_that_keeps_growing() {
    let prog = compile_c("tests/c/edge_programs.c", &[]);
    for growing in ["1.0", "2.9"] {
        let run = Run::with("advise")
            .env("KSMAUTO_SCAN_THREAD", "1")
            .env("KSMAUTO_STATS", "off");
        let out = run_ok(&prog, &run, &["busygrow", growing]);
        let heap = field_u64(&out, "heap_kb");
        let mergeable = field_u64(&out, "mergeable_kb");
        assert!(heap > 10_000, "{growing}: the heap did not grow:\n{out}");
        assert!(
            mergeable * 100 >= heap * 90,
            "{growing} s of growth: {mergeable} of {heap} KiB of heap mergeable"
        );
    }
}

/// A server-like loop keeps a 200 KiB block alive per request and waits
/// 2 ms between requests, with and without `PROCMAP_QUERY` (simulated
/// absent by tests/c/noquery_wrap.c: the kernels `advise` exists for have
/// none). The VMA count stays within 5% (+ 16) of the program without the
/// preload. Before the fix, the text walk could not see the VMA above a
/// new run of blocks, so each batch was advised whole after glibc had
/// written it and never coalesced: 666 VMAs against 24 for 1,500 blocks.
#[test]
fn glibc_blocks_kept_alive_between_waits_stay_few_vmas_with_and_without_procmap_query() {
    let prog = compile_c("tests/c/edge_programs.c", &[]);
    let wrap = compile_c("tests/c/noquery_wrap.c", &[]);
    let n = "1500";
    let without = field_u64(&run_ok(&prog, &Run::without(), &["liveblocks", n]), "vmas");
    let run = || Run::with("advise").env("KSMAUTO_STATS", "off");
    let with_query = field_u64(&run_ok(&prog, &run(), &["liveblocks", n]), "vmas");
    let out = run().output(&wrap, &[prog.to_str().unwrap(), "liveblocks", n]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{:?}\n{stdout}", out.status);
    let text_walk = field_u64(&stdout, "vmas");
    eprintln!("{n} live blocks: {without} VMAs without the preload, {with_query} with PROCMAP_QUERY, {text_walk} with the text walk");
    for (how, vmas) in [("PROCMAP_QUERY", with_query), ("the text walk", text_walk)] {
        assert!(
            vmas * 100 <= without * 105 + 1600,
            "with {how}: {vmas} VMAs against {without} without the preload"
        );
    }
}
