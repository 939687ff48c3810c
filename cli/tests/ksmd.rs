//! `ksmauto ksmd save|restore|hold` and `compare --hold-ksmd` on the real
//! `/sys/kernel/mm/ksm` (root). Every test ends with every tunable as it
//! found it (checked against a snapshot read directly from sysfs: every
//! writable file there), and puts it back itself if an assertion fails
//! midway. The tests of this binary run one at a time.

use ksmauto_contract::proc::Stat;
use ksmauto_testsupport as common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

const KSM: &str = "/sys/kernel/mm/ksm";
const KSMAUTO: &str = env!("CARGO_BIN_EXE_ksmauto");

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn ksmauto(args: &[&str]) -> Command {
    let mut c = Command::new(KSMAUTO);
    c.args(args)
        .env_remove("KSMAUTO_SYSFS_KSM")
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null());
    c
}

fn run(args: &[&str]) -> Output {
    let mut c = ksmauto(args);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    common::run_with_timeout(c, Duration::from_secs(240))
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{args:?}: {}{}",
        common::text(&o.stdout),
        common::text(&o.stderr)
    );
    common::text(&o.stdout)
}

/// Every writable file of the KSM sysfs directory and its value (the
/// chosen word of a "[none] scan-time" file): what "as found" means.
fn snapshot() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(KSM).unwrap().flatten() {
        if e.metadata().unwrap().permissions().mode() & 0o200 == 0 {
            continue;
        }
        let v = std::fs::read_to_string(e.path())
            .unwrap()
            .trim()
            .to_string();
        let v = match (v.find('['), v.find(']')) {
            (Some(a), Some(b)) => v[a + 1..b].to_string(),
            _ => v,
        };
        m.insert(e.file_name().to_string_lossy().into_owned(), v);
    }
    m
}

fn value(name: &str) -> String {
    snapshot().remove(name).unwrap_or_default()
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ksmauto-ksmd-test-{}-{name}", std::process::id()))
}

/// A `ksmauto ksmd hold OPTIONS` that runs until ended: its command first
/// sets `sleep_millisecs` if asked (through `ksmauto ksmd restore`, so
/// each hold's settings surely differ from those before it), says "held",
/// then waits for its stdin to close.
struct RunningHold {
    child: Option<std::process::Child>,
    stdin: Option<std::process::ChildStdin>,
}

impl RunningHold {
    fn start(options: &[&str], sleep_millisecs: Option<u64>) -> RunningHold {
        let file = sleep_millisecs.map(|ms| {
            let f = temp(&format!("sleep-{ms}"));
            std::fs::write(&f, format!("sleep_millisecs={ms}\n")).unwrap();
            f
        });
        let mut c = ksmauto(&["ksmd", "hold"]);
        c.args(options)
            .args(["--", "sh", "-c"])
            .arg(r#"if [ -n "$1" ]; then "$0" ksmd restore "$1" >/dev/null || exit; fi; echo held; exec cat"#)
            .arg(KSMAUTO)
            .arg(file.as_deref().unwrap_or(Path::new("")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let stdin = child.stdin.take();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut hold = RunningHold {
            child: Some(child),
            stdin,
        };
        if line.trim() != "held" {
            let (code, err) = hold.finish();
            panic!("hold {options:?} ended before its command ran ({code:?}): {err}");
        }
        hold
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Closes its command's stdin, waits for the hold to end: its exit
    /// code and stderr.
    fn finish(&mut self) -> (Option<i32>, String) {
        drop(self.stdin.take());
        let Some(mut child) = self.child.take() else {
            return (None, String::new());
        };
        let t0 = std::time::Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if t0.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = Vec::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_end(&mut e, &mut err);
        }
        (status.code(), common::text(&err))
    }

    /// Ends it; it must end well: its stderr.
    fn end(mut self) -> String {
        let (code, err) = self.finish();
        assert_eq!(code, Some(0), "{err}");
        err
    }
}

impl Drop for RunningHold {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Holds the test lock and ksmd through a hold of its own (which takes
/// part in the record of holds, as every hold does): it puts the state
/// found back on drop (also when an assertion failed) and checks it is
/// back.
struct AsFound {
    before: BTreeMap<String, String>,
    hold: Option<RunningHold>,
    _serial: MutexGuard<'static, ()>,
}

fn as_found() -> Option<AsFound> {
    if unsafe { libc::geteuid() } != 0 || !Path::new(KSM).join("run").exists() {
        if std::env::var("KSMAUTO_REQUIRE_KSM").as_deref() == Ok("1") {
            panic!("KSM is required (KSMAUTO_REQUIRE_KSM=1) but this is not root with KSM");
        }
        eprintln!("\n!!!!! SKIPPED: needs root and KSM !!!!!\n");
        return None;
    }
    let serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = snapshot();
    Some(AsFound {
        before,
        hold: Some(RunningHold::start(&[], None)),
        _serial: serial,
    })
}

impl Drop for AsFound {
    fn drop(&mut self) {
        let (code, err) = self.hold.take().unwrap().finish();
        if !std::thread::panicking() {
            assert_eq!(code, Some(0), "{err}");
            assert_eq!(snapshot(), self.before, "ksmd not left as found: {err}");
        }
    }
}

/// `--scan` that surely changes `pages_to_scan` from what it is now, and
/// the value it writes.
fn other_pace() -> (&'static str, &'static str) {
    if value("pages_to_scan") == "2000" {
        ("default", "100")
    } else {
        ("fast", "2000")
    }
}

#[test]
fn save_then_change_then_restore_puts_every_tunable_back() {
    let Some(found) = as_found() else {
        return;
    };
    let file = temp("saved");
    let f = file.to_str().unwrap();
    ok(&["ksmd", "save", f]);
    let text = std::fs::read_to_string(&file).unwrap();
    for (name, v) in &found.before {
        assert!(
            text.contains(&format!("\n{name}={v}\n")),
            "{name}={v} not saved:\n{text}"
        );
    }

    // Everything changes: another pace, the advisor on (it then owns
    // pages_to_scan, and the kernel refuses that file until it is off
    // again), ksmd stopped.
    let (scan, pages) = other_pace();
    ok(&["ksmd", "--scan", scan]);
    assert_eq!(value("pages_to_scan"), pages);
    let advisor = found.before.contains_key("advisor_mode");
    if advisor {
        ok(&["ksmd", "--scan", "advisor"]);
        assert_eq!(value("advisor_mode"), "scan-time");
    }
    ok(&["ksmd", "--off"]);
    assert_eq!(value("run"), "0");
    assert_ne!(snapshot(), found.before);

    // (Which values it names depends on where ksmd was found: switching
    // the advisor off sets pages_to_scan back to the kernel's default by
    // itself. The snapshot below is the check.)
    let out = ok(&["ksmd", "restore", f]);
    assert!(out.starts_with("put back: "), "{out}");
    if advisor && found.before["advisor_mode"] == "none" {
        assert!(out.contains("advisor_mode=none"), "{out}");
    }
    assert_eq!(snapshot(), found.before, "restore: {out}");
    // A second restore has nothing left to do.
    let again = ok(&["ksmd", "restore", f]);
    assert_eq!(again.trim(), "all ksmd settings were already as saved");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn fast_pace_goes_back_to_the_machines_values() {
    let Some(_found) = as_found() else {
        return;
    };
    // The machine's values: the kernel's default pace, whatever this session had.
    ok(&["ksmd", "--scan", "default"]);
    let machine = snapshot();
    assert_eq!(machine["pages_to_scan"], "100");
    let file = temp("machine");
    let f = file.to_str().unwrap();
    ok(&["ksmd", "save", f]);
    ok(&["ksmd", "--on", "--scan", "fast"]);
    let fast = snapshot();
    assert_eq!(
        (
            fast["run"].as_str(),
            fast["pages_to_scan"].as_str(),
            fast["sleep_millisecs"].as_str()
        ),
        ("1", "2000", "10")
    );
    if let Some(smart) = fast.get("smart_scan") {
        assert_eq!(smart, "0");
    }
    if let Some(advisor) = fast.get("advisor_mode") {
        assert_eq!(advisor, "none");
    }
    let out = ok(&["ksmd", "restore", f]);
    assert!(out.contains("pages_to_scan=100"), "{out}");
    assert_eq!(snapshot(), machine, "{out}");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn restore_errors_have_the_documented_exit_codes() {
    let Some(found) = as_found() else {
        return;
    };
    let failing = |args: &[&str], code: i32| -> String {
        let o = run(args);
        let err = common::text(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        err
    };
    // No such file: 1.
    let missing = temp("missing");
    let err = failing(&["ksmd", "restore", missing.to_str().unwrap()], 1);
    assert!(err.contains("cannot read"), "{err}");
    // A value the kernel refuses: 1, saying which.
    let bad = temp("bad");
    std::fs::write(&bad, "pages_to_scan=lots\n").unwrap();
    let err = failing(&["ksmd", "restore", bad.to_str().unwrap()], 1);
    assert!(
        err.contains("could not put back pages_to_scan=lots"),
        "{err}"
    );
    // Nothing was put back: it does not say all was already as saved.
    let out = common::text(&run(&["ksmd", "restore", bad.to_str().unwrap()]).stdout);
    assert!(!out.contains("already as saved"), "{out}");
    assert_eq!(snapshot(), found.before);
    // Something that is no tunable is never written: 1.
    std::fs::write(&bad, "full_scans=0\n").unwrap();
    let err = failing(&["ksmd", "restore", bad.to_str().unwrap()], 1);
    assert!(err.contains("not a ksmd tunable"), "{err}");
    std::fs::write(&bad, "../../../../tmp/x=1\n").unwrap();
    failing(&["ksmd", "restore", bad.to_str().unwrap()], 1);
    // Not root, with something to change: 4.
    let other = found.before["sleep_millisecs"].parse::<u64>().unwrap() + 1;
    std::fs::write(&bad, format!("sleep_millisecs={other}\n")).unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", KSMAUTO])
        .args(["ksmd", "restore", bad.to_str().unwrap()])
        .env_remove("KSMAUTO_SYSFS_KSM")
        .output()
        .unwrap();
    let err = common::text(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("permission denied"), "{err}");
    // Not root: hold with an option is refused before anything runs.
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", KSMAUTO])
        .args(["ksmd", "hold", "--on", "--", "echo", "ran"])
        .env_remove("KSMAUTO_SYSFS_KSM")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", common::text(&o.stderr));
    assert!(!common::text(&o.stdout).contains("ran"));
    // Options and a subcommand together: a usage error, 2.
    let o = run(&["ksmd", "--on", "save", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", common::text(&o.stderr));
    // No KSM: 5.
    for args in [
        &["ksmd", "save", bad.to_str().unwrap()][..],
        &["ksmd", "restore", bad.to_str().unwrap()][..],
        &["ksmd", "hold", "--", "true"][..],
    ] {
        let mut c = ksmauto(args);
        c.env("KSMAUTO_SYSFS_KSM", "/nonexistent");
        let o = c.output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(5),
            "{args:?}: {}",
            common::text(&o.stderr)
        );
    }
    assert_eq!(snapshot(), found.before);
    let _ = std::fs::remove_file(&bad);
}

const PAGES: &str = "/sys/kernel/mm/ksm/pages_to_scan";

#[test]
fn hold_sets_the_pace_for_the_command_and_puts_it_back() {
    let Some(found) = as_found() else {
        return;
    };
    // Outside: the default pace (100); inside: fast (2000); then back to 100.
    let inner = format!("{KSMAUTO} ksmd hold --scan fast -- cat {PAGES}; cat {PAGES}");
    let out = ok(&[
        "ksmd", "hold", "--scan", "default", "--", "sh", "-c", &inner,
    ]);
    assert_eq!(out, "2000\n100\n");
    assert_eq!(snapshot(), found.before);

    // The command's status is hold's; a command killed by a signal: 128 + it.
    let inner = format!(
        "{KSMAUTO} ksmd hold --scan fast -- sh -c 'cat {PAGES}; kill -9 $$'; echo status $?; cat {PAGES}"
    );
    let out = ok(&[
        "ksmd", "hold", "--scan", "default", "--", "sh", "-c", &inner,
    ]);
    assert_eq!(out, "2000\nstatus 137\n100\n");
    let o = run(&["ksmd", "hold", "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(snapshot(), found.before);

    // Without options hold only guarantees the restore (of a change the
    // command makes, whatever ksmd was found at).
    let (scan, _) = other_pace();
    let o = run(&["ksmd", "hold", "--", KSMAUTO, "ksmd", "--scan", scan]);
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o.stderr));
    let err = common::text(&o.stderr);
    assert!(err.contains("ksmauto: ksmd put back: "), "{err}");
    assert_eq!(snapshot(), found.before);
}

#[test]
fn hold_puts_ksmd_back_when_it_gets_sigterm() {
    let Some(found) = as_found() else {
        return;
    };
    let (scan, pages) = other_pace();
    let mut c = ksmauto(&["ksmd", "hold", "--scan", scan, "--", "sh", "-c"]);
    c.arg(format!("cat {PAGES}; exec sleep 60"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), pages);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    // The command got the signal (forwarded) and hold exits as it did.
    assert_eq!(
        o.status.code(),
        Some(128 + libc::SIGTERM),
        "{}",
        common::text(&o.stderr)
    );
    assert!(common::text(&o.stderr).contains("put back: "));
    assert_eq!(snapshot(), found.before);
}

/// `sleep_millisecs` now, as a number.
fn sleep_now() -> u64 {
    value("sleep_millisecs").parse().unwrap()
}

/// Two holds that overlap, whichever ends first, leave ksmd as found.
/// Each hold saved what it found and put it back when it ended: when the
/// earlier one ended first, it put the machine's settings back under the
/// later one (which still ran), and the later one then put back the
/// earlier one's settings, which stayed. Nested holds (the later ends
/// first) worked before and are the control.
#[test]
fn overlapping_holds_leave_ksmd_as_found_whichever_ends_first() {
    let Some(found) = as_found() else {
        return;
    };
    let ms: u64 = found.before["sleep_millisecs"].parse().unwrap();
    let (scan, pages) = other_pace();
    for earlier_ends_first in [false, true] {
        let earlier = RunningHold::start(&["--scan", scan], Some(ms + 11));
        assert_eq!(
            (value("pages_to_scan"), sleep_now()),
            (pages.into(), ms + 11)
        );
        let later = RunningHold::start(&[], Some(ms + 23));
        assert_eq!(sleep_now(), ms + 23);
        if earlier_ends_first {
            let err = earlier.end();
            // The later hold still runs: its settings stay.
            assert_eq!(
                (value("pages_to_scan"), sleep_now()),
                (pages.into(), ms + 23),
                "the earlier hold's end changed ksmd under the later one: {err}"
            );
            assert!(err.contains("ksmd left as it is"), "{err}");
            let err = later.end();
            assert!(err.contains("ksmauto: ksmd put back: "), "{err}");
        } else {
            later.end();
            // Back to the earlier hold's settings, while it runs.
            assert_eq!(
                (value("pages_to_scan"), sleep_now()),
                (pages.into(), ms + 11)
            );
            earlier.end();
        }
        assert_eq!(
            snapshot(),
            found.before,
            "earlier ends first: {earlier_ends_first}"
        );
    }
}

/// A hold killed with SIGKILL puts nothing back; the next hold took the
/// killed one's settings for the machine's own and put those back. Now it
/// finds the dead holder in the record (its pid gone) and puts back what
/// that one found.
#[test]
fn a_hold_after_a_killed_one_puts_back_what_the_killed_one_found() {
    let Some(found) = as_found() else {
        return;
    };
    let ms: u64 = found.before["sleep_millisecs"].parse().unwrap();
    let (scan, pages) = other_pace();
    let mut killed = RunningHold::start(&["--scan", scan], Some(ms + 11));
    unsafe { libc::kill(killed.pid(), libc::SIGKILL) };
    let (code, err) = killed.finish();
    assert_eq!(code, None, "killed: {err}");
    // Nothing was put back.
    assert_eq!(
        (value("pages_to_scan"), sleep_now()),
        (pages.into(), ms + 11)
    );
    let next = RunningHold::start(&[], Some(ms + 23));
    assert_eq!(sleep_now(), ms + 23);
    let err = next.end();
    assert_eq!(snapshot(), found.before, "{err}");
}

/// The test harness's guard holds ksmd through `ksmauto ksmd hold`, so it
/// takes part in the same record: a guard that ends while a hold of
/// another checkout's tests still runs changes nothing under it. It saved
/// and restored by hand, and put its settings back under the running hold.
#[test]
fn the_harness_guard_takes_part_in_overlapping_holds() {
    let Some(found) = as_found() else {
        return;
    };
    let ms: u64 = found.before["sleep_millisecs"].parse().unwrap();
    // The machine as the guard finds it: another pace than the guard's.
    let machine = RunningHold::start(&["--scan", "default"], Some(ms + 11));
    let as_machine = snapshot();
    let guard = common::ksmd().expect("root with KSM");
    assert_eq!(value("pages_to_scan"), "2000");
    let other = RunningHold::start(&[], Some(ms + 23));
    drop(guard);
    assert_eq!(
        (value("pages_to_scan"), sleep_now()),
        ("2000".into(), ms + 23),
        "the guard's end changed ksmd under a running hold"
    );
    other.end();
    assert_eq!(snapshot(), as_machine);
    machine.end();
    assert_eq!(snapshot(), found.before);
}

#[test]
fn compare_holding_ksmd_reports_savings_against_the_pools_own_ideal() {
    let Some(found) = as_found() else {
        return;
    };
    let Some(_ksm) = common::ksmd() else { return };
    let dups = common::compile_c("cli/tests/c/dups.c", &[]);
    let ready = temp("ready");
    std::fs::create_dir_all(&ready).unwrap();
    // Each copy (a shell) makes its ready file once dups says "ready".
    let copy = r#"f="$1/$$"; "$0" | while read -r l; do : > "$f"; done"#;
    let pattern = format!("{}/%p", ready.display());
    let o = run(&[
        "compare",
        "--workers",
        "2",
        "--mode",
        "process",
        "--settle-timeout",
        "90",
        "--lib",
        common::lib().to_str().unwrap(),
        "--hold-ksmd",
        "--ready-file",
        &pattern,
        "--json",
        "--",
        "sh",
        "-c",
        copy,
        dups.to_str().unwrap(),
        ready.to_str().unwrap(),
    ]);
    let stdout = common::text(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{stdout}{}",
        common::text(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let with = &v["with"];
    assert_eq!(with["ended"], "settled", "{v}");
    assert!(with["ready_s"].as_f64().is_some(), "{v}");
    // Held: nothing of the pool merged before ksmd was let go.
    let before = &with["before_merge"];
    assert_eq!(before["merging_pages"], 0, "{v}");
    assert_eq!(before["zero_pages"], 0, "{v}");
    assert!(with["merge_started_s"].as_f64().unwrap() >= with["ready_s"].as_f64().unwrap());
    let h = &v["held_ksmd"];
    // That pool's ideal: 2 × 1500 identical + 600 zero + 200 shared-unique
    // pages of dups, and a little of the shells.
    let ideal = h["estimate_before_merge"]["ideal_savings_pages"]
        .as_f64()
        .unwrap();
    assert!(ideal >= 3798.0 * 0.98, "{v}");
    assert_eq!(
        h["saved_pss_bytes"].as_i64().unwrap(),
        before["pss_bytes"].as_i64().unwrap() - with["last"]["pss_bytes"].as_i64().unwrap()
    );
    let pct = h["percent_of_ideal"].as_f64().unwrap();
    assert!(pct > 50.0, "{v}");
    // The cross-pool figure stays.
    assert!(v["percent_of_ideal"].as_f64().is_some(), "{v}");
    // Put back at the end: it said so.
    let err = common::text(&o.stderr);
    assert!(
        err.contains("ksmauto: ksmd put back: ")
            || err.contains("ksmauto: all ksmd settings were already as saved"),
        "{err}"
    );
    drop(_ksm);
    drop(found);
    let _ = std::fs::remove_dir_all(&ready);
}

#[test]
fn compare_puts_ksmd_back_when_it_gets_sigterm_while_holding_it() {
    let Some(found) = as_found() else {
        return;
    };
    let ready = temp("ready-sigterm");
    std::fs::create_dir_all(&ready).unwrap();
    let pattern = format!("{}/%p", ready.display());
    let mut c = ksmauto(&[
        "compare",
        "--workers",
        "1",
        "--mode",
        "process",
        "--settle-timeout",
        "60",
        "--lib",
        common::lib().to_str().unwrap(),
        "--hold-ksmd",
        "--ready-file",
        &pattern,
        "--json",
        "--",
        "sh",
        "-c",
        r#": > "$0/$$"; exec sleep 60"#,
        ready.to_str().unwrap(),
    ]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    // Wait for the hold: the copy with the preload has made its ready file
    // (the one without it made the first), so ksmd is stopped while it
    // loads. (Found stopped, ksmd's `run` cannot show the hold.)
    let t0 = std::time::Instant::now();
    while std::fs::read_dir(&ready).map(|d| d.count()).unwrap_or(0) < 2 || value("run") != "0" {
        assert!(t0.elapsed() < Duration::from_secs(60), "ksmd never held");
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    let err = common::text(&o.stderr);
    assert_eq!(o.status.code(), Some(128 + libc::SIGTERM), "{err}");
    // Found stopped and at its pace, a hold changes nothing to put back.
    assert!(
        err.contains("ksmauto: ksmd put back: ") || err.contains("already as saved"),
        "{err}"
    );
    if found.before["run"] == "1" {
        assert!(err.contains("run=1"), "{err}");
    }
    assert_eq!(snapshot(), found.before);
    // The copies were stopped.
    for e in std::fs::read_dir(&ready).unwrap().flatten() {
        let pid: i32 = e.file_name().to_string_lossy().parse().unwrap();
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            state.is_empty() || Stat::parse(state.as_bytes()).and_then(|s| s.state()) == Some(b'Z'),
            "copy {pid} still runs: {state}"
        );
    }
    drop(found);
    let _ = std::fs::remove_dir_all(&ready);
}

/// `hold` ran its command with SIGHUP, SIGINT and SIGTERM blocked (it
/// blocked them around the spawn, and a child inherits the mask): the
/// command and everything it started could not be interrupted — CI's test
/// run under `hold` among them. Now the command's mask is its own, and a
/// signal sent to `hold` reaches a command that is no shell.
#[test]
fn hold_runs_its_command_with_no_signal_blocked_and_forwards_to_it() {
    let Some(found) = as_found() else {
        return;
    };
    let out = ok(&["ksmd", "hold", "--", "grep", "SigBlk", "/proc/self/status"]);
    assert_eq!(out.trim(), "SigBlk:\t0000000000000000", "{out}");
    for sig in [libc::SIGTERM, libc::SIGUSR1, libc::SIGQUIT] {
        let (scan, _) = other_pace();
        let mut c = ksmauto(&["ksmd", "hold", "--scan", scan, "--", "sleep", "30"]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = std::time::Instant::now();
        let child = c.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        unsafe { libc::kill(child.id() as i32, sig) };
        let o = child.wait_with_output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(128 + sig),
            "signal {sig}: {}",
            common::text(&o.stderr)
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "signal {sig} did not reach sleep"
        );
        assert_eq!(snapshot(), found.before, "signal {sig}: ksmd not put back");
    }
}

/// A fake `/sys/kernel/mm/ksm` (regular files) with this session's kind of
/// values, minus `absent`: a kernel older than the one a file was saved on.
fn fake_sysfs(name: &str, absent: &[&str]) -> PathBuf {
    let dir = temp(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (n, v) in [
        ("advisor_max_cpu", "70"),
        ("advisor_min_pages_to_scan", "500"),
        ("advisor_max_pages_to_scan", "30000"),
        ("advisor_target_scan_time", "200"),
        ("advisor_mode", "[none] scan-time"),
        ("pages_to_scan", "100"),
        ("sleep_millisecs", "20"),
        ("smart_scan", "1"),
        ("use_zero_pages", "0"),
        ("stable_node_chains_prune_millisecs", "2000"),
        ("max_page_sharing", "256"),
        ("merge_across_nodes", "1"),
        ("run", "0"),
        ("full_scans", "5"),
        ("pages_shared", "0"),
    ] {
        if !absent.contains(&n) {
            std::fs::write(dir.join(n), format!("{v}\n")).unwrap();
        }
    }
    dir
}

fn fake_value(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| format!("({e})"))
        .trim()
        .to_string()
}

/// A file saved on a kernel with the advisor and smart_scan, restored
/// where they do not exist: sysfs refuses to create them (EACCES, as if
/// not root: the restore stopped there with exit 4, run and the pace left
/// as they were). They are skipped, named, and the rest is put back.
#[test]
fn restore_skips_tunables_this_kernel_lacks_and_puts_back_the_rest() {
    let absent = [
        "advisor_max_cpu",
        "advisor_min_pages_to_scan",
        "advisor_max_pages_to_scan",
        "advisor_target_scan_time",
        "advisor_mode",
        "smart_scan",
    ];
    let dir = fake_sysfs("old-kernel", &absent);
    let saved = temp("saved-on-newer");
    std::fs::write(
        &saved,
        "advisor_max_cpu=70\nadvisor_min_pages_to_scan=500\nadvisor_max_pages_to_scan=30000\n\
         advisor_target_scan_time=200\nadvisor_mode=none\npages_to_scan=2000\nsleep_millisecs=10\n\
         smart_scan=0\nuse_zero_pages=0\nstable_node_chains_prune_millisecs=2000\n\
         max_page_sharing=256\nmerge_across_nodes=1\nrun=1\n",
    )
    .unwrap();
    let o = ksmauto(&["ksmd", "restore", saved.to_str().unwrap()])
        .env("KSMAUTO_SYSFS_KSM", &dir)
        .output()
        .unwrap();
    let (out, err) = (common::text(&o.stdout), common::text(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(
        err.contains("skipped advisor_max_cpu")
            && err.contains("smart_scan: this kernel has no such tunable"),
        "{err}"
    );
    for (n, v) in [
        ("run", "1"),
        ("pages_to_scan", "2000"),
        ("sleep_millisecs", "10"),
    ] {
        assert_eq!(fake_value(&dir, n), v, "{n}: {out}{err}");
    }
    // Nothing was made up in sysfs.
    for n in absent {
        assert!(!dir.join(n).exists(), "{n} created");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&saved);
}

/// A file with no tunable in it restores nothing: that is an error, not
/// "all ksmd settings were already as saved".
#[test]
fn restore_of_a_file_without_settings_fails() {
    let dir = fake_sysfs("empty-file", &[]);
    let comments = temp("only-comments");
    std::fs::write(&comments, "# ksmd's tunables\n\n").unwrap();
    for file in [Path::new("/dev/null"), &comments] {
        let o = ksmauto(&["ksmd", "restore", file.to_str().unwrap()])
            .env("KSMAUTO_SYSFS_KSM", &dir)
            .output()
            .unwrap();
        let (out, err) = (common::text(&o.stdout), common::text(&o.stderr));
        assert_eq!(o.status.code(), Some(1), "{out}{err}");
        assert!(
            err.contains(&format!("no ksmd setting in {}", file.display())),
            "{err}"
        );
        assert!(!out.contains("already as saved"), "{out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&comments);
}

/// A read-only sysfs (a container's) is no matter of being root: the
/// error says it is read-only. Needs a mount namespace (`unshare -m`).
#[test]
fn restore_on_a_read_only_sysfs_says_so() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("\n!!!!! SKIPPED: needs root !!!!!\n");
        return;
    }
    let dir = fake_sysfs("read-only", &[]);
    let saved = temp("ro-saved");
    std::fs::write(&saved, "sleep_millisecs=10\n").unwrap();
    let script = format!(
        "mount --bind {d} {d} && mount -o remount,bind,ro {d} && exec {k} ksmd restore {f}",
        d = dir.display(),
        k = KSMAUTO,
        f = saved.display()
    );
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("KSMAUTO_SYSFS_KSM", &dir)
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap();
    let err = common::text(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("is read-only here"), "{err}");
    assert!(!err.contains("run as root"), "{err}");
    assert_eq!(fake_value(&dir, "sleep_millisecs"), "20");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&saved);
}

/// The processes whose command line holds `marker`, killed on drop: what
/// a test that starts them leaves behind is ended, whatever it asserted.
struct Marked(String);

impl Marked {
    fn pids(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid != me)
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                String::from_utf8_lossy(&cmdline).contains(&self.0)
            })
            .collect()
    }
}

impl Drop for Marked {
    fn drop(&mut self) {
        for pid in self.pids() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Every tunable of a fake sysfs and its value (not the holds' record).
fn fake_snapshot(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .map(|n| {
            let v = fake_value(dir, &n);
            (n, v)
        })
        .collect()
}

/// `compare --hold-ksmd` that failed after its copies had started (here:
/// ksmd could not be let go, a copy having made `run` read-only) left the
/// copies running when it exited: the error went out of the phase with
/// `?`, past the code that stops them. Now they are stopped on every way
/// out, and the hold ends as always (its record gone, ksmd as found). A
/// fake sysfs (`KSMAUTO_SYSFS_KSM`), `run` made read-only in a mount
/// namespace of compare's own (`unshare -m`).
#[test]
fn compare_that_fails_after_starting_its_copies_leaves_none_running() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("\n!!!!! SKIPPED: needs root !!!!!\n");
        return;
    }
    let dir = fake_sysfs("copies-left", &[]);
    let before = fake_snapshot(&dir);
    let ready = temp("copies-left-ready");
    let _ = std::fs::remove_dir_all(&ready);
    std::fs::create_dir_all(&ready).unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    // Each copy sleeps this long: its command line is how it is found.
    let marked = Marked(format!("3000.{}{nanos:09}", std::process::id()));
    // The copies with the preload make ksmd's `run` read-only, then say
    // they are ready: letting ksmd go fails once their memory is flat.
    let copy = r#"case "$LD_PRELOAD" in *ksmauto*)
        mount --bind "$1/run" "$1/run" && mount -o remount,bind,ro "$1/run" || exit 9;;
        esac; : > "$0/$$"; exec sleep "$2""#;
    let (out_file, err_file) = (temp("copies-left-stdout"), temp("copies-left-stderr"));
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", KSMAUTO, "compare"])
        .args(["--workers", "2", "--settle-timeout", "120", "--hold-ksmd"])
        .args(["--lib", common::lib().to_str().unwrap()])
        .args(["--ready-file", &format!("{}/%p", ready.display())])
        .args(["--json", "--", "sh", "-c", copy])
        .args([ready.as_path(), dir.as_path(), Path::new(&marked.0)])
        .env("KSMAUTO_SYSFS_KSM", &dir)
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        // Files, not pipes: a copy left running would keep a pipe open.
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(std::fs::File::create(&err_file).unwrap());
    let mut child = c.spawn().unwrap();
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(400) {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (
        std::fs::read_to_string(&out_file).unwrap_or_default(),
        std::fs::read_to_string(&err_file).unwrap_or_default(),
    );
    let _ = std::fs::remove_file(&out_file);
    let _ = std::fs::remove_file(&err_file);
    assert_eq!(status.code(), Some(4), "{out}{err}");
    assert!(err.contains("is read-only here"), "{err}");
    // compare has ended: none of its copies may run on.
    let t0 = std::time::Instant::now();
    while !marked.pids().is_empty() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<String> = marked
        .pids()
        .iter()
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            )
        })
        .collect();
    assert!(left.is_empty(), "copies left running: {left:?}\n{err}");
    // The hold ended as always: nothing left changed, no record left.
    assert!(err.contains("already as saved"), "{err}");
    assert_eq!(fake_snapshot(&dir), before, "{err}");
    assert!(!dir.join(".ksmd-holds").exists(), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&ready);
}
