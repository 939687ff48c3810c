//! The `KSMAUTO_*` variables as a user sets them: each bad value gives exactly
//! one warning line naming the variable and its accepted form, leaves the
//! program's stdout and exit status alone and falls back to that setting's
//! default while the other settings keep their good values; each good value
//! takes effect (checked through the exit report and the program's mappings).

use common::*;
use ksmauto_testsupport as common;

use serde_json::Value;
use std::path::PathBuf;
use std::process::Output;

fn prog() -> PathBuf {
    compile_c("tests/c/config_prog.c", &[])
}

const PROGRAM_STDOUT: &str = "hello from config_prog\n";
const PROGRAM_STATUS: i32 = 3;

fn scratch_file(name: &str) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ksmauto-config-{}-{seq}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs the program with `run` and the report in JSON to a file; returns
/// the output (checked for the program's own stdout and status) and the report.
fn run_with_json_report(run: Run) -> (Output, Value) {
    let path = scratch_file("r.json");
    let out = run
        .env("KSMAUTO_STATS", path.to_str().unwrap())
        .env("KSMAUTO_STATS_FORMAT", "json")
        .output(prog(), &[]);
    assert_program_unchanged(&out);
    let body = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no report ({e}); stderr:\n{}", text(&out.stderr)));
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    assert_eq!(body.lines().count(), 1, "{body}");
    (
        out,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

fn assert_program_unchanged(out: &Output) {
    assert_eq!(
        text(&out.stdout),
        PROGRAM_STDOUT,
        "stderr:\n{}",
        text(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(PROGRAM_STATUS),
        "{:?}\n{}",
        out.status,
        text(&out.stderr)
    );
}

fn u(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no unsigned {pointer} in {v}"))
}

/// `stderr` is exactly the one warning for `var=value`, naming the accepted
/// form (`expected`) and the default it falls back to.
fn assert_one_warning(stderr: &str, var: &str, value: &str, expected: &[&str], default: &str) {
    assert_eq!(
        stderr.lines().count(),
        1,
        "exactly one line expected on stderr:\n{stderr}"
    );
    let line = stderr
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("warning must end with a newline: {stderr:?}"));
    let prefix = format!("ksmauto: ignoring {var}={value}: expected ");
    assert!(
        line.starts_with(&prefix),
        "warning should start with {prefix:?}: {line}"
    );
    for word in expected {
        assert!(
            line.contains(word),
            "warning should name the accepted form ({word}): {line}"
        );
    }
    let suffix = format!("; using the default ({default})");
    assert!(
        line.ends_with(&suffix),
        "warning should end with {suffix:?}: {line}"
    );
}

// ---------------------------------------------------------------------------
// Bad values

#[test]
fn bad_mode_warns_once_and_falls_back_to_auto_keeping_min_size() {
    let (out, r) = run_with_json_report(Run::with("bogus").env("KSMAUTO_MIN_SIZE", "64K"));
    assert_one_warning(
        &text(&out.stderr),
        "KSMAUTO_MODE",
        "bogus",
        &["auto", "advise", "process", "off"],
        "auto",
    );
    assert_eq!(r["requested_mode"], "auto", "{r}");
    assert_eq!(
        r["mode"], "process",
        "auto picks process on this kernel: {r}"
    );
    assert_eq!(u(&r, "/min_size"), 65536, "{r}");
}

/// A bad `KSMAUTO_SIGHTINGS` keeps the default, which is off, and the
/// warning names that default (it once said "on").
#[test]
fn bad_sightings_warns_once_and_names_the_default_off() {
    let (out, _) = run_with_json_report(
        Run::with("advise")
            .env("KSMAUTO_REGISTER", "paying")
            .env("KSMAUTO_SIGHTINGS", "maybe"),
    );
    assert_one_warning(&text(&out.stderr), "KSMAUTO_SIGHTINGS", "maybe", &["on", "off"], "off");
}

fn bad_min_size(value: &str) {
    let (out, r) = run_with_json_report(Run::with("advise").env("KSMAUTO_MIN_SIZE", value));
    assert_one_warning(
        &text(&out.stderr),
        "KSMAUTO_MIN_SIZE",
        value,
        &["byte count", "K", "M", "G"],
        "4K",
    );
    assert_eq!(r["mode"], "advise", "{r}");
    assert_eq!(u(&r, "/min_size"), 4096, "{r}");
    // With the 4K default even the 32 KiB region is advised.
    assert_eq!(u(&r, "/skipped/small"), 0, "{r}");
}

#[test]
fn bad_min_size_lots_warns_once_and_falls_back_to_4k_keeping_mode() {
    bad_min_size("lots");
}

#[test]
fn bad_min_size_12q_warns_once_and_falls_back_to_4k_keeping_mode() {
    bad_min_size("12Q");
}

#[test]
fn bad_exclude_warns_once_and_falls_back_to_stack_and_secret_keeping_the_others() {
    let (out, r) = run_with_json_report(
        Run::with("advise")
            .env("KSMAUTO_EXCLUDE", "keys")
            .env("KSMAUTO_MIN_SIZE", "64K"),
    );
    assert_one_warning(
        &text(&out.stderr),
        "KSMAUTO_EXCLUDE",
        "keys",
        &["stack", "exec", "secret", "none"],
        "stack,secret",
    );
    assert_eq!(r["exclude"], serde_json::json!(["stack", "secret"]), "{r}");
    assert_eq!(r["mode"], "advise");
    assert_eq!(u(&r, "/min_size"), 65536);
    assert_eq!(
        u(&r, "/skipped/stack"),
        1,
        "the MAP_STACK region is excluded by the default: {r}"
    );
    assert_eq!(u(&r, "/skipped/exec"), 0, "{r}");
}

#[test]
fn empty_stats_warns_once_and_does_not_count_as_asking_for_a_report() {
    // Mode off advises nothing: with KSMAUTO_STATS rejected, nothing asked
    // for a report, so the warning is all there is.
    let out = Run::with("off")
        .env("KSMAUTO_STATS", "")
        .output(prog(), &[]);
    assert_program_unchanged(&out);
    assert_one_warning(
        &text(&out.stderr),
        "KSMAUTO_STATS",
        "",
        &["stderr", "off", "file path", "%p"],
        "stderr",
    );
}

#[test]
fn empty_stats_falls_back_to_stderr_keeping_mode_and_format() {
    let out = Run::with("advise")
        .env("KSMAUTO_STATS", "")
        .env("KSMAUTO_STATS_FORMAT", "json")
        .output(prog(), &[]);
    assert_program_unchanged(&out);
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "the warning, then the JSON report on stderr:\n{stderr}"
    );
    assert_one_warning(
        &format!("{}\n", lines[0]),
        "KSMAUTO_STATS",
        "",
        &["stderr", "off", "file path"],
        "stderr",
    );
    let r: Value = serde_json::from_str(lines[1]).unwrap_or_else(|e| panic!("{e}: {}", lines[1]));
    assert_eq!(r["mode"], "advise");
    assert_eq!(u(&r, "/advised/by_source/mmap/regions"), 3, "{r}");
}

#[test]
fn bad_stats_format_warns_once_and_falls_back_to_text_keeping_the_path() {
    let path = scratch_file("r.txt");
    let run = Run::with("advise")
        .env("KSMAUTO_STATS", path.to_str().unwrap())
        .env("KSMAUTO_STATS_FORMAT", "xml")
        .env("KSMAUTO_MIN_SIZE", "64K");
    let out = run.output(prog(), &[]);
    assert_program_unchanged(&out);
    assert_one_warning(
        &text(&out.stderr),
        "KSMAUTO_STATS_FORMAT",
        "xml",
        &["text", "json"],
        "text",
    );
    let body = std::fs::read_to_string(&path).expect("the report still goes to the file");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    assert_eq!(body.lines().count(), 2, "text report:\n{body}");
    assert!(body.starts_with("ksmauto["), "{body}");
    // 64K kept: the 32 KiB region is small; the 64 KiB rw and rwx regions are advised.
    assert!(
        body.contains("]: mode advise; advised 2 regions,"),
        "{body}"
    );
    assert!(body.contains("small 1"), "{body}");
}

#[test]
fn all_variables_bad_at_once_give_one_warning_each_in_order() {
    let run = Run::with("bogus")
        .env("KSMAUTO_MIN_SIZE", "lots")
        .env("KSMAUTO_EXCLUDE", "keys")
        .env("KSMAUTO_STATS", "")
        .env("KSMAUTO_STATS_FORMAT", "xml");
    let out = run.output(prog(), &[]);
    assert_program_unchanged(&out);
    let stderr = text(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("ksmauto: ignoring "))
        .collect();
    let vars: Vec<&str> = warnings
        .iter()
        .map(|l| l["ksmauto: ignoring ".len()..].split('=').next().unwrap())
        .collect();
    assert_eq!(
        vars,
        [
            "KSMAUTO_MODE",
            "KSMAUTO_MIN_SIZE",
            "KSMAUTO_EXCLUDE",
            "KSMAUTO_STATS",
            "KSMAUTO_STATS_FORMAT"
        ],
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------
// Good values

#[test]
fn good_values_produce_no_warning() {
    let (out, _) = run_with_json_report(
        Run::with("advise")
            .env("KSMAUTO_MIN_SIZE", "64K")
            .env("KSMAUTO_EXCLUDE", "stack,exec"),
    );
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn min_size_values_are_parsed_as_binary_multiples() {
    for (value, bytes) in [
        ("4096", 4096u64),
        ("64K", 65536),
        ("64k", 65536),
        ("64KiB", 65536),
        ("2M", 2 << 20),
        ("1G", 1 << 30),
        ("0", 0),
    ] {
        let (out, r) = run_with_json_report(Run::with("advise").env("KSMAUTO_MIN_SIZE", value));
        assert_eq!(text(&out.stderr), "", "{value}");
        assert_eq!(u(&r, "/min_size"), bytes, "KSMAUTO_MIN_SIZE={value}: {r}");
    }
}

#[test]
fn min_size_64k_skips_the_32k_region_and_advises_the_64k_ones() {
    let (_, r) = run_with_json_report(Run::with("advise").env("KSMAUTO_MIN_SIZE", "64K"));
    assert_eq!(u(&r, "/min_size"), 65536);
    assert_eq!(u(&r, "/skipped/small"), 1, "{r}");
    assert_eq!(u(&r, "/skipped/stack"), 1, "{r}");
    assert_eq!(u(&r, "/advised/by_source/mmap/regions"), 2, "{r}");
    // The whole VMA each mapping landed in is advised, which can include an
    // anonymous neighbour the kernel merged it with: at least the regions.
    assert!(u(&r, "/advised/by_source/mmap/bytes") >= 2 * 65536, "{r}");
}

#[test]
fn default_min_size_advises_the_32k_region_too() {
    let (_, r) = run_with_json_report(Run::with("advise"));
    assert_eq!(u(&r, "/min_size"), 4096);
    assert_eq!(u(&r, "/skipped/small"), 0, "{r}");
    assert_eq!(u(&r, "/advised/by_source/mmap/regions"), 3, "{r}");
    // The whole VMA each mapping landed in is advised, which can include an
    // anonymous neighbour the kernel merged it with: at least the regions.
    assert!(
        u(&r, "/advised/by_source/mmap/bytes") >= 32768 + 2 * 65536,
        "{r}"
    );
}

#[test]
fn exclude_stack_exec_skips_the_exec_and_stack_regions() {
    let (_, r) = run_with_json_report(Run::with("advise").env("KSMAUTO_EXCLUDE", "stack,exec"));
    assert_eq!(r["exclude"], serde_json::json!(["stack", "exec"]), "{r}");
    assert_eq!(u(&r, "/skipped/exec"), 1, "{r}");
    assert_eq!(u(&r, "/skipped/stack"), 1, "{r}");
    assert_eq!(u(&r, "/advised/by_source/mmap/regions"), 2, "{r}");
}

#[test]
fn exclude_exec_alone_lets_the_stack_region_be_advised() {
    let (_, r) = run_with_json_report(Run::with("advise").env("KSMAUTO_EXCLUDE", "exec"));
    assert_eq!(r["exclude"], serde_json::json!(["exec"]), "{r}");
    assert_eq!(u(&r, "/skipped/exec"), 1, "{r}");
    assert_eq!(u(&r, "/skipped/stack"), 0, "{r}");
    assert_eq!(u(&r, "/advised/by_source/mmap/regions"), 3, "{r}");
}

#[test]
fn exclude_none_advises_all_four_regions() {
    let (_, r) = run_with_json_report(Run::with("advise").env("KSMAUTO_EXCLUDE", "none"));
    assert_eq!(r["exclude"], serde_json::json!([]), "{r}");
    assert_eq!(u(&r, "/skipped/exec") + u(&r, "/skipped/stack"), 0, "{r}");
    assert_eq!(u(&r, "/advised/by_source/mmap/regions"), 4, "{r}");
}

#[test]
fn each_mode_value_is_reported_as_requested() {
    for (requested, active) in [
        ("advise", "advise"),
        ("process", "process"),
        ("off", "off"),
        ("auto", "process"),
    ] {
        let (out, r) = run_with_json_report(Run::with(requested));
        assert_eq!(text(&out.stderr), "", "{requested}");
        assert_eq!(r["requested_mode"], requested, "{r}");
        assert_eq!(r["mode"], active, "{r}");
        let advised = u(&r, "/advised/regions");
        match active {
            "advise" => assert_eq!(advised, 3, "{r}"),
            _ => assert_eq!(advised, 0, "{requested} advises no region itself: {r}"),
        }
        assert_eq!(r["kernel"]["merge_any"], active == "process", "{r}");
    }
}

#[test]
fn stats_format_text_writes_the_two_line_text_report() {
    let path = scratch_file("r.txt");
    let out = Run::with("advise")
        .env("KSMAUTO_STATS", path.to_str().unwrap())
        .env("KSMAUTO_STATS_FORMAT", "text")
        .output(prog(), &[]);
    assert_program_unchanged(&out);
    assert_eq!(text(&out.stderr), "");
    let body = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    assert_eq!(body.lines().count(), 2, "{body}");
    assert!(
        serde_json::from_str::<Value>(&body).is_err(),
        "text format must not be JSON: {body}"
    );
    assert!(body.contains("]: mode advise; advised 3 regions"), "{body}");
    assert!(body.contains("]: kernel: "), "{body}");
}

#[test]
fn stats_format_json_writes_one_json_object() {
    let (_, r) = run_with_json_report(Run::with("advise"));
    assert!(r.is_object());
    assert_eq!(r["mode"], "advise");
}

#[test]
fn stats_stderr_writes_the_report_on_stderr_and_a_path_writes_it_to_the_file() {
    let out = Run::with("off")
        .env("KSMAUTO_STATS", "stderr")
        .output(prog(), &[]);
    assert_program_unchanged(&out);
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 2, "{stderr}");
    assert!(
        stderr.contains("]: mode off; advised 0 regions"),
        "{stderr}"
    );

    let (out, r) = run_with_json_report(Run::with("off"));
    assert_eq!(
        text(&out.stderr),
        "",
        "a file destination keeps stderr clean"
    );
    assert_eq!(r["mode"], "off");
}

#[test]
fn stats_path_of_511_bytes_is_used_and_512_bytes_is_rejected_with_one_warning() {
    let base = scratch_file("x");
    let base = base.parent().unwrap().to_path_buf();
    // Two long directory levels (a single name is limited to 255 bytes).
    let dir = base.join("d".repeat(200)).join("e".repeat(200));
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = format!("{}/", dir.display());
    let path511 = format!("{prefix}{}", "f".repeat(511 - prefix.len()));
    assert_eq!(path511.len(), 511);
    let out = Run::with("advise")
        .env("KSMAUTO_STATS", &path511)
        .output(prog(), &[]);
    assert_program_unchanged(&out);
    assert_eq!(
        text(&out.stderr),
        "",
        "a 511-byte path is within the documented limit"
    );
    let body = std::fs::read_to_string(&path511).expect("report at the 511-byte path");
    assert!(body.contains("]: mode advise; advised 3 regions"), "{body}");

    let path512 = format!("{path511}g");
    let out = Run::with("off")
        .env("KSMAUTO_STATS", &path512)
        .output(prog(), &[]);
    assert_program_unchanged(&out);
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("ksmauto: ignoring KSMAUTO_STATS=/"),
        "{stderr}"
    );
    assert!(stderr.contains("at most 511 bytes"), "{stderr}");
    assert!(!std::path::Path::new(&path512).exists());
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn bad_value_with_a_newline_still_gives_exactly_one_warning_line() {
    let out = Run::with("bogus\nksmauto: forged line")
        .env("KSMAUTO_STATS", "off")
        .output(prog(), &[]);
    assert_program_unchanged(&out);
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.lines().count(),
        1,
        "one warning line expected, got:\n{stderr}"
    );
    assert!(
        stderr.starts_with("ksmauto: ignoring KSMAUTO_MODE="),
        "{stderr}"
    );
}
