//! `ksmauto status --textfile`: the Prometheus text written atomically for
//! node_exporter's textfile collector. Must never write through a link or
//! into a file it did not create: the temporary file's name is predictable
//! and its directory may be writable by others.

use crate::util::*;
use anyhow::Result;
use std::path::PathBuf;

/// Writes `text` to `path` atomically for node_exporter's textfile
/// collector: a temporary file in the same directory (not ending in `.prom`,
/// so the collector never reads it half-written), synced, then renamed over.
pub fn write_textfile(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| fail(2, format!("--textfile {}: not a file name", path.display())))?;
    let tmp = dir.join(temporary_name(name, std::process::id()));
    // Refused (a directory this user may not write) exits 4, as every
    // permission error does.
    let code = |e: &std::io::Error| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            EXIT_PERM
        } else {
            EXIT_RUNTIME
        }
    };
    let err = |what: &str, e: std::io::Error| {
        fail(code(&e), format!("cannot {what} {}: {e}", tmp.display()))
    };
    // The name is predictable and the directory may be writable by others:
    // the file is created new (O_EXCL: never through a planted link, never
    // into someone else's file); whatever stands there is unlinked first
    // (a link itself, not what it points to).
    let create = || {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
    };
    let result = (|| {
        let mut f = match create() {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(&tmp).map_err(|e| err("remove the stale", e))?;
                create()
            }
            other => other,
        }
        .map_err(|e| err("create", e))?;
        f.write_all(text.as_bytes()).map_err(|e| err("write", e))?;
        f.sync_all().map_err(|e| err("sync", e))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = f.set_permissions(std::fs::Permissions::from_mode(0o644));
        std::fs::rename(&tmp, path).map_err(|e| {
            fail(
                code(&e),
                format!("cannot rename {} to {}: {e}", tmp.display(), path.display()),
            )
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `.NAME.PID.tmp`, with NAME cut short where the whole would pass the
/// longest name a directory entry may have (NAME_MAX, 255 bytes): a file
/// name of 255 bytes is valid, its temporary name must be too. One process
/// writes one file, so the pid keeps it apart from another writer's.
fn temporary_name(name: &std::ffi::OsStr, pid: u32) -> std::ffi::OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    const NAME_MAX: usize = 255;
    let tail = format!(".{pid}.tmp");
    let keep = name.len().min(NAME_MAX - 1 - tail.len());
    let mut out = Vec::with_capacity(NAME_MAX);
    out.push(b'.');
    out.extend_from_slice(&name.as_bytes()[..keep]);
    out.extend_from_slice(tail.as_bytes());
    std::ffi::OsString::from_vec(out)
}

#[cfg(test)]
mod textfile_tests {
    use super::write_textfile;

    /// A link planted at the temporary file's (predictable) name never
    /// makes the write land in the link's target. Before the fix the
    /// temporary file was opened with `File::create`, which follows links:
    /// root's `status --textfile` in a world-writable directory overwrote
    /// the victim.
    #[test]
    fn a_link_planted_at_the_temporary_name_is_never_followed() {
        let dir = std::env::temp_dir().join(format!("ksmauto-textfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let out = dir.join("ksm.prom");
        let tmp = dir.join(format!(".ksm.prom.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_textfile(&out, "ksm_run 1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "ksm_run 1\n");
        assert!(!tmp.exists() && std::fs::symlink_metadata(&tmp).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
