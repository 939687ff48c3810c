//! scripts/install puts the library where `ksmauto run` finds it.

#[path = "../../tests/common/mod.rs"]
mod common;

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
