//! The guard's switch-off holds until the `exec` is over, whatever runs in
//! between: a signal handler in the `exec`ing thread that reaches a hooked
//! function (the library's polls), another thread's switches.

use super::common::{compile_c, field, run_ok, Run};

/// Runs `tests/c/exec_signals.c` (see there) `way`, `runs` times with
/// `mib` MiB; (probes that ran, probes that inherited merge-any).
fn started_under_signals(way: &str, runs: u32, mib: u32) -> (u32, u32) {
    let prog = compile_c("tests/c/exec_signals.c", &["-pthread"]);
    let probe = compile_c("tests/c/exec_probe.c", &["-static"]);
    let out = run_ok(
        &prog,
        &Run::with("process").env("KSMAUTO_STATS", "off"),
        &[
            way,
            &runs.to_string(),
            &mib.to_string(),
            probe.to_str().unwrap(),
        ],
    );
    // "ran N leaked L"
    let words: Vec<u32> = field(&out, "ran")
        .unwrap_or_else(|| panic!("no `ran` line in {out}"))
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(words.len(), 2, "{out}");
    (words[0], words[1])
}

/// A signal that arrives while the guard holds its token (all signals
/// blocked, merge-any being switched off) is delivered right after, before
/// the `exec`; its handler calls hooked functions, which poll. The poll must
/// not take the switch-off back from the thread that is about to `exec`:
/// each way, a static program started 100 times under a storm of SIGCHLD
/// must never inherit merge-any.
#[test]
fn a_signal_handler_between_the_switch_off_and_the_exec_cannot_undo_it() {
    let mut wrong = vec![];
    for way in ["posix_spawn", "execve", "execl", "execle", "execlp"] {
        let (ran, leaked) = started_under_signals(way, 100, 64);
        assert_eq!(ran, 100, "{way}: only {ran} of 100 probes ran");
        if leaked != 0 {
            wrong.push(format!("{way}: {leaked} of {ran}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "static programs inherited merge-any: {}",
        wrong.join(", ")
    );
}
