//! Holds of ksmd that overlap (`ksmd hold`, `compare --hold-ksmd`, the test
//! harness, which holds through `ksmd hold`): one record of every running
//! hold, oldest first, each with the settings it found, under a lock.
//!
//! Each hold on its own saved what it found and put it back when it ended,
//! so two that overlap without nesting left ksmd changed: the later one had
//! saved the earlier one's settings and put them back last. Now the record
//! is a stack:
//! - a hold that ends as the latest puts back what it found (the state of
//!   the holds before it, or the machine's own when it is the only one);
//! - a hold that ends under later ones changes nothing (they still run) and
//!   hands what it found to the one after it, which puts it back in its
//!   place: the settings found by the first hold come back when the last
//!   ends, whatever the order;
//! - a hold that died without ending (SIGKILL) is found by its pid and
//!   start time: it is taken out by the same rules when the record is next
//!   read, so the next hold never takes its changed settings for the
//!   machine's own.
//!
//! The record of the real ksmd is in `/run/ksmauto` (root's, so only root
//! takes part: nobody else can change ksmd anyway); that of a test's sysfs
//! directory (`KSMAUTO_SYSFS_KSM`) is in that directory. This module only
//! decides what to put back and when; writing sysfs is `ksmd`'s.

use super::{restore, save, Restored, Saved, TUNABLES};
use crate::ksm::sysfs;
use crate::util::*;
use anyhow::Result;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const REAL_SYSFS: &str = "/sys/kernel/mm/ksm";
const RUN_DIR: &str = "/run/ksmauto";
/// Longer than any hold keeps the lock (a few sysfs writes), short enough
/// that a stopped holder (SIGSTOP) is reported instead of waited for.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// One running hold: its process (pid and start time, so a reused pid is
/// no holder) and the settings it found when it began.
#[derive(Clone, Debug, PartialEq)]
pub struct Holder {
    pub pid: i32,
    pub start: u64,
    pub found: Saved,
}

/// This process's hold: whether it is in the record, and what it found
/// (put back as it is if the record lost it).
pub struct Joined {
    shared: bool,
    found: Saved,
}

/// What ending a hold did.
pub enum Left {
    /// It was the latest hold (or the only one): ksmd is put back.
    PutBack(Restored),
    /// Later holds still run (these pids): nothing was written.
    StillHeld(Vec<i32>),
}

/// Takes the holder at `i` out of the stack. The latest: what it found is
/// returned, to be put back now. Any other: what it found goes to the one
/// after it (whose own finding was this one's changes), nothing to write.
fn remove(holders: &mut Vec<Holder>, i: usize) -> Option<Saved> {
    let gone = holders.remove(i);
    match holders.get_mut(i) {
        Some(next) => {
            next.found = gone.found;
            None
        }
        None => Some(gone.found),
    }
}

/// Takes out the holders that died without ending; if the latest did,
/// returns what it found, to be put back.
fn bury(holders: &mut Vec<Holder>, alive: impl Fn(&Holder) -> bool) -> Option<Saved> {
    let mut put_back = None;
    let mut i = 0;
    while i < holders.len() {
        if alive(&holders[i]) {
            i += 1;
        } else if let Some(found) = remove(holders, i) {
            put_back = Some(found);
        }
    }
    put_back
}

/// The start time of a running process (field 22 of `/proc/PID/stat`, in
/// clock ticks since boot); None if it is gone or a zombie.
fn start_time(pid: i32) -> Option<u64> {
    let text = read_proc(format!("/proc/{pid}/stat")).ok()?;
    let stat = ksmauto_contract::proc::Stat::parse(&text)?;
    if stat.state().is_none() || stat.has_ended() {
        return None;
    }
    stat.start_time()
}

fn alive(h: &Holder) -> bool {
    start_time(h.pid) == Some(h.start)
}

fn me() -> Option<(i32, u64)> {
    let pid = std::process::id() as i32;
    Some((pid, start_time(pid)?))
}

fn render(holders: &[Holder]) -> String {
    let mut o = String::from(
        "# ksmauto ksmd holds running, oldest first: pid, start time, the settings each found\n",
    );
    for h in holders {
        o.push_str(&format!("{} {}", h.pid, h.start));
        for (n, v) in &h.found {
            o.push_str(&format!(" {n}={v}"));
        }
        o.push('\n');
    }
    o
}

/// The record's holders; a line that is not one (never written by us) is
/// left out, and only names of [`TUNABLES`] are ever taken.
fn parse(text: &str) -> Vec<Holder> {
    let holder = |line: &str| -> Option<Holder> {
        let mut words = line.split_ascii_whitespace();
        let pid = words.next()?.parse().ok()?;
        let start = words.next()?.parse().ok()?;
        let mut found = Saved::new();
        for w in words {
            let (n, v) = w.split_once('=')?;
            if !TUNABLES.contains(&n) || v.is_empty() {
                return None;
            }
            found.push((n.to_string(), v.to_string()));
        }
        (!found.is_empty()).then_some(Holder { pid, start, found })
    };
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(holder)
        .collect()
}

/// The record's directory and file names: `/run/ksmauto/ksmd-holds` for
/// the real ksmd, `.ksmd-holds` in a test's sysfs directory.
fn record_path() -> (PathBuf, PathBuf) {
    let dir = sysfs();
    let real = std::fs::canonicalize(&dir).unwrap_or(dir.clone()) == Path::new(REAL_SYSFS);
    if real {
        (
            PathBuf::from(RUN_DIR),
            PathBuf::from(RUN_DIR).join("ksmd-holds"),
        )
    } else {
        (dir.clone(), dir.join(".ksmd-holds"))
    }
}

/// The record, locked (`flock` on `RECORD.lock`, released on drop or when
/// the process dies).
struct Locked {
    record: PathBuf,
    _lock: File,
}

fn open_private(path: &Path, truncate: bool) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// `/run/ksmauto`, made root's and closed to others if it is not there.
fn make_run_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let m = std::fs::symlink_metadata(dir)?;
    if !m.is_dir() || m.uid() != 0 || m.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(
            "not a directory of root's that only root may write",
        ));
    }
    Ok(())
}

/// Locks the record; None where this process cannot take part (not root,
/// or no place for the record: said on stderr).
fn lock() -> Result<Option<Locked>> {
    if !is_root() {
        return Ok(None);
    }
    let (dir, record) = record_path();
    let lock_path = record.with_extension("lock");
    let opened = if dir == Path::new(RUN_DIR) {
        make_run_dir(&dir)
    } else {
        Ok(())
    }
    .and_then(|()| open_private(&lock_path, false));
    let lock = match opened {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "ksmauto: warning: cannot record this hold of ksmd in {} ({e}): \
                 a hold that overlaps it may put back the other's settings",
                dir.display()
            );
            return Ok(None);
        }
    };
    let t0 = Instant::now();
    while unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        if t0.elapsed() > LOCK_WAIT {
            return Err(fail(
                EXIT_RUNTIME,
                format!(
                    "{} has been locked by another ksmauto for {} s (a stopped one?)",
                    lock_path.display(),
                    LOCK_WAIT.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Some(Locked {
        record,
        _lock: lock,
    }))
}

impl Locked {
    fn read(&self) -> Vec<Holder> {
        std::fs::read_to_string(&self.record)
            .map(|t| parse(&t))
            .unwrap_or_default()
    }

    /// Writes the record whole (a new file renamed over, so a crash leaves
    /// the old one or the new one); no holder: no record.
    fn write(&self, holders: &[Holder]) -> Result<()> {
        let cannot = |e: std::io::Error| {
            fail(
                EXIT_RUNTIME,
                format!("cannot write {}: {e}", self.record.display()),
            )
        };
        if holders.is_empty() {
            return match std::fs::remove_file(&self.record) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(cannot(e)),
                _ => Ok(()),
            };
        }
        let tmp = self.record.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        let mut f = open_private(&tmp, true).map_err(cannot)?;
        f.write_all(render(holders).as_bytes()).map_err(cannot)?;
        f.sync_all().map_err(cannot)?;
        std::fs::rename(&tmp, &self.record).map_err(cannot)
    }
}

/// Begins a hold: saves what ksmd has now, enters this process in the
/// record, then runs `apply` (the hold's own settings) while the record is
/// still locked, so no other hold saves ksmd halfway. If `apply` fails,
/// the hold ends at once (what it found is put back).
pub fn join(apply: impl FnOnce() -> Result<()>) -> Result<Joined> {
    let Some(locked) = lock()? else {
        let joined = Joined {
            shared: false,
            found: save()?,
        };
        apply()?;
        return Ok(joined);
    };
    let mut found = save()?;
    let mut holders = locked.read();
    if let Some((pid, start)) = me() {
        holders.push(Holder { pid, start, found });
        // A dead holder's findings go up the stack, to this one at the top.
        bury(&mut holders, alive);
        locked.write(&holders)?;
        found = holders.pop().map(|h| h.found).unwrap_or_default();
    }
    let joined = Joined {
        shared: true,
        found,
    };
    if let Err(e) = apply() {
        let _ = leave_locked(&locked, &joined);
        return Err(e);
    }
    Ok(joined)
}

/// Ends a hold (see the module doc for what it puts back).
pub fn leave(joined: &Joined) -> Result<Left> {
    if !joined.shared {
        return Ok(Left::PutBack(restore(&joined.found)?));
    }
    match lock()? {
        Some(locked) => leave_locked(&locked, joined),
        None => Ok(Left::PutBack(restore(&joined.found)?)),
    }
}

fn leave_locked(locked: &Locked, joined: &Joined) -> Result<Left> {
    let mut holders = locked.read();
    let dead_latest = bury(&mut holders, alive);
    let mine = me().and_then(|(pid, start)| {
        holders
            .iter()
            .position(|h| h.pid == pid && h.start == start)
    });
    let put_back = match mine {
        Some(i) => remove(&mut holders, i).or(dead_latest),
        // Not in the record (it was removed by hand): what it found.
        None => Some(joined.found.clone()),
    };
    let restored = put_back.map(|found| restore(&found)).transpose()?;
    locked.write(&holders)?;
    Ok(match restored {
        Some(r) => Left::PutBack(r),
        None => Left::StillHeld(holders.iter().map(|h| h.pid).collect()),
    })
}

/// The pids of the other holds running now (read without the lock: for a
/// note only).
pub fn others_running() -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_to_string(record_path().1)
        .map(|t| parse(&t))
        .unwrap_or_default()
        .into_iter()
        .filter(|h| h.pid != me && alive(h))
        .map(|h| h.pid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(pid: i32, pages: &str) -> Holder {
        Holder {
            pid,
            start: 1,
            found: vec![("pages_to_scan".into(), pages.into())],
        }
    }

    fn pages(h: &Holder) -> &str {
        &h.found[0].1
    }

    #[test]
    fn the_latest_puts_back_what_it_found_and_an_earlier_hands_it_on() {
        // Machine at 100; A found 100 and set 200; B found 200, set 300.
        let mut s = vec![holder(1, "100"), holder(2, "200")];
        // A ends first: nothing written, B will put back 100.
        assert_eq!(remove(&mut s, 0), None);
        assert_eq!((s.len(), pages(&s[0])), (1, "100"));
        assert_eq!(remove(&mut s, 0).unwrap()[0].1, "100");
        // Nested: B ends first and puts back A's 200, then A the 100.
        let mut s = vec![holder(1, "100"), holder(2, "200")];
        assert_eq!(remove(&mut s, 1).unwrap()[0].1, "200");
        assert_eq!(remove(&mut s, 0).unwrap()[0].1, "100");
    }

    #[test]
    fn dead_holders_hand_on_what_they_found() {
        // A (live) found 100; B and C died; D just joined and found C's.
        let mut s = vec![
            holder(1, "100"),
            holder(2, "200"),
            holder(3, "300"),
            holder(4, "400"),
        ];
        let live = |h: &Holder| h.pid == 1 || h.pid == 4;
        assert_eq!(bury(&mut s, live), None);
        assert_eq!(s, vec![holder(1, "100"), holder(4, "200")]);
        // The latest died: what it found is to be put back now.
        let mut s = vec![holder(1, "100"), holder(2, "200"), holder(3, "300")];
        assert_eq!(bury(&mut s, |h| h.pid == 1).unwrap()[0].1, "200");
        assert_eq!(s, vec![holder(1, "100")]);
    }

    #[test]
    fn the_record_reads_back_and_takes_only_tunables() {
        let s = vec![holder(12, "100"), holder(13, "2000")];
        assert_eq!(parse(&render(&s)), s);
        assert!(parse("1 2 pages_to_scan=1 full_scans=0\n").is_empty());
        assert!(parse("1 2 ../x=1\nx 2 run=1\n1 2\n").is_empty());
    }

    #[test]
    fn a_process_has_a_start_time_a_gone_one_none() {
        assert!(me().is_some());
        assert_eq!(start_time(i32::MAX), None);
    }
}
