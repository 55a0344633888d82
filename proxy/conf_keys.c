/* conf_keys.c - the key table and the value parsers behind it.
 *
 * One row of conf_keys[] per key gives its section kind, its parser, the
 * offset of the field it fills and its limits; one parser per kind of field
 * (numbers, sizes, durations, enums, names, lists, host:port, paths; TLS
 * files and strings in conf_tls.c) copies a complete value out of the
 * reader's buffer, or reports it with conf_bad() at the key's line.
 *
 * Filters. A [filter:NAME] section takes the keys of every filter type; a
 * key's row says which types it belongs to (KEY_T_*), and conf_finish()
 * checks them against the section's type, because type may come after them.
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
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

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

static int p_filter_type(struct loader *L, const struct key_def *k,
                         const char *v, void *base)
{
  int i;

  if (keyword_value(L, k, v, px_filter_type_names, PX_FLT_COUNT, &i) != 0)
    return -EINVAL;
  *FIELD(base, k->off, enum px_filter_type) = (enum px_filter_type)i;
  return 0;
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

/* ClamAV's signatures: a directory of them or one database file, which
 * must exist when given (the default is left to the engine load, which
 * reports a missing database better than a stat() can). */
static int p_database(struct loader *L, const struct key_def *k, const char *v,
                      void *base)
{
  char q[PX_CONF_SHOW + 4], ebuf[128];
  char **dst = FIELD(base, k->off, char *);
  struct stat st;
  char *s;
  int e;

  if (v[0] != '/' || conf_has_ctl(v)) {
    conf_bad(L,
             "bad value \"%s\" for %s (use the absolute path of a directory or "
             "a file)",
             px_conf_show(q, v), k->name);
    return -EINVAL;
  }
  if (stat(v, &st) == -1) {
    e = errno;
    conf_bad(L, "cannot use %s \"%s\": %s", k->name, px_conf_show(q, v),
             ERRSTR(e, ebuf));
    return -EINVAL;
  }
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
    conf_bad(L, "cannot use %s \"%s\": not a directory or a regular file",
             k->name, px_conf_show(q, v));
    return -EINVAL;
  }
  if (access(v, S_ISDIR(st.st_mode) ? R_OK | X_OK : R_OK) == -1) {
    e = errno;
    conf_bad(L, "cannot use %s \"%s\": not readable: %s", k->name,
             px_conf_show(q, v), ERRSTR(e, ebuf));
    return -EINVAL;
  }
  if ((s = conf_xstrdup(L, v)) == NULL)
    return -ENOMEM;
  free(*dst);
  *dst = s;
  return 0;
}

/* clamd's address: an absolute unix socket path (not checked: clamd may
 * start after popgate) or host:port, stored as "host:port" ("[v6]:port")
 * with the port in canonical decimal, for px_conf_parse_hostport(). */
static int p_socket(struct loader *L, const struct key_def *k, const char *v,
                    void *base)
{
  char q[PX_CONF_SHOW + 4];
  char **dst = FIELD(base, k->off, char *);
  struct px_conf_hostport hp = { NULL, NULL, 0 };
  const char *why = NULL;
  size_t n = strlen(v);
  char *s;
  int rc;

  if (v[0] == '/') {
    if (conf_has_ctl(v) || v[n - 1] == '/') {
      conf_bad(L,
               "bad value \"%s\" for %s (use the absolute path of clamd's unix "
               "socket, or host:port)",
               px_conf_show(q, v), k->name);
      return -EINVAL;
    }
    if (n >= sizeof((struct sockaddr_un *)NULL)->sun_path) {
      conf_bad(L,
               "%s path \"%s\" is longer than %zu characters (the limit of a "
               "unix socket address)",
               k->name, px_conf_show(q, v),
               sizeof((struct sockaddr_un *)NULL)->sun_path - 1);
      return -EINVAL;
    }
    s = conf_xstrdup(L, v);
  } else {
    rc = px_conf_split_hostport(v, &hp.host, &hp.port, &why);
    if (rc == -ENOMEM) {
      conf_oom(L);
      return rc;
    }
    if (rc != 0) {
      conf_bad(L,
               "bad value \"%s\" for %s: %s (use the absolute path of clamd's "
               "unix socket, or host:port)",
               px_conf_show(q, v), k->name, why);
      return rc;
    }
    n = strlen(hp.host) + strlen(hp.port) + 4;
    if ((s = malloc(n)) == NULL)
      conf_oom(L);
    else
      conf_hostport_str(s, n, &hp);
    conf_hostport_free(&hp);
  }
  if (s == NULL)
    return -ENOMEM;
  free(*dst);
  *dst = s;
  return 0;
}

static void argv_free(char **argv)
{
  size_t i;

  if (argv == NULL)
    return;
  for (i = 0; argv[i] != NULL; i++)
    free(argv[i]);
  free(argv);
}

/* command = /abs/program arg...: split on spaces and tabs, no shell and no
 * quoting. The array at k->off gets a NULL after the last word (execv()
 * takes it as is), k->off_n the number of words. The program must be an
 * executable regular file now. */
static int p_command(struct loader *L, const struct key_def *k, const char *v,
                     void *base)
{
  char q[PX_CONF_SHOW + 4], ebuf[128];
  char ***dst = FIELD(base, k->off, char **);
  size_t *dstn = FIELD(base, k->off_n, size_t);
  char **argv;
  size_t n = 0, i, wl;
  struct stat st;
  int e;

  for (i = 0; v[i] != '\0'; i++)
    if (((unsigned char)v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f)
      break;
  if (v[0] != '/' || v[i] != '\0') {
    conf_bad(L,
             "bad value \"%s\" for %s (the program's absolute path, then its "
             "arguments, separated by spaces; no shell)",
             px_conf_show(q, v), k->name);
    return -EINVAL;
  }
  /* Words: at most one per two characters, plus the NULL. */
  argv = calloc(strlen(v) / 2 + 2, sizeof *argv);
  if (argv == NULL) {
    conf_oom(L);
    return -ENOMEM;
  }
  for (i = 0; v[i] != '\0'; i += wl) {
    i += strspn(v + i, " \t");
    wl = strcspn(v + i, " \t");
    if (wl == 0)
      break;
    if ((argv[n] = strndup(v + i, wl)) == NULL) {
      argv_free(argv);
      conf_oom(L);
      return -ENOMEM;
    }
    n++;
  }
  if (stat(argv[0], &st) == -1) {
    e = errno;
    conf_bad(L, "cannot run %s \"%s\": %s", k->name, px_conf_show(q, argv[0]),
             ERRSTR(e, ebuf));
  } else if (!S_ISREG(st.st_mode)) {
    conf_bad(L, "cannot run %s \"%s\": not a regular file", k->name,
             px_conf_show(q, argv[0]));
  } else if (access(argv[0], X_OK) == -1) {
    e = errno;
    conf_bad(L, "cannot run %s \"%s\": not executable: %s", k->name,
             px_conf_show(q, argv[0]), ERRSTR(e, ebuf));
  } else {
    argv_free(*dst);
    *dst = argv;
    *dstn = n;
    return 0;
  }
  argv_free(argv);
  return -EINVAL;
}

/* RFC 5322: a field name is 1 or more printable ASCII characters other
 * than ":" and space; at most 76 keeps "Name: " within the 78 characters
 * section 2.1.1 recommends for a line. A line is at most 998 (MUST). */
#define PX_HDR_NAME_MAX 76
#define PX_HDR_LINE_MAX 998

/* add = Name: value (repeatable): appended, as written, to the array at
 * k->off (count at k->off_n). The value may be empty. */
static int p_header_add(struct loader *L, const struct key_def *k,
                        const char *v, void *base)
{
  char q[PX_CONF_SHOW + 4], nb[PX_CONF_SHOW + 2];
  char ***arr = FIELD(base, k->off, char **);
  size_t *n = FIELD(base, k->off_n, size_t);
  const char *colon = strchr(v, ':'), *p;
  size_t nlen, i;
  char **grown, *s;

  if (colon == NULL) {
    conf_bad(L,
             "bad value \"%s\" for %s (use \"Name: value\", as in "
             "X-Scanned-By: popgate)",
             px_conf_show(q, v), k->name);
    return -EINVAL;
  }
  nlen = (size_t)(colon - v);
  for (i = 0; i < nlen; i++)
    if ((unsigned char)v[i] < 33 || (unsigned char)v[i] > 126)
      break;
  if (nlen == 0 || nlen > PX_HDR_NAME_MAX || i < nlen) {
    i = nlen < sizeof nb - 1 ? nlen : sizeof nb - 1;
    memcpy(nb, v, i);
    nb[i] = '\0';
    conf_bad(
        L,
        "bad header name \"%s\" in %s (1 to %d printable ASCII characters, "
        "no space or \":\", as in X-Scanned-By)",
        px_conf_show(q, nb), k->name, PX_HDR_NAME_MAX);
    return -EINVAL;
  }
  for (p = colon + 1; *p != '\0'; p++)
    if (((unsigned char)*p < 0x20 && *p != '\t') || (unsigned char)*p > 0x7e)
      break;
  if (*p != '\0') {
    conf_bad(L,
             "bad header value in %s = %s (printable ASCII characters and tabs "
             "only)",
             k->name, px_conf_show(q, v));
    return -EINVAL;
  }
  if (strlen(v) > PX_HDR_LINE_MAX) {
    conf_bad(
        L, "%s = %s is longer than %d characters (the line limit of RFC 5322)",
        k->name, px_conf_show(q, v), PX_HDR_LINE_MAX);
    return -EINVAL;
  }
  grown = realloc(*arr, (*n + 1) * sizeof **arr);
  if (grown == NULL) {
    conf_oom(L);
    return -ENOMEM;
  }
  *arr = grown;
  if ((s = conf_xstrdup(L, v)) == NULL)
    return -ENOMEM;
  (*arr)[(*n)++] = s;
  return 0;
}

#define M(f)  offsetof(struct px_conf, f)
#define L_(f) offsetof(struct px_conf_listener, f)
#define U(f)  offsetof(struct px_conf_upstream, f)
#define F(f)  offsetof(struct px_conf_filter, f)

/* Every key popgate knows. A new key is one row here, one field in
 * conf.h, its default and its free below; popgate.ini documents each row. Rows
 * without a parser are keys DESIGN.md promises and this build does not
 * implement yet: they get "not supported yet" instead of "unknown key". */
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
  { "database", SEC_FILTER, p_database, F(database), 0, KEY_T_CLAMAV, 0, 0,
    NULL },
  /* libclamav takes both as 64-bit numbers; it scans one file of at most
   * 2G - 1 and lowers a larger max_file_size to that. */
  { "max_scan_size", SEC_FILTER, p_size64, F(max_scan_size), 0, KEY_T_CLAMAV,
    SZ_K, 4 * SZ_G, NULL },
  { "max_file_size", SEC_FILTER, p_size64, F(max_file_size), 0, KEY_T_CLAMAV,
    SZ_K, 2 * SZ_G, NULL },
  { "max_recursion", SEC_FILTER, p_uint, F(max_recursion), 0, KEY_T_CLAMAV, 1,
    64, NULL },
  { "max_files", SEC_FILTER, p_uint, F(max_files), 0, KEY_T_CLAMAV, 1, 1000000,
    NULL },
  { "scan_timeout", SEC_FILTER, p_duration, F(scan_timeout_ms), 0,
    KEY_T_CLAMAV | KEY_T_CLAMD | KEY_T_COMMAND, MS_S, MS_H, NULL },
  { "socket", SEC_FILTER, p_socket, F(socket), 0, KEY_T_CLAMD | KEY_REQUIRED, 0,
    0, NULL },
  { "command", SEC_FILTER, p_command, F(argv), F(argc),
    KEY_T_COMMAND | KEY_REQUIRED, 0, 0, NULL },
  { "add", SEC_FILTER, p_header_add, F(add), F(nadd),
    KEY_T_HEADER | KEY_REQUIRED | KEY_REPEATABLE, 0, 0, NULL },
  { "on_virus", SEC_FILTER, p_on_virus, F(on_virus), 0,
    KEY_T_CLAMAV | KEY_T_CLAMD, 0, 0, NULL },
  { "quarantine_dir", SEC_FILTER, p_dir, F(quarantine_dir), 0,
    KEY_T_CLAMAV | KEY_T_CLAMD, 0, 0, NULL },
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

int conf_seen_line(const struct sec_info *info, enum sec_kind kind,
                   const char *key)
{
  const struct key_def *k = conf_find_key(kind, key);

  return k != NULL ? info->seen[k - conf_keys] : 0;
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

/* The defaults of every type; database's depends on the type, so
 * conf_finish() sets it. */
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

void conf_filter_free(struct px_conf_filter *f)
{
  size_t i;

  free(f->name);
  free(f->database);
  free(f->socket);
  argv_free(f->argv);
  for (i = 0; i < f->nadd; i++)
    free(f->add[i]);
  free(f->add);
  free(f->quarantine_dir);
  f->name = f->database = f->socket = f->quarantine_dir = NULL;
  f->argv = f->add = NULL;
  f->argc = f->nadd = 0;
}
