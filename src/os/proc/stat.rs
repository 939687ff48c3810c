//! `/proc/self/stat` and a thread's `stat` (parsed by the contract's
//! `Stat`): when the process and its threads started, the main thread's
//! state and the thread count.

use crate::os::sys;
use ksmauto_contract::proc::Stat;

/// When this process started, in clock ticks after boot: `starttime` of
/// `/proc/self/stat` (the process's, kept while any of its threads runs).
pub fn process_start_time() -> Option<u64> {
    let mut buf = [0u8; 512];
    let n = sys::read_file(b"/proc/self/stat\0", &mut buf).ok()?;
    Stat::parse(&buf[..n])?.start_time()
}

/// The state letter of this process's main thread and the process's
/// thread count (`/proc/self/stat`). A main thread that ended while others
/// run is a zombie (`Z`) and still counted.
pub fn main_state_and_threads() -> Option<(u8, u64)> {
    let mut buf = [0u8; 512];
    let n = sys::read_file(b"/proc/self/stat\0", &mut buf).ok()?;
    let stat = Stat::parse(&buf[..n])?;
    Some((stat.state()?, stat.num_threads()?))
}

/// When thread `tid` of this process started (field 22 of its `stat`, in
/// clock ticks after boot; `None` for the calling thread: its own), or
/// `None` if it cannot be read (gone, no `/proc`) or `/proc` does not
/// name threads as this process's pid namespace does (a `/proc` of
/// another namespace: `/proc/self/task/TID` would be another thread or
/// none). Reads through a buffer on the stack (512 bytes).
pub fn thread_start_time(tid: Option<i32>) -> Option<u64> {
    if !proc_names_threads_as_we_do() {
        return None;
    }
    let mut path = [0u8; 48];
    let mut w = crate::fmt::BufWriter::new(&mut path);
    match tid {
        Some(tid) => w.str("/proc/self/task/").u64(tid as u64).str("/stat\0"),
        None => w.str("/proc/thread-self/stat\0"),
    };
    let len = w.len();
    let mut buf = [0u8; 512];
    let n = sys::read_file(&path[..len], &mut buf).ok()?;
    Stat::parse(&buf[..n])?.start_time()
}

/// Whether `/proc` is of this process's pid namespace: `/proc/thread-self`
/// links to `PID/task/TID` with the ids `getpid` and `gettid` give.
fn proc_names_threads_as_we_do() -> bool {
    let mut link = [0u8; 48];
    let Ok(n) = sys::readlink(c"/proc/thread-self", &mut link) else {
        return false;
    };
    let mut expected = [0u8; 48];
    let mut w = crate::fmt::BufWriter::new(&mut expected);
    w.u64(sys::getpid() as u64)
        .str("/task/")
        .u64(sys::gettid() as u64);
    let len = w.len();
    link[..n] == expected[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line =
            b"4242 (a) b (c) Z 1 4242 4242 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 3 0 98765 1000 10";
        let stat = Stat::parse(line).unwrap();
        assert_eq!(stat.state(), Some(b'Z'));
        assert_eq!(stat.num_threads(), Some(3));
        assert_eq!(stat.start_time(), Some(98765));
        let (state, threads) = main_state_and_threads().unwrap();
        assert!(state == b'R' || state == b'S', "{}", state as char);
        assert!(threads >= 1);
    }

    #[test]
    fn a_threads_start_time_reads_the_same_from_itself_and_by_its_id() {
        let (own, by_id) = std::thread::spawn(|| {
            (
                thread_start_time(None),
                thread_start_time(Some(sys::gettid())),
            )
        })
        .join()
        .unwrap();
        assert!(own.is_some_and(|t| t > 0));
        assert_eq!(own, by_id);
        assert_eq!(thread_start_time(Some(i32::MAX)), None);
    }
}
