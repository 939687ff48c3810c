//! Every symbol the library exports, in one place: the interposed libc
//! functions, the `ksmauto_*` C API, and the start/exit hooks.
//!
//! Each wrapper is thin: pass the start-up gate (malloc, calloc, realloc and
//! free instead jump to the target start-up publishes last), count the call
//! (the malloc family only when the report is asked for), forward (the
//! malloc family to the allocator that serves the
//! program, everything else to the next definition: see `next`), and hand
//! plain numbers to `core::engine`. Wrappers
//! never allocate through Rust, never panic across the C boundary
//! (`panic = "abort"`), and leave `errno` exactly as the forwarded function
//! set it (the engine uses raw system calls; only start-up, which may run
//! `dlsym`, saves and restores `errno` explicitly).

use core::ffi::{c_char, c_int, c_void};

use crate::core::engine;
use crate::core::once::ReentrantOnce;
use crate::counters::{counters, Hook};
use crate::next::{self, next};
use crate::os::exec_search;
use crate::os::exec_target::{self, ExecTarget};
use crate::report;

static START: ReentrantOnce = ReentrantOnce::new();

/// Opens the gate once: resolve symbols, read the configuration, start the
/// engine. `false` only for calls nested inside start-up itself.
#[inline(always)]
fn ready() -> bool {
    START.run(|| {
        let saved = errno_get();
        next::resolve_all();
        // Resolved now, not at the first exec, which may run in a signal
        // handler or a vfork child where dlsym must not.
        next::exec_functions();
        engine::start(
            next().allocator_is_glibc,
            next::stands_aside(),
            engine::ThreadSupport {
                spawn: spawn_catch_up_thread,
                glibc_threads: next::glibc_thread_count(),
            },
        );
        publish_hot_path();
        errno_set(saved);
    })
}

/// Counts a call and, every so many calls, gives the catch-up scan a chance
/// to run where the process has no catch-up thread; at every call, takes
/// back merge-any lent to an `exec` that is over (it leaves `errno` alone:
/// raw system calls only).
#[inline(always)]
fn counted(hook: Hook) {
    if counters().count_call(hook) || engine::merge_any_lent() {
        poll_catch_up();
    }
}

/// For the hooks a program calls now and then that are not counted
/// (`prctl`, `syscall`, `madvise`): merge-any lent to an `exec` that is over
/// (a `vfork` child's, which cleared the flag of the memory it shares with
/// this process) is taken back at the first such call.
#[inline(always)]
fn take_back_merge_any_if_lent() {
    if engine::merge_any_lent() {
        poll_catch_up();
    }
}

/// Out of line and cold, so the hot hooks keep no registers across it and
/// forward with a tail call.
#[cold]
#[inline(never)]
fn poll_catch_up() {
    engine::poll_catch_up();
}

#[inline(always)]
fn errno_get() -> c_int {
    unsafe { *libc::__errno_location() }
}

#[inline(always)]
fn errno_set(v: c_int) {
    unsafe { *libc::__errno_location() = v }
}

// ---------------------------------------------------------------------------
// malloc family
//
// malloc, calloc, realloc and free are what a small-object loop calls. Each
// loads its target from a hot slot (`next::HotSlot`: its slow path, which
// runs start-up, until start-up publishes the serving allocator's own
// function, or one of the wrappers below when this process counts calls or
// watches for glibc-mapped blocks and brk growth) and jumps there. In
// `process` and `off` mode a call costs that one load and jump: the kernel
// does the merging, so there is nothing to decide per call.

static HOT_MALLOC: next::HotSlot<next::signature::malloc> = next::HotSlot::new(malloc_slow);
static HOT_CALLOC: next::HotSlot<next::signature::calloc> = next::HotSlot::new(calloc_slow);
static HOT_REALLOC: next::HotSlot<next::signature::realloc> = next::HotSlot::new(realloc_slow);
static HOT_FREE: next::HotSlot<next::signature::free> = next::HotSlot::new(free_slow);

/// A block this large may be a mapping of its own that glibc made with its
/// hidden `mmap`: the catch-up scan has news (it advises such blocks in
/// batches, once neighbouring blocks have coalesced into one VMA).
#[inline(always)]
fn note_if_own_mapping(size: usize) {
    if engine::block_may_be_own_mapping(size) {
        note_new_memory();
    }
}

// The watching wrappers keep their common case to one compare and a jump:
// the rare large block goes through a twin that notes it first (so the
// common case saves no registers).

#[cold]
#[inline(never)]
fn note_new_memory() {
    engine::note_new_memory();
}

/// Counts a call of the malloc family when this process counts them (the
/// user asked for the report, see `engine::counts_allocator_calls`).
#[inline(always)]
fn counted_alloc(hook: Hook) {
    if engine::counts_allocator_calls() {
        counted(hook);
    }
}

/// A published target's function, which start-up publishes only when present.
#[inline(always)]
unsafe fn present<F>(f: Option<F>) -> F {
    match f {
        Some(f) => f,
        // SAFETY: `publish_hot_path` publishes a wrapper only for a function
        // the serving allocator has (the table never changes afterwards).
        None => core::hint::unreachable_unchecked(),
    }
}

/// Chooses what the four hot hooks jump to, once start-up is done: the
/// serving allocator's own function, or a wrapper when calls are counted
/// or the allocator is watched (`advise` over glibc); a function the
/// allocator lacks keeps its slow path (which answers `ENOMEM`).
fn publish_hot_path() {
    let n = next();
    let counting = engine::counts_allocator_calls();
    let watching = engine::watches_allocator();
    fn pick<F: Copy>(own: Option<F>, counted: F, watched: F, counting: bool, watching: bool) -> Option<F> {
        own.map(|own| match (counting, watching) {
            (true, _) => counted,
            (false, true) => watched,
            (false, false) => own,
        })
    }
    let (c, w) = (counting, watching);
    if let Some(f) = pick(n.malloc, malloc_counted, malloc_watched, c, w) {
        HOT_MALLOC.publish(f);
    }
    if let Some(f) = pick(n.calloc, calloc_counted, calloc_watched, c, w) {
        HOT_CALLOC.publish(f);
    }
    // realloc's own check (exclusions, watching) is in its hook.
    if let Some(f) = pick(n.realloc, realloc_counted, n.realloc.unwrap_or(realloc_slow), c, w) {
        HOT_REALLOC.publish(f);
    }
    if let Some(f) = pick(n.free, free_counted, n.free.unwrap_or(free_slow), c, w) {
        HOT_FREE.publish(f);
    }
}

#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    HOT_MALLOC.get()(size)
}

unsafe extern "C" fn malloc_counted(size: usize) -> *mut c_void {
    counted(Hook::Malloc);
    malloc_watched(size)
}

/// The wrapper `malloc` jumps to in `advise` over glibc: a block that may
/// be a mapping of its own, or a brk heap grown past the sentinel
/// (`engine::brk_grew`: glibc grows it with its internal `sbrk`), is news.
unsafe extern "C" fn malloc_watched(size: usize) -> *mut c_void {
    if engine::large_for_glibc(size) || engine::brk_grew() {
        return malloc_noted(size);
    }
    present(next().malloc)(size)
}

#[cold]
#[inline(never)]
unsafe fn malloc_noted(size: usize) -> *mut c_void {
    note_watched(size);
    present(next().malloc)(size)
}

/// What a watching wrapper saw: a large block, brk growth, or both.
#[cold]
#[inline(never)]
fn note_watched(size: usize) {
    if engine::brk_grew() {
        engine::note_brk_growth();
    }
    if engine::large_for_glibc(size) {
        engine::note_new_memory();
    }
}

#[cold]
unsafe extern "C" fn malloc_slow(size: usize) -> *mut c_void {
    if !ready() {
        return next::bootstrap_alloc(size, 16);
    }
    counted_alloc(Hook::Malloc);
    note_if_own_mapping(size);
    match next().malloc {
        Some(f) => f(size),
        None => enomem(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    HOT_CALLOC.get()(n, size)
}

unsafe extern "C" fn calloc_counted(n: usize, size: usize) -> *mut c_void {
    counted(Hook::Calloc);
    calloc_watched(n, size)
}

unsafe extern "C" fn calloc_watched(n: usize, size: usize) -> *mut c_void {
    // A product that overflows fails in calloc itself: no block, no news.
    if engine::large_for_glibc(n.wrapping_mul(size)) || engine::brk_grew() {
        return calloc_noted(n, size);
    }
    present(next().calloc)(n, size)
}

#[cold]
#[inline(never)]
unsafe fn calloc_noted(n: usize, size: usize) -> *mut c_void {
    note_watched(n.wrapping_mul(size));
    present(next().calloc)(n, size)
}

#[cold]
unsafe extern "C" fn calloc_slow(n: usize, size: usize) -> *mut c_void {
    if !ready() {
        return match n.checked_mul(size) {
            Some(total) => next::bootstrap_alloc(total, 16),
            None => enomem(),
        };
    }
    counted_alloc(Hook::Calloc);
    note_if_own_mapping(n.saturating_mul(size));
    match next().calloc {
        Some(f) => f(n, size),
        None => enomem(),
    }
}

/// `realloc` of a block from the bootstrap arena: copy it into a block from
/// `alloc` (the real heap once start-up is done, the arena before).
unsafe fn move_bootstrap_block(
    p: *mut c_void,
    size: usize,
    alloc: unsafe extern "C" fn(usize) -> *mut c_void,
) -> *mut c_void {
    let new = alloc(size);
    if !new.is_null() {
        core::ptr::copy_nonoverlapping(
            p as *const u8,
            new as *mut u8,
            next::bootstrap_size(p).min(size),
        );
    }
    new
}

unsafe extern "C" fn arena_alloc(size: usize) -> *mut c_void {
    next::bootstrap_alloc(size, 16)
}

/// Runs a resizing call, taking care of what a block carries along: while
/// anything is excluded, an excluded block that moves takes its exclusion
/// along (whatever its size); a block that may now be a glibc mapping of its
/// own is news for the catch-up scan.
#[inline(always)]
unsafe fn resize(p: *mut c_void, size: usize, call: impl FnOnce() -> *mut c_void) -> *mut c_void {
    if !engine::realloc_needs_care(size) {
        return call();
    }
    resize_carefully(p, size, call)
}

#[inline(never)]
unsafe fn resize_carefully(
    p: *mut c_void,
    size: usize,
    call: impl FnOnce() -> *mut c_void,
) -> *mut c_void {
    note_if_own_mapping(size);
    let excluded = !p.is_null() && engine::exclusions_exist() && {
        let old_len = next().malloc_usable_size.map_or(1, |f| f(p));
        engine::block_is_excluded(p as usize, old_len)
    };
    let new = call();
    if excluded && !new.is_null() {
        engine::exclusion_follows_block(new as usize, size);
    }
    new
}

#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if next::is_bootstrap(p) {
        return realloc_bootstrap_block(p, size);
    }
    let f = HOT_REALLOC.get();
    if engine::realloc_needs_care(size) {
        return realloc_carefully(f, p, size);
    }
    f(p, size)
}

unsafe extern "C" fn realloc_counted(p: *mut c_void, size: usize) -> *mut c_void {
    counted(Hook::Realloc);
    present(next().realloc)(p, size)
}

#[inline(never)]
unsafe fn realloc_carefully(
    f: next::signature::realloc,
    p: *mut c_void,
    size: usize,
) -> *mut c_void {
    resize_carefully(p, size, move || f(p, size))
}

#[cold]
#[inline(never)]
unsafe fn realloc_bootstrap_block(p: *mut c_void, size: usize) -> *mut c_void {
    move_bootstrap_block(p, size, if ready() { malloc } else { arena_alloc })
}

#[cold]
unsafe extern "C" fn realloc_slow(p: *mut c_void, size: usize) -> *mut c_void {
    if !ready() {
        return next::bootstrap_alloc(size, 16);
    }
    counted_alloc(Hook::Realloc);
    match next().realloc {
        Some(f) => resize(p, size, move || f(p, size)),
        None => enomem(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(size) else {
        return enomem();
    };
    if next::is_bootstrap(p) || !ready() {
        return realloc(p, total);
    }
    counted_alloc(Hook::Reallocarray);
    // The serving allocator's own, or its realloc behind an overflow check
    // (`next::stand_in`): never another allocator's.
    match next().reallocarray {
        Some(f) => resize(p, total, move || f(p, n, size)),
        None => enomem(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    if next::is_bootstrap(p) {
        return;
    }
    HOT_FREE.get()(p)
}

unsafe extern "C" fn free_counted(p: *mut c_void) {
    counted(Hook::Free);
    present(next().free)(p)
}

#[cold]
unsafe extern "C" fn free_slow(p: *mut c_void) {
    if !ready() {
        // Only blocks from the arena exist before start-up finishes.
        return;
    }
    counted_alloc(Hook::Free);
    if let Some(f) = next().free {
        f(p)
    }
}

#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !ready() {
        if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<usize>()) {
            return libc::EINVAL;
        }
        let p = next::bootstrap_alloc(size, align);
        if p.is_null() {
            return libc::ENOMEM;
        }
        *out = p;
        return 0;
    }
    counted_alloc(Hook::PosixMemalign);
    note_if_own_mapping(size);
    let Some(f) = next().posix_memalign else {
        return libc::ENOMEM;
    };
    f(out, align, size)
}

/// The shared body of the functions that return a block aligned to `align`.
/// `pick` chooses the next function only after start-up has resolved it: a
/// first call that arrives before our constructor must not see "missing".
#[inline(always)]
unsafe fn aligned(
    hook: Hook,
    pick: fn(&next::NextFunctions) -> Option<next::signature::memalign>,
    align: usize,
    size: usize,
) -> *mut c_void {
    if !ready() {
        return next::bootstrap_alloc(size, align.max(16).next_power_of_two());
    }
    counted_alloc(hook);
    note_if_own_mapping(size);
    match pick(next()) {
        Some(f) => f(align, size),
        None => enomem(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    aligned(Hook::AlignedAlloc, |n| n.aligned_alloc, align, size)
}

#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    aligned(Hook::Memalign, |n| n.memalign, align, size)
}

fn page() -> usize {
    crate::os::page_size()
}

#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    if !ready() {
        return next::bootstrap_alloc(size, page());
    }
    counted_alloc(Hook::Valloc);
    note_if_own_mapping(size);
    match next().valloc {
        Some(f) => f(size),
        None => enomem(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    // A size that cannot be rounded up is the allocator's to answer (each
    // answers it its own way); only the catch-up's hint needs the rounded size.
    let rounded = size.checked_add(page() - 1).map(|s| s & !(page() - 1));
    if !ready() {
        return match rounded {
            Some(r) => next::bootstrap_alloc(r.max(page()), page()),
            None => enomem(),
        };
    }
    counted_alloc(Hook::Pvalloc);
    note_if_own_mapping(rounded.unwrap_or(usize::MAX));
    match next().pvalloc {
        Some(f) => f(size),
        None => enomem(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if next::is_bootstrap(p) {
        return next::bootstrap_size(p);
    }
    if p.is_null() || !ready() {
        return 0;
    }
    counted_alloc(Hook::MallocUsableSize);
    match next().malloc_usable_size {
        Some(f) => f(p),
        None => 0,
    }
}

unsafe fn enomem() -> *mut c_void {
    errno_set(libc::ENOMEM);
    core::ptr::null_mut()
}

// ---------------------------------------------------------------------------
// Mappings

/// The kernel's mmap, for the rare call made while start-up is resolving
/// symbols (libc's `syscall` sets `errno` the way `mmap` would).
unsafe fn mmap_syscall(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: libc::off_t,
) -> *mut c_void {
    libc::syscall(libc::SYS_mmap, addr, len, prot, flags, fd, off) as *mut c_void
}

// The mmap arguments pass through whole, plus what picks the next function:
// grouping them in a struct would cost the hot path a copy.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn mapped(
    hook: Hook,
    pick: fn(&next::NextFunctions) -> Option<next::signature::mmap>,
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: libc::off_t,
) -> *mut c_void {
    if !ready() {
        return mmap_syscall(addr, len, prot, flags, fd, off);
    }
    counted(hook);
    let p = match pick(next()) {
        Some(f) => f(addr, len, prot, flags, fd, off),
        None => mmap_syscall(addr, len, prot, flags, fd, off),
    };
    if p != libc::MAP_FAILED {
        engine::after_mmap(p as usize, len, prot, flags);
    }
    p
}

#[no_mangle]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: libc::off_t,
) -> *mut c_void {
    mapped(Hook::Mmap, |n| n.mmap, addr, len, prot, flags, fd, off)
}

#[no_mangle]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: libc::off_t,
) -> *mut c_void {
    mapped(Hook::Mmap64, |n| n.mmap64, addr, len, prot, flags, fd, off)
}

/// `mremap` is variadic in C (`new_address`, read with `MREMAP_FIXED` or
/// `MREMAP_DONTUNMAP`); on the
/// Linux ABIs we build for, a variadic integer argument travels exactly like
/// a fixed one, so it is declared fixed and forwarded as it came.
#[no_mangle]
pub unsafe extern "C" fn mremap(
    old: *mut c_void,
    old_len: usize,
    new_len: usize,
    flags: c_int,
    new_addr: *mut c_void,
) -> *mut c_void {
    if !ready() {
        return libc::syscall(libc::SYS_mremap, old, old_len, new_len, flags, new_addr)
            as *mut c_void;
    }
    counted(Hook::Mremap);
    // The kernel moves the VMA with its flags: a mergeable region stays so.
    let p = match next().mremap {
        Some(f) => f(old, old_len, new_len, flags, new_addr),
        None => {
            libc::syscall(libc::SYS_mremap, old, old_len, new_len, flags, new_addr) as *mut c_void
        }
    };
    if p != libc::MAP_FAILED {
        // …but our exclusions are by address: they must move too.
        engine::after_mremap(old as usize, old_len, new_len, flags, p as usize);
    }
    p
}

#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: usize) -> c_int {
    if !ready() {
        return libc::syscall(libc::SYS_munmap, addr, len) as c_int;
    }
    counted(Hook::Munmap);
    let rc = match next().munmap {
        Some(f) => f(addr, len),
        None => libc::syscall(libc::SYS_munmap, addr, len) as c_int,
    };
    if rc == 0 {
        engine::after_munmap(addr as usize, len);
    }
    rc
}

// ---------------------------------------------------------------------------
// Secrets: memory the program locks or keeps out of core dumps is never
// mergeable (the `secret` class of KSMAUTO_EXCLUDE; `core::engine` decides).
// Not counted in the stats (they are not allocation activity); `madvise` is
// also what allocators such as jemalloc call to return memory, so anything
// but the two secret advices is forwarded untouched.

/// The kernel's answer through libc's `syscall`, which sets `errno` the way
/// the wrapper would: for calls before start-up, or a next library without
/// the function.
unsafe fn syscall_int(n: libc::c_long, a: usize, b: usize, c: usize) -> c_int {
    libc::syscall(n, a, b, c) as c_int
}

#[no_mangle]
pub unsafe extern "C" fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int {
    if !ready() {
        return syscall_int(libc::SYS_madvise, addr as usize, len, advice as usize);
    }
    take_back_merge_any_if_lent();
    let rc = match next().madvise {
        Some(f) => f(addr, len, advice),
        None => syscall_int(libc::SYS_madvise, addr as usize, len, advice as usize),
    };
    if rc == 0 && crate::os::ksm::advice_marks_secret(advice) {
        engine::after_madvise(addr as usize, len, advice);
    }
    rc
}

#[no_mangle]
pub unsafe extern "C" fn mlock(addr: *const c_void, len: usize) -> c_int {
    if !ready() {
        return syscall_int(libc::SYS_mlock, addr as usize, len, 0);
    }
    let rc = match next().mlock {
        Some(f) => f(addr, len),
        None => syscall_int(libc::SYS_mlock, addr as usize, len, 0),
    };
    if rc == 0 {
        engine::after_mlock(addr as usize, len);
    }
    rc
}

#[no_mangle]
pub unsafe extern "C" fn mlock2(addr: *const c_void, len: usize, flags: libc::c_uint) -> c_int {
    if !ready() {
        return syscall_int(libc::SYS_mlock2, addr as usize, len, flags as usize);
    }
    let rc = match next().mlock2 {
        Some(f) => f(addr, len, flags),
        None => syscall_int(libc::SYS_mlock2, addr as usize, len, flags as usize),
    };
    if rc == 0 {
        engine::after_mlock(addr as usize, len);
    }
    rc
}

#[no_mangle]
pub unsafe extern "C" fn mlockall(flags: c_int) -> c_int {
    if !ready() {
        return syscall_int(libc::SYS_mlockall, flags as usize, 0, 0);
    }
    let rc = match next().mlockall {
        Some(f) => f(flags),
        None => syscall_int(libc::SYS_mlockall, flags as usize, 0, 0),
    };
    if rc == 0 {
        engine::after_mlockall();
    }
    rc
}

// ---------------------------------------------------------------------------
// Threads: a thread's stack is never mergeable (the `stack` class). A stack
// the program supplies is taken out before the thread starts; one glibc maps
// is taken out by the new thread itself before it runs the program's code
// (under `process`, where merge-any made it mergeable at once), or, under
// `advise`, right after creation if the catch-up could not tell it by its
// guard page (nothing advised it yet: glibc maps it with no hook seeing).
// `pthread_create` and C11's `thrd_create` (which glibc serves with an
// internal call no hook sees) share this handling ([`start_thread`]).

/// What a thread started through a trampoline runs: the program's start
/// routine (a `pthread_create` one or a C11 one) and its argument.
struct ThreadStart<R> {
    routine: R,
    arg: *mut c_void,
}

/// First thing on a new thread started through a trampoline: takes back
/// the routine and argument, frees their block and takes the thread's
/// stack out of merging.
unsafe fn begin_thread<R>(p: *mut c_void) -> (R, *mut c_void) {
    let ThreadStart { routine, arg } = (p as *mut ThreadStart<R>).read();
    if let Some(free) = next().free {
        free(p);
    }
    let saved = errno_get();
    let mut attr: libc::pthread_attr_t = core::mem::zeroed();
    if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) == 0 {
        let mut addr: *mut c_void = core::ptr::null_mut();
        let mut size: usize = 0;
        if libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0 {
            engine::thread_stack_started(addr as usize, size);
        }
        libc::pthread_attr_destroy(&mut attr);
    }
    errno_set(saved);
    (routine, arg)
}

extern "C" fn thread_trampoline(p: *mut c_void) -> *mut c_void {
    let (routine, arg) = unsafe { begin_thread::<next::StartRoutine>(p) };
    routine(arg)
}

/// A C11 thread's: glibc calls it as a `thrd_start_t` (its `int` is the
/// thread's result).
extern "C" fn c11_thread_trampoline(p: *mut c_void) -> c_int {
    let (routine, arg) = unsafe { begin_thread::<next::C11StartRoutine>(p) };
    routine(arg)
}

/// The stack `attr` gives the thread (`pthread_attr_setstack`), if any.
/// glibc keeps its top and size, and answers `top - size`: without a stack
/// set, the top is null.
unsafe fn supplied_stack(attr: *const libc::pthread_attr_t) -> Option<(usize, usize)> {
    if attr.is_null() {
        return None;
    }
    let mut addr: *mut c_void = core::ptr::null_mut();
    let mut len: usize = 0;
    if libc::pthread_attr_getstack(attr, &mut addr, &mut len) != 0 {
        return None;
    }
    let top = (addr as usize).wrapping_add(len);
    (top != 0 && len != 0).then_some((addr as usize, len))
}

/// Starts a thread through `create` (the next `pthread_create` or
/// `thrd_create`, called with a routine and its argument; 0 is success for
/// both) with its stack kept out of merging: a supplied stack (`attr`) at
/// once; one glibc maps, by the thread itself (`trampoline` runs `routine`
/// after [`begin_thread`]) or, under `advise`, right after creation.
unsafe fn start_thread<R: Copy>(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    routine: R,
    arg: *mut c_void,
    trampoline: R,
    create: impl Fn(R, *mut c_void) -> c_int,
) -> c_int {
    // The new thread's first allocations may make glibc map an arena for it.
    engine::note_new_memory();
    if let Some((addr, len)) = supplied_stack(attr) {
        engine::thread_stack_supplied(addr, len);
        return create(routine, arg);
    }
    if !engine::threads_unmerge_their_stacks() {
        let rc = create(routine, arg);
        if rc == 0 {
            // The thread's descriptor: an address, never read.
            engine::thread_created(*thread as usize);
        }
        return rc;
    }
    let Some(alloc) = next().malloc else {
        return create(routine, arg);
    };
    let start = alloc(core::mem::size_of::<ThreadStart<R>>()) as *mut ThreadStart<R>;
    if start.is_null() {
        return create(routine, arg);
    }
    start.write(ThreadStart { routine, arg });
    let rc = create(trampoline, start as *mut c_void);
    if rc != 0 {
        if let Some(free) = next().free {
            free(start as *mut c_void);
        }
    }
    rc
}

#[no_mangle]
pub unsafe extern "C" fn pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    routine: next::StartRoutine,
    arg: *mut c_void,
) -> c_int {
    if !ready() {
        return libc::EAGAIN;
    }
    counted(Hook::PthreadCreate);
    let Some(create) = next().pthread_create else {
        return libc::EAGAIN;
    };
    start_thread(thread, attr, routine, arg, thread_trampoline, |r, a| {
        creating_a_task(libc::EAGAIN, || create(thread, attr, r, a))
    })
}

/// Makes `call`, which creates a task and returns 0 or an error (`short`:
/// the one that says no task was to be had), once more without the
/// library's catch-up thread if it failed for want of a task: the thread
/// may hold the one the program needed (`RLIMIT_NPROC`, `pids.max`).
fn creating_a_task(short: c_int, call: impl Fn() -> c_int) -> c_int {
    let rc = call();
    if rc != short {
        return rc;
    }
    engine::again_without_our_thread(call).unwrap_or(rc)
}

/// C11's `thrd_error`.
const THRD_ERROR: c_int = 2;

#[no_mangle]
pub unsafe extern "C" fn thrd_create(
    thread: *mut libc::pthread_t,
    routine: next::C11StartRoutine,
    arg: *mut c_void,
) -> c_int {
    if !ready() {
        return THRD_ERROR;
    }
    let Some(create) = next().thrd_create else {
        return THRD_ERROR;
    };
    // A C11 thread has the process's default attributes: no supplied stack.
    start_thread(
        thread,
        core::ptr::null(),
        routine,
        arg,
        c11_thread_trampoline,
        // glibc's C11 threads say `thrd_error` for `EAGAIN`.
        |r, a| creating_a_task(THRD_ERROR, || create(thread, r, a)),
    )
}

// ---------------------------------------------------------------------------
// exec and spawn: under `process`, merge-any must not pass into a program the
// library does not run in (`engine::before_exec` decides). Each wrapper
// inspects the target, lets the engine switch merge-any off if needed,
// forwards, and puts it back if the call returns (a failed `exec`; a spawn,
// in the parent, after the child has `exec`ed).

extern "C" {
    static environ: *const *const c_char;
}

/// The entries of a NUL-terminated `envp` array.
unsafe fn env_entries(envp: *const *const c_char) -> impl Iterator<Item = &'static [u8]> {
    let mut at = envp;
    core::iter::from_fn(move || {
        if at.is_null() || (*at).is_null() {
            return None;
        }
        let entry = core::ffi::CStr::from_ptr(*at).to_bytes();
        at = at.add(1);
        Some(entry)
    })
}

/// Lets the engine decide about merge-any before an `exec` of the target
/// `inspect` finds with environment `envp`; the target is only inspected (a
/// few system calls) when merge-any is in use at all. `as_we_resolve`: the
/// `exec` resolves paths as we do now — not so for a spawn with file
/// actions, which may change the working directory
/// (`posix_spawn_file_actions_addchdir_np`) or what a descriptor, and with
/// it `/proc/self/fd/N`, names (`adddup2`, `addopen`) first.
unsafe fn prepare_exec(
    inspect: impl FnOnce() -> ExecTarget,
    envp: *const *const c_char,
    as_we_resolve: bool,
) -> Option<engine::ExecLent> {
    if !ready() || !engine::merge_any_in_use() {
        return None;
    }
    // The target is inspected only now (a few system calls), not under
    // `advise` or `off`.
    let target = inspect();
    let env = engine::LoaderEnv::read(env_entries(envp));
    engine::before_exec(target, &env, as_we_resolve)
}

unsafe fn target_at_path(path: *const c_char, as_we_resolve: bool) -> ExecTarget {
    exec_target::inspect_at(libc::AT_FDCWD, path as *const u8, 0, as_we_resolve)
}

/// Resolves `file` the way `execvp` does: in `PATH` of the current
/// environment (not the new one, as glibc reads it), or glibc's default.
unsafe fn target_in_path(file: *const c_char, as_we_resolve: bool) -> ExecTarget {
    let search = crate::os::getenv("PATH").unwrap_or(b"/bin:/usr/bin");
    exec_search::inspect_in_path(file as *const u8, search, as_we_resolve)
}

/// Runs an `exec` or spawn `call` with merge-any switched off first if the
/// engine says so, and back on if the call returns.
#[inline(always)]
unsafe fn around_exec<R>(
    inspect: impl FnOnce() -> ExecTarget,
    envp: *const *const c_char,
    as_we_resolve: bool,
    call: impl FnOnce() -> R,
) -> R {
    let lent = prepare_exec(inspect, envp, as_we_resolve);
    let result = call();
    engine::after_exec_returned(lent);
    result
}

#[no_mangle]
pub unsafe extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    around_exec(
        || target_at_path(path, true),
        envp,
        true,
        || match next::exec_functions().execve {
            Some(f) => f(path, argv, envp),
            None => libc::syscall(libc::SYS_execve, path, argv, envp) as c_int,
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    execve(path, argv, environ)
}

#[no_mangle]
pub unsafe extern "C" fn execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    around_exec(
        || target_in_path(file, true),
        envp,
        true,
        || match next::exec_functions().execvpe {
            Some(f) => f(file, argv, envp),
            None => enoent(),
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    execvpe(file, argv, environ)
}

#[no_mangle]
pub unsafe extern "C" fn execveat(
    dirfd: c_int,
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    flags: c_int,
) -> c_int {
    let inspect = || exec_target::inspect_at(dirfd, path as *const u8, flags, true);
    around_exec(inspect, envp, true, || {
        match next::exec_functions().execveat {
            Some(f) => f(dirfd, path, argv, envp, flags),
            None => libc::syscall(libc::SYS_execveat, dirfd, path, argv, envp, flags) as c_int,
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn fexecve(
    fd: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let inspect =
        || exec_target::inspect_at(fd, c"".as_ptr() as *const u8, libc::AT_EMPTY_PATH, true);
    around_exec(inspect, envp, true, || {
        match next::exec_functions().fexecve {
            Some(f) => f(fd, argv, envp),
            None => enoent(),
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut libc::pid_t,
    path: *const c_char,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    let as_we_resolve = actions.is_null();
    let inspect = || target_at_path(path, as_we_resolve);
    around_exec(
        inspect,
        envp as _,
        as_we_resolve,
        || match next::exec_functions().posix_spawn {
            Some(f) => creating_a_task(libc::EAGAIN, || f(pid, path, actions, attr, argv, envp)),
            None => libc::ENOSYS,
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut libc::pid_t,
    file: *const c_char,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    let as_we_resolve = actions.is_null();
    let inspect = || target_in_path(file, as_we_resolve);
    around_exec(
        inspect,
        envp as _,
        as_we_resolve,
        || match next::exec_functions().posix_spawnp {
            Some(f) => creating_a_task(libc::EAGAIN, || f(pid, file, actions, attr, argv, envp)),
            None => libc::ENOSYS,
        },
    )
}

/// The shell glibc's `system`, `popen` and `wordexp` start, with `environ`,
/// through its internal `posix_spawn` (which no hook sees): each is
/// bracketed as a spawn of it, for as long as the call lasts (`system`
/// waits for the command; `popen` returns once the shell runs).
const SHELL: &core::ffi::CStr = c"/bin/sh";

#[no_mangle]
pub unsafe extern "C" fn system(command: *const c_char) -> c_int {
    around_exec(
        || target_at_path(SHELL.as_ptr(), true),
        environ,
        true,
        || match next::exec_functions().system {
            Some(f) => f(command),
            None => enoent(),
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn popen(command: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    around_exec(
        || target_at_path(SHELL.as_ptr(), true),
        environ,
        true,
        || match next::exec_functions().popen {
            Some(f) => f(command, mode),
            None => {
                enoent();
                core::ptr::null_mut()
            }
        },
    )
}

const WRDE_NOCMD: c_int = 1 << 2;
const WRDE_NOSPACE: c_int = 1;

#[no_mangle]
pub unsafe extern "C" fn wordexp(words: *const c_char, result: *mut c_void, flags: c_int) -> c_int {
    let call = || match next::exec_functions().wordexp {
        Some(f) => f(words, result, flags),
        None => WRDE_NOSPACE,
    };
    if flags & WRDE_NOCMD != 0 || !may_substitute_commands(words) {
        return call();
    }
    around_exec(|| target_at_path(SHELL.as_ptr(), true), environ, true, call)
}

/// Whether `wordexp` may run a command for `words`: only a command
/// substitution does (`$(…)` or a backquote), so a string with neither
/// runs nothing, however it is quoted.
unsafe fn may_substitute_commands(words: *const c_char) -> bool {
    if words.is_null() {
        return false;
    }
    let words = core::ffi::CStr::from_ptr(words).to_bytes();
    words.contains(&b'`') || words.windows(2).any(|pair| pair == b"$(")
}

unsafe fn enoent() -> c_int {
    errno_set(libc::ENOENT);
    -1
}

/// The variadic `execl`, `execle` and `execlp` cannot be written in Rust.
/// A small assembly entry does what glibc's own do (2.36, `posix/execl.c`):
/// counts the list ([`variadic_exec_count`]), makes room on its stack for
/// that many pointers and the null one (glibc's variable-length array,
/// reserved page by page so that it cannot jump over a stack guard page),
/// and calls [`variadic_exec_run`], which fills the array and makes the
/// non-variadic call — [`execve`] with `environ` (`execl`) or `execle`'s
/// environment, [`execvpe`] with `environ` (`execlp`) — then returns what
/// that returned. So these are calls that come back through us when the
/// `exec` fails, like every other `exec` hook: only the call that switched
/// merge-any off switches it back on (a poll never takes a lender of a
/// live thread, its own thread's included: a signal handler that runs
/// between the switch-off and the `exec` must not undo it).
///
/// `frame` is where the entry saved the argument registers; integer
/// argument `i` (0: the path, 1: `arg0`, …) is read by
/// [`variadic_argument`], the caller's stack arguments included.
unsafe fn variadic_argument(frame: *const usize, i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        // rdi, rsi, rdx, rcx, r8, r9 from the lowest; then the saved rbp
        // and the return address; then the caller's stack arguments.
        if i < 6 {
            *frame.add(i)
        } else {
            *frame.add(8 + (i - 6))
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        // x0..x7, right below the caller's stack arguments: one array.
        *frame.add(i)
    }
}

/// How many pointers the list holds before its null one, counted as
/// glibc's `execl` counts them: `arg0` always, then up to the first null;
/// 0 past `INT_MAX` (glibc's `E2BIG`).
extern "C" fn variadic_exec_count(frame: *const usize) -> usize {
    let mut argc = 1;
    while unsafe { variadic_argument(frame, 1 + argc) } != 0 {
        if argc == i32::MAX as usize {
            return 0;
        }
        argc += 1;
    }
    argc
}

/// Fills `argv` (room for `argc` + 1 pointers, on the entry's stack) from
/// the variadic list and makes the non-variadic `exec` the entry `which`
/// stands for; what it returns (only on failure).
extern "C" fn variadic_exec_run(
    which: usize,
    frame: *const usize,
    argv: *mut usize,
    argc: usize,
) -> c_int {
    unsafe {
        if argc == 0 {
            errno_set(libc::E2BIG);
            return -1;
        }
        for i in 0..argc {
            *argv.add(i) = variadic_argument(frame, 1 + i);
        }
        *argv.add(argc) = 0;
        let path = variadic_argument(frame, 0) as *const c_char;
        let args = argv as *const *const c_char;
        match which {
            // execle(path, arg0, ..., NULL, envp): the pointer after the null.
            VARIADIC_EXECLE => execve(path, args, variadic_argument(frame, argc + 2) as _),
            VARIADIC_EXECLP => execvpe(path, args, environ),
            _ => execve(path, args, environ),
        }
    }
}

const VARIADIC_EXECL: usize = 0;
const VARIADIC_EXECLE: usize = 1;
const VARIADIC_EXECLP: usize = 2;

/// The entry of one variadic `exec`: declared without parameters, since the
/// body never reads them as Rust values.
macro_rules! variadic_exec_entry {
    ($name:ident, $which:expr) => {
        #[unsafe(naked)]
        #[no_mangle]
        pub unsafe extern "C" fn $name() -> c_int {
            #[cfg(target_arch = "x86_64")]
            ::core::arch::naked_asm!(
                "push rbp",
                "mov rbp, rsp",
                // Six pushes keep the stack 16-byte aligned for the calls.
                "push r9", "push r8", "push rcx", "push rdx", "push rsi", "push rdi",
                "mov rdi, rsp",
                "call {count}",
                // (argc + 1) pointers, rounded up to 16 bytes.
                "lea r10, [rax * 8 + 23]",
                "and r10, -16",
                // Page by page, touching each, as a compiler's stack-clash
                // protection does for glibc's own array.
                "2:",
                "cmp r10, 4096",
                "jb 3f",
                "sub rsp, 4096",
                "or qword ptr [rsp], 0",
                "sub r10, 4096",
                "jmp 2b",
                "3:",
                "sub rsp, r10",
                "or qword ptr [rsp], 0",
                "mov edi, {which}",
                "lea rsi, [rbp - 48]",
                "mov rdx, rsp",
                "mov rcx, rax",
                "call {run}",
                "mov rsp, rbp",
                "pop rbp",
                "ret",
                which = const $which,
                count = sym variadic_exec_count,
                run = sym variadic_exec_run,
            );
            #[cfg(target_arch = "aarch64")]
            ::core::arch::naked_asm!(
                "stp x29, x30, [sp, #-80]!",
                "mov x29, sp",
                "stp x0, x1, [sp, #16]",
                "stp x2, x3, [sp, #32]",
                "stp x4, x5, [sp, #48]",
                "stp x6, x7, [sp, #64]",
                "add x0, x29, #16",
                "bl {count}",
                // (argc + 1) pointers, rounded up to 16 bytes.
                "lsl x9, x0, #3",
                "add x9, x9, #23",
                "and x9, x9, #0xfffffffffffffff0",
                // Page by page, touching each (stack-clash protection).
                "2:",
                "cmp x9, #4096",
                "b.lo 3f",
                "sub sp, sp, #4096",
                "str xzr, [sp]",
                "sub x9, x9, #4096",
                "b 2b",
                "3:",
                "sub sp, sp, x9",
                "str xzr, [sp]",
                "mov x3, x0",
                "mov x0, #{which}",
                "add x1, x29, #16",
                "mov x2, sp",
                "bl {run}",
                "mov sp, x29",
                "ldp x29, x30, [sp], #80",
                "ret",
                which = const $which,
                count = sym variadic_exec_count,
                run = sym variadic_exec_run,
            );
        }
    };
}

variadic_exec_entry!(execl, VARIADIC_EXECL);
variadic_exec_entry!(execle, VARIADIC_EXECLE);
variadic_exec_entry!(execlp, VARIADIC_EXECLP);

// ---------------------------------------------------------------------------
// Sandboxes and single-threaded calls: a program that installs a seccomp
// filter through libc gets a silent library first (`engine::before_sandbox`);
// a call that needs the process without the library's catch-up thread
// (`unshare`, `setns`, per-thread restrictions: capabilities, secure bits,
// `no_new_privs`, Landlock, and `set*id` made with raw system calls, which
// change only the calling thread) gets it stopped and gone first
// (`engine::before_single_threaded_call`). `prctl` and `syscall` are
// variadic in C; on the Linux ABIs we build for, variadic integer arguments
// travel exactly like fixed ones, so they are declared fixed and forwarded
// as they came (extra registers the caller did not set are ignored by the
// kernel).

const PR_SET_SECCOMP: c_int = 22;
/// The program's own switch of merge-any: its choice stands
/// (`engine::program_switches_merge_any`).
const PR_SET_MEMORY_MERGE: c_int = 67;

/// `prctl` options that restrict the calling thread only.
fn restricts_the_calling_thread(option: c_int) -> bool {
    const PR_SET_KEEPCAPS: c_int = 8;
    const PR_CAPBSET_DROP: c_int = 24;
    const PR_SET_SECUREBITS: c_int = 28;
    const PR_SET_NO_NEW_PRIVS: c_int = 38;
    matches!(
        option,
        PR_SET_KEEPCAPS | PR_CAPBSET_DROP | PR_SET_SECUREBITS | PR_SET_NO_NEW_PRIVS
    )
}

/// Runs `call` with the library's thread stopped and gone (and none
/// created meanwhile).
#[inline(never)]
fn single_threaded<R>(call: impl FnOnce() -> R) -> R {
    let retired = engine::before_single_threaded_call();
    let result = call();
    engine::after_single_threaded_call(retired);
    result
}

#[no_mangle]
pub unsafe extern "C" fn prctl(
    option: c_int,
    a2: libc::c_ulong,
    a3: libc::c_ulong,
    a4: libc::c_ulong,
    a5: libc::c_ulong,
) -> c_int {
    if option == PR_SET_SECCOMP {
        engine::before_sandbox();
    }
    take_back_merge_any_if_lent();
    let forward = || match next::next_if_ready().and_then(|n| n.prctl) {
        Some(f) => f(option, a2, a3, a4, a5),
        None => raw_syscall(
            libc::SYS_prctl,
            [option as _, a2 as _, a3 as _, a4 as _, a5 as _, 0],
        ) as c_int,
    };
    if option == PR_SET_MEMORY_MERGE {
        return engine::program_switches_merge_any(a2 != 0, || {
            let result = forward();
            (result, result == 0)
        });
    }
    if restricts_the_calling_thread(option) {
        return single_threaded(forward);
    }
    forward()
}

/// What a system call made through `syscall` means to the library.
enum RawCall {
    /// Installs a seccomp filter.
    Sandbox,
    /// Needs the process without the library's thread (see above).
    SingleThreaded,
    /// Maps memory no hook advises (`mmap`, `mremap`, `brk`): the
    /// catch-up thread's to find.
    MapsMemory,
    /// Ends the calling thread (`exit`): the main thread's end is news for
    /// the catch-up thread (see `pthread_exit`).
    ThreadExit,
    Other,
}

fn raw_call(number: libc::c_long, a1: libc::c_long) -> RawCall {
    use libc::c_long;
    const SINGLE_THREADED: [c_long; 13] = [
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_capset,
        libc::SYS_landlock_restrict_self,
        libc::SYS_setuid,
        libc::SYS_setgid,
        libc::SYS_setreuid,
        libc::SYS_setregid,
        libc::SYS_setresuid,
        libc::SYS_setresgid,
        libc::SYS_setgroups,
        libc::SYS_setfsuid,
        libc::SYS_setfsgid,
    ];
    if number == libc::SYS_seccomp
        || (number == libc::SYS_prctl && a1 == PR_SET_SECCOMP as c_long)
    {
        RawCall::Sandbox
    } else if SINGLE_THREADED.contains(&number)
        || (number == libc::SYS_prctl && restricts_the_calling_thread(a1 as c_int))
    {
        RawCall::SingleThreaded
    } else if number == libc::SYS_mmap || number == libc::SYS_mremap || number == libc::SYS_brk {
        RawCall::MapsMemory
    } else if number == libc::SYS_exit {
        RawCall::ThreadExit
    } else {
        RawCall::Other
    }
}

#[no_mangle]
pub unsafe extern "C" fn syscall(
    number: libc::c_long,
    a1: libc::c_long,
    a2: libc::c_long,
    a3: libc::c_long,
    a4: libc::c_long,
    a5: libc::c_long,
    a6: libc::c_long,
) -> libc::c_long {
    if number == libc::SYS_execve || number == libc::SYS_execveat {
        return exec_through_syscall(number, [a1, a2, a3, a4, a5, a6]);
    }
    let call = || match next::next_if_ready().and_then(|n| n.syscall) {
        Some(f) => f(number, a1, a2, a3, a4, a5, a6),
        None => raw_syscall(number, [a1, a2, a3, a4, a5, a6]),
    };
    if number == libc::SYS_prctl && a1 == PR_SET_MEMORY_MERGE as libc::c_long {
        return engine::program_switches_merge_any(a2 != 0, || {
            let result = call();
            (result, result == 0)
        });
    }
    take_back_merge_any_if_lent();
    match raw_call(number, a1) {
        RawCall::Other => call(),
        RawCall::Sandbox => {
            engine::before_sandbox();
            call()
        }
        RawCall::SingleThreaded => single_threaded(call),
        RawCall::ThreadExit => {
            if crate::os::sys::getpid() == crate::os::sys::gettid() {
                engine::main_thread_ending();
            }
            call()
        }
        RawCall::MapsMemory => {
            let result = call();
            engine::note_new_memory();
            result
        }
    }
}

/// `syscall(SYS_execve, path, argv, envp)` and `syscall(SYS_execveat,
/// dirfd, path, argv, envp, flags)`: guarded as `execve` and `execveat`.
#[cold]
#[inline(never)]
unsafe fn exec_through_syscall(number: libc::c_long, a: [libc::c_long; 6]) -> libc::c_long {
    let inspect = || {
        if number == libc::SYS_execve {
            target_at_path(a[0] as *const c_char, true)
        } else {
            exec_target::inspect_at(a[0] as c_int, a[1] as *const u8, a[4] as c_int, true)
        }
    };
    let envp = if number == libc::SYS_execve {
        a[2]
    } else {
        a[3]
    };
    around_exec(
        inspect,
        envp as *const *const c_char,
        true,
        || match next::next_if_ready().and_then(|n| n.syscall) {
            Some(f) => f(number, a[0], a[1], a[2], a[3], a[4], a[5]),
            None => raw_syscall(number, a),
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn unshare(flags: c_int) -> c_int {
    single_threaded(|| match next::next_if_ready().and_then(|n| n.unshare) {
        Some(f) => f(flags),
        None => syscall_int(libc::SYS_unshare, flags as usize, 0, 0),
    })
}

#[no_mangle]
pub unsafe extern "C" fn setns(fd: c_int, nstype: c_int) -> c_int {
    single_threaded(|| match next::next_if_ready().and_then(|n| n.setns) {
        Some(f) => f(fd, nstype),
        None => syscall_int(libc::SYS_setns, fd as usize, nstype as usize, 0),
    })
}

#[no_mangle]
pub unsafe extern "C" fn capset(header: *mut c_void, data: *mut c_void) -> c_int {
    single_threaded(|| match next::next_if_ready().and_then(|n| n.capset) {
        Some(f) => f(header, data),
        None => syscall_int(libc::SYS_capset, header as usize, data as usize, 0),
    })
}

/// `pthread_exit`: when the main thread ends, the catch-up thread is told
/// (the process now ends with its last thread, which may soon be ours).
/// glibc unwinds the calling thread's stack from here, so no frame of ours
/// may be on it: a small assembly entry asks [`prepare_pthread_exit`] for
/// the next definition and jumps there with the argument untouched.
extern "C" fn prepare_pthread_exit() -> usize {
    let saved = errno_get();
    let main_thread = crate::os::sys::getpid() == crate::os::sys::gettid();
    if main_thread {
        engine::main_thread_ending();
    }
    errno_set(saved);
    let target = match next::next_if_ready().and_then(|n| n.pthread_exit) {
        Some(f) => f as usize,
        None => next::pthread_exit_now(),
    };
    if target == 0 {
        // No definition after us: the program linked one itself, before
        // us in every lookup, or none exists. Unreachable in practice.
        unsafe { libc::abort() }
    }
    target
}

#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn pthread_exit() {
    #[cfg(target_arch = "x86_64")]
    ::core::arch::naked_asm!(
        // One push leaves the stack 16-byte aligned for the call.
        "push rdi",
        "call {prepare}",
        "pop rdi",
        "jmp rax",
        prepare = sym prepare_pthread_exit,
    );
    #[cfg(target_arch = "aarch64")]
    ::core::arch::naked_asm!(
        "stp x29, x30, [sp, #-32]!",
        "str x0, [sp, #16]",
        "bl {prepare}",
        "mov x16, x0",
        "ldr x0, [sp, #16]",
        "ldp x29, x30, [sp], #32",
        "br x16",
        prepare = sym prepare_pthread_exit,
    );
}

/// A system call as libc's `syscall` makes it (`-1` and `errno` on error),
/// for calls made before start-up has resolved the next definitions — our
/// own start-up's included: the library's code calls `syscall` too, and the
/// loader binds that to this very hook.
unsafe fn raw_syscall(number: libc::c_long, args: [libc::c_long; 6]) -> libc::c_long {
    match crate::os::sys::raw(number as usize, args.map(|a| a as usize)) {
        Ok(v) => v as libc::c_long,
        Err(e) => {
            errno_set(e);
            -1
        }
    }
}

// ---------------------------------------------------------------------------
// The C API (include/ksmauto.h)

/// Makes `[addr, addr + len)` (widened to whole pages) mergeable now.
/// Returns 0, or -1 with `errno` set.
#[no_mangle]
pub unsafe extern "C" fn ksmauto_advise(addr: *mut c_void, len: usize) -> c_int {
    if !ready() {
        errno_set(libc::EAGAIN);
        return -1;
    }
    match engine::api_advise(addr as usize, len) {
        Ok(()) => 0,
        Err(e) => {
            errno_set(e);
            -1
        }
    }
}

/// Unmerges `[addr, addr + len)` (widened to whole pages) now and never makes
/// it mergeable again. Returns 0, or -1 with `errno` set.
#[no_mangle]
pub unsafe extern "C" fn ksmauto_exclude(addr: *mut c_void, len: usize) -> c_int {
    if !ready() {
        errno_set(libc::EAGAIN);
        return -1;
    }
    match engine::api_exclude(addr as usize, len) {
        Ok(()) => 0,
        Err(e) => {
            errno_set(e);
            -1
        }
    }
}

/// Writes the current stats as one JSON object into `buf` (NUL-terminated,
/// cut to fit like `snprintf`); returns the full length it needed.
#[no_mangle]
pub unsafe extern "C" fn ksmauto_stats_json(buf: *mut c_char, len: usize) -> usize {
    if !ready() {
        return 0;
    }
    let saved = errno_get();
    let mut full = [0u8; report::REPORT_BUFFER];
    let n = report::render_current(true, &mut full);
    if !buf.is_null() && len > 0 {
        let copy = n.min(len - 1);
        core::ptr::copy_nonoverlapping(full.as_ptr(), buf as *mut u8, copy);
        *buf.add(copy) = 0;
    }
    errno_set(saved);
    n
}

#[no_mangle]
pub extern "C" fn ksmauto_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

// ---------------------------------------------------------------------------
// Load and exit

extern "C" fn on_load() {
    if !ready() {
        return;
    }
    // Never dropped: the library is linked `-z nodelete` (build.rs), so a
    // `dlclose` never unmaps these handlers, the catch-up thread's code or
    // anything else another object may still call. Registered the way
    // libc_nonshared's `pthread_atfork` does it, with our object's handle:
    // glibc's shared `pthread_atfork` is only a compatibility symbol, absent
    // on aarch64, where a reference to it left the library unloadable
    // ("undefined symbol: pthread_atfork").
    unsafe {
        __register_atfork(
            Some(before_fork),
            Some(after_fork_in_parent),
            Some(in_forked_child),
            core::ptr::addr_of!(__dso_handle) as *mut c_void,
        )
    };
}

extern "C" {
    /// glibc's registration behind `pthread_atfork` (a default symbol
    /// version on every architecture).
    fn __register_atfork(
        prepare: Option<extern "C" fn()>,
        parent: Option<extern "C" fn()>,
        child: Option<extern "C" fn()>,
        dso_handle: *mut c_void,
    ) -> c_int;
    /// This object's handle, defined by the C runtime's `crtbeginS.o`.
    static __dso_handle: u8;
}

/// Whether the prepare handler stopped the catch-up thread (the parent's
/// handler then lets it come back with the next news). Only the forking
/// thread touches it, between the two handlers (glibc holds its fork lock).
static RETIRED_FOR_FORK: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

extern "C" fn before_fork() {
    let saved = errno_get();
    let retired = engine::before_fork();
    RETIRED_FOR_FORK.store(retired, core::sync::atomic::Ordering::Relaxed);
    errno_set(saved);
}

extern "C" fn after_fork_in_parent() {
    engine::after_fork_in_parent(RETIRED_FOR_FORK.swap(false, core::sync::atomic::Ordering::Relaxed));
}

extern "C" fn in_forked_child() {
    RETIRED_FOR_FORK.store(false, core::sync::atomic::Ordering::Relaxed);
    engine::after_fork_in_child();
}

// ---------------------------------------------------------------------------
// The catch-up thread (`core::catchup_thread` decides when it exists)

/// The catch-up thread's stack: in the library's own zero-fill mapping, so
/// the thread maps nothing (no VMA of its own, none left in glibc's stack
/// cache when it leaves) and untouched pages cost nothing. glibc puts the
/// thread's descriptor and static TLS at its top. A step needs under
/// 2 KiB; the room is for the one unbounded use: when the program's main
/// thread called `pthread_exit` and the thread outlives the program's
/// last thread, glibc ends the process from it (`exit`: the program's
/// `atexit` handlers run here).
const CATCH_UP_STACK_BYTES: usize = 256 << 10;

#[repr(C, align(4096))]
struct CatchUpStack(core::cell::UnsafeCell<[u8; CATCH_UP_STACK_BYTES]>);
// Used only as the stack of one thread at a time (`core::catchup_thread`
// creates a new one only once the last is gone).
unsafe impl Sync for CatchUpStack {}

static CATCH_UP_STACK: CatchUpStack =
    CatchUpStack(core::cell::UnsafeCell::new([0; CATCH_UP_STACK_BYTES]));

extern "C" fn catch_up_thread(_: *mut c_void) -> *mut c_void {
    engine::catch_up_thread_main();
    core::ptr::null_mut()
}

/// Creates the catch-up thread with the next `pthread_create`, so glibc
/// knows it (`setuid` and friends change its credentials too; the program
/// never sees it in its own `pthread_create` calls), detached, on
/// [`CATCH_UP_STACK`]. It is created with every signal blocked (a new
/// thread inherits its creator's mask), so no signal meant for the program
/// is ever delivered to it; libc's `pthread_sigmask` keeps the two signals
/// glibc needs for itself (`setuid` across threads, cancellation)
/// deliverable. A program whose static TLS does not fit the stack gets a
/// thread on a stack of glibc's instead.
fn spawn_catch_up_thread() -> Result<(), i32> {
    let Some(create) = next().pthread_create else {
        return Err(libc::ENOSYS);
    };
    unsafe {
        let saved_errno = errno_get();
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        let masked = libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) == 0;
        let mut rc = create_detached(create, true);
        if rc == libc::EINVAL {
            rc = create_detached(create, false);
        }
        if masked {
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        }
        errno_set(saved_errno);
        match rc {
            0 => Ok(()),
            e => Err(e),
        }
    }
}

/// `create` a detached catch-up thread, on the library's stack or on one
/// of glibc's; the call's result.
unsafe fn create_detached(create: next::signature::pthread_create, own_stack: bool) -> c_int {
    let mut attr: libc::pthread_attr_t = core::mem::zeroed();
    if libc::pthread_attr_init(&mut attr) != 0 {
        return libc::EAGAIN;
    }
    libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
    // Never the creator's real-time policy (a SCHED_FIFO thread of the
    // program that brought news): the catch-up would compete with the
    // program's threads at their priority. (Other policies, `SCHED_BATCH`
    // and `SCHED_IDLE` included, it inherits.)
    let mut policy: c_int = 0;
    let mut param = libc::sched_param { sched_priority: 0 };
    let creator = libc::pthread_getschedparam(libc::pthread_self(), &mut policy, &mut param);
    if creator != 0 || policy == libc::SCHED_FIFO || policy == libc::SCHED_RR {
        let normal = libc::sched_param { sched_priority: 0 };
        libc::pthread_attr_setinheritsched(&mut attr, libc::PTHREAD_EXPLICIT_SCHED);
        libc::pthread_attr_setschedpolicy(&mut attr, libc::SCHED_OTHER);
        libc::pthread_attr_setschedparam(&mut attr, &normal);
    }
    if own_stack {
        libc::pthread_attr_setstack(
            &mut attr,
            CATCH_UP_STACK.0.get() as *mut c_void,
            CATCH_UP_STACK_BYTES,
        );
    }
    let mut thread: libc::pthread_t = 0;
    let rc = create(&mut thread, &attr, catch_up_thread, core::ptr::null_mut());
    libc::pthread_attr_destroy(&mut attr);
    rc
}

extern "C" fn on_exit() {
    if ready() {
        let saved = errno_get();
        report::write_exit_report();
        errno_set(saved);
    }
}

// The loader runs `.init_array` entries after those of the objects we depend
// on (libc) and, for a preloaded library, before the program's and its other
// libraries' own; `.fini_array` entries at `exit` and unload. `ctor` and
// `dtor` (`method = linker`) place exactly such one-pointer entries.
ctor::declarative::ctor! {
    #[ctor(unsafe)]
    fn run_on_load() {
        on_load();
    }
}

dtor::declarative::dtor! {
    #[dtor(unsafe, method = linker)]
    fn run_on_exit() {
        on_exit();
    }
}
