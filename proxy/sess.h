/* sess.h - inside a session: the struct, the named states, and the verbs
 * between the core (session.c) and its rooms.
 *
 * The rooms never call each other. client.c (command intake, SASL, STLS
 * toward the client), upstream.c (connect, failover, framing the
 * upstream's answers, upstream TLS) and hold.c (held messages: capture,
 * the filter chain, keep-alive, emission) each report what happened to the
 * core through the sess_on_* events, and the core decides what happens
 * next, calling the rooms through a few verbs each. Which leg may read,
 * who owns the client's output and whether the session ends are decided
 * in session.c from the named states below, never from a room's flag.
 */
#ifndef PX_SESS_H
#define PX_SESS_H

#include <stdint.h>
#include <sys/socket.h>

#include "cmdq.h"
#include "conn.h"
#include "dot.h"
#include "pop3.h"
#include "session.h"
#include "worker.h"

/* Each state says what the leg reads, what it writes, and which deadline
 * runs ("idle" = idle_timeout from the client's last progress, always
 * running; "login" = login_timeout from accept). */

/* The POP3 dialogue, as the session sees it (session.c). */
enum px_state {
  PX_ST_CONNECTING = 0, /* client read, upstream greeting awaited; login */
  PX_ST_AUTHORIZATION,  /* both legs read and written; login */
  PX_ST_TRANSACTION,    /* logged in: both legs; idle, upstream timeout */
  PX_ST_CLOSING,        /* upstream closed; the client's output drains, its
                           input is dropped; idle only */
  PX_ST_CLOSED,         /* handles closing; freed when the last ref goes */
  PX_ST_COUNT
};

/* The client leg: what its next bytes are (client.c). Reads go on in every
 * state (EOF is seen at once); only output above high water pauses them. */
enum px_cli_st {
  PX_CLI_HANDSHAKE = 0, /* reads ciphertext, writes the handshake;
                           handshake_timeout */
  PX_CLI_COMMANDS,      /* reads command lines into the queue while it has
                           room and the output is under high water */
  PX_CLI_SASL_WAIT,     /* an AUTH waits for the upstream: bytes kept in the
                           input buffer, not parsed; upstream timeout */
  PX_CLI_SASL_LINE,     /* a challenge went out: reads one SASL line and
                           writes it upstream; idle (the upstream waits) */
  PX_CLI_STLS,          /* STLS accepted, its +OK queued: any byte read is
                           injection and ends the session */
  PX_CLI_QUIT,          /* QUIT or a closing reply queued: reads and drops */
  PX_CLI_GONE,          /* EOF after QUIT: reads nothing, still written to;
                           its slot is free; upstream timeout */
  PX_CLI_COUNT
};

/* The upstream leg (upstream.c). */
enum px_up_st {
  PX_UP_IDLE = 0,  /* no socket yet (an implicit listener's handshake) */
  PX_UP_RESOLVING, /* a name lookup in the pool; connect_timeout */
  PX_UP_CONNECTING,/* TCP connect; connect_timeout */
  PX_UP_RETRY,     /* an attempt failed; its handle closes, then the next
                      address; connect_timeout */
  PX_UP_TLS,       /* reads and writes the handshake (implicit, or after
                      STLS); connect_timeout */
  PX_UP_GREETING,  /* reads the greeting; upstream timeout */
  PX_UP_STLS,      /* wrote STLS, reads its +OK; upstream timeout */
  PX_UP_READY,     /* writes queued commands (the window), reads the head's
                      answer; upstream timeout while an answer is owed and
                      the client keeps up */
  PX_UP_CLOSED,
  PX_UP_COUNT
};

extern const char *const px_state_names[];
extern const char *const px_cli_st_names[];
extern const char *const px_up_st_names[];

/* Commands read ahead of their answers. */
#define PX_MAX_PIPELINED 64
/* Commands sent upstream ahead of their answers, once the upstream has
 * announced PIPELINING (RFC 2449 6.6) and nothing is filtered; 1 else. */
#define PX_UP_WINDOW 32
/* Unparsed client bytes kept: one read, plus a pending SASL line. */
#define PX_CLI_IN_MAX    (PX_SLAB_SIZE + PX_SASL_MAX)
#define PX_USER_LOG_MAX  64
#define PX_PEER_TEXT_MAX 160

struct px_hold;

struct px_session {
  struct px_session *prev, *next;
  struct px_worker *w;
  struct px_lrt *lrt;
  struct px_gen *gen; /* the generation this session runs on */
  const struct px_conf_listener *cl;
  const struct px_conf_upstream *cu;
  uint64_t id;
  int refs; /* 1 alive + 1 per open handle, request or job in flight */
  enum px_state st;
  enum px_cli_st cst;
  enum px_up_st ust;
  unsigned counted : 1;    /* holds a px_lrt slot */
  unsigned pipelining : 1; /* the upstream announced PIPELINING */
  unsigned utf8 : 1;       /* RFC 6856 UTF8 accepted */
  unsigned sasl_plain : 1; /* the next SASL line is PLAIN's (user for log) */
  unsigned logged_in : 1;  /* TRANSACTION was reached (for the log) */

  struct px_conn cli, up;
  uv_timer_t timer;
  uv_getaddrinfo_t gai;
  struct addrinfo *ai, *ai_next;
  size_t server_idx;

  struct px_cmdq q;
  struct px_framer fr;
  struct px_dot_enc enc;
  unsigned errors;
  unsigned nauth;    /* authentication commands accepted (STLS after: no) */
  unsigned inflight; /* answers the upstream owes us */

  uint64_t cli_in_counted, up_in_counted; /* bytes read, in the metrics */
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
  const char *reason;
};

/* ---- session.c: the core ------------------------------------------------ */

void sess_ref(struct px_session *s);
void sess_unref(struct px_session **sp);
uint64_t sess_now(const struct px_session *s);
void sess_enter(struct px_session *s, enum px_state st);
void sess_cli_enter(struct px_session *s, enum px_cli_st st);
void sess_up_enter(struct px_session *s, enum px_up_st st);
/* Whether the session still runs (not closing, not closed). */
int sess_live(const struct px_session *s);

/* Output toward the client. On failure the session is closed and a
 * negative code returned. */
int sess_to_client(struct px_session *s, const void *p, size_t n);
int sess_to_client_str(struct px_session *s, const char *str);
int sess_to_client_line(struct px_session *s, const char *p, size_t n);
/* Output toward the upstream (SASL lines); on failure as above. */
int sess_to_upstream(struct px_session *s, const void *p, size_t n);
/* Dot-stuffs body bytes into the client's output. */
void sess_body_out(struct px_session *s, const char *p, size_t n);
char *sess_client_reserve(struct px_session *s, size_t min, size_t *avail);
void sess_client_commit(struct px_session *s, size_t n);
/* The client's output is at high water: producers stop. */
int sess_client_full(struct px_session *s);

/* Sends what is queued on both legs and applies the read policy. */
void sess_flush(struct px_session *s);
/* Re-arms the session timer for the nearest deadline. */
void sess_arm(struct px_session *s);

/* Ends the session now / once the client has been sent what is queued
 * (the upstream is closed without QUIT either way). Idempotent. */
void sess_close(struct px_session *s, const char *reason);
void sess_finish(struct px_session *s, const char *reason);

/* Events. */
/* The queue may move (commands queued, answers done): dispatch, flush,
 * re-arm. */
void sess_kick(struct px_session *s);
void sess_on_client_gone(struct px_session *s, const char *reason);
void sess_on_client_tls(struct px_session *s);
void sess_on_client_low(struct px_session *s);
void sess_on_connected(struct px_session *s); /* greeting is due */
void sess_on_up_ready(struct px_session *s);  /* greeting relayed */
void sess_on_status(struct px_session *s, const struct px_fr_out *o);
void sess_on_cont(struct px_session *s, const char *p, size_t n);
void sess_on_body(struct px_session *s, const char *p, size_t n);
void sess_on_line(struct px_session *s, const char *p, size_t n);
void sess_on_end(struct px_session *s);
void sess_on_answer_done(struct px_session *s); /* hold.c: sent */
void sess_on_up_failed(struct px_session *s, const char *reason,
                       const char *client_msg);
void sess_on_up_low(struct px_session *s);

/* ---- client.c ----------------------------------------------------------- */

extern const struct px_conn_ops px_client_ops;
/* Starts TLS toward the client (implicit listener, or right after the
 * +OK to STLS). Returns 0, or a negative code after closing the session. */
int cli_start_tls(struct px_session *s);
/* The answer to an AUTH, or the head command, is complete: the client
 * leg takes lines again. */
void cli_resume(struct px_session *s);
/* A SASL challenge went to the client: its next line is SASL data. */
void cli_sasl_line(struct px_session *s);
/* Rewrites one CAPA line of the upstream's for this client, and ends the
 * list with what this listener offers. */
void cli_capa_line(struct px_session *s, const char *p, size_t n);
void cli_capa_end(struct px_session *s);
int cli_secure(const struct px_session *s);

/* ---- upstream.c --------------------------------------------------------- */

extern const struct px_conn_ops px_upstream_ops;
/* Tries the next address of the current server, then the next server;
 * when none is left, sess_on_up_failed(). */
void up_connect(struct px_session *s);
/* A deadline of the connecting phase passed: drop this attempt. */
void up_connect_timeout(struct px_session *s);
void up_tls_failed(struct px_session *s, const char *why);
/* Sends queued commands (the window allows) and points the framer at the
 * head's answer. */
void up_dispatch(struct px_session *s);
void format_addr(const struct sockaddr *sa, char *out, size_t cap);

/* ---- hold.c ------------------------------------------------------------- */

/* The +OK of RETR or TOP on a filtered listener: hold it. */
void hold_start(struct px_session *s, const struct px_fr_out *o,
                const struct px_cmdq_ent *e);
void hold_body(struct px_session *s, const char *p, size_t n);
/* The body is complete: the chain runs. */
void hold_end(struct px_session *s);
/* The client's output went below low water: send more of the verdict. */
void hold_emit(struct px_session *s);
/* Whether a held message is past its capture (the upstream owes nothing
 * meanwhile), and whether one is being sent. */
int hold_blocks_upstream(const struct px_session *s);
int hold_emitting(const struct px_session *s);
/* When the next keep-alive line is due (UINT64_MAX: none), and sending it. */
uint64_t hold_keepalive_due(const struct px_session *s);
void hold_keepalive(struct px_session *s);
/* The session closed: a job not yet in the pool is not started. The held
 * message itself stays until the session is freed. */
void hold_cancel(struct px_session *s);
/* The held message is let go (sess_finish, and the session's free; a job
 * already in the pool finishes first and frees it). */
void hold_drop(struct px_session *s);

#endif
