//! Files: paths, open/read/write/close, stat, readlink, directory entries,
//! and the checks an `exec` of a file makes (permission, set-ID, capabilities).

use super::{prctl, Errno};
use core::ffi::CStr;

/// `path` up to its first NUL byte, as the kernel reads a path; `Err(EINVAL)`
/// when it has none (the kernel would read on past the buffer). For paths
/// built in a buffer; a constant is a `c"..."` literal.
pub fn c_path(path: &[u8]) -> Result<&CStr, Errno> {
    CStr::from_bytes_until_nul(path).map_err(|_| libc::EINVAL)
}

/// `open(path, flags | O_CLOEXEC, mode)`; `path` ends at its first NUL
/// byte, `Err(EINVAL)` without one (checked in every build: the kernel
/// must never read past the slice).
pub fn open(path: &[u8], flags: i32, mode: u32) -> Result<i32, Errno> {
    open_at(libc::AT_FDCWD, c_path(path)?, flags, mode)
}

/// `openat(dirfd, path, flags | O_CLOEXEC, mode)`.
pub fn open_at(dirfd: i32, path: &CStr, flags: i32, mode: u32) -> Result<i32, Errno> {
    // SAFETY: openat reads `path` up to its NUL, which `&CStr` guarantees is
    // inside the borrowed string, and writes no memory of ours; a bad
    // `dirfd` is an error, not undefined behaviour.
    unsafe {
        syscall!(
            libc::SYS_openat,
            dirfd as isize as usize,
            path.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode
        )
        .map(|fd| fd as i32)
    }
}

/// `openat(dirfd, path, flags)` resolving no magic link (`openat2` with
/// `RESOLVE_NO_MAGICLINKS`: `/proc/PID/fd/N`, `/proc/PID/cwd`, `/proc/PID/exe`
/// and the like fail with `ELOOP`). `ENOSYS` before Linux 5.6.
pub fn open_at_without_magic_links(dirfd: i32, path: &CStr, flags: i32) -> Result<i32, Errno> {
    // struct open_how: flags, mode, resolve (the kernel's own layout).
    let how: [u64; 3] = [
        (flags | libc::O_CLOEXEC) as u32 as u64,
        0,
        libc::RESOLVE_NO_MAGICLINKS,
    ];
    // SAFETY: openat2 reads `path` up to the NUL `&CStr` guarantees and
    // `size_of_val(&how)` bytes of the local `how`, and writes nothing of
    // ours.
    unsafe {
        syscall!(
            libc::SYS_openat2,
            dirfd as isize as usize,
            path.as_ptr(),
            how.as_ptr(),
            core::mem::size_of_val(&how)
        )
        .map(|fd| fd as i32)
    }
}

/// `readlink(path)` into `out`; the bytes written.
pub fn readlink(path: &CStr, out: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: readlinkat reads `path` up to its NUL (inside the `&CStr`) and
    // writes at most `out.len()` bytes into `out`, which we borrow mutably.
    unsafe {
        syscall!(
            libc::SYS_readlinkat,
            libc::AT_FDCWD as isize as usize,
            path.as_ptr(),
            out.as_mut_ptr(),
            out.len()
        )
    }
}

pub fn pread(fd: i32, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
    loop {
        // SAFETY: pread64 writes at most `buf.len()` bytes into `buf`, which
        // we borrow mutably.
        match unsafe { syscall!(libc::SYS_pread64, fd, buf.as_mut_ptr(), buf.len(), offset) } {
            Err(libc::EINTR) => continue,
            other => return other,
        }
    }
}

/// Whether the file open as `fd` (any descriptor, `O_PATH` too) may be
/// executed with our effective IDs, as `exec` judges it (execute permission,
/// not on a `noexec` mount): `faccessat2(fd, "", X_OK, AT_EACCESS |
/// AT_EMPTY_PATH)`, Linux 5.8+ (`ENOSYS` before).
pub fn exec_permitted(fd: i32) -> Result<(), Errno> {
    // SAFETY: faccessat2 reads the static empty C string and writes nothing.
    unsafe {
        syscall!(
            libc::SYS_faccessat2,
            fd as isize as usize,
            c"".as_ptr(),
            libc::X_OK,
            libc::AT_EACCESS | libc::AT_EMPTY_PATH
        )
        .map(|_| ())
    }
}

/// Whether the kernel ignores set-user-ID and set-group-ID bits on an
/// `exec` of the file open as `fd`: its mount is `nosuid` (`fstatfs`), or
/// this thread has `no_new_privs`. `false` where that cannot be asked.
pub fn exec_ignores_set_ids(fd: i32) -> bool {
    const PR_GET_NO_NEW_PRIVS: i32 = 39;
    const ST_NOSUID: u64 = 2;
    // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointer and changes nothing; the
    // other arguments must be 0, and are.
    if unsafe { prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) } == Ok(1) {
        return true;
    }
    filesystem_of(fd).is_ok_and(|fs| fs[10] & ST_NOSUID != 0)
}

/// `fstatfs(fd)` as words: struct statfs of both our ABIs is eleven 64-bit
/// words (`f_type` first, `f_flags` the eleventh), then spares.
fn filesystem_of(fd: i32) -> Result<[u64; 16], Errno> {
    let mut fs = [0u64; 16];
    // SAFETY: fstatfs writes one `struct statfs` (120 bytes on both our
    // ABIs) into `fs`, which has 128.
    unsafe { syscall!(libc::SYS_fstatfs, fd, fs.as_mut_ptr()) }.map(|_| fs)
}

/// The type (magic number) of the file system `fd` is on.
pub fn filesystem_type(fd: i32) -> Result<u64, Errno> {
    filesystem_of(fd).map(|fs| fs[0])
}

/// `getdents64(fd)` into `buf`: the bytes of directory entries written (0
/// at the end of the directory).
pub fn directory_entries(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: getdents64 writes at most `buf.len()` bytes into `buf`, which
    // we borrow mutably.
    unsafe { syscall!(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) }
}

/// Reads all of the file `name` in directory `dir` into `buf`,
/// non-blocking; the bytes read.
pub fn read_file_at(dir: i32, name: &CStr, buf: &mut [u8]) -> Result<usize, Errno> {
    let fd = open_at(
        dir,
        name,
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
        0,
    )?;
    let mut filled = 0;
    while filled < buf.len() {
        match read(fd, &mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => {
                close(fd);
                return Err(e);
            }
        }
    }
    close(fd);
    Ok(filled)
}

pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    loop {
        // SAFETY: read writes at most `buf.len()` bytes into `buf`, which we
        // borrow mutably.
        match unsafe { syscall!(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) } {
            Err(libc::EINTR) => continue,
            other => return other,
        }
    }
}

/// Writes all of `buf`, retrying short writes and EINTR.
pub fn write_all(fd: i32, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        // SAFETY: write reads at most `buf.len()` bytes of `buf`.
        match unsafe { syscall!(libc::SYS_write, fd, buf.as_ptr(), buf.len()) } {
            Ok(0) => return Err(libc::EIO),
            Ok(n) => buf = &buf[n..],
            Err(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `mkdirat(dirfd, path, mode)`.
pub fn mkdir_at(dirfd: i32, path: &CStr, mode: u32) -> Result<(), Errno> {
    // SAFETY: mkdirat reads `path` up to the NUL `&CStr` guarantees and
    // writes no memory of ours.
    unsafe { syscall!(libc::SYS_mkdirat, dirfd as isize as usize, path.as_ptr(), mode) }
        .map(|_| ())
}

/// `renameat(dirfd, from, dirfd, to)`: `to` replaced at once.
pub fn rename_at(dirfd: i32, from: &CStr, to: &CStr) -> Result<(), Errno> {
    // SAFETY: renameat reads both paths up to the NULs `&CStr` guarantees
    // and writes no memory of ours.
    unsafe {
        syscall!(
            libc::SYS_renameat,
            dirfd as isize as usize,
            from.as_ptr(),
            dirfd as isize as usize,
            to.as_ptr()
        )
    }
    .map(|_| ())
}

/// `unlinkat(dirfd, path, 0)`.
pub fn unlink_at(dirfd: i32, path: &CStr) -> Result<(), Errno> {
    // SAFETY: unlinkat reads `path` up to the NUL `&CStr` guarantees and
    // writes no memory of ours.
    unsafe { syscall!(libc::SYS_unlinkat, dirfd as isize as usize, path.as_ptr(), 0) }.map(|_| ())
}

/// `lseek(fd, 0, SEEK_SET)`: a directory's entries read again from the first.
pub fn rewind(fd: i32) -> Result<(), Errno> {
    // SAFETY: lseek takes plain integers.
    unsafe { syscall!(libc::SYS_lseek, fd, 0, libc::SEEK_SET) }.map(|_| ())
}

pub fn close(fd: i32) {
    // SAFETY: close takes no pointer; a descriptor that is not open is an
    // error (callers close only descriptors they opened).
    let _ = unsafe { syscall!(libc::SYS_close, fd) };
}

/// Reads a whole (small) file into `buf`; returns the bytes read.
pub fn read_file(path: &[u8], buf: &mut [u8]) -> Result<usize, Errno> {
    let fd = open(path, libc::O_RDONLY, 0)?;
    let mut filled = 0;
    while filled < buf.len() {
        match read(fd, &mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => {
                close(fd);
                return Err(e);
            }
        }
    }
    close(fd);
    Ok(filled)
}

/// What identifies an open file: the device and inode `fstat` reports, and
/// the few properties the stats file's checks need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStatus {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Names the file has (hard links).
    pub nlink: u64,
    /// Last modification, seconds since the epoch.
    pub mtime_s: i64,
    /// Its nanoseconds.
    pub mtime_ns: i64,
}

impl FileStatus {
    pub fn is_regular(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    pub fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }

    /// The same file as `other` (device and inode), whatever its name.
    pub fn same_file(&self, other: &FileStatus) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }

    /// The set-user-ID bit.
    pub fn is_set_user_id(&self) -> bool {
        self.mode & libc::S_ISUID != 0
    }

    /// The set-group-ID bit with group execute (without it, the kernel
    /// ignores the bit on `exec`: it marks mandatory locking).
    pub fn is_set_group_id(&self) -> bool {
        let both = libc::S_ISGID | libc::S_IXGRP;
        self.mode & both == both
    }
}

fn status_of(st: &libc::stat) -> FileStatus {
    FileStatus {
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
        // u64 on x86_64, u32 on aarch64.
        #[allow(clippy::unnecessary_cast)]
        nlink: st.st_nlink as u64,
        mtime_s: st.st_mtime,
        mtime_ns: st.st_mtime_nsec,
    }
}

/// `fstatat(dirfd, path, flags)` (`path` empty with `AT_EMPTY_PATH` for the
/// descriptor itself).
pub fn stat_at(dirfd: i32, path: &CStr, flags: i32) -> Result<FileStatus, Errno> {
    // SAFETY: `libc::stat` is plain integers, for which all zeros is valid.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: newfstatat reads `path` up to the NUL `&CStr` guarantees and
    // writes one `struct stat` into the local `st`.
    unsafe {
        syscall!(
            libc::SYS_newfstatat,
            dirfd as isize as usize,
            path.as_ptr(),
            &mut st as *mut libc::stat,
            flags
        )?
    };
    Ok(status_of(&st))
}

/// `fstat(fd)`.
pub fn fstat(fd: i32) -> Result<FileStatus, Errno> {
    stat_at(fd, c"", libc::AT_EMPTY_PATH)
}

/// Whether the file at `path` (symlinks followed) has file capabilities
/// (`security.capability`), which make an `exec` of it a privilege change
/// like set-user-ID does. Fails closed: only "no such attribute" or "not
/// supported here" count as none.
pub fn has_file_capabilities(path: &CStr) -> bool {
    let name = c"security.capability";
    // SAFETY: getxattr reads `path` and `name` up to the NULs their `&CStr`
    // guarantee; with size 0 it only reports the value's size, writing
    // nothing through the null buffer.
    let r = unsafe {
        syscall!(
            libc::SYS_getxattr,
            path.as_ptr(),
            name.as_ptr(),
            0usize,
            0usize
        )
    };
    !matches!(r, Err(libc::ENODATA) | Err(libc::EOPNOTSUPP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_without_nul_is_refused_not_read_past() {
        // A slice cut just before its NUL: the kernel would read on.
        let path = b"/proc/self/maps\0";
        assert_eq!(
            open(&path[..path.len() - 1], libc::O_RDONLY, 0),
            Err(libc::EINVAL)
        );
        assert_eq!(
            read_file(&path[..path.len() - 1], &mut [0u8; 8]),
            Err(libc::EINVAL)
        );
        let fd = open(path, libc::O_RDONLY, 0).expect("open /proc/self/maps");
        close(fd);
    }

    #[test]
    fn a_path_ends_at_its_first_nul_as_the_kernel_reads_it() {
        assert_eq!(c_path(b"/etc\0/passwd\0"), Ok(c"/etc"));
        assert_eq!(c_path(b""), Err(libc::EINVAL));
    }
}
