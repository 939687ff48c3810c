//! What the hooks tell the catch-up (`core::catchup`) and its thread
//! (`core::catchup_thread`): news of memory no hook advised, and the
//! every-so-many-calls poll where the process has no thread of ours.

use core::sync::atomic::Ordering::Relaxed;

use super::advice::advise_marking;
use super::exec::take_back_merge_any;
use super::lifecycle::start_over;
use super::{config, settings, silenced, MERGING_STOPPED};
use crate::core::catchup;
use crate::core::catchup_thread;
use crate::core::config::Mode;
use crate::core::exec_guard;
use crate::core::identity;
use crate::core::paying;
use crate::core::policy::{self, Range, VmaVerdict};
use crate::os::proc::MapsLine;
use ksmauto_contract::Source;

/// What the interposition layer gives the engine to run a catch-up thread
/// with (see `catchup_thread::enable`).
pub struct ThreadSupport {
    pub spawn: catchup_thread::Spawn,
    /// The address of glibc's count of its threads (0: not found).
    pub glibc_threads: usize,
}

pub(super) fn judge_vma(vma: &MapsLine, below: Option<&MapsLine>) -> VmaVerdict {
    // The library's own zero-fill mapping (counters, tables) is never ours
    // to merge: it is written constantly.
    let own = crate::counters::own_bss_address();
    if vma.start <= own && own < vma.end {
        return VmaVerdict::NotOurs;
    }
    policy::judge_vma(vma, below, config())
}

fn advise_vma(range: Range) -> bool {
    let (result, marked) = advise_marking(range, Source::CatchUp);
    // What the catch-up gives ksmd (memory no hook saw arrive: the brk
    // heap, glibc's own mappings) is news for the decisions as a hook's
    // advice is; what it left out (resting, excluded) is not.
    if marked > 0 {
        note_registered(marked);
    }
    result.is_ok()
}

/// Called by hooks every so many calls: where the process does without its
/// catch-up thread (`catchup_thread::hooks_step_instead`), runs a catch-up
/// step when due (never after `mlockall`: there is nothing left to
/// advise); and takes back merge-any lent to an `exec` that failed.
#[inline]
pub fn poll_catch_up() {
    if silenced() {
        return;
    }
    if exec_guard::any_lent() {
        take_back_merge_any();
    }
    if paying::pending() {
        // Decisions wait (the thread left for a fork, or never came).
        catchup_thread::note_second_duty();
    }
    if !MERGING_STOPPED.load(Relaxed) && catchup_thread::hooks_step_instead() && catchup::due() {
        // A raw clone child owns a copy of the parent's scan state and
        // counters: start over before its first step (a getpid per step);
        // a vfork child runs in its parent's memory and leaves it alone.
        if identity::adopt_if_new_process() {
            start_over();
        }
        if identity::shares_owners_memory() {
            return;
        }
        catchup_thread::hook_step(|| catchup::poll(&judge_vma, &advise_vma));
    }
}

/// Memory no hook advised may have appeared: a glibc-mapped block (from the
/// malloc family), a new thread (and with it, a malloc arena), a raw
/// `syscall(SYS_mmap)`. The catch-up thread takes it from here.
#[inline]
pub fn note_new_memory() {
    if silenced() {
        return;
    }
    paying::note_news();
    if catchup::enabled() {
        catchup_thread::note_new_memory();
    } else if paying::enabled() {
        catchup_thread::note_second_duty();
    }
}

/// The malloc family's brk sentinel (only its wrappers that watch glibc's
/// malloc ask: see `start`): whether the brk heap grew enough to be news.
#[inline(always)]
pub fn brk_grew() -> bool {
    catchup_thread::brk_grew()
}

/// [`brk_grew`] said so.
#[cold]
#[inline(never)]
pub fn note_brk_growth() {
    if silenced() {
        return;
    }
    if catchup::enabled() {
        catchup_thread::note_brk_growth();
    } else if !catchup_thread::brk_growth_held() {
        // `process` mode deciding what pays: merge-any gave the growth to
        // ksmd; it is news for the decisions only, once enough of it came
        // (held right after a fork as the catch-up's is).
        catchup_thread::next_brk_news();
        note_registered(catchup_thread::BRK_NEWS_BYTES);
    }
}

/// A malloc-family block of `len` bytes may be one glibc mapped on its own
/// (no hook saw it): news for the catch-up, which must advise it; in
/// `process` mode deciding what pays, where merge-any registered it, news
/// for the decisions once enough of it came, as a hook's mapping is.
pub fn note_glibc_block(len: usize) {
    if silenced() {
        return;
    }
    if catchup::enabled() {
        note_new_memory();
    } else {
        note_registered(len);
    }
}

/// The catch-up thread's body (its start routine calls it): the catch-up's
/// steps, and the decisions about what pays (`core::paying`).
pub fn catch_up_thread_main() {
    catchup_thread::thread_main(
        || catchup::thread_step(&judge_vma, &advise_vma),
        || paying::step(&judge_vma, decisions_permitted),
    );
}

/// Whether the decisions may change what ksmd is given now: not once
/// merging stopped or the library fell silent, and under `process` not
/// while merge-any is lent to an `exec` or after the program switched it
/// off (then for good).
fn decisions_permitted() -> bool {
    if MERGING_STOPPED.load(Relaxed) || silenced() {
        paying::disable();
        return false;
    }
    if settings().active != Mode::Process {
        return true;
    }
    if exec_guard::program_switched_off() {
        paying::disable();
        return false;
    }
    !exec_guard::any_lent()
}

/// `len` bytes were given to ksmd (by the hook's advice, or by merge-any):
/// news for the decisions about what pays, once enough of it.
pub(super) fn note_registered(len: usize) {
    if paying::note_mapped(len) {
        catchup_thread::note_second_duty();
    }
}
