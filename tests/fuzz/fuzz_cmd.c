/* fuzz_cmd.c - libFuzzer target for the client side of proxy/pop3.c: the
 * command parser and formatter, the line finder and the SASL checks.
 *
 * Input: one flag byte (bit 0: UTF8 mode; the rest picks a line limit),
 * then the bytes of a client line. Checks, with abort() on violation:
 *  - px_pop3_parse_cmd returns one of its documented codes, PX_EBADCHAR
 *    whenever a control byte or DEL is present; without UTF8 no 8-bit
 *    byte reaches a parsed command;
 *  - a parsed command's arguments lie inside the line, and
 *    px_pop3_format_cmd gives a canonical line (upper-case keyword, single
 *    spaces, CRLF, no longer than the input + CRLF) that re-parses to the
 *    same command and formats to the same bytes again;
 *  - px_pop3_line's answer is consistent with the bytes;
 *  - the SASL checks accept only what their contracts allow.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Iproxy
 *        -Itests tests/fuzz/fuzz_cmd.c proxy/pop3.c proxy/dot.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pop3.h"
#include "px.h"
#include "testutil.h"

static int is_b64(unsigned char c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '+' || c == '/' || c == '=';
}

static int is_mech(unsigned char c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static void check_line_finder(const char *p, size_t n, size_t max)
{
  size_t len = 0;
  int rc = px_pop3_line(p, n, max, &len);
  size_t first = n; /* index of the first CRLF's CR */

  for (size_t i = 0; i + 1 < n; i++)
    if (p[i] == '\r' && p[i + 1] == '\n') {
      first = i;
      break;
    }
  if (first < n && first + 2 <= max) {
    CHECK(rc == 1 && len == first);
  } else if (first < n || n >= max) {
    CHECK(rc == PX_ELINE);
  } else {
    /* No CRLF yet: 0 while a line of at most max can still end here. */
    size_t least = (n > 0 && p[n - 1] == '\r') ? n + 1 : n + 2;
    CHECK(rc == (least <= max ? 0 : PX_ELINE));
  }
}

static void check_cmd(const char *line, size_t len, int utf8)
{
  struct px_cmd c, c2;
  char out[PX_CMD_MAX + 1], again[PX_CMD_MAX + 1];
  size_t n, n2;
  int rc, bad = 0;

  for (size_t i = 0; i < len; i++) {
    unsigned char b = (unsigned char)line[i];
    if (b < 0x20 || b == 0x7f)
      bad = 1;
  }
  rc = px_pop3_parse_cmd(line, len, utf8, &c);
  CHECK(rc == 0 || rc == PX_EBADCHAR || rc == PX_EBADCMD ||
        rc == PX_EBADARG);
  if (bad)
    CHECK(rc == PX_EBADCHAR);
  if (rc != 0)
    return;
  CHECK(c.id < PX_CMD_COUNT);
  CHECK(c.nargs <= PX_CMD_MAX_ARGS);
  for (unsigned i = 0; i < c.nargs; i++) {
    CHECK(c.arglen[i] > 0);
    CHECK(c.arg[i] >= line && c.arg[i] + c.arglen[i] <= line + len);
    if (!utf8)
      for (size_t k = 0; k < c.arglen[i]; k++)
        CHECK((unsigned char)c.arg[i][k] < 0x80);
  }
  CHECK(px_pop3_shape(&c) < PX_SHAPE_COUNT);

  /* Canonical form: no longer than the input plus CRLF. */
  if (len + 2 > sizeof out)
    return;
  n = px_pop3_format_cmd(&c, out, len + 2);
  CHECK(n >= 5 && n <= len + 2);
  CHECK(out[n - 2] == '\r' && out[n - 1] == '\n');
  CHECK(memchr(out, '\r', n - 2) == NULL && memchr(out, '\n', n - 2) == NULL);
  CHECK(strlen(px_cmd_names[c.id]) <= n - 2);
  CHECK(memcmp(out, px_cmd_names[c.id], strlen(px_cmd_names[c.id])) == 0);
  if (n - 1 < len + 2)
    CHECK(px_pop3_format_cmd(&c, again, n - 1) == 0);

  /* Re-parse: the same command; format again: the same bytes. */
  {
    char *copy = malloc(n - 2 ? n - 2 : 1);
    CHECK(copy != NULL);
    memcpy(copy, out, n - 2);
    CHECK(px_pop3_parse_cmd(copy, n - 2, utf8, &c2) == 0);
    CHECK(c2.id == c.id && c2.nargs == c.nargs);
    for (unsigned i = 0; i < c.nargs; i++)
      CHECK(c2.arglen[i] == c.arglen[i] &&
            memcmp(c2.arg[i], c.arg[i], c.arglen[i]) == 0);
    CHECK(px_pop3_shape(&c2) == px_pop3_shape(&c));
    n2 = px_pop3_format_cmd(&c2, again, sizeof again);
    CHECK(n2 == n && memcmp(again, out, n) == 0);
    free(copy);
  }

  /* AUTH never relays a refused mechanism. */
  if (c.id == PX_CMD_AUTH && c.nargs > 0)
    CHECK(px_pop3_sasl_mech_ok(c.arg[0], c.arglen[0]) == 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const char *line;
  size_t len;
  char *copy;
  int utf8, rc;
  size_t max;

  if (size < 1)
    return 0;
  utf8 = data[0] & 1;
  max = 2 + (size_t)(data[0] >> 1) * 3;
  line = (const char *)data + 1;
  len = size - 1;

  /* An exact-size copy, so any read past the end is caught. */
  copy = malloc(len ? len : 1);
  CHECK(copy != NULL);
  memcpy(copy, line, len);

  check_line_finder(copy, len, max);
  check_line_finder(copy, len, PX_CMD_MAX);

  /* The parser is given what the line finder would give it. */
  {
    size_t ll;
    if (px_pop3_line(copy, len, PX_CMD_MAX, &ll) == 1)
      check_cmd(copy, ll, utf8);
    check_cmd(copy, len, utf8);
  }

  rc = px_pop3_sasl_check(copy, len);
  CHECK(rc == 0 || rc == PX_EBADARG);
  if (rc == 0 && !(len == 1 && copy[0] == '*'))
    for (size_t i = 0; i < len; i++)
      CHECK(is_b64((unsigned char)copy[i]));

  rc = px_pop3_sasl_mech_ok(copy, len);
  CHECK(rc == 0 || rc == 1);
  if (rc == 1) {
    CHECK(len >= 1 && len <= 20);
    for (size_t i = 0; i < len; i++)
      CHECK(is_mech((unsigned char)copy[i]));
  }

  free(copy);
  return 0;
}
