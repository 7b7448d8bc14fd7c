#!/usr/bin/python3
"""The daemon's answers to bad input and failing endpoints, against kinesalite:
every PutRecord gets exactly one result naming the problem, and the daemon keeps
running and exits 0."""

import base64
import fcntl
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kptest  # noqa: E402
from kptest import log, pb  # noqa: E402

PASSED = 0


def check(cond, what):
    global PASSED
    if not cond:
        raise AssertionError(what)
    PASSED += 1


def only_result(d, i):
    rs = d.results.get(i, [])
    check(len(rs) == 1, "record %d: expected one result, got %d" % (i, len(rs)))
    return rs[0]


def bad_input(emu):
    client = kptest.kinesis_client(emu.url)
    kptest.create_stream(client, "errs", 2)
    d = kptest.Daemon(kptest.config(emu.url, record_max_buffered_time=50))
    cases = [
        ("", None, b"x", "empty partition key", "partition key"),
        ("k" * 257, None, b"x", "257-character partition key", "256"),
        ("k", "-1", b"x", "negative explicit hash key", "explicit hash key"),
        ("k", "abc", b"x", "non-decimal explicit hash key", "explicit hash key"),
        ("k", str(2**128), b"x", "explicit hash key 2^128", "explicit hash key"),
        ("k", None, b"x" * (1024 * 1024 + 1), "data over 1 MiB", "data"),
    ]
    bad_ids = [(d.put("errs", pk, data, ehk), what, needle)
               for pk, ehk, data, what, needle in cases]
    bad_ids.append((d.put("no spaces allowed!", "k", b"x"), "invalid stream name", "stream name"))
    bad_ids.append((d.put("s" * 129, "k", b"x"), "129-character stream name", "stream name"))
    # Malformed input that is not a record: garbage protobuf, a message with no body.
    d.send_raw(kptest.struct.pack(">I", 5) + b"\xff\xff\xff\xff\xff")
    d.send_raw(kptest.frame(pb.Message(id=999999)))
    # A frame over the KPL's 11 MiB limit: skipped unread, the stream goes on.
    big = 12 * 1024 * 1024
    d.send_raw(kptest.struct.pack(">I", big) + b"\0" * big)
    good = [d.put("errs", "ok-%d" % i, b"payload-%d" % i) for i in range(50)]
    good.append(d.put("errs", "\U0001F642" * 256, b"256 four-byte characters"))
    good.append(d.put("errs", "k", b"max hash key", str(2**128 - 1)))
    missing = d.wait_results([i for i, _, _ in bad_ids] + good, timeout=60)
    check(not missing, "no result for %s" % missing)
    for i, what, needle in bad_ids:
        r = only_result(d, i)
        check(not r.success, "%s was accepted" % what)
        msg = r.attempts[-1].error_message if r.attempts else ""
        check(needle in msg, "%s: error %r does not name the problem" % (what, msg))
        log("  %-32s -> %s: %s" % (what, r.attempts[-1].error_code, msg))
    for i in good:
        r = only_result(d, i)
        check(r.success and r.shard_id.startswith("shardId-"), "good record %d failed: %s" % (i, r))
    rc = d.close()
    check(rc == 0, "daemon exited %d" % rc)
    err = d.log_text()
    check("malformed" in err, "malformed frame not logged:\n" + err[-2000:])
    check("rejected a frame of 12582912 bytes" in err, "oversized frame not logged:\n" + err[-2000:])


def unknown_stream(emu):
    d = kptest.Daemon(kptest.config(emu.url, record_max_buffered_time=50))
    ids = [d.put("no-such-stream", "k%d" % i, b"x") for i in range(20)]
    t0 = time.time()
    missing = d.wait_results(ids, timeout=30)
    check(not missing, "unknown stream: no result for %s" % missing)
    for i in ids:
        r = only_result(d, i)
        check(not r.success and r.attempts[-1].error_code == "ResourceNotFoundException",
              "unknown stream: %s" % r)
    log("  unknown stream answered in %.2fs" % (time.time() - t0))
    check(d.close() == 0, "daemon exit code")


def shared_data(emu):
    """PutRecordRef (our client library's launch, --fd): data read in place from the
    client's memory file and put intact; a reference outside the file answered with
    InvalidArgument; a file that could shrink under the daemon refused."""
    client = kptest.kinesis_client(emu.url)
    kptest.create_stream(client, "shm", 1)
    size = 1 << 20
    fd = os.memfd_create("kp-test", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    blobs = [(i * 70000 + 64, b"shared-%d-" % i + bytes([i]) * (100 + 6000 * i)) for i in range(8)]
    for off, data in blobs:
        os.pwrite(fd, data, off)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    d = kptest.Daemon(kptest.config(emu.url, record_max_buffered_time=50), shared_fd=fd)
    os.close(fd)
    ack = d.wait_other("shared_data_ack", 30)
    check(ack is not None and ack.shared_data_ack.mapped, "shared data file not mapped: %s" % ack)
    good = [d.put_ref("shm", "k%d" % i, off, len(data)) for i, (off, data) in enumerate(blobs)]
    good.append(d.put("shm", "inline", b"by value, in between"))
    # The same reference with an unknown field appended: not the fast decoder's shape, so
    # protobuf-c reads it (the fallback path must treat it the same).
    off, data = blobs[1]
    msg = pb.Message(id=d.next_id, put_record_ref=pb.PutRecordRef(
        stream_name="shm", partition_key="fallback", data_offset=off, data_length=len(data)))
    raw = msg.SerializeToString() + b"\x78\x01"  # field 15, varint 1
    d.send_raw(kptest.struct.pack(">I", len(raw)) + raw)
    good.append(d.next_id)
    d.next_id += 1
    bad = [(d.put_ref("shm", "k", size, 1), "one byte past the end"),
           (d.put_ref("shm", "k", size - 10, 11), "running past the end"),
           (d.put_ref("shm", "k", 2**64 - 1, 2), "offset + length wrapping"),
           (d.put_ref("shm", "k", 2**40, 0), "an offset far out")]
    missing = d.wait_results(good + [i for i, _ in bad], timeout=60)
    check(not missing, "shared data: no result for %s" % missing)
    for i, what in bad:
        r = only_result(d, i)
        check(not r.success and r.attempts[-1].error_code == "InvalidArgument" and
              "outside the 1048576-byte shared data file" in r.attempts[-1].error_message,
              "%s: %s" % (what, r))
    for i in good:
        check(only_result(d, i).success, "record %d failed: %s" % (i, only_result(d, i)))
    check(d.close() == 0, "daemon exit code")
    got = {u["partitionKey"]: base64.b64decode(u["data"])
           for u in kptest.deaggregate([r for _, r in kptest.read_stream(client, "shm")])}
    want = {"k%d" % i: data for i, (_, data) in enumerate(blobs)}
    want["inline"] = b"by value, in between"
    want["fallback"] = blobs[1][1]
    check(got == want, "read back %s" % sorted(got))

    # Unsealed: the client could truncate it and a read past the new end would kill the
    # daemon (SIGBUS), so it is declined and a reference has nothing to point into.
    fd = os.memfd_create("kp-test", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    d = kptest.Daemon(kptest.config(emu.url, record_max_buffered_time=50), shared_fd=fd)
    os.close(fd)
    ack = d.wait_other("shared_data_ack", 30)
    check(ack is not None and not ack.shared_data_ack.mapped and
          "not sealed against shrinking" in ack.shared_data_ack.error, "unsealed: %s" % ack)
    i = d.put_ref("shm", "k", 0, 10)
    check(not d.wait_results([i], timeout=30), "unsealed: no result")
    r = only_result(d, i)
    check(not r.success and "without a shared data file" in r.attempts[-1].error_message,
          "unsealed: %s" % r)
    check(d.close() == 0, "daemon exit code")


def connection_refused():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    d = kptest.Daemon(kptest.config("http://127.0.0.1:%d" % port, record_max_buffered_time=50,
                                    record_ttl=1500))
    ids = [d.put("s", "k%d" % i, b"x") for i in range(10)]
    missing = d.wait_results(ids, timeout=30)
    check(not missing, "endpoint down: no result for %s" % missing)
    for i in ids:
        r = only_result(d, i)
        codes = [a.error_code for a in r.attempts]
        check(not r.success and codes[-1] == "Expired" and "ConnectionError" in codes,
              "endpoint down: attempts %s" % codes)
    check(d.close() == 0, "daemon exit code")


def sigterm_flushes(emu):
    client = kptest.kinesis_client(emu.url)
    kptest.create_stream(client, "term", 3)
    # Records would sit buffered for a minute: SIGTERM must flush them at once.
    d = kptest.Daemon(kptest.config(emu.url, record_max_buffered_time=60000))
    probe = d.put("term", "probe", b"probe")  # loads the shard map
    d.flush()
    check(not d.wait_results([probe], timeout=30), "probe record got no result")
    ids = d.put_many(("term", "k%d" % i, b"v%d" % i, None) for i in range(2000))
    # A MetricsRequest is answered in order: once its answer is back, the daemon has
    # read every PutRecord before it, and they sit in buffers for another minute.
    mid = d.next_id
    d.next_id += 1
    d.send_raw(kptest.frame(pb.Message(id=mid, metrics_request=pb.MetricsRequest())))
    deadline = time.time() + 30
    with d.cond:
        while not any(m.source_id == mid for m in d.others) and time.time() < deadline:
            d.cond.wait(1.0)
    check(any(m.source_id == mid for m in d.others), "no MetricsResponse")
    check(not any(i in d.results for i in ids), "records were sent before SIGTERM")
    t0 = time.time()
    rc = d.terminate()
    check(rc == 0, "daemon exited %d after SIGTERM" % rc)
    missing = [i for i in ids if i not in d.results]
    check(not missing, "SIGTERM lost %d results" % len(missing))
    check(all(d.results[i][0].success for i in ids), "records failed on SIGTERM")
    log("  SIGTERM flushed 2000 records in %.2fs" % (time.time() - t0))


def main():
    with kptest.Emulator("kinesalite") as emu:
        log("bad input")
        bad_input(emu)
        log("unknown stream")
        unknown_stream(emu)
        log("SIGTERM")
        sigterm_flushes(emu)
        log("shared data")
        shared_data(emu)
    log("connection refused")
    connection_refused()
    print("%d passed, 0 failed" % PASSED)


if __name__ == "__main__":
    main()
