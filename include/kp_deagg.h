/**
 * @file kp_deagg.h
 * @brief De-aggregation of KPL aggregated Kinesis records (consumer side).
 *
 * A Kinesis record may carry many user records in the KPL aggregated format
 * (F3 89 9A C2 | protobuf AggregatedRecord | MD5 of the protobuf). This module
 * yields the user records of one Kinesis record without copying: every pointer it
 * hands out points into the caller's input, except the 16-byte hash key, which
 * points into the handle's cache.
 *
 * Usage:
 * @code
 *   kp_deagg *d = kp_deagg_new();
 *   kp_deagg_input in = {data, len, pk, pk_len, NULL, 0, seq, seq_len};
 *   if (kp_deagg_begin(d, &in) == KP_DEAGG_OK) {
 *     kp_deagg_record r;
 *     while (kp_deagg_next(d, &r) == KP_DEAGG_OK)
 *       use(&r);
 *   } else {
 *     fprintf(stderr, "%s\n", kp_deagg_errstr(d));
 *   }
 *   kp_deagg_destroy(d);
 * @endcode
 *
 * The whole aggregate is checked in kp_deagg_begin() before the first record is
 * yielded, so a corrupt aggregate never yields a partial set of user records.
 *
 * Threading: a handle is not thread-safe; use one per thread. Handles are reusable
 * and keep their scratch memory, so steady-state de-aggregation does not allocate.
 */
#ifndef KP_DEAGG_H
#define KP_DEAGG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief Result codes. 0 is success, KP_DEAGG_END ends an iteration, caller
 *        errors are -1..-9, corrupt-aggregate errors are -10 and below
 *        (see kp_deagg_err_is_corrupt()). Values are append-only.
 */
typedef enum kp_deagg_err {
  KP_DEAGG_OK = 0,                  /**< success */
  KP_DEAGG_END = 1,                 /**< no more user records */
  KP_DEAGG_ERR_INVALID_ARG = -1,    /**< NULL where not allowed, start > end, bad outer EHK */
  KP_DEAGG_ERR_NOMEM = -2,          /**< allocation failed */
  KP_DEAGG_ERR_BAD_MD5 = -10,       /**< MD5 trailer does not match the protobuf */
  KP_DEAGG_ERR_TRUNCATED = -11,     /**< a varint or a length runs past the end */
  KP_DEAGG_ERR_BAD_VARINT = -12,    /**< varint longer than 10 bytes or over 64 bits */
  KP_DEAGG_ERR_BAD_WIRE_TYPE = -13, /**< wire type 6/7, stray end-group, or wrong for field */
  KP_DEAGG_ERR_BAD_TAG = -14,       /**< field number 0 or above 2^29-1 */
  KP_DEAGG_ERR_MISSING_FIELD = -15, /**< a proto2 required field is absent */
  KP_DEAGG_ERR_INDEX_RANGE = -16,   /**< key-table index past the table's end */
  KP_DEAGG_ERR_BAD_EHK = -17,       /**< EHK table entry not a decimal in 0..2^128-1 */
} kp_deagg_err;

/** @brief Opaque de-aggregator: options, the current input, scratch tables. */
typedef struct kp_deagg kp_deagg;

/**
 * @brief One Kinesis record as returned by GetRecords. All buffers are borrowed:
 *        they must stay valid and unchanged until the iteration over this record
 *        ends (the next kp_deagg_begin() or kp_deagg_destroy()).
 */
typedef struct kp_deagg_input {
  const void *data; /**< record data (may be NULL only if data_len is 0) */
  size_t data_len;
  const char *partition_key; /**< UTF-8 partition key; NULL means "" */
  size_t partition_key_len;
  const char *explicit_hash_key; /**< decimal 0..2^128-1, or NULL if the record has none */
  size_t explicit_hash_key_len;
  const char *sequence_number; /**< copied into each yielded record; NULL means "" */
  size_t sequence_number_len;
} kp_deagg_input;

/**
 * @brief One user record. Every pointer is borrowed: data, keys and the sequence
 *        number point into the kp_deagg_input buffers; hash_key points into the
 *        handle and is valid until the next kp_deagg_begin().
 */
typedef struct kp_deagg_record {
  const uint8_t *partition_key; /**< not NUL-terminated */
  size_t partition_key_len;
  const uint8_t *explicit_hash_key; /**< decimal text, NULL if the user record has none */
  size_t explicit_hash_key_len;
  const uint8_t *hash_key; /**< 16 big-endian bytes (EHK, else MD5(partition key));
                              NULL if hash keys are disabled and no range is set */
  const uint8_t *data;
  size_t data_len;
  const char *sequence_number; /**< the Kinesis record's, not NUL-terminated */
  size_t sequence_number_len;
  uint64_t sub_sequence_number; /**< index within the aggregate; 0 when not aggregated */
  bool aggregated;              /**< true if it came out of a valid aggregate */
} kp_deagg_record;

/**
 * @brief Creates a de-aggregator (lenient, hash keys on, no range filter).
 * @returns the handle, or NULL if out of memory. Free with kp_deagg_destroy().
 */
kp_deagg *kp_deagg_new(void);

/** @brief Frees the handle and its scratch memory; NULL is a no-op. */
void kp_deagg_destroy(kp_deagg *d);

/**
 * @brief Strict mode reports a corrupt aggregate as an error from kp_deagg_begin();
 *        lenient mode (the default, like the KCL) passes the whole Kinesis record
 *        through unchanged as one non-aggregated user record.
 */
void kp_deagg_set_strict(kp_deagg *d, bool strict);

/**
 * @brief Turns per-record hash keys on (default) or off. Off saves one MD5 per
 *        distinct partition key; kp_deagg_record.hash_key is then NULL, unless a
 *        hash range is set (the filter needs the keys).
 */
void kp_deagg_set_hash_keys(kp_deagg *d, bool on);

/**
 * @brief Keeps only user records whose hash key lies in [start, end] (inclusive,
 *        16 big-endian bytes each). Records outside are skipped one by one, never
 *        the whole aggregate. Both NULL clears the filter.
 * @returns KP_DEAGG_OK, or KP_DEAGG_ERR_INVALID_ARG if start > end or only one is NULL.
 */
kp_deagg_err kp_deagg_set_hash_range(kp_deagg *d, const uint8_t start[16], const uint8_t end[16]);

/**
 * @brief Verifies the MD5 trailers of n Kinesis records at once, many side by side
 *        (up to 16 AVX-512 lanes: several times cheaper than one by one), as a
 *        consumer would for a GetRecords batch. ok[i] is true for each aggregate whose
 *        MD5 matches, false for the rest (not aggregates; or a mismatch, which
 *        kp_deagg_begin() then reports). Only the data of the inputs is read.
 */
void kp_deagg_check_md5_many(const kp_deagg_input *in, size_t n, bool *ok);

/**
 * @brief Starts iterating over the user records of one Kinesis record. Checks the
 *        whole aggregate (MD5, protobuf structure, required fields, table indices,
 *        EHK text) before returning.
 * @param in borrowed until the next kp_deagg_begin() / kp_deagg_destroy().
 * @returns KP_DEAGG_OK; in strict mode a corrupt-aggregate code with a message in
 *          kp_deagg_errstr(); KP_DEAGG_ERR_INVALID_ARG for a bad input (e.g. an
 *          outer explicit hash key that is not a valid decimal); KP_DEAGG_ERR_NOMEM.
 *          After an error kp_deagg_next() returns KP_DEAGG_END.
 */
kp_deagg_err kp_deagg_begin(kp_deagg *d, const kp_deagg_input *in);

/**
 * @brief kp_deagg_begin() for a record kp_deagg_check_md5_many() found good: the
 *        same checks but the MD5 (passing a record it did not find good is a bug:
 *        corruption in the protobuf bytes would then go unnoticed).
 */
kp_deagg_err kp_deagg_begin_checked(kp_deagg *d, const kp_deagg_input *in);

/**
 * @brief Yields the next user record that passes the hash-range filter.
 * @returns KP_DEAGG_OK with *out filled, or KP_DEAGG_END when there are no more.
 */
kp_deagg_err kp_deagg_next(kp_deagg *d, kp_deagg_record *out);

/**
 * @brief Number of user records in the current Kinesis record before filtering
 *        (1 for a pass-through, 0 before any successful kp_deagg_begin()).
 */
size_t kp_deagg_count(const kp_deagg *d);

/**
 * @brief The corruption found by the last kp_deagg_begin() (KP_DEAGG_OK if none).
 *        In lenient mode this tells why a record that looked aggregated was passed
 *        through; kp_deagg_errstr() has the details.
 */
kp_deagg_err kp_deagg_corruption(const kp_deagg *d);

/**
 * @brief Message for the last error or corruption of this handle, e.g.
 *        "record 3: partition_key_index 7 out of range (table has 2)"; "" if none.
 *        Owned by the handle, valid until the next kp_deagg_begin().
 */
const char *kp_deagg_errstr(const kp_deagg *d);

/** @brief Static description of a code, e.g. "MD5 mismatch"; never NULL. */
const char *kp_deagg_err2str(kp_deagg_err err);

/** @brief True for the codes that mean "corrupt aggregate" (-10 and below). */
static inline bool kp_deagg_err_is_corrupt(kp_deagg_err err) {
  return err <= -10;
}

#ifdef __cplusplus
}
#endif

#endif
