/* chain.c - runs a listener's filters over a held message and applies
 * their policies: on_virus (replace, tag, reject), on_error (tempfail,
 * pass) and quarantine_dir. See filter.h.
 *
 * Everything here but flt_set_new/unref runs in a pool thread: it reads
 * the set, the configuration and the message, writes the outcome, and
 * touches nothing else.
 */
#include "filter.h"
#include "px.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *const flt_verdict_names[] = { "pass", "replace", "reject",
                                          "tempfail" };
const char *const flt_did_names[] = { "clean",   "modified", "replace",
                                      "tag",     "reject",   "unscanned",
                                      "tempfail" };
_Static_assert(sizeof flt_did_names / sizeof *flt_did_names == FLT_DID_COUNT,
               "flt_did_names out of sync");
_Static_assert(sizeof flt_verdict_names / sizeof *flt_verdict_names ==
                   FLT_COUNT,
               "flt_verdict_names out of sync");

/* The original headers a notice keeps are looked for in this much of the
 * message: a header block larger than that is not mail worth copying. */
#define FLT_HEADER_SCAN (64 * 1024)
/* One header value copied into a notice, unfolded. */
#define FLT_HEADER_VALUE_MAX 900

struct flt_set {
  int refs;
  size_t n;
  const struct flt_ops **ops; /* per [filter:NAME], in conf order */
  void **state;
  struct px_conf *conf; /* referenced: jobs point into its filters */
};

static void set_free(struct flt_set *s)
{
  for (size_t i = 0; i < s->n; i++)
    if (s->ops[i] != NULL && s->ops[i]->deinit != NULL && s->state[i] != NULL)
      s->ops[i]->deinit(s->state[i]);
  free(s->ops);
  free(s->state);
  px_conf_unref(&s->conf);
  free(s);
}

/* Sets being freed by their own threads (set_free_async). */
static int g_freeing;

static void *set_free_thread(void *arg)
{
  set_free(arg);
  __atomic_sub_fetch(&g_freeing, 1, __ATOMIC_ACQ_REL);
  return NULL;
}

void flt_set_wait_freed(void)
{
  while (__atomic_load_n(&g_freeing, __ATOMIC_ACQUIRE) > 0)
    usleep(1000);
}

/* The last reference may go on an event loop (the last session of an old
 * generation), and freeing a ClamAV engine takes long: a thread of its own
 * does it, so no loop stalls. */
static void set_free_async(struct flt_set *s)
{
  pthread_attr_t attr;
  pthread_t t;
  int heavy = 0;

  for (size_t i = 0; i < s->n; i++)
    heavy |= s->state[i] != NULL;
  if (heavy && pthread_attr_init(&attr) == 0) {
    int rc = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    __atomic_add_fetch(&g_freeing, 1, __ATOMIC_ACQ_REL);
    if (rc == 0)
      rc = pthread_create(&t, &attr, set_free_thread, s);
    pthread_attr_destroy(&attr);
    if (rc == 0)
      return;
    __atomic_sub_fetch(&g_freeing, 1, __ATOMIC_ACQ_REL);
  }
  set_free(s);
}

int flt_set_new(const struct px_conf *c, struct flt_set **out, char *err,
                size_t errlen)
{
  struct flt_set *s = calloc(1, sizeof *s);
  int rc = 0;

  if (errlen > 0)
    err[0] = '\0';
  if (s == NULL)
    return -ENOMEM;
  s->refs = 1;
  s->conf = (struct px_conf *)c;
  px_conf_ref(s->conf);
  s->n = c->nfilters;
  s->ops = calloc(s->n ? s->n : 1, sizeof *s->ops);
  s->state = calloc(s->n ? s->n : 1, sizeof *s->state);
  if (s->ops == NULL || s->state == NULL) {
    set_free(s);
    return -ENOMEM;
  }
  for (size_t i = 0; i < s->n; i++) {
    const struct px_conf_filter *cf = &c->filters[i];
    size_t used = strlen(err);
    s->ops[i] = flt_ops_of(cf->type);
    if (s->ops[i] == NULL) {
      rc = -EINVAL;
      continue;
    }
    /* Each init appends its own lines; all filters are checked. */
    if (s->ops[i]->init != NULL &&
        s->ops[i]->init(c, cf, &s->state[i], err + used, errlen - used) < 0)
      rc = -EINVAL;
  }
  if (rc < 0) {
    set_free(s);
    return rc;
  }
  *out = s;
  return 0;
}

void flt_set_ref(struct flt_set *s)
{
  __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
}

void flt_set_unref(struct flt_set **sp)
{
  struct flt_set *s = *sp;

  *sp = NULL;
  if (s != NULL && __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0)
    set_free_async(s);
}

void flt_outcome_free(struct flt_outcome *o)
{
  free(o->hdrs);
  free(o->repl);
  o->hdrs = o->repl = NULL;
  o->hdrslen = o->repllen = 0;
}

/* ---- helpers ------------------------------------------------------------ */

static int append(char **buf, size_t *len, const char *p, size_t n)
{
  char *nb = realloc(*buf, *len + n + 1);

  if (nb == NULL)
    return -ENOMEM;
  memcpy(nb + *len, p, n);
  *len += n;
  nb[*len] = '\0';
  *buf = nb;
  return 0;
}

static int appendf(char **buf, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int appendf(char **buf, size_t *len, const char *fmt, ...)
{
  char tmp[2048];
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0)
    return -EINVAL;
  return append(buf, len, tmp,
                (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Copies text into out as one header-safe line: printable ASCII, no CR or
 * LF, at most max bytes. */
static void clean_value(const char *p, size_t n, char *out, size_t max)
{
  size_t o = 0;
  int space = 0;

  for (size_t i = 0; i < n && o + 1 < max; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c == '\r' || c == '\n' || c == '\t' || c == ' ') {
      space = o > 0;
      continue;
    }
    if (c < 0x20 || c > 0x7e)
      c = '?';
    if (space && o + 2 < max)
      out[o++] = ' ';
    space = 0;
    out[o++] = (char)c;
  }
  out[o] = '\0';
}

/* Reads up to cap bytes of the start of the message into buf. */
static size_t msg_head(const struct flt_msg *m, char *buf, size_t cap)
{
  if (m->mem != NULL) {
    size_t n = m->len < cap ? m->len : cap;
    memcpy(buf, m->mem, n);
    return n;
  } else {
    ssize_t r = pread(m->fd, buf, cap, 0);
    return r > 0 ? (size_t)r : 0;
  }
}

/* Finds header field name (case-insensitive) in the header block of head
 * and writes its unfolded, cleaned value into out. Returns 1 if found. */
static int find_header(const char *head, size_t n, const char *name, char *out,
                       size_t max)
{
  size_t nl = strlen(name), i = 0;

  while (i < n) {
    size_t eol = i, end;
    if (head[i] == '\r' || head[i] == '\n')
      return 0; /* the blank line: end of the header block */
    while (eol < n && head[eol] != '\n')
      eol++;
    end = eol;
    /* Continuation lines belong to this field. */
    while (end + 1 < n && (head[end + 1] == ' ' || head[end + 1] == '\t')) {
      end++;
      while (end < n && head[end] != '\n')
        end++;
    }
    if (eol - i > nl && strncasecmp(head + i, name, nl) == 0 &&
        head[i + nl] == ':') {
      clean_value(head + i + nl + 1, end - i - nl - 1, out, max);
      return 1;
    }
    i = end + 1;
  }
  return 0;
}

/* ---- quarantine --------------------------------------------------------- */

static int copy_msg(int fd, const struct flt_msg *m)
{
  char buf[65536];
  uint64_t off = 0;

  if (m->mem != NULL)
    return px_write_all(fd, m->mem, m->len);
  while (off < m->size) {
    ssize_t r = pread(m->fd, buf, sizeof buf, (off_t)off);
    int rc;
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return r < 0 ? -errno : -EIO;
    rc = px_write_all(fd, buf, (size_t)r);
    if (rc < 0)
      return rc;
    off += (uint64_t)r;
  }
  return 0;
}

/* Writes m to dir/YYYYMMDD/ID.eml and makes it durable (file and both
 * directories fsynced) before returning 0; the notice that names ID is
 * sent only after that, so a DELE never loses the original. */
static int quarantine(const char *dir, const struct flt_msg *m, uint64_t sid,
                      char *id, size_t idlen, char *err, size_t errlen)
{
  static unsigned seq;
  char day[16], sub[4096], path[4200];
  struct timespec ts;
  struct tm tm;
  int fd, dfd, rc;

  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  strftime(day, sizeof day, "%Y%m%d", &tm);
  snprintf(id, idlen, "%s-%02d%02d%02d-%016" PRIx64 "-%u", day, tm.tm_hour,
           tm.tm_min, tm.tm_sec, sid,
           __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
  snprintf(sub, sizeof sub, "%s/%s", dir, day);
  if (mkdir(sub, 0700) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "quarantine %.96s: %.40s", sub, strerror(errno));
    return -errno;
  }
  snprintf(path, sizeof path, "%s/%s.eml", sub, id);
  fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    snprintf(err, errlen, "quarantine %.96s: %.40s", path, strerror(errno));
    return -errno;
  }
  rc = copy_msg(fd, m);
  if (rc == 0 && fsync(fd) != 0)
    rc = -errno;
  if (close(fd) != 0 && rc == 0)
    rc = -errno;
  if (rc < 0) {
    snprintf(err, errlen, "quarantine %.96s: %.40s", path, strerror(-rc));
    unlink(path);
    return rc;
  }
  /* The new name must survive a crash too. */
  for (int k = 0; k < 2; k++) {
    dfd = open(k == 0 ? sub : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      fsync(dfd);
      close(dfd);
    }
  }
  return 0;
}

/* ---- the notice that replaces an infected message ----------------------- */

/* An RFC 5322 message in place of the infected one: From, To, Date and
 * Message-ID kept, so the client's view of the mailbox stays what it was;
 * Subject marked; the virus and the quarantine id said. */
static int notice(const struct flt_msg *m, const char *filter,
                  const char *virus, const char *qid, char **out,
                  size_t *outlen)
{
  char *head = malloc(FLT_HEADER_SCAN);
  char from[FLT_HEADER_VALUE_MAX] = "", to[FLT_HEADER_VALUE_MAX] = "",
       date[FLT_HEADER_VALUE_MAX] = "", mid[FLT_HEADER_VALUE_MAX] = "",
       subj[FLT_HEADER_VALUE_MAX] = "", vname[160];
  size_t hn, len = 0;
  char *buf = NULL;
  int rc = 0;

  if (head == NULL)
    return -ENOMEM;
  hn = msg_head(m, head, FLT_HEADER_SCAN);
  find_header(head, hn, "From", from, sizeof from);
  find_header(head, hn, "To", to, sizeof to);
  find_header(head, hn, "Date", date, sizeof date);
  find_header(head, hn, "Message-ID", mid, sizeof mid);
  find_header(head, hn, "Subject", subj, sizeof subj);
  free(head);
  clean_value(virus, strlen(virus), vname, sizeof vname);

  if (date[0] == '\0') {
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
  }
  rc |= appendf(&buf, &len, "From: %s\r\n",
                from[0] ? from : "MAILER-DAEMON (popgate)");
  if (to[0])
    rc |= appendf(&buf, &len, "To: %s\r\n", to);
  rc |= appendf(&buf, &len, "Date: %s\r\n", date);
  if (mid[0])
    rc |= appendf(&buf, &len, "Message-ID: %s\r\n", mid);
  rc |= appendf(&buf, &len, "Subject: [virus removed] %s\r\n",
                subj[0] ? subj : "(no subject)");
  rc |= appendf(&buf, &len,
                "MIME-Version: 1.0\r\n"
                "Content-Type: text/plain; charset=us-ascii\r\n"
                "Content-Transfer-Encoding: 7bit\r\n"
                "X-Virus-Status: infected; %s\r\n"
                "\r\n",
                vname);
  rc |= appendf(&buf, &len,
                "This message contained a virus and was not delivered.\r\n"
                "\r\n"
                "  Virus:      %s\r\n"
                "  Found by:   %s\r\n",
                vname, filter);
  if (qid != NULL && qid[0])
    rc |= appendf(&buf, &len,
                  "  Quarantine: %s\r\n"
                  "\r\n"
                  "The original is kept; your mail administrator can "
                  "release it\r\nwith this quarantine id.\r\n",
                  qid);
  else
    rc |= appendf(&buf, &len, "\r\nThe original was not kept.\r\n");
  rc |= appendf(&buf, &len,
                "\r\nOriginal message:\r\n"
                "  From:    %s\r\n  Subject: %s\r\n  Date:    %s\r\n",
                from[0] ? from : "-", subj[0] ? subj : "-", date);
  if (rc != 0) {
    free(buf);
    return -ENOMEM;
  }
  *out = buf;
  *outlen = len;
  return 0;
}

/* ---- the chain ---------------------------------------------------------- */

static void set_reason(struct flt_outcome *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_reason(struct flt_outcome *o, const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(o->reason, sizeof o->reason, fmt, ap);
  va_end(ap);
}

/* on_error = pass: the message goes out marked as not examined, and why.
 * Returns 0, or -ENOMEM (then it cannot go out at all). */
static int tag_unscanned(struct flt_outcome *o, const char *why)
{
  if (appendf(&o->hdrs, &o->hdrslen, "X-Virus-Status: unscanned; %s\r\n",
              why) < 0)
    return -ENOMEM;
  set_reason(o, "unscanned; %s", why);
  return 0;
}

/* Applies filter cf's finding r to the outcome. Returns what the filter
 * did; *stop says whether the chain ends here. cur is what the next
 * filter will see. */
static enum flt_did apply(const struct px_conf_filter *cf, struct flt_result *r,
                          struct flt_msg *cur, uint64_t sid,
                          struct flt_outcome *o, int *stop)
{
  int modified = r->hdrs != NULL;

  *stop = 0;
  if (r->hdrs != NULL) {
    if (append(&o->hdrs, &o->hdrslen, r->hdrs, r->hdrslen) < 0)
      snprintf(r->error, sizeof r->error, "out of memory");
    free(r->hdrs);
  }
  if (r->repl != NULL && r->error[0] == '\0' && r->virus[0] == '\0') {
    /* A command filter's output becomes the message from here on. */
    free(o->repl);
    o->repl = r->repl;
    o->repllen = r->repllen;
    o->v = FLT_REPLACE;
    cur->mem = o->repl;
    cur->len = o->repllen;
    cur->fd = -1;
    cur->size = o->repllen;
    modified = 1;
  } else {
    free(r->repl);
  }

  if (r->virus[0] != '\0') {
    snprintf(o->filter, sizeof o->filter, "%s", cf->name);
    snprintf(o->virus, sizeof o->virus, "%s", r->virus);
    if (cf->quarantine_dir != NULL) {
      char qerr[160];
      if (quarantine(cf->quarantine_dir, cur, sid, o->quarantine_id,
                     sizeof o->quarantine_id, qerr, sizeof qerr) < 0) {
        /* An original that cannot be kept is not replaced: the message
         * stays on the server until the quarantine works again. */
        o->quarantine_id[0] = '\0';
        o->v = FLT_TEMPFAIL;
        set_reason(o, "%s", qerr);
        *stop = 1;
        return FLT_DID_TEMPFAIL;
      }
    }
    switch (cf->on_virus) {
    case PX_ONV_REJECT:
      o->v = FLT_REJECT;
      set_reason(o, "infected: %s", r->virus);
      *stop = 1;
      return FLT_DID_REJECT;
    case PX_ONV_TAG:
      set_reason(o, "infected; %s", r->virus);
      if (appendf(&o->hdrs, &o->hdrslen, "X-Virus-Status: infected; %s\r\n",
                  r->virus) < 0) {
        o->v = FLT_TEMPFAIL;
        set_reason(o, "out of memory");
        *stop = 1;
        return FLT_DID_TEMPFAIL;
      }
      return FLT_DID_TAG;
    case PX_ONV_REPLACE:
    case PX_ONV_COUNT:
      break;
    }
    {
      char *n = NULL;
      size_t nlen = 0;
      if (notice(cur, cf->name, r->virus, o->quarantine_id, &n, &nlen) < 0) {
        o->v = FLT_TEMPFAIL;
        set_reason(o, "out of memory");
        *stop = 1;
        return FLT_DID_TEMPFAIL;
      }
      /* Headers added for the original do not belong on the notice. */
      free(o->hdrs);
      o->hdrs = NULL;
      o->hdrslen = 0;
      free(o->repl);
      o->repl = n;
      o->repllen = nlen;
      o->v = FLT_REPLACE;
      set_reason(o, "infected: %s", r->virus);
      cur->mem = n;
      cur->len = nlen;
      cur->fd = -1;
      cur->size = nlen;
      return FLT_DID_REPLACE;
    }
  }
  if (r->error[0] != '\0') {
    snprintf(o->filter, sizeof o->filter, "%s", cf->name);
    if (cf->on_error == PX_ONE_PASS && tag_unscanned(o, r->error) == 0)
      return FLT_DID_UNSCANNED;
    o->v = FLT_TEMPFAIL;
    set_reason(o, "%s", r->error);
    *stop = 1;
    return FLT_DID_TEMPFAIL;
  }
  return modified ? FLT_DID_MODIFIED : FLT_DID_CLEAN;
}

void flt_chain_run(struct flt_set *set, const struct px_conf_filter *const *filters,
                   size_t n, const struct flt_msg *orig, uint64_t sid,
                   struct flt_outcome *o)
{
  struct flt_msg cur = *orig; /* what the next filter sees */

  memset(o, 0, sizeof *o);
  o->v = FLT_PASS;
  for (size_t i = 0; i < n; i++) {
    const struct px_conf_filter *cf = filters[i];
    size_t idx = (size_t)(cf - set->conf->filters);
    struct flt_result r;
    enum flt_did did;
    int stop;

    memset(&r, 0, sizeof r);
    set->ops[idx]->run(set->state[idx], cf, &cur, &r);
    /* Names and errors may come from a peer (clamd's reply): they go into
     * headers and logs only as clean single-line text. */
    {
      char tmp[sizeof r.virus];
      clean_value(r.virus, strnlen(r.virus, sizeof r.virus), tmp, sizeof tmp);
      memcpy(r.virus, tmp, sizeof tmp);
      clean_value(r.error, strnlen(r.error, sizeof r.error), tmp, sizeof tmp);
      memcpy(r.error, tmp, sizeof tmp);
    }
    did = apply(cf, &r, &cur, sid, o, &stop);
    if (i < FLT_CHAIN_MAX) {
      o->did[i] = (unsigned char)did;
      o->ndid = i + 1;
    }
    if (stop)
      return;
  }
}

int flt_chain_all_pass(const struct px_conf_filter *const *filters, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (filters[i]->on_error != PX_ONE_PASS)
      return 0;
  return 1;
}

void flt_chain_unscanned(const struct px_conf_filter *const *filters, size_t n,
                         const char *why, struct flt_outcome *o)
{
  enum flt_did did = FLT_DID_UNSCANNED;

  memset(o, 0, sizeof *o);
  o->v = FLT_PASS;
  if (!flt_chain_all_pass(filters, n) || tag_unscanned(o, why) < 0) {
    flt_outcome_free(o);
    o->v = FLT_TEMPFAIL;
    set_reason(o, "%s", why);
    did = FLT_DID_TEMPFAIL;
  }
  /* The chain never saw it: every filter of the list counts it. */
  for (size_t i = 0; i < n && i < FLT_CHAIN_MAX; i++)
    o->did[i] = (unsigned char)did;
  o->ndid = n < FLT_CHAIN_MAX ? n : FLT_CHAIN_MAX;
}

enum flt_did flt_outcome_did(const struct flt_outcome *o)
{
  switch (o->v) {
  case FLT_REJECT:
    return FLT_DID_REJECT;
  case FLT_TEMPFAIL:
    return FLT_DID_TEMPFAIL;
  case FLT_REPLACE:
    return o->virus[0] ? FLT_DID_REPLACE : FLT_DID_MODIFIED;
  case FLT_PASS:
  case FLT_COUNT:
    break;
  }
  if (o->virus[0])
    return FLT_DID_TAG;
  if (strncmp(o->reason, "unscanned", 9) == 0)
    return FLT_DID_UNSCANNED;
  return o->hdrs != NULL ? FLT_DID_MODIFIED : FLT_DID_CLEAN;
}

/* ---- jobs --------------------------------------------------------------- */

void flt_sched_init(struct flt_sched *q, uv_loop_t *loop, unsigned quota)
{
  q->loop = loop;
  q->head = q->tail = NULL;
  q->running = 0;
  q->quota = quota > 0 ? quota : 1;
}

static void job_work_cb(uv_work_t *req)
{
  struct flt_job *j = req->data;
  uint64_t t0 = uv_hrtime();

  flt_chain_run(j->set, j->filters, j->nfilters, &j->msg, j->sid, &j->out);
  j->seconds = (double)(uv_hrtime() - t0) / 1e9;
}

static void sched_next(struct flt_sched *q);

static void job_finish(struct flt_job *j)
{
  flt_set_unref(&j->set);
  j->running = 0;
  j->q = NULL; /* over: nothing to cancel */
  j->done(j);
}

static void job_after_cb(uv_work_t *req, int status)
{
  struct flt_job *j = req->data;
  struct flt_sched *q = j->q;

  q->running--;
  if (status < 0) {
    flt_outcome_free(&j->out);
    memset(&j->out, 0, sizeof j->out);
    j->out.v = FLT_TEMPFAIL;
    set_reason(&j->out, "the scan was cancelled");
  }
  job_finish(j);
  sched_next(q);
}

static void sched_next(struct flt_sched *q)
{
  while (q->head != NULL && q->running < q->quota) {
    struct flt_job *j = q->head;
    int rc;
    q->head = j->next;
    if (q->head == NULL)
      q->tail = NULL;
    j->next = NULL;
    j->running = 1;
    j->req.data = j;
    q->running++;
    rc = uv_queue_work(q->loop, &j->req, job_work_cb, job_after_cb);
    if (rc < 0) {
      q->running--;
      memset(&j->out, 0, sizeof j->out);
      j->out.v = FLT_TEMPFAIL;
      set_reason(&j->out, "cannot queue the scan: %s", uv_strerror(rc));
      job_finish(j);
    }
  }
}

void flt_chain_submit(struct flt_sched *q, struct flt_job *job,
                      flt_done_cb done)
{
  flt_set_ref(job->set);
  job->q = q;
  job->done = done;
  job->next = NULL;
  job->running = 0;
  if (q->tail != NULL)
    q->tail->next = job;
  else
    q->head = job;
  q->tail = job;
  sched_next(q);
}

int flt_chain_cancel(struct flt_job *job)
{
  struct flt_sched *q = job->q;
  struct flt_job **pp, *prev = NULL;

  if (q == NULL || job->running)
    return 0;
  for (pp = &q->head; *pp != NULL; prev = *pp, pp = &(*pp)->next)
    if (*pp == job) {
      *pp = job->next;
      if (q->tail == job)
        q->tail = prev;
      job->next = NULL;
      job->q = NULL;
      flt_set_unref(&job->set);
      return 1;
    }
  return 0;
}
