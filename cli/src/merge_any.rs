//! Covering a program that no preload reaches (a static executable: Go
//! services, `-static` C or Rust) with `PR_SET_MEMORY_MERGE`, set in the
//! child between `fork` and `exec`: kernels since 6.7 keep the flag across
//! `exec`, so the new program starts with all its anonymous memory
//! mergeable (what systemd's `MemoryKSM=` does). Owns the decision for one
//! target, the probe of whether this kernel really keeps the flag, and the
//! hook. Never sets the flag for a target that `exec` grants privileges
//! (set-id, file capabilities): its memory would join the merge pool at the
//! request of a less privileged caller.

use crate::exe;
use ksmauto_contract::Mode;
use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// The hidden subcommand that reports the flag through its exit status.
pub const PROBE_SUBCOMMAND: &str = "probe-merge-any";
/// Its exit statuses: the flag is set in it, not set, or unreadable.
const PROBE_SET: i32 = 40;
const PROBE_CLEAR: i32 = 41;
const PROBE_UNREADABLE: i32 = 42;

/// The probe itself: `PR_GET_MEMORY_MERGE` in this (freshly exec'd) process.
pub fn probe_exit_status() -> i32 {
    match unsafe { libc::prctl(libc::PR_GET_MEMORY_MERGE, 0, 0, 0, 0) } {
        1 => PROBE_SET,
        0 => PROBE_CLEAR,
        _ => PROBE_UNREADABLE,
    }
}

/// What this kernel does with the flag across `exec`.
#[derive(Clone, Debug, PartialEq)]
pub enum AcrossExec {
    Kept,
    /// Set before exec, gone after it (before 6.7, or a stable kernel that
    /// lost it).
    Dropped,
    /// The prctl itself fails (before 6.4, or no KSM): its error.
    Refused(String),
    /// The probe did not run or said something else.
    Unknown(String),
}

impl AcrossExec {
    /// Why the flag cannot cover a program here, in words (`None`: it can).
    pub fn why_not(&self) -> Option<String> {
        match self {
            AcrossExec::Kept => None,
            AcrossExec::Dropped => Some(
                "this kernel drops PR_SET_MEMORY_MERGE at exec (it needs Linux 6.7 or a stable kernel with the fix)"
                    .into(),
            ),
            AcrossExec::Refused(e) => Some(format!(
                "this kernel refuses PR_SET_MEMORY_MERGE ({e}; it needs Linux 6.4 and KSM)"
            )),
            AcrossExec::Unknown(e) => Some(format!(
                "cannot tell whether this kernel keeps PR_SET_MEMORY_MERGE across exec ({e})"
            )),
        }
    }
}

/// Sets the flag in the child just before `exec`. Async-signal-safe: one
/// prctl; its failure is ignored (the probe has already asked the kernel).
pub fn set_before_exec(c: &mut Command) {
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_MEMORY_MERGE, 1, 0, 0, 0);
            Ok(())
        });
    }
}

/// Forks a child that sets the flag and execs this very binary as the
/// probe, which reads the flag back. Our binary is dynamic; that changes
/// nothing: the flag belongs to the address space `exec` builds.
pub fn probe() -> AcrossExec {
    let me = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return AcrossExec::Unknown(format!("own executable: {e}")),
    };
    let mut c = Command::new(me);
    c.arg(PROBE_SUBCOMMAND)
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    unsafe {
        c.pre_exec(|| {
            if libc::prctl(libc::PR_SET_MEMORY_MERGE, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match c.status() {
        Ok(st) => match st.code() {
            Some(PROBE_SET) => AcrossExec::Kept,
            Some(PROBE_CLEAR) => AcrossExec::Dropped,
            other => AcrossExec::Unknown(format!("probe ended with {other:?}")),
        },
        // The error of the prctl in the child comes back from spawn.
        Err(e)
            if e.raw_os_error()
                .is_some_and(|n| n == libc::EINVAL || n == libc::EPERM) =>
        {
            AcrossExec::Refused(e.to_string())
        }
        Err(e) => AcrossExec::Unknown(e.to_string()),
    }
}

/// What `run` and `compare` say when they cover a static program (`{}`:
/// the command).
pub const COVERING_NOTE: &str = "{} is a static executable (no dynamic loader, so LD_PRELOAD never \
     reaches it): covering it with PR_SET_MEMORY_MERGE set before its exec (this kernel keeps it across exec)";

/// Says on stderr what `plan` does for `cmd`, as `run` and `compare` say
/// it: the note that merge-any covers it, or why it stays uncovered.
pub fn announce(plan: &Plan, cmd: &OsStr) {
    match plan {
        Plan::SetMergeAny => eprintln!(
            "ksmauto: {}",
            COVERING_NOTE.replace("{}", &cmd.to_string_lossy())
        ),
        Plan::Uncovered(u) => eprintln!("ksmauto: warning: {}", u.words),
        Plan::NotInspected(why) => eprintln!("ksmauto: warning: {why}"),
        Plan::Preload => {}
    }
}

/// The mode the preload will run the command in, which decides the plan
/// too: `flag` (`--mode`), else `KSMAUTO_MODE` from our environment as the
/// library reads it (a name it does not know: it warns and takes auto),
/// else auto.
pub fn effective_mode(flag: Option<Mode>) -> Mode {
    use ksmauto_contract::env;
    use std::os::unix::ffi::OsStrExt;
    flag.unwrap_or_else(|| {
        std::env::var_os(env::MODE)
            .and_then(|v| Mode::from_name(v.as_bytes()))
            .unwrap_or(Mode::Auto)
    })
}

/// Why a static program is left uncovered: the reason as a value (for
/// short words such as `coverage`'s) and in full (for the warning).
#[derive(Clone, Debug, PartialEq)]
pub struct Uncovered {
    pub why: Why,
    pub words: String,
}

impl Uncovered {
    fn new(why: Why, words: String) -> Uncovered {
        Uncovered { why, words }
    }
}

/// The reasons [`plan`] leaves a static program uncovered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// `exec` grants it privileges: no flag set at a less privileged
    /// caller's request.
    Privileged,
    /// This kernel does not keep the flag across exec (or refuses it).
    KernelCannot,
    /// Advise mode: only the preload advises, and it cannot load there.
    AdviseMode,
}

/// What to do for one command before it runs.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Dynamic (or not an ELF, or not found, or mode off): left to the
    /// preload, as for any program.
    Preload,
    /// Static, and the flag will be set before exec.
    SetMergeAny,
    /// Static and left uncovered: why.
    Uncovered(Uncovered),
    /// The file cannot be read (execute-only): whether it is static is
    /// unknown, so it is left to the preload, with this warning.
    NotInspected(String),
}

/// Decides for `cmd` as `execvp` would find it with `path_var`, in `mode`
/// (from [`effective_mode`]). `probe` runs at most once, only
/// for a static target that the flag may cover.
pub fn plan(
    cmd: &OsStr,
    path_var: Option<&OsStr>,
    mode: Mode,
    probe: &mut dyn FnMut() -> AcrossExec,
) -> Plan {
    let Some(target) = exe::resolve(cmd, path_var) else {
        return Plan::Preload;
    };
    if mode == Mode::Off {
        return Plan::Preload;
    }
    // Only an ELF program this machine runs can be static: another
    // architecture's (which execvp's ENOEXEC fallback would hand to
    // /bin/sh after a pre_exec hook) or a script runs as it would anyway.
    match exe::kind(&target) {
        exe::Kind::Static => {}
        exe::Kind::Unreadable(e) => {
            return Plan::NotInspected(format!(
                "{} could not be inspected ({e}): if it is a static executable, LD_PRELOAD never \
                 reaches it and it runs uncovered",
                target.display()
            ))
        }
        exe::Kind::Dynamic | exe::Kind::Other => return Plan::Preload,
    }
    let what = format!(
        "{} is a static executable (no dynamic loader, so LD_PRELOAD never reaches it)",
        target.display()
    );
    match mode {
        Mode::Auto | Mode::Process => {
            let privs = exe::privileges(&target);
            if !privs.is_empty() {
                Plan::Uncovered(Uncovered::new(Why::Privileged, format!(
                    "{what} and {}: PR_SET_MEMORY_MERGE is not set for it, because exec grants it \
                     privileges and its memory must not join the merge pool at the request of an \
                     unprivileged caller (KSM merging is a side channel between processes); it runs \
                     uncovered",
                    privs.join(", ")
                )))
            } else {
                match probe().why_not() {
                    None => Plan::SetMergeAny,
                    Some(why) => Plan::Uncovered(Uncovered::new(
                        Why::KernelCannot,
                        format!("{what}, and {why}: it runs uncovered"),
                    )),
                }
            }
        }
        Mode::Advise => Plan::Uncovered(Uncovered::new(Why::AdviseMode, format!(
            "{what}: advise mode cannot cover a static program (only the preload advises, \
             and it cannot load there); use --mode process or auto to cover it with PR_SET_MEMORY_MERGE"
        ))),
        // Mode off: nothing is covered, by either engine.
        Mode::Off => Plan::Preload,
    }
}
