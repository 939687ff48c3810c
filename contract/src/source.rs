//! Who made a region mergeable: the keys of the report's
//! `advised.by_source` object.

/// Who made a region mergeable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A private anonymous `mmap`/`mmap64` seen by the hook.
    Mmap,
    /// The program's own `ksmauto_advise` call.
    Api,
    /// The catch-up scan of `/proc/self/maps` (memory no hook saw: the brk
    /// heap, glibc's thread arenas and its own mappings for large blocks,
    /// raw `syscall(SYS_mmap)`, …).
    CatchUp,
}

impl Source {
    pub const COUNT: usize = 3;
    pub const ALL: [Source; Source::COUNT] = [Source::Mmap, Source::Api, Source::CatchUp];

    pub fn name(self) -> &'static str {
        match self {
            Source::Mmap => "mmap",
            Source::Api => "api",
            Source::CatchUp => "catchup",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_listed_in_declaration_order_with_unique_names() {
        for (i, a) in Source::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i);
            assert!(Source::ALL[i + 1..].iter().all(|b| a.name() != b.name()));
        }
    }
}
