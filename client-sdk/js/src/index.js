/*
 * tidewire — the JavaScript client (browsers and Node).
 *
 * One Tidewire object is one logical connection to a node over WebSocket
 * (docs/protocol.md). It reconnects by itself, subscribes every channel again from where it
 * left off, and drops duplicate events exactly, so the application sees each event of a
 * channel once and in order per origin. The semantics are those of the C SDK (twc.h):
 *
 *  - a cursor per channel is a version vector {origin: seq}; an event is delivered when its
 *    seq is above its origin's entry (then the entry becomes its seq), else dropped;
 *  - `subscribed.cursor` is merged into the cursor (entry-wise maximum);
 *  - after every reconnect each channel is subscribed again with since = its cursor;
 *  - publishes not acknowledged when a connection drops are sent again (at-least-once), and
 *    publishes made while offline wait in a bounded queue;
 *  - close codes act by range: 1000 stop; 4000-4099 terminal (4001: a new token first);
 *    4100-4199 back off; 4200-4299 and 1012 reconnect at once, but only after a connection
 *    that lasted at least 1 s; anything else backs off (full jitter, 100 ms doubling to 10 s).
 */

export const STATES = Object.freeze(['connecting', 'connected', 'reconnecting', 'disconnected']);

const DEFAULTS = {
  backoffInitialMs: 100,
  backoffMaxMs: 10000,
  backoffFactor: 2,
  connectTimeoutMs: 10000,
  closeTimeoutMs: 2000,
  maxQueuedBytes: 8 << 20,
  maxPublishBytes: 1 << 20,
  tokenRefreshMarginMs: 30000,
  storageKey: 'tidewire:cursor:',
};
/* A connection must have lasted this long before 42xx/1012 may reconnect at once. */
const HEALTHY_MS = 1000;
/* A server that pings every P seconds is presumed dead after 2.5 P of silence. */
const IDLE_FACTOR = 2.5;
/* Consecutive 4001/401 refusals, each after a fresh getToken(), before giving up. */
const MAX_AUTH_RETRIES = 3;

/** Errors the client reports: `code` is a short name, `status` an HTTP-like or close code. */
export class TidewireError extends Error {
  constructor(code, message, status = 0, channel = undefined) {
    super(message);
    this.name = 'TidewireError';
    this.code = code;
    this.status = status;
    if (channel !== undefined) this.channel = channel;
  }
}

/** What a close code asks of a client: 'stop', 'terminal', 'backoff', 'now' or 'retry'. */
export function closeAction(code) {
  if (code === 1000) return 'stop';
  if (code >= 4000 && code <= 4099) return 'terminal';
  if (code >= 4100 && code <= 4199) return 'backoff';
  if ((code >= 4200 && code <= 4299) || code === 1012) return 'now';
  return 'retry';
}

/** Splits "ORIGIN:SEQ"; returns null when malformed. */
export function parsePos(pos) {
  if (typeof pos !== 'string') return null;
  const i = pos.lastIndexOf(':');
  if (i <= 0 || i === pos.length - 1) return null;
  const digits = pos.slice(i + 1);
  if (!/^[0-9]+$/.test(digits)) return null;
  const seq = Number(digits);
  if (!Number.isSafeInteger(seq)) return null;
  return { origin: pos.slice(0, i), seq };
}

/** Turns a cursor in any of the protocol's forms ({origin: seq}, "ORIGIN:SEQ", {}) into a
 * plain version vector; throws TidewireError('CURSOR') when it is none of them. */
export function normalizeCursor(since) {
  if (typeof since === 'string') {
    const p = parsePos(since);
    if (!p) throw new TidewireError('CURSOR', `invalid cursor position ${JSON.stringify(since)}`);
    return { [p.origin]: p.seq };
  }
  if (since === null || typeof since !== 'object' || Array.isArray(since))
    throw new TidewireError('CURSOR', 'a cursor is {origin: seq}, "ORIGIN:SEQ" or {}');
  const out = {};
  for (const [origin, seq] of Object.entries(since)) {
    if (!origin || !Number.isSafeInteger(seq) || seq < 0)
      throw new TidewireError('CURSOR', `invalid cursor entry ${JSON.stringify(origin)}: ${seq}`);
    out[origin] = seq;
  }
  return out;
}

/* Entry-wise maximum of src into dst (a Map). */
function mergeCursor(dst, src) {
  for (const [origin, seq] of Object.entries(src)) {
    if (Number.isSafeInteger(seq) && seq > (dst.get(origin) ?? 0)) dst.set(origin, seq);
  }
}

function cursorObject(map) {
  const o = {};
  for (const [k, v] of map) o[k] = v;
  return o;
}

/* The `exp` of a JWT in ms, or 0 when the token is not a JWT with an expiry. */
function jwtExpiryMs(token) {
  if (typeof token !== 'string') return 0;
  const parts = token.split('.');
  if (parts.length !== 3) return 0;
  try {
    let b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4) b64 += '=';
    const text =
      typeof atob === 'function' ? atob(b64) : Buffer.from(b64, 'base64').toString('binary');
    const payload = JSON.parse(text);
    return Number.isFinite(payload.exp) ? payload.exp * 1000 : 0;
  } catch {
    return 0;
  }
}

const utf8 = new TextEncoder();

/**
 * A client. See README.md and index.d.ts for the whole API.
 */
export class Tidewire {
  constructor(url, options = {}) {
    let u;
    try {
      u = new URL(url);
    } catch {
      u = null;
    }
    if (!u || (u.protocol !== 'ws:' && u.protocol !== 'wss:'))
      throw new TidewireError('URL', `expected a ws:// or wss:// URL, got ${String(url)}`);
    if (u.pathname === '/' || u.pathname === '') u.pathname = '/ws';
    this.url = u.toString();
    const o = { ...DEFAULTS, ...options };
    this._opts = o;
    this._protocol = o.protocol === 'msgpack' ? 'msgpack' : 'json';
    if (o.protocol && o.protocol !== 'json' && o.protocol !== 'msgpack')
      throw new TidewireError('ARG', `protocol must be 'json' or 'msgpack'`);
    this._WebSocket = o.WebSocket || globalThis.WebSocket;
    if (typeof this._WebSocket !== 'function')
      throw new TidewireError(
        'ARG',
        'no WebSocket implementation: pass { WebSocket } (for example from the "ws" package on Node before 22)'
      );
    this._codec = o.msgpack || null;
    this._token = o.token ?? null;
    this._getToken = typeof o.getToken === 'function' ? o.getToken : null;
    this._storage = o.storage === undefined ? null : o.storage;

    this._state = 'disconnected';
    this._listeners = new Map(); /* event name -> Set of functions */
    this._want = false;
    this._ws = null;
    this._wsOpen = false;
    this._connected = false;
    this._connectedAt = 0;
    this._connectId = 0;
    this._attempt = 0; /* backoff attempt */
    this._authFailures = 0;
    this._needToken = false;
    this._nextId = 1;
    this._timers = { retry: null, connect: null, idle: null, refresh: null };
    this._lastRx = 0;
    this._pingIntervalMs = 0;
    this._node = '';
    this._session = '';
    this._subs = new Map(); /* channel -> subscription record */
    this._pubs = []; /* publishes queued or awaiting ack, in send order */
    this._queuedBytes = 0;
    this._requests = new Map(); /* id -> {resolve, reject, kind} for presence/ping/refresh */
    this._stats = {
      events: 0,
      duplicates: 0,
      connects: 0,
      disconnects: 0,
      publishesSent: 0,
      publishesResent: 0,
      acks: 0,
    };
    this._generation = 0; /* bumps on each attempt: stale socket callbacks are ignored */
    if (o.autoConnect !== false) this.connect();
  }

  /* ---- events ------------------------------------------------------------------------- */

  /** Adds a listener; returns a function that removes it. Events: 'state' (state, error?),
   * 'connected' ({node, session}), 'event' (event), 'subscribed' (info), 'error' (error),
   * 'join' / 'leave' ({channel, user, ...}). */
  on(type, fn) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    const set = this._listeners.get(type);
    if (set) set.delete(fn);
  }

  _emit(type, ...args) {
    const set = this._listeners.get(type);
    if (!set || !set.size) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (e) {
        this._reportListenerError(e);
      }
    }
  }

  _reportListenerError(e) {
    /* A throwing listener must not break the client's state machine; surface it later. */
    setTimeout(() => {
      throw e;
    }, 0);
  }

  /* ---- getters ------------------------------------------------------------------------ */

  get state() {
    return this._state;
  }
  /** The connected node's origin id, or '' before the first `connected`. */
  get node() {
    return this._node;
  }
  get session() {
    return this._session;
  }
  get protocol() {
    return this._protocol;
  }
  /** Counters since construction (a copy). */
  get stats() {
    return { ...this._stats, queuedBytes: this._queuedBytes, queuedPublishes: this._pubs.length };
  }
  /** The channels subscribed to. */
  get channels() {
    return [...this._subs.keys()];
  }

  /** The channel's cursor as {origin: seq} (a copy), or undefined when not subscribed. */
  cursor(channel) {
    const s = this._subs.get(channel);
    return s ? cursorObject(s.cursor) : undefined;
  }

  /* ---- connection lifecycle -------------------------------------------------------------- */

  _setState(state, why) {
    if (this._state === state) return;
    this._state = state;
    this._emit('state', state, why);
  }

  /** Starts connecting (the constructor does unless autoConnect: false); from then on the
   * client keeps reconnecting until close(), a terminal close code or a normal close. */
  connect() {
    if (this._want) return;
    this._detach();
    this._want = true;
    this._attempt = 0;
    this._authFailures = 0;
    this._setState('connecting');
    this._startAttempt();
  }

  /** Stops: closes with 1000 and becomes 'disconnected'. Publishes not yet acknowledged are
   * rejected with code 'CLOSED'. Subscriptions and cursors are kept: connect() resumes. */
  close() {
    this._want = false;
    this._clearTimer('retry');
    this._detach(1000);
    this._setDisconnected(null);
  }

  _setDisconnected(why) {
    this._want = false;
    this._clearTimers();
    this._setState('disconnected', why || undefined);
    if (!this._want) {
      this._failPublishes(new TidewireError('CLOSED', 'client stopped before the publish was acknowledged'));
      this._failRequests(new TidewireError('CLOSED', 'client stopped'));
    }
  }

  _clearTimer(name) {
    const t = this._timers[name];
    if (t !== null) {
      clearTimeout(t);
      this._timers[name] = null;
    }
  }

  _clearTimers() {
    for (const name of Object.keys(this._timers)) this._clearTimer(name);
  }

  _setTimer(name, ms, fn) {
    this._clearTimer(name);
    this._timers[name] = setTimeout(() => {
      this._timers[name] = null;
      fn();
    }, ms);
  }

  /* Drops the current socket (if any) without reporting; code: close frame to send. */
  _detach(code) {
    const ws = this._ws;
    this._clearTimer('connect');
    this._clearTimer('idle');
    this._clearTimer('refresh');
    if (!ws) return;
    this._ws = null;
    this._generation++;
    /* A no-op error listener stays: the "ws" package throws an 'error' without one (for
     * example when closed while still connecting). */
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => {};
    try {
      if (ws.readyState === 0 || ws.readyState === 1) ws.close(code || 1000);
    } catch {
      /* already closing */
    }
    /* Some implementations (ws on Node) keep the socket until the close handshake ends;
     * make sure it goes even if the server never answers. */
    if (typeof ws.terminate === 'function') {
      const t = setTimeout(() => {
        try {
          ws.terminate();
        } catch {
          /* gone */
        }
      }, this._opts.closeTimeoutMs);
      if (typeof t.unref === 'function') t.unref();
      ws.onclose = () => clearTimeout(t);
    }
    this._forgetConnection();
  }

  _forgetConnection() {
    this._wsOpen = false;
    this._connected = false;
    this._node = '';
    this._session = '';
    for (const s of this._subs.values()) {
      s.state = 'pending';
      s.reqId = 0;
    }
    for (const p of this._pubs) p.id = 0;
    this._failRequests(new TidewireError('DISCONNECTED', 'connection lost before the reply'));
  }

  async _startAttempt() {
    const gen = ++this._generation;
    if (this._getToken && (this._token === null || this._needToken || this._tokenExpiring())) {
      try {
        const token = await this._getToken();
        if (gen !== this._generation || !this._want) return;
        if (typeof token !== 'string' || !token) throw new Error('getToken() gave no token');
        this._token = token;
        this._needToken = false;
      } catch (e) {
        if (gen !== this._generation || !this._want) return;
        this._connEnded(new TidewireError('TOKEN', `getToken failed: ${e && e.message ? e.message : e}`), 0);
        return;
      }
    }
    if (this._protocol === 'msgpack' && !this._codec) {
      try {
        const spec = '@msgpack/msgpack';
        const m = await import(/* webpackIgnore: true */ /* @vite-ignore */ spec);
        this._codec = { encode: m.encode, decode: m.decode };
      } catch {
        this._want = false;
        this._setDisconnected(
          new TidewireError('UNSUPPORTED', "protocol 'msgpack' needs { msgpack: { encode, decode } } or the @msgpack/msgpack package")
        );
        return;
      }
      if (gen !== this._generation || !this._want) return;
    }
    let ws;
    try {
      ws = new this._WebSocket(this.url, [`tidewire.v1.${this._protocol}`]);
    } catch (e) {
      this._connEnded(new TidewireError('CONNECT', `cannot connect to ${this.url}: ${e.message || e}`), 0);
      return;
    }
    this._ws = ws;
    if (this._protocol === 'msgpack') ws.binaryType = 'arraybuffer';
    let closeSeen = false;
    ws.onopen = () => {
      if (gen !== this._generation) return;
      this._onOpen();
    };
    ws.onmessage = (ev) => {
      if (gen !== this._generation) return;
      this._onMessage(ev.data);
    };
    ws.onerror = () => {
      /* onclose follows with the code; nothing to do here */
    };
    ws.onclose = (ev) => {
      if (closeSeen || gen !== this._generation) return;
      closeSeen = true;
      this._ws = null;
      this._generation++;
      const code = ev && ev.code ? ev.code : 1006;
      const reason = (ev && ev.reason) || (code === 1006 ? 'connection lost' : `closed with ${code}`);
      this._connEnded(new TidewireError('PEER_CLOSED', reason, code), code);
    };
    this._setTimer('connect', this._opts.connectTimeoutMs, () => {
      if (gen !== this._generation || this._connected) return;
      this._detach();
      this._connEnded(new TidewireError('TIMEOUT', `no connected reply within ${this._opts.connectTimeoutMs} ms`), 0);
    });
  }

  _tokenExpiring() {
    const exp = jwtExpiryMs(this._token);
    return exp !== 0 && exp - Date.now() < this._opts.tokenRefreshMarginMs;
  }

  /* The connection ended (or could not start); code: WebSocket close code or 0. */
  _connEnded(why, code) {
    const wasConnected = this._connected;
    const uptime = wasConnected ? Date.now() - this._connectedAt : 0;
    this._detach();
    this._forgetConnection();
    this._stats.disconnects++;
    if (!this._want) {
      this._setDisconnected(null);
      return;
    }
    let act = code ? closeAction(code) : 'retry';
    if (act === 'terminal' && code === 4001 && this._getToken && this._authFailures < MAX_AUTH_RETRIES) {
      /* Unauthorized (expired token): get a new one and try again after the backoff. */
      this._authFailures++;
      this._needToken = true;
      act = 'backoff';
    }
    if (act === 'stop' || act === 'terminal') {
      if (act === 'terminal') this._emit('error', why);
      this._setDisconnected(why);
      return;
    }
    const healthy = wasConnected && uptime >= HEALTHY_MS;
    /* A 41xx close means "you are too much for me": keep growing the backoff even after a
     * healthy connection. Anything else after a healthy connection starts over. */
    if (healthy && act !== 'backoff') this._attempt = 0;
    let delay;
    if (act === 'now' && healthy) {
      delay = 0;
    } else {
      const o = this._opts;
      const cap = Math.min(o.backoffMaxMs, o.backoffInitialMs * Math.pow(o.backoffFactor, this._attempt));
      if (this._attempt < 64) this._attempt++;
      delay = Math.floor(Math.random() * (cap + 1));
    }
    this._setTimer('retry', delay, () => {
      if (this._want && !this._ws) this._startAttempt();
    });
    this._setState('reconnecting', why);
    this._emit('error', why);
  }

  /* ---- sending -------------------------------------------------------------------------- */

  _encode(msg) {
    if (this._protocol === 'msgpack') return this._codec.encode(msg);
    return JSON.stringify(msg);
  }

  _send(msg) {
    const ws = this._ws;
    if (!ws || !this._wsOpen) return false;
    try {
      ws.send(typeof msg === 'string' || msg instanceof Uint8Array ? msg : this._encode(msg));
      return true;
    } catch (e) {
      this._emit('error', new TidewireError('SEND', `cannot send: ${e.message || e}`));
      return false;
    }
  }

  _onOpen() {
    this._wsOpen = true;
    this._lastRx = Date.now();
    /* Pipelined: connect, every subscription, every held publish. The server handles a
     * connection's messages in order, so they all follow the connect. */
    this._connectId = this._nextId++;
    const connect = { op: 'connect', id: this._connectId };
    if (this._token) connect.token = this._token;
    this._send(connect);
    for (const s of this._subs.values()) this._sendSubscribe(s);
    this._pubs = this._pubs.filter((p) => !p.done);
    for (const p of this._pubs) this._sendPublish(p);
  }

  _sendSubscribe(s) {
    const id = this._nextId++;
    const msg = { op: 'subscribe', id, channel: s.channel };
    if (s.hasCursor) msg.since = cursorObject(s.cursor);
    if (s.last) msg.last = s.last;
    if (this._send(msg)) {
      s.state = 'sent';
      s.reqId = id;
    }
  }

  _sendPublish(p) {
    p.id = this._nextId++;
    const msg =
      this._protocol === 'json'
        ? `{"op":"publish","id":${p.id},${p.body}` /* body: "channel":...,"data":...} */
        : this._codec.encode({ op: 'publish', id: p.id, channel: p.channel, data: p.data });
    if (!this._send(msg)) {
      p.id = 0;
      return;
    }
    this._stats.publishesSent++;
    if (p.sentBefore) this._stats.publishesResent++;
    p.sentBefore = true;
  }

  /* ---- receiving ------------------------------------------------------------------------ */

  _decode(data) {
    if (typeof data === 'string') return JSON.parse(data);
    if (!this._codec) throw new Error('binary message without a msgpack codec');
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : data;
    return this._codec.decode(bytes);
  }

  _onMessage(data) {
    this._lastRx = Date.now();
    let m;
    try {
      m = this._decode(data);
    } catch (e) {
      this._emit('error', new TidewireError('PROTOCOL', `malformed message from the server: ${e.message || e}`));
      return;
    }
    if (!m || typeof m !== 'object') return;
    switch (m.op) {
      case 'event':
        this._handleEvent(m);
        break;
      case 'subscribed':
        this._handleSubscribed(m);
        break;
      case 'ack':
        this._handleAck(m);
        break;
      case 'connected':
        this._handleConnected(m);
        break;
      case 'error':
        this._handleError(m);
        break;
      case 'presence':
      case 'pong':
      case 'refreshed':
        this._completeRequest(m);
        break;
      case 'join':
      case 'leave':
        this._handlePresenceChange(m);
        break;
      default: /* unsubscribed and later additions: nothing to do */
        break;
    }
  }

  _handleConnected(m) {
    if (this._connected) return;
    this._connected = true;
    this._connectedAt = Date.now();
    this._authFailures = 0;
    this._stats.connects++;
    this._clearTimer('connect');
    this._node = typeof m.node === 'string' ? m.node : '';
    this._session = typeof m.session === 'string' ? m.session : '';
    this._pingIntervalMs = typeof m.ping_interval === 'number' && m.ping_interval > 0 ? m.ping_interval * 1000 : 0;
    this._armLiveness();
    this._scheduleTokenRefresh();
    this._setState('connected');
    this._emit('connected', { node: this._node, session: this._session });
  }

  /* Browsers hide WebSocket pings from scripts, so liveness is judged on messages: when the
   * line has been quiet for a ping interval we send a `ping`; silence for 2.5 intervals
   * means the server or the path is gone. */
  _armLiveness() {
    const p = this._pingIntervalMs;
    if (!p) return;
    const tick = () => {
      if (!this._connected || !this._ws) return;
      const quiet = Date.now() - this._lastRx;
      if (quiet >= p * IDLE_FACTOR) {
        this._detach();
        this._connEnded(new TidewireError('TIMEOUT', 'the server went silent'), 0);
        return;
      }
      if (quiet >= p) this._send({ op: 'ping' });
      this._setTimer('idle', Math.max(50, p / 2), tick);
    };
    this._setTimer('idle', Math.max(50, p / 2), tick);
  }

  _scheduleTokenRefresh() {
    if (!this._getToken || !this._token) return;
    const exp = jwtExpiryMs(this._token);
    if (!exp) return;
    const delay = Math.min(0x7fffffff, Math.max(0, exp - Date.now() - this._opts.tokenRefreshMarginMs));
    this._setTimer('refresh', delay, () => this.refreshToken().catch((e) => this._emit('error', e)));
  }

  /** Asks getToken() for a new token now and sends it to the node (`refresh`); the next
   * connection uses it too. Resolves when the node took it. */
  async refreshToken() {
    if (!this._getToken) throw new TidewireError('ARG', 'no getToken option');
    const gen = this._generation;
    const token = await this._getToken();
    if (typeof token !== 'string' || !token) throw new TidewireError('TOKEN', 'getToken() gave no token');
    this._token = token;
    this._needToken = false;
    if (gen !== this._generation || !this._connected) return;
    this._scheduleTokenRefresh();
    await this._request({ op: 'refresh', token }, 'refresh');
  }

  _handleEvent(m) {
    const s = this._subs.get(m.channel);
    if (!s) return; /* after unsubscribe, or a channel we never asked for */
    const p = parsePos(m.pos);
    if (!p || !('data' in m)) {
      this._emit('error', new TidewireError('PROTOCOL', 'event without a valid pos or data', 0, m.channel));
      return;
    }
    if (p.seq <= (s.cursor.get(p.origin) ?? 0)) {
      this._stats.duplicates++;
      return;
    }
    s.cursor.set(p.origin, p.seq);
    s.hasCursor = true;
    this._stats.events++;
    const ev = { channel: m.channel, pos: m.pos, origin: p.origin, seq: p.seq, ts: m.ts ?? 0, data: m.data };
    if (s.keep) {
      s.recent.push(ev);
      if (s.recent.length > s.keep) s.recent.shift();
    }
    this._persist(s);
    for (const l of [...s.listeners]) {
      if (!l.onEvent || !s.listeners.has(l)) continue;
      try {
        l.onEvent(ev);
      } catch (e) {
        this._reportListenerError(e);
      }
    }
    this._emit('event', ev);
  }

  _handleSubscribed(m) {
    const s = this._subs.get(m.channel);
    if (!s || s.state !== 'sent') return;
    if (typeof m.id === 'number' && m.id !== s.reqId) return; /* an older subscribe's reply */
    if (m.cursor && typeof m.cursor === 'object') mergeCursor(s.cursor, m.cursor);
    s.hasCursor = true;
    s.last = 0; /* the view was filled once; resumes need only the cursor */
    s.state = 'active';
    s.reqId = 0;
    this._persist(s);
    const info = { channel: s.channel, recovered: m.recovered !== false, replayed: m.replayed === true };
    for (const l of [...s.listeners]) {
      if (l.onSubscribed) {
        try {
          l.onSubscribed(info);
        } catch (e) {
          this._reportListenerError(e);
        }
      }
    }
    this._emit('subscribed', info);
  }

  _handleAck(m) {
    const p = this._pubs.find((x) => x.id !== 0 && x.id === m.id);
    if (!p || p.done) return;
    this._finishPublish(p);
    this._stats.acks++;
    p.resolve(typeof m.pos === 'string' ? m.pos : '');
  }

  _finishPublish(p) {
    p.done = true;
    this._queuedBytes -= p.bytes;
    const i = this._pubs.indexOf(p);
    if (i >= 0) this._pubs.splice(i, 1);
  }

  _handleError(m) {
    const code = typeof m.code === 'number' ? m.code : 0;
    const message = typeof m.message === 'string' ? m.message : 'error reply without a message';
    const err = new TidewireError('SERVER', message, code);
    if (typeof m.id !== 'number') {
      this._emit('error', err);
      return;
    }
    if (m.id === this._connectId && this._ws) {
      /* The node refused our connect (bad token...): retrying as is cannot help for
       * 400/401/403; with getToken, 401 gets a new token first (as a 4001 close would). */
      this._detach();
      if (code === 401) this._connEnded(err, 4001);
      else if (code === 400 || code === 403) this._connEnded(err, 4003);
      else this._connEnded(err, 0);
      return;
    }
    const p = this._pubs.find((x) => x.id !== 0 && x.id === m.id);
    if (p && !p.done) {
      this._finishPublish(p);
      p.reject(err);
      return;
    }
    if (this._requests.has(m.id)) {
      const r = this._requests.get(m.id);
      this._requests.delete(m.id);
      r.reject(err);
      return;
    }
    for (const s of this._subs.values()) {
      if (s.reqId === m.id && s.state === 'sent') {
        /* Refused subscription: forget it and say so; the application decides. */
        this._subs.delete(s.channel);
        this._clearRelease(s);
        err.channel = s.channel;
        for (const l of [...s.listeners]) {
          if (l.onError) {
            try {
              l.onError(err);
            } catch (e) {
              this._reportListenerError(e);
            }
          }
        }
        this._emit('error', err);
        return;
      }
    }
    this._emit('error', err);
  }

  _handlePresenceChange(m) {
    const s = this._subs.get(m.channel);
    const info = { ...m };
    delete info.op;
    if (s) {
      const key = m.op === 'join' ? 'onJoin' : 'onLeave';
      for (const l of [...s.listeners]) {
        if (l[key]) {
          try {
            l[key](info);
          } catch (e) {
            this._reportListenerError(e);
          }
        }
      }
    }
    this._emit(m.op, info);
  }

  /* ---- requests with replies (presence, ping, refresh) ----------------------------------- */

  _request(msg, kind) {
    return new Promise((resolve, reject) => {
      if (!this._connected) {
        reject(new TidewireError('DISCONNECTED', `not connected: ${kind} needs a live connection`));
        return;
      }
      const id = this._nextId++;
      this._requests.set(id, { resolve, reject, kind });
      if (!this._send({ ...msg, id })) {
        this._requests.delete(id);
        reject(new TidewireError('DISCONNECTED', 'cannot send'));
      }
    });
  }

  _completeRequest(m) {
    const r = typeof m.id === 'number' ? this._requests.get(m.id) : undefined;
    if (!r) return;
    this._requests.delete(m.id);
    r.resolve(m);
  }

  _failRequests(err) {
    if (!this._requests.size) return;
    const all = [...this._requests.values()];
    this._requests.clear();
    for (const r of all) r.reject(err);
  }

  /** The channel's present members [{user, node, conn}] (needs a connection). */
  async presence(channel) {
    checkChannel(channel);
    const m = await this._request({ op: 'presence', channel }, 'presence');
    return Array.isArray(m.members) ? m.members : [];
  }

  /** A round trip to the node; resolves with the time it took in ms. */
  async ping() {
    const t0 = Date.now();
    await this._request({ op: 'ping' }, 'ping');
    return Date.now() - t0;
  }

  /* ---- subscriptions --------------------------------------------------------------------- */

  /**
   * Subscribes to channel; returns a function that unsubscribes (idempotent).
   * options: since (cursor: {origin: seq}, "ORIGIN:SEQ" or {} for everything kept), last
   * (also the newest N events first), onEvent(event), onSubscribed({recovered, replayed}),
   * onError(error), onJoin(info), onLeave(info).
   *
   * Several subscriptions of one channel share one server subscription and one cursor: the
   * first decides `since`; a later one with `last` is handed the newest events this client
   * has kept for the channel (up to the largest `last` asked) before the live ones.
   */
  subscribe(channel, options = {}) {
    checkChannel(channel);
    const listener = {
      onEvent: typeof options === 'function' ? options : options.onEvent,
      onSubscribed: options.onSubscribed,
      onError: options.onError,
      onJoin: options.onJoin,
      onLeave: options.onLeave,
    };
    const last = Number.isSafeInteger(options.last) && options.last > 0 ? options.last : 0;
    let s = this._subs.get(channel);
    if (s) {
      this._clearRelease(s);
      s.listeners.add(listener);
      if (last > s.keep) s.keep = last;
      if (last && s.recent.length && listener.onEvent) {
        const replay = s.recent.slice(-last);
        queueMicrotask(() => {
          if (!s.listeners.has(listener)) return;
          for (const ev of replay) {
            try {
              listener.onEvent(ev);
            } catch (e) {
              this._reportListenerError(e);
            }
          }
        });
      }
      if (s.state === 'active' && listener.onSubscribed) {
        const info = { channel, recovered: true, replayed: false };
        queueMicrotask(() => s.listeners.has(listener) && listener.onSubscribed(info));
      }
    } else {
      let since = options.since;
      if ((since === undefined || since === null) && this._storage) since = this._loadCursor(channel);
      const cursor = new Map();
      let hasCursor = false;
      if (since !== undefined && since !== null) {
        mergeCursor(cursor, normalizeCursor(since));
        hasCursor = true;
      }
      s = {
        channel,
        cursor,
        hasCursor,
        last,
        keep: last,
        recent: [],
        state: 'pending',
        reqId: 0,
        listeners: new Set([listener]),
        releasing: false,
      };
      this._subs.set(channel, s);
      if (this._wsOpen) this._sendSubscribe(s);
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this._removeListener(channel, s, listener);
    };
  }

  _removeListener(channel, s, listener) {
    s.listeners.delete(listener);
    if (s.listeners.size || this._subs.get(channel) !== s) return;
    /* Unsubscribe at the end of this task, so that a component that re-subscribes at once
     * (React StrictMode, a re-render with new options) keeps the server subscription. */
    s.releasing = true;
    queueMicrotask(() => {
      if (!s.releasing || s.listeners.size || this._subs.get(channel) !== s) return;
      this._unsubscribeNow(s);
    });
  }

  _clearRelease(s) {
    s.releasing = false;
  }

  _unsubscribeNow(s) {
    s.releasing = false;
    this._subs.delete(s.channel);
    if (this._wsOpen && s.state !== 'pending') this._send({ op: 'unsubscribe', id: this._nextId++, channel: s.channel });
  }

  /** Unsubscribes every subscription of channel at once (all its listeners) and forgets its
   * cursor (a persisted cursor stays in storage). Returns false when not subscribed. */
  unsubscribe(channel) {
    const s = this._subs.get(channel);
    if (!s) return false;
    s.listeners.clear();
    this._unsubscribeNow(s);
    return true;
  }

  _loadCursor(channel) {
    try {
      const text = this._storage.getItem(this._opts.storageKey + channel);
      if (!text) return undefined;
      return normalizeCursor(JSON.parse(text));
    } catch {
      return undefined;
    }
  }

  _persist(s) {
    if (!this._storage || !s.cursor.size) return;
    try {
      this._storage.setItem(this._opts.storageKey + s.channel, JSON.stringify(cursorObject(s.cursor)));
    } catch {
      /* storage full or denied: resume then works only within this page's life */
    }
  }

  /* ---- publish ------------------------------------------------------------------------- */

  /**
   * Publishes data (any JSON value; any MessagePack value with protocol 'msgpack') to
   * channel. Resolves with the event's position "ORIGIN:SEQ" once it is durable; rejects
   * with a TidewireError: 'SERVER' (status = the node's code), 'CLOSED' (close() before the
   * ack: it may or may not have been stored), 'QUEUE_FULL', 'TOO_BIG' or 'ARG'.
   * Sent now if connected, else queued; resent after a reconnect until acknowledged.
   */
  publish(channel, data) {
    try {
      checkChannel(channel);
    } catch (e) {
      return Promise.reject(e);
    }
    if (data === undefined) return Promise.reject(new TidewireError('ARG', 'publish needs data'));
    let body, bytes;
    if (this._protocol === 'json') {
      let text;
      try {
        text = JSON.stringify(data);
      } catch (e) {
        return Promise.reject(new TidewireError('ARG', `data is not JSON-serialisable: ${e.message}`));
      }
      if (text === undefined) return Promise.reject(new TidewireError('ARG', 'data is not JSON-serialisable'));
      body = `"channel":${JSON.stringify(channel)},"data":${text}}`;
      bytes = utf8.encode(body).length;
    } else {
      bytes = utf8.encode(channel).length + approxSize(data);
    }
    if (bytes + 40 > this._opts.maxPublishBytes)
      return Promise.reject(new TidewireError('TOO_BIG', `publish of ${bytes} bytes is over maxPublishBytes`));
    if (this._queuedBytes + bytes > this._opts.maxQueuedBytes)
      return Promise.reject(new TidewireError('QUEUE_FULL', 'too many publishes held; retry after some acks'));
    return new Promise((resolve, reject) => {
      const p = { id: 0, done: false, sentBefore: false, channel, data, body, bytes, resolve, reject };
      this._pubs.push(p);
      this._queuedBytes += bytes;
      if (this._wsOpen) this._sendPublish(p);
    });
  }

  _failPublishes(err) {
    if (!this._pubs.length) return;
    const all = this._pubs;
    this._pubs = [];
    this._queuedBytes = 0;
    for (const p of all) if (!p.done) p.reject(err);
  }
}

function checkChannel(channel) {
  if (typeof channel !== 'string' || !channel.length)
    throw new TidewireError('ARG', 'a channel is a non-empty string');
}

/* Size of a value for the queue's bound with msgpack (exactness is not needed). */
function approxSize(v) {
  if (v instanceof Uint8Array) return v.length;
  try {
    return utf8.encode(JSON.stringify(v) ?? '').length;
  } catch {
    return 64;
  }
}

export default Tidewire;
