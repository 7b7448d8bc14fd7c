// KP_TEST_LIBS: kp_producer_core
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "producer/metrics.h"

#define T0 1763805600.0 /* 2025-11-22T10:00:00Z */

/* ---- helpers: collect what a query visits --------------------------------------- */

typedef struct rec {
  kp_metric_id id;
  char name[64];
  char dims[8][2][64];
  size_t n_dims;
  kp_metrics_stats st;
  uint64_t seconds;
} rec;

typedef struct recs {
  rec r[256];
  size_t n;
} recs;

static int collect_cb(const kp_metrics_record *r, void *ud) {
  recs *rs = ud;
  assert_true(rs->n < 256);
  rec *x = &rs->r[rs->n++];
  memset(x, 0, sizeof *x);
  x->id = r->id;
  snprintf(x->name, sizeof x->name, "%s", r->name);
  assert_true(r->n_dims <= 8);
  for (size_t i = 0; i < r->n_dims; i++) {
    snprintf(x->dims[i][0], 64, "%s", r->dims[i].key);
    snprintf(x->dims[i][1], 64, "%s", r->dims[i].value);
  }
  x->n_dims = r->n_dims;
  x->st = r->stats;
  x->seconds = r->seconds;
  return 0;
}

static recs *query(kp_metrics *m, const char *name, uint64_t seconds, double now) {
  static recs rs;
  rs.n = 0;
  assert_int_equal(kp_metrics_query(m, name, seconds, now, collect_cb, &rs), 0);
  return &rs;
}

/* dims rendered "k=v,k=v" */
static const char *dims_str(const rec *r) {
  static char buf[512];
  size_t n = 0;
  buf[0] = 0;
  for (size_t i = 0; i < r->n_dims; i++)
    n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%s=%s", i ? "," : "", r->dims[i][0],
                          r->dims[i][1]);
  return buf;
}

static const rec *find(const recs *rs, const char *name, const char *dims) {
  for (size_t i = 0; i < rs->n; i++)
    if (!strcmp(rs->r[i].name, name) && !strcmp(dims_str(&rs->r[i]), dims))
      return &rs->r[i];
  return NULL;
}

static kp_metrics *new_metrics(kp_metrics_level level, kp_metrics_granularity g) {
  kp_metrics_opts o = {.level = level, .granularity = g};
  kp_metrics *m = kp_metrics_new_opts(&o, T0);
  assert_non_null(m);
  return m;
}

/* ---- tests ---------------------------------------------------------------------- */

static void metric_table_matches_kpl_names(void **state) {
  static const char *names[] = {"UserRecordsReceived",
                                "UserRecordsPending",
                                "UserRecordsPut",
                                "UserRecordsDataPut",
                                "UserRecordExpired",
                                "KinesisRecordsPut",
                                "KinesisRecordsDataPut",
                                "ErrorsByCode",
                                "AllErrors",
                                "RetriesPerRecord",
                                "BufferingTime",
                                "RequestTime",
                                "UserRecordsPerKinesisRecord",
                                "KinesisRecordsPerPutRecordsRequest",
                                "UserRecordsPerPutRecordsRequest"};
  assert_int_equal(sizeof names / sizeof *names, KP_M__COUNT);
  for (int i = 0; i < KP_M__COUNT; i++) {
    assert_string_equal(kp_metric_info_get((kp_metric_id)i)->name, names[i]);
    assert_int_equal(kp_metric_id_from_name(names[i]), i);
  }
  assert_int_equal(kp_metric_id_from_name("NoSuchMetric"), -1);
  assert_null(kp_metric_info_get(KP_M__COUNT));
  assert_string_equal(kp_metric_info_get(KP_M_BUFFERING_TIME)->unit, "Milliseconds");
  assert_string_equal(kp_metric_info_get(KP_M_USER_RECORDS_DATA_PUT)->unit, "Bytes");
  assert_string_equal(kp_metric_info_get(KP_M_USER_RECORDS_PUT)->unit, "Count");
}

static void shard_value_fans_out_to_stream_and_global(void **state) {
  kp_metrics *m = new_metrics(KP_METRICS_LEVEL_DETAILED, KP_METRICS_GRANULARITY_SHARD);
  kp_metrics_handle *s = kp_metrics_stream_get(m, "s1");
  kp_metrics_handle *a = kp_metrics_shard_get(s, "shardId-0");
  kp_metrics_handle *b = kp_metrics_shard_get(s, "shardId-1");
  kp_metrics_add(a, KP_M_USER_RECORDS_PUT, 1, T0 + 0.1);
  kp_metrics_add(a, KP_M_USER_RECORDS_PUT, 1, T0 + 0.2);
  kp_metrics_add(b, KP_M_USER_RECORDS_PUT, 1, T0 + 0.3);
  recs *rs = query(m, "UserRecordsPut", 0, T0 + 1);
  assert_int_equal(rs->n, 4);
  const rec *g = find(rs, "UserRecordsPut", "");
  const rec *st = find(rs, "UserRecordsPut", "StreamName=s1");
  const rec *sa = find(rs, "UserRecordsPut", "StreamName=s1,ShardId=shardId-0");
  const rec *sb = find(rs, "UserRecordsPut", "StreamName=s1,ShardId=shardId-1");
  assert_non_null(g);
  assert_non_null(st);
  assert_non_null(sa);
  assert_non_null(sb);
  assert_true(g->st.count == 3 && st->st.count == 3);
  assert_true(sa->st.count == 2 && sa->st.sum == 2 && sb->st.count == 1);
  /* order: global, stream, its shards */
  assert_ptr_equal(g, &rs->r[0]);
  assert_ptr_equal(st, &rs->r[1]);
  kp_metrics_free(m);
}

static void granularity_stream_and_global_stop_the_fan_out(void **state) {
  kp_metrics *m = new_metrics(KP_METRICS_LEVEL_DETAILED, KP_METRICS_GRANULARITY_STREAM);
  kp_metrics_handle *s = kp_metrics_stream_get(m, "s1");
  kp_metrics_handle *a = kp_metrics_shard_get(s, "shardId-0");
  assert_non_null(a);
  kp_metrics_add(a, KP_M_KINESIS_RECORDS_PUT, 1, T0);
  recs *rs = query(m, NULL, 0, T0);
  assert_int_equal(rs->n, 2);
  assert_non_null(find(rs, "KinesisRecordsPut", ""));
  assert_non_null(find(rs, "KinesisRecordsPut", "StreamName=s1"));
  kp_metrics_free(m);

  m = new_metrics(KP_METRICS_LEVEL_DETAILED, KP_METRICS_GRANULARITY_GLOBAL);
  s = kp_metrics_stream_get(m, "s1");
  a = kp_metrics_shard_get(s, "shardId-0");
  kp_metrics_add(a, KP_M_KINESIS_RECORDS_PUT, 1, T0);
  kp_metrics_add(s, KP_M_REQUEST_TIME, 12, T0);
  rs = query(m, NULL, 0, T0);
  assert_int_equal(rs->n, 2);
  assert_non_null(find(rs, "KinesisRecordsPut", ""));
  assert_non_null(find(rs, "RequestTime", ""));
  kp_metrics_free(m);
}

static void stream_level_metrics_never_get_a_shard_dimension(void **state) {
  kp_metrics *m = new_metrics(KP_METRICS_LEVEL_DETAILED, KP_METRICS_GRANULARITY_SHARD);
  kp_metrics_handle *s = kp_metrics_stream_get(m, "s1");
  kp_metrics_handle *a = kp_metrics_shard_get(s, "shardId-0");
  kp_metrics_add(a, KP_M_REQUEST_TIME, 20, T0);
  kp_metrics_add(a, KP_M_USER_RECORDS_RECEIVED, 1, T0);
  recs *rs = query(m, NULL, 0, T0);
  assert_int_equal(rs->n, 4);
  for (size_t i = 0; i < rs->n; i++)
    assert_null(strstr(dims_str(&rs->r[i]), "ShardId"));
  kp_metrics_free(m);
}

static void levels_select_metrics(void **state) {
  kp_metrics_level levels[] = {KP_METRICS_LEVEL_NONE, KP_METRICS_LEVEL_SUMMARY,
                               KP_METRICS_LEVEL_DETAILED};
  for (int li = 0; li < 3; li++) {
    kp_metrics *m = new_metrics(levels[li], KP_METRICS_GRANULARITY_GLOBAL);
    kp_metrics_handle *s = kp_metrics_stream_get(m, "s");
    assert_non_null(s); /* handles exist whatever the level */
    for (int id = 0; id < KP_M__COUNT; id++)
      kp_metrics_add(s, (kp_metric_id)id, 1, T0);
    kp_metrics_add_error(s, "E", 1, T0);
    recs *rs = query(m, NULL, 0, T0);
    size_t summary = 0;
    for (int id = 0; id < KP_M__COUNT; id++)
      summary += kp_metric_info_get((kp_metric_id)id)->level == KP_METRICS_LEVEL_SUMMARY;
    if (levels[li] == KP_METRICS_LEVEL_NONE)
      assert_int_equal(rs->n, 0);
    else if (levels[li] == KP_METRICS_LEVEL_SUMMARY)
      assert_int_equal(rs->n, summary);
    else
      assert_int_equal(rs->n, KP_M__COUNT);
    for (size_t i = 0; i < rs->n; i++)
      assert_true(kp_metric_info_get(rs->r[i].id)->level <= levels[li]);
    if (levels[li] == KP_METRICS_LEVEL_SUMMARY) {
      assert_non_null(find(rs, "UserRecordsPut", ""));
      assert_non_null(find(rs, "BufferingTime", ""));
      assert_non_null(find(rs, "ErrorsByCode", "ErrorCode=E"));
      assert_null(find(rs, "UserRecordsReceived", ""));
      assert_null(find(rs, "RequestTime", ""));
    }
    kp_metrics_free(m);
  }
}

static void stats_are_count_sum_min_max_mean(void **state) {
  kp_metrics *m = new_metrics(KP_METRICS_LEVEL_DETAILED, KP_METRICS_GRANULARITY_GLOBAL);
  kp_metrics_handle *g = kp_metrics_global(m);
  kp_metrics_add(g, KP_M_BUFFERING_TIME, 5, T0);
  kp_metrics_add(g, KP_M_BUFFERING_TIME, -1, T0);
  kp_metrics_add_n(g, KP_M_BUFFERING_TIME, 3, 30, 2, 20, T0);
  kp_metrics_add_n(g, KP_M_BUFFERING_TIME, 0, 99, 99, 99, T0); /* count 0: nothing */
  kp_metrics_add(g, KP_M_BUFFERING_TIME, NAN, T0);             /* ignored */
  kp_metrics_add(g, KP_M_BUFFERING_TIME, INFINITY, T0);        /* ignored */
  kp_metrics_add(NULL, KP_M_BUFFERING_TIME, 1, T0);            /* no-op */
  kp_metrics_add(g, KP_M_ERRORS_BY_CODE, 1, T0);               /* needs a code: ignored */
  kp_metrics_add(g, KP_M__COUNT, 1, T0);                       /* out of range: ignored */
  recs *rs = query(m, NULL, 0, T0 + 2.5);
  assert_int_equal(rs->n, 1);
  const rec *r = &rs->r[0];
  assert_true(r->st.count == 5);
  assert_true(r->st.sum == 34);
  assert_true(r->st.min == -1);
  assert_true(r->st.max == 20);
  assert_true(r->st.mean == 34.0 / 5);
  assert_int_equal(r->seconds, 2); /* cumulative: whole seconds since start */
  kp_metrics_free(m);
}

static void window_counts_only_the_last_n_seconds(void **state) {
  kp_metrics *m = new_metrics(KP_METRICS_LEVEL_DETAILED, KP_METRICS_GRANULARITY_GLOBAL);
  kp_metrics_handle *g = kp_metrics_global(m);
  kp_metrics_add(g, KP_M_USER_RECORDS_PUT, 1, T0 + 0.2);
  kp_metrics_add(g, KP_M_USER_RECORDS_PUT, 2, T0 + 1.5);
  kp_metrics_add(g, KP_M_USER_RECORDS_PUT, 4, T0 + 1.9);
  recs *rs = query(m, NULL, 1, T0 + 1.95);
  assert_int_equal(rs->n, 1);
  assert_true(rs->r[0].st.count == 2 && rs->r[0].st.sum == 6 && rs->r[0].st.min == 2);
  assert_int_equal(rs->r[0].seconds, 1);
  rs = query(m, NULL, 2, T0 + 1.95);
  assert_true(rs->r[0].st.count == 3 && rs->r[0].st.sum == 7 && rs->r[0].st.min == 1);
  /* a quiet second later, the 1-second window is empty but the series is listed */
  rs = query(m, NULL, 1, T0 + 2.1);
  assert_int_equal(rs->n, 1);
  assert_true(rs->r[0].st.count == 0 && rs->r[0].st.sum == 0 && rs->r[0].st.min == 0 &&
              rs->r[0].st.max == 0 && rs->r[0].st.mean == 0);
  /* 60 s later the first second has left a 60-second window */
  rs = query(m, NULL, 60, T0 + 60.5);
  assert_true(rs->r[0].st.count == 2 && rs->r[0].st.sum == 6);
  rs = query(m, NULL, 60, T0 + 59.5);
  assert_true(rs->r[0].st.count == 3);
  /* more than 60 is clamped to 60 */
  rs = query(m, NULL, 3600, T0 + 60.5);
  assert_true(rs->r[0].st.count == 2);
  assert_int_equal(rs->r[0].seconds, 60);
  /* cumulative keeps everything */
  rs = query(m, NULL, 0, T0 + 500);
  assert_true(rs->r[0].st.count == 3 && rs->r[0].st.sum == 7);
  assert_int_equal(rs->r[0].seconds, 500);
  kp_metrics_free(m);
}

static void ring_rotation_over_simulated_minutes(void **state) {
  kp_metrics *m = new_metrics(KP_METRICS_LEVEL_DETAILED, KP_METRICS_GRANULARITY_GLOBAL);
  kp_metrics_handle *g = kp_metrics_global(m);
  /* seconds 0..299, value = second, two samples per second */
  for (int s = 0; s < 300; s++) {
    kp_metrics_add(g, KP_M_BUFFERING_TIME, s, T0 + s + 0.25);
    kp_metrics_add(g, KP_M_BUFFERING_TIME, s, T0 + s + 0.75);
  }
  double now = T0 + 299.9;
  for (uint64_t n = 1; n <= 60; n++) {
    recs *rs = query(m, NULL, n, now);
    double sum = 0;
    for (int s = 300 - (int)n; s < 300; s++)
      sum += 2.0 * s;
    assert_true(rs->r[0].st.count == 2.0 * (double)n);
    assert_true(rs->r[0].st.sum == sum);
    assert_true(rs->r[0].st.min == 300 - (double)n);
    assert_true(rs->r[0].st.max == 299);
  }
  recs *rs = query(m, NULL, 0, now);
  assert_true(rs->r[0].st.count == 600 && rs->r[0].st.min == 0 && rs->r[0].st.max == 299);
  /* a long gap: everything in the window is stale */
  rs = query(m, NULL, 60, now + 1000);
  assert_true(rs->r[0].st.count == 0);
  kp_metrics_add(g, KP_M_BUFFERING_TIME, 7, now + 1000);
  rs = query(m, NULL, 60, now + 1000);
  assert_true(rs->r[0].st.count == 1 && rs->r[0].st.sum == 7);
  kp_metrics_free(m);
}

static void time_going_backwards_counts_into_the_latest_second(void **state) {
  kp_metrics *m = new_metrics(KP_METRICS_LEVEL_DETAILED, KP_METRICS_GRANULARITY_GLOBAL);
  kp_metrics_handle *g = kp_metrics_global(m);
  kp_metrics_add(g, KP_M_USER_RECORDS_PUT, 1, T0 + 100.5);
  kp_metrics_add(g, KP_M_USER_RECORDS_PUT, 1, T0 + 36.5); /* clock stepped back */
  recs *rs = query(m, NULL, 1, T0 + 36.6);
  assert_true(rs->r[0].st.count == 2); /* window ends at the latest second seen */
  kp_metrics_free(m);
}

static void additional_dimensions_apply_at_their_granularity(void **state) {
  kp_metrics_dim adds[] = {{"App", "a1", KP_METRICS_GRANULARITY_GLOBAL},
                           {"Env", "prod", KP_METRICS_GRANULARITY_STREAM},
                           {"Az", "z1", KP_METRICS_GRANULARITY_SHARD}};
  kp_config cfg;
  kp_config_init(&cfg);
  cfg.metrics_level = KP_METRICS_LEVEL_SUMMARY;
  cfg.metrics_granularity = KP_METRICS_GRANULARITY_SHARD;
  cfg.additional_metrics_dims = adds;
  cfg.n_additional_metrics_dims = 3;
  kp_metrics *m = kp_metrics_new(&cfg, T0);
  cfg.additional_metrics_dims = NULL; /* ours, not cfg's to free */
  cfg.n_additional_metrics_dims = 0;
  kp_config_free(&cfg);
  assert_non_null(m);
  assert_int_equal(kp_metrics_get_level(m), KP_METRICS_LEVEL_SUMMARY);
  kp_metrics_handle *s = kp_metrics_stream_get(m, "s1");
  kp_metrics_handle *a = kp_metrics_shard_get(s, "sh0");
  kp_metrics_add(a, KP_M_USER_RECORDS_PUT, 1, T0);
  kp_metrics_add_error(a, "Boom", 1, T0);
  recs *rs = query(m, NULL, 0, T0);
  assert_non_null(find(rs, "UserRecordsPut", "App=a1"));
  assert_non_null(find(rs, "UserRecordsPut", "App=a1,StreamName=s1,Env=prod"));
  assert_non_null(find(rs, "UserRecordsPut", "App=a1,StreamName=s1,Env=prod,ShardId=sh0,Az=z1"));
  assert_non_null(find(rs, "ErrorsByCode", "ErrorCode=Boom,App=a1"));
  assert_non_null(
      find(rs, "ErrorsByCode", "ErrorCode=Boom,App=a1,StreamName=s1,Env=prod,ShardId=sh0,Az=z1"));
  assert_non_null(find(rs, "AllErrors", "App=a1,StreamName=s1,Env=prod"));
  kp_metrics_free(m);
}

static void error_codes_are_counted_per_code_and_in_all_errors(void **state) {
  kp_metrics *m = new_metrics(KP_METRICS_LEVEL_SUMMARY, KP_METRICS_GRANULARITY_SHARD);
  kp_metrics_handle *s = kp_metrics_stream_get(m, "s1");
  kp_metrics_handle *a = kp_metrics_shard_get(s, "sh0");
  kp_metrics_add_error(a, "ProvisionedThroughputExceededException", 3, T0);
  kp_metrics_add_error(a, "InternalFailure", 1, T0);
  kp_metrics_add_error(a, "ProvisionedThroughputExceededException", 1, T0);
  kp_metrics_add_error(s, NULL, 1, T0); /* no code */
  recs *rs = query(m, NULL, 0, T0);
  const rec *r = find(rs, "ErrorsByCode", "ErrorCode=ProvisionedThroughputExceededException");
  assert_non_null(r);
  assert_true(r->st.count == 4 && r->st.sum == 4 && r->st.min == 1 && r->st.max == 1);
  r = find(rs, "ErrorsByCode",
           "ErrorCode=ProvisionedThroughputExceededException,StreamName=s1,ShardId=sh0");
  assert_true(r && r->st.count == 4);
  r = find(rs, "ErrorsByCode", "ErrorCode=Unknown,StreamName=s1");
  assert_true(r && r->st.count == 1);
  assert_null(find(rs, "ErrorsByCode", "ErrorCode=Unknown,StreamName=s1,ShardId=sh0"));
  r = find(rs, "AllErrors", "");
  assert_true(r && r->st.count == 6);
  r = find(rs, "AllErrors", "StreamName=s1,ShardId=sh0");
  assert_true(r && r->st.count == 5);
  assert_null(find(rs, "ErrorsByCode", "")); /* never without ErrorCode */
  kp_metrics_free(m);
}

static void error_codes_are_capped_into_other(void **state) {
  kp_metrics_opts o = {.level = KP_METRICS_LEVEL_DETAILED,
                       .granularity = KP_METRICS_GRANULARITY_STREAM,
                       .max_error_codes = 3};
  kp_metrics *m = kp_metrics_new_opts(&o, T0);
  kp_metrics_handle *s = kp_metrics_stream_get(m, "s1");
  char code[32];
  for (int round = 0; round < 2; round++)
    for (int i = 0; i < 50; i++) {
      snprintf(code, sizeof code, "E%d", i);
      kp_metrics_add_error(s, code, 1, T0);
    }
  recs *rs = query(m, "ErrorsByCode", 0, T0);
  assert_int_equal(rs->n, 8); /* (3 codes + Other) x (global, stream) */
  const rec *r = find(rs, "ErrorsByCode", "ErrorCode=E0,StreamName=s1");
  assert_true(r && r->st.count == 2);
  assert_non_null(find(rs, "ErrorsByCode", "ErrorCode=E2,StreamName=s1"));
  assert_null(find(rs, "ErrorsByCode", "ErrorCode=E3,StreamName=s1"));
  r = find(rs, "ErrorsByCode", "ErrorCode=" KP_METRICS_OTHER_ERROR_CODE ",StreamName=s1");
  assert_true(r && r->st.count == 94);
  r = find(rs, "AllErrors", "StreamName=s1");
  assert_null(r); /* filtered by name */
  rs = query(m, "AllErrors", 0, T0);
  assert_int_equal(rs->n, 2);
  assert_true(rs->r[0].st.count == 100);
  kp_metrics_free(m);
}

static void query_by_name_filters_and_unknown_names_match_nothing(void **state) {
  kp_metrics *m = new_metrics(KP_METRICS_LEVEL_DETAILED, KP_METRICS_GRANULARITY_STREAM);
  kp_metrics_handle *s = kp_metrics_stream_get(m, "s1");
  kp_metrics_add(s, KP_M_USER_RECORDS_PUT, 1, T0);
  kp_metrics_add(s, KP_M_REQUEST_TIME, 1, T0);
  assert_int_equal(query(m, "RequestTime", 0, T0)->n, 2);
  assert_int_equal(query(m, "", 0, T0)->n, 4);
  assert_int_equal(query(m, NULL, 0, T0)->n, 4);
  assert_int_equal(query(m, "requesttime", 0, T0)->n, 0);
  assert_int_equal(query(m, "Bogus", 0, T0)->n, 0);
  kp_metrics_free(m);
}

static int stop_after_two(const kp_metrics_record *r, void *ud) {
  int *n = ud;
  return ++*n == 2 ? 42 : 0;
}

static void a_callback_can_stop_the_walk(void **state) {
  kp_metrics *m = new_metrics(KP_METRICS_LEVEL_DETAILED, KP_METRICS_GRANULARITY_STREAM);
  kp_metrics_handle *s = kp_metrics_stream_get(m, "s1");
  kp_metrics_add(s, KP_M_USER_RECORDS_PUT, 1, T0);
  kp_metrics_add(s, KP_M_REQUEST_TIME, 1, T0);
  int n = 0;
  assert_int_equal(kp_metrics_query(m, NULL, 0, T0, stop_after_two, &n), 42);
  assert_int_equal(n, 2);
  kp_metrics_free(m);
}

static void handles_are_shared_and_released_by_reference(void **state) {
  kp_metrics *m = new_metrics(KP_METRICS_LEVEL_DETAILED, KP_METRICS_GRANULARITY_SHARD);
  kp_metrics_handle *s = kp_metrics_stream_get(m, "s1");
  assert_ptr_equal(kp_metrics_stream_get(m, "s1"), s);
  kp_metrics_release(s); /* back to one reference */
  assert_null(kp_metrics_stream_get(m, ""));
  assert_null(kp_metrics_stream_get(m, NULL));
  assert_null(kp_metrics_shard_get(s, ""));
  assert_null(kp_metrics_shard_get(kp_metrics_global(m), "x")); /* not a stream */

  kp_metrics_handle *a = kp_metrics_shard_get(s, "sh0");
  assert_ptr_equal(kp_metrics_shard_get(s, "sh0"), a);
  kp_metrics_add(a, KP_M_USER_RECORDS_PUT, 1, T0);
  kp_metrics_release(a);
  assert_non_null(find(query(m, NULL, 0, T0), "UserRecordsPut", "StreamName=s1,ShardId=sh0"));
  kp_metrics_release(a); /* last reference: the shard goes, its totals stay above */
  recs *rs = query(m, NULL, 0, T0);
  assert_null(find(rs, "UserRecordsPut", "StreamName=s1,ShardId=sh0"));
  assert_true(find(rs, "UserRecordsPut", "StreamName=s1")->st.count == 1);

  /* the stream lives while a shard holds it, even after the caller's release */
  kp_metrics_handle *b = kp_metrics_shard_get(s, "sh1");
  kp_metrics_release(s);
  kp_metrics_add(b, KP_M_USER_RECORDS_PUT, 1, T0);
  rs = query(m, NULL, 0, T0);
  assert_true(find(rs, "UserRecordsPut", "StreamName=s1")->st.count == 2);
  kp_metrics_release(b); /* now both go */
  rs = query(m, NULL, 0, T0);
  assert_int_equal(rs->n, 1);
  assert_true(find(rs, "UserRecordsPut", "")->st.count == 2);
  kp_metrics_release(kp_metrics_global(m)); /* ignored */
  kp_metrics_release(NULL);
  kp_metrics_free(m);
}

static void many_shards_come_and_go(void **state) {
  kp_metrics *m = new_metrics(KP_METRICS_LEVEL_DETAILED, KP_METRICS_GRANULARITY_SHARD);
  kp_metrics_handle *s = kp_metrics_stream_get(m, "s1");
  kp_metrics_handle *h[300];
  char id[32];
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 300; i++) {
      snprintf(id, sizeof id, "shardId-%012d", i + round * 150);
      h[i] = kp_metrics_shard_get(s, id);
      assert_non_null(h[i]);
      kp_metrics_add(h[i], KP_M_KINESIS_RECORDS_PUT, 1, T0 + round);
    }
    for (int i = 0; i < 300; i++)
      kp_metrics_release(h[i]);
  }
  recs *rs = query(m, "KinesisRecordsPut", 0, T0 + 3);
  assert_int_equal(rs->n, 2);
  assert_true(rs->r[1].st.count == 900);
  /* lookups still find survivors among many */
  kp_metrics_handle *x = kp_metrics_shard_get(s, "shardId-000000000007");
  kp_metrics_handle *y = kp_metrics_shard_get(s, "shardId-000000000007");
  assert_ptr_equal(x, y);
  kp_metrics_free(m); /* frees handles still held */
}

static void upload_collects_each_complete_second_once(void **state) {
  kp_metrics *m = new_metrics(KP_METRICS_LEVEL_DETAILED, KP_METRICS_GRANULARITY_GLOBAL);
  kp_metrics_handle *g = kp_metrics_global(m);
  recs rs;
  for (int s = 0; s < 10; s++)
    kp_metrics_add(g, KP_M_USER_RECORDS_PUT, s, T0 + s + 0.5);
  rs.n = 0;
  assert_int_equal(kp_metrics_collect_upload(m, T0 + 5.2, collect_cb, &rs), 0);
  assert_int_equal(rs.n, 1);
  assert_true(rs.r[0].st.count == 5 && rs.r[0].st.sum == 0 + 1 + 2 + 3 + 4);
  assert_int_equal(rs.r[0].seconds, 5);
  /* a callback failure leaves the seconds for the next try */
  int n = 1;
  assert_int_equal(kp_metrics_collect_upload(m, T0 + 10.0, stop_after_two, &n), 42);
  rs.n = 0;
  assert_int_equal(kp_metrics_collect_upload(m, T0 + 10.0, collect_cb, &rs), 0);
  assert_int_equal(rs.n, 1);
  assert_true(rs.r[0].st.count == 5 && rs.r[0].st.sum == 5 + 6 + 7 + 8 + 9);
  rs.n = 0;
  assert_int_equal(kp_metrics_collect_upload(m, T0 + 10.0, collect_cb, &rs), 0);
  assert_int_equal(rs.n, 0); /* already taken */
  /* nothing new in the current second yet */
  kp_metrics_add(g, KP_M_USER_RECORDS_PUT, 100, T0 + 10.5);
  rs.n = 0;
  assert_int_equal(kp_metrics_collect_upload(m, T0 + 10.9, collect_cb, &rs), 0);
  assert_int_equal(rs.n, 0);
  rs.n = 0;
  assert_int_equal(kp_metrics_collect_upload(m, T0 + 11.0, collect_cb, &rs), 0);
  assert_int_equal(rs.n, 1);
  assert_true(rs.r[0].st.count == 1 && rs.r[0].st.sum == 100);
  /* idle series are skipped */
  rs.n = 0;
  assert_int_equal(kp_metrics_collect_upload(m, T0 + 71.0, collect_cb, &rs), 0);
  assert_int_equal(rs.n, 0);
  kp_metrics_free(m);
}

static void upload_after_a_long_stall_covers_what_the_ring_holds(void **state) {
  kp_metrics *m = new_metrics(KP_METRICS_LEVEL_DETAILED, KP_METRICS_GRANULARITY_GLOBAL);
  kp_metrics_handle *g = kp_metrics_global(m);
  for (int s = 0; s < 200; s++)
    kp_metrics_add(g, KP_M_USER_RECORDS_PUT, 1, T0 + s);
  recs rs = {.n = 0};
  assert_int_equal(kp_metrics_collect_upload(m, T0 + 200, collect_cb, &rs), 0);
  assert_int_equal(rs.n, 1);
  assert_int_equal(rs.r[0].seconds, KP_METRICS_RING - 1);
  assert_true(rs.r[0].st.count == KP_METRICS_RING - 1);
  kp_metrics_free(m);
}

static void response_has_every_required_field_and_round_trips(void **state) {
  kp_metrics_dim adds[] = {{"App", "a1", KP_METRICS_GRANULARITY_STREAM}};
  kp_metrics_opts o = {.level = KP_METRICS_LEVEL_DETAILED,
                       .granularity = KP_METRICS_GRANULARITY_SHARD,
                       .additional_dims = adds,
                       .n_additional_dims = 1};
  kp_metrics *m = kp_metrics_new_opts(&o, T0);
  kp_metrics_handle *s = kp_metrics_stream_get(m, "stream-é");
  kp_metrics_handle *a = kp_metrics_shard_get(s, "shardId-000000000000");
  kp_metrics_add(a, KP_M_USER_RECORDS_PUT, 1, T0 + 1.5);
  kp_metrics_add(a, KP_M_BUFFERING_TIME, 250, T0 + 1.5);
  kp_metrics_add_error(a, "InternalFailure", 2, T0 + 1.6);
  kp_metrics_add(s, KP_M_USER_RECORDS_PENDING, 17, T0 + 1.7);

  recs *rs = query(m, NULL, 5, T0 + 2);
  size_t expect = rs->n;
  assert_true(expect > 8);

  Kpl__MetricsResponse resp;
  assert_int_equal(kp_metrics_fill_response(m, NULL, 5, T0 + 2, &resp), 0);
  assert_int_equal(resp.n_metrics, expect);
  assert_true(protobuf_c_message_check(&resp.base));

  Kpl__Message msg = KPL__MESSAGE__INIT;
  msg.id = 7;
  msg.has_source_id = 1;
  msg.source_id = 3;
  msg.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_METRICS_RESPONSE;
  msg.metrics_response = &resp;
  size_t len = kpl__message__get_packed_size(&msg);
  uint8_t *buf = malloc(len);
  assert_non_null(buf);
  assert_int_equal(kpl__message__pack(&msg, buf), len);
  kp_metrics_response_free(&resp);
  assert_int_equal(resp.n_metrics, 0);
  assert_null(resp.metrics);

  Kpl__Message *back = kpl__message__unpack(NULL, len, buf);
  assert_non_null(back);
  assert_int_equal(back->actual_message_case, KPL__MESSAGE__ACTUAL_MESSAGE_METRICS_RESPONSE);
  Kpl__MetricsResponse *r = back->metrics_response;
  assert_int_equal(r->n_metrics, expect);
  for (size_t i = 0; i < r->n_metrics; i++) {
    Kpl__Metric *pm = r->metrics[i];
    const rec *q = &rs->r[i];
    assert_string_equal(pm->name, q->name);
    assert_int_equal(pm->seconds, 5);
    assert_non_null(pm->stats);
    assert_true(pm->stats->count == q->st.count && pm->stats->sum == q->st.sum &&
                pm->stats->min == q->st.min && pm->stats->max == q->st.max &&
                pm->stats->mean == q->st.mean);
    assert_int_equal(pm->n_dimensions, q->n_dims);
    for (size_t d = 0; d < pm->n_dimensions; d++) {
      assert_string_equal(pm->dimensions[d]->key, q->dims[d][0]);
      assert_string_equal(pm->dimensions[d]->value, q->dims[d][1]);
    }
  }
  /* spot checks */
  int found = 0;
  for (size_t i = 0; i < r->n_metrics; i++) {
    Kpl__Metric *pm = r->metrics[i];
    if (!strcmp(pm->name, "ErrorsByCode") && pm->n_dimensions == 4) {
      assert_string_equal(pm->dimensions[0]->key, "ErrorCode");
      assert_string_equal(pm->dimensions[0]->value, "InternalFailure");
      assert_string_equal(pm->dimensions[1]->value, "stream-é");
      assert_string_equal(pm->dimensions[2]->key, "App");
      assert_string_equal(pm->dimensions[3]->key, "ShardId");
      assert_true(pm->stats->count == 2);
      found++;
    }
    if (!strcmp(pm->name, "UserRecordsPending") && pm->n_dimensions == 2) {
      assert_true(pm->stats->mean == 17);
      found++;
    }
  }
  assert_int_equal(found, 2);
  kpl__message__free_unpacked(back, NULL);
  free(buf);

  /* an empty answer is valid too */
  assert_int_equal(kp_metrics_fill_response(m, "Bogus", 0, T0, &resp), 0);
  assert_int_equal(resp.n_metrics, 0);
  assert_true(protobuf_c_message_check(&resp.base));
  kp_metrics_response_free(&resp);
  kp_metrics_free(m);
}

static void a_null_metrics_object_is_inert(void **state) {
  assert_null(kp_metrics_global(NULL));
  assert_null(kp_metrics_stream_get(NULL, "s"));
  assert_null(kp_metrics_shard_get(NULL, "sh"));
  assert_int_equal(kp_metrics_get_level(NULL), KP_METRICS_LEVEL_NONE);
  kp_metrics_add(NULL, KP_M_USER_RECORDS_PUT, 1, T0);
  kp_metrics_add_error(NULL, "E", 1, T0);
  recs rs = {.n = 0};
  assert_int_equal(kp_metrics_query(NULL, NULL, 0, T0, collect_cb, &rs), 0);
  assert_int_equal(kp_metrics_collect_upload(NULL, T0, collect_cb, &rs), 0);
  assert_int_equal(rs.n, 0);
  Kpl__MetricsResponse r;
  assert_int_equal(kp_metrics_fill_response(NULL, NULL, 0, T0, &r), 0);
  assert_int_equal(r.n_metrics, 0);
  kp_metrics_response_free(&r);
  kp_metrics_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(metric_table_matches_kpl_names),
      cmocka_unit_test(shard_value_fans_out_to_stream_and_global),
      cmocka_unit_test(granularity_stream_and_global_stop_the_fan_out),
      cmocka_unit_test(stream_level_metrics_never_get_a_shard_dimension),
      cmocka_unit_test(levels_select_metrics),
      cmocka_unit_test(stats_are_count_sum_min_max_mean),
      cmocka_unit_test(window_counts_only_the_last_n_seconds),
      cmocka_unit_test(ring_rotation_over_simulated_minutes),
      cmocka_unit_test(time_going_backwards_counts_into_the_latest_second),
      cmocka_unit_test(additional_dimensions_apply_at_their_granularity),
      cmocka_unit_test(error_codes_are_counted_per_code_and_in_all_errors),
      cmocka_unit_test(error_codes_are_capped_into_other),
      cmocka_unit_test(query_by_name_filters_and_unknown_names_match_nothing),
      cmocka_unit_test(a_callback_can_stop_the_walk),
      cmocka_unit_test(handles_are_shared_and_released_by_reference),
      cmocka_unit_test(many_shards_come_and_go),
      cmocka_unit_test(upload_collects_each_complete_second_once),
      cmocka_unit_test(upload_after_a_long_stall_covers_what_the_ring_holds),
      cmocka_unit_test(response_has_every_required_field_and_round_trips),
      cmocka_unit_test(a_null_metrics_object_is_inert),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
