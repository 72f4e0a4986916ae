// One small, dependency-free HTTP service for the Penpal AI example stack.
// Every service of the stack runs this file with its own SERVICE name; davit
// gives each replica its own PORT. Endpoints:
//   GET /api/v1/health  -> 200 {"status":"ok"} once started (HEALTH_FAIL=1 makes it 503 forever)
//   GET /               -> {"service", "version", "replica", "pid"}
//   GET /api/v1/items   -> db only: a tiny in-memory list; POST adds an item
'use strict';
const http = require('http');

const service = process.env.SERVICE || 'unknown';
const version = process.env.APP_VERSION || '1';
const port = Number(process.env.PORT || 3000);
const failHealth = process.env.HEALTH_FAIL === '1';
const startDelayMs = Number(process.env.START_DELAY_MS || 0);
const items = [];

function send(res, status, body) {
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, {'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text)});
  res.end(text);
}

const server = http.createServer((req, res) => {
  if (req.url === '/api/v1/health') {
    return failHealth ? send(res, 503, {status: 'failing', service}) : send(res, 200, {status: 'ok', service, version});
  }
  if (service === 'db' && req.url === '/api/v1/items') {
    if (req.method === 'POST') {
      let body = '';
      req.on('data', (d) => { body += d; if (body.length > 65536) req.destroy(); });
      req.on('end', () => { items.push(body); send(res, 201, {count: items.length}); });
      return;
    }
    return send(res, 200, {items});
  }
  send(res, 200, {service, version, replica: process.env.DAVIT_REPLICA || '0', pid: process.pid, path: req.url});
});
server.keepAliveTimeout = 65000;

function shutdown() {
  // Finish in-flight requests, then exit (davit sends SIGTERM, then SIGKILL after the stop timeout).
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 5000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

setTimeout(() => {
  server.listen(port, '127.0.0.1', () => {
    console.log(JSON.stringify({level: 'info', service, version, msg: `listening on 127.0.0.1:${port}`}));
  });
}, startDelayMs);
