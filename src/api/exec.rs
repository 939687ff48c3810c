//! exec and spawn: under `process`, merge-any must not pass into a program the
//! library does not run in (`engine::before_exec` decides). Each wrapper
//! inspects the target, lets the engine switch merge-any off if needed,
//! forwards, and puts it back if the call returns (a failed `exec`; a spawn,
//! in the parent, after the child has `exec`ed).

use core::ffi::{c_char, c_int, c_void};

use super::{around_exec, creating_a_task, enoent, errno_set, target_at_path, target_in_path};
use crate::next;
use crate::os::exec_target;

extern "C" {
    static environ: *const *const c_char;
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
///
/// # Safety
/// `frame` must be the register save area of a variadic entry's frame, and
/// the program's call must have passed at least `i + 1` integer arguments
/// (as `execl`'s contract has it: the list ends with a null pointer).
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
///
/// # Safety
/// Called only by a variadic entry, with `frame` its register save area, for
/// a call that ends its list with a null pointer (as `execl` requires).
unsafe extern "C" fn variadic_exec_count(frame: *const usize) -> usize {
    let mut argc = 1;
    // SAFETY: the entry's frame, read up to and including the list's null
    // pointer, which the program's call passed (the caller's promise).
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
///
/// # Safety
/// Called only by a variadic entry, after [`variadic_exec_count`] gave
/// `argc` for the same `frame`, with `argv` room for `argc + 1` words.
unsafe extern "C" fn variadic_exec_run(
    which: usize,
    frame: *const usize,
    argv: *mut usize,
    argc: usize,
) -> c_int {
    // SAFETY: `argv` has room for `argc + 1` words (the entry reserved it
    // below its frame); the list's first `argc + 1` arguments and, for
    // `execle`, the `envp` after its null are what the program passed; the
    // path, list and environment are then the program's own `exec` call's.
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
