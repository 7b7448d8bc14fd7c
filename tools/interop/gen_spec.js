#!/usr/bin/env node
// Seeded generator of user-record specs (JSON lines {pk, ehk?, data, group?}) for the
// interop tests and the demo. Same seed + options = same output.
//
//   gen_spec.js --seed S --aggregates N [--npm-safe]   groups of 1..500 records
//   gen_spec.js --seed S --records N [--max-data B]    no groups (the tool packs them)
//
// Grouped mode: each group holds 1..500 records (some groups of exactly 1 and 500),
// data 0..~100 KiB (mostly small, a group stays under ~900 KiB so it fits one Kinesis
// record), Unicode partition keys (ASCII, Latin-1, CJK, astral/emoji, 1..256 code
// points), keys reused within a group, ~30% explicit hash keys (0..2^128-1, some with
// leading zeros). --npm-safe avoids what npm aws-kinesis-agg's aggregator gets wrong:
// integer-looking partition keys and EHKs (canonical decimals below 2^32-1).
'use strict';

function die(msg) {
  process.stderr.write(`gen_spec.js: ${msg}\n`);
  process.exit(2);
}

const opts = { seed: 1, aggregates: 0, records: 0, npmSafe: false, maxData: 1024 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const num = () => {
    const v = argv[++i];
    if (v === undefined || !/^[0-9]+$/.test(v)) die(`${a} needs a non-negative integer`);
    return Number(v);
  };
  if (a === '--seed') opts.seed = num();
  else if (a === '--aggregates') opts.aggregates = num();
  else if (a === '--records') opts.records = num();
  else if (a === '--max-data') opts.maxData = num();
  else if (a === '--npm-safe') opts.npmSafe = true;
  else die(`unknown option ${a}`);
}
if (!opts.aggregates === !opts.records) die('give exactly one of --aggregates N, --records N');

// mulberry32: small, fast, seedable.
let state = opts.seed >>> 0;
function rand() {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1)); // inclusive
const pick = (arr) => arr[Math.floor(rand() * arr.length)];

const ALPHABETS = [
  'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/ ',
  'àéîõüßñçÆØÅœ€£¥§¶',
  '漢字かなカナ한국어中文分区键',
  '😀🚀🎉𝄞🌍🧪', // astral: surrogate pairs in JS, 4 bytes in UTF-8
  '"\\\t\n\u0001\u007f\u2028', // JSON escapes and control characters
];

function isIntegerLike(s) {
  return /^(0|[1-9][0-9]*)$/.test(s) && BigInt(s) < 4294967295n;
}

function randomKey() {
  if (!opts.npmSafe && rand() < 0.08) return String(int(0, 100000)); // integer-looking
  const len = rand() < 0.05 ? int(200, 256) : int(1, 24);
  const alphabet = Array.from(rand() < 0.6 ? ALPHABETS[0] : pick(ALPHABETS));
  let s = '';
  for (let i = 0; i < len; i++) s += pick(alphabet);
  return isIntegerLike(s) && opts.npmSafe ? `k${s}` : s;
}

function randomEhk() {
  let v = 0n;
  const r = rand();
  if (r < 0.05) v = 0n;
  else if (r < 0.1) v = (1n << 128n) - 1n;
  else if (r < 0.15) v = BigInt(int(1, 1000000));
  else for (let i = 0; i < 4; i++) v = (v << 32n) | BigInt(Math.floor(rand() * 4294967296));
  let s = v.toString();
  if (rand() < 0.05 && s.length < 39) s = '0'.repeat(int(1, 39 - s.length)) + s; // leading zeros
  if (opts.npmSafe && isIntegerLike(s)) s = (v + 4294967296n).toString();
  return s;
}

function randomData(limit) {
  const r = rand();
  let n;
  if (r < 0.05) n = 0;
  else if (r < 0.9) n = int(1, 200);
  else if (r < 0.98) n = int(200, 8192);
  else n = int(8192, 100 * 1024);
  n = Math.min(n, limit);
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rand() * 256);
  return b.toString('base64');
}

function line(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

if (opts.aggregates) {
  for (let g = 0; g < opts.aggregates; g++) {
    const r = rand();
    const count = g === 0 ? 1 : g === 1 ? 500 : r < 0.1 ? 1 : r < 0.7 ? int(2, 50) : int(51, 500);
    const keys = Array.from({ length: int(1, Math.min(count, 40)) }, randomKey);
    const ehks = Array.from({ length: int(1, 5) }, randomEhk);
    let budget = 900 * 1024;
    for (let i = 0; i < count; i++) {
      const data = randomData(Math.max(0, budget - count * 300));
      budget -= Buffer.byteLength(data, 'base64') + 300;
      const rec = { pk: rand() < 0.7 ? pick(keys) : randomKey() };
      if (rand() < 0.3) rec.ehk = pick(ehks);
      rec.data = data;
      rec.group = g;
      line(rec);
    }
  }
} else {
  // Flat mode (demo): data of 0..maxData bytes, keys from a pool, 10% EHKs.
  const keys = Array.from({ length: 1000 }, (_, i) => `user-${i}-${randomKey()}`);
  for (let i = 0; i < opts.records; i++) {
    const n = int(0, opts.maxData);
    const b = Buffer.allocUnsafe(n);
    for (let k = 0; k < n; k++) b[k] = Math.floor(rand() * 256);
    const rec = { pk: pick(keys) };
    if (rand() < 0.1) rec.ehk = randomEhk();
    rec.data = b.toString('base64');
    line(rec);
  }
}
