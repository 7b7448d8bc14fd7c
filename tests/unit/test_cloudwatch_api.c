// KP_TEST_LIBS: kp_producer_core m
/* Also a tool: `test_cloudwatch_api --emit DIR` writes the bodies of two fixed
 * scenarios (one body per line) for tests/integration/test_cloudwatch_botocore.py. */
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

#include "producer/cloudwatch_api.h"

#define T0 1763805600.0 /* 2025-11-22T10:00:00Z */

static const char *body_str(kp_cw_request_set *rs, size_t i) {
  static char *s;
  free(s);
  s = malloc(rs->bodies[i].len + 1);
  memcpy(s, rs->bodies[i].data, rs->bodies[i].len);
  s[rs->bodies[i].len] = 0;
  return s;
}

static size_t count_substr(const char *s, const char *sub) {
  size_t n = 0;
  for (const char *p = s; (p = strstr(p, sub)); p += strlen(sub))
    n++;
  return n;
}

/* ---- formatting ----------------------------------------------------------------- */

static void doubles_use_the_shortest_exact_text(void **state) {
  char b[32];
  const double vals[] = {0,      3,         -5.5,     0.25, 1.0 / 3, 1e20,  123456789012345678.0,
                         2.5e-7, 1.797e308, 4.9e-324, 10,   1500,    -3e16, 1.5e3 + 0.5};
  const char *want[] = {"0",
                        "3",
                        "-5.5",
                        "0.25",
                        NULL,
                        "1e+20",
                        NULL,
                        "2.5e-07",
                        NULL,
                        NULL,
                        "10",
                        "1500",
                        "-30000000000000000",
                        "1500.5"};
  for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
    size_t n = kp_cw_format_double(vals[i], b);
    assert_int_equal(n, strlen(b));
    assert_true(strtod(b, NULL) == vals[i]);
    if (want[i])
      assert_string_equal(b, want[i]);
  }
  kp_cw_format_double(1.0 / 3, b);
  assert_string_equal(b, "0.3333333333333333");
}

static void timestamps_are_iso8601_utc_seconds(void **state) {
  char b[21];
  assert_int_equal(kp_cw_format_timestamp(0, b), 0);
  assert_string_equal(b, "1970-01-01T00:00:00Z");
  assert_int_equal(kp_cw_format_timestamp(1700000000.999, b), 0);
  assert_string_equal(b, "2023-11-14T22:13:20Z");
  assert_int_equal(kp_cw_format_timestamp(951782400, b), 0); /* leap day */
  assert_string_equal(b, "2000-02-29T00:00:00Z");
  assert_int_equal(kp_cw_format_timestamp(4107542399.0, b), 0);
  assert_string_equal(b, "2100-02-28T23:59:59Z");
  assert_int_equal(kp_cw_format_timestamp(T0, b), 0);
  assert_string_equal(b, "2025-11-22T10:00:00Z");
  assert_int_equal(kp_cw_format_timestamp(-1, b), -EINVAL);
  assert_int_equal(kp_cw_format_timestamp(NAN, b), -EINVAL);
  assert_int_equal(kp_cw_format_timestamp(1e12, b), -EINVAL);
}

/* ---- encoding ------------------------------------------------------------------- */

static void one_datum_encodes_exactly(void **state) {
  kp_cw_request_set rs;
  char err[128];
  assert_int_equal(kp_cw_request_set_init(&rs, "KinesisProducerLibrary", NULL, err, sizeof err), 0);
  kp_metrics_dimension dims[] = {{"StreamName", "my stream&co=1"}, {"ShardId", "shard~é"}};
  kp_cw_datum d = {.metric_name = "UserRecordsPut",
                   .dims = dims,
                   .n_dims = 2,
                   .timestamp = T0 + 0.7,
                   .sample_count = 3,
                   .sum = 3.5,
                   .minimum = 0.5,
                   .maximum = 2,
                   .unit = "Count"};
  assert_int_equal(kp_cw_request_set_add(&rs, &d), 0);
  assert_int_equal(rs.n_bodies, 1);
  assert_int_equal(rs.n_data, 1);
  assert_string_equal(body_str(&rs, 0),
                      "Action=PutMetricData&Version=2010-08-01&Namespace=KinesisProducerLibrary"
                      "&MetricData.member.1.MetricName=UserRecordsPut"
                      "&MetricData.member.1.Dimensions.member.1.Name=StreamName"
                      "&MetricData.member.1.Dimensions.member.1.Value=my%20stream%26co%3D1"
                      "&MetricData.member.1.Dimensions.member.2.Name=ShardId"
                      "&MetricData.member.1.Dimensions.member.2.Value=shard~%C3%A9"
                      "&MetricData.member.1.Timestamp=2025-11-22T10%3A00%3A00Z"
                      "&MetricData.member.1.StatisticValues.SampleCount=3"
                      "&MetricData.member.1.StatisticValues.Sum=3.5"
                      "&MetricData.member.1.StatisticValues.Minimum=0.5"
                      "&MetricData.member.1.StatisticValues.Maximum=2"
                      "&MetricData.member.1.Unit=Count");
  kp_cw_request_set_free(&rs);
  assert_int_equal(rs.n_bodies, 0);
}

static void namespace_rules_are_checked(void **state) {
  kp_cw_request_set rs;
  char err[128];
  char longns[300];
  memset(longns, 'a', 256);
  longns[256] = 0;
  const char *bad[] = {"", "AWS/Kinesis", ":x", longns, "tab\there", "caf\xc3\xa9"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    err[0] = 0;
    assert_int_equal(kp_cw_request_set_init(&rs, bad[i], NULL, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "MetricsNamespace"));
  }
  assert_int_equal(kp_cw_request_set_init(&rs, NULL, NULL, err, sizeof err), -EINVAL);
  longns[255] = 0;
  assert_int_equal(kp_cw_request_set_init(&rs, longns, NULL, err, sizeof err), 0);
  kp_cw_request_set_free(&rs);
  assert_int_equal(kp_cw_request_set_init(&rs, "My App/Metrics:1", NULL, err, sizeof err), 0);
  kp_cw_datum d = {.metric_name = "M", .timestamp = T0, .sample_count = 1};
  kp_cw_request_set_add(&rs, &d);
  assert_non_null(strstr(body_str(&rs, 0), "&Namespace=My%20App%2FMetrics%3A1&"));
  kp_cw_request_set_free(&rs);
}

static void data_breaking_limits_are_skipped(void **state) {
  kp_cw_request_set rs;
  assert_int_equal(kp_cw_request_set_init(&rs, "NS", NULL, NULL, 0), 0);
  kp_metrics_dimension dims[31];
  for (int i = 0; i < 31; i++)
    dims[i] = (kp_metrics_dimension){"K", "V"};
  char name256[257], val1025[1026], val1024[1025];
  memset(name256, 'n', 256);
  name256[256] = 0;
  memset(val1025, 'v', 1025);
  val1025[1025] = 0;
  memset(val1024, 'v', 1024);
  val1024[1024] = 0;
  kp_metrics_dimension big = {"K", val1025}, ok_big = {"K", val1024}, empty = {"K", ""};
  kp_cw_datum good = {.metric_name = "M", .timestamp = T0, .sample_count = 1, .unit = "Count"};
  kp_cw_datum d;
#define BAD(field_assignments)                                                                     \
  do {                                                                                             \
    d = good;                                                                                      \
    field_assignments;                                                                             \
    assert_int_equal(kp_cw_request_set_add(&rs, &d), 0);                                           \
  } while (0)
  BAD(d.metric_name = "");
  BAD(d.metric_name = NULL);
  BAD(d.metric_name = name256);
  BAD((d.dims = dims, d.n_dims = 31));
  BAD((d.dims = &big, d.n_dims = 1));
  BAD((d.dims = &empty, d.n_dims = 1));
  BAD(d.sum = NAN);
  BAD(d.maximum = INFINITY);
  BAD(d.sum = ldexp(1, 361));
  BAD(d.sample_count = 0);
  BAD((d.minimum = 2, d.maximum = 1));
  BAD(d.timestamp = -5);
  assert_int_equal(rs.skipped, 12);
  assert_int_equal(rs.n_data, 0);
  /* at the limits: accepted */
  d = good;
  d.dims = dims;
  d.n_dims = 30;
  assert_int_equal(kp_cw_request_set_add(&rs, &d), 0);
  d = good;
  d.dims = &ok_big;
  d.n_dims = 1;
  d.metric_name = name256 + 1; /* 255 */
  assert_int_equal(kp_cw_request_set_add(&rs, &d), 0);
  d = good;
  d.sum = 1e-200; /* CloudWatch rejects tiny magnitudes: sent as 0 */
  d.maximum = ldexp(1, 360);
  assert_int_equal(kp_cw_request_set_add(&rs, &d), 0);
  assert_int_equal(rs.n_data, 3);
  assert_int_equal(rs.skipped, 12);
  const char *b = body_str(&rs, 0);
  assert_non_null(strstr(b, "MetricData.member.1.Dimensions.member.30.Name=K"));
  assert_null(strstr(b, "Dimensions.member.31."));
  assert_non_null(strstr(b, "MetricData.member.3.StatisticValues.Sum=0&"));
  kp_cw_request_set_free(&rs);
#undef BAD
}

static void large_uploads_split_at_1000_data(void **state) {
  kp_cw_request_set rs;
  assert_int_equal(kp_cw_request_set_init(&rs, "NS", NULL, NULL, 0), 0);
  kp_metrics_dimension dim = {"StreamName", "s"};
  for (int i = 0; i < 2500; i++) {
    kp_cw_datum d = {.metric_name = "UserRecordsPut",
                     .dims = &dim,
                     .n_dims = 1,
                     .timestamp = T0,
                     .sample_count = i + 1,
                     .sum = i,
                     .unit = "Count"};
    assert_int_equal(kp_cw_request_set_add(&rs, &d), 0);
  }
  assert_int_equal(rs.n_bodies, 3);
  assert_int_equal(rs.n_data, 2500);
  assert_int_equal(rs.data_per_body[0], 1000);
  assert_int_equal(rs.data_per_body[1], 1000);
  assert_int_equal(rs.data_per_body[2], 500);
  for (size_t i = 0; i < 3; i++) {
    const char *b = body_str(&rs, i);
    assert_true(rs.bodies[i].len <= KP_CW_MAX_BODY_BYTES);
    assert_int_equal(strncmp(b, "Action=PutMetricData&Version=2010-08-01&Namespace=NS&", 53), 0);
    assert_int_equal(count_substr(b, ".MetricName="), rs.data_per_body[i]);
    assert_non_null(strstr(b, "&MetricData.member.1.MetricName="));
    assert_null(strstr(b, "&MetricData.member.1001."));
  }
  /* numbering restarts in each body; the second body's first datum is the 1001st */
  assert_non_null(
      strstr(body_str(&rs, 1), "&MetricData.member.1.StatisticValues.SampleCount=1001&"));
  assert_non_null(strstr(body_str(&rs, 1), "&MetricData.member.1000.MetricName="));
  kp_cw_request_set_free(&rs);
}

static void bodies_split_by_size_too(void **state) {
  kp_cw_limits lim = {.max_data_per_request = 1000, .max_body_bytes = 2000};
  kp_cw_request_set rs;
  assert_int_equal(kp_cw_request_set_init(&rs, "NS", &lim, NULL, 0), 0);
  kp_metrics_dimension dims[30];
  char vals[30][40];
  for (int i = 0; i < 30; i++) {
    snprintf(vals[i], sizeof vals[i], "value %d / with spaces", i);
    dims[i] = (kp_metrics_dimension){"Dim", vals[i]};
  }
  size_t total = 0;
  for (int i = 0; i < 40; i++) {
    kp_cw_datum d = {.metric_name = "BufferingTime",
                     .dims = dims,
                     .n_dims = (size_t)(i % 4),
                     .timestamp = T0,
                     .sample_count = 1,
                     .unit = "Milliseconds"};
    assert_int_equal(kp_cw_request_set_add(&rs, &d), 0);
  }
  assert_true(rs.n_bodies > 2);
  for (size_t i = 0; i < rs.n_bodies; i++) {
    assert_true(rs.bodies[i].len <= 2000);
    assert_int_equal(count_substr(body_str(&rs, i), ".MetricName="), rs.data_per_body[i]);
    total += rs.data_per_body[i];
  }
  assert_int_equal(total, 40);
  /* a datum that cannot fit even alone is skipped, not sent oversized */
  kp_cw_datum huge = {
      .metric_name = "M", .dims = dims, .n_dims = 30, .timestamp = T0, .sample_count = 1};
  assert_int_equal(kp_cw_request_set_add(&rs, &huge), 0);
  assert_int_equal(rs.skipped, 1);
  for (size_t i = 0; i < rs.n_bodies; i++)
    assert_true(rs.bodies[i].len <= 2000);
  kp_cw_request_set_free(&rs);
}

static void metrics_become_statistic_sets(void **state) {
  kp_metrics_opts o = {.level = KP_METRICS_LEVEL_DETAILED,
                       .granularity = KP_METRICS_GRANULARITY_SHARD};
  kp_metrics *m = kp_metrics_new_opts(&o, T0);
  kp_metrics_handle *s = kp_metrics_stream_get(m, "s1");
  kp_metrics_handle *a = kp_metrics_shard_get(s, "sh0");
  for (int i = 0; i < 10; i++) {
    kp_metrics_add(a, KP_M_BUFFERING_TIME, i * 10, T0 + i + 0.5);
    kp_metrics_add_error(a, "InternalFailure", 1, T0 + i + 0.5);
  }
  kp_cw_request_set rs;
  assert_int_equal(kp_cw_request_set_init(&rs, "KinesisProducerLibrary", NULL, NULL, 0), 0);
  assert_int_equal(kp_cw_encode_metrics(&rs, m, T0 + 10.3), 0);
  /* BufferingTime, AllErrors x 3 levels; ErrorsByCode x 3 */
  assert_int_equal(rs.n_data, 9);
  const char *b = body_str(&rs, 0);
  /* global first, by metric id: ErrorsByCode, AllErrors, BufferingTime */
  assert_non_null(strstr(b, "&MetricData.member.1.MetricName=ErrorsByCode&"));
  assert_non_null(strstr(b, "&MetricData.member.2.MetricName=AllErrors&"));
  assert_non_null(strstr(b, "&MetricData.member.3.MetricName=BufferingTime"
                            "&MetricData.member.3.Timestamp=2025-11-22T10%3A00%3A10Z"
                            "&MetricData.member.3.StatisticValues.SampleCount=10"
                            "&MetricData.member.3.StatisticValues.Sum=450"
                            "&MetricData.member.3.StatisticValues.Minimum=0"
                            "&MetricData.member.3.StatisticValues.Maximum=90"
                            "&MetricData.member.3.Unit=Milliseconds&"));
  assert_non_null(strstr(b, "Dimensions.member.1.Name=ErrorCode"));
  /* already uploaded: the next call has nothing new */
  kp_cw_request_set_free(&rs);
  assert_int_equal(kp_cw_request_set_init(&rs, "KinesisProducerLibrary", NULL, NULL, 0), 0);
  assert_int_equal(kp_cw_encode_metrics(&rs, m, T0 + 10.9), 0);
  assert_int_equal(rs.n_data, 0);
  assert_int_equal(rs.n_bodies, 0);
  kp_cw_request_set_free(&rs);
  kp_metrics_free(m);
}

/* ---- errors --------------------------------------------------------------------- */

static void error_responses_are_parsed(void **state) {
  static const char aws[] =
      "<ErrorResponse xmlns=\"http://monitoring.amazonaws.com/doc/2010-08-01/\">\n"
      "  <Error>\n    <Type>Sender</Type>\n    <Code>InvalidParameterValue</Code>\n"
      "    <Message>The value &lt;x&gt; &amp; &quot;y&quot; for &apos;Namespace&apos; is "
      "bad &#233;&#x4e2d;</Message>\n  </Error>\n"
      "  <RequestId>0c8e7b1a-0000</RequestId>\n</ErrorResponse>\n";
  kp_cw_error e;
  char err[128];
  assert_int_equal(kp_cw_error_decode(aws, strlen(aws), &e, err, sizeof err), 0);
  assert_string_equal(e.type, "Sender");
  assert_string_equal(e.code, "InvalidParameterValue");
  assert_string_equal(e.message,
                      "The value <x> & \"y\" for 'Namespace' is bad \xc3\xa9\xe4\xb8\xad");

  static const char ec2[] = "<?xml version=\"1.0\"?><Response><Errors><Error><Code>Throttling"
                            "</Code><Message><![CDATA[Rate <exceeded>]]></Message></Error>"
                            "</Errors></Response>";
  assert_int_equal(kp_cw_error_decode(ec2, strlen(ec2), &e, err, sizeof err), 0);
  assert_string_equal(e.code, "Throttling");
  assert_string_equal(e.message, "Rate <exceeded>");
  assert_string_equal(e.type, "");

  static const char noerr[] = "<ErrorResponse><RequestId>x</RequestId></ErrorResponse>";
  assert_int_equal(kp_cw_error_decode(noerr, strlen(noerr), &e, err, sizeof err), -EBADMSG);
  assert_non_null(strstr(err, "<Code>"));
  static const char empty_code[] = "<ErrorResponse><Error><Code></Code></Error></ErrorResponse>";
  assert_int_equal(kp_cw_error_decode(empty_code, strlen(empty_code), &e, err, sizeof err),
                   -EBADMSG);
  assert_int_equal(kp_cw_error_decode("", 0, &e, err, sizeof err), -EBADMSG);
  assert_int_equal(kp_cw_error_decode(NULL, 0, &e, err, sizeof err), -EBADMSG);
  static const char trunc[] = "<ErrorResponse><Error><Code>Internal"; /* cut short */
  assert_int_equal(kp_cw_error_decode(trunc, strlen(trunc), &e, err, sizeof err), -EBADMSG);
  /* bad entities pass through literally */
  static const char ent[] = "<Error><Code>A&bogus;B&#0;&#xD800;&</Code></Error>";
  assert_int_equal(kp_cw_error_decode(ent, strlen(ent), &e, NULL, 0), 0);
  assert_string_equal(e.code, "A&bogus;B&#0;&#xD800;&");
  /* only the first strlen bytes count */
  assert_int_equal(kp_cw_error_decode(aws, 40, &e, NULL, 0), -EBADMSG);
}

static void long_messages_are_truncated_on_a_character(void **state) {
  char body[2000];
  size_t n = (size_t)snprintf(body, sizeof body, "<ErrorResponse><Error><Code>C</Code><Message>");
  for (int i = 0; i < 400; i++) {
    memcpy(body + n, "\xc3\xa9", 2); /* é, 2 bytes */
    n += 2;
  }
  n += (size_t)snprintf(body + n, sizeof body - n, "</Message></Error></ErrorResponse>");
  kp_cw_error e;
  assert_int_equal(kp_cw_error_decode(body, n, &e, NULL, 0), 0);
  size_t len = strlen(e.message);
  assert_true(len <= sizeof e.message - 1 && len >= sizeof e.message - 3);
  assert_int_equal(len % 2, 0);
  assert_int_equal((uint8_t)e.message[len - 2], 0xc3);
}

static void errors_are_classified(void **state) {
  assert_int_equal(kp_cw_error_classify("Throttling", 400), KP_CW_THROTTLED);
  assert_int_equal(kp_cw_error_classify(NULL, 429), KP_CW_THROTTLED);
  assert_int_equal(kp_cw_error_classify("ExpiredToken", 400), KP_CW_CREDENTIALS);
  assert_int_equal(kp_cw_error_classify("InvalidClientTokenId", 403), KP_CW_CREDENTIALS);
  assert_int_equal(kp_cw_error_classify("AccessDenied", 403), KP_CW_CREDENTIALS);
  assert_int_equal(kp_cw_error_classify(NULL, 403), KP_CW_CREDENTIALS);
  assert_int_equal(kp_cw_error_classify("InternalServiceError", 500), KP_CW_RETRY);
  assert_int_equal(kp_cw_error_classify("ServiceUnavailable", 503), KP_CW_RETRY);
  assert_int_equal(kp_cw_error_classify(NULL, 0), KP_CW_RETRY);
  assert_int_equal(kp_cw_error_classify(NULL, 502), KP_CW_RETRY);
  assert_int_equal(kp_cw_error_classify("InvalidParameterValue", 400), KP_CW_PERMANENT);
  assert_int_equal(kp_cw_error_classify("MissingParameter", 400), KP_CW_PERMANENT);
  assert_int_equal(kp_cw_error_classify("SomethingNew", 400), KP_CW_PERMANENT);
  assert_int_equal(kp_cw_error_classify("SomethingNew", 500), KP_CW_RETRY);
}

/* ---- --emit: fixed scenarios for the botocore check ------------------------------ */

static int write_set(const char *dir, const char *name, kp_cw_request_set *rs) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  if (!f)
    return -1;
  for (size_t i = 0; i < rs->n_bodies; i++) {
    fwrite(rs->bodies[i].data, 1, rs->bodies[i].len, f);
    fputc('\n', f);
  }
  return fclose(f);
}

/* Scenario "metrics": T0..T0+9, 3 shards in 2 streams, see the Python test for the
 * expected totals. */
static int emit_metrics(const char *dir) {
  kp_metrics_dim adds[] = {{"Host", "h-1 \xc3\xa9&=+/", KP_METRICS_GRANULARITY_GLOBAL}};
  kp_metrics_opts o = {.level = KP_METRICS_LEVEL_DETAILED,
                       .granularity = KP_METRICS_GRANULARITY_SHARD,
                       .additional_dims = adds,
                       .n_additional_dims = 1};
  kp_metrics *m = kp_metrics_new_opts(&o, T0);
  kp_metrics_handle *s1 = kp_metrics_stream_get(m, "s1");
  kp_metrics_handle *s2 = kp_metrics_stream_get(m, "s2");
  kp_metrics_handle *sh[3] = {kp_metrics_shard_get(s1, "shardId-000000000000"),
                              kp_metrics_shard_get(s1, "shardId-000000000001"),
                              kp_metrics_shard_get(s2, "shardId-000000000000")};
  for (int k = 0; k < 10; k++) {
    double t = T0 + k + 0.5;
    for (int j = 0; j < 3; j++) {
      kp_metrics_add(sh[j], KP_M_USER_RECORDS_PUT, 1, t);
      kp_metrics_add(sh[j], KP_M_USER_RECORDS_DATA_PUT, 100, t);
      kp_metrics_add(sh[j], KP_M_BUFFERING_TIME, k * 10, t);
      kp_metrics_add_error(sh[j], "ProvisionedThroughputExceededException", 1, t);
    }
    kp_metrics_add(s1, KP_M_USER_RECORDS_RECEIVED, 2, t);
    kp_metrics_add(s2, KP_M_REQUEST_TIME, 12.5, t);
  }
  kp_cw_request_set rs;
  int rc = kp_cw_request_set_init(&rs, "KinesisProducerLibrary", NULL, NULL, 0);
  if (!rc)
    rc = kp_cw_encode_metrics(&rs, m, T0 + 10.2);
  if (!rc)
    rc = write_set(dir, "metrics.txt", &rs);
  kp_cw_request_set_free(&rs);
  kp_metrics_free(m);
  return rc;
}

/* Scenario "synthetic": 2345 data, 0..30 dimensions with awkward characters, values of
 * every magnitude; must split into at least 3 requests. */
static int emit_synthetic(const char *dir) {
  static const char *vals[] = {"plain",
                               "with space",
                               "a&b=c+d",
                               "slash/colon:semi;",
                               "\xc3\xbc\xe4\xb8\xad\xf0\x9f\x98\x80",
                               "~tilde-_.",
                               "100%",
                               "quote\"'<>",
                               "#hash?q"};
  kp_cw_request_set rs;
  int rc = kp_cw_request_set_init(&rs, "Test/NS:1 x", NULL, NULL, 0);
  kp_metrics_dimension dims[30];
  char keys[30][24];
  for (int i = 0; i < 2345 && !rc; i++) {
    size_t nd = (size_t)(i % 31);
    for (size_t j = 0; j < nd; j++) {
      snprintf(keys[j], sizeof keys[j], "Dim%zu", j);
      dims[j] = (kp_metrics_dimension){keys[j], vals[(i + j) % 9]};
    }
    double scale = pow(10, (i % 41) - 20);
    kp_cw_datum d = {.metric_name = kp_metric_info_get((kp_metric_id)(i % KP_M__COUNT))->name,
                     .dims = dims,
                     .n_dims = nd,
                     .timestamp = T0 + i,
                     .sample_count = i + 1,
                     .sum = (i + 1) * scale * 1.5,
                     .minimum = -scale / 3,
                     .maximum = scale * 7,
                     .unit = kp_metric_info_get((kp_metric_id)(i % KP_M__COUNT))->unit};
    rc = kp_cw_request_set_add(&rs, &d);
  }
  if (!rc && (rs.n_bodies < 3 || rs.skipped)) /* >= 3: 1000 per body, and 1 MB */
    rc = -1;
  if (!rc)
    rc = write_set(dir, "synthetic.txt", &rs);
  kp_cw_request_set_free(&rs);
  return rc;
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "--emit")) {
    if (emit_metrics(argv[2]) || emit_synthetic(argv[2])) {
      fprintf(stderr, "emit failed\n");
      return 1;
    }
    return 0;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(doubles_use_the_shortest_exact_text),
      cmocka_unit_test(timestamps_are_iso8601_utc_seconds),
      cmocka_unit_test(one_datum_encodes_exactly),
      cmocka_unit_test(namespace_rules_are_checked),
      cmocka_unit_test(data_breaking_limits_are_skipped),
      cmocka_unit_test(large_uploads_split_at_1000_data),
      cmocka_unit_test(bodies_split_by_size_too),
      cmocka_unit_test(metrics_become_statistic_sets),
      cmocka_unit_test(error_responses_are_parsed),
      cmocka_unit_test(long_messages_are_truncated_on_a_character),
      cmocka_unit_test(errors_are_classified),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
