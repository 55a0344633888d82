/* tls.h - TLS as a byte transformation: OpenSSL over two memory BIOs.
 *
 * tls.c knows nothing of sockets or libuv: ciphertext from the network is
 * fed in, plaintext comes out, and what OpenSSL wants to send (handshake
 * records, alerts, tickets, KeyUpdate answers) is taken out after every
 * call and written by conn.c. Unit tests wire two instances together in
 * memory.
 *
 * Contexts belong to a configuration generation (px_tls_ctxs, built at
 * start, -t and reload); a session keeps the generation it started with.
 */
#ifndef PX_TLS_H
#define PX_TLS_H

#include <stddef.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "conf.h"

struct px_tls;

/* The server contexts of one listener (one per cert/key pair; the first is
 * the default, the others are picked by SNI) and the client context of
 * one upstream. */
struct px_tls_listener {
  SSL_CTX **ctx;
  size_t n;
};

struct px_tls_ctxs {
  int refs;                          /* px_tls_ctxs_ref/unref, any thread */
  struct px_tls_listener *listeners; /* conf->nlisteners; n = 0 for off */
  SSL_CTX **upstreams;               /* conf->nupstreams; NULL for off */
  size_t nlisteners, nupstreams;
};

/* Builds every context c needs, checking certificates, keys, CA files and
 * cipher lists. On failure returns a negative code and writes
 * "FILE:LINE: message" lines into err. Main thread. */
int px_tls_ctxs_new(const struct px_conf *c, struct px_tls_ctxs **out,
                    char *err, size_t errlen);
void px_tls_ctxs_ref(struct px_tls_ctxs *x);
/* Drops a reference; frees at zero. NULLs *cp. */
void px_tls_ctxs_unref(struct px_tls_ctxs **cp);

/* A server-side session on l's contexts. NULL when memory is short. */
struct px_tls *px_tls_new_server(const struct px_tls_listener *l);

/* A client-side session on ctx. name is sent as SNI (unless it is an IP
 * address) and, when verify is set, checked against the certificate (DNS
 * name or IP address). NULL when memory is short. */
struct px_tls *px_tls_new_client(SSL_CTX *ctx, const char *name, int verify);

void px_tls_free(struct px_tls **tp);

/* Ciphertext from the network. Returns 0 or -ENOMEM. */
int px_tls_feed(struct px_tls *t, const void *ct, size_t n);

/* Advances the handshake. Returns 1 when it is complete, 0 when it needs
 * more bytes from the peer, PX_ETLS on failure (px_tls_error says why). */
int px_tls_handshake(struct px_tls *t);

/* Plaintext received: > 0 bytes, 0 when more ciphertext is needed, PX_EOF
 * after the peer's close_notify, PX_ETLS on failure. Call until it returns
 * 0 or less. */
ssize_t px_tls_read(struct px_tls *t, void *pt, size_t cap);

/* Encrypts all of pt[0..n). Returns n, or PX_ETLS. */
ssize_t px_tls_write(struct px_tls *t, const void *pt, size_t n);

/* Sends close_notify (its bytes come out through px_tls_take_out). */
void px_tls_shutdown(struct px_tls *t);

/* Ciphertext waiting to go to the network, and taking it. */
size_t px_tls_pending_out(const struct px_tls *t);
size_t px_tls_take_out(struct px_tls *t, void *ct, size_t cap);

/* Gives back the memory of emptied buffers; for a leg that went idle. */
void px_tls_trim(struct px_tls *t);

int px_tls_done(const struct px_tls *t);
/* Why the last call failed (OpenSSL's reason, or the certificate check's). */
const char *px_tls_error(const struct px_tls *t);
/* Negotiated protocol ("TLSv1.3"), cipher, and the SNI name received or
 * sent ("-" when none). Valid while t lives. */
const char *px_tls_version(const struct px_tls *t);
const char *px_tls_cipher(const struct px_tls *t);
const char *px_tls_sni(const struct px_tls *t);

#endif
