/* fuzz_dot.c - libFuzzer target for proxy/dot.c.
 *
 * Input: 4 bytes that seed the choice of split points and output caps,
 * then a body. Checks, with abort() on any violation:
 *  - the encoder's output does not depend on how the body is split or on
 *    the output cap (cap >= 2 always progresses, never splits a stuffed
 *    pair, and matches a three-line reference encoder);
 *  - the stuffed body plus its terminator decodes to the end exactly, never
 *    earlier (no premature CRLF.CRLF), whatever follows it;
 *  - a body without bare LF comes back unchanged (plus the CRLF the
 *    terminator adds when it did not end in CRLF);
 *  - the decoder fed the raw input whole or at random splits gives the same
 *    output, consumed count and final state, and never writes past n bytes.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Iproxy
 *        -Itests tests/fuzz/fuzz_dot.c proxy/dot.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dot.h"
#include "testutil.h"

/* Bodies beyond this are cut: the interesting cases are small. */
#define BODY_MAX 4096

/* Encodes body[0..n) in chunks (whole when rng is NULL) with caps from
 * rng (>= 2), and appends the terminator. */
static void encode(const char *body, size_t n, uint64_t *rng,
                   struct bytes *res)
{
  struct px_dot_enc e;
  size_t off = 0;
  int sol = 1;
  char end[PX_DOT_END_MAX];

  px_dot_enc_init(&e);
  while (off < n) {
    size_t len = next_chunk(rng ? SPLIT_RANDOM : SPLIT_WHOLE, rng, n - off);
    size_t cap = rng ? 2 + (size_t)(rng_next(rng) % 8) : 2 * len;
    char *in = malloc(len);
    char *out = malloc(cap);
    size_t outn = 0, used, k = 0;

    CHECK(in != NULL && out != NULL);
    memcpy(in, body + off, len);
    used = px_dot_encode(&e, in, len, out, cap, &outn);
    CHECK(used >= 1 && used <= len);
    CHECK(outn <= cap);
    if (cap >= 2 * len)
      CHECK(used == len);
    /* Exactly the stuffed form of what was consumed... */
    for (size_t i = 0; i < used; i++) {
      if (sol && in[i] == '.') {
        CHECK(k < outn && out[k] == '.');
        k++;
      }
      CHECK(k < outn && out[k] == in[i]);
      k++;
      sol = in[i] == '\n';
    }
    CHECK(k == outn);
    /* ...and as much as fits. */
    if (used < len)
      CHECK(outn + ((sol && in[used] == '.') ? 2 : 1) > cap);
    bytes_add(res, out, outn);
    off += used;
    CHECK(e.bytes == off);
    free(in);
    free(out);
  }
  bytes_add(res, end, px_dot_encode_end(&e, end));
}

struct dec {
  struct bytes out;
  size_t consumed;
  enum px_dot_st st;
};

/* Decodes in[0..n) in chunks (whole when rng is NULL); every call gets an
 * input buffer and an output buffer of exactly the size offered. */
static void decode(const char *in, size_t n, uint64_t *rng, struct dec *r)
{
  struct px_dot d;
  size_t off = 0;

  memset(r, 0, sizeof *r);
  px_dot_init(&d);
  while (off < n && d.st != PX_DOT_DONE) {
    size_t len = next_chunk(rng ? SPLIT_RANDOM : SPLIT_WHOLE, rng, n - off);
    char *chunk = malloc(len);
    size_t coff = 0;

    CHECK(chunk != NULL);
    memcpy(chunk, in + off, len);
    while (coff < len && d.st != PX_DOT_DONE) {
      size_t left = len - coff, outn = 0, used;
      char *out = malloc(left);
      CHECK(out != NULL);
      used = px_dot_decode(&d, chunk + coff, left, out, &outn);
      CHECK(used <= left && outn <= left);
      CHECK(used > 0 || outn > 0 || d.st == PX_DOT_DONE);
      bytes_add(&r->out, out, outn);
      coff += used;
      free(out);
    }
    off += coff;
    free(chunk);
  }
  CHECK(d.bytes == r->out.n);
  if (d.st == PX_DOT_DONE) {
    char o[4];
    size_t on = 1;
    CHECK(px_dot_decode(&d, "a\r\n", 3, o, &on) == 0 && on == 0);
  } else {
    CHECK(off == n);
  }
  r->consumed = off;
  r->st = d.st;
}

/* The one-pass relay of raw wire bytes, in chunks with small outputs:
 * must equal encode(decode(in)) (+ the terminator when one was seen). */
static void relay(const char *in, size_t n, uint64_t *rng, struct bytes *res,
                  size_t *consumed, enum px_dot_st *st)
{
  struct px_dot d;
  struct px_dot_enc e;
  size_t off = 0;

  px_dot_init(&d);
  px_dot_enc_init(&e);
  while (off < n && d.st != PX_DOT_DONE) {
    size_t len = next_chunk(SPLIT_RANDOM, rng, n - off);
    size_t cap = 4 + (size_t)(rng_next(rng) % 12), outn = 0, used;
    char *out = malloc(cap);
    CHECK(out != NULL);
    used = px_dot_relay(&d, &e, in + off, len, out, cap, &outn);
    CHECK(used <= len && outn <= cap);
    CHECK(used > 0 || outn > 0);
    bytes_add(res, out, outn);
    off += used;
    free(out);
  }
  if (d.st == PX_DOT_DONE) {
    char end[PX_DOT_END_MAX];
    bytes_add(res, end, px_dot_encode_end(&e, end));
  }
  *consumed = off;
  *st = d.st;
}

static int same(const struct bytes *a, const struct bytes *b)
{
  return a->n == b->n && (a->n == 0 || memcmp(a->p, b->p, a->n) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  uint64_t seed = 0, rng;
  const char *body;
  size_t n;
  struct bytes whole = {0}, split = {0}, wire = {0};
  struct dec dw, ds;
  int bare_lf = 0, ends_crlf;

  if (size < 4)
    return 0;
  memcpy(&seed, data, 4);
  body = (const char *)data + 4;
  n = size - 4 < BODY_MAX ? size - 4 : BODY_MAX;

  /* Encoder: split- and cap-invariant. */
  encode(body, n, NULL, &whole);
  rng = seed;
  encode(body, n, &rng, &split);
  CHECK(same(&whole, &split));

  /* Decoding stuffed + terminator + trailing bytes ends exactly at the
   * terminator, in every split. */
  bytes_add(&wire, whole.p, whole.n);
  bytes_add(&wire, ".\r\n+OK\r\n", 8);
  decode(wire.p, wire.n, NULL, &dw);
  CHECK(dw.st == PX_DOT_DONE);
  CHECK(dw.consumed == whole.n);
  rng = seed ^ 0xabcdef;
  decode(wire.p, wire.n, &rng, &ds);
  CHECK(ds.st == PX_DOT_DONE && ds.consumed == whole.n);
  CHECK(same(&dw.out, &ds.out));

  /* Without bare LF the body comes back. */
  for (size_t i = 0; i < n; i++)
    if (body[i] == '\n' && (i == 0 || body[i - 1] != '\r'))
      bare_lf = 1;
  ends_crlf = n >= 2 && body[n - 2] == '\r' && body[n - 1] == '\n';
  if (!bare_lf) {
    size_t want = n + ((n == 0 || ends_crlf) ? 0 : 2);
    CHECK(dw.out.n == want);
    CHECK(n == 0 || memcmp(dw.out.p, body, n) == 0);
    if (want > n)
      CHECK(memcmp(dw.out.p + n, "\r\n", 2) == 0);
  }
  bytes_free(&dw.out);
  bytes_free(&ds.out);

  /* Decoder on the raw input: split-invariant. */
  decode(body, n, NULL, &dw);
  rng = seed * 3 + 1;
  decode(body, n, &rng, &ds);
  CHECK(dw.consumed == ds.consumed && dw.st == ds.st);
  CHECK(same(&dw.out, &ds.out));
  CHECK(dw.out.n <= dw.consumed);

  /* Relay on the raw input: decode then encode, in one pass. */
  {
    struct bytes ref = {0}, got = {0};
    size_t rc;
    enum px_dot_st rst;
    encode(dw.out.p, dw.out.n, NULL, &ref);
    if (dw.st != PX_DOT_DONE) {
      /* No terminator came in: none goes out. encode() added one. */
      int crlf = dw.out.n >= 2 &&
                 memcmp(dw.out.p + dw.out.n - 2, "\r\n", 2) == 0;
      ref.n -= dw.out.n == 0 || crlf ? 3 : 5;
    }
    rng = seed * 7 + 5;
    relay(body, n, &rng, &got, &rc, &rst);
    CHECK(rc == dw.consumed && rst == dw.st);
    CHECK(same(&ref, &got));
    bytes_free(&ref);
    bytes_free(&got);
  }
  bytes_free(&dw.out);
  bytes_free(&ds.out);

  bytes_free(&whole);
  bytes_free(&split);
  bytes_free(&wire);
  return 0;
}
