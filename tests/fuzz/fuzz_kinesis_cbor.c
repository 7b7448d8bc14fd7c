// KP_TEST_LIBS: kp_producer_api kp_format
/* Fuzzes the CBOR answers the daemon decodes (producer/kinesis_cbor.c over
 * format/cbor_walk.c). The first byte is the number of records expected; the rest is the
 * body. Invariants: decoding never crashes; on success every outcome is either a success
 * with shard and sequence number or a failure with a code, failures are counted, and
 * every string is NUL-terminated where its length says; on failure the result is empty.
 * A body we encode ourselves and wrap in a minimal answer always decodes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "format/cbor_walk.h"
#include "producer/kinesis_cbor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c))                                                                                      \
      abort();                                                                                     \
  } while (0)

static int count_cb(void *ud, const kp_cbor_item *it, const kp_cbor_level *lv) {
  CHECK(it->depth >= 0 && it->depth < KP_CBOR_MAX_DEPTH + 1);
  (*(size_t *)ud)++;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  size_t n = data[0];
  const uint8_t *body = data + 1;
  size_t len = size - 1;

  kp_put_records_result r;
  char err[256];
  if (kp_put_records_decode_cbor(body, len, n, &r, err, sizeof err) == 0) {
    CHECK(r.n == n);
    size_t failed = 0;
    for (size_t i = 0; i < n; i++) {
      const kp_put_record_outcome *o = &r.records[i];
      if (o->success) {
        CHECK(o->shard_id && o->sequence_number && !o->error_code);
      } else {
        CHECK(o->error_code && o->error_message && !o->shard_id && !o->sequence_number);
        failed++;
      }
    }
    CHECK(failed == r.failed_record_count);
    kp_put_records_result_free(&r);
  } else {
    CHECK(r.records == NULL && r.n == 0);
  }

  kp_api_error e;
  if (kp_api_error_decode_cbor(body, len, &e, err, sizeof err) == 0)
    CHECK(e.code[0] && strlen(e.code) < sizeof e.code && strlen(e.message) < sizeof e.message);
  else
    CHECK(!e.code[0]);

  size_t items = 0;
  (void)kp_cbor_walk(body, len, count_cb, &items, NULL, 0);
  CHECK(items <= 2 * len + 1); /* an item takes a byte at least; ends too, once each */

  /* Our own request encoding of the input as one record's data and key parses as CBOR. */
  kp_buf b = KP_BUF_INIT;
  kp_put_entry ent = {body, len, "k", 1, NULL, 0, 0, NULL, 0};
  if (kp_put_records_encode_cbor(&b, "s", 1, &ent, 1) == 0) {
    size_t m = 0;
    CHECK(kp_cbor_walk(b.data, b.len, count_cb, &m, NULL, 0) == 0);
    CHECK(m == 9); /* map, StreamName, array, record map, Data, PartitionKey and 3 ends */
  }
  kp_buf_free(&b);
  return 0;
}
