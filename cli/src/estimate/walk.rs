//! Reading a process's private anonymous memory for the estimator: its
//! regions from `/proc/PID/maps`, which pages are present from
//! `/proc/PID/pagemap`, their contents from `/proc/PID/mem`. Read-only:
//! only present pages are read, so nothing is faulted in or swapped back.
//! Knows nothing of hashing or counting (that is `tally`).

use crate::util::*;
use anyhow::Result;
use std::fs::File;
use std::os::unix::fs::FileExt;

const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_PFN: u64 = (1 << 55) - 1;
/// Pages per pagemap read (2 MiB of address space with 4 KiB pages).
const WINDOW: u64 = 512;

#[derive(Clone, Debug)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub label: String,
}

/// Private anonymous VMAs of `pid` (no path, `[heap]`, `[stack]`, `[anon:…]`).
pub fn regions(pid: i32) -> Result<Vec<Region>> {
    // Bytes: the path of a mapped file is whatever its name is.
    let maps = read_proc(format!("/proc/{pid}/maps")).map_err(|e| proc_err(pid, "maps", e))?;
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
    Ok(out)
}

/// One process opened for reading: a bad pid or a refusal shows here,
/// before any work.
pub struct Target {
    pub pid: i32,
    pub regions: Vec<Region>,
    pagemap: File,
    mem: File,
}

impl Target {
    pub fn open(pid: i32) -> Result<Target> {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() || pid <= 0 {
            return Err(fail(EXIT_NO_PID, format!("no such process: {pid}")));
        }
        Ok(Target {
            pid,
            regions: regions(pid)?,
            pagemap: File::open(format!("/proc/{pid}/pagemap"))
                .map_err(|e| proc_err(pid, "pagemap", e))?,
            mem: File::open(format!("/proc/{pid}/mem")).map_err(|e| proc_err(pid, "mem", e))?,
        })
    }

    /// Address space of its regions, in bytes.
    pub fn bytes(&self) -> u64 {
        self.regions.iter().map(|r| r.end - r.start).sum()
    }

    /// Every run of present pages, read from memory in one go: appends its
    /// contents to `buf` and calls `on_run(buf, region index, frame numbers)`
    /// (0 where the kernel hides them); `advanced(bytes)` follows the walk
    /// through the address space. Returns the pages present but unreadable.
    pub fn read_present(
        &self,
        ps: u64,
        buf: &mut Vec<u8>,
        mut on_run: impl FnMut(&mut Vec<u8>, u32, &[u64]),
        mut advanced: impl FnMut(u64),
    ) -> Result<u64> {
        let pid = self.pid;
        let mut unreadable = 0;
        let mut pm = vec![0u8; (WINDOW * 8) as usize];
        let mut run: Vec<u64> = Vec::with_capacity(WINDOW as usize);
        let entry =
            |pm: &[u8], i: usize| u64::from_le_bytes(pm[i * 8..i * 8 + 8].try_into().unwrap());
        let present = |e: u64| e & PM_PRESENT != 0 && e & PM_SWAPPED == 0;
        for (ri, r) in self.regions.iter().enumerate() {
            let mut addr = r.start;
            while addr < r.end {
                let n = ((r.end - addr) / ps).min(WINDOW);
                let want = (n * 8) as usize;
                let got = match self.pagemap.read_at(&mut pm[..want], (addr / ps) * 8) {
                    Ok(g) => g / 8,
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                        return Err(fail(
                            EXIT_NO_PID,
                            format!("no such process: {pid} (exited)"),
                        ))
                    }
                    Err(e) => return Err(proc_err(pid, "pagemap", e)),
                };
                let mut i = 0usize;
                while i < got {
                    if !present(entry(&pm, i)) {
                        i += 1;
                        continue;
                    }
                    let mut j = i;
                    run.clear();
                    while j < got && present(entry(&pm, j)) {
                        run.push(entry(&pm, j) & PM_PFN);
                        j += 1;
                    }
                    let va = addr + i as u64 * ps;
                    let len = run.len() * ps as usize;
                    let old = buf.len();
                    buf.resize(old + len, 0);
                    match self.mem.read_at(&mut buf[old..], va) {
                        Ok(g) if g == len => on_run(buf, ri as u32, &run),
                        Ok(_) | Err(_) => {
                            buf.truncate(old);
                            unreadable += run.len() as u64;
                        }
                    }
                    i = j;
                }
                addr += n * ps;
                advanced(n * ps);
            }
        }
        Ok(unreadable)
    }
}
