/* tls.c - OpenSSL over two memory BIOs. See tls.h.
 *
 * Rules kept everywhere: the error queue is cleared before and read right
 * after every SSL call; the caller drains the write BIO after every call;
 * the read BIO says "retry" rather than EOF when empty.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "px.h"

/* Mozilla's "intermediate" TLS 1.2 list: ECDHE key exchange with AES-GCM or
 * ChaCha20-Poly1305 only. TLS 1.3 suites are OpenSSL's (all AEAD). */
#define PX_DEFAULT_CIPHERS                                                     \
  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                 \
  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                 \
  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* A memory BIO keeps the largest buffer it ever held. conn.c feeds and
 * drains in slices of about a record, and px_tls_trim() replaces an empty
 * BIO above this size when the leg goes idle, so that idle sessions hold
 * little and busy ones do not churn buffers. */
#define PX_TLS_BIO_KEEP (4 * 1024)

/* RFC 2595 and the IANA ALPN registry: "pop3". */
static const unsigned char alpn_pop3[] = { 4, 'p', 'o', 'p', '3' };

struct px_tls {
  SSL *ssl;
  BIO *rbio, *wbio;
  int server;
  int done;
  char err[160];
  char sni[256];
};

/* ---- contexts ----------------------------------------------------------- */

/* The first error of the queue: it names the cause ("no start line"); the
 * last one names the step that gave up ("PEM lib"). */
static void ssl_err(char *buf, size_t len)
{
  unsigned long e = ERR_peek_error();

  if (e == 0) {
    snprintf(buf, len, "unknown error");
  } else {
    const char *r = ERR_reason_error_string(e);
    snprintf(buf, len, "%s", r != NULL ? r : "unknown error");
  }
  ERR_clear_error();
}

static size_t errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static size_t errf(char *err, size_t errlen, const char *fmt, ...)
{
  size_t used = strlen(err);
  va_list ap;

  if (used + 1 >= errlen)
    return used;
  va_start(ap, fmt);
  vsnprintf(err + used, errlen - used, fmt, ap);
  va_end(ap);
  return strlen(err);
}

/* Picks the context whose certificate holds the client's SNI name; the
 * default one (the first) stays when none does. */
static int servername_cb(SSL *ssl, int *alert, void *arg)
{
  const struct px_tls_listener *l = arg;
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

  (void)alert;
  if (name == NULL)
    return SSL_TLSEXT_ERR_NOACK;
  for (size_t i = 0; i < l->n; i++) {
    X509 *cert = SSL_CTX_get0_certificate(l->ctx[i]);
    if (cert != NULL && X509_check_host(cert, name, 0, 0, NULL) == 1) {
      if (i > 0)
        SSL_set_SSL_CTX(ssl, l->ctx[i]);
      return SSL_TLSEXT_ERR_OK;
    }
  }
  return SSL_TLSEXT_ERR_OK;
}

/* A client that offers ALPN must offer "pop3": refusing others keeps this
 * port out of cross-protocol attacks (ALPACA). No ALPN is fine. */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
  unsigned char *sel;

  (void)ssl;
  (void)arg;
  if (SSL_select_next_proto(&sel, outlen, alpn_pop3, sizeof alpn_pop3, in,
                            inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *server_ctx(const struct px_conf *c,
                           const struct px_conf_listener *cl,
                           const struct px_conf_certkey *ck, char *err,
                           size_t errlen)
{
  static const unsigned char sid_ctx[] = "popgate";
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  char why[160];

  if (ctx == NULL) {
    ssl_err(why, sizeof why);
    errf(err, errlen, "%s:%d: [listener:%s] TLS context: %s\n", c->path,
         cl->line, cl->name, why);
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, cl->tls_min_version);
  /* Compression is off by default in OpenSSL 3 (CRIME), client-initiated
   * renegotiation too; say both anyway. */
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_CLEANSE_PLAINTEXT);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
  /* One TLS 1.3 ticket is enough to resume; the default two cost every
   * handshake a second one. */
  SSL_CTX_set_num_tickets(ctx, 1);
  SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
  if (SSL_CTX_set_cipher_list(
          ctx, cl->ciphers != NULL ? cl->ciphers : PX_DEFAULT_CIPHERS) != 1) {
    ssl_err(why, sizeof why);
    errf(err, errlen, "%s:%d: [listener:%s] ciphers: %s\n", c->path,
         cl->ciphers_line ? cl->ciphers_line : cl->line, cl->name, why);
    goto fail;
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, ck->cert) != 1) {
    ssl_err(why, sizeof why);
    errf(err, errlen, "%s:%d: [listener:%s] cert %s: %s\n", c->path, ck->line,
         cl->name, ck->cert, why);
    goto fail;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, ck->key, SSL_FILETYPE_PEM) != 1) {
    ssl_err(why, sizeof why);
    errf(err, errlen, "%s:%d: [listener:%s] key %s: %s\n", c->path,
         ck->key_line, cl->name, ck->key, why);
    goto fail;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ssl_err(why, sizeof why);
    errf(err, errlen,
         "%s:%d: [listener:%s] key %s does not match cert %s: "
         "%s\n",
         c->path, ck->key_line, cl->name, ck->key, ck->cert, why);
    goto fail;
  }
  return ctx;
fail:
  SSL_CTX_free(ctx);
  return NULL;
}

static SSL_CTX *client_ctx(const struct px_conf *c,
                           const struct px_conf_upstream *cu, char *err,
                           size_t errlen)
{
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  char why[160];

  if (ctx == NULL) {
    ssl_err(why, sizeof why);
    errf(err, errlen, "%s:%d: [upstream:%s] TLS context: %s\n", c->path,
         cu->line, cu->name, why);
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  /* Plaintext buffers are wiped once used: passwords cross both legs. */
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CLEANSE_PLAINTEXT);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_alpn_protos(ctx, alpn_pop3, sizeof alpn_pop3);
  if (SSL_CTX_set_cipher_list(ctx, PX_DEFAULT_CIPHERS) != 1) {
    ssl_err(why, sizeof why);
    errf(err, errlen, "%s:%d: [upstream:%s] ciphers: %s\n", c->path, cu->line,
         cu->name, why);
    goto fail;
  }
  SSL_CTX_set_verify(ctx, cu->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
  if (cu->ca_file != NULL) {
    if (SSL_CTX_load_verify_locations(ctx, cu->ca_file, NULL) != 1) {
      ssl_err(why, sizeof why);
      errf(err, errlen, "%s:%d: [upstream:%s] ca_file %s: %s\n", c->path,
           cu->ca_file_line, cu->name, cu->ca_file, why);
      goto fail;
    }
  } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
    ssl_err(why, sizeof why);
    errf(err, errlen, "%s:%d: [upstream:%s] the system's CA store: %s\n",
         c->path, cu->line, cu->name, why);
    goto fail;
  }
  if (cu->client.cert != NULL) {
    if (SSL_CTX_use_certificate_chain_file(ctx, cu->client.cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, cu->client.key, SSL_FILETYPE_PEM) !=
            1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      ssl_err(why, sizeof why);
      errf(err, errlen, "%s:%d: [upstream:%s] client cert %s / key %s: %s\n",
           c->path, cu->client.line, cu->name, cu->client.cert, cu->client.key,
           why);
      goto fail;
    }
  }
  return ctx;
fail:
  SSL_CTX_free(ctx);
  return NULL;
}

static void ctxs_free(struct px_tls_ctxs *x);

int px_tls_ctxs_new(const struct px_conf *c, struct px_tls_ctxs **out,
                    char *err, size_t errlen)
{
  struct px_tls_ctxs *x = calloc(1, sizeof *x);
  int bad = 0;

  if (errlen > 0)
    err[0] = '\0';
  if (x == NULL)
    return -ENOMEM;
  x->nlisteners = c->nlisteners;
  x->nupstreams = c->nupstreams;
  x->listeners =
      calloc(c->nlisteners ? c->nlisteners : 1, sizeof *x->listeners);
  x->upstreams =
      calloc(c->nupstreams ? c->nupstreams : 1, sizeof *x->upstreams);
  if (x->listeners == NULL || x->upstreams == NULL) {
    ctxs_free(x);
    return -ENOMEM;
  }
  for (size_t i = 0; i < c->nlisteners; i++) {
    const struct px_conf_listener *cl = &c->listeners[i];
    struct px_tls_listener *l = &x->listeners[i];
    if (cl->tls == PX_TLS_OFF)
      continue;
    l->ctx = calloc(cl->ncerts, sizeof *l->ctx);
    if (l->ctx == NULL) {
      ctxs_free(x);
      return -ENOMEM;
    }
    for (size_t k = 0; k < cl->ncerts; k++) {
      l->ctx[k] = server_ctx(c, cl, &cl->certs[k], err, errlen);
      if (l->ctx[k] == NULL) {
        bad = 1;
        break;
      }
      l->n++;
    }
    if (l->n > 0)
      SSL_CTX_set_tlsext_servername_callback(l->ctx[0], servername_cb);
    if (l->n > 0)
      SSL_CTX_set_tlsext_servername_arg(l->ctx[0], l);
  }
  for (size_t i = 0; i < c->nupstreams; i++) {
    const struct px_conf_upstream *cu = &c->upstreams[i];
    if (cu->tls == PX_TLS_OFF)
      continue;
    x->upstreams[i] = client_ctx(c, cu, err, errlen);
    if (x->upstreams[i] == NULL)
      bad = 1;
  }
  if (bad) {
    ctxs_free(x);
    return -EINVAL;
  }
  x->refs = 1;
  *out = x;
  return 0;
}

void px_tls_ctxs_ref(struct px_tls_ctxs *x)
{
  __atomic_add_fetch(&x->refs, 1, __ATOMIC_RELAXED);
}

void px_tls_ctxs_unref(struct px_tls_ctxs **cp)
{
  struct px_tls_ctxs *x = *cp;

  *cp = NULL;
  if (x != NULL && __atomic_sub_fetch(&x->refs, 1, __ATOMIC_ACQ_REL) == 0)
    ctxs_free(x);
}

static void ctxs_free(struct px_tls_ctxs *x)
{
  if (x->listeners != NULL)
    for (size_t i = 0; i < x->nlisteners; i++) {
      for (size_t k = 0; k < x->listeners[i].n; k++)
        SSL_CTX_free(x->listeners[i].ctx[k]);
      free(x->listeners[i].ctx);
    }
  if (x->upstreams != NULL)
    for (size_t i = 0; i < x->nupstreams; i++)
      SSL_CTX_free(x->upstreams[i]);
  free(x->listeners);
  free(x->upstreams);
  free(x);
}

/* ---- sessions ----------------------------------------------------------- */

static BIO *mem_bio(void)
{
  BIO *b = BIO_new(BIO_s_mem());

  /* An empty read BIO means "come back later", not end of stream. */
  if (b != NULL)
    BIO_set_mem_eof_return(b, -1);
  return b;
}

/* Replaces an empty BIO that grew large by a fresh one. which: 0 = read
 * BIO, 1 = write BIO. Keeps the old one when memory is short. */
static void trim_bio(struct px_tls *t, int which)
{
  BIO *b = which ? t->wbio : t->rbio, *nb;
  BUF_MEM *m = NULL;

  if (BIO_ctrl_pending(b) != 0 || BIO_get_mem_ptr(b, &m) != 1 || m == NULL ||
      m->max <= PX_TLS_BIO_KEEP)
    return;
  nb = mem_bio();
  if (nb == NULL)
    return;
  if (which) {
    SSL_set0_wbio(t->ssl, nb); /* frees the old one */
    t->wbio = nb;
  } else {
    SSL_set0_rbio(t->ssl, nb);
    t->rbio = nb;
  }
}

static struct px_tls *tls_new(SSL_CTX *ctx, int server)
{
  struct px_tls *t = calloc(1, sizeof *t);

  if (t == NULL)
    return NULL;
  t->server = server;
  t->ssl = SSL_new(ctx);
  t->rbio = mem_bio();
  t->wbio = mem_bio();
  if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    SSL_free(t->ssl);
    free(t);
    ERR_clear_error();
    return NULL;
  }
  SSL_set_bio(t->ssl, t->rbio, t->wbio);
  if (server)
    SSL_set_accept_state(t->ssl);
  else
    SSL_set_connect_state(t->ssl);
  return t;
}

struct px_tls *px_tls_new_server(const struct px_tls_listener *l)
{
  return l->n > 0 ? tls_new(l->ctx[0], 1) : NULL;
}

struct px_tls *px_tls_new_client(SSL_CTX *ctx, const char *name, int verify)
{
  struct px_tls *t = tls_new(ctx, 0);
  unsigned char ip[16];
  int is_ip;

  if (t == NULL || name == NULL)
    return t;
  is_ip =
      inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
  snprintf(t->sni, sizeof t->sni, "%s", name);
  /* RFC 6066 3: no IP literals in SNI. */
  if (!is_ip && SSL_set_tlsext_host_name(t->ssl, name) != 1)
    goto fail;
  if (verify) {
    if (is_ip) {
      X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
      if (X509_VERIFY_PARAM_set1_ip_asc(vp, name) != 1)
        goto fail;
    } else {
      SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      if (SSL_set1_host(t->ssl, name) != 1)
        goto fail;
    }
  }
  return t;
fail:
  ERR_clear_error();
  px_tls_free(&t);
  return NULL;
}

void px_tls_free(struct px_tls **tp)
{
  struct px_tls *t = *tp;

  *tp = NULL;
  if (t == NULL)
    return;
  SSL_free(t->ssl); /* frees both BIOs */
  free(t);
}

int px_tls_feed(struct px_tls *t, const void *ct, size_t n)
{
  while (n > 0) {
    int chunk = n > (1u << 30) ? 1 << 30 : (int)n;
    int w = BIO_write(t->rbio, ct, chunk);
    if (w <= 0)
      return -ENOMEM;
    ct = (const char *)ct + w;
    n -= (size_t)w;
  }
  return 0;
}

/* Records why the last call failed. A failed certificate check says more
 * than the handshake's generic "certificate verify failed". */
static int fail(struct px_tls *t)
{
  long v = t->server ? X509_V_OK : SSL_get_verify_result(t->ssl);

  if (v != X509_V_OK)
    snprintf(t->err, sizeof t->err, "%s", X509_verify_cert_error_string(v));
  else
    ssl_err(t->err, sizeof t->err);
  ERR_clear_error();
  return PX_ETLS;
}

int px_tls_handshake(struct px_tls *t)
{
  int r, e;

  if (t->done)
    return 1;
  ERR_clear_error();
  r = SSL_do_handshake(t->ssl);
  if (r == 1) {
    t->done = 1;
    if (t->server) {
      const char *name = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
      if (name != NULL)
        snprintf(t->sni, sizeof t->sni, "%s", name);
    }
    return 1;
  }
  e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
    return 0;
  return fail(t);
}

ssize_t px_tls_read(struct px_tls *t, void *pt, size_t cap)
{
  int r, e;

  ERR_clear_error();
  r = SSL_read(t->ssl, pt, cap > (1u << 30) ? 1 << 30 : (int)cap);
  if (r > 0)
    return r;
  e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
    return 0;
  if (e == SSL_ERROR_ZERO_RETURN)
    return PX_EOF;
  return fail(t);
}

ssize_t px_tls_write(struct px_tls *t, const void *pt, size_t n)
{
  size_t done = 0;

  while (done < n) {
    size_t left = n - done;
    int r;
    ERR_clear_error();
    r = SSL_write(t->ssl, (const char *)pt + done,
                  left > (1u << 30) ? 1 << 30 : (int)left);
    if (r <= 0)
      return fail(t);
    done += (size_t)r;
  }
  return (ssize_t)n;
}

void px_tls_shutdown(struct px_tls *t)
{
  ERR_clear_error();
  if (t->done)
    SSL_shutdown(t->ssl);
  ERR_clear_error();
}

size_t px_tls_pending_out(const struct px_tls *t)
{
  return BIO_ctrl_pending(t->wbio);
}

size_t px_tls_take_out(struct px_tls *t, void *ct, size_t cap)
{
  int r = BIO_read(t->wbio, ct, cap > (1u << 30) ? 1 << 30 : (int)cap);

  return r > 0 ? (size_t)r : 0;
}

void px_tls_trim(struct px_tls *t)
{
  trim_bio(t, 0);
  trim_bio(t, 1);
}

int px_tls_done(const struct px_tls *t)
{
  return t->done;
}

const char *px_tls_error(const struct px_tls *t)
{
  return t->err[0] ? t->err : "unknown error";
}

const char *px_tls_version(const struct px_tls *t)
{
  return t->done ? SSL_get_version(t->ssl) : "-";
}

const char *px_tls_cipher(const struct px_tls *t)
{
  const char *c = t->done ? SSL_get_cipher_name(t->ssl) : NULL;
  return c != NULL ? c : "-";
}

const char *px_tls_sni(const struct px_tls *t)
{
  return t->sni[0] ? t->sni : "-";
}
