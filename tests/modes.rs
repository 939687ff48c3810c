//! The engines as a program sees them: `off` (and `advise`) clear a merge-any
//! setting inherited across exec; `process` turns merge-any on and, with the
//! default exclusions, keeps the main stack and thread stacks out (with
//! `KSMAUTO_EXCLUDE=none` they stay in); `auto` picks `process` on this kernel.

use common::*;
use ksmauto_testsupport as common;

use serde_json::Value;
use std::path::PathBuf;

fn modes() -> PathBuf {
    compile_c("tests/c/modes.c", &[])
}

fn run_ok(run: &Run, args: &[&str]) -> String {
    common::run_ok(&modes(), run, args)
}

/// Runs `modes <args>` with a JSON report to a file; returns stdout and the report.
fn run_with_report(run: Run, args: &[&str]) -> (String, Value) {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("ksmauto-modes-{}-{seq}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let run = run
        .env("KSMAUTO_STATS", path.to_str().unwrap())
        .env("KSMAUTO_STATS_FORMAT", "json");
    let stdout = run_ok(&run, args);
    let body = std::fs::read_to_string(&path).expect("report file");
    let _ = std::fs::remove_file(&path);
    assert_eq!(body.lines().count(), 1, "{body}");
    (stdout, serde_json::from_str(&body).unwrap())
}

// ---------------------------------------------------------------------------
// Inherited merge-any

#[test]
fn control_merge_any_survives_exec_on_this_kernel() {
    // Documents the kernel behaviour the `off` test below relies on: a
    // process that sets PR_SET_MEMORY_MERGE passes it through exec.
    let s = run_ok(&Run::without(), &["merge-any-exec"]);
    assert_eq!(
        field(&s, "set_rc").as_deref(),
        Some("0"),
        "PR_SET_MEMORY_MERGE refused:\n{s}"
    );
    assert_eq!(
        field(&s, "ksm_merge_any").as_deref(),
        Some("yes"),
        "merge-any did not survive exec:\n{s}"
    );
    assert_eq!(field(&s, "get_memory_merge").as_deref(), Some("1"), "{s}");
}

#[test]
fn control_merge_any_survives_fork() {
    let s = run_ok(&Run::without(), &["merge-any-fork"]);
    assert_eq!(field(&s, "ksm_merge_any").as_deref(), Some("yes"), "{s}");
}

fn exec_under(mode: &str) -> String {
    let s = run_ok(
        &Run::with(mode).env("KSMAUTO_STATS", "off"),
        &["merge-any-exec"],
    );
    assert_eq!(field(&s, "set_rc").as_deref(), Some("0"), "{s}");
    s
}

#[test]
fn mode_off_clears_merge_any_inherited_through_exec() {
    let s = exec_under("off");
    assert_eq!(
        field(&s, "ksm_merge_any").as_deref(),
        Some("no"),
        "mode off left the inherited merge-any on:\n{s}"
    );
    assert_eq!(field(&s, "get_memory_merge").as_deref(), Some("0"), "{s}");
}

#[test]
fn mode_off_after_inherited_merge_any_leaves_no_vma_mergeable() {
    // Clearing merge-any must also take back the `mg` the kernel had put on
    // every VMA of the exec'd image. Only the exec'd process reports (exec
    // ends the first image without its exit handlers).
    let (s, r) = run_with_report(Run::with("off"), &["merge-any-exec"]);
    assert_eq!(field(&s, "ksm_merge_any").as_deref(), Some("no"), "{s}");
    assert_eq!(r["mode"], "off", "{r}");
    assert_eq!(r["kernel"]["merge_any"], false, "{r}");
    assert!(r["smaps"]["anon_kb"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(
        r["smaps"]["mergeable_anon_kb"], 0,
        "anonymous memory still mergeable in mode off: {r}"
    );
}

#[test]
fn mode_advise_clears_merge_any_inherited_through_exec() {
    let s = exec_under("advise");
    assert_eq!(field(&s, "ksm_merge_any").as_deref(), Some("no"), "{s}");
    assert_eq!(field(&s, "get_memory_merge").as_deref(), Some("0"), "{s}");
}

#[test]
fn mode_process_keeps_merge_any_through_exec() {
    let s = exec_under("process");
    assert_eq!(field(&s, "ksm_merge_any").as_deref(), Some("yes"), "{s}");
}

#[test]
fn mode_off_program_that_never_asked_for_merge_any_does_not_get_it() {
    let s = run_ok(&Run::with("off"), &["report"]);
    assert_eq!(field(&s, "ksm_merge_any").as_deref(), Some("no"), "{s}");
}

// ---------------------------------------------------------------------------
// process mode and stacks

#[test]
fn process_mode_report_shows_merge_any_on() {
    let (s, r) = run_with_report(Run::with("process"), &["report"]);
    assert_eq!(field(&s, "ksm_merge_any").as_deref(), Some("yes"), "{s}");
    assert_eq!(r["mode"], "process", "{r}");
    assert_eq!(r["kernel"]["merge_any"], true, "{r}");
    assert_eq!(
        r["advised"]["regions"], 0,
        "process mode advises no region itself: {r}"
    );
}

#[test]
fn process_mode_keeps_main_and_thread_stacks_out_by_default() {
    let (s, r) = run_with_report(Run::with("process"), &["stacks"]);
    assert!(flag(&s, "distinct_stacks"), "{s}");
    for who in ["main", "thread1", "thread2"] {
        assert!(flag(&s, &format!("{who}_stack_found")), "{s}");
        assert!(
            !flag(&s, &format!("{who}_stack_mg")),
            "{who}'s stack is mergeable despite the default `stack` exclusion:\n{s}"
        );
    }
    assert_eq!(r["kernel"]["merge_any"], true, "{r}");
    assert_eq!(r["exclude"], serde_json::json!(["stack", "secret"]), "{r}");
    assert_eq!(
        r["skipped"]["stack"], 3,
        "main stack + 2 thread stacks: {r}"
    );
    assert_eq!(r["calls"]["pthread_create"], 2, "{r}");
    assert!(
        r["smaps"]["mergeable_anon_kb"].as_u64().unwrap() > 0,
        "merge-any made the rest mergeable: {r}"
    );
}

#[test]
fn process_mode_with_exclude_none_leaves_the_stacks_mergeable() {
    let (s, r) = run_with_report(
        Run::with("process").env("KSMAUTO_EXCLUDE", "none"),
        &["stacks"],
    );
    assert!(flag(&s, "distinct_stacks"), "{s}");
    for who in ["main", "thread1", "thread2"] {
        assert!(
            flag(&s, &format!("{who}_stack_mg")),
            "{who}'s stack should be mergeable with KSMAUTO_EXCLUDE=none:\n{s}"
        );
    }
    assert_eq!(r["exclude"], serde_json::json!([]), "{r}");
    assert_eq!(r["skipped"]["stack"], 0, "{r}");
}

// ---------------------------------------------------------------------------
// auto

#[test]
fn auto_picks_process_on_this_kernel() {
    let (s, r) = run_with_report(Run::with("auto"), &["report"]);
    assert_eq!(r["requested_mode"], "auto", "{r}");
    assert_eq!(r["mode"], "process", "{r}");
    assert!(r["fallback_reason"].is_null(), "{r}");
    assert_eq!(r["kernel"]["merge_any"], true, "{r}");
    assert_eq!(field(&s, "ksm_merge_any").as_deref(), Some("yes"), "{s}");
}

#[test]
fn unset_mode_is_auto_and_picks_process() {
    let (_, r) = run_with_report(Run::with("default"), &["report"]);
    assert_eq!(r["requested_mode"], "auto", "{r}");
    assert_eq!(r["mode"], "process", "{r}");
}
