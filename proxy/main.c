/* main.c - the face: command line, start-up, signals and shutdown.
 *
 * The main thread loads the configuration, binds every listening socket,
 * drops privileges, starts the workers and then only handles signals:
 * SIGTERM/SIGINT stop, SIGHUP reloads (runtime.c), SIGUSR1 reopens the log
 * file. Nothing calls back into this file.
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
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "px.h"
#include "runtime.h"
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
    px_runtime_reload(&m->rt);
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

int main(int argc, char **argv)
{
  _Static_assert(PX_ARRAY_LEN(px_signals) ==
                     PX_ARRAY_LEN(((struct px_main *)0)->sig),
                 "one handle per signal");
  struct px_main m;
  struct px_gen *g = NULL;
  const struct px_conf *c;
  const char *path = NULL;
  char err[PX_ERRBUF];
  int opt, check = 0, rc;

  memset(&m, 0, sizeof m);
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

  rc = px_gen_load(path, &g, err, sizeof err);
  if (rc < 0) {
    fputs(err, stderr);
    return 1;
  }
  c = g->conf;
  if (check) {
    px_runtime_warn(c, 1);
    fprintf(stderr, "popgate: %s: configuration is valid\n", path);
    px_gen_unref(&g);
    flt_set_wait_freed();
    return 0;
  }

  signal(SIGPIPE, SIG_IGN);
  /* libuv's pool is sized once, at its first use: room for scan_threads
   * blocking filter jobs plus threads for file and DNS work. */
  {
    char n[16];
    snprintf(n, sizeof n, "%u", c->scan_threads + 4);
    setenv("UV_THREADPOOL_SIZE", n, 1);
  }
  rc = px_log_open(c);
  if (rc < 0) {
    fprintf(stderr, "popgate: cannot open log %s: %s\n", c->log_path,
            strerror(-rc));
    px_gen_unref(&g);
    flt_set_wait_freed();
    return 1;
  }
  px_runtime_warn(c, 0);
  raise_nofile();

  rc = px_runtime_init(&m.rt, g);
  if (rc == 0)
    rc = px_listener_bind_all(&m.rt, err, sizeof err);
  if (rc < 0) {
    px_log(PX_LOG_ERROR, "ev=start_failed err=\"%s\"",
           rc == -ENOMEM ? "out of memory" : err);
    goto out;
  }
  m.loop = uv_default_loop();
  m.rt.loop = m.loop;
  uv_async_init(m.loop, &m.worker_done, worker_done_cb);
  m.worker_done.data = &m;
  m.rt.worker_done = &m.worker_done;
  if (c->metrics.host != NULL) {
    const struct px_conf_hostport *hp = &c->metrics;
    rc = px_metrics_start(&m.metrics, m.loop, &m.rt, hp);
    if (rc < 0) {
      px_log(PX_LOG_ERROR, "ev=start_failed err=\"%s:%d: metrics %s:%s: %s\"",
             c->path, hp->line, hp->host, hp->port, uv_strerror(rc));
      goto out;
    }
  }
  if (c->user != NULL && (rc = drop_privileges(c->user)) < 0)
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
           PX_VERSION, m.rt.nworkers, c->nlisteners, (long)getpid());
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
  px_runtime_free(&m.rt);
  px_gen_unref(&g);
  flt_set_wait_freed();
  px_log_close();
  return rc < 0 ? 1 : 0;
}
