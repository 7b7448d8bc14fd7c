// KP_TEST_LIBS: kp_producer_core kp_format
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>

#include "producer/collector.h"

#define MiB (1024 * 1024)

static uint64_t rng = 0x853C49E6748FEA9Bull;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static uint64_t next_id;

/* A raw Kinesis record of exactly `size` bytes (data + pk), deadline `deadline`. */
static kp_kinesis_record *kr_of(size_t size, double deadline) {
  size_t pk_len = size < 10 ? 1 : 1 + rnd() % 10;
  char pk[16];
  memset(pk, 'p', sizeof pk);
  uint8_t *data = calloc(1, size);
  char err[128];
  kp_record *r = kp_record_new(next_id++, 0, pk, pk_len, NULL, 0, data, size - pk_len, 10 * MiB,
                               0.0, 0.1, 30.0, err, sizeof err);
  free(data);
  assert_non_null(r);
  r->deadline = deadline;
  kp_kinesis_record *kr = kp_kinesis_record_single(r, 0);
  assert_non_null(kr);
  assert_int_equal(kp_kinesis_record_size(kr), size);
  return kr;
}

/* Checks a batch's bookkeeping against its contents and appends the ids it holds. */
static void check_batch(const kp_batch *b, uint32_t max_count, size_t max_bytes, uint64_t *seen,
                        size_t *n_seen) {
  assert_non_null(b);
  uint32_t n = 0;
  size_t bytes = 0;
  double dl = INFINITY;
  const kp_kinesis_record *last = NULL;
  for (const kp_kinesis_record *kr = b->head; kr; kr = kr->next) {
    n++;
    bytes += kp_kinesis_record_size(kr);
    dl = kr->deadline < dl ? kr->deadline : dl;
    last = kr;
    if (seen)
      seen[(*n_seen)++] = kr->records->source_id;
  }
  assert_ptr_equal(last, b->tail);
  assert_int_equal(n, b->count);
  assert_int_equal(bytes, b->bytes);
  assert_true(dl == b->deadline);
  assert_true(n >= 1 && n <= max_count);
  assert_true(bytes <= max_bytes || n == 1); /* an oversized record travels alone */
}

static void count_limit_of_500(void **state) {
  kp_collector *c = kp_collector_new(500, 5 * MiB);
  size_t full = 0;
  for (int i = 0; i < 1234; i++) {
    kp_batch *b = (kp_batch *)0x1;
    assert_int_equal(kp_collector_add(c, kr_of(20, 1.0), &b), 0);
    if (b) {
      /* Returned as soon as it holds 500, not when the 501st arrives. */
      assert_int_equal(i % 500, 499);
      check_batch(b, 500, 5 * MiB, NULL, NULL);
      assert_int_equal(b->count, 500);
      assert_int_equal(b->bytes, 500 * 20);
      kp_batch_free(b, true);
      full++;
    }
  }
  assert_int_equal(full, 2);
  assert_int_equal(kp_collector_count(c), 234);
  assert_int_equal(kp_collector_bytes(c), 234 * 20);
  kp_batch *b = kp_collector_flush(c);
  check_batch(b, 500, 5 * MiB, NULL, NULL);
  assert_int_equal(b->count, 234);
  kp_batch_free(b, true);
  assert_null(kp_collector_flush(c));
  kp_collector_free(c);
}

static void settings_are_clamped_to_kinesis_limits(void **state) {
  kp_collector *c = kp_collector_new(100000, 100 * MiB);
  kp_batch *b;
  int i = 0;
  do {
    assert_int_equal(kp_collector_add(c, kr_of(10, 0), &b), 0);
    i++;
  } while (!b);
  assert_int_equal(i, 500);
  kp_batch_free(b, true);
  /* 5 MiB: five 1 MiB records fill it exactly. */
  for (i = 0; i < 5; i++) {
    assert_int_equal(kp_collector_add(c, kr_of(MiB, 0), &b), 0);
    assert_true((b != NULL) == (i == 4));
  }
  assert_int_equal(b->bytes, 5 * MiB);
  kp_batch_free(b, true);
  kp_collector_free(c);
  /* 0 count means 1. */
  c = kp_collector_new(0, 0);
  assert_int_equal(kp_collector_add(c, kr_of(10, 0), &b), 0);
  assert_non_null(b);
  assert_int_equal(b->count, 1);
  kp_batch_free(b, true);
  kp_collector_free(c);
}

static void byte_limit_counts_partition_keys(void **state) {
  /* Records of 1 MiB of data + a pk: five do not fit in 5 MiB because of the keys. */
  kp_collector *c = kp_collector_new(500, 5 * MiB);
  kp_batch *b;
  for (int i = 0; i < 4; i++) {
    assert_int_equal(kp_collector_add(c, kr_of(MiB + 5, 0), &b), 0);
    assert_null(b);
  }
  kp_kinesis_record *fifth = kr_of(MiB + 5, 0);
  assert_int_equal(kp_collector_add(c, fifth, &b), 0);
  assert_non_null(b);
  assert_int_equal(b->count, 4);
  assert_int_equal(b->bytes, 4 * (MiB + 5));
  kp_batch_free(b, true);
  assert_int_equal(kp_collector_count(c), 1);
  b = kp_collector_flush(c);
  assert_ptr_equal(b->head, fifth);
  kp_batch_free(b, true);
  kp_collector_free(c);
}

static void random_sizes_stay_within_limits_in_order(void **state) {
  for (int round = 0; round < 50; round++) {
    uint32_t max_count = 1 + (uint32_t)(rnd() % 500);
    size_t max_bytes = 52224 + rnd() % (5 * MiB - 52224);
    kp_collector *c = kp_collector_new(max_count, max_bytes);
    size_t n = 500 + rnd() % 1500, n_seen = 0;
    uint64_t first = next_id, *seen = malloc(n * sizeof *seen);
    for (size_t i = 0; i < n; i++) {
      size_t size = rnd() % 50 == 0 ? max_bytes + 1 + rnd() % 1000 : 1 + rnd() % (max_bytes / 8);
      kp_kinesis_record *kr = kr_of(size, (double)(rnd() % 1000));
      size_t before_count = kp_collector_count(c), before_bytes = kp_collector_bytes(c);
      kp_batch *b;
      assert_int_equal(kp_collector_add(c, kr, &b), 0);
      if (b) {
        check_batch(b, max_count, max_bytes, seen, &n_seen);
        if (b->tail == kr) {
          /* Returned because it became full. */
          assert_true(b->count == max_count || b->bytes >= max_bytes);
        } else {
          /* Cut because kr did not fit. */
          assert_int_equal(b->count, before_count);
          assert_int_equal(b->bytes, before_bytes);
          assert_true(before_count + 1 > max_count || before_bytes + size > max_bytes);
        }
        kp_batch_free(b, true);
      } else {
        assert_true(kp_collector_count(c) < max_count && kp_collector_bytes(c) < max_bytes);
      }
    }
    kp_batch *b = kp_collector_flush(c);
    if (b) {
      check_batch(b, max_count, max_bytes, seen, &n_seen);
      kp_batch_free(b, true);
    }
    assert_int_equal(n_seen, n);
    for (size_t i = 0; i < n; i++)
      assert_int_equal(seen[i], first + i);
    free(seen);
    kp_collector_free(c);
  }
}

static void deadline_is_the_earliest_and_infinite_when_empty(void **state) {
  kp_collector *c = kp_collector_new(500, 5 * MiB);
  assert_true(isinf(kp_collector_deadline(c)));
  double dls[] = {9.0, 4.0, 6.0, 2.5, 8.0};
  double want = INFINITY;
  kp_batch *b;
  for (size_t i = 0; i < 5; i++) {
    assert_int_equal(kp_collector_add(c, kr_of(100, dls[i]), &b), 0);
    assert_null(b);
    want = dls[i] < want ? dls[i] : want;
    assert_true(kp_collector_deadline(c) == want);
  }
  b = kp_collector_flush(c);
  assert_true(b->deadline == 2.5);
  assert_true(isinf(kp_collector_deadline(c)));
  /* Without free_records the caller keeps the Kinesis records. */
  kp_kinesis_record *list = b->head;
  kp_batch_free(b, false);
  int n = 0;
  while (list) {
    kp_kinesis_record *next = list->next;
    kp_kinesis_record_free(list, true);
    list = next;
    n++;
  }
  assert_int_equal(n, 5);
  kp_batch_free(NULL, true);
  kp_collector_free(c);
}

static void free_releases_the_batch_in_progress(void **state) {
  kp_collector *c = kp_collector_new(10, 5 * MiB);
  kp_batch *b;
  for (int i = 0; i < 7; i++)
    assert_int_equal(kp_collector_add(c, kr_of(100, 1.0), &b), 0);
  kp_heap_item *it = kp_collector_heap_item(c);
  assert_false(kp_heap_item_queued(it));
  assert_ptr_equal(kp_collector_from_heap_item(it), c);
  kp_collector_free(c); /* ASan reports a leak if the records stay */
  kp_collector_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(count_limit_of_500),
      cmocka_unit_test(settings_are_clamped_to_kinesis_limits),
      cmocka_unit_test(byte_limit_counts_partition_keys),
      cmocka_unit_test(random_sizes_stay_within_limits_in_order),
      cmocka_unit_test(deadline_is_the_earliest_and_infinite_when_empty),
      cmocka_unit_test(free_releases_the_batch_in_progress),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
