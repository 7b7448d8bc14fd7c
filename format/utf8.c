#include "format/utf8.h"

#include <string.h>

size_t kp_utf8_seq_len(const uint8_t *s, size_t n) {
  if (!n)
    return 0;
  unsigned c = s[0];
  size_t extra;
  unsigned lo = 0x80, hi = 0xBF; /* allowed range of the 2nd byte (RFC 3629 table) */
  if (c < 0x80)
    return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    extra = 1;
  } else if (c >= 0xE0 && c <= 0xEF) {
    extra = 2;
    if (c == 0xE0)
      lo = 0xA0; /* overlong */
    else if (c == 0xED)
      hi = 0x9F; /* surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    extra = 3;
    if (c == 0xF0)
      lo = 0x90; /* overlong */
    else if (c == 0xF4)
      hi = 0x8F; /* above U+10FFFF */
  } else {
    return 0;
  }
  if (n <= extra || s[1] < lo || s[1] > hi)
    return 0;
  for (size_t k = 2; k <= extra; k++)
    if ((s[k] & 0xC0) != 0x80)
      return 0;
  return extra + 1;
}

long kp_utf8_count(const char *str, size_t len, size_t *bad_offset) {
  const uint8_t *s = (const uint8_t *)str;
  long n = 0;
  size_t i = 0;
  /* Partition keys are mostly ASCII: eight bytes per test while no high bit is set. */
  for (; i + 8 <= len; i += 8, n += 8) {
    uint64_t w;
    memcpy(&w, s + i, 8);
    if (w & 0x8080808080808080ull)
      break;
  }
  while (i < len) {
    size_t l = kp_utf8_seq_len(s + i, len - i);
    if (!l) {
      if (bad_offset)
        *bad_offset = i;
      return -1;
    }
    i += l;
    n++;
  }
  return n;
}

int kp_utf8_append_lossy(kp_buf *out, const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    size_t l = kp_utf8_seq_len(s + i, n - i);
    if (l ? kp_buf_append(out, s + i, l) : kp_buf_append(out, "\xEF\xBF\xBD", 3))
      return -1;
    i += l ? l : 1;
  }
  return 0;
}
