// KP_TEST_LIBS: kp_format kp_deagg
/* Encoder -> de-aggregator round trips over random inputs: whatever the aggregation
 * encoder writes, the de-aggregator must give back record for record, byte for byte,
 * with the hash key a consumer would compute. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "format/agg_encoder.h"
#include "format/hash_key.h"
#include "kp_deagg.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t next_rand(void) {
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * 0x2545F4914F6CDD1Dull;
}

static size_t rand_below(size_t n) {
  return n ? (size_t)(next_rand() % n) : 0;
}

/* UTF-8 partition keys of 1..max_chars code points, mixing 1- to 4-byte characters. */
static size_t rand_key(char *out, size_t max_chars) {
  static const char *pieces[] = {
      "a", "Z", "7", "-", "\xc3\xa9", "\xe6\xbc\xa2", "\xf0\x9f\x99\x82", "\"", "\\", " "};
  size_t n = 1 + rand_below(max_chars), len = 0;
  for (size_t i = 0; i < n; i++) {
    const char *p = pieces[rand_below(sizeof pieces / sizeof *pieces)];
    memcpy(out + len, p, strlen(p));
    len += strlen(p);
  }
  return len;
}

typedef struct user_rec {
  char pk[1100];
  size_t pk_len;
  char ehk[KP_HASH_KEY_DEC_MAX];
  size_t ehk_len; /* 0: none */
  uint8_t *data;
  size_t data_len;
  kp_hash_key hk;
} user_rec;

static void one_round(kp_agg_encoder *enc, kp_deagg *d, size_t n, size_t max_data,
                      unsigned ehk_percent, size_t key_pool) {
  user_rec *recs = calloc(n, sizeof *recs);
  assert_non_null(recs);
  kp_agg_encoder_reset(enc);
  for (size_t i = 0; i < n; i++) {
    user_rec *r = &recs[i];
    if (key_pool && i >= key_pool) { /* reuse an earlier key: tables de-duplicate */
      const user_rec *src = &recs[rand_below(key_pool)];
      memcpy(r->pk, src->pk, src->pk_len);
      r->pk_len = src->pk_len;
    } else {
      r->pk_len = rand_key(r->pk, 256);
    }
    if (rand_below(100) < ehk_percent) {
      kp_hash_key k;
      for (int b = 0; b < 16; b++)
        k.be[b] = (uint8_t)next_rand();
      r->ehk_len = kp_hash_key_format(&k, r->ehk);
      r->hk = k;
    } else {
      kp_hash_key_of_partition_key(r->pk, r->pk_len, &r->hk);
    }
    r->data_len = rand_below(max_data + 1);
    r->data = malloc(r->data_len ? r->data_len : 1);
    for (size_t b = 0; b < r->data_len; b++)
      r->data[b] = (uint8_t)next_rand();
    assert_int_equal(kp_agg_encoder_add(enc, r->pk, r->pk_len, r->ehk_len ? r->ehk : NULL,
                                        r->ehk_len, r->data, r->data_len, &r->hk),
                     0);
  }
  kp_agg_output out;
  assert_int_equal(kp_agg_encoder_finish(enc, &out), 0);
  kp_deagg_input in = {.data = out.data,
                       .data_len = out.data_len,
                       .partition_key = out.partition_key,
                       .partition_key_len = out.partition_key_len,
                       .explicit_hash_key = out.explicit_hash_key,
                       .explicit_hash_key_len = strlen(out.explicit_hash_key),
                       .sequence_number =
                           "49590338271490256608559692538361571095921575989136588898",
                       .sequence_number_len = 56};
  assert_int_equal(kp_deagg_begin(d, &in), KP_DEAGG_OK);
  kp_deagg_record u;
  for (size_t i = 0; i < n; i++) {
    const user_rec *r = &recs[i];
    assert_int_equal(kp_deagg_next(d, &u), KP_DEAGG_OK);
    assert_int_equal(u.aggregated, n > 1);
    if (n > 1) {
      assert_int_equal(u.sub_sequence_number, i);
      assert_memory_equal(u.partition_key, r->pk, r->pk_len);
      assert_int_equal(u.partition_key_len, r->pk_len);
      if (r->ehk_len) {
        assert_non_null(u.explicit_hash_key);
        assert_int_equal(u.explicit_hash_key_len, r->ehk_len);
        assert_memory_equal(u.explicit_hash_key, r->ehk, r->ehk_len);
      } else {
        assert_null(u.explicit_hash_key);
      }
    }
    assert_non_null(u.hash_key);
    assert_memory_equal(u.hash_key, r->hk.be, 16);
    assert_int_equal(u.data_len, r->data_len);
    if (r->data_len)
      assert_memory_equal(u.data, r->data, r->data_len);
  }
  assert_int_equal(kp_deagg_next(d, &u), KP_DEAGG_END);
  for (size_t i = 0; i < n; i++)
    free(recs[i].data);
  free(recs);
}

static void random_aggregates_round_trip(void **state) {
  const char *seed = getenv("KP_TEST_SEED");
  if (seed)
    rng = strtoull(seed, NULL, 10) | 1;
  printf("seed %llu (KP_TEST_SEED)\n", (unsigned long long)rng);
  kp_agg_encoder *enc = kp_agg_encoder_new();
  kp_deagg *d = kp_deagg_new();
  kp_deagg_set_strict(d, true);
  for (int round = 0; round < 300; round++) {
    size_t n = 1 + rand_below(round % 10 == 0 ? 2000 : 60);
    unsigned ehk = (unsigned[]){0, 0, 10, 50, 100}[rand_below(5)];
    size_t pool = rand_below(3) ? 0 : 1 + rand_below(8);
    one_round(enc, d, n, 300, ehk, pool);
  }
  kp_agg_encoder_free(enc);
  kp_deagg_destroy(d);
}

static void large_records_up_to_1_mib_round_trip(void **state) {
  kp_agg_encoder *enc = kp_agg_encoder_new();
  kp_deagg *d = kp_deagg_new();
  kp_deagg_set_strict(d, true);
  for (int round = 0; round < 12; round++)
    one_round(enc, d, 1 + rand_below(3), 1024 * 1024 / 3, 30, 0);
  one_round(enc, d, 1, 1024 * 1024, 0, 0); /* one record alone goes out raw */
  kp_agg_encoder_free(enc);
  kp_deagg_destroy(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(random_aggregates_round_trip),
      cmocka_unit_test(large_records_up_to_1_mib_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
