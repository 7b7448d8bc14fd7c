#!/usr/bin/env bash
# Start/stop the real Kinesis emulators on 127.0.0.1 and talk to them with curl.
#
#   emulator.sh start kinesalite|kinesis-local [--dir STATEDIR] [--leveldb]
#                     [--tls-cert CRT.pem --tls-key KEY.pem]
#       Starts the emulator in the background on ephemeral ports, waits (bounded) until
#       it answers ListStreams, and prints one line for eval:
#         export KP_EMU_PID=.. KP_EMU_PORT=.. KP_EMU_URL=http://127.0.0.1:PORT KP_EMU_DIR=..
#       plus KP_EMU_TLS_PORT and KP_EMU_TLS_URL=https://127.0.0.1:TLS for kinesis-local.
#       STATEDIR (created if missing; a new temp dir without --dir) holds the emulator's
#       stdout/stderr (emulator.out/.err) and state; the caller removes it.
#       --leveldb (kinesalite): keep data in LevelDB under STATEDIR instead of memory
#       (kinesalite's in-memory store never frees data; use it for long runs).
#       --tls-cert/--tls-key (kinesis-local): serve TLS with this certificate.
#   emulator.sh stop PID
#       SIGTERM, bounded wait, then SIGKILL. Refuses a PID that is not an emulator.
#   emulator.sh create-stream URL NAME SHARDS
#       CreateStream, then waits (bounded) until the stream is ACTIVE.
#   emulator.sh api URL OPERATION [JSON]
#       One signed Kinesis JSON 1.1 call (body default {}); prints the response body;
#       fails on a non-2xx status (printing the body to stderr).
#
# Requests are signed by curl --aws-sigv4 with dummy credentials (the emulators do not
# verify signatures; the region comes from the signature scope). Environment:
#   KP_EMU_OWNER_PID (the emulator exits once this process is gone: a crashed test
#   cannot leak it), KP_EMU_SHARD_LIMIT (kinesalite: shards per account, 1000),
#   KP_EMU_REGION (us-east-1), KP_EMU_CACERT (CA file for https URLs; without it https
#   certificates are not verified), KP_EMU_START_TIMEOUT (s, 30), KP_EMU_STOP_TIMEOUT
#   (s, 10), KP_EMU_STREAM_TIMEOUT (s, 30).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REGION=${KP_EMU_REGION:-us-east-1}

die() {
  echo "emulator.sh: $*" >&2
  exit 1
}

usage() {
  sed -n '4,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# api URL OPERATION [JSON] -> body on stdout; non-zero on transport error or non-2xx.
api() {
  local url=$1 op=$2 body=${3:-'{}'} out status
  local tls=()
  if [[ $url == https:* ]]; then
    if [[ -n ${KP_EMU_CACERT:-} ]]; then tls=(--cacert "$KP_EMU_CACERT"); else tls=(--insecure); fi
  fi
  out=$(curl -sS --max-time 30 "${tls[@]}" \
    --aws-sigv4 "aws:amz:$REGION:kinesis" --user "AKIDKPEMULATOR:kp-dummy-secret" \
    -H "Content-Type: application/x-amz-json-1.1" \
    -H "X-Amz-Target: Kinesis_20131202.$op" \
    --data-binary @- -w '\n%{http_code}' "$url/" <<<"$body") || return 1
  status=${out##*$'\n'}
  out=${out%$'\n'*}
  if [[ $status != 2?? ]]; then
    printf '%s %s -> HTTP %s: %s\n' "$op" "$url" "$status" "$out" >&2
    return 1
  fi
  printf '%s\n' "$out"
}

# now in milliseconds (bash 5 EPOCHREALTIME)
now_ms() {
  local t=${EPOCHREALTIME/./}
  echo $((t / 1000))
}

# Is PID alive (and not a zombie)?
alive() {
  local state
  [[ -r /proc/$1/stat ]] || return 1
  state=$(sed -E 's/^.*\) ([A-Z]).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z && $state != X ]]
}

is_emulator() {
  local cmd
  cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ $cmd == *node* && ($cmd == *kinesalite.js* || $cmd == *kinesis-local*) ]]
}

cmd_stop() {
  (($# == 1)) || usage
  local pid=$1 deadline
  [[ $pid =~ ^[0-9]+$ ]] || die "stop: bad PID '$pid'"
  alive "$pid" || return 0
  is_emulator "$pid" || die "stop: PID $pid is not an emulator started by emulator.sh"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(($(now_ms) + ${KP_EMU_STOP_TIMEOUT:-10} * 1000))
  while alive "$pid" && (($(now_ms) < deadline)); do sleep 0.05; done
  if alive "$pid"; then
    echo "emulator.sh: PID $pid ignored SIGTERM; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$(($(now_ms) + 5000))
    while alive "$pid" && (($(now_ms) < deadline)); do sleep 0.05; done
    ! alive "$pid" || die "stop: PID $pid survived SIGKILL"
  fi
}

cmd_start() {
  (($# >= 1)) || usage
  local kind=$1 dir="" leveldb=0 tls_cert="" tls_key=""
  shift
  while (($#)); do
    case "$1" in
    --dir)
      (($# >= 2)) || usage
      dir=$2
      shift 2
      ;;
    --tls-cert)
      (($# >= 2)) || usage
      tls_cert=$2
      shift 2
      ;;
    --tls-key)
      (($# >= 2)) || usage
      tls_key=$2
      shift 2
      ;;
    --leveldb)
      leveldb=1
      shift
      ;;
    *) usage ;;
    esac
  done
  if [[ -n $dir ]]; then
    mkdir -p "$dir"
  else
    dir=$(mktemp -d "${TMPDIR:-/tmp}/kp-emu.XXXXXX")
  fi
  dir=$(cd "$dir" && pwd)
  local out="$dir/emulator.out" err="$dir/emulator.err" pid args=()
  : >"$out"
  : >"$err"
  case "$kind" in
  kinesalite)
    [[ -z $tls_cert && -z $tls_key ]] || die "start: --tls-* is for kinesis-local"
    ((leveldb == 0)) || args=(--path "$dir/leveldb")
    args+=(--shard-limit "${KP_EMU_SHARD_LIMIT:-1000}")
    node -r "$HERE/exit-with-owner.js" "$HERE/kinesalite.js" --port 0 "${args[@]}" </dev/null >"$out" 2>"$err" &
    pid=$!
    ;;
  kinesis-local)
    ((leveldb == 0)) || die "start: --leveldb is for kinesalite"
    [[ -z $tls_cert ]] || args=(--tls-cert "$tls_cert" --tls-key "$tls_key")
    "$HERE/kinesis-local" --dir "$dir" "${args[@]}" </dev/null >"$out" 2>"$err" &
    pid=$!
    ;;
  *) usage ;;
  esac

  local deadline port="" tls_port="" url="" ok=0
  deadline=$(($(now_ms) + ${KP_EMU_START_TIMEOUT:-30} * 1000))
  while (($(now_ms) < deadline)) && alive "$pid"; do
    if [[ -z $port ]]; then
      if [[ $kind == kinesalite ]]; then
        port=$(sed -n 's/^PORT \([0-9][0-9]*\)$/\1/p' "$out" | head -1)
      else
        port=$(sed -n 's/^KP_LISTEN 2 \([0-9][0-9]*\)$/\1/p' "$out" | head -1)
        tls_port=$(sed -n 's/^KP_LISTEN 1 \([0-9][0-9]*\)$/\1/p' "$out" | head -1)
        [[ -n $tls_port ]] || port=""
      fi
    fi
    if [[ -n $port ]]; then
      url="http://127.0.0.1:$port"
      if api "$url" ListStreams '{}' >/dev/null 2>&1 &&
        { [[ -z $tls_port ]] || KP_EMU_CACERT="" api "https://127.0.0.1:$tls_port" ListStreams '{}' >/dev/null 2>&1; }; then
        ok=1
        break
      fi
    fi
    sleep 0.05
  done
  if ((ok == 0)); then
    echo "emulator.sh: $kind did not become ready (pid $pid); its output:" >&2
    tail -n 20 "$out" "$err" >&2 || true
    if alive "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      sleep 0.5
      kill -KILL "$pid" 2>/dev/null || true
    fi
    exit 1
  fi
  local line qdir
  qdir=$(printf '%q' "$dir")
  line="export KP_EMU_PID=$pid KP_EMU_PORT=$port KP_EMU_URL=$url KP_EMU_DIR=$qdir"
  [[ -z $tls_port ]] || line+=" KP_EMU_TLS_PORT=$tls_port KP_EMU_TLS_URL=https://127.0.0.1:$tls_port"
  echo "$line"
}

cmd_create_stream() {
  (($# == 3)) || usage
  local url=$1 name=$2 shards=$3 deadline status=""
  [[ $shards =~ ^[0-9]+$ ]] || die "create-stream: bad shard count '$shards'"
  [[ $name =~ ^[a-zA-Z0-9_.-]{1,128}$ ]] || die "create-stream: bad stream name '$name'"
  api "$url" CreateStream "{\"StreamName\":\"$name\",\"ShardCount\":$shards}" >/dev/null
  deadline=$(($(now_ms) + ${KP_EMU_STREAM_TIMEOUT:-30} * 1000))
  while (($(now_ms) < deadline)); do
    status=$(api "$url" DescribeStreamSummary "{\"StreamName\":\"$name\"}" |
      sed -n 's/.*"StreamStatus" *: *"\([A-Z]*\)".*/\1/p')
    [[ $status == ACTIVE ]] && return 0
    sleep 0.05
  done
  die "create-stream: $name still '$status' after ${KP_EMU_STREAM_TIMEOUT:-30}s"
}

(($# >= 1)) || usage
cmd=$1
shift
case "$cmd" in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
create-stream) cmd_create_stream "$@" ;;
api)
  (($# >= 2 && $# <= 3)) || usage
  api "$@"
  ;;
-h | --help | help) usage ;;
*) usage ;;
esac
