/* px.h - definitions shared by every popgate module: error codes and small
 * helpers. Includes neither libuv nor OpenSSL, so codecs can use it.
 */
#ifndef PX_H
#define PX_H

#include <errno.h>
#include <stddef.h>
#include <unistd.h>

/* Errors follow libuv's convention: 0 is success, a negative value is a
 * UV_E* code (-errno on Linux) or one of ours from the reserved range
 * -5000..-5099. px_strerror() names both. */
#define PX_EPROTO    (-5001) /* the upstream broke RFC 1939 framing */
#define PX_ELINE     (-5002) /* a line longer than its limit */
#define PX_EBADCMD   (-5003) /* unknown or unframeable command keyword */
#define PX_EBADARG   (-5004) /* known command, arguments of the wrong shape */
#define PX_EBADCHAR  (-5005) /* NUL, bare CR, bare LF or other control byte */
#define PX_ETIMEDOUT (-5006) /* a session deadline passed */
#define PX_EUPSTREAM (-5007) /* no upstream server could be reached */
#define PX_ELIMIT    (-5008) /* max_clients, max_clients_per_ip or max_errors */
#define PX_ETLS      (-5009) /* the TLS layer failed (tls.c says why) */
#define PX_EINPUT    (-5010) /* a peer sent more than its input buffer holds */

/* The end of a stream, as libuv says it (UV_EOF), for modules that do not
 * include uv.h (tls.c); conn.c checks that the two agree. */
#define PX_EOF (-4095)

const char *px_strerror(int err);

#define PX_ARRAY_LEN(a) (sizeof(a) / sizeof *(a))

/* Writes all of p[0..n) to fd, across short writes and EINTR. Returns 0
 * or a negative errno. */
static inline int px_write_all(int fd, const char *p, size_t n)
{
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

#endif
