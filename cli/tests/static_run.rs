//! `ksmauto run` and `compare` cover static programs, which never read
//! `LD_PRELOAD`: a `gcc -static` C program and a Go service (Debian's
//! `golang-go`, `CGO_ENABLED=0`). Before exec, `run` sets
//! `PR_SET_MEMORY_MERGE` in the child (this kernel keeps it across exec;
//! `run` probes that), and they merge at least 95% of what the preload in
//! process mode gets for the same C program built dynamically (the Go one:
//! 95% of the duplicate data it holds). A set-user-ID static program is left
//! alone with a warning; advise mode says it cannot cover a static program.
//! Each process says which engine covers it.

use ksmauto_testsupport as common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Pages of duplicate data each test program holds: two identical 16 MiB
/// tables, every page of one mapped to the same KSM page as its twin's.
const TWIN_PAGES: u64 = 2 * (16 << 20) / 4096;

fn c_program(static_link: bool) -> PathBuf {
    let extra: &[&str] = if static_link { &["-static"] } else { &[] };
    common::compile_c("cli/tests/c/twin_buffers.c", extra)
}

/// The Go service, built once per test binary with the `go` of Debian's
/// `golang-go` (`scripts/test` installs it where missing).
fn go_program() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let go = ["go", "/usr/lib/go/bin/go"]
                .into_iter()
                .find(|g| Command::new(g).arg("version").output().is_ok())
                .expect("no `go`: install Debian's golang-go (scripts/test does)");
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| common::repo().join("target"));
            let dir = target.join("gotests");
            std::fs::create_dir_all(&dir).unwrap();
            let out = dir.join(format!("twin_server-{}", std::process::id()));
            let st = Command::new(go)
                .arg("build")
                .arg("-o")
                .arg(&out)
                .arg(common::repo().join("cli/tests/go/twin_server.go"))
                // Without cgo, as Go services are usually built: static.
                .env("CGO_ENABLED", "0")
                .env("GOCACHE", dir.join("cache"))
                .env("GOPATH", dir.join("path"))
                .env("GOFLAGS", "")
                .status()
                .expect("run go build");
            assert!(st.success(), "go build failed");
            out
        })
        .clone()
}

/// `ksmauto run --json ARGS -- PROGRAM`, up to the program's "ready" line.
struct Running {
    run: Child,
    pid: i32,
    /// The rest of the ready line (the Go service's port).
    ready_rest: Vec<String>,
    /// What `run` said on stderr before the program was ready.
    said: String,
}

fn start(args: &[&str], program: &Path) -> Running {
    let mut run = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .arg("run")
        .args(["--lib", common::lib().to_str().unwrap(), "--json"])
        .args(args)
        .arg("--")
        .arg(program)
        .env_remove("LD_PRELOAD")
        .env_remove("KSMAUTO_MODE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(run.stderr.take().unwrap()).lines();
    let mut said = String::new();
    loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = run.wait();
            panic!("ended before it was ready; it said: {said}");
        };
        if let Some(rest) = line.strip_prefix("ready ") {
            let mut f = rest.split_whitespace().map(str::to_string);
            let pid = f.next().unwrap().parse().unwrap();
            // Keep reading stderr so that nothing blocks on a full pipe.
            std::thread::spawn(move || for _ in lines.by_ref() {});
            return Running {
                run,
                pid,
                ready_rest: f.collect(),
                said,
            };
        }
        said.push_str(&line);
        said.push('\n');
    }
}

fn ksm_stat_field(pid: i32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/ksm_stat"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

/// Waits until the process's merged pages stop growing over two full scans
/// (and, while none merged, for at least eight full scans).
fn wait_merged(pid: i32) -> u64 {
    let t0 = Instant::now();
    let mut last = common::merged_pages_of(pid as u32);
    for round in 1.. {
        common::wait_full_scans(2, Duration::from_secs(60));
        let now = common::merged_pages_of(pid as u32);
        if now == last && (now > 0 || round >= 4) {
            return now;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "pid {pid} still merging after 90 s ({now} pages)"
        );
        last = now;
    }
    unreachable!()
}

/// Ends the program with `sig` and returns `run`'s JSON and its record of
/// the program.
fn finish(mut r: Running, sig: i32) -> (serde_json::Value, serde_json::Value) {
    // Two of run's looks after the last figures.
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(r.pid, sig) };
    let mut out = String::new();
    r.run
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let st = r.run.wait().unwrap();
    assert_eq!(st.code(), Some(0), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let me = v["per_process"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"].as_i64() == Some(r.pid as i64))
        .unwrap_or_else(|| panic!("pid {} not in {v}", r.pid))
        .clone();
    (v, me)
}

#[test]
fn the_probe_reads_the_flag_of_its_own_process() {
    let o = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .arg("probe-merge-any")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(41), "not set in a plain child");
}

#[test]
fn run_covers_a_static_c_program_as_well_as_the_preload_covers_it_dynamic() {
    let Some(_ksm) = common::ksmd() else { return };
    // The preload in process mode (merge-any) on the dynamic build.
    let r = start(&["--mode", "process"], &c_program(false));
    let dynamic_live = wait_merged(r.pid);
    let (_, dynamic) = finish(r, libc::SIGUSR1);
    let dynamic_merged = dynamic["merged_pages"].as_u64().unwrap();
    assert!(dynamic_merged >= dynamic_live.min(TWIN_PAGES) * 95 / 100);

    // The static build, with no --mode (auto).
    let r = start(&[], &c_program(true));
    let (said, merge_any) = (r.said.clone(), ksm_stat_field(r.pid, "ksm_merge_any:"));
    wait_merged(r.pid);
    let (v, stat) = finish(r, libc::SIGUSR1);
    let static_merged = stat["merged_pages"].as_u64().unwrap();
    eprintln!("merged pages: static {static_merged}, dynamic (preload, process) {dynamic_merged}");
    assert!(
        static_merged * 100 >= dynamic_merged * 95,
        "static {static_merged} < 95% of dynamic {dynamic_merged}"
    );
    assert!(static_merged >= TWIN_PAGES * 95 / 100, "{static_merged}");
    assert_eq!(v["merged_pages"].as_u64(), Some(static_merged));
    assert_eq!(merge_any, "yes");
    assert!(
        said.contains("static executable") && said.contains("PR_SET_MEMORY_MERGE"),
        "run says how it covers a static program: {said}"
    );
    assert_eq!(stat["covered"], "merge-any", "{stat}");
    assert_eq!(stat["coverage"], "inherited merge-any", "{stat}");
    assert_eq!(dynamic["coverage"], "preload (process)", "{dynamic}");
}

#[test]
fn run_covers_a_go_service_and_it_still_serves() {
    let Some(_ksm) = common::ksmd() else { return };
    let r = start(&[], &go_program());
    let said = r.said.clone();
    // It serves on 127.0.0.1 while it merges.
    let port: u16 = r.ready_rest[0].parse().unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    let sums: Vec<&str> = reply.lines().last().unwrap().split(' ').collect();
    assert_eq!(sums[0], sums[1], "the two tables are the same");
    wait_merged(r.pid);
    let (_, stat) = finish(r, libc::SIGTERM);
    let merged = stat["merged_pages"].as_u64().unwrap();
    eprintln!("Go service: merged pages {merged} of {TWIN_PAGES} duplicate");
    assert!(
        merged >= TWIN_PAGES * 95 / 100,
        "{merged} < 95% of {TWIN_PAGES}"
    );
    assert!(said.contains("static executable"), "{said}");
    assert_eq!(stat["coverage"], "inherited merge-any", "{stat}");
}

#[test]
fn a_setuid_static_program_is_left_alone_with_a_warning() {
    let Some(_ksm) = common::ksmd() else { return };
    let dir = std::env::temp_dir().join(format!("ksmauto-setuid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prog = dir.join("twin_setuid");
    std::fs::copy(c_program(true), &prog).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let r = start(&[], &prog);
    assert_eq!(
        ksm_stat_field(r.pid, "ksm_merge_any:"),
        "no",
        "merge-any set for a setuid program"
    );
    assert!(
        r.said.contains("warning") && r.said.contains("setuid"),
        "says why it is left alone: {}",
        r.said
    );
    let (_, stat) = finish(r, libc::SIGUSR1);
    assert_eq!(stat["covered"], "none", "{stat}");
    assert!(
        stat["coverage"].as_str().unwrap().starts_with("none")
            && stat["coverage_why"].as_str().unwrap().contains("setuid"),
        "{stat}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn advise_mode_says_a_static_program_cannot_be_covered() {
    let Some(_ksm) = common::ksmd() else { return };
    let r = start(&["--mode", "advise"], &c_program(true));
    assert!(
        r.said.contains("advise mode cannot cover a static program"),
        "{}",
        r.said
    );
    assert_eq!(ksm_stat_field(r.pid, "ksm_merge_any:"), "no");
    let (_, stat) = finish(r, libc::SIGUSR1);
    assert_eq!(stat["covered"], "none", "{stat}");
}

fn compare(args: &[&str], program: &Path) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .args([
            "compare",
            "--workers",
            "2",
            "--json",
            "--settle-timeout",
            "90",
        ])
        .args(["--lib", common::lib().to_str().unwrap()])
        .args(args)
        .arg("--")
        .arg(program)
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn merged_with(c: &serde_json::Value) -> u64 {
    let last = &c["with"]["last"];
    last["merging_pages"].as_u64().unwrap() + last["zero_pages"].as_u64().unwrap()
}

fn coverages(c: &serde_json::Value) -> Vec<String> {
    c["with"]["per_process"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["coverage"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn compare_covers_static_programs_too() {
    let Some(_ksm) = common::ksmd() else { return };
    let dynamic = compare(&["--mode", "process"], &c_program(false));
    let stat = compare(&[], &c_program(true));
    let (d, s) = (merged_with(&dynamic), merged_with(&stat));
    eprintln!("compare, merged pages with: static {s}, dynamic (preload, process) {d}");
    assert!(s * 100 >= d * 95, "static {s} < 95% of dynamic {d}");
    assert!(s >= 2 * TWIN_PAGES * 95 / 100, "{s}");

    let go = compare(&[], &go_program());
    let g = merged_with(&go);
    eprintln!(
        "compare, Go service x2: merged pages {g} of {}",
        2 * TWIN_PAGES
    );
    assert!(g >= 2 * TWIN_PAGES * 95 / 100, "{g}");
    assert_eq!(go["without"]["last"]["merging_pages"], 0);

    assert_eq!(coverages(&dynamic), ["preload (process)"; 2], "{dynamic}");
    assert_eq!(coverages(&stat), ["inherited merge-any"; 2], "{stat}");
    assert_eq!(coverages(&go), ["inherited merge-any"; 2], "{go}");
    let advise = compare(&["--mode", "advise"], &c_program(true));
    assert!(
        coverages(&advise)
            .iter()
            .all(|c| c == "none (static, advise mode)"),
        "{advise}"
    );
}

/// `ksmauto run ARGS -- PROGRAM` with `env` set: what `run` said on stderr
/// and the program's own `merge_any=` line.
fn run_flag(args: &[&str], env: &[(&str, &str)], program: &Path) -> (String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .arg("run")
        .args(["--lib", common::lib().to_str().unwrap()])
        .args(args)
        .arg("--")
        .arg(program)
        .env_remove("LD_PRELOAD")
        .env_remove("KSMAUTO_MODE")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let said = common::text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{said}");
    let out = common::text(&o.stdout);
    let flag = out
        .lines()
        .find_map(|l| l.strip_prefix("merge_any="))
        .unwrap_or_else(|| panic!("no merge_any line: {out}; {said}"))
        .to_string();
    (said, flag)
}

fn show_merge_any(static_link: bool) -> PathBuf {
    let extra: &[&str] = if static_link { &["-static"] } else { &[] };
    common::compile_c("cli/tests/c/show_merge_any.c", extra)
}

/// The mode is `--mode`, else `KSMAUTO_MODE` as the library reads it, else
/// auto: a static program under KSMAUTO_MODE=off gets no merge-any, under
/// advise the warning that it cannot be covered.
#[test]
fn run_takes_the_mode_from_ksmauto_mode_for_a_static_program() {
    let prog = show_merge_any(true);
    let (said, flag) = run_flag(&[], &[("KSMAUTO_MODE", "off")], &prog);
    assert_eq!(flag, "0", "KSMAUTO_MODE=off: {said}");
    assert!(!said.contains("covering it"), "{said}");
    let (said, flag) = run_flag(&[], &[("KSMAUTO_MODE", "advise")], &prog);
    assert_eq!(flag, "0", "KSMAUTO_MODE=advise: {said}");
    assert!(
        said.contains("advise mode cannot cover a static program"),
        "{said}"
    );
    // --mode wins over the environment.
    let (said, flag) = run_flag(&["--mode", "process"], &[("KSMAUTO_MODE", "off")], &prog);
    assert_eq!(flag, "1", "{said}");
    // No mode at all, or one the library does not know (it warns and takes
    // auto): auto, which covers it.
    let (said, flag) = run_flag(&[], &[], &prog);
    assert_eq!(flag, "1", "{said}");
    let (said, flag) = run_flag(&[], &[("KSMAUTO_MODE", "Off")], &prog);
    assert_eq!(flag, "1", "{said}");
}

/// The short words for an uncovered static program come from why it was
/// left uncovered, not from the words of the warning: a program whose path
/// says "privileges" and that advise mode leaves uncovered is `none
/// (static, advise mode)`. Before, the table searched the warning for
/// "privileges" (it names the program's path) and said `none (static,
/// privileged)`.
#[test]
fn the_words_for_an_uncovered_program_do_not_depend_on_its_path() {
    let dir = std::env::temp_dir().join(format!(
        "ksmauto-words-{}/no privileges here",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let prog = dir.join("prog");
    std::fs::copy(c_program(true), &prog).unwrap();
    let r = start(&["--mode", "advise"], &prog);
    assert!(r.said.contains("privileges here/prog"), "{}", r.said);
    let (_, stat) = finish(r, libc::SIGUSR1);
    assert_eq!(stat["coverage"], "none (static, advise mode)", "{stat}");
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

/// `cli/tests/c/tiny32.S` as a 32-bit static i386 program (x86_64 only).
fn tiny32() -> Option<PathBuf> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    // One directory per call: the tests run in parallel, and each removes
    // its own when done.
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ksmauto-tiny32-{}-{seq}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (obj, exe) = (dir.join("tiny32.o"), dir.join("tiny32"));
    let st = Command::new("as")
        .arg("--32")
        .arg("-o")
        .arg(&obj)
        .arg(common::repo().join("cli/tests/c/tiny32.S"))
        .status()
        .expect("run as (binutils)");
    assert!(st.success());
    let st = Command::new("ld")
        .args(["-m", "elf_i386", "-o"])
        .arg(&exe)
        .arg(&obj)
        .status()
        .expect("run ld (binutils)");
    assert!(st.success());
    Some(exe)
}

/// A 32-bit static program on x86_64 is static too: run covers it with
/// merge-any (the kernel keeps it across that exec as well), and its
/// 32-bit auxv is not misread as "secure execution".
#[test]
fn run_covers_a_32_bit_static_program() {
    let Some(prog) = tiny32() else { return };
    let o = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .arg("run")
        .args(["--lib", common::lib().to_str().unwrap(), "--json", "--"])
        .arg(&prog)
        .env_remove("LD_PRELOAD")
        .env_remove("KSMAUTO_MODE")
        .output()
        .unwrap();
    let said = common::text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{said}");
    assert!(
        said.contains("covering it with PR_SET_MEMORY_MERGE"),
        "{said}"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = &v["per_process"][0];
    assert_eq!(p["coverage"], "inherited merge-any", "{v}");
    // Left uncovered (advise mode), it is called static, not secure.
    let o = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .arg("run")
        .args(["--lib", common::lib().to_str().unwrap(), "--json"])
        .args(["--mode", "advise", "--"])
        .arg(&prog)
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["per_process"][0]["coverage"], "none (static, advise mode)",
        "{v}"
    );
    let _ = std::fs::remove_dir_all(prog.parent().unwrap());
}

/// A static ELF of another architecture is no program here: no plan (a
/// pre_exec hook made std fork+execvp, whose ENOEXEC fallback ran it with
/// /bin/sh as a script), so it fails to execute as it would without run.
#[test]
fn a_static_program_of_another_architecture_gets_no_plan() {
    let native = show_merge_any(true);
    let dir = std::env::temp_dir().join(format!("ksmauto-foreign-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let foreign = dir.join("foreign-arch");
    let mut elf = std::fs::read(&native).unwrap();
    // e_machine: AArch64 on x86_64, x86_64 elsewhere.
    let other: u16 = if cfg!(target_arch = "x86_64") {
        183
    } else {
        62
    };
    elf[18..20].copy_from_slice(&other.to_le_bytes());
    std::fs::write(&foreign, &elf).unwrap();
    std::fs::set_permissions(
        &foreign,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .arg("run")
        .args(["--lib", common::lib().to_str().unwrap(), "--"])
        .arg(&foreign)
        .env_remove("LD_PRELOAD")
        .env_remove("KSMAUTO_MODE")
        .output()
        .unwrap();
    let said = common::text(&o.stderr);
    assert!(!said.contains("covering it"), "{said}");
    assert!(!said.contains("static"), "{said}");
    // Not run by a shell: no shell's words, and no exit status of one.
    assert!(!said.contains("sh:"), "{said}");
    assert_ne!(o.status.code(), Some(0), "{said}");
    assert_ne!(o.status.code(), Some(2), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The dynamic loader run as a command runs a dynamic program, which reads
/// LD_PRELOAD: no "cannot cover a static program" for it.
#[test]
fn the_dynamic_loader_as_a_command_is_not_a_static_program() {
    let interp = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(interp) = interp else { return };
    let prog = show_merge_any(false);
    let o = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .arg("run")
        .args(["--lib", common::lib().to_str().unwrap(), "--json"])
        .args(["--mode", "advise", "--", interp])
        .arg(&prog)
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap();
    let said = common::text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{said}");
    assert!(!said.contains("static"), "{said}");
    // The program's own line, then run's JSON.
    let out = common::text(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["per_process"][0]["coverage"], "preload (advise)", "{v}");
}

/// An execute-only program this user cannot read cannot be inspected: run
/// says so (it may be static, then nothing covers it).
#[test]
fn an_execute_only_program_gets_a_warning_that_it_was_not_inspected() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("\n!!!!! SKIPPED: needs root (setpriv to another user) !!!!!\n");
        return;
    }
    let dir = std::env::temp_dir().join(format!("ksmauto-xonly-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let xonly = dir.join("xonly-static");
    std::fs::copy(show_merge_any(true), &xonly).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&xonly, std::fs::Permissions::from_mode(0o711)).unwrap();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_ksmauto"))
        .args(["run", "--lib", common::lib().to_str().unwrap(), "--"])
        .arg(&xonly)
        .env_remove("LD_PRELOAD")
        .env_remove("KSMAUTO_MODE")
        .current_dir("/")
        .output()
        .unwrap();
    let said = common::text(&o.stderr);
    assert!(
        said.contains("could not be inspected (Permission denied"),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `compare` started with merge-any already set (a MemoryKSM=yes unit, a
/// prctl launcher): its copies inherited it, and the run without the
/// preload merged as much as the one with it. compare clears it in itself
/// first, and says so.
#[test]
fn compare_started_with_merge_any_clears_it_for_its_copies() {
    let Some(_ksm) = common::ksmd() else { return };
    let launcher = common::compile_c("cli/tests/c/prctl_exec.c", &[]);
    let o = Command::new(launcher)
        .arg(env!("CARGO_BIN_EXE_ksmauto"))
        .args([
            "compare",
            "--workers",
            "2",
            "--json",
            "--settle-timeout",
            "90",
            "--mode",
            "process",
        ])
        .args(["--lib", common::lib().to_str().unwrap(), "--"])
        .arg(c_program(false))
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap();
    let said = common::text(&o.stderr);
    assert!(o.status.success(), "{said}");
    let c: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let without: Vec<&str> = c["without"]["per_process"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["coverage"].as_str().unwrap())
        .collect();
    assert!(
        without.iter().all(|w| *w != "inherited merge-any"),
        "{without:?}"
    );
    assert_eq!(c["without"]["last"]["merging_pages"], 0, "{c}");
    assert!(merged_with(&c) >= 2 * TWIN_PAGES * 95 / 100, "{c}");
    assert!(said.contains("started with merge-any"), "{said}");
}
