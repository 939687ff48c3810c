//! The `advise` engine's catch-up scan under pressure: tens of thousands of
//! VMAs (bounded work per step, nothing re-advised pass after pass), a
//! mapping replaced while the scan looks at it (nothing the policy rejects
//! is left mergeable), and hooks inside signal handlers on small alternate
//! stacks (no big buffer on the stack, the catch-up thread created there).

use common::*;
use ksmauto_testsupport as common;

/// `tests/c/many_vmas.c`: 60,000 VMAs no hook saw (one raw mmap split by
/// mprotect). Before the fix the remembered set (32k entries) overflowed,
/// so every scan re-advised the surplus — millions of regions — and one
/// scan ran inside one malloc for its whole length.
#[test]
fn sixty_thousand_vmas_are_advised_once_in_bounded_steps() {
    let prog = compile_c("tests/c/many_vmas.c", &[]);
    let run = Run::with("advise")
        .env("KSMAUTO_SCAN_INTERVAL", "1ms")
        .env("KSMAUTO_STATS", "off");
    let out = run_ok(&prog, &run, &["60000", "3", "100"]);
    eprintln!("{out}");
    let vmas = field_u64(&out, "vmas");
    let passes = field_u64(&out, "passes");
    let steps = field_u64(&out, "steps");
    let examined = field_u64(&out, "vmas_examined");
    let advised = field_u64(&out, "catchup_regions");
    assert!(vmas >= 60_000, "the program made only {vmas} VMAs");
    assert!(
        passes >= 3,
        "only {passes} catch-up passes completed:\n{out}"
    );
    // The first pass advises each VMA once; later passes find nothing new
    // (the heap may grow a little).
    assert!(
        (59_000..=60_000 + 1_000).contains(&advised),
        "{advised} regions advised by the scan in {passes} passes over {vmas} VMAs:\n{out}"
    );
    // No step examines more than 512 VMAs, so a pass takes many steps. (The
    // first pass may walk the region while the program still splits it: the
    // catch-up thread starts with the mapping's news.)
    assert!(
        examined >= (passes - 1) * 60_000 && examined <= steps * 512,
        "{examined} VMAs examined in {steps} steps over {passes} passes:\n{out}"
    );
}

/// `tests/c/remap_race.c`: a thread keeps replacing an anonymous mapping
/// with a private file mapping at the same address. Before the fix the scan
/// judged the anonymous one and then advised the file mapping (`mg` in its
/// VmFlags, a few times in every few thousand replacements).
#[test]
fn a_mapping_replaced_during_a_scan_is_never_left_mergeable() {
    let prog = compile_c("tests/c/remap_race.c", &[]);
    let file = std::env::temp_dir().join(format!("ksmauto-remap-{}", std::process::id()));
    let run = Run::with("advise")
        .env("KSMAUTO_SCAN_INTERVAL", "1ms")
        .env("KSMAUTO_STATS", "off");
    let out = run_ok(&prog, &run, &["10000", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    eprintln!("{out}");
    assert_eq!(field_u64(&out, "iterations"), 10_000);
    assert_eq!(
        field_u64(&out, "mergeable_file_sightings"),
        0,
        "a private file mapping was left mergeable:\n{out}"
    );
}

/// `tests/c/sigaltstack_alloc.c`: a signal handler that allocates, on a 4 KiB
/// and an 8 KiB alternate stack with a guard page below. Before the fix the
/// catch-up scan put an 8 KiB line buffer on the stack and overflowed both.
/// The handler's large block is news: where the stack has room, the
/// catch-up thread is created from inside the handler, on that stack.
#[test]
fn signal_handlers_on_small_alternate_stacks_can_allocate() {
    let prog = compile_c("tests/c/sigaltstack_alloc.c", &[]);
    let raises = "100";
    for size in [4096u64, 8192] {
        let args = [&size.to_string()[..], raises];
        let plain = Run::without().output(&prog, &args);
        if !plain.status.success() {
            eprintln!(
                "\n!!!!! SKIPPED: {size}-byte alternate stack: glibc alone does not survive it here ({:?}; the kernel's signal frame is too big on this CPU) !!!!!\n",
                plain.status
            );
            continue;
        }
        let glibc_used = field_u64(&text(&plain.stdout), "altstack_used");
        let run = Run::with("advise")
            .env("KSMAUTO_SCAN_INTERVAL", "1ms")
            .env("KSMAUTO_STATS", "off");
        let out = run.output(&prog, &args);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{size}-byte alternate stack (glibc alone uses {glibc_used} bytes): {:?}\n{stdout}{}",
            out.status,
            text(&out.stderr)
        );
        eprintln!(
            "{size}: glibc alone {glibc_used} bytes; {}",
            stdout.replace('\n', " ")
        );
        assert_eq!(field(&stdout, "handled").as_deref(), Some(raises));
        // Where the handler leaves `pthread_create` its room, the catch-up
        // thread was created inside a handler (the main thread made no
        // news).
        if glibc_used + 6 * 1024 < size {
            assert!(
                field_u64(&stdout, "thread_starts") > 0,
                "no catch-up thread was created inside a handler:\n{stdout}"
            );
        }
    }
}
