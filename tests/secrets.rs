//! Memory a program marks as secret is never mergeable (KSM is a side
//! channel): regions marked the way OpenSSL's secure heap and libsodium's
//! `sodium_malloc` do (mlock / mlock2, MADV_DONTDUMP, MADV_WIPEONFORK) and
//! mlock of a malloc'd buffer, marked before or after the library advised
//! them and before or after a catch-up scan, never carry `mg`, under both
//! engines; ksmd merges duplicate plain pages but not duplicate secret ones;
//! `mlockall` stops merging in the whole process; `KSMAUTO_EXCLUDE=none`
//! (or a list without `secret`) lets secrets merge like other memory.

use common::*;
use ksmauto_testsupport as common;

use std::path::PathBuf;

fn secrets() -> PathBuf {
    compile_c("tests/c/secrets.c", &[])
}

fn run(run: &Run, args: &[&str]) -> String {
    run_ok(&secrets(), &run.clone().env("KSMAUTO_STATS", "off"), args)
}

const MARKED: [&str; 8] = [
    "heap_early",
    "heap_late",
    "raw_early",
    "raw_late",
    "sodium",
    "openssl",
    "dontdump",
    "wipeonfork",
];

fn marked_memory_is_never_mergeable(mode: &str) {
    let s = run(&Run::with(mode), &["marks"]);
    // The controls: the engine did make such memory mergeable, so a
    // missing `mg` below means something.
    for control in [
        "plain_mmap_mg",
        "plain_raw_mg",
        "sodium_mg_before",
        "raw_late_mg_before",
        "heap_late_mg_before",
    ] {
        assert!(flag(&s, control), "{mode}: {control} should be 1:\n{s}");
    }
    for name in MARKED {
        assert!(
            !flag(&s, &format!("{name}_mg")),
            "{mode}: secret region `{name}` is mergeable:\n{s}"
        );
    }
}

#[test]
fn secret_memory_is_never_mergeable_in_advise_mode() {
    marked_memory_is_never_mergeable("advise");
}

#[test]
fn secret_memory_is_never_mergeable_in_process_mode() {
    marked_memory_is_never_mergeable("process");
}

#[test]
fn without_the_secret_class_secrets_merge_like_other_memory() {
    for exclude in ["none", "stack"] {
        let s = run(
            &Run::with("advise").env("KSMAUTO_EXCLUDE", exclude),
            &["marks"],
        );
        for name in MARKED {
            assert!(
                flag(&s, &format!("{name}_mg")),
                "KSMAUTO_EXCLUDE={exclude}: `{name}` should be left mergeable:\n{s}"
            );
        }
    }
}

fn mlockall_stops_merging(mode: &str) {
    let s = run(&Run::with(mode), &["mlockall"]);
    assert!(flag(&s, "before_mg"), "{mode}:\n{s}");
    assert_eq!(field(&s, "mlockall_rc").as_deref(), Some("0"), "{s}");
    for after in ["after_mg", "new_mg", "advised_mg", "raw_mg"] {
        assert!(!flag(&s, after), "{mode}: {after} after mlockall:\n{s}");
    }
    assert_eq!(field(&s, "advised_rc").as_deref(), Some("0"), "{s}");
}

#[test]
fn mlockall_stops_merging_in_advise_mode() {
    mlockall_stops_merging("advise");
}

#[test]
fn mlockall_stops_merging_in_process_mode() {
    mlockall_stops_merging("process");
}

fn ksmd_merges_plain_duplicates_but_not_secret_ones(mode: &str) {
    let Some(_ksmd) = ksmd() else { return };
    let s = run(&Run::with(mode), &["ksm"]);
    let kb = |key: &str| -> i64 { field(&s, key).unwrap().parse().unwrap() };
    assert!(
        kb("plain_ksm_kb") > 0,
        "{mode}: control did not merge:\n{s}"
    );
    assert_eq!(kb("secret_ksm_kb"), 0, "{mode}: the secret merged:\n{s}");
    assert!(!flag(&s, "secret_mg"), "{mode}:\n{s}");
    assert_eq!(
        kb("secret_rss_kb"),
        128,
        "the secret's pages must be resident for this to mean anything:\n{s}"
    );
    assert!(flag(&s, "intact"), "{s}");
}

#[test]
fn ksm_secret_duplicates_are_not_merged_in_advise_mode() {
    ksmd_merges_plain_duplicates_but_not_secret_ones("advise");
}

#[test]
fn ksm_secret_duplicates_are_not_merged_in_process_mode() {
    ksmd_merges_plain_duplicates_but_not_secret_ones("process");
}

#[test]
fn the_secret_hooks_return_what_libc_returns() {
    let without = run(&Run::without(), &["errors"]);
    assert!(without.contains("mlock_ok 0 4242"), "{without}");
    for mode in ["advise", "process", "off"] {
        assert_eq!(run(&Run::with(mode), &["errors"]), without, "{mode}");
    }
}

/// More separate secrets than the exclusion table has slots (one
/// `sodium_malloc` mapping per key): none may become mergeable, even when
/// the table cannot remember them all.
fn more_secrets_than_the_table_holds(mode: &str) {
    let prog = compile_c("tests/c/many_secrets.c", &[]);
    let stdout = run_ok(
        &prog,
        &Run::with(mode)
            .env("KSMAUTO_STATS", "off")
            .env("KSMAUTO_SCAN_INTERVAL", "10ms"),
        &["600"],
    );
    assert!(field_u64(&stdout, "marked") >= 600, "{stdout}");
    assert_eq!(field_u64(&stdout, "mergeable"), 0, "{mode}:\n{stdout}");
}

#[test]
fn more_secrets_than_the_table_holds_stay_unmergeable_in_advise_mode() {
    more_secrets_than_the_table_holds("advise");
}

#[test]
fn more_secrets_than_the_table_holds_stay_unmergeable_in_process_mode() {
    more_secrets_than_the_table_holds("process");
}
