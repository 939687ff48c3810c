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
use core::sync::atomic::Ordering::{Acquire, Release};

use crate::os::elf_lookup::{defined_in, is_definition, object_of, own_link_map, LinkMap};
use copies::{find_other_copies, is_a_copy, past_copies};

mod bootstrap;
mod copies;
mod hot_slot;
mod stand_in;

// What the interposition layer uses (unit tests build without it).
#[cfg_attr(test, allow(unused_imports))]
pub use bootstrap::{bootstrap_alloc, bootstrap_size, is_bootstrap};
#[cfg_attr(test, allow(unused_imports))]
pub use copies::stands_aside;
#[cfg_attr(test, allow(unused_imports))]
pub use hot_slot::HotSlot;

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
        served {
            $($sname:ident fn($($sarg:ty),*) -> $sret:ty;)*
        }
        variadic { $($variadic:tt)* }
        c_api {
            $($cname:ident fn($($carg:ty),*) -> $cret:ty;)*
        }
    ) => {
        /// The C signature of each hooked function, by its name.
        #[allow(non_camel_case_types)]
        pub mod signature {
            use super::{c_char, c_int, c_void, C11StartRoutine, StartRoutine};
            $(pub type $name = unsafe extern "C" fn($($arg),*) -> $ret;)*
            $(pub type $fname = unsafe extern "C" fn($($farg),*) -> $fret;)*
            $(pub type $ename = unsafe extern "C" fn($($earg),*) -> $eret;)*
            $(pub type $sname = unsafe extern "C" fn($($sarg),*) -> $sret;)*
            $(pub type $cname = unsafe extern "C" fn($($carg),*) -> $cret;)*
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
        ///
        /// # Safety
        /// Start-up: `dlsym` may be called, and no object is unloaded
        /// meanwhile.
        unsafe fn resolve_forwarded(table: &mut NextFunctions) {
            $(resolve_one!(forwarded $kind, table, $name);)*
            $(resolve_one!(forwarded $fkind, table, $fname);)*
        }

        /// The next definitions of the `exec` family and `posix_spawn`
        /// (`execv` and `execvp` are served by our own `execve` and
        /// `execvpe`, and so are the variadic `execl`, `execle` and
        /// `execlp`).
        #[derive(Clone, Copy)]
        pub struct ExecFunctions {
            $(pub $ename: Option<signature::$ename>,)*
        }

        const EXEC_UNRESOLVED: ExecFunctions = ExecFunctions {
            $($ename: None,)*
        };

        /// Looks up, in list order, the `exec` family.
        ///
        /// # Safety
        /// `dlsym` may be called here (not in a signal handler or a `vfork`
        /// child), and no object is unloaded meanwhile.
        unsafe fn resolve_exec(table: &mut ExecFunctions) {
            $(resolve_one!(forwarded $ekind, table, $ename);)*
        }

        /// Looks up, in list order, the serving allocator's own definitions
        /// of the family (`allocator`; `malloc` itself found the allocator).
        ///
        /// # Safety
        /// As `resolve_forwarded`; `own` and `allocator` are link maps of
        /// loaded objects.
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
// SAFETY: written once, by `resolve_all` inside the start-up gate, before
// the gate (or `TABLE_READY`) publishes it with a release store; read only
// after an acquire of either. Never written again.
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
    // SAFETY: see `Table`'s `Sync`: callers are past the start-up gate (or
    // inside it, after `resolve_all`), so the table is written and final.
    unsafe { &*NEXT.0.get() }
}

/// `p` as the function pointer type `T`, `None` for null.
///
/// # Safety
/// `p` must be null or the address of a function with `T`'s signature.
unsafe fn as_fn<T>(p: *mut c_void) -> Option<T> {
    const { assert!(core::mem::size_of::<T>() == core::mem::size_of::<*mut c_void>()) };
    if p.is_null() {
        None
    } else {
        Some(core::mem::transmute_copy::<*mut c_void, T>(&p))
    }
}

/// The definition of `name` that the program's calls reach, skipping ours:
/// the first in the global lookup order, or the next after us when that one
/// is ours. Null when there is none.
///
/// # Safety
/// Start-up: `dlsym` may be called, `own` is our link map and no object is
/// unloaded meanwhile.
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

/// `name` as the serving allocator (object `allocator`) defines it, or
/// `None` when the definition found belongs to some other object.
///
/// # Safety
/// As [`reached_past_us`]; `T` is the function type of `name`.
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
    // SAFETY: `own` is null or our link map; `l_next` links the loader's
    // maps of loaded objects, each valid while its object stays loaded. The
    // walk takes no loader lock: callers run at start-up, or (`pthread_exit`
    // before start-up resolved it) where `dlsym` must not run; an object
    // another thread `dlclose`s at that very moment is the accepted risk.
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

/// The malloc family of the serving allocator: its own definitions, with
/// stand-ins for the ones it lacks. Also whether it is glibc.
fn resolve_allocator(table: &mut NextFunctions) {
    // SAFETY: start-up (inside the gate): `dlsym` may be called, our link
    // map is what `own_link_map` found, and `as_fn` gets `malloc`'s address
    // for `malloc`'s type.
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
    // SAFETY: start-up, inside the gate, once: the lookups may call `dlsym`,
    // and nobody reads `NEXT` until `TABLE_READY` or the gate publishes it.
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
// exec and spawn (`ExecFunctions` and its lookups come from the hook list)

struct ExecTable(UnsafeCell<ExecFunctions>);
// SAFETY: written once, by the one thread that moved `EXEC_STATE` from
// `EXEC_UNRESOLVED_STATE` to `EXEC_WRITING`, then published by a release
// store of `EXEC_READY`; read only after an acquire load sees that.
unsafe impl Sync for ExecTable {}

static EXEC: ExecTable = ExecTable(UnsafeCell::new(EXEC_UNRESOLVED));
// once_cell: `race::OnceBox` would fit but needs an allocator, which a hook
// must not use (and once_cell cannot be a dependency, see Cargo.toml).
static EXEC_STATE: core::sync::atomic::AtomicU8 =
    core::sync::atomic::AtomicU8::new(EXEC_UNRESOLVED_STATE);
const EXEC_UNRESOLVED_STATE: u8 = 0;
const EXEC_WRITING: u8 = 1;
const EXEC_READY: u8 = 2;

/// The `exec` family's next definitions. One thread writes the shared
/// table; one that finds another thread writing it (or a forked child of
/// that moment) resolves its own copy instead of waiting.
pub fn exec_functions() -> ExecFunctions {
    use core::sync::atomic::Ordering::Relaxed;
    let state = EXEC_STATE.load(Acquire);
    if state == EXEC_READY {
        // SAFETY: `EXEC_READY`, seen with acquire: written and final.
        return unsafe { *EXEC.0.get() };
    }
    let mut table = EXEC_UNRESOLVED;
    // SAFETY: an exec hook or start-up, where `dlsym` may be called (start-up
    // resolves these first, so a hook in a signal handler or a `vfork` child
    // finds them ready); objects loaded at start are not unloaded.
    unsafe { resolve_exec(&mut table) };
    let claimed = state == EXEC_UNRESOLVED_STATE
        && EXEC_STATE
            .compare_exchange(EXEC_UNRESOLVED_STATE, EXEC_WRITING, Relaxed, Relaxed)
            .is_ok();
    if claimed {
        // SAFETY: this thread alone moved the state to `EXEC_WRITING`, and
        // nobody reads the table before `EXEC_READY`.
        unsafe { *EXEC.0.get() = table };
        EXEC_STATE.store(EXEC_READY, Release);
    }
    table
}
