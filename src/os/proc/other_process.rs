//! What the exit report asks of another process (its parent): whether it
//! maps a file, whether it was started with a preload, which program file
//! it runs.

use super::{for_each_record, read_lines, LineBuffer, MapsLine};
use crate::os::sys;

/// Whether process `pid` has a file named `file_name` (a last path
/// component) mapped: read from `/proc/PID/maps` through `buffer`. `None`
/// when it cannot be read (gone, another user's) or the name is empty.
pub fn process_maps_file(pid: i32, file_name: &[u8], buffer: &LineBuffer) -> Option<bool> {
    if file_name.is_empty() || pid <= 0 {
        return None;
    }
    let mut path = [0u8; 40];
    let mut w = crate::fmt::BufWriter::new(&mut path);
    w.str("/proc/").u64(pid as u64).str("/maps\0");
    let len = w.len();
    let mut found = false;
    let mut lines = 0;
    read_lines(&path[..len], buffer, |line| {
        lines += 1;
        if let Some(vma) = MapsLine::parse(line) {
            if vma.name.rsplit(|&b| b == b'/').next() == Some(file_name) {
                found = true;
            }
        }
    })
    .ok()?;
    // A process without memory (exiting, a zombie) shows no lines.
    (lines > 0).then_some(found)
}

/// Whether process `pid` was started to run a file named `file_name` (a
/// last path component) as a preload: an `LD_PRELOAD` entry of the
/// environment its program was started with (`/proc/PID/environ`: what
/// its last `exec` was given; later changes do not show) names one, split
/// as the loader splits it (colons and spaces). Read through `buffer`;
/// `None` when it cannot be read (gone, another user's) or the name is
/// empty.
pub fn process_preloads(pid: i32, file_name: &[u8], buffer: &LineBuffer) -> Option<bool> {
    if file_name.is_empty() || pid <= 0 {
        return None;
    }
    let mut path = [0u8; 40];
    let mut w = crate::fmt::BufWriter::new(&mut path);
    w.str("/proc/").u64(pid as u64).str("/environ\0");
    let len = w.len();
    let mut held = buffer.try_take()?;
    let mut found = false;
    let read = for_each_record(&path[..len], 0, held.bytes(), |entry| {
        if let Some(list) = entry.strip_prefix(b"LD_PRELOAD=") {
            found |= names_file(list, file_name);
        }
    });
    // An environment may hold secrets: none stays behind in the buffer.
    held.bytes().fill(0);
    read.ok()?;
    Some(found)
}

/// Whether a preload list (entries split on colons and spaces) has an entry
/// whose last path component is `file_name`.
fn names_file(list: &[u8], file_name: &[u8]) -> bool {
    list.split(|&b| b == b':' || b == b' ')
        .any(|entry| entry.rsplit(|&b| b == b'/').next() == Some(file_name))
}

/// The program file process `pid` runs (`/proc/PID/exe`, followed: one
/// `stat`, no read). An `exec` changes it (unless the process runs the same
/// file again). `None` when it cannot be asked: the process is gone or
/// exiting (no memory), or another user's.
pub fn process_image(pid: i32) -> Option<sys::FileStatus> {
    if pid <= 0 {
        return None;
    }
    let mut path = [0u8; 40];
    let mut w = crate::fmt::BufWriter::new(&mut path);
    w.str("/proc/").u64(pid as u64).str("/exe\0");
    sys::stat_at(libc::AT_FDCWD, sys::c_path(&path).ok()?, 0).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preload_list_names_a_file_by_its_last_component() {
        assert!(names_file(b"/usr/lib/libksmauto.so", b"libksmauto.so"));
        assert!(names_file(b"/a/x.so:/b/libksmauto.so", b"libksmauto.so"));
        assert!(names_file(b"x.so libksmauto.so", b"libksmauto.so"));
        assert!(!names_file(b"/a/libksmauto.so.1", b"libksmauto.so"));
        assert!(!names_file(b"", b"libksmauto.so"));
    }

    #[test]
    fn a_process_started_with_a_preload_is_seen_from_outside() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(
                "LD_PRELOAD",
                "/nonexistent/a.so:/nonexistent/libksmauto-unit.so",
            )
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let buffer = Box::new(LineBuffer::new());
        // The environment is the new program's once its exec is done.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut seen = None;
        while std::time::Instant::now() < deadline {
            seen = process_preloads(pid, b"libksmauto-unit.so", &buffer);
            if seen == Some(true) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let other = process_preloads(pid, b"libksmauto.so", &buffer);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(seen, Some(true));
        assert_eq!(other, Some(false));
        assert_eq!(process_preloads(pid, b"", &buffer), None);
    }
}
