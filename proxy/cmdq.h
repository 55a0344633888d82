/* cmdq.h - the FIFO of commands awaiting their responses.
 *
 * A client may pipeline commands (RFC 2449 PIPELINING). Every command the
 * session accepts is queued here in arrival order: commands relayed to the
 * upstream, commands the proxy answers itself (unknown command, STLS on a
 * plain listener...) and commands the proxy originates (the greeting
 * wait). The head decides how the next response is framed; answers reach
 * the client strictly in queue order.
 */
#ifndef PX_CMDQ_H
#define PX_CMDQ_H

#include <stddef.h>

#include "pop3.h"

enum px_cq_kind {
  PX_CQ_RELAY = 0, /* line is sent upstream; the response is relayed */
  PX_CQ_LOCAL,     /* line is the proxy's own complete reply */
  PX_CQ_GREETING,  /* no line; waits for the upstream's greeting */
  PX_CQ_COUNT
};

struct px_cmdq_ent {
  struct px_cmdq_ent *next;
  enum px_cq_kind kind;
  enum px_cmd_id id;   /* PX_CQ_RELAY: the command */
  enum px_shape shape; /* PX_CQ_RELAY: the response's shape */
  int close_after;     /* PX_CQ_LOCAL: close the session after the reply */
  int start_tls; /* PX_CQ_LOCAL: TLS starts right after the reply */
  int sent;            /* RELAY: written upstream; GREETING: connected */
  int framed;          /* the framer is on this entry's answer */
  int begun;           /* part of the answer went to the client */
  size_t len;
  char line[]; /* len bytes, CRLF included; not NUL-terminated */
};

struct px_cmdq {
  struct px_cmdq_ent *head, *tail;
  unsigned n;
  unsigned max; /* px_cmdq_push refuses beyond this many */
};

void px_cmdq_init(struct px_cmdq *q, unsigned max);

/* Appends an entry with a copy of line[0..len). Returns the entry, or NULL
 * when the queue holds max entries already or memory is short. */
struct px_cmdq_ent *px_cmdq_push(struct px_cmdq *q, enum px_cq_kind kind,
                                 const char *line, size_t len);

static inline struct px_cmdq_ent *px_cmdq_head(const struct px_cmdq *q)
{
  return q->head;
}

static inline int px_cmdq_full(const struct px_cmdq *q)
{
  return q->n >= q->max;
}

/* Removes and frees the head, wiping its line first (it may hold a
 * password). The queue must not be empty. */
void px_cmdq_pop(struct px_cmdq *q);

/* Frees every entry, wiping each line as px_cmdq_pop does. */
void px_cmdq_clear(struct px_cmdq *q);

#endif
