#!/usr/bin/env node
// Compares de-aggregated user records with the spec they were made from, in order.
//
//   compare.js SPEC.jsonl GOT.jsonl [--ehk exact|given] [--hash-key]
//
// SPEC: {pk, ehk?, data} lines (gen_spec.js). GOT: user records as printed by our
// kpl-deagg ({partitionKey, explicitHashKey, hashKey, data, ...}) or by agg.js
// deaggregate ({pk, ehk, data, ...}).
//   --ehk exact  GOT's EHK must equal the spec's, null where the spec has none (default)
//   --ehk given  compare EHKs only where the spec gives one (npm's de-aggregator reports
//                a wrong EHK for records without one), as numbers: a record that goes
//                out alone (raw) carries its EHK in canonical form, without the leading
//                zeros a spec may give it (Kinesis reads the number either way)
//   --hash-key   also check GOT's hashKey = EHK, else MD5(UTF-8 pk), in decimal
// Exits 1 on the first mismatches (up to 10 shown, with both sides), 0 if all match.
'use strict';

const crypto = require('crypto');
const fs = require('fs');

function die(msg, code = 2) {
  process.stderr.write(`compare.js: ${msg}\n`);
  process.exit(code);
}

const args = process.argv.slice(2);
const files = [];
let ehkMode = 'exact';
let checkHashKey = false;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--ehk' && (args[i + 1] === 'exact' || args[i + 1] === 'given')) ehkMode = args[++i];
  else if (args[i] === '--hash-key') checkHashKey = true;
  else if (!args[i].startsWith('--')) files.push(args[i]);
  else die(`unknown option ${args[i]}`);
}
if (files.length !== 2) die('usage: compare.js SPEC.jsonl GOT.jsonl [--ehk exact|given] [--hash-key]');

function readLines(file) {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l, i) => {
      try {
        return JSON.parse(l);
      } catch (e) {
        return die(`${file}:${i + 1}: ${e.message}`);
      }
    });
}

const norm = (r) => ({
  pk: r.pk !== undefined ? r.pk : r.partitionKey,
  ehk: (r.ehk !== undefined ? r.ehk : r.explicitHashKey) ?? null,
  data: r.data,
  hashKey: r.hashKey,
});

const spec = readLines(files[0]).map(norm);
const got = readLines(files[1]).map(norm);

const short = (s) => (typeof s === 'string' && s.length > 80 ? `${s.slice(0, 80)}...(${s.length} chars)` : s);
const show = (r) => JSON.stringify({ pk: short(r.pk), ehk: r.ehk, data: short(r.data), hashKey: r.hashKey });

function hashKeyOf(r) {
  if (r.ehk !== null) return BigInt(r.ehk).toString();
  return BigInt('0x' + crypto.createHash('md5').update(r.pk, 'utf8').digest('hex')).toString();
}

const problems = [];
if (spec.length !== got.length) problems.push(`count: spec has ${spec.length} user records, got ${got.length}`);
for (let i = 0; i < Math.min(spec.length, got.length) && problems.length < 10; i++) {
  const s = spec[i];
  const g = got[i];
  const why = [];
  if (s.pk !== g.pk) why.push('partition key');
  if (s.data !== g.data) why.push('data');
  const sameNumber = (a, b) => a !== null && b !== null && /^[0-9]+$/.test(b) && BigInt(a) === BigInt(b);
  if (ehkMode === 'exact' ? s.ehk !== g.ehk : s.ehk !== null && !sameNumber(s.ehk, g.ehk))
    why.push('explicit hash key');
  if (checkHashKey && g.hashKey !== hashKeyOf(s)) why.push(`hash key (want ${hashKeyOf(s)})`);
  if (why.length) problems.push(`record ${i}: ${why.join(', ')} differ\n  want ${show(s)}\n  got  ${show(g)}`);
}
if (problems.length) {
  process.stderr.write(`MISMATCH ${files[0]} vs ${files[1]}:\n${problems.join('\n')}\n`);
  process.exit(1);
}
process.stdout.write(`ok: ${spec.length} user records match\n`);
