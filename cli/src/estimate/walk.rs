//! Reading processes' private anonymous memory for the estimator: their
//! regions from `/proc/PID/maps`, which pages are present from
//! `/proc/PID/pagemap`, their contents with `process_vm_readv` in batches
//! of 16 pages. Read-only: only present pages are read, so nothing is
//! faulted in or swapped back; a page the kernel maps to the zero page,
//! and a frame already read through another mapping (shared by fork,
//! merged by KSM), is never read.
//!
//! `process_vm_readv` pins what it reads, and the kernel answers a pin of
//! an anonymous page that is not exclusively its process's (shared by
//! fork, a KSM page) by giving the process a copy of it: reading would
//! unshare the very pages the estimate is about, and cost the memory it
//! measures. So only pages the pagemap calls exclusively mapped go
//! through it; every other page is read through `/proc/PID/mem`, which
//! does not pin. The walk is cut into chunks of address space that run in
//! parallel. Knows nothing of how the pages are counted (that is `tally`).

use super::frames::{FrameSet, PageFlags, KPF_KSM, KPF_ZERO_PAGE};
use super::present::{self, PageRegion};
use super::tally::{content_hash, Counted, Record, Sink, UNRESOLVED};
use crate::util::*;
use anyhow::Result;
use ksmauto_contract::proc;
use std::fs::File;
use std::os::unix::fs::FileExt;

const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
/// The kernel's "page exclusively mapped" (since 4.2): one mapping of its
/// frame, so no other mapping can have been read already.
const PM_EXCLUSIVE: u64 = 1 << 56;
const PM_PFN: u64 = (1 << 55) - 1;
/// Pages per chunk of the walk (32 MiB of address space with 4 KiB pages):
/// a unit of parallel work, and one `pread` of pagemap.
const CHUNK_PAGES: u64 = 8192;
/// Pages per read (64 KiB with 4 KiB pages): the kernel's on-stack array
/// of pages for one `process_vm_readv` holds 16 (it allocates one for
/// more), and the copy is still in cache when it is hashed. Measured the
/// fastest here: 128 KiB and more were about 3 times slower per GiB, 32 KiB
/// a sixth slower (see BENCHMARKS.md).
const READ_PAGES: usize = 16;

#[derive(Clone, Debug)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub label: String,
}

/// Private anonymous VMAs of a `/proc/PID/maps` text (no path, `[heap]`,
/// `[stack]`, `[anon:…]`), read as bytes: a path that is not UTF-8 is
/// another mapping's and never hides the rest.
pub fn regions_in(maps: &[u8]) -> Vec<Region> {
    let mut out = vec![];
    for m in maps.split(|&b| b == b'\n').filter_map(MapsLine::parse) {
        if !m.perms.contains(&b'p') || m.inode != b"0" {
            continue;
        }
        let path = m.path;
        let label = if path.is_empty() {
            "anon".to_string()
        } else if path == b"[heap]" || path.starts_with(b"[stack") || path.starts_with(b"[anon:") {
            as_text(path)
        } else {
            continue; // [vdso], [vvar], files, …
        };
        out.push(Region {
            start: m.start,
            end: m.end,
            label,
        });
    }
    out
}

/// One process checked for reading: a bad pid or a refusal shows here,
/// before any work. Its files are opened again by each thread that reads
/// it (`Files`), so a host of thousands of processes never holds thousands
/// of descriptors.
pub struct Target {
    pub pid: i32,
    /// Clock ticks after boot: with the pid, it names one process (pids are
    /// reused).
    start_time: Option<u64>,
    pub regions: Vec<Region>,
    /// The tally's source (this process, this region's label) of each region.
    pub sources: Vec<u32>,
}

/// `starttime` of `/proc/PID/stat`.
fn start_time(pid: i32) -> Option<u64> {
    let stat = read_proc(format!("/proc/{pid}/stat")).ok()?;
    proc::Stat::parse(&stat)?.start_time()
}

impl Target {
    pub fn open(pid: i32) -> Result<Target> {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() || pid <= 0 {
            return Err(fail(EXIT_NO_PID, format!("no such process: {pid}")));
        }
        let start_time = start_time(pid);
        let maps = read_proc(format!("/proc/{pid}/maps")).map_err(|e| proc_err(pid, "maps", e))?;
        // The permission checks of the reads to come (mem's is the same as
        // process_vm_readv's).
        File::open(format!("/proc/{pid}/pagemap")).map_err(|e| proc_err(pid, "pagemap", e))?;
        File::open(format!("/proc/{pid}/mem")).map_err(|e| proc_err(pid, "mem", e))?;
        Ok(Target {
            pid,
            start_time,
            regions: regions_in(&maps),
            sources: vec![],
        })
    }

    /// A kernel thread named on the command line: nothing to read.
    pub fn kernel_thread(pid: i32) -> Target {
        Target {
            pid,
            start_time: None,
            regions: vec![],
            sources: vec![],
        }
    }

    /// Its pagemap, opened for reading; `None` once it has ended (or its
    /// pid names another process).
    fn files(&self, index: u32) -> Option<Files> {
        let pagemap = File::open(format!("/proc/{}/pagemap", self.pid)).ok()?;
        if start_time(self.pid) != self.start_time {
            return None;
        }
        Some(Files {
            target: index,
            pid: self.pid,
            pagemap,
            mem: None,
        })
    }
}

/// One thread's open files of the process it reads.
struct Files {
    target: u32,
    pid: i32,
    pagemap: File,
    /// Opened at the first page that needs it.
    mem: Option<File>,
}

impl Files {
    fn mem(&mut self) -> Option<&File> {
        if self.mem.is_none() {
            self.mem = File::open(format!("/proc/{}/mem", self.pid)).ok();
        }
        self.mem.as_ref()
    }
}

/// A piece of one region of one process: the unit of parallel work.
#[derive(Clone, Copy, Debug)]
pub struct Chunk {
    pub target: u32,
    pub region: u32,
    pub start: u64,
    pub end: u64,
}

/// Every region of every target, cut into chunks.
pub fn chunks(targets: &[Target], ps: u64) -> Vec<Chunk> {
    let mut out = vec![];
    for (ti, t) in targets.iter().enumerate() {
        for (ri, r) in t.regions.iter().enumerate() {
            let mut start = r.start;
            while start < r.end {
                let end = r.end.min(start + CHUNK_PAGES * ps);
                out.push(Chunk {
                    target: ti as u32,
                    region: ri as u32,
                    start,
                    end,
                });
                start = end;
            }
        }
    }
    out
}

/// What the walk shares between its threads.
pub struct Walk<'a> {
    pub ps: u64,
    pub targets: &'a [Target],
    /// Present when frame numbers show (root).
    pub frames: Option<&'a FrameSet>,
    pub flags: Option<&'a PageFlags>,
    pub sink: &'a Sink,
    pub progress: Option<&'a indicatif::ProgressBar>,
}

/// One thread's buffers, reused from chunk to chunk.
#[derive(Default)]
pub struct Scratch {
    pagemap: Vec<u8>,
    shared: Vec<u64>,
    shared_flags: Vec<u64>,
    flag_bytes: Vec<u8>,
    /// Pages to read: (address, frame or 0); exclusively mapped ones
    /// (read with `process_vm_readv`), others (through `/proc/PID/mem`).
    wanted: Vec<(u64, u64)>,
    wanted_shared: Vec<(u64, u64)>,
    contents: Vec<u8>,
    local: Vec<libc::iovec>,
    remote: Vec<libc::iovec>,
    records: Vec<Record>,
    /// The files of the process of the last chunk (the next is most often
    /// of the same process).
    files: Option<Files>,
    /// The chunk's spans of present pages, and the kernel's answer.
    spans: Vec<(u64, u64)>,
    regions: Vec<PageRegion>,
}

/// The process ended while it was read.
struct Exited;

impl Walk<'_> {
    /// Reads one chunk: its pagemap, then the pages that need reading.
    pub fn chunk(&self, c: Chunk, s: &mut Scratch) {
        let t = &self.targets[c.target as usize];
        let counts = &self.sink.counts[c.target as usize];
        if counts.has_exited() {
            return;
        }
        let files = match s.files.take() {
            Some(f) if f.target == c.target => Some(f),
            _ => t.files(c.target),
        };
        let Some(mut files) = files else {
            counts.set_exited();
            return;
        };
        let source = t.sources[c.region as usize];
        // This chunk's counts, added to the process's at its end.
        let mut n = Counted::default();
        let mut spans = std::mem::take(&mut s.spans);
        let mut regions = std::mem::take(&mut s.regions);
        if !present::spans(
            &files.pagemap,
            c.start,
            c.end,
            self.ps,
            &mut spans,
            &mut regions,
        ) {
            spans.push((c.start, c.end));
        }
        let done = spans.iter().try_for_each(|&(start, end)| {
            let entries = self.entries(&files, start, end, s)?;
            self.classify(entries, start, source, s, &mut n)?;
            self.read_wanted(&mut files, source, Via::Readv, s, &mut n)?;
            self.read_wanted(&mut files, source, Via::Mem, s, &mut n)
        });
        (s.spans, s.regions) = (spans, regions);
        if done.is_err() {
            counts.set_exited();
        }
        counts.add(&n);
        self.sink.push(&mut s.records);
        s.files = Some(files);
        if let Some(p) = self.progress {
            p.inc(n.pages * self.ps);
        }
    }

    /// The pagemap entries of `[start, end)`, into `s.pagemap`; how many.
    fn entries(&self, f: &Files, start: u64, end: u64, s: &mut Scratch) -> Result<usize, Exited> {
        let want = ((end - start) / self.ps * 8) as usize;
        s.pagemap.resize(want, 0);
        match f
            .pagemap
            .read_at(&mut s.pagemap[..want], start / self.ps * 8)
        {
            // An ended process's pagemap reads nothing.
            Ok(0) if want > 0 => Err(Exited),
            Ok(got) => Ok(got / 8),
            Err(_) => Err(Exited),
        }
    }

    /// Sorts the chunk's present pages: the zero page and frames already
    /// read are counted here; every other page goes to `s.wanted` or
    /// `s.wanted_shared`.
    fn classify(
        &self,
        entries: usize,
        start: u64,
        source: u32,
        s: &mut Scratch,
        n: &mut Counted,
    ) -> Result<(), Exited> {
        let entry =
            |pm: &[u8], i: usize| u64::from_le_bytes(pm[i * 8..i * 8 + 8].try_into().unwrap());
        let present = |e: u64| e & PM_PRESENT != 0 && e & PM_SWAPPED == 0;
        // A frame mapped more than once may be read through another
        // mapping, or be the zero page: those are looked up together.
        s.shared.clear();
        if self.frames.is_some() {
            for i in 0..entries {
                let e = entry(&s.pagemap, i);
                if present(e) && e & PM_EXCLUSIVE == 0 && e & PM_PFN != 0 {
                    s.shared.push(e & PM_PFN);
                }
            }
            s.shared.sort_unstable();
            s.shared.dedup();
            s.shared_flags.clear();
            match self.flags {
                Some(f) => f.lookup(&s.shared, &mut s.shared_flags, &mut s.flag_bytes),
                None => s.shared_flags.resize(s.shared.len(), 0),
            }
        }
        s.wanted.clear();
        s.wanted_shared.clear();
        let mut any_frame = false;
        for i in 0..entries {
            let e = entry(&s.pagemap, i);
            if !present(e) {
                continue;
            }
            n.pages += 1;
            let mut pfn = e & PM_PFN;
            if pfn >= 1 << Record::PFN_BITS {
                pfn = 0; // no physical address is this wide: treat as hidden
            }
            any_frame |= pfn != 0;
            let addr = start + i as u64 * self.ps;
            if let (Some(frames), true) = (self.frames, pfn != 0 && e & PM_EXCLUSIVE == 0) {
                let k = s.shared.binary_search(&pfn).unwrap_or(0);
                let flags = s.shared_flags.get(k).copied().unwrap_or(0);
                if flags & KPF_ZERO_PAGE != 0 {
                    n.zero_page_mappings += 1;
                    continue;
                }
                let ksm = flags & KPF_KSM != 0;
                n.already_merged += ksm as u64;
                if frames.seen_before(pfn) {
                    // Read through another mapping: its contents come
                    // from there once the walk is over.
                    n.repeats += 1;
                    n.already_saved += ksm as u64;
                    s.records.push(Record::new(UNRESOLVED, pfn, source));
                    continue;
                }
            }
            if e & PM_EXCLUSIVE != 0 {
                s.wanted.push((addr, pfn));
            } else {
                s.wanted_shared.push((addr, pfn));
            }
        }
        if any_frame {
            self.sink.saw_frame_numbers();
        }
        Ok(())
    }

    /// Reads and hashes `s.wanted` (or `s.wanted_shared`), `READ_PAGES`
    /// at a time.
    fn read_wanted(
        &self,
        f: &mut Files,
        source: u32,
        via: Via,
        s: &mut Scratch,
        n: &mut Counted,
    ) -> Result<(), Exited> {
        let ps = self.ps as usize;
        let wanted = std::mem::take(match via {
            Via::Readv => &mut s.wanted,
            Via::Mem => &mut s.wanted_shared,
        });
        for batch in wanted.chunks(READ_PAGES) {
            let mut done = 0;
            while done < batch.len() {
                let rest = &batch[done..];
                s.contents.resize(rest.len() * ps, 0);
                let got = match via {
                    Via::Readv => read_pages(f, rest, ps, s)?,
                    Via::Mem => read_pages_from_mem(f, rest, ps, &mut s.contents),
                };
                for (k, &(_, pfn)) in rest[..got].iter().enumerate() {
                    let hash = content_hash(&s.contents[k * ps..(k + 1) * ps]);
                    s.records.push(Record::new(hash, pfn, source));
                }
                done += got;
                if done < batch.len() {
                    n.unreadable += 1; // the page the read stopped at
                    done += 1;
                }
            }
        }
        match via {
            Via::Readv => s.wanted = wanted,
            Via::Mem => s.wanted_shared = wanted,
        }
        Ok(())
    }
}

/// How pages are read (see the module's doc).
#[derive(Clone, Copy)]
enum Via {
    Readv,
    Mem,
}

/// Reads the pages `want` (addresses) into `s.contents`, neighbours in one
/// piece, all in one `process_vm_readv`; how many pages from the first
/// arrived whole (fewer when one of them is gone or unreadable).
fn read_pages(
    f: &mut Files,
    want: &[(u64, u64)],
    ps: usize,
    s: &mut Scratch,
) -> Result<usize, Exited> {
    s.local.clear();
    s.remote.clear();
    let base = s.contents.as_mut_ptr();
    for (k, &(addr, _)) in want.iter().enumerate() {
        match s.remote.last_mut() {
            Some(r) if r.iov_base as u64 + r.iov_len as u64 == addr => {
                r.iov_len += ps;
                s.local.last_mut().unwrap().iov_len += ps;
            }
            _ => {
                s.remote.push(libc::iovec {
                    iov_base: addr as *mut libc::c_void,
                    iov_len: ps,
                });
                s.local.push(libc::iovec {
                    // SAFETY: within `contents`, which holds want.len() pages.
                    iov_base: unsafe { base.add(k * ps) } as *mut libc::c_void,
                    iov_len: ps,
                });
            }
        }
    }
    // SAFETY: every local iovec lies within `s.contents`, which lives and
    // is not otherwise borrowed during the call; remote addresses are only
    // read by the kernel on the other process's behalf.
    let got = unsafe {
        libc::process_vm_readv(
            f.pid,
            s.local.as_ptr(),
            s.local.len() as libc::c_ulong,
            s.remote.as_ptr(),
            s.remote.len() as libc::c_ulong,
            0,
        )
    };
    if got >= 0 {
        return Ok(got as usize / ps);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ESRCH) => Err(Exited),
        // Refused (a seccomp filter, a kernel without the call), or the
        // first page unreadable to it (a region made PROT_NONE after it was
        // written, which /proc/PID/mem still reads, as a debugger does):
        // the same pages through /proc/PID/mem, a run at a time.
        _ => Ok(read_pages_from_mem(f, want, ps, &mut s.contents)),
    }
}

fn read_pages_from_mem(
    f: &mut Files,
    want: &[(u64, u64)],
    ps: usize,
    contents: &mut [u8],
) -> usize {
    let Some(mem) = f.mem() else {
        return 0;
    };
    let mut k = 0;
    while k < want.len() {
        let mut j = k + 1;
        while j < want.len() && want[j].0 == want[j - 1].0 + ps as u64 {
            j += 1;
        }
        let piece = &mut contents[k * ps..j * ps];
        match mem.read_at(piece, want[k].0) {
            Ok(got) if got == piece.len() => k = j,
            Ok(got) => return k + got / ps,
            Err(_) => return k,
        }
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_that_are_not_utf8_hide_nothing() {
        let maps = b"7f00-7f02 rw-p 00000000 00:00 0 \n\
            7f02-7f03 rw-p 00000000 08:01 12 /tmp/\xff\xfe.so\n\
            7f03-7f05 rw-p 00000000 00:00 0 [anon:caf\xe9]\n\
            7f05-7f06 rw-p 00000000 00:00 0 [heap]\n\
            7f06-7f07 rw-s 00000000 00:01 9 /dev/zero (deleted)\n";
        let r = regions_in(maps);
        let labels: Vec<&str> = r.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["anon", "[anon:caf\\xe9]", "[heap]"]);
        assert_eq!((r[0].start, r[0].end), (0x7f00, 0x7f02));
    }
}
