//! What pays for ksmd's attention, and when to look again: pure rules over
//! page counts and ksmd's full-scan numbers, which `core::paying` applies.
//!
//! * **Regions**: the private anonymous memory of a VMA is cut at
//!   [`CHUNK_BYTES`] boundaries ([`chunk_pieces`]); each piece is judged on
//!   its own, since one VMA often holds data of several kinds (adjacent
//!   mappings coalesce).
//! * **The clock** is ksmd's `full_scans`: a decision waits for
//!   [`PROBATION_SCANS`] full scans (ksmd needs two visits to merge a
//!   page), which means the same at every pace. Re-probes and re-checks
//!   fall on **ticks** of [`TICK_SCANS`] full scans, numbered from boot, so
//!   that every process on the host probes on the same ticks (a duplicate
//!   is found only while both copies are given to ksmd).
//! * **Paying** ([`pays`]): at least one present page in
//!   [`BREAK_EVEN`] is mapped more than once — the kernel's own break-even
//!   (an rmap item of 64 bytes per scanned page against 4 KiB saved per
//!   merged page).
//! * **Resting** ([`rest_due`]): a region taken back out is probed again on
//!   one tick in `SLICES << level`: the slice of its VMA it lies in picks
//!   which, so a large resting VMA is probed a contiguous part at a time
//!   (at most two VMA splits per probe); each probe that finds nothing
//!   raises its level, up to [`MAX_REST_LEVEL`].
//! * **Looking again on change** ([`look`]): a resting region's content
//!   is sampled ([`LOOK_SAMPLES`] present pages, at least every
//!   [`LOOK_SECONDS`]); one that changed since the last look and then held
//!   still is due at once — data that became duplicate after it was taken
//!   out (a cache filled again, a reload) — while one that changes at every
//!   look (volatile data) never is by this rule.
//! * **Budget** ([`split_budget`]): the VMAs the decisions add to the
//!   process stay within 5 % (+2) of its count.

use super::Range;

/// Regions are pieces of VMAs between multiples of this.
pub const CHUNK_BYTES: usize = 2 << 20;
/// Full scans a region is given before it is judged (registered before
/// the next scan began or during it: at least two whole visits).
pub const PROBATION_SCANS: u64 = 3;
/// Seconds a region is given at the least before it is judged, however
/// fast ksmd scans: the other copies of its data (a pool's other
/// processes, a program still filling the memory it mapped) need time to
/// arrive, and a fast pace would judge before they did.
pub const PROBATION_SECONDS: u16 = 10;
/// Full scans a region that does not pay may stay on probation beyond
/// [`PROBATION_SCANS`] while ksmd is still merging on the host
/// ([`take_out_now`]).
pub const MOST_EXTRA_SCANS: u64 = 2;
/// Full scans per tick: re-probes and re-checks happen on ticks.
pub const TICK_SCANS: u64 = 8;
/// A resting VMA is probed one slice at a time.
pub const SLICES: u64 = 8;
/// A resting region is probed again on its tick only once it has rested
/// this long (doubled at each level): however fast ksmd scans, a re-probe
/// (at least [`PROBATION_SECONDS`] given to ksmd) stays rarer than the
/// rest around it.
pub const REST_SECONDS: u16 = 30;
/// A resting region is probed at least once every `SLICES << MAX_REST_LEVEL`
/// ticks.
pub const MAX_REST_LEVEL: u8 = 3;
/// A paying region is re-checked at least once every
/// `1 << MAX_RECHECK_LEVEL` ticks.
pub const MAX_RECHECK_LEVEL: u8 = 4;
/// One page mapped more than once in this many present pages pays for
/// the rmap items of them all (64-byte items against 4 KiB pages).
pub const BREAK_EVEN: u64 = 64;
/// A re-probed region found paying makes the resting regions within this
/// distance due at once: data that became duplicate rarely does so one
/// region at a time.
pub const PROMOTE_BYTES: usize = 128 << 20;

/// Present pages of a resting region sampled by a content look (spread
/// evenly: [`look_samples`]).
pub const LOOK_SAMPLES: usize = 4;
/// Seconds between two content looks at the least: a change must hold
/// still this long to count as settled, and rounds that are due only for
/// looks wait this long (a round over 4,000 VMAs costs tens of ms).
pub const LOOK_SECONDS: u16 = 8;

/// Whether `shared` pages mapped more than once among `present` pay for
/// ksmd's scanning of all of them. Pages shared since a `fork` count as
/// shared: a region holding them is not taken back out, because merged
/// and fork-shared pages cannot be told apart without privilege, and
/// taking a merged page out gives every process its own copy again.
pub fn pays(present: u32, shared: u32) -> bool {
    present > 0 && shared as u64 * BREAK_EVEN >= present as u64
}

/// Whether a region on probation for `scans` full scans that does not pay
/// is taken out now. While ksmd merged more on the host during its last
/// full scan (`host_merging`), copies are still arriving: in a pool, the
/// last copy of some data often merges a scan after the others (seen on
/// 6.18: three workers' copies merge in one scan, the fourth's in the
/// next), so the verdict waits up to [`MOST_EXTRA_SCANS`] more scans.
pub fn take_out_now(scans: u64, host_merging: bool) -> bool {
    scans >= PROBATION_SCANS
        && (!host_merging || scans >= PROBATION_SCANS + MOST_EXTRA_SCANS)
}

/// The tick a full-scan count falls in.
pub fn tick_of(full_scans: u64) -> u64 {
    full_scans / TICK_SCANS
}

/// Whether a resting region of `level` in `slice` is due on a tick in
/// `(after, upto]`: the ticks `t` with `t % 2^level == 0` and
/// `(t >> level) % SLICES == slice`.
pub fn rest_due(level: u8, slice: u64, after: u64, upto: u64) -> bool {
    let level = level.min(MAX_REST_LEVEL) as u32;
    let period = SLICES << level;
    let offset = (slice % SLICES) << level;
    first_at_or_after(after.saturating_add(1), period, offset) <= upto
}

/// Whether a resting region of `level` that rested `seconds` may be
/// probed on its tick.
pub fn rested_enough(level: u8, seconds: u16) -> bool {
    seconds as u32 >= (REST_SECONDS as u32) << level.min(MAX_REST_LEVEL)
}

/// Whether a paying region of `level` is re-checked on a tick in
/// `(after, upto]`: the ticks that are multiples of `2^level`.
pub fn recheck_due(level: u8, after: u64, upto: u64) -> bool {
    let period = 1u64 << level.min(MAX_RECHECK_LEVEL);
    first_at_or_after(after.saturating_add(1), period, 0) <= upto
}

/// The first `t >= from` with `t % period == offset`.
fn first_at_or_after(from: u64, period: u64, offset: u64) -> u64 {
    let into = from % period;
    let ahead = (offset + period - into) % period;
    from.saturating_add(ahead)
}

/// The slice (of [`SLICES`]) that the `index`th of a VMA's `count`
/// regions lies in: contiguous runs of regions.
pub fn slice_of(index: u64, count: u64) -> u64 {
    if count == 0 {
        return 0;
    }
    (index.min(count - 1) * SLICES) / count
}

/// The pieces of `vma` between multiples of [`CHUNK_BYTES`], in order.
pub fn chunk_pieces(vma: Range) -> impl Iterator<Item = Range> {
    let mut at = vma.start;
    core::iter::from_fn(move || {
        if at >= vma.end {
            return None;
        }
        let next = (at / CHUNK_BYTES + 1)
            .saturating_mul(CHUNK_BYTES)
            .min(vma.end);
        let piece = Range {
            start: at,
            end: next,
        };
        at = next;
        Some(piece)
    })
}

/// Which region of its VMA (0-based, by chunk) `piece` is, and how many
/// regions the VMA has.
pub fn index_in(piece: Range, vma: Range) -> (u64, u64) {
    let first = vma.start / CHUNK_BYTES;
    let last = (vma.end - 1) / CHUNK_BYTES;
    (
        (piece.start / CHUNK_BYTES - first) as u64,
        (last - first + 1) as u64,
    )
}

/// VMAs a change of flags over `run` adds when `vma` holds it: one at
/// each end that is not the VMA's own.
pub fn splits(run: Range, vma: Range) -> u64 {
    (run.start > vma.start) as u64 + (run.end < vma.end) as u64
}

/// The most VMAs the decisions may add to a process that has `vmas`
/// (theirs included): 2 + 5 % of the rest.
pub fn split_budget(vmas: u64, ours: u64) -> u64 {
    2 + vmas.saturating_sub(ours) / 20
}

/// The pages (indices in a region of `pages` pages) a content look
/// samples: the middles of [`LOOK_SAMPLES`] equal parts.
pub fn look_samples(pages: usize) -> impl Iterator<Item = usize> {
    let parts = LOOK_SAMPLES.min(pages);
    (0..parts).map(move |i| (2 * i + 1) * pages / (2 * parts))
}

/// A region's sampled content folded to 32 bits; never 0 (0 stands for
/// "not looked at yet").
#[derive(Clone, Copy, Debug)]
pub struct Fingerprint(u64);

impl Fingerprint {
    pub fn new() -> Fingerprint {
        Fingerprint(0x243f_6a88_85a3_08d3)
    }

    fn mix(&mut self, word: u64) {
        self.0 = (self.0 ^ word)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }

    /// A sampled page's bytes.
    pub fn add_page(&mut self, bytes: &[u8]) {
        for word in bytes.chunks_exact(8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            self.mix(u64::from_ne_bytes(w));
        }
        self.mix(bytes.len() as u64);
    }

    /// A sampled page that is not present (never touched, released,
    /// swapped out): its absence is part of the content.
    pub fn add_absent(&mut self) {
        self.mix(u64::MAX);
    }

    pub fn finish(self) -> u32 {
        let folded = (self.0 ^ (self.0 >> 32)) as u32;
        folded.max(1)
    }
}

impl Default for Fingerprint {
    fn default() -> Fingerprint {
        Fingerprint::new()
    }
}

/// What a content look at a resting region concludes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Look {
    /// The fingerprint to keep for the next look.
    pub fingerprint: u32,
    /// The content changed at this look (it must hold still at the next).
    pub changed: bool,
    /// Changed at the look before, the same now: probe it at once.
    pub due: bool,
}

/// The look that found `now`, after the last kept `previous` (0: none)
/// which had `changed` from the one before it.
pub fn look(previous: u32, changed: bool, now: u32) -> Look {
    if previous == 0 {
        return Look { fingerprint: now, changed: false, due: false };
    }
    if now != previous {
        return Look { fingerprint: now, changed: true, due: false };
    }
    Look { fingerprint: now, changed: false, due: changed }
}

/// A page is a sighting when the low `SELECT_BITS + level` bits of its
/// hash are zero: one page in 8 at level 0. The choice depends on the
/// content alone, so two processes holding the same page both choose it,
/// wherever it lies; a process with more pages than its table holds
/// chooses fewer (a higher level), a subset of what the others choose.
pub const SELECT_BITS: u32 = 3;
/// Levels at the most (one page in 2^(3+7) = 1,024).
pub const MOST_SELECT_LEVEL: u8 = 7;
/// Seconds a published sighting file is believed after it was written
/// (a process that ended without removing its own).
pub const SIGHTINGS_MAX_AGE_S: i64 = 3600;
/// A living process writes its file again at least this often.
pub const SIGHTINGS_REFRESH_S: i64 = 600;

/// Whether a page with this hash is a sighting at `level`.
pub fn selected(hash: u64, level: u8) -> bool {
    let bits = SELECT_BITS + level.min(MOST_SELECT_LEVEL) as u32;
    hash & ((1u64 << bits) - 1) == 0
}

/// A page's content hashed to 64 bits, never 0 (0 is an empty slot):
/// four independent lanes over its words, then folded and mixed.
pub fn page_hash(bytes: &[u8]) -> u64 {
    const K: [u64; 4] = [
        0x9e37_79b9_7f4a_7c15,
        0xc2b2_ae3d_27d4_eb4f,
        0x1656_67b1_9e37_79f9,
        0x85eb_ca77_c2b2_ae63,
    ];
    let mut lanes = K;
    for block in bytes.chunks_exact(32) {
        for (i, lane) in lanes.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&block[i * 8..i * 8 + 8]);
            *lane = (*lane ^ u64::from_ne_bytes(w))
                .wrapping_mul(K[i] | 1)
                .rotate_left(31);
        }
    }
    let mut h = lanes[0]
        ^ lanes[1].rotate_left(17)
        ^ lanes[2].rotate_left(34)
        ^ lanes[3].rotate_left(51)
        ^ bytes.len() as u64;
    // The 64-bit finalizer of MurmurHash3: every bit of the lanes reaches
    // the low bits that choose sightings.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h.max(1)
}

/// What a piece's content showed when it was first seen given to ksmd.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sight {
    /// Pages present (read), of `pages` in the piece.
    pub present: u32,
    pub pages: u32,
    /// Its sightings that another process of the user, or another piece
    /// of this process, or another page of the piece, also holds.
    pub hits: u32,
    /// Pages of zeros (which merge with every other page of zeros).
    pub zeros: u32,
    /// Other pages that repeat a page of the piece (counted exactly).
    pub repeats: u32,
    /// Its pages that are sightings (chosen by their hash).
    pub sampled: u32,
}

/// Whether a piece is judged on sight: at least half of it present (a
/// piece being filled is looked at again).
pub fn judged_on_sight(s: Sight) -> bool {
    s.present > 0 && s.present * 2 >= s.pages
}

/// Whether a piece judged on sight had anything to judge by: a sighting,
/// or pages of zeros or repeated (a small piece may have none: its
/// probation decides).
pub fn has_evidence(s: Sight) -> bool {
    s.sampled > 0 || s.zeros > 0 || s.repeats > 0
}

/// Whether a piece judged on sight is given to ksmd for a probation: one
/// of its sightings is held elsewhere (a page of it likely has a copy),
/// or its pages repeat one another (zeros included) at the break-even. Otherwise it is taken
/// out at once, without costing ksmd a probation: it rests, and is given
/// back when a sighting of it turns up elsewhere, on its ticks, or when
/// its content changes and holds still.
pub fn admitted(s: Sight) -> bool {
    s.hits > 0 || (s.zeros as u64 + s.repeats as u64) * BREAK_EVEN >= s.present as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sightings_are_chosen_by_content_and_nest_by_level() {
        let pages: Vec<[u8; 4096]> = (0..4096u32)
            .map(|i| {
                let mut p = [0u8; 4096];
                p[..4].copy_from_slice(&i.to_ne_bytes());
                p[4000] = 7;
                p
            })
            .collect();
        let hashes: Vec<u64> = pages.iter().map(|p| page_hash(p)).collect();
        let chosen = hashes.iter().filter(|&&h| selected(h, 0)).count();
        assert!((380..=650).contains(&chosen), "about 1 in 8: {chosen}");
        for &h in &hashes {
            assert_ne!(h, 0);
            if selected(h, 2) {
                assert!(selected(h, 1) && selected(h, 0), "a higher level chooses a subset");
            }
        }
        assert_eq!(page_hash(&pages[5]), page_hash(&pages[5].clone()), "same content, same hash");
        let mut all: Vec<u64> = hashes.clone();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), hashes.len(), "pages differing in one word differ");
    }

    #[test]
    fn a_piece_is_admitted_on_a_sighting_elsewhere_or_zeros_at_break_even() {
        let s = |present, hits, zeros| Sight { present, pages: 512, hits, zeros, repeats: 0, sampled: 1 };
        assert!(!judged_on_sight(s(255, 0, 0)), "being filled: a probation decides");
        assert!(judged_on_sight(s(256, 0, 0)));
        assert!(!admitted(s(512, 0, 0)));
        assert!(admitted(s(512, 1, 0)));
        assert!(admitted(s(512, 0, 8)));
        assert!(!admitted(s(512, 0, 7)));
        assert!(admitted(Sight { repeats: 4, ..s(512, 0, 4) }), "zeros and repeats add up");
        assert!(!admitted(Sight { repeats: 3, ..s(512, 0, 4) }));
        assert!(!has_evidence(Sight { sampled: 0, ..s(16, 0, 0) }), "no sighting: a probation");
    }

    #[test]
    fn the_break_even_is_one_shared_page_in_sixty_four() {
        assert!(!pays(0, 0), "nothing present: nothing to decide");
        assert!(!pays(512, 0));
        assert!(!pays(512, 7));
        assert!(pays(512, 8));
        assert!(pays(64, 1));
        assert!(!pays(65, 1));
        assert!(pays(3, 3));
    }

    #[test]
    fn a_resting_region_is_due_once_per_period_on_its_slice() {
        // Level 0: the tick whose number is its slice modulo 8.
        let due: Vec<u64> = (0..32).filter(|&t| rest_due(0, 3, t, t + 1)).map(|t| t + 1).collect();
        assert_eq!(due, vec![3, 11, 19, 27]);
        // Level 2: every 32 ticks, at slice << 2.
        let due: Vec<u64> = (0..100).filter(|&t| rest_due(2, 3, t, t + 1)).map(|t| t + 1).collect();
        assert_eq!(due, vec![12, 44, 76]);
        // A long look back covers a due tick.
        assert!(rest_due(0, 3, 0, 8));
        assert!(!rest_due(0, 3, 3, 10));
        assert!(rest_due(0, 3, 3, 11));
        // Capped level.
        assert_eq!(rest_due(9, 0, 0, 64), rest_due(MAX_REST_LEVEL, 0, 0, 64));
    }

    #[test]
    fn every_slice_is_probed_once_per_level_period() {
        for level in 0..=MAX_REST_LEVEL {
            let period = SLICES << level;
            for slice in 0..SLICES {
                let n = (0..period).filter(|&t| rest_due(level, slice, t, t + 1)).count();
                assert_eq!(n, 1, "level {level} slice {slice}");
            }
        }
    }

    #[test]
    fn paying_regions_are_rechecked_on_multiples_of_their_period() {
        let due: Vec<u64> = (0..20).filter(|&t| recheck_due(2, t, t + 1)).map(|t| t + 1).collect();
        assert_eq!(due, vec![4, 8, 12, 16, 20]);
        assert!(recheck_due(0, 5, 6));
        assert!(!recheck_due(3, 0, 7));
        assert!(recheck_due(3, 0, 8));
    }

    #[test]
    fn slices_are_contiguous_runs() {
        let slices: Vec<u64> = (0..16).map(|i| slice_of(i, 16)).collect();
        assert_eq!(slices, vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7]);
        assert_eq!(slice_of(0, 1), 0);
        assert_eq!(slice_of(2, 3), 5);
        assert_eq!(slice_of(5, 0), 0);
    }

    #[test]
    fn vmas_are_cut_at_chunk_boundaries() {
        let c = CHUNK_BYTES;
        let vma = Range {
            start: c - 0x1000,
            end: 3 * c + 0x2000,
        };
        let pieces: Vec<(usize, usize)> = chunk_pieces(vma).map(|r| (r.start, r.end)).collect();
        assert_eq!(
            pieces,
            vec![(c - 0x1000, c), (c, 2 * c), (2 * c, 3 * c), (3 * c, 3 * c + 0x2000)]
        );
        assert_eq!(index_in(Range { start: 2 * c, end: 3 * c }, vma), (2, 4));
        assert_eq!(index_in(Range { start: c - 0x1000, end: c }, vma), (0, 4));
    }

    #[test]
    fn splits_count_the_ends_inside_the_vma() {
        let vma = Range { start: 0, end: 100 << 12 };
        assert_eq!(splits(vma, vma), 0);
        assert_eq!(splits(Range { start: 0, end: 10 << 12 }, vma), 1);
        assert_eq!(splits(Range { start: 10 << 12, end: 20 << 12 }, vma), 2);
        assert_eq!(split_budget(30, 0), 3);
        assert_eq!(split_budget(30, 3), 3);
        assert_eq!(split_budget(400, 0), 22);
    }

    #[test]
    fn a_change_that_holds_still_makes_a_region_due_and_a_moving_one_never() {
        let first = look(0, false, 7);
        assert_eq!(first, Look { fingerprint: 7, changed: false, due: false }, "a baseline");
        let still = look(7, false, 7);
        assert!(!still.due, "unchanged since taken out");
        let changed = look(7, false, 9);
        assert_eq!(changed, Look { fingerprint: 9, changed: true, due: false });
        let settled = look(changed.fingerprint, changed.changed, 9);
        assert!(settled.due, "changed, then still");
        // Volatile: different at every look, never due.
        let mut l = look(0, false, 1);
        for now in 2..50 {
            l = look(l.fingerprint, l.changed, now);
            assert!(!l.due);
        }
    }

    #[test]
    fn looks_sample_spread_pages_and_fingerprints_tell_contents_apart() {
        let samples: Vec<usize> = look_samples(512).collect();
        assert_eq!(samples, vec![64, 192, 320, 448]);
        assert_eq!(look_samples(2).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(look_samples(0).count(), 0);
        let of = |pages: &[&[u8]]| {
            let mut f = Fingerprint::new();
            for p in pages {
                if p.is_empty() {
                    f.add_absent();
                } else {
                    f.add_page(p);
                }
            }
            f.finish()
        };
        let a = [b'a'; 4096];
        let mut b = a;
        b[4000] = b'b';
        assert_ne!(of(&[&a, &a]), of(&[&a, &b]), "one word differs");
        assert_ne!(of(&[&a, &[]]), of(&[&[], &a]), "which page is absent");
        assert_eq!(of(&[&a, &b]), of(&[&a, &b]));
        assert_ne!(of(&[]), 0);
        assert_ne!(of(&[&[0u8; 4096]]), 0);
    }

    #[test]
    fn a_region_that_does_not_pay_waits_while_the_host_still_merges() {
        assert!(!take_out_now(PROBATION_SCANS - 1, false));
        assert!(take_out_now(PROBATION_SCANS, false));
        assert!(!take_out_now(PROBATION_SCANS, true), "copies still arriving");
        assert!(!take_out_now(PROBATION_SCANS + MOST_EXTRA_SCANS - 1, true));
        assert!(take_out_now(PROBATION_SCANS + MOST_EXTRA_SCANS, true), "bounded");
    }

    #[test]
    fn a_resting_region_rests_longer_at_each_level() {
        assert!(!rested_enough(0, REST_SECONDS - 1));
        assert!(rested_enough(0, REST_SECONDS));
        assert!(!rested_enough(2, REST_SECONDS * 3));
        assert!(rested_enough(2, REST_SECONDS * 4));
        assert_eq!(rested_enough(9, 240), rested_enough(MAX_REST_LEVEL, 240));
    }
}
