/* Retrier: decides what happens to a user record after a failed attempt.
 *
 * Pure logic (time is a parameter). The pipeline asks it for every per-record error
 * and request-level error; it answers "retry at <deadline>" or "fail now". */
#ifndef KP_PRODUCER_RETRIER_H
#define KP_PRODUCER_RETRIER_H

#include <stdbool.h>

typedef enum kp_retry_class {
  KP_RETRY_YES = 0,   /* transient: throttling, 5xx, InternalFailure, transport */
  KP_RETRY_THROTTLED, /* retryable, but FailIfThrottled fails it */
  KP_RETRY_NO,        /* permanent: validation, unknown stream, access denied */
} kp_retry_class;

/* Classifies an error code as Kinesis returns it (per record or in a request-level
 * error body's __type), or one of ours ("ConnectionError", "Timeout", "HttpStatus500").
 * http_status is 0 for per-record errors and transport errors. */
kp_retry_class kp_retry_classify(const char *error_code, long http_status);

/* Deadline for the next attempt of a record that failed at `now`, or a negative value
 * if it must fail instead (expired, or not retryable). The KPL rule:
 * min(now + max_buffered/2, expiry). */
double kp_retry_deadline(kp_retry_class cls, bool fail_if_throttled, double now,
                         double max_buffered_s, double expiry);

#endif
