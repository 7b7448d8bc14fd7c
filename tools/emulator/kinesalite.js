#!/usr/bin/env node
// Starts kinesalite (pinned in tools/npm) on 127.0.0.1 only and prints the bound port
// as a single line "PORT <n>" on stdout once it is listening.
//
//   node tools/emulator/kinesalite.js [--port N] [--path DIR] [--create-ms MS]
//        [--delete-ms MS] [--update-ms MS] [--shard-limit N]
//
// --port 0 (the default) binds an ephemeral port. --path DIR keeps the data in LevelDB
// under DIR instead of in memory (kinesalite's in-memory mode never frees data; use a
// path for long runs). Stream state transitions default to 0 ms here (kinesalite's own
// default is 500 ms) so tests do not wait. Stops cleanly on SIGTERM/SIGINT.
'use strict';

const path = require('path');

const NPM = path.join(__dirname, '..', 'npm', 'node_modules');

function usage(msg) {
  process.stderr.write(
    (msg ? `kinesalite.js: ${msg}\n` : '') +
      'usage: kinesalite.js [--port N] [--path DIR] [--create-ms MS] [--delete-ms MS]' +
      ' [--update-ms MS] [--shard-limit N]\n',
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { port: 0, path: null, createMs: 0, deleteMs: 0, updateMs: 0, shardLimit: 1000 };
  const ints = {
    '--port': 'port',
    '--create-ms': 'createMs',
    '--delete-ms': 'deleteMs',
    '--update-ms': 'updateMs',
    '--shard-limit': 'shardLimit',
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h' || a === '--help') usage();
    if (i + 1 >= argv.length) usage(`missing value for ${a}`);
    const v = argv[++i];
    if (a === '--path') {
      opts.path = v;
    } else if (ints[a]) {
      if (!/^[0-9]+$/.test(v)) usage(`${a} needs a non-negative integer`);
      opts[ints[a]] = Number(v);
    } else {
      usage(`unknown option ${a}`);
    }
  }
  if (opts.port > 65535) usage('--port out of range');
  return opts;
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const kinesalite = require(path.join(NPM, 'kinesalite'));
  const config = {
    createStreamMs: opts.createMs,
    deleteStreamMs: opts.deleteMs,
    updateStreamMs: opts.updateMs,
    shardLimit: opts.shardLimit,
  };
  if (opts.path) config.path = opts.path;
  const server = kinesalite(config);
  server.on('error', (err) => {
    process.stderr.write(`kinesalite.js: ${err.message}\n`);
    process.exit(1);
  });
  server.listen(opts.port, '127.0.0.1', () => {
    process.stdout.write(`PORT ${server.address().port}\n`);
  });
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    // Close the listener and the LevelDB store; do not wait on idle keep-alive sockets.
    if (typeof server.closeAllConnections === 'function') server.closeAllConnections();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
