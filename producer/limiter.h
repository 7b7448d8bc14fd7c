/* Limiter: per-shard rate limiting with AIMD adaptation. One per (stream, shard),
 * applied to Kinesis records (aggregates, or raw records when aggregation is off) as
 * they leave the aggregator, before the collector batches them.
 *
 * Pure logic: no I/O, no clock. `now` is the loop clock in seconds (ev_now); it is
 * expected not to go backwards (if it does, no tokens are added until it catches up).
 *
 * TOKEN BUCKETS
 * A shard takes 1,000 records/s and 1 MiB/s (KP_SHARD_RECORDS_PER_S,
 * KP_SHARD_BYTES_PER_S). The limiter holds one level, `pct`, a percentage of that
 * shard limit, and two token buckets driven by it:
 *   records: rate 1000 * pct/100 per second  (Kinesis records, not user records)
 *   bytes:   rate 1 MiB * pct/100 per second  (data + partition key, i.e.
 *                                              kp_kinesis_record_size())
 * Burst capacity of each bucket = 1 second's worth at the current rate. The buckets
 * start full. A take is all-or-nothing across both buckets.
 * A take larger than a bucket's capacity (a 1 MiB record while the level is below
 * 100%) could never fit; it is allowed once that bucket is full and drives the bucket
 * negative (debt), so the long-run rate is still respected.
 *
 * AIMD ADAPTATION (so several producers sharing a stream converge instead of storming)
 *   ceiling:  pct <= rate_limit_pct (RateLimit, default 150, as in the KPL); the
 *             limiter starts there, so a lone producer behaves like the KPL until
 *             Kinesis pushes back.
 *   decrease: on a throttle answer (ProvisionedThroughputExceeded for this shard):
 *             pct = max(min_pct, pct * decrease_factor), default x0.5, floor 1%
 *             (the floors of all producers on a shard add up: with a floor of f%,
 *             more than 100/f producers would throttle for ever; 1% leaves room for
 *             dozens, at 10 records/s and 10 KiB/s per producer at worst).
 *             At most one decrease per hold_s (default 1 s: Kinesis meters per
 *             second), and never for a request sent before the last decrease (that
 *             answer says nothing about the reduced rate). Tokens above the new,
 *             smaller capacity are dropped.
 *   increase: on success, pct += increase_pct_per_s * credit, where credit is the
 *             seconds of sending at the current level that the success represents,
 *             max(records / records_rate, bytes / bytes_rate), bounded by wall time:
 *             the credit given never runs ahead of the clock, and at most 1 s of it
 *             can be banked while idle. So a producer using its whole allowance gains
 *             increase_pct_per_s (default 10) percentage points per second, whether
 *             successes are reported per record or per response; one that sends
 *             little gains little, so an idle or application-limited producer does
 *             not build up an allowance it never tested. No increase during the hold
 *             after a decrease.
 * With all producers backlogged, each gains the same points per second and loses the
 * same fraction on a throttle: the classic AIMD argument (Chiu & Jain) gives
 * convergence to equal shares of the shard with a sawtooth just under its capacity.
 * Simulated (tests/unit/test_limiter.c: 10 ms steps, 50 ms round trip, staggered
 * joins): 1-8 producers use ~100% of the shard with 0.3-2% of records throttled and
 * equal shares; the same producers at a fixed 150% see 83% throttled. Throttling
 * grows with producers x round trip (together they probe upwards N x 10 points/s).
 */
#ifndef KP_PRODUCER_LIMITER_H
#define KP_PRODUCER_LIMITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KP_SHARD_RECORDS_PER_S 1000.0
#define KP_SHARD_BYTES_PER_S 1048576.0

#define KP_LIMITER_DEFAULT_RATE_LIMIT_PCT 150.0
#define KP_LIMITER_DEFAULT_MIN_PCT 1.0
#define KP_LIMITER_DEFAULT_DECREASE 0.5
#define KP_LIMITER_DEFAULT_INCREASE_PCT_PER_S 10.0
#define KP_LIMITER_DEFAULT_HOLD_S 1.0

typedef struct kp_limiter_params {
  double rate_limit_pct;     /* ceiling, % of the shard limit (RateLimit) */
  double min_pct;            /* floor; clamped to rate_limit_pct */
  double decrease_factor;    /* in (0, 1]; 1 disables the decrease */
  double increase_pct_per_s; /* >= 0; 0 disables the increase */
  double hold_s;             /* >= 0 */
} kp_limiter_params;

/* Fills p with the defaults above and the given RateLimit. */
void kp_limiter_params_default(kp_limiter_params *p, double rate_limit_pct);

/* Plain data, so it can be embedded by value; use the functions, not the fields. */
typedef struct kp_limiter {
  kp_limiter_params prm;
  double pct;           /* current level, % of the shard limit */
  double rec_tokens;    /* may be negative (debt) */
  double byte_tokens;   /* may be negative (debt) */
  double last;          /* time the buckets were last refilled to */
  double last_decrease; /* time of the last decrease; -INFINITY if none */
  double inc_clock;     /* success time credited to the increase so far */
  uint64_t throttles;   /* throttle answers reported */
  uint64_t decreases;   /* throttle answers acted on (see on_throttled) */
} kp_limiter;

/* Initialises l with the default policy and RateLimit = rate_limit_pct (not finite or
 * <= 0: the default 150). Buckets start full. */
void kp_limiter_init(kp_limiter *l, double rate_limit_pct, double now);

/* Same with an explicit policy; out-of-range values are replaced by the defaults. */
void kp_limiter_init_params(kp_limiter *l, const kp_limiter_params *p, double now);

/* Takes `records` record tokens and `bytes` byte tokens if both are available, and
 * returns true; otherwise takes nothing and returns false. */
bool kp_limiter_try_take(kp_limiter *l, double now, uint32_t records, size_t bytes);

/* Earliest time >= now at which kp_limiter_try_take(l, t, records, bytes) succeeds,
 * assuming nothing else takes tokens and the level does not change meanwhile; `now`
 * itself when it would succeed now. Arm a timer for it instead of polling. */
double kp_limiter_ready_at(const kp_limiter *l, double now, uint32_t records, size_t bytes);

/* Reports a throttle answer for a record of this shard from a request sent at
 * `sent_at` (pass now if unknown). Returns true if it was taken as a congestion
 * signal: the level is lowered (unless already at the floor) and a hold starts.
 * Report per record or once per (response, shard): only the first in a hold counts. */
bool kp_limiter_on_throttled(kp_limiter *l, double now, double sent_at);

/* The same for an answer in which only `frac` (0..1] of this shard's records were
 * throttled: the rate is multiplied by 1 - (1 - decrease_factor) * frac, so a shard
 * that refused everything halves (by default) and one that refused a tenth loses 5 %.
 * kp_limiter_on_throttled is frac = 1. */
bool kp_limiter_on_throttled_frac(kp_limiter *l, double now, double sent_at, double frac);

/* Reports that `records` Kinesis records of `bytes` bytes were accepted by this shard.
 * Raises the level as described above (capped at rate_limit_pct). */
void kp_limiter_on_success(kp_limiter *l, double now, uint32_t records, size_t bytes);

/* For metrics. */
typedef struct kp_limiter_stats {
  double pct;           /* current level, % of the shard limit */
  double records_per_s; /* current record rate */
  double bytes_per_s;   /* current byte rate */
  double records_avail; /* tokens at `now` (negative: debt) */
  double bytes_avail;
  uint64_t throttles;
  uint64_t decreases;
} kp_limiter_stats;

double kp_limiter_pct(const kp_limiter *l);
double kp_limiter_records_rate(const kp_limiter *l);
double kp_limiter_bytes_rate(const kp_limiter *l);
void kp_limiter_get_stats(const kp_limiter *l, double now, kp_limiter_stats *out);

#endif
