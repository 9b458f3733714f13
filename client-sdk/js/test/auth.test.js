/*
 * Tokens against a real node that checks them (--jwt-key, HS256): a refused token (4001)
 * stops a client without getToken and sends one with getToken back for a new token; a
 * token about to expire is refreshed on the open connection (`refresh` -> `refreshed`), so
 * the connection outlives its first token; a user disconnected by the back end with 4003
 * stays disconnected; presence and join/leave. Skipped when the node has no JWT support.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';

import { Tidewire } from '../src/index.js';
import { TidewireNode, sleep, waitFor } from './helpers/node.js';
import { jwt, nodeHasJwt, secureNodeArgs } from './helpers/jwt.js';

describe('tokens against a node that checks them', { skip: !nodeHasJwt && 'this tidewire has no --jwt-key' }, () => {
  let node;
  const clients = [];
  const client = (opts) => {
    const c = new Tidewire(node.url, { WebSocket, backoffInitialMs: 50, ...opts });
    clients.push(c);
    return c;
  };
  before(async () => {
    node = new TidewireNode('auth', [
      '--jwt-leeway', '0s',
      '--namespace', 'auth: subscribe=users',
      '--namespace', 'room: subscribe=users presence=on join-leave=on',
    ]);
    node.extra.push(...secureNodeArgs(node.dir));
    await node.start();
  });
  after(async () => {
    for (const c of clients) c.close();
    await node.cleanup();
  });

  test('a refused token without getToken: 4001 is terminal, no reconnect', async () => {
    const c = client({ token: 'not.a.token' });
    let why = null;
    c.on('state', (s, w) => s === 'disconnected' && (why = w));
    await waitFor(() => why, 5000, 'disconnected');
    assert.equal(why.status, 4001);
    const disconnects = c.stats.disconnects;
    await sleep(500);
    assert.equal(c.state, 'disconnected');
    assert.equal(c.stats.disconnects, disconnects, 'no further attempt');
    assert.equal(c.stats.connects, 0);
  });

  test('4001 with getToken: a new token, then connected', async () => {
    const tokens = ['not.a.token', jwt('u1', 60)];
    const c = client({ getToken: () => tokens.shift() });
    await waitFor(() => c.state === 'connected', 5000, 'connected with the second token');
    assert.equal(tokens.length, 0);
    assert.ok(c.stats.disconnects >= 1);
  });

  test('without getToken, an expiring token ends the connection with 4001 at its exp', async () => {
    const c = client({ token: jwt('u2', 2) });
    await waitFor(() => c.state === 'connected', 5000, 'connected');
    let why = null;
    c.on('state', (s, w) => s === 'disconnected' && (why = w));
    await waitFor(() => why, 6000, 'closed at expiry');
    assert.equal(why.status, 4001);
  });

  test('a token about to expire is refreshed; the connection outlives it', async () => {
    let issued = 0;
    const c = client({
      tokenRefreshMarginMs: 1500,
      getToken: () => {
        issued++;
        return jwt('u1', 3);
      },
    });
    const got = [];
    c.subscribe('auth:1', { onEvent: (e) => got.push(e.data) });
    await waitFor(() => c.state === 'connected', 5000, 'connected');
    const t0 = Date.now();
    await sleep(4500); /* past the first token's exp */
    assert.equal(c.state, 'connected');
    assert.equal(c.stats.disconnects, 0, 'never dropped');
    assert.ok(issued >= 2, `tokens issued: ${issued}`);
    await node.publish('auth:1', 'still here');
    await waitFor(() => got.length === 1, 5000, 'event after the refresh');
    assert.ok(Date.now() - t0 >= 4500);
  });

  test('4003 from the back end (POST /api/disconnect) is terminal', async () => {
    const c = client({ getToken: () => jwt('u3', 60) });
    await waitFor(() => c.state === 'connected', 5000, 'connected');
    let why = null;
    c.on('state', (st, w) => st === 'disconnected' && (why = w));
    const r = await fetch(node.http + '/api/disconnect', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: 'u3', code: 4003, reason: 'account suspended' }),
    });
    assert.deepEqual(await r.json(), { disconnected: 1 });
    await waitFor(() => why, 5000, 'disconnected');
    assert.equal(why.status, 4003);
    await sleep(500);
    assert.equal(c.state, 'disconnected');
    assert.equal(c.stats.connects, 1, 'no reconnect');
  });

  test('presence and join/leave', async () => {
    const a = client({ getToken: () => jwt('alice', 60) });
    const joins = [];
    const leaves = [];
    a.subscribe('room:7', { onJoin: (i) => joins.push(i.user), onLeave: (i) => leaves.push(i.user) });
    await waitFor(() => a.state === 'connected', 5000, 'alice connected');
    await waitFor(async () => (await a.presence('room:7')).length === 1, 5000, 'alice present');
    const b = client({ getToken: () => jwt('bob', 60) });
    const offB = b.subscribe('room:7', {});
    await waitFor(() => joins.includes('bob'), 5000, 'bob joined');
    const members = await a.presence('room:7');
    assert.deepEqual(members.map((m) => m.user).sort(), ['alice', 'bob']);
    offB();
    await waitFor(() => leaves.includes('bob'), 5000, 'bob left');
    assert.deepEqual((await a.presence('room:7')).map((m) => m.user), ['alice']);
  });
});
