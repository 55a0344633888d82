/* cmdq.c - FIFO of commands awaiting responses. See cmdq.h. */
#include "cmdq.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

void px_cmdq_init(struct px_cmdq *q, unsigned max)
{
  q->head = q->tail = NULL;
  q->n = 0;
  q->max = max;
}

struct px_cmdq_ent *px_cmdq_push(struct px_cmdq *q, enum px_cq_kind kind,
                                 const char *line, size_t len)
{
  struct px_cmdq_ent *e;

  if (q->n >= q->max)
    return NULL;
  e = malloc(sizeof *e + len);
  if (e == NULL)
    return NULL;
  e->next = NULL;
  e->kind = kind;
  e->id = PX_CMD_COUNT;
  e->shape = PX_SHAPE_SINGLE;
  e->close_after = 0;
  e->start_tls = 0;
  e->sent = 0;
  e->framed = 0;
  e->begun = 0;
  e->len = len;
  if (len > 0)
    memcpy(e->line, line, len);
  if (q->tail != NULL)
    q->tail->next = e;
  else
    q->head = e;
  q->tail = e;
  q->n++;
  return e;
}

void px_cmdq_pop(struct px_cmdq *q)
{
  struct px_cmdq_ent *e = q->head;

  q->head = e->next;
  if (q->head == NULL)
    q->tail = NULL;
  q->n--;
  /* The line may be a PASS or an AUTH exchange: not left behind in freed
   * memory for a later allocation, or a core dump, to show. Lines are
   * short, so every entry is wiped rather than deciding which matter. */
  OPENSSL_cleanse(e->line, e->len);
  free(e);
}

void px_cmdq_clear(struct px_cmdq *q)
{
  while (q->head != NULL)
    px_cmdq_pop(q);
}
