//! One-time start-up that tolerates re-entry from the thread running it.
//!
//! Start-up resolves symbols with `dlsym`, which may call `calloc`, which is
//! our own hook: that nested call must not wait for start-up to finish (it
//! would wait for itself). So the running thread is recorded by tid; its
//! nested calls are told "not ready" and take the bootstrap path, while other
//! threads wait by yielding. No mutex is involved, so `fork` cannot leave one
//! held (start-up runs at the first allocation, before any program code).


use core::sync::atomic::{
    AtomicI32, AtomicU8,
    Ordering::{Acquire, Relaxed, Release},
};

use crate::os::sys;

const NOT_STARTED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;

/// once_cell: no once_cell cell tolerates re-entry from its own initialiser
/// (its `race` cells would run `dlsym` again, nested, and its `sync` cells
/// would wait for themselves, and need std).
pub struct ReentrantOnce {
    state: AtomicU8,
    runner_tid: AtomicI32,
}

impl ReentrantOnce {
    pub const fn new() -> ReentrantOnce {
        ReentrantOnce {
            state: AtomicU8::new(NOT_STARTED),
            runner_tid: AtomicI32::new(0),
        }
    }

    #[inline(always)]
    pub fn is_done(&self) -> bool {
        self.state.load(Acquire) == DONE
    }

    /// Runs `init` once. Returns `true` once it has completed, `false` to a
    /// nested call made by `init` itself.
    #[inline(always)]
    pub fn run(&self, init: impl FnOnce()) -> bool {
        if self.is_done() {
            return true;
        }
        self.run_slow(init)
    }

    #[cold]
    fn run_slow(&self, init: impl FnOnce()) -> bool {
        let me = sys::gettid();
        match self
            .state
            .compare_exchange(NOT_STARTED, RUNNING, Acquire, Acquire)
        {
            Ok(_) => {
                self.runner_tid.store(me, Relaxed);
                init();
                self.state.store(DONE, Release);
                true
            }
            Err(_) => {
                if self.runner_tid.load(Relaxed) == me {
                    return false;
                }
                while !self.is_done() {
                    sys::sched_yield();
                }
                true
            }
        }
    }
}

impl Default for ReentrantOnce {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn nested_call_from_the_initialising_thread_is_not_ready() {
        static ONCE: ReentrantOnce = ReentrantOnce::new();
        let mut nested = None;
        assert!(ONCE.run(|| nested = Some(ONCE.run(|| unreachable!()))));
        assert_eq!(nested, Some(false));
        assert!(ONCE.run(|| unreachable!()));
    }

    #[test]
    fn other_threads_wait_and_init_runs_once() {
        static ONCE: ReentrantOnce = ReentrantOnce::new();
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    assert!(ONCE.run(|| {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        RUNS.fetch_add(1, Relaxed);
                    }));
                    assert_eq!(RUNS.load(Relaxed), 1);
                });
            }
        });
    }
}
