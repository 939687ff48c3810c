//! malloc family
//!
//! malloc, calloc, realloc and free are what a small-object loop calls. Each
//! loads its target from a hot slot (`next::HotSlot`: its slow path, which
//! runs start-up, until start-up publishes the serving allocator's own
//! function, or one of the wrappers below when this process counts calls or
//! watches for glibc-mapped blocks and brk growth) and jumps there. In
//! `process` and `off` mode a call costs that one load and jump: the kernel
//! does the merging, so there is nothing to decide per call (unless
//! `process` mode decides what pays, which watches as `advise` does).

use core::ffi::{c_int, c_void};

use super::{counted, enomem, ready};
use crate::core::engine;
use crate::counters::Hook;
use crate::next::{self, next};

static HOT_MALLOC: next::HotSlot<next::signature::malloc> = next::HotSlot::new(malloc_slow);
static HOT_CALLOC: next::HotSlot<next::signature::calloc> = next::HotSlot::new(calloc_slow);
static HOT_REALLOC: next::HotSlot<next::signature::realloc> = next::HotSlot::new(realloc_slow);
static HOT_FREE: next::HotSlot<next::signature::free> = next::HotSlot::new(free_slow);

/// A block this large may be a mapping of its own that glibc made with its
/// hidden `mmap`: the catch-up scan has news (it advises such blocks in
/// batches, once neighbouring blocks have coalesced into one VMA).
#[inline(always)]
fn note_if_own_mapping(size: usize) {
    if engine::block_may_be_own_mapping(size) {
        note_glibc_block(size);
    }
}

// The watching wrappers keep their common case to one compare and a jump:
// the rare large block goes through a twin that notes it first (so the
// common case saves no registers).

#[cold]
#[inline(never)]
fn note_glibc_block(size: usize) {
    engine::note_glibc_block(size);
}

/// Counts a call of the malloc family when this process counts them (the
/// user asked for the report, see `engine::counts_allocator_calls`).
#[inline(always)]
fn counted_alloc(hook: Hook) {
    if engine::counts_allocator_calls() {
        counted(hook);
    }
}

/// A published target's function, which start-up publishes only when present.
#[inline(always)]
unsafe fn present<F>(f: Option<F>) -> F {
    match f {
        Some(f) => f,
        // SAFETY: `publish_hot_path` publishes a wrapper only for a function
        // the serving allocator has (the table never changes afterwards).
        None => core::hint::unreachable_unchecked(),
    }
}

/// Chooses what the four hot hooks jump to, once start-up is done: the
/// serving allocator's own function, or a wrapper when calls are counted
/// or the allocator is watched (over glibc: `advise`, or `process` deciding
/// what pays); a function the allocator lacks keeps its slow path (which
/// answers `ENOMEM`).
pub(super) fn publish_hot_path() {
    let n = next();
    let counting = engine::counts_allocator_calls();
    let watching = engine::watches_allocator();
    fn pick<F: Copy>(own: Option<F>, counted: F, watched: F, counting: bool, watching: bool) -> Option<F> {
        own.map(|own| match (counting, watching) {
            (true, _) => counted,
            (false, true) => watched,
            (false, false) => own,
        })
    }
    let (c, w) = (counting, watching);
    if let Some(f) = pick(n.malloc, malloc_counted, malloc_watched, c, w) {
        HOT_MALLOC.publish(f);
    }
    if let Some(f) = pick(n.calloc, calloc_counted, calloc_watched, c, w) {
        HOT_CALLOC.publish(f);
    }
    // realloc's own check (exclusions, watching) is in its hook.
    if let Some(f) = pick(n.realloc, realloc_counted, n.realloc.unwrap_or(realloc_slow), c, w) {
        HOT_REALLOC.publish(f);
    }
    if let Some(f) = pick(n.free, free_counted, n.free.unwrap_or(free_slow), c, w) {
        HOT_FREE.publish(f);
    }
}

#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    HOT_MALLOC.get()(size)
}

unsafe extern "C" fn malloc_counted(size: usize) -> *mut c_void {
    counted(Hook::Malloc);
    malloc_watched(size)
}

/// The wrapper `malloc` jumps to while glibc's malloc is watched: a block
/// that may be a mapping of its own, or a brk heap grown past the sentinel
/// (`engine::brk_grew`: glibc grows it with its internal `sbrk`), is news.
unsafe extern "C" fn malloc_watched(size: usize) -> *mut c_void {
    if engine::large_for_glibc(size) || engine::brk_grew() {
        return malloc_noted(size);
    }
    present(next().malloc)(size)
}

#[cold]
#[inline(never)]
unsafe fn malloc_noted(size: usize) -> *mut c_void {
    note_watched(size);
    present(next().malloc)(size)
}

/// What a watching wrapper saw: a large block, brk growth, or both.
#[cold]
#[inline(never)]
fn note_watched(size: usize) {
    if engine::brk_grew() {
        engine::note_brk_growth();
    }
    if engine::large_for_glibc(size) {
        engine::note_glibc_block(size);
    }
}

#[cold]
unsafe extern "C" fn malloc_slow(size: usize) -> *mut c_void {
    if !ready() {
        return next::bootstrap_alloc(size, 16);
    }
    counted_alloc(Hook::Malloc);
    note_if_own_mapping(size);
    match next().malloc {
        Some(f) => f(size),
        None => enomem(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    HOT_CALLOC.get()(n, size)
}

unsafe extern "C" fn calloc_counted(n: usize, size: usize) -> *mut c_void {
    counted(Hook::Calloc);
    calloc_watched(n, size)
}

unsafe extern "C" fn calloc_watched(n: usize, size: usize) -> *mut c_void {
    // A product that overflows fails in calloc itself: no block, no news.
    if engine::large_for_glibc(n.wrapping_mul(size)) || engine::brk_grew() {
        return calloc_noted(n, size);
    }
    present(next().calloc)(n, size)
}

#[cold]
#[inline(never)]
unsafe fn calloc_noted(n: usize, size: usize) -> *mut c_void {
    note_watched(n.wrapping_mul(size));
    present(next().calloc)(n, size)
}

#[cold]
unsafe extern "C" fn calloc_slow(n: usize, size: usize) -> *mut c_void {
    if !ready() {
        return match n.checked_mul(size) {
            Some(total) => next::bootstrap_alloc(total, 16),
            None => enomem(),
        };
    }
    counted_alloc(Hook::Calloc);
    note_if_own_mapping(n.saturating_mul(size));
    match next().calloc {
        Some(f) => f(n, size),
        None => enomem(),
    }
}

/// `realloc` of a block from the bootstrap arena: copy it into a block from
/// `alloc` (the real heap once start-up is done, the arena before).
unsafe fn move_bootstrap_block(
    p: *mut c_void,
    size: usize,
    alloc: unsafe extern "C" fn(usize) -> *mut c_void,
) -> *mut c_void {
    let new = alloc(size);
    if !new.is_null() {
        core::ptr::copy_nonoverlapping(
            p as *const u8,
            new as *mut u8,
            next::bootstrap_size(p).min(size),
        );
    }
    new
}

unsafe extern "C" fn arena_alloc(size: usize) -> *mut c_void {
    next::bootstrap_alloc(size, 16)
}

/// Runs a resizing call, taking care of what a block carries along: while
/// anything is excluded, an excluded block that moves takes its exclusion
/// along (whatever its size); a block that may now be a glibc mapping of its
/// own is news for the catch-up scan.
#[inline(always)]
unsafe fn resize(p: *mut c_void, size: usize, call: impl FnOnce() -> *mut c_void) -> *mut c_void {
    if !engine::realloc_needs_care(size) {
        return call();
    }
    resize_carefully(p, size, call)
}

#[inline(never)]
unsafe fn resize_carefully(
    p: *mut c_void,
    size: usize,
    call: impl FnOnce() -> *mut c_void,
) -> *mut c_void {
    note_if_own_mapping(size);
    let excluded = !p.is_null() && engine::exclusions_exist() && {
        let old_len = next().malloc_usable_size.map_or(1, |f| f(p));
        engine::block_is_excluded(p as usize, old_len)
    };
    let new = call();
    if excluded && !new.is_null() {
        engine::exclusion_follows_block(new as usize, size);
    }
    new
}

#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if next::is_bootstrap(p) {
        return realloc_bootstrap_block(p, size);
    }
    let f = HOT_REALLOC.get();
    if engine::realloc_needs_care(size) {
        return realloc_carefully(f, p, size);
    }
    f(p, size)
}

unsafe extern "C" fn realloc_counted(p: *mut c_void, size: usize) -> *mut c_void {
    counted(Hook::Realloc);
    present(next().realloc)(p, size)
}

#[inline(never)]
unsafe fn realloc_carefully(
    f: next::signature::realloc,
    p: *mut c_void,
    size: usize,
) -> *mut c_void {
    resize_carefully(p, size, move || f(p, size))
}

#[cold]
#[inline(never)]
unsafe fn realloc_bootstrap_block(p: *mut c_void, size: usize) -> *mut c_void {
    move_bootstrap_block(p, size, if ready() { malloc } else { arena_alloc })
}

#[cold]
unsafe extern "C" fn realloc_slow(p: *mut c_void, size: usize) -> *mut c_void {
    if !ready() {
        return next::bootstrap_alloc(size, 16);
    }
    counted_alloc(Hook::Realloc);
    match next().realloc {
        Some(f) => resize(p, size, move || f(p, size)),
        None => enomem(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(size) else {
        return enomem();
    };
    if next::is_bootstrap(p) || !ready() {
        return realloc(p, total);
    }
    counted_alloc(Hook::Reallocarray);
    // The serving allocator's own, or its realloc behind an overflow check
    // (`next::stand_in`): never another allocator's.
    match next().reallocarray {
        Some(f) => resize(p, total, move || f(p, n, size)),
        None => enomem(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    if next::is_bootstrap(p) {
        return;
    }
    HOT_FREE.get()(p)
}

unsafe extern "C" fn free_counted(p: *mut c_void) {
    counted(Hook::Free);
    present(next().free)(p)
}

#[cold]
unsafe extern "C" fn free_slow(p: *mut c_void) {
    if !ready() {
        // Only blocks from the arena exist before start-up finishes.
        return;
    }
    counted_alloc(Hook::Free);
    if let Some(f) = next().free {
        f(p)
    }
}

#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !ready() {
        if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<usize>()) {
            return libc::EINVAL;
        }
        let p = next::bootstrap_alloc(size, align);
        if p.is_null() {
            return libc::ENOMEM;
        }
        *out = p;
        return 0;
    }
    counted_alloc(Hook::PosixMemalign);
    note_if_own_mapping(size);
    let Some(f) = next().posix_memalign else {
        return libc::ENOMEM;
    };
    f(out, align, size)
}

/// The shared body of the functions that return a block aligned to `align`.
/// `pick` chooses the next function only after start-up has resolved it: a
/// first call that arrives before our constructor must not see "missing".
#[inline(always)]
unsafe fn aligned(
    hook: Hook,
    pick: fn(&next::NextFunctions) -> Option<next::signature::memalign>,
    align: usize,
    size: usize,
) -> *mut c_void {
    if !ready() {
        return next::bootstrap_alloc(size, align.max(16).next_power_of_two());
    }
    counted_alloc(hook);
    note_if_own_mapping(size);
    match pick(next()) {
        Some(f) => f(align, size),
        None => enomem(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    aligned(Hook::AlignedAlloc, |n| n.aligned_alloc, align, size)
}

#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    aligned(Hook::Memalign, |n| n.memalign, align, size)
}

fn page() -> usize {
    crate::os::page_size()
}

#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    if !ready() {
        return next::bootstrap_alloc(size, page());
    }
    counted_alloc(Hook::Valloc);
    note_if_own_mapping(size);
    match next().valloc {
        Some(f) => f(size),
        None => enomem(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    // A size that cannot be rounded up is the allocator's to answer (each
    // answers it its own way); only the catch-up's hint needs the rounded size.
    let rounded = size.checked_add(page() - 1).map(|s| s & !(page() - 1));
    if !ready() {
        return match rounded {
            Some(r) => next::bootstrap_alloc(r.max(page()), page()),
            None => enomem(),
        };
    }
    counted_alloc(Hook::Pvalloc);
    note_if_own_mapping(rounded.unwrap_or(usize::MAX));
    match next().pvalloc {
        Some(f) => f(size),
        None => enomem(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if next::is_bootstrap(p) {
        return next::bootstrap_size(p);
    }
    if p.is_null() || !ready() {
        return 0;
    }
    counted_alloc(Hook::MallocUsableSize);
    match next().malloc_usable_size {
        Some(f) => f(p),
        None => 0,
    }
}
