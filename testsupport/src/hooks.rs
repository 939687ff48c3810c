//! The names of the hooks, from the library's own hook list.

// The hook list the library itself expands (`with_hook_list!`).
include!("../../src/hook_list.rs");

/// Takes the names of the hooks from the library's hook list.
macro_rules! hook_names {
    (
        counted {
            $($name:ident: $variant:ident = $kind:ident fn($($arg:ty),*) -> $ret:ty;)*
        }
        forwarded {
            $($fname:ident = $fkind:ident fn($($farg:ty),*) -> $fret:ty;)*
        }
        exec {
            $($ename:ident = $ekind:ident fn($($earg:ty),*) -> $eret:ty;)*
        }
        served {
            $($sname:ident fn($($sarg:ty),*) -> $sret:ty;)*
        }
        variadic {
            $($vname:ident;)*
        }
        c_api {
            $($cname:ident fn($($carg:ty),*) -> $cret:ty;)*
        }
    ) => {
        /// Every function src/api/ interposes and counts, by its name in
        /// the stats JSON, in the report's order (the malloc family first).
        pub const HOOK_NAMES: [&str; [$(stringify!($name)),*].len()] = [$(stringify!($name)),*];

        /// Every symbol the library exports, as the hook list names them:
        /// each section in list order.
        pub const EXPORTED_NAMES: &[&str] = &[
            $(stringify!($name),)*
            $(stringify!($fname),)*
            $(stringify!($ename),)*
            $(stringify!($sname),)*
            $(stringify!($vname),)*
            $(stringify!($cname),)*
        ];
    };
}

with_hook_list!(hook_names);
