//! Errors with exit codes, /proc helpers and number formatting. The
//! bottom layer of the CLI: knows no command and uses no other module.
//!
//! `/proc` is read here as bytes ([`read_proc`]), never as UTF-8 text: a
//! process names itself (`prctl(PR_SET_NAME)`), its files and its cgroups
//! with any bytes, and a reading that fails on them would take it for gone.
//! Such names become text through [`as_text`] only to be shown.

use ksmauto_contract::proc;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;

/// The library's file name: a mapping, or an `LD_PRELOAD` entry, is the
/// library when its last path component is exactly this.
pub const LIB_NAME: &str = "libksmauto.so";

/// Whether `path` (a mapped file, an `LD_PRELOAD` entry) names the library:
/// by its last component, never by a substring (a program in a directory
/// `libksmauto/` is not the library).
pub fn is_library_path(path: &[u8]) -> bool {
    let path = path.trim_ascii_end();
    let path = path.strip_suffix(b" (deleted)").unwrap_or(path);
    path.rsplit(|&b| b == b'/').next() == Some(LIB_NAME.as_bytes())
}

/// Whether a memory map (`/proc/PID/maps` or `smaps` text) maps the library.
pub fn maps_the_library(maps: &[u8]) -> bool {
    maps.split(|&b| b == b'\n')
        .filter_map(MapsLine::parse)
        .any(|m| is_library_path(m.path))
}

/// Whether an `LD_PRELOAD` value (entries split by `:` or spaces) names the library.
pub fn preload_names_the_library(value: &[u8]) -> bool {
    value
        .split(|&b| b == b':' || b == b' ')
        .any(is_library_path)
}

/// One line of `/proc/PID/maps`, or the header line of a VMA in `smaps`:
/// `start-end perms offset dev inode [path]`. The path is the file's name
/// as it is (the kernel escapes only a newline), so any bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapsLine<'a> {
    pub start: u64,
    pub end: u64,
    pub perms: &'a [u8],
    pub inode: &'a [u8],
    /// Blanks around it trimmed; empty for anonymous memory.
    pub path: &'a [u8],
}

impl<'a> MapsLine<'a> {
    /// `None` for any other line (an `smaps` field such as `Rss:`).
    pub fn parse(line: &'a [u8]) -> Option<MapsLine<'a>> {
        let mut f = line.splitn(6, |&b| b == b' ');
        let (range, perms, _offset, _dev, inode) =
            (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
        let hex = |s: &[u8]| {
            let s = std::str::from_utf8(s).ok()?;
            u64::from_str_radix(s, 16).ok()
        };
        let dash = range.iter().position(|&b| b == b'-')?;
        Some(MapsLine {
            start: hex(&range[..dash])?,
            end: hex(&range[dash + 1..])?,
            perms,
            inode,
            path: proc::trim(f.next().unwrap_or(b"")),
        })
    }
}

/// Reads a `/proc` file whole: the one way the CLI reads `/proc` (see the
/// module doc), as the bytes the kernel gives.
pub fn read_proc(path: impl AsRef<std::path::Path>) -> io::Result<Vec<u8>> {
    std::fs::read(path)
}

/// Bytes from outside (a comm, a path, a user or cgroup name) as text:
/// UTF-8 as it is, each byte that is not part of UTF-8 as `\xNN`. The same
/// in every output — text, JSON (whose strings must be UTF-8) and
/// Prometheus — so one process has one name; text output then passes it
/// through [`shown`] for the control characters.
pub fn as_text(bytes: &[u8]) -> String {
    let mut o = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        o.push_str(chunk.valid());
        for b in chunk.invalid() {
            o.push_str(&format!("\\x{b:02x}"));
        }
    }
    o
}

/// A path (a program's, a link's target) as text, as [`as_text`] makes it.
pub fn path_text(path: &std::path::Path) -> String {
    as_text(path.as_os_str().as_bytes())
}

/// A [`Mode`](ksmauto_contract::Mode) in JSON, as its name (for serde's
/// `serialize_with`: the contract crate depends on nothing, serde neither).
pub fn mode_name<S: serde::Serializer>(
    mode: &ksmauto_contract::Mode,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(mode.name())
}

/// Exit codes scripts can rely on (docs/cli.md, "Exit codes").
pub const EXIT_RUNTIME: i32 = 1;
pub const EXIT_NO_PID: i32 = 3;
pub const EXIT_PERM: i32 = 4;
pub const EXIT_NO_KSM: i32 = 5;

/// An error that knows which exit code it maps to.
#[derive(Debug)]
pub struct Coded {
    pub code: i32,
    pub msg: String,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Coded {}

pub fn fail(code: i32, msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code,
        msg: msg.into(),
    })
}

/// The exit code of an error chain: the first `Coded` in it, else a
/// permission error anywhere in it, else 1.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<Coded>() {
            return c.code;
        }
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::PermissionDenied {
                return EXIT_PERM;
            }
        }
    }
    EXIT_RUNTIME
}

/// Maps an I/O error on `/proc/PID/...` to a coded error.
pub fn proc_err(pid: i32, what: &str, e: io::Error) -> anyhow::Error {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ESRCH) => {
            fail(EXIT_NO_PID, format!("no such process: {pid}"))
        }
        Some(libc::EACCES) | Some(libc::EPERM) => fail(
            EXIT_PERM,
            format!(
                "permission denied: cannot read {what} of pid {pid} (run as root or as its owner)"
            ),
        ),
        _ => fail(
            EXIT_RUNTIME,
            format!("cannot read {what} of pid {pid}: {e}"),
        ),
    }
}

pub fn page_size() -> u64 {
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

pub fn isatty(fd: i32) -> bool {
    unsafe { libc::isatty(fd) == 1 }
}

/// `numerator / denominator`, or `None` where that is no number: a
/// denominator that is zero, negative or missing (ksmd that used no CPU,
/// a window of no time, no ksmd thread found).
pub fn ratio(numerator: f64, denominator: Option<f64>) -> Option<f64> {
    let d = denominator.filter(|d| d.is_finite() && *d > 0.0)?;
    Some(numerator / d).filter(|r| r.is_finite())
}

pub fn human_bytes(n: u64) -> String {
    human_bytes_i(n as i64)
}

pub fn human_bytes_i(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "" };
    let a = n.unsigned_abs() as f64;
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = a;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{sign}{} B", a as u64)
    } else {
        format!("{sign}{v:.1} {}", UNITS[u])
    }
}

/// A string from outside (a process's comm, a cgroup path, a program or
/// user name, an environment value) as text output shows it: control
/// characters and other characters that print nothing visible (bidi
/// overrides, zero-width marks) are escaped (`\n`, `\t`, `\r`, `\e`,
/// `\xNN`, `\u{NNNN}`), so such a name can neither move the terminal's
/// cursor, recolour it or set its title, nor add a line of its own to a
/// table. Every text rendering passes outside strings through here; JSON
/// and Prometheus escape by their own rules. (Bytes that are not UTF-8
/// were made `\xNN` already, by [`as_text`].)
pub fn shown(s: &str) -> String {
    let invisible = |c: char| {
        matches!(c,
            '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}')
    };
    if !s.chars().any(|c| c.is_control() || invisible(c)) {
        return s.to_string();
    }
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            '\r' => o.push_str("\\r"),
            '\x1b' => o.push_str("\\e"),
            c if (c as u32) < 0x100 && (c.is_control() || invisible(c)) => {
                o.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() || invisible(c) => o.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => o.push(c),
        }
    }
    o
}

/// A process's name (`/proc/PID/comm`, any bytes but NUL) as [`as_text`]
/// makes it; `?` when it cannot be read.
pub fn comm(pid: i32) -> String {
    match read_proc(format!("/proc/{pid}/comm")) {
        Ok(name) => as_text(name.strip_suffix(b"\n").unwrap_or(&name)),
        Err(_) => "?".into(),
    }
}

/// `/proc/PID/ksm_stat`, as far as the kernel has it (a field it lacks
/// reads as zero or no).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct KsmStat {
    pub rmap_items: u64,
    pub merging_pages: u64,
    pub zero_pages: u64,
    pub profit: i64,
    pub merge_any: bool,
    pub mergeable: bool,
}

impl From<proc::KsmStat> for KsmStat {
    fn from(k: proc::KsmStat) -> KsmStat {
        KsmStat {
            rmap_items: k.rmap_items,
            merging_pages: k.merging_pages.unwrap_or(0),
            zero_pages: k.zero_pages.unwrap_or(0),
            profit: k.process_profit.unwrap_or(0),
            merge_any: k.merge_any.unwrap_or(false),
            mergeable: k.mergeable.unwrap_or(false),
        }
    }
}

/// Read here, parsed by the parser the library and the tests use.
pub fn ksm_stat(pid: i32) -> Option<KsmStat> {
    ksm_stat_in(&format!("/proc/{pid}"))
}

/// `ksm_stat` of a `/proc` directory: a process's, or one of its threads'
/// (`/proc/PID/task/TID`, the same figures: they are the memory's).
pub fn ksm_stat_in(dir: &str) -> Option<KsmStat> {
    let text = read_proc(format!("{dir}/ksm_stat")).ok()?;
    Some(proc::KsmStat::parse(&text).into())
}

/// A kernel thread (PF_KTHREAD in `/proc/PID/stat`, readable by anyone):
/// it has no user memory, so KSM has nothing of it to merge.
pub fn is_kernel_thread(pid: i32) -> bool {
    read_proc(format!("/proc/{pid}/stat"))
        .ok()
        .is_some_and(|s| proc::Stat::parse(&s).is_some_and(|s| s.is_kernel_thread()))
}

/// Whether this user is refused `/proc/PID/ksm_stat` (mode 0400: only root
/// and the process's owner read it). Kernel threads are not counted: they
/// have no memory to merge.
pub fn ksm_stat_refused(pid: i32) -> bool {
    matches!(
        std::fs::File::open(format!("/proc/{pid}/ksm_stat")),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied
    ) && !is_kernel_thread(pid)
}

/// What a user who is not root is told when some processes could not be read.
pub fn unreadable_note(n: usize) -> String {
    format!(
        "{n} process{} of other users could not be read (run as root to see every process): \
         the figures and trust domains cover only the processes that could",
        if n == 1 { "" } else { "es" }
    )
}

/// `Rss` and `Pss` of `/proc/PID/smaps_rollup`, in bytes.
pub fn rss_pss(pid: i32) -> Option<(u64, u64)> {
    rss_pss_in(&format!("/proc/{pid}"))
}

/// [`rss_pss`] of a `/proc` directory (a process's or one of its threads').
pub fn rss_pss_in(dir: &str) -> Option<(u64, u64)> {
    let text = read_proc(format!("{dir}/smaps_rollup")).ok()?;
    let rollup = proc::SmapsRollup::parse(&text);
    Some((rollup.rss_kb? * 1024, rollup.pss_kb? * 1024))
}

/// The bytes of a `smaps` value such as `   132 kB` (0 if it is not one).
pub fn kb_bytes(value: &[u8]) -> u64 {
    proc::parse_kb(value).unwrap_or(0) * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ksm_stat_field_the_kernel_lacks_reads_as_zero_or_no() {
        let full: KsmStat = proc::KsmStat::parse(
            b"ksm_rmap_items 12\nksm_zero_pages 2\nksm_merging_pages 3\nksm_process_profit -4096\nksm_merge_any: yes\nksm_mergeable: yes\n",
        )
        .into();
        assert_eq!(
            (
                full.rmap_items,
                full.zero_pages,
                full.merging_pages,
                full.profit
            ),
            (12, 2, 3, -4096)
        );
        assert!(full.merge_any && full.mergeable);
        let old: KsmStat = proc::KsmStat::parse(b"ksm_rmap_items 7\n").into();
        assert_eq!((old.rmap_items, old.merging_pages, old.profit), (7, 0, 0));
        assert!(!old.merge_any && !old.mergeable);
    }

    #[test]
    fn the_library_is_named_by_its_file_name_alone() {
        assert!(is_library_path(b"/usr/local/lib/libksmauto.so"));
        assert!(is_library_path(b"libksmauto.so"));
        assert!(is_library_path(b"/opt/libksmauto.so (deleted)"));
        assert!(is_library_path(b"/opt/\xff\xfe/libksmauto.so"));
        assert!(!is_library_path(b"/tmp/libksmauto/prog"));
        assert!(!is_library_path(b"/tmp/libksmauto.so.d/prog"));
        assert!(!is_library_path(b"/lib/libksmauto.so.old"));
        assert!(preload_names_the_library(
            b"/a/libjemalloc.so /b/libksmauto.so"
        ));
        assert!(!preload_names_the_library(b"/tmp/libksmauto/x.so"));
        let maps = b"7f00-7f01 r-xp 00000000 08:01 12 /tmp/libksmauto/prog\n";
        assert!(!maps_the_library(maps));
        let maps = b"7f00-7f01 r--p 00000000 08:01 9 /tmp/\xff\xfedata\n\
7f00-7f01 r-xp 00000000 08:01 12    /usr/lib/libksmauto.so\n";
        assert!(maps_the_library(maps));
    }

    #[test]
    fn outside_strings_are_shown_without_control_characters() {
        assert_eq!(shown("python3"), "python3");
        assert_eq!(
            shown("/system.slice/a\\x2db.service"),
            "/system.slice/a\\x2db.service"
        );
        assert_eq!(shown("\x1b[3A\x1b[2K"), "\\e[3A\\e[2K");
        assert_eq!(shown("x\n  666 fake"), "x\\n  666 fake");
        assert_eq!(shown("a\u{7f}b\u{9b}c"), "a\\x7fb\\x9bc");
        assert_eq!(shown("abc\u{202e}gpj"), "abc\\u{202e}gpj");
        assert_eq!(shown("née"), "née");
    }

    #[test]
    fn bytes_that_are_not_utf8_become_escapes_and_the_rest_stays() {
        assert_eq!(as_text(b"\xff\xfeworker"), r"\xff\xfeworker");
        assert_eq!(as_text("née".as_bytes()), "née");
        // A sequence cut short is as foreign as a stray byte.
        assert_eq!(as_text(b"n\xc3"), r"n\xc3");
        assert_eq!(as_text(b"a\xe2\x82b"), r"a\xe2\x82b");
        // Control characters stay for `shown` (and JSON) to escape.
        assert_eq!(shown(&as_text(b"\x1b[2K\xff")), r"\e[2K\xff");
    }

    #[test]
    fn maps_lines_are_read_whatever_bytes_the_path_holds() {
        let m =
            MapsLine::parse(b"7f12-7f34 r--p 00001000 fe:00 1234    /tmp/\xff\xfedata (deleted)")
                .unwrap();
        assert_eq!((m.start, m.end), (0x7f12, 0x7f34));
        assert_eq!((m.perms, m.inode), (&b"r--p"[..], &b"1234"[..]));
        assert_eq!(m.path, b"/tmp/\xff\xfedata (deleted)");
        let anon = MapsLine::parse(b"7f12-7f34 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!(anon.path, b"");
        assert_eq!(MapsLine::parse(b"Rss:                 132 kB"), None);
        assert_eq!(MapsLine::parse(b"VmFlags: rd wr mr mw me ac sd"), None);
    }

    #[test]
    fn smaps_values_in_kb_become_bytes() {
        assert_eq!(kb_bytes(b"      132 kB"), 132 * 1024);
        assert_eq!(kb_bytes(b" 0 kB"), 0);
        assert_eq!(kb_bytes(b"lots"), 0);
    }
}
