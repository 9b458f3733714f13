/*
 * The client against a scripted server (test/helpers/mock-server.js: Node's http + crypto)
 * for what the real node does not produce yet: terminal close codes, tokens refused and
 * refreshed, presence with join/leave, cursors with several origins.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import WebSocket from 'ws';

import { Tidewire, closeAction, normalizeCursor, parsePos } from '../src/index.js';
import { sleep, waitFor } from './helpers/node.js';
import { fakeJwt, mockServer } from './helpers/mock-server.js';

const servers = [];
const clients = [];
async function server(onMessage, opts) {
  const s = await mockServer(onMessage, opts);
  servers.push(s);
  return s;
}
function client(url, opts = {}) {
  const c = new Tidewire(url, { WebSocket, backoffInitialMs: 20, backoffMaxMs: 100, ...opts });
  clients.push(c);
  return c;
}
after(async () => {
  for (const c of clients) c.close();
  for (const s of servers) await s.close();
});

/* The usual replies of an open node. */
function basic(conn, m) {
  if (m.op === 'connect') conn.send({ op: 'connected', id: m.id, node: 'n1.aa', session: `s${conn.index}`, ping_interval: 25 });
  else if (m.op === 'subscribe')
    conn.send({ op: 'subscribed', id: m.id, channel: m.channel, recovered: true, replayed: false, cursor: m.since || { 'n1.aa': 0 } });
  else if (m.op === 'publish') conn.send({ op: 'ack', id: m.id, pos: 'n1.aa:1' });
}

describe('close codes', () => {
  test('the table of ranges', () => {
    assert.equal(closeAction(1000), 'stop');
    assert.equal(closeAction(4001), 'terminal');
    assert.equal(closeAction(4003), 'terminal');
    assert.equal(closeAction(4099), 'terminal');
    assert.equal(closeAction(4129), 'backoff');
    assert.equal(closeAction(4208), 'now');
    assert.equal(closeAction(1012), 'now');
    assert.equal(closeAction(1011), 'retry');
    assert.equal(closeAction(1006), 'retry');
  });

  for (const code of [4003, 4001, 4099, 1000]) {
    test(`${code} stops reconnecting`, async () => {
      const srv = await server((conn, m) => {
        basic(conn, m);
        if (m.op === 'connect') setTimeout(() => conn.close(code, 'go away'), 10);
      });
      const c = client(srv.url);
      const errors = [];
      c.on('error', (e) => errors.push(e));
      await waitFor(() => c.state === 'disconnected' && srv.connections.length === 1, 5000, 'disconnected');
      await sleep(400);
      assert.equal(srv.connections.length, 1, 'no second connection');
      assert.equal(c.state, 'disconnected');
      if (code !== 1000) assert.equal(errors.at(-1).status, code);
    });
  }

  test('4001 with getToken: a new token, then a new connection', async () => {
    const srv = await server((conn, m) => {
      basic(conn, m);
      if (m.op === 'connect' && m.token === 'old') setTimeout(() => conn.close(4001, 'token expired'), 10);
    });
    const tokens = ['old', 'new'];
    const c = client(srv.url, { getToken: async () => tokens.shift() });
    await waitFor(() => srv.connections.length === 2 && c.state === 'connected', 5000, 'second connection');
    assert.equal(srv.connections[0].received[0].token, 'old');
    assert.equal(srv.connections[1].received[0].token, 'new');
  });

  test('connect refused with 401: getToken again; gives up after 3 refusals', async () => {
    const srv = await server((conn, m) => {
      if (m.op === 'connect') conn.send({ op: 'error', id: m.id, code: 401, message: 'bad token' });
    });
    let calls = 0;
    const c = client(srv.url, { getToken: async () => `t${++calls}` });
    await waitFor(() => c.state === 'disconnected' && calls > 1, 5000, 'gave up');
    await sleep(300);
    assert.equal(calls, 4); /* the first token and three fresh ones */
    assert.equal(srv.connections.length, 4);
  });

  test('41xx backs off; 4208 and 1012 reconnect at once only after a healthy connection', async () => {
    let plan = [];
    const srv = await server((conn, m) => {
      basic(conn, m);
      if (m.op === 'connect') {
        const [code, after] = plan.shift() || [0, 0];
        if (code) setTimeout(() => conn.close(code), after);
      }
    });
    /* A node that closes with 4208 right after accepting gets the backoff, not a tight loop. */
    plan = [[4208, 0], [4208, 0], [4208, 0], [4208, 0], [4208, 0]];
    const c = client(srv.url, { backoffInitialMs: 300, backoffMaxMs: 300 });
    const t0 = Date.now();
    await waitFor(() => srv.connections.length === 6 && c.state === 'connected', 10000, 'sixth connection');
    assert.ok(Date.now() - t0 >= 150, 'backed off');
    c.close();
    /* After a healthy (>= 1 s) connection, 1012 reconnects at once. */
    const before = srv.connections.length;
    plan = [[1012, 1100]];
    const c2 = client(srv.url, { backoffInitialMs: 5000, backoffMaxMs: 5000 });
    await waitFor(() => srv.connections.length === before + 2 && c2.state === 'connected', 3000, 'immediate reconnect');
  });

  test('connect timeout and retries while the server is silent', async () => {
    const srv = await server(() => {}); /* never answers `connect` */
    const c = client(srv.url, { connectTimeoutMs: 100 });
    await waitFor(() => srv.connections.length >= 3, 5000, 'retries');
    assert.equal(c.state, 'reconnecting');
    c.close();
    assert.equal(c.state, 'disconnected');
  });
});

describe('cursors', () => {
  test('positions and cursor forms', () => {
    assert.deepEqual(parsePos('n1.5f2c:1234'), { origin: 'n1.5f2c', seq: 1234 });
    assert.equal(parsePos('n1:x'), null);
    assert.equal(parsePos('1234'), null);
    assert.deepEqual(normalizeCursor('n1.a:7'), { 'n1.a': 7 });
    assert.deepEqual(normalizeCursor({}), {});
    assert.throws(() => normalizeCursor(7), /cursor/);
    assert.throws(() => normalizeCursor({ a: -1 }), /cursor/);
  });

  test('exact de-duplication with several origins; subscribed.cursor merges; resume sends it', async () => {
    const srv = await server((conn, m) => {
      if (m.op === 'connect') conn.send({ op: 'connected', id: m.id, node: 'n1.aa', session: 's', ping_interval: 25 });
      if (m.op === 'subscribe') {
        conn.send({ op: 'subscribed', id: m.id, channel: m.channel, recovered: true, replayed: true, cursor: { 'n1.aa': 2, 'n3.cc': 9 } });
        if (conn.index === 0) {
          const ev = (pos, d) => conn.send({ op: 'event', channel: m.channel, pos, ts: 1, data: d });
          ev('n1.aa:2', 'dup: at the merged cursor');
          ev('n1.aa:3', 'a3');
          ev('n2.bb:5', 'b5');
          ev('n1.aa:3', 'dup');
          ev('n2.bb:4', 'dup: older');
          ev('n1.aa:7', 'a7');
          ev('n2.bb:6', 'b6');
          ev('n3.cc:9', 'dup: merged entry');
          ev('other', 'malformed: reported, dropped');
          setTimeout(() => conn.close(4208), 30);
        }
      }
    });
    const c = client(srv.url);
    const got = [];
    c.subscribe('ch', { since: 'n1.aa:1', onEvent: (e) => got.push(e.data) });
    await waitFor(() => srv.connections.length === 2 && srv.connections[1].received.length >= 2, 5000, 'resubscribed');
    assert.deepEqual(got, ['a3', 'b5', 'a7', 'b6']);
    assert.equal(c.stats.duplicates, 4);
    assert.deepEqual(srv.connections[0].received[1].since, { 'n1.aa': 1 });
    assert.deepEqual(srv.connections[1].received[1].since, { 'n1.aa': 7, 'n2.bb': 6, 'n3.cc': 9 });
    assert.equal(srv.connections[1].received[1].last, undefined);
  });

  test('a refused subscription is forgotten and reported to its listener', async () => {
    const srv = await server((conn, m) => {
      if (m.op !== 'subscribe') basic(conn, m);
      if (m.op === 'subscribe') conn.send({ op: 'error', id: m.id, code: 403, message: 'forbidden' });
    });
    const c = client(srv.url);
    let err = null;
    c.subscribe('secret', { onError: (e) => (err = e) });
    await waitFor(() => err, 5000, 'refusal');
    assert.equal(err.status, 403);
    assert.equal(err.channel, 'secret');
    assert.deepEqual(c.channels, []);
  });
});

describe('tokens', () => {
  test('a JWT about to expire is refreshed with getToken and sent as `refresh`', async () => {
    const srv = await server((conn, m) => {
      basic(conn, m);
      if (m.op === 'refresh') conn.send({ op: 'refreshed', id: m.id });
    });
    const now = Math.floor(Date.now() / 1000);
    const tokens = [fakeJwt('u1', now + 2), fakeJwt('u1', now + 3600)];
    let calls = 0;
    const c = client(srv.url, {
      tokenRefreshMarginMs: 1500,
      getToken: async () => {
        calls++;
        return tokens.shift();
      },
    });
    await waitFor(() => c.state === 'connected', 5000, 'connected');
    await waitFor(() => srv.connections[0].received.some((m) => m.op === 'refresh'), 5000, 'refresh sent');
    const r = srv.connections[0].received.find((m) => m.op === 'refresh');
    assert.equal(calls, 2);
    assert.match(r.token, /^ey/);
    assert.equal(srv.connections.length, 1, 'same connection');
  });
});

describe('presence', () => {
  test('presence() and join/leave reach the channel listeners', async () => {
    const srv = await server((conn, m) => {
      basic(conn, m);
      if (m.op === 'presence')
        conn.send({ op: 'presence', id: m.id, channel: m.channel, members: [{ user: 'u1', node: 'n1', conn: 's1' }] });
      if (m.op === 'subscribe') {
        conn.send({ op: 'join', channel: m.channel, user: 'u2' });
        conn.send({ op: 'leave', channel: m.channel, user: 'u1' });
      }
    });
    const c = client(srv.url);
    const joins = [];
    const leaves = [];
    c.subscribe('room:1', { onJoin: (i) => joins.push(i.user), onLeave: (i) => leaves.push(i.user) });
    await waitFor(() => c.state === 'connected', 5000, 'connected');
    const members = await c.presence('room:1');
    assert.deepEqual(members, [{ user: 'u1', node: 'n1', conn: 's1' }]);
    await waitFor(() => joins.length && leaves.length, 2000, 'join and leave');
    assert.deepEqual(joins, ['u2']);
    assert.deepEqual(leaves, ['u1']);
  });

  test('the idle check pings a quiet line and drops a dead one', async () => {
    let answer = true;
    const srv = await server((conn, m) => {
      if (m.op === 'connect') conn.send({ op: 'connected', id: m.id, node: 'n1.aa', session: 's', ping_interval: 0.2 });
      if (m.op === 'ping' && answer) conn.send({ op: 'pong' });
    });
    const c = client(srv.url);
    await waitFor(() => srv.connections[0] && srv.connections[0].received.some((m) => m.op === 'ping'), 3000, 'a ping');
    answer = false;
    await waitFor(() => srv.connections.length >= 2, 3000, 'reconnect after silence');
    c.close();
  });
});
