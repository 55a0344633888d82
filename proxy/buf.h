/* buf.h - a byte queue made of fixed-size blocks.
 *
 * Output toward a peer is queued here, then whole blocks are handed to
 * libuv by conn.c; a block in flight belongs to its write request until the
 * write callback. The queue itself has no cap: its producers stop at the
 * watermarks of conn.h (uv_read_stop on the other leg), which is what keeps
 * it bounded.
 *
 * Secrets: a queue that carries them (the upstream leg's output, where
 * PASS lines and AUTH exchanges go) is marked with px_buf_set_wipe().
 * Each block it takes on is marked too, and a marked block is wiped
 * (OPENSSL_cleanse over data[0..len), the bytes already sent included)
 * before it goes back to the thread's block cache or to free(): when the
 * queue frees it, and when a chain taken for a write is freed after the
 * write. The mark travels in the block, so px_buf_take() and px_buf_move()
 * keep it. Unmarked queues (the client leg's output: message bodies, the
 * fast path) pay one branch per freed block and no wiping.
 */
#ifndef PX_BUF_H
#define PX_BUF_H

#include <stddef.h>

/* Big enough that a 50 MiB message is a few thousand writes, small enough
 * that an idle session holds none (the queue frees blocks when drained). */
#define PX_BLK_SIZE (32 * 1024)

struct px_blk {
  struct px_blk *next;
  size_t off;        /* first unsent byte */
  size_t len;        /* bytes filled */
  unsigned wipe : 1; /* wiped when freed: may hold a secret */
  char data[PX_BLK_SIZE];
};

struct px_buf {
  struct px_blk *head, *tail;
  size_t len;        /* queued bytes, sum of len - off */
  unsigned wipe : 1; /* blocks it takes on are marked; see above */
};

/* An empty, unmarked queue. */
void px_buf_init(struct px_buf *b);

/* Marks b as carrying secrets (on != 0): from now on every block it holds
 * or takes on is wiped when freed, those already queued included. Turning
 * it off leaves blocks already marked as they are. The mark lasts until
 * px_buf_init(); px_buf_clear() and px_buf_move() keep it. */
void px_buf_set_wipe(struct px_buf *b, int on);

/* Copies p[0..n) to the tail. Returns 0, or UV_ENOMEM with b unchanged
 * (no prefix of p queued). */
int px_buf_append(struct px_buf *b, const void *p, size_t n);

/* Returns room for at least min (<= PX_BLK_SIZE) bytes at the tail,
 * adding a block if needed, with the room's size in *avail; NULL, with b
 * unchanged, when memory is short. px_buf_commit() then says how much was
 * written. */
char *px_buf_reserve(struct px_buf *b, size_t min, size_t *avail);
void px_buf_commit(struct px_buf *b, size_t n);

/* Detaches up to max blocks from the head and returns them as a chain
 * (the caller owns it; free it with px_blk_free_chain). Blocks of a marked
 * queue stay marked, so the chain is wiped when freed after the write. */
struct px_blk *px_buf_take(struct px_buf *b, unsigned max);

/* Frees every block of the chain c (may be NULL), wiping marked ones. */
void px_blk_free_chain(struct px_blk *c);

/* Drops the first n queued bytes (written elsewhere); n <= b->len. */
void px_buf_consume(struct px_buf *b, size_t n);

/* Moves every block of src to the tail of dst, in order. When dst is
 * marked, the moved blocks become marked too (dst may append to the last
 * one); blocks from a marked src stay marked. src stays as marked as it
 * was. */
void px_buf_move(struct px_buf *dst, struct px_buf *src);

/* Frees every queued block (wiping marked ones); b keeps its mark. */
void px_buf_clear(struct px_buf *b);

/* Frees the calling thread's cache of spare blocks (at thread exit). */
void px_blk_cache_drain(void);

#endif
