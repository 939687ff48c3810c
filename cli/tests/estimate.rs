//! `ksmauto estimate` against programs with known page contents
//! (cli/tests/c/dups.c: 1500 identical pages, 300 zero-filled, 200 unique;
//! cli/tests/c/domains.c: a few pages of known contents and nothing else,
//! run as two users in two cgroups for the trust domains), and a whole
//! host (`--all`, `--user`, `--cgroup`, as a user who cannot read it all).

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

/// Pages here and there in a large address space (cli/tests/c/sparse.c):
/// the walk asks the kernel where pages are present (PAGEMAP_SCAN) and
/// reads the pagemap only there, also where a range holds more runs of
/// present pages than one answer gives; every page is still found, also
/// those of a region made PROT_NONE after it was written (which
/// `process_vm_readv` refuses and `/proc/PID/mem` reads).
#[test]
fn pages_here_and_there_in_a_large_address_space_are_all_found() {
    let prog = common::compile_c("cli/tests/c/sparse.c", &[]);
    let mut child = Command::new(&prog).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("ready"), "{line}");
    let v = estimate(&[child.id() as i32]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(v["pages_scanned"].as_u64().unwrap() >= 868, "{v}");
    within(&v["ideal_savings_pages"], 865.0);
    assert_eq!(v["processes"][0]["unreadable_pages"], 0, "{v}");
    assert_eq!(v["top_regions"][0]["region"], "anon", "{v}");
    within(&v["top_regions"][0]["duplicate_pages"], 865.0);
}

// ---- A whole host, by trust domain ----------------------------------------

fn ksmauto_estimate(args: &[&str]) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .arg("estimate")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// (uid, gid) of a user of /etc/passwd.
fn ids_of(user: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == user)
        .map(|f| (f[2].parse().unwrap(), f[3].parse().unwrap()))
        .unwrap_or_else(|| panic!("no user {user} in /etc/passwd"))
}

/// A process started as `user` through setpriv, once it said "ready".
struct As(Child);

impl As {
    fn start(user: &str, program: &std::path::Path, args: &[&str], env_clear: bool) -> As {
        let (uid, gid) = ids_of(user);
        let mut c = Command::new("setpriv");
        c.args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".into(),
            "--".into(),
        ])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
        if env_clear {
            c.env_clear();
        }
        let mut child = c.spawn().expect("setpriv");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("ready"), "{user}: {line:?}");
        As(child)
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for As {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Cgroups made for a test: in the cgroup v2 tree below ours where this
/// host places processes there, else in a cgroup v1 hierarchy
/// (name=systemd or pids) — where `status` and `estimate` look first.
/// Removed (after their processes are gone) when dropped.
struct Cgroups {
    dirs: Vec<std::path::PathBuf>,
    /// The paths `estimate` shows, same order.
    shown: Vec<String>,
}

impl Cgroups {
    fn make(names: &[&str]) -> Option<Cgroups> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
        let mount = |kind: &str, option: Option<&str>| {
            mounts.lines().find_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let options_match = option
                    .is_none_or(|o| f.get(3).is_some_and(|opts| opts.split(',').any(|x| x == o)));
                (f.get(2) == Some(&kind) && options_match).then(|| std::path::PathBuf::from(f[1]))
            })
        };
        let ours = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let unified = ours
            .lines()
            .find_map(|l| l.strip_prefix("0::"))?
            .to_string();
        let (base, shown_base) = if unified != "/" {
            let m = mount("cgroup2", None)?;
            (
                m.join(unified.trim_start_matches('/')),
                unified.trim_end_matches('/').to_string(),
            )
        } else {
            let m =
                mount("cgroup", Some("name=systemd")).or_else(|| mount("cgroup", Some("pids")))?;
            (m, String::new())
        };
        let mut made = Cgroups {
            dirs: vec![],
            shown: vec![],
        };
        for n in names {
            let name = format!("ksmauto-est-{}-{n}", std::process::id());
            let dir = base.join(&name);
            std::fs::create_dir(&dir).ok()?;
            made.dirs.push(dir);
            made.shown.push(format!("{shown_base}/{name}"));
        }
        Some(made)
    }

    fn put(&self, i: usize, pid: i32) {
        std::fs::write(self.dirs[i].join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for d in &self.dirs {
            for _ in 0..250 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

fn domains_program() -> std::path::PathBuf {
    common::compile_c(
        "cli/tests/c/domains.c",
        &[
            "-nostdlib",
            "-static",
            "-fno-pie",
            "-no-pie",
            "-ffreestanding",
            "-fno-stack-protector",
            "-fno-builtin",
        ],
    )
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn domain<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

/// Three copies of cli/tests/c/domains.c (10 pages all share, 20 pages of
/// a tag, 5 of zeroes, 3 of their own, nothing else that repeats — given
/// a nonce each, see the program): two as
/// nobody with tag 1, one as daemon with tag 2; the first in cgroup X, the
/// other two in cgroup Y. Exactly:
/// - within each process: (10−1) + (20−1) + (5−1) = 32, three times: 96;
/// - within each user: nobody 19 + 39 + 9 = 67, daemon 32: 99;
/// - within each cgroup: X 32, Y (nobody's tag 1 and daemon's tag 2)
///   19 + 19 + 19 + 9 = 66: 98;
/// - across the host: 29 + 39 + 19 + 14 = 101.
///
/// The same figures for the PIDs, for `--user nobody --user daemon
/// --cgroup X --cgroup Y` (which finds just these three), and within the
/// cgroups of `--all`; `--cgroup X` alone finds the first one.
#[test]
fn trust_domains_are_counted_exactly_within_users_cgroups_and_the_host() {
    if !root() {
        panic!("needs root (processes of two users, cgroups, frame numbers)");
    }
    let prog = domains_program();
    let cgroups = Cgroups::make(&["x", "y"]).expect("cannot make two cgroups on this host");
    // A nonce each: the arguments' page of the stack is then each one's own.
    let nonce = |i: u32| format!("{}-{i}", std::process::id());
    let n1 = As::start("nobody", &prog, &["1", &nonce(1)], true);
    let n2 = As::start("nobody", &prog, &["1", &nonce(2)], true);
    let d1 = As::start("daemon", &prog, &["2", &nonce(3)], true);
    cgroups.put(0, n1.pid());
    cgroups.put(1, n2.pid());
    cgroups.put(1, d1.pid());
    let (x, y) = (cgroups.shown[0].as_str(), cgroups.shown[1].as_str());
    let pids = [n1.pid(), n2.pid(), d1.pid()];
    let check = |v: &serde_json::Value| {
        let t = &v["trust_domains"];
        assert_eq!(u(&t["within_process_pages"]), 96, "{v}");
        assert_eq!(u(&t["within_user_pages"]), 99, "{v}");
        assert_eq!(u(&t["within_cgroup_pages"]), 98, "{v}");
        assert_eq!(u(&t["across_host_pages"]), 101, "{v}");
        assert_eq!(u(&v["ideal_savings_pages"]), 101, "{v}");
        assert_eq!(u(&v["zero_pages"]), 15, "{v}");
        let nobody = domain(&t["by_user"], "nobody");
        assert_eq!(
            (u(&nobody["ideal_savings_pages"]), u(&nobody["processes"])),
            (67, 2)
        );
        assert_eq!(nobody["uid"], 65534);
        let daemon = domain(&t["by_user"], "daemon");
        assert_eq!(
            (u(&daemon["ideal_savings_pages"]), u(&daemon["processes"])),
            (32, 1)
        );
        assert_eq!(u(&domain(&t["by_cgroup"], x)["ideal_savings_pages"]), 32);
        assert_eq!(u(&domain(&t["by_cgroup"], y)["ideal_savings_pages"]), 66);
        let page = u(&v["page_size"]);
        assert_eq!(u(&t["within_user_bytes"]), 99 * page);
    };
    let named: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    let named: Vec<&str> = named.iter().map(String::as_str).collect();
    check(&ksmauto_estimate(&named));
    let found = ksmauto_estimate(&[
        "--user", "nobody", "--user", "1", "--cgroup", x, "--cgroup", y,
    ]);
    let mut got: Vec<i64> = found["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect();
    got.sort();
    let mut want: Vec<i64> = pids.iter().map(|&p| p as i64).collect();
    want.sort();
    assert_eq!(got, want, "{found}");
    check(&found);
    let just_x = ksmauto_estimate(&["--cgroup", x]);
    assert_eq!(just_x["pids"], serde_json::json!([n1.pid()]), "{just_x}");
    assert_eq!(u(&just_x["ideal_savings_pages"]), 32);
    // The whole host: other processes come and go, these figures do not.
    let all = ksmauto_estimate(&["--all"]);
    let t = &all["trust_domains"];
    assert_eq!(
        u(&domain(&t["by_cgroup"], x)["ideal_savings_pages"]),
        32,
        "{t}"
    );
    assert_eq!(
        u(&domain(&t["by_cgroup"], y)["ideal_savings_pages"]),
        66,
        "{t}"
    );
    for p in pids {
        let mine = all["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["pid"] == p)
            .unwrap_or_else(|| panic!("{p} not in --all"));
        assert_eq!(u(&mine["ideal_savings_pages"]), 32, "{mine}");
    }
    drop((n1, n2, d1));
    drop(cgroups);
}

/// Frames shared by fork count once within the user too, and once in each
/// process that maps them.
#[test]
fn frames_shared_by_fork_count_once_within_the_user() {
    if !root() {
        panic!("needs root (frame numbers)");
    }
    let d = dups(&["fork"]);
    let v = estimate(&[d.child.id() as i32, d.forked.unwrap()]);
    let t = &v["trust_domains"];
    within(&t["within_user_pages"], IDEAL);
    within(&t["within_cgroup_pages"], IDEAL);
    within(&t["within_process_pages"], 2.0 * IDEAL);
    within(&t["across_host_pages"], IDEAL);
}

/// As a user who is not root, `--all` reads that user's processes and
/// names every other one it found with the reason: root's are refused.
#[test]
fn unreadable_processes_are_counted_and_named_by_reason() {
    if !root() {
        panic!("needs root (to run ksmauto as nobody)");
    }
    let prog = common::compile_c("cli/tests/c/dups.c", &[]);
    let theirs = dups(&[]);
    let mine = As::start("nobody", &prog, &[], false);
    let (uid, gid) = ids_of("nobody");
    let run = |extra: &[&str]| {
        Command::new("setpriv")
            .args([
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".into(),
                "--".into(),
            ])
            .arg(env!("CARGO_BIN_EXE_ksmauto"))
            .args(["estimate", "--all"])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let refused = v["unreadable_processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == theirs.child.id())
        .unwrap_or_else(|| panic!("root's process not named: {v}"));
    assert_eq!(refused["reason"], "permission denied", "{refused}");
    assert!(
        refused["comm"].as_str().unwrap().starts_with("dups"),
        "{refused}"
    );
    let read = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == mine.pid())
        .unwrap_or_else(|| panic!("nobody's own process not read: {v}"));
    within(&read["ideal_savings_pages"], IDEAL);
    assert!(v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["uid"] == uid));
    let o = run(&[]);
    let t = common::text(&o.stdout);
    let line = t
        .lines()
        .find(|l| l.starts_with("could not read "))
        .unwrap_or_else(|| panic!("{t}"));
    // The text counts them by reason and names a few of each (another
    // run: the host's processes come and go, so no count is compared).
    let counted = line
        .split("permission denied: ")
        .nth(1)
        .and_then(|rest| rest.split(" (").next())
        .and_then(|n| n.parse::<usize>().ok());
    assert!(counted.is_some_and(|n| n >= 1), "{line}");
    assert!(t.contains("run as root to see every process"), "{t}");
}

#[test]
fn an_unknown_user_is_a_usage_error() {
    let o = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .args(["estimate", "--user", "no-such-user-ksmauto"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(common::text(&o.stderr).contains("no such user"));
    let o = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .args(["estimate"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "no PID and no --all is a usage error"
    );
}
