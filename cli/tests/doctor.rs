//! `ksmauto doctor`: each verdict shown by a real process started here.
//! ksmd's state comes from a fake sysfs directory (`KSMAUTO_SYSFS_KSM`) where
//! the verdict is about ksmd itself, and from the real ksmd (the harness's
//! guard) where merging must really happen.

use ksmauto_contract::proc::Stat;
use ksmauto_testsupport as common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A started process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// Starts `cmd` and waits for its "ready" line (programs built from doctor.c).
fn start_ready(mut cmd: Command) -> Proc {
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut p = Proc(cmd.spawn().expect("spawn"));
    let out = p.0.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "program did not start");
    p
}

/// Starts `cmd` (a program that prints nothing) and waits until it has
/// executed it, i.e. its exe is no longer this test binary.
fn start_quiet(mut cmd: Command, exe: &Path) -> Proc {
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let p = Proc(cmd.spawn().expect("spawn"));
    let t0 = Instant::now();
    loop {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", p.pid())).unwrap_or_default();
        let exe_now = std::fs::read_link(format!("/proc/{}/exe", p.pid())).ok();
        if exe_now.as_deref() == Some(exe) && maps.contains("[stack]") {
            std::thread::sleep(Duration::from_millis(200)); // let the loader finish
            return p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "process did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn doctor(args: &[&str], sysfs: Option<&Path>) -> serde_json::Value {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ksmauto"));
    c.arg("doctor")
        .args(args)
        .arg("--json")
        .env_remove("LD_PRELOAD");
    match sysfs {
        Some(d) => c.env("KSMAUTO_SYSFS_KSM", d),
        None => c.env_remove("KSMAUTO_SYSFS_KSM"),
    };
    let o = c.output().unwrap();
    let stdout = common::text(&o.stdout);
    assert!(
        o.status.success(),
        "doctor failed: {stdout}{}",
        common::text(&o.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not JSON: {stdout}"))
}

fn doctor_text(pid: u32, sysfs: Option<&Path>) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ksmauto"));
    c.args(["doctor", &pid.to_string()])
        .env_remove("LD_PRELOAD");
    if let Some(d) = sysfs {
        c.env("KSMAUTO_SYSFS_KSM", d);
    }
    let o = c.output().unwrap();
    assert!(o.status.success());
    common::text(&o.stdout)
}

fn verdict(v: &serde_json::Value) -> String {
    v["verdict"].as_str().unwrap().to_string()
}

/// A fake KSM sysfs directory with these values.
fn fake_sysfs(name: &str, values: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ksmauto-doctor-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (k, v) in values {
        std::fs::write(dir.join(k), format!("{v}\n")).unwrap();
    }
    dir
}

/// A sysfs where ksmd runs at a brisk pace: for the verdicts about the
/// library, which must not depend on the machine's ksmd (off by default:
/// "ksmd is off" would come first).
fn running_sysfs(name: &str) -> PathBuf {
    fake_sysfs(
        name,
        &[
            ("run", "1"),
            ("pages_to_scan", "1000"),
            ("sleep_millisecs", "20"),
            ("full_scans", "10"),
        ],
    )
}

fn program() -> PathBuf {
    common::compile_c("cli/tests/c/doctor.c", &[])
}

fn preloaded(mode: &str, prog: &Path, arg: &str) -> Command {
    let mut c = common::Run::with(mode)
        .env("KSMAUTO_STATS", "off")
        .command(prog);
    c.arg(arg);
    c
}

#[test]
fn ksmd_off_is_the_verdict_when_run_is_0() {
    let sysfs = fake_sysfs(
        "off",
        &[
            ("run", "0"),
            ("pages_to_scan", "100"),
            ("sleep_millisecs", "20"),
            ("full_scans", "0"),
        ],
    );
    let p = start_ready(preloaded("process", &program(), "dups"));
    let v = doctor(&[&p.pid().to_string()], Some(&sysfs));
    assert_eq!(verdict(&v), "not merging: ksmd is off (run=0)", "{v}");
    assert_eq!(v["ksmd"]["state"], "stopped");
    assert_eq!(v["library"]["loaded"], true, "{v}");
    assert_eq!(v["mode"]["mode"], "process", "{v}");
    assert_eq!(v["mode"]["ksmauto_mode"], "process", "{v}");
    // The 2000 written pages are mergeable under merge-any.
    assert!(
        v["memory"]["mergeable"].as_u64().unwrap() >= 2000 * 4096,
        "{v}"
    );
    let text = doctor_text(p.pid(), Some(&sysfs));
    assert!(
        text.lines()
            .next()
            .unwrap()
            .ends_with("not merging: ksmd is off (run=0)"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&sysfs);
}

#[test]
fn a_slow_ksmd_says_how_long_one_full_scan_takes() {
    // One page per second: the 4096 unique mergeable pages alone take 4096 s.
    let sysfs = fake_sysfs(
        "slow",
        &[
            ("run", "1"),
            ("pages_to_scan", "1"),
            ("sleep_millisecs", "1000"),
            ("full_scans", "0"),
        ],
    );
    let p = start_ready(preloaded("process", &program(), "unique"));
    let v = doctor(&[&p.pid().to_string()], Some(&sysfs));
    let secs = v["ksmd"]["full_scan_seconds"].as_f64().unwrap();
    assert!(secs >= 4096.0, "{v}");
    assert_eq!(v["ksmd"]["too_slow"], true);
    // A few pages of libc's data may merge meanwhile (the real ksmd may be
    // running for other tests): then it is "merging: … saved; ksmd needs …".
    let want = format!("ksmd needs {secs:.0} s for one full scan of ");
    assert!(
        verdict(&v).starts_with(&format!("not merging yet: {want}"))
            || (verdict(&v).starts_with("merging: ") && verdict(&v).contains(&format!("; {want}"))),
        "{v}"
    );
    let _ = std::fs::remove_dir_all(&sysfs);
}

#[test]
fn a_process_without_the_preload_is_not_loaded_not_in_ld_preload() {
    let mut c = Command::new("sleep");
    c.arg("60").env_remove("LD_PRELOAD");
    let sleep = std::fs::canonicalize(which("sleep")).unwrap();
    let p = start_quiet(c, &sleep);
    let v = doctor(&[&p.pid().to_string()], Some(&running_sysfs("nopreload")));
    assert_eq!(
        verdict(&v),
        "not merging: the library is not loaded (not in LD_PRELOAD)",
        "{v}"
    );
    assert_eq!(v["library"]["loaded"], false);
    assert_eq!(v["library"]["in_ld_preload"], false);
    assert_eq!(v["library"]["static_binary"], false);
    assert_eq!(v["mode"]["mode"], "none");
}

fn which(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap().split(':') {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found");
}

#[test]
fn a_static_binary_is_not_loaded_because_it_is_static() {
    let libc_a = [
        "/usr/lib/x86_64-linux-gnu/libc.a",
        "/usr/lib/libc.a",
        "/usr/lib64/libc.a",
    ];
    if !libc_a.iter().any(|p| Path::new(p).exists()) {
        eprintln!(
            "\n!!!!! SKIPPED: no static glibc (libc.a): cannot build a static binary !!!!!\n"
        );
        return;
    }
    let prog = common::compile_c("cli/tests/c/doctor.c", &["-static"]);
    let p = start_ready(preloaded("process", &prog, "plain"));
    let v = doctor(&[&p.pid().to_string()], Some(&running_sysfs("static")));
    assert_eq!(
        verdict(&v),
        "not merging: the library is not loaded (static binary)",
        "{v}"
    );
    assert_eq!(v["library"]["static_binary"], true);
    assert_eq!(v["library"]["in_ld_preload"], true, "{v}");
    assert!(v["library"]["why_not"]
        .as_str()
        .unwrap()
        .contains("PT_INTERP"));
}

#[test]
fn a_setgid_binary_is_not_loaded_because_of_secure_execution() {
    // Root running a setgid binary of another group: egid != gid, AT_SECURE.
    let prog = program();
    let copy = prog.with_file_name(format!("doctor-setgid-{}", std::process::id()));
    std::fs::copy(&prog, &copy).unwrap();
    let c_path = std::ffi::CString::new(copy.to_str().unwrap()).unwrap();
    let ok = unsafe {
        libc::chown(c_path.as_ptr(), 0, 65534) == 0 && libc::chmod(c_path.as_ptr(), 0o2755) == 0
    };
    if !ok {
        eprintln!("\n!!!!! SKIPPED: cannot make a setgid binary (needs root) !!!!!\n");
        return;
    }
    let p = start_ready(preloaded("process", &copy, "plain"));
    let v = doctor(&[&p.pid().to_string()], Some(&running_sysfs("setgid")));
    let _ = std::fs::remove_file(&copy);
    if v["library"]["loaded"] == true {
        // The loader took the preload: the set-group-ID bit did not take
        // (a nosuid mount), so there is no secure execution to diagnose.
        eprintln!("\n!!!!! SKIPPED: the setgid bit did not take (nosuid mount?): {v} !!!!!\n");
        return;
    }
    assert_eq!(v["library"]["secure_execution"], true, "{v}");
    assert_eq!(
        verdict(&v),
        "not merging: the library is not loaded (secure execution)",
        "{v}"
    );
    assert_eq!(
        v["library"]["secure_reasons"],
        serde_json::json!(["setgid"]),
        "{v}"
    );
}

#[test]
fn a_merging_process_in_process_mode_says_what_it_saves() {
    let Some(_ksm) = common::ksmd() else { return };
    let p = start_ready(preloaded("process", &program(), "dups"));
    let t0 = Instant::now();
    while common::merged_pages_of(p.pid()) < 1400 {
        assert!(t0.elapsed() < Duration::from_secs(60), "did not merge");
        std::thread::sleep(Duration::from_millis(50));
    }
    let v = doctor(&[&p.pid().to_string()], None);
    assert!(
        verdict(&v).starts_with("merging: ") && verdict(&v).ends_with(" saved"),
        "{v}"
    );
    assert_eq!(v["merging"], true);
    assert_eq!(v["library"]["loaded"], true);
    assert_eq!(v["mode"]["mode"], "process");
    assert_eq!(v["mode"]["merge_any"], true);
    let merged = v["memory"]["merged"].as_u64().unwrap();
    assert!(merged >= 1400 * 4096, "{v}");
    assert!(
        v["memory"]["ksm_smaps"].as_u64().unwrap() >= 1400 * 4096,
        "{v}"
    );
    // --all lists it too.
    let all = doctor(&["--all"], None);
    let me = all
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["pid"] == p.pid())
        .unwrap_or_else(|| panic!("--all misses {}: {all}", p.pid()));
    assert_eq!(me["merging"], true);
}

#[test]
fn shared_memory_only_is_nothing_the_kernel_can_merge() {
    let Some(_ksm) = common::ksmd() else { return };
    let p = start_ready(preloaded("process", &program(), "shared"));
    common::wait_full_scans(2, Duration::from_secs(60));
    let v = doctor(&[&p.pid().to_string()], None);
    assert!(
        verdict(&v).starts_with("nothing to merge: memory is 16.0 MiB shared"),
        "{v}"
    );
    assert!(
        v["memory"]["never"]["shared"].as_u64().unwrap() >= 16 << 20,
        "{v}"
    );
    assert_eq!(v["library"]["loaded"], true);
    assert_eq!(v["mode"]["mode"], "process");
    assert_eq!(v["merging"], false);
}

#[test]
fn no_such_process_exits_3() {
    let o = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .args(["doctor", "999999999"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
}

/// A kernel thread has no user memory: doctor said "not merging: no memory
/// is marked mergeable yet" (or that ksmd was off) as for any process.
#[test]
fn a_kernel_thread_is_said_to_have_no_user_memory() {
    // kthreadd is pid 2 on every Linux.
    let comm = std::fs::read_to_string("/proc/2/comm").unwrap_or_default();
    assert_eq!(comm.trim(), "kthreadd", "pid 2 is not kthreadd here");
    let v = doctor(&["2"], Some(&running_sysfs("kthread")));
    assert_eq!(
        verdict(&v),
        "not merging: a kernel thread has no user memory for KSM to merge",
        "{v}"
    );
}

/// A process that has exited and waits for its parent (a zombie) has no
/// memory left: doctor gave an ordinary verdict about it.
#[test]
fn a_zombie_is_said_to_have_exited() {
    let child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    // Not waited for: it stays a zombie until the end of this test.
    for _ in 0..200 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        if Stat::parse(stat.as_bytes()).and_then(|s| s.state()) == Some(b'Z') {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let v = doctor(&[&pid.to_string()], Some(&running_sysfs("zombie")));
    let mut child = child;
    let _ = child.wait();
    assert!(
        verdict(&v).starts_with("not merging: the process has exited (a zombie"),
        "{v}"
    );
}

/// A program that merely lives in a directory named `libksmauto`, with an
/// `LD_PRELOAD` entry under such a directory, has not loaded the library:
/// doctor goes by the mapped file's name (`libksmauto.so`), not by a
/// substring of its path. Before: "library: loaded (…/libksmauto/sleep)",
/// in LD_PRELOAD, and listed by `--all`.
#[test]
fn a_program_in_a_directory_named_libksmauto_has_not_loaded_the_library() {
    let dir = std::env::temp_dir()
        .join(format!("ksmauto-doctor-libname-{}", std::process::id()))
        .join("libksmauto");
    std::fs::create_dir_all(&dir).unwrap();
    let prog = dir.join("sleep");
    std::fs::copy(which("sleep"), &prog).unwrap();
    let mut c = Command::new(&prog);
    c.arg("60")
        .env("LD_PRELOAD", dir.join("libother.so"))
        .stderr(Stdio::null());
    let p = start_quiet(c, &prog);
    let v = doctor(&[&p.pid().to_string()], Some(&running_sysfs("libname")));
    assert_eq!(v["library"]["loaded"], false, "{v}");
    assert_eq!(v["library"]["in_ld_preload"], false, "{v}");
    let all = doctor(&["--all"], Some(&running_sysfs("libname-all")));
    assert!(
        !all.as_array().unwrap().iter().any(|d| d["pid"] == p.pid()),
        "--all lists it: {all}"
    );
    drop(p);
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}
