/* Kinesis JSON 1.1 request/response codecs (no I/O).
 *
 * Requests are POST / with Content-Type KP_KINESIS_CONTENT_TYPE and X-Amz-Target
 * KP_KINESIS_TARGET_PREFIX + operation. PutRecords bodies are the hot path and are
 * written straight into a kp_buf; the other requests and all responses go through
 * jansson.
 *
 * Decoded results own the parsed document and hand out const char * into it; they are
 * valid until the matching *_free (which accepts a zeroed or already-freed result).
 * Decoders fail on untrusted input with a negative errno code and a message in errstr:
 * -EBADMSG for malformed JSON or an unexpected shape, -ENOMEM on allocation failure. */
#ifndef KP_PRODUCER_KINESIS_API_H
#define KP_PRODUCER_KINESIS_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "format/hash_key.h"

#define KP_KINESIS_CONTENT_TYPE "application/x-amz-json-1.1"
#define KP_KINESIS_TARGET_PREFIX "Kinesis_20131202."

struct json_t; /* jansson's document type; kept out of this header */

/* ---- PutRecords ---------------------------------------------------------------- */

typedef struct kp_put_entry {
  const uint8_t *data;
  size_t data_len;
  const char *partition_key; /* UTF-8 */
  size_t pk_len;
  const char *explicit_hash_key; /* decimal string, or NULL for none */
  size_t ehk_len;
  size_t data_off; /* set by the encoder: where Data starts in the body, as written */
  /* Or (data NULL) the data as data_n_iov pieces: only the CBOR encoders take these. */
  const struct iovec *data_iov;
  size_t data_n_iov;
} kp_put_entry;

/* Appends the PutRecords JSON body for `n` entries to `out`. Keys may hold any Unicode
 * including U+0000 (escaped as JSON needs); data is base64-encoded. Returns 0, -EILSEQ
 * if the stream name or a key is not valid UTF-8, or -ENOMEM; on failure `out` keeps
 * its previous length. */
int kp_put_records_encode(kp_buf *out, const char *stream, size_t stream_len, kp_put_entry *entries,
                          size_t n);

/* The Data of the entry of data_len bytes written at data_off of a JSON body that
 * kp_put_records_encode made: decoded into a new buffer (caller frees). NULL if the
 * range is not base64 of that length, or out of memory. */
uint8_t *kp_put_records_data_of(const uint8_t *body, size_t body_len, size_t data_off,
                                size_t data_len);

typedef struct kp_put_record_outcome {
  bool success;
  const char *shard_id;        /* success only */
  const char *sequence_number; /* success only */
  const char *error_code;      /* failure only: e.g. ProvisionedThroughputExceededException */
  const char *error_message;   /* failure only; "" if Kinesis gave none */
} kp_put_record_outcome;

typedef struct kp_put_records_result {
  /* Failed entries in `records` (what FailedRecordCount reports; those decide). */
  size_t failed_record_count;
  size_t n; /* == n_expected */
  kp_put_record_outcome *records;
  struct json_t *json_; /* owned (JSON responses) */
  char *strings_;       /* owned (CBOR responses: the outcomes' strings) */
} kp_put_records_result;

/* Parses a 200 PutRecords response. The Records array must hold exactly `n_expected`
 * entries, in request order. Returns 0 or -EBADMSG/-ENOMEM with errstr set; `res` is
 * zeroed on failure. */
int kp_put_records_decode(const char *body, size_t len, size_t n_expected,
                          kp_put_records_result *res, char *errstr, size_t errlen);
void kp_put_records_result_free(kp_put_records_result *res);

/* For the decoders (JSON and CBOR): with every outcome's strings in place, marks
 * successes, counts failures and sets n; -EBADMSG (errstr set) if an entry has neither
 * an ErrorCode nor ShardId + SequenceNumber. */
int kp_put_records_settle(kp_put_records_result *res, size_t n, char *errstr, size_t errlen);

/* ---- Errors (non-2xx bodies) ----------------------------------------------------- */

typedef struct kp_api_error {
  char code[128];    /* "ResourceNotFoundException" (namespace prefix stripped) */
  char message[512]; /* truncated if longer; "" if none */
} kp_api_error;

/* Parses {"__type": "...#Code", "message"|"Message": "..."}. Returns 0, or -EBADMSG
 * (not JSON, or no __type, or one that reduces to an empty code) with errstr set; `err`
 * is then empty. */
int kp_api_error_decode(const char *body, size_t len, kp_api_error *err, char *errstr,
                        size_t errlen);

/* Reduces an error type as Kinesis spells it ("com.amazon.coral...#Code" in bodies,
 * "Code:http://..." in the x-amzn-ErrorType header) to "Code". Writes a NUL-terminated,
 * possibly truncated copy into out and returns its length. */
size_t kp_api_error_code_normalize(const char *s, size_t len, char *out, size_t outsz);

/* ---- ListShards ------------------------------------------------------------------ */

/* First page: `stream` set, `next_token` NULL. Later pages: `next_token` only (Kinesis
 * rejects StreamName together with NextToken, so `stream` is then ignored).
 * max_results <= 0 omits MaxResults. Appends to out; returns 0, -EINVAL (neither
 * stream nor token, or not UTF-8) or -ENOMEM. */
int kp_list_shards_encode(kp_buf *out, const char *stream, const char *next_token, int max_results);

typedef struct kp_shard_info {
  const char *shard_id;
  const char *parent_shard_id;          /* NULL if none */
  const char *adjacent_parent_shard_id; /* NULL if none */
  const char *starting_sequence_number;
  kp_hash_key starting_hash_key;
  kp_hash_key ending_hash_key;
  bool open; /* false once SequenceNumberRange has an EndingSequenceNumber */
} kp_shard_info;

typedef struct kp_list_shards_result {
  kp_shard_info *shards;
  size_t n;
  const char *next_token; /* NULL on the last page */
  struct json_t *json_;
} kp_list_shards_result;

int kp_list_shards_decode(const char *body, size_t len, kp_list_shards_result *res, char *errstr,
                          size_t errlen);
void kp_list_shards_result_free(kp_list_shards_result *res);

/* ---- Other calls (tests, tools, stream setup) -------------------------------------- */

/* Each appends a request body to out; returns 0, -EINVAL (missing/invalid argument)
 * or -ENOMEM. */
int kp_create_stream_encode(kp_buf *out, const char *stream, int shard_count);
int kp_describe_stream_summary_encode(kp_buf *out, const char *stream);
/* iterator_type: "TRIM_HORIZON", "LATEST", "AT_SEQUENCE_NUMBER",
 * "AFTER_SEQUENCE_NUMBER" (give sequence_number) or "AT_TIMESTAMP" (give timestamp,
 * seconds since the epoch). Unused arguments are NULL / ignored. */
int kp_get_shard_iterator_encode(kp_buf *out, const char *stream, const char *shard_id,
                                 const char *iterator_type, const char *sequence_number,
                                 double timestamp);
/* limit <= 0 omits Limit. */
int kp_get_records_encode(kp_buf *out, const char *shard_iterator, int limit);

typedef struct kp_stream_summary {
  char status[32]; /* CREATING, DELETING, ACTIVE, UPDATING */
  long long open_shard_count;
} kp_stream_summary;

int kp_describe_stream_summary_decode(const char *body, size_t len, kp_stream_summary *out,
                                      char *errstr, size_t errlen);

/* Copies ShardIterator into out (NUL-terminated); -EBADMSG if absent or too long. */
int kp_get_shard_iterator_decode(const char *body, size_t len, char *out, size_t outsz,
                                 char *errstr, size_t errlen);

typedef struct kp_fetched_record {
  const char *sequence_number;
  const char *partition_key;
  size_t pk_len;
  const char *explicit_hash_key; /* NULL: Kinesis does not return it */
  const uint8_t *data;           /* decoded from base64 */
  size_t data_len;
  double approximate_arrival; /* seconds since the epoch, 0 if absent */
} kp_fetched_record;

typedef struct kp_get_records_result {
  kp_fetched_record *records;
  size_t n;
  const char *next_shard_iterator; /* NULL once a closed shard is exhausted */
  long long millis_behind_latest;  /* -1 if absent */
  struct json_t *json_;
  uint8_t *data_; /* all decoded data, one allocation */
} kp_get_records_result;

int kp_get_records_decode(const char *body, size_t len, kp_get_records_result *res, char *errstr,
                          size_t errlen);
void kp_get_records_result_free(kp_get_records_result *res);

#endif
