/* The pipeline glue. Stage logic lives in its own files (record, shard_map,
 * aggregator, collector, retrier, kinesis_api, sigv4, http); this file only moves
 * records between them on the loop and keeps the bookkeeping that ties a result to
 * its PutRecord. */
#include "producer/pipeline.h"

#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "producer/aggregator.h"
#include "producer/collector.h"
#include "producer/deadline_heap.h"
#include "producer/http.h"
#include "producer/backoff.h"
#include "producer/kinesis_api.h"
#include "producer/kinesis_cbor.h"
#include "producer/limiter.h"
#include "producer/metrics.h"
#include "producer/cloudwatch_api.h"
#include "ipc/fastpath.h"
#include "producer/record.h"
#include "producer/shared_data.h"
#include "producer/retrier.h"
#include "producer/shard_map.h"
#include "producer/sigv4.h"
#include "proto/messages.pb-c.h"

#define KP_MAX_RECORD_SIZE (1024 * 1024)
#define KP_MAP_RETRY_MIN_S 0.2
#define KP_LIST_SHARDS_PAGE 1000 /* AWS's default page; emulators only page when asked */
#define KP_MAP_RETRY_MAX_S 5.0

struct stream;

/* One per (stream, shard): an aggregator with its place in the deadline heap, and the
 * shard's rate limiter and throttling backoff, which hold finished Kinesis records in
 * `q` until the shard may take them. */
struct slot {
  kp_heap_item hi; /* first member: heap items map back to their slot */
  kp_aggregator *agg;
  struct stream *s;
  kp_limiter lim;
  kp_backoff bo;
  kp_kinesis_record *q, *q_tail;
  kp_heap_item lim_hi;             /* keyed by when the head of q may go */
  kp_metrics_handle *mh;           /* this shard's metrics */
  uint32_t fb_total, fb_throttled; /* scratch while one answer is fed back */
};

enum map_state { MAP_NONE, MAP_FETCHING, MAP_READY };

struct stream {
  kp_heap_item hi; /* keyed by the collector's deadline */
  kp_pipeline *p;
  kp_backoff bo;         /* request-level failures (5xx, transport) back off the stream */
  unsigned map_gen;      /* bumped per installed map: stale responses skip slot feedback */
  kp_metrics_handle *mh; /* this stream's metrics */
  size_t outstanding;    /* for UserRecordsPending */
  char *name;
  size_t name_len;
  uint32_t idx;
  enum map_state state;
  kp_shard_map *map;
  struct slot *slots;
  size_t n_slots;
  kp_collector *col;
  kp_record *pending, *pending_tail; /* waiting for a shard map */
  size_t n_pending;
  /* ListShards paging */
  kp_shard_map *building;
  char *next_token;
  bool refresh_wanted;
  bool flush_when_mapped; /* a Flush arrived while records waited for the map */
  unsigned map_failures;
  char map_error_code[128];
  char map_error_msg[512];
  ev_timer map_retry;
};

/* One PutRecords request in flight. */
struct request {
  kp_pipeline *p;
  struct stream *s;
  kp_batch *batch;
  kp_buf body;       /* the body; with iov, only the bytes around the records' data */
  struct iovec *iov; /* the body as a gather list (codec->encode_iov), else NULL */
  size_t n_iov;
  const kp_put_records_codec *codec; /* the body's */
  double start;
  unsigned map_gen;
  char *headers[8];
};

/* Records of one Kinesis record waiting to be answered by one PutRecordResultBatch. */
struct result_batch {
  kp_record **recs;
  uint64_t *ids;
  uint32_t *delays;
  size_t n, cap;
};

/* Request bodies of finished requests, kept for the next ones: a body freed into the
 * heap is soon cut up by smaller allocations, and the next one then extends the heap
 * (at 100 B records that was a fifth of the daemon's memory); mmap'd instead, each
 * body's pages fault in again (+70 % daemon CPU). */
#define KP_SPARE_BODIES 2

struct kp_pipeline {
  struct ev_loop *loop;
  kp_config cfg;
  kp_buf spare_bodies[KP_SPARE_BODIES];
  size_t n_spare_bodies;
  struct result_batch rb;
  kp_pipeline_send_fn send;
  void *send_ud;
  kp_shared_data shared; /* where PutRecordRef data is (borrowed); base NULL: none */
  kp_http *http;
  kp_sigv4_signer *signer;
  kp_endpoint ep;
  char region[64];
  char host_header[300];

  struct stream **streams;
  size_t n_streams, cap_streams;
  struct stream *last_stream; /* of the last put: usually the next one's too */

  kp_deadline_heap agg_heap; /* slots by aggregator deadline */
  kp_deadline_heap col_heap; /* streams by collector deadline */
  kp_deadline_heap lim_heap; /* slots by when their rate limit lets the next record go */
  uint64_t rng;
  ev_timer timer;
  double timer_at; /* when `timer` fires; INFINITY when stopped */

  uint64_t next_id;
  size_t outstanding;    /* accepted, no result yet */
  size_t buffered_bytes; /* their user data */
  bool was_full;
  kp_pipeline_room_fn room;
  void *room_ud;
  size_t requests_in_flight;
  kp_counters counters;
  kp_buf out; /* scratch for packing results */
  kp_put_entry *entries;
  size_t cap_entries;

  kp_metrics *metrics;
  ev_timer pending_timer; /* samples UserRecordsPending each second, only while busy */
  ev_timer cw_timer;      /* CloudWatch upload every MetricsUploadDelay */
  kp_sigv4_signer *cw_signer;
  kp_endpoint cw_ep;
  char cw_host[300];
  bool cw_enabled;
  double cw_last_error_log;
  uint64_t creds_hash, cw_creds_hash; /* to log credential changes, not repeats */

  bool shutting_down;
  kp_pipeline_drained_fn drained;
  void *drained_ud;
  ev_timer shutdown_timer;
  ev_timer flush_timer;
};

static void route(struct stream *s, kp_record *rec);
static void collect(struct stream *s, kp_kinesis_record *kr);
static void rearm_timer(kp_pipeline *p);
static void start_list_shards(struct stream *s);
static void check_drained(kp_pipeline *p);
static void schedule_flush(kp_pipeline *p);
static void flush_stream(struct stream *s);

static double now_of(kp_pipeline *p) {
  return ev_now(p->loop);
}

static uint32_t ms_between(double a, double b) {
  double d = (b - a) * 1000.0;
  return d <= 0 ? 0 : d >= 4e9 ? 4000000000u : (uint32_t)(d + 0.5);
}

/* Packs a Message into the scratch buffer and hands it to the transport. */
static void send_message(kp_pipeline *p, const Kpl__Message *m) {
  size_t len = kpl__message__get_packed_size(m);
  kp_buf_reset(&p->out);
  if (kp_buf_reserve(&p->out, len) != 0) {
    KP_LOG_ERROR("out of memory packing a %zu-byte message for the client", len);
    return;
  }
  kpl__message__pack(m, p->out.data);
  p->send(p->out.data, len, p->send_ud);
}

/* ---- results ------------------------------------------------------------- */

/* Sends the record's PutRecordResult and frees it. On success, shard_id/seq name
 * where it landed. */
/* mh: the shard's metrics handle, or NULL for the stream's. */
static void retire_record(kp_pipeline *p, kp_record *rec, bool success, kp_metrics_handle *mh);

static void finish_record(kp_pipeline *p, kp_record *rec, bool success, const char *shard_id,
                          const char *seq, kp_metrics_handle *mh) {
  kp_fast_attempt buf[8], *at = buf;
  if (rec->n_attempts > 8 && !(at = malloc(sizeof *at * rec->n_attempts)))
    at = NULL;
  size_t n = at ? rec->n_attempts : 0;
  for (size_t i = 0; i < n; i++) {
    const kp_attempt *a = &rec->attempts[i];
    at[i] = (kp_fast_attempt){
        .delay_ms = a->delay_ms,
        .duration_ms = a->duration_ms,
        .success = a->success,
        .error_code = {a->error_code, a->error_code ? strlen(a->error_code) : 0},
        .error_message = {a->error_message, a->error_message ? strlen(a->error_message) : 0},
    };
  }
  kp_buf_reset(&p->out);
  if (kp_fast_encode_result(&p->out, ++p->next_id, rec->source_id, success,
                            (kp_fast_str){shard_id, shard_id ? strlen(shard_id) : 0},
                            (kp_fast_str){seq, seq ? strlen(seq) : 0}, at, n) == 0)
    p->send(p->out.data, p->out.len, p->send_ud);
  else
    KP_LOG_ERROR("out of memory packing the result of record %llu",
                 (unsigned long long)rec->source_id);
  if (at != buf)
    free(at);
  retire_record(p, rec, success, mh);
}

/* After its result went out: counts the record, frees it, and resumes input if that
 * made room. */
static void retire_record(kp_pipeline *p, kp_record *rec, bool success, kp_metrics_handle *mh) {
  struct stream *st = p->streams[rec->stream];
  kp_metrics_handle *h = mh ? mh : st->mh;
  double now = now_of(p);
  if (success) {
    p->counters.user_records_put++;
    p->counters.user_bytes_put += rec->data_len;
    kp_metrics_add(h, KP_M_USER_RECORDS_PUT, 1, now);
    kp_metrics_add(h, KP_M_USER_RECORDS_DATA_PUT, (double)rec->data_len, now);
  } else {
    p->counters.user_records_failed++;
  }
  kp_metrics_add(h, KP_M_RETRIES_PER_RECORD, rec->n_attempts ? rec->n_attempts - 1 : 0, now);
  if (st->outstanding)
    st->outstanding--;
  p->buffered_bytes -= rec->data_len;
  kp_record_free(rec);
  if (p->outstanding)
    p->outstanding--;
  if (p->was_full && p->buffered_bytes <= p->cfg.max_buffered_bytes / 4 * 3) {
    p->was_full = false;
    if (p->room)
      p->room(p->room_ud);
  }
  if (p->shutting_down)
    check_drained(p);
}

/* A record that succeeded at its first attempt, for the batch of its Kinesis record
 * (clients that negotiated ResultBatches). Returns false when out of memory: then the
 * caller answers it alone. */
static bool batch_add(kp_pipeline *p, kp_record *rec) {
  struct result_batch *b = &p->rb;
  if (b->n == b->cap) {
    size_t cap = b->cap ? 2 * b->cap : 512;
    kp_record **r = realloc(b->recs, cap * sizeof *r);
    if (r)
      b->recs = r;
    uint64_t *i = realloc(b->ids, cap * sizeof *i);
    if (i)
      b->ids = i;
    uint32_t *d = realloc(b->delays, cap * sizeof *d);
    if (d)
      b->delays = d;
    if (!r || !i || !d)
      return false;
    b->cap = cap;
  }
  b->recs[b->n] = rec;
  b->ids[b->n] = rec->source_id;
  b->delays[b->n] = rec->attempts[0].delay_ms;
  b->n++;
  return true;
}

/* Answers the batched records in one message, then retires them (not before: the last
 * retire may end a shutdown). */
static void batch_send(kp_pipeline *p, const char *shard_id, const char *seq, uint32_t duration_ms,
                       kp_metrics_handle *mh) {
  struct result_batch *b = &p->rb;
  if (!b->n)
    return;
  kp_buf_reset(&p->out);
  if (kp_fast_encode_result_batch(&p->out, ++p->next_id, (kp_fast_str){shard_id, strlen(shard_id)},
                                  (kp_fast_str){seq, strlen(seq)}, duration_ms, b->ids, b->delays,
                                  b->n) == 0)
    p->send(p->out.data, p->out.len, p->send_ud);
  else
    KP_LOG_ERROR("out of memory packing the results of %zu records", b->n);
  size_t n = b->n;
  b->n = 0;
  for (size_t i = 0; i < n; i++)
    retire_record(p, b->recs[i], true, mh);
}

/* A result for a PutRecord that never became a record (failed validation). */
static void reject(kp_pipeline *p, uint64_t source_id, const char *code, const char *message) {
  Kpl__Message msg = KPL__MESSAGE__INIT;
  Kpl__PutRecordResult res = KPL__PUT_RECORD_RESULT__INIT;
  Kpl__Attempt at = KPL__ATTEMPT__INIT;
  Kpl__Attempt *atp = &at;
  at.delay = 0;
  at.duration = 0;
  at.success = 0;
  at.error_code = (char *)code;
  at.error_message = (char *)message;
  res.n_attempts = 1;
  res.attempts = &atp;
  res.success = 0;
  msg.id = ++p->next_id;
  msg.has_source_id = 1;
  msg.source_id = source_id;
  msg.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD_RESULT;
  msg.put_record_result = &res;
  send_message(p, &msg);
  p->counters.user_records_rejected++;
}

/* Records a failed attempt and either re-queues the record or fails it for good. */
static void retry_or_fail(struct stream *s, kp_record *rec, double attempt_start, double now,
                          const char *code, const char *message, long http_status,
                          kp_metrics_handle *mh) {
  kp_pipeline *p = s->p;
  kp_record_add_attempt(rec, ms_between(rec->last_attempt_end, attempt_start),
                        ms_between(attempt_start, now), false, code, message);
  kp_metrics_add_error(mh ? mh : s->mh, code, 1, now);
  rec->last_attempt_end = now;
  kp_retry_class cls = kp_retry_classify(code, http_status);
  double dl = kp_retry_deadline(cls, p->cfg.fail_if_throttled, now,
                                p->cfg.record_max_buffered_time / 1000.0, rec->expiry);
  if (dl < 0) {
    if (cls != KP_RETRY_NO && now >= rec->expiry) {
      kp_record_add_attempt(rec, 0, 0, false, "Expired", "Record has reached expiration");
      p->counters.user_records_expired++;
      kp_metrics_add(mh ? mh : s->mh, KP_M_USER_RECORD_EXPIRED, 1, now);
    }
    finish_record(p, rec, false, NULL, NULL, mh);
    return;
  }
  if (rec->shed) {
    /* Its key and data could not be had back from its aggregate (out of memory). */
    kp_record_add_attempt(rec, 0, 0, false, "InternalError",
                          "out of memory restoring the record's data for its retry");
    finish_record(p, rec, false, NULL, NULL, mh);
    return;
  }
  rec->deadline = dl;
  p->counters.user_records_retried++;
  route(s, rec);
}

/* Gives the records of an aggregate, shed once it was encoded, their keys and data back
 * for a retry or a re-route: from the aggregate's data while it has it, else from the
 * request body that carries it (rq). Records it cannot restore stay shed, and then
 * fail instead of being retried (retry_or_fail). */
static void restore_records(struct stream *s, kp_kinesis_record *kr, const struct request *rq) {
  if (!kp_kinesis_record_has_shed(kr))
    return;
  int rc = kp_kinesis_record_flatten(kr); /* a gathered aggregate is made whole first */
  if (rc == 0 && kr->data) {
    rc = kp_kinesis_record_restore(kr, kr->data, kr->data_len);
  } else if (rc == 0 && rq) {
    uint8_t *d = rq->codec->data_of(rq->body.data, rq->body.len, kr->body_off, kr->data_len);
    rc = d ? kp_kinesis_record_restore(kr, d, kr->data_len) : -ENOMEM;
    free(d);
  } else if (rc == 0) {
    rc = -EINVAL; /* neither: cannot happen (the data is dropped only once sent) */
  }
  if (rc != 0)
    KP_LOG_ERROR("stream %s: cannot restore the %u records of an aggregate for a retry (%s)",
                 s->name, kr->count, strerror(-rc));
}

/* ---- streams and shard maps ---------------------------------------------- */

static void free_slots(struct stream *s) {
  for (size_t i = 0; i < s->n_slots; i++) {
    if (s->slots[i].hi.idx != KP_HEAP_NONE)
      kp_deadline_heap_remove(&s->p->agg_heap, &s->slots[i].hi);
    if (s->slots[i].lim_hi.idx != KP_HEAP_NONE)
      kp_deadline_heap_remove(&s->p->lim_heap, &s->slots[i].lim_hi);
    kp_kinesis_record *kr = s->slots[i].q;
    while (kr) { /* only non-empty on teardown: install_map drains queues first */
      kp_kinesis_record *next = kr->next;
      kp_kinesis_record_free(kr, true);
      kr = next;
    }
    kp_aggregator_free(s->slots[i].agg);
  }
  free(s->slots);
  s->slots = NULL;
  s->n_slots = 0;
}

/* Kinesis stream names: 1..128 of [a-zA-Z0-9_.-]. */
static bool valid_stream_name(const char *name, size_t len) {
  if (len < 1 || len > 128)
    return false;
  for (size_t i = 0; i < len; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '.' || c == '-'))
      return false;
  }
  return true;
}

static struct stream *stream_get(kp_pipeline *p, const char *name, size_t len) {
  /* Most puts name the stream of the put before: check it first. */
  struct stream *last = p->last_stream;
  if (last && last->name_len == len && !memcmp(last->name, name, len))
    return last;
  for (size_t i = 0; i < p->n_streams; i++)
    if (p->streams[i]->name_len == len && !memcmp(p->streams[i]->name, name, len))
      return p->last_stream = p->streams[i];
  if (p->n_streams == p->cap_streams) {
    size_t cap = p->cap_streams ? p->cap_streams * 2 : 8;
    struct stream **ns = realloc(p->streams, cap * sizeof *ns);
    if (!ns)
      return NULL;
    p->streams = ns;
    p->cap_streams = cap;
  }
  struct stream *s = calloc(1, sizeof *s);
  if (!s || !(s->name = strndup(name, len))) {
    free(s);
    return NULL;
  }
  s->name_len = len;
  s->p = p;
  s->idx = (uint32_t)p->n_streams;
  s->hi.idx = KP_HEAP_NONE;
  kp_backoff_init(&s->bo, 0.2, 10.0);
  s->col = kp_collector_new(p->cfg.collection_max_count, p->cfg.collection_max_size);
  if (!s->col) {
    free(s->name);
    free(s);
    return NULL;
  }
  ev_init(&s->map_retry, NULL);
  s->mh = kp_metrics_stream_get(p->metrics, s->name);
  p->streams[p->n_streams++] = s;
  p->last_stream = s;
  return s;
}

static void pending_push(struct stream *s, kp_record *rec) {
  rec->next = NULL;
  if (s->pending_tail)
    s->pending_tail->next = rec;
  else
    s->pending = rec;
  s->pending_tail = rec;
  s->n_pending++;
}

/* Fails pending records when the stream's shard map cannot be had: at once for a
 * permanent error (unknown stream), at their expiry for a transient one. */
static void fail_pending(struct stream *s, bool all, double now) {
  kp_record *keep = NULL, *keep_tail = NULL, *r = s->pending;
  size_t kept = 0;
  s->pending = s->pending_tail = NULL;
  s->n_pending = 0;
  while (r) {
    kp_record *next = r->next;
    if (all || now >= r->expiry) {
      kp_record_add_attempt(r, ms_between(r->arrival, now), 0, false, s->map_error_code,
                            s->map_error_msg);
      if (!all) {
        kp_record_add_attempt(r, 0, 0, false, "Expired", "Record has reached expiration");
        s->p->counters.user_records_expired++;
        kp_metrics_add(s->mh, KP_M_USER_RECORD_EXPIRED, 1, now);
      }
      finish_record(s->p, r, false, NULL, NULL, NULL);
    } else {
      r->next = NULL;
      if (keep_tail)
        keep_tail->next = r;
      else
        keep = r;
      keep_tail = r;
      kept++;
    }
    r = next;
  }
  s->pending = keep;
  s->pending_tail = keep_tail;
  s->n_pending = kept;
}

static void map_retry_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  struct stream *s = w->data;
  fail_pending(s, false, ev_now(loop));
  if (s->n_pending || s->refresh_wanted)
    start_list_shards(s);
}

/* Installs a freshly fetched map: records buffered under the old one are re-routed,
 * since shard ownership may have changed. */
static void install_map(struct stream *s, kp_shard_map *map) {
  kp_pipeline *p = s->p;
  kp_record *reroute = NULL, *tail = NULL;
  for (size_t i = 0; i < s->n_slots; i++) {
    /* Finished Kinesis records waiting for their shard's rate: back to user records. */
    while (s->slots[i].q) {
      kp_kinesis_record *kr = s->slots[i].q;
      s->slots[i].q = kr->next;
      restore_records(s, kr, NULL);
      if (kr->records) {
        if (tail)
          tail->next = kr->records;
        else
          reroute = kr->records;
        tail = kr->records_tail;
        kr->records = kr->records_tail = NULL;
      }
      kp_kinesis_record_free(kr, false);
    }
    s->slots[i].q_tail = NULL;
    kp_record *r = kp_aggregator_drain(s->slots[i].agg);
    while (r) {
      kp_record *next = r->next;
      kp_record_list_append(&reroute, &tail, r);
      r = next;
    }
  }
  /* Shard metrics handles of the old map are released only after the new map's are
   * taken, so shards in both keep their totals. */
  size_t n_old = s->n_slots;
  kp_metrics_handle **old_mh = n_old ? calloc(n_old, sizeof *old_mh) : NULL;
  for (size_t i = 0; i < n_old; i++) {
    if (old_mh)
      old_mh[i] = s->slots[i].mh;
    else
      kp_metrics_release(s->slots[i].mh);
    s->slots[i].mh = NULL;
  }
  free_slots(s);
  if (s->map)
    kp_shard_map_free(s->map);
  s->map = map;
  size_t n = kp_shard_map_count(map);
  s->slots = calloc(n ? n : 1, sizeof *s->slots);
  kp_aggregator_limits lim = {
      .enabled = p->cfg.aggregation_enabled,
      .max_count = p->cfg.aggregation_max_count,
      .max_size = p->cfg.aggregation_max_size,
      .max_record_size = KP_MAX_RECORD_SIZE,
      .gather = p->cfg.request_encoding == KP_REQUEST_ENCODING_CBOR,
  };
  for (size_t i = 0; i < n; i++) {
    struct slot *sl = &s->slots[i];
    sl->agg = kp_aggregator_new(&lim, (int)i);
    sl->s = s;
    sl->hi.idx = KP_HEAP_NONE;
    sl->lim_hi.idx = KP_HEAP_NONE;
    kp_limiter_init(&sl->lim, (double)p->cfg.rate_limit, now_of(p));
    kp_backoff_init(&sl->bo, 0.1, 2.0);
    sl->mh = kp_metrics_shard_get(s->mh, kp_shard_map_shard_id(map, i));
  }
  for (size_t i = 0; old_mh && i < n_old; i++)
    kp_metrics_release(old_mh[i]);
  free(old_mh);
  s->n_slots = n;
  s->map_gen++;
  s->state = MAP_READY;
  s->map_failures = 0;
  KP_LOG_INFO("stream %s: shard map has %zu open shards", s->name, n);

  /* Re-routed records first (older), then those that waited for the map. */
  kp_record *r = reroute;
  while (r) {
    kp_record *next = r->next;
    r->next = NULL;
    route(s, r);
    r = next;
  }
  r = s->pending;
  s->pending = s->pending_tail = NULL;
  s->n_pending = 0;
  while (r) {
    kp_record *next = r->next;
    r->next = NULL;
    route(s, r);
    r = next;
  }
  if (s->flush_when_mapped || p->shutting_down) {
    s->flush_when_mapped = false;
    flush_stream(s);
  }
  rearm_timer(p);
}

static void map_failed(struct stream *s, const char *code, const char *msg, long status) {
  kp_pipeline *p = s->p;
  snprintf(s->map_error_code, sizeof s->map_error_code, "%s", code);
  snprintf(s->map_error_msg, sizeof s->map_error_msg, "%s", msg ? msg : "");
  if (s->building) {
    kp_shard_map_free(s->building);
    s->building = NULL;
  }
  free(s->next_token);
  s->next_token = NULL;
  s->state = s->map ? MAP_READY : MAP_NONE;
  s->map_failures++;
  KP_LOG_WARNING("stream %s: ListShards failed: %s: %s", s->name, code, msg ? msg : "");
  kp_retry_class cls = kp_retry_classify(code, status);
  if (cls == KP_RETRY_NO)
    fail_pending(s, true, now_of(p));
  double backoff = KP_MAP_RETRY_MIN_S * (double)(1u << (s->map_failures < 6 ? s->map_failures : 6));
  if (backoff > KP_MAP_RETRY_MAX_S)
    backoff = KP_MAP_RETRY_MAX_S;
  ev_timer_stop(p->loop, &s->map_retry);
  ev_timer_init(&s->map_retry, map_retry_cb, backoff, 0);
  s->map_retry.data = s;
  ev_timer_start(p->loop, &s->map_retry);
}

static int sign_and_post(kp_pipeline *p, const char *target, const char *content_type,
                         const uint8_t *body, size_t len, const struct iovec *iov, size_t n_iov,
                         char **headers, size_t max_headers, kp_http_cb cb, void *ud);

struct list_req {
  struct stream *s;
  kp_buf body;
  char *headers[8];
};

static void free_headers(char **h) {
  for (size_t i = 0; h[i]; i++) {
    free(h[i]);
    h[i] = NULL;
  }
}

static void list_shards_cb(const kp_http_response *r, void *ud) {
  struct list_req *lr = ud;
  struct stream *s = lr->s;
  kp_buf_free(&lr->body);
  free_headers(lr->headers);
  free(lr);
  if (r->curl_code != 0 || r->status != 200) {
    kp_api_error e;
    char code[128], msg[512];
    if (r->curl_code != 0) {
      snprintf(code, sizeof code, "%s", "ConnectionError");
      snprintf(msg, sizeof msg, "%s", r->error ? r->error : "transport error");
    } else if (kp_api_error_decode((const char *)r->body, r->body_len, &e, NULL, 0) == 0) {
      snprintf(code, sizeof code, "%s", e.code);
      snprintf(msg, sizeof msg, "%s", e.message);
    } else {
      snprintf(code, sizeof code, "HttpStatus%ld", r->status);
      snprintf(msg, sizeof msg, "ListShards answered HTTP %ld", r->status);
    }
    map_failed(s, code, msg, r->curl_code ? 0 : r->status);
    return;
  }
  kp_list_shards_result res;
  char err[256];
  if (kp_list_shards_decode((const char *)r->body, r->body_len, &res, err, sizeof err) != 0) {
    map_failed(s, "ResponseError", err, 0);
    return;
  }
  for (size_t i = 0; i < res.n; i++) {
    const kp_shard_info *sh = &res.shards[i];
    if (!sh->open)
      continue;
    if (kp_shard_map_add(s->building, sh->shard_id, &sh->starting_hash_key, &sh->ending_hash_key) !=
        0) {
      kp_list_shards_result_free(&res);
      map_failed(s, "ResponseError", "out of memory building the shard map", 0);
      return;
    }
  }
  free(s->next_token);
  s->next_token = res.next_token ? strdup(res.next_token) : NULL;
  kp_list_shards_result_free(&res);
  if (s->next_token) {
    start_list_shards(s); /* next page */
    return;
  }
  if (kp_shard_map_finalize(s->building, err, sizeof err) != 0) {
    map_failed(s, "ShardMapError", err, 0);
    return;
  }
  kp_shard_map *m = s->building;
  s->building = NULL;
  s->refresh_wanted = false;
  install_map(s, m);
}

/* Fetches (or continues fetching) the stream's shards. */
static void start_list_shards(struct stream *s) {
  kp_pipeline *p = s->p;
  if (!s->next_token) {
    if (s->state == MAP_FETCHING)
      return;
    if (s->building)
      kp_shard_map_free(s->building);
    s->building = kp_shard_map_new();
  }
  s->state = MAP_FETCHING;
  struct list_req *lr = calloc(1, sizeof *lr);
  if (!lr || !s->building) {
    free(lr);
    map_failed(s, "InternalError", "out of memory", 0);
    return;
  }
  lr->s = s;
  if (kp_list_shards_encode(&lr->body, s->next_token ? NULL : s->name, s->next_token,
                            KP_LIST_SHARDS_PAGE) != 0) {
    free(lr);
    map_failed(s, "InternalError", "cannot encode ListShards", 0);
    return;
  }
  p->counters.list_shards_calls++;
  if (sign_and_post(p, "Kinesis_20131202.ListShards", KP_KINESIS_CONTENT_TYPE, lr->body.data,
                    lr->body.len, NULL, 0, lr->headers, 8, list_shards_cb, lr) != 0) {
    kp_buf_free(&lr->body);
    free_headers(lr->headers);
    free(lr);
    map_failed(s, "InternalError", "cannot start ListShards request", 0);
  }
}

/* Called when Kinesis put a record on a shard that does not own its hash key: our
 * map is stale (a split or merge happened). */
static void want_refresh(struct stream *s) {
  if (s->refresh_wanted)
    return;
  s->refresh_wanted = true;
  KP_LOG_INFO("stream %s: shard map is stale, refreshing", s->name);
  if (s->state != MAP_FETCHING)
    start_list_shards(s);
}

/* ---- the forward path ---------------------------------------------------- */

/* Every deadline goes through here: the one timer is re-armed whenever a key becomes
 * earlier than the time it is set for, so no buffer ever waits past its deadline. */
static void heap_set(kp_deadline_heap *h, kp_heap_item *it, double key);
static void heap_set_rearm(kp_pipeline *p, kp_deadline_heap *h, kp_heap_item *it, double key) {
  heap_set(h, it, key);
  if (key < p->timer_at)
    rearm_timer(p);
}

static void heap_set(kp_deadline_heap *h, kp_heap_item *it, double key) {
  if (isinf(key)) {
    if (it->idx != KP_HEAP_NONE)
      kp_deadline_heap_remove(h, it);
  } else if (it->idx == KP_HEAP_NONE) {
    kp_deadline_heap_insert(h, it, key);
  } else if (it->key != key) {
    kp_deadline_heap_update(h, it, key);
  }
}

static void send_batch(struct stream *s, kp_batch *batch);

static void collect(struct stream *s, kp_kinesis_record *kr) {
  kp_pipeline *p = s->p;
  kp_batch *full = NULL;
  if (kp_collector_add(s->col, kr, &full) != 0) {
    /* Allocation failure: send it alone rather than lose it. */
    KP_LOG_ERROR("stream %s: collector out of memory", s->name);
  }
  if (full)
    send_batch(s, full);
  heap_set_rearm(p, &p->col_heap, &s->hi, kp_collector_deadline(s->col));
}

static double slot_ready(struct slot *sl, double now) {
  double t = kp_limiter_ready_at(&sl->lim, now, 1, kp_kinesis_record_size(sl->q));
  double b = kp_backoff_until(&sl->bo), sb = kp_backoff_until(&sl->s->bo);
  if (b > t)
    t = b;
  return sb > t ? sb : t;
}

/* Moves the slot's waiting Kinesis records to the collector as far as the shard's rate
 * limit and backoff allow, and schedules the rest. */
static void drain_slot(struct slot *sl, double now) {
  kp_pipeline *p = sl->s->p;
  while (sl->q && !kp_backoff_active(&sl->bo, now) && !kp_backoff_active(&sl->s->bo, now) &&
         kp_limiter_try_take(&sl->lim, now, 1, kp_kinesis_record_size(sl->q))) {
    kp_kinesis_record *kr = sl->q;
    sl->q = kr->next;
    if (!sl->q)
      sl->q_tail = NULL;
    kr->next = NULL;
    collect(sl->s, kr);
  }
  double ready = sl->q ? slot_ready(sl, now) : INFINITY;
  if (ready <= now) {
    /* The gates said "now" but did not let the head go: never re-queue at a time that
     * has come, or timer_cb would spin on it. */
    KP_LOG_DEBUG("slot ready time %.9f not after now %.9f; retrying in 1 ms", ready, now);
    ready = now + 0.001;
  }
  heap_set_rearm(p, &p->lim_heap, &sl->lim_hi, ready);
}

/* A finished Kinesis record enters its shard's rate gate on the way to the collector. */
static void admit(struct stream *s, kp_kinesis_record *kr) {
  struct slot *sl = &s->slots[kr->shard];
  kr->next = NULL;
  if (sl->q_tail)
    sl->q_tail->next = kr;
  else
    sl->q = kr;
  sl->q_tail = kr;
  drain_slot(sl, now_of(s->p));
}

static void route(struct stream *s, kp_record *rec) {
  kp_pipeline *p = s->p;
  if (s->state != MAP_READY || s->refresh_wanted) {
    pending_push(s, rec);
    if (s->state == MAP_NONE && !ev_is_active(&s->map_retry))
      start_list_shards(s);
    return;
  }
  /* A finalized map tiles every hash key, so with one shard the record's key (an MD5)
   * is not needed to route it. */
  int idx = s->n_slots == 1 ? 0 : kp_shard_map_lookup(s->map, kp_record_hash_key(rec));
  if (idx < 0) {
    /* A gap in the map (mid-reshard): wait for a fresh one. */
    pending_push(s, rec);
    want_refresh(s);
    return;
  }
  struct slot *sl = &s->slots[idx];
  kp_kinesis_record *kr = NULL;
  if (kp_aggregator_add(sl->agg, rec, &kr) != 0) {
    finish_record(p, rec, false, NULL, NULL, NULL);
    return;
  }
  if (kr)
    admit(s, kr);
  heap_set_rearm(p, &p->agg_heap, &sl->hi, kp_aggregator_deadline(sl->agg));
  if (p->shutting_down)
    schedule_flush(p);
}

/* While shutting down, records that still arrive are flushed once per loop
 * iteration instead of waiting for their deadlines. */
static void flush_all_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  kp_pipeline *p = w->data;
  for (size_t i = 0; i < p->n_streams; i++)
    flush_stream(p->streams[i]);
  rearm_timer(p);
}

static void schedule_flush(kp_pipeline *p) {
  if (!ev_is_active(&p->flush_timer)) {
    ev_timer_set(&p->flush_timer, 0, 0);
    ev_timer_start(p->loop, &p->flush_timer);
  }
}

static void flush_stream(struct stream *s) {
  kp_pipeline *p = s->p;
  if (s->n_pending)
    s->flush_when_mapped = true;
  for (size_t i = 0; i < s->n_slots; i++) {
    kp_kinesis_record *kr = kp_aggregator_flush(s->slots[i].agg);
    heap_set(&p->agg_heap, &s->slots[i].hi, INFINITY);
    if (kr)
      admit(s, kr);
  }
  kp_batch *b;
  while ((b = kp_collector_flush(s->col)))
    send_batch(s, b);
  heap_set(&p->col_heap, &s->hi, INFINITY);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  kp_pipeline *p = w->data;
  double now = ev_now(loop);
  kp_heap_item *it;
  while ((it = kp_deadline_heap_peek(&p->agg_heap)) && it->key <= now) {
    struct slot *sl = (struct slot *)it; /* hi is the first member */
    kp_deadline_heap_remove(&p->agg_heap, it);
    kp_kinesis_record *kr = kp_aggregator_flush(sl->agg);
    if (kr)
      admit(sl->s, kr);
  }
  while ((it = kp_deadline_heap_peek(&p->lim_heap)) && it->key <= now) {
    kp_deadline_heap_remove(&p->lim_heap, it);
    drain_slot(kp_container_of(it, struct slot, lim_hi), now);
  }
  while ((it = kp_deadline_heap_peek(&p->col_heap)) && it->key <= now) {
    struct stream *s = (struct stream *)it;
    kp_deadline_heap_remove(&p->col_heap, it);
    kp_batch *b = kp_collector_flush(s->col);
    if (b)
      send_batch(s, b);
  }
  rearm_timer(p);
}

static void rearm_timer(kp_pipeline *p) {
  double next = INFINITY;
  kp_heap_item *a = kp_deadline_heap_peek(&p->agg_heap);
  kp_heap_item *c = kp_deadline_heap_peek(&p->col_heap);
  kp_heap_item *l = kp_deadline_heap_peek(&p->lim_heap);
  if (a)
    next = a->key;
  if (c && c->key < next)
    next = c->key;
  if (l && l->key < next)
    next = l->key;
  ev_timer_stop(p->loop, &p->timer);
  p->timer_at = next;
  if (!isinf(next)) {
    double after = next - now_of(p);
    ev_timer_set(&p->timer, after > 0 ? after : 0, 0);
    ev_timer_start(p->loop, &p->timer);
  }
}

/* ---- the request path ---------------------------------------------------- */

static void request_free(struct request *rq) {
  kp_pipeline *p = rq->p;
  if (p->n_spare_bodies < KP_SPARE_BODIES && rq->body.data) {
    rq->body.len = 0;
    p->spare_bodies[p->n_spare_bodies++] = rq->body;
  } else {
    kp_buf_free(&rq->body);
  }
  free_headers(rq->headers);
  free(rq->iov);
  free(rq);
}

/* Tells each shard's limiter and backoff how its records fared: throttling lowers the
 * shard's rate and backs it off, success raises the rate again (AIMD), so producers
 * sharing a stream converge instead of storming. Request-level failures back off the
 * whole stream. */
static void rate_feedback(struct request *rq, const kp_put_records_result *res, const char *code,
                          long status, double now) {
  kp_pipeline *p = rq->p;
  struct stream *s = rq->s;
  if (!res) {
    if (kp_retry_classify(code, status) != KP_RETRY_NO)
      kp_backoff_next(&s->bo, now, &p->rng);
    return;
  }
  kp_backoff_on_success(&s->bo, rq->start);
  if (rq->map_gen != s->map_gen || s->state != MAP_READY)
    return; /* slots were rebuilt since: indices no longer mean the same shards */
  /* Per shard: how many of its Kinesis records this answer throttled, out of how many. */
  size_t i = 0;
  for (kp_kinesis_record *kr = rq->batch->head; kr; kr = kr->next, i++) {
    struct slot *sl = &s->slots[kr->shard];
    const kp_put_record_outcome *o = &res->records[i];
    sl->fb_total++;
    if (o->success)
      kp_limiter_on_success(&sl->lim, now, 1, kp_kinesis_record_size(kr));
    else if (kp_retry_classify(o->error_code, 0) == KP_RETRY_THROTTLED)
      sl->fb_throttled++;
  }
  for (kp_kinesis_record *kr = rq->batch->head; kr; kr = kr->next) {
    struct slot *sl = &s->slots[kr->shard];
    if (!sl->fb_total)
      continue; /* this shard was handled at its first record */
    if (sl->fb_throttled) {
      kp_limiter_on_throttled_frac(&sl->lim, now, rq->start,
                                   (double)sl->fb_throttled / (double)sl->fb_total);
      /* Waiting out a backoff is for a shard that refused everything; a partial refusal
       * is answered by the lower rate alone. */
      if (sl->fb_throttled == sl->fb_total)
        kp_backoff_next(&sl->bo, now, &p->rng);
    }
    sl->fb_total = sl->fb_throttled = 0;
  }
  /* Successes reset backoffs only after every throttle of the response counted. */
  i = 0;
  for (kp_kinesis_record *kr = rq->batch->head; kr; kr = kr->next, i++)
    if (res->records[i].success)
      kp_backoff_on_success(&s->slots[kr->shard].bo, rq->start);
  for (kp_kinesis_record *kr = rq->batch->head; kr; kr = kr->next)
    drain_slot(&s->slots[kr->shard], now);
}

static void put_records_cb(const kp_http_response *r, void *ud) {
  struct request *rq = ud;
  kp_pipeline *p = rq->p;
  struct stream *s = rq->s;
  double now = now_of(p);
  kp_batch *batch = rq->batch;
  p->requests_in_flight--;
  kp_stat_add(&p->counters.request_ms, (now - rq->start) * 1000.0);
  kp_metrics_add(s->mh, KP_M_REQUEST_TIME, (now - rq->start) * 1000.0, now);

  char code[128] = "", msg[512] = "";
  long status = r->curl_code ? 0 : r->status;
  kp_put_records_result res;
  bool have_res = false;
  if (r->curl_code != 0) {
    snprintf(code, sizeof code, "%s", r->curl_code == 28 ? "Timeout" : "ConnectionError");
    snprintf(msg, sizeof msg, "%s", r->error ? r->error : "transport error");
  } else if (r->status != 200) {
    kp_api_error e;
    if (kp_put_records_codec_of(r->content_type)->decode_error(r->body, r->body_len, &e, NULL, 0) ==
        0) {
      snprintf(code, sizeof code, "%s", e.code);
      snprintf(msg, sizeof msg, "%s", e.message);
    } else {
      snprintf(code, sizeof code, "HttpStatus%ld", r->status);
      snprintf(msg, sizeof msg, "PutRecords answered HTTP %ld", r->status);
    }
  } else {
    char err[256];
    if (kp_put_records_codec_of(r->content_type)
            ->decode(r->body, r->body_len, batch->count, &res, err, sizeof err) == 0)
      have_res = true;
    else {
      snprintf(code, sizeof code, "ResponseError");
      snprintf(msg, sizeof msg, "%s", err);
      status = 0;
    }
  }
  if (!have_res)
    p->counters.requests_failed++;
  rate_feedback(rq, have_res ? &res : NULL, code, status, now);

  size_t i = 0;
  kp_kinesis_record *kr = batch->head;
  while (kr) {
    kp_kinesis_record *next_kr = kr->next;
    const kp_put_record_outcome *o = have_res ? &res.records[i] : NULL;
    bool wrong_shard = false;
    /* Every user record must sit on a shard that owns its hash key, or consumers (KCL)
     * drop the whole aggregate: retry them all if any is outside. Records routed with
     * the current map to the shard that answered are inside by construction. */
    bool as_predicted = o && o->success && rq->map_gen == s->map_gen && kr->shard >= 0 &&
                        (size_t)kr->shard < s->n_slots &&
                        !strcmp(kp_shard_map_shard_id(s->map, (size_t)kr->shard), o->shard_id);
    /* Anything but the plain success needs the records' keys (and maybe data) again. */
    if (!(o && o->success && as_predicted))
      restore_records(s, kr, rq);
    kp_record *rec = kr->records;
    kr->records = kr->records_tail = NULL;
    if (o && o->success && s->map && !as_predicted) {
      for (kp_record *u = rec; u; u = u->next)
        if (u->shed || !kp_shard_map_owns(s->map, o->shard_id, kp_record_hash_key(u))) {
          wrong_shard = true;
          break;
        }
      if (wrong_shard) {
        p->counters.wrong_shard++;
        want_refresh(s);
      }
    }
    kp_metrics_handle *sh =
        rq->map_gen == s->map_gen && kr->shard >= 0 && (size_t)kr->shard < s->n_slots
            ? s->slots[kr->shard].mh
            : s->mh;
    if (o && o->success && !wrong_shard) {
      p->counters.kinesis_records_put++;
      kp_metrics_add(sh, KP_M_KINESIS_RECORDS_PUT, 1, now);
      kp_metrics_add(sh, KP_M_KINESIS_RECORDS_DATA_PUT, (double)kr->data_len, now);
    }
    /* Buffering time (arrival to first send), measured in the one pass that touches
     * every (by now cold) record; the next one is fetched while this one is handled. */
    double bsum = 0, bmin = INFINITY, bmax = 0;
    uint64_t bn = 0;
    while (rec) {
      kp_record *next = rec->next;
      if (next)
        __builtin_prefetch(next, 1);
      rec->next = NULL;
      if (rec->n_attempts == 0) {
        double ms = (rq->start - rec->arrival) * 1000.0;
        bsum += ms;
        bmin = ms < bmin ? ms : bmin;
        bmax = ms > bmax ? ms : bmax;
        bn++;
      }
      if (o && o->success && !wrong_shard) {
        kp_record_add_attempt(rec, ms_between(rec->last_attempt_end, rq->start),
                              ms_between(rq->start, now), true, NULL, NULL);
        if (!(p->cfg.result_batches && rec->n_attempts == 1 && batch_add(p, rec)))
          finish_record(p, rec, true, o->shard_id, o->sequence_number, sh);
      } else if (o && o->success) {
        char m[160];
        snprintf(m, sizeof m, "landed on %s, which does not own its hash key", o->shard_id);
        retry_or_fail(s, rec, rq->start, now, "WrongShard", m, 0, sh);
      } else if (o) {
        retry_or_fail(s, rec, rq->start, now, o->error_code ? o->error_code : "UnknownError",
                      o->error_message ? o->error_message : "", 0, sh);
      } else {
        retry_or_fail(s, rec, rq->start, now, code, msg, status, sh);
      }
      rec = next;
    }
    if (bn) {
      kp_metrics_add_n(sh, KP_M_BUFFERING_TIME, bn, bsum, bmin, bmax, now);
      p->counters.buffering_ms.count += bn;
      p->counters.buffering_ms.sum += bsum;
    }
    if (o && o->success)
      batch_send(p, o->shard_id, o->sequence_number, ms_between(rq->start, now), sh);
    kp_kinesis_record_free(kr, false);
    kr = next_kr;
    i++;
  }
  batch->head = batch->tail = NULL;
  batch->count = 0;
  kp_batch_free(batch, false);
  if (have_res)
    kp_put_records_result_free(&res);
  request_free(rq);
  rearm_timer(p);
  if (p->shutting_down)
    check_drained(p);
}

static void send_batch(struct stream *s, kp_batch *batch) {
  kp_pipeline *p = s->p;
  double now = now_of(p);
  if (batch->count > p->cap_entries) {
    size_t cap = batch->count < 500 ? 500 : batch->count;
    kp_put_entry *e = realloc(p->entries, cap * sizeof *e);
    if (!e)
      goto oom;
    p->entries = e;
    p->cap_entries = cap;
  }
  struct request *rq = calloc(1, sizeof *rq);
  if (!rq)
    goto oom;
  rq->p = p;
  rq->s = s;
  rq->batch = batch;
  if (p->n_spare_bodies)
    rq->body = p->spare_bodies[--p->n_spare_bodies];
  rq->start = now;
  rq->map_gen = s->map_gen;
  rq->codec = p->cfg.request_encoding == KP_REQUEST_ENCODING_CBOR ? &kp_put_records_cbor
                                                                  : &kp_put_records_json;
  kp_kinesis_records_seal(batch->head);
  size_t i = 0, bytes = 0, users = 0, pieces = 0;
  for (kp_kinesis_record *kr = batch->head; kr; kr = kr->next, i++) {
    /* Only a gathered body takes gathered data (the aggregators make it only then). */
    if (!rq->codec->encode_iov && kp_kinesis_record_flatten(kr) != 0) {
      kp_buf_free(&rq->body);
      free(rq);
      goto oom;
    }
    pieces += kr->iov ? kr->n_iov : 1;
    p->entries[i] = (kp_put_entry){
        .data = kr->data,
        .data_iov = kr->iov,
        .data_n_iov = kr->n_iov,
        .data_len = kr->data_len,
        .partition_key = kr->partition_key,
        .pk_len = kr->partition_key_len,
        .explicit_hash_key = kr->explicit_hash_key[0] ? kr->explicit_hash_key : NULL,
        .ehk_len = strlen(kr->explicit_hash_key),
    };
    bytes += kp_kinesis_record_size(kr);
    kp_stat_add(&p->counters.user_per_kinesis, kr->count);
    kp_metrics_handle *sh =
        kr->shard >= 0 && (size_t)kr->shard < s->n_slots ? s->slots[kr->shard].mh : s->mh;
    kp_metrics_add(sh, KP_M_USER_RECORDS_PER_KINESIS_RECORD, kr->count, now);
    users += kr->count;
  }
  kp_metrics_add(s->mh, KP_M_KINESIS_RECORDS_PER_PUT_RECORDS_REQUEST, (double)i, now);
  kp_metrics_add(s->mh, KP_M_USER_RECORDS_PER_PUT_RECORDS_REQUEST, (double)users, now);
  const kp_put_records_codec *codec = rq->codec;
  int erc;
  if (codec->encode_iov) {
    /* Gathered: the Kinesis records' data goes to curl from where it is (aggregates,
     * user records, the shared data file), not copied into a body first; each keeps its
     * data until its request is answered, for a retry. */
    rq->iov = malloc((i + pieces + 1) * sizeof *rq->iov);
    erc = rq->iov ? codec->encode_iov(&rq->body, s->name, strlen(s->name), p->entries, i, rq->iov,
                                      &rq->n_iov)
                  : -ENOMEM;
  } else {
    erc = codec->encode(&rq->body, s->name, strlen(s->name), p->entries, i);
  }
  if (erc != 0) {
    kp_buf_free(&rq->body);
    free(rq->iov);
    free(rq);
    goto oom;
  }
  if (!rq->iov) {
    i = 0;
    for (kp_kinesis_record *kr = batch->head; kr; kr = kr->next, i++) {
      kr->body_off = p->entries[i].data_off; /* a retry finds its data there */
      kp_kinesis_record_drop_data(kr);
    }
  }
  p->counters.requests_sent++;
  p->counters.kinesis_records_sent += i;
  p->counters.kinesis_bytes_sent += bytes;
  kp_stat_add(&p->counters.kinesis_per_request, (double)i);
  p->requests_in_flight++;
  if (sign_and_post(p, "Kinesis_20131202.PutRecords", codec->content_type, rq->body.data,
                    rq->body.len, rq->iov, rq->n_iov, rq->headers, 8, put_records_cb, rq) != 0) {
    /* Deliver the failure through the normal path so every record is answered. */
    kp_http_response fake = {.status = 0, .curl_code = 1, .error = "cannot start request"};
    put_records_cb(&fake, rq);
  }
  return;
oom:
  KP_LOG_ERROR("stream %s: out of memory sending a batch; failing its records", s->name);
  for (kp_kinesis_record *kr = batch->head; kr; kr = kr->next) {
    restore_records(s, kr, NULL);
    kp_record *rec = kr->records;
    kr->records = kr->records_tail = NULL;
    while (rec) {
      kp_record *next = rec->next;
      rec->next = NULL;
      retry_or_fail(s, rec, now, now, "InternalError", "out of memory", 0, NULL);
      rec = next;
    }
  }
  kp_batch_free(batch, false);
}

/* ---- messages in --------------------------------------------------------- */

/* One PutRecord or PutRecordRef, from either decoder: views of its fields (ehk.p NULL
 * when absent). */
static void on_put_record(kp_pipeline *p, const kp_fast_put_record *in) {
  char err[256];
  kp_fast_str stream = in->stream, pk = in->partition_key, ehk = in->explicit_hash_key;
  uint64_t id = in->id;
  if (!valid_stream_name(stream.p, stream.len)) {
    reject(p, id, "InvalidArgument",
           stream.len ? "stream name must be 1 to 128 characters of a-z, A-Z, 0-9, _ . -"
                      : "stream name is empty");
    return;
  }
  const void *data = in->data.p;
  if (in->by_ref && !(data = kp_shared_data_at(&p->shared, in->data_offset, in->data.len))) {
    if (!p->shared.base)
      snprintf(err, sizeof err, "PutRecordRef without a shared data file");
    else
      snprintf(err, sizeof err,
               "PutRecordRef data (%zu bytes at offset %llu) is outside the %zu-byte shared "
               "data file",
               in->data.len, (unsigned long long)in->data_offset, p->shared.size);
    reject(p, id, "InvalidArgument", err);
    return;
  }
  struct stream *s = stream_get(p, stream.p, stream.len);
  if (!s) {
    reject(p, id, "InternalError", "out of memory");
    return;
  }
  double now = now_of(p);
  kp_record *rec = (in->by_ref ? kp_record_new_shared : kp_record_new)(
      id, s->idx, pk.p, pk.len, ehk.p, ehk.len, data, in->data.len, KP_MAX_RECORD_SIZE, now,
      p->cfg.record_max_buffered_time / 1000.0, p->cfg.record_ttl / 1000.0, err, sizeof err);
  if (!rec) {
    reject(p, id, "InvalidArgument", err);
    return;
  }
  rec->last_attempt_end = now;
  p->outstanding++;
  s->outstanding++;
  kp_metrics_add(s->mh, KP_M_USER_RECORDS_RECEIVED, 1, now);
  if (!ev_is_active(&p->pending_timer))
    ev_timer_again(p->loop, &p->pending_timer);
  p->buffered_bytes += rec->data_len;
  if (p->buffered_bytes > p->cfg.max_buffered_bytes && !p->was_full) {
    p->was_full = true;
    KP_LOG_WARNING("holding %zu bytes of user data, over MaxBufferedBytes (%llu): pausing input",
                   p->buffered_bytes, (unsigned long long)p->cfg.max_buffered_bytes);
  }
  p->counters.user_records_received++;
  p->counters.user_bytes_received += rec->data_len;
  route(s, rec);
}

/* The fields PutRecord and PutRecordRef share, from protobuf-c's unpacked strings. */
static kp_fast_put_record put_of_pb(uint64_t id, const char *stream, const char *pk,
                                    const char *ehk) {
  stream = stream ? stream : "";
  pk = pk ? pk : "";
  return (kp_fast_put_record){.id = id,
                              .stream = {stream, strlen(stream)},
                              .partition_key = {pk, strlen(pk)},
                              .explicit_hash_key = {ehk, ehk ? strlen(ehk) : 0}};
}

void kp_pipeline_on_message(kp_pipeline *p, const uint8_t *buf, size_t len) {
  kp_fast_put_record fpr;
  if (kp_fast_decode_put_record(buf, len, &fpr) == KP_FAST_OK) {
    on_put_record(p, &fpr);
    return;
  }
  Kpl__Message *m = kpl__message__unpack(NULL, len, buf);
  if (!m) {
    KP_LOG_ERROR("dropping a malformed message (%zu bytes): not a valid Message", len);
    return;
  }
  switch (m->actual_message_case) {
  case KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD: {
    const Kpl__PutRecord *pr = m->put_record;
    kp_fast_put_record in =
        put_of_pb(m->id, pr->stream_name, pr->partition_key, pr->explicit_hash_key);
    in.data = (kp_fast_str){(const char *)pr->data.data, pr->data.len};
    on_put_record(p, &in);
    break;
  }
  case KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD_REF: {
    const Kpl__PutRecordRef *pr = m->put_record_ref;
    kp_fast_put_record in =
        put_of_pb(m->id, pr->stream_name, pr->partition_key, pr->explicit_hash_key);
    in.data = (kp_fast_str){NULL, pr->data_length};
    in.by_ref = true;
    in.data_offset = pr->data_offset;
    on_put_record(p, &in);
    break;
  }
  case KPL__MESSAGE__ACTUAL_MESSAGE_FLUSH:
    if (m->flush->stream_name && m->flush->stream_name[0]) {
      for (size_t i = 0; i < p->n_streams; i++)
        if (!strcmp(p->streams[i]->name, m->flush->stream_name))
          flush_stream(p->streams[i]);
    } else {
      for (size_t i = 0; i < p->n_streams; i++)
        flush_stream(p->streams[i]);
    }
    rearm_timer(p);
    break;
  case KPL__MESSAGE__ACTUAL_MESSAGE_SET_CREDENTIALS: {
    const Kpl__SetCredentials *sc = m->set_credentials;
    if (sc->credentials)
      kp_pipeline_set_credentials(p, sc->has_for_metrics && sc->for_metrics, sc->credentials->akid,
                                  sc->credentials->secret_key, sc->credentials->token);
    break;
  }
  case KPL__MESSAGE__ACTUAL_MESSAGE_METRICS_REQUEST: {
    const Kpl__MetricsRequest *mq = m->metrics_request;
    Kpl__Message out = KPL__MESSAGE__INIT;
    Kpl__MetricsResponse mr;
    /* Answer even if the query fails: a blocking getMetrics() caller waits for it. */
    if (kp_metrics_fill_response(p->metrics, mq->name && mq->name[0] ? mq->name : NULL,
                                 mq->has_seconds ? mq->seconds : 0, now_of(p), &mr) != 0)
      kpl__metrics_response__init(&mr);
    out.id = ++p->next_id;
    out.has_source_id = 1;
    out.source_id = m->id;
    out.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_METRICS_RESPONSE;
    out.metrics_response = &mr;
    send_message(p, &out);
    kp_metrics_response_free(&mr);
    break;
  }
  case KPL__MESSAGE__ACTUAL_MESSAGE_CONFIGURATION:
    KP_LOG_WARNING("ignoring a Configuration message after start-up (id %llu)",
                   (unsigned long long)m->id);
    break;
  default:
    KP_LOG_WARNING("ignoring message %llu of unexpected type %d", (unsigned long long)m->id,
                   (int)m->actual_message_case);
    break;
  }
  kpl__message__free_unpacked(m, NULL);
}

/* ---- signing and sending ------------------------------------------------- */

/* Signs and posts a body given either whole (body, len) or as a gather list (iov set). */
static int sign_and_post(kp_pipeline *p, const char *target, const char *content_type,
                         const uint8_t *body, size_t len, const struct iovec *iov, size_t n_iov,
                         char **headers, size_t max_headers, kp_http_cb cb, void *ud) {
  size_t n = 0;
  char tgt[128], ct[64];
  snprintf(tgt, sizeof tgt, "X-Amz-Target: %s", target);
  snprintf(ct, sizeof ct, "Content-Type: %s", content_type);
  headers[n++] = strdup(ct);
  headers[n++] = strdup(tgt);
  kp_sigv4_header sh[2] = {{"content-type", content_type}, {"x-amz-target", target}};
  kp_sigv4_request req = {.method = "POST",
                          .host = p->host_header,
                          .path = "/",
                          .headers = sh,
                          .n_headers = 2,
                          .payload = body,
                          .payload_len = len};
  kp_sigv4_result sig;
  char err[128], payload_hash[KP_SIGV4_SHA256_HEX_LEN];
  if (iov) {
    if (kp_sigv4_sha256_hex_iov(iov, n_iov, payload_hash) != 0)
      return -1;
    req.payload_sha256_hex = payload_hash;
  }
  if (!kp_sigv4_signer_has_credentials(p->signer)) {
    /* Nothing to sign with yet: send unsigned rather than hold records forever; a real
     * endpoint answers with a permanent auth error that fails them visibly. */
  } else if (kp_sigv4_sign(p->signer, &req, p->region, "kinesis", time(NULL), &sig, err,
                           sizeof err) == 0) {
    char h[KP_SIGV4_AUTH_MAX + 32];
    snprintf(h, sizeof h, "X-Amz-Date: %s", sig.amz_date);
    headers[n++] = strdup(h);
    snprintf(h, sizeof h, "Authorization: %s", sig.authorization);
    headers[n++] = strdup(h);
    if (sig.security_token && n + 1 < max_headers) {
      char *t = malloc(strlen(sig.security_token) + 32);
      if (t)
        sprintf(t, "X-Amz-Security-Token: %s", sig.security_token);
      headers[n++] = t;
    }
    kp_sigv4_result_free(&sig);
  } else {
    kp_sigv4_result_free(&sig);
    KP_LOG_ERROR("cannot sign request: %s", err);
  }
  headers[n] = NULL;
  for (size_t i = 0; i < n; i++)
    if (!headers[i])
      return -1;
  if (iov)
    return kp_http_post_iov(p->http, p->ep.url, (const char *const *)headers, iov, n_iov, cb, ud);
  return kp_http_post(p->http, p->ep.url, (const char *const *)headers, body, len, cb, ud);
}

void kp_pipeline_set_credentials(kp_pipeline *p, int for_metrics, const char *akid,
                                 const char *secret, const char *token) {
  kp_sigv4_signer *sg = for_metrics ? p->cw_signer : p->signer;
  if (!sg)
    return;
  if (kp_sigv4_signer_set_credentials(sg, akid, secret, token) != 0) {
    KP_LOG_ERROR("rejected %s credentials: empty or malformed key id or secret",
                 for_metrics ? "CloudWatch" : "Kinesis");
    return;
  }
  /* The KPL wrapper resends credentials every 5 s: log changes only, keyed by a hash
   * of all three parts (the secret itself is not kept here). */
  uint64_t h = 1469598103934665603ull;
  const char *parts[3] = {akid, secret, token ? token : ""};
  for (int i = 0; i < 3; i++)
    for (const char *c = parts[i]; *c; c++)
      h = (h ^ (uint8_t)*c) * 1099511628211ull;
  uint64_t *last = for_metrics ? &p->cw_creds_hash : &p->creds_hash;
  if (*last == h)
    return;
  *last = h;
  /* Only the key id's last four characters, as the AWS CLI shows them: enough to tell
   * a rotation happened, nothing to sign with. */
  size_t n = akid ? strlen(akid) : 0;
  KP_LOG_INFO("%s credentials set (key id ****%s%s)", for_metrics ? "CloudWatch" : "Kinesis",
              n >= 4 ? akid + n - 4 : "", token && token[0] ? ", with session token" : "");
}

/* ---- metrics ------------------------------------------------------------- */

/* UserRecordsPending is a sample, taken each second while records are outstanding;
 * the timer stops when the daemon is idle so idling costs no wake-ups. */
static void pending_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  kp_pipeline *p = w->data;
  double now = ev_now(loop);
  for (size_t i = 0; i < p->n_streams; i++)
    kp_metrics_add(p->streams[i]->mh, KP_M_USER_RECORDS_PENDING, (double)p->streams[i]->outstanding,
                   now);
  if (!p->outstanding) {
    ev_timer_stop(loop, w);
    while (p->n_spare_bodies)
      kp_buf_free(&p->spare_bodies[--p->n_spare_bodies]);
    /* Idle now: give back what the busy spell kept (main.c turns glibc's own trimming
     * off, which would fault the same pages in again for every large buffer). */
    malloc_trim(0);
  }
}

struct cw_req {
  kp_pipeline *p;
  kp_buf body;
  char *headers[6];
};

static void cw_done(const kp_http_response *r, void *ud) {
  struct cw_req *cr = ud;
  kp_pipeline *p = cr->p;
  if (r->curl_code != 0 || r->status != 200) {
    /* Logged at most once per upload period: without CloudWatch (emulators) every
     * upload fails the same way. The data is dropped, as the KPL does. */
    double now = now_of(p);
    if (now - p->cw_last_error_log >= p->cfg.metrics_upload_delay / 1000.0) {
      p->cw_last_error_log = now;
      kp_cw_error e;
      if (r->curl_code)
        KP_LOG_WARNING("CloudWatch upload failed: %s", r->error ? r->error : "transport error");
      else if (kp_cw_error_decode((const char *)r->body, r->body_len, &e, NULL, 0) == 0)
        KP_LOG_WARNING("CloudWatch upload failed: HTTP %ld %s: %s", r->status, e.code, e.message);
      else
        KP_LOG_WARNING("CloudWatch upload failed: HTTP %ld", r->status);
    }
  }
  kp_buf_free(&cr->body);
  free_headers(cr->headers);
  free(cr);
}

static void cw_upload_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  kp_pipeline *p = w->data;
  if (!kp_sigv4_signer_has_credentials(p->cw_signer))
    return; /* the seconds stay queued in the metrics ring until credentials come */
  char err[256];
  kp_cw_request_set rs;
  if (kp_cw_request_set_init(&rs, p->cfg.metrics_namespace, NULL, err, sizeof err) != 0) {
    KP_LOG_ERROR("metrics upload disabled: %s", err);
    ev_timer_stop(loop, w);
    return;
  }
  if (kp_cw_encode_metrics(&rs, p->metrics, ev_now(loop)) == 0) {
    for (size_t i = 0; i < rs.n_bodies; i++) {
      struct cw_req *cr = calloc(1, sizeof *cr);
      if (!cr)
        break;
      cr->p = p;
      cr->body = rs.bodies[i]; /* moved: outlives the request set */
      rs.bodies[i] = (kp_buf)KP_BUF_INIT;
      kp_sigv4_header sh[1] = {{"content-type", KP_CW_CONTENT_TYPE}};
      kp_sigv4_request req = {.method = "POST",
                              .host = p->cw_host,
                              .path = "/",
                              .headers = sh,
                              .n_headers = 1,
                              .payload = cr->body.data,
                              .payload_len = cr->body.len};
      kp_sigv4_result sig;
      size_t n = 0;
      cr->headers[n++] = strdup("Content-Type: " KP_CW_CONTENT_TYPE);
      if (kp_sigv4_sign(p->cw_signer, &req, p->region, KP_CW_SERVICE, time(NULL), &sig, err,
                        sizeof err) == 0) {
        char h[KP_SIGV4_AUTH_MAX + 32];
        snprintf(h, sizeof h, "X-Amz-Date: %s", sig.amz_date);
        cr->headers[n++] = strdup(h);
        snprintf(h, sizeof h, "Authorization: %s", sig.authorization);
        cr->headers[n++] = strdup(h);
        if (sig.security_token) {
          char *t = malloc(strlen(sig.security_token) + 32);
          if (t)
            sprintf(t, "X-Amz-Security-Token: %s", sig.security_token);
          cr->headers[n++] = t;
        }
      }
      kp_sigv4_result_free(&sig);
      cr->headers[n] = NULL;
      bool ok = true;
      for (size_t j = 0; j < n; j++)
        ok = ok && cr->headers[j];
      if (!ok || kp_http_post(p->http, p->cw_ep.url, (const char *const *)cr->headers,
                              cr->body.data, cr->body.len, cw_done, cr) != 0) {
        kp_buf_free(&cr->body);
        free_headers(cr->headers);
        free(cr);
      }
    }
  }
  kp_cw_request_set_free(&rs);
}

/* ---- lifecycle ----------------------------------------------------------- */

kp_pipeline *kp_pipeline_new(struct ev_loop *loop, const kp_config *cfg, kp_pipeline_send_fn send,
                             void *ud, char *errstr, size_t errstr_size) {
  kp_pipeline *p = calloc(1, sizeof *p);
  if (!p) {
    snprintf(errstr, errstr_size, "out of memory");
    return NULL;
  }
  p->loop = loop;
  p->send = send;
  p->send_ud = ud;
  if (kp_config_copy(&p->cfg, cfg) != 0) {
    snprintf(errstr, errstr_size, "out of memory");
    free(p);
    return NULL;
  }
  if (kp_config_endpoint(&p->cfg, KP_SERVICE_KINESIS, &p->ep, errstr, errstr_size) != 0)
    goto fail;
  kp_config_region(&p->cfg, p->region, sizeof p->region);
  bool default_port = (p->ep.tls && p->ep.port == 443) || (!p->ep.tls && p->ep.port == 80);
  if (default_port)
    snprintf(p->host_header, sizeof p->host_header, "%s", p->ep.host);
  else
    snprintf(p->host_header, sizeof p->host_header, "%s:%u", p->ep.host, (unsigned)p->ep.port);

  kp_http_opts ho = {0};
  ho.ca_file = getenv("CA_FILE");
  ho.ca_dir = getenv("CA_DIR");
  ho.verify_peer = p->cfg.verify_certificate;
  ho.connect_timeout_ms = (long)p->cfg.connect_timeout;
  ho.request_timeout_ms = (long)p->cfg.request_timeout;
  ho.max_connections = (long)p->cfg.max_connections;
  ho.proxy_host = p->cfg.proxy_host[0] ? p->cfg.proxy_host : NULL;
  ho.proxy_port = (long)p->cfg.proxy_port;
  ho.proxy_user = p->cfg.proxy_user_name[0] ? p->cfg.proxy_user_name : NULL;
  ho.proxy_password = p->cfg.proxy_password[0] ? p->cfg.proxy_password : NULL;
  p->http = kp_http_new(loop, &ho, errstr, errstr_size);
  if (!p->http)
    goto fail;
  p->signer = kp_sigv4_signer_new();
  kp_deadline_heap_init(&p->agg_heap);
  kp_deadline_heap_init(&p->col_heap);
  kp_deadline_heap_init(&p->lim_heap);
  p->rng = kp_rng_seed((uint64_t)getpid() ^ (uint64_t)time(NULL));
  if (!p->signer) {
    snprintf(errstr, errstr_size, "out of memory");
    goto fail;
  }
  ev_timer_init(&p->timer, timer_cb, 0, 0);
  p->timer.data = p;
  p->timer_at = INFINITY;
  ev_init(&p->shutdown_timer, NULL);
  ev_timer_init(&p->flush_timer, flush_all_cb, 0, 0);
  p->flush_timer.data = p;

  p->metrics = kp_metrics_new(&p->cfg, ev_now(loop)); /* NULL is tolerated everywhere */
  ev_init(&p->pending_timer, pending_cb);
  p->pending_timer.repeat = 1.0;
  p->pending_timer.data = p;
  ev_init(&p->cw_timer, cw_upload_cb);
  p->cw_timer.data = p;
  if (p->cfg.metrics_level != KP_METRICS_LEVEL_NONE) {
    char cw_err[256];
    if (kp_config_endpoint(&p->cfg, KP_SERVICE_CLOUDWATCH, &p->cw_ep, cw_err, sizeof cw_err) == 0) {
      bool dp = (p->cw_ep.tls && p->cw_ep.port == 443) || (!p->cw_ep.tls && p->cw_ep.port == 80);
      if (dp)
        snprintf(p->cw_host, sizeof p->cw_host, "%s", p->cw_ep.host);
      else
        snprintf(p->cw_host, sizeof p->cw_host, "%s:%u", p->cw_ep.host, (unsigned)p->cw_ep.port);
      p->cw_signer = kp_sigv4_signer_new();
      p->cw_enabled = p->cw_signer != NULL;
      double every = p->cfg.metrics_upload_delay / 1000.0;
      ev_timer_set(&p->cw_timer, every, every);
      if (p->cw_enabled)
        ev_timer_start(loop, &p->cw_timer);
    } else {
      KP_LOG_INFO("metrics are kept but not uploaded: %s", cw_err);
    }
  }
  return p;
fail:
  kp_pipeline_free(p);
  return NULL;
}

static void drop_records(kp_record *r) {
  while (r) {
    kp_record *next = r->next;
    kp_record_free(r);
    r = next;
  }
}

void kp_pipeline_free(kp_pipeline *p) {
  if (!p)
    return;
  if (p->http)
    kp_http_free(p->http); /* in-flight callbacks run now and free their requests */
  for (size_t i = 0; i < p->n_streams; i++) {
    struct stream *s = p->streams[i];
    ev_timer_stop(p->loop, &s->map_retry);
    free_slots(s);
    kp_batch *b;
    while ((b = kp_collector_flush(s->col)))
      kp_batch_free(b, true);
    kp_collector_free(s->col);
    drop_records(s->pending);
    if (s->map)
      kp_shard_map_free(s->map);
    if (s->building)
      kp_shard_map_free(s->building);
    free(s->next_token);
    free(s->name);
    free(s);
  }
  free(p->streams);
  if (p->loop) {
    ev_timer_stop(p->loop, &p->timer);
    ev_timer_stop(p->loop, &p->shutdown_timer);
    ev_timer_stop(p->loop, &p->flush_timer);
    ev_timer_stop(p->loop, &p->pending_timer);
    ev_timer_stop(p->loop, &p->cw_timer);
  }
  kp_metrics_free(p->metrics); /* frees every handle the streams and slots held */
  if (p->cw_signer)
    kp_sigv4_signer_free(p->cw_signer);
  kp_deadline_heap_destroy(&p->agg_heap);
  kp_deadline_heap_destroy(&p->col_heap);
  kp_deadline_heap_destroy(&p->lim_heap);
  if (p->signer)
    kp_sigv4_signer_free(p->signer);
  kp_buf_free(&p->out);
  free(p->rb.recs);
  free(p->rb.ids);
  free(p->rb.delays);
  free(p->entries);
  kp_config_free(&p->cfg);
  while (p->n_spare_bodies)
    kp_buf_free(&p->spare_bodies[--p->n_spare_bodies]);
  free(p);
}

static void check_drained(kp_pipeline *p) {
  if (!p->drained || p->outstanding || p->requests_in_flight)
    return;
  kp_pipeline_drained_fn fn = p->drained;
  p->drained = NULL;
  ev_timer_stop(p->loop, &p->shutdown_timer);
  fn(p->drained_ud);
}

static void expire_list(kp_pipeline *p, kp_record *r, double now) {
  while (r) {
    kp_record *next = r->next;
    r->next = NULL;
    kp_record_add_attempt(r, ms_between(r->last_attempt_end, now), 0, false, "Expired",
                          "Record has reached expiration (daemon shutting down)");
    p->counters.user_records_expired++;
    kp_metrics_add(p->streams[r->stream]->mh, KP_M_USER_RECORD_EXPIRED, 1, now);
    finish_record(p, r, false, NULL, NULL, NULL);
    r = next;
  }
}

static void expire_kinesis_records(kp_pipeline *p, kp_kinesis_record *kr, double now) {
  while (kr) {
    kp_kinesis_record *next = kr->next;
    kp_record *r = kr->records;
    kr->records = kr->records_tail = NULL;
    kp_kinesis_record_free(kr, false);
    expire_list(p, r, now);
    kr = next;
  }
}

/* RecordTtl has passed since shutdown began: whatever is still held (waiting for a
 * map, for a shard's rate, in an aggregate or a batch) fails as expired, so every
 * record still gets its one result and the daemon can exit. Requests in flight finish
 * on their own (bounded by RequestTimeout). */
static void shutdown_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  kp_pipeline *p = w->data;
  double now = ev_now(loop);
  KP_LOG_WARNING("shutdown: RecordTtl passed with %zu records outstanding; failing them",
                 p->outstanding);
  for (size_t i = 0; i < p->n_streams; i++) {
    struct stream *s = p->streams[i];
    kp_record *pend = s->pending;
    s->pending = s->pending_tail = NULL;
    s->n_pending = 0;
    expire_list(p, pend, now);
    for (size_t j = 0; j < s->n_slots; j++) {
      struct slot *sl = &s->slots[j];
      kp_kinesis_record *q = sl->q;
      sl->q = sl->q_tail = NULL;
      heap_set(&p->lim_heap, &sl->lim_hi, INFINITY);
      heap_set(&p->agg_heap, &sl->hi, INFINITY);
      expire_kinesis_records(p, q, now);
      expire_list(p, kp_aggregator_drain(sl->agg), now);
    }
    kp_batch *b;
    while ((b = kp_collector_flush(s->col))) {
      kp_kinesis_record *head = b->head;
      b->head = b->tail = NULL;
      b->count = 0;
      kp_batch_free(b, false);
      expire_kinesis_records(p, head, now);
    }
    heap_set(&p->col_heap, &s->hi, INFINITY);
  }
  rearm_timer(p);
  check_drained(p);
}

void kp_pipeline_shutdown(kp_pipeline *p, kp_pipeline_drained_fn drained, void *ud) {
  p->shutting_down = true;
  p->drained = drained;
  p->drained_ud = ud;
  for (size_t i = 0; i < p->n_streams; i++)
    flush_stream(p->streams[i]);
  rearm_timer(p);
  ev_timer_init(&p->shutdown_timer, shutdown_timeout_cb, p->cfg.record_ttl / 1000.0 + 1.0, 0);
  p->shutdown_timer.data = p;
  ev_timer_start(p->loop, &p->shutdown_timer);
  check_drained(p);
}

size_t kp_pipeline_outstanding(const kp_pipeline *p) {
  return p->outstanding;
}

size_t kp_pipeline_buffered_bytes(const kp_pipeline *p) {
  return p->buffered_bytes;
}

int kp_pipeline_full(const kp_pipeline *p) {
  return p->was_full;
}

void kp_pipeline_use_shared_data(kp_pipeline *p, const kp_shared_data *sd, const char *error) {
  p->shared = *sd; /* the mapping is the caller's, and outlives the pipeline */
  Kpl__Message m = KPL__MESSAGE__INIT;
  Kpl__SharedDataAck ack = KPL__SHARED_DATA_ACK__INIT;
  ack.mapped = sd->base != NULL;
  ack.error = sd->base ? NULL : (char *)(error ? error : "not mapped");
  m.id = ++p->next_id;
  m.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_SHARED_DATA_ACK;
  m.shared_data_ack = &ack;
  send_message(p, &m);
}

void kp_pipeline_on_room(kp_pipeline *p, kp_pipeline_room_fn room, void *ud) {
  p->room = room;
  p->room_ud = ud;
}

const kp_counters *kp_pipeline_counters(const kp_pipeline *p) {
  return &p->counters;
}
