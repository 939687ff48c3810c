//! The live counters, updated from hooks with relaxed atomics (and, for
//! call counts on x86-64, an unlocked add to memory).
//!
//! Call counts are sharded by thread (a hash of the thread pointer), so
//! threads mostly hit their own cache line and a malloc-heavy multithreaded
//! program does not bounce one line between cores.
//!
//! The counters are a zero-initialised static (no mapping of their own, so
//! the library adds no VMA for them); a forked child zeroes them in its
//! `pthread_atfork` handler ([`reset`]) and reports only its own activity.
//! Never allocates, never locks.
//!
//! A low layer: the hooks and the core write here, the report reads here,
//! and this module knows neither (its vocabulary, `SkipReason` and `Source`,
//! comes from the contract crate).

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};

use ksmauto_contract::{SkipReason, Source};

/// Expands the hook list (`src/hook_list.rs`) into [`Hook`]: one call
/// counter per `counted` function, in the list's order.
macro_rules! hook_enum {
    (
        counted {
            $($name:ident: $variant:ident = $kind:ident fn($($arg:ty),*) -> $ret:ty;)*
        }
        forwarded { $($forwarded:tt)* }
        exec { $($exec:tt)* }
        served { $($served:tt)* }
        variadic { $($variadic:tt)* }
        c_api { $($c_api:tt)* }
    ) => {
        /// Every entry point the library counts calls of.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Hook {
            $($variant,)*
        }

        impl Hook {
            pub const ALL: [Hook; Hook::COUNT] = [$(Hook::$variant),*];
            pub const COUNT: usize = [$(Hook::$variant),*].len();
            /// How many of the first hooks are the malloc family.
            const FAMILY: usize = 0 $(+ in_family!($kind))*;

            pub fn name(self) -> &'static str {
                match self {
                    $(Hook::$variant => stringify!($name),)*
                }
            }
        }

        // The family comes first, so that `is_allocator` is one comparison.
        const _: () = {
            let in_family = [$(in_family!($kind) == 1),*];
            let mut i = 0;
            while i < Hook::COUNT {
                assert!(in_family[i] == (i < Hook::FAMILY), "the malloc family comes first in the hook list");
                i += 1;
            }
        };
    };
}

/// 1 for a hook of the malloc family (by how it is resolved), else 0.
macro_rules! in_family {
    (serving) => {
        1
    };
    (allocator) => {
        1
    };
    ($other:ident) => {
        0
    };
}

with_hook_list!(hook_enum);

impl Hook {
    /// One of the malloc family, whose calls are counted only on request.
    pub fn is_allocator(self) -> bool {
        (self as usize) < Hook::FAMILY
    }
}

/// madvise failures are broken out by these errno values, the rest is `other`.
pub const FAILURE_ERRNOS: [i32; 4] = [libc::EINVAL, libc::ENOMEM, libc::EAGAIN, libc::EPERM];
const FAILURE_KINDS: usize = FAILURE_ERRNOS.len() + 1;

const SHARDS: usize = 128;

/// A call count is kept in two parts: a one-byte tick that each call
/// advances by `TICK`, and, each time the byte wraps (every
/// [`CALLS_PER_ROUND`] calls), the whole rounds in a 64-bit count. The byte
/// wrapping is the carry of the add itself, so the hot path counts with one
/// add to memory and one branch, and the branch doubles as "a round is
/// complete" for periodic work.
pub const CALLS_PER_ROUND: u64 = 64;
const TICK: u8 = (256 / CALLS_PER_ROUND) as u8;

#[repr(C, align(256))]
struct Shard {
    /// First, at offset 0: `count_call` addresses it from the array's start.
    ticks: [AtomicU8; Hook::COUNT],
    /// Calls in completed rounds.
    calls: [AtomicU64; Hook::COUNT],
}

#[repr(C)]
pub struct Counters {
    shards: [Shard; SHARDS],
    advised_regions: [AtomicU64; Source::COUNT],
    advised_bytes: [AtomicU64; Source::COUNT],
    skipped: [AtomicU64; SkipReason::COUNT],
    madvise_failures: [AtomicU64; FAILURE_KINDS],
    excluded_regions: AtomicU64,
    excluded_bytes: AtomicU64,
    unmerged_regions: AtomicU64,
    unmerged_bytes: AtomicU64,
    execs_without_merge_any: AtomicU64,
}

// SAFETY: `Counters` is atomics and arrays of them, for which all zeros is
// valid (every count 0): the empty state.
static COUNTERS: Counters = unsafe { core::mem::zeroed() };

#[inline(always)]
pub fn counters() -> &'static Counters {
    &COUNTERS
}

/// Starts the counters over: a forked child reports only its own activity.
pub fn reset() {
    COUNTERS.reset();
}

/// An address inside the library's zero-fill (bss) mapping, so that scans of
/// `/proc/self/maps` can recognise the library's own memory.
pub fn own_bss_address() -> usize {
    &COUNTERS as *const Counters as usize
}

/// Adds [`TICK`] to the byte `offset` bytes past `tick`; `true` when it
/// wrapped. On x86-64 that is one `add` to memory and a jump on its carry
/// (the compiler keeps an atomic byte's load, add and store apart, which
/// costs three more instructions on every malloc); the add is not locked,
/// like the portable version's store.
///
/// # Safety
/// `tick + offset` must be a tick (an `AtomicU8`) of a live [`Shard`],
/// reached from a pointer whose provenance covers it.
#[inline(always)]
unsafe fn advance_tick(tick: *const u8, offset: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller promises `tick + offset` is an `AtomicU8`, so
    // writing it through a shared pointer is allowed (interior mutability);
    // a single-byte load and store cannot tear, and the unlocked add is one
    // relaxed load and one relaxed store, as the portable version. The jump
    // lands on a label of this function.
    unsafe {
        core::arch::asm!(
            "add byte ptr [{tick} + {offset}], {step}",
            "jc {wrapped}",
            tick = in(reg) tick,
            offset = in(reg) offset,
            step = const TICK,
            wrapped = label { return true; },
            options(nostack),
        );
        false
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: the caller promises `tick + offset` is a live `AtomicU8`.
        let tick = unsafe { &*(tick.add(offset) as *const AtomicU8) };
        let (next, wrapped) = tick.load(Relaxed).overflowing_add(TICK);
        tick.store(next, Relaxed);
        wrapped
    }
}

#[inline(always)]
fn shard_index() -> usize {
    // Each thread's TLS block sits at the top of its own stack, and stacks
    // are a megabyte or more apart: the megabyte number tells threads apart.
    ((thread_pointer() >> 20) as usize) % SHARDS
}

/// The thread pointer (TLS base): unique per live thread, one instruction.
#[inline(always)]
fn thread_pointer() -> u64 {
    let tp: u64;
    // SAFETY: fs:0 holds the TCB's self pointer (the x86_64 TLS ABI), a
    // readable word in every thread; nothing else is touched.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        core::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    // SAFETY: reading tpidr_el0, the thread pointer, touches no memory.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        core::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nostack, nomem, preserves_flags))
    };
    tp
}

impl Counters {
    /// Counts one call; `true` on every [`CALLS_PER_ROUND`]th call of `hook`
    /// in this thread's shard, which callers use to do periodic work.
    ///
    /// An unlocked add rather than a locked one: this runs on every malloc,
    /// and a locked add alone would cost more than the whole forwarding
    /// (measured with `scripts/bench-overhead`). A shard is normally one
    /// thread's; two threads hashed to the same shard can collide, losing a
    /// tick or completing the same round twice, so call counts are exact for
    /// single-threaded programs and otherwise off by at most a round (64
    /// calls) per collision.
    #[inline(always)]
    pub fn count_call(&self, hook: Hook) -> bool {
        // The tick's place in shard 0 (ticks come first in a `Shard`) and the
        // byte offset of this thread's shard: the instruction that adds can
        // then do the addressing itself. The pointer comes from the whole
        // array, so it may reach every shard.
        let tick = (self.shards.as_ptr() as *const u8).wrapping_add(hook as usize);
        let offset = shard_index() * core::mem::size_of::<Shard>();
        // SAFETY: `hook` < Hook::COUNT and `shard_index()` < SHARDS, so
        // `tick + offset` is `self.shards[shard_index()].ticks[hook]`, and
        // `tick` comes from the whole array.
        if unsafe { advance_tick(tick, offset) } {
            self.complete_round(hook);
            return true;
        }
        false
    }

    /// The tick of `hook` wrapped: one more round of calls. Out of line, and
    /// it finds the shard again, so the hot path keeps a single pointer.
    #[cold]
    #[inline(never)]
    fn complete_round(&self, hook: Hook) {
        let calls = &self.shards[shard_index()].calls[hook as usize];
        calls.store(calls.load(Relaxed) + CALLS_PER_ROUND, Relaxed);
    }

    pub fn count_advised(&self, source: Source, bytes: usize) {
        self.advised_regions[source as usize].fetch_add(1, Relaxed);
        self.advised_bytes[source as usize].fetch_add(bytes as u64, Relaxed);
    }

    pub fn count_skipped(&self, reason: SkipReason) {
        self.skipped[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn count_madvise_failure(&self, errno: i32) {
        let kind = FAILURE_ERRNOS
            .iter()
            .position(|&e| e == errno)
            .unwrap_or(FAILURE_ERRNOS.len());
        self.madvise_failures[kind].fetch_add(1, Relaxed);
    }

    pub fn count_excluded(&self, bytes: usize) {
        self.excluded_regions.fetch_add(1, Relaxed);
        self.excluded_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Merge-any was switched off before an `exec` of a program the library
    /// does not run in.
    pub fn count_exec_without_merge_any(&self) {
        self.execs_without_merge_any.fetch_add(1, Relaxed);
    }

    /// A region taken back out of merging (`MADV_UNMERGEABLE`), e.g. a stack
    /// under the process-wide engine.
    pub fn count_unmerged(&self, bytes: usize) {
        self.unmerged_regions.fetch_add(1, Relaxed);
        self.unmerged_bytes.fetch_add(bytes as u64, Relaxed);
    }

    fn reset(&self) {
        let zero = |a: &[AtomicU64]| a.iter().for_each(|c| c.store(0, Relaxed));
        for shard in &self.shards {
            zero(&shard.calls);
            shard.ticks.iter().for_each(|t| t.store(0, Relaxed));
        }
        zero(&self.advised_regions);
        zero(&self.advised_bytes);
        zero(&self.skipped);
        zero(&self.madvise_failures);
        for c in [
            &self.excluded_regions,
            &self.excluded_bytes,
            &self.unmerged_regions,
            &self.unmerged_bytes,
            &self.execs_without_merge_any,
        ] {
            c.store(0, Relaxed);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for shard in &self.shards {
            for ((total, rounds), tick) in s.calls.iter_mut().zip(&shard.calls).zip(&shard.ticks) {
                *total += rounds.load(Relaxed) + u64::from(tick.load(Relaxed) / TICK);
            }
        }
        let load = |from: &[AtomicU64], to: &mut [u64]| {
            to.iter_mut()
                .zip(from)
                .for_each(|(t, f)| *t = f.load(Relaxed))
        };
        load(&self.advised_regions, &mut s.advised_regions);
        load(&self.advised_bytes, &mut s.advised_bytes);
        load(&self.skipped, &mut s.skipped);
        load(&self.madvise_failures, &mut s.madvise_failures);
        s.excluded_regions = self.excluded_regions.load(Relaxed);
        s.excluded_bytes = self.excluded_bytes.load(Relaxed);
        s.unmerged_regions = self.unmerged_regions.load(Relaxed);
        s.unmerged_bytes = self.unmerged_bytes.load(Relaxed);
        s.execs_without_merge_any = self.execs_without_merge_any.load(Relaxed);
        s
    }
}

/// A plain copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub calls: [u64; Hook::COUNT],
    pub advised_regions: [u64; Source::COUNT],
    pub advised_bytes: [u64; Source::COUNT],
    pub skipped: [u64; SkipReason::COUNT],
    /// Indexed like [`FAILURE_ERRNOS`], then "other".
    pub madvise_failures: [u64; FAILURE_KINDS],
    pub excluded_regions: u64,
    pub excluded_bytes: u64,
    pub unmerged_regions: u64,
    pub unmerged_bytes: u64,
    /// `exec`s before which merge-any was switched off (see
    /// `core::engine::before_exec`).
    pub execs_without_merge_any: u64,
}

impl Snapshot {
    pub fn total_advised_regions(&self) -> u64 {
        self.advised_regions.iter().sum()
    }

    pub fn total_advised_bytes(&self) -> u64 {
        self.advised_bytes.iter().sum()
    }

    pub fn total_skipped(&self) -> u64 {
        self.skipped.iter().sum()
    }

    pub fn total_madvise_failures(&self) -> u64 {
        self.madvise_failures.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_across_shards() {
        // SAFETY: all zeros is the valid empty state, as for `COUNTERS`.
        let c: Counters = unsafe { core::mem::zeroed() };
        let rounds = (0..1000).filter(|_| c.count_call(Hook::Free)).count();
        assert_eq!(c.snapshot().calls[Hook::Free as usize], 1000);
        assert_eq!(rounds, 1000 / CALLS_PER_ROUND as usize);
        c.count_call(Hook::Malloc);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    (0..1000).for_each(|_| {
                        c.count_call(Hook::Malloc);
                    })
                });
            }
        });
        c.count_advised(Source::Mmap, 4096);
        c.count_advised(Source::Api, 8192);
        c.count_madvise_failure(libc::EAGAIN);
        c.count_madvise_failure(libc::EBADF);
        let s = c.snapshot();
        // exact per thread; concurrent threads sharing a shard may lose counts
        let mallocs = s.calls[Hook::Malloc as usize];
        assert!((1001..=4001).contains(&mallocs), "{mallocs}");
        assert_eq!(s.total_advised_regions(), 2);
        assert_eq!(s.total_advised_bytes(), 12288);
        assert_eq!(s.madvise_failures, [0, 0, 1, 0, 1]);
    }

    #[test]
    fn names_are_unique() {
        for (i, a) in Hook::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i);
            assert!(Hook::ALL[i + 1..].iter().all(|b| a.name() != b.name()));
        }
    }
}
