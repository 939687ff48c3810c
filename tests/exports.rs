//! The library exports exactly the functions of its hook list
//! (`src/hook_list.rs`): each hook the list names is a defined dynamic
//! symbol of the built `libksmauto.so`, and the library exports nothing
//! the list does not name (a hook added without its line would be
//! forwarded through no table; a line without its hook would count and
//! report a function nothing interposes).

use ksmauto_testsupport as common;

use std::collections::BTreeSet;
use std::process::Command;

/// The defined dynamic symbols of `path` (`nm -D --defined-only`): name →
/// nm's type letter.
fn defined_dynamic_symbols(path: &str) -> Vec<(String, String)> {
    let out = Command::new("nm")
        .args(["-D", "--defined-only", path])
        .output()
        .expect("nm (binutils) is needed: scripts/test installs it");
    assert!(out.status.success(), "nm -D {path} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // "ADDRESS TYPE NAME", a version possibly after the name.
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (kind, name) = (fields.get(1)?, fields.get(2)?);
            Some((name.split('@').next()?.to_string(), kind.to_string()))
        })
        .collect()
}

#[test]
fn the_library_exports_exactly_the_functions_of_its_hook_list() {
    let lib = common::lib().to_str().unwrap().to_string();
    let symbols = defined_dynamic_symbols(&lib);
    let not_functions: Vec<&(String, String)> =
        symbols.iter().filter(|(_, kind)| kind != "T").collect();
    assert!(
        not_functions.is_empty(),
        "exported symbols that are not functions in .text: {not_functions:?}"
    );
    let exported: BTreeSet<&str> = symbols.iter().map(|(name, _)| name.as_str()).collect();
    let listed: BTreeSet<&str> = common::EXPORTED_NAMES.iter().copied().collect();
    assert_eq!(
        listed.len(),
        common::EXPORTED_NAMES.len(),
        "the hook list names a function twice"
    );
    let unlisted: Vec<&&str> = exported.difference(&listed).collect();
    let missing: Vec<&&str> = listed.difference(&exported).collect();
    assert!(
        unlisted.is_empty() && missing.is_empty(),
        "exported but not in src/hook_list.rs: {unlisted:?}; \
         in the list but not exported: {missing:?}"
    );
    // The counted hooks (the stats' `calls`) are among them.
    assert!(common::HOOK_NAMES.iter().all(|name| exported.contains(name)));
}
