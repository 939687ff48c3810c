//! The C API of include/ksmauto.h, used from a C program that is not linked
//! against the library: it runs without it (`ksmauto_available() == 0`); with
//! the preload `ksmauto_version` matches the crate, `ksmauto_stats_json` gives
//! parseable JSON and `snprintf`-like truncation; `ksmauto_exclude` unmerges
//! a region and keeps it out (KSM-backed, in process and advise mode);
//! `ksmauto_advise` does nothing in mode off and makes a region the mmap hook
//! skipped mergeable in advise mode.

use common::*;
use ksmauto_testsupport as common;

use serde_json::Value;
use std::path::PathBuf;

fn api() -> PathBuf {
    compile_c("tests/c/api.c", &[])
}

fn run_ok(run: &Run, args: &[&str]) -> String {
    common::run_ok(&api(), run, args)
}

fn kb(stdout: &str, key: &str) -> i64 {
    field(stdout, key)
        .unwrap_or_else(|| panic!("no `{key}` in:\n{stdout}"))
        .parse()
        .unwrap()
}

#[test]
fn without_the_preload_the_program_runs_and_the_library_is_unavailable() {
    let stdout = run_ok(&Run::without(), &["basic"]);
    assert_eq!(stdout, "available 0\n");
}

#[test]
fn with_the_preload_the_version_is_the_crate_version() {
    let stdout = run_ok(&Run::with("advise"), &["basic"]);
    assert_eq!(field(&stdout, "available").as_deref(), Some("1"));
    assert_eq!(
        field(&stdout, "version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
}

fn stats_json_parses(mode: &str) {
    let stdout = run_ok(&Run::with(mode), &["basic"]);
    let len = field_u64(&stdout, "json_len");
    assert_eq!(
        field_u64(&stdout, "strlen"),
        len,
        "the return value is the length written:\n{stdout}"
    );
    let json = field(&stdout, "json").expect("json line");
    // `field` trims the object's trailing newline, which the length counts.
    assert_eq!(json.len() as u64 + 1, len, "{stdout}");
    let v: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"));
    assert_eq!(v["ksmauto"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["requested_mode"], mode);
    assert!(
        v["calls"].is_object() && v["advised"].is_object() && v["kernel"].is_object(),
        "{v}"
    );
}

fn calls_in_report(run: Run) -> serde_json::Map<String, Value> {
    let stdout = run_ok(&run, &["basic"]);
    let json = field(&stdout, "json").expect("json line");
    let v: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"));
    v["calls"]
        .as_object()
        .cloned()
        .unwrap_or_else(|| panic!("{v}"))
}

/// The malloc family's calls are counted only when the report is asked for
/// (counting costs the hot path); uncounted, they read `null`, never 0.
#[test]
fn malloc_family_calls_are_counted_only_when_the_report_is_asked_for() {
    // The malloc family: the first eleven hooks, up to malloc_usable_size.
    let family = &HOOK_NAMES[..=HOOK_NAMES
        .iter()
        .position(|&h| h == "malloc_usable_size")
        .unwrap()];
    for mode in ["advise", "process", "off"] {
        let quiet = calls_in_report(Run::with(mode));
        let asked = calls_in_report(Run::with(mode).env("KSMAUTO_STATS", "/dev/null"));
        for &name in family {
            assert!(
                quiet[name].is_null(),
                "{mode}: {name} counted unasked: {quiet:?}"
            );
            assert!(
                asked[name].is_u64(),
                "{mode}: {name} not counted: {asked:?}"
            );
        }
        assert!(asked["malloc"].as_u64().unwrap() > 0, "{mode}: {asked:?}");
        // The other hooks are always counted.
        assert!(
            quiet["mmap"].is_u64() && quiet["pthread_create"].is_u64(),
            "{quiet:?}"
        );
    }
}

#[test]
fn stats_json_returns_its_length_and_parses_in_advise_mode() {
    stats_json_parses("advise");
}

#[test]
fn stats_json_returns_its_length_and_parses_in_process_mode() {
    stats_json_parses("process");
}

#[test]
fn stats_json_into_a_too_small_buffer_is_cut_nul_terminated_and_returns_the_full_length() {
    for mode in ["advise", "off"] {
        let stdout = run_ok(&Run::with(mode), &["basic"]);
        let full = field_u64(&stdout, "small_full");
        assert!(full > 100, "{stdout}");
        assert_eq!(
            field_u64(&stdout, "small_ret"),
            full,
            "returns the full length, not the cut one:\n{stdout}"
        );
        assert_eq!(
            field_u64(&stdout, "small_strlen"),
            15,
            "16-byte buffer: 15 bytes and the NUL:\n{stdout}"
        );
        assert!(
            flag(&stdout, "small_prefix_ok"),
            "the cut text is the start of the object:\n{stdout}"
        );
        assert!(
            flag(&stdout, "small_canary_ok"),
            "wrote past the given length:\n{stdout}"
        );
        assert!(
            flag(&stdout, "null_ret_positive"),
            "(NULL, 0) still returns the needed length:\n{stdout}"
        );
        assert!(flag(&stdout, "one_byte_ret_positive"), "{stdout}");
        assert!(
            flag(&stdout, "one_byte_nul") && flag(&stdout, "one_byte_canary_ok"),
            "1-byte buffer holds just the NUL:\n{stdout}"
        );
    }
}

#[test]
fn stats_json_at_the_exact_boundary_behaves_like_snprintf() {
    let stdout = run_ok(&Run::with("off"), &["basic"]);
    let full = field_u64(&stdout, "exact_len_ret");
    assert!(full > 100, "{stdout}");
    assert_eq!(
        field_u64(&stdout, "exact_len_strlen"),
        full - 1,
        "len == needed length leaves room for all but the last byte:\n{stdout}"
    );
    assert_eq!(field_u64(&stdout, "fits_len_ret"), full, "{stdout}");
    assert_eq!(
        field_u64(&stdout, "fits_len_strlen"),
        full,
        "len == needed length + 1 holds the whole object:\n{stdout}"
    );
    assert!(flag(&stdout, "fits_len_same"), "{stdout}");
}

#[test]
fn advise_reports_enomem_for_unmapped_memory_and_einval_for_a_wrapping_range() {
    for mode in ["advise", "process"] {
        let s = run_ok(
            &Run::with(mode).env("KSMAUTO_STATS", "off"),
            &["advise-errors"],
        );
        assert_eq!(
            field(&s, "unmapped_rc").as_deref(),
            Some("-1"),
            "{mode}:\n{s}"
        );
        assert!(
            flag(&s, "unmapped_enomem"),
            "{mode}: the header documents ENOMEM for unmapped memory:\n{s}"
        );
        assert_eq!(
            field(&s, "wrapping_rc").as_deref(),
            Some("-1"),
            "{mode}:\n{s}"
        );
        assert!(flag(&s, "wrapping_einval"), "{mode}:\n{s}");
    }
    // Mode off does nothing, so there is nothing to fail; a bad range is still EINVAL.
    let s = run_ok(&Run::with("off"), &["advise-errors"]);
    assert_eq!(field(&s, "unmapped_rc").as_deref(), Some("0"), "{s}");
    assert!(flag(&s, "wrapping_einval"), "{s}");
}

fn exclude_unmerges_and_keeps_the_secret_out(mode: &str) {
    let Some(_ksmd) = ksmd() else { return };
    let s = run_ok(&Run::with(mode).env("KSMAUTO_STATS", "off"), &["exclude"]);
    for step in [
        "a_before",
        "secret_before",
        "secret_excluded",
        "secret_readvised",
        "a_after",
        "secret_after",
    ] {
        assert!(
            flag(&s, &format!("{step}_exact")),
            "{step}: the region must be a VMA of its own:\n{s}"
        );
    }
    // Both regions hold the same 32 pages, mergeable at first in both modes.
    assert!(
        flag(&s, "secret_before_mg"),
        "the secret region starts out mergeable in {mode} mode:\n{s}"
    );
    assert!(kb(&s, "a_before_ksm_kb") > 0, "{s}");
    assert!(
        kb(&s, "secret_before_ksm_kb") > 0,
        "the secret merged before it was excluded:\n{s}"
    );
    assert_eq!(field(&s, "exclude_rc").as_deref(), Some("0"), "{s}");
    // Excluding unmerges at once…
    assert_eq!(kb(&s, "secret_excluded_ksm_kb"), 0, "{s}");
    assert!(!flag(&s, "secret_excluded_mg"), "{s}");
    // …and a later ksmauto_advise does not bring it back.
    assert_eq!(field(&s, "readvise_rc").as_deref(), Some("0"), "{s}");
    assert!(
        !flag(&s, "secret_readvised_mg"),
        "ksmauto_advise re-enabled merging of an excluded region:\n{s}"
    );
    // Three full scans later the first region is merged, the secret is not.
    assert!(kb(&s, "a_after_ksm_kb") > 0, "{s}");
    assert!(flag(&s, "a_after_mg"), "{s}");
    assert_eq!(
        kb(&s, "secret_after_ksm_kb"),
        0,
        "the excluded region merged again:\n{s}"
    );
    assert!(!flag(&s, "secret_after_mg"), "{s}");
    assert_eq!(
        kb(&s, "secret_after_rss_kb"),
        128,
        "the secret's pages must stay resident for this to mean anything:\n{s}"
    );
    assert!(flag(&s, "intact"), "{s}");
}

#[test]
fn ksm_exclude_unmerges_and_keeps_a_region_out_in_process_mode() {
    exclude_unmerges_and_keeps_the_secret_out("process");
}

#[test]
fn ksm_exclude_unmerges_and_keeps_a_region_out_in_advise_mode() {
    exclude_unmerges_and_keeps_the_secret_out("advise");
}

#[test]
fn advise_in_mode_off_returns_0_and_does_not_make_the_region_mergeable() {
    let s = run_ok(&Run::with("off"), &["advise"]);
    assert!(flag(&s, "advised_exact"), "{s}");
    assert!(!flag(&s, "before_mg"), "{s}");
    assert_eq!(field(&s, "advise_rc").as_deref(), Some("0"), "{s}");
    assert!(!flag(&s, "advised_mg"), "mode off must not advise:\n{s}");
}

#[test]
fn ksm_advise_in_mode_off_merges_nothing() {
    let Some(_ksmd) = ksmd() else { return };
    let s = run_ok(&Run::with("off"), &["advise", "wait"]);
    assert!(!flag(&s, "after_mg"), "{s}");
    assert_eq!(kb(&s, "after_ksm_kb"), 0, "{s}");
    assert_eq!(kb(&s, "after_rss_kb"), 128, "{s}");
}

#[test]
fn advise_makes_a_region_the_mmap_hook_skipped_mergeable() {
    let dir = std::env::temp_dir().join(format!("ksmauto-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("advise.json");
    let _ = std::fs::remove_file(&path);
    let run = Run::with("advise")
        .env("KSMAUTO_MIN_SIZE", "1G")
        .env("KSMAUTO_STATS", path.to_str().unwrap())
        .env("KSMAUTO_STATS_FORMAT", "json");
    let s = run_ok(&run, &["advise"]);
    assert!(
        !flag(&s, "before_mg"),
        "KSMAUTO_MIN_SIZE=1G: the mmap hook must skip a 128 KiB region:\n{s}"
    );
    assert_eq!(field(&s, "advise_rc").as_deref(), Some("0"), "{s}");
    assert!(flag(&s, "advised_mg"), "ksmauto_advise must set `mg`:\n{s}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(r["advised"]["by_source"]["api"]["regions"], 1, "{r}");
    assert_eq!(r["advised"]["by_source"]["api"]["bytes"], 32 * 4096, "{r}");
    assert_eq!(r["advised"]["by_source"]["mmap"]["regions"], 0, "{r}");
    assert!(r["skipped"]["small"].as_u64().unwrap() >= 1, "{r}");
}

#[test]
fn ksm_advise_makes_a_skipped_region_merge() {
    let Some(_ksmd) = ksmd() else { return };
    let s = run_ok(
        &Run::with("advise")
            .env("KSMAUTO_MIN_SIZE", "1G")
            .env("KSMAUTO_STATS", "off"),
        &["advise", "wait"],
    );
    assert!(!flag(&s, "before_mg"), "{s}");
    assert!(flag(&s, "after_mg"), "{s}");
    assert!(
        kb(&s, "after_ksm_kb") > 0,
        "32 identical pages advised through the API did not merge:\n{s}"
    );
}
