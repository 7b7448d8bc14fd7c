#!/usr/bin/python3
"""The client library (include/kinesis_producer.h) end to end against kinesalite,
driven through ctypes so that each scenario reads like the C API:

  produce_and_read_back  every put gets exactly one result; the stream holds every record
  queue_full_and_purge   QUEUE_FULL, a blocking put timing out, close(PURGE), put after close
  close_flushes          close without purge delivers real results
  sigkill_replay         SIGKILL of the daemon mid-stream loses nothing (at-least-once)
  death_fail_policy      DaemonDeathPolicy=fail fails the unacknowledged records
  credentials_refresh    a changed credentials file is re-sent (SetCredentials count)
  background_delivery    ResultDelivery=background calls back on a library thread
  metrics                MetricsRequest/MetricsResponse round trip
  misuse                 NULL arguments, bad keys, bad configuration: clear errors

Usage: test_client_lib.py [scenario ...] (default: all)."""

import ctypes as C
import os
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kptest  # noqa: E402
from kptest import log  # noqa: E402

LIB = os.path.join(os.path.dirname(kptest.BIN), "lib", "libkinesis_producer_client.so")

# Mirrors of the public header's enums and structs.
OK, INVALID_ARG, QUEUE_FULL, TIMED_OUT, STATE, PURGED, DAEMON_DIED = 0, -1, -2, -3, -4, -5, -6
MSG_SIZE, BAD_PK, BAD_EHK, BAD_STREAM, UNKNOWN_CONF, INVALID_CONF = -8, -9, -10, -11, -12, -13
PUT_F_BLOCK, CLOSE_F_PURGE = 1, 1


# The public structs come from the Python binding's mirror, the one place that follows
# the header field for field: a second copy here fell behind kp_stats_t once, and the
# library then wrote past the end of this test's struct (a crash in CI).
sys.path.insert(0, os.path.join(kptest.SRC, "bindings", "python"))
from kinesis_producer._lib import RESULT_CB, Result, Stats  # noqa: E402,F401
LOG_CB = C.CFUNCTYPE(None, C.c_int, C.c_char_p, C.c_void_p)

lib = C.CDLL(LIB)
lib.kp_conf_new.restype = C.c_void_p
lib.kp_conf_set.argtypes = [C.c_void_p, C.c_char_p, C.c_char_p, C.c_char_p, C.c_size_t]
lib.kp_conf_destroy.argtypes = [C.c_void_p]
lib.kp_conf_set_result_cb.argtypes = [C.c_void_p, RESULT_CB]
lib.kp_conf_set_log_cb.argtypes = [C.c_void_p, LOG_CB]
lib.kp_producer_new.restype = C.c_void_p
lib.kp_producer_new.argtypes = [C.c_void_p, C.c_char_p, C.c_size_t]
lib.kp_producer_put.argtypes = [C.c_void_p, C.c_char_p, C.c_char_p, C.c_char_p, C.c_char_p,
                                C.c_size_t, C.c_int, C.c_void_p]
lib.kp_producer_poll.argtypes = [C.c_void_p, C.c_int]
lib.kp_producer_flush.argtypes = [C.c_void_p, C.c_char_p]
lib.kp_producer_flush_wait.argtypes = [C.c_void_p, C.c_int]
lib.kp_producer_outstanding.argtypes = [C.c_void_p]
lib.kp_producer_outstanding.restype = C.c_size_t
lib.kp_producer_close.argtypes = [C.c_void_p, C.c_int, C.c_int]
lib.kp_producer_destroy.argtypes = [C.c_void_p]
lib.kp_producer_stats.argtypes = [C.c_void_p, C.POINTER(Stats)]
lib.kp_producer_daemon_pid.argtypes = [C.c_void_p]
lib.kp_producer_daemon_pid.restype = C.c_int
lib.kp_producer_metrics.argtypes = [C.c_void_p, C.c_char_p, C.c_uint64, C.c_int,
                                    C.POINTER(C.c_void_p), C.POINTER(C.c_size_t)]
lib.kp_metrics_destroy.argtypes = [C.c_void_p, C.c_size_t]
lib.kp_err2name.restype = C.c_char_p
lib.kp_err2name.argtypes = [C.c_int]


def name(err):
    return lib.kp_err2name(err).decode()


class Producer:
    """One producer; results land in self.results[opaque] (a list, to see duplicates)."""

    def __init__(self, settings, background=False, expect_error=None):
        self.results = {}
        self.lock = threading.Condition()
        self.logs = []
        self.threads = set()
        self._rcb = RESULT_CB(self._on_result)  # kept alive as long as the producer
        self._lcb = LOG_CB(self._on_log)
        conf = lib.kp_conf_new()
        err = C.create_string_buffer(512)
        for k, v in settings.items():
            rc = lib.kp_conf_set(conf, k.encode(), str(v).encode(), err, 512)
            assert rc == OK, "%s=%s: %s %s" % (k, v, name(rc), err.value.decode())
        if background:
            assert lib.kp_conf_set(conf, b"ResultDelivery", b"background", err, 512) == OK
        lib.kp_conf_set_result_cb(conf, self._rcb)
        lib.kp_conf_set_log_cb(conf, self._lcb)
        self.p = lib.kp_producer_new(conf, err, 512)
        self.error = err.value.decode()
        if not self.p:
            lib.kp_conf_destroy(conf)
            assert expect_error is not None, "kp_producer_new: " + self.error
            assert expect_error in self.error, "expected %r in %r" % (expect_error, self.error)
        else:
            assert expect_error is None, "producer created despite " + expect_error

    def _on_result(self, p, r, ud):
        r = r.contents
        item = (r.err, (r.error_code or b"").decode(), (r.error_message or b"").decode(),
                (r.shard_id or b"").decode(), (r.sequence_number or b"").decode(), r.len)
        with self.lock:
            self.results.setdefault(r.opaque, []).append(item)
            self.threads.add(threading.get_ident())
            self.lock.notify_all()

    def _on_log(self, level, msg, ud):
        with self.lock:
            self.logs.append((level, msg.decode()))
            self.lock.notify_all()

    def put(self, stream, pk, data, opaque, ehk=None, flags=0):
        return lib.kp_producer_put(self.p, stream.encode() if stream is not None else None,
                                   pk.encode() if pk is not None else None,
                                   ehk.encode() if ehk is not None else None, data,
                                   len(data) if data is not None else 0, flags, opaque)

    def stats(self):
        s = Stats()
        assert lib.kp_producer_stats(self.p, C.byref(s)) == OK
        return s

    def wait_log(self, text, timeout):
        """Waits (event-driven, bounded) for a log line containing text."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not any(text in m for _, m in self.logs):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(left)
        return True

    def destroy(self):
        lib.kp_producer_destroy(self.p)
        self.p = None


def base(emu, **kw):
    s = {"KinesisEndpoint": emu.url, "Region": "us-east-1", "MetricsLevel": "none",
         "AwsAccessKeyId": "AKIDTEST", "AwsSecretAccessKey": "secret", "LogLevel": "warning",
         "RecordMaxBufferedTime": 50}
    s.update(kw)
    return s


def check_exactly_one(prod, n):
    missing = [i for i in range(1, n + 1) if i not in prod.results]
    dups = [i for i, v in prod.results.items() if len(v) != 1]
    assert not missing, "%d records without a result, first %s" % (len(missing), missing[:5])
    assert not dups, "records with %d results: %s" % (len(prod.results[dups[0]]), dups[:5])
    extra = [i for i in prod.results if not 1 <= i <= n]
    assert not extra, "results for unknown opaques %s" % extra[:5]


def read_back_ids(client, stream):
    """Record ids (the decimal data of each user record) found in the stream."""
    rows = kptest.read_stream(client, stream)
    ids = []
    for u in kptest.deaggregate([r for _, r in rows]):
        ids.append(int(kptest.base64.b64decode(u["data"]).decode()))
    return ids


def produce_and_read_back(emu, client):
    kptest.create_stream(client, "cl-read", 3)
    prod = Producer(base(emu))
    n = 3000
    for i in range(1, n + 1):
        ehk = str(i * (2**128 // (n + 1))) if i % 10 == 0 else None
        assert prod.put("cl-read", "pk-%d" % (i % 97), b"%d" % i, i, ehk=ehk) == OK
        if i % 500 == 0:
            lib.kp_producer_poll(prod.p, 0)
    assert lib.kp_producer_flush_wait(prod.p, 60000) == OK
    assert lib.kp_producer_outstanding(prod.p) == 0
    check_exactly_one(prod, n)
    bad = [(i, r[0]) for i, r in prod.results.items() if r[0][0] != OK or not r[0][3] or not r[0][4]]
    assert not bad, "failed or without shard/sequence: %s" % bad[:3]
    st = prod.stats()
    assert st.puts_accepted == n and st.results_ok == n, (st.puts_accepted, st.results_ok)
    assert lib.kp_producer_close(prod.p, 0, 10000) == OK
    assert prod.put("cl-read", "k", b"x", n + 1) == STATE, "put after close"
    prod.destroy()
    ids = read_back_ids(client, "cl-read")
    assert sorted(set(ids)) == list(range(1, n + 1)), "stream does not hold exactly 1..%d" % n


def queue_full_and_purge(emu, client):
    kptest.create_stream(client, "cl-full", 1)
    # Records linger in the daemon for a minute, so none completes during the test.
    prod = Producer(base(emu, MaxOutstandingRecords=10, RecordMaxBufferedTime=60000,
                         RecordTtl=120000, PutBlockTimeout=100))
    for i in range(1, 11):
        assert prod.put("cl-full", "k", b"%d" % i, i) == OK
    assert prod.put("cl-full", "k", b"11", 11) == QUEUE_FULL
    assert prod.put("cl-full", "k", b"11", 11, flags=PUT_F_BLOCK) == TIMED_OUT
    assert lib.kp_producer_outstanding(prod.p) == 10
    # A put blocked (without a timeout of its own) is released by close.
    lib.kp_producer_poll(prod.p, 0)
    assert lib.kp_producer_close(prod.p, CLOSE_F_PURGE, 0) == OK
    check_exactly_one(prod, 10)
    codes = {r[0][0] for r in prod.results.values()}
    assert codes == {PURGED}, "expected only _PURGED, got %s" % [name(c) for c in codes]
    assert prod.put("cl-full", "k", b"x", 99) == STATE
    assert lib.kp_producer_close(prod.p, 0, 0) == STATE, "second close"
    prod.destroy()


def close_flushes(emu, client):
    kptest.create_stream(client, "cl-close", 1)
    prod = Producer(base(emu, RecordMaxBufferedTime=60000, RecordTtl=120000))
    for i in range(1, 201):
        assert prod.put("cl-close", "k%d" % i, b"%d" % i, i) == OK
    # close flushes (the records would otherwise linger a minute) and serves the results
    assert lib.kp_producer_close(prod.p, 0, 60000) == OK
    check_exactly_one(prod, 200)
    assert all(r[0][0] == OK for r in prod.results.values())
    prod.destroy()


def sigkill_replay(emu, client):
    kptest.create_stream(client, "cl-kill", 2)
    # Records linger 1 s in the daemon so that a kill always finds some unacknowledged.
    prod = Producer(base(emu, RecordMaxBufferedTime=1000, DaemonRestartBackoffMin=50))
    n, acked_at, killed_at, old_pid = 20000, 6000, 12000, None
    for i in range(1, n + 1):
        assert prod.put("cl-kill", "k%d" % (i % 1000), b"%d" % i, i, flags=PUT_F_BLOCK) == OK
        if i == acked_at:  # the first records are acknowledged, the next ones are not
            assert lib.kp_producer_flush_wait(prod.p, 60000) == OK
        if i == killed_at:
            old_pid = lib.kp_producer_daemon_pid(prod.p)
            assert old_pid > 0
            os.kill(old_pid, signal.SIGKILL)
            log("sigkill_replay: killed daemon %d after %d puts, %d outstanding" % (
                old_pid, i, lib.kp_producer_outstanding(prod.p)))
        if i % 1000 == 0:
            lib.kp_producer_poll(prod.p, 0)
    assert lib.kp_producer_flush_wait(prod.p, 120000) == OK, "flush_wait timed out"
    check_exactly_one(prod, n)
    failed = [(i, r[0]) for i, r in prod.results.items() if r[0][0] != OK]
    assert not failed, "%d failed, first %s" % (len(failed), failed[0])
    st = prod.stats()
    new_pid = lib.kp_producer_daemon_pid(prod.p)
    assert st.daemon_starts == 2 and st.daemon_deaths == 1, (st.daemon_starts, st.daemon_deaths)
    assert st.records_replayed > 0, "the kill found nothing to replay"
    assert st.records_replayed <= n - acked_at, "acknowledged records were replayed"
    assert new_pid > 0 and new_pid != old_pid
    assert st.credentials_sent == 4, "credentials not re-sent after restart (%d)" % st.credentials_sent
    log("sigkill_replay: %d replayed, new daemon %d" % (st.records_replayed, new_pid))
    assert lib.kp_producer_close(prod.p, 0, 10000) == OK
    prod.destroy()
    ids = read_back_ids(client, "cl-kill")
    lost = set(range(1, n + 1)) - set(ids)
    assert not lost, "%d records lost, e.g. %s" % (len(lost), sorted(lost)[:5])
    log("sigkill_replay: all %d records in the stream (%d copies incl. duplicates)" % (n, len(ids)))


def death_fail_policy(emu, client):
    kptest.create_stream(client, "cl-fail", 1)
    prod = Producer(base(emu, DaemonDeathPolicy="fail", RecordMaxBufferedTime=60000,
                         RecordTtl=120000, DaemonRestartBackoffMin=50))
    for i in range(1, 101):
        assert prod.put("cl-fail", "k", b"%d" % i, i) == OK
    # Wait until the daemon has them (the put is asynchronous): a metrics round trip
    # is ordered after the records on the same pipe.
    arr, cnt = C.c_void_p(), C.c_size_t()
    assert lib.kp_producer_metrics(prod.p, None, 0, 10000, C.byref(arr), C.byref(cnt)) == OK
    lib.kp_metrics_destroy(arr, cnt.value)
    os.kill(lib.kp_producer_daemon_pid(prod.p), signal.SIGKILL)
    assert lib.kp_producer_flush_wait(prod.p, 30000) == OK
    check_exactly_one(prod, 100)
    codes = {r[0][0] for r in prod.results.values()}
    assert codes == {DAEMON_DIED}, [name(c) for c in codes]
    # The successor takes new records.
    assert prod.put("cl-fail", "k", b"101", 101) == OK
    assert lib.kp_producer_flush_wait(prod.p, 30000) == OK
    assert prod.results[101][0][0] == OK, prod.results[101]
    prod.destroy()


def credentials_refresh(emu, client):
    kptest.create_stream(client, "cl-creds", 1)
    d = tempfile.mkdtemp(prefix="kp-creds-")
    path = os.path.join(d, "credentials")
    with open(path, "w") as f:
        f.write("[default]\naws_access_key_id = AKIDFIRST\naws_secret_access_key = s1\n"
                "[other]\naws_access_key_id = AKIDOTHER\naws_secret_access_key = s2\n")
    s = base(emu, AwsSharedCredentialsFile=path, AwsProfile="other", CredentialsRefreshDelay=50)
    del s["AwsAccessKeyId"], s["AwsSecretAccessKey"]
    env_saved = {k: os.environ.pop(k, None) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    try:
        prod = Producer(s)
    finally:
        for k, v in env_saved.items():
            if v is not None:
                os.environ[k] = v
    assert prod.stats().credentials_sent == 2
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write("[other]\naws_access_key_id = AKIDSECOND\naws_secret_access_key = s3\n"
                "aws_session_token = tok\n")
    os.rename(tmp, path)  # atomic: the refresh never sees half a file
    assert prod.wait_log("credentials changed", 10), "change not noticed: %s" % prod.logs
    st = prod.stats()
    assert st.credentials_changes == 1 and st.credentials_sent == 4, (
        st.credentials_changes, st.credentials_sent)
    assert "OND" in [m for _, m in prod.logs if "credentials changed" in m][0]
    assert prod.put("cl-creds", "k", b"1", 1) == OK
    assert lib.kp_producer_flush_wait(prod.p, 30000) == OK
    assert prod.results[1][0][0] == OK
    prod.destroy()


def background_delivery(emu, client):
    kptest.create_stream(client, "cl-bg", 1)
    prod = Producer(base(emu), background=True)
    for i in range(1, 501):
        assert prod.put("cl-bg", "k%d" % i, b"%d" % i, i, flags=PUT_F_BLOCK) == OK
    assert lib.kp_producer_poll(prod.p, 0) == 0, "poll serves nothing in background mode"
    assert lib.kp_producer_flush_wait(prod.p, 60000) == OK
    check_exactly_one(prod, 500)
    assert threading.get_ident() not in prod.threads and len(prod.threads) == 1
    prod.destroy()


def metrics(emu, client):
    prod = Producer(base(emu))
    arr, cnt = C.c_void_p(), C.c_size_t()
    assert lib.kp_producer_metrics(prod.p, b"UserRecordsPut", 60, 10000, C.byref(arr),
                                   C.byref(cnt)) == OK
    log("metrics: daemon returned %d metrics" % cnt.value)
    lib.kp_metrics_destroy(arr, cnt.value)
    assert lib.kp_producer_metrics(prod.p, None, 0, 10000, None, None) == INVALID_ARG
    prod.destroy()


def misuse(emu, client):
    prod = Producer(base(emu))
    assert prod.put(None, "k", b"x", 1) == INVALID_ARG
    assert prod.put("s", None, b"x", 1) == INVALID_ARG
    assert lib.kp_producer_put(prod.p, b"s", b"k", None, None, 5, 0, None) == INVALID_ARG
    assert lib.kp_producer_put(None, b"s", b"k", None, b"x", 1, 0, None) == INVALID_ARG
    assert prod.put("", "k", b"x", 1) == BAD_STREAM
    assert prod.put("s", "", b"x", 1) == BAD_PK
    assert prod.put("s", "k" * 257, b"x", 1) == BAD_PK
    assert prod.put("s", "é" * 256, b"x", 1) == OK, "256 characters (512 bytes) is allowed"
    assert lib.kp_producer_put(prod.p, b"s", b"\xff\xfe", None, b"x", 1, 0, None) == BAD_PK
    assert prod.put("s", "k", b"x", 1, ehk="abc") == BAD_EHK
    assert prod.put("s", "k", b"x", 1, ehk=str(2**128)) == BAD_EHK
    assert prod.put("s", "k", b"x", 1, ehk=str(2**128 - 1)) == OK
    assert prod.put("s", "k", b"x" * (1024 * 1024 + 1), 1) == MSG_SIZE
    assert lib.kp_producer_flush(prod.p, b"") == BAD_STREAM
    assert lib.kp_producer_flush(None, None) == INVALID_ARG
    assert lib.kp_producer_outstanding(None) == 0
    assert lib.kp_producer_close(None, 0, 0) == INVALID_ARG
    lib.kp_producer_destroy(None)
    prod.destroy()  # the two accepted records (stream "s" is missing) fail or are purged
    # Configuration problems are named when the producer is created.
    Producer(base(emu, MinConnections=16, MaxConnections=2), expect_error="MinConnections")
    Producer(base(emu, DaemonRestartBackoffMin=5000, DaemonRestartBackoffMax=100),
             expect_error="DaemonRestartBackoffMin")
    Producer(base(emu, NativeExecutable="/nonexistent/kinesis_producer"),
             expect_error="NativeExecutable: /nonexistent/kinesis_producer")
    s = base(emu, AwsSharedCredentialsFile="/nonexistent/creds")
    del s["AwsAccessKeyId"], s["AwsSecretAccessKey"]
    saved = {k: os.environ.pop(k, None) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    try:
        Producer(s, expect_error="no AWS credentials")
    finally:
        for k, v in saved.items():
            if v is not None:
                os.environ[k] = v
    conf = lib.kp_conf_new()
    err = C.create_string_buffer(256)
    assert lib.kp_conf_set(conf, b"NoSuchKey", b"1", err, 256) == UNKNOWN_CONF
    assert b"NoSuchKey" in err.value
    assert lib.kp_conf_set(conf, b"AggregationMaxSize", b"10", err, 256) == INVALID_CONF
    assert b"AggregationMaxSize" in err.value, err.value
    assert lib.kp_conf_set(conf, b"daemon_death_policy", b"sometimes", err, 256) == INVALID_CONF
    assert b"DaemonDeathPolicy" in err.value, err.value
    assert lib.kp_conf_set(conf, None, b"1", err, 256) == INVALID_ARG
    lib.kp_conf_destroy(conf)


SCENARIOS = [produce_and_read_back, queue_full_and_purge, close_flushes, sigkill_replay,
             death_fail_policy, credentials_refresh, background_delivery, metrics, misuse]


def main():
    wanted = sys.argv[1:]
    todo = [s for s in SCENARIOS if not wanted or s.__name__ in wanted]
    with kptest.Emulator("kinesalite") as emu:
        client = kptest.kinesis_client(emu.url)
        for s in todo:
            t0 = time.monotonic()
            s(emu, client)
            log("PASS %s (%.1fs)" % (s.__name__, time.monotonic() - t0))
    log("test_client_lib: %d scenarios passed" % len(todo))


if __name__ == "__main__":
    main()
