/* test_buf.c - unit tests for proxy/buf.c, the block byte queue.
 *
 * Tests the contracts in buf.h: bytes come out as they went in, len
 * matches the blocks, take/move/clear keep the queue consistent, and the
 * wipe mark: blocks of a marked queue are wiped before the block cache or
 * free() sees them, whichever way they leave (clear, a taken chain, a
 * move), while blocks of an unmarked queue are left as they are.
 *
 * Blocks are recycled through a per-thread cache, last freed first out,
 * so a reserve right after a free hands back the block just freed: that
 * is how a test looks at a recycled block. Blocks past the cache go to
 * free(); failalloc's free hook looks at those.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "buf.h"
#include "failalloc.h"
#include "testutil.h"

#define S(x) x, sizeof(x) - 1

static const char secret[] = "PASS hunter2-correct-horse\r\n";

/* Walks the blocks: links, tail, and len as the sum of len - off. */
static void check_buf(const struct px_buf *b)
{
  size_t sum = 0;
  const struct px_blk *k, *last = NULL;

  for (k = b->head; k != NULL; k = k->next) {
    assert_true(k->off <= k->len);
    assert_true(k->len <= PX_BLK_SIZE);
    sum += k->len - k->off;
    last = k;
  }
  assert_ptr_equal(b->tail, last);
  assert_int_equal(b->len, sum);
}

/* The queued bytes, in order. */
static void buf_bytes(const struct px_buf *b, struct bytes *out)
{
  for (const struct px_blk *k = b->head; k != NULL; k = k->next)
    bytes_add(out, k->data + k->off, k->len - k->off);
}

static int all_zero(const char *p, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (p[i] != 0)
      return 0;
  return 1;
}

static void fill(char *p, size_t n, unsigned seed)
{
  for (size_t i = 0; i < n; i++)
    p[i] = (char)(1 + (i * 131 + seed) % 251); /* never 0 */
}

/* A block handed out by a fresh reserve: the most recently freed one.
 * Returns its data (from byte 0) for the caller to look at. */
static const char *recycled(struct px_buf *tmp)
{
  size_t avail;
  char *p;

  px_buf_init(tmp);
  p = px_buf_reserve(tmp, PX_BLK_SIZE, &avail);
  assert_non_null(p);
  assert_int_equal(avail, PX_BLK_SIZE);
  return p;
}

static int setup(void **state)
{
  (void)state;
  px_blk_cache_drain(); /* each test starts with an empty cache */
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  fa_on_free(NULL, NULL);
  fa_off();
  px_blk_cache_drain();
  return 0;
}

/* ---- the queue ---------------------------------------------------------- */

static void test_append_take_round_trip(void **state)
{
  uint64_t rng = 42;
  size_t total = 3 * PX_BLK_SIZE + 1234;
  char *in = malloc(total);
  struct bytes got = { 0 };
  struct px_buf b;

  (void)state;
  assert_non_null(in);
  fill(in, total, 7);
  for (int m = SPLIT_WHOLE; m <= SPLIT_RANDOM; m++) {
    size_t pos = 0;

    px_buf_init(&b);
    check_buf(&b);
    while (pos < total) {
      size_t k = next_chunk((enum split_mode)m, &rng, total - pos);
      if (m == SPLIT_RANDOM && k > 4096)
        k = 4096; /* byte by byte and small pieces, not one big one */
      assert_int_equal(px_buf_append(&b, in + pos, k), 0);
      pos += k;
      check_buf(&b);
    }
    assert_int_equal(b.len, total);
    buf_bytes(&b, &got);
    assert_bytes_eq(got.p, got.n, in, total);
    bytes_free(&got);

    /* Taking blocks off the head keeps the rest consistent. */
    while (b.len > 0) {
      struct px_blk *c = px_buf_take(&b, 2);
      assert_non_null(c);
      for (struct px_blk *k = c; k != NULL; k = k->next)
        bytes_add(&got, k->data + k->off, k->len - k->off);
      px_blk_free_chain(c);
      check_buf(&b);
    }
    assert_null(px_buf_take(&b, 2));
    assert_bytes_eq(got.p, got.n, in, total);
    bytes_free(&got);
    px_buf_clear(&b);
  }
  free(in);
}

static void test_reserve_commit(void **state)
{
  struct px_buf b;
  size_t avail;
  char *p;

  (void)state;
  px_buf_init(&b);
  p = px_buf_reserve(&b, 4, &avail);
  assert_non_null(p);
  assert_int_equal(avail, PX_BLK_SIZE);
  memcpy(p, "+OK ", 4);
  px_buf_commit(&b, 4);
  check_buf(&b);
  /* Room enough in the tail: the same block. */
  assert_ptr_equal(px_buf_reserve(&b, 8, &avail), p + 4);
  assert_int_equal(avail, PX_BLK_SIZE - 4);
  /* Once the tail is full: a new block. */
  memset(p + 4, 'x', PX_BLK_SIZE - 4);
  px_buf_commit(&b, PX_BLK_SIZE - 4);
  assert_ptr_not_equal(px_buf_reserve(&b, 1, &avail), NULL);
  assert_ptr_not_equal(b.head, b.tail);
  assert_int_equal(avail, PX_BLK_SIZE);
  check_buf(&b);
  px_buf_clear(&b);
  check_buf(&b);
  assert_null(b.head);
}

static void test_move(void **state)
{
  struct px_buf a, b;
  struct bytes got = { 0 };

  (void)state;
  px_buf_init(&a);
  px_buf_init(&b);
  px_buf_move(&a, &b); /* empty into empty */
  check_buf(&a);
  assert_int_equal(px_buf_append(&a, S("one ")), 0);
  assert_int_equal(px_buf_append(&b, S("two")), 0);
  px_buf_move(&a, &b);
  check_buf(&a);
  check_buf(&b);
  assert_null(b.head);
  buf_bytes(&a, &got);
  assert_string_equal(got.p, "one two");
  bytes_free(&got);
  px_buf_move(&b, &a); /* into an empty one */
  check_buf(&b);
  assert_int_equal(b.len, 7);
  px_buf_clear(&b);
}

/* ---- the wipe mark ------------------------------------------------------ */

static void test_init_unmarked(void **state)
{
  struct px_buf b;

  (void)state;
  memset(&b, 0xff, sizeof b);
  px_buf_init(&b);
  assert_false(b.wipe);
  px_buf_set_wipe(&b, 1);
  assert_true(b.wipe);
  px_buf_set_wipe(&b, 0);
  assert_false(b.wipe);
}

/* The fast path: an unmarked queue's freed block comes back as it was. */
static void test_unmarked_not_wiped(void **state)
{
  struct px_buf b, tmp;
  const char *p;

  (void)state;
  px_buf_init(&b);
  assert_int_equal(px_buf_append(&b, S("RETR 1\r\n")), 0);
  assert_false(b.head->wipe);
  px_buf_clear(&b);
  p = recycled(&tmp);
  assert_memory_equal(p, "RETR 1\r\n", 8);
  px_buf_clear(&tmp);
}

static void test_clear_wipes(void **state)
{
  struct px_buf b, tmp;
  const char *p;

  (void)state;
  px_buf_init(&b);
  px_buf_set_wipe(&b, 1);
  assert_int_equal(px_buf_append(&b, S(secret)), 0);
  assert_true(b.head->wipe);
  px_buf_clear(&b);
  assert_true(b.wipe); /* the mark outlives a clear */
  p = recycled(&tmp);
  assert_true(all_zero(p, sizeof secret - 1));
  /* The recycled block belongs to an unmarked queue now. */
  assert_false(tmp.head->wipe);
  px_buf_clear(&tmp);

  /* And the next secret the same queue takes is wiped too. */
  assert_int_equal(px_buf_append(&b, S(secret)), 0);
  px_buf_clear(&b);
  p = recycled(&tmp);
  assert_true(all_zero(p, sizeof secret - 1));
  px_buf_clear(&tmp);
}

/* A chain handed to a write keeps the mark; freeing it after the write
 * wipes it, the bytes already sent (before off) included. */
static void test_taken_chain_wiped(void **state)
{
  struct px_buf b, tmp;
  struct px_blk *c;
  const char *p;

  (void)state;
  px_buf_init(&b);
  px_buf_set_wipe(&b, 1);
  assert_int_equal(px_buf_append(&b, S("USER alice\r\n")), 0);
  assert_int_equal(px_buf_append(&b, S(secret)), 0);
  c = px_buf_take(&b, 4);
  assert_non_null(c);
  assert_true(c->wipe);
  check_buf(&b);
  c->off = 12; /* as if the USER line went out in an earlier write */
  px_blk_free_chain(c);
  p = recycled(&tmp);
  assert_true(all_zero(p, 12 + sizeof secret - 1));
  px_buf_clear(&tmp);
}

/* Marking a queue marks the blocks it holds already. */
static void test_mark_applies_to_queued(void **state)
{
  struct px_buf b, tmp;
  const char *p;

  (void)state;
  px_buf_init(&b);
  assert_int_equal(px_buf_append(&b, S(secret)), 0);
  assert_false(b.head->wipe);
  px_buf_set_wipe(&b, 1);
  assert_true(b.head->wipe);
  /* Turning it off does not unmark what may hold a secret. */
  px_buf_set_wipe(&b, 0);
  assert_true(b.head->wipe);
  px_buf_clear(&b);
  p = recycled(&tmp);
  assert_true(all_zero(p, sizeof secret - 1));
  px_buf_clear(&tmp);
}

static void test_move_keeps_and_spreads_mark(void **state)
{
  struct px_buf plain, marked, tmp;
  const char *p;

  (void)state;
  /* Marked into unmarked (conn.c's STLS hand-over): still wiped. */
  px_buf_init(&plain);
  px_buf_init(&marked);
  px_buf_set_wipe(&marked, 1);
  assert_int_equal(px_buf_append(&marked, S(secret)), 0);
  px_buf_move(&plain, &marked);
  assert_true(marked.wipe);
  assert_false(plain.wipe);
  assert_true(plain.head->wipe);
  px_buf_clear(&plain);
  p = recycled(&tmp);
  assert_true(all_zero(p, sizeof secret - 1));
  px_buf_clear(&tmp);

  /* Unmarked into marked: the moved tail block is where the marked queue
   * appends next, so it is marked too. */
  assert_int_equal(px_buf_append(&plain, S("AUTH ")), 0);
  px_buf_move(&marked, &plain);
  assert_true(marked.head->wipe);
  assert_int_equal(px_buf_append(&marked, S("PLAIN AGFsaWNlAHNlY3JldA==\r\n")),
                   0);
  assert_ptr_equal(marked.head, marked.tail);
  px_buf_clear(&marked);
  p = recycled(&tmp);
  assert_true(all_zero(p, 5 + 28));
  px_buf_clear(&tmp);
}

/* Watches free(): every block of a list that is freed must be wiped. */
struct watch {
  struct px_blk **blk;
  size_t n, freed;
};

static void watch_free_cb(void *ptr, void *arg)
{
  struct watch *w = arg;

  for (size_t i = 0; i < w->n; i++) {
    if (ptr == w->blk[i]) {
      TU_CHECK(all_zero(w->blk[i]->data, w->blk[i]->len));
      w->blk[i] = NULL;
      w->freed++;
    }
  }
}

/* More blocks than the cache keeps: those past it go to free(), wiped
 * first; those cached are wiped already when the cache is drained. */
static void test_wiped_before_free(void **state)
{
  enum { NBLK = 80 };
  struct px_blk *blk[NBLK];
  struct watch w = { blk, NBLK, 0 };
  char *chunk = malloc(PX_BLK_SIZE);
  struct px_buf b;
  size_t i = 0;

  (void)state;
  assert_non_null(chunk);
  px_buf_init(&b);
  px_buf_set_wipe(&b, 1);
  for (int k = 0; k < NBLK; k++) {
    fill(chunk, PX_BLK_SIZE, (unsigned)k);
    assert_int_equal(px_buf_append(&b, chunk, PX_BLK_SIZE), 0);
  }
  for (struct px_blk *k = b.head; k != NULL; k = k->next) {
    assert_true(k->wipe);
    blk[i++] = k;
  }
  assert_int_equal(i, NBLK);
  fa_on_free(watch_free_cb, &w);
  px_buf_clear(&b);
  assert_true(w.freed > 0); /* some went past the cache */
  assert_true(w.freed < NBLK);
  px_blk_cache_drain();
  fa_on_free(NULL, NULL);
  assert_int_equal(w.freed, NBLK);
  free(chunk);
}

/* ---- out of memory ------------------------------------------------------ */

/* Sweeps the n-th allocation of an append of several blocks onto a queue
 * with a partly filled tail: UV_ENOMEM with the queue unchanged, and the
 * same append succeeding once memory is back. */
static void test_append_enomem(void **state)
{
  size_t n = 3 * PX_BLK_SIZE + 100;
  char *in = malloc(n);
  struct bytes before = { 0 }, after = { 0 };
  unsigned long nth;

  (void)state;
  assert_non_null(in);
  fill(in, n, 3);
  for (nth = 1;; nth++) {
    struct px_buf b;
    int rc;

    px_buf_init(&b);
    assert_int_equal(px_buf_append(&b, S("+OK partly filled\r\n")), 0);
    buf_bytes(&b, &before);
    px_blk_cache_drain(); /* or the cache would hide the allocations */

    fa_fail_nth(nth);
    rc = px_buf_append(&b, in, n);
    fa_off();
    check_buf(&b);
    if (fa_failed() == 0) {
      assert_int_equal(rc, 0);
      assert_int_equal(b.len, before.n + n);
      px_buf_clear(&b);
      bytes_free(&before);
      break;
    }
    assert_int_equal(rc, UV_ENOMEM);
    buf_bytes(&b, &after);
    assert_bytes_eq(after.p, after.n, before.p, before.n);
    bytes_free(&after);

    /* Memory is back: the same append works, bytes in order. */
    assert_int_equal(px_buf_append(&b, in, n), 0);
    check_buf(&b);
    buf_bytes(&b, &after);
    assert_int_equal(after.n, before.n + n);
    assert_memory_equal(after.p, before.p, before.n);
    assert_memory_equal(after.p + before.n, in, n);
    bytes_free(&after);
    bytes_free(&before);
    px_buf_clear(&b);
  }
  assert_int_equal(nth, 4); /* three new blocks, each a failure point */
  free(in);
}

static void test_reserve_enomem(void **state)
{
  struct px_buf b;
  size_t avail = 12345;

  (void)state;
  px_buf_init(&b);
  assert_int_equal(px_buf_append(&b, S("abc")), 0);
  px_blk_cache_drain();
  fa_fail_all();
  /* Room in the tail: no allocation, so no failure. */
  assert_non_null(px_buf_reserve(&b, 8, &avail));
  assert_int_equal(fa_calls(), 0);
  /* No room: NULL, b unchanged, *avail untouched. */
  avail = 12345;
  assert_null(px_buf_reserve(&b, PX_BLK_SIZE, &avail));
  assert_int_equal(fa_failed(), 1);
  assert_int_equal(avail, 12345);
  assert_ptr_equal(b.head, b.tail);
  check_buf(&b);
  assert_int_equal(px_buf_append(&b, S("x")), 0); /* the tail has room */
  assert_int_equal(px_buf_append(&b, NULL, 0), 0);
  fa_off();
  assert_non_null(px_buf_reserve(&b, PX_BLK_SIZE, &avail));
  assert_int_equal(avail, PX_BLK_SIZE);
  check_buf(&b);
  assert_int_equal(b.len, 4);
  px_buf_clear(&b);
}

/* With spare blocks cached, appending allocates nothing: it works even
 * with every allocation failing. */
static void test_cache_serves_without_malloc(void **state)
{
  struct px_buf b;
  char *in = malloc(2 * PX_BLK_SIZE);

  (void)state;
  assert_non_null(in);
  fill(in, 2 * PX_BLK_SIZE, 9);
  px_buf_init(&b);
  assert_int_equal(px_buf_append(&b, in, 2 * PX_BLK_SIZE), 0);
  px_buf_clear(&b); /* two blocks into the cache */
  fa_fail_all();
  assert_int_equal(px_buf_append(&b, in, 2 * PX_BLK_SIZE), 0);
  assert_int_equal(fa_calls(), 0);
  assert_int_equal(px_buf_append(&b, S("one more")), UV_ENOMEM);
  fa_off();
  check_buf(&b);
  assert_int_equal(b.len, 2 * PX_BLK_SIZE);
  px_buf_clear(&b);
  free(in);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_append_take_round_trip, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_reserve_commit, setup, teardown),
    cmocka_unit_test_setup_teardown(test_move, setup, teardown),
    cmocka_unit_test_setup_teardown(test_init_unmarked, setup, teardown),
    cmocka_unit_test_setup_teardown(test_unmarked_not_wiped, setup, teardown),
    cmocka_unit_test_setup_teardown(test_clear_wipes, setup, teardown),
    cmocka_unit_test_setup_teardown(test_taken_chain_wiped, setup, teardown),
    cmocka_unit_test_setup_teardown(test_mark_applies_to_queued, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_move_keeps_and_spreads_mark, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_wiped_before_free, setup, teardown),
    cmocka_unit_test_setup_teardown(test_append_enomem, setup, teardown),
    cmocka_unit_test_setup_teardown(test_reserve_enomem, setup, teardown),
    cmocka_unit_test_setup_teardown(test_cache_serves_without_malloc, setup,
                                    teardown),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);

  px_blk_cache_drain();
  return rc;
}
