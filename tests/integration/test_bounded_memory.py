#!/usr/bin/python3
"""Bounded memory through an outage: with every PutRecords failing (503) and the writer
putting as fast as it can, the daemon holds at most MaxBufferedBytes of user data and
stops reading its input, so the writer blocks (backpressure reaches the caller) instead
of the daemon growing. When the endpoint returns, everything is delivered: 0 lost,
exactly one result per record.

The bound checked is logical (bytes the writer got into the pipe while the daemon was
stalled), not a timing or RSS threshold; RSS is printed for information, and
bench/README.md shows RSS over a longer outage."""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kptest  # noqa: E402
from kptest import log  # noqa: E402
from test_faults import FAULTS_OFF, Proxy  # noqa: E402

CAP = 4 * 1024 * 1024
RECORD = 1024


def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    with kptest.Emulator("kinesalite") as emu:
        client = kptest.kinesis_client(emu.url)
        kptest.create_stream(client, "bounded", 2)
        proxy = Proxy(emu.url, seed=5)
        try:
            proxy.configure({})
            d = kptest.Daemon(kptest.config(proxy.url, record_max_buffered_time=50,
                                            record_ttl=120000, max_buffered_bytes=CAP),
                              level="info")
            warm = d.put("bounded", "warm", b"w")  # shard map loaded before the outage
            assert not d.wait_results([warm], timeout=30), "warm-up record got no result"
            rss_before = rss_kib(d.proc.pid)

            proxy.configure({"error5xx": 1.0})  # endpoint down: every PutRecords 503s
            written = []  # ids the writer got into the pipe
            stop = threading.Event()

            def writer():
                i = 0
                while not stop.is_set() and i < 100000:
                    written.append(d.put("bounded", "k%d" % i, i.to_bytes(4, "big") +
                                         b"x" * (RECORD - 4)))
                    i += 1

            t = threading.Thread(target=writer, daemon=True)
            t.start()
            # Wait until the writer is blocked: its count stops moving while the daemon
            # holds its cap (bounded wait).
            last, still, deadline = -1, 0, time.time() + 60
            while time.time() < deadline and still < 10 and t.is_alive():
                time.sleep(0.1)
                still = still + 1 if len(written) == last else 0
                last = len(written)
            blocked_at = len(written)
            rss_outage = rss_kib(d.proc.pid)
            log("outage: writer blocked after %d records (%.1f MiB); daemon RSS %d -> %d KiB" % (
                blocked_at, blocked_at * RECORD / 2**20, rss_before, rss_outage))
            assert t.is_alive(), "writer finished all 100000 records: no backpressure"
            # What the daemon accepted is at most the cap plus one record; the rest sits in
            # the pipe (64 KiB) and in the read chunk being decoded when it paused.
            slack = 64 * 1024 + 64 * 1024 + 2 * RECORD
            assert blocked_at * RECORD <= CAP + slack, (
                "writer got %d bytes in while the cap is %d" % (blocked_at * RECORD, CAP))
            assert "pausing input" in d.log_text(), "daemon did not report pausing its input"
            assert not any(i in d.results for i in written), "results during a full outage"

            proxy.configure({})  # endpoint back
            stop.set()
            t.join(120)
            assert not t.is_alive(), "writer still blocked after the endpoint returned"
            missing = d.wait_results(written, timeout=120)
            assert not missing, "%d records without a result after recovery" % len(missing)
            rc = d.close()
            assert rc == 0, "daemon exit %d" % rc
            bad = [d.results[i] for i in written if len(d.results[i]) != 1 or
                   not d.results[i][0].success]
            assert not bad, "%d records failed or answered twice: %s" % (len(bad), bad[:1])
            stored = {kptest.base64.b64decode(u["data"])[:4] for u in kptest.deaggregate(
                [r for _, r in kptest.read_stream(client, "bounded")])}
            lost = [n for n in range(len(written)) if n.to_bytes(4, "big") not in stored]
            assert not lost, "%d records lost, e.g. %s" % (len(lost), lost[:5])
            attempts = max(len(d.results[i][0].attempts) for i in written)
            log("recovered: %d records delivered, 0 lost, up to %d attempts per record" % (
                len(written), attempts))
        finally:
            proxy.stop()
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
