//! Copies that stand aside: another copy, or one whose hooks nothing reaches
//! of this library (see [`find_other_copies`]).

use core::ffi::{c_void, CStr};
use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

use crate::os::elf_lookup::{defined_in, object_of, own_link_map, LinkMap};

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
///
/// # Safety
/// `map` must be a link map of a loaded object (see `defined_in`).
pub(super) unsafe fn is_a_copy(map: *mut LinkMap) -> bool {
    OTHER_COPIES.load(Relaxed) && map != own_link_map() && looks_like_a_copy(map)
}

/// A shared object (never the program itself, the head of the list, which
/// may define a stub of the API for its own use) that defines both
/// `ksmauto_version` and `ksmauto_stats_json`, as every version of the
/// library does.
///
/// # Safety
/// As [`is_a_copy`].
unsafe fn looks_like_a_copy(map: *mut LinkMap) -> bool {
    !(*map).l_prev.is_null()
        && !defined_in(map, c"ksmauto_version").is_null()
        && !defined_in(map, c"ksmauto_stats_json").is_null()
}

/// glibc's own object: the one that defines `gnu_get_libc_version`.
///
/// # Safety
/// As [`is_a_copy`].
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
pub(super) fn find_other_copies() {
    let own = own_link_map();
    if own.is_null() {
        return;
    }
    // SAFETY: `own` is our link map, and `l_prev`/`l_next` link the loader's
    // maps of loaded objects, each valid while its object stays loaded;
    // start-up runs this, when no other thread `dlclose`s.
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
///
/// # Safety
/// `p` must be null or an address `dlsym` gave, and no object may be
/// unloaded during the call (start-up).
pub(super) unsafe fn past_copies(p: *mut c_void, name: &CStr) -> *mut c_void {
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
