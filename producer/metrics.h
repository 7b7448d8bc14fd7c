/* The KPL's metrics (kpl-compat.md §5), kept in memory for MetricsRequest
 * (getMetrics()) and for the CloudWatch upload (producer/cloudwatch_api.h). Pure
 * logic: no I/O, no clock reads; every call that needs the time takes `now`
 * (seconds, e.g. ev_now()). Loop thread only; nothing here is thread-safe.
 *
 * Metrics, their level and finest granularity (as the KPL documents them):
 *
 *   name                               level     finest   unit
 *   UserRecordsReceived                detailed  stream   Count
 *   UserRecordsPending                 detailed  stream   Count  (a sampled gauge)
 *   UserRecordsPut                     summary   shard    Count
 *   UserRecordsDataPut                 detailed  shard    Bytes
 *   UserRecordExpired                  summary   shard    Count
 *   KinesisRecordsPut                  summary   shard    Count
 *   KinesisRecordsDataPut              detailed  shard    Bytes
 *   ErrorsByCode (+ ErrorCode dim)     summary   shard    Count
 *   AllErrors                          summary   shard    Count
 *   RetriesPerRecord                   detailed  shard    Count
 *   BufferingTime                      summary   shard    Milliseconds
 *   RequestTime                        detailed  stream   Milliseconds
 *   UserRecordsPerKinesisRecord        detailed  shard    Count
 *   KinesisRecordsPerPutRecordsRequest detailed  stream   Count
 *   UserRecordsPerPutRecordsRequest    detailed  stream   Count
 *
 * MetricsLevel none records nothing; summary records the summary metrics; detailed
 * records all of them. MetricsGranularity global/stream/shard is the finest level
 * at which a metric is kept; a value recorded on a shard handle is also accounted on
 * its stream and globally (the KPL's metric tree), each with its own dimensions:
 *
 *   global: [global AdditionalDimensions]
 *   stream: [global adds, StreamName, stream adds]
 *   shard : [global adds, StreamName, stream adds, ShardId, shard adds]
 *
 * ErrorsByCode carries ErrorCode in front of those ([ErrorCode, ...]); there is no
 * ErrorsByCode without an ErrorCode (AllErrors is that total). A metric whose finest
 * level is "stream" recorded on a shard handle is kept on the stream and globally.
 *
 * Stats per (metric, dimensions) series: count, sum, min, max (mean = sum/count),
 * cumulative since the series began, and per wall-clock second in a ring of
 * KP_METRICS_RING buckets, so a query for the last N <= KP_METRICS_MAX_WINDOW
 * seconds sums the buckets of seconds floor(now)-N+1 .. floor(now) (the current,
 * partial second included). Time never runs backwards here: an earlier `now` than
 * any seen counts into the latest second.
 *
 * Cost: handles are resolved once (kp_metrics_stream_get / kp_metrics_shard_get)
 * and cached by the caller; kp_metrics_add is then O(1): at most three series
 * updates (shard, stream, global), no allocation except the first time a series
 * gets a value (about 2.6 KB per series: a shard at level detailed holds up to 9
 * plus one per error code). Every add function accepts a NULL handle (no-op), and
 * every function a NULL kp_metrics (no handles, empty queries), so a failed
 * kp_metrics_new or get needs no special casing by the caller.
 *
 * Memory is bounded by the handles the caller holds: handles are reference-counted;
 * kp_metrics_release drops one reference and frees the series of a handle nobody
 * holds (its values stay in its stream's and the global totals). Each handle keeps at
 * most max_error_codes distinct ErrorCode values; further codes are counted under
 * ErrorCode "Other" (KP_METRICS_OTHER_ERROR_CODE). */
#ifndef KP_PRODUCER_METRICS_H
#define KP_PRODUCER_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "proto/messages.pb-c.h"

#define KP_METRICS_RING 64       /* per-second buckets kept per series */
#define KP_METRICS_MAX_WINDOW 60 /* largest `seconds` a query honours (more is clamped) */
#define KP_METRICS_DEFAULT_MAX_ERROR_CODES 32
#define KP_METRICS_OTHER_ERROR_CODE "Other"

typedef enum kp_metric_id {
  KP_M_USER_RECORDS_RECEIVED = 0,
  KP_M_USER_RECORDS_PENDING,
  KP_M_USER_RECORDS_PUT,
  KP_M_USER_RECORDS_DATA_PUT,
  KP_M_USER_RECORD_EXPIRED,
  KP_M_KINESIS_RECORDS_PUT,
  KP_M_KINESIS_RECORDS_DATA_PUT,
  KP_M_ERRORS_BY_CODE, /* only through kp_metrics_add_error */
  KP_M_ALL_ERRORS,
  KP_M_RETRIES_PER_RECORD,
  KP_M_BUFFERING_TIME,
  KP_M_REQUEST_TIME,
  KP_M_USER_RECORDS_PER_KINESIS_RECORD,
  KP_M_KINESIS_RECORDS_PER_PUT_RECORDS_REQUEST,
  KP_M_USER_RECORDS_PER_PUT_RECORDS_REQUEST,
  KP_M__COUNT
} kp_metric_id;

/* Static facts about a metric (the table above). */
typedef struct kp_metric_info {
  const char *name; /* CloudWatch MetricName */
  const char *unit; /* CloudWatch Unit: "Count", "Bytes" or "Milliseconds" */
  kp_metrics_level level;
  kp_metrics_granularity finest;
} kp_metric_info;

/* NULL if id is out of range. */
const kp_metric_info *kp_metric_info_get(kp_metric_id id);
/* Looks a metric up by its exact name; -1 if unknown. */
int kp_metric_id_from_name(const char *name);

typedef struct kp_metrics kp_metrics;
typedef struct kp_metrics_handle kp_metrics_handle; /* global, stream or shard */

typedef struct kp_metrics_dimension {
  const char *key;
  const char *value;
} kp_metrics_dimension;

typedef struct kp_metrics_stats {
  double count, sum, min, max, mean; /* all 0 when count is 0 */
} kp_metrics_stats;

/* One (metric, dimensions) series as a query sees it. Pointers are valid during the
 * callback only. */
typedef struct kp_metrics_record {
  kp_metric_id id;
  const char *name;
  const char *unit;
  const kp_metrics_dimension *dims;
  size_t n_dims;
  kp_metrics_stats stats;
  uint64_t seconds; /* the window, or whole seconds since kp_metrics_new if cumulative */
} kp_metrics_record;

/* Called once per record; return non-zero to stop the walk (the query then returns
 * that value). */
typedef int (*kp_metrics_visit_fn)(const kp_metrics_record *r, void *ud);

/* ---- lifecycle ---------------------------------------------------------------- */

typedef struct kp_metrics_opts {
  kp_metrics_level level;
  kp_metrics_granularity granularity;
  const kp_metrics_dim *additional_dims; /* copied */
  size_t n_additional_dims;
  size_t max_error_codes; /* per handle; 0 = KP_METRICS_DEFAULT_MAX_ERROR_CODES */
} kp_metrics_opts;

/* Returns NULL on allocation failure. `now` starts the cumulative clock. */
kp_metrics *kp_metrics_new_opts(const kp_metrics_opts *opts, double now);
/* MetricsLevel, MetricsGranularity and AdditionalMetricsDimensions from cfg. */
kp_metrics *kp_metrics_new(const kp_config *cfg, double now);
/* Frees everything, including handles still held (their pointers die with it). */
void kp_metrics_free(kp_metrics *m);

kp_metrics_level kp_metrics_get_level(const kp_metrics *m);

/* ---- handles ------------------------------------------------------------------ */

/* The global handle (no dimensions): owned by m, never released. */
kp_metrics_handle *kp_metrics_global(kp_metrics *m);
/* Get-or-create the stream's handle and take a reference. NULL on allocation failure
 * or an empty name. */
kp_metrics_handle *kp_metrics_stream_get(kp_metrics *m, const char *stream);
/* Get-or-create a shard handle under a stream handle and take a reference (the shard
 * holds one on its stream). NULL on allocation failure, an empty id or a
 * stream that is not a stream handle. */
kp_metrics_handle *kp_metrics_shard_get(kp_metrics_handle *stream, const char *shard_id);
/* Drops one reference; at zero the handle and its own series are freed (the values
 * stay in the totals above it). NULL and the global handle are ignored. */
void kp_metrics_release(kp_metrics_handle *h);

/* ---- recording (hot path) ----------------------------------------------------- */

/* One sample of `value`. ErrorsByCode is ignored here: use kp_metrics_add_error. */
void kp_metrics_add(kp_metrics_handle *h, kp_metric_id id, double value, double now);
/* `count` samples at once whose sum, min and max the caller knows (count 0: no-op). */
void kp_metrics_add_n(kp_metrics_handle *h, kp_metric_id id, uint64_t count, double sum, double min,
                      double max, double now);
/* `count` errors with this code: ErrorsByCode{ErrorCode=code} and AllErrors, each
 * `count` samples of 1 (the KPL counts every failed attempt this way). A NULL or
 * empty code counts as "Unknown". */
void kp_metrics_add_error(kp_metrics_handle *h, const char *code, uint64_t count, double now);

/* ---- queries ------------------------------------------------------------------ */

/* Visits every series of metric `name` (NULL or "" = all metrics; an unknown name
 * visits nothing) with its stats over the last `seconds` seconds (1..60; larger is
 * clamped to 60) or, for seconds == 0, cumulative. Order: global, then each stream
 * followed by its shards (creation order); within a handle by metric id, error
 * codes in order of first appearance. Returns 0 or the callback's non-zero value. */
int kp_metrics_query(kp_metrics *m, const char *name, uint64_t seconds, double now,
                     kp_metrics_visit_fn fn, void *ud);

/* Fills `out` (overwritten, not freed first) with what kp_metrics_query visits, every
 * proto2 required field set; its memory is one allocation owned by `out`, released
 * by kp_metrics_response_free. Returns 0, or -ENOMEM (out is then empty). */
int kp_metrics_fill_response(kp_metrics *m, const char *name, uint64_t seconds, double now,
                             Kpl__MetricsResponse *out);
/* Releases what kp_metrics_fill_response put in r; r is left empty. Not for
 * responses from kpl__metrics_response__unpack. */
void kp_metrics_response_free(Kpl__MetricsResponse *r);

/* ---- CloudWatch upload -------------------------------------------------------- */

/* Visits every series that got samples in the whole seconds not yet uploaded, i.e.
 * after the previous call's last second (at most KP_METRICS_RING - 1 seconds back)
 * up to floor(now) - 1, with its stats over those seconds (`seconds` = their number),
 * then marks them uploaded. The first call covers the seconds since kp_metrics_new.
 * Series without samples in the interval are skipped. Returns 0, or the callback's
 * non-zero value (the seconds are then NOT marked uploaded). */
int kp_metrics_collect_upload(kp_metrics *m, double now, kp_metrics_visit_fn fn, void *ud);

#endif
