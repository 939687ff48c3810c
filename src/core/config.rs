//! Configuration from `KSMAUTO_*` environment variables.
//!
//! Pure parsing: the caller supplies the variable lookup and a sink for
//! warnings, so this module is unit-tested without touching the real
//! environment. Never allocates (the stats path is kept in a fixed buffer).
//! A bad value never fails anything: it yields one warning naming the variable
//! and its accepted form, and that one setting keeps its default.

use ksmauto_contract::env;
/// Which engine makes memory mergeable (the shared vocabulary: its names are
/// the CLI's and the report's too).
pub use ksmauto_contract::Mode;

/// Classes of memory that are never made mergeable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exclusions {
    /// Thread and process stacks (`MAP_STACK`/`MAP_GROWSDOWN` mappings, the
    /// main `[stack]`, threads created with `pthread_create`).
    pub stack: bool,
    /// Executable anonymous memory (JIT code).
    pub exec: bool,
    /// Memory the program marks as secret: ranges it locks with `mlock` /
    /// `mlock2` or marks `MADV_DONTDUMP` / `MADV_WIPEONFORK` (OpenSSL's
    /// secure heap, libsodium's `sodium_malloc`), before or after the library
    /// saw it; `mlockall` stops merging in the whole process. KSM is a side
    /// channel, so such memory is never mergeable, in every engine.
    pub secret: bool,
}

/// What ksmd is given of the memory that qualifies (`KSMAUTO_REGISTER`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Register {
    /// Region by region, what pays for ksmd's attention: memory that shows
    /// no merging after ksmd's full scans is taken back out and probed again
    /// later (`core::paying`).
    Paying,
    /// Everything that qualifies, for as long as it is mapped.
    All,
}

impl Register {
    pub fn name(self) -> &'static str {
        match self {
            Register::Paying => "paying",
            Register::All => "all",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsFormat {
    Text,
    Json,
}

pub const STATS_PATH_MAX: usize = 512;

// The path is kept inline on purpose: the settings are parsed before any
// allocator can be used, and the whole value is copied once at start-up.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsDestination {
    Stderr,
    Off,
    /// A file; `%p` in it becomes the pid when the report is written.
    File {
        path: [u8; STATS_PATH_MAX],
        len: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    /// Mappings smaller than this are left alone.
    pub min_size: usize,
    pub exclude: Exclusions,
    pub stats: StatsDestination,
    /// The user set `KSMAUTO_STATS`: report even when this process advised
    /// nothing (otherwise the many short-lived children that inherit
    /// `LD_PRELOAD` stay silent).
    pub stats_requested: bool,
    pub stats_format: StatsFormat,
    /// `advise` engine: least time between two catch-up passes over the
    /// VMAs, in milliseconds (on the catch-up thread, while it exists); 0
    /// turns catch-up, and the thread, off.
    pub scan_interval_ms: u64,
    /// What ksmd is given (see [`Register`]).
    pub register: Register,
    /// With [`Register::Paying`], pieces are first judged on what their
    /// content shows (`core::paying::sightings`).
    pub sightings: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config::DEFAULT
    }
}

impl Config {
    pub const DEFAULT: Config = Config {
        mode: Mode::Auto,
        // One page: the article's single-page mappings must qualify.
        min_size: 4096,
        exclude: Exclusions {
            stack: true,
            exec: false,
            secret: true,
        },
        stats: StatsDestination::Stderr,
        stats_requested: false,
        stats_format: StatsFormat::Text,
        scan_interval_ms: 100,
        register: Register::All,
        // Off until the library's own cost is measured below what it
        // saves ksmd on every pool (docs/efficiency.md).
        sightings: false,
    };
}

impl Config {
    /// The program's calls do not reach this copy's hooks (another copy
    /// does the work, or this one was `dlopen`ed after libc): it forwards
    /// every call, changes nothing and says nothing.
    pub const STANDING_ASIDE: Config = Config::SECURE_EXECUTION;

    /// Secure execution (`AT_SECURE`): every `KSMAUTO_*` variable ignored,
    /// nothing merged, nothing written.
    pub const SECURE_EXECUTION: Config = Config {
        mode: Mode::Off,
        stats: StatsDestination::Off,
        stats_requested: false,
        scan_interval_ms: 0,
        ..Config::DEFAULT
    };
}

/// A rejected setting, for the caller to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadValue<'a> {
    pub variable: &'static str,
    pub value: &'a [u8],
    pub expected: &'static str,
    pub default: &'static str,
}

impl Config {
    // long: one short branch per KSMAUTO_* variable, each with its warning
    // text and default side by side; read top to bottom like the README.
    /// Builds the configuration from `lookup` (variable name → raw value).
    pub fn from_lookup<'a>(
        lookup: impl Fn(&str) -> Option<&'a [u8]>,
        mut warn: impl FnMut(BadValue<'a>),
    ) -> Config {
        let mut cfg = Config::default();
        let mut bad = |variable, value, expected, default| {
            warn(BadValue {
                variable,
                value,
                expected,
                default,
            })
        };

        if let Some(v) = lookup(env::MODE) {
            match Mode::from_name(v) {
                Some(m) => cfg.mode = m,
                None => bad(env::MODE, v, "one of auto, advise, process, off", "auto"),
            }
        }
        if let Some(v) = lookup(env::MIN_SIZE) {
            match parse_size(v) {
                Some(n) => cfg.min_size = n,
                None => bad(
                    env::MIN_SIZE,
                    v,
                    "a byte count, optionally with a K, M or G suffix (e.g. 4096, 64K, 2M)",
                    "4K",
                ),
            }
        }
        if let Some(v) = lookup(env::EXCLUDE) {
            match parse_exclusions(v) {
                Some(e) => cfg.exclude = e,
                None => bad(
                    env::EXCLUDE,
                    v,
                    "a comma-separated list of stack, exec, secret (or none)",
                    "stack,secret",
                ),
            }
        }
        if let Some(v) = lookup(env::STATS) {
            match parse_stats_destination(v) {
                Some(d) => {
                    cfg.stats = d;
                    cfg.stats_requested = true;
                }
                None => bad(
                    env::STATS,
                    v,
                    "stderr, off, or a file path (%p becomes the pid) of at most 511 bytes",
                    "stderr",
                ),
            }
        }
        if let Some(v) = lookup(env::STATS_FORMAT) {
            match v {
                b"text" => cfg.stats_format = StatsFormat::Text,
                b"json" => cfg.stats_format = StatsFormat::Json,
                _ => bad(env::STATS_FORMAT, v, "text or json", "text"),
            }
        }
        if let Some(v) = lookup(env::SCAN_INTERVAL) {
            match parse_duration_ms(v) {
                Some(ms) => cfg.scan_interval_ms = ms,
                None => bad(
                    env::SCAN_INTERVAL,
                    v,
                    "a duration in ms or s (e.g. 100ms, 2s; 0 turns catch-up off)",
                    "100ms",
                ),
            }
        }
        if let Some(v) = lookup(env::REGISTER) {
            match v {
                b"paying" => cfg.register = Register::Paying,
                b"all" => cfg.register = Register::All,
                _ => bad(env::REGISTER, v, "paying or all", "all"),
            }
        }
        if let Some(v) = lookup(env::SIGHTINGS) {
            match v {
                b"on" => cfg.sightings = true,
                b"off" => cfg.sightings = false,
                _ => bad(env::SIGHTINGS, v, "on or off", "off"),
            }
        }
        cfg
    }
}

/// `4096`, `64K`, `2M`, `1G` (also `64k`, `64KB`, `64KiB`): binary multiples.
pub fn parse_size(v: &[u8]) -> Option<usize> {
    let digits_end = v
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(v.len());
    if digits_end == 0 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in &v[..digits_end] {
        n = n.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    let shift = match &v[digits_end..] {
        b"" | b"B" | b"b" => 0,
        b"K" | b"k" | b"KB" | b"kB" | b"KiB" => 10,
        b"M" | b"m" | b"MB" | b"MiB" => 20,
        b"G" | b"g" | b"GB" | b"GiB" => 30,
        _ => return None,
    };
    let bytes = n.checked_mul(1u64 << shift)?;
    usize::try_from(bytes).ok()
}

/// `100`, `100ms`, `2s`: milliseconds (a bare number is milliseconds).
pub fn parse_duration_ms(v: &[u8]) -> Option<u64> {
    let digits_end = v
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(v.len());
    if digits_end == 0 || digits_end > 12 {
        return None;
    }
    let n: u64 = v[..digits_end]
        .iter()
        .fold(0, |n, &b| n * 10 + (b - b'0') as u64);
    match &v[digits_end..] {
        b"" | b"ms" => Some(n),
        b"s" => Some(n * 1000),
        _ => None,
    }
}

pub fn parse_exclusions(v: &[u8]) -> Option<Exclusions> {
    let mut e = Exclusions {
        stack: false,
        exec: false,
        secret: false,
    };
    if v.is_empty() || v == b"none" {
        return Some(e);
    }
    for item in v.split(|&b| b == b',') {
        match item {
            b"stack" | b"stacks" => e.stack = true,
            b"exec" => e.exec = true,
            b"secret" | b"secrets" => e.secret = true,
            _ => return None,
        }
    }
    Some(e)
}

pub fn parse_stats_destination(v: &[u8]) -> Option<StatsDestination> {
    match v {
        b"stderr" => Some(StatsDestination::Stderr),
        b"off" => Some(StatsDestination::Off),
        b"" => None,
        p if p.len() < STATS_PATH_MAX && !p.contains(&0) => {
            let mut path = [0u8; STATS_PATH_MAX];
            path[..p.len()].copy_from_slice(p);
            Some(StatsDestination::File { path, len: p.len() })
        }
        _ => None,
    }
}

/// Expands `%p` to `pid` (and `%%` to `%`) into `out`, NUL-terminated for
/// `open`. Returns the path length without the NUL, or `None` if it won't fit.
pub fn expand_stats_path(template: &[u8], pid: i32, out: &mut [u8]) -> Option<usize> {
    let mut w = crate::fmt::BufWriter::new(out);
    let mut i = 0;
    while i < template.len() {
        match (template[i], template.get(i + 1)) {
            (b'%', Some(b'p')) => {
                w.u64(pid as u64);
                i += 2;
            }
            (b'%', Some(b'%')) => {
                w.str("%");
                i += 2;
            }
            (b, _) => {
                w.bytes(&[b]);
                i += 1;
            }
        }
    }
    let len = w.len();
    w.bytes(&[0]);
    if w.truncated() {
        None
    } else {
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_from(pairs: &[(&str, &'static str)]) -> (Config, Vec<String>) {
        let mut warnings = Vec::new();
        let cfg = Config::from_lookup(
            |name| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.as_bytes())
            },
            |b| {
                warnings.push(format!(
                    "{}={} {}",
                    b.variable,
                    String::from_utf8_lossy(b.value),
                    b.expected
                ))
            },
        );
        (cfg, warnings)
    }

    #[test]
    fn defaults_let_single_page_anonymous_mappings_qualify() {
        let (cfg, warnings) = config_from(&[]);
        assert!(warnings.is_empty());
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.mode, Mode::Auto);
        assert!(cfg.min_size <= 4096);
        assert!(
            !cfg.exclude.exec,
            "the article maps PROT_EXEC pages; exec must not be excluded by default"
        );
        assert!(!cfg.stats_requested);
    }

    #[test]
    fn every_variable_parses_its_documented_forms() {
        let (cfg, warnings) = config_from(&[
            ("KSMAUTO_MODE", "process"),
            ("KSMAUTO_MIN_SIZE", "64K"),
            ("KSMAUTO_EXCLUDE", "stack,exec,secret"),
            ("KSMAUTO_STATS", "/tmp/ksm.%p.json"),
            ("KSMAUTO_STATS_FORMAT", "json"),
            ("KSMAUTO_SCAN_INTERVAL", "2s"),
            ("KSMAUTO_REGISTER", "all"),
        ]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cfg.scan_interval_ms, 2000);
        assert_eq!(cfg.register, Register::All);
        assert_eq!(cfg.mode, Mode::Process);
        assert_eq!(cfg.min_size, 65536);
        assert_eq!(
            cfg.exclude,
            Exclusions {
                stack: true,
                exec: true,
                secret: true
            }
        );
        assert!(cfg.stats_requested);
        assert_eq!(cfg.stats_format, StatsFormat::Json);
        match cfg.stats {
            StatsDestination::File { path, len } => assert_eq!(&path[..len], b"/tmp/ksm.%p.json"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_bad_value_warns_once_names_the_variable_and_keeps_that_default_only() {
        let (cfg, warnings) = config_from(&[
            ("KSMAUTO_MODE", "bogus"),
            ("KSMAUTO_MIN_SIZE", "lots"),
            ("KSMAUTO_EXCLUDE", "stack,keys"),
            ("KSMAUTO_STATS", ""),
            ("KSMAUTO_STATS_FORMAT", "xml"),
            ("KSMAUTO_SCAN_INTERVAL", "soon"),
            ("KSMAUTO_REGISTER", "some"),
        ]);
        assert_eq!(warnings.len(), 7, "{warnings:?}");
        for (w, var) in warnings.iter().zip([
            "KSMAUTO_MODE",
            "KSMAUTO_MIN_SIZE",
            "KSMAUTO_EXCLUDE",
            "KSMAUTO_STATS=",
            "KSMAUTO_STATS_FORMAT",
            "KSMAUTO_SCAN_INTERVAL",
            "KSMAUTO_REGISTER",
        ]) {
            assert!(w.starts_with(var), "{w}");
        }
        let defaults = Config {
            stats_requested: false,
            ..Config::default()
        };
        assert_eq!(cfg, defaults);

        let (cfg, warnings) =
            config_from(&[("KSMAUTO_MODE", "advise"), ("KSMAUTO_MIN_SIZE", "12Q")]);
        assert_eq!(warnings.len(), 1);
        assert_eq!(
            cfg.mode,
            Mode::Advise,
            "a bad value elsewhere must not reset a good one"
        );
    }

    /// `KSMAUTO_SCAN_THREAD` asked for a thread of its own; the catch-up
    /// thread now comes and goes by itself, so the variable means nothing
    /// and is not read (no warning on the program's stderr either).
    #[test]
    fn the_retired_scan_thread_variable_is_not_read() {
        for value in ["1", "0", "maybe"] {
            let (cfg, warnings) = config_from(&[("KSMAUTO_SCAN_THREAD", value)]);
            assert!(warnings.is_empty(), "{value}: {warnings:?}");
            assert_eq!(cfg, Config::default());
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size(b"0"), Some(0));
        assert_eq!(parse_size(b"4096"), Some(4096));
        assert_eq!(parse_size(b"4k"), Some(4096));
        assert_eq!(parse_size(b"2M"), Some(2 << 20));
        assert_eq!(parse_size(b"1GiB"), Some(1 << 30));
        assert_eq!(parse_size(b""), None);
        assert_eq!(parse_size(b"K"), None);
        assert_eq!(parse_size(b"-1"), None);
        assert_eq!(parse_size(b"1T"), None);
        assert_eq!(parse_size(b"99999999999999999999G"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms(b"0"), Some(0));
        assert_eq!(parse_duration_ms(b"250"), Some(250));
        assert_eq!(parse_duration_ms(b"250ms"), Some(250));
        assert_eq!(parse_duration_ms(b"3s"), Some(3000));
        assert_eq!(parse_duration_ms(b"3m"), None);
        assert_eq!(parse_duration_ms(b"ms"), None);
    }

    #[test]
    fn exclusions() {
        assert_eq!(
            parse_exclusions(b"none"),
            Some(Exclusions {
                stack: false,
                exec: false,
                secret: false
            })
        );
        assert_eq!(
            parse_exclusions(b""),
            Some(Exclusions {
                stack: false,
                exec: false,
                secret: false
            })
        );
        assert_eq!(
            parse_exclusions(b"exec"),
            Some(Exclusions {
                stack: false,
                exec: true,
                secret: false
            })
        );
        assert_eq!(
            parse_exclusions(b"stack,secret"),
            Some(Config::DEFAULT.exclude),
            "the default is spelled stack,secret"
        );
        assert_eq!(parse_exclusions(b"exec,,stack"), None);
    }

    #[test]
    fn stats_path_expansion() {
        let mut out = [0u8; 64];
        let n = expand_stats_path(b"/tmp/s.%p.%%.txt", 4242, &mut out).unwrap();
        assert_eq!(&out[..n + 1], b"/tmp/s.4242.%.txt\0");
        let mut tiny = [0u8; 8];
        assert_eq!(expand_stats_path(b"/tmp/s.%p", 4242, &mut tiny), None);
        assert_eq!(parse_stats_destination(b"off"), Some(StatsDestination::Off));
    }
}
