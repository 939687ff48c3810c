//! Two copies of the library in one process — an operator's
//! `/etc/ld.so.preload` and an `LD_PRELOAD` of another path, or `ksmauto run`
//! started from a shell that already preloads one: the program runs as with
//! one copy. The first copy in the lookup order does the work; the other
//! stands aside (no report, no engine). Before, each copy took the other's
//! `malloc` for the allocator's and the first call looped between the two
//! forever, at 100% CPU. A copy a program loads with `dlopen` comes after
//! libc, where none of its hooks is reached, and stands aside as well; one
//! the loader preloads from `/etc/ld.so.preload` works.

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

/// Review of issue 18, finding 3: a copy that a program `dlopen`s (a
/// plugin host, `ctypes.CDLL`) is appended after libc in the lookup order,
/// with `RTLD_GLOBAL` too, so none of its hooks is reached: it cannot see
/// the program's `mlock` nor guard its `exec`. It must stand aside like a
/// second copy. Before, it started the engine of `KSMAUTO_MODE` (merge-any
/// on by default): the key the program mlocked after the `dlopen` was
/// mergeable, a static program it exec'd inherited merge-any, `advise`
/// switched off the merge-any the program had set itself, and it wrote a
/// report.
#[test]
fn a_dlopened_copy_stands_aside_and_touches_nothing() {
    let prog = common::compile_c("tests/c/dlopened.c", &[]);
    let probe = common::compile_c("tests/c/merge_any_probe.c", &["-static"]);
    let lib = common::lib().to_str().unwrap();
    let probe = probe.to_str().unwrap();
    for mode in ["default", "process", "advise"] {
        for how in ["local", "global", "lazy"] {
            for set in ["0", "1"] {
                let what = format!("{mode}, {how}, the program's merge-any {set}");
                let run = common::Run::without()
                    .env(
                        "KSMAUTO_MODE",
                        if mode == "default" { "auto" } else { mode },
                    )
                    .env("KSMAUTO_STATS", "stderr");
                let out = run.output(&prog, &[lib, how, set, probe]);
                let stdout = common::text(&out.stdout);
                let stderr = common::text(&out.stderr);
                assert!(
                    out.status.success(),
                    "{what}: {:?}\n{stdout}\n{stderr}",
                    out.status
                );
                assert_eq!(
                    common::field(&stdout, "merge_any").as_deref(),
                    Some(set),
                    "{what}: merge-any is not as the program set it:\n{stdout}"
                );
                assert_eq!(
                    common::field(&stdout, "execd merge_any").as_deref(),
                    Some(set),
                    "{what}: the exec'd static program:\n{stdout}"
                );
                if set == "0" {
                    assert_eq!(
                        common::field(&stdout, "key_mg").as_deref(),
                        Some("0"),
                        "{what}: the mlocked key is mergeable:\n{stdout}"
                    );
                }
                assert!(
                    !stderr.contains("ksmauto["),
                    "{what}: a copy that stands aside reports:\n{stderr}"
                );
            }
        }
    }
}

/// `ctypes.CDLL` from Python: `dlopen(RTLD_NOW | RTLD_LOCAL)` by a program
/// whose own calls all go to libc.
#[test]
fn a_copy_python_loads_with_ctypes_stands_aside() {
    let script = "import ctypes, sys\n\
                  ctypes.CDLL(sys.argv[1])\n\
                  print('merge_any', ctypes.CDLL(None).prctl(68, 0, 0, 0, 0))\n";
    let python = "/usr/bin/python3";
    assert!(
        std::path::Path::new(python).exists(),
        "{python} is missing: this test needs it installed"
    );
    let out = common::Run::without()
        .env("KSMAUTO_STATS", "stderr")
        .output(python, &["-c", script, common::lib().to_str().unwrap()]);
    let stdout = common::text(&out.stdout);
    let stderr = common::text(&out.stderr);
    assert!(out.status.success(), "{:?}\n{stdout}\n{stderr}", out.status);
    assert_eq!(
        common::field(&stdout, "merge_any").as_deref(),
        Some("0"),
        "{stdout}"
    );
    assert!(!stderr.contains("ksmauto["), "{stderr}");
}

/// The other side: a copy the loader preloads from `/etc/ld.so.preload` (in
/// a private mount namespace, over a private `/etc`) comes before libc as
/// an `LD_PRELOAD` one does, and works: merge-any on under `process`, the
/// report asked for written.
#[test]
fn a_copy_preloaded_from_etc_ld_so_preload_works() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("!!!!! SKIPPED: needs root (mount namespace) !!!!!");
        assert_ne!(std::env::var("KSMAUTO_REQUIRE_KSM").as_deref(), Ok("1"));
        return;
    }
    let probe = common::compile_c("tests/c/merge_any_probe.c", &[]);
    let dir = std::env::temp_dir().join(format!("ksmauto-etc-preload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("upper")).unwrap();
    std::fs::create_dir_all(dir.join("work")).unwrap();
    let script = format!(
        "set -e\n\
         mount -t overlay overlay -o lowerdir=/etc,upperdir={d}/upper,workdir={d}/work /etc\n\
         printf '%s\\n' '{lib}' > /etc/ld.so.preload\n\
         KSMAUTO_MODE=process KSMAUTO_STATS=stderr '{probe}' preloaded\n",
        d = dir.display(),
        lib = common::lib().display(),
        probe = probe.display(),
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env_remove("LD_PRELOAD")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let o = common::run_with_timeout(cmd, Duration::from_secs(60));
    let _ = std::fs::remove_dir_all(&dir);
    let out = common::text(&o.stdout);
    let err = common::text(&o.stderr);
    assert!(o.status.success(), "{:?}\n{out}\n{err}", o.status);
    assert_eq!(
        common::field(&out, "preloaded merge_any").as_deref(),
        Some("1"),
        "{out}\n{err}"
    );
    assert!(err.contains("ksmauto["), "no report:\n{err}");
}
