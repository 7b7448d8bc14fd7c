/* The producer: API calls on the application's threads, one I/O thread that owns the
 * daemon, and (with ResultDelivery=background) one thread that runs result callbacks.
 *
 * Threads talk only through queues under `lock`:
 *   API -> I/O: `sub` (accepted records) and `cmds` (flush, purge, shutdown), plus the
 *               metrics waiters; each hand-off ends with ev_async_send.
 *   I/O -> API: `results` (built on the I/O thread, published once per loop iteration
 *               by an ev_prepare watcher), signalled on `result_cv`; room for blocked
 *               puts on `space_cv`.
 * Everything named io_* or in the "I/O thread only" block of the struct is touched by
 * the I/O thread alone, so it needs no lock.
 *
 * Record life: put copies it into one `rec` block, already encoded as the PutRecord
 * field of a Message, and queues it -> the I/O thread appends the batch to the pending
 * queue (records not sent to this daemon, in put order) and, when the channel has room,
 * writes each behind a fresh Message id straight into the channel's buffer and files
 * it in the in-flight table under that id -> the PutRecordResult (matched by
 * source_id, decoded in place by ipc/fastpath) writes the outcome into the same block
 * -> the result callback runs -> the block is freed and stops counting as outstanding.
 * One malloc and one free per record in the common case.
 *
 * With the shared data file (SharedMemory, on by default) put copies the record's data
 * into the pool (client/shared_pool.h) instead of the block, and the block's area holds
 * a PutRecordRef naming where; the daemon reads the bytes there. The space goes back to
 * the pool once the outcome is known. Until the daemon has answered the offer
 * (SharedDataAck) and whenever it declines, a pooled record is written to the channel
 * as a whole PutRecord instead; a record the pool has no room for is a PutRecord from
 * the start. Replay after a daemon death needs nothing new: the file outlives daemons.
 *
 * The in-flight table is an array indexed by id & mask: ids grow by one per message
 * and results mostly come back in order, so it behaves as a ring; when a slot is
 * still taken by a straggler the sender skips to the next id whose slot is free (ids
 * only need to be unique and increasing), and the table doubles when half full. When
 * the daemon dies the records it had not answered are taken out of the table, sorted
 * by id (= put order: every in-flight record was put before every pending one) and
 * replayed ahead of the pending queue to the next daemon (or failed with
 * KP_ERR__DAEMON_DIED). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "client/client_int.h"
#include "client/shared_pool.h"
#include "format/utf8.h"
#include "common/log.h"
#include "format/hash_key.h"
#include "format/pbwire.h"
#include "ipc/channel.h"
#include "ipc/fastpath.h"
#include "ipc/frame.h"
#include "proto/messages.pb-c.h"

extern char **environ;

/* The fd the daemon finds its socket on (`--fd 3`): the first after stdio. */
#define KPC_CHILD_FD 3
#define KPC_STREAM_MAX 128
/* A daemon that lived this long resets the restart backoff. */
#define KPC_BACKOFF_RESET_S 30.0

/* The encoded PutRecord in a record's area starts with Message.id = 0 ("08 00"),
 * which the sender replaces with the real id. */
#define KPC_ENC_SKIP 2
/* Least room in a record's area, so that a typical result (one attempt, shard id and
 * a 56-digit sequence number) fits without an allocation of its own. */
#define KPC_RES_AREA 128
/* Records with more data than this give the data back (realloc) as soon as their
 * outcome is known, as the byte limit promises; smaller ones keep the block whole. */
#define KPC_SHRINK_MIN 1024
/* Data bytes of records put and not yet written to a running daemon past which a
 * blocking put waits (a non-blocking one is held to the outstanding limits alone).
 * When the daemon is the bottleneck everything up to MaxOutstandingBytes would queue
 * here, tens of MiB that have left the caches by the time they are sent: the sender's
 * copy of a 1-KiB record then cost more than the rest of its handling. While no daemon
 * runs the bound is off, so that puts go on buffering through a restart. */
#define KPC_UNSENT_MAX (4u << 20)
/* The daemon socket's output buffer (the channel's high watermark): small for the same
 * reason; the kernel's socket buffer keeps the daemon fed meanwhile. */
#define KPC_CHANNEL_HWM (1u << 20)
/* The fd the daemon finds the shared data file on (Configuration.shared_data_fd). */
#define KPC_CHILD_DATA_FD 4
/* The shared data file: chunks of 1 MiB (a record of the largest size fits one), enough
 * of them for MaxOutstandingBytes plus the partly used chunks, up to 1 GiB of address
 * space (pages are only allocated as they are first written). */
#define KPC_POOL_CHUNK (1u << 20)
#define KPC_POOL_MAX ((size_t)1 << 30)
/* Records with less data go through the socket: 4-s A/B cells at max rate (client +
 * daemon CPU per record, 3 pairs each) put the break-even near 256 bytes: 100 B
 * 0.55-0.59 us by socket against 0.63-0.70 pooled, 256 B equal, 512 B 1.51-1.71 against
 * 1.33-1.57, 1 KiB 2.45-2.68 against 2.34-2.41, 50 KiB 87-94 against 66-71. */
#define KPC_POOL_MIN 512

/* One record, one allocation: this header, then the stream name and partition key
 * (NUL-terminated, for the result), then at area_off (8-aligned) an area that holds
 * the encoded Message{id 0, put_record} until the outcome is known and then the
 * result's attempts and strings (or `detail`, an own allocation, when they do not
 * fit). */
typedef struct rec {
  struct rec *next; /* submit queue, pending queue or result queue */
  uint64_t id;      /* Message id in the current daemon; 0 = not in flight */
  void *opaque;
  size_t len;        /* data bytes */
  uint32_t enc_len;  /* bytes of the put_record field at area + KPC_ENC_SKIP */
  uint32_t area_len; /* bytes of the area */
  uint16_t stream_len, pk_len, area_off;
  uint8_t unsent;    /* counted in unsent_bytes: put, not yet written to any daemon */
  uint64_t pool_off; /* where the data is in the shared pool; KPC_POOL_NONE: in the area */
  /* the outcome, filled by resolve() */
  int err;
  uint32_t n_att;
  const char *code, *msg, *shard, *seq;
  kp_attempt_t *att;
  void *detail;
  char str[]; /* stream \0 partition key \0 */
} rec;

static inline uint8_t *rec_area(rec *r) {
  return (uint8_t *)r + r->area_off;
}

typedef enum { CMD_FLUSH, CMD_PURGE, CMD_SHUTDOWN } cmd_type;

typedef struct cmd {
  struct cmd *next;
  cmd_type type;
  char stream[]; /* CMD_FLUSH: "" = all */
} cmd;

/* Results are applied in batches of up to this many (see apply_results). */
#define KPC_RES_BATCH 64
/* Bytes of frame copies a batch keeps; a larger frame is applied at once. */
#define KPC_RES_MEM (KPC_RES_BATCH * 256)

typedef struct mwait {
  struct mwait *next;
  const char *name;
  uint64_t seconds;
  uint64_t msg_id; /* 0 = not sent to the current daemon */
  int done;
  kp_err_t err;
  kp_metric_t *metrics;
  size_t n;
} mwait;

/* Records in an array: the submit queue (filled under the lock by put, swapped out
 * whole by the I/O thread). */
typedef struct recvec {
  rec **v;
  size_t n, cap;
} recvec;

/* Records in a FIFO ring: the pending queue. An array rather than a list so that the
 * sender can fetch blocks ahead of use: the queue is long and cold when the daemon is
 * the bottleneck, and a list walk would pay one cache miss after another. */
typedef struct recring {
  rec **v;
  size_t head, n, mask; /* mask: capacity - 1; capacity 0 while v is NULL */
} recring;

/* In-flight records by Message id: v[id & mask] (see the top of the file). */
typedef struct slots {
  rec **v;
  size_t mask; /* capacity - 1; capacity 0 while v is NULL */
  size_t n;
} slots;

enum { ST_OPEN, ST_CLOSING, ST_CLOSED };

struct kp_producer_s {
  kp_conf_t *conf;
  int background;

  pthread_mutex_t lock;
  pthread_cond_t space_cv;  /* room for blocked puts, or closing */
  pthread_cond_t result_cv; /* results queued, outstanding fell, metrics, start-up */
  /* ---- under lock ---- */
  int state;
  size_t outstanding, outstanding_bytes;
  size_t unsent_bytes; /* data of records put and never written to a daemon */
  int daemon_up;       /* a daemon is configured and reading: KPC_UNSENT_MAX applies */
  recvec sub;          /* accepted records for the I/O thread, in put order */
  int io_nowake;       /* the I/O thread will look at `sub` without ev_async_send */
  cmd *cmd_head, *cmd_tail;
  rec *res_head, *res_tail; /* records with their outcome, for the callback */
  mwait *mwaits;
  kp_stats_t stats;
  int io_started, io_done, bg_stop;
  kpc_pool *pool; /* the shared data file; NULL: SharedMemory off or unavailable */
  kp_err_t start_err;
  char start_errstr[512];

  _Atomic pid_t daemon_pid; /* diagnostics; read without the lock */

  pthread_t io_thread, bg_thread;
  int io_running, bg_running;

  /* ---- I/O thread only ---- */
  struct ev_loop *loop;
  ev_async wake;
  ev_prepare publish_w;
  ev_timer restart_t, creds_t, kill_t;
  ev_io pid_w;
  int pidfd;
  pid_t pid; /* current daemon, 0 = none */
  int reaped;
  kp_channel *ch;
  int ready;     /* configured and accepting records */
  int shm_acked; /* this daemon reads the shared data file: PutRecordRefs may go */
  int shutting_down;
  ev_tstamp started_at;
  unsigned backoff_n;
  recvec sub_spare; /* swapped with `sub` (under the lock) by wake_cb */
  recring pend;     /* not sent to this daemon, in put order */
  slots inflight;   /* sent to this daemon, awaiting the result */
  uint64_t next_id;
  size_t io_unsent_done;               /* unsent bytes written or resolved, not yet settled */
  rec *ready_head, *ready_tail;        /* outcome known, not yet published */
  size_t res_n, res_used;              /* results read, not yet applied, and their bytes */
  kp_fast_result res_q[KPC_RES_BATCH]; /* views into res_mem */
  uint8_t res_mem[KPC_RES_MEM];
  size_t ready_bytes;
  kpc_creds_sources srcs;
  kpc_creds creds;
  int creds_warned;
  char **envp; /* the environment minus AWS secrets: they go over the pipe only */
};

/* ------------------------------------------------------------------------ */
/* logging                                                                  */

static void plog(kp_producer_t *p, kp_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void plog(kp_producer_t *p, kp_log_level_t level, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (p->conf->log_cb)
    p->conf->log_cb(level, msg, p->conf->opaque);
  else if (KP_LOG_ENABLED(level))
    kp_log_write((kp_log_level)level, "client: %s", msg);
}

/* ------------------------------------------------------------------------ */
/* time                                                                     */

static struct timespec deadline_after(int timeout_ms) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  t.tv_sec += timeout_ms / 1000;
  t.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (t.tv_nsec >= 1000000000L) {
    t.tv_sec++;
    t.tv_nsec -= 1000000000L;
  }
  return t;
}

/* Waits on cv until signalled or the deadline (NULL = none). 0, or ETIMEDOUT. */
static int cv_wait(pthread_cond_t *cv, pthread_mutex_t *m, const struct timespec *deadline) {
  if (!deadline) {
    pthread_cond_wait(cv, m);
    return 0;
  }
  return pthread_cond_timedwait(cv, m, deadline);
}

/* ------------------------------------------------------------------------ */
/* in-flight table                                                          */

static int slots_grow(slots *s) {
  size_t cap = s->v ? (s->mask + 1) * 2 : 1024;
  rec **v = calloc(cap, sizeof *v);
  if (!v)
    return -1;
  /* Ids distinct modulo the old capacity stay distinct modulo the new one. */
  for (size_t i = 0; s->v && i <= s->mask; i++)
    if (s->v[i])
      v[s->v[i]->id & (cap - 1)] = s->v[i];
  free(s->v);
  s->v = v;
  s->mask = cap - 1;
  return 0;
}

/* Makes sure one more record fits with the table at most half full. 0 or -1. */
static int slots_room(slots *s) {
  if (s->v && (s->n + 1) * 2 <= s->mask + 1)
    return 0;
  return slots_grow(s);
}

static rec *slots_take(slots *s, uint64_t id) {
  if (!s->v || !id)
    return NULL;
  rec **slot = &s->v[id & s->mask];
  rec *r = *slot;
  if (!r || r->id != id)
    return NULL; /* a record purged or replayed since: its late result is dropped */
  *slot = NULL;
  s->n--;
  r->id = 0;
  return r;
}

static int by_id(const void *a, const void *b) {
  uint64_t x = (*(rec *const *)a)->id, y = (*(rec *const *)b)->id;
  return x < y ? -1 : x > y;
}

/* Gathers the table's records into v[0..k) in id (= put) order and returns k; the
 * caller uses them, then calls slots_clear. No allocation: sorts inside the table. */
static size_t slots_sort(slots *s) {
  size_t k = 0;
  for (size_t i = 0; s->v && i <= s->mask; i++)
    if (s->v[i])
      s->v[k++] = s->v[i];
  if (k > 1)
    qsort(s->v, k, sizeof *s->v, by_id);
  return k;
}

static void slots_clear(slots *s) {
  if (s->v)
    memset(s->v, 0, (s->mask + 1) * sizeof *s->v);
  s->n = 0;
}

/* ------------------------------------------------------------------------ */
/* record queues                                                            */

static int vec_push(recvec *a, rec *r) {
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 256;
    rec **v = realloc(a->v, cap * sizeof *v);
    if (!v)
      return -1;
    a->v = v;
    a->cap = cap;
  }
  a->v[a->n++] = r;
  return 0;
}

/* Makes room for `extra` more records. 0 or -1. */
static int ring_reserve(recring *q, size_t extra) {
  size_t cap = q->v ? q->mask + 1 : 0;
  if (q->n + extra <= cap)
    return 0;
  size_t ncap = cap ? cap : 1024;
  while (ncap < q->n + extra)
    ncap *= 2;
  rec **v = malloc(ncap * sizeof *v);
  if (!v)
    return -1;
  for (size_t i = 0; i < q->n; i++)
    v[i] = q->v[(q->head + i) & q->mask];
  free(q->v);
  q->v = v;
  q->head = 0;
  q->mask = ncap - 1;
  return 0;
}

static rec *ring_at(const recring *q, size_t i) {
  return q->v[(q->head + i) & q->mask];
}

/* Appends src[0..k) (room reserved). */
static void ring_push(recring *q, rec *const *src, size_t k) {
  for (size_t i = 0; i < k; i++)
    q->v[(q->head + q->n + i) & q->mask] = src[i];
  q->n += k;
}

/* Puts src[0..k) in front, in that order (room reserved). */
static void ring_push_front(recring *q, rec *const *src, size_t k) {
  q->head = (q->head - k) & q->mask;
  for (size_t i = 0; i < k; i++)
    q->v[(q->head + i) & q->mask] = src[i];
  q->n += k;
}

static rec *ring_pop(recring *q) {
  rec *r = q->v[q->head];
  q->head = (q->head + 1) & q->mask;
  q->n--;
  return r;
}

static void prefetch_rec(const void *r) {
  const char *x = r;
  __builtin_prefetch(x);
  __builtin_prefetch(x + 64);
  __builtin_prefetch(x + 128);
  __builtin_prefetch(x + 192);
}

/* ------------------------------------------------------------------------ */
/* records and results                                                      */

/* The outcome is known (or the record is dropped): the daemon reads its data no more. */
static void rec_release_data(kp_producer_t *p, rec *r) {
  if (r->pool_off != KPC_POOL_NONE) {
    kpc_pool_free(p->pool, r->pool_off);
    r->pool_off = KPC_POOL_NONE;
  }
}

static void rec_free(kp_producer_t *p, rec *r) {
  if (r) {
    rec_release_data(p, r);
    free(r->detail);
    free(r);
  }
}

static kp_err_t map_error_code(const char *code) {
  if (!code || !*code)
    return KP_ERR_REMOTE;
  if (!strcmp(code, "Expired"))
    return KP_ERR__EXPIRED;
  if (!strcmp(code, "ProvisionedThroughputExceededException") ||
      !strcmp(code, "LimitExceededException"))
    return KP_ERR_THROTTLED;
  if (!strcmp(code, "InternalFailure") || !strcmp(code, "InternalError") ||
      !strcmp(code, "ServiceUnavailableException") || !strcmp(code, "ServiceUnavailable"))
    return KP_ERR_INTERNAL_FAILURE;
  if (!strncmp(code, "KMS", 3))
    return KP_ERR_KMS;
  if (!strcmp(code, "ResourceNotFoundException"))
    return KP_ERR_RESOURCE_NOT_FOUND;
  if (!strcmp(code, "AccessDeniedException") || !strcmp(code, "UnrecognizedClientException") ||
      !strcmp(code, "InvalidSignatureException") || !strcmp(code, "ExpiredTokenException") ||
      !strcmp(code, "IncompleteSignature") || !strcmp(code, "MissingAuthenticationToken"))
    return KP_ERR_ACCESS_DENIED;
  if (!strcmp(code, "InvalidArgument") || !strcmp(code, "InvalidArgumentException") ||
      !strcmp(code, "ValidationException"))
    return KP_ERR_INVALID_REQUEST;
  if (!strcmp(code, "ConnectionError") || !strcmp(code, "Timeout"))
    return KP_ERR_CONNECTION;
  return KP_ERR_REMOTE;
}

/* A daemon result, as views into its frame (or into protobuf-c's copy). */
typedef struct res_in {
  int success;
  kp_fast_str shard, seq;
  size_t n_att;
  const kp_fast_attempt *att;
} res_in;

static size_t view_size(kp_fast_str s) {
  return s.p ? s.len + 1 : 0;
}

/* Copies s, NUL-terminated, to *pos; returns the copy (NULL when absent). */
static const char *put_view(char **pos, kp_fast_str s) {
  if (!s.p)
    return NULL;
  char *d = *pos;
  if (s.len)
    memcpy(d, s.p, s.len);
  d[s.len] = 0;
  *pos += s.len + 1;
  return d;
}

/* I/O thread: the record (out of every queue and of the in-flight table) has its
 * outcome: a daemon result `in`, or a local failure err/code/msg (static strings).
 * Writes it into the record's block and queues the record for publishing. */
static void resolve(kp_producer_t *p, rec *r, kp_err_t err, const char *code, const char *msg,
                    const res_in *in) {
  size_t need = 0;
  if (in) {
    need = in->n_att * sizeof(kp_attempt_t) + view_size(in->shard) + view_size(in->seq);
    for (size_t i = 0; i < in->n_att; i++)
      need += view_size(in->att[i].error_code) + view_size(in->att[i].error_message);
  }
  p->ready_bytes += r->len;
  rec_release_data(p, r);
  if (r->unsent) { /* failed before it was ever sent */
    r->unsent = 0;
    p->io_unsent_done += r->len;
  }
  if (r->len > KPC_SHRINK_MIN && need < r->area_len) {
    /* the byte limit counts data until the outcome is known: give it back */
    rec *s = realloc(r, (size_t)r->area_off + (need ? need : 8));
    if (s) {
      r = s;
      r->area_len = (uint32_t)need;
    }
  }
  uint8_t *area = rec_area(r);
  if (need > r->area_len) {
    area = r->detail = malloc(need);
    if (!area) {
      err = KP_ERR__NOMEM;
      code = "_NOMEM";
      msg = "out of memory while building the result";
      in = NULL;
    }
  }
  r->err = err;
  r->code = code;
  r->msg = msg;
  r->shard = r->seq = NULL;
  r->att = NULL;
  r->n_att = 0;
  if (in) {
    kp_attempt_t *att = (kp_attempt_t *)(void *)area;
    char *pos = (char *)(att + in->n_att);
    for (size_t i = 0; i < in->n_att; i++) {
      const kp_fast_attempt *a = &in->att[i];
      att[i].delay_ms = a->delay_ms;
      att[i].duration_ms = a->duration_ms;
      att[i].success = a->success;
      att[i].error_code = put_view(&pos, a->error_code);
      att[i].error_message = put_view(&pos, a->error_message);
    }
    r->shard = put_view(&pos, in->shard);
    r->seq = put_view(&pos, in->seq);
    r->n_att = (uint32_t)in->n_att;
    r->att = in->n_att ? att : NULL;
    if (!in->success) {
      const kp_attempt_t *last = in->n_att ? &att[in->n_att - 1] : NULL;
      r->code = last && last->error_code ? last->error_code : "UnknownError";
      r->msg = last && last->error_message ? last->error_message : "the daemon gave no reason";
      r->err = map_error_code(r->code);
    }
  }
  r->next = NULL;
  if (p->ready_tail)
    p->ready_tail->next = r;
  else
    p->ready_head = r;
  p->ready_tail = r;
}

static void fail_rec(kp_producer_t *p, rec *r, kp_err_t err, const char *msg) {
  resolve(p, r, err, kp_err2name(err), msg, NULL);
}

/* I/O thread, under lock: takes what left the unsent count since the last call off it,
 * and lets puts waiting on KPC_UNSENT_MAX look again. */
static void settle_unsent(kp_producer_t *p) {
  if (!p->io_unsent_done)
    return;
  p->unsent_bytes -= p->io_unsent_done;
  p->io_unsent_done = 0;
  if (p->unsent_bytes <= KPC_UNSENT_MAX)
    pthread_cond_broadcast(&p->space_cv); /* no system call unless a put waits */
}

/* I/O thread: hands the results built this iteration to the API side, one lock. */
static void apply_results(kp_producer_t *p);

static void publish(kp_producer_t *p) {
  apply_results(p);
  if (!p->ready_head)
    return;
  pthread_mutex_lock(&p->lock);
  if (p->res_tail)
    p->res_tail->next = p->ready_head;
  else
    p->res_head = p->ready_head;
  p->res_tail = p->ready_tail;
  p->outstanding_bytes -= p->ready_bytes;
  settle_unsent(p);
  pthread_cond_broadcast(&p->result_cv);
  pthread_cond_broadcast(&p->space_cv);
  pthread_mutex_unlock(&p->lock);
  p->ready_head = p->ready_tail = NULL;
  p->ready_bytes = 0;
}

static void publish_cb(struct ev_loop *loop, ev_prepare *w, int revents) {
  publish(w->data);
}

/* Any thread, without the lock: runs the callbacks, then accounts for them. */
static int serve(kp_producer_t *p, rec *batch) {
  uint64_t ok = 0, failed = 0;
  size_t n = 0;
  kp_result_cb_t *cb = p->conf->result_cb;
  while (batch) {
    rec *r = batch;
    batch = r->next;
    if (batch)
      __builtin_prefetch(batch);
    if (cb) {
      kp_result_t out;
      out.err = (kp_err_t)r->err;
      out.error_code = r->code;
      out.error_message = r->msg;
      out.stream = r->str;
      out.partition_key = r->str + r->stream_len + 1;
      out.shard_id = r->shard;
      out.sequence_number = r->seq;
      out.len = r->len;
      out.attempt_cnt = r->n_att;
      out.attempts = r->att;
      out.opaque = r->opaque;
      cb(p, &out, p->conf->opaque);
    }
    if (r->err == KP_ERR_NO_ERROR)
      ok++;
    else
      failed++;
    rec_free(p, r);
    n++;
  }
  if (n) {
    pthread_mutex_lock(&p->lock);
    p->outstanding -= n;
    p->stats.results_ok += ok;
    p->stats.results_failed += failed;
    pthread_cond_broadcast(&p->result_cv);
    pthread_cond_broadcast(&p->space_cv);
    pthread_mutex_unlock(&p->lock);
  }
  return (int)n;
}

/* Under lock: detaches every queued result. */
static rec *take_results(kp_producer_t *p) {
  rec *b = p->res_head;
  p->res_head = p->res_tail = NULL;
  return b;
}

/* ------------------------------------------------------------------------ */
/* I/O thread: talking to the daemon                                         */

static void send_msg(kp_producer_t *p, Kpl__Message *m) {
  m->id = ++p->next_id;
  int rc = kp_channel_send_pb(p->ch, &m->base);
  if (rc != 0)
    plog(p, KP_LOG_ERROR, "cannot send message type %d to the daemon: %s",
         (int)m->actual_message_case, kp_channel_strerror(rc));
}

static void send_creds(kp_producer_t *p) {
  if (!p->ch)
    return;
  for (int metrics = 0; metrics < 2; metrics++) {
    Kpl__Message m = KPL__MESSAGE__INIT;
    Kpl__SetCredentials sc = KPL__SET_CREDENTIALS__INIT;
    Kpl__Credentials c = KPL__CREDENTIALS__INIT;
    c.akid = p->creds.akid;
    c.secret_key = p->creds.secret;
    c.token = p->creds.token[0] ? p->creds.token : NULL;
    sc.has_for_metrics = 1;
    sc.for_metrics = metrics;
    sc.credentials = &c;
    m.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_SET_CREDENTIALS;
    m.set_credentials = &sc;
    send_msg(p, &m);
  }
  pthread_mutex_lock(&p->lock);
  p->stats.credentials_sent += 2;
  pthread_mutex_unlock(&p->lock);
}

static void send_flush(kp_producer_t *p, const char *stream) {
  if (!p->ready)
    return; /* records are replayed with a flush after the restart */
  Kpl__Message m = KPL__MESSAGE__INIT;
  Kpl__Flush f = KPL__FLUSH__INIT;
  f.stream_name = stream && *stream ? (char *)stream : NULL;
  m.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_FLUSH;
  m.flush = &f;
  send_msg(p, &m);
}

/* Records fetched ahead by the sender. */
#define KPC_AHEAD 16

/* A pooled record to a daemon that does not read the shared data file (yet): the
 * PutRecordRef in its area, turned into a PutRecord with the data from the pool. */
static int send_whole(kp_producer_t *p, rec *r, uint64_t id) {
  kp_fast_put_record fr;
  if (kp_fast_decode_put_record(rec_area(r), KPC_ENC_SKIP + r->enc_len, &fr) != KP_FAST_OK)
    abort(); /* we encoded it: a bug, not a runtime condition */
  fr.id = id;
  fr.by_ref = false;
  fr.data.p = (const char *)kpc_pool_at(p->pool, r->pool_off);
  int rc = 0;
  size_t n = kp_fast_put_record_size(&fr);
  uint8_t *w = kp_channel_reserve(p->ch, n, &rc);
  if (w) {
    kp_fast_write_put_record(w, &fr);
    rc = kp_channel_commit(p->ch, n);
  }
  return rc;
}

/* Sends pending records while the channel takes them: Message{id, put_record} is
 * the record's pre-encoded put_record field behind a fresh id, written in place. */
static void send_ring(kp_producer_t *p) {
  slots *s = &p->inflight;
  recring *q = &p->pend;
  if (!p->ready || !p->ch)
    return;
  /* The queue is cold by now: fetch blocks KPC_AHEAD records ahead of use. */
  for (size_t i = 0; i < KPC_AHEAD && i < q->n; i++)
    prefetch_rec(ring_at(q, i));
  while (q->n && p->ready && !kp_channel_congested(p->ch)) {
    if (q->n > KPC_AHEAD)
      prefetch_rec(ring_at(q, KPC_AHEAD));
    rec *r = ring_at(q, 0);
    if (slots_room(s) != 0) {
      fail_rec(p, ring_pop(q), KP_ERR__NOMEM, "out of memory tracking the record");
      continue;
    }
    uint64_t id;
    do
      id = ++p->next_id;
    while (s->v[id & s->mask]); /* a straggler holds that slot: skip its id */
    int rc = 0;
    if (r->pool_off != KPC_POOL_NONE && !p->shm_acked) {
      rc = send_whole(p, r, id);
    } else {
      uint8_t *w = kp_channel_reserve(p->ch, 1 + 10 + (size_t)r->enc_len, &rc);
      if (w) {
        w[0] = (uint8_t)pb_tag(1, PB_WT_VARINT); /* Message.id */
        size_t n = 1 + pb_put_varint(w + 1, id);
        memcpy(w + n, rec_area(r) + KPC_ENC_SKIP, r->enc_len);
        rc = kp_channel_commit(p->ch, n + r->enc_len);
      }
    }
    if (rc == KP_FRAME_E_TOO_LARGE) {
      fail_rec(p, ring_pop(q), KP_ERR__MSG_SIZE_TOO_LARGE, "the record exceeds the frame limit");
      continue;
    }
    if (rc != 0) {
      /* The channel is closing: the record stays unsent and is replayed. */
      plog(p, KP_LOG_WARNING, "cannot send a record to the daemon: %s", kp_channel_strerror(rc));
      return;
    }
    ring_pop(q);
    r->id = id;
    s->v[id & s->mask] = r;
    s->n++;
    if (r->unsent) {
      r->unsent = 0;
      p->io_unsent_done += r->len;
    }
  }
}

/* I/O thread: appends records taken from `sub` to the pending ring. */
static void queue_sub(kp_producer_t *p, recvec sub) {
  if (sub.n) {
    if (ring_reserve(&p->pend, sub.n) == 0) {
      ring_push(&p->pend, sub.v, sub.n);
    } else {
      for (size_t i = 0; i < sub.n; i++)
        fail_rec(p, sub.v[i], KP_ERR__NOMEM, "out of memory queueing the record");
    }
  }
  sub.n = 0;
  p->sub_spare = sub;
}

/* Sends what is pending, then what was put meanwhile. While the channel is congested
 * (on_drain will call again) or the daemon is down (the restart will), puts need not
 * wake this thread: io_nowake tells them so, which saves an eventfd write and a loop
 * wake-up per batch of puts when the daemon is the bottleneck. */
static void send_pending(kp_producer_t *p) {
  for (int round = 0; round < 64; round++) {
    send_ring(p);
    int later = !p->ready || !p->ch || kp_channel_congested(p->ch);
    recvec sub = {0};
    pthread_mutex_lock(&p->lock);
    settle_unsent(p);
    int take = !later && p->sub.n;
    if (take) {
      sub = p->sub;
      p->sub = p->sub_spare;
    }
    p->io_nowake = later;
    pthread_mutex_unlock(&p->lock);
    if (!take)
      return;
    queue_sub(p, sub);
  }
  ev_async_send(p->loop, &p->wake); /* bounded here; wake_cb carries on */
}

/* Under lock: sends the metrics requests the current daemon has not seen. */
static void send_metrics_requests(kp_producer_t *p) {
  if (!p->ready)
    return;
  for (mwait *w = p->mwaits; w; w = w->next) {
    if (w->msg_id || w->done)
      continue;
    Kpl__Message m = KPL__MESSAGE__INIT;
    Kpl__MetricsRequest mr = KPL__METRICS_REQUEST__INIT;
    mr.name = (char *)w->name;
    if (w->seconds) {
      mr.has_seconds = 1;
      mr.seconds = w->seconds;
    }
    m.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_METRICS_REQUEST;
    m.metrics_request = &mr;
    send_msg(p, &m);
    w->msg_id = m.id;
  }
}

static char *dupstr(const char *s) {
  return strdup(s ? s : "");
}

/* Under lock: copies a MetricsResponse into the waiter. */
static void fill_metrics(mwait *w, const Kpl__MetricsResponse *mr) {
  w->done = 1;
  w->err = KP_ERR_NO_ERROR;
  if (!mr || !mr->n_metrics)
    return;
  w->metrics = calloc(mr->n_metrics, sizeof *w->metrics);
  if (!w->metrics) {
    w->err = KP_ERR__NOMEM;
    return;
  }
  w->n = mr->n_metrics;
  for (size_t i = 0; i < mr->n_metrics; i++) {
    const Kpl__Metric *src = mr->metrics[i];
    kp_metric_t *d = &w->metrics[i];
    d->name = dupstr(src->name);
    d->seconds = src->seconds;
    if (src->stats) {
      d->count = src->stats->count;
      d->sum = src->stats->sum;
      d->mean = src->stats->mean;
      d->min = src->stats->min;
      d->max = src->stats->max;
    }
    d->dimension_keys = calloc(src->n_dimensions + 1, sizeof(char *));
    d->dimension_values = calloc(src->n_dimensions + 1, sizeof(char *));
    if (!d->name || !d->dimension_keys || !d->dimension_values) {
      w->err = KP_ERR__NOMEM;
      continue;
    }
    for (size_t k = 0; k < src->n_dimensions; k++) {
      d->dimension_keys[k] = dupstr(src->dimensions[k]->key);
      d->dimension_values[k] = dupstr(src->dimensions[k]->value);
      d->dimension_cnt = k + 1;
    }
  }
}

/* Attempts decoded on the stack up to this many; more take an allocation. */
#define KPC_ATT_STACK 8

/* A PutRecordResult in the canonical shape, decoded in place. */
static void on_result_fast(kp_producer_t *p, const kp_fast_result *fr) {
  rec *r = slots_take(&p->inflight, fr->source_id);
  if (!r)
    return; /* a record already purged; its late result is dropped */
  kp_fast_attempt stack[KPC_ATT_STACK];
  kp_fast_attempt *att = stack;
  if (fr->n_attempts > KPC_ATT_STACK && !(att = malloc(fr->n_attempts * sizeof *att))) {
    fail_rec(p, r, KP_ERR__NOMEM, "out of memory while building the result");
    return;
  }
  for (size_t i = 0; i < fr->n_attempts; i++)
    if (kp_fast_result_attempt(fr, i, &att[i]) != KP_FAST_OK)
      memset(&att[i], 0, sizeof att[i]); /* cannot happen: the decoder checked them */
  res_in in = {fr->success, fr->shard_id, fr->sequence_number, fr->n_attempts, att};
  resolve(p, r, KP_ERR_NO_ERROR, NULL, NULL, &in);
  if (att != stack)
    free(att);
}

static kp_fast_str view_of(const char *s) {
  return (kp_fast_str){s, s ? strlen(s) : 0};
}

/* The same from protobuf-c's unpacked form (any other valid shape). */
static void on_result_pb(kp_producer_t *p, uint64_t source_id, const Kpl__PutRecordResult *pr) {
  rec *r = slots_take(&p->inflight, source_id);
  if (!r)
    return;
  kp_fast_attempt stack[KPC_ATT_STACK];
  kp_fast_attempt *att = stack;
  if (pr->n_attempts > KPC_ATT_STACK && !(att = malloc(pr->n_attempts * sizeof *att))) {
    fail_rec(p, r, KP_ERR__NOMEM, "out of memory while building the result");
    return;
  }
  for (size_t i = 0; i < pr->n_attempts; i++) {
    const Kpl__Attempt *a = pr->attempts[i];
    att[i].delay_ms = a->delay;
    att[i].duration_ms = a->duration;
    att[i].success = a->success;
    att[i].error_code = view_of(a->error_code);
    att[i].error_message = view_of(a->error_message);
  }
  res_in in = {pr->success, view_of(pr->shard_id), view_of(pr->sequence_number), pr->n_attempts,
               att};
  resolve(p, r, KP_ERR_NO_ERROR, NULL, NULL, &in);
  if (att != stack)
    free(att);
}

/* Every record of a batch succeeded at its one attempt, on one shard with one sequence
 * number; only the attempt's delay differs. Slots and blocks are cold, as in
 * apply_results: fetched ahead. */
/* Resolves n records of one result batch: all landed on `shard` in one Kinesis record at
 * their first attempt, which took duration_ms after each one's own delay. */
static void resolve_batch(kp_producer_t *p, kp_fast_str shard, kp_fast_str seq,
                          uint32_t duration_ms, const uint64_t *ids, const uint32_t *delays,
                          size_t n) {
  const slots *s = &p->inflight;
  for (size_t i = 0; i < n; i++) {
    if (s->v && i + 8 < n) {
      const char *ahead = (const char *)s->v[ids[i + 8] & s->mask];
      if (ahead)
        __builtin_prefetch(ahead, 1);
    }
    rec *r = slots_take(&p->inflight, ids[i]);
    if (!r)
      continue; /* purged meanwhile */
    kp_fast_attempt att = {.delay_ms = delays[i], .duration_ms = duration_ms, .success = true};
    res_in in = {true, shard, seq, 1, &att};
    resolve(p, r, KP_ERR_NO_ERROR, NULL, NULL, &in);
  }
}

static void on_result_batch(kp_producer_t *p, const Kpl__PutRecordResultBatch *b) {
  if (b->n_delays != b->n_source_ids) {
    plog(p, KP_LOG_ERROR, "dropping a result batch with %zu ids and %zu delays", b->n_source_ids,
         b->n_delays);
    return;
  }
  resolve_batch(p, view_of(b->shard_id), view_of(b->sequence_number), b->duration, b->source_ids,
                b->delays, b->n_source_ids);
}

/* The same from the wire bytes, a chunk of ids at a time. */
static void on_result_batch_fast(kp_producer_t *p, kp_fast_result_batch *b) {
  uint64_t ids[256];
  uint32_t delays[256];
  size_t n;
  do {
    for (n = 0; n < 256 && kp_fast_batch_next(b, &ids[n], &delays[n]); n++)
      ;
    resolve_batch(p, b->shard_id, b->sequence_number, b->duration_ms, ids, delays, n);
  } while (n == 256);
}

/* I/O thread: applies the results read so far. By now the in-flight slots and the
 * record blocks they point to are cold (the record went round the daemon and Kinesis);
 * fetching them for a whole batch first lets the misses overlap instead of queueing. */
static void apply_results(kp_producer_t *p) {
  size_t n = p->res_n;
  if (!n)
    return;
  const slots *s = &p->inflight;
  if (s->v) {
    for (size_t i = 0; i < n; i++)
      __builtin_prefetch(&s->v[p->res_q[i].source_id & s->mask]);
    for (size_t i = 0; i < n; i++) {
      const char *r = (const char *)s->v[p->res_q[i].source_id & s->mask];
      if (r) {
        __builtin_prefetch(r, 1);
        __builtin_prefetch(r + 64, 1);
        __builtin_prefetch(r + 128, 1);
        __builtin_prefetch(r + 192, 1);
      }
    }
  }
  for (size_t i = 0; i < n; i++)
    on_result_fast(p, &p->res_q[i]);
  p->res_n = 0;
  p->res_used = 0;
}

static void on_frame(kp_channel *ch, const uint8_t *payload, size_t len, void *ud) {
  kp_producer_t *p = ud;
  if (len <= KPC_RES_MEM) {
    /* The payload is only lent for this call: keep a copy, decoded in place. */
    if (p->res_n == KPC_RES_BATCH || KPC_RES_MEM - p->res_used < len)
      apply_results(p);
    uint8_t *copy = p->res_mem + p->res_used;
    memcpy(copy, payload, len);
    if (kp_fast_decode_result(copy, len, &p->res_q[p->res_n]) == KP_FAST_OK) {
      p->res_n++;
      p->res_used += len;
      return;
    }
  }
  apply_results(p); /* anything else goes in order after what was read before it */
  kp_fast_result_batch fb;
  if (kp_fast_decode_result_batch(payload, len, &fb) == KP_FAST_OK) {
    on_result_batch_fast(p, &fb);
    return;
  }
  Kpl__Message *m = kpl__message__unpack(NULL, len, payload);
  if (!m) {
    plog(p, KP_LOG_ERROR, "dropping a malformed %zu-byte message from the daemon", len);
    return;
  }
  if (m->actual_message_case == KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD_RESULT &&
      m->has_source_id) {
    on_result_pb(p, m->source_id, m->put_record_result);
  } else if (m->actual_message_case == KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD_RESULT_BATCH) {
    on_result_batch(p, m->put_record_result_batch);
  } else if (m->actual_message_case == KPL__MESSAGE__ACTUAL_MESSAGE_SHARED_DATA_ACK) {
    const Kpl__SharedDataAck *a = m->shared_data_ack;
    p->shm_acked = p->pool && a->mapped;
    if (p->pool && !a->mapped)
      plog(p, KP_LOG_WARNING,
           "the daemon does not use the shared data file (%s): records go "
           "through its socket",
           a->error ? a->error : "no reason given");
  } else if (m->actual_message_case == KPL__MESSAGE__ACTUAL_MESSAGE_METRICS_RESPONSE &&
             m->has_source_id) {
    pthread_mutex_lock(&p->lock);
    for (mwait *w = p->mwaits; w; w = w->next)
      if (w->msg_id == m->source_id && !w->done) {
        fill_metrics(w, m->metrics_response);
        pthread_cond_broadcast(&p->result_cv);
      }
    pthread_mutex_unlock(&p->lock);
  }
  kpl__message__free_unpacked(m, NULL);
}

static void on_drain(kp_channel *ch, void *ud) {
  send_pending(ud);
}

static void daemon_gone(kp_producer_t *p);

static void on_ch_close(kp_channel *ch, int err, void *ud) {
  kp_producer_t *p = ud;
  kp_channel_free(ch);
  p->ch = NULL;
  p->ready = 0;
  p->shm_acked = 0;
  if (!p->shutting_down)
    plog(p, KP_LOG_WARNING, "connection to the daemon (pid %d) ended: %s", (int)p->pid,
         err ? kp_channel_strerror(err) : "end of file");
  if (!p->reaped && p->pid > 0) {
    if (!p->shutting_down)
      kill(p->pid, SIGKILL); /* a daemon without its pipe is of no use: make it exit */
    if (p->pidfd < 0) {
      /* No pidfd (kernel < 5.3): reap here; the daemon is exiting (EOF or SIGKILL). */
      int st;
      while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR)
        ;
      p->reaped = 1;
    }
  }
  if (p->reaped)
    daemon_gone(p);
}

static void on_pidfd(struct ev_loop *loop, ev_io *w, int revents) {
  kp_producer_t *p = w->data;
  int st = 0;
  pid_t r = waitpid(p->pid, &st, WNOHANG);
  if (r == 0)
    return;
  ev_io_stop(loop, w);
  close(p->pidfd);
  p->pidfd = -1;
  p->reaped = 1;
  atomic_store(&p->daemon_pid, 0);
  if (r > 0) {
    if (WIFEXITED(st))
      plog(p, p->shutting_down && WEXITSTATUS(st) == 0 ? KP_LOG_INFO : KP_LOG_WARNING,
           "daemon pid %d exited with status %d", (int)p->pid, WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
      plog(p, KP_LOG_WARNING, "daemon pid %d killed by signal %d", (int)p->pid, WTERMSIG(st));
  }
  if (!p->ch)
    daemon_gone(p);
  /* else the channel reads what the daemon wrote before exiting, then sees EOF */
}

static uint64_t backoff_ms(kp_producer_t *p) {
  const kpc_settings *s = &p->conf->cl;
  uint64_t d = s->daemon_restart_backoff_min;
  for (unsigned i = 0; i < p->backoff_n && d < s->daemon_restart_backoff_max; i++)
    d *= 2;
  if (d > s->daemon_restart_backoff_max)
    d = s->daemon_restart_backoff_max;
  if (p->backoff_n < 64)
    p->backoff_n++;
  return d;
}

/* Both the channel and the process are gone. */
static void daemon_gone(kp_producer_t *p) {
  apply_results(p); /* what the daemon answered before it died */
  pid_t pid = p->pid;
  p->pid = 0;
  atomic_store(&p->daemon_pid, 0);
  if (p->shutting_down) {
    ev_break(p->loop, EVBREAK_ALL);
    return;
  }
  int fail = p->conf->cl.daemon_death_policy == KPC_DEATH_FAIL;
  slots *s = &p->inflight;
  size_t n = slots_sort(s); /* s->v[0..n): in put order */
  for (size_t i = 0; i < n; i++)
    s->v[i]->id = 0;
  if (!fail && ring_reserve(&p->pend, n) == 0) {
    /* every record the dead daemon had precedes those it never got */
    ring_push_front(&p->pend, s->v, n);
  } else {
    for (size_t i = 0; i < n; i++)
      fail_rec(p, s->v[i], fail ? KP_ERR__DAEMON_DIED : KP_ERR__NOMEM,
               fail ? "the daemon died before acknowledging the record"
                    : "out of memory queueing the record for replay");
  }
  slots_clear(s);
  publish(p);
  pthread_mutex_lock(&p->lock);
  p->daemon_up = 0;
  pthread_cond_broadcast(&p->space_cv); /* puts waiting on KPC_UNSENT_MAX: buffer on */
  p->stats.daemon_deaths++;
  if (!fail)
    p->stats.records_replayed += (uint64_t)n;
  for (mwait *w = p->mwaits; w; w = w->next)
    w->msg_id = 0; /* ask the next daemon */
  pthread_mutex_unlock(&p->lock);
  if (ev_now(p->loop) - p->started_at > KPC_BACKOFF_RESET_S)
    p->backoff_n = 0;
  uint64_t delay = backoff_ms(p);
  plog(p, KP_LOG_WARNING,
       "daemon pid %d is gone; %s %" PRIu64 " unacknowledged records; restart in %" PRIu64 " ms",
       (int)pid, fail ? "failed" : "will replay", (uint64_t)n, delay);
  ev_timer_set(&p->restart_t, (double)delay / 1000.0, 0.);
  ev_timer_start(p->loop, &p->restart_t);
}

/* Starts a daemon and sends it Configuration and credentials. */
static kp_err_t spawn_daemon(kp_producer_t *p, char *errstr, size_t errstr_size) {
  const char *path = kpc_daemon_path(p->conf);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    snprintf(errstr, errstr_size, "socketpair: %s", strerror(errno));
    return KP_ERR__SPAWN;
  }
  if (sv[1] == KPC_CHILD_FD) {
    /* dup2 onto itself would keep FD_CLOEXEC set: move it out of the way first. */
    int fd = fcntl(sv[1], F_DUPFD_CLOEXEC, KPC_CHILD_FD + 1);
    close(sv[1]);
    sv[1] = fd;
    if (fd < 0) {
      close(sv[0]);
      snprintf(errstr, errstr_size, "fcntl: %s", strerror(errno));
      return KP_ERR__SPAWN;
    }
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_adddup2(&fa, sv[1], KPC_CHILD_FD);
  /* The pool's fd is above both child fds (KPC_POOL_FD_MIN), so neither dup2 undoes
   * the other. */
  if (p->pool)
    posix_spawn_file_actions_adddup2(&fa, kpc_pool_fd(p->pool), KPC_CHILD_DATA_FD);
  /* Close whatever the application leaked without O_CLOEXEC. */
  posix_spawn_file_actions_addclosefrom_np(&fa, KPC_CHILD_DATA_FD + 1);
  sigset_t none, dfl;
  sigemptyset(&none);
  sigemptyset(&dfl);
  int dfl_sigs[] = {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2};
  for (size_t i = 0; i < sizeof dfl_sigs / sizeof dfl_sigs[0]; i++)
    sigaddset(&dfl, dfl_sigs[i]);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &dfl);
  /* Own process group: a terminal's Ctrl-C goes to the application, which decides
   * how to shut the daemon down. */
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  char fdarg[16];
  snprintf(fdarg, sizeof fdarg, "%d", KPC_CHILD_FD);
  char *argv[] = {(char *)path, "--fd", fdarg, NULL};
  pid_t pid;
  int rc = posix_spawn(&pid, path, &fa, &attr, argv, p->envp);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  close(sv[1]);
  if (rc != 0) {
    close(sv[0]);
    snprintf(errstr, errstr_size, "cannot start the daemon %s: %s", path, strerror(rc));
    return KP_ERR__SPAWN;
  }
  p->pid = pid;
  p->reaped = 0;
  p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (p->pidfd >= 0) {
    fcntl(p->pidfd, F_SETFD, FD_CLOEXEC);
    ev_io_init(&p->pid_w, on_pidfd, p->pidfd, EV_READ);
    p->pid_w.data = p;
    ev_io_start(p->loop, &p->pid_w);
  }
  kp_channel_opts co = {0};
  co.rfd = co.wfd = sv[0];
  co.on_frame = on_frame;
  co.on_close = on_ch_close;
  co.on_drain = on_drain;
  co.high_watermark = KPC_CHANNEL_HWM;
  co.ud = p;
  rc = kp_channel_new(p->loop, &co, &p->ch);
  if (rc != 0) {
    close(sv[0]);
    snprintf(errstr, errstr_size, "channel: %s", kp_channel_strerror(rc));
    kill(pid, SIGKILL);
    if (p->pidfd >= 0) {
      ev_io_stop(p->loop, &p->pid_w);
      close(p->pidfd);
      p->pidfd = -1;
    }
    waitpid(pid, NULL, 0);
    p->pid = 0;
    p->reaped = 1;
    return KP_ERR__SPAWN;
  }
  p->started_at = ev_now(p->loop);
  atomic_store(&p->daemon_pid, pid);

  Kpl__Message m = KPL__MESSAGE__INIT;
  Kpl__Configuration pc = KPL__CONFIGURATION__INIT;
  if (kp_config_to_proto(&p->conf->cfg, &pc) != KP_CONF_OK) {
    snprintf(errstr, errstr_size, "out of memory");
    kill(pid, SIGKILL); /* the death path reaps it and retries */
    return KP_ERR__NOMEM;
  }
  if (p->pool) {
    pc.has_shared_data_fd = 1;
    pc.shared_data_fd = KPC_CHILD_DATA_FD;
  }
  p->shm_acked = 0; /* PutRecordRefs wait for this daemon's SharedDataAck */
  m.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_CONFIGURATION;
  m.configuration = &pc;
  send_msg(p, &m);
  kp_config_proto_free(&pc);
  send_creds(p);
  p->ready = 1;
  pthread_mutex_lock(&p->lock);
  p->daemon_up = 1;
  p->stats.daemon_starts++;
  send_metrics_requests(p);
  pthread_mutex_unlock(&p->lock);
  plog(p, KP_LOG_INFO, "daemon %s started, pid %d", path, (int)pid);
  uint64_t ids = p->next_id;
  send_pending(p); /* also takes what was put while no daemon ran */
  if (p->next_id != ids)
    send_flush(p, NULL); /* replayed records go out now, not after their linger */
  return KP_ERR_NO_ERROR;
}

static void restart_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  kp_producer_t *p = w->data;
  char err[512];
  if (spawn_daemon(p, err, sizeof err) != KP_ERR_NO_ERROR && !p->ch) {
    uint64_t delay = backoff_ms(p);
    plog(p, KP_LOG_ERROR, "%s; retrying in %" PRIu64 " ms", err, delay);
    ev_timer_set(&p->restart_t, (double)delay / 1000.0, 0.);
    ev_timer_start(loop, &p->restart_t);
  }
}

static void creds_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  kp_producer_t *p = w->data;
  kpc_creds c;
  char err[512];
  if (kpc_creds_resolve(&p->srcs, &c, err, sizeof err) != KP_ERR_NO_ERROR) {
    if (!p->creds_warned)
      plog(p, KP_LOG_WARNING, "keeping the previous credentials: %s", err);
    p->creds_warned = 1;
    return;
  }
  p->creds_warned = 0;
  if (!kpc_creds_equal(&c, &p->creds)) {
    p->creds = c;
    pthread_mutex_lock(&p->lock);
    p->stats.credentials_changes++;
    pthread_mutex_unlock(&p->lock);
    send_creds(p);
    plog(p, KP_LOG_INFO, "credentials changed (from %s, key id ending %s); sent to the daemon",
         c.source, strlen(c.akid) > 4 ? c.akid + strlen(c.akid) - 4 : "****");
  }
  kpc_wipe(&c, sizeof c);
}

static void kill_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  kp_producer_t *p = w->data;
  if (p->pid > 0 && !p->reaped) {
    plog(p, KP_LOG_WARNING, "daemon pid %d still running %" PRIu64 " ms after shutdown: SIGKILL",
         (int)p->pid, p->conf->cl.daemon_shutdown_timeout);
    kill(p->pid, SIGKILL);
  }
}

static void purge_all(kp_producer_t *p) {
  static const char why[] = "purged by kp_producer_close before a result arrived";
  apply_results(p);
  slots *s = &p->inflight;
  size_t n = slots_sort(s);
  for (size_t i = 0; i < n; i++) {
    s->v[i]->id = 0;
    /* The daemon may still read this record's data: its pool space is not handed out
     * again (no put follows a purge; the pool goes with the producer). */
    s->v[i]->pool_off = KPC_POOL_NONE;
    fail_rec(p, s->v[i], KP_ERR__PURGED, why);
  }
  slots_clear(s);
  while (p->pend.n)
    fail_rec(p, ring_pop(&p->pend), KP_ERR__PURGED, why);
  publish(p);
}

static void begin_shutdown(kp_producer_t *p) {
  if (p->shutting_down)
    return;
  p->shutting_down = 1;
  ev_timer_stop(p->loop, &p->restart_t);
  ev_timer_stop(p->loop, &p->creds_t);
  if (p->ch)
    kp_channel_shutdown(p->ch); /* EOF after the last frame: the daemon drains and exits */
  if (p->pid > 0 && !p->reaped) {
    ev_timer_set(&p->kill_t, (double)p->conf->cl.daemon_shutdown_timeout / 1000.0, 0.);
    ev_timer_start(p->loop, &p->kill_t);
  }
  if (!p->ch && (p->pid == 0 || p->reaped))
    ev_break(p->loop, EVBREAK_ALL);
}

static void wake_cb(struct ev_loop *loop, ev_async *w, int revents) {
  kp_producer_t *p = w->data;
  pthread_mutex_lock(&p->lock);
  recvec sub = p->sub;
  p->sub = p->sub_spare;
  cmd *cmds = p->cmd_head;
  p->cmd_head = p->cmd_tail = NULL;
  send_metrics_requests(p);
  pthread_mutex_unlock(&p->lock);

  queue_sub(p, sub); /* before the commands: a flush covers every earlier put */
  send_pending(p);
  while (cmds) {
    cmd *c = cmds;
    cmds = c->next;
    switch (c->type) {
    case CMD_FLUSH:
      send_flush(p, c->stream);
      break;
    case CMD_PURGE:
      purge_all(p);
      break;
    case CMD_SHUTDOWN:
      begin_shutdown(p);
      break;
    }
    free(c);
  }
}

static void *io_main(void *arg) {
  kp_producer_t *p = arg;
  char err[512] = "";
  kp_err_t rc = spawn_daemon(p, err, sizeof err);
  pthread_mutex_lock(&p->lock);
  p->io_started = 1;
  p->start_err = rc;
  snprintf(p->start_errstr, sizeof p->start_errstr, "%s", err);
  pthread_cond_broadcast(&p->result_cv);
  pthread_mutex_unlock(&p->lock);
  if (rc != KP_ERR_NO_ERROR) {
    if (p->ch) { /* spawned but could not configure it */
      kp_channel_free(p->ch);
      p->ch = NULL;
    }
    if (p->pid > 0 && !p->reaped) {
      kill(p->pid, SIGKILL);
      waitpid(p->pid, NULL, 0);
    }
    return NULL;
  }
  ev_timer_start(p->loop, &p->creds_t);
  ev_run(p->loop, 0);
  /* Shut down: nothing may be left behind. */
  publish(p);
  ev_timer_stop(p->loop, &p->kill_t);
  ev_timer_stop(p->loop, &p->restart_t);
  ev_timer_stop(p->loop, &p->creds_t);
  if (p->ch) {
    kp_channel_free(p->ch);
    p->ch = NULL;
  }
  if (p->pid > 0 && !p->reaped) {
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
  }
  if (p->pidfd >= 0) {
    ev_io_stop(p->loop, &p->pid_w);
    close(p->pidfd);
    p->pidfd = -1;
  }
  atomic_store(&p->daemon_pid, 0);
  pthread_mutex_lock(&p->lock);
  p->io_done = 1;
  pthread_cond_broadcast(&p->result_cv);
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

static void *bg_main(void *arg) {
  kp_producer_t *p = arg;
  pthread_mutex_lock(&p->lock);
  for (;;) {
    while (!p->res_head && !p->bg_stop)
      pthread_cond_wait(&p->result_cv, &p->lock);
    if (!p->res_head)
      break;
    rec *b = take_results(p);
    pthread_mutex_unlock(&p->lock);
    serve(p, b);
    pthread_mutex_lock(&p->lock);
  }
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* public API                                                               */

static char **env_without_secrets(void) {
  size_t n = 0;
  for (char **e = environ; e && *e; e++)
    n++;
  char **out = calloc(n + 1, sizeof *out);
  if (!out)
    return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const char *e = environ[i];
    if (!strncmp(e, "AWS_ACCESS_KEY_ID=", 18) || !strncmp(e, "AWS_SECRET_ACCESS_KEY=", 22) ||
        !strncmp(e, "AWS_SESSION_TOKEN=", 18))
      continue;
    if (!(out[k] = strdup(e)))
      break;
    k++;
  }
  return out;
}

static void env_free(char **env) {
  if (!env)
    return;
  for (char **e = env; *e; e++)
    free(*e);
  free(env);
}

static void producer_free(kp_producer_t *p) {
  /* Commands that raced with close (a flush after the I/O thread ended). */
  for (cmd *c = p->cmd_head, *next; c; c = next) {
    next = c->next;
    free(c);
  }
  if (p->loop)
    ev_loop_destroy(p->loop);
  pthread_cond_destroy(&p->space_cv);
  pthread_cond_destroy(&p->result_cv);
  pthread_mutex_destroy(&p->lock);
  env_free(p->envp);
  kpc_pool_destroy(p->pool); /* the daemon is gone: nothing reads it any more */
  free(p->inflight.v);
  free(p->pend.v);
  free(p->sub.v);
  free(p->sub_spare.v);
  kpc_wipe(&p->creds, sizeof p->creds);
  kpc_wipe(&p->srcs, sizeof p->srcs);
  free(p);
}

static void seterr(char *errstr, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *errstr, size_t size, const char *fmt, ...) {
  if (!errstr || !size)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errstr, size, fmt, ap);
  va_end(ap);
}

kp_producer_t *kp_producer_new(kp_conf_t *conf, char *errstr, size_t errstr_size) {
  if (!conf) {
    seterr(errstr, errstr_size, "kp_producer_new: NULL conf");
    return NULL;
  }
  if (kpc_conf_validate(conf, errstr, errstr_size) != KP_ERR_NO_ERROR)
    return NULL;
  const char *path = kpc_daemon_path(conf);
  if (access(path, X_OK) != 0) {
    seterr(errstr, errstr_size,
           "NativeExecutable: %s: %s (set NativeExecutable or KP_DAEMON_PATH to the "
           "kinesis_producer daemon)",
           path, strerror(errno));
    return NULL;
  }
  kp_producer_t *p = calloc(1, sizeof *p);
  if (!p) {
    seterr(errstr, errstr_size, "out of memory");
    return NULL;
  }
  p->conf = conf;
  p->background = conf->cl.result_delivery == KPC_DELIVERY_BACKGROUND;
  p->pidfd = -1;
  pthread_mutex_init(&p->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&p->space_cv, &ca);
  pthread_cond_init(&p->result_cv, &ca);
  pthread_condattr_destroy(&ca);

  if (conf->cl.shared_memory) {
    uint64_t want = conf->cl.max_outstanding_bytes + 2 * (uint64_t)KPC_POOL_CHUNK;
    char why[256];
    p->pool = kpc_pool_new(want < KPC_POOL_MAX ? (size_t)want : KPC_POOL_MAX, KPC_POOL_CHUNK, why,
                           sizeof why);
    if (!p->pool)
      plog(p, KP_LOG_WARNING, "%s: record data goes through the daemon's socket", why);
  }
  kpc_creds_sources_init(&p->srcs, &conf->cl);
  if (kpc_creds_resolve(&p->srcs, &p->creds, errstr, errstr_size) != KP_ERR_NO_ERROR) {
    producer_free(p);
    return NULL;
  }
  p->envp = env_without_secrets();
  p->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
  if (!p->envp || !p->loop) {
    seterr(errstr, errstr_size, "out of memory");
    producer_free(p);
    return NULL;
  }
  ev_async_init(&p->wake, wake_cb);
  p->wake.data = p;
  ev_async_start(p->loop, &p->wake);
  ev_prepare_init(&p->publish_w, publish_cb);
  p->publish_w.data = p;
  ev_prepare_start(p->loop, &p->publish_w);
  ev_timer_init(&p->restart_t, restart_cb, 0., 0.);
  p->restart_t.data = p;
  double refresh = (double)conf->cl.credentials_refresh_delay / 1000.0;
  ev_timer_init(&p->creds_t, creds_cb, refresh, refresh);
  p->creds_t.data = p;
  ev_timer_init(&p->kill_t, kill_cb, 0., 0.);
  p->kill_t.data = p;

  /* Library threads take no process signals: those belong to the application. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&p->io_thread, NULL, io_main, p);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    seterr(errstr, errstr_size, "cannot start the I/O thread: %s", strerror(rc));
    producer_free(p);
    return NULL;
  }
  p->io_running = 1;
  pthread_mutex_lock(&p->lock);
  while (!p->io_started)
    pthread_cond_wait(&p->result_cv, &p->lock);
  kp_err_t start = p->start_err;
  pthread_mutex_unlock(&p->lock);
  if (start != KP_ERR_NO_ERROR) {
    seterr(errstr, errstr_size, "%s", p->start_errstr);
    pthread_join(p->io_thread, NULL); /* it returned without running the loop */
    producer_free(p);
    return NULL;
  }
  if (p->background) {
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&p->bg_thread, NULL, bg_main, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
      seterr(errstr, errstr_size, "cannot start the delivery thread: %s", strerror(rc));
      kp_producer_close(p, KP_CLOSE_F_PURGE, 0); /* nothing was put: stops the daemon */
      producer_free(p);
      return NULL;
    }
    p->bg_running = 1;
  }
  return p;
}

static kp_err_t enqueue_cmd(kp_producer_t *p, cmd_type type, const char *stream) {
  size_t n = stream ? strlen(stream) : 0;
  cmd *c = calloc(1, sizeof *c + n + 1);
  if (!c)
    return KP_ERR__NOMEM;
  c->type = type;
  if (n)
    memcpy(c->stream, stream, n);
  pthread_mutex_lock(&p->lock);
  if (p->cmd_tail)
    p->cmd_tail->next = c;
  else
    p->cmd_head = c;
  p->cmd_tail = c;
  pthread_mutex_unlock(&p->lock);
  ev_async_send(p->loop, &p->wake);
  return KP_ERR_NO_ERROR;
}

/* 1 if s[0..n) is all ASCII (then it is valid UTF-8 of n characters). */
static int is_ascii(const char *s, size_t n) {
  uint64_t acc = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, s + i, 8);
    acc |= w;
  }
  for (; i < n; i++)
    acc |= (unsigned char)s[i];
  return !(acc & 0x8080808080808080ULL);
}

static kp_err_t check_stream(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > KPC_STREAM_MAX)
    return KP_ERR__INVALID_STREAM;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
      return KP_ERR__INVALID_STREAM;
  return KP_ERR_NO_ERROR;
}

/* The record's block, with Message{id 0, put_record} encoded in its area by the same
 * codec the daemon decodes with (byte-identical to protobuf-c). NULL when out of
 * memory. */
static rec *rec_new(kp_producer_t *p, const char *stream, const char *pk, const char *ehk,
                    size_t ehk_len, size_t pk_len, const void *data, size_t len) {
  size_t s_len = strlen(stream);
  uint64_t off = p->pool && len >= KPC_POOL_MIN ? kpc_pool_alloc(p->pool, len) : KPC_POOL_NONE;
  /* Message{id 0, put_record or put_record_ref}: the sender puts the real id first. */
  kp_fast_put_record fr = {.stream = {stream, s_len},
                           .partition_key = {pk, pk_len},
                           .explicit_hash_key = {ehk, ehk_len},
                           .data = {off == KPC_POOL_NONE ? data : NULL, len},
                           .by_ref = off != KPC_POOL_NONE,
                           .data_offset = off};
  size_t enc = kp_fast_put_record_size(&fr) - KPC_ENC_SKIP;
  size_t area_off = (offsetof(rec, str) + s_len + 1 + pk_len + 1 + 7) & ~(size_t)7;
  size_t area = KPC_ENC_SKIP + enc > KPC_RES_AREA ? KPC_ENC_SKIP + enc : KPC_RES_AREA;
  rec *r = malloc(area_off + area);
  if (!r) {
    if (off != KPC_POOL_NONE)
      kpc_pool_free(p->pool, off);
    return NULL;
  }
  r->next = NULL;
  r->id = 0;
  r->len = len;
  r->enc_len = (uint32_t)enc;
  r->area_len = (uint32_t)area;
  r->stream_len = (uint16_t)s_len;
  r->pk_len = (uint16_t)pk_len;
  r->area_off = (uint16_t)area_off;
  r->detail = NULL;
  r->unsent = 0;
  r->pool_off = off;
  memcpy(r->str, stream, s_len + 1);
  memcpy(r->str + s_len + 1, pk, pk_len + 1);
  kp_fast_write_put_record(rec_area(r), &fr);
  if (off != KPC_POOL_NONE && len)
    memcpy(kpc_pool_at(p->pool, off), data, len);
  return r;
}

/* Under lock: whether a record of len data bytes may be accepted now. A lone record
 * larger than KPC_UNSENT_MAX still goes once nothing else is unsent. */
static int has_room(const kp_producer_t *p, size_t len, int blocking) {
  const kpc_settings *s = &p->conf->cl;
  if (p->outstanding >= s->max_outstanding_records ||
      p->outstanding_bytes + len > s->max_outstanding_bytes)
    return 0;
  return !blocking || !p->daemon_up || !p->unsent_bytes || p->unsent_bytes + len <= KPC_UNSENT_MAX;
}

kp_err_t kp_producer_put(kp_producer_t *p, const char *stream, const char *partition_key,
                         const char *explicit_hash_key, const void *data, size_t len, int flags,
                         void *opaque) {
  if (!p || !stream || !partition_key || (!data && len))
    return KP_ERR__INVALID_ARG;
  if (check_stream(stream) != KP_ERR_NO_ERROR)
    return KP_ERR__INVALID_STREAM;
  size_t pk_len = strlen(partition_key);
  if (pk_len < 1 || pk_len > 4 * 256) /* 256 characters are at most 1 KiB of UTF-8 */
    return KP_ERR__INVALID_PARTITION_KEY;
  if (!is_ascii(partition_key, pk_len) || pk_len > 256) {
    long chars = kp_utf8_count(partition_key, pk_len, NULL);
    if (chars < 1 || chars > 256)
      return KP_ERR__INVALID_PARTITION_KEY;
  }
  size_t ehk_len = 0;
  if (explicit_hash_key) {
    kp_hash_key hk;
    ehk_len = strlen(explicit_hash_key);
    if (kp_hash_key_parse(explicit_hash_key, ehk_len, &hk) != 0)
      return KP_ERR__INVALID_HASH_KEY;
  }
  if (len > p->conf->cl.max_user_record_size)
    return KP_ERR__MSG_SIZE_TOO_LARGE;

  rec *r = rec_new(p, stream, partition_key, explicit_hash_key, ehk_len, pk_len, data, len);
  if (!r)
    return KP_ERR__NOMEM;
  r->opaque = opaque;

  const kpc_settings *s = &p->conf->cl;
  kp_err_t err = KP_ERR_NO_ERROR;
  struct timespec deadline;
  int have_deadline = 0;
  pthread_mutex_lock(&p->lock);
  for (;;) {
    if (p->state != ST_OPEN) {
      err = KP_ERR__STATE;
      break;
    }
    int blocking = (flags & KP_PUT_F_BLOCK) && s->put_block_timeout != 0;
    /* The unsent bound keeps the sender's copies of data warm; a pooled record's data
     * is copied by put alone, so only the outstanding limits hold it back. */
    if (has_room(p, len, blocking && r->pool_off == KPC_POOL_NONE))
      break;
    if (!blocking) {
      err = KP_ERR__QUEUE_FULL;
      break;
    }
    if (!have_deadline) {
      deadline = deadline_after((int)s->put_block_timeout);
      have_deadline = 1;
    }
    if (cv_wait(&p->space_cv, &p->lock, &deadline) == ETIMEDOUT) {
      /* One last look: room may have appeared with the timeout. The unsent bound only
       * paces: at the timeout the outstanding limits alone decide, as for a
       * non-blocking put. */
      if (p->state == ST_OPEN && has_room(p, len, 0))
        break;
      err = p->state != ST_OPEN ? KP_ERR__STATE : KP_ERR__TIMED_OUT;
      break;
    }
  }
  int was_empty = 0;
  if (err == KP_ERR_NO_ERROR) {
    was_empty = p->sub.n == 0 && !p->io_nowake;
    if (vec_push(&p->sub, r) != 0) {
      err = KP_ERR__NOMEM;
    } else {
      p->outstanding++;
      p->outstanding_bytes += len;
      if (r->pool_off == KPC_POOL_NONE) {
        p->unsent_bytes += len;
        r->unsent = 1;
      }
      p->stats.puts_accepted++;
      p->stats.puts_shared += r->pool_off != KPC_POOL_NONE;
    }
  }
  pthread_mutex_unlock(&p->lock);
  if (err != KP_ERR_NO_ERROR) {
    rec_free(p, r);
    return err;
  }
  if (was_empty)
    ev_async_send(p->loop, &p->wake);
  return KP_ERR_NO_ERROR;
}

int kp_producer_poll(kp_producer_t *p, int timeout_ms) {
  if (!p || p->background)
    return 0;
  struct timespec deadline = deadline_after(timeout_ms > 0 ? timeout_ms : 0);
  pthread_mutex_lock(&p->lock);
  while (!p->res_head && timeout_ms != 0 && p->state != ST_CLOSED) {
    if (cv_wait(&p->result_cv, &p->lock, timeout_ms < 0 ? NULL : &deadline) == ETIMEDOUT)
      break;
  }
  rec *b = take_results(p);
  pthread_mutex_unlock(&p->lock);
  return serve(p, b);
}

kp_err_t kp_producer_flush(kp_producer_t *p, const char *stream) {
  if (!p)
    return KP_ERR__INVALID_ARG;
  if (stream && check_stream(stream) != KP_ERR_NO_ERROR)
    return KP_ERR__INVALID_STREAM;
  pthread_mutex_lock(&p->lock);
  int st = p->state;
  pthread_mutex_unlock(&p->lock);
  if (st == ST_CLOSED)
    return KP_ERR__STATE;
  return enqueue_cmd(p, CMD_FLUSH, stream);
}

/* Waits until nothing is outstanding, serving results in poll mode. */
static kp_err_t wait_empty(kp_producer_t *p, int timeout_ms) {
  struct timespec deadline = deadline_after(timeout_ms > 0 ? timeout_ms : 0);
  kp_err_t err = KP_ERR_NO_ERROR;
  pthread_mutex_lock(&p->lock);
  while (p->outstanding > 0) {
    if (!p->background && p->res_head) {
      rec *b = take_results(p);
      pthread_mutex_unlock(&p->lock);
      serve(p, b);
      pthread_mutex_lock(&p->lock);
      continue;
    }
    if (timeout_ms == 0) {
      err = KP_ERR__TIMED_OUT;
      break;
    }
    if (cv_wait(&p->result_cv, &p->lock, timeout_ms < 0 ? NULL : &deadline) == ETIMEDOUT &&
        p->outstanding > 0 && !(!p->background && p->res_head)) {
      err = KP_ERR__TIMED_OUT;
      break;
    }
  }
  pthread_mutex_unlock(&p->lock);
  return err;
}

kp_err_t kp_producer_flush_wait(kp_producer_t *p, int timeout_ms) {
  if (!p)
    return KP_ERR__INVALID_ARG;
  pthread_mutex_lock(&p->lock);
  int st = p->state;
  pthread_mutex_unlock(&p->lock);
  if (st != ST_CLOSED) {
    kp_err_t e = enqueue_cmd(p, CMD_FLUSH, NULL);
    if (e != KP_ERR_NO_ERROR)
      return e;
  }
  return wait_empty(p, timeout_ms);
}

size_t kp_producer_outstanding(kp_producer_t *p) {
  if (!p)
    return 0;
  pthread_mutex_lock(&p->lock);
  size_t n = p->outstanding;
  pthread_mutex_unlock(&p->lock);
  return n;
}

kp_err_t kp_producer_close(kp_producer_t *p, int flags, int timeout_ms) {
  if (!p)
    return KP_ERR__INVALID_ARG;
  pthread_mutex_lock(&p->lock);
  if (p->state != ST_OPEN) {
    pthread_mutex_unlock(&p->lock);
    return KP_ERR__STATE;
  }
  p->state = ST_CLOSING;
  pthread_cond_broadcast(&p->space_cv); /* blocked puts return KP_ERR__STATE */
  pthread_mutex_unlock(&p->lock);

  kp_err_t rc = KP_ERR_NO_ERROR;
  if (!(flags & KP_CLOSE_F_PURGE)) {
    enqueue_cmd(p, CMD_FLUSH, NULL);
    if (wait_empty(p, timeout_ms) != KP_ERR_NO_ERROR)
      rc = KP_ERR__TIMED_OUT;
  }
  if ((flags & KP_CLOSE_F_PURGE) || rc != KP_ERR_NO_ERROR) {
    enqueue_cmd(p, CMD_PURGE, NULL);
    wait_empty(p, -1); /* bounded: the purge gives every record its result at once */
  }
  enqueue_cmd(p, CMD_SHUTDOWN, NULL);
  pthread_join(p->io_thread, NULL); /* bounded by DaemonShutdownTimeout */
  p->io_running = 0;
  pthread_mutex_lock(&p->lock);
  p->state = ST_CLOSED;
  p->bg_stop = 1;
  pthread_cond_broadcast(&p->result_cv);
  pthread_mutex_unlock(&p->lock);
  if (p->bg_running) {
    pthread_join(p->bg_thread, NULL);
    p->bg_running = 0;
  }
  return rc;
}

void kp_producer_destroy(kp_producer_t *p) {
  if (!p)
    return;
  pthread_mutex_lock(&p->lock);
  int open = p->state == ST_OPEN;
  pthread_mutex_unlock(&p->lock);
  if (open)
    kp_producer_close(p, 0, 30000);
  /* Results the application never polled after close: serve them now so every record
   * gets its callback (close already did in poll mode; this covers a racing put). */
  pthread_mutex_lock(&p->lock);
  rec *b = take_results(p);
  pthread_mutex_unlock(&p->lock);
  serve(p, b);
  kp_conf_t *conf = p->conf;
  producer_free(p);
  kp_conf_destroy(conf);
}

kp_err_t kp_producer_stats(kp_producer_t *p, kp_stats_t *out) {
  if (!p || !out)
    return KP_ERR__INVALID_ARG;
  pthread_mutex_lock(&p->lock);
  *out = p->stats;
  out->outstanding = p->outstanding;
  out->outstanding_bytes = p->outstanding_bytes;
  out->unsent_bytes = p->unsent_bytes;
  pthread_mutex_unlock(&p->lock);
  return KP_ERR_NO_ERROR;
}

pid_t kp_producer_daemon_pid(kp_producer_t *p) {
  return p ? atomic_load(&p->daemon_pid) : 0;
}

kp_err_t kp_producer_metrics(kp_producer_t *p, const char *name, uint64_t seconds, int timeout_ms,
                             kp_metric_t **metricsp, size_t *cntp) {
  if (!p || !metricsp || !cntp)
    return KP_ERR__INVALID_ARG;
  *metricsp = NULL;
  *cntp = 0;
  mwait w;
  memset(&w, 0, sizeof w);
  w.name = name;
  w.seconds = seconds;
  struct timespec deadline = deadline_after(timeout_ms > 0 ? timeout_ms : 0);
  pthread_mutex_lock(&p->lock);
  if (p->state != ST_OPEN) {
    pthread_mutex_unlock(&p->lock);
    return KP_ERR__STATE;
  }
  w.next = p->mwaits;
  p->mwaits = &w;
  pthread_mutex_unlock(&p->lock);
  ev_async_send(p->loop, &p->wake);
  pthread_mutex_lock(&p->lock);
  kp_err_t err = KP_ERR_NO_ERROR;
  while (!w.done) {
    if (p->io_done) {
      err = KP_ERR__STATE;
      break;
    }
    if (timeout_ms == 0 ||
        cv_wait(&p->result_cv, &p->lock, timeout_ms < 0 ? NULL : &deadline) == ETIMEDOUT) {
      if (!w.done)
        err = KP_ERR__TIMED_OUT;
      break;
    }
  }
  for (mwait **pp = &p->mwaits; *pp; pp = &(*pp)->next)
    if (*pp == &w) {
      *pp = w.next;
      break;
    }
  pthread_mutex_unlock(&p->lock);
  if (err == KP_ERR_NO_ERROR)
    err = w.err;
  if (err != KP_ERR_NO_ERROR) {
    kp_metrics_destroy(w.metrics, w.n);
    return err;
  }
  *metricsp = w.metrics;
  *cntp = w.n;
  return KP_ERR_NO_ERROR;
}

void kp_metrics_destroy(kp_metric_t *metrics, size_t cnt) {
  if (!metrics)
    return;
  for (size_t i = 0; i < cnt; i++) {
    kp_metric_t *m = &metrics[i];
    for (size_t k = 0; k < m->dimension_cnt; k++) {
      free(m->dimension_keys[k]);
      free(m->dimension_values[k]);
    }
    free(m->dimension_keys);
    free(m->dimension_values);
    free(m->name);
  }
  free(metrics);
}
