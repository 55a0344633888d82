/* scanbench.c - libclamav alone, as popgate's clamav filter drives it.
 *
 *   scanbench [-r REPEAT] [-T TMPDIR] [-C] [-v] [-t] DBDIR THREADS FILE...
 *
 * Builds one engine from DBDIR with the limits popgate's [filter:NAME]
 * type = clamav uses by default (filters/clamav.c, proxy/conf_keys.c):
 * max_scan_size 100M, max_file_size 25M, max_recursion 16, max_files
 * 10000, scan_timeout 60 s; scan options general = heuristics, parse =
 * every parser, heuristic = exceeds-max; the same virus-found callback.
 * -T sets CL_ENGINE_TMPDIR as popgate does with spool_dir (libclamav
 * unpacks MIME parts and archives into files there).
 *
 * Every FILE is read into memory first; then THREADS threads take the
 * files in order (REPEAT passes over the list, default 1) from a shared
 * counter, as libuv's pool takes held messages, and scan each from memory
 * with cl_fmap_open_memory() + cl_scanmap_callback(), as popgate does for
 * a message held under memory_per_message. Only that is timed: loading
 * the database, compiling the engine and reading the files are not.
 *
 * libclamav keeps a cache of the hashes of clean files and parts: a file
 * scanned a second time by the same engine is mostly a hash lookup. A
 * REPEAT > 1 measures that, not the scan; -C disables the cache
 * (CL_ENGINE_DISABLE_CACHE, which popgate never sets).
 *
 * Output (stdout): with -v, one line per infected or failed FILE (first
 * pass) "verdict FILE NAME" or "error FILE WHAT"; with -t, one line per
 * FILE "time FILE SECONDS" (its first scan); then one summary line of
 * key=value pairs:
 *   scanbench threads= files= repeat= messages= bytes= seconds= msgs_per_s=
 *   mb_per_s= cpu_s= clean= infected= errors= sigs= load_s=
 * seconds is the wall time of the scans, cpu_s the process's user+system
 * time over the same span, 1 MB = 10^6 bytes. Exit 0, or 2 on a usage or
 * set-up error (a failed scan is counted in errors=, not an exit status).
 *
 * Built by tests/bench/bench.py:
 *   cc -O2 -o scanbench scanbench.c $(pkg-config --cflags --libs libclamav) -lpthread
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <clamav.h>

struct file {
  const char *path;
  unsigned char *data;
  size_t len;
  char verdict[128]; /* first pass: virus name or error, "" when clean */
  double seconds;    /* first pass: the scan's wall time */
  int infected, failed;
};

static struct cl_engine *engine;
static struct file *files;
static size_t nfiles, njobs;
static size_t next_job; /* atomic */
static unsigned long n_clean, n_infected, n_errors; /* atomic */
static pthread_barrier_t start_line;

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_now(void)
{
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* As filters/clamav.c: the name can come through this callback only. */
static void virus_found_cb(int fd, const char *virname, void *context)
{
  (void)fd;
  if (context != NULL && virname != NULL && ((char *)context)[0] == '\0')
    snprintf(context, 128, "%s", virname);
}

static void scan_one(struct file *f, int first)
{
  struct cl_scan_options opts;
  const char *virname = NULL;
  char found[128] = "";
  unsigned long scanned = 0;
  cl_fmap_t *map;
  cl_error_t rc;
  double t0 = now();

  memset(&opts, 0, sizeof opts);
  opts.general = CL_SCAN_GENERAL_HEURISTICS;
  opts.parse = ~0u;
  opts.heuristic = CL_SCAN_HEURISTIC_EXCEEDS_MAX;

  map = cl_fmap_open_memory(f->data, f->len);
  if (map == NULL) {
    rc = CL_EMEM;
  } else {
    rc = cl_scanmap_callback(map, NULL, &virname, &scanned, engine, &opts,
                             found);
    cl_fmap_close(map);
  }
  if (first)
    f->seconds = now() - t0;
  if (rc == CL_CLEAN) {
    __atomic_add_fetch(&n_clean, 1, __ATOMIC_RELAXED);
  } else if (rc == CL_VIRUS) {
    __atomic_add_fetch(&n_infected, 1, __ATOMIC_RELAXED);
    if (first) {
      f->infected = 1;
      snprintf(f->verdict, sizeof f->verdict, "%s",
               virname != NULL ? virname : found[0] ? found : "Unnamed");
    }
  } else {
    __atomic_add_fetch(&n_errors, 1, __ATOMIC_RELAXED);
    if (first) {
      f->failed = 1;
      snprintf(f->verdict, sizeof f->verdict, "%s", cl_strerror(rc));
    }
  }
}

static void *worker(void *arg)
{
  (void)arg;
  pthread_barrier_wait(&start_line);
  for (;;) {
    size_t j = __atomic_fetch_add(&next_job, 1, __ATOMIC_RELAXED);
    if (j >= njobs)
      break;
    scan_one(&files[j % nfiles], j < nfiles);
  }
  return NULL;
}

static int read_file(struct file *f)
{
  FILE *fp = fopen(f->path, "rb");
  struct stat st;

  if (fp == NULL || fstat(fileno(fp), &st) < 0) {
    fprintf(stderr, "scanbench: %s: %s\n", f->path, strerror(errno));
    if (fp != NULL)
      fclose(fp);
    return -1;
  }
  f->len = (size_t)st.st_size;
  f->data = malloc(f->len ? f->len : 1);
  if (f->data == NULL || fread(f->data, 1, f->len, fp) != f->len) {
    fprintf(stderr, "scanbench: %s: cannot read\n", f->path);
    fclose(fp);
    return -1;
  }
  fclose(fp);
  return 0;
}

static int set_num(enum cl_engine_field fld, long long v, const char *what)
{
  cl_error_t rc = cl_engine_set_num(engine, fld, v);
  if (rc != CL_SUCCESS) {
    fprintf(stderr, "scanbench: %s: %s\n", what, cl_strerror(rc));
    return -1;
  }
  return 0;
}

static void usage(void)
{
  fprintf(stderr, "usage: scanbench [-r REPEAT] [-T TMPDIR] [-C] [-v] [-t] DBDIR "
                  "THREADS FILE...\n");
  exit(2);
}

int main(int argc, char **argv)
{
  const char *tmpdir = NULL;
  unsigned repeat = 1, nthreads, sigs = 0;
  int verbose = 0, times = 0, nocache = 0, opt;
  unsigned long long bytes = 0;
  double t_load, t0, t1, c0, c1;
  pthread_t *tids;
  cl_error_t rc;
  char *end;

  while ((opt = getopt(argc, argv, "r:T:Cvt")) != -1) {
    switch (opt) {
    case 'r':
      repeat = (unsigned)strtoul(optarg, &end, 10);
      if (*end != '\0' || repeat < 1 || repeat > 1000)
        usage();
      break;
    case 'T':
      tmpdir = optarg;
      break;
    case 'C':
      nocache = 1;
      break;
    case 'v':
      verbose = 1;
      break;
    case 't':
      times = 1;
      break;
    default:
      usage();
    }
  }
  if (argc - optind < 3)
    usage();
  nthreads = (unsigned)strtoul(argv[optind + 1], &end, 10);
  if (*end != '\0' || nthreads < 1 || nthreads > 256)
    usage();
  nfiles = (size_t)(argc - optind - 2);
  files = calloc(nfiles, sizeof *files);
  if (files == NULL)
    return 2;
  for (size_t i = 0; i < nfiles; i++) {
    files[i].path = argv[optind + 2 + (int)i];
    if (read_file(&files[i]) < 0)
      return 2;
    bytes += files[i].len;
  }

  t_load = now();
  rc = cl_init(CL_INIT_DEFAULT);
  if (rc != CL_SUCCESS) {
    fprintf(stderr, "scanbench: cl_init: %s\n", cl_strerror(rc));
    return 2;
  }
  engine = cl_engine_new();
  if (engine == NULL)
    return 2;
  /* popgate's defaults (proxy/conf_keys.c), as filters/clamav.c sets them. */
  if (set_num(CL_ENGINE_MAX_SCANSIZE, 100LL << 20, "max_scan_size") < 0 ||
      set_num(CL_ENGINE_MAX_FILESIZE, 25LL << 20, "max_file_size") < 0 ||
      set_num(CL_ENGINE_MAX_RECURSION, 16, "max_recursion") < 0 ||
      set_num(CL_ENGINE_MAX_FILES, 10000, "max_files") < 0 ||
      set_num(CL_ENGINE_MAX_SCANTIME, 60000, "scan time") < 0)
    return 2;
  if (nocache && set_num(CL_ENGINE_DISABLE_CACHE, 1, "disable cache") < 0)
    return 2;
  if (tmpdir != NULL &&
      (rc = cl_engine_set_str(engine, CL_ENGINE_TMPDIR, tmpdir)) != CL_SUCCESS) {
    fprintf(stderr, "scanbench: tmpdir %s: %s\n", tmpdir, cl_strerror(rc));
    return 2;
  }
  rc = cl_load(argv[optind], engine, &sigs, CL_DB_STDOPT);
  if (rc != CL_SUCCESS || sigs == 0) {
    fprintf(stderr, "scanbench: database %s: %s\n", argv[optind],
            rc != CL_SUCCESS ? cl_strerror(rc) : "no signatures");
    return 2;
  }
  cl_engine_set_clcb_virus_found(engine, virus_found_cb);
  rc = cl_engine_compile(engine);
  if (rc != CL_SUCCESS) {
    fprintf(stderr, "scanbench: compile: %s\n", cl_strerror(rc));
    return 2;
  }
  t_load = now() - t_load;

  njobs = nfiles * repeat;
  tids = calloc(nthreads, sizeof *tids);
  if (tids == NULL ||
      pthread_barrier_init(&start_line, NULL, nthreads + 1) != 0)
    return 2;
  for (unsigned i = 0; i < nthreads; i++)
    if (pthread_create(&tids[i], NULL, worker, NULL) != 0) {
      fprintf(stderr, "scanbench: pthread_create failed\n");
      return 2;
    }
  c0 = cpu_now();
  t0 = now();
  pthread_barrier_wait(&start_line);
  for (unsigned i = 0; i < nthreads; i++)
    pthread_join(tids[i], NULL);
  t1 = now();
  c1 = cpu_now();

  if (verbose)
    for (size_t i = 0; i < nfiles; i++)
      if (files[i].infected || files[i].failed)
        printf("%s %s %s\n", files[i].infected ? "verdict" : "error",
               files[i].path, files[i].verdict);
  if (times)
    for (size_t i = 0; i < nfiles; i++)
      printf("time %s %.6f\n", files[i].path, files[i].seconds);
  printf("scanbench threads=%u files=%zu repeat=%u messages=%zu bytes=%llu "
         "seconds=%.6f msgs_per_s=%.2f mb_per_s=%.2f cpu_s=%.6f clean=%lu "
         "infected=%lu errors=%lu sigs=%u load_s=%.3f\n",
         nthreads, nfiles, repeat, njobs, bytes * repeat, t1 - t0,
         (double)njobs / (t1 - t0), (double)bytes * repeat / 1e6 / (t1 - t0),
         c1 - c0, n_clean, n_infected, n_errors, sigs, t_load);
  cl_engine_free(engine);
  for (size_t i = 0; i < nfiles; i++)
    free(files[i].data);
  free(files);
  free(tids);
  return 0;
}
