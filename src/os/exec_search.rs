//! What `execvp`, `execvpe`, `execlp` and `posix_spawnp` will run for a
//! name: glibc's search of `PATH` (2.36, `posix/execvpe.c`), followed
//! candidate by candidate as the kernel will answer each `exec` of it
//! ([`super::exec_target`]).
//!
//! glibc tries every `PATH` entry in turn and goes on after `ENOENT`,
//! `ENOTDIR` or `EACCES` (a directory, a file we may not execute, a program
//! whose interpreter is missing), stops at any other error, and runs the
//! first that works. Where a candidate's fate is unknown, so is the search's
//! (its `ENOEXEC`, after which `execvp` runs `/bin/sh` on the file, is one).
//! Candidate paths are built in a static buffer behind a try-lock (busy:
//! "could not tell"). Never allocates, never touches `errno`.

use super::exec_target::{self, ExecTarget, Failure, Outcome};
use super::sys;
use crate::scratch::Scratch;

/// PATH_MAX: a path the kernel accepts is shorter.
const PATH_BYTES: usize = 4096;
/// NAME_MAX: glibc refuses longer names (and copies them wrongly).
const MOST_NAME_BYTES: usize = 255;

/// The buffer candidate paths are built in.
static PATH_BUFFER: Scratch<PATH_BYTES> = Scratch::new();

/// In a forked child: a buffer another thread held at fork time is free.
pub fn release_after_fork() {
    PATH_BUFFER.release_after_fork();
}

/// The target `execvp` runs for `file`: searched in `search_path` (the
/// `PATH` value, or glibc's default) when `file` has no slash.
/// `as_we_resolve`: the `exec`s resolve paths as we do now — relative ones
/// in our working directory, magic links (`/proc/self/fd/N`,
/// `/proc/self/cwd`, `/dev/stdin`) through our descriptors. Not so for a
/// spawn whose file actions may change either first: relative paths are
/// then "could not tell", and so is any path through a magic link.
///
/// # Safety
/// `file` must be null or a NUL-terminated string.
pub unsafe fn inspect_in_path(
    file: *const u8,
    search_path: &[u8],
    as_we_resolve: bool,
) -> ExecTarget {
    if file.is_null() {
        return ExecTarget::UNKNOWN;
    }
    let name = core::ffi::CStr::from_ptr(file as *const core::ffi::c_char).to_bytes();
    if name.is_empty() {
        return ExecTarget::NOTHING_RUNS; // ENOENT
    }
    if name.contains(&b'/') {
        return exec_target::inspect_at(libc::AT_FDCWD, file, 0, as_we_resolve);
    }
    // glibc's buffers are sized by PATH_MAX and NAME_MAX; past them its
    // search differs from the plain one followed here.
    if name.len() > MOST_NAME_BYTES || search_path.len() >= PATH_BYTES - 1 {
        return ExecTarget::UNKNOWN;
    }
    let Some(mut held) = PATH_BUFFER.try_take() else {
        return ExecTarget::UNKNOWN;
    };
    let out = held.bytes();
    for dir in search_path.split(|&b| b == b':') {
        // An empty entry is the name itself: the working directory.
        let len = if dir.is_empty() {
            name.len()
        } else {
            dir.len() + 1 + name.len()
        };
        if len + 1 > out.len() || (!as_we_resolve && dir.first() != Some(&b'/')) {
            return ExecTarget::UNKNOWN;
        }
        if !dir.is_empty() {
            out[..dir.len()].copy_from_slice(dir);
            out[dir.len()] = b'/';
        }
        out[len - name.len()..len].copy_from_slice(name);
        out[len] = 0;
        let Ok(candidate) = sys::c_path(&out[..=len]) else {
            return ExecTarget::UNKNOWN; // never: the NUL was just written
        };
        match exec_target::outcome_at(libc::AT_FDCWD, candidate, 0, as_we_resolve) {
            Outcome::Fails(Failure::Missing | Failure::Denied) => continue,
            Outcome::Fails(Failure::Other) => return ExecTarget::NOTHING_RUNS,
            Outcome::Runs(target) => return target,
            Outcome::Unknown => return ExecTarget::UNKNOWN,
        }
    }
    ExecTarget::NOTHING_RUNS
}
