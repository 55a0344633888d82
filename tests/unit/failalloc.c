/* failalloc.c - the wrappers behind failalloc.h. */
#include "failalloc.h"

#include <errno.h>
#include <stdlib.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);

enum fa_mode { FA_OFF = 0, FA_NTH, FA_ALL, FA_COUNT };

static _Thread_local struct {
  enum fa_mode mode;
  unsigned long nth, calls, failed;
  fa_free_fn *on_free;
  void *arg;
} fa;

void fa_fail_nth(unsigned long n)
{
  fa.mode = FA_NTH;
  fa.nth = n;
  fa.calls = fa.failed = 0;
}

void fa_fail_all(void)
{
  fa.mode = FA_ALL;
  fa.calls = fa.failed = 0;
}

void fa_off(void)
{
  fa.mode = FA_OFF;
}

unsigned long fa_calls(void)
{
  return fa.calls;
}

unsigned long fa_failed(void)
{
  return fa.failed;
}

void fa_on_free(fa_free_fn *fn, void *arg)
{
  fa.on_free = fn;
  fa.arg = arg;
}

/* Counts one allocation call; 1 when it is to fail. */
static int refuse(void)
{
  if (fa.mode == FA_OFF)
    return 0;
  fa.calls++;
  if (fa.mode == FA_ALL || fa.calls == fa.nth) {
    fa.failed++;
    errno = ENOMEM; /* as the C library does */
    return 1;
  }
  return 0;
}

void *__wrap_malloc(size_t n)
{
  return refuse() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t k, size_t n)
{
  return refuse() ? NULL : __real_calloc(k, n);
}

/* A refused realloc leaves p allocated, as a real one does. */
void *__wrap_realloc(void *p, size_t n)
{
  return refuse() ? NULL : __real_realloc(p, n);
}

void __wrap_free(void *p)
{
  if (fa.on_free != NULL)
    fa.on_free(p, fa.arg);
  __real_free(p);
}
