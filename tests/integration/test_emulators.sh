#!/usr/bin/env bash
# Smoke test of tools/emulator against both real emulators: start on ephemeral ports,
# create a 2-shard stream, PutRecord + ListShards + GetRecords through curl, check the
# record comes back intact on the shard PutRecord named, stop by PID, check the PID is
# gone. For kinesis-local also serve TLS with a CA made here and verify it with curl.
set -euo pipefail

SRC=${KP_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
EMU="$SRC/tools/emulator/emulator.sh"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kp-test-emulators.XXXXXX")
PIDS=()

cleanup() {
  local p
  for p in "${PIDS[@]}"; do [[ -z $p ]] || "$EMU" stop "$p" || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# json EXPR < JSON: evaluates EXPR with `j` bound to the parsed input, prints the result.
json() {
  node -e '
    let s = ""; process.stdin.on("data", (c) => (s += c)).on("end", () => {
      const j = JSON.parse(s); const v = eval(process.argv[1]);
      process.stdout.write((typeof v === "string" ? v : JSON.stringify(v)) + "\n");
    });' "$1"
}

make_ca() { # dir: CA + server cert for 127.0.0.1 signed by it
  local d=$1
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/ca.key" -out "$d/ca.crt" \
    -days 1 -subj /CN=kp-test-ca 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$d/srv.key" -out "$d/srv.csr" \
    -subj /CN=127.0.0.1 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$d/ext"
  openssl x509 -req -in "$d/srv.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -out "$d/srv.crt" -days 1 -extfile "$d/ext" 2>/dev/null
}

smoke() { # kind
  local kind=$1 dir="$WORK/$1" env_line url pid tls_args=()
  mkdir -p "$dir"
  if [[ $kind == kinesis-local ]]; then
    make_ca "$dir"
    tls_args=(--tls-cert "$dir/srv.crt" --tls-key "$dir/srv.key")
  fi
  env_line=$("$EMU" start "$kind" --dir "$dir/state" "${tls_args[@]}")
  echo "$kind: $env_line"
  pid=$(sed -n 's/.*KP_EMU_PID=\([0-9]*\).*/\1/p' <<<"$env_line")
  [[ -n $pid ]] || fail "$kind: no PID in '$env_line'"
  PIDS+=("$pid")
  unset KP_EMU_TLS_PORT KP_EMU_TLS_URL
  eval "$env_line"
  url=$KP_EMU_URL
  [[ $KP_EMU_PORT =~ ^[0-9]+$ && $url == "http://127.0.0.1:$KP_EMU_PORT" ]] || fail "$kind: bad URL $url"
  # Bound to loopback only.
  if command -v ss >/dev/null; then
    local locals
    local p
    for p in $KP_EMU_PORT ${KP_EMU_TLS_PORT:-}; do
      locals=$(ss -ltnH "sport = :$p" | awk '{print $4}' | sort -u)
      [[ $locals == "127.0.0.1:$p" ]] || fail "$kind: listening on '$locals'"
    done
  fi

  "$EMU" create-stream "$url" smoke 2
  local shards
  shards=$("$EMU" api "$url" ListShards '{"StreamName":"smoke"}')
  [[ $(json 'j.Shards.length' <<<"$shards") == 2 ]] || fail "$kind: ListShards: $shards"

  local data pk put shard seq
  data=$(printf 'h\xc3\xa9llo, \x00\x01 kinesis' | base64 -w0)
  pk="smoke-pk-é"
  put=$("$EMU" api "$url" PutRecord \
    "{\"StreamName\":\"smoke\",\"PartitionKey\":\"$pk\",\"Data\":\"$data\"}")
  shard=$(json 'j.ShardId' <<<"$put")
  seq=$(json 'j.SequenceNumber' <<<"$put")
  [[ $shard == shardId-* && $seq =~ ^[0-9]+$ ]] || fail "$kind: PutRecord: $put"
  # The shard must be the one whose range holds MD5(pk).
  local expect
  expect=$(
    json "(() => { const h = BigInt('0x' + require('crypto').createHash('md5')
      .update('$pk').digest('hex'));
      return j.Shards.find((s) => BigInt(s.HashKeyRange.StartingHashKey) <= h &&
        h <= BigInt(s.HashKeyRange.EndingHashKey)).ShardId; })()" <<<"$shards"
  )
  [[ $shard == "$expect" ]] || fail "$kind: record went to $shard, hash range says $expect"

  local it got
  it=$("$EMU" api "$url" GetShardIterator \
    "{\"StreamName\":\"smoke\",\"ShardId\":\"$shard\",\"ShardIteratorType\":\"TRIM_HORIZON\"}" |
    json 'j.ShardIterator')
  got=$("$EMU" api "$url" GetRecords "{\"ShardIterator\":\"$it\",\"Limit\":100}")
  [[ $(json 'j.Records.length' <<<"$got") == 1 ]] || fail "$kind: GetRecords: $got"
  [[ $(json 'j.Records[0].Data' <<<"$got") == "$data" ]] || fail "$kind: data differs: $got"
  [[ $(json 'j.Records[0].PartitionKey' <<<"$got") == "$pk" ]] || fail "$kind: pk differs: $got"
  [[ $(json 'j.Records[0].SequenceNumber' <<<"$got") == "$seq" ]] || fail "$kind: seq differs"

  if [[ $kind == kinesis-local ]]; then
    [[ $KP_EMU_TLS_URL == "https://127.0.0.1:$KP_EMU_TLS_PORT" ]] || fail "no TLS URL"
    KP_EMU_CACERT="$dir/ca.crt" "$EMU" api "$KP_EMU_TLS_URL" ListStreams >/dev/null ||
      fail "TLS with our CA did not verify"
    # A client that does not trust our CA must refuse the server.
    if curl -sS --max-time 10 -o /dev/null "$KP_EMU_TLS_URL/" 2>/dev/null; then
      fail "TLS verified without our CA"
    fi
  fi

  "$EMU" stop "$pid"
  if [[ -r /proc/$pid/stat ]] && ! grep -qE '^[0-9]+ \(.*\) Z' "/proc/$pid/stat"; then
    fail "$kind: PID $pid still running after stop"
  fi
  PIDS=()
  echo "$kind: ok"
}

# KP_EMU_OWNER_PID: the emulator leaves with its owner, so a test that crashes before
# its own stop cannot leak one (seen: a segfaulting client test left kinesalite running).
owner_exit() { # kind
  local kind=$1 owner env_line pid
  sleep 300 &
  owner=$!
  env_line=$(KP_EMU_OWNER_PID=$owner "$EMU" start "$kind" --dir "$WORK/$kind-owner")
  pid=$(sed -n 's/.*KP_EMU_PID=\([0-9]*\).*/\1/p' <<<"$env_line")
  [[ -n $pid ]] || fail "$kind: no PID in '$env_line'"
  PIDS+=("$pid")
  kill -0 "$pid" || fail "$kind: emulator $pid not running"
  kill "$owner"
  wait "$owner" 2>/dev/null || true
  # Blocks until the PID is gone (tail polls it); bounded.
  timeout 20 tail --pid="$pid" -f /dev/null || fail "$kind: emulator $pid outlived its owner"
  PIDS=()
  echo "$kind: exits with its owner"
}

smoke kinesalite
smoke kinesis-local
owner_exit kinesalite
owner_exit kinesis-local
echo "PASS test_emulators"
