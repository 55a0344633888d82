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

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
  struct px_conn *c = st->data;

  (void)buf;
  if (nread == 0)
    return; /* EAGAIN, not EOF */
  if (nread > 0) {
    c->bytes_in += (uint64_t)nread;
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

int px_conn_flush(struct px_conn *c)
{
  uv_buf_t bufs[PX_WRITE_MAX_BLKS];
  unsigned n = 0;
  int rc;

  if (!c->open || c->writing || c->out.len == 0)
    return 0;
  c->wchain = px_buf_take(&c->out, PX_WRITE_MAX_BLKS);
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
