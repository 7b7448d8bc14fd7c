#include "producer/backoff.h"

#include <math.h>

#define KP_BACKOFF_DEFAULT_BASE_S 0.1

uint64_t kp_rng_seed(uint64_t seed) {
  /* splitmix64: spreads nearby seeds apart and maps no seed to a weak state. */
  uint64_t z = seed + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return z ? z : 0x9E3779B97F4A7C15ull;
}

uint64_t kp_rng_next(uint64_t *state) {
  uint64_t x = *state;
  if (!x)
    x = 0x9E3779B97F4A7C15ull;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545F4914F6CDD1Dull;
}

double kp_rng_uniform(uint64_t *state) {
  return (double)(kp_rng_next(state) >> 11) * 0x1.0p-53;
}

void kp_backoff_init(kp_backoff *b, double base_s, double max_s) {
  if (!isfinite(base_s) || base_s <= 0)
    base_s = KP_BACKOFF_DEFAULT_BASE_S;
  if (!(max_s >= base_s)) /* also catches NaN */
    max_s = base_s;
  b->base_s = base_s;
  b->max_s = max_s;
  kp_backoff_reset(b);
}

double kp_backoff_next(kp_backoff *b, double now, uint64_t *rng_state) {
  if (now < b->not_before)
    return b->not_before; /* same episode */
  double hi = 3.0 * b->prev_s;
  if (hi > b->max_s)
    hi = b->max_s;
  double d = b->base_s + kp_rng_uniform(rng_state) * (hi - b->base_s);
  if (d > hi) /* rounding */
    d = hi;
  b->prev_s = d;
  b->not_before = now + d;
  b->failures++;
  return b->not_before;
}

void kp_backoff_reset(kp_backoff *b) {
  b->prev_s = b->base_s;
  b->not_before = -INFINITY;
  b->failures = 0;
}

bool kp_backoff_on_success(kp_backoff *b, double sent_at) {
  if (sent_at < b->not_before)
    return false;
  kp_backoff_reset(b);
  return true;
}

double kp_backoff_until(const kp_backoff *b) {
  return b->not_before;
}

bool kp_backoff_active(const kp_backoff *b, double now) {
  return now < b->not_before;
}

uint32_t kp_backoff_failures(const kp_backoff *b) {
  return b->failures;
}
