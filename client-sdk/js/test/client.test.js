/*
 * The client against a real tidewire node (started by the test on a scratch port and data
 * directory): subscribe, resume across server-side closes (1012 on restart, 4208 for a slow
 * consumer), exact de-duplication, the offline publish queue, msgpack, tokens on an open node.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import * as msgpack from '@msgpack/msgpack';

import { Tidewire, TidewireError } from '../src/index.js';
import { TidewireNode, sleep, waitFor } from './helpers/node.js';

const clients = [];
function client(url, opts = {}) {
  const c = new Tidewire(url, { WebSocket, ...opts });
  clients.push(c);
  return c;
}
function closeAll() {
  for (const c of clients.splice(0)) c.close();
}

function states(c) {
  const seen = [];
  c.on('state', (s) => seen.push(s));
  return seen;
}

describe('against a real node', () => {
  let node;
  before(async () => {
    node = new TidewireNode('client');
    await node.start();
  });
  after(async () => {
    closeAll();
    await node.cleanup();
  });

  test('connects, subscribes, receives its own and API publishes in order', async () => {
    const c = client(node.url, { autoConnect: false });
    const seen = states(c);
    const got = [];
    let subscribed = null;
    c.connect();
    c.subscribe('vessel:1', { onEvent: (e) => got.push(e), onSubscribed: (i) => (subscribed = i) });
    await waitFor(() => c.state === 'connected' && subscribed, 5000, 'connected + subscribed');
    assert.deepEqual(seen, ['connecting', 'connected']);
    assert.match(c.node, /^n1\./);
    assert.equal(subscribed.recovered, true);
    const pos = await c.publish('vessel:1', { lat: 59.9 });
    assert.match(pos, /^n1\.[0-9a-f]+:\d+$/);
    await node.publish('vessel:1', { lat: 60.1 });
    await waitFor(() => got.length === 2, 5000, 'two events');
    assert.equal(got[0].pos, pos);
    assert.deepEqual(got[0].data, { lat: 59.9 });
    assert.deepEqual(got[1].data, { lat: 60.1 });
    assert.ok(got[1].seq > got[0].seq);
    assert.equal(got[0].origin, c.node);
    assert.ok(Math.abs(got[0].ts - Date.now()) < 60000);
    assert.deepEqual(c.cursor('vessel:1'), { [c.node]: got[1].seq });
    c.close();
    assert.equal(c.state, 'disconnected');
  });

  test('last: N fills a view; since resumes exactly; duplicates are dropped', async () => {
    const ch = 'dedupe:1';
    const pos = [];
    for (let i = 1; i <= 6; i++) pos.push(await node.publish(ch, { i }));
    /* since = the 3rd event, last = 6: the node replays all six, the client drops 1..3. */
    const c = client(node.url);
    const got = [];
    c.subscribe(ch, { since: pos[2], last: 6, onEvent: (e) => got.push(e.data.i) });
    await waitFor(() => got.length >= 3, 5000, 'replay');
    await sleep(200);
    assert.deepEqual(got, [4, 5, 6]);
    assert.equal(c.stats.duplicates, 3);
    assert.equal(c.stats.events, 3);
    /* {} = from the oldest event kept. */
    const all = [];
    const c2 = client(node.url);
    c2.subscribe(ch, { since: {}, last: 4, onEvent: (e) => all.push(e.data.i) });
    await waitFor(() => all.length === 6, 5000, 'full replay');
    assert.deepEqual(all, [1, 2, 3, 4, 5, 6]);
    /* A second subscription of the same channel shares the server one: no 409. */
    const again = [];
    const off = c2.subscribe(ch, { last: 2, onEvent: (e) => again.push(e.data.i) });
    await waitFor(() => again.length === 2, 2000, 'kept events for the second listener');
    assert.deepEqual(again, [5, 6]);
    off();
    c.close();
    c2.close();
  });

  test('resumes across a node restart (1012) while the API publishes: every event once, in order', async () => {
    const ch = 'restart:1';
    const c = client(node.url);
    const seen = states(c);
    const got = [];
    const closes = [];
    c.on('error', (e) => e.code === 'PEER_CLOSED' && closes.push(e.status));
    c.subscribe(ch, { onEvent: (e) => got.push(e.data.n) });
    await waitFor(() => c.state === 'connected', 5000, 'connected');
    await sleep(1100); /* a healthy connection: 1012 then means "reconnect now" */
    const N = 60;
    let restarted = null;
    for (let n = 1; n <= N; n++) {
      if (n === 20) restarted = node.restart();
      for (;;) {
        try {
          await node.publish(ch, { n });
          break;
        } catch {
          await sleep(25); /* the node is restarting: retry, as a back end would */
        }
      }
    }
    await restarted;
    await waitFor(() => got.length === N, 15000, `all ${N} events (got ${got.length})`);
    await sleep(300);
    assert.deepEqual(got, Array.from({ length: N }, (_, i) => i + 1));
    assert.ok(closes.includes(1012), `closes seen: ${closes}`);
    assert.deepEqual(seen.slice(0, 2), ['connected', 'reconnecting']);
    assert.equal(c.state, 'connected');
    assert.ok(c.stats.connects >= 2);
    c.close();
  });

  test('resumes after the node is killed (no close frame: 1006, backoff)', async () => {
    const ch = 'kill:1';
    const c = client(node.url);
    const got = [];
    c.subscribe(ch, { onEvent: (e) => got.push(e.data) });
    await waitFor(() => c.state === 'connected', 5000, 'connected');
    await sleep(100);
    await node.publish(ch, 1);
    await waitFor(() => got.length === 1, 5000, 'first event');
    await node.stop('SIGKILL');
    await waitFor(() => c.state === 'reconnecting', 5000, 'reconnecting');
    await node.start();
    await node.publish(ch, 2);
    await node.publish(ch, 3);
    await waitFor(() => got.length === 3, 15000, 'resumed');
    await sleep(200);
    assert.deepEqual(got, [1, 2, 3]);
    assert.equal(c.state, 'connected');
    c.close();
  });

  test('offline publishes are queued, sent on connect in order, and bounded', async () => {
    const ch = 'offline:1';
    const sub = client(node.url);
    const got = [];
    sub.subscribe(ch, { onEvent: (e) => got.push(e.data) });
    await waitFor(() => sub.state === 'connected', 5000, 'subscriber');
    await sleep(100);
    const c = client(node.url, { autoConnect: false, maxQueuedBytes: 400 });
    const acks = [];
    for (let i = 1; i <= 5; i++) acks.push(c.publish(ch, { i, pad: 'x'.repeat(20) }));
    assert.equal(c.stats.queuedPublishes, 5);
    /* Past the bound: refused at once, the queued ones are untouched. */
    await assert.rejects(c.publish(ch, 'y'.repeat(500)), (e) => e instanceof TidewireError && e.code === 'QUEUE_FULL');
    assert.equal(c.stats.queuedPublishes, 5);
    const more = [];
    let full = null;
    for (let i = 6; i <= 40 && !full; i++) {
      const p = c.publish(ch, { i, pad: 'x'.repeat(20) });
      more.push(p.catch((e) => (full = e)));
      await sleep(0);
    }
    assert.ok(full && full.code === 'QUEUE_FULL', 'queue bound enforced');
    c.connect();
    const positions = await Promise.all(acks);
    assert.equal(positions.length, 5);
    await Promise.all(more);
    const sent = 5 + more.length - 1; /* all but the one refused */
    await waitFor(() => got.length === sent, 5000, 'queued events delivered');
    assert.deepEqual(
      got.map((d) => d.i),
      Array.from({ length: sent }, (_, k) => k + 1)
    );
    assert.equal(c.stats.queuedPublishes, 0);
    assert.equal(c.stats.queuedBytes, 0);
    /* close() rejects what is still held. */
    c.close();
    const c3 = client(node.url, { autoConnect: false });
    const pending = c3.publish(ch, 1);
    c3.close();
    await assert.rejects(pending, (e) => e.code === 'CLOSED');
    sub.close();
  });

  test('unacknowledged publishes are resent after a reconnect', async () => {
    const ch = 'resend:1';
    const c = client(node.url);
    await waitFor(() => c.state === 'connected', 5000, 'connected');
    await node.stop();
    const p = c.publish(ch, { late: true });
    await waitFor(() => c.state === 'reconnecting', 5000, 'reconnecting');
    await node.start();
    const pos = await p;
    assert.match(pos, /:\d+$/);
    assert.ok(c.stats.publishesSent >= 1);
    c.close();
  });

  test('token and getToken: sent on connect, accepted by an open node', async () => {
    let calls = 0;
    const c = client(node.url, {
      getToken: async () => {
        calls++;
        return `tok-${calls}`;
      },
    });
    await waitFor(() => c.state === 'connected', 5000, 'connected');
    assert.equal(calls, 1);
    /* `refresh` on an open node is refused with 400, and the connection stays open. */
    await assert.rejects(c.refreshToken(), (e) => e.code === 'SERVER' && e.status === 400);
    assert.equal(c.state, 'connected');
    assert.ok((await c.ping()) >= 0);
    c.close();
  });

  test('presence on a node without presence: error 403, connection stays', async () => {
    const c = client(node.url);
    await waitFor(() => c.state === 'connected', 5000, 'connected');
    await assert.rejects(c.presence('room:1'), (e) => e.status === 403);
    assert.equal(c.state, 'connected');
    c.close();
  });

  test('msgpack: same events, binary data reaches JSON subscribers as $base64', async () => {
    const ch = 'mp:1';
    const mp = client(node.url, { protocol: 'msgpack', msgpack });
    const js = client(node.url);
    const gotMp = [];
    const gotJs = [];
    mp.subscribe(ch, { onEvent: (e) => gotMp.push(e.data) });
    js.subscribe(ch, { onEvent: (e) => gotJs.push(e.data) });
    await waitFor(() => mp.state === 'connected' && js.state === 'connected', 5000, 'both connected');
    await sleep(100);
    await mp.publish(ch, { bin: new Uint8Array([1, 2, 3]), n: 7 });
    await js.publish(ch, { text: 'hé' });
    await waitFor(() => gotMp.length === 2 && gotJs.length === 2, 5000, 'events on both');
    assert.deepEqual(gotJs[0], { bin: { $base64: 'AQID' }, n: 7 });
    assert.deepEqual([...gotMp[0].bin], [1, 2, 3]);
    assert.deepEqual(gotMp[1], { text: 'hé' });
    mp.close();
    js.close();
  });

  test('cursors persist in storage: a new client (a reloaded page) resumes', async () => {
    const ch = 'persist:1';
    const store = new Map();
    const storage = {
      getItem: (k) => (store.has(k) ? store.get(k) : null),
      setItem: (k, v) => store.set(k, String(v)),
      removeItem: (k) => store.delete(k),
    };
    const a = client(node.url, { storage });
    const gotA = [];
    a.subscribe(ch, { onEvent: (e) => gotA.push(e.data) });
    await waitFor(() => a.state === 'connected', 5000, 'a connected');
    await sleep(100);
    await node.publish(ch, 1);
    await node.publish(ch, 2);
    await waitFor(() => gotA.length === 2, 5000, 'a got 2');
    a.close();
    await node.publish(ch, 3);
    await node.publish(ch, 4);
    const b = client(node.url, { storage });
    const gotB = [];
    b.subscribe(ch, { onEvent: (e) => gotB.push(e.data) });
    await waitFor(() => gotB.length === 2, 5000, 'b resumed');
    await sleep(200);
    assert.deepEqual(gotB, [3, 4]);
    b.close();
  });

  test('unsubscribe stops delivery; close leaves no timer or socket behind', async () => {
    const ch = 'unsub:1';
    const c = client(node.url);
    const got = [];
    const off = c.subscribe(ch, { onEvent: (e) => got.push(e.data) });
    await waitFor(() => c.state === 'connected', 5000, 'connected');
    await sleep(100);
    await node.publish(ch, 1);
    await waitFor(() => got.length === 1, 5000, 'one event');
    off();
    off(); /* idempotent */
    await sleep(50);
    assert.deepEqual(c.channels, []);
    await node.publish(ch, 2);
    await sleep(200);
    assert.deepEqual(got, [1]);
    c.close();
    assert.equal(c._ws, null);
    assert.ok(Object.values(c._timers).every((t) => t === null), 'no timer left');
  });
});

describe('slow consumer (4208)', () => {
  let node;
  before(async () => {
    node = new TidewireNode('slow', ['--outbound-high-water', '16KiB', '--slow-consumer-timeout', '1s']);
    await node.start();
  });
  after(async () => {
    closeAll();
    await node.cleanup();
  });

  test('a paused reader is closed with 4208, reconnects at once and resumes from the log', async () => {
    const ch = 'slow:1';
    const sockets = [];
    class TrackedWS extends WebSocket {
      constructor(...a) {
        super(...a);
        sockets.push(this);
      }
    }
    const c = client(node.url, { WebSocket: TrackedWS });
    const got = [];
    const closes = [];
    c.on('error', (e) => e.code === 'PEER_CLOSED' && closes.push(e.status));
    c.subscribe(ch, { onEvent: (e) => got.push(e.data.n) });
    await waitFor(() => c.state === 'connected', 5000, 'connected');
    await sleep(1100);
    /* Stop reading: the kernel buffers fill, then the node's queue passes the high-water
     * mark and the subscription stalls; after 1 s behind, the node closes with 4208. */
    /* (ws resumes its socket by itself when its parser drains: hold that off too.) */
    const sock = sockets[0]._socket;
    const resume = sock.resume;
    sock.resume = () => sock;
    sock.pause();
    const pub = client(node.url);
    /* More than loopback's socket buffers hold (a few MiB each way), so the node's own
     * queue must pass the mark. */
    const N = 3000;
    const pad = 'p'.repeat(8000);
    for (let n = 1; n <= N; n += 100) {
      const acks = [];
      for (let k = n; k < n + 100 && k <= N; k++) acks.push(pub.publish(ch, { n: k, pad }));
      await Promise.all(acks);
    }
    /* Resume only once the node has closed the session (it then waits for our reads). */
    await waitFor(async () => (await node.stats()).slow_consumers.closed >= 1, 20000, 'the 4208 close');
    sock.resume = resume;
    sock.resume();
    await waitFor(() => got.length === N, 30000, `all ${N} events (got ${got.length})`);
    assert.ok(closes.includes(4208), `closes seen: ${closes}`);
    assert.deepEqual(got, Array.from({ length: N }, (_, i) => i + 1));
    assert.equal(c.state, 'connected');
    c.close();
    pub.close();
  });
});
