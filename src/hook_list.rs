// The one list of the functions src/api/ exports: those it interposes on
// and forwards through the tables in src/next/, and the library's own.
//
// Plain `//` comments only: the integration tests `include!` this file to
// take the hook names from here (an inner doc comment cannot be included).
//
// `with_hook_list!(then)` hands the list to macro `then`, which expands it
// into what it needs (heaptrack's one `HOOK(name, kind)` line per hook, as
// an X-macro):
// * `next/mod.rs`: the signatures (`next::signature::NAME`), the table's
//   fields, and the lookups;
// * `api/mod.rs`: compile-time checks of each hook's signature against
//   the list, and of the list against the libc crate's prototypes;
// * `counters.rs`: `Hook`, its names and the call-counter slots;
// * `testsupport` (the tests' dev crate): `HOOK_NAMES` (the counted ones)
//   and `EXPORTED_NAMES` (all of them, for tests/exports.rs).
//
// One line per function:
//     name: Variant = resolution fn(argument types) -> return type;
// (`name = resolution fn…` where there is no counter; `name fn…` where
// nothing is resolved; `name;` for the variadic ones.)
// * `counted` functions have a call counter (`Hook::Variant`), in the
//   report's order; the malloc family comes first (its calls are counted
//   only on request, see `Hook::is_allocator`);
// * `forwarded` functions are hooked and forwarded but not counted;
// * `exec` functions are resolved apart, at the first `exec` or spawn (the
//   program may never make one);
// * `served` functions are exported but have no next definition of their
//   own: `execv` and `execvp` go through our `execve` and `execvpe`;
// * `variadic` functions are exported as assembly entries (a variadic C
//   function cannot be written in Rust) that go through our `execve` and
//   `execvpe`: names only;
// * `c_api`: the library's own C API (include/ksmauto.h).
// * resolution: `serving` — the first `malloc` the program's calls reach,
//   which names the serving allocator; `allocator` — that same allocator's
//   own definition (else a stand-in); `next` — `dlsym(RTLD_NEXT)` (only for
//   names every supported glibc has: a failed `dlsym` allocates);
//   `next_if_defined` — the next definition found by hand, for newer names.
//
// Together the sections name every symbol the library exports, each once
// (tests/exports.rs compares them with the built library's dynamic
// symbols); src/api/ checks at compile time that each hook has the
// signature listed here, and that the signature is libc's prototype where
// libc declares one.
//
// The types are resolved where a callback expands them (src/next/mod.rs and
// src/api/mod.rs import `c_char`, `c_int`, `c_void`, `StartRoutine` and
// `C11StartRoutine` as needed).
macro_rules! with_hook_list {
    ($then:ident) => {
        $then! {
            counted {
                malloc: Malloc = serving fn(usize) -> *mut c_void;
                calloc: Calloc = allocator fn(usize, usize) -> *mut c_void;
                realloc: Realloc = allocator fn(*mut c_void, usize) -> *mut c_void;
                reallocarray: Reallocarray = allocator fn(*mut c_void, usize, usize) -> *mut c_void;
                free: Free = allocator fn(*mut c_void) -> ();
                posix_memalign: PosixMemalign = allocator fn(*mut *mut c_void, usize, usize) -> c_int;
                aligned_alloc: AlignedAlloc = allocator fn(usize, usize) -> *mut c_void;
                memalign: Memalign = allocator fn(usize, usize) -> *mut c_void;
                valloc: Valloc = allocator fn(usize) -> *mut c_void;
                pvalloc: Pvalloc = allocator fn(usize) -> *mut c_void;
                malloc_usable_size: MallocUsableSize = allocator fn(*mut c_void) -> usize;
                mmap: Mmap = next
                    fn(*mut c_void, usize, c_int, c_int, c_int, libc::off_t) -> *mut c_void;
                mmap64: Mmap64 = next
                    fn(*mut c_void, usize, c_int, c_int, c_int, libc::off_t) -> *mut c_void;
                mremap: Mremap = next fn(*mut c_void, usize, usize, c_int, *mut c_void) -> *mut c_void;
                munmap: Munmap = next fn(*mut c_void, usize) -> c_int;
                pthread_create: PthreadCreate = next fn(
                    *mut libc::pthread_t, *const libc::pthread_attr_t, StartRoutine, *mut c_void
                ) -> c_int;
            }
            forwarded {
                madvise = next fn(*mut c_void, usize, c_int) -> c_int;
                mlock = next fn(*const c_void, usize) -> c_int;
                mlock2 = next_if_defined fn(*const c_void, usize, libc::c_uint) -> c_int;
                mlockall = next fn(c_int) -> c_int;
                // C11 threads (glibc 2.28+): glibc's `thrd_create` calls its
                // internal `__pthread_create_2_1`, never our `pthread_create`.
                thrd_create = next_if_defined fn(
                    *mut libc::pthread_t, C11StartRoutine, *mut c_void
                ) -> c_int;
                prctl = next fn(
                    c_int, libc::c_ulong, libc::c_ulong, libc::c_ulong, libc::c_ulong
                ) -> c_int;
                syscall = next fn(
                    libc::c_long, libc::c_long, libc::c_long, libc::c_long, libc::c_long,
                    libc::c_long, libc::c_long
                ) -> libc::c_long;
                unshare = next fn(c_int) -> c_int;
                setns = next fn(c_int, c_int) -> c_int;
                capset = next fn(*mut c_void, *mut c_void) -> c_int;
                pthread_exit = next_if_defined fn(*mut c_void) -> ();
            }
            exec {
                execve = next fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int;
                execvpe = next fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int;
                execveat = next_if_defined fn(
                    c_int, *const c_char, *const *const c_char, *const *const c_char, c_int
                ) -> c_int;
                fexecve = next fn(c_int, *const *const c_char, *const *const c_char) -> c_int;
                posix_spawn = next fn(
                    *mut libc::pid_t, *const c_char, *const libc::posix_spawn_file_actions_t,
                    *const libc::posix_spawnattr_t, *const *mut c_char, *const *mut c_char
                ) -> c_int;
                posix_spawnp = next fn(
                    *mut libc::pid_t, *const c_char, *const libc::posix_spawn_file_actions_t,
                    *const libc::posix_spawnattr_t, *const *mut c_char, *const *mut c_char
                ) -> c_int;
                system = next fn(*const c_char) -> c_int;
                popen = next fn(*const c_char, *const c_char) -> *mut libc::FILE;
                wordexp = next fn(*const c_char, *mut c_void, c_int) -> c_int;
            }
            served {
                execv fn(*const c_char, *const *const c_char) -> c_int;
                execvp fn(*const c_char, *const *const c_char) -> c_int;
            }
            variadic {
                execl;
                execle;
                execlp;
            }
            c_api {
                ksmauto_advise fn(*mut c_void, usize) -> c_int;
                ksmauto_exclude fn(*mut c_void, usize) -> c_int;
                ksmauto_stats_json fn(*mut c_char, usize) -> usize;
                ksmauto_version fn() -> *const c_char;
            }
        }
    };
}
