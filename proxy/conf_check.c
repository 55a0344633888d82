/* conf_check.c - what only the whole file tells, after its last line.
 *
 * Required keys; each [filter:NAME] against its type (keys of other types,
 * the type's required keys, its flt_ops.check); references between
 * sections (a listener's upstream and filters, resolved into pointers now
 * that the arrays have stopped moving); two listeners on one address;
 * [popgate]'s sizes against each other; defaults that depend on other keys
 * ("auto" threads, spool_dir, which is checked only when some listener
 * filters: a file without filters must not depend on a spool directory).
 * TLS is conf_tls.c's. Every problem is one FILE:LINE error; the reader
 * sorts them.
 *
 * Also px_conf_warnings(): what a valid file may still earn.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "filter.h"

/* The required rows of conf_keys[] that a section lacks. */
static void check_required(struct loader *L, enum sec_kind kind,
                           const char *name, const struct sec_info *info)
{
  size_t i;

  for (i = 0; i < conf_nkeys; i++) {
    if (conf_keys[i].sec != kind || !(conf_keys[i].flags & KEY_REQUIRED) ||
        info->seen[i] != 0)
      continue;
    conf_errorf(L, info->line, "missing required key \"%s\" in [%s:%s]",
                conf_keys[i].name, conf_sec_names[kind], name);
  }
}

/* The types that take key, or with key NULL the FLT_FINDS_VIRUSES types,
 * as "clamav, clamd or command". */
static const char *types_str(char *buf, size_t size, const char *key)
{
  const char *names[PX_FLT_COUNT];
  const struct flt_ops *ops;
  int t, n = 0;

  for (t = 0; t < PX_FLT_COUNT; t++) {
    ops = flt_ops_of((enum px_filter_type)t);
    if (key != NULL ? flt_key_of(ops, key) != NULL
                    : (ops->flags & FLT_FINDS_VIRUSES) != 0)
      names[n++] = px_filter_type_names[t];
  }
  return conf_names_str(buf, size, names, n);
}

/* What only a whole [filter:NAME] tells: the required keys, keys that
 * belong to other types (type may come after them), then the type's own
 * check, which also fills defaults that depend on the type. */
static void finish_filter(struct loader *L, struct px_conf_filter *f,
                          const struct sec_info *info)
{
  const struct flt_ops *ops = flt_ops_of(f->type), *o;
  const struct flt_key *k;
  char list[64], msg[PX_CONF_ERR_MSG];
  int t, line, rc;
  size_t i;

  f->quarantine_line = conf_seen_line(info, SEC_FILTER, "quarantine_dir");
  check_required(L, SEC_FILTER, f->name, info);
  /* No type, or a bad one (reported already): nothing to check against. */
  if (ops == NULL)
    return;
  for (k = ops->keys; k->name != NULL; k++)
    if ((k->flags & FLT_KEY_REQUIRED) &&
        conf_seen_line(info, SEC_FILTER, k->name) == 0)
      conf_errorf(L, info->line,
                  "missing required key \"%s\" in [filter:%s] (type = %s "
                  "needs %s)",
                  k->name, f->name, px_filter_type_names[f->type],
                  (k->flags & FLT_KEY_REPEATABLE) ? "at least one" : "it");
  /* Keys of other types, each once, in the order of the types' lists. */
  for (t = 0; t < PX_FLT_COUNT; t++) {
    o = flt_ops_of((enum px_filter_type)t);
    for (k = o->keys; k->name != NULL; k++) {
      line = conf_seen_line(info, SEC_FILTER, k->name);
      if (line == 0 || flt_key_of(ops, k->name) != NULL ||
          conf_type_owner(k->name) != o)
        continue;
      conf_errorf(L, line, "key %s is for type = %s, this is type = %s",
                  k->name, types_str(list, sizeof list, k->name),
                  px_filter_type_names[f->type]);
    }
  }
  for (i = 0; i < conf_nkeys && !(ops->flags & FLT_FINDS_VIRUSES); i++) {
    if (conf_keys[i].sec != SEC_FILTER || !(conf_keys[i].flags & KEY_VIRUS) ||
        info->seen[i] == 0)
      continue;
    conf_errorf(L, info->seen[i], "key %s is for type = %s, this is type = %s",
                conf_keys[i].name, types_str(list, sizeof list, NULL),
                px_filter_type_names[f->type]);
  }
  if (ops->check == NULL)
    return;
  msg[0] = '\0';
  rc = ops->check(f, msg, sizeof msg);
  if (rc == -ENOMEM)
    conf_oom(L);
  else if (rc < 0)
    conf_errorf(L, f->line, "%s", msg);
}

/* A listener's filters = names, as pointers into c->filters (complete
 * now: it may have moved while it grew). */
static void resolve_filters(struct loader *L, struct px_conf_listener *l,
                            const struct sec_info *info)
{
  struct px_conf *c = L->c;
  size_t i, j;

  l->filters_line = conf_seen_line(info, SEC_LISTENER, "filters");
  if (l->nfilters == 0)
    return;
  l->filters = calloc(l->nfilters, sizeof *l->filters);
  if (l->filters == NULL) {
    conf_oom(L);
    return;
  }
  for (i = 0; i < l->nfilters; i++) {
    for (j = 0; j < c->nfilters; j++)
      if (strcmp(c->filters[j].name, l->filter_names[i]) == 0)
        l->filters[i] = &c->filters[j];
    if (l->filters[i] == NULL)
      conf_errorf(L, l->filters_line,
                  "filter \"%s\" in [listener:%s] is not defined (no "
                  "[filter:%s] section)",
                  l->filter_names[i], l->name, l->filter_names[i]);
  }
}

/* A number of threads: "auto" (0) becomes the online CPUs, 1..256. */
static unsigned auto_threads(unsigned n)
{
  long cpus;

  if (n != 0)
    return n;
  cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return cpus < 1 ? 1 : cpus > 256 ? 256 : (unsigned)cpus;
}

/* [popgate]'s sizes against each other, and spool_dir, which only a
 * listener with filters needs. */
static void finish_spool(struct loader *L)
{
  struct px_conf *c = L->c;
  const struct sec_info *mi = &L->main_info;
  int mpm_line = conf_seen_line(mi, SEC_MAIN, "memory_per_message");
  char a[32], b[32], why[160];
  const struct px_conf_listener *user = NULL;
  size_t i;
  int line;

  static const struct {
    const char *key;
    size_t off;
  } above[] = {
    { "max_message_size", offsetof(struct px_conf, max_message_size) },
    { "memory_budget", offsetof(struct px_conf, memory_budget) },
  };
  for (i = 0; i < sizeof above / sizeof *above; i++) {
    uint64_t v = *FIELD(c, above[i].off, uint64_t);
    if (v >= c->memory_per_message)
      continue;
    line = conf_seen_line(mi, SEC_MAIN, above[i].key);
    if (line != 0)
      conf_errorf(L, line, "%s = %s is below memory_per_message = %s",
                  above[i].key, conf_size_str(a, sizeof a, v),
                  conf_size_str(b, sizeof b, c->memory_per_message));
    else
      conf_errorf(L, mpm_line,
                  "memory_per_message = %s is above %s (%s, the default)",
                  conf_size_str(b, sizeof b, c->memory_per_message),
                  above[i].key, conf_size_str(a, sizeof a, v));
  }

  c->spool_dir_line = conf_seen_line(mi, SEC_MAIN, "spool_dir");
  if (c->spool_dir == NULL &&
      (c->spool_dir = conf_xstrdup(L, "/var/spool/popgate")) == NULL)
    return;
  for (i = 0; i < c->nlisteners && user == NULL; i++)
    if (c->listeners[i].nfilters > 0)
      user = &c->listeners[i];
  if (user == NULL ||
      conf_dir_problem(c->spool_dir, why, sizeof why)[0] == '\0')
    return;
  if (c->spool_dir_line != 0)
    conf_errorf(L, c->spool_dir_line, "cannot use spool_dir \"%s\": %s",
                c->spool_dir, why);
  else
    conf_errorf(
        L, user->filters_line,
        "cannot use spool_dir \"%s\" (the default; filters need it: set "
        "spool_dir in [popgate]): %s",
        c->spool_dir, why);
}

void conf_finish(struct loader *L)
{
  struct px_conf *c = L->c;
  char a[300], b[300];
  size_t i, j;

  c->workers = auto_threads(c->workers);
  c->scan_threads = auto_threads(c->scan_threads);

  for (i = 0; i < c->nfilters; i++)
    finish_filter(L, &c->filters[i], &L->finfo[i]);
  for (i = 0; i < c->nupstreams; i++) {
    check_required(L, SEC_UPSTREAM, c->upstreams[i].name, &L->uinfo[i]);
    conf_check_upstream_tls(L, &c->upstreams[i], &L->uinfo[i]);
  }
  for (i = 0; i < c->nlisteners; i++) {
    struct px_conf_listener *l = &c->listeners[i];
    check_required(L, SEC_LISTENER, l->name, &L->linfo[i]);
    conf_check_listener_tls(L, l, &L->linfo[i]);
    resolve_filters(L, l, &L->linfo[i]);
    if (l->upstream_name == NULL)
      continue;
    for (j = 0; j < c->nupstreams; j++)
      if (strcmp(c->upstreams[j].name, l->upstream_name) == 0)
        l->upstream = &c->upstreams[j];
    if (l->upstream == NULL)
      conf_errorf(L, conf_seen_line(&L->linfo[i], SEC_LISTENER, "upstream"),
                  "upstream \"%s\" in [listener:%s] is "
                  "not defined (no [upstream:%s] section)",
                  l->upstream_name, l->name, l->upstream_name);
  }
  if (c->nlisteners == 0)
    conf_errorf(L, 0,
                "no [listener:NAME] section: at least one listener is "
                "required");

  /* With SO_REUSEPORT two listeners on one address would both bind and
   * share the connections silently. */
  for (i = 0; i < c->nlisteners; i++) {
    struct px_conf_listener *l = &c->listeners[i];
    if (l->bind.host == NULL)
      continue;
    for (j = 0; j < i; j++) {
      struct px_conf_listener *o = &c->listeners[j];
      if (o->bind.host != NULL && conf_same_hostport(&l->bind, &o->bind)) {
        conf_errorf(L, l->bind.line,
                    "bind = %s in [listener:%s] is already "
                    "used by [listener:%s] (line %d)",
                    conf_hostport_str(a, sizeof a, &l->bind), l->name, o->name,
                    o->bind.line);
        break;
      }
    }
    if (c->metrics.host != NULL && conf_same_hostport(&l->bind, &c->metrics))
      conf_errorf(L, c->metrics.line,
                  "metrics = %s is also the bind of "
                  "[listener:%s] (line %d)",
                  conf_hostport_str(b, sizeof b, &c->metrics), l->name,
                  l->bind.line);
  }
  finish_spool(L);
}

/* Appends a formatted line to out[0..outlen) at *used; a line that does
 * not fit is cut, and nothing more is written after it. */
static PX_PRINTF(4, 5) void appendf(char *out, size_t outlen, size_t *used,
                                    const char *fmt, ...)
{
  va_list ap;
  int w;

  if (out == NULL || *used + 1 >= outlen)
    return;
  va_start(ap, fmt);
  w = vsnprintf(out + *used, outlen - *used, fmt, ap);
  va_end(ap);
  if (w < 0)
    out[*used] = '\0';
  else if ((size_t)w >= outlen - *used)
    *used = outlen - 1;
  else
    *used += (size_t)w;
}

int px_conf_warnings(const struct px_conf *c, char *out, size_t outlen)
{
  size_t used = 0, i;
  int n = 0;

  if (out != NULL && outlen > 0)
    out[0] = '\0';
  if (c == NULL)
    return 0;
  for (i = 0; i < c->nlisteners; i++) {
    const struct px_conf_listener *l = &c->listeners[i];
    if (l->tls != PX_TLS_OFF)
      continue;
    appendf(out, outlen, &used,
            "%s:%d: warning: [listener:%s] tls = off: passwords cross the "
            "network in the clear\n",
            c->path, l->tls_line != 0 ? l->tls_line : l->line, l->name);
    n++;
  }
  for (i = 0; i < c->nupstreams; i++) {
    const struct px_conf_upstream *u = &c->upstreams[i];
    if (u->tls == PX_TLS_OFF || u->verify)
      continue;
    appendf(out, outlen, &used,
            "%s:%d: warning: [upstream:%s] verify = no: the upstream's "
            "certificate is not checked\n",
            c->path, u->verify_line != 0 ? u->verify_line : u->line, u->name);
    n++;
  }
  return n;
}
