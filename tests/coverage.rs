//! Coverage of the `advise` engine: for every way a program can come by
//! private anonymous memory, the pages KSM merges under `advise` reach at
//! least 95% of what the kernel's process-wide merge (`process`) achieves for
//! the same program, and every page reads back what was written after the
//! merge was broken. The program is tests/c/coverage.c.

use common::*;
use ksmauto_testsupport as common;

const PAGES: &str = "1024";

fn merged(path: &str, mode: &str) -> u64 {
    merged_with(path, Run::with(mode))
}

/// Runs the coverage program for `path`; returns the pages KSM merged.
fn merged_with(path: &str, run: Run) -> u64 {
    let mode = format!("{:?}", run.env);
    let prog = compile_c("tests/c/coverage.c", &[]);
    let out = run
        .env("KSMAUTO_STATS", "off")
        .output(&prog, &[path, PAGES]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{path} under {mode}: {:?}\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(
        field(&stdout, "integrity").as_deref(),
        Some("ok"),
        "{path} under {mode}: {stdout}"
    );
    assert_eq!(
        field_u64(&stdout, "pages"),
        PAGES.parse::<u64>().unwrap(),
        "{path}: {stdout}"
    );
    field_u64(&stdout, "merged")
}

fn advise_reaches_process(path: &str) {
    let Some(_ksmd) = ksmd() else { return };
    let process = merged(path, "process");
    let advise = merged(path, "advise");
    let dup: u64 = PAGES.parse().unwrap();
    eprintln!("{path}: advise {advise}, process {process}, duplicate pages {dup}");
    assert!(
        process * 95 / 100 >= dup * 90 / 100,
        "{path}: process mode merged only {process} of {dup}"
    );
    assert!(
        advise * 100 >= process * 95,
        "{path}: advise merged {advise}, under 95% of process mode's {process}"
    );
}

#[test]
fn mmap_through_libc() {
    advise_reaches_process("mmap");
}

#[test]
fn prot_none_reservation_committed_with_mprotect() {
    advise_reaches_process("reserve");
}

#[test]
fn large_malloc_blocks_in_glibcs_own_mappings() {
    advise_reaches_process("malloc_large");
}

#[test]
fn small_objects_on_the_brk_heap() {
    advise_reaches_process("brk");
}

#[test]
fn small_objects_on_a_thread_arena() {
    advise_reaches_process("arena");
}

#[test]
fn raw_syscall_mmap() {
    advise_reaches_process("syscall");
}

#[test]
fn memory_of_a_forked_child() {
    advise_reaches_process("fork");
}

#[test]
fn memory_of_an_execd_child() {
    advise_reaches_process("exec");
}

/// Memory mapped with a raw system call (through libc's `syscall`: news
/// for the catch-up) by a program that then waits and reads only in raw
/// system calls — it makes no other call the library sees — is reached by
/// the library's catch-up thread. (Before issue 19 the catch-up ran in the
/// program's own calls and needed an opt-in thread to reach it.)
#[test]
fn a_program_that_waits_only_in_raw_system_calls_is_covered() {
    let Some(_ksmd) = ksmd() else { return };
    let advise = merged_with("quiet", Run::with("advise"));
    let process = merged("quiet", "process");
    eprintln!("quiet: advise {advise}, process {process}");
    assert!(
        advise * 100 >= process * 95,
        "advise merged {advise} pages of the quiet program, under 95% of process mode's {process}"
    );
}
