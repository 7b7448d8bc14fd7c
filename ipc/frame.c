#include "ipc/frame.h"

#include <protobuf-c/protobuf-c.h>

/* An assembly buffer bigger than this is released once a smaller frame starts, so one
 * huge frame does not pin megabytes for the life of the stream. */
#define KP_FRAME_KEEP_CAP (1u << 20)
#define KP_FRAME_MIN_CAP 4096u

const char *kp_frame_strerror(int err) {
  switch (err) {
  case KP_FRAME_OK:
    return "success";
  case KP_FRAME_E_TOO_LARGE:
    return "frame length exceeds the maximum";
  case KP_FRAME_E_NOMEM:
    return "out of memory for frame";
  case KP_FRAME_E_TRUNCATED:
    return "stream ended inside a frame";
  case KP_FRAME_E_BUSY:
    return "previous chunk not fully decoded";
  case KP_FRAME_E_INVAL:
    return "invalid argument";
  default:
    return "unknown frame error";
  }
}

static uint32_t effective_max(uint32_t max_len) {
  return max_len ? max_len : UINT32_MAX;
}

int kp_frame_append(kp_buf *b, const void *payload, size_t len, uint32_t max_len) {
  if (!b || (!payload && len))
    return KP_FRAME_E_INVAL;
  if (len > effective_max(max_len))
    return KP_FRAME_E_TOO_LARGE;
  if (kp_buf_reserve(b, KP_FRAME_HEADER_SIZE + len))
    return KP_FRAME_E_NOMEM;
  kp_frame_put_header(b->data + b->len, (uint32_t)len);
  if (len)
    memcpy(b->data + b->len + KP_FRAME_HEADER_SIZE, payload, len);
  b->len += KP_FRAME_HEADER_SIZE + len;
  return 0;
}

int kp_frame_append_pb(kp_buf *b, const ProtobufCMessage *msg, uint32_t max_len) {
  if (!b || !msg)
    return KP_FRAME_E_INVAL;
  size_t len = protobuf_c_message_get_packed_size(msg);
  if (len > effective_max(max_len))
    return KP_FRAME_E_TOO_LARGE;
  if (kp_buf_reserve(b, KP_FRAME_HEADER_SIZE + len))
    return KP_FRAME_E_NOMEM;
  uint8_t *at = b->data + b->len;
  size_t packed = protobuf_c_message_pack(msg, at + KP_FRAME_HEADER_SIZE);
  if (packed != len) /* protobuf-c contract broken; never expose a bad frame */
    return KP_FRAME_E_INVAL;
  kp_frame_put_header(at, (uint32_t)len);
  b->len += KP_FRAME_HEADER_SIZE + len;
  return 0;
}

int kp_frame_begin(kp_buf *b, size_t *mark) {
  if (!b || !mark)
    return KP_FRAME_E_INVAL;
  if (kp_buf_reserve(b, KP_FRAME_HEADER_SIZE))
    return KP_FRAME_E_NOMEM;
  *mark = b->len;
  b->len += KP_FRAME_HEADER_SIZE;
  return 0;
}

int kp_frame_end(kp_buf *b, size_t mark, uint32_t max_len) {
  if (!b || mark > b->len || b->len - mark < KP_FRAME_HEADER_SIZE)
    return KP_FRAME_E_INVAL;
  size_t len = b->len - mark - KP_FRAME_HEADER_SIZE;
  if (len > effective_max(max_len)) {
    b->len = mark;
    return KP_FRAME_E_TOO_LARGE;
  }
  kp_frame_put_header(b->data + mark, (uint32_t)len);
  return 0;
}

void kp_frame_decoder_init(kp_frame_decoder *d, uint32_t max_len) {
  memset(d, 0, sizeof *d);
  d->max_len = max_len ? max_len : KP_FRAME_MAX_DEFAULT;
}

void kp_frame_decoder_free(kp_frame_decoder *d) {
  free(d->asm_buf);
  d->asm_buf = NULL;
  d->asm_len = d->asm_cap = 0;
  d->in = NULL;
  d->in_len = 0;
}

int kp_frame_decoder_feed(kp_frame_decoder *d, const uint8_t *p, size_t n) {
  if (d->err)
    return d->err;
  if (!p && n)
    return KP_FRAME_E_INVAL;
  if (d->in_len)
    return KP_FRAME_E_BUSY;
  d->in = p;
  d->in_len = n;
  d->bytes_in += n;
  return 0;
}

static int fail(kp_frame_decoder *d, int err) {
  d->err = err;
  d->in_len = 0; /* the rest of the stream is meaningless now */
  return err;
}

static void begin_payload(kp_frame_decoder *d, uint32_t len) {
  if (d->asm_cap > KP_FRAME_KEEP_CAP && len < KP_FRAME_KEEP_CAP) {
    free(d->asm_buf);
    d->asm_buf = NULL;
    d->asm_cap = 0;
  }
  d->in_payload = 1;
  d->need = len;
  d->asm_len = 0;
}

/* Grows the assembly buffer to hold `want` bytes, geometrically but never beyond the
 * frame's length, so memory tracks bytes received rather than bytes claimed. */
static int reserve_asm(kp_frame_decoder *d, size_t want) {
  if (want <= d->asm_cap)
    return 0;
  size_t cap = d->asm_cap ? d->asm_cap : KP_FRAME_MIN_CAP;
  while (cap < want)
    cap = cap > d->need / 2 ? d->need : cap * 2;
  if (cap > d->need)
    cap = d->need;
  uint8_t *p = realloc(d->asm_buf, cap);
  if (!p)
    return -1;
  d->asm_buf = p;
  d->asm_cap = cap;
  return 0;
}

void kp_frame_decoder_set_skip_oversized(kp_frame_decoder *d, int on) {
  d->skip_oversized = on != 0;
}

/* An oversized header: fail for good, or (skip mode) report it and discard its payload. */
static int oversized(kp_frame_decoder *d, uint32_t flen, const uint8_t **payload, size_t *len) {
  if (!d->skip_oversized)
    return fail(d, KP_FRAME_E_TOO_LARGE);
  d->skip = flen;
  *payload = NULL;
  *len = flen;
  return KP_FRAME_SKIPPED;
}

int kp_frame_decoder_next(kp_frame_decoder *d, const uint8_t **payload, size_t *len) {
  if (d->err)
    return d->err;
  if (d->skip) {
    if (!d->in_len)
      return 0;
    size_t take = d->in_len < d->skip ? d->in_len : (size_t)d->skip;
    d->in += take;
    d->in_len -= take;
    d->skip -= take;
    if (d->skip)
      return 0;
  }
  if (!d->in_payload) {
    uint32_t flen;
    if (d->hdr_have == 0 && d->in_len >= KP_FRAME_HEADER_SIZE) {
      /* Fast path: header in the chunk, and usually the whole frame too. */
      flen = kp_frame_get_header(d->in);
      if (flen > d->max_len) {
        d->in += KP_FRAME_HEADER_SIZE;
        d->in_len -= KP_FRAME_HEADER_SIZE;
        return oversized(d, flen, payload, len);
      }
      if (d->in_len - KP_FRAME_HEADER_SIZE >= flen) {
        *payload = d->in + KP_FRAME_HEADER_SIZE;
        *len = flen;
        d->in += KP_FRAME_HEADER_SIZE + (size_t)flen;
        d->in_len -= KP_FRAME_HEADER_SIZE + (size_t)flen;
        d->frames_out++;
        return 1;
      }
      d->in += KP_FRAME_HEADER_SIZE;
      d->in_len -= KP_FRAME_HEADER_SIZE;
    } else {
      if (!d->in_len)
        return 0; /* also keeps d->in (NULL before the first feed) out of arithmetic */
      size_t take = KP_FRAME_HEADER_SIZE - d->hdr_have;
      if (take > d->in_len)
        take = d->in_len;
      if (take)
        memcpy(d->hdr + d->hdr_have, d->in, take);
      d->hdr_have += (uint8_t)take;
      d->in += take;
      d->in_len -= take;
      if (d->hdr_have < KP_FRAME_HEADER_SIZE)
        return 0;
      d->hdr_have = 0;
      flen = kp_frame_get_header(d->hdr);
      if (flen > d->max_len)
        return oversized(d, flen, payload, len);
      if (flen == 0) {
        *payload = d->hdr; /* any non-NULL pointer will do */
        *len = 0;
        d->frames_out++;
        return 1;
      }
    }
    begin_payload(d, flen);
  }
  size_t take = d->need - d->asm_len;
  if (take > d->in_len)
    take = d->in_len;
  if (take) {
    if (reserve_asm(d, d->asm_len + take))
      return fail(d, KP_FRAME_E_NOMEM);
    memcpy(d->asm_buf + d->asm_len, d->in, take);
    d->asm_len += take;
    d->in += take;
    d->in_len -= take;
  }
  if (d->asm_len < d->need)
    return 0;
  d->in_payload = 0;
  *payload = d->asm_buf;
  *len = d->need;
  d->frames_out++;
  return 1;
}

int kp_frame_decoder_finish(const kp_frame_decoder *d) {
  if (d->err)
    return d->err;
  if (d->in_len)
    return KP_FRAME_E_BUSY;
  if (d->in_payload || d->hdr_have || d->skip)
    return KP_FRAME_E_TRUNCATED;
  return 0;
}

size_t kp_frame_decoder_buffered(const kp_frame_decoder *d) {
  return d->in_payload ? KP_FRAME_HEADER_SIZE + d->asm_len : d->hdr_have;
}
