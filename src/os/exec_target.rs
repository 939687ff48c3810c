//! What an `exec` is about to run, as far as merging is concerned: whether
//! it changes privilege (set-user-ID, set-group-ID, file capabilities) and
//! whether this library can run in it at all (a dynamic ELF program of our
//! own class and machine, or a `#!` script whose interpreter is one).
//!
//! Looks only at inodes and ELF headers: a file is opened for reading only
//! once `fstat` through an `O_PATH` descriptor said it is a regular file (a
//! FIFO or device is never opened: that could block or have side effects),
//! with small reads into stack buffers of a few hundred bytes (an `exec` may
//! be called from a signal handler). Never allocates, never touches `errno`.

use super::sys;

/// The facts about an `exec` target that decide whether merge-any may pass
/// into it. Unknown facts are filled in the cautious direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecTarget {
    /// Running it changes privilege (`AT_SECURE` in the new program).
    pub privileged: bool,
    /// No preload library of ours can run in it: a static ELF program, or
    /// one of another ELF class or machine (a 32-bit program, say).
    pub static_program: bool,
}

impl ExecTarget {
    /// What is assumed when the target cannot be inspected.
    pub const UNKNOWN: ExecTarget = ExecTarget {
        privileged: true,
        static_program: true,
    };

    /// Nothing runs: the `exec` will fail (no such file, not a regular file).
    pub const NOTHING_RUNS: ExecTarget = ExecTarget {
        privileged: false,
        static_program: false,
    };
}

const PT_INTERP: u32 = 3;
const PT_DYNAMIC: u32 = 2;
const ELFCLASS64: u8 = 2;
#[cfg(target_arch = "x86_64")]
const OUR_MACHINE: u16 = 62; // EM_X86_64
#[cfg(target_arch = "aarch64")]
const OUR_MACHINE: u16 = 183; // EM_AARCH64
/// The kernel follows at most this many `#!` interpreters.
const MAX_INTERPRETERS: usize = 4;
/// The longest `#!` line the kernel reads (BINPRM_BUF_SIZE).
const SHEBANG_BYTES: usize = 256;

/// What a regular file is to `exec`.
enum Format {
    /// An ELF program that loads preload libraries of ours.
    OurDynamicElf,
    /// A static ELF program, or one of another class or machine.
    ElfWithoutUs,
    /// `#!`: the interpreter's path is in the buffer, NUL-terminated.
    Script,
    /// Anything else: `ENOEXEC`, or a `binfmt_misc` handler we cannot see.
    Other,
}

fn format_of(fd: i32, shebang: &mut [u8; SHEBANG_BYTES]) -> Format {
    let mut header = [0u8; 64];
    let n = sys::pread(fd, &mut header, 0).unwrap_or(0);
    if n >= 2 && header[..2] == *b"#!" {
        return match sys::pread(fd, shebang, 0) {
            Ok(n) => interpreter_of(&mut shebang[..n]).map_or(Format::Other, |_| Format::Script),
            Err(_) => Format::Other,
        };
    }
    if n < 64 || header[..4] != *b"\x7fELF" {
        return Format::Other;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u64_at = |b: &[u8], o: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(w)
    };
    if header[4] != ELFCLASS64 || u16_at(&header, 18) != OUR_MACHINE {
        return Format::ElfWithoutUs;
    }
    let phoff = u64_at(&header, 32);
    let phentsize = u16_at(&header, 54) as u64;
    let phnum = u16_at(&header, 56).min(256) as u64;
    if phentsize < 56 {
        return Format::Other;
    }
    let mut entry = [0u8; 56];
    for i in 0..phnum {
        let off = phoff.saturating_add(i * phentsize);
        if sys::pread(fd, &mut entry, off).unwrap_or(0) < 56 {
            break;
        }
        let kind = u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
        if kind == PT_INTERP || kind == PT_DYNAMIC {
            return Format::OurDynamicElf;
        }
    }
    Format::ElfWithoutUs
}

/// The interpreter path of a `#!` line, moved to the buffer's start and
/// NUL-terminated; its length. `None` for a line the kernel would refuse.
fn interpreter_of(line: &mut [u8]) -> Option<usize> {
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    let rest = &line[2..end];
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

/// The target at `path` (NUL-terminated), relative to `dirfd`
/// (`AT_FDCWD` for the working directory); `flags` as for `execveat`
/// (`AT_EMPTY_PATH` with an empty path means `dirfd` itself). A `#!` script
/// is judged by its interpreter (as the kernel runs it), up to the kernel's
/// own depth.
///
/// # Safety
/// `path` must be null or a NUL-terminated string.
pub unsafe fn inspect_at(dirfd: i32, path: *const u8, flags: i32) -> ExecTarget {
    if path.is_null() {
        return ExecTarget::UNKNOWN;
    }
    let mut shebang = [0u8; SHEBANG_BYTES];
    let mut target = ExecTarget::NOTHING_RUNS;
    let (mut dirfd, mut path, mut flags) = (dirfd, path, flags);
    for depth in 0..=MAX_INTERPRETERS {
        let Some(fd) = open_regular(dirfd, path, flags) else {
            // Nothing (regular) there: the exec fails. An interpreter that
            // cannot be inspected: assume the worst.
            return if depth == 0 {
                ExecTarget::NOTHING_RUNS
            } else {
                ExecTarget::UNKNOWN
            };
        };
        let Ok(st) = sys::fstat(fd) else {
            sys::close(fd);
            return ExecTarget::UNKNOWN;
        };
        target.privileged |=
            st.changes_privilege_on_exec() || sys::has_file_capabilities(core::ptr::null(), fd);
        let format = format_of(fd, &mut shebang);
        sys::close(fd);
        match format {
            Format::OurDynamicElf => return target,
            Format::ElfWithoutUs | Format::Other => {
                target.static_program = true;
                return target;
            }
            Format::Script => {
                (dirfd, path, flags) = (libc::AT_FDCWD, shebang.as_ptr(), 0);
            }
        }
    }
    ExecTarget::UNKNOWN
}

/// A descriptor open for reading on `path` if it is a regular file; `None`
/// if there is nothing, or something else (never opened for reading then).
unsafe fn open_regular(dirfd: i32, path: *const u8, flags: i32) -> Option<i32> {
    let empty = *path == 0;
    let nofollow = if flags & libc::AT_SYMLINK_NOFOLLOW != 0 {
        libc::O_NOFOLLOW
    } else {
        0
    };
    let handle = if empty && flags & libc::AT_EMPTY_PATH != 0 {
        None
    } else {
        Some(sys::open_at(dirfd, path, libc::O_PATH | nofollow, 0).ok()?)
    };
    let probe = handle.unwrap_or(dirfd);
    let regular = sys::fstat(probe).is_ok_and(|st| st.is_regular());
    // Reopen through /proc/self/fd so that the file read is the one just
    // checked, not whatever the path names a moment later.
    let mut proc_path = [0u8; 32];
    let mut w = crate::fmt::BufWriter::new(&mut proc_path);
    w.str("/proc/self/fd/").u64(probe as u64).bytes(&[0]);
    let fd = if regular && !w.truncated() {
        sys::open(
            &proc_path,
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
            0,
        )
        .ok()
    } else {
        None
    };
    if let Some(h) = handle {
        sys::close(h);
    }
    fd
}

/// The file `execvp` would run for `file` (searched in `search_path`, a
/// `PATH` value, when `file` has no slash), written NUL-terminated into
/// `out`; `None` when nothing executable is found or it does not fit.
pub fn resolve_in_path<'a>(file: &[u8], search_path: &[u8], out: &'a mut [u8]) -> Option<&'a [u8]> {
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
    }
}
