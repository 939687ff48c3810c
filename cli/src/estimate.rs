//! `ksmauto estimate`: what KSM could save in running processes, from their
//! page contents (read-only: only present pages are read, nothing faults in).

use crate::util::*;
use anyhow::Result;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;

const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_PFN: u64 = (1 << 55) - 1;
const KPF_KSM: u64 = 1 << 21;
const KPF_ZERO_PAGE: u64 = 1 << 24;
/// Pages per pagemap read (2 MiB of address space with 4 KiB pages).
const WINDOW: u64 = 512;
/// Pages hashed per parallel batch (32 MiB).
const BATCH: usize = 8192;

#[derive(Clone, Debug)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub label: String,
}

/// Private anonymous VMAs of `pid` (no path, `[heap]`, `[stack]`, `[anon:…]`).
pub fn regions(pid: i32) -> Result<Vec<Region>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| proc_err(pid, "maps", e))?;
    let mut out = vec![];
    for line in maps.lines() {
        let mut f = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(_off), Some(_dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let path = f.next().unwrap_or("").trim();
        if !perms.contains('p') || inode != "0" {
            continue;
        }
        let label = if path.is_empty() {
            "anon".to_string()
        } else if path == "[heap]" || path.starts_with("[stack") || path.starts_with("[anon:") {
            path.to_string()
        } else {
            continue; // [vdso], [vvar], files, …
        };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        out.push(Region { start, end, label });
    }
    Ok(out)
}

#[derive(Serialize, Debug, Default, Clone)]
pub struct ProcEstimate {
    pub pid: i32,
    pub comm: String,
    pub regions: usize,
    pub pages_scanned: u64,
    pub distinct_frames: u64,
    pub zero_pages: u64,
    pub already_merged_pages: u64,
    /// Savings if KSM merged this process alone (use_zero_pages=0).
    pub ideal_savings_pages: u64,
    pub ideal_savings_bytes: u64,
    pub unreadable_pages: u64,
}

#[derive(Serialize, Debug, Clone)]
pub struct RegionSavings {
    pub region: String,
    pub duplicate_pages: u64,
    pub bytes: u64,
}

#[derive(Serialize, Debug, Default)]
pub struct Estimate {
    pub pids: Vec<i32>,
    pub page_size: u64,
    pub pages_scanned: u64,
    pub bytes_scanned: u64,
    /// Physical frames behind the scanned pages (a frame shared by fork or
    /// already merged counts once).
    pub distinct_frames: u64,
    /// Mappings of a frame already counted (fork sharing, KSM, zero page).
    pub shared_frame_mappings: u64,
    /// Frames whose content is all zeroes (not counting the kernel zero page).
    pub zero_pages: u64,
    /// Mappings of the kernel zero page (already free).
    pub zero_page_mappings: u64,
    /// Mappings of frames KSM already merged (`/proc/kpageflags` KSM bit).
    pub already_merged_pages: Option<u64>,
    /// What KSM has already freed within the scanned set: Σ over the KSM
    /// frames it maps of (mappings − 1). With `ideal_savings_pages` (what is
    /// still duplicate) it gives the whole ideal of the set as it is now, so
    /// `merged_percent_of_ideal` says how far KSM got on these very processes.
    pub already_saved_pages: u64,
    pub already_saved_bytes: u64,
    pub merged_percent_of_ideal: Option<f64>,
    /// Σ over distinct contents of (frames − 1): what KSM could free with
    /// use_zero_pages=0 (all empty pages merge into one KSM page).
    pub ideal_savings_pages: u64,
    pub ideal_savings_bytes: u64,
    pub ideal_savings_percent: f64,
    /// The same with use_zero_pages=1 (every empty page maps the zero page).
    pub ideal_savings_pages_use_zero_pages: u64,
    pub ideal_savings_bytes_use_zero_pages: u64,
    /// Σ of each process's own ideal, as if each were merged alone (a frame
    /// shared by fork counts in each process that maps it).
    pub within_process_savings_pages: u64,
    pub top_regions: Vec<RegionSavings>,
    pub processes: Vec<ProcEstimate>,
    pub pfn_available: bool,
    pub kpageflags_available: bool,
    pub notes: Vec<String>,
    pub elapsed_seconds: f64,
    pub mb_per_second: f64,
}

struct Page {
    pfn: u64,
    region: u32,
}

struct Scanner {
    ps: u64,
    kpageflags: Option<File>,
    pfn_seen: bool,
    frames: HashSet<u64>,
    contents: HashMap<u128, u32>,
    by_region: HashMap<String, u64>,
    est: Estimate,
}

impl Scanner {
    fn flags(&self, pfn: u64) -> Option<u64> {
        let f = self.kpageflags.as_ref()?;
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, pfn * 8).ok()?;
        Some(u64::from_le_bytes(b))
    }

    /// Hashes a batch in parallel, then counts it.
    fn flush(
        &mut self,
        buf: &mut Vec<u8>,
        pages: &mut Vec<Page>,
        labels: &[String],
        pe: &mut ProcEstimate,
        pframes: &mut HashSet<u64>,
        pcontents: &mut HashMap<u128, u32>,
    ) {
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
}

pub fn estimate(pids: &[i32], progress: bool) -> Result<Estimate> {
    let ps = page_size();
    let t0 = Instant::now();
    // Open everything first, so a bad pid fails before any work.
    let mut targets = vec![];
    let mut total_bytes = 0u64;
    for &pid in pids {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() || pid <= 0 {
            return Err(fail(EXIT_NO_PID, format!("no such process: {pid}")));
        }
        let regs = regions(pid)?;
        let pagemap =
            File::open(format!("/proc/{pid}/pagemap")).map_err(|e| proc_err(pid, "pagemap", e))?;
        let mem = File::open(format!("/proc/{pid}/mem")).map_err(|e| proc_err(pid, "mem", e))?;
        total_bytes += regs.iter().map(|r| r.end - r.start).sum::<u64>();
        targets.push((pid, regs, pagemap, mem));
    }
    let kpageflags = File::open("/proc/kpageflags").ok();
    let mut sc = Scanner {
        ps,
        kpageflags,
        pfn_seen: false,
        frames: HashSet::new(),
        contents: HashMap::new(),
        by_region: HashMap::new(),
        est: Estimate::default(),
    };
    sc.est.kpageflags_available = sc.kpageflags.is_some();
    let bar = if progress && isatty(2) {
        let b = indicatif::ProgressBar::new(total_bytes);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} estimating [{bar:40}] {bytes}/{total_bytes} of address space ({bytes_per_sec})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Some(b)
    } else {
        None
    };

    let mut buf: Vec<u8> = Vec::with_capacity(BATCH * ps as usize);
    let mut pages: Vec<Page> = Vec::with_capacity(BATCH);
    let mut pm = vec![0u8; (WINDOW * 8) as usize];
    for (pid, regs, pagemap, mem) in &targets {
        let pid = *pid;
        let labels: Vec<String> = regs.iter().map(|r| r.label.clone()).collect();
        let mut pe = ProcEstimate {
            pid,
            comm: comm(pid),
            regions: regs.len(),
            ..Default::default()
        };
        let mut pframes = HashSet::new();
        let mut pcontents = HashMap::new();
        for (ri, r) in regs.iter().enumerate() {
            let mut addr = r.start;
            while addr < r.end {
                let n = ((r.end - addr) / ps).min(WINDOW);
                let want = (n * 8) as usize;
                let got = match pagemap.read_at(&mut pm[..want], (addr / ps) * 8) {
                    Ok(g) => g / 8,
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                        return Err(fail(
                            EXIT_NO_PID,
                            format!("no such process: {pid} (exited)"),
                        ))
                    }
                    Err(e) => return Err(proc_err(pid, "pagemap", e)),
                };
                // Contiguous present runs, read from /proc/PID/mem in one go.
                let mut i = 0usize;
                while i < got {
                    let e = u64::from_le_bytes(pm[i * 8..i * 8 + 8].try_into().unwrap());
                    if e & PM_PRESENT == 0 || e & PM_SWAPPED != 0 {
                        i += 1;
                        continue;
                    }
                    let mut j = i;
                    let mut run = vec![];
                    while j < got {
                        let e = u64::from_le_bytes(pm[j * 8..j * 8 + 8].try_into().unwrap());
                        if e & PM_PRESENT == 0 || e & PM_SWAPPED != 0 {
                            break;
                        }
                        run.push(e & PM_PFN);
                        j += 1;
                    }
                    let va = addr + i as u64 * ps;
                    let len = run.len() * ps as usize;
                    let old = buf.len();
                    buf.resize(old + len, 0);
                    match mem.read_at(&mut buf[old..], va) {
                        Ok(g) if g == len => {
                            for pfn in run {
                                if pfn != 0 {
                                    sc.pfn_seen = true;
                                }
                                pages.push(Page {
                                    pfn,
                                    region: ri as u32,
                                });
                            }
                        }
                        Ok(_) | Err(_) => {
                            buf.truncate(old);
                            pe.unreadable_pages += run.len() as u64;
                        }
                    }
                    if pages.len() >= BATCH {
                        sc.flush(
                            &mut buf,
                            &mut pages,
                            &labels,
                            &mut pe,
                            &mut pframes,
                            &mut pcontents,
                        );
                    }
                    i = j;
                }
                addr += n * ps;
                if let Some(b) = &bar {
                    b.inc(n * ps);
                }
            }
        }
        sc.flush(
            &mut buf,
            &mut pages,
            &labels,
            &mut pe,
            &mut pframes,
            &mut pcontents,
        );
        pe.ideal_savings_bytes = pe.ideal_savings_pages * ps;
        sc.est.bytes_scanned += pe.pages_scanned * ps;
        sc.est.within_process_savings_pages += pe.ideal_savings_pages;
        sc.est.processes.push(pe);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut e = sc.est;
    e.pids = pids.to_vec();
    e.page_size = ps;
    e.pfn_available = sc.pfn_seen;
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
    let mut top: Vec<RegionSavings> = sc
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
    Ok(e)
}

pub fn render_text(e: &Estimate, verbose: bool) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "scanned {} pages ({}) in {} process{}: {} distinct frames, {} shared mappings",
        e.pages_scanned,
        human_bytes(e.bytes_scanned),
        e.pids.len(),
        if e.pids.len() == 1 { "" } else { "es" },
        e.distinct_frames,
        e.shared_frame_mappings
    );
    let _ = writeln!(
        o,
        "ideal savings: {} pages = {} ({:.1}% of scanned); with use_zero_pages=1: {} pages = {}",
        e.ideal_savings_pages,
        human_bytes(e.ideal_savings_bytes),
        e.ideal_savings_percent,
        e.ideal_savings_pages_use_zero_pages,
        human_bytes(e.ideal_savings_bytes_use_zero_pages)
    );
    if e.already_saved_pages > 0 {
        let _ = writeln!(
            o,
            "already saved by KSM within these processes: {} pages = {} ({:.1}% of their whole ideal)",
            e.already_saved_pages,
            human_bytes(e.already_saved_bytes),
            e.merged_percent_of_ideal.unwrap_or(0.0)
        );
    }
    let _ = writeln!(
        o,
        "zero pages: {} (plus {} mappings of the kernel zero page); already merged: {}",
        e.zero_pages,
        e.zero_page_mappings,
        e.already_merged_pages
            .map(|n| n.to_string())
            .unwrap_or_else(|| "unknown".into())
    );
    if !e.top_regions.is_empty() {
        let _ = writeln!(o, "top duplicate sources:");
        for r in &e.top_regions {
            let _ = writeln!(
                o,
                "  {:<24} {:>10} pages {:>12}",
                r.region,
                r.duplicate_pages,
                human_bytes(r.bytes)
            );
        }
    }
    if verbose || e.processes.len() > 1 {
        let _ = writeln!(
            o,
            "{:>8} {:<16} {:>10} {:>10} {:>8} {:>8} {:>12}",
            "PID", "COMMAND", "PAGES", "FRAMES", "ZERO", "MERGED", "OWN IDEAL"
        );
        for p in &e.processes {
            let _ = writeln!(
                o,
                "{:>8} {:<16} {:>10} {:>10} {:>8} {:>8} {:>12}",
                p.pid,
                p.comm,
                p.pages_scanned,
                p.distinct_frames,
                p.zero_pages,
                p.already_merged_pages,
                human_bytes(p.ideal_savings_bytes)
            );
        }
    }
    for n in &e.notes {
        let _ = writeln!(o, "note: {n}");
    }
    if verbose {
        let _ = writeln!(
            o,
            "speed: {:.0} MB/s ({:.3} s)",
            e.mb_per_second, e.elapsed_seconds
        );
    }
    o
}
