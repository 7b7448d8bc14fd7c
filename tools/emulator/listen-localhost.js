// Preloaded with `node -r` into servers that have no bind-address option (kinesis-local
// listens on all interfaces): every TCP net.Server.listen() is forced onto 127.0.0.1.
//
// Optional environment:
//   KP_LISTEN_PORT_MAP="1=0,2=0"  rewrite a requested port before binding (from=to). The
//                                 launcher asks for distinct sentinel ports and maps them
//                                 to 0 (ephemeral), so it can still tell them apart.
//   KP_LISTEN_REPORT=1            once a server is listening, write one line
//                                 "KP_LISTEN <requested port> <bound port>" to stdout.
// Unix-socket and handle listens are left alone.
'use strict';

const fs = require('fs');
const net = require('net');

const HOST = '127.0.0.1';
const portMap = new Map();
for (const pair of (process.env.KP_LISTEN_PORT_MAP || '').split(',')) {
  const m = /^\s*([0-9]+)=([0-9]+)\s*$/.exec(pair);
  if (m) portMap.set(Number(m[1]), Number(m[2]));
}
const report = !!process.env.KP_LISTEN_REPORT;

function mapPort(p) {
  const n = Number(p);
  return portMap.has(n) ? portMap.get(n) : p;
}

const origListen = net.Server.prototype.listen;
net.Server.prototype.listen = function listenLocal(...args) {
  let requested = null;
  if (args.length > 0 && args[0] !== null && typeof args[0] === 'object') {
    const o = args[0];
    if (o.path === undefined && o.handle === undefined && o._handle === undefined && o.fd === undefined) {
      requested = o.port === undefined ? 0 : Number(o.port);
      args[0] = Object.assign({}, o, { host: HOST, port: mapPort(requested) });
    }
  } else if (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^[0-9]+$/.test(args[0]))) {
    requested = Number(args[0]);
    const rest = args.slice(1);
    if (typeof rest[0] === 'string') rest.shift(); // drop the caller's host
    args = [mapPort(requested), HOST, ...rest];
  } else if (args.length === 0 || typeof args[0] === 'function') {
    requested = 0;
    args = [mapPort(0), HOST, ...args];
  }
  if (requested !== null && report) {
    this.once('listening', () => {
      const a = this.address();
      fs.writeSync(1, `KP_LISTEN ${requested} ${a && a.port}\n`);
    });
  }
  return origListen.apply(this, args);
};
