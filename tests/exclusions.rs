//! Exclusions stick: a range excluded with `ksmauto_exclude` stays out of
//! merging when `mremap` or `realloc` moves its memory; the table coalesces
//! repeated and neighbouring exclusions and forgets unmapped ones, so
//! per-session keys and exclude/unmap cycles never run it out of room; and
//! an exclusion made while another thread advises the same memory is never
//! undone by that advice. Thread stacks stay out of merging whatever glibc
//! or the program made them of. Each under both engines.

use common::*;
use ksmauto_testsupport as common;

use std::path::PathBuf;

fn exclusions() -> PathBuf {
    compile_c("tests/c/exclusions.c", &[])
}

fn run(mode: &str, what: &str) -> String {
    run_ok(
        &exclusions(),
        &Run::with(mode).env("KSMAUTO_STATS", "off"),
        &[what],
    )
}

fn count(s: &str, key: &str) -> u64 {
    field_u64(s, key)
}

fn moved_by_mremap(mode: &str) {
    let s = run(mode, "mremap");
    assert!(flag(&s, "grown_moved"), "the region must move:\n{s}");
    assert!(flag(&s, "plain_mg"), "{mode}: control not mergeable:\n{s}");
    assert!(
        !flag(&s, "grown_mg"),
        "{mode}: excluded region advised again after mremap:\n{s}"
    );
    assert!(
        !flag(&s, "fixed_mg"),
        "{mode}: excluded region advised again after MREMAP_FIXED:\n{s}"
    );
}

#[test]
fn an_exclusion_follows_mremap_in_advise_mode() {
    moved_by_mremap("advise");
}

#[test]
fn an_exclusion_follows_mremap_in_process_mode() {
    moved_by_mremap("process");
}

fn moved_by_realloc(mode: &str) {
    let s = run(mode, "realloc");
    assert!(
        flag(&s, "control_mg"),
        "{mode}: control not mergeable:\n{s}"
    );
    assert!(
        !flag(&s, "big_mg"),
        "{mode}: a realloc'd excluded mapping is mergeable:\n{s}"
    );
    assert!(
        !flag(&s, "small_mg"),
        "{mode}: a realloc'd excluded key is mergeable:\n{s}"
    );
}

#[test]
fn an_exclusion_follows_realloc_in_advise_mode() {
    moved_by_realloc("advise");
}

#[test]
fn an_exclusion_follows_realloc_in_process_mode() {
    moved_by_realloc("process");
}

fn many_keys(mode: &str) {
    let s = run(mode, "keys");
    assert_eq!(count(&s, "session_failures"), 0, "{mode}:\n{s}");
    assert_eq!(count(&s, "live_failures"), 0, "{mode}:\n{s}");
    assert_eq!(
        count(&s, "live_mg"),
        0,
        "{mode}: excluded keys mergeable:\n{s}"
    );
}

#[test]
fn three_hundred_keys_fit_in_advise_mode() {
    many_keys("advise");
}

#[test]
fn three_hundred_keys_fit_in_process_mode() {
    many_keys("process");
}

fn exclude_unmap_cycles(mode: &str) {
    let s = run(mode, "cycles");
    for kind in ["piecewise_munmap", "malloc_free", "raw_munmap"] {
        assert_eq!(
            count(&s, &format!("{kind}_failures")),
            0,
            "{mode}: the table filled up with unmapped ranges ({kind}):\n{s}"
        );
    }
    assert!(
        !flag(&s, "kept_mg"),
        "{mode}: making room dropped the exclusion of a mapped region:\n{s}"
    );
}

#[test]
fn exclude_and_unmap_cycles_never_fill_the_table_in_advise_mode() {
    exclude_unmap_cycles("advise");
}

#[test]
fn exclude_and_unmap_cycles_never_fill_the_table_in_process_mode() {
    exclude_unmap_cycles("process");
}

fn exclude_while_advising(mode: &str, what: &str, exclusions: u64) {
    let s = run(mode, what);
    assert_eq!(count(&s, "excluded_ok"), exclusions, "{s}");
    assert_eq!(
        count(&s, "control_mg"),
        5,
        "{mode}: ksmauto_advise did not advise:\n{s}"
    );
    assert!(
        count(&s, "overlapped") > 0,
        "{mode}: advice never ran alongside the exclusions:\n{s}"
    );
    assert_eq!(
        count(&s, "excluded_mg"),
        0,
        "{mode}: a concurrent ksmauto_advise undid exclusions:\n{s}"
    );
}

#[test]
fn an_exclusion_racing_an_advice_sticks_in_advise_mode() {
    exclude_while_advising("advise", "race", 1000);
}

#[test]
fn an_exclusion_racing_an_advice_sticks_in_process_mode() {
    exclude_while_advising("process", "race", 1000);
}

#[test]
fn coalescing_exclusions_racing_an_advice_stick_in_advise_mode() {
    exclude_while_advising("advise", "race-coalescing", 5 * 399);
}

#[test]
fn coalescing_exclusions_racing_an_advice_stick_in_process_mode() {
    exclude_while_advising("process", "race-coalescing", 5 * 399);
}

// ---------------------------------------------------------------------------
// Thread stacks

/// The stacks of threads the program starts, every one kept out.
const STACK_KINDS: [&str; 10] = [
    "default",
    "guard0",
    "guard1",
    "big_guard",
    "c11",
    "default_guard0",
    "c11_default_guard0",
    "mmap",
    "malloc",
    "malloc_big",
];

/// tests/c/thread_stacks.c under `mode` with `exclude` (`KSMAUTO_EXCLUDE`).
fn thread_stacks(mode: &str, exclude: Option<&str>) -> String {
    let prog = compile_c("tests/c/thread_stacks.c", &[]);
    let mut run = Run::with(mode).env("KSMAUTO_STATS", "off");
    if let Some(e) = exclude {
        run = run.env("KSMAUTO_EXCLUDE", e);
    }
    let s = run_ok(&prog, &run, &[]);
    assert!(flag(&s, "catch_up"), "{mode}: no catch-up pass ran:\n{s}");
    s
}

/// Issue 18: the advise engine's catch-up told thread stacks only by the
/// guard page below them, so a thread created with guard size 0 (also as
/// the process's default), with a guard larger than 64 KiB, or on a stack
/// the program supplied (its own mapping, or a malloc'd buffer) had its
/// stack advised; under `process`, glibc's guardless stacks coalesced with
/// their neighbours and the thread found no VMA of its own to unmerge, and
/// supplied stacks stayed mergeable. Now every one is out, in both engines;
/// the heap around a malloc'd stack stays mergeable.
///
/// Review of issue 18, finding 7: C11 `thrd_create` threads (glibc starts
/// them with an internal call, not through the `pthread_create` hook) kept
/// a mergeable stack under `process`, and under `advise` with guard size 0
/// as the default; `thrd_create` is hooked now.
///
/// A thread glibc starts for itself (a `SIGEV_THREAD` timer's, here) runs
/// no code of ours: under `advise` the catch-up tells its stack by the
/// guard page glibc gives it; under `process` it stays mergeable, as
/// docs/how-it-works.md says (Limits).
fn every_kind_of_thread_stack_stays_out(mode: &str) {
    let s = thread_stacks(mode, None);
    for kind in STACK_KINDS {
        assert!(
            !flag(&s, &format!("{kind}_stack_mg")),
            "{mode}: the {kind} thread's stack is mergeable:\n{s}"
        );
    }
    assert!(
        flag(&s, "heap_mg"),
        "{mode}: the heap is no longer mergeable:\n{s}"
    );
    assert_eq!(
        flag(&s, "timer_stack_mg"),
        mode == "process",
        "{mode}: the timer thread's stack (glibc's own thread):\n{s}"
    );
}

#[test]
fn every_kind_of_thread_stack_stays_out_in_advise_mode() {
    every_kind_of_thread_stack_stays_out("advise");
}

#[test]
fn every_kind_of_thread_stack_stays_out_in_process_mode() {
    every_kind_of_thread_stack_stays_out("process");
}

/// The control: without the `stack` exclusion the same stacks are found
/// mergeable (the probe can see them), the guardless one through the
/// catch-up under `advise`.
#[test]
fn without_the_stack_exclusion_the_same_stacks_are_mergeable() {
    for mode in ["advise", "process"] {
        let s = thread_stacks(mode, Some("none"));
        for kind in [
            "guard0",
            "default_guard0",
            "c11_default_guard0",
            "mmap",
            "malloc",
            "malloc_big",
        ] {
            assert!(
                flag(&s, &format!("{kind}_stack_mg")),
                "{mode}, KSMAUTO_EXCLUDE=none: the {kind} stack should be mergeable:\n{s}"
            );
        }
    }
}
