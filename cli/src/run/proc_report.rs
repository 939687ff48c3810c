//! What `run` knows of one process of its tree, and how it says it: its
//! figures, how it ended, which engine covered it. Reads nothing itself
//! (`tree_watch` fills it in); the closed sets of its JSON are enums with
//! the spelling of their JSON words.

use crate::coverage;
use crate::merge_any::Uncovered;
use crate::util::*;
use ksmauto_contract::report as field;
use serde::Serialize;

/// What `run` knows of one process of the tree: its last figures while it
/// had memory, what it exec'd into, and how it ended.
#[derive(Serialize, Debug, Clone, Default)]
pub struct ProcReport {
    pub pid: i64,
    /// Parent when first seen.
    pub ppid: i64,
    pub comm: String,
    pub exe: String,
    /// Programs it exec'd into while sampled, in order.
    pub execs: Vec<String>,
    /// `library` (libksmauto mapped), `merge-any` (PR_SET_MEMORY_MERGE
    /// without the library, e.g. inherited over exec), `madvise` (mergeable
    /// areas without the library), `none`, `unknown` (never read alive).
    pub covered: Covered,
    /// Which engine covers it, in words: `preload (process|advise)`,
    /// `inherited merge-any` (set before its exec, e.g. by `run` for a static
    /// program), `madvise, not ours`, `none (WHY)`, `unknown (not sampled)`.
    pub coverage: String,
    /// Why it is not covered, in full (null when it is).
    pub coverage_why: Option<String>,
    /// The library's mode, from its exit report (`?` without one).
    pub mode: String,
    pub advised_bytes: u64,
    pub merging_pages: u64,
    pub zero_pages: u64,
    pub merged_pages: u64,
    pub profit: i64,
    pub rss_bytes: u64,
    pub pss_bytes: u64,
    /// Samples that read its figures.
    pub samples: u64,
    /// `sample` (the last one taken while it ran), `report` (the
    /// library's exit report, read at its exit, later than any sample) or
    /// `none` (never sampled, no report).
    pub figures_from: FiguresFrom,
    /// `exited`, `killed`, `gone` (ended, not our child: its parent reaped
    /// it) or `running` (still running when `run` stopped waiting).
    pub end: End,
    pub exit_status: Option<i32>,
    pub signal: Option<i32>,
    /// Reaped by `run` as child subreaper (its parent had ended before it).
    pub reaped_as_subreaper: bool,
    /// How it ended, in words.
    pub ended: String,
    /// The library's own JSON report, unchanged (null without one).
    pub report: serde_json::Value,
    /// With `nspids`, names the process: what an exit report is matched by.
    #[serde(skip)]
    pub(super) start_time: u64,
    /// Its pid in each pid namespace it is in, outermost first (`NSpid`):
    /// a report carries the innermost.
    #[serde(skip)]
    pub(super) nspids: Vec<i64>,
    #[serde(skip)]
    pub(super) image: (u64, u64, u64),
    /// Its image before its last exec: a child forked just before that
    /// exec still has it.
    #[serde(skip)]
    pub(super) prev_image: (u64, u64, u64),
    #[serde(skip)]
    pub(super) library: bool,
    /// Looks for the library since the last exec.
    #[serde(skip)]
    pub(super) samples_since_exec: u32,
    #[serde(skip)]
    pub(super) stat: KsmStat,
    /// Its program's facts (static, secure execution, LD_PRELOAD), read
    /// once after each exec.
    #[serde(skip)]
    pub(super) facts: Option<coverage::Facts>,
    /// Why `run` left this program uncovered (the command's static target).
    #[serde(skip)]
    pub(super) decided: Option<Uncovered>,
}

/// What covered a process's memory, as the kernel showed it.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Covered {
    /// libksmauto mapped (or its exit report read).
    #[serde(rename = "library")]
    Library,
    /// PR_SET_MEMORY_MERGE without the library.
    #[serde(rename = "merge-any")]
    MergeAny,
    /// Mergeable areas without the library.
    #[serde(rename = "madvise")]
    Madvise,
    #[serde(rename = "none")]
    Nothing,
    /// Never read alive: what covered it is not known.
    #[serde(rename = "unknown")]
    #[default]
    Unknown,
}

/// Where a process's figures come from.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FiguresFrom {
    /// The last sample taken while it ran.
    #[serde(rename = "sample")]
    Sample,
    /// The library's exit report (read at its exit, after any sample).
    #[serde(rename = "report")]
    Report,
    /// Neither: never sampled, no report.
    #[serde(rename = "none")]
    #[default]
    Nothing,
}

/// How a process ended, as far as `run` saw it.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum End {
    /// Reaped by `run`: it exited.
    #[serde(rename = "exited")]
    Exited,
    /// Reaped by `run`: a signal killed it.
    #[serde(rename = "killed")]
    Killed,
    /// Ended, not our child: its parent reaped it.
    #[serde(rename = "gone")]
    Gone,
    /// Still running when `run` stopped waiting.
    #[serde(rename = "running")]
    #[default]
    Running,
}

impl ProcReport {
    pub(super) fn describe_end(&mut self) {
        let how = match self.end {
            End::Exited => format!("exited with status {}", self.exit_status.unwrap_or(0)),
            End::Killed => format!("killed by signal {}", self.signal.unwrap_or(0)),
            End::Running => "still running at the end".into(),
            End::Gone if self.samples == 0 && !self.report.is_null() => {
                "exited before the first look (known by its exit report)".into()
            }
            End::Gone => "ended (not our child)".into(),
        };
        let mut words = String::new();
        if let Some(last) = self.execs.last() {
            words.push_str(&format!("exec'd into {last}, then "));
        }
        words.push_str(&how);
        if self.reaped_as_subreaper {
            words.push_str(", reaped by us as subreaper");
        }
        self.ended = words;
        self.merged_pages = self.merging_pages + self.zero_pages;
        self.covered = if self.library {
            Covered::Library
        } else if self.samples == 0 {
            // Never read alive (ended before a look, or a zombie when first
            // seen): what covered it is not known.
            Covered::Unknown
        } else if self.stat.merge_any {
            Covered::MergeAny
        } else if self.stat.mergeable {
            Covered::Madvise
        } else {
            Covered::Nothing
        };
        let c = coverage::judge(
            self.library,
            &self.mode,
            (self.samples > 0).then_some(&self.stat),
            self.facts.as_ref(),
            self.decided.as_ref(),
        );
        self.coverage = c.words;
        self.coverage_why = c.why;
    }
}

/// The library's exit report joined to a sampled process: a report is
/// written at exit, after the last sample, so its kernel figures win.
pub(super) fn attach_report(p: &mut ProcReport, v: serde_json::Value) {
    p.mode = v[field::MODE].as_str().unwrap_or("?").to_string();
    p.advised_bytes = v[field::ADVISED][field::BYTES].as_u64().unwrap_or(0);
    let k = &v[field::KERNEL];
    if k.is_object() {
        p.merging_pages = k[field::MERGING_PAGES].as_u64().unwrap_or(p.merging_pages);
        p.zero_pages = k[field::ZERO_PAGES].as_u64().unwrap_or(p.zero_pages);
        p.profit = k[field::PROFIT].as_i64().unwrap_or(p.profit);
        p.figures_from = FiguresFrom::Report;
    }
    p.library = true;
    p.report = v;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::to_value as json;

    #[test]
    fn the_closed_sets_keep_their_json_words() {
        for (v, word) in [
            (json(Covered::Library), "library"),
            (json(Covered::MergeAny), "merge-any"),
            (json(Covered::Madvise), "madvise"),
            (json(Covered::Nothing), "none"),
            (json(Covered::Unknown), "unknown"),
            (json(FiguresFrom::Sample), "sample"),
            (json(FiguresFrom::Report), "report"),
            (json(FiguresFrom::Nothing), "none"),
            (json(End::Exited), "exited"),
            (json(End::Killed), "killed"),
            (json(End::Gone), "gone"),
            (json(End::Running), "running"),
        ] {
            assert_eq!(v.unwrap(), word);
        }
    }
}
