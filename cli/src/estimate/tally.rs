//! Counting for the estimator, in bounded memory: each page read (or
//! mapping of a frame read elsewhere) leaves one 16-byte [`Record`] — a
//! 64-bit hash of its contents, its frame and its source (process and
//! region kind). Once the walk is over the records are sorted by hash, and
//! each run of equal hashes is one content: its distinct frames, within the
//! host and within each process, user and cgroup, give every ideal in one
//! pass (`groups`). No hash map grows with the pages. Knows nothing of
//! /proc.

use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// The hash of a page of zeroes (no other page hashes to an even number).
pub const ZERO_HASH: u64 = 0;
/// A mapping of a frame read through another mapping: its hash is that
/// record's, filled in by [`resolve`].
pub const UNRESOLVED: u64 = 2;

/// One page: 16 bytes. `frame_source` holds the frame number (0: not
/// known, each such page a frame of its own) above the source index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub hash: u64,
    frame_source: u64,
}

impl Record {
    /// Bits of a source index (16M process/region-kind pairs).
    pub const SOURCE_BITS: u32 = 24;
    /// Bits of a frame number: 2^40 frames of 4 KiB are 4 PiB, the most
    /// any 52-bit physical address reaches.
    pub const PFN_BITS: u32 = 64 - Self::SOURCE_BITS;

    pub fn new(hash: u64, pfn: u64, source: u32) -> Record {
        debug_assert!(pfn < 1 << Self::PFN_BITS && source < 1 << Self::SOURCE_BITS);
        Record {
            hash,
            frame_source: pfn << Self::SOURCE_BITS | source as u64,
        }
    }

    pub fn pfn(&self) -> u64 {
        self.frame_source >> Self::SOURCE_BITS
    }

    pub fn source(&self) -> u32 {
        (self.frame_source & ((1 << Self::SOURCE_BITS) - 1)) as u32
    }
}

/// A page's hash: 0 for a page of zeroes, else the page's xxh3-64 with the
/// lowest bit set (odd). 63 bits: among n distinct contents about
/// n²/2^64 pairs collide (see BENCHMARKS.md, measured).
pub fn content_hash(page: &[u8]) -> u64 {
    let zero = page
        .chunks_exact(8)
        .all(|w| u64::from_ne_bytes(w.try_into().unwrap()) == 0);
    if zero {
        ZERO_HASH
    } else {
        xxhash_rust::xxh3::xxh3_64(page) | 1
    }
}

/// What a walk counted of one process, besides its records.
#[derive(Default, Clone, Copy, Debug)]
pub struct Counted {
    /// Present pages (the zero page's mappings included).
    pub pages: u64,
    pub zero_page_mappings: u64,
    /// Mappings of KSM frames (`/proc/kpageflags`).
    pub already_merged: u64,
    /// Mappings of a frame read through another mapping.
    pub repeats: u64,
    /// The repeats that are KSM frames: what KSM already saves.
    pub already_saved: u64,
    /// Present but unreadable.
    pub unreadable: u64,
}

/// [`Counted`], added to by many threads.
#[derive(Default)]
pub struct ProcCounts {
    fields: [AtomicU64; 6],
    exited: AtomicBool,
}

impl ProcCounts {
    pub fn add(&self, c: &Counted) {
        let values = [
            c.pages,
            c.zero_page_mappings,
            c.already_merged,
            c.repeats,
            c.already_saved,
            c.unreadable,
        ];
        for (f, v) in self.fields.iter().zip(values) {
            if v > 0 {
                f.fetch_add(v, Ordering::Relaxed);
            }
        }
    }

    pub fn has_exited(&self) -> bool {
        self.exited.load(Ordering::Relaxed)
    }

    pub fn set_exited(&self) {
        self.exited.store(true, Ordering::Relaxed);
    }

    pub fn get(&self) -> Counted {
        let v = |i: usize| self.fields[i].load(Ordering::Relaxed);
        Counted {
            pages: v(0),
            zero_page_mappings: v(1),
            already_merged: v(2),
            repeats: v(3),
            already_saved: v(4),
            unreadable: v(5),
        }
    }
}

/// Where the walk's threads leave their records and counts.
pub struct Sink {
    records: Mutex<Vec<Record>>,
    pub counts: Vec<ProcCounts>,
    frame_numbers: AtomicBool,
}

impl Sink {
    /// `expected` pages: reserved up front (never touched, so never
    /// resident, until used), so the array rarely moves while it grows.
    pub fn new(processes: usize, expected: usize) -> Sink {
        Sink {
            records: Mutex::new(Vec::with_capacity(expected)),
            counts: (0..processes).map(|_| ProcCounts::default()).collect(),
            frame_numbers: AtomicBool::new(false),
        }
    }

    /// Moves a thread's records into the array.
    pub fn push(&self, local: &mut Vec<Record>) {
        if local.is_empty() {
            return;
        }
        let mut all = self.records.lock().unwrap_or_else(|e| e.into_inner());
        all.extend_from_slice(local);
        local.clear();
    }

    pub fn saw_frame_numbers(&self) {
        self.frame_numbers.store(true, Ordering::Relaxed);
    }

    pub fn frame_numbers_seen(&self) -> bool {
        self.frame_numbers.load(Ordering::Relaxed)
    }

    pub fn take_records(&self) -> Vec<Record> {
        std::mem::take(&mut *self.records.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Gives each mapping of a frame read elsewhere the hash of that reading:
/// the records of frames seen more than once (`again`) are moved to the
/// end and sorted by frame there, first the one that was read. In place.
pub fn resolve(records: &mut [Record], again: impl Fn(u64) -> bool + Sync) {
    let shared = |r: &Record| r.pfn() != 0 && again(r.pfn());
    // Partition: records of frames seen once stay in front.
    let mut front = 0;
    for i in 0..records.len() {
        if !shared(&records[i]) {
            records.swap(front, i);
            front += 1;
        }
    }
    let tail = &mut records[front..];
    tail.par_sort_unstable_by_key(|r| (r.pfn(), r.hash == UNRESOLVED));
    for frame in tail.chunk_by_mut(|a, b| a.pfn() == b.pfn()) {
        let hash = frame[0].hash;
        if hash != UNRESOLVED {
            for r in frame.iter_mut() {
                r.hash = hash;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_keeps_its_frame_and_source() {
        let r = Record::new(7, (1 << 40) - 1, (1 << 24) - 1);
        assert_eq!(
            (r.hash, r.pfn(), r.source()),
            (7, (1 << 40) - 1, (1 << 24) - 1)
        );
        assert_eq!(std::mem::size_of::<Record>(), 16);
    }

    #[test]
    fn zero_pages_hash_to_zero_and_no_other_page_does() {
        let mut page = vec![0u8; 4096];
        assert_eq!(content_hash(&page), ZERO_HASH);
        page[4095] = 1;
        let h = content_hash(&page);
        assert!(h & 1 == 1 && h != UNRESOLVED);
    }

    /// The page hash collides at the rate of an ideal hash: 2^16 distinct
    /// pages (each differing from the next in one or two bytes, the hard
    /// case), their hashes cut to 24 bits, collide in about n²/2^25 = 128
    /// pairs, as random numbers would; so at the 63 bits kept, about n²/2^64
    /// (BENCHMARKS.md states the figure).
    #[test]
    fn the_page_hash_collides_as_often_as_random_numbers_do() {
        let n = 1usize << 16;
        let mut page = vec![0x5au8; 4096];
        let mut cut: Vec<u32> = (0..n)
            .map(|i| {
                page[..4].copy_from_slice(&(i as u32).to_le_bytes());
                ((content_hash(&page) >> 1) & 0xff_ffff) as u32
            })
            .collect();
        cut.sort_unstable();
        let pairs: u64 = cut
            .chunk_by(|a, b| a == b)
            .map(|run| (run.len() * (run.len() - 1) / 2) as u64)
            .sum();
        let expected = (n as f64).powi(2) / 2f64.powi(25);
        eprintln!("{n} pages, 24-bit cut: {pairs} colliding pairs, {expected:.0} expected");
        // Poisson(128): below 80 or above 180 is beyond 4 standard deviations.
        assert!(
            (80..=180).contains(&pairs),
            "{pairs} pairs, {expected} expected"
        );
    }

    #[test]
    fn mappings_of_a_frame_read_elsewhere_take_its_hash() {
        let mut r = vec![
            Record::new(UNRESOLVED, 9, 1),
            Record::new(11, 3, 0),
            Record::new(13, 9, 0),
            Record::new(UNRESOLVED, 9, 2),
            Record::new(15, 0, 0),
        ];
        resolve(&mut r, |pfn| pfn == 9);
        let mut got: Vec<(u64, u64, u32)> =
            r.iter().map(|r| (r.hash, r.pfn(), r.source())).collect();
        got.sort();
        assert_eq!(
            got,
            [(11, 3, 0), (13, 9, 0), (13, 9, 1), (13, 9, 2), (15, 0, 0)]
        );
    }
}
