//! The rules a region goes through: a fresh `mmap` seen by a hook, or a VMA
//! the catch-up scan found in `/proc/self/maps`. Pure: the configuration
//! and the region's numbers in, a verdict out.


use super::SkipReason;
use crate::core::config::{Config, Exclusions};

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
}
