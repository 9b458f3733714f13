/*
 * The example app (examples/crew-approvals) in headless Chromium against a real node: the
 * page connects and shows events; the node restarts (SIGTERM: 1012, then a new process on
 * the same data) while the back end publishes through the HTTP API; the page ends with
 * every event shown once, in order, the right badge, and the indicator back to connected.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { buildExample } from '../../examples/crew-approvals/build.js';
import { serveDir } from '../../examples/crew-approvals/serve.js';
import { Backend } from '../../examples/crew-approvals/backend.js';
import { TidewireNode, TMP, freePort } from '../helpers/node.js';
import { launch, screenshot, watchErrors } from '../helpers/browser.js';

let node, browser, web;
const dir = path.join(TMP, `example-${process.pid}`);
before(async () => {
  node = new TidewireNode('example');
  await node.start();
  await buildExample(dir);
  web = await serveDir(dir, await freePort());
  browser = await launch();
});
after(async () => {
  if (browser) await browser.close();
  if (web) await new Promise((r) => web.close(r));
  await node.cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
});

const crewNumbers = (page) =>
  page.$$eval('[data-testid=crew] li', (lis) => lis.map((li) => Number(li.dataset.n)));

test('the example page survives a node restart without losing or repeating an event', async () => {
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  const errors = watchErrors(page);
  const backend = new Backend(node.http);
  /* Some history before the page opens: the page fills its views from it (last). */
  await backend.moveCrew(1, 'Ada');
  await backend.submitForm('F-1', 'Ada', 'Sign-on papers');
  await backend.submitForm('F-2', 'Bram', 'Medical certificate');

  const { port } = web.address();
  await page.goto(`http://127.0.0.1:${port}/?node=${encodeURIComponent(node.url)}`);
  await page.waitForSelector('[data-testid=conn][data-state=connected]', { timeout: 10000 });
  /* Record every state the indicator shows from now on. */
  await page.evaluate(() => {
    const el = document.querySelector('[data-testid=conn]');
    window.__states = [el.dataset.state];
    new MutationObserver(() => window.__states.push(el.dataset.state)).observe(el, { attributes: true });
  });
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=crew] li').length === 1);
  await page.waitForSelector('[data-testid=pending][data-count="2"]');
  await screenshot(page, 'example-connected');

  const N = 40;
  let restart = null;
  for (let n = 2; n <= N; n++) {
    /* The restart runs concurrently: the back end retries while the node is away. */
    if (n === 12)
      restart = (async () => {
        await node.stop(); /* SIGTERM: the node drains, the page gets 1012 */
        await page.waitForSelector('[data-testid=conn][data-state=reconnecting]', { timeout: 10000 });
        await screenshot(page, 'example-reconnecting');
        await node.start();
      })();
    await backend.moveCrew(n, ['Chen', 'Dita', 'Emil'][n % 3], n % 4 === 0 ? 'crew.signed_off' : 'crew.signed_on');
    if (n === 20) await backend.approveForm('F-1');
    if (n === 25) await backend.submitForm('F-3', 'Emil', 'Visa');
    if (n === 30) await backend.approveForm('F-3');
  }
  await restart;

  await page.waitForFunction((n) => document.querySelectorAll('[data-testid=crew] li').length >= n, N, {
    timeout: 20000,
  });
  await page.waitForSelector('[data-testid=conn][data-state=connected]', { timeout: 10000 });
  await new Promise((r) => setTimeout(r, 500)); /* anything extra (a duplicate) would show now */
  const shown = await crewNumbers(page);
  assert.deepEqual(shown, Array.from({ length: N }, (_, i) => i + 1), 'every event once, in order');
  const pending = await page.$eval('[data-testid=pending]', (el) => Number(el.dataset.count));
  assert.equal(pending, 1, 'F-2 is still waiting');
  const states = await page.evaluate(() => window.__states);
  assert.ok(states.includes('reconnecting'), `indicator states: ${states}`);
  assert.equal(states.at(-1), 'connected');
  await screenshot(page, 'example-after-restart');
  assert.deepEqual(errors.filter((e) => !/WebSocket|ERR_CONNECTION_REFUSED/.test(e)), []);
  await page.close();
});
