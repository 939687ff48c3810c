//! The exec guard (`process` mode) decides as the kernel and the loader
//! will: merge-any reaches a new program exactly when the library runs
//! there (and then sets it itself), whatever way the program is started.
//!
//! A table: each way of starting a program (`tests/c/exec_ways.c`: the
//! `exec` family, `execveat` and `fexecve` with a path, an `O_RDONLY` and an
//! `O_PATH` descriptor, `posix_spawn(p)`, `vfork`) × each target (a dynamic
//! program, a static one, a `#!` chain, an explicit `ld.so` invocation with
//! and without `--preload`, and for the `PATH`-searching ways names whose
//! first `PATH` match is a directory, a program whose interpreter is not
//! there, or a non-executable file) × each environment (the library in
//! `LD_PRELOAD`, none, `LD_PRELOAD` twice in both orders, a tab inside the
//! list, a bare name that `LD_LIBRARY_PATH` resolves to another file). The
//! started program (`tests/c/exec_probe.c`) prints its merge-any flag and
//! which `libksmauto*` files it maps; every case must show merge-any on
//! exactly when the library is mapped, and the library mapped exactly when
//! the loader is expected to load it.
//!
//! Beyond the table, from the launcher's exit report
//! (`execs_without_merge_any`): merge-any is left alone where the `exec`
//! surely fails (a `#!` chain past the kernel's six files, a directory, a
//! file we may not execute, a missing interpreter, a symbolic link under
//! `AT_SYMLINK_NOFOLLOW`, a `PATH` search that finds nothing it may run)
//! and where the library runs (a chain of six files, an interpreter named
//! relative to the working directory, a symbolic link, a parent itself
//! started by an explicit `ld.so`). As root: a program started with real
//! and effective IDs apart (secure execution, where ld.so ignores a preload
//! path) gets no merge-any; in a private mount namespace,
//! `/etc/ld.so.preload` is read as ld.so reads it (tabs separate, `#`
//! comments, a bare name it does not find), and a bare name in `LD_PRELOAD`
//! counts only where the loader finds this very file (through
//! `/etc/ld.so.cache`; not past `LD_LIBRARY_PATH` or a `DT_RUNPATH`
//! directory that holds another file of that name, but past `DT_RUNPATH`
//! and `DT_RPATH` directories that hold none).
//!
//! The modules below add: signals and other threads between a switch-off
//! and its `exec` (`races`), paths resolved as the new program will
//! (`resolution`), the program's own choices (`choices`), set-ID bits that
//! change nothing (`privilege`), `binfmt_misc` rules (`binfmt`).

#[path = "exec_guard/binfmt.rs"]
mod binfmt;
#[path = "exec_guard/choices.rs"]
mod choices;
#[path = "exec_guard/lab.rs"]
mod lab;
#[path = "exec_guard/privilege.rs"]
mod privilege;
#[path = "exec_guard/races.rs"]
mod races;
#[path = "exec_guard/resolution.rs"]
mod resolution;

use common::field;
use ksmauto_testsupport as common;
use lab::*;

#[cfg(target_arch = "x86_64")]
pub const LD_SO: &str = "/lib64/ld-linux-x86-64.so.2";
#[cfg(target_arch = "aarch64")]
pub const LD_SO: &str = "/lib/ld-linux-aarch64.so.1";

/// What is started, by path (every way) or by name in `PATH` (the ways that
/// search it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Dynamic,
    Static,
    /// A script whose interpreter is a script whose interpreter is the
    /// dynamic program.
    ScriptChain,
    /// `ld.so --preload LIB PROGRAM`: the library runs whatever the
    /// environment says.
    LdSoPreload,
    /// `ld.so PROGRAM`.
    LdSoPlain,
    /// `prog` in `PATH=shadow:bin-static`, where `shadow/prog` is a
    /// directory: the static program runs.
    DirectoryThenStatic,
    /// `prog` in `PATH=bad-interpreter:bin-static`: the first is a dynamic
    /// program whose interpreter is not there (the exec fails with ENOENT
    /// and the search goes on): the static program runs.
    MissingInterpreterThenStatic,
    /// `prog` in `PATH=shadow:bin-dynamic`: the dynamic program runs.
    DirectoryThenDynamic,
    /// `prog` in `PATH=not-executable:bin-dynamic`: the dynamic one runs.
    NotExecutableThenDynamic,
}

const BY_PATH: [Target; 5] = [
    Target::Dynamic,
    Target::Static,
    Target::ScriptChain,
    Target::LdSoPreload,
    Target::LdSoPlain,
];

const BY_NAME: [Target; 4] = [
    Target::DirectoryThenStatic,
    Target::MissingInterpreterThenStatic,
    Target::DirectoryThenDynamic,
    Target::NotExecutableThenDynamic,
];

/// The `LD_*` part of the new program's environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Env {
    Library,
    NoPreload,
    /// `LD_PRELOAD=<lib>` first, `LD_PRELOAD=` last: ld.so takes the last.
    LibraryThenEmpty,
    /// `LD_PRELOAD=` first, `LD_PRELOAD=<lib>` last.
    EmptyThenLibrary,
    /// `LD_PRELOAD=<lib>\tx`: ld.so splits only on space and colon, so the
    /// tab is part of one path that is not there.
    TabInList,
    /// `LD_PRELOAD=libksmauto.so` with `LD_LIBRARY_PATH` at a directory
    /// holding another library of that name.
    BareNameElsewhere,
}

const ENVS: [Env; 6] = [
    Env::Library,
    Env::NoPreload,
    Env::LibraryThenEmpty,
    Env::EmptyThenLibrary,
    Env::TabInList,
    Env::BareNameElsewhere,
];

fn loader_loads_library(env: Env) -> bool {
    matches!(env, Env::Library | Env::EmptyThenLibrary)
}

/// Whether the library runs in the program `target` starts.
fn library_runs(target: Target, env: Env) -> bool {
    match target {
        Target::Static | Target::DirectoryThenStatic | Target::MissingInterpreterThenStatic => {
            false
        }
        Target::LdSoPreload => true,
        Target::Dynamic
        | Target::ScriptChain
        | Target::LdSoPlain
        | Target::DirectoryThenDynamic
        | Target::NotExecutableThenDynamic => loader_loads_library(env),
    }
}

impl Lab {
    /// The launcher's arguments before `--`: the target and its arguments.
    fn target_args(&self, target: Target) -> Vec<String> {
        let probe = self.path("probe");
        let lib = self.lib.display().to_string();
        match target {
            Target::Dynamic => vec![probe],
            Target::Static => vec![self.path("static-probe")],
            Target::ScriptChain => vec![self.path("chain-top")],
            Target::LdSoPreload => vec![LD_SO.into(), "--preload".into(), lib, probe],
            Target::LdSoPlain => vec![LD_SO.into(), probe],
            _ => vec!["prog".into()],
        }
    }

    fn search_path(&self, target: Target) -> String {
        let dirs = match target {
            Target::DirectoryThenStatic => ["shadow", "bin-static"],
            Target::MissingInterpreterThenStatic => ["bad-interpreter", "bin-static"],
            Target::DirectoryThenDynamic => ["shadow", "bin-dynamic"],
            Target::NotExecutableThenDynamic => ["not-executable", "bin-dynamic"],
            _ => return "/usr/bin:/bin".into(),
        };
        format!("{}:{}", self.path(dirs[0]), self.path(dirs[1]))
    }

    fn environment(&self, target: Target, env: Env) -> Vec<String> {
        let lib = format!("LD_PRELOAD={}", self.lib.display());
        let mut entries = vec![
            "KSMAUTO_MODE=process".to_string(),
            "KSMAUTO_STATS=off".to_string(),
            format!("PATH={}", self.search_path(target)),
        ];
        match env {
            Env::Library => entries.insert(1, lib),
            Env::NoPreload => {}
            Env::LibraryThenEmpty => {
                entries.insert(0, lib);
                entries.push("LD_PRELOAD=".into());
            }
            Env::EmptyThenLibrary => {
                entries.insert(0, "LD_PRELOAD=".into());
                entries.push(lib);
            }
            Env::TabInList => entries.push(format!("{lib}\tx")),
            Env::BareNameElsewhere => {
                entries.push("LD_PRELOAD=libksmauto.so".into());
                entries.push(format!("LD_LIBRARY_PATH={}", self.path("decoy")));
            }
        }
        entries
    }

    /// Runs one case of the table; `Some(what went wrong)` unless merge-any
    /// in the started program is on exactly when the library runs there.
    fn case(&self, way: &str, target: Target, env: Env) -> Option<String> {
        let args = self.target_args(target);
        let stdout = self.launch(
            way,
            &args,
            &self.environment(target, env),
            common::lib(),
            None,
        );
        let case = format!("{way} {target:?} {env:?}");
        verdict(&stdout, &self.lib, library_runs(target, env))
            .err()
            .map(|wrong| format!("{case}: {wrong}"))
    }
}

fn searches_path(way: &str) -> bool {
    matches!(
        way,
        "execvp" | "execvpe" | "execlp" | "posix_spawnp" | "system" | "popen" | "wordexp"
    )
}

/// Every target and environment started `way`; fails listing every case
/// where merge-any and the library disagree.
fn table(way: &str) {
    let lab = Lab::new(way);
    let mut targets = BY_PATH.to_vec();
    if searches_path(way) {
        targets.extend(BY_NAME);
    }
    let mut wrong = vec![];
    let mut cases = 0;
    for &target in &targets {
        for env in ENVS {
            cases += 1;
            wrong.extend(lab.case(way, target, env));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {cases} cases wrong for {way}:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn execve() {
    table("execve");
}

#[test]
fn execv() {
    table("execv");
}

#[test]
fn execvp() {
    table("execvp");
}

#[test]
fn execvpe() {
    table("execvpe");
}

#[test]
fn execl() {
    table("execl");
}

#[test]
fn execle() {
    table("execle");
}

#[test]
fn execlp() {
    table("execlp");
}

#[test]
fn execveat_with_a_path() {
    table("execveat");
}

#[test]
fn execveat_with_an_empty_path_and_a_readable_descriptor() {
    table("execveat-fd");
}

#[test]
fn execveat_with_an_empty_path_and_an_o_path_descriptor() {
    table("execveat-opath");
}

#[test]
fn fexecve_of_a_readable_descriptor() {
    table("fexecve");
}

#[test]
fn fexecve_of_an_o_path_descriptor() {
    table("fexecve-opath");
}

#[test]
fn posix_spawn() {
    table("posix_spawn");
}

#[test]
fn posix_spawnp() {
    table("posix_spawnp");
}

#[test]
fn vfork_then_execve() {
    table("vfork");
}

#[test]
fn syscall_execve() {
    table("syscall-execve");
}

#[test]
fn syscall_execveat() {
    table("syscall-execveat");
}

/// glibc's `system`, `popen` and `wordexp` start `/bin/sh` through its
/// internal `posix_spawn`: the shell (and what it starts) must get
/// merge-any only where the library runs in it.
#[test]
fn system() {
    table("system");
}

#[test]
fn popen() {
    table("popen");
}

#[test]
fn wordexp() {
    table("wordexp");
}

/// Every `exec` hook returns through the guard when the `exec` fails (the
/// variadic `execl*` too): merge-any is back before the program's next
/// instruction, not at some later poll.
#[test]
fn merge_any_is_back_at_once_after_a_failed_exec() {
    let lab = Lab::new("failed");
    let env = strings(&["KSMAUTO_MODE=process", "KSMAUTO_STATS=off"]);
    // A file of no format the kernel knows: ENOEXEC, after a switch-off
    // (execlp would run it with /bin/sh).
    let target = vec![lab.path("unknown-format")];
    for way in [
        "execve",
        "execv",
        "execl",
        "execle",
        "syscall-execve",
        "execveat",
    ] {
        let (out, offs) = spawn_counting(&lab, way, &target, &env);
        assert!(out.contains("failed 8\n"), "{way}: {out}");
        assert_eq!(
            offs, 1,
            "{way}: no switch-off before an unknown format:\n{out}"
        );
        assert_eq!(
            field(&out, "after-failure merge_any").as_deref(),
            Some("1"),
            "{way}: merge-any not back after the failed exec:\n{out}"
        );
    }
}

// ---------------------------------------------------------------------------
// Beyond the table: what only a report, root or a private /etc shows

#[test]
fn merge_any_is_left_alone_where_nothing_runs_and_where_the_library_runs() {
    let lab = Lab::new("left-alone");
    let with_library = strings(&[
        &format!("LD_PRELOAD={}", lab.lib.display()),
        "KSMAUTO_MODE=process",
        "KSMAUTO_STATS=off",
    ]);
    let without = strings(&["KSMAUTO_MODE=process", "KSMAUTO_STATS=off"]);
    // Six files, the most the kernel runs: the library runs at the end;
    // so it does behind an interpreter named relative to the working
    // directory, and behind a symbolic link.
    for (way, target) in [
        ("posix_spawn", "deep-5"),
        ("posix_spawn", "relative-script"),
        ("posix_spawn", "link-to-probe"),
    ] {
        let (out, offs) = spawn_counting(&lab, way, &[lab.path(target)], &with_library);
        verdict(&out, &lab.lib, true).unwrap_or_else(|wrong| panic!("{target}: {wrong}"));
        assert_eq!(
            offs, 0,
            "{target}: merge-any switched off for nothing:\n{out}"
        );
    }
    // The launcher itself started by an explicit ld.so: its loader is
    // still the probe's.
    let report = lab.dir.join("report-via-ld-so.json");
    let mut command = lab.command(
        "posix_spawn",
        &[lab.path("probe")],
        &with_library,
        common::lib(),
        Some(&report),
    );
    let launcher_at = command.iter().position(|w| w.starts_with("PATH=")).unwrap() + 1;
    command.insert(launcher_at, LD_SO.into());
    let out = lab.run(&command);
    verdict(&out, &lab.lib, true).unwrap_or_else(|wrong| panic!("under ld.so: {wrong}"));
    assert_eq!(
        switch_offs(&report),
        0,
        "under ld.so: merge-any switched off for nothing:\n{out}"
    );
    // A symbolic link execveat may not follow: ELOOP.
    let (out, offs) = spawn_counting(
        &lab,
        "execveat-nofollow",
        &[lab.path("link-to-probe")],
        &without,
    );
    assert!(out.contains("failed 40"), "AT_SYMLINK_NOFOLLOW: {out}");
    assert_eq!(
        offs, 0,
        "AT_SYMLINK_NOFOLLOW: merge-any switched off:\n{out}"
    );
    // Seven: ELOOP, as surely as a missing file or a directory (EACCES), a
    // file we may not execute, a program whose interpreter is missing.
    for (what, args, env) in [
        (
            "seven files of #! chain",
            vec![lab.path("deep-6")],
            &with_library,
        ),
        ("a directory", vec![lab.path("shadow/prog")], &without),
        (
            "a file without execute permission",
            vec![lab.path("not-executable/prog")],
            &without,
        ),
        (
            "a missing interpreter",
            vec![lab.path("bad-interpreter/prog")],
            &without,
        ),
    ] {
        let (out, offs) = spawn_counting(&lab, "posix_spawn", &args, env);
        assert!(out.contains("failed "), "{what}: something ran:\n{out}");
        assert_eq!(
            offs, 0,
            "{what}: merge-any switched off though nothing runs:\n{out}"
        );
        assert!(
            field(&out, "launcher merge_any").as_deref() == Some("1"),
            "{out}"
        );
    }
    // A PATH search that finds nothing it may run.
    let env = [
        without.clone(),
        vec![format!(
            "PATH={}:{}",
            lab.path("shadow"),
            lab.path("bad-interpreter")
        )],
    ]
    .concat();
    let (out, offs) = spawn_counting(&lab, "posix_spawnp", &strings(&["prog"]), &env);
    assert!(out.contains("failed "), "{out}");
    assert_eq!(
        offs, 0,
        "PATH search: merge-any switched off though nothing runs:\n{out}"
    );
}

#[test]
fn a_program_started_with_real_and_effective_ids_apart_gets_no_merge_any() {
    if !have_root("seteuid") {
        return;
    }
    // The kernel starts it in secure mode: ld.so ignores a preload path.
    let lab = Lab::new("ids-apart");
    for target in [Target::Dynamic, Target::ScriptChain, Target::Static] {
        let args = lab.target_args(target);
        let env = lab.environment(target, Env::Library);
        let out = lab.launch("execve-seteuid", &args, &env, common::lib(), None);
        if let Err(wrong) = verdict(&out, &lab.lib, false) {
            panic!("{target:?}: {wrong}");
        }
    }
}

#[test]
fn etc_ld_so_preload_is_read_as_ld_so_reads_it() {
    if !have_root("mount namespace") {
        return;
    }
    let lab = Lab::new("preload-file");
    let lib = lab.lib.display().to_string();
    let env = strings(&["KSMAUTO_MODE=process", "KSMAUTO_STATS=off"]);
    for (content, target, runs) in [
        (format!("{lib}\n"), Target::Dynamic, true),
        (format!("{lib}\n"), Target::Static, false),
        // ld.so splits the file on tabs too (not LD_PRELOAD).
        (format!("/nonexistent/x.so\t{lib}"), Target::Dynamic, true),
        // A comment runs to the end of its line.
        (format!("# {lib}\n"), Target::Dynamic, false),
        // A bare name the loader does not find (not in the cache).
        ("libksmauto.so\n".to_string(), Target::Dynamic, false),
        // The file ends at a NUL for ld.so (strsep over a C string).
        (
            format!("/nonexistent/x.so\0 {lib}\n"),
            Target::Dynamic,
            false,
        ),
        // After a long first comment ld.so looks for the next `#` in too
        // few bytes: the second comment is read as names.
        (
            format!("#{}\n/nonexistent/x.so # {lib}\n", "c".repeat(300)),
            Target::Dynamic,
            true,
        ),
    ] {
        let run = Inside {
            way: "execve",
            args: lab.target_args(target),
            env: env.clone(),
            count: false,
        };
        // Copied in, not printed by the shell: it may hold a NUL.
        let file = lab.dir.join("ld.so.preload");
        std::fs::write(&file, &content).unwrap();
        let setup = format!(
            "cp {} /etc/ld.so.preload",
            quoted(&file.display().to_string())
        );
        let (out, _) = &in_private_etc(&lab, &setup, common::lib(), &[run])[0];
        if let Err(wrong) = verdict(out, &lab.lib, runs) {
            panic!("ld.so.preload {content:?}, {target:?}: {wrong}");
        }
    }
}

#[test]
fn a_bare_name_counts_only_where_the_loader_finds_this_very_file() {
    if !have_root("mount namespace, ldconfig") {
        return;
    }
    let lab = Lab::new("bare-name");
    // The copy of the library in a directory the cache is rebuilt with.
    let cached = lab.dir.join("cached/libksmauto.so");
    let setup = format!(
        "echo {} > /etc/ld.so.conf.d/zz-ksmauto-test.conf\nldconfig",
        quoted(&lab.path("cached"))
    );
    let bare = "LD_PRELOAD=libksmauto.so";
    let env = |extra: &[&str]| {
        let mut env = strings(&["KSMAUTO_MODE=process", "KSMAUTO_STATS=off"]);
        env.extend(strings(extra));
        env
    };
    let decoy = format!("LD_LIBRARY_PATH={}", lab.path("decoy"));
    let probe = vec![lab.path("probe")];
    let runs = [
        // Found through the cache: the library runs, nothing switched off.
        (probe.clone(), env(&[bare]), true),
        // LD_LIBRARY_PATH comes first and finds the decoy.
        (probe.clone(), env(&[bare, &decoy]), false),
        // So does the program's own DT_RUNPATH.
        (vec![lab.path("runpath-probe")], env(&[bare]), false),
        // DT_RUNPATH and DT_RPATH directories without the name: the
        // loader goes on to the cache.
        (
            vec![lab.path("runpath-elsewhere-probe")],
            env(&[bare]),
            true,
        ),
        (vec![lab.path("rpath-elsewhere-probe")], env(&[bare]), true),
    ];
    let inside: Vec<Inside> = runs
        .iter()
        .map(|(args, env, _)| Inside {
            way: "posix_spawn",
            args: args.clone(),
            env: env.clone(),
            count: true,
        })
        .collect();
    let results = in_private_etc(&lab, &setup, &cached, &inside);
    for ((args, env, runs), (out, offs)) in runs.iter().zip(&results) {
        if let Err(wrong) = verdict(out, &cached, *runs) {
            panic!("{args:?} {env:?}: {wrong}");
        }
        assert_eq!(
            *offs,
            u64::from(!runs),
            "{args:?} {env:?}: switch-offs\n{out}"
        );
    }
    // The same bare name in /etc/ld.so.preload, found through the cache.
    let setup = format!("{setup}\n{}", preload_file("libksmauto.so\n"));
    let run = Inside {
        way: "posix_spawn",
        args: probe,
        env: env(&[]),
        count: true,
    };
    let (out, offs) = &in_private_etc(&lab, &setup, &cached, &[run])[0];
    verdict(out, &cached, true).unwrap_or_else(|wrong| panic!("ld.so.preload: {wrong}"));
    assert_eq!(
        *offs, 0,
        "ld.so.preload: merge-any switched off for nothing\n{out}"
    );
}
