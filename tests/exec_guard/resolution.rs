//! Paths as the new program will resolve them: through file actions that
//! change descriptors or the working directory first (magic links such as
//! `/proc/self/fd/N`), after a `chdir` (the library's own file is known by
//! what the loader loaded, not by its path now), through descriptors that
//! close on `exec`.

use super::common;
use super::lab::*;

fn with_library(lab: &Lab, extra: &[&str]) -> Vec<String> {
    let mut env = strings(&[
        &format!("LD_PRELOAD={}", lab.lib.display()),
        "KSMAUTO_MODE=process",
        "KSMAUTO_STATS=off",
    ]);
    env.extend(strings(extra));
    env
}

/// `posix_spawn` of `/proc/self/fd/N`, `/dev/fd/N`, `/dev/stdin` or a path
/// under `/proc/self/cwd`: the child's file actions (`adddup2`,
/// `addchdir_np`) run first, so the child runs the static program that the
/// link names there, not the dynamic one it names in the parent.
#[test]
fn a_spawn_whose_file_actions_change_what_a_magic_link_names_is_not_trusted() {
    let lab = Lab::new("magic-links");
    let programs = [lab.path("probe"), lab.path("static-probe")];
    let dirs = [lab.path("bin-dynamic"), lab.path("bin-static")];
    let cases = [
        ("spawn-dup2", &programs, with_library(&lab, &[])),
        ("spawn-devfd", &programs, with_library(&lab, &[])),
        ("spawn-stdin", &programs, with_library(&lab, &[])),
        ("spawn-cwd", &dirs, with_library(&lab, &[])),
        (
            "spawnp-cwd",
            &dirs,
            with_library(&lab, &["PATH=/proc/self/cwd"]),
        ),
    ];
    let mut wrong = vec![];
    for (way, args, env) in cases {
        let out = lab.launch(way, args, &env, common::lib(), None);
        if let Err(e) = verdict(&out, &lab.lib, false) {
            wrong.push(format!("{way}: {e}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Control: file actions that change nothing an absolute path without
    // a magic link means leave the guard exact.
    let (out, offs) = spawn_counting(
        &lab,
        "spawn-plain-actions",
        &[lab.path("probe")],
        &with_library(&lab, &[]),
    );
    verdict(&out, &lab.lib, true).unwrap_or_else(|e| panic!("plain actions: {e}"));
    assert_eq!(offs, 0, "plain actions: switched off for nothing:\n{out}");
}

/// The launcher preloads `./libksmauto.so` from the lab, then changes into
/// a directory whose `libksmauto.so` is another library and starts a
/// dynamic program with the same environment: its loader loads that other
/// library, so merge-any must not come along.
#[test]
fn the_library_is_known_by_the_file_it_was_loaded_from() {
    let lab = Lab::new("own-file");
    let copy = lab.dir.join("libksmauto.so");
    std::fs::copy(common::lib(), &copy).unwrap();
    let relative = std::path::Path::new("./libksmauto.so");
    let env = strings(&[
        "LD_PRELOAD=./libksmauto.so",
        "KSMAUTO_MODE=process",
        "KSMAUTO_STATS=off",
    ]);
    let copy = std::fs::canonicalize(&copy).unwrap();
    for (dir, runs) in [(lab.path("decoy"), false), (".".to_string(), true)] {
        let args = [lab.path("probe"), dir.clone()];
        let out = lab.launch("execve-after-chdir", &args, &env, relative, None);
        verdict(&out, &copy, runs).unwrap_or_else(|e| panic!("after chdir {dir}: {e}"));
    }
}

/// `LD_PRELOAD=/proc/self/fd/N` names the library here, but N closes on
/// `exec`: the new program's loader finds nothing there.
#[test]
fn a_preload_through_a_descriptor_that_closes_on_exec_is_not_trusted() {
    let lab = Lab::new("fd-preload");
    let env = strings(&["KSMAUTO_MODE=process", "KSMAUTO_STATS=off"]);
    let args = [lab.path("probe"), lab.lib.display().to_string()];
    let out = lab.launch("execve-fd-preload", &args, &env, common::lib(), None);
    verdict(&out, &lab.lib, false).unwrap_or_else(|e| panic!("{e}"));
}

/// ld.so expands `$LIB`, `$PLATFORM`, `$ORIGIN` in a preload path: a
/// directory literally named `$LIB` is not where it looks.
#[test]
fn a_preload_path_with_a_dynamic_string_token_is_not_followed() {
    let lab = Lab::new("dst");
    let literal = lab.dir.join("dst/$LIB");
    std::fs::create_dir_all(&literal).unwrap();
    std::os::unix::fs::symlink(&lab.lib, literal.join("libksmauto.so")).unwrap();
    let env = strings(&[
        &format!("LD_PRELOAD={}/libksmauto.so", literal.display()),
        "KSMAUTO_MODE=process",
        "KSMAUTO_STATS=off",
    ]);
    let out = lab.launch("execve", &[lab.path("probe")], &env, common::lib(), None);
    verdict(&out, &lab.lib, false).unwrap_or_else(|e| panic!("{e}"));
}
