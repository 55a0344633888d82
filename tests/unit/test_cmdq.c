/* test_cmdq.c - unit tests for proxy/cmdq.c, the FIFO of commands awaiting
 * their responses.
 *
 * Tests the contracts in cmdq.h: FIFO order, the max bound, copies of the
 * lines, pop and clear freeing everything (LSan checks at exit) and wiping
 * every line first (failalloc's free hook looks), and a push that fails
 * for memory leaving the queue as it was.
 *
 * Build: gcc -std=c11 -Wall -Wextra -Werror -g -fsanitize=address,undefined
 *        -Iproxy -Itests proxy/dot.c proxy/pop3.c proxy/cmdq.c
 *        tests/unit/failalloc.c tests/unit/test_cmdq.c
 *        -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free
 *        -lcmocka -lcrypto
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmdq.h"
#include "failalloc.h"
#include "px.h"
#include "testutil.h"

#define S(x) x, sizeof(x) - 1

/* Walks the list and checks n, head, tail and the links agree. */
static void check_queue(const struct px_cmdq *q)
{
  unsigned count = 0;
  const struct px_cmdq_ent *e, *last = NULL;

  for (e = q->head; e != NULL; e = e->next) {
    last = e;
    count++;
    assert_true(count <= q->n);
  }
  assert_int_equal(count, q->n);
  assert_ptr_equal(q->tail, last);
  assert_ptr_equal(px_cmdq_head(q), q->head);
  assert_int_equal(px_cmdq_full(q), q->n >= q->max);
}

static void test_init_empty(void **state)
{
  struct px_cmdq q;

  (void)state;
  memset(&q, 0xa5, sizeof q);
  px_cmdq_init(&q, 8);
  assert_null(px_cmdq_head(&q));
  assert_int_equal(q.n, 0);
  assert_int_equal(q.max, 8);
  assert_false(px_cmdq_full(&q));
  check_queue(&q);
  px_cmdq_clear(&q); /* clearing an empty queue is fine */
  assert_null(px_cmdq_head(&q));
  check_queue(&q);
}

/* Entries come out in the order they went in, with their kind and an exact
 * copy of their line. */
static void test_fifo_order(void **state)
{
  struct px_cmdq q;
  struct px_cmdq_ent *e;
  char line[] = "RETR 1\r\n";

  (void)state;
  px_cmdq_init(&q, 10);
  e = px_cmdq_push(&q, PX_CQ_GREETING, NULL, 0);
  assert_non_null(e);
  assert_int_equal(e->kind, PX_CQ_GREETING);
  assert_int_equal(e->len, 0);
  e = px_cmdq_push(&q, PX_CQ_RELAY, line, 8);
  assert_non_null(e);
  assert_int_equal(e->kind, PX_CQ_RELAY);
  assert_int_equal(e->len, 8);
  assert_memory_equal(e->line, "RETR 1\r\n", 8);
  /* The entry holds a copy: changing the caller's buffer changes nothing. */
  memset(line, 'Z', 8);
  assert_memory_equal(e->line, "RETR 1\r\n", 8);
  e = px_cmdq_push(&q, PX_CQ_LOCAL, S("-ERR Unknown command\r\n"));
  assert_non_null(e);
  e->close_after = 1;
  e = px_cmdq_push(&q, PX_CQ_RELAY, S("NOOP\r\n"));
  assert_non_null(e);
  assert_int_equal(q.n, 4);
  check_queue(&q);

  e = px_cmdq_head(&q);
  assert_int_equal(e->kind, PX_CQ_GREETING);
  px_cmdq_pop(&q);
  check_queue(&q);
  e = px_cmdq_head(&q);
  assert_int_equal(e->kind, PX_CQ_RELAY);
  assert_memory_equal(e->line, "RETR 1\r\n", 8);
  px_cmdq_pop(&q);
  e = px_cmdq_head(&q);
  assert_int_equal(e->kind, PX_CQ_LOCAL);
  assert_int_equal(e->close_after, 1);
  assert_int_equal(e->len, 22);
  assert_memory_equal(e->line, "-ERR Unknown command\r\n", 22);
  px_cmdq_pop(&q);
  e = px_cmdq_head(&q);
  assert_int_equal(e->kind, PX_CQ_RELAY);
  assert_memory_equal(e->line, "NOOP\r\n", 6);
  px_cmdq_pop(&q);
  assert_null(px_cmdq_head(&q));
  assert_int_equal(q.n, 0);
  check_queue(&q);

  /* Emptied, it works again (no stale tail). */
  e = px_cmdq_push(&q, PX_CQ_RELAY, S("QUIT\r\n"));
  assert_non_null(e);
  assert_ptr_equal(px_cmdq_head(&q), e);
  assert_ptr_equal(q.tail, e);
  e = px_cmdq_push(&q, PX_CQ_RELAY, S("STAT\r\n"));
  assert_ptr_equal(px_cmdq_head(&q)->next, e);
  check_queue(&q);
  px_cmdq_clear(&q);
}

/* A new entry has no stale state: the session relies on close_after and
 * sent being 0 until it sets them. */
static void test_fresh_entry_fields(void **state)
{
  struct px_cmdq q;

  (void)state;
  px_cmdq_init(&q, 64);
  for (int i = 0; i < 50; i++) {
    struct px_cmdq_ent *e = px_cmdq_push(&q, (enum px_cq_kind)(i % 3),
                                         S("CAPA\r\n"));
    assert_non_null(e);
    assert_null(e->next);
    assert_int_equal(e->close_after, 0);
    assert_int_equal(e->sent, 0);
    e->close_after = 1;
    e->sent = 1;
    if (i % 2)
      px_cmdq_pop(&q);
  }
  px_cmdq_clear(&q);
}

/* max entries are accepted, one more is refused and changes nothing; after
 * a pop there is room for one again. */
static void test_max(void **state)
{
  (void)state;
  for (unsigned max = 0; max <= 5; max++) {
    struct px_cmdq q;
    px_cmdq_init(&q, max);
    for (unsigned i = 0; i < max; i++) {
      assert_false(px_cmdq_full(&q));
      assert_non_null(px_cmdq_push(&q, PX_CQ_RELAY, S("NOOP\r\n")));
    }
    assert_true(px_cmdq_full(&q));
    assert_null(px_cmdq_push(&q, PX_CQ_RELAY, S("NOOP\r\n")));
    assert_null(px_cmdq_push(&q, PX_CQ_LOCAL, S("-ERR\r\n")));
    assert_int_equal(q.n, max);
    check_queue(&q);
    if (max > 0) {
      px_cmdq_pop(&q);
      assert_false(px_cmdq_full(&q));
      assert_non_null(px_cmdq_push(&q, PX_CQ_RELAY, S("RSET\r\n")));
      assert_true(px_cmdq_full(&q));
      assert_memory_equal(q.tail->line, "RSET\r\n", 6);
    }
    px_cmdq_clear(&q);
    assert_int_equal(q.n, 0);
    assert_null(px_cmdq_head(&q));
    assert_false(px_cmdq_full(&q) && max > 0);
    check_queue(&q);
  }
}

/* clear frees every entry, lines of any size included (LSan checks), and
 * leaves an empty, usable queue. */
static void test_clear_frees(void **state)
{
  struct px_cmdq q;
  char *big = malloc(PX_SASL_MAX);

  (void)state;
  assert_non_null(big);
  memset(big, 'A', PX_SASL_MAX);
  px_cmdq_init(&q, 1000);
  for (int i = 0; i < 1000; i++)
    assert_non_null(px_cmdq_push(&q, (enum px_cq_kind)(i % PX_CQ_COUNT), big,
                                 (size_t)i * 7 % PX_SASL_MAX));
  assert_true(px_cmdq_full(&q));
  check_queue(&q);
  px_cmdq_clear(&q);
  assert_int_equal(q.n, 0);
  assert_null(px_cmdq_head(&q));
  check_queue(&q);
  assert_non_null(px_cmdq_push(&q, PX_CQ_RELAY, big, PX_SASL_MAX));
  assert_memory_equal(px_cmdq_head(&q)->line, big, PX_SASL_MAX);
  px_cmdq_clear(&q);
  px_cmdq_clear(&q);
  free(big);
}

/* Random pushes and pops against a model ring. */
static void test_random_model(void **state)
{
  (void)state;
  for (uint64_t seed = 1; seed <= 200; seed++) {
    uint64_t rng = seed;
    unsigned max = 1 + (unsigned)(rng_next(&rng) % 16);
    unsigned model[32], mh = 0, mn = 0, next_id = 0;
    struct px_cmdq q;

    px_cmdq_init(&q, max);
    for (int step = 0; step < 500; step++) {
      if (rng_next(&rng) % 3 != 0) {
        char line[32];
        int len = snprintf(line, sizeof line, "DELE %u\r\n", next_id);
        struct px_cmdq_ent *e =
          px_cmdq_push(&q, PX_CQ_RELAY, line, (size_t)len);
        if (mn == max) {
          assert_null(e);
        } else {
          assert_non_null(e);
          model[(mh + mn++) % 32] = next_id++;
        }
      } else if (mn > 0) {
        char want[32];
        int len = snprintf(want, sizeof want, "DELE %u\r\n", model[mh]);
        struct px_cmdq_ent *e = px_cmdq_head(&q);
        assert_non_null(e);
        assert_int_equal(e->len, (size_t)len);
        assert_memory_equal(e->line, want, (size_t)len);
        px_cmdq_pop(&q);
        mh = (mh + 1) % 32;
        mn--;
      }
      assert_int_equal(q.n, mn);
      assert_int_equal(px_cmdq_full(&q), mn == max);
    }
    check_queue(&q);
    px_cmdq_clear(&q);
  }
}

/* A pipeline as the session builds it: parsed, re-serialized lines with
 * their response shapes, answered strictly in order. */
static void test_pipeline(void **state)
{
  static const struct {
    const char *in;
    const char *canon;
    enum px_shape shape;
  } t[] = {
    {"user alice", "USER alice\r\n", PX_SHAPE_SINGLE},
    {"PASS s e c", "PASS s e c\r\n", PX_SHAPE_SINGLE},
    {"list", "LIST\r\n", PX_SHAPE_MULTI},
    {"LIST 2", "LIST 2\r\n", PX_SHAPE_SINGLE},
    {"retr 1 ", "RETR 1\r\n", PX_SHAPE_MULTI},
    {"AUTH PLAIN", "AUTH PLAIN\r\n", PX_SHAPE_SASL},
    {"top 1 5", "TOP 1 5\r\n", PX_SHAPE_MULTI},
    {"quit", "QUIT\r\n", PX_SHAPE_SINGLE},
  };
  struct px_cmdq q;

  (void)state;
  px_cmdq_init(&q, 64);
  for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
    struct px_cmd c;
    char out[PX_CMD_MAX + 1];
    size_t n;
    struct px_cmdq_ent *e;

    assert_int_equal(px_pop3_parse_cmd(t[i].in, strlen(t[i].in), 0, &c), 0);
    n = px_pop3_format_cmd(&c, out, sizeof out);
    assert_true(n > 0);
    e = px_cmdq_push(&q, PX_CQ_RELAY, out, n);
    assert_non_null(e);
    e->id = c.id;
    e->shape = px_pop3_shape(&c);
  }
  for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
    struct px_cmdq_ent *e = px_cmdq_head(&q);
    assert_non_null(e);
    assert_int_equal(e->len, strlen(t[i].canon));
    assert_memory_equal(e->line, t[i].canon, e->len);
    assert_int_equal(e->shape, t[i].shape);
    px_cmdq_pop(&q);
  }
  assert_null(px_cmdq_head(&q));
  px_cmdq_clear(&q);
}

/* Watches free() for the entries of a queue: each must reach it with its
 * line wiped. The entries are noted before they are freed. */
struct watch {
  const struct px_cmdq_ent *ent[16];
  size_t len[16];
  unsigned n, freed;
};

static void watch_free_cb(void *p, void *arg)
{
  struct watch *w = arg;

  for (unsigned i = 0; i < w->n; i++) {
    if (p != NULL && p == w->ent[i]) {
      for (size_t k = 0; k < w->len[i]; k++)
        TU_CHECK(w->ent[i]->line[k] == 0);
      w->ent[i] = NULL;
      w->freed++;
    }
  }
}

static void watch_queue(struct watch *w, const struct px_cmdq *q)
{
  memset(w, 0, sizeof *w);
  for (const struct px_cmdq_ent *e = q->head; e != NULL; e = e->next) {
    TU_CHECK(w->n < 16);
    w->len[w->n] = e->len;
    w->ent[w->n++] = e;
  }
}

static void push_secrets(struct px_cmdq *q)
{
  assert_non_null(px_cmdq_push(q, PX_CQ_RELAY, S("USER alice\r\n")));
  assert_non_null(px_cmdq_push(q, PX_CQ_RELAY, S("PASS hunter2\r\n")));
  assert_non_null(px_cmdq_push(q, PX_CQ_RELAY, S("AUTH PLAIN\r\n")));
  assert_non_null(px_cmdq_push(q, PX_CQ_RELAY, S("AGFsaWNlAGh1bnRlcjI=\r\n")));
  assert_non_null(px_cmdq_push(q, PX_CQ_GREETING, NULL, 0));
}

static void test_pop_wipes(void **state)
{
  struct px_cmdq q;
  struct watch w;

  (void)state;
  px_cmdq_init(&q, 16);
  push_secrets(&q);
  watch_queue(&w, &q);
  fa_on_free(watch_free_cb, &w);
  while (px_cmdq_head(&q) != NULL)
    px_cmdq_pop(&q);
  fa_on_free(NULL, NULL);
  assert_int_equal(w.freed, 5);
  check_queue(&q);
}

static void test_clear_wipes(void **state)
{
  struct px_cmdq q;
  struct watch w;

  (void)state;
  px_cmdq_init(&q, 16);
  push_secrets(&q);
  watch_queue(&w, &q);
  fa_on_free(watch_free_cb, &w);
  px_cmdq_clear(&q);
  fa_on_free(NULL, NULL);
  assert_int_equal(w.freed, 5);
  check_queue(&q);
}

/* Copies what a queue holds, to compare before and after. */
static void snapshot(const struct px_cmdq *q, struct bytes *out)
{
  for (const struct px_cmdq_ent *e = q->head; e != NULL; e = e->next) {
    bytes_add(out, &e, sizeof e);
    bytes_add(out, e->line, e->len);
  }
}

/* A push refused for memory: NULL, the queue unchanged (count, links,
 * entries), and the same push working once memory is back. */
static void test_push_enomem(void **state)
{
  struct px_cmdq q;
  struct bytes before = { 0 }, after = { 0 };

  (void)state;
  for (unsigned have = 0; have < 3; have++) {
    px_cmdq_init(&q, 8);
    for (unsigned i = 0; i < have; i++)
      assert_non_null(px_cmdq_push(&q, PX_CQ_RELAY, S("NOOP\r\n")));
    snapshot(&q, &before);

    fa_fail_nth(1);
    assert_null(px_cmdq_push(&q, PX_CQ_RELAY, S("PASS hunter2\r\n")));
    fa_off();
    assert_int_equal(fa_failed(), 1);
    check_queue(&q);
    assert_int_equal(q.n, have);
    snapshot(&q, &after);
    assert_bytes_eq(after.p, after.n, before.p, before.n);
    bytes_free(&after);

    /* Every allocation failing: the same. */
    fa_fail_all();
    assert_null(px_cmdq_push(&q, PX_CQ_LOCAL, S("-ERR\r\n")));
    assert_null(px_cmdq_push(&q, PX_CQ_GREETING, NULL, 0));
    fa_off();
    assert_int_equal(fa_failed(), 2);
    check_queue(&q);
    snapshot(&q, &after);
    assert_bytes_eq(after.p, after.n, before.p, before.n);
    bytes_free(&after);

    /* Memory is back. */
    fa_fail_nth(2); /* a push allocates once: the second would fail */
    assert_non_null(px_cmdq_push(&q, PX_CQ_RELAY, S("PASS hunter2\r\n")));
    fa_off();
    assert_int_equal(fa_calls(), 1);
    assert_int_equal(fa_failed(), 0);
    assert_int_equal(q.n, have + 1);
    assert_memory_equal(q.tail->line, "PASS hunter2\r\n", 14);
    check_queue(&q);
    bytes_free(&before);
    px_cmdq_clear(&q);
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_init_empty),
    cmocka_unit_test(test_fifo_order),
    cmocka_unit_test(test_fresh_entry_fields),
    cmocka_unit_test(test_max),
    cmocka_unit_test(test_clear_frees),
    cmocka_unit_test(test_random_model),
    cmocka_unit_test(test_pipeline),
    cmocka_unit_test(test_pop_wipes),
    cmocka_unit_test(test_clear_wipes),
    cmocka_unit_test(test_push_enomem),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
