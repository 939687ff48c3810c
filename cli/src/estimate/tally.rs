//! Counting for the estimator: hashes page contents (in parallel batches)
//! and tallies frames, contents and duplicates, for the whole set and for
//! each process alone. Knows nothing of /proc files but `/proc/kpageflags`
//! (the KSM and zero-page bits of a frame).

use super::{Estimate, ProcEstimate, RegionSavings};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;

const KPF_KSM: u64 = 1 << 21;
const KPF_ZERO_PAGE: u64 = 1 << 24;
/// Pages hashed per parallel batch (32 MiB).
pub const BATCH: usize = 8192;

/// A present page of the batch: its frame (0 where hidden) and region.
pub struct Page {
    pub pfn: u64,
    pub region: u32,
}

/// One process's own counts: its frames and contents, as if it were merged alone.
pub struct ProcessTally {
    est: ProcEstimate,
    frames: HashSet<u64>,
    contents: HashMap<u128, u32>,
}

/// The counts of the whole set of processes.
pub struct Tally {
    ps: u64,
    kpageflags: Option<File>,
    pfn_seen: bool,
    frames: HashSet<u64>,
    contents: HashMap<u128, u32>,
    by_region: HashMap<String, u64>,
    est: Estimate,
}

impl Tally {
    pub fn new(ps: u64) -> Tally {
        let kpageflags = File::open("/proc/kpageflags").ok();
        let est = Estimate {
            kpageflags_available: kpageflags.is_some(),
            ..Default::default()
        };
        Tally {
            ps,
            kpageflags,
            pfn_seen: false,
            frames: HashSet::new(),
            contents: HashMap::new(),
            by_region: HashMap::new(),
            est,
        }
    }

    /// Starts counting one process.
    pub fn process(&self, pid: i32, comm: String, regions: usize) -> ProcessTally {
        ProcessTally {
            est: ProcEstimate {
                pid,
                comm,
                regions,
                ..Default::default()
            },
            frames: HashSet::new(),
            contents: HashMap::new(),
        }
    }

    /// Ends counting one process (`unreadable`: pages present but not read).
    pub fn end_process(&mut self, one: ProcessTally, unreadable: u64) {
        let mut pe = one.est;
        pe.unreadable_pages = unreadable;
        pe.ideal_savings_bytes = pe.ideal_savings_pages * self.ps;
        self.est.bytes_scanned += pe.pages_scanned * self.ps;
        self.est.within_process_savings_pages += pe.ideal_savings_pages;
        self.est.processes.push(pe);
    }

    fn flags(&self, pfn: u64) -> Option<u64> {
        let f = self.kpageflags.as_ref()?;
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, pfn * 8).ok()?;
        Some(u64::from_le_bytes(b))
    }

    /// Hashes a batch in parallel, then counts it.
    pub fn flush(
        &mut self,
        buf: &mut Vec<u8>,
        pages: &mut Vec<Page>,
        labels: &[String],
        one: &mut ProcessTally,
    ) {
        let ProcessTally {
            est: pe,
            frames: pframes,
            contents: pcontents,
        } = one;
        let ps = self.ps as usize;
        let hashed: Vec<(u128, bool)> = buf
            .par_chunks(ps)
            .map(|p| {
                let zero = p.iter().all(|&b| b == 0);
                (
                    if zero {
                        0
                    } else {
                        xxhash_rust::xxh3::xxh3_128(p) | 1
                    },
                    zero,
                )
            })
            .collect();
        for (page, (hash, zero)) in pages.iter().zip(hashed) {
            self.est.pages_scanned += 1;
            pe.pages_scanned += 1;
            let flags = if page.pfn != 0 {
                self.pfn_seen = true;
                self.flags(page.pfn)
            } else {
                None
            };
            if let Some(fl) = flags {
                if fl & KPF_KSM != 0 {
                    *self.est.already_merged_pages.get_or_insert(0) += 1;
                    pe.already_merged_pages += 1;
                }
                if fl & KPF_ZERO_PAGE != 0 {
                    self.est.zero_page_mappings += 1;
                    continue;
                }
            }
            // A frame seen before (fork, KSM) is no saving.
            let (new_global, new_local) = if page.pfn != 0 {
                (self.frames.insert(page.pfn), pframes.insert(page.pfn))
            } else {
                (true, true)
            };
            if new_local {
                pe.distinct_frames += 1;
                if zero {
                    pe.zero_pages += 1;
                }
                let c = pcontents.entry(hash).or_insert(0);
                if *c > 0 {
                    pe.ideal_savings_pages += 1;
                }
                *c += 1;
            }
            if !new_global {
                self.est.shared_frame_mappings += 1;
                if flags.is_some_and(|fl| fl & KPF_KSM != 0) {
                    self.est.already_saved_pages += 1;
                }
                continue;
            }
            self.est.distinct_frames += 1;
            if zero {
                self.est.zero_pages += 1;
            }
            let c = self.contents.entry(hash).or_insert(0);
            if *c > 0 {
                self.est.ideal_savings_pages += 1;
                *self
                    .by_region
                    .entry(labels[page.region as usize].clone())
                    .or_insert(0) += 1;
            }
            *c += 1;
        }
        buf.clear();
        pages.clear();
    }

    /// The totals of the set, once every process is counted.
    pub fn finish(self, pids: &[i32], t0: Instant) -> Estimate {
        let ps = self.ps;
        let mut e = self.est;
        e.pids = pids.to_vec();
        e.page_size = ps;
        e.pfn_available = self.pfn_seen;
        e.ideal_savings_bytes = e.ideal_savings_pages * ps;
        e.ideal_savings_percent = if e.pages_scanned > 0 {
            e.ideal_savings_pages as f64 * 100.0 / e.pages_scanned as f64
        } else {
            0.0
        };
        e.already_saved_bytes = e.already_saved_pages * ps;
        let whole_ideal = e.already_saved_pages + e.ideal_savings_pages;
        e.merged_percent_of_ideal = (e.kpageflags_available && whole_ideal > 0)
            .then(|| e.already_saved_pages as f64 * 100.0 / whole_ideal as f64);
        // The empty pages: with use_zero_pages every one of them goes, not all but one.
        e.ideal_savings_pages_use_zero_pages = e.ideal_savings_pages + (e.zero_pages > 0) as u64;
        e.ideal_savings_bytes_use_zero_pages = e.ideal_savings_pages_use_zero_pages * ps;
        let mut top: Vec<RegionSavings> = self
            .by_region
            .into_iter()
            .map(|(region, n)| RegionSavings {
                region,
                duplicate_pages: n,
                bytes: n * ps,
            })
            .collect();
        top.sort_by(|a, b| {
            b.duplicate_pages
                .cmp(&a.duplicate_pages)
                .then(a.region.cmp(&b.region))
        });
        top.truncate(10);
        e.top_regions = top;
        if !e.pfn_available {
            e.notes.push(
                "page frame numbers unavailable (not root): pages shared by fork count as duplicates"
                    .into(),
            );
        }
        if !e.kpageflags_available {
            e.already_merged_pages = None;
            e.notes
                .push("/proc/kpageflags unreadable: already-merged pages not counted".into());
        } else if e.already_merged_pages.is_none() {
            e.already_merged_pages = Some(0);
        }
        e.elapsed_seconds = t0.elapsed().as_secs_f64();
        e.mb_per_second = if e.elapsed_seconds > 0.0 {
            e.bytes_scanned as f64 / 1e6 / e.elapsed_seconds
        } else {
            0.0
        };
        e
    }
}
