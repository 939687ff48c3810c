//! Whether a `binfmt_misc` rule claims a file the kernel is about to run.
//! The kernel tries `binfmt_misc` before every other format, for the
//! program and for each `#!` interpreter (not for an ELF program's own
//! interpreter): the first enabled rule that matches — by magic bytes at
//! an offset of the file's first 256 bytes (under a mask), or by the
//! extension of the name `exec` was given (after its last `.`) — runs its
//! interpreter instead, whatever the file is (a native ELF program, a
//! `#!` script, a file that would fail with `ENOEXEC`).
//!
//! Reads the rules of the instance mounted at `/proc/sys/fs/binfmt_misc`
//! (only if `binfmt_misc` is mounted there: the path is opened `O_PATH`,
//! which triggers no automount). What it cannot see: an instance not
//! mounted there — one of a user namespace (Linux 6.7+) that the program
//! runs in but that is mounted elsewhere or nowhere, or the host's instance
//! while only an automount point is there; those rules count as absent.
//!
//! Reports facts ("could not tell" for anything unreadable or a rule file
//! it does not parse). Never allocates, never touches `errno`; a try-locked
//! static buffer (busy: "could not tell").

use super::exec_target::Fact;
use super::sys;
use crate::scratch::Scratch;

const BINFMTFS_MAGIC: u64 = 0x4249_4e4d;
/// The part of a file the kernel matches magic bytes in (BINPRM_BUF_SIZE).
pub const HEAD_BYTES: usize = 256;
/// The longest name extension compared; a longer one matches any
/// extension rule (could not tell).
pub const EXTENSION_BYTES: usize = 128;
const ENTRIES_BYTES: usize = 2048;
/// A rule file: status, interpreter (the kernel takes up to a 1920-byte
/// registration), flags, offset, magic and mask in hex.
const RULE_BYTES: usize = 4096;

static BUFFER: Scratch<{ ENTRIES_BYTES + RULE_BYTES }> = Scratch::new();

/// In a forked child: a buffer another thread held at fork time is free.
pub fn release_after_fork() {
    BUFFER.release_after_fork();
}

/// The extension of a name given to `exec`, as the kernel takes it (what
/// follows its last `.`, `strrchr` over the whole path).
#[derive(Clone, Copy)]
pub struct Extension {
    bytes: [u8; EXTENSION_BYTES],
    len: usize,
    /// The name has a `.`.
    some: bool,
    /// Longer than kept here.
    long: bool,
}

impl Extension {
    pub fn of(name: &[u8]) -> Extension {
        let mut ext = Extension {
            bytes: [0; EXTENSION_BYTES],
            len: 0,
            some: false,
            long: false,
        };
        if let Some(dot) = name.iter().rposition(|&b| b == b'.') {
            let after = &name[dot + 1..];
            ext.some = true;
            ext.long = after.len() > EXTENSION_BYTES;
            ext.len = after.len().min(EXTENSION_BYTES);
            ext.bytes[..ext.len].copy_from_slice(&after[..ext.len]);
        }
        ext
    }

    /// Whether a rule for extension `rule` matches (`None`: could not tell).
    fn matches(&self, rule: &[u8]) -> Option<bool> {
        if !self.some {
            return Some(false);
        }
        if self.long {
            return None;
        }
        Some(&self.bytes[..self.len] == rule)
    }
}

/// Whether an enabled rule of the visible instance claims a file whose
/// first 256 bytes are `head` (zeros past its end) and that `exec` was
/// given under a name with extension `ext`.
pub fn claims(head: &[u8; HEAD_BYTES], ext: &Extension) -> Fact {
    let dir = match visible_instance() {
        Ok(Some(dir)) => dir,
        Ok(None) => return Fact::No,
        Err(()) => return Fact::Unknown,
    };
    let answer = rules_claim(dir, head, ext);
    sys::close(dir);
    answer
}

/// The instance mounted at `/proc/sys/fs/binfmt_misc`, open as a
/// directory, if it is there and enabled.
fn visible_instance() -> Result<Option<i32>, ()> {
    let path = c"/proc/sys/fs/binfmt_misc";
    let place = match sys::open_at(libc::AT_FDCWD, path, libc::O_PATH, 0) {
        Ok(fd) => fd,
        Err(libc::ENOENT) => return Ok(None),
        Err(_) => return Err(()),
    };
    let mounted = sys::filesystem_type(place).map(|t| t == BINFMTFS_MAGIC);
    sys::close(place);
    match mounted {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(_) => return Err(()),
    }
    let dir = sys::open_at(libc::AT_FDCWD, path, libc::O_RDONLY | libc::O_DIRECTORY, 0)
        .map_err(|_| ())?;
    let mut status = [0u8; 16];
    match sys::read_file_at(dir, c"status", &mut status) {
        Ok(n) if status[..n] == *b"enabled\n" => Ok(Some(dir)),
        Ok(n) if status[..n] == *b"disabled\n" => {
            sys::close(dir);
            Ok(None)
        }
        _ => {
            sys::close(dir);
            Err(())
        }
    }
}

/// Whether a rule in the instance's directory `dir` claims the file.
fn rules_claim(dir: i32, head: &[u8; HEAD_BYTES], ext: &Extension) -> Fact {
    let Some(mut held) = BUFFER.try_take() else {
        return Fact::Unknown;
    };
    let (entries, rule) = held.bytes().split_at_mut(ENTRIES_BYTES);
    loop {
        let n = match sys::directory_entries(dir, entries) {
            Ok(0) => return Fact::No,
            Ok(n) => n,
            Err(_) => return Fact::Unknown,
        };
        let mut at = 0;
        while at + 19 < n {
            // struct linux_dirent64: ino, off, reclen (u16), type, name.
            let reclen = u16::from_le_bytes([entries[at + 16], entries[at + 17]]) as usize;
            if reclen < 20 || at + reclen > n {
                return Fact::Unknown;
            }
            let Ok(name) = sys::c_path(&entries[at + 19..at + reclen]) else {
                return Fact::Unknown;
            };
            if !matches!(name.to_bytes(), b"." | b".." | b"register" | b"status") {
                let answer = match sys::read_file_at(dir, name, rule) {
                    Ok(len) if len < rule.len() => {
                        Rule::parse(&rule[..len]).map_or(Fact::Unknown, |r| r.claims(head, ext))
                    }
                    _ => Fact::Unknown,
                };
                if answer != Fact::No {
                    return answer;
                }
            }
            at += reclen;
        }
    }
}

/// One rule, as its file shows it (`bm_entry_read`).
struct Rule<'a> {
    enabled: bool,
    kind: Kind<'a>,
}

enum Kind<'a> {
    Extension(&'a [u8]),
    /// Offset, magic and mask, in hex.
    Magic(usize, &'a [u8], Option<&'a [u8]>),
}

impl<'a> Rule<'a> {
    /// `enabled|disabled`, `interpreter …`, `flags: …`, then `extension
    /// .EXT` or `offset N`, `magic HEX` and maybe `mask HEX`, each on a line
    /// of its own: a name with a newline in it would show as more lines,
    /// and the file is then "could not tell".
    fn parse(text: &'a [u8]) -> Option<Rule<'a>> {
        let text = text.strip_suffix(b"\n")?;
        let mut lines = text.split(|&b| b == b'\n');
        let enabled = match lines.next()? {
            b"enabled" => true,
            b"disabled" => false,
            _ => return None,
        };
        lines.next()?.strip_prefix(b"interpreter ")?;
        let flags = lines.next()?.strip_prefix(b"flags: ")?;
        if !flags.iter().all(u8::is_ascii_uppercase) {
            return None;
        }
        let fourth = lines.next()?;
        let kind = if let Some(ext) = fourth.strip_prefix(b"extension .") {
            Kind::Extension(ext)
        } else {
            let offset = decimal(fourth.strip_prefix(b"offset ")?)?;
            let magic = lines.next()?.strip_prefix(b"magic ")?;
            let mask = match lines.next() {
                Some(line) => Some(line.strip_prefix(b"mask ")?),
                None => None,
            };
            Kind::Magic(offset, magic, mask)
        };
        if lines.next().is_some() {
            return None;
        }
        Some(Rule { enabled, kind })
    }

    /// Whether this rule claims the file (see [`claims`]).
    fn claims(&self, head: &[u8; HEAD_BYTES], ext: &Extension) -> Fact {
        if !self.enabled {
            return Fact::No;
        }
        let matched = match self.kind {
            Kind::Extension(rule) => ext.matches(rule),
            Kind::Magic(offset, magic, mask) => magic_matches(head, offset, magic, mask),
        };
        match matched {
            Some(true) => Fact::Yes,
            Some(false) => Fact::No,
            None => Fact::Unknown,
        }
    }
}

fn decimal(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 4 {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + (d - b'0') as usize)
    })
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    Some(digit(pair[0])? << 4 | digit(pair[1])?)
}

/// `check_file`'s comparison: each byte of the file from `offset` against
/// the magic under the mask (all ones without one); `None`: could not tell.
fn magic_matches(
    head: &[u8; HEAD_BYTES],
    offset: usize,
    magic: &[u8],
    mask: Option<&[u8]>,
) -> Option<bool> {
    let size = magic.len() / 2;
    if !magic.len().is_multiple_of(2) || size == 0 || offset + size > HEAD_BYTES {
        return None;
    }
    if mask.is_some_and(|m| m.len() != magic.len()) {
        return None;
    }
    for j in 0..size {
        let want = hex_byte(&magic[2 * j..2 * j + 2])?;
        let bits = match mask {
            Some(m) => hex_byte(&m[2 * j..2 * j + 2])?,
            None => 0xff,
        };
        if (head[offset + j] ^ want) & bits != 0 {
            return Some(false);
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> [u8; HEAD_BYTES] {
        let mut h = [0u8; HEAD_BYTES];
        h[..bytes.len()].copy_from_slice(bytes);
        h
    }

    #[test]
    fn rule_files_are_read_as_the_kernel_writes_them() {
        let ext = Rule::parse(b"enabled\ninterpreter /static\nflags: \nextension .kr18\n").unwrap();
        assert!(ext.enabled);
        assert!(matches!(ext.kind, Kind::Extension(b"kr18")));
        let magic = Rule::parse(
            b"disabled\ninterpreter /q\nflags: POCF\noffset 0\nmagic 7f454c46\nmask ffffff00\n",
        )
        .unwrap();
        assert!(!magic.enabled);
        assert!(matches!(
            magic.kind,
            Kind::Magic(0, b"7f454c46", Some(b"ffffff00"))
        ));
        // A newline inside a name makes one more line: not understood.
        assert!(Rule::parse(b"enabled\ninterpreter /a\nb\nflags: \nextension .x\n").is_none());
        assert!(Rule::parse(b"enabled\ninterpreter /a\nflags: \nextension .x\ny\n").is_none());
        assert!(Rule::parse(b"enabled\ninterpreter /a\nflags: \n").is_none());
    }

    #[test]
    fn rules_match_by_magic_under_a_mask_or_by_extension() {
        let elf = head(b"\x7fELF\x02\x01\x01");
        let rule = |text: &[u8], h: &[u8; HEAD_BYTES], name: &[u8]| {
            Rule::parse(text).unwrap().claims(h, &Extension::of(name))
        };
        let magic =
            b"enabled\ninterpreter /q\nflags: \noffset 0\nmagic 7f454c4603\nmask ffffffff00\n";
        assert_eq!(rule(magic, &elf, b"/bin/x"), Fact::Yes);
        let magic = b"enabled\ninterpreter /q\nflags: \noffset 1\nmagic 454c4603\n";
        assert_eq!(rule(magic, &elf, b"/bin/x"), Fact::No);
        let ext = b"enabled\ninterpreter /q\nflags: \nextension .kr18\n";
        assert_eq!(rule(ext, &elf, b"/tmp/a.kr18"), Fact::Yes);
        assert_eq!(rule(ext, &elf, b"/tmp/a.kr18.sh"), Fact::No);
        // strrchr over the whole path: a dot in a directory name.
        assert_eq!(rule(ext, &elf, b"/tmp/x.kr18/prog"), Fact::No);
        assert_eq!(rule(ext, &elf, b"/tmp/prog"), Fact::No);
        let disabled = b"disabled\ninterpreter /q\nflags: \nextension .kr18\n";
        assert_eq!(rule(disabled, &elf, b"a.kr18"), Fact::No);
    }
}
