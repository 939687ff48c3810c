//! `doctor`'s judgement: from the [`Facts`] alone, why the process does or
//! does not merge. Pure: reads no file, prints nothing, and decides by
//! values, never by words (the words are `render`'s). Unit-tested below
//! with made-up facts.

use super::facts::{Facts, KsmdFacts};
use super::{Diagnosis, Ksmd, Library, Memory, ModeInfo};
use crate::ksm::State;
use crate::util::preload_names_the_library;
use ksmauto_contract::{env, Mode};
use serde::Serialize;

/// Above this, one full scan is too slow to call "merging soon".
const SLOW_SCAN_SECS: f64 = 60.0;

/// Why the process does or does not merge: the most decisive reason.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    KernelThread,
    /// A zombie: its memory is gone.
    Exited,
    /// The kernel has no KSM.
    NoKsm,
    /// ksmd is stopped (`run` 0).
    KsmdStopped,
    /// ksmd is unmerging everything (`run` 2).
    KsmdUnmerging,
    /// Its memory is mostly of kinds KSM never merges: those kinds (bytes,
    /// name; the ones of at least a tenth), what the kernel could scan, and
    /// how much of that is merged.
    NothingToMerge {
        kinds: Vec<(u64, &'static str)>,
        scannable: u64,
        merged: u64,
    },
    /// Bytes merged (KSM pages and zero pages); `slow` when most is not
    /// scanned yet.
    Merging {
        saved: u64,
        slow: Option<SlowScan>,
    },
    /// Nothing mergeable, and the library is not loaded.
    NotLoaded(NotLoaded),
    /// Nothing mergeable: `KSMAUTO_MODE=off`.
    ModeOff,
    NothingMarked,
    /// Mergeable memory that ksmd has not scanned through yet.
    ScanTooSlow(SlowScan),
    /// Mergeable memory scanned, no identical pages.
    NoIdenticalPages {
        mergeable: u64,
    },
}

impl Verdict {
    pub fn is_merging(&self) -> bool {
        matches!(self, Verdict::Merging { .. })
    }
}

/// One full scan takes ksmd too long to see merges soon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowScan {
    pub seconds: f64,
    pub registered_bytes: u64,
}

/// Why the library is not in the process's memory map.
#[derive(Debug, Clone, PartialEq)]
pub enum NotLoaded {
    /// No dynamic loader: nothing reads LD_PRELOAD.
    Static,
    /// Secure execution: why (`setuid`, `setgid`, `file capabilities`;
    /// empty: AT_SECURE alone).
    SecureExecution(Vec<String>),
    EnvironUnreadable,
    NotInPreload,
    /// In LD_PRELOAD, not mapped.
    Refused,
}

/// What `KSMAUTO_MODE` and the kernel say marks the process's memory.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marked {
    /// Merge-any (`prctl(PR_SET_MEMORY_MERGE)`).
    #[serde(rename = "process")]
    Process,
    /// VMAs marked by `madvise(MADV_MERGEABLE)`.
    #[serde(rename = "advise")]
    Advise,
    #[serde(rename = "none")]
    Nothing,
}

impl Marked {
    pub fn name(self) -> &'static str {
        match self {
            Marked::Process => "process",
            Marked::Advise => "advise",
            Marked::Nothing => "none",
        }
    }
}

/// The diagnosis of the process the facts describe.
pub fn judge(f: Facts) -> Diagnosis {
    let memory = memory(&f);
    let ksmd = ksmd(&f.ksmd, memory.mergeable / f.page_size);
    let library = library(&f);
    let mode = mode(&f, library.loaded);
    let mut notes = vec![];
    let verdict = verdict(&f, &memory, &ksmd, &library, &mut notes);
    notes.extend(memory_notes(&memory, library.loaded));
    Diagnosis {
        pid: f.pid,
        comm: f.comm,
        exe: f.exe,
        merging: verdict.is_merging(),
        verdict,
        ksmd,
        library,
        mode,
        memory,
        notes,
    }
}

fn memory(f: &Facts) -> Memory {
    let (k, ps) = (&f.ksm_stat, f.page_size);
    let mut mem = f.smaps.mem.clone();
    if k.merge_any && f.smaps.mg_vmas == 0 {
        // Kernels that do not show merge-any VMAs as `mg`.
        mem.mergeable = f.smaps.compatible_anon;
    }
    mem.merged = k.merging_pages * ps;
    mem.zero_pages = k.zero_pages * ps;
    mem.profit = k.profit;
    mem.rmap_items = k.rmap_items;
    mem
}

/// ksmd's pace, and how long one full scan takes: every page registered on
/// the host (at least this process's `mergeable_pages`).
fn ksmd(k: &KsmdFacts, mergeable_pages: u64) -> Ksmd {
    let registered = k.rmap_items.max(mergeable_pages);
    let full_scan_seconds = match (k.pages_to_scan, k.sleep_millisecs) {
        (Some(p), Some(ms)) if p > 0 => {
            // At least one batch; a batch takes at least the sleep.
            let batches = (registered as f64 / p as f64).ceil().max(1.0);
            Some(batches * ms as f64 / 1000.0)
        }
        _ => None,
    };
    Ksmd {
        too_slow: full_scan_seconds.is_some_and(|s| s > SLOW_SCAN_SECS),
        state: k.state,
        pages_to_scan: k.pages_to_scan,
        sleep_millisecs: k.sleep_millisecs,
        full_scans: k.full_scans,
        registered_pages: registered,
        full_scan_seconds,
    }
}

/// A variable of the process's environment (`None`: unset or unreadable).
fn env_var(f: &Facts, name: &str) -> Option<String> {
    let e = f.environ.as_ref()?;
    e.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn library(f: &Facts) -> Library {
    let ld_preload = env_var(f, "LD_PRELOAD");
    let in_ld_preload = ld_preload
        .as_deref()
        .is_some_and(|v| preload_names_the_library(v.as_bytes()));
    let loaded = f.smaps.library_path.is_some();
    Library {
        loaded,
        path: f.smaps.library_path.clone(),
        environ_readable: f.environ.is_some(),
        ld_preload,
        in_ld_preload,
        secure_execution: f.at_secure,
        secure_reasons: f.privileges.clone(),
        static_binary: f.static_binary,
        why_not: (!loaded).then(|| not_loaded(f, in_ld_preload)),
    }
}

/// Why the library is not loaded, most decisive reason first.
fn not_loaded(f: &Facts, in_ld_preload: bool) -> NotLoaded {
    if f.static_binary {
        NotLoaded::Static
    } else if in_ld_preload && (f.at_secure == Some(true) || !f.privileges.is_empty()) {
        NotLoaded::SecureExecution(f.privileges.clone())
    } else if f.environ.is_none() {
        NotLoaded::EnvironUnreadable
    } else if !in_ld_preload {
        NotLoaded::NotInPreload
    } else {
        NotLoaded::Refused
    }
}

fn mode(f: &Facts, loaded: bool) -> ModeInfo {
    let ksmauto_mode = env_var(f, env::MODE);
    let mg_vmas = f.smaps.mg_vmas;
    let marked = if f.ksm_stat.merge_any {
        Marked::Process
    } else if mg_vmas > 0 {
        Marked::Advise
    } else {
        Marked::Nothing
    };
    let env_part = match (&ksmauto_mode, f.environ.is_some(), loaded) {
        (Some(m), _, _) => format!("KSMAUTO_MODE={m} in its environment"),
        (None, true, true) => "KSMAUTO_MODE not set: the library's default, auto (process where the kernel accepts the prctl, else advise)".into(),
        (None, true, false) => "the library is not loaded".into(),
        (None, false, _) => "its environment is unreadable".into(),
    };
    let why = match marked {
        Marked::Process => format!(
            "merge-any (ksm_merge_any: yes, prctl PR_SET_MEMORY_MERGE): every compatible anonymous VMA is scanned; {env_part}"
        ),
        Marked::Advise => format!(
            "{mg_vmas} VMAs marked with madvise(MADV_MERGEABLE) (`mg` in smaps); {env_part}"
        ),
        Marked::Nothing => format!("nothing is marked mergeable; {env_part}"),
    };
    ModeInfo {
        mode: marked,
        merge_any: f.ksm_stat.merge_any,
        mergeable_vmas: mg_vmas,
        ksmauto_mode,
        why,
    }
}

/// The kinds of memory KSM never merges that the process keeps data in,
/// largest first, those of at least a tenth of it. (Code, executable file
/// mappings, is in every program and not counted.)
fn never_kinds(f: &Facts, mem: &Memory) -> Vec<(u64, &'static str)> {
    let n = &mem.never;
    let mut v: Vec<(u64, &'static str)> = vec![
        (n.shared, "shared"),
        (n.hugetlb, "hugetlb"),
        (f.smaps.file_data, "file-backed data"),
        (n.special, "device (PFN/IO)"),
    ];
    v.sort_by_key(|x| std::cmp::Reverse(x.0));
    let total: u64 = v.iter().map(|x| x.0).sum();
    v.into_iter()
        .filter(|(b, _)| *b > 0 && *b * 10 >= total)
        .collect()
}

/// The verdict, most decisive reason first; a note where ksmd's state
/// leaves merged memory as it was.
fn verdict(
    f: &Facts,
    mem: &Memory,
    ksmd: &Ksmd,
    library: &Library,
    notes: &mut Vec<String>,
) -> Verdict {
    let merged = mem.merged + mem.zero_pages;
    // Memory the kernel could scan if marked: its compatible anonymous memory.
    let scannable = if mem.mergeable > 0 {
        mem.mergeable
    } else {
        f.smaps.compatible_anon
    };
    // Code (executable file mappings) is in every program: what counts is
    // data the program keeps where the kernel cannot merge it.
    let never_data = mem.never.shared + mem.never.hugetlb + mem.never.special + f.smaps.file_data;
    let nothing_mergeable = never_data >= 1 << 20 && never_data >= 4 * scannable;
    let slow = SlowScan {
        seconds: ksmd.full_scan_seconds.unwrap_or(0.0),
        registered_bytes: ksmd.registered_pages * f.page_size,
    };
    if f.kernel_thread {
        return Verdict::KernelThread;
    }
    if matches!(f.state, Some('Z') | Some('X')) {
        return Verdict::Exited;
    }
    match ksmd.state {
        State::Absent => return Verdict::NoKsm,
        State::Running => {}
        State::Stopped | State::Unmerging => {
            if merged > 0 {
                notes.push(format!(
                    "{} merged earlier stays merged until written",
                    crate::util::human_bytes(merged)
                ));
            }
            return if ksmd.state == State::Unmerging {
                Verdict::KsmdUnmerging
            } else {
                Verdict::KsmdStopped
            };
        }
    }
    if nothing_mergeable {
        // Before "merging": a few merged pages of libc's data say nothing
        // about the memory the user is asking about.
        return Verdict::NothingToMerge {
            kinds: never_kinds(f, mem),
            scannable,
            merged,
        };
    }
    if merged > 0 {
        // A few pages merged say little when most is not scanned yet.
        return Verdict::Merging {
            saved: merged,
            slow: ksmd.too_slow.then_some(slow),
        };
    }
    if mem.mergeable == 0 {
        return match &library.why_not {
            Some(why) => Verdict::NotLoaded(why.clone()),
            None if mode_is_off(f) => Verdict::ModeOff,
            None => Verdict::NothingMarked,
        };
    }
    if ksmd.too_slow {
        return Verdict::ScanTooSlow(slow);
    }
    Verdict::NoIdenticalPages {
        mergeable: mem.mergeable,
    }
}

/// `KSMAUTO_MODE=off` in the process's environment, as the library reads it.
fn mode_is_off(f: &Facts) -> bool {
    env_var(f, env::MODE).is_some_and(|m| Mode::from_name(m.as_bytes()) == Some(Mode::Off))
}

/// Notes on memory that merges differently from the rest.
fn memory_notes(mem: &Memory, loaded: bool) -> Vec<String> {
    use crate::util::human_bytes;
    let mut notes = vec![];
    if !loaded && mem.mergeable > 0 {
        notes.push(
            "the library is not loaded: the program or a parent marked this memory itself".into(),
        );
    }
    if mem.thp > 0 {
        notes.push(format!(
            "{} is in transparent huge pages: ksmd splits a huge page before merging its pages",
            human_bytes(mem.thp)
        ));
    }
    if mem.locked > 0 {
        notes.push(format!(
            "{} is locked (mlock): KSM merges it, the library leaves secrets unmarked",
            human_bytes(mem.locked)
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::facts::Smaps;
    use crate::util::KsmStat;

    const MIB: u64 = 1 << 20;
    const LIB: &str = "/usr/local/lib/libksmauto.so";

    /// A process with the library loaded and ksmd running briskly, nothing
    /// marked or merged yet: each test changes what it is about.
    fn facts() -> Facts {
        Facts {
            pid: 42,
            comm: "app".into(),
            exe: Some("/usr/bin/app".into()),
            page_size: 4096,
            kernel_thread: false,
            state: Some('S'),
            smaps: Smaps {
                library_path: Some(LIB.into()),
                ..Default::default()
            },
            ksm_stat: KsmStat::default(),
            ksmd: KsmdFacts {
                state: State::Running,
                pages_to_scan: Some(1000),
                sleep_millisecs: Some(20),
                full_scans: Some(10),
                rmap_items: 0,
            },
            environ: Some(vec![("LD_PRELOAD".into(), LIB.into())]),
            static_binary: false,
            at_secure: Some(false),
            privileges: vec![],
        }
    }

    fn mergeable(mut f: Facts, bytes: u64) -> Facts {
        f.smaps.mem.mergeable = bytes;
        f.smaps.compatible_anon = bytes;
        f.smaps.mg_vmas = 1;
        f
    }

    fn merged(mut f: Facts, bytes: u64) -> Facts {
        f.ksm_stat.merging_pages = bytes / f.page_size;
        f
    }

    fn not_loaded(mut f: Facts) -> Facts {
        f.smaps.library_path = None;
        f
    }

    #[test]
    fn merged_memory_is_merging_and_says_how_much() {
        let d = judge(merged(mergeable(facts(), 8 * MIB), MIB));
        assert_eq!(
            d.verdict,
            Verdict::Merging {
                saved: MIB,
                slow: None
            }
        );
        assert!(d.merging);
        assert_eq!(d.verdict.to_string(), "merging: 1.0 MiB saved");
        assert_eq!(d.mode.mode, Marked::Advise);
    }

    #[test]
    fn merging_with_a_slow_scan_says_so_and_is_still_merging() {
        let mut f = merged(mergeable(facts(), 8 * MIB), MIB);
        // 1,000,000 pages, 100 every 20 ms: 200 s a scan.
        (f.ksmd.pages_to_scan, f.ksmd.rmap_items) = (Some(100), 1_000_000);
        let d = judge(f);
        assert!(d.ksmd.too_slow && d.merging);
        assert_eq!(
            d.verdict.to_string(),
            "merging: 1.0 MiB saved; ksmd needs 200 s for one full scan of 3.8 GiB registered"
        );
    }

    #[test]
    fn a_kernel_thread_or_a_zombie_comes_before_ksmd_and_the_library() {
        let mut f = not_loaded(facts());
        f.ksmd.state = State::Stopped;
        f.kernel_thread = true;
        assert_eq!(judge(f.clone()).verdict, Verdict::KernelThread);
        f.kernel_thread = false;
        f.state = Some('Z');
        assert_eq!(judge(f).verdict, Verdict::Exited);
    }

    #[test]
    fn ksmd_not_running_keeps_what_merged_and_notes_it() {
        let mut f = merged(mergeable(facts(), 8 * MIB), MIB);
        f.ksmd.state = State::Stopped;
        let d = judge(f.clone());
        assert_eq!(d.verdict, Verdict::KsmdStopped);
        assert!(!d.merging, "merged memory with ksmd off is not merging");
        assert_eq!(
            d.notes[0],
            "1.0 MiB merged earlier stays merged until written"
        );
        f.ksmd.state = State::Unmerging;
        assert_eq!(judge(f.clone()).verdict, Verdict::KsmdUnmerging);
        f.ksmd.state = State::Absent;
        assert_eq!(judge(f).verdict, Verdict::NoKsm);
    }

    #[test]
    fn memory_kept_where_ksm_never_merges_is_nothing_to_merge() {
        let mut f = merged(facts(), 64 * 1024);
        f.smaps.compatible_anon = MIB;
        f.smaps.mem.never.shared = 64 * MIB;
        f.smaps.mem.never.special = MIB; // under a tenth: not named
        let d = judge(f);
        assert_eq!(
            d.verdict,
            Verdict::NothingToMerge {
                kinds: vec![(64 * MIB, "shared")],
                scannable: MIB,
                merged: 64 * 1024
            }
        );
        assert!(
            !d.merging,
            "a few pages merged are not the memory asked about"
        );
        assert_eq!(
            d.verdict.to_string(),
            "nothing to merge: memory is 64.0 MiB shared; only 1.0 MiB is private anonymous \
             memory the kernel can merge (64.0 KiB of it merged)"
        );
    }

    #[test]
    fn without_the_library_the_reason_is_named_most_decisive_first() {
        let short = |f: Facts| match judge(f).verdict {
            Verdict::NotLoaded(why) => why,
            other => panic!("{other:?}"),
        };
        let mut f = not_loaded(facts());
        assert_eq!(short(f.clone()), NotLoaded::Refused);
        f.privileges = vec!["setuid".into()];
        let why = short(f.clone());
        assert_eq!(why, NotLoaded::SecureExecution(vec!["setuid".into()]));
        assert_eq!(
            why.to_string(),
            "secure execution (setuid): the loader ignores a preload given by path"
        );
        f.static_binary = true;
        assert_eq!(short(f.clone()), NotLoaded::Static);
        assert_eq!(
            judge(f).verdict.to_string(),
            "not merging: the library is not loaded (static binary)"
        );
        let mut f = not_loaded(facts());
        f.environ = Some(vec![]);
        assert_eq!(short(f.clone()), NotLoaded::NotInPreload);
        f.environ = None;
        assert_eq!(short(f.clone()), NotLoaded::EnvironUnreadable);
        assert_eq!(
            judge(f).verdict.to_string(),
            "not merging: the library is not loaded (not in LD_PRELOAD)"
        );
    }

    #[test]
    fn secure_execution_alone_counts_only_for_a_preload_that_names_the_library() {
        let mut f = not_loaded(facts());
        f.at_secure = Some(true);
        assert_eq!(
            judge(f.clone()).library.why_not,
            Some(NotLoaded::SecureExecution(vec![]))
        );
        f.environ = Some(vec![("LD_PRELOAD".into(), "/lib/other.so".into())]);
        assert_eq!(judge(f).library.why_not, Some(NotLoaded::NotInPreload));
    }

    #[test]
    fn ksmauto_mode_off_is_read_as_the_library_reads_it() {
        let mut f = facts();
        f.environ = Some(vec![(env::MODE.into(), "off".into())]);
        assert_eq!(judge(f.clone()).verdict, Verdict::ModeOff);
        // Another spelling is no mode: the library takes auto.
        f.environ = Some(vec![(env::MODE.into(), "Off".into())]);
        assert_eq!(judge(f.clone()).verdict, Verdict::NothingMarked);
        f.environ = None;
        assert_eq!(judge(f).verdict, Verdict::NothingMarked);
    }

    #[test]
    fn mergeable_but_unmerged_memory_blames_the_scan_or_the_contents() {
        let f = mergeable(facts(), 8 * MIB);
        assert_eq!(
            judge(f.clone()).verdict,
            Verdict::NoIdenticalPages { mergeable: 8 * MIB }
        );
        let mut slow = f;
        (slow.ksmd.pages_to_scan, slow.ksmd.rmap_items) = (Some(100), 1_000_000);
        let d = judge(slow);
        assert!(matches!(d.verdict, Verdict::ScanTooSlow(s) if s.seconds == 200.0));
        assert!(!d.merging);
    }

    #[test]
    fn merge_any_counts_compatible_memory_where_the_kernel_shows_no_mg() {
        let mut f = facts();
        f.ksm_stat.merge_any = true;
        f.smaps.compatible_anon = 4 * MIB;
        let d = judge(f);
        assert_eq!(d.memory.mergeable, 4 * MIB);
        assert_eq!(d.mode.mode, Marked::Process);
        // At least this process's pages are registered with ksmd.
        assert_eq!(d.ksmd.registered_pages, 1024);
    }

    #[test]
    fn the_json_carries_the_words_and_whether_it_merges() {
        let d = judge(merged(mergeable(facts(), 8 * MIB), MIB));
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["verdict"], "merging: 1.0 MiB saved");
        assert_eq!(v["merging"], true);
        assert_eq!(v["ksmd"]["state"], "running");
        assert_eq!(v["mode"]["mode"], "advise");
        assert_eq!(v["library"]["why_not"], serde_json::Value::Null);
        let d = judge(not_loaded(facts()));
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(
            v["library"]["why_not"],
            "in its LD_PRELOAD but not mapped (the loader refused it, or it was removed)"
        );
        assert_eq!(v["mode"]["mode"], "none");
    }
}
