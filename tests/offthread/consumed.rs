//! Nothing consumed (issue 19, target 2): a program waiting for a one-shot
//! notification — a mount change on /proc/self/mountinfo, a hostname
//! change on /proc/sys/kernel/hostname, a PSI trigger — is notified with
//! the library as without it, whether it polls, epolls, or re-reads the
//! file before polling. The program (tests/c/one_shot.c) allocates after
//! the change and before its wait, so the catch-up has news right then.
//!
//! Each case runs without the library, then under `advise` and `process`;
//! each run makes its own change in private mount and UTS namespaces the
//! test makes for it (nothing reaches the host: the hostname is the UTS
//! namespace's, the tmpfs is mounted in the private mount namespace, the PSI
//! trigger sits in a cgroup of its own, whose pressure only the program's
//! own spinning children make — the machine's load cannot fire it, unlike
//! /proc/pressure/cpu's). One thing is global: the kernel wakes every
//! hostname watcher on any `sethostname`, in whatever namespace, so the
//! hostname cases run one at a time.

use super::*;
use common::*;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

static ONE_HOSTNAME_CHANGE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A directory of its own for one run: a mount point in the private mount
/// namespace (tmpfs, or cgroup2 for the PSI trigger). Removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "offthread-tests-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `one_shot ARGS` under `run`, in private mount and UTS namespaces.
fn in_namespaces(run: &Run, args: &[&str]) -> std::process::Command {
    let prog = compile_c("tests/c/one_shot.c", &[]);
    let mut cmd = run.clone().env("KSMAUTO_STATS", "off").command(prog);
    cmd.args(args);
    // Runs in the forked child before exec: async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let root = c"/";
            let private = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                private,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// What the program said about its wait: `notified …` or `missed`. A PSI
/// run whose pressure a loaded machine let run on too long says
/// `inconclusive`: it is run again, up to 5 times.
fn wait_outcome(run: &Run, notifier: &str, wait: &str) -> String {
    for _ in 0..5 {
        let outcome = one_run(run, notifier, wait);
        if !outcome.starts_with("inconclusive") {
            return outcome;
        }
        eprintln!("{notifier} {wait} under {:?}: {outcome}; again", run.env);
    }
    panic!(
        "{notifier} {wait} under {:?}: 5 inconclusive runs: the machine is too busy",
        run.env
    )
}

fn one_run(run: &Run, notifier: &str, wait: &str) -> String {
    let scratch = Scratch::new(notifier);
    let dir = scratch.0.to_str().unwrap();
    let mut cmd = in_namespaces(run, &[notifier, wait, dir]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    if notifier == "psi" {
        // A run killed before it left its cgroup leaves it behind.
        let _ = run_with_timeout(
            in_namespaces(&Run::without(), &["cleanup", dir]),
            Duration::from_secs(30),
        );
    }
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "one_shot {notifier} {wait} under {:?}: {:?}\n{stdout}\n{}",
        run.env,
        out.status,
        text(&out.stderr)
    );
    stdout.trim().to_string()
}

/// Whether this machine can run the case at all (root for namespaces and
/// mounts; PSI compiled in and cgroup2 mountable for the trigger).
fn possible(notifier: &str) -> Result<(), String> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (namespaces, mounts, cgroups)".into());
    }
    if notifier == "psi" && !std::path::Path::new("/proc/pressure/cpu").exists() {
        return Err("this kernel has no PSI (/proc/pressure/cpu)".into());
    }
    Ok(())
}

fn notified_as_without_the_library(notifier: &str, wait: &str) {
    if let Err(why) = possible(notifier) {
        return skip(&format!("one_shot {notifier} {wait}: {why}"));
    }
    let _serial = (notifier == "hostname").then(|| {
        ONE_HOSTNAME_CHANGE_AT_A_TIME
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    });
    let without = wait_outcome(&Run::without(), notifier, wait);
    assert!(
        without.starts_with("notified"),
        "{notifier} {wait}: not notified even without the library ({without}): the case itself does not work here"
    );
    let mut missed = vec![];
    for mode in ["advise", "process"] {
        let with = wait_outcome(&Run::with(mode), notifier, wait);
        eprintln!("{notifier} {wait}: without the library {without}; {mode}: {with}");
        if !with.starts_with("notified") {
            missed.push(format!("{mode}: {with}"));
        }
    }
    assert!(
        missed.is_empty(),
        "{notifier} {wait}: notified without the library, but not with it ({}): a look of the \
         library's took the one-shot event",
        missed.join(", ")
    );
}

/// One module per notifier, a test per way of waiting.
macro_rules! notifiers {
    ($($(#[$doc:meta])* $notifier:ident),* $(,)?) => {$(
        $(#[$doc])*
        mod $notifier {
            #[test]
            fn poll() {
                super::notified_as_without_the_library(stringify!($notifier), "poll");
            }

            #[test]
            fn epoll() {
                super::notified_as_without_the_library(stringify!($notifier), "epoll");
            }

            #[test]
            fn read_then_poll() {
                super::notified_as_without_the_library(stringify!($notifier), "read");
            }
        }
    )*};
}

notifiers!(
    /// A mount change: /proc/self/mountinfo (systemd's mount watcher).
    mountinfo,
    /// A hostname change: /proc/sys/kernel/hostname (hostnamed's watch).
    hostname,
    /// A PSI trigger in a cgroup's cpu.pressure (systemd-oomd, lmkd).
    psi,
);
