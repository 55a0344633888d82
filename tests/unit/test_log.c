/* test_log.c - unit tests for px_log_sanitize (proxy/log.c), the escaping
 * of peer text in log values.
 *
 * Tests the contract in log.h: which bytes are escaped, the cut at max and
 * at cap with "...", never a byte past cap and always a NUL, and that the
 * result stands as one key=value token, bare or quoted, and unescapes to
 * the input.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "testutil.h"

#define S(x) x, sizeof(x) - 1

/* Sanitizes in[0..n) with room for all of it, as session.c sizes it. */
static const char *san(char *out, size_t cap, const char *in, size_t n)
{
  return px_log_sanitize(in, n, (cap - 4) / 4, out, cap);
}

/* Undoes \xNN into dec; returns the decoded length. Fails on a backslash
 * that does not start a well-formed escape. */
static size_t unescape(const char *s, char *dec)
{
  size_t o = 0;

  while (*s != '\0') {
    if (*s == '\\') {
      unsigned v;
      assert_int_equal(s[1], 'x');
      assert_true(sscanf(s + 2, "%2x", &v) == 1);
      assert_non_null(strchr("0123456789abcdef", s[2]));
      assert_non_null(strchr("0123456789abcdef", s[3]));
      dec[o++] = (char)v;
      s += 4;
    } else {
      dec[o++] = *s++;
    }
  }
  return o;
}

static void test_printable_kept(void **state)
{
  char out[512];

  (void)state;
  assert_string_equal(san(out, sizeof out, S("alice@example.org")),
                      "alice@example.org");
  assert_string_equal(
      san(out, sizeof out, S("!#$%&'()*+,-./09:;<>?@AZ[]^_`az{|}~")),
      "!#$%&'()*+,-./09:;<>?@AZ[]^_`az{|}~");
  assert_string_equal(san(out, sizeof out, "", 0), "");
}

static void test_each_class_escaped(void **state)
{
  char out[64];

  (void)state;
  assert_string_equal(san(out, sizeof out, S("a b")), "a\\x20b");
  assert_string_equal(san(out, sizeof out, S("a\"b")), "a\\x22b");
  assert_string_equal(san(out, sizeof out, S("a\\b")), "a\\x5cb");
  assert_string_equal(san(out, sizeof out, S("a=b")), "a\\x3db");
  assert_string_equal(san(out, sizeof out, S("\r\n")), "\\x0d\\x0a");
  assert_string_equal(san(out, sizeof out, S("\t\x1b\x7f")), "\\x09\\x1b\\x7f");
  assert_string_equal(san(out, sizeof out, "\0z", 2), "\\x00z");
  assert_string_equal(san(out, sizeof out, S("\x80\xff\xc3\xa9")),
                      "\\x80\\xff\\xc3\\xa9");
}

/* Every byte value: escaped exactly when the rule says, and as \xNN with
 * lowercase hex. */
static void test_all_bytes(void **state)
{
  (void)state;
  for (unsigned c = 0; c < 256; c++) {
    char in = (char)c, out[16], want[8];
    int plain = c > 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '=';

    san(out, sizeof out, &in, 1);
    if (plain)
      snprintf(want, sizeof want, "%c", (int)c);
    else
      snprintf(want, sizeof want, "\\x%02x", c);
    assert_string_equal(out, want);
  }
}

static void test_cut_at_max(void **state)
{
  char out[64];

  (void)state;
  assert_string_equal(px_log_sanitize(S("abcdefgh"), 4, out, sizeof out),
                      "abcd...");
  /* Exactly max bytes: no mark. */
  assert_string_equal(px_log_sanitize(S("abcd"), 4, out, sizeof out), "abcd");
  /* The cut counts input bytes, not escaped ones. */
  assert_string_equal(px_log_sanitize(S("a b c"), 3, out, sizeof out),
                      "a\\x20b...");
  assert_string_equal(px_log_sanitize(S("abc"), 0, out, sizeof out), "...");
}

/* A cap too small for the escaped text cuts it too, with the mark, and
 * never inside an escape. */
static void test_cut_at_cap(void **state)
{
  char out[16];

  (void)state;
  /* Fits exactly: 4 + NUL. */
  assert_string_equal(px_log_sanitize(S("abcd"), 100, out, 5), "abcd");
  assert_string_equal(px_log_sanitize(S("abcde"), 100, out, 5), "a...");
  /* "\x20" would need 4 of the 3 bytes left before the mark. */
  assert_string_equal(px_log_sanitize(S("ab cd"), 100, out, 8), "ab...");
  assert_string_equal(px_log_sanitize(S(" abc"), 100, out, 7), "...");
  /* Under 4 bytes the mark does not fit; what fits, fits. */
  assert_string_equal(px_log_sanitize(S("abcdef"), 100, out, 3), "ab");
  assert_string_equal(px_log_sanitize(S("\x01"), 100, out, 3), "");
  assert_string_equal(px_log_sanitize(S("abcdef"), 100, out, 1), "");
}

/* Writes to a buffer with guard bytes on both sides, at every cap up to
 * the full size, for several inputs: nothing past cap, a NUL within it,
 * and the result a prefix of the full one (before its mark). */
static void test_cap_never_overflows(void **state)
{
  static const struct {
    const char *p;
    size_t n, max;
  } in[] = {
    { S("plain-text"), 160 },
    { S("with space and \"quotes\" and = and \\"), 160 },
    { S("\x00\x01\x02\xff\xfe"), 160 },
    { S("cut by max: 0123456789"), 8 },
    { S("mixed \x80 and = cut"), 12 },
  };
  char buf[256 + 2], full[256];

  (void)state;
  for (size_t t = 0; t < sizeof in / sizeof *in; t++) {
    size_t fl;

    px_log_sanitize(in[t].p, in[t].n, in[t].max, full, sizeof full);
    fl = strlen(full);
    assert_true(fl <= in[t].max * 4 + 3);
    for (size_t cap = 0; cap <= fl + 1; cap++) {
      char *out = buf + 1;
      size_t ol;

      memset(buf, 0x5a, sizeof buf);
      assert_ptr_equal(px_log_sanitize(in[t].p, in[t].n, in[t].max, out, cap),
                       out);
      assert_int_equal((unsigned char)buf[0], 0x5a);
      for (size_t i = cap; i < sizeof buf - 1; i++)
        assert_int_equal((unsigned char)out[i], 0x5a);
      if (cap == 0)
        continue;
      ol = strnlen(out, cap);
      assert_true(ol < cap);
      if (cap == fl + 1) {
        assert_string_equal(out, full);
        continue;
      }
      /* Cut by cap: the mark when it fits, and what precedes it is a
       * prefix of the full result. */
      if (cap >= 4) {
        assert_true(ol >= 3);
        assert_memory_equal(out + ol - 3, "...", 3);
        ol -= 3;
      }
      assert_memory_equal(out, full, ol);
    }
  }
}

/* The result, placed as a bare and as a quoted value in a log line, is
 * one token whatever the input, and decodes back to the input. */
static void test_round_trip(void **state)
{
  uint64_t rng = 0x1095eed;
  char in[96], out[96 * 4 + 4], line[2 * sizeof out + 32], dec[sizeof in];

  (void)state;
  for (int iter = 0; iter < 5000; iter++) {
    size_t n = rng_below(&rng, sizeof in + 1), dl;
    char *tok, *save, *eq;
    int ntok = 0;

    for (size_t i = 0; i < n; i++) {
      /* Biased toward the bytes that matter. */
      static const char nasty[] = " \"=\\\r\n\t\x7f";
      size_t r = rng_below(&rng, 4);
      in[i] = r == 0 ? nasty[rng_below(&rng, sizeof nasty - 1)]
                     : (char)rng_below(&rng, 256);
    }
    px_log_sanitize(in, n, sizeof in, out, sizeof out);
    assert_null(strpbrk(out, " \"="));
    for (const char *p = out; *p != '\0'; p++)
      assert_true(*p > 0x20 && *p < 0x7f);

    snprintf(line, sizeof line, "user=%s err=\"%s\" ev=x", out, out);
    for (tok = strtok_r(line, " ", &save); tok != NULL;
         tok = strtok_r(NULL, " ", &save)) {
      ntok++;
      eq = strchr(tok, '=');
      assert_non_null(eq);
      assert_null(strchr(eq + 1, '=')); /* one key, one value */
      if (ntok == 1) {
        assert_string_equal(eq + 1, out);
      } else if (ntok == 2) {
        /* Quoted: the only quotes are the two around the value. */
        size_t vl = strlen(eq + 1);
        assert_true(vl >= 2);
        assert_int_equal(eq[1], '"');
        assert_int_equal(eq[vl], '"');
        assert_null(memchr(eq + 2, '"', vl - 2));
      }
    }
    assert_int_equal(ntok, 3);

    dl = unescape(out, dec);
    assert_bytes_eq(dec, dl, in, n);
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_printable_kept),
    cmocka_unit_test(test_each_class_escaped),
    cmocka_unit_test(test_all_bytes),
    cmocka_unit_test(test_cut_at_max),
    cmocka_unit_test(test_cut_at_cap),
    cmocka_unit_test(test_cap_never_overflows),
    cmocka_unit_test(test_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
