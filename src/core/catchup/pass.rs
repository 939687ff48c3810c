//! What one step carries through its walk: the [`Pass`] value (the scan
//! state it may change, how it measures its budget, the open maps the
//! advice is checked on, and the `judge`/`advise` closures), the
//! [`Cursor`] that says where the pass in progress stands, and what a VMA's
//! neighbours are known to be ([`Below`], [`Above`]).
//!
//! Everything here lives in the static scan state or in a step's small
//! frame: nothing allocates, and the `Pass` holds references, a budget and
//! at most one open descriptor (the maps of this step, closed with it).

use super::memory::Memory;
use super::{State, Work, NAME_BYTES, STEP_BUDGET_NS};
use crate::os::proc::{MapsLine, RegionClass};
use crate::os::sys::{self, MapsQuery};

/// How a step measures what it spent against [`STEP_BUDGET_NS`].
#[derive(Clone, Copy)]
pub(super) enum Budget {
    /// Time since it started (a hook's step, on a program's thread).
    Time(u64),
    /// This thread's CPU time since it started (the catch-up thread).
    Cpu(u64),
}

impl Budget {
    pub(super) fn start(own_thread: bool) -> Budget {
        if own_thread {
            Budget::Cpu(sys::thread_cpu_ns())
        } else {
            Budget::Time(sys::monotonic_ns())
        }
    }

    pub(super) fn exceeded(self) -> bool {
        match self {
            Budget::Time(t) => sys::monotonic_ns().saturating_sub(t) > STEP_BUDGET_NS,
            Budget::Cpu(t) => sys::thread_cpu_ns().saturating_sub(t) > STEP_BUDGET_NS,
        }
    }
}

/// Where the pass in progress stands.
pub(super) struct Cursor {
    /// The next step looks at the VMA at or above this address.
    pub(super) resume: usize,
    /// The last VMA examined: the `below` of the next one, to recognise
    /// thread stacks by their guard and the brk heap's growth.
    pub(super) below: Option<Below>,
    /// The page-aligned program break when the step started.
    pub(super) heap_end: usize,
    /// VMAs this pass has examined.
    pub(super) examined: u64,
    /// This pass deferred a VMA that was new or still changing.
    pub(super) deferred_any: bool,
    /// This pass advised a VMA the previous one had not seen.
    pub(super) advised_new: bool,
}

pub(super) const FRESH_CURSOR: Cursor = Cursor {
    resume: 0,
    below: None,
    heap_end: 0,
    examined: 0,
    deferred_any: false,
    advised_new: false,
};

/// What a VMA's upper neighbour needs to know of it.
#[derive(Clone, Copy)]
pub(super) struct Below {
    start: usize,
    pub(super) end: usize,
    perms: [u8; 4],
    inode: u64,
    heap: bool,
}

impl Below {
    pub(super) fn of(vma: &MapsLine) -> Below {
        Below {
            start: vma.start,
            end: vma.end,
            perms: vma.perms,
            inode: vma.inode,
            heap: vma.class() == RegionClass::Heap,
        }
    }

    pub(super) fn line(self) -> MapsLine<'static> {
        MapsLine {
            start: self.start,
            end: self.end,
            perms: self.perms,
            offset: 0,
            inode: self.inode,
            name: if self.heap { b"[heap]" } else { b"" },
        }
    }
}

/// What the walk knows of the VMA above the one it considers.
#[derive(Clone, Copy)]
pub(super) enum Above<'a> {
    /// Nothing yet: looked up through the open maps where it matters.
    Unknown,
    /// There is no VMA above (the last line of the text walk).
    Nothing,
    /// The next VMA up (the next line of the text walk), which may or may
    /// not start right where this one ends.
    Vma(&'a MapsLine<'a>),
}

/// One step's walk: the scan state it changes and the closures that judge
/// and advise. Built by the step from the scan state it holds (only the
/// thread that set `scanning` builds one).
pub(super) struct Pass<'a, J, A> {
    pub(super) state: &'a State,
    pub(super) memory: &'a mut Memory,
    pub(super) cursor: &'a mut Cursor,
    pub(super) budget: Budget,
    /// The `PROCMAP_QUERY` maps this step walks, through which each advice
    /// is checked afterwards; `None` in the text walk (no check).
    pub(super) maps: Option<MapsQuery>,
    /// Where the check reads the names of the VMAs it looks up.
    pub(super) check_name: &'a mut [u8; NAME_BYTES],
    /// The policy's verdict on a VMA, given the VMA right below it.
    pub(super) judge: &'a J,
    /// Makes a range mergeable; whether it is now.
    pub(super) advise: &'a A,
}

impl<'a, J, A> Pass<'a, J, A> {
    /// A pass over `work`, and apart from it the buffer the walk reads each
    /// VMA's name into (the line it makes borrows that buffer while the
    /// `Pass` considers it).
    pub(super) fn new(
        state: &'a State,
        work: &'a mut Work,
        budget: Budget,
        judge: &'a J,
        advise: &'a A,
    ) -> (Pass<'a, J, A>, &'a mut [u8; NAME_BYTES]) {
        let Work {
            memory,
            cursor,
            name,
            check_name,
        } = work;
        let pass = Pass {
            state,
            memory,
            cursor,
            budget,
            maps: None,
            check_name,
            judge,
            advise,
        };
        (pass, name)
    }
}
