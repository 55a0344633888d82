/* testutil.h - helpers shared by the unit tests (tests/unit) and the fuzz
 * targets (tests/fuzz): a seeded PRNG, a growable byte string, the ways
 * of cutting an input into feeds, and an abort-on-failure check.
 *
 * Header-only and free of cmocka: everything is static inline, so a test
 * that uses only part of it gets no unused-function warnings. When
 * <cmocka.h> is included first, assert_bytes_eq is defined too.
 */
#ifndef POPGATE_TESTUTIL_H
#define POPGATE_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Aborts with the failed condition when c is false. For the fuzz targets'
 * checks and for allocation failures anywhere. */
#define TU_CHECK(c)                                                          \
  do {                                                                       \
    if (!(c)) {                                                              \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
      abort();                                                               \
    }                                                                        \
  } while (0)

#ifndef CHECK
#define CHECK(c) TU_CHECK(c)
#endif

/* splitmix64: a small seeded PRNG, so every failure is reproducible. */
static inline uint64_t rng_next(uint64_t *s)
{
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* A number in 0..n-1 (0 when n is 0). */
static inline size_t rng_below(uint64_t *s, size_t n)
{
  return n == 0 ? 0 : (size_t)(rng_next(s) % n);
}

/* A growable byte string, NUL-terminated once anything was added (p is
 * NULL before that). Start from {0}; bytes_free resets it to that. */
struct bytes {
  char *p;
  size_t n, cap;
};

static inline void bytes_add(struct bytes *b, const void *p, size_t n)
{
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + n + 1)
      cap *= 2;
    b->p = realloc(b->p, cap);
    TU_CHECK(b->p != NULL);
    b->cap = cap;
  }
  if (n > 0)
    memcpy(b->p + b->n, p, n);
  b->n += n;
  b->p[b->n] = '\0';
}

static inline void bytes_free(struct bytes *b)
{
  free(b->p);
  memset(b, 0, sizeof *b);
}

/* How an input is cut into feeds. */
enum split_mode { SPLIT_WHOLE = 0, SPLIT_BYTE, SPLIT_RANDOM };

/* The next chunk length for the given mode, at most left; never 0 while
 * left > 0. SPLIT_RANDOM draws from rng, biased to small pieces. */
static inline size_t next_chunk(enum split_mode m, uint64_t *rng, size_t left)
{
  if (m == SPLIT_WHOLE)
    return left;
  if (m == SPLIT_BYTE)
    return left ? 1 : 0;
  switch (rng_below(rng, 4)) {
  case 0:
    return left ? 1 : 0;
  case 1:
    return left < 3 ? left : 1 + rng_below(rng, 3);
  case 2:
    return left < 16 ? left : 1 + rng_below(rng, 16);
  default:
    return left ? 1 + rng_below(rng, left) : 0;
  }
}

#ifdef cmocka_unit_test
/* cmocka: a[0..an) and b[0..bn) hold the same bytes. */
static inline void assert_bytes_eq(const char *a, size_t an, const char *b,
                                   size_t bn)
{
  assert_int_equal(an, bn);
  if (an > 0)
    assert_memory_equal(a, b, an);
}
#endif

#endif /* POPGATE_TESTUTIL_H */
