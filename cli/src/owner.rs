//! Who a process belongs to: its real uid and that user's name, its cgroup
//! path, and the container that path is in — the trust domains KSM merges
//! across, named the same way by `status` and `estimate`. Reads
//! `/proc/PID/{status,cgroup}` and `/etc/passwd`; decides nothing.

use crate::util::*;
use ksmauto_contract::proc;
use std::collections::BTreeMap;

/// Real uid from `/proc/PID/status` (whose `Name:` line is the process's
/// own bytes).
pub fn uid_of(pid: i32) -> Option<u32> {
    let s = read_proc(format!("/proc/{pid}/status")).ok()?;
    let real = proc::words(proc::status_value(&s, b"Uid")?).next()?;
    u32::try_from(proc::parse_dec(real)?).ok()
}

/// uid → name from `/etc/passwd` (no NSS: a uid without a line shows as its
/// number). Read as bytes: one name that is not UTF-8 must not lose the others.
pub fn user_names() -> BTreeMap<u32, String> {
    let mut names = BTreeMap::new();
    for l in std::fs::read("/etc/passwd")
        .unwrap_or_default()
        .split(|&b| b == b'\n')
    {
        let mut f = l.split(|&b| b == b':');
        let (Some(name), Some(uid)) = (f.next(), f.nth(1).and_then(proc::parse_dec)) else {
            continue;
        };
        if let Ok(uid) = u32::try_from(uid) {
            names.entry(uid).or_insert_with(|| as_text(name));
        }
    }
    names
}

/// The cgroup path of a process; `?` when unreadable.
pub fn cgroup_of(pid: i32) -> String {
    read_proc(format!("/proc/{pid}/cgroup"))
        .map(|s| cgroup_in(&s))
        .unwrap_or_else(|_| "?".into())
}

/// The v1 hierarchies that place a process by what it is (a service, a
/// container), most telling first: systemd's own, then the controllers a
/// container runtime always sets.
const V1_PREFERRED: [&str; 4] = ["name=systemd", "pids", "memory", "cpu"];

/// The path of `/proc/PID/cgroup` text: the unified (v2) path, unless it
/// is `/` or missing — a cgroup v1 or hybrid host, where every process is
/// in the unified root and the real placement (`/docker/ID`,
/// `/system.slice/…`) is in the v1 hierarchies: then the first of
/// [`V1_PREFERRED`] that is not `/`.
/// The path's bytes (a cgroup is a directory, named as its maker likes)
/// become text by [`as_text`].
fn cgroup_in(text: &[u8]) -> String {
    let lines = || text.split(|&b| b == b'\n');
    let unified = lines().find_map(|l| l.strip_prefix(b"0::"));
    if let Some(p) = unified.filter(|p| *p != b"/") {
        return as_text(p);
    }
    // `ID:controller[,controller…]:path` (the path may hold `:` too)
    let v1: Vec<(&[u8], &[u8])> = lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, |&b| b == b':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            Some((controllers, path))
        })
        .filter(|(controllers, _)| !controllers.is_empty())
        .collect();
    for want in V1_PREFERRED {
        if let Some((_, path)) = v1.iter().find(|(controllers, path)| {
            *path != b"/"
                && controllers
                    .split(|&b| b == b',')
                    .any(|c| c == want.as_bytes())
        }) {
            return as_text(path);
        }
    }
    as_text(unified.unwrap_or(b"/"))
}

/// The container a cgroup path belongs to: the path up to its container
/// scope (`docker-*.scope`, `cri-containerd-*.scope`, `crio-*.scope`,
/// `libpod-*.scope`, `/docker/ID`, `lxc.payload.*`, `machine-*.scope`), or up
/// to the pod under `/kubepods` (the containers of one pod are one domain).
pub fn container_of(cgroup: &str) -> Option<String> {
    let segs: Vec<&str> = cgroup.split('/').filter(|s| !s.is_empty()).collect();
    let upto = |i: usize| format!("/{}", segs[..=i].join("/"));
    if segs.first().is_some_and(|s| s.starts_with("kubepods")) {
        for (i, s) in segs.iter().enumerate() {
            if s.starts_with("pod") || s.contains("-pod") {
                return Some(upto(i));
            }
        }
        return Some(upto(0));
    }
    for (i, s) in segs.iter().enumerate() {
        let scope = s.ends_with(".scope")
            && ["docker-", "cri-containerd-", "crio-", "libpod-", "machine-"]
                .iter()
                .any(|p| s.starts_with(p));
        let docker_v1 = i > 0 && segs[i - 1] == "docker";
        if scope || docker_v1 || s.starts_with("lxc.payload.") {
            return Some(upto(i));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{cgroup_in, container_of};

    #[test]
    fn the_cgroup_is_the_unified_path_else_the_telling_v1_one() {
        let v2 = b"0::/system.slice/docker-ab.scope\n";
        assert_eq!(cgroup_in(v2), "/system.slice/docker-ab.scope");
        let hybrid = b"9:name=systemd:/docker/ab\n8:pids:/docker/ab\n4:memory:/docker/ab\n0::/\n";
        assert_eq!(cgroup_in(hybrid), "/docker/ab");
        // name=systemd at the root: the next preferred controller.
        let v1 = b"12:name=systemd:/\n3:cpu,cpuacct:/kubepods/pod1/c\n2:memory:/mem\n";
        assert_eq!(cgroup_in(v1), "/mem");
        let v1 = b"12:name=systemd:/\n3:cpu,cpuacct:/kubepods/pod1/c\n1:blkio:/b\n";
        assert_eq!(cgroup_in(v1), "/kubepods/pod1/c");
        assert_eq!(cgroup_in(b"9:name=systemd:/\n8:pids:/\n0::/\n"), "/");
        assert_eq!(cgroup_in(b""), "/");
        // A cgroup named in bytes that are not UTF-8 is still a path (and
        // still a container's).
        let named = b"0::/system.slice/docker-\xff.scope/x:y\n";
        assert_eq!(cgroup_in(named), r"/system.slice/docker-\xff.scope/x:y");
        assert_eq!(
            container_of(&cgroup_in(named)).as_deref(),
            Some(r"/system.slice/docker-\xff.scope")
        );
        let v1 = b"9:name=systemd:/docker/\xfe\n0::/\n";
        assert_eq!(cgroup_in(v1), r"/docker/\xfe");
    }

    #[test]
    fn containers_are_found_in_cgroup_paths() {
        for (path, want) in [
            ("/", None),
            ("/user.slice/user-1000.slice/session-2.scope", None),
            ("/system.slice/ssh.service", None),
            (
                "/system.slice/docker-0123abcd.scope",
                Some("/system.slice/docker-0123abcd.scope"),
            ),
            ("/docker/0123abcd", Some("/docker/0123abcd")),
            (
                "/machine.slice/libpod-99.scope/container",
                Some("/machine.slice/libpod-99.scope"),
            ),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b.slice/cri-containerd-77.scope",
                Some("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b.slice"),
            ),
            ("/kubepods/besteffort/pod1a2b/77", Some("/kubepods/besteffort/pod1a2b")),
            ("/lxc.payload.web/init.scope", Some("/lxc.payload.web")),
        ] {
            assert_eq!(container_of(path).as_deref(), want, "{path}");
        }
    }
}
