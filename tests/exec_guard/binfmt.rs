//! `binfmt_misc` rules, which the kernel tries before every other format:
//! a rule that claims a file runs its interpreter instead, so the guard
//! must not trust what the file itself says (a `#!` script whose
//! interpreter is missing: "nothing runs"; a dynamic program: "the library
//! runs"). Tested in a user namespace with its own `binfmt_misc` instance
//! (Linux 6.7+): rules of the host's instance would apply to every process
//! of the machine.

use super::common;
use super::lab::*;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

const NAMESPACES: [&str; 5] = ["-U", "-r", "-m", "--propagation", "private"];

/// Whether a user namespace may mount a `binfmt_misc` instance of its own.
fn own_binfmt_misc_instances() -> bool {
    Command::new("unshare")
        .args(NAMESPACES)
        .args([
            "mount",
            "-t",
            "binfmt_misc",
            "binfmt_misc",
            "/proc/sys/fs/binfmt_misc",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn script(lab: &Lab, name: &str, line: &str) -> String {
    let path = lab.dir.join(name);
    std::fs::write(&path, line).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

#[test]
fn a_binfmt_misc_rule_that_claims_the_file_is_seen() {
    if !have_root("user namespaces") {
        return;
    }
    if !own_binfmt_misc_instances() {
        // Before Linux 6.7 the only instance is the host's.
        eprintln!("!!!!! SKIPPED: no binfmt_misc instance of a user namespace !!!!!");
        assert_ne!(std::env::var("KSMAUTO_REQUIRE_KSM").as_deref(), Ok("1"));
        return;
    }
    let lab = Lab::new("binfmt");
    let handler = lab.path("static-probe");
    // Scripts whose interpreter is not there: without a rule, nothing runs.
    let by_extension = script(&lab, "prog.kr18", "#!/nonexistent/interpreter\n");
    let by_magic = script(&lab, "marked", "#!/nonexistent/kr18-marked\n");
    let by_mask = script(&lab, "masked", "#!/nonexistent/mask1\n");
    let unclaimed = script(&lab, "unclaimed", "#!/nonexistent/other\n");
    let disabled = script(&lab, "prog.kr18off", "#!/nonexistent/interpreter\n");
    let register = |rule: String| {
        format!(
            "printf '%s' {} > /proc/sys/fs/binfmt_misc/register",
            quoted(&rule)
        )
    };
    let setup = [
        "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc".to_string(),
        register(format!(":kr18ext:E::kr18::{handler}:")),
        register(format!(":kr18magic:M:0:#!/nonexistent/kr18::{handler}:")),
        // The mask leaves the last byte out: "mask9" matches "mask1".
        register(format!(
            ":kr18mask:M:0:#!/nonexistent/mask9:{}\\x00:{handler}:",
            "\\xff".repeat(19)
        )),
        register(format!(":kr18off:E::kr18off::{handler}:")),
        "echo 0 > /proc/sys/fs/binfmt_misc/kr18off".to_string(),
    ]
    .join("\n");
    let without = strings(&["KSMAUTO_MODE=process", "KSMAUTO_STATS=off"]);
    let with_library = [
        without.clone(),
        vec![format!("LD_PRELOAD={}", lab.lib.display())],
    ]
    .concat();
    let run = |target: &str, env: &Vec<String>| Inside {
        way: "posix_spawn",
        args: vec![target.to_string()],
        env: env.clone(),
        count: true,
    };
    let runs = [
        run(&by_extension, &without),
        run(&by_magic, &without),
        run(&by_mask, &without),
        run(&unclaimed, &without),
        run(&disabled, &without),
        run(&lab.path("probe"), &with_library),
    ];
    let results = in_namespaces(&lab, &NAMESPACES, &setup, common::lib(), &runs);
    // Claimed: the handler (a static program) runs, without merge-any.
    for (what, (out, offs)) in ["extension", "magic", "magic under a mask"]
        .iter()
        .zip(&results)
    {
        verdict(out, &lab.lib, false).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(*offs, 1, "{what}: switch-offs\n{out}");
    }
    // Unclaimed (no rule matches, or only a disabled one): nothing runs,
    // and merge-any is left alone.
    for (what, (out, offs)) in ["no rule", "a disabled rule"].iter().zip(&results[3..5]) {
        assert!(out.contains("failed "), "{what}: something ran:\n{out}");
        assert_eq!(*offs, 0, "{what}: switched off for nothing\n{out}");
    }
    // A dynamic program no rule claims: the library runs there.
    let (out, offs) = &results[5];
    verdict(out, &lab.lib, true).unwrap_or_else(|e| panic!("unclaimed program: {e}"));
    assert_eq!(*offs, 0, "unclaimed program: switched off\n{out}");
}
