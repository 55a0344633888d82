/* session.c - the core of a session: its lifetime, its deadlines, and the
 * decisions between the rooms (client.c, upstream.c, hold.c; see sess.h).
 *
 * The dialogue (enum px_state):
 *
 *   CONNECTING --greeting relayed--> AUTHORIZATION
 *   AUTHORIZATION --+OK to PASS, APOP or AUTH--> TRANSACTION
 *   any --QUIT answered, error, timeout--> CLOSING --output sent--> CLOSED
 *   any --client EOF (not after QUIT), fatal error--> CLOSED --refs 0--> freed
 *
 * The client leg (enum px_cli_st, client.c):
 *
 *   [implicit] HANDSHAKE --done--> COMMANDS --AUTH x--> SASL_WAIT
 *   SASL_WAIT --"+ " relayed--> SASL_LINE --line relayed--> SASL_WAIT
 *   SASL_WAIT --+OK/-ERR relayed--> COMMANDS
 *   COMMANDS --STLS--> STLS --+OK sent--> HANDSHAKE --done--> COMMANDS
 *   COMMANDS --QUIT, or a reply that closes--> QUIT --EOF--> GONE
 *
 * The upstream leg (enum px_up_st, upstream.c):
 *
 *   IDLE --> [RESOLVING] --> CONNECTING --fail--> RETRY --> next address
 *   CONNECTING --ok--> [TLS] --> GREETING --STLS configured--> STLS --> TLS
 *   GREETING (or TLS after STLS) --greeting relayed--> READY --> CLOSED
 *
 * The client is read all the time: its EOF is seen at once in every
 * state. A client that closes after QUIT keeps its session until the QUIT
 * is answered (its DELEs are committed) but gives its slot back at once;
 * one that closes otherwise ends the session. Reads stop only when an
 * output queue is above high water: the client's (it is not reading: it
 * stops the upstream too) or the upstream's. Whatever produces output for
 * the client (relayed answers, local replies, notices, keep-alive lines)
 * is bounded by that one rule.
 *
 * Lifetime: refs counts 1 "alive" + 1 per open handle + 1 per request or
 * job in flight. sess_close() drops "alive"; the struct and everything it
 * owns (queue, framer, greeting) are freed when the last callback has run,
 * so no room can touch freed memory while a call is under way.
 */
#include "sess.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"
#include "log.h"
#include "px.h"

const char *const px_state_names[] = { "connecting", "authorization",
                                       "transaction", "closing", "closed" };
_Static_assert(sizeof px_state_names / sizeof *px_state_names == PX_ST_COUNT,
               "px_state_names out of sync");
const char *const px_cli_st_names[] = { "handshake", "commands", "sasl_wait",
                                        "sasl_line", "stls",     "quit",
                                        "gone" };
_Static_assert(sizeof px_cli_st_names / sizeof *px_cli_st_names == PX_CLI_COUNT,
               "px_cli_st_names out of sync");
const char *const px_up_st_names[] = { "idle",     "resolving", "connecting",
                                       "retry",    "tls",       "greeting",
                                       "stls",     "ready",     "closed" };
_Static_assert(sizeof px_up_st_names / sizeof *px_up_st_names == PX_UP_COUNT,
               "px_up_st_names out of sync");

/* ---- references and states ---------------------------------------------- */

static void session_free(struct px_session *s)
{
  assert(s->refs == 0);
  hold_drop(s);
  px_cmdq_clear(&s->q);
  px_framer_reset(&s->fr);
  free(s->greeting);
  if (s->ai != NULL)
    uv_freeaddrinfo(s->ai);
  px_gen_unref(&s->gen);
  free(s);
}

void sess_ref(struct px_session *s)
{
  s->refs++;
}

void sess_unref(struct px_session **sp)
{
  struct px_session *s = *sp;

  *sp = NULL;
  if (--s->refs == 0)
    session_free(s);
}

static void timer_closed_cb(uv_handle_t *h)
{
  struct px_session *s = h->data;
  sess_unref(&s);
}

struct px_session *px_session_next(const struct px_session *s)
{
  return s->next;
}

uint64_t sess_now(const struct px_session *s)
{
  return uv_now(&s->w->loop);
}

int sess_live(const struct px_session *s)
{
  return s->st < PX_ST_CLOSING;
}

static void log_state(const struct px_session *s, const char *leg,
                      const char *from, const char *to)
{
  if (px_log_enabled(PX_LOG_DEBUG))
    px_log(PX_LOG_DEBUG, "sid=%016" PRIx64 " ev=state leg=%s from=%s to=%s",
           s->id, leg, from, to);
}

void sess_enter(struct px_session *s, enum px_state st)
{
  if (s->st == st)
    return;
  log_state(s, "session", px_state_names[s->st], px_state_names[st]);
  s->st = st;
  if (st == PX_ST_TRANSACTION)
    s->logged_in = 1;
}

void sess_cli_enter(struct px_session *s, enum px_cli_st st)
{
  if (s->cst == st)
    return;
  log_state(s, "client", px_cli_st_names[s->cst], px_cli_st_names[st]);
  s->cst = st;
}

void sess_up_enter(struct px_session *s, enum px_up_st st)
{
  if (s->ust == st)
    return;
  log_state(s, "upstream", px_up_st_names[s->ust], px_up_st_names[st]);
  s->ust = st;
}

/* ---- output and the read policy ----------------------------------------- */

int sess_to_client(struct px_session *s, const void *p, size_t n)
{
  if (s->st == PX_ST_CLOSED)
    return UV_ECANCELED;
  if (px_conn_write(&s->cli, p, n) < 0) {
    sess_close(s, "out_of_memory");
    return UV_ENOMEM;
  }
  return 0;
}

int sess_to_client_str(struct px_session *s, const char *str)
{
  return sess_to_client(s, str, strlen(str));
}

int sess_to_client_line(struct px_session *s, const char *p, size_t n)
{
  int rc = sess_to_client(s, p, n);
  return rc < 0 ? rc : sess_to_client(s, "\r\n", 2);
}

int sess_to_upstream(struct px_session *s, const void *p, size_t n)
{
  if (s->st == PX_ST_CLOSED)
    return UV_ECANCELED;
  if (px_conn_write(&s->up, p, n) < 0) {
    sess_close(s, "out_of_memory");
    return UV_ENOMEM;
  }
  return 0;
}

char *sess_client_reserve(struct px_session *s, size_t min, size_t *avail)
{
  char *p = s->st == PX_ST_CLOSED ? NULL : px_conn_reserve(&s->cli, min, avail);

  if (p == NULL)
    sess_close(s, "out_of_memory");
  return p;
}

void sess_client_commit(struct px_session *s, size_t n)
{
  px_conn_commit(&s->cli, n);
}

void sess_body_out(struct px_session *s, const char *p, size_t n)
{
  while (n > 0) {
    size_t avail, outn, used;
    char *dst = sess_client_reserve(s, 2, &avail);
    if (dst == NULL)
      return;
    used = px_dot_encode(&s->enc, p, n, dst, avail, &outn);
    sess_client_commit(s, outn);
    p += used;
    n -= used;
  }
}

int sess_client_full(struct px_session *s)
{
  return px_conn_over(&s->cli);
}

/* Which legs read. The client: always, but for output pressure on either
 * leg (a client that does not read its answers is not read; its hang-up
 * then shows as a failed write). The upstream: while it may owe bytes
 * and the client keeps up. */
static void policy(struct px_session *s)
{
  int full = px_conn_over(&s->cli);

  if (s->st == PX_ST_CLOSED)
    return;
  if (px_conn_pause(&s->cli, full || px_conn_over(&s->up)) < 0) {
    sess_close(s, "read_error");
    return;
  }
  if (s->ust >= PX_UP_TLS && s->ust <= PX_UP_READY &&
      px_conn_pause(&s->up, full || hold_blocks_upstream(s)) < 0)
    sess_on_up_failed(s, "upstream_error",
                      "-ERR [SYS/TEMP] Upstream failed, try again later\r\n");
}

void sess_flush(struct px_session *s)
{
  size_t sent;
  int rc;

  if (s->st == PX_ST_CLOSED)
    return;
  rc = px_conn_flush(&s->cli);
  if (rc == 0)
    rc = px_conn_flush(&s->up);
  /* What reached the kernel, at once or through a write callback. */
  sent = px_conn_take_done(&s->cli);
  if (sent > 0) {
    PX_CTR_ADD(s->w->ctr.bytes_client_out, sent);
    s->t_cli = sess_now(s);
  }
  PX_CTR_ADD(s->w->ctr.bytes_upstream_out, px_conn_take_done(&s->up));
  if (rc < 0) {
    sess_close(s, "write_error");
    return;
  }
  if (s->st == PX_ST_CLOSING && px_conn_pending(&s->cli) == 0) {
    sess_close(s, s->reason);
    return;
  }
  policy(s);
}

/* ---- ending ------------------------------------------------------------- */

static void release_slot(struct px_session *s)
{
  if (!s->counted)
    return;
  s->counted = 0;
  px_lrt_release(s->lrt, (const struct sockaddr *)&s->peer);
}

void sess_finish(struct px_session *s, const char *reason)
{
  if (!sess_live(s))
    return;
  s->reason = reason;
  sess_enter(s, PX_ST_CLOSING);
  px_conn_close(&s->up);
  sess_up_enter(s, PX_UP_CLOSED);
  hold_drop(s); /* nothing more of it goes out */
  px_conn_tls_close(&s->cli);
  sess_flush(s);
  sess_arm(s);
}

void sess_close(struct px_session *s, const char *reason)
{
  struct px_worker *w = s->w;
  const struct px_conf_listener *cl = s->cl;
  char sni[PX_USER_LOG_MAX * 4 + 4] = "-";
  double secs;

  if (s->st == PX_ST_CLOSED)
    return;
  if (s->reason == NULL || strcmp(reason, "client_timeout") == 0)
    s->reason = reason;
  sess_enter(s, PX_ST_CLOSED);

  secs = (double)(sess_now(s) - s->t_start) / 1000.0;
  if (s->cli.tls != NULL) {
    /* The client chose its SNI name: peer text like any other. */
    const char *name = px_tls_sni(s->cli.tls);
    px_log_sanitize(name, strlen(name), PX_USER_LOG_MAX, sni, sizeof sni);
  }
  px_log(
      PX_LOG_INFO,
      "sid=%016" PRIx64 " ev=close listener=%s client=%s user=%s "
      "auth=%s upstream=%s tls=%s cipher=%s sni=%s verdicts=%u cmds=%u msgs=%u "
      "bytes_in=%" PRIu64 " bytes_out=%" PRIu64 " duration=%.3f reason=%s",
      s->id, cl->name, s->peer_str, s->user[0] ? s->user : "-",
      s->logged_in ? "ok" : "no",
      s->up_str[0] ? s->up_str : "-",
      s->cli.tls ? px_tls_version(s->cli.tls) : "-",
      s->cli.tls ? px_tls_cipher(s->cli.tls) : "-", sni, s->nverdicts, s->ncmds,
      s->nmsgs, s->cli.bytes_in, s->cli.bytes_out, secs, s->reason);

  PX_CTR_ADD(w->ctr.connections_active, -1);
  release_slot(s);
  px_conn_close(&s->cli);
  px_conn_close(&s->up);
  uv_close((uv_handle_t *)&s->timer, timer_closed_cb);
  hold_cancel(s);

  if (s->prev != NULL)
    s->prev->next = s->next;
  else
    w->sessions = s->next;
  if (s->next != NULL)
    s->next->prev = s->prev;
  w->nsessions--;
  px_worker_session_gone(w);
  sess_unref(&s); /* the "alive" reference */
}

void px_session_abort(struct px_session *s, const char *reason)
{
  sess_close(s, reason);
}

/* ---- events ------------------------------------------------------------- */

/* Moves the queue on: local replies at the head go to the client, then the
 * upstream leg sends what its window allows. Called whenever the head may
 * have changed. */
static void dispatch(struct px_session *s)
{
  struct px_cmdq_ent *e;

  while (sess_live(s) && (e = px_cmdq_head(&s->q)) != NULL &&
         e->kind == PX_CQ_LOCAL) {
    int close_after = e->close_after, start_tls = e->start_tls;
    if (sess_to_client(s, e->line, e->len) < 0)
      return;
    px_cmdq_pop(&s->q);
    if (close_after) {
      sess_finish(s, "client_errors");
      return;
    }
    if (start_tls && cli_start_tls(s) < 0)
      return;
  }
  if (sess_live(s))
    up_dispatch(s);
}

void sess_kick(struct px_session *s)
{
  dispatch(s);
  sess_flush(s);
  cli_resume(s); /* room in the queue for what the client sent ahead */
  sess_arm(s);
}

void sess_on_client_gone(struct px_session *s, const char *reason)
{
  if (s->cst == PX_CLI_QUIT && strcmp(reason, "client_eof") == 0 &&
      sess_live(s)) {
    /* A QUIT is queued: it still goes upstream and is answered (a client
     * that only half-closed reads the answer), but the slot is free. */
    release_slot(s);
    sess_cli_enter(s, PX_CLI_GONE);
    return;
  }
  sess_close(s, reason);
}

void sess_on_client_tls(struct px_session *s)
{
  PX_CTR_ADD(s->w->ctr.tls_handshakes_total, 1);
  if (px_log_enabled(PX_LOG_DEBUG))
    px_log(PX_LOG_DEBUG,
           "sid=%016" PRIx64 " ev=tls_ready side=client tls=%s cipher=%s "
           "sni=%s",
           s->id, px_tls_version(s->cli.tls), px_tls_cipher(s->cli.tls),
           px_tls_sni(s->cli.tls));
  sess_cli_enter(s, PX_CLI_COMMANDS);
  /* An implicit listener connects the upstream only now: no upstream
   * connection is spent on scanners and failed handshakes. */
  if (s->ust == PX_UP_IDLE)
    up_connect(s);
  sess_arm(s);
}

void sess_on_client_low(struct px_session *s)
{
  if (hold_emitting(s))
    hold_emit(s);
  else
    sess_flush(s);
  cli_resume(s);
  sess_arm(s);
}

void sess_on_up_low(struct px_session *s)
{
  sess_flush(s);
}

void sess_on_connected(struct px_session *s)
{
  px_cmdq_head(&s->q)->sent = 1; /* the greeting is due */
  s->inflight = 1;
  s->t_up = sess_now(s);
  up_dispatch(s);
}

/* The head's answer is complete: the next one can start. */
static void answer_complete(struct px_session *s)
{
  px_framer_reset(&s->fr);
  s->inflight--;
  px_cmdq_pop(&s->q);
  cli_resume(s);
  dispatch(s); /* the next head: a local reply, or the framer on its answer */
}

void sess_on_up_ready(struct px_session *s)
{
  answer_complete(s); /* the greeting */
  sess_up_enter(s, PX_UP_READY);
  sess_enter(s, PX_ST_AUTHORIZATION);
  dispatch(s);
  sess_flush(s);
  sess_arm(s);
}

void sess_on_status(struct px_session *s, const struct px_fr_out *o)
{
  struct px_cmdq_ent *e = px_cmdq_head(&s->q);
  enum px_cmd_id id = e->id;
  int auth = id == PX_CMD_PASS || id == PX_CMD_APOP ||
             (id == PX_CMD_AUTH && e->shape == PX_SHAPE_SASL);

  if (e->kind == PX_CQ_GREETING) {
    if (sess_to_client_line(s, o->p, o->n) < 0)
      return;
    if (!o->ok) {
      answer_complete(s);
      sess_finish(s, "upstream_refused");
      return;
    }
    sess_on_up_ready(s);
    return;
  }
  if (o->ok && s->cl->nfilters > 0 && (id == PX_CMD_RETR || id == PX_CMD_TOP)) {
    /* Nothing of it reaches the client before the verdict. */
    s->nmsgs++;
    hold_start(s, o, e);
    return;
  }
  if (sess_to_client_line(s, o->p, o->n) < 0)
    return;
  if (o->ok) {
    if (auth)
      sess_enter(s, PX_ST_TRANSACTION);
    if (id == PX_CMD_UTF8)
      s->utf8 = 1;
    if (id == PX_CMD_RETR || id == PX_CMD_TOP)
      s->nmsgs++;
    if (e->shape == PX_SHAPE_MULTI) {
      e->begun = 1;
      px_dot_enc_init(&s->enc);
      return;
    }
  } else if (auth) {
    /* A failed login counts as an error too: without it a client could
     * try passwords on one connection for ever. */
    s->errors++;
  }
  answer_complete(s);
  if (id == PX_CMD_QUIT)
    sess_finish(s, "quit");
  else if (s->errors >= s->cl->max_errors)
    sess_finish(s, "client_errors");
}

void sess_on_cont(struct px_session *s, const char *p, size_t n)
{
  if (sess_to_client_line(s, p, n) < 0)
    return;
  px_cmdq_head(&s->q)->begun = 1;
  cli_sasl_line(s);
}

void sess_on_body(struct px_session *s, const char *p, size_t n)
{
  if (s->hold != NULL)
    hold_body(s, p, n);
  else
    sess_body_out(s, p, n);
}

void sess_on_line(struct px_session *s, const char *p, size_t n)
{
  cli_capa_line(s, p, n);
}

void sess_on_end(struct px_session *s)
{
  struct px_cmdq_ent *e = px_cmdq_head(&s->q);

  if (s->hold != NULL) {
    hold_end(s);
    return;
  }
  if (e->id == PX_CMD_CAPA) {
    cli_capa_end(s);
  } else {
    char end[PX_DOT_END_MAX];
    if (sess_to_client(s, end, px_dot_encode_end(&s->enc, end)) < 0)
      return;
  }
  answer_complete(s);
}

void sess_on_answer_done(struct px_session *s)
{
  answer_complete(s);
  dispatch(s);
  sess_flush(s);
  sess_arm(s);
}

void sess_on_up_failed(struct px_session *s, const char *reason,
                       const char *client_msg)
{
  struct px_cmdq_ent *e = px_cmdq_head(&s->q);

  if (!sess_live(s))
    return;
  /* Each failed connect attempt was counted already. */
  if (strcmp(reason, "upstream_unavailable") != 0)
    PX_CTR_ADD(s->w->ctr.upstream_errors_total, 1);
  /* A client that has seen nothing of the pending answer gets -ERR
   * [SYS/TEMP]; one in the middle of a multi-line answer gets the
   * connection closed, never an invented terminator. */
  if ((e == NULL || !e->begun) && (s->inflight > 0 || s->ust < PX_UP_READY))
    sess_to_client_str(s, client_msg);
  sess_finish(s, reason);
}

/* ---- deadlines ---------------------------------------------------------- */

enum px_deadline {
  PX_DL_NONE = 0,
  PX_DL_CONNECT,
  PX_DL_LOGIN,
  PX_DL_IDLE,
  PX_DL_UPSTREAM,
  PX_DL_HANDSHAKE,
  PX_DL_UP_HANDSHAKE,
  PX_DL_KEEPALIVE,
  PX_DL_COUNT
};

static void earlier(uint64_t *dl, enum px_deadline *which, uint64_t t,
                    enum px_deadline w)
{
  if (t < *dl) {
    *dl = t;
    *which = w;
  }
}

static uint64_t next_deadline(const struct px_session *s,
                              enum px_deadline *which)
{
  uint64_t dl = s->t_cli + s->cl->idle_timeout_ms;

  *which = PX_DL_IDLE;
  /* Draining toward a close, only the client's progress counts. */
  if (s->st == PX_ST_CLOSING)
    return dl;
  if (s->ust >= PX_UP_RESOLVING && s->ust <= PX_UP_RETRY)
    earlier(&dl, which, s->t_conn + s->cu->connect_timeout_ms, PX_DL_CONNECT);
  if (s->ust == PX_UP_TLS)
    earlier(&dl, which, s->t_uphs + s->cu->connect_timeout_ms,
            PX_DL_UP_HANDSHAKE);
  if (s->st < PX_ST_TRANSACTION && s->cst != PX_CLI_GONE)
    earlier(&dl, which, s->t_start + s->cl->login_timeout_ms, PX_DL_LOGIN);
  /* The upstream owes an answer, and is neither held back by a slow
   * client nor waiting for the client's SASL line. */
  if (s->inflight > 0 && s->ust >= PX_UP_GREETING && !s->up.paused &&
      s->cst != PX_CLI_SASL_LINE)
    earlier(&dl, which, s->t_up + s->cu->timeout_ms, PX_DL_UPSTREAM);
  earlier(&dl, which, hold_keepalive_due(s), PX_DL_KEEPALIVE);
  if (s->cst == PX_CLI_HANDSHAKE)
    earlier(&dl, which, s->t_hs + s->cl->handshake_timeout_ms,
            PX_DL_HANDSHAKE);
  return dl;
}

static void timer_cb(uv_timer_t *t)
{
  struct px_session *s = t->data;
  enum px_deadline which;
  uint64_t now = sess_now(s);
  struct px_cmdq_ent *e;

  if (s->st == PX_ST_CLOSED)
    return;
  if (next_deadline(s, &which) > now) {
    sess_arm(s); /* activity moved the deadline on */
    return;
  }
  sess_ref(s);
  switch (which) {
  case PX_DL_CONNECT:
    up_connect_timeout(s);
    break;
  case PX_DL_HANDSHAKE:
    PX_CTR_ADD(s->w->ctr.tls_handshake_failures_total, 1);
    px_log(PX_LOG_INFO,
           "sid=%016" PRIx64 " ev=tls_failed client=%s "
           "err=\"handshake timed out\"",
           s->id, s->peer_str);
    sess_close(s, "handshake_timeout");
    break;
  case PX_DL_KEEPALIVE:
    hold_keepalive(s);
    break;
  case PX_DL_UP_HANDSHAKE:
    up_tls_failed(s, "handshake timed out");
    break;
  case PX_DL_UPSTREAM:
    px_log(PX_LOG_WARN, "sid=%016" PRIx64 " ev=upstream_timeout upstream=%s",
           s->id, s->up_str);
    sess_on_up_failed(s, "upstream_timeout",
                      "-ERR [SYS/TEMP] Upstream timed out, try again later\r\n");
    break;
  case PX_DL_LOGIN:
  case PX_DL_IDLE:
    if (s->st == PX_ST_CLOSING) {
      sess_close(s, "client_timeout");
      break;
    }
    e = px_cmdq_head(&s->q);
    if ((e == NULL || !e->begun) && s->inflight == 0)
      sess_to_client_str(s, "-ERR Disconnected for inactivity\r\n");
    sess_finish(s, which == PX_DL_LOGIN ? "login_timeout" : "idle_timeout");
    break;
  case PX_DL_NONE:
  case PX_DL_COUNT:
    break;
  }
  sess_arm(s);
  sess_unref(&s);
}

void sess_arm(struct px_session *s)
{
  enum px_deadline which;
  uint64_t dl, now;

  if (s->st == PX_ST_CLOSED)
    return;
  now = sess_now(s);
  dl = next_deadline(s, &which);
  uv_timer_start(&s->timer, timer_cb, dl > now ? dl - now : 0, 0);
}

/* ---- start -------------------------------------------------------------- */

int px_session_accept(struct px_worker *w, struct px_lrt *l,
                      uv_stream_t *server)
{
  struct px_session *s = calloc(1, sizeof *s);
  int len = sizeof s->peer;
  int rc;

  if (s == NULL)
    return UV_ENOMEM;
  s->refs = 1; /* alive */
  s->w = w;
  s->lrt = l;
  s->gen = px_runtime_gen(w->rt);
  s->cl = &s->gen->conf->listeners[l->idx];
  s->cu = s->cl->upstream;
  s->id = ((uint64_t)w->idx << 48) | ++w->next_sid;
  s->st = PX_ST_CONNECTING;
  s->cst = s->cl->tls == PX_TLS_IMPLICIT ? PX_CLI_HANDSHAKE : PX_CLI_COMMANDS;
  s->ust = PX_UP_IDLE;
  px_cmdq_init(&s->q, PX_MAX_PIPELINED);

  rc = px_conn_init(&s->cli, &w->loop, &px_client_ops, s, w->slab,
                    sizeof w->slab);
  if (rc < 0) {
    sess_unref(&s);
    return rc;
  }
  s->cli.in_max = PX_CLI_IN_MAX;
  s->cli.wipe_in = 1; /* commands carry passwords */
  rc = px_conn_accept(&s->cli, server);
  if (rc < 0) {
    /* Not yet listed or counted: just let the handle go. */
    s->st = PX_ST_CLOSED;
    px_conn_close(&s->cli);
    sess_unref(&s);
    return rc;
  }
  uv_tcp_getpeername(&s->cli.tcp, (struct sockaddr *)&s->peer, &len);
  format_addr((struct sockaddr *)&s->peer, s->peer_str, sizeof s->peer_str);

  uv_timer_init(&w->loop, &s->timer);
  s->timer.data = s;
  sess_ref(s);

  s->next = w->sessions;
  if (w->sessions != NULL)
    w->sessions->prev = s;
  w->sessions = s;
  w->nsessions++;
  PX_CTR_ADD(w->ctr.connections_total, 1);
  PX_CTR_ADD(w->ctr.connections_active, 1);
  s->t_start = s->t_cli = s->t_up = sess_now(s);

  if (px_lrt_acquire(l, s->cl, (const struct sockaddr *)&s->peer) < 0) {
    PX_CTR_ADD(w->ctr.connections_refused, 1);
    px_log(PX_LOG_WARN,
           "sid=%016" PRIx64 " ev=refused listener=%s "
           "client=%s reason=max_clients",
           s->id, s->cl->name, s->peer_str);
    /* On an implicit-TLS port a plaintext line would be noise to the
     * client's TLS stack: just close there. */
    if (s->cl->tls != PX_TLS_IMPLICIT)
      sess_to_client_str(
          s, "-ERR [SYS/TEMP] Too many connections, try again later\r\n");
    sess_finish(s, "max_clients");
    return 0;
  }
  s->counted = 1;
  px_log(PX_LOG_DEBUG, "sid=%016" PRIx64 " ev=connect listener=%s client=%s",
         s->id, s->cl->name, s->peer_str);

  if (px_cmdq_push(&s->q, PX_CQ_GREETING, NULL, 0) == NULL) {
    sess_close(s, "out_of_memory");
    return 0;
  }
  if (s->cst == PX_CLI_HANDSHAKE) {
    /* The upstream is connected once the handshake is done. */
    if (cli_start_tls(s) < 0)
      return 0;
  } else {
    up_connect(s);
  }
  if (px_conn_start(&s->cli) < 0)
    sess_close(s, "read_error");
  sess_arm(s);
  return 0;
}
