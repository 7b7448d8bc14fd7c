// KP_TEST_LIBS: kp_format kp_proto
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "format/agg_encoder.h"
#include "format/hash_key.h"
#include "proto/aggregated_record.pb-c.h"

/* Randomised tests print this seed on failure; rerun with KP_TEST_SEED=<seed>. */
static uint64_t g_seed;
static uint64_t g_rng;
static unsigned g_iter;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      fail_msg("%s:%d: %s (KP_TEST_SEED=%llu iteration %u)", __FILE__, __LINE__, #cond,            \
               (unsigned long long)g_seed, g_iter);                                                \
  } while (0)

static uint64_t rnd(void) { /* splitmix64 */
  uint64_t z = (g_rng += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/* Uniform in [0, n); n > 0. */
static size_t rnd_below(size_t n) {
  return (size_t)(rnd() % n);
}

static int seed_setup(void **state) {
  const char *s = getenv("KP_TEST_SEED");
  g_seed = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
  g_rng = g_seed;
  g_iter = 0;
  return 0;
}

/* ---- a naive model of the expected aggregate ---- */

typedef struct rec {
  char *pk;
  size_t pk_len;
  char *ehk; /* NULL = none */
  size_t ehk_len;
  const uint8_t *data; /* into the data pool */
  size_t data_len;
  kp_hash_key hk;
} rec;

typedef struct model {
  rec *recs;
  size_t n, cap;
} model;

static void model_add(model *m, const rec *r) {
  if (m->n == m->cap) {
    m->cap = m->cap ? m->cap * 2 : 64;
    m->recs = realloc(m->recs, m->cap * sizeof *m->recs);
    assert_non_null(m->recs);
  }
  m->recs[m->n++] = *r;
}

static void model_clear(model *m) {
  for (size_t i = 0; i < m->n; i++) {
    free(m->recs[i].pk);
    free(m->recs[i].ehk);
  }
  m->n = 0;
}

static void model_free(model *m) {
  model_clear(m);
  free(m->recs);
}

/* Index of (s, len) in the first-appearance table, O(n) on purpose: an independent
 * oracle for the encoder's hash table. Appends when absent. */
static size_t table_index(const char **tab, size_t *lens, size_t *n, const char *s, size_t len) {
  for (size_t i = 0; i < *n; i++)
    if (lens[i] == len && memcmp(tab[i], s, len) == 0)
      return i;
  tab[*n] = s;
  lens[*n] = len;
  return (*n)++;
}

/* How records go in: 0 copied, 1 by reference, 2 either at random. The bytes out must
 * be the same. */
static int g_ref_mode;

static int add_rec(kp_agg_encoder *e, const rec *r) {
  if (g_ref_mode == 1 || (g_ref_mode == 2 && rnd_below(2)))
    return kp_agg_encoder_add_ref(e, r->pk, r->pk_len, r->ehk, r->ehk_len, r->data, r->data_len,
                                  &r->hk);
  return kp_agg_encoder_add(e, r->pk, r->pk_len, r->ehk, r->ehk_len, r->data, r->data_len, &r->hk);
}

/* The gathered form of e's aggregate, sealed, joined, must be `want` byte for byte. */
static void verify_gathered(kp_agg_encoder *e, const uint8_t *want, size_t want_len) {
  size_t cap = kp_agg_encoder_gather_pieces(e), n = 0;
  CHECK(cap == 2 * kp_agg_encoder_refs(e) + 1);
  struct iovec *iov = malloc(cap * sizeof *iov);
  assert_non_null(iov);
  uint8_t *own = NULL;
  char ehk[KP_HASH_KEY_DEC_MAX];
  CHECK(kp_agg_encoder_finish_gather(e, iov, &n, &own, ehk) == 0);
  CHECK(n >= 1 && n <= cap && own != NULL);
  kp_md5_job job = kp_agg_seal_job_gathered(iov, n, want_len);
  kp_md5_many(&job, 1);
  uint8_t *joined = malloc(want_len + 1);
  assert_non_null(joined);
  size_t len = 0;
  for (size_t i = 0; i < n; i++) {
    CHECK(len + iov[i].iov_len <= want_len);
    memcpy(joined + len, iov[i].iov_base, iov[i].iov_len);
    len += iov[i].iov_len;
  }
  CHECK(len == want_len);
  CHECK(memcmp(joined, want, want_len) == 0);
  free(joined);
  free(own);
  free(iov);
}

/* Checks the finished output of e against the model, field by field. */
static void verify(kp_agg_encoder *e, const model *m) {
  kp_agg_output out;
  memset(&out, 0xAB, sizeof out);
  CHECK(kp_agg_encoder_finish(e, &out) == 0);
  CHECK(out.data_len == kp_agg_encoder_size(e));
  char ehk_dec[KP_HASH_KEY_DEC_MAX];
  kp_hash_key_format(&m->recs[0].hk, ehk_dec);
  CHECK(strcmp(out.explicit_hash_key, ehk_dec) == 0);

  if (m->n == 1) {
    const rec *r = &m->recs[0];
    CHECK(out.data_len == r->data_len);
    CHECK(r->data_len == 0 || memcmp(out.data, r->data, r->data_len) == 0);
    CHECK(out.partition_key_len == r->pk_len);
    CHECK(memcmp(out.partition_key, r->pk, r->pk_len) == 0);
    return;
  }

  CHECK(out.partition_key_len == 1 && out.partition_key[0] == 'a');
  CHECK(out.data_len > KP_AGG_OVERHEAD);
  CHECK(memcmp(out.data, "\xF3\x89\x9A\xC2", 4) == 0);
  CHECK(memcmp(out.data, kp_agg_magic, KP_AGG_MAGIC_LEN) == 0);
  const uint8_t *pb = out.data + 4;
  size_t pb_len = out.data_len - KP_AGG_OVERHEAD;
  uint8_t md5[16];
  kp_md5(pb, pb_len, md5);
  CHECK(memcmp(md5, pb + pb_len, 16) == 0);
  verify_gathered(e, out.data, out.data_len);

  Kpl__Agg__AggregatedRecord *ar = kpl__agg__aggregated_record__unpack(NULL, pb_len, pb);
  CHECK(ar != NULL);

  const char **pks = malloc(m->n * sizeof *pks), **ehks = malloc(m->n * sizeof *ehks);
  size_t *pk_lens = malloc(m->n * sizeof *pk_lens), *ehk_lens = malloc(m->n * sizeof *ehk_lens);
  assert_true(pks && ehks && pk_lens && ehk_lens);
  size_t npk = 0, nehk = 0;
  CHECK(ar->n_records == m->n);
  for (size_t i = 0; i < m->n; i++) {
    const rec *r = &m->recs[i];
    const Kpl__Agg__Record *pr = ar->records[i];
    CHECK(pr->partition_key_index == table_index(pks, pk_lens, &npk, r->pk, r->pk_len));
    if (r->ehk) {
      CHECK(pr->has_explicit_hash_key_index);
      CHECK(pr->explicit_hash_key_index == table_index(ehks, ehk_lens, &nehk, r->ehk, r->ehk_len));
    } else {
      CHECK(!pr->has_explicit_hash_key_index);
    }
    CHECK(pr->data.len == r->data_len);
    CHECK(r->data_len == 0 || memcmp(pr->data.data, r->data, r->data_len) == 0);
    CHECK(pr->n_tags == 0);
  }
  CHECK(ar->n_partition_key_table == npk);
  for (size_t i = 0; i < npk; i++) {
    CHECK(strlen(ar->partition_key_table[i]) == pk_lens[i]);
    CHECK(memcmp(ar->partition_key_table[i], pks[i], pk_lens[i]) == 0);
  }
  CHECK(ar->n_explicit_hash_key_table == nehk);
  for (size_t i = 0; i < nehk; i++) {
    CHECK(strlen(ar->explicit_hash_key_table[i]) == ehk_lens[i]);
    CHECK(memcmp(ar->explicit_hash_key_table[i], ehks[i], ehk_lens[i]) == 0);
  }

  /* protobuf-c packs in canonical field order: re-packing must give our bytes back. */
  size_t repacked_len = kpl__agg__aggregated_record__get_packed_size(ar);
  CHECK(repacked_len == pb_len);
  uint8_t *repacked = malloc(repacked_len ? repacked_len : 1);
  assert_non_null(repacked);
  CHECK(kpl__agg__aggregated_record__pack(ar, repacked) == pb_len);
  CHECK(memcmp(repacked, pb, pb_len) == 0);
  free(repacked);

  kpl__agg__aggregated_record__free_unpacked(ar, NULL);
  free(pks);
  free(ehks);
  free(pk_lens);
  free(ehk_lens);
}

/* ---- random inputs ---- */

#define POOL_SIZE ((size_t)1 << 21)
static uint8_t *g_pool;

static int pool_setup(void **state) {
  seed_setup(state);
  g_pool = malloc(POOL_SIZE);
  if (!g_pool)
    return -1;
  for (size_t i = 0; i < POOL_SIZE; i++)
    g_pool[i] = (uint8_t)rnd();
  return 0;
}

static int pool_teardown(void **state) {
  free(g_pool);
  return 0;
}

/* Appends one UTF-8 code point of 1..4 bytes (never NUL or a surrogate). */
static size_t put_utf8(char *p) {
  uint32_t cp;
  switch (rnd_below(4)) {
  case 0:
    cp = 1 + (uint32_t)rnd_below(0x7F);
    p[0] = (char)cp;
    return 1;
  case 1:
    cp = 0x80 + (uint32_t)rnd_below(0x800 - 0x80);
    p[0] = (char)(0xC0 | (cp >> 6));
    p[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  case 2:
    do
      cp = 0x800 + (uint32_t)rnd_below(0x10000 - 0x800);
    while (cp >= 0xD800 && cp <= 0xDFFF);
    p[0] = (char)(0xE0 | (cp >> 12));
    p[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    p[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  default:
    cp = 0x10000 + (uint32_t)rnd_below(0x110000 - 0x10000);
    p[0] = (char)(0xF0 | (cp >> 18));
    p[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    p[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    p[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
  }
}

/* A partition key of 1..256 code points, usually short. Deterministic in `id` so that
 * a pool of ids gives repeated keys. */
static char *make_pk(uint64_t id, size_t *len) {
  uint64_t saved = g_rng;
  g_rng = id * 0x2545F4914F6CDD1DULL + 17;
  size_t chars = rnd_below(8) == 0 ? 1 + rnd_below(256) : 1 + rnd_below(20);
  char *s = malloc(chars * 4 + 1);
  assert_non_null(s);
  size_t n = 0;
  for (size_t i = 0; i < chars; i++)
    n += put_utf8(s + n);
  s[n] = 0;
  *len = n;
  g_rng = saved;
  return s;
}

/* A decimal explicit hash key in 0..2^128-1, sometimes with leading zeros (a distinct
 * string for the table even if numerically equal to another). */
static char *make_ehk(uint64_t id, size_t *len, kp_hash_key *hk) {
  uint64_t saved = g_rng;
  g_rng = id * 0x9E3779B97F4A7C15ULL + 3;
  kp_hash_key k;
  for (int i = 0; i < 16; i++)
    k.be[i] = (uint8_t)rnd();
  if (rnd_below(4) == 0)
    memset(k.be, 0, 8 + rnd_below(9)); /* small values too */
  /* Room in front of the digits for up to 39 - n leading zeros. */
  char dec[40 + KP_HASH_KEY_DEC_MAX];
  size_t zeros = 0, n = kp_hash_key_format(&k, dec + 40);
  if (n < 39 && rnd_below(8) == 0)
    zeros = 1 + rnd_below(39 - n);
  memset(dec + 40 - zeros, '0', zeros);
  char *s = malloc(n + zeros + 1);
  assert_non_null(s);
  memcpy(s, dec + 40 - zeros, n + zeros + 1);
  *len = n + zeros;
  assert_int_equal(kp_hash_key_parse(s, *len, hk), 0);
  g_rng = saved;
  return s;
}

typedef struct gen_params {
  size_t max_data;  /* record data 0..max_data bytes */
  uint64_t pk_pool; /* distinct partition keys to draw from; 0 = unique per record */
  unsigned ehk_pct; /* percentage of records with an explicit hash key */
  uint64_t ehk_pool;
  uint64_t key_base; /* offsets ids so aggregates do not all share keys */
} gen_params;

static void random_rec(const gen_params *gp, rec *r) {
  uint64_t pk_id = gp->pk_pool ? rnd_below(gp->pk_pool) : rnd();
  r->pk = make_pk(gp->key_base + pk_id, &r->pk_len);
  if (rnd_below(100) < gp->ehk_pct) {
    r->ehk = make_ehk(gp->key_base + rnd_below(gp->ehk_pool), &r->ehk_len, &r->hk);
  } else {
    r->ehk = NULL;
    r->ehk_len = 0;
    kp_hash_key_of_partition_key(r->pk, r->pk_len, &r->hk);
  }
  size_t dl = rnd_below(gp->max_data + 1);
  if (dl && rnd_below(3) == 0)
    dl = rnd_below(dl + 1); /* bias towards small records */
  r->data_len = dl;
  r->data = g_pool + rnd_below(POOL_SIZE - dl + 1);
}

/* Adds records until the next one would exceed `target` bytes (always at least one),
 * checking size_with() against the real size after every add. */
static void fill(kp_agg_encoder *e, model *m, const gen_params *gp, size_t target,
                 size_t max_records) {
  for (;;) {
    rec r;
    random_rec(gp, &r);
    size_t before = kp_agg_encoder_size(e);
    size_t predicted = kp_agg_encoder_size_with(e, r.pk, r.pk_len, r.ehk, r.ehk_len, r.data_len);
    size_t outer = kp_agg_encoder_outer_pk_len_with(e, r.pk_len);
    if (m->n > 0 && (predicted > target || m->n >= max_records)) {
      free(r.pk);
      free(r.ehk);
      break;
    }
    CHECK(predicted >= before);
    CHECK(add_rec(e, &r) == 0);
    model_add(m, &r);
    CHECK(kp_agg_encoder_count(e) == m->n);
    CHECK(kp_agg_encoder_size(e) == predicted);
    CHECK(outer == (m->n == 1 ? r.pk_len : 1));
    /* Asking again after the add must agree with what finish will produce. */
    CHECK(kp_agg_encoder_outer_pk_len_with(e, 7) == 1);
  }
}

static void random_aggregates_match_the_protobuf_oracle(void **state) {
  static const size_t max_datas[] = {0, 1, 16, 100, 1000, 20000, 300000, 1 << 20};
  static const uint64_t pk_pools[] = {0, 1, 2, 5, 50, 1000};
  static const unsigned ehk_pcts[] = {0, 0, 10, 50, 100};
  static const uint64_t ehk_pools[] = {1, 3, 100, 100000};
  kp_agg_encoder *e = kp_agg_encoder_new();
  assert_non_null(e);
  model m = {0};
  for (g_iter = 0; g_iter < 400; g_iter++) {
    gen_params gp = {
        .max_data = max_datas[rnd_below(sizeof max_datas / sizeof *max_datas)],
        .pk_pool = pk_pools[rnd_below(sizeof pk_pools / sizeof *pk_pools)],
        .ehk_pct = ehk_pcts[rnd_below(sizeof ehk_pcts / sizeof *ehk_pcts)],
        .ehk_pool = ehk_pools[rnd_below(sizeof ehk_pools / sizeof *ehk_pools)],
        .key_base = rnd(),
    };
    /* Totals from tiny to 1 MiB, log-spread so small aggregates are common too. */
    size_t target = (size_t)1 << rnd_below(21);
    target += rnd_below(target);
    if (target > (size_t)1 << 20)
      target = (size_t)1 << 20;
    /* The oracle's table scan is O(records x keys): cap the count, big totals still come
     from big records. */
    size_t max_records = rnd_below(4) == 0 ? 1 + rnd_below(3) : 4000;
    /* Alternate a fresh encoder and a reused one (reset keeps capacity). */
    if (g_iter % 5 == 0) {
      kp_agg_encoder_free(e);
      e = kp_agg_encoder_new();
      assert_non_null(e);
    }
    g_ref_mode = (int)(g_iter % 3);
    fill(e, &m, &gp, target, max_records);
    verify(e, &m);
    verify(e, &m); /* finish is repeatable */
    kp_agg_encoder_reset(e);
    CHECK(kp_agg_encoder_count(e) == 0 && kp_agg_encoder_size(e) == 0);
    model_clear(&m);
  }
  model_free(&m);
  kp_agg_encoder_free(e);
}

/* ---- fixed cases ---- */

static void empty_finish_fails(void **state) {
  kp_agg_encoder *e = kp_agg_encoder_new();
  assert_non_null(e);
  kp_agg_output out;
  assert_int_equal(kp_agg_encoder_count(e), 0);
  assert_int_equal(kp_agg_encoder_size(e), 0);
  assert_int_equal(kp_agg_encoder_finish(e, &out), -1);
  /* Empty: the next record would go out raw, with its own key. */
  assert_int_equal(kp_agg_encoder_size_with(e, "pk", 2, NULL, 0, 123), 123);
  assert_int_equal(kp_agg_encoder_outer_pk_len_with(e, 2), 2);
  kp_hash_key hk;
  kp_hash_key_of_partition_key("pk", 2, &hk);
  assert_int_equal(kp_agg_encoder_add(e, "pk", 2, NULL, 0, "x", 1, &hk), 0);
  kp_agg_encoder_reset(e);
  assert_int_equal(kp_agg_encoder_finish(e, &out), -1);
  kp_agg_encoder_free(e);
  kp_agg_encoder_free(NULL);
}

static void single_record_is_emitted_raw(void **state) {
  kp_agg_encoder *e = kp_agg_encoder_new();
  assert_non_null(e);
  kp_hash_key hk;
  assert_int_equal(kp_hash_key_parse("12345678901234567890", 20, &hk), 0);
  /* The outer EHK is the hash key the caller passed, whatever the pk's MD5 is. */
  assert_int_equal(
      kp_agg_encoder_add(e, "k\xC3\xA9y", 4, "0012345678901234567890", 22, "payload", 7, &hk), 0);
  kp_agg_output out;
  assert_int_equal(kp_agg_encoder_finish(e, &out), 0);
  assert_int_equal(out.data_len, 7);
  assert_memory_equal(out.data, "payload", 7);
  assert_int_equal(out.partition_key_len, 4);
  assert_memory_equal(out.partition_key, "k\xC3\xA9y", 4);
  assert_string_equal(out.explicit_hash_key, "12345678901234567890");
  assert_int_equal(kp_agg_encoder_size(e), 7);
  kp_agg_encoder_free(e);
}

/* Hand-assembled from the schema, independent of the encoder's own arithmetic. */
static void two_records_give_the_expected_bytes(void **state) {
  kp_agg_encoder *e = kp_agg_encoder_new();
  assert_non_null(e);
  kp_hash_key ha, hb;
  kp_hash_key_of_partition_key("a", 1, &ha);
  kp_hash_key_of_partition_key("b", 1, &hb);
  assert_int_equal(kp_agg_encoder_add(e, "a", 1, NULL, 0, "x", 1, &ha), 0);
  assert_int_equal(kp_agg_encoder_add(e, "b", 1, "7", 1, "yz", 2, &hb), 0);
  assert_int_equal(kp_agg_encoder_add(e, "a", 1, NULL, 0, "", 0, &ha), 0);
  static const uint8_t pb[] = {
      0x0A, 1, 'a',  0x0A, 1,    'b',                    /* partition_key_table */
      0x12, 1, '7',                                      /* explicit_hash_key_table */
      0x1A, 5, 0x08, 0,    0x1A, 1,   'x',               /* {pk 0, "x"} */
      0x1A, 8, 0x08, 1,    0x10, 0,   0x1A, 2, 'y', 'z', /* {pk 1, ehk 0, "yz"} */
      0x1A, 4, 0x08, 0,    0x1A, 0,                      /* {pk 0, ""} */
  };
  kp_agg_output out;
  assert_int_equal(kp_agg_encoder_finish(e, &out), 0);
  assert_int_equal(out.data_len, 4 + sizeof pb + 16);
  assert_memory_equal(out.data, "\xF3\x89\x9A\xC2", 4);
  assert_memory_equal(out.data + 4, pb, sizeof pb);
  uint8_t md5[16];
  kp_md5(pb, sizeof pb, md5);
  assert_memory_equal(out.data + 4 + sizeof pb, md5, 16);
  assert_int_equal(out.partition_key_len, 1);
  assert_memory_equal(out.partition_key, "a", 1);
  /* MD5("a") = 0cc175b9c0f1b6a831c399e269772661 */
  assert_string_equal(out.explicit_hash_key, "16955237001963240173058271559858726497");
  kp_agg_encoder_free(e);
}

/* Thousands of distinct keys force the key tables to grow and rehash; every index must
 * still resolve to the key's first appearance. */
static void many_distinct_keys_survive_table_growth(void **state) {
  kp_agg_encoder *e = kp_agg_encoder_new();
  assert_non_null(e);
  model m = {0};
  for (g_iter = 0; g_iter < 3; g_iter++) {
    gen_params gp = {
        .max_data = 4, .pk_pool = 12000, .ehk_pct = 50, .ehk_pool = 3000, .key_base = rnd()};
    fill(e, &m, &gp, SIZE_MAX, 15000);
    verify(e, &m);
    kp_agg_encoder_reset(e);
    model_clear(&m);
  }
  model_free(&m);
  kp_agg_encoder_free(e);
}

/* After reset an encoder must produce exactly what a fresh one does: no key, index or
 * byte may leak from the previous aggregate (same keys again get fresh indices). */
static void reset_encoder_matches_a_fresh_one(void **state) {
  kp_agg_encoder *reused = kp_agg_encoder_new();
  assert_non_null(reused);
  model m = {0};
  for (g_iter = 0; g_iter < 50; g_iter++) {
    gen_params gp = {.max_data = 300,
                     .pk_pool = 1 + rnd_below(40),
                     .ehk_pct = 30,
                     .ehk_pool = 8,
                     .key_base = 42};
    fill(reused, &m, &gp, 200 + rnd_below(60000), SIZE_MAX);
    kp_agg_encoder *fresh = kp_agg_encoder_new();
    assert_non_null(fresh);
    for (size_t i = 0; i < m.n; i++)
      CHECK(add_rec(fresh, &m.recs[i]) == 0);
    kp_agg_output a, b;
    CHECK(kp_agg_encoder_finish(reused, &a) == 0);
    CHECK(kp_agg_encoder_finish(fresh, &b) == 0);
    CHECK(a.data_len == b.data_len && memcmp(a.data, b.data, a.data_len) == 0);
    CHECK(strcmp(a.explicit_hash_key, b.explicit_hash_key) == 0);
    if (m.n >= 2) { /* the caller-owned form: the same bytes and key */
      CHECK(kp_agg_encoder_size(fresh) == b.data_len);
      uint8_t *own = malloc(b.data_len);
      char ehk[KP_HASH_KEY_DEC_MAX];
      CHECK(kp_agg_encoder_finish_into(fresh, own, ehk) == 0);
      CHECK(memcmp(own, b.data, b.data_len) == 0 && strcmp(ehk, b.explicit_hash_key) == 0);
      free(own);
    } else {
      CHECK(kp_agg_encoder_finish_into(fresh, NULL, NULL) == -1);
    }
    verify(reused, &m);
    kp_agg_encoder_free(fresh);
    kp_agg_encoder_reset(reused);
    model_clear(&m);
  }
  model_free(&m);
  kp_agg_encoder_free(reused);
}

/* Varint boundaries: indices 127/128 and data lengths 127/128/16383/16384 change the
 * width of length prefixes; size_with must track each of them exactly. */
static void size_with_is_exact_across_varint_boundaries(void **state) {
  kp_agg_encoder *e = kp_agg_encoder_new();
  assert_non_null(e);
  static const size_t lens[] = {0, 1, 100, 115, 116, 117, 127, 128, 129, 16370, 16383, 16384};
  char pk[16];
  for (size_t i = 0; i < 300; i++) {
    int pk_len = snprintf(pk, sizeof pk, "k%zu", i);
    size_t dl = lens[i % (sizeof lens / sizeof *lens)];
    const char *ehk = i % 3 ? "5" : NULL;
    kp_hash_key hk;
    kp_hash_key_of_partition_key(pk, (size_t)pk_len, &hk);
    size_t want = kp_agg_encoder_size_with(e, pk, (size_t)pk_len, ehk, ehk ? 1 : 0, dl);
    assert_int_equal(kp_agg_encoder_add(e, pk, (size_t)pk_len, ehk, ehk ? 1 : 0, g_pool, dl, &hk),
                     0);
    assert_int_equal(kp_agg_encoder_size(e), want);
  }
  kp_agg_output out;
  assert_int_equal(kp_agg_encoder_finish(e, &out), 0);
  Kpl__Agg__AggregatedRecord *ar =
      kpl__agg__aggregated_record__unpack(NULL, out.data_len - KP_AGG_OVERHEAD, out.data + 4);
  assert_non_null(ar);
  assert_int_equal(ar->n_records, 300);
  assert_int_equal(ar->n_partition_key_table, 300);
  assert_int_equal(ar->n_explicit_hash_key_table, 1);
  assert_int_equal(ar->records[299]->partition_key_index, 299);
  kpl__agg__aggregated_record__free_unpacked(ar, NULL);
  kp_agg_encoder_free(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(empty_finish_fails),
      cmocka_unit_test(single_record_is_emitted_raw),
      cmocka_unit_test(two_records_give_the_expected_bytes),
      cmocka_unit_test(many_distinct_keys_survive_table_growth),
      cmocka_unit_test(reset_encoder_matches_a_fresh_one),
      cmocka_unit_test(size_with_is_exact_across_varint_boundaries),
      cmocka_unit_test(random_aggregates_match_the_protobuf_oracle),
  };
  int rc = cmocka_run_group_tests(tests, pool_setup, pool_teardown);
  if (rc)
    fprintf(stderr, "KP_TEST_SEED=%llu\n", (unsigned long long)g_seed);
  return rc;
}
