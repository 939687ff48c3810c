//! Every interposed function keeps glibc's results: tests/c/hooks.c calls
//! each hook (the malloc family, mmap/mmap64/mremap/munmap, pthread_create,
//! thrd_create) with valid and invalid arguments and prints what happened — return values,
//! errno, alignment, contents — never an address. Its output must be the same
//! without the preload and with it in each mode.
//!
//! tests/c/early_ctor.c makes one call from a shared library's constructor,
//! before the preload's own constructor: that hook is the first one called
//! and must start the library and still give glibc's result.
//!
//! `hooks bigblocks` looks at large glibc blocks through /proc/self/smaps: in
//! advise mode the whole mapping glibc made for each block is mergeable and
//! VMAs are not split per allocation; without the preload (and in `off`)
//! nothing is mergeable.

use common::*;
use ksmauto_testsupport as common;
use std::sync::OnceLock;

const MODES: [&str; 4] = ["default", "advise", "process", "off"];

const HOOKS: [&str; 16] = HOOK_NAMES;

fn hooks() -> std::path::PathBuf {
    compile_c("tests/c/hooks.c", &[])
}

fn run_ok(run: &Run, args: &[&str]) -> String {
    let out = run.output(hooks(), args);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "hooks {args:?} under {run:?} failed: {:?}\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    stdout
}

/// The program's output under plain glibc, computed once.
fn glibc_baseline() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| run_ok(&Run::without(), &[]))
}

/// Equality, reported as the list of lines that differ.
fn assert_same_output(expected: &str, actual: &str, what: &str) {
    if expected == actual {
        return;
    }
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    let mut diffs = Vec::new();
    for i in 0..e.len().max(a.len()) {
        let (x, y) = (
            e.get(i).copied().unwrap_or("<missing>"),
            a.get(i).copied().unwrap_or("<missing>"),
        );
        if x != y {
            diffs.push(format!("line {}: glibc `{x}` / preload `{y}`", i + 1));
        }
    }
    panic!(
        "{what}: output differs from glibc's in {} lines:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

#[test]
fn glibc_baseline_passes_every_check_the_program_makes() {
    let base = glibc_baseline();
    // The facts the brief pins down, as glibc 2.36 gives them.
    for line in [
        "malloc0 nonnull yes",
        "free_null errno 4242",
        "calloc_overflow null yes errno 12 enomem yes",
        "calloc_zero 4MiB yes",
        "reallocarray_overflow null yes errno 12 enomem yes block_intact yes",
        "realloc_null nonnull yes",
        "realloc_grow_10MiB kept yes",
        "realloc_shrink_200KiB kept yes",
        "posix_memalign_bad_align 3 rc 22 einval yes out_untouched yes errno 4242",
        "posix_memalign_bad_align 4 rc 22 einval yes out_untouched yes errno 4242",
        "posix_memalign_sizemax rc 12 enomem yes out_untouched yes",
        "posix_memalign 65536 307200 rc 0 aligned yes usable_ok yes",
        "mremap_fixed at_target yes kept yes tail_zero yes",
        "mmap_len0 failed yes errno 22 einval yes",
        "mremap_dontunmap ok yes moved yes kept yes old_empty yes",
        "pthread_join 2 ret 3001 sum 668467200 errno_at_start 0",
        "pthread_create_huge_stack rc 11 eagain yes never_started yes",
        "munmap rc 0 errno 0",
    ] {
        assert!(
            base.lines().any(|l| l == line),
            "glibc baseline lacks `{line}`:\n{base}"
        );
    }
    // Every yes/no check holds under plain glibc.
    let failed: Vec<&str> = base
        .lines()
        .filter(|l| l.split(' ').any(|w| w == "no"))
        .collect();
    assert!(
        failed.is_empty(),
        "checks failing even without the preload: {failed:#?}"
    );
    // A successful call never changes errno.
    let errno_lines: Vec<&str> = base
        .lines()
        .filter(|l| l.starts_with("errno_after "))
        .collect();
    assert!(errno_lines.len() >= 25, "{errno_lines:?}");
    for l in errno_lines {
        assert!(l.ends_with(" 4242"), "glibc changed errno: {l}");
    }
}

fn identical_to_glibc(mode: &str) {
    let got = run_ok(&Run::with(mode).env("KSMAUTO_STATS", "off"), &[]);
    assert_same_output(glibc_baseline(), &got, &format!("mode {mode}"));
}

#[test]
fn every_hook_returns_what_glibc_returns_in_default_mode() {
    identical_to_glibc("default");
}

#[test]
fn every_hook_returns_what_glibc_returns_in_advise_mode() {
    identical_to_glibc("advise");
}

#[test]
fn every_hook_returns_what_glibc_returns_in_process_mode() {
    identical_to_glibc("process");
}

#[test]
fn every_hook_returns_what_glibc_returns_in_off_mode() {
    identical_to_glibc("off");
}

/// The engines' extra work on the classes they take back out of merging
/// (stacks, executable memory) and on the smallest mappings stays invisible.
#[test]
fn every_hook_returns_what_glibc_returns_with_stack_and_exec_excluded_and_no_size_floor() {
    for mode in ["advise", "process"] {
        let run = Run::with(mode)
            .env("KSMAUTO_STATS", "off")
            .env("KSMAUTO_EXCLUDE", "stack,exec")
            .env("KSMAUTO_MIN_SIZE", "0");
        let got = run_ok(&run, &[]);
        assert_same_output(
            glibc_baseline(),
            &got,
            &format!("mode {mode}, KSMAUTO_EXCLUDE=stack,exec, KSMAUTO_MIN_SIZE=0"),
        );
    }
}

/// The program really goes through each interposed function: the library's
/// own call counters say so, in every mode.
#[test]
fn the_program_calls_every_interposed_hook_through_the_preload() {
    let dir = std::env::temp_dir().join(format!("ksmauto-hooks-stats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for mode in MODES {
        let path = dir.join(format!("{mode}.json"));
        let _ = std::fs::remove_file(&path);
        run_ok(
            &Run::with(mode)
                .env("KSMAUTO_STATS", path.to_str().unwrap())
                .env("KSMAUTO_STATS_FORMAT", "json"),
            &[],
        );
        let report = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{mode}: no stats file {}: {e}", path.display()));
        assert_eq!(
            report.lines().count(),
            1,
            "{mode}: one process, one report:\n{report}"
        );
        let v: serde_json::Value = serde_json::from_str(report.trim())
            .unwrap_or_else(|e| panic!("{mode}: bad JSON {e}: {report}"));
        let calls = v["calls"]
            .as_object()
            .unwrap_or_else(|| panic!("{mode}: no calls object: {report}"));
        for hook in HOOKS {
            let n = calls.get(hook).and_then(|n| n.as_u64()).unwrap_or(0);
            assert!(
                n > 0,
                "{mode}: hook {hook} was never called through the preload: {calls:?}"
            );
        }
        assert_eq!(
            calls.len(),
            HOOKS.len(),
            "{mode}: the library reports hooks this test does not know: {calls:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Advise mode's report matches what the program did: the program's
/// anonymous mmaps were advised, the shared and file mappings skipped, and no
/// madvise failed. (glibc's own mappings for big blocks are the catch-up
/// thread's: see `advise_mode_makes_each_big_block…`.)
#[test]
fn advise_mode_stats_show_advised_malloc_blocks_and_mappings_and_skipped_shared_and_file() {
    let Some(_ksmd) = ksmd() else { return };
    let path =
        std::env::temp_dir().join(format!("ksmauto-hooks-advise-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    run_ok(
        &Run::with("advise")
            .env("KSMAUTO_STATS", path.to_str().unwrap())
            .env("KSMAUTO_STATS_FORMAT", "json"),
        &[],
    );
    let report = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let v: serde_json::Value =
        serde_json::from_str(report.trim()).unwrap_or_else(|e| panic!("bad JSON {e}: {report}"));
    let n = |ptr: &str| {
        v.pointer(ptr)
            .and_then(|x| x.as_u64())
            .unwrap_or_else(|| panic!("no {ptr} in {report}"))
    };
    assert_eq!(v["mode"], "advise", "{report}");
    assert!(
        n("/advised/by_source/mmap/regions") > 0,
        "no anonymous mmap advised: {report}"
    );
    assert_eq!(n("/advised/by_source/api/regions"), 0, "{report}");
    // The shared anonymous and the file mappings (mmap and mmap64).
    assert!(n("/skipped/shared") >= 2, "{report}");
    assert!(n("/skipped/file") >= 2, "{report}");
    assert_eq!(n("/madvise_failures/total"), 0, "{report}");
}

// ---------------------------------------------------------------------------
// The very first call: made by a library constructor before the preload's own

/// tests/c/early_ctor.c: a shared library whose constructor makes the call
/// named by `$EARLY_CALL`, and a program linked with it. ld.so runs that
/// constructor before the preload's (nothing depends on the preload), so the
/// hook it reaches is the first one called and has to start the library.
fn early_ctor_program() -> std::path::PathBuf {
    let lib = compile_c("tests/c/early_ctor.c", &["-shared", "-fPIC", "-DEARLY_LIB"]);
    compile_c("tests/c/early_ctor.c", &[lib.to_str().unwrap()])
}

/// The outcome line for `call`, which must be the same without the preload
/// and in every mode; returns the failures as messages.
fn first_call_mismatches(call: &str) -> Vec<String> {
    let prog = early_ctor_program();
    let expected = format!("early {call} result ok errno 0\n");
    let base = Run::without().env("EARLY_CALL", call).output(&prog, &[]);
    assert!(
        base.status.success(),
        "{call}: {:?} {}",
        base.status,
        text(&base.stderr)
    );
    assert_eq!(
        text(&base.stdout),
        expected,
        "{call} fails even without the preload"
    );
    let mut failures = Vec::new();
    for mode in MODES {
        let out = Run::with(mode)
            .env("KSMAUTO_STATS", "off")
            .env("EARLY_CALL", call)
            .output(&prog, &[]);
        let got = text(&out.stdout);
        if !out.status.success() || got != expected {
            failures.push(format!(
                "mode {mode}: {call} as the first call gave `{}` (glibc: `{}`)",
                got.trim(),
                expected.trim()
            ));
        }
    }
    failures
}

#[test]
fn malloc_calloc_realloc_posix_memalign_valloc_pvalloc_and_mmap_work_as_the_first_call_from_a_library_constructor(
) {
    let calls = [
        "malloc",
        "calloc",
        "realloc",
        "reallocarray",
        "posix_memalign",
        "valloc",
        "pvalloc",
        "mmap",
        "mmap64",
    ];
    let failures: Vec<String> = calls
        .iter()
        .flat_map(|c| first_call_mismatches(c))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn aligned_alloc_and_memalign_work_as_the_first_call_from_a_library_constructor() {
    let failures: Vec<String> = ["aligned_alloc", "memalign"]
        .iter()
        .flat_map(|c| first_call_mismatches(c))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------
// Big blocks through /proc/self/smaps

const BLOCKS: [&str; 5] = [
    "malloc_1MiB",
    "calloc_3MiB",
    "posix_memalign_64KiB_1MiB",
    "realloc_before_1MiB",
    "realloc_8MiB",
];

struct BlockFacts {
    found: bool,
    covers: bool,
    mergeable: bool,
    vma_growth: i64,
    live_blocks: i64,
    /// Live blocks whose header page is a one-page VMA below the rest: the
    /// growing edge of a run of mappings growing downwards, left unadvised
    /// by design (docs/how-it-works.md, "Growth edges").
    growth_edges: i64,
}

fn yes(out: &str, key: &str) -> bool {
    match field(out, key).as_deref() {
        Some("yes") => true,
        Some("no") => false,
        other => panic!("`{key}`: expected yes/no, got {other:?} in:\n{out}"),
    }
}

fn bigblocks(run: Run) -> Vec<(&'static str, BlockFacts)> {
    let out = run_ok(&run, &["bigblocks"]);
    assert_eq!(
        field(&out, "realloc_8MiB kept").as_deref(),
        Some("yes"),
        "{out}"
    );
    BLOCKS
        .iter()
        .map(|&b| {
            let growth = field(&out, &format!("{b} vma_growth"))
                .unwrap_or_else(|| panic!("no vma_growth for {b}:\n{out}"));
            let nums: Vec<i64> = growth.split(' ').filter_map(|w| w.parse().ok()).collect();
            assert_eq!(nums.len(), 3, "{growth}");
            let facts = BlockFacts {
                found: yes(&out, &format!("{b} found")),
                covers: yes(&out, &format!("{b} covers")),
                mergeable: yes(&out, &format!("{b} mergeable")),
                vma_growth: nums[0],
                live_blocks: nums[1],
                growth_edges: nums[2],
            };
            (b, facts)
        })
        .collect()
}

#[test]
fn advise_mode_makes_each_big_block_mergeable_as_one_whole_vma_without_splitting() {
    // `mg` needs a kernel with KSM.
    let Some(_ksmd) = ksmd() else { return };
    for (block, f) in bigblocks(Run::with("advise").env("KSMAUTO_STATS", "off")) {
        assert!(
            f.found && f.covers,
            "{block}: no single VMA covers the block past its first page"
        );
        assert!(
            f.mergeable,
            "{block}: its VMA has no `mg` in VmFlags under KSMAUTO_MODE=advise"
        );
        // A block mapped right below another one is a run growing
        // downwards: its header page stays a VMA of its own, one per run.
        assert!(
            f.vma_growth <= f.live_blocks + f.growth_edges,
            "{block}: VMAs grew by {} with only {} live blocks and {} growth edges: \
             mappings were split",
            f.vma_growth,
            f.live_blocks,
            f.growth_edges
        );
    }
}

#[test]
fn control_without_the_preload_big_blocks_are_not_mergeable() {
    for (block, f) in bigblocks(Run::without()) {
        assert!(
            f.found && f.covers,
            "{block}: no single VMA covers the block past its first page"
        );
        assert!(
            !f.mergeable,
            "{block}: `mg` without the preload — is something else making memory mergeable?"
        );
        assert_eq!(f.growth_edges, 0, "{block}: a one-page VMA without the preload?");
        assert!(
            f.vma_growth <= f.live_blocks,
            "{block}: {} > {}",
            f.vma_growth,
            f.live_blocks
        );
    }
}

#[test]
fn off_mode_leaves_big_blocks_unmergeable() {
    for (block, f) in bigblocks(Run::with("off").env("KSMAUTO_STATS", "off")) {
        assert!(f.found && f.covers, "{block}");
        assert!(!f.mergeable, "{block}: `mg` under KSMAUTO_MODE=off");
    }
}

#[test]
fn process_mode_big_blocks_are_mergeable_too() {
    let Some(_ksmd) = ksmd() else { return };
    for (block, f) in bigblocks(Run::with("process").env("KSMAUTO_STATS", "off")) {
        assert!(f.found && f.covers, "{block}");
        assert!(f.mergeable, "{block}: no `mg` under KSMAUTO_MODE=process");
        assert_eq!(f.growth_edges, 0, "{block}: a one-page VMA without the preload?");
        assert!(
            f.vma_growth <= f.live_blocks,
            "{block}: {} > {}",
            f.vma_growth,
            f.live_blocks
        );
    }
}
