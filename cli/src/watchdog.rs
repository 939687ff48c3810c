//! Ends `ksmauto run` on SIGHUP, SIGINT or SIGTERM when it is stuck in one
//! step of its work (a look at the tree, the writing of its summary): the
//! signals are caught to be forwarded to the command, so on their own they
//! would never end a `run` blocked in a system call (`SA_RESTART`), and its
//! temporary directory would stay.
//!
//! A thread watches the steps the main thread marks ([`Step`]). Once such
//! a signal has come, a step that has not ended [`GRACE`] after the signal
//! (or after its own start) ends `run`: its directory removed, it dies of
//! the signal as any program would. Between steps (`run` waiting for the
//! command the signal was forwarded to) nothing happens: the command's end
//! ends `run`, with its summary. This module must never decide anything
//! else about `run`, and prints nothing (the output may be what is stuck).

use crate::launch;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a step may go on after an ending signal: far longer than a
/// look takes, even on a loaded machine.
pub const GRACE: Duration = Duration::from_secs(3);

/// Steps begun and ended: odd while one runs.
static STEPS: AtomicU64 = AtomicU64::new(0);

/// One step of `run`'s work, from [`Step::begin`] until dropped.
pub struct Step(());

impl Step {
    pub fn begin() -> Step {
        STEPS.fetch_add(1, Ordering::SeqCst);
        Step(())
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        STEPS.fetch_add(1, Ordering::SeqCst);
    }
}

/// Starts the watching thread; `cleanup` is removed when it ends `run`.
pub fn start(cleanup: PathBuf) {
    let _ = std::thread::Builder::new()
        .name("ksmauto-watchdog".into())
        .stack_size(256 << 10)
        .spawn(move || watch(&cleanup));
}

fn watch(cleanup: &Path) {
    // The step seen running since the signal, and since when.
    let mut running: Option<(u64, Instant)> = None;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let Some(sig) = launch::ending_signal() else {
            continue;
        };
        let step = STEPS.load(Ordering::SeqCst);
        if step.is_multiple_of(2) {
            running = None;
            continue;
        }
        match running {
            Some((s, since)) if s == step => {
                if since.elapsed() >= GRACE {
                    end(cleanup, sig);
                }
            }
            _ => running = Some((step, Instant::now())),
        }
    }
}

/// Removes `cleanup` and dies of `sig` (its default action, unblocked).
fn end(cleanup: &Path, sig: libc::c_int) -> ! {
    let _ = std::fs::remove_dir_all(cleanup);
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
        libc::_exit(128 + sig)
    }
}
