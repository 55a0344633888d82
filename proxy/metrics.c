/* metrics.c - Prometheus text at /metrics and a readiness check at /ready.
 *
 * A minimal HTTP/1.x responder on the main thread's loop: one request per
 * connection, read with a size cap and a deadline, answered, then closed.
 * The counters are summed over the workers when read; each worker is their
 * only writer (worker.h, PX_CTR_ADD), so no lock is taken anywhere.
 */
#include "metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pop3.h"
#include "px.h"

/* A request head larger than this is not a scrape. */
#define PX_MREQ_MAX        4096
#define PX_MREQ_TIMEOUT_MS 5000
#define PX_MRESP_MAX       16384

struct mconn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t wreq;
  struct px_metrics *m;
  int refs; /* one per open handle */
  int answered;
  size_t len;
  char req[PX_MREQ_MAX];
  char resp[PX_MRESP_MAX];
};

static void mconn_closed_cb(uv_handle_t *h)
{
  struct mconn *c = h->data;

  if (--c->refs == 0)
    free(c);
}

static void mconn_close(struct mconn *c)
{
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, mconn_closed_cb);
  if (!uv_is_closing((uv_handle_t *)&c->timer))
    uv_close((uv_handle_t *)&c->timer, mconn_closed_cb);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct mconn *c = h->data;

  (void)suggested;
  buf->base = c->req + c->len;
  buf->len = sizeof c->req - c->len;
}

struct out {
  char *p;
  size_t n, cap;
};

static void put(struct out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...)
{
  va_list ap;
  int r;

  if (o->n >= o->cap)
    return;
  va_start(ap, fmt);
  r = vsnprintf(o->p + o->n, o->cap - o->n, fmt, ap);
  va_end(ap);
  if (r > 0)
    o->n += (size_t)r < o->cap - o->n ? (size_t)r : o->cap - o->n;
}

static void counter(struct out *o, const char *name, const char *help,
                    const char *type)
{
  put(o, "# HELP popgate_%s %s\n# TYPE popgate_%s %s\n", name, help, name,
      type);
}

const double px_fsec_bounds[PX_FSEC_BUCKETS] = { 0.01, 0.05, 0.1, 0.25, 0.5,
                                                 1,    2.5,  5,   10,   30 };

void px_fsec_add(struct px_counters *c, double seconds)
{
  size_t b = 0;

  while (b < PX_FSEC_BUCKETS && seconds > px_fsec_bounds[b])
    b++;
  PX_CTR_ADD(c->filter_seconds[b], 1);
  PX_CTR_ADD(c->filter_seconds_sum_us, (uint64_t)(seconds * 1e6));
}

void px_fstat_add(struct px_counters *c, const char *name, enum flt_did v)
{
  int j;

  for (j = 0; j < PX_FSTAT_SLOTS - 1 && c->filtered[j].used; j++)
    if (strcmp(c->filtered[j].name, name) == 0)
      break;
  if (!c->filtered[j].used) {
    snprintf(c->filtered[j].name, sizeof c->filtered[j].name, "%s", name);
    __atomic_store_n(&c->filtered[j].used, 1, __ATOMIC_RELEASE);
  }
  PX_CTR_ADD(c->filtered[j].v[v], 1);
}

static size_t render(const struct px_metrics *m, char *buf, size_t cap)
{
  const struct px_runtime *rt = m->rt;
  struct px_counters sum;
  struct out o = { buf, 0, cap };

  memset(&sum, 0, sizeof sum);
  for (unsigned k = 0; k < rt->nworkers; k++) {
    const struct px_counters *c = &rt->workers[k].ctr;
    sum.connections_total += PX_CTR_GET(c->connections_total);
    sum.connections_refused += PX_CTR_GET(c->connections_refused);
    sum.connections_active += PX_CTR_GET(c->connections_active);
    for (int i = 0; i < PX_CMD_COUNT; i++)
      sum.commands_total[i] += PX_CTR_GET(c->commands_total[i]);
    sum.commands_rejected += PX_CTR_GET(c->commands_rejected);
    sum.bytes_client_in += PX_CTR_GET(c->bytes_client_in);
    sum.bytes_client_out += PX_CTR_GET(c->bytes_client_out);
    sum.bytes_upstream_in += PX_CTR_GET(c->bytes_upstream_in);
    sum.bytes_upstream_out += PX_CTR_GET(c->bytes_upstream_out);
    sum.upstream_errors_total += PX_CTR_GET(c->upstream_errors_total);
    sum.tls_handshakes_total += PX_CTR_GET(c->tls_handshakes_total);
    for (int i = 0; i <= PX_FSEC_BUCKETS; i++)
      sum.filter_seconds[i] += PX_CTR_GET(c->filter_seconds[i]);
    sum.filter_seconds_sum_us += PX_CTR_GET(c->filter_seconds_sum_us);
    sum.tls_handshake_failures_total +=
        PX_CTR_GET(c->tls_handshake_failures_total);
  }

  counter(&o, "connections_total", "Client connections accepted.", "counter");
  put(&o, "popgate_connections_total %" PRIu64 "\n", sum.connections_total);
  counter(&o, "connections_active", "Client sessions open now.", "gauge");
  put(&o, "popgate_connections_active %" PRId64 "\n", sum.connections_active);
  counter(&o, "connections_refused_total",
          "Clients refused at max_clients or max_clients_per_ip.", "counter");
  put(&o, "popgate_connections_refused_total %" PRIu64 "\n",
      sum.connections_refused);
  counter(&o, "commands_total", "Client commands accepted, by command.",
          "counter");
  for (int i = 0; i < PX_CMD_COUNT; i++)
    put(&o, "popgate_commands_total{command=\"%s\"} %" PRIu64 "\n",
        px_cmd_names[i], sum.commands_total[i]);
  counter(&o, "commands_rejected_total",
          "Client lines answered -ERR by popgate and not relayed.", "counter");
  put(&o, "popgate_commands_rejected_total %" PRIu64 "\n",
      sum.commands_rejected);
  counter(&o, "bytes_total", "Bytes relayed, by direction.", "counter");
  put(&o, "popgate_bytes_total{direction=\"client_in\"} %" PRIu64 "\n",
      sum.bytes_client_in);
  put(&o, "popgate_bytes_total{direction=\"client_out\"} %" PRIu64 "\n",
      sum.bytes_client_out);
  put(&o, "popgate_bytes_total{direction=\"upstream_in\"} %" PRIu64 "\n",
      sum.bytes_upstream_in);
  put(&o, "popgate_bytes_total{direction=\"upstream_out\"} %" PRIu64 "\n",
      sum.bytes_upstream_out);
  counter(&o, "upstream_errors_total",
          "Upstream failures: connect, timeout, protocol, early close.",
          "counter");
  put(&o, "popgate_upstream_errors_total %" PRIu64 "\n",
      sum.upstream_errors_total);
  counter(&o, "tls_handshakes_total", "Client TLS handshakes completed.",
          "counter");
  put(&o, "popgate_tls_handshakes_total %" PRIu64 "\n",
      sum.tls_handshakes_total);
  counter(&o, "tls_handshake_failures_total",
          "Client TLS handshakes that failed or timed out.", "counter");
  put(&o, "popgate_tls_handshake_failures_total %" PRIu64 "\n",
      sum.tls_handshake_failures_total);
  counter(&o, "messages_filtered_total",
          "Messages through the filter chain, by filter and what that "
          "filter did with them.",
          "counter");
  /* Each worker has its own slots; the same name may sit in several. */
  for (unsigned k = 0; k < rt->nworkers; k++) {
    const struct px_counters *c = &rt->workers[k].ctr;
    for (int j = 0; j < PX_FSTAT_SLOTS; j++) {
      const struct px_fstat *f = &c->filtered[j];
      if (!__atomic_load_n(&f->used, __ATOMIC_ACQUIRE))
        break;
      for (int i = 0; i < FLT_DID_COUNT; i++) {
        uint64_t n = PX_CTR_GET(f->v[i]);
        if (n > 0)
          put(&o,
              "popgate_messages_filtered_total{filter=\"%s\",verdict=\"%s\"}"
              " %" PRIu64 "\n",
              f->name, flt_did_names[i], n);
      }
    }
  }
  counter(&o, "filter_seconds", "Time the filter chain took per message.",
          "histogram");
  {
    uint64_t cum = 0;
    for (int i = 0; i < PX_FSEC_BUCKETS; i++) {
      cum += sum.filter_seconds[i];
      put(&o, "popgate_filter_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
          px_fsec_bounds[i], cum);
    }
    cum += sum.filter_seconds[PX_FSEC_BUCKETS];
    put(&o, "popgate_filter_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", cum);
    put(&o, "popgate_filter_seconds_sum %.6f\n",
        (double)sum.filter_seconds_sum_us / 1e6);
    put(&o, "popgate_filter_seconds_count %" PRIu64 "\n", cum);
  }
  counter(&o, "workers", "Event-loop threads.", "gauge");
  put(&o, "popgate_workers %u\n", rt->nworkers);
  return o.n;
}

static void written_cb(uv_write_t *req, int status)
{
  struct mconn *c = req->data;

  (void)status;
  mconn_close(c);
}

static void respond(struct mconn *c, int code, const char *reason,
                    const char *type, const char *body, size_t bodylen)
{
  uv_buf_t b;
  int n;

  c->answered = 1;
  uv_read_stop((uv_stream_t *)&c->tcp);
  n = snprintf(c->resp, sizeof c->resp,
               "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
               "Connection: close\r\n\r\n",
               code, reason, type, bodylen);
  if (n < 0 || (size_t)n + bodylen > sizeof c->resp) {
    mconn_close(c);
    return;
  }
  memmove(c->resp + n, body, bodylen);
  b = uv_buf_init(c->resp, (unsigned)((size_t)n + bodylen));
  c->wreq.data = c;
  if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, written_cb) < 0)
    mconn_close(c);
}

static void answer(struct mconn *c)
{
  static const char text[] = "text/plain; version=0.0.4; charset=utf-8";
  char body[PX_MRESP_MAX - 256];
  const char *sp, *path, *end = c->req + c->len;
  size_t plen;

  if (c->len < 4 || memcmp(c->req, "GET ", 4) != 0) {
    respond(c, 405, "Method Not Allowed", text, "GET only\n", 9);
    return;
  }
  path = c->req + 4;
  sp = memchr(path, ' ', (size_t)(end - path));
  plen = sp != NULL ? (size_t)(sp - path) : 0;
  if (plen == 8 && memcmp(path, "/metrics", 8) == 0) {
    size_t n = render(c->m, body, sizeof body);
    respond(c, 200, "OK", text, body, n);
  } else if (plen == 6 && memcmp(path, "/ready", 6) == 0) {
    if (__atomic_load_n(&c->m->rt->stopping, __ATOMIC_RELAXED))
      respond(c, 503, "Service Unavailable", text, "stopping\n", 9);
    else
      respond(c, 200, "OK", text, "ready\n", 6);
  } else {
    respond(c, 404, "Not Found", text, "not found\n", 10);
  }
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
  struct mconn *c = st->data;

  (void)buf;
  if (nread < 0) {
    mconn_close(c);
    return;
  }
  c->len += (size_t)nread;
  /* The request line is all we need; wait for the end of the head so the
   * client is done sending when we answer and close. */
  if (c->len >= 4 && memmem(c->req, c->len, "\r\n\r\n", 4) != NULL)
    answer(c);
  else if (c->len >= sizeof c->req)
    respond(c, 431, "Request Header Fields Too Large", "text/plain",
            "too large\n", 10);
}

static void timeout_cb(uv_timer_t *t)
{
  mconn_close(t->data);
}

static void accept_cb(uv_stream_t *server, int status)
{
  struct px_metrics *m = server->data;
  struct mconn *c;

  if (status < 0)
    return;
  c = calloc(1, sizeof *c);
  if (c == NULL)
    return;
  c->m = m;
  uv_tcp_init(server->loop, &c->tcp);
  uv_timer_init(server->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->refs = 2;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 ||
      uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) < 0) {
    mconn_close(c);
    return;
  }
  uv_timer_start(&c->timer, timeout_cb, PX_MREQ_TIMEOUT_MS, 0);
}

int px_metrics_start(struct px_metrics *m, uv_loop_t *loop,
                     struct px_runtime *rt, const struct px_conf_hostport *hp)
{
  struct sockaddr_storage ss;
  int port = atoi(hp->port), rc;

  m->rt = rt;
  if (uv_ip4_addr(hp->host, port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(hp->host, port, (struct sockaddr_in6 *)&ss) != 0)
    return UV_EINVAL;
  rc = uv_tcp_init(loop, &m->srv);
  if (rc < 0)
    return rc;
  m->open = 1;
  m->srv.data = m;
  rc = uv_tcp_bind(&m->srv, (const struct sockaddr *)&ss, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&m->srv, 64, accept_cb);
  return rc;
}

void px_metrics_stop(struct px_metrics *m)
{
  if (m->open && !uv_is_closing((uv_handle_t *)&m->srv))
    uv_close((uv_handle_t *)&m->srv, NULL);
}
