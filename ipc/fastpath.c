#include "ipc/fastpath.h"

#include <string.h>

#include "format/pbwire.h"

/* Field numbers (proto/messages.proto). */
enum {
  MSG_ID = 1,
  MSG_SOURCE_ID = 2,
  MSG_PUT_RECORD = 3,
  MSG_RESULT = 5,
  MSG_BATCH = 200,
  MSG_PUT_RECORD_REF = 201
};
enum { PR_STREAM = 1, PR_PK = 2, PR_EHK = 3, PR_DATA = 4 };
enum { REF_OFFSET = 4, REF_LENGTH = 5 }; /* PutRecordRef: 1..3 as PutRecord's */
enum { RES_ATTEMPTS = 1, RES_SUCCESS = 2, RES_SHARD = 3, RES_SEQ = 4 };
enum { RB_SHARD = 1, RB_SEQ = 2, RB_DURATION = 3, RB_IDS = 4, RB_DELAYS = 5 };
enum { AT_DELAY = 1, AT_DURATION = 2, AT_SUCCESS = 3, AT_CODE = 4, AT_MESSAGE = 5 };

/* One field: its number, wire type and value (varint, or a byte range). */
typedef struct field {
  uint32_t num;
  unsigned wt;
  uint64_t v;
  const uint8_t *p;
  size_t len;
} field;

/* Reads the next field of [*at, end); 1 if one was read, 0 at the end, -1 if the bytes
 * are not a varint or length-delimited field (the fast path takes nothing else). */
static int next_field(const uint8_t **at, const uint8_t *end, field *f) {
  if (*at == end)
    return 0;
  uint64_t tag;
  if (pb_get_varint(at, end, &tag) || (tag >> 3) == 0 || (tag >> 3) > UINT32_MAX)
    return -1;
  f->num = (uint32_t)(tag >> 3);
  f->wt = (unsigned)(tag & 7);
  if (f->wt == PB_WT_VARINT)
    return pb_get_varint(at, end, &f->v) ? -1 : 1;
  if (f->wt != PB_WT_LEN)
    return -1;
  uint64_t n;
  if (pb_get_varint(at, end, &n) || n > (uint64_t)(end - *at))
    return -1;
  f->p = *at;
  f->len = (size_t)n;
  *at += n;
  return 1;
}

static kp_fast_str str_of(const field *f) {
  return (kp_fast_str){(const char *)f->p, f->len};
}

/* Walks a Message: its id, optional source_id and exactly one LEN field numbered
 * `body` or `body2` (0: none), each at most once; anything else sends the caller to
 * protobuf-c. inner->num says which body it was. */
static kp_fast_rc decode_message2(const uint8_t *buf, size_t len, uint32_t body, uint32_t body2,
                                  uint64_t *id, uint64_t *source_id, field *inner) {
  const uint8_t *at = buf, *end = buf + len;
  unsigned seen = 0;
  field f = {0};
  int rc;
  while ((rc = next_field(&at, end, &f)) == 1) {
    unsigned bit;
    if (f.num == MSG_ID && f.wt == PB_WT_VARINT) {
      *id = f.v;
      bit = 1;
    } else if (f.num == MSG_SOURCE_ID && f.wt == PB_WT_VARINT) {
      *source_id = f.v;
      bit = 2;
    } else if ((f.num == body || (body2 && f.num == body2)) && f.wt == PB_WT_LEN) {
      *inner = f;
      bit = 4;
    } else {
      return KP_FAST_FALLBACK;
    }
    if (seen & bit)
      return KP_FAST_FALLBACK; /* repeated: protobuf-c's last-wins/merge rules apply */
    seen |= bit;
  }
  if (rc < 0 || !(seen & 1) || !(seen & 4))
    return KP_FAST_FALLBACK;
  return KP_FAST_OK;
}

static kp_fast_rc decode_message(const uint8_t *buf, size_t len, uint32_t body, uint64_t *id,
                                 uint64_t *source_id, field *inner) {
  return decode_message2(buf, len, body, 0, id, source_id, inner);
}

kp_fast_rc kp_fast_decode_put_record(const uint8_t *buf, size_t len, kp_fast_put_record *out) {
  uint64_t source_id = 0;
  field inner = {0};
  memset(out, 0, sizeof *out);
  kp_fast_rc rc =
      decode_message2(buf, len, MSG_PUT_RECORD, MSG_PUT_RECORD_REF, &out->id, &source_id, &inner);
  if (rc != KP_FAST_OK)
    return rc;
  out->by_ref = inner.num == MSG_PUT_RECORD_REF;
  const uint8_t *at = inner.p, *end = inner.p + inner.len;
  unsigned seen = 0;
  field f = {0};
  int r;
  while ((r = next_field(&at, end, &f)) == 1) {
    /* Fields 1..3 are strings in both; 4 is data (PutRecord) or the offset, 5 the
     * length (PutRecordRef, varints: a uint32 past 32 bits is left to protobuf-c). */
    unsigned last = out->by_ref ? REF_LENGTH : PR_DATA;
    unsigned wt = f.num <= PR_EHK || !out->by_ref ? PB_WT_LEN : PB_WT_VARINT;
    if (f.wt != wt || f.num < PR_STREAM || f.num > last || (seen & (1u << f.num)))
      return KP_FAST_FALLBACK;
    seen |= 1u << f.num;
    kp_fast_str s = str_of(&f);
    if (f.num == PR_STREAM) {
      out->stream = s;
    } else if (f.num == PR_PK) {
      out->partition_key = s;
    } else if (f.num == PR_EHK) {
      out->explicit_hash_key = s;
    } else if (!out->by_ref) {
      out->data = s;
    } else if (f.num == REF_OFFSET) {
      out->data_offset = f.v;
    } else {
      if (f.v > UINT32_MAX)
        return KP_FAST_FALLBACK;
      out->data.len = (size_t)f.v;
    }
  }
  unsigned required = (1u << PR_STREAM) | (1u << PR_PK) |
                      (out->by_ref ? (1u << REF_OFFSET) | (1u << REF_LENGTH) : (1u << PR_DATA));
  if (r < 0 || (seen & required) != required)
    return KP_FAST_FALLBACK;
  return KP_FAST_OK; /* a present field's view points into buf even when empty */
}

kp_fast_rc kp_fast_decode_result(const uint8_t *buf, size_t len, kp_fast_result *out) {
  field inner = {0};
  memset(out, 0, sizeof *out);
  kp_fast_rc rc = decode_message(buf, len, MSG_RESULT, &out->id, &out->source_id, &inner);
  if (rc != KP_FAST_OK)
    return rc;
  const uint8_t *at = inner.p, *end = inner.p + inner.len;
  unsigned seen = 0;
  bool attempts_done = false;
  field f = {0};
  int r;
  const uint8_t *field_at = at;
  while ((r = next_field(&at, end, &f)) == 1) {
    if (f.num == RES_ATTEMPTS && f.wt == PB_WT_LEN) {
      /* Attempts must be one contiguous run, as pack writes them. */
      if (attempts_done)
        return KP_FAST_FALLBACK;
      if (!out->n_attempts)
        out->attempts_at = field_at;
      out->attempts_end = f.p + f.len;
      out->n_attempts++;
      field_at = at;
      const uint8_t *fa = f.p, *fe = f.p + f.len;
      field g = {0};
      int gr;
      unsigned gseen = 0;
      while ((gr = next_field(&fa, fe, &g)) == 1) {
        bool ok = g.num >= AT_DELAY && g.num <= AT_MESSAGE && !(gseen & (1u << g.num)) &&
                  (g.num <= AT_SUCCESS ? g.wt == PB_WT_VARINT : g.wt == PB_WT_LEN);
        if (!ok)
          return KP_FAST_FALLBACK;
        gseen |= 1u << g.num;
      }
      unsigned req = (1u << AT_DELAY) | (1u << AT_DURATION) | (1u << AT_SUCCESS);
      if (gr < 0 || (gseen & req) != req)
        return KP_FAST_FALLBACK;
      continue;
    }
    field_at = at;
    if (out->n_attempts)
      attempts_done = true;
    if (f.num < RES_SUCCESS || f.num > RES_SEQ || (seen & (1u << f.num)))
      return KP_FAST_FALLBACK;
    seen |= 1u << f.num;
    if (f.num == RES_SUCCESS) {
      if (f.wt != PB_WT_VARINT)
        return KP_FAST_FALLBACK;
      out->success = f.v != 0;
    } else {
      if (f.wt != PB_WT_LEN)
        return KP_FAST_FALLBACK;
      kp_fast_str s = str_of(&f);
      if (f.num == RES_SHARD)
        out->shard_id = s;
      else
        out->sequence_number = s;
    }
  }
  if (r < 0 || !(seen & (1u << RES_SUCCESS)))
    return KP_FAST_FALLBACK;
  return KP_FAST_OK;
}

kp_fast_rc kp_fast_result_attempt(const kp_fast_result *r, size_t i, kp_fast_attempt *out) {
  const uint8_t *at = r->attempts_at, *end = r->attempts_end;
  field f = {0};
  memset(out, 0, sizeof *out);
  for (size_t k = 0; k <= i; k++) {
    if (next_field(&at, end, &f) != 1 || f.num != RES_ATTEMPTS)
      return KP_FAST_MALFORMED;
  }
  const uint8_t *fa = f.p, *fe = f.p + f.len;
  field g = {0};
  while (next_field(&fa, fe, &g) == 1) {
    switch (g.num) {
    case AT_DELAY:
      out->delay_ms = (uint32_t)g.v;
      break;
    case AT_DURATION:
      out->duration_ms = (uint32_t)g.v;
      break;
    case AT_SUCCESS:
      out->success = g.v != 0;
      break;
    case AT_CODE:
      out->error_code = str_of(&g);
      break;
    case AT_MESSAGE:
      out->error_message = str_of(&g);
      break;
    }
  }
  return KP_FAST_OK;
}

/* Counts the varints of a packed run; -1 if one is malformed or, with max32, >= 2^32. */
static long packed_count(const uint8_t *at, const uint8_t *end, bool max32) {
  long n = 0;
  while (at < end) {
    uint64_t v;
    if (pb_get_varint(&at, end, &v) || (max32 && v > UINT32_MAX))
      return -1;
    n++;
  }
  return n;
}

kp_fast_rc kp_fast_decode_result_batch(const uint8_t *buf, size_t len, kp_fast_result_batch *out) {
  uint64_t source_id = 0;
  field inner = {0};
  memset(out, 0, sizeof *out);
  kp_fast_rc rc = decode_message(buf, len, MSG_BATCH, &out->id, &source_id, &inner);
  if (rc != KP_FAST_OK)
    return rc;
  const uint8_t *at = inner.p, *end = inner.p + inner.len;
  unsigned seen = 0;
  field f = {0};
  int r;
  while ((r = next_field(&at, end, &f)) == 1) {
    /* Packed runs only (an unpacked or split run is valid protobuf: protobuf-c's job). */
    unsigned want = f.num == RB_DURATION ? PB_WT_VARINT : PB_WT_LEN;
    if (f.num < RB_SHARD || f.num > RB_DELAYS || f.wt != want || (seen & (1u << f.num)))
      return KP_FAST_FALLBACK;
    seen |= 1u << f.num;
    switch (f.num) {
    case RB_SHARD:
      out->shard_id = str_of(&f);
      break;
    case RB_SEQ:
      out->sequence_number = str_of(&f);
      break;
    case RB_DURATION:
      if (f.v > UINT32_MAX)
        return KP_FAST_FALLBACK;
      out->duration_ms = (uint32_t)f.v;
      break;
    case RB_IDS:
      out->ids_at = f.p, out->ids_end = f.p + f.len;
      break;
    default:
      out->delays_at = f.p, out->delays_end = f.p + f.len;
      break;
    }
  }
  unsigned required = (1u << RB_SHARD) | (1u << RB_SEQ) | (1u << RB_DURATION);
  if (r < 0 || (seen & required) != required)
    return KP_FAST_FALLBACK;
  long ids = packed_count(out->ids_at, out->ids_end, false);
  long delays = packed_count(out->delays_at, out->delays_end, true);
  if (ids < 0 || delays < 0 || ids != delays)
    return KP_FAST_FALLBACK; /* protobuf-c decides what such a message is */
  out->n = (size_t)ids;
  return KP_FAST_OK;
}

bool kp_fast_batch_next(kp_fast_result_batch *b, uint64_t *source_id, uint32_t *delay_ms) {
  uint64_t id, d;
  if (b->ids_at >= b->ids_end || pb_get_varint(&b->ids_at, b->ids_end, &id) ||
      pb_get_varint(&b->delays_at, b->delays_end, &d))
    return false; /* validated by the decoder: only the end gets here */
  *source_id = id;
  *delay_ms = (uint32_t)d;
  return true;
}

/* ---- encoding ------------------------------------------------------------ */

static size_t varint_field_size(uint32_t num, uint64_t v) {
  return pb_varint_size(pb_tag(num, PB_WT_VARINT)) + pb_varint_size(v);
}

static uint8_t *put_varint_field(uint8_t *p, uint32_t num, uint64_t v) {
  p += pb_put_varint(p, pb_tag(num, PB_WT_VARINT));
  return p + pb_put_varint(p, v);
}

static uint8_t *put_len_field(uint8_t *p, uint32_t num, const void *data, size_t len) {
  p += pb_put_varint(p, pb_tag(num, PB_WT_LEN));
  p += pb_put_varint(p, len);
  if (len)
    memcpy(p, data, len);
  return p + len;
}

static uint8_t *put_len_header(uint8_t *p, uint32_t num, size_t len) {
  p += pb_put_varint(p, pb_tag(num, PB_WT_LEN));
  return p + pb_put_varint(p, len);
}

static size_t put_record_inner_size(const kp_fast_put_record *r) {
  return pb_len_field_size(PR_STREAM, r->stream.len) +
         pb_len_field_size(PR_PK, r->partition_key.len) +
         (r->explicit_hash_key.p ? pb_len_field_size(PR_EHK, r->explicit_hash_key.len) : 0) +
         (r->by_ref ? varint_field_size(REF_OFFSET, r->data_offset) +
                          varint_field_size(REF_LENGTH, r->data.len)
                    : pb_len_field_size(PR_DATA, r->data.len));
}

size_t kp_fast_put_record_size(const kp_fast_put_record *r) {
  return varint_field_size(MSG_ID, r->id) +
         pb_len_field_size(r->by_ref ? MSG_PUT_RECORD_REF : MSG_PUT_RECORD,
                           put_record_inner_size(r));
}

uint8_t *kp_fast_write_put_record(uint8_t *p, const kp_fast_put_record *r) {
  p = put_varint_field(p, MSG_ID, r->id);
  p = put_len_header(p, r->by_ref ? MSG_PUT_RECORD_REF : MSG_PUT_RECORD, put_record_inner_size(r));
  p = put_len_field(p, PR_STREAM, r->stream.p, r->stream.len);
  p = put_len_field(p, PR_PK, r->partition_key.p, r->partition_key.len);
  if (r->explicit_hash_key.p)
    p = put_len_field(p, PR_EHK, r->explicit_hash_key.p, r->explicit_hash_key.len);
  if (!r->by_ref)
    return put_len_field(p, PR_DATA, r->data.p, r->data.len);
  p = put_varint_field(p, REF_OFFSET, r->data_offset);
  return put_varint_field(p, REF_LENGTH, r->data.len);
}

int kp_fast_encode_put_record(kp_buf *out, uint64_t id, kp_fast_str stream, kp_fast_str pk,
                              kp_fast_str ehk, kp_fast_str data) {
  kp_fast_put_record r = {
      .id = id, .stream = stream, .partition_key = pk, .data = data, .explicit_hash_key = ehk};
  size_t total = kp_fast_put_record_size(&r);
  if (kp_buf_reserve(out, total))
    return -1;
  kp_fast_write_put_record(out->data + out->len, &r);
  out->len += total;
  return 0;
}

static size_t attempt_size(const kp_fast_attempt *a) {
  return varint_field_size(AT_DELAY, a->delay_ms) + varint_field_size(AT_DURATION, a->duration_ms) +
         varint_field_size(AT_SUCCESS, a->success) +
         (a->error_code.p ? pb_len_field_size(AT_CODE, a->error_code.len) : 0) +
         (a->error_message.p ? pb_len_field_size(AT_MESSAGE, a->error_message.len) : 0);
}

int kp_fast_encode_result(kp_buf *out, uint64_t id, uint64_t source_id, bool success,
                          kp_fast_str shard_id, kp_fast_str sequence_number,
                          const kp_fast_attempt *attempts, size_t n_attempts) {
  size_t inner = varint_field_size(RES_SUCCESS, success) +
                 (shard_id.p ? pb_len_field_size(RES_SHARD, shard_id.len) : 0) +
                 (sequence_number.p ? pb_len_field_size(RES_SEQ, sequence_number.len) : 0);
  for (size_t i = 0; i < n_attempts; i++)
    inner += pb_len_field_size(RES_ATTEMPTS, attempt_size(&attempts[i]));
  size_t total = varint_field_size(MSG_ID, id) + varint_field_size(MSG_SOURCE_ID, source_id) +
                 pb_len_field_size(MSG_RESULT, inner);
  if (kp_buf_reserve(out, total))
    return -1;
  uint8_t *p = out->data + out->len;
  p = put_varint_field(p, MSG_ID, id);
  p = put_varint_field(p, MSG_SOURCE_ID, source_id);
  p = put_len_header(p, MSG_RESULT, inner);
  for (size_t i = 0; i < n_attempts; i++) {
    const kp_fast_attempt *a = &attempts[i];
    p = put_len_header(p, RES_ATTEMPTS, attempt_size(a));
    p = put_varint_field(p, AT_DELAY, a->delay_ms);
    p = put_varint_field(p, AT_DURATION, a->duration_ms);
    p = put_varint_field(p, AT_SUCCESS, a->success);
    if (a->error_code.p)
      p = put_len_field(p, AT_CODE, a->error_code.p, a->error_code.len);
    if (a->error_message.p)
      p = put_len_field(p, AT_MESSAGE, a->error_message.p, a->error_message.len);
  }
  p = put_varint_field(p, RES_SUCCESS, success);
  if (shard_id.p)
    p = put_len_field(p, RES_SHARD, shard_id.p, shard_id.len);
  if (sequence_number.p)
    p = put_len_field(p, RES_SEQ, sequence_number.p, sequence_number.len);
  out->len += total;
  return 0;
}

int kp_fast_encode_result_batch(kp_buf *out, uint64_t id, kp_fast_str shard_id,
                                kp_fast_str sequence_number, uint32_t duration_ms,
                                const uint64_t *source_ids, const uint32_t *delays, size_t n) {
  size_t ids_len = 0, delays_len = 0;
  for (size_t i = 0; i < n; i++) {
    ids_len += pb_varint_size(source_ids[i]);
    delays_len += pb_varint_size(delays[i]);
  }
  size_t inner =
      pb_len_field_size(RB_SHARD, shard_id.len) + pb_len_field_size(RB_SEQ, sequence_number.len) +
      varint_field_size(RB_DURATION, duration_ms) +
      (n ? pb_len_field_size(RB_IDS, ids_len) + pb_len_field_size(RB_DELAYS, delays_len) : 0);
  size_t total = varint_field_size(MSG_ID, id) + pb_len_field_size(MSG_BATCH, inner);
  if (kp_buf_reserve(out, total))
    return -1;
  uint8_t *p = out->data + out->len;
  p = put_varint_field(p, MSG_ID, id);
  p = put_len_header(p, MSG_BATCH, inner);
  p = put_len_field(p, RB_SHARD, shard_id.p, shard_id.len);
  p = put_len_field(p, RB_SEQ, sequence_number.p, sequence_number.len);
  p = put_varint_field(p, RB_DURATION, duration_ms);
  if (n) {
    p = put_len_header(p, RB_IDS, ids_len);
    for (size_t i = 0; i < n; i++)
      p += pb_put_varint(p, source_ids[i]);
    p = put_len_header(p, RB_DELAYS, delays_len);
    for (size_t i = 0; i < n; i++)
      p += pb_put_varint(p, delays[i]);
  }
  out->len += total;
  return 0;
}
