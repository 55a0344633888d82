/* conf_tls.c - the TLS keys of [listener:NAME] and [upstream:NAME], and
 * what a section's tls mode implies.
 *
 * cert, key and ca_file name files that must be readable now; they are
 * opened and closed, never parsed: tls.c loads them with OpenSSL, which
 * also judges a cipher list here (on a throwaway context). What a
 * listener's tls mode implies (cert and key pairs, require_tls) is checked
 * once its section is whole, from conf_finish(). A valid file may still earn
 * warnings (px_conf_warnings in conf_check.c), which -t prints.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_int.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* A file that tls.c will load later: an absolute path (the working
 * directory of "popgate -t" is not the daemon's) to a regular file that
 * can be opened for reading now. Only that: OpenSSL judges the content.
 * stat() comes first so that a device or a FIFO is never opened.
 * On return *out holds a copy of v whatever the verdict (NULL only when
 * memory is short), so that cert and key lines still pair up after an
 * error. Returns 0, -EINVAL (reported) or -ENOMEM. */
static int file_value(struct loader *L, const struct key_def *k, const char *v,
                      char **out)
{
  char q[PX_CONF_SHOW + 4], ebuf[128];
  struct stat st;
  int fd, e;

  if ((*out = conf_xstrdup(L, v)) == NULL)
    return -ENOMEM;
  if (v[0] != '/' || v[strlen(v) - 1] == '/' || conf_has_ctl(v)) {
    conf_bad(L, "bad value \"%s\" for %s (use an absolute file path)",
             px_conf_show(q, v), k->name);
    return -EINVAL;
  }
  if (stat(v, &st) == -1) {
    e = errno;
    conf_bad(L, "cannot read %s \"%s\": %s", k->name, px_conf_show(q, v),
             ERRSTR(e, ebuf));
    return -EINVAL;
  }
  if (!S_ISREG(st.st_mode)) {
    conf_bad(L, "cannot read %s \"%s\": not a regular file", k->name,
             px_conf_show(q, v));
    return -EINVAL;
  }
  fd = open(v, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd == -1) {
    e = errno;
    conf_bad(L, "cannot read %s \"%s\": %s", k->name, px_conf_show(q, v),
             ERRSTR(e, ebuf));
    return -EINVAL;
  }
  close(fd);
  return 0;
}

/* ca_file, and the upstream's one cert and key. */
int conf_p_file(struct loader *L, const struct key_def *k, const char *v,
                void *base)
{
  char **dst = FIELD(base, k->off, char *);
  char *s;
  int rc = file_value(L, k, v, &s);

  if (s != NULL) {
    free(*dst);
    *dst = s;
  }
  return rc;
}

/* A listener's cert and key lines: the i-th cert and the i-th key, in file
 * order, fill slot i of the array at k->off (length at k->off_n), so either
 * may come first; the section's sec_info counts both. conf_finish() reports a
 * slot with only one of the two. */
static int certkey_add(struct loader *L, const struct key_def *k, const char *v,
                       void *base, int is_key)
{
  struct px_conf_certkey **arr = FIELD(base, k->off, struct px_conf_certkey *);
  size_t *n = FIELD(base, k->off_n, size_t);
  size_t i = is_key ? L->info->nkey : L->info->ncert;
  struct px_conf_certkey *ck;
  char *s;
  int rc = file_value(L, k, v, &s);

  if (s == NULL)
    return rc;
  if (i == *n) {
    ck = realloc(*arr, (*n + 1) * sizeof **arr);
    if (ck == NULL) {
      free(s);
      conf_oom(L);
      return -ENOMEM;
    }
    *arr = ck;
    memset(&ck[(*n)++], 0, sizeof *ck);
  }
  ck = &(*arr)[i];
  if (is_key) {
    ck->key = s;
    ck->key_line = L->pend.line;
    L->info->nkey++;
  } else {
    ck->cert = s;
    ck->line = L->pend.line;
    L->info->ncert++;
  }
  return rc;
}

int conf_p_cert(struct loader *L, const struct key_def *k, const char *v,
                void *base)
{
  return certkey_add(L, k, v, base, 0);
}

int conf_p_key(struct loader *L, const struct key_def *k, const char *v,
               void *base)
{
  return certkey_add(L, k, v, base, 1);
}

/* TLSv1.2 or TLSv1.3, stored as OpenSSL's version number. */
int conf_p_tls_version(struct loader *L, const struct key_def *k, const char *v,
                       void *base)
{
  static const struct {
    const char *name;
    int version;
  } ok[] = { { "TLSv1.2", TLS1_2_VERSION }, { "TLSv1.3", TLS1_3_VERSION } };
  static const char *const old[] = { "SSLv2", "SSLv3", "TLSv1", "TLSv1.0",
                                     "TLSv1.1" };
  char q[PX_CONF_SHOW + 4];
  size_t i;

  for (i = 0; i < sizeof ok / sizeof *ok; i++) {
    if (strcasecmp(v, ok[i].name) == 0) {
      *FIELD(base, k->off, int) = ok[i].version;
      return 0;
    }
  }
  for (i = 0; i < sizeof old / sizeof *old; i++) {
    if (strcasecmp(v, old[i]) == 0) {
      conf_bad(L, "%s = %s is not allowed (RFC 8996/8997: TLS 1.2 or later)",
               k->name, old[i]);
      return -EINVAL;
    }
  }
  conf_bad(L, "bad value \"%s\" for %s (use TLSv1.2 or TLSv1.3)",
           px_conf_show(q, v), k->name);
  return -EINVAL;
}

/* An OpenSSL cipher string for TLS 1.2 and below. Continuation lines were
 * joined with spaces, which OpenSSL takes as separators like ":". OpenSSL
 * itself is the judge, on a context made for the purpose: it skips words
 * it does not know and fails only when nothing at all matches. */
int conf_p_ciphers(struct loader *L, const struct key_def *k, const char *v,
                   void *base)
{
  char q[PX_CONF_SHOW + 4];
  char **dst = FIELD(base, k->off, char *);
  SSL_CTX *ctx;
  char *s;
  int ok;

  if (conf_has_ctl(v)) {
    conf_bad(L, "bad value \"%s\" for %s (an OpenSSL cipher string)",
             px_conf_show(q, v), k->name);
    return -EINVAL;
  }
  ERR_clear_error();
  ctx = SSL_CTX_new(TLS_method());
  if (ctx == NULL) {
    ERR_clear_error();
    conf_errorf(L, L->pend.line,
                "cannot check %s: OpenSSL could not make a TLS context",
                k->name);
    return -EINVAL;
  }
  ok = SSL_CTX_set_cipher_list(ctx, v) == 1;
  SSL_CTX_free(ctx);
  ERR_clear_error();
  if (!ok) {
    conf_errorf(
        L, L->pend.line,
        "%s = %s matches no TLS 1.2 cipher of this OpenSSL (use a cipher "
        "string such as ECDHE+AESGCM:ECDHE+CHACHA20; TLS 1.3 suites are "
        "not set here)",
        k->name, px_conf_show(q, v));
    return -EINVAL;
  }
  if ((s = conf_xstrdup(L, v)) == NULL)
    return -ENOMEM;
  free(*dst);
  *dst = s;
  return 0;
}

/* A DNS name: dot-separated labels of 1..63 letters, digits, "-" (not at
 * either end) and "_", 253 characters at most, no final dot. Digits and
 * dots alone are left to the IPv4 check. */
static int is_dns_name(const char *s)
{
  size_t n = strlen(s), i, label = 0;

  if (n == 0 || n > 253 || strspn(s, "0123456789.") == n)
    return 0;
  for (i = 0; i < n; i++) {
    if (s[i] == '.') {
      if (label == 0 || s[i - 1] == '-')
        return 0;
      label = 0;
      continue;
    }
    if (strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
               "0123456789-_",
               s[i]) == NULL)
      return 0;
    if ((s[i] == '-' && label == 0) || ++label > 63)
      return 0;
  }
  return label > 0 && s[n - 1] != '-';
}

/* The name the upstream's certificate must match, sent as SNI unless it is
 * an IP address. */
int conf_p_server_name(struct loader *L, const struct key_def *k, const char *v,
                       void *base)
{
  char q[PX_CONF_SHOW + 4];
  char **dst = FIELD(base, k->off, char *);
  char *s;

  if (!conf_is_ip(v) && !is_dns_name(v)) {
    conf_bad(
        L,
        "bad value \"%s\" for %s (use a DNS name such as mail.example or an "
        "IP address, without port or brackets)",
        px_conf_show(q, v), k->name);
    return -EINVAL;
  }
  if ((s = conf_xstrdup(L, v)) == NULL)
    return -ENOMEM;
  free(*dst);
  *dst = s;
  return 0;
}

/* What only a whole [listener:NAME] tells about TLS. Also fills the *_line
 * fields and the default of require_tls, which depends on tls. */
void conf_check_listener_tls(struct loader *L, struct px_conf_listener *l,
                             const struct sec_info *info)
{
  char q[PX_CONF_SHOW + 4];
  int cert_line = conf_seen_line(info, SEC_LISTENER, "cert");
  int key_line = conf_seen_line(info, SEC_LISTENER, "key");
  size_t i;

  l->tls_line = conf_seen_line(info, SEC_LISTENER, "tls");
  l->ciphers_line = conf_seen_line(info, SEC_LISTENER, "ciphers");
  l->require_tls_line = conf_seen_line(info, SEC_LISTENER, "require_tls");
  if (l->require_tls_line == 0)
    l->require_tls = l->tls == PX_TLS_STARTTLS;

  if (l->tls == PX_TLS_OFF) {
    if (cert_line != 0 || key_line != 0)
      conf_errorf(
          L,
          cert_line != 0 && (key_line == 0 || cert_line < key_line) ? cert_line
                                                                    : key_line,
          "cert/key without tls: [listener:%s] has tls = off (set tls = "
          "implicit or starttls, or remove cert and key)",
          l->name);
    if (l->require_tls)
      conf_errorf(
          L, l->require_tls_line,
          "require_tls = yes on a tls = off listener would refuse every "
          "login");
    return;
  }
  if (l->ncerts == 0) {
    conf_errorf(
        L, l->line,
        "tls = %s needs cert and key: add a cert = line and a key = line "
        "to [listener:%s]",
        px_tls_mode_names[l->tls], l->name);
    return;
  }
  for (i = 0; i < l->ncerts; i++) {
    const struct px_conf_certkey *ck = &l->certs[i];
    if (ck->key == NULL)
      conf_errorf(L, ck->line,
                  "cert \"%s\" without a key (cert and key lines pair up in "
                  "order: the first key belongs to the first cert, and so on)",
                  px_conf_show(q, ck->cert));
    else if (ck->cert == NULL)
      conf_errorf(L, ck->key_line,
                  "key \"%s\" without a cert (cert and key lines pair up in "
                  "order: the first key belongs to the first cert, and so on)",
                  px_conf_show(q, ck->key));
  }
}

/* The same for [upstream:NAME]: its client certificate is one optional
 * cert and key pair. */
void conf_check_upstream_tls(struct loader *L, struct px_conf_upstream *u,
                             const struct sec_info *info)
{
  char q[PX_CONF_SHOW + 4];

  u->tls_line = conf_seen_line(info, SEC_UPSTREAM, "tls");
  u->verify_line = conf_seen_line(info, SEC_UPSTREAM, "verify");
  u->ca_file_line = conf_seen_line(info, SEC_UPSTREAM, "ca_file");
  u->client.line = conf_seen_line(info, SEC_UPSTREAM, "cert");
  u->client.key_line = conf_seen_line(info, SEC_UPSTREAM, "key");
  if (u->client.cert != NULL && u->client.key == NULL)
    conf_errorf(
        L, u->client.line,
        "cert \"%s\" without a key (a client certificate needs both cert "
        "and key)",
        px_conf_show(q, u->client.cert));
  else if (u->client.key != NULL && u->client.cert == NULL)
    conf_errorf(
        L, u->client.key_line,
        "key \"%s\" without a cert (a client certificate needs both cert "
        "and key)",
        px_conf_show(q, u->client.key));
}
