//! Where pages are present in a range of a process's address space, asked
//! of the kernel with the `PAGEMAP_SCAN` ioctl (Linux 6.7), so the walk
//! reads `/proc/PID/pagemap` only there: pagemap gives 8 bytes for every
//! page of a range, present or not, and reserved but untouched address
//! space (a JVM's heap, glibc's 64 MiB thread arenas, Go's arenas) is most
//! of many processes' — 2.5 GiB of it around 0.12 GiB resident on the
//! machine of BENCHMARKS.md. Knows nothing else of the walk.

use std::fs::File;
use std::os::fd::AsRawFd;

/// `struct page_region` of `<linux/fs.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `struct pm_scan_arg` of `<linux/fs.h>`.
#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

const PAGE_IS_PRESENT: u64 = 1 << 3;

/// `_IOWR('f', 16, struct pm_scan_arg)` in the encoding of x86, arm and
/// riscv (elsewhere the ioctl is not tried).
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
const PAGEMAP_SCAN: Option<u64> =
    Some((3 << 30) | ((std::mem::size_of::<PmScanArg>() as u64) << 16) | (0x66 << 8) | 16);
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
const PAGEMAP_SCAN: Option<u64> = None;

/// Regions asked for at a time; a range with more is read whole from
/// where the answer stopped.
const REGIONS: usize = 256;
/// Present runs this close (in pages) are read as one span: a `pread` of
/// a few more entries costs less than another system call.
const GAP_PAGES: u64 = 64;
/// A range this small (1 MiB with 4 KiB pages) is read whole without
/// asking: the question would cost as much as the answer saves.
const SMALL_PAGES: u64 = 256;

/// The spans of `[start, end)` to read the pagemap of, into `out`: the
/// present runs, neighbours joined; nothing when no page is present.
/// False when the kernel cannot say (no `PAGEMAP_SCAN`) or the range is
/// small: read it all.
pub fn spans(
    pagemap: &File,
    start: u64,
    end: u64,
    ps: u64,
    out: &mut Vec<(u64, u64)>,
    regions: &mut Vec<PageRegion>,
) -> bool {
    out.clear();
    let Some(request) = PAGEMAP_SCAN else {
        return false;
    };
    if end - start <= SMALL_PAGES * ps {
        return false;
    }
    regions.resize(REGIONS, PageRegion::default());
    let mut arg = PmScanArg {
        size: std::mem::size_of::<PmScanArg>() as u64,
        flags: 0,
        start,
        end,
        walk_end: 0,
        vec: regions.as_mut_ptr() as u64,
        vec_len: REGIONS as u64,
        max_pages: 0,
        category_inverted: 0,
        category_mask: PAGE_IS_PRESENT,
        category_anyof_mask: 0,
        return_mask: PAGE_IS_PRESENT,
    };
    // SAFETY: `arg` is the kernel's struct, `vec` points at REGIONS
    // writable page_region entries that outlive the call.
    let found = unsafe { libc::ioctl(pagemap.as_raw_fd(), request as _, &mut arg) };
    if found < 0 {
        return false;
    }
    for r in &regions[..found as usize] {
        match out.last_mut() {
            Some(last) if r.start <= last.1 + GAP_PAGES * ps => last.1 = r.end,
            _ => out.push((r.start, r.end)),
        }
    }
    if arg.walk_end < end && found as usize == REGIONS {
        out.push((arg.walk_end, end));
    }
    true
}
