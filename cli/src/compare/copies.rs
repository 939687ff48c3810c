//! The copies of one phase of `compare`: started, their tree looked at,
//! stopped. Knows what a look measures (PSS, KSM's figures, which engine
//! covers each process), never when a phase is over (that is `phase`).
//! Owns the copies' end: they never outlive compare, whichever way it
//! ends (a `Copies` dropped stops them; the panic hook kills them).

use crate::launch::Launch;
use crate::merge_any::Uncovered;
use crate::util::*;
use crate::{coverage, ksm, tree};
use anyhow::Result;
use serde::Serialize;
use std::process::Child;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What one look at the copies' tree found, summed over its processes.
#[derive(Serialize, Debug, Clone, Copy, Default)]
pub struct Sample {
    pub t: f64,
    pub processes: usize,
    pub rss_bytes: u64,
    pub pss_bytes: u64,
    pub merging_pages: u64,
    pub zero_pages: u64,
    pub profit: i64,
    pub full_scans: u64,
}

/// One process of a phase's last look.
#[derive(Serialize, Debug)]
pub struct ProcCoverage {
    pub pid: i32,
    pub comm: String,
    pub exe: String,
    /// Words as in `run`'s `coverage`: `preload (process)`, `inherited
    /// merge-any`, `none (static)`, …
    pub coverage: String,
    pub coverage_why: Option<String>,
    pub merged_pages: u64,
}

/// Which engine covers a live process; `decided`: why the launcher left
/// the copies' program uncovered, for a process still running it.
pub fn coverage_of(pid: i32, decided: Option<&Uncovered>) -> ProcCoverage {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| path_text(&p))
        .unwrap_or_default();
    let library = read_proc(format!("/proc/{pid}/maps")).is_ok_and(|m| maps_the_library(&m));
    let stat = ksm_stat(pid);
    let c = coverage::judge(
        library,
        "?",
        stat.as_ref(),
        Some(&coverage::facts(pid)),
        decided,
    );
    ProcCoverage {
        pid,
        comm: comm(pid),
        exe,
        coverage: c.words,
        coverage_why: c.why,
        merged_pages: stat.map(|k| k.merging_pages + k.zero_pages).unwrap_or(0),
    }
}

/// The copies started by this process and not yet stopped (their pids,
/// each its process group's), for [`kill_after_panic`]: a panic ends
/// compare through the panic hook, which drops nothing.
static STARTED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn started() -> MutexGuard<'static, Vec<i32>> {
    STARTED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `pid` is a child of ours not yet reaped (running, stopped or a
/// zombie): only then is its pid, and the process group it leads, surely
/// still ours; once reaped, the number can be another's. Reaps nothing.
fn unreaped_child(pid: i32) -> bool {
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WSTOPPED | libc::WNOHANG | libc::WNOWAIT;
    unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) == 0 }
}

/// For the panic hook: SIGKILL to the copies still running and all they
/// started (no time for a gentle end: the process is about to exit).
pub fn kill_after_panic() {
    if !kill_started_groups() {
        return;
    }
    // As subreaper, everything below compare is its copies' (see `tree`).
    let me = std::process::id() as i32;
    for l in tree::descendants_of(&[me]) {
        unsafe { libc::kill(l.pid, libc::SIGKILL) };
    }
}

/// SIGKILL to the process group of every copy started and not yet
/// reaped; whether there was any copy not yet stopped.
fn kill_started_groups() -> bool {
    let Ok(ids) = STARTED.try_lock() else {
        return false;
    };
    for &id in ids.iter().filter(|&&id| unreaped_child(id)) {
        unsafe { libc::kill(-id, libc::SIGKILL) };
    }
    !ids.is_empty()
}

/// The copies of one phase, as started. They are ours to end: however
/// the phase ends (its result, an error out of it with `?`, a signal),
/// they are stopped when this is dropped, if not before.
pub struct Copies {
    children: Vec<Child>,
    /// Their pids (each the leader of a process group of its own).
    pub ids: Vec<i32>,
    /// Stopped and reaped: nothing of theirs is left to signal.
    stopped: bool,
}

impl Copies {
    /// Starts `workers` copies as `launch` says; if one cannot start, those
    /// already started are stopped.
    pub fn start(launch: &Launch, workers: usize) -> Result<Copies> {
        let mut copies = Copies {
            children: vec![],
            ids: vec![],
            stopped: false,
        };
        for _ in 0..workers {
            // Stops those already started, when dropped here.
            let child = launch.spawn()?;
            let id = child.id() as i32;
            started().push(id);
            copies.ids.push(id);
            copies.children.push(child);
        }
        Ok(copies)
    }

    /// Whether every copy has ended (reaped here).
    pub fn all_ended(&mut self) -> bool {
        self.children
            .iter_mut()
            .all(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// The live processes below us: the copies and everything they
    /// started, found by parent links (a worker that calls `setsid` leaves
    /// the process group, not the tree; one whose parent ended re-parents
    /// to us, the subreaper). Orphans that ended are reaped here.
    pub fn tree(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        let mut live = vec![];
        for l in tree::descendants_of(&[me]) {
            if l.state == 'Z' || l.state == 'X' {
                if l.ppid == me && !self.ids.contains(&l.pid) {
                    let mut st = 0;
                    unsafe { libc::waitpid(l.pid, &mut st, libc::WNOHANG) };
                }
                continue;
            }
            live.push(l.pid);
        }
        live
    }

    /// One look at their tree (`t0`: the phase's start), and its pids.
    pub fn sample(&self, t0: Instant) -> (Sample, Vec<i32>) {
        let pids = self.tree();
        let mut s = Sample {
            t: t0.elapsed().as_secs_f64(),
            full_scans: ksm::read_u64("full_scans").unwrap_or(0),
            ..Default::default()
        };
        for &pid in &pids {
            if let Some((rss, pss)) = rss_pss(pid) {
                s.processes += 1;
                s.rss_bytes += rss;
                s.pss_bytes += pss;
            }
            if let Some(k) = ksm_stat(pid) {
                s.merging_pages += k.merging_pages;
                s.zero_pages += k.zero_pages;
                s.profit += k.profit;
            }
        }
        (s, pids)
    }

    /// `sig` to the process group of every copy not yet reaped (a reaped
    /// one's number may be another's by now), and to every process of
    /// their tree (those that left the group with `setsid` are still in
    /// it).
    fn signal_all(&self, sig: libc::c_int) {
        for &id in self.ids.iter().filter(|&&id| unreaped_child(id)) {
            unsafe { libc::kill(-id, sig) };
        }
        for pid in self.tree() {
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// Waits up to `limit` for the copies (reaped here) and their tree to
    /// be gone; whether they are.
    fn wait_gone(&mut self, limit: Duration) -> bool {
        let t = Instant::now();
        loop {
            if self.all_ended() && self.tree().is_empty() {
                return true;
            }
            if t.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ends the copies and all they started: SIGTERM, up to 3 s for them
    /// to go, then SIGKILL to what is left; every one reaped. Once done,
    /// a second call does nothing.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.signal_all(libc::SIGTERM);
        if !self.wait_gone(Duration::from_secs(3)) {
            self.signal_all(libc::SIGKILL);
            for c in self.children.iter_mut() {
                let _ = c.wait();
            }
            // Killed orphans re-parent to us: reaped as they go.
            self.wait_gone(Duration::from_secs(5));
        }
        self.stopped = true;
        started().retain(|id| !self.ids.contains(id));
    }
}

impl Drop for Copies {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::process::ExitStatusExt;

    fn sleepers(workers: usize) -> Copies {
        let cmd: Vec<OsString> = vec!["sleep".into(), "60".into()];
        Copies::start(&Launch::new(&cmd).detached().no_preload(), workers).unwrap()
    }

    #[test]
    fn the_panic_hook_kills_the_copies_not_yet_stopped_and_no_others() {
        let mut stopped = sleepers(1);
        stopped.stop();
        let mut running = sleepers(2);
        assert!(kill_started_groups());
        for c in running.children.iter_mut() {
            assert_eq!(c.wait().unwrap().signal(), Some(libc::SIGKILL));
        }
        // Reaped now: their numbers are no longer theirs to signal.
        assert!(running.ids.iter().all(|&id| !unreaped_child(id)));
        running.stop();
        assert!(!kill_started_groups(), "a stopped copy is forgotten");
        drop(stopped);
    }
}
