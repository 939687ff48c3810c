//! A round's plan: the changes its walk decided on (adjacent regions of one
//! VMA with the same change as one run, one `madvise`), carried out after
//! the walk — first what adds no VMA, then the others by how many pages
//! they concern while the VMA budget lasts. A change not made is undone in
//! the region table (the region keeps its state, due again).
//!
//! Never reads `/proc` but for `vm.max_map_count` once; changes only the
//! runs it was given.

use super::table::{Region, State, Table};
use super::{counts, resting};
use crate::core::policy::paying::{split_budget, splits};
use crate::core::policy::Range;
use crate::os::ksm;

/// Why a change was decided on, for the report.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// ksmd's verdict, or the schedule of probes.
    Schedule,
    /// What the content showed: given back because it changed and held
    /// still, or taken out on sight (`super::sightings`).
    Content,
    /// Given back: a copy of its content was sighted in another process.
    Sighting,
}

/// A change the walk decided on.
#[derive(Clone, Copy)]
struct Planned {
    run: Range,
    /// The VMA the run lies in (what a change to its flags splits).
    vma: Range,
    /// Given back to ksmd (a re-probe), or taken out.
    register: bool,
    cause: Cause,
    pages: u32,
    /// The run's regions in this round's table.
    first: u16,
    last: u16,
}

/// Runs a round can change: as many as the resting table holds, so that a
/// pool worker's many small VMAs, each its own run, are taken out or given
/// back in one round. (With 256, a worker of 1,536 small duplicated VMAs
/// gave them back over six rounds, paced by the library's CPU, and its
/// copies in other workers had ended their probations by then.) 48 bytes
/// each, 192 KiB of the zeroed work, touched only as far as used.
const MOST_PLANNED: usize = resting::CAPACITY;
const _: () = assert!(super::table::CAPACITY <= u16::MAX as usize + 1);
const _: () = assert!(core::mem::size_of::<Option<Planned>>() <= 48);

/// The changes planned in the round in progress (part of the round's
/// zeroed static work: all-zero bytes are an empty plan).
pub struct Plan {
    planned: [Option<Planned>; MOST_PLANNED],
    count: usize,
}

impl Plan {
    /// A round begins with nothing planned.
    pub fn clear(&mut self) {
        self.count = 0;
    }

    /// Plans a change of the region at `index` (`piece`, in `vma`): joins
    /// the last run when it continues it; with no room left this round,
    /// the change is undone and made at the next, which comes at once (see
    /// `super::summarize`).
    pub fn add(
        &mut self,
        table: &mut Table,
        index: usize,
        piece: Range,
        vma: Range,
        register: bool,
        cause: Cause,
    ) {
        let pages = (piece.len() >> 12) as u32;
        if let Some(Some(last)) = self.planned[..self.count].last_mut() {
            if last.register == register
                && last.cause == cause
                && last.vma == vma
                && last.run.end == piece.start
            {
                last.run.end = piece.end;
                last.pages = last.pages.saturating_add(pages);
                last.last = index as u16;
                return;
            }
        }
        if self.count == MOST_PLANNED {
            counts::deferred();
            undo(table, index, register, cause, true);
            return;
        }
        self.planned[self.count] = Some(Planned {
            run: piece,
            vma,
            register,
            cause,
            pages,
            first: index as u16,
            last: index as u16,
        });
        self.count += 1;
    }

    /// The plan carried out: first what adds no VMA, then the rest by size
    /// while the budget lasts (none close to `vm.max_map_count`). `vmas`:
    /// the process's VMAs as the walk counted them; `splits`: the VMAs that
    /// earlier changes already added.
    pub fn carry_out(&mut self, table: &mut Table, vmas: u64, splits_before: u64) {
        let mut budget = split_budget(vmas, splits_before).saturating_sub(splits_before);
        if crate::core::catchup::map_count_headroom_low() || near_map_count(vmas) {
            budget = 0;
        }
        let n = self.count;
        for i in 0..n {
            if let Some(p) = self.planned[i] {
                if splits(p.run, p.vma) == 0 {
                    self.planned[i] = None;
                    apply(table, p);
                }
            }
        }
        // The largest first, of equal ones the last planned first (the
        // highest address), sorted in place: a plan of thousands of runs
        // is not searched once per run.
        let rest = &mut self.planned[..n];
        rest.sort_unstable_by_key(|p| core::cmp::Reverse(p.map_or((0, 0), |p| (p.pages, p.first))));
        for slot in rest {
            let Some(p) = slot.take() else {
                continue;
            };
            let cost = splits(p.run, p.vma);
            if cost <= budget {
                budget -= cost;
                apply(table, p);
            } else {
                counts::refused_by_budget();
                undo_run(table, p);
            }
        }
        self.count = 0;
    }
}

/// Whether `vmas` is within 1/32 of `vm.max_map_count` (as the catch-up
/// judges it, which reads the limit only in `advise` mode).
fn near_map_count(vmas: u64) -> bool {
    static MAX: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
    use core::sync::atomic::Ordering::Relaxed;
    if MAX.load(Relaxed) == 0 {
        MAX.store(crate::os::proc::max_map_count(), Relaxed);
    }
    let max = MAX.load(Relaxed);
    max != 0 && vmas.saturating_add((max / 32).max(64)) >= max
}

fn apply(table: &mut Table, p: Planned) {
    let done = if p.register {
        resting::forget(p.run);
        crate::core::engine::register_again(p.run)
    } else {
        resting::insert(p.run) && ksm::unmark(p.run.start, p.run.len()).is_ok()
    };
    if done {
        counts::changed(p.register, p.run.len() as u64);
        counts::by_cause(p.register, p.cause, p.run.len() as u64);
    } else {
        undo_run(table, p);
    }
}

fn undo_run(table: &mut Table, p: Planned) {
    for index in p.first as usize..=p.last as usize {
        undo(table, index, p.register, p.cause, false);
    }
}

/// A change that was not made: a region that was to be given back stays
/// resting as it was before the round (its rest, level, content looks and
/// sighting go on: a give-back on a sighting is tried again at its next
/// sighting, not after a rest begun anew); one to be taken out is paying,
/// re-checked at its next tick. When only the plan was full (`soon`), it is
/// due again at the next round, which comes at once (a give-back for the
/// same cause: `by_content`). Otherwise (the VMA budget, a refused
/// `madvise`) it waits for its next turn (a tick, a look, a sighting): due
/// at every round, it would make every poll a round until the budget has
/// room.
fn undo(table: &mut Table, index: usize, register: bool, cause: Cause, soon: bool) {
    let on_change = cause == Cause::Content;
    let back = if register {
        let before = Region {
            again: false,
            ..table.before(index)
        };
        if soon {
            before.due_again(on_change)
        } else {
            before
        }
    } else {
        Region {
            state: State::Paying,
            level: 0,
            again: soon,
            ..table.get(index)
        }
    };
    table.set(index, back);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zeroed<T>() -> Box<T> {
        // SAFETY: all-zero bytes are an empty table and an empty plan
        // (integers, and runs read only below `count`, zero).
        unsafe { Box::new_zeroed().assume_init() }
    }

    /// A resting piece in the middle of a 6 MiB VMA, given a sighting's
    /// give-back (two splits): its state before, and the probation planned.
    fn planned_give_back(table: &mut Table) -> (usize, Region, Range, Range) {
        let vma = Range {
            start: 0x4000_0000,
            end: 0x4000_0000 + (6 << 20),
        };
        let piece = Range {
            start: vma.start + (2 << 20),
            end: vma.start + (4 << 20),
        };
        let before = Region {
            range: piece,
            state: State::Resting,
            level: 2,
            epoch: 1,
            sight_pending: true,
            reprobe: false,
            again: false,
            mark: 0x1234,
            since: 0x40 | 1,
        };
        let probation = Region {
            state: State::Probation,
            level: 3,
            sight_pending: false,
            mark: 77,
            since: 0x99,
            ..before
        };
        let index = table.put(probation).unwrap();
        table.remember_before(index, before);
        (index, before, piece, vma)
    }

    /// The budget has no room for the give-back: the piece rests as it did
    /// (level, rest, look, sighting). It once began a new rest one level
    /// up with its sighting forgotten.
    #[test]
    fn a_give_back_the_budget_refuses_leaves_the_region_as_it_was() {
        let (mut table, mut plan) = (zeroed::<Table>(), zeroed::<Plan>());
        let (index, before, piece, vma) = planned_give_back(&mut table);
        plan.add(&mut table, index, piece, vma, true, Cause::Sighting);
        // Splits made before use the whole budget of a process of one VMA.
        plan.carry_out(&mut table, 1, 100);
        assert_eq!(table.get(index), before);
    }

    /// Only the plan was full: as it was, and due at the next round.
    #[test]
    fn a_give_back_deferred_is_due_at_the_next_round_as_it_was() {
        let mut table = zeroed::<Table>();
        let (index, before, _, _) = planned_give_back(&mut table);
        undo(&mut table, index, true, Cause::Sighting, true);
        assert_eq!(table.get(index), before.due_again(false));
        assert!(table.get(index).again && table.get(index).sight_pending);
    }
}
