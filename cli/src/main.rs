//! `ksmauto`: run programs with libksmauto, see what KSM does, and estimate
//! what it could do. Exit codes: 0 ok, 1 runtime error, 2 usage error,
//! 3 no such process, 4 permission denied, 5 kernel without KSM; `run`
//! exits with the command's status (128 + signal if killed).
//!
//! This file owns the command line: it parses and checks it, turns it into
//! each command's typed options (`contract::Mode`, not a name) and hands
//! them over; it never does a command's work. One module per command
//! (`run`, `status`, `estimate`, `compare`, `doctor`, `ksmd`), the helpers
//! below them (see docs/architecture.md).

mod compare;
mod coverage;
mod debt;
mod doctor;
mod estimate;
mod exe;
mod ksm;
mod ksmd;
mod launch;
mod merge_any;
mod owner;
mod report_dir;
mod run;
mod status;
mod tree;
mod util;
mod watchdog;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use ksmauto_contract::Mode;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "ksmauto",
    version,
    about = "Make programs' memory mergeable by KSM, and see what it saves",
    after_help = "Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 no such process, \
                  4 permission denied, 5 kernel without KSM; `run` exits with the command's status."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// `--mode`: the names of [`ksmauto_contract::Mode`], which every command
/// gets (a clap value enum of its own: the contract crate depends on
/// nothing).
#[derive(Clone, Copy, ValueEnum)]
enum CliMode {
    Auto,
    Advise,
    Process,
    Off,
}

impl From<CliMode> for Mode {
    fn from(m: CliMode) -> Mode {
        match m {
            CliMode::Auto => Mode::Auto,
            CliMode::Advise => Mode::Advise,
            CliMode::Process => Mode::Process,
            CliMode::Off => Mode::Off,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a command with libksmauto preloaded, then summarize every process of its tree
    Run {
        /// KSMAUTO_MODE for the command
        #[arg(long, value_enum)]
        mode: Option<CliMode>,
        /// The library (default: next to this binary, ../release, ../lib, /usr/local/lib)
        #[arg(long)]
        lib: Option<PathBuf>,
        /// Print the summary as JSON on stdout instead of text on stderr
        #[arg(long)]
        json: bool,
        /// The command and its arguments
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, num_args = 1..)]
        command: Vec<OsString>,
    },
    /// Show the kernel's KSM state in plain words, and the processes using it
    Status {
        #[arg(long, conflicts_with = "prometheus")]
        json: bool,
        /// Prometheus text exposition format (node_exporter textfile collector)
        #[arg(long)]
        prometheus: bool,
        /// Write the Prometheus output to PATH atomically (temp file + rename), not stdout
        #[arg(long, value_name = "PATH", conflicts_with = "json")]
        textfile: Option<PathBuf>,
        /// Refresh every SECS seconds until interrupted
        #[arg(long, value_name = "SECS")]
        watch: Option<f64>,
        /// Read ksmd's counters twice, SECS apart, for its CPU share and
        /// scan rate now (Prometheus: use rate() on the counters)
        #[arg(long, value_name = "SECS", conflicts_with_all = ["prometheus", "textfile"])]
        rate: Option<f64>,
    },
    /// Predict what KSM could save in running processes (read-only), within
    /// each user and cgroup and across the host
    Estimate {
        #[arg(required_unless_present_any = ["all", "user", "cgroup"], num_args = 1..)]
        pids: Vec<i32>,
        /// Every process of the host this user may read (the rest are named)
        #[arg(long, conflicts_with_all = ["pids", "user", "cgroup"])]
        all: bool,
        /// The processes of USER (a name or a uid; repeatable)
        #[arg(long, value_name = "USER")]
        user: Vec<String>,
        /// The processes in cgroup PATH or below it, in any hierarchy (as
        /// `status` shows it, or as mounted: /sys/fs/cgroup/…; repeatable).
        /// With --user: the processes of those users in those cgroups
        #[arg(long, value_name = "PATH")]
        cgroup: Vec<String>,
        #[arg(long)]
        json: bool,
        /// Per-process table and scan speed
        #[arg(long, short)]
        verbose: bool,
    },
    /// Run N copies of a command without, then with the preload, and compare memory
    Compare(CompareArgs),
    /// Say why a running process does or does not merge, with figures
    Doctor {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        pid: Option<i32>,
        /// Every process with the library loaded or KSM activity
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Turn ksmd on or off and set its scan pace (root); save, restore, or
    /// hold its settings while a command runs
    #[command(args_conflicts_with_subcommands = true)]
    Ksmd {
        #[command(subcommand)]
        action: Option<ksmd::Action>,
        #[arg(long, conflicts_with = "off")]
        on: bool,
        #[arg(long)]
        off: bool,
        /// fast: 2000 pages every 10 ms, smart_scan 0 (for demos and tests);
        /// default: the kernel's 100 pages every 20 ms, smart_scan 1
        #[arg(long, value_enum)]
        scan: Option<ksmd::Scan>,
        #[arg(long)]
        json: bool,
    },
    /// (internal) exits 40 when PR_GET_MEMORY_MERGE is set in it, 41 when not;
    /// with --across-exec, runs the whole probe: 0 when this kernel keeps the
    /// flag across exec, else 1 and why on stderr (scripts/install)
    #[command(name = "probe-merge-any", hide = true)]
    ProbeMergeAny {
        #[arg(long)]
        across_exec: bool,
    },
}

// `ksmauto compare`'s command line (a plain comment: a doc comment
// here would replace the subcommand's about text in --help).
#[derive(clap::Args)]
struct CompareArgs {
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Default: KSMAUTO_MODE from the environment, else auto
    #[arg(long, value_enum)]
    mode: Option<CliMode>,
    /// Longest time to wait for memory to settle, per run
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    settle_timeout: f64,
    #[arg(long)]
    lib: Option<PathBuf>,
    /// Write a chart of PSS over time (SVG)
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    #[arg(long)]
    json: bool,
    /// (root) Stop ksmd while the pool with the preload loads; once it is
    /// loaded and its PSS flat, record that PSS and the estimator's ideal
    /// for exactly that pool, then let ksmd go; every ksmd setting is put
    /// back at the end
    #[arg(long)]
    hold_ksmd: bool,
    /// A file each copy makes once it has loaded (`%p`: the copy's pid);
    /// no phase counts as settled (nor is ksmd let go) before every copy made it
    #[arg(long, value_name = "PATH")]
    ready_file: Option<String>,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, num_args = 1..)]
    command: Vec<OsString>,
}

impl CompareArgs {
    /// The options, checked: at least one copy, a timeout of seconds.
    fn options(self) -> Result<compare::Options> {
        if self.workers == 0 {
            return Err(util::fail(2, "--workers must be at least 1"));
        }
        let settle_timeout = seconds("--settle-timeout", self.settle_timeout)?;
        Ok(compare::Options {
            workers: self.workers,
            mode: merge_any::effective_mode(self.mode.map(Mode::from)),
            settle_timeout: settle_timeout.max(Duration::from_millis(500)),
            lib: self.lib,
            svg: self.svg,
            json: self.json,
            hold_ksmd: self.hold_ksmd,
            ready_file: self.ready_file,
            command: self.command,
        })
    }
}

/// `--watch`, `--settle-timeout`: seconds above 0, at most a day (a longer
/// pause is no watch, and past ~1e19 s no duration exists at all).
fn seconds(flag: &str, secs: f64) -> Result<Duration> {
    if !secs.is_finite() || secs <= 0.0 || secs > 86400.0 {
        return Err(util::fail(
            2,
            format!("{flag} needs a number of seconds above 0, at most 86400"),
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `status`'s options, checked.
fn status_options(
    json: bool,
    prometheus: bool,
    textfile: Option<PathBuf>,
    watch: Option<f64>,
    rate: Option<f64>,
) -> Result<status::Options> {
    Ok(status::Options {
        format: if json {
            status::Format::Json
        } else if prometheus {
            status::Format::Prometheus
        } else {
            status::Format::Text
        },
        textfile,
        watch: watch.map(|secs| seconds("--watch", secs)).transpose()?,
        rate: rate.map(|secs| seconds("--rate", secs)).transpose()?,
    })
}

/// `ksmauto ksmd --on/--off/--scan`: the change, then the state it leaves.
fn ksmd_settings(on: bool, off: bool, scan: Option<ksmd::Scan>, json: bool) -> Result<i32> {
    ksmd::ksmd(on, off, scan)?;
    status::print(if json {
        status::Format::Json
    } else {
        status::Format::Text
    })?;
    Ok(0)
}

/// `ksmauto probe-merge-any`: the probe itself, or with `--across-exec`
/// the whole probe run from here.
fn probe_merge_any(across_exec: bool) -> i32 {
    if !across_exec {
        return merge_any::probe_exit_status();
    }
    match merge_any::probe().why_not() {
        None => 0,
        Some(why) => {
            eprintln!("{why}");
            1
        }
    }
}

/// Parses the command line and hands it to its command, typed.
fn real_main() -> Result<i32> {
    match Cli::parse().cmd {
        Cmd::Run {
            mode,
            lib,
            json,
            command,
        } => run::run(mode.map(Mode::from), lib.as_deref(), json, &command),
        Cmd::Status {
            json,
            prometheus,
            textfile,
            watch,
            rate,
        } => status::command(&status_options(json, prometheus, textfile, watch, rate)?),
        Cmd::Estimate {
            pids,
            all,
            user,
            cgroup,
            json,
            verbose,
        } => estimate::command(
            &estimate::Selection {
                pids,
                all,
                users: user,
                cgroups: cgroup,
            },
            json,
            verbose,
        ),
        Cmd::Compare(args) => compare::command(&args.options()?),
        Cmd::Doctor { pid, all: _, json } => doctor::command(
            match pid {
                Some(pid) => doctor::Target::Pid(pid),
                None => doctor::Target::All,
            },
            json,
        ),
        Cmd::Ksmd {
            action: Some(action),
            ..
        } => ksmd::action(action),
        Cmd::Ksmd {
            action: None,
            on,
            off,
            scan,
            json,
        } => ksmd_settings(on, off, scan, json),
        Cmd::ProbeMergeAny { across_exec } => Ok(probe_merge_any(across_exec)),
    }
}

fn main() {
    // Die quietly on a closed pipe (`ksmauto status | head`), like other tools.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // Never show a panic message or a stack trace: one line, exit 1.
    std::panic::set_hook(Box::new(|info| {
        // Nothing is dropped on the way out (panic = "abort"): what
        // compare started and what it holds are ended here.
        compare::kill_after_panic();
        ksmd::put_back_if_held();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unexpected failure".into());
        eprintln!(
            "ksmauto: internal error: {}",
            msg.lines().next().unwrap_or("")
        );
        std::process::exit(1);
    }));
    match real_main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("ksmauto: {}", msg.join(": ").replace('\n', " "));
            std::process::exit(util::exit_code(&e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_names_on_the_command_line_are_the_ones_the_library_reads() {
        for m in CliMode::value_variants() {
            let on_the_command_line = m.to_possible_value().unwrap();
            let mode = Mode::from(*m);
            assert_eq!(on_the_command_line.get_name(), mode.name());
            assert_eq!(Mode::from_name(mode.name().as_bytes()), Some(mode));
        }
        assert_eq!(CliMode::value_variants().len(), Mode::ALL.len());
    }
}
