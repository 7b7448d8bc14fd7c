#!/usr/bin/env bash
# End-to-end benchmark matrix (issue 6), called by `./run bench` after a Release build.
#
# Usage: bench/run.sh [all|matrix|quick|profile]
#   all      (default) micro-benchmarks' floor, the matrix, baselines, half-rate latency
#            cells, the report (markdown/CSV/JSON) and the plots
#   matrix   same as all (kept for symmetry)
#   quick    a 4-cell smoke run (100 B / 1 KiB, aggregation on, 1 shard, both latencies)
#   profile  perf (cpu-clock sampling) of the daemon and the client at the 100-B max-rate
#            point; writes bench/results/profile_{daemon,client}.txt
#            (KP_PROFILE_ARGS: other kpl-bench arguments for the profiled cell, written
#            to profile_<tag>_{daemon,client}.txt with KP_PROFILE_TAG=<tag>)
# Env:   KP_BIN_DIR        binaries (default build/bin)
#        KP_BENCH_SECONDS  seconds of puts per cell (default 4)
#        KP_BENCH_OUT      output folder (default bench/results)
#        KP_DAEMON         daemon for the matrix (default: ours, next to kpl-bench)
#
# Every process is bounded by `timeout`; kpl-bench and kp-bench-direct start and stop
# their own kp-sink by PID (and it dies with them: PR_SET_PDEATHSIG). Only 127.0.0.1.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BIN=${KP_BIN_DIR:-$SRC/build/bin}
SECS=${KP_BENCH_SECONDS:-4}
OUT=${KP_BENCH_OUT:-$SRC/bench/results}
PY=/usr/bin/python3
MODE=${1:-all}
for f in kpl-bench kp-bench-direct kp-sink kinesis_producer bench_floor; do
  [[ -x $BIN/$f ]] || { echo "missing $BIN/$f (build first, or set KP_BIN_DIR)" >&2; exit 2; }
done
mkdir -p "$OUT/raw"
CELLS=$OUT/raw/cells.jsonl
LOG=$OUT/raw/bench.log
CELL_TIMEOUT=$((SECS + 90))
DAEMON_ARGS=()
[[ -n ${KP_DAEMON:-} ]] && DAEMON_ARGS=(--daemon "$KP_DAEMON")

log() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }

machine() {
  local cpu
  cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
  printf '{"date":"%s","nproc":%s,"cpu_model":"%s","kernel":"%s","mem_gib":%s,"loadavg":"%s","seconds_per_cell":%s,"commit":"%s"}\n' \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$(nproc)" "$cpu" "$(uname -r)" \
    "$(awk '/MemTotal/ {printf "%.0f", $2/1048576}' /proc/meminfo)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "$SECS" "$(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)"
}

# kpl-bench cell: label, args...
cell() {
  local label=$1
  shift
  log "$label"
  local line
  line=$(timeout -k 5 "$CELL_TIMEOUT" "$BIN/kpl-bench" --quiet --duration "$SECS" --label "$label" \
    "${DAEMON_ARGS[@]}" "$@" 2>>"$LOG" | grep '^{' | tail -1) || true
  if [[ -n $line ]]; then
    echo "$line" >>"$CELLS"
  else
    log "  $label: no result (see $LOG)"
  fi
}

direct() {
  local label=$1
  shift
  log "$label"
  local line
  line=$(timeout -k 5 "$CELL_TIMEOUT" "$BIN/kp-bench-direct" --quiet --duration "$SECS" \
    --label "$label" "$@" 2>>"$LOG" | grep '^{' | tail -1) || true
  [[ -n $line ]] && echo "$line" >>"$CELLS" || log "  $label: no result (see $LOG)"
}

size_name() { case $1 in 100) echo 100B ;; 1024) echo 1KiB ;; 10240) echo 10KiB ;; 51200) echo 50KiB ;; *) echo "${1}B" ;; esac; }

max_rate_of() { # label -> user_records_per_s of that cell
  $PY -c 'import json,sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    if d.get("label") == sys.argv[2]: r = d["user_records_per_s"]
print(int(r))' "$CELLS" "$1"
}

run_matrix() {
  local sizes=(100 1024 10240 51200) shards=(1 64) aggs=(true false) lats=(0 20)
  if [[ $MODE == quick ]]; then sizes=(100 1024) shards=(1) aggs=(true); fi
  : >"$CELLS"
  : >"$LOG"
  machine >"$OUT/raw/machine.json"
  log "floor: bench_floor (per-byte costs)"
  timeout 120 "$BIN/bench_floor" 0.2 >"$OUT/raw/floor.md" 2>>"$LOG" || log "bench_floor failed"
  local s n a l
  for s in "${sizes[@]}"; do
    for n in "${shards[@]}"; do
      for a in "${aggs[@]}"; do
        for l in "${lats[@]}"; do
          cell "$(size_name "$s")/${n}sh/agg-$([[ $a == true ]] && echo on || echo off)/${l}ms" \
            --record-size "$s" --shards "$n" --sink-latency-ms "$l" --set "AggregationEnabled=$a"
        done
      done
    done
  done
  # Half the max rate: the latency target (p99 <= RecordMaxBufferedTime + 10 ms).
  for s in 100 1024; do
    for l in "${lats[@]}"; do
      local base r
      base="$(size_name "$s")/1sh/agg-on/${l}ms"
      r=$(max_rate_of "$base" 2>/dev/null || echo 0)
      ((r > 0)) || continue
      cell "$base/half-rate" --record-size "$s" --shards 1 --sink-latency-ms "$l" \
        --rate $((r / 2)) --cdf "$OUT/raw/cdf-$(size_name "$s")-${l}ms-half.txt" \
        --timeline "$OUT/raw/timeline-$(size_name "$s")-${l}ms-half.txt"
      # One shard fills a 5 MiB request (the KPL's CollectionMaxSize) in ~90 ms at this
      # rate, and such a request takes tens of ms to answer; 1 MiB requests leave sooner.
      cell "$base/half-rate/collect-1MiB" --record-size "$s" --shards 1 --sink-latency-ms "$l" \
        --rate $((r / 2)) --set CollectionMaxSize=1048576 \
        --cdf "$OUT/raw/cdf-$(size_name "$s")-${l}ms-half-1MiB.txt" \
        --timeline "$OUT/raw/timeline-$(size_name "$s")-${l}ms-half-1MiB.txt"
    done
  done
  # The same point with the KPL's wire formats: JSON PutRecords, then also one
  # PutRecordResult per record (what each of our extensions is worth).
  cell "100B/1sh/agg-on/0ms/json" --record-size 100 --shards 1 --set RequestEncoding=json
  cell "100B/1sh/agg-on/0ms/json-no-batches" --record-size 100 --shards 1 \
    --set RequestEncoding=json --set ResultBatches=false
  # 50 KiB in JSON too: its floor (base64, SHA-256 of the 4/3 larger text) is the one
  # issue 6 names; the CBOR cells above are held to the lower CBOR floor.
  [[ $MODE == quick ]] || cell "50KiB/1sh/agg-on/0ms/json" --record-size 51200 --shards 1 \
    --set RequestEncoding=json
  # Puts without KP_PUT_F_BLOCK first (the KPL wrapper's way): every queue fills to
  # MaxOutstandingBytes, and the client's copies go cold (docs/client.md, pacing).
  cell "1KiB/1sh/agg-on/0ms/try-first" --record-size 1024 --shards 1 --try-first
  # The same 100-B point through the KPL launch protocol (our daemon, no client library).
  cell "100B/1sh/agg-on/0ms/kpl-launch" --record-size 100 --shards 1 --kpl-launch \
    --cdf "$OUT/raw/cdf-100B-0ms-kpl-launch.txt"
  [[ $MODE == quick ]] || cell "100B/1sh/agg-on/0ms/cdf-max" --record-size 100 --shards 1 \
    --cdf "$OUT/raw/cdf-100B-0ms-max.txt"
  # The cells the targets are judged on, twice more and interleaved: this shared VM's
  # speed moves by up to 20 % within minutes, so plot.py takes the median of three.
  if [[ $MODE != quick ]]; then
    for rep in 2 3; do
      cell "100B/1sh/agg-on/0ms/rep$rep" --record-size 100 --shards 1 --sink-latency-ms 0 \
        --set AggregationEnabled=true
      cell "1KiB/1sh/agg-on/0ms/rep$rep" --record-size 1024 --shards 1 --sink-latency-ms 0 \
        --set AggregationEnabled=true
      cell "50KiB/1sh/agg-on/0ms/rep$rep" --record-size 51200 --shards 1 --sink-latency-ms 0 \
        --set AggregationEnabled=true
      cell "50KiB/1sh/agg-on/0ms/json/rep$rep" --record-size 51200 --shards 1 \
        --set RequestEncoding=json
    done
  fi
  # Baseline: a direct PutRecords client, no daemon, no aggregation.
  for s in "${sizes[@]}"; do
    for l in "${lats[@]}"; do
      direct "direct/$(size_name "$s")/${l}ms" --record-size "$s" --shards 1 --sink-latency-ms "$l" \
        --conns 8
    done
  done
  direct "direct/100B/0ms/json" --record-size 100 --shards 1 --conns 8 --json
  machine | $PY -c 'import json,sys; a=json.load(open(sys.argv[1])); b=json.loads(sys.stdin.read()); a["loadavg_end"]=b["loadavg"]; json.dump(a, open(sys.argv[1],"w"))' "$OUT/raw/machine.json"
  log "report"
  $PY "$SRC/bench/plot.py" "$OUT"
  if command -v gnuplot >/dev/null; then
    (cd "$OUT" && gnuplot "$SRC/bench/plot.gp") || log "gnuplot failed"
  else
    log "gnuplot not installed (./run setup): no PNG"
  fi
  log "wrote $OUT/e2e.md, e2e.csv, e2e.json, e2e_throughput.png, e2e_latency_cdf.png"
}

run_profile() {
  command -v perf >/dev/null || { echo "perf not installed" >&2; exit 2; }
  local d=$OUT/raw/profile secs=$((SECS > 4 ? SECS : 4))
  local args=(${KP_PROFILE_ARGS:---record-size 100 --shards 1})
  local tag=${KP_PROFILE_TAG:+${KP_PROFILE_TAG}_}
  mkdir -p "$d"
  log "profile: kpl-bench ${args[*]}, max rate, $((secs + 3)) s"
  timeout -k 5 $((secs + 60)) "$BIN/kpl-bench" --duration $((secs + 3)) "${args[@]}" \
    "${DAEMON_ARGS[@]}" >"$d/kpl-bench.out" 2>>"$d/kpl-bench.err" &
  local kbw=$! kb="" dp=""
  for _ in $(seq 200); do
    [[ -n $kb ]] || kb=$(pgrep -P "$kbw" -x kpl-bench || true)
    [[ -n $kb ]] && dp=$(pgrep -P "$kb" -x kinesis_produce || true)
    [[ -n $dp ]] && break
    sleep 0.05
  done
  [[ -n $dp ]] || { kill "$kbw" 2>/dev/null; echo "daemon not found" >&2; exit 1; }
  sleep 1
  timeout $((secs + 10)) perf record -q -e cpu-clock -F 999 -p "$dp" -o "$d/daemon.data" -- sleep "$secs" 2>>"$d/perf.err" &
  local p1=$!
  timeout $((secs + 10)) perf record -q -e cpu-clock -F 999 -p "$kb" -o "$d/client.data" -- sleep "$secs" 2>>"$d/perf.err" &
  local p2=$!
  wait "$p1" "$p2" || true
  wait "$kbw" || true
  for w in daemon client; do
    perf report -i "$d/$w.data" --stdio --no-children --sort dso,symbol --percent-limit 0.7 \
      2>/dev/null | grep -v '^$' | head -60 >"$OUT/profile_$tag$w.txt" || true
    perf report -i "$d/$w.data" --stdio --no-children --sort comm,dso --percent-limit 1 \
      2>/dev/null | grep -v '^#' | grep -v '^$' | head -20 >>"$OUT/profile_$tag$w.txt" || true
  done
  grep '^{' "$d/kpl-bench.out" >"$OUT/profile_${tag}run.json" || true
  log "wrote $OUT/profile_${tag}daemon.txt, $OUT/profile_${tag}client.txt"
}

case $MODE in
all | matrix | quick) run_matrix ;;
profile) run_profile ;;
*)
  sed -n '4,16p' "$0"
  exit 2
  ;;
esac
