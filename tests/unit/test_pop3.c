/* test_pop3.c - unit tests for proxy/pop3.c: the command parser and
 * formatter, the line finder, the SASL checks, the response-shape table and
 * the response framer.
 *
 * Tests the contracts in pop3.h. The framer is fed every response whole,
 * byte by byte and at random splits (seeded PRNG, many seeds) with several
 * output sizes; the event streams must be identical. Input chunks and
 * output buffers are allocated at their exact size so ASan catches reads
 * and writes beyond them; LSan catches a partial-line buffer that leaks.
 *
 * Build: gcc -std=c11 -Wall -Wextra -Werror -g -fsanitize=address,undefined
 *        -Iproxy -Itests proxy/dot.c proxy/pop3.c tests/unit/failalloc.c
 *        tests/unit/test_pop3.c
 *        -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free
 *        $(pkg-config --cflags --libs cmocka libuv)
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "failalloc.h"
#include "pop3.h"
#include "px.h"
#include "testutil.h"

#define SEEDS 100
#define S(x) x, sizeof(x) - 1

/* ---- command parser ----------------------------------------------------- */

struct pcase {
  const char *line;
  size_t len;
  int utf8;
  int rc;
  enum px_cmd_id id;
  unsigned nargs;
  const char *a0, *a1; /* expected arguments (NUL-free) */
  const char *canon;   /* expected px_pop3_format_cmd output */
};

#define OK0(l, i, c) {S(l), 0, 0, i, 0, NULL, NULL, c}
#define OK1(l, i, a, c) {S(l), 0, 0, i, 1, a, NULL, c}
#define OK2(l, i, a, b, c) {S(l), 0, 0, i, 2, a, b, c}
#define BAD(l, e) {S(l), 0, e, PX_CMD_COUNT, 0, NULL, NULL, NULL}
#define BADU(l, e) {S(l), 1, e, PX_CMD_COUNT, 0, NULL, NULL, NULL}

static const struct pcase pcases[] = {
  /* Keywords are case-insensitive; output is upper case. */
  OK1("USER alice", PX_CMD_USER, "alice", "USER alice\r\n"),
  OK1("user alice", PX_CMD_USER, "alice", "USER alice\r\n"),
  OK1("uSeR alice", PX_CMD_USER, "alice", "USER alice\r\n"),
  /* USER and PASS take the rest of the line, spaces included. */
  OK1("USER a b", PX_CMD_USER, "a b", "USER a b\r\n"),
  OK1("PASS with spaces ", PX_CMD_PASS, "with spaces ",
      "PASS with spaces \r\n"),
  OK1("PASS secret", PX_CMD_PASS, "secret", "PASS secret\r\n"),
  OK1("pass a  b", PX_CMD_PASS, "a  b", "PASS a  b\r\n"),
  OK2("APOP mrose c4c9334bac560ecc979e58001b3e22fb", PX_CMD_APOP, "mrose",
      "c4c9334bac560ecc979e58001b3e22fb",
      "APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n"),
  /* AUTH: mechanism list, mechanism, mechanism + initial response. */
  OK0("AUTH", PX_CMD_AUTH, "AUTH\r\n"),
  OK0("AUTH ", PX_CMD_AUTH, "AUTH\r\n"),
  OK0("auth", PX_CMD_AUTH, "AUTH\r\n"),
  OK1("AUTH PLAIN", PX_CMD_AUTH, "PLAIN", "AUTH PLAIN\r\n"),
  OK1("AUTH SCRAM-SHA-256", PX_CMD_AUTH, "SCRAM-SHA-256",
      "AUTH SCRAM-SHA-256\r\n"),
  OK2("AUTH PLAIN AGFsaWNlAHNlY3JldA==", PX_CMD_AUTH, "PLAIN",
      "AGFsaWNlAHNlY3JldA==", "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
  OK2("AUTH PLAIN =", PX_CMD_AUTH, "PLAIN", "=", "AUTH PLAIN =\r\n"),
  /* No arguments. A single trailing SP is ignored. */
  OK0("STAT", PX_CMD_STAT, "STAT\r\n"),
  OK0("STAT ", PX_CMD_STAT, "STAT\r\n"),
  OK0("noop", PX_CMD_NOOP, "NOOP\r\n"),
  OK0("RSET", PX_CMD_RSET, "RSET\r\n"),
  OK0("QUIT", PX_CMD_QUIT, "QUIT\r\n"),
  OK0("Quit", PX_CMD_QUIT, "QUIT\r\n"),
  OK0("CAPA", PX_CMD_CAPA, "CAPA\r\n"),
  OK0("STLS", PX_CMD_STLS, "STLS\r\n"),
  OK0("UTF8", PX_CMD_UTF8, "UTF8\r\n"),
  /* LIST/UIDL: none or a number. */
  OK0("LIST", PX_CMD_LIST, "LIST\r\n"),
  OK0("LIST ", PX_CMD_LIST, "LIST\r\n"),
  OK1("LIST 1", PX_CMD_LIST, "1", "LIST 1\r\n"),
  OK1("list 1 ", PX_CMD_LIST, "1", "LIST 1\r\n"),
  OK0("UIDL", PX_CMD_UIDL, "UIDL\r\n"),
  OK1("UIDL 7", PX_CMD_UIDL, "7", "UIDL 7\r\n"),
  /* RETR/DELE: one number of 1 to 10 digits. */
  OK1("RETR 1", PX_CMD_RETR, "1", "RETR 1\r\n"),
  OK1("retr 1", PX_CMD_RETR, "1", "RETR 1\r\n"),
  OK1("ReTr 42", PX_CMD_RETR, "42", "RETR 42\r\n"),
  OK1("RETR 1 ", PX_CMD_RETR, "1", "RETR 1\r\n"),
  OK1("RETR 9999999999", PX_CMD_RETR, "9999999999", "RETR 9999999999\r\n"),
  OK1("DELE 3", PX_CMD_DELE, "3", "DELE 3\r\n"),
  /* TOP: a number and a line count. */
  OK2("TOP 1 0", PX_CMD_TOP, "1", "0", "TOP 1 0\r\n"),
  OK2("TOP 1 999999", PX_CMD_TOP, "1", "999999", "TOP 1 999999\r\n"),
  OK2("top 12 10 ", PX_CMD_TOP, "12", "10", "TOP 12 10\r\n"),
  /* LANG: none or one. */
  OK0("LANG", PX_CMD_LANG, "LANG\r\n"),
  OK1("LANG en", PX_CMD_LANG, "en", "LANG en\r\n"),
  OK1("lang *", PX_CMD_LANG, "*", "LANG *\r\n"),

  /* Wrong argument shapes. */
  BAD("RETR", PX_EBADARG),
  BAD("RETR ", PX_EBADARG),
  BAD("RETR x", PX_EBADARG),
  BAD("RETR 1 2", PX_EBADARG),
  BAD("RETR  1", PX_EBADARG),
  BAD("RETR 1  ", PX_EBADARG),
  BAD("RETR -1", PX_EBADARG),
  BAD("RETR +1", PX_EBADARG),
  BAD("RETR 1a", PX_EBADARG),
  BAD("RETR 0x1", PX_EBADARG),
  BAD("RETR 12345678901", PX_EBADARG),
  BAD("DELE", PX_EBADARG),
  BAD("DELE a", PX_EBADARG),
  BAD("TOP", PX_EBADARG),
  BAD("TOP 1", PX_EBADARG),
  BAD("TOP 1 ", PX_EBADARG),
  BAD("TOP 1 2 3", PX_EBADARG),
  BAD("TOP x 1", PX_EBADARG),
  BAD("TOP 1 x", PX_EBADARG),
  BAD("TOP 1  2", PX_EBADARG),
  BAD("TOP 1 12345678901", PX_EBADARG),
  BAD("LIST  1", PX_EBADARG),
  BAD("LIST 1 2", PX_EBADARG),
  BAD("LIST x", PX_EBADARG),
  BAD("UIDL x", PX_EBADARG),
  BAD("UIDL 1 2", PX_EBADARG),
  BAD("STAT 1", PX_EBADARG),
  BAD("NOOP x", PX_EBADARG),
  BAD("RSET 1", PX_EBADARG),
  BAD("QUIT now", PX_EBADARG),
  BAD("CAPA x", PX_EBADARG),
  BAD("STLS x", PX_EBADARG),
  BAD("UTF8 x", PX_EBADARG),
  BAD("USER", PX_EBADARG),
  BAD("USER ", PX_EBADARG),
  BAD("PASS", PX_EBADARG),
  BAD("PASS ", PX_EBADARG),
  BAD("APOP", PX_EBADARG),
  BAD("APOP name", PX_EBADARG),
  BAD("APOP a b c", PX_EBADARG),
  /* The digest is MD5 in hex (RFC 1939 section 7). */
  BAD("APOP mrose c4c9334bac560ecc979e58001b3e22f", PX_EBADARG),
  BAD("APOP mrose c4c9334bac560ecc979e58001b3e22fbb", PX_EBADARG),
  BAD("APOP mrose c4c9334bac560ecc979e58001b3e22fg", PX_EBADARG),
  BAD("APOP mrose  c4c9334bac560ecc979e58001b3e22fb", PX_EBADARG),
  BAD("LANG a b", PX_EBADARG),
  BAD("AUTH PLAIN a b", PX_EBADARG),
  BAD("AUTH  PLAIN", PX_EBADARG),
  BAD("AUTH PL@IN", PX_EBADARG),
  BAD("AUTH ABCDEFGHIJKLMNOPQRSTU", PX_EBADARG),
  /* Mechanisms that do not survive TLS termination. */
  BAD("AUTH EXTERNAL", PX_EBADARG),
  BAD("AUTH EXTERNAL =", PX_EBADARG),
  BAD("AUTH external", PX_EBADARG),
  BAD("AUTH SCRAM-SHA-1-PLUS", PX_EBADARG),
  BAD("AUTH SCRAM-SHA-256-PLUS biwsbj1hbGljZSxyPW5vbmNl", PX_EBADARG),
  BAD("auth scram-sha-1-plus", PX_EBADARG),

  /* Unknown keywords. */
  BAD("", PX_EBADCMD),
  BAD("RE", PX_EBADCMD),
  BAD("RETRX 1", PX_EBADCMD),
  BAD("RETRX", PX_EBADCMD),
  BAD("LISTX", PX_EBADCMD),
  BAD("HELLO", PX_EBADCMD),
  BAD("XTND XMIT", PX_EBADCMD),
  BAD("XCLIENT ADDR=192.0.2.1", PX_EBADCMD),
  BAD("XOIP 192.0.2.1", PX_EBADCMD),
  BAD("LAST", PX_EBADCMD),
  BAD(" RETR 1", PX_EBADCMD),
  BAD(" ", PX_EBADCMD),
  BAD("RET R 1", PX_EBADCMD),
  BAD("1234", PX_EBADCMD),
  BAD("STARTTLS", PX_EBADCMD),

  /* Control bytes anywhere. */
  BAD("USER al\0ice", PX_EBADCHAR),
  BAD("RETR 1\0", PX_EBADCHAR),
  BAD("\0", PX_EBADCHAR),
  BAD("RETR 1\r", PX_EBADCHAR),
  BAD("USER a\rb", PX_EBADCHAR),
  BAD("NOOP\nCAPA", PX_EBADCHAR),
  BAD("USER alice\nRETR 1", PX_EBADCHAR),
  BAD("USER a\tb", PX_EBADCHAR),
  BAD("RETR\t1", PX_EBADCHAR),
  BAD("USER a\x7f", PX_EBADCHAR),
  BAD("PASS \x1b[31m", PX_EBADCHAR),
  BAD("NOOP\x01", PX_EBADCHAR),
  BADU("USER a\x7f", PX_EBADCHAR),
  BADU("USER al\0ice", PX_EBADCHAR),
  BADU("USER a\nb", PX_EBADCHAR),

  /* After UTF8, 8-bit bytes are allowed in arguments, not in numbers. */
  {S("USER j\xc3\xb6rg"), 1, 0, PX_CMD_USER, 1, "j\xc3\xb6rg", NULL,
   "USER j\xc3\xb6rg\r\n"},
  {S("PASS p\xe2\x82\xac ss"), 1, 0, PX_CMD_PASS, 1, "p\xe2\x82\xac ss", NULL,
   "PASS p\xe2\x82\xac ss\r\n"},
  BADU("RETR 1\xc3\xb6", PX_EBADARG),
  BADU("RETR\xc3\xb6 1", PX_EBADCMD),
};

static void check_parsed_args(const struct px_cmd *c, const char *line,
                              size_t len)
{
  for (unsigned i = 0; i < c->nargs; i++) {
    /* Arguments point into the line. */
    assert_true(c->arg[i] >= line);
    assert_true(c->arg[i] + c->arglen[i] <= line + len);
  }
}

static void expect_arg(const struct px_cmd *c, unsigned i, const char *want)
{
  assert_int_equal(c->arglen[i], strlen(want));
  assert_memory_equal(c->arg[i], want, c->arglen[i]);
}

/* The line as its own heap buffer of exactly len bytes, so reading past it
 * is caught. */
static char *dup_exact(const char *p, size_t n)
{
  char *q = malloc(n ? n : 1);
  assert_non_null(q);
  if (n > 0)
    memcpy(q, p, n);
  return q;
}

/* format(c) is canonical and parses back to the same command; formatting
 * is exact about cap. */
static void check_format_roundtrip(const struct px_cmd *c, int utf8,
                                   const char *canon)
{
  char out[PX_CMD_MAX + 1], again[PX_CMD_MAX + 1];
  size_t n, n2;
  struct px_cmd c2;
  char *tight;

  n = px_pop3_format_cmd(c, out, sizeof out);
  assert_true(n >= 5);
  if (canon != NULL)
    assert_bytes_eq(out, n, canon, strlen(canon));
  assert_memory_equal(out + n - 2, "\r\n", 2);
  assert_null(memchr(out, '\r', n - 2));
  /* The keyword is upper case and followed by SP or CRLF. */
  for (size_t i = 0; i < 4 && out[i] != ' ' && out[i] != '\r'; i++)
    assert_false(islower((unsigned char)out[i]));

  /* Re-parse: the same command. */
  {
    char *line = dup_exact(out, n - 2);
    memset(&c2, 0x5a, sizeof c2);
    assert_int_equal(px_pop3_parse_cmd(line, n - 2, utf8, &c2), 0);
    assert_int_equal(c2.id, c->id);
    assert_int_equal(c2.nargs, c->nargs);
    for (unsigned i = 0; i < c->nargs; i++)
      assert_bytes_eq(c2.arg[i], c2.arglen[i], c->arg[i], c->arglen[i]);
    /* And formatting again is a fixed point. */
    n2 = px_pop3_format_cmd(&c2, again, sizeof again);
    assert_bytes_eq(again, n2, out, n);
    free(line);
  }

  /* cap == length suffices; one less is refused. */
  tight = malloc(n);
  assert_non_null(tight);
  assert_int_equal(px_pop3_format_cmd(c, tight, n), n);
  assert_memory_equal(tight, out, n);
  free(tight);
  tight = malloc(n - 1);
  assert_non_null(tight);
  assert_int_equal(px_pop3_format_cmd(c, tight, n - 1), 0);
  free(tight);
  assert_int_equal(px_pop3_format_cmd(c, out, 0), 0);
}

static void test_parse_cases(void **state)
{
  (void)state;
  for (size_t i = 0; i < sizeof pcases / sizeof *pcases; i++) {
    const struct pcase *t = &pcases[i];
    char *line = dup_exact(t->line, t->len);
    struct px_cmd c;
    int rc;

    memset(&c, 0x5a, sizeof c);
    rc = px_pop3_parse_cmd(line, t->len, t->utf8, &c);
    if (rc != t->rc)
      print_error("case %zu \"%.*s\": rc %d, want %d\n", i, (int)t->len,
                  t->line, rc, t->rc);
    assert_int_equal(rc, t->rc);
    if (rc == 0) {
      assert_int_equal(c.id, t->id);
      assert_int_equal(c.nargs, t->nargs);
      check_parsed_args(&c, line, t->len);
      if (t->nargs > 0)
        expect_arg(&c, 0, t->a0);
      if (t->nargs > 1)
        expect_arg(&c, 1, t->a1);
      check_format_roundtrip(&c, t->utf8, t->canon);
    }
    free(line);
  }
}

/* 8-bit bytes are refused without UTF8 (the exact code is not fixed by the
 * contract beyond "refused"), accepted with it. */
static void test_parse_8bit(void **state)
{
  static const char *const lines[] = { "USER j\xc3\xb6rg", "PASS \xff",
                                       "APOP \xc3\xa9 c4c9334bac560ecc979e58001b3e22fb", "LANG \xc3\xa9" };
  (void)state;
  for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
    struct px_cmd c;
    int rc = px_pop3_parse_cmd(lines[i], strlen(lines[i]), 0, &c);
    assert_true(rc == PX_EBADCHAR || rc == PX_EBADARG);
    assert_int_equal(px_pop3_parse_cmd(lines[i], strlen(lines[i]), 1, &c), 0);
    check_format_roundtrip(&c, 1, NULL);
  }
}

/* Every byte value in a USER argument: printable ASCII passes, control
 * bytes and DEL are PX_EBADCHAR with or without UTF8, 8-bit bytes pass
 * only with UTF8. */
static void test_parse_every_byte(void **state)
{
  (void)state;
  for (int b = 0; b < 256; b++) {
    char line[] = "USER a?b";
    struct px_cmd c;
    line[6] = (char)b;
    for (int utf8 = 0; utf8 <= 1; utf8++) {
      int rc = px_pop3_parse_cmd(line, 8, utf8, &c);
      if (b < 0x20 || b == 0x7f)
        assert_int_equal(rc, PX_EBADCHAR);
      else if (b < 0x7f || utf8)
        assert_int_equal(rc, 0);
      else
        assert_true(rc == PX_EBADCHAR || rc == PX_EBADARG);
      if (rc == 0) {
        assert_int_equal(c.id, PX_CMD_USER);
        assert_int_equal(c.nargs, 1);
        assert_int_equal(c.arglen[0], 3);
      }
    }
    /* In a number, nothing but digits. */
    {
      char r[] = "RETR 1?";
      r[6] = (char)b;
      int rc = px_pop3_parse_cmd(r, 7, 1, &c);
      if (b >= '0' && b <= '9')
        assert_int_equal(rc, 0);
      else if (b == ' ')
        assert_int_equal(rc, 0); /* the single trailing SP */
      else if (b < 0x20 || b == 0x7f)
        assert_int_equal(rc, PX_EBADCHAR);
      else
        assert_int_equal(rc, PX_EBADARG);
    }
  }
}

/* Control bytes win over everything else: also in unknown keywords, which
 * must at least be refused. */
static void test_parse_control_anywhere(void **state)
{
  static const char *const kw[] = { "RETR 1", "XTND", "LISTX", "USER x",
                                    "TOP 1 2", "" };
  static const char ctl[] = { '\0', '\r', '\n', '\t', 0x7f, 0x1f, 0x01 };
  (void)state;
  for (size_t k = 0; k < sizeof kw / sizeof *kw; k++) {
    size_t kl = strlen(kw[k]);
    for (size_t j = 0; j < sizeof ctl; j++) {
      for (size_t pos = 0; pos <= kl; pos++) {
        char line[32];
        struct px_cmd c;
        int rc;
        memcpy(line, kw[k], pos);
        line[pos] = ctl[j];
        memcpy(line + pos + 1, kw[k] + pos, kl - pos);
        rc = px_pop3_parse_cmd(line, kl + 1, 0, &c);
        if (k == 0 || k == 3 || k == 4)
          assert_int_equal(rc, PX_EBADCHAR);
        else
          assert_true(rc < 0);
      }
    }
  }
}

/* Every keyword in every case, with arguments that fit its shape. */
static void test_parse_all_keywords(void **state)
{
  static const char *const args[PX_CMD_COUNT] = {
    [PX_CMD_USER] = " u",  [PX_CMD_PASS] = " p",  [PX_CMD_APOP] = " u 0123456789abcdefABCDEF0123456789",
    [PX_CMD_AUTH] = "",    [PX_CMD_STAT] = "",    [PX_CMD_LIST] = "",
    [PX_CMD_UIDL] = " 3",  [PX_CMD_RETR] = " 1",  [PX_CMD_TOP] = " 1 2",
    [PX_CMD_DELE] = " 9",  [PX_CMD_NOOP] = "",    [PX_CMD_RSET] = "",
    [PX_CMD_QUIT] = "",    [PX_CMD_CAPA] = "",    [PX_CMD_STLS] = "",
    [PX_CMD_UTF8] = "",    [PX_CMD_LANG] = " de",
  };
  (void)state;
  for (int id = 0; id < PX_CMD_COUNT; id++) {
    const char *name = px_cmd_names[id];
    size_t nl;
    assert_non_null(name);
    nl = strlen(name);
    assert_true(nl == 3 || nl == 4);
    for (unsigned mask = 0; mask < (1u << nl); mask++) {
      char line[64];
      struct px_cmd c;
      for (size_t i = 0; i < nl; i++) {
        assert_true(isupper((unsigned char)name[i]) ||
                    isdigit((unsigned char)name[i]));
        line[i] = (mask >> i) & 1 ? (char)tolower((unsigned char)name[i])
                                  : name[i];
      }
      strcpy(line + nl, args[id]);
      assert_int_equal(px_pop3_parse_cmd(line, strlen(line), 0, &c), 0);
      assert_int_equal(c.id, id);
      check_format_roundtrip(&c, 0, NULL);
      /* One more letter makes it unknown; one less too. */
      {
        char longer[64];
        memcpy(longer, line, nl);
        longer[nl] = 'X';
        strcpy(longer + nl + 1, args[id]);
        assert_int_equal(px_pop3_parse_cmd(longer, strlen(longer), 0, &c),
                         PX_EBADCMD);
        assert_int_equal(px_pop3_parse_cmd(line, nl - 1, 0, &c), PX_EBADCMD);
      }
    }
  }
}

/* The longest command that fits PX_CMD_MAX formats within cap
 * PX_CMD_MAX + 1. */
static void test_format_longest(void **state)
{
  char line[PX_CMD_MAX], out[PX_CMD_MAX + 1];
  struct px_cmd c;
  size_t len = PX_CMD_MAX - 2;

  (void)state;
  memcpy(line, "PASS ", 5);
  for (size_t i = 5; i < len; i++)
    line[i] = (char)('!' + i % 90);
  line[100] = ' ';
  assert_int_equal(px_pop3_parse_cmd(line, len, 0, &c), 0);
  assert_int_equal(c.arglen[0], len - 5);
  assert_int_equal(px_pop3_format_cmd(&c, out, sizeof out), PX_CMD_MAX);
  assert_memory_equal(out, line, len);
  /* A lower-case keyword is upper-cased, same length. */
  memcpy(line, "pass", 4);
  assert_int_equal(px_pop3_parse_cmd(line, len, 0, &c), 0);
  assert_int_equal(px_pop3_format_cmd(&c, out, sizeof out), PX_CMD_MAX);
  assert_memory_equal(out, "PASS ", 5);
}

/* Random lines over a small alphabet: whatever parses formats canonically
 * and re-parses to the same command; nothing reads outside the line. */
static void test_parse_random(void **state)
{
  static const char *const kws[] = { "RETR", "retr", "TOP", "LIST", "UIDL",
                                     "USER", "PASS", "APOP", "AUTH", "LANG",
                                     "NOOP", "XTND", "DELE", "RET" };
  static const char alpha[] = "0123456789  aZ=+/*-.\t\r\n\0\x80";
  (void)state;
  for (uint64_t seed = 1; seed <= 20000; seed++) {
    uint64_t rng = seed;
    char buf[64];
    size_t n;
    const char *kw = kws[rng_below(&rng, sizeof kws / sizeof *kws)];
    struct px_cmd c;
    int utf8 = (int)rng_below(&rng, 2), rc;
    char *line;

    n = strlen(kw);
    memcpy(buf, kw, n);
    for (size_t k = rng_below(&rng, 12); k > 0; k--)
      buf[n++] = alpha[rng_below(&rng, sizeof alpha - 1)];
    line = dup_exact(buf, n);
    rc = px_pop3_parse_cmd(line, n, utf8, &c);
    assert_true(rc == 0 || rc == PX_EBADCHAR || rc == PX_EBADCMD ||
                rc == PX_EBADARG);
    if (memchr(buf, '\0', n) || memchr(buf, '\r', n) || memchr(buf, '\n', n) ||
        memchr(buf, '\t', n))
      assert_int_equal(rc, PX_EBADCHAR);
    if (rc == 0) {
      check_parsed_args(&c, line, n);
      check_format_roundtrip(&c, utf8, NULL);
    }
    free(line);
  }
}

/* ---- shape table (security.md 1.9) ------------------------------------- */

static void test_shape(void **state)
{
  static const struct {
    const char *line;
    enum px_shape shape;
  } t[] = {
    {"LIST", PX_SHAPE_MULTI},     {"LIST ", PX_SHAPE_MULTI},
    {"LIST 1", PX_SHAPE_SINGLE},  {"UIDL", PX_SHAPE_MULTI},
    {"UIDL 1", PX_SHAPE_SINGLE},  {"RETR 1", PX_SHAPE_MULTI},
    {"TOP 1 10", PX_SHAPE_MULTI}, {"TOP 1 0", PX_SHAPE_MULTI},
    {"CAPA", PX_SHAPE_MULTI},     {"AUTH", PX_SHAPE_MULTI},
    {"AUTH ", PX_SHAPE_MULTI},    {"AUTH PLAIN", PX_SHAPE_SASL},
    {"AUTH PLAIN =", PX_SHAPE_SASL},
    {"AUTH PLAIN AGFsaWNlAHNlY3JldA==", PX_SHAPE_SASL},
    {"LANG", PX_SHAPE_MULTI},     {"LANG en", PX_SHAPE_SINGLE},
    {"UTF8", PX_SHAPE_SINGLE},    {"USER a", PX_SHAPE_SINGLE},
    {"PASS a", PX_SHAPE_SINGLE},  {"APOP a c4c9334bac560ecc979e58001b3e22fb", PX_SHAPE_SINGLE},
    {"STAT", PX_SHAPE_SINGLE},    {"DELE 1", PX_SHAPE_SINGLE},
    {"NOOP", PX_SHAPE_SINGLE},    {"RSET", PX_SHAPE_SINGLE},
    {"QUIT", PX_SHAPE_SINGLE},    {"STLS", PX_SHAPE_SINGLE},
    {"retr 1", PX_SHAPE_MULTI},   {"list", PX_SHAPE_MULTI},
  };
  (void)state;
  for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
    struct px_cmd c;
    assert_int_equal(px_pop3_parse_cmd(t[i].line, strlen(t[i].line), 0, &c),
                     0);
    if (px_pop3_shape(&c) != t[i].shape)
      print_error("shape of \"%s\"\n", t[i].line);
    assert_int_equal(px_pop3_shape(&c), t[i].shape);
  }
}

/* ---- SASL checks -------------------------------------------------------- */

static void test_sasl_check(void **state)
{
  static const char *const good[] = {
    "", "*", "AGFsaWNlAHNlY3JldA==", "dGVzdA==", "dGVzdDE=", "dGVzdDEy",
    "YWJjZA+/", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
  };
  static const char *const bad[] = {
    "**", "* ", " *", "abc!", "ab cd", " dGVzdA==", "dGVzdA== ", "=abc",
    "a=bc", "dGVz=A==", "ABC===", "dGVzdA==dGVzdA==", "-_-_", "dGVzdA\r\n",
    "dGVz\tdA==", "\xc3\xa9\xc3\xa9", "*a", "ab=", "abcde=", "=", "==",
  };
  (void)state;
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
    char *l = dup_exact(good[i], strlen(good[i]));
    if (px_pop3_sasl_check(l, strlen(good[i])) != 0)
      print_error("good \"%s\"\n", good[i]);
    assert_int_equal(px_pop3_sasl_check(l, strlen(good[i])), 0);
    free(l);
  }
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char *l = dup_exact(bad[i], strlen(bad[i]));
    if (px_pop3_sasl_check(l, strlen(bad[i])) != PX_EBADARG)
      print_error("bad \"%s\"\n", bad[i]);
    assert_int_equal(px_pop3_sasl_check(l, strlen(bad[i])), PX_EBADARG);
    free(l);
  }
  /* NUL inside. */
  assert_int_equal(px_pop3_sasl_check("dGVz\0dA=", 8), PX_EBADARG);
  assert_int_equal(px_pop3_sasl_check("\0", 1), PX_EBADARG);
  /* A long token (a GSSAPI ticket) is fine. */
  {
    size_t n = PX_SASL_MAX - 2;
    char *l = malloc(n);
    assert_non_null(l);
    memset(l, 'A', n);
    n -= n % 4;
    assert_int_equal(px_pop3_sasl_check(l, n), 0);
    free(l);
  }
}

static void test_sasl_mech_ok(void **state)
{
  static const char *const good[] = {
    "PLAIN", "plain", "Login", "SCRAM-SHA-256", "SCRAM-SHA-1", "GSSAPI",
    "CRAM-MD5", "X_Y", "OAUTHBEARER", "ABCDEFGHIJKLMNOPQRST", "DIGEST-MD5",
    "EXTERNALX", "XEXTERNAL", "A",
  };
  static const char *const bad[] = {
    "", "EXTERNAL", "external", "ExTeRnAl", "SCRAM-SHA-1-PLUS",
    "scram-sha-256-plus", "SCRAM-SHA-256-Plus", "ABCDEFGHIJKLMNOPQRSTU",
    "PL AIN", "PLAIN=", "PLA.IN", "PLAIN\r", "PL\xc3\xa9IN", "PLAIN/",
  };
  (void)state;
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
    if (px_pop3_sasl_mech_ok(good[i], strlen(good[i])) != 1)
      print_error("good \"%s\"\n", good[i]);
    assert_int_equal(px_pop3_sasl_mech_ok(good[i], strlen(good[i])), 1);
  }
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    if (px_pop3_sasl_mech_ok(bad[i], strlen(bad[i])) != 0)
      print_error("bad \"%s\"\n", bad[i]);
    assert_int_equal(px_pop3_sasl_mech_ok(bad[i], strlen(bad[i])), 0);
  }
  assert_int_equal(px_pop3_sasl_mech_ok("PLAIN\0", 6), 0);
  assert_int_equal(px_pop3_sasl_mech_ok("EXTERNAL", 5), 1); /* "EXTER" */
}

/* ---- line finder -------------------------------------------------------- */

static int line_of(const char *p, size_t n, size_t max, size_t *len)
{
  char *q = dup_exact(p, n);
  int rc;
  *len = 12345;
  rc = px_pop3_line(q, n, max, len);
  free(q);
  return rc;
}

static void test_line(void **state)
{
  size_t len;
  char buf[1024];

  (void)state;
  assert_int_equal(line_of(S("RETR 1\r\n"), 255, &len), 1);
  assert_int_equal(len, 6);
  assert_int_equal(line_of(S("RETR 1\r\nNOOP\r\n"), 255, &len), 1);
  assert_int_equal(len, 6);
  assert_int_equal(line_of(S("\r\nabc"), 255, &len), 1);
  assert_int_equal(len, 0);
  /* Incomplete. */
  assert_int_equal(line_of(S(""), 255, &len), 0);
  assert_int_equal(line_of(S("RETR 1"), 255, &len), 0);
  assert_int_equal(line_of(S("RETR 1\r"), 255, &len), 0);
  assert_int_equal(line_of(S("\r"), 255, &len), 0);
  /* Only CRLF ends a line: bare LF and bare CR stay inside. */
  assert_int_equal(line_of(S("a\nb\r\n"), 255, &len), 1);
  assert_int_equal(len, 3);
  assert_int_equal(line_of(S("USER x\nRETR 1\r\n"), 255, &len), 1);
  assert_int_equal(len, 13);
  assert_int_equal(line_of(S("a\rb\r\n"), 255, &len), 1);
  assert_int_equal(len, 3);
  assert_int_equal(line_of(S("\r\r\n"), 255, &len), 1);
  assert_int_equal(len, 1);
  assert_int_equal(line_of(S("\n\r\n"), 255, &len), 1);
  assert_int_equal(len, 1);
  assert_int_equal(line_of(S("a\n"), 255, &len), 0);
  assert_int_equal(line_of(S("a\n\r"), 255, &len), 0);
  assert_int_equal(line_of(S("a\0\r\n"), 255, &len), 1);
  assert_int_equal(len, 2);

  /* Exactly max octets with CRLF: accepted; max + 1: PX_ELINE. */
  for (size_t max = 3; max <= 600; max += (max < 20 ? 1 : 97)) {
    memset(buf, 'x', sizeof buf);
    memcpy(buf + max - 2, "\r\n", 2);
    assert_int_equal(line_of(buf, max, max, &len), 1);
    assert_int_equal(len, max - 2);
    /* Every proper prefix is incomplete, not too long. */
    for (size_t k = 0; k < max; k++)
      assert_int_equal(line_of(buf, k, max, &len), 0);
    memset(buf, 'x', sizeof buf);
    memcpy(buf + max - 1, "\r\n", 2);
    assert_int_equal(line_of(buf, max + 1, max, &len), PX_ELINE);
    /* Without any CRLF: max bytes can no longer end within max. */
    memset(buf, 'x', sizeof buf);
    assert_int_equal(line_of(buf, max, max, &len), PX_ELINE);
    assert_int_equal(line_of(buf, max + 100, max, &len), PX_ELINE);
    /* max - 2 bytes may still end with CRLF; max - 1 ending in CR too;
     * max - 1 not ending in CR cannot. */
    assert_int_equal(line_of(buf, max - 2, max, &len), 0);
    assert_int_equal(line_of(buf, max - 1, max, &len), PX_ELINE);
    buf[max - 2] = '\r';
    assert_int_equal(line_of(buf, max - 1, max, &len), 0);
    /* max bytes ending in CR: the LF would make max + 1. */
    buf[max - 2] = 'x';
    buf[max - 1] = '\r';
    assert_int_equal(line_of(buf, max, max, &len), PX_ELINE);
  }
  /* A CRLF far beyond max does not rescue the line. */
  memset(buf, 'x', sizeof buf);
  memcpy(buf + 300, "\r\n", 2);
  assert_int_equal(line_of(buf, 302, 255, &len), PX_ELINE);
  assert_int_equal(line_of(buf, 302, 302, &len), 1);
  assert_int_equal(len, 300);
  /* Bigger limits (SASL). */
  {
    char *big = malloc(PX_SASL_MAX + 10);
    assert_non_null(big);
    memset(big, 'A', PX_SASL_MAX + 10);
    memcpy(big + PX_SASL_MAX - 2, "\r\n", 2);
    assert_int_equal(px_pop3_line(big, PX_SASL_MAX + 10, PX_SASL_MAX, &len),
                     1);
    assert_int_equal(len, PX_SASL_MAX - 2);
    assert_int_equal(
      px_pop3_line(big, PX_SASL_MAX + 10, PX_SASL_MAX - 1, &len), PX_ELINE);
    free(big);
  }
}

/* The line finder's result depends only on the bytes so far: growing the
 * buffer one byte at a time, it says 0 until the line is complete, then 1
 * with the same length as when given everything; or PX_ELINE from some
 * point on. */
static void test_line_prefixes(void **state)
{
  static const char alpha[] = "ab\r\n\r\n\0.";
  (void)state;
  for (uint64_t seed = 1; seed <= 3000; seed++) {
    uint64_t rng = seed;
    char buf[80];
    size_t n = rng_below(&rng, sizeof buf), max = 2 + rng_below(&rng, 40);
    size_t whole_len = 0, len = 0;
    int whole, seen_eline = 0;

    for (size_t i = 0; i < n; i++)
      buf[i] = alpha[rng_below(&rng, sizeof alpha - 1)];
    whole = line_of(buf, n, max, &whole_len);
    assert_true(whole == 0 || whole == 1 || whole == PX_ELINE);
    for (size_t k = 0; k <= n; k++) {
      int rc = line_of(buf, k, max, &len);
      if (rc == 1) {
        assert_int_equal(whole, 1);
        assert_int_equal(len, whole_len);
        assert_true(len + 2 <= max);
        assert_memory_equal(buf + len, "\r\n", 2);
        for (size_t j = 0; j < len; j++)
          assert_false(buf[j] == '\r' && buf[j + 1] == '\n');
        break;
      }
      if (rc == PX_ELINE) {
        seen_eline = 1;
        assert_int_equal(whole, PX_ELINE);
        break;
      }
      assert_int_equal(rc, 0);
      if (k == n)
        assert_int_equal(whole, 0);
    }
    (void)seen_eline;
  }
}

/* ---- response framer ---------------------------------------------------- */

struct fev {
  enum px_fr_ev ev;
  int ok;
  size_t off, n; /* into trace.data */
};

struct trace {
  struct fev *ev;
  size_t nev, evcap;
  struct bytes data;
  int err;
  size_t consumed;
  enum px_fr_st st;
};

static void trace_free(struct trace *t)
{
  free(t->ev);
  bytes_free(&t->data);
  memset(t, 0, sizeof *t);
}

/* Records one event; merges consecutive BODY events (their chunking depends
 * on the split and on outcap) and drops empty ones. */
static void trace_add(struct trace *t, const struct px_fr_out *o)
{
  if (o->ev == PX_FR_NONE)
    return;
  assert_true(o->ev > PX_FR_NONE && o->ev < PX_FR_COUNT);
  if (o->ev == PX_FR_BODY) {
    if (o->n == 0)
      return;
    if (t->nev > 0 && t->ev[t->nev - 1].ev == PX_FR_BODY) {
      bytes_add(&t->data, o->p, o->n);
      t->ev[t->nev - 1].n += o->n;
      return;
    }
  }
  if (t->nev == t->evcap) {
    t->evcap = t->evcap ? 2 * t->evcap : 16;
    t->ev = realloc(t->ev, t->evcap * sizeof *t->ev);
    assert_non_null(t->ev);
  }
  t->ev[t->nev].ev = o->ev;
  t->ev[t->nev].ok = o->ev == PX_FR_STATUS ? o->ok : 0;
  t->ev[t->nev].off = t->data.n;
  t->ev[t->nev].n = o->n;
  if (o->ev != PX_FR_END && o->n > 0)
    bytes_add(&t->data, o->p, o->n);
  if (o->ev == PX_FR_END)
    t->ev[t->nev].n = 0;
  t->nev++;
}

/* Runs a framer over in[0..n) fed in chunks. Unconsumed bytes of a chunk
 * are kept and offered again with the next one, as a session would. The
 * struct starts out as garbage: px_framer_start must set it up. */
static void run_framer(enum px_shape shape, int lines, size_t max,
                       const char *in, size_t n, enum split_mode m,
                       uint64_t seed, size_t outcap, struct trace *t)
{
  struct px_framer f;
  struct bytes carry = {0};
  uint64_t rng = seed;
  size_t off = 0, iters = 0;
  char *out = malloc(outcap);

  assert_non_null(out);
  memset(t, 0, sizeof *t);
  memset(&f, 0xa5, sizeof f);
  px_framer_start(&f, shape, lines, max);
  assert_int_equal(f.st, PX_FRS_STATUS);
  for (;;) {
    size_t len = next_chunk(m, &rng, n - off);
    size_t blen = carry.n + len, pos = 0;
    char *buf = malloc(blen ? blen : 1);

    assert_non_null(buf);
    if (carry.n > 0)
      memcpy(buf, carry.p, carry.n);
    if (len > 0)
      memcpy(buf + carry.n, in + off, len);
    off += len;
    carry.n = 0;
    for (;;) {
      struct px_fr_out o;
      ssize_t rc;
      enum px_fr_st before = f.st;

      memset(&o, 0x5a, sizeof o);
      rc = px_framer_feed(&f, buf + pos, blen - pos, out, outcap, &o);
      assert_true(++iters < 10 * n + 1000);
      if (rc < 0) {
        t->err = (int)rc;
        free(buf);
        goto done;
      }
      assert_true((size_t)rc <= blen - pos);
      if (before == PX_FRS_DONE) {
        /* A done framer consumes nothing more. */
        assert_int_equal(rc, 0);
        assert_int_equal(o.ev, PX_FR_NONE);
      }
      if (o.ev == PX_FR_BODY) {
        assert_true(o.n <= outcap);
        assert_true(o.n == 0 || (o.p >= out && o.p + o.n <= out + outcap));
      }
      if (o.ev == PX_FR_END)
        assert_int_equal(f.st, PX_FRS_DONE);
      pos += (size_t)rc;
      trace_add(t, &o);
      if (rc == 0 && o.ev == PX_FR_NONE)
        break;
    }
    bytes_add(&carry, buf + pos, blen - pos);
    free(buf);
    if (f.st == PX_FRS_DONE || off == n)
      break;
  }
  t->consumed = off - carry.n;
done:
  t->st = f.st;
  px_framer_reset(&f);
  assert_null(f.lbuf);
  bytes_free(&carry);
  free(out);
}

static void assert_trace_eq(const struct trace *a, const struct trace *b)
{
  assert_int_equal(a->err, b->err);
  assert_int_equal(a->nev, b->nev);
  for (size_t i = 0; i < a->nev; i++) {
    assert_int_equal(a->ev[i].ev, b->ev[i].ev);
    assert_int_equal(a->ev[i].ok, b->ev[i].ok);
    assert_int_equal(a->ev[i].n, b->ev[i].n);
  }
  assert_bytes_eq(a->data.p, a->data.n, b->data.p, b->data.n);
  if (a->err == 0) {
    assert_int_equal(a->consumed, b->consumed);
    assert_int_equal(a->st, b->st);
  }
}

/* Runs every split mode and several output sizes; all must agree with the
 * whole feed, which is returned in *whole. */
static void run_all_splits(enum px_shape shape, int lines, size_t max,
                           const char *in, size_t n, unsigned seeds,
                           struct trace *whole)
{
  static const size_t outcaps[] = { 2, 3, 16, 4096 };

  run_framer(shape, lines, max, in, n, SPLIT_WHOLE, 0, 4096, whole);
  for (size_t c = 0; c < sizeof outcaps / sizeof *outcaps; c++) {
    for (int m = SPLIT_WHOLE; m <= SPLIT_RANDOM; m++) {
      for (uint64_t seed = 1; seed <= (m == SPLIT_RANDOM ? seeds : 1u);
           seed++) {
        struct trace t;
        run_framer(shape, lines, max, in, n, (enum split_mode)m,
                   seed * 1000 + c, outcaps[c], &t);
        assert_trace_eq(&t, whole);
        trace_free(&t);
      }
    }
  }
}

struct fexp {
  enum px_fr_ev ev; /* PX_FR_NONE ends the list */
  int ok;
  const char *p;
  size_t n;
};

struct fcase {
  const char *name;
  enum px_shape shape;
  int lines;
  size_t max;
  const char *in;
  size_t inlen;
  int err;
  size_t left; /* bytes at the end of in left unconsumed */
  enum px_fr_st st;
  struct fexp ev[6];
};

#define ALL 0
#define E_ST(ok, s) {PX_FR_STATUS, ok, S(s)}
#define E_CONT(s) {PX_FR_CONT, 0, S(s)}
#define E_BODY(s) {PX_FR_BODY, 0, S(s)}
#define E_LINE(s) {PX_FR_LINE, 0, S(s)}
#define E_END {PX_FR_END, 0, NULL, 0}

static const struct fcase fcases[] = {
  /* One-line responses. */
  {"single ok", PX_SHAPE_SINGLE, 0, 512, S("+OK hello\r\n"), 0, ALL,
   PX_FRS_DONE, {E_ST(1, "+OK hello")}},
  {"single bare ok", PX_SHAPE_SINGLE, 0, 512, S("+OK\r\n"), 0, ALL,
   PX_FRS_DONE, {E_ST(1, "+OK")}},
  {"single err", PX_SHAPE_SINGLE, 0, 512, S("-ERR [SYS/TEMP] no\r\n"), 0,
   ALL, PX_FRS_DONE, {E_ST(0, "-ERR [SYS/TEMP] no")}},
  {"single bare err", PX_SHAPE_SINGLE, 0, 512, S("-ERR\r\n"), 0, ALL,
   PX_FRS_DONE, {E_ST(0, "-ERR")}},
  {"single 8-bit", PX_SHAPE_SINGLE, 0, 512, S("+OK h\xc3\xa9\r\n"), 0, ALL,
   PX_FRS_DONE, {E_ST(1, "+OK h\xc3\xa9")}},
  {"single leftover", PX_SHAPE_SINGLE, 0, 512, S("+OK\r\n+OK again\r\n"), 0,
   11, PX_FRS_DONE, {E_ST(1, "+OK")}},
  {"single partial", PX_SHAPE_SINGLE, 0, 512, S("+OK hel"), 0, 0,
   PX_FRS_STATUS, {{PX_FR_NONE, 0, NULL, 0}}},
  {"single partial cr", PX_SHAPE_SINGLE, 0, 512, S("+OK hel\r"), 0, ALL,
   PX_FRS_STATUS, {{PX_FR_NONE, 0, NULL, 0}}},
  {"empty input", PX_SHAPE_MULTI, 0, 512, S(""), 0, 0, PX_FRS_STATUS,
   {{PX_FR_NONE, 0, NULL, 0}}},
  /* A -ERR on a multi-line command is one line. */
  {"multi err", PX_SHAPE_MULTI, 0, 512, S("-ERR no such message\r\n.\r\n"),
   0, 3, PX_FRS_DONE, {E_ST(0, "-ERR no such message")}},
  {"multi err lines", PX_SHAPE_MULTI, 1, 512, S("-ERR\r\nTOP\r\n.\r\n"), 0,
   8, PX_FRS_DONE, {E_ST(0, "-ERR")}},
  /* Bad status lines. */
  {"+OKX", PX_SHAPE_SINGLE, 0, 512, S("+OKX\r\n"), PX_EPROTO, 0, 0, {{0}}},
  {"+OKX multi", PX_SHAPE_MULTI, 0, 512, S("+OKX\r\n.\r\n"), PX_EPROTO, 0,
   0, {{0}}},
  {"-ERRX", PX_SHAPE_SINGLE, 0, 512, S("-ERRX\r\n"), PX_EPROTO, 0, 0, {{0}}},
  {"OK", PX_SHAPE_SINGLE, 0, 512, S("OK\r\n"), PX_EPROTO, 0, 0, {{0}}},
  {"garbage", PX_SHAPE_SINGLE, 0, 512, S("garbage\r\n"), PX_EPROTO, 0, 0,
   {{0}}},
  {"empty line", PX_SHAPE_SINGLE, 0, 512, S("\r\n"), PX_EPROTO, 0, 0, {{0}}},
  {"+ in single", PX_SHAPE_SINGLE, 0, 512, S("+ go\r\n"), PX_EPROTO, 0, 0,
   {{0}}},
  {"+ in multi", PX_SHAPE_MULTI, 0, 512, S("+\r\n"), PX_EPROTO, 0, 0, {{0}}},
  {"tab after +OK", PX_SHAPE_SINGLE, 0, 512, S("+OK\tx\r\n"), PX_EPROTO, 0,
   0, {{0}}},
  {"ctl in status", PX_SHAPE_SINGLE, 0, 512, S("+OK a\x01z\r\n"), PX_EPROTO,
   0, 0, {{0}}},
  {"nul in status", PX_SHAPE_SINGLE, 0, 512, S("+OK a\0z\r\n"), PX_EPROTO,
   0, 0, {{0}}},
  {"lf in status", PX_SHAPE_SINGLE, 0, 512, S("+OK a\nz\r\n"), PX_EPROTO, 0,
   0, {{0}}},
  {"bare lf status", PX_SHAPE_MULTI, 0, 512, S("+OK\nx\r\n.\r\n"),
   PX_EPROTO, 0, 0, {{0}}},
  {"cr in status", PX_SHAPE_SINGLE, 0, 512, S("+OK a\rz\r\n"), PX_EPROTO, 0,
   0, {{0}}},
  {"tab in err", PX_SHAPE_MULTI, 0, 512, S("-ERR\tx\r\n"), PX_EPROTO, 0, 0,
   {{0}}},
  /* Status line length: exactly max_line with CRLF passes, one more not. */
  {"status max", PX_SHAPE_SINGLE, 0, 16, S("+OK 456789012345\r\n"),
   PX_ELINE, 0, 0, {{0}}},
  {"status max ok", PX_SHAPE_SINGLE, 0, 18, S("+OK 456789012345\r\n"), 0,
   ALL, PX_FRS_DONE, {E_ST(1, "+OK 456789012345")}},
  {"status max+1", PX_SHAPE_SINGLE, 0, 17, S("+OK 456789012345\r\n"),
   PX_ELINE, 0, 0, {{0}}},
  {"status no crlf", PX_SHAPE_MULTI, 0, 16, S("+OK 4567890123456789"),
   PX_ELINE, 0, 0, {{0}}},
  /* Multi-line, byte mode. */
  {"list", PX_SHAPE_MULTI, 0, 512,
   S("+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n"), 0, ALL,
   PX_FRS_DONE,
   {E_ST(1, "+OK 2 messages (320 octets)"), E_BODY("1 120\r\n2 200\r\n"),
    E_END}},
  {"empty body", PX_SHAPE_MULTI, 0, 512, S("+OK\r\n.\r\n"), 0, ALL,
   PX_FRS_DONE, {E_ST(1, "+OK"), E_END}},
  {"stuffed + leftover", PX_SHAPE_MULTI, 0, 512,
   S("+OK\r\n..dot\r\n.x\r\nab\r\n.\r\n+OK next\r\n"), 0, 10, PX_FRS_DONE,
   {E_ST(1, "+OK"), E_BODY(".dot\r\nx\r\nab\r\n"), E_END}},
  {"bare lf dot", PX_SHAPE_MULTI, 0, 512, S("+OK\r\na\n.\r\nb\r\n.\r\n"), 0,
   ALL, PX_FRS_DONE, {E_ST(1, "+OK"), E_BODY("a\n.\r\nb\r\n"), E_END}},
  {"binary body", PX_SHAPE_MULTI, 0, 512,
   S("+OK\r\n\0\x01\r\x7f\xff\t\r\n.\r\n"), 0, ALL, PX_FRS_DONE,
   {E_ST(1, "+OK"), E_BODY("\0\x01\r\x7f\xff\t\r\n"), E_END}},
  {"held dot cr", PX_SHAPE_MULTI, 0, 512, S("+OK\r\n.\rX\r\n.\r\n"), 0, ALL,
   PX_FRS_DONE, {E_ST(1, "+OK"), E_BODY("\rX\r\n"), E_END}},
  {"body long line", PX_SHAPE_MULTI, 0, 16,
   S("+OK\r\n0123456789012345678901234567890123456789\r\n.\r\n"), 0, ALL,
   PX_FRS_DONE,
   {E_ST(1, "+OK"), E_BODY("0123456789012345678901234567890123456789\r\n"),
    E_END}},
  {"no final dot", PX_SHAPE_MULTI, 0, 512, S("+OK\r\nabc\r\n"), 0, ALL,
   PX_FRS_BODY, {E_ST(1, "+OK"), E_BODY("abc\r\n")}},
  /* Multi-line, line mode (CAPA). */
  {"capa", PX_SHAPE_MULTI, 1, 512,
   S("+OK Capability list follows\r\nTOP\r\nUIDL\r\nSASL PLAIN LOGIN\r\n"
     ".\r\n"),
   0, ALL, PX_FRS_DONE,
   {E_ST(1, "+OK Capability list follows"), E_LINE("TOP\r\n"),
    E_LINE("UIDL\r\n"), E_LINE("SASL PLAIN LOGIN\r\n"), E_END}},
  {"capa stuffed", PX_SHAPE_MULTI, 1, 512, S("+OK\r\n..X\r\n\r\n.\r\nTAIL"),
   0, 4, PX_FRS_DONE,
   {E_ST(1, "+OK"), E_LINE(".X\r\n"), E_LINE("\r\n"), E_END}},
  {"capa empty", PX_SHAPE_MULTI, 1, 512, S("+OK\r\n.\r\n"), 0, ALL,
   PX_FRS_DONE, {E_ST(1, "+OK"), E_END}},
  {"capa partial", PX_SHAPE_MULTI, 1, 512, S("+OK\r\nTO"), 0, ALL,
   PX_FRS_BODY, {E_ST(1, "+OK")}},
  {"capa line max", PX_SHAPE_MULTI, 1, 8, S("+OK\r\n123456\r\n.\r\n"), 0,
   ALL, PX_FRS_DONE, {E_ST(1, "+OK"), E_LINE("123456\r\n"), E_END}},
  {"capa line max+1", PX_SHAPE_MULTI, 1, 8, S("+OK\r\n1234567\r\n.\r\n"),
   PX_ELINE, 0, 0, {E_ST(1, "+OK")}},
  {"capa line no crlf", PX_SHAPE_MULTI, 1, 8, S("+OK\r\n1234567890123"),
   PX_ELINE, 0, 0, {E_ST(1, "+OK")}},
  {"capa ctl", PX_SHAPE_MULTI, 1, 512, S("+OK\r\nTOP\x01\r\n.\r\n"),
   PX_EPROTO, 0, 0, {E_ST(1, "+OK")}},
  {"capa bare lf", PX_SHAPE_MULTI, 1, 512, S("+OK\r\nTOP\nUSER\r\n.\r\n"),
   PX_EPROTO, 0, 0, {E_ST(1, "+OK")}},
  {"capa bare cr", PX_SHAPE_MULTI, 1, 512, S("+OK\r\nA\rB\r\n.\r\n"),
   PX_EPROTO, 0, 0, {E_ST(1, "+OK")}},
  {"capa nul", PX_SHAPE_MULTI, 1, 512, S("+OK\r\nA\0B\r\n.\r\n"), PX_EPROTO,
   0, 0, {E_ST(1, "+OK")}},
  {"capa bare lf dot", PX_SHAPE_MULTI, 1, 512, S("+OK\r\nA\n.\r\n"),
   PX_EPROTO, 0, 0, {E_ST(1, "+OK")}},
  /* SASL. */
  {"sasl cont empty", PX_SHAPE_SASL, 0, 512, S("+ \r\n"), 0, ALL,
   PX_FRS_STATUS, {E_CONT("+ ")}},
  {"sasl cont bare", PX_SHAPE_SASL, 0, 512, S("+\r\n"), 0, ALL,
   PX_FRS_STATUS, {E_CONT("+")}},
  {"sasl exchange", PX_SHAPE_SASL, 0, 512,
   S("+ dGVzdA==\r\n+ \r\n+OK Logged in.\r\n"), 0, ALL, PX_FRS_DONE,
   {E_CONT("+ dGVzdA=="), E_CONT("+ "), E_ST(1, "+OK Logged in.")}},
  {"sasl fail + leftover", PX_SHAPE_SASL, 0, 512,
   S("+ a\r\n-ERR [AUTH] Authentication failed.\r\nleft"), 0, 4,
   PX_FRS_DONE,
   {E_CONT("+ a"), E_ST(0, "-ERR [AUTH] Authentication failed.")}},
  {"sasl ok at once", PX_SHAPE_SASL, 0, 512, S("+OK\r\n"), 0, ALL,
   PX_FRS_DONE, {E_ST(1, "+OK")}},
  {"sasl +OKX", PX_SHAPE_SASL, 0, 512, S("+OKX\r\n"), PX_EPROTO, 0, 0,
   {{0}}},
  {"sasl +x", PX_SHAPE_SASL, 0, 512, S("+x\r\n"), PX_EPROTO, 0, 0, {{0}}},
  {"sasl ctl", PX_SHAPE_SASL, 0, 512, S("+ ab\x02\r\n"), PX_EPROTO, 0, 0,
   {{0}}},
  {"sasl long", PX_SHAPE_SASL, 0, 8, S("+ 1234567\r\n"), PX_ELINE, 0, 0,
   {{0}}},
  {"sasl garbage 2nd", PX_SHAPE_SASL, 0, 512, S("+ a\r\nhello\r\n"),
   PX_EPROTO, 0, 0, {E_CONT("+ a")}},
};

static void check_fcase(const struct fcase *c, const struct trace *t)
{
  size_t i;

  assert_int_equal(t->err, c->err);
  for (i = 0; i < 6 && c->ev[i].ev != PX_FR_NONE; i++) {
    assert_true(i < t->nev);
    assert_int_equal(t->ev[i].ev, c->ev[i].ev);
    assert_int_equal(t->ev[i].ok, c->ev[i].ok);
    if (c->ev[i].ev != PX_FR_END)
      assert_bytes_eq(t->data.p + t->ev[i].off, t->ev[i].n, c->ev[i].p,
                      c->ev[i].n);
  }
  assert_int_equal(t->nev, i);
  if (c->err == 0) {
    assert_int_equal(t->consumed, c->inlen - c->left);
    assert_int_equal(t->st, c->st);
  }
}

static void test_framer_cases(void **state)
{
  (void)state;
  for (size_t i = 0; i < sizeof fcases / sizeof *fcases; i++) {
    const struct fcase *c = &fcases[i];
    struct trace whole;
    print_message("  framer case: %s\n", c->name);
    run_all_splits(c->shape, c->lines, c->max, c->in, c->inlen, SEEDS,
                   &whole);
    check_fcase(c, &whole);
    trace_free(&whole);
  }
}

/* A status line over max_line is refused also when it arrives in pieces
 * that each fit, at every limit around the line's length. */
static void test_framer_status_limit(void **state)
{
  char line[700];

  (void)state;
  memcpy(line, "+OK ", 4);
  for (size_t i = 4; i < sizeof line; i++)
    line[i] = (char)('a' + i % 26);
  for (size_t len = 6; len <= 600; len += (len < 40 ? 1 : 53)) {
    memcpy(line + len - 2, "\r\n", 2);
    for (size_t max = len - 3; max <= len + 1; max++) {
      struct trace whole;
      run_all_splits(PX_SHAPE_SINGLE, 0, max, line, len, 8, &whole);
      if (len <= max) {
        assert_int_equal(whole.err, 0);
        assert_int_equal(whole.nev, 1);
        assert_int_equal(whole.ev[0].n, len - 2);
      } else {
        assert_int_equal(whole.err, PX_ELINE);
        assert_int_equal(whole.nev, 0);
      }
      trace_free(&whole);
    }
    line[len - 2] = 'x';
    line[len - 1] = 'y';
  }
  /* 10 MB without a line end is refused without buffering it all. */
  {
    size_t n = 10u << 20;
    char *big = malloc(n);
    struct trace t;
    assert_non_null(big);
    memset(big, 'A', n);
    memcpy(big, "+OK ", 4);
    run_framer(PX_SHAPE_MULTI, 0, 1024, big, n, SPLIT_WHOLE, 0, 4096, &t);
    assert_int_equal(t.err, PX_ELINE);
    trace_free(&t);
    run_framer(PX_SHAPE_MULTI, 0, 1024, big, 64 << 10, SPLIT_RANDOM, 7, 4096,
               &t);
    assert_int_equal(t.err, PX_ELINE);
    trace_free(&t);
    free(big);
  }
}

/* A 100 KiB body line in byte mode passes whatever max_line is. */
static void test_framer_big_body_line(void **state)
{
  size_t body = 100 << 10;
  size_t n = 5 + body + 2 + 3;
  char *in = malloc(n);
  struct trace whole, t;

  (void)state;
  assert_non_null(in);
  memcpy(in, "+OK\r\n", 5);
  for (size_t i = 0; i < body; i++)
    in[5 + i] = (char)('a' + i % 26);
  memcpy(in + 5 + body, "\r\n.\r\n", 5);
  run_framer(PX_SHAPE_MULTI, 0, 512, in, n, SPLIT_WHOLE, 0, 4096, &whole);
  assert_int_equal(whole.err, 0);
  assert_int_equal(whole.nev, 3);
  assert_int_equal(whole.ev[1].ev, PX_FR_BODY);
  assert_int_equal(whole.ev[1].n, body + 2);
  assert_memory_equal(whole.data.p + whole.ev[1].off, in + 5, body + 2);
  assert_int_equal(whole.ev[2].ev, PX_FR_END);
  assert_int_equal(whole.consumed, n);
  for (uint64_t seed = 1; seed <= 4; seed++) {
    run_framer(PX_SHAPE_MULTI, 0, 512, in, n, SPLIT_RANDOM, seed,
               seed == 1 ? 2 : 1000, &t);
    assert_trace_eq(&t, &whole);
    trace_free(&t);
  }
  run_framer(PX_SHAPE_MULTI, 0, 512, in, n, SPLIT_BYTE, 0, 7, &t);
  assert_trace_eq(&t, &whole);
  trace_free(&t);
  trace_free(&whole);
  free(in);
}

/* Line mode across feeds: each line comes whole, CRLF included, however
 * the bytes arrive; the partial line is held by the framer. */
static void test_framer_lines_across_feeds(void **state)
{
  static const char in[] = "+OK\r\nSASL PLAIN\r\nTOP\r\n.\r\n";
  struct px_framer f;
  struct px_fr_out o;
  char out[16];
  ssize_t rc;

  (void)state;
  memset(&f, 0, sizeof f);
  px_framer_start(&f, PX_SHAPE_MULTI, 1, 512);
  rc = px_framer_feed(&f, in, 5, out, sizeof out, &o);
  assert_int_equal(rc, 5);
  assert_int_equal(o.ev, PX_FR_STATUS);
  assert_int_equal(o.ok, 1);
  assert_int_equal(f.st, PX_FRS_BODY);
  /* "SASL P": no event, bytes taken into the framer's buffer. */
  rc = px_framer_feed(&f, in + 5, 6, out, sizeof out, &o);
  assert_int_equal(o.ev, PX_FR_NONE);
  assert_int_equal(rc, 6);
  rc = px_framer_feed(&f, in + 11, 0, out, sizeof out, &o);
  assert_int_equal(rc, 0);
  assert_int_equal(o.ev, PX_FR_NONE);
  /* "LAIN\r\nTOP\r\n.\r\n": the whole line. */
  rc = px_framer_feed(&f, in + 11, sizeof in - 1 - 11, out, sizeof out, &o);
  assert_true(rc >= 0);
  assert_int_equal(o.ev, PX_FR_LINE);
  assert_int_equal(o.n, 12);
  assert_memory_equal(o.p, "SASL PLAIN\r\n", 12);
  px_framer_reset(&f);
  assert_null(f.lbuf);
  px_framer_reset(&f); /* harmless twice */
}

/* px_framer_reset releases a pending partial line (LSan checks), in the
 * status line and in a line-mode body; the framer can be started again. */
static void test_framer_reset_partial(void **state)
{
  static const struct {
    enum px_shape shape;
    int lines;
    const char *a, *b;
  } t[] = {
    {PX_SHAPE_SINGLE, 0, "+OK par", "tial"},
    {PX_SHAPE_MULTI, 1, "+OK\r\nSAS", "L"},
    {PX_SHAPE_SASL, 0, "+ abc", "def"},
    {PX_SHAPE_MULTI, 0, "+OK 1 2 3 4", "5"},
  };
  (void)state;
  for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
    struct px_framer f;
    struct px_fr_out o;
    char out[8];
    ssize_t rc;
    const char *p;
    size_t left;

    memset(&f, 0, sizeof f);
    px_framer_start(&f, t[i].shape, t[i].lines, 512);
    for (int k = 0; k < 2; k++) {
      p = k == 0 ? t[i].a : t[i].b;
      left = strlen(p);
      do {
        char *chunk = dup_exact(p, left);
        rc = px_framer_feed(&f, chunk, left, out, sizeof out, &o);
        free(chunk);
        assert_true(rc >= 0);
        p += rc;
        left -= (size_t)rc;
      } while (!(rc == 0 && o.ev == PX_FR_NONE));
    }
    px_framer_reset(&f);
    assert_null(f.lbuf);
    /* Started again, it frames a fresh response. */
    px_framer_start(&f, PX_SHAPE_SINGLE, 0, 512);
    rc = px_framer_feed(&f, "-ERR x\r\n", 8, out, sizeof out, &o);
    assert_int_equal(rc, 8);
    assert_int_equal(o.ev, PX_FR_STATUS);
    assert_int_equal(o.ok, 0);
    assert_int_equal(o.n, 6);
    assert_memory_equal(o.p, "-ERR x", 6);
    px_framer_reset(&f);
  }
}

/* After END the framer consumes nothing; a new response needs a restart. */
static void test_framer_done_consumes_nothing(void **state)
{
  static const char in[] = "+OK\r\nx\r\n.\r\n+OK\r\n";
  struct px_framer f;
  struct px_fr_out o;
  char out[64];
  size_t off = 0;
  ssize_t rc;
  int ends = 0;

  (void)state;
  memset(&f, 0, sizeof f);
  px_framer_start(&f, PX_SHAPE_MULTI, 0, 512);
  do {
    rc = px_framer_feed(&f, in + off, sizeof in - 1 - off, out, sizeof out,
                        &o);
    assert_true(rc >= 0);
    off += (size_t)rc;
    if (o.ev == PX_FR_END)
      ends++;
  } while (!(rc == 0 && o.ev == PX_FR_NONE));
  assert_int_equal(ends, 1);
  assert_int_equal(off, 11);
  assert_int_equal(f.st, PX_FRS_DONE);
  for (int k = 0; k < 3; k++) {
    rc = px_framer_feed(&f, in + off, sizeof in - 1 - off, out, sizeof out,
                        &o);
    assert_int_equal(rc, 0);
    assert_int_equal(o.ev, PX_FR_NONE);
  }
  px_framer_reset(&f);
  px_framer_start(&f, PX_SHAPE_SINGLE, 0, 512);
  rc = px_framer_feed(&f, in + off, sizeof in - 1 - off, out, sizeof out, &o);
  assert_int_equal(rc, 5);
  assert_int_equal(o.ev, PX_FR_STATUS);
  assert_int_equal(f.st, PX_FRS_DONE);
  px_framer_reset(&f);
}

/* Random response-like streams for every shape and mode: whatever the
 * framer makes of them (events or an error), every split agrees. */
static void test_framer_random(void **state)
{
  static const char *const pieces[] = {
    "+OK", "-ERR", "+", " ", "x", "\r\n", "\r\n", ".", "..", "\r", "\n",
    "\0", "\x01", "\xff", ".\r\n", "\r\n.\r\n", "+ ", "OK", "abcdefgh",
  };
  (void)state;
  for (uint64_t seed = 1; seed <= 1500; seed++) {
    uint64_t rng = seed;
    struct bytes in = {0};
    enum px_shape shape = (enum px_shape)rng_below(&rng, PX_SHAPE_COUNT);
    int lines = (int)rng_below(&rng, 2);
    size_t max = 4 + rng_below(&rng, 30);
    struct trace whole;

    if (rng_below(&rng, 2)) {
      const char *pre = rng_below(&rng, 2) ? "+OK\r\n" : "+ \r\n";
      bytes_add(&in, pre, strlen(pre));
    }
    for (size_t k = rng_below(&rng, 30); k > 0; k--) {
      const char *p = pieces[rng_below(&rng, sizeof pieces / sizeof *pieces)];
      bytes_add(&in, p, p[0] ? strlen(p) : 1);
    }
    if (in.p == NULL)
      bytes_add(&in, "", 0);
    run_all_splits(shape, lines, max, in.p, in.n, 4, &whole);
    trace_free(&whole);
    bytes_free(&in);
  }
}

static void test_names(void **state)
{
  (void)state;
  for (int i = 0; i < PX_CMD_COUNT; i++)
    assert_non_null(px_cmd_names[i]);
  assert_string_equal(px_cmd_names[PX_CMD_RETR], "RETR");
  assert_string_equal(px_cmd_names[PX_CMD_TOP], "TOP");
  assert_string_equal(px_cmd_names[PX_CMD_LANG], "LANG");
  assert_string_equal(px_cmd_names[PX_CMD_USER], "USER");
}

/* ---- out of memory ------------------------------------------------------ */

static const char capa_resp[] = "+OK Capability list follows\r\n"
                                "TOP\r\nUSER\r\nSASL PLAIN\r\n.\r\n";

/* Feeds in[0..n) to a fresh line-mode framer, a byte at a time or whole,
 * and writes its events as text into ev. Allocates nothing itself, so
 * failalloc counts the framer's allocations only. A feed refused for
 * memory must return UV_ENOMEM and keep no partial line; memory is then
 * given back (fa_off) and the same bytes are offered again. Returns how
 * many feeds were refused. */
static unsigned feed_framer(const char *in, size_t n, int bytewise, char *ev,
                            size_t evcap)
{
  struct px_framer f;
  char out[64];
  size_t pos = 0, evn = 0;
  unsigned refused = 0;

  ev[0] = '\0';
  px_framer_start(&f, PX_SHAPE_MULTI, 1, 512);
  for (;;) {
    size_t avail = bytewise && n - pos > 0 ? 1 : n - pos;
    struct px_fr_out o;
    ssize_t rc = px_framer_feed(&f, in + pos, avail, out, sizeof out, &o);

    if (rc == UV_ENOMEM) {
      TU_CHECK(f.lbuf == NULL && f.llen == 0);
      TU_CHECK(++refused < 100);
      fa_off();
      continue;
    }
    TU_CHECK(rc >= 0 && (size_t)rc <= avail);
    if (o.ev != PX_FR_NONE) {
      int end = o.ev == PX_FR_END; /* no bytes: o.p is not set */
      int w = snprintf(ev + evn, evcap - evn, "%d:%.*s|", (int)o.ev,
                       end ? 0 : (int)o.n, end ? "" : o.p);
      TU_CHECK(w > 0 && (size_t)w < evcap - evn);
      evn += (size_t)w;
    }
    pos += (size_t)rc;
    if (rc == 0 && o.ev == PX_FR_NONE) {
      TU_CHECK(f.st == PX_FRS_DONE || avail == 0);
      break;
    }
  }
  TU_CHECK(pos == n);
  px_framer_reset(&f);
  return refused;
}

/* The framer allocates only to keep a partial line across feeds: a sweep
 * over its allocations gets UV_ENOMEM with nothing kept, and offering the
 * same bytes again once memory is back gives the same events. */
static void test_framer_enomem(void **state)
{
  char want[512], got[512];
  unsigned long nth;

  (void)state;
  assert_int_equal(feed_framer(S(capa_resp), 1, want, sizeof want), 0);
  assert_string_equal(want, "1:+OK Capability list follows|4:TOP\r\n|"
                            "4:USER\r\n|4:SASL PLAIN\r\n|5:|");
  for (nth = 1;; nth++) {
    unsigned refused;

    fa_fail_nth(nth);
    refused = feed_framer(S(capa_resp), 1, got, sizeof got);
    fa_off();
    assert_string_equal(got, want);
    if (fa_failed() == 0) {
      assert_int_equal(refused, 0);
      break;
    }
    assert_int_equal(refused, 1);
  }
  /* One partial-line buffer, kept for the whole response. */
  assert_int_equal(nth, 2);

  /* Every allocation failing: refused, then fine once memory is back. */
  fa_fail_all();
  assert_int_equal(feed_framer(S(capa_resp), 1, got, sizeof got), 1);
  assert_string_equal(got, want);

  /* A response that arrives whole needs no allocation at all. */
  fa_fail_all();
  assert_int_equal(feed_framer(S(capa_resp), 0, got, sizeof got), 0);
  assert_int_equal(fa_calls(), 0);
  fa_off();
  assert_string_equal(got, want);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_parse_cases),
    cmocka_unit_test(test_parse_8bit),
    cmocka_unit_test(test_parse_every_byte),
    cmocka_unit_test(test_parse_control_anywhere),
    cmocka_unit_test(test_parse_all_keywords),
    cmocka_unit_test(test_format_longest),
    cmocka_unit_test(test_parse_random),
    cmocka_unit_test(test_shape),
    cmocka_unit_test(test_sasl_check),
    cmocka_unit_test(test_sasl_mech_ok),
    cmocka_unit_test(test_line),
    cmocka_unit_test(test_line_prefixes),
    cmocka_unit_test(test_framer_cases),
    cmocka_unit_test(test_framer_status_limit),
    cmocka_unit_test(test_framer_big_body_line),
    cmocka_unit_test(test_framer_lines_across_feeds),
    cmocka_unit_test(test_framer_reset_partial),
    cmocka_unit_test(test_framer_done_consumes_nothing),
    cmocka_unit_test(test_framer_random),
    cmocka_unit_test(test_names),
    cmocka_unit_test(test_framer_enomem),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
