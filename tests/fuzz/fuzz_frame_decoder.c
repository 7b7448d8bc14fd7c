// KP_TEST_LIBS: kp_ipc kp_proto
/* Feeds the frame decoder a stream cut into chunks whose sizes come from the input, and
 * checks it against a one-shot reference parse of the same bytes.
 *
 * Input: [max selector][k][k chunk sizes][stream ...]. Each chunk is copied into its
 * own exact-size allocation so ASan catches any read past a chunk, and scribbled over
 * after it is drained so a dangling pointer into it shows up as a content mismatch. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ipc/frame.h"

#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c))                                                                                      \
      abort();                                                                                     \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  /* Small maxima exercise rejection; 0 keeps the 11 MiB default in play. */
  uint32_t max = data[0] == 0 ? 0 : (uint32_t)data[0] * 37u;
  size_t k = data[1] % 16 + 1;
  if (size < 2 + k)
    return 0;
  const uint8_t *sizes = data + 2;
  const uint8_t *s = data + 2 + k;
  size_t n = size - 2 - k;

  kp_frame_decoder d;
  kp_frame_decoder_init(&d, max);
  uint32_t eff_max = max ? max : KP_FRAME_MAX_DEFAULT;

  /* Reference walk over the whole stream, advanced as the decoder yields frames. */
  size_t ref_off = 0;
  uint64_t yielded_bytes = 0;
  int err = 0;
  size_t off = 0;
  for (size_t i = 0; off < n || i == 0; i++) {
    CHECK(i <= (n + 1) * k); /* bounded: every k chunks consume at least one byte */
    size_t c = sizes[i % k] % 200;
    if (c == 0 && i % k == k - 1)
      c = 1;
    if (c > n - off)
      c = n - off;
    uint8_t *chunk = malloc(c ? c : 1);
    CHECK(chunk);
    memcpy(chunk, s + off, c);
    int rc = kp_frame_decoder_feed(&d, chunk, c);
    off += c;
    if (err) {
      CHECK(rc == err);
    } else {
      CHECK(rc == 0);
      const uint8_t *p;
      size_t len;
      while ((rc = kp_frame_decoder_next(&d, &p, &len)) == 1) {
        CHECK(p != NULL);
        CHECK(len <= eff_max);
        /* The reference must have this exact frame next, wholly within what was fed. */
        CHECK(n - ref_off >= KP_FRAME_HEADER_SIZE);
        uint32_t want = kp_frame_get_header(s + ref_off);
        CHECK(want == len);
        CHECK(ref_off + KP_FRAME_HEADER_SIZE + len <= off);
        CHECK(len == 0 || memcmp(p, s + ref_off + KP_FRAME_HEADER_SIZE, len) == 0);
        ref_off += KP_FRAME_HEADER_SIZE + len;
        yielded_bytes += KP_FRAME_HEADER_SIZE + len;
      }
      if (rc < 0) {
        /* Only an over-long header can fail, and it must be the reference's next one. */
        CHECK(rc == KP_FRAME_E_TOO_LARGE);
        CHECK(n - ref_off >= KP_FRAME_HEADER_SIZE);
        CHECK(kp_frame_get_header(s + ref_off) > eff_max);
        CHECK(ref_off + KP_FRAME_HEADER_SIZE <= off);
        err = rc;
        const uint8_t *p2;
        size_t l2;
        CHECK(kp_frame_decoder_next(&d, &p2, &l2) == err);
      } else {
        CHECK(rc == 0);
        CHECK(kp_frame_decoder_unread(&d) == 0);
        /* Everything fed is either yielded or held for the frame in progress. */
        CHECK(d.bytes_in == off);
        CHECK(yielded_bytes + kp_frame_decoder_buffered(&d) == off);
      }
    }
    /* Memory tracks the frame in progress, never more than the max. */
    CHECK(d.asm_cap <= eff_max);
    memset(chunk, 0x5A, c);
    free(chunk);
  }

  int fin = kp_frame_decoder_finish(&d);
  if (err) {
    CHECK(fin == err);
  } else if (ref_off == n) {
    CHECK(fin == 0);
  } else {
    /* Leftover bytes are an incomplete frame whose header (if whole) is within max. */
    CHECK(fin == KP_FRAME_E_TRUNCATED);
    if (n - ref_off >= KP_FRAME_HEADER_SIZE) {
      uint32_t want = kp_frame_get_header(s + ref_off);
      CHECK(want <= eff_max);
      CHECK(n - ref_off - KP_FRAME_HEADER_SIZE < want);
    }
  }
  kp_frame_decoder_free(&d);
  return 0;
}
