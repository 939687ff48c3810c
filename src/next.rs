//! The next definitions of the functions we interpose (`dlsym(RTLD_NEXT)`),
//! and the bootstrap allocator that serves `dlsym`'s own allocations.
//!
//! Forwarding goes to whatever comes after us in the lookup order — glibc,
//! or jemalloc/tcmalloc in programs linked with them — never to glibc's
//! `__libc_*` internals, so a program keeps its own allocator.
//!
//! `dlsym` may call `calloc`/`malloc`/`free` while we are resolving; those
//! nested calls are served from a static arena (never reused, never freed:
//! it holds a few small error-message buffers at most). Nothing here
//! allocates through the Rust allocator or takes a lock.

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_void, CStr};
use core::sync::atomic::{
    AtomicPtr, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};

pub type MallocFn = unsafe extern "C" fn(usize) -> *mut c_void;
pub type CallocFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
pub type ReallocFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
pub type ReallocarrayFn = unsafe extern "C" fn(*mut c_void, usize, usize) -> *mut c_void;
pub type FreeFn = unsafe extern "C" fn(*mut c_void);
pub type PosixMemalignFn = unsafe extern "C" fn(*mut *mut c_void, usize, usize) -> c_int;
pub type AlignedFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
pub type UsableSizeFn = unsafe extern "C" fn(*mut c_void) -> usize;
pub type MmapFn =
    unsafe extern "C" fn(*mut c_void, usize, c_int, c_int, c_int, libc::off_t) -> *mut c_void;
pub type MremapFn =
    unsafe extern "C" fn(*mut c_void, usize, usize, c_int, *mut c_void) -> *mut c_void;
pub type MunmapFn = unsafe extern "C" fn(*mut c_void, usize) -> c_int;
pub type MadviseFn = unsafe extern "C" fn(*mut c_void, usize, c_int) -> c_int;
pub type MlockFn = unsafe extern "C" fn(*const c_void, usize) -> c_int;
pub type Mlock2Fn = unsafe extern "C" fn(*const c_void, usize, libc::c_uint) -> c_int;
pub type MlockallFn = unsafe extern "C" fn(c_int) -> c_int;
pub type StartRoutine = extern "C" fn(*mut c_void) -> *mut c_void;
pub type PthreadCreateFn = unsafe extern "C" fn(
    *mut libc::pthread_t,
    *const libc::pthread_attr_t,
    StartRoutine,
    *mut c_void,
) -> c_int;

/// The resolved next definitions. `None` only for functions the next
/// library does not have (e.g. an allocator without `pvalloc`).
pub struct NextFunctions {
    pub malloc: Option<MallocFn>,
    pub calloc: Option<CallocFn>,
    pub realloc: Option<ReallocFn>,
    pub reallocarray: Option<ReallocarrayFn>,
    pub free: Option<FreeFn>,
    pub posix_memalign: Option<PosixMemalignFn>,
    pub aligned_alloc: Option<AlignedFn>,
    pub memalign: Option<AlignedFn>,
    pub valloc: Option<MallocFn>,
    pub pvalloc: Option<MallocFn>,
    pub malloc_usable_size: Option<UsableSizeFn>,
    pub mmap: Option<MmapFn>,
    pub mmap64: Option<MmapFn>,
    pub mremap: Option<MremapFn>,
    pub munmap: Option<MunmapFn>,
    pub madvise: Option<MadviseFn>,
    pub mlock: Option<MlockFn>,
    pub mlock2: Option<Mlock2Fn>,
    pub mlockall: Option<MlockallFn>,
    pub pthread_create: Option<PthreadCreateFn>,
    /// The next `malloc` is glibc's own, so its chunk headers can be read.
    pub allocator_is_glibc: bool,
}

struct Table(UnsafeCell<NextFunctions>);
unsafe impl Sync for Table {}

static NEXT: Table = Table(UnsafeCell::new(NextFunctions {
    malloc: None,
    calloc: None,
    realloc: None,
    reallocarray: None,
    free: None,
    posix_memalign: None,
    aligned_alloc: None,
    memalign: None,
    valloc: None,
    pvalloc: None,
    malloc_usable_size: None,
    mmap: None,
    mmap64: None,
    mremap: None,
    munmap: None,
    madvise: None,
    mlock: None,
    mlock2: None,
    mlockall: None,
    pthread_create: None,
    allocator_is_glibc: false,
}));

/// The table; filled by [`resolve_all`] before the start-up gate opens.
#[inline(always)]
pub fn next() -> &'static NextFunctions {
    unsafe { &*NEXT.0.get() }
}

unsafe fn lookup<T>(handle: *mut c_void, name: &CStr) -> Option<T> {
    let p = libc::dlsym(handle, name.as_ptr());
    if p.is_null() {
        None
    } else {
        Some(core::mem::transmute_copy::<*mut c_void, T>(&p))
    }
}

/// Resolves every next definition. Runs once, inside the start-up gate.
pub fn resolve_all() {
    unsafe {
        let n = RTLD_NEXT_HANDLE;
        let table = NextFunctions {
            malloc: lookup(n, c"malloc"),
            calloc: lookup(n, c"calloc"),
            realloc: lookup(n, c"realloc"),
            reallocarray: lookup(n, c"reallocarray"),
            free: lookup(n, c"free"),
            posix_memalign: lookup(n, c"posix_memalign"),
            aligned_alloc: lookup(n, c"aligned_alloc"),
            memalign: lookup(n, c"memalign"),
            valloc: lookup(n, c"valloc"),
            pvalloc: lookup(n, c"pvalloc"),
            malloc_usable_size: lookup(n, c"malloc_usable_size"),
            mmap: lookup(n, c"mmap"),
            mmap64: lookup(n, c"mmap64"),
            mremap: lookup(n, c"mremap"),
            munmap: lookup(n, c"munmap"),
            madvise: lookup(n, c"madvise"),
            mlock: lookup(n, c"mlock"),
            mlock2: lookup(n, c"mlock2"),
            mlockall: lookup(n, c"mlockall"),
            pthread_create: lookup(n, c"pthread_create"),
            allocator_is_glibc: false,
        };
        // glibc exports its malloc under both names; any other allocator
        // that interposes `malloc` has a different address.
        let glibc_malloc: Option<MallocFn> = lookup(libc::RTLD_DEFAULT, c"__libc_malloc");
        let is_glibc = match (table.malloc, glibc_malloc) {
            (Some(a), Some(b)) => a as usize == b as usize,
            _ => false,
        };
        *NEXT.0.get() = NextFunctions {
            allocator_is_glibc: is_glibc,
            ..table
        };
    }
}

const RTLD_NEXT_HANDLE: *mut c_void = -1isize as *mut c_void;

// ---------------------------------------------------------------------------
// Hot path

/// The targets of the four hooks a small-object loop calls, null until
/// start-up has finished. One load both tells such a hook that start-up is
/// done and gives it the function to forward to, so the hottest calls pay for
/// no separate gate (the gate stays on their cold path, which start-up and
/// its nested calls take).
struct HotPath {
    malloc: AtomicPtr<c_void>,
    calloc: AtomicPtr<c_void>,
    realloc: AtomicPtr<c_void>,
    free: AtomicPtr<c_void>,
}

static HOT: HotPath = HotPath {
    malloc: AtomicPtr::new(core::ptr::null_mut()),
    calloc: AtomicPtr::new(core::ptr::null_mut()),
    realloc: AtomicPtr::new(core::ptr::null_mut()),
    free: AtomicPtr::new(core::ptr::null_mut()),
};

fn as_ptr<F: Copy>(f: Option<F>) -> *mut c_void {
    match f {
        Some(f) => unsafe { core::mem::transmute_copy::<F, *mut c_void>(&f) },
        None => core::ptr::null_mut(),
    }
}

/// Opens the hot path. Call once start-up has finished (everything a hook
/// reads is in place: the release store publishes it along with the pointer).
/// A function the next library lacks stays null, so its hook keeps taking the
/// cold path, which handles "missing".
pub fn publish_hot_path() {
    let n = next();
    HOT.malloc.store(as_ptr(n.malloc), Release);
    HOT.calloc.store(as_ptr(n.calloc), Release);
    HOT.realloc.store(as_ptr(n.realloc), Release);
    HOT.free.store(as_ptr(n.free), Release);
}

/// `Option<fn>` has the layout of a nullable pointer: null reads as `None`.
#[inline(always)]
fn hot<F>(slot: &AtomicPtr<c_void>) -> Option<F> {
    const { assert!(core::mem::size_of::<Option<F>>() == core::mem::size_of::<*mut c_void>()) };
    let p = slot.load(Acquire);
    unsafe { core::mem::transmute_copy::<*mut c_void, Option<F>>(&p) }
}

/// The next `malloc`, once start-up has finished.
#[inline(always)]
pub fn hot_malloc() -> Option<MallocFn> {
    hot(&HOT.malloc)
}

/// The next `calloc`, once start-up has finished.
#[inline(always)]
pub fn hot_calloc() -> Option<CallocFn> {
    hot(&HOT.calloc)
}

/// The next `realloc`, once start-up has finished.
#[inline(always)]
pub fn hot_realloc() -> Option<ReallocFn> {
    hot(&HOT.realloc)
}

/// The next `free`, once start-up has finished.
#[inline(always)]
pub fn hot_free() -> Option<FreeFn> {
    hot(&HOT.free)
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
// exec and spawn

pub type ExecveFn =
    unsafe extern "C" fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int;
pub type ExecveatFn = unsafe extern "C" fn(
    c_int,
    *const c_char,
    *const *const c_char,
    *const *const c_char,
    c_int,
) -> c_int;
pub type FexecveFn =
    unsafe extern "C" fn(c_int, *const *const c_char, *const *const c_char) -> c_int;
pub type PosixSpawnFn = unsafe extern "C" fn(
    *mut libc::pid_t,
    *const c_char,
    *const libc::posix_spawn_file_actions_t,
    *const libc::posix_spawnattr_t,
    *const *mut c_char,
    *const *mut c_char,
) -> c_int;

/// The next definitions of the `exec` family and `posix_spawn` (`execv` and
/// `execvp` are served by our own `execve` and `execvpe`). The
/// variadic `execl`, `execle` and `execlp` are kept as plain addresses: the
/// interposition layer jumps to them with the caller's arguments untouched.
pub struct ExecFunctions {
    pub execve: Option<ExecveFn>,
    pub execvpe: Option<ExecveFn>,
    pub execveat: Option<ExecveatFn>,
    pub fexecve: Option<FexecveFn>,
    pub posix_spawn: Option<PosixSpawnFn>,
    pub posix_spawnp: Option<PosixSpawnFn>,
    pub execl: usize,
    pub execle: usize,
    pub execlp: usize,
}

struct ExecTable(UnsafeCell<ExecFunctions>);
unsafe impl Sync for ExecTable {}

static EXEC: ExecTable = ExecTable(UnsafeCell::new(ExecFunctions {
    execve: None,
    execvpe: None,
    execveat: None,
    fexecve: None,
    posix_spawn: None,
    posix_spawnp: None,
    execl: 0,
    execle: 0,
    execlp: 0,
}));
static EXEC_RESOLVED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The `exec` family's next definitions. Resolving twice from racing threads
/// writes the same values, so no gate is needed beyond the flag.
pub fn exec_functions() -> &'static ExecFunctions {
    if !EXEC_RESOLVED.load(Acquire) {
        unsafe {
            let n = RTLD_NEXT_HANDLE;
            let addr = |name: &CStr| libc::dlsym(n, name.as_ptr()) as usize;
            *EXEC.0.get() = ExecFunctions {
                execve: lookup(n, c"execve"),
                execvpe: lookup(n, c"execvpe"),
                execveat: lookup(n, c"execveat"),
                fexecve: lookup(n, c"fexecve"),
                posix_spawn: lookup(n, c"posix_spawn"),
                posix_spawnp: lookup(n, c"posix_spawnp"),
                execl: addr(c"execl"),
                execle: addr(c"execle"),
                execlp: addr(c"execlp"),
            };
        }
        EXEC_RESOLVED.store(true, Release);
    }
    unsafe { &*EXEC.0.get() }
}
