//! The processes using KSM grouped by user and by cgroup, and whether KSM
//! merges across more than one of them. Pure: reads nothing.

use super::Proc;
use crate::owner::container_of;
use crate::util::*;
use serde::Serialize;
use std::collections::BTreeMap;

/// Mergeable and merged memory of one trust domain (a user or a cgroup).
#[derive(Serialize, Clone, Debug, Default)]
pub struct Domain {
    /// The user name or the cgroup path.
    pub name: String,
    /// The uid (users only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    pub processes: u64,
    pub mergeable_bytes: u64,
    /// `ksm_merging_pages` × page size.
    pub merged_bytes: u64,
    /// Sum of `ksm_process_profit`.
    pub profit_bytes: i64,
}

/// Who shares ksmd's merging: KSM merges identical pages whoever owns them,
/// so one domain can learn another's memory contents through timing
/// (copy-on-write after a merge is slow). More than one domain with mergeable
/// memory is worth a warning.
#[derive(Serialize, Clone, Debug, Default)]
pub struct TrustDomains {
    pub by_user: Vec<Domain>,
    pub by_cgroup: Vec<Domain>,
    /// Distinct container cgroups (see `container_of`) with mergeable memory;
    /// `host` for the processes in none, when there is at least one container.
    pub containers: Vec<String>,
    /// `KSM merges across these trust domains: …` when more than one user or
    /// more than one container (host counted) has mergeable memory.
    pub warning: Option<String>,
}

/// Groups the processes by user and by cgroup, and says whether KSM merges
/// across more than one of them.
pub fn trust_domains(procs: &[Proc], page_size: u64) -> TrustDomains {
    let mut users: BTreeMap<u32, Domain> = BTreeMap::new();
    let mut cgroups: BTreeMap<String, Domain> = BTreeMap::new();
    let add = |d: &mut Domain, p: &Proc| {
        d.processes += 1;
        d.mergeable_bytes += p.mergeable_bytes;
        d.merged_bytes += p.merging_pages * page_size;
        d.profit_bytes += p.profit;
    };
    let mut containers = std::collections::BTreeSet::new();
    let mut host = false;
    for p in procs {
        let u = users.entry(p.uid).or_insert_with(|| Domain {
            name: p.user.clone(),
            uid: Some(p.uid),
            ..Default::default()
        });
        add(u, p);
        let c = cgroups.entry(p.cgroup.clone()).or_insert_with(|| Domain {
            name: p.cgroup.clone(),
            ..Default::default()
        });
        add(c, p);
        if p.mergeable_bytes > 0 || p.merging_pages > 0 {
            match container_of(&p.cgroup) {
                Some(c) => {
                    containers.insert(c);
                }
                None => host = true,
            }
        }
    }
    let has_memory = |d: &Domain| d.mergeable_bytes > 0 || d.merged_bytes > 0;
    let active_users: Vec<&Domain> = users.values().filter(|d| has_memory(d)).collect();
    let mut containers: Vec<String> = containers.into_iter().collect();
    if host && !containers.is_empty() {
        containers.push("host".into());
    }
    let mut parts = vec![];
    if active_users.len() > 1 {
        let list: Vec<String> = active_users
            .iter()
            .map(|d| format!("{} ({} mergeable)", d.name, human_bytes(d.mergeable_bytes)))
            .collect();
        parts.push(format!("users {}", list.join(", ")));
    }
    if containers.len() > 1 {
        parts.push(format!("containers {}", containers.join(", ")));
    }
    let warning = (!parts.is_empty()).then(|| {
        format!(
            "KSM merges across these trust domains: {}",
            parts.join("; ")
        )
    });
    let by_mergeable = |a: &Domain, b: &Domain| {
        b.mergeable_bytes
            .cmp(&a.mergeable_bytes)
            .then(a.name.cmp(&b.name))
    };
    let mut by_user: Vec<Domain> = users.into_values().collect();
    by_user.sort_by(by_mergeable);
    let mut by_cgroup: Vec<Domain> = cgroups.into_values().collect();
    by_cgroup.sort_by(by_mergeable);
    TrustDomains {
        by_user,
        by_cgroup,
        containers,
        warning,
    }
}
