/* header.c - the header filter: puts the configured lines on top.
 *
 * [filter:NAME] type = header, add = Name: value (repeatable, at least
 * one). header_parse() checks every line when the configuration is loaded
 * (an RFC 5322 field name, a printable ASCII value), so run() only joins
 * them, each ended by CRLF, into the result's hdrs. The message itself is
 * never read.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"

/* RFC 5322: a field name is 1 or more printable ASCII characters other
 * than ":" and space; at most 76 keeps "Name: " within the 78 characters
 * section 2.1.1 recommends for a line. A line is at most 998 (MUST). */
#define HDR_NAME_MAX 76
#define HDR_LINE_MAX 998

/* Any thread. r->hdrs becomes a malloc'd "Name: value\r\n"... block (NUL-
 * terminated, the NUL not counted in hdrslen), or stays NULL when there is
 * nothing to add. Out of memory is an error, so that on_error decides. */
static void header_run(void *state, const struct px_conf_filter *cf,
                       const struct flt_msg *m, struct flt_result *r)
{
  size_t len = 0, off = 0;
  char *p;

  (void)state;
  (void)m;
  for (size_t i = 0; i < cf->nadd; i++)
    len += strlen(cf->add[i]) + 2;
  if (len == 0)
    return;
  p = malloc(len + 1);
  if (p == NULL) {
    strcpy(r->error, "out of memory");
    return;
  }
  for (size_t i = 0; i < cf->nadd; i++) {
    size_t n = strlen(cf->add[i]);

    memcpy(p + off, cf->add[i], n);
    memcpy(p + off + n, "\r\n", 2);
    off += n + 2;
  }
  p[off] = '\0';
  r->hdrs = p;
  r->hdrslen = off;
}

/* ---- configuration ---- */

/* add = Name: value: appended, as written, to cf->add. The value may be
 * empty. */
static int add_value(struct px_conf_filter *cf, const char *key, const char *v,
                     char *err, size_t errlen)
{
  char q[PX_CONF_SHOW + 4], nb[PX_CONF_SHOW + 2];
  const char *colon = strchr(v, ':'), *p;
  size_t nlen, i;
  char **grown, *s;

  if (colon == NULL) {
    snprintf(err, errlen,
             "bad value \"%s\" for %s (use \"Name: value\", as in "
             "X-Scanned-By: popgate)",
             px_conf_show(q, v), key);
    return -EINVAL;
  }
  nlen = (size_t)(colon - v);
  for (i = 0; i < nlen; i++)
    if ((unsigned char)v[i] < 33 || (unsigned char)v[i] > 126)
      break;
  if (nlen == 0 || nlen > HDR_NAME_MAX || i < nlen) {
    i = nlen < sizeof nb - 1 ? nlen : sizeof nb - 1;
    memcpy(nb, v, i);
    nb[i] = '\0';
    snprintf(err, errlen,
             "bad header name \"%s\" in %s (1 to %d printable ASCII "
             "characters, no space or \":\", as in X-Scanned-By)",
             px_conf_show(q, nb), key, HDR_NAME_MAX);
    return -EINVAL;
  }
  for (p = colon + 1; *p != '\0'; p++)
    if (((unsigned char)*p < 0x20 && *p != '\t') || (unsigned char)*p > 0x7e)
      break;
  if (*p != '\0') {
    snprintf(err, errlen,
             "bad header value in %s = %s (printable ASCII characters and "
             "tabs only)",
             key, px_conf_show(q, v));
    return -EINVAL;
  }
  if (strlen(v) > HDR_LINE_MAX) {
    snprintf(err, errlen,
             "%s = %s is longer than %d characters (the line limit of RFC "
             "5322)",
             key, px_conf_show(q, v), HDR_LINE_MAX);
    return -EINVAL;
  }
  grown = realloc(cf->add, (cf->nadd + 1) * sizeof *cf->add);
  if (grown == NULL)
    return -ENOMEM;
  cf->add = grown;
  if ((s = strdup(v)) == NULL)
    return -ENOMEM;
  cf->add[cf->nadd++] = s;
  return 1;
}

static int header_parse(struct px_conf_filter *cf, const char *key,
                        const char *v, int line, char *err, size_t errlen)
{
  (void)line;
  if (strcmp(key, "add") == 0)
    return add_value(cf, key, v, err, errlen);
  return 0;
}

static const struct flt_key header_keys[] = {
  { "add", FLT_KEY_REQUIRED | FLT_KEY_REPEATABLE },
  { NULL, 0 },
};

const struct flt_ops flt_header_ops = {
  .type = PX_FLT_HEADER,
  .run = header_run,
  .keys = header_keys,
  .parse = header_parse,
};
