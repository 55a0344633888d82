/* conf.h - the immutable configuration of one popgate generation.
 *
 * px_conf_load() parses an INI file with inih, validates every value and
 * every reference, and yields a struct px_conf that nothing modifies
 * afterwards. Errors name FILE:LINE. A reload builds a new px_conf beside
 * the old one; sessions keep the generation they started with (px_conf_ref).
 */
#ifndef PX_CONF_H
#define PX_CONF_H

#include <stddef.h>
#include <stdint.h>

enum px_tls_mode {
  PX_TLS_OFF = 0,
  PX_TLS_STARTTLS,
  PX_TLS_IMPLICIT,
  PX_TLS_COUNT
};
extern const char *const px_tls_mode_names[];

enum px_log_level {
  PX_LOG_ERROR = 0,
  PX_LOG_WARN,
  PX_LOG_INFO,
  PX_LOG_DEBUG,
  PX_LOG_COUNT
};
extern const char *const px_log_level_names[];

/* A "host:port" or "[v6]:port" value, split. host is never empty. */
struct px_conf_hostport {
  char *host;
  char *port; /* decimal, 1..65535 */
  int line;
};

struct px_conf_upstream {
  char *name;
  int line;                         /* line of the [upstream:NAME] header */
  struct px_conf_hostport *servers; /* >= 1, in file order */
  size_t nservers;
  enum px_tls_mode tls;        /* only PX_TLS_OFF for now */
  uint64_t connect_timeout_ms; /* default 10s */
  uint64_t timeout_ms;         /* default 10m */
  size_t max_response_line;    /* default 1024; 512..65536, incl. CRLF */
};

struct px_conf_listener {
  char *name;
  int line;
  struct px_conf_hostport bind;      /* required */
  enum px_tls_mode tls;              /* only PX_TLS_OFF for now */
  char *upstream_name;               /* required */
  struct px_conf_upstream *upstream; /* resolved reference, never NULL */
  unsigned max_clients;              /* default 10000; >= 1 */
  unsigned max_clients_per_ip;       /* default 50; 0 = unlimited */
  uint64_t idle_timeout_ms;          /* default 10m; >= 10m (RFC 1939 3) */
  uint64_t login_timeout_ms;         /* default 3m; accept -> authenticated */
  unsigned max_errors;               /* default 10; bad commands before close */
};

enum px_log_target {
  PX_LOGT_STDERR = 0,
  PX_LOGT_SYSLOG,
  PX_LOGT_FILE,
  PX_LOGT_COUNT
};

struct px_conf {
  int refs; /* px_conf_ref/px_conf_unref (loop threads
               use atomics through those two only) */
  char *path;
  unsigned workers; /* resolved: "auto" -> online CPUs */
  char *user;       /* NULL: stay as started */
  enum px_log_target log_target;
  char *log_path;                  /* PX_LOGT_FILE only */
  enum px_log_level log_level;     /* default info */
  uint64_t shutdown_timeout_ms;    /* default 30s */
  struct px_conf_hostport metrics; /* host NULL when unset */

  struct px_conf_listener *listeners; /* >= 1 */
  size_t nlisteners;
  struct px_conf_upstream *upstreams;
  size_t nupstreams;
};

/* Parses and validates path. On success returns 0 and *out owns a new
 * px_conf with refs == 1. On failure returns a negative code (-EINVAL for a
 * bad file, -errno when it cannot be read) and writes one or more lines
 * "FILE:LINE: message\n" (or "FILE: message\n" without a line) into
 * err[0..errlen), NUL-terminated and truncated if needed. Any thread. */
int px_conf_load(const char *path, struct px_conf **out, char *err,
                 size_t errlen);

/* Same, from a string (tests, fuzzing); name is used in messages. */
int px_conf_load_string(const char *name, const char *text,
                        struct px_conf **out, char *err, size_t errlen);

void px_conf_ref(struct px_conf *c);
/* Drops one reference; frees at zero. NULLs *cp. */
void px_conf_unref(struct px_conf **cp);

/* Parsers shared with tests. Each returns 0 or -EINVAL. */
int px_conf_parse_duration(
    const char *s, uint64_t *ms); /* "30", "30s", "10m", "2h", "500ms" */
int px_conf_parse_size(const char *s,
                       uint64_t *bytes); /* "512", "64K", "1M", "2G" */
int px_conf_parse_hostport(const char *s, char **host, char **port);
int px_conf_parse_bool(const char *s,
                       int *b); /* yes/no on/off true/false 1/0 */

#endif
