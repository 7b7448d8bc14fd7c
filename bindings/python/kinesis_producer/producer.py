"""Producer: a thread-safe, Future-returning wrapper of include/kinesis_producer.h.

Result delivery: the binding always runs the C library with ResultDelivery=background.
The library's one delivery thread calls a ctypes callback, which takes the GIL only to
look the record up, adjust two counters and resolve its Future (done-callbacks added
with Future.add_done_callback run there too, so keep them short). Every other C call
releases the GIL while it waits (ctypes.CDLL).

Record contexts: each accepted put has an integer id (the C opaque pointer) mapped to
its Future in a dict; the entry is removed by the result callback, exactly once, so
nothing the result needs is freed early and nothing is kept after it.

Backpressure: MaxOutstandingRecords / MaxOutstandingBytes are enforced here, under a
Condition the result callback signals, so that put(block=True, timeout=...) can wait
with a per-call deadline and close() releases waiting puts at once. The C library is
given twice the limits: it stops counting a record only once the whole batch of results
its delivery thread took has been served, while this layer stops at each record's
callback. A batch is taken at once from records all counted here at that moment, so it
holds at most the limits' worth, and C's count never exceeds twice the limits: C never
refuses what this layer admitted. (For the same reason stats() counters and
`outstanding` can lag a resolved Future until its batch is done; after flush_wait() or
close() they are exact.)"""

import atexit
import concurrent.futures
import ctypes as C
import itertools
import math
import os
import re
import sys
import threading
import time
import weakref
from typing import NamedTuple

from . import _lib
from .errors import (ConfigError, ErrorCode, InvalidRecord, KinesisProducerError, ProducerClosed,
                     PutFailed, QueueFull, err2str, error_for)

_ERRLEN = 1024
_INT_MAX = 2**31 - 1
_EHK_RE = re.compile(r"[0-9]{1,39}\Z")


class Attempt(NamedTuple):
    """One try to put a record, as the daemon reports it."""
    delay_ms: int
    duration_ms: int
    success: bool
    error_code: str
    error_message: str


class PutResult(NamedTuple):
    """What a successful put's Future resolves to."""
    shard_id: str
    sequence_number: str
    attempts: list


class Stats(NamedTuple):
    """kp_stats_t."""
    puts_accepted: int
    results_ok: int
    results_failed: int
    records_replayed: int
    daemon_starts: int
    daemon_deaths: int
    credentials_sent: int
    credentials_changes: int
    outstanding: int
    outstanding_bytes: int
    unsent_bytes: int
    puts_shared: int


class Metric(NamedTuple):
    """One metric of the daemon's MetricsResponse (KPL names, e.g. UserRecordsPut)."""
    name: str
    dimensions: dict
    count: float
    sum: float
    mean: float
    min: float
    max: float
    seconds: int


def _ms(timeout):
    """Seconds (float or None = forever) to the C API's int milliseconds (-1 = forever)."""
    if timeout is None:
        return -1
    if timeout <= 0:
        return 0
    return min(int(math.ceil(timeout * 1000.0)), _INT_MAX)


def _text(b):
    return b.decode("utf-8", "replace") if b is not None else ""


def _conf_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _norm_key(k):
    return k.replace("_", "").lower()


class _State:
    """Everything the result callback touches. Holds no reference to the Producer, so
    that dropping the last Producer reference closes it (see Producer.__del__)."""

    def __init__(self, max_records, max_bytes):
        self.cond = threading.Condition(threading.Lock())
        self.pending = {}  # id -> (Future, data bytes)
        self.ids = itertools.count(1)
        self.max_records = max_records
        self.max_bytes = max_bytes
        # ---- under cond ----
        self.records = 0  # admitted here and not yet resolved
        self.bytes = 0
        self.waiters = 0  # puts waiting for room
        self.in_calls = 0  # C calls in progress on the handle (destroy waits for 0)
        self.closing = False
        self.delivery_ident = None  # the library's delivery thread
        self.unmatched = 0  # results for no pending record (tests check it stays 0)

    def on_result(self, _p, rp, _ud):
        """kp_result_cb_t, on the library's delivery thread (GIL taken by ctypes)."""
        if self.delivery_ident is None:
            self.delivery_ident = threading.get_ident()
        r = rp.contents
        entry = self.pending.pop(r.opaque, None)
        if entry is None:  # a second result for a record: cannot happen; never raise into C
            self.unmatched += 1
            return
        fut, nbytes = entry
        try:
            attempts = [Attempt(a.delay_ms, a.duration_ms, bool(a.success), _text(a.error_code),
                                _text(a.error_message))
                        for a in r.attempts[:r.attempt_cnt]] if r.attempt_cnt else []
            if r.err == 0:
                value = PutResult(_text(r.shard_id), _text(r.sequence_number), attempts)
                exc = None
            else:
                exc = PutFailed(r.err, _text(r.error_message), attempts, _text(r.error_code),
                                _text(r.stream), _text(r.partition_key))
        except BaseException as e:  # keep exactly one resolution even if decoding fails
            value, exc = None, e
        with self.cond:
            self.records -= 1
            self.bytes -= nbytes
            if self.waiters:
                self.cond.notify_all()
        if exc is None:
            fut.set_result(value)
        else:
            fut.set_exception(exc)

    def on_delivery_thread(self):
        return self.delivery_ident == threading.get_ident()


_live = weakref.WeakSet()
_leaked = []  # (callback, state) of handles close() could not free


@atexit.register
def _close_all():
    """Producers still open at interpreter exit are closed (flushing, 30 s bound) while
    Python can still run their result callbacks."""
    for prod in list(_live):
        try:
            prod.close()
        except Exception:
            pass


class Producer:
    """A Kinesis producer: puts user records, each put's Future resolves exactly once.

    Producer(config=None, properties_file=None, **settings)

    Settings are the client library's configuration keys, by KPL name, lower_snake
    alias or client key (docs/configuration.md, docs/client.md), with values as text,
    numbers or booleans. Applied in order: properties_file, config, settings. The
    binding always uses ResultDelivery=background (setting "poll" is refused).
    The daemon: NativeExecutable, else $KP_DAEMON_PATH, else the kinesis_producer next
    to the library (<dir>/../bin), else the build default compiled into the library.

    Raises ConfigError (a KinesisProducerError) with the library's message naming the
    setting when a key or value is refused or the producer cannot start.
    """

    def __init__(self, config=None, properties_file=None, **settings):
        self._p = None
        self._closed = True
        self._close_lock = threading.Lock()
        self._final_stats = None
        lib = self._lib = _lib.client()
        err = C.create_string_buffer(_ERRLEN)
        conf = lib.kp_conf_new()
        if not conf:
            raise MemoryError("kp_conf_new")
        try:
            if properties_file is not None:
                rc = lib.kp_conf_load_properties(conf, os.fsencode(properties_file), err,
                                                 _ERRLEN)
                if rc:
                    raise error_for(rc, _text(err.value), ConfigError)
            merged = dict(config or {})
            merged.update(settings)
            for k, v in merged.items():
                if _norm_key(str(k)) == "resultdelivery" and _conf_value(v) != "background":
                    raise ConfigError("ResultDelivery: the Python binding serves results on "
                                      "the library's thread; only \"background\" is "
                                      "supported (got %r)" % (v,), ErrorCode.INVALID_CONF)
                self._set(conf, str(k), _conf_value(v), err)
            self._default_daemon(conf, err)
            self._set(conf, "ResultDelivery", "background", err)
            max_records = int(self._get(conf, "MaxOutstandingRecords"))
            max_bytes = int(self._get(conf, "MaxOutstandingBytes"))
            self._max_record = int(self._get(conf, "MaxUserRecordSize"))
            block_ms = int(self._get(conf, "PutBlockTimeout"))
            if self._max_record > max_bytes:
                raise ConfigError("MaxUserRecordSize (%d) is above MaxOutstandingBytes (%d): "
                                  "such a record could never be accepted" %
                                  (self._max_record, max_bytes), ErrorCode.INVALID_CONF)
            self._put_block_timeout = block_ms / 1000.0
            # C counts a record until its batch of results has been served: at most twice
            # what is counted here (see the module docstring).
            u63 = 2**63 - 1
            self._set(conf, "MaxOutstandingRecords", str(min(2 * max_records + 1, u63)), err)
            self._set(conf, "MaxOutstandingBytes",
                      str(min(2 * max_bytes + self._max_record, u63)), err)
            self._state = _State(max_records, max_bytes)
            self._cb = _lib.RESULT_CB(self._state.on_result)  # alive until destroy
            lib.kp_conf_set_result_cb(conf, self._cb)
            p = lib.kp_producer_new(conf, err, _ERRLEN)
            if not p:
                raise ConfigError(_text(err.value) or "kp_producer_new failed")
        except BaseException:
            lib.kp_conf_destroy(conf)
            raise
        self._p = p  # owns conf from here on
        self._closed = False
        _live.add(self)

    # ---- configuration helpers ----

    def _set(self, conf, key, value, err):
        for s in (key, value):
            if "\0" in s:
                raise ConfigError("%s: NUL character in configuration" % key,
                                  ErrorCode.INVALID_CONF)
        rc = self._lib.kp_conf_set(conf, key.encode(), value.encode(), err, _ERRLEN)
        if rc:
            raise error_for(rc, _text(err.value) or "%s: %s" % (key, err2str(rc)), ConfigError)

    def _get(self, conf, key):
        out = C.create_string_buffer(4096)
        rc = self._lib.kp_conf_get(conf, key.encode(), out, len(out))
        if rc:
            raise error_for(rc, "%s: %s" % (key, err2str(rc)), ConfigError)
        return out.value.decode()

    def _default_daemon(self, conf, err):
        if self._get(conf, "NativeExecutable") or os.environ.get("KP_DAEMON_PATH"):
            return
        path = getattr(self._lib, "_kp_path", "")
        if os.path.isabs(path):
            cand = os.path.join(os.path.dirname(os.path.dirname(path)), "bin",
                                "kinesis_producer")
            if os.access(cand, os.X_OK):
                self._set(conf, "NativeExecutable", cand, err)

    # ---- call gate: the handle stays valid while any C call runs ----

    def _enter(self):
        st = self._state
        with st.cond:
            if st.closing:
                raise ProducerClosed("producer is closed", ErrorCode.STATE)
            st.in_calls += 1

    def _exit(self):
        st = self._state
        with st.cond:
            st.in_calls -= 1
            if st.closing and st.in_calls == 0:
                st.cond.notify_all()

    def _check_open(self):
        if self._closed or self._p is None:
            raise ProducerClosed("producer is closed", ErrorCode.STATE)

    # ---- records ----

    def _encode_record(self, stream, partition_key, data, explicit_hash_key):
        def bad(code, detail):
            return InvalidRecord("%s: %s" % (err2str(code), detail), code)

        if isinstance(stream, str):
            stream = stream.encode("utf-8")
        if not isinstance(stream, bytes):
            raise TypeError("stream must be str or bytes, not %s" % type(stream).__name__)
        if not 1 <= len(stream) <= 128 or any(c < 0x20 or c == 0x7f for c in stream):
            raise bad(ErrorCode.INVALID_STREAM, "got %r" % (stream,))

        if isinstance(partition_key, bytes):
            try:
                pk_chars = len(partition_key.decode("utf-8"))
            except UnicodeDecodeError:
                raise bad(ErrorCode.INVALID_PARTITION_KEY, "not valid UTF-8") from None
            pk = partition_key
        elif isinstance(partition_key, str):
            pk_chars = len(partition_key)
            try:
                pk = partition_key.encode("utf-8")
            except UnicodeEncodeError:
                raise bad(ErrorCode.INVALID_PARTITION_KEY, "not encodable as UTF-8") from None
        else:
            raise TypeError("partition_key must be str or bytes, not %s" %
                            type(partition_key).__name__)
        if pk_chars == 0:
            raise bad(ErrorCode.INVALID_PARTITION_KEY, "got an empty partition key")
        if pk_chars > 256:
            raise bad(ErrorCode.INVALID_PARTITION_KEY, "got %d characters" % pk_chars)
        if b"\0" in pk:
            raise bad(ErrorCode.INVALID_PARTITION_KEY, "NUL character in the partition key")

        ehk = None
        if explicit_hash_key is not None:
            if isinstance(explicit_hash_key, int) and not isinstance(explicit_hash_key, bool):
                text = str(explicit_hash_key)
            elif isinstance(explicit_hash_key, str):
                text = explicit_hash_key
            else:
                raise TypeError("explicit_hash_key must be str or int, not %s" %
                                type(explicit_hash_key).__name__)
            if not _EHK_RE.match(text) or int(text) >= 2**128:
                raise bad(ErrorCode.INVALID_HASH_KEY, "got %r" % (explicit_hash_key,))
            ehk = text.encode("ascii")

        if isinstance(data, str):
            data = data.encode("utf-8")
        elif isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        elif not isinstance(data, bytes):
            raise TypeError("data must be bytes, bytearray, memoryview or str, not %s" %
                            type(data).__name__)
        if len(data) > self._max_record:
            raise bad(ErrorCode.MSG_SIZE_TOO_LARGE, "%d bytes, MaxUserRecordSize is %d" %
                      (len(data), self._max_record))
        return stream, pk, ehk, data

    def put(self, stream, partition_key, data, explicit_hash_key=None, block=True,
            timeout=None):
        """Queues one user record; returns a concurrent.futures.Future.

        The Future resolves, exactly once, to a PutResult(shard_id, sequence_number,
        attempts) or raises PutFailed(code, message, attempts). It cannot be cancelled.

        stream            1..128 printable bytes (str or bytes)
        partition_key     1..256 Unicode characters (str, or UTF-8 bytes)
        data              bytes-like or str (UTF-8), at most MaxUserRecordSize bytes
        explicit_hash_key decimal str or int in 0..2^128-1, or None (hash of the key)
        block, timeout    when MaxOutstandingRecords/Bytes are reached: block=False
                          raises QueueFull at once; block=True waits up to timeout
                          seconds (None: PutBlockTimeout), then raises QueueFull (code
                          TIMED_OUT). A put from a result/done callback never waits.

        Raises at once (no Future): InvalidRecord (a ValueError) for bad input, QueueFull,
        ProducerClosed, TypeError for wrong argument types.
        """
        self._check_open()
        stream, pk, ehk, data = self._encode_record(stream, partition_key, data,
                                                    explicit_hash_key)
        n = len(data)
        st = self._state
        deadline = None
        with st.cond:
            while True:
                if st.closing:
                    raise ProducerClosed("producer is closed", ErrorCode.STATE)
                if st.records < st.max_records and st.bytes + n <= st.max_bytes:
                    break
                wait = self._put_block_timeout if timeout is None else timeout
                if not block or wait <= 0 or st.on_delivery_thread():
                    raise QueueFull("%s (%d records, %d bytes outstanding)" %
                                    (err2str(ErrorCode.QUEUE_FULL), st.records, st.bytes),
                                    ErrorCode.QUEUE_FULL)
                if deadline is None:
                    deadline = time.monotonic() + wait
                left = deadline - time.monotonic()
                if left <= 0:
                    raise QueueFull("no room for the record within %.3f s (%d records, %d "
                                    "bytes outstanding)" % (wait, st.records, st.bytes),
                                    ErrorCode.TIMED_OUT)
                st.waiters += 1
                try:
                    st.cond.wait(left)
                finally:
                    st.waiters -= 1
            st.records += 1
            st.bytes += n
            st.in_calls += 1
            rid = next(st.ids)
            fut = concurrent.futures.Future()
            fut.set_running_or_notify_cancel()  # RUNNING: cancel() cannot orphan it
            st.pending[rid] = (fut, n)
        rc = -1
        try:
            rc = self._lib.kp_producer_put(self._p, stream, pk, ehk, data, n, 0, rid)
        finally:
            with st.cond:
                st.in_calls -= 1
                if rc != 0:  # no result will ever come for it
                    st.pending.pop(rid, None)
                    st.records -= 1
                    st.bytes -= n
                    st.cond.notify_all()
                elif st.closing and st.in_calls == 0:
                    st.cond.notify_all()
        if rc != 0:
            raise self._put_error(rc, stream, pk, ehk, n)
        return fut

    def _put_error(self, rc, stream, pk, ehk, n):
        details = {
            ErrorCode.INVALID_STREAM: "stream %r" % (stream,),
            ErrorCode.INVALID_PARTITION_KEY: "partition key %r" % (pk[:80],),
            ErrorCode.INVALID_HASH_KEY: "explicit hash key %r" % (ehk,),
            ErrorCode.MSG_SIZE_TOO_LARGE: "%d bytes, MaxUserRecordSize is %d" %
                                          (n, self._max_record),
        }
        d = details.get(rc)
        return error_for(rc, "%s: %s" % (err2str(rc), d) if d else None)

    # ---- flushing, waiting, closing ----

    def flush(self, stream=None):
        """Asks the daemon to send buffered records now (all streams, or one); no wait."""
        self._check_open()
        s = None
        if stream is not None:
            s = stream.encode("utf-8") if isinstance(stream, str) else bytes(stream)
            if b"\0" in s:
                raise InvalidRecord("%s: got %r" % (err2str(ErrorCode.INVALID_STREAM), s),
                                    ErrorCode.INVALID_STREAM)
        self._enter()
        try:
            rc = self._lib.kp_producer_flush(self._p, s)
        finally:
            self._exit()
        if rc:
            raise error_for(rc, "%s: stream %r" % (err2str(rc), s) if s else None)

    def flush_wait(self, timeout=None):
        """Flushes every stream and waits until no record is outstanding (every Future
        resolved). timeout in seconds, None = no bound. Returns True if nothing is
        outstanding, False if the wait timed out. Must not be called from a callback."""
        if self._closed:
            return True
        if self._state.on_delivery_thread():
            raise RuntimeError("flush_wait() from a result callback would wait for itself")
        try:
            self._enter()
        except ProducerClosed:
            return True  # closed meanwhile: close() resolved everything
        try:
            # Waits in slices of at most a second so that the main thread still handles
            # signals (KeyboardInterrupt) in a long wait; each slice returns as soon as
            # nothing is outstanding (and re-sends the flush, which is harmless).
            deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
            while True:
                left = 1.0 if deadline is None else min(deadline - time.monotonic(), 1.0)
                rc = self._lib.kp_producer_flush_wait(self._p, _ms(max(left, 0.0)))
                if rc == 0:
                    return True
                if rc != ErrorCode.TIMED_OUT:
                    raise error_for(rc, "flush_wait: %s" % err2str(rc))
                if deadline is not None and time.monotonic() >= deadline:
                    return False
        finally:
            self._exit()

    @property
    def outstanding(self):
        """Records put whose result callback has not completed yet (the library's count,
        which may lag resolved Futures until their batch is served; 0 once closed)."""
        if self._closed:
            return 0
        try:
            self._enter()
        except ProducerClosed:
            return 0
        try:
            return int(self._lib.kp_producer_outstanding(self._p))
        finally:
            self._exit()

    @property
    def closed(self):
        return self._closed

    @property
    def daemon_pid(self):
        """Diagnostic: the current daemon's pid (0 while restarting or once closed)."""
        if self._closed:
            return 0
        try:
            self._enter()
        except ProducerClosed:
            return 0
        try:
            return int(self._lib.kp_producer_daemon_pid(self._p))
        finally:
            self._exit()

    def stats(self):
        """Stats (kp_stats_t) now; after close, the counters as close left them.
        results_ok/failed count a record once its batch of results has been served, so
        they can lag its Future briefly; after flush_wait() they are exact."""
        if self._closed and self._final_stats is not None:
            return self._final_stats
        self._check_open()
        self._enter()
        try:
            return self._stats_now()
        finally:
            self._exit()

    def _stats_now(self):
        s = _lib.Stats()
        rc = self._lib.kp_producer_stats(self._p, C.byref(s))
        if rc:
            raise error_for(rc)
        return Stats(*(getattr(s, f) for f, _ in _lib.Stats._fields_))

    def metrics(self, name=None, seconds=None, timeout=10.0):
        """The daemon's metrics (KPL MetricsRequest): one name or all, over the last
        `seconds` or the daemon's default window. Raises Timeout if the daemon does not
        answer within timeout seconds, ProducerClosed once closed."""
        self._check_open()
        if self._state.on_delivery_thread():
            raise RuntimeError("metrics() from a result callback would hold up results")
        nm = name.encode("utf-8") if name is not None else None
        arr = C.POINTER(_lib.Metric)()
        cnt = C.c_size_t()
        self._enter()
        try:
            rc = self._lib.kp_producer_metrics(self._p, nm, int(seconds or 0), _ms(timeout),
                                               C.byref(arr), C.byref(cnt))
        finally:
            self._exit()
        if rc:
            raise error_for(rc, "metrics: %s" % err2str(rc))
        try:
            out = []
            for i in range(cnt.value):
                m = arr[i]
                dims = {_text(m.dimension_keys[k]): _text(m.dimension_values[k])
                        for k in range(m.dimension_cnt)}
                out.append(Metric(_text(m.name), dims, m.count, m.sum, m.mean, m.min, m.max,
                                  int(m.seconds)))
            return out
        finally:
            self._lib.kp_metrics_destroy(arr, cnt.value)

    def close(self, purge=False, timeout=30.0):
        """Shuts the producer down; every outstanding Future is resolved before it returns.

        purge=False: flush and wait up to timeout seconds (None: no bound) for the
        results, then purge what is left; purge=True: purge at once. Purged records'
        Futures raise PutFailed with code PURGED. Then the daemon is stopped and the
        handle freed. Returns True if nothing had to be purged after a flush (always
        True with purge=True), False if the flush timed out. Later calls return True.
        Must not be called from a result callback (use a separate thread)."""
        if self._p is not None and self._state.on_delivery_thread():
            raise RuntimeError("close() from a result callback would wait for itself")
        with self._close_lock:
            if self._closed:
                return True
            st = self._state
            with st.cond:
                st.closing = True  # new calls raise ProducerClosed; waiting puts wake up
                st.cond.notify_all()
            rc = self._lib.kp_producer_close(self._p, _lib.CLOSE_F_PURGE if purge else 0,
                                             _ms(timeout))
            with st.cond:
                # Calls already inside C return promptly once it is closed; bounded anyway.
                deadline = time.monotonic() + 60.0
                while st.in_calls > 0:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    st.cond.wait(left)
                drained = st.in_calls == 0
            try:
                self._final_stats = self._stats_now()
            except KinesisProducerError:
                self._final_stats = None
            if drained:
                self._lib.kp_producer_destroy(self._p)  # serves any straggling result
            else:
                # A call is stuck inside the library: leak the handle rather than free it
                # under that call, and keep what its callbacks could still touch.
                _leaked.append((self._cb, self._state))
            self._p = None
            self._closed = True
            _live.discard(self)
            return rc == 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_closed", True):
            return
        if sys.is_finalizing():
            # Too late: the delivery thread can no longer take the GIL, so a close would
            # wait forever. (The atexit hook closes open producers before this point; the
            # daemon sees EOF and exits when the process does.)
            return
        try:
            if self._state.on_delivery_thread():
                threading.Thread(target=self.close, daemon=True).start()
            else:
                self.close()
        except Exception:
            pass

    def __repr__(self):
        return "<kinesis_producer.Producer %s>" % ("closed" if self._closed else "open")
