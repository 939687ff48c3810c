//! `/proc/thread-self/smaps`, one VMA at a time: its maps line, its
//! anonymous and KSM kilobytes, and whether it is marked mergeable (`mg`
//! among its `VmFlags`) — the one place the kernel says which VMAs ksmd is
//! given.
//!
//! Never allocates (the caller lends the line buffer; a VMA's name is
//! copied into a fixed array, cut to [`NAME_BYTES`]), never locks (a busy
//! buffer is `EBUSY`, not a wait). Reading smaps walks the page tables of
//! every VMA it passes: callers that walk often pace themselves.

use ksmauto_contract::smaps::VmFlags;
use super::proc::{for_each_line_while, LineBuffer, MapsLine};
use super::sys::Errno;

/// The longest VMA name kept: enough for `[heap]`, `[stack]` and
/// `[anon:` + 80 bytes + `]`; file paths are cut (no rule reads them).
pub const NAME_BYTES: usize = 128;

/// One VMA as smaps describes it.
pub struct SmapsVma<'a> {
    /// Its line of `/proc/self/maps` (the name cut to [`NAME_BYTES`]).
    pub line: MapsLine<'a>,
    /// `Anonymous:` kB.
    pub anon_kb: u64,
    /// `KSM:` kB (0 on kernels without the line).
    pub ksm_kb: u64,
    /// `mg` among its `VmFlags`: ksmd is given this VMA.
    pub mergeable: bool,
    /// Registered with a userfaultfd for missing or minor faults: a touch
    /// of a page that is not present waits for the program's handler.
    pub userfaultfd: bool,
}

/// The header of the VMA being read, kept until its `VmFlags` line.
struct Header {
    start: usize,
    end: usize,
    perms: [u8; 4],
    offset: u64,
    inode: u64,
    name: [u8; NAME_BYTES],
    name_len: usize,
    anon_kb: u64,
    ksm_kb: u64,
}

/// Calls `f` with every VMA of this process, in address order, until it
/// returns `false`. A VMA is passed once its `VmFlags` line is read (the
/// last of its entry).
pub fn for_each_vma(
    buffer: &LineBuffer,
    mut f: impl FnMut(&SmapsVma) -> bool,
) -> Result<(), Errno> {
    let mut held = buffer.try_take().ok_or(libc::EBUSY)?;
    let mut current: Option<Header> = None;
    for_each_line_while(b"/proc/thread-self/smaps\0", held.bytes(), |line| {
        if let Some(vma) = MapsLine::parse(line) {
            let mut name = [0u8; NAME_BYTES];
            let name_len = vma.name.len().min(NAME_BYTES);
            name[..name_len].copy_from_slice(&vma.name[..name_len]);
            current = Some(Header {
                start: vma.start,
                end: vma.end,
                perms: vma.perms,
                offset: vma.offset,
                inode: vma.inode,
                name,
                name_len,
                anon_kb: 0,
                ksm_kb: 0,
            });
            return true;
        }
        let Some(h) = current.as_mut() else {
            return true;
        };
        if let Some(v) = line.strip_prefix(b"Anonymous:") {
            h.anon_kb = kb(v);
        } else if let Some(v) = line.strip_prefix(b"KSM:") {
            h.ksm_kb = kb(v);
        } else if let Some(flags) = VmFlags::of_line(line) {
            let h = current.take().unwrap();
            let vma = SmapsVma {
                line: MapsLine {
                    start: h.start,
                    end: h.end,
                    perms: h.perms,
                    offset: h.offset,
                    inode: h.inode,
                    name: &h.name[..h.name_len],
                },
                anon_kb: h.anon_kb,
                ksm_kb: h.ksm_kb,
                mergeable: flags.mergeable(),
                // Missing or minor faults handed to the program's own
                // userfaultfd handler.
                userfaultfd: flags.has(b"um") || flags.has(b"ui"),
            };
            return f(&vma);
        }
        true
    })
}

fn kb(v: &[u8]) -> u64 {
    ksmauto_contract::proc::parse_kb(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A region this test marks mergeable is seen with `mg`, its anonymous
    /// kilobytes counted; the walk stops when asked to.
    #[test]
    fn walks_this_process_and_sees_the_mergeable_flag() {
        let page = crate::os::page_size();
        let len = 8 * page;
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
        } as usize;
        for i in 0..4 {
            // SAFETY: within the mapping made above.
            unsafe { ((p + i * page) as *mut u8).write_volatile(1) };
        }
        // SAFETY: advice on our own mapping.
        let marked = unsafe { libc::madvise(p as *mut _, len, libc::MADV_MERGEABLE) } == 0;
        let buffer = LineBuffer::new();
        let (mut seen, mut vmas, mut last_start) = (None, 0, 0);
        for_each_vma(&buffer, |vma| {
            assert!(vma.line.start >= last_start, "address order");
            last_start = vma.line.start;
            vmas += 1;
            if vma.line.start <= p && p < vma.line.end {
                seen = Some((vma.mergeable, vma.anon_kb));
            }
            true
        })
        .unwrap();
        assert!(vmas > 5);
        let (mergeable, anon_kb) = seen.expect("the test's mapping");
        assert_eq!(mergeable, marked, "mg where the kernel has KSM");
        assert!(anon_kb >= 4 * page as u64 / 1024, "{anon_kb}");
        let mut visited = 0;
        for_each_vma(&buffer, |_| {
            visited += 1;
            visited < 2
        })
        .unwrap();
        assert_eq!(visited, 2, "stops when told");
        // SAFETY: our own mapping, no longer used.
        unsafe { libc::munmap(p as *mut _, len) };
    }
}
