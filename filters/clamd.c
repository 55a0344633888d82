/* clamd.c - the clamd filter: the message scanned by a clamd, over INSTREAM.
 *
 * [filter:NAME] type = clamd, socket = /run/clamav/clamd.ctl (a path: a
 * unix socket) or host:port ("[v6]:port" too: TCP). run() connects, sends
 * "zINSTREAM\0", the message in chunks (a 4-byte big-endian length, then at
 * most CD_CHUNK bytes), a zero-length chunk, and reads clamd's answer, one
 * NUL-terminated line:
 *
 *   stream: OK                             clean
 *   stream: NAME FOUND                     r->virus = NAME
 *   stream: Heuristics.Limits.Exceeded...  r->error (as the clamav filter)
 *   INSTREAM size limit exceeded. ERROR    r->error (StreamMaxLength)
 *   anything else, or no answer            r->error
 *
 * clamd may answer before the message is all sent (the size limit), and
 * then closes the connection: the socket is watched for the answer while
 * sending, so it is read rather than lost to a "connection reset".
 *
 * Bounds: scan_timeout covers the whole run (connect, send, scan, answer);
 * every wait is a poll() against that one deadline. Name resolution
 * (getaddrinfo) is bounded by resolv.conf's timeouts only: give clamd by
 * address, or a name in /etc/hosts. The answer is at most CD_REPLY_MAX.
 *
 * Keys (clamd_parse): socket (required), scan_timeout. A socket path is not
 * checked: clamd may start after popgate.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "deadline.h"
#include "filter.h"

/* clamd's own limit for one chunk is StreamMaxLength; smaller chunks cost
 * a header each, larger ones nothing but memory. */
#define CD_CHUNK 65536
/* The longest answer we read: a virus name is under 128 bytes; an answer
 * that does not end by then is not clamd's. */
#define CD_REPLY_MAX 1024

static const char cd_limits[] = "Heuristics.Limits.Exceeded";

/* One run. */
struct cd_job {
  const struct px_conf_filter *cf;
  const struct flt_msg *m;
  struct flt_result *r;
  uint64_t deadline; /* CLOCK_MONOTONIC ms */
  int fd;
  int answered; /* reply[] holds clamd's whole answer */
  char reply[CD_REPLY_MAX + 1];
  size_t replylen;
};

/* "timed out after 5s" (or "...after 1500ms"), after an optional prefix. */
static void set_timed_out(struct cd_job *j, const char *prefix)
{
  uint64_t ms = flt_timeout_ms(j->cf);
  int whole = ms % 1000 == 0;

  snprintf(j->r->error, sizeof j->r->error, "%.80stimed out after %llu%s",
           prefix, (unsigned long long)(whole ? ms / 1000 : ms),
           whole ? "s" : "ms");
}

static void set_errno(struct cd_job *j, const char *what, int err)
{
  char buf[96];

  snprintf(j->r->error, sizeof j->r->error, "%s: %s", what,
           strerror_r(err, buf, sizeof buf));
}

/* Copies at most n bytes of s into dst[0..dstlen) with anything that is not
 * printable ASCII as '?': clamd's words reach logs and headers. */
static void copy_printable(char *dst, size_t dstlen, const char *s, size_t n)
{
  size_t i;

  for (i = 0; i < n && i + 1 < dstlen; i++)
    dst[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
  dst[i] = '\0';
}

/* Waits until fd is ready for events or the deadline passes. Returns the
 * revents (never 0), or 0 at the deadline, or -1 with errno set. */
static int wait_fd(struct cd_job *j, short events)
{
  for (;;) {
    struct pollfd p = { .fd = j->fd, .events = events };
    int left = flt_left_ms(j->deadline), rc;

    if (left == 0)
      return 0;
    rc = poll(&p, 1, left);
    if (rc == -1 && errno == EINTR)
      continue;
    if (rc == -1)
      return -1;
    if (rc > 0)
      return p.revents;
  }
}

/* ---- connecting --------------------------------------------------------- */

/* Connects j->fd to one address, waiting until the deadline. Returns 0, or
 * an errno value (ETIMEDOUT at the deadline). */
static int connect_one(struct cd_job *j, int family, const struct sockaddr *sa,
                       socklen_t salen)
{
  int err = 0;
  socklen_t errlen = sizeof err;

  j->fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (j->fd == -1)
    return errno;
  for (;;) {
    int rc;

    if (connect(j->fd, sa, salen) == 0)
      return 0;
    if (errno == EINTR)
      continue;
    if (errno == EINPROGRESS)
      break;
    /* A unix socket whose listen queue is full: clamd is busy, not gone.
     * Try again shortly, until the deadline. */
    if (errno == EAGAIN && family == AF_UNIX) {
      int left = flt_left_ms(j->deadline);

      if (left == 0)
        return ETIMEDOUT;
      poll(NULL, 0, left < 10 ? left : 10);
      continue;
    }
    rc = errno;
    close(j->fd);
    j->fd = -1;
    return rc;
  }
  switch (wait_fd(j, POLLOUT)) {
  case 0:
    err = ETIMEDOUT;
    break;
  case -1:
    err = errno;
    break;
  default:
    if (getsockopt(j->fd, SOL_SOCKET, SO_ERROR, &err, &errlen) == -1)
      err = errno;
  }
  if (err != 0) {
    close(j->fd);
    j->fd = -1;
  }
  return err;
}

/* Splits "host:port" or "[v6]:port" into host[] and *port. Returns 0 or
 * -1. */
static int split_hostport(const char *s, char *host, size_t hostlen,
                          const char **port)
{
  const char *colon, *h = s, *hend;

  if (s[0] == '[') {
    hend = strchr(s, ']');
    if (hend == NULL || hend[1] != ':')
      return -1;
    h = s + 1;
    colon = hend + 1;
  } else {
    colon = strrchr(s, ':');
    if (colon == NULL)
      return -1;
    hend = colon;
  }
  if (hend == h || (size_t)(hend - h) >= hostlen || colon[1] == '\0')
    return -1;
  memcpy(host, h, (size_t)(hend - h));
  host[hend - h] = '\0';
  *port = colon + 1;
  return 0;
}

/* Connects j->fd to cf->socket. Returns 0, or -1 with j->r->error set. */
static int cd_connect(struct cd_job *j)
{
  const char *where = j->cf->socket;
  char what[112];
  int err;

  if (where == NULL || where[0] == '\0') {
    strcpy(j->r->error, "no clamd socket");
    return -1;
  }
  snprintf(what, sizeof what, "cannot connect to %s", where);
  if (where[0] == '/') {
    struct sockaddr_un sun = { .sun_family = AF_UNIX };

    if (strlen(where) >= sizeof sun.sun_path) {
      set_errno(j, what, ENAMETOOLONG);
      return -1;
    }
    strcpy(sun.sun_path, where);
    err = connect_one(j, AF_UNIX, (const struct sockaddr *)&sun, sizeof sun);
  } else {
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICSERV };
    struct addrinfo *res, *ai;
    char host[256];
    const char *port;
    int rc;

    if (split_hostport(where, host, sizeof host, &port) != 0) {
      snprintf(j->r->error, sizeof j->r->error, "bad clamd address %s", where);
      return -1;
    }
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
      char buf[96];

      snprintf(j->r->error, sizeof j->r->error, "cannot resolve %.60s: %s",
               host,
               rc == EAI_SYSTEM ? strerror_r(errno, buf, sizeof buf)
                                : gai_strerror(rc));
      return -1;
    }
    /* The next address on failure; a timeout ends the run, though. */
    err = EADDRNOTAVAIL;
    for (ai = res; ai != NULL; ai = ai->ai_next) {
      err = connect_one(j, ai->ai_family, ai->ai_addr, ai->ai_addrlen);
      if (err == 0 || err == ETIMEDOUT)
        break;
    }
    freeaddrinfo(res);
  }
  if (err == ETIMEDOUT) {
    char prefix[128];

    snprintf(prefix, sizeof prefix, "%s: ", what);
    set_timed_out(j, prefix);
    return -1;
  }
  if (err != 0) {
    set_errno(j, what, err);
    return -1;
  }
  return 0;
}

/* ---- talking ------------------------------------------------------------ */

/* Reads clamd's answer up to its NUL (or EOF, or CD_REPLY_MAX bytes).
 * Returns 0 with j->answered set, or -1 with j->r->error set. */
static int read_reply(struct cd_job *j)
{
  for (;;) {
    ssize_t n;
    char *nul;

    n = recv(j->fd, j->reply + j->replylen, CD_REPLY_MAX + 1 - j->replylen, 0);
    if (n > 0) {
      nul = memchr(j->reply + j->replylen, '\0', (size_t)n);
      j->replylen += (size_t)n;
      if (nul != NULL) {
        j->replylen = (size_t)(nul - j->reply);
        break;
      }
      if (j->replylen > CD_REPLY_MAX) {
        strcpy(j->r->error, "clamd's answer is too long");
        return -1;
      }
      continue;
    }
    if (n == 0) {
      if (j->replylen > 0)
        break; /* an answer without its NUL: take it */
      strcpy(j->r->error, "clamd closed the connection");
      return -1;
    }
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN) {
      set_errno(j, "clamd", errno);
      return -1;
    }
    switch (wait_fd(j, POLLIN)) {
    case 0:
      set_timed_out(j, "");
      return -1;
    case -1:
      set_errno(j, "poll", errno);
      return -1;
    }
  }
  j->reply[j->replylen] = '\0';
  j->answered = 1;
  return 0;
}

/* Sends p[0..n) whole. If clamd answers meanwhile (or hangs up after an
 * answer), the answer is read and the rest is not sent. Returns 0 (all
 * sent, or j->answered), or -1 with j->r->error set. */
static int send_all(struct cd_job *j, const char *p, size_t n)
{
  while (n > 0 && !j->answered) {
    ssize_t w = send(j->fd, p, n, MSG_NOSIGNAL);
    int ev;

    if (w >= 0) {
      p += w;
      n -= (size_t)w;
      continue;
    }
    if (errno == EINTR)
      continue;
    if (errno == EPIPE || errno == ECONNRESET) {
      /* clamd gave up on us: perhaps it said why first. */
      int err = errno;

      if (read_reply(j) == 0)
        return 0;
      set_errno(j, "clamd", err);
      return -1;
    }
    if (errno != EAGAIN) {
      set_errno(j, "clamd", errno);
      return -1;
    }
    ev = wait_fd(j, POLLOUT | POLLIN);
    if (ev == 0) {
      set_timed_out(j, "");
      return -1;
    }
    if (ev == -1) {
      set_errno(j, "poll", errno);
      return -1;
    }
    if (ev & (POLLIN | POLLHUP | POLLERR))
      return read_reply(j);
  }
  return 0;
}

static void put_be32(char *p, uint32_t v)
{
  p[0] = (char)(v >> 24);
  p[1] = (char)(v >> 16);
  p[2] = (char)(v >> 8);
  p[3] = (char)v;
}

/* Sends the command, the message in chunks and the end chunk. frame holds
 * 4 + CD_CHUNK bytes. Returns 0 (all sent, or j->answered early), or -1
 * with j->r->error set. */
static int send_stream(struct cd_job *j, char *frame)
{
  const struct flt_msg *m = j->m;
  uint64_t len = m->mem != NULL ? m->len : m->size, off = 0;

  if (send_all(j, "zINSTREAM", sizeof "zINSTREAM") != 0)
    return -1;
  while (off < len && !j->answered) {
    size_t n = len - off > CD_CHUNK ? CD_CHUNK : (size_t)(len - off);

    if (m->mem != NULL) {
      memcpy(frame + 4, m->mem + off, n);
    } else {
      ssize_t got = pread(m->fd, frame + 4, n, (off_t)off);

      if (got == -1 && errno == EINTR)
        continue;
      if (got == -1) {
        set_errno(j, "cannot read the message", errno);
        return -1;
      }
      if (got == 0) {
        strcpy(j->r->error, "cannot read the message: file too short");
        return -1;
      }
      n = (size_t)got;
    }
    put_be32(frame, (uint32_t)n);
    if (send_all(j, frame, 4 + n) != 0)
      return -1;
    off += n;
  }
  put_be32(frame, 0);
  return send_all(j, frame, 4);
}

/* Turns clamd's answer into the result. */
static void parse_reply(struct cd_job *j)
{
  char *all = j->reply, *s;
  size_t alln = j->replylen, n;
  int stream;

  while (alln > 0 && (all[alln - 1] == '\n' || all[alln - 1] == '\r'))
    alln--;
  all[alln] = '\0';
  stream = strncmp(all, "stream: ", 8) == 0;
  s = stream ? all + 8 : all;
  n = stream ? alln - 8 : alln;
  if (stream && strcmp(s, "OK") == 0)
    return;
  if (stream && n > 6 && strcmp(s + n - 6, " FOUND") == 0) {
    char name[sizeof j->r->virus];

    copy_printable(name, sizeof name, s, n - 6);
    if (strncmp(name, cd_limits, sizeof cd_limits - 1) == 0)
      snprintf(j->r->error, sizeof j->r->error, "limits exceeded: %.110s",
               name);
    else
      memcpy(j->r->virus, name, sizeof name);
    return;
  }
  /* "INSTREAM size limit exceeded. ERROR", "stream: ... ERROR": clamd's
   * words, without the trailing " ERROR" and the full stop before it. */
  if (n > 6 && strcmp(s + n - 6, " ERROR") == 0) {
    char why[sizeof j->r->error - 8];

    n -= 6;
    if (n > 0 && s[n - 1] == '.')
      n--;
    copy_printable(why, sizeof why, s, n);
    snprintf(j->r->error, sizeof j->r->error, "clamd: %s", why);
    return;
  }
  {
    char what[sizeof j->r->error - 32];

    copy_printable(what, sizeof what, all, alln);
    snprintf(j->r->error, sizeof j->r->error, "unexpected answer: %s", what);
  }
}

/* A pool thread. Scans m with the clamd at cf->socket; fills r->virus or
 * r->error. Returns within scan_timeout (getaddrinfo aside, see above). */
static void clamd_run(void *state, const struct px_conf_filter *cf,
                      const struct flt_msg *m, struct flt_result *r)
{
  struct cd_job *j;
  char *frame;

  (void)state;
  j = malloc(sizeof *j);
  frame = malloc(4 + CD_CHUNK);
  if (j == NULL || frame == NULL) {
    strcpy(r->error, "out of memory");
    free(j);
    free(frame);
    return;
  }
  *j = (struct cd_job){ .cf = cf, .m = m, .r = r, .fd = -1 };
  j->deadline = flt_now_ms() + flt_timeout_ms(cf);
  if (cd_connect(j) == 0 && send_stream(j, frame) == 0 &&
      (j->answered || read_reply(j) == 0))
    parse_reply(j);
  if (j->fd >= 0)
    close(j->fd);
  free(frame);
  free(j);
}

/* ---- configuration ---- */

/* clamd's address: an absolute unix socket path or host:port, stored as
 * "host:port" ("[v6]:port") with the port in canonical decimal, for
 * px_conf_parse_hostport(). */
static int socket_value(struct px_conf_filter *cf, const char *key,
                        const char *v, char *err, size_t errlen)
{
  char q[PX_CONF_SHOW + 4];
  const size_t max = sizeof((struct sockaddr_un *)NULL)->sun_path - 1;
  char *host, *port, *s;
  const char *why = NULL;
  size_t i, n = strlen(v);
  int rc;

  if (v[0] == '/') {
    for (i = 0; i < n; i++)
      if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
        break;
    if (i < n || v[n - 1] == '/') {
      snprintf(err, errlen,
               "bad value \"%s\" for %s (use the absolute path of clamd's "
               "unix socket, or host:port)",
               px_conf_show(q, v), key);
      return -EINVAL;
    }
    if (n > max) {
      snprintf(err, errlen,
               "%s path \"%s\" is longer than %zu characters (the limit of a "
               "unix socket address)",
               key, px_conf_show(q, v), max);
      return -EINVAL;
    }
    s = strdup(v);
  } else {
    rc = px_conf_split_hostport(v, &host, &port, &why);
    if (rc == -ENOMEM)
      return rc;
    if (rc != 0) {
      snprintf(err, errlen,
               "bad value \"%s\" for %s: %s (use the absolute path of clamd's "
               "unix socket, or host:port)",
               px_conf_show(q, v), key, why);
      return rc;
    }
    n = strlen(host) + strlen(port) + 4;
    if ((s = malloc(n)) != NULL)
      snprintf(s, n, strchr(host, ':') != NULL ? "[%s]:%s" : "%s:%s", host,
               port);
    free(host);
    free(port);
  }
  if (s == NULL)
    return -ENOMEM;
  free(cf->socket);
  cf->socket = s;
  return 1;
}

static int clamd_parse(struct px_conf_filter *cf, const char *key,
                       const char *v, int line, char *err, size_t errlen)
{
  int rc;

  (void)line;
  if (strcmp(key, "socket") == 0)
    return socket_value(cf, key, v, err, errlen);
  if (strcmp(key, "scan_timeout") == 0) {
    rc = px_conf_value_duration(key, v, FLT_TIMEOUT_MIN_MS, FLT_TIMEOUT_MAX_MS,
                                &cf->scan_timeout_ms, err, errlen);
    return rc == 0 ? 1 : rc;
  }
  return 0;
}

static const struct flt_key clamd_keys[] = {
  { "socket", FLT_KEY_REQUIRED },
  { "scan_timeout", 0 },
  { NULL, 0 },
};

const struct flt_ops flt_clamd_ops = {
  .type = PX_FLT_CLAMD,
  .run = clamd_run,
  .flags = FLT_FINDS_VIRUSES,
  .keys = clamd_keys,
  .parse = clamd_parse,
};
