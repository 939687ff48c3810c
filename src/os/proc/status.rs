//! `status` files: a number by its key, and a digest of what restricts a
//! thread.

use super::{for_each_line, parse_dec};
use crate::os::sys::Errno;
use ksmauto_contract::proc::trim;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
