/* conn.h - one leg of a session: a TCP stream with a bounded output queue.
 *
 * conn.c is the only code that reads from or writes to a socket. It keeps
 * one uv_write_t in flight per leg; bytes queued meanwhile wait in out and
 * go in the next write. The owner (session.c) learns about reads, finished
 * writes and the close through px_conn_ops, and keeps its reference count
 * right through hold/release: every callback libuv still owes on this leg
 * holds one reference.
 */
#ifndef PX_CONN_H
#define PX_CONN_H

#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "tls.h"

/* Output watermarks. Above PX_HIGH_WATER queued toward a peer, the leg
 * that produces for it stops reading; below PX_LOW_WATER it resumes.
 * Without them a slow reader would make the proxy hold a whole message. */
#define PX_HIGH_WATER (256 * 1024)
#define PX_LOW_WATER  (64 * 1024)

/* At most this many blocks go into one uv_write (1 MiB with 32 KiB). */
#define PX_WRITE_MAX_BLKS 32

struct px_conn;

struct px_conn_ops {
  /* Bytes arrived (n > 0), or the stream ended (n is UV_EOF or another
   * negative code; p is NULL). p is valid only during the call. */
  void (*read)(struct px_conn *c, const char *p, ssize_t n);
  /* A write finished (status 0) or failed. */
  void (*written)(struct px_conn *c, int status);
  /* The handle is closed; called before the matching release. */
  void (*closed)(struct px_conn *c);
  /* The TLS handshake on this leg completed (px_conn_start_tls). */
  void (*tls_ready)(struct px_conn *c);
  void (*hold)(struct px_conn *c);
  void (*release)(struct px_conn *c);
};

struct px_conn {
  uv_tcp_t tcp;
  uv_write_t wreq;
  struct px_blk *wchain; /* blocks owned by the write in flight */
  size_t wbytes;         /* their bytes */
  struct px_buf out;     /* queued, not yet given to libuv (plaintext) */
  struct px_tls *tls;    /* NULL: plaintext */
  struct px_buf enc;     /* TLS: bytes for the wire, not yet given to libuv */
  const struct px_conn_ops *ops;
  void *owner;
  char *slab; /* the worker's shared read buffer */
  size_t slabsz;
  unsigned open : 1; /* tcp initialized and not yet closed */
  unsigned reading : 1;
  unsigned writing : 1;
  uint64_t bytes_in, bytes_out;
  size_t wdone; /* bytes of the write that just finished */
};

/* Initializes c's handle on loop. Holds one reference until closed. Reads
 * land in slab, which the worker shares among its sessions: read() must
 * copy what it keeps. Returns 0 or a UV_E* code (nothing held then). */
int px_conn_init(struct px_conn *c, uv_loop_t *loop,
                 const struct px_conn_ops *ops, void *owner, char *slab,
                 size_t slabsz);

/* Idempotent. Pending writes complete with UV_ECANCELED. */
void px_conn_close(struct px_conn *c);

int px_conn_read_start(struct px_conn *c);
void px_conn_read_stop(struct px_conn *c);

/* Queues bytes; px_conn_flush() sends them. Returns 0 or UV_ENOMEM. */
int px_conn_write(struct px_conn *c, const void *p, size_t n);

/* Starts a write of queued bytes unless one is in flight. Returns 0 or a
 * UV_E* code from uv_write. */
int px_conn_flush(struct px_conn *c);

/* Puts TLS on the leg: what is queued already goes out as it is, every
 * byte after it through t (which c owns from now on, freed at close). A
 * client-side t starts its handshake at once. Returns 0, or a negative code
 * after which the caller closes the leg. Bytes the peer sent before this
 * call are not fed to t: the caller made sure there were none. */
int px_conn_start_tls(struct px_conn *c, struct px_tls *t);

/* Queues TLS close_notify, if the leg has TLS, for the next flush. */
void px_conn_tls_close(struct px_conn *c);

/* Bytes queued toward the peer and not yet acknowledged by libuv. The TLS
 * write BIO is drained after every call, so it holds nothing here. */
static inline size_t px_conn_pending(const struct px_conn *c)
{
  return c->out.len + c->enc.len + c->wbytes;
}

#endif
