// tidewire admin dashboard: polls this node's /stats every second, keeps the last five
// minutes in memory and draws them on canvases. No library, no CDN: this file, the page and
// its stylesheet are all there is, and they are built into the node's binary.
//
// The admin key (--admin-key): taken once from ?key= (then removed from the address bar)
// or asked for when /stats answers 401, kept in sessionStorage for this tab, and sent as
// `Authorization: Bearer KEY`.

const POLL_MS = 1000;
const WINDOW = 300; /* samples kept: five minutes at one per second */
const KEY_ITEM = 'tidewire.adminKey';

const $ = (id) => document.getElementById(id);

/* ---- the admin key ---------------------------------------------------------------------- */

function takeKeyFromUrl() {
  const url = new URL(location.href);
  const k = url.searchParams.get('key');
  if (k === null) return;
  sessionStorage.setItem(KEY_ITEM, k);
  url.searchParams.delete('key');
  history.replaceState(null, '', url.pathname + (url.search ? url.search : '') + url.hash);
}

function adminKey() {
  return sessionStorage.getItem(KEY_ITEM) || '';
}

function askForKey(message) {
  $('main').hidden = true;
  $('keyform').hidden = false;
  $('keyerror').textContent = message || '';
  $('keyinput').focus();
}

/* ---- formatting ------------------------------------------------------------------------- */

function num(v) {
  if (!Number.isFinite(v)) return '–';
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(a >= 1e10 ? 0 : 1) + 'G';
  if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + 'M';
  if (a >= 1e4) return (v / 1e3).toFixed(a >= 1e5 ? 0 : 1) + 'k';
  if (a >= 100 || Number.isInteger(v)) return String(Math.round(v));
  return v.toFixed(1);
}

function bytes(v) {
  if (!Number.isFinite(v)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return (i === 0 || v >= 100 ? Math.round(v) : v.toFixed(1)) + ' ' + units[i];
}

function micros(v) {
  if (!Number.isFinite(v)) return '–';
  if (v >= 1e6) return (v / 1e6).toFixed(2) + ' s';
  if (v >= 1e3) return (v / 1e3).toFixed(v >= 1e4 ? 0 : 1) + ' ms';
  return Math.round(v) + ' µs';
}

function duration(s) {
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `up ${d}d ${h}h`;
  if (h) return `up ${h}h ${m}m`;
  return `up ${m}m ${s % 60}s`;
}

/* ---- charts ----------------------------------------------------------------------------- */

/* A line chart of a few series sharing one y axis, over the sample window. */
class Chart {
  constructor(canvas, lines, fmt) {
    this.canvas = canvas;
    this.lines = lines; /* [{label, color, data: []}] */
    this.fmt = fmt;
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth;
    const h = c.clientHeight;
    if (!w || !h) return;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.documentElement);
    const muted = css.getPropertyValue('--muted').trim() || '#888';
    const grid = css.getPropertyValue('--line').trim() || '#333';
    g.font = '11px system-ui, sans-serif';
    let max = 0;
    for (const l of this.lines) for (const v of l.data) if (Number.isFinite(v) && v > max) max = v;
    max = niceMax(max);
    /* Room for the widest y label. */
    let left = 0;
    for (let i = 0; i <= 4; i++) left = Math.max(left, g.measureText(this.fmt((max * i) / 4)).width);
    left = Math.ceil(left) + 10;
    const right = 8;
    const top = 18;
    const bottom = 18;
    const pw = w - left - right;
    const ph = h - top - bottom;
    g.textBaseline = 'middle';
    g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = top + ph - (ph * i) / 4;
      g.strokeStyle = grid;
      g.beginPath();
      g.moveTo(left, Math.round(y) + 0.5);
      g.lineTo(left + pw, Math.round(y) + 0.5);
      g.stroke();
      g.fillStyle = muted;
      g.textAlign = 'right';
      g.fillText(this.fmt((max * i) / 4), left - 6, y);
    }
    g.textAlign = 'left';
    /* The x axis spans the samples there are, at least a minute, at most the window. */
    const span = Math.min(WINDOW, Math.max(60, ...this.lines.map((l) => l.data.length)));
    const minutes = (span * POLL_MS) / 60000;
    g.fillText(minutes >= 1.5 ? `${minutes.toFixed(1).replace(/\.0$/, '')} min ago` : `${Math.round(span * POLL_MS / 1000)} s ago`, left, h - 6);
    g.textAlign = 'right';
    g.fillText('now', left + pw, h - 6);
    let lx = left + 4;
    for (const l of this.lines) {
      const n = l.data.length;
      if (n) {
        const step = pw / (span - 1);
        const x0 = left + pw - (n - 1) * step;
        const yOf = (v) => top + ph - (max ? (Math.max(0, v) / max) * ph : 0);
        g.beginPath();
        for (let i = 0; i < n; i++) {
          const v = Number.isFinite(l.data[i]) ? l.data[i] : 0;
          if (i === 0) g.moveTo(x0, yOf(v));
          else g.lineTo(x0 + i * step, yOf(v));
        }
        g.strokeStyle = l.color;
        g.lineWidth = 1.6;
        g.stroke();
        g.lineTo(x0 + (n - 1) * step, top + ph);
        g.lineTo(x0, top + ph);
        g.closePath();
        g.globalAlpha = 0.12;
        g.fillStyle = l.color;
        g.fill();
        g.globalAlpha = 1;
      }
      const lastV = n ? l.data[n - 1] : NaN;
      const text = `${l.label} ${this.fmt(lastV)}`;
      g.fillStyle = l.color;
      g.fillRect(lx, 4, 8, 8);
      g.fillStyle = muted;
      g.textAlign = 'left';
      g.fillText(text, lx + 12, 8);
      lx += g.measureText(text).width + 28;
    }
    c.dataset.points = String(Math.max(0, ...this.lines.map((l) => l.data.length)));
  }
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

const css = getComputedStyle(document.documentElement);
const colorA = () => css.getPropertyValue('--a').trim() || '#4fc3f7';
const colorB = () => css.getPropertyValue('--b').trim() || '#ffb74d';

const S = {
  conns: [],
  subs: [],
  evIn: [],
  evOut: [],
  bIn: [],
  bOut: [],
  commitMean: [],
  slowest: [],
};
let charts = [];

function push(arr, v) {
  arr.push(v);
  if (arr.length > WINDOW) arr.shift();
}

/* ---- rendering /stats ------------------------------------------------------------------- */

let prev = null; /* the previous sample: {t, stats} */
let samples = 0;

/* The mean commit latency (µs) between two readings: the node gives the mean since start and
 * the count, so their product is the total. NaN when nothing was committed meanwhile. */
function intervalMean(cur, old) {
  const dc = (cur.commits || 0) - (old.commits || 0);
  if (!(dc > 0)) return NaN;
  const total = (cur.commit_latency_avg_us || 0) * cur.commits - (old.commit_latency_avg_us || 0) * (old.commits || 0);
  return Math.max(0, total / dc);
}

/* The upper bound (µs) of the bucket holding the 99th percentile of this interval's commits,
 * from two readings of the cumulative histogram; NaN when there were none. */
function slowestBucket(cur, old) {
  if (!cur || !old) return NaN;
  const keys = Object.keys(cur);
  const d = keys.map((k) => Math.max(0, (cur[k] || 0) - (old[k] || 0)));
  const total = d.reduce((a, b) => a + b, 0);
  if (!total) return NaN;
  let acc = 0;
  for (let i = 0; i < keys.length; i++) {
    acc += d[i];
    if (acc >= total * 0.99) return keys[i] === 'inf' ? Number(keys[i - 1] || 0) * 2 : Number(keys[i]);
  }
  return NaN;
}

function text(id, v) {
  const el = $(id);
  if (el.textContent !== v) el.textContent = v;
}

function rows(tbody, list) {
  const frag = document.createDocumentFragment();
  for (const cells of list) {
    const tr = document.createElement('tr');
    for (const c of cells) {
      const td = document.createElement('td');
      td.textContent = c;
      tr.appendChild(td);
    }
    frag.appendChild(tr);
  }
  tbody.replaceChildren(frag);
}

function render(s, now) {
  const dt = prev ? (now - prev.t) / 1000 : 0;
  const p = prev ? prev.stats : null;
  text('node', s.node || '?');
  text('version', s.version ? `v${s.version}` : '');
  text('uptime', duration(s.uptime_s || 0));
  const ready = $('ready');
  ready.textContent = s.ready ? 'ready' : 'not ready';
  ready.className = 'pill ' + (s.ready ? 'ok' : 'bad');

  const conn = s.connections || {};
  const ev = s.events || {};
  const by = s.bytes || {};
  const st = s.store || {};
  text('t-connections', num(conn.now));
  text('t-websocket', num(conn.websocket_now));
  text('t-subscriptions', num(s.subscriptions));
  text('t-channels', num(s.channels));
  text('t-in', num(ev.in_per_s));
  text('t-out', num(ev.out_per_s));
  text('t-store', bytes(st.size_bytes));
  text('t-commit', micros(st.commit_latency_avg_us));

  push(S.conns, conn.now);
  push(S.subs, s.subscriptions);
  push(S.evIn, ev.in_per_s);
  push(S.evOut, ev.out_per_s);
  push(S.bIn, by.in_per_s);
  push(S.bOut, by.out_per_s);
  push(S.commitMean, p ? intervalMean(st, p.store || {}) : NaN);
  push(S.slowest, p ? slowestBucket(st.commit_latency_us_buckets, (p.store || {}).commit_latency_us_buckets) : NaN);

  /* Top channels: subscribers now, and events per second from the counters' difference. */
  const before = new Map(((p && p.channels_top) || []).map((c) => [c.channel, c.events]));
  const top = (s.channels_top || []).slice().sort((a, b) => b.subscribers - a.subscribers || b.events - a.events);
  rows(
    $('top').tBodies[0],
    top.length
      ? top.map((c) => {
          const was = before.get(c.channel);
          const rate = was !== undefined && dt > 0 ? Math.max(0, (c.events - was) / dt) : NaN;
          return [c.channel, num(c.subscribers), num(rate), num(c.events)];
        })
      : [['no channel has subscribers', '', '', '']]
  );

  const used = st.size_bytes || 0;
  const map = st.map_size_bytes || 0;
  $('store-bar').style.width = map ? `${Math.min(100, (100 * used) / map).toFixed(2)}%` : '0';
  text(
    'store-text',
    `${bytes(used)} of ${bytes(map)} · ${num(st.commits)} commits · ${num(st.events_per_commit)} events per commit · ` +
      `mean ${micros(st.commit_latency_avg_us)}, slowest ${micros(st.commit_latency_max_us)}` +
      (st.events_kept !== undefined
        ? ` · ${num(st.events_kept)} events kept, ${num(st.retention_trimmed)} trimmed by retention`
        : '')
  );
  rows(
    $('origins').tBodies[0],
    (st.origins || []).map((o) => [o.origin, num(o.first_seq), num(o.last_seq)])
  );
  const members = (s.cluster && s.cluster.members) || [];
  rows(
    $('members').tBodies[0],
    members.map((m) => [m.node, m.state, m.replication_lag === undefined ? '–' : num(m.replication_lag)])
  );
  const r = s.resumes || {};
  const sc = s.slow_consumers || {};
  const misc = [
    ['resumes recovered', num(r.recovered)],
    ['resumes past retention', num(r.unrecovered)],
    ['slow subscriptions fed from the log', num(sc.fell_behind)],
    ['closed as slow consumers (4208)', num(sc.closed)],
    ['publishes refused', num(ev.publishes_refused)],
  ];
  const sec = s.security;
  if (sec) {
    misc.push(
      ['tokens refused (4001)', num(sec.auth_failures)],
      ['requests forbidden', num(sec.forbidden)],
      ['closed for rate (4129)', num(sec.rate_limited)]
    );
  }
  const loops = s.loops || [];
  if (loops.length > 1) {
    // --threads: how the kernel spread the clients over the event loops.
    misc.push([`connections per event loop (${loops.length})`, loops.map((l) => num(l.connections)).join(' / ')]);
  }
  rows($('misc').tBodies[0], misc);

  prev = { t: now, stats: s };
  samples++;
  document.body.dataset.samples = String(samples);
  drawAll();
}

function drawAll() {
  for (const c of charts) c.draw();
}

/* ---- polling ---------------------------------------------------------------------------- */

let timer = 0;
async function poll() {
  timer = 0;
  const feed = $('feed');
  const headers = {};
  const k = adminKey();
  if (k) headers.Authorization = `Bearer ${k}`;
  try {
    const res = await fetch('/stats', { headers, cache: 'no-store' });
    if (res.status === 401 || res.status === 403) {
      if (k) sessionStorage.removeItem(KEY_ITEM);
      feed.textContent = 'needs the admin key';
      feed.className = 'pill bad';
      askForKey(k ? 'That key was refused.' : '');
      return; /* polling starts again when a key is given */
    }
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const s = await res.json();
    render(s, Date.now());
    feed.textContent = 'live';
    feed.className = 'pill ok';
  } catch (e) {
    feed.textContent = `no data: ${e.message || e}`;
    feed.className = 'pill bad';
  }
  timer = setTimeout(poll, POLL_MS);
}

function start() {
  takeKeyFromUrl();
  charts = [
    new Chart($('c-conns'), [
      { label: 'connections', color: colorA(), data: S.conns },
      { label: 'subscriptions', color: colorB(), data: S.subs },
    ], num),
    new Chart($('c-events'), [
      { label: 'in', color: colorA(), data: S.evIn },
      { label: 'out', color: colorB(), data: S.evOut },
    ], num),
    new Chart($('c-bytes'), [
      { label: 'in', color: colorA(), data: S.bIn },
      { label: 'out', color: colorB(), data: S.bOut },
    ], (v) => bytes(v) + '/s'),
    new Chart($('c-commit'), [
      { label: 'mean', color: colorA(), data: S.commitMean },
      { label: 'p99 ≤', color: colorB(), data: S.slowest },
    ], micros),
  ];
  $('keyform').addEventListener('submit', (e) => {
    e.preventDefault();
    const v = $('keyinput').value;
    if (!v) return;
    sessionStorage.setItem(KEY_ITEM, v);
    $('keyinput').value = '';
    $('keyform').hidden = true;
    $('main').hidden = false;
    if (!timer) poll();
  });
  window.addEventListener('resize', drawAll);
  poll();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
else start();
