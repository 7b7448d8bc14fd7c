#!/usr/bin/env node
// Reads every shard of a stream from TRIM_HORIZON until caught up.
//
//   node tools/kinesis_read.js URL STREAM                 JSON lines, one per Kinesis
//        record: {ShardId, SequenceNumber, PartitionKey, Data, ...GetRecords fields}
//   node tools/kinesis_read.js URL STREAM --out-dir DIR   DIR/shards.json (ListShards
//        Shards) and DIR/<ShardId>.json, a GetRecords-style {"Records": [...]} per
//        shard (the input of `kpl-deagg --json`).
'use strict';

const fs = require('fs');
const path = require('path');
const { KinesisClient } = require(path.join(__dirname, 'emulator', 'kinesis_client.js'));

async function main() {
  const args = process.argv.slice(2);
  let outDir = null;
  const pos = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--out-dir' && i + 1 < args.length) outDir = args[++i];
    else pos.push(args[i]);
  }
  if (pos.length !== 2) {
    process.stderr.write('usage: kinesis_read.js URL STREAM [--out-dir DIR]\n');
    process.exit(2);
  }
  const [url, stream] = pos;
  const client = new KinesisClient(url);
  const shards = await client.readStream(stream);
  client.close();
  if (outDir) {
    fs.mkdirSync(outDir, { recursive: true });
    fs.writeFileSync(path.join(outDir, 'shards.json'), JSON.stringify(shards.map((s) => s.shard)) + '\n');
    for (const { shard, records } of shards) {
      fs.writeFileSync(path.join(outDir, `${shard.ShardId}.json`), JSON.stringify({ Records: records }) + '\n');
    }
  } else {
    for (const { shard, records } of shards) {
      for (const r of records) process.stdout.write(JSON.stringify({ ShardId: shard.ShardId, ...r }) + '\n');
    }
  }
}

main().catch((e) => {
  process.stderr.write(`kinesis_read.js: ${e.message}\n`);
  process.exit(1);
});
