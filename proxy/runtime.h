/* runtime.h - what every worker shares: the current configuration
 * generation, the listeners' client counts, the workers themselves.
 *
 * A generation (struct px_gen) is one loaded configuration with its TLS
 * contexts and its filters (the ClamAV engine). It is referenced as one:
 * a session takes the current generation at accept and keeps it to its
 * end; a reload builds the next one off every event loop and swaps it in.
 */
#ifndef PX_RUNTIME_H
#define PX_RUNTIME_H

#include <pthread.h>
#include <sys/socket.h>
#include <uv.h>

#include "conf.h"
#include "filter.h"
#include "tls.h"

struct px_gen {
  int refs; /* any thread */
  struct px_conf *conf;
  struct px_tls_ctxs *tls;
  struct flt_set *flt;
};

/* Loads FILE and builds its TLS contexts and filters (certificates, keys
 * and signature databases are read here). Returns 0, or a negative code
 * with "FILE:LINE: ..." lines in err. Any thread. */
int px_gen_load(const char *path, struct px_gen **out, char *err,
                size_t errlen);
void px_gen_ref(struct px_gen *g);
/* Drops a reference (any thread); NULLs *gp. */
void px_gen_unref(struct px_gen **gp);

struct px_iptab;

/* A listener's state shared by all workers. Reloads keep listeners as
 * they are (same names, same binds), so a listener is known by its index
 * in every configuration generation. */
struct px_lrt {
  size_t idx; /* in px_conf.listeners */
  char *name;
  int *fds;           /* one bound socket per worker */
  pthread_mutex_t mu; /* guards clients and ips */
  unsigned clients;
  struct px_iptab *ips;
};

struct px_worker;

struct px_runtime {
  pthread_mutex_t mu; /* guards gen (the pointer) */
  struct px_gen *gen; /* the current generation */
  struct px_lrt *lrt; /* gen->conf->nlisteners of them */
  struct px_worker *workers;
  unsigned nworkers;
  int stopping;            /* SIGTERM seen: /ready says 503 */
  uv_loop_t *loop;         /* the main thread's */
  uv_async_t *worker_done; /* on main's loop: a worker's loop ended */
  /* A reload in progress (built in the pool, swapped on the main loop). */
  uv_work_t reload_req;
  int reloading;      /* a build is under way */
  int reload_again;   /* another SIGHUP came meanwhile */
  struct px_gen *next;
  char reload_path[4096];
  char reload_err[4096];
};

/* Sets rt up for g (which it references): listener states and workers,
 * not started. Returns 0 or -ENOMEM. */
int px_runtime_init(struct px_runtime *rt, struct px_gen *g);
void px_runtime_free(struct px_runtime *rt);

/* The current generation, with a reference the caller drops. */
struct px_gen *px_runtime_gen(struct px_runtime *rt);

/* Logs each warning line of c (passwords in the clear, unchecked upstream
 * certificates), or prints them to stderr (-t). */
void px_runtime_warn(const struct px_conf *c, int to_stderr);

/* SIGHUP: builds the next generation from the same file in libuv's pool,
 * then swaps it in on rt->loop, logging the outcome; a bad one is refused
 * and the old one kept. A reload asked for during one runs after it. */
void px_runtime_reload(struct px_runtime *rt);

/* Counts a new client of l from sa under cl's limits. Returns 0, or
 * PX_ELIMIT when max_clients or max_clients_per_ip is reached (nothing
 * counted then). Any thread. */
int px_lrt_acquire(struct px_lrt *l, const struct px_conf_listener *cl,
                   const struct sockaddr *sa);
void px_lrt_release(struct px_lrt *l, const struct sockaddr *sa);

struct px_iptab *px_iptab_new(void);
void px_iptab_free(struct px_iptab **tp);

#endif
