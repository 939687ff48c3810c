//! Pure parsers of the kernel's `/proc` text: `ksm_stat`, `smaps_rollup`,
//! `stat`, the lines of `status`, and the numbers in them.
//!
//! Each takes the text a caller read (the whole file, or one line) and
//! returns plain values; nothing here opens a file, allocates or panics.
//! The text is bytes, never assumed to be UTF-8: a process names itself
//! (`prctl(PR_SET_NAME)`) and the files it maps with any bytes but NUL, and
//! those names are in `stat`, `status`, `maps` and `smaps`.

/// Trims blanks around `s` (and a trailing newline).
pub fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\n'] = s {
        s = rest;
    }
    s
}

/// Parses an unsigned decimal number, ignoring surrounding blanks; `None`
/// for anything else, or a number beyond `u64`.
pub fn parse_dec(s: &[u8]) -> Option<u64> {
    let s = trim(s);
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    Some(v)
}

/// [`parse_dec`] with an optional leading `-`.
pub fn parse_signed_dec(s: &[u8]) -> Option<i64> {
    let s = trim(s);
    match s.first() {
        Some(b'-') => parse_dec(&s[1..]).map(|v| -(v as i64)),
        _ => parse_dec(s).map(|v| v as i64),
    }
}

/// The number of a `smaps`-style value, `   132 kB` (the unit is optional).
pub fn parse_kb(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    parse_dec(v.strip_suffix(b"kB").unwrap_or(v))
}

/// The blank-separated words of `s` (spaces, tabs, newlines).
pub fn words(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    s.split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
}

/// The value of the first `key:` line of `/proc/<pid>/status` text, blanks
/// trimmed (`status_value(text, b"Uid")` → `0\t0\t0\t0`); `None` without one.
pub fn status_value<'a>(text: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    text.split(|&b| b == b'\n').find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(b":")?;
        Some(trim(rest))
    })
}

/// `/proc/<pid>/stat` (or `/proc/<pid>/task/<tid>/stat`): one line of
/// fields, the second of which is the name in parentheses. The name is the
/// process's own choice — it may hold `)`, spaces, bytes that are not
/// UTF-8 — so the fields after it are counted from the last `)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat<'a> {
    pub pid: u64,
    /// Field 2 (`comm`), the bytes between the parentheses.
    pub comm: &'a [u8],
    /// Field 3 onwards.
    rest: &'a [u8],
}

impl<'a> Stat<'a> {
    /// `None` for text that is no stat line.
    pub fn parse(text: &'a [u8]) -> Option<Stat<'a>> {
        let open = text.iter().position(|&b| b == b'(')?;
        let close = text.iter().rposition(|&b| b == b')')?;
        if close < open {
            return None;
        }
        Some(Stat {
            pid: parse_dec(&text[..open])?,
            comm: &text[open + 1..close],
            rest: &text[close + 1..],
        })
    }

    /// Field `n` as proc(5) numbers them from 1 (3 is the state, 4 the
    /// parent, 22 the start time); `None` for 1 and 2 (see `pid`, `comm`)
    /// and past the end. Private: callers name the field they want.
    fn field(&self, n: usize) -> Option<&'a [u8]> {
        words(self.rest).nth(n.checked_sub(3)?)
    }

    /// Field `n` as an unsigned number.
    fn number(&self, n: usize) -> Option<u64> {
        parse_dec(self.field(n)?)
    }

    /// Field 3: `R`, `S`, `D`, `Z`, `X`, …
    pub fn state(&self) -> Option<u8> {
        match self.field(3)? {
            [s] => Some(*s),
            _ => None,
        }
    }

    /// A zombie (`Z`) or dead (`X`): it runs no more and has no memory
    /// (its parent has yet to reap it, or is reaping it now).
    pub fn has_ended(&self) -> bool {
        matches!(self.state(), Some(b'Z' | b'X'))
    }

    /// Field 4.
    pub fn ppid(&self) -> Option<u64> {
        self.number(4)
    }

    /// Field 5: the process group.
    pub fn pgrp(&self) -> Option<u64> {
        self.number(5)
    }

    /// Field 6: the session.
    pub fn session(&self) -> Option<u64> {
        self.number(6)
    }

    /// Field 7: the controlling terminal's device number (0 for none).
    pub fn tty_nr(&self) -> Option<u64> {
        self.number(7)
    }

    /// Field 9, the kernel's `PF_*` flags.
    pub fn flags(&self) -> Option<u64> {
        self.number(9)
    }

    /// A kernel thread (`PF_KTHREAD`): it has no user memory, and no
    /// process can make itself one (a name it can take).
    pub fn is_kernel_thread(&self) -> bool {
        const PF_KTHREAD: u64 = 0x0020_0000;
        self.flags().is_some_and(|f| f & PF_KTHREAD != 0)
    }

    /// Field 14: clock ticks in user mode.
    pub fn utime(&self) -> Option<u64> {
        self.number(14)
    }

    /// Field 15: clock ticks in kernel mode.
    pub fn stime(&self) -> Option<u64> {
        self.number(15)
    }

    /// [`utime`](Self::utime) plus [`stime`](Self::stime).
    pub fn cpu_ticks(&self) -> Option<u64> {
        self.utime()?.checked_add(self.stime()?)
    }

    /// Field 20: the process's threads (a main thread that ended while
    /// others run is a zombie and still counted).
    pub fn num_threads(&self) -> Option<u64> {
        self.number(20)
    }

    /// Field 22 (`starttime`): clock ticks after boot. With the pid it
    /// names one process (pids are reused, a pid and its start time are
    /// not).
    pub fn start_time(&self) -> Option<u64> {
        self.number(22)
    }

    /// Fields 26, 28 and 48: where the program's code, stack and arguments
    /// start. New with every exec; zero where the kernel hides them (a
    /// process this reader may not trace) or has not set them up yet.
    pub fn image(&self) -> (u64, u64, u64) {
        let at = |n| self.number(n).unwrap_or(0);
        (at(26), at(28), at(48))
    }
}

/// `/proc/<pid>/ksm_stat` (Linux 6.1+; the later fields are `None` on kernels
/// that lack them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KsmStat {
    pub rmap_items: u64,
    pub zero_pages: Option<u64>,
    pub merging_pages: Option<u64>,
    pub process_profit: Option<i64>,
    pub merge_any: Option<bool>,
    pub mergeable: Option<bool>,
}

impl KsmStat {
    /// Parses the whole file; unknown lines are ignored, so newer kernels'
    /// additions pass through.
    pub fn parse(text: &[u8]) -> KsmStat {
        let mut stat = KsmStat::default();
        for line in text.split(|&b| b == b'\n') {
            let Some(sep) = line.iter().position(|&b| b == b' ' || b == b':') else {
                continue;
            };
            let (key, value) = (&line[..sep], trim(&line[sep + 1..]));
            let value = value.strip_prefix(b":").map(trim).unwrap_or(value);
            match key {
                b"ksm_rmap_items" => stat.rmap_items = parse_dec(value).unwrap_or(0),
                b"ksm_zero_pages" => stat.zero_pages = parse_dec(value),
                b"ksm_merging_pages" => stat.merging_pages = parse_dec(value),
                b"ksm_process_profit" => stat.process_profit = parse_signed_dec(value),
                b"ksm_merge_any" => stat.merge_any = Some(value == b"yes"),
                b"ksm_mergeable" => stat.mergeable = Some(value == b"yes"),
                _ => {}
            }
        }
        stat
    }

    /// Pages of the process KSM merged: `ksm_merging_pages` plus
    /// `ksm_zero_pages` (pages merged into the zero page).
    pub fn merged_pages(&self) -> u64 {
        self.merging_pages.unwrap_or(0) + self.zero_pages.unwrap_or(0)
    }
}

/// `/proc/<pid>/smaps_rollup`: the fields the tools compare processes by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmapsRollup {
    /// `Rss:` kB.
    pub rss_kb: Option<u64>,
    /// `Pss:` kB.
    pub pss_kb: Option<u64>,
}

impl SmapsRollup {
    /// Parses the whole file; the first line of each field counts.
    pub fn parse(text: &[u8]) -> SmapsRollup {
        let mut rollup = SmapsRollup::default();
        let mut seen_rss = false;
        let mut seen_pss = false;
        for line in text.split(|&b| b == b'\n') {
            if let Some(v) = line.strip_prefix(b"Rss:") {
                if !seen_rss {
                    seen_rss = true;
                    rollup.rss_kb = parse_kb(v);
                }
            } else if let Some(v) = line.strip_prefix(b"Pss:") {
                if !seen_pss {
                    seen_pss = true;
                    rollup.pss_kb = parse_kb(v);
                }
            }
        }
        rollup
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ksm_stat_parses_all_fields_of_a_6_x_kernel() {
        let text = b"ksm_rmap_items 12\nksm_zero_pages 2\nksm_merging_pages 3\nksm_process_profit -4096\nksm_merge_any: yes\nksm_mergeable: yes\n";
        let s = KsmStat::parse(text);
        assert_eq!(s.rmap_items, 12);
        assert_eq!(s.zero_pages, Some(2));
        assert_eq!(s.merging_pages, Some(3));
        assert_eq!(s.process_profit, Some(-4096));
        assert_eq!(s.merge_any, Some(true));
        assert_eq!(s.mergeable, Some(true));
        assert_eq!(s.merged_pages(), 5);
    }

    #[test]
    fn ksm_stat_of_an_old_kernel_leaves_missing_fields_empty() {
        let s = KsmStat::parse(b"ksm_rmap_items 7\n");
        assert_eq!(s.rmap_items, 7);
        assert_eq!(s.merging_pages, None);
        assert_eq!(s.merge_any, None);
        assert_eq!(s.merged_pages(), 0);
    }

    #[test]
    fn smaps_rollup_takes_rss_and_pss_and_nothing_that_merely_starts_alike() {
        let text = b"55d0c2a4e000-7ffd00021000 ---p 00000000 00:00 0  [rollup]\n\
Rss:               10240 kB\n\
Pss:                5120 kB\n\
Pss_Anon:           4096 kB\n\
Pss_File:           1024 kB\n";
        let r = SmapsRollup::parse(text);
        assert_eq!(r.rss_kb, Some(10240));
        assert_eq!(r.pss_kb, Some(5120));
        assert_eq!(SmapsRollup::parse(b"Rss: lots\n").rss_kb, None);
        assert_eq!(SmapsRollup::parse(b"").pss_kb, None);
    }

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis_of_any_name() {
        let line = b"4242 (\xff\xfe) x (y) 1\n2) S 17 4242 4242 0 -1 4194560 98 0 0 0 5 7 0 0 20 0 1 0 90176 5251072 627 18446744073709551615 93854778085376 93854778874781 140726939512224 0 0 0 0 3670016 1132560123 0 0 0 17 1 0 0 0 0 0 93854779108080 93854779156324 93855099928576 140726939515773 140726939515788 140726939515788 140726939516906 0\n";
        let s = Stat::parse(line).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, b"\xff\xfe) x (y) 1\n2");
        assert_eq!(s.state(), Some(b'S'));
        assert_eq!(s.ppid(), Some(17));
        assert_eq!(s.flags(), Some(4194560));
        assert!(!s.is_kernel_thread());
        let ksmd = b"42 (ksmd) S 2 0 0 0 -1 2097216 0 0 0 0 0 17 0 0 25 5 1 0 10";
        assert!(Stat::parse(ksmd).unwrap().is_kernel_thread());
        assert!(Stat::parse(b"7 (z) Z 1").unwrap().has_ended());
        assert!(Stat::parse(b"7 (x) X 1").unwrap().has_ended());
        assert_eq!(s.cpu_ticks(), Some(12));
        assert_eq!(s.start_time(), Some(90176));
        assert_eq!(
            s.image(),
            (93854778085376, 140726939512224, 140726939515773)
        );
        assert_eq!(s.field(2), None);
        assert_eq!(s.field(52), Some(&b"0"[..]));
        assert_eq!(s.field(53), None);
        // Cut short, as a reader that is refused some fields is not: the
        // fields there are read, the rest are None or zero.
        let short = Stat::parse(b"1 (init) S 0").unwrap();
        assert_eq!((short.ppid(), short.start_time()), (Some(0), None));
        assert_eq!(short.image(), (0, 0, 0));
        assert_eq!(Stat::parse(b"no stat"), None);
        assert_eq!(Stat::parse(b"1 )x( S"), None);
    }

    /// The fields of a stat line whose name is `comm`, as the kernel
    /// writes it (`pid (comm) S ppid pgrp session tty …`).
    fn stat_line_named(comm: &[u8], out: &mut [u8; 512]) -> usize {
        let tail = b") S 7 8 9 34816 -1 4194304 1 2 3 4 11 12 0 0 20 0 5 0 4321 0 0";
        let mut n = 0;
        for part in [&b"99 ("[..], comm, &tail[..]] {
            out[n..n + part.len()].copy_from_slice(part);
            n += part.len();
        }
        n
    }

    #[test]
    fn stat_fields_are_named_whatever_the_process_calls_itself() {
        let hostile: [&[u8]; 6] = [
            b"a) b",
            b")",
            b"x\ny) (",
            b"0123456789abcdef",
            b") S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 0 0 1 0 1",
            b"",
        ];
        for comm in hostile {
            let mut buf = [0u8; 512];
            let n = stat_line_named(comm, &mut buf);
            let s = Stat::parse(&buf[..n]).unwrap();
            assert_eq!(s.pid, 99);
            assert_eq!(s.comm, comm);
            assert_eq!(s.state(), Some(b'S'));
            assert!(!s.has_ended());
            assert_eq!(
                (s.ppid(), s.pgrp(), s.session()),
                (Some(7), Some(8), Some(9))
            );
            assert_eq!(s.tty_nr(), Some(34816));
            assert_eq!(
                (s.utime(), s.stime(), s.cpu_ticks()),
                (Some(11), Some(12), Some(23))
            );
            assert_eq!(s.num_threads(), Some(5));
            assert_eq!(s.start_time(), Some(4321));
        }
    }

    #[test]
    fn status_values_are_found_by_their_whole_key() {
        let text = b"Name:\t\xff\xfeworker\nUmask:\t0022\nUid:\t65534\t65534\t65534\t65534\nNSpid:\t812\t3\n";
        assert_eq!(
            status_value(text, b"Uid"),
            Some(&b"65534\t65534\t65534\t65534"[..])
        );
        assert_eq!(status_value(text, b"Name"), Some(&b"\xff\xfeworker"[..]));
        let mut ns = words(status_value(text, b"NSpid").unwrap()).map(parse_dec);
        assert_eq!(
            (ns.next(), ns.next(), ns.next()),
            (Some(Some(812)), Some(Some(3)), None)
        );
        assert_eq!(status_value(text, b"Ui"), None);
        assert_eq!(status_value(text, b"Gid"), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_dec(b" 42 "), Some(42));
        assert_eq!(parse_dec(b"4x"), None);
        assert_eq!(parse_dec(b"99999999999999999999999"), None);
        assert_eq!(parse_signed_dec(b"-12"), Some(-12));
        assert_eq!(parse_kb(b"     132 kB"), Some(132));
        assert_eq!(parse_kb(b"7"), Some(7));
    }
}
