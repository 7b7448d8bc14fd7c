#!/usr/bin/python3
"""Checks our CloudWatch PutMetricData bodies (producer/cloudwatch_api.c) against
Debian's python3-botocore, the independent oracle for the Query protocol:

  1. `test_cloudwatch_api --emit DIR` writes the bodies of two fixed scenarios (a real
     metrics upload and 2345 synthetic data with awkward dimension values).
  2. Each body is parsed back into PutMetricData params through botocore's CloudWatch
     service model and validated with botocore's ParamValidator (types, required
     members, 30-dimension and length limits).
  3. botocore's QuerySerializer serializes the same params; its key/value list must
     equal ours in order (numbers compared as doubles: Python writes 30.0, we write 30).
  4. Our percent-encoding must be exactly RFC 3986 (what botocore's SigV4 canonical
     form uses), each body must hold <= 1000 data and <= 1 MB, and the metrics
     scenario must carry the statistics the C side recorded."""
import datetime
import os
import re
import subprocess
import sys
import tempfile
from urllib.parse import parse_qsl, quote

import botocore.session
from botocore.serialize import create_serializer
from botocore.validate import ParamValidator

BIN = os.path.join(os.environ.get("KP_BIN_DIR", "build/bin"), "test_cloudwatch_api")
MAX_DATA = 1000
MAX_BODY = 1000000
NUMERIC_KEY = re.compile(r"MetricData\.member\.\d+\.(Value|StatisticValues\.\w+)")
TS = "2025-11-22T10:00:10Z"
HOST = "h-1 \u00e9&=+/"
SYN_VALUES = ["plain", "with space", "a&b=c+d", "slash/colon:semi;",
              "\u00fc\u4e2d\U0001F600", "~tilde-_.", "100%", "quote\"'<>", "#hash?q"]


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


def unflatten(pairs, shape, where="params"):
    """Query-protocol key/value pairs -> nested params, typed by the botocore shape."""
    tree = {}
    for k, v in pairs:
        node = tree
        parts = k.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            check(isinstance(node, dict), f"{k}: both a value and a container")
        check(parts[-1] not in node, f"duplicate key {k}")
        node[parts[-1]] = v
    return convert(tree, shape, where)


def convert(node, shape, where):
    t = shape.type_name
    if t == "structure":
        check(isinstance(node, dict), f"{where}: expected a structure")
        out = {}
        for name, sub in node.items():
            check(name in shape.members, f"{where}: unknown member {name}")
            out[name] = convert(sub, shape.members[name], f"{where}.{name}")
        return out
    if t == "list":
        check(isinstance(node, dict) and list(node) == ["member"],
              f"{where}: a list must be .member.N")
        items = node["member"]
        n = len(items)
        check(sorted(items, key=int) == [str(i) for i in range(1, n + 1)],
              f"{where}: members must be numbered 1..{n}, got {sorted(items, key=int)[:5]}")
        return [convert(items[str(i)], shape.member, f"{where}.member.{i}")
                for i in range(1, n + 1)]
    check(isinstance(node, str), f"{where}: expected a scalar")
    if t == "double":
        return float(node)
    if t == "integer":
        return int(node)
    if t == "timestamp":
        return datetime.datetime.strptime(node, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc)
    if t == "string":
        return node
    raise Fail(f"{where}: unexpected shape type {t}")


def same_value(key, ours, theirs):
    if NUMERIC_KEY.fullmatch(key):
        return float(ours) == float(theirs)
    return ours == theirs


def check_body(raw, op, model_ns, serializer):
    check(len(raw.encode()) <= MAX_BODY, f"body of {len(raw)} bytes > {MAX_BODY}")
    check(re.fullmatch(r"[A-Za-z0-9\-_.~%=&]*", raw) is not None,
          "body has characters RFC 3986 would encode")
    check(re.search(r"%(?![0-9A-F]{2})", raw) is None, "bad percent-escape")
    pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=True)
    # exact RFC 3986 encoding, as botocore's SigV4 canonicalisation expects
    again = "&".join(quote(k, safe="-_.~") + "=" + quote(v, safe="-_.~") for k, v in pairs)
    check(again == raw, "percent-encoding differs from RFC 3986")
    check(pairs[0] == ("Action", "PutMetricData"), f"first pair {pairs[0]}")
    check(pairs[1] == ("Version", "2010-08-01"), f"second pair {pairs[1]}")
    params = unflatten(pairs[2:], op.input_shape)
    check(params.get("Namespace") == model_ns, f"Namespace {params.get('Namespace')!r}")
    report = ParamValidator().validate(params, op.input_shape)
    check(not report.has_errors(), "botocore rejects the params:\n" + report.generate_report())
    units = op.input_shape.members["MetricData"].member.members["Unit"].enum
    for d in params["MetricData"]:  # ParamValidator does not check enums
        check(d.get("Unit", "None") in units, f"Unit {d.get('Unit')!r} not in the model's enum")
    n = len(params["MetricData"])
    check(1 <= n <= MAX_DATA, f"{n} metric data in one request")
    theirs = list(serializer.serialize_to_request(params, op)["body"].items())
    check(len(theirs) == len(pairs),
          f"botocore serializes {len(theirs)} pairs, we sent {len(pairs)}")
    for (k1, v1), (k2, v2) in zip(pairs, theirs):
        check(k1 == k2, f"key order differs: ours {k1}, botocore {k2}")
        check(same_value(k1, v1, v2), f"{k1}: ours {v1!r}, botocore {v2!r}")
    return params["MetricData"]


def key(d):
    return d["MetricName"], tuple(sorted((x["Name"], x["Value"]) for x in d.get("Dimensions", [])))


def check_metrics_scenario(data):
    by = {}
    for d in data:
        check(key(d) not in by, f"duplicate datum {key(d)}")
        by[key(d)] = d
        check(d["Timestamp"].strftime("%Y-%m-%dT%H:%M:%SZ") == TS, f"timestamp {d['Timestamp']}")
        dims = dict((x["Name"], x["Value"]) for x in d.get("Dimensions", []))
        check(dims.get("Host") == HOST, f"Host dimension {dims.get('Host')!r}")
    check(len(data) == 34, f"{len(data)} data, expected 34")

    def stat(name, unit, count, total, lo, hi, **dims):
        dims["Host"] = HOST
        k = (name, tuple(sorted(dims.items())))
        check(k in by, f"missing {k}")
        d = by[k]
        sv = d["StatisticValues"]
        got = (d.get("Unit"), sv["SampleCount"], sv["Sum"], sv["Minimum"], sv["Maximum"])
        check(got == (unit, count, total, lo, hi), f"{k}: got {got}")

    s1 = "s1"
    sh0, sh1 = "shardId-000000000000", "shardId-000000000001"
    stat("UserRecordsPut", "Count", 30, 30, 1, 1)
    stat("UserRecordsPut", "Count", 20, 20, 1, 1, StreamName=s1)
    stat("UserRecordsPut", "Count", 10, 10, 1, 1, StreamName="s2")
    stat("UserRecordsPut", "Count", 10, 10, 1, 1, StreamName=s1, ShardId=sh1)
    stat("UserRecordsPut", "Count", 10, 10, 1, 1, StreamName="s2", ShardId=sh0)
    stat("UserRecordsDataPut", "Bytes", 30, 3000, 100, 100)
    stat("BufferingTime", "Milliseconds", 30, 1350, 0, 90)
    stat("BufferingTime", "Milliseconds", 10, 450, 0, 90, StreamName=s1, ShardId=sh0)
    stat("ErrorsByCode", "Count", 30, 30, 1, 1,
         ErrorCode="ProvisionedThroughputExceededException")
    stat("ErrorsByCode", "Count", 10, 10, 1, 1,
         ErrorCode="ProvisionedThroughputExceededException", StreamName=s1, ShardId=sh1)
    stat("AllErrors", "Count", 20, 20, 1, 1, StreamName=s1)
    stat("UserRecordsReceived", "Count", 10, 20, 2, 2, StreamName=s1)
    stat("RequestTime", "Milliseconds", 10, 125, 12.5, 12.5, StreamName="s2")
    for k in by:
        if k[0] in ("UserRecordsReceived", "RequestTime"):
            check("ShardId" not in dict(k[1]), f"{k} is stream-level only")


def check_synthetic_scenario(data, bodies):
    check(len(data) == 2345, f"{len(data)} data, expected 2345")
    check(len(bodies) >= 3, f"{len(bodies)} bodies")
    for i, d in enumerate(data):
        sv = d["StatisticValues"]
        check(sv["SampleCount"] == i + 1, f"datum {i}: SampleCount {sv['SampleCount']}")
        scale = 10.0 ** ((i % 41) - 20)
        for got, want in ((sv["Sum"], (i + 1) * scale * 1.5), (sv["Minimum"], -scale / 3),
                          (sv["Maximum"], scale * 7)):
            check(abs(got - want) <= abs(want) * 1e-12, f"datum {i}: {got} != {want}")
        dims = d.get("Dimensions", [])
        check(len(dims) == i % 31, f"datum {i}: {len(dims)} dimensions")
        for j, x in enumerate(dims):
            check(x == {"Name": f"Dim{j}", "Value": SYN_VALUES[(i + j) % 9]},
                  f"datum {i} dim {j}: {x}")


def main():
    if not os.access(BIN, os.X_OK):
        print(f"FAIL: {BIN} not built (cmake --build ... --target test_cloudwatch_api)")
        return 1
    model = botocore.session.get_session().get_service_model("cloudwatch")
    op = model.operation_model("PutMetricData")
    check(model.metadata["protocol"] == "query", "CloudWatch model is not Query protocol")
    serializer = create_serializer("query", include_validation=True)
    with tempfile.TemporaryDirectory() as tmp:
        p = subprocess.run([BIN, "--emit", tmp], capture_output=True, text=True)
        if p.returncode != 0:
            print(f"FAIL: {BIN} --emit: {p.returncode} {p.stderr}")
            return 1
        results = {}
        for name, ns in (("metrics", "KinesisProducerLibrary"), ("synthetic", "Test/NS:1 x")):
            with open(os.path.join(tmp, name + ".txt"), encoding="ascii") as f:
                bodies = f.read().splitlines()
            data = []
            for i, b in enumerate(bodies):
                try:
                    data += check_body(b, op, ns, serializer)
                except Fail as e:
                    raise Fail(f"{name} body {i + 1}: {e}") from None
            results[name] = (data, bodies)
            print(f"ok: {name}: {len(bodies)} bodies, {len(data)} data, botocore agrees")
    check_metrics_scenario(results["metrics"][0])
    print("ok: metrics scenario carries the recorded statistics")
    check_synthetic_scenario(*results["synthetic"])
    print("ok: synthetic scenario round-trips every value and dimension")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Fail as e:
        print(f"FAIL: {e}")
        sys.exit(1)
