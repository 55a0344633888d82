/* hold.c - held messages: capture, the filter chain, keep-alive and
 * emission. See sess.h.
 *
 * On a listener with filters, the +OK of RETR or TOP is held, the body is
 * un-stuffed into a spool (memory, then an unlinked file), and at its end
 * the listener's chain runs as a job in libuv's pool (filters/chain.c).
 * Meanwhile the upstream is not read and the client sees nothing of the
 * message: a failure can still become a clean -ERR. The verdict decides
 * what is sent; the held copy is freed on every path (delivered, refused,
 * client or upstream gone).
 *
 *   CAPTURE --body complete--> SCAN --verdict--> EMIT --"." sent--> freed
 *   CAPTURE, SCAN --session ends--> freed (DROPPED first while a job runs)
 */
#include "sess.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"
#include "log.h"
#include "px.h"
#include "spool.h"

/* From the held +OK on, while the message is still arriving or being
 * checked: the client gets the +OK after this long and then, at the same
 * interval, a header line of popgate's own ("X-Popgate-Wait: checking"):
 * never a byte of the message before its verdict, but enough to keep a
 * client's read timeout (typically 60 s or more) from firing. A tempfail
 * or reject after that cannot be an -ERR any more: the connection is
 * closed without the terminating ".", so the client retries and the
 * message stays on the server. */
#define PX_KEEPALIVE_MS 20000

/* Encoded output produced per emission step: the client leg's watermark
 * bounds what is queued, this bounds one step. */
#define PX_EMIT_CHUNK (64 * 1024)

enum px_hold_st {
  PX_HOLD_CAPTURE = 0, /* reads the body from the upstream into the spool;
                          keep-alive and upstream timeout */
  PX_HOLD_SCAN,        /* the chain's job waits for or runs in the pool;
                          nothing read; keep-alive */
  PX_HOLD_EMIT,        /* writes the verdict as the client keeps up; idle */
  PX_HOLD_DROPPED,     /* the session let go while the job ran: freed by
                          its done callback */
  PX_HOLD_COUNT
};

struct px_hold {
  struct px_session *s;
  enum px_hold_st st;
  char *status; /* the upstream's +OK line, without CRLF */
  size_t statuslen;
  char msgno[16];
  struct px_spool spool;
  int too_big;         /* over max_message_size: not scanned */
  char unscanned[128]; /* why the chain cannot look, when it cannot */
  struct flt_job job;  /* job.out: the outcome */
  uint64_t t_held;     /* uv_now() when the +OK was held */
  unsigned ticks;      /* keep-alive intervals passed */
  unsigned waits;      /* keep-alive lines sent */
  int phase;           /* emission: 0 status, 1 headers, 2 body, 3 end, 4 done */
  uint64_t off;
};

static int all_pass(const struct px_session *s)
{
  return flt_chain_all_pass(
      (const struct px_conf_filter *const *)s->cl->filters, s->cl->nfilters);
}

static void hold_free(struct px_hold *h)
{
  px_spool_free(&h->spool);
  flt_outcome_free(&h->job.out);
  free(h->status);
  free(h);
}

int hold_blocks_upstream(const struct px_session *s)
{
  return s->hold != NULL && s->hold->st != PX_HOLD_CAPTURE;
}

int hold_emitting(const struct px_session *s)
{
  return s->hold != NULL && s->hold->st == PX_HOLD_EMIT;
}

void hold_start(struct px_session *s, const struct px_fr_out *o,
                const struct px_cmdq_ent *e)
{
  struct px_hold *h = calloc(1, sizeof *h);
  const char *sp;

  if (h == NULL || (h->status = malloc(o->n ? o->n : 1)) == NULL) {
    free(h);
    sess_close(s, "out_of_memory");
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
  h->st = PX_HOLD_CAPTURE;
  h->t_held = sess_now(s);
  s->hold = h;
  sess_arm(s);
}

void hold_body(struct px_session *s, const char *p, size_t n)
{
  struct px_hold *h = s->hold;
  const struct px_conf *c = s->gen->conf;
  int rc;

  if (h->spool.err < 0)
    return; /* decided already: what follows is not kept */
  if (!h->too_big && h->spool.size + n > c->max_message_size) {
    h->too_big = 1;
    snprintf(h->unscanned, sizeof h->unscanned,
             "message larger than max_message_size");
    if (!all_pass(s) || h->spool.mem_only) {
      /* Nothing more is kept: it will be -ERR. Memory never holds more
       * than max_message_size of a message, even for on_error = pass. */
      px_spool_free(&h->spool);
      h->spool.err = -EFBIG;
      return;
    }
  }
  rc = px_spool_append(&h->spool, c, p, n);
  if (rc < 0 && h->spool.fd < 0 && !h->spool.mem_only && all_pass(s) &&
      !h->too_big) {
    /* The spool file cannot be made. With on_error = pass the message is
     * delivered unscanned, held in memory: within memory_budget, with
     * every other held message, or not at all. */
    snprintf(h->unscanned, sizeof h->unscanned, "spool_dir: %s", strerror(-rc));
    h->spool.err = 0;
    h->spool.mem_only = 1;
    rc = px_spool_append(&h->spool, c, p, n);
  }
  if (rc < 0)
    px_log(PX_LOG_WARN, "sid=%016" PRIx64 " ev=spool_failed err=\"%s\"", s->id,
           strerror(-rc));
}

/* The outcome is known: count it, log it, then send it. */
static void verdict(struct px_session *s)
{
  struct px_hold *h = s->hold;
  struct flt_outcome *o = &h->job.out;
  enum flt_did v = flt_outcome_did(o);
  const struct px_conf_listener *cl = s->cl;

  for (size_t i = 0; i < cl->nfilters; i++)
    px_fstat_add(&s->w->ctr, cl->filters[i]->name,
                 i < o->ndid ? (enum flt_did)o->did[i] : v);
  if (v != FLT_DID_CLEAN && v != FLT_DID_MODIFIED) {
    char virus[sizeof o->virus * 4], reason[sizeof o->reason * 4];
    s->nverdicts++;
    px_log(PX_LOG_WARN,
           "sid=%016" PRIx64 " ev=verdict filter=%s verdict=%s virus=%s "
           "quarantine=%s msg=%s size=%" PRIu64 " reason=\"%s\"",
           s->id, o->filter[0] ? o->filter : "-", flt_did_names[v],
           o->virus[0] ? px_log_sanitize(o->virus, strlen(o->virus),
                                         sizeof o->virus, virus, sizeof virus)
                       : "-",
           o->quarantine_id[0] ? o->quarantine_id : "-",
           h->msgno[0] ? h->msgno : "-", h->spool.size,
           px_log_quote(o->reason, strlen(o->reason), sizeof o->reason, reason,
                        sizeof reason));
  }
  h->st = PX_HOLD_EMIT;
  h->off = 0;
  h->phase = 0;
  if (h->waits > 0) {
    if (o->v == FLT_REJECT || o->v == FLT_TEMPFAIL) {
      /* The +OK went out already: end without the "." instead of -ERR. */
      sess_finish(s, o->v == FLT_REJECT ? "refused_after_wait"
                                        : "tempfail_after_wait");
      return;
    }
    h->phase = 1; /* the +OK and the wait lines are out */
  }
  hold_emit(s);
}

static void scan_done(struct flt_job *job)
{
  struct px_hold *h = job->arg;
  struct px_session *s = h->s;

  px_fsec_add(&s->w->ctr, job->seconds);
  if (h->st == PX_HOLD_DROPPED)
    hold_free(h); /* the session let it go meanwhile */
  else if (sess_live(s))
    verdict(s);
  /* else the session closed meanwhile: its end frees h */
  sess_unref(&s); /* the job's */
}

void hold_end(struct px_session *s)
{
  struct px_hold *h = s->hold;
  static const char empty[1] = "";

  if (h->spool.err < 0 || (h->too_big && !all_pass(s))) {
    h->job.out.v = FLT_TEMPFAIL;
    snprintf(h->job.out.reason, sizeof h->job.out.reason, "%s",
             h->too_big ? "message larger than max_message_size"
                        : "the spool failed");
    h->st = PX_HOLD_SCAN;
    verdict(s);
    return;
  }
  if (h->unscanned[0]) {
    /* on_error = pass everywhere, and the chain cannot look. */
    flt_chain_unscanned((const struct px_conf_filter *const *)s->cl->filters,
                        s->cl->nfilters, h->unscanned,
                        &h->job.out);
    h->st = PX_HOLD_SCAN;
    verdict(s);
    return;
  }
  h->job.msg.fd = h->spool.fd;
  h->job.msg.size = h->spool.size;
  if (h->spool.fd < 0) {
    /* An empty message is still a message. */
    h->job.msg.mem = h->spool.mem != NULL ? h->spool.mem : empty;
    h->job.msg.len = h->spool.len;
  } else {
    lseek(h->spool.fd, 0, SEEK_SET);
  }
  h->job.set = s->gen->flt;
  h->job.filters = (const struct px_conf_filter *const *)s->cl->filters;
  h->job.nfilters = s->cl->nfilters;
  h->job.sid = s->id;
  h->job.arg = h;
  h->st = PX_HOLD_SCAN;
  sess_ref(s); /* the job's */
  flt_chain_submit(&s->w->scans, &h->job, scan_done);
}

uint64_t hold_keepalive_due(const struct px_session *s)
{
  const struct px_hold *h = s->hold;

  if (h == NULL || (h->st != PX_HOLD_CAPTURE && h->st != PX_HOLD_SCAN))
    return UINT64_MAX;
  return h->t_held + (uint64_t)(h->ticks + 1) * PX_KEEPALIVE_MS;
}

void hold_keepalive(struct px_session *s)
{
  struct px_hold *h = s->hold;

  if (h == NULL || (h->st != PX_HOLD_CAPTURE && h->st != PX_HOLD_SCAN))
    return;
  h->ticks++;
  if (sess_client_full(s))
    return; /* it is not reading: nothing to keep alive */
  if (h->waits++ == 0) {
    px_dot_enc_init(&s->enc);
    if (sess_to_client_line(s, h->status, h->statuslen) < 0)
      return;
    px_cmdq_head(&s->q)->begun = 1; /* failures now close */
  }
  sess_body_out(s, "X-Popgate-Wait: checking\r\n", 26);
  sess_flush(s);
}

/* Sends the verdict, a slice at a time while the client keeps up; called
 * again when the client's output falls below low water. At the end the
 * head's answer is complete. */
void hold_emit(struct px_session *s)
{
  struct px_hold *h = s->hold;
  struct flt_outcome *o = &h->job.out;
  char line[256];
  char *chunk = s->w->scratch;

  while (sess_live(s) && h->phase < 4 && !sess_client_full(s)) {
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
        sess_to_client_str(s, line);
        h->phase = 4;
        break;
      }
      px_dot_enc_init(&s->enc);
      if (o->hdrs == NULL && o->repl == NULL) {
        sess_to_client_line(s, h->status, h->statuslen); /* as it was */
      } else {
        uint64_t size =
            o->hdrslen + (o->repl != NULL ? o->repllen : h->spool.size);
        snprintf(line, sizeof line, "+OK %" PRIu64 " octets\r\n", size);
        sess_to_client_str(s, line);
      }
      h->phase = 1;
      break;
    case 1:
      if (o->hdrs != NULL)
        sess_body_out(s, o->hdrs, o->hdrslen);
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
        sess_finish(s, "spool_error");
        return;
      }
      if (n == 0) {
        h->phase = 3;
        break;
      }
      sess_body_out(s, chunk, (size_t)n);
      h->off += (uint64_t)n;
      break;
    }
    case 3: {
      char end[PX_DOT_END_MAX];
      sess_to_client(s, end, px_dot_encode_end(&s->enc, end));
      h->phase = 4;
      break;
    }
    }
  }
  if (!sess_live(s) || s->hold != h)
    return;
  if (h->phase < 4) {
    sess_flush(s);
    return;
  }
  s->hold = NULL;
  hold_free(h);
  sess_on_answer_done(s);
}

/* A job still waiting for a pool slot leaves the queue (and gives back
 * its session reference; the caller holds another). Returns whether no job
 * is outstanding any more. */
static int cancel_job(struct px_session *s, struct px_hold *h)
{
  if (h->job.q == NULL)
    return 1;
  if (!flt_chain_cancel(&h->job))
    return 0; /* in the pool: scan_done comes */
  sess_unref(&s);
  return 1;
}

void hold_cancel(struct px_session *s)
{
  if (s->hold != NULL)
    cancel_job(s, s->hold);
}

void hold_drop(struct px_session *s)
{
  struct px_hold *h = s->hold;

  if (h == NULL)
    return;
  s->hold = NULL;
  if (!cancel_job(s, h)) {
    h->st = PX_HOLD_DROPPED; /* scan_done frees it */
    return;
  }
  hold_free(h);
}
