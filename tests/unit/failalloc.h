/* failalloc.h - a failing allocator for the unit tests.
 *
 * Every unit test is linked with -Wl,--wrap=malloc,--wrap=calloc,
 * --wrap=realloc,--wrap=free and failalloc.c: the linker sends the calls
 * that the test and the code under test (the objects on the link line)
 * make to __wrap_malloc and friends, which count them and may refuse one,
 * then call __real_malloc, which is the C library's malloc or, under a
 * sanitizer, its interceptor, so ASan and LSan still see every block.
 * Calls made inside shared libraries (libc's strdup, OpenSSL, libuv,
 * cmocka) are not wrapped and never fail.
 *
 * Disarmed (the default), the wrappers only pass calls through. The state
 * is per thread: arming it in the test's thread leaves pool threads alone.
 *
 * The usual sweep: for n = 1, 2, ... arm fa_fail_nth(n), run the
 * operation, fa_off(); when fa_failed() is 0 the operation allocated fewer
 * than n times and every failure point was seen.
 */
#ifndef POPGATE_FAILALLOC_H
#define POPGATE_FAILALLOC_H

#include <stddef.h>

/* The n-th allocation from now (1 = the next) fails, the others succeed.
 * Resets the counters. */
void fa_fail_nth(unsigned long n);

/* Every allocation from now fails. Resets the counters. */
void fa_fail_all(void);

/* Allocations succeed again; the counters keep their values. */
void fa_off(void);

/* Allocation calls (malloc, calloc, realloc) since the last fa_fail_nth
 * or fa_fail_all, and how many of them were refused. */
unsigned long fa_calls(void);
unsigned long fa_failed(void);

/* Called with every pointer passed to free (NULL included) just before it
 * is freed, on the thread that frees it, until set to NULL: lets a test
 * look at the bytes of memory on its way out. */
typedef void fa_free_fn(void *p, void *arg);
void fa_on_free(fa_free_fn *fn, void *arg);

#endif
