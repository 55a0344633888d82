/* conf.c - inih -> immutable struct px_conf.
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
 * shows that it is complete. Parsing is table-driven: one row of keys[] per
 * key gives its section kind, its parser, the offset of the field it fills
 * and its limits. After the last line, finish() checks what only the whole
 * file can tell: required keys, references between sections, duplicates.
 *
 * Every problem becomes one "FILE:LINE: message" line; parsing goes on after
 * an error so that one run reports all of them (up to PX_CONF_MAX_ERRORS).
 *
 * TLS keys. cert, key and ca_file name files that must be readable now; they
 * are opened and closed, never parsed: tls.c loads them with OpenSSL, which
 * also judges a cipher list here (on a throwaway context). What a listener's
 * tls mode implies (cert and key pairs, require_tls) is checked in finish().
 * A valid file may still earn warnings (px_conf_warnings), which -t prints.
 *
 * Filters. A [filter:NAME] section takes the keys of every filter type; a
 * key's row says which types it belongs to (KEY_T_*), and finish() checks
 * them against the section's type, because type may come after them. It
 * also resolves each listener's filters = list into pointers to
 * c->filters (which grows while parsing, so not earlier), and checks
 * spool_dir only when some listener filters: a file without filters must
 * not depend on a spool directory.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* The largest file read. Far more than any real configuration; stops
 * "-c /dev/zero" from reading forever. */
#define PX_CONF_MAX_FILE (1 << 20)

/* Errors kept and printed; the rest are only counted. A file with more is
 * not worth reading further, and err[] has a fixed size anyway. */
#define PX_CONF_MAX_ERRORS 20

/* One value, key line plus continuation lines. Without a bound a file of
 * continuation lines could grow it to any size. */
#define PX_CONF_MAX_VALUE 4096

/* NAME in [listener:NAME] and [upstream:NAME]; it appears in every log
 * line of a session, so keep it short. */
#define PX_CONF_MAX_NAME 64

/* Longest error message, without "FILE:LINE: ". */
#define PX_CONF_ERR_MSG 320

#define PX_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define PX_UNUSED       __attribute__((unused))

#define FIELD(base, off, type) ((type *)(void *)((char *)(base) + (off)))

#define MS_S UINT64_C(1000)
#define MS_M (60 * MS_S)
#define MS_H (60 * MS_M)

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

/* The kinds of section. SEC_NONE: before the first header. SEC_SKIP: after a
 * header that was itself an error; its keys are ignored without further
 * messages, which would only repeat the first one. */
enum sec_kind {
  SEC_NONE = 0,
  SEC_MAIN,
  SEC_LISTENER,
  SEC_UPSTREAM,
  SEC_FILTER,
  SEC_SKIP,
  SEC_COUNT
};
static const char *const sec_kind_names[] = { "",         "popgate", "listener",
                                              "upstream", "filter",  "" };
_Static_assert(sizeof sec_kind_names / sizeof *sec_kind_names == SEC_COUNT,
               "sec_kind_names out of sync");

struct loader;
struct key_def;

/* Parses a complete, trimmed, non-empty value into the field of base that
 * k names. Reports problems itself through bad(); returns 0 or -EINVAL
 * (-ENOMEM after setting L->oom). */
typedef int (*parse_fn)(struct loader *L, const struct key_def *k,
                        const char *v, void *base);

enum {
  KEY_REPEATABLE = 1 << 0, /* each non-indented occurrence adds a value */
  KEY_REQUIRED = 1 << 1,   /* the section is incomplete without it */
  KEY_IP_ONLY = 1 << 2,    /* host:port whose host must be an IP literal */
  KEY_EMPTY_OK = 1 << 3,   /* "key =" is a valid, empty value */
  /* [filter:NAME] keys: the types they belong to (none: every type). With
   * KEY_REQUIRED, required for those types only. */
  KEY_T_CLAMAV = 1 << (8 + PX_FLT_CLAMAV),
  KEY_T_CLAMD = 1 << (8 + PX_FLT_CLAMD),
  KEY_T_COMMAND = 1 << (8 + PX_FLT_COMMAND),
  KEY_T_HEADER = 1 << (8 + PX_FLT_HEADER),
};
#define KEY_T(type) (1u << (8 + (type)))
#define KEY_T_ALL   (KEY_T(PX_FLT_COUNT) - KEY_T(0))

struct key_def {
  const char *name;
  enum sec_kind sec;
  parse_fn parse; /* NULL: documented, not implemented by this build */
  size_t off;     /* the field in struct px_conf, _listener, _upstream */
  size_t off_n;   /* KEY_REPEATABLE lists: the field holding the count */
  unsigned flags;
  uint64_t min, max;   /* numbers, sizes (bytes), durations (ms) */
  const char *min_why; /* replaces "out of range" below min */
};

static int p_auto_uint(struct loader *, const struct key_def *, const char *,
                       void *);
static int p_user(struct loader *, const struct key_def *, const char *,
                  void *);
static int p_log(struct loader *, const struct key_def *, const char *, void *);
static int p_log_level(struct loader *, const struct key_def *, const char *,
                       void *);
static int p_duration(struct loader *, const struct key_def *, const char *,
                      void *);
static int p_uint(struct loader *, const struct key_def *, const char *,
                  void *);
static int p_size(struct loader *, const struct key_def *, const char *,
                  void *);
static int p_size64(struct loader *, const struct key_def *, const char *,
                    void *);
static int p_tls(struct loader *, const struct key_def *, const char *, void *);
static int p_bool(struct loader *, const struct key_def *, const char *,
                  void *);
static int p_file(struct loader *, const struct key_def *, const char *,
                  void *);
static int p_cert(struct loader *, const struct key_def *, const char *,
                  void *);
static int p_key(struct loader *, const struct key_def *, const char *, void *);
static int p_tls_version(struct loader *, const struct key_def *, const char *,
                         void *);
static int p_ciphers(struct loader *, const struct key_def *, const char *,
                     void *);
static int p_server_name(struct loader *, const struct key_def *, const char *,
                         void *);
static int p_hostport(struct loader *, const struct key_def *, const char *,
                      void *);
static int p_hostport_list(struct loader *, const struct key_def *,
                           const char *, void *);
static int p_ref(struct loader *, const struct key_def *, const char *, void *);
static int p_ref_list(struct loader *, const struct key_def *, const char *,
                      void *);
static int p_dir_path(struct loader *, const struct key_def *, const char *,
                      void *);
static int p_dir(struct loader *, const struct key_def *, const char *, void *);
static int p_filter_type(struct loader *, const struct key_def *, const char *,
                         void *);
static int p_on_virus(struct loader *, const struct key_def *, const char *,
                      void *);
static int p_on_error(struct loader *, const struct key_def *, const char *,
                      void *);
static int p_database(struct loader *, const struct key_def *, const char *,
                      void *);
static int p_socket(struct loader *, const struct key_def *, const char *,
                    void *);
static int p_command(struct loader *, const struct key_def *, const char *,
                     void *);
static int p_header_add(struct loader *, const struct key_def *, const char *,
                        void *);

#define M(f)  offsetof(struct px_conf, f)
#define L_(f) offsetof(struct px_conf_listener, f)
#define U(f)  offsetof(struct px_conf_upstream, f)
#define F(f)  offsetof(struct px_conf_filter, f)

#define SZ_K (UINT64_C(1) << 10)
#define SZ_M (UINT64_C(1) << 20)
#define SZ_G (UINT64_C(1) << 30)

/* Every key popgate knows. A new key is one row here (and one field in
 * conf.h); popgate.ini documents each row. Rows without a parser are keys
 * DESIGN.md promises and this build does not implement yet: they get "not
 * supported yet" instead of "unknown key". */
static const struct key_def keys[] = {
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
  { "cert", SEC_LISTENER, p_cert, L_(certs), L_(ncerts), KEY_REPEATABLE, 0, 0,
    NULL },
  { "key", SEC_LISTENER, p_key, L_(certs), L_(ncerts), KEY_REPEATABLE, 0, 0,
    NULL },
  { "tls_min_version", SEC_LISTENER, p_tls_version, L_(tls_min_version), 0, 0,
    0, 0, NULL },
  { "ciphers", SEC_LISTENER, p_ciphers, L_(ciphers), 0, 0, 0, 0, NULL },
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
  { "ca_file", SEC_UPSTREAM, p_file, U(ca_file), 0, 0, 0, 0, NULL },
  { "server_name", SEC_UPSTREAM, p_server_name, U(server_name), 0, 0, 0, 0,
    NULL },
  { "cert", SEC_UPSTREAM, p_file, U(client.cert), 0, 0, 0, 0, NULL },
  { "key", SEC_UPSTREAM, p_file, U(client.key), 0, 0, 0, 0, NULL },
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

enum { NKEYS = sizeof keys / sizeof keys[0] };

/* What the reader decided about the line it last handed to inih. */
enum line_class { CLS_NONE = 0, CLS_KEY, CLS_CONT, CLS_DONE };

/* Bookkeeping for one section instance. */
struct sec_info {
  int line;           /* line of its [header] */
  int seen[NKEYS];    /* line of each key's first occurrence */
  size_t ncert, nkey; /* a listener's cert and key lines so far */
};

/* The value being collected: a key line and its continuation lines. */
struct pending {
  int active;
  const struct key_def *k; /* NULL: collected, then thrown away */
  int line;                /* the key's line */
  int last;                /* its last continuation line */
  char *val;
  size_t len, cap;
};

struct err_rec {
  int line; /* 0: about the whole file */
  int seq;
  char msg[PX_CONF_ERR_MSG];
};

struct loader {
  const char *name; /* the file, as messages name it */

  /* Input: fp, or text[0..textlen). push[] holds bytes read ahead. */
  FILE *fp;
  const char *text;
  size_t textlen, pos;
  unsigned char push[3];
  int npush;
  int read_errno; /* EFBIG: more than PX_CONF_MAX_FILE */
  size_t nread;

  int lineno;
  int have_prev; /* inih's prev_name is not empty */
  enum line_class cls;
  const char *buf; /* inih's line buffer, and its size */
  size_t bufsize;

  /* The current section. A duplicate section is parsed into the scratch_*
   * structs (so its values are still checked) and then thrown away. */
  enum sec_kind kind;
  size_t idx;
  int scratch;
  struct sec_info *info;

  struct pending pend;

  struct px_conf *c;
  struct sec_info main_info;
  /* Parallel to c->listeners, c->upstreams, c->filters. */
  struct sec_info *linfo, *uinfo, *finfo;
  size_t lcap, ucap, fcap;

  struct px_conf scratch_main;
  struct px_conf_listener scratch_l;
  struct px_conf_upstream scratch_u;
  struct px_conf_filter scratch_f;
  struct sec_info scratch_info;

  struct err_rec errs[PX_CONF_MAX_ERRORS];
  int nerrs, nmore;
  int oom;
};

/* strerror() may use a static buffer; strerror_r() comes in an XSI (int)
 * and a GNU (char *) flavour depending on feature macros set by the build.
 * These two adapters make either one usable. */
static PX_UNUSED const char *strerror_gnu(char *r, char *buf)
{
  (void)buf;
  return r;
}

static PX_UNUSED const char *strerror_xsi(int r, char *buf)
{
  return r == 0 ? buf : "unknown error";
}

#define ERRSTR(e, buf)                                                         \
  _Generic(strerror_r((e), (buf), sizeof(buf)), char *: strerror_gnu,      \
           default: strerror_xsi)(strerror_r((e), (buf), sizeof(buf)), (buf))

const char *px_conf_show(char buf[static PX_CONF_SHOW + 4], const char *s)
{
  size_t i;

  for (i = 0; s[i] != '\0' && i < PX_CONF_SHOW; i++)
    buf[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
  if (s[i] != '\0') {
    memcpy(buf + i, "...", 3);
    i += 3;
  }
  buf[i] = '\0';
  return buf;
}

static PX_PRINTF(3, 4) void errorf(struct loader *L, int line, const char *fmt,
                                   ...)
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
static PX_PRINTF(2, 3) void bad(struct loader *L, const char *fmt, ...)
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
  errorf(L, L->pend.line, "%s%s%s", msg, joined, hint);
}

static void oom(struct loader *L)
{
  L->oom = 1;
}

static char *xstrdup(struct loader *L, const char *s)
{
  char *p = strdup(s);

  if (p == NULL)
    oom(L);
  return p;
}

/* Section names and references: [A-Za-z0-9_.-]{1,64}. */
static int is_name(const char *s)
{
  size_t n = strlen(s);

  if (n == 0 || n > PX_CONF_MAX_NAME)
    return 0;
  return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                   "0123456789_.-") == n;
}

/* Strictly decimal, no sign, no spaces, at least one digit. */
static int parse_u64(const char *s, uint64_t *out, const char **end)
{
  uint64_t n = 0;
  const char *p = s;

  if (!isdigit((unsigned char)*p))
    return -EINVAL;
  for (; isdigit((unsigned char)*p); p++) {
    unsigned d = (unsigned)(*p - '0');
    if (n > (UINT64_MAX - d) / 10)
      return -EINVAL;
    n = n * 10 + d;
  }
  *out = n;
  if (end != NULL)
    *end = p;
  else if (*p != '\0')
    return -EINVAL;
  return 0;
}

int px_conf_parse_duration(const char *s, uint64_t *ms)
{
  static const struct {
    const char *unit;
    uint64_t ms;
  } units[] = {
    { "", MS_S }, { "ms", 1 }, { "s", MS_S }, { "m", MS_M }, { "h", MS_H },
  };
  const char *end;
  uint64_t n;
  size_t i;

  if (s == NULL || parse_u64(s, &n, &end) != 0)
    return -EINVAL;
  for (i = 0; i < sizeof units / sizeof *units; i++) {
    if (strcmp(end, units[i].unit) != 0)
      continue;
    if (n > UINT64_MAX / units[i].ms)
      return -EINVAL;
    *ms = n * units[i].ms;
    return 0;
  }
  return -EINVAL;
}

int px_conf_parse_size(const char *s, uint64_t *bytes)
{
  const char *end;
  uint64_t n, mult;

  if (s == NULL || parse_u64(s, &n, &end) != 0)
    return -EINVAL;
  if (end[0] == '\0')
    mult = 1;
  else if (end[1] != '\0')
    return -EINVAL;
  else if (end[0] == 'K' || end[0] == 'k')
    mult = UINT64_C(1) << 10;
  else if (end[0] == 'M' || end[0] == 'm')
    mult = UINT64_C(1) << 20;
  else if (end[0] == 'G' || end[0] == 'g')
    mult = UINT64_C(1) << 30;
  else
    return -EINVAL;
  if (n > UINT64_MAX / mult)
    return -EINVAL;
  *bytes = n * mult;
  return 0;
}

int px_conf_parse_bool(const char *s, int *b)
{
  static const char *const yes[] = { "yes", "on", "true", "1" };
  static const char *const no[] = { "no", "off", "false", "0" };
  size_t i;

  if (s == NULL)
    return -EINVAL;
  for (i = 0; i < sizeof yes / sizeof *yes; i++) {
    if (strcasecmp(s, yes[i]) == 0) {
      *b = 1;
      return 0;
    }
    if (strcasecmp(s, no[i]) == 0) {
      *b = 0;
      return 0;
    }
  }
  return -EINVAL;
}

static int is_ip(const char *host)
{
  unsigned char a[16];

  return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

/* The host part of host:port without brackets: a DNS name or an IPv4
 * address. Something made only of digits and dots must be a valid IPv4
 * address, or "1.2.3.999" would be looked up as a name at connect time. */
static int is_host(const char *h)
{
  unsigned char a[4];
  size_t n = strlen(h);

  if (n == 0 || n > 253 || h[0] == '.' || h[0] == '-')
    return 0;
  if (strspn(h, "0123456789.") == n)
    return inet_pton(AF_INET, h, a) == 1;
  return strspn(h, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                   "0123456789.-_") == n;
}

/* Splits "host:port" or "[v6]:port". On success returns 0 with *host and
 * *port malloc'ed (host without brackets, port in canonical decimal). On
 * failure returns -EINVAL with *why saying what is wrong, or -ENOMEM. */
int px_conf_split_hostport(const char *s, char **host, char **port,
                           const char **why)
{
  char hbuf[256];
  char pbuf[8];
  const char *h, *p, *colon;
  size_t hlen;
  uint64_t n;

  *host = *port = NULL;
  if (strpbrk(s, " \t") != NULL) {
    *why = "unexpected space";
    return -EINVAL;
  }
  if (s[0] == '[') {
    const char *close = strchr(s, ']');
    unsigned char a[16];
    if (close == NULL) {
      *why = "missing \"]\" after the IPv6 address";
      return -EINVAL;
    }
    h = s + 1;
    hlen = (size_t)(close - h);
    if (close[1] != ':') {
      *why = "missing \":PORT\" after \"]\"";
      return -EINVAL;
    }
    p = close + 2;
    if (hlen == 0 || hlen >= sizeof hbuf) {
      *why = "bad IPv6 address in brackets";
      return -EINVAL;
    }
    memcpy(hbuf, h, hlen);
    hbuf[hlen] = '\0';
    if (inet_pton(AF_INET6, hbuf, a) != 1) {
      *why = "bad IPv6 address in brackets";
      return -EINVAL;
    }
  } else {
    colon = strrchr(s, ':');
    if (colon == NULL) {
      *why = "missing \":PORT\"";
      return -EINVAL;
    }
    h = s;
    hlen = (size_t)(colon - h);
    p = colon + 1;
    if (hlen == 0) {
      *why = "missing host before \":\"";
      return -EINVAL;
    }
    if (memchr(h, ':', hlen) != NULL) {
      *why = "an IPv6 address needs brackets, as in [::1]:110";
      return -EINVAL;
    }
    if (hlen == 1 && h[0] == '*') {
      *why = "\"*\" is not supported: use 0.0.0.0 or [::]";
      return -EINVAL;
    }
    if (hlen >= sizeof hbuf) {
      *why = "bad host name";
      return -EINVAL;
    }
    memcpy(hbuf, h, hlen);
    hbuf[hlen] = '\0';
    if (!is_host(hbuf)) {
      *why = "bad host name";
      return -EINVAL;
    }
  }
  if (parse_u64(p, &n, NULL) != 0 || n < 1 || n > 65535) {
    *why = "the port must be a number from 1 to 65535";
    return -EINVAL;
  }
  snprintf(pbuf, sizeof pbuf, "%u", (unsigned)n);
  *host = strdup(hbuf);
  *port = strdup(pbuf);
  if (*host == NULL || *port == NULL) {
    free(*host);
    free(*port);
    *host = *port = NULL;
    return -ENOMEM;
  }
  return 0;
}

int px_conf_parse_hostport(const char *s, char **host, char **port)
{
  const char *why;

  if (s == NULL || host == NULL || port == NULL)
    return -EINVAL;
  return px_conf_split_hostport(s, host, port, &why);
}

static void hostport_free(struct px_conf_hostport *hp)
{
  free(hp->host);
  free(hp->port);
  hp->host = hp->port = NULL;
}

/* Formats hp for a message: brackets around an IPv6 host. */
static const char *hostport_str(char *buf, size_t n,
                                const struct px_conf_hostport *hp)
{
  if (strchr(hp->host, ':') != NULL)
    snprintf(buf, n, "[%s]:%s", hp->host, hp->port);
  else
    snprintf(buf, n, "%s:%s", hp->host, hp->port);
  return buf;
}

/* The same port on the same address (compared as addresses when both
 * are IP literals, so "::1" equals "0:0::1"). */
static int same_hostport(const struct px_conf_hostport *a,
                         const struct px_conf_hostport *b)
{
  unsigned char x[16], y[16];

  if (strcmp(a->port, b->port) != 0)
    return 0;
  if (inet_pton(AF_INET, a->host, x) == 1 &&
      inet_pton(AF_INET, b->host, y) == 1)
    return memcmp(x, y, 4) == 0;
  if (inet_pton(AF_INET6, a->host, x) == 1 &&
      inet_pton(AF_INET6, b->host, y) == 1)
    return memcmp(x, y, 16) == 0;
  return strcasecmp(a->host, b->host) == 0;
}

/* Durations and sizes as a user would write them, for range messages. */
static const char *duration_str(char *buf, size_t n, uint64_t ms)
{
  if (ms != 0 && ms % MS_H == 0)
    snprintf(buf, n, "%" PRIu64 "h", ms / MS_H);
  else if (ms != 0 && ms % MS_M == 0)
    snprintf(buf, n, "%" PRIu64 "m", ms / MS_M);
  else if (ms % MS_S == 0)
    snprintf(buf, n, "%" PRIu64 "s", ms / MS_S);
  else
    snprintf(buf, n, "%" PRIu64 "ms", ms);
  return buf;
}

static const char *size_str(char *buf, size_t n, uint64_t b)
{
  if (b != 0 && b % (UINT64_C(1) << 30) == 0)
    snprintf(buf, n, "%" PRIu64 "G", b >> 30);
  else if (b != 0 && b % (UINT64_C(1) << 20) == 0)
    snprintf(buf, n, "%" PRIu64 "M", b >> 20);
  else if (b != 0 && b % (UINT64_C(1) << 10) == 0)
    snprintf(buf, n, "%" PRIu64 "K", b >> 10);
  else
    snprintf(buf, n, "%" PRIu64, b);
  return buf;
}

/* ---- values with their range, as every key reports them ---- */

int px_conf_value_uint(const char *key, const char *v, uint64_t min,
                       uint64_t max, unsigned *out, char *err, size_t errlen)
{
  char q[PX_CONF_SHOW + 4];
  uint64_t n;

  if (parse_u64(v, &n, NULL) != 0) {
    snprintf(err, errlen,
             "bad number \"%s\" for %s (use a whole number from %" PRIu64
             " to %" PRIu64 ")",
             px_conf_show(q, v), key, min, max);
    return -EINVAL;
  }
  if (n < min || n > max) {
    snprintf(err, errlen, "%s = %s is out of range (%" PRIu64 "..%" PRIu64 ")",
             key, px_conf_show(q, v), min, max);
    return -EINVAL;
  }
  *out = (unsigned)n;
  return 0;
}

int px_conf_value_size(const char *key, const char *v, uint64_t min,
                       uint64_t max, uint64_t *out, char *err, size_t errlen)
{
  char q[PX_CONF_SHOW + 4], lo[32], hi[32];
  uint64_t n;

  if (px_conf_parse_size(v, &n) != 0) {
    snprintf(err, errlen, "bad size \"%s\" for %s (use e.g. 512, 64K, 1M)",
             px_conf_show(q, v), key);
    return -EINVAL;
  }
  if (n < min || n > max) {
    snprintf(err, errlen, "%s = %s is out of range (%s..%s)", key,
             px_conf_show(q, v), size_str(lo, sizeof lo, min),
             size_str(hi, sizeof hi, max));
    return -EINVAL;
  }
  *out = n;
  return 0;
}

static int duration_value(const char *key, const char *v, uint64_t min,
                          uint64_t max, const char *min_why, uint64_t *out,
                          char *err, size_t errlen)
{
  char q[PX_CONF_SHOW + 4], lo[32], hi[32];
  uint64_t ms;

  if (px_conf_parse_duration(v, &ms) != 0) {
    snprintf(err, errlen, "bad duration \"%s\" for %s (use e.g. 30s, 10m, 1h)",
             px_conf_show(q, v), key);
    return -EINVAL;
  }
  if (ms < min && min_why != NULL) {
    snprintf(err, errlen, "%s = %s is below %s: %s", key, px_conf_show(q, v),
             duration_str(lo, sizeof lo, min), min_why);
    return -EINVAL;
  }
  if (ms < min || ms > max) {
    snprintf(err, errlen, "%s = %s is out of range (%s..%s)", key,
             px_conf_show(q, v), duration_str(lo, sizeof lo, min),
             duration_str(hi, sizeof hi, max));
    return -EINVAL;
  }
  *out = ms;
  return 0;
}

int px_conf_value_duration(const char *key, const char *v, uint64_t min,
                           uint64_t max, uint64_t *out, char *err,
                           size_t errlen)
{
  return duration_value(key, v, min, max, NULL, out, err, errlen);
}

/* ---- value parsers (one per field type; see keys[]) ---- */

/* "auto" (stored as 0, resolved in finish()) or a number in range. */
static int p_auto_uint(struct loader *L, const struct key_def *k, const char *v,
                       void *base)
{
  char q[PX_CONF_SHOW + 4];
  uint64_t n;

  if (strcasecmp(v, "auto") == 0) {
    *FIELD(base, k->off, unsigned) = 0; /* resolved in finish() */
    return 0;
  }
  if (parse_u64(v, &n, NULL) != 0) {
    bad(L,
        "bad value \"%s\" for %s (use auto or a number from %" PRIu64
        " to %" PRIu64 ")",
        px_conf_show(q, v), k->name, k->min, k->max);
    return -EINVAL;
  }
  if (n < k->min || n > k->max) {
    bad(L, "%s = %s is out of range (use auto or %" PRIu64 "..%" PRIu64 ")",
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
    bad(L, "%s", msg);
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
                  duration_value(k->name, v, k->min, k->max, k->min_why,
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
    bad(L, "bad value \"%s\" for %s (use yes or no)", px_conf_show(q, v),
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
    bad(L, "bad value \"%s\" for %s (use off, starttls or implicit)",
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
  bad(L, "bad value \"%s\" for %s (use error, warn, info or debug)",
      px_conf_show(q, v), k->name);
  return -EINVAL;
}

static int has_ctl(const char *s)
{
  for (; *s != '\0'; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f)
      return 1;
  return 0;
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
  } else if (v[0] == '/' && v[strlen(v) - 1] != '/' && !has_ctl(v)) {
    t = PX_LOGT_FILE;
    if ((path = xstrdup(L, v)) == NULL)
      return -ENOMEM;
  } else {
    bad(L,
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

  if (v[0] == '-' || strlen(v) > 32 || !is_name(v)) {
    bad(L, "bad value \"%s\" for %s (use a user name such as popgate)",
        px_conf_show(q, v), k->name);
    return -EINVAL;
  }
  if ((s = xstrdup(L, v)) == NULL)
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
    oom(L);
    return rc;
  }
  if (rc != 0) {
    bad(L, "bad address \"%s\" for %s: %s", px_conf_show(q, v), k->name, why);
    return rc;
  }
  if ((k->flags & KEY_IP_ONLY) && !is_ip(hp->host)) {
    bad(L,
        "bad address \"%s\" for %s: the host must be an IP address, "
        "such as 127.0.0.1, 0.0.0.0, [::1] or [::]",
        px_conf_show(q, v), k->name);
    hostport_free(hp);
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
  hostport_free(dst);
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
    hostport_free(&hp);
    oom(L);
    return -ENOMEM;
  }
  *arr = grown;
  (*arr)[(*n)++] = hp;
  return 0;
}

/* The NAME of another section; resolved in finish(). */
static int p_ref(struct loader *L, const struct key_def *k, const char *v,
                 void *base)
{
  char q[PX_CONF_SHOW + 4];
  char **dst = FIELD(base, k->off, char *);
  char *s;

  if (!is_name(v)) {
    bad(L, "bad value \"%s\" for %s (the NAME of an [%s:NAME] section)",
        px_conf_show(q, v), k->name, k->name);
    return -EINVAL;
  }
  if ((s = xstrdup(L, v)) == NULL)
    return -ENOMEM;
  free(*dst);
  *dst = s;
  return 0;
}

/* A list of [filter:NAME] names, separated by commas and/or spaces
 * (continuation lines arrive joined with a space). "" is the empty list.
 * Fills the name array at k->off and its length at k->off_n; finish()
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
      bad(L,
          "bad value \"%s\" for %s (names of [filter:NAME] sections, "
          "separated by commas or spaces)",
          px_conf_show(q, v), k->name);
      goto fail;
    }
    memcpy(word, v + i, wl < sizeof word ? wl : sizeof word - 1);
    word[wl < sizeof word ? wl : sizeof word - 1] = '\0';
    if (!is_name(word)) {
      bad(L,
          "bad name \"%s%s\" in %s (the NAME of a [filter:NAME] section; "
          "separate names with commas or spaces)",
          px_conf_show(q, word), wl < sizeof word ? "" : "...", k->name);
      goto fail;
    }
    for (j = 0; j < n; j++) {
      if (strcmp(names[j], word) == 0) {
        bad(L, "filter \"%s\" is listed twice in %s", word, k->name);
        goto fail;
      }
    }
    grown = realloc(names, (n + 1) * sizeof *names);
    if (grown == NULL)
      goto nomem;
    names = grown;
    if ((names[n] = xstrdup(L, word)) == NULL)
      goto fail;
    n++;
    i += wl;
    i += strspn(v + i, " \t");
    if (v[i] == ',') {
      i++;
      i += strspn(v + i, " \t");
      if (i == len) { /* a final comma */
        bad(L,
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
  oom(L);
fail:
  for (j = 0; j < n; j++)
    free(names[j]);
  free(names);
  return L->oom ? -ENOMEM : -EINVAL;
}

/* ---- filter values ---- */

/* names[0..n) as "a, b or c", for messages. */
static const char *names_str(char *buf, size_t size, const char *const *names,
                             int n)
{
  size_t used = 0;
  int i, w;

  buf[0] = '\0';
  for (i = 0; i < n && used < size; i++) {
    w = snprintf(buf + used, size - used, "%s%s",
                 i == 0       ? ""
                 : i == n - 1 ? " or "
                              : ", ",
                 names[i]);
    if (w < 0)
      break;
    used += (size_t)w;
  }
  return buf;
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
  bad(L, "bad value \"%s\" for %s (use %s)", px_conf_show(q, v), k->name,
      names_str(list, sizeof list, names, n));
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

/* What keeps path from being a directory this process can create files
 * in, into buf ("" when nothing does). access() asks with the real uid:
 * -t run as the user popgate runs as tells the truth. */
static const char *dir_problem(const char *path, char *buf, size_t size)
{
  char ebuf[128];
  struct stat st;
  int e;

  buf[0] = '\0';
  if (stat(path, &st) == -1) {
    e = errno;
    snprintf(buf, size, "%s", ERRSTR(e, ebuf));
  } else if (!S_ISDIR(st.st_mode)) {
    snprintf(buf, size, "not a directory");
  } else if (access(path, W_OK | X_OK) == -1) {
    e = errno;
    snprintf(buf, size, "not writable: %s", ERRSTR(e, ebuf));
  }
  return buf;
}

/* Copies an absolute directory path into the field (a final "/" is fine);
 * 0, -EINVAL (reported) or -ENOMEM. */
static int dir_path_value(struct loader *L, const struct key_def *k,
                          const char *v, void *base)
{
  char q[PX_CONF_SHOW + 4];
  char **dst = FIELD(base, k->off, char *);
  char *s;

  if (v[0] != '/' || has_ctl(v)) {
    bad(L, "bad value \"%s\" for %s (use an absolute directory path)",
        px_conf_show(q, v), k->name);
    return -EINVAL;
  }
  if ((s = xstrdup(L, v)) == NULL)
    return -ENOMEM;
  free(*dst);
  *dst = s;
  return 0;
}

/* spool_dir: only the form here; finish() checks the directory when some
 * listener has filters (the default too). */
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
  if (dir_problem(v, why, sizeof why)[0] != '\0') {
    bad(L, "cannot use %s \"%s\": %s", k->name, px_conf_show(q, v), why);
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

  if (v[0] != '/' || has_ctl(v)) {
    bad(L,
        "bad value \"%s\" for %s (use the absolute path of a directory or "
        "a file)",
        px_conf_show(q, v), k->name);
    return -EINVAL;
  }
  if (stat(v, &st) == -1) {
    e = errno;
    bad(L, "cannot use %s \"%s\": %s", k->name, px_conf_show(q, v),
        ERRSTR(e, ebuf));
    return -EINVAL;
  }
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
    bad(L, "cannot use %s \"%s\": not a directory or a regular file", k->name,
        px_conf_show(q, v));
    return -EINVAL;
  }
  if (access(v, S_ISDIR(st.st_mode) ? R_OK | X_OK : R_OK) == -1) {
    e = errno;
    bad(L, "cannot use %s \"%s\": not readable: %s", k->name,
        px_conf_show(q, v), ERRSTR(e, ebuf));
    return -EINVAL;
  }
  if ((s = xstrdup(L, v)) == NULL)
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
    if (has_ctl(v) || v[n - 1] == '/') {
      bad(L,
          "bad value \"%s\" for %s (use the absolute path of clamd's unix "
          "socket, or host:port)",
          px_conf_show(q, v), k->name);
      return -EINVAL;
    }
    if (n >= sizeof((struct sockaddr_un *)NULL)->sun_path) {
      bad(L,
          "%s path \"%s\" is longer than %zu characters (the limit of a "
          "unix socket address)",
          k->name, px_conf_show(q, v),
          sizeof((struct sockaddr_un *)NULL)->sun_path - 1);
      return -EINVAL;
    }
    s = xstrdup(L, v);
  } else {
    rc = px_conf_split_hostport(v, &hp.host, &hp.port, &why);
    if (rc == -ENOMEM) {
      oom(L);
      return rc;
    }
    if (rc != 0) {
      bad(L,
          "bad value \"%s\" for %s: %s (use the absolute path of clamd's "
          "unix socket, or host:port)",
          px_conf_show(q, v), k->name, why);
      return rc;
    }
    n = strlen(hp.host) + strlen(hp.port) + 4;
    if ((s = malloc(n)) == NULL)
      oom(L);
    else
      hostport_str(s, n, &hp);
    hostport_free(&hp);
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
    bad(L,
        "bad value \"%s\" for %s (the program's absolute path, then its "
        "arguments, separated by spaces; no shell)",
        px_conf_show(q, v), k->name);
    return -EINVAL;
  }
  /* Words: at most one per two characters, plus the NULL. */
  argv = calloc(strlen(v) / 2 + 2, sizeof *argv);
  if (argv == NULL) {
    oom(L);
    return -ENOMEM;
  }
  for (i = 0; v[i] != '\0'; i += wl) {
    i += strspn(v + i, " \t");
    wl = strcspn(v + i, " \t");
    if (wl == 0)
      break;
    if ((argv[n] = strndup(v + i, wl)) == NULL) {
      argv_free(argv);
      oom(L);
      return -ENOMEM;
    }
    n++;
  }
  if (stat(argv[0], &st) == -1) {
    e = errno;
    bad(L, "cannot run %s \"%s\": %s", k->name, px_conf_show(q, argv[0]),
        ERRSTR(e, ebuf));
  } else if (!S_ISREG(st.st_mode)) {
    bad(L, "cannot run %s \"%s\": not a regular file", k->name,
        px_conf_show(q, argv[0]));
  } else if (access(argv[0], X_OK) == -1) {
    e = errno;
    bad(L, "cannot run %s \"%s\": not executable: %s", k->name,
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
    bad(L,
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
    bad(L,
        "bad header name \"%s\" in %s (1 to %d printable ASCII characters, "
        "no space or \":\", as in X-Scanned-By)",
        px_conf_show(q, nb), k->name, PX_HDR_NAME_MAX);
    return -EINVAL;
  }
  for (p = colon + 1; *p != '\0'; p++)
    if (((unsigned char)*p < 0x20 && *p != '\t') || (unsigned char)*p > 0x7e)
      break;
  if (*p != '\0') {
    bad(L,
        "bad header value in %s = %s (printable ASCII characters and tabs "
        "only)",
        k->name, px_conf_show(q, v));
    return -EINVAL;
  }
  if (strlen(v) > PX_HDR_LINE_MAX) {
    bad(L, "%s = %s is longer than %d characters (the line limit of RFC 5322)",
        k->name, px_conf_show(q, v), PX_HDR_LINE_MAX);
    return -EINVAL;
  }
  grown = realloc(*arr, (*n + 1) * sizeof **arr);
  if (grown == NULL) {
    oom(L);
    return -ENOMEM;
  }
  *arr = grown;
  if ((s = xstrdup(L, v)) == NULL)
    return -ENOMEM;
  (*arr)[(*n)++] = s;
  return 0;
}

/* ---- TLS values ---- */

/* A file that tls.c will load later: an absolute path (the working
 * directory of "popgate -t" is not the daemon's) to a regular file that
 * can be opened for reading now. Only that: OpenSSL judges the content.
 * stat() comes first so that a device or a FIFO is never opened.
 * On return *out holds a copy of v whatever the verdict (NULL only when
 * memory is short), so that cert and key lines still pair up after an
 * error. Returns 0, -EINVAL (reported) or -ENOMEM. */
static int file_value(struct loader *L, const struct key_def *k, const char *v,
                      char **out)
{
  char q[PX_CONF_SHOW + 4], ebuf[128];
  struct stat st;
  int fd, e;

  if ((*out = xstrdup(L, v)) == NULL)
    return -ENOMEM;
  if (v[0] != '/' || v[strlen(v) - 1] == '/' || has_ctl(v)) {
    bad(L, "bad value \"%s\" for %s (use an absolute file path)",
        px_conf_show(q, v), k->name);
    return -EINVAL;
  }
  if (stat(v, &st) == -1) {
    e = errno;
    bad(L, "cannot read %s \"%s\": %s", k->name, px_conf_show(q, v),
        ERRSTR(e, ebuf));
    return -EINVAL;
  }
  if (!S_ISREG(st.st_mode)) {
    bad(L, "cannot read %s \"%s\": not a regular file", k->name,
        px_conf_show(q, v));
    return -EINVAL;
  }
  fd = open(v, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd == -1) {
    e = errno;
    bad(L, "cannot read %s \"%s\": %s", k->name, px_conf_show(q, v),
        ERRSTR(e, ebuf));
    return -EINVAL;
  }
  close(fd);
  return 0;
}

/* ca_file, and the upstream's one cert and key. */
static int p_file(struct loader *L, const struct key_def *k, const char *v,
                  void *base)
{
  char **dst = FIELD(base, k->off, char *);
  char *s;
  int rc = file_value(L, k, v, &s);

  if (s != NULL) {
    free(*dst);
    *dst = s;
  }
  return rc;
}

/* A listener's cert and key lines: the i-th cert and the i-th key, in file
 * order, fill slot i of the array at k->off (length at k->off_n), so either
 * may come first; the section's sec_info counts both. finish() reports a
 * slot with only one of the two. */
static int certkey_add(struct loader *L, const struct key_def *k, const char *v,
                       void *base, int is_key)
{
  struct px_conf_certkey **arr = FIELD(base, k->off, struct px_conf_certkey *);
  size_t *n = FIELD(base, k->off_n, size_t);
  size_t i = is_key ? L->info->nkey : L->info->ncert;
  struct px_conf_certkey *ck;
  char *s;
  int rc = file_value(L, k, v, &s);

  if (s == NULL)
    return rc;
  if (i == *n) {
    ck = realloc(*arr, (*n + 1) * sizeof **arr);
    if (ck == NULL) {
      free(s);
      oom(L);
      return -ENOMEM;
    }
    *arr = ck;
    memset(&ck[(*n)++], 0, sizeof *ck);
  }
  ck = &(*arr)[i];
  if (is_key) {
    ck->key = s;
    ck->key_line = L->pend.line;
    L->info->nkey++;
  } else {
    ck->cert = s;
    ck->line = L->pend.line;
    L->info->ncert++;
  }
  return rc;
}

static int p_cert(struct loader *L, const struct key_def *k, const char *v,
                  void *base)
{
  return certkey_add(L, k, v, base, 0);
}

static int p_key(struct loader *L, const struct key_def *k, const char *v,
                 void *base)
{
  return certkey_add(L, k, v, base, 1);
}

/* TLSv1.2 or TLSv1.3, stored as OpenSSL's version number. */
static int p_tls_version(struct loader *L, const struct key_def *k,
                         const char *v, void *base)
{
  static const struct {
    const char *name;
    int version;
  } ok[] = { { "TLSv1.2", TLS1_2_VERSION }, { "TLSv1.3", TLS1_3_VERSION } };
  static const char *const old[] = { "SSLv2", "SSLv3", "TLSv1", "TLSv1.0",
                                     "TLSv1.1" };
  char q[PX_CONF_SHOW + 4];
  size_t i;

  for (i = 0; i < sizeof ok / sizeof *ok; i++) {
    if (strcasecmp(v, ok[i].name) == 0) {
      *FIELD(base, k->off, int) = ok[i].version;
      return 0;
    }
  }
  for (i = 0; i < sizeof old / sizeof *old; i++) {
    if (strcasecmp(v, old[i]) == 0) {
      bad(L, "%s = %s is not allowed (RFC 8996/8997: TLS 1.2 or later)",
          k->name, old[i]);
      return -EINVAL;
    }
  }
  bad(L, "bad value \"%s\" for %s (use TLSv1.2 or TLSv1.3)", px_conf_show(q, v),
      k->name);
  return -EINVAL;
}

/* An OpenSSL cipher string for TLS 1.2 and below. Continuation lines were
 * joined with spaces, which OpenSSL takes as separators like ":". OpenSSL
 * itself is the judge, on a context made for the purpose: it skips words
 * it does not know and fails only when nothing at all matches. */
static int p_ciphers(struct loader *L, const struct key_def *k, const char *v,
                     void *base)
{
  char q[PX_CONF_SHOW + 4];
  char **dst = FIELD(base, k->off, char *);
  SSL_CTX *ctx;
  char *s;
  int ok;

  if (has_ctl(v)) {
    bad(L, "bad value \"%s\" for %s (an OpenSSL cipher string)",
        px_conf_show(q, v), k->name);
    return -EINVAL;
  }
  ERR_clear_error();
  ctx = SSL_CTX_new(TLS_method());
  if (ctx == NULL) {
    ERR_clear_error();
    errorf(L, L->pend.line,
           "cannot check %s: OpenSSL could not make a TLS context", k->name);
    return -EINVAL;
  }
  ok = SSL_CTX_set_cipher_list(ctx, v) == 1;
  SSL_CTX_free(ctx);
  ERR_clear_error();
  if (!ok) {
    errorf(L, L->pend.line,
           "%s = %s matches no TLS 1.2 cipher of this OpenSSL (use a cipher "
           "string such as ECDHE+AESGCM:ECDHE+CHACHA20; TLS 1.3 suites are "
           "not set here)",
           k->name, px_conf_show(q, v));
    return -EINVAL;
  }
  if ((s = xstrdup(L, v)) == NULL)
    return -ENOMEM;
  free(*dst);
  *dst = s;
  return 0;
}

/* A DNS name: dot-separated labels of 1..63 letters, digits, "-" (not at
 * either end) and "_", 253 characters at most, no final dot. Digits and
 * dots alone are left to the IPv4 check. */
static int is_dns_name(const char *s)
{
  size_t n = strlen(s), i, label = 0;

  if (n == 0 || n > 253 || strspn(s, "0123456789.") == n)
    return 0;
  for (i = 0; i < n; i++) {
    if (s[i] == '.') {
      if (label == 0 || s[i - 1] == '-')
        return 0;
      label = 0;
      continue;
    }
    if (strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
               "0123456789-_",
               s[i]) == NULL)
      return 0;
    if ((s[i] == '-' && label == 0) || ++label > 63)
      return 0;
  }
  return label > 0 && s[n - 1] != '-';
}

/* The name the upstream's certificate must match, sent as SNI unless it is
 * an IP address. */
static int p_server_name(struct loader *L, const struct key_def *k,
                         const char *v, void *base)
{
  char q[PX_CONF_SHOW + 4];
  char **dst = FIELD(base, k->off, char *);
  char *s;

  if (!is_ip(v) && !is_dns_name(v)) {
    bad(L,
        "bad value \"%s\" for %s (use a DNS name such as mail.example or an "
        "IP address, without port or brackets)",
        px_conf_show(q, v), k->name);
    return -EINVAL;
  }
  if ((s = xstrdup(L, v)) == NULL)
    return -ENOMEM;
  free(*dst);
  *dst = s;
  return 0;
}

/* ---- sections ---- */

static void main_defaults(struct px_conf *c)
{
  c->workers = 0; /* auto */
  c->log_target = PX_LOGT_STDERR;
  c->log_level = PX_LOG_INFO;
  c->shutdown_timeout_ms = 30 * MS_S;
  /* spool_dir: finish() sets the default. */
  c->memory_per_message = SZ_M;
  c->max_message_size = 256 * SZ_M;
  c->memory_budget = 256 * SZ_M;
  c->scan_threads = 0; /* auto */
}

static void listener_defaults(struct px_conf_listener *l)
{
  memset(l, 0, sizeof *l);
  l->tls = PX_TLS_OFF;
  l->tls_min_version = TLS1_2_VERSION;
  l->handshake_timeout_ms = 30 * MS_S;
  /* require_tls: its default depends on tls; finish() sets it. */
  l->max_clients = 10000;
  l->max_clients_per_ip = 50;
  l->idle_timeout_ms = 10 * MS_M;
  l->login_timeout_ms = 3 * MS_M;
  l->max_errors = 10;
}

static void upstream_defaults(struct px_conf_upstream *u)
{
  memset(u, 0, sizeof *u);
  u->tls = PX_TLS_OFF;
  u->verify = 1;
  u->connect_timeout_ms = 10 * MS_S;
  u->timeout_ms = 10 * MS_M;
  u->max_response_line = 1024;
}

/* The defaults of every type; database's depends on the type, so finish()
 * sets it. */
static void filter_defaults(struct px_conf_filter *f)
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

static void main_free(struct px_conf *c)
{
  free(c->path);
  free(c->user);
  free(c->log_path);
  hostport_free(&c->metrics);
  free(c->spool_dir);
  c->path = c->user = c->log_path = c->spool_dir = NULL;
}

static void certkey_free(struct px_conf_certkey *ck)
{
  free(ck->cert);
  free(ck->key);
  ck->cert = ck->key = NULL;
}

static void listener_free(struct px_conf_listener *l)
{
  size_t i;

  free(l->name);
  hostport_free(&l->bind);
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

static void upstream_free(struct px_conf_upstream *u)
{
  size_t i;

  free(u->name);
  for (i = 0; i < u->nservers; i++)
    hostport_free(&u->servers[i]);
  free(u->servers);
  free(u->ca_file);
  free(u->server_name);
  certkey_free(&u->client);
  u->name = u->ca_file = u->server_name = NULL;
  u->servers = NULL;
  u->nservers = 0;
}

static void filter_free(struct px_conf_filter *f)
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

static void conf_free(struct px_conf *c)
{
  size_t i;

  if (c == NULL)
    return;
  main_free(c);
  for (i = 0; i < c->nlisteners; i++)
    listener_free(&c->listeners[i]);
  for (i = 0; i < c->nupstreams; i++)
    upstream_free(&c->upstreams[i]);
  for (i = 0; i < c->nfilters; i++)
    filter_free(&c->filters[i]);
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
    snprintf(buf, n, "[%s:%s]", sec_kind_names[L->kind], name);
  else
    snprintf(buf, n, "[%s]", sec_kind_names[L->kind]);
  return buf;
}

/* Drops what a duplicate section collected. */
static void end_section(struct loader *L)
{
  if (L->scratch) {
    main_free(&L->scratch_main);
    listener_free(&L->scratch_l);
    upstream_free(&L->scratch_u);
    filter_free(&L->scratch_f);
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
  main_defaults(&L->scratch_main);
  listener_defaults(&L->scratch_l);
  upstream_defaults(&L->scratch_u);
  filter_defaults(&L->scratch_f);
  if (kind == SEC_LISTENER)
    L->scratch_l.name = xstrdup(L, name);
  else if (kind == SEC_UPSTREAM)
    L->scratch_u.name = xstrdup(L, name);
  else if (kind == SEC_FILTER)
    L->scratch_f.name = xstrdup(L, name);
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
  char *s = xstrdup(L, name);

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
      oom(L);
      return -ENOMEM;
    }
    *cap = ncap;
  }
  if (kind == SEC_LISTENER) {
    listener_defaults(&c->listeners[*n]);
    c->listeners[*n].name = s;
    c->listeners[*n].line = L->lineno;
  } else if (kind == SEC_UPSTREAM) {
    upstream_defaults(&c->upstreams[*n]);
    c->upstreams[*n].name = s;
    c->upstreams[*n].line = L->lineno;
  } else {
    filter_defaults(&c->filters[*n]);
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
    errorf(L, line, "unexpected text \"%s\" after the section header",
           px_conf_show(q, after));
    return;
  }

  colon = strchr(inner, ':');
  name = colon != NULL ? colon + 1 : NULL;
  if (colon != NULL)
    *colon = '\0';
  for (i = SEC_MAIN; i < SEC_SKIP; i++)
    if (strcmp(inner, sec_kind_names[i]) == 0)
      kind = (enum sec_kind)i;

  if (kind == SEC_NONE) {
    if (colon != NULL)
      *colon = ':';
    errorf(L, line,
           "unknown section [%s] (use [popgate], [listener:NAME], "
           "[upstream:NAME] or [filter:NAME])",
           px_conf_show(q, inner));
    return;
  }
  if (kind == SEC_MAIN) {
    if (name != NULL) {
      errorf(L, line, "section [popgate] takes no name");
      return;
    }
    if (L->main_info.line != 0) {
      errorf(L, line, "duplicate section [popgate] (first at line %d)",
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
    errorf(L, line, "section [%s] needs a name: [%s:NAME]",
           sec_kind_names[kind], sec_kind_names[kind]);
    return;
  }
  if (!is_name(name)) {
    errorf(L, line,
           "bad section name \"%s\" in [%s:...] (use up to %d "
           "letters, digits, \"_\", \".\" and \"-\")",
           px_conf_show(q, name), sec_kind_names[kind], PX_CONF_MAX_NAME);
    return;
  }
  {
    struct sec_info **info;
    size_t *cap;

    n = *named_count(L, kind, &info, &cap);
    for (i = 0; i < n; i++) {
      if (strcmp(named_name(L, kind, i), name) == 0) {
        errorf(L, line, "duplicate section [%s:%s] (first at line %d)",
               sec_kind_names[kind], name, (*info)[i].line);
        begin_scratch(L, kind, name);
        return;
      }
    }
  }
  add_named(L, kind, name);
}

/* ---- values ---- */

static const struct key_def *find_key(enum sec_kind kind, const char *name)
{
  size_t i;

  for (i = 0; i < NKEYS; i++)
    if (keys[i].sec == kind && strcmp(keys[i].name, name) == 0)
      return &keys[i];
  return NULL;
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
      bad(L, "empty value for %s", k->name);
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
    errorf(L, p->line, "value of %s is longer than %d characters", p->k->name,
           PX_CONF_MAX_VALUE);
    p->k = NULL;
    return -1;
  }
  if (need > p->cap) {
    size_t ncap = p->cap ? p->cap : 256;
    char *nv;
    while (ncap < need)
      ncap *= 2;
    if ((nv = realloc(p->val, ncap)) == NULL) {
      oom(L);
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
  size_t i;

  p->active = 1;
  p->k = NULL;
  p->line = p->last = L->lineno;
  p->len = 0;

  if (L->kind == SEC_NONE) {
    errorf(L, L->lineno,
           "key \"%s\" outside of any section (put it under "
           "[popgate], [listener:NAME], [upstream:NAME] or [filter:NAME])",
           px_conf_show(q, name));
    return;
  }
  if (L->kind == SEC_SKIP)
    return;
  if (*name == '\0') {
    errorf(L, L->lineno, "missing key name before \"=\"");
    return;
  }
  k = find_key(L->kind, name);
  if (k == NULL) {
    const char *elsewhere = NULL;
    for (i = 0; i < NKEYS && elsewhere == NULL; i++)
      if (strcmp(keys[i].name, name) == 0)
        elsewhere = sec_kind_names[keys[i].sec];
    if (elsewhere != NULL)
      errorf(L, L->lineno, "unknown key \"%s\" in %s (%s belongs in [%s%s])",
             name, cur_label(L, sec, sizeof sec), name, elsewhere,
             strcmp(elsewhere, "popgate") == 0 ? "" : ":NAME");
    else
      errorf(L, L->lineno, "unknown key \"%s\" in %s", px_conf_show(q, name),
             cur_label(L, sec, sizeof sec));
    return;
  }
  if (k->parse == NULL) {
    errorf(L, L->lineno,
           "key \"%s\" in %s is not supported yet by this "
           "build",
           name, cur_label(L, sec, sizeof sec));
    return;
  }
  i = (size_t)(k - keys);
  if (L->info->seen[i] != 0 && !(k->flags & KEY_REPEATABLE)) {
    errorf(L, L->lineno, "duplicate key \"%s\" in %s (first at line %d)", name,
           cur_label(L, sec, sizeof sec), L->info->seen[i]);
    return;
  }
  if (L->info->seen[i] == 0)
    L->info->seen[i] = L->lineno;
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

static void internal_error(struct loader *L)
{
  errorf(L, L->lineno,
         "internal error: inih read this line differently "
         "(please report this)");
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
      errorf(L, L->lineno, "line longer than %zu characters", cap);
    else
      errorf(L, L->lineno, "line contains a NUL byte");
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
    errorf(L, L->lineno, "more than one byte order mark");
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
      errorf(L, L->lineno, "missing \"]\" in section header");
      end_section(L);
    }
    return str;
  }
  end = find_chars_or_comment(p, "=:");
  if (*end == '=' || *end == ':') {
    L->have_prev = end > p;
    L->cls = CLS_KEY;
  } else {
    errorf(L, L->lineno,
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

/* ---- after the last line ---- */

/* type: a filter's type, PX_FLT_COUNT when it has none (or for the other
 * sections, whose keys are of no type). A key for some filter types only
 * is required in sections of those types. */
static void check_required(struct loader *L, enum sec_kind kind,
                           const char *name, const struct sec_info *info,
                           enum px_filter_type type)
{
  unsigned t;
  size_t i;

  for (i = 0; i < NKEYS; i++) {
    if (keys[i].sec != kind || !(keys[i].flags & KEY_REQUIRED) ||
        info->seen[i] != 0)
      continue;
    t = keys[i].flags & KEY_T_ALL;
    if (t == 0)
      errorf(L, info->line, "missing required key \"%s\" in [%s:%s]",
             keys[i].name, sec_kind_names[kind], name);
    else if (type < PX_FLT_COUNT && (t & KEY_T(type)))
      errorf(L, info->line,
             "missing required key \"%s\" in [%s:%s] (type = %s needs %s)",
             keys[i].name, sec_kind_names[kind], name,
             px_filter_type_names[type],
             (keys[i].flags & KEY_REPEATABLE) ? "at least one" : "it");
  }
}

static size_t key_index(enum sec_kind kind, const char *name)
{
  return (size_t)(find_key(kind, name) - keys);
}

/* The line of key's first occurrence in a section; 0 when it has none. */
static int seen_line(const struct sec_info *info, enum sec_kind kind,
                     const char *key)
{
  return info->seen[key_index(kind, key)];
}

/* What only a whole [listener:NAME] tells about TLS. Also fills the *_line
 * fields and the default of require_tls, which depends on tls. */
static void finish_listener_tls(struct loader *L, struct px_conf_listener *l,
                                const struct sec_info *info)
{
  char q[PX_CONF_SHOW + 4];
  int cert_line = seen_line(info, SEC_LISTENER, "cert");
  int key_line = seen_line(info, SEC_LISTENER, "key");
  size_t i;

  l->tls_line = seen_line(info, SEC_LISTENER, "tls");
  l->ciphers_line = seen_line(info, SEC_LISTENER, "ciphers");
  l->require_tls_line = seen_line(info, SEC_LISTENER, "require_tls");
  if (l->require_tls_line == 0)
    l->require_tls = l->tls == PX_TLS_STARTTLS;

  if (l->tls == PX_TLS_OFF) {
    if (cert_line != 0 || key_line != 0)
      errorf(L,
             cert_line != 0 && (key_line == 0 || cert_line < key_line)
                 ? cert_line
                 : key_line,
             "cert/key without tls: [listener:%s] has tls = off (set tls = "
             "implicit or starttls, or remove cert and key)",
             l->name);
    if (l->require_tls)
      errorf(L, l->require_tls_line,
             "require_tls = yes on a tls = off listener would refuse every "
             "login");
    return;
  }
  if (l->ncerts == 0) {
    errorf(L, l->line,
           "tls = %s needs cert and key: add a cert = line and a key = line "
           "to [listener:%s]",
           px_tls_mode_names[l->tls], l->name);
    return;
  }
  for (i = 0; i < l->ncerts; i++) {
    const struct px_conf_certkey *ck = &l->certs[i];
    if (ck->key == NULL)
      errorf(L, ck->line,
             "cert \"%s\" without a key (cert and key lines pair up in "
             "order: the first key belongs to the first cert, and so on)",
             px_conf_show(q, ck->cert));
    else if (ck->cert == NULL)
      errorf(L, ck->key_line,
             "key \"%s\" without a cert (cert and key lines pair up in "
             "order: the first key belongs to the first cert, and so on)",
             px_conf_show(q, ck->key));
  }
}

/* The same for [upstream:NAME]: its client certificate is one optional
 * cert and key pair. */
static void finish_upstream_tls(struct loader *L, struct px_conf_upstream *u,
                                const struct sec_info *info)
{
  char q[PX_CONF_SHOW + 4];

  u->tls_line = seen_line(info, SEC_UPSTREAM, "tls");
  u->verify_line = seen_line(info, SEC_UPSTREAM, "verify");
  u->ca_file_line = seen_line(info, SEC_UPSTREAM, "ca_file");
  u->client.line = seen_line(info, SEC_UPSTREAM, "cert");
  u->client.key_line = seen_line(info, SEC_UPSTREAM, "key");
  if (u->client.cert != NULL && u->client.key == NULL)
    errorf(L, u->client.line,
           "cert \"%s\" without a key (a client certificate needs both cert "
           "and key)",
           px_conf_show(q, u->client.cert));
  else if (u->client.key != NULL && u->client.cert == NULL)
    errorf(L, u->client.key_line,
           "key \"%s\" without a cert (a client certificate needs both cert "
           "and key)",
           px_conf_show(q, u->client.key));
}

/* The types of a KEY_T_* mask, as "clamav, clamd or command". */
static const char *types_str(char *buf, size_t size, unsigned types)
{
  const char *names[PX_FLT_COUNT];
  int i, n = 0;

  for (i = 0; i < PX_FLT_COUNT; i++)
    if (types & KEY_T(i))
      names[n++] = px_filter_type_names[i];
  return names_str(buf, size, names, n);
}

/* What only a whole [filter:NAME] tells: its type's required keys, keys
 * of other types (type may come last), the default of database. */
static void finish_filter(struct loader *L, struct px_conf_filter *f,
                          const struct sec_info *info)
{
  char list[64];
  unsigned t;
  size_t i;

  f->database_line = seen_line(info, SEC_FILTER, "database");
  f->quarantine_line = seen_line(info, SEC_FILTER, "quarantine_dir");
  /* No type, or a bad one (reported already): nothing to check against. */
  check_required(L, SEC_FILTER, f->name, info, f->type);
  if (f->type >= PX_FLT_COUNT)
    return;
  for (i = 0; i < NKEYS; i++) {
    t = keys[i].flags & KEY_T_ALL;
    if (keys[i].sec != SEC_FILTER || info->seen[i] == 0 || t == 0 ||
        (t & KEY_T(f->type)))
      continue;
    errorf(L, info->seen[i], "key %s is for type = %s, this is type = %s",
           keys[i].name, types_str(list, sizeof list, t),
           px_filter_type_names[f->type]);
  }
  if (f->type == PX_FLT_CLAMAV && f->database == NULL)
    f->database = xstrdup(L, "/var/lib/clamav");
}

/* A listener's filters = names, as pointers into c->filters (complete
 * now: it may have moved while it grew). */
static void resolve_filters(struct loader *L, struct px_conf_listener *l,
                            const struct sec_info *info)
{
  struct px_conf *c = L->c;
  size_t i, j;

  l->filters_line = seen_line(info, SEC_LISTENER, "filters");
  if (l->nfilters == 0)
    return;
  l->filters = calloc(l->nfilters, sizeof *l->filters);
  if (l->filters == NULL) {
    oom(L);
    return;
  }
  for (i = 0; i < l->nfilters; i++) {
    for (j = 0; j < c->nfilters; j++)
      if (strcmp(c->filters[j].name, l->filter_names[i]) == 0)
        l->filters[i] = &c->filters[j];
    if (l->filters[i] == NULL)
      errorf(L, l->filters_line,
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
  int mpm_line = seen_line(mi, SEC_MAIN, "memory_per_message");
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
    line = seen_line(mi, SEC_MAIN, above[i].key);
    if (line != 0)
      errorf(L, line, "%s = %s is below memory_per_message = %s", above[i].key,
             size_str(a, sizeof a, v),
             size_str(b, sizeof b, c->memory_per_message));
    else
      errorf(L, mpm_line,
             "memory_per_message = %s is above %s (%s, the default)",
             size_str(b, sizeof b, c->memory_per_message), above[i].key,
             size_str(a, sizeof a, v));
  }

  c->spool_dir_line = seen_line(mi, SEC_MAIN, "spool_dir");
  if (c->spool_dir == NULL &&
      (c->spool_dir = xstrdup(L, "/var/spool/popgate")) == NULL)
    return;
  for (i = 0; i < c->nlisteners && user == NULL; i++)
    if (c->listeners[i].nfilters > 0)
      user = &c->listeners[i];
  if (user == NULL || dir_problem(c->spool_dir, why, sizeof why)[0] == '\0')
    return;
  if (c->spool_dir_line != 0)
    errorf(L, c->spool_dir_line, "cannot use spool_dir \"%s\": %s",
           c->spool_dir, why);
  else
    errorf(L, user->filters_line,
           "cannot use spool_dir \"%s\" (the default; filters need it: set "
           "spool_dir in [popgate]): %s",
           c->spool_dir, why);
}

static void finish(struct loader *L)
{
  struct px_conf *c = L->c;
  char a[300], b[300];
  size_t i, j, ki = key_index(SEC_LISTENER, "upstream");

  flush_pending(L);
  end_section(L);

  c->workers = auto_threads(c->workers);
  c->scan_threads = auto_threads(c->scan_threads);

  for (i = 0; i < c->nfilters; i++)
    finish_filter(L, &c->filters[i], &L->finfo[i]);
  for (i = 0; i < c->nupstreams; i++) {
    check_required(L, SEC_UPSTREAM, c->upstreams[i].name, &L->uinfo[i],
                   PX_FLT_COUNT);
    finish_upstream_tls(L, &c->upstreams[i], &L->uinfo[i]);
  }
  for (i = 0; i < c->nlisteners; i++) {
    struct px_conf_listener *l = &c->listeners[i];
    check_required(L, SEC_LISTENER, l->name, &L->linfo[i], PX_FLT_COUNT);
    finish_listener_tls(L, l, &L->linfo[i]);
    resolve_filters(L, l, &L->linfo[i]);
    if (l->upstream_name == NULL)
      continue;
    for (j = 0; j < c->nupstreams; j++)
      if (strcmp(c->upstreams[j].name, l->upstream_name) == 0)
        l->upstream = &c->upstreams[j];
    if (l->upstream == NULL)
      errorf(L, L->linfo[i].seen[ki],
             "upstream \"%s\" in [listener:%s] is "
             "not defined (no [upstream:%s] section)",
             l->upstream_name, l->name, l->upstream_name);
  }
  if (c->nlisteners == 0)
    errorf(L, 0,
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
      if (o->bind.host != NULL && same_hostport(&l->bind, &o->bind)) {
        errorf(L, l->bind.line,
               "bind = %s in [listener:%s] is already "
               "used by [listener:%s] (line %d)",
               hostport_str(a, sizeof a, &l->bind), l->name, o->name,
               o->bind.line);
        break;
      }
    }
    if (c->metrics.host != NULL && same_hostport(&l->bind, &c->metrics))
      errorf(L, c->metrics.line,
             "metrics = %s is also the bind of "
             "[listener:%s] (line %d)",
             hostport_str(b, sizeof b, &c->metrics), l->name, l->bind.line);
  }
  finish_spool(L);
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
  main_defaults(L->c);
  L->c->refs = 1;
  L->c->path = xstrdup(L, L->name);

  skip_bom(L);
  rc = ini_parse_stream(reader_cb, L, handler_cb, L);
  check_sync(L);
  if (rc != 0 && L->nerrs == 0 && !L->oom && L->read_errno == 0)
    errorf(L, rc > 0 ? rc : 0, "syntax error");
  finish(L);

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
