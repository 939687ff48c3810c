//! The catch-up meets a stranger's program. Found by an adversarial review
//! of the edge of idleness (the catch-up pass that ran inside the program's
//! calls that may block, before issue 19 moved it to a thread of the
//! library's own); each test failed on the build before its fix, and each
//! still holds for the thread: no system call an inherited sandbox kills
//! for, nothing lost when the program leaves its calls by `siglongjmp`, a
//! `vfork` child's shared memory left alone, a heap that keeps growing
//! advised, kept-alive blocks not fragmented. The programs are
//! tests/c/edge_programs.c and tests/c/seccomp_kill_wrap.c.

use common::*;
use ksmauto_testsupport as common;

/// A program that inherits a seccomp filter killing `process_vm_readv`
/// (systemd's `SystemCallFilter=~@debug` does, without an errno) waits in
/// `nanosleep`, `poll`, `ppoll`, `select`, `pselect` and `sigtimedwait`
/// after making news. Before the fix, the look at whether `nanosleep` would
/// wait read its timespec with `process_vm_readv`: killed by SIGSYS. Under
/// any filter the library now does without its thread (`clone` may be what
/// kills).
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
/// running for good: nothing built afterwards was ever advised. (Passes no
/// longer run in the program's calls; the jumps must still cost nothing.)
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

/// A `vfork` child whose `read` returns at once while the parent's catch-up
/// has news. Before the fix the child ran the timer's step in its parent's
/// memory (it opened `/proc/self/maps` and walked the parent's VMAs):
/// counted here with strace. (The library's thread, which may walk the
/// shared memory meanwhile, is the parent's, not the child.)
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

/// A program that grows its brk heap without ever blocking: the heap is
/// mergeable at the end, whether it grew until the end or stopped early.
/// Before the fix, a VMA whose bounds changed since the last pass was
/// deferred again and again: a heap that kept growing was never advised.
/// (It ran under the opt-in scan thread then; the catch-up thread now comes
/// by itself, with the brk heap's growth as news.)
#[test]
fn the_catch_up_thread_advises_a_heap_that_keeps_growing() {
    let prog = compile_c("tests/c/edge_programs.c", &[]);
    for growing in ["1.0", "2.9"] {
        let run = Run::with("advise").env("KSMAUTO_STATS", "off");
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
