//! Keeps merge-any out of programs the library does not run in, and owns
//! every switch of merge-any after start-up.
//!
//! Linux 6.7+ passes `PR_SET_MEMORY_MERGE` through `exec`. Under `process`,
//! that is right only when the library runs in the new program and decides
//! for itself; before any other `exec` (a set-user-ID, set-group-ID or
//! file-capability program, whose loader ignores `LD_PRELOAD` and whose
//! memory is another user's; a program that cannot load us; an environment
//! without the library; anything that cannot be inspected), merge-any is
//! switched off, and switched back on once no such `exec` is in flight.
//!
//! **What runs there** is read as the kernel and glibc's loader will read
//! it: the target as `os::exec_target` and `os::exec_search` find it, the
//! new environment as ld.so's `process_envvars` walks it (the last
//! `LD_PRELOAD` wins, its list split on spaces and colons only), and
//! `/etc/ld.so.preload` as ld.so splits it. "Nothing runs" (the `exec`
//! surely fails: merge-any is left alone) and "the library runs" are
//! answered only when sure; everything else counts as "the library does
//! not run there".
//!
//! The program's own choice stands: once it has switched merge-any off
//! itself (`prctl(PR_SET_MEMORY_MERGE, 0)`, seen through the `prctl` and
//! `syscall` hooks), no switch of ours turns it back on until it switches
//! it on again itself.
//!
//! This keeps the library from making such a program mergeable on the
//! operator's behalf. It is not a boundary against the program itself: any
//! process can set merge-any with `prctl` and `exec` a set-user-ID program,
//! library or not; only the kernel can refuse to keep the flag there.
//!
//! **In flight.** Every switch-off is recorded in a small table of lenders
//! (the thread about to `exec`), and merge-any goes back on only when the
//! table is empty: one thread's failed `exec` cannot switch it back on under
//! another thread that is between its switch-off and its `exec`. Every
//! `exec` hook is a call that comes back when the `exec` fails (the
//! variadic `execl*` too), and only that call releases its lender: a
//! signal handler that runs between the switch-off and the `exec` and
//! reaches a poll must not release it. A lender that never returns (a
//! `vfork` child whose `exec` succeeded, which cleared the flag of the
//! memory it shares with us; a thread that ended) is released by a later
//! poll once it no longer shares our memory or is gone. A thread that
//! leaves the call another way (`siglongjmp` out of a handler) keeps its
//! switch-off while it lives: merge-any stays off, the cautious side.
//!
//! **Atomic switches.** Table, flag and "stopped for good" (`mlockall`, a
//! secret that could not be recorded) change together under a token held
//! with every signal blocked, for one `prctl`. The `exec` hooks wait for it
//! (another thread's `prctl`); the polls from allocation hooks only try it
//! and otherwise come back later. The holder may be any task running in
//! this memory — a thread of ours, a `vfork` child of ours, or, seen from a
//! `vfork` child, its parent's threads — and is waited for; one that does
//! not run here (the copy of its parent's holder a raw `clone` child sees,
//! a `vfork` child killed while holding it) is replaced. Where `kcmp` is
//! refused and a child cannot tell its parent's memory from a copy of it,
//! a parent thread's hold counts as abandoned after two seconds.
//!
//! Never allocates; raw system calls only (`errno` untouched).


use core::sync::atomic::{
    AtomicBool, AtomicI32, AtomicUsize,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};

use super::identity;
use crate::os::exec_target::{ExecTarget, Fact};
use crate::os::{self, ksm, loader, sys};

/// `exec`s that may be in flight at once with merge-any switched off.
const LENDERS: usize = 64;

#[allow(clippy::declare_interior_mutable_const)]
const FREE: AtomicI32 = AtomicI32::new(0);
/// The lending threads' ids (0: free slot).
static LENDER: [AtomicI32; LENDERS] = [FREE; LENDERS];
/// Switch-offs in flight: slots in use, plus those no slot could hold
/// (never released: merge-any then stays off, the cautious side).
static LENT: AtomicUsize = AtomicUsize::new(0);
/// The tid holding the token (0: free).
static TOKEN: AtomicI32 = AtomicI32::new(0);
/// Merge-any is off for good in this process (see [`stop_for_good`]).
static STOPPED: AtomicBool = AtomicBool::new(false);
/// The program switched merge-any off itself, and has not switched it on
/// again (see [`program_switches`]).
static PROGRAM_OFF: AtomicBool = AtomicBool::new(false);

/// A switch-off to hand back: the slot it holds, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lent(Option<usize>);

/// Start-up: asks the loader for our own file and its own now (loader
/// calls, not for a hook), and notes which files they are.
pub fn start() {
    let _ = os::own_file_name();
    os::remember_own_file();
    loader::remember_own_loader();
}

struct Held(u64);

impl Drop for Held {
    fn drop(&mut self) {
        TOKEN.store(0, Release);
        sys::restore_signals(self.0);
    }
}

/// The token, with every signal blocked; `wait`: until it is free (never
/// from an allocation hook), else `None` if it is busy.
fn take_token(wait: bool) -> Option<Held> {
    let mask = sys::block_all_signals();
    let me = sys::gettid();
    let mut spins = 0u32;
    let mut doubt = Doubt::default();
    loop {
        let holder = TOKEN.load(Relaxed);
        if holder == 0 && TOKEN.compare_exchange(0, me, Acquire, Relaxed).is_ok() {
            return Some(Held(mask));
        }
        if holder != 0 && doubt.abandoned(holder) {
            let _ = TOKEN.compare_exchange(holder, 0, AcqRel, Relaxed);
            continue;
        }
        if !wait {
            sys::restore_signals(mask);
            return None;
        }
        spins += 1;
        if spins.is_multiple_of(64) {
            sys::sched_yield();
        }
    }
}

/// How long a holder that cannot be told apart (see [`holder_runs_here`])
/// may keep the token before it counts as abandoned: far longer than one
/// `prctl`, which is all a holder does with it.
const PATIENCE_NS: u64 = 2_000_000_000;

/// The waiter's view of one holder: since when it has been seen holding
/// the token without a way to tell whether it runs in this memory.
#[derive(Default)]
struct Doubt {
    holder: i32,
    since_ns: u64,
}

impl Doubt {
    /// Whether `holder` will never free the token seen here.
    fn abandoned(&mut self, holder: i32) -> bool {
        match holder_runs_here(holder) {
            Some(here) => !here,
            None => {
                let now = sys::monotonic_coarse_ns();
                if self.holder != holder {
                    *self = Doubt {
                        holder,
                        since_ns: now,
                    };
                }
                now.saturating_sub(self.since_ns) > PATIENCE_NS
            }
        }
    }
}

/// Whether the token's holder runs in this memory, and so will free it: a
/// live thread of this process, or another task in the same memory — a
/// `vfork` child of ours, or, in a `vfork` child, its parent's threads
/// (asked with `kcmp`). Not so for the copy of its parent's holder that a
/// raw `clone` child sees, nor for a `vfork` child killed while it held the
/// token. `None`: cannot tell (`kcmp` refused, in a process that may be a
/// `vfork` child — or a raw `clone` child — and a holder that is a live
/// thread of the owner).
fn holder_runs_here(holder: i32) -> Option<bool> {
    if sys::thread_is_ours(holder) {
        return Some(true);
    }
    let pid = sys::getpid();
    match sys::memory_shared(pid, holder) {
        Some(shared) => Some(shared),
        None => {
            let owner = identity::owner();
            if owner != pid && sys::thread_of(owner, holder) {
                None
            } else {
                Some(false)
            }
        }
    }
}

/// The part of a new program's environment its loader acts on, read as
/// ld.so reads it (`process_envvars`): every `LD_` entry in turn, so the
/// last `LD_PRELOAD=` and the last `LD_LIBRARY_PATH=` win.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoaderEnv {
    preload: Option<&'static [u8]>,
    library_path: Option<&'static [u8]>,
    /// `LD_AUDIT`: auditors may redirect any library search.
    audit: bool,
    /// `LD_TRACE_LOADED_OBJECTS`: ld.so lists the libraries, runs nothing.
    trace: bool,
}

impl LoaderEnv {
    /// From the `NAME=value` entries of an environment.
    pub fn read(env: impl Iterator<Item = &'static [u8]>) -> LoaderEnv {
        let mut seen = LoaderEnv::default();
        for entry in env {
            let Some(rest) = entry.strip_prefix(b"LD_") else {
                continue;
            };
            let Some(eq) = rest.iter().position(|&b| b == b'=') else {
                continue;
            };
            let value = &rest[eq + 1..];
            match &rest[..eq] {
                b"PRELOAD" => seen.preload = Some(value),
                b"LIBRARY_PATH" => seen.library_path = Some(value),
                b"AUDIT" => seen.audit |= !value.is_empty(),
                b"TRACE_LOADED_OBJECTS" => seen.trace = true,
                _ => {}
            }
        }
        seen
    }
}

/// Whether the library will run in `target` started with `env`; every
/// unknown counts against it. `as_we_resolve`: the `exec` resolves paths as
/// we do now (not so for a spawn whose file actions may change the working
/// directory or the descriptors first).
fn library_runs_in(target: ExecTarget, env: &LoaderEnv, as_we_resolve: bool) -> bool {
    if target.privileged != Fact::No
        || target.loads_our_preloads != Fact::Yes
        || env.audit
        || env.trace
    {
        return false;
    }
    let default_search = target.default_library_search == Fact::Yes
        && env.library_path.is_none_or(|path| path.is_empty());
    let loads_us = |name: &[u8]| names_us(name, default_search, as_we_resolve);
    // LD_PRELOAD is split on spaces and colons only: a tab or a newline
    // is part of a name.
    env.preload.is_some_and(|list| {
        list.split(|&b| b == b' ' || b == b':')
            .filter(|name| !name.is_empty())
            .any(loads_us)
    }) || loader::preload_file_names(loads_us)
}

/// Whether the loader, asked for preload `name`, loads this library: a path
/// must be this very file (same device and inode — a path that does not
/// exist loads nothing); a bare name must be this library's file name, and
/// the loader must surely find this file by it: the program searches the
/// default way (`default_search`: no library path of its own or in the
/// environment), and `/etc/ld.so.cache` sends the name only here.
fn names_us(name: &[u8], default_search: bool, as_we_resolve: bool) -> bool {
    // ld.so expands $ORIGIN, $LIB, $PLATFORM (also as ${…}) in a name
    // with a slash; such a name is not followed here.
    if name.contains(&b'$') {
        return false;
    }
    if name.contains(&b'/') {
        (as_we_resolve || name.first() == Some(&b'/')) && os::is_own_library_file(name)
    } else {
        name == os::own_file_name()
            && default_search
            && loader::cache_sends(name, os::is_own_library_file)
    }
}

/// About to `exec` `target` with environment `env` (merge-any is in use):
/// switches merge-any off unless the library will run there or nothing
/// runs. The caller hands the result to [`returned`] if the call comes back.
pub fn before_exec(target: ExecTarget, env: &LoaderEnv, as_we_resolve: bool) -> Option<Lent> {
    if target.nothing_runs || library_runs_in(target, env, as_we_resolve) {
        return None;
    }
    let me = sys::gettid();
    let _token = take_token(true)?;
    if STOPPED.load(Relaxed) || PROGRAM_OFF.load(Relaxed) {
        return None;
    }
    let slot = LENDER
        .iter()
        .position(|s| s.compare_exchange(0, me, Relaxed, Relaxed).is_ok());
    LENT.fetch_add(1, Relaxed);
    if ksm::merge_any(false).is_ok() {
        Some(Lent(slot))
    } else {
        release(slot, me);
        None
    }
}

/// Frees `slot` if `tid` still holds it (a poll may have released it).
fn release(slot: Option<usize>, tid: i32) {
    match slot {
        Some(i) => {
            if LENDER[i].compare_exchange(tid, 0, Relaxed, Relaxed).is_ok() {
                LENT.fetch_sub(1, Relaxed);
            }
        }
        None => {
            LENT.fetch_sub(1, Relaxed);
        }
    }
}

fn switch_back_on_if_idle(still_wanted: bool) {
    if LENT.load(Relaxed) == 0
        && still_wanted
        && !STOPPED.load(Relaxed)
        && !PROGRAM_OFF.load(Relaxed)
    {
        let _ = ksm::merge_any(true);
    }
}

/// The `exec` (or a spawn, in the parent) came back: release the switch-off,
/// and switch merge-any on again if none is left in flight and it is still
/// this process's engine.
pub fn returned(lent: Lent, still_wanted: bool) {
    let me = sys::gettid();
    let Some(_token) = take_token(true) else {
        return;
    };
    // Without a slot (none was free) it stays counted: merge-any stays off.
    if lent.0.is_some() {
        release(lent.0, me);
    }
    switch_back_on_if_idle(still_wanted);
}

/// Whether a switch-off is outstanding (one load; for the hooks' poll).
#[inline]
pub fn any_lent() -> bool {
    LENT.load(Relaxed) != 0
}

/// From a poll: releases lenders that will never come back — a `vfork`
/// child that no longer shares our memory (its `exec` succeeded), a thread
/// that is gone — and switches merge-any back on when none is left. A live
/// thread of ours is never released here, the polling one included: it is
/// between its switch-off and its `exec` (a signal handler that runs there
/// may reach a poll), and [`returned`] releases it if the call comes back.
/// Only tries the token. Not from a `vfork` child still in our memory (the
/// caller checks).
pub fn take_back(still_wanted: bool) {
    let pid = sys::getpid();
    let Some(_token) = take_token(false) else {
        return;
    };
    let mut released = false;
    for slot in &LENDER {
        let tid = slot.load(Relaxed);
        if tid == 0 {
            continue;
        }
        // Not a thread of ours: a vfork child. Still in our memory (not
        // yet exec'd): keep it lent.
        let gone = !sys::thread_is_ours(tid) && !sys::shares_memory_with(pid, tid);
        if gone && slot.compare_exchange(tid, 0, Relaxed, Relaxed).is_ok() {
            LENT.fetch_sub(1, Relaxed);
            released = true;
        }
    }
    if released {
        switch_back_on_if_idle(still_wanted);
    }
}

/// The program's own switch of merge-any (`on` or off): made by `call`,
/// which says whether it succeeded, under the token, so that no switch of
/// ours lands between the program's and its record. Once the program has
/// switched merge-any off itself, no switch of ours turns it back on (a
/// spawn's parent, a failed `exec`, a poll, a forked child), until the
/// program switches it on again itself.
pub fn program_switches<R>(on: bool, call: impl FnOnce() -> (R, bool)) -> R {
    let _token = take_token(true);
    let (result, succeeded) = call();
    if succeeded {
        PROGRAM_OFF.store(!on, Relaxed);
    }
    result
}

/// Whether the program has switched merge-any off itself (one load).
#[inline]
pub fn program_switched_off() -> bool {
    PROGRAM_OFF.load(Relaxed)
}

/// Merge-any off for good (`mlockall`; a secret that could not be
/// recorded; a sandbox about to go in): no later switch turns it back on.
pub fn stop_for_good() {
    let _token = take_token(true);
    STOPPED.store(true, Relaxed);
    let _ = ksm::merge_any(false);
}

/// In a forked child: the parent's lenders and token are not the child's,
/// and no `exec` of the child's is in flight yet, so if the parent had
/// merge-any switched off when it forked, the child (`still_wanted`)
/// switches it back on.
pub fn forget_after_fork(still_wanted: bool) {
    for slot in &LENDER {
        slot.store(0, Relaxed);
    }
    TOKEN.store(0, Relaxed);
    if LENT.swap(0, Relaxed) != 0 {
        switch_back_on_if_idle(still_wanted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(env: &[&'static [u8]]) -> LoaderEnv {
        LoaderEnv::read(env.iter().copied())
    }

    /// A thread of this test process that sleeps until told to end; its tid.
    fn sleeping_thread() -> (
        i32,
        std::sync::mpsc::Sender<()>,
        std::thread::JoinHandle<()>,
    ) {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            tid_tx.send(sys::gettid()).unwrap();
            let _ = end_rx.recv();
        });
        (tid_rx.recv().unwrap(), end_tx, handle)
    }

    extern "C" fn ask_about_holder(arg: *mut libc::c_void) -> libc::c_int {
        match holder_runs_here(arg as usize as i32) {
            Some(true) => 1,
            Some(false) => 2,
            None => 3,
        }
    }

    /// Runs [`holder_runs_here`] about `holder` in a child made by `clone`
    /// with `flags` (on a stack of its own); its answer as 1 (runs here),
    /// 2 (does not), 3 (cannot tell).
    fn asked_in_child(holder: i32, flags: i32) -> i32 {
        let mut stack = vec![0u8; 256 << 10];
        // SAFETY: one past the end of `stack`, the same allocation.
        let top = unsafe { stack.as_mut_ptr().add(stack.len()) } as *mut libc::c_void;
        // SAFETY: the child runs `ask_about_holder` on `stack`, which lives
        // until the child has been waited for below; it makes system calls
        // (recording at most the `kcmp` probe in an atomic) and returns.
        // With `CLONE_VM | CLONE_VFORK` this thread is suspended until the
        // child exits, so nothing else runs on or frees `stack` meanwhile.
        let pid = unsafe {
            libc::clone(
                ask_about_holder,
                top,
                flags | libc::SIGCHLD,
                holder as usize as *mut libc::c_void,
            )
        };
        assert!(pid > 0);
        let mut status = 0;
        // SAFETY: `status` is a valid int on the stack; `pid` is our child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "{status}");
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn a_vfork_child_waits_for_its_parents_threads_and_a_copy_does_not() {
        identity::adopt();
        let (thread, end, handle) = sleeping_thread();
        assert_eq!(holder_runs_here(thread), Some(true));
        if sys::memory_shared(sys::getpid(), sys::getpid()).is_some() {
            // A vfork child runs in our memory: a thread of ours holding
            // the token will free it there (the old rule, `tgkill` with the
            // child's own pid, said it was gone, and took the token).
            assert_eq!(
                asked_in_child(thread, libc::CLONE_VM | libc::CLONE_VFORK),
                1
            );
            // A child with a copy of our memory: our thread frees the
            // token in our memory, never in the child's copy.
            assert_eq!(asked_in_child(thread, 0), 2);
        }
        end.send(()).unwrap();
        handle.join().unwrap();
        // A thread that ended holds nothing.
        assert_eq!(holder_runs_here(thread), Some(false));
    }

    #[test]
    fn the_last_entry_of_each_loader_variable_wins() {
        let env = read(&[b"LD_PRELOAD=/a.so", b"PATH=/bin", b"LD_PRELOAD="]);
        assert_eq!(env.preload, Some(&b""[..]));
        let env = read(&[b"LD_PRELOAD=", b"LD_PRELOAD=/a.so"]);
        assert_eq!(env.preload, Some(&b"/a.so"[..]));
        let env = read(&[b"LD_LIBRARY_PATH=/x", b"LD_LIBRARY_PATH="]);
        assert_eq!(env.library_path, Some(&b""[..]));
    }

    #[test]
    fn entries_without_a_value_or_of_other_names_are_not_loader_variables() {
        let env = read(&[b"LD_PRELOAD", b"XLD_PRELOAD=/a.so", b"LD_PRELOADX=/b.so"]);
        assert_eq!(env, LoaderEnv::default());
        assert!(read(&[b"LD_AUDIT=/audit.so"]).audit);
        assert!(!read(&[b"LD_AUDIT="]).audit);
        assert!(read(&[b"LD_TRACE_LOADED_OBJECTS="]).trace);
    }
}
