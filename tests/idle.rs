//! Memory of a program that goes idle (issue 10, parts 1 and 2).
//!
//! A program that builds its data and then blocks — a pre-forked worker, a
//! cache that loaded its snapshot, a daemon waiting on a socket — never calls
//! a hook again. Under `advise` its memory must still become mergeable, and
//! soon (the library's catch-up thread, which then leaves: once memory has
//! settled the process has only its own threads), and the advice must never
//! cost the program VMAs it would not have without the library, however
//! many live blocks it keeps or however long its heap keeps growing.
//!
//! The program is tests/c/idle.c. Everything is measured from OUTSIDE while it
//! is blocked: it prints `idle pid=N` and blocks; the test reads
//! /proc/N/ksm_stat (merged pages), /proc/N/maps (VMAs), /proc/N/status
//! (threads) and /proc/N/smaps (the `mg` VmFlag), then kills it. The
//! references are the same program without the preload (VMAs) and under
//! `process` mode, where the kernel merges every page (merged pages).

use common::*;
use ksmauto_contract::smaps::VmFlags;
use ksmauto_testsupport as common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn program() -> PathBuf {
    compile_c("tests/c/idle.c", &[])
}

/// A running idle.c: its stdout lines as they come, its stderr, its stdin
/// pipe (held open: the default blocker reads it). Killed when dropped,
/// together with the process that went idle if that is another one (a forked
/// child).
struct Prog {
    child: Child,
    lines: Vec<String>,
    /// Lines with the moment the reader thread got them (so a test that
    /// reads several programs' lines late still knows when each went idle).
    rx: Receiver<(Instant, String)>,
    idle_at: Option<Instant>,
    stderr: Arc<Mutex<String>>,
    _stdin: ChildStdin,
    idle_pid: Option<u32>,
    what: String,
}

impl Prog {
    fn spawn(run: &Run, args: &[&str]) -> Prog {
        let mut cmd = run.clone().env("KSMAUTO_STATS", "off").command(program());
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn idle");
        let (tx, rx) = channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdin = child.stdin.take().unwrap();
        Prog {
            child,
            lines: vec![],
            rx,
            idle_at: None,
            stderr,
            _stdin: stdin,
            idle_pid: None,
            what: format!("idle {args:?} under {:?}", run.env),
        }
    }

    /// Waits for a line `prefix=N` (e.g. `idle pid=N`) and returns N.
    fn wait_for(&mut self, prefix: &str, timeout: Duration) -> u32 {
        let t0 = Instant::now();
        loop {
            if let Some(v) = self
                .lines
                .iter()
                .find_map(|l| l.strip_prefix(prefix).and_then(|v| v.parse().ok()))
            {
                return v;
            }
            let left = timeout.saturating_sub(t0.elapsed());
            match self.rx.recv_timeout(left) {
                Ok((at, line)) => {
                    if line.starts_with("idle pid=") {
                        self.idle_at = Some(at);
                    }
                    self.lines.push(line)
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no `{prefix}` line within {timeout:?}\n{}",
                    self.what,
                    self.output()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(100));
                    let status = self.child.try_wait();
                    panic!(
                        "{}: ended ({status:?}) before `{prefix}`\n{}",
                        self.what,
                        self.output()
                    )
                }
            }
        }
    }

    /// Waits until the program is idle; returns its pid and when it said so.
    fn wait_idle(&mut self) -> (u32, Instant) {
        let pid = self.wait_for("idle pid=", Duration::from_secs(90));
        self.idle_pid = Some(pid);
        (pid, self.idle_at.unwrap())
    }

    fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.lines.join("\n"),
            self.stderr.lock().unwrap()
        )
    }

    fn value(&self, key: &str) -> u64 {
        field_u64(&self.lines.join("\n"), key)
    }

    fn region(&self) -> u64 {
        let v = field(&self.lines.join("\n"), "region")
            .unwrap_or_else(|| panic!("{}: no region line\n{}", self.what, self.output()));
        u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap()
    }
}

impl Drop for Prog {
    fn drop(&mut self) {
        if let Some(pid) = self.idle_pid {
            if pid != self.child.id() {
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// What /proc says about a live process

fn maps_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/maps: {e}"))
}

fn vmas_of(pid: u32) -> usize {
    program_vmas(&maps_of(pid))
}

fn heap_vmas_of(pid: u32) -> usize {
    maps_of(pid)
        .lines()
        .filter(|l| l.ends_with("[heap]"))
        .count()
}

fn threads_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap()
}

/// Whether the VMA that contains `addr` has the `mg` (VM_MERGEABLE) flag.
fn mergeable_at(pid: u32, addr: u64) -> bool {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((s, e)) = first.split_once('-') {
            if let (Ok(s), Ok(e)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16)) {
                inside = s <= addr && addr < e;
                continue;
            }
        }
        if inside {
            if let Some(flags) = VmFlags::of_line(line.as_bytes()) {
                return flags.mergeable();
            }
        }
    }
    false
}

/// Merged pages of an idle process once ksmd has had its chance: 2 s after
/// it went idle, then 3 more full scans, then until the count holds still
/// over 2 more scans.
fn settled_merged(pid: u32, idle_at: Instant) -> u64 {
    let two_s = idle_at + Duration::from_secs(2);
    if let Some(left) = two_s.checked_duration_since(Instant::now()) {
        std::thread::sleep(left);
    }
    let scans = Duration::from_secs(120);
    wait_full_scans(3, scans);
    let mut last = u64::MAX;
    let mut now = merged_pages_of(pid);
    for _ in 0..10 {
        if now == last {
            break;
        }
        last = now;
        wait_full_scans(2, scans);
        now = merged_pages_of(pid);
    }
    now
}

/// What one idle run measured.
#[derive(Debug)]
struct Idle {
    merged: u64,
    vmas: usize,
    heap_vmas: usize,
    threads: u64,
    own_threads: u64,
    pages: u64,
    failures: Option<u64>,
    /// Anonymous VMAs with resident memory and no `mg` flag, as
    /// `start-end rss_kb`: what a failed comparison shows.
    unmarked: Vec<String>,
}

/// Runs `args` under `run` until idle and measures it (merged pages only if
/// `merge`, which waits for ksmd).
fn measure(run: &Run, args: &[&str], merge: bool) -> Idle {
    let mut p = Prog::spawn(run, args);
    let (pid, idle_at) = p.wait_idle();
    let merged = if merge {
        settled_merged(pid, idle_at)
    } else {
        0
    };
    let maps = maps_of(pid);
    let failures = field(&p.lines.join("\n"), "failures").map(|v| v.parse().unwrap());
    let unmarked = unmarked_anonymous(pid);
    Idle {
        merged,
        vmas: program_vmas(&maps),
        heap_vmas: maps.lines().filter(|l| l.ends_with("[heap]")).count(),
        threads: threads_of(pid),
        own_threads: p.value("threads"),
        pages: p.value("pages"),
        failures,
        unmarked,
    }
}

/// Private anonymous VMAs of `pid` holding memory that are not marked
/// mergeable (`mg`), from its smaps.
fn unmarked_anonymous(pid: u32) -> Vec<String> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut out, mut head, mut anon) = (vec![], String::new(), 0u64);
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            head = line.to_string();
        } else if let Some(v) = line.strip_prefix("Anonymous:") {
            anon = v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0);
        } else if let Some(flags) = VmFlags::of_line(line.as_bytes()) {
            if anon > 0 && !flags.mergeable() {
                out.push(format!("{head} anon {anon} kB"));
            }
        }
    }
    out
}

fn ksm_present() -> bool {
    Path::new("/sys/kernel/mm/ksm/run").exists()
}

// ---------------------------------------------------------------------------
// 1. Idle patterns: advise reaches what merge-any merges

/// `args` idle under advise against the same under process (merged pages) and
/// without the preload (VMAs).
fn advise_reaches_process_when_idle(args: &[&str]) {
    let Some(_ksmd) = ksmd() else { return };
    let without = measure(&Run::without(), args, false);
    let process = measure(&Run::with("process"), args, true);
    let advise = measure(&Run::with("advise"), args, true);
    eprintln!("{args:?}: without {without:?}\n  process {process:?}\n  advise {advise:?}");
    // The baseline itself: merge-any merges (nearly) every duplicate page.
    assert!(
        process.merged * 100 >= process.pages * 90,
        "{args:?}: process mode merged only {} of {} duplicate pages",
        process.merged,
        process.pages
    );
    assert_eq!(
        advise.threads, advise.own_threads,
        "{args:?}: a thread of ours left in advise mode once memory settled"
    );
    assert_eq!(
        without.threads, without.own_threads,
        "{args:?}: thread count of the program itself"
    );
    assert!(
        advise.merged * 100 >= process.merged * 95,
        "{args:?}: advise merged {} pages of an idle program, under 95% of process mode's {}; \
         anonymous memory not marked:\n{}",
        advise.merged,
        process.merged,
        advise.unmarked.join("\n")
    );
    // No constant needed: the library's own mappings are not counted
    // (program_vmas), and advising whole VMAs only ever merges VMAs.
    assert!(
        advise.vmas * 100 <= without.vmas * 105,
        "{args:?}: {} VMAs in advise mode against {} without the preload",
        advise.vmas,
        without.vmas
    );
}

/// (a) Many small objects (56..2040 bytes, 16 MiB) on the brk heap, then read.
#[test]
fn small_objects_on_the_brk_heap_then_idle() {
    advise_reaches_process_when_idle(&["small"]);
}

/// (b) 4 threads build small objects in their own malloc arenas and wait on
/// a condition variable; main blocks in pthread_join.
#[test]
fn objects_in_per_thread_arenas_then_idle() {
    advise_reaches_process_when_idle(&["arenas"]);
}

/// (c) A region mapped with the raw mmap system call (as Go does), then read.
#[test]
fn raw_syscall_mmap_then_idle() {
    advise_reaches_process_when_idle(&["syscall"]);
}

// (d) The allocation paths of coverage.rs, idle right after allocating.

#[test]
fn idle_after_mmap_through_libc() {
    advise_reaches_process_when_idle(&["cov-mmap"]);
}

#[test]
fn idle_after_prot_none_reservation_committed_with_mprotect() {
    advise_reaches_process_when_idle(&["cov-reserve"]);
}

#[test]
fn idle_after_large_malloc_blocks_in_glibcs_own_mappings() {
    advise_reaches_process_when_idle(&["cov-malloc_large"]);
}

#[test]
fn idle_after_small_objects_on_the_brk_heap() {
    advise_reaches_process_when_idle(&["cov-brk"]);
}

#[test]
fn idle_after_small_objects_on_a_thread_arena() {
    advise_reaches_process_when_idle(&["cov-arena"]);
}

#[test]
fn idle_after_raw_syscall_mmap() {
    advise_reaches_process_when_idle(&["cov-syscall"]);
}

#[test]
fn forked_child_idle_after_allocating() {
    advise_reaches_process_when_idle(&["cov-fork"]);
}

#[test]
fn execd_program_idle_after_allocating() {
    advise_reaches_process_when_idle(&["cov-exec"]);
}

/// Whatever the program waits in, a raw-mmap region built just before is
/// advised (its VMA gets `mg`) within 2 s of the program saying it is idle.
/// (These were the calls whose hooks ran the catch-up before issue 19; the
/// library's thread does now, and also behind `fgets`, whose read glibc
/// makes with its internal `read`.) No ksmd needed: the flag is the advice
/// itself.
#[test]
fn memory_is_advised_within_two_seconds_whatever_the_program_waits_in() {
    const BLOCKERS: [&str; 28] = [
        "read",
        "fgets",
        "recv",
        "accept",
        "poll",
        "ppoll",
        "select",
        "pselect",
        "epoll_wait",
        "epoll_pwait",
        "nanosleep",
        "clock_nanosleep",
        "sleep",
        "usleep",
        "pause",
        "sigsuspend",
        "sigwait",
        "sigwaitinfo",
        "sigtimedwait",
        "waitpid",
        "wait",
        "waitid",
        "pthread_cond_wait",
        "pthread_cond_timedwait",
        "pthread_barrier_wait",
        "pthread_join",
        "sem_wait",
        "futex",
    ];
    if !ksm_present() {
        eprintln!("\n!!!!! SKIPPED: this kernel has no KSM !!!!!\n");
        return;
    }
    const PAGES: &str = "256";
    // The smaps reading itself: without the preload the region never gets
    // `mg`; under merge-any it has it from the start.
    for (run, expected) in [(Run::without(), false), (Run::with("process"), true)] {
        let mut p = Prog::spawn(&run, &["syscall", "read", PAGES]);
        let (pid, _) = p.wait_idle();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(mergeable_at(pid, p.region()), expected, "{}", p.what);
    }
    // All blockers at once (each its own process), each given 2 s from its
    // own `idle` line.
    let mut progs: Vec<(&str, Prog)> = BLOCKERS
        .iter()
        .map(|b| {
            (
                *b,
                Prog::spawn(&Run::with("advise"), &["syscall", b, PAGES]),
            )
        })
        .collect();
    let mut late = vec![];
    let mut waiting = vec![];
    for (b, p) in progs.iter_mut() {
        let (pid, at) = p.wait_idle();
        waiting.push((*b, pid, p.region(), at));
    }
    for (b, pid, region, at) in waiting {
        loop {
            if mergeable_at(pid, region) {
                break;
            }
            if at.elapsed() > Duration::from_secs(2) {
                late.push(b);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(progs);
    assert!(
        late.is_empty(),
        "not advised within 2 s of blocking in: {late:?}"
    );
}

/// Bytes of `[start, end)` in VMAs with the `mg` flag, from /proc/PID/smaps.
fn mergeable_bytes_in(pid: u32, start: u64, end: u64) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut total, mut vma) = (0, None);
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((s, e)) = first.split_once('-') {
            if let (Ok(s), Ok(e)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16)) {
                vma = Some((s, e));
                continue;
            }
        }
        if let (Some(flags), Some((s, e))) = (VmFlags::of_line(line.as_bytes()), vma) {
            if flags.mergeable() {
                total += e.min(end).saturating_sub(s.max(start));
            }
        }
    }
    total
}

/// Issue 19, failure 1: small objects on the brk heap, then the program
/// waits in stdio (`fgets` on a pipe: glibc reads with its internal
/// `read`, which no symbol lookup reaches). Within 2 s of the program going
/// idle, the range the objects fill is mergeable (`mg`, at least 95% of it:
/// the heap's top page may be left for its growth). No ksmd needed: the
/// flag is the advice itself.
#[test]
fn small_objects_then_a_wait_in_stdio_are_advised_within_two_seconds() {
    if !ksm_present() {
        eprintln!("\n!!!!! SKIPPED: this kernel has no KSM !!!!!\n");
        return;
    }
    let mut p = Prog::spawn(&Run::with("advise"), &["small", "fgets"]);
    let (pid, at) = p.wait_idle();
    let (start, end) = (p.region(), {
        let v = field(&p.lines.join("\n"), "region_end").unwrap();
        u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap()
    });
    let mut advised = 0;
    while at.elapsed() < Duration::from_secs(2) {
        advised = mergeable_bytes_in(pid, start, end);
        if advised * 100 >= (end - start) * 95 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        advised * 100 >= (end - start) * 95,
        "{} of {} bytes of small objects mergeable 2 s after the program began waiting in fgets\n{}",
        advised,
        end - start,
        unmarked_anonymous(pid).join("\n")
    );
}

// ---------------------------------------------------------------------------
// 2. A brk heap that keeps growing

/// The heap grows by 64 KiB of 1 KiB objects per step, with a usleep between
/// steps, 2500 steps (156 MiB). The catch-up runs every
/// 1 ms instead of every 100 ms, so its ~10 s are thousands of catch-up passes,
/// as in 10 minutes at the default pace. Each time glibc grows the heap after
/// it was advised, the kernel cannot extend the mergeable heap VMA (the flags
/// differ), so the growth is a VMA of its own until advised: those must not
/// pile up.
#[test]
fn brk_heap_growing_for_a_long_run_stays_a_few_vmas_and_merges() {
    let Some(_ksmd) = ksmd() else { return };
    let steps = "2500";
    let step_kib = "64";
    let without = measure(&Run::without(), &["grow", steps, step_kib, "0"], false);
    let process = measure(&Run::with("process"), &["grow", steps, step_kib, "0"], true);

    let run = Run::with("advise").env("KSMAUTO_SCAN_INTERVAL", "1");
    let mut p = Prog::spawn(&run, &["grow", steps, step_kib, "3000"]);
    let pid = p.wait_for("growing pid=", Duration::from_secs(60));
    // Sample the maps from outside while it grows.
    let (mut max_heap, mut max_total) = (0, 0);
    let t0 = Instant::now();
    let idle_pid = loop {
        if let Ok((at, line)) = p.rx.recv_timeout(Duration::from_millis(100)) {
            if line.starts_with("idle pid=") {
                p.idle_at = Some(at);
            }
            p.lines.push(line);
        }
        if let Some(v) = p.lines.iter().find_map(|l| {
            l.strip_prefix("idle pid=")
                .and_then(|v| v.parse::<u32>().ok())
        }) {
            break v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{}: never idle\n{}",
            p.what,
            p.output()
        );
        if let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) {
            max_heap = max_heap.max(maps.lines().filter(|l| l.ends_with("[heap]")).count());
            max_total = max_total.max(program_vmas(&maps));
        }
    };
    p.idle_pid = Some(idle_pid);
    let idle_at = p.idle_at.unwrap();
    let grew_for = t0.elapsed();
    let merged = settled_merged(pid, idle_at);
    let (heap, total) = (heap_vmas_of(pid), vmas_of(pid));
    max_heap = max_heap.max(heap);
    max_total = max_total.max(total);
    let pages = p.value("pages");
    drop(p);
    eprintln!(
        "grow: {grew_for:?}; advise: heap VMAs {heap} (max {max_heap}), VMAs {total} (max {max_total}), \
         merged {merged} of {pages}; without {without:?}; process {process:?}"
    );
    assert!(
        process.merged * 100 >= process.pages * 90,
        "process mode merged only {} of {} heap pages",
        process.merged,
        process.pages
    );
    assert!(
        max_heap <= 4,
        "advise: up to {max_heap} [heap] VMAs while the heap grew (without the preload: {})",
        without.heap_vmas
    );
    // + 3: the heap may be up to 4 VMAs where it is 1 without the preload
    // (the newest growth is a VMA of its own until the next pass advises it).
    assert!(
        max_total * 100 <= without.vmas * 105 + 300,
        "advise: up to {max_total} VMAs while the heap grew, against {} without the preload",
        without.vmas
    );
    assert!(
        merged * 100 >= process.merged * 95,
        "advise: the grown heap merged {merged} pages, under 95% of process mode's {}",
        process.merged
    );
}

// ---------------------------------------------------------------------------
// 3. Many live large blocks

/// VMAs allowed for a program that has `without` VMAs without the preload:
/// 5%, plus a small constant.
fn vma_bound(without: usize) -> usize {
    without * 105 / 100 + 16
}

fn max_map_count() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// N live 200 KiB blocks under advise: no malloc fails, the VMAs stay within
/// the bound; with `merge`, the blocks' duplicate pages merge as under
/// process mode.
fn many_live_blocks(n: usize, batch: usize, sleep_us: u64, merge: bool) {
    let guard = if merge { ksmd() } else { None };
    if merge && guard.is_none() {
        return;
    }
    let args_for = |sleep: u64| {
        vec![
            "blocks".to_string(),
            n.to_string(),
            batch.to_string(),
            sleep.to_string(),
        ]
    };
    let fast = args_for(0);
    let fast: Vec<&str> = fast.iter().map(|s| s.as_str()).collect();
    let args = args_for(sleep_us);
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let limit = max_map_count();
    let without = measure(&Run::without(), &fast, false);
    let process = merge.then(|| measure(&Run::with("process"), &fast, true));
    let advise = measure(&Run::with("advise"), &args, merge);
    eprintln!(
        "{n} blocks (batch {batch}, sleep {sleep_us} us), max_map_count {limit}:\n  without {without:?}\n  process {process:?}\n  advise {advise:?}"
    );
    assert_eq!(
        without.failures,
        Some(0),
        "without the preload: {without:?}"
    );
    assert_eq!(
        advise.failures,
        Some(0),
        "advise: malloc returned NULL ({advise:?}); vm.max_map_count is {limit}"
    );
    assert!(
        advise.vmas <= vma_bound(without.vmas),
        "advise: {} VMAs with {n} live blocks, against {} without the preload (bound {})",
        advise.vmas,
        without.vmas,
        vma_bound(without.vmas)
    );
    if let Some(process) = process {
        assert_eq!(process.failures, Some(0), "process: {process:?}");
        assert!(
            process.merged * 100 >= process.pages * 90,
            "process mode merged only {} of {} block pages",
            process.merged,
            process.pages
        );
        assert!(
            advise.merged * 100 >= process.merged * 95,
            "advise: {n} blocks merged {} pages, under 95% of process mode's {}",
            advise.merged,
            process.merged
        );
    }
}

#[test]
fn twenty_thousand_live_large_blocks_merge_without_a_vma_each() {
    many_live_blocks(20_000, 0, 0, true);
}

#[test]
fn seventy_thousand_live_large_blocks_never_fail() {
    many_live_blocks(70_000, 0, 0, false);
}

#[test]
fn a_hundred_thousand_live_large_blocks_never_fail() {
    many_live_blocks(100_000, 0, 0, false);
}

/// The same built slowly: 1000 blocks, then a 10 ms sleep, so catch-up passes
/// run between batches and see the blocks a few batches at a time. (The kernel never merges a VMA that was written
/// before it was advised with an advised neighbour — their anon_vmas differ —
/// so advising each new run of blocks as it appears would leave a VMA per
/// pass.)
#[test]
fn a_hundred_thousand_live_large_blocks_built_slowly_never_fail() {
    many_live_blocks(100_000, 1000, 10_000, false);
}
