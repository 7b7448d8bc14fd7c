/* CloudWatch PutMetricData codec (AWS Query protocol, API version 2010-08-01), no I/O.
 *
 * Requests are POST / to the CloudWatch endpoint (kp_config_endpoint with
 * KP_SERVICE_CLOUDWATCH) with Content-Type KP_CW_CONTENT_TYPE, signed with SigV4 for
 * service "monitoring"; the body is form-encoded:
 *
 *   Action=PutMetricData&Version=2010-08-01&Namespace=KinesisProducerLibrary
 *   &MetricData.member.1.MetricName=UserRecordsPut
 *   &MetricData.member.1.Dimensions.member.1.Name=StreamName
 *   &MetricData.member.1.Dimensions.member.1.Value=my-stream
 *   &MetricData.member.1.Timestamp=2026-11-22T10:00:00Z
 *   &MetricData.member.1.StatisticValues.SampleCount=3
 *   &MetricData.member.1.StatisticValues.Sum=3 (.Minimum, .Maximum)
 *   &MetricData.member.1.Unit=Count
 *
 * (one line here, no line breaks in the body). Each metric is sent as a StatisticSet,
 * like the KPL's once-per-MetricsUploadDelay upload. Names and values are
 * percent-encoded as RFC 3986 (everything but A-Z a-z 0-9 - _ . ~), UTF-8 bytes
 * as they are. Numbers use the shortest text that reads back to the same double.
 *
 * CloudWatch limits (PutMetricData reference, current): at most 1000 metric data per
 * request and 1 MB per HTTP POST body; at most 30 dimensions per datum; MetricName and
 * dimension names 1..255 characters, dimension values 1..1024; Namespace 1..255, not
 * starting with ':' or "AWS/"; values finite and within +-2^360 (non-zero magnitudes
 * below 2^-360 are rejected too, so we send them as 0). Data are split across as many bodies as
 * these need; a datum that breaks a per-datum limit is skipped and counted. */
#ifndef KP_PRODUCER_CLOUDWATCH_API_H
#define KP_PRODUCER_CLOUDWATCH_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "producer/metrics.h"

#define KP_CW_CONTENT_TYPE "application/x-www-form-urlencoded; charset=utf-8"
#define KP_CW_SERVICE "monitoring" /* SigV4 service name */
#define KP_CW_API_VERSION "2010-08-01"
#define KP_CW_MAX_DATA_PER_REQUEST 1000
#define KP_CW_MAX_BODY_BYTES 1000000 /* "1 MB"; stay under either reading of it */
#define KP_CW_MAX_DIMENSIONS 30

typedef struct kp_cw_datum {
  const char *metric_name;
  const kp_metrics_dimension *dims;
  size_t n_dims;
  double timestamp; /* seconds since the epoch (UTC); sent to the second */
  double sample_count, sum, minimum, maximum;
  const char *unit; /* "Count", "Bytes", "Milliseconds", ...; NULL = none sent */
} kp_cw_datum;

typedef struct kp_cw_limits {
  size_t max_data_per_request; /* 0 = KP_CW_MAX_DATA_PER_REQUEST */
  size_t max_body_bytes;       /* 0 = KP_CW_MAX_BODY_BYTES */
} kp_cw_limits;

/* Encoder state: a list of finished bodies plus the one being filled. */
typedef struct kp_cw_request_set {
  kp_buf *bodies; /* n_bodies complete form-encoded bodies */
  size_t *data_per_body;
  size_t n_bodies, cap_bodies;
  size_t n_data;  /* data written, over all bodies */
  size_t skipped; /* data dropped for breaking a per-datum limit */
  /* private */
  char *ns_enc_;
  kp_cw_limits lim_;
  kp_buf scratch_;
} kp_cw_request_set;

/* Starts an empty set for `ns` (MetricsNamespace). Returns 0, -EINVAL if the
 * namespace breaks CloudWatch's rules (errstr says which), or -ENOMEM. */
int kp_cw_request_set_init(kp_cw_request_set *rs, const char *ns, const kp_cw_limits *lim,
                           char *errstr, size_t errlen);
/* Appends one datum, starting a new body when the current one is full. Returns 0
 * (also when the datum was skipped: see `skipped`) or -ENOMEM. */
int kp_cw_request_set_add(kp_cw_request_set *rs, const kp_cw_datum *d);
/* Frees the bodies; rs is left zeroed (init again to reuse). */
void kp_cw_request_set_free(kp_cw_request_set *rs);

/* The whole upload step: kp_metrics_collect_upload(m, now) -> one datum per series
 * with samples since the previous upload, Timestamp = floor(now), each metric's unit.
 * `rs` must be initialised (and is appended to). Returns 0, or -ENOMEM (the seconds
 * are then not marked uploaded, so a later call sends them). */
int kp_cw_encode_metrics(kp_cw_request_set *rs, kp_metrics *m, double now);

/* Formats `t` (seconds since the epoch, UTC) as "YYYY-MM-DDTHH:MM:SSZ" (truncated to
 * the second). out needs 21 bytes. Returns 0, or -EINVAL outside years 1970..9999. */
int kp_cw_format_timestamp(double t, char out[21]);

/* Writes the shortest decimal text that strtod reads back as v ("3", "0.25",
 * "1.5e+20"); out needs 32 bytes. v must be finite. Returns the length. */
size_t kp_cw_format_double(double v, char out[32]);

/* ---- errors ------------------------------------------------------------------------ */

typedef struct kp_cw_error {
  char type[32];     /* "Sender" / "Receiver", "" if absent */
  char code[128];    /* "InvalidParameterValue", "Throttling", ... */
  char message[512]; /* truncated if longer, "" if absent */
} kp_cw_error;

/* Parses a Query-protocol error body: <ErrorResponse><Error><Type/><Code/><Message/>
 * </Error>...</ErrorResponse> (also <Response><Errors><Error>...). Tag content has
 * XML entities (&lt; &gt; &amp; &quot; &apos; &#N; &#xH;) and CDATA decoded. Returns
 * 0, or -EBADMSG (no <Error> with a non-empty <Code>) with errstr set. */
int kp_cw_error_decode(const char *body, size_t len, kp_cw_error *err, char *errstr, size_t errlen);

typedef enum kp_cw_error_class {
  KP_CW_RETRY = 0,   /* transient: try the next upload again with the same data */
  KP_CW_THROTTLED,   /* back off */
  KP_CW_CREDENTIALS, /* missing/expired/invalid credentials: wait for new ones */
  KP_CW_PERMANENT    /* the request itself is wrong: drop it (and log) */
} kp_cw_error_class;

/* Classifies an error by its code (NULL if none could be parsed) and HTTP status (0
 * for a transport failure). */
kp_cw_error_class kp_cw_error_classify(const char *code, long http_status);

#endif
