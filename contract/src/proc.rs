//! Pure parsers of the kernel's `/proc` text: `ksm_stat`, `smaps_rollup`
//! and the numbers in them.
//!
//! Each takes the text a caller read (the whole file, or one line) and
//! returns plain values; nothing here opens a file, allocates or panics.

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
    fn numbers() {
        assert_eq!(parse_dec(b" 42 "), Some(42));
        assert_eq!(parse_dec(b"4x"), None);
        assert_eq!(parse_dec(b"99999999999999999999999"), None);
        assert_eq!(parse_signed_dec(b"-12"), Some(-12));
        assert_eq!(parse_kb(b"     132 kB"), Some(132));
        assert_eq!(parse_kb(b"7"), Some(7));
    }
}
