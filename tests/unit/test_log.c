// KP_TEST_LIBS: kp_common
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <regex.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/log.h"

static char lines[16384];
static int nlines;
static kp_log_level last_level;

static void capture(kp_log_level level, const char *line, size_t len, void *ud) {
  assert_int_equal(strlen(line), len);
  strncat(lines, line, sizeof lines - strlen(lines) - 1);
  nlines++;
  last_level = level;
  (*(int *)ud)++;
}

static int sink_calls;

static int setup(void **state) {
  lines[0] = '\0';
  nlines = 0;
  sink_calls = 0;
  kp_log_set_level(KP_LOG_LEVEL_INFO);
  kp_log_set_ident(NULL);
  kp_log_set_sink(capture, &sink_calls);
  return 0;
}

static int teardown(void **state) {
  kp_log_set_sink(NULL, NULL);
  kp_log_set_file(NULL);
  kp_log_set_level(KP_LOG_LEVEL_INFO);
  return 0;
}

static void assert_matches(const char *s, const char *re) {
  regex_t r;
  assert_int_equal(regcomp(&r, re, REG_EXTENDED | REG_NOSUB), 0);
  int rc = regexec(&r, s, 0, NULL, 0);
  regfree(&r);
  if (rc != 0)
    fail_msg("\"%s\" does not match /%s/", s, re);
}

static void line_format(void **state) {
  KP_LOG_INFO("hello %d", 42);
  assert_int_equal(nlines, 1);
  assert_int_equal(sink_calls, 1);
  assert_int_equal(last_level, KP_LOG_LEVEL_INFO);
  char re[256];
  snprintf(re, sizeof re,
           "^[0-9]{4}-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9]\\.[0-9]{3}Z "
           "\\[info\\] kinesis_producer\\[%ld\\]: hello 42\n$",
           (long)getpid());
  assert_matches(lines, re);

  lines[0] = '\0';
  kp_log_set_ident("kp_client");
  KP_LOG_ERROR("boom");
  snprintf(re, sizeof re, "Z \\[error\\] kp_client\\[%ld\\]: boom\n$", (long)getpid());
  assert_matches(lines, re);
  lines[0] = '\0';
  KP_LOG_WARNING("w");
  assert_matches(lines, "Z \\[warning\\] kp_client\\[[0-9]+\\]: w\n$");
}

static int evaluated;
static int side_effect(void) {
  return ++evaluated;
}

static void level_filtering_and_lazy_arguments(void **state) {
  evaluated = 0;
  KP_LOG_DEBUG("not shown %d", side_effect());
  KP_LOG_TRACE("not shown %d", side_effect());
  assert_int_equal(evaluated, 0);
  assert_int_equal(nlines, 0);
  KP_LOG_INFO("shown %d", side_effect());
  assert_int_equal(evaluated, 1);
  assert_int_equal(nlines, 1);

  kp_log_set_level(KP_LOG_LEVEL_TRACE);
  KP_LOG_TRACE("t");
  KP_LOG_DEBUG("d");
  assert_int_equal(nlines, 3);
  assert_non_null(strstr(lines, "[trace]"));
  assert_non_null(strstr(lines, "[debug]"));

  kp_log_set_level(KP_LOG_LEVEL_ERROR);
  KP_LOG_WARNING("w %d", side_effect());
  KP_LOG_INFO("i");
  assert_int_equal(evaluated, 1);
  assert_int_equal(nlines, 3);
  KP_LOG_ERROR("e");
  assert_int_equal(nlines, 4);

  kp_log_set_level(KP_LOG_LEVEL_OFF);
  KP_LOG_ERROR("e %d", side_effect());
  assert_int_equal(nlines, 4);
  assert_int_equal(evaluated, 1);
  assert_int_equal(kp_log_get_level(), KP_LOG_LEVEL_OFF);
  kp_log_set_level((kp_log_level)99); /* clamped, not stored raw */
  assert_int_equal(kp_log_get_level(), KP_LOG_LEVEL_OFF);
}

static void level_names(void **state) {
  const char *names[] = {"trace", "debug", "info", "warning", "error", "off"};
  for (int i = 0; i <= KP_LOG_LEVEL_OFF; i++) {
    kp_log_level l = KP_LOG_LEVEL_OFF;
    assert_int_equal(kp_log_level_from_string(names[i], &l), 0);
    assert_int_equal(l, i);
    assert_string_equal(kp_log_level_name((kp_log_level)i), names[i]);
  }
  kp_log_level l = KP_LOG_LEVEL_TRACE;
  assert_int_equal(kp_log_level_from_string("WARNING", &l), 0);
  assert_int_equal(l, KP_LOG_LEVEL_WARNING);
  assert_int_equal(kp_log_level_from_string("warn", &l), 0);
  assert_int_equal(l, KP_LOG_LEVEL_WARNING);
  l = KP_LOG_LEVEL_DEBUG;
  const char *bad[] = {"", "verbose", "inf", "info ", "fatal"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    assert_int_equal(kp_log_level_from_string(bad[i], &l), -1);
  assert_int_equal(kp_log_level_from_string(NULL, &l), -1);
  assert_int_equal(l, KP_LOG_LEVEL_DEBUG);
  assert_string_equal(kp_log_level_name((kp_log_level)42), "?");
}

static void one_line_per_event(void **state) {
  KP_LOG_INFO("a\nb\r\tc\x01"
              "d");
  assert_int_equal(nlines, 1);
  assert_non_null(strstr(lines, ": a\\nb\\r\\tc\\x01d\n"));
  assert_int_equal(strchr(lines, '\n') - lines + 1, (long)strlen(lines));
}

static void long_messages_are_cut(void **state) {
  char *big = malloc(10000);
  assert_non_null(big);
  memset(big, 'x', 9999);
  big[9999] = '\0';
  KP_LOG_INFO("%s", big);
  size_t len = strlen(lines);
  assert_true(len <= KP_LOG_LINE_MAX);
  assert_true(len > KP_LOG_LINE_MAX - 10);
  assert_string_equal(lines + len - 4, "...\n");
  /* Escapes that do not fit are cut whole. */
  lines[0] = '\0';
  memset(big, '\n', 9999);
  KP_LOG_INFO("%s", big);
  len = strlen(lines);
  assert_true(len <= KP_LOG_LINE_MAX);
  assert_string_equal(lines + len - 6, "\\n...\n");
  free(big);
}

static void file_output(void **state) {
  kp_log_set_sink(NULL, NULL);
  FILE *f = tmpfile();
  assert_non_null(f);
  kp_log_set_file(f);
  KP_LOG_INFO("to file %s", "ok");
  KP_LOG_DEBUG("dropped");
  kp_log_set_file(NULL);
  rewind(f);
  char buf[512];
  assert_non_null(fgets(buf, sizeof buf, f));
  assert_matches(buf, "Z \\[info\\] kinesis_producer\\[[0-9]+\\]: to file ok\n$");
  assert_null(fgets(buf, sizeof buf, f));
  fclose(f);
}

#define THREADS 4
#define PER_THREAD 500

static void *spam(void *arg) {
  long id = (long)arg;
  for (int i = 0; i < PER_THREAD; i++)
    KP_LOG_INFO("thread %ld line %d %s", id, i,
                "padding-padding-padding-padding-padding-padding-padding-padding");
  return NULL;
}

/* The default stderr path: lines from several threads never interleave. */
static void concurrent_lines_stay_whole(void **state) {
  kp_log_set_sink(NULL, NULL);
  FILE *f = tmpfile();
  assert_non_null(f);
  fflush(stderr);
  int saved = dup(STDERR_FILENO);
  assert_true(saved >= 0);
  assert_true(dup2(fileno(f), STDERR_FILENO) >= 0);
  pthread_t t[THREADS];
  for (long i = 0; i < THREADS; i++)
    assert_int_equal(pthread_create(&t[i], NULL, spam, (void *)i), 0);
  for (int i = 0; i < THREADS; i++)
    pthread_join(t[i], NULL);
  assert_true(dup2(saved, STDERR_FILENO) >= 0);
  close(saved);

  rewind(f);
  char buf[512];
  int count[THREADS] = {0};
  regex_t r;
  assert_int_equal(regcomp(&r,
                           "^[0-9T:.-]+Z \\[info\\] kinesis_producer\\[[0-9]+\\]: thread ([0-9]) "
                           "line [0-9]+ (padding-){7}padding\n$",
                           REG_EXTENDED),
                   0);
  while (fgets(buf, sizeof buf, f)) {
    regmatch_t m[2];
    if (regexec(&r, buf, 2, m, 0) != 0)
      fail_msg("mangled line: %s", buf);
    count[buf[m[1].rm_so] - '0']++;
  }
  regfree(&r);
  for (int i = 0; i < THREADS; i++)
    assert_int_equal(count[i], PER_THREAD);
  fclose(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(line_format, setup, teardown),
      cmocka_unit_test_setup_teardown(level_filtering_and_lazy_arguments, setup, teardown),
      cmocka_unit_test_setup_teardown(level_names, setup, teardown),
      cmocka_unit_test_setup_teardown(one_line_per_event, setup, teardown),
      cmocka_unit_test_setup_teardown(long_messages_are_cut, setup, teardown),
      cmocka_unit_test_setup_teardown(file_output, setup, teardown),
      cmocka_unit_test_setup_teardown(concurrent_lines_stay_whole, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
