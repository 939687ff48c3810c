//! What an executable file is, read from the file itself: static or dynamic
//! (an ELF `PT_INTERP` header names the dynamic loader, the only reader of
//! `LD_PRELOAD`), whether `exec` grants it privileges (set-id bits, file
//! capabilities), and where `execvp` would find a command. Used before a
//! program runs (`run`, `compare`) and for a running one through
//! `/proc/PID/exe` (`doctor`). Only programs this machine runs count (our
//! own architecture, and i386 on x86_64): another architecture's ELF is no
//! program here. Reads only: never executes, never writes.

use ksmauto_contract::elf::{self, Class, Header, Segments};
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

/// The ELF identity of a file, as the kernel reads it to run it
/// (`contract::elf`): its header, and the program interpreter its first
/// `PT_INTERP` names (`Some` only where `exec` accepts that header).
#[derive(Debug, Clone, PartialEq)]
struct Elf {
    header: Header,
    interp_path: Option<PathBuf>,
}

/// `Ok(None)`: readable, but no ELF program `exec` accepts the headers of.
fn read_elf(path: &Path) -> std::io::Result<Option<Elf>> {
    let mut f = std::fs::File::open(path)?;
    let mut h = [0u8; elf::HEADER_BYTES];
    let mut got = 0;
    while got < h.len() {
        match f.read(&mut h[got..])? {
            0 => break,
            n => got += n,
        }
    }
    let Some(header) = Header::parse(&h[..got]) else {
        return Ok(None);
    };
    let Some(table) = header.program_headers() else {
        return Ok(None);
    };
    let mut ph = vec![0u8; table.bytes()];
    if f.seek(SeekFrom::Start(table.offset)).is_err() || f.read_exact(&mut ph).is_err() {
        return Ok(None);
    }
    let segments = Segments::of_table(header.class, &ph);
    let interp_path = match segments.interpreter {
        None => None,
        Some(place) => match read_interpreter(&mut f, place) {
            Some(path) => Some(path),
            None => return Ok(None), // ENOEXEC
        },
    };
    Ok(Some(Elf {
        header,
        interp_path,
    }))
}

/// The program interpreter path at `(offset, size)` in `f`, where the
/// kernel accepts it.
fn read_interpreter(f: &mut std::fs::File, (offset, size): (u64, u64)) -> Option<PathBuf> {
    if !elf::interpreter_size_ok(size) {
        return None;
    }
    let mut bytes = vec![0u8; size as usize];
    f.seek(SeekFrom::Start(offset)).ok()?;
    f.read_exact(&mut bytes).ok()?;
    let path = elf::interpreter_path(&bytes)?;
    Some(PathBuf::from(OsStr::from_bytes(path)))
}

/// This very program's ELF identity: the architecture this machine runs.
fn own_elf() -> Option<Elf> {
    static OWN: std::sync::OnceLock<Option<Elf>> = std::sync::OnceLock::new();
    OWN.get_or_init(|| read_elf(Path::new("/proc/self/exe")).ok().flatten())
        .clone()
}

/// Whether the kernel here runs `e` natively: our own class and machine,
/// or on x86_64 a 32-bit i386 program too. (Not by EI_DATA: the kernel
/// reads the header in its own byte order and tests `e_machine` alone.)
fn runs_here(e: &Elf) -> bool {
    let Some(own) = own_elf() else {
        return false;
    };
    let (e, own) = (e.header, own.header);
    (e.class == own.class && e.machine == own.machine)
        || (own.machine == elf::EM_X86_64 && e.machine == elf::EM_386 && e.class == Class::Elf32)
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
    if !e.header.is_program() || !runs_here(&e) {
        return Kind::Other;
    }
    if e.interp_path.is_some() {
        return Kind::Dynamic;
    }
    // The loader itself (ET_DYN, no PT_INTERP) runs a dynamic program and
    // reads LD_PRELOAD for it.
    if e.header.e_type == elf::ET_DYN
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
        .map(|e| e.header.class == Class::Elf32)
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

    /// A 64-bit ELF program of this machine, as bytes: `data` is its
    /// EI_DATA byte, `phentsize` its program header size; with
    /// `interp`, a `PT_INTERP` header naming those bytes.
    fn crafted_elf(data: u8, phentsize: u16, interp: Option<&[u8]>) -> Vec<u8> {
        let machine: u16 = if cfg!(target_arch = "aarch64") {
            183
        } else {
            62
        };
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        (f[4], f[5], f[6]) = (2, data, 1);
        f[16..18].copy_from_slice(&elf::ET_EXEC.to_ne_bytes());
        f[18..20].copy_from_slice(&machine.to_ne_bytes());
        f[32..40].copy_from_slice(&64u64.to_ne_bytes());
        f[54..56].copy_from_slice(&phentsize.to_ne_bytes());
        f[56..58].copy_from_slice(&1u16.to_ne_bytes());
        let mut ph = vec![0u8; 56];
        if let Some(path) = interp {
            ph[..4].copy_from_slice(&3u32.to_ne_bytes());
            ph[8..16].copy_from_slice(&(64u64 + 56).to_ne_bytes());
            ph[32..40].copy_from_slice(&(path.len() as u64).to_ne_bytes());
        } else {
            ph[..4].copy_from_slice(&1u32.to_ne_bytes());
        }
        f.extend_from_slice(&ph);
        f.extend_from_slice(interp.unwrap_or_default());
        f
    }

    /// The kernel (`binfmt_elf`) runs a program by its `e_machine`, read in
    /// its own byte order whatever EI_DATA declares, and refuses one whose
    /// program headers are not of its class's size or whose `PT_INTERP` is
    /// no NUL-terminated path; the CLI judges files the same way.
    #[test]
    fn an_elf_is_judged_as_the_kernel_loads_it() {
        let dir = std::env::temp_dir().join(format!("ksmauto-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kind_of = |name: &str, bytes: Vec<u8>| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            format!("{:?}", kind(&path))
        };
        let loader = b"/lib/ld-linux.so\0";
        assert_eq!(kind_of("static", crafted_elf(1, 56, None)), "Static");
        assert_eq!(
            kind_of("dynamic", crafted_elf(1, 56, Some(loader))),
            "Dynamic"
        );
        // EI_DATA says big-endian; the kernel reads the header as its own.
        assert_eq!(kind_of("declared-be", crafted_elf(2, 56, None)), "Static");
        assert_eq!(kind_of("no-order", crafted_elf(0, 56, None)), "Static");
        // exec fails with ENOEXEC: no program this machine runs.
        assert_eq!(
            kind_of("phentsize", crafted_elf(1, 64, Some(loader))),
            "Other"
        );
        assert_eq!(
            kind_of("interp-no-nul", crafted_elf(1, 56, Some(b"/lib/ld"))),
            "Other"
        );
        assert_eq!(
            kind_of("interp-empty", crafted_elf(1, 56, Some(b"\0"))),
            "Other"
        );
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
