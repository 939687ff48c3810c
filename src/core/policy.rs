//! Which memory qualifies: pure decisions over numbers, no side effects.
//!
//! Knows nothing about symbol names or system calls, so every rule here is
//! unit-tested directly. Never allocates.

use super::config::{Config, Exclusions};

/// Why a region was left alone. The order is the report's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// `MAP_SHARED`: KSM merges private memory only.
    Shared,
    /// Backed by a file.
    File,
    /// hugetlbfs pages are never merged.
    Hugetlb,
    /// Smaller than `KSMAUTO_MIN_SIZE`.
    Small,
    /// Executable and the `exec` class is excluded.
    Exec,
    /// A stack and the `stack` class is excluded.
    Stack,
    /// Inside a range the program excluded with `ksmauto_exclude`.
    Excluded,
    /// The advice would split a VMA while the process is close to
    /// `vm.max_map_count`: the library never brings a program nearer to
    /// failing its own mappings.
    MapCount,
}

impl SkipReason {
    pub const COUNT: usize = 8;
    pub const ALL: [SkipReason; SkipReason::COUNT] = [
        SkipReason::Shared,
        SkipReason::File,
        SkipReason::Hugetlb,
        SkipReason::Small,
        SkipReason::Exec,
        SkipReason::Stack,
        SkipReason::Excluded,
        SkipReason::MapCount,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SkipReason::Shared => "shared",
            SkipReason::File => "file",
            SkipReason::Hugetlb => "hugetlb",
            SkipReason::Small => "small",
            SkipReason::Exec => "exec",
            SkipReason::Stack => "stack",
            SkipReason::Excluded => "excluded",
            SkipReason::MapCount => "map_count",
        }
    }
}

/// Verdict on a fresh mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Merge,
    Skip(SkipReason),
}

/// Decides whether a successful `mmap(…, len, prot, flags, fd, …)` qualifies.
pub fn judge_mapping(len: usize, prot: i32, flags: i32, cfg: &Config) -> Verdict {
    let map_type = flags & libc::MAP_TYPE;
    if map_type != libc::MAP_PRIVATE {
        return Verdict::Skip(SkipReason::Shared);
    }
    if flags & libc::MAP_ANONYMOUS == 0 {
        return Verdict::Skip(SkipReason::File);
    }
    if flags & libc::MAP_HUGETLB != 0 {
        return Verdict::Skip(SkipReason::Hugetlb);
    }
    judge_class(
        len,
        prot & libc::PROT_EXEC != 0,
        flags & (libc::MAP_STACK | libc::MAP_GROWSDOWN) != 0,
        cfg,
    )
}

/// The rules every private anonymous region goes through, whoever found it.
pub fn judge_class(len: usize, executable: bool, stack: bool, cfg: &Config) -> Verdict {
    let Exclusions {
        stack: exclude_stack,
        exec: exclude_exec,
        ..
    } = cfg.exclude;
    if stack && exclude_stack {
        Verdict::Skip(SkipReason::Stack)
    } else if executable && exclude_exec {
        Verdict::Skip(SkipReason::Exec)
    } else if len < cfg.min_size {
        Verdict::Skip(SkipReason::Small)
    } else {
        Verdict::Merge
    }
}

/// What the catch-up scan does with one line of `/proc/self/maps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmaVerdict {
    /// Not private anonymous memory (files, shared memory, the kernel's
    /// special mappings): never touched, never counted.
    NotOurs,
    Merge,
    Skip(SkipReason),
}

/// The most a thread stack's guard (glibc's `guardsize`, plus a runtime's own
/// red zones) spans; a larger `PROT_NONE` region below is a reservation.
const MAX_GUARD: usize = 64 * 1024;

/// Decides about a VMA found by the catch-up scan. `below` is the VMA that
/// ends where this one starts, if any: glibc puts a `PROT_NONE` guard right
/// below every thread stack it maps, which is how thread stacks (unnamed in
/// `maps`) are told apart from other anonymous memory.
pub fn judge_vma(
    vma: &crate::os::proc::MapsLine,
    below: Option<&crate::os::proc::MapsLine>,
    cfg: &Config,
) -> VmaVerdict {
    use crate::os::proc::RegionClass;
    if !vma.is_private() || vma.inode != 0 {
        return VmaVerdict::NotOurs;
    }
    let stack = match vma.class() {
        RegionClass::Stack => true,
        RegionClass::Heap | RegionClass::Anon => below.is_some_and(|g| {
            g.end == vma.start
                && g.inode == 0
                && g.is_private()
                && &g.perms[..3] == b"---"
                && g.end - g.start <= MAX_GUARD
                && vma.perms[0] == b'r'
                && vma.perms[1] == b'w'
        }),
        // [vdso], [vvar], [vsyscall], [uprobes]…
        RegionClass::Other => return VmaVerdict::NotOurs,
    };
    match judge_class(vma.end - vma.start, vma.is_executable(), stack, cfg) {
        Verdict::Merge => VmaVerdict::Merge,
        Verdict::Skip(r) => VmaVerdict::Skip(r),
    }
}

/// The part of a qualifying VMA the catch-up advises: all of it, except one
/// page at an edge where the memory is growing:
/// * the top page of a growing brk heap (a `[heap]` VMA that ends at the
///   program break and sits right on another `[heap]` VMA, the part advised
///   before);
/// * the bottom page of a growing run of mappings (a VMA with free room
///   below it, right under an anonymous VMA with the same permissions that
///   the kernel kept apart from it: the part advised before). glibc's own
///   mappings for large blocks, and most runtimes' raw mappings, are placed
///   top-down, each right under the previous one.
///
/// Why: the kernel extends a VMA (or coalesces a new mapping into it) only
/// while the new part has the same flags. Once the edge is mergeable, each
/// growth becomes a VMA of its own, which the program writes (giving it a
/// reverse-map root of its own) before any scan can advise it; advised, it
/// can never coalesce with its neighbour again: one VMA per growth, without
/// bound over a long run. Left unadvised, the edge page's VMA takes the
/// growth, and advising all but its edge page next time splits a VMA whose
/// pieces share one root, so the advised piece coalesces with its advised
/// neighbour: a growing region stays at three VMAs however long it grows.
/// The first advice of a region is whole (no extra VMA for memory that
/// never grows).
pub fn advisable_part(
    vma: &crate::os::proc::MapsLine,
    below: Option<&crate::os::proc::MapsLine>,
    above: Option<&crate::os::proc::MapsLine>,
    heap_end: usize,
    page: usize,
) -> Range {
    use crate::os::proc::RegionClass;
    let growing_heap = vma.class() == RegionClass::Heap
        && vma.end >= heap_end
        && below.is_some_and(|b| b.end == vma.start && b.class() == RegionClass::Heap);
    let growing_down = vma.class() == RegionClass::Anon
        && below.is_none_or(|b| b.end < vma.start)
        && above.is_some_and(|a| {
            a.start == vma.end
                && a.is_private()
                && a.inode == 0
                && a.perms == vma.perms
                && a.class() == RegionClass::Anon
        });
    let mut part = Range {
        start: vma.start,
        end: vma.end,
    };
    if growing_heap {
        part.end = vma.end.saturating_sub(page).max(vma.start);
    } else if growing_down {
        part.start = vma.start.saturating_add(page).min(vma.end);
    }
    part
}

/// A page-aligned address range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: usize,
    pub end: usize,
}

impl Range {
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// The smallest page-aligned range covering `[addr, addr + len)`, so that
    /// every page holding any of those bytes is included (what an exclusion
    /// of a secret needs). `None` on address overflow.
    pub fn covering(addr: usize, len: usize, page: usize) -> Option<Range> {
        let end = addr.checked_add(len)?.checked_add(page - 1)? & !(page - 1);
        Some(Range {
            start: addr & !(page - 1),
            end,
        })
    }

    pub fn overlaps(&self, other: &Range) -> bool {
        self.start < other.end && other.start < self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::Config;

    const PRIVATE_ANON: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    const RWX: i32 = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;

    #[test]
    fn the_articles_single_rwx_page_qualifies_under_defaults() {
        assert_eq!(
            judge_mapping(4096, RWX, PRIVATE_ANON, &Config::default()),
            Verdict::Merge
        );
    }

    #[test]
    fn shared_file_and_hugetlb_mappings_never_qualify() {
        let cfg = Config::default();
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        assert_eq!(
            judge_mapping(1 << 20, rw, libc::MAP_SHARED | libc::MAP_ANONYMOUS, &cfg),
            Verdict::Skip(SkipReason::Shared)
        );
        assert_eq!(
            judge_mapping(1 << 20, rw, libc::MAP_SHARED_VALIDATE, &cfg),
            Verdict::Skip(SkipReason::Shared)
        );
        assert_eq!(
            judge_mapping(1 << 20, rw, libc::MAP_PRIVATE, &cfg),
            Verdict::Skip(SkipReason::File)
        );
        assert_eq!(
            judge_mapping(1 << 21, rw, PRIVATE_ANON | libc::MAP_HUGETLB, &cfg),
            Verdict::Skip(SkipReason::Hugetlb)
        );
    }

    #[test]
    fn reservations_without_access_qualify_so_later_commits_are_covered() {
        assert_eq!(
            judge_mapping(
                1 << 30,
                libc::PROT_NONE,
                PRIVATE_ANON | libc::MAP_NORESERVE,
                &Config::default()
            ),
            Verdict::Merge
        );
    }

    #[test]
    fn classes_and_size_threshold() {
        let mut cfg = Config::default();
        assert_eq!(
            judge_mapping(8192, 3, PRIVATE_ANON | libc::MAP_STACK, &cfg),
            Verdict::Skip(SkipReason::Stack)
        );
        assert_eq!(
            judge_mapping(8192, 3, PRIVATE_ANON | libc::MAP_GROWSDOWN, &cfg),
            Verdict::Skip(SkipReason::Stack)
        );
        cfg.exclude.stack = false;
        assert_eq!(
            judge_mapping(8192, 3, PRIVATE_ANON | libc::MAP_STACK, &cfg),
            Verdict::Merge
        );
        cfg.exclude.exec = true;
        assert_eq!(
            judge_mapping(8192, RWX, PRIVATE_ANON, &cfg),
            Verdict::Skip(SkipReason::Exec)
        );
        cfg.min_size = 65536;
        assert_eq!(
            judge_mapping(8192, 3, PRIVATE_ANON, &cfg),
            Verdict::Skip(SkipReason::Small)
        );
        assert_eq!(judge_mapping(65536, 3, PRIVATE_ANON, &cfg), Verdict::Merge);
    }

    fn vma(line: &'static str) -> crate::os::proc::MapsLine<'static> {
        crate::os::proc::MapsLine::parse(line.as_bytes()).unwrap()
    }

    #[test]
    fn catch_up_takes_heap_arenas_and_reservations_but_not_files_or_special_mappings() {
        let cfg = Config::default();
        assert_eq!(
            judge_vma(&vma("1000-9000 rw-p 00000000 00:00 0 [heap]"), None, &cfg),
            VmaVerdict::Merge
        );
        // a glibc arena: committed part, then its PROT_NONE reservation
        assert_eq!(
            judge_vma(
                &vma("7f0000000000-7f0000021000 rw-p 00000000 00:00 0"),
                None,
                &cfg
            ),
            VmaVerdict::Merge
        );
        assert_eq!(
            judge_vma(
                &vma("7f0000021000-7f0004000000 ---p 00000000 00:00 0"),
                None,
                &cfg
            ),
            VmaVerdict::Merge
        );
        assert_eq!(
            judge_vma(
                &vma("7f0000000000-7f0000021000 rw-p 00000000 fe:01 77 /usr/lib/x.so"),
                None,
                &cfg
            ),
            VmaVerdict::NotOurs
        );
        assert_eq!(
            judge_vma(
                &vma("7f0000000000-7f0000021000 rw-s 00000000 00:01 7 /dev/zero (deleted)"),
                None,
                &cfg
            ),
            VmaVerdict::NotOurs
        );
        assert_eq!(
            judge_vma(
                &vma("7f0000000000-7f0000002000 r--p 00000000 00:00 0 [vvar]"),
                None,
                &cfg
            ),
            VmaVerdict::NotOurs
        );
    }

    #[test]
    fn catch_up_recognises_stacks_by_name_or_guard_page() {
        let mut cfg = Config::default();
        let guard = vma("7f0000000000-7f0000001000 ---p 00000000 00:00 0");
        let stack = vma("7f0000001000-7f0000801000 rw-p 00000000 00:00 0");
        assert_eq!(
            judge_vma(&stack, Some(&guard), &cfg),
            VmaVerdict::Skip(SkipReason::Stack)
        );
        assert_eq!(
            judge_vma(
                &vma("7ffd0000-7ffe0000 rw-p 00000000 00:00 0 [stack]"),
                None,
                &cfg
            ),
            VmaVerdict::Skip(SkipReason::Stack)
        );
        // a big reservation below is not a guard
        let reservation = vma("7e0000000000-7f0000001000 ---p 00000000 00:00 0");
        assert_eq!(
            judge_vma(&stack, Some(&reservation), &cfg),
            VmaVerdict::Merge
        );
        // a guard that does not touch is not this stack's
        let apart = vma("7effff000000-7effff001000 ---p 00000000 00:00 0");
        assert_eq!(judge_vma(&stack, Some(&apart), &cfg), VmaVerdict::Merge);
        cfg.exclude.stack = false;
        assert_eq!(judge_vma(&stack, Some(&guard), &cfg), VmaVerdict::Merge);
        cfg.exclude.exec = true;
        assert_eq!(
            judge_vma(&vma("1000-3000 rwxp 00000000 00:00 0"), None, &cfg),
            VmaVerdict::Skip(SkipReason::Exec)
        );
    }

    #[test]
    fn covering_rounds_outwards() {
        assert_eq!(
            Range::covering(4097, 10, 4096),
            Some(Range {
                start: 4096,
                end: 8192
            })
        );
        assert_eq!(
            Range::covering(4096, 4096, 4096),
            Some(Range {
                start: 4096,
                end: 8192
            })
        );
        assert_eq!(
            Range::covering(4000, 200, 4096),
            Some(Range {
                start: 0,
                end: 8192
            })
        );
        assert_eq!(Range::covering(usize::MAX - 10, 100, 4096), None);
    }

    fn line(
        start: usize,
        end: usize,
        perms: &[u8; 4],
        name: &'static [u8],
    ) -> crate::os::proc::MapsLine<'static> {
        crate::os::proc::MapsLine {
            start,
            end,
            perms: *perms,
            offset: 0,
            inode: 0,
            name,
        }
    }

    #[test]
    fn a_growing_heap_keeps_its_top_page_and_a_growing_run_its_bottom_page() {
        let page = 0x1000;
        let rw = b"rw-p";
        // The heap's first advice is whole.
        let heap = line(0x10000, 0x20000, rw, b"[heap]");
        let part = advisable_part(&heap, None, None, 0x20000, page);
        assert_eq!((part.start, part.end), (0x10000, 0x20000));
        // A growth piece on the advised heap: all but its top page.
        let grown = line(0x20000, 0x30000, rw, b"[heap]");
        let part = advisable_part(&grown, Some(&heap), None, 0x30000, page);
        assert_eq!((part.start, part.end), (0x20000, 0x2f000));
        // Not at the break any more (the heap shrank and grew elsewhere?): whole.
        let part = advisable_part(&grown, Some(&heap), None, 0x40000, page);
        assert_eq!((part.start, part.end), (0x20000, 0x30000));
        // A run of mappings growing down: room below, an advised run above.
        let run = line(0x7000_0000, 0x7010_0000, rw, b"");
        let new = line(0x6ff0_0000, 0x7000_0000, rw, b"");
        let part = advisable_part(&new, None, Some(&run), 0, page);
        assert_eq!((part.start, part.end), (0x6ff0_1000, 0x7000_0000));
        // Something right below: nothing can grow there.
        let floor = line(0x6fe0_0000, 0x6ff0_0000, b"r--p", b"");
        let part = advisable_part(&new, Some(&floor), Some(&run), 0, page);
        assert_eq!((part.start, part.end), (0x6ff0_0000, 0x7000_0000));
        // Different permissions above: kept apart for that reason, whole.
        let ro = line(0x7000_0000, 0x7010_0000, b"r--p", b"");
        let part = advisable_part(&new, None, Some(&ro), 0, page);
        assert_eq!((part.start, part.end), (0x6ff0_0000, 0x7000_0000));
        // A one-page piece is all edge.
        let tiny = line(0x6fff_f000, 0x7000_0000, rw, b"");
        assert!(advisable_part(&tiny, None, Some(&run), 0, page).is_empty());
    }
}
