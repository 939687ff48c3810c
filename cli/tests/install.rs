//! scripts/install puts the library where `ksmauto run` finds it.

use ksmauto_testsupport as common;

#[test]
fn installed_ksmauto_finds_the_installed_library() {
    common::lib();
    let prefix = std::env::temp_dir().join(format!("ksmauto-prefix-{}", std::process::id()));
    let st = std::process::Command::new(common::repo().join("scripts/install"))
        .arg("--prefix")
        .arg(&prefix)
        .status()
        .unwrap();
    assert!(st.success());
    for f in ["lib/libksmauto.so", "bin/ksmauto", "include/ksmauto.h"] {
        assert!(prefix.join(f).exists(), "{f}");
    }
    let o = std::process::Command::new(prefix.join("bin/ksmauto"))
        .args(["run", "--json", "--", "true"])
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["library"].as_str().unwrap(),
        prefix.join("lib/libksmauto.so").to_str().unwrap()
    );
    let _ = std::fs::remove_dir_all(&prefix);
}

/// `--systemd-unit` writes a drop-in that covers dynamic programs with the
/// installed library and static ones with `MemoryKSM=yes`; systemd reads
/// it (`systemd-analyze verify`, where systemd is installed).
#[test]
fn the_systemd_drop_in_covers_both_kinds_of_program() {
    common::lib();
    let base = std::env::temp_dir().join(format!("ksmauto-dropin-{}", std::process::id()));
    let (prefix, units) = (base.join("prefix"), base.join("units"));
    // A systemd with a working MemoryKSM= (256+), on this kernel (6.7+):
    // the drop-in has it. The systemd-analyze below is the real one.
    let fake = fake_systemctl(&base, 257);
    let install = |args: &[&str]| {
        std::process::Command::new(common::repo().join("scripts/install"))
            .arg("--prefix")
            .arg(&prefix)
            .arg("--systemd-dir")
            .arg(&units)
            .args(args)
            .env("PATH", with_first(&fake))
            .env_remove("KSMAUTO_INSTALL_MERGE_PROBE")
            .output()
            .unwrap()
    };
    for bad in ["../etc", "a b", "x.socket"] {
        let o = install(&["--systemd-unit", bad]);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{bad}: {}",
            common::text(&o.stderr)
        );
    }
    let o = install(&["--systemd-unit", "demo"]);
    assert!(o.status.success(), "{}", common::text(&o.stderr));
    let conf_path = units.join("demo.service.d/ksmauto.conf");
    let conf = std::fs::read_to_string(&conf_path).unwrap();
    let settings: Vec<String> = conf
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_string)
        .collect();
    let lib = std::fs::canonicalize(prefix.join("lib/libksmauto.so")).unwrap();
    assert_eq!(
        settings,
        [
            "[Service]".to_string(),
            format!("Environment=LD_PRELOAD={}", lib.display()),
            "MemoryKSM=yes".to_string()
        ]
    );
    // The preload it names loads: a dynamic program reports under it.
    let o = std::process::Command::new("true")
        .env("LD_PRELOAD", &lib)
        .env("KSMAUTO_STATS", "stderr")
        .output()
        .unwrap();
    assert!(
        common::text(&o.stderr).contains("ksmauto["),
        "{}",
        common::text(&o.stderr)
    );
    match std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    {
        Err(_) => {
            eprintln!("systemd-analyze missing: the drop-in's syntax is not checked by systemd")
        }
        Ok(v) => {
            let version: u32 = common::text(&v.stdout)
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            std::fs::write(
                units.join("demo.service"),
                "[Service]\nExecStart=/bin/true\n",
            )
            .unwrap();
            let o = std::process::Command::new("systemd-analyze")
                .arg("verify")
                .arg(units.join("demo.service"))
                .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()))
                .output()
                .unwrap();
            let err = common::text(&o.stderr);
            // systemd read the drop-in: before 254 it names MemoryKSM as
            // unknown (and ignores it); nothing else in it is refused.
            let about_dropin: Vec<&str> =
                err.lines().filter(|l| l.contains("ksmauto.conf")).collect();
            if version < 254 {
                assert!(
                    about_dropin.len() == 1 && about_dropin[0].contains("Unknown key 'MemoryKSM'"),
                    "systemd {version}: {err}"
                );
            } else {
                assert!(about_dropin.is_empty(), "systemd {version}: {err}");
            }
            assert!(o.status.success(), "{err}");
        }
    }
    let _ = std::fs::remove_dir_all(&base);
}

/// A directory whose `systemctl --version` says `systemd VERSION`.
fn fake_systemctl(base: &std::path::Path, version: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = base.join(format!("systemd-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    let sc = dir.join("systemctl");
    std::fs::write(
        &sc,
        format!("#!/bin/sh\necho 'systemd {version} ({version}.1-1)'\necho '+PAM +AUDIT'\n"),
    )
    .unwrap();
    std::fs::set_permissions(&sc, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `PATH` with `dir` first.
fn with_first(dir: &std::path::Path) -> std::ffi::OsString {
    let mut p = dir.as_os_str().to_owned();
    p.push(":");
    p.push(std::env::var_os("PATH").unwrap_or_default());
    p
}

/// systemd fails every process of a unit with MemoryKSM=yes (EXIT_KSM)
/// when the prctl fails: on a kernel that refuses it, and on any kernel
/// under systemd 254/255 (extra arguments; fixed in 256). The drop-in has
/// the line only where neither holds, else commented out with the reason,
/// which install also says on stderr.
#[test]
fn memory_ksm_is_written_only_where_systemd_and_the_kernel_take_it() {
    common::lib();
    let base = std::env::temp_dir().join(format!("ksmauto-memoryksm-{}", std::process::id()));
    let (prefix, units) = (base.join("prefix"), base.join("units"));
    let install = |systemd: u32, probe: Option<&str>| {
        let fake = fake_systemctl(&base, systemd);
        let mut c = std::process::Command::new(common::repo().join("scripts/install"));
        c.arg("--prefix")
            .arg(&prefix)
            .arg("--systemd-dir")
            .arg(&units)
            .args(["--systemd-unit", "demo"])
            .env("PATH", with_first(&fake))
            .env_remove("KSMAUTO_INSTALL_MERGE_PROBE");
        if let Some(p) = probe {
            c.env("KSMAUTO_INSTALL_MERGE_PROBE", p);
        }
        let o = c.output().unwrap();
        let err = common::text(&o.stderr);
        assert!(o.status.success(), "{err}");
        let conf = std::fs::read_to_string(units.join("demo.service.d/ksmauto.conf")).unwrap();
        let line = conf
            .lines()
            .find(|l| l.contains("MemoryKSM=yes") && !l.starts_with("# Static"))
            .unwrap_or_else(|| panic!("{conf}"))
            .to_string();
        (line, err)
    };
    // systemd 256+ and this kernel (6.18 keeps the flag): written.
    let (line, err) = install(257, None);
    assert_eq!(line, "MemoryKSM=yes", "{err}");
    assert!(!err.contains("commented out"), "{err}");
    // Too old to know it, or with the bug: commented out, and said.
    for (systemd, why) in [(252, "does not know MemoryKSM="), (255, "PR #31683")] {
        let (line, err) = install(systemd, None);
        assert!(
            line.starts_with("# MemoryKSM=yes  (left out: systemd") && line.contains(why),
            "{line}"
        );
        assert!(err.contains("MemoryKSM=yes written commented out"), "{err}");
    }
    // A kernel that refuses the prctl (the probe's answer stands in).
    let refused =
        "this kernel refuses PR_SET_MEMORY_MERGE (Invalid argument; it needs Linux 6.4 and KSM)";
    let (line, err) = install(257, Some(refused));
    assert_eq!(line, format!("# MemoryKSM=yes  (left out: {refused})"));
    assert!(err.contains(refused), "{err}");
    let _ = std::fs::remove_dir_all(&base);
}

/// scripts/install with `args`, its `--prefix` and `--systemd-dir` under
/// `base`, a systemd 257 first on PATH, and the umask `umask`.
fn install_under_umask(
    base: &std::path::Path,
    umask: &str,
    args: &[&std::ffi::OsStr],
) -> std::process::Output {
    let fake = fake_systemctl(base, 257);
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(common::repo().join("scripts/install"))
        .args(args)
        .env("PATH", with_first(&fake))
        .env("KSMAUTO_INSTALL_MERGE_PROBE", "kept")
        .output()
        .unwrap()
}

/// Under umask 000 the drop-in was written 0666: any user could add an
/// `ExecStartPre=` to it, a command systemd runs as root. Every file and
/// directory install makes has its own mode, whatever the umask.
#[test]
fn every_installed_file_has_its_mode_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    common::lib();
    let base = std::env::temp_dir().join(format!("ksmauto-umask-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (prefix, units) = (base.join("prefix"), base.join("units"));
    let o = install_under_umask(
        &base,
        "000",
        &[
            "--prefix".as_ref(),
            prefix.as_os_str(),
            "--systemd-dir".as_ref(),
            units.as_os_str(),
            "--systemd-unit".as_ref(),
            "demo".as_ref(),
        ],
    );
    assert!(o.status.success(), "{}", common::text(&o.stderr));
    let mode = |p: &std::path::Path| {
        std::fs::symlink_metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o7777
    };
    for (path, want) in [
        (prefix.clone(), 0o755),
        (prefix.join("lib"), 0o755),
        (prefix.join("bin"), 0o755),
        (prefix.join("include"), 0o755),
        (prefix.join("lib/libksmauto.so"), 0o755),
        (prefix.join("bin/ksmauto"), 0o755),
        (prefix.join("include/ksmauto.h"), 0o644),
        (units.clone(), 0o755),
        (units.join("demo.service.d"), 0o755),
        (units.join("demo.service.d/ksmauto.conf"), 0o644),
    ] {
        assert_eq!(
            format!("{:o}", mode(&path)),
            format!("{want:o}"),
            "{}",
            path.display()
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}

/// A prefix a unit file would need quoted (a space) was refused only after
/// the library, the tool and the header were installed there. Every
/// argument is checked before anything is written.
#[test]
fn a_prefix_with_a_space_is_refused_before_anything_is_written() {
    common::lib();
    let base = std::env::temp_dir().join(format!("ksmauto-space-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (prefix, units) = (base.join("pre fix"), base.join("units"));
    let o = install_under_umask(
        &base,
        "022",
        &[
            "--prefix".as_ref(),
            prefix.as_os_str(),
            "--systemd-dir".as_ref(),
            units.as_os_str(),
            "--systemd-unit".as_ref(),
            "demo".as_ref(),
        ],
    );
    let err = common::text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("quoted"), "{err}");
    assert!(!prefix.exists(), "{} was made: {err}", prefix.display());
    assert!(!units.exists(), "{} was made: {err}", units.display());
    assert!(!common::text(&o.stdout).contains("installed"));
    let _ = std::fs::remove_dir_all(&base);
}

/// A unit name is what `systemd-escape` makes of a name (`foo-bar` →
/// `foo\x2dbar`): the backslash is one of systemd's unit-name characters,
/// and was refused. Templates and instances are names too; what systemd
/// refuses (an empty prefix before `@`, another unit type, a path) is
/// still refused, before anything is written.
#[test]
fn escaped_template_and_instance_unit_names_are_taken() {
    common::lib();
    let base = std::env::temp_dir().join(format!("ksmauto-escaped-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (prefix, units) = (base.join("prefix"), base.join("units"));
    let install = |unit: &str| {
        install_under_umask(
            &base,
            "022",
            &[
                "--prefix".as_ref(),
                prefix.as_os_str(),
                "--systemd-dir".as_ref(),
                units.as_os_str(),
                "--systemd-unit".as_ref(),
                unit.as_ref(),
            ],
        )
    };
    for (unit, dropin) in [
        (r"foo\x2dbar.service", r"foo\x2dbar.service.d"),
        (r"foo\x2dbar", r"foo\x2dbar.service.d"),
        (r"web@.service", r"web@.service.d"),
        (r"web@a\x20b.service", r"web@a\x20b.service.d"),
        ("my.app", "my.app.service.d"),
    ] {
        let o = install(unit);
        let err = common::text(&o.stderr);
        assert!(o.status.success(), "{unit}: {err}");
        let conf = units.join(dropin).join("ksmauto.conf");
        assert!(conf.exists(), "{unit}: no {}", conf.display());
        assert!(
            common::text(&o.stdout).contains(&format!("{}", conf.display())),
            "{unit}: {}",
            common::text(&o.stdout)
        );
    }
    let _ = std::fs::remove_dir_all(&base);
    for bad in [
        "@web.service",
        "x.socket",
        "a b",
        "../etc",
        "",
        "x/y.service",
    ] {
        let o = install(bad);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{bad:?}: {}",
            common::text(&o.stderr)
        );
        assert!(!base.join("prefix").exists(), "{bad:?}: installed");
    }
    let long = "a".repeat(300);
    assert_eq!(install(&long).status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&base);
}
