"""De-aggregation of KPL aggregated Kinesis records (include/kp_deagg.h, libkp_deagg.so).

The C library yields pointers into the input (borrowed); this wrapper copies every
field out into UserRecord tuples before the next call, so the results own their
bytes. One C handle per thread (kp_deagg handles are not thread-safe)."""

import ctypes as C
import enum
import threading
from typing import NamedTuple, Optional

from . import _lib

_MAX_HASH = 2**128 - 1


class DeaggError(enum.IntEnum):
    """kp_deagg_err."""
    OK = 0
    END = 1
    INVALID_ARG = -1
    NOMEM = -2
    BAD_MD5 = -10
    TRUNCATED = -11
    BAD_VARINT = -12
    BAD_WIRE_TYPE = -13
    BAD_TAG = -14
    MISSING_FIELD = -15
    INDEX_RANGE = -16
    BAD_EHK = -17

    @property
    def is_corrupt(self):
        return self <= -10


class DeaggregationError(ValueError):
    """A record could not be de-aggregated: code (DeaggError or int), corrupt (True for
    a corrupt aggregate in strict mode), message (the library's detail)."""

    def __init__(self, code, message):
        try:
            self.code = DeaggError(code)
        except ValueError:
            self.code = int(code)
        self.corrupt = int(code) <= -10
        self.message = message
        super().__init__("%s: %s" % (getattr(self.code, "name", self.code), message))


class UserRecord(NamedTuple):
    """One user record. explicit_hash_key is None when the user record has none;
    hash_key is the 128-bit key as an int (EHK, else MD5 of the partition key)."""
    partition_key: str
    explicit_hash_key: Optional[str]
    hash_key: Optional[int]
    data: bytes
    sequence_number: str
    sub_sequence_number: int
    aggregated: bool


def _b(v, what):
    if v is None:
        return None
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    raise TypeError("%s must be str or bytes, not %s" % (what, type(v).__name__))


def _key16(v, what):
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= _MAX_HASH:
        raise ValueError("%s must be an int in 0..2^128-1, got %r" % (what, v))
    return v.to_bytes(16, "big")


class Deaggregator:
    """A reusable de-aggregator (one per thread; keeps its scratch memory).

    strict:     a corrupt aggregate raises DeaggregationError; lenient (default, like the
                KCL) passes the whole Kinesis record through as one user record with
                aggregated=False, and `corruption` tells why.
    hash_range: (start, end) ints, inclusive; keep only user records whose hash key lies
                in it.
    hash_keys:  compute each record's hash_key (default True)."""

    def __init__(self, strict=False, hash_range=None, hash_keys=True):
        self._lib = _lib.deagg()
        self._d = self._lib.kp_deagg_new()
        if not self._d:
            raise MemoryError("kp_deagg_new")
        self._lib.kp_deagg_set_strict(self._d, bool(strict))
        self._lib.kp_deagg_set_hash_keys(self._d, bool(hash_keys))
        self.strict = bool(strict)
        self.set_hash_range(hash_range)
        self.corruption = None  # (DeaggError, message) of the last lenient pass-through

    def set_strict(self, strict):
        self._lib.kp_deagg_set_strict(self._d, bool(strict))
        self.strict = bool(strict)

    def set_hash_range(self, hash_range):
        if hash_range is None:
            rc = self._lib.kp_deagg_set_hash_range(self._d, None, None)
        else:
            start, end = hash_range
            rc = self._lib.kp_deagg_set_hash_range(self._d, _key16(start, "hash_range start"),
                                                   _key16(end, "hash_range end"))
        if rc:
            raise ValueError("hash_range %r: %s" % (
                hash_range, self._lib.kp_deagg_err2str(rc).decode()))
        self.hash_range = hash_range

    def deaggregate(self, data, partition_key, explicit_hash_key=None, sequence_number=""):
        """The user records of one Kinesis record, as a list of UserRecord."""
        data = _b(data, "data") or b""
        pk = _b(partition_key, "partition_key") or b""
        ehk = _b(explicit_hash_key, "explicit_hash_key")
        seq = _b(sequence_number, "sequence_number") or b""
        # The buffers are borrowed by the C handle: these locals keep them alive.
        inp = _lib.DeaggInput(data, len(data), pk, len(pk), ehk, len(ehk) if ehk else 0,
                              seq, len(seq))
        lib, d = self._lib, self._d
        rc = lib.kp_deagg_begin(d, C.byref(inp))
        if rc:
            raise DeaggregationError(rc, (lib.kp_deagg_errstr(d) or b"").decode("utf-8",
                                                                               "replace") or
                                     lib.kp_deagg_err2str(rc).decode())
        cor = lib.kp_deagg_corruption(d)
        self.corruption = None if cor == 0 else (
            DeaggError(cor) if cor in DeaggError._value2member_map_ else cor,
            (lib.kp_deagg_errstr(d) or b"").decode("utf-8", "replace"))
        out = []
        rec = _lib.DeaggRecord()
        sa = C.string_at
        seq_text = seq.decode("utf-8", "replace")
        for _ in range(lib.kp_deagg_count(d) + 1):
            if lib.kp_deagg_next(d, C.byref(rec)) != 0:
                break
            r_ehk = (sa(rec.explicit_hash_key, rec.explicit_hash_key_len).decode("ascii")
                     if rec.explicit_hash_key else None)
            hk = int.from_bytes(sa(rec.hash_key, 16), "big") if rec.hash_key else None
            out.append(UserRecord(
                sa(rec.partition_key, rec.partition_key_len).decode("utf-8", "surrogateescape")
                if rec.partition_key_len else "",
                r_ehk, hk,
                sa(rec.data, rec.data_len) if rec.data_len else b"",
                seq_text, int(rec.sub_sequence_number), bool(rec.aggregated)))
        return out

    def close(self):
        if self._d:
            self._lib.kp_deagg_destroy(self._d)
            self._d = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


_local = threading.local()


def deaggregate(data, partition_key, explicit_hash_key=None, sequence_number="", strict=False,
                hash_range=None):
    """The user records of one Kinesis record (as GetRecords returns it), copied out.

    data              the Kinesis record's data (bytes)
    partition_key     its partition key; explicit_hash_key its EHK if any
    sequence_number   copied into every UserRecord
    strict            raise DeaggregationError on a corrupt aggregate (else pass through)
    hash_range        (start, end) ints: keep only user records with hash keys inside
    Returns [UserRecord(partition_key, explicit_hash_key, hash_key, data,
    sequence_number, sub_sequence_number, aggregated)]."""
    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = Deaggregator()
    d.set_strict(strict)
    if hash_range != d.hash_range:
        d.set_hash_range(hash_range)
    return d.deaggregate(data, partition_key, explicit_hash_key, sequence_number)
