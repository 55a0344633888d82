/* filter.h - the filter API: the only filter header proxy/ sees.
 *
 * Every message that leaves the upstream (RETR, TOP) on a listener with
 * filters = ... is held, un-stuffed, and handed to the listener's chain of
 * [filter:NAME] sections in order, in a thread of libuv's pool (never on an
 * event loop). A filter examines the message and reports what it found; the
 * chain (chain.c) applies the filter's policy (on_virus, on_error,
 * quarantine_dir) and combines the filters into one outcome that session.c
 * turns into what the client gets.
 */
#ifndef FLT_FILTER_H
#define FLT_FILTER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "conf.h"

enum flt_verdict {
  FLT_PASS = 0, /* deliver (with hdrs on top, if any) */
  FLT_REPLACE,  /* deliver repl instead (with hdrs on top, if any) */
  FLT_REJECT,   /* -ERR [SYS/PERM]: the message stays on the server */
  FLT_TEMPFAIL, /* -ERR [SYS/TEMP]: the message stays on the server */
  FLT_COUNT
};
extern const char *const flt_verdict_names[];

/* A held message, un-stuffed, line ends as the upstream sent them: in
 * memory (mem != NULL), or in an unlinked file (fd, read with pread). */
struct flt_msg {
  const char *mem;
  size_t len;
  int fd;
  uint64_t size;
};

/* What one filter found in one message. run() fills it; everything left
 * zero means "nothing to say". */
struct flt_result {
  char virus[128]; /* infected: the signature's name (on_virus applies) */
  char error[128]; /* could not examine: why (on_error applies) */
  char *hdrs;      /* header lines to put on top, "Name: value\r\n"... */
  size_t hdrslen;  /* (malloc'd; the chain frees them) */
  char *repl;      /* a whole new message (malloc'd): what the next */
  size_t repllen;  /* filter and the client see instead */
};

/* One key of a [filter:NAME] section that belongs to some filter types
 * only. type, on_virus, on_error and quarantine_dir are every type's:
 * conf.c parses those itself. */
struct flt_key {
  const char *name;
  unsigned flags;
};
#define FLT_KEY_REPEATABLE (1u << 0) /* each line adds a value */
#define FLT_KEY_REQUIRED   (1u << 1) /* a section of this type needs it */

/* flt_ops.flags */
#define FLT_FINDS_VIRUSES (1u << 0) /* on_virus and quarantine_dir apply */

struct flt_ops {
  enum px_filter_type type;
  /* Main thread, at start, -t and reload: prepares what run() needs (the
   * clamav engine: loaded and compiled here). Returns 0, or a negative
   * code with "FILE:LINE: ..." lines in err. NULL: no state (run() gets
   * NULL). */
  int (*init)(const struct px_conf *c, const struct px_conf_filter *cf,
              void **state, char *err, size_t errlen);
  /* A pool thread: examines m and fills r. Must bound its own time (the
   * filter's timeouts) and touch nothing but state, cf, m and r. state is
   * shared by every thread running this filter at once. */
  void (*run)(void *state, const struct px_conf_filter *cf,
              const struct flt_msg *m, struct flt_result *r);
  /* Main thread, once no job uses state any more. NULL with init. */
  void (*deinit)(void *state);

  /* The configuration of a section of this type. parse() and check() run
   * in px_conf_load(), on any thread; what they store in cf belongs to the
   * configuration generation, which frees it with cf, and is read-only
   * from then on (run() reads it in pool threads). */
  unsigned flags;             /* FLT_FINDS_VIRUSES */
  const struct flt_key *keys; /* the type's own keys; { NULL, 0 } ends */
  /* Parses value, complete and trimmed (continuation lines joined with
   * spaces), of one of keys, given at line, into cf. Returns 1 when done,
   * 0 when key is not one of this type's, -EINVAL with a message (no
   * "FILE:LINE: ", no newline) in err[0..errlen), or -ENOMEM. conf.c also
   * hands it the keys of this type in a section of another type, or of
   * no type yet (type may come last), so that every value is checked
   * once; conf.c then reports the key as one of another type's. */
  int (*parse)(struct px_conf_filter *cf, const char *key, const char *value,
               int line, char *err, size_t errlen);
  /* After the section, when it is of this type: checks what only the
   * whole section tells and fills defaults that depend on the type.
   * Required keys are checked already (FLT_KEY_REQUIRED). Returns 0,
   * -EINVAL with a message about the section (reported at its header
   * line) in err, or -ENOMEM. NULL: nothing to check. */
  int (*check)(struct px_conf_filter *cf, char *err, size_t errlen);
};

extern const struct flt_ops flt_clamav_ops, flt_clamd_ops, flt_command_ops,
    flt_header_ops;

/* ---- types.c ------------------------------------------------------------ */

/* The ops of a type; NULL when t is not one (PX_FLT_COUNT: not given). */
const struct flt_ops *flt_ops_of(enum px_filter_type t);
/* Frees a command filter's argv (NULL-terminated), as conf frees it. */
void flt_argv_free(char **argv);
/* The ops whose type is named type (as in px_filter_type_names, any case);
 * NULL when none is. */
const struct flt_ops *flt_ops_by_name(const char *type);
/* The entry of ops->keys named name; NULL when the type has no such key. */
const struct flt_key *flt_key_of(const struct flt_ops *ops, const char *name);

/* ---- chain.c ------------------------------------------------------------ */

/* The filters of one configuration generation, with their states. */
struct flt_set;

/* Builds every [filter:NAME] of c (the clamav engine is loaded here).
 * Main thread. Returns 0 or a negative code with FILE:LINE lines in err. */
int flt_set_new(const struct px_conf *c, struct flt_set **out, char *err,
                size_t errlen);
void flt_set_ref(struct flt_set *s);
/* Drops a reference (any thread); the last one frees the set, in a
 * thread of its own when it holds engines (never stalling a loop). */
void flt_set_unref(struct flt_set **sp);
/* Waits until the sets being freed that way are gone (at exit). */
void flt_set_wait_freed(void);

/* What a filter did with a message, and what became of the message as a
 * whole: the one list the metrics (messages_filtered_total{verdict}) and
 * the verdict log lines use. */
enum flt_did {
  FLT_DID_CLEAN = 0, /* delivered as it was */
  FLT_DID_MODIFIED,  /* headers added or replaced by a filter (not a virus) */
  FLT_DID_REPLACE,   /* infected, replaced by a notice */
  FLT_DID_TAG,       /* infected, delivered tagged */
  FLT_DID_REJECT,    /* infected, refused */
  FLT_DID_UNSCANNED, /* not examined, delivered tagged (on_error = pass) */
  FLT_DID_TEMPFAIL,  /* not examined, refused for now (on_error = tempfail) */
  FLT_DID_COUNT
};
extern const char *const flt_did_names[];

#define FLT_CHAIN_MAX 16 /* filters of a chain that get their own record */

/* What the chain decided for one message. */
struct flt_outcome {
  enum flt_verdict v;
  char *hdrs; /* lines to put on top of the message (PASS, REPLACE) */
  size_t hdrslen;
  char *repl; /* REPLACE: the message to deliver instead */
  size_t repllen;
  char filter[64];        /* the filter that decided, when one did */
  char virus[128];        /* a virus found, when one was */
  char reason[160];       /* why REJECT or TEMPFAIL, or what was tagged */
  char quarantine_id[80]; /* where the original was kept, when it was */
  unsigned char did[FLT_CHAIN_MAX]; /* enum flt_did, per filter that ran */
  size_t ndid;
};

/* Runs filters[0..n) in order over m. A pool thread; reads only set, the
 * filters and m; sid names the quarantine copy. Filters stop at the first
 * REJECT or TEMPFAIL; a REPLACE feeds the replacement to the filters after
 * it; header lines accumulate. */
void flt_chain_run(struct flt_set *set, const struct px_conf_filter *const *filters,
                   size_t n, const struct flt_msg *m, uint64_t sid,
                   struct flt_outcome *out);

/* The outcome for a message the chain cannot look at (too big, nowhere to
 * keep it): with on_error = pass on every filter it is delivered with
 * "X-Virus-Status: unscanned; why", else it is TEMPFAIL. The one place
 * where on_error = pass tags a message. */
void flt_chain_unscanned(const struct px_conf_filter *const *filters, size_t n,
                         const char *why, struct flt_outcome *out);

/* Whether every filter of the list has on_error = pass. */
int flt_chain_all_pass(const struct px_conf_filter *const *filters, size_t n);

/* What became of the message as a whole. */
enum flt_did flt_outcome_did(const struct flt_outcome *o);

/* ---- jobs: the chain in libuv's pool -------------------------------------
 *
 * The session hands a held message over as a job that carries copies of
 * everything the chain needs (the message's fd or memory, the filter list
 * with a reference on its set, the session id): no pool thread ever reads
 * the session. done() runs on the loop thread with the outcome. */

struct flt_job;
typedef void (*flt_done_cb)(struct flt_job *job);

/* A loop's scan queue: at most quota jobs of this loop in the pool at once
 * (its share of scan_threads), the rest wait in order. Blocking filters
 * then never take every pool thread: file and DNS work still finds one. */
struct flt_sched {
  uv_loop_t *loop;
  struct flt_job *head, *tail;
  unsigned running, quota;
};

struct flt_job {
  /* In, set by the submitter. */
  struct flt_set *set; /* referenced by the job until done() */
  const struct px_conf_filter *const *filters;
  size_t nfilters;
  struct flt_msg msg;
  uint64_t sid;
  void *arg; /* the submitter's */
  /* Out, for done(). */
  struct flt_outcome out;
  double seconds; /* the chain's own run time */
  /* The scheduler's. */
  struct flt_sched *q; /* while queued or running; NULL once done */
  struct flt_job *next;
  flt_done_cb done;
  uv_work_t req;
  int running;
};

void flt_sched_init(struct flt_sched *q, uv_loop_t *loop, unsigned quota);

/* Queues job: done(job) follows on q's loop thread, once (with a TEMPFAIL
 * outcome if the pool refused the job). Takes a reference on job->set. */
void flt_chain_submit(struct flt_sched *q, struct flt_job *job,
                      flt_done_cb done);

/* Takes a job that is still waiting out of its queue: returns 1, and
 * done() will not be called. Returns 0 for a job already in the pool:
 * done() will come, and the submitter must wait for it. */
int flt_chain_cancel(struct flt_job *job);

void flt_outcome_free(struct flt_outcome *o);

#endif
