//! What an `exec` is about to run, as far as merging is concerned: whether
//! it changes privilege (set-user-ID, set-group-ID, file capabilities) and
//! whether it is a static ELF program (which loads no preload library).
//!
//! Reads only the target's inode and its ELF headers, with small reads into
//! stack buffers of a few hundred bytes (an `exec` may be called from a
//! signal handler). Never allocates, never touches `errno`.

use super::sys::{self, Errno};

/// The facts about an `exec` target that decide whether merge-any may pass
/// into it. Unknown facts are filled in the cautious direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecTarget {
    /// Running it changes privilege (`AT_SECURE` in the new program).
    pub privileged: bool,
    /// A static ELF program: no preload library ever runs in it.
    pub static_program: bool,
}

impl ExecTarget {
    /// What is assumed when the target cannot be inspected.
    pub const UNKNOWN: ExecTarget = ExecTarget {
        privileged: true,
        static_program: true,
    };
}

const PT_INTERP: u32 = 3;
const PT_DYNAMIC: u32 = 2;

/// Whether the ELF file open as `fd` has a program interpreter (or dynamic
/// section). A file that is not ELF (a `#!` script) runs an interpreter,
/// which is itself a dynamic program in practice: not static.
fn is_static_elf(fd: i32) -> Result<bool, Errno> {
    let mut header = [0u8; 64];
    if sys::pread(fd, &mut header, 0)? < 64 || &header[..4] != b"\x7fELF" || header[4] != 2 {
        return Ok(false);
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u64_at = |b: &[u8], o: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(w)
    };
    let phoff = u64_at(&header, 32);
    let phentsize = u16_at(&header, 54);
    let phnum = u16_at(&header, 56).min(256);
    if phentsize < 56 {
        return Ok(false);
    }
    let mut entry = [0u8; 56];
    for i in 0..phnum {
        let off = phoff.saturating_add(i * phentsize);
        if sys::pread(fd, &mut entry, off)? < 56 {
            break;
        }
        let kind = u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
        if kind == PT_INTERP || kind == PT_DYNAMIC {
            return Ok(false);
        }
    }
    Ok(true)
}

fn inspect_open(fd: i32, path_for_xattr: *const u8) -> ExecTarget {
    let Ok(st) = sys::fstat(fd) else {
        return ExecTarget::UNKNOWN;
    };
    ExecTarget {
        privileged: st.changes_privilege_on_exec()
            || sys::has_file_capabilities(path_for_xattr, fd),
        static_program: is_static_elf(fd).unwrap_or(true),
    }
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
    let empty = unsafe { *path == 0 };
    if empty && flags & libc::AT_EMPTY_PATH != 0 {
        return inspect_open(dirfd, core::ptr::null());
    }
    let nofollow = if flags & libc::AT_SYMLINK_NOFOLLOW != 0 {
        libc::O_NOFOLLOW
    } else {
        0
    };
    let fd = match sys::open_at(dirfd, path, libc::O_RDONLY | nofollow, 0) {
        Ok(fd) => fd,
        // An execute-only file cannot be read: take its inode's word for
        // privilege (capabilities cannot be read through O_PATH: assumed)
        // and assume static.
        Err(_) => {
            return match sys::open_at(dirfd, path, libc::O_PATH | nofollow, 0) {
                Ok(fd) => {
                    let privileged = sys::fstat(fd).map_or(true, |st| {
                        st.changes_privilege_on_exec()
                            || sys::has_file_capabilities(core::ptr::null(), fd)
                    });
                    sys::close(fd);
                    ExecTarget {
                        privileged,
                        static_program: true,
                    }
                }
                // Nothing there: the exec fails and nothing runs.
                Err(_) => ExecTarget {
                    privileged: false,
                    static_program: false,
                },
            };
        }
    };
    let target = inspect_open(fd, core::ptr::null());
    sys::close(fd);
    target
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
