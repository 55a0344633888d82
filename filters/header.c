/* header.c - the header filter: puts the configured lines on top.
 *
 * [filter:NAME] type = header, add = Name: value (repeatable). conf.c has
 * checked every line (an RFC 5322 field name, a printable ASCII value), so
 * run() only joins them, each ended by CRLF, into the result's hdrs. The
 * message itself is never read.
 */
#include <stdlib.h>
#include <string.h>

#include "filter.h"

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

const struct flt_ops flt_header_ops = {
  .type = PX_FLT_HEADER,
  .run = header_run,
};
