/* deadline.h - time limits for filters that wait on a peer (clamd) or a
 * child (command): one deadline per run, poll() timeouts derived from it.
 * Any thread. */
#ifndef FLT_DEADLINE_H
#define FLT_DEADLINE_H

#include <limits.h>
#include <stdint.h>
#include <time.h>

#include "conf.h"

/* scan_timeout when the section gives none (conf_keys.c always sets one). */
#define FLT_DEFAULT_TIMEOUT_MS 60000

/* scan_timeout's range, for every type that takes the key. */
#define FLT_TIMEOUT_MIN_MS 1000
#define FLT_TIMEOUT_MAX_MS 3600000

static inline uint64_t flt_now_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Milliseconds left before deadline, for poll(): 0 once it has passed. */
static inline int flt_left_ms(uint64_t deadline)
{
  uint64_t now = flt_now_ms();

  if (now >= deadline)
    return 0;
  return deadline - now > INT_MAX ? INT_MAX : (int)(deadline - now);
}

static inline uint64_t flt_timeout_ms(const struct px_conf_filter *cf)
{
  return cf->scan_timeout_ms != 0 ? cf->scan_timeout_ms
                                  : FLT_DEFAULT_TIMEOUT_MS;
}

#endif
