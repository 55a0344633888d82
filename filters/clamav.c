/* clamav.c - the in-process scanner: libclamav in libuv's thread pool.
 *
 * init() builds and compiles an engine from `database` with the section's
 * limits, on the main thread, at start and at every reload: a reload builds
 * the new engine beside the old one, and scans in flight finish on the old
 * one (each generation owns its engine; it is freed when the last session
 * of that generation lets go). run() scans one message in a pool thread;
 * a compiled engine may be used by many threads at once.
 *
 * Limits are not silent passes: CL_SCAN_HEURISTIC_EXCEEDS_MAX turns a
 * message that exceeds them into Heuristics.Limits.Exceeded.*, which is
 * reported as an error, so on_error decides (ClamAV 1.4 otherwise calls
 * EICAR nested 25 zips deep clean).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <clamav.h>

#include "filter.h"

struct clamav_state {
  struct cl_engine *engine;
  unsigned sigs;
};

static pthread_once_t cl_once = PTHREAD_ONCE_INIT;
static cl_error_t cl_init_rc = CL_SUCCESS;

static void init_once(void)
{
  cl_init_rc = cl_init(CL_INIT_DEFAULT);
}

/* libclamav names what it found through this callback too: a limits
 * alert on a descriptor can come back as CL_VIRUS without a name in
 * virname. The scan's context is a char[128]. */
static void virus_found_cb(int fd, const char *virname, void *context)
{
  (void)fd;
  if (context != NULL && virname != NULL && ((char *)context)[0] == '\0')
    snprintf(context, 128, "%s", virname);
}

static int set_num(struct cl_engine *e, enum cl_engine_field f, long long v)
{
  return cl_engine_set_num(e, f, v) == CL_SUCCESS ? 0 : -1;
}

static int clamav_init(const struct px_conf *c, const struct px_conf_filter *cf,
                       void **state, char *err, size_t errlen)
{
  const char *db = cf->database != NULL ? cf->database : "/var/lib/clamav";
  int line = cf->database_line ? cf->database_line : cf->line;
  struct clamav_state *st;
  cl_error_t rc;

  pthread_once(&cl_once, init_once);
  if (cl_init_rc != CL_SUCCESS) {
    snprintf(err, errlen, "%s:%d: [filter:%s] libclamav: %s\n", c->path,
             cf->line, cf->name, cl_strerror(cl_init_rc));
    return -EINVAL;
  }
  st = calloc(1, sizeof *st);
  if (st == NULL)
    return -ENOMEM;
  st->engine = cl_engine_new();
  if (st->engine == NULL) {
    free(st);
    return -ENOMEM;
  }
  if (set_num(st->engine, CL_ENGINE_MAX_SCANSIZE,
              (long long)cf->max_scan_size) < 0 ||
      set_num(st->engine, CL_ENGINE_MAX_FILESIZE,
              (long long)cf->max_file_size) < 0 ||
      set_num(st->engine, CL_ENGINE_MAX_RECURSION, cf->max_recursion) < 0 ||
      set_num(st->engine, CL_ENGINE_MAX_FILES, cf->max_files) < 0 ||
      set_num(st->engine, CL_ENGINE_MAX_SCANTIME,
              (long long)cf->scan_timeout_ms) < 0) {
    snprintf(err, errlen, "%s:%d: [filter:%s] cannot set the scan limits\n",
             c->path, cf->line, cf->name);
    goto fail;
  }
  /* libclamav unpacks archives into files: keep them in the spool. */
  if (c->spool_dir != NULL && cl_engine_set_str(st->engine, CL_ENGINE_TMPDIR,
                                                c->spool_dir) != CL_SUCCESS) {
    snprintf(err, errlen, "%s:%d: [filter:%s] cannot use spool_dir %s\n",
             c->path, cf->line, cf->name, c->spool_dir);
    goto fail;
  }
  rc = cl_load(db, st->engine, &st->sigs, CL_DB_STDOPT);
  if (rc != CL_SUCCESS) {
    snprintf(err, errlen, "%s:%d: [filter:%s] database %s: %s\n", c->path, line,
             cf->name, db, cl_strerror(rc));
    goto fail;
  }
  if (st->sigs == 0) {
    snprintf(err, errlen, "%s:%d: [filter:%s] database %s: no signatures\n",
             c->path, line, cf->name, db);
    goto fail;
  }
  cl_engine_set_clcb_virus_found(st->engine, virus_found_cb);
  rc = cl_engine_compile(st->engine);
  if (rc != CL_SUCCESS) {
    snprintf(err, errlen, "%s:%d: [filter:%s] database %s: %s\n", c->path, line,
             cf->name, db, cl_strerror(rc));
    goto fail;
  }
  *state = st;
  return 0;
fail:
  cl_engine_free(st->engine);
  free(st);
  return -EINVAL;
}

static void clamav_run(void *state, const struct px_conf_filter *cf,
                       const struct flt_msg *m, struct flt_result *r)
{
  static const char limits[] = "Heuristics.Limits.Exceeded";
  struct clamav_state *st = state;
  struct cl_scan_options opts;
  const char *virname = NULL;
  char found[128] = "";
  unsigned long scanned = 0;
  cl_error_t rc;

  (void)cf;
  memset(&opts, 0, sizeof opts);
  opts.general = CL_SCAN_GENERAL_HEURISTICS;
  opts.parse = ~0u; /* every parser: mail, archives, documents */
  opts.heuristic = CL_SCAN_HEURISTIC_EXCEEDS_MAX;

  if (m->mem != NULL) {
    cl_fmap_t *map = cl_fmap_open_memory(m->mem, m->len);
    if (map == NULL) {
      snprintf(r->error, sizeof r->error, "scan: out of memory");
      return;
    }
    rc = cl_scanmap_callback(map, NULL, &virname, &scanned, st->engine, &opts,
                             found);
    cl_fmap_close(map);
  } else {
    rc = cl_scandesc_callback(m->fd, NULL, &virname, &scanned, st->engine,
                              &opts, found);
  }

  if (rc == CL_CLEAN)
    return;
  if (rc == CL_VIRUS) {
    if (virname == NULL)
      virname = found[0] ? found : "Unnamed.Detection";
    if (strncmp(virname, limits, sizeof limits - 1) == 0)
      snprintf(r->error, sizeof r->error, "limits exceeded: %.100s", virname);
    else
      snprintf(r->virus, sizeof r->virus, "%s", virname);
    return;
  }
  snprintf(r->error, sizeof r->error, "scan failed: %s",
           rc == CL_ETIMEOUT ? "time limit exceeded" : cl_strerror(rc));
}

static void clamav_deinit(void *state)
{
  struct clamav_state *st = state;

  cl_engine_free(st->engine);
  free(st);
}

const struct flt_ops flt_clamav_ops = { PX_FLT_CLAMAV, clamav_init, clamav_run,
                                        clamav_deinit };
