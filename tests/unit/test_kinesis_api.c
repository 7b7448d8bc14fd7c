// KP_TEST_LIBS: kp_producer_api
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "producer/kinesis_api.h"

#define S(lit) lit, sizeof(lit) - 1

/* Parses what the encoder wrote with jansson: the oracle for escaping and structure. */
static json_t *parse_buf(const kp_buf *b) {
  json_error_t e;
  json_t *j = json_loadb((const char *)b->data, b->len, JSON_ALLOW_NUL, &e);
  if (!j)
    fail_msg("encoder output is not JSON: %s (%.*s)", e.text, (int)b->len, (const char *)b->data);
  return j;
}

static void assert_json_str(json_t *obj, const char *key, const char *want, size_t want_len) {
  json_t *v = json_object_get(obj, key);
  assert_true(json_is_string(v));
  assert_int_equal(json_string_length(v), want_len);
  assert_memory_equal(json_string_value(v), want, want_len);
}

static void put_records_escapes_any_unicode_key(void **state) {
  /* Every control character, quotes, backslashes, DEL, 2/3/4-byte UTF-8, U+0000. */
  char ctl[32];
  for (int i = 0; i < 32; i++)
    ctl[i] = (char)i;
  const struct {
    const char *s;
    size_t n;
  } keys[] = {
      {S("plain")},
      {S("\"quoted\" and \\back\\slash\\")},
      {ctl, sizeof ctl},
      {S("\x7f del / slash")},
      {S("caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 \xe2\x80\xa8")},
      {S("\\u0041 not an escape")},
  };
  size_t n = sizeof keys / sizeof *keys;
  kp_put_entry e[6];
  for (size_t i = 0; i < n; i++)
    e[i] = (kp_put_entry){(const uint8_t *)"x", 1, keys[i].s, keys[i].n, NULL, 0, 0, NULL, 0};
  e[2].explicit_hash_key = "340282366920938463463374607431768211455";
  e[2].ehk_len = 39;
  kp_buf b = KP_BUF_INIT;
  const char stream[] = "str\"eam\\\xc3\xa9";
  assert_int_equal(kp_put_records_encode(&b, stream, sizeof stream - 1, e, n), 0);
  json_t *j = parse_buf(&b);
  assert_json_str(j, "StreamName", stream, sizeof stream - 1);
  json_t *recs = json_object_get(j, "Records");
  assert_int_equal(json_array_size(recs), n);
  for (size_t i = 0; i < n; i++) {
    json_t *r = json_array_get(recs, i);
    assert_json_str(r, "PartitionKey", keys[i].s, keys[i].n);
    assert_json_str(r, "Data", S("eA=="));
    if (i == 2)
      assert_json_str(r, "ExplicitHashKey", e[2].explicit_hash_key, 39);
    else
      assert_null(json_object_get(r, "ExplicitHashKey"));
    assert_int_equal(json_object_size(r), i == 2 ? 3 : 2);
  }
  assert_int_equal(json_object_size(j), 2);
  json_decref(j);
  kp_buf_free(&b);
}

static void put_records_rejects_invalid_utf8_and_keeps_buffer(void **state) {
  const char *bad[] = {"\x80",
                       "\xc3",
                       "\xc0\xaf",
                       "\xe0\x80\xaf",
                       "\xed\xa0\x80",
                       "\xf4\x90\x80\x80",
                       "\xf8\x88\x80\x80\x80",
                       "ok\xff"};
  kp_buf b = KP_BUF_INIT;
  assert_int_equal(kp_buf_append_str(&b, "prefix"), 0);
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    kp_put_entry e = {(const uint8_t *)"", 0, bad[i], strlen(bad[i]), NULL, 0, 0, NULL, 0};
    assert_int_equal(kp_put_records_encode(&b, S("s"), &e, 1), -EILSEQ);
    assert_int_equal(b.len, 6);
    e.partition_key = "k";
    e.pk_len = 1;
    assert_int_equal(kp_put_records_encode(&b, bad[i], strlen(bad[i]), &e, 1), -EILSEQ);
    assert_int_equal(b.len, 6);
  }
  /* Appends after what is there. */
  assert_int_equal(kp_put_records_encode(&b, S("s"), NULL, 0), 0);
  assert_memory_equal(b.data, "prefix{\"StreamName\":\"s\",\"Records\":[]}", b.len);
  kp_buf_free(&b);
}

static void put_records_base64_of_every_small_length_and_a_huge_one(void **state) {
  enum { N = 200 };
  static uint8_t data[N];
  for (size_t i = 0; i < N; i++)
    data[i] = (uint8_t)(rand() & 0xff);
  kp_put_entry e[N + 1];
  for (size_t i = 0; i <= N; i++)
    e[i] = (kp_put_entry){data, i, "k", 1, NULL, 0, 0, NULL, 0};
  kp_buf b = KP_BUF_INIT;
  assert_int_equal(kp_put_records_encode(&b, S("s"), e, N + 1), 0);
  /* Larger than one EVP_EncodeBlock chunk, not a multiple of 3: checks the chunking. */
  size_t big_len = ((size_t)3 << 20) * 2 + 2;
  uint8_t *big = malloc(big_len);
  assert_non_null(big);
  for (size_t i = 0; i < big_len; i++)
    big[i] = (uint8_t)(i * 131 + (i >> 12));
  kp_put_entry be = {big, big_len, "k", 1, NULL, 0, 0, NULL, 0};
  kp_buf bb = KP_BUF_INIT;
  assert_int_equal(kp_put_records_encode(&bb, S("s"), &be, 1), 0);

  json_t *j = parse_buf(&b);
  json_t *recs = json_object_get(j, "Records");
  assert_int_equal(json_array_size(recs), N + 1);
  uint8_t *dec = malloc(big_len + 3);
  assert_non_null(dec);
  for (size_t i = 0; i <= N; i++) {
    json_t *d = json_object_get(json_array_get(recs, i), "Data");
    size_t len = json_string_length(d);
    assert_int_equal(len, (i + 2) / 3 * 4);
    int n = EVP_DecodeBlock(dec, (const unsigned char *)json_string_value(d), (int)len);
    assert_int_equal((size_t)n, len / 4 * 3);
    assert_memory_equal(dec, data, i);
    /* What a retry reads back: the same bytes, found by the offset the encoder gave. */
    uint8_t *back = kp_put_records_data_of(b.data, b.len, e[i].data_off, i);
    assert_non_null(back);
    assert_memory_equal(back, data, i);
    free(back);
  }
  /* A range that is not this entry's base64: refused, not misread. */
  assert_null(kp_put_records_data_of(b.data, b.len, e[N].data_off - 1, N));
  assert_null(kp_put_records_data_of(b.data, b.len, b.len - 2, N));
  json_decref(j);
  j = parse_buf(&bb);
  json_t *d = json_object_get(json_array_get(json_object_get(j, "Records"), 0), "Data");
  assert_int_equal(json_string_length(d), (big_len + 2) / 3 * 4);
  int n =
      EVP_DecodeBlock(dec, (const unsigned char *)json_string_value(d), (int)json_string_length(d));
  assert_int_equal((size_t)n, big_len + 1); /* one '=' of padding counted as a byte */
  assert_memory_equal(dec, big, big_len);
  json_decref(j);
  free(dec);
  free(big);
  kp_buf_free(&b);
  kp_buf_free(&bb);
}

static void put_records_decode_success_and_partial_failure(void **state) {
  const char body[] =
      "{\"FailedRecordCount\":2,\"Records\":["
      "{\"SequenceNumber\":\"4959\",\"ShardId\":\"shardId-000000000001\"},"
      "{\"ErrorCode\":\"ProvisionedThroughputExceededException\",\"ErrorMessage\":\"Rate "
      "exceeded for shard shardId-000000000001\"},"
      "{\"ErrorCode\":\"InternalFailure\"},"
      "{\"SequenceNumber\":\"4960\",\"ShardId\":\"shardId-000000000002\","
      "\"EncryptionType\":\"NONE\"}],\"EncryptionType\":\"NONE\"}";
  kp_put_records_result r;
  char err[256] = "";
  assert_int_equal(kp_put_records_decode(body, sizeof body - 1, 4, &r, err, sizeof err), 0);
  assert_int_equal(r.n, 4);
  assert_int_equal(r.failed_record_count, 2);
  assert_true(r.records[0].success);
  assert_string_equal(r.records[0].shard_id, "shardId-000000000001");
  assert_string_equal(r.records[0].sequence_number, "4959");
  assert_null(r.records[0].error_code);
  assert_false(r.records[1].success);
  assert_string_equal(r.records[1].error_code, "ProvisionedThroughputExceededException");
  assert_string_equal(r.records[1].error_message, "Rate exceeded for shard shardId-000000000001");
  assert_null(r.records[1].shard_id);
  assert_string_equal(r.records[2].error_code, "InternalFailure");
  assert_string_equal(r.records[2].error_message, "");
  assert_true(r.records[3].success);
  assert_string_equal(r.records[3].shard_id, "shardId-000000000002");
  kp_put_records_result_free(&r);
  kp_put_records_result_free(&r); /* idempotent */

  const char all_ok[] = "{\"FailedRecordCount\":0,\"Records\":[{\"SequenceNumber\":\"1\","
                        "\"ShardId\":\"shardId-0\"}]}";
  assert_int_equal(kp_put_records_decode(all_ok, sizeof all_ok - 1, 1, &r, err, sizeof err), 0);
  assert_int_equal(r.failed_record_count, 0);
  assert_true(r.records[0].success);
  kp_put_records_result_free(&r);
}

static void put_records_decode_rejects_bad_responses(void **state) {
  const struct {
    const char *body;
    size_t n;
  } bad[] = {
      {"", 0},
      {"{\"Records\":[", 0},
      {"[]", 0},
      {"not json", 0},
      {"{}", 0},
      {"{\"Records\":{}}", 0},
      {"{\"Records\":[]}", 1},                                             /* too few */
      {"{\"Records\":[{\"SequenceNumber\":\"1\",\"ShardId\":\"s\"}]}", 2}, /* too few */
      {"{\"Records\":[{\"SequenceNumber\":\"1\",\"ShardId\":\"s\"},"
       "{\"SequenceNumber\":\"1\",\"ShardId\":\"s\"}]}",
       1}, /* too many */
      {"{\"Records\":[1]}", 1},
      {"{\"Records\":[{}]}", 1},
      {"{\"Records\":[{\"SequenceNumber\":\"1\"}]}", 1},
      {"{\"Records\":[{\"SequenceNumber\":1,\"ShardId\":\"s\"}]}", 1},
      {"{\"Records\":[{\"ErrorCode\":5}]}", 1},
      {"{\"FailedRecordCount\":-1,\"Records\":[]}", 0},
      {"{\"FailedRecordCount\":\"0\",\"Records\":[]}", 0},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    kp_put_records_result r;
    char err[256] = "";
    int rc = kp_put_records_decode(bad[i].body, strlen(bad[i].body), bad[i].n, &r, err, sizeof err);
    if (rc != -EBADMSG)
      fail_msg("case %zu (%s) gave %d", i, bad[i].body, rc);
    assert_true(err[0] != '\0');
    assert_null(r.records);
    assert_null(r.json_);
    kp_put_records_result_free(&r);
  }
}

static void error_bodies_are_parsed(void **state) {
  kp_api_error e;
  char err[256];
  const char b1[] = "{\"__type\":\"ResourceNotFoundException\",\"message\":\"Stream s under "
                    "account 000000000000 not found.\"}";
  assert_int_equal(kp_api_error_decode(b1, sizeof b1 - 1, &e, err, sizeof err), 0);
  assert_string_equal(e.code, "ResourceNotFoundException");
  assert_string_equal(e.message, "Stream s under account 000000000000 not found.");

  const char b2[] = "{\"__type\":\"com.amazon.coral.validate#ValidationException\","
                    "\"Message\":\"1 validation error\"}";
  assert_int_equal(kp_api_error_decode(b2, sizeof b2 - 1, &e, err, sizeof err), 0);
  assert_string_equal(e.code, "ValidationException");
  assert_string_equal(e.message, "1 validation error");

  const char b3[] = "{\"__type\":\"com.amazonaws.kinesis#LimitExceededException\"}";
  assert_int_equal(kp_api_error_decode(b3, sizeof b3 - 1, &e, err, sizeof err), 0);
  assert_string_equal(e.code, "LimitExceededException");
  assert_string_equal(e.message, "");

  /* An over-long message is truncated, not rejected. */
  char big[2048];
  int n = snprintf(big, sizeof big, "{\"__type\":\"X\",\"message\":\"%01000d\"}", 0);
  assert_int_equal(kp_api_error_decode(big, (size_t)n, &e, err, sizeof err), 0);
  assert_int_equal(strlen(e.message), sizeof e.message - 1);

  const char *bad[] = {"<html>502 Bad Gateway</html>",
                       "{\"message\":\"x\"}",
                       "{\"__type\":1}",
                       "{\"__type\":\"\"}",
                       "{\"__type\":\"com.amazonaws.kinesis#\"}",
                       "{\"__type\":\":http://internal.amazon.com/\"}",
                       "{\"__type\":\"\\u0000X\"}",
                       "[]",
                       ""};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    err[0] = '\0';
    assert_int_equal(kp_api_error_decode(bad[i], strlen(bad[i]), &e, err, sizeof err), -EBADMSG);
    assert_true(err[0] != '\0');
    assert_string_equal(e.code, "");
  }

  char out[32];
  assert_int_equal(kp_api_error_code_normalize(S("ThrottlingException:http://internal.amazon.com/"),
                                               out, sizeof out),
                   19);
  assert_string_equal(out, "ThrottlingException");
  assert_int_equal(kp_api_error_code_normalize(S("a#b#KMSThrottlingException"), out, 8), 7);
  assert_string_equal(out, "KMSThro");
}

static void list_shards_request_pages(void **state) {
  kp_buf b = KP_BUF_INIT;
  assert_int_equal(kp_list_shards_encode(&b, "my\"stream", NULL, 0), 0);
  json_t *j = parse_buf(&b);
  assert_json_str(j, "StreamName", S("my\"stream"));
  assert_int_equal(json_object_size(j), 1);
  json_decref(j);

  kp_buf_reset(&b);
  assert_int_equal(kp_list_shards_encode(&b, "mystream", "AAAA/token==", 1000), 0);
  j = parse_buf(&b);
  assert_json_str(j, "NextToken", S("AAAA/token=="));
  assert_null(json_object_get(j, "StreamName"));
  assert_int_equal(json_integer_value(json_object_get(j, "MaxResults")), 1000);
  assert_int_equal(json_object_size(j), 2);
  json_decref(j);

  kp_buf_reset(&b);
  assert_int_equal(kp_list_shards_encode(&b, NULL, NULL, 0), -EINVAL);
  assert_int_equal(kp_list_shards_encode(&b, "\xff", NULL, 0), -EINVAL);
  assert_int_equal(b.len, 0);
  kp_buf_free(&b);
}

static void list_shards_response_with_extreme_hash_keys(void **state) {
  const char body[] =
      "{\"Shards\":["
      "{\"ShardId\":\"shardId-000000000000\","
      "\"HashKeyRange\":{\"StartingHashKey\":\"0\",\"EndingHashKey\":"
      "\"170141183460469231731687303715884105727\"},"
      "\"SequenceNumberRange\":{\"StartingSequenceNumber\":\"495\",\"EndingSequenceNumber\":"
      "\"496\"}},"
      "{\"ShardId\":\"shardId-000000000001\",\"ParentShardId\":\"shardId-000000000000\","
      "\"AdjacentParentShardId\":null,"
      "\"HashKeyRange\":{\"StartingHashKey\":\"170141183460469231731687303715884105728\","
      "\"EndingHashKey\":\"340282366920938463463374607431768211455\"},"
      "\"SequenceNumberRange\":{\"StartingSequenceNumber\":\"497\"}}],"
      "\"NextToken\":\"tok==\"}";
  kp_list_shards_result r;
  char err[256] = "";
  assert_int_equal(kp_list_shards_decode(body, sizeof body - 1, &r, err, sizeof err), 0);
  assert_int_equal(r.n, 2);
  assert_string_equal(r.next_token, "tok==");
  kp_shard_info *s0 = &r.shards[0], *s1 = &r.shards[1];
  assert_string_equal(s0->shard_id, "shardId-000000000000");
  assert_false(s0->open);
  assert_null(s0->parent_shard_id);
  assert_string_equal(s0->starting_sequence_number, "495");
  static const uint8_t zero[16] = {0};
  assert_memory_equal(s0->starting_hash_key.be, zero, 16);
  assert_int_equal(s0->ending_hash_key.be[0], 0x7f);
  assert_true(s1->open);
  assert_string_equal(s1->parent_shard_id, "shardId-000000000000");
  assert_null(s1->adjacent_parent_shard_id);
  assert_int_equal(s1->starting_hash_key.be[0], 0x80);
  for (int i = 0; i < 16; i++)
    assert_int_equal(s1->ending_hash_key.be[i], 0xff);
  char dec[KP_HASH_KEY_DEC_MAX];
  kp_hash_key_format(&s1->ending_hash_key, dec);
  assert_string_equal(dec, "340282366920938463463374607431768211455");
  kp_list_shards_result_free(&r);

  const char last[] = "{\"Shards\":[]}";
  assert_int_equal(kp_list_shards_decode(last, sizeof last - 1, &r, err, sizeof err), 0);
  assert_int_equal(r.n, 0);
  assert_null(r.next_token);
  kp_list_shards_result_free(&r);

  const char *bad[] = {
      "{}",
      "{\"Shards\":[{}]}",
      "{\"Shards\":[],\"NextToken\":5}",
      /* 2^128 is out of range */
      "{\"Shards\":[{\"ShardId\":\"a\",\"HashKeyRange\":{\"StartingHashKey\":\"0\","
      "\"EndingHashKey\":\"340282366920938463463374607431768211456\"},"
      "\"SequenceNumberRange\":{}}]}",
      /* start after end */
      "{\"Shards\":[{\"ShardId\":\"a\",\"HashKeyRange\":{\"StartingHashKey\":\"2\","
      "\"EndingHashKey\":\"1\"},\"SequenceNumberRange\":{}}]}",
      "{\"Shards\":[{\"ShardId\":\"a\",\"HashKeyRange\":{\"StartingHashKey\":0,"
      "\"EndingHashKey\":\"1\"},\"SequenceNumberRange\":{}}]}",
      "{\"Shards\":[{\"ShardId\":\"a\",\"HashKeyRange\":{\"StartingHashKey\":\"0\","
      "\"EndingHashKey\":\"1\"}}]}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    err[0] = '\0';
    if (kp_list_shards_decode(bad[i], strlen(bad[i]), &r, err, sizeof err) != -EBADMSG)
      fail_msg("case %zu accepted", i);
    assert_true(err[0] != '\0');
    assert_null(r.shards);
  }
}

static void other_requests_are_well_formed(void **state) {
  kp_buf b = KP_BUF_INIT;
  assert_int_equal(kp_create_stream_encode(&b, "s", 4), 0);
  json_t *j = parse_buf(&b);
  assert_json_str(j, "StreamName", S("s"));
  assert_int_equal(json_integer_value(json_object_get(j, "ShardCount")), 4);
  json_decref(j);
  assert_int_equal(kp_create_stream_encode(&b, "s", 0), -EINVAL);

  kp_buf_reset(&b);
  assert_int_equal(kp_describe_stream_summary_encode(&b, "s"), 0);
  j = parse_buf(&b);
  assert_json_str(j, "StreamName", S("s"));
  json_decref(j);

  kp_buf_reset(&b);
  assert_int_equal(
      kp_get_shard_iterator_encode(&b, "s", "shardId-1", "AFTER_SEQUENCE_NUMBER", "123", 0), 0);
  j = parse_buf(&b);
  assert_json_str(j, "ShardIteratorType", S("AFTER_SEQUENCE_NUMBER"));
  assert_json_str(j, "StartingSequenceNumber", S("123"));
  assert_json_str(j, "ShardId", S("shardId-1"));
  json_decref(j);
  assert_int_equal(
      kp_get_shard_iterator_encode(&b, "s", "shardId-1", "AT_SEQUENCE_NUMBER", NULL, 0), -EINVAL);

  kp_buf_reset(&b);
  assert_int_equal(
      kp_get_shard_iterator_encode(&b, "s", "shardId-1", "AT_TIMESTAMP", NULL, 1700000000.5), 0);
  j = parse_buf(&b);
  assert_true(json_number_value(json_object_get(j, "Timestamp")) == 1700000000.5);
  json_decref(j);

  kp_buf_reset(&b);
  assert_int_equal(kp_get_shard_iterator_encode(&b, "s", "shardId-1", "TRIM_HORIZON", NULL, 0), 0);
  j = parse_buf(&b);
  assert_int_equal(json_object_size(j), 3);
  json_decref(j);

  kp_buf_reset(&b);
  assert_int_equal(kp_get_records_encode(&b, "it", 10000), 0);
  j = parse_buf(&b);
  assert_json_str(j, "ShardIterator", S("it"));
  assert_int_equal(json_integer_value(json_object_get(j, "Limit")), 10000);
  json_decref(j);
  kp_buf_free(&b);
}

static void other_responses_are_parsed(void **state) {
  char err[256] = "";
  kp_stream_summary ss;
  const char dss[] = "{\"StreamDescriptionSummary\":{\"StreamName\":\"s\",\"StreamStatus\":"
                     "\"ACTIVE\",\"OpenShardCount\":3}}";
  assert_int_equal(kp_describe_stream_summary_decode(dss, sizeof dss - 1, &ss, err, sizeof err), 0);
  assert_string_equal(ss.status, "ACTIVE");
  assert_int_equal(ss.open_shard_count, 3);
  assert_int_equal(kp_describe_stream_summary_decode(S("{}"), &ss, err, sizeof err), -EBADMSG);

  char it[64];
  assert_int_equal(kp_get_shard_iterator_decode(S("{\"ShardIterator\":\"AAAA\"}"), it, sizeof it,
                                                err, sizeof err),
                   0);
  assert_string_equal(it, "AAAA");
  assert_int_equal(
      kp_get_shard_iterator_decode(S("{\"ShardIterator\":\"AAAA\"}"), it, 4, err, sizeof err),
      -EBADMSG);

  /* "" / "AA==" / "AAE=" / "AAEC" / "\0pk" key / no arrival time */
  const char gr[] = "{\"Records\":["
                    "{\"SequenceNumber\":\"1\",\"PartitionKey\":\"a\",\"Data\":\"\","
                    "\"ApproximateArrivalTimestamp\":1700000000.25},"
                    "{\"SequenceNumber\":\"2\",\"PartitionKey\":\"b\",\"Data\":\"AA==\"},"
                    "{\"SequenceNumber\":\"3\",\"PartitionKey\":\"c\",\"Data\":\"AAE=\"},"
                    "{\"SequenceNumber\":\"4\",\"PartitionKey\":\"\\u0000pk\",\"Data\":\"AAEC\"}],"
                    "\"NextShardIterator\":null,\"MillisBehindLatest\":42}";
  kp_get_records_result r;
  assert_int_equal(kp_get_records_decode(gr, sizeof gr - 1, &r, err, sizeof err), 0);
  assert_int_equal(r.n, 4);
  assert_null(r.next_shard_iterator);
  assert_int_equal(r.millis_behind_latest, 42);
  assert_int_equal(r.records[0].data_len, 0);
  assert_true(r.records[0].approximate_arrival == 1700000000.25);
  assert_int_equal(r.records[1].data_len, 1);
  assert_int_equal(r.records[2].data_len, 2);
  assert_memory_equal(r.records[2].data, "\0\1", 2);
  assert_int_equal(r.records[3].data_len, 3);
  assert_memory_equal(r.records[3].data, "\0\1\2", 3);
  assert_int_equal(r.records[3].pk_len, 3);
  assert_memory_equal(r.records[3].partition_key, "\0pk", 3);
  assert_string_equal(r.records[3].sequence_number, "4");
  assert_null(r.records[3].explicit_hash_key);
  kp_get_records_result_free(&r);

  /* Round trip: what PutRecords encodes, GetRecords-shaped, decodes to the same bytes. */
  uint8_t data[100];
  for (size_t i = 0; i < sizeof data; i++)
    data[i] = (uint8_t)(255 - i);
  kp_put_entry e = {data, sizeof data, "k", 1, NULL, 0, 0, NULL, 0};
  kp_buf b = KP_BUF_INIT;
  assert_int_equal(kp_put_records_encode(&b, S("s"), &e, 1), 0);
  json_t *j = parse_buf(&b);
  json_t *rec = json_array_get(json_object_get(j, "Records"), 0);
  json_object_set_new(rec, "SequenceNumber", json_string("9"));
  json_object_set_new(j, "NextShardIterator", json_string("next"));
  char *s = json_dumps(j, 0);
  assert_int_equal(kp_get_records_decode(s, strlen(s), &r, err, sizeof err), 0);
  assert_int_equal(r.records[0].data_len, sizeof data);
  assert_memory_equal(r.records[0].data, data, sizeof data);
  assert_string_equal(r.next_shard_iterator, "next");
  assert_int_equal(r.millis_behind_latest, -1);
  kp_get_records_result_free(&r);
  free(s);
  json_decref(j);
  kp_buf_free(&b);

  const char *bad[] = {
      "{}",
      "{\"Records\":[{\"SequenceNumber\":\"1\",\"PartitionKey\":\"a\",\"Data\":\"AA=\"}]}",
      "{\"Records\":[{\"SequenceNumber\":\"1\",\"PartitionKey\":\"a\",\"Data\":\"A=AA\"}]}",
      "{\"Records\":[{\"SequenceNumber\":\"1\",\"PartitionKey\":\"a\",\"Data\":\"AA AA\"}]}",
      "{\"Records\":[{\"SequenceNumber\":\"1\",\"PartitionKey\":\"a\",\"Data\":\"A===\"}]}",
      "{\"Records\":[{\"SequenceNumber\":\"1\",\"PartitionKey\":\"a\"}]}",
      "{\"Records\":[{\"PartitionKey\":\"a\",\"Data\":\"\"}]}",
      "{\"Records\":[],\"MillisBehindLatest\":\"5\"}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    err[0] = '\0';
    if (kp_get_records_decode(bad[i], strlen(bad[i]), &r, err, sizeof err) != -EBADMSG)
      fail_msg("case %zu accepted", i);
    assert_true(err[0] != '\0');
    assert_null(r.records);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(put_records_escapes_any_unicode_key),
      cmocka_unit_test(put_records_rejects_invalid_utf8_and_keeps_buffer),
      cmocka_unit_test(put_records_base64_of_every_small_length_and_a_huge_one),
      cmocka_unit_test(put_records_decode_success_and_partial_failure),
      cmocka_unit_test(put_records_decode_rejects_bad_responses),
      cmocka_unit_test(error_bodies_are_parsed),
      cmocka_unit_test(list_shards_request_pages),
      cmocka_unit_test(list_shards_response_with_extreme_hash_keys),
      cmocka_unit_test(other_requests_are_well_formed),
      cmocka_unit_test(other_responses_are_parsed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
