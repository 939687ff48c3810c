//! `ksmauto status` with real processes using KSM: the Prometheus output read
//! by a real parser (`prometheus-parse`), `--textfile`, and the trust-domain
//! figures and warning with processes of two users.

use ksmauto_testsupport as common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tests start and look at machine-wide state (every KSM process): one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn have_ksm() -> bool {
    std::path::Path::new("/sys/kernel/mm/ksm/run").exists()
}

fn ksmauto(args: &[&str]) -> (i32, String) {
    let (code, out, _) = common::run_tool(env!("CARGO_BIN_EXE_ksmauto"), args);
    (code, out)
}

/// `dups` (2000 pages, 1500 identical) with the library preloaded in process
/// mode, as `user` (None: as we are), once it has written its memory.
struct Dups(Child, String);

impl Dups {
    fn start(user: Option<&str>) -> Dups {
        let dups = common::compile_c("cli/tests/c/dups.c", &[]);
        let run = common::Run::with("process").env("KSMAUTO_STATS", "off");
        let mut cmd = match user {
            None => run.command(&dups),
            Some(u) => {
                let mut c = run.command("setpriv");
                let (uid, gid) = ids_of(u);
                c.args([
                    format!("--reuid={uid}"),
                    format!("--regid={gid}"),
                    "--clear-groups".into(),
                    "--".into(),
                ])
                .arg(&dups);
                c
            }
        };
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn dups");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("ready"), "dups as {user:?} said {line:?}");
        // compile_c names the executable per build; comm is its first 15 bytes.
        let name = dups.file_name().unwrap().to_string_lossy();
        Dups(child, name[..name.len().min(15)].to_string())
    }

    fn comm(&self) -> &str {
        &self.1
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Dups {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ids_of(user: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == user)
        .map(|f| (f[2].parse().unwrap(), f[3].parse().unwrap()))
        .unwrap_or_else(|| panic!("no user {user} in /etc/passwd"))
}

fn our_cgroup() -> String {
    std::fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .unwrap()
}

/// The cgroup status shows for this process: the unified path, or on a
/// v1/hybrid host where that is `/`, the first v1 path that is not `/` of
/// name=systemd, pids, memory, cpu (in that order).
fn our_shown_cgroup() -> String {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let unified = our_cgroup();
    if unified != "/" {
        return unified;
    }
    for want in ["name=systemd", "pids", "memory", "cpu"] {
        for l in text.lines() {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) =
                (f.next(), f.next().unwrap_or(""), f.next().unwrap_or("/"));
            if path != "/" && controllers.split(',').any(|c| c == want) {
                return path.to_string();
            }
        }
    }
    unified
}

/// Parses exposition text with `prometheus-parse`, checking that the parser
/// took every sample line (it skips what it cannot read) and that every
/// family has HELP and TYPE.
fn parse(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("exposition text parses");
    let sample_lines = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(
        scrape.samples.len(),
        sample_lines,
        "every sample parsed:\n{text}"
    );
    for s in &scrape.samples {
        assert!(s.metric.starts_with("ksm_"), "prefix: {}", s.metric);
        assert!(
            scrape.docs.contains_key(&s.metric),
            "no HELP for {}",
            s.metric
        );
        assert!(
            text.contains(&format!("# TYPE {} ", s.metric)),
            "no TYPE for {}",
            s.metric
        );
        match s.value {
            prometheus_parse::Value::Counter(v) => {
                assert!(s.metric.ends_with("_total"), "counter {}", s.metric);
                assert!(v >= 0.0);
            }
            prometheus_parse::Value::Gauge(_) => {
                assert!(!s.metric.ends_with("_total"), "gauge {}", s.metric)
            }
            ref other => panic!("{} is {other:?}", s.metric),
        }
    }
    scrape
}

fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {metric} {labels:?}"));
    match s.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
        ref other => panic!("{other:?}"),
    }
}

fn wait_merged(pid: u32, pages: u64) {
    let t0 = Instant::now();
    while common::merged_pages_of(pid) < pages {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "pid {pid} merged only {} pages",
            common::merged_pages_of(pid)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn prometheus_output_of_a_merging_process_parses_with_conventions() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_ksm) = common::ksmd() else { return };
    let dups = Dups::start(None);
    wait_merged(dups.pid(), 1400);
    let (code, text) = ksmauto(&["status", "--prometheus"]);
    assert_eq!(code, 0);
    let scrape = parse(&text);
    let pid = dups.pid().to_string();
    let cgroup = our_shown_cgroup();
    let me = [
        ("pid", pid.as_str()),
        ("comm", dups.comm()),
        ("cgroup", cgroup.as_str()),
    ];
    assert!(
        value(&scrape, "ksm_process_merging_pages", &me) >= 1400.0,
        "{text}"
    );
    assert!(
        value(&scrape, "ksm_process_profit_bytes", &me) > 0.0,
        "{text}"
    );
    assert_eq!(value(&scrape, "ksm_process_mergeable", &me), 1.0);
    // 2000 pages written in one mergeable mapping.
    let page = value(&scrape, "ksm_page_size_bytes", &[]);
    assert!(value(&scrape, "ksm_process_mergeable_bytes", &me) >= 2000.0 * page);
    assert!(value(&scrape, "ksm_user_merged_bytes", &[("user", "root")]) >= 1400.0 * page);
    assert!(
        value(
            &scrape,
            "ksm_cgroup_mergeable_bytes",
            &[("cgroup", &cgroup)]
        ) >= 2000.0 * page
    );
    for counter in [
        "ksm_full_scans_total",
        "ksm_scanned_pages_total",
        "ksm_skipped_pages_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {counter} counter")),
            "{counter}:\n{text}"
        );
    }
    assert!(value(&scrape, "ksm_full_scans_total", &[]) >= 1.0);
    assert!(value(&scrape, "ksm_sharing_pages", &[]) >= 1400.0);
    // The guard sets sleep_millisecs 10.
    assert_eq!(value(&scrape, "ksm_sleep_seconds", &[]), 0.01);
}

#[test]
fn textfile_is_written_whole_and_renamed_into_place() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !have_ksm() {
        eprintln!("SKIPPED: no KSM");
        return;
    }
    let dups = Dups::start(None);
    let dir = std::env::temp_dir().join(format!("ksmauto-textfile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ksm.prom");
    std::fs::write(&path, "old\n").unwrap();
    let (code, stdout) = ksmauto(&["status", "--textfile", path.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(stdout, "", "the metrics go to the file only");
    let text = std::fs::read_to_string(&path).unwrap();
    let scrape = parse(&text);
    assert!(
        value(
            &scrape,
            "ksm_process_mergeable",
            &[("pid", &dups.pid().to_string())]
        ) == 1.0
    );
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["ksm.prom"], "no temporary file left");
    let (code, _) = ksmauto(&["status", "--textfile", "/nonexistent-dir/ksm.prom"]);
    assert_eq!(code, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

fn status_json() -> serde_json::Value {
    let (code, out) = ksmauto(&["status", "--json"]);
    assert_eq!(code, 0);
    serde_json::from_str(&out).expect("JSON")
}

#[test]
fn two_users_with_mergeable_memory_get_the_trust_domain_warning() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !have_ksm() || unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs KSM and root (to start a process as nobody)");
        return;
    }
    let root = Dups::start(None);
    let nobody = Dups::start(Some("nobody"));
    let v = status_json();
    let users = v["trust_domains"]["by_user"].as_array().unwrap();
    let user = |name: &str| {
        users
            .iter()
            .find(|u| u["name"] == name)
            .unwrap_or_else(|| panic!("no {name}: {v}"))
    };
    let page = v["page_size"].as_u64().unwrap();
    assert!(user("root")["mergeable_bytes"].as_u64().unwrap() >= 2000 * page);
    assert_eq!(user("nobody")["uid"], 65534);
    assert!(user("nobody")["mergeable_bytes"].as_u64().unwrap() >= 2000 * page);
    let procs = v["processes"].as_array().unwrap();
    for (pid, name) in [(root.pid(), "root"), (nobody.pid(), "nobody")] {
        let p = procs
            .iter()
            .find(|p| p["pid"] == pid)
            .unwrap_or_else(|| panic!("no {pid}: {v}"));
        assert_eq!(p["user"], name);
    }
    let warning = v["trust_domains"]["warning"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"));
    assert!(
        warning.starts_with("KSM merges across these trust domains: users ")
            && warning.contains("root (")
            && warning.contains("nobody ("),
        "{warning}"
    );
    let (code, text) = ksmauto(&["status"]);
    assert_eq!(code, 0);
    // Other processes' figures move between two calls: the line's start only.
    let line = text
        .lines()
        .find(|l| l.starts_with("warning: KSM merges across these trust domains: users "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("root (") && line.contains("nobody ("),
        "{line}"
    );
    assert!(text.contains("nobody (65534)"), "{text}");
    let (_, prom) = ksmauto(&["status", "--prometheus"]);
    let scrape = parse(&prom);
    assert_eq!(value(&scrape, "ksm_trust_domains_crossed", &[]), 1.0);
    assert!(
        value(
            &scrape,
            "ksm_user_mergeable_bytes",
            &[("user", "nobody"), ("uid", "65534")]
        ) >= 2000.0 * page as f64
    );
}

#[test]
fn one_user_with_mergeable_memory_gets_no_warning() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !have_ksm() {
        eprintln!("SKIPPED: no KSM");
        return;
    }
    let _a = Dups::start(None);
    let _b = Dups::start(None);
    let v = status_json();
    // The whole machine is shown: this holds while no other user's process
    // has mergeable memory.
    assert!(v["trust_domains"]["warning"].is_null(), "{v}");
    let users = v["trust_domains"]["by_user"].as_array().unwrap();
    assert!(users.iter().any(|u| u["name"] == "root"), "{v}");
    let (_, text) = ksmauto(&["status"]);
    assert!(!text.contains("trust domains"), "{text}");
    let (_, prom) = ksmauto(&["status", "--prometheus"]);
    assert_eq!(value(&parse(&prom), "ksm_trust_domains_crossed", &[]), 0.0);
}

/// `madvise_only` (see its source: asked for merging, `ksm_rmap_items` 0,
/// resident mergeable memory), as `user` (None: as we are).
fn start_madvise_only(user: Option<&str>) -> Dups {
    let prog = common::compile_c("cli/tests/c/madvise_only.c", &[]);
    let mut cmd = match user {
        None => Command::new(&prog),
        Some(u) => {
            let (uid, gid) = ids_of(u);
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".into(),
                "--".into(),
            ])
            .arg(&prog);
            c
        }
    };
    cmd.env_remove("LD_PRELOAD")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("spawn madvise_only");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("ready"), "madvise_only said {line:?}");
    let name = prog.file_name().unwrap().to_string_lossy();
    Dups(child, name[..name.len().min(15)].to_string())
}

/// A process that only called madvise(MADV_MERGEABLE), before ksmd
/// registered any page of it (`ksm_mergeable: yes`, `ksm_rmap_items 0`),
/// is listed, and counts for the trust domains: two users with such
/// processes get the warning. Before, status skipped it (no rmap items, no
/// merge-any), while `doctor --all` listed it.
#[test]
fn a_process_that_only_asked_with_madvise_is_listed_and_counts_for_trust_domains() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !have_ksm() || unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs KSM and root (to start a process as nobody)");
        return;
    }
    let root = start_madvise_only(None);
    let nobody = start_madvise_only(Some("nobody"));
    for p in [&root, &nobody] {
        let k = std::fs::read_to_string(format!("/proc/{}/ksm_stat", p.pid())).unwrap();
        assert!(
            k.contains("ksm_rmap_items 0") && k.contains("ksm_mergeable: yes"),
            "{k}"
        );
    }
    let v = status_json();
    let procs = v["processes"].as_array().unwrap();
    for (p, user) in [(&root, "root"), (&nobody, "nobody")] {
        let entry = procs
            .iter()
            .find(|e| e["pid"] == p.pid())
            .unwrap_or_else(|| panic!("{} ({user}) not listed: {v}", p.pid()));
        assert_eq!(entry["user"], user);
        assert_eq!(entry["mode"], "advise", "{entry}");
        assert_eq!(entry["mergeable"], true, "{entry}");
        assert!(entry["mergeable_bytes"].as_u64().unwrap() > 0, "{entry}");
    }
    let warning = v["trust_domains"]["warning"]
        .as_str()
        .unwrap_or_else(|| panic!("no warning: {v}"));
    assert!(
        warning.contains("root (") && warning.contains("nobody ("),
        "{warning}"
    );
    let (_, text) = ksmauto(&["status"]);
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with(&format!("{} ", nobody.pid()))),
        "{text}"
    );
}

/// Two cgroup v2 directories named like docker's container scopes, removed
/// again at the end (the processes in them are gone by then).
struct Containers(std::path::PathBuf);

impl Drop for Containers {
    fn drop(&mut self) {
        for n in ["docker-b.scope", "docker-a.scope", ""] {
            let _ = std::fs::remove_dir(self.0.join("system.slice").join(n));
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Where cgroup2 is mounted and writable, if it is.
fn cgroup2_root() -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let dir = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(2) == Some(&"cgroup2")).then(|| std::path::PathBuf::from(f[1]))
    })?;
    let base = our_cgroup();
    Some(dir.join(base.trim_start_matches('/')))
}

#[test]
fn two_containers_with_mergeable_memory_get_the_trust_domain_warning() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = cgroup2_root();
    if !have_ksm() || root.is_none() || unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs KSM, cgroup2 and root");
        return;
    }
    let top = root
        .unwrap()
        .join(format!("ksmauto-test-{}", std::process::id()));
    let cgroups = Containers(top.clone());
    let a = Dups::start(None);
    let b = Dups::start(None);
    let mut paths = vec![];
    for (dups, scope) in [(&a, "docker-a.scope"), (&b, "docker-b.scope")] {
        let dir = top.join("system.slice").join(scope);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("SKIPPED: cannot make a cgroup: {e}");
            return;
        }
        std::fs::write(dir.join("cgroup.procs"), dups.pid().to_string()).unwrap();
        paths.push(format!(
            "{}/ksmauto-test-{}/system.slice/{scope}",
            our_cgroup().trim_end_matches('/'),
            std::process::id()
        ));
    }
    let v = status_json();
    let by_cgroup = v["trust_domains"]["by_cgroup"].as_array().unwrap();
    let page = v["page_size"].as_u64().unwrap();
    for p in &paths {
        let d = by_cgroup
            .iter()
            .find(|d| d["name"] == p.as_str())
            .unwrap_or_else(|| panic!("no {p}: {v}"));
        assert!(d["mergeable_bytes"].as_u64().unwrap() >= 2000 * page, "{v}");
    }
    let warning = v["trust_domains"]["warning"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"));
    assert!(warning.contains("containers "), "{warning}");
    for p in &paths {
        assert!(warning.contains(p.as_str()), "{warning}");
    }
    let (_, prom) = ksmauto(&["status", "--prometheus"]);
    let scrape = parse(&prom);
    assert!(
        value(
            &scrape,
            "ksm_cgroup_mergeable_bytes",
            &[("cgroup", &paths[0])]
        ) >= 2000.0 * page as f64
    );
    assert_eq!(value(&scrape, "ksm_trust_domains_crossed", &[]), 1.0);
    drop(a);
    drop(b);
    drop(cgroups);
}

fn ksmauto_as_nobody(args: &[&str]) -> std::process::Output {
    let (uid, gid) = ids_of("nobody");
    Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".into(),
            "--".into(),
        ])
        .arg(env!("CARGO_BIN_EXE_ksmauto"))
        .args(args)
        .env_remove("LD_PRELOAD")
        .env_remove("KSMAUTO_SYSFS_KSM")
        .output()
        .expect("run ksmauto as nobody")
}

/// A user who is not root may not read other users' `ksm_stat`: `status`
/// and `doctor --all` said nothing of it, and a root process using KSM was
/// silently missing, with it any trust-domain warning. Now they say how
/// many processes could not be read.
#[test]
fn as_another_user_status_and_doctor_say_some_processes_could_not_be_read() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !have_ksm() || unsafe { libc::geteuid() } != 0 {
        panic!("needs KSM and root (to run ksmauto as nobody)");
    }
    let root = Dups::start(None);
    let o = ksmauto_as_nobody(&["status", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert!(
        v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["pid"] != root.pid()),
        "nobody cannot read root's process: {v}"
    );
    assert!(
        v["unreadable_processes"].as_u64().unwrap_or(0) >= 1,
        "root's process using KSM is counted as unreadable: {v}"
    );
    let o = ksmauto_as_nobody(&["status"]);
    let text = common::text(&o.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("note: ") && l.contains("could not be read")),
        "{text}"
    );
    let o = ksmauto_as_nobody(&["status", "--prometheus"]);
    let scrape = parse(&common::text(&o.stdout));
    assert!(value(&scrape, "ksm_unreadable_processes", &[]) >= 1.0);
    let o = ksmauto_as_nobody(&["doctor", "--all"]);
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o.stderr));
    let err = common::text(&o.stderr);
    assert!(err.contains("could not be read"), "doctor --all: {err}");
    // As root nothing is unreadable.
    let v = status_json();
    assert_eq!(v["unreadable_processes"], 0, "{v}");
}

/// `--textfile` into a directory this user may not write exits 4 (the
/// documented code for permission errors); it exited 1.
#[test]
fn textfile_into_a_directory_not_ours_exits_4() {
    if !have_ksm() || unsafe { libc::geteuid() } != 0 {
        panic!("needs KSM and root (to run ksmauto as nobody)");
    }
    let dir = std::env::temp_dir().join(format!("ksmauto-textfile-perm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let target = dir.join("ksm.prom");
    let o = ksmauto_as_nobody(&["status", "--textfile", target.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    let err = common::text(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
}

/// A comm with terminal escapes or a newline (any bytes but NUL are
/// allowed) is escaped in every text output: no ESC byte reaches the
/// terminal, and a newline in a name adds no line of its own. Before,
/// `status`, `doctor`, `estimate` and `run` printed it raw.
#[test]
fn control_characters_in_a_comm_are_escaped_in_text_output() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !have_ksm() {
        eprintln!("SKIPPED: no KSM");
        return;
    }
    let prog = common::compile_c("cli/tests/c/evilcomm.c", &[]);
    let start = |mode: &str| {
        let mut c = Command::new(&prog);
        c.args([mode, "30"])
            .env_remove("LD_PRELOAD")
            .stdout(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        Dups(child, String::new())
    };
    let esc = start("esc");
    let nl = start("nl");
    let clean = |what: &str, text: &str| {
        assert!(!text.contains('\x1b'), "{what}: ESC in {text:?}");
        assert!(
            !text.lines().any(|l| l.starts_with("  666 fake")),
            "{what}: a line of the comm's own: {text}"
        );
        assert!(
            text.contains("x\\n  666 fake"),
            "{what}: the newline shown as \\n: {text}"
        );
    };
    let (_, status) = ksmauto(&["status"]);
    clean("status", &status);
    assert!(status.contains("\\e[3A\\e[2K"), "{status}");
    let (_, doctor) = ksmauto(&["doctor", "--all"]);
    clean("doctor --all", &doctor);
    let (_, doctor) = ksmauto(&["doctor", &esc.pid().to_string()]);
    assert!(
        !doctor.contains('\x1b') && doctor.contains("\\e[3A"),
        "{doctor}"
    );
    let (_, estimate) = ksmauto(&[
        "estimate",
        "-v",
        &esc.pid().to_string(),
        &nl.pid().to_string(),
    ]);
    clean("estimate", &estimate);
    // run: the summary on stderr names the command's process by its comm.
    let o = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .args(["run", "--lib", common::lib().to_str().unwrap(), "--"])
        .arg(&prog)
        .args(["nl", "1"])
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap();
    clean("run", &common::text(&o.stderr));
    drop(esc);
    drop(nl);
}

/// Directories made in cgroup v1 hierarchies, removed at the end (after the
/// processes in them are gone); `docker/` only if it was made here.
struct V1Cgroups(Vec<std::path::PathBuf>);

impl Drop for V1Cgroups {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            for _ in 0..100 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Where the cgroup v1 hierarchy with this controller (or `name=`) is mounted.
fn cgroup_v1_mount(controller: &str) -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(2) == Some(&"cgroup") && f.get(3)?.split(',').any(|o| o == controller))
            .then(|| std::path::PathBuf::from(f[1]))
    })
}

/// On a cgroup v1 (or hybrid) host the unified line says `0::/` for every
/// process: the containers are in the v1 hierarchies (`/docker/ID` under
/// name=systemd, pids, memory…). Two processes in two docker-style v1
/// cgroups are two cgroups and two containers, with the warning. Before,
/// status read the `0::` line only, so every process was in `/` and no
/// container was ever found on such a host.
#[test]
fn on_cgroup_v1_the_containers_are_found_in_the_v1_hierarchies() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let hierarchies: Vec<std::path::PathBuf> = ["name=systemd", "pids"]
        .iter()
        .filter_map(|c| cgroup_v1_mount(c))
        .collect();
    if !have_ksm() || hierarchies.is_empty() || unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs KSM, a cgroup v1 hierarchy and root");
        return;
    }
    let unified = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    if unified.lines().any(|l| l.starts_with("0::") && l != "0::/") {
        eprintln!("SKIPPED: this host puts processes in cgroup v2 paths");
        return;
    }
    // Made first, so dropped last (also on a failed assertion): a cgroup
    // can be removed only once its processes are gone.
    let mut made = V1Cgroups(vec![]);
    let a = Dups::start(None);
    let b = Dups::start(None);
    let ids: Vec<String> = ["a", "b"]
        .iter()
        .map(|s| format!("ksmautotest{}{s}", std::process::id()))
        .collect();
    for h in &hierarchies {
        let docker = h.join("docker");
        if !docker.exists() {
            std::fs::create_dir(&docker).unwrap();
            made.0.push(docker.clone());
        }
        for (dups, id) in [(&a, &ids[0]), (&b, &ids[1])] {
            let dir = docker.join(id);
            std::fs::create_dir(&dir).unwrap();
            made.0.push(dir.clone());
            std::fs::write(dir.join("cgroup.procs"), dups.pid().to_string()).unwrap();
        }
    }
    let paths: Vec<String> = ids.iter().map(|id| format!("/docker/{id}")).collect();
    let v = status_json();
    for (dups, path) in [(&a, &paths[0]), (&b, &paths[1])] {
        let p = v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == dups.pid())
            .unwrap_or_else(|| panic!("{} not listed: {v}", dups.pid()));
        assert_eq!(p["cgroup"], path.as_str(), "{p}");
    }
    let containers = &v["trust_domains"]["containers"];
    for path in &paths {
        assert!(
            containers
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == path.as_str()),
            "{path} not a container: {containers}"
        );
    }
    let warning = v["trust_domains"]["warning"]
        .as_str()
        .unwrap_or_else(|| panic!("no warning: {v}"));
    assert!(
        warning.contains(&paths[0]) && warning.contains(&paths[1]),
        "{warning}"
    );
    drop(a);
    drop(b);
    drop(made);
}

/// `--textfile` takes any file name the filesystem takes: with a 255-byte
/// name (NAME_MAX) its temporary name, `.NAME.PID.tmp`, was longer than the
/// limit and the write failed ("File name too long"). The temporary name
/// now shortens NAME to fit; it still ends in `.tmp`, never `.prom`.
#[test]
fn textfile_takes_a_name_of_the_longest_length_allowed() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !have_ksm() {
        eprintln!("SKIPPED: no KSM");
        return;
    }
    let dir = std::env::temp_dir().join(format!("ksmauto-textfile-long-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let name = format!("{}.prom", "k".repeat(255 - ".prom".len()));
    assert_eq!(name.len(), 255);
    let path = dir.join(&name);
    std::fs::write(&path, "old\n").expect("the filesystem takes a 255-byte name");
    let o = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
        .args(["status", "--textfile"])
        .arg(&path)
        .env_remove("LD_PRELOAD")
        .env_remove("KSMAUTO_SYSFS_KSM")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o.stderr));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("# TYPE ksm_run gauge"), "{text}");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [name], "no temporary file left");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- Unmerge debt ---------------------------------------------------------

/// A merging process owes a page for each page it has merged
/// (`ksm_merging_pages` + `ksm_zero_pages`, read here from its ksm_stat):
/// the same figure in the JSON, the text's DEBT column and Prometheus; the
/// host owes `pages_sharing` + `ksm_zero_pages`, set against MemAvailable.
#[test]
fn unmerge_debt_is_what_writing_the_merged_pages_would_take_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_ksm) = common::ksmd() else { return };
    let dups = Dups::start(None);
    wait_merged(dups.pid(), 1400);
    // ksmd may still be at it: take a status between two equal readings.
    let (v, merged) = (0..50)
        .find_map(|_| {
            let before = common::merged_pages_of(dups.pid());
            let v = status_json();
            (common::merged_pages_of(dups.pid()) == before).then_some((v, before))
        })
        .expect("ksm_stat never held still across a status");
    let page = v["page_size"].as_u64().unwrap();
    let me = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == dups.pid())
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(
        me["unmerge_debt_bytes"].as_u64().unwrap(),
        merged * page,
        "{me}"
    );
    let debt = &v["unmerge_debt"];
    let sharing = v["values"]["pages_sharing"].as_u64().unwrap();
    let zero = v["values"]["ksm_zero_pages"].as_u64().unwrap_or(0);
    assert_eq!(debt["pages"].as_u64().unwrap(), sharing + zero, "{debt}");
    assert_eq!(debt["bytes"].as_u64().unwrap(), (sharing + zero) * page);
    assert!(sharing >= 1400, "{v}");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let available: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    let shown = debt["mem_available_bytes"].as_u64().unwrap();
    assert!(
        shown.abs_diff(available * 1024) < available * 1024 / 5,
        "{shown} vs MemAvailable {available} kB"
    );
    assert_eq!(debt["exceeds_available"], false);
    let (_, text) = ksmauto(&["status"]);
    assert!(text.contains("unmerge debt: "), "{text}");
    assert!(text.contains(" DEBT "), "{text}");
    // ksmd may merge a few more pages during the scrape: it shows what
    // was merged between the readings before and after it.
    let merged_before = common::merged_pages_of(dups.pid());
    let (_, prom) = ksmauto(&["status", "--prometheus"]);
    let merged_after = common::merged_pages_of(dups.pid());
    let scrape = parse(&prom);
    let pid = dups.pid().to_string();
    let cgroup = our_shown_cgroup();
    let labels = [
        ("pid", pid.as_str()),
        ("comm", dups.comm()),
        ("cgroup", cgroup.as_str()),
    ];
    let debt_now = value(&scrape, "ksm_process_unmerge_debt_bytes", &labels);
    let (low, high) = (merged_before.min(merged_after), merged_before.max(merged_after));
    assert!(
        (low * page) as f64 <= debt_now && debt_now <= (high * page) as f64,
        "{debt_now} not between {low} and {high} merged pages"
    );
    assert!(value(&scrape, "ksm_unmerge_debt_bytes", &[]) >= 1400.0 * page as f64);
    assert!(value(&scrape, "ksm_mem_available_bytes", &[]) > 0.0);
}

/// `status` with a made-up sysfs (`pages_sharing` 1000, `ksm_zero_pages`
/// 24: a debt of 1024 pages) and a made-up /proc/meminfo: a debt beyond
/// MemAvailable + SwapFree is a warning (and `exceeds_available`, and the
/// Prometheus gauge 1); beyond MemAvailable alone, a note that it would
/// swap; within MemAvailable, nothing.
#[test]
fn a_debt_beyond_the_memory_available_is_warned() {
    let dir = std::env::temp_dir().join(format!("ksmauto-debt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("ksm")).unwrap();
    for (f, v) in [
        ("run", "1"),
        ("pages_shared", "10"),
        ("pages_sharing", "1000"),
        ("ksm_zero_pages", "24"),
        ("use_zero_pages", "1"),
    ] {
        std::fs::write(dir.join("ksm").join(f), format!("{v}\n")).unwrap();
    }
    let debt_kb = 1024 * common_page_kb();
    let status = |available_kb: u64, swap_kb: u64, args: &[&str]| {
        let meminfo = dir.join(format!("meminfo-{available_kb}-{swap_kb}"));
        std::fs::write(
            &meminfo,
            format!(
                "MemTotal:  16000000 kB\nMemAvailable: {available_kb} kB\nSwapFree: {swap_kb} kB\n"
            ),
        )
        .unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_ksmauto"))
            .arg("status")
            .args(args)
            .env("KSMAUTO_SYSFS_KSM", dir.join("ksm"))
            .env("KSMAUTO_PROC_MEMINFO", &meminfo)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", common::text(&o.stderr));
        common::text(&o.stdout)
    };
    let json =
        |a, s| serde_json::from_str::<serde_json::Value>(&status(a, s, &["--json"])).unwrap();
    let v = json(debt_kb / 4, debt_kb / 4);
    assert_eq!(v["unmerge_debt"]["exceeds_available"], true, "{v}");
    assert_eq!(v["unmerge_debt"]["bytes"], 1024 * 1024 * common_page_kb());
    let text = status(debt_kb / 4, debt_kb / 4, &[]);
    assert!(
        text.contains("warning: unmerge debt ") && text.contains(" exceeds the memory available"),
        "{text}"
    );
    assert!(text.contains("OOM killer"), "{text}");
    let prom = status(debt_kb / 4, debt_kb / 4, &["--prometheus"]);
    assert_eq!(
        value(&parse(&prom), "ksm_unmerge_debt_exceeds_available", &[]),
        1.0
    );
    let v = json(debt_kb / 4, debt_kb * 2);
    assert_eq!(v["unmerge_debt"]["exceeds_available"], false, "{v}");
    assert_eq!(v["unmerge_debt"]["exceeds_memory"], true, "{v}");
    let text = status(debt_kb / 4, debt_kb * 2, &[]);
    assert!(
        text.contains("note: unmerge debt ") && text.contains("into swap"),
        "{text}"
    );
    let v = json(debt_kb * 2, 0);
    assert_eq!(v["unmerge_debt"]["warning"], serde_json::Value::Null, "{v}");
    let prom = status(debt_kb * 2, 0, &["--prometheus"]);
    assert_eq!(
        value(&parse(&prom), "ksm_unmerge_debt_exceeds_available", &[]),
        0.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The page size in kB.
fn common_page_kb() -> u64 {
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64) / 1024
}
