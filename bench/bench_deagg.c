// KP_TEST_LIBS: kp_deagg kp_format kp_proto
/* De-aggregation throughput on KPL-sized aggregates (≤ 50 KiB of 100-byte user
 * records), including the aggregate's MD5 check. Scenarios: one shared partition
 * key (one hash-key MD5 per aggregate), unique keys with and without per-record
 * hash keys. Usage: bench_deagg [seconds per scenario, default 2]; each scenario reports
 * the best of 5 equal slices. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "format/hash_key.h"
#include "kp_deagg.h"
#include "proto/aggregated_record.pb-c.h"

enum { NAGG = 64, DATA_LEN = 100, AGG_MAX = 51200 };

/* Thread CPU time: the target is per core, and the machine is shared. */
static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Packs an aggregate of as many 100-byte records as fit in AGG_MAX bytes. Unique
 * keys look like the KPL's usual random decimal partition keys. */
static size_t build(kp_buf *out, bool unique, unsigned seed) {
  enum { CAP = 1024 };
  static char keys[CAP][24];
  static uint8_t data[CAP][DATA_LEN];
  static char *pks[CAP];
  static Kpl__Agg__Record recs[CAP];
  static Kpl__Agg__Record *rp[CAP];
  Kpl__Agg__AggregatedRecord ar = KPL__AGG__AGGREGATED_RECORD__INIT;
  ar.partition_key_table = pks;
  ar.records = rp;
  size_t n = 0;
  for (; n < CAP; n++) {
    snprintf(keys[n], sizeof keys[n], "%u%010zu", seed, unique ? n * 7919 : 0);
    for (size_t j = 0; j < DATA_LEN; j++)
      data[n][j] = (uint8_t)(seed + n + j);
    Kpl__Agg__Record r = KPL__AGG__RECORD__INIT;
    r.data.data = data[n];
    r.data.len = DATA_LEN;
    if (unique || n == 0)
      pks[ar.n_partition_key_table++] = keys[n];
    r.partition_key_index = ar.n_partition_key_table - 1;
    recs[n] = r;
    rp[n] = &recs[n];
    ar.n_records = n + 1;
    if (4 + kpl__agg__aggregated_record__get_packed_size(&ar) + 16 > AGG_MAX) {
      ar.n_records = n;
      if (unique)
        ar.n_partition_key_table--;
      break;
    }
  }
  size_t sz = kpl__agg__aggregated_record__get_packed_size(&ar);
  kp_buf_reset(out);
  kp_buf_reserve(out, 4 + sz + 16);
  memcpy(out->data, "\xF3\x89\x9A\xC2", 4);
  kpl__agg__aggregated_record__pack(&ar, out->data + 4);
  kp_md5(out->data + 4, sz, out->data + 4 + sz);
  out->len = 4 + sz + 16;
  return ar.n_records;
}

static void scenario(const char *name, bool unique, bool hash_keys, double secs) {
  kp_buf aggs[NAGG];
  size_t per_agg = 0;
  for (int i = 0; i < NAGG; i++) {
    aggs[i] = (kp_buf)KP_BUF_INIT;
    per_agg = build(&aggs[i], unique, (unsigned)i);
  }
  kp_deagg *d = kp_deagg_new();
  kp_deagg_set_strict(d, true);
  kp_deagg_set_hash_keys(d, hash_keys);
  /* Best of 5 short runs: the machine is shared, so the best run is the one
   * least disturbed by other processes. */
  double best_t = 0;
  uint64_t best_recs = 0, best_bytes = 0, sink = 0;
  for (int run = 0; run < 5; run++) {
    uint64_t recs = 0, bytes = 0;
    double t0 = now(), t;
    do {
      for (int rep = 0; rep < 16; rep++) {
        const kp_buf *b = &aggs[(recs / per_agg + (uint64_t)rep) % NAGG];
        kp_deagg_input in = {b->data, b->len, "a", 1, NULL, 0, "1", 1};
        if (kp_deagg_begin(d, &in) != KP_DEAGG_OK) {
          fprintf(stderr, "begin failed: %s\n", kp_deagg_errstr(d));
          exit(1);
        }
        kp_deagg_record r;
        while (kp_deagg_next(d, &r) == KP_DEAGG_OK) {
          sink += r.data_len + r.data[0] + (r.hash_key ? r.hash_key[15] : 0);
          recs++;
        }
        bytes += b->len;
      }
      t = now() - t0;
    } while (t < secs / 5);
    if (!best_t || (double)recs / t > (double)best_recs / best_t) {
      best_t = t;
      best_recs = recs;
      best_bytes = bytes;
    }
  }
  double t = best_t;
  uint64_t recs = best_recs, bytes = best_bytes;
  printf("%-34s %5zu rec/agg  %6.2f M user records/s  %7.1f MB/s  %6.1f ns/record"
         "  (sink %llu)\n",
         name, per_agg, (double)recs / t / 1e6, (double)bytes / t / 1e6, t * 1e9 / (double)recs,
         (unsigned long long)(sink & 1));
  for (int i = 0; i < NAGG; i++)
    kp_buf_free(&aggs[i]);
  kp_deagg_destroy(d);
}

static void md5_only(double secs) {
  kp_buf b = KP_BUF_INIT;
  build(&b, false, 1);
  uint8_t out[16];
  uint64_t sink = 0;
  double best = 0;
  for (int run = 0; run < 5; run++) {
    uint64_t bytes = 0;
    double t0 = now(), t;
    do {
      for (int i = 0; i < 64; i++) {
        kp_md5(b.data + 4, b.len - 20, out);
        sink += out[0];
        bytes += b.len;
      }
      t = now() - t0;
    } while (t < secs / 5);
    if ((double)bytes / t > best)
      best = (double)bytes / t;
  }
  printf("%-34s %7.1f MB/s (ceiling for any MD5-checked de-aggregation) (sink %llu)\n",
         "MD5 alone (kp_md5)", best / 1e6, (unsigned long long)(sink & 1));
  kp_buf_free(&b);
}

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 2.0;
  if (secs <= 0)
    secs = 2.0;
  printf("de-aggregating %d-byte aggregates of %d-byte user records, strict, MD5 checked\n",
         AGG_MAX, DATA_LEN);
  scenario("one shared key, hash keys on", false, true, secs);
  scenario("unique keys, hash keys on", true, true, secs);
  scenario("unique keys, hash keys off", true, false, secs);
  scenario("one shared key, hash keys off", false, false, secs);
  md5_only(secs);
  return 0;
}
