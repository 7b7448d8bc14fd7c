"""Errors: the C library's kp_err_t as ErrorCode, and the exception classes.

ErrorCode mirrors include/kinesis_producer.h; member names are kp_err2name() without
the leading underscore that marks local errors ("_QUEUE_FULL" -> QUEUE_FULL). The
integration test checks every member against the loaded library."""

import enum

from . import _lib


class ErrorCode(enum.IntEnum):
    NO_ERROR = 0
    # local (found by the client library)
    INVALID_ARG = -1
    QUEUE_FULL = -2
    TIMED_OUT = -3
    STATE = -4
    PURGED = -5
    DAEMON_DIED = -6
    EXPIRED = -7
    MSG_SIZE_TOO_LARGE = -8
    INVALID_PARTITION_KEY = -9
    INVALID_HASH_KEY = -10
    INVALID_STREAM = -11
    UNKNOWN_CONF = -12
    INVALID_CONF = -13
    NO_CREDENTIALS = -14
    SPAWN = -15
    NOMEM = -16
    TRANSPORT = -17
    IO = -18
    # reported for a record by the daemon or Kinesis
    THROTTLED = 1
    INTERNAL_FAILURE = 2
    KMS = 3
    RESOURCE_NOT_FOUND = 4
    ACCESS_DENIED = 5
    INVALID_REQUEST = 6
    CONNECTION = 7
    REMOTE = 8

    @property
    def is_local(self):
        """True for errors found by the client library (negative codes)."""
        return self < 0


def to_code(err):
    """An ErrorCode for a known value, else the plain int (the enum is append-only)."""
    try:
        return ErrorCode(err)
    except ValueError:
        return int(err)


def err2str(err):
    """The library's English text for an error code (kp_err2str)."""
    return _lib.client().kp_err2str(int(err)).decode()


def err2name(err):
    """The library's symbolic name for an error code (kp_err2name), e.g. "_QUEUE_FULL"."""
    return _lib.client().kp_err2name(int(err)).decode()


class KinesisProducerError(Exception):
    """Base of every error of this package.

    code     ErrorCode (or int for a code newer than this package; None if the library
             gave no code, e.g. kp_producer_new failing)
    name     kp_err2name(code), e.g. "_INVALID_CONF" ("" without a code)
    message  the library's message (kp_err2str, or its error string naming the setting)
    """

    def __init__(self, message, code=None):
        self.code = to_code(code) if code is not None else None
        self.name = err2name(code) if code is not None else ""
        self.message = message
        super().__init__(message)

    def __str__(self):
        return "%s (%s)" % (self.message, self.name) if self.name else self.message


class ConfigError(KinesisProducerError, ValueError):
    """A configuration key or value was refused, or the producer could not start
    (cross-setting checks, credentials, daemon executable)."""


class InvalidRecord(KinesisProducerError, ValueError):
    """put() refused the record itself: stream, partition key, explicit hash key, size."""


class QueueFull(KinesisProducerError):
    """No room within MaxOutstandingRecords / MaxOutstandingBytes: at once for a
    non-blocking put (code QUEUE_FULL), or when a blocking put's wait ended (TIMED_OUT)."""


class ProducerClosed(KinesisProducerError):
    """The producer is closed (or closing): code STATE."""


class Timeout(KinesisProducerError):
    """A bounded wait (metrics) ended first: code TIMED_OUT."""


class PutFailed(KinesisProducerError):
    """The exception of a put's future when the record was not put.

    code        ErrorCode, e.g. THROTTLED, RESOURCE_NOT_FOUND, PURGED, EXPIRED
    error_code  the daemon's/Kinesis's code of the last attempt (or a local name)
    message     human-readable reason
    attempts    list of Attempt (empty for local failures such as PURGED)
    stream, partition_key  of the record
    """

    def __init__(self, code, message, attempts=(), error_code="", stream="",
                 partition_key=""):
        super().__init__(message or err2str(code), code)
        self.attempts = list(attempts)
        self.error_code = error_code
        self.stream = stream
        self.partition_key = partition_key

    def __reduce__(self):
        return (PutFailed, (int(self.code), self.message, self.attempts, self.error_code,
                            self.stream, self.partition_key))


_BY_CODE = {
    ErrorCode.INVALID_ARG: InvalidRecord,
    ErrorCode.INVALID_STREAM: InvalidRecord,
    ErrorCode.INVALID_PARTITION_KEY: InvalidRecord,
    ErrorCode.INVALID_HASH_KEY: InvalidRecord,
    ErrorCode.MSG_SIZE_TOO_LARGE: InvalidRecord,
    ErrorCode.QUEUE_FULL: QueueFull,
    ErrorCode.STATE: ProducerClosed,
    ErrorCode.TIMED_OUT: Timeout,
    ErrorCode.UNKNOWN_CONF: ConfigError,
    ErrorCode.INVALID_CONF: ConfigError,
    ErrorCode.NO_CREDENTIALS: ConfigError,
    ErrorCode.SPAWN: ConfigError,
    ErrorCode.IO: ConfigError,
}


def error_for(code, message=None, cls=None):
    """The exception for a code returned by a C call (message defaults to kp_err2str)."""
    cls = cls or _BY_CODE.get(to_code(code), KinesisProducerError)
    return cls(message or err2str(code), code)
