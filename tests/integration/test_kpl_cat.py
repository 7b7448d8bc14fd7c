#!/usr/bin/python3
"""kpl-cat against a real kinesalite: a 3-shard stream holding aggregated records
(our encoder, kp-agg-tool, per shard) and raw records is read back exactly, as data
lines and as JSON lines; after a SplitShard and more puts, parents are read to their
end before their children and nothing is lost; --count, --timeout, --max-time, LATEST,
AT_TIMESTAMP, --strict, bad arguments (exit 2) and an unknown stream (exit 1)."""

import base64
import json
import os
import select
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kptest  # noqa: E402

BIN = kptest.BIN
SRC = kptest.SRC
CAT = os.path.join(BIN, "kpl-cat")
AGG = os.path.join(BIN, "kp-agg-tool")
EMU = kptest.EMU
STREAM = "cat"
FAILS = []


def check(cond, what):
    if cond:
        kptest.log("ok   " + what)
    else:
        kptest.log("FAIL " + what)
        FAILS.append(what)


def run_cat(url, *args, timeout=120, env=None):
    t = time.time()
    p = subprocess.run([CAT, "--stream", STREAM, "--endpoint", url, "--dummy-credentials",
                        *args], capture_output=True, timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace"), time.time() - t


def api(url, op, body, env=None):
    out = subprocess.run([EMU, "api", url, op, json.dumps(body)], check=True,
                         capture_output=True, text=True, env=env).stdout
    return json.loads(out) if out.strip() else {}


def wait_active(url, name, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = api(url, "DescribeStreamSummary", {"StreamName": name})
        if st["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            return
        time.sleep(0.05)
    raise AssertionError("stream %s not ACTIVE" % name)


def make_records(tag, n):
    """User records (pk, ehk, data bytes): text data without newlines, varied keys."""
    recs = []
    for i in range(n):
        if i % 97 == 0:
            pk = "ключ-%s-%d \"q\" \\ 键 😀" % (tag, i)
        else:
            pk = "%s-user-%d" % (tag, i)
        ehk = str((i * 7919 * 2**100) % 2**128) if i % 31 == 0 else None
        data = ('{"id":"%s-%d","text":"line %d \\"quoted\\" tab\\t é ✓"}' % (tag, i, i)).encode()
        if i % 211 == 5:
            data = b""
        recs.append((pk, ehk, data))
    return recs


def put_aggregated(url, recs, work, name):
    """Per shard (current open shards), aggregated with our encoder, put via PutRecords."""
    shards = api(url, "ListShards", {"StreamName": STREAM})["Shards"]
    spec = os.path.join(work, name + ".spec.jsonl")
    with open(spec, "w") as f:
        for pk, ehk, data in recs:
            f.write(json.dumps({"pk": pk, "ehk": ehk, "data": base64.b64encode(data).decode()},
                               ensure_ascii=False) + "\n")
    with open(os.path.join(work, name + ".shards.json"), "w") as f:
        json.dump(shards, f)
    prefix = os.path.join(work, name + ".spec-")
    with open(spec) as fin:
        subprocess.run(["node", os.path.join(SRC, "tools", "shard_split.js"),
                        os.path.join(work, name + ".shards.json"), prefix], stdin=fin,
                       check=True, stdout=subprocess.DEVNULL)
    kin = []
    for s in shards:
        path = prefix + s["ShardId"] + ".jsonl"
        if not os.path.exists(path):
            continue
        with open(path) as fin:
            out = subprocess.run([AGG, "--max-size", "8000"], stdin=fin, check=True,
                                 capture_output=True).stdout.decode()
        kin += [l for l in out.splitlines() if l]
    return put_kinesis(url, kin)


def put_raw(url, recs):
    lines = []
    for pk, ehk, data in recs:
        d = {"partitionKey": pk, "data": base64.b64encode(data).decode()}
        if ehk is not None:
            d["explicitHashKey"] = ehk
        lines.append(json.dumps(d, ensure_ascii=False))
    return put_kinesis(url, lines)


def put_kinesis(url, lines):
    out = subprocess.run(["node", os.path.join(SRC, "tools", "kinesis_put.js"), url, STREAM],
                         input="\n".join(lines) + "\n", check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)


def expected(agg, raw):
    """Multiset of (pk, ehk, hashKey, data b64): raw records come back without their EHK
    (GetRecords does not return it), so their hash key is MD5(pk)."""
    exp = []
    for pk, ehk, data in agg:
        exp.append((pk, ehk, str(kptest.hash_key(pk, ehk)), base64.b64encode(data).decode()))
    for pk, _, data in raw:
        exp.append((pk, None, str(kptest.hash_key(pk)), base64.b64encode(data).decode()))
    return sorted(exp, key=repr)


def parse_json_lines(out):
    return [json.loads(l) for l in out.decode().splitlines()]


def got_set(rows):
    return sorted(((r["partitionKey"], r["explicitHashKey"], r["hashKey"], r["data"])
                   for r in rows), key=repr)


def shard_of(shards, hk):
    hk = int(hk)
    for s in shards:
        if (int(s["HashKeyRange"]["StartingHashKey"]) <= hk <=
                int(s["HashKeyRange"]["EndingHashKey"])):
            yield s["ShardId"]


def check_json_rows(rows, shards, what, raw_pks):
    ids = {s["ShardId"] for s in shards}
    check(all(r["shardId"] in ids for r in rows), what + ": every shardId is a listed shard")
    # Within a shard: (sequenceNumber, subSequenceNumber) strictly increasing.
    last, ok = {}, True
    for r in rows:
        key = (int(r["sequenceNumber"]), r["subSequenceNumber"])
        if r["shardId"] in last and key <= last[r["shardId"]]:
            ok = False
        last[r["shardId"]] = key
    check(ok, what + ": per shard, records in sequence order")
    # Aggregated user records sit in the shard that owns their hash key (raw records
    # put with an EHK come back without it, so their hash key says nothing).
    agg_ok = all(r["shardId"] in set(shard_of(shards, r["hashKey"]))
                 for r in rows if r["partitionKey"] not in raw_pks)
    check(agg_ok, what + ": aggregated user records are in their hash key's shard")


def tls_checks(work):
    """https against kinesis-local with a test CA: --ca-file, CA_FILE, --insecure, and an
    untrusted certificate failing at once (not retried)."""
    ca, crt, key = kptest.make_test_ca(work)
    base = {k: v for k, v in os.environ.items() if k not in ("CA_FILE", "CA_DIR")}
    with kptest.Emulator("kinesis-local", ["--tls-cert", crt, "--tls-key", key]) as emu:
        env = dict(base, KP_EMU_CACERT=ca)
        subprocess.run([EMU, "create-stream", emu.tls_url, "tls", "1"], check=True, env=env,
                       capture_output=True)
        for i in range(3):
            api(emu.tls_url, "PutRecord", {"StreamName": "tls", "PartitionKey": "k%d" % i,
                                           "Data": base64.b64encode(b"tls %d" % i).decode()},
                env=env)
        want = [b"tls 0", b"tls 1", b"tls 2"]
        args = [CAT, "--stream", "tls", "--endpoint", emu.tls_url, "--dummy-credentials"]
        p = subprocess.run(args + ["--ca-file", ca], capture_output=True, env=base, timeout=60)
        check(p.returncode == 0 and p.stdout.splitlines() == want,
              "https with --ca-file: 3 records (rc %d %s)" % (p.returncode, p.stderr[-200:]))
        p = subprocess.run(args, capture_output=True, env=dict(base, CA_FILE=ca), timeout=60)
        check(p.returncode == 0 and p.stdout.splitlines() == want, "https with CA_FILE")
        p = subprocess.run(args + ["--insecure"], capture_output=True, env=base, timeout=60)
        check(p.returncode == 0 and p.stdout.splitlines() == want, "https with --insecure")
        t = time.time()
        p = subprocess.run(args, capture_output=True, env=base, timeout=60)
        check(p.returncode == 1 and b"certif" in p.stderr and time.time() - t < 10,
              "https, untrusted certificate: exit 1 at once (%.1f s: %s)" %
              (time.time() - t, p.stderr.decode().strip()[-200:]))


def main():
    work = tempfile.mkdtemp(prefix="kp-cat-test-")
    emu = kptest.Emulator("kinesalite")
    try:
        url = emu.url
        subprocess.run([EMU, "create-stream", url, STREAM, "3"], check=True)

        # ---- 1. aggregated + raw records, read back exactly ------------------------
        agg1 = make_records("a", 3000)
        raw1 = make_records("r", 40)
        s1 = put_aggregated(url, agg1, work, "b1")
        s2 = put_raw(url, raw1)
        kin1 = s1["records"] + s2["records"]
        kptest.log("put %d user records in %d Kinesis records" % (len(agg1) + len(raw1), kin1))
        exp1 = expected(agg1, raw1)

        rc, out, err, _ = run_cat(url, "--json", "--stats")
        rows = parse_json_lines(out)
        check(rc == 0, "json read exits 0 (rc %d, %s)" % (rc, err.strip()[-300:]))
        check(len(rows) == len(exp1), "json read: %d user records (want %d)" %
              (len(rows), len(exp1)))
        check(got_set(rows) == exp1, "json read: keys, hash keys and data match exactly")
        stats = json.loads(err.strip().splitlines()[-1])
        check(stats["kinesisRecords"] == kin1, "stats: %d Kinesis records" % stats["kinesisRecords"])
        shards1 = api(url, "ListShards", {"StreamName": STREAM})["Shards"]
        check_json_rows(rows, shards1, "json read", {r[0] for r in raw1})

        rc, out, err, _ = run_cat(url)
        lines = out.split(b"\n")
        check(rc == 0 and lines[-1] == b"", "data read exits 0, output ends with a newline")
        want = sorted(base64.b64decode(e[3]) for e in exp1)
        check(sorted(lines[:-1]) == want, "data read: raw data lines match exactly (%d)" %
              (len(lines) - 1))

        # ---- 2. split shard 0, put more: parents before children ------------------
        # First one raw record into every shard (by EHK), the marker for AT_TIMESTAMP
        # below: kinesalite never answers an AT_TIMESTAMP GetShardIterator on a shard
        # with no record at or after the timestamp.
        time.sleep(0.01)  # arrival times are in ms: keep batch 1 strictly before t_mark
        t_mark = int(time.time() * 1000) / 1000.0  # arrival times are whole ms
        mid = [("mid-%d" % i, s["HashKeyRange"]["StartingHashKey"], b"mid record %d" % i)
               for i, s in enumerate(shards1)]
        put_raw(url, mid)
        sh0 = shards1[0]
        lo, hi = (int(sh0["HashKeyRange"]["StartingHashKey"]),
                  int(sh0["HashKeyRange"]["EndingHashKey"]))
        api(url, "SplitShard", {"StreamName": STREAM, "ShardToSplit": sh0["ShardId"],
                                "NewStartingHashKey": str((lo + hi) // 2)})
        wait_active(url, STREAM)
        shards2 = api(url, "ListShards", {"StreamName": STREAM})["Shards"]
        children = [s["ShardId"] for s in shards2 if s.get("ParentShardId") == sh0["ShardId"]]
        check(len(children) == 2, "split: two children %s" % children)
        agg2 = make_records("b", 2000)
        raw2 = make_records("s", 30)
        put_aggregated(url, agg2, work, "b2")
        put_raw(url, raw2)
        exp2 = expected(agg1 + agg2, raw1 + mid + raw2)

        rc, out, err, _ = run_cat(url, "--json")
        rows = parse_json_lines(out)
        check(rc == 0, "after split: exits 0 (%s)" % err.strip()[-300:])
        check(got_set(rows) == exp2, "after split: all %d user records, exactly (got %d)" %
              (len(exp2), len(rows)))
        order = [r["shardId"] for r in rows]
        last_parent = max(i for i, s in enumerate(order) if s == sh0["ShardId"])
        for c in children:
            idx = [i for i, s in enumerate(order) if s == c]
            check(bool(idx), "after split: child %s has records" % c)
            if idx:
                check(last_parent < idx[0], "after split: parent %s read to its end before %s"
                      % (sh0["ShardId"], c))
        check_json_rows(rows, shards2, "after split", {r[0] for r in raw1 + mid + raw2})

        # ---- 3. --count, --timeout, --max-time -------------------------------------
        total = len(exp2)
        rc, out, err, _ = run_cat(url, "--count", "10")
        check(rc == 0 and out.count(b"\n") == 10, "--count 10: 10 lines, exit 0 (rc %d)" % rc)
        rc, out, err, dt = run_cat(url, "--count", str(total + 5), "--timeout", "1.5")
        check(rc == 3 and out.count(b"\n") == total,
              "--count beyond the stream + --timeout 1.5: all %d lines, exit 3 (rc %d, %d lines)"
              % (total, rc, out.count(b"\n")))
        check("--timeout expired" in err, "--timeout message: %s" % err.strip()[-200:])
        check(1.5 <= dt < 15, "--timeout 1.5 took %.1f s" % dt)
        rc, out, err, dt = run_cat(url, "--follow", "--timeout", "1")
        check(rc == 0 and out.count(b"\n") == total,
              "--follow --timeout 1: all lines, exit 0 (rc %d)" % rc)
        rc, out, err, dt = run_cat(url, "--follow", "--max-time", "2")
        check(rc == 0 and out.count(b"\n") == total and 2 <= dt < 15,
              "--follow --max-time 2: all lines, exit 0 after %.1f s (rc %d)" % (dt, rc))
        rc, out, err, dt = run_cat(url, "--max-time", "0.01")
        check(rc == 3, "--max-time before catching up: exit 3 (rc %d)" % rc)

        # ---- 4. LATEST and AT_TIMESTAMP ---------------------------------------------
        rc, out, err, _ = run_cat(url, "--iterator", "LATEST")
        check(rc == 0 and out == b"", "LATEST without --follow: nothing, exit 0")
        open_shards = [s for s in shards2 if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
        p = subprocess.Popen([CAT, "--stream", STREAM, "--endpoint", url, "--dummy-credentials",
                              "--iterator", "LATEST", "--count", "3", "--timeout", "30",
                              "--log-level", "debug"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        try:
            seen, buf, deadline = 0, b"", time.time() + 30
            while seen < len(open_shards) and time.time() < deadline:
                r, _, _ = select.select([p.stderr], [], [], deadline - time.time())
                if not r:
                    break
                chunk = os.read(p.stderr.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                seen = buf.count(b": iterator LATEST")
            check(seen == len(open_shards), "LATEST: iterators for the %d open shards" % seen)
            put_raw(url, [("late-%d" % i, None, b"late record %d" % i) for i in range(3)])
            out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        check(p.returncode == 0 and sorted(out.splitlines()) ==
              [b"late record 0", b"late record 1", b"late record 2"],
              "LATEST --count 3: exactly the 3 records put afterwards (rc %d)" % p.returncode)

        want = sorted([base64.b64decode(e[3]) for e in expected(agg2, mid + raw2)] +
                      [b"late record %d" % i for i in range(3)])
        rc, out, err, _ = run_cat(url, "--timestamp", "%.3f" % t_mark, timeout=60)
        check(rc == 0 and sorted(out.split(b"\n")[:-1]) == want,
              "AT_TIMESTAMP (epoch): exactly the %d records put after it (got %d, rc %d)"
              % (len(want), out.count(b"\n"), rc))
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t_mark)) + \
            ".%03dZ" % int((t_mark % 1) * 1000)
        rc, out, err, _ = run_cat(url, "--iterator", "AT_TIMESTAMP", "--timestamp", iso,
                                  timeout=60)
        check(rc == 0 and sorted(out.split(b"\n")[:-1]) == want,
              "AT_TIMESTAMP (ISO-8601 %s): the same records (rc %d)" % (iso, rc))

        # ---- 5. errors ---------------------------------------------------------------
        rc, out, err, _ = run_cat(url, "--stream", "no-such-stream")
        check(rc == 1 and "stream 'no-such-stream' not found" in err,
              "unknown stream: exit 1, clear message (rc %d: %s)" % (rc, err.strip()))
        bad = [
            [CAT],
            [CAT, "--stream", STREAM, "--endpoint", url, "--dummy-credentials", "--count", "0"],
            [CAT, "--stream", STREAM, "--endpoint", url, "--dummy-credentials", "--count", "x"],
            [CAT, "--stream", STREAM, "--endpoint", url, "--dummy-credentials", "--iterator", "X"],
            [CAT, "--stream", STREAM, "--endpoint", url, "--dummy-credentials", "--iterator",
             "AT_TIMESTAMP"],
            [CAT, "--stream", STREAM, "--endpoint", url, "--dummy-credentials", "--timestamp",
             "yesterday"],
            [CAT, "--stream", STREAM, "--endpoint", url, "--dummy-credentials", "--iterator",
             "LATEST", "--timestamp", "1"],
            [CAT, "--stream", STREAM, "--endpoint", url, "--dummy-credentials", "--timeout", "-1"],
            [CAT, "--stream", STREAM, "--endpoint", url, "--dummy-credentials", "--limit", "10001"],
            [CAT, "--stream", STREAM, "--endpoint", url + "/x", "--dummy-credentials"],
            [CAT, "--stream", STREAM, "--endpoint", url, "--dummy-credentials", "--bogus"],
            [CAT, "--stream", STREAM, "--endpoint", url, "--dummy-credentials", "extra"],
        ]
        for argv in bad:
            p = subprocess.run(argv, capture_output=True, timeout=30)
            check(p.returncode == 2 and p.stderr and not p.stdout,
                  "bad arguments exit 2: %s (rc %d)" % (" ".join(argv[1:])[-60:], p.returncode))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        p = subprocess.run([CAT, "--stream", STREAM, "--endpoint", url], capture_output=True,
                           env=env, timeout=30)
        check(p.returncode == 2 and b"no credentials" in p.stderr, "no credentials: exit 2")
        env.update(AWS_ACCESS_KEY_ID="AKIDENV", AWS_SECRET_ACCESS_KEY="secret",
                   AWS_SESSION_TOKEN="token")
        p = subprocess.run([CAT, "--stream", STREAM, "--endpoint", url, "--count", "1"],
                           capture_output=True, env=env, timeout=30)
        check(p.returncode == 0 and p.stdout.count(b"\n") == 1,
              "credentials from AWS_* (with a session token)")

        # ---- 6. corrupt aggregate: lenient passes it through, --strict fails ----------
        subprocess.run([EMU, "create-stream", url, "corrupt", "1"], check=True)
        good = subprocess.run([AGG], input=b'{"pk":"a","data":"eA=="}\n{"pk":"b","data":"eQ=="}\n',
                              capture_output=True, check=True).stdout
        blob = bytearray(base64.b64decode(json.loads(good.splitlines()[0])["data"]))
        blob[-1] ^= 0xFF  # break the MD5 trailer
        api(url, "PutRecord", {"StreamName": "corrupt", "PartitionKey": "c",
                               "Data": base64.b64encode(bytes(blob)).decode()})
        p = subprocess.run([CAT, "--stream", "corrupt", "--endpoint", url, "--dummy-credentials",
                            "--json"], capture_output=True, timeout=60)
        rows = parse_json_lines(p.stdout)
        check(p.returncode == 0 and len(rows) == 1 and
              base64.b64decode(rows[0]["data"]) == bytes(blob) and b"corrupt" in p.stderr,
              "lenient: a corrupt aggregate is printed as one record, with a warning")
        p = subprocess.run([CAT, "--stream", "corrupt", "--endpoint", url, "--dummy-credentials",
                            "--strict"], capture_output=True, timeout=60)
        check(p.returncode == 1 and b"MD5" in p.stderr and not p.stdout,
              "--strict: a corrupt aggregate exits 1 (rc %d: %s)" %
              (p.returncode, p.stderr.decode().strip()))
    finally:
        emu.stop()
        subprocess.run(["rm", "-rf", emu.dir])
    try:
        tls_checks(work)
    finally:
        subprocess.run(["rm", "-rf", work])
    if FAILS:
        kptest.log("%d check(s) failed" % len(FAILS))
        return 1
    kptest.log("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
