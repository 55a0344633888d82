/* test_dot.c - unit tests for proxy/dot.c (dot-stuffing, both ways).
 *
 * Tests the contracts in dot.h: every input is fed whole, byte by byte and
 * at random splits (seeded PRNG, many seeds) and must give identical
 * output; encode then decode gives the body back; the encoder never emits
 * a premature terminator. Output buffers are allocated at exactly the size
 * the contract promises, so ASan catches any write beyond it.
 *
 * Build: gcc -std=c11 -Wall -Wextra -Werror -g -fsanitize=address,undefined
 *        -Iproxy -Itests proxy/dot.c tests/unit/test_dot.c -lcmocka
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "dot.h"
#include "testutil.h"

#define SEEDS 300
#define N_ELEMS(a) (sizeof(a) / sizeof *(a))

/* ---- helpers ---------------------------------------------------------- */

/* Result of decoding a whole input. */
struct dec_res {
  struct bytes out;
  size_t consumed;
  enum px_dot_st st;
  uint64_t bytes;
};

/* Decodes in[0..n) fed in chunks. Each chunk is copied into a buffer of
 * exactly its size and decoded into an out buffer of exactly the size of
 * the bytes offered (the contract: out must hold n bytes). A call may stop
 * short of the end of its input (a held ".\r" followed by another byte
 * decodes to two bytes), so the rest of a chunk is offered again; each call
 * must make progress. Unconsumed bytes are allowed only once the decoder is
 * done, and a done decoder consumes nothing. */
static void decode_split(const char *in, size_t n, enum split_mode m,
                         uint64_t seed, struct dec_res *r)
{
  struct px_dot d;
  uint64_t rng = seed;
  size_t off = 0;

  memset(r, 0, sizeof *r);
  px_dot_init(&d);
  assert_int_equal(d.st, PX_DOT_SOL);
  assert_int_equal(d.bytes, 0);
  while (off < n && d.st != PX_DOT_DONE) {
    size_t len = next_chunk(m, &rng, n - off);
    char *chunk = malloc(len);
    size_t coff = 0;

    assert_non_null(chunk);
    memcpy(chunk, in + off, len);
    while (coff < len && d.st != PX_DOT_DONE) {
      size_t left = len - coff;
      char *out = malloc(left);
      size_t outn = (size_t)-1, used;

      assert_non_null(out);
      used = px_dot_decode(&d, chunk + coff, left, out, &outn);
      assert_true(used <= left);
      assert_true(outn <= left);
      assert_true(used > 0 || outn > 0 || d.st == PX_DOT_DONE);
      bytes_add(&r->out, out, outn);
      coff += used;
      free(out);
    }
    off += coff;
    free(chunk);
  }
  r->consumed = off;
  r->st = d.st;
  r->bytes = d.bytes;
  assert_int_equal(d.bytes, r->out.n);
  if (d.st == PX_DOT_DONE) {
    /* Feeding a done decoder consumes nothing. */
    char out[8];
    size_t outn = 99;
    assert_int_equal(px_dot_decode(&d, "x\r\n.\r\n", 6, out, &outn), 0);
    assert_int_equal(outn, 0);
    assert_int_equal(d.st, PX_DOT_DONE);
  } else {
    assert_int_equal(off, n);
  }
}

/* Reference encoder: the contract of px_dot_encode in a few lines. */
static void encode_ref(const char *in, size_t n, struct bytes *out)
{
  int sol = 1;
  for (size_t i = 0; i < n; i++) {
    if (sol && in[i] == '.')
      bytes_add(out, ".", 1);
    bytes_add(out, in + i, 1);
    sol = in[i] == '\n';
  }
  if (n == 0 || (n >= 2 && in[n - 2] == '\r' && in[n - 1] == '\n'))
    bytes_add(out, ".\r\n", 3);
  else
    bytes_add(out, "\r\n.\r\n", 5);
}

/* Encodes in[0..n) fed in chunks, each call given a random output cap
 * (>= 2, sometimes generous); appends the terminator. Checks that every
 * call consumes as much as fits, never splits a stuffed pair, and that
 * e->bytes counts the body. */
static void encode_split(const char *in, size_t n, enum split_mode m,
                         uint64_t seed, int small_caps, struct bytes *res)
{
  struct px_dot_enc e;
  uint64_t rng = seed;
  size_t off = 0;
  int sol = 1; /* the reference's own idea of "start of line" */
  char end[PX_DOT_END_MAX];
  size_t endn;

  px_dot_enc_init(&e);
  assert_int_equal(e.bytes, 0);
  while (off < n) {
    size_t len = next_chunk(m, &rng, n - off);
    size_t cap = small_caps ? 2 + rng_below(&rng, 4) : 2 * len;
    char *chunk = malloc(len);
    char *out = malloc(cap);
    size_t outn = (size_t)-1, used, need = 0;

    assert_non_null(chunk);
    assert_non_null(out);
    memcpy(chunk, in + off, len);
    used = px_dot_encode(&e, chunk, len, out, cap, &outn);
    assert_true(used <= len);
    assert_true(used > 0); /* cap >= 2 guarantees progress */
    assert_true(outn <= cap);
    if (cap >= 2 * len)
      assert_int_equal(used, len);
    /* The output is exactly the stuffed form of the consumed bytes. */
    for (size_t i = 0; i < used; i++) {
      int stuff = sol && chunk[i] == '.';
      if (stuff) {
        assert_true(need + 2 <= outn);
        assert_int_equal(out[need], '.');
        need++;
      }
      assert_true(need < outn);
      assert_int_equal(out[need], chunk[i]);
      need++;
      sol = chunk[i] == '\n';
    }
    assert_int_equal(need, outn);
    /* As much as fits: the next byte (and its stuffing) would not. */
    if (used < len) {
      size_t next = (sol && chunk[used] == '.') ? 2 : 1;
      assert_true(outn + next > cap);
    }
    bytes_add(res, out, outn);
    off += used;
    free(chunk);
    free(out);
    assert_int_equal(e.bytes, off);
  }
  endn = px_dot_encode_end(&e, end);
  assert_true(endn == 3 || endn == 5);
  assert_true(endn <= PX_DOT_END_MAX);
  bytes_add(res, end, endn);
}

/* Builds a random body from pieces that stress the codec: lines ".", "..",
 * ".x", empty lines, 8-bit bytes, NUL, CR-only and LF-only line ends, and
 * sometimes no final newline. bare_lf = 0 keeps every LF after a CR. */
static void random_body(uint64_t *rng, int bare_lf, struct bytes *b)
{
  static const char *const pieces[] = {
    ".",    "..",   ".x",       "x",    "abc",         "\r\n",  "\r\n",
    "\r",   "\n",   "\0",       "\xff", "\x80\xc3\xa9", ".\r\n", "..\r\n",
    ". ",   "\r\n.\r\n", "\r\n..\r\n", "\r.\r", "From x", "\t",
  };
  size_t count = rng_below(rng, 40);

  for (size_t i = 0; i < count; i++) {
    const char *p = pieces[rng_below(rng, N_ELEMS(pieces))];
    size_t len = (p[0] == '\0') ? 1 : strlen(p);
    if (!bare_lf && strchr(p, '\n') != NULL && p[0] != '\0') {
      /* Only pieces whose LFs follow a CR, and no LF right after a
       * trailing CR of the body so far (that would be CRLF anyway). */
      int ok = 1;
      for (size_t j = 0; j < len; j++)
        if (p[j] == '\n' && (j == 0 || p[j - 1] != '\r'))
          ok = 0;
      if (!ok)
        continue;
    }
    bytes_add(b, p, len);
  }
  if (rng_below(rng, 2))
    bytes_add(b, "\r\n", 2);
}

static int has_bare_lf(const char *p, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
      return 1;
  return 0;
}

static int ends_crlf(const char *p, size_t n)
{
  return n >= 2 && p[n - 2] == '\r' && p[n - 1] == '\n';
}

/* The decoder of the stuffed stream s: it must end exactly at the end of s
 * (no premature CRLF.CRLF), in every split; with trailing garbage too. */
static void check_terminates_at_end(const char *s, size_t n, uint64_t seed,
                                    struct bytes *decoded)
{
  struct bytes withtail = {0};
  struct dec_res whole, r;

  bytes_add(&withtail, s, n);
  bytes_add(&withtail, "+OK next\r\n", 10);

  decode_split(withtail.p, withtail.n, SPLIT_WHOLE, 0, &whole);
  assert_int_equal(whole.consumed, n);
  assert_int_equal(whole.st, PX_DOT_DONE);
  assert_int_equal(whole.bytes, whole.out.n);

  for (int m = SPLIT_BYTE; m <= SPLIT_RANDOM; m++) {
    decode_split(withtail.p, withtail.n, (enum split_mode)m, seed, &r);
    assert_int_equal(r.consumed, n);
    assert_int_equal(r.st, PX_DOT_DONE);
    assert_bytes_eq(r.out.p, r.out.n, whole.out.p, whole.out.n);
    bytes_free(&r.out);
  }
  bytes_add(decoded, whole.out.p, whole.out.n);
  bytes_free(&whole.out);
  bytes_free(&withtail);
}

/* ---- decoder: fixed cases --------------------------------------------- */

struct dcase {
  const char *in;
  size_t inlen;
  const char *out;
  size_t outlen;
  size_t consumed;
  enum px_dot_st st;
};

#define S(x) x, sizeof(x) - 1

static const struct dcase dcases[] = {
  /* The CRLF before the terminator stays in the body. */
  {S("a\r\n.\r\n"), S("a\r\n"), 6, PX_DOT_DONE},
  /* The empty body. */
  {S(".\r\n"), S(""), 3, PX_DOT_DONE},
  /* An empty line, then the end. */
  {S("\r\n.\r\n"), S("\r\n"), 5, PX_DOT_DONE},
  /* ".." unstuffs to "." */
  {S("..\r\n.\r\n"), S(".\r\n"), 7, PX_DOT_DONE},
  {S("...\r\n.\r\n"), S("..\r\n"), 8, PX_DOT_DONE},
  {S("a\r\n..b\r\n.\r\n"), S("a\r\n.b\r\n"), 11, PX_DOT_DONE},
  /* Invalid stuffing ".x" is normalised: the dot goes. */
  {S(".x\r\n.\r\n"), S("x\r\n"), 7, PX_DOT_DONE},
  {S(". \r\n.\r\n"), S(" \r\n"), 7, PX_DOT_DONE},
  /* Bytes after the terminator stay unconsumed. */
  {S("a\r\n.\r\nXYZ"), S("a\r\n"), 6, PX_DOT_DONE},
  {S(".\r\n.\r\n"), S(""), 3, PX_DOT_DONE},
  {S(".\r\n+OK\r\n"), S(""), 3, PX_DOT_DONE},
  /* A line starts only after CRLF: bare LF and bare CR do not start one. */
  {S("a\n.\r\n"), S("a\n.\r\n"), 5, PX_DOT_SOL},
  {S("a\n..\r\n.\r\n"), S("a\n..\r\n"), 9, PX_DOT_DONE},
  {S("a\r.\r\n"), S("a\r.\r\n"), 5, PX_DOT_SOL},
  {S("a\n.\nb\r\n.\r\n"), S("a\n.\nb\r\n"), 10, PX_DOT_DONE},
  /* A dot followed by anything but CRLF is removed. */
  {S(".\n.\r\n"), S("\n.\r\n"), 5, PX_DOT_SOL},
  {S(".\rX\r\n.\r\n"), S("\rX\r\n"), 8, PX_DOT_DONE},
  {S(".\r\r\n.\r\n"), S("\r\r\n"), 7, PX_DOT_DONE},
  {S(".\r.\r\n.\r\n"), S("\r.\r\n"), 8, PX_DOT_DONE},
  /* NUL and 8-bit bytes pass through. */
  {S("\0\r\n.\r\n"), S("\0\r\n"), 6, PX_DOT_DONE},
  {S(".\0\r\n.\r\n"), S("\0\r\n"), 7, PX_DOT_DONE},
  {S("\xff\xfe\r\n.\r\n"), S("\xff\xfe\r\n"), 7, PX_DOT_DONE},
  /* CR runs before LF: the last CR pairs with the LF. */
  {S("a\r\r\n.\r\n"), S("a\r\r\n"), 7, PX_DOT_DONE},
  {S("a\r\r\r\n..\r\n.\r\n"), S("a\r\r\r\n.\r\n"), 12, PX_DOT_DONE},
  /* Incomplete input: every state. */
  {S(""), S(""), 0, PX_DOT_SOL},
  {S("a"), S("a"), 1, PX_DOT_TEXT},
  {S("a\r"), S("a\r"), 2, PX_DOT_CR},
  {S("a\r\n"), S("a\r\n"), 3, PX_DOT_SOL},
  {S("a\r\n."), S("a\r\n"), 4, PX_DOT_DOT},
  {S("a\r\n.\r"), S("a\r\n"), 5, PX_DOT_DOTCR},
  {S("."), S(""), 1, PX_DOT_DOT},
  {S(".\r"), S(""), 2, PX_DOT_DOTCR},
  {S(".."), S("."), 2, PX_DOT_TEXT},
  {S("\r"), S("\r"), 1, PX_DOT_CR},
  {S("\n"), S("\n"), 1, PX_DOT_TEXT},
  {S("a\r\n.\n"), S("a\r\n\n"), 5, PX_DOT_TEXT},
};

static void test_decode_cases(void **state)
{
  (void)state;
  for (size_t i = 0; i < N_ELEMS(dcases); i++) {
    const struct dcase *c = &dcases[i];
    for (int m = SPLIT_WHOLE; m <= SPLIT_RANDOM; m++) {
      for (uint64_t seed = 1; seed <= (m == SPLIT_RANDOM ? 50u : 1u);
           seed++) {
        struct dec_res r;
        decode_split(c->in, c->inlen, (enum split_mode)m, seed, &r);
        if (r.consumed != c->consumed || r.st != c->st ||
            r.out.n != c->outlen)
          print_error("case %zu mode %d seed %llu\n", i, m,
                      (unsigned long long)seed);
        assert_int_equal(r.consumed, c->consumed);
        assert_int_equal(r.st, c->st);
        assert_bytes_eq(r.out.p, r.out.n, c->out, c->outlen);
        assert_int_equal(r.bytes, c->outlen);
        bytes_free(&r.out);
      }
    }
  }
}

/* The decoder returns consumed bytes and leaves the rest alone, even when
 * the rest comes in the same buffer as the terminator. */
static void test_decode_leaves_tail(void **state)
{
  static const char in[] = "line\r\n..\r\n.\r\n+OK 2 octets\r\n";
  struct px_dot d;
  char out[sizeof in];
  size_t outn = 0, used;

  (void)state;
  px_dot_init(&d);
  used = px_dot_decode(&d, in, sizeof in - 1, out, &outn);
  assert_int_equal(used, 13);
  assert_int_equal(d.st, PX_DOT_DONE);
  assert_int_equal(outn, 9);
  assert_memory_equal(out, "line\r\n.\r\n", 9);
  assert_int_equal(d.bytes, 9);
  /* Nothing more is consumed, whatever follows. */
  used = px_dot_decode(&d, in + 13, sizeof in - 1 - 13, out, &outn);
  assert_int_equal(used, 0);
  assert_int_equal(outn, 0);
  /* px_dot_init restarts it for the next response. */
  px_dot_init(&d);
  used = px_dot_decode(&d, ".\r\n", 3, out, &outn);
  assert_int_equal(used, 3);
  assert_int_equal(outn, 0);
  assert_int_equal(d.st, PX_DOT_DONE);
}

/* Zero-length feeds change nothing, in every state. */
static void test_decode_empty_feeds(void **state)
{
  static const char in[] = "a\r\n.\r\n";
  struct px_dot d;
  char out[8];
  size_t outn, total = 0;

  (void)state;
  px_dot_init(&d);
  for (size_t i = 0; i < sizeof in - 1; i++) {
    enum px_dot_st st = d.st;
    outn = 7;
    assert_int_equal(px_dot_decode(&d, in + i, 0, out, &outn), 0);
    assert_int_equal(outn, 0);
    assert_int_equal(d.st, st);
    assert_int_equal(px_dot_decode(&d, in + i, 1, out, &outn), 1);
    total += outn;
  }
  assert_int_equal(d.st, PX_DOT_DONE);
  assert_int_equal(total, 3);
}

/* Random byte soup over the interesting alphabet: whole, byte by byte and
 * random splits agree on output, consumed bytes and the final state. */
static void test_decode_split_invariance(void **state)
{
  static const char alpha[] = ".\r\n.\r\nax\0\xff";
  (void)state;
  for (uint64_t seed = 1; seed <= 2000; seed++) {
    uint64_t rng = seed;
    size_t n = rng_below(&rng, 64);
    char in[64];
    struct dec_res whole, r;

    for (size_t i = 0; i < n; i++)
      in[i] = alpha[rng_below(&rng, sizeof alpha - 1)];
    decode_split(in, n, SPLIT_WHOLE, 0, &whole);
    assert_int_equal(whole.bytes, whole.out.n);
    for (int m = SPLIT_BYTE; m <= SPLIT_RANDOM; m++) {
      decode_split(in, n, (enum split_mode)m, seed * 7, &r);
      assert_int_equal(r.consumed, whole.consumed);
      assert_int_equal(r.st, whole.st);
      assert_int_equal(r.bytes, whole.bytes);
      assert_bytes_eq(r.out.p, r.out.n, whole.out.p, whole.out.n);
      bytes_free(&r.out);
    }
    bytes_free(&whole.out);
  }
}

/* ---- encoder: fixed cases --------------------------------------------- */

struct ecase {
  const char *in;
  size_t inlen;
  const char *out; /* stuffed body + terminator */
  size_t outlen;
};

static const struct ecase ecases[] = {
  {S(""), S(".\r\n")},
  {S("a\r\n"), S("a\r\n.\r\n")},
  {S("a"), S("a\r\n.\r\n")},
  {S("."), S("..\r\n.\r\n")},
  {S(".\r\n"), S("..\r\n.\r\n")},
  {S(".."), S("...\r\n.\r\n")},
  {S(".x\r\n"), S("..x\r\n.\r\n")},
  {S("a\r\n.\r\n"), S("a\r\n..\r\n.\r\n")},
  {S("a\r\n.\r\nb"), S("a\r\n..\r\nb\r\n.\r\n")},
  {S("\r\n"), S("\r\n.\r\n")},
  {S("\r\n\r\n"), S("\r\n\r\n.\r\n")},
  /* The encoder stuffs after a bare LF too, and not after a bare CR. */
  {S("a\n.b"), S("a\n..b\r\n.\r\n")},
  {S("a\n.\n"), S("a\n..\n\r\n.\r\n")},
  {S("\n."), S("\n..\r\n.\r\n")},
  {S("a\r.b"), S("a\r.b\r\n.\r\n")},
  /* Only a dot that starts a line. */
  {S("x.y\r\n"), S("x.y\r\n.\r\n")},
  /* LF alone or CR alone is not CRLF. */
  {S("\n"), S("\n\r\n.\r\n")},
  {S("a\n"), S("a\n\r\n.\r\n")},
  {S("a\r"), S("a\r\r\n.\r\n")},
  {S("\r"), S("\r\r\n.\r\n")},
  {S("\n\r"), S("\n\r\r\n.\r\n")},
  /* NUL and 8-bit bytes pass through. */
  {S("\0.\r\n.\0"), S("\0.\r\n..\0\r\n.\r\n")},
  {S("\xff\r\n"), S("\xff\r\n.\r\n")},
};

static void test_encode_cases(void **state)
{
  (void)state;
  for (size_t i = 0; i < N_ELEMS(ecases); i++) {
    const struct ecase *c = &ecases[i];
    struct bytes ref = {0};

    encode_ref(c->in, c->inlen, &ref);
    assert_bytes_eq(ref.p, ref.n, c->out, c->outlen); /* the table is right */
    bytes_free(&ref);
    for (int m = SPLIT_WHOLE; m <= SPLIT_RANDOM; m++) {
      for (int small = 0; small <= 1; small++) {
        for (uint64_t seed = 1; seed <= (m == SPLIT_WHOLE && !small ? 1u : 30u);
             seed++) {
          struct bytes got = {0};
          encode_split(c->in, c->inlen, (enum split_mode)m, seed, small, &got);
          if (got.n != c->outlen || memcmp(got.p, c->out, got.n) != 0)
            print_error("encode case %zu mode %d small %d seed %llu\n", i, m,
                        small, (unsigned long long)seed);
          assert_bytes_eq(got.p, got.n, c->out, c->outlen);
          bytes_free(&got);
        }
      }
    }
  }
}

/* A stuffed pair is never split: with cap 1 a leading "." cannot go out,
 * anything else can; with cap 2 it goes. */
static void test_encode_small_cap(void **state)
{
  struct px_dot_enc e;
  char out[4];
  size_t outn = 99, used;

  (void)state;
  px_dot_enc_init(&e);
  used = px_dot_encode(&e, ".a", 2, out, 1, &outn);
  assert_int_equal(used, 0);
  assert_int_equal(outn, 0);
  assert_int_equal(e.bytes, 0);
  used = px_dot_encode(&e, ".a", 2, out, 2, &outn);
  assert_int_equal(used, 1);
  assert_int_equal(outn, 2);
  assert_memory_equal(out, "..", 2);
  used = px_dot_encode(&e, "a", 1, out, 1, &outn);
  assert_int_equal(used, 1);
  assert_int_equal(outn, 1);
  assert_int_equal(out[0], 'a');
  /* cap 3 with ".." at a line start: "..", then the second "." (not at a
   * line start) is one byte and fits. */
  used = px_dot_encode(&e, "\r\n..", 4, out, 3, &outn);
  assert_int_equal(used, 2);
  assert_int_equal(outn, 2);
  used = px_dot_encode(&e, "..", 2, out, 3, &outn);
  assert_int_equal(used, 2);
  assert_int_equal(outn, 3);
  assert_memory_equal(out, "...", 3);
  /* cap 0 consumes nothing. */
  used = px_dot_encode(&e, "x", 1, out, 0, &outn);
  assert_int_equal(used, 0);
  assert_int_equal(outn, 0);
  assert_int_equal(e.bytes, 6);
  /* cap 2 always progresses, also over a run of dotted lines. */
  {
    static const char body[] = ".\r\n.\r\n.\n.\n..";
    struct bytes got = {0};
    size_t off = 0;
    char end[PX_DOT_END_MAX];
    px_dot_enc_init(&e);
    while (off < sizeof body - 1) {
      used = px_dot_encode(&e, body + off, sizeof body - 1 - off, out, 2,
                           &outn);
      assert_true(used >= 1);
      assert_true(outn <= 2);
      bytes_add(&got, out, outn);
      off += used;
    }
    bytes_add(&got, end, px_dot_encode_end(&e, end));
    assert_bytes_eq(got.p, got.n, S("..\r\n..\r\n..\n..\n...\r\n.\r\n"));
    bytes_free(&got);
  }
}

/* The terminator depends on the last two body bytes, even when they came
 * in different calls. */
static void test_encode_end_across_calls(void **state)
{
  struct px_dot_enc e;
  char out[8], end[PX_DOT_END_MAX];
  size_t outn;

  (void)state;
  px_dot_enc_init(&e);
  assert_int_equal(px_dot_encode_end(&e, end), 3);
  assert_memory_equal(end, ".\r\n", 3);

  px_dot_enc_init(&e);
  px_dot_encode(&e, "a\r", 2, out, sizeof out, &outn);
  px_dot_encode(&e, "\n", 1, out, sizeof out, &outn);
  assert_int_equal(px_dot_encode_end(&e, end), 3);
  assert_memory_equal(end, ".\r\n", 3);

  px_dot_enc_init(&e);
  px_dot_encode(&e, "\r", 1, out, sizeof out, &outn);
  px_dot_encode(&e, "\n", 1, out, sizeof out, &outn);
  px_dot_encode(&e, "", 0, out, sizeof out, &outn);
  assert_int_equal(px_dot_encode_end(&e, end), 3);

  px_dot_enc_init(&e);
  px_dot_encode(&e, "\r\n", 2, out, sizeof out, &outn);
  px_dot_encode(&e, "\n", 1, out, sizeof out, &outn);
  assert_int_equal(px_dot_encode_end(&e, end), 5);
  assert_memory_equal(end, "\r\n.\r\n", 5);

  px_dot_enc_init(&e);
  px_dot_encode(&e, "\n", 1, out, sizeof out, &outn);
  assert_int_equal(px_dot_encode_end(&e, end), 5);

  px_dot_enc_init(&e);
  px_dot_encode(&e, "x", 1, out, sizeof out, &outn);
  px_dot_encode(&e, "\r\n", 2, out, sizeof out, &outn);
  px_dot_encode(&e, ".", 1, out, sizeof out, &outn);
  assert_int_equal(outn, 2);
  assert_int_equal(px_dot_encode_end(&e, end), 5);
  assert_int_equal(e.bytes, 4);
}

/* ---- round trips -------------------------------------------------------- */

/* For bodies without bare LF: decode(encode(x) + end) == x, plus the CRLF
 * the terminator adds when x is not empty and does not end in CRLF. The
 * encoder agrees with the reference at every split and cap. */
static void test_round_trip(void **state)
{
  (void)state;
  for (uint64_t seed = 1; seed <= SEEDS * 5; seed++) {
    uint64_t rng = seed;
    struct bytes body = {0}, ref = {0}, dec = {0};

    random_body(&rng, 0, &body);
    assert_false(has_bare_lf(body.p, body.n));
    encode_ref(body.p, body.n, &ref);
    for (int m = SPLIT_WHOLE; m <= SPLIT_RANDOM; m++) {
      for (int small = 0; small <= 1; small++) {
        struct bytes enc = {0};
        encode_split(body.p, body.n, (enum split_mode)m, seed, small, &enc);
        assert_bytes_eq(enc.p, enc.n, ref.p, ref.n);
        bytes_free(&enc);
      }
    }
    check_terminates_at_end(ref.p, ref.n, seed, &dec);
    if (body.n == 0 || ends_crlf(body.p, body.n)) {
      assert_bytes_eq(dec.p, dec.n, body.p, body.n);
    } else {
      assert_int_equal(dec.n, body.n + 2);
      if (body.n > 0)
        assert_memory_equal(dec.p, body.p, body.n);
      assert_memory_equal(dec.p + body.n, "\r\n", 2);
    }
    bytes_free(&body);
    bytes_free(&ref);
    bytes_free(&dec);
  }
}

/* For every body, bare LF included, the stuffed output holds no premature
 * terminator: the decoder stops exactly at the end of encode + end. */
static void test_no_premature_end(void **state)
{
  (void)state;
  for (uint64_t seed = 1; seed <= SEEDS * 5; seed++) {
    uint64_t rng = seed ^ 0x5555;
    struct bytes body = {0}, enc = {0}, dec = {0};

    random_body(&rng, 1, &body);
    encode_split(body.p, body.n, SPLIT_RANDOM, seed, (int)(seed & 1), &enc);
    check_terminates_at_end(enc.p, enc.n, seed, &dec);
    bytes_free(&body);
    bytes_free(&enc);
    bytes_free(&dec);
  }
}

/* Every body of up to 6 bytes over {".", CR, LF, "a"}: exhaustive. */
static void test_exhaustive_small(void **state)
{
  static const char alpha[] = ".\r\na";
  (void)state;
  for (size_t len = 0; len <= 6; len++) {
    size_t total = 1;
    for (size_t i = 0; i < len; i++)
      total *= 4;
    for (size_t k = 0; k < total; k++) {
      char body[8];
      size_t v = k;
      struct bytes enc = {0}, ref = {0}, dec = {0};

      for (size_t i = 0; i < len; i++, v /= 4)
        body[i] = alpha[v % 4];
      encode_split(body, len, SPLIT_RANDOM, k + 1, (int)(k & 1), &enc);
      encode_ref(body, len, &ref);
      assert_bytes_eq(enc.p, enc.n, ref.p, ref.n);
      check_terminates_at_end(enc.p, enc.n, k + 1, &dec);
      if (!has_bare_lf(body, len)) {
        size_t want = len + ((len == 0 || ends_crlf(body, len)) ? 0 : 2);
        assert_int_equal(dec.n, want);
        if (len > 0)
          assert_memory_equal(dec.p, body, len);
      }
      bytes_free(&enc);
      bytes_free(&ref);
      bytes_free(&dec);
    }
  }
}

/* Re-stuffing a correctly stuffed stream (no bare LF) gives its bytes back:
 * the byte-for-byte relay promise. */
static void test_restuff_identity(void **state)
{
  (void)state;
  for (uint64_t seed = 1; seed <= SEEDS; seed++) {
    uint64_t rng = seed * 31;
    struct bytes body = {0}, wire = {0}, dec = {0}, again = {0};

    random_body(&rng, 0, &body);
    encode_ref(body.p, body.n, &wire);
    check_terminates_at_end(wire.p, wire.n, seed, &dec);
    encode_split(dec.p, dec.n, SPLIT_RANDOM, seed, 0, &again);
    assert_bytes_eq(again.p, again.n, wire.p, wire.n);
    bytes_free(&body);
    bytes_free(&wire);
    bytes_free(&dec);
    bytes_free(&again);
  }
}

/* A large body (1 MiB, one 512 KiB line) goes through in random chunks. */
static void test_large_body(void **state)
{
  size_t n = 1 << 20;
  char *body = malloc(n);
  struct bytes enc = {0}, dec = {0};

  (void)state;
  assert_non_null(body);
  for (size_t i = 0; i < n; i++)
    body[i] = (char)('a' + i % 26);
  for (size_t i = 4096; i < n / 2; i += 997) {
    body[i] = '\r';
    body[i + 1] = '\n';
    body[i + 2] = '.';
  }
  memcpy(body + n - 2, "\r\n", 2);
  encode_split(body, n, SPLIT_RANDOM, 42, 0, &enc);
  check_terminates_at_end(enc.p, enc.n, 42, &dec);
  assert_bytes_eq(dec.p, dec.n, body, n);
  bytes_free(&enc);
  bytes_free(&dec);
  free(body);
}

/* The one-pass relay equals decode-then-encode for any input, any split
 * and any output room: random wire bytes over ".", CR, LF and text, some
 * with a terminator and bytes after it. */
static void relay_ref(const char *in, size_t n, struct bytes *out,
                      size_t *consumed)
{
  struct px_dot d;
  struct px_dot_enc e;
  char *dec = malloc(n + 1), *enc = malloc(2 * n + PX_DOT_END_MAX + 1);
  size_t i = 0, dn = 0, en, endn;

  assert_non_null(dec);
  assert_non_null(enc);
  px_dot_init(&d);
  px_dot_enc_init(&e);
  while (i < n && d.st != PX_DOT_DONE) {
    size_t on, used = px_dot_decode(&d, in + i, n - i, dec + dn, &on);
    i += used;
    dn += on;
  }
  assert_int_equal(px_dot_encode(&e, dec, dn, enc, 2 * n + 1, &en), dn);
  endn = d.st == PX_DOT_DONE ? px_dot_encode_end(&e, enc + en) : 0;
  bytes_add(out, enc, en + endn);
  *consumed = i;
  free(dec);
  free(enc);
}

static void test_relay_equals_decode_encode(void **state)
{
  static const char alpha[] = ".\r\n.ab\n";
  (void)state;
  for (uint64_t seed = 1; seed <= 20000; seed++) {
    uint64_t rng = seed;
    size_t n = rng_below(&rng, 300), i = 0, refused;
    char *in = malloc(n + 5);
    struct bytes ref = {0}, got = {0};
    struct px_dot d;
    struct px_dot_enc e;

    assert_non_null(in);
    for (size_t k = 0; k < n; k++)
      in[k] = alpha[rng_below(&rng, sizeof alpha - 1)];
    if (n > 10 && rng_below(&rng, 2) == 0)
      memcpy(in + n - 8, "\r\n.\r\nxyz", 8);
    relay_ref(in, n, &ref, &refused);

    px_dot_init(&d);
    px_dot_enc_init(&e);
    while (i < n && d.st != PX_DOT_DONE) {
      char out[64];
      size_t chunk = 1 + rng_below(&rng, 40), cap = 4 + rng_below(&rng, 60);
      size_t on, used;
      if (chunk > n - i)
        chunk = n - i;
      used = px_dot_relay(&d, &e, in + i, chunk, out, cap, &on);
      assert_true(used > 0 || on > 0);
      bytes_add(&got, out, on);
      i += used;
    }
    if (d.st == PX_DOT_DONE) {
      char end[PX_DOT_END_MAX];
      bytes_add(&got, end, px_dot_encode_end(&e, end));
    }
    assert_int_equal(i, refused);
    assert_bytes_eq(got.p, got.n, ref.p, ref.n);
    bytes_free(&ref);
    bytes_free(&got);
    free(in);
  }
}

static void test_state_names(void **state)
{
  (void)state;
  for (int i = 0; i < PX_DOT_COUNT; i++) {
    assert_non_null(px_dot_state_names[i]);
    assert_true(strlen(px_dot_state_names[i]) > 0);
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_decode_cases),
    cmocka_unit_test(test_decode_leaves_tail),
    cmocka_unit_test(test_decode_empty_feeds),
    cmocka_unit_test(test_decode_split_invariance),
    cmocka_unit_test(test_encode_cases),
    cmocka_unit_test(test_encode_small_cap),
    cmocka_unit_test(test_encode_end_across_calls),
    cmocka_unit_test(test_round_trip),
    cmocka_unit_test(test_no_premature_end),
    cmocka_unit_test(test_exhaustive_small),
    cmocka_unit_test(test_restuff_identity),
    cmocka_unit_test(test_large_body),
    cmocka_unit_test(test_relay_equals_decode_encode),
    cmocka_unit_test(test_state_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
