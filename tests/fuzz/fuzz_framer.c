/* fuzz_framer.c - libFuzzer target for the response framer in
 * proxy/pop3.c (px_framer_*), the upstream-facing parser.
 *
 * Input: 8 header bytes, then the upstream's bytes.
 *   [0] shape (% 3) and line mode (bit 2)
 *   [1] max_line: 3..130, or 512..1023 when bit 7 is set
 *   [2] output buffer size: 2..257
 *   [3..7] seed for the split points and the second output size
 * The stream is framed whole and at seeded random splits; the event
 * streams (consecutive BODY events merged), the error code, the bytes
 * consumed and the final state must be identical. Also checked: a done
 * framer consumes nothing, BODY bytes lie in the caller's buffer, STATUS,
 * CONT and LINE texts obey the contract, and px_framer_reset leaves no
 * leak (LSan). abort() on any violation.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Iproxy
 *        -Itests tests/fuzz/fuzz_framer.c proxy/pop3.c proxy/dot.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pop3.h"
#include "px.h"
#include "testutil.h"

#define HDR 8

struct ev {
  enum px_fr_ev ev;
  int ok;
  size_t n;
};

struct trace {
  struct ev *ev;
  size_t nev, cap;
  struct bytes data;
  int err;
  size_t consumed;
  enum px_fr_st st;
};

static void trace_add(struct trace *t, const struct px_fr_out *o)
{
  if (o->ev == PX_FR_BODY) {
    if (o->n == 0)
      return;
    bytes_add(&t->data, o->p, o->n);
    if (t->nev > 0 && t->ev[t->nev - 1].ev == PX_FR_BODY) {
      t->ev[t->nev - 1].n += o->n;
      return;
    }
  } else if (o->ev != PX_FR_END) {
    bytes_add(&t->data, o->p, o->n);
  }
  if (t->nev == t->cap) {
    t->cap = t->cap ? 2 * t->cap : 16;
    t->ev = realloc(t->ev, t->cap * sizeof *t->ev);
    CHECK(t->ev != NULL);
  }
  t->ev[t->nev].ev = o->ev;
  t->ev[t->nev].ok = o->ev == PX_FR_STATUS ? o->ok : 0;
  t->ev[t->nev].n = o->ev == PX_FR_END ? 0 : o->n;
  t->nev++;
}

/* The contract's promises about one event. */
static void check_event(const struct px_framer *f, const struct px_fr_out *o,
                        const char *out, size_t outcap, size_t max)
{
  switch (o->ev) {
  case PX_FR_STATUS:
    CHECK(o->ok == 0 || o->ok == 1);
    CHECK(o->n + 2 <= max);
    if (o->ok)
      CHECK(o->n >= 3 && memcmp(o->p, "+OK", 3) == 0 &&
            (o->n == 3 || o->p[3] == ' '));
    else
      CHECK(o->n >= 4 && memcmp(o->p, "-ERR", 4) == 0 &&
            (o->n == 4 || o->p[4] == ' '));
    CHECK(memchr(o->p, '\r', o->n) == NULL && memchr(o->p, '\n', o->n) == NULL);
    CHECK(memchr(o->p, '\0', o->n) == NULL);
    CHECK(f->st == (o->ok && f->shape == PX_SHAPE_MULTI ? PX_FRS_BODY
                                                         : PX_FRS_DONE));
    break;
  case PX_FR_CONT:
    CHECK(f->shape == PX_SHAPE_SASL);
    CHECK(o->n + 2 <= max);
    CHECK(o->n >= 1 && o->p[0] == '+' && (o->n == 1 || o->p[1] == ' '));
    CHECK(memchr(o->p, '\r', o->n) == NULL && memchr(o->p, '\n', o->n) == NULL);
    CHECK(f->st == PX_FRS_STATUS);
    break;
  case PX_FR_BODY:
    CHECK(f->shape == PX_SHAPE_MULTI && !f->lines);
    CHECK(o->n <= outcap);
    CHECK(o->n == 0 || (o->p >= out && o->p + o->n <= out + outcap));
    break;
  case PX_FR_LINE:
    CHECK(f->shape == PX_SHAPE_MULTI && f->lines);
    CHECK(o->n >= 2 && o->n <= max);
    CHECK(o->p[o->n - 2] == '\r' && o->p[o->n - 1] == '\n');
    CHECK(memchr(o->p, '\r', o->n - 2) == NULL);
    CHECK(memchr(o->p, '\n', o->n - 2) == NULL);
    CHECK(memchr(o->p, '\0', o->n) == NULL);
    break;
  case PX_FR_END:
    CHECK(f->shape == PX_SHAPE_MULTI);
    CHECK(f->st == PX_FRS_DONE);
    break;
  case PX_FR_NONE:
    break;
  default:
    CHECK(0);
  }
}

/* Frames in[0..n), fed whole (rng NULL) or in chunks; bytes a call leaves
 * are offered again with the next chunk. */
static void run(const uint8_t *hdr, const char *in, size_t n, uint64_t *rng,
                size_t outcap, struct trace *t)
{
  struct px_framer f;
  enum px_shape shape = (enum px_shape)(hdr[0] % 3);
  int lines = (hdr[0] >> 2) & 1;
  size_t max = hdr[1] & 0x80 ? 512 + (size_t)(hdr[1] & 0x7f) * 4
                             : 3 + (size_t)hdr[1];
  struct bytes carry = {0};
  size_t off = 0, iters = 0;
  char *out = malloc(outcap);

  CHECK(out != NULL);
  memset(t, 0, sizeof *t);
  memset(&f, 0xa5, sizeof f);
  px_framer_start(&f, shape, lines, max);
  for (;;) {
    size_t len = next_chunk(rng ? SPLIT_RANDOM : SPLIT_WHOLE, rng, n - off);
    size_t blen = carry.n + len, pos = 0;
    char *b = malloc(blen ? blen : 1);

    CHECK(b != NULL);
    if (carry.n > 0)
      memcpy(b, carry.p, carry.n);
    if (len > 0)
      memcpy(b + carry.n, in + off, len);
    off += len;
    carry.n = 0;
    for (;;) {
      struct px_fr_out o;
      enum px_fr_st before = f.st;
      ssize_t rc = px_framer_feed(&f, b + pos, blen - pos, out, outcap, &o);

      CHECK(++iters < 4 * n + 100);
      if (rc < 0) {
        CHECK(rc == PX_ELINE || rc == PX_EPROTO);
        t->err = (int)rc;
        free(b);
        goto done;
      }
      CHECK((size_t)rc <= blen - pos);
      if (before == PX_FRS_DONE)
        CHECK(rc == 0 && o.ev == PX_FR_NONE);
      check_event(&f, &o, out, outcap, max);
      pos += (size_t)rc;
      if (o.ev != PX_FR_NONE)
        trace_add(t, &o);
      if (rc == 0 && o.ev == PX_FR_NONE)
        break;
    }
    bytes_add(&carry, b + pos, blen - pos);
    free(b);
    if (f.st == PX_FRS_DONE || off == n)
      break;
  }
  t->consumed = off - carry.n;
done:
  t->st = f.st;
  px_framer_reset(&f);
  CHECK(f.lbuf == NULL);
  bytes_free(&carry);
  free(out);
}

static void trace_free(struct trace *t)
{
  free(t->ev);
  bytes_free(&t->data);
}

static void same(const struct trace *a, const struct trace *b)
{
  CHECK(a->err == b->err);
  CHECK(a->nev == b->nev);
  for (size_t i = 0; i < a->nev; i++)
    CHECK(a->ev[i].ev == b->ev[i].ev && a->ev[i].ok == b->ev[i].ok &&
          a->ev[i].n == b->ev[i].n);
  CHECK(a->data.n == b->data.n);
  CHECK(a->data.n == 0 || memcmp(a->data.p, b->data.p, a->data.n) == 0);
  if (a->err == 0)
    CHECK(a->consumed == b->consumed && a->st == b->st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct trace whole, split, split2;
  uint64_t seed = 0, rng;
  size_t outcap;
  const char *in;
  size_t n;

  if (size < HDR)
    return 0;
  outcap = 2 + data[2];
  memcpy(&seed, data + 3, 5);
  in = (const char *)data + HDR;
  n = size - HDR;

  run(data, in, n, NULL, 4096, &whole);
  rng = seed;
  run(data, in, n, &rng, outcap, &split);
  same(&whole, &split);
  rng = seed ^ 0x5bd1e995;
  run(data, in, n, &rng, 2, &split2);
  same(&whole, &split2);
  trace_free(&whole);
  trace_free(&split);
  trace_free(&split2);
  return 0;
}
