/* metrics.h - the [popgate] metrics listener (Prometheus text, /ready). */
#ifndef PX_METRICS_H
#define PX_METRICS_H

#include <uv.h>

#include "conf.h"
#include "worker.h"

struct px_metrics {
  uv_tcp_t srv;
  struct px_runtime *rt;
  int open;
};

/* Listens on hp on loop (the main thread's). Returns 0 or a UV_E* code. */
int px_metrics_start(struct px_metrics *m, uv_loop_t *loop,
                     struct px_runtime *rt, const struct px_conf_hostport *hp);

/* Stops accepting; scrapes in progress finish on their own. */
void px_metrics_stop(struct px_metrics *m);

#endif
