// KP_TEST_LIBS: kp_producer_api
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <errno.h>
#include <string.h>
#include <cmocka.h>

#include "producer/sigv4.h"

/* AWS's published SigV4 test suite uses these credentials, scope and instant. */
#define SUITE_AKID "AKIDEXAMPLE"
#define SUITE_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define SUITE_TIME ((time_t)1440938160) /* 20150830T123600Z */

static kp_sigv4_signer *suite_signer(const char *token) {
  kp_sigv4_signer *s = kp_sigv4_signer_new();
  assert_non_null(s);
  assert_false(kp_sigv4_signer_has_credentials(s));
  assert_int_equal(kp_sigv4_signer_set_credentials(s, SUITE_AKID, SUITE_SECRET, token), 0);
  assert_true(kp_sigv4_signer_has_credentials(s));
  return s;
}

static void get_vanilla_matches_aws_suite(void **state) {
  kp_sigv4_signer *s = suite_signer(NULL);
  kp_sigv4_request req = {.method = "GET", .host = "example.amazonaws.com", .path = "/"};
  kp_sigv4_result r;
  char err[128];
  assert_int_equal(kp_sigv4_sign(s, &req, "us-east-1", "service", SUITE_TIME, &r, err, sizeof err),
                   0);
  assert_string_equal(r.amz_date, "20150830T123600Z");
  assert_string_equal(r.authorization,
                      "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
                      "aws4_request, SignedHeaders=host;x-amz-date, "
                      "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
  assert_null(r.security_token);
  assert_string_equal(r.content_sha256, "");
  kp_sigv4_result_free(&r);
  kp_sigv4_signer_free(s);
}

/* Suite "get-vanilla-query-order-key-case": pairs must be sorted by key then value. */
static void query_order_matches_aws_suite(void **state) {
  kp_sigv4_signer *s = suite_signer(NULL);
  kp_sigv4_request req = {.method = "GET",
                          .host = "example.amazonaws.com",
                          .path = "/",
                          .query = "Param2=value2&Param1=value1"};
  kp_sigv4_result r;
  assert_int_equal(kp_sigv4_sign(s, &req, "us-east-1", "service", SUITE_TIME, &r, NULL, 0), 0);
  assert_non_null(
      strstr(r.authorization,
             "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"));
  kp_sigv4_result_free(&r);
  kp_sigv4_signer_free(s);
}

/* Suite "post-x-www-form-urlencoded": a body and a content-type header. */
static void post_form_matches_aws_suite(void **state) {
  kp_sigv4_signer *s = suite_signer(NULL);
  kp_sigv4_header h[] = {{"Content-Type", "application/x-www-form-urlencoded"}};
  kp_sigv4_request req = {.method = "POST",
                          .host = "example.amazonaws.com",
                          .path = "/",
                          .headers = h,
                          .n_headers = 1,
                          .payload = "Param1=value1",
                          .payload_len = 13};
  kp_sigv4_result r;
  assert_int_equal(kp_sigv4_sign(s, &req, "us-east-1", "service", SUITE_TIME, &r, NULL, 0), 0);
  assert_string_equal(r.authorization,
                      "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
                      "aws4_request, SignedHeaders=content-type;host;x-amz-date, "
                      "Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a");
  kp_sigv4_result_free(&r);
  kp_sigv4_signer_free(s);
}

/* A precomputed payload hash must sign exactly as hashing the payload does. */
static void precomputed_hash_equals_hashing(void **state) {
  kp_sigv4_signer *s = suite_signer("tok");
  const char body[] = "{\"StreamName\":\"s\",\"Records\":[]}";
  kp_sigv4_header h[] = {{"content-type", "application/x-amz-json-1.1"},
                         {"X-Amz-Target", "Kinesis_20131202.PutRecords"}};
  kp_sigv4_request req = {.method = "POST",
                          .host = "kinesis.eu-west-1.amazonaws.com",
                          .headers = h,
                          .n_headers = 2,
                          .payload = body,
                          .payload_len = sizeof body - 1,
                          .sign_content_sha256 = true};
  kp_sigv4_result a, b;
  assert_int_equal(kp_sigv4_sign(s, &req, "eu-west-1", "kinesis", SUITE_TIME, &a, NULL, 0), 0);
  char hex[KP_SIGV4_SHA256_HEX_LEN];
  assert_int_equal(kp_sigv4_sha256_hex(body, sizeof body - 1, hex), 0);
  assert_string_equal(a.content_sha256, hex);
  req.payload = NULL;
  req.payload_len = 0;
  req.payload_sha256_hex = hex;
  assert_int_equal(kp_sigv4_sign(s, &req, "eu-west-1", "kinesis", SUITE_TIME, &b, NULL, 0), 0);
  assert_string_equal(a.authorization, b.authorization);
  assert_non_null(strstr(a.authorization, "SignedHeaders=content-type;host;x-amz-content-sha256;"
                                          "x-amz-date;x-amz-security-token;x-amz-target,"));
  assert_string_equal(a.security_token, "tok");
  kp_sigv4_result_free(&a);
  kp_sigv4_result_free(&b);
  kp_sigv4_signer_free(s);
}

/* The cached key must follow the date, region, service and credentials. */
static void cache_follows_scope_and_credentials(void **state) {
  kp_sigv4_signer *s = suite_signer(NULL);
  kp_sigv4_request req = {.method = "GET", .host = "example.amazonaws.com", .path = "/"};
  kp_sigv4_result r1, r2;
  assert_int_equal(kp_sigv4_sign(s, &req, "us-east-1", "service", SUITE_TIME, &r1, NULL, 0), 0);
  /* Different regions/services/days in between must not disturb the first result. */
  const char *regions[] = {"eu-west-1", "us-west-2", "ap-south-1", "sa-east-1", "us-east-1"};
  for (size_t i = 0; i < 5; i++) {
    assert_int_equal(
        kp_sigv4_sign(s, &req, regions[i], "kinesis", SUITE_TIME + 86400 * (time_t)i, &r2, NULL, 0),
        0);
    assert_string_not_equal(r1.authorization, r2.authorization);
  }
  assert_int_equal(kp_sigv4_sign(s, &req, "us-east-1", "service", SUITE_TIME, &r2, NULL, 0), 0);
  assert_string_equal(r1.authorization, r2.authorization);
  /* New secret, same scope: a stale cached key would reproduce the old signature. */
  assert_int_equal(kp_sigv4_signer_set_credentials(s, SUITE_AKID, "other", NULL), 0);
  assert_int_equal(kp_sigv4_sign(s, &req, "us-east-1", "service", SUITE_TIME, &r2, NULL, 0), 0);
  assert_string_not_equal(r1.authorization, r2.authorization);
  assert_int_equal(kp_sigv4_signer_set_credentials(s, SUITE_AKID, SUITE_SECRET, NULL), 0);
  assert_int_equal(kp_sigv4_sign(s, &req, "us-east-1", "service", SUITE_TIME, &r2, NULL, 0), 0);
  assert_string_equal(r1.authorization, r2.authorization);
  kp_sigv4_signer_free(s);
}

static void header_values_are_trimmed_and_sorted(void **state) {
  kp_sigv4_signer *s = suite_signer(NULL);
  kp_sigv4_header h1[] = {{"X-B", "  a   b  "}, {"x-a", "1"}};
  kp_sigv4_header h2[] = {{"x-a", "1"}, {"x-b", "a b"}};
  kp_sigv4_request req = {.method = "GET", .host = "h", .headers = h1, .n_headers = 2};
  kp_sigv4_result r1, r2;
  assert_int_equal(kp_sigv4_sign(s, &req, "r", "svc", SUITE_TIME, &r1, NULL, 0), 0);
  req.headers = h2;
  assert_int_equal(kp_sigv4_sign(s, &req, "r", "svc", SUITE_TIME, &r2, NULL, 0), 0);
  assert_string_equal(r1.authorization, r2.authorization);
  assert_non_null(strstr(r1.authorization, "SignedHeaders=host;x-a;x-amz-date;x-b,"));
  kp_sigv4_signer_free(s);
}

static void bad_input_is_rejected(void **state) {
  kp_sigv4_signer *s = kp_sigv4_signer_new();
  kp_sigv4_request req = {.method = "GET", .host = "h"};
  kp_sigv4_result r;
  char err[128] = "";
  assert_int_equal(kp_sigv4_sign(s, &req, "r", "svc", SUITE_TIME, &r, err, sizeof err), -EINVAL);
  assert_string_equal(err, "no credentials");
  assert_int_equal(kp_sigv4_signer_set_credentials(s, "", "x", NULL), -EINVAL);
  assert_int_equal(kp_sigv4_signer_set_credentials(s, "a", "x\n", NULL), -EINVAL);
  assert_int_equal(kp_sigv4_signer_set_credentials(s, "a", "b", NULL), 0);

  kp_sigv4_header dup[] = {{"x-a", "1"}, {"X-A", "2"}};
  kp_sigv4_header crlf[] = {{"x-a", "1\r\nx-evil: 1"}};
  kp_sigv4_header reserved[] = {{"Host", "other"}};
  kp_sigv4_header badname[] = {{"x a", "1"}};
  const kp_sigv4_header *sets[] = {dup, crlf, reserved, badname};
  size_t ns[] = {2, 1, 1, 1};
  for (size_t i = 0; i < 4; i++) {
    req.headers = sets[i];
    req.n_headers = ns[i];
    err[0] = '\0';
    assert_int_equal(kp_sigv4_sign(s, &req, "r", "svc", SUITE_TIME, &r, err, sizeof err), -EINVAL);
    assert_true(err[0] != '\0');
    assert_string_equal(r.authorization, "");
  }
  req.headers = NULL;
  req.n_headers = 0;
  assert_int_equal(kp_sigv4_sign(s, &req, "", "svc", SUITE_TIME, &r, NULL, 0), -EINVAL);
  assert_int_equal(kp_sigv4_sign(s, &req, "a/b", "svc", SUITE_TIME, &r, NULL, 0), -EINVAL);
  req.payload_sha256_hex = "ABC";
  assert_int_equal(kp_sigv4_sign(s, &req, "r", "svc", SUITE_TIME, &r, NULL, 0), -EINVAL);
  req.payload_sha256_hex = NULL;
  /* An absurd header list overflows the fixed Authorization buffer. */
  char longname[900];
  memset(longname, 'x', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  kp_sigv4_header big[] = {{longname, "v"}, {"y", "v"}};
  big[1].name = longname + 1; /* distinct name */
  req.headers = big;
  req.n_headers = 2;
  assert_int_equal(kp_sigv4_sign(s, &req, "r", "svc", SUITE_TIME, &r, NULL, 0), -E2BIG);
  kp_sigv4_signer_free(s);
}

static void secret_never_appears_in_output(void **state) {
  kp_sigv4_signer *s = suite_signer("session-token");
  kp_sigv4_request req = {.method = "GET", .host = "h"};
  kp_sigv4_result r;
  assert_int_equal(kp_sigv4_sign(s, &req, "r", "svc", SUITE_TIME, &r, NULL, 0), 0);
  assert_null(strstr(r.authorization, SUITE_SECRET));
  assert_null(strstr(r.authorization, "session-token"));
  kp_sigv4_result_free(&r);
  assert_null(r.security_token);
  kp_sigv4_signer_free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(get_vanilla_matches_aws_suite),
      cmocka_unit_test(query_order_matches_aws_suite),
      cmocka_unit_test(post_form_matches_aws_suite),
      cmocka_unit_test(precomputed_hash_equals_hashing),
      cmocka_unit_test(cache_follows_scope_and_credentials),
      cmocka_unit_test(header_values_are_trimmed_and_sorted),
      cmocka_unit_test(bad_input_is_rejected),
      cmocka_unit_test(secret_never_appears_in_output),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
