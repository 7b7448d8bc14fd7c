#!/usr/bin/env node
// Splits user records (JSON lines {pk, ehk?, data}) by the shard that owns each one's
// hash key (EHK, else MD5 of the UTF-8 partition key), as a producer must before
// aggregating (a consumer drops sub-records outside its shard's range).
//
//   node tools/shard_split.js SHARDS.json OUTPREFIX < spec.jsonl
// SHARDS.json: ListShards "Shards" array. Writes OUTPREFIX<ShardId>.jsonl per shard (in
// input order) and prints {"<ShardId>": count, ...}.
'use strict';

const crypto = require('crypto');
const fs = require('fs');

const [shardsFile, prefix] = process.argv.slice(2);
if (!shardsFile || !prefix) {
  process.stderr.write('usage: shard_split.js SHARDS.json OUTPREFIX < spec.jsonl\n');
  process.exit(2);
}
const shards = JSON.parse(fs.readFileSync(shardsFile, 'utf8'))
  .filter((s) => !(s.SequenceNumberRange && s.SequenceNumberRange.EndingSequenceNumber))
  .map((s) => ({
    id: s.ShardId,
    lo: BigInt(s.HashKeyRange.StartingHashKey),
    hi: BigInt(s.HashKeyRange.EndingHashKey),
    lines: [],
  }));
const lines = fs.readFileSync(0, 'utf8').split('\n').filter((l) => l.trim() !== '');
for (const l of lines) {
  const r = JSON.parse(l);
  const h =
    r.ehk !== undefined && r.ehk !== null
      ? BigInt(r.ehk)
      : BigInt('0x' + crypto.createHash('md5').update(r.pk, 'utf8').digest('hex'));
  const s = shards.find((x) => x.lo <= h && h <= x.hi);
  if (!s) throw new Error(`no open shard owns hash key ${h}`);
  s.lines.push(l);
}
const counts = {};
for (const s of shards) {
  fs.writeFileSync(`${prefix}${s.id}.jsonl`, s.lines.length ? s.lines.join('\n') + '\n' : '');
  counts[s.id] = s.lines.length;
}
process.stdout.write(JSON.stringify(counts) + '\n');
