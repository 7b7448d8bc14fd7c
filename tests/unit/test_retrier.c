// KP_TEST_LIBS: kp_producer_core
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "producer/retrier.h"

static void throttling_is_its_own_class(void **state) {
  assert_int_equal(kp_retry_classify("ProvisionedThroughputExceededException", 0),
                   KP_RETRY_THROTTLED);
  assert_int_equal(kp_retry_classify("KMSThrottlingException", 0), KP_RETRY_THROTTLED);
  assert_int_equal(kp_retry_classify("ThrottlingException", 400), KP_RETRY_THROTTLED);
  assert_int_equal(kp_retry_classify("", 429), KP_RETRY_THROTTLED);
}

static void transient_errors_retry(void **state) {
  assert_int_equal(kp_retry_classify("InternalFailure", 0), KP_RETRY_YES);
  assert_int_equal(kp_retry_classify("ConnectionError", 0), KP_RETRY_YES);
  assert_int_equal(kp_retry_classify("Timeout", 0), KP_RETRY_YES);
  assert_int_equal(kp_retry_classify("ExpiredTokenException", 400), KP_RETRY_YES);
  assert_int_equal(kp_retry_classify("HttpStatus503", 503), KP_RETRY_YES);
  assert_int_equal(kp_retry_classify(NULL, 500), KP_RETRY_YES);
}

static void permanent_errors_fail_at_once(void **state) {
  const char *codes[] = {"ValidationException",      "ResourceNotFoundException",
                         "AccessDeniedException",    "KMSAccessDeniedException",
                         "KMSDisabledException",     "KMSNotFoundException",
                         "InvalidArgumentException", "UnrecognizedClientException"};
  for (size_t i = 0; i < sizeof codes / sizeof *codes; i++)
    assert_int_equal(kp_retry_classify(codes[i], 400), KP_RETRY_NO);
  assert_int_equal(kp_retry_classify("SomethingNew", 403), KP_RETRY_NO);
}

static void deadline_is_half_the_buffer_time_capped_by_expiry(void **state) {
  assert_true(kp_retry_deadline(KP_RETRY_YES, false, 10.0, 0.1, 40.0) == 10.05);
  assert_true(kp_retry_deadline(KP_RETRY_YES, false, 10.0, 0.1, 10.02) == 10.02);
  assert_true(kp_retry_deadline(KP_RETRY_YES, false, 10.0, 0.1, 10.0) < 0);
  assert_true(kp_retry_deadline(KP_RETRY_NO, false, 10.0, 0.1, 40.0) < 0);
}

static void fail_if_throttled_fails_only_throttling(void **state) {
  assert_true(kp_retry_deadline(KP_RETRY_THROTTLED, true, 1.0, 0.1, 40.0) < 0);
  assert_true(kp_retry_deadline(KP_RETRY_THROTTLED, false, 1.0, 0.1, 40.0) > 1.0);
  assert_true(kp_retry_deadline(KP_RETRY_YES, true, 1.0, 0.1, 40.0) > 1.0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(throttling_is_its_own_class),
      cmocka_unit_test(transient_errors_retry),
      cmocka_unit_test(permanent_errors_fail_at_once),
      cmocka_unit_test(deadline_is_half_the_buffer_time_capped_by_expiry),
      cmocka_unit_test(fail_if_throttled_fails_only_throttling),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
