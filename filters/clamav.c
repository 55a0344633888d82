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
 *
 * Keys (clamav_parse): database, max_scan_size, max_file_size,
 * max_recursion, max_files, scan_timeout. A database given must exist
 * now; the default (clamav_check) is not looked at before init(), which
 * reports a missing database better than a stat() can.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <clamav.h>

#include "deadline.h"
#include "filter.h"

#define DEFAULT_DATABASE "/var/lib/clamav"

#define SZ_K (UINT64_C(1) << 10)
#define SZ_G (UINT64_C(1) << 30)

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
  const char *db = cf->database != NULL ? cf->database : DEFAULT_DATABASE;
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

/* ---- configuration ---- */

static int has_ctl(const char *s)
{
  for (; *s != '\0'; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f)
      return 1;
  return 0;
}

/* ClamAV's signatures: a directory of them or one database file, which
 * must exist and be readable now. */
static int database_value(struct px_conf_filter *cf, const char *key,
                          const char *v, int line, char *err, size_t errlen)
{
  char q[PX_CONF_SHOW + 4];
  struct stat st;
  char *s;

  if (v[0] != '/' || has_ctl(v)) {
    snprintf(err, errlen,
             "bad value \"%s\" for %s (use the absolute path of a directory "
             "or a file)",
             px_conf_show(q, v), key);
    return -EINVAL;
  }
  if (stat(v, &st) == -1) {
    snprintf(err, errlen, "cannot use %s \"%s\": %s", key, px_conf_show(q, v),
             strerror(errno));
    return -EINVAL;
  }
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
    snprintf(err, errlen,
             "cannot use %s \"%s\": not a directory or a regular file", key,
             px_conf_show(q, v));
    return -EINVAL;
  }
  if (access(v, S_ISDIR(st.st_mode) ? R_OK | X_OK : R_OK) == -1) {
    snprintf(err, errlen, "cannot use %s \"%s\": not readable: %s", key,
             px_conf_show(q, v), strerror(errno));
    return -EINVAL;
  }
  if ((s = strdup(v)) == NULL)
    return -ENOMEM;
  free(cf->database);
  cf->database = s;
  cf->database_line = line;
  return 1;
}

/* 1 for 0 (done), else rc: the px_conf_value_*() convention to parse()'s. */
static int done(int rc)
{
  return rc == 0 ? 1 : rc;
}

/* libclamav takes the sizes as 64-bit numbers; it scans one file of at
 * most 2G - 1 and lowers a larger max_file_size to that. */
static int clamav_parse(struct px_conf_filter *cf, const char *key,
                        const char *v, int line, char *err, size_t errlen)
{
  if (strcmp(key, "database") == 0)
    return database_value(cf, key, v, line, err, errlen);
  if (strcmp(key, "max_scan_size") == 0)
    return done(px_conf_value_size(key, v, SZ_K, 4 * SZ_G, &cf->max_scan_size,
                                   err, errlen));
  if (strcmp(key, "max_file_size") == 0)
    return done(px_conf_value_size(key, v, SZ_K, 2 * SZ_G, &cf->max_file_size,
                                   err, errlen));
  if (strcmp(key, "max_recursion") == 0)
    return done(
        px_conf_value_uint(key, v, 1, 64, &cf->max_recursion, err, errlen));
  if (strcmp(key, "max_files") == 0)
    return done(
        px_conf_value_uint(key, v, 1, 1000000, &cf->max_files, err, errlen));
  if (strcmp(key, "scan_timeout") == 0)
    return done(px_conf_value_duration(key, v, FLT_TIMEOUT_MIN_MS,
                                       FLT_TIMEOUT_MAX_MS, &cf->scan_timeout_ms,
                                       err, errlen));
  return 0;
}

/* The default database, so that cf->database is never NULL here. */
static int clamav_check(struct px_conf_filter *cf, char *err, size_t errlen)
{
  (void)err;
  (void)errlen;
  if (cf->database == NULL && (cf->database = strdup(DEFAULT_DATABASE)) == NULL)
    return -ENOMEM;
  return 0;
}

static const struct flt_key clamav_keys[] = {
  { "database", 0 },
  { "max_scan_size", 0 },
  { "max_file_size", 0 },
  { "max_recursion", 0 },
  { "max_files", 0 },
  { "scan_timeout", 0 },
  { NULL, 0 },
};

const struct flt_ops flt_clamav_ops = {
  .type = PX_FLT_CLAMAV,
  .init = clamav_init,
  .run = clamav_run,
  .deinit = clamav_deinit,
  .flags = FLT_FINDS_VIRUSES,
  .keys = clamav_keys,
  .parse = clamav_parse,
  .check = clamav_check,
};
