//! What glibc's dynamic loader of this machine will find, read as it reads
//! it (glibc 2.36, `elf/rtld.c` and `elf/dl-cache.c`): which loader file
//! runs this process, the names in `/etc/ld.so.preload`, and where
//! `/etc/ld.so.cache` sends a bare library name.
//!
//! Reports facts; "could not tell" comes back as the answer that makes the
//! caller cautious (`false`). Never allocates, never touches `errno`; reads
//! files with small stack buffers or a try-locked static one.

use core::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

use super::sys::{self, FileStatus};
use crate::scratch::Scratch;

static LOADER_DEV: AtomicU64 = AtomicU64::new(0);
static LOADER_INO: AtomicU64 = AtomicU64::new(0);
static LOADER_KNOWN: AtomicBool = AtomicBool::new(false);

/// Start-up (a loader call, not for a hook): notes which file is the
/// dynamic loader running this process — the one that loaded this library,
/// so the one whose programs can load it too.
pub fn remember_own_loader() {
    let mut path = [0u8; 512];
    if !own_loader_path(&mut path) {
        return;
    }
    let Ok(path) = sys::c_path(&path) else {
        return;
    };
    if let Ok(st) = sys::stat_at(libc::AT_FDCWD, path, 0) {
        LOADER_DEV.store(st.dev, Relaxed);
        LOADER_INO.store(st.ino, Relaxed);
        LOADER_KNOWN.store(true, Release);
    }
}

/// The loader's path, NUL-terminated into `out`: the object mapped at
/// `AT_BASE` (the program interpreter the kernel loaded), or, when the
/// loader was run as a command (`AT_BASE` 0; it then gives the auxiliary
/// vector the program's values), the object defining its `_r_debug`.
fn own_loader_path(out: &mut [u8; 512]) -> bool {
    // SAFETY: getauxval only reads the auxiliary vector (AT_BASE is always
    // there, 0 when the loader ran as a command).
    let base = unsafe { libc::getauxval(libc::AT_BASE) } as *const libc::c_void;
    let inside = if base.is_null() {
        // SAFETY: a lookup by a NUL-terminated literal name; start-up runs
        // outside any hook, so the loader's lock that dlsym takes is free
        // to take. The address is only looked up below, never read.
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_r_debug".as_ptr()) as *const libc::c_void }
    } else {
        base
    };
    // SAFETY: `Dl_info` is pointers and integers: all zeros is valid.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    if inside.is_null()
        // SAFETY: dladdr writes one `Dl_info` into the local `info`; it only
        // looks the address up among the loaded objects.
        || unsafe { libc::dladdr(inside, &mut info) } == 0
        || info.dli_fname.is_null()
    {
        return false;
    }
    // SAFETY: not null: the loader's NUL-terminated name of an object that
    // stays loaded (the loader itself, or ours), copied out at once.
    let name = unsafe { core::ffi::CStr::from_ptr(info.dli_fname) }.to_bytes();
    if name.is_empty() || name.len() >= out.len() {
        return false;
    }
    out[..name.len()].copy_from_slice(name);
    out[name.len()] = 0;
    true
}

/// Whether `st` is the loader running this process.
pub fn is_our_loader(st: &FileStatus) -> bool {
    LOADER_KNOWN.load(Acquire)
        && st.dev == LOADER_DEV.load(Relaxed)
        && st.ino == LOADER_INO.load(Relaxed)
}

// ---------------------------------------------------------------------------
// /etc/ld.so.preload

/// The buffer `/etc/ld.so.preload` is read into.
static PRELOAD_FILE: Scratch<4096> = Scratch::new();

/// In a forked child: a buffer another thread held at fork time is free.
pub fn release_after_fork() {
    PRELOAD_FILE.release_after_fork();
}

/// Whether `/etc/ld.so.preload` names a library for which `loads(name)`
/// holds, read as ld.so reads it ([`preload_file_entries`]). `false` if
/// there is no such file, or ld.so could not read it (we are the program's
/// user: an unprivileged program), or it could not be read whole here.
pub fn preload_file_names(loads: impl FnMut(&[u8]) -> bool) -> bool {
    let Some(mut held) = PRELOAD_FILE.try_take() else {
        return false;
    };
    let buf = held.bytes();
    match sys::read_file(b"/etc/ld.so.preload\0", buf) {
        Ok(n) if n < buf.len() => preload_file_entries(&mut buf[..n], loads),
        _ => false,
    }
}

/// Whether any name ld.so's `dl_main` (glibc 2.36, `elf/rtld.c`) preloads
/// from `file`, the whole of `/etc/ld.so.preload` (changed here in place,
/// as ld.so changes its private copy), is one for which `loads(name)`
/// holds. Step by step as ld.so goes:
/// * comments: each `#` and what follows it up to its line's end become
///   blanks; ld.so looks for each next `#` from the start of the file
///   again, within only as many bytes as were left after the last comment,
///   so a `#` near the end of the file may stay, and the "comment" after
///   it is read as names;
/// * a last name not followed by a separator is taken apart (up to a NUL);
/// * the rest is split on space, tab, newline and colon as a C string: it
///   ends at the first NUL.
fn preload_file_entries(file: &mut [u8], mut loads: impl FnMut(&[u8]) -> bool) -> bool {
    let size = file.len();
    if size == 0 {
        return false; // ld.so maps nothing of an empty file
    }
    let mut rest = size;
    while rest > 0 {
        let Some(mut at) = file[..rest].iter().position(|&b| b == b'#') else {
            break;
        };
        rest -= at;
        loop {
            file[at] = b' ';
            rest -= 1;
            if rest == 0 {
                break;
            }
            at += 1;
            if file[at] == b'\n' {
                break;
            }
        }
    }
    let separator = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b':');
    let last_apart = if separator(file[size - 1]) {
        file[size - 1] = 0;
        None
    } else {
        let mut start = size;
        while start > 0 && !separator(file[start - 1]) {
            start -= 1;
        }
        if start > 0 {
            file[start - 1] = 0;
        }
        Some(start)
    };
    let up_to_nul = |bytes: &[u8]| bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    if last_apart != Some(0) {
        let string = &file[..up_to_nul(file)];
        if string
            .split(|&b| separator(b))
            .filter(|name| !name.is_empty())
            .any(&mut loads)
        {
            return true;
        }
    }
    match last_apart {
        Some(start) => {
            let tail = &file[start..];
            let name = &tail[..up_to_nul(tail)];
            !name.is_empty() && loads(name)
        }
        None => false,
    }
}

// ---------------------------------------------------------------------------
// /etc/ld.so.cache

const CACHE_MAGIC: &[u8; 20] = b"glibc-ld.so.cache1.1";
const CACHE_HEADER: u64 = 48;
const CACHE_ENTRY: u64 = 24;
/// `_DL_CACHE_DEFAULT_ID`: an ELF library of libc6 for our machine.
#[cfg(target_arch = "x86_64")]
const CACHE_FLAGS: i32 = 0x0303;
#[cfg(target_arch = "aarch64")]
const CACHE_FLAGS: i32 = 0x0a03;
/// The longest key compared; a longer one counts as "could not tell".
const KEY_BYTES: usize = 256;

struct CacheEntry {
    flags: i32,
    key: u64,
    value: u64,
    hwcap: u64,
}

struct Cache {
    fd: i32,
    size: u64,
    entries: u64,
}

impl Cache {
    fn open() -> Option<Cache> {
        let fd = sys::open_at(libc::AT_FDCWD, c"/etc/ld.so.cache", libc::O_RDONLY, 0).ok()?;
        let cache = Cache::check(fd);
        if cache.is_none() {
            sys::close(fd);
        }
        cache
    }

    /// The header as the loader checks it: the new format only (the old
    /// one with the new inside is counted as "could not tell"), little
    /// endian, as many entries as the file holds.
    fn check(fd: i32) -> Option<Cache> {
        let size = sys::fstat(fd).ok()?.size;
        let mut header = [0u8; CACHE_HEADER as usize];
        if size <= CACHE_HEADER || sys::pread(fd, &mut header, 0).ok()? < header.len() {
            return None;
        }
        let entries = u32::from_le_bytes(header[20..24].try_into().ok()?) as u64;
        let endian = header[32] & 3;
        if header[..20] != CACHE_MAGIC[..]
            || (size - CACHE_HEADER) / CACHE_ENTRY < entries
            || !(endian == 0 || endian == 2)
        {
            return None;
        }
        Some(Cache { fd, size, entries })
    }

    fn entry(&self, index: u64) -> Option<CacheEntry> {
        let mut raw = [0u8; CACHE_ENTRY as usize];
        let at = CACHE_HEADER + index * CACHE_ENTRY;
        if sys::pread(self.fd, &mut raw, at).ok()? < raw.len() {
            return None;
        }
        let word = |o: usize| u32::from_le_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]);
        Some(CacheEntry {
            flags: word(0) as i32,
            key: word(4) as u64,
            value: word(8) as u64,
            hwcap: u64::from_le_bytes(raw[16..24].try_into().ok()?),
        })
    }

    /// The NUL-terminated string at `offset`, into `out`; `None` when it
    /// is not inside the file or does not end within `out`.
    fn string<'a>(&self, offset: u64, out: &'a mut [u8]) -> Option<&'a [u8]> {
        if offset >= self.size {
            return None;
        }
        let n = sys::pread(self.fd, out, offset).ok()?;
        let end = out[..n].iter().position(|&b| b == 0)?;
        Some(&out[..end])
    }

    /// `_dl_cache_libcmp(name, key of entry)`; `None`: could not tell.
    fn compare(&self, name: &[u8], entry: &CacheEntry) -> Option<i32> {
        let mut key = [0u8; KEY_BYTES];
        let key = self.string(entry.key, &mut key)?;
        Some(library_name_order(name, key))
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        sys::close(self.fd);
    }
}

/// glibc's `_dl_cache_libcmp`, by which the cache is sorted: runs of digits
/// compare as numbers, everything else byte by byte.
fn library_name_order(a: &[u8], b: &[u8]) -> i32 {
    let at = |s: &[u8], i: usize| s.get(i).copied().unwrap_or(0);
    let (mut i, mut j) = (0, 0);
    while at(a, i) != 0 {
        let (x, y) = (at(a, i), at(b, j));
        if x.is_ascii_digit() {
            if !y.is_ascii_digit() {
                return 1;
            }
            let (mut va, mut vb) = (0i32, 0i32);
            while at(a, i).is_ascii_digit() {
                va = va.wrapping_mul(10).wrapping_add((at(a, i) - b'0') as i32);
                i += 1;
            }
            while at(b, j).is_ascii_digit() {
                vb = vb.wrapping_mul(10).wrapping_add((at(b, j) - b'0') as i32);
                j += 1;
            }
            if va != vb {
                return va.wrapping_sub(vb);
            }
        } else if y.is_ascii_digit() {
            return -1;
        } else if x != y {
            return x as i32 - y as i32;
        } else {
            i += 1;
            j += 1;
        }
    }
    at(a, i) as i32 - at(b, j) as i32
}

/// Whether the loader, looking a bare library `name` up in
/// `/etc/ld.so.cache`, surely gets a file for which `is_wanted(path)`
/// holds: the loader's binary search finds the name, and every entry for it
/// that the loader may choose (glibc-hwcaps and legacy hardware-capability
/// entries first, up to the first plain one, which it takes) is such a
/// file. No entry, no plain entry, or anything unreadable: `false` (the
/// loader would go on to directories this does not follow).
pub fn cache_sends(name: &[u8], mut is_wanted: impl FnMut(&[u8]) -> bool) -> bool {
    let Some(cache) = Cache::open() else {
        return false;
    };
    let Some(first) = first_entry_named(&cache, name) else {
        return false;
    };
    let mut path = [0u8; 512];
    let mut index = first;
    while index < cache.entries {
        let Some(entry) = cache.entry(index) else {
            return false;
        };
        if cache.compare(name, &entry) != Some(0) {
            return false;
        }
        if entry.flags == CACHE_FLAGS {
            let Some(value) = cache.string(entry.value, &mut path) else {
                return false;
            };
            if !is_wanted(value) {
                return false;
            }
            if entry.hwcap == 0 {
                return true;
            }
        }
        index += 1;
    }
    false
}

/// The loader's binary search (`search_cache`): the index of the first
/// entry whose key is `name`.
fn first_entry_named(cache: &Cache, name: &[u8]) -> Option<u64> {
    let (mut left, mut right) = (0i64, cache.entries as i64 - 1);
    while left <= right {
        let middle = (left + right) / 2;
        let entry = cache.entry(middle as u64)?;
        let order = cache.compare(name, &entry)?;
        if order == 0 {
            let mut first = middle as u64;
            while first > 0 {
                let before = cache.entry(first - 1)?;
                if cache.compare(name, &before) != Some(0) {
                    break;
                }
                first -= 1;
            }
            return Some(first);
        }
        if order < 0 {
            left = middle + 1;
        } else {
            right = middle - 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names ld.so preloads from a file of `content`.
    fn preloaded(content: &[u8]) -> Vec<Vec<u8>> {
        let mut file = content.to_vec();
        let mut names = vec![];
        preload_file_entries(&mut file, |name| {
            names.push(name.to_vec());
            false
        });
        names
    }

    fn names(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|n| n.as_bytes().to_vec()).collect()
    }

    #[test]
    fn the_preload_file_is_split_as_ld_so_splits_it() {
        assert_eq!(preloaded(b"/a.so /b.so\n"), names(&["/a.so", "/b.so"]));
        assert_eq!(
            preloaded(b"/a.so:/b.so\t/c.so"),
            names(&["/a.so", "/b.so", "/c.so"])
        );
        assert_eq!(preloaded(b"/a.so"), names(&["/a.so"]));
        assert_eq!(preloaded(b""), names(&[]));
        assert_eq!(preloaded(b"# /a.so\n/b.so\n"), names(&["/b.so"]));
    }

    #[test]
    fn the_preload_file_ends_at_a_nul_except_for_a_last_name_taken_apart() {
        // strsep over a C string: nothing after the NUL.
        assert_eq!(preloaded(b"/a.so\0 /b.so\n"), names(&["/a.so"]));
        assert_eq!(preloaded(b"\0/b.so\n"), names(&[]));
        // The last name without a separator after it is taken apart.
        assert_eq!(preloaded(b"/a.so\0 /b.so"), names(&["/a.so", "/b.so"]));
        assert_eq!(
            preloaded(b"/a.so\n/b.so\0/c.so"),
            names(&["/a.so", "/b.so"])
        );
    }

    #[test]
    fn a_comment_far_from_the_first_may_be_read_as_names() {
        // After a long first comment, ld.so looks for the next `#` only in
        // the first (size - that comment's end) bytes: the second stays.
        let long = format!("#{}\n/x.so # /y.so\n", "c".repeat(40));
        assert_eq!(preloaded(long.as_bytes()), names(&["/x.so", "#", "/y.so"]));
        // A short first comment leaves room to find the second, but the
        // blanks stop as many bytes short of its end as the first took.
        assert_eq!(preloaded(b"#c\n/x.so # /y.so\n"), names(&["/x.so", "o"]));
    }

    #[test]
    fn library_names_compare_as_glibc_sorts_them() {
        assert_eq!(library_name_order(b"libc.so.6", b"libc.so.6"), 0);
        assert!(library_name_order(b"libc.so.10", b"libc.so.9") > 0);
        // A digit sorts after anything else.
        assert!(library_name_order(b"libc.so.6", b"libc.so.x") > 0);
        assert!(library_name_order(b"liba.so", b"libb.so") < 0);
        assert!(library_name_order(b"libksmauto.so", b"libksmauto.so.1") < 0);
        assert!(library_name_order(b"libksmauto.so.1", b"libksmauto.so") > 0);
    }
}
