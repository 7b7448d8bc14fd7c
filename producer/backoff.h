/* Backoff: jittered exponential backoff, one per shard (throttling) and one per stream
 * (request-level failures: transport errors, 5xx, request-level throttling), so that
 * retries stop storming a shard or an endpoint that is pushing back (the KPL retries
 * with no backoff at all).
 *
 * Pure logic: no I/O, no clock (`now` is the loop clock in seconds), randomness from
 * a caller-owned xorshift64* state, so tests are deterministic.
 *
 * POLICY: "decorrelated jitter" (AWS Architecture Blog, "Exponential Backoff And
 * Jitter"), with the cap applied before the draw:
 *     delay = uniform(base, min(max, 3 * previous delay)),  previous starts at base
 * Chosen over "full jitter" (uniform(0, min(max, base * 2^n))) because every delay is
 * at least `base`: retrying a throttled shard after ~0 s (which full jitter draws
 * often) is a wasted request. The ceiling grows x3 and the mean delay about x1.5 per
 * consecutive failure (E[d1] = 2 base, E[d(n+1)] = (base + 3 E[d(n)]) / 2 below the
 * cap); at the cap, delays stay spread over [base, max] (with the
 * cap applied after the draw, as in the blog, about 2/3 of them would be exactly max,
 * i.e. synchronised).
 *
 * EPISODES: failures reported while a wait is running (now < kp_backoff_until()) are
 * answers to requests sent before it began; they belong to the same episode and do
 * not escalate. Only a failure at or after the end of the wait draws a longer one.
 */
#ifndef KP_PRODUCER_BACKOFF_H
#define KP_PRODUCER_BACKOFF_H

#include <stdbool.h>
#include <stdint.h>

/* ---- xorshift64* -------------------------------------------------------- */

/* A non-zero state from any seed (splitmix64 of it). */
uint64_t kp_rng_seed(uint64_t seed);

/* Next 64 random bits (xorshift64*, Vigna). A zero state is replaced by a fixed
 * non-zero one rather than sticking at zero. */
uint64_t kp_rng_next(uint64_t *state);

/* Uniform in [0, 1), 53 bits. */
double kp_rng_uniform(uint64_t *state);

/* ---- backoff ------------------------------------------------------------ */

/* Plain data, so it can be embedded by value; use the functions, not the fields. */
typedef struct kp_backoff {
  double base_s;     /* smallest delay */
  double max_s;      /* largest delay */
  double prev_s;     /* previous delay (base_s when none) */
  double not_before; /* end of the current wait; -INFINITY when none */
  uint32_t failures; /* episodes since the last reset */
} kp_backoff;

/* base_s not finite or <= 0 becomes 0.1; max_s below base_s becomes base_s. */
void kp_backoff_init(kp_backoff *b, double base_s, double max_s);

/* Reports a failure at `now`; returns the time before which the shard (or stream)
 * should not be retried. Starts a new wait (and escalates) only if no wait is
 * running; otherwise returns the running wait's end unchanged. */
double kp_backoff_next(kp_backoff *b, double now, uint64_t *rng_state);

/* Success: the next failure starts again from base. Also ends a running wait. */
void kp_backoff_reset(kp_backoff *b);

/* Success of a request sent at `sent_at`: resets only if it was sent at or after the
 * end of the current wait (an older request's success says nothing about the
 * condition that started it). Returns true if it reset. */
bool kp_backoff_on_success(kp_backoff *b, double sent_at);

/* End of the current wait; -INFINITY when none. */
double kp_backoff_until(const kp_backoff *b);

/* True while a wait is running. */
bool kp_backoff_active(const kp_backoff *b, double now);

/* Consecutive failure episodes since the last reset (for metrics). */
uint32_t kp_backoff_failures(const kp_backoff *b);

#endif
