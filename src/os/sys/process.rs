//! This process: its IDs, its session, `prctl`.

use super::Errno;

/// `prctl(option, a2, a3, a4, a5)`.
///
/// # Safety
/// The arguments must be what `option` expects: some options read or write
/// through an argument (`PR_SET_NAME`, `PR_GET_NAME`, ...) or change the
/// address space (`PR_SET_MM`); the caller vouches for the option it passes.
pub unsafe fn prctl(
    option: i32,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
) -> Result<usize, Errno> {
    syscall!(libc::SYS_prctl, option, a2, a3, a4, a5)
}

/// Our user and group IDs, real and effective.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub real_uid: u32,
    pub effective_uid: u32,
    pub real_gid: u32,
    pub effective_gid: u32,
}

/// Our real and effective user and group IDs (`getresuid`, `getresgid`).
pub fn ids() -> Result<Ids, Errno> {
    let mut u = [0u32; 3];
    let mut g = [0u32; 3];
    // SAFETY: getresuid and getresgid each write three u32s, one through each
    // pointer, into the local arrays `u` and `g`.
    unsafe {
        syscall!(
            libc::SYS_getresuid,
            &mut u[0] as *mut u32,
            &mut u[1] as *mut u32,
            &mut u[2] as *mut u32
        )?;
        syscall!(
            libc::SYS_getresgid,
            &mut g[0] as *mut u32,
            &mut g[1] as *mut u32,
            &mut g[2] as *mut u32
        )?;
    }
    Ok(Ids {
        real_uid: u[0],
        effective_uid: u[1],
        real_gid: g[0],
        effective_gid: g[1],
    })
}

/// Whether our real and effective user or group IDs differ: the kernel
/// then starts any program we `exec` in secure-execution mode (`AT_SECURE`),
/// set-user-ID bits or not.
pub fn ids_differ() -> bool {
    let (mut real, mut effective, mut saved) = (0u32, 0u32, 0u32);
    // SAFETY: `number` is getresuid or getresgid, which write one u32
    // through each pointer: the locals `real`, `effective`, `saved`.
    let mut differ = |number| unsafe {
        syscall!(
            number,
            &mut real as *mut u32,
            &mut effective as *mut u32,
            &mut saved as *mut u32
        )
        .map_or(true, |_| real != effective)
    };
    differ(libc::SYS_getresuid) || differ(libc::SYS_getresgid)
}

pub fn getpid() -> i32 {
    // SAFETY: getpid takes no argument and cannot fail.
    unsafe { syscall!(libc::SYS_getpid).unwrap_or(0) as i32 }
}

pub fn getppid() -> i32 {
    // SAFETY: getppid takes no argument and cannot fail.
    unsafe { syscall!(libc::SYS_getppid).unwrap_or(0) as i32 }
}

/// The session of process `pid` (0: this process), as seen from this pid
/// namespace (0 when the session leader is outside it).
pub fn getsid(pid: i32) -> Result<i32, Errno> {
    // SAFETY: getsid takes no pointer and changes nothing.
    unsafe { syscall!(libc::SYS_getsid, pid).map(|s| s as i32) }
}

pub fn geteuid() -> u32 {
    // SAFETY: geteuid takes no argument and cannot fail.
    unsafe { syscall!(libc::SYS_geteuid).unwrap_or(u32::MAX as usize) as u32 }
}

/// Whether the real, effective and saved user IDs are one, and so are the
/// group IDs (no identity to switch back to or away from).
pub fn one_identity() -> bool {
    let same = |number| {
        let (mut real, mut effective, mut saved) = (0u32, 0u32, 0u32);
        // SAFETY: `number` is getresuid or getresgid, which write one u32
        // through each pointer: the locals `real`, `effective`, `saved`.
        unsafe {
            syscall!(
                number,
                &mut real as *mut u32,
                &mut effective as *mut u32,
                &mut saved as *mut u32
            )
        }
        .is_ok_and(|_| real == effective && effective == saved)
    };
    same(libc::SYS_getresuid) && same(libc::SYS_getresgid)
}

/// This process's permitted capabilities (`capget`), as a 64-bit mask.
pub fn permitted_capabilities() -> Option<u64> {
    // struct __user_cap_header_struct { version, pid }, version 3.
    let header: [u32; 2] = [0x2008_0522, 0];
    // Two struct __user_cap_data_struct { effective, permitted, inheritable }.
    let mut data = [0u32; 6];
    // SAFETY: capget reads the local `header` and writes two data structs
    // (six u32s) into the local `data`.
    unsafe { syscall!(libc::SYS_capget, header.as_ptr(), data.as_mut_ptr()) }.ok()?;
    Some(data[1] as u64 | (data[4] as u64) << 32)
}

/// Whether this process is dumpable (`PR_GET_DUMPABLE` 1): not, when it
/// asked to keep its memory from its own user's other processes, or the
/// kernel made it so (after a change of IDs).
pub fn dumpable() -> bool {
    // SAFETY: PR_GET_DUMPABLE takes no pointer and returns the flag.
    let flag = unsafe { prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    flag == Ok(1)
}
