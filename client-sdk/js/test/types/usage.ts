// Compiled with `tsc --noEmit --strict` (ctest js.types): the declarations in src/*.d.ts
// describe the API as an application uses it.
import { Tidewire, TidewireError, closeAction, type TidewireEvent, type Cursor } from 'tidewire';
import {
  TidewireProvider,
  useChannel,
  useChannelEvents,
  useConnectionState,
  usePresence,
  useTidewire,
} from 'tidewire/react';
import { createElement } from 'react';

interface Position {
  lat: number;
  lon: number;
}

const tw = new Tidewire('ws://127.0.0.1:8080/ws', {
  getToken: async () => 'token',
  storage: { getItem: () => null, setItem: () => {} },
  protocol: 'json',
  autoConnect: false,
});
const off: () => void = tw.on('state', (state, why) => {
  const s: 'connecting' | 'connected' | 'reconnecting' | 'disconnected' = state;
  if (why) console.log(why.code, why.status, s);
});
off();
tw.on('event', (ev) => console.log(ev.pos));
const unsubscribe = tw.subscribe<Position>('vessel:42', {
  since: { 'n1.5f2c09ab': 17 },
  last: 10,
  onEvent: (ev) => console.log(ev.data.lat + ev.data.lon, ev.seq, ev.origin, ev.ts),
  onSubscribed: ({ recovered, replayed }) => console.log(recovered, replayed),
  onError: (e: TidewireError) => console.log(e.channel),
});
tw.subscribe('vessel:43', (ev) => console.log(ev.channel));
tw.subscribe('vessel:44', { since: 'n1.5f2c09ab:17' });
unsubscribe();
const cur: Cursor | undefined = tw.cursor('vessel:42');
async function main(): Promise<void> {
  const pos: string = await tw.publish('vessel:42', { lat: 1, lon: 2 });
  const members = await tw.presence('room:1');
  const rtt: number = await tw.ping();
  console.log(pos, members[0]?.user, rtt, cur, tw.stats.duplicates, closeAction(4208));
}
void main;

function Feed({ channel }: { channel: string }) {
  const state = useConnectionState();
  const status = useChannel<Position>(channel, (ev: TidewireEvent<Position>) => console.log(ev.data.lat), { last: 5 });
  const events = useChannelEvents<Position>(channel, { limit: 20 });
  const { members, error } = usePresence(channel);
  const client: Tidewire = useTidewire();
  return createElement('p', null, state, status.subscribed, events.length, members.length, error?.status, client.state);
}
createElement(TidewireProvider, { url: 'ws://x/ws', options: { token: 't' } }, createElement(Feed, { channel: 'a' }));
createElement(TidewireProvider, { client: tw }, null);
