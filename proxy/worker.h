/* worker.h - one event loop thread and everything it owns.
 *
 * Each worker runs its own uv_loop_t with its own SO_REUSEPORT socket per
 * listener; the kernel spreads connections among them. Sessions never move
 * between workers, so nothing on the hot path takes a lock. What all
 * workers share lives in struct px_runtime (runtime.h).
 */
#ifndef PX_WORKER_H
#define PX_WORKER_H

#include <stdint.h>
#include <uv.h>

#include "counters.h"
#include "filter.h"
#include "runtime.h"

/* The size of one read; the worker's slab and scratch buffers. */
#define PX_SLAB_SIZE (256 * 1024)

struct px_session;

struct px_worker {
  unsigned idx;
  struct px_runtime *rt;
  uv_loop_t loop;
  uv_thread_t thread;
  uv_async_t wake;       /* main -> worker: stop */
  uv_timer_t stop_timer; /* shutdown_timeout */
  uv_tcp_t *lsn;         /* one per listener */
  size_t nlsn;           /* how many of them are initialized */
  int ended;             /* wake and stop_timer are closing */
  int stop_requested;    /* set by main before waking */
  int abort_requested;   /* a second signal: end sessions now */
  int done;              /* the loop has ended (read by main) */
  int stopping;
  struct px_session *sessions; /* open sessions, a list */
  unsigned nsessions;
  uint64_t next_sid;
  struct flt_sched scans; /* this worker's share of scan_threads */
  unsigned scan_quota;
  struct px_counters ctr;
  char slab[PX_SLAB_SIZE];        /* every read lands here */
  char scratch[PX_SLAB_SIZE + 1]; /* unstuffed body bytes */
};

int px_worker_start(struct px_worker *w);
/* Thread-safe: asks w to stop accepting and to end when its sessions have
 * ended or shutdown_timeout has passed; with now set, to end them at once.
 * When its loop has ended, w sends rt->worker_done. */
void px_worker_stop(struct px_worker *w, int now);
/* A session of w has closed. */
void px_worker_session_gone(struct px_worker *w);

#endif
