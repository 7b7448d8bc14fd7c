/* kpl-put: puts each line of stdin or of the given files as one user record.
 *
 *   kpl-put --stream S [--endpoint URL] [--region R] [--config FILE] [--set K=V]...
 *           [--key random|line-hash|json:FIELD] [--dummy-credentials] [--quiet] [FILE...]
 *
 * Input is read in 1 MiB chunks; each non-empty line (without its "\n" or "\r\n") is put
 * with a blocking put, so the library's outstanding limits pace the reader. Results are
 * counted on the library's delivery thread (ResultDelivery=background). Exit status: 0
 * if every record was put, 1 if any failed, 2 on usage or configuration errors. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "kinesis_producer.h"

#define CHUNK (1u << 20)
#define MAX_SHOWN 5
#define PROGRESS_MS 250

typedef enum { KEY_RANDOM, KEY_LINE_HASH, KEY_JSON } key_mode;

static struct {
  _Atomic uint64_t ok, failed, bytes_ok;
  pthread_mutex_t lock;
  char shown[MAX_SHOWN][512];
  int n_shown;
} R = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void note_failure(const char *fmt, uint64_t line, const char *a, const char *b) {
  pthread_mutex_lock(&R.lock);
  if (R.n_shown < MAX_SHOWN)
    snprintf(R.shown[R.n_shown++], sizeof R.shown[0], fmt, line, a, b);
  pthread_mutex_unlock(&R.lock);
}

/* Delivery thread. opaque carries the line number. */
static void on_result(kp_producer_t *p, const kp_result_t *r, void *opaque) {
  if (r->err == KP_ERR_NO_ERROR) {
    atomic_fetch_add(&R.ok, 1);
    atomic_fetch_add(&R.bytes_ok, r->len);
    return;
  }
  atomic_fetch_add(&R.failed, 1);
  note_failure("line %" PRIu64 ": %s: %s", (uint64_t)(uintptr_t)r->opaque, kp_err2name(r->err),
               r->error_message ? r->error_message : kp_err2str(r->err));
}

/* Library events worth a user's attention; info lines (daemon started...) stay quiet. */
static void on_log(kp_log_level_t level, const char *msg, void *opaque) {
  if (level >= KP_LOG_WARNING)
    fprintf(stderr, "kpl-put: %s\n", msg);
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void usage(FILE *f) {
  fprintf(f, "usage: kpl-put --stream NAME [options] [FILE...]   (no FILE or '-': stdin)\n"
             "  --stream NAME          stream to put into (required)\n"
             "  --endpoint URL         KinesisEndpoint, e.g. http://127.0.0.1:4567\n"
             "  --region REGION        Region\n"
             "  --config FILE          KPL .properties file (applied first)\n"
             "  --set KEY=VALUE        any setting (KPL or client key), repeatable\n"
             "  --key MODE             partition key: random (default), line-hash, json:FIELD\n"
             "  --dummy-credentials    use AKID 'x' / secret 'x' (emulators only)\n"
             "  --flush-timeout MS     bound on the final flush (default 120000)\n"
             "  --quiet                no progress line\n"
             "Credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or the shared credentials\n"
             "file (AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials; AWS_PROFILE).\n"
             "Exit: 0 all records put, 1 some failed, 2 usage/configuration error.\n");
}

static int set(kp_conf_t *conf, const char *k, const char *v) {
  char err[512];
  if (kp_conf_set(conf, k, v, err, sizeof err) != KP_ERR_NO_ERROR) {
    fprintf(stderr, "kpl-put: %s\n", err);
    return -1;
  }
  return 0;
}

static uint64_t fnv1a(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
  return h;
}

static uint64_t rng_state;
static uint64_t xorshift(void) {
  uint64_t x = rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return rng_state = x;
}

typedef struct ctx {
  kp_producer_t *p;
  const char *stream;
  key_mode mode;
  const char *json_field;
  uint64_t lines, put_errors, bytes_in;
  int progress;
  double t0, last_progress;
} ctx;

static void progress(ctx *c, int final) {
  if (!c->progress)
    return;
  double t = now_s(), el = t - c->t0;
  uint64_t ok = atomic_load(&R.ok), bytes = atomic_load(&R.bytes_ok);
  fprintf(stderr,
          "\r%" PRIu64 " lines, %" PRIu64
          " put  %.0f rec/s  %.2f MB/s  outstanding %zu  failures %" PRIu64 "\033[K%s",
          c->lines, ok, el > 0 ? (double)ok / el : 0.0, el > 0 ? (double)bytes / el / 1e6 : 0.0,
          kp_producer_outstanding(c->p), atomic_load(&R.failed) + c->put_errors, final ? "\n" : "");
  c->last_progress = t;
}

/* Puts one line; a line we cannot put counts as a failure with its reason. */
static void put_line(ctx *c, const char *s, size_t n) {
  if (n && s[n - 1] == '\r')
    n--;
  c->lines++;
  if (!n)
    return;
  char key[300] = "";
  json_t *doc = NULL;
  switch (c->mode) {
  case KEY_RANDOM:
    snprintf(key, sizeof key, "%016" PRIx64, xorshift());
    break;
  case KEY_LINE_HASH:
    snprintf(key, sizeof key, "%016" PRIx64, fnv1a(s, n));
    break;
  case KEY_JSON: {
    json_error_t je;
    doc = json_loadb(s, n, JSON_DECODE_ANY, &je);
    json_t *v = json_is_object(doc) ? json_object_get(doc, c->json_field) : NULL;
    if (!v || json_is_null(v)) {
      c->put_errors++;
      note_failure("line %" PRIu64 ": %s%s", c->lines,
                   doc ? "no partition key field " : "not JSON: ", doc ? c->json_field : je.text);
      json_decref(doc);
      return;
    }
    if (json_is_string(v)) {
      snprintf(key, sizeof key, "%s", json_string_value(v));
    } else {
      char *d = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
      snprintf(key, sizeof key, "%s", d ? d : "");
      free(d);
    }
    break;
  }
  }
  c->bytes_in += n;
  kp_err_t e = kp_producer_put(c->p, c->stream, key, NULL, s, n, KP_PUT_F_BLOCK,
                               (void *)(uintptr_t)c->lines);
  json_decref(doc);
  if (e != KP_ERR_NO_ERROR) {
    c->put_errors++;
    note_failure("line %" PRIu64 ": %s: %s", c->lines, kp_err2name(e), kp_err2str(e));
  }
}

static int put_fd(ctx *c, int fd, const char *name) {
  char *buf = malloc(CHUNK);
  size_t have = 0, cap = CHUNK;
  if (!buf)
    return -1;
  for (;;) {
    if (have == cap) { /* a line longer than the buffer: grow (put reports it too large) */
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        fprintf(stderr, "kpl-put: %s: out of memory\n", name);
        return -1;
      }
      buf = nb;
      cap *= 2;
    }
    ssize_t r = read(fd, buf + have, cap - have);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      fprintf(stderr, "kpl-put: %s: %s\n", name, strerror(errno));
      free(buf);
      return -1;
    }
    if (r == 0)
      break;
    have += (size_t)r;
    size_t start = 0;
    char *nl;
    while ((nl = memchr(buf + start, '\n', have - start))) {
      put_line(c, buf + start, (size_t)(nl - (buf + start)));
      start = (size_t)(nl - buf) + 1;
      if (c->progress && (c->lines & 4095) == 0 && now_s() - c->last_progress > PROGRESS_MS / 1e3)
        progress(c, 0);
    }
    memmove(buf, buf + start, have - start);
    have -= start;
  }
  if (have)
    put_line(c, buf, have);
  free(buf);
  return 0;
}

int main(int argc, char **argv) {
  const char *stream = NULL, *endpoint = NULL, *region = NULL, *config = NULL, *key = "random";
  int dummy = 0, quiet = 0;
  long flush_timeout = 120000;
  enum { O_STREAM = 256, O_ENDPOINT, O_REGION, O_CONFIG, O_SET, O_KEY, O_DUMMY, O_QUIET, O_FT };
  static const struct option opts[] = {{"stream", required_argument, NULL, O_STREAM},
                                       {"endpoint", required_argument, NULL, O_ENDPOINT},
                                       {"region", required_argument, NULL, O_REGION},
                                       {"config", required_argument, NULL, O_CONFIG},
                                       {"set", required_argument, NULL, O_SET},
                                       {"key", required_argument, NULL, O_KEY},
                                       {"dummy-credentials", no_argument, NULL, O_DUMMY},
                                       {"quiet", no_argument, NULL, O_QUIET},
                                       {"flush-timeout", required_argument, NULL, O_FT},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  char **sets = calloc((size_t)argc, sizeof *sets);
  int n_sets = 0, o;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (o) {
    case O_STREAM:
      stream = optarg;
      break;
    case O_ENDPOINT:
      endpoint = optarg;
      break;
    case O_REGION:
      region = optarg;
      break;
    case O_CONFIG:
      config = optarg;
      break;
    case O_SET:
      sets[n_sets++] = optarg;
      break;
    case O_KEY:
      key = optarg;
      break;
    case O_DUMMY:
      dummy = 1;
      break;
    case O_QUIET:
      quiet = 1;
      break;
    case O_FT:
      flush_timeout = atol(optarg);
      break;
    case 'h':
      usage(stdout);
      free(sets);
      return 0;
    default:
      usage(stderr);
      free(sets);
      return 2;
    }
  }
  ctx c = {0};
  if (!strcmp(key, "random"))
    c.mode = KEY_RANDOM;
  else if (!strcmp(key, "line-hash"))
    c.mode = KEY_LINE_HASH;
  else if (!strncmp(key, "json:", 5) && key[5]) {
    c.mode = KEY_JSON;
    c.json_field = key + 5;
  } else {
    fprintf(stderr, "kpl-put: --key %s: expected random, line-hash or json:FIELD\n", key);
    free(sets);
    return 2;
  }
  if (!stream) {
    fprintf(stderr, "kpl-put: --stream is required\n");
    usage(stderr);
    free(sets);
    return 2;
  }
  kp_conf_t *conf = kp_conf_new();
  char err[1024];
  int bad = !conf;
  if (!bad && config && kp_conf_load_properties(conf, config, err, sizeof err) != KP_ERR_NO_ERROR) {
    fprintf(stderr, "kpl-put: %s\n", err);
    bad = 1;
  }
  if (!bad && endpoint)
    bad = set(conf, "KinesisEndpoint", endpoint) != 0;
  if (!bad && region)
    bad = set(conf, "Region", region) != 0;
  if (!bad && dummy)
    bad = set(conf, "AwsAccessKeyId", "x") || set(conf, "AwsSecretAccessKey", "x");
  for (int i = 0; i < n_sets && !bad; i++) {
    char *eq = strchr(sets[i], '=');
    if (!eq) {
      fprintf(stderr, "kpl-put: --set %s: expected KEY=VALUE\n", sets[i]);
      bad = 1;
      break;
    }
    *eq = '\0';
    bad = set(conf, sets[i], eq + 1) != 0;
  }
  free(sets);
  /* Results are counted on the library's thread so the reader never has to poll. */
  if (!bad)
    bad = set(conf, "ResultDelivery", "background") != 0;
  if (bad) {
    kp_conf_destroy(conf);
    return 2;
  }
  kp_conf_set_result_cb(conf, on_result);
  kp_conf_set_log_cb(conf, on_log);
  kp_producer_t *p = kp_producer_new(conf, err, sizeof err);
  if (!p) {
    fprintf(stderr, "kpl-put: %s\n", err);
    kp_conf_destroy(conf);
    return 2;
  }
  rng_state = ((uint64_t)time(NULL) * 0x9E3779B97F4A7C15ULL ^ (uint64_t)getpid()) | 1;
  c.p = p;
  c.stream = stream;
  c.progress = !quiet && isatty(2);
  c.t0 = c.last_progress = now_s();

  int rc = 0;
  if (optind >= argc) {
    rc = put_fd(&c, 0, "stdin");
  } else {
    for (int i = optind; i < argc && rc == 0; i++) {
      if (!strcmp(argv[i], "-")) {
        rc = put_fd(&c, 0, "stdin");
        continue;
      }
      int fd = open(argv[i], O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        fprintf(stderr, "kpl-put: %s: %s\n", argv[i], strerror(errno));
        rc = -1;
        break;
      }
      rc = put_fd(&c, fd, argv[i]);
      close(fd);
    }
  }
  /* Flush, showing progress while waiting; bounded by --flush-timeout. */
  double flush_end = now_s() + (double)flush_timeout / 1e3;
  kp_err_t fe = KP_ERR__TIMED_OUT;
  while (now_s() < flush_end) {
    fe = kp_producer_flush_wait(p, c.progress ? PROGRESS_MS : (int)flush_timeout);
    progress(&c, 0);
    if (fe == KP_ERR_NO_ERROR)
      break;
  }
  kp_err_t ce = kp_producer_close(p, 0, 0); /* purges whatever the flush left */
  kp_producer_destroy(p);
  progress(&c, 1);

  double el = now_s() - c.t0;
  uint64_t ok = atomic_load(&R.ok), failed = atomic_load(&R.failed) + c.put_errors;
  fprintf(stderr,
          "kpl-put: %" PRIu64 " records put (%" PRIu64 " bytes), %" PRIu64 " failed, %" PRIu64
          " lines, in %.2f s (%.0f records/s, %.2f MB/s)\n",
          ok, atomic_load(&R.bytes_ok), failed, c.lines, el, el > 0 ? (double)ok / el : 0.0,
          el > 0 ? (double)atomic_load(&R.bytes_ok) / el / 1e6 : 0.0);
  if (fe != KP_ERR_NO_ERROR || ce != KP_ERR_NO_ERROR)
    fprintf(stderr, "kpl-put: flush did not finish within %ld ms; the rest was purged\n",
            flush_timeout);
  for (int i = 0; i < R.n_shown; i++)
    fprintf(stderr, "kpl-put: %s\n", R.shown[i]);
  if (failed > (uint64_t)R.n_shown)
    fprintf(stderr, "kpl-put: ... and %" PRIu64 " more failures\n", failed - (uint64_t)R.n_shown);
  return rc != 0 || failed ? 1 : 0;
}
