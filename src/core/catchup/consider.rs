//! The decision on one VMA: judged by the policy, advised whole (or the
//! part of it that may be) if it qualifies and is news, remembered for the
//! next pass.
//!
//! **New or changing memory waits.** A VMA that is new or still changing is
//! left for a pass that finds it unchanged (advised while it grows, a
//! region would be cut into VMAs that never coalesce again), and one found
//! growing a second time is advised while it grows, with one page left
//! unadvised at its growing side.
//!
//! **Races with remapping.** A VMA is judged, then advised; another thread can
//! replace it in between (`MAP_FIXED` with a private file mapping, which the
//! kernel would happily mark mergeable). So after each catch-up `madvise` the
//! advised range is looked up again and any part that is now something the
//! policy rejects is taken back out (`MADV_UNMERGEABLE`). A mapping that
//! replaces the range after that check is a fresh VMA without the flag.
//! (Needs `PROCMAP_QUERY`; on older kernels the window stays open.)

use core::sync::atomic::Ordering::Relaxed;

use super::map_count_headroom_low;
use super::memory::Seen;
use super::pass::{Above, Below, Pass};
use super::walk::{line_of, query_named};
use crate::core::policy::{self, Range, SkipReason, VmaVerdict};
use crate::counters::counters;
use crate::os::ksm;
use crate::os::proc::MapsLine;

impl<J, A> Pass<'_, J, A>
where
    J: Fn(&MapsLine, Option<&MapsLine>) -> VmaVerdict,
    A: Fn(Range) -> bool,
{
    /// Judges one VMA and advises it if it qualifies and is news. Its lower
    /// neighbour is the VMA considered before it; `above` is what the walk
    /// knows of the one above (looked up through the open maps where
    /// needed when it does not).
    pub(super) fn consider(&mut self, vma: &MapsLine, above: Above) {
        let below = self
            .cursor
            .below
            .filter(|b| b.end == vma.start)
            .map(Below::line);
        self.cursor.below = Some(Below::of(vma));
        self.cursor.examined += 1;
        match (self.judge)(vma, below.as_ref()) {
            VmaVerdict::NotOurs => {}
            VmaVerdict::Skip(reason) => {
                if self.memory.seen(vma.start, vma.end) == Seen::No {
                    counters().count_skipped(reason);
                }
                self.memory.record(vma.start, vma.end);
            }
            VmaVerdict::Merge => self.merge(vma, below.as_ref(), above),
        }
    }

    /// A VMA the policy takes: deferred if new, advised if news (the part
    /// that may be), and remembered as the next pass will find it.
    fn merge(&mut self, vma: &MapsLine, below: Option<&MapsLine>, above: Above) {
        let seen = self.memory.seen(vma.start, vma.end);
        // Memory that is new or still changing is left for a pass that
        // finds it as it was: advised while it grows, a region would be
        // cut into VMAs that never coalesce again (each piece written
        // before it was advised).
        if seen == Seen::No {
            self.cursor.deferred_any = true;
            self.memory.record_as(vma.start, vma.end, true);
            return;
        }
        let part = self.advisable_part(vma, seen, below, above);
        let splits = part.start != vma.start || part.end != vma.end;
        if seen == Seen::Yes {
            // Nothing new.
        } else if part.is_empty() {
            // All growth edge: next time.
        } else if splits && map_count_headroom_low() {
            if seen == Seen::No {
                counters().count_skipped(SkipReason::MapCount);
            }
        } else {
            let advised = (self.advise)(part);
            self.revoke_rejected(part);
            self.cursor.advised_new |= advised
                && matches!(
                    seen,
                    Seen::No | Seen::Deferred | Seen::GrewUp | Seen::GrewDown
                );
        }
        self.remember(vma, part, seen);
    }

    /// The part of `vma` an advice may cover: all but the growing page of
    /// memory still growing, else what the policy allows given its
    /// neighbours.
    fn advisable_part(
        &self,
        vma: &MapsLine,
        seen: Seen,
        below: Option<&MapsLine>,
        above: Above,
    ) -> Range {
        // The VMA right above matters only for news with room below.
        let mut above_name = [0u8; 16];
        let above_vma = match (&self.maps, below, above) {
            (Some(maps), None, Above::Unknown)
                if matches!(seen, Seen::No | Seen::Deferred | Seen::Unknown) =>
            {
                maps.vma(vma.end, false, &mut above_name)
                    .or_else(|_| maps.vma(vma.end, false, &mut []))
                    .ok()
                    .filter(|a| a.start == vma.end)
            }
            _ => None,
        };
        let looked_up = above_vma.as_ref().map(|a| line_of(a, &above_name));
        let above_line = match above {
            Above::Vma(next) => Some(next).filter(|a| a.start == vma.end),
            Above::Nothing => None,
            Above::Unknown => looked_up.as_ref(),
        };
        let page = crate::os::page_size();
        match seen {
            // Memory found growing a second time is advised while it
            // grows, with one page left unadvised at the growing side
            // (see `policy::advisable_part` for why).
            Seen::GrewUp => Range {
                start: vma.start,
                end: vma.end.saturating_sub(page).max(vma.start),
            },
            Seen::GrewDown => Range {
                start: vma.start.saturating_add(page).min(vma.end),
                end: vma.end,
            },
            _ => policy::advisable_part(vma, below, above_line, self.cursor.heap_end, page),
        }
    }

    /// Remembers `vma` for the next pass, in pieces where the advice of
    /// `part` split it: the next pass finds its pieces. The edge left for
    /// a growth seen on the way is remembered as deferred: found
    /// unchanged, the growth is over, and it is judged again (a thread
    /// arena's edge is then advised and coalesces with the part below; a
    /// brk heap's top page stays its edge).
    fn remember(&mut self, vma: &MapsLine, part: Range, seen: Seen) {
        let splits = part.start != vma.start || part.end != vma.end;
        if splits && !part.is_empty() {
            let edge = matches!(seen, Seen::GrewUp | Seen::GrewDown);
            if part.start > vma.start {
                self.memory.record_as(vma.start, part.start, edge);
            }
            self.memory.record(part.start, part.end);
            if part.end < vma.end {
                self.memory.record_as(part.end, vma.end, edge);
            }
        } else {
            self.memory.record(vma.start, vma.end);
        }
    }

    /// Right after advising `range`: looks at what is mapped there now and
    /// takes every part the policy rejects back out of merging. Whatever
    /// replaces the range after this look is a fresh VMA, which is not
    /// mergeable. Nothing to look with in the text walk.
    fn revoke_rejected(&mut self, range: Range) {
        let Some(maps) = &self.maps else {
            return;
        };
        let name = &mut *self.check_name;
        let mut below = range
            .start
            .checked_sub(1)
            .and_then(|addr| maps.vma(addr, false, &mut []).ok())
            .filter(|b| b.end == range.start)
            .map(|b| {
                let line = line_of(&b, &[]);
                Below::of(&line)
            });
        let mut addr = range.start;
        while addr < range.end {
            let Ok(vma) = query_named(maps, addr, true, name) else {
                return;
            };
            if vma.start >= range.end || vma.end <= addr {
                return;
            }
            let line = line_of(&vma, name);
            let below_vma = below.filter(|b| b.end == vma.start).map(Below::line);
            if rejects((self.judge)(&line, below_vma.as_ref())) {
                let piece = Range {
                    start: vma.start.max(range.start),
                    end: vma.end.min(range.end),
                };
                if ksm::unmark(piece.start, piece.len()).is_ok() {
                    self.state.revoked.fetch_add(1, Relaxed);
                }
            }
            below = Some(Below::of(&line));
            addr = vma.end;
        }
    }
}

/// Whether a verdict means the memory must not be left mergeable. `Small`
/// and `Excluded` are not: they can be pieces of a VMA that qualifies as a
/// whole, split by an exclusion.
fn rejects(verdict: VmaVerdict) -> bool {
    match verdict {
        VmaVerdict::NotOurs => true,
        VmaVerdict::Merge => false,
        VmaVerdict::Skip(reason) => match reason {
            SkipReason::Shared
            | SkipReason::File
            | SkipReason::Hugetlb
            | SkipReason::Exec
            | SkipReason::Stack => true,
            SkipReason::Small | SkipReason::Excluded | SkipReason::MapCount => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::memory::Memory;
    use super::super::pass::{Budget, Cursor, FRESH_CURSOR};
    use super::super::{State, NAME_BYTES};
    use super::*;

    #[test]
    fn only_kinds_of_memory_the_policy_rejects_are_revoked() {
        assert!(rejects(VmaVerdict::NotOurs));
        assert!(rejects(VmaVerdict::Skip(SkipReason::File)));
        assert!(rejects(VmaVerdict::Skip(SkipReason::Shared)));
        assert!(rejects(VmaVerdict::Skip(SkipReason::Stack)));
        assert!(!rejects(VmaVerdict::Merge));
        assert!(!rejects(VmaVerdict::Skip(SkipReason::Small)));
        assert!(!rejects(VmaVerdict::Skip(SkipReason::Excluded)));
    }

    #[test]
    fn new_vmas_wait_a_pass_and_growing_ones_keep_an_edge() {
        // SAFETY: all-zero bytes are a valid `Memory` (integers, `false`
        // bools) and its empty state.
        let mut m: Box<Memory> = unsafe { Box::new_zeroed().assume_init() };
        // SAFETY: all-zero bytes are a valid `State`, as for the static one.
        let state: Box<State> = unsafe { Box::new_zeroed().assume_init() };
        let advised = std::cell::RefCell::new(Vec::new());
        let judge = |_: &MapsLine, _: Option<&MapsLine>| VmaVerdict::Merge;
        let advise = |r: Range| {
            advised.borrow_mut().push((r.start, r.end));
            true
        };
        let walk = |m: &mut Memory, vmas: &[(usize, usize)]| {
            let mut cursor: Cursor = FRESH_CURSOR;
            let mut check_name = [0u8; NAME_BYTES];
            let mut pass = Pass {
                state: &state,
                memory: m,
                cursor: &mut cursor,
                budget: Budget::start(false),
                maps: None,
                check_name: &mut check_name,
                judge: &judge,
                advise: &advise,
            };
            for &(start, end) in vmas {
                let line = MapsLine {
                    start,
                    end,
                    perms: *b"rw-p",
                    offset: 0,
                    inode: 0,
                    name: b"",
                };
                pass.consider(&line, Above::Unknown);
            }
            pass.memory.finish_pass();
            cursor.deferred_any
        };
        let last = || *advised.borrow().last().unwrap();
        // New: remembered, not advised.
        assert!(walk(&mut m, &[(0x10000, 0x20000)]));
        assert!(advised.borrow().is_empty());
        // Found growing a second time (same start): advised while it grows,
        // all but its top page.
        assert!(!walk(&mut m, &[(0x10000, 0x30000)]));
        assert_eq!(last(), (0x10000, 0x2f000));
        // The advice split it. The top page's VMA takes the growth: found
        // grown, advised the same way (in the kernel the piece coalesces
        // with the one below), its top page again left.
        assert!(!walk(&mut m, &[(0x10000, 0x2f000), (0x2f000, 0x40000)]));
        assert_eq!(last(), (0x2f000, 0x3f000));
        assert_eq!(advised.borrow().len(), 2);
        // The growth is over (the edge found unchanged): the edge is advised
        // too, and nothing more after that.
        let pieces = [(0x10000, 0x2f000), (0x2f000, 0x3f000), (0x3f000, 0x40000)];
        assert!(!walk(&mut m, &pieces));
        assert_eq!(last(), (0x3f000, 0x40000));
        assert!(!walk(&mut m, &pieces));
        assert_eq!(advised.borrow().len(), 3);
        // A run growing downwards (same end): all but its bottom page.
        assert!(walk(&mut m, &[(0x90000, 0xa0000)]));
        assert!(!walk(&mut m, &[(0x80000, 0xa0000)]));
        assert_eq!(last(), (0x81000, 0xa0000));
        // New and then unchanged: advised whole, once.
        let before = advised.borrow().len();
        assert!(walk(&mut m, &[(0xc0000, 0xd0000)]));
        assert!(!walk(&mut m, &[(0xc0000, 0xd0000)]));
        assert_eq!(last(), (0xc0000, 0xd0000));
        assert!(!walk(&mut m, &[(0xc0000, 0xd0000)]));
        assert_eq!(advised.borrow().len(), before + 1);
    }
}
