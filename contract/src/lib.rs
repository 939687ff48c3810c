//! The contract between libksmauto, the `ksmauto` CLI and the tests: the
//! words all of them must spell the same way.
//!
//! * [`Mode`] — the engines `KSMAUTO_MODE` selects, and their names;
//! * [`SkipReason`], [`Source`] — why a region was left alone and who made
//!   one mergeable, as the exit report names them;
//! * [`env`] — every `KSMAUTO_*` environment variable;
//! * [`report`] — the field names of the exit report's JSON object;
//! * [`proc`] — pure parsers of the kernel's `/proc` text (`ksm_stat`,
//!   `smaps_rollup`, `stat`, `status` lines, `kB` values), read as bytes;
//! * [`smaps`] — the flags of a mapping in `smaps` (`VmFlags`);
//! * [`elf`] — the ELF file and program headers, read as `exec` reads them.
//!
//! This is the ground floor: it depends on nothing, not even `libc`, and
//! reads no file. Everything here is `no_std`, allocation-free and
//! panic-free, because the preload library links it into code its hooks
//! reach; callers read files their own way (raw system calls into static
//! buffers in the library, `std::fs` in the CLI and tests) and hand the text
//! in.

#![no_std]

pub mod elf;
pub mod env;
pub mod mode;
pub mod proc;
pub mod report;
pub mod skip;
pub mod smaps;
pub mod source;

pub use mode::Mode;
pub use skip::SkipReason;
pub use source::Source;
