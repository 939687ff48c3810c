//! The bootstrap arena: serves the allocations `dlsym` (and anything else
//! before start-up has resolved the allocator) makes while we resolve.
//! Never reused, never freed.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

const ARENA_SIZE: usize = 256 * 1024;
const HEADER: usize = 16;

#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; ARENA_SIZE]>);
// SAFETY: the arena's bytes are handed out in disjoint blocks, each claimed
// by one compare-exchange of `ARENA_USED`; no reference to the whole array
// is ever made, only addresses.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_SIZE]));
static ARENA_USED: AtomicUsize = AtomicUsize::new(0);

fn arena_base() -> usize {
    ARENA.0.get() as usize
}

/// Whether `p` came from the bootstrap arena.
#[inline(always)]
pub fn is_bootstrap(p: *mut c_void) -> bool {
    // One unsigned compare: an address below the arena wraps to a huge offset.
    (p as usize).wrapping_sub(arena_base()) < ARENA_SIZE
}

/// Zeroed memory from the arena (it is never reused, so it is always zero),
/// aligned to `align` (a power of two). Null when the arena is exhausted.
pub fn bootstrap_alloc(size: usize, align: usize) -> *mut c_void {
    let align = align.max(HEADER);
    let mut used = ARENA_USED.load(Relaxed);
    loop {
        let user = (arena_base() + used + HEADER + align - 1) & !(align - 1);
        let Some(end) = user.checked_add(size) else {
            return core::ptr::null_mut();
        };
        if end > arena_base() + ARENA_SIZE {
            return core::ptr::null_mut();
        }
        match ARENA_USED.compare_exchange_weak(used, end - arena_base(), Relaxed, Relaxed) {
            Ok(_) => {
                // SAFETY: the word before `user` lies in this block's header
                // (`HEADER` ≥ 8 bytes, `user` aligned to ≥ 16), inside the
                // arena and claimed by this thread's compare-exchange alone.
                unsafe { *((user - core::mem::size_of::<usize>()) as *mut usize) = size };
                return user as *mut c_void;
            }
            Err(now) => used = now,
        }
    }
}

/// The size a bootstrap block was allocated with.
///
/// # Safety
/// `p` must satisfy [`is_bootstrap`] and come from [`bootstrap_alloc`].
pub unsafe fn bootstrap_size(p: *mut c_void) -> usize {
    *((p as usize - core::mem::size_of::<usize>()) as *const usize)
}
