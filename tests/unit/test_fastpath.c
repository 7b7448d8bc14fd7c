// KP_TEST_LIBS: kp_ipc kp_proto
/* The fast codecs against protobuf-c: encodings byte-identical to its pack, decodings
 * identical to its unpack, and every non-canonical shape sent back to it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ipc/fastpath.h"
#include "proto/messages.pb-c.h"

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static char *rand_str(size_t max, size_t *len) {
  *len = (size_t)(rnd() % (max + 1));
  char *s = malloc(*len + 1);
  for (size_t i = 0; i < *len; i++)
    s[i] = (char)('a' + rnd() % 26); /* no NUL: protobuf-c strings are C strings */
  s[*len] = 0;
  return s;
}

static uint64_t rand_id(void) {
  int bits = (int)(rnd() % 64);
  return rnd() >> bits;
}

static void put_record_encodes_like_protobuf_c_and_decodes_back(void **state) {
  for (int round = 0; round < 2000; round++) {
    size_t sl, pl, el, dl;
    char *stream = rand_str(40, &sl), *pk = rand_str(300, &pl), *ehk = rand_str(39, &el);
    char *data = rand_str(round % 50 == 0 ? 70000 : 200, &dl);
    bool has_ehk = rnd() & 1;
    uint64_t id = rand_id();

    Kpl__Message m = KPL__MESSAGE__INIT;
    Kpl__PutRecord pr = KPL__PUT_RECORD__INIT;
    pr.stream_name = stream;
    pr.partition_key = pk;
    pr.explicit_hash_key = has_ehk ? ehk : NULL;
    pr.data.data = (uint8_t *)data;
    pr.data.len = dl;
    m.id = id;
    m.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD;
    m.put_record = &pr;
    size_t n = kpl__message__get_packed_size(&m);
    uint8_t *want = malloc(n);
    kpl__message__pack(&m, want);

    kp_buf got = KP_BUF_INIT;
    assert_int_equal(
        kp_fast_encode_put_record(&got, id, (kp_fast_str){stream, sl}, (kp_fast_str){pk, pl},
                                  (kp_fast_str){has_ehk ? ehk : NULL, el}, (kp_fast_str){data, dl}),
        0);
    assert_int_equal(got.len, n);
    assert_memory_equal(got.data, want, n);

    kp_fast_put_record d;
    assert_int_equal(kp_fast_decode_put_record(want, n, &d), KP_FAST_OK);
    assert_true(d.id == id);
    assert_int_equal(d.stream.len, sl);
    assert_memory_equal(d.stream.p, stream, sl);
    assert_int_equal(d.partition_key.len, pl);
    assert_memory_equal(d.partition_key.p, pk, pl);
    assert_int_equal(d.data.len, dl);
    if (dl)
      assert_memory_equal(d.data.p, data, dl);
    if (has_ehk) {
      assert_non_null(d.explicit_hash_key.p);
      assert_int_equal(d.explicit_hash_key.len, el);
      assert_memory_equal(d.explicit_hash_key.p, ehk, el);
    } else {
      assert_null(d.explicit_hash_key.p);
    }
    kp_buf_free(&got);
    free(want);
    free(stream);
    free(pk);
    free(ehk);
    free(data);
  }
}

static void put_record_ref_encodes_like_protobuf_c_and_decodes_back(void **state) {
  for (int round = 0; round < 2000; round++) {
    size_t sl, pl, el;
    char *stream = rand_str(40, &sl), *pk = rand_str(300, &pl), *ehk = rand_str(39, &el);
    bool has_ehk = rnd() & 1;
    uint64_t id = rand_id(), off = rand_id();
    uint32_t len = (uint32_t)rnd();

    Kpl__Message m = KPL__MESSAGE__INIT;
    Kpl__PutRecordRef rr = KPL__PUT_RECORD_REF__INIT;
    rr.stream_name = stream;
    rr.partition_key = pk;
    rr.explicit_hash_key = has_ehk ? ehk : NULL;
    rr.data_offset = off;
    rr.data_length = len;
    m.id = id;
    m.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD_REF;
    m.put_record_ref = &rr;
    size_t n = kpl__message__get_packed_size(&m);
    uint8_t *want = malloc(n), *got = malloc(n);
    kpl__message__pack(&m, want);

    kp_fast_put_record r = {.id = id,
                            .stream = {stream, sl},
                            .partition_key = {pk, pl},
                            .explicit_hash_key = {has_ehk ? ehk : NULL, el},
                            .data = {NULL, len},
                            .by_ref = true,
                            .data_offset = off};
    assert_int_equal(kp_fast_put_record_size(&r), n);
    assert_ptr_equal(kp_fast_write_put_record(got, &r), got + n);
    assert_memory_equal(got, want, n);

    kp_fast_put_record d;
    assert_int_equal(kp_fast_decode_put_record(want, n, &d), KP_FAST_OK);
    assert_true(d.by_ref);
    assert_true(d.id == id);
    assert_true(d.data_offset == off);
    assert_int_equal(d.data.len, len);
    assert_null(d.data.p);
    assert_int_equal(d.stream.len, sl);
    assert_memory_equal(d.stream.p, stream, sl);
    assert_int_equal(d.partition_key.len, pl);
    assert_memory_equal(d.partition_key.p, pk, pl);
    assert_int_equal(d.explicit_hash_key.p != NULL, has_ehk);
    free(want);
    free(got);
    free(stream);
    free(pk);
    free(ehk);
  }
}

static void put_record_ref_odd_shapes_fall_back(void **state) {
  kp_fast_put_record d;
  /* Message{id 1, put_record_ref{s, k, offset 5, length 3}}, then broken copies. */
  uint8_t good[] = {0x08, 1, 0xca, 0x0c, 10, 0x0a, 1, 's', 0x12, 1, 'k', 0x20, 5, 0x28, 3};
  assert_int_equal(kp_fast_decode_put_record(good, sizeof good, &d), KP_FAST_OK);
  assert_true(d.by_ref && d.data_offset == 5 && d.data.len == 3);
  /* Without its length (required): protobuf-c rejects it; we defer to it. */
  uint8_t no_len[] = {0x08, 1, 0xca, 0x0c, 8, 0x0a, 1, 's', 0x12, 1, 'k', 0x20, 5};
  assert_int_equal(kp_fast_decode_put_record(no_len, sizeof no_len, &d), KP_FAST_FALLBACK);
  assert_null(kpl__message__unpack(NULL, sizeof no_len, no_len));
  /* The offset as bytes (field 4 is PutRecord's data): not a ref's shape. */
  uint8_t bytes_off[] = {0x08, 1, 0xca, 0x0c, 11, 0x0a, 1, 's', 0x12, 1, 'k', 0x22, 1, 5, 0x28, 3};
  assert_int_equal(kp_fast_decode_put_record(bytes_off, sizeof bytes_off, &d), KP_FAST_FALLBACK);
  /* A length past 32 bits: protobuf-c's rules for uint32 apply. */
  uint8_t big[] = {0x08, 1,    0xca, 0x0c, 14,   0x0a, 1,    's',  0x12, 1,
                   'k',  0x20, 5,    0x28, 0x80, 0x80, 0x80, 0x80, 0x10};
  assert_int_equal(kp_fast_decode_put_record(big, sizeof big, &d), KP_FAST_FALLBACK);
  for (size_t cut = 0; cut < sizeof good; cut++)
    assert_int_not_equal(kp_fast_decode_put_record(good, cut, &d), KP_FAST_OK);
}

static void result_encodes_like_protobuf_c_and_decodes_back(void **state) {
  for (int round = 0; round < 2000; round++) {
    size_t n_att = (size_t)(rnd() % 6), sl, ql;
    char *shard = rand_str(30, &sl), *seq = rand_str(60, &ql);
    bool has_shard = rnd() & 1, has_seq = rnd() & 1, success = rnd() & 1;
    Kpl__Attempt pa[6], *pap[6];
    kp_fast_attempt fa[6];
    char *codes[6], *msgs[6];
    size_t cl[6], ml[6];
    for (size_t i = 0; i < n_att; i++) {
      kpl__attempt__init(&pa[i]);
      codes[i] = rand_str(40, &cl[i]);
      msgs[i] = rand_str(200, &ml[i]);
      bool hc = rnd() & 1, hm = rnd() & 1;
      pa[i].delay = (uint32_t)rnd();
      pa[i].duration = (uint32_t)(rnd() % 100000);
      pa[i].success = rnd() & 1;
      pa[i].error_code = hc ? codes[i] : NULL;
      pa[i].error_message = hm ? msgs[i] : NULL;
      pap[i] = &pa[i];
      fa[i] = (kp_fast_attempt){pa[i].delay,
                                pa[i].duration,
                                pa[i].success,
                                {hc ? codes[i] : NULL, cl[i]},
                                {hm ? msgs[i] : NULL, ml[i]}};
    }
    Kpl__Message m = KPL__MESSAGE__INIT;
    Kpl__PutRecordResult r = KPL__PUT_RECORD_RESULT__INIT;
    r.n_attempts = n_att;
    r.attempts = pap;
    r.success = success;
    r.shard_id = has_shard ? shard : NULL;
    r.sequence_number = has_seq ? seq : NULL;
    m.id = rand_id();
    m.has_source_id = 1;
    m.source_id = rand_id();
    m.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD_RESULT;
    m.put_record_result = &r;
    size_t n = kpl__message__get_packed_size(&m);
    uint8_t *want = malloc(n);
    kpl__message__pack(&m, want);

    kp_buf got = KP_BUF_INIT;
    assert_int_equal(kp_fast_encode_result(&got, m.id, m.source_id, success,
                                           (kp_fast_str){has_shard ? shard : NULL, sl},
                                           (kp_fast_str){has_seq ? seq : NULL, ql}, fa, n_att),
                     0);
    assert_int_equal(got.len, n);
    assert_memory_equal(got.data, want, n);

    kp_fast_result d;
    assert_int_equal(kp_fast_decode_result(want, n, &d), KP_FAST_OK);
    assert_true(d.id == m.id && d.source_id == m.source_id);
    assert_int_equal(d.success, success);
    assert_int_equal(d.n_attempts, n_att);
    assert_int_equal(d.shard_id.p != NULL, has_shard);
    assert_int_equal(d.sequence_number.p != NULL, has_seq);
    if (has_shard)
      assert_memory_equal(d.shard_id.p, shard, sl);
    for (size_t i = 0; i < n_att; i++) {
      kp_fast_attempt a;
      assert_int_equal(kp_fast_result_attempt(&d, i, &a), KP_FAST_OK);
      assert_int_equal(a.delay_ms, pa[i].delay);
      assert_int_equal(a.duration_ms, pa[i].duration);
      assert_int_equal(a.success, pa[i].success);
      assert_int_equal(a.error_code.p != NULL, pa[i].error_code != NULL);
      if (a.error_message.p)
        assert_memory_equal(a.error_message.p, msgs[i], ml[i]);
      free(codes[i]);
      free(msgs[i]);
    }
    kp_buf_free(&got);
    free(want);
    free(shard);
    free(seq);
  }
}

static void result_batch_encodes_like_protobuf_c_and_decodes_back(void **state) {
  for (int round = 0; round < 500; round++) {
    size_t n = round == 0 ? 0 : (size_t)(rnd() % 700), sl, ql;
    char *shard = rand_str(30, &sl), *seq = rand_str(60, &ql);
    uint64_t *ids = malloc((n + 1) * sizeof *ids);
    uint32_t *delays = malloc((n + 1) * sizeof *delays);
    for (size_t i = 0; i < n; i++) {
      ids[i] = rand_id();
      delays[i] = (uint32_t)(rnd() >> (rnd() % 64));
    }
    Kpl__Message m = KPL__MESSAGE__INIT;
    Kpl__PutRecordResultBatch b = KPL__PUT_RECORD_RESULT_BATCH__INIT;
    b.shard_id = shard;
    b.sequence_number = seq;
    b.duration = (uint32_t)(rnd() >> (rnd() % 64));
    b.n_source_ids = b.n_delays = n;
    b.source_ids = ids;
    b.delays = delays;
    m.id = rand_id();
    m.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD_RESULT_BATCH;
    m.put_record_result_batch = &b;
    size_t len = kpl__message__get_packed_size(&m);
    uint8_t *want = malloc(len);
    kpl__message__pack(&m, want);

    kp_buf got = KP_BUF_INIT;
    assert_int_equal(kp_fast_encode_result_batch(&got, m.id, (kp_fast_str){shard, sl},
                                                 (kp_fast_str){seq, ql}, b.duration, ids, delays,
                                                 n),
                     0);
    assert_int_equal(got.len, len);
    assert_memory_equal(got.data, want, len);

    kp_fast_result_batch d;
    kp_fast_result r;
    assert_int_equal(kp_fast_decode_result(want, len, &r), KP_FAST_FALLBACK);
    assert_int_equal(kp_fast_decode_result_batch(want, len, &d), KP_FAST_OK);
    assert_true(d.id == m.id);
    assert_int_equal(d.n, n);
    assert_int_equal(d.duration_ms, b.duration);
    assert_int_equal(d.shard_id.len, sl);
    assert_memory_equal(d.shard_id.p, shard, sl);
    assert_int_equal(d.sequence_number.len, ql);
    assert_memory_equal(d.sequence_number.p, seq, ql);
    uint64_t id;
    uint32_t delay;
    for (size_t i = 0; i < n; i++) {
      assert_true(kp_fast_batch_next(&d, &id, &delay));
      assert_true(id == ids[i]);
      assert_int_equal(delay, delays[i]);
    }
    assert_false(kp_fast_batch_next(&d, &id, &delay));
    /* Truncated: never OK (the packed runs are checked whole). */
    for (size_t cut = len > 64 ? len - 64 : 0; cut < len; cut++)
      assert_int_not_equal(kp_fast_decode_result_batch(want, cut, &d), KP_FAST_OK);
    kp_buf_free(&got);
    free(want);
    free(ids);
    free(delays);
    free(shard);
    free(seq);
  }
}

static size_t pack(const Kpl__Message *m, uint8_t *buf) {
  return kpl__message__pack(m, buf);
}

static void non_canonical_shapes_fall_back(void **state) {
  uint8_t buf[256];
  kp_fast_put_record d;
  kp_fast_result r;
  /* A Flush is not a PutRecord. */
  Kpl__Message m = KPL__MESSAGE__INIT;
  Kpl__Flush f = KPL__FLUSH__INIT;
  m.id = 7;
  m.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_FLUSH;
  m.flush = &f;
  size_t n = pack(&m, buf);
  assert_int_equal(kp_fast_decode_put_record(buf, n, &d), KP_FAST_FALLBACK);
  assert_int_equal(kp_fast_decode_result(buf, n, &r), KP_FAST_FALLBACK);

  /* A valid PutRecord, then variations of it. */
  kp_buf b = KP_BUF_INIT;
  kp_fast_encode_put_record(&b, 5, (kp_fast_str){"s", 1}, (kp_fast_str){"k", 1},
                            (kp_fast_str){NULL, 0}, (kp_fast_str){"d", 1});
  assert_int_equal(kp_fast_decode_put_record(b.data, b.len, &d), KP_FAST_OK);
  /* Unknown field appended (field 15, varint): protobuf-c skips it; we defer. */
  uint8_t unk[300];
  memcpy(unk, b.data, b.len);
  unk[b.len] = (15 << 3) | 0;
  unk[b.len + 1] = 1;
  assert_int_equal(kp_fast_decode_put_record(unk, b.len + 2, &d), KP_FAST_FALLBACK);
  /* The id twice: last-wins in protobuf-c; we defer. */
  memcpy(unk, b.data, b.len);
  unk[b.len] = 0x08;
  unk[b.len + 1] = 9;
  assert_int_equal(kp_fast_decode_put_record(unk, b.len + 2, &d), KP_FAST_FALLBACK);
  /* Truncated anywhere: never OK. */
  for (size_t cut = 0; cut < b.len; cut++)
    assert_int_equal(kp_fast_decode_put_record(b.data, cut, &d), KP_FAST_FALLBACK);
  kp_buf_free(&b);

  /* PutRecord without data (required): protobuf-c rejects it; so do we. */
  kp_buf_reset(&b);
  uint8_t inner[] = {0x0a, 1, 's', 0x12, 1, 'k'};
  uint8_t msg[] = {0x08, 1, 0x1a, sizeof inner};
  kp_buf_append(&b, msg, sizeof msg);
  kp_buf_append(&b, inner, sizeof inner);
  assert_int_equal(kp_fast_decode_put_record(b.data, b.len, &d), KP_FAST_FALLBACK);
  assert_null(kpl__message__unpack(NULL, b.len, b.data));
  kp_buf_free(&b);

  /* Batches protobuf-c reads but the fast path leaves to it. */
  kp_fast_result_batch rb;
  struct {
    const char *why;
    uint8_t bytes[32];
    size_t len;
  } batches[] = {
      {"canonical",
       {0x08, 1, 0xc2, 0x0c, 14, 0x0a, 1, 's', 0x12, 1, 'q', 0x18, 0, 0x22, 1, 7, 0x2a, 1, 3},
       19},
      {"ids unpacked",
       {0x08, 1, 0xc2, 0x0c, 13, 0x0a, 1, 's', 0x12, 1, 'q', 0x18, 0, 0x20, 7, 0x2a, 1, 3},
       18},
      {"ids split",
       {0x08, 1, 0xc2, 0x0c, 17, 0x0a, 1, 's', 0x12, 1, 'q',
        0x18, 0, 0x22, 1,    7,  0x2a, 1, 3,   0x22, 1, 8},
       22},
      {"two ids, one delay",
       {0x08, 1, 0xc2, 0x0c, 15, 0x0a, 1, 's', 0x12, 1, 'q', 0x18, 0, 0x22, 2, 7, 8, 0x2a, 1, 3},
       20},
      {"delay over 32 bits",
       {0x08, 1,    0xc2, 0x0c, 18,   0x0a, 1,    's',  0x12, 1,    'q', 0x18,
        0,    0x22, 1,    7,    0x2a, 5,    0x80, 0x80, 0x80, 0x80, 0x10},
       23},
      {"no duration",
       {0x08, 1, 0xc2, 0x0c, 12, 0x0a, 1, 's', 0x12, 1, 'q', 0x22, 1, 7, 0x2a, 1, 3},
       17},
  };
  for (size_t i = 0; i < sizeof batches / sizeof *batches; i++) {
    kp_fast_rc want = i == 0 ? KP_FAST_OK : KP_FAST_FALLBACK;
    if (kp_fast_decode_result_batch(batches[i].bytes, batches[i].len, &rb) != want)
      fail_msg("%s: expected %d", batches[i].why, want);
  }
  Kpl__Message *pm = kpl__message__unpack(NULL, batches[0].len, batches[0].bytes);
  assert_non_null(pm);
  assert_int_equal(pm->put_record_result_batch->n_source_ids, 1);
  kpl__message__free_unpacked(pm, NULL);
  pm = kpl__message__unpack(NULL, batches[2].len, batches[2].bytes); /* split: 2 ids */
  assert_non_null(pm);
  assert_int_equal(pm->put_record_result_batch->n_source_ids, 2);
  kpl__message__free_unpacked(pm, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(put_record_encodes_like_protobuf_c_and_decodes_back),
      cmocka_unit_test(put_record_ref_encodes_like_protobuf_c_and_decodes_back),
      cmocka_unit_test(put_record_ref_odd_shapes_fall_back),
      cmocka_unit_test(result_encodes_like_protobuf_c_and_decodes_back),
      cmocka_unit_test(result_batch_encodes_like_protobuf_c_and_decodes_back),
      cmocka_unit_test(non_canonical_shapes_fall_back),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
