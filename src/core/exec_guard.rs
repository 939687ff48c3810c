//! Keeps merge-any out of programs the library does not run in.
//!
//! Linux 6.7+ passes `PR_SET_MEMORY_MERGE` through `exec`. Under `process`,
//! that is right only when the library runs in the new program and decides
//! for itself; before any other `exec` (a set-user-ID, set-group-ID or
//! file-capability program, whose loader ignores `LD_PRELOAD` and whose
//! memory is another user's; a program we cannot run in; an environment
//! without the library), merge-any is switched off, and switched back on
//! once no such `exec` is in flight any more.
//!
//! **In flight.** Every switch-off is recorded in a small table of lenders
//! (the thread that is about to `exec`), and merge-any goes back on only when
//! the table is empty: so one thread's failed `exec` cannot switch it back on
//! under another thread that is between its switch-off and its `exec`. A
//! lender that never returns (its `exec` succeeded: a `vfork` child, whose
//! `exec` cleared the flag of the memory it shares with us; or a variadic
//! `execl*`, whose failure comes back to the program, not to us) is released
//! by a later poll once it no longer shares our memory (`kcmp`) or is gone.
//!
//! **Atomic toggles.** Table and flag change together under a spin token
//! held with every signal blocked (a handler that `exec`s cannot interrupt
//! its own thread's holder); the token is held for one `prctl`, and a holder
//! that died holding it is recognised and replaced.
//!
//! Never allocates; raw system calls only (`errno` untouched).

use core::sync::atomic::{
    AtomicI32, AtomicUsize,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};

use crate::os::exec_target::ExecTarget;
use crate::os::{self, sys};

const PR_SET_MEMORY_MERGE: i32 = 67;

/// `exec`s that may be in flight at once with merge-any switched off.
const LENDERS: usize = 64;

#[allow(clippy::declare_interior_mutable_const)]
const FREE: AtomicI32 = AtomicI32::new(0);
/// The lending threads' ids (0: free slot).
static LENDER: [AtomicI32; LENDERS] = [FREE; LENDERS];
/// Slots in use, plus switch-offs no slot could hold (those are never
/// released: merge-any then stays off, the cautious side).
static LENT: AtomicUsize = AtomicUsize::new(0);
/// The tid holding the toggle token (0: free).
static TOKEN: AtomicI32 = AtomicI32::new(0);

/// The library is named by `/etc/ld.so.preload` (read at start-up): every
/// dynamic program on this machine loads it, whatever its environment.
static IN_LD_SO_PRELOAD: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// A switch-off to hand back: the slot it holds, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lent(Option<usize>);

/// Start-up: notes whether `/etc/ld.so.preload` loads this library.
pub fn start() {
    IN_LD_SO_PRELOAD.store(ld_so_preload_names_us(), Relaxed);
}

/// Runs `f` holding the toggle token, with every signal blocked.
fn with_token<R>(f: impl FnOnce() -> R) -> R {
    let mask = sys::block_all_signals();
    let me = sys::gettid();
    let mut spins = 0u32;
    loop {
        let holder = TOKEN.load(Relaxed);
        if holder == 0 {
            if TOKEN.compare_exchange(0, me, Acquire, Relaxed).is_ok() {
                break;
            }
            continue;
        }
        spins += 1;
        // A holder is inside one prctl: long waits mean it died holding the
        // token (killed, or a vfork child that exec'd is never in here).
        if spins % 1024 == 0 && !sys::task_exists(holder) {
            let _ = TOKEN.compare_exchange(holder, 0, AcqRel, Relaxed);
        }
        sys::sched_yield();
    }
    let result = f();
    TOKEN.store(0, Release);
    sys::restore_signals(mask);
    result
}

/// Whether the library will run in `target` started with an environment
/// that does (`env_preloads_us`) or does not name it.
fn library_runs_in(target: ExecTarget, env_preloads_us: bool) -> bool {
    !target.privileged
        && !target.static_program
        && (env_preloads_us || IN_LD_SO_PRELOAD.load(Relaxed))
}

/// About to `exec` `target` (merge-any is in use): switches merge-any off
/// if the library will not run there. The caller hands the result to
/// [`returned`] if the call comes back.
pub fn before_exec(target: ExecTarget, env_preloads_us: bool) -> Option<Lent> {
    if library_runs_in(target, env_preloads_us) {
        return None;
    }
    let me = sys::gettid();
    with_token(|| {
        let slot = LENDER
            .iter()
            .position(|s| s.compare_exchange(0, me, Relaxed, Relaxed).is_ok());
        LENT.fetch_add(1, Relaxed);
        if sys::prctl(PR_SET_MEMORY_MERGE, 0, 0, 0, 0).is_ok() {
            Some(Lent(slot))
        } else {
            release(slot);
            None
        }
    })
}

fn release(slot: Option<usize>) {
    if let Some(i) = slot {
        LENDER[i].store(0, Relaxed);
        LENT.fetch_sub(1, Relaxed);
    }
}

/// The `exec` (or a spawn, in the parent) came back: release the switch-off,
/// and switch merge-any on again if it was the last one in flight and
/// `still_wanted` (merge-any is still this process's engine).
pub fn returned(lent: Lent, still_wanted: bool) {
    with_token(|| {
        release(lent.0);
        if LENT.load(Relaxed) == 0 && still_wanted {
            let _ = sys::prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0);
        }
    })
}

/// Whether a switch-off is outstanding (one load; for the hooks' poll).
#[inline]
pub fn any_lent() -> bool {
    LENT.load(Relaxed) != 0
}

/// From a poll: releases lenders that will never come back (a child that no
/// longer shares our memory, a thread that is gone, or the polling thread
/// itself, whose variadic `exec` failed), and switches merge-any back on
/// when none is left. Not from a `vfork` child still in our memory.
pub fn take_back(still_wanted: bool) {
    let me = sys::gettid();
    let pid = sys::getpid();
    with_token(|| {
        let mut released = false;
        for slot in &LENDER {
            let tid = slot.load(Relaxed);
            if tid == 0 {
                continue;
            }
            let gone = tid == me
                || if sys::thread_is_ours(tid) {
                    false
                } else {
                    // Not a thread of ours: a vfork child. Still in our
                    // memory (not yet exec'd): keep it lent.
                    !sys::shares_memory_with(pid, tid)
                };
            if gone && slot.compare_exchange(tid, 0, Relaxed, Relaxed).is_ok() {
                LENT.fetch_sub(1, Relaxed);
                released = true;
            }
        }
        if released && LENT.load(Relaxed) == 0 && still_wanted {
            let _ = sys::prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0);
        }
    })
}

/// In a forked child: the parent's lenders are not the child's, and no
/// `exec` of the child's is in flight yet, so if the parent had merge-any
/// switched off when it forked, the child (`still_wanted`) switches it on.
pub fn forget_after_fork(still_wanted: bool) {
    for slot in &LENDER {
        slot.store(0, Relaxed);
    }
    TOKEN.store(0, Relaxed);
    if LENT.swap(0, Relaxed) != 0 && still_wanted {
        let _ = sys::prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0);
    }
}

/// Whether an environment (`NAME=value` entries) loads this library through
/// `LD_PRELOAD`.
pub fn env_preloads_us(env: impl Iterator<Item = &'static [u8]>) -> bool {
    env.filter_map(|entry| entry.strip_prefix(b"LD_PRELOAD="))
        .any(names_us)
}

/// Whether a preload list (separated by spaces or colons, as `ld.so` reads
/// it) names this library: a path must be this very file (same device and
/// inode — a path that does not exist loads nothing); a bare name must be
/// this library's file name (found through the loader's search path, which
/// is trusted to find it as it did for this process).
fn names_us(list: &[u8]) -> bool {
    list.split(|&b| b == b' ' || b == b':' || b == b'\t' || b == b'\n')
        .filter(|entry| !entry.is_empty())
        .any(|entry| {
            if entry.contains(&b'/') {
                os::is_own_library_file(entry)
            } else {
                entry == os::own_file_name()
            }
        })
}

fn ld_so_preload_names_us() -> bool {
    let mut buf = [0u8; 512];
    match sys::read_file(b"/etc/ld.so.preload\0", &mut buf) {
        Ok(n) => names_us(&buf[..n]),
        Err(_) => false,
    }
}
