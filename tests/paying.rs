//! Register only what pays (issue 21): with `KSMAUTO_REGISTER=paying` the
//! library takes memory that does not pay for ksmd's attention back out,
//! region by region, after ksmd's full scans, and gives it back later for
//! another probe; what merges stays. Checked from outside the program
//! (smaps' `mg` flag, `/proc/kpageflags`, the VMA count), with real ksmd,
//! in both engines; never on timing (every wait is a generous poll).
//!
//! The program is tests/c/paying.c: duplicated, unique and volatile pages
//! mapped one after another (one VMA to the kernel).
//!
//! The probation tests run with `KSMAUTO_SIGHTINGS=off` (every piece has
//! a probation by ksmd); the sightings tests with `on`, where
//! a piece whose content no other process of the user (nor the process
//! itself) holds is taken out when first met.

use ksmauto_testsupport as common;
use common::{Live, Run};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const ENGINES: [&str; 2] = ["process", "advise"];
/// Long enough for many of ksmd's full scans at the guard's pace on a
/// loaded machine; a pass is usually seconds.
const PATIENCE: Duration = Duration::from_secs(120);

fn program() -> std::path::PathBuf {
    common::compile_c("tests/c/paying.c", &["-pthread"])
}

/// The program under `mode`, its report on stderr as JSON, with the
/// `register` choice; waits for `ready` and returns its parts by name.
fn start(mode: &str, register: &str, args: &[&str]) -> (Live, HashMap<String, (u64, u64)>) {
    start_with(mode, register, "off", args)
}

/// [`start`] with `KSMAUTO_SIGHTINGS` set to `sightings`.
fn start_with(
    mode: &str,
    register: &str,
    sightings: &str,
    args: &[&str],
) -> (Live, HashMap<String, (u64, u64)>) {
    let mut cmd = Run::with(mode)
        .env("KSMAUTO_REGISTER", register)
        .env("KSMAUTO_SIGHTINGS", sightings)
        .env("KSMAUTO_STATS", "stderr")
        .env("KSMAUTO_STATS_FORMAT", "json")
        .command(program());
    cmd.args(args);
    let what = format!("paying {args:?} under {mode}, {register}, sightings {sightings}");
    parts_of(Live::spawn(cmd, what))
}

/// Waits for `ready` and returns the parts the program printed.
fn parts_of(mut live: Live) -> (Live, HashMap<String, (u64, u64)>) {
    live.wait_line("ready", Duration::from_secs(60));
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    let parts = live
        .stdout()
        .lines()
        .filter_map(|l| l.strip_prefix("part "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[0].to_string(), (hex(w[1]), hex(w[2])))
        })
        .collect();
    (live, parts)
}

fn pages(range: (u64, u64)) -> u64 {
    (range.1 - range.0) / common::page_size()
}

/// Pages of `range` in a VMA ksmd is given (`mg`).
fn registered(live: &Live, range: (u64, u64)) -> u64 {
    common::mergeable_pages_in(live.pid(), &[range])
}

/// Polls `cond` every 50 ms until it holds; panics with `what` after
/// [`PATIENCE`]. `each` runs at every poll (checks that must hold
/// throughout).
fn wait_until(
    live: &mut Live,
    what: &str,
    mut each: impl FnMut(&mut Live),
    mut cond: impl FnMut(&mut Live) -> bool,
) {
    let t0 = Instant::now();
    loop {
        each(live);
        if cond(live) {
            return;
        }
        if t0.elapsed() >= PATIENCE {
            let output = live.output();
            panic!("{}: {what} not seen in {PATIENCE:?}\n{output}", live.what);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `range`, taken out, is given back in part for a probe (a
/// resting VMA is probed one slice at a time: its registered pages rise
/// above the least seen since it was taken out).
fn wait_probed_again(live: &mut Live, range: (u64, u64), mut each: impl FnMut(&mut Live)) {
    let mut least = u64::MAX;
    wait_until(live, "taken-out pages probed again", |l| each(l), |l| {
        let now = registered(l, range);
        least = least.min(now);
        now > least
    });
}

/// Ends the program (stdin closed) and returns its JSON report.
fn report(mut live: Live) -> serde_json::Value {
    live.close_stdin();
    let what = live.what.clone();
    let (status, out) = live.finish(Duration::from_secs(60));
    assert!(status.success(), "{what}: {status:?}\n{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with('{') && l.contains("\"paying\""))
        .unwrap_or_else(|| panic!("{what}: no report with `paying`\n{out}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: {e}: {line}"))
}

/// Unique pages never merge: after ksmd's full scans they are taken back
/// out (their `mg` goes), and later given back for another probe (it comes
/// back) — in both engines; the report counts both.
#[test]
fn a_region_that_never_merges_is_taken_out_and_probed_again() {
    let Some(_ksmd) = common::ksmd() else { return };
    for mode in ENGINES {
        let (mut live, parts) = start(mode, "paying", &[]);
        let unique = parts["unique"];
        let n = pages(unique);
        assert_eq!(registered(&live, unique), n, "{mode}: all registered at first");
        wait_until(&mut live, "unique pages taken out", |_| {}, |l| {
            registered(l, unique) <= n / 4
        });
        wait_probed_again(&mut live, unique, |_| {});
        let pid = live.pid();
        assert!(published(pid).is_none(), "{mode}: sightings off, yet published");
        let r = report(live);
        let p = &r["paying"];
        assert_eq!(r["register"], "paying", "{mode}: {r}");
        assert_eq!(p["taken_out_on_sight"]["regions"], 0, "{mode}: sightings off: {p}");
        assert!(p["taken_out"]["regions"].as_u64() >= Some(1), "{mode}: {p}");
        assert!(p["taken_out"]["bytes"].as_u64() >= Some(n * 3 / 4 * 4096), "{mode}: {p}");
        assert!(p["probed_again"]["regions"].as_u64() >= Some(1), "{mode}: {p}");
    }
}

/// Duplicated pages merge: their region stays registered all along, and
/// what merged stays merged — also while the unique pages beside them in
/// the same VMA are taken out and probed again.
#[test]
fn a_merging_region_stays_registered_and_its_pages_stay_merged() {
    let Some(_ksmd) = common::ksmd() else { return };
    for mode in ENGINES {
        let (mut live, parts) = start(mode, "paying", &[]);
        let (dup, unique) = (parts["dup"], parts["unique"]);
        let n = pages(dup);
        let stays = |l: &mut Live| {
            assert_eq!(registered(l, dup), n, "{}: duplicated pages taken out", l.what)
        };
        wait_until(&mut live, "duplicated pages merged", stays, |l| {
            common::ksm_pages_in(l.pid(), &[dup]) >= n * 9 / 10
        });
        wait_until(&mut live, "unique pages taken out", stays, |l| {
            registered(l, unique) <= pages(unique) / 4
        });
        let mut least = u64::MAX;
        wait_probed_again(&mut live, unique, |l| {
            stays(l);
            least = least.min(common::ksm_pages_in(l.pid(), &[dup]));
        });
        assert!(least >= n * 9 / 10, "{mode}: merged pages unmerged: {least} of {n}");
        live.send("check");
        live.wait_line("intact", Duration::from_secs(30));
        let r = report(live);
        assert!(r["paying"]["taken_out"]["regions"].as_u64() >= Some(1), "{r}");
    }
}

/// Pages rewritten every 100 ms never stay the same long enough to merge:
/// taken out like unique ones.
#[test]
fn volatile_data_is_taken_out() {
    let Some(_ksmd) = common::ksmd() else { return };
    for mode in ENGINES {
        let (mut live, parts) = start(mode, "paying", &["volatile"]);
        let (dup, volatile) = (parts["dup"], parts["volatile"]);
        wait_until(&mut live, "volatile pages taken out", |_| {}, |l| {
            registered(l, volatile) <= pages(volatile) / 4
        });
        assert_eq!(registered(&live, dup), pages(dup), "{mode}");
        report(live);
    }
}

/// Memory no hook sees arrive is judged like any other: small objects on
/// the brk heap (glibc grows it with its own `sbrk`) and blocks glibc maps
/// on its own (its hidden `mmap`). Their unique part is taken out, their
/// duplicated part stays, in both engines. (Before, in `process` mode
/// nothing told the library such memory had arrived: it never had a
/// thread, and nothing of it was ever taken out.)
#[test]
fn memory_no_hook_sees_arrive_is_judged_too() {
    let Some(_ksmd) = common::ksmd() else { return };
    for mode in ENGINES {
        for layout in ["heap", "blocks"] {
            let (mut live, parts) = start(mode, "paying", &[layout]);
            let (dup, unique) = (parts["dup"], parts["unique"]);
            // In `advise` mode the catch-up gives it to ksmd first.
            wait_until(&mut live, &format!("{layout}: unique pages registered"), |_| {}, |l| {
                registered(l, unique) >= pages(unique) * 3 / 4
            });
            wait_until(&mut live, &format!("{layout}: unique pages taken out"), |_| {}, |l| {
                registered(l, unique) <= pages(unique) / 4
            });
            wait_until(&mut live, &format!("{layout}: duplicated pages merged"), |_| {}, |l| {
                common::ksm_pages_in(l.pid(), &[dup]) >= pages(dup) * 9 / 10
            });
            assert_eq!(registered(&live, dup), pages(dup), "{mode}, {layout}: dup taken out");
            let r = report(live);
            assert!(r["paying"]["taken_out"]["regions"].as_u64() >= Some(1), "{mode}, {layout}: {r}");
        }
    }
}

/// Data that becomes duplicate after its region was taken out is given
/// back at once, not on the region's tick: a look at its content found it
/// changed and then still. It merges, and the report counts the probe as
/// one on change. Volatile data, different at every look, is never given
/// back on change.
#[test]
fn data_that_becomes_duplicate_later_is_probed_again_on_change() {
    let Some(_ksmd) = common::ksmd() else { return };
    for mode in ENGINES {
        let (mut live, parts) = start(mode, "paying", &["volatile"]);
        let (unique, volatile) = (parts["unique"], parts["volatile"]);
        wait_until(&mut live, "unique and volatile pages taken out", |_| {}, |l| {
            registered(l, unique) <= pages(unique) / 4 && registered(l, volatile) <= pages(volatile) / 4
        });
        live.send("same");
        live.wait_line("same", Duration::from_secs(30));
        wait_until(&mut live, "the rewritten pages given back and merged", |_| {}, |l| {
            registered(l, unique) == pages(unique)
                && common::ksm_pages_in(l.pid(), &[unique]) >= pages(unique) * 3 / 4
        });
        let r = report(live);
        let on_change = &r["paying"]["probed_on_change"];
        let bytes = on_change["bytes"].as_u64().unwrap_or(0);
        // The unique part is 16 MiB, in up to nine 2 MiB regions; the
        // volatile part would add 8 MiB.
        assert!(on_change["regions"].as_u64() >= Some(1), "{mode}: {r}");
        // Regions on a scheduled probe when the data changed merge on
        // that probe instead: at least one region is given back on change.
        assert!(bytes >= 2 << 20, "{mode}: {r}");
        assert!(bytes <= (unique.1 - unique.0) + (2 << 20), "{mode}: volatile given back on change: {r}");
    }
}

/// Many small regions changing at once are changed in one round: 1,536
/// VMAs of 64 KiB (a pool worker's many small mappings), taken out as
/// unique, then all made duplicates at once, are all given back when the
/// looks find them changed — none left to a later round for want of room
/// in the plan (a round walks the whole of smaps and rounds are paced, so
/// a plan too small for a pool's give-backs returned its copies only after
/// their partners' probations had ended).
#[test]
fn many_small_regions_changed_at_once_are_changed_in_one_round() {
    let Some(_ksmd) = common::ksmd() else { return };
    const VMAS: u64 = 1536;
    let page = common::page_size();
    for mode in ENGINES {
        let (mut live, parts) = start(mode, "paying", &["small", &VMAS.to_string()]);
        // The 64 KiB after each read-only guard page.
        let small = parts["small"];
        let stride = (64 << 10) + page;
        let data: Vec<(u64, u64)> = (0..VMAS)
            .map(|i| small.0 + page + i * stride)
            .map(|s| (s, s + (64 << 10)))
            .collect();
        let pages_of_data = VMAS * (64 << 10) / page;
        let registered = |l: &Live| common::mergeable_pages_in(l.pid(), &data);
        wait_until(&mut live, "the small VMAs taken out", |_| {}, |l| {
            registered(l) <= pages_of_data / 16
        });
        live.send("same");
        live.wait_line("same", Duration::from_secs(30));
        wait_until(&mut live, "every small VMA given back", |_| {}, |l| {
            registered(l) == pages_of_data
        });
        let r = report(live);
        let p = &r["paying"];
        assert!(p["probed_on_change"]["regions"].as_u64() >= Some(VMAS / 2), "{mode}: {p}");
        assert_eq!(p["deferred"].as_u64(), Some(0), "{mode}: changes left to a later round: {p}");
    }
}

/// A `fork` shares every page with the child: no evidence of merging.
/// While the child lives nothing is taken out (a merged page cannot be
/// told from a shared one, and taking a merged page out loses money);
/// once it is gone, the unique pages are taken out after all.
#[test]
fn a_fork_during_probation_is_no_evidence() {
    let Some(_ksmd) = common::ksmd() else { return };
    for mode in ENGINES {
        let (mut live, parts) = start(mode, "paying", &[]);
        let (dup, unique) = (parts["dup"], parts["unique"]);
        live.send("fork");
        live.wait_line("forked ", Duration::from_secs(30));
        // More than a probation (three full scans, ten seconds) with the
        // child alive: the unique pages, shared with it, stay.
        let (scans, t0) = (common::full_scans(), Instant::now());
        while common::full_scans() < scans + 12 || t0.elapsed() < Duration::from_secs(15) {
            assert_eq!(registered(&live, unique), pages(unique), "{mode}: shared taken out");
            assert_eq!(registered(&live, dup), pages(dup), "{mode}: dup taken out");
            std::thread::sleep(Duration::from_millis(50));
        }
        live.send("unfork");
        live.wait_line("unforked", Duration::from_secs(30));
        wait_until(&mut live, "unique pages taken out after the child ended", |_| {}, |l| {
            registered(l, unique) <= pages(unique) / 4
        });
        assert_eq!(registered(&live, dup), pages(dup), "{mode}");
        report(live);
    }
}

/// A secret (`MADV_DONTDUMP`) in the middle of the unique pages is never
/// registered again: not when its neighbours are probed again.
#[test]
fn exclusions_are_never_registered_again_by_a_probe() {
    let Some(_ksmd) = common::ksmd() else { return };
    for (mode, sightings) in ENGINES.iter().flat_map(|m| [(*m, "off"), (*m, "on")]) {
        let (mut live, parts) = start_with(mode, "paying", sightings, &["secret"]);
        let (unique, secret) = (parts["unique"], parts["secret"]);
        let never = |l: &mut Live| {
            assert_eq!(registered(l, secret), 0, "{}: the secret registered", l.what)
        };
        wait_until(&mut live, "unique pages taken out", never, |l| {
            registered(l, unique) <= pages(unique) / 4
        });
        wait_probed_again(&mut live, unique, never);
        // The probe's whole course, and the next decision.
        let scans = common::full_scans();
        while common::full_scans() < scans + 8 {
            never(&mut live);
            std::thread::sleep(Duration::from_millis(20));
        }
        report(live);
    }
}

/// Many VMAs each wanting their middle taken out (two splits each): the
/// VMAs the decisions add stay within issue 19's bound (5 % + 2 of the
/// program's count without the library), and some middles are taken out.
#[test]
fn the_vma_budget_holds_with_many_small_regions() {
    let Some(_ksmd) = common::ksmd() else { return };
    let count = |pid: u32| {
        common::program_vmas(&std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap())
    };
    let mut cmd = Run::without().command(program());
    cmd.args(["mixed", "32"]);
    let mut bare = Live::spawn(cmd, "paying mixed without the library");
    bare.wait_line("ready", Duration::from_secs(60));
    let without = count(bare.pid());
    drop(bare);
    for (mode, sightings) in ENGINES.iter().flat_map(|m| [(*m, "off"), (*m, "on")]) {
        let (live, _) = start_with(mode, "paying", sightings, &["mixed", "32"]);
        let bound = without + without / 20 + 2;
        let mut most = 0;
        // Past the probation (three full scans and ten seconds) and the
        // rounds that follow it, the budget binding all along.
        let (scans, t0) = (common::full_scans(), Instant::now());
        while common::full_scans() < scans + 24 || t0.elapsed() < Duration::from_secs(30) {
            let n = count(live.pid());
            most = most.max(n);
            assert!(n <= bound, "{mode}: {n} VMAs, more than {bound} ({without} without)");
            std::thread::sleep(Duration::from_millis(50));
        }
        let r = report(live);
        let p = &r["paying"];
        assert!(p["taken_out"]["regions"].as_u64() >= Some(1), "{mode}: {p}");
        assert!(p["refused"].as_u64() >= Some(1), "{mode}: the budget never bound: {p}");
        eprintln!("{mode}: at most {most} VMAs, {without} without the library");
    }
}

/// ksmd's pace set for one test and put back after it (the harness holds
/// ksmd at its fast pace around every test).
struct Pace(String);

impl Pace {
    fn pages_to_scan(pages: u64) -> Pace {
        let path = "/sys/kernel/mm/ksm/pages_to_scan";
        let saved = std::fs::read_to_string(path).unwrap();
        std::fs::write(path, pages.to_string()).unwrap();
        Pace(saved.trim().to_string())
    }
}

impl Drop for Pace {
    fn drop(&mut self) {
        let _ = std::fs::write("/sys/kernel/mm/ksm/pages_to_scan", &self.0);
    }
}

/// A rest tick gives back the same piece of 16 resting VMAs at once, more
/// splits than the VMA budget allows: those it refuses wait for their next
/// turn. They once stayed due at every round, so the library
/// ran a round (a walk of the whole of the process's smaps) at every poll,
/// four a second, for as long as the budget had no room. A round wants a
/// full scan of ksmd's that its plan waits for (or news), so with ksmd at
/// a slow pace the rounds stay within the full scans (and a few for news).
#[test]
fn a_give_back_the_budget_refuses_waits_for_its_next_turn() {
    let Some(_ksmd) = common::ksmd() else { return };
    // Two processes of 80 MiB at 10,000 pages a second, fewer once the
    // unique parts (16 VMAs of 4 MiB each) are taken out.
    let _pace = Pace::pages_to_scan(100);
    let scans = common::full_scans();
    let t0 = Instant::now();
    let lives: Vec<Live> = ENGINES
        .iter()
        .map(|mode| start(mode, "paying", &["wide"]).0)
        .collect();
    // Past the take-out, the 30 s rest and a tick or two.
    while t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let scanned = common::full_scans() - scans;
    for (mode, live) in ENGINES.iter().zip(lives) {
        let r = report(live);
        let p = &r["paying"];
        assert!(
            p["probed_again"]["regions"].as_u64() >= Some(1)
                && p["refused"].as_u64() >= Some(1),
            "{mode}: no give-back refused by the budget (the test did not test): {p}"
        );
        let rounds = p["rounds"].as_u64().unwrap();
        eprintln!("{mode}: {rounds} rounds in {scanned} full scans: {p}");
        assert!(
            rounds <= scanned + 10,
            "{mode}: {rounds} rounds in {scanned} full scans: rounds without a reason: {p}"
        );
    }
}

/// `KSMAUTO_REGISTER=all`: everything stays registered, as before, and
/// in `process` mode the library has no thread at all.
#[test]
fn register_all_registers_everything_as_before() {
    let Some(_ksmd) = common::ksmd() else { return };
    for mode in ENGINES {
        let (mut live, parts) = start(mode, "all", &[]);
        let unique = parts["unique"];
        let scans = common::full_scans();
        while common::full_scans() < scans + 24 {
            assert_eq!(registered(&live, unique), pages(unique), "{mode}");
            if mode == "process" {
                let tasks = common::task_ids(live.pid());
                assert_eq!(tasks.len(), 1, "process, all: a thread {tasks:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        live.close_stdin();
        let (status, out) = live.finish(Duration::from_secs(60));
        assert!(status.success(), "{out}");
        assert!(out.contains("\"register\":\"all\""), "{mode}: {out}");
    }
}

/// Where processes of `uid` with the permitted capabilities `caps`
/// publish their sightings (their trust domain).
fn sightings_dir(uid: u32, caps: u64) -> String {
    format!("/dev/shm/ksmauto-{uid}-{caps:x}")
}

/// The tests' own trust domain: root, with the test runner's capabilities
/// (which the programs it starts inherit).
fn our_sightings_dir() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapPrm:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    sightings_dir(0, caps)
}

/// The sightings file of process `pid` (`p<pid>.<pid namespace>`), if it
/// published one.
fn published(pid: u32) -> Option<std::fs::Metadata> {
    let prefix = format!("p{pid}.");
    std::fs::read_dir(our_sightings_dir())
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .and_then(|e| std::fs::symlink_metadata(e.path()).ok())
}

/// Sightings: a piece whose content no other process holds is taken out
/// when first met, without a probation by ksmd; one holding pages another
/// process published is given to ksmd and kept; and a piece taken out for
/// want of a copy is given back once a copy's sightings arrive. Two
/// processes hold the same 8 MiB (`shared`) and 16 MiB each of their own:
/// the first is taken out whole on sight (no copy anywhere yet), the
/// second keeps its shared part, both unique parts are taken out on
/// sight, and the first's shared part comes back and merges with the
/// second's. Files: one per process, 0600 in a 0700 directory of the
/// user, removed at exit.
#[test]
fn memory_with_no_copy_anywhere_is_taken_out_on_sight_and_copies_come_back() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(_ksmd) = common::ksmd() else { return };
    for mode in ENGINES {
        let (mut first, a) = start_with(mode, "paying", "on", &["pool"]);
        wait_until(&mut first, "the first process's sightings published", |_| {}, |l| {
            published(l.pid()).is_some()
        });
        let file = published(first.pid()).unwrap();
        assert!(file.is_file(), "{mode}");
        assert_eq!(file.permissions().mode() & 0o777, 0o600, "{mode}");
        let dir = std::fs::symlink_metadata(our_sightings_dir()).unwrap();
        assert!(dir.is_dir(), "{mode}");
        assert_eq!(dir.permissions().mode() & 0o777, 0o700, "{mode}");
        assert_eq!((file.uid(), dir.uid()), (0, 0), "{mode}");
        wait_until(&mut first, "the first's unique pages taken out", |_| {}, |l| {
            registered(l, a["unique"]) <= pages(a["unique"]) / 4
        });

        let (mut second, b) = start_with(mode, "paying", "on", &["pool"]);
        let (shared_a, shared_b) = (a["shared"], b["shared"]);
        // A piece at a part's edge holds both kinds: one may go either way.
        let kept = |l: &mut Live| {
            let n = registered(l, shared_b);
            assert!(n + 512 >= pages(shared_b), "{}: shared pages taken out: {n}", l.what)
        };
        wait_until(&mut second, "the second's unique pages taken out", kept, |l| {
            registered(l, b["unique"]) <= pages(b["unique"]) / 4
        });
        let second_pid = second.pid();
        wait_until(&mut first, "both copies of the shared pages merged", |_| {}, |l| {
            common::ksm_pages_in(l.pid(), &[shared_a]) >= pages(shared_a) * 9 / 10
                && common::ksm_pages_in(second_pid, &[shared_b]) >= pages(shared_b) * 9 / 10
        });
        kept(&mut second);
        let first_pid = first.pid();
        let (ra, rb) = (report(first), report(second));
        assert!(published(first_pid).is_none() && published(second_pid).is_none(), "{mode}: left behind");
        let (unique, shared) = (16u64 << 20, 8u64 << 20);
        let bytes = |r: &serde_json::Value, key: &str| r["paying"][key]["bytes"].as_u64().unwrap_or(0);
        // The first: both parts taken out on sight, its shared part given
        // back when the second's sightings arrived.
        assert!(bytes(&ra, "taken_out_on_sight") >= unique + shared * 3 / 4, "{mode}: {ra}");
        assert!(bytes(&ra, "probed_on_sighting") >= shared / 2, "{mode}: {ra}");
        // The second: its unique part only.
        assert!(bytes(&rb, "taken_out_on_sight") >= unique * 3 / 4, "{mode}: {rb}");
        assert!(bytes(&rb, "taken_out_on_sight") <= unique + (2 << 20), "{mode}: shared part taken out: {rb}");
    }
}

/// A piece given back because a copy of it was sighted elsewhere, when the
/// VMA budget has no room for the give-back, waits for room with its
/// sighting, not for a rest. It was undone into a rest begun anew, one
/// level up, its sighting forgotten: given back by a rest tick a minute or
/// more later, when its copies had ended their probations unmerged (a brk
/// heap's duplicated middle lost a whole pool worker's savings, run to
/// run). `middles 12`: 12 VMAs whose middles nobody else holds yet, each
/// taken out whole on sight. `copies 12` then holds copies of the middles:
/// giving the 12 back splits 24 times, past the budget of a process of
/// about 100 VMAs. Once the first maps 800 VMAs more (room), every middle
/// comes back on its sighting and merges with its copy (which pays on its
/// own: the second holds each twice).
#[test]
fn a_sighting_the_budget_refuses_waits_for_room_not_for_a_rest() {
    let Some(_ksmd) = common::ksmd() else { return };
    const N: usize = 12;
    let n = N.to_string();
    let middle = |parts: &HashMap<String, (u64, u64)>| -> Vec<(u64, u64)> {
        (0..N).map(|i| parts[&format!("m{i}")]).collect()
    };
    for mode in ENGINES {
        let (mut first, a) = start_with(mode, "paying", "on", &["middles", &n]);
        let middles = middle(&a);
        wait_until(&mut first, "every middle taken out on sight", |_| {}, |l| {
            published(l.pid()).is_some() && middles.iter().all(|&m| registered(l, m) == 0)
        });
        let (second, b) = start_with(mode, "paying", "on", &["copies", &n]);
        let second_ready = Instant::now();
        let copies = middle(&b);
        wait_until(&mut first, "a middle given back on its sighting", |_| {}, |l| {
            middles.iter().any(|&m| registered(l, m) > 0)
        });
        // The second publishes its sightings over its first rounds, and the
        // first reads them at its rounds (content looks: every 8 s at the
        // most): by 20 s after the second started every sighting is in,
        // and the budget gave back what it could.
        while second_ready.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(200));
        }
        common::wait_full_scans(2, PATIENCE);
        let given_back = middles.iter().filter(|&&m| registered(&first, m) > 0).count();
        assert!(
            given_back < N,
            "{mode}: all {N} middles given back at once (the test did not test)"
        );
        first.send("more");
        first.wait_line("more", Duration::from_secs(60));
        let second_pid = second.pid();
        let merged = |pid: u32, ranges: &[(u64, u64)]| {
            ranges.iter().filter(|&&m| common::ksm_pages_in(pid, &[m]) >= pages(m) * 9 / 10).count()
        };
        wait_until(&mut first, "every middle merged with its copy", |_| {}, |l| {
            merged(l.pid(), &middles) == N && merged(second_pid, &copies) == N
        });
        let (r, _) = (report(first), report(second));
        let p = &r["paying"];
        assert!(
            p["refused"].as_u64() >= Some(1),
            "{mode}: {given_back} of {N} middles given back, none refused (the test did not test): {p}"
        );
        eprintln!("{mode}: {given_back} of {N} given back before room: {p}");
        let on_sighting = p["probed_on_sighting"]["bytes"].as_u64().unwrap_or(0);
        assert!(
            on_sighting >= (N as u64) << 21,
            "{mode}: {} of {N} middles given back on their sightings, the others by a rest: {p}",
            on_sighting >> 21
        );
    }
}

/// A VMA whose missing faults go to the program's userfaultfd handler is
/// never read by the library (its thread would wait in the program's
/// handler for a page zapped under the read). A piece first met being
/// filled is judged on sight at a later round: that path once read it
/// without asking whether its VMA had been registered since. `uffd`: two
/// pieces a quarter written; once the library met them being filled, the
/// one registered with a userfaultfd and its twin are filled. The twin,
/// unique, is taken out on sight; the registered one is left to its
/// probation (taken out later, not on sight).
#[test]
fn a_piece_registered_with_userfaultfd_while_being_filled_is_never_read() {
    let Some(_ksmd) = common::ksmd() else { return };
    for mode in ENGINES {
        let (mut live, parts) = start_with(mode, "paying", "on", &["uffd"]);
        let (twin, uffd) = (parts["twin"], parts["uffd"]);
        // Rounds come every second while pieces are being filled (the
        // first soon after the news of their mapping): give them a few,
        // well within the 30 s a piece is waited for.
        common::wait_full_scans(2, PATIENCE);
        std::thread::sleep(Duration::from_secs(5));
        live.send("fill");
        live.wait_line("filled", Duration::from_secs(60));
        wait_until(&mut live, "the twin taken out on sight", |_| {}, |l| registered(l, twin) == 0);
        // Its probation (10 s and 3 full scans since first met) ends too.
        wait_until(&mut live, "the registered piece taken out", |_| {}, |l| registered(l, uffd) == 0);
        let r = report(live);
        let p = &r["paying"];
        let on_sight = p["taken_out_on_sight"]["bytes"].as_u64().unwrap_or(0);
        assert!(on_sight >= 2 << 20, "{mode}: the twin was not taken out on sight (the test did not test): {p}");
        assert!(
            on_sight < 4 << 20,
            "{mode}: the piece registered with a userfaultfd was read and taken out on sight: {p}"
        );
    }
}

/// A process that is not dumpable (it keeps its memory from its own user's
/// other processes) shares no sightings: it publishes nothing, and takes
/// nothing out on sight (its copies would be sighted by no one); its
/// probations still take its unique pages out.
#[test]
fn an_undumpable_process_shares_no_sightings() {
    let Some(_ksmd) = common::ksmd() else { return };
    for mode in ENGINES {
        let (mut live, parts) = start_with(mode, "paying", "on", &["pool", "undumpable"]);
        let unique = parts["unique"];
        let never = |l: &mut Live| assert!(published(l.pid()).is_none(), "{}: published", l.what);
        wait_until(&mut live, "unique pages taken out", never, |l| {
            registered(l, unique) <= pages(unique) / 4
        });
        never(&mut live);
        let r = report(live);
        assert_eq!(r["paying"]["taken_out_on_sight"]["regions"], 0, "{mode}: {r}");
        assert!(r["paying"]["taken_out"]["regions"].as_u64() >= Some(1), "{mode}: {r}");
    }
}

/// The directory of sightings is used only when it is safely the user's:
/// run as `nobody` (no capabilities), the library never writes into a
/// `/dev/shm/ksmauto-65534-0` another user made world-writable, nor through
/// a symlink planted there
/// (to a directory `nobody` owns) — its decisions fall back to probations,
/// which still take the unique pages out. Without either, it makes the
/// directory itself (0700, its own) and publishes there: the check can fail.
#[test]
fn a_sightings_directory_not_safely_the_users_is_never_used() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(_ksmd) = common::ksmd() else { return };
    let program = program();
    let dir_name = sightings_dir(65534, 0);
    let dir = std::path::Path::new(&dir_name);
    let target = std::path::PathBuf::from(format!("/dev/shm/ksmauto-test-target-{}", std::process::id()));
    let clean = || {
        let _ = std::fs::remove_file(dir);
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(&target);
    };
    let entries = |p: &std::path::Path| std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
    for case in ["world-writable", "symlink", "none"] {
        clean();
        match case {
            "world-writable" => {
                std::fs::create_dir(dir).unwrap();
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            }
            "symlink" => {
                std::fs::create_dir(&target).unwrap();
                std::os::unix::fs::chown(&target, Some(65534), Some(65534)).unwrap();
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
                std::os::unix::fs::symlink(&target, dir).unwrap();
            }
            _ => {}
        }
        let mut cmd = Run::with("process")
            .env("KSMAUTO_REGISTER", "paying")
            .env("KSMAUTO_SIGHTINGS", "on")
            .command("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&program)
            .arg("pool");
        let (mut live, parts) = parts_of(Live::spawn(cmd, format!("paying pool as nobody, {case}")));
        let unique = parts["unique"];
        if case == "none" {
            wait_until(&mut live, "sightings published in its own directory", |_| {}, |_| {
                entries(dir) > 0
            });
            let meta = std::fs::symlink_metadata(dir).unwrap();
            assert!(meta.is_dir() && meta.uid() == 65534, "{meta:?}");
            assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        } else {
            let untouched = |l: &mut Live| {
                assert_eq!(entries(&target) + if case == "symlink" { 0 } else { entries(dir) }, 0, "{}: written into", l.what)
            };
            wait_until(&mut live, "unique pages taken out by a probation", untouched, |l| {
                registered(l, unique) <= pages(unique) / 4
            });
            untouched(&mut live);
        }
        live.close_stdin();
        let what = live.what.clone();
        let (status, out) = live.finish(Duration::from_secs(60));
        assert!(status.success(), "{what}: {status:?}\n{out}");
    }
    clean();
}
