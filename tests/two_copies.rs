//! Two copies of the library in one process — an operator's
//! `/etc/ld.so.preload` and an `LD_PRELOAD` of another path, or `ksmauto run`
//! started from a shell that already preloads one: the program runs as with
//! one copy. The first copy in the lookup order does the work; the other
//! stands aside (no report, no engine). Before, each copy took the other's
//! `malloc` for the allocator's and the first call looped between the two
//! forever, at 100% CPU.

use ksmauto_testsupport as common;

use std::process::Command;
use std::time::Duration;

#[test]
fn a_program_with_two_copies_preloaded_runs_once_covered_and_reports_once() {
    let prog = common::compile_c("tests/c/two_copies.c", &["-pthread"]);
    let dir = std::env::temp_dir().join(format!("ksmauto-two-copies-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("libksmauto.so");
    std::fs::copy(common::lib(), &copy).unwrap();
    let lib = common::lib().to_str().unwrap().to_string();
    let copy = copy.to_str().unwrap().to_string();
    for (order, preload) in [
        ("ours first", format!("{lib}:{copy}")),
        ("the copy first", format!("{copy}:{lib}")),
    ] {
        for mode in ["process", "advise"] {
            let mut cmd = Command::new(&prog);
            cmd.env("LD_PRELOAD", &preload)
                .env("KSMAUTO_MODE", mode)
                .env("KSMAUTO_STATS", "stderr")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let o = common::run_with_timeout(cmd, Duration::from_secs(30));
            let out = common::text(&o.stdout);
            let err = common::text(&o.stderr);
            assert!(
                o.status.success() && out.starts_with("done"),
                "{order}, {mode}: {:?}\nstdout: {out}\nstderr: {err}",
                o.status
            );
            let merge_any = if mode == "process" { "yes" } else { "no" };
            assert!(
                out.contains(&format!("merge_any={merge_any}")),
                "{order}, {mode}: {out}"
            );
            // One report: from the program; `/bin/true` exec'd by its fork
            // is the other process that may speak.
            let me = o.status.code();
            let reports: Vec<&str> = err
                .lines()
                .filter(|l| l.starts_with("ksmauto[") && l.contains(" mode "))
                .collect();
            assert!(
                !reports.is_empty() && reports.len() <= 2,
                "{order}, {mode} ({me:?}): one report per process, not one per copy:\n{err}"
            );
            let pids: std::collections::HashSet<&str> = reports
                .iter()
                .map(|l| l.split(']').next().unwrap())
                .collect();
            assert_eq!(
                pids.len(),
                reports.len(),
                "{order}, {mode}: a process reported twice:\n{err}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A copy loaded later (`dlopen`) stands aside without touching the
/// process: it used to start in `off`, which switches merge-any off (and
/// unmerges everything) under the working copy. The same happened with two
/// preloaded copies in any program whose libraries allocate in their
/// constructors (every C++ program), where the working copy starts first.
#[test]
fn a_copy_that_stands_aside_leaves_merge_any_on() {
    let prog = common::compile_c("tests/c/two_copies.c", &["-pthread"]);
    let dir = std::env::temp_dir().join(format!("ksmauto-copy-dlopen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("libksmauto.so");
    std::fs::copy(common::lib(), &copy).unwrap();
    let out = common::run_ok(
        &prog,
        &common::Run::with("process"),
        &["dlopen", copy.to_str().unwrap()],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.contains("before yes") && out.contains("after yes"),
        "{out}"
    );
}

/// A program that defines (and exports) a stub of the C API for its own
/// use is no copy of the library: the library works in it. Before, the
/// library took the program for a copy loaded first and stood aside.
#[test]
fn a_program_with_its_own_api_stub_is_no_copy_of_the_library() {
    let prog = common::compile_c(
        "tests/c/two_copies.c",
        &["-pthread", "-rdynamic", "-DDEFINES_THE_API"],
    );
    let out = common::run_ok(&prog, &common::Run::with("process"), &[]);
    assert!(out.contains("done merge_any=yes"), "{out}");
}
