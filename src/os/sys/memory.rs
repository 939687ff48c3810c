//! `madvise` with a typed advice, and the page size to assume.

use super::Errno;

pub const PAGE_SIZE_FALLBACK: usize = 4096;

/// What the library asks `madvise` for, named by intent; the value is the
/// kernel's `MADV_*` number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Advice {
    /// `MADV_MERGEABLE`: KSM may merge the pages (their contents stay).
    MarkMergeable = libc::MADV_MERGEABLE,
    /// `MADV_UNMERGEABLE`: KSM unmerges them and leaves them alone (their
    /// contents stay; merged pages are copied back out).
    UnmarkMergeable = libc::MADV_UNMERGEABLE,
    /// `MADV_DONTNEED`: the pages go back to the kernel; private anonymous
    /// ones read as zero afterwards, file-backed ones as the file.
    ReleasePages = libc::MADV_DONTNEED,
}

/// `madvise(addr, len, advice)`.
///
/// # Safety
/// With [`Advice::ReleasePages`], `[addr, addr + len)` must be memory the
/// caller owns and whose contents it may lose: no live reference into it,
/// nothing of the program's. The merging advice changes no page's contents,
/// but still acts on whatever is mapped there: the range must be one the
/// caller may mark (the engine's policy decides which).
pub unsafe fn madvise(addr: usize, len: usize, advice: Advice) -> Result<(), Errno> {
    syscall!(libc::SYS_madvise, addr, len, advice as i32).map(|_| ())
}

/// `process_vm_readv` of this process: the bytes of the `[address, length]`
/// ranges of `remote` (at most 1,024), one after another, into `local`.
/// The bytes copied (fewer when a range was unmapped under the read).
pub fn read_own_ranges(remote: &[[usize; 2]], local: &mut [u8]) -> Result<usize, Errno> {
    let local_iov = [local.as_mut_ptr() as usize, local.len()];
    // SAFETY: `[usize; 2]` has the layout of `struct iovec` (a pointer and
    // a length). The kernel writes at most `local.len()` bytes into
    // `local`, which we borrow mutably, and only reads the remote ranges,
    // through this process's page tables (an address not mapped is an
    // error, not a fault of ours).
    unsafe {
        syscall!(
            libc::SYS_process_vm_readv,
            super::getpid(),
            local_iov.as_ptr(),
            1,
            remote.as_ptr(),
            remote.len(),
            0
        )
    }
}
