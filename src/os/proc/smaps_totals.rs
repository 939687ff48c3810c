//! The exit report's totals over `/proc/thread-self/smaps`: KSM by region
//! class, anonymous memory and how much of it is marked mergeable.

use super::{read_lines, MapsLine, RegionClass, SHARED_LINES};
use ksmauto_contract::smaps::VmFlags;

/// Totals over `/proc/self/smaps`, fed one line at a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmapsTotals {
    /// `KSM:` kB per [`RegionClass`] (index = class as usize).
    pub ksm_kb: [u64; 4],
    /// `Anonymous:` kB in private mappings.
    pub anon_kb: u64,
    /// The part of `anon_kb` in mappings whose `VmFlags` carry `mg`.
    pub mergeable_anon_kb: u64,
    /// Whether the kernel printed any `KSM:` line (6.x kernels do).
    pub has_ksm_field: bool,
    current: Option<(RegionClass, bool)>,
    current_anon_kb: u64,
}

impl SmapsTotals {
    pub fn ksm_kb_of(&self, class: RegionClass) -> u64 {
        self.ksm_kb[class.index()]
    }

    pub fn feed_line(&mut self, line: &[u8]) {
        if let Some(vma) = MapsLine::parse(line) {
            self.current = Some((vma.class(), vma.is_private()));
            self.current_anon_kb = 0;
            return;
        }
        let Some((class, private)) = self.current else {
            return;
        };
        if let Some(v) = line.strip_prefix(b"KSM:") {
            self.has_ksm_field = true;
            self.ksm_kb[class.index()] += parse_kb(v);
        } else if let Some(v) = line.strip_prefix(b"Anonymous:") {
            if private {
                self.current_anon_kb = parse_kb(v);
                self.anon_kb += self.current_anon_kb;
            }
        } else if let Some(flags) = VmFlags::of_line(line) {
            if private && flags.mergeable() {
                self.mergeable_anon_kb += self.current_anon_kb;
            }
        }
    }

    pub fn read_self() -> Option<SmapsTotals> {
        let mut totals = SmapsTotals::default();
        read_lines(b"/proc/thread-self/smaps\0", &SHARED_LINES, |line| {
            totals.feed_line(line)
        })
        .ok()?;
        Some(totals)
    }
}

fn parse_kb(v: &[u8]) -> u64 {
    ksmauto_contract::proc::parse_kb(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_totals_sum_ksm_per_class_and_mergeable_anonymous_memory() {
        let text: &[u8] = b"\
55d0c2a4e000-55d0c2a6f000 rw-p 00000000 00:00 0   [heap]
Anonymous:            100 kB
KSM:                   40 kB
VmFlags: rd wr mr mw me ac mg
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Anonymous:             12 kB
KSM:                   12 kB
VmFlags: rd wr mr mw me ac
7f0000200000-7f0000300000 rw-s 00000000 00:01 77  /dev/zero (deleted)
Anonymous:              0 kB
KSM:                    0 kB
VmFlags: rd wr sh mr mw me ms mg
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0   [stack]
Anonymous:              8 kB
KSM:                    4 kB
VmFlags: rd wr mr mw me gd ac mg
";
        let mut t = SmapsTotals::default();
        for line in text.split(|&b| b == b'\n') {
            t.feed_line(line);
        }
        assert!(t.has_ksm_field);
        assert_eq!(t.ksm_kb_of(RegionClass::Heap), 40);
        assert_eq!(t.ksm_kb_of(RegionClass::Anon), 12);
        assert_eq!(t.ksm_kb_of(RegionClass::Stack), 4);
        assert_eq!(t.ksm_kb_of(RegionClass::Other), 0);
        assert_eq!(t.anon_kb, 120);
        assert_eq!(t.mergeable_anon_kb, 108);
    }
}
