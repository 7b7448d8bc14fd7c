#include "format/md5_many.h"

#include <stdatomic.h>
#include <string.h>

#include "format/hash_key.h"

void kp_md5_many_scalar(const kp_md5_job *jobs, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (jobs[i].iov)
      kp_md5_gather(jobs[i].iov, jobs[i].skip, jobs[i].len, jobs[i].out);
    else
      kp_md5(jobs[i].data, jobs[i].len, jobs[i].out);
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

enum { LANES = 16, BLOCK = 64 };

/* A lane's message: its whole 64-byte blocks are read in place, the rest and the
 * padding (0x80, zeros, the bit length) come from `tail`, one or two blocks. A gathered
 * message is read through a cursor (piece pi, offset po); a block that straddles pieces
 * is copied into `stage` first. */
typedef struct lane {
  const kp_md5_job *job; /* NULL: idle */
  size_t block, full, total;
  size_t pi, po;
  uint8_t stage[BLOCK];
  uint8_t tail[2 * BLOCK];
} lane;

/* Copies n bytes from the cursor (*pi, *po) of iov into dst (NULL: only moves), leaving
 * the cursor after them. The pieces must hold them. */
static void gather(const struct iovec *iov, size_t *pi, size_t *po, uint8_t *dst, size_t n) {
  while (n) {
    size_t k = iov[*pi].iov_len - *po;
    if (k > n)
      k = n;
    if (dst) {
      memcpy(dst, (const uint8_t *)iov[*pi].iov_base + *po, k);
      dst += k;
    }
    n -= k;
    *po += k;
    if (*po == iov[*pi].iov_len) {
      ++*pi;
      *po = 0;
    }
  }
}

static const uint32_t md5_iv[4] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u};

static void lane_start(lane *l, const kp_md5_job *job, uint32_t st[4][LANES], int i) {
  size_t rem = job->len % BLOCK;
  l->job = job;
  l->block = 0;
  l->full = job->len / BLOCK;
  size_t tl = rem + 1 + 8 <= BLOCK ? BLOCK : 2 * BLOCK;
  if (job->iov) {
    l->pi = 0;
    l->po = 0;
    gather(job->iov, &l->pi, &l->po, NULL, job->skip);
    size_t pi = l->pi, po = l->po;
    gather(job->iov, &pi, &po, NULL, BLOCK * l->full);
    gather(job->iov, &pi, &po, l->tail, rem);
  } else if (rem) {
    memcpy(l->tail, job->data + BLOCK * l->full, rem);
  }
  l->tail[rem] = 0x80;
  memset(l->tail + rem + 1, 0, tl - rem - 1 - 8);
  uint64_t bits = (uint64_t)job->len * 8;
  for (int k = 0; k < 8; k++)
    l->tail[tl - 8 + k] = (uint8_t)(bits >> (8 * k));
  l->total = l->full + tl / BLOCK;
  for (int k = 0; k < 4; k++)
    st[k][i] = md5_iv[k];
}

/* The lane's next block; called once per block. */
static const uint8_t *lane_block(lane *l) {
  if (l->block >= l->full)
    return l->tail + BLOCK * (l->block - l->full);
  if (!l->job->iov)
    return l->job->data + BLOCK * l->block;
  const struct iovec *v = &l->job->iov[l->pi];
  if (v->iov_len - l->po >= BLOCK) { /* in place */
    const uint8_t *at = (const uint8_t *)v->iov_base + l->po;
    if ((l->po += BLOCK) == v->iov_len) {
      l->pi++;
      l->po = 0;
    }
    return at;
  }
  gather(l->job->iov, &l->pi, &l->po, l->stage, BLOCK);
  return l->stage;
}

/* a = b + rotl(a + f(b, c, d) + w + k, s), f given as a ternary-logic truth table. */
#define STEP(f, a, b, c, d, w, k, s)                                                               \
  a = _mm512_add_epi32(a, _mm512_add_epi32(_mm512_ternarylogic_epi32(b, c, d, f),                  \
                                           _mm512_add_epi32(w, _mm512_set1_epi32((int)(k)))));     \
  a = _mm512_add_epi32(_mm512_rol_epi32(a, s), b)

/* One block in each lane: at[i] is lane i's block; lanes outside `active` read a block
 * of zeros and keep their state. */
__attribute__((target("avx512f"))) static void
blocks16(uint32_t st[4][LANES], const uint8_t *const at[LANES], __mmask16 active) {
  /* The message words, transposed: w[g] holds word g of every lane's block. */
  __m512i r[16], t[16], w[16];
  for (int i = 0; i < 16; i++)
    r[i] = _mm512_loadu_si512((const void *)at[i]);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) { /* u[i + m]: word 4j + m of rows i..i+3 in 128-bit lane j */
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int m = 0; m < 4; m++) {
    __m512i xl = _mm512_shuffle_i32x4(r[m], r[4 + m], 0x44);
    __m512i xh = _mm512_shuffle_i32x4(r[m], r[4 + m], 0xEE);
    __m512i yl = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0x44);
    __m512i yh = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0xEE);
    w[m] = _mm512_shuffle_i32x4(xl, yl, 0x88);
    w[4 + m] = _mm512_shuffle_i32x4(xl, yl, 0xDD);
    w[8 + m] = _mm512_shuffle_i32x4(xh, yh, 0x88);
    w[12 + m] = _mm512_shuffle_i32x4(xh, yh, 0xDD);
  }
  __m512i a0 = _mm512_loadu_si512(st[0]), b0 = _mm512_loadu_si512(st[1]);
  __m512i c0 = _mm512_loadu_si512(st[2]), d0 = _mm512_loadu_si512(st[3]);
  __m512i a = a0, b = b0, c = c0, d = d0;
  /* round 1 */
  STEP(0xCA, a, b, c, d, w[0], 0xd76aa478u, 7);
  STEP(0xCA, d, a, b, c, w[1], 0xe8c7b756u, 12);
  STEP(0xCA, c, d, a, b, w[2], 0x242070dbu, 17);
  STEP(0xCA, b, c, d, a, w[3], 0xc1bdceeeu, 22);
  STEP(0xCA, a, b, c, d, w[4], 0xf57c0fafu, 7);
  STEP(0xCA, d, a, b, c, w[5], 0x4787c62au, 12);
  STEP(0xCA, c, d, a, b, w[6], 0xa8304613u, 17);
  STEP(0xCA, b, c, d, a, w[7], 0xfd469501u, 22);
  STEP(0xCA, a, b, c, d, w[8], 0x698098d8u, 7);
  STEP(0xCA, d, a, b, c, w[9], 0x8b44f7afu, 12);
  STEP(0xCA, c, d, a, b, w[10], 0xffff5bb1u, 17);
  STEP(0xCA, b, c, d, a, w[11], 0x895cd7beu, 22);
  STEP(0xCA, a, b, c, d, w[12], 0x6b901122u, 7);
  STEP(0xCA, d, a, b, c, w[13], 0xfd987193u, 12);
  STEP(0xCA, c, d, a, b, w[14], 0xa679438eu, 17);
  STEP(0xCA, b, c, d, a, w[15], 0x49b40821u, 22);
  /* round 2 */
  STEP(0xE4, a, b, c, d, w[1], 0xf61e2562u, 5);
  STEP(0xE4, d, a, b, c, w[6], 0xc040b340u, 9);
  STEP(0xE4, c, d, a, b, w[11], 0x265e5a51u, 14);
  STEP(0xE4, b, c, d, a, w[0], 0xe9b6c7aau, 20);
  STEP(0xE4, a, b, c, d, w[5], 0xd62f105du, 5);
  STEP(0xE4, d, a, b, c, w[10], 0x02441453u, 9);
  STEP(0xE4, c, d, a, b, w[15], 0xd8a1e681u, 14);
  STEP(0xE4, b, c, d, a, w[4], 0xe7d3fbc8u, 20);
  STEP(0xE4, a, b, c, d, w[9], 0x21e1cde6u, 5);
  STEP(0xE4, d, a, b, c, w[14], 0xc33707d6u, 9);
  STEP(0xE4, c, d, a, b, w[3], 0xf4d50d87u, 14);
  STEP(0xE4, b, c, d, a, w[8], 0x455a14edu, 20);
  STEP(0xE4, a, b, c, d, w[13], 0xa9e3e905u, 5);
  STEP(0xE4, d, a, b, c, w[2], 0xfcefa3f8u, 9);
  STEP(0xE4, c, d, a, b, w[7], 0x676f02d9u, 14);
  STEP(0xE4, b, c, d, a, w[12], 0x8d2a4c8au, 20);
  /* round 3 */
  STEP(0x96, a, b, c, d, w[5], 0xfffa3942u, 4);
  STEP(0x96, d, a, b, c, w[8], 0x8771f681u, 11);
  STEP(0x96, c, d, a, b, w[11], 0x6d9d6122u, 16);
  STEP(0x96, b, c, d, a, w[14], 0xfde5380cu, 23);
  STEP(0x96, a, b, c, d, w[1], 0xa4beea44u, 4);
  STEP(0x96, d, a, b, c, w[4], 0x4bdecfa9u, 11);
  STEP(0x96, c, d, a, b, w[7], 0xf6bb4b60u, 16);
  STEP(0x96, b, c, d, a, w[10], 0xbebfbc70u, 23);
  STEP(0x96, a, b, c, d, w[13], 0x289b7ec6u, 4);
  STEP(0x96, d, a, b, c, w[0], 0xeaa127fau, 11);
  STEP(0x96, c, d, a, b, w[3], 0xd4ef3085u, 16);
  STEP(0x96, b, c, d, a, w[6], 0x04881d05u, 23);
  STEP(0x96, a, b, c, d, w[9], 0xd9d4d039u, 4);
  STEP(0x96, d, a, b, c, w[12], 0xe6db99e5u, 11);
  STEP(0x96, c, d, a, b, w[15], 0x1fa27cf8u, 16);
  STEP(0x96, b, c, d, a, w[2], 0xc4ac5665u, 23);
  /* round 4 */
  STEP(0x39, a, b, c, d, w[0], 0xf4292244u, 6);
  STEP(0x39, d, a, b, c, w[7], 0x432aff97u, 10);
  STEP(0x39, c, d, a, b, w[14], 0xab9423a7u, 15);
  STEP(0x39, b, c, d, a, w[5], 0xfc93a039u, 21);
  STEP(0x39, a, b, c, d, w[12], 0x655b59c3u, 6);
  STEP(0x39, d, a, b, c, w[3], 0x8f0ccc92u, 10);
  STEP(0x39, c, d, a, b, w[10], 0xffeff47du, 15);
  STEP(0x39, b, c, d, a, w[1], 0x85845dd1u, 21);
  STEP(0x39, a, b, c, d, w[8], 0x6fa87e4fu, 6);
  STEP(0x39, d, a, b, c, w[15], 0xfe2ce6e0u, 10);
  STEP(0x39, c, d, a, b, w[6], 0xa3014314u, 15);
  STEP(0x39, b, c, d, a, w[13], 0x4e0811a1u, 21);
  STEP(0x39, a, b, c, d, w[4], 0xf7537e82u, 6);
  STEP(0x39, d, a, b, c, w[11], 0xbd3af235u, 10);
  STEP(0x39, c, d, a, b, w[2], 0x2ad7d2bbu, 15);
  STEP(0x39, b, c, d, a, w[9], 0xeb86d391u, 21);
  _mm512_mask_storeu_epi32(st[0], active, _mm512_add_epi32(a, a0));
  _mm512_mask_storeu_epi32(st[1], active, _mm512_add_epi32(b, b0));
  _mm512_mask_storeu_epi32(st[2], active, _mm512_add_epi32(c, c0));
  _mm512_mask_storeu_epi32(st[3], active, _mm512_add_epi32(d, d0));
}

void kp_md5_many_lanes(const kp_md5_job *jobs, size_t n) {
  static const uint8_t zeros[BLOCK];
  lane l[LANES];
  uint32_t st[4][LANES];
  const uint8_t *at[LANES];
  size_t next = 0;
  for (int i = 0; i < LANES; i++) {
    l[i].job = NULL;
    if (next < n)
      lane_start(&l[i], &jobs[next++], st, i);
  }
  for (;;) {
    __mmask16 active = 0;
    for (int i = 0; i < LANES; i++) {
      if (l[i].job) {
        at[i] = lane_block(&l[i]);
        active |= (__mmask16)(1u << i);
      } else {
        at[i] = zeros;
      }
    }
    if (!active)
      return;
    blocks16(st, at, active);
    for (int i = 0; i < LANES; i++) {
      if (!l[i].job || ++l[i].block < l[i].total)
        continue;
      for (int k = 0; k < 4; k++)
        for (int j = 0; j < 4; j++)
          l[i].job->out[4 * k + j] = (uint8_t)(st[k][i] >> (8 * j));
      l[i].job = NULL;
      if (next < n)
        lane_start(&l[i], &jobs[next++], st, i);
    }
  }
}

bool kp_md5_many_vectorised(void) {
  static _Atomic int have = -1; /* any thread may ask first: each finds the same */
  int h = atomic_load_explicit(&have, memory_order_relaxed);
  if (h < 0) {
    __builtin_cpu_init();
    h = __builtin_cpu_supports("avx512f") ? 1 : 0;
    atomic_store_explicit(&have, h, memory_order_relaxed);
  }
  return h == 1;
}
#else
void kp_md5_many_lanes(const kp_md5_job *jobs, size_t n) {
  kp_md5_many_scalar(jobs, n);
}

bool kp_md5_many_vectorised(void) {
  return false;
}
#endif

void kp_md5_many(const kp_md5_job *jobs, size_t n) {
  if (n >= 2 && kp_md5_many_vectorised())
    kp_md5_many_lanes(jobs, n);
  else
    kp_md5_many_scalar(jobs, n);
}
