/* log.c - key=value log lines to stderr, syslog or a file. See log.h. */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "px.h"

/* The one piece of process-wide state besides the signal handlers: the
 * log destination belongs to the process, not to a worker. */
static struct {
  pthread_mutex_t mu; /* guards target/fd/path changes only */
  enum px_log_target target;
  int fd;
  char *path;
  int level; /* read without the lock: an int */
} g_log = { PTHREAD_MUTEX_INITIALIZER, PX_LOGT_STDERR, 2, NULL, PX_LOG_INFO };

static const int syslog_prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
_Static_assert(sizeof syslog_prio / sizeof *syslog_prio == PX_LOG_COUNT,
               "syslog_prio out of sync");

const char *px_strerror(int err)
{
  switch (err) {
  case PX_EPROTO:
    return "protocol violation";
  case PX_ELINE:
    return "line too long";
  case PX_EBADCMD:
    return "unknown command";
  case PX_EBADARG:
    return "bad arguments";
  case PX_EBADCHAR:
    return "control character in command";
  case PX_ETIMEDOUT:
    return "timed out";
  case PX_EUPSTREAM:
    return "no upstream server reachable";
  case PX_ELIMIT:
    return "limit reached";
  case PX_ETLS:
    return "TLS failure";
  case PX_EINPUT:
    return "too much input";
  default:
    return uv_strerror(err);
  }
}

static int open_file(const char *path)
{
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  return fd == -1 ? -errno : fd;
}

int px_log_open(const struct px_conf *c)
{
  int fd = -1;
  char *path = NULL;

  if (c->log_target == PX_LOGT_FILE) {
    fd = open_file(c->log_path);
    if (fd < 0)
      return fd;
    path = strdup(c->log_path);
    if (path == NULL) {
      close(fd);
      return -ENOMEM;
    }
  }
  pthread_mutex_lock(&g_log.mu);
  if (g_log.target == PX_LOGT_FILE)
    close(g_log.fd);
  if (g_log.target == PX_LOGT_SYSLOG && c->log_target != PX_LOGT_SYSLOG)
    closelog();
  free(g_log.path);
  g_log.path = path;
  __atomic_store_n(&g_log.target, c->log_target, __ATOMIC_RELAXED);
  g_log.fd = c->log_target == PX_LOGT_FILE ? fd : 2;
  if (c->log_target == PX_LOGT_SYSLOG)
    openlog("popgate", LOG_PID | LOG_NDELAY, LOG_MAIL);
  __atomic_store_n(&g_log.level, (int)c->log_level, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&g_log.mu);
  return 0;
}

int px_log_reopen(void)
{
  int rc = 0;

  pthread_mutex_lock(&g_log.mu);
  if (g_log.target == PX_LOGT_FILE) {
    int fd = open_file(g_log.path);
    if (fd >= 0) {
      close(g_log.fd);
      g_log.fd = fd;
    } else {
      rc = fd;
    }
  }
  pthread_mutex_unlock(&g_log.mu);
  return rc;
}

void px_log_close(void)
{
  pthread_mutex_lock(&g_log.mu);
  if (g_log.target == PX_LOGT_FILE)
    close(g_log.fd);
  if (g_log.target == PX_LOGT_SYSLOG)
    closelog();
  free(g_log.path);
  g_log.path = NULL;
  __atomic_store_n(&g_log.target, PX_LOGT_STDERR, __ATOMIC_RELAXED);
  g_log.fd = 2;
  pthread_mutex_unlock(&g_log.mu);
}

int px_log_enabled(enum px_log_level lvl)
{
  return (int)lvl <= __atomic_load_n(&g_log.level, __ATOMIC_RELAXED);
}

void px_log(enum px_log_level lvl, const char *fmt, ...)
{
  char line[2048];
  size_t n = 0;
  va_list ap;
  int r;

  if (!px_log_enabled(lvl))
    return;

  /* Read without the lock (a reload may change it meanwhile): at worst
   * one line has or lacks a timestamp it need not. */
  if (__atomic_load_n(&g_log.target, __ATOMIC_RELAXED) != PX_LOGT_SYSLOG) {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, ".%03ldZ %s ",
                          ts.tv_nsec / 1000000, px_log_level_names[lvl]);
  }
  va_start(ap, fmt);
  r = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
  va_end(ap);
  if (r < 0)
    return;
  n += (size_t)r < sizeof line - n - 1 ? (size_t)r : sizeof line - n - 2;

  pthread_mutex_lock(&g_log.mu);
  if (g_log.target == PX_LOGT_SYSLOG) {
    syslog(syslog_prio[lvl], "%s", line);
  } else {
    line[n++] = '\n';
    /* One write per line keeps lines from different threads whole. */
    while (write(g_log.fd, line, n) == -1 && errno == EINTR)
      ;
  }
  pthread_mutex_unlock(&g_log.mu);
}

/* Bytes that go out as they are. A quote would end a quoted value early,
 * a backslash would start an escape that is not ours, and ' ' and '=' would let
 * peer text forge a key=value pair of its own. */
static int log_plain(unsigned char c)
{
  return c > 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '=';
}

char *px_log_sanitize(const char *in, size_t n, size_t max, char *out,
                      size_t cap)
{
  static const char hex[] = "0123456789abcdef";
  size_t o = 0, need = 0, room, lim = n < max ? n : max;
  int cut = n > lim;

  if (cap == 0)
    return out; /* no room even for the NUL */
  room = cap - 1;
  for (size_t i = 0; i < lim; i++)
    need += log_plain((unsigned char)in[i]) ? 1 : 4;
  /* If the whole of it does not fit, the "..." mark must: a value cut by
   * cap looks the same as one cut by max, never like a complete one. */
  if (need + (cut ? 3 : 0) > room) {
    cut = 1;
    if (room >= 3)
      room -= 3;
  }
  for (size_t i = 0; i < lim; i++) {
    unsigned char c = (unsigned char)in[i];
    if (log_plain(c)) {
      if (o + 1 > room)
        break;
      out[o++] = (char)c;
    } else {
      if (o + 4 > room)
        break; /* never half an escape */
      out[o++] = '\\';
      out[o++] = 'x';
      out[o++] = hex[c >> 4];
      out[o++] = hex[c & 15];
    }
  }
  if (cut && cap - 1 - o >= 3) {
    memcpy(out + o, "...", 3);
    o += 3;
  }
  out[o] = '\0';
  return out;
}

char *px_log_quote(const char *in, size_t n, size_t max, char *out,
                   size_t cap)
{
  static const char hex[] = "0123456789abcdef";
  size_t o = 0, lim = n < max ? n : max;

  for (size_t i = 0; i < lim; i++) {
    unsigned char c = (unsigned char)in[i];
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"' && c != '=') {
      if (o + 1 >= cap)
        break;
      out[o++] = (char)c;
    } else {
      if (o + 4 >= cap)
        break;
      out[o++] = '\\';
      out[o++] = 'x';
      out[o++] = hex[c >> 4];
      out[o++] = hex[c & 15];
    }
  }
  if (n > lim && o + 3 < cap) {
    memcpy(out + o, "...", 3);
    o += 3;
  }
  if (cap > 0)
    out[o] = '\0';
  return out;
}
