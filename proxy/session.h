/* session.h - one client, its upstream, and the POP3 dialogue between. */
#ifndef PX_SESSION_H
#define PX_SESSION_H

#include "worker.h"

/* Accepts one pending connection from server (a listener of w for l) and
 * starts its session. Loop thread only. Returns 0 or a UV_E* code when
 * nothing could be accepted. */
int px_session_accept(struct px_worker *w, struct px_lrt *l,
                      uv_stream_t *server);

/* Ends a session at once (shutdown timeout): no more bytes either way, the
 * upstream closed without QUIT. Idempotent. */
void px_session_abort(struct px_session *s, const char *reason);

/* The next session in the worker's list, for walking it. */
struct px_session *px_session_next(const struct px_session *s);

#endif
