//! Why a region was left alone: the keys of the report's `skipped` object.

/// Why a region was left alone. The order is the report's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// `MAP_SHARED`: KSM merges private memory only.
    Shared,
    /// Backed by a file.
    File,
    /// hugetlbfs pages are never merged.
    Hugetlb,
    /// Smaller than `KSMAUTO_MIN_SIZE`.
    Small,
    /// Executable and the `exec` class is excluded.
    Exec,
    /// A stack and the `stack` class is excluded.
    Stack,
    /// Inside a range the program excluded with `ksmauto_exclude`.
    Excluded,
    /// The advice would split a VMA while the process is close to
    /// `vm.max_map_count`: the library never brings a program nearer to
    /// failing its own mappings.
    MapCount,
}

impl SkipReason {
    pub const COUNT: usize = 8;
    pub const ALL: [SkipReason; SkipReason::COUNT] = [
        SkipReason::Shared,
        SkipReason::File,
        SkipReason::Hugetlb,
        SkipReason::Small,
        SkipReason::Exec,
        SkipReason::Stack,
        SkipReason::Excluded,
        SkipReason::MapCount,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SkipReason::Shared => "shared",
            SkipReason::File => "file",
            SkipReason::Hugetlb => "hugetlb",
            SkipReason::Small => "small",
            SkipReason::Exec => "exec",
            SkipReason::Stack => "stack",
            SkipReason::Excluded => "excluded",
            SkipReason::MapCount => "map_count",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_listed_in_declaration_order_with_unique_names() {
        for (i, a) in SkipReason::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i);
            assert!(SkipReason::ALL[i + 1..]
                .iter()
                .all(|b| a.name() != b.name()));
        }
    }
}
