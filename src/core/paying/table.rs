//! The regions the decisions know, in address order, and what was decided
//! about each: a fixed array rebuilt by every round.
//!
//! A round walks the VMAs in address order and meets the regions in the
//! same order, so the previous round's regions sit at the back of the
//! array and are used up from the front as the walk passes them, while
//! this round's are appended at the front (the catch-up's remembered VMAs
//! work the same way). A region the walk no longer meets is dropped.
//! Zeroed memory is the empty table; pages never used are never touched.

use crate::core::policy::Range;

/// Regions known at most (16 GiB of memory in 2 MiB regions); past it,
/// regions are left as they are (registered, as without decisions).
pub const CAPACITY: usize = 8192;

/// What was decided about a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Given to ksmd since full scan `mark`; judged once enough scans passed.
    Probation,
    /// Judged paying; re-checked on ticks (the level sets how often).
    Paying,
    /// Taken back out; probed again on a tick (the level sets how often).
    Resting,
}

/// One region and its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub range: Range,
    pub state: State,
    /// Back-off level (0 to 7): of re-probes while resting (and on a probation that
    /// is a re-probe), of re-checks while paying.
    pub level: u8,
    /// The fork epoch its probation began in (low bits).
    pub epoch: u8,
    /// Probation: a first probation whose piece could not be judged on
    /// sight yet (being filled): it is sighted again at the next rounds.
    /// Resting: taken out on sight (or after a probation given on a
    /// sighting); given back when a copy of its content is sighted
    /// elsewhere, after resting `30 s << (level - 1)` from level 1 on.
    pub sight_pending: bool,
    /// The probation is a re-probe of a resting region.
    pub reprobe: bool,
    /// Due at the next round whatever the schedule (an action that had to
    /// wait, a promotion).
    pub again: bool,
    /// Probation: the full scan it began at (low 32 bits). Resting: the
    /// fingerprint of its last content look (0: none yet; see
    /// [`Region::fingerprint`]).
    pub mark: u32,
    /// Probation: the second it began at (monotonic, low 16 bits).
    /// Resting: the second it began resting, rounded down to a multiple of
    /// four, with bit 0 set when its last content look saw a change and
    /// bit 1 when a look made it due and giving it back had to wait.
    pub since: u16,
}

impl Region {
    /// Resting: the fingerprint its last content look kept (0: none).
    pub fn fingerprint(&self) -> u32 {
        self.mark
    }

    /// Resting: whether its last content look saw a change.
    pub fn changed(&self) -> bool {
        self.since & 1 != 0
    }

    /// Resting: a content look made it due, and giving it back waits.
    pub fn due_on_change(&self) -> bool {
        self.since & 2 != 0
    }

    /// Resting, due again at the next round (`on_change`: because a
    /// content look made it so).
    pub fn due_again(self, on_change: bool) -> Region {
        Region {
            again: true,
            since: self.since & !2 | (on_change as u16) << 1,
            ..self
        }
    }

    /// Resting, with what a content look found.
    pub fn with_look(self, fingerprint: u32, changed: bool) -> Region {
        Region {
            mark: fingerprint,
            since: self.since & !3 | changed as u16,
            ..self
        }
    }

    /// Resting at `level` from second `seconds` on, not looked at yet.
    pub fn resting(self, level: u8, seconds: u16) -> Region {
        Region {
            state: State::Resting,
            level,
            again: false,
            reprobe: false,
            sight_pending: false,
            mark: 0,
            since: seconds & !3,
            ..self
        }
    }

    /// Resting: seconds it has rested at `seconds` (to within four).
    pub fn rested(&self, seconds: u16) -> u16 {
        (seconds & !3).wrapping_sub(self.since & !3)
    }
}

// A level packs into three bits.
const _: () = assert!(
    crate::core::policy::paying::MAX_RECHECK_LEVEL < 8
        && crate::core::policy::paying::MAX_REST_LEVEL < 8
);

impl Region {
    fn pack(&self) -> Option<[u64; 2]> {
        let start = (self.range.start >> 12) as u64;
        let pages = ((self.range.end - self.range.start) >> 12) as u64;
        if start >> 44 != 0 || pages >= 1 << 12 || pages == 0 {
            return None;
        }
        let state = match self.state {
            State::Probation => 1u64,
            State::Paying => 2,
            State::Resting => 3,
        };
        let meta = self.mark as u64
            | state << 32
            | ((self.level & 0x7) as u64) << 34
            | (self.sight_pending as u64) << 37
            | (self.epoch as u64) << 38
            | (self.reprobe as u64) << 46
            | (self.again as u64) << 47
            | (self.since as u64) << 48;
        Some([start << 12 | pages, meta])
    }

    fn unpack(word: [u64; 2]) -> Region {
        let start = ((word[0] >> 12) as usize) << 12;
        let pages = (word[0] & 0xfff) as usize;
        let meta = word[1];
        Region {
            range: Range {
                start,
                end: start + (pages << 12),
            },
            state: match (meta >> 32) & 3 {
                1 => State::Probation,
                2 => State::Paying,
                _ => State::Resting,
            },
            level: ((meta >> 34) & 0x7) as u8,
            sight_pending: meta >> 37 & 1 != 0,
            epoch: (meta >> 38) as u8,
            reprobe: meta >> 46 & 1 != 0,
            again: meta >> 47 & 1 != 0,
            mark: meta as u32,
            since: (meta >> 48) as u16,
        }
    }
}

fn start_of(word: [u64; 2]) -> usize {
    ((word[0] >> 12) as usize) << 12
}

/// The array: this round's regions in `entries[..written]`, the previous
/// round's not yet passed in the last `previous_left`.
#[repr(C, align(4096))]
pub struct Table {
    entries: [[u64; 2]; CAPACITY],
    /// Of this round's regions whose change is planned, by index, the state
    /// each had before (what it keeps if the change is not made).
    before: [[u64; 2]; CAPACITY],
    written: usize,
    previous_left: usize,
    /// This round ran out of room.
    overflowed: bool,
}

impl Table {
    /// The previous round's region starting at `start`, if there was one;
    /// those below it are dropped (the walk has passed them).
    pub fn take(&mut self, start: usize) -> Option<Region> {
        while self.previous_left > 0 {
            let word = self.entries[CAPACITY - self.previous_left];
            let at = start_of(word);
            if at > start {
                return None;
            }
            self.previous_left -= 1;
            if at == start {
                return Some(Region::unpack(word));
            }
        }
        None
    }

    /// The previous round's regions below `end` the walk will not meet
    /// (their VMA is gone or no longer qualifies), each passed to `gone`.
    pub fn drop_below(&mut self, end: usize, mut gone: impl FnMut(Region)) {
        while self.previous_left > 0 {
            let word = self.entries[CAPACITY - self.previous_left];
            if start_of(word) >= end {
                return;
            }
            self.previous_left -= 1;
            gone(Region::unpack(word));
        }
    }

    /// Records a region of this round; returns where, or `None` if it is
    /// out of order or there is no room (it is then unknown next round).
    pub fn put(&mut self, region: Region) -> Option<usize> {
        let word = region.pack()?;
        if self.overflowed
            || (self.written > 0 && start_of(self.entries[self.written - 1]) >= region.range.start)
        {
            return None;
        }
        // Room: what this round wrote and what the previous one still holds.
        if self.written + self.previous_left >= CAPACITY {
            self.overflowed = true;
            return None;
        }
        self.entries[self.written] = word;
        self.written += 1;
        Some(self.written - 1)
    }

    /// Whether a region put now would find no room.
    pub fn full(&self) -> bool {
        self.overflowed || self.written + self.previous_left >= CAPACITY
    }

    /// This round's region at `index` (from [`Table::put`]).
    pub fn get(&self, index: usize) -> Region {
        Region::unpack(self.entries[index])
    }

    /// Remembers `region`, this round's region at `index` as it was before
    /// the round planned a change of it: [`Table::before`] gives it back.
    pub fn remember_before(&mut self, index: usize, region: Region) {
        if let Some(word) = region.pack() {
            self.before[index] = word;
        }
    }

    /// This round's region at `index` as [`Table::remember_before`] kept it.
    pub fn before(&self, index: usize) -> Region {
        Region::unpack(self.before[index])
    }

    /// Changes this round's region at `index`.
    pub fn set(&mut self, index: usize, region: Region) {
        if let Some(word) = region.pack() {
            self.entries[index] = word;
        }
    }

    /// A round that stops early keeps the previous round's regions it did
    /// not reach, as they were.
    pub fn keep_the_rest(&mut self) {
        while self.previous_left > 0 {
            let word = self.entries[CAPACITY - self.previous_left];
            let in_order = self.written == 0
                || start_of(self.entries[self.written - 1]) < start_of(word);
            self.previous_left -= 1;
            if in_order && self.written + self.previous_left < CAPACITY {
                self.entries[self.written] = word;
                self.written += 1;
            }
        }
    }

    /// This round's regions become the previous round's.
    pub fn finish(&mut self) {
        let n = self.written;
        self.entries.copy_within(..n, CAPACITY - n);
        self.previous_left = n;
        self.written = 0;
        self.overflowed = false;
    }

    /// Every region of the last finished round.
    pub fn for_each(&self, mut f: impl FnMut(Region)) {
        for word in &self.entries[CAPACITY - self.previous_left..] {
            f(Region::unpack(*word));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Box<Table> {
        // SAFETY: all-zero bytes are an empty table (integers only).
        unsafe { Box::new_zeroed().assume_init() }
    }

    fn region(start: usize, state: State) -> Region {
        Region {
            range: Range {
                start,
                end: start + 0x200000,
            },
            state,
            level: 3,
            epoch: 200,
            sight_pending: true,
            reprobe: true,
            again: false,
            mark: 0xfffffffe,
            since: 0xfffe,
        }
    }

    #[test]
    fn a_region_packs_into_two_words() {
        for state in [State::Probation, State::Paying, State::Resting] {
            let r = region(0x7fff_1234_5000, state);
            assert_eq!(Region::unpack(r.pack().unwrap()), r);
        }
        let mut r = region(0x1000, State::Resting);
        r.again = true;
        r.reprobe = false;
        r.level = 7;
        r.sight_pending = false;
        assert_eq!(Region::unpack(r.pack().unwrap()), r);
    }

    #[test]
    fn rounds_carry_regions_over_and_drop_the_ones_not_met() {
        let mut t = table();
        for i in 0..4 {
            t.put(region(i << 21, State::Probation)).unwrap();
        }
        t.finish();
        // Round 2 meets regions 0 and 2, and a new one at 5.
        assert_eq!(t.take(0).map(|r| r.range.start), Some(0));
        t.put(region(0, State::Paying)).unwrap();
        let mut gone = vec![];
        t.drop_below(2 << 21, |r| gone.push(r.range.start));
        assert_eq!(gone, vec![1 << 21]);
        let mut r2 = t.take(2 << 21).unwrap();
        r2.state = State::Resting;
        let at = t.put(r2).unwrap();
        assert_eq!(t.take(5 << 21), None, "3 is passed, 5 is new");
        t.put(region(5 << 21, State::Probation)).unwrap();
        let mut changed = t.get(at);
        changed.again = true;
        t.set(at, changed);
        t.finish();
        let mut seen = vec![];
        t.for_each(|r| seen.push((r.range.start >> 21, r.state, r.again)));
        assert_eq!(
            seen,
            vec![
                (0, State::Paying, false),
                (2, State::Resting, true),
                (5, State::Probation, false)
            ]
        );
    }

    #[test]
    fn a_round_that_stops_early_keeps_what_it_did_not_reach() {
        let mut t = table();
        for i in 0..5 {
            t.put(region(i << 21, State::Resting)).unwrap();
        }
        t.finish();
        t.take(0).unwrap();
        t.put(region(0, State::Probation)).unwrap();
        t.keep_the_rest();
        t.finish();
        let mut n = 0;
        t.for_each(|r| {
            assert_eq!(r.state, if n == 0 { State::Probation } else { State::Resting });
            n += 1;
        });
        assert_eq!(n, 5);
    }

    #[test]
    fn past_the_capacity_regions_are_not_recorded() {
        let mut t = table();
        for i in 0..CAPACITY {
            assert!(t.put(region((i + 1) << 21, State::Paying)).is_some());
        }
        assert_eq!(t.put(region((CAPACITY + 1) << 21, State::Paying)), None);
        assert_eq!(t.put(region(1 << 21, State::Paying)), None, "out of order");
    }
}
