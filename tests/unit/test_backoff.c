// KP_TEST_LIBS: kp_producer_core
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "producer/backoff.h"

/* ---- PRNG ----------------------------------------------------------------- */

static void rng_is_deterministic_and_seeds_differ(void **state) {
  uint64_t a = kp_rng_seed(7), b = kp_rng_seed(7), c = kp_rng_seed(8);
  assert_true(a != 0 && c != 0);
  assert_true(a != c);
  int same_as_c = 0;
  for (int i = 0; i < 1000; i++) {
    uint64_t x = kp_rng_next(&a);
    assert_true(x == kp_rng_next(&b));
    same_as_c += x == kp_rng_next(&c);
  }
  assert_int_equal(same_as_c, 0);
  /* xorshift64* from state 1: first output is fixed by the algorithm. */
  uint64_t s = 1;
  uint64_t x = 1;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  assert_true(kp_rng_next(&s) == x * 0x2545F4914F6CDD1Dull);
  assert_true(s == x);
  /* Seed 0 is fine, and a zeroed state does not stick at zero. */
  assert_true(kp_rng_seed(0) != 0);
  uint64_t z = 0;
  assert_true(kp_rng_next(&z) != 0);
  assert_true(z != 0);
}

static void uniform_is_in_unit_interval_and_spread(void **state) {
  uint64_t s = kp_rng_seed(123);
  int buckets[10] = {0};
  double sum = 0;
  for (int i = 0; i < 100000; i++) {
    double u = kp_rng_uniform(&s);
    assert_true(u >= 0.0 && u < 1.0);
    buckets[(int)(u * 10)]++;
    sum += u;
  }
  for (int i = 0; i < 10; i++)
    assert_true(buckets[i] > 9500 && buckets[i] < 10500);
  assert_true(fabs(sum / 100000 - 0.5) < 0.01);
}

/* ---- backoff -------------------------------------------------------------- */

static void delays_stay_within_decorrelated_bounds(void **state) {
  uint64_t rng = kp_rng_seed(1);
  for (int run = 0; run < 200; run++) {
    kp_backoff b;
    kp_backoff_init(&b, 0.1, 5.0);
    double prev = 0.1, now = 100.0;
    for (int i = 0; i < 30; i++) {
      double until = kp_backoff_next(&b, now, &rng);
      double d = until - now;
      double hi = 3 * prev < 5.0 ? 3 * prev : 5.0;
      assert_true(d >= 0.1 - 1e-12);
      assert_true(d <= hi + 1e-12);
      assert_true(kp_backoff_until(&b) == until);
      assert_true(kp_backoff_active(&b, now));
      assert_false(kp_backoff_active(&b, until));
      assert_int_equal(kp_backoff_failures(&b), i + 1);
      prev = d;
      now = until; /* retried as soon as allowed, and failed again */
    }
  }
}

/* Mean delay of the n-th consecutive failure follows E[d1] = 2 base,
 * E[d(n+1)] = (base + 3 E[d(n)]) / 2 while below the cap. */
static void delays_grow_exponentially_on_average(void **state) {
  enum { RUNS = 4000, STEPS = 6 };
  const double base = 0.05, cap = 1000.0; /* cap out of reach in 6 steps */
  double sum[STEPS] = {0};
  uint64_t rng = kp_rng_seed(99);
  for (int run = 0; run < RUNS; run++) {
    kp_backoff b;
    kp_backoff_init(&b, base, cap);
    double now = 0;
    for (int i = 0; i < STEPS; i++) {
      double until = kp_backoff_next(&b, now, &rng);
      sum[i] += until - now;
      now = until;
    }
  }
  double expect = 2 * base;
  for (int i = 0; i < STEPS; i++) {
    double mean = sum[i] / RUNS;
    print_message("failure %d: mean delay %.4f, expected %.4f\n", i + 1, mean, expect);
    assert_true(fabs(mean - expect) < 0.08 * expect);
    if (i > 0)
      assert_true(mean > 1.3 * sum[i - 1] / RUNS);
    expect = (base + 3 * expect) / 2;
  }
}

static void cap_holds_and_keeps_jitter(void **state) {
  kp_backoff b;
  kp_backoff_init(&b, 0.1, 2.0);
  uint64_t rng = kp_rng_seed(5);
  double now = 0, lo = INFINITY;
  int at_cap = 0, n = 0;
  for (int i = 0; i < 2000; i++) {
    double d = kp_backoff_next(&b, now, &rng) - now;
    assert_true(d <= 2.0 + 1e-12);
    assert_true(d >= 0.1 - 1e-12);
    if (i >= 20) {
      n++;
      at_cap += d == 2.0;
      lo = d < lo ? d : lo;
    }
    now += d;
  }
  /* Not synchronised at the cap: delays keep spreading below it. */
  assert_true(at_cap < n / 100);
  assert_true(lo < 1.0);
}

static void failures_during_a_wait_do_not_escalate(void **state) {
  kp_backoff b;
  kp_backoff_init(&b, 0.1, 10.0);
  uint64_t rng = kp_rng_seed(3);
  double until = kp_backoff_next(&b, 50.0, &rng);
  uint64_t rng_before = rng;
  /* 499 more throttled records of the same response, and a late answer. */
  for (int i = 0; i < 499; i++)
    assert_true(kp_backoff_next(&b, 50.0, &rng) == until);
  assert_true(kp_backoff_next(&b, (50.0 + until) / 2, &rng) == until);
  assert_int_equal(kp_backoff_failures(&b), 1);
  assert_true(rng == rng_before); /* nothing drawn */
  /* At the end of the wait, a failure starts a longer episode. */
  double until2 = kp_backoff_next(&b, until, &rng);
  assert_true(until2 > until);
  assert_int_equal(kp_backoff_failures(&b), 2);
}

static void reset_starts_over(void **state) {
  kp_backoff b;
  kp_backoff_init(&b, 0.1, 60.0);
  uint64_t rng = kp_rng_seed(11);
  double now = 0;
  for (int i = 0; i < 10; i++)
    now = kp_backoff_next(&b, now, &rng);
  assert_int_equal(kp_backoff_failures(&b), 10);
  kp_backoff_reset(&b);
  assert_int_equal(kp_backoff_failures(&b), 0);
  assert_false(kp_backoff_active(&b, now));
  assert_true(isinf(kp_backoff_until(&b)) && kp_backoff_until(&b) < 0);
  double d = kp_backoff_next(&b, now, &rng) - now;
  assert_true(d >= 0.1 && d <= 0.3 + 1e-12);
  /* A success sent before the wait ended is old news; one sent after resets. */
  double until = kp_backoff_until(&b);
  assert_false(kp_backoff_on_success(&b, now - 1.0));
  assert_int_equal(kp_backoff_failures(&b), 1);
  assert_true(kp_backoff_active(&b, now));
  assert_true(kp_backoff_on_success(&b, until));
  assert_int_equal(kp_backoff_failures(&b), 0);
  assert_false(kp_backoff_active(&b, now));
  /* With no wait running, any success resets. */
  assert_true(kp_backoff_on_success(&b, -5.0));
}

static void same_seed_same_schedule(void **state) {
  double a[50], c[50];
  for (int pass = 0; pass < 2; pass++) {
    kp_backoff b;
    kp_backoff_init(&b, 0.2, 8.0);
    uint64_t rng = kp_rng_seed(2026);
    double now = 1000.0;
    for (int i = 0; i < 50; i++) {
      double until = kp_backoff_next(&b, now, &rng);
      (pass ? c : a)[i] = until - now;
      now = until;
      if (i == 25)
        kp_backoff_reset(&b);
    }
  }
  for (int i = 0; i < 50; i++)
    assert_true(a[i] == c[i]);
  /* A different seed gives a different schedule. */
  kp_backoff b;
  kp_backoff_init(&b, 0.2, 8.0);
  uint64_t rng = kp_rng_seed(2027);
  assert_true(kp_backoff_next(&b, 1000.0, &rng) - 1000.0 != a[0]);
}

static void init_sanitises_parameters(void **state) {
  kp_backoff b;
  uint64_t rng = kp_rng_seed(4);
  kp_backoff_init(&b, 0, 5);
  assert_true(b.base_s == 0.1);
  kp_backoff_init(&b, NAN, NAN);
  assert_true(b.base_s == 0.1 && b.max_s == 0.1);
  kp_backoff_init(&b, 2.0, 1.0); /* max below base: constant delay */
  for (int i = 0; i < 5; i++) {
    double now = 10.0 * i;
    assert_true(kp_backoff_next(&b, now, &rng) - now == 2.0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(rng_is_deterministic_and_seeds_differ),
      cmocka_unit_test(uniform_is_in_unit_interval_and_spread),
      cmocka_unit_test(delays_stay_within_decorrelated_bounds),
      cmocka_unit_test(delays_grow_exponentially_on_average),
      cmocka_unit_test(cap_holds_and_keeps_jitter),
      cmocka_unit_test(failures_during_a_wait_do_not_escalate),
      cmocka_unit_test(reset_starts_over),
      cmocka_unit_test(same_seed_same_schedule),
      cmocka_unit_test(init_sanitises_parameters),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
