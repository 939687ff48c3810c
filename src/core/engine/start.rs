//! Start-up: reads the configuration, picks the engine and applies it to
//! the process, once, before any hook does work.

use super::allocator::{self, sync_realloc_floor};
use super::catch_up::ThreadSupport;
use super::stacks::unmerge_main_stack;
use super::{Settings, SETTINGS};
use crate::core::catchup;
use crate::core::catchup_thread;
use crate::core::config::{BadValue, Config, Mode, Register, StatsDestination};
use crate::core::exec_guard;
use crate::core::identity;
use crate::core::paying;
use crate::fmt::BufWriter;
use crate::os::{self, ksm, sys};

/// Reads the configuration, picks the engine and applies it to the process.
/// Must run exactly once, before any other function here does work.
/// `allocator_is_glibc`: the allocator serving the program is proven to be
/// glibc's own (`next::resolve_all`); only then are its large blocks news
/// for the catch-up (no block is ever looked into). `stand_aside`: the
/// program's calls do not reach this copy's hooks (`next::stands_aside`):
/// another copy of this library comes first in load order, which does the
/// work (or the process would be advised and reported on twice), or this
/// copy was `dlopen`ed after libc, where it could neither see a secret nor
/// guard an `exec`. It stays `off` and says nothing. `threads`: whether
/// and how the library may have its catch-up thread here.
pub fn start(allocator_is_glibc: bool, stand_aside: bool, threads: ThreadSupport) {
    identity::adopt_at_start();
    // Under secure execution the environment belongs to whoever started a
    // privileged program: no variable of it may steer us, no file is
    // written, and the process's memory is left alone (`off`).
    let secure_execution = os::secure_execution();
    // Standing aside, this copy touches nothing of the process: `off`
    // elsewhere switches merge-any off, which here would undo (and unmerge)
    // what the working copy, or the program itself, set — the working copy
    // may have started first, from a constructor's malloc, or this copy may
    // be a later dlopen.
    let standing_aside = stand_aside && !secure_execution;
    let config = if secure_execution {
        Config::SECURE_EXECUTION
    } else if standing_aside {
        Config::STANDING_ASIDE
    } else {
        Config::from_lookup(os::getenv, print_bad_value)
    };
    // Only the process the user started reports unasked: whether its parent
    // still runs the program it ran now is asked at exit (see
    // `identity::starter`).
    if !config.stats_requested && config.stats != StatsDestination::Off {
        identity::note_parent_image();
    }
    let page_size = os::page_size();
    let (active, fallback_errno) = if standing_aside {
        (Mode::Off, None)
    } else {
        exec_guard::start();
        choose_engine(config.mode)
    };
    // SAFETY: the start-up gate runs this once, before any reader exists (hooks
    // read the settings only once `ready`).
    unsafe {
        *SETTINGS.0.get() = Settings {
            config,
            stderr_at_start: sys::fstat(2).ok(),
            active,
            fallback_errno,
            page_size,
        };
    }
    let catching_up = active == Mode::Advise && config.scan_interval_ms > 0;
    // Deciding what pays needs the thread: in `advise` mode the catch-up's
    // (which a zero interval turns off), in `process` mode its own.
    let thread_allowed = active == Mode::Process || catching_up;
    let deciding_in_process_mode = config.register == Register::Paying
        && thread_allowed
        && paying::enable(active == Mode::Process, config.sightings)
        && active == Mode::Process;
    // Over glibc's malloc, the malloc family watches for memory no hook
    // sees arrive (blocks glibc maps with its hidden `mmap`, the brk heap
    // it grows with its own `sbrk`): news for the catch-up, which must
    // advise it, and in `process` mode (where merge-any registers it) for
    // the decisions about what pays, which must judge it.
    if allocator_is_glibc && (catching_up || deciding_in_process_mode) {
        allocator::watch_glibc_blocks();
    }
    sync_realloc_floor();
    if active == Mode::Process && config.exclude.stack {
        unmerge_main_stack();
    }
    if catching_up {
        catchup::enable(config.scan_interval_ms);
        catchup_thread::enable(threads.spawn, threads.glibc_threads, allocator_is_glibc);
    }
    if deciding_in_process_mode {
        catchup_thread::enable(threads.spawn, threads.glibc_threads, allocator_is_glibc);
    }
}

fn choose_engine(requested: Mode) -> (Mode, Option<i32>) {
    match requested {
        Mode::Auto | Mode::Process => match ksm::merge_any(true) {
            Ok(_) => (Mode::Process, None),
            Err(e) => {
                if requested == Mode::Process {
                    warn(b"KSMAUTO_MODE=process: the kernel refused PR_SET_MEMORY_MERGE (needs Linux 6.4+ with KSM): ", e, b"; using advise");
                }
                (Mode::Advise, Some(e))
            }
        },
        Mode::Advise | Mode::Off => {
            // A parent in `process` mode passes merge-any down through fork
            // and exec; this process asked for something else.
            if ksm::merge_any_is_on() {
                let _ = ksm::merge_any(false);
            }
            (requested, None)
        }
    }
}

fn warn(before: &[u8], errno: i32, after: &[u8]) {
    let mut buf = [0u8; 256];
    let mut w = BufWriter::new(&mut buf);
    w.str("ksmauto: ")
        .bytes(before)
        .str(sys::errno_name(errno))
        .bytes(after)
        .str("\n");
    let _ = sys::write_all_no_sigpipe(2, w.as_bytes());
}

fn print_bad_value(bad: BadValue) {
    let mut buf = [0u8; 512];
    let mut w = BufWriter::new(&mut buf);
    w.str("ksmauto: ignoring ")
        .str(bad.variable)
        .str("=")
        .printable(&bad.value[..bad.value.len().min(200)]);
    w.str(": expected ")
        .str(bad.expected)
        .str("; using the default (")
        .str(bad.default)
        .str(")\n");
    let _ = sys::write_all_no_sigpipe(2, w.as_bytes());
}
