//! Errors with exit codes, /proc helpers and number formatting.

use ksmauto_contract::proc;
use std::fmt;
use std::io;

/// The library's file name: a mapping, or an `LD_PRELOAD` entry, is the
/// library when its last path component is exactly this.
pub const LIB_NAME: &str = "libksmauto.so";

/// Whether `path` (a mapped file, an `LD_PRELOAD` entry) names the library:
/// by its last component, never by a substring (a program in a directory
/// `libksmauto/` is not the library).
pub fn is_library_path(path: &str) -> bool {
    let path = path.trim_end();
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    path.rsplit('/').next() == Some(LIB_NAME)
}

/// Whether a memory map (`/proc/PID/maps` or `smaps` text) maps the library.
pub fn maps_the_library(maps: &str) -> bool {
    maps.lines().any(|l| {
        l.splitn(6, char::is_whitespace)
            .nth(5)
            .is_some_and(|p| is_library_path(p.trim()))
    })
}

/// Whether an `LD_PRELOAD` value (entries split by `:` or spaces) names the library.
pub fn preload_names_the_library(value: &str) -> bool {
    value.split([':', ' ']).any(is_library_path)
}

/// Exit codes scripts can rely on (the README's "Exit codes" section).
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
/// and Prometheus escape by their own rules.
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

pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "?".into())
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
    let text = std::fs::read(format!("{dir}/ksm_stat")).ok()?;
    Some(proc::KsmStat::parse(&text).into())
}

/// A kernel thread (PF_KTHREAD in `/proc/PID/stat`, readable by anyone):
/// it has no user memory, so KSM has nothing of it to merge.
pub fn is_kernel_thread(pid: i32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            rest.split_whitespace().nth(6)?.parse::<u64>().ok()
        })
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
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
    let text = std::fs::read(format!("{dir}/smaps_rollup")).ok()?;
    let rollup = proc::SmapsRollup::parse(&text);
    Some((rollup.rss_kb? * 1024, rollup.pss_kb? * 1024))
}

/// The bytes of a `smaps` value such as `   132 kB` (0 if it is not one).
pub fn kb_bytes(value: &str) -> u64 {
    proc::parse_kb(value.as_bytes()).unwrap_or(0) * 1024
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
        assert!(is_library_path("/usr/local/lib/libksmauto.so"));
        assert!(is_library_path("libksmauto.so"));
        assert!(is_library_path("/opt/libksmauto.so (deleted)"));
        assert!(!is_library_path("/tmp/libksmauto/prog"));
        assert!(!is_library_path("/tmp/libksmauto.so.d/prog"));
        assert!(!is_library_path("/lib/libksmauto.so.old"));
        assert!(preload_names_the_library(
            "/a/libjemalloc.so /b/libksmauto.so"
        ));
        assert!(!preload_names_the_library("/tmp/libksmauto/x.so"));
        let maps = "7f00-7f01 r-xp 00000000 08:01 12 /tmp/libksmauto/prog\n";
        assert!(!maps_the_library(maps));
        let maps = "7f00-7f01 r-xp 00000000 08:01 12    /usr/lib/libksmauto.so\n";
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
    fn smaps_values_in_kb_become_bytes() {
        assert_eq!(kb_bytes("      132 kB"), 132 * 1024);
        assert_eq!(kb_bytes(" 0 kB"), 0);
        assert_eq!(kb_bytes("lots"), 0);
    }
}
