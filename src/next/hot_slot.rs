//! The hot path: the one-load, one-jump target of `malloc`, `calloc`,
//! `realloc` and `free`.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, Ordering::{Acquire, Release}};

/// The target of one of the four hooks a small-object loop calls (`malloc`,
/// `calloc`, `realloc`, `free`): a function with that hook's C signature,
/// first the hook's own slow path (which runs start-up), then, once
/// start-up has finished, what start-up published (the serving allocator's
/// own function, or a wrapper of the interposition layer's). Never empty,
/// so such a hook is one load and one jump: no separate gate, no test for
/// "not yet" (the gate stays on the slow path, which start-up and its
/// nested calls take). The interposition layer owns the four slots (their
/// first targets are its own functions). `F` is a function pointer type:
/// one word, pointer-aligned, no padding (size and alignment are checked
/// when a slot is made).
pub struct HotSlot<F: Copy>(UnsafeCell<F>);

// SAFETY: the cell is read and written only as one pointer-sized atomic
// word (`word`), never through a plain reference, so threads sharing a
// slot race on nothing; the values are plain function pointers (`Send`).
unsafe impl<F: Copy> Sync for HotSlot<F> {}

impl<F: Copy> HotSlot<F> {
    pub const fn new(first: F) -> HotSlot<F> {
        const { assert!(core::mem::size_of::<F>() == core::mem::size_of::<*mut c_void>()) };
        const { assert!(core::mem::align_of::<F>() == core::mem::align_of::<*mut c_void>()) };
        HotSlot(UnsafeCell::new(first))
    }

    fn word(&self) -> &AtomicPtr<c_void> {
        // SAFETY: `F` is one pointer-sized, pointer-aligned word (asserted in
        // `new`), so the cell is a valid, aligned `*mut c_void` for as long
        // as `self` lives, and it is only ever accessed through this atomic
        // view.
        unsafe { AtomicPtr::from_ptr(self.0.get() as *mut *mut c_void) }
    }

    /// The target now (an acquire load: a published target comes with
    /// everything start-up wrote before it).
    #[inline(always)]
    pub fn get(&self) -> F {
        let p = self.word().load(Acquire);
        // SAFETY: every word stored in the slot is an `F` (the first target,
        // or one `publish`ed), of the same size, so this gives an `F` back.
        unsafe { core::mem::transmute_copy::<*mut c_void, F>(&p) }
    }

    /// Opens the hot path to `target`. Call once start-up has finished
    /// (everything a hook reads is in place: the release store publishes it
    /// along with the pointer).
    pub fn publish(&self, target: F) {
        // SAFETY: `F` is a function pointer: one initialised pointer-sized
        // word (size asserted in `new`), which a `*mut c_void` can hold.
        let p = unsafe { core::mem::transmute_copy::<F, *mut c_void>(&target) };
        self.word().store(p, Release);
    }
}
