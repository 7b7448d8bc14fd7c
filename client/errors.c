/* Error texts and names from one table, so the two can never disagree; and the version. */
#include <string.h>

#include "client/client_int.h"

#define KPC_ERRORS(X)                                                                              \
  X(KP_ERR_NO_ERROR, "NO_ERROR", "success")                                                        \
  X(KP_ERR__INVALID_ARG, "_INVALID_ARG", "invalid argument")                                       \
  X(KP_ERR__QUEUE_FULL, "_QUEUE_FULL", "outstanding record or byte limit reached")                 \
  X(KP_ERR__TIMED_OUT, "_TIMED_OUT", "timed out")                                                  \
  X(KP_ERR__STATE, "_STATE", "operation not allowed in the producer's state (closed?)")            \
  X(KP_ERR__PURGED, "_PURGED", "record purged before it got a result")                             \
  X(KP_ERR__DAEMON_DIED, "_DAEMON_DIED", "the daemon died before acknowledging the record")        \
  X(KP_ERR__EXPIRED, "_EXPIRED", "record not put within RecordTtl")                                \
  X(KP_ERR__MSG_SIZE_TOO_LARGE, "_MSG_SIZE_TOO_LARGE",                                             \
    "record data larger than MaxUserRecordSize")                                                   \
  X(KP_ERR__INVALID_PARTITION_KEY, "_INVALID_PARTITION_KEY",                                       \
    "partition key must be 1 to 256 characters of UTF-8")                                          \
  X(KP_ERR__INVALID_HASH_KEY, "_INVALID_HASH_KEY",                                                 \
    "explicit hash key must be a decimal integer in 0..2^128-1")                                   \
  X(KP_ERR__INVALID_STREAM, "_INVALID_STREAM", "stream name must be 1 to 128 printable bytes")     \
  X(KP_ERR__UNKNOWN_CONF, "_UNKNOWN_CONF", "unknown configuration key")                            \
  X(KP_ERR__INVALID_CONF, "_INVALID_CONF", "invalid configuration value")                          \
  X(KP_ERR__NO_CREDENTIALS, "_NO_CREDENTIALS", "no AWS credentials found")                         \
  X(KP_ERR__SPAWN, "_SPAWN", "the daemon could not be started")                                    \
  X(KP_ERR__NOMEM, "_NOMEM", "out of memory")                                                      \
  X(KP_ERR__TRANSPORT, "_TRANSPORT", "the pipe to the daemon failed")                              \
  X(KP_ERR__IO, "_IO", "file could not be read")                                                   \
  X(KP_ERR_THROTTLED, "THROTTLED", "throttled by Kinesis (ProvisionedThroughputExceeded)")         \
  X(KP_ERR_INTERNAL_FAILURE, "INTERNAL_FAILURE", "Kinesis internal failure")                       \
  X(KP_ERR_KMS, "KMS", "KMS error")                                                                \
  X(KP_ERR_RESOURCE_NOT_FOUND, "RESOURCE_NOT_FOUND", "stream not found")                           \
  X(KP_ERR_ACCESS_DENIED, "ACCESS_DENIED", "credentials refused")                                  \
  X(KP_ERR_INVALID_REQUEST, "INVALID_REQUEST", "record rejected as invalid")                       \
  X(KP_ERR_CONNECTION, "CONNECTION", "could not reach Kinesis")                                    \
  X(KP_ERR_REMOTE, "REMOTE", "error reported by Kinesis")

const char *kp_err2str(kp_err_t err) {
#define STR(e, n, s)                                                                               \
  case e:                                                                                          \
    return s;
  switch (err) { KPC_ERRORS(STR) }
#undef STR
  return "unknown error";
}

const char *kp_err2name(kp_err_t err) {
#define NAME(e, n, s)                                                                              \
  case e:                                                                                          \
    return n;
  switch (err) { KPC_ERRORS(NAME) }
#undef NAME
  return "UNKNOWN";
}

int kp_version(void) {
  return KP_VERSION;
}

const char *kp_version_str(void) {
  return KP_VERSION_STR;
}
