//! Sandboxes and single-threaded calls: a program that installs a seccomp
//! filter through libc gets a silent library first (`engine::before_sandbox`);
//! a call that needs the process without the library's catch-up thread
//! (`unshare`, `setns`, per-thread restrictions: capabilities, secure bits,
//! `no_new_privs`, Landlock, and `set*id` made with raw system calls, which
//! change only the calling thread) gets it stopped and gone first
//! (`engine::before_single_threaded_call`). `prctl` and `syscall` are
//! variadic in C; on the Linux ABIs we build for, variadic integer arguments
//! travel exactly like fixed ones, so they are declared fixed and forwarded
//! as they came (extra registers the caller did not set are ignored by the
//! kernel).

use core::ffi::{c_char, c_int, c_void};

use super::{around_exec, raw_syscall, syscall_int, take_back_merge_any_if_lent, target_at_path};
use crate::core::engine;
use crate::next;
use crate::os::exec_target;

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
