/* conf_value.c - value syntax, on its own: whole numbers, sizes,
 * durations, booleans, host:port, section names; the strings that range
 * messages print. Nothing here knows a key or a section: conf_keys.c and
 * the filters' parse hooks (flt_ops.parse) call these with the key's name,
 * so that every size, duration and number reads and fails alike.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_int.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

const char *px_conf_show(char buf[static PX_CONF_SHOW + 4], const char *s)
{
  size_t i;

  for (i = 0; s[i] != '\0' && i < PX_CONF_SHOW; i++)
    buf[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
  if (s[i] != '\0') {
    memcpy(buf + i, "...", 3);
    i += 3;
  }
  buf[i] = '\0';
  return buf;
}

int conf_is_name(const char *s)
{
  size_t n = strlen(s);

  if (n == 0 || n > PX_CONF_MAX_NAME)
    return 0;
  return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                   "0123456789_.-") == n;
}

int conf_parse_u64(const char *s, uint64_t *out, const char **end)
{
  uint64_t n = 0;
  const char *p = s;

  if (!isdigit((unsigned char)*p))
    return -EINVAL;
  for (; isdigit((unsigned char)*p); p++) {
    unsigned d = (unsigned)(*p - '0');
    if (n > (UINT64_MAX - d) / 10)
      return -EINVAL;
    n = n * 10 + d;
  }
  *out = n;
  if (end != NULL)
    *end = p;
  else if (*p != '\0')
    return -EINVAL;
  return 0;
}
int px_conf_parse_duration(const char *s, uint64_t *ms)
{
  static const struct {
    const char *unit;
    uint64_t ms;
  } units[] = {
    { "", MS_S }, { "ms", 1 }, { "s", MS_S }, { "m", MS_M }, { "h", MS_H },
  };
  const char *end;
  uint64_t n;
  size_t i;

  if (s == NULL || conf_parse_u64(s, &n, &end) != 0)
    return -EINVAL;
  for (i = 0; i < sizeof units / sizeof *units; i++) {
    if (strcmp(end, units[i].unit) != 0)
      continue;
    if (n > UINT64_MAX / units[i].ms)
      return -EINVAL;
    *ms = n * units[i].ms;
    return 0;
  }
  return -EINVAL;
}

int px_conf_parse_size(const char *s, uint64_t *bytes)
{
  const char *end;
  uint64_t n, mult;

  if (s == NULL || conf_parse_u64(s, &n, &end) != 0)
    return -EINVAL;
  if (end[0] == '\0')
    mult = 1;
  else if (end[1] != '\0')
    return -EINVAL;
  else if (end[0] == 'K' || end[0] == 'k')
    mult = UINT64_C(1) << 10;
  else if (end[0] == 'M' || end[0] == 'm')
    mult = UINT64_C(1) << 20;
  else if (end[0] == 'G' || end[0] == 'g')
    mult = UINT64_C(1) << 30;
  else
    return -EINVAL;
  if (n > UINT64_MAX / mult)
    return -EINVAL;
  *bytes = n * mult;
  return 0;
}

int px_conf_parse_bool(const char *s, int *b)
{
  static const char *const yes[] = { "yes", "on", "true", "1" };
  static const char *const no[] = { "no", "off", "false", "0" };
  size_t i;

  if (s == NULL)
    return -EINVAL;
  for (i = 0; i < sizeof yes / sizeof *yes; i++) {
    if (strcasecmp(s, yes[i]) == 0) {
      *b = 1;
      return 0;
    }
    if (strcasecmp(s, no[i]) == 0) {
      *b = 0;
      return 0;
    }
  }
  return -EINVAL;
}
int conf_is_ip(const char *host)
{
  unsigned char a[16];

  return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

/* The host part of host:port without brackets: a DNS name or an IPv4
 * address. Something made only of digits and dots must be a valid IPv4
 * address, or "1.2.3.999" would be looked up as a name at connect time. */
static int is_host(const char *h)
{
  unsigned char a[4];
  size_t n = strlen(h);

  if (n == 0 || n > 253 || h[0] == '.' || h[0] == '-')
    return 0;
  if (strspn(h, "0123456789.") == n)
    return inet_pton(AF_INET, h, a) == 1;
  return strspn(h, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                   "0123456789.-_") == n;
}

/* Splits "host:port" or "[v6]:port". On success returns 0 with *host and
 * *port malloc'ed (host without brackets, port in canonical decimal). On
 * failure returns -EINVAL with *why saying what is wrong, or -ENOMEM. */
int px_conf_split_hostport(const char *s, char **host, char **port,
                           const char **why)
{
  char hbuf[256];
  char pbuf[8];
  const char *h, *p, *colon;
  size_t hlen;
  uint64_t n;

  *host = *port = NULL;
  if (strpbrk(s, " \t") != NULL) {
    *why = "unexpected space";
    return -EINVAL;
  }
  if (s[0] == '[') {
    const char *close = strchr(s, ']');
    unsigned char a[16];
    if (close == NULL) {
      *why = "missing \"]\" after the IPv6 address";
      return -EINVAL;
    }
    h = s + 1;
    hlen = (size_t)(close - h);
    if (close[1] != ':') {
      *why = "missing \":PORT\" after \"]\"";
      return -EINVAL;
    }
    p = close + 2;
    if (hlen == 0 || hlen >= sizeof hbuf) {
      *why = "bad IPv6 address in brackets";
      return -EINVAL;
    }
    memcpy(hbuf, h, hlen);
    hbuf[hlen] = '\0';
    if (inet_pton(AF_INET6, hbuf, a) != 1) {
      *why = "bad IPv6 address in brackets";
      return -EINVAL;
    }
  } else {
    colon = strrchr(s, ':');
    if (colon == NULL) {
      *why = "missing \":PORT\"";
      return -EINVAL;
    }
    h = s;
    hlen = (size_t)(colon - h);
    p = colon + 1;
    if (hlen == 0) {
      *why = "missing host before \":\"";
      return -EINVAL;
    }
    if (memchr(h, ':', hlen) != NULL) {
      *why = "an IPv6 address needs brackets, as in [::1]:110";
      return -EINVAL;
    }
    if (hlen == 1 && h[0] == '*') {
      *why = "\"*\" is not supported: use 0.0.0.0 or [::]";
      return -EINVAL;
    }
    if (hlen >= sizeof hbuf) {
      *why = "bad host name";
      return -EINVAL;
    }
    memcpy(hbuf, h, hlen);
    hbuf[hlen] = '\0';
    if (!is_host(hbuf)) {
      *why = "bad host name";
      return -EINVAL;
    }
  }
  if (conf_parse_u64(p, &n, NULL) != 0 || n < 1 || n > 65535) {
    *why = "the port must be a number from 1 to 65535";
    return -EINVAL;
  }
  snprintf(pbuf, sizeof pbuf, "%u", (unsigned)n);
  *host = strdup(hbuf);
  *port = strdup(pbuf);
  if (*host == NULL || *port == NULL) {
    free(*host);
    free(*port);
    *host = *port = NULL;
    return -ENOMEM;
  }
  return 0;
}

int px_conf_parse_hostport(const char *s, char **host, char **port)
{
  const char *why;

  if (s == NULL || host == NULL || port == NULL)
    return -EINVAL;
  return px_conf_split_hostport(s, host, port, &why);
}

void conf_hostport_free(struct px_conf_hostport *hp)
{
  free(hp->host);
  free(hp->port);
  hp->host = hp->port = NULL;
}

const char *conf_hostport_str(char *buf, size_t n,
                              const struct px_conf_hostport *hp)
{
  if (strchr(hp->host, ':') != NULL)
    snprintf(buf, n, "[%s]:%s", hp->host, hp->port);
  else
    snprintf(buf, n, "%s:%s", hp->host, hp->port);
  return buf;
}

/* The same port on the same address (compared as addresses when both
 * are IP literals, so "::1" equals "0:0::1"). */
int conf_same_hostport(const struct px_conf_hostport *a,
                       const struct px_conf_hostport *b)
{
  unsigned char x[16], y[16];

  if (strcmp(a->port, b->port) != 0)
    return 0;
  if (inet_pton(AF_INET, a->host, x) == 1 &&
      inet_pton(AF_INET, b->host, y) == 1)
    return memcmp(x, y, 4) == 0;
  if (inet_pton(AF_INET6, a->host, x) == 1 &&
      inet_pton(AF_INET6, b->host, y) == 1)
    return memcmp(x, y, 16) == 0;
  return strcasecmp(a->host, b->host) == 0;
}

const char *conf_duration_str(char *buf, size_t n, uint64_t ms)
{
  if (ms != 0 && ms % MS_H == 0)
    snprintf(buf, n, "%" PRIu64 "h", ms / MS_H);
  else if (ms != 0 && ms % MS_M == 0)
    snprintf(buf, n, "%" PRIu64 "m", ms / MS_M);
  else if (ms % MS_S == 0)
    snprintf(buf, n, "%" PRIu64 "s", ms / MS_S);
  else
    snprintf(buf, n, "%" PRIu64 "ms", ms);
  return buf;
}

const char *conf_size_str(char *buf, size_t n, uint64_t b)
{
  if (b != 0 && b % (UINT64_C(1) << 30) == 0)
    snprintf(buf, n, "%" PRIu64 "G", b >> 30);
  else if (b != 0 && b % (UINT64_C(1) << 20) == 0)
    snprintf(buf, n, "%" PRIu64 "M", b >> 20);
  else if (b != 0 && b % (UINT64_C(1) << 10) == 0)
    snprintf(buf, n, "%" PRIu64 "K", b >> 10);
  else
    snprintf(buf, n, "%" PRIu64, b);
  return buf;
}

int conf_has_ctl(const char *s)
{
  for (; *s != '\0'; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f)
      return 1;
  return 0;
}

const char *conf_names_str(char *buf, size_t size, const char *const *names,
                           int n)
{
  size_t used = 0;
  int i, w;

  buf[0] = '\0';
  for (i = 0; i < n && used < size; i++) {
    w = snprintf(buf + used, size - used, "%s%s",
                 i == 0       ? ""
                 : i == n - 1 ? " or "
                              : ", ",
                 names[i]);
    if (w < 0)
      break;
    used += (size_t)w;
  }
  return buf;
}

/* access() asks with the real uid: -t run as the user popgate runs as
 * tells the truth. */
const char *conf_dir_problem(const char *path, char *buf, size_t size)
{
  char ebuf[128];
  struct stat st;
  int e;

  buf[0] = '\0';
  if (stat(path, &st) == -1) {
    e = errno;
    snprintf(buf, size, "%s", ERRSTR(e, ebuf));
  } else if (!S_ISDIR(st.st_mode)) {
    snprintf(buf, size, "not a directory");
  } else if (access(path, W_OK | X_OK) == -1) {
    e = errno;
    snprintf(buf, size, "not writable: %s", ERRSTR(e, ebuf));
  }
  return buf;
}

/* ---- values with their range, as every key reports them ---- */

int px_conf_value_uint(const char *key, const char *v, uint64_t min,
                       uint64_t max, unsigned *out, char *err, size_t errlen)
{
  char q[PX_CONF_SHOW + 4];
  uint64_t n;

  if (conf_parse_u64(v, &n, NULL) != 0) {
    snprintf(err, errlen,
             "bad number \"%s\" for %s (use a whole number from %" PRIu64
             " to %" PRIu64 ")",
             px_conf_show(q, v), key, min, max);
    return -EINVAL;
  }
  if (n < min || n > max) {
    snprintf(err, errlen, "%s = %s is out of range (%" PRIu64 "..%" PRIu64 ")",
             key, px_conf_show(q, v), min, max);
    return -EINVAL;
  }
  *out = (unsigned)n;
  return 0;
}

int px_conf_value_size(const char *key, const char *v, uint64_t min,
                       uint64_t max, uint64_t *out, char *err, size_t errlen)
{
  char q[PX_CONF_SHOW + 4], lo[32], hi[32];
  uint64_t n;

  if (px_conf_parse_size(v, &n) != 0) {
    snprintf(err, errlen, "bad size \"%s\" for %s (use e.g. 512, 64K, 1M)",
             px_conf_show(q, v), key);
    return -EINVAL;
  }
  if (n < min || n > max) {
    snprintf(err, errlen, "%s = %s is out of range (%s..%s)", key,
             px_conf_show(q, v), conf_size_str(lo, sizeof lo, min),
             conf_size_str(hi, sizeof hi, max));
    return -EINVAL;
  }
  *out = n;
  return 0;
}

int conf_duration_value(const char *key, const char *v, uint64_t min,
                        uint64_t max, const char *min_why, uint64_t *out,
                        char *err, size_t errlen)
{
  char q[PX_CONF_SHOW + 4], lo[32], hi[32];
  uint64_t ms;

  if (px_conf_parse_duration(v, &ms) != 0) {
    snprintf(err, errlen, "bad duration \"%s\" for %s (use e.g. 30s, 10m, 1h)",
             px_conf_show(q, v), key);
    return -EINVAL;
  }
  if (ms < min && min_why != NULL) {
    snprintf(err, errlen, "%s = %s is below %s: %s", key, px_conf_show(q, v),
             conf_duration_str(lo, sizeof lo, min), min_why);
    return -EINVAL;
  }
  if (ms < min || ms > max) {
    snprintf(err, errlen, "%s = %s is out of range (%s..%s)", key,
             px_conf_show(q, v), conf_duration_str(lo, sizeof lo, min),
             conf_duration_str(hi, sizeof hi, max));
    return -EINVAL;
  }
  *out = ms;
  return 0;
}

int px_conf_value_duration(const char *key, const char *v, uint64_t min,
                           uint64_t max, uint64_t *out, char *err,
                           size_t errlen)
{
  return conf_duration_value(key, v, min, max, NULL, out, err, errlen);
}
