//! The ELF file header and program headers of a program, read as the
//! kernel's `binfmt_elf` reads them to run it: the library's exec guard
//! (`os/exec_target.rs`) and the CLI (`exe.rs`) ask the same questions of a
//! file, and must get the same answers.
//!
//! Bytes in, plain values out; each caller reads the file its own way (the
//! library with `pread` into small stack buffers, the CLI with `std::fs`).
//! Nothing here allocates or panics.
//!
//! The kernel's rules followed here (`load_elf_binary`, `load_elf_phdrs`):
//! * the header is read in the machine's own byte order, whatever EI_DATA
//!   declares — `elf_check_arch` tests `e_machine` alone (x86_64, arm64);
//! * EI_CLASS picks the layout (`Elf32_*` or `Elf64_*`), as the handler
//!   that accepts it does (the native one, or the compat one for i386);
//! * `e_phentsize` must be the size of its class's program header and the
//!   table 1 to 65,536 bytes, or `exec` fails with `ENOEXEC`;
//! * the first `PT_INTERP` names the program interpreter: 2 to `PATH_MAX`
//!   bytes, the last a NUL, or `ENOEXEC`.

/// The longest ELF file header (`Elf64_Ehdr`).
pub const HEADER_BYTES: usize = 64;
/// `PATH_MAX`: the longest `PT_INTERP` the kernel reads.
pub const INTERPRETER_MAX_BYTES: u64 = 4096;

pub const ET_EXEC: u16 = 2;
pub const ET_DYN: u16 = 3;
pub const EM_386: u16 = 3;
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;
pub const PT_LOAD: u32 = 1;
pub const PT_DYNAMIC: u32 = 2;
pub const PT_INTERP: u32 = 3;

/// EI_CLASS: the layout of the headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Elf32,
    Elf64,
}

impl Class {
    /// The size of its file header.
    pub fn header_bytes(self) -> usize {
        match self {
            Class::Elf32 => 52,
            Class::Elf64 => 64,
        }
    }

    /// The size of one program header.
    pub fn program_header_bytes(self) -> usize {
        match self {
            Class::Elf32 => 32,
            Class::Elf64 => 56,
        }
    }
}

/// EI_DATA: the byte order a file declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteOrder {
    Little,
    Big,
}

/// An ELF file header: the fields `exec` acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub class: Class,
    /// What EI_DATA declares (`None`: neither value). Reported only: the
    /// fields are read in this machine's byte order, as the kernel does.
    pub declared_order: Option<ByteOrder>,
    pub e_type: u16,
    pub machine: u16,
    phoff: u64,
    phentsize: u16,
    phnum: u16,
}

/// Where the program header table is, as the kernel accepts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramHeaderTable {
    pub class: Class,
    /// File offset of the first entry.
    pub offset: u64,
    pub count: u16,
}

impl ProgramHeaderTable {
    /// The size of one entry.
    pub fn entry_bytes(&self) -> usize {
        self.class.program_header_bytes()
    }

    /// The size of the whole table (at most 65,536).
    pub fn bytes(&self) -> usize {
        self.entry_bytes() * self.count as usize
    }

    /// File offset of entry `i`; `None` past the end or beyond `u64`.
    pub fn entry_offset(&self, i: u16) -> Option<u64> {
        if i >= self.count {
            return None;
        }
        self.offset
            .checked_add(i as u64 * self.entry_bytes() as u64)
    }
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// An address-sized field: 4 bytes in a 32-bit file, 8 in a 64-bit one.
fn word_at(class: Class, b: &[u8], o: usize) -> Option<u64> {
    match class {
        Class::Elf32 => u32_at(b, o).map(u64::from),
        Class::Elf64 => u64_at(b, o),
    }
}

impl Header {
    /// The header at the start of `head`; `None` without the ELF magic, with
    /// an EI_CLASS that is neither 32- nor 64-bit, or with fewer bytes than
    /// its class's header.
    pub fn parse(head: &[u8]) -> Option<Header> {
        if head.get(..4)? != b"\x7fELF" {
            return None;
        }
        let class = match *head.get(4)? {
            1 => Class::Elf32,
            2 => Class::Elf64,
            _ => return None,
        };
        if head.len() < class.header_bytes() {
            return None;
        }
        let declared_order = match head[5] {
            1 => Some(ByteOrder::Little),
            2 => Some(ByteOrder::Big),
            _ => None,
        };
        // Elf32_Ehdr and Elf64_Ehdr differ in the width of three addresses
        // (entry, phoff, shoff) before the program header fields.
        let (phoff, ph_fields) = match class {
            Class::Elf32 => (word_at(class, head, 28)?, 42),
            Class::Elf64 => (word_at(class, head, 32)?, 54),
        };
        Some(Header {
            class,
            declared_order,
            e_type: u16_at(head, 16)?,
            machine: u16_at(head, 18)?,
            phoff,
            phentsize: u16_at(head, ph_fields)?,
            phnum: u16_at(head, ph_fields + 2)?,
        })
    }

    /// A program `exec` runs (`ET_EXEC` or `ET_DYN`), not a relocatable
    /// object or a core file.
    pub fn is_program(&self) -> bool {
        matches!(self.e_type, ET_EXEC | ET_DYN)
    }

    /// The program header table; `None` where the kernel refuses it
    /// (`ENOEXEC`): entries not of the class's size, none, or more than
    /// 65,536 bytes of them.
    pub fn program_headers(&self) -> Option<ProgramHeaderTable> {
        let entry = self.class.program_header_bytes();
        if self.phentsize as usize != entry
            || self.phnum == 0
            || self.phnum as usize > 65536 / entry
        {
            return None;
        }
        Some(ProgramHeaderTable {
            class: self.class,
            offset: self.phoff,
            count: self.phnum,
        })
    }
}

/// One program header: the fields `exec` and the loader act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramHeader {
    pub p_type: u32,
    /// File offset of the segment.
    pub offset: u64,
    /// Virtual address of the segment.
    pub vaddr: u64,
    /// Bytes of the segment in the file.
    pub filesz: u64,
}

impl ProgramHeader {
    /// The entry at the start of `entry`; `None` if it is shorter than one
    /// of its class.
    pub fn parse(class: Class, entry: &[u8]) -> Option<ProgramHeader> {
        if entry.len() < class.program_header_bytes() {
            return None;
        }
        // p_type first in both; Elf64_Phdr moves p_flags before p_offset.
        let (offset, vaddr, filesz) = match class {
            Class::Elf32 => (4, 8, 16),
            Class::Elf64 => (8, 16, 32),
        };
        Some(ProgramHeader {
            p_type: u32_at(entry, 0)?,
            offset: word_at(class, entry, offset)?,
            vaddr: word_at(class, entry, vaddr)?,
            filesz: word_at(class, entry, filesz)?,
        })
    }

    /// Where the segment is in the file: offset and size.
    pub fn place(&self) -> (u64, u64) {
        (self.offset, self.filesz)
    }
}

/// The segments `exec` acts on: the first `PT_INTERP` (the program
/// interpreter's path) and the first `PT_DYNAMIC`, each as file offset and
/// size. Fed one program header at a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segments {
    pub interpreter: Option<(u64, u64)>,
    pub dynamic: Option<(u64, u64)>,
}

impl Segments {
    /// Takes note of one program header, in table order.
    pub fn note(&mut self, header: &ProgramHeader) {
        match header.p_type {
            PT_INTERP if self.interpreter.is_none() => self.interpreter = Some(header.place()),
            PT_DYNAMIC if self.dynamic.is_none() => self.dynamic = Some(header.place()),
            _ => {}
        }
    }

    /// The segments of a whole table, its bytes read from the file.
    pub fn of_table(class: Class, table: &[u8]) -> Segments {
        let mut found = Segments::default();
        for entry in table.chunks_exact(class.program_header_bytes()) {
            if let Some(header) = ProgramHeader::parse(class, entry) {
                found.note(&header);
            }
        }
        found
    }
}

/// Whether the kernel reads a `PT_INTERP` of `size` bytes (2 to `PATH_MAX`).
pub fn interpreter_size_ok(size: u64) -> bool {
    (2..=INTERPRETER_MAX_BYTES).contains(&size)
}

/// The program interpreter's path from the bytes of its `PT_INTERP`, as the
/// kernel opens it: up to the first NUL. `None` where `exec` fails with
/// `ENOEXEC`: a size out of [`interpreter_size_ok`], or no NUL as the last
/// byte.
pub fn interpreter_path(bytes: &[u8]) -> Option<&[u8]> {
    if !interpreter_size_ok(bytes.len() as u64) || bytes.last() != Some(&0) {
        return None;
    }
    let end = bytes.iter().position(|&b| b == 0)?;
    Some(&bytes[..end])
}

#[cfg(test)]
mod tests;
