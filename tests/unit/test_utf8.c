// KP_TEST_LIBS: kp_format
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "format/utf8.h"

static void counts_code_points_of_valid_text(void **state) {
  assert_int_equal(kp_utf8_count("abc", 3, NULL), 3);
  assert_int_equal(kp_utf8_count("\xc3\xa9\xe6\xbc\xa2\xf0\x9f\x99\x82", 9, NULL), 3);
  assert_int_equal(kp_utf8_count("", 0, NULL), 0);
  assert_int_equal(kp_utf8_count("\xf4\x8f\xbf\xbf", 4, NULL), 1); /* U+10FFFF */
  /* Long ASCII runs (counted eight bytes at a time) around multi-byte characters. */
  assert_int_equal(kp_utf8_count("abcdefghijklmnopq", 17, NULL), 17);
  assert_int_equal(kp_utf8_count("abcdefg\xc3\xa9hijklmnop\xe6\xbc\xa2", 21, NULL), 18);
}

static void rejects_invalid_sequences_with_their_offset(void **state) {
  struct {
    const char *s;
    size_t len, off;
  } bad[] = {
      {"ab\xc3", 3, 2},                         /* truncated */
      {"\xc0\xaf", 2, 0},                       /* overlong 2-byte */
      {"x\xe0\x80\xaf", 4, 1},                  /* overlong 3-byte */
      {"\xed\xa0\x80", 3, 0},                   /* surrogate */
      {"\xf4\x90\x80\x80", 4, 0},               /* above U+10FFFF */
      {"\xf0\x80\x80\x80", 4, 0},               /* overlong 4-byte */
      {"ok\xff", 3, 2},                         /* never valid */
      {"\xe6\xbc\x41", 3, 0},                   /* bad continuation */
      {"abcdefghijklmnop\xff", 17, 16},         /* after two ASCII words */
      {"abcdefghij\x80klmnopqrs", 20, 10},      /* inside the second word */
      {"abcdefgh\xc3\xa9ijklmnop\xc3", 19, 18}, /* truncated after words */
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    size_t off = 99;
    assert_int_equal(kp_utf8_count(bad[i].s, bad[i].len, &off), -1);
    assert_int_equal(off, bad[i].off);
  }
}

static void lossy_append_replaces_each_bad_byte(void **state) {
  kp_buf b = KP_BUF_INIT;
  const uint8_t in[] = {'a', 0xff, 0xc3, 0xa9, 0xed, 0xa0, 0x80, 'z'};
  assert_int_equal(kp_utf8_append_lossy(&b, in, sizeof in), 0);
  const char want[] = "a\xEF\xBF\xBD\xc3\xa9\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDz";
  assert_int_equal(b.len, sizeof want - 1);
  assert_memory_equal(b.data, want, b.len);
  assert_true(kp_utf8_count((const char *)b.data, b.len, NULL) > 0);
  kp_buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(counts_code_points_of_valid_text),
      cmocka_unit_test(rejects_invalid_sequences_with_their_offset),
      cmocka_unit_test(lossy_append_replaces_each_bad_byte),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
