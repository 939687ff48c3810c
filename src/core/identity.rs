//! Which process this is: the one that started the library, a child made by
//! `fork` or a raw `clone` (its own copy of our statics, which must start
//! over), or a `vfork`/`CLONE_VM` child that shares the starter's memory
//! (whose statics are the parent's, so it must change nothing in them).
//!
//! `pthread_atfork` handlers see only `fork`; a raw `clone` or
//! `syscall(SYS_clone)` child runs no handler. So the owner's pid is kept,
//! and where it matters (before a catch-up step, at exit, before taking
//! merge-any back) `getpid` is compared with it; a different pid that still
//! shares the owner's memory (`kcmp`) is a `vfork` child. No mapping of its
//! own (a wipe-on-fork page would cost every process a VMA). Never
//! allocates, never locks, leaves `errno` alone.

use core::sync::atomic::{AtomicBool, AtomicI32, Ordering::Relaxed};

use crate::os::sys;

/// The pid this copy of the library's statics belongs to.
static OWNER: AtomicI32 = AtomicI32::new(0);

/// This process was made by `fork`/`clone` from a process that runs the
/// library (inherited by its own children; an `exec` starts over).
static FORKED: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lineage {
    Owner,
    /// Made by `fork`/`clone` without `CLONE_VM`: its own copy of the statics.
    NewProcess(i32),
    /// A `vfork`/`CLONE_VM` child running in the owner's memory.
    SharesOwnersMemory,
}

fn lineage() -> Lineage {
    let pid = sys::getpid();
    let owner = OWNER.load(Relaxed);
    if pid == owner {
        Lineage::Owner
    } else if sys::shares_memory_with(pid, owner) {
        Lineage::SharesOwnersMemory
    } else {
        Lineage::NewProcess(pid)
    }
}

/// Records this process as the owner: at start-up, and in a child made by
/// `fork` (its `pthread_atfork` handler).
pub fn adopt() {
    OWNER.store(sys::getpid(), Relaxed);
}

/// [`adopt`], in a child made by `fork` (its `pthread_atfork` handler).
pub fn adopt_as_forked_child() {
    FORKED.store(true, Relaxed);
    adopt();
}

/// Whether this process was made by `fork`/`clone` from one that runs the
/// library (as far as seen: a raw `clone` child is seen at its first
/// catch-up step or at exit).
pub fn made_by_fork() -> bool {
    FORKED.load(Relaxed)
}

/// `true` once in a process made by `fork`/`clone` without `CLONE_VM` that
/// has not been adopted yet: the caller then starts this copy of the statics
/// over. A system call; ask only where it matters.
pub fn adopt_if_new_process() -> bool {
    match lineage() {
        Lineage::NewProcess(pid) => {
            OWNER.store(pid, Relaxed);
            FORKED.store(true, Relaxed);
            true
        }
        _ => false,
    }
}

/// Whether this is a `vfork`/`CLONE_VM` child running in the memory of the
/// process that owns the statics.
pub fn shares_owners_memory() -> bool {
    lineage() == Lineage::SharesOwnersMemory
}
