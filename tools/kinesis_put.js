#!/usr/bin/env node
// Puts Kinesis records (JSON lines {partitionKey, explicitHashKey?, data (base64)}, as
// written by kp-agg-tool / agg.js aggregate) into a stream with PutRecords: batches of
// <= 500 records and <= 5 MiB, in order; records that fail are retried (bounded).
//
//   node tools/kinesis_put.js URL STREAM < kinesis.jsonl
// Prints one JSON summary line: {"records": n, "requests": n, "retried": n, "shards": {..}}.
'use strict';

const fs = require('fs');
const path = require('path');
const { KinesisClient } = require(path.join(__dirname, 'emulator', 'kinesis_client.js'));

const MAX_COUNT = 500;
const MAX_BYTES = 5 * 1024 * 1024;
const MAX_ATTEMPTS = 10;

async function main() {
  const [url, stream] = process.argv.slice(2);
  if (!url || !stream) {
    process.stderr.write('usage: kinesis_put.js URL STREAM < kinesis.jsonl\n');
    process.exit(2);
  }
  const lines = fs.readFileSync(0, 'utf8').split('\n').filter((l) => l.trim() !== '');
  const entries = lines.map((l) => {
    const k = JSON.parse(l);
    const e = { PartitionKey: k.partitionKey, Data: k.data };
    if (k.explicitHashKey !== undefined && k.explicitHashKey !== null) e.ExplicitHashKey = k.explicitHashKey;
    e.size = Buffer.byteLength(k.data, 'base64') + Buffer.byteLength(k.partitionKey, 'utf8');
    return e;
  });
  const client = new KinesisClient(url);
  const stats = { records: 0, requests: 0, retried: 0, shards: {} };
  let i = 0;
  while (i < entries.length) {
    let batch = [];
    let bytes = 0;
    while (i < entries.length && batch.length < MAX_COUNT && bytes + entries[i].size <= MAX_BYTES) {
      bytes += entries[i].size;
      batch.push(entries[i++]);
    }
    if (batch.length === 0) throw new Error(`record ${i} is larger than a PutRecords request`);
    for (let attempt = 1; batch.length > 0; attempt++) {
      if (attempt > MAX_ATTEMPTS) throw new Error(`${batch.length} records still failing after ${MAX_ATTEMPTS} attempts`);
      const r = await client.call('PutRecords', {
        StreamName: stream,
        Records: batch.map(({ size, ...e }) => e),
      });
      stats.requests++;
      const failed = [];
      r.Records.forEach((res, k) => {
        if (res.ErrorCode) failed.push(batch[k]);
        else {
          stats.records++;
          stats.shards[res.ShardId] = (stats.shards[res.ShardId] || 0) + 1;
        }
      });
      stats.retried += failed.length;
      batch = failed;
    }
  }
  client.close();
  process.stdout.write(JSON.stringify(stats) + '\n');
}

main().catch((e) => {
  process.stderr.write(`kinesis_put.js: ${e.message}\n`);
  process.exit(1);
});
