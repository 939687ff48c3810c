//! What an executable file is, read from the file itself: static or dynamic
//! (an ELF `PT_INTERP` header names the dynamic loader, the only reader of
//! `LD_PRELOAD`), whether `exec` grants it privileges (set-id bits, file
//! capabilities), and where `execvp` would find a command. Used before a
//! program runs (`run`, `compare`) and for a running one through
//! `/proc/PID/exe` (`doctor`). Reads only: never executes, never writes.

use std::ffi::{CString, OsStr, OsString};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// True when the ELF executable at `path` has no `PT_INTERP`: no dynamic
/// loader runs, so `LD_PRELOAD` means nothing to it. `None` when it cannot
/// be read or is no 64-bit ELF (a script, for one).
pub fn is_static(path: &Path) -> Option<bool> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = [0u8; 64];
    f.read_exact(&mut h).ok()?;
    if &h[..4] != b"\x7fELF" || h[4] != 2 {
        return None; // only 64-bit ELF is read
    }
    let le = h[5] == 1;
    let u16_at = |b: &[u8], o: usize| {
        let x = [b[o], b[o + 1]];
        if le {
            u16::from_le_bytes(x)
        } else {
            u16::from_be_bytes(x)
        }
    };
    let u32_at = |b: &[u8], o: usize| {
        let x = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if le {
            u32::from_le_bytes(x)
        } else {
            u32::from_be_bytes(x)
        }
    };
    let u64_at = |b: &[u8], o: usize| {
        let x: [u8; 8] = b[o..o + 8].try_into().unwrap();
        if le {
            u64::from_le_bytes(x)
        } else {
            u64::from_be_bytes(x)
        }
    };
    let phoff = u64_at(&h, 32);
    let phentsize = u16_at(&h, 54) as usize;
    let phnum = u16_at(&h, 56) as usize;
    if phentsize < 4 || phnum == 0 || phnum > 4096 {
        return None;
    }
    let mut ph = vec![0u8; phentsize * phnum];
    f.seek(SeekFrom::Start(phoff)).ok()?;
    f.read_exact(&mut ph).ok()?;
    const PT_INTERP: u32 = 3;
    Some(
        !ph.chunks_exact(phentsize)
            .any(|p| u32_at(p, 0) == PT_INTERP),
    )
}

/// Why `exec` of `path` would grant privileges: `setuid`, `setgid`, `file
/// capabilities` (a `security.capability` attribute). Empty when none.
pub fn privileges(path: &Path) -> Vec<String> {
    let mut out = vec![];
    if let Ok(m) = std::fs::metadata(path) {
        if m.mode() & libc::S_ISUID != 0 {
            out.push("setuid".to_string());
        }
        // Set-group-ID without group execute is mandatory locking, not setgid.
        if m.mode() & libc::S_ISGID != 0 && m.mode() & libc::S_IXGRP != 0 {
            out.push("setgid".to_string());
        }
    }
    if let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) {
        let name = c"security.capability";
        let n = unsafe { libc::getxattr(c_path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        if n > 0 {
            out.push("file capabilities".to_string());
        }
    }
    out
}

/// The file `execvp` runs for `cmd` with this `PATH`: `cmd` itself when it
/// holds a `/`, else the first executable regular file `PATH/cmd` (an empty
/// entry is the current directory; no `PATH` means glibc's default).
pub fn resolve(cmd: &OsStr, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if cmd.is_empty() {
        return None;
    }
    if cmd.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(cmd));
    }
    let default = OsString::from("/bin:/usr/bin");
    let path_var = path_var.unwrap_or(&default);
    for dir in path_var.as_bytes().split(|b| *b == b':') {
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let cand = dir.join(cmd);
        if is_executable_file(&cand) {
            return Some(cand);
        }
    }
    None
}

fn is_executable_file(p: &Path) -> bool {
    let Ok(m) = std::fs::metadata(p) else {
        return false;
    };
    if !m.is_file() {
        return false;
    }
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

/// AT_SECURE (23) from `/proc/PID/auxv`: the loader ran it in secure mode.
pub fn at_secure(pid: i32) -> Option<bool> {
    let raw = std::fs::read(format!("/proc/{pid}/auxv")).ok()?;
    let w = std::mem::size_of::<usize>();
    for pair in raw.chunks_exact(2 * w) {
        let key = usize::from_ne_bytes(pair[..w].try_into().ok()?);
        let val = usize::from_ne_bytes(pair[w..].try_into().ok()?);
        if key == 23 {
            return Some(val != 0);
        }
        if key == 0 {
            break;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_dynamic_and_a_script_is_no_elf() {
        let me = std::env::current_exe().unwrap();
        assert_eq!(is_static(&me), Some(false));
        let dir = std::env::temp_dir().join(format!("ksmauto-exe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("s.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        assert_eq!(is_static(&script), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn resolve_follows_path_like_execvp() {
        let sh = resolve(
            OsStr::new("sh"),
            Some(OsStr::new("/nonexistent:/bin:/usr/bin")),
        );
        assert_eq!(sh, Some(PathBuf::from("/bin/sh")));
        assert_eq!(
            resolve(OsStr::new("./x"), Some(OsStr::new("/bin"))),
            Some(PathBuf::from("./x"))
        );
        assert_eq!(
            resolve(OsStr::new("no-such-command-here"), Some(OsStr::new("/bin"))),
            None
        );
    }
}
