/* kpl-bench: end-to-end load generator for a Kinesis producer daemon.
 *
 * Two ways to drive a daemon:
 *   - through our client library (include/kinesis_producer.h): N putting threads, one
 *     poller thread serving results (or ResultDelivery=background), the library's I/O
 *     thread and the daemon it spawns (ours, or --daemon PATH);
 *   - --kpl-launch: a small direct driver of ANY KPL-compatible daemon binary through the
 *     KPL launch protocol (two FIFOs, -c/-k/-w hex arguments, -i opened before -o, one
 *     PutRecord frame per record, PutRecordResults read back), so the same run can
 *     compare our daemon with the official one.
 *
 * By default it starts kp-sink (bench/sink) on 127.0.0.1 with --shards/--sink-latency-ms
 * and stops it by PID at the end; --endpoint URL uses an endpoint that is already up.
 *
 * Reports user records/s, MB/s, CPU per million records for the client process (its own
 * getrusage: putting threads, library I/O thread, poller), the daemon (/proc/PID/stat)
 * and the sink, put->result latency percentiles (log buckets, 1/16 relative precision),
 * peak RSS of client and daemon (VmHWM), then one JSON line (last line of stdout). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/kpl_bench/common.h"
#include "common/buf.h"
#include "common/config.h"
#include "ipc/frame.h"
#include "kinesis_producer.h"
#include "proto/messages.pb-c.h"

#define MAX_THREADS 64
#define MAX_SETS 128
#define PUT_BATCH 64

/* ---- options ------------------------------------------------------------------ */

typedef struct setting {
  char *key;
  char *value;
  bool user; /* from --set (errors are fatal), else a bench default */
} setting;

static struct {
  int threads;
  size_t record_size;
  uint64_t keys; /* 0: a unique partition key per record */
  double rate;   /* user records/s in total, 0 = as fast as possible */
  double duration;
  double drain_timeout;
  double warmup; /* seconds at the start whose records stay out of the latency figures */
  const char *stream;
  int shards;
  double sink_latency_ms;
  int sink_threads;
  const char *sink_path;
  const char *endpoint;
  const char *daemon;
  bool kpl_launch;
  uint64_t window; /* --kpl-launch: outstanding records */
  const char *cdf_path;
  const char *label;
  bool quiet;
  setting sets[MAX_SETS];
  int n_sets;
  const char *timeline_path;
  bool try_first; /* non-blocking put first, blocking only on QUEUE_FULL */
} opt = {1,    100,  0,     0,      5.0,  30.0, 0.5,   "bench", 4, 0,    1,    NULL,
         NULL, NULL, false, 100000, NULL, "",   false, {{0}},   0, NULL, false};

static hist g_lat;           /* ns; written by one thread at a time (the one serving results) */
static uint64_t g_warmup_ns; /* records put earlier than this (since g_t0) are not in g_lat */

/* ---- shared run state ------------------------------------------------------------- */

static uint64_t g_t0;    /* ns, start of the puts */
static uint64_t g_t_end; /* ns, puts stop */
static atomic_ullong g_ok, g_failed, g_put_errors, g_accepted, g_bytes_ok;
static char g_first_error[256];
static double g_thread_cpu[MAX_THREADS]; /* per putting thread */

typedef struct key_gen {
  uint64_t seed;
  uint64_t counter;
  unsigned tid;
  char buf[40];
} key_gen;

/* Partition key for the next record: unique (thread id + counter, hex), or one of
 * opt.keys distinct keys picked at random. */
static const char *next_key(key_gen *k) {
  static const char hex[] = "0123456789abcdef";
  uint64_t v;
  if (opt.keys == 0)
    v = ((uint64_t)k->tid << 48) ^ (k->counter++ * 0x9E3779B97F4A7C15ull);
  else
    v = xorshift(&k->seed) % opt.keys;
  char *p = k->buf;
  *p++ = 'k';
  for (int i = 15; i >= 0; i--)
    *p++ = hex[(v >> (4 * i)) & 15];
  *p = 0;
  return k->buf;
}

static uint8_t *make_data(unsigned tid) {
  uint8_t *d = malloc(opt.record_size ? opt.record_size : 1);
  if (!d)
    return NULL;
  uint64_t s = 0x2545F4914F6CDD1Dull + tid;
  for (size_t i = 0; i < opt.record_size; i++)
    d[i] = (uint8_t)xorshift(&s);
  return d;
}

/* Paces one putting thread: sleeps until `done` records are due at rate r (per s). */
static void pace(uint64_t start, uint64_t done, double r) {
  if (r <= 0)
    return;
  uint64_t due = start + (uint64_t)((double)done / r * 1e9);
  if (due > g_t_end)
    due = g_t_end;
  uint64_t now = now_ns();
  if (due > now + 20000) {
    struct timespec ts = {(time_t)((due - now) / 1000000000u), (long)((due - now) % 1000000000u)};
    nanosleep(&ts, NULL);
  }
}

/* ---- mode 1: the client library -------------------------------------------------- */

static kp_producer_t *g_p;
static atomic_int g_stop_poller;

/* The clock costs ~45 ns a read here (two per record were a tenth of the client's
 * CPU), so the result side reads it once per 16 results within one kp_producer_poll
 * call (they are delivered within microseconds) and anew in every call; the put side
 * once per 8 puts and before any put that has to wait for room. */
#define CLOCK_EVERY 8
static _Atomic unsigned g_poll_gen; /* bumped before each poll call */
static bool g_background;           /* no poll calls: read the clock every time */
static _Thread_local unsigned tl_gen = ~0u, tl_uses;
static _Thread_local uint64_t tl_now;

static uint64_t result_clock(void) {
  unsigned gen = atomic_load_explicit(&g_poll_gen, memory_order_relaxed);
  if (gen != tl_gen || ++tl_uses >= 2 * CLOCK_EVERY || g_background) {
    tl_gen = gen;
    tl_uses = 0;
    tl_now = now_ns();
  }
  return tl_now;
}

/* --timeline: the worst put->result latency of the records put in each 100-ms slice of
 * the run (start-up transients and stalls show where they happen). */
enum { TL_SLICE_NS = 100000000, TL_SLICES = 6000 };
static _Atomic uint64_t g_tl_max[TL_SLICES];
static _Atomic uint64_t g_tl_n[TL_SLICES];

static void timeline_add(uint64_t put, uint64_t lat) {
  uint64_t s = put / TL_SLICE_NS;
  if (s >= TL_SLICES)
    return;
  atomic_fetch_add_explicit(&g_tl_n[s], 1, memory_order_relaxed);
  uint64_t m = atomic_load_explicit(&g_tl_max[s], memory_order_relaxed);
  while (lat > m && !atomic_compare_exchange_weak_explicit(
                        &g_tl_max[s], &m, lat, memory_order_relaxed, memory_order_relaxed))
    ;
}

/* opaque of the warm-up record, which is not counted */
#define WARMUP_OPAQUE ((void *)UINTPTR_MAX)

static void on_result(kp_producer_t *p, const kp_result_t *r, void *conf_opaque) {
  if (r->opaque == WARMUP_OPAQUE)
    return;
  uint64_t t = result_clock() - g_t0;
  uint64_t put = (uint64_t)(uintptr_t)r->opaque;
  if (put >= g_warmup_ns)
    hist_add(&g_lat, t > put ? t - put : 0);
  if (opt.timeline_path)
    timeline_add(put, t > put ? t - put : 0);
  if (r->err == KP_ERR_NO_ERROR) {
    atomic_fetch_add_explicit(&g_ok, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&g_bytes_ok, r->len, memory_order_relaxed);
  } else {
    if (atomic_fetch_add(&g_failed, 1) == 0)
      snprintf(g_first_error, sizeof g_first_error, "%s: %s", kp_err2name(r->err),
               r->error_message ? r->error_message : "");
  }
}

static void *client_put_main(void *arg) {
  unsigned tid = (unsigned)(uintptr_t)arg;
  uint8_t *data = make_data(tid);
  key_gen k = {0x9E3779B97F4A7C15ull ^ ((uint64_t)tid << 32), 0, tid, {0}};
  double r = opt.rate > 0 ? opt.rate / opt.threads : 0;
  uint64_t done = 0;
  uint64_t start = now_ns();
  while (data) {
    uint64_t now = now_ns();
    if (now >= g_t_end)
      break;
    uint64_t ts = 0, accepted = 0;
    for (int i = 0; i < PUT_BATCH; i++) {
      if (i % CLOCK_EVERY == 0)
        ts = now_ns() - g_t0;
      const char *key = next_key(&k);
      /* A blocking put, as an application that produces faster than the stream takes
       * uses; its latency counts any wait for room. --try-first: a non-blocking put
       * first, which fills every queue to MaxOutstandingBytes. */
      kp_err_t e = kp_producer_put(g_p, opt.stream, key, NULL, data, opt.record_size,
                                   opt.try_first ? 0 : KP_PUT_F_BLOCK, (void *)ts);
      if (opt.try_first && e == KP_ERR__QUEUE_FULL) { /* it will wait: latency starts now */
        ts = now_ns() - g_t0;
        e = kp_producer_put(g_p, opt.stream, key, NULL, data, opt.record_size, KP_PUT_F_BLOCK,
                            (void *)ts);
      }
      if (e == KP_ERR_NO_ERROR) {
        accepted++;
      } else if (atomic_fetch_add(&g_put_errors, 1) == 0) {
        snprintf(g_first_error, sizeof g_first_error, "put: %s", kp_err2str(e));
      }
      if (e == KP_ERR__STATE) {
        atomic_fetch_add_explicit(&g_accepted, accepted, memory_order_relaxed);
        goto out;
      }
    }
    atomic_fetch_add_explicit(&g_accepted, accepted, memory_order_relaxed);
    done += PUT_BATCH;
    pace(start, done, r);
  }
out:
  g_thread_cpu[tid] = rusage_cpu(RUSAGE_THREAD);
  free(data);
  return NULL;
}

static void *poller_main(void *arg) {
  for (int guard = 0; !atomic_load(&g_stop_poller) && guard < 100000000; guard++) {
    atomic_fetch_add_explicit(&g_poll_gen, 1, memory_order_relaxed);
    kp_producer_poll(g_p, 50);
  }
  return NULL;
}

/* ---- mode 2: the KPL launch protocol, driven directly ------------------------------ */

typedef struct kpl_driver {
  char dir[128];
  char to_daemon[256];   /* the daemon's -o: it reads this */
  char from_daemon[256]; /* the daemon's -i: it writes this */
  pid_t pid;
  int rfd, wfd;
  pthread_mutex_t wlock;
  pthread_mutex_t lock;
  pthread_cond_t cv;
  atomic_ullong next_id; /* ids of PutRecords handed out */
  atomic_ullong answered;
  uint64_t *put_ts; /* ring by id: put time, ns since g_t0 */
  uint64_t mask;
  atomic_int opened;
  atomic_int eof;
  double reader_cpu;
} kpl_driver;

static kpl_driver g_kpl;

static char *hex_of(const ProtobufCMessage *m) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *b = malloc(n ? n : 1);
  char *h = malloc(2 * n + 1);
  if (!b || !h) {
    free(b);
    free(h);
    return NULL;
  }
  protobuf_c_message_pack(m, b);
  static const char X[] = "0123456789ABCDEF";
  for (size_t i = 0; i < n; i++) {
    h[2 * i] = X[b[i] >> 4];
    h[2 * i + 1] = X[b[i] & 15];
  }
  h[2 * n] = 0;
  free(b);
  return h;
}

static int write_all(int fd, const uint8_t *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Unblocks our blocking FIFO opens if the daemon never opens its ends (dead, wrong
 * binary): opens the other side itself after 15 s or once the daemon has exited. */
static void *open_guard_main(void *arg) {
  for (int i = 0; i < 1500 && !atomic_load(&g_kpl.opened); i++) {
    siginfo_t si = {0};
    if (waitid(P_PID, (id_t)g_kpl.pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid)
      break;
    usleep(10000);
  }
  if (atomic_load(&g_kpl.opened))
    return NULL;
  int a = open(g_kpl.from_daemon, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  int b = open(g_kpl.to_daemon, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  for (int i = 0; i < 500 && atomic_load(&g_kpl.opened) == 0; i++)
    usleep(10000);
  if (a >= 0)
    close(a);
  if (b >= 0)
    close(b);
  return NULL;
}

static int kpl_build_config(char **cfg_hex, char **creds_hex, char **mcreds_hex, char *err,
                            size_t errsz) {
  kp_config c;
  kp_config_init(&c);
  for (int i = 0; i < opt.n_sets; i++) {
    setting *s = &opt.sets[i];
    if (!strcmp(s->key, "AwsAccessKeyId") || !strcmp(s->key, "AwsSecretAccessKey"))
      continue;
    if (!kp_config_find(s->key)) {
      if (s->user)
        fprintf(stderr, "kpl-bench: %s is not a daemon setting; ignored with --kpl-launch\n",
                s->key);
      continue;
    }
    if (kp_config_set(&c, s->key, s->value, err, errsz) != KP_CONF_OK) {
      kp_config_free(&c);
      return -1;
    }
  }
  Kpl__Configuration pc = KPL__CONFIGURATION__INIT;
  if (kp_config_to_proto(&c, &pc)) {
    snprintf(err, errsz, "cannot build the Configuration");
    kp_config_free(&c);
    return -1;
  }
  Kpl__Message m = KPL__MESSAGE__INIT;
  m.id = 0;
  m.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_CONFIGURATION;
  m.configuration = &pc;
  *cfg_hex = hex_of(&m.base);
  kp_config_proto_free(&pc);
  kp_config_free(&c);

  const char *akid = "AKIDBENCH", *secret = "bench-secret";
  for (int i = 0; i < opt.n_sets; i++) {
    if (!strcmp(opt.sets[i].key, "AwsAccessKeyId"))
      akid = opt.sets[i].value;
    if (!strcmp(opt.sets[i].key, "AwsSecretAccessKey"))
      secret = opt.sets[i].value;
  }
  for (int metrics = 0; metrics < 2; metrics++) {
    Kpl__Credentials cr = KPL__CREDENTIALS__INIT;
    cr.akid = (char *)akid;
    cr.secret_key = (char *)secret;
    Kpl__SetCredentials sc = KPL__SET_CREDENTIALS__INIT;
    sc.has_for_metrics = 1;
    sc.for_metrics = metrics;
    sc.credentials = &cr;
    Kpl__Message cm = KPL__MESSAGE__INIT;
    cm.id = (uint64_t)INT64_MAX;
    cm.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_SET_CREDENTIALS;
    cm.set_credentials = &sc;
    *(metrics ? mcreds_hex : creds_hex) = hex_of(&cm.base);
  }
  if (!*cfg_hex || !*creds_hex || !*mcreds_hex) {
    snprintf(err, errsz, "out of memory");
    return -1;
  }
  return 0;
}

static int kpl_start(const char *path, char *err, size_t errsz) {
  kpl_driver *d = &g_kpl;
  const char *tmp = getenv("TMPDIR");
  if (!tmp || strlen(tmp) > 64)
    tmp = "/tmp";
  snprintf(d->dir, sizeof d->dir, "%s/kpl-bench-XXXXXX", tmp);
  if (!mkdtemp(d->dir)) {
    snprintf(err, errsz, "mkdtemp: %s", strerror(errno));
    return -1;
  }
  snprintf(d->to_daemon, sizeof d->to_daemon, "%.120s/amz-aws-kpl-out-pipe-bench", d->dir);
  snprintf(d->from_daemon, sizeof d->from_daemon, "%.120s/amz-aws-kpl-in-pipe-bench", d->dir);
  if (mkfifo(d->to_daemon, 0600) || mkfifo(d->from_daemon, 0600)) {
    snprintf(err, errsz, "mkfifo: %s", strerror(errno));
    return -1;
  }
  char *cfg = NULL, *creds = NULL, *mcreds = NULL;
  if (kpl_build_config(&cfg, &creds, &mcreds, err, errsz))
    return -1;
  char *argv[] = {(char *)path, "-o", d->to_daemon, "-i", d->from_daemon, "-c",      cfg, "-k",
                  creds,        "-w", mcreds,       "-t", "-l",           "warning", NULL};
  pid_t parent = getpid();
  d->pid = fork();
  if (d->pid < 0) {
    snprintf(err, errsz, "fork: %s", strerror(errno));
    return -1;
  }
  if (d->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
      _exit(127);
    execv(path, argv);
    fprintf(stderr, "kpl-bench: exec %s: %s\n", path, strerror(errno));
    _exit(127);
  }
  free(cfg);
  free(creds);
  free(mcreds);
  pthread_t guard;
  pthread_create(&guard, NULL, open_guard_main, NULL);
  /* As the Java wrapper: our read end (-i) first, then -o, blocking opens. */
  d->rfd = open(d->from_daemon, O_RDONLY | O_CLOEXEC);
  d->wfd = d->rfd >= 0 ? open(d->to_daemon, O_WRONLY | O_CLOEXEC) : -1;
  atomic_store(&d->opened, 1);
  pthread_join(guard, NULL);
  siginfo_t si = {0};
  if (d->rfd < 0 || d->wfd < 0 ||
      (waitid(P_PID, (id_t)d->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid)) {
    snprintf(err, errsz, "the daemon %s did not open its FIFOs", path);
    return -1;
  }
  signal(SIGPIPE, SIG_IGN);
  uint64_t ring = 1;
  while (ring < 2 * (opt.window + (uint64_t)opt.threads * PUT_BATCH))
    ring <<= 1;
  d->put_ts = calloc(ring, sizeof *d->put_ts);
  d->mask = ring - 1;
  atomic_store(&d->next_id, 1);
  pthread_mutex_init(&d->wlock, NULL);
  pthread_mutex_init(&d->lock, NULL);
  pthread_cond_init(&d->cv, NULL);
  return d->put_ts ? 0 : -1;
}

static void *kpl_reader_main(void *arg) {
  kpl_driver *d = &g_kpl;
  size_t cap = 1 << 18;
  uint8_t *buf = malloc(cap);
  kp_frame_decoder dec;
  kp_frame_decoder_init(&dec, 0);
  while (buf) {
    ssize_t n = read(d->rfd, buf, cap);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    if (kp_frame_decoder_feed(&dec, buf, (size_t)n))
      break;
    const uint8_t *pl;
    size_t len;
    int rc;
    uint64_t got = 0;
    while ((rc = kp_frame_decoder_next(&dec, &pl, &len)) == 1) {
      Kpl__Message *m = kpl__message__unpack(NULL, len, pl);
      if (!m)
        continue;
      if (m->actual_message_case == KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD_RESULT) {
        uint64_t t = now_ns() - g_t0, put = d->put_ts[m->source_id & d->mask];
        if (put >= g_warmup_ns)
          hist_add(&g_lat, t > put ? t - put : 0);
        if (opt.timeline_path)
          timeline_add(put, t > put ? t - put : 0);
        if (m->put_record_result->success) {
          atomic_fetch_add_explicit(&g_ok, 1, memory_order_relaxed);
          atomic_fetch_add_explicit(&g_bytes_ok, opt.record_size, memory_order_relaxed);
        } else if (atomic_fetch_add(&g_failed, 1) == 0) {
          Kpl__PutRecordResult *r = m->put_record_result;
          Kpl__Attempt *a = r->n_attempts ? r->attempts[r->n_attempts - 1] : NULL;
          snprintf(g_first_error, sizeof g_first_error, "%s: %s",
                   a && a->error_code ? a->error_code : "?",
                   a && a->error_message ? a->error_message : "");
        }
        got++;
      }
      kpl__message__free_unpacked(m, NULL);
    }
    if (rc < 0)
      break;
    if (got) {
      atomic_fetch_add(&d->answered, got);
      pthread_mutex_lock(&d->lock);
      pthread_cond_broadcast(&d->cv);
      pthread_mutex_unlock(&d->lock);
    }
  }
  kp_frame_decoder_free(&dec);
  free(buf);
  d->reader_cpu = rusage_cpu(RUSAGE_THREAD);
  atomic_store(&d->eof, 1);
  pthread_mutex_lock(&d->lock);
  pthread_cond_broadcast(&d->cv);
  pthread_mutex_unlock(&d->lock);
  return NULL;
}

static void *kpl_put_main(void *arg) {
  kpl_driver *d = &g_kpl;
  unsigned tid = (unsigned)(uintptr_t)arg;
  uint8_t *data = make_data(tid);
  key_gen k = {0x9E3779B97F4A7C15ull ^ ((uint64_t)tid << 32), 0, tid, {0}};
  double r = opt.rate > 0 ? opt.rate / opt.threads : 0;
  kp_buf out = KP_BUF_INIT;
  uint64_t done = 0, start = now_ns();
  while (data) {
    if (now_ns() >= g_t_end)
      break;
    /* Window: outstanding records (sent - answered) stay under opt.window. */
    if (atomic_load(&d->next_id) - 1 + PUT_BATCH - atomic_load(&d->answered) > opt.window) {
      pthread_mutex_lock(&d->lock);
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += 10000000;
      if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
      }
      if (!atomic_load(&d->eof))
        pthread_cond_timedwait(&d->cv, &d->lock, &ts);
      pthread_mutex_unlock(&d->lock);
      if (atomic_load(&d->eof))
        break;
      continue;
    }
    uint64_t id = atomic_fetch_add(&d->next_id, PUT_BATCH);
    kp_buf_reset(&out);
    for (int i = 0; i < PUT_BATCH; i++) {
      Kpl__PutRecord pr = KPL__PUT_RECORD__INIT;
      pr.stream_name = (char *)opt.stream;
      pr.partition_key = (char *)next_key(&k);
      pr.data.data = data;
      pr.data.len = opt.record_size;
      Kpl__Message m = KPL__MESSAGE__INIT;
      m.id = id + (uint64_t)i;
      m.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD;
      m.put_record = &pr;
      d->put_ts[m.id & d->mask] = now_ns() - g_t0;
      if (kp_frame_append_pb(&out, &m.base, 0))
        goto out;
    }
    pthread_mutex_lock(&d->wlock);
    int rc = write_all(d->wfd, out.data, out.len);
    pthread_mutex_unlock(&d->wlock);
    if (rc) {
      snprintf(g_first_error, sizeof g_first_error, "write to the daemon: %s", strerror(errno));
      break;
    }
    atomic_fetch_add(&g_accepted, PUT_BATCH);
    done += PUT_BATCH;
    pace(start, done, r);
  }
out:
  g_thread_cpu[tid] = rusage_cpu(RUSAGE_THREAD);
  kp_buf_free(&out);
  free(data);
  return NULL;
}

static void kpl_flush(void) {
  Kpl__Flush f = KPL__FLUSH__INIT;
  Kpl__Message m = KPL__MESSAGE__INIT;
  m.id = atomic_fetch_add(&g_kpl.next_id, 1);
  m.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_FLUSH;
  m.flush = &f;
  kp_buf b = KP_BUF_INIT;
  if (!kp_frame_append_pb(&b, &m.base, 0)) {
    pthread_mutex_lock(&g_kpl.wlock);
    write_all(g_kpl.wfd, b.data, b.len);
    pthread_mutex_unlock(&g_kpl.wlock);
  }
  kp_buf_free(&b);
}

/* Waits until every sent record is answered (Flush every 500 ms, like the wrapper's
 * flushSync), bounded by timeout_s. Returns 0 when all are answered. */
static int kpl_drain(double timeout_s) {
  uint64_t end = now_ns() + (uint64_t)(timeout_s * 1e9), last_flush = 0;
  while (now_ns() < end) {
    if (atomic_load(&g_kpl.answered) >= atomic_load(&g_accepted))
      return 0;
    if (atomic_load(&g_kpl.eof))
      return -1;
    if (now_ns() - last_flush > 500000000u) {
      kpl_flush();
      last_flush = now_ns();
    }
    pthread_mutex_lock(&g_kpl.lock);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 20000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&g_kpl.cv, &g_kpl.lock, &ts);
    pthread_mutex_unlock(&g_kpl.lock);
  }
  return atomic_load(&g_kpl.answered) >= atomic_load(&g_accepted) ? 0 : -1;
}

/* End of input, then SIGTERM (what the wrapper's destroy() does), then SIGKILL. */
static void kpl_stop(void) {
  if (g_kpl.wfd >= 0)
    close(g_kpl.wfd);
  g_kpl.wfd = -1;
  if (g_kpl.pid > 0 && wait_pid_ms(g_kpl.pid, 3000) < 0) {
    kill(g_kpl.pid, SIGTERM);
    if (wait_pid_ms(g_kpl.pid, 10000) < 0) {
      kill(g_kpl.pid, SIGKILL);
      wait_pid_ms(g_kpl.pid, 5000);
    }
  }
  g_kpl.pid = 0;
  unlink(g_kpl.to_daemon);
  unlink(g_kpl.from_daemon);
  rmdir(g_kpl.dir);
}

/* ---- main ------------------------------------------------------------------------ */

static void usage(FILE *f) {
  fprintf(f, "usage: kpl-bench [options]\n"
             "  --threads N          putting threads (default 1)\n"
             "  --record-size B      user record data bytes (default 100)\n"
             "  --keys N             distinct partition keys, 0 = unique per record (default 0)\n"
             "  --rate R             target user records/s in total, 0 = max (default 0)\n"
             "  --duration S         seconds of puts (default 5)\n"
             "  --drain-timeout S    bound on waiting for the last results (default 30)\n"
             "  --warmup S           records put in the first S seconds are left out of the\n"
             "                       latency percentiles (start-up is not steady state;\n"
             "                       rates and CPU count them; default 0.5)\n"
             "  --stream NAME        stream name (default bench)\n"
             "  --shards N           kp-sink shards (default 4)\n"
             "  --sink-latency-ms X  kp-sink response delay (default 0)\n"
             "  --sink-threads N     kp-sink worker loops (default 1)\n"
             "  --sink PATH          kp-sink binary (default: next to kpl-bench)\n"
             "  --endpoint URL       use this endpoint instead of starting kp-sink\n"
             "  --set KEY=VALUE      any configuration key (KPL or client), repeatable\n"
             "  --daemon PATH        daemon binary (NativeExecutable; with --kpl-launch: any\n"
             "                       KPL-compatible binary, default: our kinesis_producer)\n"
             "  --kpl-launch         drive the daemon directly via the KPL launch protocol\n"
             "  --window N           --kpl-launch: max outstanding records (default 100000)\n"
             "  --cdf FILE           write the latency CDF (ms, fraction) to FILE\n"
             "  --timeline FILE      write, per 100 ms of put time, the records put and their\n"
             "                       worst latency (s, count, ms; warm-up included)\n"
             "  --try-first          put without KP_PUT_F_BLOCK first, blocking only on\n"
             "                       QUEUE_FULL (latency then from the blocking call);\n"
             "                       default: every put blocks, latency from its call\n"
             "  --label TEXT         copied into the JSON line\n"
             "  --quiet              only the JSON line\n"
             "Bench defaults (override with --set): Region=us-east-1 MetricsLevel=none\n"
             "RateLimit=1000000 RequestEncoding=cbor LogLevel=warning, dummy keys.\n");
}

static void add_set(const char *k, size_t kl, const char *v, bool user) {
  for (int i = 0; i < opt.n_sets; i++)
    if (strlen(opt.sets[i].key) == kl && !strncmp(opt.sets[i].key, k, kl)) {
      free(opt.sets[i].value);
      opt.sets[i].value = strdup(v);
      opt.sets[i].user = user;
      return;
    }
  if (opt.n_sets < MAX_SETS) {
    opt.sets[opt.n_sets].key = strndup(k, kl);
    opt.sets[opt.n_sets].value = strdup(v);
    opt.sets[opt.n_sets].user = user;
    opt.n_sets++;
  }
}

static const char *get_set(const char *k, const char *dflt) {
  for (int i = 0; i < opt.n_sets; i++)
    if (!strcmp(opt.sets[i].key, k))
      return opt.sets[i].value;
  return dflt;
}

static bool is_true(const char *v) {
  return !strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "yes");
}

int main(int argc, char **argv) {
  static const struct option opts[] = {{"threads", required_argument, 0, 'T'},
                                       {"record-size", required_argument, 0, 'R'},
                                       {"keys", required_argument, 0, 'K'},
                                       {"rate", required_argument, 0, 'r'},
                                       {"duration", required_argument, 0, 'd'},
                                       {"drain-timeout", required_argument, 0, 'D'},
                                       {"warmup", required_argument, 0, 1001},
                                       {"stream", required_argument, 0, 'n'},
                                       {"shards", required_argument, 0, 'S'},
                                       {"sink-latency-ms", required_argument, 0, 'L'},
                                       {"sink-threads", required_argument, 0, 'U'},
                                       {"sink", required_argument, 0, 's'},
                                       {"endpoint", required_argument, 0, 'e'},
                                       {"set", required_argument, 0, 'X'},
                                       {"daemon", required_argument, 0, 'P'},
                                       {"kpl-launch", no_argument, 0, 'k'},
                                       {"window", required_argument, 0, 'W'},
                                       {"cdf", required_argument, 0, 'c'},
                                       {"timeline", required_argument, 0, 'Z'},
                                       {"label", required_argument, 0, 'l'},
                                       {"try-first", no_argument, 0, 'F'},
                                       {"quiet", no_argument, 0, 'q'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  /* Bench defaults first, so --set overrides them. */
  add_set("Region", 6, "us-east-1", false);
  add_set("MetricsLevel", 12, "none", false);
  add_set("RateLimit", 9, "1000000", false);
  add_set("RequestEncoding", 15, "cbor", false);
  add_set("LogLevel", 8, "warning", false);
  add_set("AwsAccessKeyId", 14, "AKIDBENCH", false);
  add_set("AwsSecretAccessKey", 18, "bench-secret", false);
  int ch;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 'T':
      opt.threads = atoi(optarg);
      break;
    case 'R':
      opt.record_size = (size_t)strtoull(optarg, NULL, 10);
      break;
    case 'K':
      opt.keys = strtoull(optarg, NULL, 10);
      break;
    case 'r':
      opt.rate = atof(optarg);
      break;
    case 'd':
      opt.duration = atof(optarg);
      break;
    case 'D':
      opt.drain_timeout = atof(optarg);
      break;
    case 1001:
      opt.warmup = atof(optarg);
      break;
    case 'n':
      opt.stream = optarg;
      break;
    case 'S':
      opt.shards = atoi(optarg);
      break;
    case 'L':
      opt.sink_latency_ms = atof(optarg);
      break;
    case 'U':
      opt.sink_threads = atoi(optarg);
      break;
    case 's':
      opt.sink_path = optarg;
      break;
    case 'e':
      opt.endpoint = optarg;
      break;
    case 'X': {
      const char *eq = strchr(optarg, '=');
      if (!eq || eq == optarg) {
        fprintf(stderr, "kpl-bench: --set wants KEY=VALUE, got '%s'\n", optarg);
        return 2;
      }
      add_set(optarg, (size_t)(eq - optarg), eq + 1, true);
      break;
    }
    case 'P':
      opt.daemon = optarg;
      break;
    case 'k':
      opt.kpl_launch = true;
      break;
    case 'W':
      opt.window = strtoull(optarg, NULL, 10);
      break;
    case 'c':
      opt.cdf_path = optarg;
      break;
    case 'Z':
      opt.timeline_path = optarg;
      break;
    case 'l':
      opt.label = optarg;
      break;
    case 'F':
      opt.try_first = true;
      break;
    case 'q':
      opt.quiet = true;
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (optind != argc || opt.threads < 1 || opt.threads > MAX_THREADS || opt.record_size < 1 ||
      opt.record_size > 1048576 || opt.rate < 0 || !(opt.duration > 0) || opt.duration > 3600 ||
      !(opt.drain_timeout > 0) || opt.drain_timeout > 3600 || !(opt.warmup >= 0) ||
      opt.warmup >= opt.duration || opt.shards < 1 || opt.shards > 10000 ||
      opt.sink_latency_ms < 0 || opt.sink_threads < 1 || opt.window < 1 || opt.window > 100000000) {
    usage(stderr);
    return 2;
  }
  if (!opt.sink_path && !opt.endpoint)
    opt.sink_path = sibling(argv[0], "kp-sink");
  if (opt.kpl_launch && !opt.daemon)
    opt.daemon = sibling(argv[0], "kinesis_producer");

  char err[1024], url[256];
  if (opt.endpoint) {
    snprintf(url, sizeof url, "%s", opt.endpoint);
  } else if (sink_start(opt.sink_path, opt.shards, opt.sink_latency_ms, opt.sink_threads, url,
                        sizeof url, err, sizeof err)) {
    fprintf(stderr, "kpl-bench: %s\n", err);
    sink_stop();
    return 1;
  }
  /* The endpoint goes first so that a --set KinesisEndpoint wins. */
  bool have_ep = false;
  for (int i = 0; i < opt.n_sets; i++)
    have_ep |= !strcmp(opt.sets[i].key, "KinesisEndpoint");
  if (!have_ep)
    add_set("KinesisEndpoint", 15, url, false);
  bool aggregation = is_true(get_set("AggregationEnabled", "true"));
  const char *rmbt = get_set("RecordMaxBufferedTime", "100");

  pid_t daemon_pid = 0;
  int rc = 0;
  if (!opt.kpl_launch) {
    kp_conf_t *conf = kp_conf_new();
    if (opt.daemon)
      add_set("NativeExecutable", 16, opt.daemon, true);
    for (int i = 0; conf && i < opt.n_sets; i++)
      if (kp_conf_set(conf, opt.sets[i].key, opt.sets[i].value, err, sizeof err)) {
        fprintf(stderr, "kpl-bench: %s\n", err);
        kp_conf_destroy(conf);
        sink_stop();
        return 2;
      }
    kp_conf_set_result_cb(conf, on_result);
    g_p = kp_producer_new(conf, err, sizeof err);
    if (!g_p) {
      fprintf(stderr, "kpl-bench: %s\n", err);
      kp_conf_destroy(conf);
      sink_stop();
      return 1;
    }
    daemon_pid = kp_producer_daemon_pid(g_p);
    /* Warm-up: one record through, so the daemon runs, has the shard map and a
     * connection before the clock starts (start-up is not steady state). */
    static const char w[] = "warm-up";
    if (kp_producer_put(g_p, opt.stream, "warm-up", NULL, w, sizeof w - 1, KP_PUT_F_BLOCK,
                        WARMUP_OPAQUE) != KP_ERR_NO_ERROR ||
        kp_producer_flush_wait(g_p, 30000) != KP_ERR_NO_ERROR)
      fprintf(stderr, "kpl-bench: warm-up record not answered within 30 s\n");
  } else {
    if (kpl_start(opt.daemon, err, sizeof err)) {
      fprintf(stderr, "kpl-bench: %s\n", err);
      kpl_stop();
      sink_stop();
      return 1;
    }
    daemon_pid = g_kpl.pid;
  }
  bool background = !opt.kpl_launch && !strcasecmp(get_set("ResultDelivery", "poll"), "background");
  g_background = background;

  double load_start = loadavg1();
  unsigned long long sb0, st0, sb1, st1;
  sys_cpu(&sb0, &st0);
  double client_cpu0 = rusage_cpu(RUSAGE_SELF);
  double daemon_cpu0 = proc_cpu(daemon_pid);
  sink_stats sink0 = sink_read_stats(SIGUSR1);
  g_t0 = now_ns();
  g_t_end = g_t0 + (uint64_t)(opt.duration * 1e9);
  g_warmup_ns = (uint64_t)(opt.warmup * 1e9);

  pthread_t th[MAX_THREADS], poller, reader;
  bool have_poller = false, have_reader = false;
  if (opt.kpl_launch)
    have_reader = !pthread_create(&reader, NULL, kpl_reader_main, NULL);
  else if (!background)
    have_poller = !pthread_create(&poller, NULL, poller_main, NULL);
  int started = 0;
  for (; started < opt.threads; started++)
    if (pthread_create(&th[started], NULL, opt.kpl_launch ? kpl_put_main : client_put_main,
                       (void *)(uintptr_t)started))
      break;
  for (int i = 0; i < started; i++)
    pthread_join(th[i], NULL);
  uint64_t t_puts = now_ns();

  int drained;
  if (!opt.kpl_launch) {
    if (have_poller) {
      atomic_store(&g_stop_poller, 1);
      pthread_join(poller, NULL);
    }
    drained =
        kp_producer_flush_wait(g_p, (int)(opt.drain_timeout * 1000)) == KP_ERR_NO_ERROR ? 0 : -1;
  } else {
    drained = kpl_drain(opt.drain_timeout);
  }
  uint64_t t_done = now_ns();
  double client_cpu = rusage_cpu(RUSAGE_SELF) - client_cpu0;
  double daemon_cpu = proc_cpu(daemon_pid) - daemon_cpu0;
  double daemon_rss = vm_hwm_mib(daemon_pid), daemon_shm = rss_shmem_mib(daemon_pid);
  double client_shm = rss_shmem_mib(0);
  sys_cpu(&sb1, &st1);
  sink_stats sink1 = sink_read_stats(SIGUSR1);

  kp_stats_t ks = {0};
  if (!opt.kpl_launch) {
    kp_producer_stats(g_p, &ks);
    kp_err_t ce = kp_producer_close(g_p, 0, 10000);
    if (ce != KP_ERR_NO_ERROR)
      fprintf(stderr, "kpl-bench: close: %s\n", kp_err2str(ce));
    kp_producer_destroy(g_p);
  } else {
    kpl_stop();
    if (have_reader)
      pthread_join(reader, NULL);
  }
  double client_rss = vm_hwm_mib(0);
  sink_stop();

  double wall = (double)(t_done - g_t0) * 1e-9;
  double put_wall = (double)(t_puts - g_t0) * 1e-9;
  unsigned long long ok = atomic_load(&g_ok), failed = atomic_load(&g_failed),
                     accepted = atomic_load(&g_accepted), put_errors = atomic_load(&g_put_errors);
  double rps = (double)ok / wall;
  double mbps = (double)atomic_load(&g_bytes_ok) / wall / 1e6;
  double put_threads_cpu = 0;
  for (int i = 0; i < started; i++)
    put_threads_cpu += g_thread_cpu[i];
  double per = ok ? 1e6 / (double)ok : 0; /* s -> us per record */
  double sink_cpu = sink1.valid && sink0.valid ? sink1.cpu_s - sink0.cpu_s : -1;
  unsigned long long sink_urec = sink1.valid ? sink1.user_records - sink0.user_records : 0;
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  double sys_busy = st1 > st0 ? 100.0 * (double)(sb1 - sb0) / (double)(st1 - st0) : -1;
  double ours_share =
      100.0 * (client_cpu + daemon_cpu + (sink_cpu > 0 ? sink_cpu : 0)) / (wall * (double)ncpu);
  double p50 = hist_quantile(&g_lat, 0.5) / 1e6, p99 = hist_quantile(&g_lat, 0.99) / 1e6,
         p999 = hist_quantile(&g_lat, 0.999) / 1e6, pmax = (double)g_lat.max / 1e6;
  if (drained || failed || put_errors || ok != accepted)
    rc = 1;

  if (opt.cdf_path) {
    FILE *f = fopen(opt.cdf_path, "w");
    if (f) {
      fprintf(f, "# latency_ms fraction (put->result, %llu records)\n",
              (unsigned long long)g_lat.n);
      uint64_t seen = 0;
      for (unsigned i = 0; i < HIST_BUCKETS; i++)
        if (g_lat.b[i]) {
          seen += g_lat.b[i];
          fprintf(f, "%.4f %.6f\n", hist_upper(i) / 1e6, (double)seen / (double)g_lat.n);
        }
      fclose(f);
    }
  }

  /* With --timeline: the worst latency of records put in the first second, and after. */
  double worst_first = -1, worst_later = -1;
  for (unsigned s = 0; opt.timeline_path && s < TL_SLICES; s++) {
    double ms = atomic_load(&g_tl_n[s]) ? (double)atomic_load(&g_tl_max[s]) / 1e6 : -1;
    double *w = s < 1000000000 / TL_SLICE_NS ? &worst_first : &worst_later;
    if (ms > *w)
      *w = ms;
  }
  if (opt.timeline_path) {
    FILE *f = fopen(opt.timeline_path, "w");
    if (f) {
      fprintf(f, "# put_s records worst_latency_ms\n");
      for (unsigned s = 0; s < TL_SLICES; s++) {
        uint64_t n = atomic_load(&g_tl_n[s]);
        if (n)
          fprintf(f, "%.1f %llu %.3f\n", s * 0.1, (unsigned long long)n,
                  (double)atomic_load(&g_tl_max[s]) / 1e6);
      }
      fclose(f);
    }
  }

  if (!opt.quiet) {
    printf("kpl-bench: %sdaemon %s, %d thread(s), %zu B records, %s keys, %d shard(s), "
           "sink latency %g ms, aggregation %s, rate %s\n",
           opt.kpl_launch ? "KPL launch protocol, " : "client library, ",
           opt.daemon ? opt.daemon : "(default)", opt.threads, opt.record_size,
           opt.keys ? "spread" : "unique", opt.shards, opt.sink_latency_ms,
           aggregation ? "on" : "off", opt.rate > 0 ? "paced" : "max");
    printf("  records   %llu ok, %llu failed, %llu put errors; puts for %.2f s, all results "
           "after %.2f s%s\n",
           ok, failed, put_errors, put_wall, wall, drained ? " (DRAIN TIMED OUT)" : "");
    printf("  rate      %.0f user records/s, %.1f MB/s of user data\n", rps, mbps);
    printf("  CPU       client %.3f s (%.3f us/rec; putting threads %.3f s), daemon %.3f s "
           "(%.3f us/rec), total %.3f us/rec; sink %.3f us/rec\n",
           client_cpu, client_cpu * per, put_threads_cpu, daemon_cpu, daemon_cpu * per,
           (client_cpu + daemon_cpu) * per, sink_cpu > 0 ? sink_cpu * per : 0);
    printf("  latency   put->result p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms\n", p50,
           p99, p999, pmax);
    printf("  memory    peak RSS client %.1f MiB, daemon %.1f MiB (of which the shared memory "
           "file %.1f / %.1f MiB)\n",
           client_rss, daemon_rss, client_shm, daemon_shm);
    printf("  machine   %ld CPUs, %.0f %% busy (all processes), ours %.0f %%, load %.2f; "
           "sink counted %llu user records, %llu misrouted\n",
           ncpu, sys_busy, ours_share, load_start, sink_urec, sink1.misrouted);
    if (g_first_error[0])
      printf("  first error: %s\n", g_first_error);
  }
  printf(
      "{\"tool\":\"kpl-bench\",\"label\":\"%s\",\"mode\":\"%s\",\"put\":\"%s\",\"daemon\":\"%s\","
      "\"threads\":%d,\"record_size\":%zu,\"keys\":%llu,\"shards\":%d,"
      "\"sink_latency_ms\":%g,\"aggregation\":%s,\"record_max_buffered_time_ms\":%s,"
      "\"request_encoding\":\"%s\",\"result_batches\":%s,\"latency_warmup_s\":%g,"
      "\"rate_target\":%.0f,\"duration_s\":%.3f,\"wall_s\":%.3f,\"accepted\":%llu,"
      "\"results_ok\":%llu,\"results_failed\":%llu,\"put_errors\":%llu,\"drained\":%s,"
      "\"user_records_per_s\":%.0f,\"mb_per_s\":%.2f,\"client_cpu_s\":%.3f,"
      "\"client_put_threads_cpu_s\":%.3f,\"daemon_cpu_s\":%.3f,\"sink_cpu_s\":%.3f,"
      "\"client_us_per_rec\":%.4f,\"daemon_us_per_rec\":%.4f,\"total_us_per_rec\":%.4f,"
      "\"sink_us_per_rec\":%.4f,\"client_cpu_s_per_M\":%.3f,\"daemon_cpu_s_per_M\":%.3f,"
      "\"lat_p50_ms\":%.3f,\"lat_p99_ms\":%.3f,\"lat_p999_ms\":%.3f,\"lat_max_ms\":%.3f,"
      "\"client_rss_mib\":%.1f,\"daemon_rss_mib\":%.1f,\"client_rss_shared_mib\":%.1f,"
      "\"daemon_rss_shared_mib\":%.1f,\"ncpu\":%ld,"
      "\"system_busy_pct\":%.1f,\"ours_cpu_pct\":%.1f,\"loadavg_start\":%.2f,"
      "\"sink_user_records\":%llu,\"sink_misrouted\":%llu,\"sink_kinesis_records\":%llu,"
      "\"sink_requests\":%llu,\"daemon_starts\":%llu,\"puts_shared\":%llu,"
      "\"lat_worst_first_s_ms\":%.3f,"
      "\"lat_worst_later_ms\":%.3f,\"ok\":%s}\n",
      opt.label, opt.kpl_launch ? "kpl-launch" : "client",
      opt.kpl_launch  ? "window"
      : opt.try_first ? "try-first"
                      : "block",
      opt.daemon ? opt.daemon : "", opt.threads, opt.record_size, (unsigned long long)opt.keys,
      opt.shards, opt.sink_latency_ms, aggregation ? "true" : "false", rmbt,
      get_set("RequestEncoding", "json"),
      !opt.kpl_launch && strcasecmp(get_set("ResultBatches", "true"), "false") ? "true" : "false",
      opt.warmup, opt.rate, opt.duration, wall, accepted, ok, failed, put_errors,
      drained ? "false" : "true", rps, mbps, client_cpu, put_threads_cpu, daemon_cpu, sink_cpu,
      client_cpu * per, daemon_cpu * per, (client_cpu + daemon_cpu) * per,
      sink_cpu > 0 ? sink_cpu * per : 0, client_cpu * per, daemon_cpu * per, p50, p99, p999, pmax,
      client_rss, daemon_rss, client_shm, daemon_shm, ncpu, sys_busy, ours_share, load_start,
      sink_urec, sink1.misrouted, sink1.valid ? sink1.kinesis_records - sink0.kinesis_records : 0,
      sink1.valid ? sink1.requests - sink0.requests : 0, (unsigned long long)ks.daemon_starts,
      (unsigned long long)ks.puts_shared, worst_first, worst_later, rc ? "false" : "true");
  fflush(stdout);
  for (int i = 0; i < opt.n_sets; i++) {
    free(opt.sets[i].key);
    free(opt.sets[i].value);
  }
  return rc;
}
