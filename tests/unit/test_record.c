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

#include "producer/record.h"

#define MAX_DATA 1024

static kp_record *make(const char *pk, size_t pk_len, const char *ehk, size_t data_len, char *err) {
  static uint8_t data[4 * MAX_DATA];
  for (size_t i = 0; i < sizeof data; i++)
    data[i] = (uint8_t)(i * 7);
  err[0] = 0;
  return kp_record_new(42, 3, pk, pk_len, ehk, ehk ? strlen(ehk) : 0, data, data_len, MAX_DATA,
                       100.0, 0.1, 30.0, err, 256);
}

/* Repeats a UTF-8 sequence n times into a fresh buffer. */
static char *repeat(const char *seq, size_t n, size_t *len) {
  size_t l = strlen(seq);
  char *s = malloc(l * n + 1);
  for (size_t i = 0; i < n; i++)
    memcpy(s + i * l, seq, l);
  s[l * n] = 0;
  *len = l * n;
  return s;
}

static void valid_record_has_its_fields_in_one_block(void **state) {
  char err[256];
  kp_record *r = make("user-17", 7, NULL, 100, err);
  assert_non_null(r);
  assert_int_equal(r->source_id, 42);
  assert_int_equal(r->stream, 3);
  assert_int_equal(r->pk_len, 7);
  assert_string_equal(kp_record_pk(r), "user-17");
  assert_null(kp_record_ehk(r));
  assert_int_equal(r->ehk_len, 0);
  assert_int_equal(r->data_len, 100);
  for (int i = 0; i < 100; i++)
    assert_int_equal(kp_record_data(r)[i], (uint8_t)(i * 7));
  kp_hash_key md5;
  kp_hash_key_of_partition_key("user-17", 7, &md5);
  assert_memory_equal(kp_record_hash_key(r)->be, md5.be, 16);
  assert_true(r->arrival == 100.0);
  assert_true(r->deadline == 100.0 + 0.1);
  assert_true(r->expiry == 100.0 + 30.0);
  assert_true(r->last_attempt_end == 100.0);
  assert_int_equal(r->n_attempts, 0);
  assert_null(r->next);
  /* pk, ehk, data live in the record's own allocation. */
  assert_true(kp_record_pk(r) == (const char *)(r + 1) &&
              (const char *)kp_record_data(r) > kp_record_pk(r));
  kp_record_free(r);
}

static void explicit_hash_key_overrides_md5(void **state) {
  char err[256];
  kp_record *r = make("pk", 2, "340282366920938463463374607431768211455", 0, err);
  assert_non_null(r);
  assert_string_equal(kp_record_ehk(r), "340282366920938463463374607431768211455");
  assert_int_equal(r->ehk_len, 39);
  for (int i = 0; i < 16; i++)
    assert_int_equal(kp_record_hash_key(r)->be[i], 0xFF);
  assert_int_equal(r->data_len, 0);
  kp_record_free(r);
  r = make("pk", 2, "0", 1, err);
  assert_non_null(r);
  for (int i = 0; i < 16; i++)
    assert_int_equal(kp_record_hash_key(r)->be[i], 0);
  kp_record_free(r);
}

static void empty_partition_key_is_rejected(void **state) {
  char err[256];
  assert_null(make("", 0, NULL, 1, err));
  assert_string_equal(err, "partition key is empty, must be 1 to 256 characters");
}

static void partition_key_length_counts_code_points(void **state) {
  char err[256];
  size_t len;
  /* 257 two-byte characters: 514 bytes, 257 code points. */
  char *pk = repeat("\xC3\xA9", 257, &len);
  assert_null(make(pk, len, NULL, 1, err));
  assert_string_equal(err, "partition key is 257 characters, limit is 256");
  free(pk);
  /* Mixed widths: 100 ASCII + 100 three-byte + 100 four-byte = 300 code points. */
  char mixed[100 + 300 + 400 + 1];
  size_t o = 0;
  for (int i = 0; i < 100; i++)
    mixed[o++] = 'x';
  for (int i = 0; i < 100; i++)
    memcpy(mixed + o, "\xE2\x82\xAC", 3), o += 3;
  for (int i = 0; i < 100; i++)
    memcpy(mixed + o, "\xF0\x9F\x98\x80", 4), o += 4;
  assert_null(make(mixed, o, NULL, 1, err));
  assert_string_equal(err, "partition key is 300 characters, limit is 256");
  /* 257 ASCII. */
  pk = repeat("a", 257, &len);
  assert_null(make(pk, len, NULL, 1, err));
  assert_string_equal(err, "partition key is 257 characters, limit is 256");
  free(pk);
}

static void partition_key_of_256_four_byte_chars_is_accepted(void **state) {
  char err[256];
  size_t len;
  char *pk = repeat("\xF0\x9F\x98\x80", 256, &len);
  assert_int_equal(len, 1024);
  kp_record *r = make(pk, len, NULL, 1, err);
  assert_non_null(r);
  assert_int_equal(r->pk_len, 1024);
  assert_memory_equal(kp_record_pk(r), pk, len);
  kp_hash_key md5;
  kp_hash_key_of_partition_key(pk, len, &md5);
  assert_memory_equal(kp_record_hash_key(r)->be, md5.be, 16);
  kp_record_free(r);
  free(pk);
  pk = repeat("a", 256, &len);
  r = make(pk, len, NULL, 1, err);
  assert_non_null(r);
  kp_record_free(r);
  free(pk);
}

static void invalid_utf8_is_rejected_with_its_offset(void **state) {
  struct {
    const char *pk;
    size_t len, offset;
  } cases[] = {
      {"ab\x80", 3, 2},              /* lone continuation byte */
      {"a\xC0\x80", 3, 1},           /* overlong NUL */
      {"\xC1\xBF", 2, 0},            /* overlong */
      {"xx\xE0\x80\x80", 5, 2},      /* overlong 3-byte */
      {"\xED\xA0\x80", 3, 0},        /* UTF-16 surrogate */
      {"abc\xF4\x90\x80\x80", 7, 3}, /* above U+10FFFF */
      {"\xF5\x80\x80\x80", 4, 0},    /* invalid lead byte */
      {"\xFF", 1, 0},
      {"ok\xE2\x82", 4, 2},   /* truncated at the end */
      {"\xE2\x28\xA1", 3, 0}, /* bad continuation */
      {"\xF0\x9F\x98", 3, 0}, /* truncated 4-byte */
  };
  char err[256], want[128];
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    assert_null(make(cases[i].pk, cases[i].len, NULL, 1, err));
    snprintf(want, sizeof want, "partition key is not valid UTF-8 (byte %zu)", cases[i].offset);
    assert_string_equal(err, want);
  }
  /* Boundaries that are valid. */
  const char *ok[] = {"\xC2\x80",     "\xDF\xBF",     "\xE0\xA0\x80",     "\xED\x9F\xBF",
                      "\xEE\x80\x80", "\xEF\xBF\xBF", "\xF0\x90\x80\x80", "\xF4\x8F\xBF\xBF"};
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
    kp_record *r = make(ok[i], strlen(ok[i]), NULL, 1, err);
    assert_non_null(r);
    kp_record_free(r);
    assert_int_equal(kp_utf8_count(ok[i], strlen(ok[i]), NULL), 1);
  }
}

static void bad_explicit_hash_keys_are_rejected(void **state) {
  struct {
    const char *ehk, *msg;
  } cases[] = {
      {"-1", "explicit hash key \"-1\" is not a decimal integer in 0..2^128-1"},
      {"abc", "explicit hash key \"abc\" is not a decimal integer in 0..2^128-1"},
      {"", "explicit hash key \"\" is not a decimal integer in 0..2^128-1"},
      {"340282366920938463463374607431768211456",
       "explicit hash key \"340282366920938463463374607431768211456\" is not a decimal integer "
       "in 0..2^128-1"},
      {"1\n2", "explicit hash key \"1?2\" is not a decimal integer in 0..2^128-1"},
      {"12345678901234567890123456789012345678901234567890123456789",
       "explicit hash key \"12345678901234567890123456789012345678901234...\" is not a decimal "
       "integer in 0..2^128-1"},
  };
  char err[256];
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    assert_null(make("pk", 2, cases[i].ehk, 1, err));
    assert_string_equal(err, cases[i].msg);
  }
}

static void data_over_the_limit_is_rejected(void **state) {
  char err[256];
  assert_null(make("pk", 2, NULL, MAX_DATA + 1, err));
  assert_string_equal(err, "data is 1025 bytes, limit is 1024");
  kp_record *r = make("pk", 2, NULL, MAX_DATA, err);
  assert_non_null(r);
  assert_int_equal(r->data_len, MAX_DATA);
  kp_record_free(r);
}

static void deadline_never_passes_expiry(void **state) {
  char err[64];
  kp_record *r = kp_record_new(1, 0, "k", 1, NULL, 0, "x", 1, 10, 5.0, 2.0, 0.5, err, sizeof err);
  assert_non_null(r);
  assert_true(r->expiry == 5.5);
  assert_true(r->deadline == 5.5);
  kp_record_free(r);
}

static void attempt_duration_is_clamped_not_wrapped(void **state) {
  /* duration_ms is 31 bits in the packed attempt: a huge value must saturate. */
  char err[64];
  kp_record *r = make("k", 1, NULL, 1, err);
  assert_int_equal(kp_record_add_attempt(r, 1, (1u << 31) + 5, true, NULL, NULL), 0);
  assert_int_equal(kp_record_add_attempt(r, 2, (1u << 31) - 1, false, NULL, NULL), 0);
  assert_int_equal(r->attempts[0].duration_ms, (1u << 31) - 1);
  assert_true(r->attempts[0].success);
  assert_int_equal(r->attempts[1].duration_ms, (1u << 31) - 1);
  assert_false(r->attempts[1].success);
  kp_record_free(r);
}

static void attempts_are_appended_with_copied_strings(void **state) {
  char err[64];
  kp_record *r = make("k", 1, NULL, 1, err);
  char code[32], msg[64];
  for (int i = 0; i < 20; i++) {
    snprintf(code, sizeof code, "Code%d", i);
    snprintf(msg, sizeof msg, "message %d", i);
    assert_int_equal(kp_record_add_attempt(r, (uint32_t)i, (uint32_t)(2 * i), i == 19,
                                           i % 3 == 0 ? NULL : code, i % 4 == 0 ? NULL : msg),
                     0);
    memset(code, 0, sizeof code);
    memset(msg, 0, sizeof msg);
  }
  assert_int_equal(r->n_attempts, 20);
  assert_true(r->cap_attempts >= 20);
  for (int i = 0; i < 20; i++) {
    const kp_attempt *a = &r->attempts[i];
    assert_int_equal(a->delay_ms, i);
    assert_int_equal(a->duration_ms, 2 * i);
    assert_int_equal(a->success, i == 19);
    if (i % 3 == 0) {
      assert_null(a->error_code);
    } else {
      snprintf(code, sizeof code, "Code%d", i);
      assert_string_equal(a->error_code, code);
    }
    if (i % 4 == 0) {
      assert_null(a->error_message);
    } else {
      snprintf(msg, sizeof msg, "message %d", i);
      assert_string_equal(a->error_message, msg);
    }
  }
  kp_record_free(r);
  kp_record_free(NULL);
}

/* Shedding keeps every header field and attempt; unshedding gives back a whole record
 * with that header; the arena goes with its last record (ASan checks the freeing). */
static void shed_headers_keep_their_state_and_unshed_whole(void **state) {
  (void)state;
  char err[256];
  kp_record *a = make("a", 1, NULL, 5, err), *b = make("bb", 2, "12345", 7, err),
            *c = make("c", 1, NULL, 0, err);
  a->next = b;
  b->next = c;
  a->source_id = 1, b->source_id = 2, c->source_id = 3;
  assert_int_equal(kp_record_add_attempt(a, 1, 2, false, "X", "x"), 0); /* inline */
  for (int i = 0; i < 3; i++) /* grown into its own array */
    assert_int_equal(kp_record_add_attempt(b, (uint32_t)i, 0, false, "Y", NULL), 0);
  kp_record *tail = NULL;
  kp_record *h = kp_record_shed_list(a, 3, &tail);
  assert_non_null(h);
  assert_true(h != a);
  uint64_t id = 1;
  for (kp_record *r = h; r; r = r->next, id++) {
    assert_true(r->shed);
    assert_false(r->hash_known);
    assert_int_equal(r->source_id, id);
    assert_int_equal(r->stream, 3);
    assert_true(r->arrival == 100.0);
    if (!r->next)
      assert_ptr_equal(r, tail);
  }
  assert_int_equal(id, 4);
  kp_record *sa = h, *sb = h->next, *sc = sb->next;
  assert_int_equal(sa->n_attempts, 1);
  assert_ptr_equal(sa->attempts, &sa->first_attempt); /* moved with the header */
  assert_string_equal(sa->attempts[0].error_code, "X");
  assert_int_equal(sb->n_attempts, 3);
  assert_int_equal(sb->data_len, 7); /* still counted as buffered */
  kp_record *wb = kp_record_unshed(sb, "bb", 2, "12345", 5, "1234567", 7);
  assert_non_null(wb);
  assert_false(wb->shed);
  assert_null(wb->next);
  assert_int_equal(wb->source_id, 2);
  assert_string_equal(kp_record_pk(wb), "bb");
  assert_string_equal(kp_record_ehk(wb), "12345");
  assert_memory_equal(kp_record_data(wb), "1234567", 7);
  assert_true(wb->hash_known);
  assert_int_equal(wb->hash_key.be[15], 0x39); /* 12345 = 0x3039 */
  assert_int_equal(wb->n_attempts, 3);
  assert_string_equal(wb->attempts[2].error_code, "Y");
  kp_record *wa = kp_record_unshed(sa, "a", 1, NULL, 0, "", 0);
  assert_non_null(wa);
  assert_ptr_equal(wa->attempts, &wa->first_attempt);
  assert_string_equal(wa->attempts[0].error_message, "x");
  assert_false(wa->hash_known); /* MD5 of the key again, when needed */
  assert_int_equal(wa->data_len, 0);
  kp_record_free(sc); /* the last of the arena */
  kp_record_free(wa);
  kp_record_free(wb);
}

/* A record whose data is in the shared data file points at it instead of copying it,
 * keeps its key and hash key as usual, and once shed and unshed holds its own copy. */
static void shared_record_points_at_its_data_until_unshed(void **state) {
  static const uint8_t file[64] = "0123456789abcdef, the client's shared data file";
  char err[128];
  kp_record *r = kp_record_new_shared(9, 1, "key", 3, "42", 2, file + 10, 20, MAX_DATA, 1.0, 0.1,
                                      30.0, err, sizeof err);
  assert_non_null(r);
  assert_true(r->shared);
  assert_ptr_equal(kp_record_data(r), file + 10); /* no copy */
  assert_int_equal(r->data_len, 20);
  assert_string_equal(kp_record_pk(r), "key");
  assert_string_equal(kp_record_ehk(r), "42");
  /* Validation is the same as for a copied record. */
  assert_null(kp_record_new_shared(9, 1, "", 0, NULL, 0, file, 1, MAX_DATA, 1.0, 0.1, 30.0, err,
                                   sizeof err));
  assert_null(kp_record_new_shared(9, 1, "k", 1, NULL, 0, file, MAX_DATA + 1, MAX_DATA, 1.0, 0.1,
                                   30.0, err, sizeof err));
  kp_record *tail;
  kp_record *s = kp_record_shed_list(r, 1, &tail);
  assert_true(s->shed);
  kp_record *w = kp_record_unshed(s, "key", 3, "42", 2, file + 10, 20);
  assert_non_null(w);
  assert_false(w->shared);
  assert_ptr_not_equal(kp_record_data(w), file + 10);
  assert_memory_equal(kp_record_data(w), file + 10, 20);
  assert_int_equal(w->source_id, 9);
  kp_record_free(w);
}

static void utf8_count_matches_a_reference_decoder_on_random_bytes(void **state) {
  /* Reference: decode code point by code point and check ranges, the slow obvious way. */
  uint32_t seed = 12345;
  for (int iter = 0; iter < 20000; iter++) {
    unsigned char s[8];
    size_t len = 1 + iter % 8;
    for (size_t i = 0; i < len; i++) {
      seed = seed * 1103515245u + 12345u;
      unsigned v = (seed >> 16) & 0xFF;
      /* Bias toward plausible sequences. */
      s[i] = (unsigned char)(i > 0 && (v & 1) ? 0x80 | (v >> 2) : v);
    }
    long want = 0;
    size_t i = 0, bad_at = 0;
    int ok = 1;
    while (i < len) {
      unsigned c = s[i], n;
      if (c < 0x80)
        n = 0;
      else if (c >= 0xC0 && c <= 0xDF)
        n = 1;
      else if (c >= 0xE0 && c <= 0xEF)
        n = 2;
      else if (c >= 0xF0 && c <= 0xF7)
        n = 3;
      else
        n = 9;
      int good = n != 9 && i + n < len;
      uint32_t cp = n == 0 ? c : c & (0x3Fu >> n);
      for (unsigned k = 1; good && k <= n; k++) {
        good = (s[i + k] & 0xC0) == 0x80;
        cp = cp << 6 | (s[i + k] & 0x3Fu);
      }
      uint32_t min = n == 1 ? 0x80 : n == 2 ? 0x800 : n == 3 ? 0x10000 : 0;
      if (!good || cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        ok = 0;
        bad_at = i;
        break;
      }
      i += n + 1;
      want++;
    }
    size_t off = 99;
    long got = kp_utf8_count((const char *)s, len, &off);
    if (ok) {
      assert_int_equal(got, want);
    } else {
      assert_int_equal(got, -1);
      assert_int_equal(off, bad_at);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(valid_record_has_its_fields_in_one_block),
      cmocka_unit_test(explicit_hash_key_overrides_md5),
      cmocka_unit_test(empty_partition_key_is_rejected),
      cmocka_unit_test(partition_key_length_counts_code_points),
      cmocka_unit_test(partition_key_of_256_four_byte_chars_is_accepted),
      cmocka_unit_test(invalid_utf8_is_rejected_with_its_offset),
      cmocka_unit_test(bad_explicit_hash_keys_are_rejected),
      cmocka_unit_test(shed_headers_keep_their_state_and_unshed_whole),
      cmocka_unit_test(shared_record_points_at_its_data_until_unshed),
      cmocka_unit_test(data_over_the_limit_is_rejected),
      cmocka_unit_test(deadline_never_passes_expiry),
      cmocka_unit_test(attempts_are_appended_with_copied_strings),
      cmocka_unit_test(attempt_duration_is_clamped_not_wrapped),
      cmocka_unit_test(utf8_count_matches_a_reference_decoder_on_random_bytes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
