//! The library under other allocators: glibc, jemalloc, tcmalloc and
//! mimalloc, each preloaded before and after the library (`ksmauto run`
//! appends the library to an existing LD_PRELOAD, so "allocator first" is
//! what a user of `LD_PRELOAD=libjemalloc.so.2 ksmauto run …` gets), with
//! and without `TCMALLOC_SKIP_SBRK=1` (tcmalloc then maps every span, so
//! nothing readable lies before its blocks), in advise and process modes.
//!
//! tests/c/allocators.c uses the whole malloc family and checks every
//! block's contents. The library must forward each call to the allocator
//! that really serves the program — never hand a block to another
//! allocator's `realloc` (jemalloc and tcmalloc have no `reallocarray`, so
//! the next `reallocarray` after them is glibc's) — and read glibc chunk
//! headers only when glibc serves (tcmalloc and mimalloc export
//! `__libc_malloc` as an alias of their own `malloc`).
//!
//! tests/c/tiny_allocator.c, a malloc replacement with only malloc, free,
//! malloc_usable_size and one aligned allocator, shows that every missing
//! function is built from the serving allocator's own: it exits with status
//! 99 when handed a block it did not make.
//!
//! Needs Debian's libjemalloc2, libgoogle-perftools4 and libmimalloc2.0
//! (scripts/test installs them); without them these tests fail, they are not
//! skipped.

use common::*;
use ksmauto_testsupport as common;
use std::path::{Path, PathBuf};

const LIBS: &str = "/usr/lib/x86_64-linux-gnu";

struct Allocator {
    name: &'static str,
    /// The shared object to preload; `None` for glibc (nothing to preload).
    file: Option<&'static str>,
    /// The Debian package with `file`, or for tests/c/tiny_allocator.c the
    /// compiler flags it is built with.
    package: &'static str,
    /// Whether it defines `reallocarray` itself.
    has_reallocarray: bool,
    /// Whether it defines `calloc` and `realloc` itself.
    has_calloc_and_realloc: bool,
}

const TINY: &str = "tests/c/tiny_allocator.c";

const JEMALLOC: Allocator = Allocator {
    name: "jemalloc",
    file: Some("libjemalloc.so.2"),
    package: "libjemalloc2",
    has_reallocarray: false,
    has_calloc_and_realloc: true,
};
const TCMALLOC: Allocator = Allocator {
    name: "tcmalloc",
    file: Some("libtcmalloc_minimal.so.4"),
    package: "libgoogle-perftools4",
    has_reallocarray: false,
    has_calloc_and_realloc: true,
};
const MIMALLOC: Allocator = Allocator {
    name: "mimalloc",
    file: Some("libmimalloc.so.2"),
    package: "libmimalloc2.0",
    has_reallocarray: true,
    has_calloc_and_realloc: true,
};
/// Only malloc, free, malloc_usable_size and posix_memalign: the library
/// builds calloc, realloc, reallocarray, memalign, aligned_alloc, valloc and
/// pvalloc from them.
const TINY_POSIX_MEMALIGN: Allocator = Allocator {
    name: "tiny (posix_memalign)",
    file: Some(TINY),
    package: "",
    has_reallocarray: false,
    has_calloc_and_realloc: false,
};
/// Only malloc, free, malloc_usable_size and aligned_alloc.
const TINY_ALIGNED_ALLOC: Allocator = Allocator {
    name: "tiny (aligned_alloc)",
    file: Some(TINY),
    package: "-DTINY_ALIGNED_ALLOC",
    has_reallocarray: false,
    has_calloc_and_realloc: false,
};
/// Like [`TINY_POSIX_MEMALIGN`], with only a SysV hash table (no GNU one):
/// found by hand through it when a non-PIE program's PLT entries hide it
/// from `dlsym(RTLD_DEFAULT)`.
const TINY_SYSV_HASH: Allocator = Allocator {
    name: "tiny (SysV hash table)",
    file: Some(TINY),
    package: "-Wl,--hash-style=sysv",
    has_reallocarray: false,
    has_calloc_and_realloc: false,
};
/// The whole family, and `__libc_malloc` as an alias of its `malloc` (as
/// tcmalloc and mimalloc have), with inaccessible pages right before its big
/// blocks: reading "a glibc chunk header" there crashes.
const TINY_COMPLETE: Allocator = Allocator {
    name: "tiny (complete)",
    file: Some(TINY),
    package: "-DTINY_COMPLETE",
    has_reallocarray: true,
    has_calloc_and_realloc: true,
};
const GLIBC: Allocator = Allocator {
    name: "glibc",
    file: None,
    package: "libc6",
    has_reallocarray: true,
    has_calloc_and_realloc: true,
};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Order {
    LibraryFirst,
    AllocatorFirst,
}

/// One run: preload order, `TCMALLOC_SKIP_SBRK=1` or not, mode, and whether
/// the program is built without PIE: it then has a canonical PLT entry for
/// each family function whose address it takes, which `dlsym(RTLD_DEFAULT)`
/// returns instead of the allocator's definition.
#[derive(Clone, Copy, Debug)]
struct Case {
    order: Order,
    skip_sbrk: bool,
    mode: &'static str,
    non_pie: bool,
}

impl Case {
    fn describe(&self, a: &Allocator) -> String {
        format!(
            "{} {:?}{} {}{}",
            a.name,
            self.order,
            if self.skip_sbrk {
                " TCMALLOC_SKIP_SBRK=1"
            } else {
                ""
            },
            self.mode,
            if self.non_pie { " non-PIE" } else { "" }
        )
    }
}

/// Both orders (one for glibc), with and without TCMALLOC_SKIP_SBRK=1
/// (meaningless to tiny_allocator.c), advise and process modes, all with a
/// PIE program; then the non-PIE program in advise mode, in both orders.
fn cases(a: &Allocator) -> Vec<Case> {
    let orders: &[Order] = if a.file.is_some() {
        &[Order::LibraryFirst, Order::AllocatorFirst]
    } else {
        &[Order::LibraryFirst]
    };
    let skip_sbrk: &[bool] = if a.file == Some(TINY) {
        &[false]
    } else {
        &[false, true]
    };
    let mut all = Vec::new();
    for &order in orders {
        for &skip_sbrk in skip_sbrk {
            for mode in ["advise", "process"] {
                all.push(Case {
                    order,
                    skip_sbrk,
                    mode,
                    non_pie: false,
                });
            }
        }
    }
    for &order in orders {
        all.push(Case {
            order,
            skip_sbrk: *skip_sbrk.last().unwrap(),
            mode: "advise",
            non_pie: true,
        });
    }
    all
}

fn program(non_pie: bool) -> PathBuf {
    if non_pie {
        compile_c("tests/c/allocators.c", &["-no-pie", "-fno-pie"])
    } else {
        compile_c("tests/c/allocators.c", &[])
    }
}

fn allocator_path(a: &Allocator) -> Option<PathBuf> {
    let file = a.file?;
    if file == TINY {
        let mut flags = vec!["-shared", "-fPIC"];
        if !a.package.is_empty() {
            flags.push(a.package);
        }
        return Some(compile_c(TINY, &flags));
    }
    let path = Path::new(LIBS).join(file);
    assert!(
        path.exists(),
        "{} not found: run `apt-get install {}` (scripts/test does)",
        path.display(),
        a.package
    );
    Some(path)
}

fn ksm_available() -> bool {
    if Path::new("/sys/kernel/mm/ksm/run").exists() {
        return true;
    }
    assert_ne!(
        std::env::var("KSMAUTO_REQUIRE_KSM").as_deref(),
        Ok("1"),
        "KSM is required (KSMAUTO_REQUIRE_KSM=1) but this kernel has none"
    );
    eprintln!("\n!!!!! SKIPPED: advised-region checks need a kernel with KSM !!!!!\n");
    false
}

/// One run of the program; `Err` describes what went wrong.
fn run_case(a: &Allocator, case: Case) -> Result<serde_json::Value, String> {
    let preload = match (allocator_path(a), case.order) {
        (None, _) => lib().display().to_string(),
        (Some(al), Order::LibraryFirst) => format!("{} {}", lib().display(), al.display()),
        (Some(al), Order::AllocatorFirst) => format!("{} {}", al.display(), lib().display()),
    };
    let stats = std::env::temp_dir().join(format!(
        "ksmauto-allocators-{}-{:?}.json",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_file(&stats);
    let mut run = Run::without()
        .env("LD_PRELOAD", &preload)
        .env("KSMAUTO_MODE", case.mode)
        .env("KSMAUTO_STATS", stats.to_str().unwrap())
        .env("KSMAUTO_STATS_FORMAT", "json");
    if case.skip_sbrk {
        run = run.env("TCMALLOC_SKIP_SBRK", "1");
    }
    // The program takes about a second; a hang (a deadlock in start-up) is
    // a failure, not a stuck test.
    run.timeout = std::time::Duration::from_secs(60);
    let out = run.output(program(case.non_pie), &[]);
    let stdout = text(&out.stdout);
    let report = std::fs::read_to_string(&stats).unwrap_or_default();
    let _ = std::fs::remove_file(&stats);
    if !out.status.success() || field(&stdout, "errors").as_deref() != Some("0") {
        use std::os::unix::process::ExitStatusExt;
        let how = match out.status.signal() {
            Some(libc::SIGSEGV) => "crashed with SIGSEGV".to_string(),
            Some(libc::SIGKILL) => "hung (killed after 60 s)".to_string(),
            Some(sig) => format!("killed by signal {sig}"),
            None => format!("exit status {:?}", out.status.code()),
        };
        let tail: Vec<&str> = stdout.lines().rev().take(5).collect();
        return Err(format!(
            "{how}; last output {tail:?}; stderr {:?}",
            text(&out.stderr)
        ));
    }
    serde_json::from_str(report.trim()).map_err(|e| format!("bad stats JSON ({e}): {report:?}"))
}

fn n(v: &serde_json::Value, ptr: &str) -> u64 {
    v.pointer(ptr)
        .and_then(|x| x.as_u64())
        .unwrap_or_else(|| panic!("no {ptr} in {v}"))
}

/// Runs every case of `a`, checks each one's report, and fails listing every
/// case that went wrong (not just the first).
fn matrix(a: &Allocator) {
    let ksm = ksm_available();
    let mut failures = Vec::new();
    for case in cases(a) {
        let name = case.describe(a);
        let v = match run_case(a, case) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let mut check = |ok: bool, what: &str| {
            if !ok {
                failures.push(format!("{name}: {what}: {v}"));
            }
        };
        if ksm {
            check(v["mode"] == case.mode, "ran in another mode");
        }
        // No block is ever looked into (the library reads no chunk
        // header): glibc's own mappings are found by the catch-up scan, the
        // tiny allocator exits 99 if handed a block it did not make.
        if case.order == Order::AllocatorFirst {
            // The program's malloc is the allocator's own; only what it
            // lacks reaches the library, which must keep it there.
            check(
                n(&v, "/calls/malloc") == 0,
                "malloc went through the library",
            );
            check(
                (n(&v, "/calls/reallocarray") > 0) != a.has_reallocarray,
                "reallocarray did not reach the library exactly when the allocator lacks it",
            );
            if !a.has_calloc_and_realloc {
                check(
                    n(&v, "/calls/calloc") > 0 && n(&v, "/calls/realloc") > 0,
                    "calloc and realloc, which tiny lacks, did not reach the library",
                );
            }
        } else {
            check(n(&v, "/calls/reallocarray") > 0, "reallocarray not hooked");
            check(n(&v, "/calls/pvalloc") > 0, "pvalloc not hooked");
        }
        check(n(&v, "/madvise_failures/total") == 0, "madvise failed");
    }
    assert!(
        failures.is_empty(),
        "{} of the {} cases failed:\n{}",
        failures.len(),
        a.name,
        failures.join("\n")
    );
}

#[test]
fn glibc_serves_every_case() {
    matrix(&GLIBC);
}

#[test]
fn jemalloc_preloaded_before_or_after_the_library() {
    matrix(&JEMALLOC);
}

#[test]
fn tcmalloc_preloaded_before_or_after_the_library() {
    matrix(&TCMALLOC);
}

#[test]
fn mimalloc_preloaded_before_or_after_the_library() {
    matrix(&MIMALLOC);
}

/// tests/c/tiny_allocator.c exits with status 99 when handed a block it did
/// not make: every function it lacks must be built from its own.
#[test]
fn an_allocator_with_only_malloc_free_and_posix_memalign() {
    matrix(&TINY_POSIX_MEMALIGN);
}

#[test]
fn an_allocator_with_only_malloc_free_and_aligned_alloc() {
    matrix(&TINY_ALIGNED_ALLOC);
}

/// Its `__libc_malloc` is its own `malloc`: that must not make the library
/// believe glibc serves and read chunk headers before its blocks.
#[test]
fn an_allocator_exporting_libc_malloc_is_not_taken_for_glibc() {
    matrix(&TINY_COMPLETE);
}

#[test]
fn an_allocator_with_only_a_sysv_hash_table() {
    matrix(&TINY_SYSV_HASH);
}

/// `pvalloc(SIZE_MAX)` is the serving allocator's to answer (glibc: NULL
/// and ENOMEM; tcmalloc and mimalloc each their own way): with the library
/// in front, the program sees exactly what the allocator alone gives it.
#[test]
fn pvalloc_of_an_unroundable_size_is_answered_by_the_allocator() {
    let prog = compile_c("tests/c/pvalloc_overflow.c", &[]);
    for a in [&GLIBC, &TCMALLOC, &MIMALLOC, &JEMALLOC] {
        let alloc = allocator_path(a);
        let alone = match &alloc {
            Some(path) => Run::without().env("LD_PRELOAD", path.to_str().unwrap()),
            None => Run::without(),
        };
        let expected = run_ok(&prog, &alone, &[]);
        let both = match &alloc {
            Some(path) => format!("{} {}", lib().display(), path.display()),
            None => lib().display().to_string(),
        };
        let with = Run::without()
            .env("LD_PRELOAD", &both)
            .env("KSMAUTO_STATS", "off");
        assert_eq!(run_ok(&prog, &with, &[]), expected, "{both}");
    }
}
