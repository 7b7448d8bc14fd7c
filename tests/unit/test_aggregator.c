// KP_TEST_LIBS: kp_producer_core kp_format kp_proto
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <math.h>

#include "format/agg_encoder.h"
#include "producer/aggregator.h"
#include "proto/aggregated_record.pb-c.h"

#define MiB (1024 * 1024)

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static uint64_t next_id;

/* A record with `data_len` bytes derived from its id, arriving at `now`. */
static kp_record *rec_at(const char *pk, const char *ehk, size_t data_len, double now) {
  uint8_t *data = malloc(data_len + 1);
  uint64_t id = next_id++;
  for (size_t i = 0; i < data_len; i++)
    data[i] = (uint8_t)(id * 31 + i);
  char err[128];
  kp_record *r = kp_record_new(id, 0, pk, strlen(pk), ehk, ehk ? strlen(ehk) : 0, data, data_len,
                               10 * MiB, now, 0.1, 30.0, err, sizeof err);
  free(data);
  assert_non_null(r);
  return r;
}

static kp_record *rec(const char *pk, const char *ehk, size_t data_len) {
  return rec_at(pk, ehk, data_len, 0.0);
}

/* The same with its data in `file` (standing for the shared data file) at *used. */
static uint8_t *g_file;
static size_t g_file_used, g_file_size;
static kp_record *rec_shared(const char *pk, const char *ehk, size_t data_len) {
  assert_true(g_file_used + data_len <= g_file_size);
  uint8_t *data = g_file + g_file_used;
  g_file_used += data_len;
  uint64_t id = next_id++;
  for (size_t i = 0; i < data_len; i++)
    data[i] = (uint8_t)(id * 31 + i);
  char err[128];
  kp_record *r = kp_record_new_shared(id, 0, pk, strlen(pk), ehk, ehk ? strlen(ehk) : 0, data,
                                      data_len, 10 * MiB, 0.0, 0.1, 30.0, err, sizeof err);
  assert_non_null(r);
  return r;
}

/* The cheapest record that could join r: same partition key, no explicit hash key, no
 * data. Takes no id, so the ids of the records under test stay consecutive. */
static kp_record *probe_of(const kp_record *r) {
  char err[128];
  kp_record *p = kp_record_new(UINT64_MAX, 0, kp_record_pk(r), r->pk_len, NULL, 0, NULL, 0,
                               10 * MiB, 0.0, 0.1, 30.0, err, sizeof err);
  assert_non_null(p);
  return p;
}

static size_t limit_of(const kp_aggregator_limits *lim) {
  return lim->max_size < lim->max_record_size ? lim->max_size : lim->max_record_size;
}

/* Decodes a Kinesis record independently (protobuf-c, kp_md5) and
 * checks it carries exactly its user records, in order, and its bookkeeping. An
 * aggregate's records come shed; they are restored from its data first, so what is
 * checked against the aggregate is what a retry would send again. */
static void check_kr(kp_kinesis_record *kr, const kp_aggregator_limits *lim, int shard) {
  assert_non_null(kr);
  assert_int_equal(kr->shard, shard);
  uint32_t n = 0;
  double dl = INFINITY, ex = INFINITY;
  const kp_record *last = NULL;
  for (const kp_record *r = kr->records; r; r = r->next) {
    n++;
    dl = r->deadline < dl ? r->deadline : dl;
    ex = r->expiry < ex ? r->expiry : ex;
    last = r;
  }
  assert_int_equal(n, kr->count);
  assert_ptr_equal(last, kr->records_tail);
  assert_true(kr->deadline == dl);
  assert_true(kr->expiry == ex);
  assert_true(n >= 1 && n <= lim->max_count);
  for (const kp_record *r = kr->records; r; r = r->next)
    assert_true(!r->shed || n > 1); /* raw records keep their data: the kinesis record's */
  if (kr->iov) {
    /* Gathered: some pieces are the shared data itself, not copies; made whole (sealed),
     * it must then pass every check below. */
    assert_true(lim->gather && n > 1 && kr->unsealed && !kr->data);
    size_t total = 0, in_file = 0;
    for (size_t i = 0; i < kr->n_iov; i++) {
      const uint8_t *b = kr->iov[i].iov_base;
      total += kr->iov[i].iov_len;
      in_file += b >= g_file && b < g_file + g_file_size;
    }
    assert_int_equal(total, kr->data_len);
    assert_true(in_file > 0);
    assert_int_equal(kp_kinesis_record_flatten(kr), 0);
    assert_true(!kr->iov && kr->data && !kr->unsealed);
  }
  if (n > 1) {
    assert_int_equal(kp_kinesis_record_restore(kr, kr->data, kr->data_len), 0);
    for (const kp_record *r = kr->records; r; r = r->next) {
      assert_false(r->shed);
      const uint8_t *d = kp_record_data(r); /* as rec_at made it, from the id */
      for (size_t i = 0; i < r->data_len; i++)
        assert_int_equal(d[i], (uint8_t)(r->source_id * 31 + i));
      last = r;
    }
    assert_ptr_equal(last, kr->records_tail);
  }
  assert_int_equal(kp_kinesis_record_size(kr), kr->data_len + kr->partition_key_len);
  assert_int_equal(strlen(kr->partition_key), kr->partition_key_len);
  char want_ehk[KP_HASH_KEY_DEC_MAX];
  kp_hash_key_format(kp_record_hash_key(kr->records), want_ehk);
  if (n == 1 && !kp_record_ehk(kr->records))
    /* Raw and without the user's key: none sent, Kinesis hashes the partition key. */
    assert_string_equal(kr->explicit_hash_key, "");
  else
    assert_string_equal(kr->explicit_hash_key, want_ehk);
  if (n == 1) {
    const kp_record *r = kr->records;
    assert_int_equal(kr->data_len, r->data_len);
    assert_ptr_equal(kr->data, kp_record_data(r)); /* the record's own bytes, not a copy */
    assert_int_equal(kr->partition_key_len, r->pk_len);
    assert_memory_equal(kr->partition_key, kp_record_pk(r), r->pk_len);
    return;
  }
  assert_true(kp_kinesis_record_size(kr) <= limit_of(lim));
  assert_string_equal(kr->partition_key, "a");
  assert_true(kr->data_len > 20);
  static const uint8_t magic[4] = {0xF3, 0x89, 0x9A, 0xC2};
  assert_memory_equal(kr->data, magic, 4);
  uint8_t md5[16];
  kp_md5(kr->data + 4, kr->data_len - 20, md5);
  assert_memory_equal(kr->data + kr->data_len - 16, md5, 16);
  Kpl__Agg__AggregatedRecord *ar =
      kpl__agg__aggregated_record__unpack(NULL, kr->data_len - 20, kr->data + 4);
  assert_non_null(ar);
  assert_int_equal(ar->n_records, n);
  size_t i = 0;
  for (const kp_record *r = kr->records; r; r = r->next, i++) {
    const Kpl__Agg__Record *s = ar->records[i];
    assert_int_equal(s->data.len, r->data_len);
    assert_memory_equal(s->data.data, kp_record_data(r), r->data_len);
    assert_true(s->partition_key_index < ar->n_partition_key_table);
    assert_string_equal(ar->partition_key_table[s->partition_key_index], kp_record_pk(r));
    if (kp_record_ehk(r)) {
      assert_true(s->has_explicit_hash_key_index);
      assert_true(s->explicit_hash_key_index < ar->n_explicit_hash_key_table);
      assert_string_equal(ar->explicit_hash_key_table[s->explicit_hash_key_index],
                          kp_record_ehk(r));
    } else {
      assert_false(s->has_explicit_hash_key_index);
    }
  }
  kpl__agg__aggregated_record__free_unpacked(ar, NULL);
}

/* Size (data + outer pk) of an aggregate of kr's records plus `extra`, by a fresh encoder. */
static size_t size_of_with(const kp_record *first, const kp_record *extra, size_t *count) {
  kp_agg_encoder *e = kp_agg_encoder_new();
  size_t n = 0;
  for (const kp_record *r = first; r; r = r->next, n++)
    assert_int_equal(kp_agg_encoder_add(e, kp_record_pk(r), r->pk_len, kp_record_ehk(r), r->ehk_len,
                                        kp_record_data(r), r->data_len,
                                        kp_record_hash_key((kp_record *)r)),
                     0);
  size_t sz = kp_agg_encoder_size_with(e, kp_record_pk(extra), extra->pk_len, kp_record_ehk(extra),
                                       extra->ehk_len, extra->data_len) +
              kp_agg_encoder_outer_pk_len_with(e, extra->pk_len);
  kp_agg_encoder_free(e);
  *count = n + 1;
  return sz;
}

/* Appends kr's user records' ids to seen[] and frees it. */
static void collect(kp_kinesis_record *kr, uint64_t *seen, size_t *n_seen) {
  for (kp_record *r = kr->records; r; r = r->next)
    seen[(*n_seen)++] = r->source_id;
  kp_kinesis_record_free(kr, true);
}

static void random_records_respect_limits_exactly_and_keep_order(void **state) {
  static const char *pks[] = {"a", "b", "user-1", "user-2", "\xC3\xA9t\xC3\xA9", "k"};
  static const char *ehks[] = {"0", "340282366920938463463374607431768211455", "12345"};
  for (int round = 0; round < 120; round++) {
    kp_aggregator_limits lim = {
        .enabled = true,
        .max_count = round % 4 == 0 ? 1 + rnd() % 8 : UINT32_MAX,
        .max_size = 64 + rnd() % (round % 2 ? 4000 : 60000),
        .max_record_size = round % 5 == 0 ? 200 + rnd() % 2000 : MiB,
        .gather = round % 3 != 0,
    };
    g_file_used = 0;
    int shard = (int)(rnd() % 10);
    kp_aggregator *a = kp_aggregator_new(&lim, shard);
    assert_non_null(a);
    size_t n = 200 + rnd() % 300, n_seen = 0;
    uint64_t first_id = next_id;
    uint64_t *seen = malloc(n * sizeof *seen);
    for (size_t i = 0; i < n; i++) {
      size_t len = rnd() % 10 == 0 ? rnd() % (2 * lim.max_size) : rnd() % 200;
      const char *pk = pks[rnd() % 6], *ehk = rnd() % 3 == 0 ? ehks[rnd() % 3] : NULL;
      /* Shared or not, records must come out the same: the file holds half of them. */
      kp_record *r = len <= 4000 && rnd() % 2 ? rec_shared(pk, ehk, len) : rec(pk, ehk, len);
      kp_kinesis_record *out = (kp_kinesis_record *)0x1;
      assert_int_equal(kp_aggregator_add(a, r, &out), 0);
      if (out) {
        assert_int_equal(out->records->shed, out->count > 1); /* aggregates come shed */
        check_kr(out, &lim, shard);
        size_t cnt, sz;
        if (out->records_tail == r) {
          /* Sent at once: nothing could join it. */
          assert_int_equal(out->count, 1);
          kp_record *probe = probe_of(r);
          r->next = NULL;
          sz = size_of_with(r, probe, &cnt);
          kp_record_free(probe);
          assert_true(sz > limit_of(&lim) || cnt > lim.max_count);
          assert_int_equal(kp_aggregator_count(a), 0);
        } else {
          /* Cut only because r did not fit. */
          sz = size_of_with(out->records, r, &cnt);
          assert_true(sz > limit_of(&lim) || cnt > lim.max_count);
        }
        collect(out, seen, &n_seen);
      }
      assert_true(kp_aggregator_count(a) <= lim.max_count);
      if (kp_aggregator_count(a) >= 2)
        assert_true(kp_aggregator_size(a) <= limit_of(&lim));
    }
    kp_kinesis_record *last = kp_aggregator_flush(a);
    if (last) {
      check_kr(last, &lim, shard);
      collect(last, seen, &n_seen);
    }
    assert_null(kp_aggregator_flush(a));
    assert_int_equal(n_seen, n);
    for (size_t i = 0; i < n; i++)
      assert_int_equal(seen[i], first_id + i);
    free(seen);
    kp_aggregator_free(a);
  }
}

static void max_count_cuts_exactly(void **state) {
  kp_aggregator_limits lim = {true, 5, 51200, MiB, false};
  kp_aggregator *a = kp_aggregator_new(&lim, 3);
  size_t counts[8], n = 0;
  for (int i = 0; i < 23; i++) {
    kp_kinesis_record *out;
    assert_int_equal(kp_aggregator_add(a, rec("pk", NULL, 10), &out), 0);
    if (out) {
      check_kr(out, &lim, 3);
      counts[n++] = out->count;
      kp_kinesis_record_free(out, true);
    }
  }
  assert_int_equal(n, 4);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(counts[i], 5);
  assert_int_equal(kp_aggregator_count(a), 3);
  kp_kinesis_record *last = kp_aggregator_flush(a);
  check_kr(last, &lim, 3);
  assert_int_equal(last->count, 3);
  kp_kinesis_record_free(last, true);
  assert_int_equal(kp_aggregator_count(a), 0);
  kp_aggregator_free(a);
}

/* Once a request body holds its bytes, an aggregate gives its data back and keeps what
 * the request's answer needs; a raw record's data is its user record's and stays. */
static void dropping_data_keeps_size_and_records(void **state) {
  kp_aggregator_limits lim = {true, 3, 51200, MiB, false};
  kp_aggregator *a = kp_aggregator_new(&lim, 0);
  kp_kinesis_record *out = NULL;
  for (int i = 0; i < 3; i++)
    assert_int_equal(kp_aggregator_add(a, rec("pk", NULL, 50), &out), 0);
  kp_kinesis_record *agg = kp_aggregator_flush(a);
  assert_non_null(agg);
  assert_int_equal(agg->count, 3);
  assert_true(agg->owns_data);
  size_t size = kp_kinesis_record_size(agg);
  kp_kinesis_record_drop_data(agg);
  assert_null(agg->data);
  assert_false(agg->owns_data);
  assert_int_equal(kp_kinesis_record_size(agg), size);
  assert_int_equal(agg->count, 3);
  assert_int_equal(agg->records->data_len, 50);
  kp_kinesis_record_free(agg, true);

  kp_record *r = rec("pk", NULL, 70);
  kp_kinesis_record *raw = kp_kinesis_record_single(r, 0);
  assert_false(raw->owns_data);
  assert_ptr_equal(raw->data, kp_record_data(r));
  kp_kinesis_record_drop_data(raw);
  assert_null(raw->data);
  assert_int_equal(kp_kinesis_record_size(raw), 70 + 2);
  assert_ptr_equal(raw->records, r);
  kp_kinesis_record_free(raw, true);
  kp_aggregator_free(a);
}

static void max_size_is_reached_but_never_exceeded(void **state) {
  /* Same pk and 100-byte data: each record after the first adds a fixed number of bytes,
   * so the exact cut can be computed from two measurements. */
  kp_aggregator_limits lim = {true, UINT32_MAX, 0, MiB, false};
  kp_record *r1 = rec("pk", NULL, 100), *r2 = rec("pk", NULL, 100), *r3 = rec("pk", NULL, 100);
  r1->next = NULL;
  size_t cnt;
  size_t s2 = size_of_with(r1, r2, &cnt); /* 2 records */
  r1->next = r2;
  r2->next = NULL;
  size_t s3 = size_of_with(r1, r3, &cnt); /* 3 records */
  size_t step = s3 - s2;
  kp_record_free(r1);
  kp_record_free(r2);
  kp_record_free(r3);
  for (size_t k = 2; k < 30; k++) {
    lim.max_size = s2 + (k - 2) * step; /* exactly k records fit */
    kp_aggregator *a = kp_aggregator_new(&lim, 0);
    kp_kinesis_record *out = NULL;
    size_t added = 0;
    while (!out) {
      assert_int_equal(kp_aggregator_add(a, rec("pk", NULL, 100), &out), 0);
      added++;
    }
    assert_int_equal(out->count, k);
    assert_int_equal(added, k + 1);
    assert_int_equal(kp_kinesis_record_size(out), lim.max_size);
    check_kr(out, &lim, 0);
    kp_kinesis_record_free(out, true);
    kp_aggregator_free(a);
  }
}

static void disabled_aggregation_returns_every_record_raw(void **state) {
  kp_aggregator_limits lim = {false, UINT32_MAX, 51200, MiB, false};
  kp_aggregator *a = kp_aggregator_new(&lim, 7);
  for (int i = 0; i < 10; i++) {
    kp_kinesis_record *out = NULL;
    kp_record *r = rec(i % 2 ? "x" : "yy", i % 3 ? NULL : "99", (size_t)i * 10);
    assert_int_equal(kp_aggregator_add(a, r, &out), 0);
    assert_non_null(out);
    assert_int_equal(out->count, 1);
    assert_ptr_equal(out->records, r);
    check_kr(out, &lim, 7);
    if (i % 3 == 0)
      assert_string_equal(out->explicit_hash_key, "99");
    kp_kinesis_record_free(out, true);
    assert_int_equal(kp_aggregator_count(a), 0);
    assert_true(isinf(kp_aggregator_deadline(a)));
  }
  assert_null(kp_aggregator_flush(a));
  kp_aggregator_free(a);
}

/* An aggregate's records keep only their headers; restoring them from anything but
 * that aggregate's data changes nothing. */
/* Aggregates come without their MD5; a list of them (more than one seal chunk, sizes
 * apart, raw records between) gets every MD5 right at once, and only once. */
static void aggregates_are_sealed_together(void **state) {
  (void)state;
  kp_aggregator_limits lim = {true, 2, 100000, MiB, false};
  kp_aggregator *a = kp_aggregator_new(&lim, 0);
  kp_kinesis_record *head = NULL, **tail = &head;
  size_t n_agg = 0;
  for (int i = 0; i < 300; i++) {
    kp_kinesis_record *out = NULL;
    size_t len = (size_t)(rnd() % (i % 5 == 0 ? 5000 : 300));
    assert_int_equal(kp_aggregator_add(a, rec(i % 2 ? "odd" : "even", NULL, len), &out), 0);
    if (i % 31 == 0) { /* a raw record among them */
      kp_kinesis_record *raw = kp_kinesis_record_single(rec("raw", NULL, 100), 0);
      assert_non_null(raw);
      *tail = raw;
      tail = &raw->next;
    }
    if (out) {
      assert_true(out->unsealed);
      n_agg++;
      *tail = out;
      tail = &out->next;
    }
  }
  assert_true(n_agg > 64);
  kp_kinesis_records_seal(head);
  for (kp_kinesis_record *kr = head; kr; kr = kr->next) {
    assert_false(kr->unsealed);
    if (kr->count < 2)
      continue;
    uint8_t md5[16];
    kp_md5(kr->data + 4, kr->data_len - 20, md5);
    assert_memory_equal(kr->data + kr->data_len - 16, md5, 16);
  }
  /* Sealed already: a second pass writes nothing (a flipped digest stays flipped). */
  kp_kinesis_record *agg = head;
  while (agg->count < 2)
    agg = agg->next;
  agg->data[agg->data_len - 1] ^= 1;
  kp_kinesis_records_seal(head);
  uint8_t md5[16];
  kp_md5(agg->data + 4, agg->data_len - 20, md5);
  assert_int_equal(agg->data[agg->data_len - 1], md5[15] ^ 1);
  while (head) {
    kp_kinesis_record *next = head->next;
    kp_kinesis_record_free(head, true);
    head = next;
  }
  kp_aggregator_free(a);
}

static void shed_records_restore_only_from_their_aggregate(void **state) {
  (void)state;
  kp_aggregator_limits lim = {true, 3, 100000, MiB, false};
  kp_aggregator *a = kp_aggregator_new(&lim, 0);
  kp_kinesis_record *out = NULL, *two = NULL;
  const char *ehk = "340282366920938463463374607431768211455";
  assert_int_equal(kp_aggregator_add(a, rec("k1", NULL, 10), &out), 0);
  assert_int_equal(kp_aggregator_add(a, rec("k2", ehk, 0), &out), 0);
  assert_int_equal(kp_aggregator_add(a, rec("k1", NULL, 300), &out), 0);
  assert_null(out);
  assert_int_equal(kp_aggregator_add(a, rec("k3", NULL, 5), &out), 0);
  assert_non_null(out); /* max_count 3 cut it */
  assert_int_equal(kp_aggregator_add(a, rec("k4", NULL, 5), &two), 0);
  assert_null(two);
  two = kp_aggregator_flush(a);
  assert_non_null(two);
  assert_int_equal(two->count, 2);
  assert_true(out->records->shed && two->records->shed);
  kp_kinesis_records_seal(out);
  kp_kinesis_records_seal(two);
  /* Another aggregate's data: another count. */
  assert_int_equal(kp_kinesis_record_restore(out, two->data, two->data_len), -EILSEQ);
  /* Corrupt: the MD5 no longer matches. */
  uint8_t *bad = malloc(out->data_len);
  memcpy(bad, out->data, out->data_len);
  bad[10] ^= 1;
  assert_int_equal(kp_kinesis_record_restore(out, bad, out->data_len), -EILSEQ);
  free(bad);
  for (kp_record *r = out->records; r; r = r->next)
    assert_true(r->shed);
  assert_int_equal(kp_kinesis_record_restore(out, out->data, out->data_len), 0);
  const kp_record *r = out->records;
  assert_string_equal(kp_record_pk(r), "k1");
  assert_null(kp_record_ehk(r));
  assert_int_equal(r->data_len, 10);
  r = r->next;
  assert_string_equal(kp_record_pk(r), "k2");
  assert_string_equal(kp_record_ehk(r), ehk);
  assert_true(r->hash_known); /* parsed again from the EHK */
  assert_int_equal(r->data_len, 0);
  r = r->next;
  assert_string_equal(kp_record_pk(r), "k1");
  assert_int_equal(r->data_len, 300);
  assert_ptr_equal(r, out->records_tail);
  assert_null(r->next);
  /* Whole records: a second restore is a no-op, whatever the blob. */
  assert_int_equal(kp_kinesis_record_restore(out, two->data, two->data_len), 0);
  check_kr(out, &lim, 0);
  /* Freed while shed: the arena goes with its last record (ASan checks). */
  kp_kinesis_record_free(two, true);
  kp_kinesis_record_free(out, true);
  kp_aggregator_free(a);
}

static void oversized_record_travels_alone_and_raw(void **state) {
  kp_aggregator_limits lim = {true, UINT32_MAX, 1000, MiB, false};
  kp_aggregator *a = kp_aggregator_new(&lim, 0);
  kp_kinesis_record *out;
  /* Empty aggregator: sent at once. */
  kp_record *big = rec("pk", NULL, 5000);
  assert_int_equal(kp_aggregator_add(a, big, &out), 0);
  assert_non_null(out);
  assert_ptr_equal(out->records, big);
  check_kr(out, &lim, 0);
  kp_kinesis_record_free(out, true);
  /* Fits raw (990 + 2 <= 1000) but no second record could join it: sent at once. */
  kp_record *almost = rec("pk", NULL, 990);
  assert_int_equal(kp_aggregator_add(a, almost, &out), 0);
  assert_non_null(out);
  assert_ptr_equal(out->records, almost);
  kp_kinesis_record_free(out, true);
  /* Non-empty aggregator: the aggregate goes first, the big one waits for the next add. */
  assert_int_equal(kp_aggregator_add(a, rec("pk", NULL, 10), &out), 0);
  assert_null(out);
  assert_int_equal(kp_aggregator_add(a, rec("pk", NULL, 10), &out), 0);
  assert_null(out);
  big = rec("pk", NULL, 5000);
  assert_int_equal(kp_aggregator_add(a, big, &out), 0);
  assert_non_null(out);
  assert_int_equal(out->count, 2);
  check_kr(out, &lim, 0);
  kp_kinesis_record_free(out, true);
  assert_int_equal(kp_aggregator_count(a), 1);
  kp_record *small = rec("pk", NULL, 10);
  assert_int_equal(kp_aggregator_add(a, small, &out), 0);
  assert_non_null(out);
  assert_ptr_equal(out->records, big);
  assert_int_equal(out->count, 1);
  check_kr(out, &lim, 0);
  kp_kinesis_record_free(out, true);
  assert_int_equal(kp_aggregator_count(a), 1);
  kp_aggregator_free(a); /* frees `small`, still buffered */
}

static void record_is_held_exactly_while_a_second_could_still_join(void **state) {
  /* S = size of r plus the cheapest possible companion (same pk, no ehk, no data). */
  kp_record *r = rec("pk", "7", 300);
  kp_record *probe = probe_of(r);
  size_t cnt, s = size_of_with(r, probe, &cnt);
  kp_record_free(probe);
  kp_record_free(r);
  for (size_t max = s - 1; max <= s; max++) {
    kp_aggregator_limits lim = {true, UINT32_MAX, max, MiB, false};
    kp_aggregator *a = kp_aggregator_new(&lim, 0);
    kp_kinesis_record *out;
    assert_int_equal(kp_aggregator_add(a, rec("pk", "7", 300), &out), 0);
    if (max < s) {
      assert_non_null(out); /* nothing can join: no point waiting */
      kp_kinesis_record_free(out, true);
    } else {
      assert_null(out);
      assert_int_equal(kp_aggregator_add(a, rec("pk", NULL, 0), &out), 0);
      assert_null(out);
      out = kp_aggregator_flush(a);
      assert_int_equal(out->count, 2);
      assert_int_equal(kp_kinesis_record_size(out), max);
      check_kr(out, &lim, 0);
      kp_kinesis_record_free(out, true);
    }
    kp_aggregator_free(a);
  }
}

static void record_limit_below_max_size_is_honoured(void **state) {
  kp_aggregator_limits lim = {true, UINT32_MAX, 51200, 500, false};
  kp_aggregator *a = kp_aggregator_new(&lim, 0);
  for (int i = 0; i < 100; i++) {
    kp_kinesis_record *out;
    assert_int_equal(kp_aggregator_add(a, rec("partition", NULL, 40), &out), 0);
    if (out) {
      assert_true(kp_kinesis_record_size(out) <= 500);
      assert_true(out->count > 1);
      check_kr(out, &lim, 0);
      kp_kinesis_record_free(out, true);
    }
  }
  kp_aggregator_free(a);
}

static void deadline_and_expiry_are_the_minimum_of_contents(void **state) {
  kp_aggregator_limits lim = {true, UINT32_MAX, 51200, MiB, false};
  kp_aggregator *a = kp_aggregator_new(&lim, 0);
  assert_true(isinf(kp_aggregator_deadline(a)) && kp_aggregator_deadline(a) > 0);
  assert_true(isinf(kp_aggregator_expiry(a)));
  double arrivals[] = {5.0, 3.0, 4.0, 7.0};
  double want = INFINITY;
  kp_kinesis_record *out;
  for (size_t i = 0; i < 4; i++) {
    kp_record *r = rec_at("k", NULL, 10, arrivals[i]);
    if (i == 3)
      r->deadline = 1.0; /* a retried record may come back with an earlier deadline */
    want = r->deadline < want ? r->deadline : want;
    assert_int_equal(kp_aggregator_add(a, r, &out), 0);
    assert_null(out);
    assert_true(kp_aggregator_deadline(a) == want);
  }
  assert_true(kp_aggregator_expiry(a) == 3.0 + 30.0);
  out = kp_aggregator_flush(a);
  assert_true(out->deadline == 1.0);
  assert_true(out->expiry == 33.0);
  check_kr(out, &lim, 0);
  kp_kinesis_record_free(out, true);
  assert_true(isinf(kp_aggregator_deadline(a)));
  kp_aggregator_free(a);
}

static void drain_returns_records_in_order_and_empties(void **state) {
  kp_aggregator_limits lim = {true, UINT32_MAX, 51200, MiB, false};
  kp_aggregator *a = kp_aggregator_new(&lim, 0);
  uint64_t first = next_id;
  kp_kinesis_record *out;
  for (int i = 0; i < 10; i++) {
    assert_int_equal(kp_aggregator_add(a, rec(i % 2 ? "p" : "q", NULL, 20), &out), 0);
    assert_null(out);
  }
  kp_record *list = kp_aggregator_drain(a);
  assert_int_equal(kp_aggregator_count(a), 0);
  assert_int_equal(kp_aggregator_size(a), 0);
  assert_true(isinf(kp_aggregator_deadline(a)));
  assert_null(kp_aggregator_flush(a));
  uint64_t id = first;
  for (kp_record *r = list; r; r = r->next)
    assert_int_equal(r->source_id, id++);
  assert_int_equal(id, first + 10);
  /* Re-adding the drained records (as a re-route would) starts from a clean encoder. */
  while (list) {
    kp_record *next = list->next;
    assert_int_equal(kp_aggregator_add(a, list, &out), 0);
    assert_null(out);
    list = next;
  }
  out = kp_aggregator_flush(a);
  assert_int_equal(out->count, 10);
  check_kr(out, &lim, 0);
  kp_kinesis_record_free(out, true);
  kp_aggregator_free(a);
}

static void heap_item_round_trips(void **state) {
  kp_aggregator_limits lim = {true, UINT32_MAX, 51200, MiB, false};
  kp_aggregator *a = kp_aggregator_new(&lim, 4);
  kp_heap_item *it = kp_aggregator_heap_item(a);
  assert_false(kp_heap_item_queued(it));
  assert_ptr_equal(kp_aggregator_from_heap_item(it), a);
  assert_int_equal(kp_aggregator_shard(a), 4);
  kp_aggregator_free(a);
}

int main(void) {
  g_file_size = 500 * 4000;
  g_file = malloc(g_file_size);
  assert_non_null(g_file);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(random_records_respect_limits_exactly_and_keep_order),
      cmocka_unit_test(max_count_cuts_exactly),
      cmocka_unit_test(dropping_data_keeps_size_and_records),
      cmocka_unit_test(max_size_is_reached_but_never_exceeded),
      cmocka_unit_test(disabled_aggregation_returns_every_record_raw),
      cmocka_unit_test(oversized_record_travels_alone_and_raw),
      cmocka_unit_test(aggregates_are_sealed_together),
      cmocka_unit_test(shed_records_restore_only_from_their_aggregate),
      cmocka_unit_test(record_is_held_exactly_while_a_second_could_still_join),
      cmocka_unit_test(record_limit_below_max_size_is_honoured),
      cmocka_unit_test(deadline_and_expiry_are_the_minimum_of_contents),
      cmocka_unit_test(drain_returns_records_in_order_and_empties),
      cmocka_unit_test(heap_item_round_trips),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
