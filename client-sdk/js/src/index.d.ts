/** Connection state as an application shows it (a connection indicator). */
export type ConnectionState = 'connecting' | 'connected' | 'reconnecting' | 'disconnected';
export declare const STATES: readonly ConnectionState[];

/** A cursor: the last seq seen per origin ({"n1.5f2c09ab": 1234}). */
export type Cursor = Record<string, number>;
/** A cursor in any form the protocol accepts: a vector, a position "ORIGIN:SEQ", or {} (from
 * the oldest event the node keeps). */
export type CursorInput = Cursor | string;

export interface TidewireEvent<T = unknown> {
  channel: string;
  /** "ORIGIN:SEQ" */
  pos: string;
  origin: string;
  seq: number;
  /** Milliseconds since the Unix epoch, set by the accepting node. */
  ts: number;
  data: T;
}

export interface SubscribedInfo {
  channel: string;
  /** false: the cursor reached back past what the node keeps; reload state from your back end. */
  recovered: boolean;
  /** Events from the log follow. */
  replayed: boolean;
}

export interface PresenceMember {
  user: string;
  node?: string;
  conn?: string;
}

export interface PresenceChange {
  channel: string;
  user: string;
  node?: string;
  conn?: string;
  [field: string]: unknown;
}

/** What every failure is: `code` names the kind, `status` is the node's error code (400..503)
 * or the WebSocket close code. */
export declare class TidewireError extends Error {
  constructor(code: string, message: string, status?: number, channel?: string);
  /** 'SERVER' | 'PEER_CLOSED' | 'CLOSED' | 'DISCONNECTED' | 'QUEUE_FULL' | 'TOO_BIG' | 'ARG' |
   * 'URL' | 'CURSOR' | 'TIMEOUT' | 'TOKEN' | 'PROTOCOL' | 'CONNECT' | 'SEND' | 'UNSUPPORTED' */
  code: string;
  status: number;
  /** The channel of a refused subscription. */
  channel?: string;
}

/** A storage for cursors (localStorage and sessionStorage fit). */
export interface CursorStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem?(key: string): void;
}

export interface MsgpackCodec {
  encode(value: unknown): Uint8Array;
  decode(bytes: Uint8Array): unknown;
}

export interface TidewireOptions {
  /** Sent in `connect`. */
  token?: string;
  /** Called for a token before connecting when there is none, when a JWT is within
   * tokenRefreshMarginMs of its exp (then sent as `refresh` on the open connection), and
   * after the node refused one (close 4001 or error 401: at most 3 times in a row). */
  getToken?: () => string | Promise<string>;
  /** 'json' (default) or 'msgpack' (needs `msgpack`, or the @msgpack/msgpack package). */
  protocol?: 'json' | 'msgpack';
  msgpack?: MsgpackCodec;
  /** A WebSocket constructor: globalThis.WebSocket by default (browsers, Node 22+); on older
   * Node pass the "ws" package's. */
  WebSocket?: unknown;
  /** Where cursors are kept so that a reloaded page resumes (e.g. localStorage). */
  storage?: CursorStorage | null;
  /** Prefix of the storage keys; default 'tidewire:cursor:' (then the channel name). */
  storageKey?: string;
  /** Connect in the constructor (default true). */
  autoConnect?: boolean;
  /** Full-jitter backoff: the first retry waits up to backoffInitialMs (100), the cap grows by
   * backoffFactor (2) per failed attempt up to backoffMaxMs (10000). */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  backoffFactor?: number;
  /** WebSocket open + `connected` reply (10000). */
  connectTimeoutMs?: number;
  /** How long a closed socket may linger for the close handshake (2000; Node's ws only). */
  closeTimeoutMs?: number;
  /** Bytes of publishes held (queued or awaiting ack): 8 MiB. */
  maxQueuedBytes?: number;
  /** Largest publish message: 1 MiB (the node's default cap). */
  maxPublishBytes?: number;
  /** Refresh a JWT this long before its exp (30000). */
  tokenRefreshMarginMs?: number;
}

export interface SubscribeOptions<T = unknown> {
  /** Resume after this cursor (the first subscription of a channel decides). Default: the
   * cursor in `storage` if any, else live from now. */
  since?: CursorInput;
  /** Also the channel's newest N events first, to fill a view. */
  last?: number;
  onEvent?: (event: TidewireEvent<T>) => void;
  /** After each (re)subscription the node confirmed. */
  onSubscribed?: (info: SubscribedInfo) => void;
  /** The node refused the subscription (it is removed). */
  onError?: (error: TidewireError) => void;
  onJoin?: (info: PresenceChange) => void;
  onLeave?: (info: PresenceChange) => void;
}

export interface TidewireStats {
  events: number;
  duplicates: number;
  connects: number;
  disconnects: number;
  publishesSent: number;
  publishesResent: number;
  acks: number;
  queuedBytes: number;
  queuedPublishes: number;
}

export interface TidewireEventMap {
  state: (state: ConnectionState, why?: TidewireError) => void;
  connected: (info: { node: string; session: string }) => void;
  event: (event: TidewireEvent) => void;
  subscribed: (info: SubscribedInfo) => void;
  error: (error: TidewireError) => void;
  join: (info: PresenceChange) => void;
  leave: (info: PresenceChange) => void;
}

export declare class Tidewire {
  /** url: ws[s]://HOST[:PORT][/PATH] (path /ws when none). */
  constructor(url: string, options?: TidewireOptions);
  readonly url: string;
  readonly state: ConnectionState;
  /** The connected node's origin id ('' before the first `connected`). */
  readonly node: string;
  readonly session: string;
  readonly protocol: 'json' | 'msgpack';
  readonly stats: TidewireStats;
  /** The channels subscribed to. */
  readonly channels: string[];

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof TidewireEventMap>(type: K, fn: TidewireEventMap[K]): () => void;
  off<K extends keyof TidewireEventMap>(type: K, fn: TidewireEventMap[K]): void;

  /** Starts (or restarts after close) connecting; keeps reconnecting until close(), a
   * terminal close code (4000-4099) or a normal close (1000). */
  connect(): void;
  /** Closes with 1000; pending publishes reject with 'CLOSED'. Subscriptions and cursors are
   * kept: connect() resumes them. */
  close(): void;

  /** Subscribes; returns a function that removes this subscription (idempotent). A function
   * as options is taken as onEvent. */
  subscribe<T = unknown>(channel: string, options?: SubscribeOptions<T> | ((event: TidewireEvent<T>) => void)): () => void;
  /** Removes every subscription of channel at once; false when there was none. */
  unsubscribe(channel: string): boolean;
  /** The channel's cursor (a copy), undefined when not subscribed. */
  cursor(channel: string): Cursor | undefined;

  /** Resolves with the event's position once durable. Queued while offline (bounded),
   * resent after a reconnect until acknowledged (at-least-once). */
  publish(channel: string, data: unknown): Promise<string>;
  /** The channel's members (needs a connection; 403 where presence is not enabled). */
  presence(channel: string): Promise<PresenceMember[]>;
  /** A round trip; resolves with its duration in ms. */
  ping(): Promise<number>;
  /** Gets a new token from getToken now and sends it as `refresh`. */
  refreshToken(): Promise<void>;
}

/** What a close code asks of a client. */
export declare function closeAction(code: number): 'stop' | 'terminal' | 'backoff' | 'now' | 'retry';
/** Splits "ORIGIN:SEQ" (null when malformed). */
export declare function parsePos(pos: string): { origin: string; seq: number } | null;
/** A cursor in any accepted form as a plain vector (throws TidewireError 'CURSOR'). */
export declare function normalizeCursor(since: CursorInput): Cursor;

export default Tidewire;
