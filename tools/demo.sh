#!/usr/bin/env bash
# The producer demo (./run demo, after the build): a dataset of JSON lines goes through
# the producer (kpl-put -> kinesis_producer daemon: KPL aggregation, PutRecords) into a
# local kinesalite on 127.0.0.1, is read back with kpl-cat (every shard, de-aggregated)
# and compared with the input: count, and a SHA-256 of the sorted lines on both sides.
# A second, full read checks that the stream holds nothing more (no duplicates).
#
#   tools/demo.sh [--records N] [--shards N] [--payload BYTES] [--memory]
#   tools/demo.sh --deagg-only [--records N] [--max-data BYTES] [--seed S] [--agg-size BYTES]
#
# Defaults: 1000000 records {"id":N,"user":"user-M","payload":"xx.."} with 1..64
# payload bytes (~70 bytes a line), partition key = the id (kpl-put --key json:id), a
# 4-shard stream; kinesalite keeps its data in LevelDB under the work dir (--memory:
# in memory, which kinesalite never frees). --deagg-only runs the earlier demo of the
# consumer side alone: records aggregated per shard by kp-agg-tool, put with
# tools/kinesis_put.js, read back with tools/kinesis_read.js + kpl-deagg.
# Environment: KP_BIN_DIR (default build/bin). Everything started is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${KP_BIN_DIR:-$ROOT/build/bin}
EMU="$ROOT/tools/emulator/emulator.sh"

usage() {
  sed -n '8,9p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2
  exit 2
}
say() { printf '\033[1m[demo]\033[0m %s\n' "$*" >&2; }
now_ms() {
  local t=${EPOCHREALTIME/./}
  echo $((t / 1000))
}
need() {
  local b
  for b in "$@"; do
    [[ -x $BIN/$b ]] || {
      echo "demo.sh: $BIN/$b not built (./run build)" >&2
      exit 1
    }
  done
}
number() { # option value
  if ! [[ $2 =~ ^[0-9]+$ ]] || (($2 == 0)); then
    echo "demo.sh: $1 needs a positive number" >&2
    exit 2
  fi
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kp-demo.XXXXXX")
EMU_PID=""
cleanup() {
  [[ -z $EMU_PID ]] || "$EMU" stop "$EMU_PID" || true
  rm -rf "$WORK"
}
trap cleanup EXIT

start_kinesalite() { # extra emulator.sh start options
  local env_line
  env_line=$("$EMU" start kinesalite --dir "$WORK/emu" "$@")
  eval "$env_line"
  EMU_PID=$KP_EMU_PID
}

peak_rss_mib() { # PID
  local kb
  kb=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB$/\1/p' "/proc/$1/status" 2>/dev/null || true)
  echo $((${kb:-0} / 1024))
}

producer_demo() {
  local records=1000000 shards=4 payload=64 store=(--leveldb) store_name="LevelDB"
  while (($#)); do
    case "$1" in
    --records | --shards | --payload)
      (($# >= 2)) || usage
      number "$1" "$2"
      case "$1" in
      --records) records=$2 ;;
      --shards) shards=$2 ;;
      --payload) payload=$2 ;;
      esac
      shift 2
      ;;
    --memory)
      store=()
      store_name="memory"
      shift
      ;;
    *) usage ;;
    esac
  done
  need kpl-put kpl-cat kinesis_producer
  # Emulators do not check signatures; kpl-put and kpl-cat sign with these.
  export AWS_ACCESS_KEY_ID=AKIDKPDEMO AWS_SECRET_ACCESS_KEY=kp-demo-secret
  unset AWS_SESSION_TOKEN AWS_PROFILE
  local t0 t_gen t_put t_read t_check total
  t0=$(now_ms)

  say "starting kinesalite on 127.0.0.1 (data in $store_name)"
  start_kinesalite "${store[@]}"
  say "kinesalite pid $KP_EMU_PID at $KP_EMU_URL; creating $shards-shard stream 'demo'"
  "$EMU" create-stream "$KP_EMU_URL" demo "$shards"

  say "generating $records JSON lines"
  t_gen=$(now_ms)
  awk -v n="$records" -v p="$payload" 'BEGIN {
    pad = sprintf("%" p "s", ""); gsub(/ /, "x", pad)
    for (i = 0; i < n; i++)
      printf "{\"id\":%d,\"user\":\"user-%d\",\"payload\":\"%s\"}\n", i, i % 9973, substr(pad, 1, 1 + i % p)
  }' >"$WORK/data.jsonl"
  t_gen=$(($(now_ms) - t_gen))
  local bytes
  bytes=$(stat -c %s "$WORK/data.jsonl")

  say "putting them: kpl-put --stream demo --endpoint $KP_EMU_URL --key json:id --set MetricsLevel=none"
  t_put=$(now_ms)
  # No CloudWatch here: metrics off (kpl-put would otherwise want a region for it).
  if ! "$BIN/kpl-put" --stream demo --endpoint "$KP_EMU_URL" --key json:id \
    --set MetricsLevel=none "$WORK/data.jsonl" \
    2> >(tee "$WORK/put.err" >&2); then
    echo "demo.sh: kpl-put failed" >&2
    exit 1
  fi
  t_put=$(($(now_ms) - t_put))

  say "reading them back: kpl-cat --stream demo --endpoint $KP_EMU_URL --count $records --timeout 60"
  t_read=$(now_ms)
  local rc=0
  "$BIN/kpl-cat" --stream demo --endpoint "$KP_EMU_URL" --count "$records" --timeout 60 --stats \
    >"$WORK/read.txt" 2>"$WORK/cat.err" || rc=$?
  t_read=$(($(now_ms) - t_read))
  if ((rc != 0)); then
    cat "$WORK/cat.err" >&2
    echo "demo.sh: kpl-cat exited with $rc" >&2
    exit 1
  fi

  say "checking: counts, SHA-256 of the sorted lines, and a full read for extra records"
  t_check=$(now_ms)
  local got want_digest got_digest full
  got=$(wc -l <"$WORK/read.txt")
  want_digest=$(LC_ALL=C sort -S 25% "$WORK/data.jsonl" | sha256sum | cut -c1-64)
  got_digest=$(LC_ALL=C sort -S 25% "$WORK/read.txt" | sha256sum | cut -c1-64)
  "$BIN/kpl-cat" --stream demo --endpoint "$KP_EMU_URL" --timeout 60 --stats \
    >/dev/null 2>"$WORK/full.err" || {
    cat "$WORK/full.err" >&2
    exit 1
  }
  full=$(tail -n 1 "$WORK/full.err")
  t_check=$(($(now_ms) - t_check))
  local rss
  rss=$(peak_rss_mib "$EMU_PID")
  "$EMU" stop "$EMU_PID"
  EMU_PID=""
  total=$(($(now_ms) - t0))

  local in_stream kinesis calls ok=1
  in_stream=$(sed -n 's/.*"userRecords":\([0-9]*\).*/\1/p' <<<"$full")
  kinesis=$(sed -n 's/.*"kinesisRecords":\([0-9]*\).*/\1/p' <<<"$full")
  calls=$(sed -n 's/.*"getRecordsCalls":\([0-9]*\).*/\1/p' <<<"$full")
  [[ $got == "$records" && $in_stream == "$records" && $got_digest == "$want_digest" ]] || ok=0
  rate() { awk -v n="$1" -v ms="$2" 'BEGIN { printf "%.0f", (ms > 0 ? n * 1000 / ms : 0) }'; }
  cat <<SUMMARY

  user records       $records put ($(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }') MiB of lines), $got read back, $in_stream in the stream
  Kinesis records    $kinesis in $shards shards ($calls GetRecords calls to read them all)
  aggregation ratio  $(awk -v u="$records" -v k="$kinesis" 'BEGIN { printf "%.1f", k ? u / k : 0 }') user records per Kinesis record
  digest (sorted)    ${want_digest:0:16}... $([[ $got_digest == "$want_digest" ]] && echo matches || echo "DIFFERS: ${got_digest:0:16}...")
  put (kpl-put)      $t_put ms, $(rate "$records" "$t_put") records/s
  read (kpl-cat)     $t_read ms, $(rate "$records" "$t_read") records/s
  time               generate $t_gen ms, checks $t_check ms, total $total ms
  kinesalite         peak RSS $rss MiB ($store_name)
  result             $( ((ok)) && echo OK || echo FAILED)
SUMMARY
  ((ok))
}

deagg_only() {
  local RECORDS=20000 MAX_DATA=512 SEED=1 AGG_SIZE=51200 AGG_TOOL t0 t_agg t_put t_read total
  local put_stats summary f
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
    *) usage ;;
    esac
  done

  need kpl-deagg kp-agg-tool
  AGG_TOOL=$BIN/kp-agg-tool
  t0=$(now_ms)
  say "starting kinesalite on 127.0.0.1"
  start_kinesalite
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
}

if [[ ${1:-} == --deagg-only ]]; then
  shift
  deagg_only "$@"
else
  producer_demo "$@"
fi
