//! How a step walks the VMAs, and how one VMA is looked up and judged on
//! its own ([`judged_at`]).
//!
//! With the kernel's `PROCMAP_QUERY` (Linux 6.11+) a step asks for the VMA
//! at or above the address where the previous step stopped, on a freshly
//! opened `/proc/self/maps` (never a kept descriptor: the program may close
//! and reuse it). Older kernels get the whole text of `/proc/self/maps` in
//! one step, read through a static buffer (never the stack: hooks may run
//! on a small signal stack).

use core::sync::atomic::Ordering::Relaxed;

use super::pass::{Above, Below, Pass};
use super::{NAME_BYTES, STEP_VMAS};
use crate::core::policy::{Range, VmaVerdict};
use crate::os::proc::{read_lines, LineBuffer, MapsLine};
use crate::os::sys::{self, Errno, MapsQuery, VmaDetails};

/// The text walk's line buffer (only the step holding `scanning` uses it).
pub(super) static SCAN_LINES: LineBuffer = LineBuffer::new();

pub(super) enum StepEnd {
    /// The pass is over.
    PassDone,
    /// VMAs are left for the next step.
    More,
    /// The kernel refused (no descriptor left, …): the pass resumes from
    /// where it stood after one base interval.
    Failed,
}

impl<J, A> Pass<'_, J, A>
where
    J: Fn(&MapsLine, Option<&MapsLine>) -> VmaVerdict,
    A: Fn(Range) -> bool,
{
    /// Walks this step's share of the pass: through `PROCMAP_QUERY`, or the
    /// whole pass from the text where the kernel has no such query. `name`
    /// is where each VMA's name is read.
    pub(super) fn walk(&mut self, name: &mut [u8; NAME_BYTES]) -> StepEnd {
        let end = match MapsQuery::open() {
            Ok(maps) => {
                self.maps = Some(maps);
                match self.by_query(name) {
                    Ok(end) => end,
                    Err(_) if sys::procmap_query_unsupported() => {
                        self.maps = None;
                        self.by_text(name)
                    }
                    Err(_) => StepEnd::Failed,
                }
            }
            Err(_) if sys::procmap_query_unsupported() => self.by_text(name),
            Err(_) => StepEnd::Failed,
        };
        self.maps = None;
        end
    }

    /// Up to [`STEP_VMAS`] VMAs from the cursor on, through the open maps'
    /// `PROCMAP_QUERY`.
    pub(super) fn by_query(&mut self, name: &mut [u8; NAME_BYTES]) -> Result<StepEnd, Errno> {
        for examined in 0..STEP_VMAS {
            if examined % 16 == 15 && self.budget.exceeded() {
                return Ok(StepEnd::More);
            }
            // A thread asked to stop leaves between two VMAs (the pass resumes
            // here in its successor).
            if crate::core::catchup_thread::asked_to_stop() {
                return Ok(StepEnd::More);
            }
            let Some(maps) = &self.maps else {
                return Err(libc::EBADF);
            };
            let vma = match query_named(maps, self.cursor.resume, true, name) {
                Ok(vma) => vma,
                Err(libc::ENOENT) => return Ok(StepEnd::PassDone),
                Err(e) => return Err(e),
            };
            self.state.vmas.fetch_add(1, Relaxed);
            if vma.end <= self.cursor.resume {
                // Cannot happen (the kernel answers at or above the address);
                // never loop on it.
                return Ok(StepEnd::PassDone);
            }
            self.cursor.resume = vma.end;
            let line = line_of(&vma, name);
            self.consider(&line, Above::Unknown);
        }
        Ok(StepEnd::More)
    }

    /// The whole pass from the text of `/proc/self/maps`, for kernels without
    /// `PROCMAP_QUERY`. A read that fails midway ends the pass where it stopped
    /// (what was not seen is looked at again next pass). Out of line: its
    /// frame (the held line, the reader's state) then sits on the stack only
    /// in this walk, not under every step's query walk (a hook's step may
    /// run on a small signal stack: see `STEP_STACK_BYTES`).
    #[inline(never)]
    pub(super) fn by_text(&mut self, pending_name: &mut [u8; NAME_BYTES]) -> StepEnd {
        self.cursor.below = None;
        // Each line is considered once the next one is read: the VMA right
        // above is what `PROCMAP_QUERY` would have looked up (a run of mappings
        // growing downwards is recognised by it). The held line's name is kept
        // in the scan's own static buffer, not on the stack.
        let mut pending: Option<Held> = None;
        let mut examined = 0u64;
        let result = read_lines(b"/proc/thread-self/maps\0", &SCAN_LINES, |text| {
            // A thread asked to stop considers nothing more: what this pass
            // did not reach counts as unknown in the next one, as past an
            // overflow of the remembered VMAs (advised again, a no-op).
            if crate::core::catchup_thread::asked_to_stop() {
                self.memory.overflowed = true;
                pending = None;
                return;
            }
            if let Some(line) = MapsLine::parse(text) {
                examined += 1;
                if let Some(held) = pending.take() {
                    let held = held.line(pending_name);
                    self.consider(&held, Above::Vma(&line));
                }
                pending = Some(Held::keep(&line, pending_name));
            }
        });
        if let Some(held) = pending {
            let held = held.line(pending_name);
            self.consider(&held, Above::Nothing);
        }
        self.state.vmas.fetch_add(examined, Relaxed);
        match result {
            Err(_) if examined == 0 => StepEnd::Failed,
            _ => StepEnd::PassDone,
        }
    }
}

/// The VMA holding `addr` and the verdict a pass would give it, with the
/// VMA right below it as the pass sees it (a new thread's stack: whether the
/// scan takes it for a stack by its guard page). `None` when nothing is
/// mapped there, or the maps cannot be read now (the shared line buffer is
/// busy, on kernels without `PROCMAP_QUERY`).
pub fn judged_at(
    addr: usize,
    judge: &impl Fn(&MapsLine, Option<&MapsLine>) -> VmaVerdict,
) -> Option<(Range, VmaVerdict)> {
    // Enough for the names a rule reads (`[heap]`, `[stack]`); a longer one
    // is dropped, as the scan's own walk would not need it either.
    let mut name = [0u8; 16];
    match MapsQuery::open() {
        Ok(maps) => match query_named(&maps, addr, false, &mut name) {
            Ok(vma) => {
                let below = vma
                    .start
                    .checked_sub(1)
                    .and_then(|b| maps.vma(b, false, &mut []).ok())
                    .filter(|b| b.end == vma.start);
                let below = below.as_ref().map(|b| line_of(b, &[]));
                let range = Range {
                    start: vma.start,
                    end: vma.end,
                };
                Some((range, judge(&line_of(&vma, &name), below.as_ref())))
            }
            Err(_) if sys::procmap_query_unsupported() => judged_in_text(addr, judge),
            Err(_) => None,
        },
        Err(_) if sys::procmap_query_unsupported() => judged_in_text(addr, judge),
        Err(_) => None,
    }
}

/// [`judged_at`] from the text of `/proc/self/maps`.
fn judged_in_text(
    addr: usize,
    judge: &impl Fn(&MapsLine, Option<&MapsLine>) -> VmaVerdict,
) -> Option<(Range, VmaVerdict)> {
    let mut below: Option<Below> = None;
    let mut found = None;
    let buffer = &crate::os::proc::SHARED_LINES;
    let _ = read_lines(b"/proc/thread-self/maps\0", buffer, |text| {
        let Some(line) = MapsLine::parse(text) else {
            return;
        };
        if found.is_none() && line.start <= addr && addr < line.end {
            let under = below.filter(|b| b.end == line.start).map(Below::line);
            let range = Range {
                start: line.start,
                end: line.end,
            };
            found = Some((range, judge(&line, under.as_ref())));
        }
        below = Some(Below::of(&line));
    });
    found
}

/// A line of the text walk held until the next one is read, its name in the
/// scan's name buffer (cut to [`NAME_BYTES`]: a longer one is a file path,
/// which no rule needs).
struct Held {
    start: usize,
    end: usize,
    perms: [u8; 4],
    offset: u64,
    inode: u64,
    name_len: usize,
}

impl Held {
    fn keep(line: &MapsLine, name: &mut [u8; NAME_BYTES]) -> Held {
        let name_len = line.name.len().min(NAME_BYTES);
        name[..name_len].copy_from_slice(&line.name[..name_len]);
        Held {
            start: line.start,
            end: line.end,
            perms: line.perms,
            offset: line.offset,
            inode: line.inode,
            name_len,
        }
    }

    fn line<'a>(&self, name: &'a [u8]) -> MapsLine<'a> {
        MapsLine {
            start: self.start,
            end: self.end,
            perms: self.perms,
            offset: self.offset,
            inode: self.inode,
            name: &name[..self.name_len],
        }
    }
}

/// Looks up a VMA with its name; a name too long for `name` (a deep file
/// path: we never need those) is dropped.
pub(super) fn query_named(
    maps: &MapsQuery,
    addr: usize,
    or_next: bool,
    name: &mut [u8],
) -> Result<VmaDetails, Errno> {
    match maps.vma(addr, or_next, name) {
        Err(libc::ENAMETOOLONG) => maps.vma(addr, or_next, &mut []),
        other => other,
    }
}

pub(super) fn line_of<'a>(vma: &VmaDetails, name: &'a [u8]) -> MapsLine<'a> {
    MapsLine {
        start: vma.start,
        end: vma.end,
        perms: vma.perms(),
        offset: vma.offset,
        inode: vma.inode,
        name: &name[..vma.name_len],
    }
}

#[cfg(test)]
mod tests {
    use super::super::pass::Budget;
    use super::super::{State, Work};
    use super::*;

    #[test]
    fn query_lines_read_like_the_text_of_proc_self_maps() {
        let text = std::fs::read_to_string("/proc/self/maps").unwrap();
        let maps = match MapsQuery::open() {
            Ok(maps) => maps,
            Err(_) => return, // a kernel without PROCMAP_QUERY
        };
        let mut name = [0u8; NAME_BYTES];
        let (mut addr, mut compared, mut named) = (0, 0, 0);
        while let Ok(vma) = query_named(&maps, addr, true, &mut name) {
            addr = vma.end;
            let from_query = line_of(&vma, &name);
            let Some(from_text) = text
                .lines()
                .filter_map(|l| MapsLine::parse(l.as_bytes()))
                .find(|l| l.start == vma.start && l.end == vma.end)
            else {
                continue; // changed in between (the test harness's threads)
            };
            assert_eq!(from_query.perms, from_text.perms, "{from_text:?}");
            assert_eq!(from_query.inode, from_text.inode, "{from_text:?}");
            if from_text.inode == 0 {
                assert_eq!(from_query.name, from_text.name, "{from_text:?}");
                named += usize::from(!from_text.name.is_empty());
            }
            compared += 1;
        }
        assert!(compared > 10 && named >= 2, "{compared} {named}\n{text}");
    }

    /// Runs whole passes with both walks over this test process, with a judge
    /// that takes every private anonymous VMA and an `advise` that only
    /// records (nothing is really advised).
    #[test]
    fn both_walks_advise_each_vma_once_and_then_nothing() {
        use std::cell::RefCell;
        // SAFETY: all-zero bytes are a valid `State`, as for the static one.
        let state: Box<State> = unsafe { Box::new_zeroed().assume_init() };
        // SAFETY: this test's own `State`, which no step uses but through
        // this reference (the walks below are handed `work` itself).
        let work = unsafe { &mut *state.work.get() };
        let judge = |vma: &MapsLine, _: Option<&MapsLine>| {
            if vma.is_private() && vma.inode == 0 && vma.name.is_empty() {
                VmaVerdict::Merge
            } else {
                VmaVerdict::NotOurs
            }
        };
        let advised = RefCell::new(Vec::new());
        let advise = |range: Range| {
            advised.borrow_mut().push((range.start, range.end));
            true
        };
        let by_query = |work: &mut Work| -> usize {
            let (mut pass, name) = Pass::new(&state, work, Budget::start(false), &judge, &advise);
            pass.maps = Some(MapsQuery::open().unwrap());
            let mut steps = 1;
            while let StepEnd::More = pass.by_query(name).unwrap() {
                pass.budget = Budget::start(false);
                steps += 1;
            }
            drop(pass);
            work.memory.finish_pass();
            work.cursor.resume = 0;
            work.cursor.below = None;
            steps
        };
        let by_text = |work: &mut Work| {
            let (mut pass, name) = Pass::new(&state, work, Budget::start(false), &judge, &advise);
            assert!(matches!(pass.by_text(name), StepEnd::PassDone));
            work.memory.finish_pass();
        };
        // A private anonymous region of 600 VMAs (alternating protections),
        // more than one step takes, between inaccessible pages that keep it
        // apart from its neighbours.
        let page = 4096;
        // SAFETY: a fresh anonymous mapping where the kernel chooses: it
        // replaces nothing.
        let outer = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                602 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        } as usize;
        let region = outer + page;
        // SAFETY: pages of the mapping above, which only this test uses and
        // which nothing reads or writes.
        unsafe {
            libc::mprotect(outer as *mut _, page, libc::PROT_NONE);
            libc::mprotect((region + 600 * page) as *mut _, page, libc::PROT_NONE);
        }
        for i in (1..600).step_by(2) {
            // SAFETY: as above: a page of this test's own mapping.
            unsafe { libc::mprotect((region + i * page) as *mut _, page, libc::PROT_READ) };
        }
        let in_region = |v: &Vec<(usize, usize)>| {
            v.iter()
                .filter(|&&(s, e)| s >= region && e <= region + 600 * page)
                .count()
        };
        if MapsQuery::open().is_ok() {
            // New: left for a pass that finds them unchanged.
            assert!(by_query(work) >= 2, "600 VMAs take more than one step");
            assert_eq!(in_region(&advised.borrow()), 0, "new VMAs wait a pass");
            by_query(work);
            assert_eq!(in_region(&advised.borrow()), 600);
            advised.borrow_mut().clear();
            by_query(work);
            assert_eq!(in_region(&advised.borrow()), 0, "nothing new");
        }
        // The text walk remembers the same bounds.
        by_text(work);
        assert_eq!(in_region(&advised.borrow()), 0, "{:x?}", advised.borrow());
        // A VMA whose bounds changed is advised again, once a pass found it
        // unchanged.
        // SAFETY: as above: a page of this test's own mapping.
        unsafe { libc::mprotect(region as *mut _, page, libc::PROT_READ) };
        advised.borrow_mut().clear();
        by_text(work);
        assert_eq!(in_region(&advised.borrow()), 0, "{:x?}", advised.borrow());
        by_text(work);
        assert_eq!(in_region(&advised.borrow()), 1, "{:x?}", advised.borrow());
        // SAFETY: the whole mapping made above; nothing refers into it.
        unsafe { libc::munmap(outer as *mut _, 602 * page) };
    }
}
