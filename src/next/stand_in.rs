//! Family functions the serving allocator lacks, built from the ones it has,
//! so that every block stays with the allocator that made it (jemalloc has
//! no `reallocarray` or `pvalloc`; tcmalloc no `reallocarray`). Each reads
//! the table when called (after start-up, when it is complete) and sets
//! `errno` the way glibc's function would.

use super::{next, NextFunctions};
use core::ffi::{c_int, c_void};

const WORD: usize = core::mem::size_of::<usize>();

unsafe fn fail(errno: c_int) -> *mut c_void {
    *libc::__errno_location() = errno;
    core::ptr::null_mut()
}

/// An alignment every allocator accepts: a power of two, at least a word
/// (glibc's `memalign` rounds the same way). `None` when none exists.
fn usable_alignment(align: usize) -> Option<usize> {
    align.max(WORD).checked_next_power_of_two()
}

/// Fills every `None` of the malloc family that can be built from what
/// the table has. Never builds a function from itself (no cycles).
pub fn fill_gaps(t: &mut NextFunctions) {
    if t.malloc.is_none() {
        return;
    }
    if t.memalign.is_none() {
        if t.posix_memalign.is_some() {
            t.memalign = Some(memalign_by_posix_memalign);
        } else if t.aligned_alloc.is_some() {
            t.memalign = Some(memalign_by_aligned_alloc);
        }
    }
    if t.memalign.is_some() {
        t.posix_memalign = t.posix_memalign.or(Some(posix_memalign_by_memalign));
        t.aligned_alloc = t.aligned_alloc.or(Some(aligned_alloc_by_memalign));
        t.valloc = t.valloc.or(Some(valloc_by_memalign));
        t.pvalloc = t.pvalloc.or(Some(pvalloc_by_memalign));
    }
    t.calloc = t.calloc.or(Some(calloc_by_malloc));
    if t.realloc.is_none() && t.malloc_usable_size.is_some() && t.free.is_some() {
        t.realloc = Some(realloc_by_malloc);
    }
    if t.realloc.is_some() {
        t.reallocarray = t.reallocarray.or(Some(reallocarray_by_realloc));
    }
}

unsafe extern "C" fn memalign_by_posix_memalign(align: usize, size: usize) -> *mut c_void {
    let (Some(align), Some(f)) = (usable_alignment(align), next().posix_memalign) else {
        return fail(libc::EINVAL);
    };
    let mut p = core::ptr::null_mut();
    match f(&mut p, align, size) {
        0 => p,
        rc => fail(rc),
    }
}

unsafe extern "C" fn memalign_by_aligned_alloc(align: usize, size: usize) -> *mut c_void {
    let (Some(align), Some(f)) = (usable_alignment(align), next().aligned_alloc) else {
        return fail(libc::EINVAL);
    };
    // C11 asks for a size that is a multiple of the alignment.
    match size.checked_add(align - 1) {
        Some(s) => f(align, s & !(align - 1)),
        None => fail(libc::ENOMEM),
    }
}

unsafe extern "C" fn posix_memalign_by_memalign(
    out: *mut *mut c_void,
    align: usize,
    size: usize,
) -> c_int {
    if !align.is_power_of_two() || !align.is_multiple_of(WORD) {
        return libc::EINVAL;
    }
    let Some(f) = next().memalign else {
        return libc::ENOMEM;
    };
    // posix_memalign reports through its result and leaves errno alone.
    let errno = libc::__errno_location();
    let saved = *errno;
    let p = f(align, size);
    *errno = saved;
    if p.is_null() {
        return libc::ENOMEM;
    }
    *out = p;
    0
}

unsafe extern "C" fn aligned_alloc_by_memalign(align: usize, size: usize) -> *mut c_void {
    match next().memalign {
        Some(f) => f(align, size),
        None => fail(libc::ENOMEM),
    }
}

unsafe extern "C" fn valloc_by_memalign(size: usize) -> *mut c_void {
    aligned_alloc_by_memalign(crate::os::page_size(), size)
}

unsafe extern "C" fn pvalloc_by_memalign(size: usize) -> *mut c_void {
    let page = crate::os::page_size();
    match size.checked_add(page - 1) {
        Some(s) => aligned_alloc_by_memalign(page, (s & !(page - 1)).max(page)),
        None => fail(libc::ENOMEM),
    }
}

unsafe extern "C" fn calloc_by_malloc(n: usize, size: usize) -> *mut c_void {
    let (Some(total), Some(f)) = (n.checked_mul(size), next().malloc) else {
        return fail(libc::ENOMEM);
    };
    let p = f(total);
    if !p.is_null() {
        core::ptr::write_bytes(p as *mut u8, 0, total);
    }
    p
}

unsafe extern "C" fn realloc_by_malloc(p: *mut c_void, size: usize) -> *mut c_void {
    let t = next();
    let (Some(malloc), Some(usable), Some(free)) = (t.malloc, t.malloc_usable_size, t.free)
    else {
        return fail(libc::ENOMEM);
    };
    if p.is_null() {
        return malloc(size);
    }
    if size == 0 {
        free(p);
        return core::ptr::null_mut();
    }
    let new = malloc(size);
    if !new.is_null() {
        core::ptr::copy_nonoverlapping(p as *const u8, new as *mut u8, usable(p).min(size));
        free(p);
    }
    new
}

unsafe extern "C" fn reallocarray_by_realloc(
    p: *mut c_void,
    n: usize,
    size: usize,
) -> *mut c_void {
    let (Some(total), Some(f)) = (n.checked_mul(size), next().realloc) else {
        return fail(libc::ENOMEM);
    };
    f(p, total)
}

#[cfg(test)]
mod tests {
    use super::super::{signature, NextFunctions, UNRESOLVED};
    use super::fill_gaps;
    use core::ffi::c_void;

    unsafe extern "C" fn fake_malloc(_: usize) -> *mut c_void {
        core::ptr::null_mut()
    }
    unsafe extern "C" fn fake_free(_: *mut c_void) {}
    unsafe extern "C" fn fake_realloc(_: *mut c_void, _: usize) -> *mut c_void {
        core::ptr::null_mut()
    }
    unsafe extern "C" fn fake_memalign(_: usize, _: usize) -> *mut c_void {
        core::ptr::null_mut()
    }
    unsafe extern "C" fn fake_usable(_: *mut c_void) -> usize {
        0
    }

    fn addr<F: Copy>(f: Option<F>) -> usize {
        match f {
            // SAFETY: the tests pass function pointers: one initialised
            // word, the size of a usize.
            Some(f) => unsafe { core::mem::transmute_copy::<F, usize>(&f) },
            None => 0,
        }
    }

    #[test]
    fn stand_ins_fill_what_a_jemalloc_like_allocator_lacks_and_keep_what_it_has() {
        let mut t = NextFunctions {
            malloc: Some(fake_malloc),
            realloc: Some(fake_realloc),
            free: Some(fake_free),
            memalign: Some(fake_memalign),
            malloc_usable_size: Some(fake_usable),
            ..UNRESOLVED
        };
        fill_gaps(&mut t);
        assert_eq!(addr(t.malloc), addr(Some(fake_malloc as signature::malloc)));
        assert_eq!(
            addr(t.realloc),
            addr(Some(fake_realloc as signature::realloc))
        );
        assert_eq!(
            addr(t.memalign),
            addr(Some(fake_memalign as signature::memalign))
        );
        for (name, f) in [
            ("calloc", addr(t.calloc)),
            ("reallocarray", addr(t.reallocarray)),
            ("posix_memalign", addr(t.posix_memalign)),
            ("aligned_alloc", addr(t.aligned_alloc)),
            ("valloc", addr(t.valloc)),
            ("pvalloc", addr(t.pvalloc)),
        ] {
            assert_ne!(f, 0, "{name} not built");
        }
    }

    #[test]
    fn nothing_is_built_without_malloc_and_realloc_needs_usable_size_and_free() {
        let mut none = UNRESOLVED;
        fill_gaps(&mut none);
        assert!(none.calloc.is_none() && none.reallocarray.is_none() && none.valloc.is_none());

        let mut t = NextFunctions {
            malloc: Some(fake_malloc),
            free: Some(fake_free),
            ..UNRESOLVED
        };
        fill_gaps(&mut t);
        assert!(t.calloc.is_some());
        // No realloc and no malloc_usable_size: nothing can resize, and no
        // aligned allocator: nothing can align.
        assert!(t.realloc.is_none() && t.reallocarray.is_none());
        assert!(t.memalign.is_none() && t.posix_memalign.is_none() && t.pvalloc.is_none());
    }
}
