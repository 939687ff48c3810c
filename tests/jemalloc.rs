//! A program linked with jemalloc keeps jemalloc under the preload: the hooks
//! forward to the next `malloc` (jemalloc's, not glibc's), the program's
//! heavy 4-thread mixed-size workload gives the same output and exit status
//! without the preload and in every mode, and in advise mode jemalloc's
//! extents — mapped with `mmap`, which the hook sees — are advised.
//!
//! Needs Debian's `libjemalloc-dev` (.ci/run installs it); without it these
//! tests fail, they are not skipped.

use common::*;
use ksmauto_testsupport as common;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const HEADER: &str = "/usr/include/jemalloc/jemalloc.h";

/// tests/c/jemalloc_app.c linked with `-ljemalloc`; fails loudly when
/// jemalloc's development files are missing.
fn jemalloc_app() -> PathBuf {
    let install = "jemalloc's development files are missing: run `apt-get install libjemalloc-dev`";
    assert!(Path::new(HEADER).exists(), "{HEADER} not found — {install}");
    let so = Command::new("cc")
        .arg("-print-file-name=libjemalloc.so")
        .output()
        .expect("run cc");
    let so = text(&so.stdout).trim().to_string();
    assert!(
        Path::new(&so).is_absolute() && Path::new(&so).exists(),
        "the linker finds no libjemalloc.so (cc says `{so}`) — {install}"
    );
    compile_c("tests/c/jemalloc_app.c", &["-ljemalloc"])
}

fn run_app(run: &Run) -> String {
    let out = run.output(jemalloc_app(), &[]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "jemalloc_app under {run:?} failed: {:?}\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    stdout
}

fn baseline() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| run_app(&Run::without()))
}

#[test]
fn without_the_preload_the_program_runs_on_jemalloc_and_its_checks_pass() {
    let out = baseline();
    assert_eq!(
        field(out, "allocator_is_jemalloc").as_deref(),
        Some("yes"),
        "{out}"
    );
    assert_eq!(
        field(out, "usable_size_of_100").as_deref(),
        Some("112"),
        "jemalloc's size class for 100 bytes:\n{out}"
    );
    assert_eq!(field(out, "errors").as_deref(), Some("0"), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("thread ")).count(),
        4,
        "{out}"
    );
}

fn same_as_without(mode: &str) {
    let got = run_app(&Run::with(mode).env("KSMAUTO_STATS", "off"));
    // Under the preload the program must still find jemalloc behind malloc.
    assert_eq!(
        field(&got, "allocator_is_jemalloc").as_deref(),
        Some("yes"),
        "mode {mode}: malloc is not jemalloc's:\n{got}"
    );
    assert_eq!(
        got,
        baseline(),
        "mode {mode}: output differs from the run without the preload"
    );
}

#[test]
fn jemalloc_program_output_is_unchanged_in_default_mode() {
    same_as_without("default");
}

#[test]
fn jemalloc_program_output_is_unchanged_in_advise_mode() {
    same_as_without("advise");
}

#[test]
fn jemalloc_program_output_is_unchanged_in_process_mode() {
    same_as_without("process");
}

#[test]
fn jemalloc_program_output_is_unchanged_in_off_mode() {
    same_as_without("off");
}

/// The JSON report of one run; `%p` in the path is the pid.
fn json_report(run: Run) -> serde_json::Value {
    let dir = std::env::temp_dir().join(format!(
        "ksmauto-jemalloc-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let template = dir.join("stats.%p.json");
    let out = run
        .env("KSMAUTO_STATS", template.to_str().unwrap())
        .env("KSMAUTO_STATS_FORMAT", "json")
        .output(jemalloc_app(), &[]);
    assert!(
        out.status.success(),
        "{:?}\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one process, one stats file: {files:?}");
    let report = std::fs::read_to_string(&files[0]).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(report.lines().count(), 1, "{report}");
    let v: serde_json::Value =
        serde_json::from_str(report.trim()).unwrap_or_else(|e| panic!("bad JSON {e}: {report}"));
    let pid = files[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("stats.")
        .trim_end_matches(".json")
        .to_string();
    assert_eq!(
        v["pid"].to_string(),
        pid,
        "%p must expand to the reporting pid"
    );
    v
}

#[test]
fn advise_mode_sees_jemallocs_mmaps_and_advises_its_extents() {
    let Some(_ksmd) = ksmd() else { return };
    let v = json_report(Run::with("advise"));
    let n = |ptr: &str| {
        v.pointer(ptr)
            .and_then(|x| x.as_u64())
            .unwrap_or_else(|| panic!("no {ptr} in {v}"))
    };
    assert_eq!(v["mode"], "advise", "{v}");
    assert!(
        n("/calls/mmap") + n("/calls/mmap64") > 0,
        "the mmap hook never saw jemalloc map memory: {v}"
    );
    assert!(n("/advised/regions") > 0, "nothing advised: {v}");
    assert!(n("/advised/by_source/mmap/regions") > 0, "{v}");
    // 4 threads times 60000 operations, through the hooks into jemalloc.
    assert!(
        n("/calls/malloc") > 10_000 && n("/calls/free") > 10_000,
        "{v}"
    );
    assert!(n("/calls/pthread_create") >= 4, "{v}");
    assert_eq!(n("/madvise_failures/total"), 0, "{v}");
}

#[test]
fn off_mode_counts_jemallocs_calls_but_advises_nothing() {
    let v = json_report(Run::with("off"));
    let n = |ptr: &str| {
        v.pointer(ptr)
            .and_then(|x| x.as_u64())
            .unwrap_or_else(|| panic!("no {ptr} in {v}"))
    };
    assert_eq!(v["mode"], "off", "{v}");
    assert!(n("/calls/mmap") + n("/calls/mmap64") > 0, "{v}");
    assert_eq!(n("/advised/regions"), 0, "{v}");
}
