/* spool.c - held messages: memory first, then an unlinked file. */
#include "spool.h"

#include "px.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/* All held messages' memory together, across workers. */
static uint64_t g_ram;

uint64_t px_spool_ram(void)
{
  return __atomic_load_n(&g_ram, __ATOMIC_RELAXED);
}

void px_spool_init(struct px_spool *sp)
{
  memset(sp, 0, sizeof *sp);
  sp->fd = -1;
}

static void drop_mem(struct px_spool *sp)
{
  if (sp->mem == NULL)
    return;
  __atomic_sub_fetch(&g_ram, sp->cap, __ATOMIC_RELAXED);
  free(sp->mem);
  sp->mem = NULL;
  sp->len = sp->cap = 0;
}

static int spill(struct px_spool *sp, const struct px_conf *c)
{
  int fd = open(c->spool_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  int rc;

  if (fd < 0)
    return -errno;
  rc = px_write_all(fd, sp->mem, sp->len);
  if (rc < 0) {
    close(fd);
    return rc;
  }
  drop_mem(sp);
  sp->fd = fd;
  return 0;
}

int px_spool_append(struct px_spool *sp, const struct px_conf *c, const char *p,
                    size_t n)
{
  int rc;

  if (sp->err < 0)
    return sp->err;
  if (sp->fd < 0 && !sp->mem_only && sp->len + n > c->memory_per_message) {
    rc = spill(sp, c);
    if (rc < 0)
      return sp->err = rc;
  } else if (sp->fd < 0 && sp->len + n > sp->cap) {
    size_t want = sp->cap ? sp->cap : 64 * 1024;
    while (want < sp->len + n)
      want *= 2;
    /* Never more than memory_per_message, which len + n fits in here. */
    if (!sp->mem_only && want > c->memory_per_message)
      want = (size_t)c->memory_per_message;
    if (px_spool_ram() + (want - sp->cap) > c->memory_budget) {
      /* Over the budget: to disk, or, where no file can be made, not at
       * all. A full disk never becomes an out-of-memory event. */
      rc = sp->mem_only ? -ENOSPC : spill(sp, c);
      if (rc < 0)
        return sp->err = rc;
    } else {
      char *nm = realloc(sp->mem, want);
      if (nm == NULL)
        return sp->err = -ENOMEM;
      __atomic_add_fetch(&g_ram, want - sp->cap, __ATOMIC_RELAXED);
      sp->mem = nm;
      sp->cap = want;
    }
  }
  if (sp->fd >= 0) {
    rc = px_write_all(sp->fd, p, n);
    if (rc < 0)
      return sp->err = rc;
  } else {
    memcpy(sp->mem + sp->len, p, n);
    sp->len += n;
  }
  sp->size += n;
  return 0;
}

ssize_t px_spool_read(const struct px_spool *sp, uint64_t off, char *buf,
                      size_t cap)
{
  if (off >= sp->size)
    return 0;
  if (sp->fd < 0) {
    size_t n = sp->size - off < cap ? (size_t)(sp->size - off) : cap;
    memcpy(buf, sp->mem + off, n);
    return (ssize_t)n;
  }
  for (;;) {
    ssize_t r = pread(sp->fd, buf, cap, (off_t)off);
    if (r >= 0)
      return r;
    if (errno != EINTR)
      return -errno;
  }
}

void px_spool_free(struct px_spool *sp)
{
  drop_mem(sp);
  if (sp->fd >= 0)
    close(sp->fd);
  px_spool_init(sp);
}
