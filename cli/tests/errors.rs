//! Exit codes and one-line errors of every failure path, and the read-only
//! `status` output formats.

use ksmauto_testsupport as common;

use std::process::{Command, Output};

fn ksmauto(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ksmauto"));
    c.args(args)
        .env_remove("KSMAUTO_SYSFS_KSM")
        .env_remove("LD_PRELOAD");
    c
}

fn out(mut c: Command) -> Output {
    c.output().expect("run ksmauto")
}

/// Exit code, and stderr checked to be clean: one `ksmauto:` line, no panic.
fn failing(o: &Output, code: i32) -> String {
    let err = common::text(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    err
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn help_exits_0_and_lists_subcommands() {
    let o = out(ksmauto(&["--help"]));
    assert_eq!(o.status.code(), Some(0));
    let t = common::text(&o.stdout);
    for sub in ["run", "status", "estimate", "compare", "ksmd", "Exit codes"] {
        assert!(t.contains(sub), "{t}");
    }
}

#[test]
fn bad_usage_exits_2() {
    for args in [
        &[][..],
        &["nosuchcommand"][..],
        &["estimate"][..],
        &["estimate", "notapid"][..],
        &["run"][..],
        &["run", "--mode", "sideways", "--", "true"][..],
        &["status", "--json", "--prometheus"][..],
        &["ksmd", "--on", "--off"][..],
        &["compare", "--workers", "0", "--", "true"][..],
        // Too long to be a duration: it ended with an internal error (1).
        &["status", "--watch", "1e30"][..],
        &["status", "--watch", "-1"][..],
        &["status", "--watch", "NaN"][..],
        // Not a duration either: an internal error (1) before.
        &["compare", "--settle-timeout", "inf", "--", "true"][..],
        &["compare", "--settle-timeout", "1e300", "--", "true"][..],
        &["compare", "--settle-timeout", "NaN", "--", "true"][..],
        &["compare", "--settle-timeout", "-5", "--", "true"][..],
    ] {
        let o = out(ksmauto(args));
        failing(&o, 2);
    }
}

#[test]
fn estimate_of_a_missing_pid_exits_3() {
    let o = out(ksmauto(&["estimate", "999999"]));
    let err = failing(&o, 3);
    assert_eq!(err.trim(), "ksmauto: no such process: 999999");
}

#[test]
fn ksmd_as_nobody_exits_4() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to switch to uid 65534");
        return;
    }
    if !std::path::Path::new("/sys/kernel/mm/ksm/run").exists() {
        eprintln!("SKIPPED: no KSM");
        return;
    }
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_ksmauto"))
        .args(["ksmd", "--on"]);
    let o = out(c);
    let err = failing(&o, 4);
    assert!(err.contains("permission denied: run as root"), "{err}");
}

#[test]
fn estimate_of_another_users_process_exits_4() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to switch to uid 65534");
        return;
    }
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_ksmauto"))
        .args(["estimate", "1"]);
    let o = out(c);
    let err = failing(&o, 4);
    assert!(err.contains("permission denied"), "{err}");
}

#[test]
fn kernel_without_ksm_exits_5() {
    for args in [
        &["status"][..],
        &["status", "--json"][..],
        &["ksmd", "--on"][..],
        &["compare", "--", "true"][..],
    ] {
        let mut c = ksmauto(args);
        c.env("KSMAUTO_SYSFS_KSM", "/nonexistent");
        let o = out(c);
        let err = failing(&o, 5);
        assert!(err.contains("this kernel has no KSM (CONFIG_KSM)"), "{err}");
    }
}

#[test]
fn advisor_scan_without_advisor_is_a_clear_error() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    // A fake sysfs directory without advisor_mode.
    let dir = std::env::temp_dir().join(format!("ksmauto-fake-sysfs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("run"), "0\n").unwrap();
    let mut c = ksmauto(&["ksmd", "--scan", "advisor"]);
    c.env("KSMAUTO_SYSFS_KSM", &dir);
    let o = out(c);
    let err = failing(&o, 1);
    assert!(
        err.contains("this kernel has no scan-time advisor"),
        "{err}"
    );
    // --scan fast writes the pace (for demos and tests: 2000 pages every
    // 10 ms) into the (fake) directory.
    let mut c = ksmauto(&["ksmd", "--on", "--scan", "fast"]);
    c.env("KSMAUTO_SYSFS_KSM", &dir);
    let o = out(c);
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(dir.join("pages_to_scan")).unwrap(),
        "2000"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("sleep_millisecs")).unwrap(),
        "10"
    );
    assert_eq!(std::fs::read_to_string(dir.join("run")).unwrap(), "1");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_with_a_missing_lib_is_a_clear_error() {
    let o = out(ksmauto(&[
        "run",
        "--lib",
        "/nonexistent/libksmauto.so",
        "--",
        "true",
    ]));
    let err = failing(&o, 1);
    assert_eq!(
        err.trim(),
        "ksmauto: library not found: /nonexistent/libksmauto.so (--lib)"
    );
}

#[test]
fn run_of_a_missing_command_exits_127() {
    let lib = common::lib().to_str().unwrap();
    let o = out(ksmauto(&[
        "run",
        "--lib",
        lib,
        "--",
        "/nonexistent/program",
    ]));
    let err = failing(&o, 127);
    assert!(
        err.contains("command not found: /nonexistent/program"),
        "{err}"
    );
}

/// A file with the exec bit that is no program (ENOEXEC: no `#!`, no ELF)
/// cannot be executed: 126, as docs/cli.md says and as a shell says. Before,
/// `run` exited 1 ("cannot run …: Exec format error").
#[test]
fn run_of_a_file_that_is_no_program_exits_126() {
    use std::os::unix::fs::PermissionsExt;
    let lib = common::lib().to_str().unwrap();
    let dir = std::env::temp_dir().join(format!("ksmauto-enoexec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("not-a-program");
    std::fs::write(&file, [0u8, 1, 2, 3, 0xff, 0xfe, 0, 0]).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = out(ksmauto(&[
        "run",
        "--lib",
        lib,
        "--",
        file.to_str().unwrap(),
    ]));
    let _ = std::fs::remove_dir_all(&dir);
    let err = failing(&o, 126);
    assert!(err.contains("cannot execute"), "{err}");
}

#[test]
fn run_passes_exit_status_and_signals_through() {
    let lib = common::lib().to_str().unwrap();
    let o = out(ksmauto(&["run", "--lib", lib, "--", "sh", "-c", "exit 7"]));
    assert_eq!(o.status.code(), Some(7));
    let o = out(ksmauto(&[
        "run",
        "--lib",
        lib,
        "--",
        "sh",
        "-c",
        "kill -TERM $$",
    ]));
    assert_eq!(o.status.code(), Some(128 + libc::SIGTERM));
    // stdout and stdin pass through.
    let mut c = ksmauto(&["run", "--lib", lib, "--", "cat"]);
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello through\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(common::text(&o.stdout), "hello through\n");
}

#[test]
fn run_forwards_sigterm_to_the_command() {
    let lib = common::lib().to_str().unwrap();
    let mut c = ksmauto(&["run", "--lib", lib, "--", "sleep", "30"]);
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(128 + libc::SIGTERM),
        "{}",
        common::text(&o.stderr)
    );
}

#[test]
fn run_finds_the_library_next_to_the_binary_tree() {
    // target/debug/ksmauto finds target/release/libksmauto.so.
    common::lib();
    let o = out(ksmauto(&["run", "--json", "--", "true"]));
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["library"].as_str().unwrap().ends_with("libksmauto.so"));
    assert_eq!(v["processes"], 1);
}

fn have_ksm() -> bool {
    std::path::Path::new("/sys/kernel/mm/ksm/run").exists()
}

#[test]
fn status_json_has_the_documented_fields() {
    if !have_ksm() {
        eprintln!("SKIPPED: no KSM");
        return;
    }
    let o = out(ksmauto(&["status", "--json"]));
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status --json is JSON");
    for k in [
        "sysfs",
        "page_size",
        "state",
        "values",
        "pages_shared",
        "pages_sharing",
        "ksm_zero_pages",
        "use_zero_pages",
        "saved_bytes",
        "general_profit",
        "processes",
    ] {
        assert!(v.get(k).is_some(), "no {k} in {v}");
    }
    assert!(v["values"]["run"].is_i64());
    let ps = v["page_size"].as_u64().unwrap();
    let zero = if v["use_zero_pages"].as_bool().unwrap() {
        v["ksm_zero_pages"].as_u64().unwrap()
    } else {
        0
    };
    assert_eq!(
        v["saved_bytes"].as_u64().unwrap(),
        (v["pages_sharing"].as_u64().unwrap() + zero) * ps
    );
    for p in v["processes"].as_array().unwrap() {
        for k in [
            "pid",
            "comm",
            "merging_pages",
            "zero_pages",
            "profit",
            "mode",
        ] {
            assert!(p.get(k).is_some(), "no {k} in {p}");
        }
    }
}

#[test]
fn status_prometheus_is_text_exposition_format() {
    if !have_ksm() {
        eprintln!("SKIPPED: no KSM");
        return;
    }
    let o = out(ksmauto(&["status", "--prometheus"]));
    assert_eq!(o.status.code(), Some(0));
    let t = common::text(&o.stdout);
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in t.lines() {
        if line.starts_with('#') {
            assert!(
                line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "{line}"
            );
            continue;
        }
        let (metric, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("value of {line}"));
        let name = match metric.split_once('{') {
            Some((n, labels)) => {
                assert!(labels.ends_with('}'), "{line}");
                let labels = &labels[..labels.len() - 1];
                for l in labels.split("\",") {
                    let (k, v) = l.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                    assert!(name_ok(k), "{line}");
                    let _ = v;
                }
                n
            }
            None => metric,
        };
        assert!(name_ok(name), "{line}");
    }
    for m in [
        "ksm_sharing_pages ",
        "# TYPE ksm_full_scans_total counter",
        "ksm_saved_bytes ",
        "# TYPE ksm_process_profit_bytes gauge",
    ] {
        assert!(t.contains(m), "no {m}:\n{t}");
    }
}

#[test]
fn status_text_explains_saved_memory() {
    if !have_ksm() {
        eprintln!("SKIPPED: no KSM");
        return;
    }
    let o = out(ksmauto(&["status"]));
    assert_eq!(o.status.code(), Some(0));
    let t = common::text(&o.stdout);
    assert!(t.contains("saved: ") && t.contains("pages_sharing"), "{t}");
}

/// `status --watch` into a pipe or a file: one snapshot after another,
/// nothing but the format (no screen-clearing escapes, which only a terminal
/// reads). Before, every snapshot began with `ESC[H ESC[2J`: a JSON stream
/// no reader could parse, a Prometheus text no parser took.
#[test]
fn status_watch_into_a_pipe_writes_the_format_alone() {
    use std::io::Read;
    if !have_ksm() {
        eprintln!("SKIPPED: no KSM");
        return;
    }
    for format in ["--json", "--prometheus", "--"] {
        let mut args = vec!["status", "--watch", "0.2"];
        if format != "--" {
            args.push(format);
        }
        let mut c = ksmauto(&args);
        c.stdout(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        // Read until three snapshots have come (however long a snapshot
        // takes on a loaded machine: a fixed wait of 900 ms failed when one
        // took 1.35 s), then stop it; a watchdog kills it after 120 s.
        let pid = child.id() as i32;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watchdog = {
            let done = done.clone();
            std::thread::spawn(move || {
                for _ in 0..1200 {
                    if done.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                unsafe { libc::kill(pid, libc::SIGKILL) };
            })
        };
        let marker = match format {
            "--json" => "\n",
            "--prometheus" => "# TYPE ksm_run gauge",
            _ => "ksmd: ",
        };
        let mut stdout = child.stdout.take().unwrap();
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        while String::from_utf8_lossy(&bytes).matches(marker).count() < 3 {
            match stdout.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let _ = stdout.read_to_end(&mut bytes);
        // Reaped only after the watchdog is done: its pid cannot be reused.
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = watchdog.join();
        let _ = child.wait();
        let out = String::from_utf8_lossy(&bytes).into_owned();
        assert!(!out.contains('\x1b'), "{format}: escapes in {out:?}");
        match format {
            "--json" => {
                // One object a line; the last may be cut by the kill.
                let lines: Vec<&str> = out.lines().collect();
                assert!(lines.len() >= 2, "{out}");
                for l in &lines[..lines.len() - 1] {
                    let v: serde_json::Value = serde_json::from_str(l).expect(l);
                    assert!(v["state"].is_string(), "{l}");
                }
            }
            "--prometheus" => {
                let snapshots = out.matches("# TYPE ksm_run gauge").count();
                assert!(snapshots >= 2, "{out}");
            }
            _ => assert!(out.matches("ksmd: ").count() >= 2, "{out}"),
        }
    }
}
