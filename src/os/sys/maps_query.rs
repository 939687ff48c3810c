//! One VMA at a time from the kernel's `PROCMAP_QUERY` ioctl on
//! `/proc/self/maps` (Linux 6.11+), without reading the text file.

use super::{close, open, Errno};

/// One VMA as the kernel's `PROCMAP_QUERY` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmaInfo {
    pub start: usize,
    pub end: usize,
    pub shared: bool,
    pub file_backed: bool,
}

/// One VMA with everything a line of `/proc/self/maps` shows, from
/// `PROCMAP_QUERY`. The name, if asked for, is in the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmaDetails {
    pub start: usize,
    pub end: usize,
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    pub shared: bool,
    pub offset: u64,
    pub inode: u64,
    pub file_backed: bool,
    /// Bytes of the name in the caller's buffer (0: no name, or none asked).
    pub name_len: usize,
}

impl VmaDetails {
    /// `rwxp` as `/proc/self/maps` prints it.
    pub fn perms(&self) -> [u8; 4] {
        [
            if self.readable { b'r' } else { b'-' },
            if self.writable { b'w' } else { b'-' },
            if self.executable { b'x' } else { b'-' },
            if self.shared { b's' } else { b'p' },
        ]
    }
}

#[repr(C)]
#[derive(Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

/// `_IOWR('f', 17, struct procmap_query)`.
const PROCMAP_QUERY: usize =
    (3 << 30) | (core::mem::size_of::<ProcmapQuery>() << 16) | ((b'f' as usize) << 8) | 17;

const PROCMAP_QUERY_VMA_READABLE: u64 = 0x01;

const PROCMAP_QUERY_VMA_WRITABLE: u64 = 0x02;

const PROCMAP_QUERY_VMA_EXECUTABLE: u64 = 0x04;

const PROCMAP_QUERY_VMA_SHARED: u64 = 0x08;

/// Query flag: the VMA containing the address, or else the next one above.
const PROCMAP_QUERY_COVERING_OR_NEXT_VMA: u64 = 0x10;

static PROCMAP_QUERY_UNSUPPORTED: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// Whether this kernel is known to lack `PROCMAP_QUERY` (learnt from a
/// refused query; `false` until one was tried).
pub fn procmap_query_unsupported() -> bool {
    PROCMAP_QUERY_UNSUPPORTED.load(core::sync::atomic::Ordering::Relaxed)
}

/// A freshly opened `/proc/self/maps` for `PROCMAP_QUERY` (Linux 6.11+).
/// Opened per use and closed on drop — never cached, because the program
/// could close and reuse a descriptor we kept.
pub struct MapsQuery {
    fd: i32,
}

impl MapsQuery {
    /// `Err(ENOTTY)` without opening anything once the kernel is known to
    /// lack the query.
    pub fn open() -> Result<MapsQuery, Errno> {
        if procmap_query_unsupported() {
            return Err(libc::ENOTTY);
        }
        Ok(MapsQuery {
            fd: open(b"/proc/thread-self/maps\0", libc::O_RDONLY, 0)?,
        })
    }

    /// The VMA containing `addr`, or with `or_next` the first one above it.
    /// Its name goes into `name` (pass an empty slice to skip the name, which
    /// spares the kernel a path walk for file mappings); `Err(ENAMETOOLONG)`
    /// if it does not fit. `Err(ENOENT)`: nothing there (or above).
    /// `Err(ENOTTY)` on kernels without the query (remembered).
    pub fn vma(&self, addr: usize, or_next: bool, name: &mut [u8]) -> Result<VmaDetails, Errno> {
        let mut q = ProcmapQuery {
            size: core::mem::size_of::<ProcmapQuery>() as u64,
            query_flags: if or_next {
                PROCMAP_QUERY_COVERING_OR_NEXT_VMA
            } else {
                0
            },
            query_addr: addr as u64,
            vma_name_size: name.len().min(u32::MAX as usize) as u32,
            vma_name_addr: if name.is_empty() {
                0
            } else {
                name.as_mut_ptr() as u64
            },
            ..Default::default()
        };
        // SAFETY: PROCMAP_QUERY reads and writes the local `q`, whose size it
        // is told, and writes at most `vma_name_size` (= `name.len()`) bytes
        // at `vma_name_addr`, which is `name` (borrowed mutably) or null.
        let result = unsafe {
            syscall!(
                libc::SYS_ioctl,
                self.fd,
                PROCMAP_QUERY,
                &mut q as *mut ProcmapQuery
            )
        };
        match result {
            Ok(_) => Ok(VmaDetails {
                start: q.vma_start as usize,
                end: q.vma_end as usize,
                readable: q.vma_flags & PROCMAP_QUERY_VMA_READABLE != 0,
                writable: q.vma_flags & PROCMAP_QUERY_VMA_WRITABLE != 0,
                executable: q.vma_flags & PROCMAP_QUERY_VMA_EXECUTABLE != 0,
                shared: q.vma_flags & PROCMAP_QUERY_VMA_SHARED != 0,
                offset: q.vma_offset,
                inode: q.inode,
                file_backed: q.inode != 0 || q.dev_major != 0 || q.dev_minor != 0,
                // The size the kernel reports counts the terminating NUL.
                name_len: if name.is_empty() {
                    0
                } else {
                    (q.vma_name_size as usize).saturating_sub(1).min(name.len())
                },
            }),
            Err(e @ (libc::ENOTTY | libc::EINVAL | libc::EOPNOTSUPP)) => {
                PROCMAP_QUERY_UNSUPPORTED.store(true, core::sync::atomic::Ordering::Relaxed);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for MapsQuery {
    fn drop(&mut self) {
        close(self.fd);
    }
}

/// The VMA containing `addr` (one `PROCMAP_QUERY` on a freshly opened
/// `/proc/self/maps`). `Err(ENOTTY)` on older kernels, `Err(ENOENT)` when
/// nothing is mapped there.
pub fn vma_at(addr: usize) -> Result<VmaInfo, Errno> {
    one_vma(addr, false)
}

/// The VMA containing `addr`, or else the first one above it
/// (`PROCMAP_QUERY_COVERING_OR_NEXT_VMA`). `Err(ENOENT)` when nothing is
/// mapped at or above `addr`, `Err(ENOTTY)` on kernels before 6.11.
pub fn first_vma_from(addr: usize) -> Result<VmaInfo, Errno> {
    one_vma(addr, true)
}

fn one_vma(addr: usize, or_next: bool) -> Result<VmaInfo, Errno> {
    let vma = MapsQuery::open()?.vma(addr, or_next, &mut [])?;
    Ok(VmaInfo {
        start: vma.start,
        end: vma.end,
        shared: vma.shared,
        file_backed: vma.file_backed,
    })
}
