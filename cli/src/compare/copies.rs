//! The copies of one phase of `compare`: started, their tree looked at,
//! stopped. Knows what a look measures (PSS, KSM's figures, which engine
//! covers each process), never when a phase is over (that is `phase`).

use crate::launch::Launch;
use crate::merge_any::Uncovered;
use crate::util::*;
use crate::{coverage, ksm, tree};
use anyhow::Result;
use serde::Serialize;
use std::process::Child;
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

/// The copies of one phase, as started.
pub struct Copies {
    children: Vec<Child>,
    /// Their pids (each the leader of a process group of its own).
    pub ids: Vec<i32>,
}

impl Copies {
    /// Starts `workers` copies as `launch` says; if one cannot start, those
    /// already started are stopped.
    pub fn start(launch: &Launch, workers: usize) -> Result<Copies> {
        let mut copies = Copies {
            children: vec![],
            ids: vec![],
        };
        for _ in 0..workers {
            match launch.spawn() {
                Ok(child) => {
                    copies.ids.push(child.id() as i32);
                    copies.children.push(child);
                }
                Err(e) => {
                    copies.stop();
                    return Err(e);
                }
            }
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

    /// `sig` to every copy's process group, and to every process of their
    /// tree (those that left the group with `setsid` are still in it).
    fn signal_all(&self, sig: libc::c_int) {
        for &id in &self.ids {
            unsafe { libc::kill(-id, sig) };
        }
        for pid in self.tree() {
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// Ends the copies and all they started: SIGTERM, up to 3 s for them
    /// to go, then SIGKILL; every one reaped.
    pub fn stop(&mut self) {
        self.signal_all(libc::SIGTERM);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            if self.all_ended() && self.tree().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal_all(libc::SIGKILL);
        for c in self.children.iter_mut() {
            let _ = c.wait();
        }
        self.tree();
    }
}
