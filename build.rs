//! Link options of the shared object.
//!
//! `-z nodelete`: once loaded, the library is never unmapped, so `dlclose`
//! of a copy that a program `dlopen`ed is a no-op. A preload library leaves
//! registrations behind that outlive any unload: its `pthread_atfork`
//! handler (registered through libc's exported `pthread_atfork`, which glibc
//! keeps for the life of the process), the optional scanning thread, the
//! forwarding table other objects may have called through, merge-any and the
//! regions it advised. Tearing each down at unload would mean racing the
//! program's own threads through code that is about to vanish; keeping the
//! code mapped makes every one of them stay valid. The price is the object's
//! memory after an unload (a few hundred KiB of mappings), and its exit report
//! comes at `exit`, as for a preloaded copy, not at `dlclose`.

fn main() {
    // Only the cdylib is linked with it (no other target of this package).
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    println!("cargo:rerun-if-changed=build.rs");
}
