// KP_TEST_LIBS: kp_producer_api
/* The CBOR PutRecords codec and the walker under it. libcbor's tree API (cbor_load,
 * cbor_build_*, cbor_serialize_alloc) is the independent oracle both ways. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <cbor.h>

#include "format/cbor_walk.h"
#include "producer/kinesis_cbor.h"

#define S(lit) lit, sizeof(lit) - 1

static cbor_item_t *map_get(cbor_item_t *map, const char *key) {
  assert_true(cbor_isa_map(map));
  struct cbor_pair *pairs = cbor_map_handle(map);
  for (size_t i = 0; i < cbor_map_size(map); i++) {
    cbor_item_t *k = pairs[i].key;
    if (cbor_isa_string(k) && cbor_string_length(k) == strlen(key) &&
        !memcmp(cbor_string_handle(k), key, strlen(key)))
      return pairs[i].value;
  }
  return NULL;
}

static void assert_item_bytes(cbor_item_t *it, bool text, const void *want, size_t n) {
  assert_non_null(it);
  assert_true(text ? cbor_isa_string(it) : cbor_isa_bytestring(it));
  assert_true(cbor_isa_string(it) ? cbor_string_is_definite(it) : cbor_bytestring_is_definite(it));
  size_t len = text ? cbor_string_length(it) : cbor_bytestring_length(it);
  assert_int_equal(len, n);
  if (n)
    assert_memory_equal(text ? cbor_string_handle(it) : cbor_bytestring_handle(it), want, n);
}

static void encode_matches_libcbor_decode(void **state) {
  /* Sizes around every head-length boundary (23/24, 255/256, 65535/65536), binary data
   * with NULs, keys with U+0000 and 4-byte UTF-8, with and without hash keys. */
  static const size_t sizes[] = {0, 1, 23, 24, 255, 256, 65535, 65536, 70000};
  enum { N = sizeof sizes / sizeof *sizes };
  uint8_t *data[N];
  kp_put_entry e[N];
  static const char pk0[] = "k\0\xf0\x9f\x98\x80";
  for (size_t i = 0; i < N; i++) {
    data[i] = malloc(sizes[i] + 1);
    for (size_t j = 0; j < sizes[i]; j++)
      data[i][j] = (uint8_t)(j * 7 + i);
    e[i] = (kp_put_entry){
        data[i], sizes[i], i ? "partition" : pk0, i ? 9 : sizeof pk0 - 1, NULL, 0, 0, NULL, 0};
    if (i % 2) {
      e[i].explicit_hash_key = "340282366920938463463374607431768211455";
      e[i].ehk_len = 39;
    }
  }
  kp_buf b = KP_BUF_INIT;
  assert_int_equal(kp_buf_append(&b, "x", 1), 0); /* appends after what is there */
  assert_int_equal(kp_put_records_encode_cbor(&b, S("my-stream"), e, N), 0);
  assert_int_equal(b.data[0], 'x');
  struct cbor_load_result lr;
  cbor_item_t *root = cbor_load(b.data + 1, b.len - 1, &lr);
  assert_non_null(root);
  assert_int_equal(lr.read, b.len - 1);
  assert_int_equal(cbor_map_size(root), 2);
  assert_item_bytes(map_get(root, "StreamName"), true, S("my-stream"));
  cbor_item_t *recs = map_get(root, "Records");
  assert_true(cbor_isa_array(recs));
  assert_int_equal(cbor_array_size(recs), N);
  for (size_t i = 0; i < N; i++) {
    cbor_item_t *r = cbor_array_handle(recs)[i];
    assert_int_equal(cbor_map_size(r), i % 2 ? 3 : 2);
    assert_item_bytes(map_get(r, "Data"), false, data[i], sizes[i]);
    uint8_t *back = kp_put_records_data_of_cbor(b.data, b.len, e[i].data_off, sizes[i]);
    assert_non_null(back);
    assert_memory_equal(back, data[i], sizes[i]);
    free(back);
    assert_null(kp_put_records_data_of_cbor(b.data, b.len, b.len - sizes[i] + 1, sizes[i]));
    assert_item_bytes(map_get(r, "PartitionKey"), true, e[i].partition_key, e[i].pk_len);
    if (i % 2)
      assert_item_bytes(map_get(r, "ExplicitHashKey"), true, e[i].explicit_hash_key, 39);
    else
      assert_null(map_get(r, "ExplicitHashKey"));
    free(data[i]);
  }
  cbor_decref(&root);
  kp_buf_free(&b);
}

/* The gathered encoding is the same body: its pieces, joined, are byte for byte what the
 * contiguous encoder writes, and each Data piece is the entry's own buffer. */
static void gathered_encoding_is_the_same_body_without_copies(void **state) {
  static const size_t sizes[] = {0, 1, 23, 24, 255, 256, 65535, 65536};
  enum { N = sizeof sizes / sizeof *sizes };
  uint8_t *data[N];
  kp_put_entry e[N];
  for (size_t i = 0; i < N; i++) {
    data[i] = malloc(sizes[i] + 1);
    for (size_t j = 0; j < sizes[i]; j++)
      data[i][j] = (uint8_t)(j * 5 + i);
    e[i] = (kp_put_entry){data[i],       sizes[i], "pk", 2, i % 3 ? NULL : "12345",
                          i % 3 ? 0 : 5, 0,        NULL, 0};
  }
  kp_buf whole = KP_BUF_INIT, frame = KP_BUF_INIT;
  assert_int_equal(kp_put_records_encode_cbor(&whole, S("s"), e, N), 0);
  struct iovec iov[2 * N + 1];
  size_t n_iov = 0;
  assert_int_equal(kp_put_records_encode_cbor_iov(&frame, S("s"), e, N, iov, &n_iov), 0);
  assert_true(n_iov <= 2 * N + 1);
  kp_buf joined = KP_BUF_INIT;
  size_t data_pieces = 0;
  for (size_t k = 0; k < n_iov; k++) {
    assert_int_equal(kp_buf_append(&joined, iov[k].iov_base, iov[k].iov_len), 0);
    bool in_frame = (uint8_t *)iov[k].iov_base >= frame.data &&
                    (uint8_t *)iov[k].iov_base + iov[k].iov_len <= frame.data + frame.len;
    if (!in_frame) { /* a Data piece: exactly one entry's own buffer */
      bool found = false;
      for (size_t i = 0; i < N; i++)
        found |= iov[k].iov_base == data[i] && iov[k].iov_len == sizes[i];
      assert_true(found);
      data_pieces++;
    }
  }
  assert_int_equal(data_pieces, N - 1); /* every non-empty Data */
  assert_int_equal(joined.len, whole.len);
  assert_memory_equal(joined.data, whole.data, whole.len);
  assert_int_equal(frame.len + 1 + 23 + 24 + 255 + 256 + 65535 + 65536, whole.len);
  for (size_t i = 0; i < N; i++) {
    assert_true(e[i].data_off == SIZE_MAX);
    free(data[i]);
  }
  kp_buf_free(&whole);
  kp_buf_free(&frame);
  kp_buf_free(&joined);
}

static void encode_rejects_bad_utf8_and_keeps_buffer(void **state) {
  kp_buf b = KP_BUF_INIT;
  kp_put_entry e = {(const uint8_t *)"d", 1, "\xc3(", 2, NULL, 0, 0, NULL, 0};
  assert_int_equal(kp_put_records_encode_cbor(&b, S("s"), &e, 1), -EILSEQ);
  assert_int_equal(b.len, 0);
  e.partition_key = "ok";
  assert_int_equal(kp_put_records_encode_cbor(&b, S("s\xed\xa0\x80"), &e, 1), -EILSEQ);
  e.explicit_hash_key = "\xff";
  e.ehk_len = 1;
  assert_int_equal(kp_put_records_encode_cbor(&b, S("s"), &e, 1), -EILSEQ);
  assert_int_equal(b.len, 0);
  kp_buf_free(&b);
}

/* Serializes a tree built by the test (takes ownership). */
static uint8_t *ser(cbor_item_t *it, size_t *len) {
  unsigned char *buf = NULL;
  size_t cap = 0;
  *len = cbor_serialize_alloc(it, &buf, &cap);
  assert_true(*len > 0);
  cbor_decref(&it);
  return buf;
}

static void add(cbor_item_t *map, const char *k, cbor_item_t *v) {
  assert_true(cbor_map_add(
      map, (struct cbor_pair){.key = cbor_move(cbor_build_string(k)), .value = cbor_move(v)}));
}

static cbor_item_t *ok_rec(const char *seq, const char *shard) {
  cbor_item_t *r = cbor_new_definite_map(2);
  add(r, "SequenceNumber", cbor_build_string(seq));
  add(r, "ShardId", cbor_build_string(shard));
  return r;
}

static void decode_mixed_response(void **state) {
  cbor_item_t *root = cbor_new_indefinite_map(); /* indefinite containers are fine */
  cbor_item_t *recs = cbor_new_indefinite_array();
  assert_true(cbor_array_push(recs, cbor_move(ok_rec("4961", "shardId-000000000001"))));
  cbor_item_t *bad = cbor_new_definite_map(3);
  add(bad, "ErrorCode", cbor_build_string("ProvisionedThroughputExceededException"));
  add(bad, "ErrorMessage", cbor_build_string("Rate exceeded for shard"));
  add(bad, "Extra", cbor_build_uint8(7)); /* unknown members are skipped */
  assert_true(cbor_array_push(recs, cbor_move(bad)));
  cbor_item_t *nomsg = cbor_new_definite_map(2);
  add(nomsg, "ErrorCode", cbor_build_string("InternalFailure"));
  add(nomsg, "SequenceNumber", cbor_new_null());
  assert_true(cbor_array_push(recs, cbor_move(nomsg)));
  assert_true(cbor_array_push(recs, cbor_move(ok_rec("4962", "shardId-000000000002"))));
  add(root, "EncryptionType", cbor_build_string("NONE"));
  cbor_item_t *nested = cbor_new_definite_array(1); /* unknown nested member */
  assert_true(cbor_array_push(nested, cbor_move(ok_rec("x", "y"))));
  add(root, "Unknown", nested);
  add(root, "FailedRecordCount", cbor_build_uint8(1)); /* wrong: outcomes decide */
  add(root, "Records", recs);
  size_t len;
  uint8_t *body = ser(root, &len);
  kp_put_records_result r;
  char err[256] = "";
  assert_int_equal(kp_put_records_decode_cbor(body, len, 4, &r, err, sizeof err), 0);
  assert_int_equal(r.n, 4);
  assert_int_equal(r.failed_record_count, 2);
  assert_true(r.records[0].success);
  assert_string_equal(r.records[0].sequence_number, "4961");
  assert_string_equal(r.records[0].shard_id, "shardId-000000000001");
  assert_false(r.records[1].success);
  assert_string_equal(r.records[1].error_code, "ProvisionedThroughputExceededException");
  assert_string_equal(r.records[1].error_message, "Rate exceeded for shard");
  assert_false(r.records[2].success);
  assert_string_equal(r.records[2].error_message, "");
  assert_null(r.records[2].sequence_number);
  assert_true(r.records[3].success);
  assert_string_equal(r.records[3].shard_id, "shardId-000000000002");
  kp_put_records_result_free(&r);
  kp_put_records_result_free(&r); /* twice is harmless */
  /* Every strict prefix is truncated CBOR and refused. */
  for (size_t cut = 0; cut < len; cut++) {
    assert_int_equal(kp_put_records_decode_cbor(body, cut, 4, &r, err, sizeof err), -EBADMSG);
    assert_null(r.records);
  }
  /* A count mismatch either way. */
  assert_int_equal(kp_put_records_decode_cbor(body, len, 3, &r, err, sizeof err), -EBADMSG);
  assert_non_null(strstr(err, "more than"));
  assert_int_equal(kp_put_records_decode_cbor(body, len, 5, &r, err, sizeof err), -EBADMSG);
  assert_non_null(strstr(err, "4 entries, expected 5"));
  free(body);
}

static void decode_rejects_bad_shapes(void **state) {
  const struct {
    const char *hex_desc;
    const uint8_t *b;
    size_t n;
    const char *want;
  } bad[] = {
      {"array at top", (const uint8_t *)"\x80", 1, "not a CBOR map"},
      {"no Records", (const uint8_t *)"\xa0", 1, "Records missing"},
      {"Records not an array", (const uint8_t *)"\xa1\x67Records\x01", 10, "not an array"},
      {"record not a map", (const uint8_t *)"\xa1\x67Records\x81\x01", 11, "is not a map"},
      {"ShardId not text", (const uint8_t *)"\xa1\x67Records\x81\xa1\x67ShardId\x01", 20,
       "unexpected shape"},
      {"no outcome", (const uint8_t *)"\xa1\x67Records\x81\xa0", 11, "neither ErrorCode"},
      {"integer key", (const uint8_t *)"\xa1\x01\x02", 3, "not a text string"},
      {"chunked text", (const uint8_t *)"\xa1\x7f\x61\x61\xff\x01", 6, "indefinite-length"},
      {"trailing", (const uint8_t *)"\xa1\x67Records\x80\x00", 11, "trailing"},
      {"reserved", (const uint8_t *)"\xa1\x67Records\x1c", 10, "malformed"},
      {"FailedRecordCount negative",
       (const uint8_t *)"\xa1\x71"
                        "FailedRecordCount\x20",
       20, "non-negative"},
      {"stray break", (const uint8_t *)"\xa1\x67Records\xff", 10, "break"},
      {"empty", (const uint8_t *)"", 0, "empty"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    kp_put_records_result r;
    char err[256] = "";
    int rc = kp_put_records_decode_cbor(bad[i].b, bad[i].n, 1, &r, err, sizeof err);
    if (rc != -EBADMSG || !strstr(err, bad[i].want))
      fail_msg("%s: rc %d, \"%s\" (want \"%s\")", bad[i].hex_desc, rc, err, bad[i].want);
    assert_null(r.records);
  }
  /* 17 nested arrays: deeper than the walker goes. */
  uint8_t deep[32] = {0xa1, 0x61, 'x'};
  memset(deep + 3, 0x81, 17);
  deep[20] = 0x01;
  kp_put_records_result r;
  char err[256] = "";
  assert_int_equal(kp_put_records_decode_cbor(deep, 21, 1, &r, err, sizeof err), -EBADMSG);
  assert_non_null(strstr(err, "deeper"));
}

static void error_body(void **state) {
  cbor_item_t *m = cbor_new_definite_map(2);
  add(m, "__type", cbor_build_string("com.amazonaws.kinesis#ResourceNotFoundException"));
  add(m, "message", cbor_build_string("Stream x not found"));
  size_t len;
  uint8_t *b = ser(m, &len);
  kp_api_error e;
  char err[128];
  assert_int_equal(kp_api_error_decode_cbor(b, len, &e, err, sizeof err), 0);
  assert_string_equal(e.code, "ResourceNotFoundException");
  assert_string_equal(e.message, "Stream x not found");
  free(b);
  m = cbor_new_definite_map(1);
  add(m, "Message", cbor_build_string("no type"));
  b = ser(m, &len);
  assert_int_equal(kp_api_error_decode_cbor(b, len, &e, err, sizeof err), -EBADMSG);
  assert_string_equal(e.code, "");
  free(b);
  /* JSON is not CBOR: refused, not misread. */
  const char json[] = "{\"__type\":\"X\"}";
  assert_int_equal(
      kp_api_error_decode_cbor((const uint8_t *)json, sizeof json - 1, &e, err, sizeof err),
      -EBADMSG);
  assert_int_equal(kp_api_error_decode_cbor((const uint8_t *)"\x81\x01", 2, &e, err, sizeof err),
                   -EBADMSG);
  /* A __type that reduces to no code names no error (the fuzzer's find: NUL first). */
  const char *empty_codes[] = {"", "com.amazonaws.kinesis#", ":http://x/"};
  for (size_t i = 0; i < 4; i++) {
    m = cbor_new_definite_map(1);
    add(m, "__type",
        i < 3 ? cbor_build_string(empty_codes[i])
              : cbor_build_stringn("\0\0\0\0\0"
                                   "0",
                                   6));
    b = ser(m, &len);
    assert_int_equal(kp_api_error_decode_cbor(b, len, &e, err, sizeof err), -EBADMSG);
    assert_string_equal(e.code, "");
    free(b);
  }
  /* The fuzzer's input itself: an indefinite map, then a trailing byte the decoder refuses. */
  const uint8_t crash[] = {0xbf, 0x66, '_', '_', 't', 'y', 'p', 'e',
                           0x66, 0,    0,   0,   0,   0,   '0', 0xff};
  assert_int_equal(kp_api_error_decode_cbor(crash, sizeof crash, &e, err, sizeof err), -EBADMSG);
  assert_string_equal(e.code, "");
}

/* The walker reports each value with its path and every container's end. */
struct trace {
  char out[512];
  size_t len;
};

static int trace_cb(void *ud, const kp_cbor_item *it, const kp_cbor_level *lv) {
  struct trace *t = ud;
  const char *names[] = {"u", "n", "b", "t", "A", "M", "E", "o"};
  char where[64] = "";
  if (it->depth > 0 && it->type != KP_CBOR_END) {
    const kp_cbor_level *l = &lv[it->depth - 1];
    if (l->is_map)
      snprintf(where, sizeof where, "%.*s=", (int)l->key_len, (const char *)l->key);
    else
      snprintf(where, sizeof where, "[%zu]", l->index);
  }
  t->len += (size_t)snprintf(
      t->out + t->len, sizeof t->out - t->len, "%d%s%s%llu ", it->depth, where, names[it->type],
      it->type == KP_CBOR_TEXT || it->type == KP_CBOR_BYTES ? (unsigned long long)it->len
                                                            : (unsigned long long)it->u);
  return 0;
}

static void walker_paths(void **state) {
  /* {"a": [1, h'0102', {}], "b": tag(1) 2, "c": true, "d": [], "e": -3} */
  const uint8_t doc[] = {0xa5, 0x61, 'a',  0x83, 0x01, 0x42, 0x01, 0x02, 0xa0, 0x61, 'b',
                         0xc1, 0x02, 0x61, 'c',  0xf5, 0x61, 'd',  0x80, 0x61, 'e',  0x22};
  struct trace t = {.len = 0};
  char err[128] = "";
  assert_int_equal(kp_cbor_walk(doc, sizeof doc, trace_cb, &t, err, sizeof err), 0);
  assert_string_equal(t.out, "0M5 1a=A3 2[0]u1 2[1]b2 2[2]M0 2E0 1E0 1b=u2 1c=o1 1d=A0 1E0 "
                             "1e=n2 0E0 ");
}

static int stop_at_text(void *ud, const kp_cbor_item *it, const kp_cbor_level *lv) {
  return it->type == KP_CBOR_TEXT ? 42 : 0;
}

static void walker_stops_on_request(void **state) {
  const uint8_t doc[] = {0x82, 0x01, 0x61, 'x'};
  assert_int_equal(kp_cbor_walk(doc, sizeof doc, stop_at_text, NULL, NULL, 0), 42);
}

static void codec_by_content_type(void **state) {
  assert_ptr_equal(kp_put_records_codec_of("application/x-amz-cbor-1.1"), &kp_put_records_cbor);
  assert_ptr_equal(kp_put_records_codec_of("Application/X-Amz-CBOR-1.1; charset=x"),
                   &kp_put_records_cbor);
  assert_ptr_equal(kp_put_records_codec_of("application/x-amz-json-1.1"), &kp_put_records_json);
  assert_ptr_equal(kp_put_records_codec_of("text/html"), &kp_put_records_json);
  assert_ptr_equal(kp_put_records_codec_of(NULL), &kp_put_records_json);
  /* Both codecs round-trip the same request shape through their own decoders' errors. */
  kp_api_error e;
  const char jerr[] = "{\"__type\":\"x#ThrottlingException\",\"message\":\"slow\"}";
  assert_int_equal(
      kp_put_records_json.decode_error((const uint8_t *)jerr, sizeof jerr - 1, &e, NULL, 0), 0);
  assert_string_equal(e.code, "ThrottlingException");
  kp_buf b = KP_BUF_INIT;
  kp_put_entry ent = {(const uint8_t *)"d", 1, "k", 1, NULL, 0, 0, NULL, 0};
  assert_int_equal(kp_put_records_json.encode(&b, S("s"), &ent, 1), 0);
  assert_int_equal(b.data[0], '{');
  kp_buf_reset(&b);
  assert_int_equal(kp_put_records_cbor.encode(&b, S("s"), &ent, 1), 0);
  assert_int_equal(b.data[0], 0xa2); /* map of 2 */
  kp_buf_free(&b);
}

/* Data given as pieces (a gathered aggregate) encodes as if it were one buffer, copied
 * or gathered; the JSON encoder, which cannot take pieces, refuses them. */
static void data_in_pieces_is_the_same_body(void **state) {
  (void)state;
  static const size_t sizes[] = {1, 24, 300, 70000};
  enum { N = sizeof sizes / sizeof *sizes };
  uint8_t *data[N];
  kp_put_entry flat[N], cut[N];
  struct iovec pieces[N][4];
  for (size_t i = 0; i < N; i++) {
    data[i] = malloc(sizes[i]);
    for (size_t j = 0; j < sizes[i]; j++)
      data[i][j] = (uint8_t)(j * 7 + i);
    size_t a = sizes[i] / 3, b = sizes[i] / 2;
    pieces[i][0] = (struct iovec){data[i], a};
    pieces[i][1] = (struct iovec){data[i] + a, 0};
    pieces[i][2] = (struct iovec){data[i] + a, b - a};
    pieces[i][3] = (struct iovec){data[i] + b, sizes[i] - b};
    flat[i] =
        (kp_put_entry){data[i], sizes[i], "pk", 2, i % 2 ? NULL : "7", i % 2 ? 0 : 1, 0, NULL, 0};
    cut[i] = flat[i];
    cut[i].data = NULL;
    cut[i].data_iov = pieces[i];
    cut[i].data_n_iov = 4;
  }
  kp_buf want = KP_BUF_INIT, got = KP_BUF_INIT, frame = KP_BUF_INIT, joined = KP_BUF_INIT;
  assert_int_equal(kp_put_records_encode_cbor(&want, S("s"), flat, N), 0);
  assert_int_equal(kp_put_records_encode_cbor(&got, S("s"), cut, N), 0);
  assert_int_equal(got.len, want.len);
  assert_memory_equal(got.data, want.data, want.len);
  struct iovec iov[N + 1 + 4 * N];
  size_t n_iov = 0;
  assert_int_equal(kp_put_records_encode_cbor_iov(&frame, S("s"), cut, N, iov, &n_iov), 0);
  size_t nonempty = 0;
  for (size_t i = 0; i < N; i++)
    for (size_t j = 0; j < 4; j++)
      nonempty += pieces[i][j].iov_len > 0;
  assert_int_equal(n_iov, N + 1 + nonempty); /* empty pieces are left out */
  size_t in_data = 0;                        /* and the others are the data itself, not copies */
  for (size_t k = 0; k < n_iov; k++)
    for (size_t i = 0; i < N; i++)
      in_data +=
          (uint8_t *)iov[k].iov_base >= data[i] && (uint8_t *)iov[k].iov_base < data[i] + sizes[i];
  assert_int_equal(in_data, nonempty);
  for (size_t k = 0; k < n_iov; k++)
    assert_int_equal(kp_buf_append(&joined, iov[k].iov_base, iov[k].iov_len), 0);
  assert_int_equal(joined.len, want.len);
  assert_memory_equal(joined.data, want.data, want.len);
  kp_buf json = KP_BUF_INIT;
  assert_int_equal(kp_put_records_encode(&json, S("s"), cut, N), -EINVAL);
  assert_int_equal(json.len, 0);
  for (size_t i = 0; i < N; i++)
    free(data[i]);
  kp_buf_free(&want);
  kp_buf_free(&got);
  kp_buf_free(&frame);
  kp_buf_free(&joined);
  kp_buf_free(&json);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(encode_matches_libcbor_decode),
      cmocka_unit_test(gathered_encoding_is_the_same_body_without_copies),
      cmocka_unit_test(data_in_pieces_is_the_same_body),
      cmocka_unit_test(encode_rejects_bad_utf8_and_keeps_buffer),
      cmocka_unit_test(decode_mixed_response),
      cmocka_unit_test(decode_rejects_bad_shapes),
      cmocka_unit_test(error_body),
      cmocka_unit_test(walker_paths),
      cmocka_unit_test(walker_stops_on_request),
      cmocka_unit_test(codec_by_content_type),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
