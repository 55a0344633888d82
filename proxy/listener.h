/* listener.h - the listening sockets: bound once by the main thread (one
 * SO_REUSEPORT socket per worker), accepted on by each worker's loop. */
#ifndef PX_LISTENER_H
#define PX_LISTENER_H

#include <stddef.h>

#include "runtime.h"
#include "worker.h"

int px_listener_bind_all(struct px_runtime *rt, char *err, size_t errlen);
void px_listener_close_fds(struct px_runtime *rt);
int px_listener_start(struct px_worker *w);
void px_listener_stop(struct px_worker *w);

#endif
