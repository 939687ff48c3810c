//! Sightings: evidence, before ksmd is made to pay for it, that a piece of
//! memory has a copy elsewhere, so that a probation is spent only where a
//! duplicate may be (UKSM's sampling, on a stock kernel).
//!
//! When a round first meets a piece given to ksmd that is at least half
//! present, it reads two stretches of 256 bytes of each of the piece's
//! present pages (one `process_vm_readv` of its own memory, never a page
//! that is not present) and hashes them. One page in 8, chosen by its hash
//! alone (`policy::paying::selected`), is a *sighting*: two processes
//! holding the same page both choose it, wherever it lies. A piece none
//! of whose pages is a sighting (a small VMA may have none) has its
//! probation as before. A piece one of
//! whose sightings another process of its trust domain published, or
//! another piece (or page) of this process holds, or whose pages repeat
//! one another (zeros included) at the break-even, is given to ksmd for
//! its probation as before; any other piece is taken out at once, without
//! costing ksmd three full scans, and rests. It is given back for a
//! probation when one of its sightings turns up in a file another process
//! publishes later (the pool's other workers arriving) — again, after a
//! longer rest each time, while its probations find no copy merging; and like
//! every resting piece on its ticks, or when its content changes and
//! holds still.
//!
//! **Trust domain.** Sightings are shared only among processes that could
//! read each other's memory anyway (`os::trust_domain`: the same effective
//! user with the same capabilities): a hash lets whoever reads it confirm
//! a guess of the page. A process that is not dumpable, whose real,
//! effective and saved IDs are not one, or on a host whose Yama
//! `ptrace_scope` is not 0, shares nothing: it neither publishes nor takes
//! anything out on sight (its copies would be sighted by no one), and
//! what it published goes. Where the directory cannot be used safely,
//! nothing is published nor read, and every piece has its probation as
//! before.
//!
//! Never allocates (tables are part of the round's zeroed static work,
//! touched as far as used: at most 512 KiB of own and 512 KiB of others'
//! sightings, 256 KiB of stretches read), never blocks, runs only on the library's thread within a
//! round.

use core::ffi::CStr;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::core::policy::paying::{
    page_hash, selected, Sight, MOST_SELECT_LEVEL, SIGHTINGS_MAX_AGE_S, SIGHTINGS_REFRESH_S,
};
use crate::core::policy::Range;
use crate::os::own_memory::OwnMemory;
use crate::os::pagemap::{entry_present, Pagemap};
use crate::os::sys;
use crate::os::trust_domain::{self, failed_for_good, Stamp, TrustDomainDir};

/// Own sightings, with the piece each was seen in (open addressing).
const OWN_SLOTS: usize = 1 << 15;
/// Other processes' sightings (open addressing).
const PEER_SLOTS: usize = 1 << 16;
/// Pieces found sighted elsewhere, per round.
const SIGHTED_MOST: usize = 4096;
/// Sightings of one piece remembered to find copies within it.
const LOCAL_MOST: usize = 128;
/// Pages of a piece at the most (2 MiB of 4 KiB pages).
const PIECE_PAGES_MOST: usize = 512;
/// Bytes of a page hashed at its start and at its middle.
const STRETCH: usize = 256;
/// The largest page read whole.
const WHOLE_PAGE_MOST: usize = 64 << 10;
/// The first word of a published file.
const MAGIC: u64 = u64::from_le_bytes(*b"KSMSGHT1");

/// A forked child must not publish its parent's sightings as its own.
static FORKED: AtomicBool = AtomicBool::new(false);
/// This process wrote a file, to be removed at its end.
static PUBLISHED: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Availability {
    Untried,
    Usable,
    Unusable,
}

/// Everything the sightings keep (zeroed: nothing seen, nothing tried).
pub struct Sightings {
    own: [[u64; 2]; OWN_SLOTS],
    own_count: usize,
    level: u8,
    peers: [u64; PEER_SLOTS],
    peer_count: usize,
    peers_stamp: Option<Stamp>,
    availability: u8,
    unpublished: bool,
    published_s: i64,
    sighted: [usize; SIGHTED_MOST],
    sighted_count: usize,
    local: [u64; LOCAL_MOST],
    /// Every present page's hash of the piece being sighted.
    piece: [u64; PIECE_PAGES_MOST],
    zero_hash: u64,
    /// `process_vm_readv` was refused (seccomp): whole pages are read.
    gather_refused: bool,
    /// The stretches' addresses, and the request made of them.
    addrs: [usize; 2 * PIECE_PAGES_MOST],
    iovecs: [[usize; 2]; 2 * PIECE_PAGES_MOST],
    entries: [u8; 4096],
    chunk: [u8; 4096],
    /// The stretches read, two per present page.
    run: [u8; 2 * STRETCH * PIECE_PAGES_MOST],
    /// One whole page (where stretches cannot be gathered).
    whole: [u8; WHOLE_PAGE_MOST],
}

/// This process's file name (`p<pid>.<pid namespace inode>`: pids of two
/// namespaces sharing `/dev/shm` never collide), and its temporary (the
/// same with a leading `.`).
fn names(buf: &mut [u8; 48]) -> (&CStr, &CStr) {
    let mut at = 0;
    let mut push = |bytes: &[u8], at: &mut usize| {
        buf[*at..*at + bytes.len()].copy_from_slice(bytes);
        *at += bytes.len();
    };
    push(b".p", &mut at);
    let mut digits = [0u8; 20];
    for (i, n) in [sys::getpid().max(0) as u64, PID_NAMESPACE.load(Relaxed)].into_iter().enumerate() {
        if i == 1 {
            push(b".", &mut at);
        }
        let (mut n, mut len) = (n, 0);
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        digits[..len].reverse();
        push(&digits[..len], &mut at);
    }
    buf[at] = 0;
    let temporary = CStr::from_bytes_until_nul(&buf[..]).unwrap_or(c".");
    let name = CStr::from_bytes_until_nul(&buf[1..]).unwrap_or(c".");
    (name, temporary)
}

/// This process's pid namespace (the inode of `/proc/self/ns/pid`; 0
/// where it cannot be read).
static PID_NAMESPACE: AtomicU64 = AtomicU64::new(0);

/// Whether the file `name` (`p<pid>.<ns>`, or its temporary) was written
/// by a process of this pid namespace that is gone (killed before it could
/// remove it). Files of other namespaces are judged by age alone; a pid
/// reused since keeps the file until it is old.
fn writer_gone(name: &CStr) -> bool {
    let bytes = name.to_bytes();
    let bytes = bytes.strip_prefix(b".").unwrap_or(bytes);
    let Some(rest) = bytes.strip_prefix(b"p") else {
        return false;
    };
    let mut parts = rest.splitn(2, |&b| b == b'.');
    let (Some(pid), Some(ns)) = (parts.next().and_then(number), parts.next().and_then(number)) else {
        return false;
    };
    let ours = PID_NAMESPACE.load(Relaxed);
    ours != 0 && ns == ours && pid > 0 && pid <= i32::MAX as u64 && !sys::task_exists(pid as i32)
}

/// A decimal number of at most 19 digits.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, &d| n * 10 + (d - b'0') as u64))
}

/// `fork` returned in the child: its sightings are its parent's (and
/// its file name, with its own pid, is another).
pub fn in_forked_child() {
    FORKED.store(true, Relaxed);
    PUBLISHED.store(false, Relaxed);
}

/// The process ends, or is about to sandbox itself: its file goes (else
/// others remove it once they see its writer gone).
pub fn withdraw() {
    if PUBLISHED.swap(false, Relaxed) {
        if let Ok(dir) = TrustDomainDir::open(false) {
            let mut buf = [0u8; 48];
            dir.remove(names(&mut buf).0);
        }
    }
}

impl Sightings {
    fn availability(&self) -> Availability {
        match self.availability {
            0 => Availability::Untried,
            1 => Availability::Usable,
            _ => Availability::Unusable,
        }
    }

    /// A round begins: the directory, open for the round (`None`: no
    /// sightings this round, every piece has its probation), and what
    /// others published, read again if it changed.
    pub fn begin(&mut self) -> Option<TrustDomainDir> {
        self.sighted_count = 0;
        if self.availability() == Availability::Unusable {
            return None;
        }
        if FORKED.swap(false, Relaxed) {
            self.forget_own();
        }
        // Asked each round: a program may make itself undumpable (or
        // change its IDs) at any moment; what it published goes then, and
        // it neither publishes nor judges on sight any more (its copies
        // would be sighted by no one).
        if !may_share() {
            withdraw();
            self.forget_own();
            return None;
        }
        let dir = match TrustDomainDir::open(true) {
            Ok(dir) => dir,
            Err(e) => {
                if failed_for_good(e) {
                    self.availability = 2;
                }
                return None;
            }
        };
        if self.availability() == Availability::Untried {
            if crate::os::page_size() > WHOLE_PAGE_MOST {
                self.availability = 2;
                return None;
            }
            self.availability = 1;
            self.zero_hash = page_hash(&[0u8; 2 * STRETCH]);
            let namespace = sys::stat_at(libc::AT_FDCWD, c"/proc/self/ns/pid", 0).map_or(0, |st| st.ino);
            PID_NAMESPACE.store(namespace, Relaxed);
        }
        let stamp = dir.stamp();
        if stamp.is_some() && stamp != self.peers_stamp {
            self.peers_stamp = stamp;
            self.read_peers(&dir);
        }
        // Every round (a resting piece is given back on a sighting only
        // once it has rested long enough: see `round`).
        self.find_sighted();
        Some(dir)
    }

    fn forget_own(&mut self) {
        if self.own_count > 0 {
            self.own.fill([0, 0]);
            self.unpublished = true;
        }
        self.own_count = 0;
    }

    /// Loads every other process's sightings.
    fn read_peers(&mut self, dir: &TrustDomainDir) {
        if self.peer_count > 0 {
            self.peers.fill(0);
        }
        self.peer_count = 0;
        let mut buf = [0u8; 48];
        let own_name = names(&mut buf).0;
        let peers = &mut self.peers;
        let count = &mut self.peer_count;
        let mut valid = false;
        dir.for_each_file(
            own_name,
            &mut self.entries,
            &mut self.chunk,
            SIGHTINGS_MAX_AGE_S,
            writer_gone,
            |offset, bytes| {
            let mut words = bytes.chunks_exact(8).map(|w| {
                let mut b = [0u8; 8];
                b.copy_from_slice(w);
                u64::from_le_bytes(b)
            });
            if offset == 0 {
                valid = words.next() == Some(MAGIC);
                // The level the writer chose by.
                let _ = words.next();
            }
            if !valid {
                return true;
            }
            for hash in words {
                if *count >= PEER_SLOTS / 2 {
                    // Full: what was read is what counts.
                    return false;
                }
                if hash != 0 && insert_peer(peers, hash) {
                    *count += 1;
                }
            }
            true
        },
        );
    }

    /// The resting pieces one of whose sightings others hold now.
    fn find_sighted(&mut self) {
        self.sighted_count = 0;
        if self.peer_count == 0 {
            return;
        }
        for &[hash, piece] in self.own.iter() {
            if hash == 0 || !has_peer(&self.peers, hash) {
                continue;
            }
            // A sorted set of pieces (a piece has many sightings).
            let piece = piece as usize;
            let n = self.sighted_count;
            if let Err(at) = self.sighted[..n].binary_search(&piece) {
                if n == SIGHTED_MOST {
                    return;
                }
                self.sighted.copy_within(at..n, at + 1);
                self.sighted[at] = piece;
                self.sighted_count = n + 1;
            }
        }
    }

    /// Whether a sighting of the piece starting at `start` is held by
    /// another process now.
    pub fn sighted(&self, start: usize) -> bool {
        self.sighted[..self.sighted_count].binary_search(&start).is_ok()
    }

    /// Reads and hashes the present pages of `piece`: what it shows, or
    /// `None` when it could not be read whole (unmapped or changed under
    /// the read: no verdict this time). Of each page, two stretches of
    /// [`STRETCH`] bytes are read and hashed (at its start and its middle):
    /// pages alike have them alike, and pages that differ only elsewhere
    /// cost ksmd a probation, nothing more.
    pub fn sight(
        &mut self,
        memory: &OwnMemory,
        pagemap: &Pagemap,
        entries: &mut [u64],
        piece: Range,
    ) -> Option<Sight> {
        let page = crate::os::page_size();
        let pages = pagemap.entries(piece.start, piece.end, entries).ok()?;
        if pages != piece.len() / page || pages > PIECE_PAGES_MOST {
            return None;
        }
        let mut sight = Sight {
            pages: pages as u32,
            ..Sight::default()
        };
        let mut present = 0;
        for (i, &entry) in entries[..pages].iter().enumerate() {
            if entry_present(entry) {
                let addr = piece.start + i * page;
                self.addrs[2 * present] = addr;
                self.addrs[2 * present + 1] = addr + page / 2;
                present += 1;
            }
        }
        if present == 0 {
            return Some(sight);
        }
        self.read_stretches(memory, present, page)?;
        let mut hashed = 0;
        let mut local = 0;

        for p in 0..present {
            let bytes = &self.run[p * 2 * STRETCH..(p + 1) * 2 * STRETCH];
            let hash = page_hash(bytes);
            sight.present += 1;
            if hash == self.zero_hash && bytes.iter().all(|&b| b == 0) {
                sight.zeros += 1;
                continue;
            }
            self.piece[hashed] = hash;
            hashed += 1;
            if !selected(hash, self.level) {
                continue;
            }
            sight.sampled += 1;
            let within = self.local[..local].contains(&hash);
            if !within && local < LOCAL_MOST {
                self.local[local] = hash;
                local += 1;
            }
            let elsewhere = has_peer(&self.peers, hash);
            let in_other_piece = self.note_own(hash, piece.start);
            if within || elsewhere || in_other_piece {
                sight.hits += 1;
            }
        }
        // Pages that repeat another page of the piece, counted exactly (a
        // few patterns written over and over: sampling could miss them).
        let all = &mut self.piece[..hashed];
        all.sort_unstable();
        sight.repeats = all.windows(2).filter(|w| w[0] == w[1]).count() as u32;
        Some(sight)
    }

    /// The two stretches of each of the first `present` pages in
    /// `addrs`, one after another into `run`: one `process_vm_readv`, or
    /// where that is refused, each whole page through `memory`.
    fn read_stretches(&mut self, memory: &OwnMemory, present: usize, page: usize) -> Option<()> {
        let want = present * 2 * STRETCH;
        if !self.gather_refused {
            match crate::os::own_memory::gather(
                &self.addrs[..2 * present],
                STRETCH,
                &mut self.run[..want],
                &mut self.iovecs,
            ) {
                Ok(n) if n == want => return Some(()),
                Ok(_) => return None,
                Err(libc::ENOSYS) | Err(libc::EPERM) => self.gather_refused = true,
                Err(_) => return None,
            }
        }
        for p in 0..present {
            let addr = self.addrs[2 * p];
            if !memory.read(addr, &mut self.whole[..page]).ok()? {
                return None;
            }
            let at = p * 2 * STRETCH;
            self.run[at..at + STRETCH].copy_from_slice(&self.whole[..STRETCH]);
            self.run[at + STRETCH..at + 2 * STRETCH]
                .copy_from_slice(&self.whole[page / 2..page / 2 + STRETCH]);
        }
        Some(())
    }

    /// Records an own sighting; returns whether another piece holds it.
    fn note_own(&mut self, hash: u64, piece: usize) -> bool {
        if self.own_count >= OWN_SLOTS / 2 {
            // Full: choose fewer from here on (a subset of what was chosen),
            // starting over.
            if self.level >= MOST_SELECT_LEVEL {
                return false;
            }
            self.level += 1;
            self.forget_own();
            if !selected(hash, self.level) {
                return false;
            }
        }
        let mut slot = (hash >> 16) as usize & (OWN_SLOTS - 1);
        let mut elsewhere = false;
        loop {
            let [h, p] = self.own[slot];
            if h == 0 {
                self.own[slot] = [hash, piece as u64];
                self.own_count += 1;
                self.unpublished = true;
                return elsewhere;
            }
            if h == hash {
                if p == piece as u64 {
                    return elsewhere;
                }
                elsewhere = true;
            }
            slot = (slot + 1) & (OWN_SLOTS - 1);
        }
    }

    /// The round ends: what was newly seen is published (and a file not
    /// written for a while is written again, so others keep believing it).
    pub fn end(&mut self, dir: Option<TrustDomainDir>) {
        self.sighted_count = 0;
        let Some(dir) = dir else {
            return;
        };
        let now = sys::realtime_s();
        let stale = now.saturating_sub(self.published_s) >= SIGHTINGS_REFRESH_S;
        let refresh = stale && PUBLISHED.load(Relaxed);
        if !(self.unpublished || refresh) {
            return;
        }
        if self.own_count == 0 && !PUBLISHED.load(Relaxed) {
            return;
        }
        let mut buf = [0u8; 48];
        let (name, temporary) = names(&mut buf);
        let own = &self.own;
        let level = self.level;
        let chunk = &mut self.chunk;
        let written = dir.publish(name, temporary, |fd| {
            chunk[..8].copy_from_slice(&MAGIC.to_le_bytes());
            chunk[8..16].copy_from_slice(&(level as u64).to_le_bytes());
            let mut used = 16;
            for &[hash, _] in own.iter() {
                if hash == 0 {
                    continue;
                }
                if used == chunk.len() {
                    sys::write_all(fd, &chunk[..used])?;
                    used = 0;
                }
                chunk[used..used + 8].copy_from_slice(&hash.to_le_bytes());
                used += 8;
            }
            sys::write_all(fd, &chunk[..used])
        });
        if written.is_ok() {
            PUBLISHED.store(true, Relaxed);
            self.unpublished = false;
            self.published_s = now;
        }
    }
}

/// Whether this process may share sightings with its trust domain: only
/// where its members could read its memory anyway
/// (`os::trust_domain::members_may_read_this_memory`).
fn may_share() -> bool {
    trust_domain::members_may_read_this_memory()
}

fn insert_peer(peers: &mut [u64; PEER_SLOTS], hash: u64) -> bool {
    let mut slot = (hash >> 16) as usize & (PEER_SLOTS - 1);
    loop {
        match peers[slot] {
            0 => {
                peers[slot] = hash;
                return true;
            }
            h if h == hash => return false,
            _ => slot = (slot + 1) & (PEER_SLOTS - 1),
        }
    }
}

fn has_peer(peers: &[u64; PEER_SLOTS], hash: u64) -> bool {
    let mut slot = (hash >> 16) as usize & (PEER_SLOTS - 1);
    loop {
        match peers[slot] {
            0 => return false,
            h if h == hash => return true,
            _ => slot = (slot + 1) & (PEER_SLOTS - 1),
        }
    }
}
