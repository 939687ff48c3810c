//! One line of `/proc/PID/maps` (also the header of each smaps entry),
//! and how reports class the memory it names.

use super::parse_dec;
use ksmauto_contract::proc::trim;

/// One line of `/proc/<pid>/maps` (also the header line of each `smaps` entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapsLine<'a> {
    pub start: usize,
    pub end: usize,
    pub perms: [u8; 4],
    pub offset: u64,
    pub inode: u64,
    pub name: &'a [u8],
}

impl<'a> MapsLine<'a> {
    /// `7f12-7f34 rw-p 00000000 00:00 0    [heap]`; `None` for any other line.
    pub fn parse(line: &'a [u8]) -> Option<MapsLine<'a>> {
        let mut fields = line.splitn(6, |&b| b == b' ');
        let range = fields.next()?;
        let dash = range.iter().position(|&b| b == b'-')?;
        let start = parse_hex(&range[..dash])? as usize;
        let end = parse_hex(&range[dash + 1..])? as usize;
        let perms_field = fields.next()?;
        if perms_field.len() != 4 {
            return None;
        }
        let perms = [
            perms_field[0],
            perms_field[1],
            perms_field[2],
            perms_field[3],
        ];
        let offset = parse_hex(fields.next()?)?;
        let _dev = fields.next()?;
        let inode = parse_dec(fields.next()?)?;
        let name = trim(fields.next().unwrap_or(b""));
        Some(MapsLine {
            start,
            end,
            perms,
            offset,
            inode,
            name,
        })
    }

    pub fn is_private(&self) -> bool {
        self.perms[3] == b'p'
    }

    pub fn is_executable(&self) -> bool {
        self.perms[2] == b'x'
    }

    pub fn class(&self) -> RegionClass {
        RegionClass::of(self.inode, self.name)
    }
}

/// How reports group memory. Anonymous mappings glibc or the program made with
/// `mmap` carry no name (or an `[anon:…]` name set with `PR_SET_VMA`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionClass {
    Heap,
    Anon,
    Stack,
    Other,
}

impl RegionClass {
    pub const ALL: [RegionClass; 4] = [
        RegionClass::Heap,
        RegionClass::Anon,
        RegionClass::Stack,
        RegionClass::Other,
    ];

    pub fn of(inode: u64, name: &[u8]) -> RegionClass {
        if inode != 0 {
            return RegionClass::Other;
        }
        match name {
            b"[heap]" => RegionClass::Heap,
            b"" => RegionClass::Anon,
            n if n.starts_with(b"[anon:") || n.starts_with(b"[anon_shmem:") => RegionClass::Anon,
            n if n.starts_with(b"[stack") => RegionClass::Stack,
            _ => RegionClass::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RegionClass::Heap => "heap",
            RegionClass::Anon => "anon",
            RegionClass::Stack => "stack",
            RegionClass::Other => "other",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

pub fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_line_with_and_without_name() {
        let l = MapsLine::parse(
            b"55d0c2a4e000-55d0c2a6f000 rw-p 00000000 00:00 0                          [heap]",
        )
        .unwrap();
        assert_eq!((l.start, l.end), (0x55d0c2a4e000, 0x55d0c2a6f000));
        assert_eq!(l.class(), RegionClass::Heap);
        assert!(l.is_private() && !l.is_executable());
        let l = MapsLine::parse(b"7f00000000-7f00001000 rwxp 00000000 00:00 0 ").unwrap();
        assert_eq!(l.class(), RegionClass::Anon);
        assert!(l.is_executable());
        let l =
            MapsLine::parse(b"7f00000000-7f00001000 r--p 00001000 fe:01 1234  /usr/lib/libc.so.6")
                .unwrap();
        assert_eq!(l.class(), RegionClass::Other);
        assert_eq!(l.offset, 0x1000);
        assert_eq!(MapsLine::parse(b"Rss:                 132 kB"), None);
        assert_eq!(MapsLine::parse(b"VmFlags: rd wr mr mw me ac sd"), None);
    }

    #[test]
    fn region_classes() {
        assert_eq!(RegionClass::of(0, b"[stack]"), RegionClass::Stack);
        assert_eq!(RegionClass::of(0, b"[anon:jemalloc]"), RegionClass::Anon);
        assert_eq!(RegionClass::of(0, b"[vdso]"), RegionClass::Other);
        assert_eq!(RegionClass::of(99, b""), RegionClass::Other);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_dec(b" 42 "), Some(42));
        assert_eq!(parse_dec(b"4x"), None);
        assert_eq!(parse_dec(b"99999999999999999999999"), None);
        assert_eq!(parse_hex(b"7fFF"), Some(0x7fff));
        assert_eq!(parse_hex(b""), None);
    }
}
