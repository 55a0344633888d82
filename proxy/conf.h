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

/* One certificate and its key, as a cert = line and the key = line that
 * pairs with it (the i-th key belongs to the i-th cert). */
struct px_conf_certkey {
  char *cert; /* PEM chain file */
  char *key;  /* PEM private key file */
  int line;   /* of the cert = line */
  int key_line;
};

enum px_filter_type {
  PX_FLT_CLAMAV = 0,
  PX_FLT_CLAMD,
  PX_FLT_COMMAND,
  PX_FLT_HEADER,
  PX_FLT_COUNT
};
extern const char *const px_filter_type_names[]; /* "clamav", ... */

enum px_on_virus {
  PX_ONV_REPLACE = 0,
  PX_ONV_TAG,
  PX_ONV_REJECT,
  PX_ONV_COUNT
};
extern const char *const px_on_virus_names[];
enum px_on_error { PX_ONE_TEMPFAIL = 0, PX_ONE_PASS, PX_ONE_COUNT };
extern const char *const px_on_error_names[];

/* One [filter:NAME] section. Keys that do not belong to its type are
 * errors; keys not given keep the defaults shown. */
struct px_conf_filter {
  char *name;
  int line;
  enum px_filter_type type; /* required */
  /* clamav */
  char *database; /* dir or file; clamav: never NULL (default
                     /var/lib/clamav); the other types: NULL */
  int database_line;
  uint64_t max_scan_size;   /* default 100M (CL_ENGINE_MAX_SCANSIZE) */
  uint64_t max_file_size;   /* default 25M (CL_ENGINE_MAX_FILESIZE) */
  unsigned max_recursion;   /* default 16 */
  unsigned max_files;       /* default 10000 */
  uint64_t scan_timeout_ms; /* default 60s (CL_ENGINE_MAX_SCANTIME);
                               also clamd's and command's timeout */
  /* clamd */
  char *socket; /* "/unix/socket/path" (not checked: clamd may start
                   later) or "host:port", "[v6]:port" (canonical port) */
  /* command */
  char **argv; /* command = split on spaces, no shell; argv[argc] is
                  NULL; argv[0] absolute, executable at load time */
  size_t argc;
  /* header */
  char **add; /* add = "Name: value" (repeatable), as written, without
                 CRLF; checked: RFC 5322 name, printable ASCII, <= 998 */
  size_t nadd;
  /* clamav, clamd */
  enum px_on_virus on_virus; /* default replace */
  char *quarantine_dir;      /* NULL: keep no copy; a writable dir */
  int quarantine_line;
  /* all (header too: max_message_size applies to every chain) */
  enum px_on_error on_error; /* default tempfail */
};

struct px_conf_upstream {
  char *name;
  int line;                         /* line of the [upstream:NAME] header */
  struct px_conf_hostport *servers; /* >= 1, in file order */
  size_t nservers;
  enum px_tls_mode tls; /* default off */
  int tls_line;         /* line of tls =; 0 when not set */
  int verify;           /* default 1: check chain and name */
  int verify_line;      /* 0 when not set */
  char *ca_file;        /* NULL: the system's CA store */
  int ca_file_line;
  char *server_name;             /* SNI and name check; NULL: server's host */
  struct px_conf_certkey client; /* client certificate; cert NULL: none */
  uint64_t connect_timeout_ms;   /* default 10s */
  uint64_t timeout_ms;           /* default 10m */
  size_t max_response_line;      /* default 1024; 512..65536, incl. CRLF */
};

struct px_conf_listener {
  char *name;
  int line;
  struct px_conf_hostport bind;      /* required */
  enum px_tls_mode tls;              /* default off */
  int tls_line;                      /* line of tls =; 0 when not set */
  struct px_conf_certkey *certs;     /* >= 1 unless tls is off; the first */
  size_t ncerts;                     /* is the default, the others SNI */
  int tls_min_version;               /* TLS1_2_VERSION (default) or 1_3 */
  char *ciphers;                     /* TLS 1.2 list; NULL: built-in */
  int ciphers_line;                  /* 0 when not set */
  int require_tls;                   /* default: 1 with starttls, else 0 */
  int require_tls_line;              /* 0 when not set */
  uint64_t handshake_timeout_ms;     /* default 30s; 1s..10m */
  char *upstream_name;               /* required */
  char **filter_names;               /* filters = list as written, and */
  struct px_conf_filter **filters;   /* resolved (into px_conf.filters), */
  size_t nfilters;                   /* both in order; 0: relay as is */
  int filters_line;                  /* 0 when not set */
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
  struct px_conf_filter *filters;
  size_t nfilters;

  /* Filtering: where held messages go, and the bounds on them. */
  char *spool_dir; /* never NULL (default /var/spool/popgate); checked
                      (writable dir) only when a listener has filters */
  int spool_dir_line;
  uint64_t memory_per_message; /* default 1M: above it, a held message
                                  spills to an unlinked file */
  uint64_t max_message_size;   /* default 256M: above it, on_error */
  uint64_t memory_budget;      /* default 256M: all held messages in RAM
                                  together; over it, spill sooner */
  unsigned scan_threads;       /* default auto (CPUs): filter jobs at
                                  once; sizes libuv's pool */
};

/* Parses and validates path. On success returns 0 and *out owns a new
 * px_conf with refs == 1. On failure returns a negative code (-EINVAL for a
 * bad file, -errno when it cannot be read) and writes one or more lines
 * "FILE:LINE: message\n" (or "FILE: message\n" without a line) into
 * err[0..errlen), NUL-terminated and truncated if needed. The cert, key and
 * ca_file files it names must exist and be readable (they are opened, not
 * parsed: tls.c loads them). So must a database given explicitly; a
 * command's program must be executable; quarantine_dir, and spool_dir when
 * a listener has filters, must be directories the calling user can write
 * to. Any thread. */
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

/* Warnings about a valid configuration (a listener that takes passwords in
 * the clear, an upstream whose certificate is not checked), as
 * "FILE:LINE: warning: ...\n" lines into out[0..outlen), NUL-terminated and
 * truncated if needed (out may be NULL when outlen is 0). Returns the
 * number of warnings, written or not. */
int px_conf_warnings(const struct px_conf *c, char *out, size_t outlen);
int px_conf_parse_bool(const char *s,
                       int *b); /* yes/no on/off true/false 1/0 */

/* ---- for filters' parse hooks (flt_ops.parse in filter.h) ---- */

/* How much of a user's value a message quotes. */
#define PX_CONF_SHOW 80

/* Copies s into buf for a message: control bytes become '?', and a long
 * value is cut with "...". Returns buf. */
const char *px_conf_show(char buf[static PX_CONF_SHOW + 4], const char *s);

/* key = v as a whole number, a size (K, M, G) or a duration (ms, s, m, h)
 * from min to max (bytes, milliseconds) into *out. Each returns 0, or
 * -EINVAL with the message every key of its kind gets ("bad size ...",
 * "KEY = V is out of range (MIN..MAX)") in err[0..errlen), and then
 * leaves *out alone. Any thread. */
int px_conf_value_uint(const char *key, const char *v, uint64_t min,
                       uint64_t max, unsigned *out, char *err, size_t errlen);
int px_conf_value_size(const char *key, const char *v, uint64_t min,
                       uint64_t max, uint64_t *out, char *err, size_t errlen);
int px_conf_value_duration(const char *key, const char *v, uint64_t min,
                           uint64_t max, uint64_t *out, char *err,
                           size_t errlen);

/* px_conf_parse_hostport() that says what is wrong: on -EINVAL, *why is a
 * static phrase such as "missing \":PORT\"". Or -ENOMEM. */
int px_conf_split_hostport(const char *s, char **host, char **port,
                           const char **why);

#endif
