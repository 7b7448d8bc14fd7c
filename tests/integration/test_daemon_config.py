#!/usr/bin/python3
"""Daemon configuration end to end: a KPL .properties file (with aggregation off),
invalid settings rejected at launch with a message naming setting, value and range,
and a shard map read over two ListShards pages with a closed parent shard."""

import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kptest  # noqa: E402
from kptest import log, pb  # noqa: E402

PASSED = 0


def check(cond, what):
    global PASSED
    if not cond:
        raise AssertionError(what)
    PASSED += 1


def launch_with_properties(props_text):
    d = tempfile.mkdtemp(prefix="kp-props-")
    path = os.path.join(d, "producer.properties")
    with open(path, "w") as f:
        f.write(props_text)
    return path


def aggregation_off_from_properties(emu):
    client = kptest.kinesis_client(emu.url)
    kptest.create_stream(client, "props", 3)
    path = launch_with_properties(
        "# KPL-style file\n"
        "KinesisEndpoint = %s\n"
        "Region = us-east-1\n"
        "AggregationEnabled = false\n"
        "CollectionMaxCount = 7\n"
        "RecordMaxBufferedTime = 50\n"
        "MetricsLevel = none\n" % emu.url)
    # Launch through the FIFOs with the properties file and only credentials in argv.
    d = kptest.Daemon(pb.Configuration(), extra_args=["--properties", path], no_config=True)
    ids = d.put_many(("props", "k%d" % i, b"raw-%d" % i, None) for i in range(300))
    check(not d.wait_results(ids, timeout=60), "missing results")
    check(all(d.results[i][0].success for i in ids), "records failed")
    check(d.close() == 0, "daemon exit code")
    rows = kptest.read_stream(client, "props")
    check(len(rows) == 300, "aggregation off: %d Kinesis records for 300 user records" % len(rows))
    check(all(not r["Data"].startswith(b"\xf3\x89\x9a\xc2") for _, r in rows),
          "aggregated records with AggregationEnabled = false")


def rejects(args, needle, what):
    p = subprocess.run([os.path.join(kptest.BIN, "kinesis_producer"), *args],
                       capture_output=True, text=True, timeout=30)
    check(p.returncode == 2, "%s: exit %d, want 2 (%s)" % (what, p.returncode, p.stderr))
    check(needle in p.stderr, "%s: %r does not say %r" % (what, p.stderr, needle))
    log("  %-28s -> %s" % (what, p.stderr.strip().splitlines()[-1]))


def invalid_settings():
    path = launch_with_properties("AggregationMaxSize = 10\n")
    rejects(["-o", "/nonexistent", "-i", "/nonexistent", "--properties", path],
            "AggregationMaxSize", "properties out of range")
    path = launch_with_properties("NoSuchSetting = 1\n")
    rejects(["-o", "/nonexistent", "-i", "/nonexistent", "--properties", path],
            "NoSuchSetting", "unknown setting")
    cfg = pb.Message(id=0, configuration=pb.Configuration(collection_max_count=501))
    rejects(["-o", "/nonexistent", "-i", "/nonexistent", "-c", kptest.hexmsg(cfg)],
            "CollectionMaxCount", "-c out of range")
    rejects(["-o", "/nonexistent", "-i", "/nonexistent", "-c", "ZZ"], "hex", "-c not hex")
    rejects(["-l", "loud", "--fd", "3"], "-l loud", "bad log level")


def paged_shard_map():
    os.environ["SHARD_LIMIT"] = "2000"  # kinesis-local's account limit, read at start
    with kptest.Emulator("kinesis-local") as emu:
        client = kptest.kinesis_client(emu.url, region="us-east-1")
        kptest.create_stream(client, "wide", 1000)
        first = kptest.list_shards(client, "wide")[0]
        lo = int(first["HashKeyRange"]["StartingHashKey"])
        hi = int(first["HashKeyRange"]["EndingHashKey"])
        client.split_shard(StreamName="wide", ShardToSplit=first["ShardId"],
                           NewStartingHashKey=str((lo + hi) // 2))
        for _ in range(600):
            st = client.describe_stream_summary(StreamName="wide")["StreamDescriptionSummary"]
            if st["StreamStatus"] == "ACTIVE":
                break
            kptest.time.sleep(0.05)
        shards = kptest.list_shards(client, "wide")
        check(len(shards) == 1002, "expected 1002 shards after the split, got %d" % len(shards))
        ranges = {s["ShardId"]: (int(s["HashKeyRange"]["StartingHashKey"]),
                                 int(s["HashKeyRange"]["EndingHashKey"])) for s in shards}
        d = kptest.Daemon(kptest.config(emu.url, record_max_buffered_time=100,
                                        request_timeout=60000), level="info")
        # Explicit hash keys inside the split parent's range land on its children.
        recs = [("wide", "k%d" % i, b"w%d" % i, str(lo + (hi - lo) * i // 400)) for i in range(400)]
        recs += [("wide", "p%d" % i, b"p%d" % i, None) for i in range(2000)]
        ids = d.put_many(recs)
        check(not d.wait_results(ids, timeout=180), "missing results")
        rc = d.close()
        check(rc == 0, "daemon exit %d" % rc)
        log("  " + [l for l in d.log_text().splitlines() if "shard map" in l][0].split(": ", 1)[1])
        for (stream, pk, data, ehk), i in zip(recs, ids):
            r = d.results[i][0]
            check(r.success, "record %s failed: %s" % (pk, r))
            a, b = ranges[r.shard_id]
            hk = kptest.hash_key(pk, ehk)
            check(a <= hk <= b, "%s put on %s which does not own %d" % (pk, r.shard_id, hk))
        check(first["ShardId"] not in {d.results[i][0].shard_id for i in ids},
              "records put on the closed parent shard")
        check("1001 open shards" in d.log_text(), "map did not have 1001 open shards")


def metrics_query(emu):
    """MetricsRequest is answered from the daemon's own metrics: by name, cumulative or
    over the last N seconds, at global, stream and shard level."""
    client = kptest.kinesis_client(emu.url)
    kptest.create_stream(client, "metered", 2)
    d = kptest.Daemon(kptest.config(emu.url, record_max_buffered_time=50,
                                    metrics_level="detailed", metrics_granularity="shard"))
    ids = d.put_many(("metered", "m%d" % i, b"x" * 10, None) for i in range(500))
    check(not d.wait_results(ids, timeout=60), "missing results")

    def ask(name, seconds=None):
        mid = d.next_id
        d.next_id += 1
        req = pb.MetricsRequest(name=name)
        if seconds is not None:
            req.seconds = seconds
        d.send_raw(kptest.frame(pb.Message(id=mid, metrics_request=req)))
        deadline = kptest.time.time() + 30
        with d.cond:
            while kptest.time.time() < deadline:
                got = [m for m in d.others if m.source_id == mid]
                if got:
                    return got[0].metrics_response.metrics
                d.cond.wait(1.0)
        raise AssertionError("no MetricsResponse for %s" % name)

    for seconds in (None, 60):
        ms = ask("UserRecordsPut", seconds)
        by_dims = {tuple((x.key, x.value) for x in m.dimensions): m for m in ms}
        check(all(m.name == "UserRecordsPut" for m in ms), "other metrics in a by-name query")
        glob = by_dims.get(())
        check(glob is not None and glob.stats.sum == 500, "global UserRecordsPut %s" % glob)
        stream = by_dims.get((("StreamName", "metered"),))
        check(stream is not None and stream.stats.sum == 500, "stream UserRecordsPut")
        shards = [m for k, m in by_dims.items() if len(k) == 2]
        check(len(shards) == 2 and sum(m.stats.sum for m in shards) == 500,
              "per-shard UserRecordsPut %s" % [(m.dimensions, m.stats.sum) for m in shards])
    data = ask("UserRecordsDataPut")
    check(any(not m.dimensions and m.stats.sum == 5000 for m in data), "UserRecordsDataPut")
    everything = ask("")
    names = {m.name for m in everything}
    for n in ("UserRecordsReceived", "KinesisRecordsPut", "BufferingTime", "RequestTime",
              "UserRecordsPerKinesisRecord"):
        check(n in names, "%s missing from the full answer (%s)" % (n, sorted(names)))
    check(d.close() == 0, "daemon exit code")
    log("  %d metrics in the full answer" % len(everything))


def main():
    with kptest.Emulator("kinesalite") as emu:
        log("properties file, aggregation off")
        aggregation_off_from_properties(emu)
        log("metrics query")
        metrics_query(emu)
    log("invalid settings")
    invalid_settings()
    log("two ListShards pages, closed parent")
    paged_shard_map()
    print("%d passed, 0 failed" % PASSED)


if __name__ == "__main__":
    main()
