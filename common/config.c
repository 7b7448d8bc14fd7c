#include "common/config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

/* Enum fields are read and written through int (the table is generic); these hold on
 * every ABI we build for, and the build breaks if one does not. */
_Static_assert(sizeof(kp_log_level) == sizeof(int), "enum size");
_Static_assert(sizeof(kp_metrics_granularity) == sizeof(int), "enum size");
_Static_assert(sizeof(kp_metrics_level) == sizeof(int), "enum size");
_Static_assert(sizeof(kp_threading_model) == sizeof(int), "enum size");
_Static_assert(sizeof(kp_request_encoding) == sizeof(int), "enum size");
_Static_assert(sizeof(Kpl__Configuration__ThreadConfig) == sizeof(int), "enum size");

#define U63 ((uint64_t)INT64_MAX)
#define DIM_KEY_MAX 255
#define DIM_VALUE_MAX 1024
#define PROPERTIES_FILE_MAX (1u << 20)

static const char *const log_levels[] = {"trace", "debug", "info", "warning", "error", NULL};
static const char *const granularities[] = {"global", "stream", "shard", NULL};
static const char *const metrics_levels[] = {"none", "summary", "detailed", NULL};
static const char *const threading_models[] = {"PER_REQUEST", "POOLED", NULL};
static const char *const request_encodings[] = {"json", "cbor", NULL};

#define F(field) offsetof(kp_config, field), sizeof(((kp_config *)0)->field)
#define BOOL(n, a, d, pf, field, desc)                                                             \
  { n, a, KP_CONF_TYPE_BOOL, d, 0, 1, NULL, pf, F(field), 0, desc }
#define UINT(n, a, d, lo, hi, pf, field, desc)                                                     \
  { n, a, KP_CONF_TYPE_UINT, d, lo, hi, NULL, pf, F(field), 0, desc }
#define STR(n, a, d, lo, hi, pf, field, fl, desc)                                                  \
  { n, a, KP_CONF_TYPE_STRING, d, lo, hi, NULL, pf, F(field), fl, desc }
#define ENUM(n, a, d, names, pf, field, desc)                                                      \
  { n, a, KP_CONF_TYPE_ENUM, d, 0, 0, names, pf, F(field), 0, desc }
#define IGNORED(n, a, d, desc)                                                                     \
  { n, a, KP_CONF_TYPE_IGNORED, d, 0, 0, NULL, 0, 0, 0, 0, desc }

static const kp_config_prop props[] = {
    BOOL("AggregationEnabled", "aggregation_enabled", "true", 1, aggregation_enabled,
         "Pack several user records into one Kinesis record (KPL aggregation format)."),
    UINT("AggregationMaxCount", "aggregation_max_count", "4294967295", 1, U63, 2,
         aggregation_max_count, "Most user records in one aggregated record."),
    UINT("AggregationMaxSize", "aggregation_max_size", "51200", 64, 10485760, 3,
         aggregation_max_size, "Largest aggregated record, in bytes."),
    STR("CloudwatchEndpoint", "cloudwatch_endpoint", "", 0, KP_CONF_ENDPOINT_SIZE - 1, 4,
        cloudwatch_endpoint, KP_CONF_F_ENDPOINT,
        "CloudWatch host or http(s) URL; empty means monitoring.<Region>.amazonaws.com."),
    UINT("CloudwatchPort", "cloudwatch_port", "443", 1, 65535, 5, cloudwatch_port,
         "CloudWatch port, unless CloudwatchEndpoint names one."),
    UINT("CollectionMaxCount", "collection_max_count", "500", 1, 500, 6, collection_max_count,
         "Most Kinesis records in one PutRecords request."),
    UINT("CollectionMaxSize", "collection_max_size", "5242880", 52224, U63, 7, collection_max_size,
         "Largest PutRecords request payload, in bytes."),
    UINT("ConnectTimeout", "connect_timeout", "6000", 100, 300000, 8, connect_timeout,
         "Connection timeout, in milliseconds."),
    BOOL("EnableCoreDumps", "enable_core_dumps", "false", 9, enable_core_dumps,
         "Let the daemon dump core when it crashes."),
    BOOL("FailIfThrottled", "fail_if_throttled", "false", 10, fail_if_throttled,
         "Fail a throttled record at once instead of retrying it."),
    STR("KinesisEndpoint", "kinesis_endpoint", "", 0, KP_CONF_ENDPOINT_SIZE - 1, 11,
        kinesis_endpoint, KP_CONF_F_ENDPOINT,
        "Kinesis host or http(s) URL; empty means kinesis.<Region>.amazonaws.com."),
    UINT("KinesisPort", "kinesis_port", "443", 1, 65535, 12, kinesis_port,
         "Kinesis port, unless KinesisEndpoint names one."),
    ENUM("LogLevel", "log_level", "info", log_levels, 13, log_level,
         "Least severe level the daemon logs."),
    UINT("MaxConnections", "max_connections", "24", 1, 256, 14, max_connections,
         "Most concurrent connections to Kinesis."),
    ENUM("MetricsGranularity", "metrics_granularity", "shard", granularities, 15,
         metrics_granularity, "Finest dimension metrics are uploaded with."),
    ENUM("MetricsLevel", "metrics_level", "detailed", metrics_levels, 16, metrics_level,
         "How many metrics are uploaded to CloudWatch (none disables uploads)."),
    STR("MetricsNamespace", "metrics_namespace", "KinesisProducerLibrary", 1, 255, 17,
        metrics_namespace, KP_CONF_F_NAMESPACE,
        "CloudWatch namespace of the metrics; must not start with \"AWS/\"."),
    UINT("MetricsUploadDelay", "metrics_upload_delay", "60000", 1, 60000, 18, metrics_upload_delay,
         "Delay between metrics uploads, in milliseconds."),
    UINT("MinConnections", "min_connections", "1", 1, 16, 19, min_connections,
         "Connections kept open to Kinesis; at most MaxConnections."),
    UINT("RateLimit", "rate_limit", "150", 1, U63, 20, rate_limit,
         "Per-shard send limit, in percent of the shard's write limits."),
    UINT("RecordMaxBufferedTime", "record_max_buffered_time", "100", 0, U63, 21,
         record_max_buffered_time, "Longest a record waits to be batched, in milliseconds."),
    UINT("RecordTtl", "record_ttl", "30000", 100, U63, 22, record_ttl,
         "Time after which an unsent record fails as Expired, in milliseconds."),
    STR("Region", "region", "", 0, KP_CONF_REGION_SIZE - 1, 23, region, KP_CONF_F_REGION,
        "AWS region (e.g. us-east-1); needed when an endpoint is empty."),
    UINT("RequestTimeout", "request_timeout", "6000", 100, 600000, 24, request_timeout,
         "Request timeout, in milliseconds."),
    BOOL("VerifyCertificate", "verify_certificate", "true", 25, verify_certificate,
         "Verify the TLS certificate of the endpoints."),
    STR("ProxyHost", "proxy_host", "", 0, KP_CONF_HOST_SIZE - 1, 26, proxy_host, 0,
        "HTTP proxy host; empty means no proxy."),
    UINT("ProxyPort", "proxy_port", "443", 1, 65535, 27, proxy_port, "HTTP proxy port."),
    STR("ProxyUserName", "proxy_user_name", "", 0, KP_CONF_CRED_SIZE - 1, 28, proxy_user_name, 0,
        "HTTP proxy user name."),
    STR("ProxyPassword", "proxy_password", "", 0, KP_CONF_CRED_SIZE - 1, 29, proxy_password,
        KP_CONF_F_SECRET, "HTTP proxy password (secret: never logged)."),
    ENUM("ThreadingModel", "threading_model", "PER_REQUEST", threading_models, 30, threading_model,
         "KPL threading model; accepted, the daemon is single-threaded."),
    UINT("ThreadPoolSize", "thread_pool_size", "64", 0, UINT32_MAX, 31, thread_pool_size,
         "KPL thread pool size; accepted, the daemon is single-threaded."),
    UINT("MaxBufferedBytes", "max_buffered_bytes", "268435456", 1048576, U63, 200,
         max_buffered_bytes,
         "Ours, not the KPL's: user data the daemon holds before it stops reading its input "
         "(backpressure), in bytes."),
    ENUM("RequestEncoding", "request_encoding", "json", request_encodings, 201, request_encoding,
         "Ours, not the KPL's: PutRecords bodies in JSON 1.1 (what the KPL sends) or CBOR 1.1 "
         "(binary Data, no base64: less CPU per byte; kinesalite then returns such data only "
         "to CBOR readers). Other calls are always JSON."),
    BOOL("ResultBatches", "result_batches", "false", 202, result_batches,
         "Ours, not the KPL's: the client understands PutRecordResultBatch (one message for "
         "the records of a Kinesis record that succeeded at once). Our client library sets "
         "it; the KPL's wrapper does not."),
    {"AdditionalMetricsDimensions", "additional_metrics_dimensions", KP_CONF_TYPE_DIMS, "", 0, 0,
     NULL, 128, offsetof(kp_config, additional_metrics_dims), 0, 0,
     "Extra CloudWatch dimensions: comma-separated key:value:granularity "
     "(granularity global, stream or shard)."},
    IGNORED("CredentialsRefreshDelay", "credentials_refresh_delay", "5000",
            "KPL wrapper setting; ignored."),
    IGNORED("NativeExecutable", "native_executable", "", "KPL wrapper setting; ignored."),
    IGNORED("TempDirectory", "temp_directory", "", "KPL wrapper setting; ignored."),
    IGNORED("MaxUserRecordSize", "max_user_record_size", "1048576",
            "KPL wrapper setting; ignored."),
    IGNORED("UserRecordTimeoutInMillis", "user_record_timeout_in_millis", "0",
            "KPL wrapper setting; ignored."),
    IGNORED("StsEndpoint", "sts_endpoint", "", "Later KPL versions (proto field 32); ignored."),
    IGNORED("StsPort", "sts_port", "443", "Later KPL versions (proto field 33); ignored."),
};

#define NPROPS (sizeof props / sizeof *props)

const kp_config_prop *kp_config_props(size_t *n) {
  if (n)
    *n = NPROPS;
  return props;
}

const kp_config_prop *kp_config_find(const char *name) {
  if (!name)
    return NULL;
  for (size_t i = 0; i < NPROPS; i++)
    if (strcmp(props[i].name, name) == 0 || strcmp(props[i].alias, name) == 0)
      return &props[i];
  return NULL;
}

/* ---- small helpers ---- */

__attribute__((format(printf, 3, 4))) static int fail(char *errstr, size_t errstr_size,
                                                      const char *fmt, ...) {
  if (errstr && errstr_size) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, errstr_size, fmt, ap);
    va_end(ap);
  }
  return KP_CONF_INVALID;
}

/* A value as shown in an error: quoted, cut at 64 bytes, control characters as '?',
 * and never the value of a secret. */
static const char *shown(const kp_config_prop *p, const char *v, char *buf, size_t size) {
  if (p && (p->flags & KP_CONF_F_SECRET))
    return "(secret value not shown)";
  size_t n = 0;
  buf[n++] = '"';
  for (; *v && n + 5 < size && n < 65; v++)
    buf[n++] = (unsigned char)*v < 0x20 || *v == 0x7f ? '?' : *v;
  if (*v) {
    memcpy(buf + n, "...", 3);
    n += 3;
  }
  buf[n++] = '"';
  buf[n] = '\0';
  return buf;
}

static int get_int(const void *base, size_t off) {
  int v;
  memcpy(&v, (const char *)base + off, sizeof v);
  return v;
}

static void put_int(void *base, size_t off, int v) {
  memcpy((char *)base + off, &v, sizeof v);
}

#define FIELD(c, p, type) ((type *)((char *)(c) + (p)->offset))
#define CFIELD(c, p, type) ((const type *)((const char *)(c) + (p)->offset))

static int has_control(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f)
      return 1;
  return 0;
}

/* Decimal digits only; *overflow set when the digits exceed 2^64-1. */
static int parse_decimal(const char *s, uint64_t *out, int *overflow) {
  uint64_t v = 0;
  *overflow = 0;
  if (!*s)
    return -1;
  for (; *s; s++) {
    if (*s < '0' || *s > '9')
      return -1;
    unsigned d = (unsigned)(*s - '0');
    if (v > (UINT64_MAX - d) / 10)
      *overflow = 1;
    else
      v = v * 10 + d;
  }
  *out = v;
  return 0;
}

static void copy_str(char *dst, size_t size, const char *src) {
  size_t n = strlen(src);
  if (n >= size)
    n = size - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

/* ---- dimensions ---- */

static void dims_free(kp_metrics_dim *d, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(d[i].key);
    free(d[i].value);
  }
  free(d);
}

static int granularity_from(const char *s, size_t len, kp_metrics_granularity *out) {
  for (int i = 0; granularities[i]; i++) {
    if (strlen(granularities[i]) == len && strncasecmp(s, granularities[i], len) == 0) {
      *out = (kp_metrics_granularity)i;
      return 0;
    }
  }
  return -1;
}

static const char *dims_name = "AdditionalMetricsDimensions";

static int dim_check(const char *key, size_t klen, const char *value, size_t vlen, char *errstr,
                     size_t errstr_size) {
  if (klen < 1 || klen > DIM_KEY_MAX)
    return fail(errstr, errstr_size, "%s: key length %zu is out of range 1..%d", dims_name, klen,
                DIM_KEY_MAX);
  if (vlen < 1 || vlen > DIM_VALUE_MAX)
    return fail(errstr, errstr_size, "%s: value length %zu is out of range 1..%d", dims_name, vlen,
                DIM_VALUE_MAX);
  for (size_t i = 0; i < klen; i++)
    if ((unsigned char)key[i] < 0x20 || key[i] == 0x7f)
      return fail(errstr, errstr_size, "%s: key contains a control character", dims_name);
  for (size_t i = 0; i < vlen; i++)
    if ((unsigned char)value[i] < 0x20 || value[i] == 0x7f)
      return fail(errstr, errstr_size, "%s: value contains a control character", dims_name);
  return 0;
}

static int dims_push(kp_metrics_dim **d, size_t *n, const char *key, size_t klen, const char *value,
                     size_t vlen, kp_metrics_granularity g) {
  kp_metrics_dim *nd = realloc(*d, (*n + 1) * sizeof **d);
  if (!nd)
    return KP_CONF_NOMEM;
  *d = nd;
  char *k = strndup(key, klen), *v = strndup(value, vlen);
  if (!k || !v) {
    free(k);
    free(v);
    return KP_CONF_NOMEM;
  }
  nd[*n] = (kp_metrics_dim){k, v, g};
  (*n)++;
  return 0;
}

/* "key:value:granularity[,...]"; see kp_config_set. */
static int dims_parse(const char *s, kp_metrics_dim **out, size_t *nout, char *errstr,
                      size_t errstr_size) {
  kp_metrics_dim *d = NULL;
  size_t n = 0;
  int rc = 0;
  char buf[80];
  while (*s && rc == 0) {
    const char *end = strchr(s, ',');
    size_t len = end ? (size_t)(end - s) : strlen(s);
    const char *c1 = memchr(s, ':', len);
    const char *c2 = NULL;
    for (const char *q = s + len; q > s; q--)
      if (q[-1] == ':') {
        c2 = q - 1;
        break;
      }
    kp_metrics_granularity g = KP_METRICS_GRANULARITY_GLOBAL;
    if (!c1 || c1 == c2) {
      char entry[DIM_KEY_MAX + 1];
      copy_str(entry, len + 1 < sizeof entry ? len + 1 : sizeof entry, s);
      rc = fail(errstr, errstr_size, "%s: %s is not key:value:granularity", dims_name,
                shown(NULL, entry, buf, sizeof buf));
    } else if (granularity_from(c2 + 1, (size_t)(s + len - c2 - 1), &g)) {
      char gr[32];
      size_t gl = (size_t)(s + len - c2 - 1);
      copy_str(gr, gl + 1 < sizeof gr ? gl + 1 : sizeof gr, c2 + 1);
      rc = fail(errstr, errstr_size, "%s: granularity %s is not one of global, stream, shard",
                dims_name, shown(NULL, gr, buf, sizeof buf));
    } else {
      rc = dim_check(s, (size_t)(c1 - s), c1 + 1, (size_t)(c2 - c1 - 1), errstr, errstr_size);
      if (rc == 0)
        rc = dims_push(&d, &n, s, (size_t)(c1 - s), c1 + 1, (size_t)(c2 - c1 - 1), g);
    }
    s = end ? end + 1 : s + len;
  }
  if (rc) {
    dims_free(d, n);
    return rc;
  }
  *out = d;
  *nout = n;
  return 0;
}

/* ---- endpoints ---- */

typedef struct parsed_endpoint {
  bool tls;
  char host[KP_CONF_HOST_SIZE];
  int port; /* 0 when the endpoint names none */
} parsed_endpoint;

static int host_chars_ok(const char *h) {
  if (h[0] == '[')
    return 1; /* IPv6 literal, already checked by curl */
  for (; *h; h++)
    if (!((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') || (*h >= '0' && *h <= '9') ||
          *h == '-' || *h == '.' || *h == '_'))
      return 0;
  return 1;
}

/* Whether the URL has a part (anything but the "absent" code counts, errors too). */
static int url_has(CURLU *u, CURLUPart what, CURLUcode absent) {
  char *part = NULL;
  CURLUcode rc = curl_url_get(u, what, &part, 0);
  curl_free(part);
  return rc != absent;
}

static int parse_endpoint(const char *name, const char *s, parsed_endpoint *out, char *errstr,
                          size_t errstr_size) {
  char buf[80], url[KP_CONF_ENDPOINT_SIZE + 16];
  /* A bare host gets https:// so curl parses "host:port" as host and port. */
  snprintf(url, sizeof url, "%s%s", strstr(s, "://") ? "" : "https://", s);
  CURLU *u = curl_url();
  if (!u)
    return KP_CONF_NOMEM;
  int rc = KP_CONF_INVALID;
  char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
  const char *why = NULL;
  /* "user:password@" may be a secret: such a value is never echoed. */
  bool hide = strchr(s, '@') != NULL;
  if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
    why = "is not a host name or http(s) URL";
  else if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
           (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0))
    why = "has a scheme other than http or https";
  else if (url_has(u, CURLUPART_USER, CURLUE_NO_USER))
    why = "must not contain user info";
  else if (url_has(u, CURLUPART_QUERY, CURLUE_NO_QUERY))
    why = "must not contain a query";
  else if (url_has(u, CURLUPART_FRAGMENT, CURLUE_NO_FRAGMENT))
    why = "must not contain a fragment";
  else if (curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK && path[0] &&
           strcmp(path, "/") != 0)
    why = "must not contain a path (requests always go to /)";
  else if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host[0] ||
           strlen(host) >= sizeof out->host || !host_chars_ok(host))
    why = "has an invalid host";
  else {
    CURLUcode pc = curl_url_get(u, CURLUPART_PORT, &port, 0);
    out->tls = strcmp(scheme, "https") == 0;
    copy_str(out->host, sizeof out->host, host);
    out->port = 0;
    if (pc == CURLUE_OK) {
      uint64_t pv;
      int of;
      if (parse_decimal(port, &pv, &of) || of || pv < 1 || pv > 65535)
        why = "has a port out of range 1..65535";
      else
        out->port = (int)pv;
    } else if (pc != CURLUE_NO_PORT) {
      why = "has an invalid port";
    }
    if (!why)
      rc = 0;
  }
  if (why)
    fail(errstr, errstr_size, "%s: %s %s", name, hide ? "URL" : shown(NULL, s, buf, sizeof buf),
         why);
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  curl_free(path);
  curl_url_cleanup(u);
  return rc;
}

/* ---- setting values ---- */

static int check_string(const kp_config_prop *p, const char *v, char *errstr, size_t errstr_size) {
  char buf[80];
  size_t len = strlen(v);
  if (len < p->min || len > p->max)
    return fail(errstr, errstr_size, "%s: length %zu is out of range %" PRIu64 "..%" PRIu64,
                p->name, len, p->min, p->max);
  if (has_control(v))
    return fail(errstr, errstr_size, "%s: %s contains a control character", p->name,
                shown(p, v, buf, sizeof buf));
  if ((p->flags & KP_CONF_F_NAMESPACE) && strncmp(v, "AWS/", 4) == 0)
    return fail(errstr, errstr_size, "%s: %s must not start with \"AWS/\"", p->name,
                shown(p, v, buf, sizeof buf));
  if (p->flags & KP_CONF_F_REGION)
    for (const char *q = v; *q; q++)
      if (!((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '-'))
        return fail(errstr, errstr_size, "%s: %s may only contain a-z, 0-9 and '-'", p->name,
                    shown(p, v, buf, sizeof buf));
  if ((p->flags & KP_CONF_F_ENDPOINT) && *v) {
    parsed_endpoint ep;
    return parse_endpoint(p->name, v, &ep, errstr, errstr_size);
  }
  return 0;
}

static int check_uint(const kp_config_prop *p, uint64_t v, char *errstr, size_t errstr_size) {
  if (v < p->min || v > p->max)
    return fail(errstr, errstr_size, "%s: %" PRIu64 " is out of range %" PRIu64 "..%" PRIu64,
                p->name, v, p->min, p->max);
  return 0;
}

static int enum_index(const kp_config_prop *p, const char *v) {
  for (int i = 0; p->enum_names[i]; i++)
    if (strcasecmp(v, p->enum_names[i]) == 0)
      return i;
  return -1;
}

static int enum_count(const kp_config_prop *p) {
  int n = 0;
  while (p->enum_names[n])
    n++;
  return n;
}

static int enum_fail(const kp_config_prop *p, const char *shown_value, char *errstr,
                     size_t errstr_size) {
  char list[128] = "";
  size_t off = 0;
  for (int i = 0; p->enum_names[i]; i++)
    off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "", p->enum_names[i]);
  return fail(errstr, errstr_size, "%s: %s is not one of %s", p->name, shown_value, list);
}

static int set_prop(kp_config *c, const kp_config_prop *p, const char *v, char *errstr,
                    size_t errstr_size) {
  char buf[80];
  if (!v)
    v = "";
  switch (p->type) {
  case KP_CONF_TYPE_BOOL:
    if (strcasecmp(v, "true") == 0)
      *FIELD(c, p, bool) = true;
    else if (strcasecmp(v, "false") == 0)
      *FIELD(c, p, bool) = false;
    else
      return fail(errstr, errstr_size, "%s: %s is not a boolean (true or false)", p->name,
                  shown(p, v, buf, sizeof buf));
    return 0;
  case KP_CONF_TYPE_UINT: {
    uint64_t n;
    int overflow;
    if (parse_decimal(v, &n, &overflow))
      return fail(errstr, errstr_size,
                  "%s: %s is not a decimal number (allowed %" PRIu64 "..%" PRIu64 ")", p->name,
                  shown(p, v, buf, sizeof buf), p->min, p->max);
    if (overflow)
      return fail(errstr, errstr_size, "%s: %s is out of range %" PRIu64 "..%" PRIu64, p->name, v,
                  p->min, p->max);
    int rc = check_uint(p, n, errstr, errstr_size);
    if (rc == 0)
      *FIELD(c, p, uint64_t) = n;
    return rc;
  }
  case KP_CONF_TYPE_ENUM: {
    int i = enum_index(p, v);
    if (i < 0)
      return enum_fail(p, shown(p, v, buf, sizeof buf), errstr, errstr_size);
    put_int(c, p->offset, i);
    return 0;
  }
  case KP_CONF_TYPE_STRING: {
    int rc = check_string(p, v, errstr, errstr_size);
    if (rc == 0)
      copy_str(FIELD(c, p, char), p->size, v);
    return rc;
  }
  case KP_CONF_TYPE_DIMS: {
    kp_metrics_dim *d = NULL;
    size_t n = 0;
    int rc = dims_parse(v, &d, &n, errstr, errstr_size);
    if (rc)
      return rc;
    dims_free(c->additional_metrics_dims, c->n_additional_metrics_dims);
    c->additional_metrics_dims = d;
    c->n_additional_metrics_dims = n;
    return 0;
  }
  case KP_CONF_TYPE_IGNORED:
    KP_LOG_DEBUG("config: %s is a KPL wrapper setting, ignored", p->name);
    return 0;
  }
  return KP_CONF_INVALID;
}

int kp_config_set(kp_config *c, const char *name, const char *value, char *errstr,
                  size_t errstr_size) {
  const kp_config_prop *p = kp_config_find(name);
  if (!p) {
    char buf[80];
    fail(errstr, errstr_size, "unknown setting %s", shown(NULL, name ? name : "", buf, sizeof buf));
    return KP_CONF_UNKNOWN;
  }
  return set_prop(c, p, value, errstr, errstr_size);
}

static size_t out_str(char *out, size_t out_size, const char *s) {
  size_t n = strlen(s);
  if (out_size)
    copy_str(out, out_size, s);
  return n;
}

static int get_prop(const kp_config *c, const kp_config_prop *p, char *out, size_t out_size) {
  char num[24];
  switch (p->type) {
  case KP_CONF_TYPE_BOOL:
    return (int)out_str(out, out_size, *CFIELD(c, p, bool) ? "true" : "false");
  case KP_CONF_TYPE_UINT:
    snprintf(num, sizeof num, "%" PRIu64, *CFIELD(c, p, uint64_t));
    return (int)out_str(out, out_size, num);
  case KP_CONF_TYPE_ENUM: {
    int i = get_int(c, p->offset);
    return (int)out_str(out, out_size, i >= 0 && i < enum_count(p) ? p->enum_names[i] : "?");
  }
  case KP_CONF_TYPE_STRING:
    return (int)out_str(out, out_size, CFIELD(c, p, char));
  case KP_CONF_TYPE_DIMS: {
    size_t len = 0;
    if (out_size)
      out[0] = '\0';
    for (size_t i = 0; i < c->n_additional_metrics_dims; i++) {
      const kp_metrics_dim *d = &c->additional_metrics_dims[i];
      /* Past the end, only measure (no pointer arithmetic on a short buffer). */
      int n = len < out_size ? snprintf(out + len, out_size - len, "%s%s:%s:%s", i ? "," : "",
                                        d->key, d->value, granularities[d->granularity])
                             : snprintf(NULL, 0, "%s%s:%s:%s", i ? "," : "", d->key, d->value,
                                        granularities[d->granularity]);
      len += n > 0 ? (size_t)n : 0;
    }
    return (int)len;
  }
  case KP_CONF_TYPE_IGNORED:
    return (int)out_str(out, out_size, "");
  }
  return KP_CONF_INVALID;
}

int kp_config_get(const kp_config *c, const char *name, char *out, size_t out_size) {
  const kp_config_prop *p = kp_config_find(name);
  if (!p) {
    if (out_size)
      out[0] = '\0';
    return KP_CONF_UNKNOWN;
  }
  return get_prop(c, p, out, out_size);
}

/* ---- lifecycle ---- */

void kp_config_init(kp_config *c) {
  memset(c, 0, sizeof *c);
  /* Defaults go through the setter so the table is their only source; the table
   * defaults are valid (test_config checks), hence no error path. */
  for (size_t i = 0; i < NPROPS; i++)
    if (props[i].type != KP_CONF_TYPE_IGNORED && props[i].type != KP_CONF_TYPE_DIMS)
      set_prop(c, &props[i], props[i].default_str, NULL, 0);
}

void kp_config_free(kp_config *c) {
  dims_free(c->additional_metrics_dims, c->n_additional_metrics_dims);
  kp_config_init(c);
}

static int dims_copy(kp_metrics_dim **out, const kp_metrics_dim *src, size_t n) {
  kp_metrics_dim *d = NULL;
  size_t got = 0;
  for (size_t i = 0; i < n; i++) {
    if (dims_push(&d, &got, src[i].key, strlen(src[i].key), src[i].value, strlen(src[i].value),
                  src[i].granularity)) {
      dims_free(d, got);
      return KP_CONF_NOMEM;
    }
  }
  *out = d;
  return 0;
}

int kp_config_copy(kp_config *dst, const kp_config *src) {
  if (dst == src)
    return 0;
  kp_metrics_dim *d = NULL;
  if (dims_copy(&d, src->additional_metrics_dims, src->n_additional_metrics_dims))
    return KP_CONF_NOMEM;
  dims_free(dst->additional_metrics_dims, dst->n_additional_metrics_dims);
  *dst = *src;
  dst->additional_metrics_dims = d;
  return 0;
}

/* ---- properties files ---- */

static int is_space(char ch) {
  return ch == ' ' || ch == '\t' || ch == '\f' || ch == '\r';
}

int kp_config_parse_properties(kp_config *c, const char *text, size_t len,
                               const char *name_for_errors, char *errstr, size_t errstr_size) {
  const char *fname = name_for_errors ? name_for_errors : "<properties>";
  kp_config tmp;
  kp_config_init(&tmp);
  int rc = kp_config_copy(&tmp, c);
  if (rc)
    return rc;
  char err[512];
  unsigned lineno = 0;
  const char *p = text, *end = text + len;
  while (rc == 0 && p < end) {
    lineno++;
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *le = nl ? nl : end;
    const char *next = nl ? nl + 1 : end;
    if (memchr(p, '\0', (size_t)(le - p))) {
      rc = fail(errstr, errstr_size, "%s:%u: contains a NUL byte", fname, lineno);
      break;
    }
    while (p < le && is_space(*p))
      p++;
    while (le > p && is_space(le[-1]))
      le--;
    if (p == le || *p == '#' || *p == '!') {
      p = next;
      continue;
    }
    const char *ks = p;
    while (p < le && *p != '=' && *p != ':' && !is_space(*p))
      p++;
    const char *ke = p;
    while (p < le && is_space(*p))
      p++;
    if (p < le && (*p == '=' || *p == ':'))
      p++;
    while (p < le && is_space(*p))
      p++;
    if (ke == ks) {
      rc = fail(errstr, errstr_size, "%s:%u: missing setting name before '%c'", fname, lineno, *ks);
      break;
    }
    char *key = strndup(ks, (size_t)(ke - ks));
    char *val = strndup(p, (size_t)(le - p));
    if (!key || !val) {
      rc = KP_CONF_NOMEM;
    } else {
      rc = kp_config_set(&tmp, key, val, err, sizeof err);
      if (rc == KP_CONF_INVALID || rc == KP_CONF_UNKNOWN)
        fail(errstr, errstr_size, "%s:%u: %s", fname, lineno, err);
    }
    free(key);
    free(val);
    p = next;
  }
  if (rc == 0)
    rc = kp_config_copy(c, &tmp);
  kp_config_free(&tmp);
  return rc;
}

int kp_config_load_properties(kp_config *c, const char *path, char *errstr, size_t errstr_size) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fail(errstr, errstr_size, "%s: %s", path, strerror(errno));
    return KP_CONF_IO;
  }
  char *text = malloc(PROPERTIES_FILE_MAX + 1);
  if (!text) {
    fclose(f);
    return KP_CONF_NOMEM;
  }
  size_t n = fread(text, 1, PROPERTIES_FILE_MAX + 1, f);
  int rc;
  if (ferror(f)) {
    fail(errstr, errstr_size, "%s: read error", path);
    rc = KP_CONF_IO;
  } else if (n > PROPERTIES_FILE_MAX) {
    rc = fail(errstr, errstr_size, "%s: larger than %u bytes", path, PROPERTIES_FILE_MAX);
  } else {
    rc = kp_config_parse_properties(c, text, n, path, errstr, errstr_size);
  }
  free(text);
  fclose(f);
  return rc;
}

/* ---- endpoints and region ---- */

int kp_config_endpoint(const kp_config *c, kp_service which, kp_endpoint *out, char *errstr,
                       size_t errstr_size) {
  const char *ep_name = which == KP_SERVICE_CLOUDWATCH ? "CloudwatchEndpoint" : "KinesisEndpoint";
  const char *port_name = which == KP_SERVICE_CLOUDWATCH ? "CloudwatchPort" : "KinesisPort";
  const char *ep = which == KP_SERVICE_CLOUDWATCH ? c->cloudwatch_endpoint : c->kinesis_endpoint;
  uint64_t cfg_port = which == KP_SERVICE_CLOUDWATCH ? c->cloudwatch_port : c->kinesis_port;
  if (cfg_port < 1 || cfg_port > 65535)
    return fail(errstr, errstr_size, "%s: %" PRIu64 " is out of range 1..65535", port_name,
                cfg_port);
  parsed_endpoint pe;
  if (!ep[0]) {
    if (!c->region[0])
      return fail(errstr, errstr_size, "Region: must be set when %s is empty", ep_name);
    pe.tls = true;
    snprintf(pe.host, sizeof pe.host, "%s.%s.amazonaws.com%s",
             which == KP_SERVICE_CLOUDWATCH ? "monitoring" : "kinesis", c->region,
             strncmp(c->region, "cn-", 3) == 0 ? ".cn" : "");
    pe.port = (int)cfg_port;
  } else {
    int rc = parse_endpoint(ep_name, ep, &pe, errstr, errstr_size);
    if (rc)
      return rc;
    if (pe.port) {
      if (cfg_port != 443 && cfg_port != (uint64_t)pe.port)
        return fail(errstr, errstr_size,
                    "%s: port %d conflicts with %s %" PRIu64 " (set only one of them)", ep_name,
                    pe.port, port_name, cfg_port);
    } else {
      pe.port = cfg_port != 443 ? (int)cfg_port : pe.tls ? 443 : 80;
    }
  }
  memset(out, 0, sizeof *out);
  out->tls = pe.tls;
  copy_str(out->scheme, sizeof out->scheme, pe.tls ? "https" : "http");
  copy_str(out->host, sizeof out->host, pe.host);
  out->port = (uint16_t)pe.port;
  snprintf(out->url, sizeof out->url, "%s://%s:%d", out->scheme, out->host, pe.port);
  return 0;
}

/* "<...>.<region>[.vpce].amazonaws.com[.cn]" -> region, if it looks like one. */
static int region_from_host(const char *host, char *out, size_t out_size) {
  static const char *const suffixes[] = {".amazonaws.com", ".amazonaws.com.cn"};
  size_t hl = strlen(host);
  for (size_t s = 0; s < 2; s++) {
    size_t sl = strlen(suffixes[s]);
    if (hl <= sl || strcasecmp(host + hl - sl, suffixes[s]) != 0)
      continue;
    size_t end = hl - sl;
    if (end > 5 && strncasecmp(host + end - 5, ".vpce", 5) == 0)
      end -= 5;
    size_t start = end;
    while (start > 0 && host[start - 1] != '.')
      start--;
    size_t rl = end - start;
    /* A region is letters, then "-"-separated parts, ending in "-<digits>". */
    if (start == 0 || rl < 4 || rl >= out_size || rl >= KP_CONF_REGION_SIZE)
      return -1;
    const char *r = host + start;
    if (!(r[0] >= 'a' && r[0] <= 'z') || !(r[rl - 1] >= '0' && r[rl - 1] <= '9') ||
        !memchr(r, '-', rl))
      return -1;
    for (size_t i = 0; i < rl; i++)
      if (!((r[i] >= 'a' && r[i] <= 'z') || (r[i] >= '0' && r[i] <= '9') || r[i] == '-'))
        return -1;
    memcpy(out, r, rl);
    out[rl] = '\0';
    return 0;
  }
  return -1;
}

int kp_config_region(const kp_config *c, char *out, size_t out_size) {
  const char *r = "us-east-1";
  if (c->region[0]) {
    r = c->region;
  } else {
    const char *eps[] = {c->kinesis_endpoint, c->cloudwatch_endpoint};
    for (int i = 0; i < 2; i++) {
      parsed_endpoint pe;
      if (eps[i][0] && parse_endpoint("", eps[i], &pe, NULL, 0) == 0 &&
          region_from_host(pe.host, out, out_size) == 0)
        return 0;
    }
  }
  if (strlen(r) >= out_size)
    return KP_CONF_INVALID;
  copy_str(out, out_size, r);
  return 0;
}

/* ---- cross-setting validation ---- */

int kp_config_validate(const kp_config *c, char *errstr, size_t errstr_size) {
  if (c->min_connections > c->max_connections)
    return fail(errstr, errstr_size,
                "MinConnections: %" PRIu64 " must not exceed MaxConnections %" PRIu64,
                c->min_connections, c->max_connections);
  kp_endpoint ep;
  int rc = kp_config_endpoint(c, KP_SERVICE_KINESIS, &ep, errstr, errstr_size);
  /* An explicit CloudwatchEndpoint must parse. An empty one that cannot be derived (no
   * Region, e.g. against an emulator) is no error: metrics are still kept and can be
   * queried, only their upload is off (the daemon says so once). */
  if (rc == 0 && c->metrics_level != KP_METRICS_LEVEL_NONE && c->cloudwatch_endpoint[0])
    rc = kp_config_endpoint(c, KP_SERVICE_CLOUDWATCH, &ep, errstr, errstr_size);
  return rc;
}

void kp_config_log(const kp_config *c, kp_log_level level) {
  if (!KP_LOG_ENABLED(level))
    return;
  char val[1024];
  for (size_t i = 0; i < NPROPS; i++) {
    const kp_config_prop *p = &props[i];
    if (p->type == KP_CONF_TYPE_IGNORED)
      continue;
    get_prop(c, p, val, sizeof val);
    if ((p->flags & KP_CONF_F_SECRET) && val[0])
      copy_str(val, sizeof val, "****");
    kp_log_write(level, "config: %s = %s", p->name, val);
  }
}

/* ---- protobuf ---- */

static const ProtobufCFieldDescriptor *pb_field(const kp_config_prop *p) {
  return protobuf_c_message_descriptor_get_field(&kpl__configuration__descriptor, p->proto_field);
}

#define PB_AT(pb, off, type) ((type *)((char *)(pb) + (off)))
#define PB_CAT(pb, off, type) ((const type *)((const char *)(pb) + (off)))

void kp_config_proto_free(Kpl__Configuration *pb) {
  /* Free only what is not one of the generated defaults init points at. */
  Kpl__Configuration init;
  kpl__configuration__init(&init);
  for (size_t i = 0; i < NPROPS; i++) {
    const kp_config_prop *p = &props[i];
    if (!p->proto_field || p->type == KP_CONF_TYPE_DIMS)
      continue;
    const ProtobufCFieldDescriptor *fd = pb_field(p);
    if (fd->type != PROTOBUF_C_TYPE_STRING)
      continue;
    char *s = *PB_AT(pb, fd->offset, char *);
    if (s != *PB_AT(&init, fd->offset, char *))
      free(s);
  }
  for (size_t i = 0; i < pb->n_additional_metric_dims; i++) {
    Kpl__AdditionalDimension *d = pb->additional_metric_dims[i];
    if (!d)
      continue;
    free(d->key);
    free(d->value);
    free(d->granularity);
    free(d);
  }
  free(pb->additional_metric_dims);
  kpl__configuration__init(pb);
}

int kp_config_to_proto(const kp_config *c, Kpl__Configuration *pb) {
  kpl__configuration__init(pb);
  char val[KP_CONF_ENDPOINT_SIZE];
  for (size_t i = 0; i < NPROPS; i++) {
    const kp_config_prop *p = &props[i];
    if (!p->proto_field || p->type == KP_CONF_TYPE_DIMS)
      continue;
    const ProtobufCFieldDescriptor *fd = pb_field(p);
    if (fd->quantifier_offset)
      *PB_AT(pb, fd->quantifier_offset, protobuf_c_boolean) = 1;
    switch (fd->type) {
    case PROTOBUF_C_TYPE_BOOL:
      *PB_AT(pb, fd->offset, protobuf_c_boolean) = *CFIELD(c, p, bool);
      break;
    case PROTOBUF_C_TYPE_UINT64:
      *PB_AT(pb, fd->offset, uint64_t) = *CFIELD(c, p, uint64_t);
      break;
    case PROTOBUF_C_TYPE_UINT32:
      *PB_AT(pb, fd->offset, uint32_t) = (uint32_t)*CFIELD(c, p, uint64_t);
      break;
    case PROTOBUF_C_TYPE_ENUM:
      put_int(pb, fd->offset, get_int(c, p->offset));
      break;
    case PROTOBUF_C_TYPE_STRING: {
      get_prop(c, p, val, sizeof val);
      char *s = strdup(val);
      if (!s)
        goto nomem;
      *PB_AT(pb, fd->offset, char *) = s;
      break;
    }
    default:
      break;
    }
  }
  if (c->n_additional_metrics_dims) {
    pb->additional_metric_dims =
        calloc(c->n_additional_metrics_dims, sizeof *pb->additional_metric_dims);
    if (!pb->additional_metric_dims)
      goto nomem;
    pb->n_additional_metric_dims = c->n_additional_metrics_dims;
    for (size_t i = 0; i < c->n_additional_metrics_dims; i++) {
      const kp_metrics_dim *src = &c->additional_metrics_dims[i];
      Kpl__AdditionalDimension *d = calloc(1, sizeof *d);
      if (!d)
        goto nomem;
      kpl__additional_dimension__init(d);
      pb->additional_metric_dims[i] = d;
      d->key = strdup(src->key);
      d->value = strdup(src->value);
      d->granularity = strdup(granularities[src->granularity]);
      if (!d->key || !d->value || !d->granularity)
        goto nomem;
    }
  }
  return 0;
nomem:
  kp_config_proto_free(pb);
  return KP_CONF_NOMEM;
}

int kp_config_from_proto(kp_config *c, const Kpl__Configuration *pb, char *errstr,
                         size_t errstr_size) {
  kp_config tmp;
  kp_config_init(&tmp);
  int rc = 0;
  char num[24];
  for (size_t i = 0; i < NPROPS && rc == 0; i++) {
    const kp_config_prop *p = &props[i];
    if (!p->proto_field || p->type == KP_CONF_TYPE_DIMS)
      continue;
    const ProtobufCFieldDescriptor *fd = pb_field(p);
    /* Absent optional fields hold the proto default (protobuf-c fills them in), so
     * the value is read whatever the has_ flag says. */
    switch (fd->type) {
    case PROTOBUF_C_TYPE_BOOL:
      *FIELD(&tmp, p, bool) = *PB_CAT(pb, fd->offset, protobuf_c_boolean) != 0;
      break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_UINT32: {
      uint64_t v = fd->type == PROTOBUF_C_TYPE_UINT64 ? *PB_CAT(pb, fd->offset, uint64_t)
                                                      : *PB_CAT(pb, fd->offset, uint32_t);
      rc = check_uint(p, v, errstr, errstr_size);
      if (rc == 0)
        *FIELD(&tmp, p, uint64_t) = v;
      break;
    }
    case PROTOBUF_C_TYPE_ENUM: {
      int v = get_int(pb, fd->offset);
      if (v < 0 || v >= enum_count(p)) {
        snprintf(num, sizeof num, "%d", v);
        rc = enum_fail(p, num, errstr, errstr_size);
      } else {
        put_int(&tmp, p->offset, v);
      }
      break;
    }
    case PROTOBUF_C_TYPE_STRING: {
      const char *s = *PB_CAT(pb, fd->offset, char *);
      rc = set_prop(&tmp, p, s ? s : p->default_str, errstr, errstr_size);
      break;
    }
    default:
      break;
    }
  }
  for (size_t i = 0; i < pb->n_additional_metric_dims && rc == 0; i++) {
    const Kpl__AdditionalDimension *d = pb->additional_metric_dims[i];
    const char *k = d && d->key ? d->key : "", *v = d && d->value ? d->value : "";
    const char *g = d && d->granularity ? d->granularity : "";
    kp_metrics_granularity gv = KP_METRICS_GRANULARITY_GLOBAL;
    char buf[80];
    rc = dim_check(k, strlen(k), v, strlen(v), errstr, errstr_size);
    if (rc == 0 && granularity_from(g, strlen(g), &gv))
      rc = fail(errstr, errstr_size, "%s: granularity %s is not one of global, stream, shard",
                dims_name, shown(NULL, g, buf, sizeof buf));
    if (rc == 0)
      rc = dims_push(&tmp.additional_metrics_dims, &tmp.n_additional_metrics_dims, k, strlen(k), v,
                     strlen(v), gv);
  }
  if (rc == 0) {
    dims_free(c->additional_metrics_dims, c->n_additional_metrics_dims);
    *c = tmp;
  } else {
    kp_config_free(&tmp);
  }
  return rc;
}

int kp_config_from_bytes(kp_config *c, const uint8_t *data, size_t len, char *errstr,
                         size_t errstr_size) {
  Kpl__Configuration *pb = kpl__configuration__unpack(NULL, len, data);
  if (!pb)
    return fail(errstr, errstr_size, "Configuration: %zu bytes are not a valid message", len);
  int rc = kp_config_from_proto(c, pb, errstr, errstr_size);
  kpl__configuration__free_unpacked(pb, NULL);
  return rc;
}

int kp_config_to_bytes(const kp_config *c, uint8_t **out, size_t *len) {
  Kpl__Configuration pb;
  int rc = kp_config_to_proto(c, &pb);
  if (rc)
    return rc;
  size_t n = kpl__configuration__get_packed_size(&pb);
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) {
    kp_config_proto_free(&pb);
    return KP_CONF_NOMEM;
  }
  kpl__configuration__pack(&pb, buf);
  kp_config_proto_free(&pb);
  *out = buf;
  *len = n;
  return 0;
}

/* ---- docs ---- */

/* Markdown cell text: '<' '>' '|' would be read as HTML or a column break. */
static void md_cell(FILE *f, const char *s) {
  for (; *s; s++) {
    if (*s == '<')
      fputs("&lt;", f);
    else if (*s == '>')
      fputs("&gt;", f);
    else if (*s == '|')
      fputs("\\|", f);
    else
      fputc(*s, f);
  }
}

static const char *type_name(kp_config_type t) {
  static const char *const names[] = {"bool", "uint", "string", "enum", "list", "ignored"};
  return names[t];
}

int kp_config_write_markdown(FILE *f) {
  fprintf(f, "| name | alias | type | default | allowed | proto | description |\n");
  fprintf(f, "|---|---|---|---|---|---|---|\n");
  for (size_t i = 0; i < NPROPS; i++) {
    const kp_config_prop *p = &props[i];
    char range[160] = "";
    switch (p->type) {
    case KP_CONF_TYPE_BOOL:
      snprintf(range, sizeof range, "true, false");
      break;
    case KP_CONF_TYPE_UINT:
      if (p->max == U63)
        snprintf(range, sizeof range, "%" PRIu64 "..", p->min);
      else
        snprintf(range, sizeof range, "%" PRIu64 "..%" PRIu64, p->min, p->max);
      break;
    case KP_CONF_TYPE_STRING:
      snprintf(range, sizeof range, "%" PRIu64 "..%" PRIu64 " bytes%s", p->min, p->max,
               p->flags & KP_CONF_F_ENDPOINT    ? ", host or http(s) URL"
               : p->flags & KP_CONF_F_REGION    ? ", a-z 0-9 -"
               : p->flags & KP_CONF_F_NAMESPACE ? ", not AWS/..."
                                                : "");
      break;
    case KP_CONF_TYPE_ENUM: {
      size_t off = 0;
      for (int j = 0; p->enum_names[j]; j++)
        off += (size_t)snprintf(range + off, sizeof range - off, "%s%s", j ? ", " : "",
                                p->enum_names[j]);
      break;
    }
    case KP_CONF_TYPE_DIMS:
      snprintf(range, sizeof range, "key:value:granularity,...");
      break;
    case KP_CONF_TYPE_IGNORED:
      snprintf(range, sizeof range, "any");
      break;
    }
    char proto[16] = "";
    if (p->proto_field)
      snprintf(proto, sizeof proto, "%u", p->proto_field);
    fprintf(f, "| %s | %s | %s | %s%s%s | ", p->name, p->alias, type_name(p->type),
            p->default_str[0] ? "`" : "\"\"", p->default_str, p->default_str[0] ? "`" : "");
    md_cell(f, range);
    fprintf(f, " | %s | ", proto);
    md_cell(f, p->desc);
    fputs(" |\n", f);
  }
  return ferror(f) ? KP_CONF_IO : 0;
}
