// KP_TEST_LIBS: kp_kinesis_reader PkgConfig::JANSSON OpenSSL::Crypto
/* The stream reader (consumer/kinesis_reader.h) against a fake Kinesis written here:
 * shard order across splits and merges, children found by listing again, LATEST and
 * AT_TIMESTAMP, pacing per shard, throttling and retries, expired iterators, stop
 * conditions. Time is a fake clock: sleeping advances it, nothing really waits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <math.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "common/log.h"
#include "consumer/kinesis_reader.h"

#define MAX_SHARDS 8
#define MAX_RECS 64
#define MAX_EVENTS 512

typedef struct fshard {
  const char *id, *parent, *adj;
  const char *lo, *hi;
  bool closed;
  bool hidden; /* not listed (yet) */
  int n;
  char data[MAX_RECS][24];
  double ts[MAX_RECS]; /* arrival, epoch seconds */
  double last_get;     /* fake time of the last GetRecords on it, -1 none */
  char iter_types[128];
} fshard;

typedef struct fake {
  fshard sh[MAX_SHARDS];
  int n;
  const char *stream;
  double now;
  int page_size;            /* ListShards page size (0: all) */
  bool end_on_empty;        /* NextShardIterator null only on an empty page (kinesalite) */
  int throttle[MAX_SHARDS]; /* GetRecords on shard i throttled this many more times */
  int fail_transport;       /* next calls fail at the transport, any operation */
  int fail_500;             /* next calls get a 500 */
  bool fail_permanent;      /* every call fails at the transport, not retryable */
  bool expire_next;         /* next GetRecords: ExpiredIteratorException */
  int split_at_call;        /* when get_calls reaches it: hook() runs */
  void (*hook)(struct fake *f);
  int get_calls, list_calls;
  double min_gap;              /* smallest time between GetRecords on one shard */
  char events[MAX_EVENTS][48]; /* "shardId-N:data" in delivery order */
  int n_events;
  int stop_after; /* on_record returns 1 after this many (0: never) */
} fake;

static void add_shard(fake *f, const char *id, const char *parent, const char *adj, const char *lo,
                      const char *hi, bool closed) {
  fshard *s = &f->sh[f->n++];
  memset(s, 0, sizeof *s);
  s->id = id;
  s->parent = parent;
  s->adj = adj;
  s->lo = lo;
  s->hi = hi;
  s->closed = closed;
  s->last_get = -1;
}

static void add_recs(fake *f, int shard, int count, const char *prefix) {
  fshard *s = &f->sh[shard];
  for (int i = 0; i < count; i++) {
    assert_true(s->n < MAX_RECS);
    snprintf(s->data[s->n], sizeof s->data[0], "%s%d", prefix, s->n);
    s->ts[s->n] = 1000 + s->n;
    s->n++;
  }
}

static int shard_ix(fake *f, const char *id) {
  for (int i = 0; i < f->n; i++)
    if (!strcmp(f->sh[i].id, id))
      return i;
  return -1;
}

static void respond(kp_buf *resp, json_t *doc) {
  char *s = json_dumps(doc, JSON_COMPACT);
  assert_non_null(s);
  kp_buf_reset(resp);
  assert_int_equal(kp_buf_append_str(resp, s), 0);
  free(s);
  json_decref(doc);
}

static int error(kp_buf *resp, long *status, long code, const char *type, const char *msg) {
  *status = code;
  respond(resp, json_pack("{s:s, s:s}", "__type", type, "message", msg));
  return 0;
}

static const char *HALF = "170141183460469231731687303715884105727";
static const char *HALF1 = "170141183460469231731687303715884105728";
static const char *MAX = "340282366920938463463374607431768211455";

static int fake_call(void *ud, const char *op, const uint8_t *body, size_t len, long *status,
                     kp_buf *resp, char *errstr, size_t errlen) {
  fake *f = ud;
  json_t *req = json_loadb((const char *)body, len, 0, NULL);
  assert_non_null(req);
  int rc = 0;
  if (f->fail_transport > 0) {
    f->fail_transport--;
    snprintf(errstr, errlen, "%s: connection refused", op);
    json_decref(req);
    return -5;
  }
  if (f->fail_permanent) {
    snprintf(errstr, errlen, "%s: certificate not trusted", op);
    json_decref(req);
    return KR_CALL_PERMANENT;
  }
  if (f->fail_500 > 0) {
    f->fail_500--;
    rc = error(resp, status, 500, "InternalFailure", "try again");
    goto out;
  }
  *status = 200;
  if (!strcmp(op, "ListShards")) {
    const char *name = json_string_value(json_object_get(req, "StreamName"));
    const char *token = json_string_value(json_object_get(req, "NextToken"));
    assert_true((name == NULL) != (token == NULL)); /* as Kinesis demands */
    if (name && strcmp(name, f->stream)) {
      rc = error(resp, status, 400, "ResourceNotFoundException", "Stream not found.");
      goto out;
    }
    int from = token ? atoi(token) : 0, listed = 0;
    json_t *arr = json_array();
    int i;
    for (i = from; i < f->n && (!f->page_size || listed < f->page_size); i++) {
      fshard *s = &f->sh[i];
      if (s->hidden)
        continue;
      json_t *o = json_pack("{s:s, s:{s:s, s:s}, s:{s:s}}", "ShardId", s->id, "HashKeyRange",
                            "StartingHashKey", s->lo, "EndingHashKey", s->hi, "SequenceNumberRange",
                            "StartingSequenceNumber", "1");
      if (s->parent)
        json_object_set_new(o, "ParentShardId", json_string(s->parent));
      if (s->adj)
        json_object_set_new(o, "AdjacentParentShardId", json_string(s->adj));
      if (s->closed)
        json_object_set_new(json_object_get(o, "SequenceNumberRange"), "EndingSequenceNumber",
                            json_string("99999999"));
      json_array_append_new(arr, o);
      listed++;
    }
    json_t *doc = json_pack("{s:o}", "Shards", arr);
    bool more = false;
    for (int k = i; k < f->n; k++)
      more |= !f->sh[k].hidden;
    if (more) {
      char t[16];
      snprintf(t, sizeof t, "%d", i);
      json_object_set_new(doc, "NextToken", json_string(t));
    }
    f->list_calls++;
    respond(resp, doc);
  } else if (!strcmp(op, "GetShardIterator")) {
    assert_string_equal(json_string_value(json_object_get(req, "StreamName")), f->stream);
    int ix = shard_ix(f, json_string_value(json_object_get(req, "ShardId")));
    assert_true(ix >= 0);
    fshard *s = &f->sh[ix];
    const char *type = json_string_value(json_object_get(req, "ShardIteratorType"));
    int pos = 0;
    if (!strcmp(type, "LATEST")) {
      pos = s->n;
    } else if (!strcmp(type, "AT_TIMESTAMP")) {
      double t = json_number_value(json_object_get(req, "Timestamp"));
      while (pos < s->n && s->ts[pos] < t)
        pos++;
    } else if (!strcmp(type, "AFTER_SEQUENCE_NUMBER")) {
      const char *seq = json_string_value(json_object_get(req, "StartingSequenceNumber"));
      pos = atoi(seq) % 1000 + 1;
    } else {
      assert_string_equal(type, "TRIM_HORIZON");
    }
    snprintf(s->iter_types + strlen(s->iter_types), sizeof s->iter_types - strlen(s->iter_types),
             "%s%s", s->iter_types[0] ? "," : "", type);
    char it[32];
    snprintf(it, sizeof it, "it/%d/%d", ix, pos);
    respond(resp, json_pack("{s:s}", "ShardIterator", it));
  } else if (!strcmp(op, "GetRecords")) {
    int ix, pos;
    assert_int_equal(
        sscanf(json_string_value(json_object_get(req, "ShardIterator")), "it/%d/%d", &ix, &pos), 2);
    fshard *s = &f->sh[ix];
    if (s->last_get >= 0 && f->now - s->last_get < f->min_gap)
      f->min_gap = f->now - s->last_get;
    s->last_get = f->now;
    if (f->throttle[ix] > 0) {
      f->throttle[ix]--;
      rc = error(resp, status, 400, "ProvisionedThroughputExceededException", "slow down");
      goto out;
    }
    if (f->expire_next) {
      f->expire_next = false;
      rc = error(resp, status, 400, "ExpiredIteratorException", "Iterator expired.");
      goto out;
    }
    f->get_calls++;
    int limit = (int)json_integer_value(json_object_get(req, "Limit"));
    int n = s->n - pos < limit ? s->n - pos : limit;
    json_t *arr = json_array();
    for (int i = pos; i < pos + n; i++) {
      char seq[32], b64[64];
      snprintf(seq, sizeof seq, "%d", (ix + 1) * 1000 + i);
      EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)s->data[i],
                      (int)strlen(s->data[i]));
      json_array_append_new(arr,
                            json_pack("{s:s, s:s, s:s, s:f}", "SequenceNumber", seq, "PartitionKey",
                                      "pk", "Data", b64, "ApproximateArrivalTimestamp", s->ts[i]));
    }
    json_t *doc = json_pack("{s:o, s:i}", "Records", arr, "MillisBehindLatest", 0);
    bool end = s->closed && pos + n == s->n && (!f->end_on_empty || n == 0);
    if (!end) {
      char it[32];
      snprintf(it, sizeof it, "it/%d/%d", ix, pos + n);
      json_object_set_new(doc, "NextShardIterator", json_string(it));
    }
    respond(resp, doc);
    if (f->hook && f->get_calls == f->split_at_call) {
      f->hook(f);
      f->hook = NULL;
    }
  } else {
    fail_msg("unexpected operation %s", op);
  }
out:
  json_decref(req);
  return rc;
}

static double fake_now(void *ud) {
  return ((fake *)ud)->now;
}

static void fake_sleep(void *ud, double secs) {
  assert_true(secs > 0);
  ((fake *)ud)->now += secs;
}

static int fake_on_record(void *ud, const kr_shard_view *shard, const kp_fetched_record *rec,
                          char *errstr, size_t errlen) {
  fake *f = ud;
  assert_true(f->n_events < MAX_EVENTS);
  snprintf(f->events[f->n_events++], sizeof f->events[0], "%s:%.*s",
           shard->shard_id + strlen("shardId-"), (int)rec->data_len, (const char *)rec->data);
  if (f->stop_after && f->n_events >= f->stop_after)
    return 1;
  return 0;
}

static fake *new_fake(void) {
  fake *f = calloc(1, sizeof *f);
  assert_non_null(f);
  f->stream = "s";
  f->now = 100;
  f->min_gap = 1e9;
  return f;
}

static kr_env env_of(fake *f) {
  kr_env e = {.call = fake_call,
              .call_ud = f,
              .now = fake_now,
              .sleep = fake_sleep,
              .clock_ud = f,
              .on_record = fake_on_record,
              .ud = f};
  return e;
}

static int event_ix(const fake *f, const char *ev) {
  for (int i = 0; i < f->n_events; i++)
    if (!strcmp(f->events[i], ev))
      return i;
  return -1;
}

/* Index of the last event of shard `id` ("0"), or of the first one. */
static int shard_event(const fake *f, const char *id, bool last) {
  int found = -1;
  size_t n = strlen(id);
  for (int i = 0; i < f->n_events; i++)
    if (!strncmp(f->events[i], id, n) && f->events[i][n] == ':') {
      found = i;
      if (!last)
        break;
    }
  return found;
}

static int count_shard(const fake *f, const char *id) {
  int c = 0;
  size_t n = strlen(id);
  for (int i = 0; i < f->n_events; i++)
    c += !strncmp(f->events[i], id, n) && f->events[i][n] == ':';
  return c;
}

static kr_options opts(void) {
  kr_options o;
  kr_options_default(&o);
  o.stream = "s";
  return o;
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_reads_every_shard_in_order(void **st) {
  (void)st;
  fake *f = new_fake();
  add_shard(f, "shardId-0", NULL, NULL, "0", HALF, false);
  add_shard(f, "shardId-1", NULL, NULL, HALF1, MAX, false);
  add_recs(f, 0, 25, "a");
  add_recs(f, 1, 3, "b");
  kr_options o = opts();
  o.limit = 10; /* several pages */
  kr_env e = env_of(f);
  kr_stats stats;
  char err[256];
  assert_int_equal(kr_read(&o, &e, &stats, err, sizeof err), KR_CAUGHT_UP);
  assert_int_equal(f->n_events, 28);
  assert_int_equal(stats.records, 28);
  assert_int_equal(stats.shards, 2);
  /* Per shard in sequence order. */
  int prev = -1;
  for (int i = 0; i < f->n_events; i++)
    if (f->events[i][0] == '0') {
      int k = atoi(f->events[i] + 3);
      assert_int_equal(k, prev + 1);
      prev = k;
    }
  /* Paced: never two GetRecords on a shard within poll_interval. */
  assert_true(f->min_gap >= o.poll_interval - 1e-9);
  assert_string_equal(f->sh[0].iter_types, "TRIM_HORIZON");
  free(f);
}

static void test_parents_before_children(void **st) {
  (void)st;
  fake *f = new_fake();
  /* 0 split into 2 and 3; 1 and 2 merged into 4. Listed children first. */
  add_shard(f, "shardId-4", "shardId-1", "shardId-2", "0", MAX, false);
  add_shard(f, "shardId-3", "shardId-0", NULL, HALF1, MAX, false);
  add_shard(f, "shardId-2", "shardId-0", NULL, "0", HALF, true);
  add_shard(f, "shardId-1", NULL, NULL, HALF1, MAX, true);
  add_shard(f, "shardId-0", NULL, NULL, "0", MAX, true);
  add_recs(f, 4, 12, "p0-");
  add_recs(f, 3, 5, "p1-");
  add_recs(f, 2, 7, "c2-");
  add_recs(f, 1, 2, "c3-");
  add_recs(f, 0, 4, "m4-");
  f->end_on_empty = true;
  kr_options o = opts();
  o.limit = 5;
  kr_env e = env_of(f);
  kr_stats stats;
  char err[256];
  assert_int_equal(kr_read(&o, &e, &stats, err, sizeof err), KR_CAUGHT_UP);
  assert_int_equal(f->n_events, 30);
  assert_int_equal(stats.shards_finished, 3);
  assert_true(shard_event(f, "0", true) < shard_event(f, "2", false));
  assert_true(shard_event(f, "0", true) < shard_event(f, "3", false));
  assert_true(shard_event(f, "1", true) < shard_event(f, "4", false));
  assert_true(shard_event(f, "2", true) < shard_event(f, "4", false));
  free(f);
}

/* Shard 0 splits while being read: the reader lists again when it ends. */
static void split_hook(fake *f) {
  f->sh[0].closed = true;
  add_recs(f, 0, 3, "late");
  f->sh[1].hidden = false;
  f->sh[2].hidden = false;
}

static void test_children_found_after_split(void **st) {
  (void)st;
  fake *f = new_fake();
  add_shard(f, "shardId-0", NULL, NULL, "0", MAX, false);
  add_shard(f, "shardId-1", "shardId-0", NULL, "0", HALF, false);
  add_shard(f, "shardId-2", "shardId-0", NULL, HALF1, MAX, false);
  f->sh[1].hidden = f->sh[2].hidden = true;
  add_recs(f, 0, 4, "x");
  add_recs(f, 1, 3, "y");
  add_recs(f, 2, 2, "z");
  f->split_at_call = 1;
  f->hook = split_hook;
  kr_options o = opts();
  kr_env e = env_of(f);
  char err[256];
  assert_int_equal(kr_read(&o, &e, NULL, err, sizeof err), KR_CAUGHT_UP);
  assert_int_equal(f->n_events, 4 + 3 + 3 + 2);
  assert_int_equal(count_shard(f, "0"), 7);
  assert_true(shard_event(f, "0", true) < shard_event(f, "1", false));
  assert_true(shard_event(f, "0", true) < shard_event(f, "2", false));
  assert_true(f->list_calls >= 2);
  free(f);
}

static void test_latest_skips_closed_and_reads_children_from_start(void **st) {
  (void)st;
  fake *f = new_fake();
  add_shard(f, "shardId-0", NULL, NULL, "0", MAX, false);
  add_shard(f, "shardId-1", "shardId-0", NULL, "0", HALF, false);
  add_shard(f, "shardId-2", "shardId-0", NULL, HALF1, MAX, false);
  add_shard(f, "shardId-3", NULL, NULL, "0", MAX, true); /* old, closed: skipped */
  f->sh[1].hidden = f->sh[2].hidden = true;
  add_recs(f, 0, 4, "old");
  add_recs(f, 1, 3, "y");
  add_recs(f, 2, 2, "z");
  add_recs(f, 3, 2, "gone");
  f->split_at_call = 1; /* after the first (empty, LATEST) page: 3 new records, split */
  f->hook = split_hook;
  kr_options o = opts();
  o.start = KR_LATEST;
  o.follow = true; /* caught up after the first page; the records come later */
  o.idle_timeout = 5;
  kr_env e = env_of(f);
  kr_stats stats;
  char err[256];
  assert_int_equal(kr_read(&o, &e, &stats, err, sizeof err), KR_IDLE_TIMEOUT);
  assert_int_equal(count_shard(f, "0"), 3); /* only the records after LATEST */
  assert_true(event_ix(f, "0:late4") >= 0);
  assert_int_equal(count_shard(f, "1"), 3);
  assert_int_equal(count_shard(f, "2"), 2);
  assert_int_equal(count_shard(f, "3"), 0);
  assert_string_equal(f->sh[0].iter_types, "LATEST");
  assert_string_equal(f->sh[1].iter_types, "TRIM_HORIZON");
  assert_string_equal(f->sh[3].iter_types, "");
  free(f);
}

static void test_at_timestamp(void **st) {
  (void)st;
  fake *f = new_fake();
  add_shard(f, "shardId-0", NULL, NULL, "0", MAX, false);
  add_recs(f, 0, 10, "r"); /* arrivals 1000..1009 */
  kr_options o = opts();
  o.start = KR_AT_TIMESTAMP;
  o.timestamp = 1006;
  kr_env e = env_of(f);
  char err[256];
  assert_int_equal(kr_read(&o, &e, NULL, err, sizeof err), KR_CAUGHT_UP);
  assert_int_equal(f->n_events, 4);
  assert_string_equal(f->events[0], "0:r6");
  assert_string_equal(f->sh[0].iter_types, "AT_TIMESTAMP");
  free(f);
}

static void test_throttling_backs_off_per_shard(void **st) {
  (void)st;
  fake *f = new_fake();
  add_shard(f, "shardId-0", NULL, NULL, "0", HALF, false);
  add_shard(f, "shardId-1", NULL, NULL, HALF1, MAX, false);
  add_recs(f, 0, 3, "a");
  add_recs(f, 1, 3, "b");
  f->throttle[1] = 4;
  kr_options o = opts();
  kr_env e = env_of(f);
  kr_stats stats;
  char err[256];
  double t0 = f->now;
  assert_int_equal(kr_read(&o, &e, &stats, err, sizeof err), KR_CAUGHT_UP);
  assert_int_equal(f->n_events, 6);
  assert_int_equal(stats.throttled, 4);
  /* Shard 0 was not held up by shard 1's back-off (0.1+0.2+0.4+0.8 s). */
  assert_true(shard_event(f, "0", false) < shard_event(f, "1", false));
  assert_true(f->now - t0 >= 1.5 - 1e-9);
  free(f);
}

static void test_throttling_gives_up(void **st) {
  (void)st;
  fake *f = new_fake();
  add_shard(f, "shardId-0", NULL, NULL, "0", MAX, false);
  f->throttle[0] = 1000;
  kr_options o = opts();
  o.max_throttles = 5;
  kr_env e = env_of(f);
  char err[256];
  assert_int_equal(kr_read(&o, &e, NULL, err, sizeof err), KR_ERROR);
  assert_non_null(strstr(err, "throttled"));
  assert_non_null(strstr(err, "ProvisionedThroughputExceededException"));
  free(f);
}

static void expire_hook(fake *f) {
  f->expire_next = true;
}

static void test_expired_iterator_renewed(void **st) {
  (void)st;
  fake *f = new_fake();
  add_shard(f, "shardId-0", NULL, NULL, "0", MAX, false);
  add_recs(f, 0, 9, "r");
  f->split_at_call = 1; /* after the first page (r0..r3), the iterator expires */
  f->hook = expire_hook;
  kr_options o = opts();
  o.limit = 4;
  kr_env e = env_of(f);
  kr_stats stats;
  char err[256];
  assert_int_equal(kr_read(&o, &e, &stats, err, sizeof err), KR_CAUGHT_UP);
  assert_int_equal(stats.expired_iterators, 1);
  assert_int_equal(f->n_events, 9); /* no loss, no duplicate */
  for (int i = 0; i < 9; i++) {
    char ev[16];
    snprintf(ev, sizeof ev, "0:r%d", i);
    assert_string_equal(f->events[i], ev);
  }
  assert_string_equal(f->sh[0].iter_types, "TRIM_HORIZON,AFTER_SEQUENCE_NUMBER");
  free(f);
}

static void test_transient_failures_retried(void **st) {
  (void)st;
  fake *f = new_fake();
  add_shard(f, "shardId-0", NULL, NULL, "0", MAX, false);
  add_recs(f, 0, 2, "r");
  f->fail_transport = 2; /* ListShards twice */
  kr_options o = opts();
  kr_env e = env_of(f);
  kr_stats stats;
  char err[256];
  assert_int_equal(kr_read(&o, &e, &stats, err, sizeof err), KR_CAUGHT_UP);
  assert_int_equal(stats.retried, 2);
  assert_int_equal(f->n_events, 2);

  free(f);
  f = new_fake();
  add_shard(f, "shardId-0", NULL, NULL, "0", MAX, false);
  add_recs(f, 0, 2, "r");
  f->split_at_call = 0;
  f->fail_500 = 0;
  e = env_of(f);
  /* 500s on every call: give up after max_retries with the error in the message. */
  f->fail_500 = 1000;
  o.max_retries = 3;
  assert_int_equal(kr_read(&o, &e, &stats, err, sizeof err), KR_ERROR);
  assert_non_null(strstr(err, "InternalFailure"));
  assert_int_equal(stats.retried, 3);
  assert_int_equal(f->fail_500, 1000 - 4);
  free(f);
}

static void test_permanent_transport_error_not_retried(void **st) {
  (void)st;
  fake *f = new_fake();
  add_shard(f, "shardId-0", NULL, NULL, "0", MAX, false);
  f->fail_permanent = true;
  kr_options o = opts();
  kr_env e = env_of(f);
  kr_stats stats;
  char err[256];
  double t0 = f->now;
  assert_int_equal(kr_read(&o, &e, &stats, err, sizeof err), KR_ERROR);
  assert_non_null(strstr(err, "certificate not trusted"));
  assert_int_equal(stats.retried, 0);
  assert_true(f->now == t0); /* no back-off either */
  free(f);
}

static void test_unknown_stream(void **st) {
  (void)st;
  fake *f = new_fake();
  add_shard(f, "shardId-0", NULL, NULL, "0", MAX, false);
  kr_options o = opts();
  o.stream = "nope";
  kr_env e = env_of(f);
  char err[256];
  assert_int_equal(kr_read(&o, &e, NULL, err, sizeof err), KR_ERROR);
  assert_non_null(strstr(err, "stream 'nope' not found"));
  assert_non_null(strstr(err, "ResourceNotFoundException"));
  free(f);
}

static void test_list_shards_pages(void **st) {
  (void)st;
  fake *f = new_fake();
  for (int i = 0; i < 5; i++) {
    static const char *ids[] = {"shardId-0", "shardId-1", "shardId-2", "shardId-3", "shardId-4"};
    add_shard(f, ids[i], NULL, NULL, "0", MAX, false);
    add_recs(f, i, 1, "r");
  }
  f->page_size = 2;
  kr_options o = opts();
  kr_env e = env_of(f);
  kr_stats stats;
  char err[256];
  assert_int_equal(kr_read(&o, &e, &stats, err, sizeof err), KR_CAUGHT_UP);
  assert_int_equal(stats.shards, 5);
  assert_int_equal(stats.list_shards_calls, 3);
  assert_int_equal(f->n_events, 5);
  free(f);
}

static void test_stop_from_callback(void **st) {
  (void)st;
  fake *f = new_fake();
  add_shard(f, "shardId-0", NULL, NULL, "0", MAX, false);
  add_recs(f, 0, 10, "r");
  f->stop_after = 4;
  kr_options o = opts();
  o.follow = true;
  kr_env e = env_of(f);
  char err[256];
  assert_int_equal(kr_read(&o, &e, NULL, err, sizeof err), KR_STOPPED);
  assert_int_equal(f->n_events, 4);
  free(f);
}

static void test_idle_timeout_and_time_limit(void **st) {
  (void)st;
  fake *f = new_fake();
  add_shard(f, "shardId-0", NULL, NULL, "0", MAX, false);
  add_recs(f, 0, 2, "r");
  kr_options o = opts();
  o.follow = true;
  o.idle_timeout = 3;
  kr_env e = env_of(f);
  char err[256];
  double t0 = f->now;
  assert_int_equal(kr_read(&o, &e, NULL, err, sizeof err), KR_IDLE_TIMEOUT);
  assert_int_equal(f->n_events, 2);
  /* Idle from the last record (read at once), to within one call. */
  assert_true(fabs(f->now - t0 - 3) < 1e-6);

  f->now = 500;
  f->n_events = 0;
  o.idle_timeout = 0;
  o.max_time = 7.5;
  t0 = f->now;
  assert_int_equal(kr_read(&o, &e, NULL, err, sizeof err), KR_TIME_LIMIT);
  assert_true(fabs(f->now - t0 - 7.5) < 1e-6);
  /* Idle polling after the records: once per idle_interval, not per poll_interval. */
  assert_true(f->min_gap >= o.poll_interval - 1e-9);
  free(f);
}

static void test_parse_timestamp(void **st) {
  (void)st;
  double t;
  assert_int_equal(kr_parse_timestamp("1700000000", &t), 0);
  assert_true(t == 1700000000.0);
  assert_int_equal(kr_parse_timestamp("1700000000.25", &t), 0);
  assert_true(t == 1700000000.25);
  assert_int_equal(kr_parse_timestamp("2023-11-14T22:13:20Z", &t), 0);
  assert_true(t == 1700000000.0);
  assert_int_equal(kr_parse_timestamp("2023-11-14 22:13:20.5", &t), 0);
  assert_true(t == 1700000000.5);
  assert_int_equal(kr_parse_timestamp("2023-11-15T00:13:20+02:00", &t), 0);
  assert_true(t == 1700000000.0);
  assert_int_equal(kr_parse_timestamp("2023-11-14T21:13:20-0100", &t), 0);
  assert_true(t == 1700000000.0);
  assert_int_equal(kr_parse_timestamp("2024-02-29T00:00:00Z", &t), 0);
  const char *bad[] = {"",
                       "abc",
                       "-5",
                       "1e5",
                       "1.",
                       "2023-02-29T00:00:00Z",
                       "2023-13-01T00:00:00Z",
                       "2023-11-14",
                       "2023-11-14T22:13:20Zjunk",
                       "2023-11-14T22:13:20+25:00",
                       "12 "};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    t = -1;
    if (kr_parse_timestamp(bad[i], &t) == 0)
      fail_msg("accepted '%s'", bad[i]);
  }
}

static void test_http_new_errors(void **st) {
  (void)st;
  char err[512];
  kr_http_options ho = {
      .endpoint = "http://127.0.0.1:1/path", .access_key_id = "A", .secret_key = "s"};
  assert_null(kr_http_new(&ho, err, sizeof err));
  assert_non_null(strstr(err, "--endpoint"));
  ho.endpoint = "http://127.0.0.1:4567";
  ho.secret_key = "";
  assert_null(kr_http_new(&ho, err, sizeof err));
  assert_non_null(strstr(err, "credentials"));
  ho.secret_key = "s";
  ho.region = "Bad Region";
  assert_null(kr_http_new(&ho, err, sizeof err));
  ho.region = NULL;
  kr_http *h = kr_http_new(&ho, err, sizeof err);
  assert_non_null(h);
  assert_string_equal(kr_http_url(h), "http://127.0.0.1:4567");
  assert_string_equal(kr_http_region(h), "us-east-1");
  kr_http_free(h);
  ho.endpoint = NULL;
  ho.region = "eu-west-1";
  h = kr_http_new(&ho, err, sizeof err);
  assert_non_null(h);
  assert_string_equal(kr_http_url(h), "https://kinesis.eu-west-1.amazonaws.com:443");
  kr_http_free(h);
}

int main(void) {
  kp_log_set_level(KP_LOG_LEVEL_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reads_every_shard_in_order),
      cmocka_unit_test(test_parents_before_children),
      cmocka_unit_test(test_children_found_after_split),
      cmocka_unit_test(test_latest_skips_closed_and_reads_children_from_start),
      cmocka_unit_test(test_at_timestamp),
      cmocka_unit_test(test_throttling_backs_off_per_shard),
      cmocka_unit_test(test_throttling_gives_up),
      cmocka_unit_test(test_expired_iterator_renewed),
      cmocka_unit_test(test_transient_failures_retried),
      cmocka_unit_test(test_permanent_transport_error_not_retried),
      cmocka_unit_test(test_unknown_stream),
      cmocka_unit_test(test_list_shards_pages),
      cmocka_unit_test(test_stop_from_callback),
      cmocka_unit_test(test_idle_timeout_and_time_limit),
      cmocka_unit_test(test_parse_timestamp),
      cmocka_unit_test(test_http_new_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
