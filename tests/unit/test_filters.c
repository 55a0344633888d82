/* test_filters.c - unit tests for filters/header.c, command.c and clamd.c.
 *
 * Each filter is driven through its flt_ops, as chain.c drives it, with
 * messages in memory and in a memfd (the spilled case, read with pread).
 * The command filter runs real programs (/bin/cat, /usr/bin/tr, ...); the
 * clamd filter talks to a real clamd that the group setup starts from a
 * config in a temp dir, with a database made there (an MD5 signature of
 * the ClamAV test file clam.exe and an EICAR body signature). Without
 * clamd the clamd tests are skipped, saying why. SIGPIPE is left at its
 * default on purpose: the command filter must survive a program that stops
 * reading without the daemon's SIG_IGN.
 *
 * Build: cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -g
 *        -fsanitize=address,undefined -Iproxy -Ifilters -Itests
 *        tests/unit/test_filters.c filters/header.c filters/command.c
 *        filters/clamd.c $(pkg-config --cflags --libs cmocka libuv)
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "filter.h"
#include "testutil.h"

#define MIB ((size_t)1 << 20)
#ifndef CLAMD_BIN
#define CLAMD_BIN "/usr/sbin/clamd"
#endif
#define N_ELEMS(a) (sizeof(a) / sizeof *(a))

/* The EICAR test string, in two pieces so that this file is no match. */
static const char eicar[] = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-"
                            "ANTIVIRUS-TEST-FILE!$H+H*";
static const char testfiles[] = "/usr/share/clamav-testfiles";

/* ---- helpers ---------------------------------------------------------- */

static uint64_t now_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct flt_msg msg_mem(const char *p, size_t n)
{
  return (struct flt_msg){ .mem = p, .len = n, .fd = -1, .size = n };
}

/* A spilled message: an anonymous file holding p[0..n), its offset left at
 * the end (the filters must use pread). Close m->fd afterwards. */
static struct flt_msg msg_fd(const char *p, size_t n)
{
  int fd = memfd_create("msg", MFD_CLOEXEC);
  size_t off = 0;

  TU_CHECK(fd >= 0);
  while (off < n) {
    ssize_t w = write(fd, p + off, n - off);
    TU_CHECK(w > 0);
    off += (size_t)w;
  }
  return (struct flt_msg){ .mem = NULL, .len = 0, .fd = fd, .size = n };
}

/* Runs one filter over m, init to deinit, as chain.c does. */
static void run_filter(const struct flt_ops *ops,
                       const struct px_conf_filter *cf,
                       const struct flt_msg *m, struct flt_result *r)
{
  void *state = NULL;
  char err[256] = "";

  memset(r, 0, sizeof *r);
  assert_int_equal(ops->type, cf->type);
  if (ops->init != NULL) /* optional: stateless filters have none */
    assert_int_equal(ops->init(NULL, cf, &state, err, sizeof err), 0);
  ops->run(state, cf, m, r);
  if (ops->deinit != NULL)
    ops->deinit(state);
  /* Both strings stay NUL-terminated whatever a filter wrote. */
  assert_non_null(memchr(r->virus, '\0', sizeof r->virus));
  assert_non_null(memchr(r->error, '\0', sizeof r->error));
}

static void result_free(struct flt_result *r)
{
  free(r->hdrs);
  free(r->repl);
  memset(r, 0, sizeof *r);
}

/* A message of n bytes: header lines, then lower-case text lines. */
static char *make_message(size_t n, uint64_t seed)
{
  static const char head[] = "From: a@example.org\r\nSubject: test\r\n\r\n";
  char *p = malloc(n + 1);
  uint64_t rng = seed;

  TU_CHECK(p != NULL);
  for (size_t i = 0; i < n; i++) {
    if (i < sizeof head - 1)
      p[i] = head[i];
    else if (i % 72 == 70)
      p[i] = '\r';
    else if (i % 72 == 71)
      p[i] = '\n';
    else
      p[i] = (char)('a' + rng_below(&rng, 26));
  }
  p[n] = '\0';
  return p;
}

static size_t count_fds(void)
{
  DIR *d = opendir("/proc/self/fd");
  size_t n = 0;

  TU_CHECK(d != NULL);
  while (readdir(d) != NULL)
    n++;
  closedir(d);
  return n;
}

static char *read_file(const char *path, size_t *len)
{
  FILE *f = fopen(path, "rb");
  struct bytes b = { 0 };
  char buf[4096];
  size_t n;

  if (f == NULL)
    return NULL;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0)
    bytes_add(&b, buf, n);
  fclose(f);
  *len = b.n;
  return b.p;
}

/* 1 when pid is gone, or a zombie (SIGKILLed, waiting for its reaper),
 * within a second. */
static int pid_gone(pid_t pid)
{
  for (int i = 0; i < 100; i++) {
    char path[64], *stat;
    size_t n;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    stat = read_file(path, &n);
    if (stat == NULL)
      return 1;
    if (strstr(stat, ") Z ") != NULL) {
      free(stat);
      return 1;
    }
    free(stat);
    poll(NULL, 0, 10);
  }
  return 0;
}

/* ---- header ----------------------------------------------------------- */

static void test_header_lines(void **state)
{
  char *add[] = { "X-Scanned-By: popgate", "X-Filter: a; b=c" };
  struct px_conf_filter cf = { .name = "hdr", .type = PX_FLT_HEADER,
                               .add = add, .nadd = 2 };
  static const char body[] = "Subject: x\r\n\r\nhi\r\n";
  struct flt_msg m = msg_mem(body, sizeof body - 1);
  static const char want[] = "X-Scanned-By: popgate\r\nX-Filter: a; b=c\r\n";
  struct flt_result r;

  (void)state;
  run_filter(&flt_header_ops, &cf, &m, &r);
  assert_non_null(r.hdrs);
  assert_int_equal(r.hdrslen, sizeof want - 1);
  assert_memory_equal(r.hdrs, want, sizeof want - 1);
  assert_null(r.repl);
  assert_string_equal(r.virus, "");
  assert_string_equal(r.error, "");
  result_free(&r);

  /* One line; a spilled message is never read either. */
  cf.nadd = 1;
  m = msg_fd(body, sizeof body - 1);
  run_filter(&flt_header_ops, &cf, &m, &r);
  assert_int_equal(r.hdrslen, strlen("X-Scanned-By: popgate\r\n"));
  assert_memory_equal(r.hdrs, "X-Scanned-By: popgate\r\n", r.hdrslen);
  close(m.fd);
  result_free(&r);
}

/* ---- command ---------------------------------------------------------- */

static struct px_conf_filter command_conf(char **argv, size_t argc,
                                          uint64_t timeout_ms)
{
  return (struct px_conf_filter){ .name = "cmd", .type = PX_FLT_COMMAND,
                                  .argv = argv, .argc = argc,
                                  .scan_timeout_ms = timeout_ms };
}

static void test_command_cat_unchanged(void **state)
{
  char *argv[] = { "/bin/cat", NULL };
  struct px_conf_filter cf = command_conf(argv, 1, 10000);
  char *msg = make_message(5000, 1);
  struct flt_msg m = msg_mem(msg, 5000);
  struct flt_result r;

  (void)state;
  run_filter(&flt_command_ops, &cf, &m, &r);
  assert_string_equal(r.error, "");
  assert_null(r.repl);
  assert_null(r.hdrs);
  result_free(&r);

  /* An empty message gives an empty output: unchanged too. */
  m = msg_mem("", 0);
  run_filter(&flt_command_ops, &cf, &m, &r);
  assert_string_equal(r.error, "");
  assert_null(r.repl);
  free(msg);
}

static void test_command_tr(void **state)
{
  char *argv[] = { "/usr/bin/tr", "a-z", "A-Z", NULL };
  struct px_conf_filter cf = command_conf(argv, 3, 10000);
  static const char body[] = "Subject: hello\r\n\r\nsmall body.\r\n";
  static const char want[] = "SUBJECT: HELLO\r\n\r\nSMALL BODY.\r\n";
  struct flt_msg m = msg_mem(body, sizeof body - 1);
  struct flt_result r;

  (void)state;
  run_filter(&flt_command_ops, &cf, &m, &r);
  assert_string_equal(r.error, "");
  assert_non_null(r.repl);
  assert_int_equal(r.repllen, sizeof want - 1);
  assert_memory_equal(r.repl, want, sizeof want - 1);
  result_free(&r);
}

static void test_command_false(void **state)
{
  char *argv[] = { "/bin/false", NULL };
  char *sh[] = { "/bin/sh", "-c", "cat >/dev/null; echo partial; exit 3",
                 NULL };
  struct px_conf_filter cf = command_conf(argv, 1, 10000);
  struct flt_msg m = msg_mem("Subject: x\r\n\r\n", 14);
  struct flt_result r;

  (void)state;
  run_filter(&flt_command_ops, &cf, &m, &r);
  assert_string_equal(r.error, "exit status 1");
  assert_null(r.repl);
  result_free(&r);

  /* Output with a non-zero exit is not a message. */
  cf = command_conf(sh, 3, 10000);
  run_filter(&flt_command_ops, &cf, &m, &r);
  assert_string_equal(r.error, "exit status 3");
  assert_null(r.repl);
  result_free(&r);
}

static void test_command_signal(void **state)
{
  char *argv[] = { "/bin/sh", "-c", "kill -9 $$", NULL };
  struct px_conf_filter cf = command_conf(argv, 3, 10000);
  struct flt_msg m = msg_mem("Subject: x\r\n\r\n", 14);
  struct flt_result r;

  (void)state;
  run_filter(&flt_command_ops, &cf, &m, &r);
  assert_string_equal(r.error, "killed by signal 9");
  assert_null(r.repl);
  result_free(&r);
}

static void test_command_missing(void **state)
{
  char *argv[] = { "/nonexistent/filter", "-x", NULL };
  struct px_conf_filter cf = command_conf(argv, 2, 10000);
  struct flt_msg m = msg_mem("Subject: x\r\n\r\n", 14);
  struct flt_result r;

  (void)state;
  run_filter(&flt_command_ops, &cf, &m, &r);
  assert_string_equal(r.error, "cannot run /nonexistent/filter: No such "
                               "file or directory");
  assert_null(r.repl);
  result_free(&r);
}

static void test_command_timeout(void **state)
{
  char *argv[] = { "/bin/sleep", "5", NULL };
  struct px_conf_filter cf = command_conf(argv, 2, 1000);
  char *msg = make_message(1 * MIB, 2);
  struct flt_msg m = msg_mem(msg, 1 * MIB);
  struct flt_result r;
  uint64_t t0 = now_ms(), took;

  (void)state;
  /* sleep never reads: the pipe fills, and the deadline ends it. */
  run_filter(&flt_command_ops, &cf, &m, &r);
  took = now_ms() - t0;
  assert_string_equal(r.error, "timed out after 1s");
  assert_null(r.repl);
  assert_in_range(took, 900, 1500);
  result_free(&r);

  /* A program that closes its stdout and lingers is timed out too, and
   * what it started in the background goes with it. */
  char pidfile[] = "/tmp/pg-pid-XXXXXX", script[128], *pidtext;
  size_t pidlen;
  int fd = mkstemp(pidfile);

  TU_CHECK(fd >= 0);
  close(fd);
  snprintf(script, sizeof script,
           "sleep 30 & echo $! >%s; cat; exec >&-; wait", pidfile);
  char *sh[] = { "/bin/sh", "-c", script, NULL };
  cf = command_conf(sh, 3, 700);
  m = msg_mem("x\r\n", 3);
  t0 = now_ms();
  run_filter(&flt_command_ops, &cf, &m, &r);
  took = now_ms() - t0;
  assert_string_equal(r.error, "timed out after 700ms");
  assert_in_range(took, 600, 1200);
  result_free(&r);
  pidtext = read_file(pidfile, &pidlen);
  assert_non_null(pidtext);
  assert_true(pid_gone((pid_t)atoi(pidtext)));
  free(pidtext);
  unlink(pidfile);
  free(msg);
}

/* 4 MiB through cat and through tr, from memory and from a file. */
static void test_command_big(void **state)
{
  char *cat[] = { "/bin/cat", NULL };
  char *tr[] = { "/usr/bin/tr", "a-z", "A-Z", NULL };
  size_t n = 4 * MIB;
  char *msg = make_message(n, 3), *upper = malloc(n);
  struct px_conf_filter cf;
  struct flt_msg mem = msg_mem(msg, n), file = msg_fd(msg, n);
  const struct flt_msg *ms[] = { &mem, &file };
  struct flt_result r;

  (void)state;
  TU_CHECK(upper != NULL);
  for (size_t i = 0; i < n; i++)
    upper[i] = msg[i] >= 'a' && msg[i] <= 'z' ? (char)(msg[i] - 32) : msg[i];
  for (size_t i = 0; i < N_ELEMS(ms); i++) {
    cf = command_conf(cat, 1, 20000);
    run_filter(&flt_command_ops, &cf, ms[i], &r);
    assert_string_equal(r.error, "");
    assert_null(r.repl);
    result_free(&r);

    cf = command_conf(tr, 3, 20000);
    run_filter(&flt_command_ops, &cf, ms[i], &r);
    assert_string_equal(r.error, "");
    assert_non_null(r.repl);
    assert_int_equal(r.repllen, n);
    assert_memory_equal(r.repl, upper, n);
    result_free(&r);
  }
  /* A one-byte change at the very end of a spilled message is a change. */
  {
    char *sh[] = { "/bin/sh", "-c", "head -c -1; printf Z", NULL };

    cf = command_conf(sh, 3, 20000);
    run_filter(&flt_command_ops, &cf, &file, &r);
    assert_string_equal(r.error, "");
    assert_non_null(r.repl);
    assert_int_equal(r.repllen, n);
    assert_memory_equal(r.repl, msg, n - 1);
    assert_int_equal(r.repl[n - 1], 'Z');
    result_free(&r);
  }
  close(file.fd);
  free(upper);
  free(msg);
}

/* A program that stops reading early: EPIPE, no SIGPIPE, its answer kept. */
static void test_command_stops_reading(void **state)
{
  char *argv[] = { "/usr/bin/head", "-c", "10", NULL };
  struct px_conf_filter cf = command_conf(argv, 3, 10000);
  size_t n = 4 * MIB;
  char *msg = make_message(n, 4);
  struct flt_msg m = msg_mem(msg, n);
  struct flt_result r;
  sigset_t pending;

  (void)state;
  run_filter(&flt_command_ops, &cf, &m, &r);
  assert_string_equal(r.error, "");
  assert_non_null(r.repl);
  assert_int_equal(r.repllen, 10);
  assert_memory_equal(r.repl, msg, 10);
  result_free(&r);
  sigemptyset(&pending);
  sigpending(&pending);
  assert_int_equal(sigismember(&pending, SIGPIPE), 0);

  /* One that reads nothing and says nothing swallowed the message. */
  char *t[] = { "/bin/true", NULL };
  cf = command_conf(t, 1, 10000);
  run_filter(&flt_command_ops, &cf, &m, &r);
  assert_string_equal(r.error, "empty output");
  assert_null(r.repl);
  result_free(&r);
  free(msg);
}

static void test_command_output_too_large(void **state)
{
  char *argv[] = { "/bin/cat", "/dev/zero", NULL };
  struct px_conf_filter cf = command_conf(argv, 2, 10000);
  char *msg = make_message(100000, 5);
  struct flt_msg m = msg_mem(msg, 100000);
  struct flt_result r;
  uint64_t t0 = now_ms();

  (void)state;
  run_filter(&flt_command_ops, &cf, &m, &r);
  assert_string_equal(r.error, "output too large");
  assert_null(r.repl);
  assert_true(now_ms() - t0 < 5000);
  result_free(&r);
  free(msg);
}

/* The child sees stdin, stdout, stderr and nothing of ours; we keep no
 * descriptor and no child. */
static void test_command_fds(void **state)
{
  char *argv[] = { "/bin/ls", "/proc/self/fd", NULL };
  struct px_conf_filter cf = command_conf(argv, 2, 10000);
  struct flt_msg m = msg_mem("x", 1);
  struct flt_result r;
  size_t before = count_fds();
  int leak = open("/dev/null", O_RDONLY); /* no O_CLOEXEC, on purpose */

  (void)state;
  TU_CHECK(leak >= 0);
  run_filter(&flt_command_ops, &cf, &m, &r);
  assert_string_equal(r.error, "");
  assert_non_null(r.repl);
  /* 3 is ls's own directory stream. */
  assert_int_equal(r.repllen, 8);
  assert_memory_equal(r.repl, "0\n1\n2\n3\n", 8);
  result_free(&r);
  close(leak);
  assert_int_equal(count_fds(), before);
}

struct par_job {
  char *msg;
  size_t n;
  struct flt_result r;
};

static void *par_run(void *arg)
{
  struct par_job *p = arg;
  char *argv[] = { "/bin/cat", NULL };
  struct px_conf_filter cf = command_conf(argv, 1, 20000);
  struct flt_msg m = msg_mem(p->msg, p->n);

  flt_command_ops.run(NULL, &cf, &m, &p->r);
  return NULL;
}

/* Several pool threads spawn at once: none holds another's pipe open (each
 * cat would wait for an EOF that never comes, until the timeout). */
static void test_command_parallel(void **state)
{
  struct par_job jobs[6];
  pthread_t t[N_ELEMS(jobs)];

  (void)state;
  for (size_t i = 0; i < N_ELEMS(jobs); i++) {
    memset(&jobs[i], 0, sizeof jobs[i]);
    jobs[i].n = MIB + i * 1000;
    jobs[i].msg = make_message(jobs[i].n, 10 + i);
  }
  for (size_t i = 0; i < N_ELEMS(jobs); i++)
    assert_int_equal(pthread_create(&t[i], NULL, par_run, &jobs[i]), 0);
  for (size_t i = 0; i < N_ELEMS(jobs); i++) {
    assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_string_equal(jobs[i].r.error, "");
    assert_null(jobs[i].r.repl);
    free(jobs[i].msg);
  }
}

/* After the command tests: every child was reaped. */
static int command_teardown(void **state)
{
  (void)state;
  if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD) {
    fprintf(stderr, "a command filter left a child behind\n");
    return -1;
  }
  return 0;
}

/* ---- clamd ------------------------------------------------------------ */

struct clamd_env {
  char dir[64];
  char sock[100];
  char tcp[64];
  pid_t pid;
  int made_dir;
  char why[512]; /* why clamd is not there; "" when it is */
};
static struct clamd_env cenv;

static int write_text(const char *path, const char *text)
{
  FILE *f = fopen(path, "w");

  if (f == NULL)
    return -1;
  fputs(text, f);
  return fclose(f) == 0 ? 0 : -1;
}

static int rm_cb(const char *path, const struct stat *st, int flag,
                 struct FTW *ftw)
{
  (void)st;
  (void)flag;
  (void)ftw;
  remove(path);
  return 0;
}

static int free_tcp_port(void)
{
  struct sockaddr_in sin = { .sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  socklen_t len = sizeof sin;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

  if (fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0 &&
      getsockname(fd, (struct sockaddr *)&sin, &len) == 0)
    port = ntohs(sin.sin_port);
  if (fd >= 0)
    close(fd);
  return port;
}

static int unix_connects(const char *path)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

  snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
  ok = fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0;
  if (fd >= 0)
    close(fd);
  return ok;
}

/* Makes the database, the config, starts clamd and waits for its socket.
 * Never fails the group: a clamd that cannot start leaves cenv.why. */
static int clamd_setup(void **state)
{
  char path[256], cmd[512], conf[1024], ndb[256];
  size_t off;
  int port;
  uint64_t t0;

  (void)state;
  memset(&cenv, 0, sizeof cenv);
  snprintf(cenv.dir, sizeof cenv.dir, "/tmp/pg-clamd-XXXXXX");
  if (access(CLAMD_BIN, X_OK) != 0 ||
      access("/usr/bin/sigtool", X_OK) != 0) {
    snprintf(cenv.why, sizeof cenv.why, "clamd or sigtool not installed");
    return 0;
  }
  if (mkdtemp(cenv.dir) == NULL) {
    snprintf(cenv.why, sizeof cenv.why, "mkdtemp: %s", strerror(errno));
    return 0;
  }
  cenv.made_dir = 1;
  snprintf(path, sizeof path, "%s/db", cenv.dir);
  mkdir(path, 0700);
  snprintf(cmd, sizeof cmd, "/usr/bin/sigtool --md5 %s/clam.exe > %s/db/t.hdb",
           testfiles, cenv.dir);
  if (system(cmd) != 0) {
    snprintf(cenv.why, sizeof cenv.why, "%.400s failed", cmd);
    return 0;
  }
  off = (size_t)snprintf(ndb, sizeof ndb, "Eicar-Test-Signature:0:*:");
  for (size_t i = 0; i < sizeof eicar - 1; i++)
    off += (size_t)snprintf(ndb + off, sizeof ndb - off, "%02x",
                            (unsigned char)eicar[i]);
  snprintf(ndb + off, sizeof ndb - off, "\n");
  snprintf(path, sizeof path, "%s/db/t.ndb", cenv.dir);
  if (write_text(path, ndb) != 0) {
    snprintf(cenv.why, sizeof cenv.why, "cannot write %s", path);
    return 0;
  }

  port = free_tcp_port();
  snprintf(cenv.sock, sizeof cenv.sock, "%s/clamd.sock", cenv.dir);
  snprintf(cenv.tcp, sizeof cenv.tcp, "127.0.0.1:%d", port);
  snprintf(conf, sizeof conf,
           "Foreground yes\n"
           "LogFile %s/clamd.log\n"
           "LocalSocket %s\n"
           "TCPSocket %d\n"
           "TCPAddr 127.0.0.1\n"
           "DatabaseDirectory %s/db\n"
           "TemporaryDirectory %s\n"
           "StreamMaxLength 1M\n"
           "MaxFileSize 600K\n"
           "MaxScanSize 600K\n"
           "AlertExceedsMax yes\n"
           "MaxThreads 4\n"
           "Bytecode no\n",
           cenv.dir, cenv.sock, port, cenv.dir, cenv.dir);
  snprintf(path, sizeof path, "%s/clamd.conf", cenv.dir);
  if (write_text(path, conf) != 0) {
    snprintf(cenv.why, sizeof cenv.why, "cannot write %s", path);
    return 0;
  }

  cenv.pid = fork();
  if (cenv.pid == 0) {
    char arg[300];
    int null = open("/dev/null", O_RDWR);

    snprintf(arg, sizeof arg, "--config-file=%s", path);
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2); /* its warnings are in clamd.log */
    execl(CLAMD_BIN, "clamd", arg, (char *)NULL);
    _exit(127);
  }
  if (cenv.pid == -1) {
    snprintf(cenv.why, sizeof cenv.why, "fork: %s", strerror(errno));
    cenv.pid = 0;
    return 0;
  }
  t0 = now_ms();
  while (!unix_connects(cenv.sock)) {
    int status;

    if (waitpid(cenv.pid, &status, WNOHANG) == cenv.pid) {
      size_t n;
      char *log;

      cenv.pid = 0;
      snprintf(path, sizeof path, "%s/clamd.log", cenv.dir);
      log = read_file(path, &n);
      snprintf(cenv.why, sizeof cenv.why, "clamd exited (status %d): %.400s",
               WIFEXITED(status) ? WEXITSTATUS(status) : -1,
               log != NULL ? log : "(no log)");
      free(log);
      return 0;
    }
    if (now_ms() - t0 > 60000) {
      snprintf(cenv.why, sizeof cenv.why, "clamd's socket not up in 60s");
      return 0;
    }
    poll(NULL, 0, 100);
  }
  return 0;
}

static int clamd_teardown(void **state)
{
  (void)state;
  if (cenv.pid > 0) {
    kill(cenv.pid, SIGTERM);
    waitpid(cenv.pid, NULL, 0);
  }
  if (cenv.made_dir)
    nftw(cenv.dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  return 0;
}

#define NEED_CLAMD()                                      \
  do {                                                    \
    if (cenv.why[0] != '\0') {                            \
      print_message("clamd not started: %s\n", cenv.why); \
      skip();                                             \
    }                                                     \
  } while (0)

static struct px_conf_filter clamd_conf(const char *sock, uint64_t timeout_ms)
{
  return (struct px_conf_filter){ .name = "clamd", .type = PX_FLT_CLAMD,
                                  .socket = (char *)sock,
                                  .scan_timeout_ms = timeout_ms };
}

/* Scans p[0..n) from memory and from a file; both must agree. */
static void scan_both(const char *sock, const char *p, size_t n,
                      const char *virus, const char *error)
{
  struct px_conf_filter cf = clamd_conf(sock, 20000);
  struct flt_msg mem = msg_mem(p, n), file = msg_fd(p, n);
  const struct flt_msg *ms[] = { &mem, &file };
  struct flt_result r;

  for (size_t i = 0; i < N_ELEMS(ms); i++) {
    run_filter(&flt_clamd_ops, &cf, ms[i], &r);
    assert_string_equal(r.virus, virus);
    assert_string_equal(r.error, error);
    assert_null(r.hdrs);
    assert_null(r.repl);
  }
  close(file.fd);
}

static void test_clamd_clean(void **state)
{
  static const char body[] = "From: a@example.org\r\nSubject: hi\r\n\r\n"
                             "Nothing to see here.\r\n";
  char *big = make_message(300000, 7);

  (void)state;
  NEED_CLAMD();
  scan_both(cenv.sock, body, sizeof body - 1, "", "");
  scan_both(cenv.sock, big, 300000, "", "");
  scan_both(cenv.sock, "", 0, "", "");
  free(big);
}

static void test_clamd_clam_exe(void **state)
{
  char path[256];
  size_t n;
  char *exe, *mail;

  (void)state;
  NEED_CLAMD();
  snprintf(path, sizeof path, "%s/clam.exe", testfiles);
  exe = read_file(path, &n);
  assert_non_null(exe);
  scan_both(cenv.sock, exe, n, "clam.exe.UNOFFICIAL", "");
  free(exe);
  /* The same file as a mail attachment (base64 in MIME). */
  snprintf(path, sizeof path, "%s/clam.mail", testfiles);
  mail = read_file(path, &n);
  assert_non_null(mail);
  scan_both(cenv.sock, mail, n, "clam.exe.UNOFFICIAL", "");
  free(mail);
}

static void test_clamd_eicar(void **state)
{
  char msg[512];
  int n;

  (void)state;
  NEED_CLAMD();
  n = snprintf(msg, sizeof msg,
               "From: a@example.org\r\nSubject: eicar\r\n\r\n%s\r\n", eicar);
  scan_both(cenv.sock, msg, (size_t)n, "Eicar-Test-Signature.UNOFFICIAL", "");
}

static void test_clamd_tcp(void **state)
{
  static const char body[] = "Subject: hi\r\n\r\nclean\r\n";
  char msg[256];
  int n;

  (void)state;
  NEED_CLAMD();
  scan_both(cenv.tcp, body, sizeof body - 1, "", "");
  n = snprintf(msg, sizeof msg, "Subject: x\r\n\r\n%s\r\n", eicar);
  scan_both(cenv.tcp, msg, (size_t)n, "Eicar-Test-Signature.UNOFFICIAL", "");
}

/* Over StreamMaxLength (1M here): clamd answers mid-stream and hangs up. */
static void test_clamd_too_big(void **state)
{
  size_t n = 3 * MIB;
  char *msg = make_message(n, 8);

  (void)state;
  NEED_CLAMD();
  scan_both(cenv.sock, msg, n, "", "clamd: INSTREAM size limit exceeded");
  scan_both(cenv.tcp, msg, n, "", "clamd: INSTREAM size limit exceeded");
  free(msg);
}

/* Over MaxFileSize (600K here) with AlertExceedsMax: clamd "finds"
 * Heuristics.Limits.Exceeded.*, which is an error, not a virus. */
static void test_clamd_limits(void **state)
{
  size_t n = 800000;
  char *msg = make_message(n, 12);
  struct px_conf_filter cf = clamd_conf(cenv.sock, 20000);
  struct flt_msg m = msg_mem(msg, n);
  struct flt_result r;

  (void)state;
  NEED_CLAMD();
  run_filter(&flt_clamd_ops, &cf, &m, &r);
  assert_string_equal(r.virus, "");
  assert_true(strncmp(r.error, "limits exceeded: Heuristics.Limits.Exceeded",
                      43) == 0);
  free(msg);
}

/* A fake clamd: takes one connection, reads the INSTREAM (checking its
 * framing) unless told not to, answers reply[0..replylen) and hangs up. */
struct fake {
  int lfd;
  const char *reply;
  size_t replylen;
  int read_stream;
  /* what it saw */
  int cmd_ok, frames_ok;
  size_t max_chunk;
  struct bytes got;
};

static int read_exact(int fd, void *p, size_t n)
{
  return n == 0 || recv(fd, p, n, MSG_WAITALL) == (ssize_t)n ? 0 : -1;
}

static void *fake_cb(void *arg)
{
  struct fake *f = arg;
  int fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
  char cmd[10], *chunk = malloc(1 << 20);

  TU_CHECK(fd >= 0 && chunk != NULL);
  f->cmd_ok = read_exact(fd, cmd, sizeof cmd) == 0 &&
              memcmp(cmd, "zINSTREAM", sizeof cmd) == 0;
  if (f->read_stream) {
    for (;;) {
      unsigned char h[4];
      size_t len;

      if (read_exact(fd, h, 4) != 0)
        break;
      len = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
      if (len == 0) {
        f->frames_ok = 1;
        break;
      }
      if (len > (1 << 20) || read_exact(fd, chunk, len) != 0)
        break;
      if (len > f->max_chunk)
        f->max_chunk = len;
      bytes_add(&f->got, chunk, len);
    }
  }
  if (f->replylen > 0)
    TU_CHECK(send(fd, f->reply, f->replylen, MSG_NOSIGNAL) ==
             (ssize_t)f->replylen);
  close(fd);
  free(chunk);
  return NULL;
}

/* clamd's answers, and the INSTREAM framing, against the fake. Needs no
 * clamd. */
static void test_clamd_protocol(void **state)
{
  /* nul: the answer ends with its NUL, as zINSTREAM asks. */
  static const struct {
    const char *reply;
    int nul, read_stream;
    const char *virus, *error;
  } cases[] = {
    { "stream: OK", 1, 1, "", "" },
    { "stream: OK\n", 0, 1, "", "" }, /* no NUL, then EOF: taken */
    { "stream: Win.Test-1 FOUND", 1, 1, "Win.Test-1", "" },
    { "stream: Bad\001Name\n FOUND", 1, 1, "Bad?Name?", "" },
    { "stream: Heuristics.Limits.Exceeded.MaxScanSize FOUND", 1, 1, "",
      "limits exceeded: Heuristics.Limits.Exceeded.MaxScanSize" },
    { "stream: Can't allocate memory ERROR", 1, 1, "",
      "clamd: Can't allocate memory" },
    { "INSTREAM size limit exceeded. ERROR", 1, 0, "",
      "clamd: INSTREAM size limit exceeded" },
    { "UNKNOWN COMMAND", 1, 1, "", "unexpected answer: UNKNOWN COMMAND" },
    { "stream: FOUND", 1, 1, "", "unexpected answer: stream: FOUND" },
    { "", 0, 1, "", "clamd closed the connection" },
  };
  char tmpl[] = "/tmp/pg-fake-XXXXXX";
  char *dir = mkdtemp(tmpl), *msg = make_message(200000, 13);
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  struct px_conf_filter cf;
  char *longreply = malloc(3000);

  (void)state;
  assert_non_null(dir);
  snprintf(sun.sun_path, sizeof sun.sun_path, "%s/s", dir);
  cf = clamd_conf(sun.sun_path, 5000);
  for (size_t i = 0; i <= N_ELEMS(cases); i++) {
    struct fake f = { .read_stream = 1 };
    struct flt_msg m = msg_mem(msg, 200000);
    struct flt_result r;
    pthread_t t;

    if (i < N_ELEMS(cases)) {
      f.reply = cases[i].reply;
      f.replylen = strlen(cases[i].reply) + (size_t)cases[i].nul;
      f.read_stream = cases[i].read_stream;
    } else {
      /* An answer that never ends. */
      memset(longreply, 'a', 3000);
      f.reply = longreply;
      f.replylen = 3000;
    }
    f.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f.lfd >= 0);
    unlink(sun.sun_path);
    assert_int_equal(bind(f.lfd, (struct sockaddr *)&sun, sizeof sun), 0);
    assert_int_equal(listen(f.lfd, 1), 0);
    assert_int_equal(pthread_create(&t, NULL, fake_cb, &f), 0);
    run_filter(&flt_clamd_ops, &cf, &m, &r);
    assert_int_equal(pthread_join(t, NULL), 0);
    close(f.lfd);
    assert_true(f.cmd_ok);
    if (i < N_ELEMS(cases)) {
      assert_string_equal(r.virus, cases[i].virus);
      assert_string_equal(r.error, cases[i].error);
    } else {
      assert_string_equal(r.error, "clamd's answer is too long");
    }
    if (f.read_stream) {
      assert_true(f.frames_ok);
      assert_true(f.max_chunk <= 65536);
      assert_int_equal(f.got.n, 200000);
      assert_memory_equal(f.got.p, msg, 200000);
    }
    bytes_free(&f.got);
  }
  unlink(sun.sun_path);
  rmdir(dir);
  free(longreply);
  free(msg);
}

/* No clamd at all: errors, at once, saying why. Needs no clamd. */
static void test_clamd_absent(void **state)
{
  char *dir;
  char sock[128], want[256], tcp[64];
  struct px_conf_filter cf;
  struct flt_msg m = msg_mem("Subject: x\r\n\r\n", 14);
  struct flt_result r;
  char tmpl[] = "/tmp/pg-nosock-XXXXXX";

  (void)state;
  dir = mkdtemp(tmpl);
  assert_non_null(dir);
  snprintf(sock, sizeof sock, "%s/clamd.sock", dir);
  cf = clamd_conf(sock, 5000);
  run_filter(&flt_clamd_ops, &cf, &m, &r);
  snprintf(want, sizeof want,
           "cannot connect to %s: No such file or directory", sock);
  assert_string_equal(r.error, want);
  assert_string_equal(r.virus, "");
  rmdir(dir);

  snprintf(tcp, sizeof tcp, "127.0.0.1:%d", free_tcp_port());
  cf = clamd_conf(tcp, 5000);
  run_filter(&flt_clamd_ops, &cf, &m, &r);
  snprintf(want, sizeof want, "cannot connect to %s: Connection refused",
           tcp);
  assert_string_equal(r.error, want);

  cf = clamd_conf("no-port-here", 5000);
  run_filter(&flt_clamd_ops, &cf, &m, &r);
  assert_string_equal(r.error, "bad clamd address no-port-here");
}

/* A socket that accepts connections (the kernel's backlog) and never
 * answers: the run ends at the timeout. Needs no clamd. */
static void test_clamd_timeout(void **state)
{
  char tmpl[] = "/tmp/pg-silent-XXXXXX";
  char *dir = mkdtemp(tmpl);
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  struct px_conf_filter cf;
  struct flt_result r;
  char *big = make_message(4 * MIB, 9);
  struct flt_msg small = msg_mem("Subject: x\r\n\r\n", 14),
                 large = msg_mem(big, 4 * MIB);
  const struct flt_msg *ms[] = { &small, &large };
  int fd;

  (void)state;
  assert_non_null(dir);
  snprintf(sun.sun_path, sizeof sun.sun_path, "%s/s", dir);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
  assert_int_equal(listen(fd, 8), 0);
  cf = clamd_conf(sun.sun_path, 500);
  /* Small: all sent, no answer. Large: the send blocks. */
  for (size_t i = 0; i < N_ELEMS(ms); i++) {
    uint64_t t0 = now_ms(), took;

    run_filter(&flt_clamd_ops, &cf, ms[i], &r);
    took = now_ms() - t0;
    assert_string_equal(r.error, "timed out after 500ms");
    assert_in_range(took, 450, 1000);
  }
  close(fd);
  unlink(sun.sun_path);
  rmdir(dir);
  free(big);
}

int main(void)
{
  const struct CMUnitTest simple[] = {
    cmocka_unit_test(test_header_lines),
    cmocka_unit_test(test_command_cat_unchanged),
    cmocka_unit_test(test_command_tr),
    cmocka_unit_test(test_command_false),
    cmocka_unit_test(test_command_signal),
    cmocka_unit_test(test_command_missing),
    cmocka_unit_test(test_command_timeout),
    cmocka_unit_test(test_command_big),
    cmocka_unit_test(test_command_stops_reading),
    cmocka_unit_test(test_command_output_too_large),
    cmocka_unit_test(test_command_fds),
    cmocka_unit_test(test_command_parallel),
    cmocka_unit_test(test_clamd_absent),
    cmocka_unit_test(test_clamd_timeout),
    cmocka_unit_test(test_clamd_protocol),
  };
  const struct CMUnitTest clamd[] = {
    cmocka_unit_test(test_clamd_clean),
    cmocka_unit_test(test_clamd_clam_exe),
    cmocka_unit_test(test_clamd_eicar),
    cmocka_unit_test(test_clamd_tcp),
    cmocka_unit_test(test_clamd_too_big),
    cmocka_unit_test(test_clamd_limits),
  };
  int failed;

  failed = cmocka_run_group_tests_name("filters", simple, NULL,
                                       command_teardown);
  failed += cmocka_run_group_tests_name("clamd", clamd, clamd_setup,
                                        clamd_teardown);
  return failed != 0;
}
