//! The names of the hooks, from the library's own hook list.

// The hook list the library itself expands (`with_hook_list!`).
include!("../../src/hook_list.rs");

/// Takes the names of the counted hooks from the library's hook list.
macro_rules! hook_names {
    (
        counted {
            $($name:ident: $variant:ident = $kind:ident fn($($arg:ty),*) -> $ret:ty;)*
        }
        forwarded { $($forwarded:tt)* }
        exec { $($exec:tt)* }
    ) => {
        /// Every function src/api/ interposes and counts, by its name in
        /// the stats JSON, in the report's order (the malloc family first).
        pub const HOOK_NAMES: [&str; [$(stringify!($name)),*].len()] = [$(stringify!($name)),*];
    };
}

with_hook_list!(hook_names);
