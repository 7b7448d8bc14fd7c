// KP_TEST_LIBS: kp_client kp_ipc kp_proto kp_libev
/* The client library against a daemon that answers out of order: results reversed in
 * blocks, stragglers held while thousands of later records go by (so the in-flight
 * table wraps past them and the sender must skip their ids), failures with attempts
 * and long messages, results in a non-canonical encoding (protobuf-c fallback), and a
 * daemon that dies with a scattered set of records unanswered (replay must come back
 * in put order). Every accepted put must get exactly one, correct, result.
 *
 * The daemon is this binary: started by the library as `<self> --fd 3`, it runs
 * fake_daemon() instead of the tests (KP_ORDER_MODE says how to behave). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <unistd.h>

#include <ev.h>

#include "ipc/channel.h"
#include "kinesis_producer.h"
#include "proto/messages.pb-c.h"

#define N 12000
#define BLOCK 50       /* results answered in reverse order, this many at a time */
#define STRAGGLE 5000  /* a straggler is answered after this many later records */
#define DIE_AFTER 3000 /* the first daemon of the death test exits after this many */
#define BIG_EVERY 50   /* every 50th record carries BIG bytes (shrink path) */
#define BIG 3000

/* ---- the fake daemon ------------------------------------------------------------ */

typedef struct held {
  uint64_t id;
  long idx;
  long due; /* straggler: answer once this many records were seen */
} held;

static struct {
  kp_channel *ch;
  int mode; /* 's' scramble, '1' first daemon of the death test, '2' its successor */
  long seen;
  held block[BLOCK];
  size_t n_block;
  held *strag;
  size_t n_strag, cap_strag;
  long last_idx, violations;
  const char *out;
} D;

static void answer(uint64_t id, long idx) {
  char seq[32], longmsg[301];
  snprintf(seq, sizeof seq, "%llu", (unsigned long long)id);
  Kpl__Message out = KPL__MESSAGE__INIT;
  Kpl__PutRecordResult r = KPL__PUT_RECORD_RESULT__INIT;
  Kpl__Attempt a1 = KPL__ATTEMPT__INIT, a2 = KPL__ATTEMPT__INIT;
  Kpl__Attempt *ap[2] = {&a1, &a2};
  r.attempts = ap;
  if (D.mode == 's' && idx % 13 == 5) {
    a1.delay = 1;
    a1.duration = 2;
    a1.error_code = "InternalFailure";
    a1.error_message = "try again";
    a2.delay = 30;
    a2.duration = 4;
    a2.error_code = "ProvisionedThroughputExceededException";
    if (idx % 26 == 5) { /* too long for the block's own room: an allocation */
      memset(longmsg, 'x', 300);
      longmsg[300] = 0;
      a2.error_message = longmsg;
    } else {
      a2.error_message = "slow down";
    }
    r.n_attempts = 2;
  } else {
    a1.delay = 3;
    a1.duration = 5;
    a1.success = 1;
    r.success = 1;
    r.n_attempts = 1;
    r.shard_id = "shardId-000000000007";
    r.sequence_number = seq;
  }
  out.id = id;
  out.has_source_id = 1;
  out.source_id = id;
  out.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD_RESULT;
  out.put_record_result = &r;
  size_t n = protobuf_c_message_get_packed_size(&out.base);
  uint8_t buf[1024];
  if (n + 2 > sizeof buf)
    _exit(3);
  protobuf_c_message_pack(&out.base, buf);
  if (idx % 11 == 4) { /* an unknown field 15: valid, but not the fast path's shape */
    buf[n++] = 0x78;
    buf[n++] = 0x01;
  }
  kp_channel_send(D.ch, buf, n);
}

static void release_block(void) {
  while (D.n_block) {
    held *h = &D.block[--D.n_block];
    answer(h->id, h->idx);
  }
}

static void release_stragglers(int all) {
  size_t k = 0;
  for (size_t i = 0; i < D.n_strag; i++) {
    if (all || D.strag[i].due <= D.seen)
      answer(D.strag[i].id, D.strag[i].idx);
    else
      D.strag[k++] = D.strag[i];
  }
  D.n_strag = k;
}

static void on_put(uint64_t id, const char *pk) {
  long idx = -1;
  if (sscanf(pk, "pk-%ld", &idx) != 1) { /* test_put_validates_partition_keys */
    answer(id, -1);
    return;
  }
  D.seen++;
  if (D.mode == '1') {
    if (idx % 3 == 0)
      answer(id, idx);
    if (D.seen == DIE_AFTER)
      _exit(1);
    return;
  }
  if (D.mode == '2') {
    if (idx <= D.last_idx)
      D.violations++;
    D.last_idx = idx;
    answer(id, idx);
    return;
  }
  if (idx % 7 == 3) {
    if (D.n_strag == D.cap_strag) {
      D.cap_strag = D.cap_strag ? 2 * D.cap_strag : 1024;
      D.strag = realloc(D.strag, D.cap_strag * sizeof *D.strag);
      if (!D.strag)
        _exit(5);
    }
    D.strag[D.n_strag++] = (held){id, idx, D.seen + STRAGGLE};
  } else {
    D.block[D.n_block++] = (held){id, idx, 0};
    if (D.n_block == BLOCK)
      release_block();
  }
  release_stragglers(0);
}

static void d_on_frame(kp_channel *ch, const uint8_t *payload, size_t len, void *ud) {
  Kpl__Message *m = kpl__message__unpack(NULL, len, payload);
  if (!m)
    _exit(6);
  if (m->actual_message_case == KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD) {
    on_put(m->id, m->put_record->partition_key);
  } else if (m->actual_message_case == KPL__MESSAGE__ACTUAL_MESSAGE_FLUSH) {
    release_block();
    release_stragglers(1);
  }
  kpl__message__free_unpacked(m, NULL);
}

static void d_on_close(kp_channel *ch, int err, void *ud) {
  ev_break(ud, EVBREAK_ALL);
}

static int fake_daemon(int fd) {
  const char *mode = getenv("KP_ORDER_MODE");
  D.mode = mode && *mode == 'd' ? '1' : 's';
  D.last_idx = -1;
  D.out = getenv("KP_ORDER_OUT");
  if (D.mode == '1') {
    /* The first daemon creates the marker and dies; every later one is the successor. */
    int mfd = open(getenv("KP_ORDER_MARK"), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (mfd < 0)
      D.mode = '2';
    else
      close(mfd);
  }
  struct ev_loop *loop = ev_default_loop(0);
  kp_channel_opts o = {0};
  o.rfd = fd;
  o.wfd = dup(fd);
  o.on_frame = d_on_frame;
  o.on_close = d_on_close;
  o.ud = loop;
  if (kp_channel_new(loop, &o, &D.ch) != 0)
    return 1;
  ev_run(loop, 0);
  kp_channel_free(D.ch);
  if (D.mode == '2' && D.out) {
    FILE *f = fopen(D.out, "we");
    if (f) {
      fprintf(f, "%ld %ld\n", D.seen, D.violations);
      fclose(f);
    }
  }
  free(D.strag);
  return 0;
}

/* ---- the tests ------------------------------------------------------------------ */

static char g_self[PATH_MAX];
static _Atomic int counts[N];
static _Atomic int bad, ok, throttled;

static void on_result(kp_producer_t *p, const kp_result_t *r, void *opaque) {
  long i = (long)(intptr_t)r->opaque;
  if (i == N) /* test_put_validates_partition_keys */
    return;
  if (i < 0 || i >= N) {
    atomic_fetch_add(&bad, 1);
    return;
  }
  atomic_fetch_add(&counts[i], 1);
  char pk[32];
  snprintf(pk, sizeof pk, "pk-%ld", i);
  size_t len = i % BIG_EVERY == 0 ? BIG : (size_t)snprintf(NULL, 0, "record %ld", i);
  int good = !strcmp(r->stream, "order") && !strcmp(r->partition_key, pk) && r->len == len;
  if (r->err == KP_ERR_NO_ERROR) {
    good = good && r->shard_id && !strcmp(r->shard_id, "shardId-000000000007") &&
           r->sequence_number && strtoull(r->sequence_number, NULL, 10) > 0 &&
           r->attempt_cnt == 1 && r->attempts[0].success && r->attempts[0].delay_ms == 3 &&
           r->attempts[0].duration_ms == 5 && !r->error_code && !r->error_message;
    atomic_fetch_add(&ok, 1);
  } else {
    good = good && r->err == KP_ERR_THROTTLED && i % 13 == 5 && r->attempt_cnt == 2 &&
           !r->shard_id && !r->sequence_number && r->error_code &&
           !strcmp(r->error_code, "ProvisionedThroughputExceededException") &&
           !strcmp(r->attempts[0].error_code, "InternalFailure") &&
           !strcmp(r->attempts[0].error_message, "try again") && r->attempts[1].delay_ms == 30 &&
           r->attempts[1].duration_ms == 4 && !r->attempts[1].success && r->error_message &&
           strlen(r->error_message) == (i % 26 == 5 ? 300u : 9u);
    atomic_fetch_add(&throttled, 1);
  }
  if (!good)
    atomic_fetch_add(&bad, 1);
}

static kp_producer_t *start(const char *mode) {
  for (size_t i = 0; i < N; i++)
    atomic_store(&counts[i], 0);
  atomic_store(&bad, 0);
  atomic_store(&ok, 0);
  atomic_store(&throttled, 0);
  setenv("KP_ORDER_MODE", mode, 1);
  kp_conf_t *c = kp_conf_new();
  char err[512];
  const char *kv[][2] = {{"NativeExecutable", g_self},      {"Region", "us-east-1"},
                         {"AwsAccessKeyId", "AKIDFAKE"},    {"AwsSecretAccessKey", "s"},
                         {"MetricsLevel", "none"},          {"DaemonRestartBackoffMin", "10"},
                         {"MaxOutstandingRecords", "2000"}, {"ResultDelivery", "background"}};
  for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
    assert_int_equal(kp_conf_set(c, kv[i][0], kv[i][1], err, sizeof err), KP_ERR_NO_ERROR);
  kp_conf_set_result_cb(c, on_result);
  kp_producer_t *p = kp_producer_new(c, err, sizeof err);
  if (!p)
    fail_msg("kp_producer_new: %s", err);
  return p;
}

static void put_all(kp_producer_t *p) {
  static char big[BIG];
  memset(big, 'b', sizeof big);
  for (long i = 0; i < N; i++) {
    char pk[32], data[32];
    snprintf(pk, sizeof pk, "pk-%ld", i);
    int n = snprintf(data, sizeof data, "record %ld", i);
    const void *d = i % BIG_EVERY == 0 ? (const void *)big : (const void *)data;
    size_t len = i % BIG_EVERY == 0 ? sizeof big : (size_t)n;
    assert_int_equal(
        kp_producer_put(p, "order", pk, NULL, d, len, KP_PUT_F_BLOCK, (void *)(intptr_t)i),
        KP_ERR_NO_ERROR);
  }
}

static void check_one_result_each(void) {
  for (long i = 0; i < N; i++)
    if (atomic_load(&counts[i]) != 1)
      fail_msg("record %ld got %d results", i, atomic_load(&counts[i]));
  assert_int_equal(atomic_load(&bad), 0);
}

static void test_out_of_order_results(void **state) {
  kp_producer_t *p = start("scramble");
  put_all(p);
  assert_int_equal(kp_producer_flush_wait(p, 60000), KP_ERR_NO_ERROR);
  kp_stats_t st;
  assert_int_equal(kp_producer_stats(p, &st), KP_ERR_NO_ERROR);
  assert_int_equal(kp_producer_close(p, 0, 30000), KP_ERR_NO_ERROR);
  kp_producer_destroy(p);
  check_one_result_each();
  long fails = 0;
  for (long i = 0; i < N; i++)
    fails += i % 13 == 5;
  assert_int_equal(atomic_load(&throttled), fails);
  assert_int_equal(atomic_load(&ok), N - fails);
  assert_int_equal(st.results_ok, (uint64_t)(N - fails));
  assert_int_equal(st.results_failed, (uint64_t)fails);
  assert_int_equal(st.outstanding_bytes, 0);
}

static void test_replay_in_put_order(void **state) {
  char mark[64], out[64];
  snprintf(mark, sizeof mark, "/tmp/kp-order-mark-%d", (int)getpid());
  snprintf(out, sizeof out, "/tmp/kp-order-out-%d", (int)getpid());
  unlink(mark);
  unlink(out);
  setenv("KP_ORDER_MARK", mark, 1);
  setenv("KP_ORDER_OUT", out, 1);
  kp_producer_t *p = start("die");
  put_all(p);
  assert_int_equal(kp_producer_flush_wait(p, 60000), KP_ERR_NO_ERROR);
  kp_stats_t st;
  assert_int_equal(kp_producer_stats(p, &st), KP_ERR_NO_ERROR);
  assert_int_equal(kp_producer_close(p, 0, 30000), KP_ERR_NO_ERROR);
  kp_producer_destroy(p);
  check_one_result_each();
  assert_int_equal(atomic_load(&ok), N);
  assert_int_equal(st.daemon_deaths, 1);
  assert_true(st.records_replayed > 0);
  FILE *f = fopen(out, "re");
  assert_non_null(f);
  long seen = -1, violations = -1;
  assert_int_equal(fscanf(f, "%ld %ld", &seen, &violations), 2);
  fclose(f);
  /* The successor got every record the first daemon left unanswered, in put order. */
  assert_int_equal(violations, 0);
  assert_true(seen >= N - DIE_AFTER);
  unlink(mark);
  unlink(out);
}

/* Put's partition key check: 1..256 characters of valid UTF-8 (ASCII keys take a
 * shortcut; the others are counted). */
static void test_put_validates_partition_keys(void **state) {
  kp_producer_t *p = start("scramble");
  static const char *units[] = {"a", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
  char key[2048];
  void *sentinel = (void *)(intptr_t)N;
  for (size_t u = 0; u < 4; u++) {
    for (size_t chars = 255; chars <= 257; chars++) {
      size_t w = strlen(units[u]);
      for (size_t k = 0; k < chars; k++)
        memcpy(key + k * w, units[u], w);
      key[chars * w] = 0;
      kp_err_t want = chars <= 256 ? KP_ERR_NO_ERROR : KP_ERR__INVALID_PARTITION_KEY;
      assert_int_equal(kp_producer_put(p, "order", key, NULL, "x", 1, 0, sentinel), want);
    }
  }
  const char *bad_keys[] = {"", "\xff", "abc\xc3", "\xed\xa0\x80", "\xc0\xaf", "abcdefgh\x80"};
  for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++)
    assert_int_equal(kp_producer_put(p, "order", bad_keys[i], NULL, "x", 1, 0, sentinel),
                     KP_ERR__INVALID_PARTITION_KEY);
  assert_int_equal(kp_producer_put(p, "order", "k\xc3\xa9y", NULL, "x", 1, 0, sentinel),
                   KP_ERR_NO_ERROR);
  assert_int_equal(kp_producer_close(p, 0, 30000), KP_ERR_NO_ERROR);
  kp_producer_destroy(p);
  assert_int_equal(atomic_load(&bad), 0);
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "--fd"))
    return fake_daemon(atoi(argv[2]));
  ssize_t n = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
  if (n <= 0)
    return 1;
  g_self[n] = 0;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_out_of_order_results),
      cmocka_unit_test(test_replay_in_put_order),
      cmocka_unit_test(test_put_validates_partition_keys),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
