/* conn.c - a TCP leg with one write in flight. See conn.h. */
#include "conn.h"

#include <assert.h>

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct px_conn *c = h->data;

  (void)suggested;
  /* Safe to share: libuv calls read_cb right after, and read() copies
   * whatever it keeps before returning. */
  buf->base = c->slab;
  buf->len = c->slabsz;
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

/* Ciphertext arrived in the slab: feed it, advance the handshake, and hand
 * every plaintext byte it decrypts to the owner. Everything decryptable is
 * delivered now, even if the owner stops reading meanwhile: what one read
 * brought is bounded by the slab, and nothing is left behind in OpenSSL
 * that no later read event would come for. */
/* Ciphertext is fed to OpenSSL in slices of about a record, each drained
 * before the next: its read buffer then stays near one record however
 * large the read. The plaintext goes to the slab, behind the slice. */
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
    c->ops->read(c, NULL, rc);
    goto out;
  }
  if (!px_tls_done(t)) {
    rc = px_tls_handshake(t);
    if (take_tls_out(c) < 0)
      rc = UV_ENOMEM;
    if (rc < 0) {
      /* Let an alert go out before the owner closes the leg. */
      px_conn_flush(c);
      c->ops->read(c, NULL, rc);
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
      c->ops->read(c, NULL, m);
      goto out;
    }
    c->ops->read(c, c->slab, m);
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
  if (nread > 0) {
    c->bytes_in += (uint64_t)nread;
    if (c->tls != NULL)
      tls_input(c, (size_t)nread);
    else
      c->ops->read(c, c->slab, nread);
    return;
  }
  px_conn_read_stop(c);
  c->ops->read(c, NULL, nread);
}

static void close_cb(uv_handle_t *h)
{
  struct px_conn *c = h->data;

  px_buf_clear(&c->out);
  px_buf_clear(&c->enc);
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
  c->open = 1;
  c->reading = 0;
  c->writing = 0;
  c->bytes_in = c->bytes_out = 0;
  ops->hold(c);
  return 0;
}

void px_conn_close(struct px_conn *c)
{
  if (!c->open)
    return;
  c->open = 0;
  c->reading = 0;
  uv_close((uv_handle_t *)&c->tcp, close_cb);
}

int px_conn_read_start(struct px_conn *c)
{
  int rc;

  if (!c->open || c->reading)
    return 0;
  rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
  if (rc == 0)
    c->reading = 1;
  return rc;
}

void px_conn_read_stop(struct px_conn *c)
{
  if (!c->open || !c->reading)
    return;
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
}

int px_conn_write(struct px_conn *c, const void *p, size_t n)
{
  return px_buf_append(&c->out, p, n);
}

static void write_cb(uv_write_t *req, int status)
{
  struct px_conn *c = req->data;

  px_blk_free_chain(c->wchain);
  c->wchain = NULL;
  c->wdone = status == 0 ? c->wbytes : 0;
  c->bytes_out += c->wdone;
  c->wbytes = 0;
  c->writing = 0;
  c->ops->written(c, status);
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
