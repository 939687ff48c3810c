//! Building what the tests run: the preload library, the CLI, the C test
//! programs (each once per test binary).

use ksmauto_contract::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The repository (workspace root), also from a member's tests (`cli/`).
pub fn repo() -> PathBuf {
    // This crate lives in `testsupport/` of the workspace.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

/// `target/release/libksmauto.so`, built once per test binary; or the
/// library `KSMAUTO_TEST_LIB` names (to run the suite against another build,
/// e.g. an older commit's, to see a regression test fail there).
pub fn lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        if let Some(other) = std::env::var_os(env::TEST_LIB) {
            return PathBuf::from(other);
        }
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--lib", "--quiet"])
            .current_dir(repo())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --release failed");
        let lib = target_dir().join("release/libksmauto.so");
        assert!(lib.exists(), "{} missing", lib.display());
        lib
    })
}

/// Compiles `source` (relative to the repository) into an executable in
/// `target/ctests/`, with `include/` on the include path and `extra` flags
/// after the source (libraries). Compiled once per binary and name.
pub fn compile_c(source: &str, extra: &[&str]) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src = repo().join(source);
    let stem = Path::new(source)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let suffix = if extra.is_empty() {
        String::new()
    } else {
        format!("-{}", extra.join("").replace(['-', '/', '.'], ""))
    };
    let dir = target_dir().join("ctests");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{stem}{suffix}-{}", std::process::id()));
    if !out.exists() {
        let status = Command::new("cc")
            .args(["-O1", "-g", "-Wall", "-pthread", "-I"])
            .arg(repo().join("include"))
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .args(extra)
            .status()
            .expect("run cc");
        assert!(status.success(), "compiling {source} failed");
    }
    out
}

/// `target/debug/ksmauto`, built once per test binary (like [`lib`]): the
/// CLI owns ksmd's settings, so the harness saves, sets and restores them
/// through it.
pub fn cli() -> &'static Path {
    static CLI: OnceLock<PathBuf> = OnceLock::new();
    CLI.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "ksmauto-cli", "--bin", "ksmauto", "--quiet"])
            .current_dir(repo())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p ksmauto-cli failed");
        let cli = target_dir().join("debug/ksmauto");
        assert!(cli.exists(), "{} missing", cli.display());
        cli
    })
}
