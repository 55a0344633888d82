/* worker.c - an event loop thread: its listeners, sessions and shutdown.
 * See worker.h. */
#include <stdlib.h>

#include "buf.h"
#include "listener.h"
#include "log.h"
#include "session.h"
#include "worker.h"

static void end_worker(struct px_worker *w)
{
  if (w->ended)
    return;
  w->ended = 1;
  uv_close((uv_handle_t *)&w->wake, NULL);
  uv_close((uv_handle_t *)&w->stop_timer, NULL);
}

void px_worker_session_gone(struct px_worker *w)
{
  if (w->stopping && w->nsessions == 0)
    end_worker(w);
}

/* shutdown_timeout has passed: end what is left, without QUIT upstream. */
static void stop_timer_cb(uv_timer_t *t)
{
  struct px_worker *w = t->data;
  struct px_session *s = w->sessions;

  if (s != NULL)
    px_log(PX_LOG_WARN, "ev=shutdown_timeout worker=%u sessions=%u", w->idx,
           w->nsessions);
  while (s != NULL) {
    struct px_session *next = px_session_next(s);
    px_session_abort(s, "shutdown");
    s = next;
  }
}

static void wake_cb(uv_async_t *a)
{
  struct px_worker *w = a->data;
  struct px_gen *g;

  if (w->stopping && __atomic_load_n(&w->abort_requested, __ATOMIC_ACQUIRE)) {
    if (!w->ended)
      uv_timer_start(&w->stop_timer, stop_timer_cb, 0, 0);
    return;
  }
  if (!__atomic_load_n(&w->stop_requested, __ATOMIC_ACQUIRE) || w->stopping)
    return;
  w->stopping = 1;
  px_listener_stop(w);
  if (w->nsessions == 0) {
    end_worker(w);
    return;
  }
  g = px_runtime_gen(w->rt);
  uv_timer_start(&w->stop_timer, stop_timer_cb, g->conf->shutdown_timeout_ms,
                 0);
  px_gen_unref(&g);
}

static void worker_main(void *arg)
{
  struct px_worker *w = arg;
  int rc;

  uv_run(&w->loop, UV_RUN_DEFAULT);
  px_blk_cache_drain();
  rc = uv_loop_close(&w->loop);
  if (rc != 0)
    px_log(PX_LOG_ERROR, "ev=worker_exit worker=%u err=\"%s\"", w->idx,
           uv_strerror(rc));
  __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
  uv_async_send(w->rt->worker_done);
}

int px_worker_start(struct px_worker *w)
{
  int rc = uv_loop_init(&w->loop);

  if (rc < 0)
    return rc;
  w->loop.data = w;
  flt_sched_init(&w->scans, &w->loop, w->scan_quota);
  w->lsn = calloc(w->rt->gen->conf->nlisteners, sizeof *w->lsn);
  if (w->lsn == NULL)
    return UV_ENOMEM;
  uv_async_init(&w->loop, &w->wake, wake_cb);
  w->wake.data = w;
  uv_timer_init(&w->loop, &w->stop_timer);
  w->stop_timer.data = w;
  rc = px_listener_start(w);
  if (rc < 0)
    return rc;
  return uv_thread_create(&w->thread, worker_main, w);
}

void px_worker_stop(struct px_worker *w, int now)
{
  if (now)
    __atomic_store_n(&w->abort_requested, 1, __ATOMIC_RELEASE);
  __atomic_store_n(&w->stop_requested, 1, __ATOMIC_RELEASE);
  uv_async_send(&w->wake);
}
