//! What the malloc family asks: whether a block may be a glibc mapping of
//! its own, whether calls are counted, whether a `realloc` must take the
//! careful path; and the exclusion an excluded block takes along. The
//! hot path's tests are one relaxed load and a compare each.

use core::sync::atomic::{
    AtomicUsize,
    Ordering::{Relaxed, SeqCst},
};

use super::exclusion::exclude_moved;
use super::{config, page_range, silenced, EXCLUDED};
use crate::core::config::StatsDestination;

/// The smallest malloc block that may be a glibc mapping of its own;
/// `usize::MAX` (nothing qualifies) unless glibc's malloc is watched
/// (see [`watch_glibc_blocks`]). The watching hooks' only test is one compare with it.
static MALLOC_BLOCK_FLOOR: AtomicUsize = AtomicUsize::new(usize::MAX);

/// glibc maps a block on its own from `M_MMAP_THRESHOLD` up: 128 KiB unless
/// the program lowers it (then smaller mapped blocks are found by the
/// catch-up's schedule instead of its hint); less the chunk header, with
/// room for rounding.
const GLIBC_SMALLEST_OWN_MAPPING: usize = (128 << 10) - 64;

/// The smallest `realloc` size that takes the careful path: the advice
/// floor while nothing is excluded, 0 while anything is (an excluded block
/// that moves must take its exclusion along, whatever its size). Like
/// [`MALLOC_BLOCK_FLOOR`], the hot path's only test.
static REALLOC_FLOOR: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Whether a block of `size` bytes might be one glibc's malloc maps on its
/// own (with its hidden `mmap`, which no hook sees): only ever true over
/// glibc's malloc, in `advise` mode or in `process` mode deciding what pays
/// (where merge-any registered the block: it is news for the decisions
/// only). Such blocks are not advised one by one
/// (glibc has written the block's header before we could: the block's VMA
/// then has a reverse-map root of its own and could never coalesce with its
/// neighbours again, one VMA per live block); the catch-up scan advises them
/// in batches, once neighbouring blocks have coalesced into one VMA. The
/// hooks only tell it there is news ([`note_new_memory`]).
#[inline(always)]
pub fn block_may_be_own_mapping(size: usize) -> bool {
    size >= MALLOC_BLOCK_FLOOR.load(Relaxed)
}

/// [`block_may_be_own_mapping`] for the wrappers that exist only while the
/// allocator is watched: a compare with a constant.
#[inline(always)]
pub fn large_for_glibc(size: usize) -> bool {
    size >= GLIBC_SMALLEST_OWN_MAPPING
}

/// Whether the malloc family must look at block sizes at all
/// ([`block_may_be_own_mapping`] can be true).
pub fn watches_allocator() -> bool {
    MALLOC_BLOCK_FLOOR.load(Relaxed) != usize::MAX
}

/// Whether the malloc family's calls are counted: only when the user asked
/// for the report (`KSMAUTO_STATS` set and not `off`). Counting costs the
/// hot path a few instructions per call; the other hooks are always
/// counted (each is a system call anyway).
pub fn counts_allocator_calls() -> bool {
    let c = config();
    c.stats_requested && c.stats != StatsDestination::Off
}

/// Whether a `realloc` to `size` bytes must take the careful path.
#[inline(always)]
pub fn realloc_needs_care(size: usize) -> bool {
    size >= REALLOC_FLOOR.load(Relaxed)
}

/// Whether anything is excluded (so `realloc` must look at its block).
#[inline]
pub fn exclusions_exist() -> bool {
    !EXCLUDED.is_empty()
}

/// Whether the block `[addr, addr + len)` overlaps an exclusion.
pub fn block_is_excluded(addr: usize, len: usize) -> bool {
    match page_range(addr, len.max(1)) {
        Some(range) => EXCLUDED.overlaps(range),
        None => false,
    }
}

/// An excluded block was reallocated to `[addr, addr + len)`: the new block
/// is excluded too (it holds the same secret). The old block's pages stay
/// excluded while mapped: the allocator does not clear freed memory.
pub fn exclusion_follows_block(addr: usize, len: usize) {
    if silenced() {
        return;
    }
    if let Some(range) = page_range(addr, len.max(1)) {
        exclude_moved(range);
    }
}

/// `realloc`'s careful path is needed only while something is excluded (or
/// for blocks big enough to need advice). Called after every change to the
/// table; an insert racing a forget converges because both re-check.
pub(super) fn sync_realloc_floor() {
    if EXCLUDED.is_empty() {
        REALLOC_FLOOR.store(MALLOC_BLOCK_FLOOR.load(Relaxed), SeqCst);
        if EXCLUDED.is_empty() {
            return;
        }
    }
    REALLOC_FLOOR.store(0, SeqCst);
}

/// Over glibc's malloc, with a catch-up or the decisions about what pays
/// to tell: the malloc family looks at block sizes from glibc's own
/// mappings up (start-up).
pub(super) fn watch_glibc_blocks() {
    MALLOC_BLOCK_FLOOR.store(GLIBC_SMALLEST_OWN_MAPPING, Relaxed);
}

/// The library fell silent: no block size is worth a look any more.
pub(super) fn stop_watching() {
    MALLOC_BLOCK_FLOOR.store(usize::MAX, SeqCst);
    REALLOC_FLOOR.store(usize::MAX, SeqCst);
    // The watching wrappers stay published: their brk test must stop
    // firing too, or every malloc past the sentinel takes the cold path.
    crate::core::catchup_thread::forget_brk_news();
}
