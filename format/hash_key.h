/* 128-bit Kinesis hash keys.
 *
 * Kept as 16 big-endian bytes so that memcmp order is numeric order, MD5 output is
 * a hash key as-is, and shard ranges can be binary-searched without bignums. */
#ifndef KP_FORMAT_HASH_KEY_H
#define KP_FORMAT_HASH_KEY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct kp_hash_key {
  uint8_t be[16];
} kp_hash_key;

/* Longest decimal form of a hash key (2^128-1 has 39 digits) plus NUL. */
#define KP_HASH_KEY_DEC_MAX 40

/* Parses a decimal hash key in 0..2^128-1: digits only, no sign, no spaces, at most
 * 39 digits (leading zeros allowed within that). Returns 0, or -1 if invalid. */
int kp_hash_key_parse(const char *s, size_t len, kp_hash_key *out);

/* Writes the decimal form and a NUL into out; returns its length. */
size_t kp_hash_key_format(const kp_hash_key *k, char out[KP_HASH_KEY_DEC_MAX]);

/* MD5 of the (UTF-8) partition key, read as a big-endian 128-bit integer. */
void kp_hash_key_of_partition_key(const void *pk, size_t len, kp_hash_key *out);

static inline int kp_hash_key_cmp(const kp_hash_key *a, const kp_hash_key *b) {
  return memcmp(a->be, b->be, 16);
}

/* One-shot MD5 (16 bytes) used by the aggregated record format; thread-safe. */
void kp_md5(const void *data, size_t len, uint8_t out[16]);

/* MD5 of the len bytes that start skip bytes into iov[0] and continue through the
 * following pieces (which must hold them). */
struct iovec;
void kp_md5_gather(const struct iovec *iov, size_t skip, size_t len, uint8_t out[16]);

#endif
