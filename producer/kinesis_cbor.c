#include "producer/kinesis_cbor.h"
#include "format/cbor_walk.h"
#include "format/utf8.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cbor.h>

static void set_err(char *errstr, size_t errlen, const char *fmt, ...) {
  if (!errstr || !errlen)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errstr, errlen, fmt, ap);
  va_end(ap);
}

/* ---- PutRecords request -------------------------------------------------------------- */

#define HEAD_MAX 9 /* the longest CBOR item head */

static uint8_t *put_text(uint8_t *p, const char *s, size_t n) {
  p += cbor_encode_string_start(n, p, HEAD_MAX);
  memcpy(p, s, n);
  return p + n;
}

/* Map keys as literals: their heads are one byte (all shorter than 24). */
#define PUT_KEY(p, lit) put_text((p), (lit), sizeof(lit) - 1)

static bool valid_utf8(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] >= 0x80)
      return kp_utf8_count(s + i, n - i, NULL) >= 0;
  return true;
}

/* The body, with each Data copied in (iov NULL), or (iov set) the body minus the Data
 * bytes in `out` and the whole body as a gather list in iov: pieces of `out` and each
 * entry's own data, in order. */
static int encode_cbor(kp_buf *out, const char *stream, size_t stream_len, kp_put_entry *entries,
                       size_t n, struct iovec *iov, size_t *n_iov) {
  /* Upper bound first, then a raw pointer: per entry a 1-byte map head, three keys of
   * at most 16 bytes with their heads, and three value heads. */
  size_t need = 1 + 11 + HEAD_MAX + stream_len + 8 + HEAD_MAX;
  for (size_t i = 0; i < n; i++) {
    const kp_put_entry *e = &entries[i];
    size_t one = 1 + 3 * (1 + 16) + 3 * HEAD_MAX;
    if (e->data_len > SIZE_MAX / 2 || e->pk_len > SIZE_MAX / 4 || e->ehk_len > SIZE_MAX / 4)
      return -ENOMEM;
    one += (iov ? 0 : e->data_len) + e->pk_len + e->ehk_len;
    if (need > SIZE_MAX - one)
      return -ENOMEM;
    need += one;
  }
  if (!valid_utf8(stream, stream_len))
    return -EILSEQ;
  for (size_t i = 0; i < n; i++)
    if (!valid_utf8(entries[i].partition_key, entries[i].pk_len) ||
        (entries[i].explicit_hash_key &&
         !valid_utf8(entries[i].explicit_hash_key, entries[i].ehk_len)))
      return -EILSEQ;
  if (kp_buf_reserve(out, need))
    return -ENOMEM;
  uint8_t *p = out->data + out->len, *piece = p; /* stable: nothing reallocates now */
  size_t k = 0;
  p += cbor_encode_map_start(2, p, HEAD_MAX);
  p = PUT_KEY(p, "StreamName");
  p = put_text(p, stream, stream_len);
  p = PUT_KEY(p, "Records");
  p += cbor_encode_array_start(n, p, HEAD_MAX);
  for (size_t i = 0; i < n; i++) {
    kp_put_entry *e = &entries[i];
    p += cbor_encode_map_start(e->explicit_hash_key ? 3 : 2, p, HEAD_MAX);
    p = PUT_KEY(p, "Data");
    p += cbor_encode_bytestring_start(e->data_len, p, HEAD_MAX);
    if (iov) {
      iov[k++] = (struct iovec){piece, (size_t)(p - piece)};
      if (e->data_iov) {
        for (size_t j = 0; j < e->data_n_iov; j++)
          if (e->data_iov[j].iov_len)
            iov[k++] = e->data_iov[j];
      } else if (e->data_len) {
        iov[k++] = (struct iovec){(void *)e->data, e->data_len};
      }
      piece = p;
      e->data_off = SIZE_MAX; /* not in `out` */
    } else {
      e->data_off = (size_t)(p - out->data);
      if (e->data_iov) {
        for (size_t j = 0; j < e->data_n_iov; j++)
          p = (uint8_t *)memcpy(p, e->data_iov[j].iov_base, e->data_iov[j].iov_len) +
              e->data_iov[j].iov_len;
      } else {
        memcpy(p, e->data, e->data_len);
        p += e->data_len;
      }
    }
    p = PUT_KEY(p, "PartitionKey");
    p = put_text(p, e->partition_key, e->pk_len);
    if (e->explicit_hash_key) {
      p = PUT_KEY(p, "ExplicitHashKey");
      p = put_text(p, e->explicit_hash_key, e->ehk_len);
    }
  }
  if (iov) {
    iov[k++] = (struct iovec){piece, (size_t)(p - piece)};
    *n_iov = k;
  }
  out->len = (size_t)(p - out->data);
  return 0;
}

int kp_put_records_encode_cbor(kp_buf *out, const char *stream, size_t stream_len,
                               kp_put_entry *entries, size_t n) {
  return encode_cbor(out, stream, stream_len, entries, n, NULL, NULL);
}

int kp_put_records_encode_cbor_iov(kp_buf *frame, const char *stream, size_t stream_len,
                                   kp_put_entry *entries, size_t n, struct iovec *iov,
                                   size_t *n_iov) {
  return encode_cbor(frame, stream, stream_len, entries, n, iov, n_iov);
}

/* ---- PutRecords response ------------------------------------------------------------- */

struct put_dec {
  kp_put_records_result *res;
  size_t n_expected;
  size_t n_seen; /* maps seen in Records */
  bool have_records;
  char *next; /* free space in res->strings_ */
  char *errstr;
  size_t errlen;
};

static const char *copy_str(struct put_dec *d, const uint8_t *p, size_t n) {
  char *s = d->next;
  memcpy(s, p, n);
  s[n] = '\0';
  d->next += n + 1;
  return s;
}

/* Top level: map with Records (array of maps) and FailedRecordCount; depth 3 holds each
 * record's members. */
static int put_cb(void *ud, const kp_cbor_item *it, const kp_cbor_level *lv) {
  struct put_dec *d = ud;
  if (it->depth == 0) {
    if (it->type != KP_CBOR_MAP && it->type != KP_CBOR_END) {
      set_err(d->errstr, d->errlen, "response is not a CBOR map");
      return -EBADMSG;
    }
    return 0;
  }
  bool in_records = kp_cbor_key_is(lv, 0, "Records");
  if (it->depth == 1) {
    if (in_records) {
      if (it->type == KP_CBOR_ARRAY)
        d->have_records = true;
      else if (it->type != KP_CBOR_END) {
        set_err(d->errstr, d->errlen, "Records is not an array");
        return -EBADMSG;
      }
    } else if (kp_cbor_key_is(lv, 0, "FailedRecordCount") && it->type != KP_CBOR_UINT &&
               it->type != KP_CBOR_OTHER /* null */) {
      set_err(d->errstr, d->errlen, "FailedRecordCount is not a non-negative integer");
      return -EBADMSG;
    }
    return 0;
  }
  if (!in_records)
    return 0; /* inside an unknown member */
  if (it->depth == 2) {
    if (it->type == KP_CBOR_END)
      return 0;
    if (it->type != KP_CBOR_MAP) {
      set_err(d->errstr, d->errlen, "Records[%zu] is not a map", lv[1].index);
      return -EBADMSG;
    }
    if (++d->n_seen > d->n_expected) {
      set_err(d->errstr, d->errlen, "Records has more than the %zu entries expected",
              d->n_expected);
      return -EBADMSG;
    }
    return 0;
  }
  if (it->depth != 3)
    return 0;
  kp_put_record_outcome *o = &d->res->records[lv[1].index];
  const char **slot = NULL;
  if (kp_cbor_key_is(lv, 2, "SequenceNumber"))
    slot = &o->sequence_number;
  else if (kp_cbor_key_is(lv, 2, "ShardId"))
    slot = &o->shard_id;
  else if (kp_cbor_key_is(lv, 2, "ErrorCode"))
    slot = &o->error_code;
  else if (kp_cbor_key_is(lv, 2, "ErrorMessage"))
    slot = &o->error_message;
  if (!slot || it->type == KP_CBOR_OTHER) /* unknown member, or null: absent */
    return 0;
  if (it->type != KP_CBOR_TEXT) {
    set_err(d->errstr, d->errlen, "Records[%zu] has an unexpected shape", lv[1].index);
    return -EBADMSG;
  }
  *slot = copy_str(d, it->p, it->len);
  return 0;
}

int kp_put_records_decode_cbor(const uint8_t *body, size_t len, size_t n_expected,
                               kp_put_records_result *res, char *errstr, size_t errlen) {
  memset(res, 0, sizeof *res);
  /* Each string copied with its NUL fits in the bytes its head and contents took in
   * the body, so len + 1 bytes hold them all, however many: one allocation. */
  res->records = calloc(n_expected ? n_expected : 1, sizeof *res->records);
  res->strings_ = malloc(len + 1);
  if (!res->records || !res->strings_) {
    kp_put_records_result_free(res);
    set_err(errstr, errlen, "out of memory");
    return -ENOMEM;
  }
  struct put_dec d = {.res = res,
                      .n_expected = n_expected,
                      .next = res->strings_,
                      .errstr = errstr,
                      .errlen = errlen};
  int rc = kp_cbor_walk(body, len, put_cb, &d, errstr, errlen);
  if (rc == 0 && !d.have_records) {
    set_err(errstr, errlen, "Records missing or not an array");
    rc = -EBADMSG;
  }
  if (rc == 0 && d.n_seen != n_expected) {
    set_err(errstr, errlen, "Records has %zu entries, expected %zu", d.n_seen, n_expected);
    rc = -EBADMSG;
  }
  if (rc == 0)
    rc = kp_put_records_settle(res, n_expected, errstr, errlen);
  if (rc) {
    kp_put_records_result_free(res);
    return rc < 0 ? rc : -EBADMSG;
  }
  return 0;
}

/* ---- Errors --------------------------------------------------------------------------- */

struct err_dec {
  kp_api_error *err;
  bool have_type, have_lower_message;
};

static int err_cb(void *ud, const kp_cbor_item *it, const kp_cbor_level *lv) {
  struct err_dec *d = ud;
  if (it->depth == 0)
    return it->type == KP_CBOR_MAP || it->type == KP_CBOR_END ? 0 : 1;
  if (it->depth != 1 || it->type != KP_CBOR_TEXT)
    return 0;
  if (kp_cbor_key_is(lv, 0, "__type")) {
    /* An empty code after normalizing ("", "x#", ":y", NUL first) names no error. */
    d->have_type = kp_api_error_code_normalize((const char *)it->p, it->len, d->err->code,
                                               sizeof d->err->code) > 0;
  } else if (kp_cbor_key_is(lv, 0, "message") ||
             (kp_cbor_key_is(lv, 0, "Message") && !d->have_lower_message)) {
    size_t n = it->len < sizeof d->err->message - 1 ? it->len : sizeof d->err->message - 1;
    memcpy(d->err->message, it->p, n);
    d->err->message[n] = '\0';
    d->have_lower_message |= kp_cbor_key_is(lv, 0, "message");
  }
  return 0;
}

int kp_api_error_decode_cbor(const uint8_t *body, size_t len, kp_api_error *err, char *errstr,
                             size_t errlen) {
  memset(err, 0, sizeof *err);
  struct err_dec d = {.err = err};
  int rc = kp_cbor_walk(body, len, err_cb, &d, errstr, errlen);
  if (rc == 0 && !d.have_type) {
    set_err(errstr, errlen, "error body has no __type");
    rc = -EBADMSG;
  } else if (rc > 0 || rc == -EBADMSG) {
    if (rc > 0)
      set_err(errstr, errlen, "error body is not a CBOR map");
    rc = -EBADMSG;
  }
  if (rc)
    memset(err, 0, sizeof *err);
  return rc;
}

/* ---- Codec table ---------------------------------------------------------------------- */

static int json_decode(const uint8_t *body, size_t len, size_t n_expected,
                       kp_put_records_result *res, char *errstr, size_t errlen) {
  return kp_put_records_decode((const char *)body, len, n_expected, res, errstr, errlen);
}

static int json_decode_error(const uint8_t *body, size_t len, kp_api_error *err, char *errstr,
                             size_t errlen) {
  return kp_api_error_decode((const char *)body, len, err, errstr, errlen);
}

uint8_t *kp_put_records_data_of_cbor(const uint8_t *body, size_t body_len, size_t data_off,
                                     size_t data_len) {
  if (data_off > body_len || data_len > body_len - data_off)
    return NULL;
  uint8_t *d = malloc(data_len ? data_len : 1);
  if (d && data_len)
    memcpy(d, body + data_off, data_len);
  return d;
}

const kp_put_records_codec kp_put_records_json = {.name = "json",
                                                  .content_type = KP_KINESIS_CONTENT_TYPE,
                                                  .encode = kp_put_records_encode,
                                                  .encode_iov = NULL, /* base64: a copy */
                                                  .decode = json_decode,
                                                  .decode_error = json_decode_error,
                                                  .data_of = kp_put_records_data_of};
const kp_put_records_codec kp_put_records_cbor = {.name = "cbor",
                                                  .content_type = KP_KINESIS_CBOR_CONTENT_TYPE,
                                                  .encode = kp_put_records_encode_cbor,
                                                  .encode_iov = kp_put_records_encode_cbor_iov,
                                                  .decode = kp_put_records_decode_cbor,
                                                  .decode_error = kp_api_error_decode_cbor,
                                                  .data_of = kp_put_records_data_of_cbor};

const kp_put_records_codec *kp_put_records_codec_of(const char *content_type) {
  return content_type && !strncasecmp(content_type, KP_KINESIS_CBOR_CONTENT_TYPE,
                                      sizeof KP_KINESIS_CBOR_CONTENT_TYPE - 1)
             ? &kp_put_records_cbor
             : &kp_put_records_json;
}
