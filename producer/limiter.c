#include "producer/limiter.h"

#include <float.h>

#include <math.h>

/* Tolerance when comparing tokens with a need, so that kp_limiter_ready_at()'s answer
 * (computed in one step) is honoured by kp_limiter_try_take() (refilled in others)
 * despite rounding. 1e-9 of a take is far below anything observable: 1.5e-6 records,
 * or 1.5e-3 bytes of a 1.5 MiB take. */
#define KP_LIMITER_REL_EPS 1e-9

static bool usable(double v) {
  return isfinite(v);
}

void kp_limiter_params_default(kp_limiter_params *p, double rate_limit_pct) {
  p->rate_limit_pct = (usable(rate_limit_pct) && rate_limit_pct > 0)
                          ? rate_limit_pct
                          : KP_LIMITER_DEFAULT_RATE_LIMIT_PCT;
  p->min_pct = KP_LIMITER_DEFAULT_MIN_PCT;
  p->decrease_factor = KP_LIMITER_DEFAULT_DECREASE;
  p->increase_pct_per_s = KP_LIMITER_DEFAULT_INCREASE_PCT_PER_S;
  p->hold_s = KP_LIMITER_DEFAULT_HOLD_S;
}

static double rec_rate(const kp_limiter *l) {
  return KP_SHARD_RECORDS_PER_S * l->pct / 100.0;
}

static double byte_rate(const kp_limiter *l) {
  return KP_SHARD_BYTES_PER_S * l->pct / 100.0;
}

void kp_limiter_init_params(kp_limiter *l, const kp_limiter_params *p, double now) {
  kp_limiter_params d;
  kp_limiter_params_default(&d, p->rate_limit_pct);
  if (usable(p->min_pct) && p->min_pct > 0)
    d.min_pct = p->min_pct;
  if (d.min_pct > d.rate_limit_pct)
    d.min_pct = d.rate_limit_pct;
  if (usable(p->decrease_factor) && p->decrease_factor > 0 && p->decrease_factor <= 1)
    d.decrease_factor = p->decrease_factor;
  if (usable(p->increase_pct_per_s) && p->increase_pct_per_s >= 0)
    d.increase_pct_per_s = p->increase_pct_per_s;
  if (usable(p->hold_s) && p->hold_s >= 0)
    d.hold_s = p->hold_s;
  l->prm = d;
  l->pct = d.rate_limit_pct;
  l->rec_tokens = rec_rate(l);
  l->byte_tokens = byte_rate(l);
  l->last = now;
  l->last_decrease = -INFINITY;
  l->inc_clock = now;
  l->throttles = 0;
  l->decreases = 0;
}

void kp_limiter_init(kp_limiter *l, double rate_limit_pct, double now) {
  kp_limiter_params p;
  kp_limiter_params_default(&p, rate_limit_pct);
  kp_limiter_init_params(l, &p, now);
}

/* Tokens of one bucket at time t >= last (no clamping below: debt stays debt). */
static double level_at(double tokens, double rate, double last, double t) {
  if (!(t > last))
    return tokens;
  double v = tokens + rate * (t - last);
  return v < rate ? v : rate; /* capacity = 1 s at the current rate */
}

static void refill(kp_limiter *l, double now) {
  if (!(now > l->last))
    return;
  l->rec_tokens = level_at(l->rec_tokens, rec_rate(l), l->last, now);
  l->byte_tokens = level_at(l->byte_tokens, byte_rate(l), l->last, now);
  l->last = now;
}

/* What a take of n must find in a bucket of capacity cap: n, or a full bucket when n
 * exceeds the capacity (the take then leaves a debt). */
static double need_of(double n, double cap) {
  return n < cap ? n : cap;
}

static bool enough(double tokens, double need) {
  double tol = KP_LIMITER_REL_EPS * (need > 1.0 ? need : 1.0);
  return tokens >= need - tol;
}

bool kp_limiter_try_take(kp_limiter *l, double now, uint32_t records, size_t bytes) {
  refill(l, now);
  double rr = rec_rate(l), br = byte_rate(l);
  if (records && !enough(l->rec_tokens, need_of((double)records, rr)))
    return false;
  if (bytes && !enough(l->byte_tokens, need_of((double)bytes, br)))
    return false;
  l->rec_tokens -= (double)records;
  l->byte_tokens -= (double)bytes;
  return true;
}

/* When one bucket will hold `need`, starting from its state at `base`. */
static double bucket_ready(double tokens, double rate, double last, double base, double n) {
  if (n <= 0)
    return base;
  double need = need_of(n, rate);
  double tok = level_at(tokens, rate, last, base);
  if (enough(tok, need))
    return base;
  /* Times are epoch seconds on the loop clock, where one ulp is ~0.24 us: a deficit
   * smaller than rate x ulp would round back to `base`, answering "now" for a take that
   * does not fit (and spinning a caller that re-checks at that time). Step at least a
   * few ulps past base, where the refill covers it. */
  double wait = (need - tok) / rate;
  double min_step = (base > 1.0 ? base : 1.0) * 4.0 * DBL_EPSILON;
  double t = base + (wait > min_step ? wait : min_step);
  /* The sum can also round down by up to half an ulp: round up until the bucket,
   * refilled to t, really holds `need` (a couple of steps at most). */
  for (int i = 0; i < 8 && !enough(level_at(tokens, rate, last, t), need); i++)
    t += min_step;
  return t;
}

double kp_limiter_ready_at(const kp_limiter *l, double now, uint32_t records, size_t bytes) {
  double base = now > l->last ? now : l->last;
  double tr = bucket_ready(l->rec_tokens, rec_rate(l), l->last, base, (double)records);
  double tb = bucket_ready(l->byte_tokens, byte_rate(l), l->last, base, (double)bytes);
  double t = tr > tb ? tr : tb;
  /* Clock behind the last refill: tokens are as at `last`, so a take that fits now
   * fits at `now` too. */
  if (t == base && base > now)
    return now;
  return t;
}

bool kp_limiter_on_throttled(kp_limiter *l, double now, double sent_at) {
  return kp_limiter_on_throttled_frac(l, now, sent_at, 1.0);
}

bool kp_limiter_on_throttled_frac(kp_limiter *l, double now, double sent_at, double frac) {
  l->throttles++;
  refill(l, now);
  if (sent_at < l->last_decrease || now < l->last_decrease + l->prm.hold_s)
    return false;
  if (!(frac > 0))
    return false;
  if (frac > 1)
    frac = 1;
  /* DCTCP-style: the cut grows with the share of records refused, so sporadic refusals
   * trim the rate and a shard refusing everything halves it. */
  double p = l->pct * (1.0 - (1.0 - l->prm.decrease_factor) * frac);
  l->pct = p > l->prm.min_pct ? p : l->prm.min_pct;
  double rr = rec_rate(l), br = byte_rate(l);
  if (l->rec_tokens > rr)
    l->rec_tokens = rr;
  if (l->byte_tokens > br)
    l->byte_tokens = br;
  l->last_decrease = now;
  l->inc_clock = now + l->prm.hold_s; /* no increase credit during the hold */
  l->decreases++;
  return true;
}

void kp_limiter_on_success(kp_limiter *l, double now, uint32_t records, size_t bytes) {
  refill(l, now);
  if (l->pct >= l->prm.rate_limit_pct || l->prm.increase_pct_per_s <= 0)
    return;
  /* At most 1 s of credit banked while idle; none ahead of the clock. */
  if (l->inc_clock < now - 1.0)
    l->inc_clock = now - 1.0;
  double budget = now - l->inc_clock;
  if (!(budget > 0))
    return;
  double fr = (double)records / rec_rate(l), fb = (double)bytes / byte_rate(l);
  double credit = fr > fb ? fr : fb;
  if (credit > budget)
    credit = budget;
  l->inc_clock += credit;
  double p = l->pct + l->prm.increase_pct_per_s * credit;
  l->pct = p < l->prm.rate_limit_pct ? p : l->prm.rate_limit_pct;
}

double kp_limiter_pct(const kp_limiter *l) {
  return l->pct;
}

double kp_limiter_records_rate(const kp_limiter *l) {
  return rec_rate(l);
}

double kp_limiter_bytes_rate(const kp_limiter *l) {
  return byte_rate(l);
}

void kp_limiter_get_stats(const kp_limiter *l, double now, kp_limiter_stats *out) {
  out->pct = l->pct;
  out->records_per_s = rec_rate(l);
  out->bytes_per_s = byte_rate(l);
  out->records_avail = level_at(l->rec_tokens, rec_rate(l), l->last, now);
  out->bytes_avail = level_at(l->byte_tokens, byte_rate(l), l->last, now);
  out->throttles = l->throttles;
  out->decreases = l->decreases;
}
