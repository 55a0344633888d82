/* main.c - command line, start-up, signals, reload and shutdown.
 *
 * The main thread loads the configuration, binds every listening socket,
 * drops privileges, starts the workers and then only handles signals:
 * SIGTERM/SIGINT stop, SIGHUP reloads, SIGUSR1 reopens the log file.
 */
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <clamav.h>
#include <openssl/crypto.h>
#include <uv.h>

#include "conf.h"
#include "filter.h"
#include "log.h"
#include "metrics.h"
#include "px.h"
#include "worker.h"

#ifndef PX_VERSION
#define PX_VERSION "0.1.0"
#endif

#define PX_ERRBUF 4096

struct px_main {
  struct px_runtime rt;
  uv_loop_t *loop;
  uv_signal_t sig[4];
  struct px_metrics metrics;
  uv_async_t worker_done;
  int stopping;
  unsigned started; /* workers running */
};

void px_runtime_gen(struct px_runtime *rt, struct px_conf **c,
                    struct px_tls_ctxs **tls, struct flt_set **flt)
{
  pthread_mutex_lock(&rt->mu);
  *c = rt->conf;
  px_conf_ref(*c);
  *tls = rt->tls;
  px_tls_ctxs_ref(*tls);
  *flt = rt->flt;
  flt_set_ref(*flt);
  pthread_mutex_unlock(&rt->mu);
}

struct px_conf *px_runtime_conf(struct px_runtime *rt)
{
  struct px_conf *c;

  pthread_mutex_lock(&rt->mu);
  c = rt->conf;
  px_conf_ref(c);
  pthread_mutex_unlock(&rt->mu);
  return c;
}

static void usage(FILE *f)
{
  fprintf(f, "usage: popgate -c FILE      run in the foreground\n"
             "       popgate -t -c FILE   check FILE and exit (0 if valid)\n"
             "       popgate -V           print versions\n"
             "       popgate -h           this help\n"
             "signals: HUP reload, TERM/INT stop, USR1 reopen the log file\n");
}

static void versions(void)
{
  printf("popgate %s\n", PX_VERSION);
  printf("libuv %s\n", uv_version_string());
  printf("%s\n", OpenSSL_version(OPENSSL_VERSION));
  printf("libclamav %s\n", cl_retver());
}

/* A session holds two descriptors; ask for as many as we may. */
static void raise_nofile(void)
{
  struct rlimit rl;

  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
      px_log(PX_LOG_WARN, "ev=rlimit err=\"%s\"", strerror(errno));
  }
}

static int drop_privileges(const char *user)
{
  struct passwd *pw;

  errno = 0;
  pw = getpwnam(user);
  if (pw == NULL) {
    px_log(PX_LOG_ERROR, "ev=start_failed err=\"unknown user %s\"", user);
    return -EINVAL;
  }
  if (setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 ||
      setuid(pw->pw_uid) != 0) {
    px_log(PX_LOG_ERROR, "ev=start_failed err=\"cannot become %s: %s\"", user,
           strerror(errno));
    return -errno;
  }
  return 0;
}

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

/* The signals popgate handles. Workers run with them blocked, so that
 * only the main thread, which has a handler for each, ever receives them. */
static const int px_signals[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1 };

static void signal_mask(int how)
{
  sigset_t set;

  sigemptyset(&set);
  for (size_t i = 0; i < PX_ARRAY_LEN(px_signals); i++)
    sigaddset(&set, px_signals[i]);
  pthread_sigmask(how, &set, NULL);
}

static void close_main_handles(struct px_main *m)
{
  /* On the way out now: closing a signal handle restores the default
   * action, and a late SIGTERM must not turn a clean exit into a kill, so
   * the signals stay blocked (and undelivered) from here on. */
  signal_mask(SIG_BLOCK);
  for (size_t i = 0; i < PX_ARRAY_LEN(m->sig); i++)
    if (m->sig[i].loop != NULL && !uv_is_closing((uv_handle_t *)&m->sig[i]))
      uv_close((uv_handle_t *)&m->sig[i], NULL);
  if (m->worker_done.loop != NULL &&
      !uv_is_closing((uv_handle_t *)&m->worker_done))
    uv_close((uv_handle_t *)&m->worker_done, NULL);
  px_metrics_stop(&m->metrics);
}

/* Logs each warning line of c (passwords in the clear, unchecked upstream
 * certificates), or prints them to stderr for -t. */
static void warn_config(const struct px_conf *c, int to_stderr)
{
  char buf[PX_ERRBUF];
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

/* The first line of a multi-line error text, for a log line. */
static char *first_line(char *err)
{
  char *nl = strchr(err, '\n');
  if (nl != NULL)
    *nl = '\0';
  return err;
}

static void reload(struct px_main *m)
{
  char err[PX_ERRBUF];
  struct px_conf *nc = NULL, *old;
  struct px_tls_ctxs *ntls = NULL, *oldtls;
  struct flt_set *nflt = NULL, *oldflt;
  const char *why;
  int rc;

  rc = px_conf_load(m->rt.conf->path, &nc, err, sizeof err);
  if (rc < 0) {
    /* The first error line is enough for the log; -t shows them all. */
    px_log(PX_LOG_ERROR, "ev=reload_failed err=\"%s\" action=kept_old",
           first_line(err));
    return;
  }
  why = reload_blocker(m->rt.conf, nc);
  if (why != NULL) {
    px_log(PX_LOG_ERROR,
           "ev=reload_failed err=\"%s; restart to apply\" "
           "action=kept_old",
           why);
    px_conf_unref(&nc);
    return;
  }
  /* Certificates and keys are read again: a renewed certificate is picked
   * up by a reload. */
  rc = px_tls_ctxs_new(nc, &ntls, err, sizeof err);
  if (rc < 0) {
    px_log(PX_LOG_ERROR, "ev=reload_failed err=\"%s\" action=kept_old",
           first_line(err));
    px_conf_unref(&nc);
    return;
  }
  /* A new clamav engine is built here, beside the one in use: scans in
   * flight finish on the old one, which goes with its last session. */
  rc = flt_set_new(nc, &nflt, err, sizeof err);
  if (rc < 0) {
    px_log(PX_LOG_ERROR, "ev=reload_failed err=\"%s\" action=kept_old",
           first_line(err));
    px_conf_unref(&nc);
    px_tls_ctxs_unref(&ntls);
    return;
  }
  rc = px_log_open(nc);
  if (rc < 0) {
    px_log(PX_LOG_ERROR, "ev=reload_failed err=\"log: %s\" action=kept_old",
           strerror(-rc));
    flt_set_unref(&nflt);
    px_conf_unref(&nc);
    px_tls_ctxs_unref(&ntls);
    return;
  }
  warn_config(nc, 0);
  pthread_mutex_lock(&m->rt.mu);
  old = m->rt.conf;
  oldtls = m->rt.tls;
  oldflt = m->rt.flt;
  m->rt.conf = nc;
  m->rt.tls = ntls;
  m->rt.flt = nflt;
  pthread_mutex_unlock(&m->rt.mu);
  flt_set_unref(&oldflt); /* sessions still on it keep their refs */
  px_tls_ctxs_unref(&oldtls);
  px_conf_unref(&old);
  px_log(PX_LOG_INFO, "ev=reload status=ok");
}

/* The first SIGTERM/SIGINT drains (shutdown_timeout); a second one ends
 * the sessions left at once. The signal handlers stay until every worker
 * has ended, so a second signal never kills the process. */
static void stop(struct px_main *m, int signum)
{
  int now = m->stopping;

  m->stopping = 1;
  __atomic_store_n(&m->rt.stopping, 1, __ATOMIC_RELAXED);
  px_log(PX_LOG_INFO, "ev=stopping signal=%s mode=%s", strsignal(signum),
         now ? "now" : "drain");
  px_metrics_stop(&m->metrics);
  for (unsigned i = 0; i < m->started; i++)
    px_worker_stop(&m->rt.workers[i], now);
  if (m->started == 0)
    close_main_handles(m);
}

static void worker_done_cb(uv_async_t *a)
{
  struct px_main *m = a->data;
  unsigned ended = 0;

  /* Sends may coalesce: count the loops that have ended. */
  for (unsigned i = 0; i < m->started; i++)
    ended += __atomic_load_n(&m->rt.workers[i].done, __ATOMIC_ACQUIRE);
  if (ended == m->started)
    close_main_handles(m);
}

static void signal_cb(uv_signal_t *h, int signum)
{
  struct px_main *m = h->data;

  switch (signum) {
  case SIGHUP:
    reload(m);
    break;
  case SIGUSR1:
    if (px_log_reopen() < 0)
      px_log(PX_LOG_ERROR, "ev=log_reopen_failed");
    break;
  default:
    stop(m, signum);
    break;
  }
}

static int setup_runtime(struct px_main *m)
{
  struct px_runtime *rt = &m->rt;
  struct px_conf *c = rt->conf;

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
    if (rt->workers[k].scan_quota == 0)
      rt->workers[k].scan_quota = 1;
  }
  return 0;
}

static void free_runtime(struct px_runtime *rt)
{
  if (rt->lrt != NULL) {
    px_listener_close_fds(rt);
    for (size_t i = 0; i < rt->conf->nlisteners; i++) {
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
  flt_set_unref(&rt->flt);
  px_tls_ctxs_unref(&rt->tls);
  px_conf_unref(&rt->conf);
}

int main(int argc, char **argv)
{
  _Static_assert(PX_ARRAY_LEN(px_signals) ==
                     PX_ARRAY_LEN(((struct px_main *)0)->sig),
                 "one handle per signal");
  struct px_main m;
  const char *path = NULL;
  char err[PX_ERRBUF];
  int opt, check = 0, rc;

  memset(&m, 0, sizeof m);
  pthread_mutex_init(&m.rt.mu, NULL);
  while ((opt = getopt(argc, argv, "c:tVh")) != -1) {
    switch (opt) {
    case 'c':
      path = optarg;
      break;
    case 't':
      check = 1;
      break;
    case 'V':
      versions();
      return 0;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (path == NULL || optind != argc) {
    usage(stderr);
    return 2;
  }

  rc = px_conf_load(path, &m.rt.conf, err, sizeof err);
  if (rc == 0) {
    /* Certificates, keys and CA files are checked here, -t included, and
     * the filters' engines loaded (a database that does not load is an
     * error now, not at the first message). */
    rc = px_tls_ctxs_new(m.rt.conf, &m.rt.tls, err, sizeof err);
    if (rc == 0) {
      rc = flt_set_new(m.rt.conf, &m.rt.flt, err, sizeof err);
      if (rc < 0)
        px_tls_ctxs_unref(&m.rt.tls);
    }
    if (rc < 0)
      px_conf_unref(&m.rt.conf);
  }
  if (rc < 0) {
    fputs(err, stderr);
    return 1;
  }
  if (check) {
    warn_config(m.rt.conf, 1);
    fprintf(stderr, "popgate: %s: configuration is valid\n", path);
    flt_set_unref(&m.rt.flt);
    px_tls_ctxs_unref(&m.rt.tls);
    px_conf_unref(&m.rt.conf);
    return 0;
  }

  signal(SIGPIPE, SIG_IGN);
  /* libuv's pool is sized once, at its first use: room for scan_threads
   * blocking filter jobs plus threads for file and DNS work. */
  {
    char n[16];
    snprintf(n, sizeof n, "%u", m.rt.conf->scan_threads + 4);
    setenv("UV_THREADPOOL_SIZE", n, 1);
  }
  rc = px_log_open(m.rt.conf);
  if (rc < 0) {
    fprintf(stderr, "popgate: cannot open log %s: %s\n", m.rt.conf->log_path,
            strerror(-rc));
    flt_set_unref(&m.rt.flt);
    px_tls_ctxs_unref(&m.rt.tls);
    px_conf_unref(&m.rt.conf);
    return 1;
  }
  warn_config(m.rt.conf, 0);
  raise_nofile();

  rc = setup_runtime(&m);
  if (rc == 0)
    rc = px_listener_bind_all(&m.rt, err, sizeof err);
  if (rc < 0) {
    px_log(PX_LOG_ERROR, "ev=start_failed err=\"%s\"",
           rc == -ENOMEM ? "out of memory" : err);
    goto out;
  }
  m.loop = uv_default_loop();
  uv_async_init(m.loop, &m.worker_done, worker_done_cb);
  m.worker_done.data = &m;
  m.rt.worker_done = &m.worker_done;
  if (m.rt.conf->metrics.host != NULL) {
    const struct px_conf_hostport *hp = &m.rt.conf->metrics;
    rc = px_metrics_start(&m.metrics, m.loop, &m.rt, hp);
    if (rc < 0) {
      px_log(PX_LOG_ERROR, "ev=start_failed err=\"%s:%d: metrics %s:%s: %s\"",
             m.rt.conf->path, hp->line, hp->host, hp->port, uv_strerror(rc));
      goto out;
    }
  }
  if (m.rt.conf->user != NULL && (rc = drop_privileges(m.rt.conf->user)) < 0)
    goto out;

  for (size_t i = 0; i < PX_ARRAY_LEN(px_signals); i++) {
    uv_signal_init(m.loop, &m.sig[i]);
    m.sig[i].data = &m;
    uv_signal_start(&m.sig[i], signal_cb, px_signals[i]);
  }
  signal_mask(SIG_BLOCK); /* inherited by the worker threads */
  for (; m.started < m.rt.nworkers; m.started++) {
    rc = px_worker_start(&m.rt.workers[m.started]);
    if (rc < 0) {
      px_log(PX_LOG_ERROR, "ev=start_failed err=\"worker %u: %s\"", m.started,
             uv_strerror(rc));
      break;
    }
  }
  signal_mask(SIG_UNBLOCK);
  if (rc == 0)
    px_log(PX_LOG_INFO,
           "ev=start version=%s workers=%u listeners=%zu "
           "pid=%ld",
           PX_VERSION, m.rt.nworkers, m.rt.conf->nlisteners, (long)getpid());
  else
    stop(&m, SIGTERM);

  uv_run(m.loop, UV_RUN_DEFAULT);
  for (unsigned k = 0; k < m.started; k++)
    uv_thread_join(&m.rt.workers[k].thread);
  uv_loop_close(m.loop);
  m.loop = NULL;
  px_log(PX_LOG_INFO, "ev=stopped");

out:
  if (m.loop != NULL) {
    /* Start-up failed before the loop ran: close what it holds. */
    close_main_handles(&m);
    uv_run(m.loop, UV_RUN_DEFAULT);
    uv_loop_close(m.loop);
  }
  free_runtime(&m.rt);
  px_log_close();
  pthread_mutex_destroy(&m.rt.mu);
  return rc < 0 ? 1 : 0;
}
