#!/usr/bin/env bash
# Interop of our aggregation format code with npm aws-kinesis-agg 4.2.8 (independent).
#   1. npm aggregate -> our kpl-deagg --json --strict -> user records = spec (pk, data,
#      EHK exactly, hash key). Spec avoids what npm's aggregator gets wrong
#      (integer-looking keys). Multi-record aggregates must be byte-identical to what
#      our kp-agg-tool makes from the same groups (same canonical KPL encoding).
#   2. our kp-agg-tool -> npm deaggregate -> user records = spec (pk, data; EHK only where
#      the spec gives one: npm reports a wrong EHK for records without one). Spec
#      includes integer-looking keys. Also our own round trip through kpl-deagg (with
#      hash keys), and the outer keys of every Kinesis record.
# Specs are random but seeded: KP_INTEROP_SEED=<n> reproduces a run (the seed is
# printed); KP_INTEROP_AGGREGATES sets the number of aggregates per direction (40).
set -euo pipefail

SRC=${KP_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BIN=${KP_BIN_DIR:-$SRC/build/bin}
INTEROP="$SRC/tools/interop"
SEED=${KP_INTEROP_SEED:-$(((RANDOM << 15 | RANDOM) % 1000000))}
AGGS=${KP_INTEROP_AGGREGATES:-40}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kp-test-interop.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

fail() {
  echo "FAIL (seed $SEED; rerun with KP_INTEROP_SEED=$SEED): $*" >&2
  exit 1
}

echo "seed $SEED, $AGGS aggregates per direction"

[[ -x $BIN/kpl-deagg ]] || fail "$BIN/kpl-deagg not built"
AGG_TOOL=$BIN/kp-agg-tool
if [[ ! -x $AGG_TOOL ]]; then
  # tools/CMakeLists.txt builds it once the top level has add_subdirectory(tools);
  # until then build it here against the build's static format library.
  lib=$BIN/../lib/libkp_format.a
  [[ -f $lib ]] || fail "no $AGG_TOOL and no $lib to build it from"
  AGG_TOOL=$WORK/kp-agg-tool
  "${CC:-cc}" -std=gnu11 -O2 -D_GNU_SOURCE -I"$SRC" -I"$SRC/include" \
    "$INTEROP/kp_agg_tool.c" "$lib" -ljansson -lcrypto -o "$AGG_TOOL" ||
    fail "could not build kp-agg-tool"
fi

# Checks the outer keys of our Kinesis records against the spec groups: one record per
# group, pk "a" and EHK = first record's hash key when aggregated, else the record's
# own pk and hash key.
check_outer() { # spec kinesis
  # shellcheck disable=SC2016 # JavaScript, not shell
  node -e '
    const fs = require("fs"), crypto = require("crypto");
    const read = (f) => fs.readFileSync(f, "utf8").split("\n").filter(Boolean).map(JSON.parse);
    const spec = read(process.argv[1]), kin = read(process.argv[2]);
    const groups = [];
    for (const r of spec) {
      if (!groups.length || groups[groups.length - 1][0].group !== r.group) groups.push([]);
      groups[groups.length - 1].push(r);
    }
    const hk = (r) => r.ehk != null ? BigInt(r.ehk).toString()
      : BigInt("0x" + crypto.createHash("md5").update(r.pk, "utf8").digest("hex")).toString();
    if (groups.length !== kin.length) {
      console.error(`outer: ${groups.length} groups but ${kin.length} Kinesis records`);
      process.exit(1);
    }
    groups.forEach((g, i) => {
      const k = kin[i], want = { pk: g.length > 1 ? "a" : g[0].pk, ehk: hk(g[0]), count: g.length };
      if (k.partitionKey !== want.pk || k.explicitHashKey !== want.ehk || k.count !== want.count) {
        console.error(`outer: Kinesis record ${i}: want ${JSON.stringify(want)}, got ` +
          JSON.stringify({ pk: k.partitionKey, ehk: k.explicitHashKey, count: k.count }));
        process.exit(1);
      }
    });' "$1" "$2"
}

# --- direction 1: npm aggregate -> our kpl-deagg ------------------------------------
node "$INTEROP/gen_spec.js" --seed "$SEED" --aggregates "$AGGS" --npm-safe >"$WORK/spec1.jsonl"
node "$INTEROP/agg.js" aggregate <"$WORK/spec1.jsonl" >"$WORK/npm1.jsonl" ||
  fail "npm aggregate failed"
node "$INTEROP/to_get_records.js" <"$WORK/npm1.jsonl" >"$WORK/npm1.json"
"$BIN/kpl-deagg" --json --strict <"$WORK/npm1.json" >"$WORK/ours1.jsonl" ||
  fail "kpl-deagg rejected npm's aggregates"
node "$INTEROP/compare.js" "$WORK/spec1.jsonl" "$WORK/ours1.jsonl" --ehk exact --hash-key ||
  fail "npm aggregate -> kpl-deagg: user records differ"

# Byte-identical multi-record aggregates (npm always aggregates, even a group of one).
"$AGG_TOOL" <"$WORK/spec1.jsonl" >"$WORK/ours_enc1.jsonl" 2>/dev/null || fail "kp-agg-tool failed"
# shellcheck disable=SC2016 # JavaScript, not shell
node -e '
  const fs = require("fs");
  const read = (f) => fs.readFileSync(f, "utf8").split("\n").filter(Boolean).map(JSON.parse);
  const npm = read(process.argv[1]), ours = read(process.argv[2]);
  if (npm.length !== ours.length) { console.error(`${npm.length} vs ${ours.length} records`); process.exit(1); }
  let same = 0;
  for (let i = 0; i < npm.length; i++) {
    if (npm[i].count < 2) continue;
    if (npm[i].data !== ours[i].data) {
      const a = Buffer.from(npm[i].data, "base64"), b = Buffer.from(ours[i].data, "base64");
      let at = 0;
      while (at < a.length && at < b.length && a[at] === b[at]) at++;
      console.error(`aggregate ${i} (${npm[i].count} records): npm ${a.length} bytes, ours ` +
        `${b.length} bytes, first difference at byte ${at}`);
      process.exit(1);
    }
    same++;
  }
  console.log(`ok: ${same} multi-record aggregates byte-identical to npm`);
' "$WORK/npm1.jsonl" "$WORK/ours_enc1.jsonl" || fail "our encoding differs from npm's"

# --- direction 2: our kp-agg-tool -> npm deaggregate --------------------------------
node "$INTEROP/gen_spec.js" --seed "$((SEED + 1))" --aggregates "$AGGS" >"$WORK/spec2.jsonl"
"$AGG_TOOL" <"$WORK/spec2.jsonl" >"$WORK/ours2.jsonl" 2>/dev/null || fail "kp-agg-tool failed"
check_outer "$WORK/spec2.jsonl" "$WORK/ours2.jsonl" || fail "outer keys of our Kinesis records"
node "$INTEROP/agg.js" deaggregate <"$WORK/ours2.jsonl" >"$WORK/npm2.jsonl" ||
  fail "npm deaggregate rejected our aggregates"
node "$INTEROP/compare.js" "$WORK/spec2.jsonl" "$WORK/npm2.jsonl" --ehk given ||
  fail "kp-agg-tool -> npm deaggregate: user records differ"
# Our own round trip over the same records. EHKs only where given: a group of one is
# sent raw with its hash key as the Kinesis record's EHK, which a consumer then sees.
node "$INTEROP/to_get_records.js" <"$WORK/ours2.jsonl" >"$WORK/ours2.json"
"$BIN/kpl-deagg" --json --strict <"$WORK/ours2.json" >"$WORK/rt2.jsonl" ||
  fail "kpl-deagg rejected our own aggregates"
node "$INTEROP/compare.js" "$WORK/spec2.jsonl" "$WORK/rt2.jsonl" --ehk given --hash-key ||
  fail "kp-agg-tool -> kpl-deagg: user records differ"

echo "PASS test_interop_agg (seed $SEED)"
