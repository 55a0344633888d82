/* conf.c - the configuration reader: inih -> immutable struct px_conf.
 *
 * How a file is read. inih (Debian's r55: fixed 200-byte line buffer, no line
 * numbers in callbacks, multi-line values on) drives the parse through
 * ini_parse_stream() with our own reader, reader_cb(). The reader reads each
 * physical line whole, counts lines, rejects a line longer than inih can hold
 * (instead of letting inih cut it), and classifies the line exactly as inih
 * will: comment, section header, "key = value", continuation (an indented
 * line after a key) or error. inih then calls handler_cb() for key and
 * continuation lines, so the handler always knows the current line number
 * and whether it is looking at a new key or at more of the previous value.
 *
 * A value is collected (key line plus its continuation lines, joined with
 * single spaces) and parsed when the next key, section or the end of the file
 * shows that it is complete, by the parser its row in conf_keys[] names
 * (conf_keys.c; a filter type's own keys go to its flt_ops.parse). After the
 * last line, conf_finish() (conf_check.c) checks what only the whole file
 * can tell: required keys, references between sections, duplicates.
 *
 * Every problem becomes one "FILE:LINE: message" line; parsing goes on after
 * an error so that one run reports all of them (up to PX_CONF_MAX_ERRORS),
 * sorted by line.
 *
 * A generation is refcounted (px_conf_ref/unref) and freed as a whole, with
 * whatever the value parsers and the filters' parse hooks stored in it.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_int.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void conf_errorf(struct loader *L, int line, const char *fmt, ...)
{
  struct err_rec *e;
  va_list ap;

  if (L->nerrs == PX_CONF_MAX_ERRORS) {
    L->nmore++;
    return;
  }
  e = &L->errs[L->nerrs];
  e->line = line;
  e->seq = L->nerrs;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  L->nerrs++;
}

/* A "#" after whitespace in a value looks like an inline comment, which
 * inih does not know (it only knows ";"). */
static int has_hash_comment(const char *v)
{
  size_t i;

  for (i = 1; v[i] != '\0'; i++)
    if (v[i] == '#' && isspace((unsigned char)v[i - 1]))
      return 1;
  return 0;
}

/* Reports a bad value of the pending key, at the key's line. */
void conf_bad(struct loader *L, const char *fmt, ...)
{
  char msg[PX_CONF_ERR_MSG];
  char joined[96] = "";
  const char *hint = "";
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (L->pend.last > L->pend.line)
    snprintf(joined, sizeof joined,
             " (lines %d-%d joined: an indented "
             "line continues the value above it)",
             L->pend.line, L->pend.last);
  if (L->pend.val != NULL && L->pend.len > 0 && has_hash_comment(L->pend.val))
    hint = " (inline comments start with \";\" after a space, not \"#\")";
  conf_errorf(L, L->pend.line, "%s%s%s", msg, joined, hint);
}

void conf_oom(struct loader *L)
{
  L->oom = 1;
}

char *conf_xstrdup(struct loader *L, const char *s)
{
  char *p = strdup(s);

  if (p == NULL)
    conf_oom(L);
  return p;
}
/* The generation: every section, then the struct. */
static void conf_free(struct px_conf *c)
{
  size_t i;

  if (c == NULL)
    return;
  conf_main_free(c);
  for (i = 0; i < c->nlisteners; i++)
    conf_listener_free(&c->listeners[i]);
  for (i = 0; i < c->nupstreams; i++)
    conf_upstream_free(&c->upstreams[i]);
  for (i = 0; i < c->nfilters; i++)
    conf_filter_free(&c->filters[i]);
  free(c->listeners);
  free(c->upstreams);
  free(c->filters);
  free(c);
}

/* The struct that keys of the current section fill. */
static void *cur_base(struct loader *L)
{
  switch (L->kind) {
  case SEC_MAIN:
    return L->scratch ? (void *)&L->scratch_main : (void *)L->c;
  case SEC_LISTENER:
    return L->scratch ? (void *)&L->scratch_l
                      : (void *)&L->c->listeners[L->idx];
  case SEC_UPSTREAM:
    return L->scratch ? (void *)&L->scratch_u
                      : (void *)&L->c->upstreams[L->idx];
  case SEC_FILTER:
    return L->scratch ? (void *)&L->scratch_f : (void *)&L->c->filters[L->idx];
  default:
    return NULL;
  }
}

/* "[listener:a]" for messages about the current section. */
static const char *cur_label(struct loader *L, char *buf, size_t n)
{
  const char *name = NULL;

  if (L->kind == SEC_LISTENER)
    name = L->scratch ? L->scratch_l.name : L->c->listeners[L->idx].name;
  else if (L->kind == SEC_UPSTREAM)
    name = L->scratch ? L->scratch_u.name : L->c->upstreams[L->idx].name;
  else if (L->kind == SEC_FILTER)
    name = L->scratch ? L->scratch_f.name : L->c->filters[L->idx].name;
  if (name != NULL)
    snprintf(buf, n, "[%s:%s]", conf_sec_names[L->kind], name);
  else
    snprintf(buf, n, "[%s]", conf_sec_names[L->kind]);
  return buf;
}

/* Drops what a duplicate section collected. */
static void end_section(struct loader *L)
{
  if (L->scratch) {
    conf_main_free(&L->scratch_main);
    conf_listener_free(&L->scratch_l);
    conf_upstream_free(&L->scratch_u);
    conf_filter_free(&L->scratch_f);
    L->scratch = 0;
  }
  L->kind = SEC_SKIP;
  L->info = NULL;
}

static void begin_scratch(struct loader *L, enum sec_kind kind,
                          const char *name)
{
  L->scratch = 1;
  L->kind = kind;
  memset(&L->scratch_info, 0, sizeof L->scratch_info);
  L->scratch_info.line = L->lineno;
  L->info = &L->scratch_info;
  memset(&L->scratch_main, 0, sizeof L->scratch_main);
  conf_main_defaults(&L->scratch_main);
  conf_listener_defaults(&L->scratch_l);
  conf_upstream_defaults(&L->scratch_u);
  conf_filter_defaults(&L->scratch_f);
  if (kind == SEC_LISTENER)
    L->scratch_l.name = conf_xstrdup(L, name);
  else if (kind == SEC_UPSTREAM)
    L->scratch_u.name = conf_xstrdup(L, name);
  else if (kind == SEC_FILTER)
    L->scratch_f.name = conf_xstrdup(L, name);
}

/* The sections of a named kind so far: their count, and where their
 * sec_info array and its capacity live. */
static size_t *named_count(struct loader *L, enum sec_kind kind,
                           struct sec_info ***info, size_t **cap)
{
  switch (kind) {
  case SEC_LISTENER:
    *info = &L->linfo;
    *cap = &L->lcap;
    return &L->c->nlisteners;
  case SEC_UPSTREAM:
    *info = &L->uinfo;
    *cap = &L->ucap;
    return &L->c->nupstreams;
  default:
    *info = &L->finfo;
    *cap = &L->fcap;
    return &L->c->nfilters;
  }
}

/* The name of the i-th section of a named kind. */
static const char *named_name(struct loader *L, enum sec_kind kind, size_t i)
{
  return kind == SEC_LISTENER   ? L->c->listeners[i].name
         : kind == SEC_UPSTREAM ? L->c->upstreams[i].name
                                : L->c->filters[i].name;
}

/* Appends a listener, upstream or filter named name; 0 or -ENOMEM. */
static int add_named(struct loader *L, enum sec_kind kind, const char *name)
{
  struct px_conf *c = L->c;
  struct sec_info **info;
  size_t *cap, *n = named_count(L, kind, &info, &cap);
  char *s = conf_xstrdup(L, name);

  if (s == NULL)
    return -ENOMEM;
  if (*n == *cap) {
    size_t ncap = *cap ? *cap * 2 : 4;
    struct sec_info *ni = realloc(*info, ncap * sizeof **info);
    void *na = NULL;

    if (ni != NULL) {
      *info = ni;
      if (kind == SEC_LISTENER &&
          (na = realloc(c->listeners, ncap * sizeof *c->listeners)))
        c->listeners = na;
      else if (kind == SEC_UPSTREAM &&
               (na = realloc(c->upstreams, ncap * sizeof *c->upstreams)))
        c->upstreams = na;
      else if (kind == SEC_FILTER &&
               (na = realloc(c->filters, ncap * sizeof *c->filters)))
        c->filters = na;
    }
    if (na == NULL) {
      free(s);
      conf_oom(L);
      return -ENOMEM;
    }
    *cap = ncap;
  }
  if (kind == SEC_LISTENER) {
    conf_listener_defaults(&c->listeners[*n]);
    c->listeners[*n].name = s;
    c->listeners[*n].line = L->lineno;
  } else if (kind == SEC_UPSTREAM) {
    conf_upstream_defaults(&c->upstreams[*n]);
    c->upstreams[*n].name = s;
    c->upstreams[*n].line = L->lineno;
  } else {
    conf_filter_defaults(&c->filters[*n]);
    c->filters[*n].name = s;
    c->filters[*n].line = L->lineno;
  }
  memset(&(*info)[*n], 0, sizeof **info);
  (*info)[*n].line = L->lineno;
  L->kind = kind;
  L->idx = (*n)++;
  L->info = &(*info)[L->idx];
  return 0;
}

/* Handles a "[...]" line: inner is the text between the brackets (ours to
 * modify), after the rest of the line past "]". */
static void begin_section(struct loader *L, char *inner, const char *after)
{
  char q[PX_CONF_SHOW + 4];
  char *name, *colon;
  enum sec_kind kind = SEC_NONE;
  size_t i, n;
  int line = L->lineno;

  end_section(L);
  while (isspace((unsigned char)*inner))
    inner++;
  n = strlen(inner);
  while (n > 0 && isspace((unsigned char)inner[n - 1]))
    inner[--n] = '\0';
  while (isspace((unsigned char)*after))
    after++;
  if (*after != '\0' && *after != ';' && *after != '#') {
    conf_errorf(L, line, "unexpected text \"%s\" after the section header",
                px_conf_show(q, after));
    return;
  }

  colon = strchr(inner, ':');
  name = colon != NULL ? colon + 1 : NULL;
  if (colon != NULL)
    *colon = '\0';
  for (i = SEC_MAIN; i < SEC_SKIP; i++)
    if (strcmp(inner, conf_sec_names[i]) == 0)
      kind = (enum sec_kind)i;

  if (kind == SEC_NONE) {
    if (colon != NULL)
      *colon = ':';
    conf_errorf(L, line,
                "unknown section [%s] (use [popgate], [listener:NAME], "
                "[upstream:NAME] or [filter:NAME])",
                px_conf_show(q, inner));
    return;
  }
  if (kind == SEC_MAIN) {
    if (name != NULL) {
      conf_errorf(L, line, "section [popgate] takes no name");
      return;
    }
    if (L->main_info.line != 0) {
      conf_errorf(L, line, "duplicate section [popgate] (first at line %d)",
                  L->main_info.line);
      begin_scratch(L, SEC_MAIN, NULL);
      return;
    }
    L->main_info.line = line;
    L->kind = SEC_MAIN;
    L->info = &L->main_info;
    return;
  }

  if (name == NULL || *name == '\0') {
    conf_errorf(L, line, "section [%s] needs a name: [%s:NAME]",
                conf_sec_names[kind], conf_sec_names[kind]);
    return;
  }
  if (!conf_is_name(name)) {
    conf_errorf(L, line,
                "bad section name \"%s\" in [%s:...] (use up to %d "
                "letters, digits, \"_\", \".\" and \"-\")",
                px_conf_show(q, name), conf_sec_names[kind], PX_CONF_MAX_NAME);
    return;
  }
  {
    struct sec_info **info;
    size_t *cap;

    n = *named_count(L, kind, &info, &cap);
    for (i = 0; i < n; i++) {
      if (strcmp(named_name(L, kind, i), name) == 0) {
        conf_errorf(L, line, "duplicate section [%s:%s] (first at line %d)",
                    conf_sec_names[kind], name, (*info)[i].line);
        begin_scratch(L, kind, name);
        return;
      }
    }
  }
  add_named(L, kind, name);
}

/* ---- values ---- */

/* Our bug, not the file's; the fuzzer looks for these. */
static void internal_error(struct loader *L)
{
  conf_errorf(L, L->lineno,
              "internal error: inih read this line differently "
              "(please report this)");
}

/* Parses the collected value, if any, into the current section. */
static void flush_pending(struct loader *L)
{
  struct pending *p = &L->pend;
  const struct key_def *k = p->k;

  if (!p->active)
    return;
  if (k != NULL) {
    if (p->len == 0 && !(k->flags & KEY_EMPTY_OK))
      conf_bad(L, "empty value for %s", k->name);
    else
      k->parse(L, k, p->val, cur_base(L));
  }
  p->active = 0;
  p->k = NULL;
  p->len = 0;
  if (p->val != NULL)
    p->val[0] = '\0';
}

/* Appends n bytes of s to the pending value, with a space before them
 * unless the value is empty. Returns 0, or -1 when the value would grow too
 * long (reported; the value is then discarded). */
static int pend_append(struct loader *L, const char *s, size_t n)
{
  struct pending *p = &L->pend;
  size_t need = p->len + (p->len > 0) + n + 1;

  if (need > PX_CONF_MAX_VALUE + 1) {
    conf_errorf(L, p->line, "value of %s is longer than %d characters",
                p->k->name, PX_CONF_MAX_VALUE);
    p->k = NULL;
    return -1;
  }
  if (need > p->cap) {
    size_t ncap = p->cap ? p->cap : 256;
    char *nv;
    while (ncap < need)
      ncap *= 2;
    if ((nv = realloc(p->val, ncap)) == NULL) {
      conf_oom(L);
      p->k = NULL;
      return -1;
    }
    p->val = nv;
    p->cap = ncap;
  }
  if (p->len > 0)
    p->val[p->len++] = ' ';
  memcpy(p->val + p->len, s, n);
  p->len += n;
  p->val[p->len] = '\0';
  return 0;
}

/* A "key = value" line; value is inih's (trimmed, inline comment gone). */
static void begin_key(struct loader *L, const char *name, const char *value)
{
  char q[PX_CONF_SHOW + 4], sec[PX_CONF_MAX_NAME + 16];
  struct pending *p = &L->pend;
  const struct key_def *k;
  int *seen;
  size_t i;

  p->active = 1;
  p->k = NULL;
  p->line = p->last = L->lineno;
  p->len = 0;

  if (L->kind == SEC_NONE) {
    conf_errorf(L, L->lineno,
                "key \"%s\" outside of any section (put it under "
                "[popgate], [listener:NAME], [upstream:NAME] or [filter:NAME])",
                px_conf_show(q, name));
    return;
  }
  if (L->kind == SEC_SKIP)
    return;
  if (*name == '\0') {
    conf_errorf(L, L->lineno, "missing key name before \"=\"");
    return;
  }
  k = conf_find_key(L->kind, name);
  if (k == NULL && L->kind == SEC_FILTER && conf_type_key(name, &p->type_key))
    k = &p->type_key;
  if (k == NULL) {
    const char *elsewhere = NULL;
    for (i = 0; i < conf_nkeys && elsewhere == NULL; i++)
      if (strcmp(conf_keys[i].name, name) == 0)
        elsewhere = conf_sec_names[conf_keys[i].sec];
    if (elsewhere == NULL && conf_type_key(name, &p->type_key))
      elsewhere = conf_sec_names[SEC_FILTER];
    if (elsewhere != NULL)
      conf_errorf(L, L->lineno,
                  "unknown key \"%s\" in %s (%s belongs in [%s%s])", name,
                  cur_label(L, sec, sizeof sec), name, elsewhere,
                  strcmp(elsewhere, "popgate") == 0 ? "" : ":NAME");
    else
      conf_errorf(L, L->lineno, "unknown key \"%s\" in %s",
                  px_conf_show(q, name), cur_label(L, sec, sizeof sec));
    return;
  }
  if (k->parse == NULL) {
    conf_errorf(L, L->lineno,
                "key \"%s\" in %s is not supported yet by this "
                "build",
                name, cur_label(L, sec, sizeof sec));
    return;
  }
  if ((seen = conf_seen(L->info, k)) == NULL) {
    internal_error(L);
    return;
  }
  if (*seen != 0 && !(k->flags & KEY_REPEATABLE)) {
    conf_errorf(L, L->lineno, "duplicate key \"%s\" in %s (first at line %d)",
                name, cur_label(L, sec, sizeof sec), *seen);
    return;
  }
  if (*seen == 0)
    *seen = L->lineno;
  p->k = k;
  pend_append(L, value, strlen(value));
}

/* An indented line after a key: more of its value. inih r55 does not strip
 * inline comments from these lines; do it here, by inih's rule (";" after
 * whitespace), so that both kinds of line read alike. */
static void continue_value(struct loader *L, const char *value)
{
  struct pending *p = &L->pend;
  size_t n;
  int was_space = 0;

  if (!p->active || p->k == NULL)
    return;
  for (n = 0; value[n] != '\0'; n++) {
    if (was_space && value[n] == ';')
      break;
    was_space = isspace((unsigned char)value[n]);
  }
  while (n > 0 && isspace((unsigned char)value[n - 1]))
    n--;
  if (n == 0)
    return;
  p->last = L->lineno;
  pend_append(L, value, n);
}

/* ---- reading lines: reader_cb() and handler_cb() for inih ---- */

static int next_byte(struct loader *L)
{
  int ch;

  if (L->npush > 0)
    return L->push[--L->npush];
  if (L->nread++ == PX_CONF_MAX_FILE) {
    L->read_errno = EFBIG;
    return EOF;
  }
  if (L->fp != NULL) {
    ch = getc(L->fp);
    if (ch == EOF && ferror(L->fp) && L->read_errno == 0)
      L->read_errno = errno != 0 ? errno : EIO;
    return ch;
  }
  if (L->pos < L->textlen)
    return (unsigned char)L->text[L->pos++];
  return EOF;
}

/* Drops a UTF-8 byte order mark at the start of the input. */
static void skip_bom(struct loader *L)
{
  static const unsigned char bom[3] = { 0xEF, 0xBB, 0xBF };
  int got[3];
  int i, n;

  for (n = 0; n < 3; n++) {
    got[n] = next_byte(L);
    if (got[n] != bom[n])
      break;
  }
  if (n == 3)
    return;
  /* Not a BOM: give back what was read, last byte first. */
  for (i = n; i >= 0; i--)
    if (got[i] != EOF)
      L->push[L->npush++] = (unsigned char)got[i];
}

/* Reads one physical line without its "\n" or "\r\n". Stores up to cap
 * bytes in out (NUL-terminated); *len is the line's full length, which may
 * exceed cap. Returns 0 at end of input, else 1. */
static int read_line(struct loader *L, char *out, size_t cap, size_t *len,
                     int *nul)
{
  size_t n = 0;
  int ch, last = 0, any = 0;

  *nul = 0;
  while ((ch = next_byte(L)) != EOF) {
    any = 1;
    if (ch == '\n')
      break;
    if (ch == '\0')
      *nul = 1;
    if (n < cap)
      out[n] = (char)ch;
    n++;
    last = ch;
  }
  if (!any)
    return 0;
  if (n > 0 && last == '\r')
    n--;
  out[n < cap ? n : cap] = '\0';
  *len = n;
  return 1;
}

/* inih's find_chars_or_comment() (INI_ALLOW_INLINE_COMMENTS, prefix ";"):
 * the first of chars, or the start of an inline comment, or the end. */
static const char *find_chars_or_comment(const char *s, const char *chars)
{
  int was_space = 0;

  while (*s != '\0' && (chars == NULL || strchr(chars, *s) == NULL) &&
         !(was_space && *s == ';')) {
    was_space = isspace((unsigned char)*s);
    s++;
  }
  return s;
}

/* A key or continuation line that inih did not pass to handler_cb() means
 * that reader_cb() and inih disagree about the file. */
static void check_sync(struct loader *L)
{
  if (L->cls == CLS_KEY || L->cls == CLS_CONT)
    internal_error(L);
  L->cls = CLS_NONE;
}

/* Handed to inih in place of a line that must not reach it. An empty line
 * changes nothing in inih's state. */
static char *blank_line(char *str)
{
  str[0] = '\0';
  return str;
}

static char *reader_cb(char *str, int num, void *stream)
{
  struct loader *L = stream;
  size_t cap = num > 1 ? (size_t)num - 1 : 0;
  size_t len;
  const char *p, *end;
  int nul, comment;

  check_sync(L);
  L->buf = str;
  L->bufsize = (size_t)(num > 0 ? num : 0);
  if (L->read_errno != 0 || !read_line(L, str, cap, &len, &nul))
    return NULL;
  L->lineno++;

  for (p = str; isspace((unsigned char)*p); p++)
    ;
  comment = *p == '\0' || *p == ';' || *p == '#';

  if (len > cap || nul) {
    if (len > cap)
      conf_errorf(L, L->lineno, "line longer than %zu characters", cap);
    else
      conf_errorf(L, L->lineno, "line contains a NUL byte");
    /* inih gets a blank line instead. A comment changes nothing. A cut
     * continuation would leave a value that looks whole: drop the value.
     * A key line ends the value before it; a section header also ends the
     * section, so that its keys do not land in the previous one. */
    if (comment)
      ;
    else if (L->have_prev && p > str)
      L->pend.k = NULL;
    else {
      flush_pending(L);
      if (*p == '[')
        end_section(L);
    }
    return blank_line(str);
  }
  if (L->lineno == 1 && (unsigned char)str[0] == 0xEF &&
      (unsigned char)str[1] == 0xBB && (unsigned char)str[2] == 0xBF) {
    conf_errorf(L, L->lineno, "more than one byte order mark");
    return blank_line(str);
  }

  /* The same decisions, in the same order, as ini_parse_stream(). */
  if (comment)
    return str;
  if (L->have_prev && p > str) {
    L->cls = CLS_CONT;
    return str;
  }
  flush_pending(L);
  if (*p == '[') {
    end = find_chars_or_comment(p + 1, "]");
    if (*end == ']') {
      char inner[512];
      size_t n = (size_t)(end - (p + 1));
      memcpy(inner, p + 1, n < sizeof inner ? n : sizeof inner - 1);
      inner[n < sizeof inner ? n : sizeof inner - 1] = '\0';
      L->have_prev = 0;
      begin_section(L, inner, end + 1);
    } else {
      conf_errorf(L, L->lineno, "missing \"]\" in section header");
      end_section(L);
    }
    return str;
  }
  end = find_chars_or_comment(p, "=:");
  if (*end == '=' || *end == ':') {
    L->have_prev = end > p;
    L->cls = CLS_KEY;
  } else {
    conf_errorf(L, L->lineno,
                "expected \"key = value\", \"[section]\" or a "
                "comment");
  }
  return str;
}

static int handler_cb(void *user, const char *section, const char *name,
                      const char *value)
{
  struct loader *L = user;
  enum line_class cls = L->cls;
  uintptr_t p = (uintptr_t)name, b = (uintptr_t)L->buf;
  /* inih passes a key's name inside the line buffer, and the saved
   * prev_name for a continuation: a cheap check that both agree. */
  int in_line = p >= b && p < b + L->bufsize;

  (void)section; /* cut at 49 bytes by inih; begin_section() saw it whole */
  L->cls = CLS_DONE;
  if (cls == CLS_KEY && in_line) {
    begin_key(L, name, value);
    return 1;
  }
  if (cls == CLS_CONT && !in_line) {
    continue_value(L, value);
    return 1;
  }
  internal_error(L);
  return 0;
}

/* Writes the collected errors, sorted by line (whole-file ones last). */
static void write_errors(struct loader *L, char *err, size_t errlen)
{
  size_t used = 0;
  int i, j;

  for (i = 1; i < L->nerrs; i++) {
    struct err_rec e = L->errs[i];
    long ke = e.line > 0 ? e.line : INT_MAX;
    for (j = i; j > 0; j--) {
      const struct err_rec *o = &L->errs[j - 1];
      long ko = o->line > 0 ? o->line : INT_MAX;
      if (ko < ke || (ko == ke && o->seq < e.seq))
        break;
      L->errs[j] = *o;
    }
    L->errs[j] = e;
  }
  if (err == NULL || errlen == 0)
    return;
  err[0] = '\0';
  for (i = 0; i <= L->nerrs && used + 1 < errlen; i++) {
    int w;
    if (i == L->nerrs) {
      if (L->nmore == 0)
        break;
      w = snprintf(err + used, errlen - used, "%s: %d more errors not shown\n",
                   L->name, L->nmore);
    } else if (L->errs[i].line > 0) {
      w = snprintf(err + used, errlen - used, "%s:%d: %s\n", L->name,
                   L->errs[i].line, L->errs[i].msg);
    } else {
      w = snprintf(err + used, errlen - used, "%s: %s\n", L->name,
                   L->errs[i].msg);
    }
    if (w < 0)
      break;
    used += (size_t)w;
  }
}

static void put_err(char *err, size_t errlen, const char *name, const char *msg)
{
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "%s: %s\n", name, msg);
}

/* Runs a loader whose input is set up; frees everything it owns. */
static int load(struct loader *L, struct px_conf **out, char *err,
                size_t errlen)
{
  char ebuf[128];
  int rc;

  L->c = calloc(1, sizeof *L->c);
  if (L->c == NULL) {
    put_err(err, errlen, L->name, "out of memory");
    return -ENOMEM;
  }
  conf_main_defaults(L->c);
  L->c->refs = 1;
  L->c->path = conf_xstrdup(L, L->name);

  skip_bom(L);
  rc = ini_parse_stream(reader_cb, L, handler_cb, L);
  check_sync(L);
  if (rc != 0 && L->nerrs == 0 && !L->oom && L->read_errno == 0)
    conf_errorf(L, rc > 0 ? rc : 0, "syntax error");
  flush_pending(L);
  end_section(L);
  conf_finish(L);

  free(L->pend.val);
  free(L->linfo);
  free(L->uinfo);
  free(L->finfo);
  if (L->read_errno == EFBIG) {
    rc = -EFBIG;
    put_err(err, errlen, L->name, "larger than 1M: not a configuration file");
  } else if (L->read_errno != 0) {
    char msg[200];
    rc = -L->read_errno;
    snprintf(msg, sizeof msg, "cannot read: %s", ERRSTR(L->read_errno, ebuf));
    put_err(err, errlen, L->name, msg);
  } else if (L->oom) {
    rc = -ENOMEM;
    put_err(err, errlen, L->name, "out of memory");
  } else if (L->nerrs > 0) {
    rc = -EINVAL;
    write_errors(L, err, errlen);
  } else {
    if (err != NULL && errlen > 0)
      err[0] = '\0';
    *out = L->c;
    return 0;
  }
  conf_free(L->c);
  return rc;
}

int px_conf_load(const char *path, struct px_conf **out, char *err,
                 size_t errlen)
{
  struct loader L;
  char ebuf[128], msg[200];
  int rc;

  if (out != NULL)
    *out = NULL;
  if (path == NULL || out == NULL) {
    put_err(err, errlen, path != NULL ? path : "(null)", "invalid argument");
    return -EINVAL;
  }
  memset(&L, 0, sizeof L);
  L.name = path;
  L.fp = fopen(path, "re"); /* "e": O_CLOEXEC, glibc */
  if (L.fp == NULL) {
    rc = errno;
    snprintf(msg, sizeof msg, "cannot open: %s", ERRSTR(rc, ebuf));
    put_err(err, errlen, path, msg);
    return -rc;
  }
  rc = load(&L, out, err, errlen);
  fclose(L.fp);
  return rc;
}

int px_conf_load_string(const char *name, const char *text,
                        struct px_conf **out, char *err, size_t errlen)
{
  struct loader L;

  if (out != NULL)
    *out = NULL;
  if (name == NULL)
    name = "(string)";
  if (text == NULL || out == NULL) {
    put_err(err, errlen, name, "invalid argument");
    return -EINVAL;
  }
  memset(&L, 0, sizeof L);
  L.name = name;
  L.text = text;
  L.textlen = strlen(text);
  return load(&L, out, err, errlen);
}

void px_conf_ref(struct px_conf *c)
{
  __atomic_fetch_add(&c->refs, 1, __ATOMIC_RELAXED);
}

void px_conf_unref(struct px_conf **cp)
{
  struct px_conf *c;

  if (cp == NULL || *cp == NULL)
    return;
  c = *cp;
  *cp = NULL;
  if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0)
    conf_free(c);
}
