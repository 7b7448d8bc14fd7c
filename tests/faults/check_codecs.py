#!/usr/bin/python3
"""Self-check of fault_proxy.py's two encodings (JSON 1.1 and CBOR 1.1) against a real
kinesalite on 127.0.0.1: for each encoding, PutRecords straight through, per-record
failures spliced in (ProvisionedThroughputExceeded, whose message needs a ListShards
sub-request), request-level errors made by the proxy, the upstream's own errors passed
through, fake successes (silent_drop), truncated answers, a ListShards pass-through, and
the user-record counting of KPL aggregates; then every stored record is read back from
kinesalite directly and compared byte for byte with what was forwarded.

    check_codecs.py          (prints "ok" and exits 0, or the failures and exits 1)

Starts kinesalite (tools/emulator/emulator.sh) and the proxy, stops both by PID."""

import base64
import hashlib
import http.client
import json
import os
import select
import subprocess
import sys
import time

import cbor2

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
EMU = os.path.join(SRC, "tools", "emulator", "emulator.sh")
PROXY = os.path.join(HERE, "fault_proxy.py")
JSON_CT = "application/x-amz-json-1.1"
CBOR_CT = "application/x-amz-cbor-1.1"
MAGIC = b"\xf3\x89\x9a\xc2"
STREAM = "codec-check"
PROBLEMS = []


def check(cond, what):
    if not cond:
        PROBLEMS.append(what)
        print("FAIL: " + what, file=sys.stderr, flush=True)
    return cond


def varint(n):
    out = b""
    while True:
        if n < 0x80:
            return out + bytes([n])
        out += bytes([0x80 | (n & 0x7F)])
        n >>= 7


def aggregate(n, tag):
    """A KPL aggregate of n user records (partition key table of one)."""
    def field(num, b):
        return varint(num << 3 | 2) + varint(len(b)) + b
    body = field(1, b"pk")
    for i in range(n):
        body += field(3, varint(1 << 3 | 0) + varint(0) + field(3, b"agg-%s-%d" % (tag, i)))
    return MAGIC + body + hashlib.md5(body).digest()


def call(port, op, obj, ctype, raw=None):
    """One Kinesis call -> (status, content-type, raw body, decoded body or None)."""
    if raw is None:
        raw = cbor2.dumps(obj) if ctype == CBOR_CT else json.dumps(obj).encode()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("POST", "/", body=raw, headers={
            "Content-Type": ctype, "X-Amz-Target": "Kinesis_20131202." + op,
            "X-Amz-Date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
            "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/"
                             "kinesis/aws4_request, SignedHeaders=host;x-amz-date, "
                             "Signature=00", "Connection": "close"})
        r = c.getresponse()
        body = r.read()
        rct = r.getheader("Content-Type")
    finally:
        c.close()
    try:
        dec = cbor2.loads(body) if rct == CBOR_CT else json.loads(body)
    except Exception:
        dec = None
    return r.status, rct, body, dec


def control(port, method, path, obj=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, path, body=json.dumps(obj).encode() if obj is not None else None)
        r = c.getresponse()
        body = r.read()
        check(r.status == 200 and r.getheader("Content-Type") == "application/json",
              "control %s %s -> %d %s" % (method, path, r.status, r.getheader("Content-Type")))
        return json.loads(body)
    finally:
        c.close()


def records(ctype, tag, n):
    """n PutRecords entries (entry 0 a 3-record aggregate) and their raw Data."""
    datas = [aggregate(3, ("%s-%s" % (ctype[-8:], tag)).encode())] + [("%s-%s-%d-" % (ctype[-8:], tag, i)).encode() + bytes(range(256))
                              for i in range(1, n)]
    recs = [{"PartitionKey": "pk-%s-%d" % (tag, i),
             "Data": d if ctype == CBOR_CT else base64.b64encode(d).decode()}
            for i, d in enumerate(datas)]
    if n > 1:
        recs[1]["ExplicitHashKey"] = str(2**128 - 1)
    return recs, datas


def run(port, ctype, stored):
    name = "CBOR" if ctype == CBOR_CT else "JSON"

    def put(tag, n=8, stream=STREAM, faults=None):
        control(port, "POST", "/__proxy/reset", {})
        control(port, "POST", "/__proxy/config", dict(OFF, **(faults or {})))
        recs, datas = records(ctype, tag, n)
        st, rct, raw, dec = call(port, "PutRecords", {"StreamName": stream, "Records": recs},
                                 ctype)
        return st, rct, raw, dec, datas, control(port, "GET", "/__proxy/stats")

    # 1. straight through
    st, rct, _, dec, datas, stats = put("plain")
    if check(st == 200 and rct == ctype and dec and dec.get("FailedRecordCount") == 0,
             "%s plain: %s %s %r" % (name, st, rct, dec)):
        check(all("SequenceNumber" in r and "ShardId" in r for r in dec["Records"]),
              "%s plain: records %r" % (name, dec["Records"]))
        stored.update(datas)

    # 2. per-record failures spliced in, every 2nd record; PTE needs ListShards (sub-request)
    for code in ("ProvisionedThroughputExceededException", "InternalFailure"):
        st, rct, _, dec, datas, stats = put("fail-" + code[:4], faults={
            "record_fail": "every:2", "record_fail_codes": [code]})
        if not check(st == 200 and rct == ctype and dec is not None,
                     "%s record_fail %s: %s %s %r" % (name, code, st, rct, dec)):
            continue
        recs = dec["Records"]
        check(dec["FailedRecordCount"] == 4 and len(recs) == 8,
              "%s record_fail: FailedRecordCount %r" % (name, dec["FailedRecordCount"]))
        for i, r in enumerate(recs):
            if i % 2:
                check(r.get("ErrorCode") == code, "%s record_fail: rec %d %r" % (name, i, r))
                if code.startswith("Provisioned"):
                    check("shardId-0000000000" in r.get("ErrorMessage", ""),
                          "%s record_fail: PTE message %r" % (name, r))
            else:
                check("SequenceNumber" in r, "%s record_fail: rec %d %r" % (name, i, r))
                stored.add(datas[i])
        kind = "record:" + code
        check(stats["events"].get(kind) == 4 and stats["kinesis_records"].get(kind) == 4
              and stats["user_records"].get(kind) == 4 and stats["codes"].get(kind) == code,
              "%s record_fail stats %r" % (name, stats))
        check(stats["requests"].get("PutRecords") == 1, "%s stats requests %r"
              % (name, stats["requests"]))

    # 3. the aggregate counted through (record 0 fails: every:1 on the first only)
    st, rct, _, dec, datas, stats = put("agg", n=1, faults={"record_fail": 1.0,
                                                           "record_fail_codes": ["InternalFailure"]})
    check(stats["user_records"].get("record:InternalFailure") == 3,
          "%s aggregate not counted through: %r" % (name, stats["user_records"]))

    # 4. request-level errors made by the proxy, in the request's encoding
    for faults, status, typ in (({"throttle": 1.0, "throttle_codes": ["LimitExceededException"]},
                                 400, "LimitExceededException"),
                                ({"error5xx": 1.0, "error5xx_codes": [[503, "ServiceUnavailable"]]},
                                 503, "ServiceUnavailable"),
                                ({"permanent": {STREAM: "ResourceNotFoundException"}}, 400,
                                 "ResourceNotFoundException"),
                                ({"require_akid": "OTHER"}, 400, "ExpiredTokenException")):
        st, rct, _, dec, _, stats = put("err", faults=faults)
        check(st == status and rct == ctype and isinstance(dec, dict)
              and dec.get("__type") == typ and isinstance(dec.get("message"), str),
              "%s %s: %s %s %r" % (name, typ, st, rct, dec))
        check(sum(stats["user_records"].values()) == 10, "%s %s counts %r"
              % (name, typ, stats["user_records"]))

    # 5. the upstream's own error passed through (no such stream), in its encoding
    st, rct, _, dec, _, _ = put("nostream", stream="no-such-stream")
    check(st == 400 and rct == ctype and isinstance(dec, dict)
          and dec.get("__type") == "ResourceNotFoundException",
          "%s upstream error: %s %s %r" % (name, st, rct, dec))

    # 6. fake successes on the right shard (silent_drop): shape of a real answer
    st, rct, _, dec, datas, stats = put("silent", faults={"silent_drop": "every:4"})
    if check(st == 200 and rct == ctype and dec and dec["FailedRecordCount"] == 0,
             "%s silent_drop: %s %s %r" % (name, st, rct, dec)):
        check(all(str(r.get("ShardId", "")).startswith("shardId-") for r in dec["Records"]),
              "%s silent_drop records %r" % (name, dec["Records"]))
        stored.update(d for i, d in enumerate(datas) if (i + 1) % 4)
        check(stats["events"].get("silent_drop") == 2, "%s silent_drop stats %r"
              % (name, stats["events"]))

    # 7. truncated answer (forwarded, landed)
    st, rct, raw, dec, datas, stats = put("corrupt", faults={"corrupt_after": 1.0})
    check(st == 200 and rct == ctype and dec is None and raw,
          "%s corrupt_after: %s %s %r" % (name, st, rct, dec))
    check(stats["landed"].get("corrupt_after") == 10, "%s corrupt_after landed %r"
          % (name, stats["landed"]))
    stored.update(datas)

    # 8. a dropped request still counts its records (drop_partial decodes the body)
    try:
        put("drop", faults={"drop_partial": 1.0})
        check(False, "%s drop_partial answered" % name)
    except (ConnectionError, http.client.HTTPException):
        pass
    stats = control(port, "GET", "/__proxy/stats")
    check(stats["user_records"].get("drop_partial") == 10, "%s drop_partial counts %r"
          % (name, stats["user_records"]))

    # 9. ListShards passed through (and faulted) in the request's encoding
    control(port, "POST", "/__proxy/config", dict(OFF))
    st, rct, _, dec, = call(port, "ListShards", {"StreamName": STREAM}, ctype)[:4]
    check(st == 200 and rct == ctype and dec and len(dec.get("Shards", [])) == 2,
          "%s ListShards: %s %s %r" % (name, st, rct, dec))
    control(port, "POST", "/__proxy/config", {"fault_ops": ["ListShards"], "throttle": 1.0})
    st, rct, _, dec = call(port, "ListShards", {"StreamName": STREAM}, ctype)
    check(st == 400 and rct == ctype and dec and dec.get("__type") in
          ("LimitExceededException", "ThrottlingException"),
          "%s ListShards throttle: %s %s %r" % (name, st, rct, dec))

    # 10. a body that is not of its Content-Type is passed on as is (the upstream says no)
    control(port, "POST", "/__proxy/config", dict(OFF))
    st, rct, _, dec = call(port, "PutRecords", None, ctype, raw=b"\xff\xfe not a body")
    check(st == 400 and rct == ctype and dec and dec.get("__type") == "SerializationException",
          "%s garbage: %s %s %r" % (name, st, rct, dec))


OFF = {"record_fail": 0, "throttle": 0, "error5xx": 0, "latency": 0, "drop_before": 0,
       "drop_partial": 0, "drop_after": 0, "slow_after": 0, "corrupt_after": 0,
       "close_after_response": 0, "idle_close_ms": 0, "permanent": {}, "require_akid": "",
       "silent_drop": 0, "silent_dup": 0, "fault_ops": ["PutRecords"]}


def stored_data(d):
    """kinesalite keeps Data as it came: base64 text from JSON, a Buffer from CBOR, which
    its JSON GetRecords then serialises as {"type": "Buffer", "data": [bytes]}."""
    if isinstance(d, dict) and d.get("type") == "Buffer":
        return bytes(d["data"])
    return base64.b64decode(d)


def read_back(port):
    out = []
    for sh in call(port, "ListShards", {"StreamName": STREAM}, JSON_CT)[3]["Shards"]:
        it = call(port, "GetShardIterator", {"StreamName": STREAM, "ShardId": sh["ShardId"],
                                             "ShardIteratorType": "TRIM_HORIZON"},
                  JSON_CT)[3]["ShardIterator"]
        while it:
            r = call(port, "GetRecords", {"ShardIterator": it, "Limit": 10000}, JSON_CT)[3]
            out += [stored_data(x["Data"]) for x in r["Records"]]
            if not r["Records"]:
                break
            it = r.get("NextShardIterator")
    return out


def main():
    env = {}
    out = subprocess.run([EMU, "start", "kinesalite"], check=True, capture_output=True,
                         text=True).stdout
    for tok in out.replace("export", " ").split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            env[k] = v
    emu_pid, emu_port = int(env["KP_EMU_PID"]), int(env["KP_EMU_PORT"])
    proxy = None
    try:
        subprocess.run([EMU, "create-stream", env["KP_EMU_URL"], STREAM, "2"], check=True)
        proxy = subprocess.Popen(["/usr/bin/python3", PROXY, "--upstream", env["KP_EMU_URL"],
                                  "--seed", "1"], stdout=subprocess.PIPE)
        r, _, _ = select.select([proxy.stdout], [], [], 15)
        line = proxy.stdout.readline().decode() if r else ""
        if not line.startswith("PORT "):
            raise SystemExit("fault_proxy did not start: %r" % line)
        port = int(line.split()[1])
        stored = set()
        for ctype in (JSON_CT, CBOR_CT):
            run(port, ctype, stored)
        got = read_back(emu_port)
        check(len(got) == len(set(got)), "duplicates stored")
        check(set(got) == stored, "stored != forwarded: %d missing, %d unexpected"
              % (len(stored - set(got)), len(set(got) - stored)))
        print("%d records stored, as forwarded" % len(got), file=sys.stderr)
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(15)
        subprocess.run([EMU, "stop", str(emu_pid)], check=True)
    print("ok" if not PROBLEMS else "%d problems" % len(PROBLEMS))
    sys.exit(1 if PROBLEMS else 0)


if __name__ == "__main__":
    main()
