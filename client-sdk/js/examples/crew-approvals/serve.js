/*
 * Builds the example and serves it: node serve.js [PORT] (default 5173). Open
 * http://127.0.0.1:PORT/?node=ws://127.0.0.1:8080/ws with a node running (make run), and
 * start the back end: node backend.js.
 */
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildExample } from './build.js';

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.map': 'application/json' };

/** Serves the files of dir on port (127.0.0.1); resolves with the server. */
export function serveDir(dir, port) {
  const server = http.createServer((req, res) => {
    const p = new URL(req.url, 'http://x').pathname;
    if (p === '/favicon.ico') {
      res.writeHead(204);
      res.end();
      return;
    }
    const file = path.join(dir, p === '/' ? 'index.html' : path.normalize(p).replace(/^(\.\.[/\\])+/, ''));
    if (!file.startsWith(dir) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
      res.writeHead(404);
      res.end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream', 'cache-control': 'no-store' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dir = await buildExample();
  const port = Number(process.argv[2] || 5173);
  await serveDir(dir, port);
  console.log(`example on http://127.0.0.1:${port}/?node=ws://127.0.0.1:8080/ws`);
}
