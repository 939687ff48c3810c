//! What an `exec` will run, as the kernel will run it (`fs/exec.c`,
//! `binfmt_script`, `binfmt_elf`): whether it fails, and if not, whether
//! the program changes privilege (set-user-ID, set-group-ID, file
//! capabilities, or our own real and effective IDs differing) and whether
//! the dynamic loader that runs it is the one running this process — so
//! one that loads preload libraries built like this one — and searches
//! library names the default way. A `#!` script is judged by its
//! interpreter, up to the kernel's depth.
//!
//! Reports facts, including "could not tell": what to do about an unknown is
//! the caller's decision. "It fails" is reported only for failures the
//! kernel surely returns (the file or an interpreter missing, not a regular
//! file, not executable for us, a symbolic link where none is followed),
//! since the caller then leaves merge-any alone. A failure the kernel might
//! turn into something else (`ENOEXEC`, which a `binfmt_misc` handler may
//! claim, or after which `execvp` runs `/bin/sh`) is "could not tell".
//!
//! Looks only at inodes and headers: a file is opened through `O_PATH` and
//! `fstat`ed first, and read (non-blocking) only if it is a regular file —
//! a FIFO or device is never opened for reading, which could block or act.
//! Small reads into stack buffers of a few hundred bytes (an `exec` may be
//! called from a signal handler). Never allocates, never touches `errno`.

use super::sys::{self, FileStatus};
use core::ffi::CStr;
use super::{binfmt_misc, library_search, loader};
use ksmauto_contract::elf::{self, Class, Header, ProgramHeader, ProgramHeaderTable, Segments};

/// A fact about the target, or that it could not be found out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fact {
    Yes,
    No,
    Unknown,
}

impl Fact {
    fn from(b: bool) -> Fact {
        if b {
            Fact::Yes
        } else {
            Fact::No
        }
    }
}

/// What the kernel will run for an `exec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecTarget {
    /// Nothing runs: the `exec` surely fails.
    pub nothing_runs: bool,
    /// Running it changes privilege (`AT_SECURE` in the new program).
    pub privileged: Fact,
    /// It loads preload libraries like this one: a dynamic ELF program of
    /// our class and machine whose program interpreter is the very loader
    /// running this process.
    pub loads_our_preloads: Fact,
    /// Its loader, asked for this library's file name bare, surely reaches
    /// `/etc/ld.so.cache` with it (the environment aside): no
    /// `DF_1_NODEFLIB`, and the program's `DT_RPATH`/`DT_RUNPATH`
    /// directories, searched first, hold no file of that name
    /// (`os::library_search`).
    pub default_library_search: Fact,
}

impl ExecTarget {
    /// Nothing could be found out.
    pub const UNKNOWN: ExecTarget = ExecTarget {
        nothing_runs: false,
        privileged: Fact::Unknown,
        loads_our_preloads: Fact::Unknown,
        default_library_search: Fact::Unknown,
    };

    pub const NOTHING_RUNS: ExecTarget = ExecTarget {
        nothing_runs: true,
        privileged: Fact::No,
        loads_our_preloads: Fact::No,
        default_library_search: Fact::No,
    };
}

/// Why an `exec` surely fails, in the classes `execvp` tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// `ENOENT`, `ENOTDIR`: the search goes on.
    Missing,
    /// `EACCES`: the search goes on.
    Denied,
    /// Anything else (`ELOOP`, `ENAMETOOLONG`): the search stops there.
    Other,
}

/// What one `exec` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Runs(ExecTarget),
    Fails(Failure),
    Unknown,
}

#[cfg(target_arch = "x86_64")]
const OUR_MACHINE: u16 = elf::EM_X86_64;
#[cfg(target_arch = "aarch64")]
const OUR_MACHINE: u16 = elf::EM_AARCH64;
/// The longest program header read here (`Elf64_Phdr`).
const PHDR_BYTES: usize = 56;
/// `exec_binprm` runs the handlers of at most six files: a program and
/// five `#!` interpreters; a sixth interpreter is `ELOOP`.
const MAX_REWRITES: usize = 5;
/// The part of a file the kernel reads to tell its format (BINPRM_BUF_SIZE).
const HEAD_BYTES: usize = binfmt_misc::HEAD_BYTES;
/// The longest program interpreter path followed here (the kernel takes up
/// to PATH_MAX; a longer one counts as "could not tell").
const INTERPRETER_BYTES: usize = 256;

/// The target at `path` (NUL-terminated), relative to `dirfd`
/// (`AT_FDCWD` for the working directory); `flags` as for `execveat`
/// (`AT_EMPTY_PATH` with an empty path means `dirfd` itself).
/// `as_we_resolve`: the `exec` resolves paths as we do now — relative ones
/// in our working directory, magic links (`/proc/self/fd/N`,
/// `/proc/self/cwd`, `/dev/stdin`) through our descriptors. Not so for a
/// spawn whose file actions may change either first: relative paths are
/// then "could not tell", and so is any path through a magic link.
///
/// # Safety
/// `path` must be null or a NUL-terminated string.
pub unsafe fn inspect_at(
    dirfd: i32,
    path: *const u8,
    flags: i32,
    as_we_resolve: bool,
) -> ExecTarget {
    if path.is_null() {
        return ExecTarget::UNKNOWN;
    }
    // SAFETY: not null, and NUL-terminated as the caller promises.
    let path = unsafe { CStr::from_ptr(path as *const core::ffi::c_char) };
    match outcome_at(dirfd, path, flags, as_we_resolve) {
        Outcome::Runs(target) => target,
        Outcome::Fails(_) => ExecTarget::NOTHING_RUNS,
        Outcome::Unknown => ExecTarget::UNKNOWN,
    }
}

/// What `execveat(dirfd, path, …, flags)` does; see [`inspect_at`].
pub(super) fn outcome_at(dirfd: i32, path: &CStr, flags: i32, as_we_resolve: bool) -> Outcome {
    // Other flags: EINVAL, or newer ones (AT_EXECVE_CHECK runs nothing).
    if flags & !(libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW) != 0 {
        return Outcome::Unknown;
    }
    if !as_we_resolve && dirfd == libc::AT_FDCWD && path.to_bytes().first() != Some(&b'/') {
        return Outcome::Unknown;
    }
    let mut head = [0u8; HEAD_BYTES];
    let mut privileged = sys::ids_differ();
    let (mut at, mut name, mut lookup) = (dirfd, path, flags);
    for depth in 0..=MAX_REWRITES {
        let opened = if depth == 0 && name.is_empty() && lookup & libc::AT_EMPTY_PATH != 0 {
            check_executable(at).map(|()| None)
        } else {
            open_for_exec(at, name, lookup, as_we_resolve).map(Some)
        };
        let file = match opened {
            Ok(file) => file,
            Err(outcome) => return outcome,
        };
        // The name `exec` was given, for binfmt_misc's extension rules
        // (taken now: the next read overwrites an interpreter's name).
        let ext = binfmt_misc::Extension::of(name.to_bytes());
        let next = read_file(
            file.unwrap_or(at),
            &mut head,
            &mut privileged,
            as_we_resolve,
            &ext,
        );
        if let Some(fd) = file {
            sys::close(fd);
        }
        match next {
            Next::Done(outcome) => return outcome,
            Next::Interpreter if !as_we_resolve && head[0] != b'/' => return Outcome::Unknown,
            // The last handler opens the interpreter (its errors first),
            // then the kernel gives up: ELOOP.
            Next::Interpreter if depth == MAX_REWRITES => {
                return match open_for_exec(libc::AT_FDCWD, interpreter(&head), 0, as_we_resolve) {
                    Ok(fd) => {
                        sys::close(fd);
                        Outcome::Fails(Failure::Other)
                    }
                    Err(outcome) => outcome,
                }
            }
            Next::Interpreter => (at, name, lookup) = (libc::AT_FDCWD, interpreter(&head), 0),
        }
    }
    Outcome::Unknown
}

/// The interpreter's path that [`interpreter_of`] left NUL-terminated at
/// the start of `head` (empty if there were none: a name that finds
/// nothing, never a read past the buffer).
fn interpreter(head: &[u8; HEAD_BYTES]) -> &CStr {
    CStr::from_bytes_until_nul(head).unwrap_or(c"")
}

/// The kernel's open of a file to run (`do_open_execat`): the path found,
/// a regular file, executable for us. The `O_PATH` descriptor, or what the
/// `exec` does instead. Unless `as_we_resolve`, through no magic link: one
/// (or a loop of links, which `openat2` cannot tell from it) is "could not
/// tell", and so is a kernel without `openat2`.
fn open_for_exec(at: i32, name: &CStr, flags: i32, as_we_resolve: bool) -> Result<i32, Outcome> {
    let nofollow = if flags & libc::AT_SYMLINK_NOFOLLOW != 0 {
        libc::O_NOFOLLOW
    } else {
        0
    };
    let opened = if as_we_resolve {
        sys::open_at(at, name, libc::O_PATH | nofollow, 0)
    } else {
        sys::open_at_without_magic_links(at, name, libc::O_PATH | nofollow)
    };
    let fd = match opened {
        Ok(fd) => fd,
        Err(libc::ELOOP) if !as_we_resolve => return Err(Outcome::Unknown),
        Err(libc::ENOENT | libc::ENOTDIR) => return Err(Outcome::Fails(Failure::Missing)),
        Err(libc::EACCES) => return Err(Outcome::Fails(Failure::Denied)),
        Err(libc::ELOOP | libc::ENAMETOOLONG) => return Err(Outcome::Fails(Failure::Other)),
        Err(_) => return Err(Outcome::Unknown),
    };
    match check_executable(fd) {
        Ok(()) => Ok(fd),
        Err(outcome) => {
            sys::close(fd);
            Err(outcome)
        }
    }
}

/// The checks `exec` makes of the file open as `fd`.
fn check_executable(fd: i32) -> Result<(), Outcome> {
    let Ok(st) = sys::fstat(fd) else {
        return Err(Outcome::Unknown);
    };
    if st.is_symlink() {
        // Reached only with O_NOFOLLOW: the exec's lookup says ELOOP.
        return Err(Outcome::Fails(Failure::Other));
    }
    if !st.is_regular() {
        return Err(Outcome::Fails(Failure::Denied));
    }
    match sys::exec_permitted(fd) {
        Ok(()) => Ok(()),
        Err(libc::EACCES) => Err(Outcome::Fails(Failure::Denied)),
        Err(_) => Err(Outcome::Unknown),
    }
}

enum Next {
    Done(Outcome),
    /// A script: its interpreter's path is at the start of the head buffer.
    Interpreter,
}

/// `/proc/self/fd/N`, NUL-terminated: the file behind descriptor `fd`.
fn proc_fd_path(fd: i32, out: &mut [u8; 32]) -> Option<&CStr> {
    let mut w = crate::fmt::BufWriter::new(out);
    w.str("/proc/self/fd/").u64(fd as u64).bytes(&[0]);
    w.into_c_str()
}

/// One file of the chain, open as `fd` (`O_PATH` or any descriptor; a
/// regular file `exec` may run) and given to `exec` under a name with
/// extension `ext`: notes whether it changes privilege, reads its head and
/// tells what runs. A `binfmt_misc` rule that claims it (tried before any
/// other format) runs something else: "could not tell".
fn read_file(
    fd: i32,
    head: &mut [u8; HEAD_BYTES],
    privileged: &mut bool,
    as_we_resolve: bool,
    ext: &binfmt_misc::Extension,
) -> Next {
    let Ok(st) = sys::fstat(fd) else {
        return Next::Done(Outcome::Unknown);
    };
    let mut proc_path = [0u8; 32];
    let Some(proc_path) = proc_fd_path(fd, &mut proc_path) else {
        return Next::Done(Outcome::Unknown);
    };
    // Privilege needs no read permission (exec needs none either: a
    // set-user-ID program may be execute-only).
    if exec_changes_ids(&st, fd) || sys::has_file_capabilities(proc_path) {
        *privileged = true;
    }
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
    let Ok(readable) = sys::open_at(libc::AT_FDCWD, proc_path, flags, 0) else {
        return Next::Done(Outcome::Unknown);
    };
    let next = match sys::pread(readable, head, 0) {
        Ok(n) if is_script(head, n) || is_elf(head, n) => {
            // The kernel's buffer holds zeros past the end of a short file.
            head[n..].fill(0);
            if binfmt_misc::claims(head, ext) != Fact::No {
                Next::Done(Outcome::Unknown)
            } else if is_script(head, n) {
                match interpreter_of(head, n) {
                    Some(_) => Next::Interpreter,
                    None => Next::Done(Outcome::Unknown),
                }
            } else {
                Next::Done(elf_program(readable, head, n, *privileged, as_we_resolve))
            }
        }
        // ENOEXEC, or what a binfmt_misc rule makes of it.
        _ => Next::Done(Outcome::Unknown),
    };
    sys::close(readable);
    next
}

/// Whether an `exec` of the file `st` (open as `fd`) starts the program
/// with an effective user or group ID apart from our real one, which is
/// what makes the kernel start it in secure mode (`AT_SECURE`;
/// `cap_bprm_creds_from_file` compares the new effective IDs with the old
/// real ones): the set-user-ID bit gives the file's owner, the
/// set-group-ID bit (with group execute) its group, unless the mount is
/// `nosuid` or `no_new_privs` is set (`bprm_fill_uid`); without them, our
/// own effective IDs stay. Root running a set-user-ID-root program changes
/// nothing. (File capabilities are judged apart, and always count.)
fn exec_changes_ids(st: &FileStatus, fd: i32) -> bool {
    let Ok(ids) = sys::ids() else {
        return true;
    };
    let (set_uid, set_gid) = (st.is_set_user_id(), st.is_set_group_id());
    let honoured = (set_uid || set_gid) && !sys::exec_ignores_set_ids(fd);
    let uid = if honoured && set_uid {
        st.uid
    } else {
        ids.effective_uid
    };
    let gid = if honoured && set_gid {
        st.gid
    } else {
        ids.effective_gid
    };
    uid != ids.real_uid || gid != ids.real_gid
}

fn is_script(head: &[u8; HEAD_BYTES], n: usize) -> bool {
    n >= 2 && head[..2] == *b"#!"
}

fn is_elf(head: &[u8; HEAD_BYTES], n: usize) -> bool {
    n >= 4 && head[..4] == *b"\x7fELF"
}

/// The interpreter path of a `#!` file whose first `n` bytes are in `head`,
/// parsed as the kernel does (`load_script`), moved to the buffer's start
/// and NUL-terminated; its length. `None` where the kernel refuses the line
/// (`ENOEXEC`): no interpreter name, or one that may be cut off.
fn interpreter_of(head: &mut [u8; HEAD_BYTES], n: usize) -> Option<usize> {
    // The kernel's buffer holds zeros past the end of a short file.
    head[n.min(HEAD_BYTES)..].fill(0);
    let blank = |b: u8| b == b' ' || b == b'\t';
    let last = HEAD_BYTES - 1;
    let mut end = match head.iter().position(|&b| b == b'\n') {
        Some(newline) => newline,
        None => {
            // No newline: the name must end (blank or NUL) before the last
            // byte, or it may be cut off.
            let first = (2..last).find(|&i| !blank(head[i]))?;
            (first..last).find(|&i| blank(head[i]) || head[i] == 0)?;
            last
        }
    };
    while blank(head[end - 1]) {
        end -= 1;
    }
    let start = (2..end).find(|&i| !blank(head[i]))?;
    let stop = (start..end)
        .find(|&i| blank(head[i]) || head[i] == 0)
        .unwrap_or(end);
    let len = stop - start;
    // An empty name ("#!" then NUL): left to the kernel's own judgement.
    if len == 0 {
        return None;
    }
    head.copy_within(start..stop, 0);
    head[len] = 0;
    Some(len)
}

/// An ELF file whose head is in `head` (`n` bytes), open for reading as
/// `fd`: what `binfmt_elf` runs.
fn elf_program(
    fd: i32,
    head: &[u8; HEAD_BYTES],
    n: usize,
    privileged: bool,
    as_we_resolve: bool,
) -> Outcome {
    let runs = |loads_our_preloads, default_library_search| {
        Outcome::Runs(ExecTarget {
            nothing_runs: false,
            privileged: Fact::from(privileged),
            loads_our_preloads,
            default_library_search,
        })
    };
    if n < elf::HEADER_BYTES {
        return Outcome::Unknown;
    }
    // Another class or machine: run by another handler (a 32-bit program)
    // or not at all; this library never runs in it.
    let header = match Header::parse(&head[..n]) {
        Some(h) if h.class == Class::Elf64 && h.machine == OUR_MACHINE => h,
        _ => return runs(Fact::No, Fact::No),
    };
    let Some(table) = header.program_headers().filter(|_| header.is_program()) else {
        return Outcome::Unknown; // ENOEXEC
    };
    let Some(headers) = ProgramHeaders::read(fd, table) else {
        return Outcome::Unknown;
    };
    // No program interpreter (static, static-PIE, ld.so itself): nothing
    // reads LD_PRELOAD.
    let Some((offset, size)) = headers.segments.interpreter else {
        return runs(Fact::No, Fact::No);
    };
    let mut name = [0u8; INTERPRETER_BYTES];
    if !elf::interpreter_size_ok(size) || size > name.len() as u64 {
        return Outcome::Unknown;
    }
    let size = size as usize;
    if sys::pread(fd, &mut name[..size], offset).ok() != Some(size) {
        return Outcome::Unknown;
    }
    match elf::interpreter_path(&name[..size]) {
        Some(path) if as_we_resolve || path.first() == Some(&b'/') => {}
        _ => return Outcome::Unknown,
    }
    // As the kernel's open of it: up to the first NUL (the last byte is one).
    let Ok(name) = sys::c_path(&name[..size]) else {
        return Outcome::Unknown;
    };
    let interpreter = match open_for_exec(libc::AT_FDCWD, name, 0, as_we_resolve) {
        Ok(fd) => fd,
        Err(outcome) => return outcome,
    };
    let ours = sys::fstat(interpreter).is_ok_and(|st| loader::is_our_loader(&st));
    sys::close(interpreter);
    if !ours {
        return runs(Fact::No, Fact::No);
    }
    let default_search = match headers.segments.dynamic {
        Some(dynamic) => library_search::bare_name_reaches_cache(
            fd,
            dynamic,
            |address| headers.file_offset(fd, address),
            super::own_file_name(),
            as_we_resolve,
        ),
        None => Fact::Unknown,
    };
    runs(Fact::Yes, default_search)
}

/// The program headers `exec` acts on (the first `PT_INTERP` and the first
/// `PT_DYNAMIC`), and where the table is, for the loadable segments.
struct ProgramHeaders {
    segments: Segments,
    table: ProgramHeaderTable,
}

/// Entry `i` of `table` (64-bit), read from `fd`.
fn read_entry(fd: i32, table: &ProgramHeaderTable, i: u16) -> Option<ProgramHeader> {
    let mut entry = [0u8; PHDR_BYTES];
    let at = table.entry_offset(i)?;
    if sys::pread(fd, &mut entry, at).ok()? < entry.len() {
        return None;
    }
    ProgramHeader::parse(Class::Elf64, &entry)
}

impl ProgramHeaders {
    fn read(fd: i32, table: ProgramHeaderTable) -> Option<ProgramHeaders> {
        let mut segments = Segments::default();
        for i in 0..table.count {
            segments.note(&read_entry(fd, &table, i)?);
        }
        Some(ProgramHeaders { segments, table })
    }

    /// Where in the file the program's virtual `address` is: inside the
    /// file part of a `PT_LOAD` segment.
    fn file_offset(&self, fd: i32, address: u64) -> Option<u64> {
        for i in 0..self.table.count {
            let ph = read_entry(fd, &self.table, i)?;
            if ph.p_type == elf::PT_LOAD && address >= ph.vaddr && address - ph.vaddr < ph.filesz {
                return ph.offset.checked_add(address - ph.vaddr);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interp(line: &[u8]) -> Option<Vec<u8>> {
        let mut head = [0u8; HEAD_BYTES];
        let n = line.len().min(HEAD_BYTES);
        head[..n].copy_from_slice(&line[..n]);
        interpreter_of(&mut head, n).map(|len| head[..len].to_vec())
    }

    #[test]
    fn shebang_lines_give_the_interpreter_path_as_the_kernel_reads_it() {
        assert_eq!(interp(b"#!/bin/sh\necho"), Some(b"/bin/sh".to_vec()));
        assert_eq!(interp(b"#!/bin/sh"), Some(b"/bin/sh".to_vec()));
        assert_eq!(
            interp(b"#! /usr/bin/env python3\n"),
            Some(b"/usr/bin/env".to_vec())
        );
        assert_eq!(interp(b"#!\t/x -e\n"), Some(b"/x".to_vec()));
        assert_eq!(
            interp(b"#!relative/interp\n"),
            Some(b"relative/interp".to_vec())
        );
        assert_eq!(interp(b"#!\n"), None);
        assert_eq!(interp(b"#!   \n"), None);
        assert_eq!(interp(b"#!"), None);
    }

    #[test]
    fn a_shebang_line_without_newline_that_fills_the_head_is_refused() {
        // The kernel cannot tell whether the name goes on past its buffer.
        let mut line = b"#!/".to_vec();
        line.resize(HEAD_BYTES + 10, b'a');
        assert_eq!(interp(&line), None);
        // A name that ends (a blank) before the last byte is taken.
        let mut line = b"#!/bin/sh ".to_vec();
        line.resize(HEAD_BYTES + 10, b'a');
        assert_eq!(interp(&line), Some(b"/bin/sh".to_vec()));
        // A blank only in the very last byte does not count.
        let mut line = b"#!/".to_vec();
        line.resize(HEAD_BYTES - 1, b'a');
        line.push(b' ');
        assert_eq!(interp(&line), None);
    }
}
