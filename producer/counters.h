/* Per-stage counters of the daemon: plain integers and sums updated on the loop
 * thread, cheap enough for the hot path, shaped so a metrics module can sample and
 * aggregate them (per stream and overall) without touching the pipeline. */
#ifndef KP_PRODUCER_COUNTERS_H
#define KP_PRODUCER_COUNTERS_H

#include <stdint.h>

typedef struct kp_stat {
  uint64_t count;
  double sum, min, max;
} kp_stat;

static inline void kp_stat_add(kp_stat *s, double v) {
  if (!s->count || v < s->min)
    s->min = v;
  if (!s->count || v > s->max)
    s->max = v;
  s->count++;
  s->sum += v;
}

typedef struct kp_counters {
  uint64_t user_records_received; /* PutRecord messages accepted */
  uint64_t user_bytes_received;   /* their data bytes */
  uint64_t user_records_rejected; /* failed validation on arrival */
  uint64_t user_records_put;      /* succeeded */
  uint64_t user_records_failed;   /* failed for good (incl. expired) */
  uint64_t user_records_expired;  /* failed because RecordTtl passed */
  uint64_t user_records_retried;  /* attempts beyond the first */
  uint64_t user_bytes_put;        /* user data bytes that succeeded */
  uint64_t kinesis_records_sent;  /* Kinesis records in PutRecords requests */
  uint64_t kinesis_records_put;   /* Kinesis records that succeeded */
  uint64_t kinesis_bytes_sent;    /* data + partition keys sent */
  uint64_t requests_sent;         /* PutRecords requests */
  uint64_t requests_failed;       /* request-level failures (transport or non-200) */
  uint64_t list_shards_calls;
  uint64_t wrong_shard;     /* Kinesis records that landed outside the predicted shard */
  kp_stat buffering_ms;     /* arrival -> request sent, per user record */
  kp_stat request_ms;       /* PutRecords round trip */
  kp_stat user_per_kinesis; /* aggregation ratio */
  kp_stat kinesis_per_request;
} kp_counters;

#endif
