use super::*;

/// Writes `value`'s bytes (this machine's order) at `at`.
fn put(buf: &mut [u8], at: usize, value: &[u8]) {
    buf[at..at + value.len()].copy_from_slice(value);
}

/// A 64-bit header: EI_DATA `data`, `e_phentsize` `phentsize`, two
/// program headers at offset 64.
fn header64(data: u8, phentsize: u16) -> [u8; 64] {
    let mut h = [0u8; 64];
    put(&mut h, 0, b"\x7fELF\x02");
    h[5] = data;
    put(&mut h, 16, &ET_DYN.to_ne_bytes());
    put(&mut h, 18, &EM_X86_64.to_ne_bytes());
    put(&mut h, 32, &64u64.to_ne_bytes());
    put(&mut h, 54, &phentsize.to_ne_bytes());
    put(&mut h, 56, &2u16.to_ne_bytes());
    h
}

#[test]
fn a_64_bit_header_is_read_in_this_machines_byte_order() {
    let h = Header::parse(&header64(1, 56)).unwrap();
    assert_eq!(h.class, Class::Elf64);
    assert_eq!(h.declared_order, Some(ByteOrder::Little));
    assert_eq!((h.e_type, h.machine), (ET_DYN, EM_X86_64));
    assert!(h.is_program());
    let table = h.program_headers().unwrap();
    assert_eq!((table.offset, table.count, table.bytes()), (64, 2, 112));
    assert_eq!(table.entry_offset(1), Some(120));
    assert_eq!(table.entry_offset(2), None);
    // EI_DATA is reported, not obeyed: the kernel reads its own order.
    let declared_big = Header::parse(&header64(2, 56)).unwrap();
    assert_eq!(declared_big.declared_order, Some(ByteOrder::Big));
    assert_eq!(declared_big.machine, EM_X86_64);
    assert_eq!(
        Header::parse(&header64(7, 56)).unwrap().declared_order,
        None
    );
}

#[test]
fn headers_exec_refuses_are_told_apart() {
    // Cut short, no magic, no class.
    assert_eq!(Header::parse(&header64(1, 56)[..63]), None);
    assert_eq!(Header::parse(b"\x7fEL"), None);
    assert_eq!(Header::parse(b"\x7fELF"), None);
    let mut h = header64(1, 56);
    h[4] = 3;
    assert_eq!(Header::parse(&h), None);
    // Program headers of another size, none, or more than 64 KiB of them.
    assert_eq!(
        Header::parse(&header64(1, 64)).unwrap().program_headers(),
        None
    );
    let mut h = header64(1, 56);
    put(&mut h, 56, &0u16.to_ne_bytes());
    assert_eq!(Header::parse(&h).unwrap().program_headers(), None);
    put(&mut h, 56, &1170u16.to_ne_bytes());
    assert!(Header::parse(&h).unwrap().program_headers().is_some());
    put(&mut h, 56, &1171u16.to_ne_bytes());
    assert_eq!(Header::parse(&h).unwrap().program_headers(), None);
    // A relocatable object is no program.
    put(&mut h, 16, &1u16.to_ne_bytes());
    assert!(!Header::parse(&h).unwrap().is_program());
}

#[test]
fn a_32_bit_header_has_its_own_layout() {
    let mut h = [0u8; 52];
    put(&mut h, 0, b"\x7fELF\x01\x01");
    put(&mut h, 16, &ET_EXEC.to_ne_bytes());
    put(&mut h, 18, &EM_386.to_ne_bytes());
    put(&mut h, 28, &52u32.to_ne_bytes());
    put(&mut h, 42, &32u16.to_ne_bytes());
    put(&mut h, 44, &3u16.to_ne_bytes());
    let parsed = Header::parse(&h).unwrap();
    assert_eq!((parsed.class, parsed.machine), (Class::Elf32, EM_386));
    let table = parsed.program_headers().unwrap();
    assert_eq!(
        (table.offset, table.count, table.entry_bytes()),
        (52, 3, 32)
    );
    assert_eq!(Header::parse(&h[..51]), None);
    // A 32-bit entry: type, offset, address, size.
    let mut entry = [0u8; 32];
    put(&mut entry, 0, &PT_INTERP.to_ne_bytes());
    put(&mut entry, 4, &0x154u32.to_ne_bytes());
    put(&mut entry, 8, &0x8048154u32.to_ne_bytes());
    put(&mut entry, 16, &19u32.to_ne_bytes());
    let ph = ProgramHeader::parse(Class::Elf32, &entry).unwrap();
    assert_eq!(
        (ph.p_type, ph.vaddr, ph.place()),
        (PT_INTERP, 0x8048154, (0x154, 19))
    );
    assert_eq!(ProgramHeader::parse(Class::Elf64, &entry), None);
}

#[test]
fn the_first_interp_and_dynamic_headers_count() {
    let mut table = [0u8; 4 * 56];
    for (i, (kind, offset)) in [
        (PT_LOAD, 0u64),
        (PT_INTERP, 0x318),
        (PT_DYNAMIC, 0x2000),
        (PT_INTERP, 0x999),
    ]
    .into_iter()
    .enumerate()
    {
        put(&mut table, i * 56, &kind.to_ne_bytes());
        put(&mut table, i * 56 + 8, &offset.to_ne_bytes());
        put(&mut table, i * 56 + 32, &28u64.to_ne_bytes());
    }
    let found = Segments::of_table(Class::Elf64, &table);
    assert_eq!(found.interpreter, Some((0x318, 28)));
    assert_eq!(found.dynamic, Some((0x2000, 28)));
    // A cut-off last entry is not read.
    let found = Segments::of_table(Class::Elf64, &table[..56 + 55]);
    assert_eq!(found, Segments::default());
}

#[test]
fn an_interpreter_path_is_nul_terminated_and_not_too_long() {
    assert_eq!(
        interpreter_path(b"/lib64/ld-linux-x86-64.so.2\0"),
        Some(&b"/lib64/ld-linux-x86-64.so.2"[..])
    );
    // The kernel opens it as a C string: up to the first NUL.
    assert_eq!(interpreter_path(b"/a\0b\0"), Some(&b"/a"[..]));
    assert_eq!(interpreter_path(b"/lib/ld"), None);
    assert_eq!(interpreter_path(b"\0"), None);
    assert_eq!(interpreter_path(b"\0\0"), Some(&b""[..]));
    let mut long = [b'a'; 4097];
    long[4096] = 0;
    assert_eq!(interpreter_path(&long), None);
    assert!(interpreter_path(&long[1..]).is_some());
}
