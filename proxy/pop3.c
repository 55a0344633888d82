/* pop3.c - POP3 command parser, line finder and response framer. See pop3.h.
 */
#include "pop3.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "px.h"

const char *const px_cmd_names[] = { "USER", "PASS", "APOP", "AUTH", "STAT",
                                     "LIST", "UIDL", "RETR", "TOP",  "DELE",
                                     "NOOP", "RSET", "QUIT", "CAPA", "STLS",
                                     "UTF8", "LANG" };
_Static_assert(sizeof px_cmd_names / sizeof *px_cmd_names == PX_CMD_COUNT,
               "px_cmd_names out of sync");

/* RFC 4422 3.1: a mechanism name is 1 to 20 of [A-Z0-9-_]. */
#define SASL_MECH_MAX 20
/* A message number or line count: enough for any 32-bit value. */
#define NUMBER_MAX 10

int px_pop3_line(const char *p, size_t n, size_t max, size_t *linelen)
{
  size_t lim = n < max ? n : max;
  const char *s = p;

  /* Look for an LF within the first max bytes that has a CR before it. */
  while (lim > (size_t)(s - p)) {
    const char *lf = memchr(s, '\n', lim - (size_t)(s - p));
    if (lf == NULL)
      break;
    if (lf > p && lf[-1] == '\r') {
      *linelen = (size_t)(lf - p) - 1;
      return 1;
    }
    s = lf + 1;
  }
  /* Without CRLF the line needs 2 more bytes, or 1 after a final CR. */
  if (n >= max || (n + 1 == max && (n == 0 || p[n - 1] != '\r')))
    return PX_ELINE;
  return 0;
}

static int is_digits(const char *s, size_t n, size_t max)
{
  if (n == 0 || n > max)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9')
      return 0;
  return 1;
}

/* RFC 4648 base64: "=" only as padding at the end (at most two), and a
 * padded token is a whole number of 4-byte groups. */
static int is_base64(const char *s, size_t n)
{
  size_t pad = 0;

  while (pad < n && pad < 2 && s[n - 1 - pad] == '=')
    pad++;
  if (pad > 0 && n % 4 != 0)
    return 0;
  for (size_t i = 0; i < n - pad; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
          (c >= '0' && c <= '9') || c == '+' || c == '/'))
      return 0;
  }
  return 1;
}

int px_pop3_sasl_mech_ok(const char *s, size_t n)
{
  static const char plus[] = "-PLUS";
  const size_t pluslen = sizeof plus - 1;

  if (n == 0 || n > SASL_MECH_MAX)
    return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
          (c >= '0' && c <= '9') || c == '-' || c == '_'))
      return 0;
  }
  /* Client certificates and channel bindings end at the proxy: relaying
   * EXTERNAL would log the user in as whatever the proxy presents. */
  if (n == 8 && strncasecmp(s, "EXTERNAL", 8) == 0)
    return 0;
  if (n > pluslen && strncasecmp(s + n - pluslen, plus, pluslen) == 0)
    return 0;
  return 1;
}

int px_pop3_sasl_check(const char *line, size_t len)
{
  if (len == 1 && line[0] == '*')
    return 0;
  return is_base64(line, len) ? 0 : PX_EBADARG;
}

static int check_args(struct px_cmd *c)
{
  const char *a0 = c->arg[0], *a1 = c->arg[1];
  size_t l0 = c->arglen[0], l1 = c->arglen[1];

  switch (c->id) {
  case PX_CMD_STAT:
  case PX_CMD_NOOP:
  case PX_CMD_RSET:
  case PX_CMD_QUIT:
  case PX_CMD_CAPA:
  case PX_CMD_STLS:
  case PX_CMD_UTF8:
    return c->nargs == 0 ? 0 : PX_EBADARG;
  case PX_CMD_LIST:
  case PX_CMD_UIDL:
    if (c->nargs == 0)
      return 0;
    return c->nargs == 1 && is_digits(a0, l0, NUMBER_MAX) ? 0 : PX_EBADARG;
  case PX_CMD_RETR:
  case PX_CMD_DELE:
    return c->nargs == 1 && is_digits(a0, l0, NUMBER_MAX) ? 0 : PX_EBADARG;
  case PX_CMD_TOP:
    return c->nargs == 2 && is_digits(a0, l0, NUMBER_MAX) &&
                   is_digits(a1, l1, NUMBER_MAX)
               ? 0
               : PX_EBADARG;
  case PX_CMD_USER:
  case PX_CMD_PASS:
    return c->nargs == 1 && l0 > 0 ? 0 : PX_EBADARG;
  case PX_CMD_APOP:
    if (c->nargs != 2 || l1 != 32)
      return PX_EBADARG;
    for (size_t i = 0; i < l1; i++) {
      unsigned char h = (unsigned char)a1[i];
      if (!((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') ||
            (h >= 'A' && h <= 'F')))
        return PX_EBADARG;
    }
    return 0;
  case PX_CMD_LANG:
    return c->nargs <= 1 ? 0 : PX_EBADARG;
  case PX_CMD_AUTH:
    if (c->nargs == 0)
      return 0;
    if (!px_pop3_sasl_mech_ok(a0, l0))
      return PX_EBADARG;
    /* "=" is the empty initial response (RFC 5034 section 4). */
    if (c->nargs == 2 && !(l1 == 1 && a1[0] == '=') &&
        !(l1 > 0 && is_base64(a1, l1)))
      return PX_EBADARG;
    return 0;
  case PX_CMD_COUNT:
    break;
  }
  return PX_EBADARG;
}

int px_pop3_parse_cmd(const char *line, size_t len, int utf8, struct px_cmd *c)
{
  size_t klen, i;
  const char *rest;
  size_t restlen;

  for (i = 0; i < len; i++) {
    unsigned char b = (unsigned char)line[i];
    if (b < 0x20 || b == 0x7f || (b >= 0x80 && !utf8))
      return PX_EBADCHAR;
  }

  for (klen = 0; klen < len && line[klen] != ' '; klen++)
    ;
  c->id = PX_CMD_COUNT;
  if (klen == 3 || klen == 4)
    for (i = 0; i < PX_CMD_COUNT; i++)
      if (strlen(px_cmd_names[i]) == klen &&
          strncasecmp(line, px_cmd_names[i], klen) == 0) {
        c->id = (enum px_cmd_id)i;
        break;
      }
  if (c->id == PX_CMD_COUNT)
    return PX_EBADCMD;

  c->nargs = 0;
  c->arg[0] = c->arg[1] = NULL;
  c->arglen[0] = c->arglen[1] = 0;
  rest = klen < len ? line + klen + 1 : line + len;
  restlen = klen < len ? len - klen - 1 : 0;

  if (c->id == PX_CMD_USER || c->id == PX_CMD_PASS) {
    /* The whole rest is the argument: passwords may hold spaces. */
    if (restlen > 0) {
      c->nargs = 1;
      c->arg[0] = rest;
      c->arglen[0] = restlen;
    }
    return check_args(c);
  }

  if (restlen > 0 && rest[restlen - 1] == ' ')
    restlen--; /* "LIST " and "AUTH " have no argument */
  while (restlen > 0) {
    const char *sp = memchr(rest, ' ', restlen);
    size_t tl = sp != NULL ? (size_t)(sp - rest) : restlen;
    if (tl == 0 || c->nargs == PX_CMD_MAX_ARGS)
      return PX_EBADARG;
    c->arg[c->nargs] = rest;
    c->arglen[c->nargs] = tl;
    c->nargs++;
    if (sp == NULL)
      break;
    rest = sp + 1;
    restlen -= tl + 1;
    if (restlen == 0)
      return PX_EBADARG; /* "TOP 1 " with the trailing SP gone */
  }
  return check_args(c);
}

size_t px_pop3_format_cmd(const struct px_cmd *c, char *out, size_t cap)
{
  const char *kw = px_cmd_names[c->id];
  size_t n = strlen(kw), need = n + 2;

  for (unsigned i = 0; i < c->nargs; i++)
    need += 1 + c->arglen[i];
  if (need > cap)
    return 0;
  memcpy(out, kw, n);
  for (unsigned i = 0; i < c->nargs; i++) {
    out[n++] = ' ';
    memcpy(out + n, c->arg[i], c->arglen[i]);
    n += c->arglen[i];
  }
  out[n++] = '\r';
  out[n++] = '\n';
  return n;
}

enum px_shape px_pop3_shape(const struct px_cmd *c)
{
  switch (c->id) {
  case PX_CMD_RETR:
  case PX_CMD_TOP:
  case PX_CMD_CAPA:
    return PX_SHAPE_MULTI;
  case PX_CMD_LIST:
  case PX_CMD_UIDL:
  case PX_CMD_LANG:
    return c->nargs == 0 ? PX_SHAPE_MULTI : PX_SHAPE_SINGLE;
  case PX_CMD_AUTH:
    return c->nargs == 0 ? PX_SHAPE_MULTI : PX_SHAPE_SASL;
  default:
    return PX_SHAPE_SINGLE;
  }
}

/* ---- response framer --------------------------------------------------- */

void px_framer_start(struct px_framer *f, enum px_shape shape, int lines,
                     size_t max_line)
{
  f->max_line = max_line;
  f->shape = shape;
  f->lines = lines;
  f->st = PX_FRS_STATUS;
  px_dot_init(&f->dot);
  f->lbuf = NULL;
  f->llen = 0;
}

void px_framer_reset(struct px_framer *f)
{
  free(f->lbuf);
  f->lbuf = NULL;
  f->llen = 0;
}

/* Takes one CRLF line from in, joining it with a partial line kept from
 * earlier calls. Returns 1 with the line in *line and *len (CRLF excluded)
 * and the bytes taken in *used; 0 when all of in went into the partial
 * line; or a negative code. */
static int take_line(struct px_framer *f, const char *in, size_t n,
                     const char **line, size_t *len, size_t *used)
{
  size_t copy, old = f->llen;
  int rc;

  if (old == 0) {
    rc = px_pop3_line(in, n, f->max_line, len);
    if (rc != 0) {
      if (rc == 1) {
        *line = in;
        *used = *len + 2;
      }
      return rc;
    }
  }
  if (f->lbuf == NULL) {
    f->lbuf = malloc(f->max_line);
    if (f->lbuf == NULL)
      return -ENOMEM; /* UV_ENOMEM on Linux */
  }
  copy = f->max_line - old < n ? f->max_line - old : n;
  memcpy(f->lbuf + old, in, copy);
  f->llen = old + copy;
  rc = px_pop3_line(f->lbuf, f->llen, f->max_line, len);
  if (rc == 1) {
    *line = f->lbuf;
    *used = *len + 2 - old;
    f->llen = 0;
    return 1;
  }
  if (rc < 0)
    return rc;
  *used = copy;
  return 0;
}

static int has_ctl(const char *p, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if ((c < 0x20 && c != '\t') || c == 0x7f)
      return 1;
  }
  return 0;
}

/* 1 when p[0..n) is word followed by SP or by the end. */
static int status_is(const char *p, size_t n, const char *word)
{
  size_t w = strlen(word);
  return n >= w && memcmp(p, word, w) == 0 && (n == w || p[w] == ' ');
}

ssize_t px_framer_feed(struct px_framer *f, const char *in, size_t n, char *out,
                       size_t outcap, struct px_fr_out *o)
{
  const char *line;
  size_t len, used;
  int rc;

  o->ev = PX_FR_NONE;
  o->ok = 0;
  o->p = NULL;
  o->n = 0;

  switch (f->st) {
  case PX_FRS_STATUS:
    if (n == 0)
      return 0;
    rc = take_line(f, in, n, &line, &len, &used);
    if (rc <= 0)
      return rc < 0 ? rc : (ssize_t)used;
    if (has_ctl(line, len))
      return PX_EPROTO;
    o->p = line;
    o->n = len;
    if (status_is(line, len, "+OK")) {
      o->ok = 1;
    } else if (status_is(line, len, "-ERR")) {
      o->ok = 0;
    } else if (f->shape == PX_SHAPE_SASL && status_is(line, len, "+")) {
      o->ev = PX_FR_CONT; /* the next line is a status line again */
      return (ssize_t)used;
    } else {
      return PX_EPROTO;
    }
    o->ev = PX_FR_STATUS;
    f->st = o->ok && f->shape == PX_SHAPE_MULTI ? PX_FRS_BODY : PX_FRS_DONE;
    return (ssize_t)used;

  case PX_FRS_BODY:
    if (f->dot.st == PX_DOT_DONE) {
      f->st = PX_FRS_DONE;
      o->ev = PX_FR_END;
      return 0;
    }
    if (n == 0)
      return 0;
    if (f->lines) {
      rc = take_line(f, in, n, &line, &len, &used);
      if (rc <= 0)
        return rc < 0 ? rc : (ssize_t)used;
      if (has_ctl(line, len))
        return PX_EPROTO;
      if (len == 1 && line[0] == '.') {
        f->dot.st = PX_DOT_DONE;
        f->st = PX_FRS_DONE;
        o->ev = PX_FR_END;
        return (ssize_t)used;
      }
      if (len > 0 && line[0] == '.') {
        line++;
        len--;
      }
      o->ev = PX_FR_LINE;
      o->p = line;
      o->n = len + 2; /* the CRLF follows the line in memory */
      return (ssize_t)used;
    }
    {
      size_t outn, take = n < outcap - 1 ? n : outcap - 1;
      used = px_dot_decode(&f->dot, in, take, out, &outn);
      if (outn > 0) {
        o->ev = PX_FR_BODY;
        o->p = out;
        o->n = outn;
      } else if (f->dot.st == PX_DOT_DONE) {
        f->st = PX_FRS_DONE;
        o->ev = PX_FR_END;
      }
      return (ssize_t)used;
    }

  case PX_FRS_DONE:
  case PX_FRS_COUNT:
    break;
  }
  return 0;
}

size_t px_framer_relay(struct px_framer *f, struct px_dot_enc *e,
                       const char *in, size_t n, char *out, size_t cap,
                       size_t *outn)
{
  return px_dot_relay(&f->dot, e, in, n, out, cap, outn);
}
