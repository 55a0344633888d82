/* session.c - one client, its upstream, and the POP3 dialogue between.
 *
 *   CONNECTING --greeting relayed--> AUTHORIZATION
 *   AUTHORIZATION --+OK to PASS, APOP or AUTH--> TRANSACTION
 *   any --QUIT answered, error, timeout, EOF--> CLOSING --refs 0--> freed
 *
 * The client's lines are parsed strictly (pop3.c) and queued in a FIFO
 * (cmdq.c) with the proxy's own replies in between. The head of the FIFO is
 * the only command the upstream is working on (window 1: the next command
 * goes upstream once the previous answer has been relayed), and it decides
 * how the upstream's bytes are framed. A command is forwarded as a line the
 * proxy rebuilt, never as the client's bytes.
 *
 * Lifetime: refs counts 1 "alive" + 1 per open handle + 1 per request in
 * flight (write, connect, getaddrinfo). px_session_close() drops "alive";
 * the struct is freed when the last callback has run.
 */
#include "session.h"

#include <arpa/inet.h>
#include <assert.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "cmdq.h"
#include "filter.h"
#include "spool.h"
#include "conn.h"
#include "dot.h"
#include "log.h"
#include "pop3.h"
#include "px.h"

enum px_state {
  PX_ST_CONNECTING = 0,
  PX_ST_AUTHORIZATION,
  PX_ST_TRANSACTION,
  PX_ST_CLOSING,
  PX_ST_COUNT
};
static const char *const px_state_names[] = { "connecting", "authorization",
                                              "transaction", "closing" };
_Static_assert(sizeof px_state_names / sizeof *px_state_names == PX_ST_COUNT,
               "px_state_names out of sync");

/* Commands read ahead of their answers. Past it the client is not read:
 * a client that pipelines without reading stalls itself, not the proxy. */
#define PX_MAX_PIPELINED 64
/* Commands sent upstream ahead of their answers, once the upstream has
 * announced PIPELINING (RFC 2449 6.6); 1 until then. Answers that have
 * arrived wait in the upstream's socket while the client is behind. */
#define PX_UP_WINDOW 32
/* Unparsed client bytes: one read, plus a pending line. */
#define PX_CIN_CAP       (PX_SLAB_SIZE + PX_SASL_MAX)
#define PX_USER_LOG_MAX  64
#define PX_PEER_TEXT_MAX 160

struct px_session {
  struct px_session *prev, *next;
  struct px_worker *w;
  struct px_lrt *lrt;
  const struct px_conf_listener *cl;
  const struct px_conf_upstream *cu;
  struct px_conf *conf;    /* the generation this session runs on */
  struct px_tls_ctxs *tls; /* and its TLS contexts */
  struct flt_set *flt;     /* and its filters */
  uint64_t id;
  int refs;
  enum px_state st;

  unsigned closing : 1;    /* px_session_close ran */
  unsigned draining : 1;   /* close once the client output is sent */
  unsigned counted : 1;    /* holds a px_lrt slot */
  unsigned connecting : 1; /* an upstream connect is under way */
  unsigned up_retry : 1;   /* try the next address once up closes */
  unsigned up_ready : 1;   /* the greeting has been relayed */
  unsigned fr_on : 1;      /* the framer is on the head's answer */
  unsigned pipelining : 1; /* the upstream announced PIPELINING */
  unsigned head_mid : 1;   /* part of the head's answer was relayed */
  unsigned sasl : 1;       /* an AUTH exchange is queued or running */
  unsigned sasl_wait : 1;  /* the next client line is SASL data */
  unsigned sasl_plain : 1; /* that exchange is PLAIN (user for log) */
  unsigned quit : 1;       /* QUIT queued: parse nothing after it */
  unsigned utf8 : 1;       /* RFC 6856 UTF8 accepted */
  unsigned up_paused : 1;  /* upstream reads stopped: client behind */
  unsigned stls : 1;       /* the client's STLS is queued or under way */
  unsigned capture : 1;    /* the head's body goes to the spool */
  unsigned holding : 1;    /* a held message is captured, scanned or sent:
                              the upstream is not read meanwhile */
  unsigned up_stls : 2;    /* upstream STLS: 1 sent, 2 answered +OK */

  struct px_conn cli, up;
  uv_timer_t timer;
  uv_connect_t creq;
  uv_getaddrinfo_t gai;
  struct addrinfo *ai, *ai_next;
  size_t server_idx;

  struct px_cmdq q;
  struct px_framer fr;
  struct px_dot_enc enc;
  char *cin; /* unparsed client bytes, while any */
  size_t cinlen;
  unsigned errors;
  unsigned inflight; /* answers the upstream owes us */

  uint64_t t_start, t_cli, t_up, t_conn;
  uint64_t t_hs, t_uphs; /* TLS handshakes began, client and upstream */
  const char *up_host;   /* the server being tried (conf memory) */
  char *greeting;        /* upstream STLS: the greeting, held until TLS */
  size_t greetinglen;
  struct px_hold *hold; /* the message held for the filters, if any */
  unsigned nverdicts;   /* messages that were not delivered as they were */
  struct sockaddr_storage peer;
  char peer_str[64];
  char up_str[64];
  char user[PX_USER_LOG_MAX * 4 + 4];
  unsigned ncmds, nmsgs;
  int auth_ok;
  const char *reason;
};

static void dispatch(struct px_session *s);
static void parse_client(struct px_session *s);
static void up_connect_next(struct px_session *s);
static int up_start_tls(struct px_session *s);
static int hold_emitting(const struct px_session *s);
static void hold_emit(struct px_session *s);
static void arm_timer(struct px_session *s);
static void session_close(struct px_session *s, const char *reason);

/* ---- references --------------------------------------------------------- */

static void session_free(struct px_session *s)
{
  struct px_conf *c = s->conf;

  assert(s->refs == 0);
  flt_set_unref(&s->flt);
  px_tls_ctxs_unref(&s->tls);
  px_conf_unref(&c);
  free(s);
}

static int cli_secure(const struct px_session *s)
{
  return s->cli.tls != NULL && px_tls_done(s->cli.tls);
}

/* The listener's own TLS contexts in this session's generation. */
static const struct px_tls_listener *listener_tls(const struct px_session *s)
{
  return &s->tls->listeners[s->lrt->idx];
}

static void session_ref(struct px_session *s)
{
  s->refs++;
}

static void session_unref(struct px_session **sp)
{
  struct px_session *s = *sp;

  *sp = NULL;
  if (--s->refs == 0)
    session_free(s);
}

static struct px_session *conn_session(struct px_conn *c)
{
  return c->owner;
}

static void conn_hold(struct px_conn *c)
{
  session_ref(conn_session(c));
}

static void conn_release(struct px_conn *c)
{
  struct px_session *s = conn_session(c);
  session_unref(&s);
}

static void timer_closed_cb(uv_handle_t *h)
{
  struct px_session *s = h->data;
  session_unref(&s);
}

struct px_session *px_session_next(const struct px_session *s)
{
  return s->next;
}

static uint64_t now_ms(const struct px_session *s)
{
  return uv_now(&s->w->loop);
}

static void enter_state(struct px_session *s, enum px_state st)
{
  if (s->st == st)
    return;
  if (px_log_enabled(PX_LOG_DEBUG))
    px_log(PX_LOG_DEBUG, "sid=%016" PRIx64 " ev=state from=%s to=%s", s->id,
           px_state_names[s->st], px_state_names[st]);
  s->st = st;
}

/* ---- output helpers ----------------------------------------------------- */

static void to_client(struct px_session *s, const void *p, size_t n)
{
  if (px_conn_write(&s->cli, p, n) < 0)
    session_close(s, "out_of_memory");
}

static void to_client_str(struct px_session *s, const char *str)
{
  to_client(s, str, strlen(str));
}

static void to_client_line(struct px_session *s, const char *p, size_t n)
{
  to_client(s, p, n);
  to_client_str(s, "\r\n");
}

static void flush(struct px_session *s)
{
  int rc;

  if (s->closing)
    return;
  rc = px_conn_flush(&s->cli);
  if (rc == 0)
    rc = px_conn_flush(&s->up);
  if (rc < 0)
    session_close(s, "write_error");
}

/* Stops or resumes reading the client: it is not read while the queue is
 * full, while an AUTH exchange waits for the upstream's challenge, after
 * QUIT, while the proxy drains toward a close, or while the upstream leg
 * has more than the high watermark queued. */
static void update_reading(struct px_session *s)
{
  int blocked;

  if (s->closing)
    return;
  blocked = s->draining || s->quit || px_cmdq_full(&s->q) ||
            (s->sasl && !s->sasl_wait) ||
            px_conn_pending(&s->up) > PX_HIGH_WATER;
  if (blocked)
    px_conn_read_stop(&s->cli);
  else if (px_conn_read_start(&s->cli) < 0)
    session_close(s, "read_error");
}

/* Ends the session after the client has been sent what is queued for it:
 * the upstream is closed now, without QUIT (RFC 1939 6: only a QUIT of the
 * client's may enter the UPDATE state). */
static void finish(struct px_session *s, const char *reason)
{
  if (s->closing || s->draining)
    return;
  s->draining = 1;
  s->reason = reason;
  enter_state(s, PX_ST_CLOSING);
  px_conn_close(&s->up);
  px_conn_tls_close(&s->cli);
  px_conn_read_stop(&s->cli);
  flush(s);
  if (!s->closing && px_conn_pending(&s->cli) == 0)
    session_close(s, reason);
}

/* The upstream failed (EOF, error, protocol violation, timeout). A client
 * that has seen nothing of the pending answer gets -ERR [SYS/TEMP]; one in
 * the middle of a multi-line answer gets the connection closed, never an
 * invented terminator. */
static void upstream_failed(struct px_session *s, const char *reason,
                            const char *client_msg)
{
  if (s->closing || s->draining)
    return;
  /* Each failed connect attempt was counted already. */
  if (strcmp(reason, "upstream_unavailable") != 0)
    PX_CTR_ADD(s->w->ctr.upstream_errors_total, 1);
  if (!s->head_mid && (s->inflight > 0 || s->connecting || !s->up_ready))
    to_client_str(s, client_msg);
  finish(s, reason);
}

/* The upstream's TLS failed (handshake, certificate, STLS refused or
 * tampered with): say why in the log; the client gets -ERR [SYS/TEMP]. */
static void up_tls_failed(struct px_session *s, const char *why)
{
  px_log(PX_LOG_WARN,
         "sid=%016" PRIx64 " ev=upstream_tls_failed upstream=%s err=\"%s\"",
         s->id, s->up_str, why);
  upstream_failed(s, "upstream_tls_failed",
                  "-ERR [SYS/TEMP] Upstream TLS failed, try again later\r\n");
}

static struct px_cmdq_ent *push_local(struct px_session *s, const char *reply,
                                      int close)
{
  /* Queued like a relayed command, so that answers stay in order. The
   * parser checked that the queue has room. */
  struct px_cmdq_ent *e =
      px_cmdq_push(&s->q, PX_CQ_LOCAL, reply, strlen(reply));
  if (e == NULL) {
    session_close(s, "out_of_memory");
    return NULL;
  }
  e->close_after = close;
  return e;
}

/* ---- the client side ---------------------------------------------------- */

/* Records the user name for the log from AUTH PLAIN's first response:
 * base64 of "authzid NUL authcid NUL password". The password is wiped. */
static void note_plain_user(struct px_session *s, const char *b64, size_t n)
{
  unsigned char dec[PX_SASL_MAX];
  int len;
  const unsigned char *authcid, *pass;

  if (n == 0 || n % 4 != 0 || n / 4 * 3 > sizeof dec)
    return;
  len = EVP_DecodeBlock(dec, (const unsigned char *)b64, (int)n);
  if (len < 0)
    return;
  while (len > 0 && n > 0 && b64[n - 1] == '=') {
    len--; /* EVP_DecodeBlock counts the padding */
    n--;
  }
  authcid = memchr(dec, '\0', (size_t)len);
  if (authcid != NULL) {
    authcid++;
    pass = memchr(authcid, '\0', (size_t)(dec + len - authcid));
    if (pass != NULL)
      px_log_sanitize((const char *)authcid, (size_t)(pass - authcid),
                      PX_USER_LOG_MAX, s->user, sizeof s->user);
  }
  OPENSSL_cleanse(dec, sizeof dec);
}

static void take_command(struct px_session *s, const char *line, size_t len)
{
  struct px_cmd c;
  struct px_cmdq_ent *e;
  char out[PX_CMD_MAX + 1];
  size_t n;
  int rc = px_pop3_parse_cmd(line, len, s->utf8, &c);

  if (rc < 0) {
    s->errors++;
    PX_CTR_ADD(s->w->ctr.commands_rejected, 1);
    if (s->errors >= s->cl->max_errors) {
      push_local(s, "-ERR Too many invalid commands, closing\r\n", 1);
      s->quit = 1;
    } else if (rc == PX_EBADCMD) {
      push_local(s, "-ERR Unknown command\r\n", 0);
    } else if (rc == PX_EBADCHAR) {
      push_local(s, "-ERR Invalid character in command\r\n", 0);
    } else {
      push_local(s, "-ERR Invalid arguments\r\n", 0);
    }
    return;
  }
  s->ncmds++;
  PX_CTR_ADD(s->w->ctr.commands_total[c.id], 1);

  if (s->cl->require_tls && !cli_secure(s) &&
      (c.id == PX_CMD_USER || c.id == PX_CMD_PASS || c.id == PX_CMD_APOP ||
       c.id == PX_CMD_AUTH)) {
    /* RFC 2595 2.3: no credentials in the clear where the operator says
     * so. Refused here, never forwarded; counted, so probing ends. */
    s->errors++;
    PX_CTR_ADD(s->w->ctr.commands_rejected, 1);
    push_local(s,
               s->errors >= s->cl->max_errors
                   ? "-ERR Too many invalid commands, closing\r\n"
                   : "-ERR Plaintext authentication disallowed, use STLS "
                     "first\r\n",
               s->errors >= s->cl->max_errors);
    if (s->errors >= s->cl->max_errors)
      s->quit = 1;
    return;
  }

  switch (c.id) {
  case PX_CMD_STLS:
    if (s->cl->tls != PX_TLS_STARTTLS) {
      push_local(s, "-ERR STLS is not offered on this listener\r\n", 0);
    } else if (s->cli.tls != NULL) {
      push_local(s, "-ERR Already in TLS\r\n", 0);
    } else if (s->auth_ok) {
      push_local(s, "-ERR STLS is only allowed before login\r\n", 0);
    } else {
      /* The reply is sent in order; TLS starts right after it. Nothing
       * more is parsed: a byte after "STLS\r\n" ends the session. */
      struct px_cmdq_ent *ok =
          push_local(s, "+OK Begin TLS negotiation\r\n", 0);
      if (ok != NULL)
        ok->start_tls = 1;
      s->stls = 1;
    }
    return;
  case PX_CMD_USER:
  case PX_CMD_APOP:
    px_log_sanitize(c.arg[0], c.arglen[0], PX_USER_LOG_MAX, s->user,
                    sizeof s->user);
    break;
  case PX_CMD_AUTH:
    if (c.nargs == 0)
      break; /* the mechanism list: multi-line */
    s->sasl = 1;
    s->sasl_plain = c.arglen[0] == 5 && strncasecmp(c.arg[0], "PLAIN", 5) == 0;
    if (s->sasl_plain && c.nargs == 2) {
      note_plain_user(s, c.arg[1], c.arglen[1]);
      s->sasl_plain = 0;
    }
    break;
  case PX_CMD_QUIT:
    s->quit = 1;
    break;
  default:
    break;
  }

  n = px_pop3_format_cmd(&c, out, sizeof out);
  assert(n > 0);
  e = px_cmdq_push(&s->q, PX_CQ_RELAY, out, n);
  OPENSSL_cleanse(out, sizeof out);
  if (e == NULL) {
    session_close(s, "out_of_memory");
    return;
  }
  e->id = c.id;
  e->shape = px_pop3_shape(&c);
}

/* Forwards one SASL line of the client's, as it stands: it was checked to
 * be base64 or "*"; anything else cancels the exchange. */
static void take_sasl_line(struct px_session *s, const char *line, size_t len)
{
  int rc;

  if (px_pop3_sasl_check(line, len) != 0) {
    rc = px_conn_write(&s->up, "*\r\n", 3);
  } else {
    if (s->sasl_plain) {
      note_plain_user(s, line, len);
      s->sasl_plain = 0;
    }
    rc = px_conn_write(&s->up, line, len + 2);
  }
  if (rc < 0) {
    session_close(s, "out_of_memory");
    return;
  }
  s->sasl_wait = 0;
  s->t_up = now_ms(s);
}

/* Takes the client's lines from buf as far as the queue and the dialogue
 * allow, and returns the bytes taken. */
static size_t parse_lines(struct px_session *s, const char *buf, size_t buflen)
{
  size_t off = 0, len;
  int rc;

  while (off < buflen && !s->closing && !s->draining) {
    const char *p = buf + off;
    size_t n = buflen - off;

    if (s->sasl_wait) {
      rc = px_pop3_line(p, n, PX_SASL_MAX, &len);
      if (rc == 0)
        break;
      if (rc < 0) {
        PX_CTR_ADD(s->w->ctr.commands_rejected, 1);
        to_client_str(s, "-ERR Line too long, closing\r\n");
        finish(s, "line_too_long");
        break;
      }
      take_sasl_line(s, p, len);
      off += len + 2;
      continue;
    }
    if (s->quit || s->sasl || s->stls || px_cmdq_full(&s->q))
      break;
    rc = px_pop3_line(p, n, PX_CMD_MAX, &len);
    if (rc == 0)
      break;
    if (rc < 0) {
      PX_CTR_ADD(s->w->ctr.commands_rejected, 1);
      push_local(s, "-ERR Command line too long, closing\r\n", 1);
      s->quit = 1;
      off = buflen;
      break;
    }
    take_command(s, p, len);
    off += len + 2;
    if (s->stls && off < buflen) {
      /* STARTTLS command injection (CVE-2011-0411 class): bytes sent in
       * the clear behind STLS must never be read as if inside TLS. */
      px_log(PX_LOG_WARN,
             "sid=%016" PRIx64 " ev=stls_injection client=%s "
             "bytes=%zu",
             s->id, s->peer_str, buflen - off);
      session_close(s, "stls_injection");
      return buflen;
    }
  }
  return off;
}

static void drop_cin(struct px_session *s)
{
  if (s->cin == NULL)
    return;
  OPENSSL_cleanse(s->cin, s->cinlen);
  free(s->cin);
  s->cin = NULL;
  s->cinlen = 0;
}

/* Parses what is left of the client's input, when the dialogue has moved
 * on (an answer completed, a SASL challenge came). */
static void parse_client(struct px_session *s)
{
  size_t off;

  if (s->cin == NULL)
    return;
  off = parse_lines(s, s->cin, s->cinlen);
  if (off >= s->cinlen || s->closing) {
    drop_cin(s);
  } else if (off > 0) {
    memmove(s->cin, s->cin + off, s->cinlen - off);
    s->cinlen -= off;
  }
}

static void client_read(struct px_conn *c, const char *p, ssize_t n)
{
  struct px_session *s = conn_session(c);

  if (s->closing)
    return;
  if (n == PX_ETLS) {
    PX_CTR_ADD(s->w->ctr.tls_handshake_failures_total,
               px_tls_done(c->tls) ? 0 : 1);
    px_log(PX_LOG_INFO, "sid=%016" PRIx64 " ev=tls_failed client=%s err=\"%s\"",
           s->id, s->peer_str, px_tls_error(c->tls));
    session_close(s, "tls_failed");
    return;
  }
  if (n < 0) {
    session_close(s, n == UV_EOF ? "client_eof" : "client_error");
    return;
  }
  s->t_cli = now_ms(s);
  PX_CTR_ADD(s->w->ctr.bytes_client_in, (uint64_t)n);
  if (s->draining)
    return;
  session_ref(s);
  if (s->cin == NULL) {
    /* The usual case: whole commands, parsed where they landed. Only a
     * remainder is kept, in a buffer that exists only while it does. */
    size_t off = parse_lines(s, p, (size_t)n);
    if (off < (size_t)n && !s->closing && !s->draining) {
      s->cin = malloc(PX_CIN_CAP);
      if (s->cin == NULL) {
        session_close(s, "out_of_memory");
      } else {
        s->cinlen = (size_t)n - off;
        memcpy(s->cin, p + off, s->cinlen);
      }
    }
  } else if ((size_t)n > PX_CIN_CAP - s->cinlen) {
    /* Reading stops whenever the parser cannot take more, so only a
     * client that ignores the protocol gets here. */
    to_client_str(s, "-ERR Too much input, closing\r\n");
    finish(s, "input_overflow");
  } else {
    memcpy(s->cin + s->cinlen, p, (size_t)n);
    s->cinlen += (size_t)n;
    parse_client(s);
  }
  dispatch(s);
  flush(s);
  update_reading(s);
  session_unref(&s);
}

static void client_written(struct px_conn *c, int status)
{
  struct px_session *s = conn_session(c);

  if (s->closing)
    return;
  if (status < 0) {
    session_close(s, "client_error");
    return;
  }
  PX_CTR_ADD(s->w->ctr.bytes_client_out, c->wdone);
  s->t_cli = now_ms(s);
  if (s->draining && px_conn_pending(&s->cli) == 0) {
    session_close(s, s->reason);
    return;
  }
  flush(s);
  if (hold_emitting(s) && px_conn_pending(&s->cli) < PX_LOW_WATER) {
    hold_emit(s);
    return;
  }
  if (s->up_paused && px_conn_pending(&s->cli) < PX_LOW_WATER && !s->draining &&
      !s->holding) {
    s->up_paused = 0;
    if (px_conn_read_start(&s->up) < 0)
      upstream_failed(s, "upstream_error",
                      "-ERR [SYS/TEMP] Upstream failed, try again later\r\n");
    arm_timer(s);
  }
}

static void client_closed(struct px_conn *c)
{
  (void)c;
}

static void up_connect_next(struct px_session *s);

/* The client's handshake is done: after STLS the dialogue goes on inside
 * TLS; on an implicit listener the upstream is only now connected, so no
 * upstream connection is spent on scanners and failed handshakes. */
static void client_tls_ready(struct px_conn *c)
{
  struct px_session *s = conn_session(c);

  PX_CTR_ADD(s->w->ctr.tls_handshakes_total, 1);
  if (px_log_enabled(PX_LOG_DEBUG))
    px_log(PX_LOG_DEBUG,
           "sid=%016" PRIx64 " ev=tls_ready side=client "
           "tls=%s cipher=%s sni=%s",
           s->id, px_tls_version(c->tls), px_tls_cipher(c->tls),
           px_tls_sni(c->tls));
  if (s->stls) {
    s->stls = 0;
    update_reading(s);
  } else if (s->cl->tls == PX_TLS_IMPLICIT) {
    up_connect_next(s);
  }
  arm_timer(s);
}

static const struct px_conn_ops client_ops = { client_read,   client_written,
                                               client_closed, client_tls_ready,
                                               conn_hold,     conn_release };

/* ---- the upstream side -------------------------------------------------- */

/* Starts TLS on the client leg, right after "+OK Begin TLS negotiation" (or
 * at accept on an implicit listener). Returns 0, or a negative code after
 * closing the session. */
static int cli_start_tls(struct px_session *s)
{
  struct px_tls *t;
  int rc;

  if (s->cinlen > 0) {
    /* Sent after STLS, before the +OK: as injected as the rest. */
    px_log(PX_LOG_WARN,
           "sid=%016" PRIx64 " ev=stls_injection client=%s "
           "bytes=%zu",
           s->id, s->peer_str, s->cinlen);
    session_close(s, "stls_injection");
    return PX_EPROTO;
  }
  t = px_tls_new_server(listener_tls(s));
  if (t == NULL) {
    session_close(s, "out_of_memory");
    return UV_ENOMEM;
  }
  rc = px_conn_start_tls(&s->cli, t);
  if (rc < 0) {
    session_close(s, "tls_failed");
    return rc;
  }
  s->t_hs = now_ms(s);
  arm_timer(s);
  return 0;
}

/* Moves the queue on: local replies at the head go to the client, the
 * framer is pointed at the head's answer once its command has gone
 * upstream, and queued commands go upstream while the window allows (the
 * greeting first). Called whenever the head may have changed. */
static void dispatch(struct px_session *s)
{
  struct px_cmdq_ent *e;
  /* A held message stops upstream reads: with filters, one answer at a
   * time, so nothing can arrive behind it. */
  unsigned window = s->pipelining && s->cl->nfilters == 0 ? PX_UP_WINDOW : 1;

  while (!s->closing && !s->draining && (e = px_cmdq_head(&s->q)) != NULL &&
         e->kind == PX_CQ_LOCAL) {
    int close_after = e->close_after, start_tls = e->start_tls;
    to_client(s, e->line, e->len);
    px_cmdq_pop(&s->q);
    if (close_after) {
      finish(s, "client_errors");
      return;
    }
    if (start_tls && cli_start_tls(s) < 0)
      return;
  }
  if (s->closing || s->draining || e == NULL)
    return;
  if (e->sent && !s->fr_on) {
    px_framer_start(&s->fr, e->shape,
                    e->kind == PX_CQ_RELAY && e->id == PX_CMD_CAPA,
                    s->cu->max_response_line);
    s->fr_on = 1;
  }
  if (!s->up_ready)
    return;
  for (; e != NULL && s->inflight < window; e = e->next) {
    if (e->kind != PX_CQ_RELAY || e->sent)
      continue;
    if (px_conn_write(&s->up, e->line, e->len) < 0) {
      session_close(s, "out_of_memory");
      return;
    }
    e->sent = 1;
    if (s->inflight++ == 0) {
      s->t_up = now_ms(s);
      arm_timer(s);
    }
    if (e == px_cmdq_head(&s->q)) {
      px_framer_start(&s->fr, e->shape, e->id == PX_CMD_CAPA,
                      s->cu->max_response_line);
      s->fr_on = 1;
    }
  }
}

static void complete_head(struct px_session *s)
{
  struct px_cmdq_ent *e = px_cmdq_head(&s->q);

  if (e->kind == PX_CQ_RELAY && e->shape == PX_SHAPE_SASL) {
    s->sasl = 0;
    s->sasl_wait = 0;
    s->sasl_plain = 0;
  }
  px_framer_reset(&s->fr);
  s->fr_on = 0;
  s->inflight--;
  px_cmdq_pop(&s->q);
  s->head_mid = 0;
  parse_client(s);
}

/* CAPA is rebuilt from the upstream's list: only what the proxy can frame
 * and relay faithfully is offered. The upstream's STLS is dropped (STLS is
 * the listener's to offer, added at the end); XCLIENT would let clients
 * choose their logged address; IMPLEMENTATION names the server behind. */
static void capa_line(struct px_session *s, const char *p, size_t n)
{
  static const char *const keep[] = { "TOP",         "UIDL",
                                      "USER",        "RESP-CODES",
                                      "PIPELINING",  "AUTH-RESP-CODE",
                                      "LOGIN-DELAY", "EXPIRE",
                                      "UTF8",        "LANG" };
  size_t len = n - 2, kw, o;
  char *out = s->w->scratch; /* free: line mode leaves it unused */
  /* Before TLS on a listener that requires it, no way of sending a
   * password is advertised (RFC 2595 2.3; what Dovecot does too). */
  int hide_auth = s->cl->require_tls && !cli_secure(s);

  for (kw = 0; kw < len && p[kw] != ' '; kw++)
    ;
  if (hide_auth && ((kw == 4 && strncasecmp(p, "USER", 4) == 0) ||
                    (kw == 4 && strncasecmp(p, "SASL", 4) == 0)))
    return;
  for (size_t i = 0; i < PX_ARRAY_LEN(keep); i++)
    if (strlen(keep[i]) == kw && strncasecmp(p, keep[i], kw) == 0) {
      if (kw == 10 && strncasecmp(p, "PIPELINING", 10) == 0)
        s->pipelining = 1;
      to_client(s, p, n);
      return;
    }
  if (!(kw == 4 && strncasecmp(p, "SASL", 4) == 0))
    return;

  /* SASL: drop EXTERNAL and channel-binding mechanisms (AUTH refuses
   * them too). The line fits: it only gets shorter. */
  memcpy(out, "SASL", 4);
  o = 4;
  for (size_t i = kw; i < len;) {
    size_t j;
    while (i < len && p[i] == ' ')
      i++;
    for (j = i; j < len && p[j] != ' '; j++)
      ;
    if (j > i && px_pop3_sasl_mech_ok(p + i, j - i)) {
      out[o++] = ' ';
      memcpy(out + o, p + i, j - i);
      o += j - i;
    }
    i = j;
  }
  if (o > 4) {
    out[o++] = '\r';
    out[o++] = '\n';
    to_client(s, out, o);
  }
}

static void body_bytes(struct px_session *s, const char *p, size_t n)
{
  while (n > 0 && !s->closing) {
    size_t avail, outn, used;
    char *dst = px_buf_reserve(&s->cli.out, 2, &avail);
    if (dst == NULL) {
      session_close(s, "out_of_memory");
      return;
    }
    used = px_dot_encode(&s->enc, p, n, dst, avail, &outn);
    px_buf_commit(&s->cli.out, outn);
    p += used;
    n -= used;
  }
}

/* ---- held messages: the filter chain ------------------------------------
 *
 * On a listener with filters, the +OK of RETR or TOP is held, the body is
 * un-stuffed into a spool (memory, then an unlinked file), and at its end
 * the listener's chain runs in libuv's pool. Meanwhile the upstream is not
 * read and the client sees nothing: a failure can still become a clean
 * -ERR. The verdict decides what is sent; the held copy is freed on every
 * path (delivered, refused, client or upstream gone).
 */

_Static_assert((int)FLT_DID_COUNT == (int)PX_FV_COUNT &&
                   (int)FLT_DID_TEMPFAIL == (int)PX_FV_TEMPFAIL &&
                   (int)FLT_DID_UNSCANNED == (int)PX_FV_UNSCANNED,
               "enum flt_did follows enum px_fverdict");
const char *const px_fverdict_names[] = { "clean",   "modified", "replace",
                                          "tag",     "reject",   "unscanned",
                                          "tempfail" };
_Static_assert(sizeof px_fverdict_names / sizeof *px_fverdict_names ==
                   PX_FV_COUNT,
               "px_fverdict_names out of sync");
const double px_fsec_bounds[PX_FSEC_BUCKETS] = { 0.01, 0.05, 0.1, 0.25, 0.5,
                                                 1,    2.5,  5,   10,   30 };

/* While the chain runs longer than this, the client gets the +OK and then,
 * at the same interval, a header line of popgate's own
 * ("X-Popgate-Wait: checking"): never a byte of the message before its
 * verdict, but enough to keep a client's read timeout (typically 60 s or
 * more) from firing. A tempfail or reject after that cannot be an -ERR any
 * more: the connection is closed without the terminating ".", so the
 * client retries and the message stays on the server. */
#define PX_KEEPALIVE_MS 20000

/* Encoded output produced per emission step: the client leg's watermark
 * bounds what is queued, this bounds one step. */
#define PX_EMIT_CHUNK (64 * 1024)

enum px_hold_st {
  PX_HOLD_CAPTURE = 0, /* the body is coming in */
  PX_HOLD_WAIT,        /* complete, waiting for a pool slot */
  PX_HOLD_SCAN,        /* the chain runs in the pool */
  PX_HOLD_EMIT,        /* the verdict is going out to the client */
  PX_HOLD_COUNT
};

struct px_hold {
  struct px_hold *next; /* the worker's wait queue */
  uv_work_t req;
  struct px_session *s;
  enum px_hold_st st;
  char *status; /* the upstream's +OK line, without CRLF */
  size_t statuslen;
  char msgno[16];
  struct px_spool spool;
  int too_big;         /* over max_message_size: not scanned */
  char unscanned[128]; /* why the chain was not run, when it was not */
  struct flt_msg msg;  /* the pool's view of the spool */
  struct flt_outcome out;
  double seconds;   /* the chain's run time */
  uint64_t t_ready; /* uv_now() when the body was complete */
  unsigned waits;   /* keep-alive lines sent while the chain ran */
  int phase;        /* emission: 0 status, 1 headers, 2 body, 3 end, 4 done */
  uint64_t off;
};

static int chain_all_pass(const struct px_session *s)
{
  for (size_t i = 0; i < s->cl->nfilters; i++)
    if (s->cl->filters[i]->on_error != PX_ONE_PASS)
      return 0;
  return 1;
}

static void hold_free(struct px_hold **hp)
{
  struct px_hold *h = *hp;

  *hp = NULL;
  if (h == NULL)
    return;
  px_spool_free(&h->spool);
  flt_outcome_free(&h->out);
  free(h->status);
  free(h);
}

/* The +OK of RETR or TOP arrived on a filtered listener: hold it. */
static void hold_start(struct px_session *s, const struct px_fr_out *o,
                       const struct px_cmdq_ent *e)
{
  struct px_hold *h = calloc(1, sizeof *h);
  const char *sp;

  if (h == NULL || (h->status = malloc(o->n ? o->n : 1)) == NULL) {
    free(h);
    session_close(s, "out_of_memory");
    return;
  }
  memcpy(h->status, o->p, o->n);
  h->statuslen = o->n;
  /* "RETR 12\r\n" or "TOP 12 0\r\n": the message number, for the log. */
  sp = memchr(e->line, ' ', e->len);
  if (sp != NULL) {
    size_t k = 0;
    for (sp++; sp < e->line + e->len && *sp >= '0' && *sp <= '9' &&
               k + 1 < sizeof h->msgno;
         sp++)
      h->msgno[k++] = *sp;
  }
  px_spool_init(&h->spool);
  h->s = s;
  s->hold = h;
  s->capture = 1;
  s->holding = 1;
}

/* Un-stuffed body bytes of the held message. */
static void hold_append(struct px_session *s, const char *p, size_t n)
{
  struct px_hold *h = s->hold;
  int rc;

  if (h->spool.err < 0 || (h->too_big && !chain_all_pass(s)))
    return; /* decided already: what follows is not kept */
  if (!h->too_big && h->spool.size + n > s->conf->max_message_size) {
    /* on_error = pass everywhere: deliver it unexamined, so keep it whole
     * (on disk). Otherwise nothing more is kept: it will be -ERR. */
    h->too_big = 1;
    snprintf(h->unscanned, sizeof h->unscanned,
             "message larger than max_message_size");
    if (!chain_all_pass(s) || h->spool.mem_only) {
      /* Nothing more is kept: it will be -ERR. Memory never holds more
       * than max_message_size of a message, even for on_error = pass. */
      px_spool_free(&h->spool);
      h->spool.err = -EFBIG;
      return;
    }
  }
  rc = px_spool_append(&h->spool, s->conf, p, n);
  if (rc < 0 && h->spool.fd < 0 && !h->spool.mem_only && chain_all_pass(s) &&
      !h->too_big) {
    /* The spool file cannot be made. With on_error = pass the message is
     * delivered unscanned, held in memory up to max_message_size. */
    snprintf(h->unscanned, sizeof h->unscanned, "spool_dir: %s", strerror(-rc));
    h->spool.err = 0;
    h->spool.mem_only = 1;
    rc = px_spool_append(&h->spool, s->conf, p, n);
  }
  if (rc < 0)
    px_log(PX_LOG_WARN, "sid=%016" PRIx64 " ev=spool_failed err=\"%s\"", s->id,
           strerror(-rc));
}

static int hold_emitting(const struct px_session *s)
{
  return s->hold != NULL && s->hold->st == PX_HOLD_EMIT;
}

/* The outcome is known: count it, log it, then send it. */
static void hold_verdict(struct px_session *s)
{
  struct px_hold *h = s->hold;
  struct flt_outcome *o = &h->out;
  enum px_fverdict v;

  switch (o->v) {
  case FLT_REJECT:
    v = PX_FV_REJECT;
    break;
  case FLT_TEMPFAIL:
    v = PX_FV_TEMPFAIL;
    break;
  case FLT_REPLACE:
    v = o->virus[0] ? PX_FV_REPLACE : PX_FV_MODIFIED;
    break;
  default:
    if (o->virus[0])
      v = PX_FV_TAG;
    else if (h->unscanned[0] || strncmp(o->reason, "unscanned", 9) == 0)
      v = PX_FV_UNSCANNED;
    else if (o->hdrs != NULL)
      v = PX_FV_MODIFIED;
    else
      v = PX_FV_CLEAN;
    break;
  }
  /* Per filter, what it did; a message the chain never saw (too big, spool
   * failure) counts for every filter of the listener. */
  if (o->ndid > 0) {
    for (size_t i = 0; i < o->ndid && i < s->cl->nfilters; i++)
      px_fstat_add(&s->w->ctr, s->cl->filters[i]->name,
                   (enum px_fverdict)o->did[i]);
  } else {
    for (size_t i = 0; i < s->cl->nfilters; i++)
      px_fstat_add(&s->w->ctr, s->cl->filters[i]->name, v);
  }
  if (v != PX_FV_CLEAN && v != PX_FV_MODIFIED) {
    s->nverdicts++;
    px_log(PX_LOG_WARN,
           "sid=%016" PRIx64 " ev=verdict filter=%s verdict=%s virus=%s "
           "quarantine=%s msg=%s size=%" PRIu64 " reason=\"%s\"",
           s->id, o->filter[0] ? o->filter : "-", px_fverdict_names[v],
           o->virus[0] ? o->virus : "-",
           o->quarantine_id[0] ? o->quarantine_id : "-",
           h->msgno[0] ? h->msgno : "-", h->spool.size,
           h->unscanned[0] ? h->unscanned : o->reason);
  }
  h->st = PX_HOLD_EMIT;
  h->off = 0;
  if (h->waits > 0) {
    if (o->v == FLT_REJECT || o->v == FLT_TEMPFAIL) {
      /* The +OK went out already: end without the "." instead of -ERR. */
      finish(s,
             o->v == FLT_REJECT ? "refused_after_wait" : "tempfail_after_wait");
      return;
    }
    h->phase = 1; /* the +OK and the wait lines are out */
  } else {
    h->phase = 0;
  }
  hold_emit(s);
}

/* The chain is still running after PX_KEEPALIVE_MS: the +OK first, then a
 * wait line every interval. Called from the session timer. */
static void hold_keepalive(struct px_session *s)
{
  struct px_hold *h = s->hold;

  if (h->waits == 0) {
    px_dot_enc_init(&s->enc);
    to_client_line(s, h->status, h->statuslen);
  }
  body_bytes(s, "X-Popgate-Wait: checking\r\n", 26);
  h->waits++;
  s->head_mid = 1; /* the answer has begun: failures now close */
  flush(s);
}

/* When the next keep-alive line is due, or UINT64_MAX. */
static uint64_t hold_keepalive_due(const struct px_session *s)
{
  const struct px_hold *h = s->hold;

  if (h == NULL || (h->st != PX_HOLD_WAIT && h->st != PX_HOLD_SCAN))
    return UINT64_MAX;
  return h->t_ready + (uint64_t)(h->waits + 1) * PX_KEEPALIVE_MS;
}

/* Sends the verdict, a slice at a time while the client keeps up; called
 * again from the client's write callback. At the end the head's answer is
 * complete and the upstream is read again. */
static void hold_emit(struct px_session *s)
{
  struct px_hold *h = s->hold;
  struct flt_outcome *o = &h->out;
  char line[256];
  char *chunk = s->w->scratch;

  while (!s->closing && h->phase < 4 &&
         px_conn_pending(&s->cli) < PX_HIGH_WATER) {
    switch (h->phase) {
    case 0:
      if (o->v == FLT_REJECT || o->v == FLT_TEMPFAIL) {
        if (o->v == FLT_REJECT)
          snprintf(line, sizeof line,
                   "-ERR [SYS/PERM] Message refused: %.100s\r\n", o->reason);
        else
          snprintf(line, sizeof line,
                   "-ERR [SYS/TEMP] Message could not be checked, try "
                   "again later\r\n");
        to_client_str(s, line);
        h->phase = 4;
        break;
      }
      px_dot_enc_init(&s->enc);
      if (o->hdrs == NULL && o->repl == NULL) {
        to_client_line(s, h->status, h->statuslen); /* as the upstream said */
      } else {
        uint64_t size =
            o->hdrslen + (o->repl != NULL ? o->repllen : h->spool.size);
        snprintf(line, sizeof line, "+OK %" PRIu64 " octets\r\n", size);
        to_client_str(s, line);
      }
      h->phase = 1;
      break;
    case 1:
      if (o->hdrs != NULL)
        body_bytes(s, o->hdrs, o->hdrslen);
      h->phase = 2;
      break;
    case 2: {
      ssize_t n;
      if (o->repl != NULL) {
        size_t left = o->repllen - (size_t)h->off;
        n = (ssize_t)(left < PX_EMIT_CHUNK ? left : PX_EMIT_CHUNK);
        memcpy(chunk, o->repl + h->off, (size_t)n);
      } else {
        n = px_spool_read(&h->spool, h->off, chunk, PX_EMIT_CHUNK);
      }
      if (n < 0) {
        /* The held copy cannot be read back: the answer cannot be
         * finished, and no invented end goes out. */
        px_log(PX_LOG_ERROR, "sid=%016" PRIx64 " ev=spool_failed err=\"%s\"",
               s->id, strerror((int)-n));
        finish(s, "spool_error");
        return;
      }
      if (n == 0) {
        h->phase = 3;
        break;
      }
      body_bytes(s, chunk, (size_t)n);
      h->off += (uint64_t)n;
      break;
    }
    case 3: {
      char end[PX_DOT_END_MAX];
      to_client(s, end, px_dot_encode_end(&s->enc, end));
      h->phase = 4;
      break;
    }
    }
  }
  flush(s);
  if (s->closing || h->phase < 4)
    return;
  hold_free(&s->hold);
  s->holding = 0;
  complete_head(s);
  if (!s->closing && !s->draining && px_conn_read_start(&s->up) < 0)
    upstream_failed(s, "upstream_error",
                    "-ERR [SYS/TEMP] Upstream failed, try again later\r\n");
  dispatch(s);
  flush(s);
  update_reading(s);
  arm_timer(s);
}

static void scan_work_cb(uv_work_t *req)
{
  struct px_hold *h = req->data;
  uint64_t t0 = uv_hrtime();

  flt_chain_run(h->s->flt, h->s->cl, &h->msg, h->s->id, &h->out);
  h->seconds = (double)(uv_hrtime() - t0) / 1e9;
}

static void scan_next(struct px_worker *w);

static void scan_after_cb(uv_work_t *req, int status)
{
  struct px_hold *h = req->data;
  struct px_session *s = h->s;
  struct px_worker *w = s->w;
  size_t b = 0;

  w->scans_running--;
  scan_next(w);
  while (b < PX_FSEC_BUCKETS && h->seconds > px_fsec_bounds[b])
    b++;
  PX_CTR_ADD(w->ctr.filter_seconds[b], 1);
  PX_CTR_ADD(w->ctr.filter_seconds_sum_us, (uint64_t)(h->seconds * 1e6));
  if (s->closing || status < 0) {
    /* The client or the upstream went away meanwhile: nothing to send. */
    if (s->hold == h)
      s->hold = NULL;
    hold_free(&h);
  } else {
    hold_verdict(s);
  }
  session_unref(&s);
}

static void scan_submit(struct px_hold *h)
{
  struct px_session *s = h->s;
  int rc;

  h->st = PX_HOLD_SCAN;
  h->req.data = h;
  session_ref(s); /* the job's */
  s->w->scans_running++;
  rc = uv_queue_work(&s->w->loop, &h->req, scan_work_cb, scan_after_cb);
  if (rc < 0) {
    s->w->scans_running--;
    snprintf(h->out.reason, sizeof h->out.reason, "cannot queue the scan: %s",
             uv_strerror(rc));
    h->out.v = FLT_TEMPFAIL;
    hold_verdict(s);
    session_unref(&s);
  }
}

/* Starts waiting scans while this worker is under its share of
 * scan_threads, so that blocking filters never take every pool thread
 * (file and DNS work still finds one). */
static void scan_next(struct px_worker *w)
{
  while (w->scan_head != NULL && w->scans_running < w->scan_quota) {
    struct px_hold *h = w->scan_head;
    w->scan_head = h->next;
    if (w->scan_head == NULL)
      w->scan_tail = NULL;
    h->next = NULL;
    scan_submit(h);
  }
}

/* The body is complete: decide without filters, or queue the chain. */
static void hold_end(struct px_session *s)
{
  struct px_hold *h = s->hold;
  struct px_worker *w = s->w;
  static const char empty[1] = "";

  s->capture = 0;
  px_conn_read_stop(&s->up); /* nothing more is due (window 1) */
  if (h->spool.err < 0 || (h->too_big && !chain_all_pass(s))) {
    h->out.v = FLT_TEMPFAIL;
    snprintf(h->out.reason, sizeof h->out.reason, "%s",
             h->too_big ? "message larger than max_message_size"
                        : "the spool failed");
    hold_verdict(s);
    return;
  }
  if (h->unscanned[0]) {
    /* on_error = pass everywhere, and the chain cannot look: tag it. */
    int n =
        snprintf(NULL, 0, "X-Virus-Status: unscanned; %s\r\n", h->unscanned);
    h->out.v = FLT_PASS;
    h->out.hdrs = malloc((size_t)n + 1);
    if (h->out.hdrs == NULL) {
      session_close(s, "out_of_memory");
      return;
    }
    snprintf(h->out.hdrs, (size_t)n + 1, "X-Virus-Status: unscanned; %s\r\n",
             h->unscanned);
    h->out.hdrslen = (size_t)n;
    hold_verdict(s);
    return;
  }
  h->msg.fd = h->spool.fd;
  h->msg.size = h->spool.size;
  if (h->spool.fd < 0) {
    /* An empty message is still a message. */
    h->msg.mem = h->spool.mem != NULL ? h->spool.mem : empty;
    h->msg.len = h->spool.len;
  } else {
    lseek(h->spool.fd, 0, SEEK_SET);
  }
  h->st = PX_HOLD_WAIT;
  h->t_ready = now_ms(s);
  arm_timer(s);
  if (w->scan_tail != NULL)
    w->scan_tail->next = h;
  else
    w->scan_head = h;
  w->scan_tail = h;
  scan_next(w);
}

/* Session end with a held message: one still waiting for a slot leaves
 * the queue; one in the pool is let go by its callback. */
static void hold_drop(struct px_session *s)
{
  struct px_hold *h = s->hold, **pp, *prev = NULL;

  if (h == NULL || h->st == PX_HOLD_SCAN)
    return; /* none, or scan_after_cb frees it */
  for (pp = &s->w->scan_head; *pp != NULL; prev = *pp, pp = &(*pp)->next)
    if (*pp == h) {
      *pp = h->next;
      if (s->w->scan_tail == h)
        s->w->scan_tail = prev;
      break;
    }
  s->hold = NULL;
  hold_free(&h);
}

static void on_status(struct px_session *s, const struct px_fr_out *o)
{
  struct px_cmdq_ent *e = px_cmdq_head(&s->q);
  enum px_cmd_id id = e->id;

  if (e->kind == PX_CQ_GREETING && s->cu->tls == PX_TLS_STARTTLS) {
    /* STLS goes right after the greeting whatever CAPA says: there is no
     * opportunistic mode. The greeting waits until TLS is up, so that a
     * failure can still be a clean -ERR to the client. */
    if (s->up_stls == 0) {
      if (!o->ok) {
        upstream_failed(s, "upstream_refused",
                        "-ERR [SYS/TEMP] Upstream refused the connection\r\n");
        return;
      }
      s->greeting = malloc(o->n);
      if (s->greeting == NULL) {
        session_close(s, "out_of_memory");
        return;
      }
      memcpy(s->greeting, o->p, o->n);
      s->greetinglen = o->n;
      if (px_conn_write(&s->up, "STLS\r\n", 6) < 0) {
        session_close(s, "out_of_memory");
        return;
      }
      px_framer_reset(&s->fr);
      px_framer_start(&s->fr, PX_SHAPE_SINGLE, 0, s->cu->max_response_line);
      s->up_stls = 1;
      s->t_up = now_ms(s);
      return;
    }
    if (!o->ok) {
      char txt[PX_PEER_TEXT_MAX * 4 + 4], why[sizeof txt + 32];
      snprintf(why, sizeof why, "STLS refused: %s",
               px_log_sanitize(o->p, o->n, PX_PEER_TEXT_MAX, txt, sizeof txt));
      up_tls_failed(s, why);
      return;
    }
    s->up_stls = 2; /* the caller checks what follows, then starts TLS */
    return;
  }

  if (o->ok && s->cl->nfilters > 0 && e->kind == PX_CQ_RELAY &&
      (id == PX_CMD_RETR || id == PX_CMD_TOP)) {
    /* Nothing of it reaches the client before the verdict. */
    s->nmsgs++;
    hold_start(s, o, e);
    return;
  }

  to_client_line(s, o->p, o->n);

  if (e->kind == PX_CQ_GREETING) {
    px_framer_reset(&s->fr);
    s->fr_on = 0;
    s->inflight--;
    px_cmdq_pop(&s->q);
    if (!o->ok) {
      finish(s, "upstream_refused");
      return;
    }
    s->up_ready = 1;
    enter_state(s, PX_ST_AUTHORIZATION);
    return;
  }

  if (o->ok) {
    switch (id) {
    case PX_CMD_PASS:
    case PX_CMD_APOP:
      s->auth_ok = 1;
      enter_state(s, PX_ST_TRANSACTION);
      break;
    case PX_CMD_AUTH:
      if (e->shape == PX_SHAPE_SASL) {
        s->auth_ok = 1;
        enter_state(s, PX_ST_TRANSACTION);
      }
      break;
    case PX_CMD_UTF8:
      s->utf8 = 1;
      break;
    case PX_CMD_RETR:
    case PX_CMD_TOP:
      s->nmsgs++;
      break;
    default:
      break;
    }
    if (e->shape == PX_SHAPE_MULTI) {
      s->head_mid = 1;
      px_dot_enc_init(&s->enc);
      return;
    }
  }
  /* A failed login counts as an error too: without it a client could try
   * passwords on one connection for ever (Dovecot answers every one). */
  if (!o->ok && (id == PX_CMD_PASS || id == PX_CMD_APOP ||
                 (id == PX_CMD_AUTH && e->shape == PX_SHAPE_SASL)))
    s->errors++;
  complete_head(s);
  if (id == PX_CMD_QUIT)
    finish(s, "quit");
  else if (s->errors >= s->cl->max_errors)
    finish(s, "client_errors");
}

static void upstream_read(struct px_conn *c, const char *p, ssize_t n)
{
  struct px_session *s = conn_session(c);
  size_t left;

  if (s->closing || s->draining)
    return;
  if (n == PX_ETLS) {
    up_tls_failed(s, px_tls_error(c->tls));
    return;
  }
  if (n < 0) {
    px_log(PX_LOG_INFO,
           "sid=%016" PRIx64 " ev=upstream_closed upstream=%s "
           "err=%s",
           s->id, s->up_str, px_strerror((int)n));
    upstream_failed(s, n == UV_EOF ? "upstream_eof" : "upstream_error",
                    "-ERR [SYS/TEMP] Upstream closed the connection\r\n");
    return;
  }
  s->t_up = now_ms(s);
  PX_CTR_ADD(s->w->ctr.bytes_upstream_in, (uint64_t)n);
  left = (size_t)n;

  session_ref(s);
  while (left > 0 && !s->closing && !s->draining) {
    struct px_cmdq_ent *e;
    struct px_fr_out o;
    ssize_t used;

    dispatch(s);
    e = px_cmdq_head(&s->q);
    if (s->closing || s->draining)
      break;
    if (e == NULL || !s->fr_on) {
      px_log(PX_LOG_WARN,
             "sid=%016" PRIx64 " ev=upstream_protocol "
             "upstream=%s err=\"unsolicited data\"",
             s->id, s->up_str);
      upstream_failed(s, "upstream_protocol",
                      "-ERR [SYS/TEMP] Upstream protocol error\r\n");
      break;
    }
    if (!s->capture && px_framer_in_body(&s->fr)) {
      /* No filter wants the message: re-stuff it straight into the
       * client's output, one pass. */
      size_t avail, outn;
      char *dst = px_buf_reserve(&s->cli.out, 4, &avail);
      if (dst == NULL) {
        session_close(s, "out_of_memory");
        break;
      }
      used =
          (ssize_t)px_framer_relay(&s->fr, &s->enc, p, left, dst, avail, &outn);
      px_buf_commit(&s->cli.out, outn);
      p += used;
      left -= (size_t)used;
      continue;
    }
    used = px_framer_feed(&s->fr, p, left, s->w->scratch, sizeof s->w->scratch,
                          &o);
    if (used < 0) {
      char txt[PX_PEER_TEXT_MAX * 4 + 4];
      px_log_sanitize(p, left, PX_PEER_TEXT_MAX, txt, sizeof txt);
      px_log(PX_LOG_WARN,
             "sid=%016" PRIx64 " ev=upstream_protocol "
             "upstream=%s err=\"%s\" data=%s",
             s->id, s->up_str, px_strerror((int)used), txt);
      upstream_failed(s, "upstream_protocol",
                      "-ERR [SYS/TEMP] Upstream protocol error\r\n");
      break;
    }
    p += used;
    left -= (size_t)used;

    switch (o.ev) {
    case PX_FR_NONE:
      if (used == 0) {
        /* The framer is done with this answer and bytes remain: nothing
         * was asked for them (window 1). */
        px_log(PX_LOG_WARN,
               "sid=%016" PRIx64 " ev=upstream_protocol "
               "upstream=%s err=\"data after the response\"",
               s->id, s->up_str);
        upstream_failed(s, "upstream_protocol",
                        "-ERR [SYS/TEMP] Upstream protocol error\r\n");
      }
      break;
    case PX_FR_STATUS: {
      unsigned stls_before = s->up_stls;
      on_status(s, &o);
      if (s->closing || s->draining || s->up_stls == stls_before)
        break;
      if (left > 0) {
        /* Upstream STLS: nothing may follow the greeting before our STLS,
         * nor the +OK to it before the handshake. Bytes behind that +OK
         * came in the clear (response injection, CVE-2020-14954 class). */
        char why[64];
        snprintf(why, sizeof why, "%zu unexpected bytes around STLS", left);
        up_tls_failed(s, why);
        break;
      }
      if (s->up_stls == 2)
        up_start_tls(s);
      break;
    }
    case PX_FR_CONT:
      to_client_line(s, o.p, o.n);
      s->head_mid = 1;
      s->sasl_wait = 1;
      parse_client(s);
      break;
    case PX_FR_BODY:
      if (s->capture)
        hold_append(s, o.p, o.n);
      else
        body_bytes(s, o.p, o.n);
      break;
    case PX_FR_LINE:
      capa_line(s, o.p, o.n);
      break;
    case PX_FR_END:
      if (s->capture) {
        hold_end(s);
        break;
      }
      if (e->id == PX_CMD_CAPA) {
        /* STLS is this listener's to offer, in the clear and before
         * login only (RFC 2595 4). */
        if (s->cl->tls == PX_TLS_STARTTLS && s->cli.tls == NULL && !s->auth_ok)
          to_client_str(s, "STLS\r\n");
        to_client_str(s, ".\r\n");
      } else {
        char end[PX_DOT_END_MAX];
        to_client(s, end, px_dot_encode_end(&s->enc, end));
      }
      complete_head(s);
      break;
    case PX_FR_COUNT:
      break;
    }
  }
  /* A framer in the middle of a body may still be owed its END event. */
  if (!s->closing && !s->draining && s->fr_on && s->fr.st == PX_FRS_BODY &&
      s->fr.dot.st == PX_DOT_DONE) {
    struct px_fr_out o;
    char end[PX_DOT_END_MAX];
    (void)px_framer_feed(&s->fr, NULL, 0, s->w->scratch, sizeof s->w->scratch,
                         &o);
    assert(o.ev == PX_FR_END);
    if (s->capture) {
      hold_end(s);
    } else {
      to_client(s, end, px_dot_encode_end(&s->enc, end));
      complete_head(s);
    }
  }

  if (!s->closing && !s->draining) {
    dispatch(s);
    flush(s);
    if (!s->closing && px_conn_pending(&s->cli) > PX_HIGH_WATER) {
      px_conn_read_stop(&s->up);
      s->up_paused = 1;
    }
    update_reading(s);
  }
  session_unref(&s);
}

static void upstream_written(struct px_conn *c, int status)
{
  struct px_session *s = conn_session(c);

  if (s->closing || s->draining)
    return;
  if (status < 0) {
    upstream_failed(s, "upstream_error",
                    "-ERR [SYS/TEMP] Upstream failed, try again later\r\n");
    return;
  }
  PX_CTR_ADD(s->w->ctr.bytes_upstream_out, c->wdone);
  flush(s);
  update_reading(s);
}

static void upstream_closed(struct px_conn *c)
{
  struct px_session *s = conn_session(c);

  if (s->up_retry && !s->closing && !s->draining) {
    s->up_retry = 0;
    up_connect_next(s);
  }
}

/* The upstream's handshake is done and its certificate checked (the
 * handshake fails otherwise). After STLS the greeting held meanwhile goes
 * to the client now; no command has gone upstream before this point. */
static void upstream_tls_ready(struct px_conn *c)
{
  struct px_session *s = conn_session(c);

  if (px_log_enabled(PX_LOG_DEBUG))
    px_log(PX_LOG_DEBUG,
           "sid=%016" PRIx64 " ev=tls_ready side=upstream "
           "upstream=%s tls=%s cipher=%s",
           s->id, s->up_str, px_tls_version(c->tls), px_tls_cipher(c->tls));
  if (s->up_stls != 2)
    return;
  s->up_stls = 0;
  to_client_line(s, s->greeting, s->greetinglen);
  free(s->greeting);
  s->greeting = NULL;
  px_framer_reset(&s->fr);
  s->fr_on = 0;
  s->inflight--;
  px_cmdq_pop(&s->q); /* the greeting */
  s->up_ready = 1;
  enter_state(s, PX_ST_AUTHORIZATION);
  dispatch(s);
  flush(s);
  update_reading(s);
  arm_timer(s);
}

static const struct px_conn_ops upstream_ops = {
  upstream_read,      upstream_written, upstream_closed,
  upstream_tls_ready, conn_hold,        conn_release
};

/* TLS toward the upstream: right after connect (implicit), or after its
 * +OK to STLS. Returns 0, or a negative code after failing the session. */
static int up_start_tls(struct px_session *s)
{
  const char *name = s->cu->server_name ? s->cu->server_name : s->up_host;
  struct px_tls *t = px_tls_new_client(
      s->tls->upstreams[s->cu - s->conf->upstreams], name, s->cu->verify);
  int rc;

  if (t == NULL) {
    session_close(s, "out_of_memory");
    return UV_ENOMEM;
  }
  s->t_uphs = now_ms(s);
  rc = px_conn_start_tls(&s->up, t);
  if (rc < 0) {
    up_tls_failed(s, px_tls_error(t));
    return rc;
  }
  arm_timer(s);
  return 0;
}

/* ---- connecting to the upstream ---------------------------------------- */

static void upstream_unavailable(struct px_session *s)
{
  s->connecting = 0;
  px_log(PX_LOG_WARN,
         "sid=%016" PRIx64 " ev=upstream_unavailable "
         "upstream=%s servers=%zu",
         s->id, s->cu->name, s->cu->nservers);
  upstream_failed(s, "upstream_unavailable",
                  "-ERR [SYS/TEMP] Upstream unavailable, try again later\r\n");
}

static void connect_cb(uv_connect_t *req, int status)
{
  struct px_session *s = req->data;

  if (s->closing || s->draining || status == UV_ECANCELED) {
    session_unref(&s);
    return;
  }
  if (status < 0) {
    px_log(PX_LOG_INFO,
           "sid=%016" PRIx64 " ev=upstream_connect_failed "
           "server=%s err=%s",
           s->id, s->up_str, uv_strerror(status));
    PX_CTR_ADD(s->w->ctr.upstream_errors_total, 1);
    s->up_retry = 1;
    px_conn_close(&s->up);
    session_unref(&s);
    return;
  }
  s->connecting = 0;
  uv_tcp_nodelay(&s->up.tcp, 1);
  px_cmdq_head(&s->q)->sent = 1; /* the greeting is due */
  s->inflight = 1;
  s->t_up = now_ms(s);
  dispatch(s);
  if (px_conn_read_start(&s->up) < 0)
    upstream_failed(s, "upstream_error",
                    "-ERR [SYS/TEMP] Upstream failed, try again later\r\n");
  else if (s->cu->tls != PX_TLS_IMPLICIT || up_start_tls(s) == 0)
    arm_timer(s);
  session_unref(&s);
}

static void format_addr(const struct sockaddr *sa, char *out, size_t cap)
{
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;

  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
    snprintf(out, cap, "%s:%d", host, port);
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
    snprintf(out, cap, "[%s]:%d", host, port);
  } else {
    snprintf(out, cap, "?");
  }
}

/* Starts a connect to sa. Any failure closes the leg, and its close
 * callback moves on to the next address. */
static void up_connect_addr(struct px_session *s, const struct sockaddr *sa)
{
  int rc;

  format_addr(sa, s->up_str, sizeof s->up_str);
  rc = px_conn_init(&s->up, &s->w->loop, &upstream_ops, s, s->w->slab,
                    sizeof s->w->slab);
  if (rc < 0) {
    upstream_unavailable(s);
    return;
  }
  s->connecting = 1;
  s->t_conn = now_ms(s);
  s->creq.data = s;
  rc = uv_tcp_connect(&s->creq, &s->up.tcp, sa, connect_cb);
  if (rc < 0) {
    px_log(PX_LOG_INFO,
           "sid=%016" PRIx64 " ev=upstream_connect_failed "
           "server=%s err=%s",
           s->id, s->up_str, uv_strerror(rc));
    s->up_retry = 1;
    px_conn_close(&s->up);
    return;
  }
  session_ref(s);
  arm_timer(s);
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
  struct px_session *s = req->data;

  if (s->closing || s->draining) {
    uv_freeaddrinfo(res);
    session_unref(&s);
    return;
  }
  if (status < 0) {
    const struct px_conf_hostport *hp = &s->cu->servers[s->server_idx - 1];
    px_log(PX_LOG_WARN,
           "sid=%016" PRIx64 " ev=upstream_resolve_failed "
           "server=%s:%s err=%s",
           s->id, hp->host, hp->port, uv_strerror(status));
    PX_CTR_ADD(s->w->ctr.upstream_errors_total, 1);
  } else {
    s->ai = res;
    s->ai_next = res;
  }
  up_connect_next(s);
  session_unref(&s);
}

/* Tries the next address of the current server, then the next server in
 * file order; when none is left the client gets -ERR [SYS/TEMP]. */
static void up_connect_next(struct px_session *s)
{
  const struct px_conf_hostport *hp;
  struct sockaddr_storage ss;
  struct addrinfo hints;
  int rc;

  if (s->ai_next != NULL) {
    struct addrinfo *ai = s->ai_next;
    s->ai_next = ai->ai_next;
    up_connect_addr(s, ai->ai_addr);
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
    up_connect_addr(s, (const struct sockaddr *)&ss);
    return;
  }
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  s->gai.data = s;
  s->connecting = 1;
  s->t_conn = now_ms(s);
  rc = uv_getaddrinfo(&s->w->loop, &s->gai, gai_cb, hp->host, hp->port, &hints);
  if (rc < 0) {
    s->connecting = 0;
    up_connect_next(s);
    return;
  }
  session_ref(s);
  arm_timer(s);
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

static uint64_t next_deadline(const struct px_session *s,
                              enum px_deadline *which)
{
  uint64_t dl = s->t_cli + s->cl->idle_timeout_ms;

  *which = PX_DL_IDLE;
  /* Draining toward a close, only the client's progress counts: the
   * upstream is gone and the login deadline has done its work. */
  if (s->draining)
    return dl;
  if (s->connecting && s->t_conn + s->cu->connect_timeout_ms < dl) {
    dl = s->t_conn + s->cu->connect_timeout_ms;
    *which = PX_DL_CONNECT;
  }
  if (!s->auth_ok && s->t_start + s->cl->login_timeout_ms < dl) {
    dl = s->t_start + s->cl->login_timeout_ms;
    *which = PX_DL_LOGIN;
  }
  /* The upstream owes an answer, and is not held back by a slow client. */
  if (s->inflight > 0 && !s->connecting && !s->up_paused && !s->sasl_wait &&
      !(s->holding && !s->capture) && s->t_up + s->cu->timeout_ms < dl) {
    dl = s->t_up + s->cu->timeout_ms;
    *which = PX_DL_UPSTREAM;
  }
  if (hold_keepalive_due(s) < dl) {
    dl = hold_keepalive_due(s);
    *which = PX_DL_KEEPALIVE;
  }
  /* A TLS handshake has its own, short deadline on either side (the
   * upstream's is connect_timeout: connecting includes TLS). */
  if (s->cli.tls != NULL && !px_tls_done(s->cli.tls) &&
      s->t_hs + s->cl->handshake_timeout_ms < dl) {
    dl = s->t_hs + s->cl->handshake_timeout_ms;
    *which = PX_DL_HANDSHAKE;
  }
  if (s->up.tls != NULL && !px_tls_done(s->up.tls) &&
      s->t_uphs + s->cu->connect_timeout_ms < dl) {
    dl = s->t_uphs + s->cu->connect_timeout_ms;
    *which = PX_DL_UP_HANDSHAKE;
  }
  return dl;
}

static void timer_cb(uv_timer_t *t)
{
  struct px_session *s = t->data;
  enum px_deadline which;
  uint64_t dl, now = now_ms(s);

  if (s->closing)
    return;
  dl = next_deadline(s, &which);
  if (dl > now) {
    arm_timer(s); /* activity moved the deadline on */
    return;
  }
  switch (which) {
  case PX_DL_CONNECT:
    px_log(PX_LOG_INFO,
           "sid=%016" PRIx64 " ev=upstream_connect_failed "
           "server=%s err=\"timed out\"",
           s->id, s->up_str);
    PX_CTR_ADD(s->w->ctr.upstream_errors_total, 1);
    if (s->up.open) {
      s->up_retry = 1;
      px_conn_close(&s->up);
    }
    /* A name lookup cannot be cut short: its callback moves on. */
    s->t_conn = now;
    arm_timer(s);
    return;
  case PX_DL_HANDSHAKE:
    PX_CTR_ADD(s->w->ctr.tls_handshake_failures_total, 1);
    px_log(PX_LOG_INFO,
           "sid=%016" PRIx64 " ev=tls_failed client=%s "
           "err=\"handshake timed out\"",
           s->id, s->peer_str);
    session_close(s, "handshake_timeout");
    return;
  case PX_DL_KEEPALIVE:
    hold_keepalive(s);
    break;
  case PX_DL_UP_HANDSHAKE:
    up_tls_failed(s, "handshake timed out");
    break;
  case PX_DL_UPSTREAM:
    px_log(PX_LOG_WARN, "sid=%016" PRIx64 " ev=upstream_timeout upstream=%s",
           s->id, s->up_str);
    upstream_failed(s, "upstream_timeout",
                    "-ERR [SYS/TEMP] Upstream timed out, try again later\r\n");
    break;
  case PX_DL_LOGIN:
  case PX_DL_IDLE:
    if (s->draining) {
      session_close(s, "client_timeout");
      return;
    }
    if (!s->head_mid && s->inflight == 0)
      to_client_str(s, "-ERR Disconnected for inactivity\r\n");
    finish(s, which == PX_DL_LOGIN ? "login_timeout" : "idle_timeout");
    break;
  case PX_DL_NONE:
  case PX_DL_COUNT:
    break;
  }
  if (!s->closing)
    arm_timer(s);
}

static void arm_timer(struct px_session *s)
{
  enum px_deadline which;
  uint64_t dl, now = now_ms(s);

  if (s->closing)
    return;
  dl = next_deadline(s, &which);
  uv_timer_start(&s->timer, timer_cb, dl > now ? dl - now : 0, 0);
}

/* ---- start and end ------------------------------------------------------ */

static void session_close(struct px_session *s, const char *reason)
{
  struct px_worker *w = s->w;
  char sni[PX_USER_LOG_MAX * 4 + 4] = "-";
  double secs;

  if (s->closing)
    return;
  s->closing = 1;
  if (s->reason == NULL || strcmp(reason, "client_timeout") == 0)
    s->reason = reason;
  enter_state(s, PX_ST_CLOSING);

  secs = (double)(now_ms(s) - s->t_start) / 1000.0;
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
      s->id, s->cl->name, s->peer_str, s->user[0] ? s->user : "-",
      s->auth_ok ? "ok" : "no", s->up_str[0] ? s->up_str : "-",
      s->cli.tls ? px_tls_version(s->cli.tls) : "-",
      s->cli.tls ? px_tls_cipher(s->cli.tls) : "-", sni, s->nverdicts, s->ncmds,
      s->nmsgs, s->cli.bytes_in, s->cli.bytes_out, secs, s->reason);

  PX_CTR_ADD(w->ctr.connections_active, -1);
  if (s->counted)
    px_lrt_release(s->lrt, (const struct sockaddr *)&s->peer);

  px_conn_close(&s->cli);
  px_conn_close(&s->up);
  uv_close((uv_handle_t *)&s->timer, timer_closed_cb);

  px_cmdq_clear(&s->q);
  px_framer_reset(&s->fr);
  drop_cin(s);
  free(s->greeting);
  s->greeting = NULL;
  hold_drop(s);
  if (s->ai != NULL) {
    uv_freeaddrinfo(s->ai);
    s->ai = NULL;
  }

  if (s->prev != NULL)
    s->prev->next = s->next;
  else
    w->sessions = s->next;
  if (s->next != NULL)
    s->next->prev = s->prev;
  w->nsessions--;
  px_worker_session_gone(w);
  session_unref(&s); /* the "alive" reference */
}

void px_session_abort(struct px_session *s, const char *reason)
{
  session_close(s, reason);
}

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
  px_runtime_gen(w->rt, &s->conf, &s->tls, &s->flt);
  s->cl = &s->conf->listeners[l->idx];
  s->cu = s->cl->upstream;
  s->id = ((uint64_t)w->idx << 48) | ++w->next_sid;
  s->st = PX_ST_CONNECTING;
  px_cmdq_init(&s->q, PX_MAX_PIPELINED);

  rc = px_conn_init(&s->cli, &w->loop, &client_ops, s, w->slab, sizeof w->slab);
  if (rc < 0) {
    session_unref(&s);
    return rc;
  }
  rc = uv_accept(server, (uv_stream_t *)&s->cli.tcp);
  if (rc < 0) {
    /* Not yet listed or counted: just let the handle go. */
    s->closing = 1;
    px_conn_close(&s->cli);
    session_unref(&s);
    return rc;
  }
  uv_tcp_nodelay(&s->cli.tcp, 1);
  uv_tcp_getpeername(&s->cli.tcp, (struct sockaddr *)&s->peer, &len);
  format_addr((struct sockaddr *)&s->peer, s->peer_str, sizeof s->peer_str);

  uv_timer_init(&w->loop, &s->timer);
  s->timer.data = s;
  session_ref(s);

  s->next = w->sessions;
  if (w->sessions != NULL)
    w->sessions->prev = s;
  w->sessions = s;
  w->nsessions++;
  PX_CTR_ADD(w->ctr.connections_total, 1);
  PX_CTR_ADD(w->ctr.connections_active, 1);
  s->t_start = s->t_cli = s->t_up = now_ms(s);

  if (px_lrt_acquire(l, s->cl, (const struct sockaddr *)&s->peer) < 0) {
    PX_CTR_ADD(w->ctr.connections_refused, 1);
    px_log(PX_LOG_WARN,
           "sid=%016" PRIx64 " ev=refused listener=%s "
           "client=%s reason=max_clients",
           s->id, s->cl->name, s->peer_str);
    /* On an implicit-TLS port a plaintext line would be noise to the
     * client's TLS stack: just close there. */
    if (s->cl->tls != PX_TLS_IMPLICIT)
      to_client_str(
          s, "-ERR [SYS/TEMP] Too many connections, try again later\r\n");
    finish(s, "max_clients");
    return 0;
  }
  s->counted = 1;
  px_log(PX_LOG_DEBUG, "sid=%016" PRIx64 " ev=connect listener=%s client=%s",
         s->id, s->cl->name, s->peer_str);

  if (px_cmdq_push(&s->q, PX_CQ_GREETING, NULL, 0) == NULL) {
    session_close(s, "out_of_memory");
    return 0;
  }
  if (s->cl->tls == PX_TLS_IMPLICIT) {
    /* The upstream is connected once the handshake is done. */
    if (cli_start_tls(s) < 0)
      return 0;
  } else {
    up_connect_next(s);
  }
  update_reading(s);
  arm_timer(s);
  return 0;
}
