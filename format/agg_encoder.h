/* Streaming encoder for KPL aggregated records (see docs/design.md, "Formats").
 *
 * User records are appended one at a time; the encoder always knows the exact size of
 * the Kinesis record it would emit, before and after each add, so the aggregator can
 * respect AggregationMaxSize and the 1 MiB record limit without trial encoding.
 *
 * Wire form for two or more records: F3 89 9A C2 | AggregatedRecord | MD5(AggregatedRecord).
 * A single record is emitted raw (its own data, partition key and hash key), as the KPL
 * does. Not thread-safe; one encoder per aggregate in progress. */
#ifndef KP_FORMAT_AGG_ENCODER_H
#define KP_FORMAT_AGG_ENCODER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "format/hash_key.h"
#include "format/md5_many.h"

#define KP_AGG_MAGIC_LEN 4 /* F3 89 9A C2 */
extern const uint8_t kp_agg_magic[4];

/* Bytes an aggregate adds around its protobuf: magic + MD5. */
#define KP_AGG_OVERHEAD (KP_AGG_MAGIC_LEN + 16)

typedef struct kp_agg_encoder kp_agg_encoder;

/* Returns a new empty encoder, or NULL on allocation failure. */
kp_agg_encoder *kp_agg_encoder_new(void);
void kp_agg_encoder_free(kp_agg_encoder *e);

/* Empties the encoder but keeps its buffers and key tables' capacity. */
void kp_agg_encoder_reset(kp_agg_encoder *e);

/* Number of user records added since creation or the last reset. */
size_t kp_agg_encoder_count(const kp_agg_encoder *e);

/* Exact size of the Kinesis record's data blob as it stands: 0 if empty, the raw data
 * length if one record, 4 + protobuf + 16 otherwise. */
size_t kp_agg_encoder_size(const kp_agg_encoder *e);

/* Exact data size the Kinesis record would have if this user record were added. O(1)
 * expected (one hash lookup per key). ehk NULL = no explicit hash key. */
size_t kp_agg_encoder_size_with(const kp_agg_encoder *e, const char *pk, size_t pk_len,
                                const char *ehk, size_t ehk_len, size_t data_len);

/* Outer partition key length the record would have if a record with a pk_len-byte
 * partition key were added (pk_len alone, 1 for "a" once there are >= 2 records). */
size_t kp_agg_encoder_outer_pk_len_with(const kp_agg_encoder *e, size_t pk_len);

/* Adds a user record, copying pk, ehk and data. hash_key is the record's effective hash
 * key (EHK or MD5(pk)), computed by the caller; the first record's becomes the outer
 * ExplicitHashKey, so it may be NULL for every later one. Returns 0, or -1 on allocation
 * failure or a NULL hash_key for the first record (encoder unchanged). */
int kp_agg_encoder_add(kp_agg_encoder *e, const char *pk, size_t pk_len, const char *ehk,
                       size_t ehk_len, const void *data, size_t data_len,
                       const kp_hash_key *hash_key);

/* The same, but the data is not copied: the encoder keeps the pointer, and data must
 * stay unchanged for as long as any output of this aggregate is read (for the daemon:
 * records in the shared data file, whose slot is freed only when their result is
 * out). Sizes and bytes are those of kp_agg_encoder_add. */
int kp_agg_encoder_add_ref(kp_agg_encoder *e, const char *pk, size_t pk_len, const char *ehk,
                           size_t ehk_len, const void *data, size_t data_len,
                           const kp_hash_key *hash_key);

/* Records added by reference since the last reset. */
size_t kp_agg_encoder_refs(const kp_agg_encoder *e);

typedef struct kp_agg_output {
  const uint8_t *data; /* the Kinesis record's Data */
  size_t data_len;
  const char *partition_key; /* own pk if 1 record, "a" if more; not NUL-terminated */
  size_t partition_key_len;
  char explicit_hash_key[KP_HASH_KEY_DEC_MAX]; /* decimal, NUL-terminated: first record's */
} kp_agg_output;

/* Completes the Kinesis record. One record: emitted raw (no magic, its own pk, its
 * decimal hash key as EHK). Two or more: magic + AggregatedRecord + MD5. Pointers stay
 * valid until the next add/reset/free. May be called again (same result). Returns 0, or
 * -1 if empty or on allocation failure. */
int kp_agg_encoder_finish(kp_agg_encoder *e, kp_agg_output *out);

/* For two or more records: writes the aggregate (magic + AggregatedRecord + MD5, the
 * same bytes as kp_agg_encoder_finish) into dst, which has kp_agg_encoder_size(e)
 * bytes, and the outer explicit hash key (the first record's) into explicit_hash_key;
 * the outer partition key is "a". Lets the caller own the bytes without a copy.
 * Returns 0, or -1 with fewer than two records (nothing written). */
int kp_agg_encoder_finish_into(const kp_agg_encoder *e, uint8_t *dst,
                               char explicit_hash_key[KP_HASH_KEY_DEC_MAX]);

/* The same without the MD5: its 16 bytes at the end of dst are left for the caller to
 * fill from kp_agg_seal_job, so that many aggregates can be hashed together
 * (kp_md5_many). */
int kp_agg_encoder_finish_unsealed_into(const kp_agg_encoder *e, uint8_t *dst,
                                        char explicit_hash_key[KP_HASH_KEY_DEC_MAX]);

/* For two or more records: the aggregate (unsealed, as kp_agg_encoder_finish_unsealed_into)
 * as a gather list, without copying the data added by reference: iov (room for
 * kp_agg_encoder_gather_pieces(e) entries) gets *n_iov pieces, which alternate between
 * *own (one malloc'd block the caller frees: magic, tables, the records' own bytes and,
 * last, the MD5's 16 bytes) and the referenced data. Returns 0, or -1 with fewer than two
 * records or out of memory (nothing allocated). */
size_t kp_agg_encoder_gather_pieces(const kp_agg_encoder *e);
int kp_agg_encoder_finish_gather(const kp_agg_encoder *e, struct iovec *iov, size_t *n_iov,
                                 uint8_t **own, char explicit_hash_key[KP_HASH_KEY_DEC_MAX]);

/* The MD5 job that seals a gathered aggregate of len bytes in n_iov pieces. */
kp_md5_job kp_agg_seal_job_gathered(const struct iovec *iov, size_t n_iov, size_t len);

/* The MD5 that completes an aggregate of len bytes written unsealed at blob, as a job
 * for kp_md5_many; kp_agg_seal computes it at once, for one aggregate alone. */
kp_md5_job kp_agg_seal_job(uint8_t *blob, size_t len);
void kp_agg_seal(uint8_t *blob, size_t len);

#endif
