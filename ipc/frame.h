/* Framing codec for the KPL IPC stream: each frame is a 4-byte big-endian unsigned
 * length followed by that many payload bytes (one serialized protobuf `Message`, but
 * this layer does not look inside). No I/O here: the channel (ipc/channel.h) or a
 * test feeds bytes in and gets frames out.
 *
 * Decoding is pull-based so that one read() chunk full of small frames costs no
 * allocation and no copy:
 *
 *     kp_frame_decoder_feed(&d, buf, n);
 *     const uint8_t *p; size_t len; int rc;
 *     while ((rc = kp_frame_decoder_next(&d, &p, &len)) == 1)
 *       handle(p, len);
 *     if (rc < 0) ... stream is dead, see kp_frame_strerror(rc) ...
 *
 * A frame lying wholly inside the fed chunk is returned as a pointer into that chunk;
 * one straddling chunks is assembled in an internal buffer that grows only as its
 * bytes actually arrive (a header that lies about its length costs nothing).
 * Thread-safety: none; one decoder per stream, used by one thread at a time. */
#ifndef KP_IPC_FRAME_H
#define KP_IPC_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

struct ProtobufCMessage;

#define KP_FRAME_HEADER_SIZE 4
/* The KPL's own cap on a frame; a larger one means the peer is broken or hostile. */
#define KP_FRAME_MAX_DEFAULT (11u * 1024u * 1024u)

/* Error codes. They live far from errno values so that the channel can report either
 * kind through one int (see kp_channel_strerror). */
typedef enum kp_frame_err {
  KP_FRAME_OK = 0,
  KP_FRAME_E_TOO_LARGE = -4001, /* length field (or payload to encode) exceeds the max */
  KP_FRAME_E_NOMEM = -4002,     /* could not grow the assembly or output buffer */
  KP_FRAME_E_TRUNCATED = -4003, /* stream ended inside a frame (kp_frame_decoder_finish) */
  KP_FRAME_E_BUSY = -4004,      /* feed() before the previous chunk was drained */
  KP_FRAME_E_INVAL = -4005,     /* bad argument (e.g. NULL data with non-zero length) */
} kp_frame_err;

/* Static English text for any kp_frame_err; "unknown frame error" otherwise. */
const char *kp_frame_strerror(int err);

/* ---- Encoding ---------------------------------------------------------------- */

static inline void kp_frame_put_header(uint8_t out[KP_FRAME_HEADER_SIZE], uint32_t len) {
  out[0] = (uint8_t)(len >> 24);
  out[1] = (uint8_t)(len >> 16);
  out[2] = (uint8_t)(len >> 8);
  out[3] = (uint8_t)len;
}

static inline uint32_t kp_frame_get_header(const uint8_t in[KP_FRAME_HEADER_SIZE]) {
  return (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 | in[3];
}

/* Appends header + payload to `b` with a single reservation. Returns 0,
 * KP_FRAME_E_TOO_LARGE if len > max_len (0 = no limit beyond the 32-bit field),
 * KP_FRAME_E_NOMEM, or KP_FRAME_E_INVAL; on error `b` is unchanged. */
int kp_frame_append(kp_buf *b, const void *payload, size_t len, uint32_t max_len);

/* Serializes a protobuf-c message straight into `b` as one frame (no intermediate
 * copy). Same returns as kp_frame_append; on error `b` is unchanged. */
int kp_frame_append_pb(kp_buf *b, const struct ProtobufCMessage *msg, uint32_t max_len);

/* For payloads built in place: kp_frame_begin reserves the header and records where
 * it is in *mark; the caller appends the payload to `b`; kp_frame_end fills in the
 * length. If the payload turned out larger than max_len (0 = 32-bit limit) kp_frame_end
 * drops the whole frame from `b` and returns KP_FRAME_E_TOO_LARGE. */
int kp_frame_begin(kp_buf *b, size_t *mark);
int kp_frame_end(kp_buf *b, size_t mark, uint32_t max_len);

/* ---- Decoding ---------------------------------------------------------------- */

/* Fields are private; the struct is public only so it can be embedded without an
 * allocation. */
typedef struct kp_frame_decoder {
  uint32_t max_len;
  int err;           /* sticky: once set, every call returns it */
  const uint8_t *in; /* unconsumed rest of the fed chunk (borrowed) */
  size_t in_len;
  uint8_t hdr[KP_FRAME_HEADER_SIZE]; /* header bytes split across chunks */
  uint8_t hdr_have;
  uint8_t in_payload; /* 1 while assembling a payload in asm_buf */
  uint32_t need;      /* payload length of the frame being assembled */
  uint8_t *asm_buf;   /* owned; holds a frame that straddled chunks */
  size_t asm_len, asm_cap;
  uint64_t bytes_in; /* total fed, for consistency checks and stats */
  uint64_t frames_out;
  uint8_t skip_oversized; /* report oversized frames and discard them, not fail */
  uint64_t skip;          /* payload bytes of an oversized frame still to discard */
} kp_frame_decoder;

/* kp_frame_decoder_next's answer for an oversized frame in skip mode: *len holds the
 * claimed length, *payload is NULL, and the payload is discarded as it arrives. */
#define KP_FRAME_SKIPPED 2

/* max_len: largest accepted payload; 0 selects KP_FRAME_MAX_DEFAULT. No allocation. */
void kp_frame_decoder_init(kp_frame_decoder *d, uint32_t max_len);

/* With on != 0, a frame over max_len is reported once (KP_FRAME_SKIPPED) and its
 * payload discarded, so one bad frame does not end the stream; without it (default),
 * KP_FRAME_E_TOO_LARGE is sticky. Either way nothing of the claimed size is allocated. */
void kp_frame_decoder_set_skip_oversized(kp_frame_decoder *d, int on);

/* Releases the assembly buffer; the decoder may be re-initialised afterwards. */
void kp_frame_decoder_free(kp_frame_decoder *d);

/* Hands the decoder the next chunk of the stream. The chunk is borrowed, not copied,
 * until kp_frame_decoder_next has returned 0 (any bytes of an incomplete frame are
 * copied out by then), so the caller may then reuse its buffer. Returns 0, the sticky
 * error, KP_FRAME_E_BUSY if the previous chunk still holds unread frames (nothing is
 * changed: a programming error, not a stream error), or KP_FRAME_E_INVAL. */
int kp_frame_decoder_feed(kp_frame_decoder *d, const uint8_t *p, size_t n);

/* Yields the next whole frame: returns 1 and sets *payload and *len (payload is non-NULL
 * even when len is 0); 0 when the fed chunk is used up (feed more); or a negative
 * kp_frame_err, after which the decoder stays failed. *payload points into the fed
 * chunk or into the decoder, and is valid until the next call on this decoder or until
 * the chunk's buffer is reused, whichever is first. */
int kp_frame_decoder_next(kp_frame_decoder *d, const uint8_t **payload, size_t *len);

/* For end of stream: 0 if the stream ended on a frame boundary with every frame
 * taken, KP_FRAME_E_TRUNCATED if it ended inside a frame, KP_FRAME_E_BUSY if frames
 * are still unread, or the sticky error. */
int kp_frame_decoder_finish(const kp_frame_decoder *d);

/* Bytes held for an incomplete frame (header and payload so far), excluding the
 * unread part of the current chunk. */
size_t kp_frame_decoder_buffered(const kp_frame_decoder *d);

/* Unread bytes of the current chunk; 0 means feed() may be called. */
static inline size_t kp_frame_decoder_unread(const kp_frame_decoder *d) {
  return d->in_len;
}

#endif
