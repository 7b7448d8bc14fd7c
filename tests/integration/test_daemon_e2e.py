#!/usr/bin/python3
"""The daemon end to end against real emulators: 100,000+ user records over several
streams and shard counts, put through the KPL pipe protocol, every shard read back,
de-aggregated with our kpl-deagg, and checked record by record.

Each emulator runs twice: PutRecords in JSON (the default) and in CBOR
(RequestEncoding=cbor, and with results in PutRecordResultBatch messages as our client
library asks for them, ResultBatches). kinesalite keeps CBOR-put data in a form botocore cannot parse,
so that run reads back with kptest.read_stream_raw.

Usage: test_daemon_e2e.py [kinesalite|kinesis-local ...] (default: both)
Env: KP_E2E_RECORDS (default 100000; the CBOR runs use a third), KP_E2E_SEED."""

import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kptest  # noqa: E402
from kptest import log  # noqa: E402

STREAMS = [("e2e-one", 1), ("e2e-four", 4), ("e2e-seven", 7)]


def make_records(n, rng):
    """(stream, pk, data, ehk) with unicode keys, some explicit hash keys, sizes 0..600."""
    alphabet = "abcxyz0123456789-_ éü漢字🙂"
    recs = []
    for i in range(n):
        stream = STREAMS[i % len(STREAMS)][0]
        pk = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24)))
        ehk = str(rng.randrange(2**128)) if rng.random() < 0.1 else None
        size = rng.choice([0, 1, rng.randint(1, 120), rng.randint(100, 600)])
        data = i.to_bytes(4, "big") + rng.randbytes(max(0, size - 4))
        recs.append((stream, pk, data[:size] if size >= 4 else i.to_bytes(4, "big"), ehk))
    return recs


def run(kind, n, seed, encoding):
    rng = random.Random(seed)
    with kptest.Emulator(kind) as emu:
        client = kptest.kinesis_client(emu.url)
        for name, shards in STREAMS:
            kptest.create_stream(client, name, shards)
        records = make_records(n, rng)
        # kinesis-local slows down as it fills: a longer RequestTimeout avoids retries
        # (and so duplicates) that say nothing about us.
        d = kptest.Daemon(kptest.config(emu.url, record_max_buffered_time=200, request_timeout=60000,
                                        record_ttl=120000, request_encoding=encoding,
                                        result_batches=encoding == "cbor"),
                          level="info")
        t0 = time.time()
        ids = d.put_many(records)
        missing = d.wait_results(ids, timeout=300)
        t_put = time.time() - t0
        rc = d.close()
        assert not missing, "%d records got no result (first ids %s)\n%s" % (
            len(missing), missing[:5], d.log_text()[-3000:])
        assert rc == 0, "daemon exited %d\n%s" % (rc, d.log_text()[-3000:])
        dup_results = [i for i in ids if len(d.results[i]) != 1]
        assert not dup_results, "ids with more than one result: %s" % dup_results[:5]
        failed = [(i, d.results[i][0]) for i in ids if not d.results[i][0].success]
        assert not failed, "%d records failed; first: %s" % (len(failed), failed[0][1])
        if encoding == "cbor":
            assert d.batches > 0, "no PutRecordResultBatch although negotiated"
        else:
            assert d.batches == 0, "PutRecordResultBatch sent without being negotiated"
        log("%s/%s: %d records put in %.1fs (%.0f/s), %d result batches" % (
            kind, encoding, n, t_put, n / t_put, d.batches))

        # Read every shard back and match user records by their 4-byte id prefix.
        by_id = {}
        kinesis_records = 0
        for name, _ in STREAMS:
            if kind == "kinesalite" and encoding == "cbor":
                rows = kptest.read_stream_raw(client, emu.url, name)
            else:
                rows = kptest.read_stream(client, name)
            kinesis_records += len(rows)
            by_shard = {}
            for sh, rec in rows:
                by_shard.setdefault(sh["ShardId"], (sh, []))[1].append(rec)
            for shard_id, (sh, recs) in by_shard.items():
                lo = int(sh["HashKeyRange"]["StartingHashKey"])
                hi = int(sh["HashKeyRange"]["EndingHashKey"])
                for u in kptest.deaggregate(recs, strict=True):
                    data = kptest.base64.b64decode(u["data"])
                    rid = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
                    assert rid is not None and rid < n, "unexpected user record %r" % u
                    hk = int(u["hashKey"])
                    assert lo <= hk <= hi, "record %d (hash key %d) in %s [%d, %d]" % (
                        rid, hk, shard_id, lo, hi)
                    by_id.setdefault(rid, []).append((name, shard_id, u, data))
        lost, wrong, dups = [], [], 0
        for i, (stream, pk, data, ehk) in enumerate(records):
            got = by_id.get(i)
            if not got:
                lost.append(i)
                continue
            dups += len(got) - 1
            name, shard_id, u, gdata = got[0]
            res = d.results[ids[i]][0]
            if (name != stream or gdata != data or u["partitionKey"] != pk
                    or u["explicitHashKey"] != ehk or int(u["hashKey"]) != kptest.hash_key(pk, ehk)
                    or res.shard_id != shard_id):
                wrong.append((i, stream, pk, ehk, name, shard_id, res.shard_id, u))
        assert not lost, "%d records lost, e.g. %s" % (len(lost), lost[:10])
        assert not wrong, "%d records differ, e.g. %s" % (len(wrong), wrong[:3])
        log("daemon: " + " | ".join(l for l in d.log_text().splitlines()
                                    if "exiting" in l or "WARN" in l.upper())[-2000:])
        log("%s/%s: read back %d user records in %d Kinesis records (ratio %.1f), %d duplicates"
            % (kind, encoding, n, kinesis_records, n / max(1, kinesis_records), dups))


def main():
    kinds = sys.argv[1:] or ["kinesalite", "kinesis-local"]
    n = int(os.environ.get("KP_E2E_RECORDS", "100000"))
    seed = int(os.environ.get("KP_E2E_SEED", str(random.randrange(2**32))))
    log("seed %d" % seed)
    for kind in kinds:
        run(kind, n, seed, "json")
        run(kind, max(1000, n // 3), seed + 1, "cbor")
    print("%d passed, 0 failed" % (2 * len(kinds)))


if __name__ == "__main__":
    main()
