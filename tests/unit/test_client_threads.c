// KP_TEST_LIBS: kp_client
/* The client library under concurrency and daemon deaths, against kp-fake-daemon
 * (tests/client/kp_fake_daemon.c: answers every record at once), so it runs without an
 * emulator and under ASan/UBSan/TSan. Every test checks the core promise: each accepted
 * put gets exactly one result. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

#include "kinesis_producer.h"

#define THREADS 4
#define PER_THREAD 20000
#define TOTAL (THREADS * PER_THREAD)

static _Atomic int counts[TOTAL + 1];
static _Atomic int failures, ok_results, died_results, batched_results;
static atomic_bool stop_polling;

static void on_result(kp_producer_t *p, const kp_result_t *r, void *opaque) {
  uintptr_t i = (uintptr_t)r->opaque;
  if (i <= TOTAL)
    atomic_fetch_add(&counts[i], 1);
  if (r->err == KP_ERR_NO_ERROR && r->shard_id && r->sequence_number && r->attempt_cnt == 1) {
    atomic_fetch_add(&ok_results, 1);
    /* the fake daemon's PutRecordResultBatch: duration 7, delay id % 5 */
    if (r->attempts[0].duration_ms == 7 && r->attempts[0].delay_ms < 5 && r->attempts[0].success &&
        !strcmp(r->shard_id, "shardId-000000000000"))
      atomic_fetch_add(&batched_results, 1);
  } else if (r->err == KP_ERR__DAEMON_DIED)
    atomic_fetch_add(&died_results, 1);
  else
    atomic_fetch_add(&failures, 1);
}

static void reset(void) {
  for (size_t i = 0; i <= TOTAL; i++)
    atomic_store(&counts[i], 0);
  atomic_store(&failures, 0);
  atomic_store(&ok_results, 0);
  atomic_store(&died_results, 0);
  atomic_store(&batched_results, 0);
  atomic_store(&stop_polling, false);
}

static kp_conf_t *conf_for_fake(void) {
  static char path[4096];
  const char *bin = getenv("KP_BIN_DIR");
  snprintf(path, sizeof path, "%s/kp-fake-daemon", bin ? bin : "build/bin");
  kp_conf_t *c = kp_conf_new();
  char err[256];
  const char *kv[][2] = {{"NativeExecutable", path},     {"Region", "us-east-1"},
                         {"AwsAccessKeyId", "AKIDFAKE"}, {"AwsSecretAccessKey", "s"},
                         {"MetricsLevel", "none"},       {"DaemonRestartBackoffMin", "10"}};
  for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
    assert_int_equal(kp_conf_set(c, kv[i][0], kv[i][1], err, sizeof err), KP_ERR_NO_ERROR);
  kp_conf_set_result_cb(c, on_result);
  return c;
}

static void set(kp_conf_t *c, const char *k, const char *v) {
  char err[256];
  assert_int_equal(kp_conf_set(c, k, v, err, sizeof err), KP_ERR_NO_ERROR);
}

static kp_producer_t *start(kp_conf_t *c) {
  char err[512];
  kp_producer_t *p = kp_producer_new(c, err, sizeof err);
  if (!p)
    fail_msg("kp_producer_new: %s", err);
  return p;
}

typedef struct worker {
  kp_producer_t *p;
  int first; /* opaque of its first record */
  int n;
  int errors;
} worker;

static void *put_worker(void *arg) {
  worker *w = arg;
  char pk[32], data[64];
  for (int i = 0; i < w->n; i++) {
    int id = w->first + i;
    snprintf(pk, sizeof pk, "pk-%d", id % 101);
    int len = snprintf(data, sizeof data, "record %d", id);
    if (kp_producer_put(w->p, "s", pk, NULL, data, (size_t)len, KP_PUT_F_BLOCK,
                        (void *)(uintptr_t)id) != KP_ERR_NO_ERROR)
      w->errors++;
    if (i % 5000 == 0)
      kp_producer_flush(w->p, i % 10000 ? "s" : NULL); /* concurrent flushes are harmless */
  }
  return NULL;
}

static void *poller(void *arg) {
  kp_producer_t *p = arg;
  for (int guard = 0; guard < 10000000 && !atomic_load(&stop_polling); guard++)
    kp_producer_poll(p, 50);
  return NULL;
}

static void run_workers(kp_producer_t *p, int with_poller) {
  pthread_t t[THREADS], pt;
  worker w[THREADS];
  if (with_poller)
    assert_int_equal(pthread_create(&pt, NULL, poller, p), 0);
  for (int i = 0; i < THREADS; i++) {
    w[i] = (worker){p, 1 + i * PER_THREAD, PER_THREAD, 0};
    assert_int_equal(pthread_create(&t[i], NULL, put_worker, &w[i]), 0);
  }
  for (int i = 0; i < THREADS; i++) {
    pthread_join(t[i], NULL);
    assert_int_equal(w[i].errors, 0);
  }
  assert_int_equal(kp_producer_flush_wait(p, 60000), KP_ERR_NO_ERROR);
  assert_int_equal(kp_producer_outstanding(p), 0);
  if (with_poller) {
    atomic_store(&stop_polling, true);
    pthread_join(pt, NULL);
  }
}

static void assert_exactly_once(int n) {
  for (int i = 1; i <= n; i++)
    if (atomic_load(&counts[i]) != 1)
      fail_msg("record %d got %d results", i, atomic_load(&counts[i]));
}

static void test_threads_poll_mode(void **state) {
  reset();
  kp_conf_t *c = conf_for_fake();
  /* small limits so that puts block and wake up many times */
  set(c, "MaxOutstandingRecords", "64");
  set(c, "MaxOutstandingBytes", "4096");
  set(c, "MaxUserRecordSize", "1024");
  kp_producer_t *p = start(c);
  run_workers(p, 1);
  assert_exactly_once(TOTAL);
  assert_int_equal(atomic_load(&ok_results), TOTAL);
  /* the library asks for result batches by default */
  assert_int_equal(atomic_load(&batched_results), TOTAL);
  kp_stats_t st;
  assert_int_equal(kp_producer_stats(p, &st), KP_ERR_NO_ERROR);
  assert_int_equal(st.puts_accepted, TOTAL);
  assert_int_equal(st.results_ok, TOTAL);
  assert_int_equal(st.outstanding_bytes, 0);
  assert_int_equal(kp_producer_close(p, 0, 10000), KP_ERR_NO_ERROR);
  kp_producer_destroy(p);
}

static void test_threads_background_mode(void **state) {
  reset();
  kp_conf_t *c = conf_for_fake();
  set(c, "ResultDelivery", "background");
  set(c, "MaxOutstandingRecords", "100");
  set(c, "ResultBatches", "false"); /* one PutRecordResult per record, as the KPL's */
  kp_producer_t *p = start(c);
  run_workers(p, 0);
  assert_exactly_once(TOTAL);
  assert_int_equal(atomic_load(&ok_results), TOTAL);
  assert_int_equal(atomic_load(&batched_results), 0);
  kp_producer_destroy(p); /* destroy without close closes */
}

static char marker[64];

static void arm_death(int after) {
  snprintf(marker, sizeof marker, "/tmp/kp-fake-die-XXXXXX");
  int fd = mkstemp(marker);
  assert_true(fd >= 0);
  close(fd);
  unlink(marker); /* the first daemon creates it and dies; its successor sees it */
  char n[16];
  snprintf(n, sizeof n, "%d", after);
  setenv("KP_FAKE_DIE_ONCE", marker, 1);
  setenv("KP_FAKE_DIE_AFTER", n, 1);
}

static void disarm_death(void) {
  unsetenv("KP_FAKE_DIE_ONCE");
  unsetenv("KP_FAKE_DIE_AFTER");
  unlink(marker);
}

static void test_daemon_death_replays(void **state) {
  reset();
  arm_death(3000);
  kp_conf_t *c = conf_for_fake();
  kp_producer_t *p = start(c);
  unsetenv("KP_FAKE_DIE_ONCE"); /* the producer took its environment snapshot */
  unsetenv("KP_FAKE_DIE_AFTER");
  run_workers(p, 1);
  assert_exactly_once(TOTAL);
  assert_int_equal(atomic_load(&ok_results), TOTAL);
  kp_stats_t st;
  kp_producer_stats(p, &st);
  assert_int_equal(st.daemon_starts, 2);
  assert_int_equal(st.daemon_deaths, 1);
  assert_true(st.records_replayed > 0);
  assert_int_equal(st.credentials_sent, 4); /* re-sent to the new daemon */
  kp_producer_destroy(p);
  disarm_death();
}

static void test_daemon_death_fail_policy(void **state) {
  reset();
  arm_death(3000);
  kp_conf_t *c = conf_for_fake();
  set(c, "DaemonDeathPolicy", "fail");
  kp_producer_t *p = start(c);
  unsetenv("KP_FAKE_DIE_ONCE");
  unsetenv("KP_FAKE_DIE_AFTER");
  run_workers(p, 1);
  assert_exactly_once(TOTAL);
  assert_true(atomic_load(&died_results) > 0);
  assert_int_equal(atomic_load(&failures), 0);
  assert_int_equal(atomic_load(&ok_results) + atomic_load(&died_results), TOTAL);
  kp_stats_t st;
  kp_producer_stats(p, &st);
  assert_int_equal(st.records_replayed, 0);
  kp_producer_destroy(p);
  disarm_death();
}

static void test_metrics_and_first_messages(void **state) {
  reset();
  char logpath[] = "/tmp/kp-fake-log-XXXXXX";
  int fd = mkstemp(logpath);
  assert_true(fd >= 0);
  close(fd);
  setenv("KP_FAKE_LOG", logpath, 1);
  kp_producer_t *p = start(conf_for_fake());
  unsetenv("KP_FAKE_LOG");
  kp_metric_t *m = NULL;
  size_t n = 0;
  assert_int_equal(kp_producer_metrics(p, "UserRecordsPut", 60, 10000, &m, &n), KP_ERR_NO_ERROR);
  assert_int_equal(n, 1);
  assert_string_equal(m[0].name, "UserRecordsPut");
  kp_metrics_destroy(m, n);
  kp_producer_destroy(p);
  /* Configuration (6), then SetCredentials for Kinesis, then for metrics. */
  FILE *f = fopen(logpath, "r");
  assert_non_null(f);
  char text[512] = "";
  size_t got = fread(text, 1, sizeof text - 1, f);
  text[got] = '\0';
  fclose(f);
  unlink(logpath);
  assert_non_null(strstr(text, "message 6\ncreds AKIDFAKE 0\ncreds AKIDFAKE 1\nmessage 7\n"));
}

static void *blocked_put(void *arg) {
  kp_producer_t *p = arg;
  return (void *)(intptr_t)kp_producer_put(p, "s", "k", NULL, "x", 1, KP_PUT_F_BLOCK,
                                           (void *)(uintptr_t)2);
}

static void test_close_releases_blocked_put(void **state) {
  reset();
  kp_conf_t *c = conf_for_fake();
  set(c, "MaxOutstandingRecords", "1");
  set(c, "PutBlockTimeout", "600000");
  kp_producer_t *p = start(c);
  assert_int_equal(kp_producer_put(p, "s", "k", NULL, "x", 1, 0, (void *)(uintptr_t)1), 0);
  /* Nobody polls, so record 1 stays outstanding and the second put blocks until close. */
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, blocked_put, p), 0);
  assert_int_equal(kp_producer_close(p, 0, 10000), KP_ERR_NO_ERROR);
  void *rc;
  pthread_join(t, &rc);
  assert_int_equal((int)(intptr_t)rc, KP_ERR__STATE);
  assert_int_equal(atomic_load(&counts[1]), 1); /* served by close */
  assert_int_equal(atomic_load(&counts[2]), 0); /* refused: no result, ever */
  assert_int_equal(kp_producer_put(p, "s", "k", NULL, "x", 1, 0, NULL), KP_ERR__STATE);
  assert_int_equal(kp_producer_flush(p, NULL), KP_ERR__STATE);
  kp_producer_destroy(p);
}

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* While a live daemon does not take records, a blocking put waits once more than 4 MiB
 * of put records are unsent (for PutBlockTimeout, after which the outstanding limits
 * alone decide), instead of queueing up to MaxOutstandingBytes; a non-blocking put is
 * not held back. The fake daemon stops reading at its first record until SIGUSR1. */
static void test_blocking_put_waits_for_unsent(void **state) {
  reset();
  setenv("KP_FAKE_STALL", "1", 1);
  kp_conf_t *c = conf_for_fake();
  set(c, "ResultDelivery", "background");
  set(c, "PutBlockTimeout", "200");
  set(c, "MaxOutstandingBytes", "268435456"); /* never the limit here */
  set(c, "SharedMemory", "false"); /* pooled records are not paced (test_client_shared) */
  kp_producer_t *p = start(c);
  unsetenv("KP_FAKE_STALL");
  static char data[64 * 1024];
  enum { MAX_PUTS = 1000 }; /* 62.5 MiB: far past the bound and every buffer */
  int n = 0, first_wait = 0, waits = 0;
  while (n < MAX_PUTS && waits < 4) {
    n++;
    double t0 = mono_s();
    assert_int_equal(
        kp_producer_put(p, "s", "k", NULL, data, sizeof data, KP_PUT_F_BLOCK, (void *)(uintptr_t)n),
        KP_ERR_NO_ERROR);
    if (mono_s() - t0 >= 0.2) { /* only a put that waited out its timeout takes this long */
      if (!waits++)
        first_wait = n;
    } else {
      waits = 0; /* a stall of the I/O thread alone (a loaded machine) is not the bound */
    }
  }
  assert_int_equal(waits, 4); /* four in a row, once the backlog was past the bound */
  /* Bound + channel (1 MiB) + socket buffers: nowhere near 62.5 MiB. */
  if ((size_t)first_wait * sizeof data > (12u << 20))
    fail_msg("the first put to wait was number %d", first_wait);
  kp_stats_t st;
  assert_int_equal(kp_producer_stats(p, &st), KP_ERR_NO_ERROR);
  assert_true(st.unsent_bytes > (4u << 20));
  size_t unsent = st.unsent_bytes;
  double t0 = mono_s();
  n++;
  assert_int_equal(kp_producer_put(p, "s", "k", NULL, data, sizeof data, 0, (void *)(uintptr_t)n),
                   KP_ERR_NO_ERROR);
  assert_true(mono_s() - t0 < 0.2);
  assert_int_equal(kp_producer_stats(p, &st), KP_ERR_NO_ERROR);
  assert_int_equal(st.unsent_bytes, unsent + sizeof data);

  assert_int_equal(kill(kp_producer_daemon_pid(p), SIGUSR1), 0);
  assert_int_equal(kp_producer_flush_wait(p, 60000), KP_ERR_NO_ERROR);
  assert_int_equal(kp_producer_stats(p, &st), KP_ERR_NO_ERROR);
  assert_int_equal(st.unsent_bytes, 0);
  assert_int_equal(st.outstanding, 0);
  assert_int_equal(kp_producer_close(p, 0, 10000), KP_ERR_NO_ERROR);
  kp_producer_destroy(p);
  assert_exactly_once(n);
  assert_int_equal(atomic_load(&ok_results), n);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_threads_poll_mode),
      cmocka_unit_test(test_threads_background_mode),
      cmocka_unit_test(test_daemon_death_replays),
      cmocka_unit_test(test_daemon_death_fail_policy),
      cmocka_unit_test(test_metrics_and_first_messages),
      cmocka_unit_test(test_close_releases_blocked_put),
      cmocka_unit_test(test_blocking_put_waits_for_unsent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
