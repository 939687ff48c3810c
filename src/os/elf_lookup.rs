//! Objects the dynamic loader has loaded, and the symbols they define,
//! read from the loader's own tables: which object holds an address (its
//! link map), this library's own link map, whether an address is a
//! definition, and a hand lookup of a name in one object's dynamic symbol
//! table (GNU or SysV hash). Plumbing without policy: which definition a
//! hook forwards to is `next`'s to decide.
//!
//! Unlike the rest of `os`, this is start-up code, never a hook's:
//! `dladdr1` and `dl_iterate_phdr` take the loader's lock. Nothing here
//! allocates or touches `errno`; the hand lookup reads only tables the
//! loader mapped.

use core::ffi::{c_char, c_int, c_void, CStr};
use core::sync::atomic::{AtomicPtr, Ordering::Relaxed};

/// The public head of glibc's `struct link_map` (`<link.h>`, the stable
/// debugger interface); a `dlopen` handle points to one.
#[repr(C)]
pub struct LinkMap {
    pub l_addr: usize,
    pub l_name: *const c_char,
    pub l_ld: *mut c_void,
    pub l_next: *mut LinkMap,
    pub l_prev: *mut LinkMap,
}

const RTLD_DL_SYMENT: c_int = 1;
const RTLD_DL_LINKMAP: c_int = 2;
const SHN_UNDEF: u16 = 0;

/// The object that holds `addr` (its link map), null if none does.
///
/// Not `dladdr1` for every address: besides the object it looks for the
/// nearest symbol, a linear walk of the whole symbol table (about 80,000
/// instructions for libc's), which made the family's dozen lookups most of a
/// short program's start-up. `dl_iterate_phdr` finds the load segment that
/// holds `addr`; the link map with that load address is then found by
/// walking the list from our own, which one `dladdr1` on our own small
/// table gives. Neither allocates; both take the loader's lock.
pub fn object_of(addr: *const c_void) -> *mut LinkMap {
    if addr.is_null() {
        return core::ptr::null_mut();
    }
    let Some(base) = load_address_of(addr as usize) else {
        return core::ptr::null_mut();
    };
    let mut map = own_link_map();
    if map.is_null() {
        return core::ptr::null_mut();
    }
    // SAFETY: `map` is our own link map, and `l_prev`/`l_next` link the
    // loader's maps of the objects loaded now, each valid while its object
    // stays loaded. The loader changes the list under its lock, which we do
    // not hold: this is start-up code, when no other thread `dlclose`s.
    unsafe {
        while !(*map).l_prev.is_null() {
            map = (*map).l_prev;
        }
        while !map.is_null() {
            if (*map).l_addr == base {
                return map;
            }
            map = (*map).l_next;
        }
    }
    core::ptr::null_mut()
}

/// This library's link map (its own lookup: a walk of its table, made once:
/// every exported hook makes the table longer, and start-up asks often).
/// once_cell: `race::OnceRef` would fit, but cannot be a dependency (see
/// Cargo.toml).
pub fn own_link_map() -> *mut LinkMap {
    static OWN: AtomicPtr<LinkMap> = AtomicPtr::new(core::ptr::null_mut());
    let known = OWN.load(Relaxed);
    if !known.is_null() {
        return known;
    }
    let map = find_own_link_map();
    OWN.store(map, Relaxed);
    map
}

fn find_own_link_map() -> *mut LinkMap {
    let mut map: *mut LinkMap = core::ptr::null_mut();
    // SAFETY: `Dl_info` is pointers and integers (all zeros is valid);
    // dladdr1 writes one into `info` and, with RTLD_DL_LINKMAP, one pointer
    // into `map`, both locals; it only looks our own address up.
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr1(
            find_own_link_map as *const c_void,
            &mut info,
            &mut map as *mut _ as *mut *mut c_void,
            RTLD_DL_LINKMAP,
        ) == 0
        {
            return core::ptr::null_mut();
        }
    }
    map
}

/// The load address of the object one of whose load segments holds `addr`.
fn load_address_of(addr: usize) -> Option<usize> {
    struct Search {
        addr: usize,
        found: Option<usize>,
    }
    /// # Safety
    /// As `dl_iterate_phdr` calls it: `info` one valid object's headers,
    /// `data` the `Search` passed below.
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        let search = &mut *(data as *mut Search);
        let info = &*info;
        let base = info.dlpi_addr as usize;
        for i in 0..info.dlpi_phnum as usize {
            let ph = &*info.dlpi_phdr.add(i);
            let start = base.wrapping_add(ph.p_vaddr as usize);
            if ph.p_type == libc::PT_LOAD
                && search.addr >= start
                && search.addr - start < ph.p_memsz as usize
            {
                search.found = Some(base);
                return 1;
            }
        }
        0
    }
    let mut search = Search { addr, found: None };
    // SAFETY: `visit` treats `data` as the `Search` passed here, alive and
    // not otherwise borrowed for the call; it reads only the headers the
    // loader hands it (`dlpi_phnum` entries at `dlpi_phdr`).
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut search as *mut Search as *mut c_void) };
    search.found
}

/// Whether `addr` is where its object's symbol table *defines* a function.
/// Not so for the canonical PLT entry that a non-PIE executable has for a
/// function whose address it takes (an undefined symbol with a value):
/// `dlsym(RTLD_DEFAULT)` returns that entry, while calls through it go on to
/// the first real definition. `addr` is only looked up in the loader's
/// tables, never read (so no `unsafe fn`).
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub fn is_definition(addr: *const c_void) -> bool {
    let mut sym: *const libc::Elf64_Sym = core::ptr::null();
    // SAFETY: `Dl_info` is pointers and integers (all zeros is valid).
    // dladdr1 only looks `addr` up (never reads it) and writes `info` and,
    // with RTLD_DL_SYMENT, the local `sym`: null or the matching entry of a
    // loaded object's symbol table, which `(*sym)` reads while that object
    // stays loaded (start-up: nothing unloads it meanwhile).
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        !addr.is_null()
            && libc::dladdr1(
                addr,
                &mut info,
                &mut sym as *mut _ as *mut *mut c_void,
                RTLD_DL_SYMENT,
            ) != 0
            && !sym.is_null()
            && core::ptr::eq(info.dli_saddr, addr)
            && (*sym).st_shndx != SHN_UNDEF
    }
}

#[repr(C)]
struct Dyn {
    d_tag: i64,
    d_val: usize,
}

const DT_NULL: i64 = 0;
const DT_HASH: i64 = 4;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_GNU_HASH: i64 = 0x6fff_fef5;
const STT_GNU_IFUNC: u8 = 10;
const DT_VERSYM: i64 = 0x6fff_fff0;
/// A version index with this bit is a non-default (`name@VERSION`) one.
const VERSYM_HIDDEN: u16 = 0x8000;

/// `name` as object `map` itself defines it, found in its own dynamic
/// symbol table through its GNU or SysV hash table; null if it defines none
/// (or has neither table). Only on the rare path above. Not `dlsym` on a
/// handle: an object loaded at start-up has no lookup scope until `dlopen`
/// builds one, and both allocate (`dlsym` for its "not found" message),
/// which deadlocks when an allocator preloaded before us is initialising and
/// its first `mmap` brought us here. This reads only tables the loader
/// mapped.
///
/// # Safety
/// `map` must be the link map of an object that stays loaded during the
/// call (one the loader lists, or a `dlopen` handle), whose dynamic section
/// and the symbol, string, version and hash tables it names are the
/// loader's well-formed mappings.
pub unsafe fn defined_in(map: *mut LinkMap, name: &CStr) -> *mut c_void {
    let base = (*map).l_addr;
    let mut entry = (*map).l_ld as *const Dyn;
    if entry.is_null() {
        return core::ptr::null_mut();
    }
    let (mut symtab, mut strtab, mut gnu_hash, mut sysv_hash) = (0, 0, 0, 0);
    let mut versym = 0;
    while (*entry).d_tag != DT_NULL {
        match (*entry).d_tag {
            DT_SYMTAB => symtab = (*entry).d_val,
            DT_STRTAB => strtab = (*entry).d_val,
            DT_GNU_HASH => gnu_hash = (*entry).d_val,
            DT_HASH => sysv_hash = (*entry).d_val,
            DT_VERSYM => versym = (*entry).d_val,
            _ => {}
        }
        entry = entry.add(1);
    }
    if symtab == 0 || strtab == 0 {
        return core::ptr::null_mut();
    }
    // The loader rebases these entries in place, except in a read-only
    // dynamic section (the vDSO's): an offset is below the load address.
    let at = |p: usize| if p < base { p + base } else { p };
    let table = SymbolTable {
        base,
        symbols: at(symtab) as *const libc::Elf64_Sym,
        names: at(strtab) as *const c_char,
        versions: if versym == 0 {
            core::ptr::null()
        } else {
            at(versym) as *const u16
        },
    };
    let wanted = name.to_bytes();
    if gnu_hash != 0 {
        table.find_by_gnu_hash(at(gnu_hash) as *const u32, wanted)
    } else if sysv_hash != 0 {
        table.find_by_sysv_hash(at(sysv_hash) as *const u32, wanted)
    } else {
        core::ptr::null_mut()
    }
}

struct SymbolTable {
    base: usize,
    symbols: *const libc::Elf64_Sym,
    names: *const c_char,
    /// DT_VERSYM: one version index per symbol; null when the object has
    /// no symbol versions.
    versions: *const u16,
}

impl SymbolTable {
    /// The address symbol `i` defines, if it is a definition of `wanted`
    /// in its default version (what an unversioned `dlsym` finds): glibc
    /// keeps old versions of some functions beside the current one
    /// (`pthread_cond_wait@GLIBC_2.2.5`, the condition variable of before
    /// 2.3.2), marked hidden, and those are only for old binaries.
    ///
    /// # Safety
    /// `i` must index the symbol table (and the version table, if any).
    unsafe fn defines(&self, i: u32, wanted: &[u8]) -> Option<*mut c_void> {
        let sym = &*self.symbols.add(i as usize);
        let ok = sym.st_shndx != SHN_UNDEF
            && sym.st_value != 0
            && sym.st_info & 0xf != STT_GNU_IFUNC
            && (self.versions.is_null() || *self.versions.add(i as usize) & VERSYM_HIDDEN == 0)
            && CStr::from_ptr(self.names.add(sym.st_name as usize)).to_bytes() == wanted;
        ok.then(|| (self.base + sym.st_value as usize) as *mut c_void)
    }

    /// DT_GNU_HASH: buckets of symbol indices whose chain words carry the
    /// hash, the lowest bit marking a chain's end.
    ///
    /// # Safety
    /// `table` must be this object's well-formed DT_GNU_HASH table.
    unsafe fn find_by_gnu_hash(&self, table: *const u32, wanted: &[u8]) -> *mut c_void {
        let (nbuckets, symoffset, bloom_words) = (*table, *table.add(1), *table.add(2));
        if nbuckets == 0 {
            return core::ptr::null_mut();
        }
        // The bloom filter is made of 64-bit words on a 64-bit target.
        let buckets = table.add(4 + 2 * bloom_words as usize);
        let chain = buckets.add(nbuckets as usize);
        let h = wanted
            .iter()
            .fold(5381u32, |h, &c| h.wrapping_mul(33).wrapping_add(c as u32));
        let mut i = *buckets.add((h % nbuckets) as usize);
        if i < symoffset {
            return core::ptr::null_mut();
        }
        loop {
            let link = *chain.add((i - symoffset) as usize);
            if link | 1 == h | 1 {
                if let Some(p) = self.defines(i, wanted) {
                    return p;
                }
            }
            if link & 1 != 0 {
                return core::ptr::null_mut();
            }
            i += 1;
        }
    }

    /// DT_HASH: buckets and chains of symbol indices, 0 ending a chain.
    ///
    /// # Safety
    /// `table` must be this object's well-formed DT_HASH table.
    unsafe fn find_by_sysv_hash(&self, table: *const u32, wanted: &[u8]) -> *mut c_void {
        let (nbuckets, nchain) = (*table, *table.add(1));
        if nbuckets == 0 {
            return core::ptr::null_mut();
        }
        let buckets = table.add(2);
        let chain = buckets.add(nbuckets as usize);
        let h = wanted.iter().fold(0u32, |h, &c| {
            let h = (h << 4).wrapping_add(c as u32);
            let high = h & 0xf000_0000;
            (h ^ (high >> 24)) & !high
        });
        let mut i = *buckets.add((h % nbuckets) as usize);
        // At most one visit per symbol, whatever the table holds.
        for _ in 0..nchain {
            if i == 0 || i >= nchain {
                break;
            }
            if let Some(p) = self.defines(i, wanted) {
                return p;
            }
            i = *chain.add(i as usize);
        }
        core::ptr::null_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;


    fn libc_handle() -> *mut c_void {
        // SAFETY: a literal name; RTLD_NOLOAD only finds the loaded libc.
        let h = unsafe { libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY) };
        assert!(!h.is_null());
        h
    }

    #[test]
    fn a_symbol_table_lookup_finds_what_dlsym_finds_and_nothing_else() {
        let h = libc_handle();
        // SAFETY: lookups by literal names in a live handle.
        let malloc = unsafe { libc::dlsym(h, c"malloc".as_ptr()) };
        // SAFETY: as above.
        let version = unsafe { libc::dlsym(h, c"gnu_get_libc_version".as_ptr()) };
        let libc_map = object_of(malloc);
        assert!(!libc_map.is_null());
        assert_eq!(object_of(version), libc_map);
        // SAFETY: libc's link map, kept loaded by the handle `h`.
        unsafe {
            assert_eq!(defined_in(libc_map, c"malloc"), malloc);
            assert_eq!(defined_in(libc_map, c"gnu_get_libc_version"), version);
            assert!(defined_in(libc_map, c"no_such_function_anywhere").is_null());
        }
        assert!(is_definition(malloc));
        assert!(is_definition(version));
        assert!(!is_definition(core::ptr::null()));
        // SAFETY: our own handle, closed once (libc stays: it was loaded).
        unsafe { libc::dlclose(h) };
    }

    /// glibc keeps `pthread_cond_wait@GLIBC_2.2.5` (the condition variable
    /// of before 2.3.2) beside the default `@@GLIBC_2.3.2`: the hand lookup
    /// must find the default one, as an unversioned `dlsym` does.
    #[test]
    fn a_symbol_table_lookup_finds_the_default_version() {
        let h = libc_handle();
        // SAFETY: a lookup by a literal name in a live handle.
        let libc_map = object_of(unsafe { libc::dlsym(h, c"malloc".as_ptr()) });
        for name in [
            c"pthread_cond_wait",
            c"pthread_cond_timedwait",
            c"sem_wait",
            c"pthread_join",
        ] {
            // SAFETY: a lookup by a C-string literal in a live handle.
            let by_dlsym = unsafe { libc::dlsym(h, name.as_ptr()) };
            assert!(!by_dlsym.is_null(), "{name:?}");
            // SAFETY: libc's link map, kept loaded by the handle `h`.
            assert_eq!(unsafe { defined_in(libc_map, name) }, by_dlsym, "{name:?}");
        }
        // SAFETY: our own handle, closed once (libc stays: it was loaded).
        unsafe { libc::dlclose(h) };
    }
}
