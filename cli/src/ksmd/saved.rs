//! ksmd's tunables saved and put back: `ksmauto ksmd save|restore`, and
//! what a hold puts back when it ends. Writes nothing but the tunables of
//! [`TUNABLES`] (a saved file names nothing else under sysfs), and never
//! decides when to put them back (the caller does).

use super::{refusal, refused, value, write_raw, TUNABLES};
use crate::ksm::{read, require_ksm, sysfs};
use crate::util::*;
use anyhow::Result;
use std::fmt::Write as _;
use std::path::Path;

/// Tunables and their values, in [`TUNABLES`] order.
pub type Saved = Vec<(String, String)>;

/// Every tunable this kernel has, as it is now.
pub fn save() -> Result<Saved> {
    require_ksm()?;
    Ok(TUNABLES
        .iter()
        .filter_map(|t| value(t).map(|v| (t.to_string(), v)))
        .collect())
}

pub fn render_saved(saved: &Saved) -> String {
    let mut o = String::from(
        "# ksmd's tunables, saved by `ksmauto ksmd save`; put back with `ksmauto ksmd restore FILE`\n",
    );
    for (n, v) in saved {
        let _ = writeln!(o, "{n}={v}");
    }
    o
}

/// Reads a file of `name=value` lines (blank lines and `#` comments
/// allowed). Only names of [`TUNABLES`] are accepted: nothing else under
/// sysfs is ever written from a file.
pub fn parse_saved(file: &Path) -> Result<Saved> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::PermissionDenied {
            EXIT_PERM
        } else {
            EXIT_RUNTIME
        };
        fail(code, format!("cannot read {}: {e}", file.display()))
    })?;
    let mut saved = Saved::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| {
            fail(
                EXIT_RUNTIME,
                format!("{} line {}: {why}: {line}", file.display(), i + 1),
            )
        };
        let (n, v) = line.split_once('=').ok_or_else(|| bad("not name=value"))?;
        let (n, v) = (n.trim(), v.trim());
        if !TUNABLES.contains(&n) {
            return Err(bad("not a ksmd tunable"));
        }
        if v.is_empty() {
            return Err(bad("no value"));
        }
        saved.retain(|(name, _)| name != n);
        saved.push((n.to_string(), v.to_string()));
    }
    // Restoring nothing is no success: the file is not what it should be.
    if saved.is_empty() {
        return Err(fail(
            EXIT_RUNTIME,
            format!("no ksmd setting in {}", file.display()),
        ));
    }
    // The file's order does not matter: restore goes by TUNABLES.
    saved.sort_by_key(|(n, _)| TUNABLES.iter().position(|t| t == n));
    Ok(saved)
}

/// What [`restore`] did.
#[derive(Default, Debug)]
pub struct Restored {
    /// Written back, in the order written.
    pub put_back: Vec<(String, String)>,
    /// Could not be written back: name, saved value, value now, why.
    pub failed: Vec<(String, String, String, String)>,
    /// Not written: the advisor, saved on, sets `pages_to_scan` itself.
    pub left_to_advisor: bool,
    /// Saved, but this kernel has no such tunable (a file saved on a newer
    /// kernel): skipped.
    pub missing: Vec<String>,
}

impl Restored {
    /// "put back: a=1 b=2", "all ksmd settings were already as saved" or,
    /// when some could not be put back and none was, "nothing put back".
    pub fn summary(&self) -> String {
        if self.put_back.is_empty() && !self.failed.is_empty() {
            "nothing put back".into()
        } else if self.put_back.is_empty() {
            "all ksmd settings were already as saved".into()
        } else {
            let kv: Vec<String> = self
                .put_back
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            format!("put back: {}", kv.join(" "))
        }
    }

    pub fn failures(&self) -> String {
        let f: Vec<String> = self
            .failed
            .iter()
            .map(|(n, v, now, why)| format!("{n}={v} (now {now}): {why}"))
            .collect();
        format!("could not put back {}", f.join("; "))
    }
}

/// Puts every saved tunable back (see [`TUNABLES`] for the order); a second
/// pass retries what failed, since one value can depend on another. A
/// tunable this kernel lacks is skipped (sysfs would refuse to create it
/// with EACCES, which is no matter of permission). A refused write (not
/// root, read-only sysfs) ends it with exit code 4.
pub fn restore(saved: &Saved) -> Result<Restored> {
    require_ksm()?;
    let mut done = Restored::default();
    let get = |n: &str| {
        saved
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, v)| v.as_str())
    };
    // ksmd must stop: stop it before its pace changes.
    if let Some(run) = get("run") {
        if run != "1" && value("run").as_deref() == Some("1") {
            write_raw("run", run).map_err(|e| {
                if refused(&e) {
                    refusal(&e)
                } else {
                    fail(EXIT_RUNTIME, format!("cannot stop ksmd (run={run}): {e}"))
                }
            })?;
            done.put_back.push(("run".into(), run.into()));
        }
    }
    let advisor_on = get("advisor_mode").is_some_and(|m| m != "none");
    for pass in 0..2 {
        let mut failed = vec![];
        for (name, want) in saved {
            if name == "pages_to_scan" && advisor_on {
                done.left_to_advisor = true;
                continue;
            }
            if !sysfs().join(name).exists() {
                if pass == 0 {
                    done.missing.push(name.clone());
                }
                continue;
            }
            let now = value(name).unwrap_or_else(|| "missing".into());
            if &now == want {
                continue;
            }
            match write_raw(name, want) {
                Ok(()) => {
                    done.put_back.retain(|(n, _)| n != name);
                    done.put_back.push((name.clone(), want.clone()));
                }
                Err(e) if refused(&e) => return Err(refusal(&e)),
                Err(e) => {
                    let why = if e.raw_os_error() == Some(libc::EBUSY) {
                        format!(
                            "the kernel changes it only while no page is merged ({} pages shared now)",
                            read("pages_shared").unwrap_or_else(|| "?".into())
                        )
                    } else {
                        format!("the kernel refused it: {e}")
                    };
                    failed.push((name.clone(), want.clone(), now, why));
                }
            }
        }
        done.failed = failed;
        if done.failed.is_empty() || pass == 1 {
            break;
        }
    }
    Ok(done)
}
