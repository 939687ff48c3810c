//! Which processes the estimator reads: the PIDs named, or every process of
//! the host (`--all`), of some users (`--user`), in some cgroups
//! (`--cgroup`); and who each one is (user, cgroup: its trust domains).
//! Reads `/proc` as bytes: a name that is not UTF-8 never makes a process
//! vanish. Opens nothing for reading memory (that is `walk`).

use crate::owner;
use crate::util::*;
use anyhow::Result;
use ksmauto_contract::proc;
use serde::Serialize;
use std::collections::BTreeMap;

/// What the command line asked for.
#[derive(Debug, Default, Clone)]
pub struct Selection {
    pub pids: Vec<i32>,
    pub all: bool,
    /// Names or uids.
    pub users: Vec<String>,
    /// Cgroup paths, as `status` shows them or as mounted (`/sys/fs/cgroup/…`).
    pub cgroups: Vec<String>,
}

impl Selection {
    pub fn of_pids(pids: &[i32]) -> Selection {
        Selection {
            pids: pids.to_vec(),
            ..Default::default()
        }
    }

    /// Whether the host's processes are searched (not only named PIDs).
    pub fn searches_host(&self) -> bool {
        self.all || !self.users.is_empty() || !self.cgroups.is_empty()
    }
}

/// A process of the selection and its trust domains.
#[derive(Debug, Clone)]
pub struct Identity {
    pub pid: i32,
    pub comm: String,
    pub uid: u32,
    pub user: String,
    /// As `status` shows it (see `owner::cgroup_of`).
    pub cgroup: String,
    /// `RssAnon` of `/proc/PID/status`: what the walk will read, about.
    pub rss_anon_bytes: u64,
    /// Named on the command line: an error reading it fails the command.
    pub named: bool,
    /// No user memory: a named one is counted with nothing to read.
    pub kernel_thread: bool,
}

/// A process found but not read, and why.
#[derive(Serialize, Debug, Clone)]
pub struct Unreadable {
    pub pid: i32,
    pub comm: String,
    pub reason: String,
}

/// The `/proc/PID/NAME` file, as bytes.
fn proc_file(pid: i32, name: &str) -> std::io::Result<Vec<u8>> {
    read_proc(format!("/proc/{pid}/{name}"))
}

/// A kernel thread or a zombie: no user memory to read.
fn has_no_memory(pid: i32) -> bool {
    let Ok(stat) = proc_file(pid, "stat") else {
        return false;
    };
    proc::Stat::parse(&stat).is_some_and(|s| s.is_kernel_thread() || s.has_ended())
}

/// Every line's path of `/proc/PID/cgroup` (each hierarchy's placement).
fn cgroup_paths(pid: i32) -> Vec<String> {
    let Ok(text) = proc_file(pid, "cgroup") else {
        return vec![];
    };
    text.split(|&b| b == b'\n')
        .filter_map(|l| {
            let mut f = l.splitn(3, |&b| b == b':');
            let (_, _, path) = (f.next()?, f.next()?, f.next()?);
            Some(as_text(path))
        })
        .collect()
}

/// `PATH` as a cgroup path: a path under a cgroup mount (`/sys/fs/cgroup/
/// memory/docker/ID`) loses the mount point; a trailing `/` goes.
fn cgroup_wanted(path: &str) -> String {
    let mounts = as_text(&read_proc("/proc/self/mounts").unwrap_or_default());
    let mut best = "";
    for l in mounts.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        if matches!(f.get(2), Some(&"cgroup") | Some(&"cgroup2")) {
            let m = f[1];
            let under = path.strip_prefix(m).is_some_and(|r| r.starts_with('/'));
            if (under || path == m) && m.len() > best.len() {
                best = m;
            }
        }
    }
    let p = &path[best.len()..];
    let p = p.trim_end_matches('/');
    if p.is_empty() {
        "/".into()
    } else {
        p.into()
    }
}

fn in_cgroup(paths: &[String], wanted: &str) -> bool {
    paths.iter().any(|p| {
        wanted == "/" || p == wanted || p.strip_prefix(wanted).is_some_and(|r| r.starts_with('/'))
    })
}

/// `--user` values as uids: a number is one, a name is looked up in
/// `/etc/passwd` (exit 2 if unknown).
fn wanted_uids(users: &[String], names: &BTreeMap<u32, String>) -> Result<Vec<u32>> {
    users
        .iter()
        .map(|u| {
            u.parse::<u32>()
                .ok()
                .or_else(|| names.iter().find(|(_, n)| *n == u).map(|(uid, _)| *uid))
                .ok_or_else(|| fail(2, format!("--user {u}: no such user in /etc/passwd")))
        })
        .collect()
}

/// Who a process is, or `None` if it is gone (or has no uid to count it
/// under).
fn identity(pid: i32, names: &BTreeMap<u32, String>, named: bool) -> Option<Identity> {
    let status = proc_file(pid, "status").ok()?;
    let number =
        |key: &[u8]| proc::parse_dec(proc::words(proc::status_value(&status, key)?).next()?);
    let uid = u32::try_from(number(b"Uid")?).ok()?;
    Some(Identity {
        pid,
        comm: comm(pid),
        uid,
        user: names.get(&uid).cloned().unwrap_or_else(|| uid.to_string()),
        cgroup: owner::cgroup_of(pid),
        rss_anon_bytes: number(b"RssAnon").unwrap_or(0) * 1024,
        named,
        kernel_thread: is_kernel_thread(pid),
    })
}

/// The processes chosen, with those that could not be looked at.
pub struct Chosen {
    pub processes: Vec<Identity>,
    /// Kernel threads and zombies the search passed over (no user memory).
    pub without_memory: u64,
}

/// The processes of `sel`: the named PIDs first (in the order given), then
/// those the search finds (by pid). Never the estimator itself.
pub fn choose(sel: &Selection) -> Result<Chosen> {
    let names = owner::user_names();
    let mut processes = vec![];
    for &pid in &sel.pids {
        if pid <= 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(fail(EXIT_NO_PID, format!("no such process: {pid}")));
        }
        let id = identity(pid, &names, true)
            .ok_or_else(|| fail(EXIT_NO_PID, format!("no such process: {pid}")))?;
        processes.push(id);
    }
    let mut without_memory = 0;
    if sel.searches_host() {
        let uids = wanted_uids(&sel.users, &names)?;
        let cgroups: Vec<String> = sel.cgroups.iter().map(|c| cgroup_wanted(c)).collect();
        let me = std::process::id() as i32;
        let mut found: Vec<i32> = std::fs::read_dir("/proc")
            .map_err(|e| fail(EXIT_RUNTIME, format!("cannot list /proc: {e}")))?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| *pid != me && !sel.pids.contains(pid))
            .collect();
        found.sort_unstable();
        for pid in found {
            if !cgroups.is_empty() && !cgroups.iter().any(|c| in_cgroup(&cgroup_paths(pid), c)) {
                continue;
            }
            let Some(id) = identity(pid, &names, false) else {
                continue; // gone since the listing
            };
            if !uids.is_empty() && !uids.contains(&id.uid) {
                continue;
            }
            if has_no_memory(pid) {
                without_memory += 1;
                continue;
            }
            processes.push(id);
        }
    }
    Ok(Chosen {
        processes,
        without_memory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_holds_the_processes_below_it() {
        let paths = vec!["/".to_string(), "/docker/ab/x".to_string()];
        assert!(in_cgroup(&paths, "/docker/ab"));
        assert!(in_cgroup(&paths, "/docker/ab/x"));
        assert!(!in_cgroup(&paths, "/docker/a"));
        assert!(in_cgroup(&["/a".to_string()], "/"));
    }

    #[test]
    fn a_cgroup_path_under_a_mount_loses_the_mount_point() {
        // Whatever this host mounts, a path under none stays as given.
        assert_eq!(cgroup_wanted("/docker/ab/"), "/docker/ab");
        let mounts = as_text(&read_proc("/proc/self/mounts").unwrap());
        if let Some(m) = mounts.lines().find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            matches!(f.get(2), Some(&"cgroup") | Some(&"cgroup2")).then(|| f[1].to_string())
        }) {
            assert_eq!(cgroup_wanted(&format!("{m}/docker/ab")), "/docker/ab");
            assert_eq!(cgroup_wanted(&m), "/");
        }
    }
}
