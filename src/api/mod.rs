//! Every symbol the library exports: the interposed libc functions, the
//! `ksmauto_*` C API, and the start/exit hooks. This module holds what
//! every family of them shares — the start-up gate ([`ready`]), the call
//! counter, `errno`, the raw system calls a hook falls back on before
//! start-up or without a next definition, the C return conversions, the
//! bracket around an `exec` — and the load/exit wiring; one file beside it
//! per family of hooks. A family file uses this module and the layers
//! below, never another family file.
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

/// A hook of the common shape: before start-up, the kernel's answer
/// (`raw`, through libc's `syscall`, which sets `errno` the way the
/// function would); after, `before` (counting, say), then the next
/// definition of the same name, or `raw` again when there is none; on
/// success (`if |rc| ok`, the result bound to `rc`), `after` tells the
/// engine. The hook's name, signature and `#[no_mangle]` are written out
/// here, so each use is an exported symbol of its own.
macro_rules! forward_or_raw {
    (
        $(#[$meta:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;
        raw: $raw:expr;
        $(before: $before:expr;)?
        if |$rc:ident| $ok:expr => $after:expr;
    ) => {
        $(#[$meta])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            if !$crate::api::ready() {
                return $raw;
            }
            $($before;)?
            let $rc = match $crate::next::next().$name {
                Some(f) => f($($arg),*),
                None => $raw,
            };
            if $ok {
                $after;
            }
            $rc
        }
    };
}

mod c_api;
mod catch_up_thread;
mod exec;
mod malloc;
mod mappings;
mod sandbox;
mod secrets;
mod threads;

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
                spawn: catch_up_thread::spawn_catch_up_thread,
                glibc_threads: next::glibc_thread_count(),
            },
        );
        malloc::publish_hot_path();
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

fn errno_get() -> c_int {
    // SAFETY: __errno_location gives this thread's errno: an aligned int,
    // valid for the thread's life, that only this thread touches.
    unsafe { *libc::__errno_location() }
}

#[inline(always)]
fn errno_set(v: c_int) {
    // SAFETY: as in `errno_get`.
    unsafe { *libc::__errno_location() = v }
}

// ---------------------------------------------------------------------------
// Raw system calls and C return values

/// The kernel's answer through libc's `syscall`, which sets `errno` the way
/// the wrapper would: for calls before start-up, or a next library without
/// the function.
unsafe fn syscall_int(n: libc::c_long, a: usize, b: usize, c: usize) -> c_int {
    libc::syscall(n, a, b, c) as c_int
}

/// A system call as libc's `syscall` makes it (`-1` and `errno` on error),
/// for calls made before start-up has resolved the next definitions — our
/// own start-up's included: the library's code calls `syscall` too, and the
/// loader binds that to this very hook.
///
/// # Safety
/// As `os::sys::raw`: the arguments are what system call `number` expects
/// (the program's own call, forwarded as it made it).
unsafe fn raw_syscall(number: libc::c_long, args: [libc::c_long; 6]) -> libc::c_long {
    match crate::os::sys::raw(number as usize, args.map(|a| a as usize)) {
        Ok(v) => v as libc::c_long,
        Err(e) => {
            errno_set(e);
            -1
        }
    }
}

unsafe fn enomem() -> *mut c_void {
    errno_set(libc::ENOMEM);
    core::ptr::null_mut()
}

unsafe fn enoent() -> c_int {
    errno_set(libc::ENOENT);
    -1
}

// ---------------------------------------------------------------------------
// The bracket around an exec or spawn (the exec family, and `syscall`'s
// `SYS_execve`)

/// The entries of a NUL-terminated `envp` array.
///
/// # Safety
/// `envp` must be null or a null-terminated array of NUL-terminated
/// strings that outlive the iterator's use (`'static` over-claims: the
/// caller reads them during its `exec` call only).
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
///
/// # Safety
/// `envp` as for [`env_entries`].
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

/// The target of an `exec` of `path`.
///
/// # Safety
/// `path` must be null or a NUL-terminated string.
unsafe fn target_at_path(path: *const c_char, as_we_resolve: bool) -> ExecTarget {
    exec_target::inspect_at(libc::AT_FDCWD, path as *const u8, 0, as_we_resolve)
}

/// Resolves `file` the way `execvp` does: in `PATH` of the current
/// environment (not the new one, as glibc reads it), or glibc's default.
///
/// # Safety
/// `file` must be null or a NUL-terminated string.
unsafe fn target_in_path(file: *const c_char, as_we_resolve: bool) -> ExecTarget {
    let search = crate::os::getenv("PATH").unwrap_or(b"/bin:/usr/bin");
    exec_search::inspect_in_path(file as *const u8, search, as_we_resolve)
}

/// Runs an `exec` or spawn `call` with merge-any switched off first if the
/// engine says so, and back on if the call returns.
///
/// # Safety
/// `envp` as for [`env_entries`]; `inspect` and `call` may rely on what
/// the exec hook's caller promised.
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
    // SAFETY: the handlers are `extern "C" fn()`s of this library, which is
    // never unmapped (`-z nodelete`), and `__dso_handle` is our own object's
    // handle, as libc_nonshared passes it.
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

extern "C" fn on_exit() {
    if ready() {
        let saved = errno_get();
        report::write_exit_report();
        engine::at_exit();
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

// ---------------------------------------------------------------------------
// Signatures, checked at compile time against the hook list and libc

/// Expands the hook list (`src/hook_list.rs`) into compile-time checks: each
/// exported function has the signature the list gives it (the table in
/// `next` forwards with that signature: a hook whose parameters drifted
/// from it would forward garbage), and that signature is the libc crate's
/// prototype of the function, where it declares one
/// ([`listed_signature_is_libcs!`]). No code: unnamed constants only.
macro_rules! check_hook_signatures {
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
        variadic {
            $($vname:ident;)*
        }
        c_api {
            $($cname:ident fn($($carg:ty),*) -> $cret:ty;)*
        }
    ) => {
        mod every_hook_has_its_listed_signature {
            use core::ffi::{c_char, c_int, c_void};

            use super::{c_api::*, exec::*, malloc::*, mappings::*};
            use super::{sandbox::*, secrets::*, threads::*};
            use crate::next::{signature, StartRoutine};

            $(hook_has_its_listed_signature!($name);)*
            $(hook_has_its_listed_signature!($fname);)*
            $(hook_has_its_listed_signature!($ename);)*
            $(hook_has_its_listed_signature!($sname);)*
            $(hook_has_its_listed_signature!($cname);)*
            // Assembly entries, declared without parameters (see exec.rs).
            $(const _: unsafe extern "C" fn() -> c_int = $vname;)*

            $(listed_signature_is_libcs!($name fn($($arg),*) -> $ret);)*
            $(listed_signature_is_libcs!($fname fn($($farg),*) -> $fret);)*
            $(listed_signature_is_libcs!($ename fn($($earg),*) -> $eret);)*
            $(listed_signature_is_libcs!($sname fn($($sarg),*) -> $sret);)*
        }
    };
}

/// The exported function `name` has the signature the hook list gives it.
macro_rules! hook_has_its_listed_signature {
    // An assembly entry that leaves its argument in its register for the
    // next definition (see threads.rs): declared without parameters.
    (pthread_exit) => {
        const _: unsafe extern "C" fn() = pthread_exit;
    };
    ($name:ident) => {
        const _: signature::$name = $name;
    };
}

/// The hook list's signature of `name` is the libc crate's prototype of
/// it, except where the libc crate has none to compare with.
macro_rules! listed_signature_is_libcs {
    // The libc crate declares no prototype of these.
    (valloc $($signature:tt)*) => {};
    (pvalloc $($signature:tt)*) => {};
    (thrd_create $($signature:tt)*) => {};
    (capset $($signature:tt)*) => {};
    (wordexp $($signature:tt)*) => {};
    // Variadic in C and in the libc crate; declared fixed here (see
    // mappings.rs and sandbox.rs).
    (mremap $($signature:tt)*) => {};
    (prctl $($signature:tt)*) => {};
    (syscall $($signature:tt)*) => {};
    // The libc crate's never returns (`-> !`); the hook's signature is
    // what the next definition is called with.
    (pthread_exit $($signature:tt)*) => {};
    // The libc crate writes C's `char *const argv[]` as `*const *mut
    // c_char` here (but as `*const *const c_char` for `execve`): the same
    // ABI, the hook list's type being `execve`'s.
    (execveat $($signature:tt)*) => {};
    ($name:ident fn($($arg:ty),*) -> $ret:ty) => {
        const _: unsafe extern "C" fn($($arg),*) -> $ret = libc::$name;
    };
}

with_hook_list!(check_hook_signatures);
