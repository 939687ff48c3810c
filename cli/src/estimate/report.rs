//! From processes to figures: opens the chosen processes (a named one's
//! refusal is an error, a found one's is a reason), numbers their sources,
//! users and cgroups for the tally, and puts the counts together into an
//! [`Estimate`]. Reads no page.

use super::groups::{DomainSums, Keys, Sums};
use super::select::{Identity, Unreadable};
use super::tally::{Counted, Record};
use super::walk::Target;
use super::{DomainEstimate, Estimate, ProcEstimate, RegionSavings, TrustDomainSavings};
use crate::util::*;
use anyhow::Result;
use rayon::prelude::*;
use std::collections::BTreeMap;

pub struct Opened {
    pub targets: Vec<Target>,
    /// The identity of each target, same order.
    pub identities: Vec<Identity>,
    pub unreadable: Vec<Unreadable>,
}

/// Why a found process could not be opened, in a word or two.
fn reason(e: &anyhow::Error) -> String {
    match exit_code(e) {
        EXIT_PERM => "permission denied".into(),
        EXIT_NO_PID => "exited".into(),
        _ => e.to_string(),
    }
}

/// Opens every process (in parallel: each reads its maps).
pub fn open(processes: Vec<Identity>) -> Result<Opened> {
    let results: Vec<(Identity, Result<Target>)> = processes
        .into_par_iter()
        .map(|id| {
            // A kernel thread has no memory to open (its pagemap and mem
            // refuse with ESRCH, which is no "no such process").
            let t = match id.kernel_thread && id.named {
                true => Ok(Target::kernel_thread(id.pid)),
                false => Target::open(id.pid),
            };
            (id, t)
        })
        .collect();
    let mut o = Opened {
        targets: vec![],
        identities: vec![],
        unreadable: vec![],
    };
    for (id, t) in results {
        match t {
            Ok(t) => {
                o.targets.push(t);
                o.identities.push(id);
            }
            Err(e) if id.named => return Err(e),
            Err(e) => o.unreadable.push(Unreadable {
                pid: id.pid,
                comm: id.comm,
                reason: reason(&e),
            }),
        }
    }
    Ok(o)
}

/// The tally's numbering: sources (process × region label), labels, users,
/// cgroups.
pub struct Layout {
    pub keys: Keys,
    pub labels: Vec<String>,
    /// (uid, name) of each user index; name of each cgroup index.
    pub users: Vec<(u32, String)>,
    pub cgroups: Vec<String>,
}

impl Layout {
    /// Numbers everything, and gives each target's regions their source.
    pub fn new(targets: &mut [Target], ids: &[Identity]) -> Result<Layout> {
        let mut labels: BTreeMap<String, u32> = BTreeMap::new();
        let mut users: BTreeMap<u32, u32> = BTreeMap::new();
        let mut cgroups: BTreeMap<String, u32> = BTreeMap::new();
        let mut k = Keys {
            process_of: vec![],
            label_of: vec![],
            user_of: vec![],
            cgroup_of: vec![],
            users: 0,
            cgroups: 0,
            labels: 0,
        };
        let mut user_list = vec![];
        let mut cgroup_list = vec![];
        for (p, (t, id)) in targets.iter_mut().zip(ids).enumerate() {
            let n = users.len() as u32;
            let u = *users.entry(id.uid).or_insert_with(|| {
                user_list.push((id.uid, id.user.clone()));
                n
            });
            let n = cgroups.len() as u32;
            let c = *cgroups.entry(id.cgroup.clone()).or_insert_with(|| {
                cgroup_list.push(id.cgroup.clone());
                n
            });
            k.user_of.push(u);
            k.cgroup_of.push(c);
            // One source per distinct label of this process.
            let mut mine: BTreeMap<u32, u32> = BTreeMap::new();
            t.sources = t
                .regions
                .iter()
                .map(|r| {
                    let n = labels.len() as u32;
                    let l = *labels.entry(r.label.clone()).or_insert(n);
                    *mine.entry(l).or_insert_with(|| {
                        k.process_of.push(p as u32);
                        k.label_of.push(l);
                        (k.process_of.len() - 1) as u32
                    })
                })
                .collect();
        }
        if k.process_of.len() >= 1 << Record::SOURCE_BITS {
            return Err(fail(
                EXIT_RUNTIME,
                "too many kinds of region across these processes (2^24): estimate fewer at a time",
            ));
        }
        let mut label_names = vec![String::new(); labels.len()];
        for (name, i) in labels {
            label_names[i as usize] = name;
        }
        k.users = user_list.len();
        k.cgroups = cgroup_list.len();
        k.labels = label_names.len();
        Ok(Layout {
            keys: k,
            labels: label_names,
            users: user_list,
            cgroups: cgroup_list,
        })
    }
}

pub struct Parts<'a> {
    pub ps: u64,
    pub identities: &'a [Identity],
    pub targets: &'a [Target],
    pub layout: &'a Layout,
    pub counted: &'a [Counted],
    pub exited: &'a [bool],
    pub sums: &'a Sums,
    pub pfn_available: bool,
    pub kpageflags_available: bool,
}

/// The per-process lines.
fn processes(p: &Parts) -> Vec<ProcEstimate> {
    (0..p.targets.len())
        .map(|i| {
            let (id, c, s) = (&p.identities[i], &p.counted[i], &p.sums.processes[i]);
            let unreadable = c.unreadable + p.sums.unresolved[i];
            ProcEstimate {
                pid: id.pid,
                comm: id.comm.clone(),
                uid: id.uid,
                user: id.user.clone(),
                cgroup: id.cgroup.clone(),
                regions: p.targets[i].regions.len(),
                pages_scanned: c.pages - unreadable,
                distinct_frames: s.frames,
                zero_pages: s.zero_frames,
                already_merged_pages: c.already_merged,
                ideal_savings_pages: s.ideal,
                ideal_savings_bytes: s.ideal * p.ps,
                unreadable_pages: unreadable,
                exited_during_scan: p.exited[i],
            }
        })
        .collect()
}

/// The by-user and by-cgroup lists, largest ideal first.
fn domains(p: &Parts, procs: &[ProcEstimate]) -> (Vec<DomainEstimate>, Vec<DomainEstimate>) {
    let k = &p.layout.keys;
    let one =
        |name: String, uid: Option<u32>, s: &DomainSums, members: Vec<usize>| DomainEstimate {
            name,
            uid,
            processes: members.len() as u64,
            pages_scanned: members.iter().map(|&i| procs[i].pages_scanned).sum(),
            distinct_frames: s.frames,
            ideal_savings_pages: s.ideal,
            ideal_savings_bytes: s.ideal * p.ps,
        };
    let members = |of: &[u32], d: usize| (0..of.len()).filter(|&i| of[i] as usize == d).collect();
    let mut by_user: Vec<DomainEstimate> = (p.layout.users.iter().enumerate())
        .map(|(d, (uid, name))| {
            one(
                name.clone(),
                Some(*uid),
                &p.sums.users[d],
                members(&k.user_of, d),
            )
        })
        .collect();
    let mut by_cgroup: Vec<DomainEstimate> = (p.layout.cgroups.iter().enumerate())
        .map(|(d, name)| {
            one(
                name.clone(),
                None,
                &p.sums.cgroups[d],
                members(&k.cgroup_of, d),
            )
        })
        .collect();
    for list in [&mut by_user, &mut by_cgroup] {
        list.sort_by(|a, b| {
            (b.ideal_savings_pages, b.pages_scanned, &a.name).cmp(&(
                a.ideal_savings_pages,
                a.pages_scanned,
                &b.name,
            ))
        });
    }
    (by_user, by_cgroup)
}

fn top_regions(p: &Parts) -> Vec<RegionSavings> {
    let mut top: Vec<RegionSavings> = (p.sums.by_label.iter().enumerate())
        .filter(|(_, n)| **n > 0)
        .map(|(l, &n)| RegionSavings {
            region: p.layout.labels[l].clone(),
            duplicate_pages: n,
            bytes: n * p.ps,
        })
        .collect();
    top.sort_by(|a, b| (b.duplicate_pages, &a.region).cmp(&(a.duplicate_pages, &b.region)));
    top.truncate(10);
    top
}

/// Everything but the timing and the search's own lists.
pub fn assemble(p: Parts) -> Estimate {
    let ps = p.ps;
    let procs = processes(&p);
    let (by_user, by_cgroup) = domains(&p, &procs);
    let sum = |f: fn(&Counted) -> u64| p.counted.iter().map(f).sum::<u64>();
    let unresolved: u64 = p.sums.unresolved.iter().sum();
    let host = &p.sums.host;
    let pages_scanned: u64 = procs.iter().map(|q| q.pages_scanned).sum();
    let already_saved = sum(|c| c.already_saved);
    let whole_ideal = already_saved + host.ideal;
    let within = |d: &[DomainSums]| d.iter().map(|s| s.ideal).sum::<u64>();
    let td = TrustDomainSavings {
        within_process_pages: within(&p.sums.processes),
        within_user_pages: within(&p.sums.users),
        within_cgroup_pages: within(&p.sums.cgroups),
        across_host_pages: host.ideal,
        by_user,
        by_cgroup,
        ..Default::default()
    };
    let mut notes = vec![];
    if !p.pfn_available && pages_scanned > 0 {
        notes.push(
            "page frame numbers unavailable (not root): pages shared by fork count as duplicates"
                .into(),
        );
    }
    if !p.kpageflags_available {
        notes.push("/proc/kpageflags unreadable: already-merged pages not counted".into());
    }
    for id in p.identities.iter().filter(|id| id.kernel_thread) {
        notes.push(format!(
            "pid {} ({}) is a kernel thread: it has no user memory for KSM to merge",
            id.pid, id.comm
        ));
    }
    Estimate {
        pids: p.targets.iter().map(|t| t.pid).collect(),
        page_size: ps,
        pages_scanned,
        bytes_scanned: pages_scanned * ps,
        distinct_frames: host.frames,
        shared_frame_mappings: sum(|c| c.repeats) - unresolved,
        zero_pages: host.zero_frames,
        zero_page_mappings: sum(|c| c.zero_page_mappings),
        already_merged_pages: p.kpageflags_available.then(|| sum(|c| c.already_merged)),
        already_saved_pages: already_saved,
        already_saved_bytes: already_saved * ps,
        merged_percent_of_ideal: (p.kpageflags_available && whole_ideal > 0)
            .then(|| already_saved as f64 * 100.0 / whole_ideal as f64),
        ideal_savings_pages: host.ideal,
        ideal_savings_bytes: host.ideal * ps,
        ideal_savings_percent: if pages_scanned > 0 {
            host.ideal as f64 * 100.0 / pages_scanned as f64
        } else {
            0.0
        },
        // The empty pages: with use_zero_pages every one of them goes, not all but one.
        ideal_savings_pages_use_zero_pages: host.ideal + (host.zero_frames > 0) as u64,
        ideal_savings_bytes_use_zero_pages: (host.ideal + (host.zero_frames > 0) as u64) * ps,
        within_process_savings_pages: td.within_process_pages,
        trust_domains: TrustDomainSavings {
            within_process_bytes: td.within_process_pages * ps,
            within_user_bytes: td.within_user_pages * ps,
            within_cgroup_bytes: td.within_cgroup_pages * ps,
            across_host_bytes: td.across_host_pages * ps,
            ..td
        },
        top_regions: top_regions(&p),
        processes: procs,
        pfn_available: p.pfn_available,
        kpageflags_available: p.kpageflags_available,
        expected_hash_collisions: (host.frames as f64).powi(2) / 2f64.powi(64),
        notes,
        ..Default::default()
    }
}
