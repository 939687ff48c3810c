//! The engines `KSMAUTO_MODE` selects.

/// Which engine makes memory mergeable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `process` where the kernel accepts `PR_SET_MEMORY_MERGE`, else `advise`.
    Auto,
    /// `madvise(MADV_MERGEABLE)` on qualifying regions as the hooks see them.
    Advise,
    /// `prctl(PR_SET_MEMORY_MERGE, 1)`: all compatible anonymous memory.
    Process,
    /// Nothing is advised; an inherited merge-any setting is cleared.
    Off,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Auto, Mode::Advise, Mode::Process, Mode::Off];

    /// The name in `KSMAUTO_MODE`, in the report's `mode` and
    /// `requested_mode`, and in `ksmauto run --mode`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Advise => "advise",
            Mode::Process => "process",
            Mode::Off => "off",
        }
    }

    /// The mode named exactly `name` (no case folding, no blanks).
    pub fn from_name(name: &[u8]) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name().as_bytes() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_mode_and_nothing_else_does() {
        for m in Mode::ALL {
            assert_eq!(Mode::from_name(m.name().as_bytes()), Some(m));
        }
        assert_eq!(Mode::from_name(b"Auto"), None);
        assert_eq!(Mode::from_name(b" auto"), None);
        assert_eq!(Mode::from_name(b""), None);
    }
}
