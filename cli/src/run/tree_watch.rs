//! `run`'s looks at its tree: every process below it sampled until the
//! tree has ended, their exits reaped, their exit reports joined to them.
//! Reads `/proc` and reaps only what is ours (the command, and orphans
//! re-parented to us as subreaper); never signals a process (forwarding
//! is `launch`'s) and never decides how a process is described
//! (`proc_report` does).

use super::proc_report::{attach_report, End, FiguresFrom, ProcReport};
use crate::coverage;
use crate::launch::*;
use crate::report_dir::ReportDir;
use crate::tree::*;
use crate::util::*;
use ksmauto_contract::report as field;
use std::collections::HashMap;
use std::time::Duration;

/// `ksm_stat` of a process (its `/proc` directory, or a living thread's)
/// that still has its memory: a process past `exit_mm` (exiting, zombie)
/// shows an empty file, which must not overwrite its last figures with zeros.
fn live_ksm_stat(dir: &str) -> Option<KsmStat> {
    let text = read_proc(format!("{dir}/ksm_stat")).ok()?;
    let has_memory = text.windows(14).any(|w| w == b"ksm_rmap_items");
    has_memory.then(|| ksmauto_contract::proc::KsmStat::parse(&text).into())
}

fn exe_of(dir: &str) -> Option<String> {
    std::fs::read_link(format!("{dir}/exe"))
        .ok()
        .map(|p| path_text(&p))
}

/// Samples after an exec that look for the library in the memory map.
const LIBRARY_LOOKS: u32 = 20;

/// What one look at a process says about its program.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum ExecSeen {
    /// The program it had at the last look.
    Same,
    /// The first look at it (or the command before its own exec): its
    /// program, not an exec of the user's.
    First,
    /// It exec'd since the last look.
    Exec,
    /// The program it had, whose addresses were not known at the last look.
    Settled,
    /// It exec'd during this look (the image changed between the listing
    /// and the read of its program): the program read may belong to either
    /// image, so nothing is decided until the next look.
    InProgress,
}

/// Decides from one look whether a process exec'd: `known_exe`/`known_image`
/// from the last look (empty/zero the first time), `image` from the tree's
/// listing, `exe` read after it, `image_after` read after `exe`. An exec
/// shows as a new program or a new image (same program: new addresses);
/// one caught in the middle of the look waits for the next, so it is never
/// counted twice (once for the program, once more for the image).
fn exec_seen(
    known_exe: &str,
    known_image: (u64, u64, u64),
    image: (u64, u64, u64),
    exe: &str,
    image_after: (u64, u64, u64),
    own_exe: Option<&str>,
) -> ExecSeen {
    if image != image_after {
        return ExecSeen::InProgress;
    }
    if exe == known_exe {
        // A zero address: the kernel's loader had not set up the program's
        // memory yet when it was read (the new program shows at once, its
        // addresses a moment later: a look can fall in between), or the
        // process cannot be read. The same program with its addresses
        // known now is no new exec.
        let unsettled = |im: (u64, u64, u64)| im.0 == 0 || im.1 == 0 || im.2 == 0;
        if image == known_image {
            return ExecSeen::Same;
        }
        if unsettled(known_image) || unsettled(image) {
            return ExecSeen::Settled;
        }
    }
    // The command itself, seen before its exec, runs our own binary: that
    // is no exec of the user's. (`known_image` stays zero for one exec'd
    // before the first look, which counts as an exec.)
    if known_exe.is_empty() || Some(known_exe) == own_exe {
        return ExecSeen::First;
    }
    ExecSeen::Exec
}

fn maps_library(dir: &str) -> bool {
    read_proc(format!("{dir}/maps")).is_ok_and(|m| maps_the_library(&m))
}

/// Where a listed process's memory and program are read, and its
/// addresses: its own directory, or when its main thread has ended
/// (pthread_exit: the leader is a zombie) while others run, a living
/// thread's, whose addresses are the process's (the zombie leader's read
/// as zero). `None`: nothing left to read.
fn where_to_read(l: &StatLine) -> (Option<String>, (u64, u64, u64)) {
    if l.state == 'Z' || l.state == 'X' {
        match living_thread(l.pid) {
            Some(t) => (Some(format!("/proc/{}/task/{}", l.pid, t.pid)), t.image),
            None => (None, l.image),
        }
    } else {
        (Some(format!("/proc/{}", l.pid)), l.image)
    }
}

/// One look at a process through `dir`: its program (an exec since the
/// last look), whether the library is mapped, its name and figures.
fn read_process(
    p: &mut ProcReport,
    pid: i32,
    dir: &str,
    image: (u64, u64, u64),
    own: Option<&str>,
) {
    if let Some(exe) = exe_of(dir) {
        // The image read again after the program: an exec between the
        // listing and now shows as two different images.
        let image_after = stat_line_in(pid, dir).map(|a| a.image).unwrap_or(image);
        match exec_seen(&p.exe, p.image, image, &exe, image_after, own) {
            ExecSeen::InProgress | ExecSeen::Same => {}
            ExecSeen::Settled => p.image = image,
            seen => {
                if seen == ExecSeen::Exec {
                    p.execs.push(exe.clone());
                }
                p.exe = exe;
                p.prev_image = p.image;
                p.image = image;
                p.library = false;
                p.samples_since_exec = 0;
                p.facts = None;
            }
        }
    }
    if p.facts.is_none() && !p.exe.is_empty() {
        p.facts = Some(coverage::facts(pid));
    }
    // The loader maps the preload after the exec: look again on the
    // following samples until it is there (for a while: a program without
    // it is not read in full ten times a second).
    if !p.library && p.samples_since_exec < LIBRARY_LOOKS {
        p.library = maps_library(dir);
        p.samples_since_exec += 1;
    }
    let c = comm(pid);
    if c != "?" {
        p.comm = c;
    }
    // smaps_rollup first: if ksm_stat is still whole after it, both are
    // from the living process.
    if let Some((rss, pss)) = rss_pss_in(dir) {
        if let Some(k) = live_ksm_stat(dir) {
            p.rss_bytes = rss;
            p.pss_bytes = pss;
            p.merging_pages = k.merging_pages;
            p.zero_pages = k.zero_pages;
            p.profit = k.profit;
            p.stat = k;
            p.samples += 1;
        }
    }
}

/// Time between two looks at the tree.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// Every process below us, sampled until the tree has ended.
pub(super) struct TreeWatch {
    me: i32,
    pub(super) child: i32,
    own_exe: Option<String>,
    pub(super) procs: Vec<ProcReport>,
    /// pid -> index in `procs` of the process that holds that pid now.
    live: HashMap<i32, usize>,
    pub(super) rounds: u64,
    /// (pid in a pid namespace, start time) -> the last process in `procs`
    /// with them, and pid -> the last with that pid: how a report finds
    /// its process in constant time, however many there are (kept up to
    /// date by [`TreeWatch::index_new`]; a process's pids and start time
    /// never change once it is in `procs`).
    by_nspid: HashMap<(i64, u64), usize>,
    by_pid: HashMap<i64, usize>,
    /// Processes in `procs` already in the indexes.
    indexed: usize,
    /// Users the tree's processes ran as (and ours): whose report files count.
    users: std::collections::HashSet<u32>,
}

impl TreeWatch {
    /// Watches the tree below us, whose command is `child`.
    pub(super) fn new(child: i32) -> TreeWatch {
        TreeWatch {
            me: std::process::id() as i32,
            child,
            own_exe: std::env::current_exe().ok().map(|p| path_text(&p)),
            procs: vec![],
            live: HashMap::new(),
            rounds: 0,
            by_nspid: HashMap::new(),
            by_pid: HashMap::new(),
            indexed: 0,
            users: [unsafe { libc::geteuid() }].into_iter().collect(),
        }
    }

    /// One look at the tree: new processes, execs, figures; processes that
    /// left without us reaping them were reaped by their parent.
    pub(super) fn sample(&mut self) {
        self.rounds += 1;
        let now = descendants_of(&[self.me]);
        let mut present = std::collections::HashSet::new();
        for l in &now {
            present.insert(l.pid);
            // The users the tree runs as (the owner of /proc/PID is the
            // process's effective user): whose report files are read.
            if let Ok(m) = std::fs::metadata(format!("/proc/{}", l.pid)) {
                use std::os::unix::fs::MetadataExt;
                self.users.insert(m.uid());
            }
            let (dir, image) = where_to_read(l);
            let idx = self.index_of(l, image);
            if let Some(dir) = dir {
                let own = self.own_exe.as_deref();
                read_process(&mut self.procs[idx], l.pid, &dir, image, own);
            }
        }
        let left: Vec<i32> = self
            .live
            .keys()
            .copied()
            .filter(|pid| !present.contains(pid))
            .collect();
        for pid in left {
            let i = self.live[&pid];
            self.gone(i);
        }
    }

    /// The index in `procs` of the process `l` lists (`image`: its
    /// addresses, as [`where_to_read`] found them): the one known by its
    /// pid and start time, else a new one (the old holder of its pid gone).
    fn index_of(&mut self, l: &StatLine, image: (u64, u64, u64)) -> usize {
        if let Some(&i) = self.live.get(&l.pid) {
            if self.procs[i].start_time == l.start_time {
                return i;
            }
            self.gone(i);
        }
        // A forked child has its parent's very addresses; seen first with
        // others, it has exec'd since the fork. The parent may have exec'd
        // itself since the fork (in this very look): its image before that
        // counts too.
        let parent = self
            .live
            .get(&l.ppid)
            .map(|&i| &self.procs[i])
            .filter(|p| l.ppid != self.me && p.image != (0, 0, 0));
        let exec_before_first_look =
            parent.is_some_and(|p| image != (0, 0, 0) && image != p.image && image != p.prev_image);
        self.procs.push(ProcReport {
            pid: l.pid as i64,
            ppid: l.ppid as i64,
            start_time: l.start_time,
            nspids: nspids(l.pid),
            image: if exec_before_first_look {
                (0, 0, 0)
            } else {
                image
            },
            exe: if exec_before_first_look {
                "(exec'd before the first look)".into()
            } else {
                String::new()
            },
            mode: "?".into(),
            figures_from: FiguresFrom::Sample,
            end: End::Running,
            report: serde_json::Value::Null,
            ..Default::default()
        });
        self.live.insert(l.pid, self.procs.len() - 1);
        self.procs.len() - 1
    }

    /// Reads the exit reports written since the last look (what
    /// [`ReportDir`] lets through) and gives each to the process that
    /// wrote it (see [`TreeWatch::owner_of_report`]); removes the files
    /// whose processes have all ended, so each look reads only what is
    /// new, however many processes the tree ran.
    pub(super) fn collect_reports(&mut self, dir: &mut ReportDir) {
        let users = self.users.clone();
        dir.read_new(&users, |line| {
            let v = serde_json::from_str::<serde_json::Value>(line).ok()?;
            let i = self.owner_of_report(&v);
            attach_report(&mut self.procs[i], v);
            Some(i)
        });
        dir.remove_finished(|i| self.procs[i].end != End::Running);
    }

    /// Adds the processes pushed since the last call to the indexes.
    fn index_new(&mut self) {
        for (i, p) in self.procs.iter().enumerate().skip(self.indexed) {
            for &n in &p.nspids {
                self.by_nspid.insert((n, p.start_time), i);
            }
            self.by_pid.insert(p.pid, i);
        }
        self.indexed = self.procs.len();
    }

    /// The process an exit report belongs to: the one sampled (or reaped)
    /// with its start time and its pid among its pids in every namespace
    /// (a report in a pid namespace names the namespace's pid). One that
    /// matches none ended before any look: it is kept as a process of its
    /// own, never given to another holder of the same pid. (A report
    /// without `start_time`, from an older library, goes by pid alone.)
    fn owner_of_report(&mut self, v: &serde_json::Value) -> usize {
        let pid = v[field::PID].as_i64().unwrap_or(0);
        let start_time = v[field::START_TIME].as_u64();
        self.index_new();
        let found = match start_time {
            Some(st) => self.by_nspid.get(&(pid, st)).copied(),
            None => self
                .live
                .get(&(pid as i32))
                .copied()
                .or_else(|| self.by_pid.get(&pid).copied()),
        };
        found.unwrap_or_else(|| {
            // Born and ended between two looks.
            self.procs.push(ProcReport {
                pid,
                start_time: start_time.unwrap_or(0),
                nspids: vec![pid],
                end: End::Gone,
                figures_from: FiguresFrom::Nothing,
                ..Default::default()
            });
            self.procs.len() - 1
        })
    }

    fn gone(&mut self, i: usize) {
        let p = &mut self.procs[i];
        p.end = End::Gone;
        self.live.remove(&(p.pid as i32));
    }

    /// Collects every zombie that is ours (the command, and orphans
    /// re-parented to us as subreaper). Returns the command's status once
    /// it is reaped.
    pub(super) fn reap(&mut self) -> Option<i32> {
        let mut command_status = None;
        loop {
            // Which child ended, left unreaped for now: while it is a
            // zombie its start time and pids can still be read, to know it
            // if it was never sampled (and to match its report later).
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let rc = unsafe {
                libc::waitid(
                    libc::P_ALL,
                    0,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                )
            };
            let ended = unsafe { info.si_pid() };
            if rc != 0 || ended <= 0 {
                break;
            }
            let start_time = stat_line(ended).map(|l| l.start_time);
            let ids = nspids(ended);
            let mut st: libc::c_int = 0;
            let pid = unsafe { libc::waitpid(ended, &mut st, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == self.child {
                command_ended();
                command_status = Some(if libc::WIFEXITED(st) {
                    libc::WEXITSTATUS(st)
                } else {
                    128 + libc::WTERMSIG(st)
                });
            }
            self.index_new();
            let same = |p: &ProcReport| start_time.is_none_or(|st| p.start_time == st);
            let sampled = self
                .live
                .get(&pid)
                .copied()
                .filter(|&i| same(&self.procs[i]));
            // Or known by its report only (read before it was reaped).
            let reported = || {
                let st = start_time?;
                ids.iter()
                    .filter_map(|&n| self.by_nspid.get(&(n, st)).copied())
                    .max()
            };
            let idx = match sampled.or_else(reported) {
                Some(i) => i,
                None => {
                    // Born and ended between two samples.
                    self.procs.push(ProcReport {
                        pid: pid as i64,
                        start_time: start_time.unwrap_or(0),
                        nspids: ids,
                        ppid: if pid == self.child { self.me as i64 } else { 0 },
                        mode: "?".into(),
                        figures_from: FiguresFrom::Nothing,
                        report: serde_json::Value::Null,
                        ..Default::default()
                    });
                    self.procs.len() - 1
                }
            };
            self.live.remove(&pid);
            let p = &mut self.procs[idx];
            if libc::WIFEXITED(st) {
                p.end = End::Exited;
                p.exit_status = Some(libc::WEXITSTATUS(st));
            } else {
                p.end = End::Killed;
                p.signal = Some(libc::WTERMSIG(st));
            }
            p.reaped_as_subreaper = pid != self.child;
        }
        command_status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: (u64, u64, u64) = (0x5500_0000, 0x7ffd_0000, 0x7ffd_1000);
    const NEW: (u64, u64, u64) = (0x5600_0000, 0x7ffe_0000, 0x7ffe_1000);

    /// The exec happened between the listing (old image) and the read of
    /// the program (new program). Before, the look recorded the exec for
    /// the new program and the next look recorded it again for the new
    /// image: one exec, counted twice.
    #[test]
    fn an_exec_caught_in_the_middle_of_a_look_is_counted_once() {
        let during = exec_seen("/usr/bin/sh", OLD, OLD, "/usr/bin/sleep", NEW, None);
        assert_eq!(during, ExecSeen::InProgress, "nothing decided mid-exec");
        // The next look sees it whole: one exec.
        let next = exec_seen("/usr/bin/sh", OLD, NEW, "/usr/bin/sleep", NEW, None);
        assert_eq!(next, ExecSeen::Exec);
        // And the look after that sees nothing new.
        let after = exec_seen("/usr/bin/sleep", NEW, NEW, "/usr/bin/sleep", NEW, None);
        assert_eq!(after, ExecSeen::Same);
    }

    /// The first look fell between the exec and the loader's setting up of
    /// the program's memory (the program shows, its addresses read zero):
    /// the next look, with the addresses, is no exec. Before, half the runs
    /// of a 32-bit static program under `run` said it exec'd into itself.
    #[test]
    fn a_first_look_before_the_loader_set_up_memory_is_no_exec() {
        let partial = (0x0804_8000, 0, 0);
        assert_eq!(
            exec_seen("", (0, 0, 0), partial, "/tmp/t32", partial, None),
            ExecSeen::First
        );
        assert_eq!(
            exec_seen("/tmp/t32", partial, NEW, "/tmp/t32", NEW, None),
            ExecSeen::Settled
        );
    }

    #[test]
    fn an_exec_of_the_same_program_shows_as_a_new_image() {
        assert_eq!(
            exec_seen("/usr/bin/python3", OLD, NEW, "/usr/bin/python3", NEW, None),
            ExecSeen::Exec
        );
    }

    #[test]
    fn the_first_look_and_the_commands_own_exec_are_no_execs_of_the_users() {
        assert_eq!(
            exec_seen("", (0, 0, 0), OLD, "/usr/bin/sh", OLD, None),
            ExecSeen::First
        );
        let own = Some("/usr/local/bin/ksmauto");
        assert_eq!(
            exec_seen("/usr/local/bin/ksmauto", OLD, NEW, "/usr/bin/sh", NEW, own),
            ExecSeen::First
        );
        // One that exec'd before the first look (marked, image zero) did exec.
        assert_eq!(
            exec_seen(
                "(exec'd before the first look)",
                (0, 0, 0),
                NEW,
                "/usr/bin/env",
                NEW,
                own
            ),
            ExecSeen::Exec
        );
    }
}
