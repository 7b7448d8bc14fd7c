// KP_TEST_LIBS: kp_format
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "format/hash_key.h"

static void parse_then_format_gives_back_canonical_decimal(void **state) {
  const char *cases[] = {"0",
                         "1",
                         "9",
                         "10",
                         "4294967296",
                         "18446744073709551616",
                         "340282366920938463463374607431768211455",
                         "170141183460469231731687303715884105728"};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    kp_hash_key k;
    assert_int_equal(kp_hash_key_parse(cases[i], strlen(cases[i]), &k), 0);
    char out[KP_HASH_KEY_DEC_MAX];
    size_t n = kp_hash_key_format(&k, out);
    assert_int_equal(n, strlen(cases[i]));
    assert_string_equal(out, cases[i]);
  }
}

static void parse_places_bytes_big_endian(void **state) {
  kp_hash_key k;
  assert_int_equal(kp_hash_key_parse("258", 3, &k), 0); /* 0x0102 */
  for (int i = 0; i < 14; i++)
    assert_int_equal(k.be[i], 0);
  assert_int_equal(k.be[14], 1);
  assert_int_equal(k.be[15], 2);
  assert_int_equal(kp_hash_key_parse("18446744073709551616", 20, &k), 0); /* 2^64 */
  assert_int_equal(k.be[7], 1);
  assert_int_equal(k.be[15], 0);
}

static void parse_rejects_non_decimal_and_out_of_range(void **state) {
  kp_hash_key k;
  const char *bad[] = {"",
                       "-1",
                       "+1",
                       " 1",
                       "1 ",
                       "0x10",
                       "1e5",
                       "12a",
                       "340282366920938463463374607431768211456",   /* 2^128 */
                       "999999999999999999999999999999999999999",   /* 39 digits, too big */
                       "0000000000000000000000000000000000000001"}; /* 40 chars */
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    assert_int_equal(kp_hash_key_parse(bad[i], strlen(bad[i]), &k), -1);
}

static void leading_zeros_are_accepted_within_39_digits(void **state) {
  kp_hash_key k;
  assert_int_equal(kp_hash_key_parse("007", 3, &k), 0);
  char out[KP_HASH_KEY_DEC_MAX];
  kp_hash_key_format(&k, out);
  assert_string_equal(out, "7");
}

static void partition_key_hash_is_md5_big_endian(void **state) {
  /* MD5("a") = 0cc175b9c0f1b6a831c399e269772661 */
  kp_hash_key k;
  kp_hash_key_of_partition_key("a", 1, &k);
  char out[KP_HASH_KEY_DEC_MAX];
  kp_hash_key_format(&k, out);
  assert_string_equal(out, "16955237001963240173058271559858726497");
}

static void comparison_is_numeric(void **state) {
  kp_hash_key a, b;
  kp_hash_key_parse("255", 3, &a);
  kp_hash_key_parse("256", 3, &b);
  assert_true(kp_hash_key_cmp(&a, &b) < 0);
  assert_true(kp_hash_key_cmp(&b, &a) > 0);
  assert_int_equal(kp_hash_key_cmp(&a, &a), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(parse_then_format_gives_back_canonical_decimal),
      cmocka_unit_test(parse_places_bytes_big_endian),
      cmocka_unit_test(parse_rejects_non_decimal_and_out_of_range),
      cmocka_unit_test(leading_zeros_are_accepted_within_39_digits),
      cmocka_unit_test(partition_key_hash_is_md5_big_endian),
      cmocka_unit_test(comparison_is_numeric),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
