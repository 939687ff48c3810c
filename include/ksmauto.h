/*
 * ksmauto.h — the C API of libksmauto.so.
 *
 * The functions are declared weak: a program that uses them links and runs
 * without the library, and the calls become no-ops there. Test for the
 * library before calling, e.g.
 *
 *     #include "ksmauto.h"
 *     ...
 *     if (ksmauto_available())
 *         ksmauto_exclude(key, sizeof key);   // secrets never merge
 *
 * Build:   cc -Ipath/to/include app.c -o app      (no -lksmauto needed)
 * Run:     LD_PRELOAD=/path/to/libksmauto.so ./app
 *
 * Weak undefined symbols resolve to NULL unless some loaded object defines
 * them; a preloaded library defines them for the whole process.
 */
#ifndef KSMAUTO_H
#define KSMAUTO_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Makes [addr, addr+len), widened to whole pages, mergeable now (unless it
 * was excluded). Returns 0, or -1 with errno set (EINVAL: bad range or a
 * kernel without KSM; ENOMEM: not mapped). In KSMAUTO_MODE=off it does
 * nothing and returns 0. */
int ksmauto_advise(void *addr, size_t len) __attribute__((weak));

/* Unmerges [addr, addr+len), widened to whole pages, now, and never makes it
 * mergeable again while it stays mapped — for buffers that hold secrets. The
 * exclusion moves with the memory (mremap, and realloc of an excluded block
 * excludes the new block); excluding the same or neighbouring pages again
 * takes no extra room. Memory locked with mlock or marked MADV_DONTDUMP /
 * MADV_WIPEONFORK is excluded by default without this call (the `secret`
 * class of KSMAUTO_EXCLUDE). Returns 0, or -1 with errno set (ENOSPC: the
 * exclusion table is full of mapped ranges; the range was still unmerged
 * now). */
int ksmauto_exclude(void *addr, size_t len) __attribute__((weak));

/* Writes this process's current stats as one JSON object (the exit report's
 * format, see docs/report-format.md) into buf, NUL-terminated and cut to fit like snprintf.
 * Returns the length the whole object needs (excluding the NUL). */
size_t ksmauto_stats_json(char *buf, size_t len) __attribute__((weak));

/* The library's version, e.g. "0.1.0". */
const char *ksmauto_version(void) __attribute__((weak));

/* Non-zero when libksmauto.so is loaded in this process. */
static inline int ksmauto_available(void) { return ksmauto_version != NULL; }

#ifdef __cplusplus
}
#endif

#endif /* KSMAUTO_H */
