// Minimal Kinesis JSON 1.1 client for the local emulators (tests, demo, benchmarks):
// SigV4-signed with dummy credentials (the emulators accept any), HTTP/1.1 keep-alive
// (the emulators break on the HTTP/2 the AWS JS SDK would use), http:// or https://.
//
//   const { KinesisClient } = require('./kinesis_client');
//   const k = new KinesisClient('http://127.0.0.1:4567', { region: 'us-east-1' });
//   const r = await k.call('ListShards', { StreamName: 's' });
//   await k.readStream('s') -> [{ shard, records: [GetRecords records...] }, ...]
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const https = require('https');

const hmac = (key, s) => crypto.createHmac('sha256', key).update(s, 'utf8').digest();
const sha256 = (s) => crypto.createHash('sha256').update(s, 'utf8').digest('hex');

class KinesisError extends Error {
  constructor(op, status, body) {
    let type = '';
    try {
      type = JSON.parse(body).__type || '';
    } catch (e) {
      type = '';
    }
    super(`${op}: HTTP ${status} ${type} ${body.slice(0, 300)}`);
    this.status = status;
    this.type = type;
  }
}

class KinesisClient {
  constructor(url, opts = {}) {
    this.url = new URL(url);
    this.region = opts.region || process.env.KP_EMU_REGION || 'us-east-1';
    this.akid = opts.accessKeyId || 'AKIDKPEMULATOR';
    this.secret = opts.secretAccessKey || 'kp-dummy-secret';
    this.timeoutMs = opts.timeoutMs || 30000;
    const tls = this.url.protocol === 'https:';
    this.mod = tls ? https : http;
    const agentOpts = { keepAlive: true, maxSockets: opts.maxSockets || 4 };
    if (tls) {
      const ca = opts.ca || process.env.KP_EMU_CACERT;
      if (ca) agentOpts.ca = fs.readFileSync(ca);
      else agentOpts.rejectUnauthorized = false;
    }
    this.agent = new this.mod.Agent(agentOpts);
  }

  close() {
    this.agent.destroy();
  }

  sign(op, body) {
    const now = new Date().toISOString().replace(/[-:]/g, '').replace(/\.[0-9]+/, '');
    const date = now.slice(0, 8);
    const host = this.url.host;
    const target = `Kinesis_20131202.${op}`;
    const signed = 'content-type;host;x-amz-date;x-amz-target';
    const canonical = [
      'POST',
      '/',
      '',
      `content-type:application/x-amz-json-1.1\nhost:${host}\nx-amz-date:${now}\nx-amz-target:${target}\n`,
      signed,
      sha256(body),
    ].join('\n');
    const scope = `${date}/${this.region}/kinesis/aws4_request`;
    const toSign = `AWS4-HMAC-SHA256\n${now}\n${scope}\n${sha256(canonical)}`;
    let key = hmac(`AWS4${this.secret}`, date);
    key = hmac(hmac(hmac(key, this.region), 'kinesis'), 'aws4_request');
    const sig = crypto.createHmac('sha256', key).update(toSign, 'utf8').digest('hex');
    return {
      'Content-Type': 'application/x-amz-json-1.1',
      'X-Amz-Date': now,
      'X-Amz-Target': target,
      Authorization: `AWS4-HMAC-SHA256 Credential=${this.akid}/${scope}, SignedHeaders=${signed}, Signature=${sig}`,
      'Content-Length': Buffer.byteLength(body),
    };
  }

  call(op, params) {
    const body = JSON.stringify(params || {});
    return new Promise((resolve, reject) => {
      const req = this.mod.request(
        {
          protocol: this.url.protocol,
          hostname: this.url.hostname,
          port: this.url.port,
          path: '/',
          method: 'POST',
          headers: this.sign(op, body),
          agent: this.agent,
          timeout: this.timeoutMs,
        },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            if (res.statusCode < 200 || res.statusCode > 299) {
              reject(new KinesisError(op, res.statusCode, text));
              return;
            }
            try {
              resolve(text ? JSON.parse(text) : {});
            } catch (e) {
              reject(new Error(`${op}: bad JSON response: ${e.message}`));
            }
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${op}: timed out after ${this.timeoutMs} ms`)));
      req.on('error', reject);
      req.end(body);
    });
  }

  async listShards(stream) {
    const shards = [];
    let params = { StreamName: stream };
    for (let page = 0; page < 10000; page++) {
      const r = await this.call('ListShards', params);
      shards.push(...r.Shards);
      if (!r.NextToken) return shards;
      params = { NextToken: r.NextToken };
    }
    throw new Error('ListShards: too many pages');
  }

  // Reads every record of one shard from TRIM_HORIZON until it is caught up (an empty
  // page with MillisBehindLatest 0, or a closed shard's end). Bounded in pages.
  async readShard(stream, shardId, maxPages = 1000000) {
    let it = (
      await this.call('GetShardIterator', { StreamName: stream, ShardId: shardId, ShardIteratorType: 'TRIM_HORIZON' })
    ).ShardIterator;
    const records = [];
    for (let page = 0; page < maxPages && it; page++) {
      const r = await this.call('GetRecords', { ShardIterator: it, Limit: 10000 });
      records.push(...r.Records);
      if (r.Records.length === 0 && (r.MillisBehindLatest === 0 || r.MillisBehindLatest === undefined)) break;
      it = r.NextShardIterator;
    }
    return records;
  }

  async readStream(stream) {
    const shards = await this.listShards(stream);
    const out = [];
    for (const shard of shards) out.push({ shard, records: await this.readShard(stream, shard.ShardId) });
    return out;
  }
}

module.exports = { KinesisClient, KinesisError };
