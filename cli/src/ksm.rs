//! ksmd's sysfs files (`/sys/kernel/mm/ksm`), read: where they are,
//! whether this kernel has KSM at all, one file's value, and ksmd's state.
//! `status`, `doctor`, `compare` and `ksmd` read ksmd through here. Never
//! writes a tunable (that is `ksmd`), never reads a process.

use crate::util::*;
use anyhow::Result;
use ksmauto_contract::env;
use serde::Serialize;
use std::path::PathBuf;

/// The KSM sysfs directory; `KSMAUTO_SYSFS_KSM` overrides it (for tests).
pub fn sysfs() -> PathBuf {
    std::env::var_os(env::SYSFS_KSM)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/sys/kernel/mm/ksm"))
}

pub fn require_ksm() -> Result<PathBuf> {
    let dir = sysfs();
    if !dir.join("run").exists() {
        return Err(fail(
            EXIT_NO_KSM,
            format!(
                "this kernel has no KSM (CONFIG_KSM): {} missing",
                dir.join("run").display()
            ),
        ));
    }
    Ok(dir)
}

pub fn read(name: &str) -> Option<String> {
    std::fs::read_to_string(sysfs().join(name))
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn read_u64(name: &str) -> Option<u64> {
    read(name).and_then(|s| s.parse().ok())
}

/// What ksmd is doing, from its `run` file; as JSON the lowercase name.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// `run` 1.
    Running,
    /// `run` 0, or a value this tool does not know.
    Stopped,
    /// `run` 2: every merged page is being unmerged.
    Unmerging,
    /// No `run` file: the kernel has no KSM.
    Absent,
}

impl State {
    /// From the number in `run` (`None`: unreadable, taken as stopped).
    pub fn of_run(run: Option<i64>) -> State {
        match run {
            Some(1) => State::Running,
            Some(2) => State::Unmerging,
            _ => State::Stopped,
        }
    }

    /// ksmd's state now.
    pub fn read() -> State {
        match read("run") {
            None => State::Absent,
            Some(run) => State::of_run(run.parse().ok()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Stopped => "stopped",
            State::Unmerging => "unmerging",
            State::Absent => "absent",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::State;

    #[test]
    fn the_state_names_are_the_json_ones() {
        for s in [
            State::Running,
            State::Stopped,
            State::Unmerging,
            State::Absent,
        ] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
        }
        assert_eq!(State::of_run(Some(1)), State::Running);
        assert_eq!(State::of_run(Some(2)), State::Unmerging);
        assert_eq!(State::of_run(Some(0)), State::Stopped);
        assert_eq!(State::of_run(None), State::Stopped);
    }
}
