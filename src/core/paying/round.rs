//! One round of decisions: walk the process's VMAs (`/proc/self/smaps`,
//! which alone says which are given to ksmd), meet every region of the
//! qualifying ones, judge those whose time has come (`/proc/self/pagemap`),
//! and plan what changes; then carry the plan out within the VMA budget.
//!
//! Nothing is changed while the walk reads: every change is planned first
//! (adjacent regions of one VMA with the same change become one range, one
//! `madvise`), then the changes that add no VMA are made, then the others
//! by how many pages they concern, while the budget lasts; those left wait
//! for the next round.
//!
//! Sightings: a piece met for the first time is judged on what its content
//! shows (`super::sightings`) before ksmd gives it a probation; a piece it
//! took out is given back when another process holds one of its
//! sightings (at once the first time, then after longer and longer rests).
//!
//! Content looks: a region taken out has a few present pages sampled
//! (`/proc/thread-self/mem`, never a page that is not present) when it is
//! taken out and then at most every `LOOK_SECONDS`; a change that then
//! holds still makes it due at once (`policy::paying::look`). Regions in a
//! VMA whose missing faults go to the program's userfaultfd handler are
//! never sampled.

use super::plan::{Cause, Plan};
use super::sightings::Sightings;
use super::table::{Region, State, Table};
use super::{counts, resting};
use crate::core::policy::paying::{
    admitted, chunk_pieces, has_evidence, index_in, judged_on_sight, look, look_samples, pays,
    recheck_due, rest_due, rested_enough, slice_of, take_out_now, Fingerprint, Sight,
    LOOK_SECONDS, MAX_RECHECK_LEVEL, MAX_REST_LEVEL, PROBATION_SCANS, PROBATION_SECONDS,
    PROMOTE_BYTES,
};
use crate::core::policy::{Range, VmaVerdict};
use crate::os::own_memory::OwnMemory;
use crate::os::pagemap::{PageCounts, Pagemap};
use crate::os::proc::{LineBuffer, MapsLine};
use crate::os::smaps;

/// Where a round stands on ksmd's clock.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// `full_scans` now.
    pub scans: u64,
    /// The tick now, and the tick of the previous round: what fell in
    /// between is due.
    pub tick: u64,
    pub last_tick: u64,
    /// The fork epoch (low bits).
    pub epoch: u8,
    /// Monotonic seconds now (low 16 bits).
    pub seconds: u16,
    /// ksmd merged more on the host during its last full scan.
    pub host_merging: bool,
}

const PROMOTIONS: usize = 8;
/// Memory one round reads to sight pieces at the most (a quarter of a
/// second of the thread's CPU, or so); the rest waits for the next round.
const SIGHT_BYTES_PER_ROUND: usize = 512 << 20;
/// A piece first met being filled is sighted again for this long at the
/// most; then its probation decides.
const SIGHT_PATIENCE_SECONDS: u16 = 30;
/// Pagemap entries read at a time: one region's worth.
const PAGEMAP_BATCH: usize = 512;

/// Everything only the round in progress touches (see `super::BUSY`).
pub struct Work {
    pub table: Table,
    plan: Plan,
    /// Windows around re-probed regions found paying, and the round that
    /// found them: resting regions in them are due.
    promotions: [(Range, u64); PROMOTIONS],
    rounds: u64,
    pagemap: [u64; PAGEMAP_BATCH],
    /// A sampled page (its first 4 KiB where pages are larger).
    sample: [u8; SAMPLE_BYTES],
    /// When content looks last ran (monotonic seconds, low 16 bits), and
    /// whether they ever did.
    last_look: u16,
    looked: bool,
    /// `/proc/thread-self/mem` could not be opened: no looks.
    looks_unavailable: bool,
    /// What the pieces' content showed, here and in the user's other
    /// processes (`super::sightings`).
    sightings: Sightings,
}

const SAMPLE_BYTES: usize = 4096;

impl Work {
    /// Whether rounds look at resting regions' content (the thread's
    /// schedule counts on a round after every full scan then).
    pub fn looks_available(&self) -> bool {
        !self.looks_unavailable
    }
}

/// The walk's own line buffer (only the round holding `super::BUSY`).
static LINES: LineBuffer = LineBuffer::new();

/// What a round found.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    /// The walk was stopped (a retire) or could not read.
    pub incomplete: bool,
    /// VMAs in the process, and the splits between qualifying VMAs that
    /// differ only in being given to ksmd.
    pub vmas: u64,
    pub splits: u64,
    /// Pieces first met with nothing in them yet were left unknown (to be
    /// sighted once they hold something).
    pub empty_unsighted: bool,
}

/// What a VMA's upper neighbour needs to know of it.
#[derive(Clone, Copy)]
struct Seen {
    range: Range,
    perms: [u8; 4],
    inode: u64,
    qualifies: bool,
    mergeable: bool,
}

struct Walk<'a, J> {
    work: &'a mut Work,
    clock: Clock,
    judge: &'a J,
    process_mode: bool,
    pagemap: Pagemap,
    /// Opened on first need (a baseline or a look).
    memory: Option<OwnMemory>,
    /// This round looks at resting regions' content.
    looks: bool,
    /// Pieces first met are sighted (`super::sightings`).
    sightings: bool,
    /// Bytes of pieces sighted this round.
    sighted_bytes: usize,
    /// The VMA being walked may be sampled (no userfaultfd handler).
    sampled: bool,
    below: Option<Seen>,
    outcome: Outcome,
    /// The end of the last VMA walked: a VMA reported again after a change
    /// is taken from here.
    cursor: usize,
}

/// One round; `judge` is the engine's verdict on a VMA.
pub fn round(
    work: &mut Work,
    clock: Clock,
    process_mode: bool,
    sightings: bool,
    judge: &impl Fn(&MapsLine, Option<&MapsLine>) -> VmaVerdict,
) -> Outcome {
    work.plan.clear();
    work.rounds += 1;
    let Ok(pagemap) = Pagemap::open() else {
        return Outcome {
            incomplete: true,
            ..Outcome::default()
        };
    };
    let looks = !work.looks_unavailable
        && (!work.looked || clock.seconds.wrapping_sub(work.last_look) >= LOOK_SECONDS);
    if looks {
        work.looked = true;
        work.last_look = clock.seconds;
    }
    let dir = if sightings { work.sightings.begin() } else { None };
    let mut walk = Walk {
        sightings: dir.is_some() && !work.looks_unavailable,
        sighted_bytes: 0,
        work,
        clock,
        judge,
        process_mode,
        pagemap,
        memory: None,
        looks,
        sampled: false,
        below: None,
        outcome: Outcome::default(),
        cursor: 0,
    };
    let read = smaps::for_each_vma(&LINES, |vma| {
        if crate::core::catchup_thread::round_must_stop() {
            return false;
        }
        walk.vma(vma);
        true
    });
    let mut outcome = walk.outcome;
    outcome.incomplete = read.is_err() || crate::core::catchup_thread::round_must_stop();
    if outcome.incomplete {
        work.table.keep_the_rest();
    } else {
        work.table.drop_below(usize::MAX, |_| {});
    }
    work.plan.carry_out(&mut work.table, outcome.vmas, outcome.splits);
    work.table.finish();
    work.sightings.end(dir);
    outcome
}

impl<J: Fn(&MapsLine, Option<&MapsLine>) -> VmaVerdict> Walk<'_, J> {
    fn vma(&mut self, vma: &smaps::SmapsVma) {
        let line = &vma.line;
        self.outcome.vmas += 1;
        let below = self.below.filter(|b| b.range.end == line.start).map(|b| MapsLine {
            start: b.range.start,
            end: b.range.end,
            perms: b.perms,
            offset: 0,
            inode: b.inode,
            name: b"",
        });
        let range = Range {
            start: line.start.max(self.cursor),
            end: line.end,
        };
        let qualifies = (self.judge)(line, below.as_ref()) == VmaVerdict::Merge
            && line.perms[0] == b'r'
            && !range.is_empty();
        if let Some(b) = self.below {
            if b.qualifies
                && qualifies
                && b.range.end == line.start
                && b.perms == line.perms
                && b.mergeable != vma.mergeable
            {
                self.outcome.splits += 1;
            }
        }
        self.below = Some(Seen {
            range: Range {
                start: line.start,
                end: line.end,
            },
            perms: line.perms,
            inode: line.inode,
            qualifies,
            mergeable: vma.mergeable,
        });
        if !qualifies {
            return;
        }
        self.cursor = range.end;
        // The brk heap grows at its top: in `process` mode nothing but
        // merge-any registers what it grows into, so its top region is
        // never taken out.
        let growing_top = self.process_mode && line.name == b"[heap]";
        self.sampled = !vma.userfaultfd;
        for piece in chunk_pieces(range) {
            let keep = growing_top && piece.end == range.end;
            self.region(piece, range, vma.mergeable, keep);
        }
    }

    fn region(&mut self, piece: Range, vma: Range, mergeable: bool, keep: bool) {
        self.work.table.drop_below(piece.start, |_| {});
        let known = self.work.table.take(piece.start).or_else(|| {
            // Not known (the table was full, the VMA's start moved), yet
            // taken out by us: resting.
            (!mergeable && resting::overlaps(piece))
                .then(|| self.fresh(piece, State::Resting, 0).resting(0, self.clock.seconds))
        });
        let (next, change, cause) = match known {
            None if mergeable => self.first_sight(piece, keep),
            None => (None, None, Cause::Schedule),
            Some(r) => {
                let r = Region { range: piece, ..r };
                match (r.state, mergeable) {
                    // Registered by someone else (the program, merge-any
                    // switched back on): a probe like any other.
                    (State::Resting, true) => (Some(self.probation_of(r, piece)), None, Cause::Schedule),
                    (State::Resting, false) => self.resting(r, piece, vma),
                    // Not given to ksmd, not by us: not ours to decide.
                    (_, false) => (None, None, Cause::Schedule),
                    // Being filled when first met: judged on sight once
                    // it holds enough.
                    (State::Probation, true) if r.sight_pending && self.sightings && !keep => {
                        match self.on_sight(r) {
                            (Some(next), None, _) if next.state == State::Probation => {
                                let (next, change) = self.on_probation(next, keep);
                                (next, change, Cause::Schedule)
                            }
                            decided => decided,
                        }
                    }
                    (State::Probation, true) => {
                        with_cause(self.on_probation(Region { sight_pending: false, ..r }, keep))
                    }
                    (State::Paying, true) => with_cause(self.paying(r, keep)),
                }
            }
        };
        let Some(next) = next else {
            return;
        };
        let Some(index) = self.work.table.put(next) else {
            return;
        };
        if let Some(register) = change {
            // A give-back not made leaves the region as it was (`plan::undo`).
            if let (true, Some(before)) = (register, known) {
                self.work.table.remember_before(index, Region { range: piece, ..before });
            }
            self.plan(index, piece, vma, register, cause);
        }
    }

    fn fresh(&self, piece: Range, state: State, level: u8) -> Region {
        Region {
            range: piece,
            state,
            level,
            epoch: self.clock.epoch,
            reprobe: false,
            again: false,
            sight_pending: false,
            mark: self.clock.scans as u32,
            since: self.clock.seconds,
        }
    }

    /// A piece first met given to ksmd: a probation, unless what its
    /// content shows says no copy of it is anywhere (`super::sightings`):
    /// then it is taken out at once, and rests.
    fn first_sight(&mut self, piece: Range, keep: bool) -> (Option<Region>, Option<bool>, Cause) {
        let probation = (Some(self.fresh(piece, State::Probation, 0)), None, Cause::Schedule);
        // A piece the table has no room for is met as new every round:
        // never read it again and again.
        if keep || !self.sightings || !self.sampled || self.work.table.full() {
            return probation;
        }
        let fresh = self.fresh(piece, State::Probation, 0);
        self.on_sight(fresh)
    }

    /// A first probation's piece judged on sight: it goes on (a sighting
    /// elsewhere, or no verdict: `sight_pending` while it is being filled), or
    /// it is taken out at once.
    fn on_sight(&mut self, r: Region) -> (Option<Region>, Option<bool>, Cause) {
        if self.clock.seconds.wrapping_sub(r.since) > SIGHT_PATIENCE_SECONDS {
            // Still not filled: its probation decides.
            return (Some(Region { sight_pending: false, ..r }), None, Cause::Schedule);
        }
        if self.sighted_bytes >= SIGHT_BYTES_PER_ROUND {
            // Enough read for one round: the next reads on.
            return (Some(Region { sight_pending: true, ..r }), None, Cause::Schedule);
        }
        let Some(sight) = self.sight(r.range) else {
            return (Some(Region { sight_pending: false, ..r }), None, Cause::Schedule);
        };
        // Counted once read (a piece never read costs nothing).
        self.sighted_bytes += r.range.len();
        if sight.present == 0 && !r.sight_pending {
            // Mapped, nothing written yet: unknown, met anew (and sighted)
            // once it holds something.
            self.outcome.empty_unsighted = true;
            return (None, None, Cause::Schedule);
        }
        if !judged_on_sight(sight) {
            // Being filled: looked at again soon.
            return (Some(Region { sight_pending: true, ..r }), None, Cause::Schedule);
        }
        if admitted(sight) || !has_evidence(sight) {
            return (Some(Region { sight_pending: false, ..r }), None, Cause::Schedule);
        }
        counts::judged(sight.present);
        // Resting, given back when a copy is sighted elsewhere.
        let resting = self.baseline(r.resting(0, self.clock.seconds));
        (Some(Region { sight_pending: true, ..resting }), Some(false), Cause::Content)
    }

    /// What `piece`'s content shows; `None` in a VMA whose missing faults
    /// go to the program's userfaultfd handler (it may have been registered
    /// since the piece was first met): never read.
    fn sight(&mut self, piece: Range) -> Option<Sight> {
        if !self.sampled {
            return None;
        }
        self.open_memory()?;
        let memory = self.memory.as_ref()?;
        self.work
            .sightings
            .sight(memory, &self.pagemap, &mut self.work.pagemap, piece)
    }

    /// `/proc/thread-self/mem`, opened on first need (`None`: it cannot
    /// be, and no round reads the program's memory again).
    fn open_memory(&mut self) -> Option<()> {
        if self.memory.is_none() {
            match OwnMemory::open() {
                Ok(m) => self.memory = Some(m),
                Err(_) => {
                    self.work.looks_unavailable = true;
                    return None;
                }
            }
        }
        Some(())
    }

    fn probation_of(&self, r: Region, piece: Range) -> Region {
        Region {
            reprobe: true,
            ..self.fresh(piece, State::Probation, r.level)
        }
    }

    fn count(&mut self, piece: Range) -> Option<PageCounts> {
        self.pagemap
            .count(piece.start, piece.end, &mut self.work.pagemap)
            .ok()
    }

    /// A probation whose full scans have passed is judged.
    fn on_probation(&mut self, r: Region, keep: bool) -> (Option<Region>, Option<bool>) {
        if r.epoch != self.clock.epoch {
            // A fork since it began: pages shared with the child are no
            // evidence of anything.
            return (Some(self.fresh(r.range, State::Probation, r.level)), None);
        }
        let scans = (self.clock.scans as u32).wrapping_sub(r.mark) as u64;
        let seconds = self.clock.seconds.wrapping_sub(r.since);
        if scans < PROBATION_SCANS || seconds < PROBATION_SECONDS {
            return (Some(r), None);
        }
        let Some(c) = self.count(r.range) else {
            return (Some(r), None);
        };
        counts::judged(c.present);
        if c.present == 0 {
            // Nothing to scan: known again once it holds something.
            return (None, None);
        }
        if pays(c.present, c.shared) {
            if r.reprobe {
                counts::found_paying();
                self.promote(r.range);
            }
            let paying = Region {
                state: State::Paying,
                level: 0,
                again: false,
                reprobe: false,
                ..r
            };
            return (Some(paying), None);
        }
        if keep {
            return (Some(Region { state: State::Paying, again: false, ..r }), None);
        }
        if !take_out_now(scans, self.clock.host_merging) {
            return (Some(r), None);
        }
        // A probation given on a sighting elsewhere (not a re-probe, yet
        // a level: see `resting`) found no copy merging: its copy may have
        // been resting then. It stays one to give back on a sighting,
        // after a longer rest each time.
        let on_sighting = !r.reprobe && r.level > 0;
        let level = if r.reprobe || on_sighting {
            (r.level + r.reprobe as u8).min(MAX_REST_LEVEL)
        } else {
            0
        };
        let resting = self.baseline(r.resting(level, self.clock.seconds));
        (Some(Region { sight_pending: on_sighting, ..resting }), Some(false))
    }

    /// A paying region is looked at again on its ticks; once it no longer
    /// pays it is taken out.
    fn paying(&mut self, r: Region, keep: bool) -> (Option<Region>, Option<bool>) {
        let due = r.again || recheck_due(r.level, self.clock.last_tick, self.clock.tick);
        if !due {
            return (Some(r), None);
        }
        let Some(c) = self.count(r.range) else {
            return (Some(r), None);
        };
        if c.present == 0 {
            return (None, None);
        }
        if pays(c.present, c.shared) || keep {
            let level = (r.level + 1).min(MAX_RECHECK_LEVEL);
            return (Some(Region { level, again: false, ..r }), None);
        }
        (Some(self.baseline(r.resting(0, self.clock.seconds))), Some(false))
    }

    /// A resting region is given back to ksmd on its tick (or at once
    /// when promoted, or when its change had to wait).
    fn resting(
        &mut self,
        r: Region,
        piece: Range,
        vma: Range,
    ) -> (Option<Region>, Option<bool>, Cause) {
        let (index, count) = index_in(piece, vma);
        // One of its sightings turned up in another process.
        // A copy of its content is sighted elsewhere: given back for a
        // probation — at once the first time, then only after resting
        // 30 s << level (its copy may have been resting when it was given
        // back; each try raises the level). Not a re-probe: no promotion
        // of its neighbours, which are no more likely to have copies.
        let sighting_due = r.sight_pending
            && self.sightings
            && (r.level == 0 || rested_enough(r.level - 1, r.rested(self.clock.seconds)))
            && self.work.sightings.sighted(piece.start);
        if sighting_due {
            let probation = Region {
                reprobe: false,
                level: (r.level + 1).min(MAX_REST_LEVEL),
                ..self.probation_of(r, piece)
            };
            return (Some(probation), Some(true), Cause::Sighting);
        }
        let due = r.again
            || self.promoted(piece)
            || (rest_due(
                r.level,
                slice_of(index, count),
                self.clock.last_tick,
                self.clock.tick,
            ) && rested_enough(r.level, r.rested(self.clock.seconds)));
        if due {
            let on_change = r.again && r.due_on_change();
            return (Some(self.probation_of(r, piece)), Some(true), if on_change { Cause::Content } else { Cause::Schedule });
        }
        if !self.looks {
            return (Some(r), None, Cause::Schedule);
        }
        let Some(now) = self.fingerprint(piece) else {
            return (Some(r), None, Cause::Schedule);
        };
        let seen = look(r.fingerprint(), r.changed(), now);
        if seen.due {
            return (Some(self.probation_of(r, piece)), Some(true), Cause::Content);
        }
        (Some(r.with_look(seen.fingerprint, seen.changed)), None, Cause::Schedule)
    }

    /// `resting` with the fingerprint of its content now, the baseline of
    /// its content looks.
    fn baseline(&mut self, resting: Region) -> Region {
        match self.fingerprint(resting.range) {
            Some(now) => resting.with_look(now, false),
            None => resting,
        }
    }

    /// The fingerprint of `piece`'s sampled pages, if they can be read.
    fn fingerprint(&mut self, piece: Range) -> Option<u32> {
        if !self.sampled || self.work.looks_unavailable {
            return None;
        }
        self.open_memory()?;
        let memory = self.memory.as_ref()?;
        let page = crate::os::page_size();
        let sample = &mut self.work.sample[..SAMPLE_BYTES.min(page)];
        let mut fingerprint = Fingerprint::new();
        for index in look_samples(piece.len() / page) {
            let addr = piece.start + index * page;
            if !self.pagemap.present(addr).ok()? {
                fingerprint.add_absent();
                continue;
            }
            // Unmapped or changed under the read: no verdict this time.
            if !memory.read(addr, sample).ok()? {
                return None;
            }
            fingerprint.add_page(sample);
        }
        Some(fingerprint.finish())
    }

    fn promote(&mut self, around: Range) {
        let window = Range {
            start: around.start.saturating_sub(PROMOTE_BYTES),
            end: around.end.saturating_add(PROMOTE_BYTES),
        };
        let rounds = self.work.rounds;
        // The oldest window gives way.
        let slot = (0..PROMOTIONS)
            .min_by_key(|&i| self.work.promotions[i].1)
            .unwrap_or(0);
        self.work.promotions[slot] = (window, rounds);
    }

    /// Whether `piece` lies in a window promoted by this round or the last.
    fn promoted(&self, piece: Range) -> bool {
        let rounds = self.work.rounds;
        self.work
            .promotions
            .iter()
            .any(|&(w, at)| at != 0 && at + 1 >= rounds && w.overlaps(&piece))
    }

    /// Adds the region at `index` to the plan: to the last run if it
    /// continues it, else as a run of its own; with no room left, the
    /// change waits for the next round.
    fn plan(&mut self, index: usize, piece: Range, vma: Range, register: bool, cause: Cause) {
        let work = &mut *self.work;
        work.plan.add(&mut work.table, index, piece, vma, register, cause);
    }
}

/// A decision on a region that was not a content look's.
fn with_cause((next, change): (Option<Region>, Option<bool>)) -> (Option<Region>, Option<bool>, Cause) {
    (next, change, Cause::Schedule)
}
