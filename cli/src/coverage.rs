//! Which engine covers a process, in words, for `run`'s and `compare`'s
//! per-process tables: the preload (and its mode), a merge-any setting it
//! inherited (set before its exec by `run`/`compare`, systemd's
//! `MemoryKSM=`, or a parent), areas another program advised, or nothing —
//! and then why (a static program, secure execution, no preload, never
//! sampled). Reads `/proc/PID/{exe,auxv,environ}`; decides nothing.

use crate::exe;
use crate::merge_any::{Uncovered, Why};
use crate::util::{preload_names_the_library, read_proc, KsmStat};
use ksmauto_contract::Mode;
use std::path::PathBuf;

/// What a running process's program says about the preload, read once per
/// program (after each exec).
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub static_binary: Option<bool>,
    /// `setuid`, `setgid`, `file capabilities` of its executable.
    pub privileges: Vec<String>,
    pub at_secure: Option<bool>,
    /// Whether its environment's `LD_PRELOAD` names the library (`None`:
    /// the environment cannot be read).
    pub preload_in_env: Option<bool>,
}

pub fn facts(pid: i32) -> Facts {
    let exe_path = PathBuf::from(format!("/proc/{pid}/exe"));
    let preload_in_env = read_proc(format!("/proc/{pid}/environ")).ok().map(|env| {
        env.split(|b| *b == 0).any(|kv| {
            kv.strip_prefix(b"LD_PRELOAD=")
                .is_some_and(preload_names_the_library)
        })
    });
    Facts {
        static_binary: exe::is_static(&exe_path),
        privileges: exe::privileges(&exe_path),
        at_secure: exe::at_secure(pid),
        preload_in_env,
    }
}

/// How a process is covered: short words for a table, and the reason in
/// full when it is not covered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Coverage {
    /// `preload (process)`, `preload (advise)`, `preload (off)`, `preload`
    /// (mode unknown), `inherited merge-any`, `madvise, not ours`,
    /// `none (static)`, `none (static, privileged)`, `none (static, advise
    /// mode)`, `none (secure execution)`, `none (no preload)`, `none`,
    /// `unknown (not sampled)`.
    pub words: String,
    pub why: Option<String>,
}

/// `library`: the library mapped or its report read; `mode`: from its
/// report (`?` without one); `stat`: the last `ksm_stat` read alive
/// (`None`: never read alive); `facts` of its last program; `decided`: why
/// the launcher left this very program uncovered, if it did.
pub fn judge(
    library: bool,
    mode: &str,
    stat: Option<&KsmStat>,
    facts: Option<&Facts>,
    decided: Option<&Uncovered>,
) -> Coverage {
    let covered = |w: &str| Coverage {
        words: w.into(),
        why: None,
    };
    if library {
        let mode = match (mode, stat) {
            ("?" | "", Some(k)) if k.merge_any => Mode::Process.name(),
            ("?" | "", Some(k)) if k.mergeable => Mode::Advise.name(),
            ("?" | "", _) => return covered("preload"),
            (m, _) => m,
        };
        return covered(&format!("preload ({mode})"));
    }
    let Some(k) = stat else {
        return Coverage {
            words: "unknown (not sampled)".into(),
            why: Some("never read alive: it ended before the first look, or was a zombie".into()),
        };
    };
    if k.merge_any {
        return covered("inherited merge-any");
    }
    if k.mergeable {
        return covered("madvise, not ours");
    }
    let f = facts.cloned().unwrap_or_default();
    let (words, why) = if let Some(d) = decided {
        let short = match d.why {
            Why::Privileged => "none (static, privileged)",
            Why::AdviseMode => "none (static, advise mode)",
            Why::KernelCannot => "none (static)",
        };
        (short, d.words.clone())
    } else if f.static_binary == Some(true) {
        (
            "none (static)",
            "static executable: LD_PRELOAD never reaches it, and no merge-any was set before its exec"
                .to_string(),
        )
    } else if f.at_secure == Some(true) || !f.privileges.is_empty() {
        let why = if f.privileges.is_empty() {
            "AT_SECURE".to_string()
        } else {
            f.privileges.join(", ")
        };
        (
            "none (secure execution)",
            format!("secure execution ({why}): the loader ignores a preload given by path"),
        )
    } else if f.preload_in_env == Some(false) {
        (
            "none (no preload)",
            "its LD_PRELOAD does not name the library (removed on the way, or replaced)"
                .to_string(),
        )
    } else {
        (
            "none",
            "neither the library nor merge-any: the preload did not load".to_string(),
        )
    };
    Coverage {
        words: words.into(),
        why: Some(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_for_each_engine() {
        let any = KsmStat {
            merge_any: true,
            ..Default::default()
        };
        let nothing = KsmStat::default();
        let stat = Facts {
            static_binary: Some(true),
            ..Default::default()
        };
        assert_eq!(
            judge(true, "advise", None, None, None).words,
            "preload (advise)"
        );
        assert_eq!(
            judge(true, "?", Some(&any), None, None).words,
            "preload (process)"
        );
        assert_eq!(
            judge(false, "?", Some(&any), None, None).words,
            "inherited merge-any"
        );
        assert_eq!(
            judge(false, "?", None, None, None).words,
            "unknown (not sampled)"
        );
        let c = judge(false, "?", Some(&nothing), Some(&stat), None);
        assert_eq!(c.words, "none (static)");
        assert!(c.why.unwrap().contains("LD_PRELOAD never reaches it"));
        let decided = |why, words: &str| Uncovered {
            why,
            words: words.into(),
        };
        let setuid = decided(Why::Privileged, "x is setuid: exec grants it privileges");
        let c = judge(false, "?", Some(&nothing), Some(&stat), Some(&setuid));
        assert_eq!(c.words, "none (static, privileged)");
        assert_eq!(c.why.as_deref(), Some(setuid.words.as_str()));
        // The words come from the reason, not from what the warning says
        // (it names the program, whose path may say anything).
        let advise = decided(Why::AdviseMode, "/opt/privileges/x is a static executable");
        let c = judge(false, "?", Some(&nothing), Some(&stat), Some(&advise));
        assert_eq!(c.words, "none (static, advise mode)");
        let kernel = decided(Why::KernelCannot, "/opt/advise mode/x: privileges");
        let c = judge(false, "?", Some(&nothing), Some(&stat), Some(&kernel));
        assert_eq!(c.words, "none (static)");
    }
}
