/* Kinesis CBOR 1.1 codecs for PutRecords (no I/O): the hot request in binary form.
 *
 * Kinesis, kinesalite and kinesis-local accept Content-Type KP_KINESIS_CBOR_CONTENT_TYPE
 * with the same X-Amz-Target and answer in CBOR. Against the JSON body it saves the
 * base64 of every Data (0.58 ns/B here) and a quarter of the bytes that SigV4 hashes
 * with SHA-256, and the server decodes no base64 either. Shapes are those of the JSON
 * protocol: {"StreamName": text, "Records": [{"Data": bytes, "PartitionKey": text,
 * "ExplicitHashKey"?: text}]} in, {"FailedRecordCount": uint, "Records": [{"SequenceNumber",
 * "ShardId"} | {"ErrorCode", "ErrorMessage"}], ...} out. Other operations stay JSON.
 *
 * Results use the JSON codec's types (producer/kinesis_api.h) and kp_put_records_result_free. */
#ifndef KP_PRODUCER_KINESIS_CBOR_H
#define KP_PRODUCER_KINESIS_CBOR_H

#include <sys/uio.h>

#include "producer/kinesis_api.h"

#define KP_KINESIS_CBOR_CONTENT_TYPE "application/x-amz-cbor-1.1"

/* Appends the PutRecords CBOR body for `n` entries to `out`. Returns 0, -EILSEQ if the
 * stream name or a key is not valid UTF-8, or -ENOMEM; on failure `out` keeps its
 * previous length. */
int kp_put_records_encode_cbor(kp_buf *out, const char *stream, size_t stream_len,
                               kp_put_entry *entries, size_t n);

/* The same body without copying any Data: the bytes around them go to `frame` and the
 * body is the gather list iov[0..*n_iov) of pieces of `frame` (valid while it is not
 * changed) and of the entries' own data (valid while they are). iov has room for n + 1
 * pieces plus each entry's data pieces (1, or data_n_iov when gathered). Each entry's
 * data_off is SIZE_MAX: its Data is not in `frame`. Same returns. */
int kp_put_records_encode_cbor_iov(kp_buf *frame, const char *stream, size_t stream_len,
                                   kp_put_entry *entries, size_t n, struct iovec *iov,
                                   size_t *n_iov);

/* As kp_put_records_data_of, for a CBOR body: a copy of the entry's Data. */
uint8_t *kp_put_records_data_of_cbor(const uint8_t *body, size_t body_len, size_t data_off,
                                     size_t data_len);

/* Parses a 200 PutRecords CBOR response, as kp_put_records_decode does JSON: Records must
 * hold exactly `n_expected` maps; strings are copied (NUL-terminated) into storage the
 * result owns. Unknown members are skipped. Returns 0, or -EBADMSG/-ENOMEM with errstr
 * set; `res` is zeroed on failure. */
int kp_put_records_decode_cbor(const uint8_t *body, size_t len, size_t n_expected,
                               kp_put_records_result *res, char *errstr, size_t errlen);

/* Parses a CBOR error body {"__type": "...#Code", "message"|"Message": "..."}, as
 * kp_api_error_decode does JSON. Returns 0, or -EBADMSG (not CBOR, or no __type). */
int kp_api_error_decode_cbor(const uint8_t *body, size_t len, kp_api_error *err, char *errstr,
                             size_t errlen);

/* The two PutRecords wire formats behind one interface, so callers choose once. */
typedef struct kp_put_records_codec {
  const char *name;         /* "json", "cbor" */
  const char *content_type; /* of requests, and of answers in this format */
  int (*encode)(kp_buf *out, const char *stream, size_t stream_len, kp_put_entry *entries,
                size_t n);
  /* NULL, or the body as a gather list without copying Data (see the CBOR one). */
  int (*encode_iov)(kp_buf *frame, const char *stream, size_t stream_len, kp_put_entry *entries,
                    size_t n, struct iovec *iov, size_t *n_iov);
  int (*decode)(const uint8_t *body, size_t len, size_t n_expected, kp_put_records_result *res,
                char *errstr, size_t errlen);
  int (*decode_error)(const uint8_t *body, size_t len, kp_api_error *err, char *errstr,
                      size_t errlen);
  /* An entry's Data back from a body this codec encoded (for a retry). */
  uint8_t *(*data_of)(const uint8_t *body, size_t body_len, size_t data_off, size_t data_len);
} kp_put_records_codec;

extern const kp_put_records_codec kp_put_records_json, kp_put_records_cbor;

/* The codec an answer is in, by its Content-Type: CBOR if it says so, else JSON (also
 * when absent: a proxy in between may answer a CBOR request's error in JSON). */
const kp_put_records_codec *kp_put_records_codec_of(const char *content_type);

#endif
