/* fuzz_conf.c - libFuzzer target for the configuration parser
 * (proxy/conf*.c, with the filter types' parse hooks).
 *
 * Feeds the input to px_conf_load_string() as a whole config file and to
 * each value parser, and checks what must hold whatever the input: success
 * yields a complete px_conf and no message; failure yields no px_conf and
 * one or more "NAME:..." lines; inih and conf.c's reader never disagree
 * about a line ("internal error"). ASan/LSan catch leaks and overflows.
 *
 *   make build/fuzz/fuzz_conf    (clang; links every module with no I/O)
 *   build/fuzz/fuzz_conf -max_total_time=60 tests/fuzz/corpus/conf
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "testutil.h"

static void check_filter(const struct px_conf_filter *f)
{
  size_t i;

  CHECK(f->name != NULL && f->name[0] != '\0' && f->line > 0);
  CHECK(f->type < PX_FLT_COUNT);
  CHECK(f->on_virus < PX_ONV_COUNT && f->on_error < PX_ONE_COUNT);
  CHECK(f->scan_timeout_ms >= 1000 && f->scan_timeout_ms <= 3600000);
  CHECK(f->max_recursion >= 1 && f->max_recursion <= 64);
  CHECK(f->max_files >= 1 && f->max_files <= 1000000);
  CHECK(f->max_scan_size >= 1024 && f->max_file_size >= 1024);
  /* Keys of other types are errors, so their fields keep the defaults. */
  CHECK((f->type == PX_FLT_CLAMAV) == (f->database != NULL));
  CHECK(f->database == NULL || f->database[0] == '/');
  CHECK((f->database_line != 0) <= (f->database != NULL));
  CHECK((f->type == PX_FLT_CLAMD) == (f->socket != NULL));
  CHECK((f->type == PX_FLT_COMMAND) == (f->argv != NULL));
  CHECK((f->type == PX_FLT_COMMAND) == (f->argc >= 1));
  if (f->argv != NULL) {
    CHECK(f->argv[0][0] == '/' && f->argv[f->argc] == NULL);
    for (i = 0; i < f->argc; i++)
      CHECK(f->argv[i][0] != '\0' && strpbrk(f->argv[i], " \t") == NULL);
  }
  CHECK((f->type == PX_FLT_HEADER) == (f->nadd >= 1));
  for (i = 0; i < f->nadd; i++) {
    const char *colon = strchr(f->add[i], ':');
    CHECK(colon != NULL && colon > f->add[i] && colon - f->add[i] <= 76);
    CHECK(strlen(f->add[i]) <= 998 && strpbrk(f->add[i], "\r\n") == NULL);
  }
  CHECK((f->quarantine_dir == NULL) == (f->quarantine_line == 0));
  if (f->type != PX_FLT_CLAMAV && f->type != PX_FLT_CLAMD)
    CHECK(f->quarantine_dir == NULL && f->on_virus == PX_ONV_REPLACE);
}

static void check_conf(const struct px_conf *c)
{
  size_t i, j, k;

  CHECK(c->refs == 1);
  CHECK(c->path != NULL && strcmp(c->path, "fuzz.ini") == 0);
  CHECK(c->workers >= 1 && c->workers <= 256);
  CHECK(c->log_target < PX_LOGT_COUNT);
  CHECK((c->log_target == PX_LOGT_FILE) == (c->log_path != NULL));
  CHECK(c->log_level < PX_LOG_COUNT);
  CHECK((c->metrics.host == NULL) == (c->metrics.port == NULL));
  CHECK(c->nlisteners >= 1);
  CHECK(c->spool_dir != NULL && c->spool_dir[0] == '/');
  CHECK(c->memory_per_message >= 4096 &&
        c->memory_per_message <= (UINT64_C(1) << 30));
  CHECK(c->max_message_size >= c->memory_per_message &&
        c->max_message_size <= (UINT64_C(4) << 30));
  CHECK(c->memory_budget >= c->memory_per_message);
  CHECK(c->scan_threads >= 1 && c->scan_threads <= 256);
  CHECK((c->nfilters == 0) == (c->filters == NULL));
  for (i = 0; i < c->nfilters; i++) {
    check_filter(&c->filters[i]);
    for (j = 0; j < i; j++)
      CHECK(strcmp(c->filters[i].name, c->filters[j].name) != 0);
  }
  for (i = 0; i < c->nlisteners; i++) {
    const struct px_conf_listener *l = &c->listeners[i];
    CHECK(l->name != NULL && l->name[0] != '\0');
    CHECK(l->bind.host != NULL && l->bind.host[0] != '\0');
    CHECK(l->bind.port != NULL && atoi(l->bind.port) >= 1 &&
          atoi(l->bind.port) <= 65535);
    CHECK(l->upstream != NULL && l->upstream_name != NULL);
    CHECK(strcmp(l->upstream->name, l->upstream_name) == 0);
    CHECK(l->tls < PX_TLS_COUNT);
    CHECK((l->tls == PX_TLS_OFF) == (l->ncerts == 0));
    for (j = 0; j < l->ncerts; j++)
      CHECK(l->certs[j].cert != NULL && l->certs[j].key != NULL &&
            l->certs[j].line > 0 && l->certs[j].key_line > 0);
    CHECK(l->tls_min_version == 0x0303 || l->tls_min_version == 0x0304);
    CHECK(l->require_tls == 0 || l->require_tls == 1);
    CHECK(!(l->tls == PX_TLS_OFF && l->require_tls));
    CHECK((l->ciphers == NULL) == (l->ciphers_line == 0));
    CHECK(l->handshake_timeout_ms >= 1000 && l->handshake_timeout_ms <= 600000);
    CHECK(l->max_clients >= 1);
    CHECK(l->idle_timeout_ms >= 600000);
    CHECK(l->max_errors >= 1 && l->max_errors <= 1000);
    CHECK((l->nfilters == 0) == (l->filters == NULL));
    CHECK((l->nfilters == 0) == (l->filter_names == NULL));
    CHECK(l->nfilters == 0 || l->filters_line > 0);
    for (j = 0; j < l->nfilters; j++) {
      /* Resolved into c->filters, by name, each at most once. */
      CHECK(l->filters[j] >= c->filters &&
            l->filters[j] < c->filters + c->nfilters);
      CHECK(strcmp(l->filters[j]->name, l->filter_names[j]) == 0);
      for (k = 0; k < j; k++)
        CHECK(l->filters[k] != l->filters[j]);
    }
  }
  for (i = 0; i < c->nupstreams; i++) {
    const struct px_conf_upstream *u = &c->upstreams[i];
    CHECK(u->name != NULL && u->nservers >= 1 && u->servers != NULL);
    for (j = 0; j < u->nservers; j++)
      CHECK(u->servers[j].host != NULL && u->servers[j].port != NULL);
    CHECK(u->tls < PX_TLS_COUNT);
    CHECK(u->verify == 0 || u->verify == 1);
    CHECK((u->ca_file == NULL) == (u->ca_file_line == 0));
    CHECK((u->client.cert == NULL) == (u->client.key == NULL));
    CHECK(u->max_response_line >= 512 && u->max_response_line <= 65536);
  }
}

/* Each line is "fuzz.ini:LINE: message" or "fuzz.ini: message", and no
 * message is conf.c's internal error (quoted input may contain the words,
 * so look at the start of the message only). */
static void check_err(const char *err)
{
  const char *line = err, *msg;

  CHECK(err[0] != '\0');
  while (*line != '\0') {
    const char *nl = strchr(line, '\n');
    CHECK(strncmp(line, "fuzz.ini", 8) == 0);
    msg = line + 8;
    if (*msg == ':')
      msg++;
    while (*msg >= '0' && *msg <= '9')
      msg++;
    if (*msg == ':')
      msg++;
    if (*msg == ' ')
      msg++;
    CHECK(strncmp(msg, "internal error", 14) != 0);
    if (nl == NULL)
      break; /* cut by the buffer's size */
    line = nl + 1;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct px_conf *c = NULL, *copy;
  char err[4096];
  char *text, *host, *port;
  uint64_t n;
  int rc, b;

  text = malloc(size + 1);
  if (text == NULL)
    return 0;
  memcpy(text, data, size);
  text[size] = '\0';

  rc = px_conf_load_string("fuzz.ini", text, &c, err, sizeof err);
  if (rc == 0) {
    CHECK(c != NULL && err[0] == '\0');
    check_conf(c);
    {
      char w[64];
      int nw = px_conf_warnings(c, w, sizeof w);
      CHECK(nw >= 0 && strlen(w) < sizeof w);
      CHECK((nw == 0) == (w[0] == '\0'));
      CHECK(px_conf_warnings(c, NULL, 0) == nw);
    }
    copy = c;
    px_conf_ref(c);
    px_conf_unref(&copy);
    CHECK(copy == NULL && c->refs == 1);
  } else {
    CHECK(rc == -EINVAL && c == NULL);
    check_err(err);
  }
  px_conf_unref(&c);

  /* The value parsers on their own, with the input as one value. */
  px_conf_parse_duration(text, &n);
  px_conf_parse_size(text, &n);
  px_conf_parse_bool(text, &b);
  if (px_conf_parse_hostport(text, &host, &port) == 0) {
    CHECK(host[0] != '\0' && atoi(port) >= 1 && atoi(port) <= 65535);
    free(host);
    free(port);
  } else {
    CHECK(host == NULL && port == NULL);
  }
  free(text);
  return 0;
}
