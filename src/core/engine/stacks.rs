//! Thread stacks: taken out of merging under both engines (the main
//! stack at start-up, new threads' stacks as they start or are created),
//! and under `advise` recorded so that no later advice covers them.

use super::advice::unmerge;
use super::catch_up::judge_vma;
use super::exclusion::record_exclusion;
use super::{page_range, settings, silenced, EXCLUDED};
use crate::core::catchup;
use crate::core::config::Mode;
use crate::core::paying::resting;
use crate::core::policy::{Range, SkipReason, VmaVerdict};
use crate::counters::counters;
use crate::os::proc::{read_lines, MapsLine, RegionClass, SHARED_LINES};

/// Whether new threads must take their stacks out of merging themselves.
pub fn threads_unmerge_their_stacks() -> bool {
    let s = settings();
    s.active == Mode::Process && s.config.exclude.stack && !silenced()
}

/// Called on a new thread, first thing, when
/// [`threads_unmerge_their_stacks`]: `stack` is that thread's stack (what
/// glibc mapped for it, without the guard). Exactly its pages are taken out
/// of merging: the VMA holding them may be larger (glibc's stacks without a
/// guard page coalesce with their neighbours, stacks included).
pub fn thread_stack_started(stack_addr: usize, stack_len: usize) {
    if silenced() {
        return;
    }
    let Some(stack) = page_range(stack_addr, stack_len) else {
        return;
    };
    counters().count_skipped(SkipReason::Stack);
    resting::forget(stack);
    let _ = unmerge(stack);
}

fn stacks_excluded() -> bool {
    let s = settings();
    s.config.exclude.stack && s.active != Mode::Off && !silenced()
}

/// Before `pthread_create` starts a thread on a stack the program supplied
/// (`pthread_attr_setstack`): a mapping of its own, or a buffer inside a
/// larger one (the malloc heap). Its pages are taken out of merging before
/// the thread runs, in both engines (whoever advised them: the `mmap` hook,
/// the catch-up's heap, merge-any), and under `advise` recorded, so that no
/// later advice covers them ([`exclude_stack`]). A buffer inside the heap
/// splits the heap's VMA around it; the rest of the heap stays mergeable.
pub fn thread_stack_supplied(stack_addr: usize, stack_len: usize) {
    if !stacks_excluded() || stack_len == 0 {
        return;
    }
    if let Some(stack) = page_range(stack_addr, stack_len) {
        exclude_stack(stack);
    }
}

/// After `pthread_create` started a thread on a stack glibc mapped for it,
/// under `advise`: `inside` is an address in that mapping (glibc's thread
/// descriptor, the `pthread_t`, lies at the top of its stack). The
/// catch-up tells a thread stack by the guard page glibc puts below it;
/// one it would not take for a stack (guard size 0, or larger than a guard,
/// also as the process's default) is excluded as the whole VMA holding it
/// (any neighbours it coalesced with are stacks too, or lose only their
/// merging). Under `process` the thread does this itself
/// ([`thread_stack_started`]).
pub fn thread_created(inside: usize) {
    if !stacks_excluded() || settings().active != Mode::Advise {
        return;
    }
    match catchup::judged_at(inside, &judge_vma) {
        Some((_, VmaVerdict::Skip(SkipReason::Stack) | VmaVerdict::NotOurs)) | None => {}
        Some((vma, _)) => exclude_stack(vma),
    }
}

/// Thread stacks are recorded only while fewer slots of the exclusion
/// table than this are in use: the rest stays for secrets, whose lack of
/// room stops all merging.
const STACK_SLOTS: usize = crate::core::exclusions::CAPACITY / 2;

/// Takes a thread stack out of merging now; under `advise` also records it
/// in the exclusion table, which every advice (the catch-up's included)
/// leaves out, while the table is less than half full ([`STACK_SLOTS`];
/// past that, a later pass may advise the stack again). Recorded first, then unmerged:
/// an advice racing it sees the table change and takes it back out.
fn exclude_stack(stack: Range) {
    counters().count_skipped(SkipReason::Stack);
    if settings().active == Mode::Advise && EXCLUDED.slots_in_use() < STACK_SLOTS {
        let _ = record_exclusion(stack);
    }
    resting::forget(stack);
    let _ = unmerge(stack);
}

pub(super) fn unmerge_main_stack() {
    let mut stack = None;
    let _ = read_lines(b"/proc/thread-self/maps\0", &SHARED_LINES, |line| {
        if let Some(vma) = MapsLine::parse(line) {
            if vma.class() == RegionClass::Stack && vma.name == b"[stack]" {
                stack = Some(Range {
                    start: vma.start,
                    end: vma.end,
                });
            }
        }
    });
    if let Some(range) = stack {
        counters().count_skipped(SkipReason::Stack);
        let _ = unmerge(range);
    }
}
