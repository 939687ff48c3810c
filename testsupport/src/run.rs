//! Running a program with or without the preload, and reading what it
//! printed (`key=value` lines).

use crate::build::lib;
use ksmauto_contract::env;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How to run a program: without the library, or preloaded with settings.
#[derive(Clone, Debug)]
pub struct Run {
    pub preload: bool,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
}

impl Run {
    pub fn without() -> Run {
        Run {
            preload: false,
            env: vec![],
            timeout: Duration::from_secs(120),
        }
    }

    pub fn with(mode: &str) -> Run {
        let mut r = Run {
            preload: true,
            env: vec![],
            timeout: Duration::from_secs(120),
        };
        if mode != "default" {
            r.env.push((env::MODE.into(), mode.into()));
        }
        r
    }

    pub fn env(mut self, k: &str, v: &str) -> Run {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        // Start from a clean slate: the test runner's own KSMAUTO_* must not leak in.
        for (k, _) in std::env::vars() {
            if k.starts_with(env::PREFIX) || k == "LD_PRELOAD" {
                cmd.env_remove(k);
            }
        }
        if self.preload {
            cmd.env("LD_PRELOAD", lib());
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs to completion (killed after the timeout) and returns the output.
    pub fn output(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
        let mut cmd = self.command(program);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        run_with_timeout(cmd, self.timeout)
    }
}

pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !flag.load(std::sync::atomic::Ordering::Relaxed) {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    let out = child.wait_with_output().expect("wait");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    out
}

/// Runs the tool at `exe` (a test's `env!("CARGO_BIN_EXE_ksmauto")`) with
/// `args`, without any preload and on the real sysfs: its exit code (-1
/// when killed by a signal), stdout and stderr. Panics if the tool did.
pub fn run_tool(exe: &str, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(exe)
        .args(args)
        .env_remove("LD_PRELOAD")
        .env_remove(env::SYSFS_KSM)
        .output()
        .expect("run ksmauto");
    let err = text(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    (o.status.code().unwrap_or(-1), text(&o.stdout), err)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The value after `key ` on a `key value` line of `output`.
pub fn field(output: &str, key: &str) -> Option<String> {
    output.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(' '))
            .map(|v| v.trim().to_string())
    })
}

/// A `key 0|1` line of `output` as a bool (panics if missing or other).
pub fn flag(output: &str, key: &str) -> bool {
    match field(output, key).as_deref() {
        Some("1") => true,
        Some("0") => false,
        other => panic!("`{key}` is {other:?} in:\n{output}"),
    }
}

/// Runs `program args` under `run`, asserts exit status 0, returns stdout.
pub fn run_ok(program: &Path, run: &Run, args: &[&str]) -> String {
    let out = run.output(program, args);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{} {args:?}: {:?}\n{stdout}\n{}",
        program.display(),
        out.status,
        text(&out.stderr)
    );
    stdout
}

/// The numbers of the first line of `output` that starts with `key ` (a
/// program's `pids 12 34` line); panics if there is none.
pub fn numbers_after(output: &str, key: &str) -> Vec<i64> {
    output
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no `{key}` line in:\n{output}"))
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

pub fn field_u64(output: &str, key: &str) -> u64 {
    field(output, key)
        .unwrap_or_else(|| panic!("no `{key}` in output:\n{output}"))
        .parse()
        .unwrap()
}
