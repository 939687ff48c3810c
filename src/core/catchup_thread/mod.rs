//! The catch-up thread: the one thread the library ever has, only while
//! there is something to catch up (`advise` mode) or a decision about
//! what ksmd is given is pending (its second duty, both engines: see
//! "The second duty" below and `core::paying`).
//!
//! Memory no hook advises (the brk heap, glibc's arenas and large-block
//! mappings, raw `syscall(SYS_mmap)` memory) is found by the catch-up's
//! passes (`core::catchup`). They run here, off the program's threads: the
//! program's own calls are never looked at, never delayed and never the
//! trigger of a pass.
//!
//! **News** starts the thread: a glibc-mapped large block or the brk heap
//! grown by [`BRK_NEWS_BYTES`] (the malloc family's sentinel, see
//! [`brk_grew`]), a new program thread (its arena comes with its first
//! allocations), a raw `syscall` that maps memory. The process's start-up is
//! no news: a short command never gets a thread. The thread takes the
//! catch-up's paced steps, sleeping on a futex word in between, and leaves
//! once memory has settled: no news, and passes that found nothing new for
//! [`SETTLE_NS`]. A program idle for seconds has exactly its own threads.
//!
//! **What it never does**: take a descriptor number the program expects
//! (it has a descriptor table of its own, empty), run with a real-time
//! policy, take a signal (it runs with every signal blocked, except the
//! two glibc keeps for itself: `setuid` and friends change its
//! credentials with the program's), keep ids or restrictions the main
//! thread has left, stay where a single thread is promised ([`retire`]:
//! before `unshare`, `setns`, `fork`, and before the program restricts its
//! threads one by one — capabilities, `no_new_privs`, seccomp, Landlock —
//! it is stopped and waited for until the kernel no longer counts it;
//! after `fork`, the brk heap's growth is held in the parent for
//! [`AFTER_FORK_QUIET_NS`], while CPython counts threads), take a task the
//! program was refused for want of one ([`again_without_thread`]), be the
//! thread glibc ends the process from (once the main thread has ended —
//! `pthread_exit`, or in a child forked by another thread — glibc runs
//! `exit` on the last thread: the process does without ours from then on;
//! after an end no hook saw, it ends within [`LONGEST_SLEEP_NS`] of being
//! the last, and glibc ends the process from it), or exist in a process
//! that may not create one (a seccomp filter, which may kill for `clone`;
//! a refused `pthread_create`): the library then does without it
//! ([`Without`]), and the `mmap` hooks take the catch-up's steps as they
//! come ([`hooks_step_instead`]).
//!
//! The thread is created by the interposition layer (only it may call
//! `pthread_create`; handed over as a [`Spawn`] at start-up) from whichever
//! hook brought the news. Never allocates; every wait here is bounded.
//!
//! **The second duty** (`core::paying`, `KSMAUTO_REGISTER=paying`): the
//! same thread, under every promise above, also polls ksmd's clock and
//! takes the decisions' rounds. It stays while they are pending (regions
//! on probation or resting, news not looked at), sleeping between polls
//! (`paying::POLL_NS`); in `process` mode, where there is no catch-up, that
//! is its only reason to exist, and news of it is a large enough mapping
//! or a new thread ([`note_second_duty`]). After a retire the duty waits,
//! as the catch-up does, for the next news (or a hook's poll).
//!
//! One room per concern; the state they share (the thread's lifecycle, its
//! id, the hold of a retire, the news, why the process does without it)
//! is here, and so is what the report reads ([`stats`]):
//! * `news` — what the hooks tell the thread: memory no hook advised, the
//!   brk heap's growth, a decision pending; never waits, and creates the
//!   thread only through `spawn`;
//! * `spawn` — creating the thread when news calls for one and the process
//!   may have it (`start_if_wanted`), and knowing when the last one is gone
//!   from the kernel; its own setup once created (an empty descriptor
//!   table) is the first thing `run` does;
//! * `without` — the rules for doing without a thread (a seccomp filter, a
//!   refused `pthread_create` or `RLIMIT_NPROC`, the main thread's end,
//!   restrictions the main thread has and ours lacks) and the reason the
//!   report gives;
//! * `retiring` — stopping the thread and waiting until the kernel no longer
//!   counts it, before `fork`, `unshare`, `setns` and per-thread
//!   restrictions, and what a forked child starts from;
//! * `run` — the thread's body: the wait/wake loop, its duties (catch-up
//!   steps, `core::paying`'s polls), when it sleeps, when it leaves.
//!
//! No room creates a thread but `spawn`, and none takes a step but `run`
//! (for the thread, or for a hook where there is none).

use core::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed,
};

mod news;
mod retiring;
mod run;
mod spawn;
mod without;

pub use news::{
    brk_grew, brk_growth_held, enable, forget_brk_news, next_brk_news, note_brk_growth,
    note_new_memory, note_second_duty,
};
pub use retiring::{
    after_fork_in_parent, before_fork, release, reset_in_child, retire, AFTER_FORK_QUIET_NS,
};
pub use run::{asked_to_stop, hook_step, round_must_stop, thread_main, ALONE_CHECK_NS};
pub use spawn::SPAWN_STACK_BYTES;
pub use without::{again_without_thread, hooks_step_instead, main_thread_ending, Without};

/// Creates the catch-up thread (the interposition layer's: `pthread_create`
/// with every signal blocked, detached, on the library's own stack); its
/// start routine calls `engine::catch_up_thread_main`. `Err(errno)` if
/// none could be created.
pub type Spawn = fn() -> Result<(), i32>;

/// How far the brk heap must grow past the last look to be news: a
/// short-lived command's first small heap is not.
pub const BRK_NEWS_BYTES: usize = 1 << 20;
/// How long memory must have stayed as it was (no news, passes finding
/// nothing new) before the thread leaves.
pub const SETTLE_NS: u64 = 1_000_000_000;
/// The longest the thread sleeps at a time.
pub const LONGEST_SLEEP_NS: u64 = 1_000_000_000;
/// Until when (coarse ns) the brk heap's growth is held after a `fork` in
/// the parent.
static FORK_QUIET_UNTIL_NS: AtomicU64 = AtomicU64::new(0);

// The thread's lifecycle (`STATE`, also a futex word a retire waits on).
const NONE: u32 = 0;
/// A hook is creating it.
const STARTING: u32 = 1;
const RUNNING: u32 = 2;
/// A retire asked it to leave.
const STOPPING: u32 = 3;

static STATE: AtomicU32 = AtomicU32::new(NONE);
/// The thread id of the thread that runs, or ran last and may not be gone
/// from the kernel yet (0: none). Set by the thread itself.
static TID: AtomicI32 = AtomicI32::new(0);
/// When that thread started (clock ticks after boot, its `stat`; 0:
/// unknown): ids come round again, and a live thread with its id that
/// started at another time is one of the program's.
static TID_STARTED: AtomicU64 = AtomicU64::new(0);
/// Calls in progress that need the process without the thread (see
/// [`retire`]): no thread is created meanwhile.
static HOLD: AtomicU32 = AtomicU32::new(0);
/// The interposition layer's [`Spawn`], as an address (0: none; no thread).
static SPAWN: AtomicUsize = AtomicUsize::new(0);
/// Where glibc counts its threads (`__nptl_nthreads`; 0: not found).
static GLIBC_THREADS: AtomicUsize = AtomicUsize::new(0);
/// The program's main thread ended (`pthread_exit`), or may end unseen (in
/// a child forked by a thread other than the main one, whose start routine
/// returns to glibc): the process ends when its last thread does, and that
/// may soon be ours.
static MAIN_ENDED: AtomicBool = AtomicBool::new(false);
/// When the thread last looked around (coarse ns): a process whose state
/// says a thread runs but whose thread has not looked for long is a raw
/// `clone` child holding its parent's state.
static ALIVE_AT_NS: AtomicU64 = AtomicU64::new(0);
/// When memory last changed as far as the thread knows (news taken, a pass
/// that found something).
static ACTIVITY_AT_NS: AtomicU64 = AtomicU64::new(0);
/// The last finished pass found memory changing.
static LAST_PASS_CHANGING: AtomicBool = AtomicBool::new(false);

/// Why the library does without its thread (0: it does not); see
/// [`Without`]. The low 16 bits are the reason, the high 16 the errno of a
/// refused `pthread_create`.
static WITHOUT: AtomicU32 = AtomicU32::new(0);
const WITHOUT_SECCOMP: u32 = 1;
const WITHOUT_CREATE_FAILED: u32 = 2;
const WITHOUT_MAIN_ENDED: u32 = 3;
/// After a refused `pthread_create`: no new attempt before this time.
static RETRY_AT_NS: AtomicU64 = AtomicU64::new(0);

static STARTS: AtomicU64 = AtomicU64::new(0);
static RETIRES: AtomicU64 = AtomicU64::new(0);

/// Memory no hook advised may have appeared since the thread last looked.
static NEW_MEMORY: AtomicBool = AtomicBool::new(false);
/// The program break past which the brk heap's growth is news
/// (`usize::MAX`: not watched).
static BRK_NEWS_AT: AtomicUsize = AtomicUsize::new(usize::MAX);

// ---------------------------------------------------------------------------
// For the report

/// What the thread did, for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Times it was started.
    pub starts: u64,
    /// Times it was stopped for a call that needs it gone.
    pub retired: u64,
    /// Why the library did without it, if it did.
    pub without: Option<Without>,
}

pub fn stats() -> Stats {
    let without = WITHOUT.load(Relaxed);
    Stats {
        starts: STARTS.load(Relaxed),
        retired: RETIRES.load(Relaxed),
        without: match without & 0xffff {
            WITHOUT_SECCOMP => Some(Without::Seccomp),
            WITHOUT_CREATE_FAILED => Some(Without::CreateFailed((without >> 16) as i32)),
            WITHOUT_MAIN_ENDED => Some(Without::MainThreadEnded),
            _ => None,
        },
    }
}
