//! What an executable file is, read from the file itself: static or dynamic
//! (an ELF `PT_INTERP` header names the dynamic loader, the only reader of
//! `LD_PRELOAD`), whether `exec` grants it privileges (set-id bits, file
//! capabilities), and where `execvp` would find a command. Used before a
//! program runs (`run`, `compare`) and for a running one through
//! `/proc/PID/exe` (`doctor`). Only programs this machine runs count (our
//! own architecture, and i386 on x86_64): another architecture's ELF is no
//! program here. Reads only: never executes, never writes.

use std::ffi::{CString, OsStr, OsString};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What an executable file is to the preload.
#[derive(Debug)]
pub enum Kind {
    /// An ELF program this machine runs, with no `PT_INTERP`: no dynamic
    /// loader runs, so `LD_PRELOAD` means nothing to it.
    Static,
    /// Its loader reads `LD_PRELOAD`: an ELF with `PT_INTERP`, or the
    /// system's dynamic loader itself run as a command (`ld.so PROG`).
    Dynamic,
    /// Not an ELF program this machine runs: a script, another
    /// architecture's program, a shared library, a core file.
    Other,
    /// Cannot be read (an execute-only file of another user, say).
    Unreadable(std::io::Error),
}

/// The ELF identity of a file: class (1 = 32-bit, 2 = 64-bit), data
/// (1 = little endian), `e_type`, `e_machine`, and whether it has a
/// `PT_INTERP` program header, with the loader it names.
#[derive(Debug, Clone, PartialEq)]
struct Elf {
    class: u8,
    data: u8,
    e_type: u16,
    machine: u16,
    interp: bool,
    interp_path: Option<PathBuf>,
}

const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;

/// `Ok(None)`: readable, but no ELF this reader understands.
///
/// One function of about 100 lines on purpose: it is one parser of one
/// header, read top to bottom, and issue 22 moves the ELF header's reading
/// to the contract crate, shared with the library's `os/exec_target.rs`;
/// it is split there, once, not twice.
fn read_elf(path: &Path) -> std::io::Result<Option<Elf>> {
    let mut f = std::fs::File::open(path)?;
    let mut h = [0u8; 64];
    let mut got = 0;
    while got < h.len() {
        match f.read(&mut h[got..])? {
            0 => break,
            n => got += n,
        }
    }
    if got < 52 || &h[..4] != b"\x7fELF" || !matches!(h[4], 1 | 2) || !matches!(h[5], 1 | 2) {
        return Ok(None);
    }
    let (class, data) = (h[4], h[5]);
    if class == 2 && got < 64 {
        return Ok(None);
    }
    let le = data == 1;
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
    let e_type = u16_at(&h, 16);
    let machine = u16_at(&h, 18);
    // Elf32_Ehdr and Elf64_Ehdr differ in the width of the three addresses.
    let (phoff, phentsize, phnum) = if class == 2 {
        (
            u64_at(&h, 32),
            u16_at(&h, 54) as usize,
            u16_at(&h, 56) as usize,
        )
    } else {
        (
            u32_at(&h, 28) as u64,
            u16_at(&h, 42) as usize,
            u16_at(&h, 44) as usize,
        )
    };
    if phentsize < 4 || phnum == 0 || phnum > 4096 {
        return Ok(None);
    }
    let mut ph = vec![0u8; phentsize * phnum];
    if f.seek(SeekFrom::Start(phoff)).is_err() || f.read_exact(&mut ph).is_err() {
        return Ok(None);
    }
    const PT_INTERP: u32 = 3;
    // p_type is the first word of a program header in both classes.
    let interp_ph = ph
        .chunks_exact(phentsize)
        .find(|p| u32_at(p, 0) == PT_INTERP);
    let interp_path = interp_ph.and_then(|p| {
        let (off, len) = if class == 2 && p.len() >= 40 {
            (u64_at(p, 8), u64_at(p, 32))
        } else if class == 1 && p.len() >= 20 {
            (u32_at(p, 4) as u64, u32_at(p, 16) as u64)
        } else {
            return None;
        };
        if len == 0 || len > 4096 {
            return None;
        }
        let mut name = vec![0u8; len as usize];
        f.seek(SeekFrom::Start(off)).ok()?;
        f.read_exact(&mut name).ok()?;
        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        Some(PathBuf::from(OsStr::from_bytes(&name[..end])))
    });
    Ok(Some(Elf {
        class,
        data,
        e_type,
        machine,
        interp: interp_ph.is_some(),
        interp_path,
    }))
}

/// This very program's ELF identity: the architecture this machine runs.
fn own_elf() -> Option<Elf> {
    static OWN: std::sync::OnceLock<Option<Elf>> = std::sync::OnceLock::new();
    OWN.get_or_init(|| read_elf(Path::new("/proc/self/exe")).ok().flatten())
        .clone()
}

/// Whether the kernel here runs `e` natively: our own class, byte order and
/// machine, or on x86_64 a 32-bit i386 program too.
fn runs_here(e: &Elf) -> bool {
    let Some(own) = own_elf() else {
        return false;
    };
    (e.class == own.class && e.data == own.data && e.machine == own.machine)
        || (own.machine == EM_X86_64 && e.machine == EM_386 && e.class == 1 && e.data == 1)
}

/// The dynamic loader this system's dynamic programs name (ours: this
/// program is dynamic), resolved.
fn system_interp() -> Option<PathBuf> {
    let p = own_elf()?.interp_path?;
    std::fs::canonicalize(p).ok()
}

/// What the file at `path` is to the preload (see [`Kind`]).
pub fn kind(path: &Path) -> Kind {
    let e = match read_elf(path) {
        Err(e) => return Kind::Unreadable(e),
        Ok(None) => return Kind::Other,
        Ok(Some(e)) => e,
    };
    if !matches!(e.e_type, ET_EXEC | ET_DYN) || !runs_here(&e) {
        return Kind::Other;
    }
    if e.interp {
        return Kind::Dynamic;
    }
    // The loader itself (ET_DYN, no PT_INTERP) runs a dynamic program and
    // reads LD_PRELOAD for it.
    if e.e_type == ET_DYN
        && system_interp().is_some_and(|i| std::fs::canonicalize(path).ok() == Some(i))
    {
        return Kind::Dynamic;
    }
    Kind::Static
}

/// True when `path` is a static ELF program this machine runs; `None` when
/// it cannot be read or is no ELF program this machine runs.
pub fn is_static(path: &Path) -> Option<bool> {
    match kind(path) {
        Kind::Static => Some(true),
        Kind::Dynamic => Some(false),
        Kind::Other | Kind::Unreadable(_) => None,
    }
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
/// The entries have the width of the process's class (a 32-bit program on
/// a 64-bit kernel has 32-bit ones), read from `/proc/PID/exe`.
pub fn at_secure(pid: i32) -> Option<bool> {
    let raw = crate::util::read_proc(format!("/proc/{pid}/auxv")).ok()?;
    let class32 = read_elf(Path::new(&format!("/proc/{pid}/exe")))
        .ok()
        .flatten()
        .map(|e| e.class == 1)
        .unwrap_or(std::mem::size_of::<usize>() == 4);
    auxv_value(&raw, class32, 23).map(|v| v != 0)
}

/// The value of `key` in a raw auxv of 32-bit or 64-bit entries.
fn auxv_value(raw: &[u8], class32: bool, key: u64) -> Option<u64> {
    let w = if class32 { 4 } else { 8 };
    let word = |b: &[u8]| -> u64 {
        if class32 {
            u32::from_ne_bytes(b.try_into().unwrap()) as u64
        } else {
            u64::from_ne_bytes(b.try_into().unwrap())
        }
    };
    for pair in raw.chunks_exact(2 * w) {
        let (k, v) = (word(&pair[..w]), word(&pair[w..]));
        if k == key {
            return Some(v);
        }
        if k == 0 {
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
    fn a_32_bit_auxv_is_read_as_32_bit_pairs() {
        // AT_PHDR=0x1000, AT_SECURE=0, AT_NULL as 32-bit words: read as
        // 64-bit pairs, (3, 0x1000 | 23 << 32) and (0, 0) would hide it.
        let words: [u32; 6] = [3, 0x1000, 23, 0, 0, 0];
        let raw: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(auxv_value(&raw, true, 23), Some(0));
        let words: [u64; 4] = [23, 1, 0, 0];
        let raw: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(auxv_value(&raw, false, 23), Some(1));
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
