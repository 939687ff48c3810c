//! The layer diagram of `docs/architecture.md` matches the code: no module of
//! the library uses one above it, every module has its place in the diagram,
//! the diagram's arrows all point down, and the contract crate stays the
//! ground floor; and the CLI reads /proc one way, as bytes.
//!
//! Reads source text only; builds and runs nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Module → modules it may use, from the document's block `kind`
/// (`layers` for the library's src/, `cli-layers` for cli/src/).
fn allowed_imports(kind: &str) -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(repo().join("docs/architecture.md")).unwrap();
    let block = doc
        .split(&format!("```{kind}\n"))
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap_or_else(|| panic!("docs/architecture.md has a ```{kind} block"));
    let mut table = BTreeMap::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let (module, uses) = line
            .split_once("->")
            .unwrap_or_else(|| panic!("`{line}`: expected `module -> used modules`"));
        let uses = uses.split_whitespace().map(String::from).collect();
        let previous = table.insert(module.trim().to_string(), uses);
        assert!(previous.is_none(), "`{}` listed twice", module.trim());
    }
    table
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `root` belongs to (`src/core/engine/mod.rs` →
/// `core`, `src/api/mod.rs` → `api`); `None` for the crate root.
fn module_of(root: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(root).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first.strip_suffix(".rs") {
        Some("lib") | Some("main") => None,
        Some(name) => Some(name.to_string()),
        None => Some(first.to_string()),
    }
}

/// The names of the `macro_rules!` macros defined in `text`.
fn macros_defined(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("macro_rules!"))
        .map(|rest| {
            rest.trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// The top-level modules the code of `text` (comments left out) uses: named
/// by `crate::NAME` paths, by the groups of `crate::{NAME, …}` imports (on
/// one line or several), or owning a macro it invokes (`macros`: macro
/// name → the module defining it), with the line each was first seen on.
fn crate_paths(text: &str, macros: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let lines: Vec<&str> = text.lines().collect();
    let code: String = lines
        .iter()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let line_at = |i: usize| lines[code[..i].matches('\n').count()].trim().to_string();
    let mut found = BTreeMap::new();
    for (line, code) in lines.iter().zip(code.lines()) {
        for (name, module) in macros {
            if code.contains(&format!("{name}!")) {
                found
                    .entry(module.clone())
                    .or_insert_with(|| line.trim().to_string());
            }
        }
    }
    for (i, _) in code.match_indices("crate::") {
        // `$crate::` and `ksmauto_contract::` are not this crate's modules.
        let before = code[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        let names = match rest.strip_prefix('{') {
            Some(group) => group_heads(group),
            None => vec![identifier(rest)],
        };
        for name in names.into_iter().filter(|n| !n.is_empty() && n != "self") {
            found.entry(name).or_insert_with(|| line_at(i));
        }
    }
    found
}

/// The identifier `text` starts with (empty if none).
fn identifier(text: &str) -> String {
    text.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The first identifier of each item of an import group, `group` being the
/// text after its `{`: `a, b::c, d::{e, f}}` → a, b, d (nested groups and
/// what follows the closing brace left out).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = vec![identifier(group)];
    let mut depth = 0;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => heads.push(identifier(&group[i + 1..])),
            _ => {}
        }
    }
    heads
}

#[test]
fn no_module_of_the_library_uses_a_layer_above_it() {
    check_layers("layers", "src");
}

#[test]
fn no_module_of_the_cli_uses_a_layer_above_it() {
    check_layers("cli-layers", "cli/src");
}

/// Every module of `dir` uses only what the document's block `kind` allows it.
fn check_layers(kind: &str, dir: &str) {
    let allowed = allowed_imports(kind);
    let root = repo().join(dir);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    let mut macros = BTreeMap::new();
    for file in &files {
        if let Some(module) = module_of(&root, file) {
            for name in macros_defined(&std::fs::read_to_string(file).unwrap()) {
                macros.insert(name, module.clone());
            }
        }
    }
    let mut wrong = Vec::new();
    let mut modules = BTreeSet::new();
    for file in &files {
        let Some(module) = module_of(&root, file) else {
            continue;
        };
        modules.insert(module.clone());
        let Some(may_use) = allowed.get(&module) else {
            wrong.push(format!(
                "{}: module `{module}` has no place in docs/architecture.md",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (used, line) in crate_paths(&text, &macros) {
            if used != module && !may_use.contains(&used) {
                wrong.push(format!(
                    "{}: `{module}` uses `{used}`, which is not below it: {line}",
                    file.display()
                ));
            }
        }
    }
    for listed in allowed.keys() {
        if !modules.contains(listed) {
            wrong.push(format!(
                "docs/architecture.md lists `{listed}`, which {dir}/ does not have"
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn every_arrow_of_the_diagram_points_down() {
    for kind in ["layers", "cli-layers"] {
        arrows_point_down(&allowed_imports(kind));
    }
}

fn arrows_point_down(allowed: &BTreeMap<String, BTreeSet<String>>) {
    for (module, uses) in allowed {
        for used in uses {
            assert!(
                allowed.contains_key(used),
                "`{module} -> {used}`: `{used}` has no line of its own"
            );
        }
    }
    // Peel off modules that use nothing left; what remains is a cycle.
    let mut left = allowed.clone();
    while !left.is_empty() {
        let floor: Vec<String> = left
            .iter()
            .filter(|(_, uses)| uses.iter().all(|u| !left.contains_key(u)))
            .map(|(m, _)| m.clone())
            .collect();
        assert!(
            !floor.is_empty(),
            "the layers of docs/architecture.md loop: {:?}",
            left.keys().collect::<Vec<_>>()
        );
        for m in floor {
            left.remove(&m);
        }
    }
}

#[test]
fn the_contract_crate_is_the_ground_floor() {
    let manifest = std::fs::read_to_string(repo().join("contract/Cargo.toml")).unwrap();
    let mut section = String::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        if section.contains("dependencies") && !line.is_empty() && !line.starts_with('#') {
            assert!(
                line.starts_with("libc"),
                "contract/Cargo.toml {section}: `{line}`: the contract depends on nothing but libc"
            );
        }
    }
    let lib = std::fs::read_to_string(repo().join("contract/src/lib.rs")).unwrap();
    assert!(lib.contains("#![no_std]"), "the contract is no_std");
}

/// The CLI reads `/proc` as bytes, through `util::read_proc`: a process
/// names itself and the files it maps with any bytes, and a file read as
/// UTF-8 text fails on them, so the process was taken for gone (issue 18).
/// Any read of a path that names `/proc` (or a `/proc` directory, `{dir}`)
/// with `std::fs::read`/`read_to_string` is a second reader.
#[test]
fn the_cli_reads_proc_as_bytes_through_one_reader() {
    let mut files = vec![];
    rust_files(&repo().join("cli/src"), &mut files);
    let mut found = vec![];
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for call in ["read_to_string(", "fs::read("] {
            for (at, _) in text.match_indices(call) {
                // The path is the call's argument, on its line or the next.
                let argument: String = text[at..].chars().take(120).collect();
                let argument = argument.split(';').next().unwrap_or("");
                if argument.contains("/proc") || argument.contains("{dir}") {
                    let line = text[..at].lines().count();
                    found.push(format!("{}:{line}", file.display()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "/proc read other than by util::read_proc at {found:?}"
    );
}

/// The layer check reads every way code names a module of its crate: a
/// path, a grouped import (one line or several, nested groups too), a
/// re-export. Before, `use crate::{a, b}` named nothing (the parser took
/// the identifier right after `crate::`, and `{` is none), so a module
/// could use one above it through a group unseen.
#[test]
fn grouped_imports_name_their_modules_for_the_layer_check() {
    let text = "\
use crate::{alpha, beta::Thing};
pub(crate) use crate::{
    gamma::{self, Other},
    delta, // a comment
    // crate::commented_out
};
use crate::epsilon::*;
fn f() { crate::zeta::call(); $crate::not_ours(); ksmauto_contract::crate_name(); }
";
    let found: BTreeSet<String> = crate_paths(text, &BTreeMap::new()).into_keys().collect();
    let want: BTreeSet<String> = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, want);
}

/// The core decides and knows the kernel only by intent (`os::ksm`'s
/// `mark_mergeable`, `merge_any`, ...): no advice or `prctl` constant of
/// its own, in any of its rooms (`core/engine/`, `core/catchup/`, ...).
/// Comments and string literals (a warning may name the call) are left out.
#[test]
fn the_core_names_no_madvise_advice_nor_prctl_option() {
    let mut files = vec![];
    rust_files(&repo().join("src/core"), &mut files);
    files.sort();
    let mut found = vec![];
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let code: String = code.split('"').step_by(2).collect();
            if ["MADV_", "PR_SET_", "PR_GET_"].iter().any(|c| code.contains(c)) {
                found.push(format!("{}:{}: {}", file.display(), number + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "\n{}", found.join("\n"));
}
