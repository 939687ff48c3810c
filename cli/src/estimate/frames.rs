//! Physical frames for the estimator (root only: the kernel hides frame
//! numbers from everyone else): which frames were already seen, which are
//! mapped more than once, and the flags `/proc/kpageflags` keeps of a frame
//! (KSM, the kernel zero page). Only frames the pagemap says are mapped more
//! than once come here, so a walk of ordinary private memory never touches
//! these maps. Knows nothing of processes, pages' contents or counting.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub const KPF_KSM: u64 = 1 << 21;
pub const KPF_ZERO_PAGE: u64 = 1 << 24;

/// Two bits per physical frame: seen once, seen again. One bit per 4 KiB
/// frame costs 32 KiB per GiB of RAM, allocated zeroed and so untouched
/// (never resident) where no shared frame lives.
pub struct FrameSet {
    seen: Box<[AtomicU64]>,
    again: Box<[AtomicU64]>,
    /// Frames past the highest zone `/proc/zoneinfo` spans (device memory,
    /// a hot-added range): rare, kept in a map. Value: seen again.
    beyond: Mutex<HashMap<u64, bool>>,
}

/// A zeroed slice of `words` atomics, from the allocator's zeroed memory
/// (calloc: large blocks come straight from mmap, untouched).
fn zeroed_words(words: usize) -> Box<[AtomicU64]> {
    if words == 0 {
        return Box::new([]);
    }
    let layout = std::alloc::Layout::array::<AtomicU64>(words).expect("bitmap size");
    // SAFETY: the layout is non-zero; all-zero bytes are a valid AtomicU64
    // (0), so the slice is initialised; Box frees it with the same layout.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout) as *mut AtomicU64;
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, words))
    }
}

/// One past the highest frame number of any memory zone, from
/// `/proc/zoneinfo` (`start_pfn` + `spanned` of each zone).
fn frame_limit() -> u64 {
    let Ok(text) = crate::util::read_proc("/proc/zoneinfo") else {
        return 0;
    };
    let text = String::from_utf8_lossy(&text);
    let (mut limit, mut spanned) = (0u64, 0u64);
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match (f.next(), f.next()) {
            (Some("spanned"), Some(n)) => spanned = n.parse().unwrap_or(0),
            (Some("start_pfn:"), Some(n)) => {
                limit = limit.max(n.parse::<u64>().unwrap_or(0) + spanned);
            }
            _ => {}
        }
    }
    limit
}

impl FrameSet {
    pub fn new() -> FrameSet {
        let words = frame_limit().div_ceil(64) as usize;
        FrameSet {
            seen: zeroed_words(words),
            again: zeroed_words(words),
            beyond: Mutex::new(HashMap::new()),
        }
    }

    /// Marks `pfn` seen; true if it was seen before, and then remembers it
    /// as mapped more than once.
    pub fn seen_before(&self, pfn: u64) -> bool {
        let (word, bit) = ((pfn / 64) as usize, 1u64 << (pfn % 64));
        if let Some(w) = self.seen.get(word) {
            let before = w.fetch_or(bit, Ordering::Relaxed) & bit != 0;
            if before {
                self.again[word].fetch_or(bit, Ordering::Relaxed);
            }
            return before;
        }
        let mut beyond = self.beyond.lock().unwrap_or_else(|e| e.into_inner());
        match beyond.get_mut(&pfn) {
            Some(again) => {
                *again = true;
                true
            }
            None => {
                beyond.insert(pfn, false);
                false
            }
        }
    }

    /// Whether `pfn` was seen more than once (read once the walk is over).
    pub fn seen_again(&self, pfn: u64) -> bool {
        let (word, bit) = ((pfn / 64) as usize, 1u64 << (pfn % 64));
        match self.again.get(word) {
            Some(w) => w.load(Ordering::Relaxed) & bit != 0,
            None => self
                .beyond
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&pfn)
                .copied()
                .unwrap_or(false),
        }
    }
}

/// `/proc/kpageflags`, read in runs: the frames a window of pagemap maps
/// more than once are looked up together, neighbours in one read.
pub struct PageFlags(File);

/// Frames this close together are read in one `pread` (its bytes cost less
/// than another system call).
const RUN_GAP: u64 = 64;

impl PageFlags {
    pub fn open() -> Option<PageFlags> {
        File::open("/proc/kpageflags").ok().map(PageFlags)
    }

    /// The flags of each frame of `pfns` (sorted, distinct), into `out`
    /// (same order; 0 where unreadable). `buf` is scratch.
    pub fn lookup(&self, pfns: &[u64], out: &mut Vec<u64>, buf: &mut Vec<u8>) {
        out.clear();
        let mut i = 0;
        while i < pfns.len() {
            let first = pfns[i];
            let mut j = i + 1;
            while j < pfns.len() && pfns[j] - pfns[j - 1] <= RUN_GAP {
                j += 1;
            }
            let span = (pfns[j - 1] - first + 1) as usize;
            buf.clear();
            buf.resize(span * 8, 0);
            let got = self.0.read_at(buf, first * 8).unwrap_or(0) / 8;
            for &pfn in &pfns[i..j] {
                let k = (pfn - first) as usize;
                out.push(if k < got {
                    u64::from_le_bytes(buf[k * 8..k * 8 + 8].try_into().unwrap())
                } else {
                    0
                });
            }
            i = j;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_seen_twice_is_remembered_as_seen_again() {
        let set = FrameSet::new();
        for pfn in [5, 1 << 40] {
            assert!(!set.seen_before(pfn));
            assert!(!set.seen_again(pfn));
            assert!(set.seen_before(pfn));
            assert!(set.seen_again(pfn));
        }
        assert!(!set.seen_again(6));
    }
}
