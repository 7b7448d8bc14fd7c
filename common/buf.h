/* A growable byte buffer, shared by the codecs that build output incrementally
 * (aggregated records, request bodies, frames). Header-only. */
#ifndef KP_COMMON_BUF_H
#define KP_COMMON_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct kp_buf {
  uint8_t *data;
  size_t len;
  size_t cap;
} kp_buf;

#define KP_BUF_INIT                                                                                \
  { NULL, 0, 0 }

/* Makes room for `extra` more bytes. Returns 0, or -1 on allocation failure (the
 * buffer is unchanged). Growth is geometric so appends are amortised O(1). */
static inline int kp_buf_reserve(kp_buf *b, size_t extra) {
  if (extra <= b->cap - b->len)
    return 0;
  size_t need = b->len + extra;
  if (need < b->len)
    return -1;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  uint8_t *p = (uint8_t *)realloc(b->data, cap);
  if (!p)
    return -1;
  b->data = p;
  b->cap = cap;
  return 0;
}

static inline int kp_buf_append(kp_buf *b, const void *p, size_t n) {
  if (kp_buf_reserve(b, n))
    return -1;
  if (n)
    memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

static inline int kp_buf_append_str(kp_buf *b, const char *s) {
  return kp_buf_append(b, s, strlen(s));
}

static inline void kp_buf_reset(kp_buf *b) {
  b->len = 0;
}

static inline void kp_buf_free(kp_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

#endif
