//! Ordinary programs run unchanged under the preload: Python, Perl, bash
//! pipelines with subshells, `ls`, a multithreaded C program
//! (tests/c/threads.c) and a forking one (tests/c/forking.c, whose children
//! also exec). Each runs without the preload and with it in the modes
//! default, advise, process and off (with `KSMAUTO_STATS=off`, so the exit
//! report does not add to stderr); stdout and exit status must be identical
//! and the exit status 0.

use common::*;
use ksmauto_testsupport as common;
use std::path::Path;
use std::process::Output;

const MODES: [&str; 4] = ["default", "advise", "process", "off"];

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Runs `program args` without the preload and in every mode; asserts each
/// run succeeds with the same exit status and the same stdout (after
/// `normalize`), and returns the normalized stdout of the run without it.
fn unchanged_everywhere(program: &str, args: &[&str], normalize: fn(&str) -> String) -> String {
    let base = Run::without().output(program, args);
    assert!(
        base.status.success(),
        "{program} fails even without the preload: {}",
        describe(&base)
    );
    let expected = normalize(&text(&base.stdout));
    assert!(
        !expected.trim().is_empty(),
        "{program} printed nothing: {}",
        describe(&base)
    );
    for mode in MODES {
        let out = Run::with(mode)
            .env("KSMAUTO_STATS", "off")
            .output(program, args);
        assert_eq!(
            out.status.code(),
            base.status.code(),
            "{program} in mode {mode}: exit status differs: {}",
            describe(&out)
        );
        assert!(
            out.status.success(),
            "{program} in mode {mode}: {}",
            describe(&out)
        );
        let got = normalize(&text(&out.stdout));
        assert_eq!(
            got,
            expected,
            "{program} in mode {mode}: stdout differs from the run without the preload\nstderr: {}",
            text(&out.stderr)
        );
    }
    expected
}

fn as_is(s: &str) -> String {
    s.to_string()
}

fn require(program: &str) -> &str {
    assert!(
        Path::new(program).exists(),
        "{program} is missing: these tests need it installed"
    );
    program
}

const PYTHON: &str = r#"
import hashlib, json
blobs = [bytes([i % 251]) * (i % 1000 + 1) for i in range(60000)]
d = {"k%d" % i: [i, str(i) * 3, {"v": i * 2, "s": "x" * (i % 50)}] for i in range(120000)}
s = json.dumps(d, sort_keys=True)
back = json.loads(s)
h = hashlib.sha256()
for b in blobs:
    h.update(b)
big = bytearray(64 * 1024 * 1024)
big[::4096] = b"y" * len(big[::4096])
words = sorted(set(w for v in list(d.values())[:50000] for w in v[1:2]))
print("blobs", len(blobs), sum(map(len, blobs)))
print("json", len(s), back == d)
print("sha256", h.hexdigest())
print("big", len(big), hashlib.md5(big).hexdigest())
print("words", len(words), words[:3])
del big, d, back
print("done")
"#;

#[test]
fn python_allocating_lists_dicts_json_and_hashes_prints_the_same() {
    let out = unchanged_everywhere(require("/usr/bin/python3"), &["-c", PYTHON], as_is);
    assert!(
        out.contains("json ") && out.contains(" True\n"),
        "the JSON round trip failed: {out}"
    );
    assert!(out.ends_with("done\n"), "{out}");
}

const PERL: &str = r#"
use strict; use warnings; use Digest::MD5 qw(md5_hex);
my %h; $h{"k$_"} = "v" x ($_ % 100) for 1 .. 200000;
my @k = sort keys %h;
my $s = join(",", map { "$_=$h{$_}" } @k[0 .. 4999]);
my $big = "z" x (32 * 1024 * 1024);
my @nums = map { $_ * 3 } grep { $_ % 7 == 0 } 1 .. 300000;
my $sum = 0; $sum += $_ for @nums;
print "keys ", scalar(@k), "\n";
print "md5 ", md5_hex($s), "\n";
print "big ", length($big), " ", md5_hex($big), "\n";
print "sum ", $sum, "\n";
"#;

#[test]
fn perl_hashes_sorting_and_big_strings_print_the_same() {
    let out = unchanged_everywhere(require("/usr/bin/perl"), &["-e", PERL], as_is);
    assert_eq!(field(&out, "keys").as_deref(), Some("200000"), "{out}");
}

const BASH: &str = r#"
echo a | sort | uniq -c
printf '%s\n' c b a b c c | sort | uniq -c | sort -rn
x=$(printf '%s\n' 3 1 2 | sort -n | tr '\n' ' ')
echo "sorted: $x"
y=$( (cd / && echo "in $(pwd)") | tr a-z A-Z )
echo "subshell: $y"
( for i in 1 2 3; do echo "line $i"; done ) | tac
echo "sum: $(seq 1 10000 | awk '{s += $1} END {print s}')"
echo "words: $(head -c 200000 /dev/zero | tr '\0' 'a' | fold -w 100 | sort | uniq -c | awk '{print $1}')"
f() { local n=$1; if [ "$n" -le 1 ]; then echo 1; else echo $(( n * $(f $((n - 1))) )); fi; }
echo "fact: $(f 10)"
"#;

#[test]
fn bash_pipes_subshells_and_command_substitution_print_the_same() {
    let out = unchanged_everywhere(require("/bin/bash"), &["-c", BASH], as_is);
    assert!(out.starts_with("      1 a\n"), "{out}");
    assert!(
        out.contains("sorted: 1 2 3 \n")
            && out.contains("sum: 50005000\n")
            && out.contains("fact: 3628800\n"),
        "{out}"
    );
    assert!(
        out.contains("subshell: IN /\n") && out.contains("words: 2000\n"),
        "{out}"
    );
}

/// `ls -la /` shows times, sizes and link counts of directories that other
/// processes change while the tests run (/tmp, /proc, /run…): compare the
/// mode string, owner, group and name of each entry.
fn ls_stable_columns(out: &str) -> String {
    out.lines()
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() >= 9 {
                format!(
                    "{} {} {} {}",
                    cols[0],
                    cols[2],
                    cols[3],
                    cols[8..].join(" ")
                )
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn ls_la_root_lists_the_same_entries() {
    let out = unchanged_everywhere(require("/bin/ls"), &["-la", "/"], ls_stable_columns);
    for entry in [" .", " ..", " usr", " etc", " proc"] {
        assert!(
            out.lines().any(|l| l.ends_with(entry)),
            "no `{entry}` in:\n{out}"
        );
    }
}

#[test]
fn multithreaded_c_program_computes_the_same_checksums() {
    let prog = compile_c("tests/c/threads.c", &[]);
    let out = unchanged_everywhere(prog.to_str().unwrap(), &[], as_is);
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("thread ") && l.contains(" errors 0 "))
            .count(),
        8,
        "{out}"
    );
    assert_eq!(field(&out, "errors").as_deref(), Some("0"), "{out}");
}

#[test]
fn forking_c_program_children_and_exec_give_the_same_exit_codes() {
    let prog = compile_c("tests/c/forking.c", &[]);
    let out = unchanged_everywhere(prog.to_str().unwrap(), &[], as_is);
    for i in 0..4 {
        assert_eq!(
            field(&out, &format!("child {i} exit")),
            Some((10 + i).to_string()),
            "{out}"
        );
    }
    assert!(out.contains("hello from exec\n"), "{out}");
    assert_eq!(
        field(&out, "exec child exit").as_deref(),
        Some("0"),
        "{out}"
    );
    assert_eq!(
        field(&out, "parent memory intact").as_deref(),
        Some("yes"),
        "{out}"
    );
    assert_eq!(field(&out, "failures").as_deref(), Some("0"), "{out}");
}
