//! `ksmauto estimate` against programs with known page contents
//! (cli/tests/c/dups.c: 1500 identical pages, 300 zero-filled, 200 unique).

use ksmauto_testsupport as common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// 1499 from the identical pages + 299 from the zero-filled ones.
const IDEAL: f64 = 1798.0;

struct Dups {
    child: Child,
    /// The forked child's pid, with `fork`.
    forked: Option<i32>,
}

impl Drop for Dups {
    fn drop(&mut self) {
        if let Some(p) = self.forked {
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dups(args: &[&str]) -> Dups {
    dups_with(common::Run::without(), args)
}

fn dups_with(run: common::Run, args: &[&str]) -> Dups {
    let prog = common::compile_c("cli/tests/c/dups.c", &[]);
    let mut child = run
        .env("KSMAUTO_STATS", "off")
        .command(&prog)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("ready"), "{line}");
    let forked = line.split_whitespace().nth(1).map(|p| p.parse().unwrap());
    Dups { child, forked }
}

fn estimate(pids: &[i32]) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .arg("estimate")
        .args(pids.iter().map(|p| p.to_string()))
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn within(v: &serde_json::Value, want: f64) {
    let got = v.as_f64().unwrap();
    assert!(
        (got - want).abs() <= want * 0.02,
        "got {got}, want {want} ± 2%"
    );
}

fn root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn one_process_ideal_is_the_known_duplicate_count() {
    let d = dups(&[]);
    let v = estimate(&[d.child.id() as i32]);
    within(&v["ideal_savings_pages"], IDEAL);
    within(&v["zero_pages"], 300.0);
    assert_eq!(
        v["ideal_savings_pages_use_zero_pages"].as_u64().unwrap(),
        v["ideal_savings_pages"].as_u64().unwrap() + 1
    );
    assert_eq!(
        v["ideal_savings_bytes"].as_u64().unwrap(),
        v["ideal_savings_pages"].as_u64().unwrap() * v["page_size"].as_u64().unwrap()
    );
    assert!(v["pages_scanned"].as_u64().unwrap() >= 2000);
    assert!(v["mb_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(v["top_regions"][0]["region"], "anon");
    within(&v["top_regions"][0]["duplicate_pages"], IDEAL);
    if root() {
        assert_eq!(
            v["already_merged_pages"], 0,
            "not mergeable, so nothing merged"
        );
        assert_eq!(v["pfn_available"], true);
    }
}

#[test]
fn frames_shared_by_fork_are_not_savings() {
    if !root() {
        eprintln!("SKIPPED: page frame numbers need root");
        return;
    }
    let d = dups(&["fork"]);
    let v = estimate(&[d.child.id() as i32, d.forked.unwrap()]);
    // Twice the pages, the same frames: the same ideal as one process.
    assert!(v["pages_scanned"].as_u64().unwrap() >= 4000);
    within(&v["ideal_savings_pages"], IDEAL);
    assert!(v["shared_frame_mappings"].as_u64().unwrap() >= 2000, "{v}");
    within(&v["zero_pages"], 300.0);
}

#[test]
fn two_processes_with_the_same_content_double_the_savings() {
    let a = dups(&[]);
    let b = dups(&[]);
    let v = estimate(&[a.child.id() as i32, b.child.id() as i32]);
    // 3000 identical pages → 2999 freed, 600 zero pages → 599, and the 200
    // "unique" pages are unique within a process but the same in both → 200.
    within(&v["ideal_savings_pages"], 3798.0);
    within(&v["within_process_savings_pages"], 2.0 * IDEAL);
    assert_eq!(v["processes"].as_array().unwrap().len(), 2);
}

#[test]
fn text_output_names_the_numbers() {
    let d = dups(&[]);
    let o = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .args(["estimate", "-v", &d.child.id().to_string()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let t = common::text(&o.stdout);
    for s in [
        "ideal savings:",
        "zero pages:",
        "top duplicate sources:",
        "MB/s",
    ] {
        assert!(t.contains(s), "{t}");
    }
}

/// After KSM merged two copies, what is already saved and what is still
/// duplicate add up to the same whole ideal, and the report says KSM got
/// (nearly) all of it.
#[test]
fn merged_pages_count_as_already_saved_and_complete_the_ideal() {
    if !root() {
        return;
    }
    let Some(_ksmd) = common::ksmd() else { return };
    let a = dups_with(common::Run::with("process"), &[]);
    let b = dups_with(common::Run::with("process"), &[]);
    let pids = [a.child.id() as i32, b.child.id() as i32];
    // Wait until merging has settled: 3 full scans, then until stable.
    common::wait_full_scans(3, std::time::Duration::from_secs(120));
    let mut e = estimate(&pids);
    for _ in 0..20 {
        common::wait_full_scans(2, std::time::Duration::from_secs(120));
        let next = estimate(&pids);
        let stable = next["already_saved_pages"] == e["already_saved_pages"];
        e = next;
        if stable {
            break;
        }
    }
    let saved = e["already_saved_pages"].as_f64().unwrap();
    let left = e["ideal_savings_pages"].as_f64().unwrap();
    // Two copies: 2 x 1500 identical + 2 x 300 zero + the 200 "unique" pages
    // that are the same in both copies -> 3799 pages of savings in all.
    within(&serde_json::json!(saved + left), 3798.0);
    let pct = e["merged_percent_of_ideal"].as_f64().unwrap();
    assert!(pct >= 95.0, "KSM got only {pct:.1}% of the ideal: {e}");
}

/// A kernel thread has no user memory: `estimate` said "no such process"
/// (exit 3) of it, since its `pagemap` and `mem` cannot be opened, and
/// failed a whole list that named one. It is now counted as a process with
/// nothing to scan, with a note saying why (exit 0, as `doctor` gives its
/// own verdict), and the others of the list are estimated as ever.
#[test]
fn a_kernel_thread_has_no_user_memory_to_estimate() {
    // kthreadd is pid 2 on every Linux.
    let comm = std::fs::read_to_string("/proc/2/comm").unwrap_or_default();
    assert_eq!(comm.trim(), "kthreadd", "pid 2 is not kthreadd here");
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
            .arg("estimate")
            .args(args)
            .output()
            .unwrap();
        let err = common::text(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        common::text(&o.stdout)
    };
    let note = "pid 2 (kthreadd) is a kernel thread: it has no user memory for KSM to merge";
    let text = run(&["2"]);
    assert!(text.contains(&format!("note: {note}")), "{text}");
    let v: serde_json::Value = serde_json::from_str(&run(&["2", "--json"])).unwrap();
    assert_eq!(v["pages_scanned"], 0, "{v}");
    assert_eq!(v["processes"][0]["pid"], 2, "{v}");
    assert_eq!(v["processes"][0]["comm"], "kthreadd", "{v}");
    assert_eq!(v["processes"][0]["regions"], 0, "{v}");
    assert!(
        v["notes"].as_array().unwrap().iter().any(|n| n == note),
        "{v}"
    );
    // In a list, with a process that has memory.
    let d = dups(&[]);
    let v = estimate(&[2, d.child.id() as i32]);
    within(&v["ideal_savings_pages"], IDEAL);
    assert_eq!(v["processes"].as_array().unwrap().len(), 2, "{v}");
}
