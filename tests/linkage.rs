//! What the library needs from the system, it finds on every glibc
//! architecture: each symbol it leaves undefined is a default-version
//! export of libc or of the dynamic loader.
//!
//! A reference to a compatibility-only symbol (`pthread_atfork` is one:
//! glibc 2.34+ keeps it in libc.so.6 as `(GLIBC_2.2.5)` for old binaries
//! and gives new ones a static stub from libc_nonshared.a) loads on x86_64
//! by luck of version numbering and not at all on aarch64 ("undefined
//! symbol: pthread_atfork"): the library could not be preloaded there.

use ksmauto_testsupport as common;

use std::collections::BTreeSet;
use std::process::Command;

/// `objdump -T` of `path`: (name, defined, default version or unversioned).
fn dynamic_symbols(path: &str) -> Vec<(String, bool, bool)> {
    let out = Command::new("objdump")
        .args(["-T", path])
        .output()
        .expect("objdump (binutils) is needed: scripts/test installs it");
    assert!(out.status.success(), "objdump -T {path} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // "ADDR FLAGS SECTION SIZE VERSION NAME"; a version in
            // parentheses is hidden: only a reference naming it binds.
            let fields: Vec<&str> = line.split_whitespace().collect();
            let section_at = fields.iter().position(|f| f.starts_with('.') || *f == "*UND*")?;
            let name = fields.last()?.to_string();
            let defined = fields[section_at] != "*UND*";
            let hidden = fields[section_at + 1..].iter().any(|f| f.starts_with('('));
            let weak = fields[1..section_at].contains(&"w");
            if !defined && weak {
                return None;
            }
            Some((name, defined, !hidden))
        })
        .collect()
}

/// The files the test process itself has mapped for libc and the loader.
fn system_objects() -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut found = BTreeSet::new();
    for line in maps.lines() {
        if let Some(path) = line.split_whitespace().nth(5) {
            let name = path.rsplit('/').next().unwrap_or("");
            if name.starts_with("libc.so") || name.starts_with("ld-linux") {
                found.insert(path.to_string());
            }
        }
    }
    assert!(found.len() >= 2, "libc and the loader not found in {maps}");
    found.into_iter().collect()
}

#[test]
fn every_symbol_the_library_needs_is_a_default_export_of_libc_or_the_loader() {
    let lib = common::lib().to_str().unwrap().to_string();
    let needed: BTreeSet<String> = dynamic_symbols(&lib)
        .into_iter()
        .filter(|(_, defined, _)| !defined)
        .map(|(name, _, _)| name)
        .collect();
    assert!(needed.contains("dlsym"), "{needed:?}");
    let mut exported = BTreeSet::new();
    for object in system_objects() {
        for (name, defined, default) in dynamic_symbols(&object) {
            if defined && default {
                exported.insert(name);
            }
        }
    }
    let missing: Vec<&String> = needed.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "symbols the library needs that libc and the loader export only under a \
         compatibility version (or not at all): {missing:?}"
    );
}
