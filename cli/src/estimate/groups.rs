//! The ideal savings of every trust domain in one pass over the records
//! sorted by hash. A run of equal hashes is one content; within a domain D
//! (a process, a user, a cgroup, the host) its frames are the distinct
//! frames that D's records of it map (a frame shared by fork or merged by
//! KSM counts once in each domain that maps it; a page whose frame is not
//! known, a frame of its own), and
//!
//!   ideal(D) = Σ over contents c that D maps of (frames of c in D − 1),
//!
//! what KSM would free if it merged only pages of D with each other. A run
//! of one record (most contents) is counted without sorting; a longer run
//! is sorted in place once per kind of domain. Knows nothing of /proc.

use super::tally::{Record, UNRESOLVED, ZERO_HASH};
use rayon::prelude::*;

/// The domains of each source (a process and the kind of region).
pub struct Keys {
    /// Source → process index.
    pub process_of: Vec<u32>,
    /// Source → region label index.
    pub label_of: Vec<u32>,
    /// Process → user index, cgroup index.
    pub user_of: Vec<u32>,
    pub cgroup_of: Vec<u32>,
    pub users: usize,
    pub cgroups: usize,
    pub labels: usize,
}

/// One domain's frames, frames of zeroes, and ideal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomainSums {
    pub frames: u64,
    pub zero_frames: u64,
    pub ideal: u64,
}

impl DomainSums {
    fn add(&mut self, frames: u64, zero: bool) {
        self.frames += frames;
        self.ideal += frames.saturating_sub(1);
        if zero {
            self.zero_frames += frames;
        }
    }

    fn merge(&mut self, o: &DomainSums) {
        self.frames += o.frames;
        self.zero_frames += o.zero_frames;
        self.ideal += o.ideal;
    }
}

#[derive(Clone, Debug)]
pub struct Sums {
    pub host: DomainSums,
    pub processes: Vec<DomainSums>,
    pub users: Vec<DomainSums>,
    pub cgroups: Vec<DomainSums>,
    /// Duplicates (frames beyond a content's first, host-wide) by region label.
    pub by_label: Vec<u64>,
    /// Mappings whose frame's reading failed, by process: never counted.
    pub unresolved: Vec<u64>,
}

impl Sums {
    fn new(k: &Keys) -> Sums {
        let processes = k.user_of.len();
        Sums {
            host: DomainSums::default(),
            processes: vec![DomainSums::default(); processes],
            users: vec![DomainSums::default(); k.users],
            cgroups: vec![DomainSums::default(); k.cgroups],
            by_label: vec![0; k.labels],
            unresolved: vec![0; processes],
        }
    }

    fn merge(mut self, o: Sums) -> Sums {
        self.host.merge(&o.host);
        for (mine, theirs) in [
            (&mut self.processes, &o.processes),
            (&mut self.users, &o.users),
            (&mut self.cgroups, &o.cgroups),
        ] {
            for (a, b) in mine.iter_mut().zip(theirs) {
                a.merge(b);
            }
        }
        for (a, b) in self.by_label.iter_mut().zip(&o.by_label) {
            *a += b;
        }
        for (a, b) in self.unresolved.iter_mut().zip(&o.unresolved) {
            *a += b;
        }
        self
    }

    /// Counts one content (a run of records with one hash).
    fn content(&mut self, run: &mut [Record], k: &Keys) {
        let hash = run[0].hash;
        if hash == UNRESOLVED {
            for r in run.iter() {
                self.unresolved[k.process_of[r.source() as usize] as usize] += 1;
            }
            return;
        }
        let zero = hash == ZERO_HASH;
        if let [one] = run {
            let p = k.process_of[one.source() as usize] as usize;
            self.host.add(1, zero);
            self.processes[p].add(1, zero);
            self.users[k.user_of[p] as usize].add(1, zero);
            self.cgroups[k.cgroup_of[p] as usize].add(1, zero);
            return;
        }
        run.sort_unstable_by_key(|r| r.pfn());
        let mut frames = 0;
        for (i, r) in run.iter().enumerate() {
            if new_frame(run, i) {
                if frames > 0 {
                    self.by_label[k.label_of[r.source() as usize] as usize] += 1;
                }
                frames += 1;
            }
        }
        self.host.add(frames, zero);
        let process = |r: &Record| k.process_of[r.source() as usize];
        self.by_domain(run, zero, |r| process(r), Domain::Process);
        self.by_domain(run, zero, |r| k.user_of[process(r) as usize], Domain::User);
        self.by_domain(
            run,
            zero,
            |r| k.cgroup_of[process(r) as usize],
            Domain::Cgroup,
        );
    }

    /// Sorts `run` by domain, then frame, and counts each domain's frames.
    fn by_domain(
        &mut self,
        run: &mut [Record],
        zero: bool,
        key: impl Fn(&Record) -> u32,
        d: Domain,
    ) {
        run.sort_unstable_by_key(|r| ((key(r) as u64) << Record::PFN_BITS) | r.pfn());
        for same in run.chunk_by(|a, b| key(a) == key(b)) {
            let frames = (0..same.len()).filter(|&i| new_frame(same, i)).count() as u64;
            let sums = match d {
                Domain::Process => &mut self.processes,
                Domain::User => &mut self.users,
                Domain::Cgroup => &mut self.cgroups,
            };
            sums[key(&same[0]) as usize].add(frames, zero);
        }
    }
}

#[derive(Clone, Copy)]
enum Domain {
    Process,
    User,
    Cgroup,
}

/// Whether record `i` of a run sorted by frame is a frame not yet counted
/// (a record whose frame is not known always is).
fn new_frame(run: &[Record], i: usize) -> bool {
    let pfn = run[i].pfn();
    pfn == 0 || i == 0 || run[i - 1].pfn() != pfn
}

/// Sorts the records by hash (in place) and counts every domain.
pub fn count(records: &mut [Record], k: &Keys) -> Sums {
    records.par_sort_unstable_by_key(|r| r.hash);
    records
        .par_chunk_by_mut(|a, b| a.hash == b.hash)
        .fold(
            || Sums::new(k),
            |mut s, run| {
                s.content(run, k);
                s
            },
        )
        .reduce(|| Sums::new(k), Sums::merge)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two processes of user 0 (cgroups 0 and 1), one of user 1 (cgroup 1);
    /// each source is its process (label 0).
    fn keys() -> Keys {
        Keys {
            process_of: vec![0, 1, 2],
            label_of: vec![0, 0, 0],
            user_of: vec![0, 0, 1],
            cgroup_of: vec![0, 1, 1],
            users: 2,
            cgroups: 2,
            labels: 1,
        }
    }

    #[test]
    fn each_domain_counts_the_frames_it_maps_once() {
        let mut r = vec![
            // Content 11: two frames in process 0, one each in 1 and 2.
            Record::new(11, 100, 0),
            Record::new(11, 101, 0),
            Record::new(11, 102, 1),
            Record::new(11, 103, 2),
            // Content 13: one frame shared by fork by processes 0 and 2
            // (two users), and another frame in process 2.
            Record::new(13, 200, 0),
            Record::new(13, 200, 2),
            Record::new(13, 201, 2),
            // Zeroes: frames not known (each its own), two in process 1.
            Record::new(ZERO_HASH, 0, 1),
            Record::new(ZERO_HASH, 0, 1),
            // Unique.
            Record::new(17, 300, 0),
        ];
        let s = count(&mut r, &keys());
        // Host: 11 → 4 frames, 13 → 2, zero → 2, 17 → 1.
        assert_eq!(
            s.host,
            DomainSums {
                frames: 9,
                zero_frames: 2,
                ideal: 3 + 1 + 1
            }
        );
        assert_eq!(
            s.processes[0],
            DomainSums {
                frames: 4,
                zero_frames: 0,
                ideal: 1
            }
        );
        assert_eq!(
            s.processes[1],
            DomainSums {
                frames: 3,
                zero_frames: 2,
                ideal: 1
            }
        );
        assert_eq!(
            s.processes[2],
            DomainSums {
                frames: 3,
                zero_frames: 0,
                ideal: 1
            }
        );
        // User 0 (processes 0, 1): 11 → 3 frames, 13 → 1, zero → 2, 17 → 1.
        assert_eq!(
            s.users[0],
            DomainSums {
                frames: 7,
                zero_frames: 2,
                ideal: 2 + 1
            }
        );
        // User 1 (process 2): 11 → 1, 13 → 2 (the shared frame counts here too).
        assert_eq!(
            s.users[1],
            DomainSums {
                frames: 3,
                zero_frames: 0,
                ideal: 1
            }
        );
        // Cgroup 1 (processes 1, 2): 11 → 2, 13 → 2, zero → 2.
        assert_eq!(
            s.cgroups[1],
            DomainSums {
                frames: 6,
                zero_frames: 2,
                ideal: 3
            }
        );
        assert_eq!(s.by_label, vec![5]);
        assert_eq!(s.unresolved, vec![0, 0, 0]);
    }
}
