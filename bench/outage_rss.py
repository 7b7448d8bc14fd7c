#!/usr/bin/python3
"""Daemon memory through a long outage (issue 5): the endpoint answers every PutRecords
with 503 for OUTAGE seconds while a writer puts 1 KiB records as fast as the daemon
will take them; the daemon's RSS is sampled twice a second. Then the endpoint returns
and we time how long until every record has its result.

    bench/outage_rss.py [--outage 60] [--cap-mib 64] [--record 1024]

Endpoint: kp-sink (bench/sink) behind tests/faults/fault_proxy.py. Prints a markdown
summary for bench/README.md."""

import argparse
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import kptest  # noqa: E402
from test_faults import Proxy  # noqa: E402


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--outage", type=float, default=60)
    ap.add_argument("--cap-mib", type=int, default=64)
    ap.add_argument("--record", type=int, default=1024)
    a = ap.parse_args()

    sink = subprocess.Popen([os.path.join(kptest.BIN, "kp-sink"), "--shards", "4"],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = None
        for _ in range(20):
            line = sink.stdout.readline()
            if line.startswith("PORT "):
                port = int(line.split()[1])
            if line.startswith("READY"):
                break
        assert port, "kp-sink did not start"
        proxy = Proxy("http://127.0.0.1:%d" % port, seed=1)
        try:
            proxy.configure({})
            cap = a.cap_mib * 2**20
            d = kptest.Daemon(kptest.config(proxy.url, record_ttl=3600000,
                                            max_buffered_bytes=cap, request_timeout=60000))
            warm = d.put("outage", "w", b"w")
            assert not d.wait_results([warm], 30), "warm-up failed"
            base_rss = rss_kib(d.proc.pid)
            proxy.configure({"error5xx": 1.0})
            written = []
            stop = threading.Event()
            payload = b"x" * (a.record - 8)

            def writer():
                i = 0
                while not stop.is_set():
                    written.append(d.put("outage", "k%d" % i, i.to_bytes(8, "big") + payload))
                    i += 1

            t = threading.Thread(target=writer, daemon=True)
            t0 = time.time()
            t.start()
            samples = []
            while time.time() - t0 < a.outage:
                samples.append((time.time() - t0, rss_kib(d.proc.pid), len(written)))
                time.sleep(0.5)
            held = len(written)
            proxy.configure({})
            t1 = time.time()
            stop.set()
            t.join(300)
            missing = d.wait_results(written, timeout=600)
            t_drain = time.time() - t1
            rc = d.close()
            ok = sum(1 for i in written if d.results.get(i) and d.results[i][0].success)
        finally:
            proxy.stop()
    finally:
        sink.terminate()
        sink.wait(10)

    peak = max(r for _, r, _ in samples)
    print("## Daemon memory through a %.0f s outage\n" % a.outage)
    print("MaxBufferedBytes %d MiB, %d-byte records, endpoint answering 503 to every "
          "PutRecords, writer putting as fast as the daemon reads.\n" % (a.cap_mib, a.record))
    print("| | |\n|---|---|")
    print("| daemon RSS before the outage | %.1f MiB |" % (base_rss / 1024))
    print("| daemon RSS peak during it | %.1f MiB (cap %d MiB of user data) |" % (
        peak / 1024, a.cap_mib))
    print("| records taken before input stopped | %d (%.1f MiB) |" % (
        held, held * a.record / 2**20))
    print("| RSS at 10 s / 30 s / end | %s |" % " / ".join(
        "%.1f MiB" % (min(samples, key=lambda s: abs(s[0] - x))[1] / 1024)
        for x in (10, 30, a.outage)))
    print("| after the endpoint returned | %d of %d records succeeded, %d without a result, "
          "drained in %.1f s; daemon exit %d |" % (ok, len(written), len(missing), t_drain, rc))


if __name__ == "__main__":
    main()
