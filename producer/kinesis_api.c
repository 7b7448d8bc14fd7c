#include "producer/kinesis_api.h"
#include "format/utf8.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

static void set_err(char *errstr, size_t errlen, const char *fmt, ...) {
  if (!errstr || !errlen)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errstr, errlen, fmt, ap);
  va_end(ap);
}

/* ---- JSON string writing (hot path) ---------------------------------------------- */

/* Writes s as JSON string contents at p (room for 6 bytes per input byte). Returns the
 * end, or NULL if s is not valid UTF-8. */
static uint8_t *json_escape(uint8_t *p, const char *str, size_t len) {
  static const char hex[] = "0123456789abcdef";
  const uint8_t *s = (const uint8_t *)str;
  for (size_t i = 0; i < len;) {
    uint8_t c = s[i];
    if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
      *p++ = c;
      i++;
    } else if (c >= 0x80) {
      size_t n = kp_utf8_seq_len(s + i, len - i);
      if (!n)
        return NULL;
      memcpy(p, s + i, n);
      p += n;
      i += n;
    } else {
      *p++ = '\\';
      switch (c) {
      case '"':
        *p++ = '"';
        break;
      case '\\':
        *p++ = '\\';
        break;
      case '\n':
        *p++ = 'n';
        break;
      case '\r':
        *p++ = 'r';
        break;
      case '\t':
        *p++ = 't';
        break;
      case '\b':
        *p++ = 'b';
        break;
      case '\f':
        *p++ = 'f';
        break;
      default:
        memcpy(p, "u00", 3);
        p[3] = (uint8_t)hex[c >> 4];
        p[4] = (uint8_t)hex[c & 15];
        p += 5;
      }
      i++;
    }
  }
  return p;
}

static uint8_t *put_lit(uint8_t *p, const char *lit, size_t n) {
  memcpy(p, lit, n);
  return p + n;
}
#define PUT_LIT(p, lit) put_lit((p), (lit), sizeof(lit) - 1)

/* base64 of n bytes; EVP_EncodeBlock takes an int, so huge inputs go in chunks of a
 * multiple of 3 bytes (which keeps the output identical to one pass). */
static uint8_t *put_base64(uint8_t *p, const uint8_t *data, size_t n) {
  const size_t chunk = (size_t)3 << 20;
  while (n) {
    size_t k = n < chunk ? n : chunk;
    p += EVP_EncodeBlock(p, data, (int)k);
    data += k;
    n -= k;
  }
  return p;
}

static int add_ovf(size_t *acc, size_t x) {
  if (*acc > SIZE_MAX - x)
    return -1;
  *acc += x;
  return 0;
}

int kp_put_records_encode(kp_buf *out, const char *stream, size_t stream_len, kp_put_entry *entries,
                          size_t n) {
  static const char head[] = "{\"StreamName\":\"";
  static const char recs[] = "\",\"Records\":[";
  static const char data_k[] = "{\"Data\":\"";
  static const char pk_k[] = "\",\"PartitionKey\":\"";
  static const char ehk_k[] = "\",\"ExplicitHashKey\":\"";
  /* Upper bound first, so the loop writes through a raw pointer without checks. */
  size_t need = sizeof head + sizeof recs + 4, b64_max = (SIZE_MAX / 4 - 4) * 3;
  if (stream_len > SIZE_MAX / 6 || add_ovf(&need, stream_len * 6))
    return -ENOMEM;
  for (size_t i = 0; i < n; i++) {
    const kp_put_entry *e = &entries[i];
    if (e->data_iov)
      return -EINVAL; /* gathered data is for the CBOR encoders only */
    if (e->data_len > b64_max || e->pk_len > SIZE_MAX / 6 || e->ehk_len > SIZE_MAX / 6 ||
        add_ovf(&need, (e->data_len + 2) / 3 * 4 + 1) || add_ovf(&need, e->pk_len * 6) ||
        add_ovf(&need, e->ehk_len * 6) ||
        add_ovf(&need, sizeof data_k + sizeof pk_k + sizeof ehk_k + 4))
      return -ENOMEM;
  }
  if (kp_buf_reserve(out, need))
    return -ENOMEM;
  uint8_t *p = out->data + out->len;
  p = PUT_LIT(p, head);
  if (!(p = json_escape(p, stream, stream_len)))
    return -EILSEQ;
  p = PUT_LIT(p, recs);
  for (size_t i = 0; i < n; i++) {
    kp_put_entry *e = &entries[i];
    if (i)
      *p++ = ',';
    p = PUT_LIT(p, data_k);
    e->data_off = (size_t)(p - out->data);
    p = put_base64(p, e->data, e->data_len);
    p = PUT_LIT(p, pk_k);
    if (!(p = json_escape(p, e->partition_key, e->pk_len)))
      return -EILSEQ;
    if (e->explicit_hash_key) {
      p = PUT_LIT(p, ehk_k);
      if (!(p = json_escape(p, e->explicit_hash_key, e->ehk_len)))
        return -EILSEQ;
    }
    p = PUT_LIT(p, "\"}");
  }
  p = PUT_LIT(p, "]}");
  out->len = (size_t)(p - out->data);
  return 0;
}

/* ---- Response parsing ---------------------------------------------------------------- */

static json_t *load(const char *body, size_t len, char *errstr, size_t errlen) {
  json_error_t jerr;
  /* JSON_ALLOW_NUL: a partition key may legitimately contain U+0000. */
  json_t *root = json_loadb(body, len, JSON_ALLOW_NUL, &jerr);
  if (!root) {
    set_err(errstr, errlen, "malformed JSON at %d:%d: %s", jerr.line, jerr.column, jerr.text);
    return NULL;
  }
  if (!json_is_object(root)) {
    set_err(errstr, errlen, "response is not a JSON object");
    json_decref(root);
    return NULL;
  }
  return root;
}

/* String member or NULL; a present member of another type is a shape error. */
static int opt_str(json_t *obj, const char *key, const char **out) {
  json_t *v = json_object_get(obj, key);
  *out = NULL;
  if (!v || json_is_null(v))
    return 0;
  if (!json_is_string(v))
    return -1;
  *out = json_string_value(v);
  return 0;
}

int kp_put_records_decode(const char *body, size_t len, size_t n_expected,
                          kp_put_records_result *res, char *errstr, size_t errlen) {
  memset(res, 0, sizeof *res);
  json_t *root = load(body, len, errstr, errlen);
  if (!root)
    return -EBADMSG;
  json_t *arr = json_object_get(root, "Records");
  json_t *frc = json_object_get(root, "FailedRecordCount");
  int rc = -EBADMSG;
  if (!json_is_array(arr)) {
    set_err(errstr, errlen, "Records missing or not an array");
    goto fail;
  }
  if (frc && !(json_is_integer(frc) && json_integer_value(frc) >= 0)) {
    set_err(errstr, errlen, "FailedRecordCount is not a non-negative integer");
    goto fail;
  }
  if (json_array_size(arr) != n_expected) {
    set_err(errstr, errlen, "Records has %zu entries, expected %zu", json_array_size(arr),
            n_expected);
    goto fail;
  }
  res->records = calloc(n_expected ? n_expected : 1, sizeof *res->records);
  if (!res->records) {
    rc = -ENOMEM;
    set_err(errstr, errlen, "out of memory");
    goto fail;
  }
  for (size_t i = 0; i < n_expected; i++) {
    json_t *r = json_array_get(arr, i);
    kp_put_record_outcome *o = &res->records[i];
    if (!json_is_object(r) || opt_str(r, "ErrorCode", &o->error_code) ||
        opt_str(r, "ErrorMessage", &o->error_message) || opt_str(r, "ShardId", &o->shard_id) ||
        opt_str(r, "SequenceNumber", &o->sequence_number)) {
      set_err(errstr, errlen, "Records[%zu] has an unexpected shape", i);
      goto fail;
    }
  }
  if (kp_put_records_settle(res, n_expected, errstr, errlen) != 0)
    goto fail;
  res->json_ = root;
  return 0;
fail:
  free(res->records);
  json_decref(root);
  memset(res, 0, sizeof *res);
  return rc;
}

int kp_put_records_settle(kp_put_records_result *res, size_t n, char *errstr, size_t errlen) {
  size_t failed = 0;
  for (size_t i = 0; i < n; i++) {
    kp_put_record_outcome *o = &res->records[i];
    if (o->error_code) {
      failed++;
      o->shard_id = o->sequence_number = NULL;
      if (!o->error_message)
        o->error_message = "";
    } else if (o->shard_id && o->sequence_number) {
      o->success = true;
      o->error_message = NULL;
    } else {
      set_err(errstr, errlen, "Records[%zu] has neither ErrorCode nor ShardId+SequenceNumber", i);
      return -EBADMSG;
    }
  }
  /* Per-record outcomes decide what is retried, so the count follows them even if a
   * (broken) server reported another FailedRecordCount. */
  res->failed_record_count = failed;
  res->n = n;
  return 0;
}

void kp_put_records_result_free(kp_put_records_result *res) {
  if (!res)
    return;
  free(res->records);
  json_decref(res->json_);
  free(res->strings_);
  memset(res, 0, sizeof *res);
}

size_t kp_api_error_code_normalize(const char *s, size_t len, char *out, size_t outsz) {
  const char *nul = memchr(s, '\0', len); /* the code is a C string from here on */
  if (nul)
    len = (size_t)(nul - s);
  const char *hash = NULL;
  for (size_t i = 0; i < len; i++)
    if (s[i] == '#')
      hash = s + i;
  if (hash) {
    len -= (size_t)(hash + 1 - s);
    s = hash + 1;
  }
  const char *colon = memchr(s, ':', len);
  if (colon)
    len = (size_t)(colon - s);
  if (!outsz)
    return 0;
  if (len >= outsz)
    len = outsz - 1;
  memcpy(out, s, len);
  out[len] = '\0';
  return len;
}

int kp_api_error_decode(const char *body, size_t len, kp_api_error *err, char *errstr,
                        size_t errlen) {
  memset(err, 0, sizeof *err);
  json_t *root = load(body, len, errstr, errlen);
  if (!root)
    return -EBADMSG;
  json_t *type = json_object_get(root, "__type");
  if (!json_is_string(type) ||
      !kp_api_error_code_normalize(json_string_value(type), json_string_length(type), err->code,
                                   sizeof err->code)) {
    set_err(errstr, errlen, "error body has no __type");
    memset(err, 0, sizeof *err);
    json_decref(root);
    return -EBADMSG;
  }
  json_t *msg = json_object_get(root, "message");
  if (!json_is_string(msg))
    msg = json_object_get(root, "Message");
  if (json_is_string(msg))
    snprintf(err->message, sizeof err->message, "%s", json_string_value(msg));
  json_decref(root);
  return 0;
}

/* ---- DOM-built requests ------------------------------------------------------------ */

/* Takes ownership of obj (NULL means a json_pack/json_string failed: bad UTF-8 or no
 * memory, which jansson does not distinguish; -EINVAL is the likelier). */
static int dump_into(kp_buf *out, json_t *obj) {
  if (!obj)
    return -EINVAL;
  char *s = json_dumps(obj, JSON_COMPACT);
  json_decref(obj);
  if (!s)
    return -ENOMEM;
  int rc = kp_buf_append_str(out, s) ? -ENOMEM : 0;
  free(s);
  return rc;
}

int kp_list_shards_encode(kp_buf *out, const char *stream, const char *next_token,
                          int max_results) {
  json_t *o;
  if (next_token)
    o = json_pack("{s:s}", "NextToken", next_token);
  else if (stream)
    o = json_pack("{s:s}", "StreamName", stream);
  else
    return -EINVAL;
  if (o && max_results > 0 && json_object_set_new(o, "MaxResults", json_integer(max_results))) {
    json_decref(o);
    return -ENOMEM;
  }
  return dump_into(out, o);
}

int kp_create_stream_encode(kp_buf *out, const char *stream, int shard_count) {
  if (!stream || shard_count <= 0)
    return -EINVAL;
  return dump_into(out, json_pack("{s:s,s:i}", "StreamName", stream, "ShardCount", shard_count));
}

int kp_describe_stream_summary_encode(kp_buf *out, const char *stream) {
  if (!stream)
    return -EINVAL;
  return dump_into(out, json_pack("{s:s}", "StreamName", stream));
}

int kp_get_shard_iterator_encode(kp_buf *out, const char *stream, const char *shard_id,
                                 const char *iterator_type, const char *sequence_number,
                                 double timestamp) {
  if (!stream || !shard_id || !iterator_type)
    return -EINVAL;
  json_t *o = json_pack("{s:s,s:s,s:s}", "StreamName", stream, "ShardId", shard_id,
                        "ShardIteratorType", iterator_type);
  if (!o)
    return -EINVAL;
  int bad = 0;
  if (!strcmp(iterator_type, "AT_SEQUENCE_NUMBER") ||
      !strcmp(iterator_type, "AFTER_SEQUENCE_NUMBER")) {
    json_t *v = sequence_number ? json_string(sequence_number) : NULL;
    bad = !v || json_object_set_new(o, "StartingSequenceNumber", v);
  } else if (!strcmp(iterator_type, "AT_TIMESTAMP")) {
    bad = json_object_set_new(o, "Timestamp", json_real(timestamp));
  }
  if (bad) {
    json_decref(o);
    return -EINVAL;
  }
  return dump_into(out, o);
}

int kp_get_records_encode(kp_buf *out, const char *shard_iterator, int limit) {
  if (!shard_iterator)
    return -EINVAL;
  json_t *o = json_pack("{s:s}", "ShardIterator", shard_iterator);
  if (o && limit > 0 && json_object_set_new(o, "Limit", json_integer(limit))) {
    json_decref(o);
    return -ENOMEM;
  }
  return dump_into(out, o);
}

/* ---- DOM-parsed responses ------------------------------------------------------------ */

static int parse_hash_key(json_t *obj, const char *key, kp_hash_key *out) {
  json_t *v = json_object_get(obj, key);
  if (!json_is_string(v))
    return -1;
  return kp_hash_key_parse(json_string_value(v), json_string_length(v), out);
}

int kp_list_shards_decode(const char *body, size_t len, kp_list_shards_result *res, char *errstr,
                          size_t errlen) {
  memset(res, 0, sizeof *res);
  json_t *root = load(body, len, errstr, errlen);
  if (!root)
    return -EBADMSG;
  int rc = -EBADMSG;
  json_t *arr = json_object_get(root, "Shards");
  if (!json_is_array(arr) || opt_str(root, "NextToken", &res->next_token)) {
    set_err(errstr, errlen, "Shards missing or NextToken not a string");
    goto fail;
  }
  size_t n = json_array_size(arr);
  res->shards = calloc(n ? n : 1, sizeof *res->shards);
  if (!res->shards) {
    rc = -ENOMEM;
    set_err(errstr, errlen, "out of memory");
    goto fail;
  }
  for (size_t i = 0; i < n; i++) {
    json_t *s = json_array_get(arr, i);
    kp_shard_info *si = &res->shards[i];
    json_t *hkr = json_object_get(s, "HashKeyRange");
    json_t *snr = json_object_get(s, "SequenceNumberRange");
    const char *end_seq = NULL;
    if (!json_is_object(s) || opt_str(s, "ShardId", &si->shard_id) || !si->shard_id ||
        opt_str(s, "ParentShardId", &si->parent_shard_id) ||
        opt_str(s, "AdjacentParentShardId", &si->adjacent_parent_shard_id)) {
      set_err(errstr, errlen, "Shards[%zu]: missing ShardId or bad parent ids", i);
      goto fail;
    }
    if (!json_is_object(hkr) || parse_hash_key(hkr, "StartingHashKey", &si->starting_hash_key) ||
        parse_hash_key(hkr, "EndingHashKey", &si->ending_hash_key) ||
        kp_hash_key_cmp(&si->starting_hash_key, &si->ending_hash_key) > 0) {
      set_err(errstr, errlen, "Shards[%zu]: bad HashKeyRange", i);
      goto fail;
    }
    if (!json_is_object(snr) ||
        opt_str(snr, "StartingSequenceNumber", &si->starting_sequence_number) ||
        opt_str(snr, "EndingSequenceNumber", &end_seq)) {
      set_err(errstr, errlen, "Shards[%zu]: bad SequenceNumberRange", i);
      goto fail;
    }
    si->open = end_seq == NULL;
  }
  res->n = n;
  res->json_ = root;
  return 0;
fail:
  free(res->shards);
  json_decref(root);
  memset(res, 0, sizeof *res);
  return rc;
}

void kp_list_shards_result_free(kp_list_shards_result *res) {
  if (!res)
    return;
  free(res->shards);
  json_decref(res->json_);
  memset(res, 0, sizeof *res);
}

int kp_describe_stream_summary_decode(const char *body, size_t len, kp_stream_summary *out,
                                      char *errstr, size_t errlen) {
  memset(out, 0, sizeof *out);
  json_t *root = load(body, len, errstr, errlen);
  if (!root)
    return -EBADMSG;
  json_t *d = json_object_get(root, "StreamDescriptionSummary");
  json_t *st = json_object_get(d, "StreamStatus");
  json_t *osc = json_object_get(d, "OpenShardCount");
  int rc = 0;
  if (!json_is_string(st) || json_string_length(st) >= sizeof out->status ||
      !json_is_integer(osc)) {
    set_err(errstr, errlen, "StreamDescriptionSummary lacks StreamStatus/OpenShardCount");
    rc = -EBADMSG;
  } else {
    memcpy(out->status, json_string_value(st), json_string_length(st) + 1);
    out->open_shard_count = (long long)json_integer_value(osc);
  }
  json_decref(root);
  return rc;
}

int kp_get_shard_iterator_decode(const char *body, size_t len, char *out, size_t outsz,
                                 char *errstr, size_t errlen) {
  if (outsz)
    out[0] = '\0';
  json_t *root = load(body, len, errstr, errlen);
  if (!root)
    return -EBADMSG;
  json_t *it = json_object_get(root, "ShardIterator");
  int rc = 0;
  if (!json_is_string(it) || json_string_length(it) >= outsz) {
    set_err(errstr, errlen, "ShardIterator missing or longer than %zu", outsz);
    rc = -EBADMSG;
  } else {
    memcpy(out, json_string_value(it), json_string_length(it) + 1);
  }
  json_decref(root);
  return rc;
}

/* Strict base64 (length a multiple of 4, at most two '=' at the end) into p. Returns
 * the decoded length, or -1. */
static long long decode_base64(const char *s, size_t len, uint8_t *p) {
  if (len % 4 || len / 4 * 3 > INT_MAX)
    return -1;
  if (!len)
    return 0;
  size_t pad = (s[len - 1] == '=') + (s[len - 1] == '=' && s[len - 2] == '=');
  for (size_t i = 0; i < len - pad; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
          c == '/'))
      return -1;
  }
  int n = EVP_DecodeBlock(p, (const unsigned char *)s, (int)len);
  if (n < 0)
    return -1;
  return (long long)n - (long long)pad; /* EVP_DecodeBlock counts padding as zero bytes */
}

uint8_t *kp_put_records_data_of(const uint8_t *body, size_t body_len, size_t data_off,
                                size_t data_len) {
  size_t b64 = (data_len + 2) / 3 * 4;
  if (data_off > body_len || b64 > body_len - data_off)
    return NULL;
  uint8_t *d = malloc(b64 / 4 * 3 + 3); /* EVP_DecodeBlock writes the padding too */
  if (!d)
    return NULL;
  if (decode_base64((const char *)body + data_off, b64, d) != (long long)data_len) {
    free(d);
    return NULL;
  }
  return d;
}

int kp_get_records_decode(const char *body, size_t len, kp_get_records_result *res, char *errstr,
                          size_t errlen) {
  memset(res, 0, sizeof *res);
  res->millis_behind_latest = -1;
  json_t *root = load(body, len, errstr, errlen);
  if (!root)
    return -EBADMSG;
  int rc = -EBADMSG;
  json_t *arr = json_object_get(root, "Records");
  json_t *mbl = json_object_get(root, "MillisBehindLatest");
  if (!json_is_array(arr) || opt_str(root, "NextShardIterator", &res->next_shard_iterator) ||
      (mbl && !json_is_integer(mbl))) {
    set_err(errstr, errlen, "Records, NextShardIterator or MillisBehindLatest malformed");
    goto fail;
  }
  if (mbl)
    res->millis_behind_latest = (long long)json_integer_value(mbl);
  size_t n = json_array_size(arr), total = 0;
  for (size_t i = 0; i < n; i++) {
    json_t *d = json_object_get(json_array_get(arr, i), "Data");
    if (!json_is_string(d)) {
      set_err(errstr, errlen, "Records[%zu]: Data missing", i);
      goto fail;
    }
    total += json_string_length(d) / 4 * 3 + 3; /* +3: EVP_DecodeBlock writes padding */
  }
  res->records = calloc(n ? n : 1, sizeof *res->records);
  res->data_ = malloc(total ? total : 1);
  if (!res->records || !res->data_) {
    rc = -ENOMEM;
    set_err(errstr, errlen, "out of memory");
    goto fail;
  }
  uint8_t *p = res->data_;
  for (size_t i = 0; i < n; i++) {
    json_t *r = json_array_get(arr, i);
    kp_fetched_record *k = &res->records[i];
    json_t *d = json_object_get(r, "Data");
    json_t *pk = json_object_get(r, "PartitionKey");
    json_t *ts = json_object_get(r, "ApproximateArrivalTimestamp");
    if (opt_str(r, "SequenceNumber", &k->sequence_number) || !k->sequence_number ||
        !json_is_string(pk) || opt_str(r, "ExplicitHashKey", &k->explicit_hash_key) ||
        (ts && !json_is_number(ts))) {
      set_err(errstr, errlen, "Records[%zu] has an unexpected shape", i);
      goto fail;
    }
    k->partition_key = json_string_value(pk);
    k->pk_len = json_string_length(pk);
    k->approximate_arrival = ts ? json_number_value(ts) : 0;
    long long dn = decode_base64(json_string_value(d), json_string_length(d), p);
    if (dn < 0) {
      set_err(errstr, errlen, "Records[%zu]: Data is not valid base64", i);
      goto fail;
    }
    k->data = p;
    k->data_len = (size_t)dn;
    p += dn;
  }
  res->n = n;
  res->json_ = root;
  return 0;
fail:
  free(res->records);
  free(res->data_);
  json_decref(root);
  memset(res, 0, sizeof *res);
  res->millis_behind_latest = -1;
  return rc;
}

void kp_get_records_result_free(kp_get_records_result *res) {
  if (!res)
    return;
  free(res->records);
  free(res->data_);
  json_decref(res->json_);
  memset(res, 0, sizeof *res);
  res->millis_behind_latest = -1;
}
