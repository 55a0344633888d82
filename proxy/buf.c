/* buf.c - block byte queue. See buf.h. */
#include "buf.h"

#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <uv.h>

/* Blocks freed on a thread are kept for reuse by that thread, up to this
 * many: a relay in full flow then allocates nothing, and the allocator does
 * not hand pages back and fault them in again for every write. */
#define PX_BLK_CACHE 64

static __thread struct px_blk *blk_cache;
static __thread unsigned blk_cached;

static struct px_blk *blk_alloc(void)
{
  struct px_blk *k = blk_cache;

  if (k != NULL) {
    blk_cache = k->next;
    blk_cached--;
    return k;
  }
  return malloc(sizeof *k);
}

static void blk_free(struct px_blk *k)
{
  /* Before the cache too: the next owner of a cached block may be the
   * client leg, and a cached block outlives the session. */
  if (k->wipe) {
    OPENSSL_cleanse(k->data, k->len);
    k->wipe = 0;
  }
  if (blk_cached < PX_BLK_CACHE) {
    k->next = blk_cache;
    blk_cache = k;
    blk_cached++;
    return;
  }
  free(k);
}

void px_blk_cache_drain(void)
{
  while (blk_cache != NULL) {
    struct px_blk *k = blk_cache;
    blk_cache = k->next;
    free(k);
  }
  blk_cached = 0;
}

/* Empties b's bookkeeping; its mark stays. */
static void reset(struct px_buf *b)
{
  b->head = b->tail = NULL;
  b->len = 0;
}

void px_buf_init(struct px_buf *b)
{
  reset(b);
  b->wipe = 0;
}

void px_buf_set_wipe(struct px_buf *b, int on)
{
  b->wipe = on != 0;
  if (on)
    for (struct px_blk *k = b->head; k != NULL; k = k->next)
      k->wipe = 1;
}

static struct px_blk *add_block(struct px_buf *b)
{
  struct px_blk *k = blk_alloc();

  if (k == NULL)
    return NULL;
  k->next = NULL;
  k->off = k->len = 0;
  k->wipe = b->wipe;
  if (b->tail != NULL)
    b->tail->next = k;
  else
    b->head = k;
  b->tail = k;
  return k;
}

char *px_buf_reserve(struct px_buf *b, size_t min, size_t *avail)
{
  struct px_blk *k = b->tail;

  if (k == NULL || PX_BLK_SIZE - k->len < min) {
    k = add_block(b);
    if (k == NULL)
      return NULL;
  }
  *avail = PX_BLK_SIZE - k->len;
  return k->data + k->len;
}

void px_buf_commit(struct px_buf *b, size_t n)
{
  b->tail->len += n;
  b->len += n;
}

int px_buf_append(struct px_buf *b, const void *p, size_t n)
{
  const char *s = p;
  struct px_blk *k = b->tail, *first = NULL, *last = NULL;
  size_t room = k != NULL ? PX_BLK_SIZE - k->len : 0;

  /* Every block the bytes need is taken before any byte is queued: on
   * failure b is as it was, not holding a prefix of p that a retry would
   * send twice. */
  for (size_t more = n > room ? n - room : 0; more > 0;) {
    struct px_blk *nk = blk_alloc();
    if (nk == NULL) {
      px_blk_free_chain(first);
      return UV_ENOMEM;
    }
    nk->next = NULL;
    nk->off = nk->len = 0;
    nk->wipe = b->wipe;
    if (last != NULL)
      last->next = nk;
    else
      first = nk;
    last = nk;
    more -= more < PX_BLK_SIZE ? more : PX_BLK_SIZE;
  }
  if (first != NULL) {
    if (b->tail != NULL)
      b->tail->next = first;
    else
      b->head = first;
    b->tail = last;
  }
  if (room == 0)
    k = first;
  b->len += n;
  while (n > 0) {
    size_t take = PX_BLK_SIZE - k->len < n ? PX_BLK_SIZE - k->len : n;
    memcpy(k->data + k->len, s, take);
    k->len += take;
    s += take;
    n -= take;
    k = k->next;
  }
  return 0;
}

struct px_blk *px_buf_take(struct px_buf *b, unsigned max)
{
  struct px_blk *first = b->head, *last = NULL, *k = b->head;

  for (unsigned i = 0; k != NULL && i < max; i++) {
    b->len -= k->len - k->off;
    last = k;
    k = k->next;
  }
  if (last == NULL)
    return NULL;
  last->next = NULL;
  b->head = k;
  if (k == NULL)
    b->tail = NULL;
  return first;
}

void px_blk_free_chain(struct px_blk *c)
{
  while (c != NULL) {
    struct px_blk *next = c->next;
    blk_free(c);
    c = next;
  }
}

void px_buf_consume(struct px_buf *b, size_t n)
{
  while (n > 0) {
    struct px_blk *k = b->head;
    size_t have = k->len - k->off;

    if (n < have) {
      k->off += n;
      b->len -= n;
      return;
    }
    b->len -= have;
    n -= have;
    b->head = k->next;
    if (b->head == NULL)
      b->tail = NULL;
    k->next = NULL;
    px_blk_free_chain(k);
  }
}

void px_buf_move(struct px_buf *dst, struct px_buf *src)
{
  if (src->head == NULL)
    return;
  if (dst->wipe)
    for (struct px_blk *k = src->head; k != NULL; k = k->next)
      k->wipe = 1;
  if (dst->tail != NULL)
    dst->tail->next = src->head;
  else
    dst->head = src->head;
  dst->tail = src->tail;
  dst->len += src->len;
  reset(src);
}

void px_buf_clear(struct px_buf *b)
{
  px_blk_free_chain(b->head);
  reset(b);
}
