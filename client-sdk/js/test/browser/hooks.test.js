/*
 * The React hooks in headless Chromium (a development build in StrictMode, so effects run
 * mount-unmount-mount): one socket for many hooks, shared subscriptions, cleanup on unmount,
 * and nothing left once the provider unmounts.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import * as esbuild from 'esbuild';

import WebSocket from 'ws';

import { Tidewire } from '../../src/index.js';
import { serveDir } from '../../examples/crew-approvals/serve.js';
import { TidewireNode, TMP, freePort, sleep } from '../helpers/node.js';
import { jwt, nodeHasJwt, secureNodeArgs } from '../helpers/jwt.js';
import { launch, screenshot, watchErrors } from '../helpers/browser.js';

const here = path.dirname(fileURLToPath(import.meta.url));
let node, browser, web;
const dir = path.join(TMP, `hooks-${process.pid}`);

before(async () => {
  /* With token checks where the node has them: then presence works on channel p. */
  node = new TidewireNode(
    'hooks',
    nodeHasJwt ? ['--namespace', '* subscribe=users', '--namespace', 'p subscribe=users presence=on join-leave=on'] : []
  );
  if (nodeHasJwt) node.extra.push(...secureNodeArgs(node.dir));
  await node.start();
  fs.mkdirSync(dir, { recursive: true });
  await esbuild.build({
    entryPoints: [path.join(here, 'fixtures/hooks.jsx')],
    bundle: true,
    format: 'esm',
    jsx: 'automatic',
    define: { 'process.env.NODE_ENV': '"development"' },
    outfile: path.join(dir, 'app.js'),
    logLevel: 'warning',
  });
  fs.writeFileSync(
    path.join(dir, 'index.html'),
    '<!doctype html><meta charset="utf-8"><title>hooks</title><div id="root"></div><script type="module" src="app.js"></script>'
  );
  web = await serveDir(dir, await freePort());
  browser = await launch();
});
after(async () => {
  if (browser) await browser.close();
  if (web) await new Promise((r) => web.close(r));
  await node.cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('hooks share one socket, clean up on unmount, and leave nothing behind', async () => {
  const page = await browser.newPage();
  const errors = watchErrors(page);
  const token = nodeHasJwt ? `&token=${jwt('page-user', 600)}` : '';
  await page.goto(`http://127.0.0.1:${web.address().port}/?node=${encodeURIComponent(node.url)}${token}`);
  await page.waitForSelector('[data-testid=state-1]:text("connected")');
  await page.waitForSelector('[data-testid=count-a2][data-subscribed=true]');
  assert.equal(await page.evaluate(() => window.__sockets.length), 1, 'one socket for the page');
  assert.deepEqual(await page.evaluate(() => window.__client.channels.sort()), ['a', 'b', 'p']);
  if (nodeHasJwt) {
    /* usePresence: the page itself, then another user joins and leaves. */
    await page.waitForSelector('[data-testid=presence]:text("1")');
    const bob = new Tidewire(node.url, { WebSocket, token: jwt('bob', 600) });
    const off = bob.subscribe('p', {});
    await page.waitForSelector('[data-testid=presence]:text("2")');
    off();
    await page.waitForSelector('[data-testid=presence]:text("1")');
    bob.close();
  } else {
    /* Presence is not enabled on an open node: the hook reports the node's 403. */
    await page.waitForSelector('[data-testid=presence][data-error="403"]');
  }

  for (let i = 1; i <= 4; i++) await node.publish('a', `a${i}`);
  await node.publish('b', 'b1');
  await page.waitForSelector('[data-testid=count-a1]:text("4")');
  await page.waitForSelector('[data-testid=count-a2]:text("4")');
  await page.waitForSelector('[data-testid=list-a]:text("a2,a3,a4")');
  await page.waitForSelector('[data-testid=list-b]:text("b1")');
  await screenshot(page, 'hooks-mounted');

  /* Unmounting the subscribers unsubscribes (the socket stays for the provider). */
  await page.evaluate(() => window.__setShow(false));
  await page.waitForFunction(() => window.__client.channels.length === 0);
  await node.publish('a', 'a5');
  await sleep(200);
  assert.equal(await page.evaluate(() => window.__sockets[0].readyState), 1);

  /* Mounting again resubscribes on the same socket; a new list fills from the kept events. */
  await page.evaluate(() => window.__setShow(true));
  await page.waitForSelector('[data-testid=count-a1][data-subscribed=true]');
  await page.waitForSelector('[data-testid=list-b]:text("b1")');
  await node.publish('a', 'a6');
  await page.waitForSelector('[data-testid=count-a1]:text("1")');
  assert.equal(await page.evaluate(() => window.__sockets.length), 1, 'still one socket');

  /* Unmounting the provider closes the client: socket closed, no timer left. */
  await page.evaluate(() => window.__unmountAll());
  await page.waitForFunction(() => window.__client.state === 'disconnected');
  await page.waitForFunction(() => window.__sockets[0].readyState === 3);
  const timers = await page.evaluate(() => Object.values(window.__client._timers).filter((t) => t !== null).length);
  assert.equal(timers, 0, 'no timer left');
  assert.equal(await page.evaluate(() => window.__sockets.length), 1);
  assert.deepEqual(errors.filter((e) => !/WebSocket/.test(e)), []);
  await page.close();
});
