//! The functions our hooks forward to, and the bootstrap allocator that
//! serves `dlsym`'s own allocations.
//!
//! The malloc family forwards to the *serving allocator*: the object whose
//! `malloc` the program really calls. That is the first definition of
//! `malloc` in the global lookup order, or — when that one is ours — the
//! next one after us (`dlsym(RTLD_NEXT)`). It is glibc, or
//! jemalloc/tcmalloc/mimalloc either linked in or preloaded before or after
//! us. (A non-PIE program that takes `malloc`'s address has a PLT entry that
//! `dlsym(RTLD_DEFAULT)` returns; that is no definition, see
//! `reached_past_us`.) Every family function is taken only from that same
//! object (compared by link map, found with `dl_iterate_phdr`): a name it lacks would
//! otherwise resolve to glibc's, which would free, resize or read the
//! headers of another allocator's blocks. Such a missing function is built
//! from the serving allocator's own ones (`reallocarray` = overflow-checked
//! `realloc`, `pvalloc` = `memalign`, …; see `stand_in`).
//!
//! "The serving allocator is glibc" (so its large blocks are its own
//! mappings, news for the catch-up) is
//! proven by its `malloc` living in the object that defines
//! `gnu_get_libc_version`, never by comparing with `__libc_malloc`, which
//! tcmalloc and mimalloc export as aliases of their own `malloc`.
//!
//! The mmap family, `pthread_create` and `thrd_create` forward to the next
//! definition after us, whatever object has it.
//!
//! `dlsym` may call `calloc`/`malloc`/`free` while we are resolving; those
//! nested calls are served from a static arena (never reused, never freed:
//! it holds a few small error-message buffers at most). An allocator
//! preloaded before us may start us from inside its own first `mmap`, when
//! its `malloc` cannot be re-entered, so start-up makes no lookup that can
//! fail (a failed `dlsym` allocates its message): `dlsym` is asked only for
//! names glibc 2.26+ has; newer ones (`mlock2`, `execveat`) are looked up
//! by hand in the objects after us ([`next_if_defined`]), and objects are
//! searched by hand, not by `dlopen`.
//! Nothing here allocates through the Rust allocator or takes a lock.

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_void, CStr};
use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};

pub type StartRoutine = extern "C" fn(*mut c_void) -> *mut c_void;
/// A C11 thread's start routine (`thrd_start_t`): it returns an `int`.
pub type C11StartRoutine = extern "C" fn(*mut c_void) -> c_int;

/// Expands the hook list (`src/hook_list.rs`) into the signatures, the table
/// and its lookups.
macro_rules! next_table {
    (
        counted {
            $($name:ident: $variant:ident = $kind:ident fn($($arg:ty),*) -> $ret:ty;)*
        }
        forwarded {
            $($fname:ident = $fkind:ident fn($($farg:ty),*) -> $fret:ty;)*
        }
        exec {
            $($ename:ident = $ekind:ident fn($($earg:ty),*) -> $eret:ty;)*
        }
    ) => {
        /// The C signature of each hooked function, by its name.
        #[allow(non_camel_case_types)]
        pub mod signature {
            use super::{c_char, c_int, c_void, C11StartRoutine, StartRoutine};
            $(pub type $name = unsafe extern "C" fn($($arg),*) -> $ret;)*
            $(pub type $fname = unsafe extern "C" fn($($farg),*) -> $fret;)*
            $(pub type $ename = unsafe extern "C" fn($($earg),*) -> $eret;)*
        }

        /// The resolved targets. The malloc family all belong to one
        /// allocator (the serving one), each either its own definition or a
        /// stand-in built from its other functions; `None` only where no
        /// stand-in can be built (no `malloc` at all, or `realloc` missing
        /// together with `malloc_usable_size`).
        pub struct NextFunctions {
            $(pub $name: Option<signature::$name>,)*
            $(pub $fname: Option<signature::$fname>,)*
            /// The serving allocator is glibc's own malloc (proven, see the
            /// module doc).
            pub allocator_is_glibc: bool,
        }

        const UNRESOLVED: NextFunctions = NextFunctions {
            $($name: None,)*
            $($fname: None,)*
            allocator_is_glibc: false,
        };

        /// Looks up, in list order, every function taken from the objects
        /// after us (`next`, `next_if_defined`).
        unsafe fn resolve_forwarded(table: &mut NextFunctions) {
            $(resolve_one!(forwarded $kind, table, $name);)*
            $(resolve_one!(forwarded $fkind, table, $fname);)*
        }

        /// The next definitions of the `exec` family and `posix_spawn`
        /// (`execv` and `execvp` are served by our own `execve` and
        /// `execvpe`, and so are the variadic `execl`, `execle` and
        /// `execlp`).
        pub struct ExecFunctions {
            $(pub $ename: Option<signature::$ename>,)*
        }

        const EXEC_UNRESOLVED: ExecFunctions = ExecFunctions {
            $($ename: None,)*
        };

        /// Looks up, in list order, the `exec` family.
        unsafe fn resolve_exec(table: &mut ExecFunctions) {
            $(resolve_one!(forwarded $ekind, table, $ename);)*
        }

        /// Looks up, in list order, the serving allocator's own definitions
        /// of the family (`allocator`; `malloc` itself found the allocator).
        unsafe fn resolve_family(table: &mut NextFunctions, own: *mut LinkMap, allocator: *mut LinkMap) {
            $(resolve_one!(family $kind, table, $name, own, allocator);)*
        }
    };
}

/// One lookup of [`next_table!`], for one phase (`forwarded`, `family`)
/// and one kind of resolution; nothing for the other phase's kinds.
macro_rules! resolve_one {
    (forwarded next, $table:ident, $name:ident) => {
        $table.$name = as_fn(past_copies(
            libc::dlsym(RTLD_NEXT_HANDLE, c_name!($name).as_ptr()),
            c_name!($name),
        ));
    };
    (forwarded next_if_defined, $table:ident, $name:ident) => {
        $table.$name = as_fn(next_if_defined(c_name!($name)));
    };
    (forwarded $other:ident, $table:ident, $name:ident) => {};
    (family allocator, $table:ident, $name:ident, $own:ident, $allocator:ident) => {
        $table.$name = of_allocator(c_name!($name), $own, $allocator);
    };
    (family $other:ident, $table:ident, $name:ident, $own:ident, $allocator:ident) => {};
}

/// The C string of a function's name.
macro_rules! c_name {
    ($name:ident) => {
        const {
            match CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                Ok(name) => name,
                Err(_) => panic!("a hook's name is a C name"),
            }
        }
    };
}

with_hook_list!(next_table);

struct Table(UnsafeCell<NextFunctions>);
unsafe impl Sync for Table {}

// once_cell: not a lazily initialised cell on purpose. It is filled inside
// the re-entrant start-up gate (`core::once`: `dlsym` calls back into our
// hooks, which must be told "not ready", not wait, and once_cell's cells
// have no answer for re-entry), and the hot path reads it with one plain
// load, no "initialised?" check.
static NEXT: Table = Table(UnsafeCell::new(UNRESOLVED));

/// The table once start-up has filled it (for hooks that must not run the
/// start-up themselves), else `None`.
#[inline]
pub fn next_if_ready() -> Option<&'static NextFunctions> {
    if TABLE_READY.load(Acquire) {
        Some(next())
    } else {
        None
    }
}

static TABLE_READY: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The table; filled by [`resolve_all`] before the start-up gate opens.
#[inline(always)]
pub fn next() -> &'static NextFunctions {
    unsafe { &*NEXT.0.get() }
}

unsafe fn as_fn<T>(p: *mut c_void) -> Option<T> {
    const { assert!(core::mem::size_of::<T>() == core::mem::size_of::<*mut c_void>()) };
    if p.is_null() {
        None
    } else {
        Some(core::mem::transmute_copy::<*mut c_void, T>(&p))
    }
}

/// The public head of glibc's `struct link_map` (`<link.h>`, the stable
/// debugger interface); a `dlopen` handle points to one.
#[repr(C)]
struct LinkMap {
    l_addr: usize,
    l_name: *const c_char,
    l_ld: *mut c_void,
    l_next: *mut LinkMap,
    l_prev: *mut LinkMap,
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
fn object_of(addr: *const c_void) -> *mut LinkMap {
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
fn own_link_map() -> *mut LinkMap {
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
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr1(
            resolve_all as *const c_void,
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
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut search as *mut Search as *mut c_void) };
    search.found
}

/// Whether `addr` is where its object's symbol table *defines* a function.
/// Not so for the canonical PLT entry that a non-PIE executable has for a
/// function whose address it takes (an undefined symbol with a value):
/// `dlsym(RTLD_DEFAULT)` returns that entry, while calls through it go on to
/// the first real definition.
fn is_definition(addr: *const c_void) -> bool {
    let mut sym: *const libc::Elf64_Sym = core::ptr::null();
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

/// The definition of `name` that the program's calls reach, skipping ours:
/// the first in the global lookup order, or the next after us when that one
/// is ours. Null when there is none.
unsafe fn reached_past_us(name: &CStr, own: *mut LinkMap) -> *mut c_void {
    let first = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
    let object = object_of(first);
    if first.is_null() || object.is_null() || object == own || is_a_copy(object) {
        return past_copies(libc::dlsym(RTLD_NEXT_HANDLE, name.as_ptr()), name);
    }
    if is_definition(first) {
        return first;
    }
    // A non-PIE executable's PLT entry: its calls reach the first object
    // after it, in load order (the global lookup order), that defines `name`.
    let mut map = (*object).l_next;
    while !map.is_null() {
        if map == own {
            return past_copies(libc::dlsym(RTLD_NEXT_HANDLE, name.as_ptr()), name);
        }
        if is_a_copy(map) {
            map = (*map).l_next;
            continue;
        }
        let p = defined_in(map, name);
        if !p.is_null() {
            return p;
        }
        map = (*map).l_next;
    }
    core::ptr::null_mut()
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
unsafe fn defined_in(map: *mut LinkMap, name: &CStr) -> *mut c_void {
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

/// `name` as the serving allocator (object `allocator`) defines it, or
/// `None` when the definition found belongs to some other object.
unsafe fn of_allocator<T>(name: &CStr, own: *mut LinkMap, allocator: *mut LinkMap) -> Option<T> {
    let p = reached_past_us(name, own);
    if p.is_null() || object_of(p) != allocator {
        None
    } else {
        as_fn(p)
    }
}

/// The first definition of `name` in the objects loaded after us (what
/// `dlsym(RTLD_NEXT)` finds), without `dlsym`: for names an older glibc
/// lacks, whose failed lookup would allocate. Null when none defines it.
fn next_if_defined(name: &CStr) -> *mut c_void {
    next_defined_after(own_link_map(), name)
}

/// [`next_if_defined`] with our link map already found (`own`), for a
/// series of lookups.
fn next_defined_after(own: *mut LinkMap, name: &CStr) -> *mut c_void {
    let mut map = own;
    unsafe {
        if map.is_null() {
            return core::ptr::null_mut();
        }
        map = (*map).l_next;
        while !map.is_null() {
            if !is_a_copy(map) {
                let p = defined_in(map, name);
                if !p.is_null() {
                    return p;
                }
            }
            map = (*map).l_next;
        }
    }
    core::ptr::null_mut()
}

// ---------------------------------------------------------------------------
// Copies that stand aside: another copy, or one whose hooks nothing reaches

/// Another copy of this library is loaded (nearly never: `/etc/ld.so.preload`
/// naming one path and `LD_PRELOAD` another, or `ksmauto run` under a shell
/// that preloads one). Each copy would take the other's `malloc` for the
/// allocator's, and the first call would go back and forth between them
/// forever; so every lookup skips the copies, as it skips us.
static OTHER_COPIES: AtomicBool = AtomicBool::new(false);
/// A copy comes before us in load order: its hooks are the ones the program
/// reaches, so it does the work and this copy stands aside.
static A_COPY_COMES_FIRST: AtomicBool = AtomicBool::new(false);
/// libc comes before us in load order, or we head a namespace of our own:
/// this copy was `dlopen`ed (or `dlmopen`ed), not preloaded, and the
/// program's calls resolve to libc, never to our hooks (see
/// [`find_other_copies`]).
static LOADED_AFTER_LIBC: AtomicBool = AtomicBool::new(false);

/// Whether `map` is another copy of this library: it defines our C API's
/// `ksmauto_version` (every version of the library exports it; a program
/// using the API only declares it, weak and undefined).
unsafe fn is_a_copy(map: *mut LinkMap) -> bool {
    OTHER_COPIES.load(Relaxed) && map != own_link_map() && looks_like_a_copy(map)
}

/// A shared object (never the program itself, the head of the list, which
/// may define a stub of the API for its own use) that defines both
/// `ksmauto_version` and `ksmauto_stats_json`, as every version of the
/// library does.
unsafe fn looks_like_a_copy(map: *mut LinkMap) -> bool {
    !(*map).l_prev.is_null()
        && !defined_in(map, c"ksmauto_version").is_null()
        && !defined_in(map, c"ksmauto_stats_json").is_null()
}

/// glibc's own object: the one that defines `gnu_get_libc_version`.
unsafe fn is_libc(map: *mut LinkMap) -> bool {
    !defined_in(map, c"gnu_get_libc_version").is_null()
}

/// Looks once, before any lookup, for other copies, and for libc before us.
///
/// The global lookup order, in which the program's calls find their
/// definitions, is the load order of what the loader loaded at start (the
/// program, the preloaded objects, then the libraries they need, libc
/// among them), followed by what `dlopen` added with `RTLD_GLOBAL`. A
/// preloaded copy (`LD_PRELOAD`, `/etc/ld.so.preload`, `ld.so --preload`)
/// comes before libc, and its `mlock`, `execve`, `pthread_create` are the
/// ones the program calls. A copy that `dlopen` loaded (a plugin host,
/// `ctypes.CDLL`) is appended after libc, with `RTLD_GLOBAL` too: nothing
/// the program calls reaches its hooks, so it could neither exclude a
/// secret nor guard an `exec`, and must change nothing (before, it switched
/// merge-any on, unguarded). A `dlmopen`ed copy heads a namespace of its
/// own, which the program never looks in. A walk of the list, a hash
/// lookup per object before us; nothing allocated.
fn find_other_copies() {
    let own = own_link_map();
    if own.is_null() {
        return;
    }
    unsafe {
        if (*own).l_prev.is_null() {
            LOADED_AFTER_LIBC.store(true, Relaxed);
        }
        let mut map = own;
        while !(*map).l_prev.is_null() {
            map = (*map).l_prev;
        }
        let program = map;
        let mut before_us = true;
        while !map.is_null() {
            if map == own {
                before_us = false;
            } else if looks_like_a_copy(map) {
                OTHER_COPIES.store(true, Relaxed);
                if before_us {
                    A_COPY_COMES_FIRST.store(true, Relaxed);
                }
            } else if before_us && map != program && is_libc(map) {
                LOADED_AFTER_LIBC.store(true, Relaxed);
            }
            map = (*map).l_next;
        }
    }
}

/// Whether this copy stands aside (no engine, no report): another copy of
/// this library comes before it, whose hooks the program reaches, or it
/// was loaded after libc and no hook of its own is reached. Known once
/// [`resolve_all`] ran.
pub fn stands_aside() -> bool {
    A_COPY_COMES_FIRST.load(Relaxed) || LOADED_AFTER_LIBC.load(Relaxed)
}

/// `p`, or when a copy of this library defines it, the first definition of
/// `name` after that copy, in load order, that is in none of them.
unsafe fn past_copies(p: *mut c_void, name: &CStr) -> *mut c_void {
    if p.is_null() || !OTHER_COPIES.load(Relaxed) {
        return p;
    }
    let object = object_of(p);
    if object.is_null() || !is_a_copy(object) {
        return p;
    }
    let mut map = (*object).l_next;
    while !map.is_null() {
        if map != own_link_map() && !is_a_copy(map) {
            let q = defined_in(map, name);
            if !q.is_null() {
                return q;
            }
        }
        map = (*map).l_next;
    }
    core::ptr::null_mut()
}

/// The malloc family of the serving allocator: its own definitions, with
/// stand-ins for the ones it lacks. Also whether it is glibc.
fn resolve_allocator(table: &mut NextFunctions) {
    unsafe {
        let own = own_link_map();
        let malloc = reached_past_us(c"malloc", own);
        let allocator = object_of(malloc);
        if malloc.is_null() || allocator.is_null() {
            return;
        }
        let glibc = object_of(reached_past_us(c"gnu_get_libc_version", own));
        table.allocator_is_glibc = !glibc.is_null() && allocator == glibc;
        table.malloc = as_fn(malloc);
        resolve_family(table, own, allocator);
    }
    stand_in::fill_gaps(table);
}

/// Resolves every target. Runs once, inside the start-up gate.
pub fn resolve_all() {
    unsafe {
        find_other_copies();
        let mut table = UNRESOLVED;
        resolve_forwarded(&mut table);
        resolve_allocator(&mut table);
        *NEXT.0.get() = table;
        TABLE_READY.store(true, Release);
    }
}

const RTLD_NEXT_HANDLE: *mut c_void = -1isize as *mut c_void;

// ---------------------------------------------------------------------------
// Hot path

/// The target of one of the four hooks a small-object loop calls (`malloc`,
/// `calloc`, `realloc`, `free`): a function with that hook's C signature,
/// first the hook's own slow path (which runs start-up), then, once
/// start-up has finished, what start-up published (the serving allocator's
/// own function, or a wrapper of the interposition layer's). Never empty,
/// so such a hook is one load and one jump: no separate gate, no test for
/// "not yet" (the gate stays on the slow path, which start-up and its
/// nested calls take). The interposition layer owns the four slots (their
/// first targets are its own functions).
pub struct HotSlot<F: Copy>(UnsafeCell<F>);

// Read and written only as one pointer-sized atomic word.
unsafe impl<F: Copy> Sync for HotSlot<F> {}

impl<F: Copy> HotSlot<F> {
    pub const fn new(first: F) -> HotSlot<F> {
        const { assert!(core::mem::size_of::<F>() == core::mem::size_of::<*mut c_void>()) };
        HotSlot(UnsafeCell::new(first))
    }

    fn word(&self) -> &AtomicPtr<c_void> {
        // SAFETY: a function pointer is one aligned pointer-sized word, and
        // the slot is only ever accessed through this atomic view.
        unsafe { AtomicPtr::from_ptr(self.0.get() as *mut *mut c_void) }
    }

    /// The target now (an acquire load: a published target comes with
    /// everything start-up wrote before it).
    #[inline(always)]
    pub fn get(&self) -> F {
        let p = self.word().load(Acquire);
        unsafe { core::mem::transmute_copy::<*mut c_void, F>(&p) }
    }

    /// Opens the hot path to `target`. Call once start-up has finished
    /// (everything a hook reads is in place: the release store publishes it
    /// along with the pointer).
    pub fn publish(&self, target: F) {
        let p = unsafe { core::mem::transmute_copy::<F, *mut c_void>(&target) };
        self.word().store(p, Release);
    }
}

// ---------------------------------------------------------------------------
// glibc's own bookkeeping

/// The address of glibc's count of the threads it runs (`__nptl_nthreads`,
/// an `int` of glibc's private interface: in libc since glibc 2.34, in
/// libpthread before), found by hand in the objects after us; 0 when no
/// object defines it. Read, never written: the catch-up thread learns from
/// it that it is the process's last thread.
pub fn glibc_thread_count() -> usize {
    next_if_defined(c"__nptl_nthreads") as usize
}

/// The next `pthread_exit`, found now, for a call before start-up resolved
/// it (no `dlsym`: the caller may be anywhere). 0 if none.
pub fn pthread_exit_now() -> usize {
    next_if_defined(c"pthread_exit") as usize
}

// ---------------------------------------------------------------------------
// Bootstrap arena

const ARENA_SIZE: usize = 256 * 1024;
const HEADER: usize = 16;

#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; ARENA_SIZE]>);
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_SIZE]));
static ARENA_USED: AtomicUsize = AtomicUsize::new(0);

fn arena_base() -> usize {
    ARENA.0.get() as usize
}

/// Whether `p` came from the bootstrap arena.
#[inline(always)]
pub fn is_bootstrap(p: *mut c_void) -> bool {
    // One unsigned compare: an address below the arena wraps to a huge offset.
    (p as usize).wrapping_sub(arena_base()) < ARENA_SIZE
}

/// Zeroed memory from the arena (it is never reused, so it is always zero),
/// aligned to `align` (a power of two). Null when the arena is exhausted.
pub fn bootstrap_alloc(size: usize, align: usize) -> *mut c_void {
    let align = align.max(HEADER);
    let mut used = ARENA_USED.load(Relaxed);
    loop {
        let user = (arena_base() + used + HEADER + align - 1) & !(align - 1);
        let Some(end) = user.checked_add(size) else {
            return core::ptr::null_mut();
        };
        if end > arena_base() + ARENA_SIZE {
            return core::ptr::null_mut();
        }
        match ARENA_USED.compare_exchange_weak(used, end - arena_base(), Relaxed, Relaxed) {
            Ok(_) => {
                unsafe { *((user - core::mem::size_of::<usize>()) as *mut usize) = size };
                return user as *mut c_void;
            }
            Err(now) => used = now,
        }
    }
}

/// The size a bootstrap block was allocated with.
///
/// # Safety
/// `p` must satisfy [`is_bootstrap`] and come from [`bootstrap_alloc`].
pub unsafe fn bootstrap_size(p: *mut c_void) -> usize {
    *((p as usize - core::mem::size_of::<usize>()) as *const usize)
}

// ---------------------------------------------------------------------------
// exec and spawn (`ExecFunctions` and its lookups come from the hook list)

struct ExecTable(UnsafeCell<ExecFunctions>);
unsafe impl Sync for ExecTable {}

static EXEC: ExecTable = ExecTable(UnsafeCell::new(EXEC_UNRESOLVED));
// once_cell: `race::OnceBox` would fit but needs an allocator, which a hook
// must not use (and once_cell cannot be a dependency, see Cargo.toml).
static EXEC_RESOLVED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The `exec` family's next definitions. Resolving twice from racing threads
/// writes the same values, so no gate is needed beyond the flag.
pub fn exec_functions() -> &'static ExecFunctions {
    if !EXEC_RESOLVED.load(Acquire) {
        let mut table = EXEC_UNRESOLVED;
        unsafe {
            resolve_exec(&mut table);
            *EXEC.0.get() = table;
        }
        EXEC_RESOLVED.store(true, Release);
    }
    unsafe { &*EXEC.0.get() }
}

// ---------------------------------------------------------------------------
// Stand-ins

/// Family functions the serving allocator lacks, built from the ones it has,
/// so that every block stays with the allocator that made it (jemalloc has
/// no `reallocarray` or `pvalloc`; tcmalloc no `reallocarray`). Each reads
/// the table when called (after start-up, when it is complete) and sets
/// `errno` the way glibc's function would.
mod stand_in {
    use super::{next, NextFunctions};
    use core::ffi::{c_int, c_void};

    const WORD: usize = core::mem::size_of::<usize>();

    unsafe fn fail(errno: c_int) -> *mut c_void {
        *libc::__errno_location() = errno;
        core::ptr::null_mut()
    }

    /// An alignment every allocator accepts: a power of two, at least a word
    /// (glibc's `memalign` rounds the same way). `None` when none exists.
    fn usable_alignment(align: usize) -> Option<usize> {
        align.max(WORD).checked_next_power_of_two()
    }

    /// Fills every `None` of the malloc family that can be built from what
    /// the table has. Never builds a function from itself (no cycles).
    pub fn fill_gaps(t: &mut NextFunctions) {
        if t.malloc.is_none() {
            return;
        }
        if t.memalign.is_none() {
            if t.posix_memalign.is_some() {
                t.memalign = Some(memalign_by_posix_memalign);
            } else if t.aligned_alloc.is_some() {
                t.memalign = Some(memalign_by_aligned_alloc);
            }
        }
        if t.memalign.is_some() {
            t.posix_memalign = t.posix_memalign.or(Some(posix_memalign_by_memalign));
            t.aligned_alloc = t.aligned_alloc.or(Some(aligned_alloc_by_memalign));
            t.valloc = t.valloc.or(Some(valloc_by_memalign));
            t.pvalloc = t.pvalloc.or(Some(pvalloc_by_memalign));
        }
        t.calloc = t.calloc.or(Some(calloc_by_malloc));
        if t.realloc.is_none() && t.malloc_usable_size.is_some() && t.free.is_some() {
            t.realloc = Some(realloc_by_malloc);
        }
        if t.realloc.is_some() {
            t.reallocarray = t.reallocarray.or(Some(reallocarray_by_realloc));
        }
    }

    unsafe extern "C" fn memalign_by_posix_memalign(align: usize, size: usize) -> *mut c_void {
        let (Some(align), Some(f)) = (usable_alignment(align), next().posix_memalign) else {
            return fail(libc::EINVAL);
        };
        let mut p = core::ptr::null_mut();
        match f(&mut p, align, size) {
            0 => p,
            rc => fail(rc),
        }
    }

    unsafe extern "C" fn memalign_by_aligned_alloc(align: usize, size: usize) -> *mut c_void {
        let (Some(align), Some(f)) = (usable_alignment(align), next().aligned_alloc) else {
            return fail(libc::EINVAL);
        };
        // C11 asks for a size that is a multiple of the alignment.
        match size.checked_add(align - 1) {
            Some(s) => f(align, s & !(align - 1)),
            None => fail(libc::ENOMEM),
        }
    }

    unsafe extern "C" fn posix_memalign_by_memalign(
        out: *mut *mut c_void,
        align: usize,
        size: usize,
    ) -> c_int {
        if !align.is_power_of_two() || !align.is_multiple_of(WORD) {
            return libc::EINVAL;
        }
        let Some(f) = next().memalign else {
            return libc::ENOMEM;
        };
        // posix_memalign reports through its result and leaves errno alone.
        let errno = libc::__errno_location();
        let saved = *errno;
        let p = f(align, size);
        *errno = saved;
        if p.is_null() {
            return libc::ENOMEM;
        }
        *out = p;
        0
    }

    unsafe extern "C" fn aligned_alloc_by_memalign(align: usize, size: usize) -> *mut c_void {
        match next().memalign {
            Some(f) => f(align, size),
            None => fail(libc::ENOMEM),
        }
    }

    unsafe extern "C" fn valloc_by_memalign(size: usize) -> *mut c_void {
        aligned_alloc_by_memalign(crate::os::page_size(), size)
    }

    unsafe extern "C" fn pvalloc_by_memalign(size: usize) -> *mut c_void {
        let page = crate::os::page_size();
        match size.checked_add(page - 1) {
            Some(s) => aligned_alloc_by_memalign(page, (s & !(page - 1)).max(page)),
            None => fail(libc::ENOMEM),
        }
    }

    unsafe extern "C" fn calloc_by_malloc(n: usize, size: usize) -> *mut c_void {
        let (Some(total), Some(f)) = (n.checked_mul(size), next().malloc) else {
            return fail(libc::ENOMEM);
        };
        let p = f(total);
        if !p.is_null() {
            core::ptr::write_bytes(p as *mut u8, 0, total);
        }
        p
    }

    unsafe extern "C" fn realloc_by_malloc(p: *mut c_void, size: usize) -> *mut c_void {
        let t = next();
        let (Some(malloc), Some(usable), Some(free)) = (t.malloc, t.malloc_usable_size, t.free)
        else {
            return fail(libc::ENOMEM);
        };
        if p.is_null() {
            return malloc(size);
        }
        if size == 0 {
            free(p);
            return core::ptr::null_mut();
        }
        let new = malloc(size);
        if !new.is_null() {
            core::ptr::copy_nonoverlapping(p as *const u8, new as *mut u8, usable(p).min(size));
            free(p);
        }
        new
    }

    unsafe extern "C" fn reallocarray_by_realloc(
        p: *mut c_void,
        n: usize,
        size: usize,
    ) -> *mut c_void {
        let (Some(total), Some(f)) = (n.checked_mul(size), next().realloc) else {
            return fail(libc::ENOMEM);
        };
        f(p, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libc_handle() -> *mut c_void {
        let h = unsafe { libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY) };
        assert!(!h.is_null());
        h
    }

    #[test]
    fn a_symbol_table_lookup_finds_what_dlsym_finds_and_nothing_else() {
        let h = libc_handle();
        let malloc = unsafe { libc::dlsym(h, c"malloc".as_ptr()) };
        let version = unsafe { libc::dlsym(h, c"gnu_get_libc_version".as_ptr()) };
        let libc_map = object_of(malloc);
        assert!(!libc_map.is_null());
        assert_eq!(object_of(version), libc_map);
        unsafe {
            assert_eq!(defined_in(libc_map, c"malloc"), malloc);
            assert_eq!(defined_in(libc_map, c"gnu_get_libc_version"), version);
            assert!(defined_in(libc_map, c"no_such_function_anywhere").is_null());
        }
        assert!(is_definition(malloc));
        assert!(is_definition(version));
        assert!(!is_definition(core::ptr::null()));
        unsafe { libc::dlclose(h) };
    }

    /// glibc keeps `pthread_cond_wait@GLIBC_2.2.5` (the condition variable
    /// of before 2.3.2) beside the default `@@GLIBC_2.3.2`: the hand lookup
    /// must find the default one, as an unversioned `dlsym` does.
    #[test]
    fn a_symbol_table_lookup_finds_the_default_version() {
        let h = libc_handle();
        let libc_map = object_of(unsafe { libc::dlsym(h, c"malloc".as_ptr()) });
        for name in [
            c"pthread_cond_wait",
            c"pthread_cond_timedwait",
            c"sem_wait",
            c"pthread_join",
        ] {
            let by_dlsym = unsafe { libc::dlsym(h, name.as_ptr()) };
            assert!(!by_dlsym.is_null(), "{name:?}");
            assert_eq!(unsafe { defined_in(libc_map, name) }, by_dlsym, "{name:?}");
        }
        unsafe { libc::dlclose(h) };
    }

    unsafe extern "C" fn fake_malloc(_: usize) -> *mut c_void {
        core::ptr::null_mut()
    }
    unsafe extern "C" fn fake_free(_: *mut c_void) {}
    unsafe extern "C" fn fake_realloc(_: *mut c_void, _: usize) -> *mut c_void {
        core::ptr::null_mut()
    }
    unsafe extern "C" fn fake_memalign(_: usize, _: usize) -> *mut c_void {
        core::ptr::null_mut()
    }
    unsafe extern "C" fn fake_usable(_: *mut c_void) -> usize {
        0
    }

    fn addr<F: Copy>(f: Option<F>) -> usize {
        match f {
            Some(f) => unsafe { core::mem::transmute_copy::<F, usize>(&f) },
            None => 0,
        }
    }

    #[test]
    fn stand_ins_fill_what_a_jemalloc_like_allocator_lacks_and_keep_what_it_has() {
        let mut t = NextFunctions {
            malloc: Some(fake_malloc),
            realloc: Some(fake_realloc),
            free: Some(fake_free),
            memalign: Some(fake_memalign),
            malloc_usable_size: Some(fake_usable),
            ..UNRESOLVED
        };
        stand_in::fill_gaps(&mut t);
        assert_eq!(addr(t.malloc), addr(Some(fake_malloc as signature::malloc)));
        assert_eq!(
            addr(t.realloc),
            addr(Some(fake_realloc as signature::realloc))
        );
        assert_eq!(
            addr(t.memalign),
            addr(Some(fake_memalign as signature::memalign))
        );
        for (name, f) in [
            ("calloc", addr(t.calloc)),
            ("reallocarray", addr(t.reallocarray)),
            ("posix_memalign", addr(t.posix_memalign)),
            ("aligned_alloc", addr(t.aligned_alloc)),
            ("valloc", addr(t.valloc)),
            ("pvalloc", addr(t.pvalloc)),
        ] {
            assert_ne!(f, 0, "{name} not built");
        }
    }

    #[test]
    fn nothing_is_built_without_malloc_and_realloc_needs_usable_size_and_free() {
        let mut none = UNRESOLVED;
        stand_in::fill_gaps(&mut none);
        assert!(none.calloc.is_none() && none.reallocarray.is_none() && none.valloc.is_none());

        let mut t = NextFunctions {
            malloc: Some(fake_malloc),
            free: Some(fake_free),
            ..UNRESOLVED
        };
        stand_in::fill_gaps(&mut t);
        assert!(t.calloc.is_some());
        // No realloc and no malloc_usable_size: nothing can resize, and no
        // aligned allocator: nothing can align.
        assert!(t.realloc.is_none() && t.reallocarray.is_none());
        assert!(t.memalign.is_none() && t.posix_memalign.is_none() && t.pvalloc.is_none());
    }
}
