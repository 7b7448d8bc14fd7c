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

#include "producer/shard_map.h"

/* Tests do 128-bit arithmetic natively to build ranges independently of the code. */
typedef unsigned __int128 u128;
#define U128_MAX (~(u128)0)

static kp_hash_key hk(u128 v) {
  kp_hash_key k;
  for (int i = 15; i >= 0; i--, v >>= 8)
    k.be[i] = (uint8_t)v;
  return k;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}
static u128 rnd128(void) {
  return (u128)rnd() << 64 | rnd();
}

static void shard_name(char *out, size_t size, unsigned i) {
  snprintf(out, size, "shardId-%012u", i);
}

/* Builds a map of n shards splitting the space at the sorted points cut[0..n-2] (shard
 * i is [cut[i-1], cut[i]-1]), adding them in a shuffled order. */
static kp_shard_map *build(const u128 *cut, unsigned n) {
  kp_shard_map *m = kp_shard_map_new();
  assert_non_null(m);
  unsigned *order = malloc(n * sizeof *order);
  for (unsigned i = 0; i < n; i++)
    order[i] = i;
  for (unsigned i = n; i > 1; i--) {
    unsigned j = (unsigned)(rnd() % i), t = order[i - 1];
    order[i - 1] = order[j];
    order[j] = t;
  }
  for (unsigned k = 0; k < n; k++) {
    unsigned i = order[k];
    char id[32];
    shard_name(id, sizeof id, i);
    kp_hash_key s = hk(i == 0 ? 0 : cut[i - 1]), e = hk(i == n - 1 ? U128_MAX : cut[i] - 1);
    assert_int_equal(kp_shard_map_add(m, id, &s, &e), 0);
  }
  free(order);
  char err[256] = "";
  int rc = kp_shard_map_finalize(m, err, sizeof err);
  if (rc)
    print_error("finalize: %s\n", err);
  assert_int_equal(rc, 0);
  return m;
}

static void even_split_lookups_at_both_ends_of_every_range(void **state) {
  for (unsigned n = 1; n <= 64; n++) {
    u128 *cut = malloc(n * sizeof *cut);
    u128 step = U128_MAX / n; /* what Kinesis does for an even split (up to rounding) */
    for (unsigned i = 1; i < n; i++)
      cut[i - 1] = step * i;
    kp_shard_map *m = build(cut, n);
    assert_int_equal(kp_shard_map_count(m), n);
    for (unsigned i = 0; i < n; i++) {
      char id[32];
      shard_name(id, sizeof id, i);
      /* Indices follow hash key order, which is the naming order here. */
      assert_string_equal(kp_shard_map_shard_id(m, i), id);
      assert_int_equal(kp_shard_map_index_of(m, id), (int)i);
      u128 s = i == 0 ? 0 : cut[i - 1], e = i == n - 1 ? U128_MAX : cut[i] - 1;
      kp_hash_key ks = hk(s), ke = hk(e), mid = hk(s + (e - s) / 2);
      assert_int_equal(kp_shard_map_lookup(m, &ks), (int)i);
      assert_int_equal(kp_shard_map_lookup(m, &ke), (int)i);
      assert_int_equal(kp_shard_map_lookup(m, &mid), (int)i);
      assert_true(kp_shard_map_owns(m, id, &ks));
      assert_true(kp_shard_map_owns(m, id, &ke));
      if (i > 0) {
        kp_hash_key before = hk(s - 1);
        assert_int_equal(kp_shard_map_lookup(m, &before), (int)i - 1);
        assert_false(kp_shard_map_owns(m, id, &before));
      }
      if (i < n - 1) {
        kp_hash_key after = hk(e + 1);
        assert_int_equal(kp_shard_map_lookup(m, &after), (int)i + 1);
        assert_false(kp_shard_map_owns(m, id, &after));
      }
      kp_hash_key rs, re;
      assert_int_equal(kp_shard_map_range(m, i, &rs, &re), 0);
      assert_memory_equal(rs.be, ks.be, 16);
      assert_memory_equal(re.be, ke.be, 16);
    }
    kp_hash_key zero = hk(0), max = hk(U128_MAX);
    assert_int_equal(kp_shard_map_lookup(m, &zero), 0);
    assert_int_equal(kp_shard_map_lookup(m, &max), (int)n - 1);
    assert_null(kp_shard_map_shard_id(m, n));
    assert_int_equal(kp_shard_map_range(m, n, NULL, NULL), -EINVAL);
    assert_int_equal(kp_shard_map_index_of(m, "shardId-999999999999"), -1);
    assert_false(kp_shard_map_owns(m, "shardId-999999999999", &zero));
    kp_shard_map_free(m);
    free(cut);
  }
}

static int cmp_u128(const void *a, const void *b) {
  u128 x = *(const u128 *)a, y = *(const u128 *)b;
  return x < y ? -1 : x > y;
}

static void random_ranges_match_linear_scan_oracle(void **state) {
  for (int round = 0; round < 200; round++) {
    unsigned n = 1 + (unsigned)(rnd() % 40);
    u128 *cut = malloc(n * sizeof *cut);
    /* Distinct non-zero cut points; some rounds use tiny ranges near the ends. */
    unsigned k = 0;
    while (k < n - 1) {
      u128 v = round % 3 == 0   ? (rnd() % 64) + 1
               : round % 3 == 1 ? U128_MAX - rnd() % 64
                                : rnd128();
      if (v == 0)
        continue;
      int dup = 0;
      for (unsigned j = 0; j < k; j++)
        dup |= cut[j] == v;
      if (!dup)
        cut[k++] = v;
    }
    qsort(cut, n - 1, sizeof *cut, cmp_u128);
    kp_shard_map *m = build(cut, n);
    for (int q = 0; q < 500; q++) {
      u128 v;
      switch (q % 4) {
      case 0:
        v = rnd128();
        break;
      case 1: /* near a boundary */
        v = n > 1 ? cut[rnd() % (n - 1)] - 1 + rnd() % 3 : rnd128();
        break;
      case 2:
        v = rnd() % 70;
        break;
      default:
        v = U128_MAX - rnd() % 70;
      }
      int want = -1;
      for (unsigned i = 0; i < n; i++) {
        u128 s = i == 0 ? 0 : cut[i - 1], e = i == n - 1 ? U128_MAX : cut[i] - 1;
        if (s <= v && v <= e)
          want = (int)i;
      }
      kp_hash_key key = hk(v);
      assert_int_equal(kp_shard_map_lookup(m, &key), want);
      char id[32];
      shard_name(id, sizeof id, (unsigned)want);
      assert_true(kp_shard_map_owns(m, id, &key));
    }
    kp_shard_map_free(m);
    free(cut);
  }
}

/* Finalizes shards given as (id, start, end) and returns the error message. */
typedef struct spec {
  const char *id;
  u128 start, end;
} spec;

static int finalize_specs(const spec *s, size_t n, char *err, size_t errsz) {
  kp_shard_map *m = kp_shard_map_new();
  for (size_t i = 0; i < n; i++) {
    kp_hash_key a = hk(s[i].start), b = hk(s[i].end);
    assert_int_equal(kp_shard_map_add(m, s[i].id, &a, &b), 0);
  }
  err[0] = 0;
  int rc = kp_shard_map_finalize(m, err, errsz);
  if (rc) {
    kp_hash_key z = hk(0);
    assert_int_equal(kp_shard_map_lookup(m, &z), -1); /* unusable after a failed finalize */
  }
  kp_shard_map_free(m);
  return rc;
}

static void gaps_and_overlaps_are_reported_by_shard(void **state) {
  char err[512];
  u128 half = (u128)1 << 127;
  spec gap[] = {{"shardId-2", half + 10, U128_MAX}, {"shardId-1", 0, half}};
  assert_int_equal(finalize_specs(gap, 2, err, sizeof err), -EINVAL);
  assert_string_equal(err, "gap: shard shardId-1 ends at 170141183460469231731687303715884105728 "
                           "but shard shardId-2 starts at 170141183460469231731687303715884105738");

  spec overlap[] = {{"shardId-1", 0, half}, {"shardId-2", half, U128_MAX}};
  assert_int_equal(finalize_specs(overlap, 2, err, sizeof err), -EINVAL);
  assert_string_equal(err,
                      "overlap: shard shardId-2 starts at 170141183460469231731687303715884105728 "
                      "but shard shardId-1 ends at 170141183460469231731687303715884105728");

  /* A shard nested inside another is an overlap too. */
  spec nested[] = {{"a", 0, U128_MAX}, {"b", 5, 6}};
  assert_int_equal(finalize_specs(nested, 2, err, sizeof err), -EINVAL);
  assert_non_null(strstr(err, "overlap"));
  assert_non_null(strstr(err, "shard a "));
  assert_non_null(strstr(err, "shard b "));

  spec low[] = {{"shardId-7", 1, U128_MAX}};
  assert_int_equal(finalize_specs(low, 1, err, sizeof err), -EINVAL);
  assert_string_equal(err, "gap: no shard holds hash keys below 1 (first shard shardId-7)");

  spec high[] = {{"shardId-7", 0, U128_MAX - 1}};
  assert_int_equal(finalize_specs(high, 1, err, sizeof err), -EINVAL);
  assert_string_equal(err, "gap: no shard holds hash keys above "
                           "340282366920938463463374607431768211454 (last shard shardId-7)");

  spec reversed[] = {{"shardId-1", 0, 9}, {"shardId-2", 10, 5}};
  assert_int_equal(finalize_specs(reversed, 2, err, sizeof err), -EINVAL);
  assert_string_equal(err, "shard shardId-2 starts at 10 after its end 5");

  spec dup[] = {{"shardId-1", 0, 9}, {"shardId-1", 10, U128_MAX}};
  assert_int_equal(finalize_specs(dup, 2, err, sizeof err), -EINVAL);
  assert_string_equal(err, "shard shardId-1 is listed twice");

  assert_int_equal(finalize_specs(NULL, 0, err, sizeof err), -EINVAL);
  assert_string_equal(err, "no open shards");

  /* Single-key shards tiling the space are fine. */
  spec tiny[] = {{"x", 0, 0}, {"y", 1, 1}, {"z", 2, U128_MAX}};
  assert_int_equal(finalize_specs(tiny, 3, err, sizeof err), 0);
}

static void add_after_finalize_is_refused(void **state) {
  kp_shard_map *m = kp_shard_map_new();
  kp_hash_key z = hk(0), max = hk(U128_MAX);
  assert_int_equal(kp_shard_map_lookup(m, &z), -1); /* not finalized */
  assert_int_equal(kp_shard_map_add(m, "s", &z, &max), 0);
  assert_int_equal(kp_shard_map_finalize(m, NULL, 0), 0);
  assert_int_equal(kp_shard_map_add(m, "t", &z, &max), -EINVAL);
  assert_int_equal(kp_shard_map_finalize(m, NULL, 0), -EINVAL);
  assert_int_equal(kp_shard_map_lookup(m, &max), 0);
  kp_shard_map_free(m);
  kp_shard_map_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(even_split_lookups_at_both_ends_of_every_range),
      cmocka_unit_test(random_ranges_match_linear_scan_oracle),
      cmocka_unit_test(gaps_and_overlaps_are_reported_by_shard),
      cmocka_unit_test(add_after_finalize_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
