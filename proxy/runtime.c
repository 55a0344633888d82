/* runtime.c - configuration generations, the state the workers share,
 * and reload. See runtime.h.
 *
 * A reload reads the file, the certificates and keys, and compiles the
 * signature databases in a thread of libuv's pool: the main loop keeps
 * answering /metrics and /ready meanwhile, and the workers never wait.
 * The swap itself is a pointer change under rt->mu on the main loop.
 */
#include "runtime.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "listener.h"
#include "log.h"
#include "px.h"
#include "worker.h"

int px_gen_load(const char *path, struct px_gen **out, char *err,
                size_t errlen)
{
  struct px_gen *g = calloc(1, sizeof *g);
  int rc;

  if (g == NULL) {
    snprintf(err, errlen, "%s: out of memory\n", path);
    return -ENOMEM;
  }
  g->refs = 1;
  rc = px_conf_load(path, &g->conf, err, errlen);
  /* Certificates, keys and CA files are checked here, -t included, and
   * the filters' engines loaded (a database that does not load is an
   * error now, not at the first message). */
  if (rc == 0)
    rc = px_tls_ctxs_new(g->conf, &g->tls, err, errlen);
  if (rc == 0)
    rc = flt_set_new(g->conf, &g->flt, err, errlen);
  if (rc < 0) {
    px_gen_unref(&g);
    return rc;
  }
  *out = g;
  return 0;
}

void px_gen_ref(struct px_gen *g)
{
  __atomic_add_fetch(&g->refs, 1, __ATOMIC_RELAXED);
}

void px_gen_unref(struct px_gen **gp)
{
  struct px_gen *g = *gp;

  *gp = NULL;
  if (g == NULL || __atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  flt_set_unref(&g->flt); /* an engine is freed off the caller's loop */
  px_tls_ctxs_unref(&g->tls);
  px_conf_unref(&g->conf);
  free(g);
}

struct px_gen *px_runtime_gen(struct px_runtime *rt)
{
  struct px_gen *g;

  pthread_mutex_lock(&rt->mu);
  g = rt->gen;
  px_gen_ref(g);
  pthread_mutex_unlock(&rt->mu);
  return g;
}

int px_runtime_init(struct px_runtime *rt, struct px_gen *g)
{
  const struct px_conf *c = g->conf;

  pthread_mutex_init(&rt->mu, NULL);
  px_gen_ref(g);
  rt->gen = g;
  rt->nworkers = c->workers;
  rt->lrt = calloc(c->nlisteners, sizeof *rt->lrt);
  rt->workers = calloc(rt->nworkers, sizeof *rt->workers);
  if (rt->lrt == NULL || rt->workers == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < c->nlisteners; i++) {
    struct px_lrt *l = &rt->lrt[i];
    l->idx = i;
    l->name = strdup(c->listeners[i].name);
    l->fds = malloc(rt->nworkers * sizeof *l->fds);
    l->ips = px_iptab_new();
    if (l->name == NULL || l->fds == NULL || l->ips == NULL)
      return -ENOMEM;
    for (unsigned k = 0; k < rt->nworkers; k++)
      l->fds[k] = -1;
    pthread_mutex_init(&l->mu, NULL);
  }
  for (unsigned k = 0; k < rt->nworkers; k++) {
    rt->workers[k].idx = k;
    rt->workers[k].rt = rt;
    /* Each worker's share of scan_threads, at least one. */
    rt->workers[k].scan_quota =
        c->scan_threads / rt->nworkers + (k < c->scan_threads % rt->nworkers);
  }
  return 0;
}

void px_runtime_free(struct px_runtime *rt)
{
  if (rt->gen == NULL)
    return;
  if (rt->lrt != NULL) {
    px_listener_close_fds(rt);
    for (size_t i = 0; i < rt->gen->conf->nlisteners; i++) {
      free(rt->lrt[i].name);
      free(rt->lrt[i].fds);
      px_iptab_free(&rt->lrt[i].ips);
      pthread_mutex_destroy(&rt->lrt[i].mu);
    }
  }
  if (rt->workers != NULL)
    for (unsigned k = 0; k < rt->nworkers; k++)
      free(rt->workers[k].lsn);
  free(rt->lrt);
  free(rt->workers);
  rt->lrt = NULL;
  rt->workers = NULL;
  px_gen_unref(&rt->gen);
  pthread_mutex_destroy(&rt->mu);
}

void px_runtime_warn(const struct px_conf *c, int to_stderr)
{
  char buf[4096];
  char *line, *save = NULL;

  if (px_conf_warnings(c, buf, sizeof buf) == 0)
    return;
  if (to_stderr) {
    fputs(buf, stderr);
    return;
  }
  for (line = strtok_r(buf, "\n", &save); line != NULL;
       line = strtok_r(NULL, "\n", &save))
    px_log(PX_LOG_WARN, "ev=config_warning msg=\"%s\"", line);
}

/* ---- reload ------------------------------------------------------------- */

/* Two generations may swap only when their listeners are the same: the
 * sockets stay open across a reload. */
static const char *reload_blocker(const struct px_conf *a,
                                  const struct px_conf *b)
{
  if (a->nlisteners != b->nlisteners)
    return "the set of listeners changed";
  for (size_t i = 0; i < a->nlisteners; i++) {
    const struct px_conf_listener *x = &a->listeners[i], *y = &b->listeners[i];
    if (strcmp(x->name, y->name) != 0 ||
        strcmp(x->bind.host, y->bind.host) != 0 ||
        strcmp(x->bind.port, y->bind.port) != 0)
      return "a listener's name or bind changed";
  }
  if (a->workers != b->workers)
    return "workers changed";
  if ((a->user == NULL) != (b->user == NULL) ||
      (a->user != NULL && strcmp(a->user, b->user) != 0))
    return "user changed";
  return NULL;
}

/* The first line of a multi-line error text, for a log line. */
static char *first_line(char *err)
{
  char *nl = strchr(err, '\n');
  if (nl != NULL)
    *nl = '\0';
  return err;
}

/* A pool thread: everything slow (files, certificates, the engine). */
static void reload_work_cb(uv_work_t *req)
{
  struct px_runtime *rt = req->data;

  rt->reload_err[0] = '\0';
  if (px_gen_load(rt->reload_path, &rt->next, rt->reload_err,
                  sizeof rt->reload_err) < 0)
    rt->next = NULL;
}

static void reload_after_cb(uv_work_t *req, int status)
{
  struct px_runtime *rt = req->data;
  struct px_gen *ng = rt->next, *old;
  const char *why;
  int rc;

  rt->next = NULL;
  rt->reloading = 0;
  if (status < 0 || ng == NULL) {
    /* The first error line is enough for the log; -t shows them all. */
    px_log(PX_LOG_ERROR, "ev=reload_failed err=\"%s\" action=kept_old",
           status < 0 ? uv_strerror(status) : first_line(rt->reload_err));
    goto again;
  }
  why = reload_blocker(rt->gen->conf, ng->conf);
  if (why != NULL) {
    px_log(PX_LOG_ERROR,
           "ev=reload_failed err=\"%s; restart to apply\" action=kept_old",
           why);
    px_gen_unref(&ng);
    goto again;
  }
  rc = px_log_open(ng->conf);
  if (rc < 0) {
    px_log(PX_LOG_ERROR, "ev=reload_failed err=\"log: %s\" action=kept_old",
           strerror(-rc));
    px_gen_unref(&ng);
    goto again;
  }
  px_runtime_warn(ng->conf, 0);
  pthread_mutex_lock(&rt->mu);
  old = rt->gen;
  rt->gen = ng;
  pthread_mutex_unlock(&rt->mu);
  px_gen_unref(&old); /* sessions still on it keep their references */
  px_log(PX_LOG_INFO, "ev=reload status=ok");
again:
  if (rt->reload_again && !rt->stopping) {
    rt->reload_again = 0;
    px_runtime_reload(rt);
  }
}

void px_runtime_reload(struct px_runtime *rt)
{
  int rc;

  if (rt->reloading) {
    rt->reload_again = 1;
    return;
  }
  snprintf(rt->reload_path, sizeof rt->reload_path, "%s", rt->gen->conf->path);
  rt->reload_req.data = rt;
  rc = uv_queue_work(rt->loop, &rt->reload_req, reload_work_cb,
                     reload_after_cb);
  if (rc < 0) {
    px_log(PX_LOG_ERROR, "ev=reload_failed err=\"%s\" action=kept_old",
           uv_strerror(rc));
    return;
  }
  rt->reloading = 1;
}
