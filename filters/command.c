/* command.c - the command filter: the message through an external program.
 *
 * [filter:NAME] type = command, command = /usr/bin/spamc -x. run() starts
 * the program (posix_spawn, no shell) with the message on its stdin, its
 * stdout captured and its stderr on /dev/null, writes and reads at once
 * with poll() (a program that answers while it reads never deadlocks
 * against us), and waits for it. Exit status 0: the output is the filtered
 * message (r->repl, or nothing when it is the message unchanged). Anything
 * else is an error: on_error decides.
 *
 * Bounds: scan_timeout covers the whole run, from spawn to exit; then the
 * program and its process group are killed (SIGKILL) and it is reaped. The
 * output may be at most twice the message plus CMD_OUT_SLACK. Every descriptor
 * is O_CLOEXEC, and the child gets only 0, 1 and 2: another pool thread
 * spawning at the same time must not hold our pipes open (our child would never
 * see EOF on stdin).
 *
 * Keys (command_parse): command (required), scan_timeout. The program must
 * be an executable regular file when the configuration is loaded.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "deadline.h"
#include "filter.h"

extern char **environ;

/* Bytes read from a spilled message at a time: one pipe's worth. */
#define CMD_CHUNK 65536
/* The output may exceed twice the message by this much (a filter that adds
 * headers to an empty message); beyond, a runaway program would fill the
 * memory. */
#define CMD_OUT_SLACK ((size_t)1 << 20)

/* One run: the pipes, the child, where the message and the output are. */
struct cmd_job {
  const struct px_conf_filter *cf;
  const struct flt_msg *m;
  struct flt_result *r;
  uint64_t deadline; /* CLOCK_MONOTONIC ms */
  pid_t pid;         /* 0: not started */
  int in_fd;         /* our end of the child's stdin; -1 once closed */
  int out_fd;        /* our end of the child's stdout; -1 once at EOF */
  int epipe;         /* a write met EPIPE (a SIGPIPE to collect) */
  uint64_t inlen;    /* message bytes */
  uint64_t inoff;    /* message bytes written */
  char *win;         /* spilled message: bytes read, not yet written */
  size_t winoff, winlen;
  char *out; /* the child's output so far */
  size_t outlen, outcap, outmax;
};

static void close_fd(int *fd)
{
  if (*fd >= 0) {
    close(*fd);
    *fd = -1;
  }
}

static void set_timed_out(struct cmd_job *j)
{
  uint64_t ms = flt_timeout_ms(j->cf);

  if (ms % 1000 == 0)
    snprintf(j->r->error, sizeof j->r->error, "timed out after %llus",
             (unsigned long long)(ms / 1000));
  else
    snprintf(j->r->error, sizeof j->r->error, "timed out after %llums",
             (unsigned long long)ms);
}

static void set_errno(struct cmd_job *j, const char *what, int err)
{
  char buf[96];

  snprintf(j->r->error, sizeof j->r->error, "%s: %s", what,
           strerror_r(err, buf, sizeof buf));
}

/* ---- SIGPIPE ------------------------------------------------------------ */

/* A write to a pipe whose reader is gone raises SIGPIPE in the writing
 * thread. The daemon ignores it; a caller that does not (a test, a tool)
 * would die. So SIGPIPE stays blocked in this thread for the run, and the
 * one a failed write left pending is collected before it is unblocked. */
struct sigpipe_guard {
  sigset_t old;
  int was_pending; /* pending before us: not ours to collect */
};

static void sigpipe_block(struct sigpipe_guard *g)
{
  sigset_t set, pending;

  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, &g->old);
  sigemptyset(&pending);
  sigpending(&pending);
  g->was_pending = sigismember(&pending, SIGPIPE) == 1;
}

static void sigpipe_restore(const struct sigpipe_guard *g, int epipe)
{
  sigset_t set;
  struct timespec zero = { 0, 0 };

  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  if (epipe && !g->was_pending)
    while (sigtimedwait(&set, NULL, &zero) == -1 && errno == EINTR)
      ;
  pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* ---- the child ---------------------------------------------------------- */

/* Moves fd above 2, so that the dup2s onto 0, 1 and 2 in the child cannot
 * overwrite it (only when the daemon was started with one of them closed).
 * Returns the descriptor to use, or -1 with errno set. */
static int above_stdio(int fd)
{
  int nfd;

  if (fd > 2)
    return fd;
  nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  close(fd);
  return nfd;
}

static int make_pipe(int p[2])
{
  if (pipe2(p, O_CLOEXEC) == -1)
    return -1;
  p[0] = above_stdio(p[0]);
  p[1] = above_stdio(p[1]);
  if (p[0] == -1 || p[1] == -1) {
    int err = errno;
    close_fd(&p[0]);
    close_fd(&p[1]);
    errno = err;
    return -1;
  }
  return 0;
}

/* Starts cf->argv with stdin and stdout on two pipes, stderr on /dev/null,
 * every signal unblocked and SIGPIPE at its default (the daemon's mask and
 * its ignored SIGPIPE must not reach the program). Returns 0 with j->pid,
 * j->in_fd and j->out_fd set (non-blocking), or -1 with j->r->error set. */
static int spawn(struct cmd_job *j)
{
  const struct px_conf_filter *cf = j->cf;
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  sigset_t none, def;
  int in[2] = { -1, -1 }, out[2] = { -1, -1 };
  char **argv;
  int rc;

  if (cf->argc == 0 || cf->argv == NULL || cf->argv[0] == NULL) {
    strcpy(j->r->error, "no command");
    return -1;
  }
  /* posix_spawn wants a NULL-terminated vector; argc is what counts. */
  argv = calloc(cf->argc + 1, sizeof *argv);
  if (argv == NULL) {
    strcpy(j->r->error, "out of memory");
    return -1;
  }
  memcpy(argv, cf->argv, cf->argc * sizeof *argv);
  if (make_pipe(in) == -1 || make_pipe(out) == -1) {
    set_errno(j, "pipe", errno);
    close_fd(&in[0]);
    close_fd(&in[1]);
    free(argv);
    return -1;
  }

  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 34)
  /* Belt and braces: whatever some library opened without O_CLOEXEC stays
   * out of the child too. */
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
  posix_spawnattr_init(&attr);
  sigemptyset(&none);
  sigemptyset(&def);
  sigaddset(&def, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &def);
  /* Its own process group, so that a timeout kills what it started too. */
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP);

  rc = posix_spawn(&j->pid, argv[0], &fa, &attr, argv, environ);

  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&fa);
  free(argv);
  close_fd(&in[0]);
  close_fd(&out[1]);
  j->in_fd = in[1];
  j->out_fd = out[0];
  if (rc != 0) {
    char what[80];

    j->pid = 0;
    snprintf(what, sizeof what, "cannot run %s", cf->argv[0]);
    set_errno(j, what, rc);
    return -1;
  }
  if (fcntl(j->in_fd, F_SETFL, O_NONBLOCK) == -1 ||
      fcntl(j->out_fd, F_SETFL, O_NONBLOCK) == -1) {
    set_errno(j, "fcntl", errno);
    return -1;
  }
  return 0;
}

/* Kills the child, if still there, with its process group (what a script
 * started would otherwise outlive it), and reaps it. The group's id is
 * safe to use: the child is not reaped yet. A child killed with SIGKILL
 * goes at once, so the wait is short. */
static void kill_reap(struct cmd_job *j)
{
  int status;

  if (j->pid <= 0)
    return;
  kill(-j->pid, SIGKILL);
  while (waitpid(j->pid, &status, 0) == -1 && errno == EINTR)
    ;
  j->pid = 0;
}

/* Waits for the child to exit, until the deadline. Returns 0 with *status
 * set (the child reaped, j->pid 0), or -1 with j->r->error set. */
static int reap(struct cmd_job *j, int *status)
{
  int nap = 1;

  for (;;) {
    pid_t w = waitpid(j->pid, status, WNOHANG);
    int left;

    if (w == j->pid) {
      j->pid = 0;
      return 0;
    }
    if (w == -1 && errno != EINTR) {
      set_errno(j, "waitpid", errno);
      j->pid = 0; /* not ours to kill any more */
      return -1;
    }
    left = flt_left_ms(j->deadline);
    if (left == 0) {
      set_timed_out(j);
      return -1;
    }
    /* It closed its stdout, so it is on its way out: look again soon. */
    poll(NULL, 0, nap < left ? nap : left);
    if (nap < 50)
      nap *= 2;
  }
}

/* ---- the pump ----------------------------------------------------------- */

/* Writes as much of the message as the child takes now; closes its stdin
 * once all of it is written, or once it stopped reading (EPIPE: whatever it
 * does with what it got is its answer). Returns 0, or -1 with j->r->error
 * set. */
static int feed(struct cmd_job *j)
{
  while (j->inoff < j->inlen) {
    const char *p;
    size_t n;
    ssize_t w;

    if (j->m->mem != NULL) {
      p = j->m->mem + j->inoff;
      n = (size_t)(j->inlen - j->inoff);
    } else {
      if (j->winoff == j->winlen) {
        uint64_t want = j->inlen - j->inoff;
        ssize_t got;

        if (want > CMD_CHUNK)
          want = CMD_CHUNK;
        got = pread(j->m->fd, j->win, (size_t)want, (off_t)j->inoff);
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
        j->winoff = 0;
        j->winlen = (size_t)got;
      }
      p = j->win + j->winoff;
      n = j->winlen - j->winoff;
    }
    w = write(j->in_fd, p, n);
    if (w == -1) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN)
        return 0;
      if (errno == EPIPE) {
        j->epipe = 1;
        close_fd(&j->in_fd);
        return 0;
      }
      set_errno(j, "write to the command", errno);
      return -1;
    }
    j->inoff += (uint64_t)w;
    if (j->m->mem == NULL)
      j->winoff += (size_t)w;
  }
  close_fd(&j->in_fd);
  return 0;
}

/* Reads what the child wrote so far; closes our end at EOF. Returns 0, or
 * -1 with j->r->error set (output over its bound, read error). */
static int drain(struct cmd_job *j)
{
  for (;;) {
    ssize_t n;

    if (j->outlen == j->outcap) {
      /* outcap stops at outmax + 1: one byte more than allowed is enough
       * to know that it is too much. */
      size_t cap = j->outcap * 2;
      char *p;

      if (cap < CMD_CHUNK)
        cap = CMD_CHUNK;
      if (cap > j->outmax + 1)
        cap = j->outmax + 1;
      p = realloc(j->out, cap);
      if (p == NULL) {
        strcpy(j->r->error, "out of memory");
        return -1;
      }
      j->out = p;
      j->outcap = cap;
    }
    n = read(j->out_fd, j->out + j->outlen, j->outcap - j->outlen);
    if (n == -1) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN)
        return 0;
      set_errno(j, "read from the command", errno);
      return -1;
    }
    if (n == 0) {
      close_fd(&j->out_fd);
      return 0;
    }
    j->outlen += (size_t)n;
    if (j->outlen > j->outmax) {
      strcpy(j->r->error, "output too large");
      return -1;
    }
  }
}

/* Feeds the message and collects the output until both pipes are done or
 * the deadline passes. Returns 0, or -1 with j->r->error set. */
static int pump(struct cmd_job *j)
{
  if (j->inlen == 0)
    close_fd(&j->in_fd);
  while (j->in_fd >= 0 || j->out_fd >= 0) {
    struct pollfd pfd[2];
    nfds_t n = 0;
    int left = flt_left_ms(j->deadline), rc;

    if (left == 0) {
      set_timed_out(j);
      return -1;
    }
    if (j->in_fd >= 0)
      pfd[n++] = (struct pollfd){ .fd = j->in_fd, .events = POLLOUT };
    if (j->out_fd >= 0)
      pfd[n++] = (struct pollfd){ .fd = j->out_fd, .events = POLLIN };
    rc = poll(pfd, n, left);
    if (rc == -1 && errno != EINTR) {
      set_errno(j, "poll", errno);
      return -1;
    }
    if (rc <= 0)
      continue;
    for (nfds_t i = 0; i < n; i++) {
      if (pfd[i].revents == 0)
        continue;
      /* POLLERR on a pipe's write end means the reader is gone: feed()
       * then meets EPIPE. POLLHUP on the read end: EOF, after the rest. */
      if (pfd[i].fd == j->in_fd && feed(j) != 0)
        return -1;
      if (pfd[i].fd == j->out_fd && drain(j) != 0)
        return -1;
    }
  }
  return 0;
}

/* 1 when the output is the message byte for byte. */
static int unchanged(struct cmd_job *j)
{
  uint64_t off = 0;

  if (j->outlen != j->inlen)
    return 0;
  if (j->m->mem != NULL)
    return memcmp(j->out, j->m->mem, j->outlen) == 0;
  while (off < j->inlen) {
    uint64_t want = j->inlen - off;
    ssize_t got;

    if (want > CMD_CHUNK)
      want = CMD_CHUNK;
    got = pread(j->m->fd, j->win, (size_t)want, (off_t)off);
    if (got == -1 && errno == EINTR)
      continue;
    /* A message that cannot be read again counts as changed: the output
     * is delivered instead, which is what the program answered. */
    if (got <= 0 || memcmp(j->win, j->out + off, (size_t)got) != 0)
      return 0;
    off += (uint64_t)got;
  }
  return 1;
}

/* Turns the exit status and the output into the result. */
static void conclude(struct cmd_job *j, int status)
{
  if (WIFSIGNALED(status)) {
    snprintf(j->r->error, sizeof j->r->error, "killed by signal %d",
             WTERMSIG(status));
    return;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    snprintf(j->r->error, sizeof j->r->error, "exit status %d",
             WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return;
  }
  /* A program that swallowed the message is broken, not a filter that
   * decided on an empty mail: on_error decides what happens to it. */
  if (j->outlen == 0 && j->inlen != 0) {
    strcpy(j->r->error, "empty output");
    return;
  }
  if (unchanged(j))
    return;
  j->r->repl = j->out;
  j->r->repllen = j->outlen;
  j->out = NULL;
}

/* A pool thread. Runs cf->argv over m; fills r->repl (the new message,
 * malloc'd) or r->error. Returns within scan_timeout, plus the moment a
 * SIGKILLed child takes to go. */
static void command_run(void *state, const struct px_conf_filter *cf,
                        const struct flt_msg *m, struct flt_result *r)
{
  struct cmd_job j = { .cf = cf, .m = m, .r = r, .in_fd = -1, .out_fd = -1 };
  struct sigpipe_guard g;
  int status = 0;

  (void)state;
  j.deadline = flt_now_ms() + flt_timeout_ms(cf);
  j.inlen = m->mem != NULL ? m->len : m->size;
  j.outmax = j.inlen > (SIZE_MAX - CMD_OUT_SLACK - 1) / 2
                 ? SIZE_MAX - 1
                 : (size_t)j.inlen * 2 + CMD_OUT_SLACK;
  if (m->mem == NULL && (j.win = malloc(CMD_CHUNK)) == NULL) {
    strcpy(r->error, "out of memory");
    return;
  }

  sigpipe_block(&g);
  if (spawn(&j) == 0 && pump(&j) == 0 && reap(&j, &status) == 0)
    conclude(&j, status);
  kill_reap(&j);
  close_fd(&j.in_fd);
  close_fd(&j.out_fd);
  sigpipe_restore(&g, j.epipe);
  free(j.win);
  free(j.out);
}

/* ---- configuration ---- */

void flt_argv_free(char **argv)
{
  size_t i;

  if (argv == NULL)
    return;
  for (i = 0; argv[i] != NULL; i++)
    free(argv[i]);
  free(argv);
}

/* command = /abs/program arg...: split on spaces and tabs, no shell and no
 * quoting. cf->argv gets a NULL after the last word (execv() takes it as
 * is), cf->argc the number of words. */
static int command_value(struct px_conf_filter *cf, const char *key,
                         const char *v, char *err, size_t errlen)
{
  char q[PX_CONF_SHOW + 4];
  char **argv;
  size_t n = 0, i, wl;
  struct stat st;

  for (i = 0; v[i] != '\0'; i++)
    if (((unsigned char)v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f)
      break;
  if (v[0] != '/' || v[i] != '\0') {
    snprintf(err, errlen,
             "bad value \"%s\" for %s (the program's absolute path, then its "
             "arguments, separated by spaces; no shell)",
             px_conf_show(q, v), key);
    return -EINVAL;
  }
  /* Words: at most one per two characters, plus the NULL. */
  argv = calloc(strlen(v) / 2 + 2, sizeof *argv);
  if (argv == NULL)
    return -ENOMEM;
  for (i = 0; v[i] != '\0'; i += wl) {
    i += strspn(v + i, " \t");
    wl = strcspn(v + i, " \t");
    if (wl == 0)
      break;
    if ((argv[n] = strndup(v + i, wl)) == NULL) {
      flt_argv_free(argv);
      return -ENOMEM;
    }
    n++;
  }
  if (stat(argv[0], &st) == -1) {
    snprintf(err, errlen, "cannot run %s \"%s\": %s", key,
             px_conf_show(q, argv[0]), strerror(errno));
  } else if (!S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "cannot run %s \"%s\": not a regular file", key,
             px_conf_show(q, argv[0]));
  } else if (access(argv[0], X_OK) == -1) {
    snprintf(err, errlen, "cannot run %s \"%s\": not executable: %s", key,
             px_conf_show(q, argv[0]), strerror(errno));
  } else {
    flt_argv_free(cf->argv);
    cf->argv = argv;
    cf->argc = n;
    return 1;
  }
  flt_argv_free(argv);
  return -EINVAL;
}

static int command_parse(struct px_conf_filter *cf, const char *key,
                         const char *v, int line, char *err, size_t errlen)
{
  int rc;

  (void)line;
  if (strcmp(key, "command") == 0)
    return command_value(cf, key, v, err, errlen);
  if (strcmp(key, "scan_timeout") == 0) {
    rc = px_conf_value_duration(key, v, FLT_TIMEOUT_MIN_MS, FLT_TIMEOUT_MAX_MS,
                                &cf->scan_timeout_ms, err, errlen);
    return rc == 0 ? 1 : rc;
  }
  return 0;
}

static const struct flt_key command_keys[] = {
  { "command", FLT_KEY_REQUIRED },
  { "scan_timeout", 0 },
  { NULL, 0 },
};

const struct flt_ops flt_command_ops = {
  .type = PX_FLT_COMMAND,
  .run = command_run,
  .keys = command_keys,
  .parse = command_parse,
};
