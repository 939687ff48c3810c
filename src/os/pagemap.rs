//! `/proc/thread-self/pagemap`, counted: how many pages of a range are
//! present, and how many of those are mapped more than once.
//!
//! The kernel tells a process, without any privilege, whether each of its
//! pages is present and whether it is mapped exactly once (bit 56,
//! "exclusively mapped"; only the frame numbers are hidden from the
//! unprivileged). A private anonymous page KSM merged is mapped at least
//! twice (a KSM page), or is the shared zero page: either way present and
//! not exclusive. So is a page still shared with a parent or child after
//! `fork`, and a page only ever read (the zero page): this module only
//! counts, the caller judges.
//!
//! Never allocates (the caller lends the buffer), never locks, never
//! faults a page in (pagemap reads page tables, not memory); the
//! descriptor lives only as long as the [`Pagemap`] (never kept across
//! calls that the program could interleave with a `close` of its own).

use super::sys::{self, Errno};

const PRESENT: u64 = 1 << 63;
const EXCLUSIVE: u64 = 1 << 56;

/// What [`Pagemap::count`] found in a range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageCounts {
    /// Pages in memory (not swapped out, not never touched).
    pub present: u32,
    /// Present pages mapped more than once (KSM pages, the zero page,
    /// pages still shared since a `fork`).
    pub shared: u32,
}

/// An open `/proc/thread-self/pagemap`.
pub struct Pagemap {
    fd: i32,
}

impl Pagemap {
    pub fn open() -> Result<Pagemap, Errno> {
        let fd = sys::open(b"/proc/thread-self/pagemap\0", libc::O_RDONLY, 0)?;
        Ok(Pagemap { fd })
    }

    /// Counts the pages of `[start, end)` (page-aligned), reading up to
    /// `buf.len()` entries at a time.
    pub fn count(&self, start: usize, end: usize, buf: &mut [u64]) -> Result<PageCounts, Errno> {
        let page = super::page_size();
        let mut counts = PageCounts::default();
        let mut at = start / page;
        let last = end / page;
        while at < last {
            let want = (last - at).min(buf.len());
            // SAFETY: a u64 slice viewed as bytes (no padding, any value valid).
            let bytes = unsafe {
                core::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u8, want * 8)
            };
            let got = sys::pread(self.fd, bytes, (at as u64) * 8)? / 8;
            if got == 0 {
                break;
            }
            for &entry in &buf[..got] {
                if entry & PRESENT != 0 {
                    counts.present += 1;
                    if entry & EXCLUSIVE == 0 {
                        counts.shared += 1;
                    }
                }
            }
            at += got;
        }
        Ok(counts)
    }

    /// The raw entries of the pages of `[start, end)` (page-aligned, at
    /// most `buf.len()` pages), for [`entry_present`]: how many were read.
    pub fn entries(&self, start: usize, end: usize, buf: &mut [u64]) -> Result<usize, Errno> {
        let page = super::page_size();
        let want = ((end - start) / page).min(buf.len());
        // SAFETY: a u64 slice viewed as bytes (no padding, any value valid).
        let bytes =
            unsafe { core::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u8, want * 8) };
        Ok(sys::pread(self.fd, bytes, (start / page) as u64 * 8)? / 8)
    }

    /// Whether the page at `addr` is present.
    pub fn present(&self, addr: usize) -> Result<bool, Errno> {
        let mut entry = [0u8; 8];
        let at = (addr / super::page_size()) as u64 * 8;
        if sys::pread(self.fd, &mut entry, at)? != 8 {
            return Ok(false);
        }
        Ok(u64::from_ne_bytes(entry) & PRESENT != 0)
    }
}

/// Whether a raw entry ([`Pagemap::entries`]) is a present page.
pub fn entry_present(entry: u64) -> bool {
    entry & PRESENT != 0
}

impl Drop for Pagemap {
    fn drop(&mut self) {
        sys::close(self.fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages written once are present and exclusive; after `fork` they are
    /// shared with the child until it ends; pages never touched are not
    /// present; a page only read maps the zero page (shared).
    #[test]
    fn counts_present_and_shared_pages_of_this_process() {
        let page = crate::os::page_size();
        let len = 16 * page;
        // SAFETY: a fresh private anonymous mapping; no address given.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        } as *mut u8;
        assert_ne!(p as *mut libc::c_void, libc::MAP_FAILED);
        for i in 0..8 {
            // SAFETY: within the mapping made above.
            unsafe { p.add(i * page).write_volatile(i as u8 + 1) };
        }
        // SAFETY: within the mapping made above.
        let _ = unsafe { p.add(8 * page).read_volatile() };
        let start = p as usize;
        let mut buf = [0u64; 4];
        let map = Pagemap::open().unwrap();
        let c = map.count(start, start + len, &mut buf).unwrap();
        assert_eq!(c, PageCounts { present: 9, shared: 1 }, "8 written, 1 read");
        let (r, w) = {
            let mut fds = [0; 2];
            // SAFETY: `fds` has room for the two descriptors.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            (fds[0], fds[1])
        };
        // SAFETY: the child only reads a pipe and `_exit`s.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let mut b = [0u8; 1];
            // SAFETY: a read into a local buffer, then `_exit`.
            unsafe {
                libc::read(r, b.as_mut_ptr() as *mut _, 1);
                libc::_exit(0);
            }
        }
        let forked = map.count(start, start + len, &mut buf).unwrap();
        let (written, untouched) = (map.present(start), map.present(start + 9 * page));
        // SAFETY: our own pipe, child and mapping.
        unsafe {
            libc::write(w, b"x".as_ptr() as *const _, 1);
            libc::waitpid(child, core::ptr::null_mut(), 0);
            libc::munmap(p as *mut _, len);
        }
        assert_eq!(forked, PageCounts { present: 9, shared: 9 }, "shared with the child");
        assert_eq!(written, Ok(true), "written");
        assert_eq!(untouched, Ok(false), "never touched");
    }
}
