/* client.c - the client leg: command intake, SASL lines, STLS toward the
 * client, and what CAPA offers it. See sess.h.
 *
 * The client's lines are parsed strictly (pop3.c) and queued in the FIFO
 * (cmdq.c) with the proxy's own replies in between; a command goes
 * upstream as a line the proxy rebuilt, never as the client's bytes. What
 * the client sends while it may not send (during an AUTH exchange, with
 * the queue full) waits in the leg's bounded input buffer; after QUIT it
 * is dropped; before TLS after STLS it ends the session.
 */
#include "sess.h"

#include <inttypes.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "log.h"
#include "px.h"

static struct px_session *of(struct px_conn *c)
{
  return c->owner;
}

int cli_secure(const struct px_session *s)
{
  return s->cli.tls != NULL && px_tls_done(s->cli.tls);
}

static struct px_cmdq_ent *push_local(struct px_session *s, const char *reply,
                                      int close)
{
  /* Queued like a relayed command, so that answers stay in order. The
   * parser checked that the queue has room. */
  struct px_cmdq_ent *e =
      px_cmdq_push(&s->q, PX_CQ_LOCAL, reply, strlen(reply));

  if (e == NULL) {
    sess_close(s, "out_of_memory");
    return NULL;
  }
  e->close_after = close;
  if (close)
    sess_cli_enter(s, PX_CLI_QUIT);
  return e;
}

/* A command refused by the proxy: answered, never forwarded, and counted
 * toward max_errors, so that probing and floods end. */
static void refuse(struct px_session *s, const char *reply)
{
  s->errors++;
  PX_CTR_ADD(s->w->ctr.commands_rejected, 1);
  if (s->errors >= s->cl->max_errors)
    push_local(s, "-ERR Too many invalid commands, closing\r\n", 1);
  else
    push_local(s, reply, 0);
}

static void stls_injection(struct px_session *s, size_t bytes)
{
  /* STARTTLS command injection (CVE-2011-0411 class): bytes sent in the
   * clear behind STLS must never be read as if inside TLS. */
  px_log(PX_LOG_WARN,
         "sid=%016" PRIx64 " ev=stls_injection client=%s bytes=%zu", s->id,
         s->peer_str, bytes);
  sess_close(s, "stls_injection");
}

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

static void take_stls(struct px_session *s)
{
  struct px_cmdq_ent *ok;

  if (s->cl->tls != PX_TLS_STARTTLS) {
    refuse(s, "-ERR STLS is not offered on this listener\r\n");
  } else if (s->cli.tls != NULL) {
    refuse(s, "-ERR Already in TLS\r\n");
  } else if (s->nauth > 0 || s->st >= PX_ST_TRANSACTION) {
    /* RFC 2595 4: only before any authentication, even one still in the
     * queue ("USER a\r\nPASS b\r\nSTLS\r\n" in one write). */
    refuse(s, "-ERR STLS is only allowed before login\r\n");
  } else if ((ok = push_local(s, "+OK Begin TLS negotiation\r\n", 0)) !=
             NULL) {
    /* The reply is sent in order; TLS starts right after it. */
    ok->start_tls = 1;
    sess_cli_enter(s, PX_CLI_STLS);
  }
}

static void take_command(struct px_session *s, const char *line, size_t len)
{
  struct px_cmd c;
  struct px_cmdq_ent *e;
  char out[PX_CMD_MAX + 1];
  size_t n;
  int rc = px_pop3_parse_cmd(line, len, s->utf8, &c);

  if (rc < 0) {
    refuse(s, rc == PX_EBADCMD    ? "-ERR Unknown command\r\n"
              : rc == PX_EBADCHAR ? "-ERR Invalid character in command\r\n"
                                  : "-ERR Invalid arguments\r\n");
    return;
  }
  s->ncmds++;
  PX_CTR_ADD(s->w->ctr.commands_total[c.id], 1);

  if (s->cl->require_tls && !cli_secure(s) &&
      (c.id == PX_CMD_USER || c.id == PX_CMD_PASS || c.id == PX_CMD_APOP ||
       c.id == PX_CMD_AUTH)) {
    /* RFC 2595 2.3: no credentials in the clear where the operator says
     * so. */
    refuse(s, "-ERR Plaintext authentication disallowed, use STLS first\r\n");
    return;
  }

  switch (c.id) {
  case PX_CMD_STLS:
    take_stls(s);
    return;
  case PX_CMD_USER:
  case PX_CMD_APOP:
    s->nauth++;
    px_log_sanitize(c.arg[0], c.arglen[0], PX_USER_LOG_MAX, s->user,
                    sizeof s->user);
    break;
  case PX_CMD_PASS:
    s->nauth++;
    break;
  case PX_CMD_AUTH:
    if (c.nargs == 0)
      break; /* the mechanism list: multi-line */
    s->nauth++;
    sess_cli_enter(s, PX_CLI_SASL_WAIT);
    s->sasl_plain = c.arglen[0] == 5 && strncasecmp(c.arg[0], "PLAIN", 5) == 0;
    if (s->sasl_plain && c.nargs == 2) {
      note_plain_user(s, c.arg[1], c.arglen[1]);
      s->sasl_plain = 0;
    }
    break;
  case PX_CMD_QUIT:
    sess_cli_enter(s, PX_CLI_QUIT);
    break;
  default:
    break;
  }

  n = px_pop3_format_cmd(&c, out, sizeof out);
  e = n > 0 ? px_cmdq_push(&s->q, PX_CQ_RELAY, out, n) : NULL;
  OPENSSL_cleanse(out, sizeof out);
  if (e == NULL) {
    sess_close(s, "out_of_memory");
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
    rc = sess_to_upstream(s, "*\r\n", 3);
  } else {
    if (s->sasl_plain) {
      note_plain_user(s, line, len);
      s->sasl_plain = 0;
    }
    rc = sess_to_upstream(s, line, len + 2);
  }
  if (rc < 0)
    return;
  sess_cli_enter(s, PX_CLI_SASL_WAIT);
  s->t_up = sess_now(s);
}

/* Takes the client's lines from p[0..n) as far as the dialogue allows;
 * returns the bytes taken (the rest waits in the leg's input buffer). */
static size_t parse(struct px_session *s, const char *p, size_t n)
{
  size_t off = 0, len;
  int rc;

  while (off < n && sess_live(s)) {
    switch (s->cst) {
    case PX_CLI_SASL_LINE:
      rc = px_pop3_line(p + off, n - off, PX_SASL_MAX, &len);
      if (rc == 0)
        return off;
      if (rc < 0) {
        PX_CTR_ADD(s->w->ctr.commands_rejected, 1);
        sess_to_client_str(s, "-ERR Line too long, closing\r\n");
        sess_finish(s, "line_too_long");
        return n;
      }
      take_sasl_line(s, p + off, len);
      off += len + 2;
      break;
    case PX_CLI_COMMANDS:
      /* Replies wait for the client to read what it has been sent: a
       * client that never reads cannot make the proxy hold more. */
      if (px_cmdq_full(&s->q) || sess_client_full(s))
        return off;
      rc = px_pop3_line(p + off, n - off, PX_CMD_MAX, &len);
      if (rc == 0)
        return off;
      if (rc < 0) {
        PX_CTR_ADD(s->w->ctr.commands_rejected, 1);
        push_local(s, "-ERR Command line too long, closing\r\n", 1);
        return n;
      }
      take_command(s, p + off, len);
      off += len + 2;
      if (s->cst == PX_CLI_STLS && off < n) {
        stls_injection(s, n - off);
        return n;
      }
      break;
    case PX_CLI_SASL_WAIT:
      return off; /* kept until the upstream's next line */
    case PX_CLI_STLS:
      stls_injection(s, n - off);
      return n;
    case PX_CLI_HANDSHAKE:
    case PX_CLI_QUIT:
    case PX_CLI_GONE:
    case PX_CLI_COUNT:
      return n; /* nothing more is read as commands */
    }
  }
  return sess_live(s) ? off : n;
}

static size_t client_data(struct px_conn *c, const char *p, size_t n)
{
  struct px_session *s = of(c);
  size_t used;

  if (!sess_live(s))
    return n; /* closing: what the client says does not matter */
  s->t_cli = sess_now(s);
  PX_CTR_ADD(s->w->ctr.bytes_client_in, c->bytes_in - s->cli_in_counted);
  s->cli_in_counted = c->bytes_in;
  sess_ref(s);
  used = parse(s, p, n);
  if (sess_live(s) && used > 0)
    sess_kick(s);
  sess_unref(&s);
  return used;
}

static void client_fail(struct px_conn *c, int err)
{
  struct px_session *s = of(c);

  if (s->st == PX_ST_CLOSED)
    return;
  if (err == PX_ETLS) {
    PX_CTR_ADD(s->w->ctr.tls_handshake_failures_total,
               px_tls_done(c->tls) ? 0 : 1);
    px_log(PX_LOG_INFO, "sid=%016" PRIx64 " ev=tls_failed client=%s err=\"%s\"",
           s->id, s->peer_str, px_tls_error(c->tls));
    sess_close(s, "tls_failed");
  } else if (err == PX_EINPUT && sess_live(s)) {
    /* Only a client that ignores the protocol sends this much unasked. */
    PX_CTR_ADD(s->w->ctr.commands_rejected, 1);
    sess_to_client_str(s, "-ERR Too much input, closing\r\n");
    sess_finish(s, "input_overflow");
  } else {
    sess_on_client_gone(s, err == UV_EOF ? "client_eof" : "client_error");
  }
}

static void client_sent(struct px_conn *c)
{
  sess_flush(of(c));
}

static void client_low(struct px_conn *c)
{
  sess_on_client_low(of(c));
}

static void client_tls_ready(struct px_conn *c)
{
  sess_on_client_tls(of(c));
}

static void client_closed(struct px_conn *c)
{
  (void)c;
}

static void client_hold(struct px_conn *c)
{
  sess_ref(of(c));
}

static void client_release(struct px_conn *c)
{
  struct px_session *s = of(c);
  sess_unref(&s);
}

const struct px_conn_ops px_client_ops = {
  client_data,      client_fail,   client_sent, client_low,
  client_tls_ready, client_closed, client_hold, client_release
};

int cli_start_tls(struct px_session *s)
{
  struct px_tls *t;
  int rc;

  if (s->cli.inlen > 0) {
    /* Sent after STLS, before the +OK: as injected as the rest. */
    stls_injection(s, s->cli.inlen);
    return PX_EPROTO;
  }
  t = px_tls_new_server(&s->gen->tls->listeners[s->lrt->idx]);
  if (t == NULL) {
    sess_close(s, "out_of_memory");
    return UV_ENOMEM;
  }
  sess_cli_enter(s, PX_CLI_HANDSHAKE);
  rc = px_conn_start_tls(&s->cli, t);
  if (rc < 0) {
    sess_close(s, "tls_failed");
    return rc;
  }
  s->t_hs = sess_now(s);
  sess_arm(s);
  return 0;
}

void cli_resume(struct px_session *s)
{
  if (!sess_live(s))
    return;
  /* While an AUTH exchange runs it is the last entry of the queue. */
  if ((s->cst == PX_CLI_SASL_WAIT || s->cst == PX_CLI_SASL_LINE) &&
      px_cmdq_head(&s->q) == NULL)
    sess_cli_enter(s, PX_CLI_COMMANDS);
  px_conn_replay(&s->cli);
}

void cli_sasl_line(struct px_session *s)
{
  sess_cli_enter(s, PX_CLI_SASL_LINE);
  px_conn_replay(&s->cli);
}

/* CAPA is rebuilt from the upstream's list: only what the proxy can frame
 * and relay faithfully is offered. The upstream's STLS is dropped (STLS is
 * the listener's to offer, added at the end); XCLIENT would let clients
 * choose their logged address; IMPLEMENTATION names the server behind. */
void cli_capa_line(struct px_session *s, const char *p, size_t n)
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
      sess_to_client(s, p, n);
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
    sess_to_client(s, out, o);
  }
}

void cli_capa_end(struct px_session *s)
{
  /* STLS is this listener's to offer, in the clear and before login only
   * (RFC 2595 4). */
  if (s->cl->tls == PX_TLS_STARTTLS && s->cli.tls == NULL &&
      s->st < PX_ST_TRANSACTION && s->nauth == 0 &&
      sess_to_client_str(s, "STLS\r\n") < 0)
    return;
  sess_to_client_str(s, ".\r\n");
}
