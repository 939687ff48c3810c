//! `ksmauto status`'s host-level efficiency (issue 21) with a real process
//! under a real ksmd: ksmd's CPU held against the test's own readings of
//! its `/proc/PID/stat`, the rmap items against sysfs's counters and the
//! kernel's own `general_profit`, rates over `--rate` and `--watch`
//! intervals, and the Prometheus families read by a real parser.

use ksmauto_testsupport as common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn ksmauto(args: &[&str]) -> (i32, String) {
    let (code, out, _) = common::run_tool(env!("CARGO_BIN_EXE_ksmauto"), args);
    (code, out)
}

fn json(args: &[&str]) -> serde_json::Value {
    let (code, out) = ksmauto(args);
    assert_eq!(code, 0, "{args:?}: {out}");
    serde_json::from_str(&out).expect("JSON")
}

/// `dups` (2000 pages, 1500 identical, 300 zero) under the library in
/// `process` mode, merged: memory registered with ksmd, which keeps
/// scanning it.
struct Dups(Child);

impl Dups {
    fn merged() -> Dups {
        let dups = common::compile_c("cli/tests/c/dups.c", &[]);
        let mut cmd = common::Run::with("process")
            .env("KSMAUTO_STATS", "off")
            .command(&dups);
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn dups");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("ready"), "dups said {line:?}");
        let d = Dups(child);
        let t0 = Instant::now();
        while common::merged_pages_of(d.pid()) < 1400 {
            assert!(t0.elapsed() < Duration::from_secs(120), "dups never merged");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn rmap_items(&self) -> u64 {
        let text = std::fs::read(format!("/proc/{}/ksm_stat", self.pid())).unwrap();
        ksmauto_contract::proc::KsmStat::parse(&text).rmap_items
    }
}

impl Drop for Dups {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// ksmd's CPU as `ksmauto` read it lies between the test's own readings
/// before and after (one clock tick of rounding either side).
fn between(what: &str, x: f64, before: f64, after: f64) {
    assert!(
        x >= before - 0.011 && x <= after + 0.011,
        "{what} {x} not within the test's readings {before}..{after}"
    );
}

#[test]
fn json_efficiency_agrees_with_proc_sysfs_and_the_interval_read() {
    let Some(_ksm) = common::ksmd() else { return };
    let dups = Dups::merged();
    let before = common::ksmd_cpu_seconds().expect("a ksmd thread");
    let v = json(&["status", "--json", "--rate", "1"]);
    let after = common::ksmd_cpu_seconds().unwrap();
    let e = &v["efficiency"];
    between("ksmd_cpu_seconds", f(&e["ksmd_cpu_seconds"]), before, after);
    let life = &e["since_start"];
    assert_eq!(life["ksmd_cpu_seconds"], e["ksmd_cpu_seconds"], "{e}");
    assert!(f(&life["seconds"]) > 0.0, "{e}");
    // The interval: two readings at least a second apart, within the
    // test's own, with ksmd scanning dups' registered pages meanwhile.
    let w = &e["interval"];
    let secs = f(&w["seconds"]);
    assert!(secs >= 1.0, "{e}");
    let cpu = f(&w["ksmd_cpu_seconds"]);
    between("interval ksmd_cpu_seconds", cpu, 0.0, after - before);
    assert!((f(&w["ksmd_cpu_share"]) - cpu / secs).abs() < 1e-9, "{e}");
    let scanned = w["pages_scanned"].as_u64().unwrap();
    assert!(scanned > 0, "ksmd scanned nothing in a second: {e}");
    assert!((f(&w["pages_scanned_per_second"]) - scanned as f64 / secs).abs() < 1e-6);
    if cpu > 0.0 {
        let per_cpu = v["saved_bytes"].as_u64().unwrap() as f64 / (cpu / secs);
        assert!(
            (f(&w["saved_bytes_per_ksmd_cpu"]) / per_cpu - 1.0).abs() < 1e-9,
            "{e}"
        );
    }
    // The rmap items: sysfs's four counters of the same snapshot, which
    // hold dups' own.
    let values = &v["values"];
    let sum: u64 = [
        "pages_shared",
        "pages_sharing",
        "pages_unshared",
        "pages_volatile",
    ]
    .iter()
    .map(|k| values[*k].as_u64().unwrap())
    .sum();
    let items = e["rmap_items"].as_u64().unwrap();
    assert_eq!(items, sum, "{v}");
    assert!(items >= dups.rmap_items(), "{e}");
    assert_eq!(e["rmap_bytes"].as_u64(), Some(items * 64), "{e}");
    let merged =
        values["pages_shared"].as_u64().unwrap() + values["pages_sharing"].as_u64().unwrap();
    assert!(merged >= 1400, "{v}");
    let per_merged = f(&e["rmap_items_per_merged_page"]);
    assert!(
        (per_merged - items as f64 / merged as f64).abs() <= 0.005,
        "{e}"
    );
}

/// The kernel's own `general_profit` is `(pages_sharing + ksm_zero_pages)
/// × page size − ksm_rmap_items × sizeof(struct ksm_rmap_item)`: with the
/// rmap items and their size `status` shows, it comes out exactly — in a
/// snapshot where ksmd changed nothing between the reads of its files
/// (tried a few times: ksmd runs meanwhile).
#[test]
fn rmap_bytes_are_what_the_kernel_subtracts_in_general_profit() {
    let Some(_ksm) = common::ksmd() else { return };
    let _dups = Dups::merged();
    let mut seen = vec![];
    for _ in 0..20 {
        let v = json(&["status", "--json"]);
        let values = &v["values"];
        let Some(profit) = values["general_profit"].as_i64() else {
            eprintln!("SKIPPED: this kernel has no general_profit");
            return;
        };
        let saved = (values["pages_sharing"].as_i64().unwrap()
            + values["ksm_zero_pages"].as_i64().unwrap_or(0))
            * v["page_size"].as_i64().unwrap();
        let rmap = v["efficiency"]["rmap_bytes"].as_i64().unwrap();
        if saved - rmap == profit {
            return;
        }
        seen.push((saved - rmap, profit));
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("saved − rmap_bytes never matched general_profit: {seen:?}");
}

/// Parses exposition text with `prometheus-parse`: every sample line
/// read, counters end in `_total`, gauges do not.
fn parse(text: &str) -> prometheus_parse::Scrape {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("exposition text parses");
    let lines = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    assert_eq!(scrape.samples.len(), lines.count(), "{text}");
    for s in &scrape.samples {
        match s.value {
            prometheus_parse::Value::Counter(_) => assert!(s.metric.ends_with("_total")),
            prometheus_parse::Value::Gauge(_) => assert!(!s.metric.ends_with("_total")),
            ref other => panic!("{} is {other:?}", s.metric),
        }
    }
    scrape
}

fn value(scrape: &prometheus_parse::Scrape, metric: &str) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == metric)
        .unwrap_or_else(|| panic!("no {metric}"));
    match s.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
        ref other => panic!("{other:?}"),
    }
}

#[test]
fn prometheus_and_textfile_show_ksmd_cpu_and_rmap_overhead() {
    let Some(_ksm) = common::ksmd() else { return };
    let _dups = Dups::merged();
    let before = common::ksmd_cpu_seconds().expect("a ksmd thread");
    let (code, text) = ksmauto(&["status", "--prometheus"]);
    let after = common::ksmd_cpu_seconds().unwrap();
    assert_eq!(code, 0);
    let scrape = parse(&text);
    assert!(
        text.contains("# TYPE ksm_ksmd_cpu_seconds_total counter"),
        "{text}"
    );
    let cpu = value(&scrape, "ksm_ksmd_cpu_seconds_total");
    between("ksm_ksmd_cpu_seconds_total", cpu, before, after);
    let items = value(&scrape, "ksm_rmap_items");
    let sum: f64 = [
        "ksm_shared_pages",
        "ksm_sharing_pages",
        "ksm_unshared_pages",
        "ksm_volatile_pages",
    ]
    .iter()
    .map(|m| value(&scrape, m))
    .sum();
    assert_eq!(items, sum, "{text}");
    assert_eq!(value(&scrape, "ksm_rmap_bytes"), items * 64.0);
    let merged = value(&scrape, "ksm_shared_pages") + value(&scrape, "ksm_sharing_pages");
    assert!((value(&scrape, "ksm_rmap_items_per_merged_page") - items / merged).abs() <= 0.005);
    // The textfile is the same exposition.
    let dir = std::env::temp_dir().join(format!("ksmauto-efficiency-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ksm.prom");
    let (code, _) = ksmauto(&["status", "--textfile", path.to_str().unwrap()]);
    assert_eq!(code, 0);
    let scrape = parse(&std::fs::read_to_string(&path).unwrap());
    assert!(value(&scrape, "ksm_ksmd_cpu_seconds_total") >= cpu);
    assert!(value(&scrape, "ksm_rmap_items") > 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn text_and_watch_frames_show_rates_over_their_interval() {
    let Some(_ksm) = common::ksmd() else { return };
    let _dups = Dups::merged();
    let (code, text) = ksmauto(&["status", "--rate", "0.5"]);
    assert_eq!(code, 0);
    for line in [
        "ksmd since it started ",
        "ksmd over the last ",
        "rmap items: ",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    let (_, plain) = ksmauto(&["status"]);
    assert!(
        !plain.contains("ksmd over the last"),
        "no rate unasked:\n{plain}"
    );
    assert!(plain.contains("ksmd since it started "), "{plain}");
    // --watch: the first frame has no interval, the next one the rates
    // since the frame before.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .args(["status", "--json", "--watch", "0.5"])
        .env_remove("LD_PRELOAD")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut frame = || -> serde_json::Value {
        serde_json::from_str(&lines.next().expect("a frame").unwrap()).unwrap()
    };
    let (first, second) = (frame(), frame());
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(first["efficiency"]["interval"].is_null(), "{first}");
    let w = &second["efficiency"]["interval"];
    assert!(f(&w["seconds"]) >= 0.5, "{w}");
    assert!(f(&w["pages_scanned_per_second"]) > 0.0, "{w}");
}

#[test]
fn a_rate_is_refused_where_prometheus_computes_it_and_outside_its_range() {
    if !std::path::Path::new("/sys/kernel/mm/ksm/run").exists() {
        eprintln!("SKIPPED: no KSM");
        return;
    }
    for args in [
        &["status", "--prometheus", "--rate", "1"][..],
        &[
            "status",
            "--textfile",
            "/tmp/effshow-never.prom",
            "--rate",
            "1",
        ],
        &["status", "--rate", "0"],
        &["status", "--rate", "nan"],
    ] {
        assert_eq!(ksmauto(args).0, 2, "{args:?}");
    }
    assert!(!std::path::Path::new("/tmp/effshow-never.prom").exists());
}
