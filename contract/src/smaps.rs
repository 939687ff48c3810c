//! Pure readers of `/proc/<pid>/smaps` lines that the library, the CLI and
//! the tests all ask the same question of: which flags a mapping carries.
//! Bytes in, plain answers out; nothing here allocates or panics.

use crate::proc::words;

/// The flags of one mapping: the value of its `VmFlags:` line, two-letter
/// mnemonics separated by blanks (`rd wr mr mw me ac mg`; see proc(5)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmFlags<'a>(&'a [u8]);

impl<'a> VmFlags<'a> {
    /// The flags of a `VmFlags:` line; `None` for any other line.
    pub fn of_line(line: &'a [u8]) -> Option<VmFlags<'a>> {
        line.strip_prefix(b"VmFlags:").map(VmFlags)
    }

    /// The flags in the text after `VmFlags:`.
    pub fn of_value(value: &'a [u8]) -> VmFlags<'a> {
        VmFlags(value)
    }

    /// Whether `flag` is one of them: a whole mnemonic, never part of one.
    pub fn has(&self, flag: &[u8; 2]) -> bool {
        words(self.0).any(|word| word == flag)
    }

    /// `mg` (`VM_MERGEABLE`): KSM may merge the mapping's pages, by
    /// `madvise(MADV_MERGEABLE)` or, on newer kernels, merge-any.
    pub fn mergeable(&self) -> bool {
        self.has(b"mg")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_whole_mnemonics_of_a_vm_flags_line_only() {
        let line = b"VmFlags: rd wr mr mw me ac mg \n";
        let flags = VmFlags::of_line(line).unwrap();
        assert!(flags.mergeable());
        assert!(flags.has(b"ac") && flags.has(b"rd"));
        assert!(!flags.has(b"sh"));
        // Not part of a longer word, nor across two words.
        assert!(!VmFlags::of_value(b" rdmg wr").mergeable());
        assert!(!VmFlags::of_value(b" m g").mergeable());
        assert!(!VmFlags::of_value(b" amg").mergeable());
        assert!(VmFlags::of_value(b"\tmg").mergeable());
        assert!(!VmFlags::of_value(b"").mergeable());
        // Another line, even one that names the flag, is no flags line.
        assert_eq!(VmFlags::of_line(b"Name: mg"), None);
        assert_eq!(VmFlags::of_line(b" VmFlags: mg"), None);
    }
}
