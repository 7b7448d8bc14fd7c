// KP_TEST_LIBS: kp_deagg kp_format
/* Fuzzes de-aggregation in both modes. The first byte picks options; with bit 0
 * set the rest is a protobuf body that gets the magic and a correct MD5, so the
 * fuzzer reaches the parser instead of stopping at the MD5 check.
 * Invariants: every pointer lies inside the input, lenient mode never fails,
 * a lenient fallback is exactly the input, strict success implies lenient yields
 * the same records, hash keys match their EHK or MD5(partition key). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "format/hash_key.h"
#include "kp_deagg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c))                                                                                      \
      abort();                                                                                     \
  } while (0)

enum { MAX_RECS = 4096 };
static kp_deagg_record g_strict[MAX_RECS];

static const char OUTER_PK[] = "outer";
static const char OUTER_SEQ[] = "49590338271490256608559692538361571095921575989136588898";

static bool within(const void *p, size_t n, const void *base, size_t len) {
  const uint8_t *q = p, *b = base;
  return q >= b && q + n <= b + len;
}

static void check_record(const kp_deagg_record *r, const uint8_t *buf, size_t len,
                         const kp_deagg_input *in) {
  CHECK(within(r->data, r->data_len, buf, len));
  if (r->aggregated) {
    CHECK(within(r->partition_key, r->partition_key_len, buf, len));
    if (r->explicit_hash_key)
      CHECK(within(r->explicit_hash_key, r->explicit_hash_key_len, buf, len));
  } else {
    CHECK(r->sub_sequence_number == 0);
    CHECK(r->data == buf && r->data_len == len);
    CHECK((const char *)r->partition_key == in->partition_key);
  }
  CHECK(r->sequence_number == in->sequence_number);
  if (r->hash_key) {
    kp_hash_key k;
    if (r->explicit_hash_key)
      CHECK(kp_hash_key_parse((const char *)r->explicit_hash_key, r->explicit_hash_key_len, &k) ==
            0);
    else
      kp_hash_key_of_partition_key(r->partition_key, r->partition_key_len, &k);
    CHECK(memcmp(k.be, r->hash_key, 16) == 0);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static kp_deagg *strict, *lenient;
  if (!strict) {
    strict = kp_deagg_new();
    lenient = kp_deagg_new();
    kp_deagg_set_strict(strict, true);
  }
  if (size < 1)
    return 0;
  uint8_t mode = data[0];
  data++;
  size--;
  uint8_t *buf;
  size_t len;
  if (mode & 1) { /* wrap as a well-formed envelope */
    len = 4 + size + 16;
    buf = malloc(len);
    memcpy(buf, "\xF3\x89\x9A\xC2", 4);
    if (size)
      memcpy(buf + 4, data, size);
    kp_md5(buf + 4, size, buf + 4 + size);
  } else {
    len = size;
    buf = malloc(len ? len : 1);
    if (size)
      memcpy(buf, data, size);
  }
  bool hash_keys = !(mode & 2);
  bool range = mode & 4;
  uint8_t lo[16], hi[16];
  memset(lo, 0, 16);
  memset(hi, 0xff, 16);
  lo[0] = (uint8_t)(mode & 0xf0); /* keep roughly the upper part of the key space */
  for (int i = 0; i < 2; i++) {
    kp_deagg *d = i ? lenient : strict;
    kp_deagg_set_hash_keys(d, hash_keys);
    CHECK(kp_deagg_set_hash_range(d, range ? lo : NULL, range ? hi : NULL) == KP_DEAGG_OK);
  }
  kp_deagg_input in = {buf,  len, OUTER_PK,  sizeof OUTER_PK - 1,
                       NULL, 0,   OUTER_SEQ, sizeof OUTER_SEQ - 1};

  kp_deagg_err src = kp_deagg_begin(strict, &in);
  size_t ns = 0;
  if (src == KP_DEAGG_OK) {
    CHECK(kp_deagg_corruption(strict) == KP_DEAGG_OK);
    uint64_t last = 0;
    while (ns < MAX_RECS && kp_deagg_next(strict, &g_strict[ns]) == KP_DEAGG_OK) {
      const kp_deagg_record *r = &g_strict[ns];
      check_record(r, buf, len, &in);
      CHECK(r->sub_sequence_number < kp_deagg_count(strict));
      CHECK(ns == 0 || r->sub_sequence_number > last);
      CHECK(range || r->sub_sequence_number == ns); /* unfiltered: nothing skipped */
      CHECK(hash_keys || range || r->hash_key == NULL);
      last = r->sub_sequence_number;
      ns++;
    }
  } else {
    CHECK(kp_deagg_err_is_corrupt(src));
    CHECK(kp_deagg_errstr(strict)[0] != '\0');
  }

  CHECK(kp_deagg_begin(lenient, &in) == KP_DEAGG_OK);
  CHECK(kp_deagg_corruption(lenient) == (src == KP_DEAGG_OK ? KP_DEAGG_OK : src));
  kp_deagg_record r;
  size_t nl = 0;
  while (kp_deagg_next(lenient, &r) == KP_DEAGG_OK) {
    check_record(&r, buf, len, &in);
    if (src == KP_DEAGG_OK) {
      if (nl < ns) { /* same records as strict mode */
        const kp_deagg_record *s = &g_strict[nl];
        CHECK(s->data == r.data && s->data_len == r.data_len);
        CHECK(s->partition_key == r.partition_key && s->partition_key_len == r.partition_key_len);
        CHECK(s->explicit_hash_key == r.explicit_hash_key);
        CHECK(s->sub_sequence_number == r.sub_sequence_number);
        CHECK(s->aggregated == r.aggregated);
        CHECK((s->hash_key == NULL) == (r.hash_key == NULL));
        CHECK(!s->hash_key || memcmp(s->hash_key, r.hash_key, 16) == 0);
      }
    } else {
      CHECK(!r.aggregated); /* fallback: the whole record, once */
    }
    nl++;
  }
  if (src == KP_DEAGG_OK && ns < MAX_RECS)
    CHECK(nl == ns);
  if (src != KP_DEAGG_OK)
    CHECK(nl <= 1 && kp_deagg_count(lenient) == 1);
  free(buf);
  return 0;
}
