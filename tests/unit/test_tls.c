/* test_tls.c - tls.c driven with bytes: a server and a client instance
 * wired together in memory, with certificates made for the run by the
 * openssl command (never committed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "conf.h"
#include "px.h"
#include "tls.h"

static char dir[] = "/tmp/popgate-test-tls-XXXXXX";
static char path_buf[8][512];

static const char *path(int i, const char *name)
{
  snprintf(path_buf[i], sizeof path_buf[i], "%s/%s", dir, name);
  return path_buf[i];
}

/* A CA, pop.test (also 127.0.0.1) and other.test signed by it, and a
 * self-signed cert for pop.test. */
static int make_certs(void **state)
{
  char cmd[4096];

  (void)state;
  if (mkdtemp(dir) == NULL)
    return -1;
  snprintf(
    cmd, sizeof cmd,
    "set -e; cd %s; exec >log 2>&1;"
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
    "  -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca;"
    "for n in pop.test other.test; do"
    "  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
    "    -keyout $n.key -out $n.csr -subj /CN=$n;"
    "  printf 'subjectAltName=DNS:%%s,IP:127.0.0.1\\n' $n > $n.ext;"
    "  openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key"
    "    -CAcreateserial -days 2 -extfile $n.ext -out $n.pem;"
    "done;"
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
    "  -keyout self.key -out self.pem -days 2 -subj /CN=pop.test "
    "  -addext subjectAltName=DNS:pop.test",
    dir);
  return system(cmd) == 0 ? 0 : -1;
}

static int remove_certs(void **state)
{
  char cmd[1024];

  (void)state;
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

/* A configuration with one implicit listener (cert pairs as given) and
 * one verifying upstream that trusts ca_file. */
struct fixture {
  struct px_conf c;
  struct px_conf_listener l;
  struct px_conf_upstream u;
  struct px_conf_certkey ck[2];
  struct px_tls_ctxs *x;
};

static int fixture_ctxs(struct fixture *f, const char *certs[][2], size_t n,
                        const char *ca, char *err, size_t errlen)
{
  memset(f, 0, sizeof *f);
  f->c.path = "test.ini";
  f->c.listeners = &f->l;
  f->c.nlisteners = 1;
  f->c.upstreams = &f->u;
  f->c.nupstreams = 1;
  f->l.name = "l";
  f->l.line = 1;
  f->l.tls = PX_TLS_IMPLICIT;
  f->l.tls_min_version = TLS1_2_VERSION;
  f->l.certs = f->ck;
  f->l.ncerts = n;
  for (size_t i = 0; i < n; i++) {
    f->ck[i].cert = (char *)certs[i][0];
    f->ck[i].key = (char *)certs[i][1];
    f->ck[i].line = 10 + 2 * (int)i;
    f->ck[i].key_line = 11 + 2 * (int)i;
  }
  f->u.name = "u";
  f->u.line = 20;
  f->u.tls = PX_TLS_IMPLICIT;
  f->u.verify = 1;
  f->u.ca_file = (char *)ca;
  f->u.ca_file_line = 21;
  return px_tls_ctxs_new(&f->c, &f->x, err, errlen);
}

/* Moves every pending byte from a to b, in chunks of at most step bytes
 * (step 1 = byte by byte). Returns the bytes moved. */
static size_t pump(struct px_tls *a, struct px_tls *b, size_t step)
{
  char buf[16384];
  size_t moved = 0, n;

  while ((n = px_tls_take_out(a, buf, step < sizeof buf ? step
                                                        : sizeof buf)) > 0) {
    assert_int_equal(px_tls_feed(b, buf, n), 0);
    moved += n;
  }
  return moved;
}

/* Runs both handshakes to their end; returns the client's result. */
static int handshake(struct px_tls *srv, struct px_tls *cli, size_t step)
{
  int rs = 0, rc = 0;

  for (int round = 0; round < 20000; round++) {
    if (rc != 1)
      rc = px_tls_handshake(cli);
    pump(cli, srv, step);
    if (rs != 1)
      rs = px_tls_handshake(srv);
    pump(srv, cli, step);
    if (rc < 0 || rs < 0)
      return rc < 0 ? rc : rs;
    if (rc == 1 && rs == 1)
      return 1;
  }
  return 0;
}

static void run_exchange(size_t step)
{
  const char *certs[][2] = { { path(0, "pop.test.pem"),
                               path(1, "pop.test.key") } };
  struct fixture f;
  char err[1024], buf[65536];
  struct px_tls *srv, *cli;
  const char *msg = "+OK popgate ready\r\n";
  ssize_t n;

  assert_int_equal(fixture_ctxs(&f, certs, 1, path(2, "ca.pem"), err,
                                sizeof err),
                   0);
  srv = px_tls_new_server(&f.x->listeners[0]);
  cli = px_tls_new_client(f.x->upstreams[0], "pop.test", 1);
  assert_non_null(srv);
  assert_non_null(cli);
  assert_int_equal(handshake(srv, cli, step), 1);
  assert_true(px_tls_done(srv) && px_tls_done(cli));
  assert_string_equal(px_tls_sni(srv), "pop.test");
  assert_true(strcmp(px_tls_version(srv), "TLSv1.3") == 0);
  assert_string_equal(px_tls_cipher(srv), px_tls_cipher(cli));

  /* Server to client, then a large client to server write. */
  assert_int_equal(px_tls_write(srv, msg, strlen(msg)), (ssize_t)strlen(msg));
  pump(srv, cli, step);
  n = px_tls_read(cli, buf, sizeof buf);
  assert_int_equal(n, (ssize_t)strlen(msg));
  assert_memory_equal(buf, msg, strlen(msg));
  assert_int_equal(px_tls_read(cli, buf, sizeof buf), 0);
  {
    static char big[200000];
    size_t got = 0;
    for (size_t i = 0; i < sizeof big; i++)
      big[i] = (char)(i * 7);
    assert_int_equal(px_tls_write(cli, big, sizeof big), (ssize_t)sizeof big);
    pump(cli, srv, step == 1 ? 4096 : step);
    while ((n = px_tls_read(srv, buf, sizeof buf)) > 0) {
      assert_memory_equal(buf, big + got, (size_t)n);
      got += (size_t)n;
    }
    assert_int_equal(n, 0);
    assert_int_equal(got, sizeof big);
  }

  /* close_notify reads as end of stream. */
  px_tls_shutdown(srv);
  pump(srv, cli, step);
  assert_int_equal(px_tls_read(cli, buf, sizeof buf), UV_EOF);

  px_tls_free(&srv);
  px_tls_free(&cli);
  assert_null(srv);
  px_tls_ctxs_unref(&f.x);
}

static void test_exchange_whole(void **state)
{
  (void)state;
  run_exchange(1 << 20);
}

static void test_exchange_byte_by_byte(void **state)
{
  (void)state;
  run_exchange(1);
}

static void test_exchange_small_chunks(void **state)
{
  (void)state;
  run_exchange(7);
}

/* Loads f with one cert/key pair (from the run's directory) and the CA. */
static void load_one(struct fixture *f, const char *pem, const char *key)
{
  const char *certs[][2] = { { path(0, pem), path(1, key) } };
  char err[1024];

  assert_int_equal(fixture_ctxs(f, certs, 1, path(2, "ca.pem"), err,
                                sizeof err),
                   0);
}

/* A fresh server and client on f's contexts, the client naming name and
 * checking it when verify is set; returns the handshake's result. The
 * pair stays in *srv and *cli for the caller to look at and free. */
static int try_pair(struct fixture *f, const char *name, int verify,
                    struct px_tls **srv, struct px_tls **cli)
{
  *srv = px_tls_new_server(&f->x->listeners[0]);
  *cli = px_tls_new_client(f->x->upstreams[0], name, verify);
  assert_non_null(*srv);
  assert_non_null(*cli);
  return handshake(*srv, *cli, 1 << 20);
}

static void free_pair(struct px_tls **srv, struct px_tls **cli)
{
  px_tls_free(srv);
  px_tls_free(cli);
}

static void test_wrong_name_refused(void **state)
{
  struct fixture f;
  struct px_tls *srv, *cli;

  (void)state;
  load_one(&f, "pop.test.pem", "pop.test.key");
  assert_int_equal(try_pair(&f, "mail.example", 1, &srv, &cli), PX_ETLS);
  assert_non_null(strstr(px_tls_error(cli), "hostname mismatch"));
  free_pair(&srv, &cli);

  /* The same name unchecked (verify = no) goes through. */
  SSL_CTX_set_verify(f.x->upstreams[0], SSL_VERIFY_NONE, NULL);
  assert_int_equal(try_pair(&f, "mail.example", 0, &srv, &cli), 1);
  free_pair(&srv, &cli);
  px_tls_ctxs_unref(&f.x);
}

static void test_ip_name_checked(void **state)
{
  struct fixture f;
  struct px_tls *srv, *cli;

  (void)state;
  load_one(&f, "pop.test.pem", "pop.test.key");
  assert_int_equal(try_pair(&f, "127.0.0.1", 1, &srv, &cli), 1);
  assert_string_equal(px_tls_sni(srv), "-"); /* no IP literal in SNI */
  free_pair(&srv, &cli);
  assert_int_equal(try_pair(&f, "127.0.0.2", 1, &srv, &cli), PX_ETLS);
  free_pair(&srv, &cli);
  px_tls_ctxs_unref(&f.x);
}

static void test_self_signed_refused(void **state)
{
  struct fixture f;
  struct px_tls *srv, *cli;

  (void)state;
  load_one(&f, "self.pem", "self.key");
  assert_int_equal(try_pair(&f, "pop.test", 1, &srv, &cli), PX_ETLS);
  assert_non_null(strstr(px_tls_error(cli), "self-signed"));
  free_pair(&srv, &cli);
  px_tls_ctxs_unref(&f.x);
}

/* With two pairs, the client's SNI picks the certificate: a client that
 * verifies other.test succeeds only if it was shown other.test's. */
static void test_sni_selects_certificate(void **state)
{
  const char *certs[][2] = {
    { path(0, "pop.test.pem"), path(1, "pop.test.key") },
    { path(3, "other.test.pem"), path(4, "other.test.key") }
  };
  struct fixture f;
  char err[1024];
  struct px_tls *srv, *cli;

  (void)state;
  assert_int_equal(fixture_ctxs(&f, certs, 2, path(2, "ca.pem"), err,
                                sizeof err),
                   0);
  assert_int_equal(try_pair(&f, "other.test", 1, &srv, &cli), 1);
  assert_string_equal(px_tls_sni(srv), "other.test");
  free_pair(&srv, &cli);
  assert_int_equal(try_pair(&f, "pop.test", 1, &srv, &cli), 1);
  free_pair(&srv, &cli);
  px_tls_ctxs_unref(&f.x);
}

static void test_garbage_fails_handshake(void **state)
{
  const char *certs[][2] = { { path(0, "pop.test.pem"),
                               path(1, "pop.test.key") } };
  struct fixture f;
  char err[1024];
  struct px_tls *srv;
  static const char get[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

  (void)state;
  assert_int_equal(fixture_ctxs(&f, certs, 1, path(2, "ca.pem"), err,
                                sizeof err),
                   0);
  srv = px_tls_new_server(&f.x->listeners[0]);
  assert_int_equal(px_tls_feed(srv, get, sizeof get - 1), 0);
  assert_int_equal(px_tls_handshake(srv), PX_ETLS);
  assert_true(strlen(px_tls_error(srv)) > 0);
  px_tls_free(&srv);
  px_tls_ctxs_unref(&f.x);
}

static void test_bad_files_name_their_line(void **state)
{
  const char *mismatch[][2] = { { path(0, "pop.test.pem"),
                                  path(1, "other.test.key") } };
  const char *notcert[][2] = { { path(5, "pop.test.key"),
                                 path(5, "pop.test.key") } };
  struct fixture f;
  char err[1024];

  (void)state;
  assert_true(fixture_ctxs(&f, mismatch, 1, path(2, "ca.pem"), err,
                           sizeof err) < 0);
  assert_non_null(strstr(err, "test.ini:11: [listener:l] key "));
  assert_non_null(strstr(err, "mismatch"));
  assert_true(fixture_ctxs(&f, notcert, 1, path(2, "ca.pem"), err,
                           sizeof err) < 0);
  assert_non_null(strstr(err, "test.ini:10: [listener:l] cert "));
  assert_non_null(strstr(err, "no start line")); /* the first reason */
  assert_true(fixture_ctxs(&f, mismatch, 0, path(6, "pop.test.key"), err,
                           sizeof err) < 0);
  assert_non_null(strstr(err, "test.ini:21: [upstream:u] ca_file "));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_exchange_whole),
    cmocka_unit_test(test_exchange_byte_by_byte),
    cmocka_unit_test(test_exchange_small_chunks),
    cmocka_unit_test(test_wrong_name_refused),
    cmocka_unit_test(test_ip_name_checked),
    cmocka_unit_test(test_self_signed_refused),
    cmocka_unit_test(test_sni_selects_certificate),
    cmocka_unit_test(test_garbage_fails_handshake),
    cmocka_unit_test(test_bad_files_name_their_line),
  };
  return cmocka_run_group_tests(tests, make_certs, remove_certs);
}
