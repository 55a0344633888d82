/* conn.h - one leg of a session: a TCP stream, optionally TLS, with a
 * bounded input buffer and an output queue with watermarks.
 *
 * conn.c is the only code that reads from or writes to a socket, accepts or
 * connects. It keeps one uv_write_t in flight per leg; bytes queued
 * meanwhile wait in out and go in the next write. The leg is read all the
 * time unless its owner pauses it: a peer's hang-up is then seen at once,
 * whatever the owner is waiting for. Bytes the owner cannot take yet stay
 * in the leg's input buffer, which grows on demand up to in_max; a peer
 * that sends more than that is failed with PX_EINPUT.
 *
 * Output above high water makes px_conn_over() true; the owner stops
 * producing for this leg (and reading the leg that feeds it) until the
 * low() callback says the queue fell below low water.
 *
 * The owner (the session) learns about everything through px_conn_ops and
 * keeps its reference count right through hold/release: every callback
 * libuv still owes on this leg holds one reference.
 */
#ifndef PX_CONN_H
#define PX_CONN_H

#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "tls.h"

/* Default output watermarks. Without them a slow reader would make the
 * proxy hold a whole message. */
#define PX_HIGH_WATER (256 * 1024)
#define PX_LOW_WATER  (64 * 1024)

/* At most this many blocks go into one uv_write (1 MiB with 32 KiB). */
#define PX_WRITE_MAX_BLKS 32

struct px_conn;

/* The outcome of px_conn_connect: 0, or a UV_E* code (UV_ECANCELED when
 * the leg was closed meanwhile). */
typedef void (*px_conn_connect_cb)(struct px_conn *c, int status);

struct px_conn_ops {
  /* Bytes arrived: p[0..n). Returns how many the owner took; the rest
   * stays in the input buffer and is offered again, first, with the next
   * bytes or at px_conn_replay(). p is valid only during the call. */
  size_t (*data)(struct px_conn *c, const char *p, size_t n);
  /* The leg ended or failed: UV_EOF, PX_ETLS, PX_EINPUT, a read or write
   * error. Reading has stopped; the owner decides the rest. */
  void (*fail)(struct px_conn *c, int err);
  /* A write completed (px_conn_take_done says how much went out). */
  void (*sent)(struct px_conn *c);
  /* The output queue fell below low water after it had passed high. */
  void (*low)(struct px_conn *c);
  /* The TLS handshake on this leg completed (px_conn_start_tls). */
  void (*tls_ready)(struct px_conn *c);
  /* The handle is closed; called before the matching release. */
  void (*closed)(struct px_conn *c);
  void (*hold)(struct px_conn *c);
  void (*release)(struct px_conn *c);
};

struct px_conn {
  uv_tcp_t tcp;
  uv_write_t wreq;
  uv_connect_t creq;
  px_conn_connect_cb on_connect;
  struct px_blk *wchain; /* blocks owned by the write in flight */
  size_t wbytes;         /* their bytes */
  struct px_buf out;     /* queued, not yet given to libuv (plaintext) */
  struct px_tls *tls;    /* NULL: plaintext */
  struct px_buf enc;     /* TLS: bytes for the wire, not yet given to libuv */
  const struct px_conn_ops *ops;
  void *owner;
  char *slab; /* the worker's shared read buffer */
  size_t slabsz;
  char *in; /* bytes the owner has not taken yet, while there are any */
  size_t inlen, incap;
  size_t in_max; /* the most kept in `in`; more fails the leg */
  size_t high, low;
  unsigned open : 1;     /* tcp initialized and not yet closed */
  unsigned reading : 1;  /* uv_read_start is in force */
  unsigned paused : 1;   /* the owner asked for no reads */
  unsigned ended : 1;    /* the stream failed or ended: no more reads */
  unsigned writing : 1;  /* a uv_write is in flight */
  unsigned over : 1;     /* output passed high water; low() is owed */
  unsigned wipe_in : 1;  /* input may carry passwords: wiped after use
                            (output: px_buf_set_wipe on out) */
  unsigned delivering : 1;
  unsigned again : 1; /* px_conn_replay() during a delivery */
  uint64_t bytes_in, bytes_out;
  size_t wdone; /* bytes written and not yet taken by the owner */
};

/* Initializes c's handle on loop. Holds one reference until closed. Reads
 * land in slab, which the worker shares among its sessions: data() must
 * copy what it keeps. Returns 0 or a UV_E* code (nothing held then). */
int px_conn_init(struct px_conn *c, uv_loop_t *loop,
                 const struct px_conn_ops *ops, void *owner, char *slab,
                 size_t slabsz);

/* Accepts a pending connection of server onto c, with TCP_NODELAY. */
int px_conn_accept(struct px_conn *c, uv_stream_t *server);

/* Connects c to sa; cb gets the outcome. One reference is held until
 * then. Returns 0 or a UV_E* code (cb is not called then). */
int px_conn_connect(struct px_conn *c, const struct sockaddr *sa,
                    px_conn_connect_cb cb);

/* Idempotent. Pending writes complete with UV_ECANCELED. */
void px_conn_close(struct px_conn *c);

/* Reads go on unless paused; a paused leg does not see its peer's EOF
 * until resumed, so only output pressure pauses a leg. Start begins the
 * reads the first time. Returns 0 or a UV_E* code. */
int px_conn_start(struct px_conn *c);
int px_conn_pause(struct px_conn *c, int paused);

/* Offers the buffered input to data() again (the owner can take more
 * now). Safe to call from inside data(): the offer is then repeated once
 * that call returns. */
void px_conn_replay(struct px_conn *c);

/* Queues bytes; px_conn_flush() sends them. Returns 0 or UV_ENOMEM. */
int px_conn_write(struct px_conn *c, const void *p, size_t n);

/* Room for at least min (<= PX_BLK_SIZE) bytes at the end of the output
 * queue, its size in *avail; NULL when memory is short. commit() then
 * says how much was written there. For codecs that write in place. */
char *px_conn_reserve(struct px_conn *c, size_t min, size_t *avail);
void px_conn_commit(struct px_conn *c, size_t n);

/* Sends queued bytes unless a write is in flight: what the socket takes at
 * once is written now (no callback follows for it), the rest in one
 * uv_write. Returns 0 or a UV_E* code from uv_write. */
int px_conn_flush(struct px_conn *c);

/* Bytes that reached the kernel since the last call (for counters and
 * the idle deadline). */
size_t px_conn_take_done(struct px_conn *c);

/* Puts TLS on the leg: what is queued already goes out as it is, every
 * byte after it through t (which c owns from now on, freed at close). A
 * client-side t starts its handshake at once. Returns 0, or a negative code
 * after which the caller closes the leg. Bytes the peer sent before this
 * call must have been taken by the owner (the input buffer is empty). */
int px_conn_start_tls(struct px_conn *c, struct px_tls *t);

/* Queues TLS close_notify, if the leg has TLS, for the next flush. */
void px_conn_tls_close(struct px_conn *c);

/* Bytes queued toward the peer and not yet acknowledged by libuv. The TLS
 * write BIO is drained after every call, so it holds nothing here. */
static inline size_t px_conn_pending(const struct px_conn *c)
{
  return c->out.len + c->enc.len + c->wbytes;
}

/* Output at or above high water: stop producing for this leg. Marks the
 * leg so that low() follows when it drains. */
int px_conn_over(struct px_conn *c);

#endif
