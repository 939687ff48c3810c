//! A descriptor table of the calling thread's own, empty, so a thread
//! beside the program's never takes a number the program's `open` expects.

use super::{close, directory_entries, open, Errno};

/// Gives the calling thread a descriptor table of its own, empty (on
/// `Err`, it may hold copies of the program's descriptors: the thread
/// must end soon), for a
/// thread that runs beside the program's: `open` gives the lowest free
/// number, and one the thread took in the shared table, even for the
/// moment of a read, would be one the program's own `open` then did not
/// get (a daemon reopening 0, 1, 2). `close_range(CLOSE_RANGE_UNSHARE)`
/// (Linux 5.9) copies none of the program's descriptors; before it,
/// `unshare(CLONE_FILES)` copies them all and each is closed in the copy
/// (closing there releases no lock of the program's: POSIX locks belong
/// to the table that took them).
pub fn own_empty_descriptor_table() -> Result<(), Errno> {
    const CLOSE_RANGE_UNSHARE: usize = 1 << 1;
    // SAFETY: close_range with CLOSE_RANGE_UNSHARE takes plain integers and
    // changes only the calling thread's own (new) descriptor table.
    match unsafe { syscall!(libc::SYS_close_range, 0, u32::MAX, CLOSE_RANGE_UNSHARE) } {
        Ok(_) => return Ok(()),
        Err(libc::ENOSYS) | Err(libc::EINVAL) => {}
        Err(e) => return Err(e),
    }
    // SAFETY: unshare(CLONE_FILES) takes a flag word and gives only the
    // calling thread a copy of the table; the program's stays as it is.
    unsafe { syscall!(libc::SYS_unshare, libc::CLONE_FILES) }?;
    close_all_descriptors()
}

/// Closes every descriptor of the calling thread's table, as listed in
/// `/proc/thread-self/fd` (for kernels without `close_range`).
fn close_all_descriptors() -> Result<(), Errno> {
    let open_list = || {
        open(
            b"/proc/thread-self/fd\0",
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
    };
    loop {
        let dir = match open_list() {
            // A full table (the program's, copied): any number frees one.
            Err(libc::EMFILE) => {
                close(0);
                open_list()?
            }
            other => other?,
        };
        let mut closed = 0;
        let mut buf = [0u8; 1024];
        while let Ok(n @ 1..) = directory_entries(dir, &mut buf) {
            // struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name.
            let mut at = 0;
            while at + 19 < n {
                let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
                let name = &buf[at + 19..(at + reclen).min(n)];
                let digits = name.iter().take_while(|b| b.is_ascii_digit());
                let fd = digits.fold(0i64, |v, &b| v * 10 + (b - b'0') as i64);
                if name.first().is_some_and(u8::is_ascii_digit) && fd != dir as i64 {
                    close(fd as i32);
                    closed += 1;
                }
                at += reclen.max(1);
            }
        }
        close(dir);
        if closed == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::sys::fstat;

    /// Descriptors listed in the calling thread's table.
    fn listed() -> usize {
        std::fs::read_dir("/proc/thread-self/fd").unwrap().count()
    }

    /// Both ways to an empty table of the thread's own (the one kernels
    /// before 5.9 take, and `close_range`'s) leave the process's table as
    /// it was.
    #[test]
    fn a_thread_gets_an_empty_table_of_its_own() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let before = listed();
        for old_way in [true, false] {
            let emptied = std::thread::spawn(move || {
                if old_way {
                    // SAFETY: unshare(CLONE_FILES) in this test thread touches only its own table.
                    unsafe { syscall!(libc::SYS_unshare, libc::CLONE_FILES) }.unwrap();
                    close_all_descriptors().unwrap();
                } else {
                    own_empty_descriptor_table().unwrap();
                }
                // read_dir's own descriptor is the one listed.
                (listed(), fstat(fd).is_err())
            })
            .join()
            .unwrap();
            assert_eq!(emptied, (1, true), "old way {old_way}");
            assert!(fstat(fd).is_ok() && listed() == before);
        }
    }

    /// The way before `close_range` with a full table (no number free for
    /// the listing itself): it still empties the copy. In a child process,
    /// whose descriptor limit it lowers to what it has open.
    #[test]
    fn a_full_table_is_emptied_the_old_way_too() {
        // SAFETY: the child only makes system calls and _exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let highest = std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
                .max()
                .unwrap();
            let limit = libc::rlimit {
                rlim_cur: highest + 1,
                rlim_max: highest + 1,
            };
            // SAFETY: `limit` is a valid rlimit on the stack.
            let limited = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0;
            // Every number below the limit taken (the gaps with /dev/null).
            while open(b"/dev/null\0", libc::O_RDONLY, 0).is_ok() {}
            let full = limited && open(b"/dev/null\0", libc::O_RDONLY, 0) == Err(libc::EMFILE);
            // SAFETY: unshare(CLONE_FILES) in this child touches only its own table.
            let emptied = unsafe { syscall!(libc::SYS_unshare, libc::CLONE_FILES) }.is_ok()
                && close_all_descriptors().is_ok()
                && fstat(0).is_err()
                && fstat(1).is_err();
            // SAFETY: _exit ends the forked child without running the parent's handlers.
            unsafe {
                libc::_exit(if !full {
                    2
                } else if emptied {
                    0
                } else {
                    1
                })
            };
        }
        let mut status = 0;
        // SAFETY: `status` is a valid int on the stack; `child` is ours.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "2: table not full; 1: not emptied"
        );
    }
}
