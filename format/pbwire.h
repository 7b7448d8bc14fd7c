/* Protobuf wire primitives (varints, tags) shared by the streaming codecs.
 * Header-only and I/O-free: the aggregation encoder and the de-aggregator walk
 * protobuf bytes directly so they can size records exactly and avoid copies,
 * which protobuf-c's whole-message pack/unpack cannot do. */
#ifndef KP_FORMAT_PBWIRE_H
#define KP_FORMAT_PBWIRE_H

#include <stddef.h>
#include <stdint.h>

enum { PB_WT_VARINT = 0, PB_WT_I64 = 1, PB_WT_LEN = 2, PB_WT_I32 = 5 };

/* Bytes needed to encode v as a varint (1..10). */
static inline size_t pb_varint_size(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

/* Writes v at p; returns bytes written. Caller guarantees room (<= 10 bytes). */
static inline size_t pb_put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

static inline uint64_t pb_tag(uint32_t field, unsigned wire_type) {
  return ((uint64_t)field << 3) | wire_type;
}

/* Size of a length-delimited field (tag + length varint + payload). */
static inline size_t pb_len_field_size(uint32_t field, size_t len) {
  return pb_varint_size(pb_tag(field, PB_WT_LEN)) + pb_varint_size(len) + len;
}

/* Reads a varint from [*p, end). Returns 0 and advances *p, or -1 if truncated or
 * longer than 10 bytes / overflowing 64 bits. */
static inline int pb_get_varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
  const uint8_t *q = *p;
  uint64_t v = 0;
  for (unsigned shift = 0; shift < 64; shift += 7) {
    if (q >= end)
      return -1;
    uint8_t b = *q++;
    if (shift == 63 && b > 1)
      return -1;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      *p = q;
      return 0;
    }
  }
  return -1;
}

#endif
