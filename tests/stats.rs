//! The exit report: its JSON fields and their values for a program with a
//! known set of mappings, the text form, when it stays silent, where it goes
//! (`%p` paths, unwritable paths, closed stdio, a broken stderr pipe), that it
//! is written however the process ends, that a forked child reports only its
//! own work, and (with KSM) that the kernel section shows real merging.

use common::*;
use ksmauto_contract::proc::Stat;
use ksmauto_testsupport as common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

fn prog() -> PathBuf {
    compile_c("tests/c/stats_prog.c", &[])
}

/// A fresh empty directory for this test's report files.
fn scratch(name: &str) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("ksmauto-stats-{}-{seq}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs like [`Run::output`] and also returns the child's pid.
fn output_with_pid(run: &Run, program: &Path, args: &[&str]) -> (u32, Output) {
    let mut cmd = run.command(program);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program:?}: {e}"));
    let pid = child.id();
    let killer = std::thread::spawn(move || {
        // A backstop only: the programs here finish in well under a second
        // (the KSM one waits for ksmd, bounded by its own 60 s timeout).
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_secs(120) {
            if std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
                Stat::parse(s.as_bytes()).and_then(|s| s.state()) == Some(b'Z')
            }) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let out = child.wait_with_output().expect("wait");
    let _ = killer.join();
    (pid, out)
}

/// The single JSON report in `path` (exactly one line, one object).
fn one_json_report(path: &Path) -> Value {
    let body = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no report at {}: {e}", path.display()));
    assert_eq!(
        body.lines().count(),
        1,
        "expected exactly one report line in {}:\n{body}",
        path.display()
    );
    assert!(
        body.ends_with('\n'),
        "report must end with a newline: {body:?}"
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{body}"))
}

fn u(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no unsigned {pointer} in {v}"))
}

fn keys(v: &Value, pointer: &str) -> Vec<String> {
    v.pointer(pointer)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no object {pointer} in {v}"))
        .keys()
        .cloned()
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn names(list: &[&str]) -> Vec<String> {
    sorted(list.iter().map(|s| s.to_string()).collect())
}

const REGION: u64 = 64 * 1024;

/// Runs `stats_prog maps` with a JSON report to a file; returns (pid, stdout, stderr, report).
fn maps_report(run: Run) -> (u32, String, String, Value) {
    let dir = scratch("maps");
    let path = dir.join("report.json");
    let run = run
        .env("KSMAUTO_STATS", path.to_str().unwrap())
        .env("KSMAUTO_STATS_FORMAT", "json");
    let (pid, out) = output_with_pid(&run, &prog(), &["maps"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{:?}\n{stdout}\n{stderr}", out.status);
    let report = one_json_report(&path);
    let _ = std::fs::remove_dir_all(&dir);
    (pid, stdout, stderr, report)
}

#[test]
fn json_report_has_exactly_the_documented_keys() {
    let (_, _, _, r) = maps_report(Run::with("advise").env("KSMAUTO_REGISTER", "paying"));
    assert_eq!(
        sorted(keys(&r, "")),
        names(&[
            "ksmauto",
            "pid",
            "start_time",
            "mode",
            "requested_mode",
            "fallback_reason",
            "min_size",
            "catchup_scans",
            "catchup",
            "exclude",
            "calls",
            "advised",
            "skipped",
            "madvise_failures",
            "excluded",
            "unmerged",
            "execs_without_merge_any",
            "register",
            "paying",
            "kernel",
            "smaps"
        ])
    );
    // `advise` on a kernel with KSM: the decisions about what pays are on.
    assert_eq!(r["register"], "paying");
    assert_eq!(
        sorted(keys(&r, "/paying")),
        names(&[
            "registered_bytes",
            "probation",
            "resting",
            "taken_out",
            "taken_out_on_sight",
            "probed_again",
            "probed_on_change",
            "probed_on_sighting",
            "found_paying",
            "refused",
            "deferred",
            "rounds"
        ])
    );
    for pair in [
        "resting",
        "taken_out",
        "taken_out_on_sight",
        "probed_again",
        "probed_on_change",
        "probed_on_sighting",
    ] {
        assert_eq!(
            sorted(keys(&r, &format!("/paying/{pair}"))),
            names(&["regions", "bytes"])
        );
    }
    assert_eq!(sorted(keys(&r, "/calls")), names(&HOOK_NAMES));
    assert_eq!(
        sorted(keys(&r, "/catchup")),
        names(&["steps", "vmas", "revoked", "thread"])
    );
    assert_eq!(
        sorted(keys(&r, "/catchup/thread")),
        names(&["starts", "retired", "without"])
    );
    assert_eq!(
        sorted(keys(&r, "/advised")),
        names(&["regions", "bytes", "by_source"])
    );
    assert_eq!(
        sorted(keys(&r, "/advised/by_source")),
        names(&["mmap", "api", "catchup"])
    );
    for source in ["mmap", "api", "catchup"] {
        assert_eq!(
            sorted(keys(&r, &format!("/advised/by_source/{source}"))),
            names(&["regions", "bytes"])
        );
    }
    assert_eq!(
        sorted(keys(&r, "/skipped")),
        names(&[
            "shared",
            "file",
            "hugetlb",
            "small",
            "exec",
            "stack",
            "excluded",
            "map_count"
        ])
    );
    assert_eq!(
        sorted(keys(&r, "/madvise_failures")),
        names(&["total", "EINVAL", "ENOMEM", "EAGAIN", "EPERM", "other"])
    );
    assert_eq!(sorted(keys(&r, "/excluded")), names(&["regions", "bytes"]));
    assert_eq!(sorted(keys(&r, "/unmerged")), names(&["regions", "bytes"]));
    // This kernel has KSM, so both kernel views are objects, not null.
    assert_eq!(
        sorted(keys(&r, "/kernel")),
        names(&[
            "rmap_items",
            "merging_pages",
            "zero_pages",
            "profit",
            "merge_any",
            "page_size",
            "rmap_items_per_merged_page"
        ])
    );
    assert_eq!(
        sorted(keys(&r, "/smaps")),
        names(&[
            "ksm_kb",
            "anon_kb",
            "mergeable_anon_kb",
            "mergeable_percent"
        ])
    );
    assert_eq!(
        sorted(keys(&r, "/smaps/ksm_kb")),
        names(&["heap", "anon", "stack", "other"])
    );
}

#[test]
fn json_report_counts_five_advised_regions_and_the_skipped_shared_and_file_mappings() {
    let (pid, stdout, stderr, r) = maps_report(Run::with("advise"));
    assert_eq!(stderr, "", "a report to a file must leave stderr alone");
    assert_eq!(stdout, format!("pid {pid}\n"));
    assert_eq!(r["ksmauto"], env!("CARGO_PKG_VERSION"));
    assert_eq!(u(&r, "/pid"), pid as u64);
    assert_eq!(r["mode"], "advise");
    assert_eq!(r["requested_mode"], "advise");
    assert!(r["fallback_reason"].is_null(), "{r}");
    assert_eq!(u(&r, "/min_size"), 4096);
    assert_eq!(r["exclude"], serde_json::json!(["stack", "secret"]));
    assert_eq!(u(&r, "/advised/by_source/mmap/regions"), 5, "{r}");
    // The whole VMA each mapping landed in is advised, which can include an
    // anonymous neighbour the kernel merged it with: at least the regions.
    assert!(u(&r, "/advised/by_source/mmap/bytes") >= 5 * REGION, "{r}");
    assert_eq!(u(&r, "/advised/by_source/api/regions"), 0, "{r}");
    assert!(u(&r, "/advised/regions") >= 5, "{r}");
    assert!(u(&r, "/advised/bytes") >= 5 * REGION, "{r}");
    assert!(u(&r, "/skipped/shared") >= 1, "{r}");
    assert!(u(&r, "/skipped/file") >= 1, "{r}");
    assert_eq!(u(&r, "/skipped/small"), 0, "{r}");
    assert!(u(&r, "/calls/mmap") >= 7, "{r}");
    assert_eq!(u(&r, "/madvise_failures/total"), 0, "{r}");
    assert_eq!(u(&r, "/excluded/regions"), 0, "{r}");
    assert_eq!(
        r["kernel"]["merge_any"], false,
        "advise mode must not turn on merge-any: {r}"
    );
    assert_eq!(u(&r, "/kernel/page_size"), 4096);
    // The five touched regions are anonymous memory carrying `mg`.
    assert!(
        u(&r, "/smaps/mergeable_anon_kb") >= 5 * REGION / 1024,
        "{r}"
    );
    assert!(
        u(&r, "/smaps/anon_kb") >= u(&r, "/smaps/mergeable_anon_kb"),
        "{r}"
    );
}

#[test]
fn min_size_128k_turns_the_five_64k_regions_into_skipped_small() {
    let (_, _, _, r) = maps_report(Run::with("advise").env("KSMAUTO_MIN_SIZE", "128K"));
    assert_eq!(u(&r, "/min_size"), 128 * 1024);
    assert_eq!(u(&r, "/advised/by_source/mmap/regions"), 0, "{r}");
    assert_eq!(u(&r, "/advised/by_source/mmap/bytes"), 0, "{r}");
    assert!(u(&r, "/skipped/small") >= 5, "{r}");
    assert!(
        u(&r, "/skipped/shared") >= 1 && u(&r, "/skipped/file") >= 1,
        "{r}"
    );
}

#[test]
fn default_text_report_on_stderr_names_pid_mode_and_the_five_regions() {
    let (pid, out) = output_with_pid(&Run::with("advise"), &prog(), &["maps"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{:?}\n{stderr}", out.status);
    assert_eq!(
        stdout,
        format!("pid {pid}\n"),
        "the report must not go to stdout"
    );
    assert_eq!(
        stderr.lines().count(),
        2,
        "the text report is two lines:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("ksmauto[{pid}]: mode advise")),
        "{stderr}"
    );
    assert!(stderr.contains("advised 5 regions,"), "{stderr}");
    assert!(
        stderr.contains("shared 1") && stderr.contains("file 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("ksmauto[{pid}]: kernel: ")),
        "{stderr}"
    );
}

#[test]
fn stats_off_suppresses_the_report_of_a_process_that_advised_regions() {
    let out = Run::with("advise")
        .env("KSMAUTO_STATS", "off")
        .output(prog(), &["maps"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stderr), "");
}

fn assert_silent(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}: {:?}", out.status);
    assert_eq!(
        text(&out.stderr),
        "",
        "{what} must print nothing on stderr by default"
    );
    assert_eq!(text(&out.stdout), "", "{what} must print nothing on stdout");
}

#[test]
fn bin_true_is_silent_under_the_preload_by_default() {
    assert_silent(
        &Run::with("default").output("/bin/true", &[]),
        "/bin/true (mode auto)",
    );
    assert_silent(
        &Run::with("advise").output("/bin/true", &[]),
        "/bin/true (mode advise)",
    );
}

#[test]
fn program_that_maps_nothing_is_silent_by_default() {
    assert_silent(
        &Run::with("default").output(prog(), &["nothing"]),
        "stats_prog nothing (mode auto)",
    );
    assert_silent(
        &Run::with("advise").output(prog(), &["nothing"]),
        "stats_prog nothing (mode advise)",
    );
}

#[test]
fn explicit_stats_stderr_makes_an_idle_process_report() {
    for program in [Path::new("/bin/true").to_path_buf(), prog()] {
        let args: &[&str] = if program.ends_with("true") {
            &[]
        } else {
            &["nothing"]
        };
        let (pid, out) = output_with_pid(
            &Run::with("advise").env("KSMAUTO_STATS", "stderr"),
            &program,
            args,
        );
        let stderr = text(&out.stderr);
        assert!(out.status.success());
        assert_eq!(stderr.lines().count(), 2, "{program:?}:\n{stderr}");
        assert!(
            stderr.contains(&format!("ksmauto[{pid}]: mode advise; advised 0 regions")),
            "{program:?}:\n{stderr}"
        );
    }
}

#[test]
fn percent_p_in_the_stats_path_becomes_the_child_pid() {
    let dir = scratch("percent-p");
    let template = dir.join("s.%p.json");
    let run = Run::with("advise")
        .env("KSMAUTO_STATS", template.to_str().unwrap())
        .env("KSMAUTO_STATS_FORMAT", "json");
    let (pid, out) = output_with_pid(&run, &prog(), &["maps"]);
    assert!(out.status.success());
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, vec![format!("s.{pid}.json")]);
    let r = one_json_report(&dir.join(format!("s.{pid}.json")));
    assert_eq!(u(&r, "/pid"), pid as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn double_percent_in_the_stats_path_becomes_one_percent() {
    let dir = scratch("percent-percent");
    let template = dir.join("s.%%.%p.json");
    let run = Run::with("advise")
        .env("KSMAUTO_STATS", template.to_str().unwrap())
        .env("KSMAUTO_STATS_FORMAT", "json");
    let (pid, out) = output_with_pid(&run, &prog(), &["maps"]);
    assert!(out.status.success());
    let r = one_json_report(&dir.join(format!("s.%.{pid}.json")));
    assert_eq!(u(&r, "/pid"), pid as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

fn assert_one_warning_for_unwritable(path: &str) {
    let run = Run::with("advise").env("KSMAUTO_STATS", path);
    let out = run.output(prog(), &["exit7"]);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(7),
        "exit status must stay the program's: {:?}\n{stderr}",
        out.status
    );
    assert_eq!(text(&out.stdout), "sigpipe_default 1\ndone\n");
    assert_eq!(
        stderr.lines().count(),
        1,
        "exactly one warning line expected:\n{stderr}"
    );
    assert!(stderr.ends_with('\n'), "{stderr:?}");
    assert!(stderr.starts_with("ksmauto: "), "{stderr}");
    assert!(
        stderr.contains("KSMAUTO_STATS"),
        "the warning must name the variable: {stderr}"
    );
    assert!(
        stderr.contains(path),
        "the warning must name the path: {stderr}"
    );
}

#[test]
fn unwritable_stats_path_under_proc_gives_one_warning_line_and_keeps_exit_status() {
    assert_one_warning_for_unwritable("/proc/nonexistent/x");
}

#[test]
fn stats_path_in_a_missing_directory_gives_one_warning_line_and_keeps_exit_status() {
    let dir = scratch("missing-dir");
    let path = dir.join("no/such/dir/s.%p.json");
    assert_one_warning_for_unwritable(path.to_str().unwrap());
    assert!(!dir.join("no").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `stats_prog <scenario>` with a JSON report to a file; returns the output and report.
fn report_of_scenario(scenario: &str) -> (u32, Output, Value) {
    let dir = scratch(scenario);
    let path = dir.join("r.json");
    let run = Run::with("advise")
        .env("KSMAUTO_STATS", path.to_str().unwrap())
        .env("KSMAUTO_STATS_FORMAT", "json");
    let (pid, out) = output_with_pid(&run, &prog(), &[scenario]);
    let r = one_json_report(&path);
    let _ = std::fs::remove_dir_all(&dir);
    (pid, out, r)
}

#[test]
fn report_is_written_when_main_returns() {
    let (pid, out, r) = report_of_scenario("maps");
    assert!(out.status.success());
    assert_eq!(u(&r, "/pid"), pid as u64);
}

#[test]
fn report_is_written_when_a_second_thread_calls_exit_while_main_is_blocked() {
    let (pid, out, r) = report_of_scenario("thread-exit");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{:?} {}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), format!("pid {pid}\n"));
    assert_eq!(u(&r, "/pid"), pid as u64);
    assert_eq!(u(&r, "/advised/by_source/mmap/regions"), 5, "{r}");
    assert_eq!(u(&r, "/calls/pthread_create"), 1, "{r}");
}

#[test]
fn report_is_written_to_a_file_when_stdout_and_stderr_are_closed() {
    let (pid, out, r) = report_of_scenario("close-stdio");
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(u(&r, "/pid"), pid as u64);
    assert_eq!(u(&r, "/advised/by_source/mmap/regions"), 5, "{r}");
}

#[test]
fn closed_stderr_with_the_default_stderr_destination_is_harmless() {
    // The default destination is fd 2, which the program closed: the report
    // is lost, but the process must still exit normally.
    let out = Run::with("advise").output(prog(), &["close-stdio"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", out.status);
    assert_eq!(text(&out.stdout), "");
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn report_to_a_stderr_pipe_without_reader_keeps_exit_status_7_not_sigpipe() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read_end); // nobody will ever read: writing the report gets EPIPE
    let mut cmd = Run::with("advise").command(prog());
    cmd.arg("exit7")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(write_end));
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    let stdout = text(&out.stdout);
    // The program runs with SIGPIPE at its default action (so a stray
    // SIGPIPE would kill it), and its default-mode report goes to stderr.
    assert_eq!(stdout, "sigpipe_default 1\ndone\n");
    assert_eq!(
        out.status.code(),
        Some(7),
        "the report must not change the exit status: {:?}",
        out.status
    );

    // Control: with a reader on the pipe the same run does write a report there.
    let out = Run::with("advise").output(prog(), &["exit7"]);
    assert_eq!(out.status.code(), Some(7));
    assert!(
        text(&out.stderr).contains("advised 5 regions"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn report_through_a_shell_pipeline_whose_reader_exited_keeps_exit_status_7() {
    // `prog 2>&1 >/dev/null | reader`, where the reader closes its end of the
    // pipe and only then (through a FIFO) lets the program start: the
    // program's report meets a pipe without readers, every time.
    let script = r#"
        mkfifo "$D/ready"
        { read -r _ < "$D/ready"; exec "$P" exit7 2>&1 >/dev/null; } | { exec 0<&-; echo go > "$D/ready"; }
        echo "status ${PIPESTATUS[0]}"
    "#;
    let dir = scratch("pipeline");
    let mut cmd = Run::with("advise").command("bash");
    cmd.arg("-c").arg(script).env("D", &dir).env("P", prog());
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = text(&out.stdout);
    assert_eq!(
        field(&stdout, "status").as_deref(),
        Some("7"),
        "141 would mean SIGPIPE:\n{stdout}\n{}",
        text(&out.stderr)
    );
}

#[test]
fn forked_child_reports_only_its_own_regions_and_the_parent_all_of_its_own() {
    let dir = scratch("fork");
    let template = dir.join("r.%p.json");
    let run = Run::with("advise")
        .env("KSMAUTO_STATS", template.to_str().unwrap())
        .env("KSMAUTO_STATS_FORMAT", "json");
    let (pid, out) = output_with_pid(&run, &prog(), &["fork"]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(field_u64(&stdout, "parent"), pid as u64);
    let child = field_u64(&stdout, "child");
    let parent_report = one_json_report(&dir.join(format!("r.{pid}.json")));
    let child_report = one_json_report(&dir.join(format!("r.{child}.json")));
    assert_eq!(u(&child_report, "/pid"), child);
    assert_eq!(
        u(&child_report, "/advised/by_source/mmap/regions"),
        2,
        "child: {child_report}"
    );
    // The whole VMA each mapping landed in is advised, which can include an
    // anonymous neighbour the kernel merged it with: at least the regions.
    assert!(
        u(&child_report, "/advised/by_source/mmap/bytes") >= 2 * REGION,
        "child: {child_report}"
    );
    assert_eq!(u(&parent_report, "/pid"), pid as u64);
    assert_eq!(
        u(&parent_report, "/advised/by_source/mmap/regions"),
        4,
        "parent: {parent_report}"
    );
    // The whole VMA each mapping landed in is advised, which can include an
    // anonymous neighbour the kernel merged it with: at least the regions.
    assert!(
        u(&parent_report, "/advised/by_source/mmap/bytes") >= 4 * REGION,
        "parent: {parent_report}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        2,
        "one report per process"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn kernel_section_shows_merging(mode: &str) {
    let Some(_ksmd) = ksmd() else { return };
    let dir = scratch(&format!("ksm-{mode}"));
    let path = dir.join("r.json");
    let run = Run::with(mode)
        .env("KSMAUTO_STATS", path.to_str().unwrap())
        .env("KSMAUTO_STATS_FORMAT", "json");
    let (pid, out) = output_with_pid(&run, &prog(), &["ksm"]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    let r = one_json_report(&path);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(u(&r, "/pid"), pid as u64);
    let merged = u(&r, "/kernel/merging_pages") + u(&r, "/kernel/zero_pages");
    assert!(merged > 0, "64 identical pages, 3 full scans, yet the report shows no merged pages (program saw {}): {r}", field_u64(&stdout, "merged"));
    assert!(field_u64(&stdout, "merged") > 0, "{stdout}");
    assert!(u(&r, "/kernel/rmap_items") > 0, "{r}");
    assert!(
        u(&r, "/smaps/ksm_kb/anon") > 0,
        "the mmap region is anonymous memory: {r}"
    );
}

/// The main thread ended with `pthread_exit` and another thread ended the
/// process: the report read `/proc/self/ksm_stat`, the main thread's, which
/// shows nothing once it has ended — 0 merged pages while the thread's own
/// entry showed them all.
#[test]
fn the_report_of_a_process_whose_main_thread_ended_first_shows_its_merged_pages() {
    let Some(_ksmd) = ksmd() else { return };
    let program = compile_c("tests/c/leader_exits.c", &["-pthread"]);
    for mode in ["process", "advise"] {
        let dir = scratch(&format!("leader-{mode}"));
        let path = dir.join("r.json");
        let run = Run::with(mode)
            .env("KSMAUTO_STATS", path.to_str().unwrap())
            .env("KSMAUTO_STATS_FORMAT", "json");
        let out = run.output(&program, &[]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{mode}: {:?} {stdout}", out.status);
        let seen = field_u64(&stdout, "merged");
        assert!(seen >= 60, "{mode}: ksmd merged only {seen} of 64 pages");
        let r = one_json_report(&path);
        let _ = std::fs::remove_dir_all(&dir);
        let merged = u(&r, "/kernel/merging_pages") + u(&r, "/kernel/zero_pages");
        assert!(
            merged >= 60,
            "{mode}: the thread saw {seen} merged pages, the report {merged}: {r}"
        );
    }
}

/// `start_time` names the process with its pid: it is the one of
/// `/proc/PID/stat` (ticks after boot), so no earlier than this test's own.
#[test]
fn the_report_names_its_process_by_pid_and_start_time() {
    let (pid, _, _, r) = maps_report(Run::with("advise"));
    let mine = std::fs::read_to_string("/proc/self/stat").unwrap();
    let mine = Stat::parse(mine.as_bytes())
        .and_then(|s| s.start_time())
        .unwrap();
    let theirs = u(&r, "/start_time");
    assert!(
        theirs >= mine,
        "pid {pid} started at {theirs}, before this test ({mine})"
    );
}

#[test]
fn ksm_kernel_section_shows_merged_pages_in_advise_mode() {
    kernel_section_shows_merging("advise");
}

#[test]
fn ksm_kernel_section_shows_merged_pages_in_process_mode() {
    kernel_section_shows_merging("process");
}

/// Report lines a run left on stderr (the text report's lines start with
/// `ksmauto:`).
fn report_lines(out: &Output) -> usize {
    text(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("ksmauto"))
        .count()
}

/// Issue 11, quiet inside services: a pre-forking server's workers stay
/// silent by default — only the process the user started reports (one
/// whose parent does not run the library) — so a server that forks a
/// worker per connection does not fill its log; with `KSMAUTO_STATS` set,
/// every process reports. Before: one report per worker.
#[test]
fn a_forking_servers_workers_stay_silent_unless_asked() {
    let prog = compile_c("tests/c/quiet_service.c", &[]);
    // Also workers that drop their privileges first (and can then no longer
    // read their parent's maps: before the fix, those still reported).
    for (mode, pool) in [
        ("advise", "pool"),
        ("process", "pool"),
        ("advise", "droppool"),
    ] {
        let quiet = Run::with(mode).output(&prog, &[pool, "4"]);
        assert!(quiet.status.success(), "{mode} {pool}: {:?}", quiet.status);
        let lines = report_lines(&quiet);
        let asked = Run::with(mode)
            .env("KSMAUTO_STATS", "stderr")
            .output(&prog, &[pool, "4"]);
        let all = report_lines(&asked);
        // The text report is two lines a process; under `process` nothing
        // is advised (and ksmd may be off), so unasked even the parent may
        // have nothing to say.
        let parent_alone = if mode == "advise" { 2 } else { lines.min(2) };
        assert!(
            lines == parent_alone && all == 10,
            "{mode} {pool}: {lines} report lines unasked, {all} with KSMAUTO_STATS=stderr \
             (expected the parent's alone, then all five processes'):\n{}",
            text(&quiet.stderr)
        );
    }
}

/// Workers that are exec'd rather than only forked, where the parent
/// cannot be asked whether it runs the library: one that dropped its
/// privileges before its exec (its parent's maps are root's), one whose
/// parent had already exited (an orphan). Before, both reported (under
/// `process`, until the library took merge-any coming through the exec as
/// the sign of a library parent; under `advise`, until issue 18, which made
/// a parent that cannot be asked, or that is init, mean silence in both
/// engines). A program the user starts through a launcher that execs in
/// place (`env`) still reports.
#[test]
fn exec_d_workers_stay_silent_when_their_parent_cannot_be_asked() {
    let prog = compile_c("tests/c/quiet_service.c", &[]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    for mode in ["process", "advise"] {
        let quiet = Run::with(mode).output(&prog, &["dropexec", "3"]);
        assert!(
            quiet.status.success(),
            "{mode}: {:?} {}",
            quiet.status,
            text(&quiet.stderr)
        );
        let lines = report_lines(&quiet);
        assert!(
            lines <= 2,
            "{mode} dropexec: {lines} report lines unasked (the parent's alone at most):\n{}",
            text(&quiet.stderr)
        );
        let asked = Run::with(mode)
            .env("KSMAUTO_STATS", "stderr")
            .output(&prog, &["dropexec", "3"]);
        assert_eq!(
            report_lines(&asked),
            8,
            "{mode} asked: {}",
            text(&asked.stderr)
        );
        let orphan = Run::with(mode).output(&prog, &["orphanexec"]);
        assert!(orphan.status.success());
        let lines = report_lines(&orphan);
        assert!(
            lines <= 2,
            "{mode} orphanexec: {lines} report lines unasked:\n{}",
            text(&orphan.stderr)
        );
        // By hand, through `env`: the program the user started speaks.
        let by_hand = Run::with(mode).output("env", &[prog.to_str().unwrap(), "child"]);
        assert!(by_hand.status.success());
        assert_eq!(
            report_lines(&by_hand),
            2,
            "{mode}: {}",
            text(&by_hand.stderr)
        );
    }
}

/// Review of issue 18, finding 6: a background job whose parent then
/// `exec`s its main program (a container entrypoint's `helper & exec
/// server`) was started by a process that ran the library, yet at its exit
/// the parent's maps are the new program's. Before, with a new program
/// without the library (a static server) the job reported unasked, whether
/// the library started in the job before the parent's `exec` or after
/// (the usual order: the shell's `exec` is quicker). Now the parent's
/// program file, recorded at start-up, must be the same at exit, and its
/// program must not have been started with an `LD_PRELOAD` naming the
/// library. Controls: a server that runs the library, and `& wait`, stay
/// silent; the job started by hand, and through `env`, reports.
#[test]
fn a_background_job_stays_silent_once_its_parent_execd_another_program() {
    let prog = compile_c("tests/c/quiet_service.c", &[]);
    let static_prog = compile_c("tests/c/quiet_service.c", &["-static"]);
    let dir = scratch("background-job");
    let (prog, static_prog) = (prog.to_str().unwrap(), static_prog.to_str().unwrap());
    let ready = dir.join("ready");
    let ready = ready.to_str().unwrap();
    let job_ready = dir.join("job-ready");
    let job_ready = job_ready.to_str().unwrap();
    // The parent `exec`s the server once READY exists: made by the job
    // itself (its library has started), or by a static waiter that then
    // waits for the `exec` and only then `exec`s the job.
    let then_exec = |job_starts_after_exec: bool, server: &str| {
        let job = if job_starts_after_exec {
            format!("'{static_prog}' after-parent-execs '{ready}' '{prog}' job '{job_ready}' now")
        } else {
            format!("'{prog}' job '{ready}' exec")
        };
        format!("{job} & while [ ! -e '{ready}' ]; do sleep 0.01; done; exec '{server}' reap")
    };
    for mode in ["advise", "process"] {
        let mut cases = vec![(
            "& wait".to_string(),
            format!("'{prog}' job '{ready}' now & wait"),
        )];
        for (when, after) in [("before", false), ("after", true)] {
            for (server, path) in [("static", static_prog), ("with the library", prog)] {
                let what = format!("the job started {when} the exec of a server {server}");
                cases.push((what, then_exec(after, path)));
            }
        }
        for (what, script) in &cases {
            let _ = std::fs::remove_file(ready);
            let _ = std::fs::remove_file(job_ready);
            let out = Run::with(mode).output("sh", &["-c", script]);
            assert!(
                out.status.success(),
                "{mode}, {what}: {script}: {:?}\n{}",
                out.status,
                text(&out.stderr)
            );
            assert_eq!(
                report_lines(&out),
                0,
                "{mode}, {what}: {script}: the job reported unasked:\n{}",
                text(&out.stderr)
            );
        }
        for launcher in [&[][..], &["env"][..]] {
            let _ = std::fs::remove_file(ready);
            let (program, args) = match launcher {
                [] => (prog, vec!["job", ready, "now"]),
                [l] => (*l, vec![prog, "job", ready, "now"]),
                _ => unreachable!(),
            };
            let out = Run::with(mode).output(program, &args);
            assert!(out.status.success(), "{mode}: {:?}", out.status);
            assert_eq!(
                report_lines(&out),
                2,
                "{mode}, started {launcher:?}: the process the user started must report:\n{}",
                text(&out.stderr)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Review of issue 18, finding 15: the launchers of
/// docs/report-format.md ("Who reports"). One that
/// `exec`s in place keeps the caller (here the test, which runs no
/// library) as the program's parent, and the program reports: `env`,
/// `nice`, `bash -c CMD` (bash `exec`s a lone command), `sh -c 'exec
/// CMD'`. A shell that forks for the command leaves itself, running the
/// library, as the parent, and the program stays silent: Debian's `/bin/sh`
/// (dash) for `sh -c CMD`, any shell for `CMD; other`. Before, the README
/// said `sh -c CMD` reports.
#[test]
fn the_documented_launchers_decide_whether_the_program_reports() {
    let prog = compile_c("tests/c/quiet_service.c", &[]);
    let prog = prog.to_str().unwrap();
    let lone = format!("'{prog}' child");
    let execd = format!("exec '{prog}' child");
    let then_more = format!("'{prog}' child; true");
    let dash = std::fs::canonicalize("/bin/sh").is_ok_and(|p| p.ends_with("dash"));
    let mut cases: Vec<(&str, Vec<&str>, bool)> = vec![
        ("env", vec![prog, "child"], true),
        ("nice", vec![prog, "child"], true),
        ("bash", vec!["-c", &lone], true),
        ("sh", vec!["-c", &execd], true),
        ("bash", vec!["-c", &then_more], false),
        ("sh", vec!["-c", &then_more], false),
        ("dash", vec!["-c", &lone], false),
    ];
    if dash {
        cases.push(("sh", vec!["-c", &lone], false));
    }
    for mode in ["advise", "process"] {
        for (launcher, args, reports) in &cases {
            let out = Run::with(mode).output(launcher, args);
            assert!(
                out.status.success(),
                "{mode} {launcher} {args:?}: {:?}",
                out.status
            );
            assert_eq!(
                report_lines(&out),
                if *reports { 2 } else { 0 },
                "{mode}: {launcher} {args:?} (reports: {reports}):\n{}",
                text(&out.stderr)
            );
        }
    }
}

/// Issue 11: a program that takes any output of its child on stderr for a
/// failure spawns a child that inherits the preload: the child's stderr
/// stays empty by default. Before: the child's report went there.
#[test]
fn a_child_whose_stderr_is_checked_writes_nothing_to_it() {
    let prog = compile_c("tests/c/quiet_service.c", &[]);
    for mode in ["advise", "process"] {
        let out = run_ok(&prog, &Run::with(mode), &["spawn"]);
        assert_eq!(field_u64(&out, "child_status"), 0, "{mode}: {out}");
        assert_eq!(field_u64(&out, "child_stderr_bytes"), 0, "{mode}: {out}");
    }
}
