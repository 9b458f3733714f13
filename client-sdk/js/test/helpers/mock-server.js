/*
 * A scripted tidewire stand-in on Node's own http + crypto (no WebSocket library), for what
 * the real node cannot produce yet: close codes 4001/4003, `connect` refused with 401,
 * tokens checked, presence with join/leave. Text frames only (tidewire.v1.json).
 *
 * const srv = await mockServer((conn, msg) => { ... conn.send({...}); conn.close(4003) });
 * srv.url, srv.connections (every accepted connection), srv.close().
 */
import crypto from 'node:crypto';
import http from 'node:http';
import { freePort } from './node.js';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

class MockConn {
  constructor(socket, index) {
    this.socket = socket;
    this.index = index;
    this.received = [];
    this.buf = Buffer.alloc(0);
    this.closed = false;
    this.closeCode = 0;
  }

  sendRaw(opcode, payload) {
    if (this.closed) return;
    const len = payload.length;
    let head;
    if (len < 126) head = Buffer.from([0x80 | opcode, len]);
    else if (len < 65536) {
      head = Buffer.alloc(4);
      head[0] = 0x80 | opcode;
      head[1] = 126;
      head.writeUInt16BE(len, 2);
    } else {
      head = Buffer.alloc(10);
      head[0] = 0x80 | opcode;
      head[1] = 127;
      head.writeBigUInt64BE(BigInt(len), 2);
    }
    this.socket.write(Buffer.concat([head, payload]));
  }

  send(msg) {
    this.sendRaw(0x1, Buffer.from(typeof msg === 'string' ? msg : JSON.stringify(msg)));
  }

  /** Sends a close frame with code, then ends the TCP connection. */
  close(code, reason = '') {
    if (this.closed) return;
    const p = Buffer.alloc(2 + Buffer.byteLength(reason));
    p.writeUInt16BE(code, 0);
    p.write(reason, 2);
    this.sendRaw(0x8, p);
    this.closed = true;
    this.closeCode = code;
    this.socket.end();
  }

  /* Parses client frames (always masked); calls onText for each text message. */
  feed(chunk, onText, onClose) {
    this.buf = Buffer.concat([this.buf, chunk]);
    for (;;) {
      const b = this.buf;
      if (b.length < 2) return;
      const opcode = b[0] & 0x0f;
      let len = b[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(b.readBigUInt64BE(2));
        off = 10;
      }
      if (b.length < off + 4 + len) return;
      const mask = b.subarray(off, off + 4);
      const payload = Buffer.from(b.subarray(off + 4, off + 4 + len));
      for (let i = 0; i < len; i++) payload[i] ^= mask[i & 3];
      this.buf = b.subarray(off + 4 + len);
      if (opcode === 0x1) onText(payload.toString('utf8'));
      else if (opcode === 0x8) {
        if (!this.closed) {
          this.sendRaw(0x8, payload.subarray(0, 2));
          this.closed = true;
          this.socket.end();
        }
        onClose();
        return;
      } else if (opcode === 0x9) this.sendRaw(0xa, payload);
    }
  }
}

export async function mockServer(onMessage, { onConnection } = {}) {
  const port = await freePort();
  const connections = [];
  const server = http.createServer((req, res) => {
    res.writeHead(404);
    res.end();
  });
  server.on('upgrade', (req, socket) => {
    const key = req.headers['sec-websocket-key'];
    const accept = crypto.createHash('sha1').update(key + GUID).digest('base64');
    const offered = String(req.headers['sec-websocket-protocol'] || '')
      .split(',')
      .map((s) => s.trim());
    const proto = offered.includes('tidewire.v1.json') ? 'tidewire.v1.json' : null;
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${accept}\r\n` +
        (proto ? `Sec-WebSocket-Protocol: ${proto}\r\n` : '') +
        '\r\n'
    );
    const conn = new MockConn(socket, connections.length);
    connections.push(conn);
    socket.on('error', () => {});
    socket.on('close', () => {
      conn.closed = true;
    });
    socket.on('data', (chunk) =>
      conn.feed(
        chunk,
        (text) => {
          const msg = JSON.parse(text);
          conn.received.push(msg);
          onMessage(conn, msg);
        },
        () => {}
      )
    );
    if (onConnection) onConnection(conn);
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return {
    url: `ws://127.0.0.1:${port}/ws`,
    connections,
    close: () =>
      new Promise((r) => {
        for (const c of connections) c.socket.destroy();
        server.close(() => r());
      }),
  };
}

/** A minimal unsigned JWT ("alg":"none") with the given exp (seconds since the epoch). */
export function fakeJwt(sub, expSeconds) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub, exp: expSeconds })}.sig`;
}
