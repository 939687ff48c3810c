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

use common::*;
use ksmauto_testsupport as common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[cfg(target_arch = "x86_64")]
const LD_SO: &str = "/lib64/ld-linux-x86-64.so.2";
#[cfg(target_arch = "aarch64")]
const LD_SO: &str = "/lib/ld-linux-aarch64.so.1";

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

struct Lab {
    dir: PathBuf,
    /// The library as the loader maps it (canonical path).
    lib: PathBuf,
    launcher: PathBuf,
}

fn install(from: &Path, to: &Path, mode: u32) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn script(path: &Path, interpreter: &Path) {
    std::fs::write(path, format!("#!{}\n", interpreter.display())).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

impl Lab {
    fn new(name: &str) -> Lab {
        let dir = std::env::temp_dir().join(format!(
            "ksmauto-exec-guard-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lib = std::fs::canonicalize(common::lib()).unwrap();
        let launcher = compile_c("tests/c/exec_ways.c", &[]);
        let probe = compile_c("tests/c/exec_probe.c", &[]);
        let static_probe = compile_c("tests/c/exec_probe.c", &["-static"]);
        let missing_interpreter = format!("-Wl,--dynamic-linker=/nonexistent{LD_SO}");
        let no_interpreter = compile_c("tests/c/exec_probe.c", &[&missing_interpreter]);
        let decoy = compile_c("tests/c/decoy_lib.c", &["-shared", "-fPIC"]);
        install(&probe, &dir.join("probe"), 0o755);
        install(&static_probe, &dir.join("static-probe"), 0o755);
        script(&dir.join("chain-mid"), &dir.join("probe"));
        script(&dir.join("chain-top"), &dir.join("chain-mid"));
        install(&static_probe, &dir.join("bin-static/prog"), 0o755);
        install(&probe, &dir.join("bin-dynamic/prog"), 0o755);
        std::fs::create_dir_all(dir.join("shadow/prog")).unwrap();
        install(&no_interpreter, &dir.join("bad-interpreter/prog"), 0o755);
        install(&probe, &dir.join("not-executable/prog"), 0o644);
        install(&decoy, &dir.join("decoy/libksmauto.so"), 0o755);
        Lab { dir, lib, launcher }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

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

    /// Runs one case; `Some(what went wrong)` unless merge-any in the
    /// started program is on exactly when the library runs there.
    fn case(&self, way: &str, target: Target, env: Env) -> Option<String> {
        let mut cmd = Command::new(&self.launcher);
        cmd.arg(way)
            .args(self.target_args(target))
            .arg("--")
            .args(self.environment(target, env))
            .env_clear()
            .env("LD_PRELOAD", common::lib())
            .env("KSMAUTO_MODE", "process")
            .env("KSMAUTO_STATS", "off")
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = run_with_timeout(cmd, Duration::from_secs(60));
        let stdout = text(&out.stdout);
        let case = format!("{way} {target:?} {env:?}");
        assert_eq!(
            field(&stdout, "launcher merge_any").as_deref(),
            Some("1"),
            "{case}: the launcher is not in process mode (no PR_SET_MEMORY_MERGE?):\n\
             {stdout}\n{}",
            text(&out.stderr)
        );
        let Some(probe) = stdout.lines().find_map(|l| l.strip_prefix("probe merge_any ")) else {
            return Some(format!("{case}: nothing ran: {stdout:?} {:?}", out.status));
        };
        let (flag, libraries) = probe.split_once(" libraries").unwrap();
        let mapped = libraries
            .split_whitespace()
            .any(|p| Path::new(p) == self.lib);
        let expected = library_runs(target, env);
        if mapped != expected {
            return Some(format!(
                "{case}: the library is {}mapped, expected {}: {probe}",
                if mapped { "" } else { "not " },
                if expected { "mapped" } else { "not" }
            ));
        }
        if flag != if mapped { "1" } else { "0" } {
            return Some(format!("{case}: merge_any {flag} with library mapped={mapped}"));
        }
        if matches!(way, "posix_spawn" | "posix_spawnp" | "vfork")
            && field(&stdout, "parent-after merge_any").as_deref() != Some("1")
        {
            return Some(format!("{case}: the parent lost merge-any: {stdout:?}"));
        }
        None
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn searches_path(way: &str) -> bool {
    matches!(way, "execvp" | "execvpe" | "execlp" | "posix_spawnp")
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
