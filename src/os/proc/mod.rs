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
//!
//! Here the line reader and the one-number files; beside it, one file per
//! concern: `maps` (a maps line and how reports class it), `smaps_totals`
//! (the exit report's sums over smaps), `stat` (`/proc/…/stat`: start
//! times, the main thread's state), `status` (`/proc/…/status`: numbers
//! and what restricts a thread), `other_process` (what the exit report
//! asks of another process).

use super::sys::{self, Errno};
// The pure parsers shared with the CLI and the tests live in the contract;
// this module reads the files and parses what only the library needs.
pub use ksmauto_contract::proc::{parse_dec, KsmStat};

mod maps;
mod other_process;
mod smaps_totals;
mod stat;
mod status;

pub use maps::{parse_hex, MapsLine, RegionClass};
pub use other_process::{process_image, process_maps_file, process_preloads};
pub use smaps_totals::SmapsTotals;
pub use stat::{main_state_and_threads, process_start_time, thread_start_time};
pub use status::{restrictions_digest, status_number};

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
pub(super) fn for_each_record(
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

/// Reads `/proc/thread-self/ksm_stat`; `None` where the kernel has no KSM.
/// The calling thread's entry, not `/proc/self`'s: that is the main
/// thread's, which shows nothing once the main thread has ended
/// (`pthread_exit`) while others run on in the same memory.
pub fn read_self_ksm_stat() -> Option<KsmStat> {
    let mut buf = [0u8; 512];
    let n = sys::read_file(b"/proc/thread-self/ksm_stat\0", &mut buf).ok()?;
    Some(KsmStat::parse(&buf[..n]))
}

#[cfg(test)]
mod tests {
    use super::*;

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
