#!/usr/bin/env node
// The npm aws-kinesis-agg implementation (pinned in tools/npm) as a JSON-lines filter,
// an independent oracle for our encoder and de-aggregator.
//
//   node tools/interop/agg.js aggregate [--max-count N] < spec.jsonl > kinesis.jsonl
//   node tools/interop/agg.js deaggregate [--no-checksum] < kinesis.jsonl > user.jsonl
//
// Spec (user records), one JSON object per line:
//   {"pk": "<partition key>", "ehk": "<decimal>" | null (optional), "data": "<base64>",
//    "group": <any> (optional)}
// aggregate: consecutive records with the same "group" value form one aggregated Kinesis
// record (it fails if a group does not fit in one record); without "group", records are
// packed in order up to --max-count (default 500) per aggregate and the package's own
// 1 MiB size limit. Output, one per Kinesis record:
//   {"partitionKey": "..", "explicitHashKey": "<decimal>" | null, "data": "<base64>",
//    "count": <user records in it>}
// npm always emits the magic/protobuf form, even for a group of one.
//
// deaggregate: input lines are Kinesis records, either our form above or GetRecords
// form ({"PartitionKey", "ExplicitHashKey"?, "Data", "SequenceNumber"}); a line holding
// a whole GetRecords response ({"Records": [...]}) is expanded. Output, one per user
// record: {"pk", "ehk" (null if none reported), "data", "seq", "subseq"}.
//
// Known aws-kinesis-agg 4.2.8 bugs (docs: local-kinesis.md): its aggregator builds the
// key tables with Object.keys(), so integer-looking keys (canonical decimal < 2^32-1,
// partition keys or EHKs) are reordered and records point at the wrong key; its
// de-aggregator reports the first EHK of the table for sub-records that have none.
'use strict';

const path = require('path');
const readline = require('readline');

const agg = require(path.join(__dirname, '..', 'npm', 'node_modules', 'aws-kinesis-agg'));

function die(msg) {
  process.stderr.write(`agg.js: ${msg}\n`);
  process.exit(1);
}

function usage() {
  process.stderr.write(
    'usage: agg.js aggregate [--max-count N] < spec.jsonl\n' +
      '       agg.js deaggregate [--no-checksum] < kinesis.jsonl\n',
  );
  process.exit(2);
}

async function* jsonLines() {
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  let n = 0;
  for await (const line of rl) {
    n++;
    if (line.trim() === '') continue;
    try {
      yield JSON.parse(line);
    } catch (e) {
      die(`stdin line ${n}: ${e.message}`);
    }
  }
}

// Writes with backpressure so large outputs do not pile up in memory.
function writeLine(obj) {
  const ok = process.stdout.write(JSON.stringify(obj) + '\n');
  return ok ? null : new Promise((resolve) => process.stdout.once('drain', resolve));
}

function encodedToLine(enc, count) {
  return {
    partitionKey: enc.partitionKey,
    explicitHashKey: enc.ExplicitHashKey !== undefined ? String(enc.ExplicitHashKey) : null,
    data: enc.data.toString('base64'),
    count,
  };
}

async function aggregate(args) {
  let maxCount = 500;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--max-count' && i + 1 < args.length && /^[1-9][0-9]*$/.test(args[i + 1])) {
      maxCount = Number(args[++i]);
    } else {
      usage();
    }
  }
  const ra = new agg.RecordAggregator();
  let group; // current group value (grouped mode)
  let grouped = null; // decided by the first record
  let n = 0;
  const flush = async () => {
    const count = ra.length();
    if (count === 0) return;
    const w = writeLine(encodedToLine(ra.build(), count));
    if (w) await w;
  };
  for await (const r of jsonLines()) {
    n++;
    if (typeof r.pk !== 'string' || typeof r.data !== 'string') die(`record ${n}: needs pk and data`);
    const rec = { partitionKey: r.pk, data: Buffer.from(r.data, 'base64') };
    if (r.ehk !== undefined && r.ehk !== null) rec.explicitHashKey = String(r.ehk);
    const hasGroup = Object.prototype.hasOwnProperty.call(r, 'group');
    if (grouped === null) grouped = hasGroup;
    if (grouped !== hasGroup) die(`record ${n}: either every record has "group" or none`);
    if (grouped) {
      if (ra.length() > 0 && r.group !== group) await flush();
      group = r.group;
      if (!ra.checkIfUserRecordFits(rec)) die(`record ${n}: group ${JSON.stringify(group)} exceeds 1 MiB`);
    } else if (ra.length() >= maxCount || !ra.checkIfUserRecordFits(rec)) {
      await flush();
    }
    ra.addUserRecord(rec); // throws if a single record is too large
  }
  await flush();
}

function toV2(k) {
  const pick = (a, b) => (k[a] !== undefined ? k[a] : k[b]);
  const rec = {
    partitionKey: pick('partitionKey', 'PartitionKey'),
    data: pick('data', 'Data'),
    sequenceNumber: pick('sequenceNumber', 'SequenceNumber'),
  };
  const ehk = pick('explicitHashKey', 'ExplicitHashKey');
  if (ehk !== undefined && ehk !== null) rec.explicitPartitionKey = String(ehk);
  if (typeof rec.data !== 'string') die('Kinesis record without base64 data');
  return rec;
}

async function deaggregate(args) {
  let checksum = true;
  for (const a of args) {
    if (a === '--no-checksum') checksum = false;
    else usage();
  }
  let n = 0;
  for await (const line of jsonLines()) {
    const kinesisRecords = Array.isArray(line.Records) ? line.Records : [line];
    for (const k of kinesisRecords) {
      n++;
      const v2 = toV2(k);
      let out = null;
      agg.deaggregateSync(v2, checksum, (err, users) => {
        if (err) die(`Kinesis record ${n}: ${err.message}`);
        out = users;
      });
      if (out === null) die(`Kinesis record ${n}: de-aggregation did not complete`);
      for (const u of out) {
        const w = writeLine({
          pk: u.partitionKey,
          ehk: u.explicitPartitionKey !== undefined ? String(u.explicitPartitionKey) : null,
          data: u.data,
          seq: u.sequenceNumber === undefined ? null : u.sequenceNumber,
          subseq: u.subSequenceNumber === undefined ? null : u.subSequenceNumber,
        });
        if (w) await w;
      }
    }
  }
}

async function main() {
  const [mode, ...args] = process.argv.slice(2);
  if (mode === 'aggregate') await aggregate(args);
  else if (mode === 'deaggregate') await deaggregate(args);
  else usage();
}

main().catch((e) => die(e.stack || String(e)));
