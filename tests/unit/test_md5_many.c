// KP_TEST_LIBS: kp_format
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/evp.h>

#include "format/md5_many.h"

/* The reference: OpenSSL's EVP MD5, not kp_md5 (which the scalar path uses). */
static void ref_md5(const uint8_t *p, size_t n, uint8_t out[16]) {
  unsigned int len = 16;
  assert_int_equal(EVP_Digest(p, n, out, &len, EVP_md5(), NULL), 1);
  assert_int_equal(len, 16);
}

enum { MAXN = 40, MAXLEN = 70000 };

static uint8_t *pattern(void) {
  uint8_t *b = malloc(MAXLEN + 64);
  assert_non_null(b);
  uint32_t x = 12345;
  for (size_t i = 0; i < MAXLEN + 64; i++) {
    x = x * 1103515245u + 12345u;
    b[i] = (uint8_t)(x >> 16);
  }
  return b;
}

/* n jobs of the given lengths at distinct offsets of buf, run through fn, each checked
 * against the reference. */
static void check_jobs(void (*fn)(const kp_md5_job *, size_t), const uint8_t *buf,
                       const size_t *lens, size_t n) {
  kp_md5_job jobs[MAXN] = {{0}};
  uint8_t out[MAXN][16], want[MAXN][16];
  for (size_t i = 0; i < n; i++) {
    const uint8_t *at = buf + (i * 7) % 64; /* unaligned, and each lane its own bytes */
    jobs[i] = (kp_md5_job){.data = at, .len = lens[i], .out = out[i]};
    memset(out[i], 0xAA, 16);
    ref_md5(at, lens[i], want[i]);
  }
  fn(jobs, n);
  for (size_t i = 0; i < n; i++)
    assert_memory_equal(out[i], want[i], 16);
}

static void run_lengths(void (*fn)(const kp_md5_job *, size_t)) {
  uint8_t *buf = pattern();
  size_t lens[MAXN];
  /* Every length around the padding boundaries (55/56/64 bytes), 16 lanes at once. */
  for (size_t base = 0; base <= 200; base += 16) {
    for (size_t i = 0; i < 16; i++)
      lens[i] = base + i;
    check_jobs(fn, buf, lens, 16);
  }
  /* More jobs than lanes, of very different lengths: lanes finish apart and take the
   * next job while the others go on. */
  uint32_t x = 7;
  for (int round = 0; round < 30; round++) {
    size_t n = 1 + (size_t)round % MAXN;
    for (size_t i = 0; i < n; i++) {
      x = x * 1103515245u + 12345u;
      lens[i] = round % 3 == 0 ? (x >> 8) % 130 : (x >> 8) % MAXLEN;
    }
    check_jobs(fn, buf, lens, n);
  }
  check_jobs(fn, buf, (size_t[]){0}, 1);
  check_jobs(fn, buf, lens, 0); /* nothing: nothing written, nothing read */
  free(buf);
}

static void lanes_match_openssl(void **state) {
  (void)state;
  if (!kp_md5_many_vectorised())
    skip(); /* this CPU has no AVX-512F: kp_md5_many never takes the lanes here */
  run_lengths(kp_md5_many_lanes);
}

static void dispatcher_and_scalar_match_openssl(void **state) {
  (void)state;
  run_lengths(kp_md5_many);
  run_lengths(kp_md5_many_scalar);
}

/* A lane left idle must not disturb the others: 17 jobs leave 15 lanes idle for the
 * last one, whose length differs from every other. */
static void an_odd_job_out_is_right(void **state) {
  (void)state;
  uint8_t *buf = pattern();
  size_t lens[17];
  for (size_t i = 0; i < 16; i++)
    lens[i] = 64;
  lens[16] = 5000;
  check_jobs(kp_md5_many, buf, lens, 17);
  free(buf);
}

/* Gathered jobs: each message cut into pieces of random sizes (empty ones, pieces of a
 * few bytes, pieces longer than a block, cuts on and off block boundaries), starting
 * `skip` bytes into its first piece, and followed by bytes that are not part of it. */
static void run_gathered(void (*fn)(const kp_md5_job *, size_t)) {
  uint8_t *buf = pattern();
  enum { MAXP = 400 };
  static struct iovec iov[MAXN][MAXP];
  kp_md5_job jobs[MAXN];
  uint8_t out[MAXN][16], want[MAXN][16];
  uint32_t x = 99;
  for (int round = 0; round < 60; round++) {
    size_t n = 1 + (size_t)round % MAXN;
    for (size_t i = 0; i < n; i++) {
      x = x * 1103515245u + 12345u;
      size_t len = round % 4 == 0 ? (x >> 8) % 200 : (x >> 8) % 20000;
      size_t skip = (x >> 4) % 9, at = (i * 13) % 64, total = skip + len + 16;
      const uint8_t *base = buf + at;
      size_t k = 0, off = 0;
      while (off < total && k < MAXP - 1) {
        x = x * 1103515245u + 12345u;
        size_t r = (x >> 8) % 7, piece = r == 0  ? 0
                                         : r < 3 ? 1 + (x >> 12) % 9
                                         : r < 5 ? 64
                                                 : 1 + (x >> 12) % 3000;
        if (piece > total - off)
          piece = total - off;
        iov[i][k++] = (struct iovec){(void *)(base + off), piece};
        off += piece;
      }
      if (off < total)
        iov[i][k++] = (struct iovec){(void *)(base + off), total - off};
      jobs[i] = (kp_md5_job){.len = len, .out = out[i], .iov = iov[i], .skip = skip};
      memset(out[i], 0xAA, 16);
      ref_md5(base + skip, len, want[i]);
    }
    fn(jobs, n);
    for (size_t i = 0; i < n; i++)
      assert_memory_equal(out[i], want[i], 16);
  }
  free(buf);
}

static void gathered_jobs_match_openssl(void **state) {
  (void)state;
  run_gathered(kp_md5_many);
  run_gathered(kp_md5_many_scalar);
  if (kp_md5_many_vectorised())
    run_gathered(kp_md5_many_lanes);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(lanes_match_openssl),
      cmocka_unit_test(dispatcher_and_scalar_match_openssl),
      cmocka_unit_test(an_odd_job_out_is_right),
      cmocka_unit_test(gathered_jobs_match_openssl),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
