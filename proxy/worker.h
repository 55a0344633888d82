/* worker.h - one event loop thread and everything it owns.
 *
 * Each worker runs its own uv_loop_t with its own SO_REUSEPORT socket per
 * listener; the kernel spreads connections among them. Sessions never move
 * between workers, so nothing on the hot path takes a lock. State shared by
 * all workers (the configuration, per-listener client counts) lives in
 * struct px_runtime and struct px_lrt.
 */
#ifndef PX_WORKER_H
#define PX_WORKER_H

#include <pthread.h>
#include <stdint.h>
#include <uv.h>

#include "conf.h"
#include "tls.h"
#include "pop3.h"

/* The size of one read; the worker's slab and scratch buffers. */
#define PX_SLAB_SIZE (256 * 1024)

struct px_session;
struct px_hold;
struct px_iptab;
struct flt_set;

/* What happened to a held message, for metrics and logs. */
enum px_fverdict {
  PX_FV_CLEAN = 0, /* delivered as it was */
  PX_FV_MODIFIED,  /* headers added or replaced by a filter (not a virus) */
  PX_FV_REPLACE,   /* infected, replaced by a notice */
  PX_FV_TAG,       /* infected, delivered tagged */
  PX_FV_REJECT,    /* infected, refused */
  PX_FV_UNSCANNED, /* not examined, delivered tagged (on_error = pass) */
  PX_FV_TEMPFAIL,  /* not examined, refused for now (on_error = tempfail) */
  PX_FV_COUNT
};
extern const char *const px_fverdict_names[];

/* Distinct filter names counted per worker; more share the last slot. */
#define PX_FSTAT_SLOTS 32

/* filter_seconds buckets, upper bounds in seconds. */
#define PX_FSEC_BUCKETS 10
extern const double px_fsec_bounds[PX_FSEC_BUCKETS];

/* Counters of one worker; summed over workers when read (metrics.c).
 * Each has one writer, the worker's thread, so an update is a relaxed load
 * and store (no locked instruction); readers use relaxed loads. */
#define PX_CTR_ADD(field, n)                                                   \
  __atomic_store_n(&(field),                                                   \
                   __atomic_load_n(&(field), __ATOMIC_RELAXED) + (n),          \
                   __ATOMIC_RELAXED)
#define PX_CTR_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

struct px_counters {
  uint64_t connections_total;
  uint64_t connections_refused;
  int64_t connections_active;
  uint64_t commands_total[PX_CMD_COUNT];
  uint64_t commands_rejected;
  uint64_t bytes_client_in, bytes_client_out;
  uint64_t bytes_upstream_in, bytes_upstream_out;
  uint64_t upstream_errors_total;
  uint64_t tls_handshakes_total;
  uint64_t tls_handshake_failures_total;
  struct px_fstat { /* by filter name and outcome: */
    char name[64];  /* set once, before used */
    int used;       /* published with release */
    uint64_t v[PX_FV_COUNT];
  } filtered[PX_FSTAT_SLOTS];
  uint64_t filter_seconds[PX_FSEC_BUCKETS + 1]; /* histogram, +Inf last */
  uint64_t filter_seconds_sum_us;
};

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

struct px_runtime {
  pthread_mutex_t mu;      /* guards conf, tls and flt (the pointers) */
  struct px_conf *conf;    /* the current generation... */
  struct px_tls_ctxs *tls; /* ...its TLS contexts */
  struct flt_set *flt;     /* ...and its filters */
  struct px_lrt *lrt;      /* conf->nlisteners of them */
  struct px_worker *workers;
  unsigned nworkers;
  int stopping;            /* SIGTERM seen: /ready says 503 */
  uv_async_t *worker_done; /* on main's loop: a worker's loop ended */
};

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
  struct px_hold *scan_head;   /* held messages waiting for a pool slot */
  struct px_hold *scan_tail;
  unsigned scans_running; /* this worker's jobs in the pool */
  unsigned scan_quota;    /* its share of scan_threads */
  unsigned nsessions;
  uint64_t next_sid;
  struct px_counters ctr;
  char slab[PX_SLAB_SIZE];        /* every read lands here */
  char scratch[PX_SLAB_SIZE + 1]; /* unstuffed body bytes */
};

/* listener.c */
int px_listener_bind_all(struct px_runtime *rt, char *err, size_t errlen);
void px_listener_close_fds(struct px_runtime *rt);
int px_listener_start(struct px_worker *w);
void px_listener_stop(struct px_worker *w);
/* Counts a new client of l from sa under cl's limits. Returns 0, or
 * PX_ELIMIT when max_clients or max_clients_per_ip is reached (nothing
 * counted then). Any thread. */
int px_lrt_acquire(struct px_lrt *l, const struct px_conf_listener *cl,
                   const struct sockaddr *sa);
void px_lrt_release(struct px_lrt *l, const struct sockaddr *sa);

struct px_iptab *px_iptab_new(void);
void px_iptab_free(struct px_iptab **tp);

/* Counts outcome v for the filter called name (worker thread only). */
void px_fstat_add(struct px_counters *c, const char *name, enum px_fverdict v);

/* The current configuration, with a reference the caller drops. */
struct px_conf *px_runtime_conf(struct px_runtime *rt);
/* The same with its TLS contexts and filters, all referenced. */
void px_runtime_gen(struct px_runtime *rt, struct px_conf **c,
                    struct px_tls_ctxs **tls, struct flt_set **flt);

/* worker.c */
int px_worker_start(struct px_worker *w);
/* Thread-safe: asks w to stop accepting and to end when its sessions have
 * ended or shutdown_timeout has passed; with now set, to end them at once.
 * When its loop has ended, w sends rt->worker_done. */
void px_worker_stop(struct px_worker *w, int now);
/* Called by session.c when a session has closed. */
void px_worker_session_gone(struct px_worker *w);

#endif
