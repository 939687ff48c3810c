//! The program's own choices: merge-any it switched off itself stays off;
//! a sandbox it installs gets merge-any switched off for good first (the
//! guard cannot inspect an `exec` under the filter).

use super::common::{compile_c, field, run_ok, Run};
use super::lab::*;

fn choices(args: &[&str]) -> String {
    let prog = compile_c("tests/c/merge_any_choices.c", &[]);
    let out = run_ok(
        &prog,
        &Run::with("process").env("KSMAUTO_STATS", "off"),
        args,
    );
    assert_eq!(
        field(&out, "start merge_any").as_deref(),
        Some("1"),
        "{out}"
    );
    out
}

fn probes(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|l| l.strip_prefix("probe merge_any "))
        .map(|rest| rest.split_whitespace().next().unwrap())
        .collect()
}

/// `prctl(PR_SET_MEMORY_MERGE, 0)` by the program: neither a spawn's
/// parent, nor the poll after a `vfork` child's `exec`, nor a failed `exec`
/// switches it back on; the program's own switch back on makes the guard
/// work again.
#[test]
fn merge_any_the_program_switched_off_itself_stays_off() {
    let lab = Lab::new("optout");
    for how in ["prctl", "syscall"] {
        let out = choices(&[
            "optout",
            how,
            &lab.path("static-probe"),
            &lab.path("unknown-format"),
        ]);
        for when in ["own-off", "after-spawn", "after-vfork", "after-failed-exec"] {
            let key = format!("{when} merge_any");
            assert_eq!(
                field(&out, &key).as_deref(),
                Some("0"),
                "{how} {when}:\n{out}"
            );
        }
        assert_eq!(
            field(&out, "own-on merge_any").as_deref(),
            Some("1"),
            "{out}"
        );
        assert_eq!(
            field(&out, "after-spawn-on merge_any").as_deref(),
            Some("1"),
            "{out}"
        );
        assert_eq!(
            probes(&out),
            ["0", "0", "0"],
            "{how}: the static programs:\n{out}"
        );
    }
}

/// A program that installs a seccomp filter (`prctl(PR_SET_SECCOMP)`,
/// `syscall(SYS_seccomp)`) and then `exec`s a static program: merge-any is
/// off before the filter goes in, for good, so it cannot pass on.
#[test]
fn a_program_that_sandboxes_itself_loses_merge_any_before_the_filter() {
    let lab = Lab::new("sandbox");
    for how in ["prctl", "syscall"] {
        let out = choices(&["sandbox", how, &lab.path("static-probe")]);
        assert_eq!(
            field(&out, "after-filter merge_any").as_deref(),
            Some("0"),
            "{how}:\n{out}"
        );
        assert_eq!(probes(&out), ["0"], "{how}: the static program:\n{out}");
    }
}
