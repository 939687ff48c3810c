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

use core::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};

use super::catchup::{self, Stepped};
use super::identity;
use super::paying;
use crate::os::{self, proc, sys};

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
/// How often the thread looks whether it is the process's last thread, once
/// the program's main thread has ended (`pthread_exit`).
pub const ALONE_CHECK_NS: u64 = 5_000_000;
/// Stack a hook needs left to create the thread (`pthread_create` runs on
/// it): on an alternate signal stack with less room, the news waits.
pub const SPAWN_STACK_BYTES: usize = 4096;
/// The longest a retire waits for the thread, in all (it stops between two
/// VMAs, so it leaves in microseconds unless the machine is very busy).
const RETIRE_WAIT_NS: u64 = 200_000_000;
/// The longest news waits for a thread that is leaving to be gone before a
/// new one takes its stack.
const LEAVING_WAIT_NS: u64 = 10_000_000;
/// How long after `fork` returned in the parent the brk heap's growth
/// creates no thread. CPython >= 3.12 counts the process's threads right
/// then (it reads /proc/self/stat and warns that forking a multi-threaded
/// process may deadlock), through `fopen`, a small malloc: it sees the
/// heap's growth from before the fork (the sentinel is looked at by the
/// malloc after the growth). The growth stays news, held: the first malloc
/// after this time brings it. Other news (a large block, a raw map, a new
/// thread) is not held: a program that maps memory right after `fork`,
/// then waits, has it caught up.
pub const AFTER_FORK_QUIET_NS: u64 = 100_000_000;
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
/// Bumped to wake the sleeping thread (news, a retire, the main thread's end).
static WAKE: AtomicU32 = AtomicU32::new(0);
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
/// The thread now forking is the process's main thread (set in `fork`'s
/// prepare handler, read in the child).
static FORKING_FROM_MAIN: AtomicBool = AtomicBool::new(true);
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
static FAILURES: AtomicU32 = AtomicU32::new(0);

static STARTS: AtomicU64 = AtomicU64::new(0);
static RETIRES: AtomicU64 = AtomicU64::new(0);

// ---------------------------------------------------------------------------
// News

/// Memory no hook advised may have appeared since the thread last looked.
static NEW_MEMORY: AtomicBool = AtomicBool::new(false);
/// The program break past which the brk heap's growth is news
/// (`usize::MAX`: not watched).
static BRK_NEWS_AT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Turns the thread on for this process (`advise` over any allocator; the
/// engine calls it at start-up): `spawn` creates it, `glibc_threads` is
/// the address of glibc's thread count (0: unknown, `/proc` is read
/// instead), and with `watch_brk` the brk heap's growth is news.
pub fn enable(spawn: Spawn, glibc_threads: usize, watch_brk: bool) {
    GLIBC_THREADS.store(glibc_threads, Relaxed);
    SPAWN.store(spawn as usize, Relaxed);
    if watch_brk {
        BRK_NEWS_AT.store(
            os::program_break().saturating_add(BRK_NEWS_BYTES),
            Relaxed,
        );
    }
}

/// For the malloc family's hot path in `advise` over glibc: whether the brk
/// heap has grown past the point where it is news (two loads and a
/// compare; then [`note_brk_growth`]).
#[inline(always)]
pub fn brk_grew() -> bool {
    os::program_break_now() > BRK_NEWS_AT.load(Relaxed)
}

/// The brk heap grew by [`BRK_NEWS_BYTES`]: news, and the next such news is
/// as far again from here.
#[cold]
#[inline(never)]
pub fn note_brk_growth() {
    if STATE.load(Relaxed) != RUNNING
        && sys::monotonic_coarse_ns() < FORK_QUIET_UNTIL_NS.load(Relaxed)
    {
        // Held right after a fork (see `AFTER_FORK_QUIET_NS`): every malloc
        // looks again until then, and the first one after brings it.
        BRK_NEWS_AT.store(0, Relaxed);
        if !NEW_MEMORY.load(Relaxed) {
            NEW_MEMORY.store(true, SeqCst);
            catchup::hurry();
        }
        return;
    }
    BRK_NEWS_AT.store(
        os::program_break_now().saturating_add(BRK_NEWS_BYTES),
        Relaxed,
    );
    note_new_memory();
}

/// Something may have mapped memory no hook advises. Cheap while the
/// thread runs: a load, and a store, a clock read and a wake only when
/// the flag changes (at most once per pass). Without a thread, one is
/// created if it may be.
pub fn note_new_memory() {
    if !NEW_MEMORY.load(Relaxed) {
        // Sequentially consistent with the thread's leaving (see
        // `thread_main`): either it sees this news, or this sees it gone.
        NEW_MEMORY.store(true, SeqCst);
        let state = STATE.load(SeqCst);
        catchup::hurry();
        if state == RUNNING {
            wake_thread();
            if stale() {
                start_if_wanted();
            }
            return;
        }
    }
    // News already pending: a running thread takes it, unless it has not
    // looked around for long (a raw clone child's copy of "running", whose
    // own copy of the news flag may say pending for good).
    if STATE.load(Relaxed) != RUNNING || stale() {
        start_if_wanted();
    }
}

/// Whether a running thread has not looked around for a long time: it may
/// not exist in this process at all (a raw `clone` child's copy).
fn stale() -> bool {
    sys::monotonic_coarse_ns().saturating_sub(ALIVE_AT_NS.load(Relaxed)) > 4 * SETTLE_NS
}

fn wake_thread() {
    WAKE.fetch_add(1, Release);
    sys::futex_wake(&WAKE);
}

// ---------------------------------------------------------------------------
// Creating the thread

/// Creates the thread if news calls for one and this process may have it.
#[cold]
#[inline(never)]
fn start_if_wanted() {
    if SPAWN.load(Relaxed) == 0 || !duties_enabled() || super::engine::merging_stopped() {
        return;
    }
    if HOLD.load(SeqCst) != 0 || for_good_without() {
        return;
    }
    if sys::monotonic_coarse_ns() < RETRY_AT_NS.load(Relaxed) {
        return;
    }
    // A raw clone child owns a copy of its parent's statics (a thread that
    // is not its own included); a vfork child runs in its parent's memory
    // and must create nothing there.
    if identity::adopt_if_new_process() {
        super::engine::start_over();
    }
    if identity::shares_owners_memory() {
        return;
    }
    match STATE.load(Acquire) {
        NONE => {}
        // In the owner, a running thread that is slow to look around is
        // still running.
        _ => return,
    }
    if sys::alt_stack_room().is_some_and(|room| room < SPAWN_STACK_BYTES) {
        return;
    }
    match seccomp_filtered() {
        Some(false) => {}
        Some(true) => {
            WITHOUT.store(WITHOUT_SECCOMP, Relaxed);
            return;
        }
        // Not known now (the buffer is busy): the next news asks again.
        None => return,
    }
    // The last thread may be leaving just now (it saw no news): it is
    // gone in microseconds.
    if !previous_thread_gone(LEAVING_WAIT_NS) {
        return;
    }
    if STATE
        .compare_exchange(NONE, STARTING, SeqCst, Relaxed)
        .is_err()
    {
        return;
    }
    // A retire that began meanwhile (see `retire`: either it sees this
    // start, or this sees its hold; the main thread's end retires too).
    if HOLD.load(SeqCst) != 0 || for_good_without() {
        STATE.store(NONE, Release);
        return;
    }
    let now = sys::monotonic_coarse_ns();
    ACTIVITY_AT_NS.store(now, Relaxed);
    ALIVE_AT_NS.store(now, Relaxed);
 // SAFETY: `SPAWN` is only ever stored from a `Spawn` (a fn pointer of that
 // exact type) and read after the non-zero check of `start_if_wanted`.
    let spawn: Spawn = unsafe { core::mem::transmute::<usize, Spawn>(SPAWN.load(Relaxed)) };
    match spawn() {
        Ok(()) => {
            STARTS.fetch_add(1, Relaxed);
            FAILURES.store(0, Relaxed);
            // A refusal is over; a reason for good (the main thread may
            // have ended meanwhile) stays.
            let _ = WITHOUT.fetch_update(SeqCst, SeqCst, |w| {
                (w & 0xffff == WITHOUT_CREATE_FAILED).then_some(0)
            });
            let _ = STATE.compare_exchange(STARTING, RUNNING, Release, Relaxed);
        }
        Err(errno) => {
            // No retry loop: the next news after a back-off (1 s, doubling
            // up to 64 s) tries again.
            let failures = FAILURES.fetch_add(1, Relaxed).min(6);
            let _ = WITHOUT.fetch_update(SeqCst, SeqCst, |w| {
                (!matches!(w & 0xffff, WITHOUT_SECCOMP | WITHOUT_MAIN_ENDED))
                    .then_some(WITHOUT_CREATE_FAILED | (errno as u32) << 16)
            });
            RETRY_AT_NS.store(now.saturating_add(SETTLE_NS << failures), Relaxed);
            STATE.store(NONE, Release);
        }
    }
}

/// Whether this process does without its thread from now on: a seccomp
/// filter, or the program's main thread ended (see [`main_thread_ending`]).
fn for_good_without() -> bool {
    matches!(
        WITHOUT.load(SeqCst) & 0xffff,
        WITHOUT_SECCOMP | WITHOUT_MAIN_ENDED
    )
}

/// Whether the calling thread — whose filters the new thread would inherit,
/// and which makes the `clone` — runs under a seccomp filter (`Seccomp: 2`
/// in `/proc/thread-self/status`): one inherited from a parent, or
/// installed with a raw system call, may kill the process for `clone`, and
/// there is no asking it beforehand. `None` when it cannot
/// be told now; a status that cannot be read or lacks the line (a kernel
/// without seccomp says `0`) counts as filtered.
fn seccomp_filtered() -> Option<bool> {
    let mut held = proc::SHARED_LINES.try_take()?;
    let mode = proc::status_number(b"/proc/thread-self/status\0", held.bytes(), b"Seccomp:");
    Some(mode != Ok(Some(0)))
}

/// Whether the last thread (which may have left our code but not yet the
/// kernel) is gone; waits up to `wait_ns` for it. Forgets it once gone.
fn previous_thread_gone(wait_ns: u64) -> bool {
    let tid = TID.load(Acquire);
    if tid == 0 {
        return true;
    }
    if sys::thread_is_ours(tid) && !id_still_ours(tid) {
        // Gone long ago: a thread of the program has its id now.
        let _ = TID.compare_exchange(tid, 0, Relaxed, Relaxed);
        return true;
    }
    if !sys::wait_until_thread_gone(tid, wait_ns) {
        return false;
    }
    let _ = TID.compare_exchange(tid, 0, Relaxed, Relaxed);
    true
}

/// Whether live thread `tid` is the one of ours that had that id (it
/// started when ours did), as far as can be told: when either start time
/// is unknown, it may be.
fn id_still_ours(tid: i32) -> bool {
    let started = TID_STARTED.load(Acquire);
    started == 0 || proc::thread_start_time(Some(tid)).is_none_or(|now| now == started)
}

// ---------------------------------------------------------------------------
// The thread

/// The thread's body: steps while there is something to catch up or a
/// decision pending, then returns (its start routine then returns to
/// glibc). `step` runs one catch-up step, `second_duty` one poll of the
/// decisions (see [`second_duty_due`]).
pub fn thread_main(step: impl Fn() -> Option<Stepped>, second_duty: impl Fn()) {
    // What it opens (its reads of /proc) must never take the lowest free
    // descriptor of the program's table, which the program's next `open`
    // would have got: first of all. Should that fail, the thread may hold
    // copies of the program's descriptors (a pipe would not see its end
    // while it lives): it leaves at once, and news tries again later.
    let own_table = sys::own_empty_descriptor_table().is_ok();
    TID_STARTED.store(proc::thread_start_time(None).unwrap_or(0), Release);
    TID.store(sys::gettid(), Release);
    let _ = STATE.compare_exchange(STARTING, RUNNING, Release, Relaxed);
    if !own_table {
        RETRY_AT_NS.store(
            sys::monotonic_coarse_ns().saturating_add(SETTLE_NS),
            Relaxed,
        );
        let _ = STATE.compare_exchange(RUNNING, NONE, Release, Relaxed);
        let _ = STATE.compare_exchange(STOPPING, NONE, Release, Relaxed);
        sys::futex_wake(&STATE);
        return;
    }
    loop {
        let seen = WAKE.load(Acquire);
        let now = sys::monotonic_coarse_ns();
        ALIVE_AT_NS.store(now, Relaxed);
        if should_leave(now) {
            STATE.store(NONE, Release);
            break;
        }
        if catchup::due() {
            step_with_news(&step, now);
        }
        if second_duty_due() {
            second_duty();
        }
        if settled(sys::monotonic_coarse_ns()) {
            if stays_for_news() {
                continue;
            }
            break;
        }
        sys::futex_wait(&WAKE, seen, sleep_ns());
    }
    sys::futex_wake(&STATE);
}

/// Leaving because memory settled: the state says so first, and news that
/// came meanwhile keeps the thread after all (a hook that saw it running
/// created no other; sequentially consistent with `note_new_memory`:
/// either that hook sees it gone and creates a thread, or it sees the
/// news here).
fn stays_for_news() -> bool {
    STATE.store(NONE, SeqCst);
    (NEW_MEMORY.load(SeqCst) || paying::news_waiting())
        && HOLD.load(SeqCst) == 0
        && !for_good_without()
        && STATE
            .compare_exchange(NONE, RUNNING, SeqCst, Relaxed)
            .is_ok()
}

/// Whether the thread must leave now: asked to, catch-up or merging over
/// for good, the program's threads have all ended, or the program
/// restricted its main thread in a way this thread is not.
fn should_leave(now: u64) -> bool {
    STATE.load(Acquire) == STOPPING
        || !duties_enabled()
        || super::engine::merging_stopped()
        || alone()
        || restricted_behind_our_back(now)
}

/// When the thread last compared its restrictions with the main thread's.
static RESTRICTIONS_CHECKED_AT_NS: AtomicU64 = AtomicU64::new(0);
/// How often the thread compares them.
const RESTRICTIONS_CHECK_NS: u64 = 100_000_000;

/// Whether the main thread has restrictions this thread lacks (a seccomp
/// filter, `no_new_privs`, fewer capabilities, other user or group ids)
/// that it set with raw system calls, which no hook saw (a Go runtime, an
/// inline `syscall`; glibc's `setuid` and friends change every thread): this
/// thread, unrestricted in a process that restricted itself, would be a
/// lever out of the sandbox, and a seccomp filter may also forbid the
/// `clone` of the next one. So it leaves (at most every
/// [`RESTRICTIONS_CHECK_NS`] it looks, two reads of `/proc`); after a
/// filter, the library does without its thread for good, else a later
/// thread inherits the restrictions of the program's thread that creates
/// it. Only the main thread is compared (another thread's restrictions are
/// seen when it creates the next one).
fn restricted_behind_our_back(now: u64) -> bool {
    if now.saturating_sub(RESTRICTIONS_CHECKED_AT_NS.load(Relaxed)) < RESTRICTIONS_CHECK_NS {
        return false;
    }
    RESTRICTIONS_CHECKED_AT_NS.store(now, Relaxed);
    let (Some(main), Some(ours)) = (
        proc::restrictions_digest(b"/proc/self/status\0"),
        proc::restrictions_digest(b"/proc/thread-self/status\0"),
    ) else {
        return false;
    };
    if main == ours {
        return false;
    }
    if main_has_filter() {
        // The main thread's filter came after ours was created.
        WITHOUT.store(WITHOUT_SECCOMP, Relaxed);
    } else {
        RETRY_AT_NS.store(now.saturating_add(SETTLE_NS), Relaxed);
    }
    true
}

/// Whether the main thread runs under a seccomp filter (read on the
/// thread's own stack).
fn main_has_filter() -> bool {
    let mode = proc::status_number(b"/proc/self/status\0", &mut [0u8; 2048], b"Seccomp:");
    matches!(mode, Ok(Some(m)) if m != 0)
}

/// Whether the program asked a thread to stop (checked between two VMAs).
#[inline]
pub fn asked_to_stop() -> bool {
    STATE.load(Relaxed) == STOPPING
}

/// Whether a round of decisions (`core::paying`) must stop between two
/// VMAs: asked to, or the program's last thread has ended (the process
/// ends when this thread leaves: an exit is never delayed by a round).
pub fn round_must_stop() -> bool {
    asked_to_stop() || (MAIN_ENDED.load(Relaxed) && alone())
}

/// Whether this is the process's last thread glibc knows of.
fn alone() -> bool {
    match GLIBC_THREADS.load(Relaxed) {
        // Without glibc's count, only once the main thread is known to
        // have ended (a read of `/proc`).
        0 if !MAIN_ENDED.load(Relaxed) => false,
        0 => match proc::main_state_and_threads() {
            // The main thread that ended is a zombie, still counted.
            Some((state, threads)) => threads <= 1 || (threads == 2 && state == b'Z'),
            None => false,
        },
 // SAFETY: `count` is the address of glibc's `__nptl_nthreads` (an aligned int
 // in libc's data, mapped for the process's life), found at start-up.
        count => unsafe { core::ptr::read_volatile(count as *const i32) <= 1 },
    }
}

/// How long to sleep: until the next step is due, at most until memory may
/// count as settled, and at most [`ALONE_CHECK_NS`] once the main thread
/// ended, [`LONGEST_SLEEP_NS`] otherwise (the main thread may end in ways no
/// hook sees: the thread then outlives the program's last one by at most
/// that); at least a millisecond.
fn sleep_ns() -> u64 {
    let mut wait = catchup_sleep_ns().min(LONGEST_SLEEP_NS);
    if MAIN_ENDED.load(Relaxed) {
        wait = wait.min(ALONE_CHECK_NS);
    }
    // Waking at the end of the quiet time only matters if the thread may
    // then leave (no decision pending).
    if quiet() && !paying::pending() {
        let quiet_for = sys::monotonic_coarse_ns().saturating_sub(ACTIVITY_AT_NS.load(Relaxed));
        wait = wait.min(SETTLE_NS.saturating_sub(quiet_for));
    }
    wait.max(1_000_000)
}

/// No news, no pass half done, and the last pass found nothing changing.
fn quiet() -> bool {
    !NEW_MEMORY.load(Relaxed) && !catchup::pass_in_progress() && !LAST_PASS_CHANGING.load(Relaxed)
}

/// One step, with the news settled: news is taken when a pass begins (so
/// that the pass surely walks where it lies), and a pass that finds memory
/// changing counts as activity.
fn step_with_news(step: &impl Fn() -> Option<Stepped>, now: u64) {
    let took_news = !catchup::pass_in_progress() && NEW_MEMORY.swap(false, Relaxed);
    if took_news {
        ACTIVITY_AT_NS.store(now, Relaxed);
    }
    match step() {
        Some(stepped) if stepped.pass_finished => {
            // News that came during the pass hurried the schedule, which
            // the step then set anew (backed off, after a pass that found
            // nothing): it must not wait for the back-off. (Within a pass
            // the pace holds; the news waits for the next pass.)
            if NEW_MEMORY.load(Relaxed) {
                catchup::hurry();
            }
            LAST_PASS_CHANGING.store(stepped.changing, Relaxed);
            if stepped.changing {
                ACTIVITY_AT_NS.store(sys::monotonic_coarse_ns(), Relaxed);
            }
            // The brk heap as this pass left it is what later growth is
            // measured from (it may have shrunk).
            if BRK_NEWS_AT.load(Relaxed) != usize::MAX {
                BRK_NEWS_AT.store(
                    os::program_break_now().saturating_add(BRK_NEWS_BYTES),
                    Relaxed,
                );
            }
        }
        Some(_) => {}
        // Another thread holds the scan: the news waits for the next step.
        None => {
            if took_news {
                NEW_MEMORY.store(true, Relaxed);
            }
        }
    }
}

/// Whether memory has settled: no news, no pass half done, the last pass
/// found nothing changing, and nothing changed for [`SETTLE_NS`]; and no
/// decision is pending.
fn settled(now: u64) -> bool {
    quiet()
        && now.saturating_sub(ACTIVITY_AT_NS.load(Relaxed)) >= SETTLE_NS
        && !paying::pending()
}

/// Steps from the hooks (the `mmap` family's poll) where no thread can take
/// them: the process does without its thread.
pub fn hooks_step_instead() -> bool {
    WITHOUT.load(Relaxed) != 0 && STATE.load(Relaxed) == NONE
}

/// [`step_with_news`] for a hook's step (see [`hooks_step_instead`]).
pub fn hook_step(step: impl Fn() -> Option<Stepped>) {
    step_with_news(&step, sys::monotonic_coarse_ns());
}

// ---------------------------------------------------------------------------
// The second duty: the decisions about what ksmd is given (`core::paying`)

/// Whether the thread has any duty in this process.
fn duties_enabled() -> bool {
    catchup::enabled() || paying::enabled()
}

/// Whether the decisions want a poll now.
fn second_duty_due() -> bool {
    paying::due()
}

/// How long the catch-up lets the thread sleep, and the decisions: the
/// sooner of the two (a duty that is off asks for nothing).
fn catchup_sleep_ns() -> u64 {
    let catch_up = if catchup::enabled() {
        catchup::ns_until_due()
    } else {
        LONGEST_SLEEP_NS
    };
    if paying::pending() {
        catch_up.min(paying::ns_until_due())
    } else {
        catch_up
    }
}

/// A decision is pending (news for it, or a hook's poll found one waiting
/// with no thread): the thread is created if it may be. Where it runs, it
/// polls by itself; nothing is woken.
pub fn note_second_duty() {
    // A running thread that has not looked around for long may be a raw
    // `clone` child's copy of its parent's: then this process has none.
    if STATE.load(SeqCst) != RUNNING || stale() {
        start_if_wanted();
    }
}

// ---------------------------------------------------------------------------
// Retiring the thread

/// A call that needs the process without our thread is about to be made
/// (`unshare`, `setns`, `fork`, per-thread restrictions: see the module
/// doc): stops the thread, waits until the kernel no longer counts it
/// (bounded), and keeps any new one from being created until [`release`].
/// Returns whether [`release`] must be called (not in a `vfork` child,
/// which must leave its parent's state alone: its parent's thread is not
/// in the child's process).
pub fn retire() -> bool {
    // No thread in this process ever (`off`, `process`, catch-up off, or
    // before start-up): nothing to do, not even a system call.
    if SPAWN.load(Relaxed) == 0 {
        return false;
    }
    if identity::adopt_if_new_process() {
        super::engine::start_over();
    }
    if identity::shares_owners_memory() {
        return false;
    }
    // Sequentially consistent with `start_if_wanted` and `stays_for_news`:
    // a thread starting or staying either sees this hold or is seen here.
    HOLD.fetch_add(1, SeqCst);
    let deadline = sys::monotonic_ns().saturating_add(RETIRE_WAIT_NS);
    loop {
        let state = STATE.load(SeqCst);
        match state {
            RUNNING => {
                if STATE
                    .compare_exchange(RUNNING, STOPPING, SeqCst, Relaxed)
                    .is_ok()
                {
                    RETIRES.fetch_add(1, Relaxed);
                    wake_thread();
                }
                continue;
            }
            // Created by another of the program's threads: it first comes
            // into being.
            STARTING => sys::sched_yield(),
            STOPPING => {
                let left = deadline.saturating_sub(sys::monotonic_ns());
                sys::futex_wait(&STATE, STOPPING, left.min(1_000_000));
            }
            // Gone from our code; once gone from the kernel too, done (one
            // that stayed after all for news comes back as running).
            _ => {
                if previous_thread_gone(1_000_000) {
                    break;
                }
            }
        }
        if sys::monotonic_ns() >= deadline {
            break;
        }
    }
    true
}

/// `fork` is about to copy this process: [`retire`], and remember whether
/// the forking thread is the main one (in the child it is the main thread;
/// if it was another, its start routine will end it without `pthread_exit`,
/// which no hook sees).
pub fn before_fork() -> bool {
    if SPAWN.load(Relaxed) != 0 {
        FORKING_FROM_MAIN.store(sys::gettid() == sys::getpid(), Relaxed);
    }
    retire()
}

/// The call that needed the process without our thread is over.
pub fn release() {
    HOLD.fetch_sub(1, SeqCst);
}

/// The program's call that creates a task (a thread, a process) failed
/// for want of one (`EAGAIN`: `RLIMIT_NPROC`, a cgroup's `pids.max`,
/// `kernel.threads-max`), and our thread may hold the task it needed:
/// `call` is made again with our thread retired (none is created until it
/// returns), and its result counts. `None`: no thread of ours was there to
/// make room, and the failure stands.
pub fn again_without_thread<R>(call: impl FnOnce() -> R) -> Option<R> {
    // In a `vfork` child (the parent's memory, not its threads), the
    // parent's thread id would look gone and be forgotten.
    if SPAWN.load(Relaxed) == 0 || identity::shares_owners_memory() || !may_exist() {
        return None;
    }
    let held = retire();
    let result = call();
    if held {
        release();
    }
    Some(result)
}

/// Whether a thread of ours may be counted by the kernel now: starting,
/// running, stopping, or out of our code but not yet gone.
fn may_exist() -> bool {
    STATE.load(SeqCst) != NONE || !previous_thread_gone(0)
}

/// `fork` returned in the parent (`retired`: what [`before_fork`] said):
/// the brk heap's growth is held for [`AFTER_FORK_QUIET_NS`].
pub fn after_fork_in_parent(retired: bool) {
    if SPAWN.load(Relaxed) != 0 {
        FORK_QUIET_UNTIL_NS.store(
            sys::monotonic_coarse_ns().saturating_add(AFTER_FORK_QUIET_NS),
            Relaxed,
        );
    }
    if retired {
        release();
    }
}

/// The program's main thread is ending (`pthread_exit`, or the `exit`
/// system call): the process now ends when its last thread does, and glibc
/// then runs `exit` on that thread — the program's `atexit` handlers and
/// destructors, on its stack, with its signal mask. That must never be our
/// thread (a 256 KiB stack, every signal blocked): it is retired now and
/// none is created again in this process ([`Without::MainThreadEnded`];
/// the hooks take the steps). (Should it outlive a retire that timed out,
/// it looks every [`ALONE_CHECK_NS`] whether it is the last.)
pub fn main_thread_ending() {
    MAIN_ENDED.store(true, Relaxed);
    if SPAWN.load(Relaxed) == 0 {
        return;
    }
    do_without_for_main_ended();
    if retire() {
        release();
    }
    if STATE.load(Relaxed) == RUNNING {
        wake_thread();
    }
}

/// No thread from now on, because the main thread ended (a seccomp filter,
/// the stronger reason, stays the one given).
fn do_without_for_main_ended() {
    let _ = WITHOUT.fetch_update(SeqCst, SeqCst, |w| {
        (w & 0xffff != WITHOUT_SECCOMP).then_some(WITHOUT_MAIN_ENDED)
    });
}

/// In a forked child (and a raw `clone` child at its first look): no thread
/// of ours was copied, and the calling thread is the new main thread.
pub fn reset_in_child() {
    FORK_QUIET_UNTIL_NS.store(0, Relaxed);
    STATE.store(NONE, Relaxed);
    TID.store(0, Relaxed);
    TID_STARTED.store(0, Relaxed);
    HOLD.store(0, Relaxed);
    let forked_by_main = FORKING_FROM_MAIN.swap(true, Relaxed);
    MAIN_ENDED.store(!forked_by_main, Relaxed);
    // The one thread of a child forked by another thread ends by returning
    // from its start routine, unseen: as after the main thread's end.
    if WITHOUT.load(Relaxed) & 0xffff == WITHOUT_MAIN_ENDED {
        WITHOUT.store(0, Relaxed);
    }
    if !forked_by_main {
        do_without_for_main_ended();
    }
    LAST_PASS_CHANGING.store(false, Relaxed);
    STARTS.store(0, Relaxed);
    RETIRES.store(0, Relaxed);
}

// ---------------------------------------------------------------------------
// For the report

/// Why the process has no catch-up thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Without {
    /// A seccomp filter: creating a thread might kill the process.
    Seccomp,
    /// `pthread_create` refused, with this errno.
    CreateFailed(i32),
    /// The program's main thread ended (or, in a child forked by another
    /// thread, will end unseen): the thread might be the process's last,
    /// and glibc would run `exit` on it.
    MainThreadEnded,
}

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
