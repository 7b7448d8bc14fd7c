// KP_TEST_LIBS: kp_common
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/config.h"

#define ERRSZ 512

/* kpl-compat.md §4, written out independently of the table so a wrong table default
 * fails here. */
static const struct {
  const char *name, *def;
} kpl_defaults[] = {
    {"AggregationEnabled", "true"},
    {"AggregationMaxCount", "4294967295"},
    {"AggregationMaxSize", "51200"},
    {"CloudwatchEndpoint", ""},
    {"CloudwatchPort", "443"},
    {"CollectionMaxCount", "500"},
    {"CollectionMaxSize", "5242880"},
    {"ConnectTimeout", "6000"},
    {"EnableCoreDumps", "false"},
    {"FailIfThrottled", "false"},
    {"KinesisEndpoint", ""},
    {"KinesisPort", "443"},
    {"LogLevel", "info"},
    {"MaxConnections", "24"},
    {"MetricsGranularity", "shard"},
    {"MetricsLevel", "detailed"},
    {"MetricsNamespace", "KinesisProducerLibrary"},
    {"MetricsUploadDelay", "60000"},
    {"MinConnections", "1"},
    {"RateLimit", "150"},
    {"RecordMaxBufferedTime", "100"},
    {"RecordTtl", "30000"},
    {"Region", ""},
    {"RequestTimeout", "6000"},
    {"VerifyCertificate", "true"},
    {"ProxyHost", ""},
    {"ProxyPort", "443"},
    {"ProxyUserName", ""},
    {"ProxyPassword", ""},
    {"ThreadingModel", "PER_REQUEST"},
    {"ThreadPoolSize", "64"},
    {"MaxBufferedBytes", "268435456"}, /* ours, not the KPL's (proto field 200) */
    {"RequestEncoding", "json"},       /* ours (proto field 201) */
    {"ResultBatches", "false"},        /* ours (proto field 202) */
    {"AdditionalMetricsDimensions", ""},
};

/* §4 ranges, again independent of the table (max 0 = open-ended, i.e. 2^63-1). */
static const struct {
  const char *name;
  uint64_t min, max;
} kpl_ranges[] = {
    {"AggregationMaxCount", 1, 0},
    {"AggregationMaxSize", 64, 10485760},
    {"CloudwatchPort", 1, 65535},
    {"CollectionMaxCount", 1, 500},
    {"CollectionMaxSize", 52224, 0},
    {"ConnectTimeout", 100, 300000},
    {"KinesisPort", 1, 65535},
    {"MaxConnections", 1, 256},
    {"MetricsUploadDelay", 1, 60000},
    {"MinConnections", 1, 16},
    {"RateLimit", 1, 0},
    {"RecordMaxBufferedTime", 0, 0},
    {"RecordTtl", 100, 0},
    {"RequestTimeout", 100, 600000},
    {"ProxyPort", 1, 65535},
    {"ThreadPoolSize", 0, 4294967295u},
    {"MaxBufferedBytes", 1048576, 0},
};

static void get(const kp_config *c, const char *name, char *out, size_t n) {
  assert_true(kp_config_get(c, name, out, n) >= 0);
}

static void assert_setting(const kp_config *c, const char *name, const char *want) {
  char v[2048];
  get(c, name, v, sizeof v);
  if (strcmp(v, want) != 0)
    fail_msg("%s: got \"%s\", want \"%s\"", name, v, want);
}

/* Equal through the table: every setting's text form, which covers every field. */
static void assert_config_equal(const kp_config *a, const kp_config *b) {
  size_t n;
  const kp_config_prop *p = kp_config_props(&n);
  for (size_t i = 0; i < n; i++) {
    char va[2048], vb[2048];
    get(a, p[i].name, va, sizeof va);
    get(b, p[i].name, vb, sizeof vb);
    if (strcmp(va, vb) != 0)
      fail_msg("%s differs: \"%s\" vs \"%s\"", p[i].name, va, vb);
  }
}

static void assert_contains(const char *hay, const char *needle) {
  if (!strstr(hay, needle))
    fail_msg("\"%s\" does not contain \"%s\"", hay, needle);
}

static void defaults_match_kpl(void **state) {
  kp_config c;
  kp_config_init(&c);
  size_t n;
  const kp_config_prop *p = kp_config_props(&n);
  size_t settings = 0;
  for (size_t i = 0; i < n; i++)
    if (p[i].type != KP_CONF_TYPE_IGNORED)
      settings++;
  assert_int_equal(settings, sizeof kpl_defaults / sizeof *kpl_defaults);
  for (size_t i = 0; i < sizeof kpl_defaults / sizeof *kpl_defaults; i++) {
    const kp_config_prop *q = kp_config_find(kpl_defaults[i].name);
    assert_non_null(q);
    assert_string_equal(q->default_str, kpl_defaults[i].def);
    assert_setting(&c, kpl_defaults[i].name, kpl_defaults[i].def);
  }
  /* And through the typed struct. */
  assert_true(c.aggregation_enabled);
  assert_int_equal(c.aggregation_max_count, 4294967295u);
  assert_int_equal(c.aggregation_max_size, 51200);
  assert_string_equal(c.cloudwatch_endpoint, "");
  assert_int_equal(c.cloudwatch_port, 443);
  assert_int_equal(c.collection_max_count, 500);
  assert_int_equal(c.collection_max_size, 5242880);
  assert_int_equal(c.connect_timeout, 6000);
  assert_false(c.enable_core_dumps);
  assert_false(c.fail_if_throttled);
  assert_string_equal(c.kinesis_endpoint, "");
  assert_int_equal(c.kinesis_port, 443);
  assert_int_equal(c.log_level, KP_LOG_LEVEL_INFO);
  assert_int_equal(c.max_connections, 24);
  assert_int_equal(c.metrics_granularity, KP_METRICS_GRANULARITY_SHARD);
  assert_int_equal(c.metrics_level, KP_METRICS_LEVEL_DETAILED);
  assert_string_equal(c.metrics_namespace, "KinesisProducerLibrary");
  assert_int_equal(c.metrics_upload_delay, 60000);
  assert_int_equal(c.min_connections, 1);
  assert_int_equal(c.rate_limit, 150);
  assert_int_equal(c.record_max_buffered_time, 100);
  assert_int_equal(c.record_ttl, 30000);
  assert_string_equal(c.region, "");
  assert_int_equal(c.request_timeout, 6000);
  assert_true(c.verify_certificate);
  assert_string_equal(c.proxy_host, "");
  assert_int_equal(c.proxy_port, 443);
  assert_string_equal(c.proxy_user_name, "");
  assert_string_equal(c.proxy_password, "");
  assert_int_equal(c.threading_model, KP_THREADING_PER_REQUEST);
  assert_int_equal(c.thread_pool_size, 64);
  assert_int_equal(c.request_encoding, KP_REQUEST_ENCODING_JSON);
  assert_null(c.additional_metrics_dims);
  assert_int_equal(c.n_additional_metrics_dims, 0);
  kp_config_free(&c);
}

static void table_ranges_and_proto_fields_match_kpl(void **state) {
  for (size_t i = 0; i < sizeof kpl_ranges / sizeof *kpl_ranges; i++) {
    const kp_config_prop *p = kp_config_find(kpl_ranges[i].name);
    assert_non_null(p);
    assert_int_equal(p->type, KP_CONF_TYPE_UINT);
    assert_int_equal(p->min, kpl_ranges[i].min);
    assert_int_equal(p->max, kpl_ranges[i].max ? kpl_ranges[i].max : (uint64_t)INT64_MAX);
  }
  /* Proto field numbers 1..31 in table order, our extensions from 200, then 128 for the
   * dimensions. */
  size_t n;
  const kp_config_prop *p = kp_config_props(&n);
  unsigned want = 1;
  for (size_t i = 0; i < n; i++) {
    if (p[i].type == KP_CONF_TYPE_IGNORED) {
      assert_int_equal(p[i].proto_field, 0);
    } else if (p[i].type == KP_CONF_TYPE_DIMS) {
      assert_int_equal(p[i].proto_field, 128);
    } else if (want > 31) {
      assert_true(p[i].proto_field >= 200);
    } else {
      assert_int_equal(p[i].proto_field, want);
      want++;
    }
  }
  assert_int_equal(want, 32);
}

static void alias_is_lower_snake_of_name(void **state) {
  size_t n;
  const kp_config_prop *p = kp_config_props(&n);
  for (size_t i = 0; i < n; i++) {
    char snake[128];
    size_t k = 0;
    for (const char *s = p[i].name; *s; s++) {
      if (*s >= 'A' && *s <= 'Z') {
        if (s != p[i].name)
          snake[k++] = '_';
        snake[k++] = (char)(*s - 'A' + 'a');
      } else {
        snake[k++] = *s;
      }
    }
    snake[k] = '\0';
    assert_string_equal(p[i].alias, snake);
    assert_ptr_equal(kp_config_find(p[i].name), &p[i]);
    assert_ptr_equal(kp_config_find(p[i].alias), &p[i]);
    assert_non_null(p[i].desc);
    assert_true(strlen(p[i].desc) > 10);
  }
}

static void set_by_name_and_alias(void **state) {
  kp_config c;
  kp_config_init(&c);
  char err[ERRSZ];
  assert_int_equal(kp_config_set(&c, "AggregationMaxSize", "65536", err, sizeof err), KP_CONF_OK);
  assert_int_equal(c.aggregation_max_size, 65536);
  assert_int_equal(kp_config_set(&c, "aggregation_max_size", "1024", err, sizeof err), KP_CONF_OK);
  assert_int_equal(c.aggregation_max_size, 1024);
  assert_int_equal(kp_config_set(&c, "fail_if_throttled", "TRUE", err, sizeof err), KP_CONF_OK);
  assert_true(c.fail_if_throttled);
  assert_int_equal(kp_config_set(&c, "LogLevel", "Debug", err, sizeof err), KP_CONF_OK);
  assert_int_equal(c.log_level, KP_LOG_LEVEL_DEBUG);
  assert_int_equal(kp_config_set(&c, "threading_model", "pooled", err, sizeof err), KP_CONF_OK);
  assert_int_equal(c.threading_model, KP_THREADING_POOLED);
  assert_setting(&c, "ThreadingModel", "POOLED");
  assert_int_equal(kp_config_set(&c, "Region", "eu-west-1", err, sizeof err), KP_CONF_OK);
  assert_string_equal(c.region, "eu-west-1");
  /* PascalCase is case-sensitive; aliases are lower case only. */
  const char *unknown[] = {"aggregationmaxsize",
                           "AGGREGATION_MAX_SIZE",
                           "Aggregation_Max_Size",
                           "aggregation.max.size",
                           "",
                           "NoSuchSetting"};
  for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
    assert_int_equal(kp_config_set(&c, unknown[i], "1", err, sizeof err), KP_CONF_UNKNOWN);
    assert_contains(err, "unknown setting");
  }
  assert_int_equal(kp_config_get(&c, "Nope", err, sizeof err), KP_CONF_UNKNOWN);
  /* Wrapper-only KPL settings are accepted and change nothing. */
  kp_config d;
  kp_config_init(&d);
  assert_int_equal(kp_config_set(&d, "CredentialsRefreshDelay", "1", err, sizeof err), KP_CONF_OK);
  assert_int_equal(kp_config_set(&d, "native_executable", "/x", err, sizeof err), KP_CONF_OK);
  kp_config def;
  kp_config_init(&def);
  assert_config_equal(&d, &def);
  kp_config_free(&c);
  kp_config_free(&d);
  kp_config_free(&def);
}

static void uint_range_boundaries_from_table(void **state) {
  size_t n;
  const kp_config_prop *p = kp_config_props(&n);
  char err[ERRSZ], v[32], range[64];
  int checked = 0;
  for (size_t i = 0; i < n; i++) {
    if (p[i].type != KP_CONF_TYPE_UINT)
      continue;
    checked++;
    kp_config c;
    kp_config_init(&c);
    snprintf(range, sizeof range, "%llu..%llu", (unsigned long long)p[i].min,
             (unsigned long long)p[i].max);
    if (p[i].min > 0) {
      snprintf(v, sizeof v, "%llu", (unsigned long long)(p[i].min - 1));
      assert_int_equal(kp_config_set(&c, p[i].name, v, err, sizeof err), KP_CONF_INVALID);
      assert_contains(err, p[i].name);
      assert_contains(err, v);
      assert_contains(err, range);
      assert_setting(&c, p[i].name, p[i].default_str); /* unchanged */
    }
    snprintf(v, sizeof v, "%llu", (unsigned long long)p[i].min);
    assert_int_equal(kp_config_set(&c, p[i].name, v, err, sizeof err), KP_CONF_OK);
    assert_setting(&c, p[i].name, v);
    snprintf(v, sizeof v, "%llu", (unsigned long long)p[i].max);
    assert_int_equal(kp_config_set(&c, p[i].alias, v, err, sizeof err), KP_CONF_OK);
    assert_setting(&c, p[i].name, v);
    snprintf(v, sizeof v, "%llu", (unsigned long long)p[i].max + 1);
    assert_int_equal(kp_config_set(&c, p[i].name, v, err, sizeof err), KP_CONF_INVALID);
    assert_contains(err, p[i].name);
    assert_contains(err, v);
    assert_contains(err, range);
    kp_config_free(&c);
  }
  assert_int_equal(checked, 17);
  /* The exact message the brief documents. */
  kp_config c;
  kp_config_init(&c);
  assert_int_equal(kp_config_set(&c, "AggregationMaxSize", "10", err, sizeof err), KP_CONF_INVALID);
  assert_string_equal(err, "AggregationMaxSize: 10 is out of range 64..10485760");
  /* Beyond 2^64-1 is out of range too, not a wrap-around. */
  assert_int_equal(kp_config_set(&c, "RecordTtl", "18446744073709551616", err, sizeof err),
                   KP_CONF_INVALID);
  assert_contains(err, "out of range 100..9223372036854775807");
  assert_int_equal(c.record_ttl, 30000);
  kp_config_free(&c);
}

static void string_length_boundaries_from_table(void **state) {
  size_t n;
  const kp_config_prop *p = kp_config_props(&n);
  char err[ERRSZ], range[64];
  char *v = malloc(4096);
  assert_non_null(v);
  for (size_t i = 0; i < n; i++) {
    if (p[i].type != KP_CONF_TYPE_STRING)
      continue;
    kp_config c;
    kp_config_init(&c);
    snprintf(range, sizeof range, "%llu..%llu", (unsigned long long)p[i].min,
             (unsigned long long)p[i].max);
    assert_true(p[i].max < p[i].size);
    if (p[i].min > 0) {
      memset(v, 'a', p[i].min - 1);
      v[p[i].min - 1] = '\0';
      assert_int_equal(kp_config_set(&c, p[i].name, v, err, sizeof err), KP_CONF_INVALID);
      assert_contains(err, p[i].name);
      assert_contains(err, range);
    }
    /* An endpoint of max length cannot be a valid host; its length limit is only a
     * buffer bound, checked by max+1 below. */
    if (!(p[i].flags & KP_CONF_F_ENDPOINT)) {
      memset(v, 'a', p[i].max);
      v[p[i].max] = '\0';
      assert_int_equal(kp_config_set(&c, p[i].name, v, err, sizeof err), KP_CONF_OK);
      assert_setting(&c, p[i].name, v);
    }
    memset(v, 'a', p[i].max + 1);
    v[p[i].max + 1] = '\0';
    assert_int_equal(kp_config_set(&c, p[i].name, v, err, sizeof err), KP_CONF_INVALID);
    assert_contains(err, p[i].name);
    assert_contains(err, range);
    kp_config_free(&c);
  }
  free(v);
}

static void bad_values_are_named_in_errors(void **state) {
  kp_config c;
  kp_config_init(&c);
  char err[ERRSZ];
  const char *bools[] = {"yes", "1", "0", "", " true", "truee"};
  for (size_t i = 0; i < sizeof bools / sizeof *bools; i++) {
    assert_int_equal(kp_config_set(&c, "VerifyCertificate", bools[i], err, sizeof err),
                     KP_CONF_INVALID);
    assert_contains(err, "VerifyCertificate");
    assert_contains(err, "true or false");
    char quoted[32];
    snprintf(quoted, sizeof quoted, "\"%s\"", bools[i]);
    assert_contains(err, quoted);
  }
  assert_true(c.verify_certificate);
  const char *nums[] = {"", "-1", "+5", "0x10", "1e3", " 5", "5 ", "12abc", "1.5"};
  for (size_t i = 0; i < sizeof nums / sizeof *nums; i++) {
    assert_int_equal(kp_config_set(&c, "MaxConnections", nums[i], err, sizeof err),
                     KP_CONF_INVALID);
    assert_contains(err, "MaxConnections");
    assert_contains(err, "not a decimal number");
    assert_contains(err, "1..256");
  }
  assert_int_equal(c.max_connections, 24);
  assert_int_equal(kp_config_set(&c, "MetricsLevel", "verbose", err, sizeof err), KP_CONF_INVALID);
  assert_string_equal(err, "MetricsLevel: \"verbose\" is not one of none, summary, detailed");
  assert_int_equal(kp_config_set(&c, "LogLevel", "fatal", err, sizeof err), KP_CONF_INVALID);
  assert_string_equal(err, "LogLevel: \"fatal\" is not one of trace, debug, info, warning, error");
  assert_int_equal(kp_config_set(&c, "MetricsGranularity", "host", err, sizeof err),
                   KP_CONF_INVALID);
  assert_contains(err, "global, stream, shard");
  assert_int_equal(kp_config_set(&c, "ThreadingModel", "MANY", err, sizeof err), KP_CONF_INVALID);
  assert_contains(err, "PER_REQUEST, POOLED");
  /* Namespace rules. */
  assert_int_equal(kp_config_set(&c, "MetricsNamespace", "AWS/Kinesis", err, sizeof err),
                   KP_CONF_INVALID);
  assert_contains(err, "AWS/");
  assert_int_equal(kp_config_set(&c, "MetricsNamespace", "", err, sizeof err), KP_CONF_INVALID);
  assert_contains(err, "1..255");
  assert_int_equal(kp_config_set(&c, "MetricsNamespace", "MyApp/AWS/x", err, sizeof err),
                   KP_CONF_OK);
  /* Region characters; control characters anywhere. */
  assert_int_equal(kp_config_set(&c, "Region", "US-EAST-1", err, sizeof err), KP_CONF_INVALID);
  assert_contains(err, "Region");
  assert_int_equal(kp_config_set(&c, "ProxyHost", "a\nb", err, sizeof err), KP_CONF_INVALID);
  assert_contains(err, "control character");
  /* A secret's value is never echoed. */
  assert_int_equal(kp_config_set(&c, "ProxyPassword", "hunter2\x01", err, sizeof err),
                   KP_CONF_INVALID);
  assert_contains(err, "ProxyPassword");
  assert_null(strstr(err, "hunter2"));
  /* Long values are cut in messages. */
  char longv[300];
  memset(longv, 'x', sizeof longv - 1);
  longv[sizeof longv - 1] = '\0';
  assert_int_equal(kp_config_set(&c, "LogLevel", longv, err, sizeof err), KP_CONF_INVALID);
  assert_true(strlen(err) < 200);
  /* A tiny errstr is truncated, not overrun; NULL errstr is fine. */
  char tiny[8];
  assert_int_equal(kp_config_set(&c, "LogLevel", "x", tiny, sizeof tiny), KP_CONF_INVALID);
  assert_int_equal(strlen(tiny), 7);
  assert_int_equal(kp_config_set(&c, "LogLevel", "x", NULL, 0), KP_CONF_INVALID);
  kp_config_free(&c);
}

static void metrics_dimensions(void **state) {
  kp_config c;
  kp_config_init(&c);
  char err[ERRSZ];
  assert_int_equal(kp_config_set(&c, "AdditionalMetricsDimensions",
                                 "App:checkout:global,Host:10.0.0.1:8080:shard", err, sizeof err),
                   KP_CONF_OK);
  assert_int_equal(c.n_additional_metrics_dims, 2);
  assert_string_equal(c.additional_metrics_dims[0].key, "App");
  assert_string_equal(c.additional_metrics_dims[0].value, "checkout");
  assert_int_equal(c.additional_metrics_dims[0].granularity, KP_METRICS_GRANULARITY_GLOBAL);
  assert_string_equal(c.additional_metrics_dims[1].key, "Host");
  assert_string_equal(c.additional_metrics_dims[1].value, "10.0.0.1:8080");
  assert_int_equal(c.additional_metrics_dims[1].granularity, KP_METRICS_GRANULARITY_SHARD);
  assert_setting(&c, "additional_metrics_dimensions",
                 "App:checkout:global,Host:10.0.0.1:8080:shard");
  const char *bad[] = {"App", "App:x", ":x:global", "App::global", "App:x:host", "a:b:shard,,"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    assert_int_equal(kp_config_set(&c, "AdditionalMetricsDimensions", bad[i], err, sizeof err),
                     KP_CONF_INVALID);
    assert_contains(err, "AdditionalMetricsDimensions");
    assert_int_equal(c.n_additional_metrics_dims, 2); /* unchanged */
  }
  assert_int_equal(kp_config_set(&c, "AdditionalMetricsDimensions", "", err, sizeof err),
                   KP_CONF_OK);
  assert_int_equal(c.n_additional_metrics_dims, 0);
  kp_config_free(&c);
}

static void copy_is_deep(void **state) {
  kp_config a, b;
  kp_config_init(&a);
  kp_config_init(&b);
  char err[ERRSZ];
  assert_int_equal(kp_config_set(&a, "AdditionalMetricsDimensions", "k:v:stream", err, sizeof err),
                   0);
  assert_int_equal(kp_config_set(&a, "Region", "ap-south-1", err, sizeof err), 0);
  assert_int_equal(
      kp_config_set(&b, "AdditionalMetricsDimensions", "old:v:stream", err, sizeof err), 0);
  assert_int_equal(kp_config_copy(&b, &a), 0);
  assert_config_equal(&a, &b);
  assert_ptr_not_equal(a.additional_metrics_dims, b.additional_metrics_dims);
  kp_config_free(&a);
  assert_string_equal(b.additional_metrics_dims[0].key, "k");
  assert_int_equal(kp_config_copy(&b, &b), 0);
  kp_config_free(&b);
}

static const char props_text[] = "# KPL sample\n"
                                 "! also a comment\n"
                                 "\n"
                                 "   \t\n"
                                 "AggregationEnabled=false\n"
                                 "  RecordMaxBufferedTime   =   250   \n"
                                 "region: us-west-2\r\n"
                                 "MetricsNamespace Spaced Name\n"
                                 "KinesisEndpoint = http://127.0.0.1:4567\n"
                                 "CredentialsRefreshDelay = 100\n"
                                 "MaxConnections = 10\n"
                                 "MaxConnections = 12\n"
                                 "ProxyPassword = p#ss = word\n"
                                 "RateLimit = 90"; /* no trailing newline */

static void properties_parse(void **state) {
  kp_config c;
  kp_config_init(&c);
  char err[ERRSZ] = "";
  assert_int_equal(kp_config_parse_properties(&c, props_text, strlen(props_text), "kpl.properties",
                                              err, sizeof err),
                   KP_CONF_OK);
  assert_false(c.aggregation_enabled);
  assert_int_equal(c.record_max_buffered_time, 250);
  assert_string_equal(c.region, "us-west-2");
  assert_string_equal(c.metrics_namespace, "Spaced Name");
  assert_string_equal(c.kinesis_endpoint, "http://127.0.0.1:4567");
  assert_int_equal(c.max_connections, 12); /* last one wins */
  assert_string_equal(c.proxy_password, "p#ss = word");
  assert_int_equal(c.rate_limit, 90);
  assert_int_equal(c.aggregation_max_size, 51200); /* untouched */
  kp_config_free(&c);
}

static void properties_errors_name_file_and_line(void **state) {
  kp_config c;
  kp_config_init(&c);
  char err[ERRSZ];
  const char *t1 = "# ok\nAggregationMaxSize = 51200\n\nAggregationMaxSize = 10\n";
  assert_int_equal(kp_config_parse_properties(&c, t1, strlen(t1), "my.properties", err, sizeof err),
                   KP_CONF_INVALID);
  assert_string_equal(err, "my.properties:4: AggregationMaxSize: 10 is out of range 64..10485760");
  const char *t2 = "Region = eu-west-1\nAggregationEnabld = true\n";
  assert_int_equal(kp_config_parse_properties(&c, t2, strlen(t2), "f", err, sizeof err),
                   KP_CONF_UNKNOWN);
  assert_string_equal(err, "f:2: unknown setting \"AggregationEnabld\"");
  /* All-or-nothing: line 1 of t2 did not stick. */
  assert_string_equal(c.region, "");
  const char *t3 = "\n\n = 5\n";
  assert_int_equal(kp_config_parse_properties(&c, t3, strlen(t3), "f", err, sizeof err),
                   KP_CONF_INVALID);
  assert_contains(err, "f:3:");
  const char t4[] = "Region = a\0b\n";
  assert_int_equal(kp_config_parse_properties(&c, t4, sizeof t4 - 1, "f", err, sizeof err),
                   KP_CONF_INVALID);
  assert_contains(err, "f:1:");
  kp_config def;
  kp_config_init(&def);
  assert_config_equal(&c, &def);
  kp_config_free(&def);
  kp_config_free(&c);
}

static void properties_file_load(void **state) {
  char path[] = "/tmp/kp_test_config_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  const char *text = "LogLevel = warning\nMinConnections = 17\n";
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  kp_config c;
  kp_config_init(&c);
  char err[ERRSZ], want[600];
  assert_int_equal(kp_config_load_properties(&c, path, err, sizeof err), KP_CONF_INVALID);
  snprintf(want, sizeof want, "%s:2: MinConnections: 17 is out of range 1..16", path);
  assert_string_equal(err, want);
  assert_int_equal(c.log_level, KP_LOG_LEVEL_INFO);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs("LogLevel = warning\nMinConnections = 16\n", f);
  fclose(f);
  assert_int_equal(kp_config_load_properties(&c, path, err, sizeof err), KP_CONF_OK);
  assert_int_equal(c.log_level, KP_LOG_LEVEL_WARNING);
  assert_int_equal(c.min_connections, 16);
  unlink(path);
  assert_int_equal(kp_config_load_properties(&c, path, err, sizeof err), KP_CONF_IO);
  assert_contains(err, path);
  kp_config_free(&c);
}

/* Sets every setting to a valid non-default value. */
static void change_everything(kp_config *c) {
  static const struct {
    const char *name, *value;
  } strs[] = {
      {"CloudwatchEndpoint", "https://monitoring.example.com:8443"},
      {"KinesisEndpoint", "http://127.0.0.1:4567"},
      {"MetricsNamespace", "MyApp"},
      {"Region", "eu-central-1"},
      {"ProxyHost", "proxy.local"},
      {"ProxyUserName", "bob"},
      {"ProxyPassword", "s3cret"},
      {"AdditionalMetricsDimensions", "App:a:global,Env:prod:shard"},
  };
  char err[ERRSZ], v[64];
  size_t n;
  const kp_config_prop *p = kp_config_props(&n);
  for (size_t i = 0; i < n; i++) {
    switch (p[i].type) {
    case KP_CONF_TYPE_BOOL:
      snprintf(v, sizeof v, "%s", strcmp(p[i].default_str, "true") ? "true" : "false");
      break;
    case KP_CONF_TYPE_UINT: {
      uint64_t d = strtoull(p[i].default_str, NULL, 10);
      snprintf(v, sizeof v, "%llu", (unsigned long long)(d == p[i].min ? p[i].min + 1 : p[i].min));
      break;
    }
    case KP_CONF_TYPE_ENUM:
      snprintf(v, sizeof v, "%s",
               strcmp(p[i].enum_names[0], p[i].default_str) ? p[i].enum_names[0]
                                                            : p[i].enum_names[1]);
      break;
    case KP_CONF_TYPE_STRING:
    case KP_CONF_TYPE_DIMS:
      v[0] = '\0';
      for (size_t j = 0; j < sizeof strs / sizeof *strs; j++)
        if (strcmp(strs[j].name, p[i].name) == 0)
          snprintf(v, sizeof v, "%s", strs[j].value);
      break;
    case KP_CONF_TYPE_IGNORED:
      continue;
    }
    if (kp_config_set(c, p[i].name, v, err, sizeof err) != KP_CONF_OK)
      fail_msg("%s=%s: %s", p[i].name, v, err);
    char got[1024];
    get(c, p[i].name, got, sizeof got);
    if (strcmp(got, p[i].default_str) == 0)
      fail_msg("%s was not changed from its default", p[i].name);
  }
}

static void proto_round_trip(kp_config *orig) {
  Kpl__Configuration pb;
  assert_int_equal(kp_config_to_proto(orig, &pb), KP_CONF_OK);
  size_t len = kpl__configuration__get_packed_size(&pb);
  uint8_t *buf = malloc(len);
  assert_non_null(buf);
  kpl__configuration__pack(&pb, buf);
  kp_config_proto_free(&pb);

  Kpl__Configuration *un = kpl__configuration__unpack(NULL, len, buf);
  assert_non_null(un);
  kp_config back;
  kp_config_init(&back);
  char err[ERRSZ] = "";
  if (kp_config_from_proto(&back, un, err, sizeof err) != KP_CONF_OK)
    fail_msg("from_proto: %s", err);
  kpl__configuration__free_unpacked(un, NULL);
  assert_config_equal(orig, &back);

  /* The bytes helpers agree with the above. */
  uint8_t *b2;
  size_t l2;
  assert_int_equal(kp_config_to_bytes(orig, &b2, &l2), KP_CONF_OK);
  assert_int_equal(l2, len);
  assert_memory_equal(b2, buf, len);
  kp_config back2;
  kp_config_init(&back2);
  assert_int_equal(kp_config_from_bytes(&back2, b2, l2, err, sizeof err), KP_CONF_OK);
  assert_config_equal(orig, &back2);
  free(b2);
  free(buf);
  kp_config_free(&back);
  kp_config_free(&back2);
}

static void proto_round_trip_defaults_and_everything_changed(void **state) {
  kp_config c;
  kp_config_init(&c);
  proto_round_trip(&c);
  change_everything(&c);
  proto_round_trip(&c);
  /* Typed spot checks after a trip through the wire. */
  uint8_t *b;
  size_t l;
  assert_int_equal(kp_config_to_bytes(&c, &b, &l), 0);
  kp_config d;
  kp_config_init(&d);
  assert_int_equal(kp_config_from_bytes(&d, b, l, NULL, 0), 0);
  assert_int_equal(d.threading_model, KP_THREADING_POOLED);
  assert_int_equal(d.thread_pool_size, 0);
  assert_false(d.aggregation_enabled);
  assert_string_equal(d.proxy_password, "s3cret");
  assert_int_equal(d.n_additional_metrics_dims, 2);
  assert_int_equal(d.additional_metrics_dims[1].granularity, KP_METRICS_GRANULARITY_SHARD);
  free(b);
  kp_config_free(&d);
  kp_config_free(&c);
}

static void proto_absent_fields_are_defaults_and_bad_values_rejected(void **state) {
  Kpl__Configuration pb = KPL__CONFIGURATION__INIT;
  kp_config c, def;
  kp_config_init(&c);
  kp_config_init(&def);
  char err[ERRSZ];
  assert_int_equal(kp_config_set(&c, "Region", "x-y-1", err, sizeof err), 0);
  assert_int_equal(kp_config_from_proto(&c, &pb, err, sizeof err), KP_CONF_OK);
  assert_config_equal(&c, &def);
  /* An empty message on the wire is all defaults too. */
  assert_int_equal(kp_config_from_bytes(&c, (const uint8_t *)"", 0, err, sizeof err), 0);
  assert_config_equal(&c, &def);

  pb.has_aggregation_max_size = 1;
  pb.aggregation_max_size = 10;
  assert_int_equal(kp_config_from_proto(&c, &pb, err, sizeof err), KP_CONF_INVALID);
  assert_string_equal(err, "AggregationMaxSize: 10 is out of range 64..10485760");
  pb.aggregation_max_size = 51200;
  pb.log_level = "loud";
  assert_int_equal(kp_config_from_proto(&c, &pb, err, sizeof err), KP_CONF_INVALID);
  assert_contains(err, "LogLevel: \"loud\"");
  pb.log_level = "warning";
  pb.has_thread_config = 1;
  pb.thread_config = (Kpl__Configuration__ThreadConfig)7;
  assert_int_equal(kp_config_from_proto(&c, &pb, err, sizeof err), KP_CONF_INVALID);
  assert_contains(err, "ThreadingModel: 7");
  pb.thread_config = KPL__CONFIGURATION__THREAD_CONFIG__POOLED;
  pb.kinesis_endpoint = "ftp://x";
  assert_int_equal(kp_config_from_proto(&c, &pb, err, sizeof err), KP_CONF_INVALID);
  assert_contains(err, "KinesisEndpoint");
  pb.kinesis_endpoint = "localhost";
  Kpl__AdditionalDimension dim = KPL__ADDITIONAL_DIMENSION__INIT;
  Kpl__AdditionalDimension *dims[] = {&dim};
  dim.key = "k";
  dim.value = "v";
  dim.granularity = "host";
  pb.n_additional_metric_dims = 1;
  pb.additional_metric_dims = dims;
  assert_int_equal(kp_config_from_proto(&c, &pb, err, sizeof err), KP_CONF_INVALID);
  assert_contains(err, "granularity");
  assert_config_equal(&c, &def); /* unchanged by any failure */
  dim.granularity = "stream";
  assert_int_equal(kp_config_from_proto(&c, &pb, err, sizeof err), KP_CONF_OK);
  assert_int_equal(c.log_level, KP_LOG_LEVEL_WARNING);
  assert_int_equal(c.threading_model, KP_THREADING_POOLED);
  assert_string_equal(c.kinesis_endpoint, "localhost");
  assert_int_equal(c.n_additional_metrics_dims, 1);
  /* Garbage bytes. */
  const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff};
  assert_int_equal(kp_config_from_bytes(&c, junk, sizeof junk, err, sizeof err), KP_CONF_INVALID);
  assert_contains(err, "Configuration");
  kp_config_free(&c);
  kp_config_free(&def);
}

static void check_endpoint(kp_config *c, kp_service which, const char *url, bool tls,
                           const char *host, int port) {
  kp_endpoint ep;
  char err[ERRSZ] = "";
  if (kp_config_endpoint(c, which, &ep, err, sizeof err) != 0)
    fail_msg("endpoint: %s", err);
  assert_string_equal(ep.url, url);
  assert_int_equal(ep.tls, tls);
  assert_string_equal(ep.scheme, tls ? "https" : "http");
  assert_string_equal(ep.host, host);
  assert_int_equal(ep.port, port);
}

static void set_ok(kp_config *c, const char *name, const char *value) {
  char err[ERRSZ];
  if (kp_config_set(c, name, value, err, sizeof err) != KP_CONF_OK)
    fail_msg("%s=%s: %s", name, value, err);
}

static void endpoint_resolution(void **state) {
  kp_config c;
  kp_config_init(&c);
  kp_endpoint ep;
  char err[ERRSZ];
  /* Empty endpoint and empty region: an error naming Region. */
  assert_int_equal(kp_config_endpoint(&c, KP_SERVICE_KINESIS, &ep, err, sizeof err),
                   KP_CONF_INVALID);
  assert_contains(err, "Region");
  set_ok(&c, "Region", "us-west-2");
  check_endpoint(&c, KP_SERVICE_KINESIS, "https://kinesis.us-west-2.amazonaws.com:443", true,
                 "kinesis.us-west-2.amazonaws.com", 443);
  check_endpoint(&c, KP_SERVICE_CLOUDWATCH, "https://monitoring.us-west-2.amazonaws.com:443", true,
                 "monitoring.us-west-2.amazonaws.com", 443);
  set_ok(&c, "Region", "cn-north-1");
  check_endpoint(&c, KP_SERVICE_KINESIS, "https://kinesis.cn-north-1.amazonaws.com.cn:443", true,
                 "kinesis.cn-north-1.amazonaws.com.cn", 443);
  /* Host only, then with the Port setting. */
  set_ok(&c, "KinesisEndpoint", "localhost");
  check_endpoint(&c, KP_SERVICE_KINESIS, "https://localhost:443", true, "localhost", 443);
  set_ok(&c, "KinesisPort", "4567");
  check_endpoint(&c, KP_SERVICE_KINESIS, "https://localhost:4567", true, "localhost", 4567);
  /* http URL: port from the URL, from the Port setting, or the scheme's default. */
  set_ok(&c, "KinesisEndpoint", "http://127.0.0.1:4567");
  check_endpoint(&c, KP_SERVICE_KINESIS, "http://127.0.0.1:4567", false, "127.0.0.1", 4567);
  set_ok(&c, "KinesisEndpoint", "http://127.0.0.1");
  check_endpoint(&c, KP_SERVICE_KINESIS, "http://127.0.0.1:4567", false, "127.0.0.1", 4567);
  set_ok(&c, "KinesisPort", "443");
  check_endpoint(&c, KP_SERVICE_KINESIS, "http://127.0.0.1:80", false, "127.0.0.1", 80);
  /* https URL with port, trailing slash, upper-case scheme, host:port, IPv6. */
  set_ok(&c, "CloudwatchEndpoint", "https://cw.example.com:8443/");
  check_endpoint(&c, KP_SERVICE_CLOUDWATCH, "https://cw.example.com:8443", true, "cw.example.com",
                 8443);
  set_ok(&c, "KinesisEndpoint", "HTTPS://k.example.com");
  check_endpoint(&c, KP_SERVICE_KINESIS, "https://k.example.com:443", true, "k.example.com", 443);
  set_ok(&c, "KinesisEndpoint", "localhost:4568");
  check_endpoint(&c, KP_SERVICE_KINESIS, "https://localhost:4568", true, "localhost", 4568);
  set_ok(&c, "KinesisEndpoint", "http://[::1]:4567");
  check_endpoint(&c, KP_SERVICE_KINESIS, "http://[::1]:4567", false, "[::1]", 4567);
  /* Port in the URL and a different Port setting: ambiguous, rejected. */
  set_ok(&c, "KinesisEndpoint", "http://127.0.0.1:4567");
  set_ok(&c, "KinesisPort", "4568");
  assert_int_equal(kp_config_endpoint(&c, KP_SERVICE_KINESIS, &ep, err, sizeof err),
                   KP_CONF_INVALID);
  assert_contains(err, "KinesisPort 4568");
  set_ok(&c, "KinesisPort", "4567");
  check_endpoint(&c, KP_SERVICE_KINESIS, "http://127.0.0.1:4567", false, "127.0.0.1", 4567);
  /* Bad endpoints are rejected when set, and the old value stays. */
  const char *bad[] = {
      "ftp://example.com",        "http://example.com/path",    "http://example.com/?q=1",
      "http://example.com/#frag", "http://user:pw@example.com", "http://exa mple.com",
      "http://example.com:0",     "http://example.com:70000",   "http://",
      "http://exa$mple.com",      "https://host:port"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    if (kp_config_set(&c, "KinesisEndpoint", bad[i], err, sizeof err) != KP_CONF_INVALID)
      fail_msg("accepted %s", bad[i]);
    assert_contains(err, "KinesisEndpoint");
    assert_null(strstr(err, ":pw@")); /* user info is not echoed beyond the quote cut */
  }
  assert_string_equal(c.kinesis_endpoint, "http://127.0.0.1:4567");
  kp_config_free(&c);
}

static void region_derivation(void **state) {
  kp_config c;
  kp_config_init(&c);
  char r[64];
  assert_int_equal(kp_config_region(&c, r, sizeof r), 0);
  assert_string_equal(r, "us-east-1");
  set_ok(&c, "KinesisEndpoint", "kinesis.us-west-2.amazonaws.com");
  assert_int_equal(kp_config_region(&c, r, sizeof r), 0);
  assert_string_equal(r, "us-west-2");
  set_ok(&c, "KinesisEndpoint", "https://vpce-0a1b-c2d3.kinesis.eu-west-3.vpce.amazonaws.com");
  assert_int_equal(kp_config_region(&c, r, sizeof r), 0);
  assert_string_equal(r, "eu-west-3");
  set_ok(&c, "KinesisEndpoint", "kinesis.cn-northwest-1.amazonaws.com.cn");
  assert_int_equal(kp_config_region(&c, r, sizeof r), 0);
  assert_string_equal(r, "cn-northwest-1");
  set_ok(&c, "KinesisEndpoint", "http://127.0.0.1:4567");
  assert_int_equal(kp_config_region(&c, r, sizeof r), 0);
  assert_string_equal(r, "us-east-1");
  set_ok(&c, "CloudwatchEndpoint", "monitoring.ap-northeast-1.amazonaws.com");
  assert_int_equal(kp_config_region(&c, r, sizeof r), 0);
  assert_string_equal(r, "ap-northeast-1");
  set_ok(&c, "Region", "sa-east-1");
  assert_int_equal(kp_config_region(&c, r, sizeof r), 0);
  assert_string_equal(r, "sa-east-1");
  assert_int_equal(kp_config_region(&c, r, 4), KP_CONF_INVALID);
  kp_config_free(&c);
}

static void validate_cross_settings(void **state) {
  kp_config c;
  kp_config_init(&c);
  char err[ERRSZ];
  assert_int_equal(kp_config_validate(&c, err, sizeof err), KP_CONF_INVALID);
  assert_contains(err, "Region");
  set_ok(&c, "Region", "us-east-1");
  assert_int_equal(kp_config_validate(&c, err, sizeof err), KP_CONF_OK);
  set_ok(&c, "MaxConnections", "4");
  set_ok(&c, "MinConnections", "5");
  assert_int_equal(kp_config_validate(&c, err, sizeof err), KP_CONF_INVALID);
  assert_string_equal(err, "MinConnections: 5 must not exceed MaxConnections 4");
  set_ok(&c, "MinConnections", "4");
  assert_int_equal(kp_config_validate(&c, err, sizeof err), KP_CONF_OK);
  set_ok(&c, "CloudwatchEndpoint", "http://localhost:1");
  set_ok(&c, "CloudwatchPort", "2");
  assert_int_equal(kp_config_validate(&c, err, sizeof err), KP_CONF_INVALID);
  assert_contains(err, "CloudwatchEndpoint");
  /* CloudWatch is not used when metrics are off. */
  set_ok(&c, "MetricsLevel", "none");
  assert_int_equal(kp_config_validate(&c, err, sizeof err), KP_CONF_OK);
  kp_config_free(&c);
}

static char captured[8192];

static void capture(kp_log_level level, const char *line, size_t len, void *ud) {
  strncat(captured, line, sizeof captured - strlen(captured) - 1);
}

static void log_masks_secrets(void **state) {
  kp_config c;
  kp_config_init(&c);
  set_ok(&c, "ProxyPassword", "hunter2");
  set_ok(&c, "ProxyUserName", "bob");
  captured[0] = '\0';
  kp_log_set_sink(capture, NULL);
  kp_config_log(&c, KP_LOG_LEVEL_INFO);
  kp_log_set_sink(NULL, NULL);
  assert_contains(captured, "config: ProxyUserName = bob\n");
  assert_contains(captured, "config: ProxyPassword = ****\n");
  assert_contains(captured, "config: AggregationMaxSize = 51200\n");
  assert_null(strstr(captured, "hunter2"));
  kp_config_free(&c);
}

/* docs/configuration.md holds the table between markers; it must match the code.
 * KP_UPDATE_DOCS=1 rewrites it. */
static void docs_match_table(void **state) {
  const char *src = getenv("KP_SOURCE_DIR");
  if (!src)
    skip();
  char path[1024];
  snprintf(path, sizeof path, "%s/docs/configuration.md", src);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  static char doc[65536];
  size_t n = fread(doc, 1, sizeof doc - 1, f);
  doc[n] = '\0';
  fclose(f);
  const char *begin_m = "<!-- BEGIN SETTINGS TABLE (generated by test_config) -->\n";
  const char *end_m = "<!-- END SETTINGS TABLE -->\n";
  char *b = strstr(doc, begin_m), *e = strstr(doc, end_m);
  assert_non_null(b);
  assert_non_null(e);
  b += strlen(begin_m);

  char *gen = NULL;
  size_t gen_len = 0;
  FILE *m = open_memstream(&gen, &gen_len);
  assert_non_null(m);
  assert_int_equal(kp_config_write_markdown(m), 0);
  fclose(m);

  if (getenv("KP_UPDATE_DOCS")) {
    f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(doc, 1, (size_t)(b - doc), f);
    fwrite(gen, 1, gen_len, f);
    fputs(e, f);
    fclose(f);
  } else if ((size_t)(e - b) != gen_len || memcmp(b, gen, gen_len) != 0) {
    fail_msg("docs/configuration.md is out of date: run test_config with KP_UPDATE_DOCS=1");
  }
  free(gen);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(defaults_match_kpl),
      cmocka_unit_test(table_ranges_and_proto_fields_match_kpl),
      cmocka_unit_test(alias_is_lower_snake_of_name),
      cmocka_unit_test(set_by_name_and_alias),
      cmocka_unit_test(uint_range_boundaries_from_table),
      cmocka_unit_test(string_length_boundaries_from_table),
      cmocka_unit_test(bad_values_are_named_in_errors),
      cmocka_unit_test(metrics_dimensions),
      cmocka_unit_test(copy_is_deep),
      cmocka_unit_test(properties_parse),
      cmocka_unit_test(properties_errors_name_file_and_line),
      cmocka_unit_test(properties_file_load),
      cmocka_unit_test(proto_round_trip_defaults_and_everything_changed),
      cmocka_unit_test(proto_absent_fields_are_defaults_and_bad_values_rejected),
      cmocka_unit_test(endpoint_resolution),
      cmocka_unit_test(region_derivation),
      cmocka_unit_test(validate_cross_settings),
      cmocka_unit_test(log_masks_secrets),
      cmocka_unit_test(docs_match_table),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
