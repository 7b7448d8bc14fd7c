// KP_TEST_LIBS: kp_client
/* Record data through the shared memory file (SharedMemory), against kp-fake-daemon,
 * which maps the file, reads PutRecordRefs from it and logs a hash of every record's
 * data and how it came (tests/client/kp_fake_daemon.c, KP_FAKE_DATA_LOG). Checked: the
 * daemon sees every record's exact bytes; records of 512 bytes and more go by
 * reference once the daemon has acknowledged the file and by value otherwise (before
 * the acknowledgement, when it declines, with SharedMemory=false); a daemon's
 * successor gets the references of the records it replays, from the same file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>

#include "kinesis_producer.h"

#define N 3000
static const size_t sizes[] = {100, 511, 512, 4096, 60000, 0, 1000};
#define NSIZES (sizeof sizes / sizeof sizes[0])

static _Atomic int results[N + 1], bad;

static void on_result(kp_producer_t *p, const kp_result_t *r, void *opaque) {
  uintptr_t i = (uintptr_t)r->opaque;
  if (i > N || r->err != KP_ERR_NO_ERROR || r->len != sizes[i % NSIZES])
    atomic_fetch_add(&bad, 1);
  else
    atomic_fetch_add(&results[i], 1);
}

static size_t data_of(size_t i, uint8_t *buf) {
  size_t n = sizes[i % NSIZES];
  for (size_t k = 0; k < n; k++)
    buf[k] = (uint8_t)(i * 31 + k * 7 + (k >> 8));
  return n;
}

static uint64_t fnv1a(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

static char log_path[64];
static char mark_path[64];

static kp_producer_t *start_with(const char *shared_memory, const char *const (*extra)[2],
                                 size_t n_extra) {
  for (size_t i = 0; i <= N; i++)
    atomic_store(&results[i], 0);
  atomic_store(&bad, 0);
  snprintf(log_path, sizeof log_path, "/tmp/kp-test-shared-XXXXXX");
  int fd = mkstemp(log_path);
  assert_true(fd >= 0);
  close(fd);
  setenv("KP_FAKE_DATA_LOG", log_path, 1);
  static char path[4096];
  const char *bin = getenv("KP_BIN_DIR");
  snprintf(path, sizeof path, "%s/kp-fake-daemon", bin ? bin : "build/bin");
  kp_conf_t *c = kp_conf_new();
  char err[512];
  const char *kv[][2] = {{"NativeExecutable", path},       {"Region", "us-east-1"},
                         {"AwsAccessKeyId", "AKIDFAKE"},   {"AwsSecretAccessKey", "s"},
                         {"MetricsLevel", "none"},         {"DaemonRestartBackoffMin", "10"},
                         {"ResultDelivery", "background"}, {"SharedMemory", shared_memory}};
  for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
    assert_int_equal(kp_conf_set(c, kv[i][0], kv[i][1], err, sizeof err), KP_ERR_NO_ERROR);
  for (size_t i = 0; i < n_extra; i++)
    assert_int_equal(kp_conf_set(c, extra[i][0], extra[i][1], err, sizeof err), KP_ERR_NO_ERROR);
  kp_conf_set_result_cb(c, on_result);
  kp_producer_t *p = kp_producer_new(c, err, sizeof err);
  if (!p)
    fail_msg("kp_producer_new: %s", err);
  return p;
}

static kp_producer_t *start(const char *shared_memory) {
  return start_with(shared_memory, NULL, 0);
}

/* Puts record `i` (its opaque is i, its partition key "pk-<i>"). */
static void put(kp_producer_t *p, size_t i) {
  static uint8_t buf[60000];
  char pk[32];
  snprintf(pk, sizeof pk, "pk-%zu", i);
  size_t n = data_of(i, buf);
  assert_int_equal(kp_producer_put(p, "s", pk, NULL, buf, n, KP_PUT_F_BLOCK, (void *)i),
                   KP_ERR_NO_ERROR);
}

typedef struct seen {
  int inline_n, ref_n, offers, offers_none;
  int copies[N + 1];
  int refs_of_big_after_warmup, inline_of_big_after_warmup;
} seen;

/* Reads the fake daemon's log: every line's hash must be its record's; counts how
 * records came. Record N, the warm-up, is left out of the *_after_warmup counts. */
static void read_log(seen *s) {
  memset(s, 0, sizeof *s);
  FILE *f = fopen(log_path, "r");
  assert_non_null(f);
  char kind[16], pk[64];
  static uint8_t buf[60000];
  char line[256];
  while (fgets(line, sizeof line, f)) {
    unsigned fd;
    size_t len, i;
    unsigned long long h;
    if (!strncmp(line, "offer none", 10)) {
      s->offers_none++;
      continue;
    }
    if (sscanf(line, "offer %u", &fd) == 1) {
      s->offers++;
      continue;
    }
    assert_int_equal(sscanf(line, "%15s %63s %zu %llx", kind, pk, &len, &h), 4);
    assert_int_equal(sscanf(pk, "pk-%zu", &i), 1);
    assert_true(i <= N);
    size_t n = data_of(i, buf);
    assert_int_equal(len, n);
    if (fnv1a(buf, n) != h)
      fail_msg("record %zu (%zu bytes, %s): the daemon read other bytes", i, n, kind);
    s->copies[i]++;
    int ref = !strcmp(kind, "ref");
    s->ref_n += ref;
    s->inline_n += !ref;
    if (ref)
      assert_true(n >= 512); /* small records never go by reference */
    if (i < N && n >= 512) {
      s->refs_of_big_after_warmup += ref;
      s->inline_of_big_after_warmup += !ref;
    }
  }
  fclose(f);
}

static size_t big_records(size_t from, size_t to) {
  size_t k = 0;
  for (size_t i = from; i < to; i++)
    k += sizes[i % NSIZES] >= 512;
  return k;
}

/* Record N first: once its result is in, the daemon's SharedDataAck (sent before it read
 * any record) has been read too; then records 0..N-1, all answered. Returns the stats. */
static kp_stats_t put_all_after_warmup(kp_producer_t *p) {
  put(p, N);
  assert_int_equal(kp_producer_flush_wait(p, 30000), KP_ERR_NO_ERROR);
  for (size_t i = 0; i < N; i++)
    put(p, i);
  assert_int_equal(kp_producer_flush_wait(p, 30000), KP_ERR_NO_ERROR);
  kp_stats_t st;
  assert_int_equal(kp_producer_stats(p, &st), KP_ERR_NO_ERROR);
  return st;
}

static void finish(kp_producer_t *p) {
  assert_int_equal(kp_producer_close(p, 0, 30000), KP_ERR_NO_ERROR);
  kp_producer_destroy(p);
  for (size_t i = 0; i <= N; i++)
    if (atomic_load(&results[i]) != 1)
      fail_msg("record %zu got %d results", i, atomic_load(&results[i]));
  assert_int_equal(atomic_load(&bad), 0);
}

static void big_records_go_by_reference_intact(void **state) {
  unsetenv("KP_FAKE_SHM");
  kp_producer_t *p = start("true");
  kp_stats_t st = put_all_after_warmup(p);
  assert_int_equal(st.puts_shared, big_records(0, N + 1));
  finish(p);
  seen *s = malloc(sizeof *s);
  read_log(s);
  assert_int_equal(s->offers, 1);
  assert_int_equal(s->refs_of_big_after_warmup, big_records(0, N));
  assert_int_equal(s->inline_of_big_after_warmup, 0);
  for (size_t i = 0; i <= N; i++)
    assert_int_equal(s->copies[i], 1);
  free(s);
  unlink(log_path);
}

static void a_declined_file_means_every_record_by_value(void **state) {
  setenv("KP_FAKE_SHM", "decline", 1);
  kp_producer_t *p = start("true");
  for (size_t i = 0; i <= N; i++)
    put(p, i);
  finish(p);
  seen *s = malloc(sizeof *s);
  read_log(s);
  assert_int_equal(s->offers, 1);
  assert_int_equal(s->ref_n, 0);
  assert_int_equal(s->inline_n, N + 1);
  free(s);
  unsetenv("KP_FAKE_SHM");
  unlink(log_path);
}

static void shared_memory_off_offers_nothing(void **state) {
  kp_producer_t *p = start("false");
  for (size_t i = 0; i <= N; i++)
    put(p, i);
  kp_stats_t st;
  assert_int_equal(kp_producer_stats(p, &st), KP_ERR_NO_ERROR);
  assert_int_equal(st.puts_shared, 0);
  finish(p);
  seen *s = malloc(sizeof *s);
  read_log(s);
  assert_int_equal(s->offers_none, 1);
  assert_int_equal(s->ref_n, 0);
  assert_int_equal(s->inline_n, N + 1);
  free(s);
  unlink(log_path);
}

static void a_successor_reads_replayed_records_from_the_same_file(void **state) {
  snprintf(mark_path, sizeof mark_path, "/tmp/kp-test-shared-die-%d", (int)getpid());
  unlink(mark_path);
  setenv("KP_FAKE_DIE_ONCE", mark_path, 1);
  setenv("KP_FAKE_DIE_AFTER", "1500", 1);
  kp_producer_t *p = start("true");
  kp_stats_t st = put_all_after_warmup(p);
  assert_int_equal(st.daemon_starts, 2);
  finish(p);
  seen *s = malloc(sizeof *s);
  read_log(s);
  assert_int_equal(s->offers, 2);
  int replayed = 0;
  for (size_t i = 0; i <= N; i++) {
    assert_true(s->copies[i] >= 1);
    replayed += s->copies[i] > 1;
  }
  assert_true(replayed > 0);    /* the first daemon died with records unanswered */
  assert_true(s->ref_n > 1500); /* and its successor read references too */
  free(s);
  unsetenv("KP_FAKE_DIE_ONCE");
  unsetenv("KP_FAKE_DIE_AFTER");
  unlink(mark_path);
  unlink(log_path);
}

/* Pooled records are not paced by the unsent bound (put is their data's only copy):
 * with the daemon not reading, blocking puts of 60000 bytes go on until
 * MaxOutstandingBytes (4 MiB of unsent data would have stopped them at 70), then wait
 * PutBlockTimeout and time out; nothing of theirs counts as unsent. */
static void pooled_records_are_held_by_the_outstanding_limits_only(void **state) {
  setenv("KP_FAKE_STALL", "1", 1);
  static const char *const extra[][2] = {{"MaxOutstandingBytes", "12000000"},
                                         {"PutBlockTimeout", "200"}};
  kp_producer_t *p = start_with("true", extra, 2);
  unsetenv("KP_FAKE_STALL");
  static uint8_t buf[60000];
  memset(buf, 7, sizeof buf);
  int accepted = 0;
  kp_err_t rc = KP_ERR_NO_ERROR;
  while (accepted < 1000 && (rc = kp_producer_put(p, "s", "pk", NULL, buf, sizeof buf,
                                                  KP_PUT_F_BLOCK, (void *)0)) == KP_ERR_NO_ERROR)
    accepted++;
  assert_int_equal(rc, KP_ERR__TIMED_OUT);
  kp_stats_t st;
  assert_int_equal(kp_producer_stats(p, &st), KP_ERR_NO_ERROR);
  /* The byte limit stopped them (the daemon answered what it read before stalling). */
  assert_true(accepted >= 12000000 / 60000);
  assert_true(st.outstanding_bytes + sizeof buf > 12000000);
  assert_int_equal(st.unsent_bytes, 0);
  assert_int_equal(st.puts_shared, (uint64_t)accepted);
  assert_int_equal(kill(kp_producer_daemon_pid(p), SIGUSR1), 0); /* read on */
  assert_int_equal(kp_producer_flush_wait(p, 30000), KP_ERR_NO_ERROR);
  assert_int_equal(kp_producer_close(p, 0, 30000), KP_ERR_NO_ERROR);
  kp_producer_destroy(p);
  unlink(log_path);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(big_records_go_by_reference_intact),
      cmocka_unit_test(a_declined_file_means_every_record_by_value),
      cmocka_unit_test(shared_memory_off_offers_nothing),
      cmocka_unit_test(a_successor_reads_replayed_records_from_the_same_file),
      cmocka_unit_test(pooled_records_are_held_by_the_outstanding_limits_only),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
