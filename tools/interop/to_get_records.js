#!/usr/bin/env node
// Kinesis records as JSON lines ({partitionKey, explicitHashKey?, data} as written by
// agg.js aggregate / kp-agg-tool) -> one GetRecords-style document on stdout:
// {"Records": [{"PartitionKey", "ExplicitHashKey"?, "Data", "SequenceNumber"}]}, the
// input of `kpl-deagg --json`. Sequence numbers are the line index (0, 1, ...).
'use strict';

const fs = require('fs');

const lines = fs.readFileSync(0, 'utf8').split('\n').filter((l) => l.trim() !== '');
const records = lines.map((l, i) => {
  const k = JSON.parse(l);
  const r = { PartitionKey: k.partitionKey, Data: k.data, SequenceNumber: String(i) };
  if (k.explicitHashKey !== undefined && k.explicitHashKey !== null) r.ExplicitHashKey = k.explicitHashKey;
  return r;
});
process.stdout.write(JSON.stringify({ Records: records }) + '\n');
