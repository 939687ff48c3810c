//! The test laboratory of `tests/exec_guard.rs`: a directory of programs,
//! scripts and libraries, the launcher (`tests/c/exec_ways.c`) run with a
//! given way, target and environment, and the reading of what it showed.

use super::common::{self, compile_c, field, run_with_timeout, text};
use super::LD_SO;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

pub struct Lab {
    pub dir: PathBuf,
    /// The library as the loader maps it (canonical path).
    pub lib: PathBuf,
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
    pub fn new(name: &str) -> Lab {
        let dir =
            std::env::temp_dir().join(format!("ksmauto-exec-guard-{name}-{}", std::process::id()));
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
        // deep-N: N scripts, each the interpreter of the next, down to the
        // dynamic program: the kernel runs six files at most (deep-5).
        script(&dir.join("deep-1"), &dir.join("probe"));
        for n in 2..=6 {
            script(
                &dir.join(format!("deep-{n}")),
                &dir.join(format!("deep-{}", n - 1)),
            );
        }
        // An interpreter named relative to the working directory (the
        // launcher runs in the lab), and a symbolic link to the program.
        std::fs::write(dir.join("relative-script"), "#!probe\n").unwrap();
        std::fs::set_permissions(
            dir.join("relative-script"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink(dir.join("probe"), dir.join("link-to-probe")).unwrap();
        std::fs::write(dir.join("unknown-format"), "no format the kernel knows\n").unwrap();
        std::fs::set_permissions(
            dir.join("unknown-format"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        // A program whose own library path (DT_RUNPATH) holds the decoy.
        let runpath = compile_c("tests/c/exec_probe.c", &["-Wl,-rpath,$ORIGIN/decoy"]);
        install(&runpath, &dir.join("runpath-probe"), 0o755);
        // Programs whose own library paths (DT_RUNPATH, DT_RPATH) hold no
        // file of the library's name: a directory without it, and one
        // that is not there.
        std::fs::create_dir_all(dir.join("empty")).unwrap();
        let runpath = compile_c(
            "tests/c/exec_probe.c",
            &["-Wl,-rpath,$ORIGIN/empty:/nonexistent/lib"],
        );
        install(&runpath, &dir.join("runpath-elsewhere-probe"), 0o755);
        let rpath = compile_c(
            "tests/c/exec_probe.c",
            &["-Wl,--disable-new-dtags,-rpath,$ORIGIN/empty"],
        );
        install(&rpath, &dir.join("rpath-elsewhere-probe"), 0o755);
        install(common::lib(), &dir.join("cached/libksmauto.so"), 0o755);
        Lab { dir, lib, launcher }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The launcher's command: `way` starting `args` with environment
    /// `env`; the launcher itself preloads `preload` in `process` mode and
    /// writes its JSON report to `report` if given.
    pub fn command(
        &self,
        way: &str,
        args: &[String],
        env: &[String],
        preload: &Path,
        report: Option<&Path>,
    ) -> Vec<String> {
        let mut command = vec![
            "env".to_string(),
            "-i".into(),
            format!("LD_PRELOAD={}", preload.display()),
            "KSMAUTO_MODE=process".into(),
            "KSMAUTO_STATS_FORMAT=json".into(),
            format!(
                "KSMAUTO_STATS={}",
                report.map_or("off".into(), |r| r.display().to_string())
            ),
            "PATH=/usr/bin:/bin".into(),
            self.launcher.display().to_string(),
            way.into(),
        ];
        command.extend(args.iter().cloned());
        command.push("--".into());
        command.extend(env.iter().cloned());
        command
    }

    /// Runs the launcher (see [`Lab::command`]); its stdout.
    pub fn launch(
        &self,
        way: &str,
        args: &[String],
        env: &[String],
        preload: &Path,
        report: Option<&Path>,
    ) -> String {
        self.run(&self.command(way, args, env, preload, report))
    }

    /// Runs a command (from [`Lab::command`]) in the lab; its stdout.
    pub fn run(&self, command: &[String]) -> String {
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        text(&run_with_timeout(cmd, Duration::from_secs(60)).stdout)
    }
}

/// Whether the launcher's output shows the started program with merge-any
/// on exactly when library `lib` runs there, and that one runs exactly
/// when `library_runs`; a spawning parent must have merge-any back.
pub fn verdict(stdout: &str, lib: &Path, library_runs: bool) -> Result<(), String> {
    assert_eq!(
        field(stdout, "launcher merge_any").as_deref(),
        Some("1"),
        "the launcher is not in process mode (no PR_SET_MEMORY_MERGE?):\n{stdout}"
    );
    let Some(probe) = stdout
        .lines()
        .find_map(|l| l.strip_prefix("probe merge_any "))
    else {
        return Err(format!("nothing ran: {stdout:?}"));
    };
    let (flag, libraries) = probe.split_once(" libraries").unwrap();
    let mapped = libraries.split_whitespace().any(|p| Path::new(p) == lib);
    if mapped != library_runs {
        return Err(format!(
            "the library is {}mapped, expected {}: {probe}",
            if mapped { "" } else { "not " },
            if library_runs { "mapped" } else { "not" }
        ));
    }
    if flag != if mapped { "1" } else { "0" } {
        return Err(format!("merge_any {flag} with library mapped={mapped}"));
    }
    if stdout.contains("parent-after")
        && field(stdout, "parent-after merge_any").as_deref() != Some("1")
    {
        return Err(format!("the parent lost merge-any: {stdout:?}"));
    }
    Ok(())
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether this test can run (it needs root: `seteuid`, mount namespaces).
/// Otherwise a loud SKIPPED line, and a failure under
/// `KSMAUTO_REQUIRE_KSM=1` (CI runs as root).
pub fn have_root(why: &str) -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!("!!!!! SKIPPED: needs root ({why}) !!!!!");
    assert_ne!(std::env::var("KSMAUTO_REQUIRE_KSM").as_deref(), Ok("1"));
    false
}

/// The launcher's `execs_without_merge_any` from its JSON report.
pub fn switch_offs(report: &Path) -> u64 {
    let json = std::fs::read_to_string(report)
        .unwrap_or_else(|e| panic!("no report at {}: {e}", report.display()));
    let at = json
        .find("\"execs_without_merge_any\":")
        .unwrap_or_else(|| panic!("no execs_without_merge_any in {json}"));
    json[at..]
        .split(':')
        .nth(1)
        .unwrap()
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Spawns `args` with `env` and returns (the launcher's output, how many
/// times it switched merge-any off).
pub fn spawn_counting(lab: &Lab, way: &str, args: &[String], env: &[String]) -> (String, u64) {
    let report = lab
        .dir
        .join(format!("report-{}.json", REPORTS.fetch_add(1, SeqCst)));
    let stdout = lab.launch(way, args, env, common::lib(), Some(&report));
    (stdout, switch_offs(&report))
}

static REPORTS: AtomicUsize = AtomicUsize::new(0);

/// Quotes `word` for `sh`.
pub fn quoted(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// One launcher run inside [`in_private_etc`]: the way, the target's
/// arguments, the new environment, and whether to count switch-offs.
pub struct Inside {
    pub way: &'static str,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub count: bool,
}

/// Runs `runs` in a private mount namespace whose `/etc` is an overlay of
/// the real one, after `setup` (shell commands: write `/etc/ld.so.preload`,
/// rebuild `/etc/ld.so.cache`); the launcher preloads `preload`. Returns
/// each run's output and switch-off count (0 when not counted).
pub fn in_private_etc(
    lab: &Lab,
    setup: &str,
    preload: &Path,
    runs: &[Inside],
) -> Vec<(String, u64)> {
    let etc = lab
        .dir
        .join(format!("etc-{}", REPORTS.fetch_add(1, SeqCst)));
    let setup = format!(
        "mkdir -p {e}/upper {e}/work\n\
         mount -t overlay overlay -o lowerdir=/etc,upperdir={e}/upper,workdir={e}/work /etc\n\
         mount -t tmpfs tmpfs /var/cache/ldconfig\n{setup}",
        e = etc.display()
    );
    in_namespaces(
        lab,
        &["-m", "--propagation", "private"],
        &setup,
        preload,
        runs,
    )
}

/// Runs `runs` (see [`in_private_etc`]) under `unshare` with `namespaces`
/// (its options), after `setup` (shell commands, which must succeed).
pub fn in_namespaces(
    lab: &Lab,
    namespaces: &[&str],
    setup: &str,
    preload: &Path,
    runs: &[Inside],
) -> Vec<(String, u64)> {
    let first = REPORTS.fetch_add(runs.len(), SeqCst);
    let mut script = format!("set -e\n{setup}\nset +e\n");
    let reports: Vec<PathBuf> = (0..runs.len())
        .map(|i| lab.dir.join(format!("report-ns-{}.json", first + i)))
        .collect();
    for (i, run) in runs.iter().enumerate() {
        let report = run.count.then_some(reports[i].as_path());
        let command = lab.command(run.way, &run.args, &run.env, preload, report);
        let words: Vec<String> = command.iter().map(|w| quoted(w)).collect();
        script += &format!("echo '=== {i}'\n{}\n", words.join(" "));
    }
    let mut cmd = Command::new("unshare");
    cmd.args(namespaces)
        .args(["sh", "-c", &script])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run_with_timeout(cmd, Duration::from_secs(120));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    (0..runs.len())
        .map(|i| {
            let section = stdout
                .split(&format!("=== {i}\n"))
                .nth(1)
                .unwrap_or_else(|| panic!("run {i} missing:\n{stdout}"))
                .split("=== ")
                .next()
                .unwrap()
                .to_string();
            let offs = if runs[i].count {
                switch_offs(&reports[i])
            } else {
                0
            };
            (section, offs)
        })
        .collect()
}

/// `/etc/ld.so.preload` holding `content` (written by `printf '%s'`).
pub fn preload_file(content: &str) -> String {
    format!("printf '%s' {} > /etc/ld.so.preload", quoted(content))
}
