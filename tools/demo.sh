#!/usr/bin/env bash
# De-aggregation demo (./run demo, after the build): user records are aggregated per
# shard with our encoder (kp-agg-tool), put into a 4-shard stream on a local kinesalite,
# read back from every shard and de-aggregated with kpl-deagg (each shard filtered to
# its own hash range, as a KCL consumer does); counts and a digest must match.
#
#   tools/demo.sh [--records N] [--max-data BYTES] [--seed S] [--agg-size BYTES]
# Defaults: 20000 records of 0..512 bytes, seed 1, 51200-byte aggregates (the KPL's
# AggregationMaxSize default). Environment: KP_BIN_DIR (default build/bin).
# Building blocks, reusable on their own: tools/emulator/emulator.sh (start/stop/
# create-stream), tools/interop/gen_spec.js, tools/shard_split.js, kp-agg-tool,
# tools/kinesis_put.js, tools/kinesis_read.js.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${KP_BIN_DIR:-$ROOT/build/bin}
EMU="$ROOT/tools/emulator/emulator.sh"
RECORDS=20000
MAX_DATA=512
SEED=1
AGG_SIZE=51200
while (($#)); do
  case "$1" in
  --records | --max-data | --seed | --agg-size)
    if (($# < 2)) || ! [[ $2 =~ ^[0-9]+$ ]]; then
      echo "demo.sh: $1 needs a number" >&2
      exit 2
    fi
    case "$1" in
    --records) RECORDS=$2 ;;
    --max-data) MAX_DATA=$2 ;;
    --seed) SEED=$2 ;;
    --agg-size) AGG_SIZE=$2 ;;
    esac
    shift 2
    ;;
  *)
    sed -n '7,8p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2
    exit 2
    ;;
  esac
done

say() { printf '\033[1m[demo]\033[0m %s\n' "$*" >&2; }
now_ms() {
  local t=${EPOCHREALTIME/./}
  echo $((t / 1000))
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kp-demo.XXXXXX")
EMU_PID=""
cleanup() {
  [[ -z $EMU_PID ]] || "$EMU" stop "$EMU_PID" || true
  rm -rf "$WORK"
}
trap cleanup EXIT

[[ -x $BIN/kpl-deagg ]] || {
  echo "demo.sh: $BIN/kpl-deagg not built (./run build)" >&2
  exit 1
}
AGG_TOOL=$BIN/kp-agg-tool
if [[ ! -x $AGG_TOOL ]]; then # until the top level builds tools/ (add_subdirectory)
  AGG_TOOL=$WORK/kp-agg-tool
  "${CC:-cc}" -std=gnu11 -O2 -D_GNU_SOURCE -I"$ROOT" -I"$ROOT/include" \
    "$ROOT/tools/interop/kp_agg_tool.c" "$BIN/../lib/libkp_format.a" -ljansson -lcrypto \
    -o "$AGG_TOOL"
fi

t0=$(now_ms)
say "starting kinesalite on 127.0.0.1"
env_line=$("$EMU" start kinesalite --dir "$WORK/emu")
eval "$env_line"
EMU_PID=$KP_EMU_PID
say "kinesalite pid $KP_EMU_PID at $KP_EMU_URL; creating 4-shard stream 'demo'"
"$EMU" create-stream "$KP_EMU_URL" demo 4

say "generating $RECORDS user records (seed $SEED, 0..$MAX_DATA bytes each)"
node "$ROOT/tools/interop/gen_spec.js" --seed "$SEED" --records "$RECORDS" --max-data "$MAX_DATA" \
  >"$WORK/spec.jsonl"
"$EMU" api "$KP_EMU_URL" ListShards '{"StreamName":"demo"}' |
  node -e 'let s="";process.stdin.on("data",c=>s+=c).on("end",()=>console.log(JSON.stringify(JSON.parse(s).Shards)))' \
    >"$WORK/shards.json"
node "$ROOT/tools/shard_split.js" "$WORK/shards.json" "$WORK/spec-" <"$WORK/spec.jsonl" >/dev/null

say "aggregating per shard with our encoder (kp-agg-tool, aggregates <= $AGG_SIZE bytes)"
t_agg=$(now_ms)
: >"$WORK/kinesis.jsonl"
for f in "$WORK"/spec-shardId-*.jsonl; do
  "$AGG_TOOL" --max-size "$AGG_SIZE" <"$f" >>"$WORK/kinesis.jsonl" 2>/dev/null
done
t_agg=$(($(now_ms) - t_agg))

say "putting the Kinesis records (PutRecords)"
t_put=$(now_ms)
put_stats=$(node "$ROOT/tools/kinesis_put.js" "$KP_EMU_URL" demo <"$WORK/kinesis.jsonl")
t_put=$(($(now_ms) - t_put))

say "reading every shard back (GetRecords) and de-aggregating with kpl-deagg"
t_read=$(now_ms)
node "$ROOT/tools/kinesis_read.js" "$KP_EMU_URL" demo --out-dir "$WORK/read"
: >"$WORK/users.jsonl"
while IFS=$'\t' read -r shard lo hi; do
  "$BIN/kpl-deagg" --json --strict --hash-range "$lo:$hi" <"$WORK/read/$shard.json" \
    >>"$WORK/users.jsonl"
done < <(node -e '
  for (const s of require(process.argv[1]))
    console.log([s.ShardId, s.HashKeyRange.StartingHashKey, s.HashKeyRange.EndingHashKey].join("\t"));
' "$WORK/read/shards.json")
t_read=$(($(now_ms) - t_read))

# Order-independent digest of (partition key, hash key, data) on both sides.
# shellcheck disable=SC2016 # JavaScript, not shell
summary=$(node -e '
  const fs = require("fs"), crypto = require("crypto");
  const read = (f) => fs.readFileSync(f, "utf8").split("\n").filter(Boolean).map(JSON.parse);
  const hk = (r) => r.ehk != null ? BigInt(r.ehk).toString()
    : BigInt("0x" + crypto.createHash("md5").update(r.pk, "utf8").digest("hex")).toString();
  const digest = (rows) => crypto.createHash("sha256").update(rows.sort().join("\n")).digest("hex");
  const spec = read(process.argv[1]), users = read(process.argv[2]), kin = read(process.argv[3]);
  const a = digest(spec.map((r) => JSON.stringify([r.pk, hk(r), r.data])));
  const b = digest(users.map((r) => JSON.stringify([r.partitionKey, r.hashKey, r.data])));
  const bytes = spec.reduce((n, r) => n + Buffer.byteLength(r.data, "base64"), 0);
  const kbytes = kin.reduce((n, r) => n + Buffer.byteLength(r.data, "base64"), 0);
  console.log(JSON.stringify({ users: spec.length, got: users.length, kinesis: kin.length,
    bytes, kbytes, digestSpec: a, digestGot: b }));
' "$WORK/spec.jsonl" "$WORK/users.jsonl" "$WORK/kinesis.jsonl")
total=$(($(now_ms) - t0))

"$EMU" stop "$EMU_PID"
EMU_PID=""

# shellcheck disable=SC2016 # JavaScript, not shell
node -e '
  const s = JSON.parse(process.argv[1]), put = JSON.parse(process.argv[2]);
  const [tAgg, tPut, tRead, total] = process.argv.slice(3).map(Number);
  const ok = s.users === s.got && s.digestSpec === s.digestGot && put.records === s.kinesis;
  console.log(`
  user records       ${s.users} put, ${s.got} read back (${(s.bytes / 1048576).toFixed(2)} MiB of data)
  Kinesis records    ${s.kinesis} (${(s.kbytes / 1048576).toFixed(2)} MiB), ${put.requests} PutRecords requests, ${put.retried} retried
  per shard          ${Object.entries(put.shards).map(([k, v]) => `${k.replace("shardId-", "")}: ${v}`).join(", ")}
  aggregation ratio  ${(s.users / s.kinesis).toFixed(1)} user records per Kinesis record
  digest             ${s.digestSpec.slice(0, 16)}... ${s.digestSpec === s.digestGot ? "matches" : "DIFFERS: " + s.digestGot.slice(0, 16)}
  time               aggregate ${tAgg} ms, put ${tPut} ms, read+de-aggregate ${tRead} ms, total ${total} ms
  result             ${ok ? "OK" : "FAILED"}`);
  process.exit(ok ? 0 : 1);
' "$summary" "$put_stats" "$t_agg" "$t_put" "$t_read" "$total"
