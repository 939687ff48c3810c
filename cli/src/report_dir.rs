//! The report directory of `ksmauto run`: where the library in each process
//! of the tree writes its exit report (`KSMAUTO_STATS` = `DIR/%p.json`: one
//! file per pid, one line per process that held it and reported), and the
//! reading of what is in it.
//!
//! Run as root, the directory is writable by anyone (sticky, not listable:
//! `1733`), so that a command that drops its privileges can add its report:
//! anything in it may have been planted by a process of the tree. This
//! module owns what makes that harmless. It must never follow a symbolic
//! link, open anything but a regular file (a FIFO blocks the opener, a
//! device acts), read a file that has other names (a hard link to a file
//! the tree did not write), read a file owned by a user the tree was not
//! seen running as, or read more of a file than reports can fill; each
//! entry it leaves is named in a note. It knows nothing of processes: it
//! hands out report lines, and learns which process each went to (to
//! remove a file once all of them have ended).

use crate::launch::TempDir;
use crate::util::shown;
use anyhow::Result;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Reports read from one file: one per process that held its pid during
/// the run, and a run would need billions of processes to reach this with
/// the kernel's largest `pid_max`. A file with more was written to blind
/// `run`; the rest of it is not read.
pub const MAX_REPORTS_PER_FILE: usize = 4096;
/// The longest report line read (the library's are at most 4 KiB).
pub const MAX_REPORT_BYTES: usize = 16 << 10;
/// The largest report file read: as many of the library's 4 KiB reports
/// as a file is read for.
pub const MAX_FILE_BYTES: u64 = (MAX_REPORTS_PER_FILE as u64) << 12;

/// Why an entry of the directory is not read (or not read further).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Refusal {
    Symlink,
    NotRegular,
    HardLink,
    OtherUser,
    TooLarge,
    LongLine,
    TooManyReports,
}

impl Refusal {
    /// Every refusal is for good but the owner's: the tree may be seen
    /// running as that user at a later look.
    fn is_final(self) -> bool {
        self != Refusal::OtherUser
    }

    /// The note's words, around the entries' names.
    fn words(self, names: &str) -> String {
        match self {
            Refusal::Symlink => format!("ignored {names}: a symbolic link, never followed"),
            Refusal::NotRegular => format!("ignored {names}: not a regular file"),
            Refusal::HardLink => format!(
                "ignored {names}: a hard link (a file with other names is no report the library wrote)"
            ),
            Refusal::OtherUser => format!(
                "not read {names}: owned by a user the tree was not seen running as"
            ),
            Refusal::TooLarge => format!(
                "read no further {names}: larger than {} MiB",
                MAX_FILE_BYTES >> 20
            ),
            Refusal::LongLine => format!(
                "stopped reading {names}: a line longer than {} KiB",
                MAX_REPORT_BYTES >> 10
            ),
            Refusal::TooManyReports => format!(
                "stopped reading {names}: more than {MAX_REPORTS_PER_FILE} reports in one file (the first {MAX_REPORTS_PER_FILE} were read)"
            ),
        }
    }
}

/// What is known of one entry of the directory.
#[derive(Default)]
struct ReportFile {
    /// Bytes read and handed out (whole lines only).
    read: u64,
    /// Its size when it was last read: one whose size is the same is not
    /// read again.
    size: u64,
    /// Its size at this look.
    size_now: u64,
    /// Lines handed out.
    reports: usize,
    /// The processes its reports went to.
    owners: Vec<usize>,
    refused: Option<Refusal>,
}

pub struct ReportDir {
    dir: TempDir,
    files: HashMap<OsString, ReportFile>,
}

impl ReportDir {
    /// A new private directory; run as root, one any process of the tree
    /// can add its report to (the library creates its file new, `0600`,
    /// and never follows a link) but no one else can list.
    pub fn create() -> Result<ReportDir> {
        let dir = TempDir::new("ksmauto-run")?;
        if crate::util::is_root() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o1733));
        }
        Ok(ReportDir {
            dir,
            files: HashMap::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir.0
    }

    /// The `KSMAUTO_STATS` value that has the library write here.
    pub fn stats_pattern(&self) -> PathBuf {
        self.path().join("%p.json")
    }

    /// Hands each report line written since the last look to `deliver`,
    /// which says which process it went to (`None`: to none). Only files
    /// owned by root or by one of `users` are read; a file whose size did
    /// not change is not read again, so each look reads only what is new.
    pub fn read_new(
        &mut self,
        users: &HashSet<u32>,
        mut deliver: impl FnMut(&str) -> Option<usize>,
    ) {
        let Ok(entries) = std::fs::read_dir(&self.dir.0) else {
            return;
        };
        for e in entries.flatten() {
            let f = self.files.entry(e.file_name()).or_default();
            if f.refused.is_some_and(Refusal::is_final) {
                continue;
            }
            // The entry itself, never what a link names.
            let Ok(meta) = e.metadata() else {
                continue;
            };
            f.size_now = meta.len();
            f.refused = admit(&meta, users).err();
            if f.refused.is_some() || f.size == meta.len() {
                continue;
            }
            match open_checked(&e.path(), users) {
                Ok(Some((file, meta))) => read_lines(&file, &meta, f, &mut deliver),
                Ok(None) => {}
                Err(refused) => f.refused = Some(refused),
            }
        }
    }

    /// Removes each file read whole whose reports all went to processes
    /// that have ended (`ended`): no one appends to it any more (a new
    /// holder of the pid starts a new file).
    pub fn remove_finished(&mut self, ended: impl Fn(usize) -> bool) {
        let dir = &self.dir.0;
        self.files.retain(|name, f| {
            let finished = f.refused.is_none()
                && f.read == f.size_now
                && f.size == f.size_now
                && !f.owners.is_empty()
                && f.owners.iter().all(|&i| ended(i));
            !(finished && std::fs::remove_file(dir.join(name)).is_ok())
        });
    }

    /// One note for each reason entries were left, with their names.
    pub fn notes(&self) -> Vec<String> {
        let mut by_reason: BTreeMap<Refusal, Vec<String>> = BTreeMap::new();
        for (name, f) in &self.files {
            if let Some(r) = f.refused {
                by_reason
                    .entry(r)
                    .or_default()
                    .push(shown(&name.to_string_lossy()));
            }
        }
        by_reason
            .into_iter()
            .map(|(r, mut names)| {
                names.sort();
                const SHOWN: usize = 5;
                let mut list = names[..names.len().min(SHOWN)].join(", ");
                if names.len() > SHOWN {
                    list.push_str(&format!(" and {} more", names.len() - SHOWN));
                }
                format!("report directory: {}", r.words(&list))
            })
            .collect()
    }
}

/// Whether an entry (its `lstat`, or `fstat` of what was opened) may be a
/// report file: a regular file with no other name, owned by root or by a
/// user of the tree, no larger than reports fill.
fn admit(meta: &Metadata, users: &HashSet<u32>) -> Result<(), Refusal> {
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(Refusal::Symlink);
    }
    if !kind.is_file() {
        return Err(Refusal::NotRegular);
    }
    // The library creates its file new: one with other names was linked
    // here, e.g. to root's file, which the owner rule lets through.
    if meta.nlink() != 1 {
        return Err(Refusal::HardLink);
    }
    if meta.uid() != 0 && !users.contains(&meta.uid()) {
        return Err(Refusal::OtherUser);
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(Refusal::TooLarge);
    }
    Ok(())
}

/// Opens a report file for reading without opening anything else: the
/// name is first opened as a path only (`O_PATH | O_NOFOLLOW`: a link is
/// not followed, a FIFO or device is not opened), checked on that
/// descriptor, and only then is that very file opened for reading,
/// through `/proc/self/fd` (non-blocking, no controlling terminal).
/// `Ok(None)`: it went away (or cannot be opened) at this look.
fn open_checked(path: &Path, users: &HashSet<u32>) -> Result<Option<(File, Metadata)>, Refusal> {
    let Ok(handle) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
    else {
        return Ok(None);
    };
    let Ok(meta) = handle.metadata() else {
        return Ok(None);
    };
    admit(&meta, users)?;
    use std::os::fd::AsRawFd;
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
    else {
        return Ok(None);
    };
    match file.metadata() {
        Ok(m) if (m.dev(), m.ino()) == (meta.dev(), meta.ino()) => {
            admit(&m, users)?;
            Ok(Some((file, m)))
        }
        _ => Ok(None),
    }
}

/// Reads what `f` has not read of `file` (up to the caps) and hands out
/// its whole lines; a line still being written is read at a later look.
fn read_lines(
    file: &File,
    meta: &Metadata,
    f: &mut ReportFile,
    deliver: &mut impl FnMut(&str) -> Option<usize>,
) {
    let end = meta.len().min(MAX_FILE_BYTES);
    let mut buf = vec![0u8; end.saturating_sub(f.read) as usize];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], f.read + got as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    buf.truncate(got);
    f.size = meta.len();
    let mut rest = &buf[..];
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        if nl > MAX_REPORT_BYTES {
            f.refused = Some(Refusal::LongLine);
            return;
        }
        if f.reports == MAX_REPORTS_PER_FILE {
            f.refused = Some(Refusal::TooManyReports);
            return;
        }
        f.reports += 1;
        f.read += nl as u64 + 1;
        if let Some(i) = deliver(&String::from_utf8_lossy(&rest[..nl])) {
            f.owners.push(i);
        }
        rest = &rest[nl + 1..];
    }
    if rest.len() > MAX_REPORT_BYTES {
        f.refused = Some(Refusal::LongLine);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(name: &str, bytes: &[u8]) -> ReportDir {
        let d = ReportDir::create().unwrap();
        std::fs::write(d.path().join(name), bytes).unwrap();
        d
    }

    fn lines_of(d: &mut ReportDir) -> Vec<String> {
        let mut got = vec![];
        let users = [unsafe { libc::geteuid() }].into_iter().collect();
        d.read_new(&users, |l| {
            got.push(l.to_string());
            Some(got.len() - 1)
        });
        got
    }

    #[test]
    fn whole_lines_are_handed_out_once_and_a_partial_one_later() {
        let mut d = dir_with("1.json", b"{\"a\":1}\n{\"b\":");
        assert_eq!(lines_of(&mut d), ["{\"a\":1}"]);
        assert!(
            lines_of(&mut d).is_empty(),
            "an unchanged file is not read again"
        );
        use std::io::Write;
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.path().join("1.json"))
            .unwrap();
        f.write_all(b"2}\n").unwrap();
        assert_eq!(lines_of(&mut d), ["{\"b\":2}"]);
        assert!(d.notes().is_empty(), "{:?}", d.notes());
    }

    #[test]
    fn a_file_gives_at_most_the_cap_of_reports_and_says_so() {
        let text = "{}\n".repeat(MAX_REPORTS_PER_FILE + 10);
        let mut d = dir_with("2.json", text.as_bytes());
        assert_eq!(lines_of(&mut d).len(), MAX_REPORTS_PER_FILE);
        assert!(lines_of(&mut d).is_empty());
        let notes = d.notes().join("\n");
        assert!(
            notes.contains("2.json") && notes.contains("more than"),
            "{notes}"
        );
    }

    #[test]
    fn a_line_longer_than_any_report_ends_the_reading_of_its_file() {
        let mut text = b"{}\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_REPORT_BYTES + 1));
        let mut d = dir_with("3.json", &text);
        assert_eq!(lines_of(&mut d), ["{}"]);
        assert!(
            d.notes().join("").contains("a line longer than"),
            "{:?}",
            d.notes()
        );
    }

    #[test]
    fn a_file_read_whole_whose_processes_ended_is_removed() {
        let mut d = dir_with("4.json", b"{}\n");
        assert_eq!(lines_of(&mut d).len(), 1);
        d.remove_finished(|_| false);
        assert!(d.path().join("4.json").exists(), "its process still runs");
        d.remove_finished(|_| true);
        assert!(!d.path().join("4.json").exists());
    }
}
