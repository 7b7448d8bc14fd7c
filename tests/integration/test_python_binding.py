#!/usr/bin/python3
"""The Python binding (bindings/python/kinesis_producer) end to end against kinesalite:

  error_names        ErrorCode matches the loaded library's kp_err2name table
  config_errors      unknown key, bad value, cross-check, properties file: ConfigError
                     carrying the library's message; ResultDelivery=poll refused
  threads_read_back  5,000 puts from 4 Python threads: every Future resolves exactly once
                     with success; read back and de-aggregated by the binding, compared
                     with what was put, with the Futures' shard/sequence numbers and with
                     the kpl-deagg CLI; stats and metrics
  backpressure       4 threads of blocking puts against tiny limits: all get in, in bounds
  deagg_corrupt      strict vs lenient on a corrupted aggregate, hash_range, bad EHK
  bad_input          empty/oversized partition key, bad EHK, oversize data, bad stream,
                     wrong types: synchronous InvalidRecord/TypeError, nothing queued
  put_failed         a record for a missing stream: PutFailed(RESOURCE_NOT_FOUND, attempts)
  queue_full_purge   QueueFull at once and after a put timeout; close(purge=True) fails the
                     outstanding Futures with PURGED; puts after close raise ProducerClosed
  flush_wait         flush_wait waits for the result callbacks (False while one is held,
                     True after); flush_wait/close from a callback raise RuntimeError;
                     close flushes lingering records; context manager
  daemon_killed      SIGKILL of the daemon mid-stream: every Future resolves once, with success
  exit_without_close a dropped producer is closed by __del__, an open one at interpreter
                     exit by atexit: every result delivered, daemons gone, exit code 0

Usage: test_python_binding.py [scenario ...] (default: all)."""

import collections
import concurrent.futures
import os
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kptest  # noqa: E402
from kptest import log  # noqa: E402

# The package from the source tree, the libraries and the daemon from the build under test.
sys.path.insert(0, os.path.join(kptest.SRC, "bindings", "python"))
os.environ.setdefault("KP_LIB_DIR", os.path.join(os.path.dirname(kptest.BIN), "lib"))
os.environ.setdefault("KP_DAEMON_PATH", os.path.join(kptest.BIN, "kinesis_producer"))
import kinesis_producer as kp  # noqa: E402
from kinesis_producer import ErrorCode  # noqa: E402

MAGIC = b"\xf3\x89\x9a\xc2"


def base(emu, **kw):
    s = {"KinesisEndpoint": emu.url, "Region": "us-east-1", "MetricsLevel": "none",
         "AwsAccessKeyId": "AKIDTEST", "AwsSecretAccessKey": "secret", "LogLevel": "warning",
         "RecordMaxBufferedTime": 50}
    s.update(kw)
    return s


def raises(exc_type, fn, *a, **kw):
    try:
        fn(*a, **kw)
    except exc_type as e:
        return e
    raise AssertionError("%s did not raise %s" % (getattr(fn, "__name__", fn), exc_type.__name__))


def error_names(emu, client, shared):
    lib = kp._lib.client()
    for code in ErrorCode:
        name = lib.kp_err2name(int(code)).decode()
        assert name.lstrip("_") == code.name, (code, name)
        assert kp.err2name(code) == name and kp.err2str(code)
    known = {c.value for c in ErrorCode}
    for v in range(-200, 200):
        if lib.kp_err2name(v).decode() != "UNKNOWN":
            assert v in known, "library code %d (%s) missing from ErrorCode" % (
                v, lib.kp_err2name(v).decode())
    assert kp.library_version() == kp.__version__


def config_errors(emu, client, shared):
    e = raises(kp.ConfigError, kp.Producer, base(emu), NoSuchKey=1)
    assert e.code == ErrorCode.UNKNOWN_CONF and "NoSuchKey" in str(e), str(e)
    e = raises(kp.KinesisProducerError, kp.Producer, base(emu, AggregationMaxSize=10))
    assert e.code == ErrorCode.INVALID_CONF and "AggregationMaxSize" in e.message, str(e)
    e = raises(kp.ConfigError, kp.Producer, base(emu), daemon_death_policy="sometimes")
    assert "DaemonDeathPolicy" in str(e), str(e)
    e = raises(kp.ConfigError, kp.Producer, base(emu, MinConnections=16, MaxConnections=2))
    assert "MinConnections" in str(e), str(e)
    e = raises(kp.ConfigError, kp.Producer, base(emu), MaxOutstandingBytes=2048,
               MaxUserRecordSize=4096)
    assert "MaxUserRecordSize" in str(e), str(e)
    e = raises(kp.ConfigError, kp.Producer, base(emu), ResultDelivery="poll")
    assert "background" in str(e), str(e)
    e = raises(kp.ConfigError, kp.Producer, base(emu, NativeExecutable="/nonexistent/kp"))
    assert "/nonexistent/kp" in str(e), str(e)
    d = tempfile.mkdtemp(prefix="kp-py-props-")
    bad = os.path.join(d, "bad.properties")
    with open(bad, "w") as f:
        f.write("# comment\nRegion = us-east-1\nRecordMaxBufferedTime = soon\n")
    e = raises(kp.ConfigError, kp.Producer, properties_file=bad)
    assert "bad.properties:3" in str(e), str(e)
    good = os.path.join(d, "good.properties")
    with open(good, "w") as f:
        f.write("KinesisEndpoint = %s\nRegion = us-east-1\nMetricsLevel = none\n"
                "RecordMaxBufferedTime = 60000\n" % emu.url)
    # properties, then the dict, then keyword settings (aliases accepted)
    with kp.Producer({"AwsAccessKeyId": "AKIDTEST"}, properties_file=good,
                     aws_secret_access_key="s", log_level="warning") as p:
        assert p.daemon_pid > 0 and p.outstanding == 0
    assert p.closed and p.outstanding == 0


def threads_read_back(emu, client, shared):
    stream, nthreads, per = "py-read", 4, 1250
    n = nthreads * per
    kptest.create_stream(client, stream, 4)
    # MetricsLevel=detailed so that metrics() has something to report; the CloudWatch
    # endpoint is the emulator too (uploads, were one due, stay on 127.0.0.1).
    prod = kp.Producer(base(emu, MetricsLevel="detailed", CloudwatchEndpoint=emu.url))
    lock = threading.Lock()
    resolutions = collections.Counter()  # record -> done-callback calls
    sent = {}  # (pk, data) -> ehk
    futures = {}
    errors = []

    def record(t, i):
        pk = "pk-%d-%d" % (t, i % 50)
        if i % 11 == 0:  # put as str below: the binding encodes it as UTF-8
            return pk, ("t%d-r%d ünïcødé" % (t, i)).encode(), None
        # A third of the records are big enough (>= 512 bytes) to go by shared memory.
        data = ("t%d-r%d " % (t, i)).encode() + bytes([i % 256]) * (i % 300 + 700 * (i % 3 == 0))
        ehk = str((t * per + i) * (2**128 // (n + 1))) if i % 7 == 0 else None
        return pk, data, ehk

    def done(key):
        def cb(_fut):
            with lock:
                resolutions[key] += 1
        return cb

    def worker(t):
        try:
            for i in range(per):
                pk, data, ehk = record(t, i)
                payload = data.decode() if i % 11 == 0 else data
                fut = prod.put(stream, pk, payload, explicit_hash_key=ehk)
                fut.add_done_callback(done((pk, data)))
                with lock:
                    sent[(pk, data)] = ehk
                    futures[(pk, data)] = fut
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(nthreads)]
    t0 = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
        assert not th.is_alive(), "put thread still running after 120 s"
    assert not errors, errors[:3]
    assert len(futures) == n
    assert prod.flush_wait(60), "flush_wait timed out with %d outstanding" % prod.outstanding
    done_set, not_done = concurrent.futures.wait(list(futures.values()), timeout=0)
    assert not not_done, "%d futures unresolved after flush_wait" % len(not_done)
    log("threads_read_back: %d puts from %d threads resolved in %.2fs" %
        (n, nthreads, time.monotonic() - t0))
    failed = [(k, f.exception()) for k, f in futures.items() if f.exception() is not None]
    assert not failed, "%d failed, first %r" % (len(failed), failed[0])
    with lock:
        assert len(resolutions) == n and set(resolutions.values()) == {1}, \
            "done-callbacks: %s" % collections.Counter(resolutions.values())
    results = {k: f.result() for k, f in futures.items()}
    assert all(r.shard_id.startswith("shardId-") and r.sequence_number.isdigit() and
               r.attempts and r.attempts[-1].success for r in results.values())

    assert prod._state.unmatched == 0, "results for no pending record"
    st = prod.stats()
    assert st.puts_accepted == n and st.results_ok == n and st.results_failed == 0, st
    assert st.outstanding == 0 and st.outstanding_bytes == 0 and st.unsent_bytes == 0 \
        and st.daemon_starts == 1, st
    big = sum(1 for (_, data) in sent if len(data) >= 512)
    assert big > n // 4 and st.puts_shared == big, "%d records of >= 512 bytes, %r" % (big, st)
    ms = prod.metrics("UserRecordsPut")
    assert ms and all(isinstance(m, kp.Metric) and m.name == "UserRecordsPut" for m in ms), ms
    glob = [m for m in ms if not m.dimensions]
    assert glob and glob[0].sum == n, "global UserRecordsPut %s" % glob
    per_stream = [m for m in ms if m.dimensions == {"StreamName": stream}]
    assert per_stream and per_stream[0].sum == n, per_stream
    everything = prod.metrics(seconds=60)
    names = {m.name for m in everything}
    assert {"UserRecordsPut", "KinesisRecordsPut"} <= names, sorted(names)
    assert all(m.count >= 0 and m.min <= m.max for m in everything)
    assert prod.close(timeout=30) is True
    assert prod.stats().results_ok == n, "stats after close"
    raises(kp.ProducerClosed, prod.metrics)

    rows = kptest.read_stream(client, stream)
    ranges = {sh["ShardId"]: (int(sh["HashKeyRange"]["StartingHashKey"]),
                              int(sh["HashKeyRange"]["EndingHashKey"])) for sh, _ in rows}
    got = collections.Counter()
    where = {}
    mine = []
    aggregates = []
    for sh, rec in rows:
        users = kp.deaggregate(rec["Data"], rec["PartitionKey"],
                               sequence_number=rec["SequenceNumber"], strict=True)
        if rec["Data"].startswith(MAGIC) and len(users) > 1:
            aggregates.append(rec)
        for u in users:
            got[(u.partition_key, u.data)] += 1
            where[(u.partition_key, u.data)] = (sh["ShardId"], u.sequence_number)
            ehk = sent.get((u.partition_key, u.data))
            # A record sent alone is a plain Kinesis record: its explicit hash key went in
            # the request, and GetRecords does not return it, so only aggregates carry it.
            hk = u.hash_key if u.aggregated else kptest.hash_key(u.partition_key, ehk)
            if u.aggregated:
                assert u.explicit_hash_key == ehk, u
            a, b = ranges[sh["ShardId"]]
            assert a <= hk <= b, "%s on %s, hash key %d" % (u, sh["ShardId"], hk)
            mine.append((u.sequence_number, u.sub_sequence_number, u.partition_key, u.data))
    assert set(got) == set(sent), "read back %d distinct records, put %d (missing %s)" % (
        len(got), len(sent), list(set(sent) - set(got))[:3])
    dups = [k for k, c in got.items() if c != 1]
    assert not dups, "%d records read more than once, e.g. %r" % (len(dups), dups[:2])
    wrong = [k for k, r in results.items() if where[k] != (r.shard_id, r.sequence_number)]
    assert not wrong, "Future shard/sequence differ from the stream for %r" % wrong[:2]
    assert aggregates, "no aggregated Kinesis record in the stream"
    # The binding agrees with the kpl-deagg CLI record for record.
    cli = [(u["sequenceNumber"], int(u["subSequenceNumber"]), u["partitionKey"],
            kptest.base64.b64decode(u["data"])) for u in kptest.deaggregate([r for _, r in rows])]
    assert sorted(mine) == sorted(cli), "binding and kpl-deagg disagree"
    log("threads_read_back: %d user records in %d Kinesis records (%d aggregated)" % (
        len(mine), len(rows), len(aggregates)))
    shared["aggregate"] = aggregates[0]


def backpressure(emu, client, shared):
    """Tiny limits, 4 threads of blocking puts: every put waits for room and then gets
    in (none is refused by the C library behind the binding's own accounting)."""
    stream, nthreads, per = "py-bp", 4, 1000
    kptest.create_stream(client, stream, 2)
    p = kp.Producer(base(emu, MaxOutstandingRecords=40, MaxOutstandingBytes=4096,
                         MaxUserRecordSize=400, RecordMaxBufferedTime=5))
    futs, errors = [], []
    lock = threading.Lock()
    high = [0]

    def worker(t):
        try:
            for i in range(per):
                f = p.put(stream, "k%d" % (i % 13), b"%d-%d;" % (t, i) + b"b" * (i % 300),
                          timeout=60)
                with lock:
                    futs.append(f)
                    high[0] = max(high[0], p._state.records)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(nthreads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
        assert not th.is_alive(), "put thread still running after 120 s"
    assert not errors, "%d puts raised, first %r" % (len(errors), errors[0])
    assert p.flush_wait(60)
    assert len(futs) == nthreads * per and all(f.exception(0) is None for f in futs)
    assert high[0] <= 40, "binding admitted %d records" % high[0]
    st = p.stats()
    assert st.results_ok == nthreads * per and st.outstanding == 0, st
    assert p.close() is True
    log("backpressure: at most %d records outstanding" % high[0])


def daemon_killed(emu, client, shared):
    """SIGKILL of the daemon mid-stream: the library replays, every Future still resolves
    exactly once, with success."""
    kptest.create_stream(client, "py-kill", 2)
    p = kp.Producer(base(emu, RecordMaxBufferedTime=1000, DaemonRestartBackoffMin=50))
    calls = collections.Counter()
    lock = threading.Lock()

    def count(f):
        with lock:
            calls[id(f)] += 1

    futs = []
    old_pid = p.daemon_pid
    for i in range(4000):
        f = p.put("py-kill", "k%d" % (i % 200), b"%d" % i)
        f.add_done_callback(count)
        futs.append(f)
        if i == 2000:
            os.kill(old_pid, signal.SIGKILL)
    assert p.flush_wait(120), "flush_wait timed out"
    assert all(f.exception(0) is None for f in futs), [f.exception(0) for f in futs
                                                       if f.exception(0)][:3]
    with lock:
        assert len(calls) == len(futs) and set(calls.values()) == {1}
    assert p._state.unmatched == 0, "results for no pending record"
    st = p.stats()
    assert st.daemon_deaths == 1 and st.daemon_starts == 2 and st.results_ok == len(futs), st
    assert p.daemon_pid not in (0, old_pid)
    assert p.close() is True
    log("daemon_killed: %d records replayed" % st.records_replayed)


def deagg_corrupt(emu, client, shared):
    rec = shared.get("aggregate")
    if rec is None:  # run alone: make an aggregate
        threads_read_back(emu, client, shared)
        rec = shared["aggregate"]
    data, pk, seq = rec["Data"], rec["PartitionKey"], rec["SequenceNumber"]
    users = kp.deaggregate(data, pk, sequence_number=seq, strict=True)
    assert len(users) > 1 and all(u.aggregated for u in users)
    assert [u.sub_sequence_number for u in users] == list(range(len(users)))
    # one flipped byte inside the protobuf: the MD5 trailer no longer matches
    bad = bytearray(data)
    bad[len(MAGIC) + (len(data) - len(MAGIC) - 16) // 2] ^= 0x5A
    bad = bytes(bad)
    e = raises(kp.DeaggregationError, kp.deaggregate, bad, pk, sequence_number=seq, strict=True)
    assert e.corrupt and e.code == kp.DeaggError.BAD_MD5 and e.message, e
    lenient = kp.deaggregate(bad, pk, sequence_number=seq)
    assert len(lenient) == 1, lenient
    u = lenient[0]
    assert (u.data, u.partition_key, u.sequence_number, u.aggregated, u.sub_sequence_number) == \
        (bad, pk, seq, False, 0), u
    d = kp.Deaggregator()
    d.deaggregate(bad, pk, sequence_number=seq)
    assert d.corruption and d.corruption[0] == kp.DeaggError.BAD_MD5, d.corruption
    d.deaggregate(data, pk)
    assert d.corruption is None
    d.close()
    # cut short: truncated or MD5 mismatch, never a partial set of records
    e = raises(kp.DeaggregationError, kp.deaggregate, data[:-20], pk, strict=True)
    assert e.corrupt, e
    assert len(kp.deaggregate(data[:-20], pk)) == 1
    # hash_range keeps the user records inside, one by one
    keys = sorted(u.hash_key for u in users)
    mid = keys[len(keys) // 2]
    low = kp.deaggregate(data, pk, hash_range=(0, mid - 1))
    high = kp.deaggregate(data, pk, hash_range=(mid, 2**128 - 1))
    assert len(low) + len(high) == len(users) and all(u.hash_key < mid for u in low) and \
        all(u.hash_key >= mid for u in high), (len(low), len(high), len(users))
    assert len(kp.deaggregate(data, pk)) == len(users), "the thread's range filter leaked"
    raises(ValueError, kp.deaggregate, data, pk, hash_range=(5, 4))
    raises(ValueError, kp.deaggregate, data, pk, hash_range=(0, 2**128))
    e = raises(kp.DeaggregationError, kp.deaggregate, b"plain", "k", explicit_hash_key="x1")
    assert e.code == kp.DeaggError.INVALID_ARG and not e.corrupt, e
    plain = kp.deaggregate(b"plain", "k", explicit_hash_key="42", sequence_number="7")
    assert plain == [kp.UserRecord("k", "42", 42, b"plain", "7", 0, False)], plain
    # the copies outlive the input buffer
    buf = bytearray(data)
    copies = kp.deaggregate(buf, pk)
    buf[:] = b"\0" * len(buf)
    assert [u.data for u in copies] == [u.data for u in users]


def bad_input(emu, client, shared):
    with kp.Producer(base(emu, MaxUserRecordSize=1000)) as p:
        cases = [
            (dict(partition_key=""), ErrorCode.INVALID_PARTITION_KEY, "empty partition key"),
            (dict(partition_key="k" * 257), ErrorCode.INVALID_PARTITION_KEY, "257 characters"),
            (dict(partition_key=b"\xff\xfe"), ErrorCode.INVALID_PARTITION_KEY, "UTF-8"),
            (dict(explicit_hash_key="abc"), ErrorCode.INVALID_HASH_KEY, "'abc'"),
            (dict(explicit_hash_key=str(2**128)), ErrorCode.INVALID_HASH_KEY, "explicit hash"),
            (dict(explicit_hash_key=-1), ErrorCode.INVALID_HASH_KEY, "-1"),
            (dict(data=b"x" * 1001), ErrorCode.MSG_SIZE_TOO_LARGE, "1001 bytes"),
            (dict(stream=""), ErrorCode.INVALID_STREAM, "stream name"),
            (dict(stream="a\nb"), ErrorCode.INVALID_STREAM, "stream name"),
            (dict(stream="s" * 129), ErrorCode.INVALID_STREAM, "stream name"),
        ]
        for kw, code, text in cases:
            args = dict(stream="py-bad", partition_key="k", data=b"x")
            args.update(kw)
            e = raises(kp.InvalidRecord, p.put, **args)
            assert isinstance(e, ValueError) and e.code == code, (kw, e.code, e)
            assert text in str(e) and e.name == kp.err2name(code), (kw, str(e))
        raises(TypeError, p.put, "py-bad", "k", 12345)
        raises(TypeError, p.put, "py-bad", None, b"x")
        st = p.stats()
        assert st.puts_accepted == 0 and p.outstanding == 0, st
        # the limits themselves are allowed
        fs = [p.put("py-bad", "é" * 256, b"x" * 1000, explicit_hash_key=2**128 - 1),
              p.put("py-bad", "k", "text, not bytes", explicit_hash_key="0")]
        assert p.stats().puts_accepted == 2
    # the stream does not exist: both fail, but each exactly once, by close at the latest
    for f in fs:
        assert isinstance(f.exception(0), kp.PutFailed), f.exception(0)


def put_failed(emu, client, shared):
    with kp.Producer(base(emu)) as p:
        f = p.put("py-missing", "k", b"x")
        e = f.exception(60)
        assert isinstance(e, kp.PutFailed) and e.code == ErrorCode.RESOURCE_NOT_FOUND, repr(e)
        assert e.error_code == "ResourceNotFoundException" and "py-missing" in e.message, e
        assert e.attempts and not e.attempts[-1].success and e.stream == "py-missing", e.attempts
        assert p.flush_wait(30)  # the counters follow once the result batch is served
        st = p.stats()
        assert st.results_failed == 1 and st.results_ok == 0 and st.outstanding == 0, st


def queue_full_purge(emu, client, shared):
    kptest.create_stream(client, "py-full", 1)
    # Records linger in the daemon for a minute, so none completes during the test.
    p = kp.Producer(base(emu, MaxOutstandingRecords=10, RecordMaxBufferedTime=60000,
                         RecordTtl=120000))
    futs = [p.put("py-full", "k", b"%d" % i) for i in range(10)]
    e = raises(kp.QueueFull, p.put, "py-full", "k", b"x", block=False)
    assert e.code == ErrorCode.QUEUE_FULL, e
    t0 = time.monotonic()
    e = raises(kp.QueueFull, p.put, "py-full", "k", b"x", timeout=0.3)
    waited = time.monotonic() - t0
    assert e.code == ErrorCode.TIMED_OUT and 0.3 <= waited < 10, (e, waited)
    assert p.outstanding == 10 and not any(f.done() for f in futs)
    assert not futs[0].cancel(), "a put's Future must not be cancellable"
    # A put waiting for room (PutBlockTimeout: 60 s) is released by close.
    box = []

    def blocked():
        try:
            p.put("py-full", "k", b"late")
            box.append("accepted")
        except kp.KinesisProducerError as ex:
            box.append(ex)

    th = threading.Thread(target=blocked)
    th.start()
    t0 = time.monotonic()
    assert p.close(purge=True, timeout=0) is True
    th.join(30)
    assert not th.is_alive() and time.monotonic() - t0 < 30, "blocked put not released"
    assert len(box) == 1 and isinstance(box[0], kp.ProducerClosed), box
    for f in futs:
        assert f.done(), "close returned before every Future was resolved"
        ex = f.exception(0)
        assert isinstance(ex, kp.PutFailed) and ex.code == ErrorCode.PURGED, repr(ex)
        assert ex.name == "_PURGED" and ex.message and ex.attempts == [], ex
    st = p.stats()
    assert st.results_failed == 10 and st.outstanding == 0, st
    e = raises(kp.ProducerClosed, p.put, "py-full", "k", b"x")
    assert e.code == ErrorCode.STATE
    raises(kp.ProducerClosed, p.flush)
    assert p.close() is True and p.flush_wait(1) is True and p.outstanding == 0


def flush_wait(emu, client, shared):
    kptest.create_stream(client, "py-flush", 1)
    p = kp.Producer(base(emu, RecordMaxBufferedTime=60000, RecordTtl=120000))
    release = threading.Event()
    inside = threading.Event()
    from_cb = []

    def hold(_fut):  # runs on the library's delivery thread
        for call in (lambda: p.flush_wait(1), lambda: p.close()):
            try:
                call()
                from_cb.append("no error")
            except RuntimeError as ex:
                from_cb.append(ex)
        inside.set()
        release.wait(60)  # releases the GIL: other threads keep running

    first = p.put("py-flush", "k0", b"0")
    first.add_done_callback(hold)
    rest = [p.put("py-flush", "k%d" % i, b"%d" % i) for i in range(1, 50)]
    p.flush("py-flush")
    assert inside.wait(60), "the first record's callback never ran"
    assert all(isinstance(x, RuntimeError) for x in from_cb) and len(from_cb) == 2, from_cb
    # The callback is still running, so its record is outstanding: the wait must time out.
    t0 = time.monotonic()
    assert p.flush_wait(0.3) is False
    assert 0.3 <= time.monotonic() - t0 < 10
    assert p.outstanding >= 1
    release.set()
    assert p.flush_wait(60) is True and p.outstanding == 0
    assert all(f.done() and f.exception(0) is None for f in [first] + rest)
    # close flushes records the daemon would otherwise hold for a minute
    late = [p.put("py-flush", "late%d" % i, b"x") for i in range(20)]
    assert p.close(timeout=60) is True
    assert all(f.result(0).sequence_number for f in late)
    # context manager closes; a Future resolved inside it is usable after
    with kp.Producer(base(emu)) as q:
        f = q.put("py-flush", "ctx", b"ctx")
        assert q.flush_wait(60)
    assert q.closed and f.result(0).shard_id == "shardId-000000000000"
    raises(kp.ProducerClosed, q.put, "py-flush", "k", b"x")


EXIT_SCRIPT = r"""
import sys, kinesis_producer as kp
settings = dict(%(settings)r)
def done(f):
    print("ok" if f.exception() is None else "failed %%r" %% f.exception(), flush=True)
a = kp.Producer(settings)
print("pid", a.daemon_pid, flush=True)
for i in range(50):
    a.put("py-exit", "a%%d" %% i, b"a").add_done_callback(done)
del a  # the last reference: __del__ closes (flushing)
print("deleted", flush=True)
b = kp.Producer(settings)
print("pid", b.daemon_pid, flush=True)
for i in range(50):
    b.put("py-exit", "b%%d" %% i, b"b").add_done_callback(done)
print("exiting", flush=True)
# no close: the atexit hook closes b while its callbacks can still run
"""


def exit_without_close(emu, client, shared):
    """A producer dropped without close() is closed by __del__; one still open at exit
    by the atexit hook: every record gets its result, both daemons are gone, exit 0."""
    kptest.create_stream(client, "py-exit", 1)
    settings = base(emu, RecordMaxBufferedTime=60000, RecordTtl=120000)
    env = dict(os.environ, PYTHONPATH=os.path.join(kptest.SRC, "bindings", "python"))
    r = kptest.subprocess.run([sys.executable, "-c", EXIT_SCRIPT % {"settings": settings}],
                              capture_output=True, text=True, timeout=120, env=env)
    out = r.stdout.splitlines()
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert out.count("ok") == 100, "results: %s / %s" % (collections.Counter(out), r.stderr[-2000:])
    assert out[:out.index("deleted")].count("ok") == 50, "del did not close (flush) the first"
    assert out[-1] == "ok" and "exiting" in out
    for line in out:
        if line.startswith("pid "):
            pid = int(line.split()[1])
            assert pid > 0 and not os.path.exists("/proc/%d" % pid), "daemon %d left" % pid


SCENARIOS = [error_names, config_errors, threads_read_back, backpressure, deagg_corrupt, bad_input,
             put_failed, queue_full_purge, flush_wait, daemon_killed, exit_without_close]


def main():
    wanted = sys.argv[1:]
    todo = [s for s in SCENARIOS if not wanted or s.__name__ in wanted]
    unknown = set(wanted) - {s.__name__ for s in SCENARIOS}
    assert not unknown, "unknown scenarios %s" % sorted(unknown)
    shared = {}
    with kptest.Emulator("kinesalite") as emu:
        client = kptest.kinesis_client(emu.url)
        for s in todo:
            t0 = time.monotonic()
            s(emu, client, shared)
            log("PASS %s (%.1fs)" % (s.__name__, time.monotonic() - t0))
    log("test_python_binding: %d scenarios passed" % len(todo))


if __name__ == "__main__":
    main()
