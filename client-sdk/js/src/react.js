/*
 * tidewire/react — React hooks over one shared Tidewire client.
 *
 * <TidewireProvider> holds exactly one client (yours, or one it makes from url + options);
 * every hook below it uses that client, so a page has one socket however many components
 * subscribe. Hooks unsubscribe on unmount; several hooks on one channel share one server
 * subscription and one cursor (see Tidewire#subscribe).
 */
import {
  createContext,
  createElement,
  useContext,
  useEffect,
  useRef,
  useState,
  useSyncExternalStore,
} from 'react';

import { Tidewire } from './index.js';

const Ctx = createContext(null);

/**
 * Props: either `client` (a Tidewire you made; you close it), or `url` and optional
 * `options` (the provider makes the client, connects it while mounted and closes it on
 * unmount). Changing url/options after the first render has no effect: remount to change.
 */
export function TidewireProvider({ client, url, options, children }) {
  const own = useRef(null);
  if (!client && !own.current) {
    if (!url) throw new Error('TidewireProvider needs a client or a url');
    own.current = new Tidewire(url, { ...options, autoConnect: false });
  }
  const c = client || own.current;
  const closing = useRef(false);
  useEffect(() => {
    if (client) return undefined;
    /* Connect while mounted; close at the end of the task that unmounts, so that an
     * unmount followed at once by a mount (StrictMode, a moved subtree) keeps the socket. */
    closing.current = false;
    c.connect();
    return () => {
      closing.current = true;
      queueMicrotask(() => closing.current && c.close());
    };
  }, [c, client]);
  return createElement(Ctx.Provider, { value: c }, children);
}

/** The provider's client (throws outside a TidewireProvider). */
export function useTidewire() {
  const c = useContext(Ctx);
  if (!c) throw new Error('tidewire hooks need a <TidewireProvider> above them');
  return c;
}

/** 'connecting' | 'connected' | 'reconnecting' | 'disconnected', re-rendering on change. */
export function useConnectionState() {
  const c = useTidewire();
  return useSyncExternalStore(
    (notify) => c.on('state', notify),
    () => c.state,
    () => 'disconnected'
  );
}

/**
 * Subscribes to channel while mounted and calls onEvent(event) for each new event (the
 * latest onEvent: changing it does not resubscribe). opts: since, last (read when the
 * channel changes). Returns {subscribed, recovered, error}. A falsy channel subscribes to
 * nothing (for a channel not known yet).
 */
export function useChannel(channel, onEvent, opts = {}) {
  const c = useTidewire();
  const handler = useRef(onEvent);
  handler.current = onEvent;
  const optsRef = useRef(opts);
  optsRef.current = opts;
  const [status, setStatus] = useState({ subscribed: false, recovered: undefined, error: null });
  useEffect(() => {
    if (!channel) return undefined;
    setStatus({ subscribed: false, recovered: undefined, error: null });
    const o = optsRef.current || {};
    const off = c.subscribe(channel, {
      since: o.since,
      last: o.last,
      onEvent: (ev) => handler.current && handler.current(ev),
      onSubscribed: (info) => setStatus({ subscribed: true, recovered: info.recovered, error: null }),
      onError: (error) => setStatus({ subscribed: false, recovered: undefined, error }),
      onJoin: o.onJoin && ((i) => optsRef.current.onJoin && optsRef.current.onJoin(i)),
      onLeave: o.onLeave && ((i) => optsRef.current.onLeave && optsRef.current.onLeave(i)),
    });
    return off;
  }, [c, channel]);
  return status;
}

/**
 * A live list of the channel's events, oldest first, at most `limit` (default 100) long:
 * filled first with the newest `last` (default: limit) events, then live ones.
 */
export function useChannelEvents(channel, { limit = 100, last } = {}) {
  const [events, setEvents] = useState([]);
  const limitRef = useRef(limit);
  limitRef.current = limit;
  useEffect(() => setEvents([]), [channel]);
  useChannel(
    channel,
    (ev) =>
      setEvents((list) => {
        const next = list.length >= limitRef.current ? list.slice(list.length - limitRef.current + 1) : list.slice();
        next.push(ev);
        return next;
      }),
    { last: last === undefined ? limit : last }
  );
  return events;
}

/**
 * The channel's present members [{user, node, conn}], fetched on each (re)connect and kept
 * up to date by join/leave. Returns {members, error} (error: the node refused, e.g. 403
 * when presence is not enabled for the channel's namespace).
 */
export function usePresence(channel) {
  const c = useTidewire();
  const [state, setState] = useState({ members: [], error: null });
  useEffect(() => {
    if (!channel) return undefined;
    let live = true;
    setState({ members: [], error: null });
    const load = () =>
      c.presence(channel).then(
        (members) => live && setState({ members, error: null }),
        (error) => live && error.code !== 'DISCONNECTED' && setState({ members: [], error })
      );
    const off = c.subscribe(channel, {
      onSubscribed: load,
      onJoin: (info) =>
        setState((s) =>
          s.members.some((m) => m.user === info.user && m.conn === info.conn)
            ? s
            : { members: [...s.members, { user: info.user, node: info.node, conn: info.conn }], error: null }
        ),
      onLeave: (info) =>
        setState((s) => ({
          members: s.members.filter((m) => !(m.user === info.user && (info.conn === undefined || m.conn === info.conn))),
          error: s.error,
        })),
    });
    return () => {
      live = false;
      off();
    };
  }, [c, channel]);
  return state;
}
