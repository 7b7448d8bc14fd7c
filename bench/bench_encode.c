// KP_TEST_LIBS: kp_format
/* Throughput of the streaming aggregation encoder: user records packed into 50 KiB
 * aggregates (AggregationMaxSize default), the way the aggregator drives it:
 * size_with -> finish/reset when full -> add. Hash keys are precomputed (the caller's
 * MD5 of the pk is not the encoder's cost) except in the "+md5(pk)" rows, which show
 * the whole per-record cost the daemon pays. Each config runs ~2 s wall; rates are per
 * CPU second of the benchmark thread. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "format/agg_encoder.h"
#include "format/hash_key.h"

#define NRECS 65536 /* distinct inputs cycled through; keeps the input set cache-sized */
#define AGG_MAX 51200

typedef struct input {
  char pk[24];
  size_t pk_len;
  kp_hash_key hk;
  const uint8_t *data;
} input;

static uint64_t g_rng = 0x1234567;
static uint64_t rnd(void) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return g_rng;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static volatile size_t g_sink; /* keeps the output live */

static void run(const char *name, size_t rec_size, size_t distinct_keys, int hash_in_loop) {
  input *in = malloc(NRECS * sizeof *in);
  uint8_t *pool = malloc(NRECS + rec_size);
  kp_agg_encoder *e = kp_agg_encoder_new();
  if (!in || !pool || !e) {
    fprintf(stderr, "out of memory\n");
    exit(1);
  }
  for (size_t i = 0; i < NRECS + rec_size; i++)
    pool[i] = (uint8_t)rnd();
  for (size_t i = 0; i < NRECS; i++) {
    uint64_t id = distinct_keys ? rnd() % distinct_keys : rnd();
    /* 10-20 chars, like user ids / UUID prefixes. */
    size_t len = 10 + (size_t)(id % 11);
    uint64_t x = id * 0x9E3779B97F4A7C15ULL + 1;
    for (size_t j = 0; j < len; j++) {
      in[i].pk[j] = "abcdefghijklmnopqrstuvwxyz0123456789"[x % 36];
      x = x / 36 ? x / 36 : id * 0xC2B2AE3D27D4EB4FULL + j;
    }
    in[i].pk_len = len;
    kp_hash_key_of_partition_key(in[i].pk, len, &in[i].hk);
    in[i].data = pool + i;
  }

  size_t recs = 0, user_bytes = 0, out_bytes = 0, aggs = 0;
  double t0 = now_s(), t1 = t0, c0 = cpu_s();
  while (t1 - t0 < 2.0) {
    for (size_t i = 0; i < NRECS; i++) {
      const input *r = &in[i];
      kp_hash_key hk = r->hk;
      if (hash_in_loop)
        kp_hash_key_of_partition_key(r->pk, r->pk_len, &hk);
      if (kp_agg_encoder_count(e) &&
          kp_agg_encoder_size_with(e, r->pk, r->pk_len, NULL, 0, rec_size) > AGG_MAX) {
        kp_agg_output out;
        if (kp_agg_encoder_finish(e, &out)) {
          fprintf(stderr, "finish failed\n");
          exit(1);
        }
        out_bytes += out.data_len;
        g_sink += out.data[out.data_len - 1];
        aggs++;
        kp_agg_encoder_reset(e);
      }
      if (kp_agg_encoder_add(e, r->pk, r->pk_len, NULL, 0, r->data, rec_size, &hk)) {
        fprintf(stderr, "add failed\n");
        exit(1);
      }
    }
    recs += NRECS;
    user_bytes += (size_t)NRECS * rec_size;
    t1 = now_s();
  }
  /* Rates per CPU second: on a shared host wall time also counts preemption; the cpu%
   * column shows how much of the wall time the thread actually ran. */
  double dt = cpu_s() - c0;
  printf("%-30s %6.2f M rec/s %7.1f MB/s user data %7.1f MB/s out %5.0f recs/agg  cpu %3.0f%%\n",
         name, (double)recs / dt / 1e6, (double)user_bytes / dt / 1e6, (double)out_bytes / dt / 1e6,
         aggs ? (double)recs / (double)aggs : 0.0, 100.0 * dt / (t1 - t0));
  kp_agg_encoder_free(e);
  free(in);
  free(pool);
}

int main(void) {
  printf("aggregates of <= %d bytes, %d-input cycle, ~2 s per row\n", AGG_MAX, NRECS);
  run("100 B, unique keys", 100, 0, 0);
  run("100 B, 8 keys", 100, 8, 0);
  run("1 KiB, unique keys", 1024, 0, 0);
  run("1 KiB, 8 keys", 1024, 8, 0);
  run("100 B, unique keys, +md5(pk)", 100, 0, 1);
  /* Ceiling: the finish-time MD5 alone over 50 KiB. */
  {
    static uint8_t buf[AGG_MAX];
    uint8_t md[16];
    size_t n = 0;
    double t0 = now_s(), t1 = t0, c0 = cpu_s();
    while (t1 - t0 < 1.0) {
      for (int i = 0; i < 256; i++)
        kp_md5(buf, sizeof buf, md);
      n += 256;
      t1 = now_s();
    }
    g_sink += md[0];
    printf("%-30s %7.1f MB/s\n", "kp_md5 over 50 KiB (ceiling)",
           (double)n * sizeof buf / (cpu_s() - c0) / 1e6);
  }
  return 0;
}
