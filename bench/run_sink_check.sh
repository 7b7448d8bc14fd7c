#!/usr/bin/env bash
# End-to-end check of kp-sink (bench/sink/): starts it (plain + TLS, 4 shards), smoke-tests
# it with curl (plain, and TLS verified against the CA it generated), pushes records
# through our daemon (tests/integration/kptest.py's KPL-style driver) over plain HTTP and
# over TLS, checks the sink counted every user record on the right shard, checks CBOR 1.1
# PutRecords (python3-cbor2 through curl), optionally runs kp-sink-load for a few seconds
# in JSON and in CBOR, then stops the sink by PID and prints its stats.
#
# Usage: bench/run_sink_check.sh [records, default 200000]
# Env:   KP_BIN_DIR   where kinesis_producer is            (default build/bin)
#        KP_SINK_DIR  where kp-sink / kp-sink-load are     (default $KP_BIN_DIR)
#        KP_LOAD_SECONDS  kp-sink-load run, 0 to skip      (default 3)
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BIN=${KP_BIN_DIR:-$SRC/build/bin}
SINK_DIR=${KP_SINK_DIR:-$BIN}
N=${1:-200000}
LOAD_SECONDS=${KP_LOAD_SECONDS:-3}
PY=/usr/bin/python3
for f in "$SINK_DIR/kp-sink" "$BIN/kinesis_producer"; do
  [[ -x $f ]] || { echo "missing $f (build it, or set KP_BIN_DIR / KP_SINK_DIR)" >&2; exit 2; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kp-sink-check-XXXXXX")
SINK_PID=
cleanup() {
  if [[ -n $SINK_PID ]] && kill -0 "$SINK_PID" 2>/dev/null; then
    kill -TERM "$SINK_PID" 2>/dev/null || true
    wait "$SINK_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

"$SINK_DIR/kp-sink" --tls --shards 4 >"$TMP/sink.out" 2>"$TMP/sink.err" &
SINK_PID=$!
for _ in $(seq 200); do
  grep -q '^READY' "$TMP/sink.out" && break
  kill -0 "$SINK_PID" 2>/dev/null || { cat "$TMP/sink.err" >&2; exit 1; }
  sleep 0.05
done
grep -q '^READY' "$TMP/sink.out" || { echo "kp-sink did not start" >&2; exit 1; }
PORT=$(awk '$1 == "PORT" {print $2}' "$TMP/sink.out")
TLS_PORT=$(awk '$1 == "TLS_PORT" {print $2}' "$TMP/sink.out")
CA=$(awk '$1 == "CA_FILE" {print $2}' "$TMP/sink.out")
echo "kp-sink pid $SINK_PID: http://127.0.0.1:$PORT https://127.0.0.1:$TLS_PORT CA_FILE=$CA"

fails=0
passes=0
check() { # name, command...
  local name=$1
  shift
  if "$@"; then
    echo "ok   $name"
    passes=$((passes + 1))
  else
    echo "FAIL $name"
    fails=$((fails + 1))
  fi
}
api() { # url, operation, body -> prints "status body"
  curl -sS --max-time 10 --cacert "$CA" -o "$TMP/body" -w '%{http_code}' \
    -H 'Content-Type: application/x-amz-json-1.1' \
    -H 'Authorization: AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=00' \
    -H "X-Amz-Target: Kinesis_20131202.$2" --data-binary "$3" "$1"
  printf ' '
  cat "$TMP/body"
}
PLAIN=http://127.0.0.1:$PORT/
TLS=https://127.0.0.1:$TLS_PORT/

# --- curl smoke checks -------------------------------------------------------------------
r=$(api "$PLAIN" ListShards '{"StreamName":"smoke"}')
check "ListShards: 4 shards, AWS even ranges" $PY -c '
import json, sys
st, body = sys.argv[1].split(" ", 1)
sh = json.loads(body)["Shards"]
want = [((i * 2**128) // 4, ((i + 1) * 2**128) // 4 - 1) for i in range(4)]
got = [(int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"])) for s in sh]
assert st == "200" and got == want and sh[3]["ShardId"] == "shardId-000000000003", (st, got)
' "$r"
r=$(api "$TLS" DescribeStreamSummary '{"StreamName":"smoke"}')
check "TLS (curl --cacert CA_FILE): DescribeStreamSummary ACTIVE" \
  grep -q '^200 .*"StreamStatus":"ACTIVE".*"OpenShardCount":4' <<<"$r"
r=$(api "$TLS" CreateStream '{"StreamName":"smoke","ShardCount":4}')
check "TLS: CreateStream 200" grep -q '^200' <<<"$r"
# Two raw records (escaped partition key; explicit hash key at the top of the range).
r=$(api "$TLS" PutRecords '{"StreamName":"smoke","Records":[{"Data":"aGVsbG8=","PartitionKey":"k\u00e9\"\\y"},{"PartitionKey":"z","ExplicitHashKey":"340282366920938463463374607431768211455","Data":"aGk="}]}')
check "TLS: PutRecords, escaped key routed like MD5 of its UTF-8" $PY -c '
import hashlib, json, sys
st, body = sys.argv[1].split(" ", 1)
d = json.loads(body)
h = int.from_bytes(hashlib.md5("k\u00e9\"\\y".encode()).digest(), "big")
assert st == "200" and d["FailedRecordCount"] == 0, body
assert d["Records"][0]["ShardId"] == "shardId-%012d" % (h * 4 >> 128), body
assert d["Records"][1]["ShardId"] == "shardId-000000000003", body
s = [int(x["SequenceNumber"][8:]) for x in d["Records"]]
assert s[0] < s[1], s
' "$r"
r=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H 'X-Amz-Target: Kinesis_20131202.ListShards' \
  --data-binary '{"StreamName":"smoke"}' "$PLAIN")
check "no Authorization header: 403" test "$r" = 403
r=$(api "$PLAIN" PutRecords '{"StreamName":"smoke","Records":[{"Data":"aGk=",')
check "malformed PutRecords body: 400" grep -q '^400 .*SerializationException' <<<"$r"

# --- CBOR 1.1 PutRecords (binary bodies: python3-cbor2 builds and checks them) ------------
CBOR_RECORDS=0
if $PY -c 'import cbor2' 2>/dev/null; then
  cat >"$TMP/cbor.py" <<'PYEOF'
import hashlib, subprocess, sys
import cbor2
url, mode = sys.argv[1], sys.argv[2]
def put(body):
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", sys.argv[3], "-D", "-",
                        "--data-binary", "@-",
                        "-H", "Content-Type: application/x-amz-cbor-1.1",
                        "-H", "X-Amz-Target: Kinesis_20131202.PutRecords",
                        "-H", "Authorization: AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/"
                              "us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=00",
                        url], input=body, capture_output=True, check=True)
    head, _, b = r.stdout.partition(b"\r\n\r\n")
    head = head.decode().lower()
    assert "content-type: application/x-amz-cbor-1.1" in head, head
    return int(head.split()[1]), cbor2.loads(b)
if mode == "ok":
    # Members out of order, unknown members (nested) skipped, raw bytes in Data.
    pk = "k\u00e9\"\\y"
    st, d = put(cbor2.dumps({"Records": [
        {"Junk": {"a": [1, {"b": b"x"}]}, "PartitionKey": pk, "Data": b"hello"},
        {"ExplicitHashKey": str(2**128 - 1), "Data": bytes(range(256)), "PartitionKey": "z"},
        {"Data": b"", "PartitionKey": "n", "ExplicitHashKey": None}],
        "Extra": [1, 2], "StreamName": "smoke-cbor"}))
    h = int.from_bytes(hashlib.md5(pk.encode()).digest(), "big")
    assert st == 200 and d["FailedRecordCount"] == 0 and d["EncryptionType"] == "NONE", d
    assert len(d["Records"]) == 3, d
    assert d["Records"][0]["ShardId"] == "shardId-%012d" % (h * 4 >> 128), d
    assert d["Records"][1]["ShardId"] == "shardId-000000000003", d
    s = [int(x["SequenceNumber"][8:]) for x in d["Records"]]
    assert all(len(x["SequenceNumber"]) == 56 for x in d["Records"]) and s == sorted(s), d
else:
    st, d = put(cbor2.dumps({"StreamName": "smoke-cbor", "Records": [{"Data": "text, not bytes",
                                                                     "PartitionKey": "a"}]}))
    assert st == 400 and d["__type"] == "SerializationException", (st, d)
    st, d = put(b"\xa2\x6aStreamName")  # truncated
    assert st == 400 and d["__type"] == "SerializationException", (st, d)
PYEOF
  check "TLS: CBOR PutRecords, CBOR answer, any member order, unknown members skipped, routed" \
    $PY "$TMP/cbor.py" "$TLS" ok "$CA" && CBOR_RECORDS=3
  check "CBOR PutRecords: malformed or mistyped body -> 400 in CBOR" \
    $PY "$TMP/cbor.py" "$PLAIN" bad "$CA"
else
  echo "skip CBOR checks (python3-cbor2 not installed)"
fi

# --- the daemon, plain HTTP and TLS --------------------------------------------------------
cat >"$TMP/push.py" <<'EOF'
import os, sys, time
sys.path.insert(0, os.path.join(os.environ["KP_SRC"], "tests", "integration"))
import kptest
url, n, stream = sys.argv[1], int(sys.argv[2]), sys.argv[3]
env = {"CA_FILE": sys.argv[4]} if len(sys.argv) > 4 else {}
d = kptest.Daemon(kptest.config(url, record_max_buffered_time=100, record_ttl=60000), env=env)
t0 = time.time()
recs = ((stream, "pk-%d-%d" % (i, i * 7919 % 1000003), os.urandom(100), None) for i in range(n))
ids = d.put_many(recs)
d.flush()
missing = d.wait_results(ids, timeout=300)
ok = sum(1 for i in ids if i in d.results and d.results[i][0].success)
shards = {r[0].shard_id for r in d.results.values() if r and r[0].success}
rc = d.close()
print("pushed %d records to %s in %.2fs: %d ok, %d missing, shards %s, daemon rc %s"
      % (n, url, time.time() - t0, ok, len(missing), sorted(shards), rc))
sys.exit(0 if ok == n and not missing and rc == 0 else 1)
EOF
N_TLS=2000
check "daemon -> sink over HTTP: $N records" env KP_SRC="$SRC" KP_BIN_DIR="$BIN" \
  $PY "$TMP/push.py" "$PLAIN" "$N" sinkcheck
check "daemon -> sink over TLS (CA_FILE): $N_TLS records" env KP_SRC="$SRC" KP_BIN_DIR="$BIN" \
  $PY "$TMP/push.py" "https://127.0.0.1:$TLS_PORT" "$N_TLS" sinkcheck-tls "$CA"

stats() { # SIGUSR1, then the newest stats line
  local before
  before=$(grep -c '^{' "$TMP/sink.out" || true)
  kill -USR1 "$SINK_PID"
  for _ in $(seq 100); do
    [[ $(grep -c '^{' "$TMP/sink.out" || true) -gt $before ]] && break
    sleep 0.05
  done
  grep '^{' "$TMP/sink.out" | tail -1
}
S=$(stats)
check "sink counted every user record, none mis-routed, aggregates MD5-verified" $PY -c '
import json, sys
s = json.loads(sys.argv[1]); n, n_tls = int(sys.argv[2]), int(sys.argv[3])
st = s["streams"]
assert st["sinkcheck"]["user_records"] == n, st["sinkcheck"]
assert st["sinkcheck-tls"]["user_records"] == n_tls, st["sinkcheck-tls"]
if int(sys.argv[4]):
    assert st["smoke-cbor"]["user_records"] == int(sys.argv[4]), st["smoke-cbor"]
    assert st["smoke-cbor"]["user_bytes"] == 5 + 256, st["smoke-cbor"]
assert st["sinkcheck"]["user_bytes"] == 100 * n
assert sum(x["user_records"] for x in st["sinkcheck"]["shards"]) == n
assert all(x["user_records"] > 0 for x in st["sinkcheck"]["shards"])
assert s["misrouted"] == 0 and s["corrupt_aggregates"] == 0, s
assert s["md5_verified"] > 0 and s["md5_verified"] == s["aggregates"], s
print("  sink so far: %d requests, %d Kinesis records (%d aggregates, MD5 checked), %d user"
      " records; CPU %.3f s = %.3f us/user record (incl. start-up and curl checks)"
      % (s["requests"], s["kinesis_records"], s["aggregates"], s["user_records"], s["cpu_s"],
         s["cpu_us_per_user_record"]))
' "$S" "$N" "$N_TLS" "$CBOR_RECORDS"

# --- load generator: what the sink costs per user record at full speed ------------------------
# Each run is bracketed by stats lines, so the sink's CPU per user record is its own.
load_run() { # stream, extra kp-sink-load args...
  local stream=$1 a b
  shift
  a=$(stats)
  "$SINK_DIR/kp-sink-load" --port "$PORT" --conns 1 --seconds "$LOAD_SECONDS" --shards 4 \
    --stream "$stream" "$@" >"$TMP/load.out" || return 1
  b=$(stats)
  cat "$TMP/load.out"
  $PY -c '
import json, sys
a, b, l = (json.loads(x) for x in sys.argv[1:4])
st = b["streams"][sys.argv[4]]
assert l["requests_ok"] > 0 and l["requests_bad"] == 0 and l["failed_records"] == 0, l
assert st["user_records"] == l["user_records"], (st, l)
assert b["misrouted"] == 0 and b["corrupt_aggregates"] == 0, b
assert b["md5_verified"] == b["aggregates"], b
du, dc = b["user_records"] - a["user_records"], b["cpu_s"] - a["cpu_s"]
print("  %s: %.0f user records/s, sink CPU %.3f us/user record (%.0f%% of a core)"
      % (sys.argv[4], l["user_records_per_s"], dc * 1e6 / du, 100 * dc / l["wall_s"]))
' "$a" "$b" "$(cat "$TMP/load.out")" "$stream"
}
if [[ $LOAD_SECONDS != 0 && -x $SINK_DIR/kp-sink-load ]]; then
  check "kp-sink-load JSON: every user record counted, MD5-verified" load_run load
  check "kp-sink-load --cbor: every user record counted, MD5-verified" load_run load-cbor --cbor
fi

kill -TERM "$SINK_PID"
wait "$SINK_PID" || { echo "kp-sink exited with $?" >&2; fails=$((fails + 1)); }
SINK_PID=
FINAL=$(grep '^{"event":"exit"' "$TMP/sink.out" | tail -1)
echo "$FINAL"
$PY -c '
import json, sys
s = json.loads(sys.argv[1])
print("sink totals: %d requests, %d user records, %.1f MB of bodies; CPU %.3f s over %.1f s wall:"
      " %.1f us/request, %.3f us/user record, %.2f ns/body byte (parser %s, %d thread)" % (
      s["requests"], s["user_records"], s["body_bytes"] / 1e6, s["cpu_s"], s["wall_s"],
      s["cpu_us_per_request"], s["cpu_us_per_user_record"], s["cpu_ns_per_body_byte"],
      s["parser"], s["threads"]))
' "$FINAL"
if [[ -s $TMP/sink.err ]]; then
  echo "kp-sink stderr:" >&2
  cat "$TMP/sink.err" >&2
fi
echo "$passes passed, $fails failed"
[[ $fails == 0 ]]
