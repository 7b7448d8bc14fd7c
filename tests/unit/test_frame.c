// KP_TEST_LIBS: kp_ipc kp_proto
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ipc/frame.h"
#include "proto/messages.pb-c.h"

/* Deterministic PRNG so a failure can be replayed from the seed it prints. */
static uint64_t rng_next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

typedef struct {
  size_t n;
  size_t *lens;
  uint8_t **data;
} frame_list;

static void frames_free(frame_list *f) {
  for (size_t i = 0; i < f->n; i++)
    free(f->data[i]);
  free(f->lens);
  free(f->data);
  memset(f, 0, sizeof *f);
}

static void frames_push(frame_list *f, const uint8_t *p, size_t len) {
  f->lens = realloc(f->lens, (f->n + 1) * sizeof *f->lens);
  f->data = realloc(f->data, (f->n + 1) * sizeof *f->data);
  assert_non_null(f->lens);
  assert_non_null(f->data);
  f->data[f->n] = malloc(len ? len : 1);
  assert_non_null(f->data[f->n]);
  if (len)
    memcpy(f->data[f->n], p, len);
  f->lens[f->n++] = len;
}

/* Feeds one chunk and drains it; returns the first negative code seen, else 0. */
static int feed_drain(kp_frame_decoder *d, const uint8_t *p, size_t n, frame_list *out) {
  int rc = kp_frame_decoder_feed(d, p, n);
  if (rc)
    return rc;
  const uint8_t *pl;
  size_t len;
  while ((rc = kp_frame_decoder_next(d, &pl, &len)) == 1) {
    assert_non_null(pl);
    frames_push(out, pl, len);
  }
  assert_int_equal(kp_frame_decoder_unread(d), 0);
  return rc;
}

static void assert_frames_equal(const frame_list *got, const frame_list *want) {
  assert_int_equal(got->n, want->n);
  for (size_t i = 0; i < want->n; i++) {
    assert_int_equal(got->lens[i], want->lens[i]);
    assert_memory_equal(got->data[i], want->data[i], want->lens[i] ? want->lens[i] : 0);
  }
}

/* Builds a stream of frames with the given payload lengths and fills `want`. */
static void build_stream(kp_buf *s, const size_t *lens, size_t n, uint64_t seed, frame_list *want) {
  for (size_t i = 0; i < n; i++) {
    uint8_t *p = malloc(lens[i] ? lens[i] : 1);
    assert_non_null(p);
    for (size_t j = 0; j < lens[i]; j++)
      p[j] = (uint8_t)rng_next(&seed);
    assert_int_equal(kp_frame_append(s, p, lens[i], 0), 0);
    frames_push(want, p, lens[i]);
    free(p);
  }
}

static void header_is_big_endian(void **state) {
  uint8_t h[4];
  kp_frame_put_header(h, 0x01020304u);
  assert_int_equal(h[0], 1);
  assert_int_equal(h[3], 4);
  assert_int_equal(kp_frame_get_header(h), 0x01020304u);
  kp_frame_put_header(h, 0xFFFFFFFFu);
  assert_int_equal(kp_frame_get_header(h), 0xFFFFFFFFu);
}

static void next_before_any_feed_wants_input(void **state) {
  kp_frame_decoder d;
  kp_frame_decoder_init(&d, 0);
  const uint8_t *p;
  size_t len;
  assert_int_equal(kp_frame_decoder_next(&d, &p, &len), 0);
  assert_int_equal(kp_frame_decoder_feed(&d, NULL, 0), 0);
  assert_int_equal(kp_frame_decoder_next(&d, &p, &len), 0);
  assert_int_equal(kp_frame_decoder_finish(&d), 0);
  assert_int_equal(kp_frame_decoder_buffered(&d), 0);
  kp_frame_decoder_free(&d);
}

static void two_chunks_split_at_every_point(void **state) {
  const size_t lens[] = {5, 0, 1, 300, 0, 17, 4};
  kp_buf s = KP_BUF_INIT;
  frame_list want = {0};
  build_stream(&s, lens, sizeof lens / sizeof *lens, 7, &want);
  for (size_t cut = 0; cut <= s.len; cut++) {
    kp_frame_decoder d;
    kp_frame_decoder_init(&d, 0);
    frame_list got = {0};
    assert_int_equal(feed_drain(&d, s.data, cut, &got), 0);
    assert_int_equal(feed_drain(&d, s.data + cut, s.len - cut, &got), 0);
    assert_int_equal(kp_frame_decoder_finish(&d), 0);
    assert_frames_equal(&got, &want);
    assert_int_equal(d.bytes_in, s.len);
    kp_frame_decoder_free(&d);
    frames_free(&got);
  }
  frames_free(&want);
  kp_buf_free(&s);
}

static void three_chunks_split_at_every_pair_of_points(void **state) {
  const size_t lens[] = {3, 0, 9, 1, 0, 6};
  kp_buf s = KP_BUF_INIT;
  frame_list want = {0};
  build_stream(&s, lens, sizeof lens / sizeof *lens, 11, &want);
  for (size_t a = 0; a <= s.len; a++) {
    for (size_t b = a; b <= s.len; b++) {
      kp_frame_decoder d;
      kp_frame_decoder_init(&d, 0);
      frame_list got = {0};
      assert_int_equal(feed_drain(&d, s.data, a, &got), 0);
      assert_int_equal(feed_drain(&d, s.data + a, b - a, &got), 0);
      assert_int_equal(feed_drain(&d, s.data + b, s.len - b, &got), 0);
      assert_int_equal(kp_frame_decoder_finish(&d), 0);
      assert_frames_equal(&got, &want);
      kp_frame_decoder_free(&d);
      frames_free(&got);
    }
  }
  frames_free(&want);
  kp_buf_free(&s);
}

static void byte_at_a_time(void **state) {
  const size_t lens[] = {0, 1, 2, 1000, 0};
  kp_buf s = KP_BUF_INIT;
  frame_list want = {0};
  build_stream(&s, lens, sizeof lens / sizeof *lens, 3, &want);
  kp_frame_decoder d;
  kp_frame_decoder_init(&d, 0);
  frame_list got = {0};
  for (size_t i = 0; i < s.len; i++)
    assert_int_equal(feed_drain(&d, s.data + i, 1, &got), 0);
  assert_frames_equal(&got, &want);
  assert_int_equal(kp_frame_decoder_finish(&d), 0);
  kp_frame_decoder_free(&d);
  frames_free(&got);
  frames_free(&want);
  kp_buf_free(&s);
}

/* Many small frames in one chunk come out as pointers into the chunk, in order, with
 * no assembly buffer ever allocated. */
static void many_frames_in_one_chunk_are_zero_copy(void **state) {
  enum { N = 10000, LEN = 100 };
  kp_buf s = KP_BUF_INIT;
  uint8_t rec[LEN];
  for (uint32_t i = 0; i < N; i++) {
    memset(rec, (int)(i & 0xFF), LEN);
    memcpy(rec, &i, sizeof i);
    assert_int_equal(kp_frame_append(&s, rec, LEN, 0), 0);
  }
  assert_int_equal(s.len, (size_t)N * (LEN + 4));
  kp_frame_decoder d;
  kp_frame_decoder_init(&d, 0);
  assert_int_equal(kp_frame_decoder_feed(&d, s.data, s.len), 0);
  const uint8_t *p;
  size_t len;
  uint32_t i = 0;
  int rc;
  while ((rc = kp_frame_decoder_next(&d, &p, &len)) == 1) {
    assert_true(i < N);
    assert_ptr_equal(p, s.data + (size_t)i * (LEN + 4) + 4);
    assert_int_equal(len, LEN);
    uint32_t got;
    memcpy(&got, p, sizeof got);
    assert_int_equal(got, i);
    i++;
  }
  assert_int_equal(rc, 0);
  assert_int_equal(i, N);
  assert_null(d.asm_buf);
  assert_int_equal(d.frames_out, N);
  kp_frame_decoder_free(&d);
  kp_buf_free(&s);
}

static void oversized_frame_rejected_without_allocation(void **state) {
  kp_frame_decoder d;
  kp_frame_decoder_init(&d, 1u << 20);
  const uint8_t huge[8] = {0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4}; /* claims 4 GiB - 1 */
  const uint8_t *p;
  size_t len;
  assert_int_equal(kp_frame_decoder_feed(&d, huge, sizeof huge), 0);
  assert_int_equal(kp_frame_decoder_next(&d, &p, &len), KP_FRAME_E_TOO_LARGE);
  assert_null(d.asm_buf);
  assert_int_equal(d.asm_cap, 0);
  kp_frame_decoder_free(&d);

  /* Same with the header split, so it goes through the slow path. */
  kp_frame_decoder_init(&d, 1u << 20);
  assert_int_equal(kp_frame_decoder_feed(&d, huge, 2), 0);
  assert_int_equal(kp_frame_decoder_next(&d, &p, &len), 0);
  assert_int_equal(kp_frame_decoder_feed(&d, huge + 2, 6), 0);
  assert_int_equal(kp_frame_decoder_next(&d, &p, &len), KP_FRAME_E_TOO_LARGE);
  assert_null(d.asm_buf);
  kp_frame_decoder_free(&d);

  /* One over the limit is rejected, exactly the limit is not. */
  uint8_t h[4];
  kp_frame_decoder_init(&d, 1000);
  kp_frame_put_header(h, 1001);
  assert_int_equal(kp_frame_decoder_feed(&d, h, 4), 0);
  assert_int_equal(kp_frame_decoder_next(&d, &p, &len), KP_FRAME_E_TOO_LARGE);
  kp_frame_decoder_free(&d);
  kp_frame_decoder_init(&d, 1000);
  kp_frame_put_header(h, 1000);
  assert_int_equal(kp_frame_decoder_feed(&d, h, 4), 0);
  assert_int_equal(kp_frame_decoder_next(&d, &p, &len), 0);
  assert_int_equal(kp_frame_decoder_finish(&d), KP_FRAME_E_TRUNCATED);
  kp_frame_decoder_free(&d);

  /* The default limit is the KPL's 11 MiB. */
  kp_frame_decoder_init(&d, 0);
  kp_frame_put_header(h, KP_FRAME_MAX_DEFAULT + 1);
  assert_int_equal(kp_frame_decoder_feed(&d, h, 4), 0);
  assert_int_equal(kp_frame_decoder_next(&d, &p, &len), KP_FRAME_E_TOO_LARGE);
  kp_frame_decoder_free(&d);
}

/* Skip mode: an oversized frame is reported once, its payload discarded across any
 * chunking, and the frames after it come through intact. */
static void oversized_frame_skipped_in_skip_mode(void **state) {
  for (size_t chunk = 1; chunk <= 64; chunk += 7) {
    kp_buf s = KP_BUF_INIT;
    assert_int_equal(kp_frame_append(&s, "before", 6, 0), 0);
    uint8_t h[4];
    kp_frame_put_header(h, 40); /* over the 32-byte limit below */
    kp_buf_append(&s, h, 4);
    for (int i = 0; i < 40; i++)
      kp_buf_append(&s, "x", 1);
    assert_int_equal(kp_frame_append(&s, "after", 5, 0), 0);

    kp_frame_decoder d;
    kp_frame_decoder_init(&d, 32);
    kp_frame_decoder_set_skip_oversized(&d, 1);
    const char *want[] = {"before", NULL, "after"};
    size_t got = 0;
    for (size_t off = 0; off < s.len; off += chunk) {
      size_t n = s.len - off < chunk ? s.len - off : chunk;
      assert_int_equal(kp_frame_decoder_feed(&d, s.data + off, n), 0);
      const uint8_t *p;
      size_t len;
      int rc;
      while ((rc = kp_frame_decoder_next(&d, &p, &len)) != 0) {
        assert_true(got < 3);
        if (want[got]) {
          assert_int_equal(rc, 1);
          assert_int_equal(len, strlen(want[got]));
          assert_memory_equal(p, want[got], len);
        } else {
          assert_int_equal(rc, KP_FRAME_SKIPPED);
          assert_null(p);
          assert_int_equal(len, 40);
        }
        got++;
      }
    }
    assert_int_equal(got, 3);
    assert_int_equal(kp_frame_decoder_finish(&d), 0);
    assert_null(d.asm_buf == NULL ? NULL : (d.asm_cap > 32 ? d.asm_buf : NULL));
    kp_frame_decoder_free(&d);
    kp_buf_free(&s);
  }
}

/* A legal but large claimed length costs memory only for the bytes that arrive. */
static void assembly_buffer_tracks_bytes_received(void **state) {
  kp_frame_decoder d;
  kp_frame_decoder_init(&d, 0);
  uint8_t chunk[4 + 10] = {0};
  kp_frame_put_header(chunk, KP_FRAME_MAX_DEFAULT);
  const uint8_t *p;
  size_t len;
  assert_int_equal(kp_frame_decoder_feed(&d, chunk, sizeof chunk), 0);
  assert_int_equal(kp_frame_decoder_next(&d, &p, &len), 0);
  assert_true(d.asm_cap <= 4096);
  assert_int_equal(kp_frame_decoder_buffered(&d), 14);
  kp_frame_decoder_free(&d);
}

static void zero_length_frames(void **state) {
  uint8_t s[12] = {0};
  kp_frame_decoder d;
  kp_frame_decoder_init(&d, 0);
  assert_int_equal(kp_frame_decoder_feed(&d, s, sizeof s), 0);
  const uint8_t *p = NULL;
  size_t len = 99;
  for (int i = 0; i < 3; i++) {
    assert_int_equal(kp_frame_decoder_next(&d, &p, &len), 1);
    assert_non_null(p);
    assert_int_equal(len, 0);
  }
  assert_int_equal(kp_frame_decoder_next(&d, &p, &len), 0);
  /* Also when the header straddles chunks. */
  assert_int_equal(kp_frame_decoder_feed(&d, s, 3), 0);
  assert_int_equal(kp_frame_decoder_next(&d, &p, &len), 0);
  assert_int_equal(kp_frame_decoder_feed(&d, s, 1), 0);
  p = NULL;
  assert_int_equal(kp_frame_decoder_next(&d, &p, &len), 1);
  assert_non_null(p);
  assert_int_equal(len, 0);
  assert_int_equal(kp_frame_decoder_finish(&d), 0);
  kp_frame_decoder_free(&d);
}

static void error_state_is_sticky(void **state) {
  kp_frame_decoder d;
  kp_frame_decoder_init(&d, 16);
  uint8_t bad[4];
  kp_frame_put_header(bad, 17);
  const uint8_t *p;
  size_t len;
  assert_int_equal(kp_frame_decoder_feed(&d, bad, 4), 0);
  assert_int_equal(kp_frame_decoder_next(&d, &p, &len), KP_FRAME_E_TOO_LARGE);
  assert_int_equal(kp_frame_decoder_next(&d, &p, &len), KP_FRAME_E_TOO_LARGE);
  uint8_t good[5] = {0, 0, 0, 1, 'x'};
  assert_int_equal(kp_frame_decoder_feed(&d, good, sizeof good), KP_FRAME_E_TOO_LARGE);
  assert_int_equal(kp_frame_decoder_next(&d, &p, &len), KP_FRAME_E_TOO_LARGE);
  assert_int_equal(kp_frame_decoder_finish(&d), KP_FRAME_E_TOO_LARGE);
  kp_frame_decoder_free(&d);
}

static void feed_before_drain_is_busy_and_harmless(void **state) {
  uint8_t s[10] = {0, 0, 0, 1, 'a', 0, 0, 0, 1, 'b'};
  kp_frame_decoder d;
  kp_frame_decoder_init(&d, 0);
  const uint8_t *p;
  size_t len;
  assert_int_equal(kp_frame_decoder_feed(&d, s, sizeof s), 0);
  assert_int_equal(kp_frame_decoder_next(&d, &p, &len), 1);
  assert_int_equal(p[0], 'a');
  assert_int_equal(kp_frame_decoder_feed(&d, s, sizeof s), KP_FRAME_E_BUSY);
  assert_int_equal(kp_frame_decoder_finish(&d), KP_FRAME_E_BUSY);
  assert_int_equal(kp_frame_decoder_next(&d, &p, &len), 1);
  assert_int_equal(p[0], 'b');
  assert_int_equal(kp_frame_decoder_next(&d, &p, &len), 0);
  assert_int_equal(kp_frame_decoder_feed(&d, NULL, 3), KP_FRAME_E_INVAL);
  assert_int_equal(kp_frame_decoder_feed(&d, NULL, 0), 0);
  assert_int_equal(kp_frame_decoder_finish(&d), 0);
  kp_frame_decoder_free(&d);
}

static void truncated_stream_detected(void **state) {
  uint8_t s[7] = {0, 0, 0, 5, 'a', 'b', 'c'};
  for (size_t cut = 1; cut < sizeof s; cut++) {
    kp_frame_decoder d;
    kp_frame_decoder_init(&d, 0);
    frame_list got = {0};
    assert_int_equal(feed_drain(&d, s, cut, &got), 0);
    assert_int_equal(got.n, 0);
    assert_int_equal(kp_frame_decoder_finish(&d), KP_FRAME_E_TRUNCATED);
    assert_int_equal(kp_frame_decoder_buffered(&d), cut);
    kp_frame_decoder_free(&d);
  }
}

static void encoder_round_trip_with_begin_end_and_protobuf(void **state) {
  kp_buf b = KP_BUF_INIT;
  assert_int_equal(kp_frame_append(&b, "hello", 5, 0), 0);
  assert_int_equal(kp_frame_append(&b, NULL, 0, 0), 0);
  assert_int_equal(kp_frame_append(&b, NULL, 3, 0), KP_FRAME_E_INVAL);
  assert_int_equal(kp_frame_append(&b, "toolong", 7, 6), KP_FRAME_E_TOO_LARGE);
  size_t before = b.len;
  size_t mark;
  assert_int_equal(kp_frame_begin(&b, &mark), 0);
  assert_int_equal(kp_buf_append_str(&b, "in place"), 0);
  assert_int_equal(kp_frame_end(&b, mark, 0), 0);
  /* kp_frame_end drops an oversized frame entirely. */
  size_t keep = b.len;
  assert_int_equal(kp_frame_begin(&b, &mark), 0);
  assert_int_equal(kp_buf_append_str(&b, "0123456789"), 0);
  assert_int_equal(kp_frame_end(&b, mark, 9), KP_FRAME_E_TOO_LARGE);
  assert_int_equal(b.len, keep);
  assert_true(before < keep);

  Kpl__PutRecord pr = KPL__PUT_RECORD__INIT;
  pr.stream_name = "s";
  pr.partition_key = "pk";
  pr.data.data = (uint8_t *)"payload";
  pr.data.len = 7;
  Kpl__Message m = KPL__MESSAGE__INIT;
  m.id = 42;
  m.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD;
  m.put_record = &pr;
  assert_int_equal(kp_frame_append_pb(&b, &m.base, 0), 0);
  assert_int_equal(kp_frame_append_pb(&b, &m.base, 3), KP_FRAME_E_TOO_LARGE);

  kp_frame_decoder d;
  kp_frame_decoder_init(&d, 0);
  frame_list got = {0};
  assert_int_equal(feed_drain(&d, b.data, b.len, &got), 0);
  assert_int_equal(got.n, 4);
  assert_int_equal(got.lens[0], 5);
  assert_memory_equal(got.data[0], "hello", 5);
  assert_int_equal(got.lens[1], 0);
  assert_int_equal(got.lens[2], 8);
  assert_memory_equal(got.data[2], "in place", 8);
  Kpl__Message *u = kpl__message__unpack(NULL, got.lens[3], got.data[3]);
  assert_non_null(u);
  assert_int_equal(u->id, 42);
  assert_int_equal(u->actual_message_case, KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD);
  assert_string_equal(u->put_record->partition_key, "pk");
  assert_int_equal(u->put_record->data.len, 7);
  kpl__message__free_unpacked(u, NULL);
  frames_free(&got);
  kp_frame_decoder_free(&d);
  kp_buf_free(&b);
}

static void random_frames_random_chunks(void **state) {
  for (uint64_t seed = 1; seed <= 40; seed++) {
    uint64_t r = seed * 0x9E3779B97F4A7C15ull;
    size_t n = 1 + rng_next(&r) % 200;
    size_t *lens = malloc(n * sizeof *lens);
    assert_non_null(lens);
    for (size_t i = 0; i < n; i++) {
      uint64_t k = rng_next(&r) % 100;
      lens[i] = k < 10 ? 0 : k < 90 ? rng_next(&r) % 300 : rng_next(&r) % 200000;
    }
    kp_buf s = KP_BUF_INIT;
    frame_list want = {0};
    build_stream(&s, lens, n, seed, &want);
    size_t maxchunk = 1 + rng_next(&r) % 70000;
    kp_frame_decoder d;
    kp_frame_decoder_init(&d, 0);
    frame_list got = {0};
    size_t off = 0;
    while (off < s.len) {
      size_t c = rng_next(&r) % (maxchunk + 1);
      if (c > s.len - off)
        c = s.len - off;
      /* A private copy of the chunk, scribbled over afterwards, proves the decoder
       * keeps nothing pointing into a chunk once it has been drained. */
      uint8_t *chunk = malloc(c ? c : 1);
      assert_non_null(chunk);
      memcpy(chunk, s.data + off, c);
      assert_int_equal(feed_drain(&d, chunk, c, &got), 0);
      memset(chunk, 0xA5, c);
      free(chunk);
      off += c;
      assert_int_equal(d.bytes_in, off);
    }
    assert_int_equal(kp_frame_decoder_finish(&d), 0);
    if (got.n != want.n)
      print_message("seed %llu\n", (unsigned long long)seed);
    assert_frames_equal(&got, &want);
    kp_frame_decoder_free(&d);
    frames_free(&got);
    frames_free(&want);
    kp_buf_free(&s);
    free(lens);
  }
}

static void strerror_covers_every_code(void **state) {
  const int codes[] = {KP_FRAME_E_TOO_LARGE, KP_FRAME_E_NOMEM, KP_FRAME_E_TRUNCATED,
                       KP_FRAME_E_BUSY, KP_FRAME_E_INVAL};
  const char *unknown = kp_frame_strerror(-1);
  for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
    assert_non_null(kp_frame_strerror(codes[i]));
    assert_string_not_equal(kp_frame_strerror(codes[i]), unknown);
    for (size_t j = 0; j < i; j++)
      assert_string_not_equal(kp_frame_strerror(codes[i]), kp_frame_strerror(codes[j]));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(header_is_big_endian),
      cmocka_unit_test(next_before_any_feed_wants_input),
      cmocka_unit_test(two_chunks_split_at_every_point),
      cmocka_unit_test(three_chunks_split_at_every_pair_of_points),
      cmocka_unit_test(byte_at_a_time),
      cmocka_unit_test(many_frames_in_one_chunk_are_zero_copy),
      cmocka_unit_test(oversized_frame_rejected_without_allocation),
      cmocka_unit_test(oversized_frame_skipped_in_skip_mode),
      cmocka_unit_test(assembly_buffer_tracks_bytes_received),
      cmocka_unit_test(zero_length_frames),
      cmocka_unit_test(error_state_is_sticky),
      cmocka_unit_test(feed_before_drain_is_busy_and_harmless),
      cmocka_unit_test(truncated_stream_detected),
      cmocka_unit_test(encoder_round_trip_with_begin_end_and_protobuf),
      cmocka_unit_test(random_frames_random_chunks),
      cmocka_unit_test(strerror_covers_every_code),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
