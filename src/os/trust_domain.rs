//! The directory where the processes of one trust domain leave what they
//! saw of their own memory for each other
//! (`/dev/shm/ksmauto-<euid>-<permitted capabilities, hex>`): the processes
//! that could read each other's memory anyway (same user, same
//! capabilities; the caller checks the rest: dumpable, one identity, no
//! Yama restriction). Used by content sightings (`core::paying::sightings`).
//!
//! Created mode 0700 by the first process that needs it, and used only
//! when it is a directory (never a symlink) owned by the effective user
//! with no access for group or others: one another user made first (in the
//! sticky, world-writable `/dev/shm`) is never written into nor read. A
//! file is written whole under a temporary name (0600, `O_EXCL`,
//! `O_NOFOLLOW`) and renamed over its final name, so a reader never sees
//! half of one; a reader takes only regular files of the same owner
//! modified recently enough, and removes only those whose writer the
//! caller says is gone.
//!
//! Never allocates (the caller lends every buffer); every descriptor but
//! the directory's is closed before the call that opened it returns, and
//! the directory's lives only as long as the [`TrustDomainDir`] (one round
//! on the library's thread, whose descriptor table is its own).

use super::sys::{self, Errno};
use core::ffi::CStr;

const PREFIX: &[u8] = b"/dev/shm/ksmauto-";
/// Directory entries read in one call at the most (a directory that keeps
/// changing under the read cannot keep a round in it).
const MOST_ENTRIES: usize = 4096;

/// The open directory of this process's trust domain.
pub struct TrustDomainDir {
    fd: i32,
    euid: u32,
}

/// When the directory last changed (a file added, replaced or removed).
pub type Stamp = (i64, i64);

/// Whether the other processes of this trust domain could read this
/// process's memory anyway (through `/proc/PID/mem`), which sharing
/// sightings with them must not go beyond: it is dumpable (it did not ask
/// to keep its memory from its own user's other processes), its real,
/// effective and saved IDs are one (no other user's ID to return to), and
/// no Yama restriction keeps same-user processes apart (`ptrace_scope` 0,
/// or no Yama; read once).
pub fn members_may_read_this_memory() -> bool {
    sys::dumpable() && sys::one_identity() && yama_allows()
}

fn yama_allows() -> bool {
    use core::sync::atomic::{AtomicU8, Ordering::Relaxed};
    static ALLOWS: AtomicU8 = AtomicU8::new(0);
    match ALLOWS.load(Relaxed) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    let mut buf = [0u8; 8];
    let allows = match sys::read_file(b"/proc/sys/kernel/yama/ptrace_scope\0", &mut buf) {
        Ok(n) => buf[..n].first() == Some(&b'0'),
        Err(e) => e == libc::ENOENT,
    };
    ALLOWS.store(if allows { 1 } else { 2 }, Relaxed);
    allows
}

/// Whether `open` failed for good (the directory is not safely ours) or
/// for now (no memory, no descriptor: another round may try again).
pub fn failed_for_good(e: Errno) -> bool {
    matches!(e, libc::EPERM | libc::ELOOP | libc::ENOTDIR | libc::EACCES | libc::EROFS | libc::ENOENT)
}

fn push_number(path: &mut [u8], at: &mut usize, mut n: u64, radix: u64) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b"0123456789abcdef"[(n % radix) as usize];
        len += 1;
        n /= radix;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        path[*at + i] = digits[len - 1 - i];
    }
    *at += len;
}

impl TrustDomainDir {
    /// Opens the directory of this trust domain, creating it if `create`
    /// (and it does not exist); `Err(EPERM)` when it is not safely ours.
    pub fn open(create: bool) -> Result<TrustDomainDir, Errno> {
        let euid = sys::geteuid();
        let capabilities = sys::permitted_capabilities().ok_or(libc::EPERM)?;
        let mut path = [0u8; 64];
        path[..PREFIX.len()].copy_from_slice(PREFIX);
        let mut at = PREFIX.len();
        push_number(&mut path, &mut at, euid as u64, 10);
        path[at] = b'-';
        at += 1;
        push_number(&mut path, &mut at, capabilities, 16);
        let path = sys::c_path(&path)?;
        if create {
            match sys::mkdir_at(libc::AT_FDCWD, path, 0o700) {
                Ok(()) | Err(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
        }
        let fd = sys::open_at(
            libc::AT_FDCWD,
            path,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?;
        let dir = TrustDomainDir { fd, euid };
        let st = sys::fstat(fd)?;
        let is_dir = st.mode & libc::S_IFMT == libc::S_IFDIR;
        if !is_dir || st.uid != euid || st.mode & 0o077 != 0 {
            return Err(libc::EPERM);
        }
        Ok(dir)
    }

    /// When the directory last changed.
    pub fn stamp(&self) -> Option<Stamp> {
        sys::fstat(self.fd).ok().map(|st| (st.mtime_s, st.mtime_ns))
    }

    /// Writes the file `name` whole: `write` fills the new file (a
    /// descriptor open for writing), which then replaces `name`.
    pub fn publish(
        &self,
        name: &CStr,
        temporary: &CStr,
        write: impl FnOnce(i32) -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        // A temporary left by a process that died while writing (the pid
        // reused since) is ours to replace.
        let _ = sys::unlink_at(self.fd, temporary);
        let fd = sys::open_at(
            self.fd,
            temporary,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o600,
        )?;
        let written = write(fd);
        sys::close(fd);
        match written.and_then(|()| sys::rename_at(self.fd, temporary, name)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = sys::unlink_at(self.fd, temporary);
                Err(e)
            }
        }
    }

    /// Removes the file `name` (this process's, at its end).
    pub fn remove(&self, name: &CStr) {
        let _ = sys::unlink_at(self.fd, name);
    }

    /// Reads every file but `skip` and temporaries (names starting with
    /// `.`) that is a regular file of this user modified in the last
    /// `max_age_s` seconds, `chunk` at a time: `read(offset, bytes)`, where
    /// offset 0 starts a file; `read` returns whether it wants more of
    /// the directory. Files (temporaries too) `stale` says are stale
    /// (their writer is gone) are removed.
    pub fn for_each_file(
        &self,
        skip: &CStr,
        entries: &mut [u8],
        chunk: &mut [u8],
        max_age_s: i64,
        stale: impl Fn(&CStr) -> bool,
        mut read: impl FnMut(u64, &[u8]) -> bool,
    ) {
        if sys::rewind(self.fd).is_err() {
            return;
        }
        let now = sys::realtime_s();
        let mut seen = 0;
        while seen < MOST_ENTRIES {
            let n = match sys::directory_entries(self.fd, entries) {
                Ok(0) | Err(_) => return,
                Ok(n) => n.min(entries.len()),
            };
            let mut at = 0;
            // struct linux_dirent64: ino (8), off (8), reclen (2), type (1),
            // the name from byte 19 up to its NUL.
            while at + 20 <= n {
                let reclen = u16::from_ne_bytes([entries[at + 16], entries[at + 17]]) as usize;
                if reclen < 20 || at + reclen > n {
                    return;
                }
                let name_bytes = &entries[at + 19..at + reclen];
                at += reclen;
                seen += 1;
                let Ok(name) = CStr::from_bytes_until_nul(name_bytes) else {
                    continue;
                };
                if name == skip || name == c"." || name == c".." {
                    continue;
                }
                if stale(name) {
                    self.remove_if_ours(name);
                    continue;
                }
                if name.to_bytes().first() == Some(&b'.') {
                    continue;
                }
                if !self.read_one(name, chunk, now, max_age_s, &mut read) {
                    return;
                }
            }
        }
    }

    /// Removes `name` if it is a regular file of this user.
    fn remove_if_ours(&self, name: &CStr) {
        match sys::stat_at(self.fd, name, libc::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.is_regular() && st.uid == self.euid => {
                let _ = sys::unlink_at(self.fd, name);
            }
            _ => {}
        }
    }

    /// Reads one file (if it is one to read); whether to go on.
    fn read_one(
        &self,
        name: &CStr,
        chunk: &mut [u8],
        now: i64,
        max_age_s: i64,
        read: &mut impl FnMut(u64, &[u8]) -> bool,
    ) -> bool {
        let Ok(fd) = sys::open_at(
            self.fd,
            name,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
            0,
        ) else {
            return true;
        };
        let mut more = true;
        match sys::fstat(fd) {
            // Old files are left alone: their writer may live on, and
            // write again.
            Ok(st) if st.is_regular() && st.uid == self.euid && now.saturating_sub(st.mtime_s) <= max_age_s => {
                let mut offset = 0u64;
                while let Ok(n) = sys::read(fd, chunk) {
                    if n == 0 {
                        break;
                    }
                    more = read(offset, &chunk[..n]);
                    if !more {
                        break;
                    }
                    offset += n as u64;
                }
            }
            _ => {}
        }
        sys::close(fd);
        more
    }
}

impl Drop for TrustDomainDir {
    fn drop(&mut self) {
        sys::close(self.fd);
    }
}
