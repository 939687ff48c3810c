//! ksmd's sysfs files (`/sys/kernel/mm/ksm`), read: where they are,
//! whether this kernel has KSM at all, and one file's value. `status`,
//! `doctor`, `compare` and `ksmd` read ksmd through here. Never writes a
//! tunable (that is `ksmd`), never reads a process.

use crate::util::*;
use anyhow::Result;
use ksmauto_contract::env;
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
