/* Reads every shard of a Kinesis stream, in order: the consumer half of kpl-cat.
 *
 * One thread, blocking calls, no event loop. The reader lists the shards
 * (ListShards, all pages), reads each shard with GetShardIterator + GetRecords and
 * hands every Kinesis record to a callback. It follows resharding the way the KCL
 * does: a shard is read only once every parent it names (ParentShardId,
 * AdjacentParentShardId) that is still listed has been read to its end; when a shard
 * ends (no NextShardIterator) the shards are listed again to find its children.
 *
 * Pacing: at most one GetRecords per shard every poll_interval seconds (Kinesis allows
 * 5 per second per shard), idle_interval after an empty page. Throttling
 * (ProvisionedThroughputExceeded, LimitExceeded, Throttling) and transient failures
 * (5xx, InternalFailure, transport errors) back off exponentially per shard, from
 * backoff_base up to backoff_max; after max_retries consecutive failures of one call
 * the read fails. An expired iterator is renewed after the last sequence number seen.
 *
 * Stop conditions, checked between calls:
 *  - the callback returns 1 (e.g. a record count was reached): KR_STOPPED;
 *  - without `follow`, every shard is caught up: read to its end, or its last page was
 *    empty with MillisBehindLatest 0 (or absent): KR_CAUGHT_UP;
 *  - idle_timeout > 0 and no Kinesis record arrived for that long (counted from the
 *    start, then from the last record): KR_IDLE_TIMEOUT;
 *  - max_time > 0 and that much time has passed since the start: KR_TIME_LIMIT.
 *
 * The HTTP exchange, the clock and sleeping are callbacks (kr_env), so the whole
 * reader runs in unit tests against a fake Kinesis without real time passing.
 * kr_http provides the real transport: one reused libcurl easy handle (keep-alive),
 * SigV4-signed Kinesis JSON 1.1 requests. */
#ifndef KP_CONSUMER_KINESIS_READER_H
#define KP_CONSUMER_KINESIS_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "format/hash_key.h"
#include "producer/kinesis_api.h"

/* ---- transport ------------------------------------------------------------------ */

/* One Kinesis JSON 1.1 call: POST `body` with X-Amz-Target Kinesis_20131202.<operation>.
 * Returns 0 when an HTTP response arrived (any status: *status and the body in `resp`,
 * which is reset first), or on a transport error (message in errstr)
 * KR_CALL_PERMANENT when retrying cannot help (certificate not trusted, unknown host,
 * TLS to a plain-HTTP port) and any other negative value when it may. */
#define KR_CALL_PERMANENT (-2)
typedef int (*kr_call_fn)(void *ud, const char *operation, const uint8_t *body, size_t len,
                          long *status, kp_buf *resp, char *errstr, size_t errlen);

typedef struct kr_http kr_http;

typedef struct kr_http_options {
  const char *endpoint; /* host or http(s) URL, as KinesisEndpoint; NULL/"" = AWS for region */
  const char *region;   /* NULL/"": derived from an AWS endpoint host, else us-east-1 */
  const char *access_key_id, *secret_key, *session_token; /* token may be NULL */
  const char *ca_file, *ca_dir; /* trust for https; NULL = curl's default */
  bool insecure;                /* do not verify the server's certificate */
  long connect_timeout_ms;      /* 0: 10000 */
  long request_timeout_ms;      /* whole call; 0: 60000 */
} kr_http_options;

/* Resolves the endpoint, sets up signing and the curl handle. NULL with a message in
 * errstr on a bad endpoint/region/credentials or allocation failure. */
kr_http *kr_http_new(const kr_http_options *o, char *errstr, size_t errlen);
void kr_http_free(kr_http *h);
/* "http://127.0.0.1:4567" (port always shown) and the signing region. */
const char *kr_http_url(const kr_http *h);
const char *kr_http_region(const kr_http *h);
/* A kr_call_fn; ud is the kr_http. */
int kr_http_call(void *ud, const char *operation, const uint8_t *body, size_t len, long *status,
                 kp_buf *resp, char *errstr, size_t errlen);

/* ---- reader --------------------------------------------------------------------- */

typedef enum kr_start { KR_TRIM_HORIZON = 0, KR_LATEST, KR_AT_TIMESTAMP } kr_start;

typedef struct kr_options {
  const char *stream;
  kr_start start;       /* where to start reading each shard */
  double timestamp;     /* KR_AT_TIMESTAMP: seconds since the epoch */
  int limit;            /* GetRecords Limit, 1..10000 (10000) */
  double poll_interval; /* s between GetRecords calls on one shard (0.2) */
  double idle_interval; /* s after an empty page (1.0) */
  bool follow;          /* keep reading when caught up */
  double idle_timeout;  /* s; <= 0: none */
  double max_time;      /* s; <= 0: none */
  int max_retries;      /* consecutive failures of one call before giving up (10) */
  int max_throttles;    /* consecutive throttled attempts of one call (1000) */
  double backoff_base;  /* s (0.1) */
  double backoff_max;   /* s (5) */
} kr_options;

/* Fills the defaults above; stream NULL, start KR_TRIM_HORIZON. */
void kr_options_default(kr_options *o);

/* The shard a record came from; valid during the callback. */
typedef struct kr_shard_view {
  const char *shard_id;
  const char *parent_shard_id;          /* NULL if none */
  const char *adjacent_parent_shard_id; /* NULL if none */
  kp_hash_key starting_hash_key, ending_hash_key;
} kr_shard_view;

typedef struct kr_env {
  kr_call_fn call;
  void *call_ud;
  double (*now)(void *ud);              /* monotonic seconds */
  void (*sleep)(void *ud, double secs); /* secs > 0 */
  void *clock_ud;
  /* Per Kinesis record, in shard order. Return 0 to go on, 1 to stop (KR_STOPPED),
   * negative to fail (KR_ERROR; put the reason in errstr, errlen bytes). */
  int (*on_record)(void *ud, const kr_shard_view *shard, const kp_fetched_record *rec, char *errstr,
                   size_t errlen);
  /* Optional: a shard was read to its end. */
  void (*on_shard_end)(void *ud, const kr_shard_view *shard);
  void *ud;
} kr_env;

typedef enum kr_status {
  KR_ERROR = -1,
  KR_CAUGHT_UP = 0,
  KR_STOPPED = 1,
  KR_IDLE_TIMEOUT = 2,
  KR_TIME_LIMIT = 3,
} kr_status;

typedef struct kr_stats {
  uint64_t records;           /* Kinesis records delivered */
  uint64_t get_records_calls; /* successful GetRecords */
  uint64_t list_shards_calls; /* successful ListShards pages */
  uint64_t iterator_calls;    /* successful GetShardIterator */
  uint64_t throttled;         /* throttled attempts */
  uint64_t retried;           /* other failed attempts that were retried */
  uint64_t expired_iterators; /* ExpiredIteratorException renewals */
  size_t shards;              /* shards known */
  size_t shards_finished;     /* read to their end (or skipped: closed under LATEST) */
} kr_stats;

/* Reads until a stop condition (see the top of this file). `stats` (may be NULL) is
 * zeroed first. On KR_ERROR errstr says why, e.g. "stream 'x' not found
 * (ResourceNotFoundException: ...)". */
kr_status kr_read(const kr_options *o, const kr_env *env, kr_stats *stats, char *errstr,
                  size_t errlen);

/* "TRIM_HORIZON", ... ; "?" for other values. */
const char *kr_start_name(kr_start s);

/* Parses a timestamp for AT_TIMESTAMP: seconds since the epoch ("1700000000",
 * "1700000000.25") or ISO-8601 "YYYY-MM-DDTHH:MM:SS[.fff][Z|+HH:MM|-HH:MM]" (also with
 * a space for 'T'; no zone means UTC). Returns 0 and *out, or -1. */
int kr_parse_timestamp(const char *s, double *out);

#endif
