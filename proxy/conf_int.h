/* conf_int.h - what the parts of the configuration parser share; nothing
 * outside them includes it.
 *
 *   conf.c        the reader: inih's driver, sections, values collected
 *                 across continuation lines, FILE:LINE errors, px_conf_load,
 *                 the generation's ref/unref/free
 *   conf_keys.c   the key table and one parser per kind of field; filter
 *                 types' own keys go to their flt_ops.parse
 *   conf_value.c  value syntax on its own: numbers, sizes, durations,
 *                 host:port, names; the px_conf_parse_* and px_conf_value_*
 *   conf_tls.c    TLS keys (cert, key, ca_file, versions, ciphers,
 *                 server_name) and what a section's tls mode implies
 *   conf_check.c  after the last line: required keys, references, filter
 *                 types, spool; px_conf_warnings
 *
 * Functions shared between these files carry the conf_ prefix.
 */
#ifndef PX_CONF_INT_H
#define PX_CONF_INT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "conf.h"

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

/* Rows of conf_keys[] (checked where it is defined), and distinct keys of
 * filter types one [filter:NAME] section can hold (flt_ops.keys). */
#define PX_CONF_MAX_KEYS      64
#define PX_CONF_MAX_TYPE_KEYS 16

#define PX_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define PX_UNUSED       __attribute__((unused))

#define FIELD(base, off, type) ((type *)(void *)((char *)(base) + (off)))

#define MS_S UINT64_C(1000)
#define MS_M (60 * MS_S)
#define MS_H (60 * MS_M)

#define SZ_K (UINT64_C(1) << 10)
#define SZ_M (UINT64_C(1) << 20)
#define SZ_G (UINT64_C(1) << 30)

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
extern const char *const conf_sec_names[]; /* "popgate", "listener", ... */

struct loader;
struct key_def;
struct flt_ops; /* filter.h */

/* Parses a complete, trimmed, non-empty value into the field of base that
 * k names. Reports problems itself through conf_bad(); returns 0 or
 * -EINVAL (-ENOMEM after setting L->oom). */
typedef int (*parse_fn)(struct loader *L, const struct key_def *k,
                        const char *v, void *base);

enum {
  KEY_REPEATABLE = 1 << 0, /* each non-indented occurrence adds a value */
  KEY_REQUIRED = 1 << 1,   /* the section is incomplete without it */
  KEY_IP_ONLY = 1 << 2,    /* host:port whose host must be an IP literal */
  KEY_EMPTY_OK = 1 << 3,   /* "key =" is a valid, empty value */
  KEY_VIRUS = 1 << 4,      /* [filter:NAME]: for FLT_FINDS_VIRUSES types */
  KEY_TYPE = 1 << 5,       /* [filter:NAME]: a key of some types' flt_ops */
};

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

extern const struct key_def conf_keys[];
extern const size_t conf_nkeys;

/* What the reader decided about the line it last handed to inih. */
enum line_class { CLS_NONE = 0, CLS_KEY, CLS_CONT, CLS_DONE };

/* Bookkeeping for one section instance. */
struct sec_info {
  int line;                   /* line of its [header] */
  int seen[PX_CONF_MAX_KEYS]; /* line of each key's first occurrence */
  struct {                    /* the same for filter types' keys */
    const char *name;
    int line;
  } tseen[PX_CONF_MAX_TYPE_KEYS];
  size_t ntseen;
  size_t ncert, nkey; /* a listener's cert and key lines so far */
};

/* The value being collected: a key line and its continuation lines. */
struct pending {
  int active;
  const struct key_def *k; /* NULL: collected, then thrown away */
  struct key_def type_key; /* k for a filter type's key (KEY_TYPE) */
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

/* ---- conf.c ---- */

/* Records "FILE:LINE: message" (line 0: "FILE: message"). */
PX_PRINTF(3, 4)
void conf_errorf(struct loader *L, int line, const char *fmt, ...);
/* Reports a bad value of the pending key, at the key's line, with hints
 * about joined continuation lines and "#" comments. */
PX_PRINTF(2, 3) void conf_bad(struct loader *L, const char *fmt, ...);
void conf_oom(struct loader *L);
char *conf_xstrdup(struct loader *L, const char *s);

/* ---- conf_keys.c ---- */

/* The row of kind's key name; NULL when there is none. */
const struct key_def *conf_find_key(enum sec_kind kind, const char *name);
/* A key some filter type takes (flt_ops.keys): fills *k with a row for it
 * and returns 1; 0 when no type does. */
int conf_type_key(const char *name, struct key_def *k);
/* The first filter type, in enum order, that takes key name; NULL when
 * none does. Its parse hook checks the key's value in a section of no
 * type or of another type. */
const struct flt_ops *conf_type_owner(const char *name);
/* The line of k's first occurrence in a section, to read or to set; NULL
 * only when info has no room left for another filter type's key. */
int *conf_seen(struct sec_info *info, const struct key_def *k);
/* The same by name; 0 when the key has not been seen. */
int conf_seen_line(const struct sec_info *info, enum sec_kind kind,
                   const char *key);

void conf_main_defaults(struct px_conf *c);
void conf_listener_defaults(struct px_conf_listener *l);
void conf_upstream_defaults(struct px_conf_upstream *u);
void conf_filter_defaults(struct px_conf_filter *f);
void conf_main_free(struct px_conf *c);
void conf_listener_free(struct px_conf_listener *l);
void conf_upstream_free(struct px_conf_upstream *u);
void conf_filter_free(struct px_conf_filter *f);

/* ---- conf_value.c ---- */

/* Section names and references: [A-Za-z0-9_.-]{1,64}. */
int conf_is_name(const char *s);
int conf_is_ip(const char *host);
int conf_has_ctl(const char *s);
/* Strictly decimal, no sign, no spaces, at least one digit. With end,
 * stops at the first non-digit and stores where; without, rejects it. */
int conf_parse_u64(const char *s, uint64_t *out, const char **end);
void conf_hostport_free(struct px_conf_hostport *hp);
/* Formats hp for a message: brackets around an IPv6 host. */
const char *conf_hostport_str(char *buf, size_t n,
                              const struct px_conf_hostport *hp);
int conf_same_hostport(const struct px_conf_hostport *a,
                       const struct px_conf_hostport *b);
/* Durations and sizes as a user would write them, for range messages. */
const char *conf_duration_str(char *buf, size_t n, uint64_t ms);
const char *conf_size_str(char *buf, size_t n, uint64_t b);
/* names[0..n) as "a, b or c", for messages. */
const char *conf_names_str(char *buf, size_t size, const char *const *names,
                           int n);
/* What keeps path from being a directory this process can create files
 * in, into buf ("" when nothing does). */
const char *conf_dir_problem(const char *path, char *buf, size_t size);
/* px_conf_value_duration() with a reason that replaces "out of range"
 * below min (NULL: none). */
int conf_duration_value(const char *key, const char *v, uint64_t min,
                        uint64_t max, const char *min_why, uint64_t *out,
                        char *err, size_t errlen);

/* ---- conf_tls.c ---- */

int conf_p_file(struct loader *L, const struct key_def *k, const char *v,
                void *base);
int conf_p_cert(struct loader *L, const struct key_def *k, const char *v,
                void *base);
int conf_p_key(struct loader *L, const struct key_def *k, const char *v,
               void *base);
int conf_p_tls_version(struct loader *L, const struct key_def *k, const char *v,
                       void *base);
int conf_p_ciphers(struct loader *L, const struct key_def *k, const char *v,
                   void *base);
int conf_p_server_name(struct loader *L, const struct key_def *k, const char *v,
                       void *base);
/* What only a whole section tells about TLS; also fills the *_line fields
 * and require_tls's default, which depends on tls. */
void conf_check_listener_tls(struct loader *L, struct px_conf_listener *l,
                             const struct sec_info *info);
void conf_check_upstream_tls(struct loader *L, struct px_conf_upstream *u,
                             const struct sec_info *info);

/* ---- conf_check.c ---- */

/* After the last line: what only the whole file can tell. */
void conf_finish(struct loader *L);

#endif
