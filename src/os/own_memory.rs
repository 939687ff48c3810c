//! The process's own memory read through `/proc/thread-self/mem`: a read
//! of an address that was unmapped in the meantime fails (`EIO`) instead
//! of faulting, so the library's thread can sample pages the program may
//! be unmapping at the same moment.
//!
//! Only for pages the caller found present (`os::pagemap`): a read of a
//! page that is not would fault it in. Never allocates (the caller lends
//! the buffer), never locks; the descriptor lives only as long as the
//! [`OwnMemory`] (on the library's thread, whose descriptor table is its
//! own). A process may always open its own `mem`, dumpable or not.

use super::sys::{self, Errno};

/// An open `/proc/thread-self/mem`.
pub struct OwnMemory {
    fd: i32,
}

impl OwnMemory {
    pub fn open() -> Result<OwnMemory, Errno> {
        let fd = sys::open(b"/proc/thread-self/mem\0", libc::O_RDONLY, 0)?;
        Ok(OwnMemory { fd })
    }

    /// Copies the bytes at `addr` into `buf`; `Ok(false)` when fewer could
    /// be read (the mapping went away or changed under the read).
    pub fn read(&self, addr: usize, buf: &mut [u8]) -> Result<bool, Errno> {
        Ok(sys::pread(self.fd, buf, addr as u64)? == buf.len())
    }
}

/// Copies `each` bytes from every address of `addrs` into `buf`, one
/// after another (`process_vm_readv` of this process: one system call for
/// many small pieces of many pages). Returns the bytes copied: fewer when
/// an address was unmapped under the read. `iovecs` is room for the
/// request (`[base, len]` pairs, one per address, at most 1,024).
/// `ENOSYS`/`EPERM` where it is not allowed (a seccomp profile): use
/// [`OwnMemory::read`] then. Only for addresses the caller found present
/// (a page that is not would be faulted in).
pub fn gather(
    addrs: &[usize],
    each: usize,
    buf: &mut [u8],
    iovecs: &mut [[usize; 2]],
) -> Result<usize, Errno> {
    let n = addrs.len();
    if n == 0 || n > iovecs.len() || n > 1024 || n.saturating_mul(each) > buf.len() {
        return Err(libc::EINVAL);
    }
    for (iov, &addr) in iovecs.iter_mut().zip(addrs) {
        *iov = [addr, each];
    }
    sys::read_own_ranges(&iovecs[..n], &mut buf[..n * each])
}

impl Drop for OwnMemory {
    fn drop(&mut self) {
        sys::close(self.fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads what this process wrote, and fails cleanly on an address that
    /// is no longer mapped.
    #[test]
    fn reads_own_pages_and_fails_cleanly_where_nothing_is_mapped() {
        let page = crate::os::page_size();
        // SAFETY: a fresh private anonymous mapping; no address given.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        } as *mut u8;
        assert_ne!(p as *mut libc::c_void, libc::MAP_FAILED);
        // SAFETY: within the mapping made above.
        unsafe { p.add(100).write_volatile(42) };
        let mem = OwnMemory::open().unwrap();
        let mut buf = [0u8; 128];
        assert_eq!(mem.read(p as usize, &mut buf), Ok(true));
        assert_eq!(buf[100], 42);
        // SAFETY: our own mapping, no reference into it remains.
        unsafe { libc::munmap(p as *mut _, page) };
        assert!(!matches!(mem.read(p as usize, &mut buf), Ok(true)), "unmapped");
    }
}
