#include "producer/retrier.h"

#include <string.h>

static bool has_prefix(const char *s, const char *p) {
  return strncmp(s, p, strlen(p)) == 0;
}

kp_retry_class kp_retry_classify(const char *code, long http_status) {
  if (!code)
    code = "";
  /* Throttling first: some arrive as 400s (ThrottlingException, LimitExceeded). */
  if (!strcmp(code, "ProvisionedThroughputExceededException") ||
      !strcmp(code, "ThrottlingException") || !strcmp(code, "Throttling") ||
      !strcmp(code, "LimitExceededException") || !strcmp(code, "KMSThrottlingException") ||
      !strcmp(code, "RequestLimitExceeded") || !strcmp(code, "SlowDown"))
    return KP_RETRY_THROTTLED;
  if (!strcmp(code, "InternalFailure") || !strcmp(code, "InternalFailureException") ||
      !strcmp(code, "ServiceUnavailable") || !strcmp(code, "ServiceUnavailableException") ||
      !strcmp(code, "ExpiredTokenException") || !strcmp(code, "ExpiredToken") ||
      !strcmp(code, "RequestExpired") || !strcmp(code, "ConnectionError") ||
      !strcmp(code, "Timeout") || !strcmp(code, "ResponseError"))
    return KP_RETRY_YES;
  if (!strcmp(code, "ValidationException") || !strcmp(code, "ResourceNotFoundException") ||
      !strcmp(code, "AccessDeniedException") || !strcmp(code, "AccessDenied") ||
      !strcmp(code, "InvalidArgumentException") || !strcmp(code, "InvalidArgument") ||
      !strcmp(code, "UnrecognizedClientException") || has_prefix(code, "KMSAccessDenied") ||
      !strcmp(code, "KMSDisabledException") || !strcmp(code, "KMSNotFoundException") ||
      !strcmp(code, "KMSInvalidStateException") || !strcmp(code, "KMSOptInRequired") ||
      !strcmp(code, "IncompleteSignature") || !strcmp(code, "InvalidSignatureException") ||
      !strcmp(code, "MissingAuthenticationToken"))
    return KP_RETRY_NO;
  if (http_status >= 500)
    return KP_RETRY_YES;
  if (http_status == 429)
    return KP_RETRY_THROTTLED;
  if (http_status >= 400)
    return KP_RETRY_NO;
  /* Unknown per-record codes: retrying is the safe default until the TTL. */
  return KP_RETRY_YES;
}

double kp_retry_deadline(kp_retry_class cls, bool fail_if_throttled, double now,
                         double max_buffered_s, double expiry) {
  if (cls == KP_RETRY_NO || (cls == KP_RETRY_THROTTLED && fail_if_throttled))
    return -1;
  if (now >= expiry)
    return -1;
  double d = now + max_buffered_s / 2;
  return d < expiry ? d : expiry;
}
