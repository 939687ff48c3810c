//! `run` and `compare` with ksmd on (through the harness's guard, which
//! restores ksmd's settings). Asserts on per-process counters only.

use ksmauto_testsupport as common;

use std::process::Command;
use std::time::Duration;

fn ksmauto_json(args: &[&str]) -> (i32, String, serde_json::Value) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ksmauto"));
    c.args(args)
        .env_remove("LD_PRELOAD")
        .env_remove("KSMAUTO_SYSFS_KSM");
    let o = common::run_with_timeout(
        {
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c
        },
        Duration::from_secs(240),
    );
    let stdout = common::text(&o.stdout);
    let last = stdout.lines().last().unwrap_or("").to_string();
    let v = serde_json::from_str(&last)
        .unwrap_or_else(|_| panic!("no JSON last line:\n{stdout}\n{}", common::text(&o.stderr)));
    (o.status.code().unwrap_or(-1), stdout, v)
}

#[test]
fn run_reports_merged_memory_of_the_article_program() {
    let Some(_ksm) = common::ksmd() else { return };
    let article = common::compile_c("examples/article.c", &[]);
    let lib = common::lib().to_str().unwrap();
    let (code, stdout, v) = ksmauto_json(&[
        "run",
        "--lib",
        lib,
        "--json",
        "--",
        article.to_str().unwrap(),
        "3",
        "60",
    ]);
    assert_eq!(code, 0);
    assert_eq!(v["exit_code"], 0);
    assert!(
        common::field_u64(&stdout, "merged_before_write") >= 3,
        "{stdout}"
    );
    assert_eq!(v["processes"], 1, "{v}");
    // The report comes at exit, after the writes broke the merges; what the
    // summary shows is the kernel's view at exit.
    let p = &v["per_process"][0];
    assert!(p["report"]["kernel"].is_object(), "{v}");
    assert!(v["merged_pages"].as_u64().unwrap() >= 3, "{v}");
}

#[test]
fn run_summarizes_every_process_of_a_tree() {
    let Some(_ksm) = common::ksmd() else { return };
    let article = common::compile_c("examples/article.c", &[]);
    let a = article.to_str().unwrap();
    let lib = common::lib().to_str().unwrap();
    let script = format!("{a} 3 60 & {a} 3 60 & wait; exit 3");
    let (code, stdout, v) =
        ksmauto_json(&["run", "--lib", lib, "--json", "--", "sh", "-c", &script]);
    assert_eq!(code, 3, "exit status of the command");
    assert_eq!(v["exit_code"], 3);
    let per = v["per_process"].as_array().unwrap();
    let pids: std::collections::HashSet<i64> =
        per.iter().map(|p| p["pid"].as_i64().unwrap()).collect();
    // Both children report (dash leaves with _exit, so sh itself may not).
    assert!(pids.len() >= 2, "two children: {v}");
    let articles = per
        .iter()
        .filter(|p| p["report"]["calls"]["mmap"].as_u64().unwrap_or(0) >= 3)
        .count();
    assert!(articles >= 2, "{v}");
    // Both article processes merged their pages while they ran.
    let merged: Vec<u64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("merged_before_write "))
        .map(|n| n.trim().parse().unwrap())
        .collect();
    assert_eq!(merged.len(), 2, "{stdout}");
    assert!(merged.iter().all(|&m| m >= 3), "{stdout}");
}

#[test]
fn run_summary_text_goes_to_stderr() {
    let Some(_ksm) = common::ksmd() else { return };
    let article = common::compile_c("examples/article.c", &[]);
    let lib = common::lib().to_str().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .args([
            "run",
            "--mode",
            "advise",
            "--lib",
            lib,
            "--",
            article.to_str().unwrap(),
            "3",
            "60",
        ])
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let err = common::text(&o.stderr);
    assert!(err.contains("ksmauto: 1 process, advised "), "{err}");
    assert!(!err.contains("advised 0 B"), "{err}");
    assert!(err.contains(" advise "), "{err}");
    assert!(!common::text(&o.stdout).contains("ksmauto:"));
}

#[test]
fn compare_shows_savings_with_the_preload_and_writes_svg() {
    let Some(_ksm) = common::ksmd() else { return };
    let dups = common::compile_c("cli/tests/c/dups.c", &[]);
    let lib = common::lib().to_str().unwrap();
    let svg = std::env::temp_dir().join(format!("ksmauto-compare-{}.svg", std::process::id()));
    let cpu_before = common::ksmd_cpu_seconds().expect("a ksmd thread");
    let (code, _, v) = ksmauto_json(&[
        "compare",
        "--workers",
        "2",
        "--mode",
        "process",
        "--settle-timeout",
        "60",
        "--lib",
        lib,
        "--svg",
        svg.to_str().unwrap(),
        "--json",
        "--",
        dups.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{v}");
    let (a, b) = (&v["without"]["last"], &v["with"]["last"]);
    assert_eq!(a["processes"], 2, "{v}");
    assert_eq!(b["processes"], 2, "{v}");
    assert_eq!(
        a["merging_pages"], 0,
        "nothing mergeable without the preload: {v}"
    );
    assert!(b["merging_pages"].as_u64().unwrap() >= 2 * 1400, "{v}");
    assert!(v["saved_pss_bytes"].as_i64().unwrap() > 0, "{v}");
    // ideal across both copies: 2 × 1500 identical + 600 zero + 200 shared-unique
    let ideal = v["estimate"]["ideal_savings_pages"].as_f64().unwrap();
    assert!((ideal - 3798.0).abs() < 3798.0 * 0.02, "{v}");
    assert!(v["percent_of_ideal"].as_f64().unwrap() > 50.0, "{v}");
    // ksmd's CPU per phase, within what the test itself read of it around
    // the whole comparison; the phase with the preload made ksmd scan.
    let cpu_after = common::ksmd_cpu_seconds().unwrap();
    let cpu = |p: &str| {
        v[p]["ksmd_cpu_seconds"]
            .as_f64()
            .unwrap_or_else(|| panic!("{v}"))
    };
    assert!(cpu("without") >= 0.0 && cpu("with") > 0.0, "{v}");
    assert!(
        cpu("without") + cpu("with") <= cpu_after - cpu_before + 0.02,
        "{v}"
    );
    let merged_bytes = (b["merging_pages"].as_u64().unwrap() + b["zero_pages"].as_u64().unwrap())
        * common::page_size();
    let per_cpu = v["with"]["merged_bytes_per_ksmd_cpu_second"]
        .as_f64()
        .unwrap();
    assert!(
        (per_cpu * cpu("with") / merged_bytes as f64 - 1.0).abs() < 1e-9,
        "{v}"
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg") || text.starts_with("<?xml"),
        "{}",
        &text[..80.min(text.len())]
    );
    assert!(text.contains("without ksmauto"));
    let _ = std::fs::remove_file(&svg);
}

#[test]
fn compare_of_a_command_that_exits_samples_until_exit() {
    let Some(_ksm) = common::ksmd() else { return };
    let lib = common::lib().to_str().unwrap();
    let (code, _, v) = ksmauto_json(&[
        "compare",
        "--workers",
        "1",
        "--settle-timeout",
        "20",
        "--lib",
        lib,
        "--json",
        "--",
        "sleep",
        "1.2",
    ]);
    assert_eq!(code, 0, "{v}");
    assert!(
        v["without"]["ended"] == "exited" || v["without"]["ended"] == "settled",
        "{v}"
    );
    assert!(!v["with"]["samples"].as_array().unwrap().is_empty(), "{v}");
}
