/* Fast codecs for the messages that carry every record: Message{PutRecord} (client to
 * daemon), Message{PutRecordResult} and our negotiated Message{PutRecordResultBatch}
 * (daemon to client).
 *
 * protobuf-c's generic unpack allocates a struct per message and per string and copies
 * the data; at a million records a second that was a fifth of both processes' CPU.
 * These walk the wire bytes directly (format/pbwire.h): decoding is zero-copy (views
 * into the frame, valid while it is), encoding writes straight into a kp_buf.
 *
 * Same semantics as protobuf-c by construction: the decoders accept only the canonical
 * shape (each known field at most once, no unknown fields, the one expected oneof) and
 * answer KP_FAST_FALLBACK for anything else, so the caller uses protobuf-c for it. The
 * encoders produce what protobuf-c's pack produces, byte for byte (tested, and checked
 * against protobuf-c by a differential fuzzer). Pure functions, no I/O. */
#ifndef KP_IPC_FASTPATH_H
#define KP_IPC_FASTPATH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

typedef enum kp_fast_rc {
  KP_FAST_OK = 0,
  KP_FAST_FALLBACK = 1,  /* valid or not, not the canonical shape: use protobuf-c */
  KP_FAST_MALFORMED = -1 /* cannot be a Message (truncated, bad varint, wire type) */
} kp_fast_rc;

/* A byte range inside the decoded frame (not NUL-terminated). */
typedef struct kp_fast_str {
  const char *p;
  size_t len;
} kp_fast_str;

/* A PutRecord, or our negotiated PutRecordRef, whose data is in the shared data file
 * (by_ref: data.p is NULL and data.len the data's length, at data_offset). */
typedef struct kp_fast_put_record {
  uint64_t id;
  kp_fast_str stream, partition_key, data;
  kp_fast_str explicit_hash_key; /* p NULL when absent */
  bool by_ref;
  uint64_t data_offset; /* by_ref only */
} kp_fast_put_record;

/* Message{id, put_record{stream_name, partition_key, [explicit_hash_key], data}} or
 * Message{id, put_record_ref{stream_name, partition_key, [explicit_hash_key],
 * data_offset, data_length}}, in any field order, with every required field present. */
kp_fast_rc kp_fast_decode_put_record(const uint8_t *buf, size_t len, kp_fast_put_record *out);

/* Bytes of the encoding of Message{id, put_record | put_record_ref} of r (by r->by_ref). */
size_t kp_fast_put_record_size(const kp_fast_put_record *r);

/* Writes that encoding at p, which has kp_fast_put_record_size(r) bytes of room;
 * returns p past it. */
uint8_t *kp_fast_write_put_record(uint8_t *p, const kp_fast_put_record *r);

/* Appends the protobuf of Message{id, put_record{...}} (no frame header). ehk.p NULL
 * for none. Returns 0, or -1 on allocation failure (out unchanged in length). */
int kp_fast_encode_put_record(kp_buf *out, uint64_t id, kp_fast_str stream, kp_fast_str pk,
                              kp_fast_str ehk, kp_fast_str data);

typedef struct kp_fast_attempt {
  uint32_t delay_ms, duration_ms;
  bool success;
  kp_fast_str error_code, error_message; /* p NULL when absent */
} kp_fast_attempt;

typedef struct kp_fast_result {
  uint64_t id, source_id;
  bool success;
  kp_fast_str shard_id, sequence_number; /* p NULL when absent */
  size_t n_attempts;
  /* Attempts are decoded on demand: raw points at the first Attempt's field. */
  const uint8_t *attempts_at, *attempts_end;
} kp_fast_result;

/* Message{id, source_id, put_record_result{attempts..., success, [shard_id],
 * [sequence_number]}}. */
kp_fast_rc kp_fast_decode_result(const uint8_t *buf, size_t len, kp_fast_result *out);

/* Decodes attempt i (0-based, < n_attempts) of a result decoded above. */
kp_fast_rc kp_fast_result_attempt(const kp_fast_result *r, size_t i, kp_fast_attempt *out);

/* Appends the protobuf of Message{id, source_id, put_record_result{...}}. */
int kp_fast_encode_result(kp_buf *out, uint64_t id, uint64_t source_id, bool success,
                          kp_fast_str shard_id, kp_fast_str sequence_number,
                          const kp_fast_attempt *attempts, size_t n_attempts);

/* Message{id, put_record_result_batch{shard_id, sequence_number, duration, packed
 * source_ids, packed delays}}: the views and the packed runs, validated (as many ids as
 * delays, every delay < 2^32). Read the records with kp_fast_batch_next. */
typedef struct kp_fast_result_batch {
  uint64_t id;
  kp_fast_str shard_id, sequence_number;
  uint32_t duration_ms;
  size_t n;
  const uint8_t *ids_at, *ids_end, *delays_at, *delays_end; /* cursors */
} kp_fast_result_batch;

kp_fast_rc kp_fast_decode_result_batch(const uint8_t *buf, size_t len, kp_fast_result_batch *out);

/* The next record's source id and delay, advancing the cursors; false after the last. */
bool kp_fast_batch_next(kp_fast_result_batch *b, uint64_t *source_id, uint32_t *delay_ms);

/* Appends the protobuf of Message{id, put_record_result_batch{...}} of n records (n may
 * be 0: protobuf-c then leaves both packed fields out, and so does this). */
int kp_fast_encode_result_batch(kp_buf *out, uint64_t id, kp_fast_str shard_id,
                                kp_fast_str sequence_number, uint32_t duration_ms,
                                const uint64_t *source_ids, const uint32_t *delays, size_t n);

#endif
