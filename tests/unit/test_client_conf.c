// KP_TEST_LIBS: kp_client
/* Client configuration (kp_conf_*), properties files, the shared credentials file
 * parser and the credentials chain, error names, version, and producer creation
 * failures that need no daemon. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <unistd.h>

#include "client/client_int.h"
#include "kinesis_producer.h"

static char *write_tmp(const char *text) {
  char *path = strdup("/tmp/kp-test-client-XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  return path;
}

static void test_set_get_names_and_aliases(void **state) {
  kp_conf_t *c = kp_conf_new();
  char err[256], v[64];
  assert_int_equal(kp_conf_set(c, "RecordMaxBufferedTime", "250", err, sizeof err), 0);
  assert_int_equal(kp_conf_get(c, "record_max_buffered_time", v, sizeof v), 0);
  assert_string_equal(v, "250");
  /* client keys, both spellings */
  assert_int_equal(kp_conf_set(c, "max_outstanding_records", "7", err, sizeof err), 0);
  assert_int_equal(kp_conf_get(c, "MaxOutstandingRecords", v, sizeof v), 0);
  assert_string_equal(v, "7");
  assert_int_equal(kp_conf_set(c, "DaemonDeathPolicy", "FAIL", err, sizeof err), 0);
  assert_int_equal(kp_conf_get(c, "DaemonDeathPolicy", v, sizeof v), 0);
  assert_string_equal(v, "fail");
  /* KPL wrapper keys are the client's: they take effect */
  assert_int_equal(kp_conf_set(c, "CredentialsRefreshDelay", "100", err, sizeof err), 0);
  assert_int_equal(c->cl.credentials_refresh_delay, 100);
  assert_int_equal(kp_conf_get(c, "CredentialsRefreshDelay", v, sizeof v), 0);
  assert_string_equal(v, "100");
  /* defaults */
  assert_int_equal(kp_conf_get(c, "CredentialsRefreshDelay", v, sizeof v), 0);
  kp_conf_t *d = kp_conf_new();
  assert_int_equal(d->cl.credentials_refresh_delay, 5000);
  assert_int_equal(d->cl.max_user_record_size, 1048576);
  assert_int_equal(d->cl.result_delivery, KPC_DELIVERY_POLL);
  kp_conf_destroy(d);
  kp_conf_destroy(c);
}

static void test_set_errors(void **state) {
  kp_conf_t *c = kp_conf_new();
  char err[256];
  assert_int_equal(kp_conf_set(c, "Bogus", "1", err, sizeof err), KP_ERR__UNKNOWN_CONF);
  assert_non_null(strstr(err, "Bogus"));
  assert_int_equal(kp_conf_set(c, "MaxOutstandingRecords", "0", err, sizeof err),
                   KP_ERR__INVALID_CONF);
  assert_non_null(strstr(err, "MaxOutstandingRecords: 0 is out of range"));
  assert_int_equal(kp_conf_set(c, "MaxOutstandingRecords", "12x", err, sizeof err),
                   KP_ERR__INVALID_CONF);
  assert_non_null(strstr(err, "not a decimal"));
  assert_int_equal(kp_conf_set(c, "MaxUserRecordSize", "1048577", err, sizeof err),
                   KP_ERR__INVALID_CONF);
  assert_int_equal(kp_conf_set(c, "ResultDelivery", "sometimes", err, sizeof err),
                   KP_ERR__INVALID_CONF);
  assert_non_null(strstr(err, "poll, background"));
  assert_int_equal(kp_conf_set(c, "AggregationMaxSize", "10", err, sizeof err),
                   KP_ERR__INVALID_CONF);
  assert_non_null(strstr(err, "AggregationMaxSize"));
  assert_int_equal(kp_conf_set(c, "AwsProfile", "a\nb", err, sizeof err), KP_ERR__INVALID_CONF);
  assert_int_equal(kp_conf_set(NULL, "A", "1", err, sizeof err), KP_ERR__INVALID_ARG);
  assert_int_equal(kp_conf_set(c, NULL, "1", err, sizeof err), KP_ERR__INVALID_ARG);
  assert_int_equal(kp_conf_set(c, "Region", NULL, NULL, 0), KP_ERR__INVALID_ARG);
  char v[8];
  assert_int_equal(kp_conf_get(c, "Bogus", v, sizeof v), KP_ERR__UNKNOWN_CONF);
  /* the failed sets changed nothing */
  assert_int_equal(c->cl.max_outstanding_records, 100000);
  kp_conf_destroy(c);
}

static void test_properties_mixed_keys(void **state) {
  char *path = write_tmp("# KPL and client keys in one file\n"
                         "RecordMaxBufferedTime = 300\n"
                         "! another comment\n"
                         "\n"
                         "MaxOutstandingBytes: 2048\n"
                         "Region us-west-2\n"
                         "  DaemonDeathPolicy=fail  \r\n");
  kp_conf_t *c = kp_conf_new();
  char err[512];
  assert_int_equal(kp_conf_load_properties(c, path, err, sizeof err), 0);
  assert_int_equal(c->cfg.record_max_buffered_time, 300);
  assert_int_equal(c->cl.max_outstanding_bytes, 2048);
  assert_string_equal(c->cfg.region, "us-west-2");
  assert_int_equal(c->cl.daemon_death_policy, KPC_DEATH_FAIL);
  unlink(path);
  free(path);
  kp_conf_destroy(c);
}

static void test_properties_all_or_nothing(void **state) {
  char *path = write_tmp("RecordMaxBufferedTime = 300\nMaxOutstandingRecords = 5\nNope = 1\n");
  kp_conf_t *c = kp_conf_new();
  char err[512];
  assert_int_equal(kp_conf_load_properties(c, path, err, sizeof err), KP_ERR__UNKNOWN_CONF);
  assert_non_null(strstr(err, ":3: "));
  assert_non_null(strstr(err, "Nope"));
  assert_int_equal(c->cfg.record_max_buffered_time, 100);
  assert_int_equal(c->cl.max_outstanding_records, 100000);
  assert_int_equal(kp_conf_load_properties(c, "/nonexistent/x.properties", err, sizeof err),
                   KP_ERR__IO);
  assert_non_null(strstr(err, "/nonexistent/x.properties"));
  unlink(path);
  free(path);
  kp_conf_destroy(c);
}

static void test_dup_is_deep(void **state) {
  kp_conf_t *c = kp_conf_new();
  char err[256];
  assert_int_equal(kp_conf_set(c, "AdditionalMetricsDimensions", "k:v:global", err, sizeof err), 0);
  kp_conf_set_opaque(c, c);
  kp_conf_t *d = kp_conf_dup(c);
  assert_non_null(d);
  assert_ptr_equal(d->opaque, c);
  assert_int_equal(d->cfg.n_additional_metrics_dims, 1);
  assert_ptr_not_equal(d->cfg.additional_metrics_dims, c->cfg.additional_metrics_dims);
  kp_conf_destroy(c);
  kp_conf_destroy(d);
}

static void test_validate_cross_checks(void **state) {
  kp_conf_t *c = kp_conf_new();
  char err[256];
  assert_int_equal(kp_conf_set(c, "Region", "us-east-1", err, sizeof err), 0);
  assert_int_equal(kpc_conf_validate(c, err, sizeof err), 0);
  assert_int_equal(kp_conf_set(c, "AwsAccessKeyId", "AKID", err, sizeof err), 0);
  assert_int_equal(kpc_conf_validate(c, err, sizeof err), KP_ERR__INVALID_CONF);
  assert_non_null(strstr(err, "AwsSecretAccessKey"));
  assert_int_equal(kp_conf_set(c, "AwsSecretAccessKey", "s", err, sizeof err), 0);
  assert_int_equal(kp_conf_set(c, "MaxOutstandingBytes", "1024", err, sizeof err), 0);
  assert_int_equal(kpc_conf_validate(c, err, sizeof err), KP_ERR__INVALID_CONF);
  assert_non_null(strstr(err, "MaxUserRecordSize"));
  kp_conf_destroy(c);
}

static const char ini[] = "# comment\n"
                          "; also a comment\n"
                          "[default]\n"
                          "aws_access_key_id = AKIDDEFAULT\n"
                          "aws_secret_access_key=secretdefault\n"
                          "\n"
                          "[ profile prod ]\n"
                          "  aws_access_key_id   =   AKIDPROD  \r\n"
                          "aws_secret_access_key = secret/prod+x=\n"
                          "aws_session_token = tokenprod\n"
                          "region = eu-west-1\n"
                          "[half]\n"
                          "aws_access_key_id = AKIDHALF\n";

static void test_ini_profiles(void **state) {
  kpc_creds c;
  char err[256];
  assert_int_equal(kpc_creds_parse_ini(ini, strlen(ini), "default", &c, err, sizeof err), 0);
  assert_string_equal(c.akid, "AKIDDEFAULT");
  assert_string_equal(c.secret, "secretdefault");
  assert_string_equal(c.token, "");
  assert_int_equal(kpc_creds_parse_ini(ini, strlen(ini), "prod", &c, err, sizeof err), 0);
  assert_string_equal(c.akid, "AKIDPROD");
  assert_string_equal(c.secret, "secret/prod+x="); /* '=' inside the value is kept */
  assert_string_equal(c.token, "tokenprod");
  assert_int_equal(kpc_creds_parse_ini(ini, strlen(ini), "half", &c, err, sizeof err), 1);
  assert_non_null(strstr(err, "aws_secret_access_key"));
  assert_int_equal(kpc_creds_parse_ini(ini, strlen(ini), "missing", &c, err, sizeof err), 1);
  assert_non_null(strstr(err, "[missing]"));
  /* no final newline */
  const char *t = "[default]\naws_access_key_id=A\naws_secret_access_key=B";
  assert_int_equal(kpc_creds_parse_ini(t, strlen(t), "default", &c, err, sizeof err), 0);
  assert_string_equal(c.secret, "B");
}

static void test_ini_syntax_errors(void **state) {
  kpc_creds c;
  char err[256];
  const char *t = "[default\naws_access_key_id=A\n";
  assert_int_equal(kpc_creds_parse_ini(t, strlen(t), "default", &c, err, sizeof err), -1);
  assert_non_null(strstr(err, "line 1"));
  t = "[default]\njust words\n";
  assert_int_equal(kpc_creds_parse_ini(t, strlen(t), "default", &c, err, sizeof err), -1);
  assert_non_null(strstr(err, "line 2"));
}

static void test_resolve_chain(void **state) {
  char *path = write_tmp("[p]\naws_access_key_id = AKIDFILE\naws_secret_access_key = f\n");
  kpc_settings cl;
  memset(&cl, 0, sizeof cl);
  snprintf(cl.aws_shared_credentials_file, sizeof cl.aws_shared_credentials_file, "%s", path);
  snprintf(cl.aws_profile, sizeof cl.aws_profile, "p");
  unsetenv("AWS_ACCESS_KEY_ID");
  unsetenv("AWS_SECRET_ACCESS_KEY");
  kpc_creds_sources s;
  kpc_creds c;
  char err[1024];
  kpc_creds_sources_init(&s, &cl);
  assert_int_equal(kpc_creds_resolve(&s, &c, err, sizeof err), 0);
  assert_string_equal(c.akid, "AKIDFILE");
  /* the environment beats the file */
  setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
  setenv("AWS_SECRET_ACCESS_KEY", "e", 1);
  setenv("AWS_SESSION_TOKEN", "te", 1);
  kpc_creds_sources_init(&s, &cl);
  assert_int_equal(kpc_creds_resolve(&s, &c, err, sizeof err), 0);
  assert_string_equal(c.akid, "AKIDENV");
  assert_string_equal(c.token, "te");
  /* the configuration beats both */
  snprintf(cl.aws_access_key_id, sizeof cl.aws_access_key_id, "AKIDCONF");
  snprintf(cl.aws_secret_access_key, sizeof cl.aws_secret_access_key, "c");
  kpc_creds_sources_init(&s, &cl);
  assert_int_equal(kpc_creds_resolve(&s, &c, err, sizeof err), 0);
  assert_string_equal(c.akid, "AKIDCONF");
  assert_string_equal(c.source, "configuration");
  /* nothing anywhere: the error lists what was tried */
  memset(&cl, 0, sizeof cl);
  snprintf(cl.aws_shared_credentials_file, sizeof cl.aws_shared_credentials_file,
           "/nonexistent/credentials");
  unsetenv("AWS_ACCESS_KEY_ID");
  unsetenv("AWS_SECRET_ACCESS_KEY");
  unsetenv("AWS_SESSION_TOKEN");
  kpc_creds_sources_init(&s, &cl);
  assert_int_equal(kpc_creds_resolve(&s, &c, err, sizeof err), KP_ERR__NO_CREDENTIALS);
  assert_non_null(strstr(err, "/nonexistent/credentials"));
  assert_non_null(strstr(err, "AWS_ACCESS_KEY_ID"));
  /* AWS_PROFILE picks the profile when the configuration does not */
  memset(&cl, 0, sizeof cl);
  setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
  setenv("AWS_PROFILE", "p", 1);
  kpc_creds_sources_init(&s, &cl);
  assert_int_equal(kpc_creds_resolve(&s, &c, err, sizeof err), 0);
  assert_string_equal(c.akid, "AKIDFILE");
  unsetenv("AWS_SHARED_CREDENTIALS_FILE");
  unsetenv("AWS_PROFILE");
  unlink(path);
  free(path);
}

static void test_errors_and_version(void **state) {
  assert_string_equal(kp_err2name(KP_ERR__QUEUE_FULL), "_QUEUE_FULL");
  assert_string_equal(kp_err2name(KP_ERR_THROTTLED), "THROTTLED");
  assert_non_null(strstr(kp_err2str(KP_ERR__STATE), "state"));
  assert_string_equal(kp_err2str((kp_err_t)-999), "unknown error");
  for (int e = -18; e <= 8; e++) {
    assert_string_not_equal(kp_err2str((kp_err_t)e), "unknown error");
    assert_string_not_equal(kp_err2name((kp_err_t)e), "UNKNOWN");
  }
  assert_int_equal(kp_version(), KP_VERSION);
  assert_string_equal(kp_version_str(), KP_VERSION_STR);
}

static void test_producer_new_errors(void **state) {
  char err[512];
  assert_null(kp_producer_new(NULL, err, sizeof err));
  assert_non_null(strstr(err, "NULL conf"));
  kp_conf_t *c = kp_conf_new();
  /* no endpoint and no region: the configuration check names the problem */
  assert_null(kp_producer_new(c, err, sizeof err));
  assert_non_null(strstr(err, "Region"));
  assert_int_equal(kp_conf_set(c, "Region", "us-east-1", err, sizeof err), 0);
  assert_int_equal(kp_conf_set(c, "NativeExecutable", "/nonexistent/daemon", err, sizeof err), 0);
  assert_null(kp_producer_new(c, err, sizeof err));
  assert_non_null(strstr(err, "NativeExecutable: /nonexistent/daemon"));
  kp_conf_destroy(c); /* still the caller's after a failed kp_producer_new */
  /* NULL handles are refused, not crashed on */
  assert_int_equal(kp_producer_put(NULL, "s", "k", NULL, "x", 1, 0, NULL), KP_ERR__INVALID_ARG);
  assert_int_equal(kp_producer_flush_wait(NULL, 0), KP_ERR__INVALID_ARG);
  assert_int_equal(kp_producer_poll(NULL, 0), 0);
  assert_int_equal(kp_producer_stats(NULL, NULL), KP_ERR__INVALID_ARG);
  assert_int_equal(kp_producer_daemon_pid(NULL), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_set_get_names_and_aliases),
      cmocka_unit_test(test_set_errors),
      cmocka_unit_test(test_properties_mixed_keys),
      cmocka_unit_test(test_properties_all_or_nothing),
      cmocka_unit_test(test_dup_is_deep),
      cmocka_unit_test(test_validate_cross_checks),
      cmocka_unit_test(test_ini_profiles),
      cmocka_unit_test(test_ini_syntax_errors),
      cmocka_unit_test(test_resolve_chain),
      cmocka_unit_test(test_errors_and_version),
      cmocka_unit_test(test_producer_new_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
