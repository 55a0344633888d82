/* conf_keys.c - the key table and the value parsers behind it.
 *
 * One row of conf_keys[] per key gives its section kind, its parser, the
 * offset of the field it fills and its limits; one parser per kind of field
 * (numbers, sizes, durations, enums, names, lists, host:port, paths; TLS
 * files and strings in conf_tls.c) copies a complete value out of the
 * reader's buffer, or reports it with conf_bad() at the key's line.
 *
 * Filter types' keys. A [filter:NAME] section also takes the keys its type's
 * flt_ops lists (database, socket, command, add, ...): they have no row
 * here; conf_type_key() makes one whose parser, p_filter_key(), hands the
 * value to the type's parse hook. type, on_virus, on_error and
 * quarantine_dir are every type's and have rows.
 *
 * Also here: each section's defaults, and what frees its values.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_int.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/ssl.h> /* TLS1_2_VERSION */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "filter.h"

const char *const px_tls_mode_names[] = { "off", "starttls", "implicit" };
_Static_assert(sizeof px_tls_mode_names / sizeof *px_tls_mode_names ==
                   PX_TLS_COUNT,
               "px_tls_mode_names out of sync");

const char *const px_log_level_names[] = { "error", "warn", "info", "debug" };
_Static_assert(sizeof px_log_level_names / sizeof *px_log_level_names ==
                   PX_LOG_COUNT,
               "px_log_level_names out of sync");

const char *const px_filter_type_names[] = { "clamav", "clamd", "command",
                                             "header" };
_Static_assert(sizeof px_filter_type_names / sizeof *px_filter_type_names ==
                   PX_FLT_COUNT,
               "px_filter_type_names out of sync");

const char *const px_on_virus_names[] = { "replace", "tag", "reject" };
_Static_assert(sizeof px_on_virus_names / sizeof *px_on_virus_names ==
                   PX_ONV_COUNT,
               "px_on_virus_names out of sync");

const char *const px_on_error_names[] = { "tempfail", "pass" };
_Static_assert(sizeof px_on_error_names / sizeof *px_on_error_names ==
                   PX_ONE_COUNT,
               "px_on_error_names out of sync");

const char *const conf_sec_names[] = { "",         "popgate", "listener",
                                       "upstream", "filter",  "" };
_Static_assert(sizeof conf_sec_names / sizeof *conf_sec_names == SEC_COUNT,
               "sec_kind_names out of sync");

/* "auto" (stored as 0, resolved in conf_finish()) or a number in range. */
static int p_auto_uint(struct loader *L, const struct key_def *k, const char *v,
                       void *base)
{
  char q[PX_CONF_SHOW + 4];
  uint64_t n;

  if (strcasecmp(v, "auto") == 0) {
    *FIELD(base, k->off, unsigned) = 0; /* resolved in conf_finish() */
    return 0;
  }
  if (conf_parse_u64(v, &n, NULL) != 0) {
    conf_bad(L,
             "bad value \"%s\" for %s (use auto or a number from %" PRIu64
             " to %" PRIu64 ")",
             px_conf_show(q, v), k->name, k->min, k->max);
    return -EINVAL;
  }
  if (n < k->min || n > k->max) {
    conf_bad(L,
             "%s = %s is out of range (use auto or %" PRIu64 "..%" PRIu64 ")",
             k->name, px_conf_show(q, v), k->min, k->max);
    return -EINVAL;
  }
  *FIELD(base, k->off, unsigned) = (unsigned)n;
  return 0;
}

/* Reports what a px_conf_value_*() call found wrong; returns rc. */
static int value_rc(struct loader *L, int rc, const char *msg)
{
  if (rc != 0)
    conf_bad(L, "%s", msg);
  return rc;
}

static int p_uint(struct loader *L, const struct key_def *k, const char *v,
                  void *base)
{
  char msg[PX_CONF_ERR_MSG];

  return value_rc(L,
                  px_conf_value_uint(k->name, v, k->min, k->max,
                                     FIELD(base, k->off, unsigned), msg,
                                     sizeof msg),
                  msg);
}

static int p_duration(struct loader *L, const struct key_def *k, const char *v,
                      void *base)
{
  char msg[PX_CONF_ERR_MSG];

  return value_rc(L,
                  conf_duration_value(k->name, v, k->min, k->max, k->min_why,
                                      FIELD(base, k->off, uint64_t), msg,
                                      sizeof msg),
                  msg);
}

/* A size in k's range into *n; 0 or -EINVAL (reported). */
static int size_value(struct loader *L, const struct key_def *k, const char *v,
                      uint64_t *n)
{
  char msg[PX_CONF_ERR_MSG];

  return value_rc(
      L, px_conf_value_size(k->name, v, k->min, k->max, n, msg, sizeof msg),
      msg);
}

/* A size_t field. */
static int p_size(struct loader *L, const struct key_def *k, const char *v,
                  void *base)
{
  uint64_t n;

  if (size_value(L, k, v, &n) != 0)
    return -EINVAL;
  *FIELD(base, k->off, size_t) = (size_t)n;
  return 0;
}

/* A uint64_t field. */
static int p_size64(struct loader *L, const struct key_def *k, const char *v,
                    void *base)
{
  uint64_t n;

  if (size_value(L, k, v, &n) != 0)
    return -EINVAL;
  *FIELD(base, k->off, uint64_t) = n;
  return 0;
}

static int p_bool(struct loader *L, const struct key_def *k, const char *v,
                  void *base)
{
  char q[PX_CONF_SHOW + 4];
  int b;

  if (px_conf_parse_bool(v, &b) != 0) {
    conf_bad(L, "bad value \"%s\" for %s (use yes or no)", px_conf_show(q, v),
             k->name);
    return -EINVAL;
  }
  *FIELD(base, k->off, int) = b;
  return 0;
}

static int p_tls(struct loader *L, const struct key_def *k, const char *v,
                 void *base)
{
  char q[PX_CONF_SHOW + 4];
  int i;

  for (i = 0; i < PX_TLS_COUNT; i++)
    if (strcasecmp(v, px_tls_mode_names[i]) == 0)
      break;
  if (i == PX_TLS_COUNT) {
    conf_bad(L, "bad value \"%s\" for %s (use off, starttls or implicit)",
             px_conf_show(q, v), k->name);
    return -EINVAL;
  }
  *FIELD(base, k->off, enum px_tls_mode) = (enum px_tls_mode)i;
  return 0;
}

static int p_log_level(struct loader *L, const struct key_def *k, const char *v,
                       void *base)
{
  char q[PX_CONF_SHOW + 4];
  int i;

  for (i = 0; i < PX_LOG_COUNT; i++) {
    if (strcasecmp(v, px_log_level_names[i]) == 0) {
      *FIELD(base, k->off, enum px_log_level) = (enum px_log_level)i;
      return 0;
    }
  }
  conf_bad(L, "bad value \"%s\" for %s (use error, warn, info or debug)",
           px_conf_show(q, v), k->name);
  return -EINVAL;
}

/* log = stderr | syslog | /absolute/path. Fills two fields, so it works on
 * struct px_conf itself rather than on one offset. */
static int p_log(struct loader *L, const struct key_def *k, const char *v,
                 void *base)
{
  struct px_conf *c = base;
  char q[PX_CONF_SHOW + 4];
  char *path = NULL;
  enum px_log_target t;

  if (strcasecmp(v, "stderr") == 0) {
    t = PX_LOGT_STDERR;
  } else if (strcasecmp(v, "syslog") == 0) {
    t = PX_LOGT_SYSLOG;
  } else if (v[0] == '/' && v[strlen(v) - 1] != '/' && !conf_has_ctl(v)) {
    t = PX_LOGT_FILE;
    if ((path = conf_xstrdup(L, v)) == NULL)
      return -ENOMEM;
  } else {
    conf_bad(L,
             "bad value \"%s\" for %s (use stderr, syslog or an absolute file "
             "path)",
             px_conf_show(q, v), k->name);
    return -EINVAL;
  }
  free(c->log_path);
  c->log_path = path;
  c->log_target = t;
  return 0;
}

/* The form of a user name only (up to 32 of A-Z a-z 0-9 _ . -, no leading
 * "-"; digits alone pass, as a uid): whoever drops privileges looks the
 * user up. */
static int p_user(struct loader *L, const struct key_def *k, const char *v,
                  void *base)
{
  char q[PX_CONF_SHOW + 4];
  char **dst = FIELD(base, k->off, char *);
  char *s;

  if (v[0] == '-' || strlen(v) > 32 || !conf_is_name(v)) {
    conf_bad(L, "bad value \"%s\" for %s (use a user name such as popgate)",
             px_conf_show(q, v), k->name);
    return -EINVAL;
  }
  if ((s = conf_xstrdup(L, v)) == NULL)
    return -ENOMEM;
  free(*dst);
  *dst = s;
  return 0;
}

/* Parses v into hp (reporting problems itself): 0, -EINVAL or -ENOMEM. */
static int hostport_value(struct loader *L, const struct key_def *k,
                          const char *v, struct px_conf_hostport *hp)
{
  char q[PX_CONF_SHOW + 4];
  const char *why = NULL;
  int rc;

  rc = px_conf_split_hostport(v, &hp->host, &hp->port, &why);
  if (rc == -ENOMEM) {
    conf_oom(L);
    return rc;
  }
  if (rc != 0) {
    conf_bad(L, "bad address \"%s\" for %s: %s", px_conf_show(q, v), k->name,
             why);
    return rc;
  }
  if ((k->flags & KEY_IP_ONLY) && !conf_is_ip(hp->host)) {
    conf_bad(L,
             "bad address \"%s\" for %s: the host must be an IP address, "
             "such as 127.0.0.1, 0.0.0.0, [::1] or [::]",
             px_conf_show(q, v), k->name);
    conf_hostport_free(hp);
    return -EINVAL;
  }
  hp->line = L->pend.line;
  return 0;
}

static int p_hostport(struct loader *L, const struct key_def *k, const char *v,
                      void *base)
{
  struct px_conf_hostport *dst = FIELD(base, k->off, struct px_conf_hostport);
  struct px_conf_hostport hp = { NULL, NULL, 0 };
  int rc = hostport_value(L, k, v, &hp);

  if (rc != 0)
    return rc;
  conf_hostport_free(dst);
  *dst = hp;
  return 0;
}

/* A repeatable host:port: appends to the array at k->off, whose length is
 * the size_t at k->off_n. */
static int p_hostport_list(struct loader *L, const struct key_def *k,
                           const char *v, void *base)
{
  struct px_conf_hostport **arr =
      FIELD(base, k->off, struct px_conf_hostport *);
  size_t *n = FIELD(base, k->off_n, size_t);
  struct px_conf_hostport hp = { NULL, NULL, 0 };
  struct px_conf_hostport *grown;
  int rc = hostport_value(L, k, v, &hp);

  if (rc != 0)
    return rc;
  grown = realloc(*arr, (*n + 1) * sizeof **arr);
  if (grown == NULL) {
    conf_hostport_free(&hp);
    conf_oom(L);
    return -ENOMEM;
  }
  *arr = grown;
  (*arr)[(*n)++] = hp;
  return 0;
}

/* The NAME of another section; resolved in conf_finish(). */
static int p_ref(struct loader *L, const struct key_def *k, const char *v,
                 void *base)
{
  char q[PX_CONF_SHOW + 4];
  char **dst = FIELD(base, k->off, char *);
  char *s;

  if (!conf_is_name(v)) {
    conf_bad(L, "bad value \"%s\" for %s (the NAME of an [%s:NAME] section)",
             px_conf_show(q, v), k->name, k->name);
    return -EINVAL;
  }
  if ((s = conf_xstrdup(L, v)) == NULL)
    return -ENOMEM;
  free(*dst);
  *dst = s;
  return 0;
}

/* A list of [filter:NAME] names, separated by commas and/or spaces
 * (continuation lines arrive joined with a space). "" is the empty list.
 * Fills the name array at k->off and its length at k->off_n; conf_finish()
 * resolves the names. */
static int p_ref_list(struct loader *L, const struct key_def *k, const char *v,
                      void *base)
{
  char q[PX_CONF_SHOW + 4], word[PX_CONF_MAX_NAME + 2];
  char ***dst = FIELD(base, k->off, char **);
  size_t *dstn = FIELD(base, k->off_n, size_t);
  char **names = NULL, **grown;
  size_t n = 0, i = 0, j, len = strlen(v), wl;

  while (i < len) {
    wl = strcspn(v + i, ", \t");
    if (wl == 0) {
      conf_bad(L,
               "bad value \"%s\" for %s (names of [filter:NAME] sections, "
               "separated by commas or spaces)",
               px_conf_show(q, v), k->name);
      goto fail;
    }
    memcpy(word, v + i, wl < sizeof word ? wl : sizeof word - 1);
    word[wl < sizeof word ? wl : sizeof word - 1] = '\0';
    if (!conf_is_name(word)) {
      conf_bad(L,
               "bad name \"%s%s\" in %s (the NAME of a [filter:NAME] section; "
               "separate names with commas or spaces)",
               px_conf_show(q, word), wl < sizeof word ? "" : "...", k->name);
      goto fail;
    }
    for (j = 0; j < n; j++) {
      if (strcmp(names[j], word) == 0) {
        conf_bad(L, "filter \"%s\" is listed twice in %s", word, k->name);
        goto fail;
      }
    }
    grown = realloc(names, (n + 1) * sizeof *names);
    if (grown == NULL)
      goto nomem;
    names = grown;
    if ((names[n] = conf_xstrdup(L, word)) == NULL)
      goto fail;
    n++;
    i += wl;
    i += strspn(v + i, " \t");
    if (v[i] == ',') {
      i++;
      i += strspn(v + i, " \t");
      if (i == len) { /* a final comma */
        conf_bad(L,
                 "bad value \"%s\" for %s (names of [filter:NAME] sections, "
                 "separated by commas or spaces)",
                 px_conf_show(q, v), k->name);
        goto fail;
      }
    }
  }
  for (j = 0; j < *dstn; j++)
    free((*dst)[j]);
  free(*dst);
  *dst = names;
  *dstn = n;
  return 0;

nomem:
  conf_oom(L);
fail:
  for (j = 0; j < n; j++)
    free(names[j]);
  free(names);
  return L->oom ? -ENOMEM : -EINVAL;
}

/* One of names[0..n), case-insensitive, into *out; 0 or -EINVAL
 * (reported, with the valid values). */
static int keyword_value(struct loader *L, const struct key_def *k,
                         const char *v, const char *const *names, int n,
                         int *out)
{
  char q[PX_CONF_SHOW + 4], list[128];
  int i;

  for (i = 0; i < n; i++) {
    if (strcasecmp(v, names[i]) == 0) {
      *out = i;
      return 0;
    }
  }
  conf_bad(L, "bad value \"%s\" for %s (use %s)", px_conf_show(q, v), k->name,
           conf_names_str(list, sizeof list, names, n));
  return -EINVAL;
}

/* type = one of the filter types (filters/types.c), any case. */
static int p_filter_type(struct loader *L, const struct key_def *k,
                         const char *v, void *base)
{
  const struct flt_ops *ops = flt_ops_by_name(v);
  char q[PX_CONF_SHOW + 4], list[128];

  if (ops == NULL) {
    conf_bad(
        L, "bad value \"%s\" for %s (use %s)", px_conf_show(q, v), k->name,
        conf_names_str(list, sizeof list, px_filter_type_names, PX_FLT_COUNT));
    return -EINVAL;
  }
  *FIELD(base, k->off, enum px_filter_type) = ops->type;
  return 0;
}

/* A key of filter types (KEY_TYPE): the parse hook of the section's type
 * takes it when that type has the key. Otherwise (no type yet, or the key
 * belongs to other types, which conf_finish() reports) the first type that
 * has it does, so that its value is checked all the same. */
static int p_filter_key(struct loader *L, const struct key_def *k,
                        const char *v, void *base)
{
  struct px_conf_filter *f = base;
  const struct flt_ops *ops = flt_ops_of(f->type);
  char msg[PX_CONF_ERR_MSG] = "";
  int rc;

  if (ops == NULL || flt_key_of(ops, k->name) == NULL)
    ops = conf_type_owner(k->name);
  rc = ops->parse(f, k->name, v, L->pend.line, msg, sizeof msg);
  if (rc == 1)
    return 0;
  if (rc == -ENOMEM) {
    conf_oom(L);
    return rc;
  }
  if (rc == 0) {
    conf_errorf(L, L->pend.line,
                "internal error: type = %s does not parse %s (please report "
                "this)",
                px_filter_type_names[ops->type], k->name);
    return -EINVAL;
  }
  conf_bad(L, "%s", msg);
  return -EINVAL;
}

static int p_on_virus(struct loader *L, const struct key_def *k, const char *v,
                      void *base)
{
  int i;

  if (keyword_value(L, k, v, px_on_virus_names, PX_ONV_COUNT, &i) != 0)
    return -EINVAL;
  *FIELD(base, k->off, enum px_on_virus) = (enum px_on_virus)i;
  return 0;
}

static int p_on_error(struct loader *L, const struct key_def *k, const char *v,
                      void *base)
{
  int i;

  if (keyword_value(L, k, v, px_on_error_names, PX_ONE_COUNT, &i) != 0)
    return -EINVAL;
  *FIELD(base, k->off, enum px_on_error) = (enum px_on_error)i;
  return 0;
}

/* Copies an absolute directory path into the field (a final "/" is fine);
 * 0, -EINVAL (reported) or -ENOMEM. */
static int dir_path_value(struct loader *L, const struct key_def *k,
                          const char *v, void *base)
{
  char q[PX_CONF_SHOW + 4];
  char **dst = FIELD(base, k->off, char *);
  char *s;

  if (v[0] != '/' || conf_has_ctl(v)) {
    conf_bad(L, "bad value \"%s\" for %s (use an absolute directory path)",
             px_conf_show(q, v), k->name);
    return -EINVAL;
  }
  if ((s = conf_xstrdup(L, v)) == NULL)
    return -ENOMEM;
  free(*dst);
  *dst = s;
  return 0;
}

/* spool_dir: only the form here; conf_finish() checks the directory when
 * some listener has filters (the default too). */
static int p_dir_path(struct loader *L, const struct key_def *k, const char *v,
                      void *base)
{
  return dir_path_value(L, k, v, base);
}

/* quarantine_dir: an existing directory popgate can write to, now. */
static int p_dir(struct loader *L, const struct key_def *k, const char *v,
                 void *base)
{
  char q[PX_CONF_SHOW + 4], why[160];
  int rc = dir_path_value(L, k, v, base);

  if (rc != 0)
    return rc;
  if (conf_dir_problem(v, why, sizeof why)[0] != '\0') {
    conf_bad(L, "cannot use %s \"%s\": %s", k->name, px_conf_show(q, v), why);
    return -EINVAL;
  }
  return 0;
}

#define M(f)  offsetof(struct px_conf, f)
#define L_(f) offsetof(struct px_conf_listener, f)
#define U(f)  offsetof(struct px_conf_upstream, f)
#define F(f)  offsetof(struct px_conf_filter, f)

/* Every key popgate knows, but the keys of filter types, which their
 * flt_ops list. A new key is one row here, one field in conf.h, its
 * default and its free below; popgate.ini documents each row. Rows without a
 * parser are keys DESIGN.md promises and this build does not implement yet:
 * they get "not supported yet" instead of "unknown key". */
const struct key_def conf_keys[] = {
  { "workers", SEC_MAIN, p_auto_uint, M(workers), 0, 0, 1, 256, NULL },
  { "user", SEC_MAIN, p_user, M(user), 0, 0, 0, 0, NULL },
  { "log", SEC_MAIN, p_log, 0, 0, 0, 0, 0, NULL },
  { "log_level", SEC_MAIN, p_log_level, M(log_level), 0, 0, 0, 0, NULL },
  { "shutdown_timeout", SEC_MAIN, p_duration, M(shutdown_timeout_ms), 0, 0, 0,
    24 * MS_H, NULL },
  { "metrics", SEC_MAIN, p_hostport, M(metrics), 0, KEY_IP_ONLY, 0, 0, NULL },
  { "spool_dir", SEC_MAIN, p_dir_path, M(spool_dir), 0, 0, 0, 0, NULL },
  { "memory_per_message", SEC_MAIN, p_size64, M(memory_per_message), 0, 0,
    4 * SZ_K, SZ_G, NULL },
  /* ClamAV and the spool count in 64 bits, but a POP3 message over 4G is
   * a mistake, not mail. */
  { "max_message_size", SEC_MAIN, p_size64, M(max_message_size), 0, 0, 4 * SZ_K,
    4 * SZ_G, NULL },
  { "memory_budget", SEC_MAIN, p_size64, M(memory_budget), 0, 0, 4 * SZ_K,
    1024 * SZ_G, NULL },
  { "scan_threads", SEC_MAIN, p_auto_uint, M(scan_threads), 0, 0, 1, 256,
    NULL },

  { "bind", SEC_LISTENER, p_hostport, L_(bind), 0, KEY_REQUIRED | KEY_IP_ONLY,
    0, 0, NULL },
  { "tls", SEC_LISTENER, p_tls, L_(tls), 0, 0, 0, 0, NULL },
  { "upstream", SEC_LISTENER, p_ref, L_(upstream_name), 0, KEY_REQUIRED, 0, 0,
    NULL },
  { "max_clients", SEC_LISTENER, p_uint, L_(max_clients), 0, 0, 1, 1000000,
    NULL },
  { "max_clients_per_ip", SEC_LISTENER, p_uint, L_(max_clients_per_ip), 0, 0, 0,
    1000000, NULL },
  { "idle_timeout", SEC_LISTENER, p_duration, L_(idle_timeout_ms), 0, 0,
    10 * MS_M, 24 * MS_H,
    "RFC 1939 section 3 requires an autologout timer of at least 10 "
    "minutes" },
  { "login_timeout", SEC_LISTENER, p_duration, L_(login_timeout_ms), 0, 0, MS_S,
    24 * MS_H, NULL },
  { "max_errors", SEC_LISTENER, p_uint, L_(max_errors), 0, 0, 1, 1000, NULL },
  { "cert", SEC_LISTENER, conf_p_cert, L_(certs), L_(ncerts), KEY_REPEATABLE, 0,
    0, NULL },
  { "key", SEC_LISTENER, conf_p_key, L_(certs), L_(ncerts), KEY_REPEATABLE, 0,
    0, NULL },
  { "tls_min_version", SEC_LISTENER, conf_p_tls_version, L_(tls_min_version), 0,
    0, 0, 0, NULL },
  { "ciphers", SEC_LISTENER, conf_p_ciphers, L_(ciphers), 0, 0, 0, 0, NULL },
  { "require_tls", SEC_LISTENER, p_bool, L_(require_tls), 0, 0, 0, 0, NULL },
  { "handshake_timeout", SEC_LISTENER, p_duration, L_(handshake_timeout_ms), 0,
    0, MS_S, 10 * MS_M, NULL },
  { "filters", SEC_LISTENER, p_ref_list, L_(filter_names), L_(nfilters),
    KEY_EMPTY_OK, 0, 0, NULL },
  { "proxy_protocol", SEC_LISTENER, NULL, 0, 0, 0, 0, 0, NULL },
  { "proxy_from", SEC_LISTENER, NULL, 0, 0, 0, 0, 0, NULL },

  { "server", SEC_UPSTREAM, p_hostport_list, U(servers), U(nservers),
    KEY_REPEATABLE | KEY_REQUIRED, 0, 0, NULL },
  { "tls", SEC_UPSTREAM, p_tls, U(tls), 0, 0, 0, 0, NULL },
  { "connect_timeout", SEC_UPSTREAM, p_duration, U(connect_timeout_ms), 0, 0,
    100, MS_H, NULL },
  { "timeout", SEC_UPSTREAM, p_duration, U(timeout_ms), 0, 0, MS_S, 24 * MS_H,
    NULL },
  { "max_response_line", SEC_UPSTREAM, p_size, U(max_response_line), 0, 0, 512,
    65536, NULL },
  { "verify", SEC_UPSTREAM, p_bool, U(verify), 0, 0, 0, 0, NULL },
  { "ca_file", SEC_UPSTREAM, conf_p_file, U(ca_file), 0, 0, 0, 0, NULL },
  { "server_name", SEC_UPSTREAM, conf_p_server_name, U(server_name), 0, 0, 0, 0,
    NULL },
  { "cert", SEC_UPSTREAM, conf_p_file, U(client.cert), 0, 0, 0, 0, NULL },
  { "key", SEC_UPSTREAM, conf_p_file, U(client.key), 0, 0, 0, 0, NULL },
  { "proxy_protocol", SEC_UPSTREAM, NULL, 0, 0, 0, 0, 0, NULL },
  { "xclient", SEC_UPSTREAM, NULL, 0, 0, 0, 0, 0, NULL },

  { "type", SEC_FILTER, p_filter_type, F(type), 0, KEY_REQUIRED, 0, 0, NULL },
  { "on_virus", SEC_FILTER, p_on_virus, F(on_virus), 0, KEY_VIRUS, 0, 0, NULL },
  { "quarantine_dir", SEC_FILTER, p_dir, F(quarantine_dir), 0, KEY_VIRUS, 0, 0,
    NULL },
  /* Every type: a message over max_message_size is an error whichever
   * filters it meets. */
  { "on_error", SEC_FILTER, p_on_error, F(on_error), 0, 0, 0, 0, NULL },
};

#undef M
#undef L_
#undef U
#undef F

const size_t conf_nkeys = sizeof conf_keys / sizeof *conf_keys;
_Static_assert(sizeof conf_keys / sizeof *conf_keys <= PX_CONF_MAX_KEYS,
               "PX_CONF_MAX_KEYS is too small for conf_keys[]");

const struct key_def *conf_find_key(enum sec_kind kind, const char *name)
{
  size_t i;

  for (i = 0; i < conf_nkeys; i++)
    if (conf_keys[i].sec == kind && strcmp(conf_keys[i].name, name) == 0)
      return &conf_keys[i];
  return NULL;
}

const struct flt_ops *conf_type_owner(const char *name)
{
  const struct flt_ops *ops;
  int t;

  for (t = 0; t < PX_FLT_COUNT; t++) {
    ops = flt_ops_of((enum px_filter_type)t);
    if (flt_key_of(ops, name) != NULL)
      return ops;
  }
  return NULL;
}

int conf_type_key(const char *name, struct key_def *k)
{
  const struct flt_ops *ops = conf_type_owner(name);
  const struct flt_key *fk;

  if (ops == NULL)
    return 0;
  fk = flt_key_of(ops, name);
  memset(k, 0, sizeof *k);
  k->name = fk->name; /* static: outlives the section */
  k->sec = SEC_FILTER;
  k->parse = p_filter_key;
  k->flags = KEY_TYPE;
  if (fk->flags & FLT_KEY_REPEATABLE)
    k->flags |= KEY_REPEATABLE;
  return 1;
}

int *conf_seen(struct sec_info *info, const struct key_def *k)
{
  size_t i;

  if (!(k->flags & KEY_TYPE))
    return &info->seen[k - conf_keys];
  for (i = 0; i < info->ntseen; i++)
    if (strcmp(info->tseen[i].name, k->name) == 0)
      return &info->tseen[i].line;
  if (i == PX_CONF_MAX_TYPE_KEYS)
    return NULL;
  info->tseen[i].name = k->name;
  info->tseen[i].line = 0;
  info->ntseen++;
  return &info->tseen[i].line;
}

int conf_seen_line(const struct sec_info *info, enum sec_kind kind,
                   const char *key)
{
  const struct key_def *k = conf_find_key(kind, key);
  size_t i;

  if (k != NULL)
    return info->seen[k - conf_keys];
  for (i = 0; i < info->ntseen; i++)
    if (strcmp(info->tseen[i].name, key) == 0)
      return info->tseen[i].line;
  return 0;
}

/* ---- defaults, and what frees the values ---- */

void conf_main_defaults(struct px_conf *c)
{
  c->workers = 0; /* auto */
  c->log_target = PX_LOGT_STDERR;
  c->log_level = PX_LOG_INFO;
  c->shutdown_timeout_ms = 30 * MS_S;
  /* spool_dir: conf_finish() sets the default. */
  c->memory_per_message = SZ_M;
  c->max_message_size = 256 * SZ_M;
  c->memory_budget = 256 * SZ_M;
  c->scan_threads = 0; /* auto */
}

void conf_listener_defaults(struct px_conf_listener *l)
{
  memset(l, 0, sizeof *l);
  l->tls = PX_TLS_OFF;
  l->tls_min_version = TLS1_2_VERSION;
  l->handshake_timeout_ms = 30 * MS_S;
  /* require_tls: its default depends on tls; conf_finish() sets it. */
  l->max_clients = 10000;
  l->max_clients_per_ip = 50;
  l->idle_timeout_ms = 10 * MS_M;
  l->login_timeout_ms = 3 * MS_M;
  l->max_errors = 10;
}

void conf_upstream_defaults(struct px_conf_upstream *u)
{
  memset(u, 0, sizeof *u);
  u->tls = PX_TLS_OFF;
  u->verify = 1;
  u->connect_timeout_ms = 10 * MS_S;
  u->timeout_ms = 10 * MS_M;
  u->max_response_line = 1024;
}

/* The defaults of every type, which the section's type does not change
 * (it may come last); database's depends on the type: clamav's check hook
 * sets it. */
void conf_filter_defaults(struct px_conf_filter *f)
{
  memset(f, 0, sizeof *f);
  f->type = PX_FLT_COUNT; /* not given yet; required */
  f->max_scan_size = 100 * SZ_M;
  f->max_file_size = 25 * SZ_M;
  f->max_recursion = 16;
  f->max_files = 10000;
  f->scan_timeout_ms = 60 * MS_S;
  f->on_virus = PX_ONV_REPLACE;
  f->on_error = PX_ONE_TEMPFAIL;
}

void conf_main_free(struct px_conf *c)
{
  free(c->path);
  free(c->user);
  free(c->log_path);
  conf_hostport_free(&c->metrics);
  free(c->spool_dir);
  c->path = c->user = c->log_path = c->spool_dir = NULL;
}

static void certkey_free(struct px_conf_certkey *ck)
{
  free(ck->cert);
  free(ck->key);
  ck->cert = ck->key = NULL;
}

void conf_listener_free(struct px_conf_listener *l)
{
  size_t i;

  free(l->name);
  conf_hostport_free(&l->bind);
  for (i = 0; i < l->ncerts; i++)
    certkey_free(&l->certs[i]);
  free(l->certs);
  free(l->ciphers);
  free(l->upstream_name);
  for (i = 0; i < l->nfilters; i++)
    free(l->filter_names[i]);
  free(l->filter_names);
  free(l->filters);
  l->name = l->upstream_name = l->ciphers = NULL;
  l->certs = NULL;
  l->ncerts = 0;
  l->filter_names = NULL;
  l->filters = NULL;
  l->nfilters = 0;
}

void conf_upstream_free(struct px_conf_upstream *u)
{
  size_t i;

  free(u->name);
  for (i = 0; i < u->nservers; i++)
    conf_hostport_free(&u->servers[i]);
  free(u->servers);
  free(u->ca_file);
  free(u->server_name);
  certkey_free(&u->client);
  u->name = u->ca_file = u->server_name = NULL;
  u->servers = NULL;
  u->nservers = 0;
}

/* Whatever types' parse hooks stored, the type's or not. */
void conf_filter_free(struct px_conf_filter *f)
{
  size_t i;

  free(f->name);
  free(f->database);
  free(f->socket);
  flt_argv_free(f->argv);
  for (i = 0; i < f->nadd; i++)
    free(f->add[i]);
  free(f->add);
  free(f->quarantine_dir);
  f->name = f->database = f->socket = f->quarantine_dir = NULL;
  f->argv = f->add = NULL;
  f->argc = f->nadd = 0;
}
