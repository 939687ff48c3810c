//! The article's experiment (shared/reference/ksm-article.txt) with its
//! madvise() removed: under the preload the three zero-filled pages merge and
//! unmerge again after their rewrite; without it nothing merges.

use common::*;
use ksmauto_testsupport as common;

fn article() -> std::path::PathBuf {
    compile_c("examples/article.c", &[])
}

fn run_article(run: Run) -> (u64, u64, u64, String) {
    let out = run.output(article(), &["3", "60"]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "article failed: {:?}\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(
        field(&stdout, "readback").as_deref(),
        Some("ok"),
        "{stdout}"
    );
    (
        field_u64(&stdout, "merged_before_write"),
        field_u64(&stdout, "merged_after_write"),
        field_u64(&stdout, "rewritten_still_merged_kb"),
        text(&out.stderr),
    )
}

#[test]
fn control_without_the_preload_nothing_merges() {
    let Some(_ksmd) = ksmd() else { return };
    let (before, after, _, _) = run_article(Run::without());
    assert_eq!((before, after), (0, 0));
}

/// Returns the program's stderr, or `None` where the KSM test was skipped.
fn merges_and_unmerges(run: Run) -> Option<String> {
    let _ksmd = ksmd()?;
    let (before, after, still, stderr) = run_article(run);
    // The three pages merge (with each other, or with the zero page where
    // use_zero_pages is on). Other anonymous pages of the process may merge
    // as well, then or later (the catch-up advises the heap when the
    // program naps), so the rewrite is judged on the three pages' own VMAs.
    assert!(before >= 3, "only {before} pages merged\n{stderr}");
    assert_eq!(
        still, 0,
        "rewritten pages still merged ({still} kB; process: before {before}, after {after})"
    );
    Some(stderr)
}

#[test]
fn default_configuration_merges_and_unmerges() {
    merges_and_unmerges(Run::with("default"));
}

#[test]
fn advise_mode_merges_the_three_pages_its_mmap_hook_advised() {
    let Some(stderr) = merges_and_unmerges(Run::with("advise")) else {
        return;
    };
    assert!(stderr.contains("mode advise"), "{stderr}");
    assert!(
        stderr.contains("by mmap 12.0 KiB"),
        "the three single-page mappings: {stderr}"
    );
}

#[test]
fn process_mode_merges_and_unmerges() {
    merges_and_unmerges(Run::with("process"));
}
