//! Static scratch buffers behind a try-lock (ground floor: any layer may
//! use them; they use nothing of the crate), for the rare paths that need
//! more than a few hundred bytes: a hook may run on an 8 KiB signal stack,
//! so big buffers never live on the stack. A busy buffer is never waited
//! for: the caller skips its work or falls back to a cautious answer.

use core::cell::UnsafeCell;
use core::sync::atomic::{
    AtomicBool,
    Ordering::{Acquire, Release},
};

pub struct Scratch<const N: usize> {
    busy: AtomicBool,
    bytes: UnsafeCell<[u8; N]>,
}

// SAFETY: only the holder of `busy` (one `ScratchGuard` at a time, taken
// by an acquiring swap and released by a releasing store) touches `bytes`.
unsafe impl<const N: usize> Sync for Scratch<N> {}

impl<const N: usize> Scratch<N> {
    pub const fn new() -> Self {
        Scratch {
            busy: AtomicBool::new(false),
            bytes: UnsafeCell::new([0; N]),
        }
    }

    /// In a forked child: the thread that held the buffer at fork time does
    /// not exist there, so nothing will ever release it but this.
    pub fn release_after_fork(&self) {
        self.busy.store(false, Release);
    }

    /// The buffer, if no one else (another thread, or the code this signal
    /// handler interrupted) holds it.
    pub fn try_take(&self) -> Option<ScratchGuard<'_, N>> {
        if self.busy.swap(true, Acquire) {
            None
        } else {
            Some(ScratchGuard { owner: self })
        }
    }
}

impl<const N: usize> Default for Scratch<N> {
    fn default() -> Self {
        Self::new()
    }
}

pub struct ScratchGuard<'a, const N: usize> {
    owner: &'a Scratch<N>,
}

impl<const N: usize> ScratchGuard<'_, N> {
    pub fn bytes(&mut self) -> &mut [u8; N] {
        // SAFETY: this guard holds `busy`, so no other reference to `bytes`
        // exists, and `&mut self` keeps this one unique while it lives.
        unsafe { &mut *self.owner.bytes.get() }
    }
}

impl<const N: usize> Drop for ScratchGuard<'_, N> {
    fn drop(&mut self) {
        self.owner.busy.store(false, Release);
    }
}
