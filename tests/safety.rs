//! Safe in front of any program: what an operator who puts the library in a
//! service unit or `/etc/ld.so.preload` must be able to rely on, tried the way
//! a stranger's program or an attacker would.
//!
//! * secure execution (`AT_SECURE`): no `KSMAUTO_*` variable steers a
//!   set-user-ID program, no file is written, its memory is left alone;
//! * the stats file is never a symbolic link, a FIFO or someone else's file,
//!   and is created private;
//! * a program that closed stderr and reused descriptor 2 gets no report in
//!   its data;
//! * a child made by a raw `clone` reports only its own activity;
//! * the library's catch-up thread takes no signal meant for the program,
//!   and `fork` returns with only the program's threads;
//! * a caller-supplied thread stack inside the heap does not take the heap
//!   out of merging;
//! * a debug build is loadable; the exit path reads `smaps` only to print.

use common::*;
use ksmauto_testsupport as common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch_dir(name: &str) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "ksmauto-safety-{name}-{}-{seq}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Whether this test can run (it needs root: namespaces, set-user-ID files,
/// `setpriv`, `chown`). Otherwise a loud SKIPPED line, and a failure under
/// `KSMAUTO_REQUIRE_KSM=1` (CI runs as root).
fn have_root(why: &str) -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!("!!!!! SKIPPED: needs root ({why}) !!!!!");
    assert_ne!(std::env::var("KSMAUTO_REQUIRE_KSM").as_deref(), Ok("1"));
    false
}

// ---------------------------------------------------------------------------
// Secure execution

/// Runs `secure_exec` as `nobody` inside a private mount namespace whose
/// `/etc` has an `ld.so.preload` naming the library, with hostile
/// `KSMAUTO_*` values; `setuid` makes the program set-user-ID root first.
/// Returns (stdout, stderr, whether the stats file appeared).
fn run_preloaded_as_nobody(setuid: bool) -> (String, String, bool) {
    let dir = scratch_dir("secure");
    let lib = dir.join("libksmauto.so");
    std::fs::copy(common::lib(), &lib).unwrap();
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o755)).unwrap();
    let prog = dir.join("secure_exec");
    std::fs::copy(compile_c("tests/c/secure_exec.c", &[]), &prog).unwrap();
    let mode = if setuid { 0o4755 } else { 0o755 };
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(mode)).unwrap();
    // A directory only root may write to: the attacker aims the report there.
    let root_only = dir.join("root-only");
    std::fs::create_dir(&root_only).unwrap();
    std::fs::set_permissions(&root_only, std::fs::Permissions::from_mode(0o700)).unwrap();
    let report = root_only.join("report");
    // The world-writable directory nobody can reach the program through.
    let script = format!(
        r#"set -e
mkdir -p {d}/upper {d}/work
mount -t overlay overlay -o lowerdir=/etc,upperdir={d}/upper,workdir={d}/work /etc
echo {lib} > /etc/ld.so.preload
exec setpriv --reuid=65534 --regid=65534 --clear-groups \
  env KSMAUTO_MODE=process KSMAUTO_EXCLUDE=none KSMAUTO_MIN_SIZE=1 \
      KSMAUTO_STATS={report} KSMAUTO_STATS_FORMAT=json {prog}
"#,
        d = dir.display(),
        lib = lib.display(),
        report = report.display(),
        prog = prog.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("KSMAUTO_") || k == "LD_PRELOAD" {
            cmd.env_remove(k);
        }
    }
    let out = run_with_timeout(cmd, std::time::Duration::from_secs(60));
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let written = report.exists();
    let _ = std::fs::remove_dir_all(&dir);
    (stdout, stderr, written)
}

#[test]
fn a_setuid_program_run_by_an_unprivileged_user_ignores_every_ksmauto_variable() {
    if !have_root("mount namespace, setuid binary") {
        return;
    }
    // Control: the same program without the set-user-ID bit, same hostile
    // environment: the library is loaded from ld.so.preload and obeys it.
    // (Its report cannot be written into the root-only directory by
    // nobody, so only the memory tells.)
    let (stdout, _, _) = run_preloaded_as_nobody(false);
    assert_eq!(
        field(&stdout, "at_secure").as_deref(),
        Some("0"),
        "{stdout}"
    );
    assert_eq!(
        field(&stdout, "merge_any").as_deref(),
        Some("1"),
        "control run: the library was not loaded from ld.so.preload or ignored KSMAUTO_MODE:\n{stdout}"
    );

    let (stdout, stderr, written) = run_preloaded_as_nobody(true);
    assert_eq!(
        field(&stdout, "at_secure").as_deref(),
        Some("1"),
        "{stdout}"
    );
    assert_eq!(field(&stdout, "euid").as_deref(), Some("0"), "{stdout}");
    assert!(
        !written,
        "KSMAUTO_STATS made a set-user-ID program write a root-owned file"
    );
    assert_eq!(
        field(&stdout, "merge_any").as_deref(),
        Some("0"),
        "KSMAUTO_MODE steered a set-user-ID program:\n{stdout}"
    );
    assert_eq!(
        field(&stdout, "mergeable_vmas").as_deref(),
        Some("0"),
        "memory of a set-user-ID program was made mergeable:\n{stdout}"
    );
    assert_eq!(stderr, "", "the library printed in a set-user-ID program");
}

// ---------------------------------------------------------------------------
// The stats file

fn config_prog() -> PathBuf {
    compile_c("tests/c/config_prog.c", &[])
}

/// Runs config_prog (which always has something to report) with the report
/// aimed at `path`; returns stderr.
fn report_to(path: &Path) -> String {
    let out = Run::with("advise")
        .env("KSMAUTO_STATS", path.to_str().unwrap())
        .output(config_prog(), &[]);
    assert_eq!(
        text(&out.stdout),
        "hello from config_prog\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3));
    text(&out.stderr)
}

#[test]
fn a_new_stats_file_is_created_private_to_its_owner() {
    let dir = scratch_dir("stats-new");
    let path = dir.join("report");
    let stderr = report_to(&path);
    let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&path).unwrap().contains("advised"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_stats_file_is_never_written_through_a_symbolic_link() {
    let dir = scratch_dir("stats-link");
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let link = dir.join("report");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let stderr = report_to(&link);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(stderr.contains("ELOOP"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A hard link is another name of a file that may be anyone's, root's
/// included: under `ksmauto run`, a process of the tree that dropped its
/// privileges can plant `<pid>.json` in the world-writable report directory
/// as a hard link to a file of the user a later process runs as (where
/// `fs.protected_hardlinks` is 0, any file it can see), and that process
/// would append its report to it. The owner check alone passes: the victim
/// is the writer's own file.
#[test]
fn the_stats_file_is_never_written_through_a_hard_link() {
    let dir = scratch_dir("stats-hardlink");
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let link = dir.join("report");
    std::fs::hard_link(&victim, &link).unwrap();
    let stderr = report_to(&link);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "precious\n",
        "the report was appended through a hard link: {stderr}"
    );
    assert!(stderr.contains("EMLINK"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_fifo_as_stats_file_is_refused_without_blocking() {
    let dir = scratch_dir("stats-fifo");
    let fifo = dir.join("report");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // No reader: a blocking open would hang the program at exit (the run's
    // timeout would kill it and the status check would fail).
    let stderr = report_to(&fifo); // (the run is killed after 120 s if it blocks)
    assert!(stderr.contains("cannot write stats"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stats_file_owned_by_another_user_is_refused() {
    if !have_root("chown") {
        return;
    }
    let dir = scratch_dir("stats-owner");
    let path = dir.join("report");
    std::fs::write(&path, "").unwrap();
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let stderr = report_to(&path);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    assert!(stderr.contains("EPERM"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_directory_or_device_as_stats_file_is_refused() {
    let dir = scratch_dir("stats-dir");
    let stderr = report_to(&dir);
    assert!(stderr.contains("cannot write stats"), "{stderr}");
    let stderr = report_to(Path::new("/dev/null"));
    assert!(stderr.contains("EPERM"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// Descriptor 2 reused

#[test]
fn a_program_that_reuses_descriptor_2_for_data_gets_no_report_in_it() {
    let prog = compile_c("tests/c/stderr_reuse.c", &[]);
    let dir = scratch_dir("fd2");
    let data = dir.join("data");
    for mode in ["advise", "process"] {
        let out = Run::with(mode).output(&prog, &[data.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{mode}: {:?}", out.status);
        assert_eq!(
            std::fs::read_to_string(&data).unwrap(),
            "program data\n",
            "{mode}: the exit report went into the program's data file"
        );
    }
    // Control: with stderr left alone the same program does report.
    let out = Run::with("advise").output(config_prog(), &[]);
    assert!(text(&out.stderr).contains("advised"), "{:?}", out);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// Raw clone children

#[test]
fn a_raw_clone_child_reports_only_its_own_activity() {
    let prog = compile_c("tests/c/raw_clone.c", &[]);
    let dir = scratch_dir("clone");
    let template = dir.join("r.%p.json");
    let out = Run::with("advise")
        .env("KSMAUTO_STATS", template.to_str().unwrap())
        .env("KSMAUTO_STATS_FORMAT", "json")
        .output(&prog, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut reports: Vec<serde_json::Value> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let body = std::fs::read_to_string(e.unwrap().path()).unwrap();
            serde_json::from_str(body.trim()).unwrap()
        })
        .collect();
    assert_eq!(reports.len(), 2, "one report per process: {reports:?}");
    reports.sort_by_key(|r| r["advised"]["by_source"]["mmap"]["regions"].as_u64());
    assert_eq!(
        reports[0]["advised"]["by_source"]["mmap"]["regions"], 0,
        "the clone child counted its parent's regions: {}",
        reports[0]
    );
    assert_eq!(reports[1]["advised"]["by_source"]["mmap"]["regions"], 5);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// The catch-up thread (advise mode)

/// A daemon that blocks SIGTERM and reads it through signalfd, while the
/// library's thread runs: the signal stays pending for the daemon (the
/// thread blocks every signal); before, a thread that did not block it
/// took it and the process died of it.
#[test]
fn the_catch_up_thread_takes_no_signal_the_program_blocked() {
    let prog = compile_c("tests/c/catch_up_thread.c", &[]);
    let run = Run::with("advise").env("KSMAUTO_STATS", "off");
    let out = run.output(&prog, &["signal"]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "killed by the signal it reads through signalfd: {:?}\n{stdout}",
        out.status
    );
    assert_eq!(
        field_u64(&stdout, "threads_before"),
        2,
        "the library's thread did not run when the signal came:\n{stdout}"
    );
    assert!(stdout.contains("clean shutdown on signal 15"), "{stdout}");
}

/// Right after `fork` returns, the parent counts its threads (CPython 3.12+
/// warns when there is more than one): the library's thread, running
/// before, is gone (stopped in the `fork` prepare handler, not restarted
/// until the next news, the brk heap's growth from right before the fork
/// held for a moment), and the child starts with only its own.
#[test]
fn fork_returns_with_only_the_programs_threads() {
    let prog = compile_c("tests/c/catch_up_thread.c", &[]);
    let run = Run::with("advise").env("KSMAUTO_STATS", "off");
    let stdout = run_ok(&prog, &run, &["fork"]);
    assert_eq!(field_u64(&stdout, "threads_before"), 2, "{stdout}");
    assert_eq!(field_u64(&stdout, "parent_after_fork"), 1, "{stdout}");
    assert_eq!(field_u64(&stdout, "child"), 1, "{stdout}");
    // `process` registering only what pays (issue 21) has the thread for
    // its decisions: gone when `fork` returns, as in `advise` (the brk
    // heap's growth, which is news for the decisions too, held). Its
    // decisions need ksmd's clock.
    let run = Run::with("process")
        .env("KSMAUTO_STATS", "off")
        .env("KSMAUTO_REGISTER", "paying");
    let stdout = run_ok(&prog, &run, &["fork"]);
    if std::fs::read_to_string("/sys/kernel/mm/ksm/full_scans").is_ok() {
        assert_eq!(field_u64(&stdout, "threads_before"), 2, "process: {stdout}");
    }
    assert_eq!(field_u64(&stdout, "parent_after_fork"), 1, "process: {stdout}");
    assert_eq!(field_u64(&stdout, "child"), 1, "process: {stdout}");
    // No thread at all in `off`, nor in `process` registering everything.
    for (mode, register) in [("process", "all"), ("off", "paying")] {
        let run = Run::with(mode)
            .env("KSMAUTO_STATS", "off")
            .env("KSMAUTO_REGISTER", register);
        let out = run.output(&prog, &["fork"]);
        let stdout = text(&out.stdout);
        assert_eq!(field_u64(&stdout, "threads_before"), 1, "{mode}: {stdout}");
    }
}

/// A single-threaded program that restricts itself through libc right
/// after allocating — `no_new_privs`, a dropped capability, `setresuid` by
/// raw system call (changes the calling thread only) — has no thread left
/// that escaped the restriction: the library's thread is stopped and gone
/// first, and one that comes back with later news inherits it. A seccomp
/// allow-list applied to every thread (`TSYNC`) kills no one: the
/// library's thread, which would make calls outside it, is gone first.
#[test]
fn restricting_itself_leaves_no_unrestricted_thread_of_the_library() {
    if !have_root("capabilities, setresuid") {
        return;
    }
    let prog = compile_c("tests/c/thread_restrictions.c", &[]);
    let run = Run::with("advise").env("KSMAUTO_STATS", "off");
    for how in ["nnp", "caps", "rawuid"] {
        let stdout = run_ok(&prog, &run, &[how]);
        assert_eq!(
            field_u64(&stdout, "tasks_before"),
            2,
            "{how}: the library's thread did not run before:\n{stdout}"
        );
        assert_eq!(field_u64(&stdout, "unrestricted"), 0, "{how}:\n{stdout}");
        assert_eq!(
            field_u64(&stdout, "unrestricted_after"),
            0,
            "{how}, after the thread came back:\n{stdout}"
        );
    }
    let out = run.output(&prog, &["tsync"]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "tasks_before 2\nsurvived\n".to_string()),
        "tsync: {:?}",
        out.status
    );
}

/// A child forked by a thread other than the main one ends when that
/// thread (its main thread there) returns from its start routine, or calls
/// `pthread_exit`: the process ends with the program's last thread, as
/// without the library. With catch-up passes an hour apart a library
/// thread never settles by itself, so a child it kept alive would never
/// end (before the fix: a routine that returns ends the main thread
/// without `pthread_exit`, which no hook saw). Since glibc would then end
/// the child from the library's thread (the program's `atexit` handlers on
/// its stack), such a child does without one: the news the child makes
/// starts none (`child_threads 1`).
#[test]
fn a_child_forked_by_a_thread_ends_with_that_thread() {
    let prog = compile_c("tests/c/fork_from_thread.c", &[]);
    for how in ["return", "pthread_exit"] {
        let run = Run {
            timeout: std::time::Duration::from_secs(20),
            ..Run::with("advise")
                .env("KSMAUTO_STATS", "off")
                .env("KSMAUTO_SCAN_INTERVAL", "3600s")
        };
        let out = run.output(&prog, &[how]);
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{how}: {:?} (a child kept alive by the library's thread?)\n{stdout}",
            out.status
        );
        assert_eq!(field_u64(&stdout, "child_threads"), 1, "{how}: {stdout}");
        assert_eq!(field_u64(&stdout, "child status"), 0, "{how}: {stdout}");
    }
}

// ---------------------------------------------------------------------------
// Caller-supplied thread stacks

#[test]
fn a_thread_stack_inside_the_heap_leaves_the_heap_mergeable() {
    let prog = compile_c("tests/c/user_stack.c", &[]);
    let stdout = run_ok(&prog, &Run::with("process"), &[]);
    assert_eq!(
        field(&stdout, "heap mergeable before").as_deref(),
        Some("1"),
        "{stdout}"
    );
    assert_eq!(
        field(&stdout, "heap mergeable after").as_deref(),
        Some("1"),
        "the thread's stack took the whole heap out of merging:\n{stdout}"
    );
}

// ---------------------------------------------------------------------------
// Build and exit path

#[test]
fn a_debug_build_is_loadable() {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--lib", "--quiet"])
        .current_dir(repo())
        .status()
        .unwrap();
    assert!(status.success());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let debug_lib = target.join("debug/libksmauto.so");
    for mode in ["advise", "process"] {
        let out = Command::new(config_prog())
            .env("LD_PRELOAD", &debug_lib)
            .env("KSMAUTO_MODE", mode)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{mode}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "hello from config_prog\n");
        if mode == "advise" {
            assert!(
                text(&out.stderr).contains("advised"),
                "{}",
                text(&out.stderr)
            );
        }
    }
}

/// The files a run of `config_prog` under `run` opened, by strace.
fn opened_files(run: Run) -> String {
    let trace = scratch_dir("strace").join("trace");
    let mut cmd = run.command("strace");
    cmd.args(["-f", "-qq", "-e", "trace=openat", "-o"])
        .arg(&trace)
        .arg(config_prog())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = run_with_timeout(cmd, std::time::Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    std::fs::read_to_string(&trace).unwrap()
}

#[test]
fn the_exit_path_reads_smaps_only_when_it_prints() {
    if Command::new("strace").arg("-V").output().is_err() {
        panic!("strace is missing (scripts/test installs it)");
    }
    // off: nothing to say, so no smaps walk at exit.
    let trace = opened_files(Run::with("off"));
    assert!(
        trace.contains("/proc/thread-self/ksm_stat"),
        "the exit path did not run:\n{trace}"
    );
    assert!(
        !trace.contains("/proc/thread-self/smaps"),
        "smaps read for a report that is not printed:\n{trace}"
    );
    // Control: a requested report does read it.
    let trace = opened_files(Run::with("off").env("KSMAUTO_STATS", "stderr"));
    assert!(trace.contains("/proc/thread-self/smaps"), "{trace}");
}

// ---------------------------------------------------------------------------
// Merge-any must not pass into a program the library does not run in

struct ExecLab {
    dir: PathBuf,
    lib: PathBuf,
    parent: PathBuf,
}

impl ExecLab {
    /// A directory `nobody` can use: the library, the parent program, a
    /// set-user-ID root probe, a static probe and a plain dynamic probe.
    fn new() -> ExecLab {
        let dir = scratch_dir("exec");
        let lib = dir.join("libksmauto.so");
        std::fs::copy(common::lib(), &lib).unwrap();
        let parent = dir.join("exec_leak");
        std::fs::copy(compile_c("tests/c/exec_leak.c", &[]), &parent).unwrap();
        let probe = compile_c("tests/c/merge_any_probe.c", &[]);
        let static_probe = compile_c("tests/c/merge_any_probe.c", &["-static"]);
        let static_pie_probe = compile_c("tests/c/merge_any_probe.c", &["-static-pie"]);
        for (name, from, mode) in [
            ("setuid-probe", &probe, 0o4755),
            // Execute-only, as some distributions install set-user-ID
            // programs: nobody cannot read it, yet can run it.
            ("setuid-exec-only-probe", &probe, 0o4711),
            ("static-probe", &static_probe, 0o755),
            ("static-pie-probe", &static_pie_probe, 0o755),
            ("plain-probe", &probe, 0o755),
        ] {
            std::fs::copy(from, dir.join(name)).unwrap();
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
        for f in [&lib, &parent] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // Scripts run by the kernel with their interpreter's credentials.
        for (name, interpreter) in [
            ("setuid-script", "setuid-probe"),
            ("static-script", "static-probe"),
            ("plain-script", "plain-probe"),
        ] {
            let script = dir.join(name);
            std::fs::write(&script, format!("#!{}\n", dir.join(interpreter).display())).unwrap();
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // A 32-bit program: a 64-bit library never runs in it.
        let object = dir.join("probe32.o");
        let assembled = Command::new("as")
            .arg("--32")
            .arg("-o")
            .arg(&object)
            .arg(repo().join("tests/c/merge_any_probe32.s"))
            .status()
            .expect("run as (binutils)");
        assert!(assembled.success(), "as --32 failed");
        let linked = Command::new("ld")
            .args(["-m", "elf_i386", "-o"])
            .arg(dir.join("probe32"))
            .arg(&object)
            .status()
            .expect("run ld");
        assert!(linked.success(), "ld -m elf_i386 failed");
        // An executable file of no format the kernel knows: its exec fails
        // (ENOEXEC), yet the guard cannot know that (a binfmt_misc handler
        // might claim it), so it switches merge-any off for it: a failing
        // exec that lends merge-any, for the races below.
        std::fs::write(dir.join("unknown-format"), "not a program\n").unwrap();
        std::fs::set_permissions(
            dir.join("unknown-format"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let fifo = std::ffi::CString::new(dir.join("fifo").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o777) }, 0);
        std::fs::set_permissions(dir.join("fifo"), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::copy(&static_probe, dir.join("sub/prog")).unwrap();
        std::fs::set_permissions(dir.join("sub"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.join("sub/prog"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        ExecLab { dir, lib, parent }
    }

    /// Runs the parent as `nobody` under the preload in `process` mode;
    /// returns its stdout (the parent's and the probe's lines).
    fn run(&self, how: &str, probe: &str) -> String {
        self.run_with(how, probe, &[])
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn run_with(&self, how: &str, probe: &str, extra: &[&str]) -> String {
        self.run_as(true, how, probe, extra)
    }

    /// `as_nobody`: as `nobody` (through `setpriv`), else as root (what
    /// `mlockall` needs beyond the default locked-memory limit).
    fn run_as(&self, as_nobody: bool, how: &str, probe: &str, extra: &[&str]) -> String {
        let target = if how == "execlp" || how == "spawn-chdir" {
            probe.to_string()
        } else {
            self.dir.join(probe).display().to_string()
        };
        let mut cmd = Command::new(if as_nobody { "setpriv" } else { "env" });
        if as_nobody {
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        }
        cmd.arg(&self.parent)
            .args([how, &target])
            .args(extra)
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", self.dir.display()))
            .env("LD_PRELOAD", &self.lib)
            .env("KSMAUTO_MODE", "process")
            .env("KSMAUTO_STATS", "off")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let out = run_with_timeout(cmd, std::time::Duration::from_secs(60));
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{how} {probe}: {stdout}\n{}",
            text(&out.stderr)
        );
        assert_eq!(
            field(&stdout, "parent merge_any").as_deref(),
            Some("1"),
            "{how}: the parent is not in process mode:\n{stdout}"
        );
        stdout
    }
}

impl Drop for ExecLab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn merge_any_of(stdout: &str, who: &str) -> String {
    field(stdout, &format!("{who} merge_any"))
        .unwrap_or_else(|| panic!("no `{who} merge_any` line in:\n{stdout}"))
}

#[test]
fn merge_any_never_passes_into_a_setuid_static_or_unpreloaded_program() {
    if !have_root("setuid probe, setpriv") {
        return;
    }
    if std::fs::read_to_string("/sys/kernel/mm/ksm/run").is_err() {
        panic!("no KSM in this kernel: merge-any cannot be tested");
    }
    let lab = ExecLab::new();
    // Control: a dynamic program whose environment keeps the library runs
    // it, and the library (in process mode there too) sets merge-any itself.
    let out = lab.run("execv", "plain-probe");
    assert_eq!(merge_any_of(&out, "execv"), "1", "{out}");

    let out = lab.run("execv", "setuid-exec-only-probe");
    assert_eq!(
        merge_any_of(&out, "execv"),
        "0",
        "an execute-only set-user-ID program inherited merge-any:\n{out}"
    );
    let out = lab.run("execv", "static-pie-probe");
    assert_eq!(
        merge_any_of(&out, "execv"),
        "0",
        "static-PIE program:\n{out}"
    );
    for how in ["execv", "execl", "execlp", "posix_spawn", "vfork"] {
        let out = lab.run(how, "setuid-probe");
        assert_eq!(
            merge_any_of(&out, how),
            "0",
            "{how}: a set-user-ID program inherited merge-any:\n{out}"
        );
        if how == "posix_spawn" || how == "vfork" {
            assert_eq!(
                merge_any_of(&out, "parent after"),
                "1",
                "{how}: the parent did not get merge-any back:\n{out}"
            );
        }
    }
    let out = lab.run("execv", "static-probe");
    assert_eq!(merge_any_of(&out, "execv"), "0", "static program:\n{out}");
    let out = lab.run("execve-noenv", "plain-probe");
    assert_eq!(
        merge_any_of(&out, "execve-noenv"),
        "0",
        "a program started without the library:\n{out}"
    );
}

/// The 32-bit probe reports its flag as its exit status.
fn exit_status_of_32_bit_probe(lab: &ExecLab, env: &str) -> i32 {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&lab.parent)
        .args(["execve-env", &lab.path("probe32"), env])
        .env_clear()
        .env("LD_PRELOAD", &lab.lib)
        .env("KSMAUTO_MODE", "process")
        .env("KSMAUTO_STATS", "off")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = run_with_timeout(cmd, std::time::Duration::from_secs(60));
    assert!(text(&out.stdout).contains("parent merge_any 1"), "{out:?}");
    out.status.code().expect("exit status")
}

#[test]
fn merge_any_follows_the_kernel_through_scripts_foreign_elf_chdir_and_fake_preloads() {
    if !have_root("setuid probe, setpriv") {
        return;
    }
    let lab = ExecLab::new();
    // Control: a script whose interpreter loads the library.
    let out = lab.run("execv", "plain-script");
    assert_eq!(merge_any_of(&out, "execv"), "1", "{out}");
    // The kernel runs a script with its interpreter's credentials and code.
    for script in ["setuid-script", "static-script"] {
        let out = lab.run("execv", script);
        assert_eq!(merge_any_of(&out, "execv"), "0", "{script}:\n{out}");
    }
    // A 32-bit program, with the library named in its environment.
    let preload = format!("LD_PRELOAD={}", lab.lib.display());
    assert_eq!(
        exit_status_of_32_bit_probe(&lab, &preload),
        0,
        "32-bit program"
    );
    // A relative path that a spawn's file action resolves elsewhere (with
    // and without a slash: posix_spawn does not search PATH).
    for relative in ["./prog", "prog"] {
        let out = lab.run_with("spawn-chdir", relative, &[&lab.path("sub")]);
        assert_eq!(merge_any_of(&out, "spawn-chdir"), "0", "{relative}: {out}");
    }
    // LD_PRELOAD naming a file that is not there loads nothing.
    let out = lab.run_with(
        "execve-env",
        "plain-probe",
        &["LD_PRELOAD=/nonexistent/libksmauto.so"],
    );
    assert_eq!(merge_any_of(&out, "execve-env"), "0", "{out}");
    // Control: naming the library itself keeps it (and merge-any) there.
    let out = lab.run_with("execve-env", "plain-probe", &[&preload]);
    assert_eq!(merge_any_of(&out, "execve-env"), "1", "{out}");
    // execle's own environment (on the stack, past ten arguments) decides.
    let out = lab.run_with("execle-env", "plain-probe", &["PATH=/bin"]);
    assert_eq!(merge_any_of(&out, "execle-env"), "0", "{out}");
    let out = lab.run_with("execle-env", "plain-probe", &[&preload]);
    assert_eq!(merge_any_of(&out, "execle-env"), "1", "{out}");
}

#[test]
fn exec_of_a_fifo_fails_at_once_as_without_the_library() {
    if !have_root("setpriv") {
        return;
    }
    let lab = ExecLab::new();
    // A blocking open of the FIFO would hang here until the run's timeout.
    let out = lab.run("fifo", "fifo");
    assert!(out.contains("fifo execve -1 EACCES"), "{out}");
}

#[test]
fn a_failing_exec_in_one_thread_never_switches_merge_any_back_on_under_another() {
    if !have_root("setpriv") {
        return;
    }
    let lab = ExecLab::new();
    let out = lab.run_with("race", "static-probe", &[&lab.path("unknown-format")]);
    let leaked = out.lines().filter(|l| *l == "race merge_any 1").count();
    let clean = out.lines().filter(|l| *l == "race merge_any 0").count();
    assert!(
        clean >= 390,
        "the static probe ran only {clean} times:\n{out}"
    );
    assert_eq!(leaked, 0, "{leaked} static programs inherited merge-any");
}

#[test]
fn after_mlockall_no_failing_exec_switches_merge_any_back_on() {
    if !have_root("setpriv") {
        return;
    }
    let lab = ExecLab::new();
    for _ in 0..5 {
        let out = lab.run_as(
            false,
            "mlockall-race",
            "static-probe",
            &[&lab.path("unknown-format")],
        );
        assert_eq!(
            merge_any_of(&out, "mlockall-race"),
            "0",
            "merge-any came back on after mlockall:\n{out}"
        );
    }
}

// ---------------------------------------------------------------------------
// Programs that sandbox themselves with seccomp

#[test]
fn a_program_that_installs_a_seccomp_allow_list_is_not_killed() {
    let prog = compile_c("tests/c/seccomp_sandbox.c", &[]);
    let expected = run_ok(&prog, &Run::without(), &["prctl"]);
    assert_eq!(expected, "sum=4950\n");
    for how in ["prctl", "syscall"] {
        for mode in ["default", "advise", "process"] {
            for stats in ["stderr", "off"] {
                let out = Run::with(mode)
                    .env("KSMAUTO_STATS", stats)
                    .env("KSMAUTO_SCAN_INTERVAL", "1ms")
                    .output(&prog, &[how]);
                assert_eq!(
                    (out.status.code(), text(&out.stdout)),
                    (Some(0), expected.clone()),
                    "{how} {mode} stats={stats}: killed by its own sandbox? {:?}",
                    out.status
                );
            }
        }
    }
}
