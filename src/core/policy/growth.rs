//! Where a region grows: the part of a qualifying VMA that the catch-up
//! advises, leaving the growing edge's page alone so the region stays a few
//! VMAs however long it grows. Pure arithmetic over `/proc/self/maps` lines.


use super::range::Range;

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

#[cfg(test)]
mod tests {
    use super::*;

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
