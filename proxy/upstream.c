/* upstream.c - the upstream leg: connect and failover, framing the
 * upstream's answers, and TLS toward the upstream. See sess.h.
 *
 * The head of the command queue is the only answer the framer expects
 * (window 1 until the upstream announces PIPELINING, and always with
 * filters), and it decides how the upstream's bytes are framed; every
 * framed event goes to the core. Bytes nothing was asked for are a
 * protocol error.
 */
#include "sess.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "px.h"

static struct px_session *of(struct px_conn *c)
{
  return c->owner;
}

void format_addr(const struct sockaddr *sa, char *out, size_t cap)
{
  char host[INET6_ADDRSTRLEN] = "?";

  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    snprintf(out, cap, "%s:%d", host, ntohs(in->sin_port));
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    snprintf(out, cap, "[%s]:%d", host, ntohs(in6->sin6_port));
  } else {
    snprintf(out, cap, "?");
  }
}

/* The upstream's TLS failed (handshake, certificate, STLS refused or
 * tampered with): say why in the log; the client gets -ERR [SYS/TEMP]. */
void up_tls_failed(struct px_session *s, const char *why)
{
  px_log(PX_LOG_WARN,
         "sid=%016" PRIx64 " ev=upstream_tls_failed upstream=%s err=\"%s\"",
         s->id, s->up_str, why);
  sess_on_up_failed(s, "upstream_tls_failed",
                    "-ERR [SYS/TEMP] Upstream TLS failed, try again later\r\n");
}

static void protocol_error(struct px_session *s, const char *why,
                           const char *data, size_t n)
{
  char txt[PX_PEER_TEXT_MAX * 4 + 4] = "-";

  if (data != NULL)
    px_log_sanitize(data, n, PX_PEER_TEXT_MAX, txt, sizeof txt);
  px_log(PX_LOG_WARN,
         "sid=%016" PRIx64 " ev=upstream_protocol upstream=%s err=\"%s\" "
         "data=%s",
         s->id, s->up_str, why, txt);
  sess_on_up_failed(s, "upstream_protocol",
                    "-ERR [SYS/TEMP] Upstream protocol error\r\n");
}

/* TLS toward the upstream: right after connect (implicit), or after its
 * +OK to STLS. */
static void up_start_tls(struct px_session *s)
{
  const char *name = s->cu->server_name ? s->cu->server_name : s->up_host;
  struct px_tls *t = px_tls_new_client(
      s->gen->tls->upstreams[s->cu - s->gen->conf->upstreams], name,
      s->cu->verify);
  int rc;

  if (t == NULL) {
    sess_close(s, "out_of_memory");
    return;
  }
  s->t_uphs = sess_now(s);
  sess_up_enter(s, PX_UP_TLS);
  rc = px_conn_start_tls(&s->up, t);
  if (rc < 0) {
    up_tls_failed(s, px_tls_error(t));
    return;
  }
  sess_arm(s);
}

void up_dispatch(struct px_session *s)
{
  struct px_cmdq_ent *e = px_cmdq_head(&s->q);
  /* A held message stops upstream reads: with filters, one answer at a
   * time, so nothing can arrive behind it. */
  unsigned window = s->pipelining && s->cl->nfilters == 0 ? PX_UP_WINDOW : 1;

  if (e == NULL)
    return;
  if (e->sent && !e->framed) {
    px_framer_start(&s->fr, e->shape,
                    e->kind == PX_CQ_RELAY && e->id == PX_CMD_CAPA,
                    s->cu->max_response_line);
    e->framed = 1;
  }
  if (s->ust != PX_UP_READY)
    return;
  for (; e != NULL && s->inflight < window; e = e->next) {
    if (e->kind != PX_CQ_RELAY || e->sent)
      continue;
    if (px_conn_write(&s->up, e->line, e->len) < 0) {
      sess_close(s, "out_of_memory");
      return;
    }
    e->sent = 1;
    if (s->inflight++ == 0)
      s->t_up = sess_now(s);
    if (e == px_cmdq_head(&s->q)) {
      px_framer_start(&s->fr, e->shape, e->id == PX_CMD_CAPA,
                      s->cu->max_response_line);
      e->framed = 1;
    }
  }
}

/* The greeting of an upstream with tls = starttls, and the answer to our
 * STLS. STLS goes right after the greeting whatever CAPA says: there is no
 * opportunistic mode. The greeting waits until TLS is up, so that a
 * failure can still be a clean -ERR to the client. left: bytes after the
 * status line in this read, which come in the clear where nothing may
 * (response injection, CVE-2020-14954 class). */
static void stls_status(struct px_session *s, const struct px_fr_out *o,
                        size_t left)
{
  char txt[PX_PEER_TEXT_MAX * 4 + 4], why[sizeof txt + 32];
  int greeting = s->ust == PX_UP_GREETING;

  if (greeting) {
    if (!o->ok) {
      sess_on_up_failed(s, "upstream_refused",
                        "-ERR [SYS/TEMP] Upstream refused the connection\r\n");
      return;
    }
    s->greeting = malloc(o->n ? o->n : 1);
    if (s->greeting == NULL || px_conn_write(&s->up, "STLS\r\n", 6) < 0) {
      sess_close(s, "out_of_memory");
      return;
    }
    memcpy(s->greeting, o->p, o->n);
    s->greetinglen = o->n;
    px_framer_reset(&s->fr);
    px_framer_start(&s->fr, PX_SHAPE_SINGLE, 0, s->cu->max_response_line);
    sess_up_enter(s, PX_UP_STLS);
    s->t_up = sess_now(s);
  } else if (!o->ok) {
    snprintf(why, sizeof why, "STLS refused: %s",
             px_log_sanitize(o->p, o->n, PX_PEER_TEXT_MAX, txt, sizeof txt));
    up_tls_failed(s, why);
    return;
  }
  if (left > 0) {
    snprintf(why, sizeof why, "%zu unexpected bytes around STLS", left);
    up_tls_failed(s, why);
    return;
  }
  if (!greeting)
    up_start_tls(s); /* the +OK to our STLS */
}

static size_t upstream_data(struct px_conn *c, const char *p, size_t n)
{
  struct px_session *s = of(c);
  size_t left = n;

  if (!sess_live(s))
    return n;
  s->t_up = sess_now(s);
  PX_CTR_ADD(s->w->ctr.bytes_upstream_in, c->bytes_in - s->up_in_counted);
  s->up_in_counted = c->bytes_in;
  sess_ref(s);
  while (left > 0 && sess_live(s)) {
    struct px_cmdq_ent *e = px_cmdq_head(&s->q);
    struct px_fr_out o;
    ssize_t used;

    if (e == NULL || !e->framed) {
      protocol_error(s, "unsolicited data", p, left);
      break;
    }
    if (s->hold == NULL && px_framer_in_body(&s->fr)) {
      /* No filter wants the message: re-stuff it straight into the
       * client's output, one pass. */
      size_t avail, outn;
      char *dst = sess_client_reserve(s, 4, &avail);
      if (dst == NULL)
        break;
      used =
          (ssize_t)px_framer_relay(&s->fr, &s->enc, p, left, dst, avail, &outn);
      sess_client_commit(s, outn);
      p += used;
      left -= (size_t)used;
      continue;
    }
    used = px_framer_feed(&s->fr, p, left, s->w->scratch, sizeof s->w->scratch,
                          &o);
    if (used < 0) {
      protocol_error(s, px_strerror((int)used), p, left);
      break;
    }
    p += used;
    left -= (size_t)used;
    switch (o.ev) {
    case PX_FR_NONE:
      /* The framer is done with this answer and bytes remain: nothing was
       * asked for them. */
      if (used == 0)
        protocol_error(s, "data after the response", p, left);
      break;
    case PX_FR_STATUS:
      if (e->kind == PX_CQ_GREETING && s->cu->tls == PX_TLS_STARTTLS)
        stls_status(s, &o, left);
      else
        sess_on_status(s, &o);
      break;
    case PX_FR_CONT:
      sess_on_cont(s, o.p, o.n);
      break;
    case PX_FR_BODY:
      sess_on_body(s, o.p, o.n);
      break;
    case PX_FR_LINE:
      sess_on_line(s, o.p, o.n);
      break;
    case PX_FR_END:
      sess_on_end(s);
      break;
    case PX_FR_COUNT:
      break;
    }
  }
  /* A framer in the middle of a body may still be owed its END event. */
  if (sess_live(s) && px_cmdq_head(&s->q) != NULL &&
      px_cmdq_head(&s->q)->framed && s->fr.st == PX_FRS_BODY &&
      s->fr.dot.st == PX_DOT_DONE) {
    struct px_fr_out o;
    (void)px_framer_feed(&s->fr, NULL, 0, s->w->scratch, sizeof s->w->scratch,
                         &o);
    if (o.ev == PX_FR_END)
      sess_on_end(s);
  }
  if (sess_live(s))
    sess_kick(s);
  sess_unref(&s);
  return n;
}

static void upstream_fail(struct px_conn *c, int err)
{
  struct px_session *s = of(c);

  if (!sess_live(s))
    return;
  if (err == PX_ETLS) {
    up_tls_failed(s, px_tls_error(c->tls));
    return;
  }
  px_log(PX_LOG_INFO,
         "sid=%016" PRIx64 " ev=upstream_closed upstream=%s err=%s", s->id,
         s->up_str, px_strerror(err));
  sess_on_up_failed(s, err == UV_EOF ? "upstream_eof" : "upstream_error",
                    "-ERR [SYS/TEMP] Upstream closed the connection\r\n");
}

static void upstream_sent(struct px_conn *c)
{
  sess_flush(of(c));
}

static void upstream_low(struct px_conn *c)
{
  sess_on_up_low(of(c));
}

/* The upstream's handshake is done and its certificate checked (the
 * handshake fails otherwise). After STLS the greeting held meanwhile goes
 * to the client now; no command has gone upstream before this point. */
static void upstream_tls_ready(struct px_conn *c)
{
  struct px_session *s = of(c);

  if (px_log_enabled(PX_LOG_DEBUG))
    px_log(PX_LOG_DEBUG,
           "sid=%016" PRIx64 " ev=tls_ready side=upstream upstream=%s tls=%s "
           "cipher=%s",
           s->id, s->up_str, px_tls_version(c->tls), px_tls_cipher(c->tls));
  if (s->greeting != NULL) {
    struct px_fr_out o = { .ev = PX_FR_STATUS, .ok = 1 };
    o.p = s->greeting;
    o.n = s->greetinglen;
    sess_on_status(s, &o);
    free(s->greeting);
    s->greeting = NULL;
  } else {
    sess_up_enter(s, PX_UP_GREETING);
  }
  sess_arm(s);
}

static void upstream_closed(struct px_conn *c)
{
  struct px_session *s = of(c);

  if (s->ust == PX_UP_RETRY && sess_live(s))
    up_connect(s);
}

static void upstream_hold(struct px_conn *c)
{
  sess_ref(of(c));
}

static void upstream_release(struct px_conn *c)
{
  struct px_session *s = of(c);
  sess_unref(&s);
}

const struct px_conn_ops px_upstream_ops = {
  upstream_data,      upstream_fail,   upstream_sent, upstream_low,
  upstream_tls_ready, upstream_closed, upstream_hold, upstream_release
};

/* ---- connecting --------------------------------------------------------- */

static void connect_failed(struct px_session *s, const char *err)
{
  px_log(PX_LOG_INFO,
         "sid=%016" PRIx64 " ev=upstream_connect_failed server=%s err=%s",
         s->id, s->up_str, err);
  PX_CTR_ADD(s->w->ctr.upstream_errors_total, 1);
  /* The handle's close callback moves on to the next address. */
  sess_up_enter(s, PX_UP_RETRY);
  px_conn_close(&s->up);
}

static void on_connect(struct px_conn *c, int status)
{
  struct px_session *s = of(c);

  if (!sess_live(s) || status == UV_ECANCELED)
    return;
  if (status < 0) {
    connect_failed(s, uv_strerror(status));
    return;
  }
  sess_on_connected(s);
  if (s->cu->tls == PX_TLS_IMPLICIT)
    up_start_tls(s);
  else
    sess_up_enter(s, PX_UP_GREETING);
  if (sess_live(s) && px_conn_start(&s->up) < 0)
    sess_on_up_failed(s, "upstream_error",
                      "-ERR [SYS/TEMP] Upstream failed, try again later\r\n");
  sess_arm(s);
}

static void upstream_unavailable(struct px_session *s)
{
  px_log(PX_LOG_WARN,
         "sid=%016" PRIx64 " ev=upstream_unavailable upstream=%s servers=%zu",
         s->id, s->cu->name, s->cu->nservers);
  sess_on_up_failed(s, "upstream_unavailable",
                    "-ERR [SYS/TEMP] Upstream unavailable, try again later\r\n");
}

static void connect_addr(struct px_session *s, const struct sockaddr *sa)
{
  int rc;

  format_addr(sa, s->up_str, sizeof s->up_str);
  rc = px_conn_init(&s->up, &s->w->loop, &px_upstream_ops, s, s->w->slab,
                    sizeof s->w->slab);
  if (rc < 0) {
    upstream_unavailable(s);
    return;
  }
  px_buf_set_wipe(&s->up.out, 1); /* PASS and AUTH lines */
  sess_up_enter(s, PX_UP_CONNECTING);
  s->t_conn = sess_now(s);
  rc = px_conn_connect(&s->up, sa, on_connect);
  if (rc < 0)
    connect_failed(s, uv_strerror(rc));
  sess_arm(s);
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
  struct px_session *s = req->data;

  if (!sess_live(s)) {
    uv_freeaddrinfo(res);
    sess_unref(&s);
    return;
  }
  if (status < 0) {
    const struct px_conf_hostport *hp = &s->cu->servers[s->server_idx - 1];
    px_log(PX_LOG_WARN,
           "sid=%016" PRIx64 " ev=upstream_resolve_failed server=%s:%s "
           "err=%s",
           s->id, hp->host, hp->port, uv_strerror(status));
    PX_CTR_ADD(s->w->ctr.upstream_errors_total, 1);
  } else {
    s->ai = res;
    s->ai_next = res;
  }
  up_connect(s);
  sess_unref(&s);
}

void up_connect(struct px_session *s)
{
  const struct px_conf_hostport *hp;
  struct sockaddr_storage ss;
  struct addrinfo hints;
  int rc;

  if (s->ai_next != NULL) {
    struct addrinfo *ai = s->ai_next;
    s->ai_next = ai->ai_next;
    connect_addr(s, ai->ai_addr);
    return;
  }
  if (s->ai != NULL) {
    uv_freeaddrinfo(s->ai);
    s->ai = NULL;
  }
  if (s->server_idx >= s->cu->nservers) {
    upstream_unavailable(s);
    return;
  }
  hp = &s->cu->servers[s->server_idx++];
  s->up_host = hp->host;
  if (uv_ip4_addr(hp->host, atoi(hp->port), (struct sockaddr_in *)&ss) == 0 ||
      uv_ip6_addr(hp->host, atoi(hp->port), (struct sockaddr_in6 *)&ss) == 0) {
    connect_addr(s, (const struct sockaddr *)&ss);
    return;
  }
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  s->gai.data = s;
  sess_up_enter(s, PX_UP_RESOLVING);
  s->t_conn = sess_now(s);
  rc = uv_getaddrinfo(&s->w->loop, &s->gai, gai_cb, hp->host, hp->port, &hints);
  if (rc < 0) {
    up_connect(s);
    return;
  }
  sess_ref(s);
  sess_arm(s);
}

void up_connect_timeout(struct px_session *s)
{
  if (s->ust == PX_UP_CONNECTING) {
    connect_failed(s, "\"timed out\"");
  } else {
    px_log(PX_LOG_INFO,
           "sid=%016" PRIx64 " ev=upstream_connect_failed server=%s "
           "err=\"timed out\"",
           s->id, s->up_str);
    PX_CTR_ADD(s->w->ctr.upstream_errors_total, 1);
  }
  /* A name lookup cannot be cut short: its callback moves on. */
  s->t_conn = sess_now(s);
}
