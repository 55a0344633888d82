/* listener.c - listening sockets, accept, and per-listener client limits.
 *
 * Sockets are created and bound by the main thread before privileges are
 * dropped: one per worker and listener, with SO_REUSEPORT so that the
 * kernel spreads connections over the workers (libuv 1.44 has no
 * UV_TCP_REUSEPORT, so we make the socket ourselves and uv_tcp_open it).
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "listener.h"
#include "log.h"
#include "px.h"
#include "session.h"

#define PX_BACKLOG       511
#define PX_IPTAB_BUCKETS 1024

/* Clients per address, for max_clients_per_ip. IPv4 addresses are kept as
 * their IPv4-mapped IPv6 form so one key type serves both. */
struct px_ipent {
  struct px_ipent *next;
  unsigned char addr[16];
  unsigned count;
};

struct px_iptab {
  struct px_ipent *b[PX_IPTAB_BUCKETS];
};

static void addr_key(const struct sockaddr *sa, unsigned char key[16])
{
  memset(key, 0, 16);
  if (sa->sa_family == AF_INET6) {
    memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
  } else if (sa->sa_family == AF_INET) {
    key[10] = key[11] = 0xff;
    memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
  }
}

static unsigned addr_hash(const unsigned char key[16])
{
  uint32_t h = 2166136261u; /* FNV-1a */
  for (int i = 0; i < 16; i++)
    h = (h ^ key[i]) * 16777619u;
  return h % PX_IPTAB_BUCKETS;
}

int px_lrt_acquire(struct px_lrt *l, const struct px_conf_listener *cl,
                   const struct sockaddr *sa)
{
  unsigned char key[16];
  struct px_ipent *e;
  unsigned h;
  int rc = 0;

  addr_key(sa, key);
  h = addr_hash(key);
  pthread_mutex_lock(&l->mu);
  if (l->clients >= cl->max_clients) {
    rc = PX_ELIMIT;
    goto out;
  }
  for (e = l->ips->b[h]; e != NULL; e = e->next)
    if (memcmp(e->addr, key, 16) == 0)
      break;
  if (e != NULL && cl->max_clients_per_ip != 0 &&
      e->count >= cl->max_clients_per_ip) {
    rc = PX_ELIMIT;
    goto out;
  }
  if (e == NULL) {
    e = calloc(1, sizeof *e);
    if (e == NULL) {
      rc = UV_ENOMEM;
      goto out;
    }
    memcpy(e->addr, key, 16);
    e->next = l->ips->b[h];
    l->ips->b[h] = e;
  }
  e->count++;
  l->clients++;
out:
  pthread_mutex_unlock(&l->mu);
  return rc;
}

void px_lrt_release(struct px_lrt *l, const struct sockaddr *sa)
{
  unsigned char key[16];
  struct px_ipent **pp, *e;

  addr_key(sa, key);
  pthread_mutex_lock(&l->mu);
  for (pp = &l->ips->b[addr_hash(key)]; (e = *pp) != NULL; pp = &e->next)
    if (memcmp(e->addr, key, 16) == 0) {
      if (--e->count == 0) {
        *pp = e->next;
        free(e);
      }
      break;
    }
  l->clients--;
  pthread_mutex_unlock(&l->mu);
}

static int bind_one(const struct addrinfo *ai, int reuseport)
{
  int one = 1;
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

  if (fd == -1)
    return -errno;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == -1 ||
      (reuseport &&
       setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == -1) ||
      (ai->ai_family == AF_INET6 &&
       setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) == -1) ||
      bind(fd, ai->ai_addr, ai->ai_addrlen) == -1) {
    int err = -errno;
    close(fd);
    return err;
  }
  return fd;
}

int px_listener_bind_all(struct px_runtime *rt, char *err, size_t errlen)
{
  const struct px_conf *c = rt->gen->conf;

  for (size_t i = 0; i < c->nlisteners; i++) {
    const struct px_conf_listener *cl = &c->listeners[i];
    struct px_lrt *l = &rt->lrt[i];
    struct addrinfo hints, *res = NULL;
    int rc, fd;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(cl->bind.host, cl->bind.port, &hints, &res);
    if (rc != 0) {
      snprintf(err, errlen, "%s:%d: [listener:%s] bind %s: %s", c->path,
               cl->bind.line, cl->name, cl->bind.host, gai_strerror(rc));
      return -EINVAL;
    }
    /* A probe without SO_REUSEPORT fails when anything holds the port, so
     * a second popgate cannot silently share it with the first. */
    fd = bind_one(res, 0);
    if (fd >= 0) {
      close(fd);
      for (unsigned k = 0; k < rt->nworkers; k++) {
        fd = bind_one(res, 1);
        if (fd < 0)
          break;
        if (listen(fd, PX_BACKLOG) == -1) {
          fd = -errno;
          break;
        }
        l->fds[k] = fd;
      }
    }
    freeaddrinfo(res);
    if (fd < 0) {
      snprintf(err, errlen, "%s:%d: [listener:%s] cannot listen on %s:%s: %s",
               c->path, cl->bind.line, cl->name, cl->bind.host, cl->bind.port,
               strerror(-fd));
      return fd;
    }
  }
  return 0;
}

void px_listener_close_fds(struct px_runtime *rt)
{
  for (size_t i = 0; i < rt->gen->conf->nlisteners; i++)
    for (unsigned k = 0; k < rt->nworkers; k++)
      if (rt->lrt[i].fds[k] >= 0) {
        close(rt->lrt[i].fds[k]);
        rt->lrt[i].fds[k] = -1;
      }
}

static void accept_cb(uv_stream_t *server, int status)
{
  struct px_worker *w = server->loop->data;
  struct px_lrt *l = server->data;
  int rc;

  if (status < 0) {
    px_log(PX_LOG_WARN, "ev=accept_failed listener=%s err=%s", l->name,
           uv_strerror(status));
    return;
  }
  rc = px_session_accept(w, l, server);
  if (rc < 0 && rc != UV_EAGAIN)
    px_log(PX_LOG_WARN, "ev=accept_failed listener=%s err=%s", l->name,
           uv_strerror(rc));
}

int px_listener_start(struct px_worker *w)
{
  struct px_runtime *rt = w->rt;

  for (size_t i = 0; i < rt->gen->conf->nlisteners; i++) {
    uv_tcp_t *t = &w->lsn[i];
    int rc = uv_tcp_init(&w->loop, t);
    if (rc < 0)
      return rc;
    w->nlsn = i + 1;
    t->data = &rt->lrt[i];
    rc = uv_tcp_open(t, rt->lrt[i].fds[w->idx]);
    if (rc < 0)
      return rc;
    rt->lrt[i].fds[w->idx] = -1; /* the handle owns it now */
    rc = uv_listen((uv_stream_t *)t, PX_BACKLOG, accept_cb);
    if (rc < 0)
      return rc;
  }
  return 0;
}

void px_listener_stop(struct px_worker *w)
{
  for (size_t i = 0; i < w->nlsn; i++)
    if (!uv_is_closing((uv_handle_t *)&w->lsn[i]))
      uv_close((uv_handle_t *)&w->lsn[i], NULL);
}

struct px_iptab *px_iptab_new(void)
{
  return calloc(1, sizeof(struct px_iptab));
}

void px_iptab_free(struct px_iptab **tp)
{
  struct px_iptab *t = *tp;

  *tp = NULL;
  if (t == NULL)
    return;
  for (int i = 0; i < PX_IPTAB_BUCKETS; i++)
    while (t->b[i] != NULL) {
      struct px_ipent *e = t->b[i];
      t->b[i] = e->next;
      free(e);
    }
  free(t);
}
