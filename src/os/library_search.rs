//! Whether the loader of a new program, asked for a bare library name as a
//! preload, surely reaches `/etc/ld.so.cache` with it (glibc 2.36,
//! `_dl_map_object` with the program as loader): before the cache it looks
//! in the program's `DT_RPATH` directories (when it has no `DT_RUNPATH`),
//! then `LD_LIBRARY_PATH` (the caller's to judge), then the program's
//! `DT_RUNPATH` directories; `DF_1_NODEFLIB` skips the cache altogether.
//! In each directory it tries the hardware-capability subdirectories
//! first: `glibc-hwcaps/…`, and in 2.36 the legacy ones (the platform,
//! `tls`, and on x86_64 `x86_64`, `avx512_1`, `haswell`, `xeon_phi`).
//!
//! So the answer is "yes" when the program has no such directory, or none
//! of them holds a file of that name or one of those subdirectories;
//! `$ORIGIN` is expanded as the loader does (the directory of the program's
//! file). Any other token, a relative directory while the `exec` may not
//! resolve paths as we do, a list too long to read, legacy subdirectories
//! not listed here for this machine: "could not tell". Reports facts, never
//! allocates, never touches `errno`; a try-locked static buffer (busy:
//! "could not tell").

use super::exec_target::Fact;
use super::sys;
use crate::scratch::Scratch;

const DT_NULL: u64 = 0;
const DT_STRTAB: u64 = 5;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;
const DT_FLAGS_1: u64 = 0x6fff_fffb;
const DF_1_NODEFLIB: u64 = 0x800;
/// Dynamic sections are a few dozen entries; past this many, "could not tell".
const MOST_DYNAMIC_ENTRIES: u64 = 1024;

/// The subdirectories the loader tries in each directory before the
/// directory itself, besides `glibc-hwcaps` and the platform
/// (`AT_PLATFORM`); `None` where they are not known here.
#[cfg(target_arch = "x86_64")]
const LEGACY_SUBDIRS: Option<&[&[u8]]> =
    Some(&[b"tls", b"x86_64", b"avx512_1", b"haswell", b"xeon_phi"]);
#[cfg(target_arch = "aarch64")]
const LEGACY_SUBDIRS: Option<&[&[u8]]> = None;

/// The list string, `$ORIGIN`, and the candidate path being built.
const LIST_BYTES: usize = 1024;
const ORIGIN_BYTES: usize = 1024;
static BUFFER: Scratch<4096> = Scratch::new();

/// In a forked child: a buffer another thread held at fork time is free.
pub fn release_after_fork() {
    BUFFER.release_after_fork();
}

/// What the dynamic section says about the search.
#[derive(Default)]
struct Entries {
    strtab: Option<u64>,
    rpath: Option<u64>,
    runpath: Option<u64>,
    nodeflib: bool,
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(w)
}

/// The entries of the dynamic section at `offset` (`size` bytes) of the
/// program open as `fd`, up to `DT_NULL`; `None`: could not read them.
fn read_entries(fd: i32, offset: u64, size: u64) -> Option<Entries> {
    let mut found = Entries::default();
    let mut chunk = [0u8; 128];
    let entries = (size / 16).min(MOST_DYNAMIC_ENTRIES);
    let mut i = 0;
    while i < entries {
        let want = ((entries - i) * 16).min(chunk.len() as u64) as usize;
        let got = sys::pread(fd, &mut chunk[..want], offset + i * 16).ok()?;
        if got < 16 {
            return None;
        }
        for entry in chunk[..got - got % 16].chunks_exact(16) {
            let value = u64_at(entry, 8);
            match u64_at(entry, 0) {
                DT_NULL => return Some(found),
                DT_STRTAB => found.strtab = Some(value),
                DT_RPATH => found.rpath = Some(value),
                DT_RUNPATH => found.runpath = Some(value),
                DT_FLAGS_1 => found.nodeflib |= value & DF_1_NODEFLIB != 0,
                _ => {}
            }
        }
        i += (got / 16) as u64;
    }
    None
}

/// Whether a bare `name` asked for as a preload by the program open as
/// `fd` (dynamic section at `dynamic`: file offset and size) surely
/// reaches the loader's cache; `file_offset` maps a virtual address of the
/// program to its place in the file. `as_we_resolve`: the `exec` resolves
/// relative paths in our working directory.
pub(super) fn bare_name_reaches_cache(
    fd: i32,
    dynamic: (u64, u64),
    file_offset: impl Fn(u64) -> Option<u64>,
    name: &[u8],
    as_we_resolve: bool,
) -> Fact {
    let (list_at, legacy) = match search_list(fd, dynamic, file_offset) {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let Some(mut held) = BUFFER.try_take() else {
        return Fact::Unknown;
    };
    let (list, rest) = held.bytes().split_at_mut(LIST_BYTES);
    let (origin, path) = rest.split_at_mut(ORIGIN_BYTES);
    let Some(list) = read_string(fd, list_at, list) else {
        return Fact::Unknown;
    };
    let Some(origin) = origin_for(list, fd, origin) else {
        return Fact::Unknown;
    };
    let search = Search {
        name,
        legacy,
        as_we_resolve,
    };
    search.list_reaches_cache(list, origin, path)
}

/// Where the directory list the loader searches before its cache is in
/// the file (`DT_RUNPATH`, else `DT_RPATH`), with the legacy
/// subdirectories it tries in each; `Err` with the answer when the dynamic
/// section alone gives it (no list: yes; `DF_1_NODEFLIB`: no; unreadable:
/// could not tell).
fn search_list(
    fd: i32,
    dynamic: (u64, u64),
    file_offset: impl Fn(u64) -> Option<u64>,
) -> Result<(u64, &'static [&'static [u8]]), Fact> {
    let Some(entries) = read_entries(fd, dynamic.0, dynamic.1) else {
        return Err(Fact::Unknown);
    };
    if entries.nodeflib {
        return Err(Fact::No);
    }
    // With a DT_RUNPATH, DT_RPATH is not looked at.
    let Some(list_at) = entries.runpath.or(entries.rpath) else {
        return Err(Fact::Yes);
    };
    let (Some(legacy), Some(strtab)) = (LEGACY_SUBDIRS, entries.strtab.and_then(file_offset))
    else {
        return Err(Fact::Unknown);
    };
    Ok((strtab.saturating_add(list_at), legacy))
}

/// What `$ORIGIN` stands for in `list`, into `out`: the program's
/// directory if the list names it, else nothing; `None` when it is named
/// and cannot be known.
fn origin_for<'a>(list: &[u8], fd: i32, out: &'a mut [u8]) -> Option<&'a [u8]> {
    if list.windows(7).any(|w| w == b"$ORIGIN") || list.windows(8).any(|w| w == b"${ORIGIN") {
        program_directory(fd, out)
    } else {
        Some(&[][..])
    }
}

/// The NUL-terminated string at `offset` of the file, into `out`.
fn read_string(fd: i32, offset: u64, out: &mut [u8]) -> Option<&[u8]> {
    let n = sys::pread(fd, out, offset).ok()?;
    let end = out[..n].iter().position(|&b| b == 0)?;
    Some(&out[..end])
}

/// `$ORIGIN` of the program open as `fd`: the directory of its file, as
/// the loader finds it (`/proc/self/exe`, symbolic links resolved), into
/// `out`; `None` for a file that is no longer there.
fn program_directory(fd: i32, out: &mut [u8]) -> Option<&[u8]> {
    let mut link = [0u8; 32];
    let mut w = crate::fmt::BufWriter::new(&mut link);
    w.str("/proc/self/fd/").u64(fd as u64).bytes(&[0]);
    let n = sys::readlink(w.into_c_str()?, out).ok()?;
    let path = &out[..n];
    if n == out.len() || path.first() != Some(&b'/') || path.ends_with(b" (deleted)") {
        return None;
    }
    let slash = path.iter().rposition(|&b| b == b'/')?;
    Some(&out[..slash.max(1)])
}

/// One element of the list with `$ORIGIN` (and `${ORIGIN}`) replaced by
/// `origin`, into `out`; its length. `None` for any other token or an
/// element too long.
fn expand(element: &[u8], origin: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut len = 0;
    let mut rest = element;
    while let Some(&first) = rest.first() {
        let (piece, skip): (&[u8], usize) = if first != b'$' {
            (&rest[..1], 1)
        } else if rest.starts_with(b"${ORIGIN}") {
            (origin, 9)
        } else if rest.starts_with(b"$ORIGIN")
            && !rest
                .get(7)
                .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_')
        {
            (origin, 7)
        } else {
            return None;
        };
        out.get_mut(len..len + piece.len())?.copy_from_slice(piece);
        len += piece.len();
        rest = &rest[skip..];
    }
    Some(len)
}

struct Search<'a> {
    name: &'a [u8],
    legacy: &'a [&'a [u8]],
    as_we_resolve: bool,
}

impl Search<'_> {
    /// Whether the name reaches the cache past every directory of `list`
    /// (`:`-separated, `$ORIGIN` expanded to `origin`; `path` is where each
    /// candidate is built): no directory holds it nor a subdirectory the
    /// loader looks into first.
    fn list_reaches_cache(&self, list: &[u8], origin: &[u8], path: &mut [u8]) -> Fact {
        for element in list.split(|&b| b == b':') {
            match expand(element, origin, path).map(|len| self.directory_holds(path, len)) {
                Some(Fact::No) => continue,
                Some(Fact::Yes) => return Fact::No,
                _ => return Fact::Unknown,
            }
        }
        Fact::Yes
    }

    /// Whether the directory whose path is the first `len` bytes of `path`
    /// holds the name or a subdirectory the loader looks into first.
    fn directory_holds(&self, path: &mut [u8], len: usize) -> Fact {
        // An empty element is the working directory: relative too.
        let relative = len == 0 || path[0] != b'/';
        if relative && !self.as_we_resolve {
            return Fact::Unknown;
        }
        let first_looked_at = [self.name, b"glibc-hwcaps", platform()];
        for entry in first_looked_at
            .into_iter()
            .chain(self.legacy.iter().copied())
        {
            if entry.is_empty() {
                continue;
            }
            match exists(path, len, entry) {
                Fact::No => continue,
                held_or_unknown => return held_or_unknown,
            }
        }
        Fact::No
    }
}

/// Whether `path[..len]` + `/` + `entry` exists (symbolic links followed,
/// as the loader's `open` follows them).
fn exists(path: &mut [u8], len: usize, entry: &[u8]) -> Fact {
    let start = if len == 0 { 0 } else { len + 1 };
    let Some(room) = path.get_mut(len..start + entry.len() + 1) else {
        return Fact::Unknown;
    };
    if len != 0 {
        room[0] = b'/';
    }
    let at = start - len;
    room[at..at + entry.len()].copy_from_slice(entry);
    room[at + entry.len()] = 0;
    let Ok(path) = sys::c_path(path) else {
        return Fact::Unknown;
    };
    match sys::stat_at(libc::AT_FDCWD, path, 0) {
        Ok(_) => Fact::Yes,
        Err(libc::ENOENT | libc::ENOTDIR) => Fact::No,
        Err(_) => Fact::Unknown,
    }
}

/// `AT_PLATFORM` (the loader's legacy platform subdirectory), or empty.
fn platform() -> &'static [u8] {
    // glibc's getauxval sets errno for an entry the kernel did not give.
    // SAFETY: __errno_location returns this thread's errno, a valid,
    // aligned int for the thread's life, which only this thread touches.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: `errno` as above; read and restored around the one call that
    // may change it, so the program's value survives.
    let saved = unsafe { *errno };
    // SAFETY: getauxval only reads the auxiliary vector.
    let p = unsafe { libc::getauxval(libc::AT_PLATFORM) } as *const libc::c_char;
    // SAFETY: `errno` as above.
    unsafe { *errno = saved };
    if p.is_null() {
        b""
    } else {
        // SAFETY: AT_PLATFORM points at a NUL-terminated string the kernel
        // put on the initial stack, which lives as long as the process.
        unsafe { core::ffi::CStr::from_ptr(p) }.to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expanded(element: &[u8], origin: &[u8]) -> Option<Vec<u8>> {
        let mut out = [0u8; 64];
        expand(element, origin, &mut out).map(|len| out[..len].to_vec())
    }

    #[test]
    fn origin_is_expanded_and_every_other_token_is_refused() {
        assert_eq!(
            expanded(b"$ORIGIN/lib", b"/opt/x"),
            Some(b"/opt/x/lib".to_vec())
        );
        assert_eq!(
            expanded(b"${ORIGIN}/../lib", b"/o"),
            Some(b"/o/../lib".to_vec())
        );
        assert_eq!(expanded(b"/usr/lib", b"/o"), Some(b"/usr/lib".to_vec()));
        assert_eq!(expanded(b"", b"/o"), Some(vec![]));
        assert_eq!(expanded(b"$LIB/x", b"/o"), None);
        assert_eq!(expanded(b"$PLATFORM", b"/o"), None);
        assert_eq!(expanded(b"$ORIGINAL", b"/o"), None);
        assert_eq!(expanded(&[b'a'; 100], b"/o"), None);
    }
}
