/*
 * The admin dashboard (/admin, built into the node) in headless Chromium: it renders its
 * charts and tables with the node's live numbers while clients subscribe and publish, and
 * it sends the admin key (asked for on 401, or taken from ?key=) with every /stats request.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';

import { Tidewire } from '../../src/index.js';
import { TidewireNode, sleep, waitFor } from '../helpers/node.js';
import { launch, screenshot, watchErrors } from '../helpers/browser.js';

let node, browser;
const clients = [];
let publishing = true;

before(async () => {
  node = new TidewireNode('dashboard');
  await node.start();
  browser = await launch();
});
after(async () => {
  publishing = false;
  for (const c of clients) c.close();
  if (browser) await browser.close();
  await node.cleanup();
});

function client() {
  const c = new Tidewire(node.url, { WebSocket });
  clients.push(c);
  return c;
}

/* Painted (non-transparent) pixels of a canvas: a drawn chart has many. */
const painted = (page, id) =>
  page.$eval(`#${id}`, (c) => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
    return n;
  });

test('the dashboard shows live figures, charts and top channels', async () => {
  for (let i = 0; i < 3; i++) client().subscribe('fleet:1', () => {});
  client().subscribe('fleet:2', () => {});
  const pub = client();
  await waitFor(() => clients.every((c) => c.state === 'connected'), 5000, 'clients connected');
  (async () => {
    for (let n = 0; publishing; n++) {
      await Promise.all([pub.publish('fleet:1', { n }), pub.publish('fleet:2', { n })]).catch(() => {});
      await sleep(40);
    }
  })();

  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = watchErrors(page);
  await page.goto(`${node.http}/admin`);
  await page.waitForFunction(() => Number(document.body.dataset.samples || 0) >= 5, null, { timeout: 15000 });
  const stats = await node.stats();

  assert.equal(await page.textContent('#node'), stats.node);
  assert.equal(await page.textContent('#ready'), 'ready');
  assert.equal(await page.textContent('#feed'), 'live');
  assert.equal(await page.textContent('#t-subscriptions'), String(stats.subscriptions));
  assert.equal(await page.textContent('#t-channels'), String(stats.channels));
  assert.ok(Number(await page.textContent('#t-in')) > 0, 'events in per second');
  assert.ok(Number(await page.textContent('#t-out')) > 0, 'events out per second');

  const top = await page.$$eval('#top tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)));
  assert.equal(top[0][0], 'fleet:1');
  assert.equal(top[0][1], '3');
  assert.ok(Number(top[0][2]) > 0, `events/s of the top channel: ${top[0][2]}`);
  assert.equal(top[1][0], 'fleet:2');
  const origins = await page.$$eval('#origins tbody tr td:first-child', (tds) => tds.map((td) => td.textContent));
  assert.deepEqual(origins, [stats.node]);
  const members = await page.$$eval('#members tbody tr', (trs) => trs.map((tr) => tr.cells[1].textContent));
  assert.deepEqual(members, ['self']);

  for (const id of ['c-conns', 'c-events', 'c-bytes', 'c-commit']) {
    const points = Number(await page.getAttribute(`#${id}`, 'data-points'));
    assert.ok(points >= 5, `${id}: ${points} points`);
    assert.ok((await painted(page, id)) > 2000, `${id} is drawn`);
  }
  await screenshot(page, 'dashboard');
  assert.deepEqual(errors, []);
  await page.close();
});

test('the dashboard asks for the admin key on 401 and sends it', async () => {
  const page = await browser.newPage();
  const seen = [];
  /* Stand in for --admin-key: /stats wants `Bearer s3cret`. */
  await page.route('**/stats', (route) => {
    const auth = route.request().headers().authorization || '';
    seen.push(auth);
    if (auth !== 'Bearer s3cret') return route.fulfill({ status: 401, contentType: 'application/json', body: '{"error":"admin key"}' });
    return route.continue();
  });
  await page.goto(`${node.http}/admin`);
  await page.waitForSelector('#keyform:not([hidden])');
  await page.fill('#keyinput', 'wrong');
  await page.click('#keyform button');
  await page.waitForSelector('#keyerror:text("refused")');
  await page.fill('#keyinput', 's3cret');
  await page.click('#keyform button');
  await page.waitForFunction(() => Number(document.body.dataset.samples || 0) >= 2);
  assert.equal(seen.at(-1), 'Bearer s3cret');
  await page.close();

  /* ?key= works too, and leaves the address bar. */
  const p2 = await browser.newPage();
  seen.length = 0;
  await p2.route('**/stats', (route) =>
    (seen.push(route.request().headers().authorization || ''), route.request().headers().authorization === 'Bearer k2')
      ? route.continue()
      : route.fulfill({ status: 401, body: '{}' })
  );
  await p2.goto(`${node.http}/admin?key=k2`);
  await p2.waitForFunction(() => Number(document.body.dataset.samples || 0) >= 1);
  assert.equal(new URL(p2.url()).search, '');
  assert.ok(seen.every((a) => a === 'Bearer k2'));
  await p2.close();
});

test('/admin serves the embedded files with their types and a strict policy', async () => {
  for (const [path, type] of [
    ['/admin', 'text/html'],
    ['/admin/', 'text/html'],
    ['/admin/index.html', 'text/html'],
    ['/admin/dashboard.js', 'text/javascript'],
    ['/admin/dashboard.css', 'text/css'],
  ]) {
    const r = await fetch(node.http + path);
    assert.equal(r.status, 200, path);
    assert.match(r.headers.get('content-type'), new RegExp(`^${type}`), path);
    assert.match(r.headers.get('content-security-policy'), /default-src 'none'/);
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    assert.ok((await r.text()).length > 500, path);
  }
  assert.equal((await fetch(node.http + '/admin/nope.js')).status, 404);
  assert.equal((await fetch(node.http + '/administrator')).status, 404);
  assert.equal((await fetch(node.http + '/admin', { method: 'POST', body: 'x' })).status, 405);
});

test('with --admin-key: the page asks for the key, then shows the figures', async () => {
  const keyed = new TidewireNode('dashboard-key', ['--admin-key', 'adm1n-s3cret']);
  await keyed.start();
  try {
    assert.equal((await fetch(keyed.http + '/stats')).status, 401);
    const page = await browser.newPage();
    const errors = watchErrors(page);
    await page.goto(`${keyed.http}/admin`);
    await page.waitForSelector('#keyform:not([hidden])');
    await page.fill('#keyinput', 'adm1n-s3cret');
    await page.click('#keyform button');
    await page.waitForFunction(() => Number(document.body.dataset.samples || 0) >= 2);
    assert.equal(await page.textContent('#feed'), 'live');
    assert.match(await page.textContent('#node'), /^n1\./);
    /* The key stays for this tab: a reload needs no prompt. */
    await page.reload();
    await page.waitForFunction(() => Number(document.body.dataset.samples || 0) >= 1);
    assert.equal(await page.isHidden('#keyform'), true);
    await page.close();
    /* Refusals of the first, keyless, request are the only errors. */
    assert.ok(errors.every((e) => /401/.test(e)), errors.join('\n'));
  } finally {
    await keyed.cleanup();
  }
});

test('with --threads 2: the page shows how the clients are spread over the loops', async () => {
  const threaded = new TidewireNode('dashboard-threads', ['--threads', '2']);
  await threaded.start();
  const sockets = [];
  try {
    /* 16 clients: the kernel leaves a loop without one with odds of 2 in 65,536. */
    for (let i = 0; i < 16; i++) {
      const ws = new WebSocket(threaded.url);
      sockets.push(ws);
      await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    }
    const page = await browser.newPage();
    const errors = watchErrors(page);
    await page.goto(`${threaded.http}/admin`);
    await page.waitForFunction(() => Number(document.body.dataset.samples || 0) >= 2);
    const misc = await page.$$eval('#misc tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)));
    const row = misc.find((r) => r[0] === 'connections per event loop (2)');
    assert.ok(row, JSON.stringify(misc));
    const counts = row[1].split(' / ').map(Number);
    assert.equal(counts.length, 2);
    assert.ok(counts.every((n) => n > 0), row[1]);
    /* The page's own /stats requests are connections too. */
    assert.ok(counts[0] + counts[1] >= 16, row[1]);
    assert.deepEqual(errors, []);
    await page.close();
  } finally {
    for (const ws of sockets) ws.close();
    await threaded.cleanup();
  }
});
