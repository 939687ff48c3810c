//! A set-user-ID or set-group-ID program changes privilege only when the
//! kernel gives it IDs apart from the real ones (then `AT_SECURE`, and ld.so
//! ignores a preload path): root running a set-user-ID-root program keeps
//! the library, and the guard must not switch merge-any off for it; bits on
//! a `nosuid` mount or under `no_new_privs` count for nothing.

use super::common;
use super::lab::*;
use std::os::unix::fs::{chown, PermissionsExt};

/// Installs a copy of the dynamic probe as `name` with `mode`, owned by
/// `uid`:`gid`.
fn probe_copy(lab: &Lab, name: &str, mode: u32, uid: u32, gid: u32) -> String {
    let path = lab.dir.join(name);
    std::fs::copy(lab.dir.join("probe"), &path).unwrap();
    chown(&path, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.display().to_string()
}

fn with_library(lab: &Lab) -> Vec<String> {
    strings(&[
        &format!("LD_PRELOAD={}", lab.lib.display()),
        "KSMAUTO_MODE=process",
        "KSMAUTO_STATS=off",
    ])
}

#[test]
fn set_id_bits_count_only_where_they_change_the_ids() {
    if !have_root("set-user-ID probes owned by root and by nobody") {
        return;
    }
    let lab = Lab::new("set-ids");
    let env = with_library(&lab);
    let cases = [
        // Root's own IDs: nothing changes, the library runs there.
        ("setuid-root", 0o4755, 0, 0, true),
        ("setgid-root", 0o2755, 0, 0, true),
        // Set-group-ID without group execute is ignored by the kernel.
        ("setgid-nobody-no-gx", 0o2745, 0, 65534, true),
        // Another user's or group's IDs: secure mode, no library.
        ("setuid-nobody", 0o4755, 65534, 0, false),
        ("setgid-nobody", 0o2755, 0, 65534, false),
    ];
    for (name, mode, uid, gid, runs) in cases {
        let target = probe_copy(&lab, name, mode, uid, gid);
        let (out, offs) = spawn_counting(&lab, "posix_spawn", &[target], &env);
        verdict(&out, &lab.lib, runs).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(offs, u64::from(!runs), "{name}: switch-offs\n{out}");
    }
}

#[test]
fn set_id_bits_the_kernel_ignores_change_nothing() {
    if !have_root("mount namespace, setpriv") {
        return;
    }
    let lab = Lab::new("ignored-set-ids");
    let env = with_library(&lab);
    // no_new_privs: bprm_fill_uid ignores the bits.
    let target = probe_copy(&lab, "setuid-nobody", 0o4755, 65534, 0);
    let report = lab.dir.join("report-nnp.json");
    let mut command = lab.command(
        "posix_spawn",
        std::slice::from_ref(&target),
        &env,
        common::lib(),
        Some(&report),
    );
    let launcher_at = command.iter().position(|w| w.starts_with("PATH=")).unwrap() + 1;
    command.splice(
        launcher_at..launcher_at,
        strings(&["setpriv", "--no-new-privs"]),
    );
    let out = lab.run(&command);
    verdict(&out, &lab.lib, true).unwrap_or_else(|e| panic!("no_new_privs: {e}"));
    assert_eq!(switch_offs(&report), 0, "no_new_privs: switched off\n{out}");
    // A nosuid mount.
    let mount = lab.dir.join("nosuid");
    std::fs::create_dir_all(&mount).unwrap();
    let inside = mount.join("setuid-nobody");
    let setup = format!(
        "mount -t tmpfs -o nosuid tmpfs {m}\ncp {p} {t}\nchown 65534 {t}\nchmod 4755 {t}",
        m = quoted(&mount.display().to_string()),
        p = quoted(&lab.path("probe")),
        t = quoted(&inside.display().to_string()),
    );
    let run = Inside {
        way: "posix_spawn",
        args: vec![inside.display().to_string()],
        env,
        count: true,
    };
    let (out, offs) = &in_private_etc(&lab, &setup, common::lib(), &[run])[0];
    verdict(out, &lab.lib, true).unwrap_or_else(|e| panic!("nosuid: {e}"));
    assert_eq!(*offs, 0, "nosuid: switched off\n{out}");
}
