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
//!
//! Also who started this program ([`starter`]), for the exit report's rule
//! that only the process the user started speaks unasked: the parent, the
//! program file it ran and the session are recorded when the library
//! starts, because a parent that exits hands its children to init or a
//! subreaper, and the parent at exit may be one that never started us, or
//! the same process running another program since an `exec`.


use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::Relaxed};

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

/// The parent this program had when the library started in it (0: none
/// in this pid namespace).
static PARENT_AT_START: AtomicI32 = AtomicI32::new(0);

/// The session this program started in (0: its leader is outside this pid
/// namespace; -1: unknown).
static SESSION_AT_START: AtomicI32 = AtomicI32::new(-1);

/// The device and inode of the program file the parent ran when the library
/// started here (inode 0: unknown, no parent to ask, or not recorded).
static PARENT_IMAGE_DEV: AtomicU64 = AtomicU64::new(0);
static PARENT_IMAGE_INO: AtomicU64 = AtomicU64::new(0);

/// The pid the library's statics belong to: this process, or, in a
/// `vfork` child, the parent whose memory it runs in.
pub fn owner() -> i32 {
    OWNER.load(Relaxed)
}

/// Records this process as the owner: at start-up, and in a child made by
/// `fork` (its `pthread_atfork` handler).
pub fn adopt() {
    OWNER.store(sys::getpid(), Relaxed);
}

/// [`adopt`], when the library starts in a program: also records the
/// parent and the session, the facts [`starter`] judges by (two system
/// calls, no file read: start-up runs in every program).
pub fn adopt_at_start() {
    adopt();
    PARENT_AT_START.store(sys::getppid(), Relaxed);
    SESSION_AT_START.store(sys::getsid(0).unwrap_or(-1), Relaxed);
}

/// Records the program file the parent runs now, for [`starter`] to tell
/// whether it still runs it at exit (one `stat`; only where a report may
/// be written unasked). Without it, the parent counts as changed.
pub fn note_parent_image() {
    let parent = PARENT_AT_START.load(Relaxed);
    if parent <= 1 {
        return;
    }
    if let Some(image) = crate::os::proc::process_image(parent) {
        PARENT_IMAGE_DEV.store(image.dev, Relaxed);
        PARENT_IMAGE_INO.store(image.ino, Relaxed);
    }
}

/// Whether `parent` still runs the program file recorded at start-up.
fn parent_runs_what_it_ran_at_start(parent: i32) -> bool {
    let ino = PARENT_IMAGE_INO.load(Relaxed);
    ino != 0
        && crate::os::proc::process_image(parent)
            .is_some_and(|now| now.ino == ino && now.dev == PARENT_IMAGE_DEV.load(Relaxed))
}

/// Who started this process, as far as can still be known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Starter {
    /// Forked (or cloned) from a process that runs the library.
    LibraryProcess,
    /// Cannot be asked any more, or cannot be told from a process that
    /// adopted this one: see [`starter`].
    Unknown,
    /// The parent that started this program, still its parent: whether it
    /// runs the library is the caller's to ask.
    Parent(i32),
}

/// Who started this program. [`Starter::Unknown`] when
/// * the parent is no longer the one at start-up: it exited, and this
///   process was handed to init or a subreaper;
/// * the parent is init (pid 1 of this pid namespace), or outside the
///   namespace: init also adopts every orphan, and a program whose parent
///   exited before the library started in it (`bash -c 'prog & exit 0'`)
///   has init as its parent from the start;
/// * this program started in a session that is neither its own nor its
///   parent's: a parent's fork keeps the parent's session and an own
///   `setsid` makes the child its leader, so a parent in another session
///   adopted it (a subreaper such as systemd's user manager);
/// * the parent runs another program file than at start-up, or could not
///   be asked then ([`note_parent_image`]): it has `exec`ed since (`job &
///   exec server`), and what ran at start-up, maybe the library, is gone.
///
/// What it cannot tell: a program adopted before its start-up by a
/// subreaper of its own session looks as if that subreaper started it; a
/// parent that `exec`ed before the library started here, or `exec`ed the
/// same file again, looks as if it had always run what it runs at exit.
pub fn starter() -> Starter {
    if made_by_fork() {
        return Starter::LibraryProcess;
    }
    let parent = sys::getppid();
    if parent <= 1 || parent != PARENT_AT_START.load(Relaxed) {
        return Starter::Unknown;
    }
    let session = SESSION_AT_START.load(Relaxed);
    if session != OWNER.load(Relaxed) && sys::getsid(parent) != Ok(session) {
        return Starter::Unknown;
    }
    if !parent_runs_what_it_ran_at_start(parent) {
        return Starter::Unknown;
    }
    Starter::Parent(parent)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_started_by_its_living_parent_names_that_parent() {
        adopt_at_start();
        note_parent_image();
        let parent = sys::getppid();
        let expected = if parent <= 1 {
            Starter::Unknown
        } else {
            Starter::Parent(parent)
        };
        assert_eq!(starter(), expected);
        // Another parent than the one at start: handed over, not asked.
        PARENT_AT_START.store(parent + 1, Relaxed);
        assert_eq!(starter(), Starter::Unknown);
        // A session neither its own nor the parent's: adopted.
        adopt_at_start();
        SESSION_AT_START.store(-7, Relaxed);
        if parent > 1 {
            assert_eq!(starter(), Starter::Unknown);
        }
        // The parent runs another program file than at start: it exec'd.
        adopt_at_start();
        note_parent_image();
        if parent > 1 {
            assert_eq!(starter(), Starter::Parent(parent));
            PARENT_IMAGE_INO.fetch_add(1, Relaxed);
            assert_eq!(starter(), Starter::Unknown);
            // Never recorded (or the parent could not be asked then).
            PARENT_IMAGE_INO.store(0, Relaxed);
            assert_eq!(starter(), Starter::Unknown);
        }
    }
}
