//! What an `exec` is about to run, as the kernel will run it: whether it
//! changes privilege (set-user-ID, set-group-ID, file capabilities) and
//! whether it is a program that loads preload libraries built like this one
//! (a 64-bit ELF program of our machine with glibc's program interpreter),
//! a `#!` script being judged by its interpreter, up to the kernel's depth.
//!
//! Reports facts, including "could not tell": what to do about an unknown is
//! the caller's decision. Looks only at inodes and headers: a file is opened
//! through `O_PATH` and `fstat`ed first, and read (non-blocking) only if it
//! is a regular file — a FIFO or device is never opened for reading, which
//! could block or act. Small reads into stack buffers of a few hundred
//! bytes (an `exec` may be called from a signal handler); the `PATH` search
//! uses a static buffer behind a try-lock. Never allocates, never touches
//! `errno`.

use super::sys;
use crate::scratch::Scratch;

/// A fact about the target, or that it could not be found out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fact {
    Yes,
    No,
    Unknown,
}

impl Fact {
    fn from(b: bool) -> Fact {
        if b {
            Fact::Yes
        } else {
            Fact::No
        }
    }
}

/// What the kernel will run for an `exec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecTarget {
    /// Nothing runs: there is no (regular) file there, so the `exec` fails.
    pub nothing_runs: bool,
    /// Running it changes privilege (`AT_SECURE` in the new program).
    pub privileged: Fact,
    /// It loads preload libraries like this one: a dynamic ELF program of
    /// our class and machine whose program interpreter is glibc's.
    pub loads_our_preloads: Fact,
}

impl ExecTarget {
    /// Nothing could be found out.
    pub const UNKNOWN: ExecTarget = ExecTarget {
        nothing_runs: false,
        privileged: Fact::Unknown,
        loads_our_preloads: Fact::Unknown,
    };

    pub const NOTHING_RUNS: ExecTarget = ExecTarget {
        nothing_runs: true,
        privileged: Fact::No,
        loads_our_preloads: Fact::No,
    };
}

const PT_INTERP: u32 = 3;
const ELFCLASS64: u8 = 2;
#[cfg(target_arch = "x86_64")]
const OUR_MACHINE: u16 = 62; // EM_X86_64
#[cfg(target_arch = "aarch64")]
const OUR_MACHINE: u16 = 183; // EM_AARCH64
/// glibc's program interpreters are named `ld-linux-….so.N`; musl's
/// `ld-musl-…` cannot load a library linked against glibc.
const GLIBC_INTERPRETER: &[u8] = b"/ld-linux";
/// The kernel follows at most this many `#!` interpreters.
const MAX_INTERPRETERS: usize = 4;
/// The part of a file read to tell its format (BINPRM_BUF_SIZE).
const HEAD_BYTES: usize = 256;

/// What a regular file is to `exec`.
enum Format {
    Elf {
        loads_our_preloads: bool,
    },
    /// `#!`: the interpreter's path is at the buffer's start, NUL-terminated.
    Script,
    /// Anything else: `ENOEXEC`, or a `binfmt_misc` handler we cannot see.
    Other,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(w)
}

/// Reads the file's head once and tells its format.
fn format_of(fd: i32, head: &mut [u8; HEAD_BYTES]) -> Option<Format> {
    let n = sys::pread(fd, head, 0).ok()?;
    if n >= 2 && head[..2] == *b"#!" {
        return Some(interpreter_of(&mut head[..n]).map_or(Format::Other, |_| Format::Script));
    }
    if n < 64 || head[..4] != *b"\x7fELF" {
        return Some(Format::Other);
    }
    if head[4] != ELFCLASS64 || u16_at(&head[..], 18) != OUR_MACHINE {
        return Some(Format::Elf {
            loads_our_preloads: false,
        });
    }
    let phoff = u64_at(&head[..], 32);
    let phentsize = u16_at(&head[..], 54) as u64;
    let phnum = u16_at(&head[..], 56).min(256) as u64;
    if phentsize < 56 {
        return Some(Format::Other);
    }
    let mut entry = [0u8; 56];
    for i in 0..phnum {
        if sys::pread(fd, &mut entry, phoff.saturating_add(i * phentsize)).ok()? < 56 {
            break;
        }
        // Only a program interpreter loads preloads: a static-PIE program
        // has a dynamic section and no interpreter.
        if u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]) == PT_INTERP {
            let mut name = [0u8; 64];
            let len = (u64_at(&entry, 32) as usize).min(name.len());
            let n = sys::pread(fd, &mut name[..len], u64_at(&entry, 8)).ok()?;
            let name = &name[..n];
            return Some(Format::Elf {
                loads_our_preloads: name
                    .windows(GLIBC_INTERPRETER.len())
                    .any(|w| w == GLIBC_INTERPRETER),
            });
        }
    }
    Some(Format::Elf {
        loads_our_preloads: false,
    })
}

/// The interpreter path of a `#!` line (`line` starts with `#!`), moved to
/// the buffer's start and NUL-terminated; its length. `None` for a line the
/// kernel would refuse.
fn interpreter_of(line: &mut [u8]) -> Option<usize> {
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    let rest = line.get(2..end)?;
    let start = rest.iter().position(|&b| b != b' ' && b != b'\t')?;
    let len = rest[start..]
        .iter()
        .position(|&b| b == b' ' || b == b'\t' || b == 0)
        .unwrap_or(rest.len() - start);
    if len == 0 || len + 1 > line.len() {
        return None;
    }
    line.copy_within(2 + start..2 + start + len, 0);
    line[len] = 0;
    Some(len)
}

/// `/proc/self/fd/N`, NUL-terminated: the file behind descriptor `fd`.
fn proc_fd_path(fd: i32, out: &mut [u8; 32]) -> bool {
    let mut w = crate::fmt::BufWriter::new(out);
    w.str("/proc/self/fd/").u64(fd as u64).bytes(&[0]);
    !w.truncated()
}

/// The target at `path` (NUL-terminated), relative to `dirfd`
/// (`AT_FDCWD` for the working directory); `flags` as for `execveat`
/// (`AT_EMPTY_PATH` with an empty path means `dirfd` itself).
///
/// # Safety
/// `path` must be null or a NUL-terminated string.
pub unsafe fn inspect_at(dirfd: i32, path: *const u8, flags: i32) -> ExecTarget {
    if path.is_null() {
        return ExecTarget::UNKNOWN;
    }
    let mut head = [0u8; HEAD_BYTES];
    let mut privileged = Fact::No;
    let (mut dirfd, mut path, mut flags) = (dirfd, path, flags);
    for depth in 0..=MAX_INTERPRETERS {
        let nofollow = if flags & libc::AT_SYMLINK_NOFOLLOW != 0 {
            libc::O_NOFOLLOW
        } else {
            0
        };
        let handle = if *path == 0 && flags & libc::AT_EMPTY_PATH != 0 {
            None
        } else {
            match sys::open_at(dirfd, path, libc::O_PATH | nofollow, 0) {
                Ok(fd) => Some(fd),
                // Nothing there: the exec fails. A missing interpreter too.
                Err(libc::ENOENT | libc::ENOTDIR | libc::ELOOP) if depth == 0 => {
                    return ExecTarget::NOTHING_RUNS
                }
                Err(_) => return ExecTarget::UNKNOWN,
            }
        };
        let inode = handle.unwrap_or(dirfd);
        let result = inspect_inode(inode, &mut head, &mut privileged);
        if let Some(h) = handle {
            sys::close(h);
        }
        match result {
            Inspected::Done(target) => return target,
            Inspected::NotRegular if depth == 0 => return ExecTarget::NOTHING_RUNS,
            Inspected::NotRegular => {
                return ExecTarget {
                    privileged,
                    ..ExecTarget::UNKNOWN
                }
            }
            Inspected::Script => (dirfd, path, flags) = (libc::AT_FDCWD, head.as_ptr(), 0),
        }
    }
    ExecTarget {
        privileged,
        ..ExecTarget::UNKNOWN
    }
}

enum Inspected {
    Done(ExecTarget),
    NotRegular,
    /// A script: its interpreter's path is at the start of the head buffer.
    Script,
}

/// One file of the chain, open as `inode` (`O_PATH` or any descriptor).
fn inspect_inode(inode: i32, head: &mut [u8; HEAD_BYTES], privileged: &mut Fact) -> Inspected {
    let Ok(st) = sys::fstat(inode) else {
        return Inspected::Done(ExecTarget::UNKNOWN);
    };
    if !st.is_regular() {
        return Inspected::NotRegular;
    }
    let mut proc_path = [0u8; 32];
    if !proc_fd_path(inode, &mut proc_path) {
        return Inspected::Done(ExecTarget::UNKNOWN);
    }
    // Privilege needs no read permission (exec needs none either: a
    // set-user-ID program may be execute-only).
    if st.changes_privilege_on_exec() || sys::has_file_capabilities(&proc_path) {
        *privileged = Fact::Yes;
    }
    let format = match sys::open(
        &proc_path,
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
        0,
    ) {
        Ok(fd) => {
            let format = format_of(fd, head);
            sys::close(fd);
            format
        }
        Err(_) => None,
    };
    match format {
        Some(Format::Script) => Inspected::Script,
        Some(Format::Elf { loads_our_preloads }) => Inspected::Done(ExecTarget {
            nothing_runs: false,
            privileged: *privileged,
            loads_our_preloads: Fact::from(loads_our_preloads),
        }),
        Some(Format::Other) | None => Inspected::Done(ExecTarget {
            nothing_runs: false,
            privileged: *privileged,
            loads_our_preloads: Fact::Unknown,
        }),
    }
}

/// The buffer [`inspect_in_path`] builds candidate paths in.
static PATH_BUFFER: Scratch<4096> = Scratch::new();

/// In a forked child: a buffer another thread held at fork time is free.
pub fn release_after_fork() {
    PATH_BUFFER.release_after_fork();
}

/// The target `execvp` would run for `file`: searched in `search_path` (a
/// `PATH` value) when `file` has no slash.
///
/// # Safety
/// `file` must be null or a NUL-terminated string.
pub unsafe fn inspect_in_path(file: *const u8, search_path: &[u8]) -> ExecTarget {
    if file.is_null() {
        return ExecTarget::UNKNOWN;
    }
    let Some(mut held) = PATH_BUFFER.try_take() else {
        return ExecTarget::UNKNOWN;
    };
    let name = core::ffi::CStr::from_ptr(file as *const core::ffi::c_char).to_bytes();
    match resolve_in_path(name, search_path, held.bytes()) {
        Some(path) => inspect_at(libc::AT_FDCWD, path.as_ptr(), 0),
        None => ExecTarget::NOTHING_RUNS,
    }
}

/// The file `execvp` would run for `file`, written NUL-terminated into
/// `out`; `None` when nothing executable is found or it does not fit.
fn resolve_in_path<'a>(file: &[u8], search_path: &[u8], out: &'a mut [u8]) -> Option<&'a [u8]> {
    if file.is_empty() {
        return None;
    }
    if file.contains(&b'/') {
        if file.len() + 1 > out.len() {
            return None;
        }
        out[..file.len()].copy_from_slice(file);
        out[file.len()] = 0;
        return Some(&out[..file.len() + 1]);
    }
    for dir in search_path.split(|&b| b == b':') {
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let len = dir.len() + 1 + file.len();
        if len + 1 > out.len() {
            continue;
        }
        out[..dir.len()].copy_from_slice(dir);
        out[dir.len()] = b'/';
        out[dir.len() + 1..len].copy_from_slice(file);
        out[len] = 0;
        if sys::access_executable(&out[..len + 1]) {
            return Some(&out[..len + 1]);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interp(line: &[u8]) -> Option<Vec<u8>> {
        let mut buf = line.to_vec();
        interpreter_of(&mut buf).map(|n| buf[..n].to_vec())
    }

    #[test]
    fn shebang_lines_give_the_interpreter_path() {
        assert_eq!(interp(b"#!/bin/sh\necho"), Some(b"/bin/sh".to_vec()));
        assert_eq!(
            interp(b"#! /usr/bin/env python3\n"),
            Some(b"/usr/bin/env".to_vec())
        );
        assert_eq!(interp(b"#!\t/x -e\n"), Some(b"/x".to_vec()));
        assert_eq!(interp(b"#!\n"), None);
        assert_eq!(interp(b"#!   \n"), None);
        // A file cut short between reads: never a panic.
        assert_eq!(interp(b"#"), None);
        assert_eq!(interp(b"\n#"), None);
    }
}
