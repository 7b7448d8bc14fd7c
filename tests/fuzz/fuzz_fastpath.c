// KP_TEST_LIBS: kp_ipc kp_proto
/* Differential fuzzing: whenever a fast decoder accepts bytes, protobuf-c must accept
 * them too and see the same fields, and re-encoding must give the same bytes back. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ipc/fastpath.h"
#include "proto/messages.pb-c.h"

static void same_str(kp_fast_str s, const char *c) {
  /* protobuf-c strings are C strings: compare up to an embedded NUL. */
  if (!c || strlen(c) > s.len || memcmp(s.p, c, strlen(c)) != 0 ||
      (strlen(c) < s.len && memchr(s.p, 0, s.len) == NULL))
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kp_fast_put_record pr;
  if (kp_fast_decode_put_record(data, size, &pr) == KP_FAST_OK) {
    Kpl__Message *m = kpl__message__unpack(NULL, size, data);
    if (!m || m->id != pr.id)
      abort();
    if (pr.by_ref) {
      const Kpl__PutRecordRef *rr = m->put_record_ref;
      if (m->actual_message_case != KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD_REF ||
          rr->data_offset != pr.data_offset || rr->data_length != pr.data.len ||
          pr.data.p != NULL || (rr->explicit_hash_key == NULL) != (pr.explicit_hash_key.p == NULL))
        abort();
      same_str(pr.stream, rr->stream_name);
      same_str(pr.partition_key, rr->partition_key);
    } else {
      if (m->actual_message_case != KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD ||
          m->put_record->data.len != pr.data.len ||
          (pr.data.len && memcmp(m->put_record->data.data, pr.data.p, pr.data.len)) ||
          (m->put_record->explicit_hash_key == NULL) != (pr.explicit_hash_key.p == NULL))
        abort();
      same_str(pr.stream, m->put_record->stream_name);
      same_str(pr.partition_key, m->put_record->partition_key);
    }
    /* Re-encoding gives what protobuf-c packs, byte for byte. */
    size_t n = kp_fast_put_record_size(&pr), pn = kpl__message__get_packed_size(m);
    uint8_t *mine = malloc(n ? n : 1), *theirs = malloc(pn ? pn : 1);
    if (!mine || !theirs || kp_fast_write_put_record(mine, &pr) != mine + n)
      abort();
    kpl__message__pack(m, theirs);
    kp_fast_put_record again;
    if (kp_fast_decode_put_record(mine, n, &again) != KP_FAST_OK || again.id != pr.id ||
        again.data.len != pr.data.len || again.by_ref != pr.by_ref ||
        again.data_offset != pr.data_offset)
      abort();
    /* Same bytes as protobuf-c packs, unless the input had what our record does not
     * carry (a source_id) or a string with a NUL, which protobuf-c's C strings cut
     * short. */
    bool comparable =
        !m->has_source_id && !memchr(pr.stream.p, 0, pr.stream.len) &&
        !memchr(pr.partition_key.p, 0, pr.partition_key.len) &&
        !(pr.explicit_hash_key.p && memchr(pr.explicit_hash_key.p, 0, pr.explicit_hash_key.len));
    if (comparable && (n != pn || memcmp(mine, theirs, n) != 0))
      abort();
    free(mine);
    free(theirs);
    kpl__message__free_unpacked(m, NULL);
  }
  kp_fast_result r;
  if (kp_fast_decode_result(data, size, &r) == KP_FAST_OK) {
    Kpl__Message *m = kpl__message__unpack(NULL, size, data);
    if (!m || m->actual_message_case != KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD_RESULT ||
        m->id != r.id || m->source_id != r.source_id ||
        m->put_record_result->success != r.success ||
        m->put_record_result->n_attempts != r.n_attempts ||
        (m->put_record_result->shard_id == NULL) != (r.shard_id.p == NULL))
      abort();
    for (size_t i = 0; i < r.n_attempts; i++) {
      kp_fast_attempt a;
      const Kpl__Attempt *pa = m->put_record_result->attempts[i];
      if (kp_fast_result_attempt(&r, i, &a) != KP_FAST_OK || a.delay_ms != pa->delay ||
          a.duration_ms != pa->duration || a.success != pa->success ||
          (a.error_code.p == NULL) != (pa->error_code == NULL))
        abort();
      if (a.error_code.p)
        same_str(a.error_code, pa->error_code);
    }
    kpl__message__free_unpacked(m, NULL);
  }
  kp_fast_result_batch rb;
  if (kp_fast_decode_result_batch(data, size, &rb) == KP_FAST_OK) {
    Kpl__Message *m = kpl__message__unpack(NULL, size, data);
    if (!m || m->actual_message_case != KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD_RESULT_BATCH ||
        m->id != rb.id || m->put_record_result_batch->duration != rb.duration_ms ||
        m->put_record_result_batch->n_source_ids != rb.n ||
        m->put_record_result_batch->n_delays != rb.n)
      abort();
    const Kpl__PutRecordResultBatch *pb = m->put_record_result_batch;
    same_str(rb.shard_id, pb->shard_id);
    same_str(rb.sequence_number, pb->sequence_number);
    kp_fast_result_batch it = rb;
    uint64_t id;
    uint32_t delay;
    for (size_t i = 0; i < rb.n; i++)
      if (!kp_fast_batch_next(&it, &id, &delay) || id != pb->source_ids[i] ||
          delay != pb->delays[i])
        abort();
    if (kp_fast_batch_next(&it, &id, &delay))
      abort();
    /* Re-encoding what was read decodes to the same. */
    uint64_t *ids = malloc((rb.n + 1) * sizeof *ids);
    uint32_t *delays = malloc((rb.n + 1) * sizeof *delays);
    it = rb;
    for (size_t i = 0; i < rb.n; i++)
      kp_fast_batch_next(&it, &ids[i], &delays[i]);
    kp_buf b = KP_BUF_INIT;
    kp_fast_result_batch again;
    if (kp_fast_encode_result_batch(&b, rb.id, rb.shard_id, rb.sequence_number, rb.duration_ms, ids,
                                    delays, rb.n) != 0 ||
        kp_fast_decode_result_batch(b.data, b.len, &again) != KP_FAST_OK || again.n != rb.n ||
        again.id != rb.id)
      abort();
    kp_buf_free(&b);
    free(ids);
    free(delays);
    kpl__message__free_unpacked(m, NULL);
  }
  return 0;
}
