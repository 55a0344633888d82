/* buf.h - a byte queue made of fixed-size blocks.
 *
 * Output toward a peer is queued here, then whole blocks are handed to
 * libuv by conn.c; a block in flight belongs to its write request until the
 * write callback. The queue itself has no cap: its producers stop at the
 * watermarks of conn.h (uv_read_stop on the other leg), which is what keeps
 * it bounded.
 */
#ifndef PX_BUF_H
#define PX_BUF_H

#include <stddef.h>

/* Big enough that a 50 MiB message is a few thousand writes, small enough
 * that an idle session holds none (the queue frees blocks when drained). */
#define PX_BLK_SIZE (32 * 1024)

struct px_blk {
  struct px_blk *next;
  size_t off; /* first unsent byte */
  size_t len; /* bytes filled */
  char data[PX_BLK_SIZE];
};

struct px_buf {
  struct px_blk *head, *tail;
  size_t len; /* queued bytes, sum of len - off */
};

void px_buf_init(struct px_buf *b);

/* Copies p[0..n) to the tail. Returns 0 or UV_ENOMEM. */
int px_buf_append(struct px_buf *b, const void *p, size_t n);

/* Returns room for at least min (<= PX_BLK_SIZE) bytes at the tail,
 * adding a block if needed, with the room's size in *avail; NULL when
 * memory is short. px_buf_commit() then says how much was written. */
char *px_buf_reserve(struct px_buf *b, size_t min, size_t *avail);
void px_buf_commit(struct px_buf *b, size_t n);

/* Detaches up to max blocks from the head and returns them as a chain
 * (the caller owns it; free it with px_blk_free_chain). */
struct px_blk *px_buf_take(struct px_buf *b, unsigned max);

void px_blk_free_chain(struct px_blk *c);

/* Moves every block of src to the tail of dst, in order. */
void px_buf_move(struct px_buf *dst, struct px_buf *src);

/* Frees every queued block. */
void px_buf_clear(struct px_buf *b);

/* Frees the calling thread's cache of spare blocks (at thread exit). */
void px_blk_cache_drain(void);

#endif
