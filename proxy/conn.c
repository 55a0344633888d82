/* conn.c - a TCP leg with one write in flight, a bounded input buffer and
 * output watermarks. See conn.h. */
#include "conn.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "px.h"

_Static_assert(PX_EOF == UV_EOF, "tls.c reports the end of a stream as UV_EOF");
_Static_assert(-ENOMEM == UV_ENOMEM, "tls.c reports -ENOMEM as UV_ENOMEM");

/* The input buffer starts this small and doubles as needed: a session
 * that sent one byte without CRLF must not reserve a whole read's worth. */
#define PX_IN_MIN 512

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct px_conn *c = h->data;

  (void)suggested;
  /* Safe to share: libuv calls read_cb right after, and data() copies
   * whatever it keeps before returning. */
  buf->base = c->slab;
  buf->len = c->slabsz;
}

static void drop_in(struct px_conn *c)
{
  if (c->in != NULL) {
    OPENSSL_cleanse(c->in, c->incap);
    free(c->in);
  }
  c->in = NULL;
  c->inlen = c->incap = 0;
}

/* Keeps p[0..n) behind what is buffered. Returns 0, UV_ENOMEM, or
 * PX_EINPUT past in_max. */
static int keep_in(struct px_conn *c, const char *p, size_t n)
{
  if (n == 0)
    return 0;
  if (n > c->in_max - c->inlen)
    return PX_EINPUT;
  if (c->inlen + n > c->incap) {
    size_t cap = c->incap ? c->incap : PX_IN_MIN;
    char *nb;
    while (cap < c->inlen + n)
      cap *= 2;
    if (cap > c->in_max)
      cap = c->in_max;
    nb = malloc(cap);
    if (nb == NULL)
      return UV_ENOMEM;
    if (c->in != NULL) {
      memcpy(nb, c->in, c->inlen);
      OPENSSL_cleanse(c->in, c->incap);
      free(c->in);
    }
    c->in = nb;
    c->incap = cap;
  }
  memcpy(c->in + c->inlen, p, n);
  c->inlen += n;
  return 0;
}

/* Offers the buffered input until the owner takes no more. */
static void offer_in(struct px_conn *c)
{
  do {
    size_t used;
    c->again = 0;
    if (c->inlen == 0)
      return;
    used = c->ops->data(c, c->in, c->inlen);
    if (!c->open || c->in == NULL)
      return;
    if (used >= c->inlen) {
      drop_in(c);
      return;
    }
    if (used > 0) {
      memmove(c->in, c->in + used, c->inlen - used);
      OPENSSL_cleanse(c->in + c->inlen - used, used);
      c->inlen -= used;
    }
  } while (c->again);
}

static int apply_reading(struct px_conn *c);

static void fail(struct px_conn *c, int err)
{
  c->ended = 1;
  apply_reading(c);
  c->ops->fail(c, err);
}

/* Bytes from the peer (plaintext) in p[0..n): straight to the owner when
 * nothing waits before them, else behind what does. */
static void deliver(struct px_conn *c, char *p, size_t n)
{
  int rc = 0;

  c->delivering = 1;
  c->again = 0;
  if (c->inlen == 0) {
    size_t used = c->ops->data(c, p, n);
    if (c->open && used < n)
      rc = keep_in(c, p + used, n - used);
    /* The owner moved on during the call and can take more now. */
    if (c->open && rc == 0 && c->again)
      offer_in(c);
  } else {
    rc = keep_in(c, p, n);
    if (c->open && rc == 0)
      offer_in(c);
  }
  c->delivering = 0;
  if (c->wipe_in)
    OPENSSL_cleanse(p, n);
  if (c->open && rc < 0)
    fail(c, rc);
}

/* Moves what OpenSSL wrote (records, alerts, tickets) to the wire queue.
 * Called after every TLS call. */
static int take_tls_out(struct px_conn *c)
{
  while (px_tls_pending_out(c->tls) > 0) {
    size_t avail, n;
    char *dst = px_buf_reserve(&c->enc, 1, &avail);
    if (dst == NULL)
      return UV_ENOMEM;
    n = px_tls_take_out(c->tls, dst, avail);
    px_buf_commit(&c->enc, n);
  }
  return 0;
}

/* Ciphertext is fed to OpenSSL in slices of about a record, each drained
 * before the next: its read buffer then stays near one record however
 * large the read. The plaintext goes to the slab, behind the slice.
 * Everything decryptable is delivered now: what one read brought is
 * bounded by the slab, and nothing is left in OpenSSL that no later read
 * event would come for. */
#define PX_TLS_FEED_SLICE (17 * 1024)

static void tls_input(struct px_conn *c, size_t n)
{
  struct px_tls *t = c->tls;
  size_t fed = 0;
  int rc;

  c->ops->hold(c);
next_slice : {
  size_t slice = n - fed < PX_TLS_FEED_SLICE ? n - fed : PX_TLS_FEED_SLICE;
  rc = px_tls_feed(t, c->slab + fed, slice);
  fed += slice;
}
  if (rc < 0) {
    fail(c, rc);
    goto out;
  }
  if (!px_tls_done(t)) {
    rc = px_tls_handshake(t);
    if (take_tls_out(c) < 0)
      rc = UV_ENOMEM;
    if (rc < 0) {
      /* Let an alert go out before the owner closes the leg. */
      px_conn_flush(c);
      fail(c, rc);
      goto out;
    }
    if (rc == 0) {
      px_conn_flush(c);
      if (fed < n)
        goto next_slice;
      goto out;
    }
    c->ops->tls_ready(c);
    if (!c->open || c->tls != t)
      goto out;
  }
  for (;;) {
    /* Plaintext lands in the slab before the unfed ciphertext: a slice's
     * plaintext is never longer than the slice. */
    ssize_t m = px_tls_read(t, c->slab, fed);
    if (take_tls_out(c) < 0)
      m = UV_ENOMEM;
    if (m == 0)
      break;
    if (m < 0) {
      fail(c, (int)m);
      goto out;
    }
    deliver(c, c->slab, (size_t)m);
    if (!c->open || c->tls != t)
      goto out;
  }
  if (fed < n)
    goto next_slice;
  px_conn_flush(c); /* tickets, KeyUpdate answers */
  if (px_conn_pending(c) == 0)
    px_tls_trim(t);
out:
  c->ops->release(c);
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
  struct px_conn *c = st->data;

  (void)buf;
  if (nread == 0)
    return; /* EAGAIN, not EOF */
  if (nread < 0) {
    fail(c, (int)nread);
    return;
  }
  c->bytes_in += (uint64_t)nread;
  if (c->tls != NULL) {
    tls_input(c, (size_t)nread);
  } else {
    c->ops->hold(c);
    deliver(c, c->slab, (size_t)nread);
    c->ops->release(c);
  }
}

static void close_cb(uv_handle_t *h)
{
  struct px_conn *c = h->data;

  px_buf_clear(&c->out);
  px_buf_clear(&c->enc);
  drop_in(c);
  px_tls_free(&c->tls);
  c->ops->closed(c);
  c->ops->release(c);
}

int px_conn_init(struct px_conn *c, uv_loop_t *loop,
                 const struct px_conn_ops *ops, void *owner, char *slab,
                 size_t slabsz)
{
  int rc = uv_tcp_init(loop, &c->tcp);

  if (rc < 0)
    return rc;
  c->tcp.data = c;
  c->wchain = NULL;
  c->wbytes = 0;
  px_buf_init(&c->out);
  px_buf_init(&c->enc);
  c->tls = NULL;
  c->ops = ops;
  c->owner = owner;
  c->slab = slab;
  c->slabsz = slabsz;
  c->in = NULL;
  c->inlen = c->incap = 0;
  c->in_max = slabsz;
  c->high = PX_HIGH_WATER;
  c->low = PX_LOW_WATER;
  c->open = 1;
  c->reading = c->paused = c->ended = c->writing = c->over = 0;
  c->delivering = c->again = 0;
  c->wipe_in = 0;
  c->bytes_in = c->bytes_out = 0;
  c->wdone = 0;
  ops->hold(c);
  return 0;
}

int px_conn_accept(struct px_conn *c, uv_stream_t *server)
{
  int rc = uv_accept(server, (uv_stream_t *)&c->tcp);

  if (rc == 0)
    uv_tcp_nodelay(&c->tcp, 1);
  return rc;
}

static void connect_cb(uv_connect_t *req, int status)
{
  struct px_conn *c = req->data;

  if (status == 0 && !c->open)
    status = UV_ECANCELED;
  if (status == 0)
    uv_tcp_nodelay(&c->tcp, 1);
  c->on_connect(c, status);
  c->ops->release(c);
}

int px_conn_connect(struct px_conn *c, const struct sockaddr *sa,
                    px_conn_connect_cb cb)
{
  int rc;

  c->creq.data = c;
  c->on_connect = cb;
  rc = uv_tcp_connect(&c->creq, &c->tcp, sa, connect_cb);
  if (rc == 0)
    c->ops->hold(c);
  return rc;
}

void px_conn_close(struct px_conn *c)
{
  if (!c->open)
    return;
  c->open = 0;
  c->reading = 0;
  uv_close((uv_handle_t *)&c->tcp, close_cb);
}

static int apply_reading(struct px_conn *c)
{
  int rc = 0;

  if (!c->open)
    return 0;
  if ((c->paused || c->ended) && c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  } else if (!c->paused && !c->ended && !c->reading) {
    rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    if (rc == 0)
      c->reading = 1;
  }
  return rc;
}

int px_conn_start(struct px_conn *c)
{
  return apply_reading(c);
}

int px_conn_pause(struct px_conn *c, int paused)
{
  c->paused = paused != 0;
  return apply_reading(c);
}

void px_conn_replay(struct px_conn *c)
{
  if (!c->open || c->inlen == 0)
    return;
  if (c->delivering) {
    c->again = 1;
    return;
  }
  c->ops->hold(c);
  c->delivering = 1;
  offer_in(c);
  c->delivering = 0;
  c->ops->release(c);
}

int px_conn_write(struct px_conn *c, const void *p, size_t n)
{
  return px_buf_append(&c->out, p, n);
}

char *px_conn_reserve(struct px_conn *c, size_t min, size_t *avail)
{
  return px_buf_reserve(&c->out, min, avail);
}

void px_conn_commit(struct px_conn *c, size_t n)
{
  px_buf_commit(&c->out, n);
}

int px_conn_over(struct px_conn *c)
{
  if (!c->open || px_conn_pending(c) < c->high)
    return 0;
  c->over = 1;
  return 1;
}

static void write_cb(uv_write_t *req, int status)
{
  struct px_conn *c = req->data;

  px_blk_free_chain(c->wchain);
  c->wchain = NULL;
  if (status == 0) {
    c->wdone += c->wbytes;
    c->bytes_out += c->wbytes;
  }
  c->wbytes = 0;
  c->writing = 0;
  if (status < 0) {
    if (c->open && status != UV_ECANCELED)
      fail(c, status);
  } else if (c->open) {
    c->ops->sent(c);
    if (c->open && px_conn_flush(c) < 0)
      fail(c, UV_EPIPE);
    if (c->open && c->over && px_conn_pending(c) < c->low) {
      c->over = 0;
      c->ops->low(c);
    }
  }
  c->ops->release(c);
}

/* TLS: encrypts what is queued, a block at a time, draining OpenSSL's
 * output after each so that it never holds more than a block. Needs no
 * socket, so it may run while a write is in flight. */
static int encrypt_queued(struct px_conn *c)
{
  struct px_blk *k;

  while ((k = px_buf_take(&c->out, 1)) != NULL) {
    ssize_t w = k->len > k->off
                    ? px_tls_write(c->tls, k->data + k->off, k->len - k->off)
                    : 0;
    px_blk_free_chain(k);
    if (w < 0)
      return (int)w;
    if (take_tls_out(c) < 0)
      return UV_ENOMEM;
  }
  return 0;
}

/* With nothing in flight, the queue's head goes to the socket right now
 * (uv_try_write): a small answer then costs one write() and nothing more,
 * where a uv_write would also cost a loop iteration for its callback and
 * an epoll_ctl() to drop the POLLOUT interest it armed. What the socket
 * does not take goes in one uv_write, as before; an error of the attempt
 * (EAGAIN, or a real one) is left to that uv_write to meet and report.
 * Not while the leg is over high water: low() must then come from a
 * write callback. */
static void write_now(struct px_conn *c, struct px_buf *wq)
{
  uv_buf_t bufs[PX_WRITE_MAX_BLKS];
  unsigned n = 0;
  int w;

  if (c->over)
    return;
  for (struct px_blk *k = wq->head; k != NULL && n < PX_WRITE_MAX_BLKS;
       k = k->next)
    bufs[n++] = uv_buf_init(k->data + k->off, (unsigned)(k->len - k->off));
  w = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
  if (w <= 0)
    return;
  px_buf_consume(wq, (size_t)w);
  c->bytes_out += (uint64_t)w;
  c->wdone += (size_t)w;
}

size_t px_conn_take_done(struct px_conn *c)
{
  size_t n = c->wdone;

  c->wdone = 0;
  return n;
}

int px_conn_flush(struct px_conn *c)
{
  uv_buf_t bufs[PX_WRITE_MAX_BLKS];
  struct px_buf *wq = &c->out;
  unsigned n = 0;
  int rc;

  if (!c->open || c->writing)
    return 0;
  if (c->tls != NULL) {
    rc = encrypt_queued(c);
    if (rc < 0)
      return rc;
    wq = &c->enc;
  }
  if (wq->len == 0)
    return 0;
  write_now(c, wq);
  if (wq->len == 0)
    return 0;
  c->wchain = px_buf_take(wq, PX_WRITE_MAX_BLKS);
  c->wbytes = 0;
  for (struct px_blk *k = c->wchain; k != NULL; k = k->next) {
    assert(n < PX_WRITE_MAX_BLKS);
    bufs[n++] = uv_buf_init(k->data + k->off, (unsigned)(k->len - k->off));
    c->wbytes += k->len - k->off;
  }
  c->wreq.data = c;
  rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, bufs, n, write_cb);
  if (rc < 0) {
    px_blk_free_chain(c->wchain);
    c->wchain = NULL;
    c->wbytes = 0;
    return rc;
  }
  c->writing = 1;
  c->ops->hold(c);
  return 0;
}

int px_conn_start_tls(struct px_conn *c, struct px_tls *t)
{
  int rc;

  assert(c->tls == NULL);
  /* Plaintext queued so far ("+OK Begin TLS negotiation") goes out as it
   * is, before any TLS record. */
  px_buf_move(&c->enc, &c->out);
  c->tls = t;
  rc = px_tls_handshake(t); /* a client writes its ClientHello now */
  if (take_tls_out(c) < 0)
    return UV_ENOMEM;
  if (rc < 0)
    return rc;
  return px_conn_flush(c);
}

void px_conn_tls_close(struct px_conn *c)
{
  if (c->tls == NULL || !c->open || !px_tls_done(c->tls))
    return;
  if (encrypt_queued(c) < 0)
    return;
  px_tls_shutdown(c->tls);
  take_tls_out(c);
}
