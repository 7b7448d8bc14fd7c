/* UTF-8 validation (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF),
 * shared by record validation in the daemon and the client, and by the CLIs that must
 * turn arbitrary partition-key bytes into valid JSON. */
#ifndef KP_FORMAT_UTF8_H
#define KP_FORMAT_UTF8_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* Length (1..4) of the valid UTF-8 sequence starting at s[0], or 0 if the bytes there
 * are not one (n is how many bytes are available). */
size_t kp_utf8_seq_len(const uint8_t *s, size_t n);

/* Code points in s, or -1 if s is not valid UTF-8; then *bad_offset (if not NULL)
 * holds the offset of the first invalid sequence. */
long kp_utf8_count(const char *s, size_t len, size_t *bad_offset);

/* Appends s to out with every invalid sequence replaced by U+FFFD (one per bad byte).
 * Returns 0, or -1 on allocation failure. */
int kp_utf8_append_lossy(kp_buf *out, const uint8_t *s, size_t n);

#endif
