//! Unasked (`KSMAUTO_STATS` unset), only the process the user started
//! writes the exit report: a process that outlives the parent that started
//! it must stay silent, though its parent is now init or a subreaper that
//! does not run the library. Before, the rule read the parent at exit, and
//! an orphan in `advise` mode (in `process` mode too, under a subreaper)
//! wrote its two report lines into whatever its stderr was: a test's
//! captured output, a server's log (`bash -c 'prog & exit 0'`, `pg_ctl`
//! starting the postmaster, CPython's forkserver).
//!
//! tests/c/orphans.c builds the trees; every process in them has something
//! to report and prints its role and pid, and the test matches the report
//! lines on stderr to the roles: the starter (the process the test started)
//! reports, no orphan or daemon does.

use ksmauto_testsupport as common;

use common::{compile_c, lib, text, Run};
use std::collections::{BTreeSet, HashMap};
use std::process::Output;

const MODES: [&str; 2] = ["advise", "process"];

fn orphans() -> std::path::PathBuf {
    compile_c("tests/c/orphans.c", &[])
}

/// `pid -> role` from the "role NAME PID" lines.
fn roles(out: &Output) -> HashMap<u32, String> {
    text(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("role ")?.split(' ');
            let role = words.next()?.to_string();
            Some((words.next()?.parse().ok()?, role))
        })
        .collect()
}

/// The pids that wrote a report on stderr (`ksmauto[PID] ...` lines).
fn reporters(out: &Output) -> BTreeSet<u32> {
    text(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("ksmauto[")?.split(']').next()?.parse().ok())
        .collect()
}

/// Runs a tree, checks that it succeeded and which roles reported.
fn check(out: &Output, what: &str, silent_role: &str, starter_reports: bool) {
    let roles = roles(out);
    let describe = || {
        format!(
            "{what}: {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        )
    };
    assert!(out.status.success(), "{}", describe());
    assert!(
        roles.values().any(|r| r == silent_role),
        "the {silent_role} never worked: {}",
        describe()
    );
    for pid in reporters(out) {
        let role = roles.get(&pid).map(String::as_str).unwrap_or("?");
        assert!(
            role == "starter" || (role == "?" && !starter_reports),
            "the {role} (pid {pid}) wrote a report: {}",
            describe()
        );
    }
    if starter_reports {
        let starter = roles.iter().find(|(_, r)| *r == "starter").map(|(p, _)| *p);
        assert!(
            starter.is_some_and(|p| reporters(out).contains(&p)),
            "the process the user started must still report: {}",
            describe()
        );
    }
}

/// Orphaned after its start (its parent waited until it ran), orphaned
/// before it (exec'd once its parent was gone), and a daemon's double fork
/// (fork, setsid, fork, exit), the daemon working as forked or exec'd: the
/// orphans are re-parented to init (or whichever subreaper the test runs
/// under).
#[test]
fn orphans_and_daemons_stay_silent_the_starter_reports() {
    for mode in MODES {
        for (scenario, silent) in [
            ("late", "orphan"),
            ("early", "orphan"),
            ("daemon", "daemon"),
            ("daemon-exec", "daemon"),
        ] {
            let out = Run::with(mode).output(orphans(), &[scenario]);
            check(&out, &format!("{mode} {scenario}"), silent, true);
        }
    }
}

/// The same trees under a child subreaper that does not run the library
/// (`prctl(PR_SET_CHILD_SUBREAPER)`, as systemd --user, tini or a test
/// harness): the orphans are re-parented to it, a parent that can be asked
/// and does not run the library, as the starter's own parent.
#[test]
fn orphans_of_a_subreaper_stay_silent_the_starter_reports() {
    let library = lib().to_str().unwrap();
    for mode in MODES {
        for (scenario, silent) in [
            ("late", "orphan"),
            ("daemon", "daemon"),
            ("daemon-exec", "daemon"),
        ] {
            let out = Run::without()
                .env("KSMAUTO_MODE", mode)
                .output(orphans(), &["reaper", library, scenario]);
            check(
                &out,
                &format!("{mode} {scenario} under a subreaper"),
                silent,
                true,
            );
        }
    }
}

/// The smallest case of the issue: a shell that starts a program in the
/// background and exits at once (`bash -c 'prog & exit 0'`); the program is
/// orphaned before or after its start, whichever comes first.
#[test]
fn a_background_job_of_a_shell_that_exited_stays_silent() {
    let prog = orphans();
    for mode in MODES {
        for _ in 0..3 {
            let mut cmd = Run::with(mode).command("bash");
            cmd.arg("-c")
                .arg(r#""$P" child & exit 0"#)
                .env("P", &prog)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let out = common::run_with_timeout(cmd, std::time::Duration::from_secs(60));
            // bash itself is the process the user started: it may report
            // (role "?"), or have nothing to say.
            check(
                &out,
                &format!("{mode} bash -c 'child & exit 0'"),
                "orphan",
                false,
            );
        }
    }
}
