/* spool.h - where a held message waits for its filters: in memory up to
 * memory_per_message (and while all held messages together stay under
 * memory_budget), then in an unlinked file in spool_dir (O_TMPFILE: nothing
 * to clean up after a crash). */
#ifndef PX_SPOOL_H
#define PX_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "conf.h"

struct px_spool {
  char *mem; /* the message while it is in memory */
  size_t len, cap;
  int fd;        /* >= 0 once spilled: the whole message is there */
  uint64_t size; /* bytes held, in memory or in the file */
  int err;       /* a failed write (negative errno); nothing more is kept */
  int mem_only;  /* never spill (the file could not be made): memory up to
                    what the caller allows, within memory_budget */
};

void px_spool_init(struct px_spool *sp);

/* Appends p[0..n). Spills to a file in c->spool_dir when the message or
 * the process's held memory would pass c->memory_per_message or
 * c->memory_budget. Loop thread (the file writes are plain write(2)s to
 * the page cache). Returns 0 or a negative errno, also kept in sp->err. */
int px_spool_append(struct px_spool *sp, const struct px_conf *c, const char *p,
                    size_t n);

/* Reads up to cap bytes at off. Returns the bytes read, 0 at the end, or a
 * negative errno. */
ssize_t px_spool_read(const struct px_spool *sp, uint64_t off, char *buf,
                      size_t cap);

/* Frees the memory or closes (and so deletes) the file. */
void px_spool_free(struct px_spool *sp);

/* Bytes of held messages in memory, process-wide (for metrics). */
uint64_t px_spool_ram(void);

#endif
