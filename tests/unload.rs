//! A library that is loaded with `dlopen` and unloaded with `dlclose` must
//! leave nothing behind that runs later. Before, its `pthread_atfork`
//! handler (registered through libc's exported `pthread_atfork`, which
//! glibc never drops) pointed into the unmapped object, and every `fork`
//! after the `dlclose` killed the child with SIGSEGV, in every mode; a
//! scanning thread would have run into the unmapped code too. The library
//! is now linked `-z nodelete` (see build.rs): `dlclose` leaves it mapped.
//!
//! tests/c/unload.c loads and unloads the library three times, each time
//! forking a child that leaves with `exit()` and one that leaves with
//! `_exit()`, starts a thread, sleeps while a scanning thread would wake,
//! and exits normally.

use ksmauto_testsupport as common;

use common::{compile_c, lib, text, Run};

const ROUNDS: usize = 3;

/// Runs the unload program under `run` with `library` to `dlopen`, and
/// checks that it and every child it forked ended normally.
fn unloads_cleanly(run: &Run, library: &str, what: &str) {
    let prog = compile_c("tests/c/unload.c", &["-ldl"]);
    let rounds = ROUNDS.to_string();
    let out = run.output(&prog, &[library, &rounds]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "{what}: the program ended with {:?}\n{stdout}\n{stderr}",
        out.status
    );
    let clean = stdout.lines().filter(|l| l.ends_with(": exit 0")).count();
    assert_eq!(
        clean,
        2 * ROUNDS,
        "{what}: every child must exit normally:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("\ndone\n"), "{what}:\n{stdout}\n{stderr}");
}

#[test]
fn dlopen_then_dlclose_then_fork_and_exit_in_every_mode() {
    let library = lib().to_str().unwrap();
    for mode in ["off", "advise", "process", "auto"] {
        let run = Run::without().env("KSMAUTO_MODE", mode);
        unloads_cleanly(&run, library, mode);
    }
}

/// A `dlopen`ed copy stands aside (its hooks are never reached; see
/// tests/two_copies.rs) and starts no catch-up thread: with the catch-up's
/// fastest pace asked for, it must still unload cleanly.
#[test]
fn an_unloaded_copy_with_the_catch_up_asked_for() {
    let library = lib().to_str().unwrap();
    for mode in ["advise", "auto"] {
        let run = Run::without()
            .env("KSMAUTO_MODE", mode)
            .env("KSMAUTO_SCAN_INTERVAL", "5ms");
        unloads_cleanly(&run, library, &format!("{mode}, catch-up asked for"));
    }
}

/// A second copy (another path: another object) `dlopen`ed and closed
/// while the library is preloaded: the copy stands aside, and its unload
/// must not break the preloaded one's forks either.
#[test]
fn an_unloaded_copy_beside_a_preloaded_one() {
    let dir = std::env::temp_dir().join(format!("ksmauto-unload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("libksmauto.so");
    std::fs::copy(lib(), &copy).unwrap();
    // The preloaded copy's catch-up thread (advise: the program's
    // allocations are news) runs while the other copy comes and goes.
    for mode in ["off", "advise", "process", "auto"] {
        let run = Run::with(mode).env("KSMAUTO_SCAN_INTERVAL", "5ms");
        unloads_cleanly(
            &run,
            copy.to_str().unwrap(),
            &format!("{mode}, beside a preloaded copy"),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The flag is in the built object (what the tests above rely on).
#[test]
fn the_library_is_linked_nodelete() {
    let out = std::process::Command::new("readelf")
        .arg("-d")
        .arg(lib())
        .output();
    let Ok(out) = out else {
        eprintln!("SKIPPED: readelf is not installed");
        return;
    };
    let dynamic = text(&out.stdout);
    assert!(
        dynamic
            .lines()
            .any(|l| l.contains("FLAGS_1") && l.contains("NODELETE")),
        "no DF_1_NODELETE in the dynamic section:\n{dynamic}"
    );
}
