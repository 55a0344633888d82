/* counters.h - the counters one worker keeps, summed over workers when
 * /metrics is read (metrics.c).
 *
 * Each counter has one writer, its worker's thread, so an update is a
 * relaxed load and store (no locked instruction); readers use relaxed
 * loads.
 */
#ifndef PX_COUNTERS_H
#define PX_COUNTERS_H

#include <stdint.h>

#include "filter.h"
#include "pop3.h"

#define PX_CTR_ADD(field, n)                                                   \
  __atomic_store_n(&(field),                                                   \
                   __atomic_load_n(&(field), __ATOMIC_RELAXED) + (n),          \
                   __ATOMIC_RELAXED)
#define PX_CTR_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

/* Distinct filter names counted per worker; more share the last slot. */
#define PX_FSTAT_SLOTS 32

/* filter_seconds buckets, upper bounds in seconds. */
#define PX_FSEC_BUCKETS 10
extern const double px_fsec_bounds[PX_FSEC_BUCKETS];

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
    uint64_t v[FLT_DID_COUNT];
  } filtered[PX_FSTAT_SLOTS];
  uint64_t filter_seconds[PX_FSEC_BUCKETS + 1]; /* histogram, +Inf last */
  uint64_t filter_seconds_sum_us;
};

/* Counts outcome v for the filter called name (worker thread only). */
void px_fstat_add(struct px_counters *c, const char *name, enum flt_did v);

/* Counts one run of a chain that took seconds. */
void px_fsec_add(struct px_counters *c, double seconds);

#endif
