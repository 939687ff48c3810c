//! The process tree below us, from `/proc/*/stat`: parent links (never
//! process groups or sessions, which a worker can leave), start times (a pid
//! is reused, a pid and its start time are not) and the addresses that
//! change with every exec. Read-only; shared by `run`, `compare` and `doctor`.

use crate::util::read_proc;
use ksmauto_contract::proc::{self, Stat};
use std::collections::HashMap;

/// One line of `/proc/PID/stat`, the fields the tree walk needs.
#[derive(Clone, Debug)]
pub struct StatLine {
    pub pid: i32,
    pub ppid: i32,
    pub state: char,
    /// Clock ticks after boot; with the pid it names one process (pids are reused).
    pub start_time: u64,
    /// Where its program's code, stack and arguments start: new with every
    /// exec (address randomization, a new stack), even of the same program.
    pub image: (u64, u64, u64),
}

pub fn stat_line(pid: i32) -> Option<StatLine> {
    stat_line_in(pid, &format!("/proc/{pid}"))
}

/// [`stat_line`] of a `/proc` directory: a process's, or one of its
/// threads' (`/proc/PID/task/TID`: its own state and start time, the
/// process's addresses).
pub fn stat_line_in(pid: i32, dir: &str) -> Option<StatLine> {
    // Bytes: the name in it is the process's own (any bytes but NUL).
    let text = read_proc(format!("{dir}/stat")).ok()?;
    let stat = Stat::parse(&text)?;
    Some(StatLine {
        pid,
        ppid: i32::try_from(stat.ppid()?).ok()?,
        state: char::from(stat.state()?),
        start_time: stat.start_time()?,
        image: stat.image(),
    })
}

/// Where to read a process whose main thread has ended (`pthread_exit`)
/// while others run: its leader lists as a zombie and `/proc/PID/` shows no
/// memory, but a living thread's `/proc/PID/task/TID/` shows the process's
/// memory, program and figures. `None` when no thread of it is alive.
pub fn living_thread(pid: i32) -> Option<StatLine> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if tid == pid {
            continue;
        }
        if let Some(l) = stat_line_in(tid, &format!("/proc/{pid}/task/{tid}")) {
            if l.state != 'Z' && l.state != 'X' {
                return Some(l);
            }
        }
    }
    None
}

/// A process's pid in every pid namespace it is in, outermost first
/// (`NSpid:` of `/proc/PID/status`; the last is the one it sees itself,
/// and reports). Just `[pid]` on a kernel without the line.
pub fn nspids(pid: i32) -> Vec<i64> {
    let status = read_proc(format!("/proc/{pid}/status")).unwrap_or_default();
    let ids: Vec<i64> = proc::status_value(&status, b"NSpid")
        .map(|v| {
            proc::words(v)
                .filter_map(|n| Some(proc::parse_dec(n)? as i64))
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() {
        vec![pid as i64]
    } else {
        ids
    }
}

/// Every process below `roots` (not the roots themselves), found by
/// following parent links in `/proc/*/stat` — never by process group or
/// session, so a worker that calls `setsid` is still found. Zombies
/// included (their state says so).
pub fn descendants_of(roots: &[i32]) -> Vec<StatLine> {
    let mut all: Vec<StatLine> = vec![];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                if let Some(l) = stat_line(pid) {
                    all.push(l);
                }
            }
        }
    }
    let mut children: HashMap<i32, Vec<usize>> = HashMap::new();
    for (i, l) in all.iter().enumerate() {
        children.entry(l.ppid).or_default().push(i);
    }
    let mut out = vec![];
    let mut todo: Vec<i32> = roots.to_vec();
    let mut seen: std::collections::HashSet<i32> = roots.iter().copied().collect();
    while let Some(p) = todo.pop() {
        for &i in children.get(&p).map(|v| v.as_slice()).unwrap_or(&[]) {
            if seen.insert(all[i].pid) {
                todo.push(all[i].pid);
                out.push(all[i].clone());
            }
        }
    }
    out.sort_by_key(|l| l.pid);
    out
}

/// Whether this process has a child (running, or ended and not yet
/// collected), asked of the kernel without collecting anything.
pub fn has_children() -> bool {
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WSTOPPED | libc::WCONTINUED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    !(rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
}
