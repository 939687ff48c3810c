//! Readers and parsers for the kernel's per-process KSM truth:
//! `/proc/self/ksm_stat`, `/proc/self/maps` and `/proc/self/smaps`; and
//! what the exit report asks of the parent (`/proc/PID/maps`, `environ`,
//! `exe`).
//!
//! Parsers are pure functions over byte slices (unit-tested without any
//! preloading); the reader streams a file through a caller's buffer, which
//! callers that hooks can reach take from a static [`LineBuffer`] (a hook may
//! run on an 8 KiB signal stack: no big buffer ever goes on the stack).
//! Never allocates, never locks (a busy buffer is a skipped read, never a
//! wait).

use super::sys::{self, Errno};
// The pure parsers shared with the CLI and the tests live in the contract;
// this module reads the files and parses what only the library needs.
pub use ksmauto_contract::proc::{parse_dec, KsmStat};
use ksmauto_contract::proc::{trim, Stat};
use ksmauto_contract::smaps::VmFlags;

/// Bytes of one [`LineBuffer`]: the longest line passed whole (a maps line
/// with a path of up to `PATH_MAX` fits).
pub const LINE_BUFFER_BYTES: usize = 8192;

/// A static line buffer behind a try-lock, for [`read_lines`].
pub type LineBuffer = crate::scratch::Scratch<LINE_BUFFER_BYTES>;

/// For readers outside the catch-up scan (the report's smaps totals, the main
/// stack lookup); the scan has its own, so neither ever waits for the other.
pub static SHARED_LINES: LineBuffer = LineBuffer::new();

/// [`for_each_line`] through `buffer`; `Err(EBUSY)` without reading if another
/// thread (or an interrupted caller on this one) is using it.
pub fn read_lines(path: &[u8], buffer: &LineBuffer, f: impl FnMut(&[u8])) -> Result<(), Errno> {
    let mut held = buffer.try_take().ok_or(libc::EBUSY)?;
    for_each_line(path, held.bytes(), f)
}

/// Calls `f` with each line of the file at `path` (NUL-terminated), without the
/// newline, reading through `buf`. A line longer than `buf` is passed truncated.
pub fn for_each_line(path: &[u8], buf: &mut [u8], f: impl FnMut(&[u8])) -> Result<(), Errno> {
    for_each_record(path, b'\n', buf, f)
}

/// [`for_each_line`] whose `f` may end the reading early (by returning
/// `false`): the rest of the file is never read, nor made by the kernel.
pub fn for_each_line_while(
    path: &[u8],
    buf: &mut [u8],
    f: impl FnMut(&[u8]) -> bool,
) -> Result<(), Errno> {
    for_each_record_while(path, b'\n', buf, f)
}

/// [`for_each_line`] with records ended by `end` instead of a newline.
fn for_each_record(
    path: &[u8],
    end: u8,
    buf: &mut [u8],
    mut f: impl FnMut(&[u8]),
) -> Result<(), Errno> {
    for_each_record_while(path, end, buf, |record| {
        f(record);
        true
    })
}

/// [`for_each_record`] until `f` returns `false`.
fn for_each_record_while(
    path: &[u8],
    end: u8,
    buf: &mut [u8],
    mut f: impl FnMut(&[u8]) -> bool,
) -> Result<(), Errno> {
    let fd = sys::open(path, libc::O_RDONLY, 0)?;
    let mut filled = 0usize;
    let mut skipping_overlong = false;
    let result = 'read: loop {
        let n = match sys::read(fd, &mut buf[filled..]) {
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        filled += n;
        let mut start = 0;
        while let Some(pos) = buf[start..filled].iter().position(|&b| b == end) {
            if !skipping_overlong && !f(&buf[start..start + pos]) {
                break 'read Ok(());
            }
            skipping_overlong = false;
            start += pos + 1;
        }
        if n == 0 {
            if start < filled && !skipping_overlong {
                f(&buf[start..filled]);
            }
            break Ok(());
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if filled == buf.len() {
            if !skipping_overlong && !f(&buf[..filled]) {
                break Ok(());
            }
            skipping_overlong = true;
            filled = 0;
        }
    };
    sys::close(fd);
    result
}

/// The number on the `key` line (e.g. `Seccomp:`) of a `status` file at
/// `path`, read through `buf`; `Ok(None)` if the file has no such line.
pub fn status_number(path: &[u8], buf: &mut [u8], key: &[u8]) -> Result<Option<u64>, Errno> {
    let mut value = None;
    for_each_line(path, buf, |line| {
        if let Some(v) = line.strip_prefix(key) {
            value = parse_dec(trim(v));
        }
    })?;
    Ok(value)
}

/// A digest of what restricts a thread (`Seccomp`, `NoNewPrivs`, the
/// capability sets, and who it acts as: `Uid`, `Gid`, `Groups` of
/// `/proc/<path>/status`): two threads with the same digest are restricted
/// alike. `None` if it cannot be read. Reads through
/// a buffer on the stack (2 KiB): for the catch-up thread, never a hook.
pub fn restrictions_digest(path: &[u8]) -> Option<u64> {
    let mut buf = [0u8; 2048];
    let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
    let mut seen = 0;
    for_each_line(path, &mut buf, |line| {
        const FIELDS: [&[u8]; 9] = [
            b"Seccomp:",
            b"NoNewPrivs:",
            b"CapInh:",
            b"CapPrm:",
            b"CapEff:",
            b"CapBnd:",
            b"Uid:",
            b"Gid:",
            b"Groups:",
        ];
        if FIELDS.iter().any(|f| line.starts_with(f)) {
            seen += 1;
            for &b in line.iter().chain(b"\n") {
                digest = (digest ^ b as u64).wrapping_mul(0x100_0000_01b3);
            }
        }
    })
    .ok()?;
    (seen > 0).then_some(digest)
}

/// Whether process `pid` has a file named `file_name` (a last path
/// component) mapped: read from `/proc/PID/maps` through `buffer`. `None`
/// when it cannot be read (gone, another user's) or the name is empty.
pub fn process_maps_file(pid: i32, file_name: &[u8], buffer: &LineBuffer) -> Option<bool> {
    if file_name.is_empty() || pid <= 0 {
        return None;
    }
    let mut path = [0u8; 40];
    let mut w = crate::fmt::BufWriter::new(&mut path);
    w.str("/proc/").u64(pid as u64).str("/maps\0");
    let len = w.len();
    let mut found = false;
    let mut lines = 0;
    read_lines(&path[..len], buffer, |line| {
        lines += 1;
        if let Some(vma) = MapsLine::parse(line) {
            if vma.name.rsplit(|&b| b == b'/').next() == Some(file_name) {
                found = true;
            }
        }
    })
    .ok()?;
    // A process without memory (exiting, a zombie) shows no lines.
    (lines > 0).then_some(found)
}

/// Whether process `pid` was started to run a file named `file_name` (a
/// last path component) as a preload: an `LD_PRELOAD` entry of the
/// environment its program was started with (`/proc/PID/environ`: what
/// its last `exec` was given; later changes do not show) names one, split
/// as the loader splits it (colons and spaces). Read through `buffer`;
/// `None` when it cannot be read (gone, another user's) or the name is
/// empty.
pub fn process_preloads(pid: i32, file_name: &[u8], buffer: &LineBuffer) -> Option<bool> {
    if file_name.is_empty() || pid <= 0 {
        return None;
    }
    let mut path = [0u8; 40];
    let mut w = crate::fmt::BufWriter::new(&mut path);
    w.str("/proc/").u64(pid as u64).str("/environ\0");
    let len = w.len();
    let mut held = buffer.try_take()?;
    let mut found = false;
    let read = for_each_record(&path[..len], 0, held.bytes(), |entry| {
        if let Some(list) = entry.strip_prefix(b"LD_PRELOAD=") {
            found |= names_file(list, file_name);
        }
    });
    // An environment may hold secrets: none stays behind in the buffer.
    held.bytes().fill(0);
    read.ok()?;
    Some(found)
}

/// Whether a preload list (entries split on colons and spaces) has an entry
/// whose last path component is `file_name`.
fn names_file(list: &[u8], file_name: &[u8]) -> bool {
    list.split(|&b| b == b':' || b == b' ')
        .any(|entry| entry.rsplit(|&b| b == b'/').next() == Some(file_name))
}

/// The program file process `pid` runs (`/proc/PID/exe`, followed: one
/// `stat`, no read). An `exec` changes it (unless the process runs the same
/// file again). `None` when it cannot be asked: the process is gone or
/// exiting (no memory), or another user's.
pub fn process_image(pid: i32) -> Option<sys::FileStatus> {
    if pid <= 0 {
        return None;
    }
    let mut path = [0u8; 40];
    let mut w = crate::fmt::BufWriter::new(&mut path);
    w.str("/proc/").u64(pid as u64).str("/exe\0");
    sys::stat_at(libc::AT_FDCWD, sys::c_path(&path).ok()?, 0).ok()
}

/// `vm.max_map_count`: the most VMAs a process may have (the kernel's
/// default, 65530, if it cannot be read).
pub fn max_map_count() -> u64 {
    let mut buf = [0u8; 24];
    match crate::os::sys::read_file(b"/proc/sys/vm/max_map_count\0", &mut buf) {
        Ok(n) => {
            let text = &buf[..n];
            let digits = text.iter().take_while(|c| c.is_ascii_digit()).count();
            parse_dec(&text[..digits])
                .filter(|&v| v > 0)
                .unwrap_or(65530)
        }
        Err(_) => 65530,
    }
}

pub fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

/// Reads `/proc/thread-self/ksm_stat`; `None` where the kernel has no KSM.
/// The calling thread's entry, not `/proc/self`'s: that is the main
/// thread's, which shows nothing once the main thread has ended
/// (`pthread_exit`) while others run on in the same memory.
pub fn read_self_ksm_stat() -> Option<KsmStat> {
    let mut buf = [0u8; 512];
    let n = sys::read_file(b"/proc/thread-self/ksm_stat\0", &mut buf).ok()?;
    Some(KsmStat::parse(&buf[..n]))
}

/// When this process started, in clock ticks after boot: `starttime` of
/// `/proc/self/stat` (the process's, kept while any of its threads runs).
pub fn process_start_time() -> Option<u64> {
    let mut buf = [0u8; 512];
    let n = sys::read_file(b"/proc/self/stat\0", &mut buf).ok()?;
    Stat::parse(&buf[..n])?.start_time()
}

/// The state letter of this process's main thread and the process's
/// thread count (`/proc/self/stat`). A main thread that ended while others
/// run is a zombie (`Z`) and still counted.
pub fn main_state_and_threads() -> Option<(u8, u64)> {
    let mut buf = [0u8; 512];
    let n = sys::read_file(b"/proc/self/stat\0", &mut buf).ok()?;
    let stat = Stat::parse(&buf[..n])?;
    Some((stat.state()?, stat.num_threads()?))
}

/// When thread `tid` of this process started (field 22 of its `stat`, in
/// clock ticks after boot; `None` for the calling thread: its own), or
/// `None` if it cannot be read (gone, no `/proc`) or `/proc` does not
/// name threads as this process's pid namespace does (a `/proc` of
/// another namespace: `/proc/self/task/TID` would be another thread or
/// none). Reads through a buffer on the stack (512 bytes).
pub fn thread_start_time(tid: Option<i32>) -> Option<u64> {
    if !proc_names_threads_as_we_do() {
        return None;
    }
    let mut path = [0u8; 48];
    let mut w = crate::fmt::BufWriter::new(&mut path);
    match tid {
        Some(tid) => w.str("/proc/self/task/").u64(tid as u64).str("/stat\0"),
        None => w.str("/proc/thread-self/stat\0"),
    };
    let len = w.len();
    let mut buf = [0u8; 512];
    let n = sys::read_file(&path[..len], &mut buf).ok()?;
    Stat::parse(&buf[..n])?.start_time()
}

/// Whether `/proc` is of this process's pid namespace: `/proc/thread-self`
/// links to `PID/task/TID` with the ids `getpid` and `gettid` give.
fn proc_names_threads_as_we_do() -> bool {
    let mut link = [0u8; 48];
    let Ok(n) = sys::readlink(c"/proc/thread-self", &mut link) else {
        return false;
    };
    let mut expected = [0u8; 48];
    let mut w = crate::fmt::BufWriter::new(&mut expected);
    w.u64(sys::getpid() as u64)
        .str("/task/")
        .u64(sys::gettid() as u64);
    let len = w.len();
    link[..n] == expected[..len]
}

/// One line of `/proc/<pid>/maps` (also the header line of each `smaps` entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapsLine<'a> {
    pub start: usize,
    pub end: usize,
    pub perms: [u8; 4],
    pub offset: u64,
    pub inode: u64,
    pub name: &'a [u8],
}

impl<'a> MapsLine<'a> {
    /// `7f12-7f34 rw-p 00000000 00:00 0    [heap]`; `None` for any other line.
    pub fn parse(line: &'a [u8]) -> Option<MapsLine<'a>> {
        let mut fields = line.splitn(6, |&b| b == b' ');
        let range = fields.next()?;
        let dash = range.iter().position(|&b| b == b'-')?;
        let start = parse_hex(&range[..dash])? as usize;
        let end = parse_hex(&range[dash + 1..])? as usize;
        let perms_field = fields.next()?;
        if perms_field.len() != 4 {
            return None;
        }
        let perms = [
            perms_field[0],
            perms_field[1],
            perms_field[2],
            perms_field[3],
        ];
        let offset = parse_hex(fields.next()?)?;
        let _dev = fields.next()?;
        let inode = parse_dec(fields.next()?)?;
        let name = trim(fields.next().unwrap_or(b""));
        Some(MapsLine {
            start,
            end,
            perms,
            offset,
            inode,
            name,
        })
    }

    pub fn is_private(&self) -> bool {
        self.perms[3] == b'p'
    }

    pub fn is_executable(&self) -> bool {
        self.perms[2] == b'x'
    }

    pub fn class(&self) -> RegionClass {
        RegionClass::of(self.inode, self.name)
    }
}

/// How reports group memory. Anonymous mappings glibc or the program made with
/// `mmap` carry no name (or an `[anon:…]` name set with `PR_SET_VMA`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionClass {
    Heap,
    Anon,
    Stack,
    Other,
}

impl RegionClass {
    pub const ALL: [RegionClass; 4] = [
        RegionClass::Heap,
        RegionClass::Anon,
        RegionClass::Stack,
        RegionClass::Other,
    ];

    pub fn of(inode: u64, name: &[u8]) -> RegionClass {
        if inode != 0 {
            return RegionClass::Other;
        }
        match name {
            b"[heap]" => RegionClass::Heap,
            b"" => RegionClass::Anon,
            n if n.starts_with(b"[anon:") || n.starts_with(b"[anon_shmem:") => RegionClass::Anon,
            n if n.starts_with(b"[stack") => RegionClass::Stack,
            _ => RegionClass::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RegionClass::Heap => "heap",
            RegionClass::Anon => "anon",
            RegionClass::Stack => "stack",
            RegionClass::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Totals over `/proc/self/smaps`, fed one line at a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmapsTotals {
    /// `KSM:` kB per [`RegionClass`] (index = class as usize).
    pub ksm_kb: [u64; 4],
    /// `Anonymous:` kB in private mappings.
    pub anon_kb: u64,
    /// The part of `anon_kb` in mappings whose `VmFlags` carry `mg`.
    pub mergeable_anon_kb: u64,
    /// Whether the kernel printed any `KSM:` line (6.x kernels do).
    pub has_ksm_field: bool,
    current: Option<(RegionClass, bool)>,
    current_anon_kb: u64,
}

impl SmapsTotals {
    pub fn ksm_kb_of(&self, class: RegionClass) -> u64 {
        self.ksm_kb[class.index()]
    }

    pub fn feed_line(&mut self, line: &[u8]) {
        if let Some(vma) = MapsLine::parse(line) {
            self.current = Some((vma.class(), vma.is_private()));
            self.current_anon_kb = 0;
            return;
        }
        let Some((class, private)) = self.current else {
            return;
        };
        if let Some(v) = line.strip_prefix(b"KSM:") {
            self.has_ksm_field = true;
            self.ksm_kb[class.index()] += parse_kb(v);
        } else if let Some(v) = line.strip_prefix(b"Anonymous:") {
            if private {
                self.current_anon_kb = parse_kb(v);
                self.anon_kb += self.current_anon_kb;
            }
        } else if let Some(flags) = VmFlags::of_line(line) {
            if private && flags.mergeable() {
                self.mergeable_anon_kb += self.current_anon_kb;
            }
        }
    }

    pub fn read_self() -> Option<SmapsTotals> {
        let mut totals = SmapsTotals::default();
        read_lines(b"/proc/thread-self/smaps\0", &SHARED_LINES, |line| {
            totals.feed_line(line)
        })
        .ok()?;
        Some(totals)
    }
}

fn parse_kb(v: &[u8]) -> u64 {
    ksmauto_contract::proc::parse_kb(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `comm` may hold spaces and parentheses: fields are counted after its
    /// last `)` (the parser is `contract::proc::Stat`, tested there).
    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line =
            b"4242 (a) b (c) Z 1 4242 4242 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 3 0 98765 1000 10";
        let stat = Stat::parse(line).unwrap();
        assert_eq!(stat.state(), Some(b'Z'));
        assert_eq!(stat.num_threads(), Some(3));
        assert_eq!(stat.start_time(), Some(98765));
        let (state, threads) = main_state_and_threads().unwrap();
        assert!(state == b'R' || state == b'S', "{}", state as char);
        assert!(threads >= 1);
    }

    #[test]
    fn a_status_number_is_read_by_its_key() {
        let mut buf = [0u8; 2048];
        let threads = status_number(b"/proc/self/status\0", &mut buf, b"Threads:");
        assert!(matches!(threads, Ok(Some(n)) if n >= 1), "{threads:?}");
        let none = status_number(b"/proc/self/status\0", &mut buf, b"NoSuchKey:");
        assert_eq!(none, Ok(None));
        assert!(status_number(b"/proc/no/such\0", &mut buf, b"Threads:").is_err());
    }

    #[test]
    fn a_threads_start_time_reads_the_same_from_itself_and_by_its_id() {
        let (own, by_id) = std::thread::spawn(|| {
            (thread_start_time(None), thread_start_time(Some(sys::gettid())))
        })
        .join()
        .unwrap();
        assert!(own.is_some_and(|t| t > 0));
        assert_eq!(own, by_id);
        assert_eq!(thread_start_time(Some(i32::MAX)), None);
    }

    #[test]
    fn a_thread_is_restricted_as_its_process_until_it_restricts_itself() {
        let main = restrictions_digest(b"/proc/self/status\0");
        let here = std::thread::spawn(|| restrictions_digest(b"/proc/thread-self/status\0"))
            .join()
            .unwrap();
        assert!(main.is_some());
        assert_eq!(main, here);
        let changed = std::thread::spawn(|| {
            // SAFETY: a flag-only prctl, on a test thread of its own.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            restrictions_digest(b"/proc/thread-self/status\0")
        })
        .join()
        .unwrap();
        assert_ne!(main, changed);
    }

    #[test]
    fn maps_line_with_and_without_name() {
        let l = MapsLine::parse(
            b"55d0c2a4e000-55d0c2a6f000 rw-p 00000000 00:00 0                          [heap]",
        )
        .unwrap();
        assert_eq!((l.start, l.end), (0x55d0c2a4e000, 0x55d0c2a6f000));
        assert_eq!(l.class(), RegionClass::Heap);
        assert!(l.is_private() && !l.is_executable());
        let l = MapsLine::parse(b"7f00000000-7f00001000 rwxp 00000000 00:00 0 ").unwrap();
        assert_eq!(l.class(), RegionClass::Anon);
        assert!(l.is_executable());
        let l =
            MapsLine::parse(b"7f00000000-7f00001000 r--p 00001000 fe:01 1234  /usr/lib/libc.so.6")
                .unwrap();
        assert_eq!(l.class(), RegionClass::Other);
        assert_eq!(l.offset, 0x1000);
        assert_eq!(MapsLine::parse(b"Rss:                 132 kB"), None);
        assert_eq!(MapsLine::parse(b"VmFlags: rd wr mr mw me ac sd"), None);
    }

    #[test]
    fn region_classes() {
        assert_eq!(RegionClass::of(0, b"[stack]"), RegionClass::Stack);
        assert_eq!(RegionClass::of(0, b"[anon:jemalloc]"), RegionClass::Anon);
        assert_eq!(RegionClass::of(0, b"[vdso]"), RegionClass::Other);
        assert_eq!(RegionClass::of(99, b""), RegionClass::Other);
    }

    #[test]
    fn smaps_totals_sum_ksm_per_class_and_mergeable_anonymous_memory() {
        let text: &[u8] = b"\
55d0c2a4e000-55d0c2a6f000 rw-p 00000000 00:00 0   [heap]
Anonymous:            100 kB
KSM:                   40 kB
VmFlags: rd wr mr mw me ac mg
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Anonymous:             12 kB
KSM:                   12 kB
VmFlags: rd wr mr mw me ac
7f0000200000-7f0000300000 rw-s 00000000 00:01 77  /dev/zero (deleted)
Anonymous:              0 kB
KSM:                    0 kB
VmFlags: rd wr sh mr mw me ms mg
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0   [stack]
Anonymous:              8 kB
KSM:                    4 kB
VmFlags: rd wr mr mw me gd ac mg
";
        let mut t = SmapsTotals::default();
        for line in text.split(|&b| b == b'\n') {
            t.feed_line(line);
        }
        assert!(t.has_ksm_field);
        assert_eq!(t.ksm_kb_of(RegionClass::Heap), 40);
        assert_eq!(t.ksm_kb_of(RegionClass::Anon), 12);
        assert_eq!(t.ksm_kb_of(RegionClass::Stack), 4);
        assert_eq!(t.ksm_kb_of(RegionClass::Other), 0);
        assert_eq!(t.anon_kb, 120);
        assert_eq!(t.mergeable_anon_kb, 108);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_dec(b" 42 "), Some(42));
        assert_eq!(parse_dec(b"4x"), None);
        assert_eq!(parse_dec(b"99999999999999999999999"), None);
        assert_eq!(parse_hex(b"7fFF"), Some(0x7fff));
        assert_eq!(parse_hex(b""), None);
    }

    #[test]
    fn a_preload_list_names_a_file_by_its_last_component() {
        assert!(names_file(b"/usr/lib/libksmauto.so", b"libksmauto.so"));
        assert!(names_file(b"/a/x.so:/b/libksmauto.so", b"libksmauto.so"));
        assert!(names_file(b"x.so libksmauto.so", b"libksmauto.so"));
        assert!(!names_file(b"/a/libksmauto.so.1", b"libksmauto.so"));
        assert!(!names_file(b"", b"libksmauto.so"));
    }

    /// The environment a program was started with, read from another
    /// process: the child's `LD_PRELOAD` (a missing file: the loader only
    /// warns) names the file, no other.
    #[test]
    fn a_process_started_with_a_preload_is_seen_from_outside() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(
                "LD_PRELOAD",
                "/nonexistent/a.so:/nonexistent/libksmauto-unit.so",
            )
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let buffer = Box::new(LineBuffer::new());
        // The environment is the new program's once its exec is done.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut seen = None;
        while std::time::Instant::now() < deadline {
            seen = process_preloads(pid, b"libksmauto-unit.so", &buffer);
            if seen == Some(true) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let other = process_preloads(pid, b"libksmauto.so", &buffer);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(seen, Some(true));
        assert_eq!(other, Some(false));
        assert_eq!(process_preloads(pid, b"", &buffer), None);
    }

    #[test]
    fn line_reader_streams_a_real_file_and_truncates_overlong_lines() {
        let dir = std::env::temp_dir().join(format!("ksmauto-lines-{}", std::process::id()));
        let long = "x".repeat(20000);
        std::fs::write(&dir, format!("a\n{long}\nb\nlast")).unwrap();
        let mut path = dir.to_str().unwrap().as_bytes().to_vec();
        path.push(0);
        let mut seen: Vec<Vec<u8>> = Vec::new();
        let buffer = Box::new(LineBuffer::new());
        read_lines(&path, &buffer, |l| seen.push(l.to_vec())).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0], b"a");
        assert_eq!(seen[1].len(), 8192);
        assert_eq!(seen[2], b"b");
        assert_eq!(seen[3], b"last");
    }

    #[test]
    fn a_busy_line_buffer_is_skipped_not_waited_for() {
        let buffer = Box::new(LineBuffer::new());
        let mut inner = None;
        let outer = read_lines(b"/proc/thread-self/maps\0", &buffer, |_| {
            if inner.is_none() {
                inner = Some(read_lines(b"/proc/thread-self/maps\0", &buffer, |_| {}));
            }
        });
        assert_eq!(outer, Ok(()));
        assert_eq!(inner, Some(Err(libc::EBUSY)));
        assert_eq!(
            read_lines(b"/proc/thread-self/maps\0", &buffer, |_| {}),
            Ok(())
        );
    }
}
