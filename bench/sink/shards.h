/* Even shard hash-key ranges exactly as AWS CreateStream makes them: shard i of N owns
 * [floor(i * 2^128 / N), floor((i + 1) * 2^128 / N) - 1], the last ends at 2^128 - 1.
 * Shared by kp-sink and kp-sink-load. Header-only, no bignum library: the 160-bit
 * dividend i * 2^128 is divided limb by limb (32-bit limbs, N < 2^32). */
#ifndef KP_BENCH_SINK_SHARDS_H
#define KP_BENCH_SINK_SHARDS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/hash_key.h"

typedef struct sink_shard {
  kp_hash_key start, end;
  char id[32];                         /* shardId-000000000000 */
  char start_dec[KP_HASH_KEY_DEC_MAX]; /* decimal forms, for ListShards */
  char end_dec[KP_HASH_KEY_DEC_MAX];
} sink_shard;

/* floor(i * 2^128 / n) as 16 big-endian bytes; requires i <= n, 0 < n < 2^32. */
static inline void sink_shard_start(uint32_t i, uint32_t n, kp_hash_key *out) {
  uint32_t limbs[5] = {i, 0, 0, 0, 0}; /* most significant first: i * 2^128 */
  uint64_t rem = 0;
  uint32_t q[5];
  for (int k = 0; k < 5; k++) {
    uint64_t cur = (rem << 32) | limbs[k];
    q[k] = (uint32_t)(cur / n);
    rem = cur % n;
  }
  /* q[0] is 0 unless i == n (2^128, out of range; callers never ask for it). */
  for (int k = 1; k < 5; k++)
    for (int b = 0; b < 4; b++)
      out->be[(k - 1) * 4 + b] = (uint8_t)(q[k] >> (24 - 8 * b));
}

/* Fills n shards (n >= 1). Returns NULL on allocation failure. */
static inline sink_shard *sink_shards_new(uint32_t n) {
  sink_shard *s = calloc(n, sizeof *s);
  if (!s)
    return NULL;
  for (uint32_t i = 0; i < n; i++) {
    sink_shard_start(i, n, &s[i].start);
    if (i + 1 < n) {
      sink_shard_start(i + 1, n, &s[i].end);
      for (int b = 15; b >= 0; b--) /* end = next start - 1 (next start > 0) */
        if (s[i].end.be[b]-- != 0)
          break;
    } else {
      memset(s[i].end.be, 0xFF, 16);
    }
    snprintf(s[i].id, sizeof s[i].id, "shardId-%012u", i);
    kp_hash_key_format(&s[i].start, s[i].start_dec);
    kp_hash_key_format(&s[i].end, s[i].end_dec);
  }
  return s;
}

/* Index of the shard owning hk: the last shard whose start <= hk (binary search). */
static inline uint32_t sink_shard_find(const sink_shard *s, uint32_t n, const kp_hash_key *hk) {
  uint32_t lo = 0, hi = n; /* answer in [lo, hi) */
  while (hi - lo > 1) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (memcmp(s[mid].start.be, hk->be, 16) <= 0)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

#endif
