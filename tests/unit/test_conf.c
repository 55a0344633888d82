/* test_conf.c - unit tests for the config parser, proxy/conf*.c (cmocka).
 *
 * Every key with good and bad values, the FILE:LINE of each kind of error,
 * continuation lines, long lines, defaults, and the value parsers. Most
 * cases load a small config from a string; a few go through a real file.
 * TLS and filter keys name files and directories that must exist: the
 * group setup makes a directory with a few (conf.c only opens or stats
 * them), and "@" in a config or an expected message stands for that
 * directory (see T()).
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/ssl.h>

#include "conf.h"

#define NAME "t.ini"

/* A valid listener and upstream; tests add lines around them. */
#define BASE_L "[listener:a]\nbind = 127.0.0.1:1100\nupstream = u\n"
#define BASE_U "[upstream:u]\nserver = 127.0.0.1:1101\n"

static char err[8192];

/* ---- files ---- */

static char tmpdir[64];

/* Files the TLS keys may name; their content does not matter to conf.c.
 * db.cvd stands for a ClamAV database file. */
static const char *const tls_files[] = { "a.pem", "a.key", "b.pem", "b.key",
                                         "ca.pem", "db.cvd" };

/* Directories for spool_dir, database and quarantine_dir, and a program
 * for command. */
static const char *const test_dirs[] = { "spool", "db", "q" };
#define PROG "filter.sh"

static const char *write_file(const char *name, const char *data, size_t n)
{
  static char path[128];
  FILE *f;

  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, n, f), n);
  assert_int_equal(fclose(f), 0);
  return path;
}

static int group_setup(void **state)
{
  size_t i;

  (void)state;
  strcpy(tmpdir, "/tmp/test_conf.XXXXXX");
  if (mkdtemp(tmpdir) == NULL)
    return -1;
  for (i = 0; i < sizeof tls_files / sizeof *tls_files; i++)
    write_file(tls_files[i], "not PEM\n", 8);
  for (i = 0; i < sizeof test_dirs / sizeof *test_dirs; i++) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, test_dirs[i]);
    if (mkdir(path, 0755) != 0)
      return -1;
  }
  if (chmod(write_file(PROG, "#!/bin/sh\nexec cat\n", 19), 0755) != 0)
    return -1;
  return 0;
}

static int group_teardown(void **state)
{
  char path[128];
  size_t i;

  (void)state;
  for (i = 0; i < sizeof tls_files / sizeof *tls_files; i++) {
    snprintf(path, sizeof path, "%s/%s", tmpdir, tls_files[i]);
    unlink(path);
  }
  for (i = 0; i < sizeof test_dirs / sizeof *test_dirs; i++) {
    snprintf(path, sizeof path, "%s/%s", tmpdir, test_dirs[i]);
    rmdir(path);
  }
  snprintf(path, sizeof path, "%s/%s", tmpdir, PROG);
  unlink(path);
  rmdir(tmpdir);
  return 0;
}

/* s with every "@" replaced by tmpdir, in one of four static buffers (so
 * a call may take a config and its expected message both through T()). */
static const char *T(const char *s)
{
  static char bufs[4][8192];
  static int next;
  char *out = bufs[next++ % 4];
  size_t n = 0, dl = strlen(tmpdir);

  for (; *s != '\0'; s++) {
    if (*s == '@') {
      assert_true(n + dl < sizeof bufs[0]);
      memcpy(out + n, tmpdir, dl);
      n += dl;
    } else {
      assert_true(n + 1 < sizeof bufs[0]);
      out[n++] = *s;
    }
  }
  out[n] = '\0';
  return out;
}

static struct px_conf *load_ok(const char *text)
{
  struct px_conf *c = NULL;
  int rc = px_conf_load_string(NAME, text, &c, err, sizeof err);

  if (rc != 0)
    print_error("unexpected errors:\n%s", err);
  assert_int_equal(rc, 0);
  assert_non_null(c);
  assert_string_equal(err, "");
  return c;
}

static int count_lines(const char *s)
{
  int n = 0;

  for (; *s != '\0'; s++)
    n += *s == '\n';
  return n;
}

/* Loads text, expects failure, and that err holds the whole line want
 * (FILE:LINE: message). */
static void expect_err_line(const char *text, const char *want)
{
  struct px_conf *c = (struct px_conf *)1;
  char line[1024], hay[sizeof err + 2];
  int rc = px_conf_load_string(NAME, text, &c, err, sizeof err);

  assert_int_equal(rc, -EINVAL);
  assert_null(c);
  snprintf(line, sizeof line, "\n%s\n", want);
  snprintf(hay, sizeof hay, "\n%s", err);
  if (strstr(hay, line) == NULL)
    print_error("wanted: %s\ngot:\n%s", want, err);
  assert_non_null(strstr(hay, line));
}

/* Same, and that it is the only error. */
static void expect_only_err(const char *text, const char *want)
{
  expect_err_line(text, want);
  if (count_lines(err) != 1)
    print_error("more than one error:\n%s", err);
  assert_int_equal(count_lines(err), 1);
}

/* ---- value parsers ---- */

static void test_parse_duration(void **state)
{
  static const struct { const char *s; uint64_t ms; } good[] = {
    { "0", 0 },           { "30", 30000 },     { "30s", 30000 },
    { "500ms", 500 },     { "10m", 600000 },   { "2h", 7200000 },
    { "007s", 7000 },     { "0ms", 0 },
    { "18446744073709551615ms", UINT64_MAX },
    { "5124095576030h", UINT64_C(5124095576030) * 3600000 },
  };
  static const char *const bad[] = {
    "", "s", "ms", "-1", "+1", " 1", "1 ", "1 s", "1.5s", "1S", "10M", "1d",
    "1hm", "1sm", "0x10", "1e3", "abc", "10x",
    "18446744073709551616",   /* 2^64 */
    "18446744073709551615s",  /* overflows on the multiplication */
    "5124095576031h",
    "99999999999999999999999999999999",
  };
  uint64_t ms;
  size_t i;

  (void)state;
  for (i = 0; i < sizeof good / sizeof *good; i++) {
    ms = 12345;
    assert_int_equal(px_conf_parse_duration(good[i].s, &ms), 0);
    assert_true(ms == good[i].ms);
  }
  for (i = 0; i < sizeof bad / sizeof *bad; i++) {
    ms = 12345;
    if (px_conf_parse_duration(bad[i], &ms) != -EINVAL)
      print_error("accepted \"%s\"\n", bad[i]);
    assert_int_equal(px_conf_parse_duration(bad[i], &ms), -EINVAL);
    assert_true(ms == 12345);
  }
  assert_int_equal(px_conf_parse_duration(NULL, &ms), -EINVAL);
}

static void test_parse_size(void **state)
{
  static const struct { const char *s; uint64_t b; } good[] = {
    { "0", 0 },          { "512", 512 },             { "64K", 65536 },
    { "64k", 65536 },    { "1M", 1048576 },          { "1m", 1048576 },
    { "2G", UINT64_C(2147483648) }, { "2g", UINT64_C(2147483648) },
    { "18446744073709551615", UINT64_MAX },
    { "17179869183G", UINT64_C(17179869183) << 30 },
  };
  static const char *const bad[] = {
    "", "K", "-1", "+1", " 1", "1 K", "64KB", "1T", "1.5M", "1b", "0x10",
    "18446744073709551616", "17179869184G", "18014398509481984K",
  };
  uint64_t b;
  size_t i;

  (void)state;
  for (i = 0; i < sizeof good / sizeof *good; i++) {
    b = 1;
    assert_int_equal(px_conf_parse_size(good[i].s, &b), 0);
    assert_true(b == good[i].b);
  }
  for (i = 0; i < sizeof bad / sizeof *bad; i++) {
    if (px_conf_parse_size(bad[i], &b) != -EINVAL)
      print_error("accepted \"%s\"\n", bad[i]);
    assert_int_equal(px_conf_parse_size(bad[i], &b), -EINVAL);
  }
}

static void test_parse_bool(void **state)
{
  static const char *const yes[] = { "yes", "on", "true", "1", "YES", "On" };
  static const char *const no[] = { "no", "off", "false", "0", "No", "OFF" };
  static const char *const bad[] = { "", "y", "n", "2", "yess", " yes" };
  size_t i;
  int b;

  (void)state;
  for (i = 0; i < sizeof yes / sizeof *yes; i++) {
    b = 0;
    assert_int_equal(px_conf_parse_bool(yes[i], &b), 0);
    assert_int_equal(b, 1);
  }
  for (i = 0; i < sizeof no / sizeof *no; i++) {
    b = 1;
    assert_int_equal(px_conf_parse_bool(no[i], &b), 0);
    assert_int_equal(b, 0);
  }
  for (i = 0; i < sizeof bad / sizeof *bad; i++)
    assert_int_equal(px_conf_parse_bool(bad[i], &b), -EINVAL);
}

static void test_parse_hostport(void **state)
{
  static const struct { const char *s, *host, *port; } good[] = {
    { "127.0.0.1:110", "127.0.0.1", "110" },
    { "0.0.0.0:995", "0.0.0.0", "995" },
    { "[::1]:110", "::1", "110" },
    { "[::]:995", "::", "995" },
    { "[2001:db8::5]:65535", "2001:db8::5", "65535" },
    { "mail1.example:110", "mail1.example", "110" },
    { "localhost:1", "localhost", "1" },
    { "a_b-c.d:00110", "a_b-c.d", "110" },
  };
  static const char *const bad[] = {
    "", ":110", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
    "127.0.0.1:99999999999999999999999", "127.0.0.1:-1", "127.0.0.1:+1",
    "127.0.0.1:11 0", "127.0.0.1:110x", "::1:110", "[::1]", "[::1]110",
    "[::1:110", "[]:110", "[1.2.3.4]:110", "[::g]:110", "*:110",
    "1.2.3.999:110", "1.2.3:110", "bad host:110", "bad!:110", "-x:110",
    ".x:110", " 127.0.0.1:110",
  };
  char *host, *port;
  size_t i;

  (void)state;
  for (i = 0; i < sizeof good / sizeof *good; i++) {
    assert_int_equal(px_conf_parse_hostport(good[i].s, &host, &port), 0);
    assert_string_equal(host, good[i].host);
    assert_string_equal(port, good[i].port);
    free(host);
    free(port);
  }
  for (i = 0; i < sizeof bad / sizeof *bad; i++) {
    host = port = (char *)1;
    if (px_conf_parse_hostport(bad[i], &host, &port) != -EINVAL)
      print_error("accepted \"%s\"\n", bad[i]);
    assert_int_equal(px_conf_parse_hostport(bad[i], &host, &port), -EINVAL);
    assert_null(host);
    assert_null(port);
  }
}

/* ---- defaults and a complete file ---- */

static void test_defaults(void **state)
{
  struct px_conf *c = load_ok(BASE_L BASE_U);
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  struct px_conf_listener *l;
  struct px_conf_upstream *u;

  (void)state;
  assert_int_equal(c->refs, 1);
  assert_string_equal(c->path, NAME);
  assert_int_equal(c->workers, cpus < 1 ? 1 : cpus > 256 ? 256 : cpus);
  assert_null(c->user);
  assert_int_equal(c->log_target, PX_LOGT_STDERR);
  assert_null(c->log_path);
  assert_int_equal(c->log_level, PX_LOG_INFO);
  assert_true(c->shutdown_timeout_ms == 30000);
  assert_null(c->metrics.host);
  assert_null(c->metrics.port);
  assert_string_equal(c->spool_dir, "/var/spool/popgate");
  assert_int_equal(c->spool_dir_line, 0);
  assert_true(c->memory_per_message == 1048576);
  assert_true(c->max_message_size == 268435456);
  assert_true(c->memory_budget == 268435456);
  assert_int_equal(c->scan_threads, cpus < 1 ? 1 : cpus > 256 ? 256 : cpus);
  assert_null(c->filters);
  assert_int_equal(c->nfilters, 0);

  assert_int_equal(c->nlisteners, 1);
  l = &c->listeners[0];
  assert_string_equal(l->name, "a");
  assert_int_equal(l->line, 1);
  assert_string_equal(l->bind.host, "127.0.0.1");
  assert_string_equal(l->bind.port, "1100");
  assert_int_equal(l->bind.line, 2);
  assert_int_equal(l->tls, PX_TLS_OFF);
  assert_string_equal(l->upstream_name, "u");
  assert_ptr_equal(l->upstream, &c->upstreams[0]);
  assert_int_equal(l->max_clients, 10000);
  assert_int_equal(l->max_clients_per_ip, 50);
  assert_true(l->idle_timeout_ms == 600000);
  assert_true(l->login_timeout_ms == 180000);
  assert_int_equal(l->max_errors, 10);
  assert_int_equal(l->tls_line, 0);
  assert_null(l->certs);
  assert_int_equal(l->ncerts, 0);
  assert_int_equal(l->tls_min_version, TLS1_2_VERSION);
  assert_null(l->ciphers);
  assert_int_equal(l->ciphers_line, 0);
  assert_int_equal(l->require_tls, 0);
  assert_int_equal(l->require_tls_line, 0);
  assert_true(l->handshake_timeout_ms == 30000);
  assert_null(l->filter_names);
  assert_null(l->filters);
  assert_int_equal(l->nfilters, 0);
  assert_int_equal(l->filters_line, 0);

  assert_int_equal(c->nupstreams, 1);
  u = &c->upstreams[0];
  assert_string_equal(u->name, "u");
  assert_int_equal(u->line, 4);
  assert_int_equal(u->nservers, 1);
  assert_string_equal(u->servers[0].host, "127.0.0.1");
  assert_string_equal(u->servers[0].port, "1101");
  assert_int_equal(u->servers[0].line, 5);
  assert_int_equal(u->tls, PX_TLS_OFF);
  assert_true(u->connect_timeout_ms == 10000);
  assert_true(u->timeout_ms == 600000);
  assert_int_equal(u->max_response_line, 1024);
  assert_int_equal(u->tls_line, 0);
  assert_int_equal(u->verify, 1);
  assert_int_equal(u->verify_line, 0);
  assert_null(u->ca_file);
  assert_int_equal(u->ca_file_line, 0);
  assert_null(u->server_name);
  assert_null(u->client.cert);
  assert_null(u->client.key);
  px_conf_unref(&c);
  assert_null(c);
}

/* The configuration from the team spec, every key set. */
static void test_full_file(void **state)
{
  struct px_conf *c = load_ok(
    "[popgate]\n"
    "workers = 1                 ; or auto\n"
    "user = popgate\n"
    "log = /tmp/x/popgate.log    ; stderr | syslog | path\n"
    "log_level = debug           ; error|warn|info|debug\n"
    "shutdown_timeout = 5s\n"
    "metrics = 127.0.0.1:9110\n"
    "\n"
    "[listener:plain]\n"
    "bind = [::1]:1100           ; or [::1]:PORT\n"
    "tls = off\n"
    "upstream = dovecot\n"
    "max_clients = 200\n"
    "max_clients_per_ip = 0\n"
    "idle_timeout = 30m\n"
    "login_timeout = 90s\n"
    "max_errors = 3\n"
    "\n"
    "[upstream:dovecot]\n"
    "server = 127.0.0.1:1101     ; repeatable\n"
    "server = mail.example:110\n"
    "tls = off\n"
    "connect_timeout = 500ms\n"
    "timeout = 2h\n"
    "max_response_line = 2K\n"
    "\n"
    "[upstream:spare]\n"
    "server = [2001:db8::1]:110\n");
  struct px_conf_listener *l = &c->listeners[0];
  struct px_conf_upstream *u = &c->upstreams[0];

  (void)state;
  assert_int_equal(c->workers, 1);
  assert_string_equal(c->user, "popgate");
  assert_int_equal(c->log_target, PX_LOGT_FILE);
  assert_string_equal(c->log_path, "/tmp/x/popgate.log");
  assert_int_equal(c->log_level, PX_LOG_DEBUG);
  assert_true(c->shutdown_timeout_ms == 5000);
  assert_string_equal(c->metrics.host, "127.0.0.1");
  assert_string_equal(c->metrics.port, "9110");
  assert_int_equal(c->metrics.line, 7);

  assert_int_equal(c->nlisteners, 1);
  assert_string_equal(l->name, "plain");
  assert_int_equal(l->line, 9);
  assert_string_equal(l->bind.host, "::1");
  assert_string_equal(l->bind.port, "1100");
  assert_ptr_equal(l->upstream, u);
  assert_int_equal(l->max_clients, 200);
  assert_int_equal(l->max_clients_per_ip, 0);
  assert_true(l->idle_timeout_ms == 1800000);
  assert_true(l->login_timeout_ms == 90000);
  assert_int_equal(l->max_errors, 3);

  assert_int_equal(c->nupstreams, 2);
  assert_string_equal(u->name, "dovecot");
  assert_int_equal(u->nservers, 2);
  assert_string_equal(u->servers[0].host, "127.0.0.1");
  assert_int_equal(u->servers[0].line, 20);
  assert_string_equal(u->servers[1].host, "mail.example");
  assert_string_equal(u->servers[1].port, "110");
  assert_int_equal(u->servers[1].line, 21);
  assert_true(u->connect_timeout_ms == 500);
  assert_true(u->timeout_ms == 7200000);
  assert_int_equal(u->max_response_line, 2048);
  assert_string_equal(c->upstreams[1].name, "spare");
  assert_string_equal(c->upstreams[1].servers[0].host, "2001:db8::1");
  px_conf_unref(&c);
}

/* ---- every key: good values ---- */

enum { K_MAIN = 0, K_LISTENER, K_UPSTREAM };
enum { T_UINT = 0, T_U64, T_SIZE, T_ENUM };

/* Text with extra in the given section; extra starts at line 2 (main),
 * 4 (listener) or 6 (upstream). */
static const char *with(char *buf, size_t n, int kind, const char *extra)
{
  if (kind == K_MAIN)
    snprintf(buf, n, "[popgate]\n%s\n" BASE_L BASE_U, extra);
  else if (kind == K_LISTENER)
    snprintf(buf, n, BASE_L "%s\n" BASE_U, extra);
  else
    snprintf(buf, n, BASE_L BASE_U "%s\n", extra);
  return buf;
}

static void test_good_values(void **state)
{
#define MO(f) offsetof(struct px_conf, f)
#define LO(f) offsetof(struct px_conf_listener, f)
#define UO(f) offsetof(struct px_conf_upstream, f)
  static const struct {
    int kind;
    const char *line;
    size_t off;
    int type;
    uint64_t want;
  } cases[] = {
    { K_MAIN, "workers = 1", MO(workers), T_UINT, 1 },
    { K_MAIN, "workers = 256", MO(workers), T_UINT, 256 },
    { K_MAIN, "workers = 007", MO(workers), T_UINT, 7 },
    { K_MAIN, "log_level = error", MO(log_level), T_ENUM, PX_LOG_ERROR },
    { K_MAIN, "log_level = warn", MO(log_level), T_ENUM, PX_LOG_WARN },
    { K_MAIN, "log_level = info", MO(log_level), T_ENUM, PX_LOG_INFO },
    { K_MAIN, "log_level = debug", MO(log_level), T_ENUM, PX_LOG_DEBUG },
    { K_MAIN, "log_level = DEBUG", MO(log_level), T_ENUM, PX_LOG_DEBUG },
    { K_MAIN, "log = stderr", MO(log_target), T_ENUM, PX_LOGT_STDERR },
    { K_MAIN, "log = syslog", MO(log_target), T_ENUM, PX_LOGT_SYSLOG },
    { K_MAIN, "log = /var/log/popgate.log", MO(log_target), T_ENUM,
      PX_LOGT_FILE },
    { K_MAIN, "shutdown_timeout = 0", MO(shutdown_timeout_ms), T_U64, 0 },
    { K_MAIN, "shutdown_timeout = 5s", MO(shutdown_timeout_ms), T_U64, 5000 },
    { K_MAIN, "shutdown_timeout = 2", MO(shutdown_timeout_ms), T_U64, 2000 },
    { K_MAIN, "shutdown_timeout = 500ms", MO(shutdown_timeout_ms), T_U64,
      500 },
    { K_MAIN, "shutdown_timeout = 24h", MO(shutdown_timeout_ms), T_U64,
      86400000 },
    { K_MAIN, "memory_per_message = 4K", MO(memory_per_message), T_U64,
      4096 },
    { K_MAIN, "memory_per_message = 4096", MO(memory_per_message), T_U64,
      4096 },
    { K_MAIN, "memory_per_message = 256M", MO(memory_per_message), T_U64,
      268435456 },
    { K_MAIN, "max_message_size = 1M", MO(max_message_size), T_U64,
      1048576 },
    { K_MAIN, "max_message_size = 4G", MO(max_message_size), T_U64,
      UINT64_C(4294967296) },
    { K_MAIN, "memory_budget = 1M", MO(memory_budget), T_U64, 1048576 },
    { K_MAIN, "memory_budget = 64g", MO(memory_budget), T_U64,
      UINT64_C(68719476736) },
    { K_MAIN, "memory_budget = 1024G", MO(memory_budget), T_U64,
      UINT64_C(1099511627776) },
    { K_MAIN, "scan_threads = 1", MO(scan_threads), T_UINT, 1 },
    { K_MAIN, "scan_threads = 256", MO(scan_threads), T_UINT, 256 },
    { K_MAIN, "spool_dir = /nonexistent/spool", MO(spool_dir_line), T_ENUM,
      2 },
    { K_LISTENER, "tls = off", LO(tls), T_ENUM, PX_TLS_OFF },
    { K_LISTENER, "tls = OFF", LO(tls), T_ENUM, PX_TLS_OFF },
    { K_LISTENER, "max_clients = 1", LO(max_clients), T_UINT, 1 },
    { K_LISTENER, "max_clients = 1000000", LO(max_clients), T_UINT, 1000000 },
    { K_LISTENER, "max_clients_per_ip = 0", LO(max_clients_per_ip), T_UINT,
      0 },
    { K_LISTENER, "max_clients_per_ip = 7", LO(max_clients_per_ip), T_UINT,
      7 },
    { K_LISTENER, "idle_timeout = 10m", LO(idle_timeout_ms), T_U64, 600000 },
    { K_LISTENER, "idle_timeout = 600", LO(idle_timeout_ms), T_U64, 600000 },
    { K_LISTENER, "idle_timeout = 600000ms", LO(idle_timeout_ms), T_U64,
      600000 },
    { K_LISTENER, "idle_timeout = 2h", LO(idle_timeout_ms), T_U64, 7200000 },
    { K_LISTENER, "idle_timeout = 24h", LO(idle_timeout_ms), T_U64,
      86400000 },
    { K_LISTENER, "login_timeout = 1s", LO(login_timeout_ms), T_U64, 1000 },
    { K_LISTENER, "login_timeout = 90", LO(login_timeout_ms), T_U64, 90000 },
    { K_LISTENER, "max_errors = 1", LO(max_errors), T_UINT, 1 },
    { K_LISTENER, "max_errors = 1000", LO(max_errors), T_UINT, 1000 },
    /* TLS keys that a tls = off listener accepts (and ignores). */
    { K_LISTENER, "tls_min_version = TLSv1.2", LO(tls_min_version), T_ENUM,
      TLS1_2_VERSION },
    { K_LISTENER, "tls_min_version = TLSv1.3", LO(tls_min_version), T_ENUM,
      TLS1_3_VERSION },
    { K_LISTENER, "tls_min_version = tlsv1.3", LO(tls_min_version), T_ENUM,
      TLS1_3_VERSION },
    { K_LISTENER, "handshake_timeout = 1s", LO(handshake_timeout_ms), T_U64,
      1000 },
    { K_LISTENER, "handshake_timeout = 10m", LO(handshake_timeout_ms), T_U64,
      600000 },
    { K_LISTENER, "handshake_timeout = 45", LO(handshake_timeout_ms), T_U64,
      45000 },
    { K_LISTENER, "require_tls = no", LO(require_tls), T_ENUM, 0 },
    { K_LISTENER, "require_tls = off", LO(require_tls_line), T_ENUM, 4 },
    { K_LISTENER, "tls = off", LO(tls_line), T_ENUM, 4 },
    { K_UPSTREAM, "tls = off", UO(tls), T_ENUM, PX_TLS_OFF },
    { K_UPSTREAM, "tls = starttls", UO(tls), T_ENUM, PX_TLS_STARTTLS },
    { K_UPSTREAM, "tls = implicit", UO(tls), T_ENUM, PX_TLS_IMPLICIT },
    { K_UPSTREAM, "tls = IMPLICIT", UO(tls_line), T_ENUM, 6 },
    { K_UPSTREAM, "verify = no", UO(verify), T_ENUM, 0 },
    { K_UPSTREAM, "verify = yes", UO(verify), T_ENUM, 1 },
    { K_UPSTREAM, "verify = false", UO(verify_line), T_ENUM, 6 },
    { K_UPSTREAM, "connect_timeout = 100ms", UO(connect_timeout_ms), T_U64,
      100 },
    { K_UPSTREAM, "connect_timeout = 1h", UO(connect_timeout_ms), T_U64,
      3600000 },
    { K_UPSTREAM, "connect_timeout = 5", UO(connect_timeout_ms), T_U64,
      5000 },
    { K_UPSTREAM, "timeout = 1s", UO(timeout_ms), T_U64, 1000 },
    { K_UPSTREAM, "timeout = 24h", UO(timeout_ms), T_U64, 86400000 },
    { K_UPSTREAM, "max_response_line = 512", UO(max_response_line), T_SIZE,
      512 },
    { K_UPSTREAM, "max_response_line = 1K", UO(max_response_line), T_SIZE,
      1024 },
    { K_UPSTREAM, "max_response_line = 64K", UO(max_response_line), T_SIZE,
      65536 },
    { K_UPSTREAM, "max_response_line = 65536", UO(max_response_line), T_SIZE,
      65536 },
  };
#undef MO
#undef LO
#undef UO
  char buf[1024];
  size_t i;

  (void)state;
  for (i = 0; i < sizeof cases / sizeof *cases; i++) {
    struct px_conf *c = load_ok(with(buf, sizeof buf, cases[i].kind,
                                     cases[i].line));
    char *base = cases[i].kind == K_MAIN       ? (char *)c
                 : cases[i].kind == K_LISTENER ? (char *)&c->listeners[0]
                                               : (char *)&c->upstreams[0];
    uint64_t got = 0;
    switch (cases[i].type) {
    case T_UINT:
      got = *(unsigned *)(void *)(base + cases[i].off);
      break;
    case T_U64:
      got = *(uint64_t *)(void *)(base + cases[i].off);
      break;
    case T_SIZE:
      got = *(size_t *)(void *)(base + cases[i].off);
      break;
    default:
      got = (uint64_t) * (int *)(void *)(base + cases[i].off);
      break;
    }
    if (got != cases[i].want)
      print_error("%s: got %llu\n", cases[i].line, (unsigned long long)got);
    assert_true(got == cases[i].want);
    px_conf_unref(&c);
  }
}

static void test_string_values(void **state)
{
  char buf[1024];
  struct px_conf *c;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);

  (void)state;
  c = load_ok(with(buf, sizeof buf, K_MAIN, "workers = auto"));
  assert_int_equal(c->workers, cpus < 1 ? 1 : cpus > 256 ? 256 : cpus);
  px_conf_unref(&c);
  c = load_ok(with(buf, sizeof buf, K_MAIN, "workers = AUTO"));
  px_conf_unref(&c);

  c = load_ok(with(buf, sizeof buf, K_MAIN, "user = popgate"));
  assert_string_equal(c->user, "popgate");
  px_conf_unref(&c);
  c = load_ok(with(buf, sizeof buf, K_MAIN, "user = mail_1.x-y"));
  assert_string_equal(c->user, "mail_1.x-y");
  px_conf_unref(&c);

  c = load_ok(with(buf, sizeof buf, K_MAIN, "log = /var/log/pop gate.log"));
  assert_int_equal(c->log_target, PX_LOGT_FILE);
  assert_string_equal(c->log_path, "/var/log/pop gate.log");
  px_conf_unref(&c);
  c = load_ok(with(buf, sizeof buf, K_MAIN, "log = SysLog"));
  assert_int_equal(c->log_target, PX_LOGT_SYSLOG);
  assert_null(c->log_path);
  px_conf_unref(&c);

  c = load_ok(with(buf, sizeof buf, K_MAIN, "metrics = [::1]:9110"));
  assert_string_equal(c->metrics.host, "::1");
  assert_string_equal(c->metrics.port, "9110");
  assert_int_equal(c->metrics.line, 2);
  px_conf_unref(&c);

  c = load_ok("[listener:x.y-Z_9]\nbind = [::]:995\nupstream = up.1\n"
              "[upstream:up.1]\nserver = mail1.example:110\n");
  assert_string_equal(c->listeners[0].name, "x.y-Z_9");
  assert_string_equal(c->listeners[0].bind.host, "::");
  assert_string_equal(c->listeners[0].bind.port, "995");
  assert_string_equal(c->listeners[0].upstream->name, "up.1");
  px_conf_unref(&c);

  /* Upstream defined before the listener that names it; two listeners
   * sharing one upstream; names are case-sensitive. */
  c = load_ok("[upstream:U]\nserver = 10.0.0.1:110\n"
              "[upstream:u]\nserver = 10.0.0.2:110\n"
              "[listener:one]\nbind = 0.0.0.0:110\nupstream = u\n"
              "[listener:two]\nbind = 0.0.0.0:111\nupstream = u\n");
  assert_int_equal(c->nlisteners, 2);
  assert_ptr_equal(c->listeners[0].upstream, &c->upstreams[1]);
  assert_ptr_equal(c->listeners[1].upstream, &c->upstreams[1]);
  px_conf_unref(&c);
}

/* "key = value ; comment" works with inih's rule: ";" after whitespace;
 * anything else stays in the value. */
static void test_inline_comments(void **state)
{
  (void)state;
  /* No space before ";": part of the value. */
  expect_only_err("[listener:a]\nbind = 1.2.3.4:110;comment\nupstream = u\n"
                  BASE_U,
                  NAME ":2: bad address \"1.2.3.4:110;comment\" for bind: "
                  "the port must be a number from 1 to 65535");
  /* "#" starts no inline comment; the message says so. */
  expect_only_err(BASE_L "max_errors = 5 # five\n" BASE_U,
                  NAME ":4: bad number \"5 # five\" for max_errors (use a "
                  "whole number from 1 to 1000) (inline comments start "
                  "with \";\" after a space, not \"#\")");
}

static void test_inline_comment_values(void **state)
{
  struct px_conf *c;

  (void)state;
  c = load_ok("[listener:a]\nbind = 1.2.3.4:110 ; comment\n"
              "upstream = u\t;tab comment\n"
              "[upstream:u] ; header comment\nserver = 1.2.3.5:110 ;\n");
  assert_string_equal(c->listeners[0].bind.host, "1.2.3.4");
  assert_string_equal(c->listeners[0].bind.port, "110");
  assert_string_equal(c->listeners[0].upstream_name, "u");
  assert_string_equal(c->upstreams[0].servers[0].host, "1.2.3.5");
  px_conf_unref(&c);
}

/* ---- every key: bad values, one precise error each ---- */

static void test_bad_values(void **state)
{
  static const struct {
    int kind;
    const char *line;
    const char *msg;
  } cases[] = {
    { K_MAIN, "workers = 0",
      "workers = 0 is out of range (use auto or 1..256)" },
    { K_MAIN, "workers = 257",
      "workers = 257 is out of range (use auto or 1..256)" },
    { K_MAIN, "workers = -1",
      "bad value \"-1\" for workers (use auto or a number from 1 to 256)" },
    { K_MAIN, "workers = +1",
      "bad value \"+1\" for workers (use auto or a number from 1 to 256)" },
    { K_MAIN, "workers = 1.5",
      "bad value \"1.5\" for workers (use auto or a number from 1 to 256)" },
    { K_MAIN, "workers = automatic",
      "bad value \"automatic\" for workers (use auto or a number from 1 to "
      "256)" },
    { K_MAIN, "workers = 99999999999999999999999",
      "bad value \"99999999999999999999999\" for workers (use auto or a "
      "number from 1 to 256)" },
    { K_MAIN, "workers = 4294967297",
      "workers = 4294967297 is out of range (use auto or 1..256)" },
    { K_MAIN, "user =", "empty value for user" },
    { K_MAIN, "user = pop gate",
      "bad value \"pop gate\" for user (use a user name such as popgate)" },
    { K_MAIN, "user = -x",
      "bad value \"-x\" for user (use a user name such as popgate)" },
    { K_MAIN, "user = root:root",
      "bad value \"root:root\" for user (use a user name such as popgate)" },
    { K_MAIN, "log = popgate.log",
      "bad value \"popgate.log\" for log (use stderr, syslog or an "
      "absolute file path)" },
    { K_MAIN, "log = /var/log/",
      "bad value \"/var/log/\" for log (use stderr, syslog or an absolute "
      "file path)" },
    { K_MAIN, "log = journald",
      "bad value \"journald\" for log (use stderr, syslog or an absolute "
      "file path)" },
    { K_MAIN, "log_level = verbose",
      "bad value \"verbose\" for log_level (use error, warn, info or "
      "debug)" },
    { K_MAIN, "log_level = warning",
      "bad value \"warning\" for log_level (use error, warn, info or "
      "debug)" },
    { K_MAIN, "shutdown_timeout = 25h",
      "shutdown_timeout = 25h is out of range (0s..24h)" },
    { K_MAIN, "shutdown_timeout = 10x",
      "bad duration \"10x\" for shutdown_timeout (use e.g. 30s, 10m, 1h)" },
    { K_MAIN, "shutdown_timeout = 99999999999999999999",
      "bad duration \"99999999999999999999\" for shutdown_timeout (use e.g. "
      "30s, 10m, 1h)" },
    { K_MAIN, "shutdown_timeout = -1s",
      "bad duration \"-1s\" for shutdown_timeout (use e.g. 30s, 10m, 1h)" },
    { K_MAIN, "metrics = localhost:9110",
      "bad address \"localhost:9110\" for metrics: the host must be an IP "
      "address, such as 127.0.0.1, 0.0.0.0, [::1] or [::]" },
    { K_MAIN, "metrics = 127.0.0.1",
      "bad address \"127.0.0.1\" for metrics: missing \":PORT\"" },
    { K_MAIN, "metrics = 127.0.0.1:0",
      "bad address \"127.0.0.1:0\" for metrics: the port must be a number "
      "from 1 to 65535" },
    { K_MAIN, "metrics = 9110",
      "bad address \"9110\" for metrics: missing \":PORT\"" },
    { K_MAIN, "spool_dir = spool",
      "bad value \"spool\" for spool_dir (use an absolute directory path)" },
    { K_MAIN, "spool_dir = /var/spool/pop\x01gate",
      "bad value \"/var/spool/pop?gate\" for spool_dir (use an absolute "
      "directory path)" },
    { K_MAIN, "spool_dir =", "empty value for spool_dir" },
    { K_MAIN, "memory_per_message = 4095",
      "memory_per_message = 4095 is out of range (4K..1G)" },
    { K_MAIN, "memory_per_message = 1025M",
      "memory_per_message = 1025M is out of range (4K..1G)" },
    { K_MAIN, "memory_per_message = 1MB",
      "bad size \"1MB\" for memory_per_message (use e.g. 512, 64K, 1M)" },
    { K_MAIN, "max_message_size = 4097M",
      "max_message_size = 4097M is out of range (4K..4G)" },
    { K_MAIN, "max_message_size = 1K",
      "max_message_size = 1K is out of range (4K..4G)" },
    { K_MAIN, "max_message_size = -1",
      "bad size \"-1\" for max_message_size (use e.g. 512, 64K, 1M)" },
    { K_MAIN, "memory_budget = 1025G",
      "memory_budget = 1025G is out of range (4K..1024G)" },
    { K_MAIN, "memory_budget = 0",
      "memory_budget = 0 is out of range (4K..1024G)" },
    { K_MAIN, "scan_threads = 0",
      "scan_threads = 0 is out of range (use auto or 1..256)" },
    { K_MAIN, "scan_threads = 257",
      "scan_threads = 257 is out of range (use auto or 1..256)" },
    { K_MAIN, "scan_threads = many",
      "bad value \"many\" for scan_threads (use auto or a number from 1 to "
      "256)" },
    { K_MAIN, "scan_threads =", "empty value for scan_threads" },

    { K_LISTENER, "tls = maybe",
      "bad value \"maybe\" for tls (use off, starttls or implicit)" },
    { K_LISTENER, "tls = no",
      "bad value \"no\" for tls (use off, starttls or implicit)" },
    { K_LISTENER, "tls =", "empty value for tls" },
    { K_LISTENER, "max_clients = 0",
      "max_clients = 0 is out of range (1..1000000)" },
    { K_LISTENER, "max_clients = 1000001",
      "max_clients = 1000001 is out of range (1..1000000)" },
    { K_LISTENER, "max_clients = ten",
      "bad number \"ten\" for max_clients (use a whole number from 1 to "
      "1000000)" },
    { K_LISTENER, "max_clients = 18446744073709551616",
      "bad number \"18446744073709551616\" for max_clients (use a whole "
      "number from 1 to 1000000)" },
    { K_LISTENER, "max_clients_per_ip = 1000001",
      "max_clients_per_ip = 1000001 is out of range (0..1000000)" },
    { K_LISTENER, "max_clients_per_ip = -1",
      "bad number \"-1\" for max_clients_per_ip (use a whole number from 0 "
      "to 1000000)" },
    { K_LISTENER, "idle_timeout = 9m",
      "idle_timeout = 9m is below 10m: RFC 1939 section 3 requires an "
      "autologout timer of at least 10 minutes" },
    { K_LISTENER, "idle_timeout = 599s",
      "idle_timeout = 599s is below 10m: RFC 1939 section 3 requires an "
      "autologout timer of at least 10 minutes" },
    { K_LISTENER, "idle_timeout = 0",
      "idle_timeout = 0 is below 10m: RFC 1939 section 3 requires an "
      "autologout timer of at least 10 minutes" },
    { K_LISTENER, "idle_timeout = 10x",
      "bad duration \"10x\" for idle_timeout (use e.g. 30s, 10m, 1h)" },
    { K_LISTENER, "idle_timeout = 10 m",
      "bad duration \"10 m\" for idle_timeout (use e.g. 30s, 10m, 1h)" },
    { K_LISTENER, "idle_timeout = 25h",
      "idle_timeout = 25h is out of range (10m..24h)" },
    { K_LISTENER, "login_timeout = 500ms",
      "login_timeout = 500ms is out of range (1s..24h)" },
    { K_LISTENER, "login_timeout = 1d",
      "bad duration \"1d\" for login_timeout (use e.g. 30s, 10m, 1h)" },
    { K_LISTENER, "max_errors = 0",
      "max_errors = 0 is out of range (1..1000)" },
    { K_LISTENER, "max_errors = 1001",
      "max_errors = 1001 is out of range (1..1000)" },
    { K_LISTENER, "max_errors = 1e3",
      "bad number \"1e3\" for max_errors (use a whole number from 1 to "
      "1000)" },
    { K_LISTENER, "tls_min_version = TLSv1",
      "tls_min_version = TLSv1 is not allowed (RFC 8996/8997: TLS 1.2 or "
      "later)" },
    { K_LISTENER, "tls_min_version = TLSv1.0",
      "tls_min_version = TLSv1.0 is not allowed (RFC 8996/8997: TLS 1.2 or "
      "later)" },
    { K_LISTENER, "tls_min_version = tlsv1.1",
      "tls_min_version = TLSv1.1 is not allowed (RFC 8996/8997: TLS 1.2 or "
      "later)" },
    { K_LISTENER, "tls_min_version = SSLv3",
      "tls_min_version = SSLv3 is not allowed (RFC 8996/8997: TLS 1.2 or "
      "later)" },
    { K_LISTENER, "tls_min_version = TLS1.2",
      "bad value \"TLS1.2\" for tls_min_version (use TLSv1.2 or TLSv1.3)" },
    { K_LISTENER, "tls_min_version = TLSv1.4",
      "bad value \"TLSv1.4\" for tls_min_version (use TLSv1.2 or TLSv1.3)" },
    { K_LISTENER, "tls_min_version = 1.2",
      "bad value \"1.2\" for tls_min_version (use TLSv1.2 or TLSv1.3)" },
    { K_LISTENER, "tls_min_version =", "empty value for tls_min_version" },
    { K_LISTENER, "handshake_timeout = 0",
      "handshake_timeout = 0 is out of range (1s..10m)" },
    { K_LISTENER, "handshake_timeout = 999ms",
      "handshake_timeout = 999ms is out of range (1s..10m)" },
    { K_LISTENER, "handshake_timeout = 601s",
      "handshake_timeout = 601s is out of range (1s..10m)" },
    { K_LISTENER, "handshake_timeout = soon",
      "bad duration \"soon\" for handshake_timeout (use e.g. 30s, 10m, "
      "1h)" },
    { K_LISTENER, "require_tls = maybe",
      "bad value \"maybe\" for require_tls (use yes or no)" },
    { K_LISTENER, "require_tls = yes",
      "require_tls = yes on a tls = off listener would refuse every login" },
    { K_LISTENER, "ciphers = NOSUCHCIPHER",
      "ciphers = NOSUCHCIPHER matches no TLS 1.2 cipher of this OpenSSL (use "
      "a cipher string such as ECDHE+AESGCM:ECDHE+CHACHA20; TLS 1.3 suites "
      "are not set here)" },
    { K_LISTENER, "ciphers = TLS_AES_128_GCM_SHA256",
      "ciphers = TLS_AES_128_GCM_SHA256 matches no TLS 1.2 cipher of this "
      "OpenSSL (use a cipher string such as ECDHE+AESGCM:ECDHE+CHACHA20; "
      "TLS 1.3 suites are not set here)" },
    { K_LISTENER, "ciphers = !ALL",
      "ciphers = !ALL matches no TLS 1.2 cipher of this OpenSSL (use a "
      "cipher string such as ECDHE+AESGCM:ECDHE+CHACHA20; TLS 1.3 suites "
      "are not set here)" },
    { K_LISTENER, "ciphers = HIGH\x01",
      "bad value \"HIGH?\" for ciphers (an OpenSSL cipher string)" },
    { K_LISTENER, "ciphers =", "empty value for ciphers" },

    { K_UPSTREAM, "tls = ssl",
      "bad value \"ssl\" for tls (use off, starttls or implicit)" },
    { K_UPSTREAM, "connect_timeout = 99ms",
      "connect_timeout = 99ms is out of range (100ms..1h)" },
    { K_UPSTREAM, "connect_timeout = 2h",
      "connect_timeout = 2h is out of range (100ms..1h)" },
    { K_UPSTREAM, "connect_timeout = fast",
      "bad duration \"fast\" for connect_timeout (use e.g. 30s, 10m, 1h)" },
    { K_UPSTREAM, "timeout = 0", "timeout = 0 is out of range (1s..24h)" },
    { K_UPSTREAM, "timeout = 1.5h",
      "bad duration \"1.5h\" for timeout (use e.g. 30s, 10m, 1h)" },
    { K_UPSTREAM, "max_response_line = 511",
      "max_response_line = 511 is out of range (512..64K)" },
    { K_UPSTREAM, "max_response_line = 65537",
      "max_response_line = 65537 is out of range (512..64K)" },
    { K_UPSTREAM, "max_response_line = 1M",
      "max_response_line = 1M is out of range (512..64K)" },
    { K_UPSTREAM, "max_response_line = 64KB",
      "bad size \"64KB\" for max_response_line (use e.g. 512, 64K, 1M)" },
    { K_UPSTREAM, "max_response_line = 18446744073709551616",
      "bad size \"18446744073709551616\" for max_response_line (use e.g. "
      "512, 64K, 1M)" },
    { K_UPSTREAM, "max_response_line = 17179869184G",
      "bad size \"17179869184G\" for max_response_line (use e.g. 512, 64K, "
      "1M)" },
    { K_UPSTREAM, "server = mail.example",
      "bad address \"mail.example\" for server: missing \":PORT\"" },
    { K_UPSTREAM, "server = 1.2.3.999:110",
      "bad address \"1.2.3.999:110\" for server: bad host name" },
    { K_UPSTREAM, "server = bad!host:110",
      "bad address \"bad!host:110\" for server: bad host name" },
    { K_UPSTREAM, "server = ::1:110",
      "bad address \"::1:110\" for server: an IPv6 address needs brackets, "
      "as in [::1]:110" },
    { K_UPSTREAM, "server = [::1]",
      "bad address \"[::1]\" for server: missing \":PORT\" after \"]\"" },
    { K_UPSTREAM, "server = [::x]:110",
      "bad address \"[::x]:110\" for server: bad IPv6 address in brackets" },
    { K_UPSTREAM, "server = [::1:110",
      "bad address \"[::1:110\" for server: missing \"]\" after the IPv6 "
      "address" },
    { K_UPSTREAM, "server = mail:65536",
      "bad address \"mail:65536\" for server: the port must be a number "
      "from 1 to 65535" },
    { K_UPSTREAM, "verify = maybe",
      "bad value \"maybe\" for verify (use yes or no)" },
    { K_UPSTREAM, "verify =", "empty value for verify" },
    { K_UPSTREAM, "ca_file = ca.pem",
      "bad value \"ca.pem\" for ca_file (use an absolute file path)" },
    { K_UPSTREAM, "ca_file = /etc/",
      "bad value \"/etc/\" for ca_file (use an absolute file path)" },
    { K_UPSTREAM, "ca_file = /nonexistent/ca.pem",
      "cannot read ca_file \"/nonexistent/ca.pem\": No such file or "
      "directory" },
    { K_UPSTREAM, "ca_file = /dev/null",
      "cannot read ca_file \"/dev/null\": not a regular file" },
    { K_UPSTREAM, "ca_file = /",
      "bad value \"/\" for ca_file (use an absolute file path)" },
  };
  /* server_name: neither a DNS name nor an IP address. */
  static const char *const bad_names[] = {
    "mail.example:995", "[::1]", "-x.example", "x-.example", "a..b",
    "a.example.", ".a.example", "1.2.3.999", "mail example", "m@il.example",
    "123", "::g",
    "a23456789012345678901234567890123456789012345678901234567890abcd."
    "example",
  };
  char buf[1024], want[1024];
  size_t i;
  static const int line[] = { 2, 4, 6 };

  (void)state;
  for (i = 0; i < sizeof cases / sizeof *cases; i++) {
    snprintf(want, sizeof want, NAME ":%d: %s", line[cases[i].kind],
             cases[i].msg);
    expect_only_err(with(buf, sizeof buf, cases[i].kind, cases[i].line),
                    want);
  }
  for (i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
    char line_[256];
    snprintf(line_, sizeof line_, "server_name = %s", bad_names[i]);
    snprintf(want, sizeof want,
             NAME ":6: bad value \"%s\" for server_name (use a DNS name such "
             "as mail.example or an IP address, without port or brackets)",
             bad_names[i]);
    expect_only_err(with(buf, sizeof buf, K_UPSTREAM, line_), want);
  }
}

/* bind and upstream are required, so they get their own frames. */
static void test_bad_bind_and_ref(void **state)
{
  (void)state;
  expect_only_err("[listener:a]\nbind = localhost:110\nupstream = u\n" BASE_U,
                  NAME ":2: bad address \"localhost:110\" for bind: the host "
                  "must be an IP address, such as 127.0.0.1, 0.0.0.0, [::1] "
                  "or [::]");
  expect_only_err("[listener:a]\nbind = *:110\nupstream = u\n" BASE_U,
                  NAME ":2: bad address \"*:110\" for bind: \"*\" is not "
                  "supported: use 0.0.0.0 or [::]");
  expect_only_err("[listener:a]\nbind = 127.0.0.1:65536\nupstream = u\n"
                  BASE_U,
                  NAME ":2: bad address \"127.0.0.1:65536\" for bind: the "
                  "port must be a number from 1 to 65535");
  expect_only_err("[listener:a]\nbind = ::1:110\nupstream = u\n" BASE_U,
                  NAME ":2: bad address \"::1:110\" for bind: an IPv6 "
                  "address needs brackets, as in [::1]:110");
  expect_only_err("[listener:a]\nbind =\nupstream = u\n" BASE_U,
                  NAME ":2: empty value for bind");
  expect_only_err("[listener:a]\nbind = 127.0.0.1:110\nupstream = bad name\n"
                  BASE_U,
                  NAME ":3: bad value \"bad name\" for upstream (the NAME of "
                  "an [upstream:NAME] section)");
}

/* ---- the FILE:LINE of each kind of error ---- */

static void test_err_unknown_section(void **state)
{
  (void)state;
  expect_only_err(BASE_L BASE_U "\n[weird]\nfoo = 1\n",
                  NAME ":7: unknown section [weird] (use [popgate], "
                  "[listener:NAME], [upstream:NAME] or [filter:NAME])");
  expect_only_err(BASE_L BASE_U "[pop:gate]\nx = 1\n",
                  NAME ":6: unknown section [pop:gate] (use [popgate], "
                  "[listener:NAME], [upstream:NAME] or [filter:NAME])");
  expect_only_err(BASE_L BASE_U "[Popgate]\n",
                  NAME ":6: unknown section [Popgate] (use [popgate], "
                  "[listener:NAME], [upstream:NAME] or [filter:NAME])");
  expect_only_err(BASE_L BASE_U "[filter]\ntype = clamav\n",
                  NAME ":6: section [filter] needs a name: [filter:NAME]");
  expect_only_err(BASE_L BASE_U "[Filter:x]\ntype = clamav\n",
                  NAME ":6: unknown section [Filter:x] (use [popgate], "
                  "[listener:NAME], [upstream:NAME] or [filter:NAME])");
  expect_only_err(BASE_L BASE_U "[listener]\nbind = 1.1.1.1:1\n",
                  NAME ":6: section [listener] needs a name: "
                  "[listener:NAME]");
  expect_only_err(BASE_L BASE_U "[upstream:]\n",
                  NAME ":6: section [upstream] needs a name: "
                  "[upstream:NAME]");
  expect_only_err(BASE_L BASE_U "[listener:a b]\nbind = 1.1.1.1:1\n",
                  NAME ":6: bad section name \"a b\" in [listener:...] (use "
                  "up to 64 letters, digits, \"_\", \".\" and \"-\")");
  expect_only_err(BASE_L BASE_U "[popgate:x]\n",
                  NAME ":6: section [popgate] takes no name");
  expect_only_err(BASE_L BASE_U "[popgate] junk\n",
                  NAME ":6: unexpected text \"junk\" after the section "
                  "header");
  expect_only_err(BASE_L BASE_U "[popgate\nworkers = 1\n",
                  NAME ":6: missing \"]\" in section header");
}

/* Whitespace inside the brackets is trimmed; a comment may follow. */
static void test_section_spacing(void **state)
{
  struct px_conf *c;

  (void)state;
  c = load_ok("[ listener:a ]   ; the listener\nbind = 127.0.0.1:1\n"
              "upstream = u\n[upstream:u]  # the upstream\n"
              "server = 127.0.0.1:2\n");
  assert_string_equal(c->listeners[0].name, "a");
  assert_string_equal(c->upstreams[0].name, "u");
  px_conf_unref(&c);
}

static void test_err_unknown_key(void **state)
{
  (void)state;
  expect_only_err(BASE_L "foo = 1\n" BASE_U,
                  NAME ":4: unknown key \"foo\" in [listener:a]");
  expect_only_err("[popgate]\n\nbar = 1\n" BASE_L BASE_U,
                  NAME ":3: unknown key \"bar\" in [popgate]");
  expect_only_err(BASE_L BASE_U "Server = 1.1.1.1:1\n",
                  NAME ":6: unknown key \"Server\" in [upstream:u]");
  expect_only_err(BASE_L "server = 1.1.1.1:1\n" BASE_U,
                  NAME ":4: unknown key \"server\" in [listener:a] (server "
                  "belongs in [upstream:NAME])");
  expect_only_err(BASE_L BASE_U "workers = 2\n",
                  NAME ":6: unknown key \"workers\" in [upstream:u] (workers "
                  "belongs in [popgate])");
  /* A key DESIGN.md promises that this build does not implement. */
  expect_only_err(BASE_L "proxy_protocol = v2\n" BASE_U,
                  NAME ":4: key \"proxy_protocol\" in [listener:a] is not "
                  "supported yet by this build");
  expect_only_err(BASE_L BASE_U "[filter:f]\ntype = header\nadd = X-A: b\n"
                  "bind = 1.1.1.1:1\n",
                  NAME ":9: unknown key \"bind\" in [filter:f] (bind belongs "
                  "in [listener:NAME])");
  expect_only_err(BASE_L "type = clamav\n" BASE_U,
                  NAME ":4: unknown key \"type\" in [listener:a] (type "
                  "belongs in [filter:NAME])");
  /* cert is a key of [listener:NAME] and [upstream:NAME]: the message
   * names the first. */
  expect_only_err("[popgate]\ncert = /a.pem\n" BASE_L BASE_U,
                  NAME ":2: unknown key \"cert\" in [popgate] (cert belongs "
                  "in [listener:NAME])");
  expect_only_err(BASE_L BASE_U "tls_min_version = TLSv1.3\n",
                  NAME ":6: unknown key \"tls_min_version\" in [upstream:u] "
                  "(tls_min_version belongs in [listener:NAME])");
  /* The continuation lines of an unknown key add no errors. */
  expect_only_err(BASE_L "foo = 1\n  2\n  3\n" BASE_U,
                  NAME ":4: unknown key \"foo\" in [listener:a]");
  expect_only_err("workers = 1\n" BASE_L BASE_U,
                  NAME ":1: key \"workers\" outside of any section (put it "
                  "under [popgate], [listener:NAME], [upstream:NAME] or "
                  "[filter:NAME])");
  expect_only_err(BASE_L "= 1\n" BASE_U,
                  NAME ":4: missing key name before \"=\"");
  /* Keys of a broken section are ignored quietly. */
  expect_only_err(BASE_L BASE_U "[nope]\nfoo = 1\nbar = 2\n",
                  NAME ":6: unknown section [nope] (use [popgate], "
                  "[listener:NAME], [upstream:NAME] or [filter:NAME])");
}

static void test_err_syntax(void **state)
{
  (void)state;
  expect_only_err(BASE_L "just words\n" BASE_U,
                  NAME ":4: expected \"key = value\", \"[section]\" or a "
                  "comment");
  /* inih reads "key: value" too. */
  struct px_conf *c = load_ok(BASE_L "max_errors: 4\n" BASE_U);
  assert_int_equal(c->listeners[0].max_errors, 4);
  px_conf_unref(&c);
}

static void test_err_bad_value_line(void **state)
{
  (void)state;
  expect_only_err("; comment\n\n[popgate]\n# another\n\nlog_level = loud\n"
                  BASE_L BASE_U,
                  NAME ":6: bad value \"loud\" for log_level (use error, "
                  "warn, info or debug)");
}

static void test_err_duplicate_key(void **state)
{
  (void)state;
  expect_only_err(BASE_L "\nbind = 127.0.0.1:1200\n" BASE_U,
                  NAME ":5: duplicate key \"bind\" in [listener:a] (first at "
                  "line 2)");
  /* Even when the first value was bad. */
  expect_err_line(BASE_L "max_errors = x\nmax_errors = 3\n" BASE_U,
                  NAME ":5: duplicate key \"max_errors\" in [listener:a] "
                  "(first at line 4)");
  assert_int_equal(count_lines(err), 2);
  expect_only_err("[popgate]\nlog = stderr\nlog = syslog\n" BASE_L BASE_U,
                  NAME ":3: duplicate key \"log\" in [popgate] (first at "
                  "line 2)");
}

static void test_err_duplicate_section(void **state)
{
  (void)state;
  expect_only_err("[popgate]\nworkers = 1\n" BASE_L BASE_U "[popgate]\n"
                  "workers = 2\n",
                  NAME ":8: duplicate section [popgate] (first at line 1)");
  /* The duplicate's values are still checked, then dropped. */
  expect_err_line("[popgate]\n" BASE_L BASE_U "[popgate]\nworkers = 0\n",
                  NAME ":7: duplicate section [popgate] (first at line 1)");
  expect_err_line("[popgate]\n" BASE_L BASE_U "[popgate]\nworkers = 0\n",
                  NAME ":8: workers = 0 is out of range (use auto or 1..256)");
  assert_int_equal(count_lines(err), 2);
  expect_only_err(BASE_L BASE_U "[listener:a]\nbind = 127.0.0.1:9\n"
                  "upstream = u\n",
                  NAME ":6: duplicate section [listener:a] (first at line "
                  "1)");
  expect_only_err(BASE_L BASE_U "[upstream:u]\nserver = 1.1.1.1:1\n",
                  NAME ":6: duplicate section [upstream:u] (first at line "
                  "4)");
}

static void test_err_missing_required(void **state)
{
  (void)state;
  expect_only_err("[listener:a]\nupstream = u\n" BASE_U,
                  NAME ":1: missing required key \"bind\" in [listener:a]");
  expect_only_err("\n[listener:a]\nbind = 127.0.0.1:1\n" BASE_U,
                  NAME ":2: missing required key \"upstream\" in "
                  "[listener:a]");
  expect_only_err(BASE_L "\n\n[upstream:u]\ntimeout = 1m\n",
                  NAME ":6: missing required key \"server\" in [upstream:u]");
  /* Sorted by line: the header's error comes before later ones. */
  expect_err_line("[listener:a]\nupstream = u\nmax_errors = 0\n" BASE_U,
                  NAME ":1: missing required key \"bind\" in [listener:a]");
  assert_string_equal(err, NAME ":1: missing required key \"bind\" in "
                      "[listener:a]\n" NAME ":3: max_errors = 0 is out of "
                      "range (1..1000)\n");
}

static void test_err_dangling_ref(void **state)
{
  (void)state;
  expect_only_err("[listener:a]\nbind = 127.0.0.1:1\n\nupstream = nosuch\n"
                  BASE_U,
                  NAME ":4: upstream \"nosuch\" in [listener:a] is not "
                  "defined (no [upstream:nosuch] section)");
  expect_only_err("[listener:a]\nbind = 127.0.0.1:1\nupstream = U\n" BASE_U,
                  NAME ":3: upstream \"U\" in [listener:a] is not defined "
                  "(no [upstream:U] section)");
}

static void test_err_no_listener(void **state)
{
  (void)state;
  expect_only_err(BASE_U, NAME ": no [listener:NAME] section: at least one "
                          "listener is required");
  expect_only_err("", NAME ": no [listener:NAME] section: at least one "
                      "listener is required");
  /* Whole-file errors come last. */
  expect_err_line("[popgate]\nworkers = 0\n",
                  NAME ": no [listener:NAME] section: at least one listener "
                  "is required");
  assert_string_equal(err, NAME ":2: workers = 0 is out of range (use auto "
                      "or 1..256)\n" NAME ": no [listener:NAME] section: at "
                      "least one listener is required\n");
}

static void test_err_same_bind(void **state)
{
  (void)state;
  expect_only_err(BASE_L "[listener:b]\n\nbind = 127.0.0.1:1100\n"
                  "upstream = u\n" BASE_U,
                  NAME ":6: bind = 127.0.0.1:1100 in [listener:b] is already "
                  "used by [listener:a] (line 2)");
  /* The same address spelled differently. */
  expect_only_err("[listener:a]\nbind = [::1]:110\nupstream = u\n"
                  "[listener:b]\nbind = [0:0::1]:0110\nupstream = u\n" BASE_U,
                  NAME ":5: bind = [0:0::1]:110 in [listener:b] is already "
                  "used by [listener:a] (line 2)");
  /* Same port on different addresses is fine. */
  struct px_conf *c = load_ok(BASE_L "[listener:b]\nbind = 127.0.0.2:1100\n"
                              "upstream = u\n" BASE_U);
  px_conf_unref(&c);
  expect_only_err("[popgate]\nmetrics = 127.0.0.1:1100\n" BASE_L BASE_U,
                  NAME ":2: metrics = 127.0.0.1:1100 is also the bind of "
                  "[listener:a] (line 4)");
}

/* ---- long lines ---- */

/* A line of n characters: "log = /" then 'a's. */
static char *long_log_line(size_t n)
{
  char *s = malloc(n + 1);

  assert_non_null(s);
  memcpy(s, "log = /", 7);
  memset(s + 7, 'a', n - 7);
  s[n] = '\0';
  return s;
}

static void test_long_line_limit(void **state)
{
  char *l199 = long_log_line(199), *l200 = long_log_line(200);
  char *text = malloc(4096);
  struct px_conf *c;

  (void)state;
  assert_non_null(text);
  /* 199 characters: read whole. */
  snprintf(text, 4096, "[popgate]\n%s\n" BASE_L BASE_U, l199);
  c = load_ok(text);
  assert_int_equal(strlen(c->log_path), 199 - 6);
  px_conf_unref(&c);
  /* Also with CRLF, and as the last line without a newline. */
  snprintf(text, 4096, BASE_L BASE_U "[popgate]\r\n%s\r\n", l199);
  c = load_ok(text);
  assert_int_equal(strlen(c->log_path), 199 - 6);
  px_conf_unref(&c);
  snprintf(text, 4096, BASE_L BASE_U "[popgate]\n%s", l199);
  c = load_ok(text);
  assert_int_equal(strlen(c->log_path), 199 - 6);
  px_conf_unref(&c);

  /* 200 characters: an error at its own line, and nothing else. */
  snprintf(text, 4096, "[popgate]\n%s\n" BASE_L BASE_U, l200);
  expect_only_err(text, NAME ":2: line longer than 199 characters");
  snprintf(text, 4096, BASE_L BASE_U "[popgate]\n%s", l200);
  expect_only_err(text, NAME ":7: line longer than 199 characters");
  free(l199);
  free(l200);
  free(text);
}

static void test_long_line_numbers(void **state)
{
  char *text = malloc(40000);
  char *l5000 = long_log_line(5000), *l250 = long_log_line(250);

  (void)state;
  assert_non_null(text);
  /* The line after a long line is counted right, and parsed. */
  snprintf(text, 40000, "[popgate]\n%s\nlog_level = loud\n" BASE_L BASE_U,
           l5000);
  expect_err_line(text, NAME ":2: line longer than 199 characters");
  expect_err_line(text, NAME ":3: bad value \"loud\" for log_level (use "
                        "error, warn, info or debug)");
  assert_int_equal(count_lines(err), 2);
  /* Several long lines, comments too. */
  snprintf(text, 40000, ";%s\n[popgate]\n\n%s\n" BASE_L "%s\nmax_errors = 0\n"
           BASE_U, l250, l250, l250);
  expect_err_line(text, NAME ":1: line longer than 199 characters");
  expect_err_line(text, NAME ":4: line longer than 199 characters");
  expect_err_line(text, NAME ":8: line longer than 199 characters");
  expect_err_line(text, NAME ":9: max_errors = 0 is out of range (1..1000)");
  assert_int_equal(count_lines(err), 4);
  free(l5000);
  free(l250);
  free(text);
}

/* A continuation line that is too long drops the value: no cut value is
 * ever parsed, and no second error about it. */
static void test_long_continuation(void **state)
{
  char *text = malloc(4096);
  char *l250 = long_log_line(250);

  (void)state;
  assert_non_null(text);
  snprintf(text, 4096, "[popgate]\nlog = /var/log\n  %s\n  more\n"
           "log_level = debug\n" BASE_L BASE_U, l250 + 7);
  expect_only_err(text, NAME ":3: line longer than 199 characters");
  /* A long key line: its continuation lines are dropped with it. */
  snprintf(text, 4096, "[popgate]\nworkers = 2\n%s\n  more\n" BASE_L BASE_U,
           l250);
  expect_only_err(text, NAME ":3: line longer than 199 characters");
  /* A long section header ends the section before it: its keys are not
   * taken as duplicates in [listener:a]. */
  snprintf(text, 4096, BASE_L "[listener:%s]\nbind = 127.0.0.1:2\n" BASE_U,
           l250);
  expect_only_err(text, NAME ":4: line longer than 199 characters");
  /* A long comment line does not end the value around it. */
  snprintf(text, 4096, "[popgate]\nlog_level = info\n;%s\n  x\n" BASE_L
           BASE_U, l250);
  expect_err_line(text, NAME ":2: bad value \"info x\" for log_level (use "
                        "error, warn, info or debug) (lines 2-4 joined: an "
                        "indented line continues the value above it)");
  expect_err_line(text, NAME ":3: line longer than 199 characters");
  assert_int_equal(count_lines(err), 2);
  free(l250);
  free(text);
}

/* ---- continuation lines ---- */

static void test_continuation_join(void **state)
{
  struct px_conf *c;

  (void)state;
  c = load_ok("[popgate]\nlog = /var/log/pop\n   gate\n\tfile.log\n"
              BASE_L BASE_U);
  assert_string_equal(c->log_path, "/var/log/pop gate file.log");
  px_conf_unref(&c);
  /* Inline comments go on continuation lines too; blank and comment
   * lines do not end the value (inih's rule). */
  c = load_ok("[popgate]\nlog = /tmp/a ; one\n  b ; two\n\n; note\n  c\n"
              "workers = 3\n" BASE_L BASE_U);
  assert_string_equal(c->log_path, "/tmp/a b c");
  assert_int_equal(c->workers, 3);
  px_conf_unref(&c);
  /* An indented line right after a header is a key, not a continuation. */
  c = load_ok("[listener:a]\n  bind = 127.0.0.1:1\nupstream = u\n" BASE_U);
  assert_string_equal(c->listeners[0].bind.port, "1");
  px_conf_unref(&c);
}

static void test_continuation_errors(void **state)
{
  (void)state;
  /* The joined value is what gets checked, at the key's line. */
  expect_only_err(BASE_L "max_errors = 1\n  0\n" BASE_U,
                  NAME ":4: bad number \"1 0\" for max_errors (use a whole "
                  "number from 1 to 1000) (lines 4-5 joined: an indented line "
                  "continues the value above it)");
  /* An indented key after a key is a continuation: a classic mistake. */
  expect_only_err("[popgate]\nworkers = 1\n\n  log = syslog\n" BASE_L BASE_U,
                  NAME ":2: bad value \"1 log = syslog\" for workers (use "
                  "auto or a number from 1 to 256) (lines 2-4 joined: an "
                  "indented line continues the value above it)");
  /* So is an indented section header. */
  expect_err_line("[listener:a]\nbind = 127.0.0.1:1\nupstream = u\n"
                  "  [upstream:u]\nserver = 1.1.1.1:1\n",
                  NAME ":3: bad value \"u [upstream:u]\" for upstream (the "
                  "NAME of an [upstream:NAME] section) (lines 3-4 joined: an "
                  "indented line continues the value above it)");
  /* A repeatable key: indented lines join one value, not add servers. */
  expect_only_err(BASE_L "[upstream:u]\nserver = 1.1.1.1:1\n  2.2.2.2:2\n",
                  NAME ":5: bad address \"1.1.1.1:1 2.2.2.2:2\" for server: "
                  "unexpected space (lines 5-6 joined: an indented line "
                  "continues the value above it)");
}

static void test_continuation_too_long(void **state)
{
  char *text = malloc(20000);
  size_t n;
  int i;

  (void)state;
  assert_non_null(text);
  n = (size_t)snprintf(text, 20000, "[popgate]\nlog = /a\n");
  for (i = 0; i < 50; i++)
    n += (size_t)snprintf(text + n, 20000 - n, "  %0100d\n", i);
  snprintf(text + n, 20000 - n, BASE_L BASE_U);
  expect_only_err(text, NAME ":2: value of log is longer than 4096 "
                        "characters");
  free(text);
}

static void test_repeatable_server(void **state)
{
  struct px_conf *c;

  (void)state;
  c = load_ok(BASE_L "[upstream:u]\nserver = a.example:110\n"
              "timeout = 1m\nserver = 10.0.0.2:110\nserver = [::1]:1110\n");
  assert_int_equal(c->upstreams[0].nservers, 3);
  assert_string_equal(c->upstreams[0].servers[0].host, "a.example");
  assert_int_equal(c->upstreams[0].servers[0].line, 5);
  assert_string_equal(c->upstreams[0].servers[1].host, "10.0.0.2");
  assert_int_equal(c->upstreams[0].servers[1].line, 7);
  assert_string_equal(c->upstreams[0].servers[2].host, "::1");
  assert_string_equal(c->upstreams[0].servers[2].port, "1110");
  px_conf_unref(&c);
}

/* ---- input forms ---- */

static void test_bom_crlf(void **state)
{
  struct px_conf *c;

  (void)state;
  c = load_ok("\xEF\xBB\xBF[popgate]\r\nworkers = 2\r\n\r\n"
              "[listener:a]\r\nbind = 127.0.0.1:1\r\nupstream = u\r\n"
              "[upstream:u]\r\nserver = 127.0.0.1:2\r\n  ; x\r\n");
  assert_int_equal(c->workers, 2);
  assert_string_equal(c->upstreams[0].servers[0].port, "2");
  px_conf_unref(&c);
  expect_only_err("\xEF\xBB\xBF\xEF\xBB\xBF[popgate]\n" BASE_L BASE_U,
                  NAME ":1: more than one byte order mark");
  /* A lone 0xEF is not a BOM; the line is parsed (and is bad). */
  expect_only_err("\xEF[popgate]\n" BASE_L BASE_U,
                  NAME ":1: expected \"key = value\", \"[section]\" or a "
                  "comment");
}

static void test_error_cap(void **state)
{
  char text[4096];
  size_t n;
  int i;

  (void)state;
  n = (size_t)snprintf(text, sizeof text, BASE_L BASE_U "[popgate]\n");
  for (i = 0; i < 30; i++)
    n += (size_t)snprintf(text + n, sizeof text - n, "x%d = 1\n", i);
  expect_err_line(text, NAME ":7: unknown key \"x0\" in [popgate]");
  expect_err_line(text, NAME ":26: unknown key \"x19\" in [popgate]");
  expect_err_line(text, NAME ": 10 more errors not shown");
  assert_int_equal(count_lines(err), 21);
}

static void test_err_buffer(void **state)
{
  struct px_conf *c = (struct px_conf *)1;
  char small[16];

  (void)state;
  memset(small, 'x', sizeof small);
  assert_int_equal(px_conf_load_string(NAME, "[bad]\n", &c, small,
                                       sizeof small),
                   -EINVAL);
  assert_null(c);
  assert_int_equal(strlen(small), sizeof small - 1);
  assert_memory_equal(small, NAME ":1: unk", 12);
  /* No buffer at all. */
  assert_int_equal(px_conf_load_string(NAME, "[bad]\n", &c, NULL, 0),
                   -EINVAL);
  assert_int_equal(px_conf_load_string(NAME, NULL, &c, err, sizeof err),
                   -EINVAL);
  assert_int_equal(px_conf_load_string(NAME, "", NULL, err, sizeof err),
                   -EINVAL);
  /* Messages quote user text safely: control bytes become "?", and a long
   * value is cut. */
  expect_only_err(BASE_L BASE_U "[popgate]\nlog = /var/log/a\tb\n",
                  NAME ":7: bad value \"/var/log/a?b\" for log (use stderr, "
                  "syslog or an absolute file path)");
  expect_only_err(BASE_L BASE_U "[popgate]\nlog_level = "
                  "0123456789012345678901234567890123456789"
                  "0123456789012345678901234567890123456789xyz\n",
                  NAME ":7: bad value \""
                  "0123456789012345678901234567890123456789"
                  "0123456789012345678901234567890123456789...\" for "
                  "log_level (use error, warn, info or debug)");
  expect_only_err(BASE_L BASE_U "[popgate]\nlog_level = \x01\x7f" "x\n",
                  NAME ":7: bad value \"??x\" for log_level (use error, "
                  "warn, info or debug)");
}

/* ---- TLS ---- */

/* A listener header and its two required keys (lines 1-3); the TLS lines
 * of a test start at line 4. */
#define L3 "[listener:a]\nbind = 127.0.0.1:1100\nupstream = u\n"

static void test_tls_listener(void **state)
{
  struct px_conf *c;
  struct px_conf_listener *l;

  (void)state;
  c = load_ok(T(L3 "tls = implicit\n"            /* 4 */
                   "cert = @/a.pem\n"            /* 5 */
                   "key = @/a.key\n"             /* 6 */
                   "cert = @/b.pem ; SNI\n"      /* 7 */
                   "key = @/b.key\n"             /* 8 */
                   "tls_min_version = TLSv1.3\n" /* 9 */
                   "ciphers = ECDHE+AESGCM\n"    /* 10 */
                   "  ECDHE+CHACHA20 ; more\n"   /* 11 */
                   "require_tls = yes\n"         /* 12 */
                   "handshake_timeout = 10s\n"   /* 13 */
                   BASE_U));
  l = &c->listeners[0];
  assert_int_equal(l->tls, PX_TLS_IMPLICIT);
  assert_int_equal(l->tls_line, 4);
  assert_int_equal(l->ncerts, 2);
  assert_string_equal(l->certs[0].cert, T("@/a.pem"));
  assert_string_equal(l->certs[0].key, T("@/a.key"));
  assert_int_equal(l->certs[0].line, 5);
  assert_int_equal(l->certs[0].key_line, 6);
  assert_string_equal(l->certs[1].cert, T("@/b.pem"));
  assert_string_equal(l->certs[1].key, T("@/b.key"));
  assert_int_equal(l->certs[1].line, 7);
  assert_int_equal(l->certs[1].key_line, 8);
  assert_int_equal(l->tls_min_version, TLS1_3_VERSION);
  assert_string_equal(l->ciphers, "ECDHE+AESGCM ECDHE+CHACHA20");
  assert_int_equal(l->ciphers_line, 10);
  assert_int_equal(l->require_tls, 1);
  assert_int_equal(l->require_tls_line, 12);
  assert_true(l->handshake_timeout_ms == 10000);
  px_conf_unref(&c);

  /* Pairs go by order, not by adjacency: two certs, then two keys; a key
   * before its cert. */
  c = load_ok(T(L3 "tls = starttls\ncert = @/a.pem\ncert = @/b.pem\n"
                   "key = @/a.key\nkey = @/b.key\n" BASE_U));
  l = &c->listeners[0];
  assert_int_equal(l->ncerts, 2);
  assert_string_equal(l->certs[1].cert, T("@/b.pem"));
  assert_string_equal(l->certs[1].key, T("@/b.key"));
  assert_int_equal(l->certs[1].line, 6);
  assert_int_equal(l->certs[1].key_line, 8);
  px_conf_unref(&c);
  c = load_ok(T(L3 "key = @/a.key\ncert = @/a.pem\ntls = implicit\n" BASE_U));
  l = &c->listeners[0];
  assert_int_equal(l->ncerts, 1);
  assert_string_equal(l->certs[0].cert, T("@/a.pem"));
  assert_int_equal(l->certs[0].line, 5);
  assert_int_equal(l->certs[0].key_line, 4);
  px_conf_unref(&c);

  /* Ciphers as OpenSSL names and with every separator it knows. */
  c = load_ok(L3 "ciphers = ECDHE-RSA-AES128-GCM-SHA256,ECDHE-ECDSA-AES128-"
                 "GCM-SHA256 HIGH:!aNULL\n" BASE_U);
  assert_string_equal(c->listeners[0].ciphers, "ECDHE-RSA-AES128-GCM-SHA256,"
                      "ECDHE-ECDSA-AES128-GCM-SHA256 HIGH:!aNULL");
  px_conf_unref(&c);
  /* Words OpenSSL does not know are skipped, as OpenSSL does. */
  c = load_ok(L3 "ciphers = NOSUCH:ECDHE+AESGCM\n" BASE_U);
  px_conf_unref(&c);
}

/* require_tls: its default follows tls; yes is an error only with off. */
static void test_tls_require_default(void **state)
{
  static const struct {
    const char *lines;
    enum px_tls_mode tls;
    int require_tls;
  } cases[] = {
    { "", PX_TLS_OFF, 0 },
    { "tls = off\n", PX_TLS_OFF, 0 },
    { "tls = off\nrequire_tls = no\n", PX_TLS_OFF, 0 },
    { "tls = starttls\ncert = @/a.pem\nkey = @/a.key\n", PX_TLS_STARTTLS, 1 },
    { "tls = starttls\ncert = @/a.pem\nkey = @/a.key\nrequire_tls = no\n",
      PX_TLS_STARTTLS, 0 },
    { "tls = implicit\ncert = @/a.pem\nkey = @/a.key\n", PX_TLS_IMPLICIT, 0 },
    { "tls = implicit\ncert = @/a.pem\nkey = @/a.key\nrequire_tls = yes\n",
      PX_TLS_IMPLICIT, 1 },
  };
  char text[1024];
  struct px_conf *c;
  size_t i;

  (void)state;
  for (i = 0; i < sizeof cases / sizeof *cases; i++) {
    snprintf(text, sizeof text, L3 "%s" BASE_U, cases[i].lines);
    c = load_ok(T(text));
    assert_int_equal(c->listeners[0].tls, cases[i].tls);
    assert_int_equal(c->listeners[0].require_tls, cases[i].require_tls);
    assert_true(c->listeners[0].handshake_timeout_ms == 30000);
    assert_int_equal(c->listeners[0].tls_min_version, TLS1_2_VERSION);
    px_conf_unref(&c);
  }
  /* yes with tls = off, set or by default: at the require_tls line. */
  expect_only_err(L3 "tls = off\n\nrequire_tls = yes\n" BASE_U,
                  NAME ":6: require_tls = yes on a tls = off listener would "
                  "refuse every login");
  expect_only_err(L3 "require_tls = on\n" BASE_U,
                  NAME ":4: require_tls = yes on a tls = off listener would "
                  "refuse every login");
}

static void test_tls_listener_errors(void **state)
{
  (void)state;
  /* TLS without a certificate: at the [listener] header. */
  expect_only_err(L3 "tls = implicit\n" BASE_U,
                  NAME ":1: tls = implicit needs cert and key: add a cert = "
                  "line and a key = line to [listener:a]");
  expect_only_err("\n" L3 "tls = starttls\nrequire_tls = yes\n" BASE_U,
                  NAME ":2: tls = starttls needs cert and key: add a cert = "
                  "line and a key = line to [listener:a]");
  /* A cert without its key, a key without its cert: at that line. */
  expect_only_err(T(L3 "tls = implicit\ncert = @/a.pem\n" BASE_U),
                  T(NAME ":5: cert \"@/a.pem\" without a key (cert and key "
                    "lines pair up in order: the first key belongs to the "
                    "first cert, and so on)"));
  expect_only_err(T(L3 "tls = implicit\nkey = @/a.key\n" BASE_U),
                  T(NAME ":5: key \"@/a.key\" without a cert (cert and key "
                    "lines pair up in order: the first key belongs to the "
                    "first cert, and so on)"));
  expect_only_err(T(L3 "tls = implicit\ncert = @/a.pem\nkey = @/a.key\n"
                       "cert = @/b.pem\n" BASE_U),
                  T(NAME ":7: cert \"@/b.pem\" without a key (cert and key "
                    "lines pair up in order: the first key belongs to the "
                    "first cert, and so on)"));
  expect_only_err(T(L3 "tls = implicit\ncert = @/a.pem\nkey = @/a.key\n"
                       "\nkey = @/b.key\n" BASE_U),
                  T(NAME ":8: key \"@/b.key\" without a cert (cert and key "
                    "lines pair up in order: the first key belongs to the "
                    "first cert, and so on)"));
  /* cert/key with tls = off (set or by default): at the first of them. */
  expect_only_err(T(L3 "tls = off\ncert = @/a.pem\nkey = @/a.key\n" BASE_U),
                  NAME ":5: cert/key without tls: [listener:a] has tls = off "
                  "(set tls = implicit or starttls, or remove cert and key)");
  expect_only_err(T(L3 "key = @/a.key\n" BASE_U),
                  NAME ":4: cert/key without tls: [listener:a] has tls = off "
                  "(set tls = implicit or starttls, or remove cert and key)");
  /* Listener TLS keys belong to listeners; each section is checked on its
   * own. */
  expect_only_err(T(L3 "tls = implicit\ncert = @/a.pem\nkey = @/a.key\n"
                       "[listener:b]\nbind = 127.0.0.1:1200\nupstream = u\n"
                       "tls = implicit\n" BASE_U),
                  NAME ":7: tls = implicit needs cert and key: add a cert = "
                  "line and a key = line to [listener:b]");
}

/* The files must exist and be readable regular files, named by absolute
 * paths; an error names the file. Pairing still holds after one, so a
 * bad file costs one message, not two. */
static void test_tls_files(void **state)
{
  char want[512];
  const char *p;

  (void)state;
  expect_only_err(T(L3 "tls = implicit\ncert = @/nosuch.pem\nkey = @/a.key\n"
                       BASE_U),
                  T(NAME ":5: cannot read cert \"@/nosuch.pem\": No such file "
                    "or directory"));
  expect_only_err(T(L3 "tls = implicit\ncert = @/a.pem\nkey = @/nosuch.key\n"
                       BASE_U),
                  T(NAME ":6: cannot read key \"@/nosuch.key\": No such file "
                    "or directory"));
  expect_only_err(T(L3 "tls = implicit\ncert = @/a.pem/x\nkey = @/a.key\n"
                       BASE_U),
                  T(NAME ":5: cannot read cert \"@/a.pem/x\": Not a "
                    "directory"));
  expect_only_err(T(L3 "tls = implicit\ncert = @\nkey = @/a.key\n" BASE_U),
                  T(NAME ":5: cannot read cert \"@\": not a regular file"));
  expect_err_line(L3 "tls = implicit\ncert = /dev/null\nkey = /dev/zero\n"
                     BASE_U,
                  NAME ":5: cannot read cert \"/dev/null\": not a regular "
                  "file");
  assert_int_equal(count_lines(err), 2);
  expect_err_line(L3 "tls = implicit\ncert = /dev/null\nkey = /dev/zero\n"
                     BASE_U,
                  NAME ":6: cannot read key \"/dev/zero\": not a regular "
                  "file");
  expect_only_err(T(L3 "tls = implicit\ncert = a.pem\nkey = @/a.key\n" BASE_U),
                  NAME ":5: bad value \"a.pem\" for cert (use an absolute "
                  "file path)");
  expect_only_err(T(L3 "tls = implicit\ncert = @/a.pem\nkey = ./a.key\n"
                     BASE_U),
                  NAME ":6: bad value \"./a.key\" for key (use an absolute "
                  "file path)");
  /* A path continued over lines is one path (and says so). */
  expect_only_err(T(L3 "tls = implicit\ncert = @/a\n  .pem\nkey = @/a.key\n"
                       BASE_U),
                  T(NAME ":5: cannot read cert \"@/a .pem\": No such file or "
                    "directory (lines 5-6 joined: an indented line continues "
                    "the value above it)"));
  /* Unreadable: only an unprivileged user can tell. */
  if (geteuid() != 0) {
    p = write_file("secret.key", "x\n", 2);
    assert_int_equal(chmod(p, 0), 0);
    snprintf(want, sizeof want,
             NAME ":6: cannot read key \"%s\": Permission denied", p);
    expect_only_err(T(L3 "tls = implicit\ncert = @/a.pem\nkey = @/secret.key\n"
                         BASE_U),
                    want);
    unlink(p);
  }
}

static void test_tls_upstream(void **state)
{
  struct px_conf *c;
  struct px_conf_upstream *u;

  (void)state;
  c = load_ok(T(BASE_L "[upstream:u]\n"          /* 4 */
                       "server = mail.example:995\n"
                       "tls = implicit\n"        /* 6 */
                       "verify = yes\n"          /* 7 */
                       "ca_file = @/ca.pem\n"    /* 8 */
                       "server_name = pop.example\n"
                       "cert = @/a.pem\n"        /* 10 */
                       "key = @/a.key\n"));      /* 11 */
  u = &c->upstreams[0];
  assert_int_equal(u->tls, PX_TLS_IMPLICIT);
  assert_int_equal(u->tls_line, 6);
  assert_int_equal(u->verify, 1);
  assert_int_equal(u->verify_line, 7);
  assert_string_equal(u->ca_file, T("@/ca.pem"));
  assert_int_equal(u->ca_file_line, 8);
  assert_string_equal(u->server_name, "pop.example");
  assert_string_equal(u->client.cert, T("@/a.pem"));
  assert_string_equal(u->client.key, T("@/a.key"));
  assert_int_equal(u->client.line, 10);
  assert_int_equal(u->client.key_line, 11);
  px_conf_unref(&c);

  /* server_name: DNS names and IP addresses. */
  static const char *const names[] = {
    "mail.example", "localhost", "192.0.2.1", "2001:db8::1", "::1",
    "xn--bcher-kva.example", "a_b.example", "A.EXAMPLE", "1a.example",
    "a23456789012345678901234567890123456789012345678901234567890abc."
    "example",
  };
  char text[1024];
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    snprintf(text, sizeof text, BASE_L BASE_U "tls = starttls\n"
             "server_name = %s\n", names[i]);
    c = load_ok(text);
    assert_string_equal(c->upstreams[0].server_name, names[i]);
    px_conf_unref(&c);
  }

  /* The client certificate: both or neither. */
  expect_only_err(T(BASE_L BASE_U "tls = implicit\ncert = @/a.pem\n"),
                  T(NAME ":7: cert \"@/a.pem\" without a key (a client "
                    "certificate needs both cert and key)"));
  expect_only_err(T(BASE_L BASE_U "tls = implicit\n\nkey = @/a.key\n"),
                  T(NAME ":8: key \"@/a.key\" without a cert (a client "
                    "certificate needs both cert and key)"));
  expect_only_err(T(BASE_L BASE_U "cert = @/a.pem\nkey = @/a.key\n"
                                  "cert = @/b.pem\n"),
                  NAME ":8: duplicate key \"cert\" in [upstream:u] (first at "
                  "line 6)");
  expect_only_err(T(BASE_L BASE_U "cert = @/nosuch.pem\nkey = @/a.key\n"),
                  T(NAME ":6: cannot read cert \"@/nosuch.pem\": No such "
                    "file or directory"));
  expect_only_err(T(BASE_L BASE_U "ca_file = @/nosuch.pem\n"),
                  T(NAME ":6: cannot read ca_file \"@/nosuch.pem\": No such "
                    "file or directory"));
}

static void test_warnings(void **state)
{
  char out[1024], small[40];
  struct px_conf *c;

  (void)state;
  /* tls unset: the header's line. */
  c = load_ok(BASE_L BASE_U);
  assert_int_equal(px_conf_warnings(c, out, sizeof out), 1);
  assert_string_equal(out, NAME ":1: warning: [listener:a] tls = off: "
                      "passwords cross the network in the clear\n");
  px_conf_unref(&c);

  /* Two plain listeners (one says tls = off at line 7); an upstream with
   * verify = no and TLS; one with verify = no and no TLS (no warning). */
  c = load_ok(BASE_L "[listener:b]\nbind = 127.0.0.1:1200\nupstream = u\n"
              "tls = off\n" BASE_U "tls = starttls\nverify = no\n"
              "[upstream:v]\nserver = 127.0.0.1:1\nverify = no\n");
  assert_int_equal(px_conf_warnings(c, out, sizeof out), 3);
  assert_string_equal(out,
                      NAME ":1: warning: [listener:a] tls = off: passwords "
                      "cross the network in the clear\n"
                      NAME ":7: warning: [listener:b] tls = off: passwords "
                      "cross the network in the clear\n"
                      NAME ":11: warning: [upstream:u] verify = no: the "
                      "upstream's certificate is not checked\n");
  /* A short buffer: cut, NUL-terminated, the count unchanged. */
  memset(small, 'x', sizeof small);
  assert_int_equal(px_conf_warnings(c, small, sizeof small), 3);
  assert_int_equal(strlen(small), sizeof small - 1);
  assert_memory_equal(small, NAME ":1: warning: [listener:a]", 26);
  assert_int_equal(px_conf_warnings(c, NULL, 0), 3);
  px_conf_unref(&c);

  /* TLS everywhere, verified: nothing to say. */
  c = load_ok(T(L3 "tls = implicit\ncert = @/a.pem\nkey = @/a.key\n" BASE_U
                   "tls = implicit\n"));
  strcpy(out, "junk");
  assert_int_equal(px_conf_warnings(c, out, sizeof out), 0);
  assert_string_equal(out, "");
  px_conf_unref(&c);
}

/* ---- filters ---- */

/* [popgate] with a spool_dir that exists (lines 1-2), for configurations
 * whose listeners have filters; the listener follows at line 3. */
#define SPOOL "[popgate]\nspool_dir = @/spool\n"

/* BASE_L BASE_U, then "[filter:f]" (line 6), "type = TYPE" (line 7), extra
 * (from line 8), and the key TYPE requires unless extra has it. The
 * program of command = is the test's own. */
static const char *filter_text(char *buf, size_t n, const char *type,
                               const char *extra)
{
  char req[256] = "";

  if (strcasecmp(type, "clamd") == 0 && strstr(extra, "socket =") == NULL)
    snprintf(req, sizeof req, "socket = /run/clamav/clamd.ctl\n");
  else if (strcasecmp(type, "command") == 0 &&
           strstr(extra, "command =") == NULL)
    snprintf(req, sizeof req, "command = %s/" PROG "\n", tmpdir);
  else if (strcasecmp(type, "header") == 0 && strstr(extra, "add =") == NULL)
    snprintf(req, sizeof req, "add = X-Filtered: yes\n");
  snprintf(buf, n, BASE_L BASE_U "[filter:f]\ntype = %s\n%s\n%s", type,
           extra, req);
  return buf;
}

static void test_filter_defaults(void **state)
{
  char buf[1024];
  struct px_conf *c;
  const struct px_conf_filter *f;

  (void)state;
  c = load_ok(filter_text(buf, sizeof buf, "clamav", ""));
  assert_int_equal(c->nfilters, 1);
  f = &c->filters[0];
  assert_string_equal(f->name, "f");
  assert_int_equal(f->line, 6);
  assert_int_equal(f->type, PX_FLT_CLAMAV);
  assert_string_equal(f->database, "/var/lib/clamav");
  assert_int_equal(f->database_line, 0);
  assert_true(f->max_scan_size == 100 * 1048576);
  assert_true(f->max_file_size == 25 * 1048576);
  assert_int_equal(f->max_recursion, 16);
  assert_int_equal(f->max_files, 10000);
  assert_true(f->scan_timeout_ms == 60000);
  assert_null(f->socket);
  assert_null(f->argv);
  assert_int_equal(f->argc, 0);
  assert_null(f->add);
  assert_int_equal(f->nadd, 0);
  assert_int_equal(f->on_virus, PX_ONV_REPLACE);
  assert_null(f->quarantine_dir);
  assert_int_equal(f->quarantine_line, 0);
  assert_int_equal(f->on_error, PX_ONE_TEMPFAIL);
  /* A filter that no listener names: spool_dir is not looked at. */
  assert_int_equal(c->listeners[0].nfilters, 0);
  px_conf_unref(&c);

  /* database's default is clamav's alone. */
  c = load_ok(filter_text(buf, sizeof buf, "clamd", ""));
  f = &c->filters[0];
  assert_int_equal(f->type, PX_FLT_CLAMD);
  assert_string_equal(f->socket, "/run/clamav/clamd.ctl");
  assert_null(f->database);
  assert_true(f->scan_timeout_ms == 60000);
  px_conf_unref(&c);

  /* The names tables. */
  assert_string_equal(px_filter_type_names[PX_FLT_CLAMAV], "clamav");
  assert_string_equal(px_filter_type_names[PX_FLT_HEADER], "header");
  assert_string_equal(px_on_virus_names[PX_ONV_TAG], "tag");
  assert_string_equal(px_on_error_names[PX_ONE_PASS], "pass");
}

static void test_filter_good_values(void **state)
{
#define FO(f) offsetof(struct px_conf_filter, f)
  static const struct {
    const char *type, *line;
    size_t off;
    int t;
    uint64_t want;
  } cases[] = {
    { "clamav", "max_scan_size = 1K", FO(max_scan_size), T_U64, 1024 },
    { "clamav", "max_scan_size = 4G", FO(max_scan_size), T_U64,
      UINT64_C(4294967296) },
    { "clamav", "max_file_size = 1024", FO(max_file_size), T_U64, 1024 },
    { "clamav", "max_file_size = 2G", FO(max_file_size), T_U64,
      UINT64_C(2147483648) },
    { "clamav", "max_recursion = 1", FO(max_recursion), T_UINT, 1 },
    { "clamav", "max_recursion = 64", FO(max_recursion), T_UINT, 64 },
    { "clamav", "max_files = 1", FO(max_files), T_UINT, 1 },
    { "clamav", "max_files = 1000000", FO(max_files), T_UINT, 1000000 },
    { "clamav", "scan_timeout = 1s", FO(scan_timeout_ms), T_U64, 1000 },
    { "clamav", "scan_timeout = 1h", FO(scan_timeout_ms), T_U64, 3600000 },
    { "clamd", "scan_timeout = 90", FO(scan_timeout_ms), T_U64, 90000 },
    { "command", "scan_timeout = 2m", FO(scan_timeout_ms), T_U64, 120000 },
    { "clamav", "on_virus = replace", FO(on_virus), T_ENUM, PX_ONV_REPLACE },
    { "clamav", "on_virus = tag", FO(on_virus), T_ENUM, PX_ONV_TAG },
    { "clamd", "on_virus = REJECT", FO(on_virus), T_ENUM, PX_ONV_REJECT },
    { "clamav", "on_error = tempfail", FO(on_error), T_ENUM,
      PX_ONE_TEMPFAIL },
    { "clamd", "on_error = pass", FO(on_error), T_ENUM, PX_ONE_PASS },
    { "command", "on_error = Pass", FO(on_error), T_ENUM, PX_ONE_PASS },
    { "header", "on_error = pass", FO(on_error), T_ENUM, PX_ONE_PASS },
    { "clamav", "type = clamav", FO(type), T_ENUM, PX_FLT_CLAMAV },
    { "CLAMD", "", FO(type), T_ENUM, PX_FLT_CLAMD },
    { "command", "", FO(type), T_ENUM, PX_FLT_COMMAND },
    { "header", "", FO(type), T_ENUM, PX_FLT_HEADER },
    { "clamav", "quarantine_dir = @/q", FO(quarantine_line), T_ENUM, 8 },
    { "clamav", "database = @/db", FO(database_line), T_ENUM, 8 },
  };
#undef FO
  char buf[1024];
  size_t i;

  (void)state;
  for (i = 0; i < sizeof cases / sizeof *cases; i++) {
    struct px_conf *c;
    char *base;
    uint64_t got;

    if (strncmp(cases[i].line, "type =", 6) == 0) {
      /* type given twice would be a duplicate: put it alone. */
      c = load_ok(BASE_L BASE_U "[filter:f]\ntype = clamav\n");
    } else {
      c = load_ok(filter_text(buf, sizeof buf, cases[i].type,
                              T(cases[i].line)));
    }
    base = (char *)&c->filters[0];
    switch (cases[i].t) {
    case T_UINT:
      got = *(unsigned *)(void *)(base + cases[i].off);
      break;
    case T_U64:
      got = *(uint64_t *)(void *)(base + cases[i].off);
      break;
    default:
      got = (uint64_t) * (int *)(void *)(base + cases[i].off);
      break;
    }
    if (got != cases[i].want)
      print_error("%s: got %llu\n", cases[i].line, (unsigned long long)got);
    assert_true(got == cases[i].want);
    px_conf_unref(&c);
  }
}

static void test_filter_string_values(void **state)
{
  char buf[4096], line[1200], want[512];
  struct px_conf *c;
  const struct px_conf_filter *f;
  size_t n;

  (void)state;
  /* database: a directory or a file; quarantine_dir: a directory. */
  c = load_ok(filter_text(buf, sizeof buf, "clamav",
                          T("database = @/db\nquarantine_dir = @/q/\n")));
  f = &c->filters[0];
  assert_string_equal(f->database, T("@/db"));
  assert_int_equal(f->database_line, 8);
  assert_string_equal(f->quarantine_dir, T("@/q/"));
  assert_int_equal(f->quarantine_line, 9);
  px_conf_unref(&c);
  c = load_ok(filter_text(buf, sizeof buf, "clamav", T("database = @/db.cvd")));
  assert_string_equal(c->filters[0].database, T("@/db.cvd"));
  px_conf_unref(&c);

  /* socket: a unix path (need not exist) or host:port, canonical. */
  c = load_ok(filter_text(buf, sizeof buf, "clamd",
                          "socket = /nonexistent/clamd.ctl"));
  assert_string_equal(c->filters[0].socket, "/nonexistent/clamd.ctl");
  px_conf_unref(&c);
  c = load_ok(filter_text(buf, sizeof buf, "clamd", "socket = 127.0.0.1:3310"));
  assert_string_equal(c->filters[0].socket, "127.0.0.1:3310");
  px_conf_unref(&c);
  c = load_ok(filter_text(buf, sizeof buf, "clamd",
                          "socket = clamd.example:03310"));
  assert_string_equal(c->filters[0].socket, "clamd.example:3310");
  px_conf_unref(&c);
  c = load_ok(filter_text(buf, sizeof buf, "clamd", "socket = [::1]:3310"));
  assert_string_equal(c->filters[0].socket, "[::1]:3310");
  px_conf_unref(&c);

  /* command: words split on spaces and tabs, NULL after the last. */
  c = load_ok(filter_text(buf, sizeof buf, "command",
                          T("command = @/" PROG " -x  --max-size=100\t-q\n"
                            "  --more ; comment")));
  f = &c->filters[0];
  assert_int_equal(f->argc, 5);
  assert_string_equal(f->argv[0], T("@/" PROG));
  assert_string_equal(f->argv[1], "-x");
  assert_string_equal(f->argv[2], "--max-size=100");
  assert_string_equal(f->argv[3], "-q");
  assert_string_equal(f->argv[4], "--more");
  assert_null(f->argv[5]);
  px_conf_unref(&c);
  c = load_ok(filter_text(buf, sizeof buf, "command",
                          T("command = @/" PROG)));
  assert_int_equal(c->filters[0].argc, 1);
  assert_null(c->filters[0].argv[1]);
  px_conf_unref(&c);

  /* add: repeatable, kept in order and as written. */
  c = load_ok(filter_text(buf, sizeof buf, "header",
                          "add = X-Scanned-By: popgate 0.1 (a=b)\n"
                          "add = X-Empty:\n"
                          "add = X-Tab:\tx\n"
                          "add = X-Bare:value\n"
                          "add = !#$%&'*+-.^_`|~09azAZ\"(),/<>?@[]{}\\: v\n"
                          "add = X-Folded: one\n  two"));
  f = &c->filters[0];
  assert_int_equal(f->nadd, 6);
  assert_string_equal(f->add[0], "X-Scanned-By: popgate 0.1 (a=b)");
  assert_string_equal(f->add[1], "X-Empty:");
  assert_string_equal(f->add[2], "X-Tab:\tx");
  assert_string_equal(f->add[3], "X-Bare:value");
  assert_string_equal(f->add[4], "!#$%&'*+-.^_`|~09azAZ\"(),/<>?@[]{}\\: v");
  assert_string_equal(f->add[5], "X-Folded: one two");
  px_conf_unref(&c);

  /* A 76-character name; a line of exactly 998 characters (continued
   * over indented lines, joined with spaces). */
  memset(line, 'N', 76);
  strcpy(line + 76, ": v");
  snprintf(buf, sizeof buf, BASE_L BASE_U "[filter:f]\ntype = header\n"
           "add = %s\n", line);
  c = load_ok(buf);
  assert_int_equal(strlen(c->filters[0].add[0]), 79);
  px_conf_unref(&c);
  n = (size_t)snprintf(buf, sizeof buf, BASE_L BASE_U "[filter:f]\n"
                       "type = header\nadd = X-Long: ");
  /* "X-Long: " is 8; then 9 pieces of 109 'v's joined by spaces: 8 +
   * 9 * 109 + 8 = 997; one more character makes 998. */
  memset(line, 'v', 109);
  line[109] = '\0';
  n += (size_t)snprintf(buf + n, sizeof buf - n, "%sv\n", line);
  for (int i = 1; i < 9; i++)
    n += (size_t)snprintf(buf + n, sizeof buf - n, "  %s\n", line);
  c = load_ok(buf);
  assert_int_equal(strlen(c->filters[0].add[0]), 998);
  px_conf_unref(&c);
  /* 999: the message quotes the first 80 characters. */
  snprintf(buf + n - 1, sizeof buf - n + 1, "x\n");
  snprintf(want, sizeof want,
           NAME ":8: add = X-Long: %.72s... is longer than 998 characters "
           "(the line limit of RFC 5322) (lines 8-16 joined: an indented "
           "line continues the value above it)",
           line);
  expect_only_err(buf, want);
}

static void test_filter_bad_values(void **state)
{
  static const struct {
    const char *type, *line, *msg;
  } cases[] = {
    { "clamav", "max_scan_size = 1023",
      "max_scan_size = 1023 is out of range (1K..4G)" },
    { "clamav", "max_scan_size = 4097M",
      "max_scan_size = 4097M is out of range (1K..4G)" },
    { "clamav", "max_scan_size = lots",
      "bad size \"lots\" for max_scan_size (use e.g. 512, 64K, 1M)" },
    { "clamav", "max_file_size = 2049M",
      "max_file_size = 2049M is out of range (1K..2G)" },
    { "clamav", "max_file_size = 0",
      "max_file_size = 0 is out of range (1K..2G)" },
    { "clamav", "max_recursion = 0",
      "max_recursion = 0 is out of range (1..64)" },
    { "clamav", "max_recursion = 65",
      "max_recursion = 65 is out of range (1..64)" },
    { "clamav", "max_recursion = deep",
      "bad number \"deep\" for max_recursion (use a whole number from 1 to "
      "64)" },
    { "clamav", "max_files = 0", "max_files = 0 is out of range (1..1000000)" },
    { "clamav", "max_files = 1000001",
      "max_files = 1000001 is out of range (1..1000000)" },
    { "clamav", "scan_timeout = 999ms",
      "scan_timeout = 999ms is out of range (1s..1h)" },
    { "clamd", "scan_timeout = 61m",
      "scan_timeout = 61m is out of range (1s..1h)" },
    { "command", "scan_timeout = 0",
      "scan_timeout = 0 is out of range (1s..1h)" },
    { "clamav", "scan_timeout = 1 min",
      "bad duration \"1 min\" for scan_timeout (use e.g. 30s, 10m, 1h)" },
    { "clamav", "on_virus = drop",
      "bad value \"drop\" for on_virus (use replace, tag or reject)" },
    { "clamd", "on_virus =", "empty value for on_virus" },
    { "clamav", "on_error = ignore",
      "bad value \"ignore\" for on_error (use tempfail or pass)" },
    { "clamav", "database = clamav",
      "bad value \"clamav\" for database (use the absolute path of a "
      "directory or a file)" },
    { "clamav", "database = @/nosuch",
      "cannot use database \"@/nosuch\": No such file or directory" },
    { "clamav", "database = /dev/null",
      "cannot use database \"/dev/null\": not a directory or a regular "
      "file" },
    { "clamav", "database =", "empty value for database" },
    { "clamav", "quarantine_dir = q",
      "bad value \"q\" for quarantine_dir (use an absolute directory path)" },
    { "clamd", "quarantine_dir = @/nosuch",
      "cannot use quarantine_dir \"@/nosuch\": No such file or directory" },
    { "clamav", "quarantine_dir = @/a.pem",
      "cannot use quarantine_dir \"@/a.pem\": not a directory" },
    { "clamd", "socket = clamd.ctl",
      "bad value \"clamd.ctl\" for socket: missing \":PORT\" (use the "
      "absolute path of clamd's unix socket, or host:port)" },
    { "clamd", "socket = localhost:0",
      "bad value \"localhost:0\" for socket: the port must be a number from "
      "1 to 65535 (use the absolute path of clamd's unix socket, or "
      "host:port)" },
    { "clamd", "socket = /run/clamav/",
      "bad value \"/run/clamav/\" for socket (use the absolute path of "
      "clamd's unix socket, or host:port)" },
    { "clamd", "socket = /run/clamav/clamd ctl\x01",
      "bad value \"/run/clamav/clamd ctl?\" for socket (use the absolute "
      "path of clamd's unix socket, or host:port)" },
    { "clamd", "socket =", "empty value for socket" },
    { "command", "command = " PROG " -x",
      "bad value \"" PROG " -x\" for command (the program's absolute path, "
      "then its arguments, separated by spaces; no shell)" },
    { "command", "command = @/nosuch -x",
      "cannot run command \"@/nosuch\": No such file or directory" },
    { "command", "command = @ -x",
      "cannot run command \"@\": not a regular file" },
    { "command", "command = @/a.pem",
      "cannot run command \"@/a.pem\": not executable: Permission denied" },
    { "command", "command = @/" PROG " \x01",
      "bad value \"@/" PROG " ?\" for command (the program's absolute path, "
      "then its arguments, separated by spaces; no shell)" },
    { "command", "command =", "empty value for command" },
    { "header", "add = X-Scanned-By popgate",
      "bad value \"X-Scanned-By popgate\" for add (use \"Name: value\", as "
      "in X-Scanned-By: popgate)" },
    { "header", "add = : value",
      "bad header name \"\" in add (1 to 76 printable ASCII characters, no "
      "space or \":\", as in X-Scanned-By)" },
    { "header", "add = X Scanned: popgate",
      "bad header name \"X Scanned\" in add (1 to 76 printable ASCII "
      "characters, no space or \":\", as in X-Scanned-By)" },
    { "header", "add = X-\x7f: v",
      "bad header name \"X-?\" in add (1 to 76 printable ASCII characters, "
      "no space or \":\", as in X-Scanned-By)" },
    { "header", "add = X-Caf\xc3\xa9: v",
      "bad header name \"X-Caf\xc3\xa9\" in add (1 to 76 printable ASCII "
      "characters, no space or \":\", as in X-Scanned-By)" },
    { "header",
      "add = NNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNN"
      "NNNNNNNNNNNNN: v",
      "bad header name \"NNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNN"
      "NNNNNNNNNNNNNNNNNNNNNNNN\" in add (1 to 76 printable ASCII "
      "characters, no space or \":\", as in X-Scanned-By)" },
    { "header", "add = X-Name: caf\xc3\xa9",
      "bad header value in add = X-Name: caf\xc3\xa9 (printable ASCII "
      "characters and tabs only)" },
    { "header", "add = X-Name: a\x01 b",
      "bad header value in add = X-Name: a? b (printable ASCII characters "
      "and tabs only)" },
    { "header", "add =", "empty value for add" },
  };
  char buf[1024], want[1024], text[1024], sock[112];
  size_t i;

  (void)state;
  for (i = 0; i < sizeof cases / sizeof *cases; i++) {
    snprintf(text, sizeof text, "%s", T(cases[i].line));
    snprintf(want, sizeof want, NAME ":8: %s", T(cases[i].msg));
    expect_only_err(filter_text(buf, sizeof buf, cases[i].type, text), want);
  }
  /* Bad types; a bad type is the only error (no "missing" too). */
  expect_only_err(BASE_L BASE_U "[filter:f]\ntype = clamscan\n",
                  NAME ":7: bad value \"clamscan\" for type (use clamav, "
                  "clamd, command or header)");
  expect_only_err(BASE_L BASE_U "[filter:f]\ntype =\nsocket = /x\n",
                  NAME ":7: empty value for type");
  /* A socket path of 107 characters fits sockaddr_un; 108 does not. */
  memset(sock, 'a', 107);
  sock[0] = '/';
  sock[107] = '\0';
  snprintf(want, sizeof want, "socket = %s", sock);
  {
    struct px_conf *c = load_ok(filter_text(buf, sizeof buf, "clamd", want));
    assert_int_equal(strlen(c->filters[0].socket), 107);
    px_conf_unref(&c);
  }
  strcat(sock, "b");
  snprintf(want, sizeof want, "socket = %s", sock);
  filter_text(buf, sizeof buf, "clamd", want);
  snprintf(want, sizeof want,
           NAME ":8: socket path \"%.80s...\" is longer than 107 characters "
           "(the limit of a unix socket address)",
           sock);
  expect_only_err(buf, want);
  /* Not writable: only an unprivileged user can tell. */
  if (geteuid() != 0) {
    char dir[128];
    snprintf(dir, sizeof dir, "%s/ro", tmpdir);
    assert_int_equal(mkdir(dir, 0555), 0);
    expect_only_err(filter_text(buf, sizeof buf, "clamav",
                                T("quarantine_dir = @/ro")),
                    T(NAME ":8: cannot use quarantine_dir \"@/ro\": not "
                      "writable: Permission denied"));
    rmdir(dir);
  }
}

/* A key of another type is an error at its line, whether type comes
 * before or after it; required keys are reported at the header. */
static void test_filter_types(void **state)
{
  char buf[1024];

  (void)state;
  expect_only_err(filter_text(buf, sizeof buf, "clamav",
                              "socket = /run/clamav/clamd.ctl"),
                  NAME ":8: key socket is for type = clamd, this is type = "
                  "clamav");
  expect_only_err(BASE_L BASE_U "[filter:f]\nsocket = /run/c.ctl\n"
                  "max_files = 5\ntype = clamd\n",
                  NAME ":8: key max_files is for type = clamav, this is type "
                  "= clamd");
  expect_only_err(filter_text(buf, sizeof buf, "header", "scan_timeout = 5s"),
                  NAME ":8: key scan_timeout is for type = clamav, clamd or "
                  "command, this is type = header");
  expect_only_err(filter_text(buf, sizeof buf, "command", "on_virus = tag"),
                  NAME ":8: key on_virus is for type = clamav or clamd, this "
                  "is type = command");
  expect_only_err(filter_text(buf, sizeof buf, "header",
                              T("quarantine_dir = @/q")),
                  NAME ":8: key quarantine_dir is for type = clamav or clamd, "
                  "this is type = header");
  expect_only_err(filter_text(buf, sizeof buf, "clamd", "add = X-A: b"),
                  NAME ":8: key add is for type = header, this is type = "
                  "clamd");
  expect_only_err(filter_text(buf, sizeof buf, "clamav",
                              T("command = @/" PROG)),
                  NAME ":8: key command is for type = command, this is type "
                  "= clamav");
  expect_only_err(filter_text(buf, sizeof buf, "clamd", T("database = @/db")),
                  NAME ":8: key database is for type = clamav, this is type "
                  "= clamd");
  /* Each wrong key, sorted by line. */
  expect_err_line(filter_text(buf, sizeof buf, "header",
                              "max_recursion = 3\nmax_file_size = 1M"),
                  NAME ":8: key max_recursion is for type = clamav, this is "
                  "type = header");
  assert_string_equal(err, NAME ":8: key max_recursion is for type = clamav, "
                      "this is type = header\n" NAME ":9: key max_file_size "
                      "is for type = clamav, this is type = header\n");

  /* Required keys. */
  expect_only_err(BASE_L BASE_U "[filter:f]\non_error = pass\n",
                  NAME ":6: missing required key \"type\" in [filter:f]");
  expect_only_err(BASE_L BASE_U "\n[filter:f]\ntype = clamd\n",
                  NAME ":7: missing required key \"socket\" in [filter:f] "
                  "(type = clamd needs it)");
  expect_only_err(BASE_L BASE_U "[filter:f]\ntype = command\n",
                  NAME ":6: missing required key \"command\" in [filter:f] "
                  "(type = command needs it)");
  expect_only_err(BASE_L BASE_U "[filter:f]\ntype = header\n",
                  NAME ":6: missing required key \"add\" in [filter:f] "
                  "(type = header needs at least one)");
  /* A bad add still counts as given: one error, not two. */
  expect_only_err(BASE_L BASE_U "[filter:f]\ntype = header\nadd = bad\n",
                  NAME ":8: bad value \"bad\" for add (use \"Name: value\", "
                  "as in X-Scanned-By: popgate)");
  /* Without a type nothing is of the wrong type. */
  expect_only_err(BASE_L BASE_U "[filter:f]\nsocket = /x\nadd = X-A: b\n",
                  NAME ":6: missing required key \"type\" in [filter:f]");

  /* Duplicates: keys (add is repeatable), sections. */
  expect_only_err(BASE_L BASE_U "[filter:f]\ntype = clamav\ntype = clamd\n",
                  NAME ":8: duplicate key \"type\" in [filter:f] (first at "
                  "line 7)");
  expect_only_err(filter_text(buf, sizeof buf, "clamd",
                              "socket = /a\nsocket = /b"),
                  NAME ":9: duplicate key \"socket\" in [filter:f] (first at "
                  "line 8)");
  expect_only_err(BASE_L BASE_U "[filter:f]\ntype = clamav\n"
                  "[filter:f]\ntype = header\nadd = X-A: b\n",
                  NAME ":8: duplicate section [filter:f] (first at line 6)");
  /* The duplicate's values are still checked. */
  expect_err_line(BASE_L BASE_U "[filter:f]\ntype = clamav\n"
                  "[filter:f]\ntype = clamav\nmax_files = 0\n",
                  NAME ":10: max_files = 0 is out of range (1..1000000)");
  assert_int_equal(count_lines(err), 2);
  /* Names as for other sections. */
  expect_only_err(BASE_L BASE_U "[filter:a/b]\ntype = clamav\n",
                  NAME ":6: bad section name \"a/b\" in [filter:...] (use up "
                  "to 64 letters, digits, \"_\", \".\" and \"-\")");
  /* A listener and a filter may share a name. */
  {
    struct px_conf *c = load_ok(BASE_L BASE_U "[filter:a]\ntype = clamav\n"
                                "[filter:u]\ntype = clamav\n");
    assert_int_equal(c->nfilters, 2);
    px_conf_unref(&c);
  }
}

/* filters = lists: resolved in order, to the right sections. */
static void test_filters_list(void **state)
{
  static const char *const lists[] = {
    "filters = z, a", "filters = z,a", "filters = z a", "filters = z ,a",
    "filters = z\t, a", "filters = z,\n  a", "filters = z\n  a ; comment",
    "filters = z ; a",
  };
  static const char defs[] = "[filter:a]\ntype = header\nadd = X-A: 1\n"
                             "[filter:m]\ntype = clamav\n"
                             "[filter:z]\ntype = clamd\nsocket = /x\n";
  char buf[1024];
  struct px_conf *c;
  const struct px_conf_listener *l;
  size_t i;

  (void)state;
  for (i = 0; i < sizeof lists / sizeof *lists; i++) {
    snprintf(buf, sizeof buf, SPOOL BASE_L "%s\n" BASE_U "%s", lists[i],
             defs);
    c = load_ok(T(buf));
    l = &c->listeners[0];
    if (strstr(lists[i], "; a") != NULL) {
      assert_int_equal(l->nfilters, 1);
      assert_ptr_equal(l->filters[0], &c->filters[2]);
      px_conf_unref(&c);
      continue;
    }
    assert_int_equal(c->nfilters, 3);
    assert_int_equal(l->nfilters, 2);
    assert_int_equal(l->filters_line, 6);
    assert_string_equal(l->filter_names[0], "z");
    assert_string_equal(l->filter_names[1], "a");
    assert_ptr_equal(l->filters[0], &c->filters[2]);
    assert_ptr_equal(l->filters[1], &c->filters[0]);
    assert_string_equal(l->filters[0]->name, "z");
    assert_int_equal(l->filters[0]->type, PX_FLT_CLAMD);
    assert_string_equal(c->spool_dir, T("@/spool"));
    assert_int_equal(c->spool_dir_line, 2);
    px_conf_unref(&c);
  }

  /* Empty: no filters (and no spool_dir needed). */
  c = load_ok("[popgate]\nspool_dir = /nonexistent\n" BASE_L "filters =\n"
              BASE_U "[filter:a]\ntype = clamav\n");
  l = &c->listeners[0];
  assert_int_equal(l->nfilters, 0);
  assert_null(l->filters);
  assert_int_equal(l->filters_line, 6);
  px_conf_unref(&c);

  /* Two listeners, one filter; a filter defined before its listener. */
  c = load_ok(T(SPOOL "[filter:f]\ntype = header\nadd = X-A: 1\n" BASE_L
                "filters = f\n[listener:b]\nbind = 127.0.0.1:1200\n"
                "upstream = u\nfilters = f\n" BASE_U));
  assert_ptr_equal(c->listeners[0].filters[0], &c->filters[0]);
  assert_ptr_equal(c->listeners[1].filters[0], &c->filters[0]);
  px_conf_unref(&c);

  /* Many filters: the array grows while listeners point nowhere yet. */
  {
    char big[8192];
    size_t n = (size_t)snprintf(big, sizeof big, SPOOL BASE_L "filters =");
    for (i = 0; i < 20; i++)
      n += (size_t)snprintf(big + n, sizeof big - n, "\n  f%zu", i);
    n += (size_t)snprintf(big + n, sizeof big - n, "\n" BASE_U);
    for (i = 0; i < 20; i++)
      n += (size_t)snprintf(big + n, sizeof big - n,
                            "[filter:f%zu]\ntype = clamav\n", 19 - i);
    c = load_ok(T(big));
    assert_int_equal(c->listeners[0].nfilters, 20);
    for (i = 0; i < 20; i++)
      assert_ptr_equal(c->listeners[0].filters[i], &c->filters[19 - i]);
    px_conf_unref(&c);
  }
}

static void test_filters_list_errors(void **state)
{
  (void)state;
  /* Dangling, at the line of filters (a continued list: its first line). */
  expect_only_err(T(SPOOL BASE_L "filters = nosuch\n" BASE_U),
                  NAME ":6: filter \"nosuch\" in [listener:a] is not defined "
                  "(no [filter:nosuch] section)");
  expect_err_line(T(SPOOL BASE_L "filters = f,\n  x\n  y\n" BASE_U
                    "[filter:f]\ntype = clamav\n"),
                  NAME ":6: filter \"x\" in [listener:a] is not defined (no "
                  "[filter:x] section)");
  expect_err_line(T(SPOOL BASE_L "filters = f,\n  x\n  y\n" BASE_U
                    "[filter:f]\ntype = clamav\n"),
                  NAME ":6: filter \"y\" in [listener:a] is not defined (no "
                  "[filter:y] section)");
  assert_int_equal(count_lines(err), 2);
  /* Names are case-sensitive; a broken [filter:...] defines nothing. */
  expect_only_err(T(SPOOL BASE_L "filters = F\n" BASE_U
                    "[filter:f]\ntype = clamav\n"),
                  NAME ":6: filter \"F\" in [listener:a] is not defined (no "
                  "[filter:F] section)");
  /* Listed twice. */
  expect_only_err(T(SPOOL BASE_L "filters = f, g f\n" BASE_U
                    "[filter:f]\ntype = clamav\n[filter:g]\ntype = clamav\n"),
                  NAME ":6: filter \"f\" is listed twice in filters");
  expect_only_err(T(SPOOL BASE_L "filters = f,\n  f\n" BASE_U
                    "[filter:f]\ntype = clamav\n"),
                  NAME ":6: filter \"f\" is listed twice in filters (lines "
                  "6-7 joined: an indented line continues the value above "
                  "it)");
  /* Bad lists. */
  expect_only_err(BASE_L "filters = f,,g\n" BASE_U,
                  NAME ":4: bad value \"f,,g\" for filters (names of "
                  "[filter:NAME] sections, separated by commas or spaces)");
  expect_only_err(BASE_L "filters = , f\n" BASE_U,
                  NAME ":4: bad value \", f\" for filters (names of "
                  "[filter:NAME] sections, separated by commas or spaces)");
  expect_only_err(BASE_L "filters = f,\n" BASE_U,
                  NAME ":4: bad value \"f,\" for filters (names of "
                  "[filter:NAME] sections, separated by commas or spaces)");
  expect_only_err(BASE_L "filters = f;g\n" BASE_U,
                  NAME ":4: bad name \"f;g\" in filters (the NAME of a "
                  "[filter:NAME] section; separate names with commas or "
                  "spaces)");
  expect_only_err(BASE_L "filters = "
                  "a23456789012345678901234567890123456789012345678901234567890"
                  "12345\n" BASE_U,
                  NAME ":4: bad name \""
                  "a23456789012345678901234567890123456789012345678901234567890"
                  "12345\" in filters (the NAME of a [filter:NAME] section; "
                  "separate names with commas or spaces)");
  expect_only_err(BASE_L "filters = a\n  "
                  "b2345678901234567890123456789012345678901234567890123456789"
                  "0123456789\n" BASE_U,
                  NAME ":4: bad name \""
                  "b2345678901234567890123456789012345678901234567890123456789"
                  "012345...\" in filters (the NAME of a [filter:NAME] "
                  "section; separate names with commas or spaces) (lines 4-5 "
                  "joined: an indented line continues the value above it)");
  expect_only_err(T(SPOOL BASE_L "filters = a\nfilters = b\n" BASE_U
                    "[filter:a]\ntype = clamav\n[filter:b]\ntype = clamav\n"),
                  NAME ":7: duplicate key \"filters\" in [listener:a] (first "
                  "at line 6)");
}

/* spool_dir: checked only when a listener has filters, the default too;
 * the sizes against memory_per_message. */
static void test_spool(void **state)
{
  static const char filt[] = "filters = f\n" BASE_U
                             "[filter:f]\ntype = header\nadd = X-A: b\n";
  char buf[1024];
  struct px_conf *c;
  int rc;

  (void)state;
  /* Unused spool_dir: not looked at. */
  c = load_ok("[popgate]\nspool_dir = /nonexistent/x\n" BASE_L BASE_U
              "[filter:f]\ntype = clamav\n");
  assert_string_equal(c->spool_dir, "/nonexistent/x");
  px_conf_unref(&c);

  /* Used: must be a writable directory. */
  snprintf(buf, sizeof buf, "[popgate]\nspool_dir = @/nosuch\n" BASE_L "%s",
           filt);
  expect_only_err(T(buf), T(NAME ":2: cannot use spool_dir \"@/nosuch\": No "
                            "such file or directory"));
  snprintf(buf, sizeof buf, "[popgate]\nspool_dir = @/a.pem\n" BASE_L "%s",
           filt);
  expect_only_err(T(buf), T(NAME ":2: cannot use spool_dir \"@/a.pem\": not a "
                            "directory"));
  snprintf(buf, sizeof buf, "[popgate]\nspool_dir = @/spool/\n" BASE_L "%s",
           filt);
  c = load_ok(T(buf));
  assert_string_equal(c->spool_dir, T("@/spool/"));
  px_conf_unref(&c);
  if (geteuid() != 0) {
    char dir[128];
    snprintf(dir, sizeof dir, "%s/ro", tmpdir);
    assert_int_equal(mkdir(dir, 0555), 0);
    snprintf(buf, sizeof buf, "[popgate]\nspool_dir = @/ro\n" BASE_L "%s",
             filt);
    expect_only_err(T(buf), T(NAME ":2: cannot use spool_dir \"@/ro\": not "
                              "writable: Permission denied"));
    rmdir(dir);
  }

  /* The default, at the line of the first filters = that needs it. */
  snprintf(buf, sizeof buf, BASE_L "%s", filt);
  if (access("/var/spool/popgate", W_OK | X_OK) == 0) {
    c = load_ok(buf);
    assert_string_equal(c->spool_dir, "/var/spool/popgate");
    px_conf_unref(&c);
  } else {
    rc = px_conf_load_string(NAME, buf, &c, err, sizeof err);
    assert_int_equal(rc, -EINVAL);
    assert_int_equal(count_lines(err), 1);
    assert_memory_equal(err, NAME ":4: cannot use spool_dir "
                        "\"/var/spool/popgate\" (the default; filters need "
                        "it: set spool_dir in [popgate]): ", 104);
  }

  /* Sizes. */
  c = load_ok("[popgate]\nmemory_per_message = 4K\nmax_message_size = 4K\n"
              "memory_budget = 4K\n" BASE_L BASE_U);
  assert_true(c->max_message_size == 4096);
  px_conf_unref(&c);
  c = load_ok("[popgate]\nmemory_per_message = 1G\nmax_message_size = 1G\n"
              "memory_budget = 1G\n" BASE_L BASE_U);
  assert_true(c->memory_per_message == 1073741824);
  px_conf_unref(&c);
  expect_only_err("[popgate]\nmax_message_size = 8K\n" BASE_L BASE_U,
                  NAME ":2: max_message_size = 8K is below "
                  "memory_per_message = 1M");
  expect_only_err("[popgate]\nmemory_budget = 512K\n" BASE_L BASE_U,
                  NAME ":2: memory_budget = 512K is below memory_per_message "
                  "= 1M");
  expect_only_err("[popgate]\nmemory_per_message = 2M\nmax_message_size = "
                  "1048577\nmemory_budget = 2M\n" BASE_L BASE_U,
                  NAME ":3: max_message_size = 1048577 is below "
                  "memory_per_message = 2M");
  expect_err_line("[popgate]\nmemory_per_message = 512M\n" BASE_L BASE_U,
                  NAME ":2: memory_per_message = 512M is above "
                  "max_message_size (256M, the default)");
  expect_err_line("[popgate]\nmemory_per_message = 512M\n" BASE_L BASE_U,
                  NAME ":2: memory_per_message = 512M is above memory_budget "
                  "(256M, the default)");
  assert_int_equal(count_lines(err), 2);
}

/* Every filter key in one file, with two listeners. */
static void test_filters_full(void **state)
{
  struct px_conf *c = load_ok(T(
    "[popgate]\n"
    "spool_dir = @/spool\n"
    "memory_per_message = 64K\n"
    "max_message_size = 50M\n"
    "memory_budget = 1G\n"
    "scan_threads = 3\n"
    "[listener:a]\n"
    "bind = 127.0.0.1:1100\n"
    "upstream = u\n"
    "filters = av, spam, stamp\n"
    "[listener:b]\n"
    "bind = 127.0.0.1:1200\n"
    "upstream = u\n"
    "filters = clamd\n"
    BASE_U
    "[filter:av]\n"                         /* 17 */
    "on_virus = tag ; type comes later\n"
    "type = clamav\n"
    "database = @/db\n"
    "max_scan_size = 10M\n"
    "max_file_size = 5M\n"
    "max_recursion = 8\n"
    "max_files = 500\n"
    "scan_timeout = 30s\n"
    "quarantine_dir = @/q\n"
    "on_error = pass\n"
    "[filter:clamd]\n"                      /* 28 */
    "type = clamd\n"
    "socket = 127.0.0.1:3310\n"
    "scan_timeout = 10s\n"
    "on_virus = reject\n"
    "on_error = tempfail\n"
    "[filter:spam]\n"                       /* 34 */
    "type = command\n"
    "command = @/" PROG " -x\n"
    "scan_timeout = 2m\n"
    "[filter:stamp]\n"                      /* 38 */
    "type = header\n"
    "add = X-Scanned-By: popgate\n"
    "add = X-Spam-Checked: yes\n"));
  const struct px_conf_filter *f;
  const struct px_conf_listener *l;

  (void)state;
  assert_string_equal(c->spool_dir, T("@/spool"));
  assert_true(c->memory_per_message == 65536);
  assert_true(c->max_message_size == 50 * 1048576);
  assert_true(c->memory_budget == 1073741824);
  assert_int_equal(c->scan_threads, 3);
  assert_int_equal(c->nfilters, 4);

  l = &c->listeners[0];
  assert_int_equal(l->nfilters, 3);
  assert_int_equal(l->filters_line, 10);
  assert_ptr_equal(l->filters[0], &c->filters[0]);
  assert_ptr_equal(l->filters[1], &c->filters[2]);
  assert_ptr_equal(l->filters[2], &c->filters[3]);
  l = &c->listeners[1];
  assert_int_equal(l->nfilters, 1);
  assert_ptr_equal(l->filters[0], &c->filters[1]);

  f = &c->filters[0];
  assert_string_equal(f->name, "av");
  assert_int_equal(f->line, 17);
  assert_int_equal(f->type, PX_FLT_CLAMAV);
  assert_string_equal(f->database, T("@/db"));
  assert_int_equal(f->database_line, 20);
  assert_true(f->max_scan_size == 10 * 1048576);
  assert_true(f->max_file_size == 5 * 1048576);
  assert_int_equal(f->max_recursion, 8);
  assert_int_equal(f->max_files, 500);
  assert_true(f->scan_timeout_ms == 30000);
  assert_int_equal(f->on_virus, PX_ONV_TAG);
  assert_string_equal(f->quarantine_dir, T("@/q"));
  assert_int_equal(f->quarantine_line, 26);
  assert_int_equal(f->on_error, PX_ONE_PASS);

  f = &c->filters[1];
  assert_string_equal(f->name, "clamd");
  assert_int_equal(f->type, PX_FLT_CLAMD);
  assert_string_equal(f->socket, "127.0.0.1:3310");
  assert_true(f->scan_timeout_ms == 10000);
  assert_int_equal(f->on_virus, PX_ONV_REJECT);
  assert_int_equal(f->on_error, PX_ONE_TEMPFAIL);
  assert_null(f->database);
  assert_null(f->quarantine_dir);

  f = &c->filters[2];
  assert_int_equal(f->type, PX_FLT_COMMAND);
  assert_int_equal(f->argc, 2);
  assert_string_equal(f->argv[0], T("@/" PROG));
  assert_string_equal(f->argv[1], "-x");
  assert_null(f->argv[2]);
  assert_true(f->scan_timeout_ms == 120000);

  f = &c->filters[3];
  assert_int_equal(f->type, PX_FLT_HEADER);
  assert_int_equal(f->nadd, 2);
  assert_string_equal(f->add[0], "X-Scanned-By: popgate");
  assert_string_equal(f->add[1], "X-Spam-Checked: yes");
  px_conf_unref(&c);
}

/* ---- a real file ---- */

static void test_file(void **state)
{
  static const char good[] = "[popgate]\nworkers = 2\n" BASE_L BASE_U;
  static const char bad[] = "[popgate]\nworkers = 0\n" BASE_L BASE_U;
  static const char nul[] = "[popgate]\nworkers = 2\0junk\n" BASE_L BASE_U;
  char want[256];
  struct px_conf *c;
  const char *p;

  (void)state;
  p = write_file("good.ini", good, sizeof good - 1);
  assert_int_equal(px_conf_load(p, &c, err, sizeof err), 0);
  assert_string_equal(c->path, p);
  assert_int_equal(c->workers, 2);
  px_conf_unref(&c);

  p = write_file("bad.ini", bad, sizeof bad - 1);
  assert_int_equal(px_conf_load(p, &c, err, sizeof err), -EINVAL);
  assert_null(c);
  snprintf(want, sizeof want, "%s:2: workers = 0 is out of range (use auto "
           "or 1..256)\n", p);
  assert_string_equal(err, want);

  p = write_file("nul.ini", nul, sizeof nul - 1);
  assert_int_equal(px_conf_load(p, &c, err, sizeof err), -EINVAL);
  snprintf(want, sizeof want, "%s:2: line contains a NUL byte\n", p);
  assert_string_equal(err, want);

  assert_int_equal(px_conf_load("/nonexistent/popgate.ini", &c, err,
                                sizeof err),
                   -ENOENT);
  assert_null(c);
  assert_string_equal(err, "/nonexistent/popgate.ini: cannot open: No such "
                      "file or directory\n");
  assert_int_equal(px_conf_load("/dev/zero", &c, err, sizeof err), -EFBIG);
  assert_null(c);
  assert_string_equal(err, "/dev/zero: larger than 1M: not a configuration "
                      "file\n");
  assert_int_equal(px_conf_load(tmpdir, &c, err, sizeof err), -EISDIR);
  snprintf(want, sizeof want, "%s: cannot read: Is a directory\n", tmpdir);
  assert_string_equal(err, want);
}

static int cleanup_files(void **state)
{
  char path[128];

  (void)state;
  if (tmpdir[0] != '\0') {
    snprintf(path, sizeof path, "%s/good.ini", tmpdir);
    unlink(path);
    snprintf(path, sizeof path, "%s/bad.ini", tmpdir);
    unlink(path);
    snprintf(path, sizeof path, "%s/nul.ini", tmpdir);
    unlink(path);
  }
  return 0;
}

/* The annotated example must stay valid, with its commented-out examples
 * too. Their cert, key, ca_file, spool_dir, database, quarantine_dir and
 * command paths are examples: each such line is pointed at one of the
 * test's files or directories instead. Run from the repository root (or
 * tests/unit); skipped elsewhere. */
static void test_example_file(void **state)
{
  static const char *const paths[] = { "conf/popgate.ini",
                                       "../../conf/popgate.ini" };
  static const char *const uncomment[] = {
    ";user =", ";metrics =", ";server =", ";[listener:local]", ";bind =",
    ";upstream =", ";[listener:pop3s]", ";tls =", ";cert =", ";key =",
    ";tls_min_version =", ";ciphers =", ";require_tls =",
    ";handshake_timeout =", ";[upstream:secure]", ";verify =", ";ca_file =",
    ";server_name =", ";filters =", ";[filter:", ";type =", ";database =",
    ";max_scan_size =", ";max_file_size =", ";max_recursion =",
    ";max_files =", ";scan_timeout =", ";on_virus =", ";quarantine_dir =",
    ";on_error =", ";socket =", ";command =", ";add =",
  };
  /* Applied to every such line, commented out in the file or not. */
  static const struct {
    const char *prefix, *file;
  } files[] = { { "cert =", "a.pem" },          { "key =", "a.key" },
                { "ca_file =", "ca.pem" },      { "spool_dir =", "spool" },
                { "database =", "db" },         { "quarantine_dir =", "q" },
                { "command =", PROG " -x" } };
  char *text, *out, *line, *nl;
  const struct px_conf_listener *l;
  const struct px_conf_upstream *u;
  struct px_conf *c;
  FILE *f = NULL;
  size_t i, n, used = 0, cap;
  long len;

  (void)state;
  for (i = 0; i < sizeof paths / sizeof *paths && f == NULL; i++)
    f = fopen(paths[i], "rb");
  if (f == NULL)
    skip();
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  len = ftell(f);
  assert_true(len > 0);
  rewind(f);
  text = malloc((size_t)len + 1);
  assert_non_null(text);
  assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
  text[len] = '\0';
  fclose(f);

  /* As shipped: one plain listener, which -t warns about, no filters, and
   * every default spelled out. */
  c = load_ok(text);
  assert_int_equal(c->nlisteners, 1);
  assert_int_equal(c->nupstreams, 1);
  assert_null(c->metrics.host);
  assert_int_equal(c->listeners[0].tls, PX_TLS_OFF);
  assert_int_equal(c->listeners[0].nfilters, 0);
  assert_int_equal(c->nfilters, 0);
  assert_string_equal(c->spool_dir, "/var/spool/popgate");
  assert_true(c->memory_per_message == 1048576);
  assert_true(c->max_message_size == 268435456);
  assert_true(c->memory_budget == 268435456);
  assert_int_equal(px_conf_warnings(c, err, sizeof err), 1);
  px_conf_unref(&c);

  /* Drop the ";" of each commented-out example line (a space instead
   * would make a continuation line), and point file keys at real files. */
  cap = (size_t)len + 4096;
  out = malloc(cap);
  assert_non_null(out);
  for (line = text; *line != '\0'; line = nl) {
    nl = strchr(line, '\n');
    nl = nl != NULL ? nl + 1 : line + strlen(line);
    n = (size_t)(nl - line);
    for (i = 0; i < sizeof uncomment / sizeof *uncomment; i++)
      if (strncmp(line, uncomment[i], strlen(uncomment[i])) == 0)
        break;
    if (i < sizeof uncomment / sizeof *uncomment) {
      line++;
      n--;
    }
    for (i = 0; i < sizeof files / sizeof *files; i++) {
      if (strncmp(line, files[i].prefix, strlen(files[i].prefix)) == 0) {
        used += (size_t)snprintf(out + used, cap - used, "%s %s/%s\n",
                                 files[i].prefix, tmpdir, files[i].file);
        break;
      }
    }
    if (i < sizeof files / sizeof *files)
      continue;
    assert_true(used + n < cap);
    memcpy(out + used, line, n);
    used += n;
  }
  out[used] = '\0';

  c = load_ok(out);
  assert_int_equal(c->nlisteners, 3);
  assert_non_null(c->user);
  assert_non_null(c->metrics.host);
  assert_int_equal(c->upstreams[0].nservers, 2);
  l = &c->listeners[2];
  assert_string_equal(l->name, "pop3s");
  assert_int_equal(l->tls, PX_TLS_IMPLICIT);
  assert_int_equal(l->ncerts, 1);
  assert_int_equal(l->tls_min_version, TLS1_2_VERSION);
  assert_non_null(l->ciphers);
  assert_int_equal(l->require_tls, 1);
  assert_true(l->handshake_timeout_ms == 30000);
  assert_int_equal(c->nupstreams, 2);
  u = &c->upstreams[1];
  assert_string_equal(u->name, "secure");
  assert_int_equal(u->tls, PX_TLS_IMPLICIT);
  assert_int_equal(u->verify, 1);
  assert_non_null(u->ca_file);
  assert_non_null(u->server_name);
  assert_non_null(u->client.cert);
  assert_non_null(u->client.key);
  /* One filter of each type, two of them on the first listener. */
  assert_int_equal(c->nfilters, 4);
  l = &c->listeners[0];
  assert_int_equal(l->nfilters, 2);
  assert_string_equal(l->filters[0]->name, "clamav");
  assert_int_equal(l->filters[0]->type, PX_FLT_CLAMAV);
  assert_non_null(l->filters[0]->quarantine_dir);
  assert_true(l->filters[0]->max_scan_size == 100 * 1048576);
  assert_string_equal(l->filters[1]->name, "stamp");
  assert_int_equal(l->filters[1]->type, PX_FLT_HEADER);
  assert_int_equal(l->filters[1]->nadd, 1);
  assert_int_equal(c->filters[1].type, PX_FLT_CLAMD);
  assert_non_null(c->filters[1].socket);
  assert_int_equal(c->filters[2].type, PX_FLT_COMMAND);
  assert_int_equal(c->filters[2].argc, 2);
  assert_string_equal(c->spool_dir, T("@/spool"));
  /* The two plain listeners. */
  assert_int_equal(px_conf_warnings(c, err, sizeof err), 2);
  px_conf_unref(&c);
  free(out);
  free(text);
}

/* ---- references ---- */

static void test_refs(void **state)
{
  struct px_conf *c = load_ok(BASE_L BASE_U), *c2;

  (void)state;
  px_conf_ref(c);
  px_conf_ref(c);
  assert_int_equal(c->refs, 3);
  c2 = c;
  px_conf_unref(&c2);
  assert_null(c2);
  c2 = c;
  px_conf_unref(&c2);
  assert_int_equal(c->refs, 1);
  px_conf_unref(&c);
  assert_null(c);
  px_conf_unref(&c); /* NULL is fine */
  px_conf_unref(NULL);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_parse_duration),
    cmocka_unit_test(test_parse_size),
    cmocka_unit_test(test_parse_bool),
    cmocka_unit_test(test_parse_hostport),
    cmocka_unit_test(test_defaults),
    cmocka_unit_test(test_full_file),
    cmocka_unit_test(test_good_values),
    cmocka_unit_test(test_string_values),
    cmocka_unit_test(test_inline_comments),
    cmocka_unit_test(test_inline_comment_values),
    cmocka_unit_test(test_bad_values),
    cmocka_unit_test(test_bad_bind_and_ref),
    cmocka_unit_test(test_err_unknown_section),
    cmocka_unit_test(test_section_spacing),
    cmocka_unit_test(test_err_unknown_key),
    cmocka_unit_test(test_err_syntax),
    cmocka_unit_test(test_err_bad_value_line),
    cmocka_unit_test(test_err_duplicate_key),
    cmocka_unit_test(test_err_duplicate_section),
    cmocka_unit_test(test_err_missing_required),
    cmocka_unit_test(test_err_dangling_ref),
    cmocka_unit_test(test_err_no_listener),
    cmocka_unit_test(test_err_same_bind),
    cmocka_unit_test(test_long_line_limit),
    cmocka_unit_test(test_long_line_numbers),
    cmocka_unit_test(test_long_continuation),
    cmocka_unit_test(test_continuation_join),
    cmocka_unit_test(test_continuation_errors),
    cmocka_unit_test(test_continuation_too_long),
    cmocka_unit_test(test_repeatable_server),
    cmocka_unit_test(test_bom_crlf),
    cmocka_unit_test(test_error_cap),
    cmocka_unit_test(test_err_buffer),
    cmocka_unit_test(test_tls_listener),
    cmocka_unit_test(test_tls_require_default),
    cmocka_unit_test(test_tls_listener_errors),
    cmocka_unit_test(test_tls_files),
    cmocka_unit_test(test_tls_upstream),
    cmocka_unit_test(test_warnings),
    cmocka_unit_test(test_filter_defaults),
    cmocka_unit_test(test_filter_good_values),
    cmocka_unit_test(test_filter_string_values),
    cmocka_unit_test(test_filter_bad_values),
    cmocka_unit_test(test_filter_types),
    cmocka_unit_test(test_filters_list),
    cmocka_unit_test(test_filters_list_errors),
    cmocka_unit_test(test_spool),
    cmocka_unit_test(test_filters_full),
    cmocka_unit_test_teardown(test_file, cleanup_files),
    cmocka_unit_test(test_example_file),
    cmocka_unit_test(test_refs),
  };

  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
