// KP_TEST_LIBS: kp_deagg kp_format kp_proto
/* De-aggregation tests. Valid aggregates are built with protobuf-c (the oracle),
 * corrupt ones by damaging them or hand-writing wire bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/buf.h"
#include "format/hash_key.h"
#include "format/pbwire.h"
#include "kp_deagg.h"
#include "proto/aggregated_record.pb-c.h"

static const uint8_t MAGIC[4] = {0xF3, 0x89, 0x9A, 0xC2};

typedef struct urec {
  const char *pk;
  const char *ehk; /* NULL: none */
  const char *data;
  size_t len; /* 0: strlen(data) */
} urec;

static size_t urec_len(const urec *u) {
  return u->len ? u->len : strlen(u->data);
}

/* magic | body | MD5(body) */
static void wrap(kp_buf *out, const uint8_t *body, size_t n) {
  uint8_t md5[16];
  kp_buf_reset(out);
  kp_md5(body, n, md5);
  assert_int_equal(kp_buf_append(out, MAGIC, 4), 0);
  assert_int_equal(kp_buf_append(out, body, n), 0);
  assert_int_equal(kp_buf_append(out, md5, 16), 0);
}

static size_t intern(char **table, size_t *n, const char *s) {
  for (size_t i = 0; i < *n; i++)
    if (strcmp(table[i], s) == 0)
      return i;
  table[*n] = (char *)s;
  return (*n)++;
}

/* Packs the protobuf body of an aggregate with keys de-duplicated in order of first
 * appearance, like the KPL. `tags` adds two tags per record. */
static void build_body(kp_buf *body, const urec *u, size_t n, bool tags) {
  Kpl__Agg__AggregatedRecord ar = KPL__AGG__AGGREGATED_RECORD__INIT;
  char **pks = calloc(n + 1, sizeof *pks), **ehks = calloc(n + 1, sizeof *ehks);
  Kpl__Agg__Record *recs = calloc(n + 1, sizeof *recs);
  Kpl__Agg__Record **rp = calloc(n + 1, sizeof *rp);
  Kpl__Agg__Tag tag_a = KPL__AGG__TAG__INIT, tag_b = KPL__AGG__TAG__INIT;
  Kpl__Agg__Tag *tagv[2] = {&tag_a, &tag_b};
  tag_a.key = "k1";
  tag_a.value = "v1";
  tag_b.key = "k2"; /* value absent */
  for (size_t i = 0; i < n; i++) {
    Kpl__Agg__Record r = KPL__AGG__RECORD__INIT;
    r.partition_key_index = intern(pks, &ar.n_partition_key_table, u[i].pk);
    if (u[i].ehk) {
      r.has_explicit_hash_key_index = 1;
      r.explicit_hash_key_index = intern(ehks, &ar.n_explicit_hash_key_table, u[i].ehk);
    }
    r.data.data = (uint8_t *)u[i].data;
    r.data.len = urec_len(&u[i]);
    if (tags) {
      r.n_tags = 2;
      r.tags = tagv;
    }
    recs[i] = r;
    rp[i] = &recs[i];
  }
  ar.partition_key_table = pks;
  ar.explicit_hash_key_table = ehks;
  ar.n_records = n;
  ar.records = rp;
  kp_buf_reset(body);
  assert_int_equal(kp_buf_reserve(body, kpl__agg__aggregated_record__get_packed_size(&ar)), 0);
  body->len = kpl__agg__aggregated_record__pack(&ar, body->data);
  free(pks);
  free(ehks);
  free(recs);
  free(rp);
}

static void build_agg(kp_buf *out, const urec *u, size_t n, bool tags) {
  kp_buf body = KP_BUF_INIT;
  build_body(&body, u, n, tags);
  wrap(out, body.data, body.len);
  kp_buf_free(&body);
}

static bool oracle_parses(const uint8_t *body, size_t n) {
  Kpl__Agg__AggregatedRecord *ar = kpl__agg__aggregated_record__unpack(NULL, n, body);
  if (ar)
    kpl__agg__aggregated_record__free_unpacked(ar, NULL);
  return ar != NULL;
}

static kp_deagg_input input(const kp_buf *b, const char *pk, const char *ehk) {
  kp_deagg_input in = {b->data, b->len, pk, strlen(pk), ehk, ehk ? strlen(ehk) : 0, "4950", 4};
  return in;
}

static void expected_hash_key(const urec *u, uint8_t out[16]) {
  kp_hash_key k;
  if (u->ehk)
    assert_int_equal(kp_hash_key_parse(u->ehk, strlen(u->ehk), &k), 0);
  else
    kp_hash_key_of_partition_key(u->pk, strlen(u->pk), &k);
  memcpy(out, k.be, 16);
}

static bool inside(const void *p, size_t n, const kp_buf *b) {
  const uint8_t *q = p;
  return q >= b->data && q + n <= b->data + b->len;
}

/* Checks that the aggregate in b yields exactly u[0..n) (subset `keep` if given). */
static void expect_records(kp_deagg *d, const kp_buf *b, const urec *u, size_t n,
                           const bool *keep) {
  kp_deagg_input in = input(b, "outer", NULL);
  assert_int_equal(kp_deagg_begin(d, &in), KP_DEAGG_OK);
  assert_int_equal(kp_deagg_corruption(d), KP_DEAGG_OK);
  assert_int_equal(kp_deagg_count(d), n);
  kp_deagg_record r;
  for (size_t i = 0; i < n; i++) {
    if (keep && !keep[i])
      continue;
    assert_int_equal(kp_deagg_next(d, &r), KP_DEAGG_OK);
    assert_int_equal(r.sub_sequence_number, i);
    assert_true(r.aggregated);
    assert_int_equal(r.partition_key_len, strlen(u[i].pk));
    assert_memory_equal(r.partition_key, u[i].pk, r.partition_key_len);
    assert_true(inside(r.partition_key, r.partition_key_len, b));
    assert_int_equal(r.data_len, urec_len(&u[i]));
    if (r.data_len)
      assert_memory_equal(r.data, u[i].data, r.data_len);
    assert_true(inside(r.data, r.data_len, b)); /* zero-copy */
    if (u[i].ehk) {
      assert_non_null(r.explicit_hash_key);
      assert_int_equal(r.explicit_hash_key_len, strlen(u[i].ehk));
      assert_memory_equal(r.explicit_hash_key, u[i].ehk, r.explicit_hash_key_len);
    } else {
      assert_null(r.explicit_hash_key);
    }
    uint8_t hk[16];
    expected_hash_key(&u[i], hk);
    assert_non_null(r.hash_key);
    assert_memory_equal(r.hash_key, hk, 16);
    assert_int_equal(r.sequence_number_len, 4);
    assert_memory_equal(r.sequence_number, "4950", 4);
  }
  assert_int_equal(kp_deagg_next(d, &r), KP_DEAGG_END);
  assert_int_equal(kp_deagg_next(d, &r), KP_DEAGG_END);
}

static void valid_aggregates_yield_every_user_record_in_order(void **state) {
  kp_deagg *d = kp_deagg_new();
  kp_buf b = KP_BUF_INIT;
  static const urec cases[] = {
      {"a", NULL, "hello", 0},
      {"ключ", NULL, "данные", 0},
      {"日本語🙂", "0", "x", 0},
      {"a", NULL, "repeated key", 0},
      {"b", "340282366920938463463374607431768211455", "max ehk", 0},
      {"c", "0", "ehk shared with record 2", 0},
      {"", NULL, "", 0}, /* empty key and data */
      {"bin", NULL, "\0\1\2\xff", 4},
  };
  size_t nc = sizeof cases / sizeof *cases;
  for (size_t n = 0; n <= nc; n++) {
    for (int tags = 0; tags < 2; tags++) {
      build_agg(&b, cases, n, tags);
      if (b.len <= 20)
        continue; /* 0 records packs to 20 bytes: a pass-through, tested elsewhere */
      expect_records(d, &b, cases, n, NULL);
    }
  }
  kp_buf_free(&b);
  kp_deagg_destroy(d);
}

static void many_records_with_few_keys_share_cached_hash_keys(void **state) {
  enum { N = 2000 };
  urec *u = calloc(N, sizeof *u);
  char(*data)[16] = calloc(N, 16);
  static const char *keys[] = {"alpha", "beta", "gamma"};
  for (size_t i = 0; i < N; i++) {
    snprintf(data[i], 16, "rec-%zu", i);
    u[i] = (urec){keys[i % 3], NULL, data[i], 0};
  }
  kp_buf b = KP_BUF_INIT;
  build_agg(&b, u, N, false);
  kp_deagg *d = kp_deagg_new();
  expect_records(d, &b, u, N, NULL);
  /* Records with the same key get the same cached hash key (one MD5 per key). */
  kp_deagg_input in = input(&b, "outer", NULL);
  assert_int_equal(kp_deagg_begin(d, &in), KP_DEAGG_OK);
  kp_deagg_record r0, r;
  assert_int_equal(kp_deagg_next(d, &r0), KP_DEAGG_OK);
  for (int i = 1; i <= 6; i++)
    assert_int_equal(kp_deagg_next(d, &r), KP_DEAGG_OK);
  assert_ptr_equal(r.hash_key, r0.hash_key); /* record 6 uses key 0 */
  kp_buf_free(&b);
  kp_deagg_destroy(d);
  free(u);
  free(data);
}

/* Appends a tag and (for LEN) a payload. */
static void put_tag(kp_buf *b, uint32_t field, unsigned wt) {
  uint8_t t[10];
  kp_buf_append(b, t, pb_put_varint(t, pb_tag(field, wt)));
}
static void put_varint(kp_buf *b, uint64_t v) {
  uint8_t t[10];
  kp_buf_append(b, t, pb_put_varint(t, v));
}
static void put_len(kp_buf *b, uint32_t field, const void *p, size_t n) {
  put_tag(b, field, PB_WT_LEN);
  put_varint(b, n);
  kp_buf_append(b, p, n);
}
/* One of each unknown wire type, including a nested group. */
static void put_unknowns(kp_buf *b) {
  put_tag(b, 15, PB_WT_VARINT);
  put_varint(b, 300);
  put_tag(b, 9, PB_WT_I64);
  kp_buf_append(b, "12345678", 8);
  put_tag(b, 10, PB_WT_I32);
  kp_buf_append(b, "1234", 4);
  put_len(b, 536870911, "unknown", 7); /* largest field number */
  put_tag(b, 12, 3);
  put_tag(b, 13, 3);
  put_tag(b, 1, PB_WT_VARINT);
  put_varint(b, 1);
  put_tag(b, 13, 4);
  put_len(b, 2, "xy", 2);
  put_tag(b, 12, 4);
}

static void unknown_fields_and_groups_are_skipped_anywhere(void **state) {
  static const urec u[] = {{"k0", NULL, "d0", 0}, {"k1", "42", "d1", 0}};
  kp_buf body = KP_BUF_INIT, rec = KP_BUF_INIT, b = KP_BUF_INIT;
  /* Tables after records, unknowns between everything, tags with unknowns. */
  put_unknowns(&body);
  for (size_t i = 0; i < 2; i++) {
    kp_buf_reset(&rec);
    put_unknowns(&rec);
    put_len(&rec, 3, u[i].data, 2);
    kp_buf tag = KP_BUF_INIT;
    put_unknowns(&tag);
    put_len(&tag, 1, "key", 3);
    put_len(&rec, 4, tag.data, tag.len);
    kp_buf_free(&tag);
    put_tag(&rec, 1, PB_WT_VARINT);
    put_varint(&rec, 5); /* overridden below: last value wins, like protobuf */
    put_tag(&rec, 1, PB_WT_VARINT);
    put_varint(&rec, i);
    if (u[i].ehk) {
      put_tag(&rec, 2, PB_WT_VARINT);
      put_varint(&rec, 0);
    }
    put_unknowns(&rec);
    put_len(&body, 3, rec.data, rec.len);
    put_unknowns(&body);
  }
  put_len(&body, 1, "k0", 2);
  put_len(&body, 2, "42", 2);
  put_unknowns(&body);
  put_len(&body, 1, "k1", 2);
  wrap(&b, body.data, body.len);
  kp_deagg *d = kp_deagg_new();
  kp_deagg_set_strict(d, true);
  expect_records(d, &b, u, 2, NULL);
  kp_buf_free(&body);
  kp_buf_free(&rec);
  kp_buf_free(&b);
  kp_deagg_destroy(d);
}

static void expect_pass_through(kp_deagg *d, const kp_buf *b, const char *pk, const char *ehk) {
  kp_deagg_input in = input(b, pk, ehk);
  assert_int_equal(kp_deagg_begin(d, &in), KP_DEAGG_OK);
  assert_int_equal(kp_deagg_count(d), 1);
  kp_deagg_record r;
  assert_int_equal(kp_deagg_next(d, &r), KP_DEAGG_OK);
  assert_false(r.aggregated);
  assert_int_equal(r.sub_sequence_number, 0);
  assert_ptr_equal(r.data, b->data);
  assert_int_equal(r.data_len, b->len);
  assert_ptr_equal(r.partition_key, pk);
  urec u = {pk, ehk, "", 0};
  uint8_t hk[16];
  expected_hash_key(&u, hk);
  assert_memory_equal(r.hash_key, hk, 16);
  if (ehk)
    assert_ptr_equal(r.explicit_hash_key, ehk);
  else
    assert_null(r.explicit_hash_key);
  assert_int_equal(kp_deagg_next(d, &r), KP_DEAGG_END);
}

static void non_aggregated_records_pass_through(void **state) {
  kp_deagg *d = kp_deagg_new();
  kp_buf b = KP_BUF_INIT;
  for (int strict = 0; strict < 2; strict++) {
    kp_deagg_set_strict(d, strict);
    kp_buf_reset(&b);
    kp_buf_append_str(&b, "plain user data, no magic, long enough to look like one");
    expect_pass_through(d, &b, "pk", NULL);
    expect_pass_through(d, &b, "pk", "12345");
    kp_buf_reset(&b); /* empty record */
    kp_deagg_input in = input(&b, "pk", NULL);
    assert_int_equal(kp_deagg_begin(d, &in), KP_DEAGG_OK);
    assert_int_equal(kp_deagg_count(d), 1);
    /* Magic and exactly 4+16 bytes: too short to be an aggregate, even in strict. */
    kp_buf_reset(&b);
    kp_buf_append(&b, MAGIC, 4);
    kp_buf_append(&b, "0123456789abcdef", 16);
    expect_pass_through(d, &b, "x", NULL);
    assert_int_equal(kp_deagg_corruption(d), KP_DEAGG_OK);
    /* Magic with 0 bytes of protobuf but a correct MD5: still 20 bytes. */
    wrap(&b, (const uint8_t *)"", 0);
    assert_int_equal(b.len, 20);
    expect_pass_through(d, &b, "x", NULL);
  }
  kp_buf_free(&b);
  kp_deagg_destroy(d);
}

static void aggregate_of_only_unknown_fields_has_no_records(void **state) {
  kp_buf body = KP_BUF_INIT, b = KP_BUF_INIT;
  put_tag(&body, 7, PB_WT_VARINT);
  put_varint(&body, 1);
  wrap(&b, body.data, body.len);
  kp_deagg *d = kp_deagg_new();
  kp_deagg_set_strict(d, true);
  kp_deagg_input in = input(&b, "p", NULL);
  assert_int_equal(kp_deagg_begin(d, &in), KP_DEAGG_OK);
  assert_int_equal(kp_deagg_count(d), 0);
  kp_deagg_record r;
  assert_int_equal(kp_deagg_next(d, &r), KP_DEAGG_END);
  kp_buf_free(&body);
  kp_buf_free(&b);
  kp_deagg_destroy(d);
}

/* Strict: the code (and message fragment); lenient: the input as one record. */
static void expect_corrupt(const kp_buf *b, kp_deagg_err code, const char *msg) {
  kp_deagg *d = kp_deagg_new();
  kp_deagg_set_strict(d, true);
  kp_deagg_input in = input(b, "outer-pk", NULL);
  kp_deagg_err rc = kp_deagg_begin(d, &in);
  if (rc != code)
    fail_msg("expected %s, got %s: %s", kp_deagg_err2str(code), kp_deagg_err2str(rc),
             kp_deagg_errstr(d));
  assert_true(kp_deagg_err_is_corrupt(rc));
  if (msg && !strstr(kp_deagg_errstr(d), msg))
    fail_msg("message \"%s\" lacks \"%s\"", kp_deagg_errstr(d), msg);
  kp_deagg_record r;
  assert_int_equal(kp_deagg_next(d, &r), KP_DEAGG_END);
  assert_int_equal(kp_deagg_count(d), 0);

  kp_deagg_set_strict(d, false);
  expect_pass_through(d, b, "outer-pk", NULL);
  assert_int_equal(kp_deagg_corruption(d), code);
  kp_deagg_destroy(d);
}

static void corrupt_body(const kp_buf *body, kp_deagg_err code, const char *msg, bool oracle) {
  kp_buf b = KP_BUF_INIT;
  wrap(&b, body->data, body->len);
  expect_corrupt(&b, code, msg);
  if (oracle) /* protobuf-c must agree that it does not parse */
    assert_false(oracle_parses(body->data, body->len));
  kp_buf_free(&b);
}

static const urec three[] = {{"a", NULL, "one", 0}, {"b", "7", "two", 0}, {"a", NULL, "3", 0}};

static void md5_mismatch_is_corrupt(void **state) {
  kp_buf b = KP_BUF_INIT;
  build_agg(&b, three, 3, true);
  for (size_t i = 4; i < b.len; i++) { /* any flipped byte after the magic */
    b.data[i] ^= 0x40;
    expect_corrupt(&b, KP_DEAGG_ERR_BAD_MD5, "MD5");
    b.data[i] ^= 0x40;
  }
  kp_buf_free(&b);
}

/* Many records checked at once: 70 (more than one chunk of lanes), aggregates of
 * different sizes, raw records, and corrupt aggregates among them. Only the good
 * aggregates come out checked; begin_checked then skips their MD5 (a trailer flipped
 * afterwards goes unnoticed there, not in kp_deagg_begin). */
static void md5s_checked_many_at_once(void **state) {
  (void)state;
  enum { N = 70 };
  kp_buf b[N];
  kp_deagg_input in[N];
  bool ok[N];
  urec big[40];
  char data[40][64];
  for (int i = 0; i < 40; i++) {
    snprintf(data[i], sizeof data[i], "record %d of a larger aggregate", i);
    big[i] = (urec){i % 2 ? "odd" : "even", NULL, data[i], 0};
  }
  for (int i = 0; i < N; i++) {
    b[i] = (kp_buf)KP_BUF_INIT;
    if (i % 7 == 3) {
      assert_int_equal(kp_buf_append(&b[i], "not an aggregate", 16), 0);
    } else {
      build_agg(&b[i], i % 3 ? three : big, i % 3 ? 3 : (size_t)(1 + i % 40), true);
      if (i % 5 == 1)
        b[i].data[b[i].len - 20] ^= 1; /* the last protobuf byte: MD5 mismatch */
    }
    in[i] = input(&b[i], "outer", NULL);
    ok[i] = i % 2; /* stale values are overwritten */
  }
  kp_deagg_check_md5_many(in, N, ok);
  kp_deagg *d = kp_deagg_new();
  kp_deagg_set_strict(d, true);
  for (int i = 0; i < N; i++) {
    bool good = i % 7 != 3 && i % 5 != 1;
    assert_int_equal(ok[i], good);
    kp_deagg_err rc = kp_deagg_begin(d, &in[i]);
    assert_int_equal(rc, i % 7 == 3 || good ? KP_DEAGG_OK : KP_DEAGG_ERR_BAD_MD5);
    if (good) {
      size_t want = i % 3 ? 3 : (size_t)(1 + i % 40);
      assert_int_equal(kp_deagg_count(d), want);
      b[i].data[b[i].len - 1] ^= 1; /* trusted: the trailer is not read again */
      assert_int_equal(kp_deagg_begin_checked(d, &in[i]), KP_DEAGG_OK);
      assert_int_equal(kp_deagg_count(d), want);
      assert_int_equal(kp_deagg_begin(d, &in[i]), KP_DEAGG_ERR_BAD_MD5);
    }
    kp_buf_free(&b[i]);
  }
  kp_deagg_check_md5_many(in, 0, ok); /* nothing: nothing read or written */
  kp_deagg_destroy(d);
}

static void truncation_at_every_point_is_corrupt_or_a_valid_prefix(void **state) {
  kp_buf body = KP_BUF_INIT, cut = KP_BUF_INIT, b = KP_BUF_INIT;
  build_body(&body, three, 3, true);
  kp_deagg *d = kp_deagg_new();
  kp_deagg_set_strict(d, true);
  int truncated = 0;
  for (size_t k = 1; k < body.len; k++) {
    /* A cut recomputing the MD5 reaches the protobuf checks... */
    wrap(&b, body.data, k);
    kp_deagg_input in = input(&b, "p", NULL);
    kp_deagg_err rc = kp_deagg_begin(d, &in);
    bool ok = oracle_parses(body.data, k);
    if (ok) { /* cut at a field boundary: a valid, shorter aggregate */
      assert_int_equal(rc, KP_DEAGG_OK);
    } else {
      assert_int_equal(rc, KP_DEAGG_ERR_TRUNCATED);
      truncated++;
    }
    /* ...a plain cut of the Kinesis record fails the MD5. */
    kp_buf_reset(&cut);
    build_agg(&cut, three, 3, true);
    cut.len = 4 + k + 16;
    if (cut.len < 4 + body.len + 16 && cut.len > 20)
      expect_corrupt(&cut, KP_DEAGG_ERR_BAD_MD5, NULL);
  }
  assert_true(truncated > 10);
  kp_deagg_destroy(d);
  kp_buf_free(&body);
  kp_buf_free(&cut);
  kp_buf_free(&b);
}

static void malformed_protobuf_is_corrupt(void **state) {
  kp_buf body = KP_BUF_INIT, rec = KP_BUF_INIT;
  /* Varint over 10 bytes. */
  for (int i = 0; i < 11; i++)
    kp_buf_append(&body, "\xff", 1);
  put_varint(&body, 1);
  corrupt_body(&body, KP_DEAGG_ERR_BAD_VARINT, "longer than 64 bits", true);
  /* Truncated varint. */
  kp_buf_reset(&body);
  put_len(&body, 1, "a", 1);
  kp_buf_append(&body, "\x80\x80", 2);
  corrupt_body(&body, KP_DEAGG_ERR_TRUNCATED, "runs past the end", true);
  /* Wire types 6 and 7 do not exist. */
  kp_buf_reset(&body);
  put_tag(&body, 5, 7);
  corrupt_body(&body, KP_DEAGG_ERR_BAD_WIRE_TYPE, "invalid wire type 7", true);
  /* A known field with the wrong wire type. */
  kp_buf_reset(&body);
  put_tag(&body, 1, PB_WT_VARINT);
  put_varint(&body, 3);
  corrupt_body(&body, KP_DEAGG_ERR_BAD_WIRE_TYPE, "partition_key_table", false);
  /* End-group with no group open, and a group never closed. */
  kp_buf_reset(&body);
  put_tag(&body, 9, 4);
  corrupt_body(&body, KP_DEAGG_ERR_BAD_WIRE_TYPE, "unmatched end-group", true);
  kp_buf_reset(&body);
  put_tag(&body, 9, 3);
  put_tag(&body, 10, PB_WT_VARINT);
  put_varint(&body, 1);
  corrupt_body(&body, KP_DEAGG_ERR_TRUNCATED, "group 9", true);
  /* Field number 0. */
  kp_buf_reset(&body);
  put_tag(&body, 0, PB_WT_VARINT);
  put_varint(&body, 1);
  corrupt_body(&body, KP_DEAGG_ERR_BAD_TAG, "field number 0", true);
  /* Length past the end (MD5 recomputed so the parser sees it). */
  kp_buf_reset(&body);
  put_tag(&body, 3, PB_WT_LEN);
  put_varint(&body, 100);
  kp_buf_append(&body, "short", 5);
  corrupt_body(&body, KP_DEAGG_ERR_TRUNCATED, "length 100 runs past the end", true);
  /* Record without data, record without partition_key_index, tag without key. */
  kp_buf_reset(&body);
  put_len(&body, 1, "a", 1);
  put_tag(&rec, 1, PB_WT_VARINT);
  put_varint(&rec, 0);
  put_len(&body, 3, rec.data, rec.len);
  corrupt_body(&body, KP_DEAGG_ERR_MISSING_FIELD, "record 0: missing required field data", true);
  kp_buf_reset(&body);
  put_len(&body, 1, "a", 1);
  kp_buf_reset(&rec);
  put_len(&rec, 3, "d", 1);
  put_len(&body, 3, rec.data, rec.len);
  put_len(&body, 3, rec.data, rec.len);
  corrupt_body(&body, KP_DEAGG_ERR_MISSING_FIELD,
               "record 0: missing required field partition_key_index", true);
  kp_buf_reset(&rec);
  put_tag(&rec, 1, PB_WT_VARINT);
  put_varint(&rec, 0);
  put_len(&rec, 3, "d", 1);
  put_len(&rec, 4, "\x12\x01v", 3); /* Tag{value:"v"} */
  kp_buf_reset(&body);
  put_len(&body, 1, "a", 1);
  put_len(&body, 3, rec.data, rec.len);
  corrupt_body(&body, KP_DEAGG_ERR_MISSING_FIELD, "record 0: tag without required field key", true);
  kp_buf_free(&body);
  kp_buf_free(&rec);
}

static void index_out_of_range_is_corrupt(void **state) {
  urec u[4] = {{"a", NULL, "0", 0}, {"b", NULL, "1", 0}, {"a", NULL, "2", 0}, {"b", "5", "3", 0}};
  Kpl__Agg__AggregatedRecord *ar;
  kp_buf body = KP_BUF_INIT;
  build_body(&body, u, 4, false);
  /* Damage the decoded oracle message and re-pack it. */
  for (int which = 0; which < 2; which++) {
    ar = kpl__agg__aggregated_record__unpack(NULL, body.len, body.data);
    assert_non_null(ar);
    if (which == 0)
      ar->records[3]->partition_key_index = 7;
    else
      ar->records[3]->explicit_hash_key_index = 1;
    kp_buf p = KP_BUF_INIT;
    kp_buf_reserve(&p, kpl__agg__aggregated_record__get_packed_size(ar));
    p.len = kpl__agg__aggregated_record__pack(ar, p.data);
    corrupt_body(&p, KP_DEAGG_ERR_INDEX_RANGE,
                 which == 0 ? "record 3: partition_key_index 7 out of range (table has 2)"
                            : "record 3: explicit_hash_key_index 1 out of range (table has 1)",
                 false);
    kp_buf_free(&p);
    kpl__agg__aggregated_record__free_unpacked(ar, NULL);
  }
  kp_buf_free(&body);
}

static void invalid_explicit_hash_key_text_is_corrupt(void **state) {
  static const char *bad[] = {"abc", "-1", "", " 1", "340282366920938463463374607431768211456",
                              "1.5"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    urec u[2] = {{"a", "1", "x", 0}, {"b", bad[i], "y", 0}};
    kp_buf b = KP_BUF_INIT;
    build_agg(&b, u, 2, false);
    expect_corrupt(&b, KP_DEAGG_ERR_BAD_EHK, "explicit_hash_key_table[1]");
    kp_buf_free(&b);
  }
}

static void hash_range_drops_only_records_outside_inclusive(void **state) {
  static const urec u[] = {
      {"a", "0", "0", 0},
      {"b", "99", "1", 0},
      {"c", "100", "2", 0},
      {"d", "150", "3", 0},
      {"e", "200", "4", 0},
      {"f", "201", "5", 0},
      {"g", "340282366920938463463374607431768211455", "6", 0},
  };
  kp_buf b = KP_BUF_INIT;
  build_agg(&b, u, 7, false);
  kp_deagg *d = kp_deagg_new();
  kp_hash_key lo, hi;
  kp_hash_key_parse("100", 3, &lo);
  kp_hash_key_parse("200", 3, &hi);
  assert_int_equal(kp_deagg_set_hash_range(d, lo.be, hi.be), KP_DEAGG_OK);
  bool keep[7] = {false, false, true, true, true, false, false};
  expect_records(d, &b, u, 7, keep);
  /* Partition-key hash keys: a range of exactly one record's MD5. */
  static const urec v[] = {{"x", NULL, "0", 0}, {"y", NULL, "1", 0}, {"z", NULL, "2", 0}};
  build_agg(&b, v, 3, false);
  kp_hash_key k;
  kp_hash_key_of_partition_key("y", 1, &k);
  assert_int_equal(kp_deagg_set_hash_range(d, k.be, k.be), KP_DEAGG_OK);
  bool keep_y[3] = {false, true, false};
  expect_records(d, &b, v, 3, keep_y);
  /* A pass-through record is filtered by its own hash key. */
  kp_buf_reset(&b);
  kp_buf_append_str(&b, "raw");
  kp_deagg_input in = input(&b, "x", NULL);
  assert_int_equal(kp_deagg_begin(d, &in), KP_DEAGG_OK);
  kp_deagg_record r;
  assert_int_equal(kp_deagg_next(d, &r), KP_DEAGG_END);
  in = input(&b, "y", NULL);
  assert_int_equal(kp_deagg_begin(d, &in), KP_DEAGG_OK);
  assert_int_equal(kp_deagg_next(d, &r), KP_DEAGG_OK);
  /* Invalid ranges are refused; clearing the range keeps everything. */
  assert_int_equal(kp_deagg_set_hash_range(d, hi.be, lo.be), KP_DEAGG_ERR_INVALID_ARG);
  assert_int_equal(kp_deagg_set_hash_range(d, lo.be, NULL), KP_DEAGG_ERR_INVALID_ARG);
  assert_int_equal(kp_deagg_set_hash_range(d, NULL, NULL), KP_DEAGG_OK);
  build_agg(&b, v, 3, false);
  expect_records(d, &b, v, 3, NULL);
  kp_buf_free(&b);
  kp_deagg_destroy(d);
}

static void hash_keys_can_be_turned_off(void **state) {
  kp_buf b = KP_BUF_INIT;
  build_agg(&b, three, 3, false);
  kp_deagg *d = kp_deagg_new();
  kp_deagg_set_hash_keys(d, false);
  kp_deagg_input in = input(&b, "p", NULL);
  assert_int_equal(kp_deagg_begin(d, &in), KP_DEAGG_OK);
  kp_deagg_record r;
  int n = 0;
  while (kp_deagg_next(d, &r) == KP_DEAGG_OK) {
    assert_null(r.hash_key);
    n++;
  }
  assert_int_equal(n, 3);
  /* A range needs the keys, so they come back. */
  uint8_t lo[16] = {0}, hi[16];
  memset(hi, 0xff, 16);
  kp_deagg_set_hash_range(d, lo, hi);
  assert_int_equal(kp_deagg_begin(d, &in), KP_DEAGG_OK);
  assert_int_equal(kp_deagg_next(d, &r), KP_DEAGG_OK);
  assert_non_null(r.hash_key);
  kp_buf_free(&b);
  kp_deagg_destroy(d);
}

static void bad_arguments_are_refused(void **state) {
  kp_deagg *d = kp_deagg_new();
  kp_buf b = KP_BUF_INIT;
  kp_buf_append_str(&b, "data");
  kp_deagg_input in = input(&b, "p", "12x");
  assert_int_equal(kp_deagg_begin(d, &in), KP_DEAGG_ERR_INVALID_ARG);
  assert_non_null(strstr(kp_deagg_errstr(d), "explicit hash key"));
  kp_deagg_record r;
  assert_int_equal(kp_deagg_next(d, &r), KP_DEAGG_END);
  in = (kp_deagg_input){NULL, 5, NULL, 0, NULL, 0, NULL, 0};
  assert_int_equal(kp_deagg_begin(d, &in), KP_DEAGG_ERR_INVALID_ARG);
  assert_int_equal(kp_deagg_begin(d, NULL), KP_DEAGG_ERR_INVALID_ARG);
  /* NULL key and sequence number mean "". */
  in = (kp_deagg_input){b.data, b.len, NULL, 0, NULL, 0, NULL, 0};
  assert_int_equal(kp_deagg_begin(d, &in), KP_DEAGG_OK);
  assert_int_equal(kp_deagg_next(d, &r), KP_DEAGG_OK);
  assert_int_equal(r.partition_key_len, 0);
  assert_non_null(r.partition_key);
  assert_string_equal(kp_deagg_err2str(KP_DEAGG_ERR_BAD_MD5), "MD5 mismatch");
  assert_false(kp_deagg_err_is_corrupt(KP_DEAGG_ERR_NOMEM));
  assert_true(kp_deagg_err_is_corrupt(KP_DEAGG_ERR_BAD_EHK));
  kp_deagg_destroy(NULL);
  kp_buf_free(&b);
  kp_deagg_destroy(d);
}

static void begin_restarts_mid_iteration(void **state) {
  kp_buf b1 = KP_BUF_INIT, b2 = KP_BUF_INIT;
  build_agg(&b1, three, 3, false);
  static const urec two[] = {{"q", NULL, "qq", 0}, {"r", NULL, "rr", 0}};
  build_agg(&b2, two, 2, false);
  kp_deagg *d = kp_deagg_new();
  kp_deagg_input in = input(&b1, "p", NULL);
  assert_int_equal(kp_deagg_begin(d, &in), KP_DEAGG_OK);
  kp_deagg_record r;
  assert_int_equal(kp_deagg_next(d, &r), KP_DEAGG_OK);
  expect_records(d, &b2, two, 2, NULL);
  expect_records(d, &b1, three, 3, NULL);
  kp_buf_free(&b1);
  kp_buf_free(&b2);
  kp_deagg_destroy(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(valid_aggregates_yield_every_user_record_in_order),
      cmocka_unit_test(many_records_with_few_keys_share_cached_hash_keys),
      cmocka_unit_test(unknown_fields_and_groups_are_skipped_anywhere),
      cmocka_unit_test(non_aggregated_records_pass_through),
      cmocka_unit_test(aggregate_of_only_unknown_fields_has_no_records),
      cmocka_unit_test(md5_mismatch_is_corrupt),
      cmocka_unit_test(md5s_checked_many_at_once),
      cmocka_unit_test(truncation_at_every_point_is_corrupt_or_a_valid_prefix),
      cmocka_unit_test(malformed_protobuf_is_corrupt),
      cmocka_unit_test(index_out_of_range_is_corrupt),
      cmocka_unit_test(invalid_explicit_hash_key_text_is_corrupt),
      cmocka_unit_test(hash_range_drops_only_records_outside_inclusive),
      cmocka_unit_test(hash_keys_can_be_turned_off),
      cmocka_unit_test(bad_arguments_are_refused),
      cmocka_unit_test(begin_restarts_mid_iteration),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
