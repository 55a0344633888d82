/* test_spool.c - the held-message store: memory first, an unlinked file
 * above memory_per_message or the memory budget, read back exactly; in
 * memory, a growth refused for memory is a sticky -ENOMEM that loses no
 * byte already held and no count in px_spool_ram(). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf.h"
#include "failalloc.h"
#include "spool.h"

static char dir[] = "/tmp/popgate-test-spool-XXXXXX";

static int setup(void **state)
{
  (void)state;
  return mkdtemp(dir) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
  (void)state;
  return rmdir(dir); /* fails if a spool file was left with a name */
}

static struct px_conf conf_with(uint64_t per_message, uint64_t budget)
{
  struct px_conf c;

  memset(&c, 0, sizeof c);
  c.spool_dir = dir;
  c.memory_per_message = per_message;
  c.memory_budget = budget;
  c.max_message_size = 1 << 30;
  return c;
}

/* Appends n pattern bytes in chunks of `chunk`, then reads them all back
 * in reads of `rd` and checks every byte. */
static void fill_and_check(struct px_spool *sp, const struct px_conf *c,
                           size_t n, size_t chunk, size_t rd)
{
  char *buf = malloc(chunk > rd ? chunk : rd);
  uint64_t off = 0;

  assert_non_null(buf);
  for (size_t done = 0; done < n;) {
    size_t k = n - done < chunk ? n - done : chunk;
    for (size_t i = 0; i < k; i++)
      buf[i] = (char)((done + i) * 31 + 7);
    assert_int_equal(px_spool_append(sp, c, buf, k), 0);
    done += k;
  }
  assert_int_equal(sp->size, n);
  for (;;) {
    ssize_t r = px_spool_read(sp, off, buf, rd);
    assert_true(r >= 0);
    if (r == 0)
      break;
    for (ssize_t i = 0; i < r; i++)
      assert_int_equal((unsigned char)buf[i],
                       (unsigned char)((off + (uint64_t)i) * 31 + 7));
    off += (uint64_t)r;
  }
  assert_int_equal(off, n);
  free(buf);
}

static void test_small_stays_in_memory(void **state)
{
  struct px_conf c = conf_with(1 << 20, 256 << 20);
  struct px_spool sp;
  uint64_t before = px_spool_ram();

  (void)state;
  px_spool_init(&sp);
  fill_and_check(&sp, &c, 100000, 4096, 1000);
  assert_int_equal(sp.fd, -1);
  assert_true(px_spool_ram() > before);
  px_spool_free(&sp);
  assert_int_equal(px_spool_ram(), before);
}

static void test_spills_above_memory_per_message(void **state)
{
  struct px_conf c = conf_with(64 * 1024, 256 << 20);
  struct px_spool sp;
  uint64_t before = px_spool_ram();
  struct stat st;

  (void)state;
  px_spool_init(&sp);
  fill_and_check(&sp, &c, 3 * 1024 * 1024 + 17, 65536 + 3, 7777);
  assert_true(sp.fd >= 0);
  assert_null(sp.mem);
  assert_int_equal(px_spool_ram(), before); /* memory given back */
  /* O_TMPFILE: the file has no name, so nothing is left after a crash. */
  assert_int_equal(fstat(sp.fd, &st), 0);
  assert_int_equal(st.st_nlink, 0);
  assert_int_equal((uint64_t)st.st_size, sp.size);
  px_spool_free(&sp);
}

/* memory_per_message is a bound on what one message holds in memory, at
 * every step, whatever the chunking (not only when the buffer grows). */
static void test_memory_never_above_per_message(void **state)
{
  const uint64_t limits[] = { 4096, 100000, 1536 * 1024 };
  char chunk[3000];

  (void)state;
  memset(chunk, 'm', sizeof chunk);
  for (size_t k = 0; k < sizeof limits / sizeof *limits; k++) {
    struct px_conf c = conf_with(limits[k], 256 << 20);
    struct px_spool sp;
    px_spool_init(&sp);
    for (int i = 0; i < 1000; i++) {
      assert_int_equal(px_spool_append(&sp, &c, chunk, sizeof chunk), 0);
      assert_true(sp.fd >= 0 || sp.cap <= limits[k]);
      assert_true(sp.fd >= 0 || sp.len <= limits[k]);
    }
    assert_true(sp.fd >= 0); /* 3 MB is above every limit */
    px_spool_free(&sp);
  }
}

static void test_budget_spills_sooner(void **state)
{
  /* A budget smaller than one message's memory: the first growth past it
   * goes to a file although memory_per_message would allow more. */
  struct px_conf c = conf_with(8 << 20, 100 * 1024);
  struct px_spool sp;

  (void)state;
  px_spool_init(&sp);
  fill_and_check(&sp, &c, 1 << 20, 10000, 65536);
  assert_true(sp.fd >= 0);
  px_spool_free(&sp);
}

static void test_unwritable_dir_fails_then_mem_only(void **state)
{
  struct px_conf c = conf_with(4096, 256 << 20);
  struct px_spool sp;
  char big[8192];

  (void)state;
  memset(big, 'x', sizeof big);
  c.spool_dir = "/nonexistent/popgate-spool";
  px_spool_init(&sp);
  assert_int_equal(px_spool_append(&sp, &c, big, 1000), 0); /* memory */
  assert_true(px_spool_append(&sp, &c, big, sizeof big) < 0); /* spill */
  assert_true(sp.err < 0);
  /* Sticky: nothing more is kept. */
  assert_true(px_spool_append(&sp, &c, big, 1) < 0);
  /* What the session does for on_error = pass: memory only. */
  sp.err = 0;
  sp.mem_only = 1;
  assert_int_equal(px_spool_append(&sp, &c, big, sizeof big), 0);
  assert_int_equal(sp.size, 1000 + sizeof big);
  assert_int_equal(sp.fd, -1);
  px_spool_free(&sp);
}

/* Memory-only (no spool file could be made) still counts against
 * memory_budget: past it the message is refused (-ENOSPC), never held. */
static void test_mem_only_within_budget(void **state)
{
  struct px_conf c = conf_with(4096, 256 * 1024);
  struct px_spool sp;
  char big[65536];
  uint64_t before = px_spool_ram();
  int rc = 0;

  (void)state;
  memset(big, 'y', sizeof big);
  c.spool_dir = "/nonexistent/popgate-spool";
  px_spool_init(&sp);
  sp.mem_only = 1;
  for (int i = 0; i < 64 && rc == 0; i++)
    rc = px_spool_append(&sp, &c, big, sizeof big);
  assert_int_equal(rc, -ENOSPC);
  assert_int_equal(sp.err, -ENOSPC);
  assert_true(px_spool_ram() - before <= c.memory_budget);
  assert_true(sp.size <= c.memory_budget);
  px_spool_free(&sp);
  assert_int_equal(px_spool_ram(), before);
}

static void test_empty_and_reads_past_end(void **state)
{
  struct px_conf c = conf_with(1 << 20, 256 << 20);
  struct px_spool sp;
  char b[16];

  (void)state;
  px_spool_init(&sp);
  assert_int_equal(px_spool_read(&sp, 0, b, sizeof b), 0);
  assert_int_equal(px_spool_append(&sp, &c, "abc", 3), 0);
  assert_int_equal(px_spool_read(&sp, 3, b, sizeof b), 0);
  assert_int_equal(px_spool_read(&sp, 1, b, sizeof b), 2);
  assert_memory_equal(b, "bc", 2);
  px_spool_free(&sp);
  px_spool_free(&sp); /* idempotent */
}

/* Checks that sp holds the first sp->size bytes of the pattern, in
 * memory, and that px_spool_ram() counts exactly its buffer. */
static void check_mem_pattern(const struct px_spool *sp, uint64_t ram_base)
{
  assert_int_equal(sp->fd, -1);
  assert_int_equal(sp->len, sp->size);
  assert_true(sp->len <= sp->cap);
  assert_int_equal(px_spool_ram() - ram_base, sp->cap);
  for (size_t i = 0; i < sp->len; i++)
    assert_int_equal((unsigned char)sp->mem[i], (unsigned char)(i * 31 + 7));
}

/* Sweeps the n-th allocation over a message growing in memory (64 KiB,
 * then doubling): the append that meets it returns -ENOMEM and keeps it in
 * sp->err, the bytes held so far stay readable, the memory count stays
 * exact, and later appends give the same error (a held message with a
 * hole would be worse than none). Freeing gives everything back, and a
 * new message works once memory is back. */
static void test_memory_growth_enomem(void **state)
{
  struct px_conf c = conf_with(1 << 20, 256 << 20);
  uint64_t base = px_spool_ram();
  const size_t total = 300 * 1000, chunk = 10000;
  char *buf = malloc(total);
  unsigned long nth;

  (void)state;
  assert_non_null(buf);
  for (size_t i = 0; i < total; i++)
    buf[i] = (char)(i * 31 + 7);
  for (nth = 1;; nth++) {
    struct px_spool sp;
    int rc = 0;
    size_t done = 0;

    px_spool_init(&sp);
    fa_fail_nth(nth);
    while (done < total) {
      rc = px_spool_append(&sp, &c, buf + done, chunk);
      if (rc < 0)
        break;
      done += chunk;
    }
    fa_off();
    if (fa_failed() == 0) {
      assert_int_equal(rc, 0);
      assert_int_equal(sp.size, total);
      check_mem_pattern(&sp, base);
      px_spool_free(&sp);
      break;
    }
    assert_int_equal(rc, -ENOMEM);
    assert_int_equal(sp.err, -ENOMEM);
    assert_int_equal(sp.size, done); /* the refused chunk is not counted */
    check_mem_pattern(&sp, base);
    /* Sticky, also with memory back. */
    assert_int_equal(px_spool_append(&sp, &c, buf + done, chunk), -ENOMEM);
    assert_int_equal(sp.size, done);
    /* What the session does for on_error = pass: memory only, error
     * cleared; the message goes on from where it was. */
    sp.err = 0;
    sp.mem_only = 1;
    assert_int_equal(px_spool_append(&sp, &c, buf + done, total - done), 0);
    assert_int_equal(sp.size, total);
    check_mem_pattern(&sp, base);
    px_spool_free(&sp);
    assert_int_equal(px_spool_ram(), base);

    /* A new message, memory back: fine. */
    px_spool_init(&sp);
    fill_and_check(&sp, &c, 100000, 4096, 1000);
    px_spool_free(&sp);
    assert_int_equal(px_spool_ram(), base);
  }
  /* 64 KiB, 128 KiB, 256 KiB, 512 KiB: four growths, four failure points. */
  assert_int_equal(nth, 5);
  free(buf);
}

/* Every allocation failing from the first byte: nothing held, nothing
 * counted. */
static void test_first_append_enomem(void **state)
{
  struct px_conf c = conf_with(1 << 20, 256 << 20);
  uint64_t base = px_spool_ram();
  struct px_spool sp;

  (void)state;
  px_spool_init(&sp);
  fa_fail_all();
  assert_int_equal(px_spool_append(&sp, &c, "abc", 3), -ENOMEM);
  fa_off();
  assert_null(sp.mem);
  assert_int_equal(sp.size, 0);
  assert_int_equal(px_spool_ram(), base);
  assert_int_equal(px_spool_read(&sp, 0, (char[4]){ 0 }, 4), 0);
  px_spool_free(&sp);
  assert_int_equal(px_spool_ram(), base);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_small_stays_in_memory),
    cmocka_unit_test(test_spills_above_memory_per_message),
    cmocka_unit_test(test_memory_never_above_per_message),
    cmocka_unit_test(test_budget_spills_sooner),
    cmocka_unit_test(test_unwritable_dir_fails_then_mem_only),
    cmocka_unit_test(test_mem_only_within_budget),
    cmocka_unit_test(test_empty_and_reads_past_end),
    cmocka_unit_test(test_memory_growth_enomem),
    cmocka_unit_test(test_first_append_enomem),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
