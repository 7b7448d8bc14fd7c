/* A path-aware walk over one CBOR document (RFC 8949), on libcbor's streaming decoder.
 *
 * Kinesis' CBOR bodies (application/x-amz-cbor-1.1) are small fixed shapes: maps with
 * text keys, arrays of such maps, text, byte strings and integers. The walk hands every
 * item to a callback together with where it sits (the key or index of it and of each
 * enclosing container), without building a tree and without copying: strings point into
 * the input. Used by the daemon's PutRecords codec and by the benchmark sink. No I/O.
 *
 * Refused with -EBADMSG and a message: malformed CBOR, truncation, trailing bytes, map
 * keys that are not definite text strings, indefinite-length (chunked) strings, nesting
 * deeper than KP_CBOR_MAX_DEPTH. Tags are skipped (the tagged item is reported). */
#ifndef KP_FORMAT_CBOR_WALK_H
#define KP_FORMAT_CBOR_WALK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KP_CBOR_MAX_DEPTH 16

typedef enum kp_cbor_type {
  KP_CBOR_UINT,   /* u */
  KP_CBOR_NEGINT, /* u = -1 - value */
  KP_CBOR_BYTES,  /* p, len */
  KP_CBOR_TEXT,   /* p, len (not validated as UTF-8, not NUL-terminated) */
  KP_CBOR_ARRAY,  /* start of an array: u = count, or UINT64_MAX if indefinite */
  KP_CBOR_MAP,    /* start of a map: u = pairs, or UINT64_MAX if indefinite */
  KP_CBOR_END,    /* end of the array or map that started at this depth */
  KP_CBOR_OTHER,  /* bool, null, undefined, floats: reported, no value */
} kp_cbor_type;

/* Where an item sits: level[d] describes the container at depth d (0 = the document's
 * top item) as seen by its current child at depth d + 1. */
typedef struct kp_cbor_level {
  bool is_map;
  const uint8_t *key; /* maps: the current child's key (into the input); NULL in arrays */
  size_t key_len;
  size_t index; /* arrays: the child's index; maps: the pair's index */
} kp_cbor_level;

typedef struct kp_cbor_item {
  kp_cbor_type type;
  int depth; /* 0 for the document's top item */
  const uint8_t *p;
  size_t len;
  uint64_t u;
} kp_cbor_item;

/* Called for every value (not for map keys, which arrive in level[depth-1].key) and for
 * every container's end. `level` has `it->depth` valid entries. Return 0 to go on; any
 * other value stops the walk, which returns it. */
typedef int (*kp_cbor_fn)(void *ud, const kp_cbor_item *it, const kp_cbor_level *level);

/* Walks buf[0..len), which must hold exactly one CBOR item. Returns 0, the callback's
 * non-zero value, or -EBADMSG with errstr set (errstr may be NULL). */
int kp_cbor_walk(const uint8_t *buf, size_t len, kp_cbor_fn fn, void *ud, char *errstr,
                 size_t errlen);

/* True if the key of the item at depth d + 1 (level[d].key) equals the C string lit. */
bool kp_cbor_key_is(const kp_cbor_level *level, int d, const char *lit);

/* Encoding needs no helper here: libcbor's cbor_encode_*_start write item heads. */

#endif
